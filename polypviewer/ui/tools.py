"""Editing tools and undo for the canvas: Qt glue over the pure-numpy ``core.edits`` model.

- :class:`EditCommand` is one ``QUndoCommand`` per completed stroke. It only touches the
  model (:class:`FrameEdits`) and calls ``refresh(frame, rect)``; never a widget.
- :class:`FrameHistory` keeps one ``QUndoStack`` per frame in a ``QUndoGroup``, so undo
  is per frame and survives moving to other frames and back.
- :class:`Editor` is what the canvas talks to: current frame, brush size, the tools
  (navigate Esc, the default: clicks never edit; brush B, eraser E, fill F, polygon P, box S
  (LiteMedSAM: a dragged box or a click to a mask, see :class:`BoxTool`);
  a tool's key again returns to navigate), the clean-up actions, a brush-outline cursor
  item and a polygon preview item for the canvas's scene, and the ``maskChanged(frame,
  rect)`` signal the overlay redraws from (only the dirty rectangle).

Wiring (done by ``ui.annotation.AnnotationController`` through ``ui.host.ReviewHost``):
``host.set_canvas_tool(editor.canvas_handler())`` (again on ``toolChanged``; None for navigate,
so the canvas pans), ``host.add_canvas_item(editor.cursor)`` and ``editor.preview``,
``host.use_session(session)`` (the canvas draws the session's masks, edited in place; the
thresholded prediction while a frame is not started), ``frameStarted`` -> ``host.show_mask``,
``editor.maskChanged`` -> ``host.refresh_mask(frame, rect)`` (redrawn when ``frame`` is the one
shown), and ``Editor(..., start_frame=...)`` so a frame is started from its prediction on first
touch. A new tool: a :class:`Tool` subclass listed in ``Editor.tools`` and :data:`TOOL_KEYS`.

Tools implement the canvas handler protocol ``press/move/release(x, y, event)`` and
``hover(x, y)`` (plus ``wheel(steps, event) -> bool``) in scene coordinates of the image item
(pixel ``(col, row)`` covers ``[col, col+1) x [row, row+1)``). The canvas sends them the left and the right button; a
right-button press inverts the tool (brush erases, eraser paints, fill clears, polygon
clears), through the same stroke / undo / journal path as the left button.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QAction, QActionGroup, QKeySequence, QPainterPath, QPen, QUndoCommand, QUndoGroup, QUndoStack
from PySide6.QtWidgets import QGraphicsEllipseItem, QGraphicsPathItem

from polypviewer.core.edits import EditSession, FrameEdits, Rect, ReviewState, Stroke

__all__ = ["EditCommand", "FrameHistory", "Editor", "Tool", "NavigateTool", "BrushTool", "EraserTool", "FillTool",
           "PolygonTool", "BoxTool", "TOOL_KEYS", "REVIEW_KEYS", "CLEANUP_OPS", "MIN_RADIUS", "MAX_RADIUS"]

Refresh = Callable[[int, "Rect | None"], None]

# Navigate first: it is the default tool (clicks and drags pan, never edit); Esc returns to it.
TOOL_KEYS: dict[str, str] = {"navigate": "Esc", "brush": "B", "eraser": "E", "fill": "F", "polygon": "P",
                             "box": "S"}
# One key per review state of the current frame (F is fill, so flagged is X).
REVIEW_KEYS: dict[ReviewState, str] = {ReviewState.ACCEPTED: "A", ReviewState.CORRECTED: "C",
                                       ReviewState.FLAGGED: "X", ReviewState.UNREVIEWED: "U"}
# name -> (menu text, FrameEdits method, takes a pixel count)
CLEANUP_OPS: dict[str, tuple[str, str, bool]] = {
    "keep_largest": ("Keep largest region", "keep_largest", False),
    "fill_holes": ("Fill holes", "fill_holes", False),
    "grow": ("Grow by N px", "grow", True),
    "shrink": ("Shrink by N px", "shrink", True),
    "clear": ("Clear mask", "clear", False),
    "reset": ("Reset to model prediction", "reset_to_model", False),
}
MIN_RADIUS, MAX_RADIUS = 1, 256


class EditCommand(QUndoCommand):
    """One undo step: a stroke already applied to ``edits`` (``applied=True``) or to apply on push."""

    def __init__(self, frame: int, edits: FrameEdits, stroke: Stroke, refresh: Refresh | None = None,
                 *, applied: bool = True) -> None:
        super().__init__(stroke.label)
        self.frame, self.edits, self.stroke = frame, edits, stroke
        self._refresh = refresh
        self._skip_redo = applied  # QUndoStack.push() calls redo(); the stroke is already painted

    def redo(self) -> None:
        if self._skip_redo:
            self._skip_redo = False
            return
        self._done(self.edits.apply(self.stroke))

    def undo(self) -> None:
        self._done(self.edits.revert(self.stroke))

    def _done(self, rect: Rect) -> None:
        if self._refresh is not None:
            self._refresh(self.frame, rect)


class FrameHistory(QObject):
    """One QUndoStack per frame inside a QUndoGroup; the group's active stack is the frame shown."""

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.group = QUndoGroup(self)
        self._stacks: dict[int, QUndoStack] = {}

    def stack(self, frame: int) -> QUndoStack:
        st = self._stacks.get(frame)
        if st is None:
            st = self._stacks[frame] = QUndoStack(self.group)
            st.setUndoLimit(0)  # unlimited: diffs are small
        return st

    def set_frame(self, frame: int) -> None:
        self.group.setActiveStack(self.stack(frame))

    def push(self, command: EditCommand) -> None:
        self.stack(command.frame).push(command)

    def clear(self) -> None:
        for st in self._stacks.values():
            st.clear()

    def create_actions(self, parent: QObject) -> tuple[QAction, QAction]:
        """Undo (Ctrl+Z) and redo (Ctrl+Shift+Z, Ctrl+Y) acting on the current frame's stack."""
        undo = self.group.createUndoAction(parent, "Undo")
        undo.setShortcut(QKeySequence("Ctrl+Z"))
        redo = self.group.createRedoAction(parent, "Redo")
        redo.setShortcuts([QKeySequence("Ctrl+Shift+Z"), QKeySequence("Ctrl+Y")])
        return undo, redo


