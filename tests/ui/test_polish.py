"""Issue 16, the rest of the first hour, driven through the real main window offscreen (a small
real network, U-Net at 64 px with random weights): the message log, what is remembered across
restarts, the model's scores beside the corrected ones, a layout that does not move, the
window at 1280x720, and playback that drops nothing it has time for."""

from __future__ import annotations

import json
import logging
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication

TIMEOUT = 60_000
ROOT = Path(__file__).resolve().parents[2]
POLYPGEN = ROOT / "resources" / "demo" / "polypgen"


@pytest.fixture
def make_window(open_window, tiny_predictor, config, qtbot):
    made = []

    def make():
        win = open_window(tiny_predictor, TIMEOUT)
        made.append(win)
        return win

    yield make
    for win in made:
        win.shutdown()


def _kvasir(root: Path, n: int = 3) -> Path:
    stems = sorted(p.stem for p in (POLYPGEN / "images").glob("*.jpg"))[:n]
    target = root / "kvasir"
    (target / "images").mkdir(parents=True)
    (target / "masks").mkdir()
    for s in stems:
        shutil.copy(POLYPGEN / "images" / f"{s}.jpg", target / "images")
        shutil.copy(POLYPGEN / "masks" / f"{s}.png", target / "masks")
    return target


def _open(qtbot, win, path):
    with qtbot.waitSignal(win.source_opened, timeout=TIMEOUT):
        win.open_path(path)
    qtbot.waitUntil(lambda: win.index == 0 and win.predictions.cached(0) is not None
                    and win._shown_frame == (win.frames.generation, 0)
                    and win.annotation.editor.frame == 0, timeout=TIMEOUT)


# ---- item 7: the message log -------------------------------------------------------------------
def test_every_reported_and_status_line_is_kept_with_its_time(make_window, qtbot, tmp_path):
    win = make_window()
    log = win.message_log
    assert log.isHidden() and log.toggleViewAction() in win.menuBar().actions()[2].menu().actions()
    win.report("first problem")
    win.notify("a passing status line")
    win.report("second problem")
    # the status bar shows only the last one; the log keeps all three, in order, with a time
    assert win.statusBar().currentMessage() == "second problem"
    assert log.texts()[-3:] == ["first problem", "a passing status line", "second problem"]
    stamp, level, _ = log.entries[-3]
    assert level == "error" and len(stamp) == 8 and stamp[2] == ":"
    assert [e[1] for e in log.entries[-3:]] == ["error", "info", "error"]
    assert "first problem" in log.view.toPlainText()
    assert "2 problems" in win.log_button.text()
    win.log_button.click()
    assert log.isVisible()


def test_engine_warnings_from_another_thread_reach_the_log(make_window, qtbot):
    win = make_window()
    t = threading.Thread(target=lambda: logging.getLogger("polypviewer.engine.folding").warning(
        "BatchNorm folding changed the output; running unfolded"))
    t.start()
    t.join()
    qtbot.waitUntil(lambda: any("running unfolded" in x for x in win.message_log.texts("warning")), timeout=5000)
    assert "engine.folding: BatchNorm folding changed the output" in win.message_log.texts("warning")[-1]
    # the model that loaded is in the log, with its engine and why
    assert any(x.startswith("Model ready: unet (test-unet64) on torch fp32") for x in win.message_log.texts("info"))
    win.shutdown()  # the bridge is detached: a later warning goes nowhere near the closed window
    handlers = logging.getLogger("polypviewer").handlers
    assert win._log_bridge.handler not in handlers


def test_an_unreadable_checkpoint_is_named_for_what_it_is(make_window, qtbot, tmp_path):
    win = make_window()
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"\x80\x02.")  # torch.load says "IndexError: pop from empty list"
    with qtbot.waitSignal(win.message, timeout=TIMEOUT) as sig:
        win.load_model("unet", str(bad))
    line = sig.args[0]
    assert "bad.pth" in line and "damaged or truncated PyTorch checkpoint" in line
    assert "IndexError" not in line and "pop from empty list" not in line
    assert win.message_log.texts("error")[-1] == line


# ---- item 8: remembered across restarts, written when it changes --------------------------------
def _saved(config: Path) -> dict:
    return json.loads((config / "settings.json").read_text(encoding="utf-8"))


