"""Export and fine-tune dialogs: the choices they offer, cancel, and closing the window while a
fine-tune runs (the worker thread stops, nothing half-written is left). Frames of the shipped
demo clip, a small real network; see test_annotation.py for the end-to-end runs."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PySide6.QtCore import Qt

from polypviewer.core.edits import ReviewState

from .conftest import TIMEOUT, _drag, _go, _open  # kvasir5, base_ckpt, tiny_predictor: fixtures there


def _review(qtbot, win, states):
    c = win.annotation
    for f, st in states.items():
        _go(qtbot, win, f)
        if st == ReviewState.CORRECTED:
            h, w = win.frames.get(f).frame.shape[:2]
            c.editor.select("brush")  # navigate is the default tool: clicks there never edit
            _drag(qtbot, win, [(w * 0.3, h * 0.3), (w * 0.4, h * 0.35)])
        else:
            assert c.set_state(st) or st == ReviewState.UNREVIEWED
        assert c.session.state(f) == st


def test_export_all_frames_option_and_jpeg_masks(open_window, qtbot, tiny_predictor, kvasir5, tmp_path):
    win = open_window(tiny_predictor)
    c = win.annotation
    _open(qtbot, win, kvasir5)
    # frame 1: edited then flagged (unusable); frame 2 accepted; frame 3 only looked at
    _review(qtbot, win, {1: ReviewState.CORRECTED, 2: ReviewState.ACCEPTED})
    _go(qtbot, win, 1)
    c.set_state(ReviewState.FLAGGED)
    assert c.session.state(1) == ReviewState.FLAGGED
    dlg = c.open_export_dialog()
    assert "(1)" in dlg.reviewed.text() and "(2)" in dlg.all_frames.text()
    dlg.all_frames.setChecked(True)
    dlg.mask_format.setCurrentText("jpg")
    dlg.out_edit.setText(str(tmp_path / "all"))
    with qtbot.waitSignal(dlg.exported, timeout=TIMEOUT) as done:
        assert dlg.start()
    report = done.args[0]
    names = {c.session.names[f]: f for f in (1, 2)}
    assert sorted(report.written) == sorted(names) and report.verify is not None and report.verify.ok
    for name, f in names.items():
        back = cv2.imread(str(tmp_path / "all" / "masks" / f"{name}.jpg"), cv2.IMREAD_GRAYSCALE) > 127
        # JPEG is lossy: what the exporter reports as flipped is all that may differ
        assert np.count_nonzero(back != c.session.get(f).mask) <= report.jpeg_changed_pixels
    assert "flagged" in (tmp_path / "all" / "stats.csv").read_text()
    # nothing in the chosen states: a message, no worker
    dlg.reviewed.setChecked(True)
    _go(qtbot, win, 2)
    c.set_state(ReviewState.UNREVIEWED)
    assert not dlg.start() and "Nothing to export" in dlg.status.text() and not dlg.busy()
    dlg.close()
    win.close()


@pytest.fixture
def reviewed_window(open_window, qtbot, tiny_predictor, kvasir5):
    win = open_window(tiny_predictor)
    _open(qtbot, win, kvasir5)
    _review(qtbot, win, {0: ReviewState.ACCEPTED, 1: ReviewState.ACCEPTED, 2: ReviewState.CORRECTED})
    return win


def _long_run(dlg, base, out):
    dlg.base_edit.setText(str(base))
    dlg.out_edit.setText(str(out))
    dlg.holdout.setValue(0.34)
    dlg.epochs.setValue(500)


@pytest.mark.slow
def test_finetune_cancel_writes_nothing(qtbot, reviewed_window, base_ckpt, tmp_path):
    win = reviewed_window
    dlg = win.annotation.open_finetune_dialog()
    out = tmp_path / "never.safetensors"
    _long_run(dlg, base_ckpt, out)
    with qtbot.waitSignal(dlg.finished_run, timeout=120_000) as done:
        assert dlg.start()
        qtbot.waitUntil(lambda: len(dlg._losses) >= 1, timeout=120_000)
        assert dlg.busy() and dlg.cancel_button.text() == "Cancel"
        qtbot.mouseClick(dlg.cancel_button, Qt.MouseButton.LeftButton)
    assert done.args[0] is None and "nothing was written" in dlg.status.text()
    assert not out.exists() and not list(tmp_path.glob("never*")) and not dlg.busy()
    assert not dlg.use_button.isEnabled()
    # too few frames: a message instead of a run
    win.annotation.session.set_state(1, ReviewState.UNREVIEWED)
    win.annotation.session.set_state(2, ReviewState.FLAGGED)
    assert not dlg.start() and "at least 2" in dlg.status.text()
    dlg.close()
    win.close()


@pytest.mark.slow
def test_closing_the_window_stops_a_running_finetune(qtbot, reviewed_window, base_ckpt, tmp_path):
    win = reviewed_window
    dlg = win.annotation.open_finetune_dialog()
    out = tmp_path / "never.safetensors"
    _long_run(dlg, base_ckpt, out)
    assert dlg.start()
    qtbot.waitUntil(lambda: len(dlg._losses) >= 1, timeout=120_000)
    thread = dlg._thread
    project = win.annotation.project.path
    win.close()  # waits for the worker to stop after its current step
    assert thread.isFinished() and win.predictions.thread().isFinished()
    assert not out.exists() and project.exists()
