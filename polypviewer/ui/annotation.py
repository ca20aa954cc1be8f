"""Annotation in the review window: :class:`AnnotationController` wires editing, review states,
the autosaved project, export and fine-tuning into any :class:`~polypviewer.ui.host.ReviewHost`
(the main window creates it with ``AnnotationController(self)``).

It composes, and each piece has its own file:

* editing: an :class:`~polypviewer.ui.tools.Editor` (tools, undo per frame) over the session of
  the open source's :class:`~polypviewer.io.projects.SourceProject` (Qt-free: which project
  file, opened or created on the first change, every change journaled). A frame is started
  from the model's thresholded prediction on its first edit; the window shows and scores the
  session's masks (``host.use_session``), so the canvas draws, and the metrics panel scores,
  the corrected mask;
* the Annotate menu, toolbar and shortcuts (defaults in ``ui/annotation_keys.py``, the user's
  keymap applied by the window), the dock's :class:`~polypviewer.ui.edit_panel.EditPanel`, the
  review-state markers on the timeline (``ui/review_markers.py``) and Annotate > Model versions
  (``ui/model_versions.py``);
* the export and fine-tune dialogs, which read :meth:`snapshot`;
* Propagate (``ui/propagation.py``): the shown reviewed frame's mask carried forward or
  backward in the background, each frame PROPAGATED and one undo step, drift on the timeline;
* the Box tool's LiteMedSAM (``ui/prompting.py``): while the Box tool is selected, the shown
  frame's and the next frame's embeddings are computed in the background, and a box or click
  comes back as a mask merged in one undo step (``Editor.apply_prompt``).

A new action: its default key in ``annotation_keys.EXTRA_KEYS``, then :meth:`add_action`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from PySide6.QtCore import QObject, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QDockWidget, QScrollArea, QToolBar

from polypviewer.core.edits import EditSession, FrameEdits, Rect, ReviewState
from polypviewer.core.errors import PolypviewerError
from polypviewer.io.projects import SourceProject
from polypviewer.io.store import Project
from polypviewer.ui.annotation_keys import annotation_keys
from polypviewer.ui.edit_panel import EditPanel
from polypviewer.ui.host import ReviewHost
from polypviewer.ui.model_versions import ModelVersions
from polypviewer.ui.review_markers import ReviewMarkers
from polypviewer.ui.tools import REVIEW_KEYS, TOOL_KEYS, Editor

if TYPE_CHECKING:
    from polypviewer.ui.export_dialog import ExportDialog
    from polypviewer.ui.finetune_dialog import FinetuneDialog
    from polypviewer.ui.prompting import PromptRequest
    from polypviewer.ui.worker_dialog import WorkerDialog

__all__ = ["AnnotationController", "MENU_GROUPS"]

# The Annotate menu, in groups separated by a line (add_action appends to a group).
MENU_GROUPS: dict[str, tuple[str, ...]] = {
    "tools": (*TOOL_KEYS, "finish_polygon", "bigger", "smaller"),
    "history": ("undo", "redo"),
    "review": ("state_accepted", "state_corrected", "state_flagged", "state_unreviewed",
               "next_unreviewed", "prev_unreviewed"),
    "mask": ("keep_largest", "fill_holes", "grow", "shrink", "clear", "reset", "carry_forward"),
    "project": ("save", "export", "finetune"),
}
TOOLBAR: tuple[str | None, ...] = (*TOOL_KEYS, None, "undo", "redo", None, "state_accepted", "state_corrected",
                                   "state_flagged", "next_unreviewed", None, "export", "finetune")
# The toolbar's own short texts (QAction.iconText; menus keep the full text): they never change,
# so no button moves under the mouse when Undo's text becomes "Undo keep largest region", and
# the whole bar fits a 1280 px window.
TOOLBAR_TEXT: dict[str, str] = {"undo": "Undo", "redo": "Redo", "state_accepted": "Accepted",
                                "state_corrected": "Corrected", "state_flagged": "Flagged",
                                "next_unreviewed": "Unreviewed ›", "export": "Export", "finetune": "Fine-tune"}


class AnnotationController(QObject):
    """Wires editing, review states, autosave, export and fine-tune into the host window.

    Signals: ``project_changed(path or None)``, ``message(str)`` (connected to ``host.report``).
    """

    project_changed = Signal(object)
    message = Signal(str)

    def __init__(self, host: ReviewHost) -> None:
        super().__init__(host.main_window())
        self.host = host
        self.projects = SourceProject(self.message.emit, self._on_project)
        self.source_info: dict[str, Any] | None = None
        self.editor = Editor(self.projects.session, self, start_frame=self._start_frame)
        self._dialogs: list[Any] = []
        self._dirty: set[int] = set()
        self._rescore = QTimer(self)  # re-score edited frames 80 ms after the last change
        self._rescore.setSingleShot(True)
        self._rescore.setInterval(80)
        self._rescore.timeout.connect(self._flush_rescore)
        from polypviewer.ui.prompting import PromptService

        self.prompts = PromptService(self)
        self._awaiting: set[int] = set()  # look-ahead frames whose pixels the window has not decoded yet
        self.editor.prompter = self._prompt
        self.panel = EditPanel()
        self.markers = ReviewMarkers()
        self._build_actions()
        self._build_ui()
        self._wire()
        self.versions.list_finetuned()  # the shipped ones when the window's catalog is read (off this thread)
        from polypviewer.ui.propagation import Propagator

        self.propagation = Propagator(self)  # Propagate forward/backward, drift, worst drift
        self._update_panel()

    @property
    def session(self) -> EditSession:
        """The open source's session: every edited mask and review state (one owner)."""
        return self.projects.session

    @property
    def project(self) -> Project | None:
        """The open source's project file, or None until the first change creates it."""
        return self.projects.project

    # ---- composition --------------------------------------------------------------------
    def _build_actions(self) -> None:
        win, ed = self.host.main_window(), self.editor
        acts = ed.create_actions(win)
        for op in ("grow", "shrink"):  # take N from the panel, not the default 1 px
            acts[op].triggered.disconnect()
            acts[op].triggered.connect(lambda _=False, o=op: self.editor.cleanup(o, self.panel.px.value()))
        for state in REVIEW_KEYS:  # through set_state, which says why a state cannot be set (not PROPAGATED:
            # only a propagation sets that)
            act = acts[f"state_{state.name.lower()}"]
            act.triggered.disconnect()
            act.triggered.connect(lambda _=False, st=state: self.set_state(st))
        self.actions: dict[str, QAction] = {}
        for name, act in acts.items():
            self._install(name, act)
        for name, text, slot in (
                ("next_unreviewed", "Next unreviewed frame", lambda: self.jump_unreviewed(1)),
                ("prev_unreviewed", "Previous unreviewed frame", lambda: self.jump_unreviewed(-1)),
                ("carry_forward", "Carry previous frame's mask forward", self.carry_forward),
                ("save", "&Save project", self.save),
                ("export", "&Export Kvasir-SEG…", self.open_export_dialog),
                ("finetune", "&Fine-tune on corrected frames…", self.open_finetune_dialog),
                ("finish_polygon", "Close polygon", self._finish_polygon)):
            self._install(name, self._new_action(name, text, slot))

    def _new_action(self, name: str, text: str, slot: Callable[[], Any]) -> QAction:
        act = QAction(text, self.host.main_window())
        act.setObjectName(name)
        act.triggered.connect(lambda _=False, s=slot: s())
        return act

    def _install(self, name: str, act: QAction) -> None:
        """The user's keymap (resolved by the window over annotation_keys()), tooltip, and a
        window-wide shortcut."""
        keymap = self.host.keymap or annotation_keys()
        if name in keymap:
            act.setShortcuts([QKeySequence(k) for k in keymap[name]])
        act.setObjectName(name)
        keys = ", ".join(s.toString() for s in act.shortcuts())
        if keys:
            act.setToolTip(f"{act.text().replace('&', '')} ({keys})")
        act.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
        self.host.main_window().addAction(act)
        self.actions[name] = act

    def add_action(self, name: str, text: str, slot: Callable[[], Any], *, group: str = "mask",
                   toolbar: bool = False) -> QAction:
        """A new Annotate action (e.g. a propagate step): shortcut from the keymap by ``name``
        (give it a default in ``annotation_keys.EXTRA_KEYS``), listed at the end of the menu's
        ``group`` (a key of :data:`MENU_GROUPS`), optionally on the toolbar."""
        if name in self.actions:
            raise ValueError(f"an annotation action named {name!r} exists already")
        if group not in self._group_ends:
            raise ValueError(f"no menu group {group!r}; choose from {', '.join(MENU_GROUPS)}")
        act = self._new_action(name, text, slot)
        self._install(name, act)
        entries = self.menu.actions()
        after = entries.index(self._group_ends[group]) + 1  # the group's separator
        self.menu.insertAction(entries[after], act)
        self._group_ends[group] = act
        if toolbar:
            self.toolbar.addAction(act)
        return act

    def _build_ui(self) -> None:
        win, a = self.host.main_window(), self.actions
        self.menu = menu = win.menuBar().addMenu("&Annotate")
        self._group_ends: dict[str, QAction] = {}
        for group, names in MENU_GROUPS.items():
            for name in names:
                menu.addAction(a[name])
            self._group_ends[group] = a[names[-1]]
            menu.addSeparator()
        self.versions = ModelVersions(menu.addMenu("Model versions"), lambda p: self.host.load_model(None, p))
        self.versions_menu = self.versions.menu
        bar = QToolBar("Annotation", win)
        bar.setObjectName("annotationToolbar")
        for entry in TOOLBAR:
            if entry is None:
                bar.addSeparator()
            else:
                if entry in TOOLBAR_TEXT:
                    a[entry].setIconText(TOOLBAR_TEXT[entry])
                bar.addAction(a[entry])
        win.addToolBar(Qt.ToolBarArea.TopToolBarArea, bar)
        self.toolbar = bar
        dock = QDockWidget("Annotation", win)
        dock.setObjectName("annotationDock")
        scroll = QScrollArea()  # a short window scrolls the panel instead of clipping its rows
        scroll.setWidget(self.panel)
        scroll.setWidgetResizable(True)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        dock.setWidget(scroll)
        dock.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetMovable)
        win.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, dock)
        self.dock = dock
        self.host.add_timeline_item(self.markers)
        self.host.add_canvas_item(self.editor.cursor)
        self.host.add_canvas_item(self.editor.preview)
        self.host.set_canvas_tool(self.editor.canvas_handler())
        self.editor.cursor.setVisible(self.editor.tool.shows_brush)

    def _wire(self) -> None:
        ed, host = self.editor, self.host
        host.source_opened.connect(self._on_source_opened)
        host.displayed.connect(self._on_displayed)
        host.frame_ready.connect(self._on_frame_ready)
        ed.toolChanged.connect(self._on_tool)
        ed.frameStarted.connect(self._on_frame_started)
        ed.maskChanged.connect(self._on_mask_changed)
        ed.stateChanged.connect(lambda f, s: self._on_state(f))
        ed.brushRadiusChanged.connect(lambda r: self._update_panel())
        self.message.connect(host.report)
        self.prompts.masked.connect(self._on_prompt_mask)
        self.prompts.failed.connect(self.message.emit)
        self.prompts.ready.connect(lambda text: self.host.notify(text, 4000))

    # ---- project --------------------------------------------------------------------------
    def _on_source_opened(self, info: dict[str, Any]) -> None:
        self.source_info = dict(info)
        session = self.projects.open(info["path"], int(info["n"]), str(info.get("kind", "")))
        self.editor.session = session
        self.editor.select("navigate")  # a new source starts in navigate: a stray click edits nothing
        self.editor.history.clear()
        self.editor.frame = None
        self.host.use_session(session)
        self.prompts.new_source()
        self.markers.show_states(session)
        self._update_panel()

    def _on_project(self, project: Project | None) -> None:
        self.project_changed.emit(None if project is None else project.path)
        self.panel.show_project(None if project is None else project.path)

    def save(self) -> None:
        """Ctrl+S: every change is already in the journal; this folds it into the file."""
        path = self.projects.save()
        if path is not None:
            self.host.notify(f"Saved {path}", 4000)

    def close_project(self) -> None:
        self.projects.close()

    def shutdown(self) -> None:
        """Stop the dialogs' workers and close the project (called by the window on close)."""
        self._rescore.stop()
        self.prompts.shutdown()
        self.propagation.shutdown()
        for dlg in list(self._dialogs):
            dlg.stop_worker()
            dlg.close()
        self._dialogs.clear()
        self.close_project()

    # ---- editing ---------------------------------------------------------------------------
    def _start_frame(self, index: int) -> FrameEdits | None:
        host = self.host
        cached = host.frame(index)
        if cached is None or self.source_info is None:
            return None
        prob = host.prediction(index)
        info = host.model_info()
        if prob is None and info is not None:
            self.message.emit(f"{host.frame_name(index)}: the model's prediction is not ready yet; "
                              "try again in a moment")
            return None
        model_mask = prob >= host.threshold if prob is not None else np.zeros(cached.frame.shape[:2], bool)
        version = str(info.get("version", "")) if info else "none"
        try:
            return self.session.start(index, model_mask, model_version=version, threshold=host.threshold,
                                      name=cached.name)
        except PolypviewerError as exc:
            self.message.emit(str(exc))
            return self.session.get(index)

    def _on_frame_started(self, index: int) -> None:
        self.host.show_mask(index)

    def _on_mask_changed(self, frame: int, rect: Rect | None) -> None:
        self.host.refresh_mask(frame, rect)
        self._dirty.add(frame)
        if not self._rescore.isActive():
            self._rescore.start()

    def _flush_rescore(self) -> None:
        dirty, self._dirty = self._dirty, set()
        for f in sorted(dirty):
            self.host.rescore(f)
        self.markers.show_states(self.session)
        self._update_panel()

    def _on_state(self, frame: int) -> None:
        self.markers.show_states(self.session)
        self._update_panel()

    def _on_displayed(self, index: int, has_prediction: bool) -> None:
        if index != self.editor.frame:
            self.editor.set_frame(index)
            self._update_panel()
        self._look_ahead()

    def _on_tool(self, name: str) -> None:
        self.host.set_canvas_tool(self.editor.canvas_handler())
        self._update_panel()
        self._look_ahead()

    # ---- the Box tool (LiteMedSAM) ----------------------------------------------------------------
    def _look_ahead(self) -> None:
        """Embed the shown frame and the next one in the background, only while the Box tool is
        selected (an embedding costs about as much CPU as many predictions), from the window's
        own decoded frames; one not decoded yet is embedded when it arrives (``frame_ready``)."""
        if self.editor.tool.name == "box" and self.source_info is not None and self.host.n:
            self._awaiting = set(self.prompts.look_ahead(self.host.index, self.host.n, self._pixels))

    def _pixels(self, index: int) -> np.ndarray | None:
        """Frame ``index``'s RGB pixels in the window's frame cache (the array the canvas shows)."""
        cached = self.host.frame(index)
        return None if cached is None else cached.frame

    def _on_frame_ready(self, index: int) -> None:
        if index in self._awaiting:
            self._look_ahead()

    def _prompt(self, frame: int, *, box: Sequence[float] | None = None, point: Sequence[float] | None = None,
                mode: str = "replace", region: np.ndarray | None = None) -> None:
        if point is not None and region is None:  # the shown mask: the prediction until the frame is edited
            prob = self.host.prediction(frame)
            region = prob >= self.host.threshold if prob is not None else None
        self.prompts.prompt(frame, box=box, point=point, mode=mode, region=region, pixels=self._pixels(frame))
        ready = frame in self.prompts.embedded_frames
        self.host.notify("Box: segmenting…" if ready else "Box: computing this frame's embedding…", 3000)

    def _on_prompt_mask(self, req: PromptRequest, mask: np.ndarray,
                        box: tuple[float, float, float, float]) -> None:
        stroke = self.editor.apply_prompt(req.frame, mask, box, req.mode)
        if stroke is None and self.session.get(req.frame) is None:
            self.message.emit(f"{self.host.frame_name(req.frame)}: the box's mask could not be applied "
                              "(the frame's prediction is not ready yet)")
        elif stroke is None:
            self.host.notify("Box: the mask did not change", 3000)

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
        host = self.host
        if not host.n:
            return
        n, cur = host.n, host.index
        order = list(range(cur + 1, n)) + list(range(0, cur)) if step > 0 else \
            list(range(cur - 1, -1, -1)) + list(range(n - 1, cur, -1))
        target = next((f for f in order if self.session.state(f) == ReviewState.UNREVIEWED), None)
        if target is None:
            here = self.session.state(cur) == ReviewState.UNREVIEWED
            self.message.emit("no other frame is unreviewed" if here else "every frame has been reviewed")
            return
        host.set_playing(False)
        host.go_to(target)

    # ---- display -------------------------------------------------------------------------------
    def _update_panel(self) -> None:
        p, ed = self.panel, self.editor
        p.show_tool(ed.tool.name, ed.brush_radius if ed.tool.shows_brush else None)
        p.show_project(self.project.path if self.project else None)
        if self.source_info is None:
            p.show_session(None, 0, None, None)
            return
        index = ed.frame
        cached = self.host.frame(index) if index is not None else None
        p.show_session(self.session, int(self.source_info["n"]), index, cached.gt if cached is not None else None)

    # ---- model versions (fine-tune results) -------------------------------------------------------
    def add_model_version(self, label: str, path: str) -> None:
        """List a checkpoint under Annotate > Model versions (the old ones stay selectable)."""
        self.versions.add(label, path)

    @property
    def model_versions(self) -> dict[str, str]:
        return self.versions.versions

    # ---- dialogs ---------------------------------------------------------------------------------
    def open_export_dialog(self) -> ExportDialog | None:
        from polypviewer.ui.export_dialog import ExportDialog

        if self.source_info is None:
            self.message.emit("open a source before exporting")
            return None
        dlg = ExportDialog(self, self.host.main_window())
        self._track(dlg)
        dlg.show()
        return dlg

    def open_finetune_dialog(self) -> FinetuneDialog | None:
        from polypviewer.ui.finetune_dialog import FinetuneDialog

        if self.source_info is None:
            self.message.emit("open a source before fine-tuning")
            return None
        dlg = FinetuneDialog(self, self.host.main_window())
        self._track(dlg)
        dlg.show()
        return dlg

    def _track(self, dlg: WorkerDialog) -> None:
        self._dialogs = [d for d in self._dialogs if d.isVisible() or d.busy()]
        self._dialogs.append(dlg)

    # ---- what export and fine-tune read ---------------------------------------------------------
    def frames_in(self, states: tuple[ReviewState, ...]) -> list[int]:
        """Frames with a mask whose review state is one of ``states`` (ascending)."""
        return [f for f in self.session.with_state(*states) if f in self.session.frames]

    def snapshot(self, states: tuple[ReviewState, ...]) -> list[tuple[int, str, np.ndarray, dict[str, Any]]]:
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
