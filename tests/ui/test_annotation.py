"""Annotation in the real main window, offscreen, on frames of the shipped demo clip with
their exact masks (``kvasir5``, tests/ui/conftest.py): paint / erase /
fill with mouse events on the canvas, undo/redo across frame changes, review states and the
timeline, autosaved project reopened exactly, export through the dialog, fine-tune from the
dialog, and a damaged project left untouched. A small real network (U-Net at 64 px, random
weights) keeps inference fast; the rest is the production path."""

from __future__ import annotations

import csv
import json

import cv2
import numpy as np
import pytest
from PySide6.QtCore import QPoint, QPointF, Qt
from PySide6.QtGui import QWheelEvent
from PySide6.QtWidgets import QApplication

from polypviewer.core.edits import ReviewState
from polypviewer.core.metrics import scores

from .conftest import TIMEOUT, _drag, _go, _key, _open, _view, _wait_shown


def test_paint_erase_fill_undo_states_export_reopen(open_window, qtbot, tiny_predictor, kvasir5, tmp_path):
    win = open_window(tiny_predictor)
    win.activateWindow()
    qtbot.waitUntil(lambda: QApplication.activeWindow() is win, timeout=5000)
    c = win.annotation
    _open(qtbot, win, kvasir5)
    n = win.n
    assert c.project is None  # looking creates nothing; the first change does
    assert not list((tmp_path / "projects").glob("*.pvproj.h5"))
    h, w = win.frames.get(0).frame.shape[:2]
    # A threshold that splits this random network's flat map (0.482..0.489), so the model's
    # masks are not trivial. The slider holds 0.01 steps: the second call keeps the exact value.
    thr = float(np.median(win.predictions.cached(0)))
    win.set_threshold(thr)
    win.set_threshold(thr)
    model0 = win.predictions.cached(0) >= win.threshold
    assert 0 < model0.mean() < 1

    # -- paint: B, then a drag with real mouse events; the brush only adds pixels
    _key(qtbot, win, Qt.Key.Key_B)
    assert c.editor.tool.name == "brush" and win.canvas.tool() is c.editor.tool
    c.editor.set_brush_radius(10)
    y = h // 2
    _drag(qtbot, win, [(w * 0.2, y), (w * 0.3, y), (w * 0.4, y)])
    edits = c.session.get(0)
    assert edits is not None and c.project is not None and c.project.path.exists()
    painted = edits.mask.copy()
    assert painted[y, int(w * 0.3)] and painted[y, int(w * 0.2)] and painted[y, int(w * 0.4) - 1]
    assert not (model0 & ~painted).any() and (painted & ~model0).sum() > 0
    np.testing.assert_array_equal(edits.model_mask, model0)
    assert c.session.state(0) == ReviewState.CORRECTED
    # the canvas draws, and the metrics panel scores, the corrected mask
    assert win.current_mask(0) is edits.mask and win.canvas.layers()[0] is edits.mask
    np.testing.assert_array_equal(win.canvas.overlay_codes() & 1, painted)
    gt = win.frames.get(0).gt
    qtbot.waitUntil(lambda: win.metrics_panel.value("dice") == f"{scores(painted, gt)['dice']:.3f}", timeout=5000)
    st = edits.stats()
    assert c.panel.value("changed").startswith(f"{np.count_nonzero(painted != model0)} ")
    assert c.panel.value("model_vs_corrected") == f"{st.dice_model_vs_corrected:.3f}"
    assert c.panel.value("model_vs_gt") == f"{scores(model0, gt)['dice']:.3f}"
    assert c.panel.value("corrected_vs_gt") == win.metrics_panel.value("dice")

    # -- erase (E) a vertical stroke through the painted band
    _key(qtbot, win, Qt.Key.Key_E)
    assert c.editor.tool.name == "eraser"
    x = int(w * 0.3)
    _drag(qtbot, win, [(x, y - 40), (x, y + 40)])
    erased = edits.mask.copy()
    assert not erased[y, x] and not (erased & ~painted).any()

    # -- fill (F) the 4-connected background region around a clear pixel
    _key(qtbot, win, Qt.Key.Key_F)
    ys, xs = np.nonzero(~erased)
    fy, fx = int(ys[len(ys) // 2]), int(xs[len(xs) // 2])
    work = erased.astype(np.uint8)
    cv2.floodFill(work, None, (fx, fy), 1, flags=4)
    qtbot.mouseClick(win.canvas.viewport(), Qt.MouseButton.LeftButton, pos=_view(win, fx + 0.5, fy + 0.5))
    filled = edits.mask.copy()
    np.testing.assert_array_equal(filled, work.astype(bool))

    # -- clean-ups through their keys: grow by the panel's N, then undo it
    c.panel.px.setValue(2)
    _key(qtbot, win, Qt.Key.Key_Delete)  # clear
    assert not edits.mask.any()
    _key(qtbot, win, Qt.Key.Key_R)  # reset to the model's mask
    np.testing.assert_array_equal(edits.mask, model0)
    c.actions["undo"].trigger()
    assert not edits.mask.any()
    c.actions["undo"].trigger()
    np.testing.assert_array_equal(edits.mask, filled)

    # -- undo/redo survive moving to another frame and back (Ctrl+Z / Ctrl+Shift+Z / Ctrl+Y)
    _go(qtbot, win, 1)
    _key(qtbot, win, Qt.Key.Key_B)
    _drag(qtbot, win, [(w * 0.5, h * 0.5), (w * 0.6, h * 0.55)])
    mask1 = c.session.get(1).mask.copy()
    assert c.session.state(1) == ReviewState.CORRECTED
    _go(qtbot, win, 0)
    qtbot.keyClick(win.canvas.viewport(), Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    np.testing.assert_array_equal(edits.mask, erased)  # the fill is undone
    qtbot.keyClick(win.canvas.viewport(), Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    np.testing.assert_array_equal(edits.mask, painted)  # and the erase
    qtbot.keyClick(win.canvas.viewport(), Qt.Key.Key_Y, Qt.KeyboardModifier.ControlModifier)
    np.testing.assert_array_equal(edits.mask, erased)
    qtbot.keyClick(win.canvas.viewport(), Qt.Key.Key_Z,
                   Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier)
    np.testing.assert_array_equal(edits.mask, filled)
    np.testing.assert_array_equal(c.session.get(1).mask, mask1)  # frame 1 untouched by frame 0's undo
    np.testing.assert_array_equal(win.canvas.overlay_codes() & 1, filled)  # the overlay follows undo

    # -- brush size: ] and [ keys, Shift+wheel over the canvas; the outline follows
    _go(qtbot, win, 1)
    r = c.editor.brush_radius
    _key(qtbot, win, Qt.Key.Key_BracketRight)
    assert c.editor.brush_radius > r
    _key(qtbot, win, Qt.Key.Key_BracketLeft)
    assert c.editor.brush_radius == r
    vp = win.canvas.viewport()
    centre = QPointF(vp.width() / 2, vp.height() / 2)
    QApplication.sendEvent(vp, QWheelEvent(centre, vp.mapToGlobal(centre), QPoint(0, 0), QPoint(0, 240),
                                           Qt.MouseButton.NoButton, Qt.KeyboardModifier.ShiftModifier,
                                           Qt.ScrollPhase.NoScrollPhase, False))
    assert c.editor.brush_radius > r + 1
    assert c.editor.cursor.rect().width() == pytest.approx(2 * c.editor.brush_radius + 1)

    # -- polygon (P): three clicks and Enter fill the triangle; K carries frame 0's mask forward
    _key(qtbot, win, Qt.Key.Key_P)
    before = c.session.get(1).mask.copy()
    tri = [(w * 0.1, h * 0.1), (w * 0.3, h * 0.1), (w * 0.1, h * 0.3)]
    for x_, y_ in tri:
        qtbot.mouseClick(win.canvas.viewport(), Qt.MouseButton.LeftButton, pos=_view(win, x_, y_))
    _key(qtbot, win, Qt.Key.Key_Return)
    poly = c.session.get(1).mask
    assert poly[int(h * 0.15), int(w * 0.15)] and not (before & ~poly).any()
    assert c.editor.history.stack(1).text(c.editor.history.stack(1).index() - 1) == "polygon"
    _key(qtbot, win, Qt.Key.Key_K)
    np.testing.assert_array_equal(c.session.get(1).mask, filled)
    c.actions["undo"].trigger()
    c.actions["undo"].trigger()
    np.testing.assert_array_equal(c.session.get(1).mask, mask1)
    # Ctrl+S folds the journal into the project file
    from polypviewer.io import journal as jr

    qtbot.keyClick(win.canvas.viewport(), Qt.Key.Key_S, Qt.KeyboardModifier.ControlModifier)
    assert c.project.journal_path.stat().st_size == jr.HEADER_SIZE

    # -- review states: A accept, X flag, N next unreviewed; markers on the timeline
    _go(qtbot, win, 2)
    _key(qtbot, win, Qt.Key.Key_A)
    assert c.session.state(2) == ReviewState.ACCEPTED
    np.testing.assert_array_equal(c.session.get(2).mask, win.predictions.cached(2) >= win.threshold)
    _go(qtbot, win, 3)
    _key(qtbot, win, Qt.Key.Key_X)
    assert c.session.state(3) == ReviewState.FLAGGED
    _key(qtbot, win, Qt.Key.Key_N)  # the only unreviewed frame left is 4
    _wait_shown(qtbot, win, 4)
    _key(qtbot, win, Qt.Key.Key_N)
    assert win.index == 4 and win.errors[-1] == "no other frame is unreviewed"
    _key(qtbot, win, Qt.Key.Key_U)  # already unreviewed: stays, and nothing is stored for it
    xs_, _ = c.markers.getData()
    assert sorted(xs_.tolist()) == [0.0, 1.0, 2.0, 3.0]
    assert c.panel.value("counts") == "1 accepted, 2 corrected, 1 flagged, 1 unreviewed"

    # -- export (Ctrl+E opens the dialog): accepted + corrected by default, flagged left out
    expected = {c.session.names[f]: c.session.get(f).mask.copy() for f in (0, 1, 2)}
    stats = {c.session.names[f]: c.session.get(f).stats() for f in (0, 1, 2)}
    _key(qtbot, win, Qt.Key.Key_E)  # (back to the eraser; then the export key)
    qtbot.keyClick(win.canvas.viewport(), Qt.Key.Key_E, Qt.KeyboardModifier.ControlModifier)
    dlg = c._dialogs[-1]
    out = tmp_path / "export"
    dlg.out_edit.setText(str(out))
    with qtbot.waitSignal(dlg.exported, timeout=TIMEOUT) as done:
        assert dlg.start()
    report = done.args[0]
    assert report.ok and sorted(report.written) == sorted(expected) and "verified" in dlg.status.text()
    assert dlg.progress.value() == 3
    for name, mask in expected.items():
        back = cv2.imread(str(out / "masks" / f"{name}.png"), cv2.IMREAD_UNCHANGED)
        assert back.ndim == 2 and set(np.unique(back)) <= {0, 255}
        np.testing.assert_array_equal(back > 127, mask)
    with open(out / "stats.csv", newline="") as fh:
        rows = {r["name"] if "name" in r else next(iter(r.values())): r for r in csv.DictReader(fh)}
    for name, st in stats.items():
        assert int(rows[name]["pixels_changed"]) == st.pixels_changed
    # a second export into the same, now non-empty folder is refused, nothing overwritten
    stamp = (out / "masks" / f"{next(iter(expected))}.png").stat().st_mtime_ns
    with qtbot.waitSignal(dlg.export_failed, timeout=TIMEOUT) as failed:
        dlg.start()
    assert str(out) in failed.args[0] and "\n" not in failed.args[0]
    assert (out / "masks" / f"{next(iter(expected))}.png").stat().st_mtime_ns == stamp
    dlg.close()

    # -- close (everything stops) and reopen: masks exact, states kept, undo history fresh
    states = {f: c.session.state(f) for f in range(n)}
    masks = {f: e.mask.copy() for f, e in c.session.frames.items()}
    project_path = c.project.path
    win.close()
    assert win.predictions.thread().isFinished() and win.frames.thread().isFinished()
    assert c.project is None

    win2 = open_window(tiny_predictor)
    c2 = win2.annotation
    _open(qtbot, win2, kvasir5)
    assert c2.project is not None and c2.project.path == project_path
    assert {f: c2.session.state(f) for f in range(n)} == states
    assert sorted(c2.session.frames) == sorted(masks)
    for f, m in masks.items():
        np.testing.assert_array_equal(c2.session.get(f).mask, m)
        assert win2.current_mask(f) is c2.session.get(f).mask
    assert c2.editor.history.stack(0).count() == 0
    np.testing.assert_array_equal(win2.canvas.layers()[0], masks[0])
    xs2, _ = c2.markers.getData()
    assert sorted(xs2.tolist()) == [0.0, 1.0, 2.0, 3.0]
    win2.close()


def test_a_damaged_project_is_reported_and_never_overwritten(open_window, qtbot, tiny_predictor, kvasir5, tmp_path):
    from polypviewer.io.projects import project_candidates

    first = project_candidates(kvasir5)[0]
    first.parent.mkdir(parents=True, exist_ok=True)
    first.write_bytes(b"garbage, not HDF5")
    win = open_window(tiny_predictor)
    c = win.annotation
    _open(qtbot, win, kvasir5)
    assert any(str(first) in e and "HDF5" in e for e in win.errors)
    assert all("\n" not in e for e in win.errors)
    c.set_state(ReviewState.ACCEPTED)  # the work goes to the next free name
    assert c.project is not None and c.project.path == project_candidates(kvasir5)[1]
    assert first.read_bytes() == b"garbage, not HDF5"
    win.close()


def test_no_place_for_the_project_is_one_message_and_editing_goes_on(open_window, qtbot, tiny_predictor, kvasir5,
                                                                    tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the projects folder should be")
    monkeypatch.setenv("POLYPVIEWER_PROJECTS", str(blocker))
    win = open_window(tiny_predictor)
    c = win.annotation
    _open(qtbot, win, kvasir5)
    assert any("edits will not be saved" in e for e in win.errors) and all("\n" not in e for e in win.errors)
    assert c.set_state(ReviewState.ACCEPTED) and c.project is None
    h, w = win.frames.get(0).frame.shape[:2]
    _key(qtbot, win, Qt.Key.Key_B)  # navigate is the default tool: select the brush
    _drag(qtbot, win, [(w * 0.5, h * 0.5), (w * 0.6, h * 0.5)])  # editing goes on in memory
    assert c.session.get(0).mask[h // 2, int(w * 0.55)] and c.session.state(0) == ReviewState.CORRECTED
    assert blocker.read_text().startswith("a file")
    win.close()


@pytest.mark.slow
def test_finetune_dialog_trains_and_offers_the_new_version(open_window, qtbot, tiny_predictor, kvasir5, tmp_path,
                                                            base_ckpt):
    from polypviewer.nets.weights import load_checkpoint, sha256_file

    win = open_window(tiny_predictor)
    c = win.annotation
    _open(qtbot, win, kvasir5)
    for f in (0, 1, 2):
        _go(qtbot, win, f)
        assert c.set_state(ReviewState.ACCEPTED)
    c.editor.select("brush")
    h, w = win.frames.get(2).frame.shape[:2]
    _drag(qtbot, win, [(w * 0.4, h * 0.4), (w * 0.5, h * 0.5)])
    assert c.session.state(2) == ReviewState.CORRECTED
    _go(qtbot, win, 3)
    c.set_state(ReviewState.FLAGGED)
    edited = c.session.get(2).mask.copy()
    before = sha256_file(base_ckpt)
    dlg = c.open_finetune_dialog()
    assert "3 accepted + corrected" in dlg.frames_label.text()
    dlg.base_edit.setText(str(base_ckpt))
    out = tmp_path / "tuned.safetensors"
    dlg.out_edit.setText(str(out))
    dlg.holdout.setValue(0.34)  # 1 of 3 held out
    dlg.epochs.setValue(2)  # 2 training frames = 1 batch per epoch: 2 steps
    dlg.max_steps.setValue(2)
    with qtbot.waitSignal(dlg.finished_run, timeout=120_000) as done:
        assert dlg.start()
    res = done.args[0]
    assert res is not None and res.out == out and out.exists(), dlg.status.text()
    assert sha256_file(base_ckpt) == before
    assert len(res.held_out_names) == 1 and len(res.train_names) == 2
    assert win.frame_name(3) not in res.held_out_names + res.train_names  # flagged left out
    meta = json.loads(load_checkpoint(out).metadata["polypviewer.meta"])
    assert len(dlg._losses) == meta["global_steps"] == 2  # the live loss plot got every step
    # the held-out Dice was plotted after each epoch, and its last point is the final score
    assert len(dlg._held_dice) == 2 and dlg._held_dice[-1] == pytest.approx(res.after["dice"])
    assert f"{res.before['dice']:.3f} → {res.after['dice']:.3f}" in dlg.status.text()
    assert meta["data"]["source"] == str(c.project.path)
    # the new version is offered; the old one stays selectable
    labels = [a.text() for a in c.versions_menu.actions()]
    assert any("base" in t for t in labels) and any(res.sha256[:12] in t for t in labels)
    assert dlg.use_button.isEnabled()
    with qtbot.waitSignal(win.predictions.model_ready, timeout=TIMEOUT):
        dlg.use_new_model()
    assert win.predictions.info["version"] == res.sha256[:12]
    # unedited frames are re-predicted by the new version; edited ones keep their masks
    _go(qtbot, win, 4)
    assert win.predictions.cached(4) is not None
    np.testing.assert_array_equal(c.session.get(2).mask, edited)
    dlg.close()
    win.close()


_KILLED_RUN = """
import os, sys
import numpy as np
from polypviewer.core.edits import ReviewState
from polypviewer.io.sources import open_source
from polypviewer.io.store import Project, SourceRef
root, path = sys.argv[1], sys.argv[2]
with open_source(root) as src:
    ref = SourceRef.from_path(root, kind=src.kind, n_frames=len(src))
    p = Project.create(path, ref)
    e = p.start_frame(1, np.zeros(src.frame(1).shape[:2], bool), model_version="v", name=src.name(1))
    e.begin_stroke(); e.dab(40, 30, 9, True); e.end_stroke()
    p.set_state(2, ReviewState.FLAGGED)
    np.save(path + ".expected.npy", e.mask)
os._exit(0)  # killed: no close(), the journal alone holds the work
"""


def test_a_killed_session_is_recovered_when_its_source_is_opened(open_window, qtbot, tiny_predictor, kvasir5, tmp_path):
    import subprocess
    import sys

    from polypviewer.io.projects import project_candidates

    path = project_candidates(kvasir5)[0]
    subprocess.run([sys.executable, "-c", _KILLED_RUN, str(kvasir5), str(path)], check=True, timeout=120)
    assert path.with_name(path.name + ".journal").stat().st_size > 0
    win = open_window(tiny_predictor)
    c = win.annotation
    _open(qtbot, win, kvasir5)
    assert c.project is not None and c.project.path == path
    assert any("recovered 3 unsaved change(s)" in e for e in win.errors), win.errors
    np.testing.assert_array_equal(c.session.get(1).mask, np.load(str(path) + ".expected.npy"))
    assert c.session.state(1) == ReviewState.CORRECTED and c.session.state(2) == ReviewState.FLAGGED
    assert win.current_mask(1) is c.session.get(1).mask
    win.close()


def _kill_project(c):
    """What SIGKILL leaves of the window's project: the journal as written, no compaction, the
    lock released; the window forgets it (a killed process writes nothing more)."""
    import os

    keeper = c.projects
    project, keeper.project = keeper.project, None
    project._writer._f.close()
    os.close(project._lock_fd)
    keeper.failed = True
    return project.path


def test_a_right_drag_with_the_brush_erases_as_an_undo_step_that_is_saved(open_window, qtbot, tiny_predictor,
                                                                          kvasir5):
    """The right button erases through the left button's path: the canvas shows it, it is one
    undo step, the panel counts it, and it survives a kill and a reopen."""
    win = open_window(tiny_predictor)
    c = win.annotation
    _open(qtbot, win, kvasir5)
    h, w = win.frames.get(0).frame.shape[:2]
    thr = float(np.median(win.predictions.cached(0)))  # non-trivial model masks (see above)
    win.set_threshold(thr)
    win.set_threshold(thr)
    _key(qtbot, win, Qt.Key.Key_B)
    c.editor.set_brush_radius(10)
    y = h // 2
    _drag(qtbot, win, [(w * 0.2, y), (w * 0.3, y), (w * 0.4, y)])  # a frame with edits
    edits = c.session.get(0)
    painted = edits.mask.copy()
    stack = c.editor.history.stack(0)
    assert stack.count() == 1 and painted[y, int(w * 0.3)]
    x = int(w * 0.3)
    _drag(qtbot, win, [(x + 0.5, y - 30), (x + 0.5, y), (x + 0.5, y + 30)], Qt.MouseButton.RightButton)
    erased = edits.mask.copy()
    assert not erased[y, x] and not (erased & ~painted).any() and (painted & ~erased).sum() > 0
    assert stack.count() == 2 and stack.undoText() == "erase"
    np.testing.assert_array_equal(win.canvas.overlay_codes() & 1, erased)  # the canvas shows the project's mask
    changed = int(np.count_nonzero(erased != edits.model_mask))
    qtbot.waitUntil(lambda: c.panel.value("changed").startswith(f"{changed} "), timeout=5000)
    # on a frame never edited, a right drag erases the model's mask (and starts the frame)
    _go(qtbot, win, 1)
    model1 = win.predictions.cached(1) >= win.threshold
    ys, xs = np.nonzero(model1)
    assert ys.size, "the model's mask of frame 1 is empty at this threshold"
    py, px = int(ys[len(ys) // 2]), int(xs[len(xs) // 2])
    _drag(qtbot, win, [(px + 0.5, py + 0.5), (px + 1.5, py + 0.5)], Qt.MouseButton.RightButton)
    e1 = c.session.get(1)
    assert e1 is not None and not e1.mask[py, px] and c.editor.history.stack(1).count() == 1
    assert c.session.state(1) == ReviewState.CORRECTED
    np.testing.assert_array_equal(win.canvas.overlay_codes() & 1, e1.mask)
    mask1 = e1.mask.copy()
    path = _kill_project(c)
    win.close()
    win2 = open_window(tiny_predictor)
    _open(qtbot, win2, kvasir5)
    c2 = win2.annotation
    assert c2.project is not None and c2.project.path == path
    np.testing.assert_array_equal(c2.session.get(0).mask, erased)
    np.testing.assert_array_equal(c2.session.get(1).mask, mask1)
    win2.close()


def test_navigate_is_the_default_and_the_state_follows_the_content(open_window, qtbot, tiny_predictor, kvasir5):
    """A stray click in navigate edits nothing; a dab undone (or a reset to the model) leaves the
    frame in its earlier state, so it is not exported and N still finds it."""
    win = open_window(tiny_predictor)
    c = win.annotation
    _open(qtbot, win, kvasir5)
    h, w = win.frames.get(0).frame.shape[:2]
    assert c.editor.tool.name == "navigate" and win.canvas.tool() is None
    assert c.actions["navigate"].isChecked()
    qtbot.mouseClick(win.canvas.viewport(), Qt.MouseButton.LeftButton, pos=_view(win, w * 0.5, h * 0.5))
    _drag(qtbot, win, [(w * 0.3, h * 0.3), (w * 0.5, h * 0.5)])
    _drag(qtbot, win, [(w * 0.3, h * 0.3), (w * 0.5, h * 0.5)], Qt.MouseButton.RightButton)
    assert c.session.get(0) is None and c.project is None and c.session.state(0) == ReviewState.UNREVIEWED
    # a tool's key toggles it; Esc returns to navigate
    _key(qtbot, win, Qt.Key.Key_B)
    assert c.editor.tool.name == "brush" and win.canvas.tool() is c.editor.tool
    _key(qtbot, win, Qt.Key.Key_B)
    assert c.editor.tool.name == "navigate" and win.canvas.tool() is None and c.actions["navigate"].isChecked()
    _key(qtbot, win, Qt.Key.Key_F)
    _key(qtbot, win, Qt.Key.Key_Escape)
    assert c.editor.tool.name == "navigate" and c.panel.value("tool") == "navigate"
    # one dab with the brush, undone: the frame is unreviewed again, everywhere
    _key(qtbot, win, Qt.Key.Key_B)
    qtbot.mouseClick(win.canvas.viewport(), Qt.MouseButton.LeftButton, pos=_view(win, w * 0.5, h * 0.5))
    assert c.session.state(0) == ReviewState.CORRECTED
    qtbot.waitUntil(lambda: c.panel.value("state") == "corrected", timeout=5000)
    qtbot.keyClick(win.canvas.viewport(), Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert c.session.state(0) == ReviewState.UNREVIEWED
    assert c.frames_in((ReviewState.ACCEPTED, ReviewState.CORRECTED)) == []  # nothing to export
    qtbot.waitUntil(lambda: c.panel.value("state") == "unreviewed"
                    and c.panel.value("counts").endswith(f"0 corrected, 0 flagged, {win.n} unreviewed"), timeout=5000)
    assert c.markers.getData()[0].tolist() == []
    # C on a frame whose mask is the model's is refused, with the reason
    _key(qtbot, win, Qt.Key.Key_C)
    assert c.session.state(0) == ReviewState.UNREVIEWED and "nothing is corrected" in win.errors[-1]
    # accepted, edited, reset to the model (R): accepted again
    _go(qtbot, win, 1)
    _key(qtbot, win, Qt.Key.Key_A)
    _drag(qtbot, win, [(w * 0.2, h * 0.2), (w * 0.4, h * 0.3)])
    assert c.session.state(1) == ReviewState.CORRECTED
    _key(qtbot, win, Qt.Key.Key_R)
    assert c.session.state(1) == ReviewState.ACCEPTED
    qtbot.waitUntil(lambda: c.panel.value("state") == "accepted", timeout=5000)
    # N from the last frame wraps round to frame 0: it is not skipped as "corrected"
    _go(qtbot, win, win.n - 1)
    _key(qtbot, win, Qt.Key.Key_N)
    _wait_shown(qtbot, win, 0)
    # the states went to the journal with the changes: a kill and reopen keeps them
    states = {f: c.session.state(f) for f in range(win.n)}
    _kill_project(c)
    win.close()
    win2 = open_window(tiny_predictor)
    _key(qtbot, win2, Qt.Key.Key_B)  # a new source starts in navigate whatever the tool was
    _open(qtbot, win2, kvasir5)
    c2 = win2.annotation
    assert {f: c2.session.state(f) for f in range(win2.n)} == states
    assert c2.editor.tool.name == "navigate" and win2.canvas.tool() is None
    win2.close()