class BrushCursor(QGraphicsEllipseItem):
    """Outline of the brush footprint, drawn over the image at the mouse position."""

    def __init__(self) -> None:
        super().__init__()
        pen = QPen(Qt.GlobalColor.white)
        pen.setCosmetic(True)  # one screen pixel wide at any zoom
        pen.setWidth(1)
        self.setPen(pen)
        self.setZValue(1000)
        self.setAcceptedMouseButtons(Qt.MouseButton.NoButton)
        self.setVisible(False)

    def place(self, x: float, y: float, radius: int) -> None:
        cx, cy = math.floor(x) + 0.5, math.floor(y) + 0.5  # centre of the pixel under the mouse
        r = radius + 0.5
        self.setRect(QRectF(cx - r, cy - r, 2 * r, 2 * r))


class Tool:
    """Base of the canvas handlers. Coordinates are image-scene floats."""

    name = ""
    shows_brush = False
    navigates = False  # True: the canvas gets no handler (left-drag pans; nothing edits)

    def __init__(self, editor: Editor) -> None:
        self.editor = editor

    def press(self, x: float, y: float, event: Any = None) -> None: ...
    def wheel(self, steps: float, event: Any = None) -> bool:
        """Shift+wheel from the canvas; True when consumed (brush tools resize the brush)."""
        if not self.shows_brush:
            return False
        self.editor.wheel(steps)
        return True

    def move(self, x: float, y: float, event: Any = None) -> None: ...
    def release(self, x: float, y: float, event: Any = None) -> None: ...
    def cancel(self) -> None: ...

    def hover(self, x: float, y: float) -> None:
        if self.shows_brush:
            self.editor.cursor.place(x, y, self.editor.brush_radius)


class NavigateTool(Tool):
    """Look, pan and zoom: no click or drag ever changes a mask (the default tool)."""

    name = "navigate"
    navigates = True


def _right_button(event: Any) -> bool:
    button = getattr(event, "button", None)
    return callable(button) and button() == Qt.MouseButton.RightButton


