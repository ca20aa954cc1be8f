"""Qt tool layer: QUndoCommands over the edit model (bare stacks), tools, brush size, actions."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import QEvent, QPointF, Qt
from PySide6.QtGui import QMouseEvent, QUndoStack
from PySide6.QtWidgets import QWidget

from polypviewer.core.edits import EditSession, FrameEdits, ReviewState
from polypviewer.io.store import Project, SourceRef
from polypviewer.ui.tools import EditCommand, Editor


def _right_click() -> QMouseEvent:
    return QMouseEvent(QEvent.Type.MouseButtonPress, QPointF(0, 0), QPointF(0, 0), Qt.MouseButton.RightButton,
                       Qt.MouseButton.RightButton, Qt.KeyboardModifier.NoModifier)


@pytest.fixture
def editor(qapp):
    session = EditSession()
    session.start(0, np.zeros((60, 80), bool))
    model = np.zeros((60, 80), bool)
    model[20:40, 20:40] = True
    session.start(1, model)
    ed = Editor(session, brush_radius=3)
    ed.set_frame(0)
    refreshed: list = []
    ed.maskChanged.connect(lambda f, r: refreshed.append((f, r)))
    ed.refreshed = refreshed  # type: ignore[attr-defined]
    return ed


def test_command_on_a_bare_stack_does_not_reapply_on_push_and_undoes_exactly(qapp):
    edits = FrameEdits(np.zeros((20, 20), bool))
    edits.begin_stroke()
    edits.dab(10, 10, 3, True)
    stroke = edits.end_stroke()
    painted = edits.mask.copy()
    calls: list = []
    stack = QUndoStack()
    stack.push(EditCommand(7, edits, stroke, lambda f, r: calls.append((f, r)), applied=True))
    assert calls == [] and np.array_equal(edits.mask, painted)  # push did not paint twice
    stack.undo()
    assert not edits.mask.any() and calls == [(7, stroke.rect)]
    stack.redo()
    assert np.array_equal(edits.mask, painted) and len(calls) == 2
    # applied=False: the push itself applies the stroke
    edits2 = FrameEdits(np.zeros((20, 20), bool))
    stack.push(EditCommand(7, edits2, stroke, None, applied=False))
    assert np.array_equal(edits2.mask, painted)
    assert stack.undoText() == "brush"


def test_a_drag_is_one_undo_step_painted_live_with_dirty_rects(editor):
    brush = editor.select("brush")
    brush.press(10.5, 10.5)
    assert editor.session.mask(0)[10, 10]  # painted on press, before release
    for x in range(12, 50, 3):
        brush.move(x + 0.5, 10.5)
    brush.release(50.5, 10.5)
    stack = editor.history.stack(0)
    assert stack.count() == 1
    assert editor.session.mask(0)[10, 10:51].all()
    frames, rects = zip(*editor.refreshed, strict=True)
    assert set(frames) == {0} and all(r[2] - r[0] <= 8 and r[3] - r[1] == 7 for r in rects if r)
    stack.undo()
    assert not editor.session.mask(0).any()


def test_right_button_inverts_and_eraser_erases(editor):
    editor.set_frame(1)
    editor.select("brush").press(30.5, 30.5, _right_click())
    editor.tool.release(30.5, 30.5)
    assert not editor.session.mask(1)[30, 30]
    editor.select("eraser").press(21.5, 21.5)
    editor.tool.release(21.5, 21.5)
    assert not editor.session.mask(1)[21, 21] and editor.session.mask(1)[38, 38]
    assert editor.history.stack(1).count() == 2 and editor.history.stack(0).count() == 0


def test_undo_survives_moving_to_other_frames_and_back(editor):
    editor.select("brush")
    editor.tool.press(5.5, 5.5)
    editor.tool.release(5.5, 5.5)
    editor.set_frame(1)
    editor.cleanup("clear")
    editor.set_frame(0)
    editor.history.group.undo()  # the active stack is frame 0's
    assert not editor.session.mask(0).any() and not editor.session.mask(1).any()
    editor.set_frame(1)
    editor.history.group.undo()
    assert editor.session.mask(1)[20:40, 20:40].all()
    editor.history.group.redo()
    assert not editor.session.mask(1).any()


def test_changing_frame_mid_stroke_drops_the_unfinished_stroke(editor):
    editor.select("brush").press(30.5, 30.5)
    editor.tool.move(40.5, 30.5)
    editor.set_frame(1)
    assert not editor.session.mask(0).any() and editor.history.stack(0).count() == 0


def test_fill_and_polygon_tools(editor):
    editor.set_frame(1)
    editor.select("fill").press(30.5, 30.5, _right_click())  # clear the square
    assert not editor.session.mask(1).any()
    editor.history.stack(1).undo()
    editor.tool.press(2.5, 2.5)  # fill the background: everything set
    assert editor.session.mask(1).all()
    editor.history.stack(1).undo()

    editor.set_frame(0)
    poly = editor.select("polygon")
    for x, y in ((10, 10), (30, 10), (30, 30), (10, 30)):
        poly.press(x + 0.5, y + 0.5)
        poly.release(x + 0.5, y + 0.5)
    assert not editor.session.mask(0).any() and not editor.preview.path().isEmpty()
    poly.press(12.5, 11.5)  # near the first vertex: closes
    m = editor.session.mask(0)
    assert m[10:31, 10:31].all() and m.sum() == 21 * 21 and editor.preview.path().isEmpty()
    # lasso: one drag
    poly.press(50.5, 40.5)
    for x, y in ((60, 40), (60, 50), (50, 50)):
        poly.move(x + 0.5, y + 0.5)
    poly.release(50.5, 50.5)
    assert editor.session.mask(0)[45, 55] and editor.history.stack(0).count() == 2
    poly.press(1.5, 1.5)
    poly.cancel()
    assert poly.finish() is None


def test_brush_size_keys_wheel_and_cursor_outline(editor):
    editor.select("brush")
    editor.set_brush_radius(10)
    editor.bigger()
    assert editor.brush_radius == 12
    editor.smaller()
    assert editor.brush_radius == 10
    assert editor.tool.wheel(2.0) is True and editor.brush_radius > 12
    editor.set_brush_radius(0)
    assert editor.brush_radius == 1
    editor.set_brush_radius(5)
    editor.tool.hover(20.2, 30.9)
    r = editor.cursor.rect()
    assert (r.center().x(), r.center().y(), r.width()) == (20.5, 30.5, 11.0)
    assert editor.cursor.isVisible()
    editor.select("fill")
    assert not editor.cursor.isVisible() and editor.tool.wheel(1.0) is False


def test_cleanups_and_carry_forward_are_undoable(editor):
    editor.set_frame(0)
    assert editor.carry_forward(1) is not None
    assert np.array_equal(editor.session.mask(0), editor.session.mask(1))
    editor.cleanup("grow", 2)
    assert editor.session.mask(0).sum() > 400
    editor.cleanup("shrink", 2)
    assert editor.session.mask(0).sum() == 400
    assert editor.cleanup("fill_holes") is None  # nothing to fill: no undo step
    assert editor.history.stack(0).count() == 3
    for _ in range(3):
        editor.history.stack(0).undo()
    assert not editor.session.mask(0).any()


def test_actions_have_the_house_shortcuts_and_work(editor):
    parent = QWidget()
    actions = editor.create_actions(parent)
    keys = {name: [s.toString() for s in a.shortcuts()] for name, a in actions.items()}
    assert keys["navigate"] == ["Esc"] and keys["brush"] == ["B"] and keys["eraser"] == ["E"]
    assert keys["fill"] == ["F"] and keys["polygon"] == ["P"]
    assert keys["undo"] == ["Ctrl+Z"] and keys["redo"] == ["Ctrl+Shift+Z", "Ctrl+Y"]
    assert keys["bigger"] == ["]"] and keys["smaller"] == ["["]
    actions["eraser"].trigger()
    assert editor.tool.name == "eraser"
    editor.set_frame(1)
    actions["clear"].trigger()
    assert not editor.session.mask(1).any()
    actions["undo"].trigger()
    assert editor.session.mask(1).any()
    assert [a.shortcut().toString() for n, a in actions.items() if n.startswith("state_")] == ["A", "C", "X", "U"]
    actions["state_flagged"].trigger()
    assert editor.session.state(1) == ReviewState.FLAGGED
    editor.set_frame(5)  # never started: no mask to accept
    assert editor.set_state(ReviewState.ACCEPTED) is False and editor.set_state(ReviewState.FLAGGED) is True


def test_edits_through_the_editor_reach_the_project_journal(qapp, tmp_path):
    src = tmp_path / "clip.bin"
    src.write_bytes(b"frames" * 1000)
    project = Project.create(tmp_path / "p.h5", SourceRef.from_path(src))
    project.start_frame(2, np.zeros((40, 40), bool))
    ed = Editor(project.session, brush_radius=2)
    ed.set_frame(2)
    ed.select("brush").press(10.5, 10.5)
    ed.tool.move(30.5, 10.5)
    ed.tool.release(30.5, 10.5)
    ed.cleanup("grow", 1)
    ed.history.stack(2).undo()  # the undo must be persisted too
    want = project.session.mask(2).copy()
    assert project.session.state(2) == ReviewState.CORRECTED
    # what SIGKILL would leave: no close(), no compaction
    project._writer._f.close()
    import os
    os.close(project._lock_fd)
    with Project.open(tmp_path / "p.h5") as reopened:
        assert reopened.recovery.recovered
        assert np.array_equal(reopened.masks()[2], want)


def test_tools_drive_the_real_canvas_with_mouse_events(qtbot):
    """The canvas handler protocol end to end: mouse on the viewport -> tool -> mask -> overlay."""
    from PySide6.QtCore import QPoint
    from PySide6.QtTest import QTest

    from polypviewer.ui.canvas import Canvas

    session = EditSession()
    edits = session.start(0, np.zeros((60, 80), bool))
    ed = Editor(session, brush_radius=2)
    ed.set_frame(0)
    canvas = Canvas()
    qtbot.addWidget(canvas)
    canvas.resize(200, 150)
    canvas.show()
    canvas.set_frame(np.zeros((60, 80, 3), np.uint8))
    canvas.set_layers(edits.mask, None)
    canvas.actual_size()
    canvas.scene().addItem(ed.cursor)
    ed.maskChanged.connect(lambda f, r: canvas.refresh_overlay(r))
    canvas.set_tool(ed.select("brush"))

    def view_point(x: float, y: float) -> QPoint:
        return canvas.mapFromScene(QPointF(x, y))

    vp = canvas.viewport()
    QTest.mousePress(vp, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, view_point(10.5, 20.5))
    for x in range(12, 41, 2):
        QTest.mouseMove(vp, view_point(x + 0.5, 20.5))
    QTest.mouseRelease(vp, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, view_point(40.5, 20.5))
    assert edits.mask[20, 10:41].all() and not edits.mask[30].any()
    assert ed.history.stack(0).count() == 1
    codes = canvas.overlay_codes()
    assert codes is not None and np.array_equal(codes.astype(bool), edits.mask)  # overlay redrawn
    ed.history.stack(0).undo()
    assert not edits.mask.any() and not canvas.overlay_codes().any()


def test_frames_are_started_from_the_prediction_on_first_touch_only(qapp):
    session = EditSession()
    predictions = {3: np.eye(30, dtype=bool)}
    ed = Editor(session, brush_radius=1,
                start_frame=lambda f: session.start(f, predictions[f], model_version="m1")
                if f in predictions else None)
    started: list[int] = []
    ed.frameStarted.connect(started.append)
    ed.set_frame(3)
    ed.tool.hover(5.5, 5.5)
    assert session.get(3) is None  # looking is not editing
    ed.select("brush").press(20.5, 5.5)
    ed.tool.release(20.5, 5.5)
    assert started == [3] and session.get(3).model_version == "m1"
    assert session.mask(3)[5, 20] and session.mask(3)[10, 10]  # edited on top of the prediction
    ed.set_frame(4)  # no prediction yet: tools do nothing, accepting is refused
    ed.tool.press(1.5, 1.5)
    assert session.get(4) is None and ed.set_state(ReviewState.ACCEPTED) is False
    predictions[4] = np.zeros((30, 30), bool)
    assert ed.set_state(ReviewState.ACCEPTED) is True and started == [3, 4]
    assert session.state(4) == ReviewState.ACCEPTED and not session.mask(4).any()


def _canvas_with(qtbot, ed, edits, size=(60, 80)):
    from polypviewer.ui.canvas import Canvas

    canvas = Canvas()
    qtbot.addWidget(canvas)
    canvas.resize(200, 150)
    canvas.show()
    canvas.set_frame(np.zeros((*size, 3), np.uint8))
    canvas.set_layers(edits.mask if edits is not None else None, None)
    canvas.actual_size()
    canvas.scene().addItem(ed.cursor)
    ed.maskChanged.connect(lambda f, r: canvas.refresh_overlay(r))
    ed.toolChanged.connect(lambda name: canvas.set_tool(ed.canvas_handler()))
    canvas.set_tool(ed.canvas_handler())
    return canvas


def _mouse_drag(canvas, pts, button):
    from PySide6.QtTest import QTest

    vp = canvas.viewport()
    at = [canvas.mapFromScene(QPointF(x, y)) for x, y in pts]
    QTest.mousePress(vp, button, Qt.KeyboardModifier.NoModifier, at[0])
    for p in at[1:]:
        QTest.mouseMove(vp, p)
    QTest.mouseRelease(vp, button, Qt.KeyboardModifier.NoModifier, at[-1])


def test_a_right_drag_on_the_canvas_erases_through_the_same_undo_and_journal_path(qtbot, tmp_path):
    """The right button with the brush erases: one undo step, journaled (survives a kill), and
    the overlay shows exactly the mask the project holds."""
    import os

    src = tmp_path / "clip.bin"
    src.write_bytes(b"frames" * 1000)
    project = Project.create(tmp_path / "p.h5", SourceRef.from_path(src))
    model = np.zeros((60, 80), bool)
    model[10:50, 10:70] = True
    edits = project.start_frame(0, model)
    ed = Editor(project.session, brush_radius=2)
    ed.set_frame(0)
    canvas = _canvas_with(qtbot, ed, edits)
    ed.select("brush")
    _mouse_drag(canvas, [(20.5, 30.5)] + [(x + 0.5, 30.5) for x in range(22, 41, 2)], Qt.MouseButton.RightButton)
    assert not edits.mask[30, 20:41].any() and edits.mask[20, 20:41].all()  # erased along the drag only
    assert ed.history.stack(0).count() == 1 and ed.history.stack(0).undoText() == "erase"
    assert np.array_equal(canvas.overlay_codes().astype(bool), edits.mask)  # canvas == project
    assert project.session.state(0) == ReviewState.CORRECTED
    want = edits.mask.copy()
    ed.history.stack(0).undo()
    assert np.array_equal(edits.mask, model) and np.array_equal(canvas.overlay_codes().astype(bool), model)
    ed.history.stack(0).redo()
    assert np.array_equal(edits.mask, want) and np.array_equal(canvas.overlay_codes().astype(bool), want)
    project._writer._f.close()
    os.close(project._lock_fd)
    with Project.open(tmp_path / "p.h5") as reopened:
        assert np.array_equal(reopened.masks()[0], want)
        assert reopened.states()[0] == ReviewState.CORRECTED


def test_navigate_is_the_default_and_its_clicks_and_drags_never_edit(qtbot):
    session = EditSession()
    starts: list[int] = []

    def start(f):
        starts.append(f)
        return session.start(f, np.zeros((60, 80), bool))

    ed = Editor(session, brush_radius=2, start_frame=start)
    ed.set_frame(0)
    assert ed.tool.name == "navigate" and ed.canvas_handler() is None and not ed.cursor.isVisible()
    canvas = _canvas_with(qtbot, ed, None)
    canvas.zoom_by(4.0)  # scrollable, so a drag visibly pans
    hs = canvas.horizontalScrollBar()
    before = hs.value()
    for button in (Qt.MouseButton.LeftButton, Qt.MouseButton.RightButton):
        _mouse_drag(canvas, [(40.5, 30.5), (35.5, 30.5), (30.5, 30.5)], button)
        _mouse_drag(canvas, [(40.5, 30.5)], button)  # a click
    assert starts == [] and session.get(0) is None and ed.history.stack(0).count() == 0
    assert hs.value() != before  # the left drag panned
    assert session.state(0) == ReviewState.UNREVIEWED


def test_tool_keys_toggle_back_to_navigate_and_esc_returns_to_it(editor):
    parent = QWidget()
    actions = editor.create_actions(parent)
    assert actions["navigate"].shortcut().toString() == "Esc" and actions["navigate"].isChecked()
    actions["brush"].trigger()
    assert editor.tool.name == "brush" and actions["brush"].isChecked()
    actions["brush"].trigger()  # B again: back to navigate
    assert editor.tool.name == "navigate" and actions["navigate"].isChecked() and not actions["brush"].isChecked()
    actions["polygon"].trigger()
    editor.tool.press(10.5, 10.5)
    actions["navigate"].trigger()  # Esc: navigate, the unfinished polygon dropped
    assert editor.tool.name == "navigate" and editor.preview.path().isEmpty()
    actions["navigate"].trigger()  # Esc in navigate stays in navigate
    assert editor.tool.name == "navigate" and actions["navigate"].isChecked()
    editor.select("fill")  # a programmatic change checks its action too
    assert actions["fill"].isChecked() and not actions["navigate"].isChecked()
    editor.tool.press(5.5, 5.5)
    assert editor.session.state(0) == ReviewState.CORRECTED
    editor.history.stack(0).undo()  # back to the model's mask: no longer corrected
    assert editor.session.state(0) == ReviewState.UNREVIEWED
