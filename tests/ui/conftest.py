import pytest


@pytest.fixture(scope="module")
def tiny_predictor():
    """A small real network (U-Net at 64 px, random weights, torch fp32): fast inference
    through the production path (worker thread, PipelineRunner, cache)."""
    import torch

    from polypviewer.engine.inference import Predictor
    from polypviewer.nets.registry import IMAGENET_MEAN, IMAGENET_STD, Preprocessing, build_model, get_spec

    torch.manual_seed(0)
    return Predictor.from_module(build_model("unet"), name="unet",
                                 preprocessing=Preprocessing(64, "RGB", IMAGENET_MEAN, IMAGENET_STD),
                                 select=get_spec("unet").select, device="cpu", precision="fp32",
                                 backend="torch", version="test-unet64", cache=False)



@pytest.fixture
def config(tmp_path, monkeypatch):
    """This test's own settings and projects folders (no keymap, layout or recent files left
    by another test); returns the settings folder."""
    monkeypatch.setenv("POLYPVIEWER_CONFIG", str(tmp_path / "config"))
    monkeypatch.setenv("POLYPVIEWER_PROJECTS", str(tmp_path / "projects"))
    return tmp_path / "config"


@pytest.fixture
def open_window(qtbot):
    """Factory: a shown 1200x800 main window (torch fp32, no default model) with the given
    predictor loaded."""
    def make(predictor, timeout: int = 60_000):
        from polypviewer.ui.main_window import MainWindow

        win = MainWindow(load_default_model=False, predictor_options={"backend": "torch", "precision": "fp32"})
        qtbot.addWidget(win)
        win.resize(1200, 800)
        win.show()
        with qtbot.waitSignal(win.predictions.model_ready, timeout=timeout):
            win.load_model(predictor=predictor)
        return win

    return make


# --- review sets and window helpers shared by the annotation, dialog and fault tests -------
TIMEOUT = 60_000


@pytest.fixture
def kvasir5(kvasir_copy, tmp_path, monkeypatch):
    """5 frames of the shipped demo clip with their exact masks, a writable Kvasir-layout
    folder under tmp_path; projects go to tmp_path/projects."""
    monkeypatch.setenv("POLYPVIEWER_PROJECTS", str(tmp_path / "projects"))
    return kvasir_copy(5)[0]


@pytest.fixture
def kvasir3(kvasir_copy, tmp_path, monkeypatch):
    """As ``kvasir5`` with 3 frames."""
    monkeypatch.setenv("POLYPVIEWER_PROJECTS", str(tmp_path / "projects"))
    return kvasir_copy(3)[0]


def _open(qtbot, win, root):
    """Open ``root`` in the window and wait until frame 0 is shown with its prediction."""
    with qtbot.waitSignal(win.source_opened, timeout=TIMEOUT):
        win.open_path(root)
    _wait_shown(qtbot, win, 0)


def _wait_shown(qtbot, win, index):
    qtbot.waitUntil(lambda: win.index == index and win.predictions.cached(index) is not None
                    and win._shown_frame == (win.frames.generation, index)
                    and win.annotation.editor.frame == index, timeout=TIMEOUT)


def _go(qtbot, win, index):
    win.go_to(index)
    _wait_shown(qtbot, win, index)


def _view(win, x, y):
    from PySide6.QtCore import QPointF

    return win.canvas.mapFromScene(QPointF(x, y))


def _drag(qtbot, win, pts, button=None):
    """A mouse drag through ``pts`` (image coordinates) on the canvas, with real events."""
    from PySide6.QtCore import Qt

    button = Qt.MouseButton.LeftButton if button is None else button
    vp = win.canvas.viewport()
    qtbot.mousePress(vp, button, pos=_view(win, *pts[0]))
    for p in pts[1:]:
        qtbot.mouseMove(vp, _view(win, *p))
    qtbot.mouseRelease(vp, button, pos=_view(win, *pts[-1]))


def _key(qtbot, win, key):
    """A real key press on the canvas, reaching the window-wide shortcuts."""
    qtbot.keyClick(win.canvas.viewport(), key)