class BrushTool(Tool):
    """Round brush: a drag paints dabs live and becomes one undo step on release."""

    name = "brush"
    shows_brush = True
    value = True

    def __init__(self, editor: Editor) -> None:
        super().__init__(editor)
        self._edits: FrameEdits | None = None
        self._frame = -1
        self._last = (0.0, 0.0)
        self._paint = self.value

    def press(self, x: float, y: float, event: Any = None) -> None:
        edits = self.editor.edits(create=True)
        if edits is None or self._edits is not None:
            return
        self._edits, self._frame = edits, self.editor.frame  # type: ignore[assignment]
        self._paint = self.value != _right_button(event)
        self._last = (x - 0.5, y - 0.5)  # scene -> pixel-centre coordinates
        edits.begin_stroke()
        self.editor.refresh(self._frame, edits.dab(*self._last, self.editor.brush_radius, self._paint))

    def move(self, x: float, y: float, event: Any = None) -> None:
        self.hover(x, y)
        if self._edits is None:
            return
        p = (x - 0.5, y - 0.5)
        rect = self._edits.line(*self._last, *p, self.editor.brush_radius, self._paint)
        self._last = p
        self.editor.refresh(self._frame, rect)

    def release(self, x: float, y: float, event: Any = None) -> None:
        if self._edits is None:
            return
        self.move(x, y, event)
        edits, self._edits = self._edits, None
        stroke = edits.end_stroke("brush" if self._paint else "erase")
        if stroke is not None:
            self.editor.push(self._frame, edits, stroke)

    def cancel(self) -> None:
        if self._edits is not None:
            edits, self._edits = self._edits, None
            self.editor.refresh(self._frame, edits.cancel_stroke())


class EraserTool(BrushTool):
    name = "eraser"
    value = False


class FillTool(Tool):
    """Flood fill of the 4-connected region under the click (right button: clear it)."""

    name = "fill"

    def press(self, x: float, y: float, event: Any = None) -> None:
        edits = self.editor.edits(create=True)
        if edits is None:
            return
        stroke = edits.fill(x - 0.5, y - 0.5, not _right_button(event))
        if stroke is not None:
            self.editor.push(self.editor.frame, edits, stroke)  # type: ignore[arg-type]
            self.editor.refresh(self.editor.frame, stroke.rect)  # type: ignore[arg-type]


class PolygonTool(Tool):
    """Polygon by clicks (closes on a click near the first vertex, or :meth:`finish`) or lasso by drag.

    Right-button polygons clear their inside instead of filling it.
    """

    name = "polygon"
    CLOSE_PX = 6.0   # a click this close to the first vertex closes the polygon
    LASSO_STEP = 2.0  # a drag adds a vertex every 2 px

    def __init__(self, editor: Editor) -> None:
        super().__init__(editor)
        self.points: list[tuple[float, float]] = []
        self._dragging = False
        self._dragged = False
        self._value = True

    def press(self, x: float, y: float, event: Any = None) -> None:
        if self.editor.edits(create=True) is None:
            return
        if not self.points:
            self._value = not _right_button(event)
        elif len(self.points) >= 3 and math.dist(self.points[0], (x, y)) <= self.CLOSE_PX:
            self.finish()
            return
        self.points.append((x, y))
        self._dragging, self._dragged = True, False
        self._update_preview(None)

    def move(self, x: float, y: float, event: Any = None) -> None:
        if self._dragging and math.dist(self.points[-1], (x, y)) >= self.LASSO_STEP:
            self.points.append((x, y))
            self._dragged = True
        self._update_preview((x, y) if self.points else None)

    def release(self, x: float, y: float, event: Any = None) -> None:
        was_lasso = self._dragging and self._dragged
        self._dragging = False
        if was_lasso and len(self.points) >= 3:
            self.finish()

    def finish(self) -> Stroke | None:
        """Close the polygon and apply it (Enter / double-click)."""
        points, self.points = self.points, []
        self._dragging = False
        self._update_preview(None)
        edits = self.editor.edits()
        if edits is None or len(points) < 3:
            return None
        # Vertices at pixel centres: scene (x, y) is pixel (x - 0.5, y - 0.5).
        stroke = edits.polygon([(px - 0.5, py - 0.5) for px, py in points], self._value)
        if stroke is not None:
            self.editor.push(self.editor.frame, edits, stroke)  # type: ignore[arg-type]
            self.editor.refresh(self.editor.frame, stroke.rect)  # type: ignore[arg-type]
        return stroke

    def cancel(self) -> None:
        self.points, self._dragging = [], False
        self._update_preview(None)

    def _update_preview(self, mouse: tuple[float, float] | None) -> None:
        path = QPainterPath()
        pts = self.points + ([mouse] if mouse and self.points else [])
        if pts:
            path.moveTo(QPointF(*pts[0]))
            for p in pts[1:]:
                path.lineTo(QPointF(*p))
        self.editor.preview.setPath(path)