def test_recent_files_layout_and_brush_are_written_when_they_change(make_window, qtbot, tmp_path, config):
    win = make_window()
    src = _kvasir(tmp_path)
    _open(qtbot, win, src)
    # no clean quit: what a SIGTERM would leave is already on disk
    qtbot.waitUntil(lambda: (config / "settings.json").exists()
                    and _saved(config)["recent_files"][:1] == [str(src.resolve())], timeout=5000)
    win.annotation.editor.set_brush_radius(31)
    qtbot.waitUntil(lambda: _saved(config)["brush_radius"] == 31, timeout=5000)
    log = win.message_log
    win.removeDockWidget(log)
    win.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, log)
    log.show()
    state = bytes(win.saveState(1).toBase64()).decode()
    qtbot.waitUntil(lambda: _saved(config)["window_state"] == state, timeout=5000)
    # the next start restores them
    from polypviewer.ui.main_window import MainWindow

    again = MainWindow(load_default_model=False)
    qtbot.addWidget(again)
    try:
        assert again.annotation.editor.brush_radius == 31
        assert again.settings.recent_files[0] == str(src.resolve())
        assert [a.text() for a in again.recent_menu.actions()][0] == str(src.resolve())
        assert again.dockWidgetArea(again.message_log) == Qt.DockWidgetArea.RightDockWidgetArea
        assert not again.message_log.isHidden()
    finally:
        again.shutdown()


def test_the_model_the_user_switched_to_is_the_default_next_time(qtbot, tmp_path, config, monkeypatch):
    """A fine-tuned checkpoint loaded through the window (Annotate > Model versions does
    host.load_model(None, path)) runs again at the next start; once it is gone, the shipped
    default runs and the log says why."""
    import torch

    from polypviewer.nets.registry import IMAGENET_MEAN, IMAGENET_STD, Preprocessing, build_model
    from polypviewer.nets.weights import save_checkpoint
    from polypviewer.ui.main_window import MainWindow

    torch.manual_seed(0)
    ckpt = tmp_path / "models" / "unet-finetuned.safetensors"
    ckpt.parent.mkdir()
    save_checkpoint(ckpt, build_model("unet"), model_name="unet",
                    preprocessing=Preprocessing(64, "RGB", IMAGENET_MEAN, IMAGENET_STD))
    win = MainWindow(load_default_model=False, predictor_options={"backend": "torch", "precision": "fp32"})
    qtbot.addWidget(win)
    with qtbot.waitSignal(win.predictions.model_ready, timeout=TIMEOUT):
        win.load_model(None, str(ckpt))
    qtbot.waitUntil(lambda: (config / "settings.json").exists()
                    and _saved(config)["default_model"] == str(ckpt.resolve()), timeout=5000)
    win.shutdown()
    loads = []
    monkeypatch.setattr(MainWindow, "load_model", lambda self, m=None, w=None, **kw: loads.append((m, w)))
    nxt = MainWindow(predictor_options={"backend": "torch", "precision": "fp32"})
    qtbot.addWidget(nxt)
    nxt.shutdown()
    assert loads == [(None, str(ckpt.resolve()))]
    ckpt.unlink()
    third = MainWindow()
    qtbot.addWidget(third)
    third.shutdown()
    assert loads[-1] == (None, None)
    assert any("default model (the last one used) is gone" in x for x in third.message_log.texts("warning"))


