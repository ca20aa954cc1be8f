"""Annotation in the review window: one :class:`AnnotationController` wires editing, review
states, the autosaved project, export and fine-tuning into :class:`~polypviewer.ui.main_window.MainWindow`.

The window creates it with ``AnnotationController(window)``; everything else happens through
the :class:`~polypviewer.ui.host.ReviewHost` protocol the window implements (its signals
``source_opened`` and ``displayed``, the frame, prediction and threshold shown, and
``use_session``/``show_mask``/``refresh_mask``/``rescore``/``report``), never through the
window's attributes.

* Editing: an :class:`~polypviewer.ui.tools.Editor` over the project's
  :class:`~polypviewer.core.edits.EditSession`. A frame is started from the model's
  thresholded prediction on its first edit; the window shows and scores the session's masks
  (``host.use_session``), so the canvas draws, and the metrics panel scores, the corrected mask.
* The project: one file per source under :func:`projects_dir` (never next to the user's
  data, see ``core/paths.py``), named after the source and a hash of its path. It is opened
  when a source whose project exists is opened (recovering a killed run's journal), and
  created on the first change otherwise, so merely looking at a video leaves nothing behind.
  A damaged project, or one whose source changed, is reported and left untouched; the work
  then goes to the next free name.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QObject, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QDockWidget, QFormLayout, QGroupBox, QLabel, QSpinBox, QToolBar, QVBoxLayout, QWidget

from polypviewer.core.edits import EditSession, FrameEdits, ReviewState
from polypviewer.core.errors import PolypviewerError
from polypviewer.core.fileio import describe_exception
from polypviewer.io.store import Project, ProjectError, SourceRef
from polypviewer.ui.host import ReviewHost
from polypviewer.ui.tools import Editor

__all__ = ["AnnotationController", "EditPanel", "projects_dir", "project_candidates", "STATE_COLORS",
           "EXTRA_KEYS"]

STATE_COLORS: dict[ReviewState, tuple[int, int, int]] = {
    ReviewState.ACCEPTED: (60, 200, 90), ReviewState.CORRECTED: (200, 90, 255),
    ReviewState.FLAGGED: (255, 150, 0)}
# Keys added here on top of the Editor's (Esc/B/E/F/P, [ ], Ctrl+Z/Ctrl+Shift+Z/Ctrl+Y, A/C/X/U).
EXTRA_KEYS: dict[str, tuple[str, ...]] = {
    "next_unreviewed": ("N",), "prev_unreviewed": ("Shift+N",), "save": ("Ctrl+S",),
    "export": ("Ctrl+E",), "finetune": ("Ctrl+Shift+T",), "carry_forward": ("K",),
    "keep_largest": ("L",), "fill_holes": ("H",), "grow": ("=",), "shrink": ("-",),
    "clear": ("Delete",), "reset": ("R",), "finish_polygon": ("Return", "Enter"),
}


def annotation_keys() -> dict[str, tuple[str, ...]]:
    """Default shortcuts of every annotation action, by the name the user's keymap uses."""
    from polypviewer.ui.tools import REVIEW_KEYS, TOOL_KEYS

    keys: dict[str, tuple[str, ...]] = {name: (key,) for name, key in TOOL_KEYS.items()}
    keys.update({"bigger": ("]",), "smaller": ("[",), "undo": ("Ctrl+Z",), "redo": ("Ctrl+Shift+Z", "Ctrl+Y")})
    keys.update({f"state_{st.name.lower()}": (key,) for st, key in REVIEW_KEYS.items()})
    keys.update(EXTRA_KEYS)
    return keys


def projects_dir() -> Path:
    """Where project files live: ``$POLYPVIEWER_PROJECTS``, else ``<config dir>/projects``."""
    from polypviewer.core.paths import config_dir

    override = os.environ.get("POLYPVIEWER_PROJECTS")
    path = Path(override) if override else config_dir() / "projects"
    path.mkdir(parents=True, exist_ok=True)
    return path


