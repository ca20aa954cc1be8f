"""The frame to review next, in the real window (offscreen) on 5 frames of the demo clip: the
model's per-frame uncertainty reaches the timeline (computed on the inference thread from the
same map the window caches), J walks the unreviewed frames from the least sure down and skips
reviewed ones, and the fine-tune dialog's "Correct first" lists the k most uncertain
unreviewed frames and goes to the first."""

from __future__ import annotations

import math

import numpy as np
import pytest

from polypviewer.core.edits import ReviewState

from .conftest import TIMEOUT, _wait_shown  # kvasir5: the demo clip's frames, a fixture there


def test_uncertainty_on_the_timeline_the_J_key_and_correct_first(open_window, qtbot, tiny_predictor, kvasir5):
    from polypviewer.engine.uncertainty import frame_uncertainty
    from polypviewer.ui.actions import window_keymap_rows

    win = open_window(tiny_predictor)
    with qtbot.waitSignal(win.source_opened, timeout=TIMEOUT):
        win.open_path(kvasir5)
    _wait_shown(qtbot, win, 0)
    act = win.actions_["next_uncertain"]
    assert [s.toString() for s in act.shortcuts()] == ["J"]
    assert ("J", "Most uncertain unreviewed frame") in window_keymap_rows(win)  # Help > Keys lists it

    win.predict_all()
    qtbot.waitUntil(lambda: len(win.uncertainties()) == 5, timeout=TIMEOUT)
    unc = win.uncertainties()
    win.timeline.flush()
    curve = win.timeline.uncertainty()
    for i in range(5):
        prob = win.predictions.cached(i)
        assert prob is not None  # 5 small frames fit the cache
        assert unc[i] == pytest.approx(frame_uncertainty(prob, 0.5), abs=1e-6)
        assert curve[i] == pytest.approx(unc[i])
    ranking = sorted(range(5), key=lambda i: (-unc[i], i))

    # J: the least sure frame first (from anywhere), then down the ranking; reviewing a
    # frame takes it off.
    win.go_to(ranking[3])
    _wait_shown(qtbot, win, ranking[3])
    act.trigger()
    _wait_shown(qtbot, win, ranking[0])
    act.trigger()
    _wait_shown(qtbot, win, ranking[1])
    c = win.annotation
    assert c.set_state(ReviewState.ACCEPTED)  # ranking[1] is reviewed now
    act.trigger()
    _wait_shown(qtbot, win, ranking[0])  # the top of what is left
    act.trigger()
    _wait_shown(qtbot, win, ranking[2])  # walking on, past the reviewed one

    # The fine-tune dialog picks the k most uncertain unreviewed frames and goes to the first.
    dlg = c.open_finetune_dialog()
    dlg.pick_k.setValue(2)
    win.go_to(ranking[4])
    _wait_shown(qtbot, win, ranking[4])
    assert dlg.pick_uncertain() == [ranking[0], ranking[2]]
    _wait_shown(qtbot, win, ranking[0])
    assert f"{ranking[0] + 1} (" in dlg.pick_label.text() and "ranked 5 of 5" in dlg.pick_label.text()
    dlg.close()

    # Another model version: its uncertainty is not known until it predicts.
    win.timeline.clear_uncertainty()
    assert np.isnan(win.timeline.uncertainty()).all()
    assert not math.isnan(win.predictions.uncertainty(0))
    win.close()


def test_J_without_predictions_says_what_to_do(qtbot):
    from polypviewer.ui.main_window import MainWindow

    win = MainWindow(load_default_model=False, predictor_options={"backend": "torch", "precision": "fp32"})
    qtbot.addWidget(win)
    win.actions_["next_uncertain"].trigger()
    assert "Predict the whole source" in win.statusBar().currentMessage()
    win.close()
