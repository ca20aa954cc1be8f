"""The real main window, offscreen: a Kvasir-layout folder of frames of the shipped demo clip
(``kvasir_copy``, exact masks) and the demo clip as a video without ground truth. A
small real network (U-Net at 64 px, random weights, torch fp32) keeps inference fast;
everything else is the production path (frame loader thread, PipelineRunner via the
inference worker, cache, canvas, panels, timeline)."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest
from PySide6.QtCore import Qt

from polypviewer.core.metrics import SCORE_NAMES, scores

TIMEOUT = 60_000


@pytest.fixture
def kvasir4(kvasir_copy):
    """A Kvasir-layout folder linking 4 frames of the shipped demo clip and their exact masks."""
    return kvasir_copy(4, link=True)


@pytest.fixture
def clip(tmp_path):
    """The shipped demo clip (60 frames, 384x384, 12 fps) copied without its masks: a video
    with no ground truth, as a recording from the endoscope is."""
    import shutil

    from polypviewer.io.demo_asset import shipped_demo

    return shutil.copy(shipped_demo(), tmp_path / "clip.mp4")


@pytest.fixture
def window(open_window, tiny_predictor):
    win = open_window(tiny_predictor, TIMEOUT)
    yield win
    win.shutdown()
    assert win.predictions.thread().isFinished() and win.frames.thread().isFinished()


def _not_shipped(names):
    """The first of ``names`` that is not the shipped default model (which would load)."""
    from polypviewer.nets.weights import default_weights, load_checkpoint

    path = default_weights()
    shipped = load_checkpoint(path).metadata.get("polypviewer.model") if path else None
    return next(n for n in names if n != shipped)


def _wait_shown(qtbot, win, index):
    qtbot.waitUntil(lambda: win.index == index and win.current_mask(index) is not None
                    and win._shown_frame == (win.frames.generation, index), timeout=TIMEOUT)


def test_kvasir_step_threshold_overlays_and_metrics_match_eval(qtbot, window, kvasir4, tmp_path,
                                                               tiny_predictor):
    win = window
    root, stems = kvasir4
    with qtbot.waitSignal(win.source_opened, timeout=TIMEOUT) as opened:
        win.open_path(root)
    assert opened.args[0]["n"] == 4 and opened.args[0]["has_masks"]
    assert sorted(opened.args[0]["names"]) == sorted(stems)
    stems = opened.args[0]["names"]  # the source's order (natural sort)
    _wait_shown(qtbot, win, 0)
    frame, gt, name, _ = win.frames.get(0)
    assert name == stems[0] and win.canvas.image_size() == frame.shape[:2]
    # the cached probability is the predictor's on the same frame
    prob = win.predictions.cached(0)
    np.testing.assert_allclose(prob, tiny_predictor.predict([frame])[0], atol=1e-5)
    # the panel's slider moves the threshold in 0.01 steps
    win.overlay_panel.set_threshold(0.3)
    assert win.threshold == pytest.approx(0.3)
    # a threshold that splits this random network's nearly flat map (the slider's steps are too
    # coarse for it; the second call keeps the exact value), so the masks are not trivial
    thr = float(np.median(prob))
    win.set_threshold(thr)
    win.set_threshold(thr)
    assert win.threshold == pytest.approx(thr) and 0 < (prob >= thr).mean() < 1
    codes = win.canvas.overlay_codes()
    np.testing.assert_array_equal(codes & 1, prob >= thr)
    np.testing.assert_array_equal(codes >> 1, gt)
    expected = scores(prob >= thr, gt)
    for k in SCORE_NAMES:
        assert win.metrics_panel.value(k) == f"{expected[k]:.3f}"

    # Right arrow steps (window-wide shortcut), overlay keys change what is drawn
    win.actions_["next_frame"].trigger()
    _wait_shown(qtbot, win, 1)
    assert win.nav.counter.text() == "2 / 4" and stems[1] in win.nav.name.text()
    win.actions_["toggle_overlay"].trigger()
    assert not win.canvas.overlay_visible()
    win.actions_["toggle_overlay"].trigger()
    filled = win.canvas.overlay_codes().copy()
    win.actions_["toggle_outline"].trigger()
    outlined = win.canvas.overlay_codes()
    assert win.canvas.overlay_style().outline and win.overlay_panel.outline.isChecked()
    assert (outlined & 2).sum() < (filled & 2).sum()  # a ring, not the filled polyp
    win.actions_["toggle_outline"].trigger()
    win.actions_["toggle_disagreement"].trigger()
    assert win.canvas.overlay_style().disagreement
    np.testing.assert_array_equal(win.canvas.overlay_codes(), filled)  # codes read as FP / FN / TP
    win.actions_["toggle_disagreement"].trigger()

    # the whole source, then `polypviewer eval` on the masks shown must give the same numbers
    win.predict_all()
    qtbot.waitUntil(lambda: win.metrics_panel.value("dice", "all") != "–", timeout=TIMEOUT)
    pred_dir = tmp_path / "pred"
    pred_dir.mkdir()
    for i, s in enumerate(stems):
        cv2.imwrite(str(pred_dir / f"{s}.png"), win.current_mask(i).astype(np.uint8) * 255)
    from polypviewer.cli import main

    out = tmp_path / "eval.json"
    assert main(["eval", "--pred", str(pred_dir), "--gt", str(root), "--json", str(out), "--fast"]) == 0
    report = json.loads(out.read_text())
    assert report["n"] == 4
    for k in SCORE_NAMES:
        assert win.metrics_panel.value(k, "all") == f"{report['mean'][k]:.3f}"
    per = {e["name"]: e for e in report["per_image"]}
    win.go_to(2)
    _wait_shown(qtbot, win, 2)
    assert win.metrics_panel.value("dice") == f"{per[stems[2]]['dice']:.3f}"
    # worst-frame key goes to the lowest Dice
    dice = [per[s]["dice"] for s in stems]
    win.go_to(int(np.argmax(dice)))
    assert len(set(dice)) > 1  # the four frames score differently, so one of them is the worst
    win.actions_["next_worst"].trigger()
    assert win.index == int(np.argmin(dice))


def test_an_edited_mask_starts_from_prediction_and_is_scored(qtbot, window, kvasir4):
    win = window
    root, _ = kvasir4
    win.open_path(root)
    _wait_shown(qtbot, win, 0)
    qtbot.waitUntil(lambda: win.annotation.editor.frame == 0, timeout=TIMEOUT)
    thr = win.threshold
    edits = win.annotation.editor.edits(create=True)  # the session is the mask's one owner
    mask = edits.mask
    np.testing.assert_array_equal(mask, win.predictions.cached(0) >= thr)
    assert win.canvas.layers()[0] is mask and win.current_mask(0) is mask  # tools paint what is drawn
    gt = win.frames.get(0).gt
    edits.replace(gt, "a perfect correction")
    win.refresh_mask(0, None)
    win.rescore(0)
    assert win.metrics_panel.value("dice") == "1.000"
    np.testing.assert_array_equal(win.canvas.overlay_codes() & 1, gt)
    win.overlay_panel.set_threshold(0.9)  # the threshold no longer changes an edited frame
    assert win.current_mask(0) is mask and win.metrics_panel.value("dice") == "1.000"


def test_a_clip_plays_drops_and_switches_model(qtbot, window, clip):
    win = window
    with qtbot.waitSignal(win.source_opened, timeout=TIMEOUT) as opened:
        win.open_path(clip)
    info = opened.args[0]
    assert info["kind"] == "video" and not info["has_masks"] and info["n"] == 60
    _wait_shown(qtbot, win, 0)
    assert "No ground truth" in win.metrics_panel.note.text()
    # look-ahead frames come with their overlay rendered on the worker thread; shown as is,
    # it is exactly what the canvas renders itself
    style = win.canvas.overlay_style()
    qtbot.waitUntil(lambda: win.predictions.cached_overlay(1, win.threshold, style) is not None, timeout=TIMEOUT)
    win.go_to(1)
    shown = win.canvas.overlay_pixmap().toImage()
    assert shown == win.predictions.cached_overlay(1, win.threshold, style)
    win.canvas.refresh_overlay(None)
    assert win.canvas.overlay_pixmap().toImage() == shown
    win.go_to(0)
    win.actions_["play"].trigger()  # Space
    assert win.player.active()
    qtbot.waitUntil(lambda: not win.player.active(), timeout=TIMEOUT)
    clock = win.player.clock
    assert win.index == 59 and clock.shown >= 2
    assert clock.shown + clock.dropped <= 59  # every step either shown or dropped, never both
    area = win.timeline.values()
    assert np.isfinite(area).sum() >= clock.shown and np.nanmax(area) <= 1.0
    assert win.model_panel.info["fps"].text().endswith("frames/s")
    # Home, Shift+Right
    win.actions_["first_frame"].trigger()
    win.actions_["forward_10"].trigger()
    assert win.index == 10 and win.nav.counter.text() == "11 / 60"

    # switching network from the panel: no weights are shipped for it -> the list says so, the
    # panel says what still runs (nothing silently runs random weights), and only an explicit
    # choice of random weights switches; then predictions are made by the new version
    old = win.predictions.version
    other = _not_shipped(["lite_pranet", "unet", "resunetpp"])
    panel = win.model_panel
    i = panel.combo.findData(other)
    assert panel.combo.itemText(i) == f"{other} — no trained weights"
    assert "Load weights" in panel.combo.itemData(i, Qt.ItemDataRole.ToolTipRole)
    panel.select_model(other)
    panel.model_chosen.emit(other)
    assert panel.message.text().startswith(f"{other}: no trained weights")
    assert "Still running unet (test-unet64)" in panel.message.text()
    assert win.predictions.version == old and not panel.random_button.isHidden()
    with qtbot.waitSignal(win.predictions.model_ready, timeout=TIMEOUT):
        win.model_panel.random_button.click()
    assert win.predictions.version != old and win.model_panel.info["version"].text() == "random-init"
    _wait_shown(qtbot, win, 10)
    assert win.predictions.cache.get((win.frames.generation, 10, win.predictions.version)) is not None


def test_bad_inputs_are_reported_and_the_app_goes_on(qtbot, window, tmp_path, kvasir4):
    win = window
    with qtbot.waitSignal(win.message, timeout=TIMEOUT) as msg:
        win.open_path(tmp_path / "missing.mp4")
    assert "missing.mp4" in msg.args[0] and "\n" not in msg.args[0]
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a checkpoint")
    with qtbot.waitSignal(win.predictions.model_failed, timeout=TIMEOUT) as failed:
        win.load_model(weights=str(bad))
    assert "bad.safetensors" in failed.args[0]
    assert "bad.safetensors" in win.model_panel.message.text()
    # still usable: the source opens and frames show (the previous model stays loaded)
    root, _ = kvasir4
    win.open_path(root)
    qtbot.waitUntil(lambda: win._shown_frame == (win.frames.generation, 0), timeout=TIMEOUT)
    # a broken frame in a folder is named and skipped
    folder = tmp_path / "frames"
    folder.mkdir()
    (folder / "a_broken.png").write_bytes(b"garbage")
    cv2.imwrite(str(folder / "b_good.png"), np.zeros((32, 48, 3), np.uint8))
    with qtbot.waitSignal(win.source_opened, timeout=TIMEOUT):
        win.open_path(folder)
    qtbot.waitUntil(lambda: any("a_broken" in e for e in win.errors), timeout=TIMEOUT)
    win.go_to(1)
    qtbot.waitUntil(lambda: win._shown_frame == (win.frames.generation, 1), timeout=TIMEOUT)
    assert win.canvas.image_size() == (32, 48)
    assert not math.isnan(win.threshold)


def test_drop_opens_and_recent_files_remember(qtbot, window, kvasir4):
    from PySide6.QtCore import QMimeData, QUrl

    from polypviewer.io.settings import load_settings

    win = window
    root, _ = kvasir4
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(root))])

    class Drop:
        def mimeData(self):
            return mime

        def acceptProposedAction(self):
            pass

    with qtbot.waitSignal(win.source_opened, timeout=TIMEOUT):
        win.dropEvent(Drop())
    assert win.settings.recent_files[0] == str(root.resolve())
    assert [a.text() for a in win.recent_menu.actions()][0] == str(root.resolve())
    win.shutdown()  # settings are saved on close
    assert load_settings()[0].recent_files[0] == str(root.resolve())


def test_closing_while_a_model_loads_and_a_clip_plays_stops_every_thread(qtbot, clip):
    from polypviewer.ui.main_window import MainWindow

    win = MainWindow(load_default_model=False, predictor_options={"backend": "torch", "precision": "fp32"})
    qtbot.addWidget(win)
    win.show()
    win.open_path(clip)
    qtbot.waitUntil(lambda: win.source is not None, timeout=TIMEOUT)
    win.actions_["play"].trigger()
    win.load_model("lite_pranet", allow_random=True)  # a few seconds of building on the worker
    win.close()  # closeEvent -> shutdown, while the build is in flight
    assert win.predictions.thread().isFinished() and win.frames.thread().isFinished()
    assert not win.player.active()


def test_a_jump_cancels_stale_look_ahead(qtbot, window, clip):
    win = window
    with qtbot.waitSignal(win.source_opened, timeout=TIMEOUT):
        win.open_path(clip)
    win.go_to(0)
    assert win.predictions.busy() and win.predictions.running_indices()[:3] == [0, 1, 2]
    first_job = win.predictions._job.id
    win.go_to(1)  # a step inside the look-ahead keeps the running job
    assert win.predictions._job.id == first_job
    win.go_to(20)  # a jump replaces it: the new job starts at the frame now shown
    assert win.predictions._job.id != first_job
    assert win.predictions.running_indices()[0] == 20
    _wait_shown(qtbot, win, 20)
    # the look-ahead from the new position completes (cache keyed by source, frame, version)
    qtbot.waitUntil(lambda: not win.predictions.busy(), timeout=TIMEOUT)
    assert all(win.predictions.cached(i) is not None for i in range(20, 26))


def test_load_weights_puts_a_foreign_checkpoint_into_the_selected_network(qtbot, window, tmp_path, monkeypatch):
    """A plain state_dict that names no network (like the official PraNet-19.pth) loads into
    the network chosen in the model panel, as `predict --model NAME --weights FILE` does."""
    import torch

    from polypviewer.nets.registry import build_model
    from polypviewer.ui import main_window as mw

    torch.manual_seed(1)
    path = tmp_path / "foreign.pth"
    torch.save(build_model("unet").state_dict(), path)
    window.model_panel.select_model("unet")
    monkeypatch.setattr(mw.QFileDialog, "getOpenFileName", lambda *a, **k: (str(path), ""))
    with qtbot.waitSignal(window.predictions.model_ready, timeout=TIMEOUT) as ready:
        window.weights_dialog()
    info = ready.args[0]
    assert info["model"] == "unet" and info["weights"] == str(path)
    # weights loaded for a network make it ready in the list
    assert window.model_panel.combo.itemText(window.model_panel.combo.findData("unet")) == "unet"
