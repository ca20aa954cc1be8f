"""Propagate in the window (issue 13 §2), offscreen: from a corrected frame forward to the frame
before the next reviewed one, in the background; each frame PROPAGATED, one undo step, its drift
on the timeline; the worst-drift jump; accept; a refused start; a cancelled run.

The network inside the propagation worker is a stand-in that sees the synthetic disc (bright
pixels), so the test checks the window's path (thread, session, undo, timeline) on masks whose
truth is known; engine.propagation itself is tested on real frames in tests/engine.
"""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest
from PySide6.QtWidgets import QApplication

from polypviewer.core.edits import ReviewState
from polypviewer.engine.propagation import mask_dice
from polypviewer.ui import propagation as ui_prop
from polypviewer.ui.prompting import PromptWorker
from tests.engine.test_propagation import disc_clip

TIMEOUT = 60_000


class DiscNet:
    """Probability 0.4 on bright pixels (the disc), 0.05 elsewhere, ``delay`` s a frame: the
    network's own mask (p >= 0.5) is empty, the propagation's hysteresis keeps the disc."""

    threshold = 0.5

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay

    def predict(self, frames):
        time.sleep(self.delay)
        return [np.where(f[..., 0] > 100, 0.4, 0.05).astype(np.float32) for f in frames]


