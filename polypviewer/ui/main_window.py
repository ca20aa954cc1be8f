"""The review window: composes the canvas, panels, timeline and workers, and wires them.

Per-frame state lives outside the widgets: ``FrameService`` (decoded frames), the
``PredictionService`` cache (probabilities keyed by source, frame, model version) and the
Qt-free ``core.review.ReviewModel`` (which mask each frame shows: the annotation session's
edited mask, else the thresholded prediction; and its scores). ``_display()`` draws the
current frame from whatever of these is ready; workers only ever deliver through signals.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PySide6.QtCore import QByteArray, QEvent, QObject, Qt, QTimer, Signal
from PySide6.QtGui import (
    QCloseEvent,
    QDragEnterEvent,
    QDropEvent,
    QMouseEvent,
    QMoveEvent,
    QResizeEvent,
    QShowEvent,
)
from PySide6.QtWidgets import (
    QApplication,
    QDockWidget,
    QFileDialog,
    QGraphicsItem,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QScrollArea,
    QToolBar,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from polypviewer.core.edits import EditSession, Rect
from polypviewer.core.errors import PolypviewerError
from polypviewer.core.overlay import OverlayStyle
from polypviewer.core.review import ReviewModel
from polypviewer.io.settings import load_settings, save_settings
from polypviewer.ui.actions import MENUS, SPECS, build_actions, resolve_keymap
from polypviewer.ui.canvas import Canvas
from polypviewer.ui.catalog import Catalog, ModelCatalog
from polypviewer.ui.message_log import LogBridge, MessageLog
from polypviewer.ui.panels import MetricsPanel, ModelPanel, NavigationBar, OverlayPanel
from polypviewer.ui.playback import Player
from polypviewer.ui.prediction import PredictionService
from polypviewer.ui.timeline import Timeline
from polypviewer.ui.workers import FrameData, FrameService

if TYPE_CHECKING:
    from polypviewer.engine.inference import Predictor
    from polypviewer.ui.keys_dialog import KeysDialog
    from polypviewer.ui.prediction import Prediction

LOOKAHEAD = 8  # frames predicted ahead of the one shown
SETTINGS_DELAY_MS = 400  # a change is written this long after the last one
METRICS_WIDTH = 450  # the metrics panel's fixed width: six score columns, never resized by content
DOCK_WIDTH = 300  # the side docks' minimum width (their contents elide, never widen them)
COMPACT_HEIGHT = 860  # below this (a laptop's 720 / 768 px) the side docks start as tabs, each full height
DOCK_FIT_DELAY_MS = 50  # the side docks are fitted again this long after their panels' rows change
# QMainWindow.saveState's version: raise it when the docks or toolbars change, so an older
# layout in the settings is ignored (restoreState refuses another version) instead of misapplied.
WINDOW_STATE_VERSION = 1
NO_GT_REASON = ("Disagreement (TP / FP / FN) needs ground truth, and {name} has none: every polyp the "
                "model finds would be painted as a false positive. Open a Kvasir folder with masks/, or a "
                "video with a <video stem>_masks/ folder.")
NO_SOURCE_REASON = "Disagreement (TP / FP / FN) needs ground truth: open a source with masks first."
VIDEO_FILTER = ("Videos and images (*.mp4 *.avi *.mov *.mkv *.m4v *.webm *.png *.jpg *.jpeg *.tif *.tiff *.bmp)"
                ";;All files (*)")


class MainWindow(QMainWindow):
    """Signals: ``source_opened(info)``, ``displayed(index, has_prediction)``, ``message(str)``,
    ``open_failed(str)``, ``model_failed(str)``.

    Implements :class:`polypviewer.ui.host.ReviewHost`, the only part of it the annotation
    controller, its tools and its dialogs use, and :class:`polypviewer.ui.app.SmokeHost`, the
    part the smoke run uses."""

    source_opened = Signal(object)
    frame_ready = Signal(int)  # a decoded frame entered the frame cache (ReviewHost.frame has it now)
    displayed = Signal(int, bool)
    message = Signal(str)
    open_failed = Signal(str)  # a source could not be opened (also reported)
    model_failed = Signal(str)  # a model could not be loaded (also reported)

    def __init__(self, *, load_default_model: bool = True, model: str | None = None,
                 weights: str | None = None, allow_random: bool = False,
                 predictor_options: dict[str, Any] | None = None) -> None:
        """``predictor_options`` go to ``Predictor.create`` (device, precision, backend)."""
        from polypviewer.ui import qtfix

        qtfix.apply()  # (make_app does it first; here for callers that made their own QApplication)
        super().__init__()
        self.setWindowTitle("polypviewer")
        self.setAcceptDrops(True)
        self.settings, warning = load_settings()
        self.errors: list[str] = []
        self.source: dict[str, Any] | None = None
        self.index = 0
        self._shown_frame: tuple[int, int] | None = None  # (generation, index) on the canvas
        self._closed = False
        self._options = dict(predictor_options or {})
        self.canvas = Canvas()
        self.nav = NavigationBar()
        self.timeline = Timeline()
        # the networks are listed once the catalog is read off this thread (it imports torch,
        # which the first frame does not need): see _on_catalog
        self.model_panel = ModelPanel([])
        self.overlay_panel = OverlayPanel(OverlayStyle(), 0.5)
        self.metrics_panel = MetricsPanel()
        self.frames = FrameService(parent=self)
        self.predictions = PredictionService(parent=self)
        self.review = ReviewModel(self.predictions)  # what each frame shows, and its scores
        self._uncertain_target: int | None = None  # where J last went (pressing it again walks on)
        self.predictions.style = self.canvas.overlay_style()
        self.player = Player(self)
        self._rescore_timer = QTimer(self, singleShot=True, interval=150)
        self._rescore_timer.timeout.connect(self._rescore_all)
        # Settings are written when they change (debounced), not only on a clean quit: a killed
        # app keeps its recent files, layout, brush size and default model.
        self._settings_timer = QTimer(self, singleShot=True, interval=SETTINGS_DELAY_MS)
        self._settings_timer.timeout.connect(self.save_settings_now)
        self._settings_failed = False
        self._default_request: str | None = None  # what load_model asked for, remembered once it runs
        # the side docks' split follows their panels' rows (see fit_docks) until the user drags it
        self._docks_arranged = False
        self._dock_panels: list[QWidget] = []
        self._dock_fit_timer = QTimer(self, singleShot=True, interval=DOCK_FIT_DELAY_MS)
        self._dock_fit_timer.timeout.connect(self._refit_docks)
        self._layout()
        from polypviewer.ui.annotation_keys import annotation_keys

        keymap, problems = resolve_keymap(self.settings.keymap, annotation_keys())
        self.keymap = keymap  # the annotation controller applies its part
        self.keymap_problems = problems  # also listed in Help > Keys
        self.actions_ = build_actions(self, self._handlers(), keymap)
        self._keys_dialog: KeysDialog | None = None
        self._menus()
        self._wire()
        from polypviewer.ui.annotation import AnnotationController  # editing, review, export, fine-tune

        self.annotation = AnnotationController(self)
        editor = self.annotation.editor
        if self.settings.brush_radius > 0:
            editor.set_brush_radius(self.settings.brush_radius)
        editor.brushRadiusChanged.connect(self._remember_brush)
        help_menu = self._help_menu.menuAction()  # Help stays the last menu, after Annotate
        self.menuBar().removeAction(help_menu)
        self.menuBar().addAction(help_menu)
        self._set_gt_available(False, NO_SOURCE_REASON)
        for dock in (self.findChild(QDockWidget, "reviewDock"), self.annotation.dock):
            scroll = dock.widget() if dock is not None else None
            panel = scroll.widget() if isinstance(scroll, QScrollArea) else None
            if panel is not None:
                self._dock_panels.append(panel)
                panel.installEventFilter(self)  # its LayoutRequest: the panel's rows changed
        for p in ([warning] if warning else []) + problems:
            self.report(p, level="warning")
        if len(problems) > 1:  # the status bar shows one line at a time: say where all are
            self.statusBar().showMessage(f"{len(problems)} keymap problems in the settings file "
                                         f"(every one under Help > Keys): {problems[0]}", 30000)
        if self.settings.window_geometry:
            self.restoreGeometry(QByteArray.fromBase64(self.settings.window_geometry.encode()))
        else:
            self.resize(1440, 900)
        self._layout_restored = False
        if self.settings.window_state:  # docks and toolbars where the user left them (all exist now)
            self._layout_restored = self.restoreState(QByteArray.fromBase64(self.settings.window_state.encode()),
                                                      WINDOW_STATE_VERSION)
        for w in self.findChildren(QDockWidget) + self.findChildren(QToolBar):
            w.topLevelChanged.connect(self.settings_changed)
            w.visibilityChanged.connect(self.settings_changed)
            if isinstance(w, QDockWidget):
                w.dockLocationChanged.connect(self.settings_changed)
            else:
                w.orientationChanged.connect(self.settings_changed)
        if load_default_model and not (model or weights) and self.settings.default_model:
            model, weights = self._remembered_model(self.settings.default_model)
        if load_default_model or model or weights:
            self.load_model(model, weights, allow_random=allow_random)
        else:
            self.model_panel.set_message("No model loaded.")
        self.catalog: Catalog | None = None
        self._catalog = ModelCatalog(self)
        self._catalog.ready.connect(self._on_catalog)
        self._catalog.start()

    # ---- composition -------------------------------------------------------------------
    def _layout(self) -> None:
        # canvas on top; below it the frame bar + per-frame strip, with the metrics beside them
        center = QWidget()
        v = QVBoxLayout(center)
        v.setContentsMargins(0, 0, 0, 0)
        v.setSpacing(0)
        v.addWidget(self.canvas, 1)
        bottom = QHBoxLayout()
        bottom.setContentsMargins(0, 0, 6, 0)
        strip = QVBoxLayout()
        strip.setSpacing(0)
        strip.addWidget(self.nav)
        strip.addWidget(self.timeline)
        bottom.addLayout(strip, 1)
        self.metrics_panel.setFixedWidth(METRICS_WIDTH)
        bottom.addWidget(self.metrics_panel)
        v.addLayout(bottom)
        self.setCentralWidget(center)
        side = QWidget()
        col = QVBoxLayout(side)
        for panel in (self.model_panel, self.overlay_panel):
            col.addWidget(panel)
        col.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidget(side)
        scroll.setWidgetResizable(True)
        scroll.setMinimumWidth(DOCK_WIDTH)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)  # long names are elided
        dock = QDockWidget("Review", self)
        dock.setObjectName("reviewDock")
        dock.setWidget(scroll)
        dock.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetMovable)
        self.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, dock)
        self.status_label = QLabel("")
        self.statusBar().addPermanentWidget(self.status_label)
        # every line the status bar shows, kept with its time (the bar shows one at a time)
        self.message_log = MessageLog(self)
        self.addDockWidget(Qt.DockWidgetArea.BottomDockWidgetArea, self.message_log)
        self.message_log.hide()
        self.log_button = QToolButton()
        self.log_button.setObjectName("logButton")
        self.log_button.setAutoRaise(True)
        self.log_button.setDefaultAction(self.message_log.toggleViewAction())
        self.message_log.changed.connect(self._show_log_count)
        self.statusBar().addPermanentWidget(self.log_button)
        self._show_log_count()
        self._log_bridge = LogBridge(self)  # the engine's logging warnings, from any thread
        self._log_bridge.record.connect(self.message_log.add)

    def _handlers(self) -> dict[str, Callable[..., object]]:
        c = self.canvas
        return {
            "open": self.open_dialog, "open_folder": self.open_folder_dialog, "quit": self.close,
            "prev_frame": lambda: self.step(-1), "next_frame": lambda: self.step(1),
            "back_10": lambda: self.step(-10), "forward_10": lambda: self.step(10),
            "first_frame": lambda: self.go_to(0), "last_frame": lambda: self.go_to(self.n - 1),
            "play": self.set_playing, "next_worst": lambda: self.jump_worst(1),
            "prev_worst": lambda: self.jump_worst(-1), "next_uncertain": self.jump_uncertain,
            "toggle_overlay": c.set_overlay_visible,
            "toggle_outline": lambda on: self.set_style(outline=on),
            "toggle_disagreement": lambda on: self.set_style(disagreement=on),
            "toggle_gt": lambda on: self.set_style(show_gt=on),
            "threshold_up": lambda: self.overlay_panel.set_threshold(min(0.99, self.threshold + 0.05)),
            "threshold_down": lambda: self.overlay_panel.set_threshold(max(0.01, self.threshold - 0.05)),
            "zoom_in": lambda: c.zoom_by(1.25), "zoom_out": lambda: c.zoom_by(0.8),
            "actual_size": c.actual_size, "fit": c.fit, "load_weights": self.weights_dialog,
            "predict_all": self.predict_all, "keys": self.show_keys,
        }

    def _menus(self) -> None:
        menus = {m: self.menuBar().addMenu(m) for m in MENUS}
        self._help_menu = menus["Help"]
        self.recent_menu = menus["File"].addMenu("Open &recent")
        for name, act in self.actions_.items():
            menus[SPECS[name].menu].addAction(act)
            self.addAction(act)  # shortcuts work with the menu bar hidden too
        menus["View"].addSeparator()
        menus["View"].addAction(self.message_log.toggleViewAction())
        self.actions_["toggle_overlay"].setChecked(True)
        self.actions_["toggle_gt"].setChecked(True)
        self._fill_recent()

    def _fill_recent(self) -> None:
        self.recent_menu.clear()
        for path in self.settings.recent_files:
            self.recent_menu.addAction(path, partial(self.open_path, path))
        self.recent_menu.setEnabled(bool(self.settings.recent_files))

    def _wire(self) -> None:
        self.frames.opened.connect(self._on_opened)
        self.frames.open_failed.connect(self.report)
        self.frames.open_failed.connect(self.open_failed)
        self.frames.frame.connect(self._on_frame)
        self.frames.failed.connect(lambda i, msg: self.report(msg))
        self.predictions.prediction.connect(self._on_prediction)
        self.predictions.model_ready.connect(self._on_model_ready)
        self.predictions.model_failed.connect(self._on_model_failed)
        self.predictions.error.connect(self.report)
        self.predictions.fps_changed.connect(self.model_panel.set_fps)
        self.nav.frame_requested.connect(self.go_to)
        self.nav.play_button.clicked.connect(lambda: self.actions_["play"].toggle())
        self.timeline.frame_clicked.connect(self.go_to)
        self.overlay_panel.style_changed.connect(self._on_style)
        self.overlay_panel.threshold_changed.connect(self.set_threshold)
        self.model_panel.model_chosen.connect(self.choose_model)
        self.model_panel.weights_requested.connect(self.weights_dialog)
        self.model_panel.random_requested.connect(lambda name: self.load_model(name, allow_random=True))
        self.model_panel.select_backend(str(self._options.get("backend", "auto")))
        self.model_panel.backend_chosen.connect(self.choose_backend)
        self.canvas.zoom_changed.connect(lambda z: self.refresh_status())

    # ---- sources -----------------------------------------------------------------------
    @property
    def n(self) -> int:
        return int(self.source["n"]) if self.source else 0

    def open_path(self, path: str | Path) -> None:
        """Open a video, image, image folder or Kvasir dataset (decoded off the GUI thread)."""
        self.set_playing(False)
        self.source = None
        self.message_log.add("info", f"Opening {path}…")
        self.statusBar().showMessage(f"Opening {path}…")
        gen = self.frames.open(str(path))
        self.predictions.set_source(gen, str(path))

    def _on_opened(self, info: dict[str, Any]) -> None:
        self.source = info
        self.statusBar().clearMessage()
        self.index = 0
        self._shown_frame = None
        self.review.open(info["n"], info["has_masks"])
        self.nav.set_length(info["n"])
        self.timeline.set_length(info["n"], "dice" if info["has_masks"] else "area")
        self._set_gt_available(info["has_masks"], NO_GT_REASON.format(name=Path(info["path"]).name))
        self.metrics_panel.setTitle("Metrics vs ground truth" if info["has_masks"] else "Metrics (no ground truth)")
        self.metrics_panel.set_note("")
        self.setWindowTitle(f"polypviewer — {Path(info['path']).name}")
        for p in info.get("problems", []):
            self.report(p)
        self.settings.add_recent(info["path"])
        self._fill_recent()
        self.settings_changed()
        self.source_opened.emit(info)
        self.go_to(0)

    def open_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open video or image", "", VIDEO_FILTER)
        if path:
            self.open_path(path)

    def open_folder_dialog(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Open folder of frames or Kvasir dataset")
        if path:
            self.open_path(path)

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:
        paths = [u.toLocalFile() for u in event.mimeData().urls() if u.isLocalFile()]
        if paths:
            self.open_path(paths[0])
            event.acceptProposedAction()

    # ---- model -------------------------------------------------------------------------
    def load_model(self, model: str | None = None, weights: str | None = None, *,
                   allow_random: bool = False, predictor: Predictor | None = None,
                   fallback_model: str | None = None) -> None:
        """Switch the network (built off the GUI thread), or install a ready ``predictor``."""
        what = Path(weights).name if weights else (model or "the shipped default model")
        self.model_panel.set_message(f"Loading {what}…")
        # a model the user chose (a network's trained weights, a checkpoint, a fine-tuned
        # version) is the default at the next start, once it runs
        self._default_request = (None if predictor is not None or allow_random
                                 else str(Path(weights).resolve()) if weights else (model or ""))
        self.predictions.load_model(model, weights, allow_random=allow_random,
                                    options=self._options, predictor=predictor,
                                    fallback_model=fallback_model)

    def choose_model(self, name: str) -> None:
        """The model panel's choice: load a network that has trained weights; for one without,
        say so (and what still runs) instead of trying, until the user loads weights for it."""
        if self.model_panel.is_ready(name):
            self.load_model(name)
            return
        running = self.predictions.info or {}
        still = (f" Still running {running.get('model')} ({running.get('version')})."
                 if running.get("model") else " No model is running.")
        self.model_panel.set_message(f"{name}: {ModelPanel.NO_WEIGHTS}. Load weights… (Ctrl+L) to run it "
                                     f"with a checkpoint, or try it untrained.{still}",
                                     offer_random=True, error=True)

    def choose_backend(self, name: str) -> None:
        """The model panel's engine choice: the running network is built again on it."""
        self._options["backend"] = name
        if self.predictions.reload(self._options):
            self.model_panel.set_message(f"Switching the engine to {name}…")
        else:
            self.model_panel.set_message(f"The engine {name} runs from the next network loaded.")

    def weights_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Load weights", "",
                                              "Checkpoints (*.safetensors *.pth *.pt);;All files (*)")
        if path:
            # A checkpoint that names no network (e.g. the official PraNet-19.pth) goes into
            # the network selected in the model panel.
            self.load_model(None, path, fallback_model=self.model_panel.current_model())

    def _on_model_ready(self, info: dict[str, Any]) -> None:
        if info.get("weights") and info.get("model") and not self.model_panel.is_ready(str(info["model"])):
            self.model_panel.set_ready(self.model_panel.ready_models() | {str(info["model"])})
        self.model_panel.set_info(info)
        self.model_panel.set_fps(None)
        note = "Untrained (random weights): its masks are noise." if info.get("version") == "random-init" else ""
        self.model_panel.set_message(note)
        self.message_log.add("info", _model_line(info))
        if self._default_request is not None and info.get("version") != "random-init":
            if self.settings.default_model != self._default_request:
                self.settings.default_model = self._default_request
                self.settings_changed()
            self._default_request = None
        self.overlay_panel.set_threshold(float(info.get("threshold", self.threshold)))
        self._invalidate_scores()
        self._show_uncertainty()  # this version's (known again when it was used before)
        self._display()
        # the frames already seen too, after the look-ahead, so "seen" is about the new model
        self._request_ahead(also=self.review.scores.seen)

    def _on_catalog(self, catalog: Catalog) -> None:
        """The networks, those with trained weights, and the shipped versions, read off the GUI
        thread: fill the model panel (selecting the network running by then) and Annotate >
        Model versions."""
        if self._closed:
            return
        self.catalog = catalog
        if catalog.error:
            self.report(catalog.error, level="warning")
        running = (self.predictions.info or {}).get("model")
        self.model_panel.set_models(catalog.models, catalog.ready | self.model_panel.ready_models())
        if running:
            self.model_panel.select_model(str(running))
        self.annotation.versions.list_shipped(catalog)

    def _remembered_model(self, default: str) -> tuple[str | None, str | None]:
        """``(model, weights)`` for the settings' default model: a weights file (one that is
        gone is reported, and the shipped default runs) or a network's name."""
        if "/" in default or "\\" in default or default.endswith((".safetensors", ".pth", ".pt")):
            if Path(default).is_file():
                return None, default
            self.report(f"{default}: the default model (the last one used) is gone; running the "
                        "shipped default instead", level="warning")
            return None, None
        return default, None

    def _on_model_failed(self, message: str, offer_random: bool) -> None:
        self._default_request = None
        self.model_panel.set_message(message, offer_random=offer_random, error=True)
        self.report(message)
        self.model_failed.emit(message)

    def predict_all(self) -> None:
        if self.source and self.predictions.info:
            order = list(range(self.index, self.n)) + list(range(0, self.index))
            self.predictions.request(order)

    # ---- navigation --------------------------------------------------------------------
    def step(self, delta: int) -> None:
        self.set_playing(False)
        self.go_to(self.index + delta)

    def go_to(self, index: int, *, playing: bool = False) -> None:
        if not self.source:
            return
        self.index = min(max(int(index), 0), self.n - 1)
        self.nav.set_position(self.index, self.n, self.frame_name(self.index), self.source.get("fps"))
        self.timeline.set_current(self.index)
        if self.frames.get(self.index) is None:
            self.frames.request([self.index])
        self._display()
        if not playing:
            self._request_ahead()

    def _request_ahead(self, start: int | None = None, stride: int = 1, also: Iterable[int] = ()) -> None:
        if self.source:
            start = self.index if start is None else start
            ahead = list(range(start, self.n, stride))[:LOOKAHEAD + 1]
            self.predictions.request(ahead + sorted(set(also) - set(ahead)))

    def frame_name(self, index: int) -> str:
        """The frame's name (its file stem, or ``<video stem>_<index>``)."""
        names = self.source.get("names") if self.source else None
        if names:
            return str(names[index])
        cached = self.frames.get(index)
        if cached is not None:
            return cached.name
        return f"{Path(self.source['path']).stem if self.source else 'frame'}_{index:06d}"

    def jump_worst(self, step: int) -> None:
        target = self.timeline.next_worst(self.index, step)
        if target is not None:
            self.set_playing(False)
            self.go_to(target)

    def uncertainties(self) -> dict[int, float]:
        """Frame -> the running model's uncertainty (``engine.uncertainty``), for every frame
        it has predicted (Predict the whole source, Ctrl+R, ranks them all)."""
        return self.predictions.uncertainties()

    def reviewed_frames(self) -> set[int]:
        """Frames with a reviewer's verdict (accepted, corrected, flagged); any other state,
        unreviewed or one a tool set without a reviewer, still needs a look."""
        from polypviewer.core.edits import ReviewState

        done = (ReviewState.ACCEPTED, ReviewState.CORRECTED, ReviewState.FLAGGED)
        return set(self.review.session.with_state(*done))

    def jump_uncertain(self) -> None:
        """J: the unreviewed frame the model is least sure of; again: the next one down."""
        from polypviewer.engine.uncertainty import next_to_review

        scores = self.uncertainties()
        walking = self.index == self._uncertain_target
        target = next_to_review(scores, self.index, self.reviewed_frames(), walking=walking)
        self._uncertain_target = target
        if target is None:
            self.notify("No unreviewed frame has a prediction yet: Predict the whole source (Ctrl+R) "
                        "to rank every frame by uncertainty.", 5000)
            return
        self.set_playing(False)
        self.go_to(target)
        if len(scores) < self.n:
            self.notify(f"Most uncertain of the {len(scores)} predicted frames (of {self.n}); "
                        "Ctrl+R ranks the whole source.", 5000)

    def _show_uncertainty(self) -> None:
        self.timeline.clear_uncertainty()
        for i, u in self.predictions.uncertainties().items():
            self.timeline.set_uncertainty(i, u)

    # ---- playback ----------------------------------------------------------------------
    def set_playing(self, on: bool) -> None:
        """Play / pause (Space); the Player drops frames whose prediction is late."""
        act = self.actions_["play"]
        if act.isChecked() != on:
            act.setChecked(on)  # re-enters through the toggled signal
            return
        self.nav.set_playing(on)
        if not on:
            self.player.stop()
        elif not self.player.start():
            act.setChecked(False)

    # ---- display -----------------------------------------------------------------------
    def _on_frame(self, index: int, data: FrameData) -> None:
        self.frame_ready.emit(index)
        if index == self.index:
            self._display()

    def _on_prediction(self, index: int, pred: Prediction) -> None:
        res = pred.result
        if pred.data is not None and self.frames.get(index) is None:
            self.frames.put(index, pred.data)
            self.frame_ready.emit(index)
        self.timeline.set_uncertainty(index, pred.uncertainty)
        if not self.review.take_scored(index, pred.scored):  # (scored on the worker at this threshold)
            cached = self.frames.get(index)
            self._score(index, res.prob, cached.gt if cached else res.gt)
        else:
            self._show_score(index)
        if index == self.index:
            self._display()
        else:  # the means over seen / all frames may have changed
            self._show_metrics()

    @property
    def threshold(self) -> float:
        """The probability a pixel needs to be shown as polyp (unedited frames)."""
        return self.review.threshold

    def current_mask(self, index: int | None = None) -> np.ndarray | None:
        """The mask shown for a frame: the annotation session's if it has one, else the
        thresholded prediction (None when there is no prediction yet)."""
        return self.review.shown_mask(self.index if index is None else index)

    def _display(self) -> None:
        cached = self.frames.get(self.index) if self.source else None
        if cached is None:
            return
        gt = cached.gt
        key = (self.frames.generation, self.index)
        if self._shown_frame != key:
            self.canvas.set_frame(cached.display)
            self._shown_frame = key
        mask = self.current_mask()
        rendered = None
        if mask is not None and not self.review.is_edited(self.index):
            rendered = self.predictions.cached_overlay(self.index, self.threshold, self.canvas.overlay_style())
        self.canvas.set_layers(mask, gt, rendered)
        if mask is not None:
            self.review.mark_seen(self.index)
            if self.review.needs_score(self.index):
                self._score(self.index, self.predictions.cached(self.index), gt)
        self._show_metrics()
        self.refresh_status()
        self.displayed.emit(self.index, mask is not None)

    def _score(self, index: int, prob: np.ndarray | None, gt: np.ndarray | None) -> None:
        if self.review.score(index, gt, prob):
            self._show_score(index)

    def _show_score(self, index: int) -> None:
        self.timeline.set_value(index, *self.review.timeline_value(index))

    def _show_metrics(self) -> None:
        scores, model = self.review.scores, self.review.model_scores
        self.metrics_panel.set_current(scores.get(self.index), model.get(self.index))
        seen, n_seen = scores.seen_means()
        whole, n_scored = scores.whole_means()
        self.metrics_panel.set_means(seen, n_seen, whole, n_scored, self.n,
                                     model=(*model.seen_means(), *model.whole_means()))
        if self.source and not self.source["has_masks"]:
            self.metrics_panel.set_note(self.review.no_gt_note(self.index))

    def refresh_status(self) -> None:
        parts = [f"zoom {self.canvas.zoom() * 100:.0f}%"]
        if self.player.active():
            parts.append(f"dropped {self.player.clock.dropped}")
        if self.predictions.info is not None and self.source and self.predictions.cached(self.index) is None:
            parts.append("predicting…")
        self.status_label.setText("   ".join(parts))

    # ---- overlay controls --------------------------------------------------------------
    def set_style(self, **changes: Any) -> None:
        style = self.canvas.overlay_style().with_(**changes)
        self.overlay_panel.set_style(style)
        self._on_style(style)

    def _on_style(self, style: OverlayStyle) -> None:
        self.canvas.set_style(style)
        self.predictions.style = style  # overlays rendered ahead from now on use it
        for name, on in (("toggle_outline", style.outline), ("toggle_disagreement", style.disagreement),
                         ("toggle_gt", style.show_gt)):
            act = self.actions_[name]
            act.blockSignals(True)
            act.setChecked(on)
            act.blockSignals(False)

    def _set_gt_available(self, has_gt: bool, reason: str) -> None:
        """Ground-truth views only where there is ground truth: without it, D (disagreement)
        is disabled, switched off if it was on, and its tooltip says why."""
        act = self.actions_["toggle_disagreement"]
        if not has_gt and self.canvas.overlay_style().disagreement:
            self.set_style(disagreement=False)
        act.setEnabled(has_gt)
        spec = SPECS["toggle_disagreement"]
        keys = ", ".join(self.keymap.get(spec.name, spec.shortcuts))
        tip = spec.tip if has_gt else reason
        act.setToolTip(f"{tip} ({keys})" if keys else tip)
        act.setStatusTip(tip)
        self.overlay_panel.set_has_gt(has_gt, reason)

    def set_threshold(self, value: float) -> None:
        if not self.review.set_threshold(value):
            return
        self.predictions.threshold = self.threshold
        self.overlay_panel.set_threshold(value)
        self._invalidate_scores()
        self._display()
        self._rescore_timer.start()  # the other cached frames, once the slider rests

    def _invalidate_scores(self) -> None:
        self.review.invalidate()
        self.timeline.clear_values()

    def _rescore_all(self) -> None:
        for i in range(self.n):
            cached = self.frames.get(i)
            if cached is not None and self.review.needs_score(i):
                self._score(i, self.predictions.cached(i), cached.gt)
        self._show_metrics()

    # ---- help ----------------------------------------------------------------------------
    def show_keys(self) -> KeysDialog:
        """Help > Keys: the current keymap (and its problems), from the guide's table."""
        from polypviewer.io.settings import settings_path
        from polypviewer.ui.keys_dialog import KeysDialog

        if self._keys_dialog is None:
            self._keys_dialog = KeysDialog(self, self.keymap_problems, str(settings_path()))
        else:
            self._keys_dialog.refresh(self, self.keymap_problems)
        self._keys_dialog.show()
        self._keys_dialog.raise_()
        return self._keys_dialog

    # ---- ReviewHost (ui/host.py): what the annotation controller and its dialogs use ------
    def frame(self, index: int) -> FrameData | None:
        """The decoded frame ``index`` if it is in the cache, else None."""
        return self.frames.get(index)

    def prediction(self, index: int) -> np.ndarray | None:
        """The running model's probability map of frame ``index`` if it is cached, else None."""
        return self.predictions.cached(index)

    def model_info(self) -> dict[str, Any] | None:
        return self.predictions.info

    def use_session(self, session: EditSession) -> None:
        """Show and score the masks of ``session`` from now on (a new source, a reopened project);
        the session is their one owner: the canvas draws its arrays, never copies."""
        self.review.use_session(session)

    def show_mask(self, index: int) -> None:
        """Frame ``index``'s mask was created or replaced: draw it if it is the frame shown."""
        mask = self.review.session.mask(index)
        if mask is not None and index == self.index:
            cached = self.frames.get(index)
            self.canvas.set_layers(mask, cached.gt if cached else None)

    def refresh_mask(self, index: int, rect: Rect | None) -> None:
        """Pixels of frame ``index``'s mask inside ``rect`` changed: redraw that rectangle if shown."""
        mask = self.review.session.mask(index)
        if index == self.index and mask is not None and self.canvas.layers()[0] is mask:
            self.canvas.refresh_overlay(rect)

    def rescore(self, index: int) -> None:
        """Score frame ``index``'s shown (edited) mask again: metrics panel, timeline."""
        cached = self.frames.get(index)
        if cached is not None and self.review.is_edited(index):
            self._score(index, self.predictions.cached(index), cached.gt)
            if index == self.index:
                self._show_metrics()

    def main_window(self) -> QMainWindow:
        return self

    def set_canvas_tool(self, handler: Any) -> None:
        """The canvas's mouse handler (a tool of ``ui/tools.py``), or None to pan."""
        self.canvas.set_tool(handler)

    def add_canvas_item(self, item: QGraphicsItem) -> None:
        self.canvas.scene().addItem(item)

    def add_timeline_item(self, item: Any) -> None:
        """A pyqtgraph item drawn on the per-frame strip (x = frame index, y in 0..1)."""
        self.timeline.plot_widget().addItem(item)

    def notify(self, message: str, timeout_ms: int = 4000) -> None:
        """A passing success line in the status bar (problems go through :meth:`report`);
        kept in the message log too."""
        self.message_log.add("info", message)
        self.statusBar().showMessage(message, timeout_ms)

    def model_message(self, text: str) -> None:
        """The model panel's line (what runs, what is ready)."""
        self.model_panel.set_message(text)

    # ---- SmokeHost (ui/app.py): what the smoke run (demo, screenshots) uses ---------------
    def model_loading(self) -> bool:
        """A model is being built (``model_info()`` is the previous one, or None, until it runs)."""
        return self.predictions.loading_model

    def save_screenshot(self, path: str | Path) -> bool:
        """Draw what waits for a deferred redraw (the timeline), then save the window as an
        image at ``path``. False when it could not be written."""
        self.timeline.flush()
        QApplication.processEvents()
        return self.grab().save(str(path))

    # ---- messages and shutdown ---------------------------------------------------------
    def report(self, message: str, level: str = "error") -> None:
        """Show a one-line problem (status bar, message log); the app carries on."""
        self.errors.append(message)
        self.message_log.add(level, message)
        self.statusBar().showMessage(message, 15000)
        self.message.emit(message)

    def _show_log_count(self, _count: int = 0) -> None:
        log = self.message_log
        err, warn = log.count("error"), log.count("warning")
        problems = f" ({err + warn} problem{'s' if err + warn != 1 else ''})" if err + warn else ""
        self.log_button.setText(f"Log{problems}")
        self.log_button.setToolTip(f"Message log: {len(log.entries)} lines this session, {err} errors, "
                                   f"{warn} warnings (View > Message log)")

    # ---- settings: written when they change ----------------------------------------------
    def settings_changed(self, *_args: object) -> None:
        """Something the settings keep changed: write them shortly (many changes, one write)."""
        if not self._closed:
            self._settings_timer.start()

    def _remember_brush(self, radius: int) -> None:
        self.settings.brush_radius = int(radius)
        self.settings_changed()

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        if not self._layout_restored:  # the first start's layout, for the size the window has
            self._layout_restored = True
            self.fit_docks()

    def fit_docks(self) -> None:
        """On a short window (below COMPACT_HEIGHT) the Review and Annotation docks share the
        side as tabs, each at full height, so no panel is clipped or half scrolled away; on a
        taller one they stand one above the other, the Annotation dock as tall as its rows
        need and the Review dock the rest, so neither scrolls (at 1440x900 a split by size
        hints left the Review dock short of its Overlay group). Later, when a panel's rows
        change (a source opens and the Annotation panel's counts wrap, a model message shows)
        or the window is resized, :meth:`_refit_docks` moves the split again where one dock
        would scroll; once the user drags a dock separator their arrangement is kept."""
        review = self.findChild(QDockWidget, "reviewDock")
        annotation = self.findChild(QDockWidget, "annotationDock")
        if review is None or annotation is None or review.isFloating() or annotation.isFloating():
            return
        if self.height() < COMPACT_HEIGHT:
            self.tabifyDockWidget(review, annotation)
            review.raise_()
            return
        self._split_docks(review, annotation, always=True)

    def _split_docks(self, review: QDockWidget, annotation: QDockWidget, *, always: bool) -> None:
        """Give the Annotation dock the height its rows need and the Review dock the rest (the
        Review dock's need first where both do not fit), when they stand one above the other
        in one area; unless ``always``, only where one of them is now short of its need."""
        if (review.isFloating() or annotation.isFloating() or self.tabifiedDockWidgets(review)
                or self.dockWidgetArea(review) != self.dockWidgetArea(annotation)
                or not (review.isVisible() and annotation.isVisible())
                or review.geometry().bottom() >= annotation.geometry().top()):
            return
        layout = self.layout()
        if layout is not None:
            layout.activate()  # the docks' sizes for this window size, before measuring them
        need_review, need_annotation = _dock_need(review), _dock_need(annotation)
        if not always and review.height() >= need_review and annotation.height() >= need_annotation:
            return
        total = review.height() + annotation.height()
        low = min(need_annotation, total - need_review)
        if low > 0 and low != annotation.height():
            self.resizeDocks([review, annotation], [total - low, low], Qt.Orientation.Vertical)

    def _refit_docks(self) -> None:
        """A panel's rows or the window's size changed: split the docks again where one would
        now scroll (not after the user dragged a separator, nor in the first layout pass)."""
        review = self.findChild(QDockWidget, "reviewDock")
        annotation = self.findChild(QDockWidget, "annotationDock")
        if self._closed or self._docks_arranged or review is None or annotation is None or not self.isVisible():
            return
        self._split_docks(review, annotation, always=False)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if event.type() == QEvent.Type.LayoutRequest and watched in self._dock_panels:
            self._dock_fit_timer.start()  # the panel's rows changed: fit the docks once they settle
        return super().eventFilter(watched, event)

    def event(self, event: QEvent) -> bool:
        handled = super().event(event)
        # QMainWindow accepts a left press on its own area only to start dragging a dock
        # separator: from then on the docks keep the split the user makes
        if isinstance(event, QMouseEvent) and event.type() == QEvent.Type.MouseButtonPress \
                and event.isAccepted() and event.button() == Qt.MouseButton.LeftButton:
            self._docks_arranged = True
        return handled

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        self._dock_fit_timer.start()
        self.settings_changed()

    def moveEvent(self, event: QMoveEvent) -> None:
        super().moveEvent(event)
        self.settings_changed()

    def save_settings_now(self) -> bool:
        """Write the settings with the window's current geometry and layout; a failure is
        reported once (then kept in ``errors`` only). True when written."""
        self._settings_timer.stop()
        self.settings.window_geometry = bytes(self.saveGeometry().toBase64().data()).decode()
        self.settings.window_state = bytes(self.saveState(WINDOW_STATE_VERSION).toBase64().data()).decode()
        try:
            save_settings(self.settings)
        except (OSError, PolypviewerError) as exc:  # e.g. a link at settings.json: refused
            line = f"settings not saved: {exc}"
            if not self._settings_failed:
                self._settings_failed = True
                self.report(line, level="warning")
            return False
        return True

    def closeEvent(self, event: QCloseEvent) -> None:
        self.shutdown()
        super().closeEvent(event)

    def shutdown(self) -> None:
        """Stop playback and every worker thread, and wait for them (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self.player.stop()
        self._rescore_timer.stop()
        self._log_bridge.detach()
        self.annotation.shutdown()  # dialogs' workers stopped, project folded into its file
        self.predictions.shutdown()
        self.frames.shutdown()
        self.save_settings_now()


def _dock_need(dock: QDockWidget) -> int:
    """The height ``dock`` needs to show its scroll area's panel without scrolling, at its
    current width (the panel's wrapped labels are as tall as that width makes them)."""
    scroll = dock.widget()
    inner = scroll.widget() if isinstance(scroll, QScrollArea) else None
    if not isinstance(scroll, QScrollArea) or inner is None:
        return dock.sizeHint().height()
    width = scroll.viewport().width()
    content = inner.heightForWidth(width) if inner.hasHeightForWidth() else -1
    if content < 0:
        content = inner.sizeHint().height()
    return content + dock.height() - scroll.viewport().height()


def _model_line(info: dict[str, Any]) -> str:
    """The message log's line for a model that is now running: what, on which engine, and why."""
    what = f"{info.get('model', '?')} ({info.get('version', '?')})"
    how = " ".join(str(info[k]) for k in ("backend", "precision", "device") if info.get(k))
    why = info.get("why")
    return f"Model ready: {what}" + (f" on {how}" if how else "") + (f"; {why}" if why else "")