def project_candidates(source: str | Path, limit: int = 20) -> list[Path]:
    """Project paths for a source, in the order they are tried: ``<name>-<hash>.pvproj.h5``,
    then ``...-2``, ``...-3`` (used when an earlier one is damaged or for another source)."""
    p = Path(source).resolve()
    digest = hashlib.sha256(str(p).encode()).hexdigest()[:12]
    stem = f"{p.name}-{digest}"
    folder = projects_dir()
    return [folder / f"{stem}{'' if k == 1 else f'-{k}'}.pvproj.h5" for k in range(1, limit + 1)]


class _Persist:
    """The session's listener: hands every change to the project, creating the project file on
    the first change (so nothing is written for a source that is only looked at), and turns a
    failed write into a one-line message instead of an exception inside a mouse handler."""

    def __init__(self, controller: AnnotationController) -> None:
        self.c = controller

    def _call(self, method: str, *args: Any) -> None:
        project = self.c._create_project()
        if project is None:
            return
        try:
            getattr(project, method)(*args)
        except PolypviewerError as exc:
            self.c.message.emit(f"{exc} — this change is NOT saved; Export to keep the work")
        finally:
            self.c.session.listener = self  # a compaction re-installs the project itself

    def frame_started(self, frame: int, edits: FrameEdits) -> None:
        self._call("frame_started", frame, edits)

    def mask_changed(self, frame: int, diff) -> None:
        self._call("mask_changed", frame, diff)

    def state_changed(self, frame: int, state: ReviewState) -> None:
        self._call("state_changed", frame, state)


