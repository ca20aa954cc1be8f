"""Issue 16, the rest of the first hour, driven through the real main window offscreen (a small
real network, U-Net at 64 px with random weights): the message log, what is remembered across
restarts, the model's scores beside the corrected ones, a layout that does not move, the
window at 1280x720, and playback that drops nothing it has time for."""

from __future__ import annotations

import logging
import shutil
import threading
from pathlib import Path

import pytest

TIMEOUT = 60_000
ROOT = Path(__file__).resolve().parents[2]
POLYPGEN = ROOT / "resources" / "demo" / "polypgen"


@pytest.fixture
def config(tmp_path, monkeypatch):
    monkeypatch.setenv("POLYPVIEWER_CONFIG", str(tmp_path / "config"))
    monkeypatch.setenv("POLYPVIEWER_PROJECTS", str(tmp_path / "projects"))
    return tmp_path / "config"


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
