"""The window <-> annotation seam is ``ui.host.ReviewHost``: the window implements it, and the
annotation controller runs on any object that does (here a stub over synthetic frames, no
workers, no model), so the controller reads nothing else of the window."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from PySide6.QtCore import Signal
from PySide6.QtWidgets import QMainWindow

from polypviewer.core.edits import EditSession, ReviewState
from polypviewer.ui.host import ReviewHost
from polypviewer.ui.workers import FrameData


class StubHost(QMainWindow):
    """A ReviewHost and nothing more: 3 frames of 40x60, a prediction for frames 0 and 1."""

    source_opened = Signal(object)
    displayed = Signal(int, bool)
    frame_ready = Signal(int)
    message = Signal(str)

    def __init__(self, projects: Any) -> None:
        super().__init__()
        self.keymap: dict[str, tuple[str, ...]] = {}
        self.index, self.n, self.threshold = 0, 3, 0.5
        rng = np.random.default_rng(0)
        self.probs = {i: rng.random((40, 60)).astype(np.float32) for i in (0, 1)}
        self.calls: list[tuple[str, Any]] = []
        self.session: EditSession | None = None
        self.tool: Any = None
        self.errors: list[str] = []

    def frame_name(self, index: int) -> str:
        return f"f{index}"

    def frame(self, index: int) -> FrameData | None:
        rgb = np.zeros((40, 60, 3), np.uint8)
        return FrameData(rgb, None, self.frame_name(index), np.zeros((40, 60, 4), np.uint8))

    def prediction(self, index: int) -> np.ndarray | None:
        return self.probs.get(index)

    def model_info(self) -> dict[str, Any] | None:
        return {"model": "stub", "version": "v1"}

    def uncertainties(self) -> dict[int, float]:
        return {0: 0.1, 1: 0.4}

    def use_session(self, session: EditSession) -> None:
        self.session = session

    def show_mask(self, index: int) -> None:
        self.calls.append(("show", index))

    def refresh_mask(self, index: int, rect: Any) -> None:
        self.calls.append(("refresh", index))

    def rescore(self, index: int) -> None:
        self.calls.append(("rescore", index))

    def main_window(self) -> QMainWindow:
        return self

    def set_canvas_tool(self, handler: Any) -> None:
        self.tool = handler

    def add_canvas_item(self, item: Any) -> None:
        pass

    def add_timeline_item(self, item: Any) -> None:
        pass

    def go_to(self, index: int) -> None:
        self.index = index
        self.displayed.emit(index, True)

    def set_playing(self, on: bool) -> None:
        pass

    def load_model(self, model: str | None = None, weights: str | None = None) -> None:
        pass

    def report(self, message: str) -> None:
        self.errors.append(message)

    def notify(self, message: str, timeout_ms: int = 4000) -> None:
        pass

    def model_message(self, text: str) -> None:
        pass


@pytest.fixture
def host(qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("POLYPVIEWER_PROJECTS", str(tmp_path / "projects"))
    h = StubHost(tmp_path)
    qtbot.addWidget(h)
    return h


def test_the_window_implements_the_protocol(qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("POLYPVIEWER_CONFIG", str(tmp_path / "config"))
    from polypviewer.ui.main_window import MainWindow

    win = MainWindow(load_default_model=False)
    qtbot.addWidget(win)
    try:
        assert isinstance(win, ReviewHost)  # every member of the protocol is there
    finally:
        win.shutdown()


def test_the_controller_runs_on_any_review_host(host, tmp_path):
    from polypviewer.ui.annotation import AnnotationController

    assert isinstance(host, ReviewHost)
    c = AnnotationController(host)
    source = tmp_path / "clip.mp4"
    source.write_bytes(b"not decoded by the stub")
    host.source_opened.emit({"path": str(source), "n": 3, "kind": "video"})
    assert host.session is c.session  # the window is told which session's masks to show
    host.go_to(0)
    assert c.set_state(ReviewState.ACCEPTED)  # the frame starts from prediction >= threshold
    np.testing.assert_array_equal(c.session.get(0).mask, host.probs[0] >= 0.5)
    assert ("show", 0) in host.calls
    assert c.project is not None and c.project.path.exists()  # the first change created it
    c.editor.select("brush")
    assert host.tool is c.editor.tool
    c.editor.cleanup("clear")
    assert not c.session.get(0).mask.any() and ("refresh", 0) in host.calls
    assert c.session.state(0) == ReviewState.CORRECTED
    host.go_to(2)  # no prediction for frame 2: refused with the frame's name
    assert not c.set_state(ReviewState.ACCEPTED)
    assert host.errors[-1].startswith("f2: ")
    c.shutdown()