class EditPanel(QGroupBox):
    """Review state and correction effort of the current frame, the N of grow/shrink, and
    counts of every state in the source."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Review and edits", parent)
        self.rows: dict[str, QLabel] = {}
        form = QFormLayout()
        for key, label in (("state", "State"), ("tool", "Tool"), ("model_vs_corrected", "Dice model vs corrected"),
                           ("changed", "Pixels changed"), ("strokes", "Changes"),
                           ("model_vs_gt", "Dice model vs GT"), ("corrected_vs_gt", "Dice corrected vs GT"),
                           ("counts", "Frames"), ("project", "Project")):
            self.rows[key] = QLabel("–")
            self.rows[key].setWordWrap(True)
            self.rows[key].setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            form.addRow(label, self.rows[key])
        self.px = QSpinBox()
        self.px.setRange(1, 100)
        self.px.setValue(3)
        self.px.setSuffix(" px")
        self.px.setToolTip("How far Grow (=) and Shrink (-) move the mask's border")
        self.px.setFocusPolicy(Qt.FocusPolicy.ClickFocus)
        form.addRow("Grow / shrink by", self.px)
        layout = QVBoxLayout(self)
        layout.addLayout(form)

    def value(self, key: str) -> str:
        return self.rows[key].text()

    def set(self, key: str, text: str) -> None:
        self.rows[key].setText(text)


class AnnotationController(QObject):
    """Wires editing, review states, autosave, export and fine-tune into the main window.

    Signals: ``project_changed(path or None)``, ``message(str)``.
    """

    project_changed = Signal(object)
    message = Signal(str)

    def __init__(self, host: ReviewHost) -> None:
        super().__init__(host.main_window())
        self.host = host
        self.project: Project | None = None
        self.source_info: dict | None = None
        self.session = EditSession()
        self.editor = Editor(self.session, self, start_frame=self._start_frame)
        self.model_versions: dict[str, str] = {}  # menu text -> checkpoint path
        self._candidates: list[Path] = []
        self._persist_failed = False
        self._dialogs: list[Any] = []
        self._dirty: set[int] = set()
        self._rescore = QTimer(self, singleShot=True, interval=80, timeout=self._flush_rescore)
        self.panel = EditPanel()
        self._build_actions()
        self._build_ui()
        self._wire()
        self._list_finetuned()
        self._update_panel()

    # ---- composition --------------------------------------------------------------------
    def _build_actions(self) -> None:
        win, ed = self.host.main_window(), self.editor
        acts = ed.create_actions(win)
        for op in ("grow", "shrink"):  # take N from the panel, not the default 1 px
            acts[op].triggered.disconnect()
            acts[op].triggered.connect(lambda _=False, o=op: self.editor.cleanup(o, self.panel.px.value()))
        for state in ReviewState:  # through set_state, which says why a state cannot be set
            act = acts[f"state_{state.name.lower()}"]
            act.triggered.disconnect()
            act.triggered.connect(lambda _=False, st=state: self.set_state(st))
        extra = {
            "next_unreviewed": ("Next unreviewed frame", lambda: self.jump_unreviewed(1)),
            "prev_unreviewed": ("Previous unreviewed frame", lambda: self.jump_unreviewed(-1)),
            "carry_forward": ("Carry previous frame's mask forward", self.carry_forward),
            "save": ("&Save project", self.save),
            "export": ("&Export Kvasir-SEG…", self.open_export_dialog),
            "finetune": ("&Fine-tune on corrected frames…", self.open_finetune_dialog),
            "finish_polygon": ("Close polygon", self._finish_polygon),
        }
        for name, (text, slot) in extra.items():
            act = QAction(text, win)
            act.setObjectName(name)
            act.triggered.connect(lambda _=False, s=slot: s())
            acts[name] = act
        # The window resolved the user's keymap over annotation_keys() (io.settings "keymap").
        keymap = self.host.keymap or annotation_keys()
        for name, act in acts.items():
            if name in keymap:
                act.setShortcuts([QKeySequence(k) for k in keymap[name]])
        for name, act in acts.items():
            act.setObjectName(name)
            keys = ", ".join(s.toString() for s in act.shortcuts())
            if keys:
                act.setToolTip(f"{act.text().replace('&', '')} ({keys})")
            act.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
            win.addAction(act)
        self.actions = acts

    def _build_ui(self) -> None:
        win, a = self.host.main_window(), self.actions
        menu = win.menuBar().addMenu("&Annotate")
        for group in (("navigate", "brush", "eraser", "fill", "polygon", "finish_polygon", "bigger", "smaller"),
                      ("undo", "redo"),
                      ("state_accepted", "state_corrected", "state_flagged", "state_unreviewed",
                       "next_unreviewed", "prev_unreviewed"),
                      ("keep_largest", "fill_holes", "grow", "shrink", "clear", "reset", "carry_forward"),
                      ("save", "export", "finetune")):
            for name in group:
                menu.addAction(a[name])
            menu.addSeparator()
        self.versions_menu = menu.addMenu("Model versions")
        self.versions_menu.setEnabled(False)
        bar = QToolBar("Annotation", win)
        bar.setObjectName("annotationToolbar")
        for name in ("navigate", "brush", "eraser", "fill", "polygon", None, "undo", "redo", None, "state_accepted",
                     "state_corrected", "state_flagged", "next_unreviewed", None, "export", "finetune"):
            if name is None:
                bar.addSeparator()
            else:
                bar.addAction(a[name])
        win.addToolBar(Qt.ToolBarArea.TopToolBarArea, bar)
        self.toolbar = bar
        dock = QDockWidget("Annotation", win)
        dock.setObjectName("annotationDock")
        dock.setWidget(self.panel)
        dock.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetMovable)
        win.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, dock)
        self.dock = dock
        # State markers on the timeline: a coloured dot per reviewed frame at the bottom.
        self.markers = pg.ScatterPlotItem(size=6, pen=None, symbol="s")
        self.host.add_timeline_item(self.markers)
        self.host.add_canvas_item(self.editor.cursor)
        self.host.add_canvas_item(self.editor.preview)
        self.host.set_canvas_tool(self.editor.canvas_handler())
        self.editor.cursor.setVisible(self.editor.tool.shows_brush)

    def _wire(self) -> None:
        ed, win = self.editor, self.host
        win.source_opened.connect(self._on_source_opened)
        win.displayed.connect(self._on_displayed)
        ed.toolChanged.connect(self._on_tool)
        ed.frameStarted.connect(self._on_frame_started)
        ed.maskChanged.connect(self._on_mask_changed)
        ed.stateChanged.connect(lambda f, s: self._on_state(f))
        ed.brushRadiusChanged.connect(lambda r: self._update_panel())
        self.message.connect(win.report)

    # ---- project --------------------------------------------------------------------------
    def _on_source_opened(self, info: dict) -> None:
        self.close_project()
        self.source_info = dict(info)
        self.session = EditSession()
        self._candidates = []
        try:
            self._candidates = project_candidates(info["path"])
        except OSError as exc:
            self.message.emit(f"{info['path']}: no folder for its project ({exc}); edits will not be saved")
        for path in self._candidates:
            if not path.exists():
                continue
            try:
                project = Project.open(path)
            except Exception as exc:  # noqa: BLE001 - whatever happened, the work must go somewhere
                text = str(exc) if isinstance(exc, PolypviewerError) else \
                    f"{path}: cannot open the project ({type(exc).__name__}: {describe_exception(exc)})"
                self.message.emit(f"{text} (left untouched; this session uses a new project file)")
                continue
            reason = project.source.mismatch(info["path"])
            if reason is not None or project.source.n_frames not in (0, int(info["n"])):
                project.close()
                self.message.emit(f"{path}: belongs to another version of this source "
                                  f"({reason or 'frame count differs'}); left untouched")
                continue
            self._adopt(project)
            break
        self._persist_failed = False
        self.session.listener = _Persist(self)
        self.editor.session = self.session
        self.editor.select("navigate")  # a new source starts in navigate: a stray click edits nothing
        self.editor.history.clear()
        self.editor.frame = None
        self.host.use_session(self.session)
        self._redraw_markers()
        self._update_panel()

    def _adopt(self, project: Project) -> None:
        self.project = project
        self.session = project.session
        rec = project.recovery
        if rec.recovered:
            self.message.emit(f"{project.path}: recovered {rec.replayed} unsaved change(s) of a previous run")
        damage = rec.describe()  # a damaged journal: which changes were lost, where the copy is
        if damage:
            self.message.emit(f"{project.journal_path}: {damage}")
        for aside in rec.moved_aside:
            self.message.emit(f"{aside}: a journal that did not belong to this project was kept aside")
        self.project_changed.emit(project.path)

    def _create_project(self) -> Project | None:
        """The project of the open source, created now if it does not exist yet."""
        if self.project is not None:
            return self.project
        info = self.source_info
        if info is None or self._persist_failed:
            return None
        for path in self._candidates:
            if path.exists():
                continue
            try:
                ref = SourceRef.from_path(info["path"], kind=str(info.get("kind", "")), n_frames=int(info["n"]))
                project = Project.create(path, ref)
            except (ProjectError, OSError) as exc:
                self.message.emit(f"{exc}; edits are kept in memory only")
                break
            # The session already holds this first change: the project adopts it as its own.
            project.session = self.session
            self.project = project
            self.project_changed.emit(project.path)
            self._update_panel()
            return project
        self._persist_failed = True  # reported once; not retried per stroke
        return None

    def save(self) -> None:
        """Ctrl+S: every change is already in the journal; this folds it into the file."""
        if self.project is None:
            self.message.emit("nothing to save yet: the project is created with the first edit")
            return
        try:
            self.project.save()
            self.session.listener = _Persist(self)  # compaction re-installed the project itself
            self.host.notify(f"Saved {self.project.path}", 4000)
        except PolypviewerError as exc:
            self.message.emit(str(exc))

    def close_project(self) -> None:
        if self.project is not None:
            try:
                self.project.close()
            except PolypviewerError as exc:
                self.message.emit(str(exc))
            self.project = None
            self.project_changed.emit(None)

    def shutdown(self) -> None:
        """Stop the dialogs' workers and close the project (called by the window on close)."""
        self._rescore.stop()
        for dlg in list(self._dialogs):
            dlg.stop_worker()
            dlg.close()
        self._dialogs.clear()
        self.close_project()

    # ---- editing ---------------------------------------------------------------------------
    def _start_frame(self, index: int) -> FrameEdits | None:
        win = self.host
        cached = win.frame(index)
        if cached is None or self.source_info is None:
            return None
        prob = win.prediction(index)
        info = win.model_info()
        if prob is None and info is not None:
            self.message.emit(f"{win.frame_name(index)}: the model's prediction is not ready yet; "
                              "try again in a moment")
            return None
        model_mask = prob >= win.threshold if prob is not None else np.zeros(cached.frame.shape[:2], bool)
        version = str(info.get("version", "")) if info else "none"
        try:
            return self.session.start(index, model_mask, model_version=version, threshold=win.threshold,
                                      name=cached.name)
        except PolypviewerError as exc:
            self.message.emit(str(exc))
            return self.session.get(index)

    def _on_frame_started(self, index: int) -> None:
        self.host.show_mask(index)

    def _on_mask_changed(self, frame: int, rect) -> None:
        self.host.refresh_mask(frame, rect)
        self._dirty.add(frame)
        if not self._rescore.isActive():
            self._rescore.start()

    def _flush_rescore(self) -> None:
        dirty, self._dirty = self._dirty, set()
        for f in sorted(dirty):
            self.host.rescore(f)
        self._redraw_markers()
        self._update_panel()

    def _on_state(self, frame: int) -> None:
        self._redraw_markers()
        self._update_panel()

    def _on_displayed(self, index: int, has_prediction: bool) -> None:
        if index != self.editor.frame:
            self.editor.set_frame(index)
            self._update_panel()

    def _on_tool(self, name: str) -> None:
        self.host.set_canvas_tool(self.editor.canvas_handler())
        self._update_panel()

    def _finish_polygon(self) -> None:
        tool = self.editor.tool
        if hasattr(tool, "finish"):
            tool.finish()

    def set_state(self, state: ReviewState) -> bool:
        ok = self.editor.set_state(state)
        if not ok:
            index = self.host.index
            name = self.host.frame_name(index)
            has_mask = self.session.get(index) is not None or self.host.prediction(index) is not None
            if ReviewState(state) == ReviewState.CORRECTED and has_mask:
                self.message.emit(f"{name}: nothing is corrected, the mask is the model's; edit it first, "
                                  "or accept it (A)")
            else:
                self.message.emit(f"{name}: cannot mark {ReviewState(state).name.lower()} "
                                  "before the model's prediction is shown")
        return ok

    def carry_forward(self) -> None:
        """Copy the nearest earlier frame's corrected mask onto this frame (one undo step)."""
        index = self.host.index
        earlier = [f for f in self.session.frames if f < index]
        if not earlier:
            self.message.emit("carry forward: no earlier frame has a mask yet")
            return
        self.editor.carry_forward(max(earlier))

    def jump_unreviewed(self, step: int = 1) -> None:
        win = self.host
        if not win.n:
            return
        n, cur = win.n, win.index
        order = list(range(cur + 1, n)) + list(range(0, cur)) if step > 0 else \
            list(range(cur - 1, -1, -1)) + list(range(n - 1, cur, -1))
        target = next((f for f in order if self.session.state(f) == ReviewState.UNREVIEWED), None)
        if target is None:
            here = self.session.state(cur) == ReviewState.UNREVIEWED
            self.message.emit("no other frame is unreviewed" if here else "every frame has been reviewed")
            return
        win.set_playing(False)
        win.go_to(target)

    # ---- display -------------------------------------------------------------------------------
    def _redraw_markers(self) -> None:
        xs, brushes = [], []
        for f, state in sorted(self.session.states.items()):
            if state in STATE_COLORS:
                xs.append(float(f))
                brushes.append(pg.mkBrush(*STATE_COLORS[state]))
        self.markers.setData(xs, [0.03] * len(xs), brush=brushes)

    def _update_panel(self) -> None:
        p, win = self.panel, self.host
        index = self.editor.frame
        tool = self.editor.tool.name
        p.set("tool", f"{tool} (radius {self.editor.brush_radius} px)" if self.editor.tool.shows_brush else tool)
        p.set("project", str(self.project.path) if self.project else "not created yet (first edit creates it)")
        if self.source_info is None:
            p.set("counts", "–")
            return
        n = int(self.source_info["n"])
        counts = {s: 0 for s in ReviewState}
        for f in range(n):
            counts[self.session.state(f)] += 1
        p.set("counts", f"{counts[ReviewState.ACCEPTED]} accepted, {counts[ReviewState.CORRECTED]} corrected, "
                        f"{counts[ReviewState.FLAGGED]} flagged, {counts[ReviewState.UNREVIEWED]} unreviewed")
        if index is None:
            return
        p.set("state", self.session.state(index).name.lower())
        edits = self.session.get(index)
        if edits is None:
            for key in ("model_vs_corrected", "changed", "strokes", "model_vs_gt", "corrected_vs_gt"):
                p.set(key, "–")
            return
        st = edits.stats()
        p.set("model_vs_corrected", f"{st.dice_model_vs_corrected:.3f}")
        p.set("changed", f"{st.pixels_changed} (+{st.pixels_added} / −{st.pixels_removed})")
        p.set("strokes", str(st.strokes))
        cached = win.frame(index)
        if cached is not None and cached.gt is not None:
            from polypviewer.core.metrics import scores

            p.set("model_vs_gt", f"{scores(edits.model_mask, cached.gt)['dice']:.3f}")
            p.set("corrected_vs_gt", f"{scores(edits.mask, cached.gt)['dice']:.3f}")
        else:
            p.set("model_vs_gt", "– (no ground truth)")
            p.set("corrected_vs_gt", "– (no ground truth)")

    # ---- model versions (fine-tune results) -------------------------------------------------------
    def _list_finetuned(self) -> None:
        """Fine-tuned checkpoints of earlier sessions (the dialog writes them under
        ``<projects dir>/models``) stay selectable after a restart."""
        try:
            found = sorted((projects_dir() / "models").glob("*.safetensors"))
        except OSError:
            return
        for path in found:
            self.add_model_version(f"{path.name} (fine-tuned)", str(path))

    def add_model_version(self, label: str, path: str) -> None:
        """List a checkpoint under Annotate > Model versions (the old ones stay selectable)."""
        if label in self.model_versions or path in self.model_versions.values():
            return
        self.model_versions[label] = path
        self.versions_menu.addAction(label, lambda p=path: self.host.load_model(None, p))
        self.versions_menu.setEnabled(True)

    # ---- dialogs ---------------------------------------------------------------------------------
    def open_export_dialog(self):
        from polypviewer.ui.export_dialog import ExportDialog

        if self.source_info is None:
            self.message.emit("open a source before exporting")
            return None
        dlg = ExportDialog(self, self.host.main_window())
        self._track(dlg)
        dlg.show()
        return dlg

    def open_finetune_dialog(self):
        from polypviewer.ui.finetune_dialog import FinetuneDialog

        if self.source_info is None:
            self.message.emit("open a source before fine-tuning")
            return None
        dlg = FinetuneDialog(self, self.host.main_window())
        self._track(dlg)
        dlg.show()
        return dlg

    def _track(self, dlg) -> None:
        self._dialogs = [d for d in self._dialogs if d.isVisible() or d.busy()]
        self._dialogs.append(dlg)

    # ---- what export and fine-tune read ---------------------------------------------------------
    def frames_in(self, states: tuple[ReviewState, ...]) -> list[int]:
        """Frames with a mask whose review state is one of ``states`` (ascending)."""
        return [f for f in self.session.with_state(*states) if f in self.session.frames]

    def snapshot(self, states: tuple[ReviewState, ...]) -> list[tuple[int, str, np.ndarray, dict]]:
        """``(frame, name, mask copy, statistics row)`` of started frames in ``states``, taken on
        the GUI thread so a worker never reads a mask while it is being painted."""
        rows = []
        for f in self.frames_in(states):
            edits = self.session.frames[f]
            st = edits.stats()
            name = self.session.names.get(f) or self.host.frame_name(f)
            rows.append((f, name, edits.mask.copy(), {
                "frame": f, "state": self.session.state(f).name.lower(), "model_version": edits.model_version,
                "threshold": edits.threshold, "strokes": st.strokes, "pixels_changed": st.pixels_changed,
                "pixels_added": st.pixels_added, "pixels_removed": st.pixels_removed,
                "dice_model_vs_corrected": round(st.dice_model_vs_corrected, 6)}))
        return rows