@pytest.fixture
def window(open_window, tiny_predictor, qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("POLYPVIEWER_CONFIG", str(tmp_path / "config"))
    monkeypatch.setenv("POLYPVIEWER_PROJECTS", str(tmp_path / "projects"))
    net = DiscNet()
    monkeypatch.setattr(ui_prop.PropagationWorker, "_predictor_for", lambda self, req: net)
    # The window's path on masks whose truth is known: no LiteMedSAM refinement here (the real
    # test below runs it).
    monkeypatch.setattr(PromptWorker, "frame_prompt", lambda self: None)
    frames, masks = disc_clip()
    folder = tmp_path / "clip"
    folder.mkdir()
    for k, f in enumerate(frames):
        cv2.imwrite(str(folder / f"f{k:02d}.png"), f[..., ::-1])
    win = open_window(tiny_predictor, TIMEOUT)
    win.activateWindow()
    qtbot.waitUntil(lambda: QApplication.activeWindow() is win, timeout=5000)
    with qtbot.waitSignal(win.source_opened, timeout=TIMEOUT):
        win.open_path(folder)
    _wait_shown(qtbot, win, 0)
    yield win, masks, net
    win.shutdown()


def _wait_shown(qtbot, win, index):
    qtbot.waitUntil(lambda: win.index == index and win.predictions.cached(index) is not None
                    and win.annotation.editor.frame == index, timeout=TIMEOUT)


def _go(qtbot, win, index):
    win.go_to(index)
    _wait_shown(qtbot, win, index)


def _correct_to(win, mask):
    ed = win.annotation.editor
    edits = ed.edits(create=True)
    ed._pushed(edits, edits.replace(mask, "test"))
    assert win.annotation.session.state(win.index) == ReviewState.CORRECTED


def test_propagate_forward_undo_accept_worst_drift_and_cancel(window, qtbot):
    win, masks, net = window
    ctl = win.annotation
    prop = ctl.propagation
    s = ctl.session
    messages = []
    ctl.message.connect(messages.append)

    assert not prop.propagate()  # frame 0 is unreviewed: refused with a message
    assert "not accepted or corrected" in messages[-1]

    _correct_to(win, masks[0])
    s.set_state(6, ReviewState.FLAGGED)  # the next reviewed frame: propagation stops before it
    ctl.actions["propagate_forward"].trigger()
    assert prop.running is not None
    qtbot.waitUntil(lambda: prop.running is None, timeout=TIMEOUT)
    assert prop.last_stop == "end" and prop.done_frames == [1, 2, 3, 4, 5]
    for f in range(1, 6):
        assert s.state(f) == ReviewState.PROPAGATED
        assert mask_dice(s.mask(f), masks[f]) > 0.9
    assert s.state(6) == ReviewState.FLAGGED and s.state(7) == ReviewState.UNREVIEWED
    xs, ys = prop.curve.getData()
    assert list(xs) == [1, 2, 3, 4, 5] and all(0 <= y <= 1 for y in ys)
    assert sum(1 for b in ctl.markers.data["brush"]
               if b.color().getRgb()[:3] == (90, 170, 255)) == 5  # PROPAGATED markers on the timeline

    # one undo step per frame: undo frame 3's propagation, redo it
    _go(qtbot, win, 3)
    before = s.mask(3).copy()
    ctl.actions["undo"].trigger()
    assert s.state(3) == ReviewState.UNREVIEWED and not s.mask(3).any()  # back to the network's (empty) mask
    ctl.actions["redo"].trigger()
    assert s.state(3) == ReviewState.PROPAGATED and np.array_equal(s.mask(3), before)

    # accepting a propagated frame takes it out of the drift list; worst drift jumps to the max
    _go(qtbot, win, 2)
    ctl.actions["state_accepted"].trigger()
    assert s.state(2) == ReviewState.ACCEPTED and 2 not in prop.propagated_drift()
    prop.drift[4] = 0.99  # make frame 4 the worst of those still propagated
    ctl.actions["worst_drift"].trigger()
    _wait_shown(qtbot, win, 4)

    # a slow run cancelled at once stops early and says so
    net.delay = 0.3
    _go(qtbot, win, 11)
    _correct_to(win, masks[11])
    assert prop.propagate(backward=True)
    ctl.actions["stop_propagation"].trigger()
    qtbot.waitUntil(lambda: prop.running is None, timeout=TIMEOUT)
    assert prop.last_stop == "cancelled" and len(prop.done_frames) <= 1
    assert s.state(7) in (ReviewState.UNREVIEWED, ReviewState.PROPAGATED)


def test_real_model_on_a_cvc_sequence_video(shared_data, tmp_path, monkeypatch):
    """The app as shipped (default model and engine) on 12 frames of CVC-ClinicDB sequence 2 as
    a video with ground truth: propagate the first expert mask forward; the worker's own
    predictor runs beside the window's, and LiteMedSAM (the Box tool's, shared) refines each
    region, without crashing; every frame ends PROPAGATED with a drift in [0, 1], and the masks
    follow the polyp (Dice > 0.7 against the expert masks)."""
    from polypviewer.io.sources import open_source
    from polypviewer.nets.litemedsam import weights_path
    from polypviewer.ui.main_window import MainWindow
    from tests.io.test_cvc_video import build_sequence_video

    root = shared_data / "cvc-clinicdb-612"
    if not (root / "sequences.json").is_file():
        pytest.skip(f"{root}/sequences.json not found")
    monkeypatch.setenv("POLYPVIEWER_CONFIG", str(tmp_path / "config"))
    monkeypatch.setenv("POLYPVIEWER_PROJECTS", str(tmp_path / "projects"))
    video, ids = build_sequence_video(root, 2, tmp_path, 12)
    app = QApplication.instance()
    win = MainWindow()
    win.show()

    def spin(cond, seconds=240):
        t0 = time.time()
        while not cond() and time.time() - t0 < seconds:
            app.processEvents()
            time.sleep(0.02)
        return cond()

    try:
        assert spin(lambda: win.model_info() is not None)
        win.open_path(video)
        ctl = win.annotation
        assert spin(lambda: ctl.source_info is not None and win.predictions.cached(0) is not None
                    and ctl.editor.frame == 0)
        with open_source(video) as src:
            gts = [src.mask(k) for k in range(len(ids))]
        _correct_to(win, gts[0])
        assert ctl.propagation.propagate()
        assert spin(lambda: ctl.propagation.running is None)
        prop = ctl.propagation
        if weights_path() is not None:
            assert prop.worker.refined_by == "the model and LiteMedSAM"
        assert prop.last_stop == "end" and prop.done_frames == list(range(1, len(ids)))
        assert all(ctl.session.state(f) == ReviewState.PROPAGATED for f in prop.done_frames)
        assert all(0.0 <= prop.drift[f] <= 1.0 for f in prop.done_frames)
        dice = np.mean([mask_dice(ctl.session.mask(f), gts[f]) for f in prop.done_frames])
        assert dice > 0.7, dice
    finally:
        win.shutdown()