class BoxTool(Tool):
    """Box (S) to mask with LiteMedSAM: drag a box around a polyp and the mask the network finds
    inside it replaces the frame's mask there (Shift+drag: adds to it; right-drag: removes it);
    a click without a drag prompts with the box of the shown mask's region under the click
    (``engine.prompting.click_box``). The network runs in the background (``ui/prompting.py``);
    the result arrives through :meth:`Editor.apply_prompt` as one undo step."""

    name = "box"
    CLICK_PX = 4.0  # a press and release closer than this is a click

    def __init__(self, editor: Editor) -> None:
        super().__init__(editor)
        self._start: tuple[float, float] | None = None
        self._mode = "replace"

    def press(self, x: float, y: float, event: Any = None) -> None:
        self._start = (x, y)
        mods = event.modifiers() if event is not None and hasattr(event, "modifiers") else None
        shift = mods is not None and bool(mods & Qt.KeyboardModifier.ShiftModifier)
        self._mode = "remove" if _right_button(event) else "add" if shift else "replace"
        self._show(x, y)

    def move(self, x: float, y: float, event: Any = None) -> None:
        if self._start is not None:
            self._show(x, y)

    def release(self, x: float, y: float, event: Any = None) -> None:
        if self._start is None:
            return
        (x0, y0), self._start = self._start, None
        self.editor.preview.setPath(QPainterPath())
        if self.editor.frame is None:
            return
        if math.dist((x0, y0), (x, y)) < self.CLICK_PX:
            self.editor.request_prompt(point=(x - 0.5, y - 0.5), mode=self._mode)
        else:  # scene -> inclusive pixel corners
            self.editor.request_prompt(box=(min(x0, x), min(y0, y), max(x0, x) - 1, max(y0, y) - 1),
                                       mode=self._mode)

    def cancel(self) -> None:
        self._start = None
        self.editor.preview.setPath(QPainterPath())

    def _show(self, x: float, y: float) -> None:
        assert self._start is not None
        path = QPainterPath()
        path.addRect(QRectF(QPointF(*self._start), QPointF(x, y)).normalized())
        self.editor.preview.setPath(path)


class _ToolGroup(QActionGroup):
    """The exclusive group of tool actions; :meth:`sync` checks the current tool's (a slot of
    a QObject, so the connection goes away with the actions' parent)."""

    def sync(self, name: str) -> None:
        for act in self.actions():
            if act.objectName() == name:
                act.setChecked(True)