# ---- item 6: the model's scores beside the corrected masks' -------------------------------------
def test_correcting_frames_never_hides_the_models_own_scores(make_window, qtbot, tmp_path):
    from polypviewer.core.metrics import scores

    win = make_window()
    _open(qtbot, win, _kvasir(tmp_path, 3))
    win.predict_all()
    panel = win.metrics_panel
    qtbot.waitUntil(lambda: panel.value("dice", "all") != "–" and panel.value("dice", "model_all") != "–",
                    timeout=TIMEOUT)
    model_dice = [scores(win.predictions.cached(i) >= win.threshold, win.frames.get(i).gt)["dice"]
                  for i in range(3)]
    model_all = f"{np.mean(model_dice):.3f}"
    assert panel.value("dice", "model_all") == panel.value("dice", "all") == model_all
    assert panel.value("dice", "model") == panel.value("dice", "frame") == f"{model_dice[0]:.3f}"
    # a perfect correction of frame 0: "Corrected" follows it, "Model" stays the model's
    win.annotation.editor.edits(create=True).replace(win.frames.get(0).gt, "a perfect correction")
    win.refresh_mask(0, None)
    win.rescore(0)
    assert panel.value("dice", "frame") == "1.000"
    assert panel.value("dice", "model") == f"{model_dice[0]:.3f}"
    assert panel.value("dice", "all") == f"{np.mean([1.0, *model_dice[1:]]):.3f}"
    assert panel.value("dice", "model_all") == model_all
    assert panel.header("model_all") == "Model\nall 3" and panel.header("all") == "Corrected\nall 3"
    # another threshold re-scores both; the model's columns are still the model's
    win.set_threshold(0.3)
    qtbot.waitUntil(lambda: panel.value("dice", "model_all") != "–", timeout=TIMEOUT)
    again = [scores(win.predictions.cached(i) >= 0.3, win.frames.get(i).gt)["dice"] for i in range(3)]
    assert panel.value("dice", "model_all") == f"{np.mean(again):.3f}"
    assert panel.value("dice", "all") == f"{np.mean([1.0, *again[1:]]):.3f}"


# ---- items 2 and 3: nothing moves under the cursor; usable at 1280x720 ---------------------------
def _toolbar(win):
    from PySide6.QtWidgets import QToolBar

    return win.findChild(QToolBar, "annotationToolbar")


def test_the_first_edit_moves_nothing_and_undo_keeps_its_width(qtbot, tiny_predictor, open_window, tmp_path,
                                                                 monkeypatch):
    deep = tmp_path / ("a folder with a rather long name for projects " * 4).strip()
    monkeypatch.setenv("POLYPVIEWER_CONFIG", str(tmp_path / "config"))
    monkeypatch.setenv("POLYPVIEWER_PROJECTS", str(deep))
    win = open_window(tiny_predictor, TIMEOUT)
    try:
        _open(qtbot, win, _kvasir(tmp_path, 2))
        bar = _toolbar(win)
        undo = win.annotation.actions["undo"]
        undo_button = bar.widgetForAction(undo)
        QApplication.processEvents()
        canvas_at = win.canvas.mapTo(win, win.canvas.rect().topLeft()), win.canvas.size()
        buttons = {name: bar.widgetForAction(a).geometry() for name, a in win.annotation.actions.items()
                   if bar.widgetForAction(a) is not None}
        dock = win.annotation.dock
        dock_width = dock.width()
        ed = win.annotation.editor
        edits = ed.edits(create=True)  # the first edit: creates the project file
        ed.push(0, edits, edits.replace(win.frames.get(0).gt, "a perfect correction"))
        qtbot.waitUntil(lambda: win.annotation.project is not None, timeout=TIMEOUT)
        for _ in range(5):
            QApplication.processEvents()
        path = str(win.annotation.project.path)
        assert len(path) > 200
        row = win.annotation.panel.rows["project"]
        assert win.annotation.panel.value("project") == path and row.toolTip() == path
        assert row.text() != path and "…" in row.text()  # elided on screen
        assert undo.text().startswith("Undo ") and undo.text() != "Undo"  # names the step in the menu
        assert undo_button.text() == "Undo"  # the toolbar's text does not change
        assert (win.canvas.mapTo(win, win.canvas.rect().topLeft()), win.canvas.size()) == canvas_at
        assert dock.width() == dock_width
        assert {n: bar.widgetForAction(a).geometry() for n, a in win.annotation.actions.items()
                if bar.widgetForAction(a) is not None} == buttons
    finally:
        win.shutdown()


def test_the_window_is_usable_at_1280x720(qtbot, tiny_predictor, config, tmp_path):
    from PySide6.QtWidgets import QDockWidget, QScrollArea, QToolButton

    from polypviewer.ui.main_window import MainWindow

    win = MainWindow(load_default_model=False, predictor_options={"backend": "torch", "precision": "fp32"})
    qtbot.addWidget(win)
    win.resize(1280, 720)
    win.show()
    try:
        with qtbot.waitSignal(win.predictions.model_ready, timeout=TIMEOUT):
            win.load_model(predictor=tiny_predictor)
        _open(qtbot, win, _kvasir(tmp_path, 3))
        for _ in range(5):
            QApplication.processEvents()
        assert (win.width(), win.height()) == (1280, 720)  # no minimum forces it wider
        ext = _toolbar(win).findChild(QToolButton, "qt_toolbar_ext_button")
        assert ext is None or not ext.isVisible()  # every toolbar button on screen (Fine-tune too)
        assert win.nav.slider.width() >= 150
        name = win.nav.name
        assert name.geometry().right() < win.nav.width()  # the frame's name is inside its bar
        # the two side docks share the side as tabs, each full height: nothing scrolled away
        review, annotation = win.findChild(QDockWidget, "reviewDock"), win.annotation.dock
        assert annotation in win.tabifiedDockWidgets(review)
        for dock in (review, annotation):
            dock.raise_()
            for _ in range(3):
                QApplication.processEvents()
            scroll = dock.widget()
            assert isinstance(scroll, QScrollArea)
            assert not scroll.horizontalScrollBar().isVisible(), dock.objectName()
            assert scroll.verticalScrollBar().maximum() == 0, dock.objectName()
        # the metrics table's header texts fit their columns
        table = win.metrics_panel.table
        header = table.horizontalHeader()
        fm = header.fontMetrics()
        for c in range(table.columnCount()):
            for line in table.horizontalHeaderItem(c).text().split("\n"):
                assert fm.horizontalAdvance(line) <= header.sectionSize(c), line
        assert table.horizontalScrollBar().maximum() == 0
    finally:
        win.shutdown()


def test_a_tall_window_keeps_the_docks_one_above_the_other(qtbot, config):
    from PySide6.QtWidgets import QDockWidget

    from polypviewer.ui.main_window import MainWindow

    win = MainWindow(load_default_model=False)
    qtbot.addWidget(win)
    win.resize(1440, 900)
    win.show()
    try:
        assert win.tabifiedDockWidgets(win.findChild(QDockWidget, "reviewDock")) == []
    finally:
        win.shutdown()


# ---- item 11: playback drops nothing it has time for --------------------------------------------
def _simulate(clock, ready_at: dict[int, float], fps: float, n: int, tick: float) -> list[int]:
    """Tick the clock every ``tick`` s of fake time until the last frame is shown; frame i
    is ready from ``ready_at[i]`` on. Returns the frames shown, in order."""
    clock.start(0, fps, None, now=0.0)
    shown, current, now = [], 0, 0.0
    while current < n - 1 and now < 60:
        now += tick
        j = clock.advance(now, current, lambda i, t=now: ready_at[i] <= t, n - 1)
        if j is not None:
            shown.append(j)
            current = j
    return shown


def test_a_slow_start_is_waited_for_not_dropped():
    """The pipeline needs 0.6 s for its first frame (a seek, a warm-up), then delivers one
    every 20 ms, faster than the source's 10 fps: every frame is shown, none dropped; the
    clock only waited at the start."""
    from polypviewer.ui.playback import PlaybackClock

    n = 30
    ready_at = {i: 0.6 + 0.02 * i for i in range(n)}
    clock = PlaybackClock()
    shown = _simulate(clock, ready_at, 10.0, n, 0.05)
    assert shown == list(range(1, n)) and clock.dropped == 0
    assert 0.4 <= clock.held_s <= 0.7  # the wait was the warm-up, nothing more
    # a frame that never comes is waited for at most HOLD_S, then playback runs on past it
    from polypviewer.ui.playback import HOLD_S

    ready_at[5] = 1e9
    clock = PlaybackClock()
    shown = _simulate(clock, ready_at, 10.0, n, 0.05)
    assert 5 not in shown and shown[-1] == n - 1 and clock.dropped >= 1
    assert clock.held_s <= 0.7 + HOLD_S + 0.1