class Editor(QObject):
    """The editing state the canvas and the main window share.

    ``maskChanged(frame, rect)`` fires for every dab, undo, redo and clean-up with the
    dirty rect ``(x0, y0, x1, y1)`` (half-open) or ``None`` for "everything".
    """

    maskChanged = Signal(int, object)
    stateChanged = Signal(int, object)  # frame, ReviewState
    brushRadiusChanged = Signal(int)
    toolChanged = Signal(str)
    frameStarted = Signal(int)  # a frame got its editable mask: show FrameEdits.mask from now on

    def __init__(self, session: EditSession, parent: QObject | None = None, *, brush_radius: int = 12,
                 start_frame: Callable[[int], FrameEdits | None] | None = None) -> None:
        """``start_frame(frame)`` creates a frame's edits from its prediction on first touch
        (e.g. ``project.start_frame(i, prob >= t, model_version=..., threshold=t, name=...)``,
        None while no prediction is there), so frames only looked at are never stored."""
        super().__init__(parent)
        self.session = session
        self.start_frame = start_frame
        self.history = FrameHistory(self)
        self.frame: int | None = None
        self.brush_radius = brush_radius
        self.cursor = BrushCursor()
        self.preview = QGraphicsPathItem()
        # White dashed: never the ground truth's amber, nor a colour the mask layers use.
        pen = QPen(Qt.GlobalColor.white, 1.5, Qt.PenStyle.DashLine)
        pen.setCosmetic(True)
        self.preview.setPen(pen)
        self.preview.setZValue(1001)
        self.tools: dict[str, Tool] = {t.name: t(self) for t in (NavigateTool, BrushTool, EraserTool, FillTool,
                                                                 PolygonTool, BoxTool)}
        # Where the Box tool's prompts go: ``prompter(frame, box=..., point=..., mode=...,
        # region=...)`` (the annotation controller's background LiteMedSAM); None: not available.
        self.prompter: Callable[..., Any] | None = None
        self.tool: Tool = self.tools["navigate"]
        self.cursor.setVisible(False)

    # -- frame and tool selection ----------------------------------------------------------------
    def set_frame(self, frame: int) -> None:
        """Show ``frame``: an unfinished stroke or polygon is dropped, its undo stack made active."""
        if frame != self.frame:
            self.tool.cancel()
        self.frame = frame
        self.history.set_frame(frame)

    def edits(self, *, create: bool = False) -> FrameEdits | None:
        """The current frame's edits; with ``create``, started through ``start_frame`` if needed."""
        if self.frame is None:
            return None
        edits = self.session.get(self.frame)
        if edits is None and create and self.start_frame is not None:
            edits = self.start_frame(self.frame)
            if edits is not None:
                self.frameStarted.emit(self.frame)
        return edits

    def select(self, name: str) -> Tool:
        if name not in self.tools:
            raise KeyError(f"unknown tool {name!r}; choose from {', '.join(self.tools)}")
        if self.tool.name != name:
            self.tool.cancel()
            self.tool = self.tools[name]
            self.toolChanged.emit(name)
        self.cursor.setVisible(self.tool.shows_brush)
        return self.tool

    def toggle(self, name: str) -> Tool:
        """A tool's key: selects it, or, when it is already the tool, returns to navigate."""
        return self.select("navigate" if name == self.tool.name else name)

    def canvas_handler(self) -> Tool | None:
        """What ``canvas.set_tool`` gets: the tool, or None for navigate (the canvas pans)."""
        return None if self.tool.navigates else self.tool

    # -- brush size -------------------------------------------------------------------------------
    def set_brush_radius(self, radius: int) -> None:
        radius = max(MIN_RADIUS, min(MAX_RADIUS, int(radius)))
        if radius != self.brush_radius:
            self.brush_radius = radius
            rect = self.cursor.rect()
            if not rect.isNull():
                self.cursor.place(rect.center().x(), rect.center().y(), radius)
            self.brushRadiusChanged.emit(radius)

    def bigger(self) -> None:
        self.set_brush_radius(max(self.brush_radius + 1, round(self.brush_radius * 1.2)))

    def smaller(self) -> None:
        self.set_brush_radius(min(self.brush_radius - 1, round(self.brush_radius / 1.2)))

    def wheel(self, steps: float) -> None:
        """Shift+wheel: one notch (``steps`` = angleDelta / 120) is one ``bigger``/``smaller`` step."""
        if steps:
            for _ in range(min(10, max(1, round(abs(steps))))):
                (self.bigger if steps > 0 else self.smaller)()

    # -- changes ----------------------------------------------------------------------------------
    def refresh(self, frame: int, rect: Rect | None) -> None:
        self.maskChanged.emit(frame, rect)

    def push(self, frame: int, edits: FrameEdits, stroke: Stroke) -> None:
        """Record an already-applied stroke as one undo step on ``frame``'s stack."""
        self.history.push(EditCommand(frame, edits, stroke, self.refresh, applied=True))

    def cleanup(self, op: str, px: int = 1) -> Stroke | None:
        """Run a clean-up (a key of :data:`CLEANUP_OPS`) on the current frame as one undo step."""
        edits = self.edits(create=True)
        if edits is None or self.frame is None:
            return None
        _, method, takes_px = CLEANUP_OPS[op]
        stroke = getattr(edits, method)(px) if takes_px else getattr(edits, method)()
        return self._pushed(edits, stroke)

    def carry_forward(self, from_frame: int) -> Stroke | None:
        """Copy ``from_frame``'s mask onto the current frame (one undo step)."""
        edits, src = self.edits(create=True), self.session.get(from_frame)
        if edits is None or src is None:
            return None
        return self._pushed(edits, edits.carry_forward(src.mask))

    def set_state(self, state: ReviewState) -> bool:
        """Set the current frame's review state; False when it needs a mask the frame lacks."""
        if self.frame is None:
            return False
        if ReviewState(state) == ReviewState.ACCEPTED:
            self.edits(create=True)  # accepting stores the model's mask as the answer
        try:
            self.session.set_state(self.frame, state)
        except ValueError:
            return False  # accepted needs the frame's prediction; corrected, an edited mask
        self.stateChanged.emit(self.frame, ReviewState(state))
        return True

    def request_prompt(self, *, box: tuple[float, float, float, float] | None = None,
                       point: tuple[float, float] | None = None, mode: str = "replace") -> bool:
        """Send the Box tool's prompt on the current frame to :attr:`prompter` (with the shown
        mask, whose region under a click becomes the box); False when nothing can take it."""
        if self.frame is None or self.prompter is None:
            return False
        edits = self.session.get(self.frame)
        region = edits.mask.copy() if edits is not None and point is not None else None
        self.prompter(self.frame, box=box, point=point, mode=mode, region=region)
        return True

    def apply_prompt(self, frame: int, mask: Any, box: tuple[float, float, float, float], mode: str) -> Stroke | None:
        """Merge a prompt's mask into ``frame``'s (``engine.prompting.merge``) as ONE undo step;
        the frame is started from its prediction first when it has no edits yet."""
        from polypviewer.engine.prompting import merge

        edits = self.session.get(frame)
        if edits is None and self.start_frame is not None:
            edits = self.start_frame(frame)
            if edits is not None:
                self.frameStarted.emit(frame)
        if edits is None:
            return None
        stroke = edits.replace(merge(edits.mask, mask, box, mode), f"box ({mode})")
        if stroke is not None:
            self.push(frame, edits, stroke)
            self.refresh(frame, stroke.rect)
        return stroke

    def _pushed(self, edits: FrameEdits, stroke: Stroke | None) -> Stroke | None:
        if stroke is not None:
            self.push(self.frame, edits, stroke)  # type: ignore[arg-type]
            self.refresh(self.frame, stroke.rect)  # type: ignore[arg-type]
        return stroke

    # -- actions ----------------------------------------------------------------------------------
    def create_actions(self, parent: QObject) -> dict[str, QAction]:
        """Actions with the house shortcuts: tools (Esc/B/E/F/P; a tool's key again returns to
        navigate), brush size ([ ]), undo/redo, review states (A/C/X/U), clean-ups (no key:
        menu / panel buttons). The tool actions stay checked as the tool changes."""
        actions: dict[str, QAction] = {}
        group = _ToolGroup(parent)
        for name, key in TOOL_KEYS.items():
            act = QAction(name.capitalize(), parent, checkable=True)
            act.setObjectName(name)
            act.setShortcut(QKeySequence(key))
            act.setChecked(name == self.tool.name)
            act.triggered.connect(lambda _=False, n=name: self.toggle(n))
            group.addAction(act)
            actions[name] = act
        self.toolChanged.connect(group.sync)
        for name, text, key, slot in (("bigger", "Bigger brush", "]", self.bigger),
                                      ("smaller", "Smaller brush", "[", self.smaller)):
            act = QAction(text, parent)
            act.setShortcut(QKeySequence(key))
            act.triggered.connect(slot)
            actions[name] = act
        actions["undo"], actions["redo"] = self.history.create_actions(parent)
        for state, key in REVIEW_KEYS.items():
            act = QAction(f"Mark {state.name.lower()}", parent)
            act.setShortcut(QKeySequence(key))
            act.triggered.connect(lambda _=False, st=state: self.set_state(st))
            actions[f"state_{state.name.lower()}"] = act
        for op, (text, _, _) in CLEANUP_OPS.items():
            act = QAction(text, parent)
            act.triggered.connect(lambda _=False, o=op: self.cleanup(o))
            actions[op] = act
        return actions