def test_where_inference_cannot_keep_up_the_clock_does_not_turn_into_slow_motion():
    """One frame every 0.3 s at a 10 fps source (stride 1, the rate not measured yet): after
    the start's allowance the clock waits at most HOLD_FRACTION of the time played (the
    playhead runs on at the source's rate; the player then asks for frames ahead of it)."""
    from polypviewer.ui.playback import HOLD_FRACTION, HOLD_S, PlaybackClock

    n = 200
    clock = PlaybackClock()
    shown = _simulate(clock, {i: 0.3 * i for i in range(n)}, 10.0, n, 0.05)
    played = 0.3 * (n - 1) + 0.05  # the last frame is ready, and shown, at 59.7 s
    assert shown[-1] == n - 1
    assert clock.held_s <= HOLD_S + HOLD_FRACTION * played + 0.1


def test_playing_a_clip_shows_every_frame_when_inference_keeps_up(make_window, qtbot):
    """Space on the last frame plays the clip again from frame 0 with a cold pipeline (nothing
    ahead cached, a seek back to the start): frames shown + dropped = frames played, and at
    stride 1 (inference keeps up) none is dropped."""
    win = make_window()
    clip = ROOT / "resources" / "demo" / "demo_clip.mp4"
    with qtbot.waitSignal(win.source_opened, timeout=TIMEOUT):
        win.open_path(clip)
    qtbot.waitUntil(lambda: win.predictions.cached(0) is not None, timeout=TIMEOUT)
    win.predictions.request(list(range(1, 9)))  # the inference rate, measured as a user's would be
    qtbot.waitUntil(lambda: win.predictions.meter.fps() is not None and not win.predictions.busy(),
                    timeout=TIMEOUT)
    n = min(win.n, 40)
    win.source["n"] = n  # play the first 40 frames
    # a source rate inference keeps up with on this machine (the clip's own, or slower)
    win.source["fps"] = min(float(win.source["fps"]), 0.8 * win.predictions.meter.fps())
    win.go_to(n - 1)
    qtbot.waitUntil(lambda: win.predictions.cached(n - 1) is not None and not win.predictions.busy(),
                    timeout=TIMEOUT)
    win.predictions.cache.clear()  # nothing ahead is cached: the pipeline starts cold
    win.set_playing(True)  # at the end: plays again from frame 0
    clock = win.player.clock
    assert win.index == 0
    qtbot.waitUntil(lambda: not win.player.active(), timeout=TIMEOUT)
    assert win.index == n - 1
    assert clock.shown + clock.dropped == n - 1
    assert clock.stride == 1 and clock.dropped == 0, (clock.shown, clock.dropped)


def test_the_look_ahead_never_evicts_the_frames_due_next(make_window, qtbot):
    """At 1920x1080 the 512 MB frame cache holds ~30 decoded frames, and playback asked for 64
    ahead: the frames due next were evicted before they were shown, and dropped. The same,
    scaled to the shipped clip: a frame cache of 12 frames."""
    from polypviewer.ui.workers import LruCache

    win = make_window()
    clip = ROOT / "resources" / "demo" / "demo_clip.mp4"
    with qtbot.waitSignal(win.source_opened, timeout=TIMEOUT):
        win.open_path(clip)
    qtbot.waitUntil(lambda: win.predictions.cached(0) is not None and win.frames.get(0) is not None,
                    timeout=TIMEOUT)
    win.predictions.request(list(range(1, 9)))
    qtbot.waitUntil(lambda: win.predictions.meter.fps() is not None and not win.predictions.busy(),
                    timeout=TIMEOUT)
    win.frames.cache.max_bytes = 12 * LruCache._size(win.frames.get(0))
    assert win.player.depth() == 6  # half of what the frame cache holds
    n = min(win.n, 40)
    win.source["n"] = n
    win.source["fps"] = min(float(win.source["fps"]), 0.8 * win.predictions.meter.fps())
    win.go_to(0)
    qtbot.waitUntil(lambda: not win.predictions.busy(), timeout=TIMEOUT)
    win.set_playing(True)
    clock = win.player.clock
    qtbot.waitUntil(lambda: not win.player.active(), timeout=TIMEOUT)
    assert win.index == n - 1 and clock.shown + clock.dropped == n - 1
    assert clock.stride == 1 and clock.dropped == 0, (clock.shown, clock.dropped)
