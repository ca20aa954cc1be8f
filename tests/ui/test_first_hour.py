"""What an annotator hits in the first hour, each driven through the real main window offscreen
(a small real network, U-Net at 64 px with random weights; everything else the production
path): D without ground truth, the timeline's lone points, ranges, caption and area scale, the
play button's icons, the polygon preview's colour, the threshold tooltip, Help > Keys, keymap
mistakes, and the shipped PolypGen demo frames."""

from __future__ import annotations

import argparse
import math
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pyqtgraph as pg
import pytest
from PySide6.QtCore import QPoint, QPointF, QRect, Qt
from PySide6.QtGui import QColor, QImage, QKeySequence
from PySide6.QtWidgets import QApplication, QStyle

from polypviewer.io.settings import Settings, save_settings

TIMEOUT = 60_000
ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "resources" / "demo"
POLYPGEN = DEMO / "polypgen"
PRIMARY = (0, 200, 255)  # the timeline's Dice / area colour


@pytest.fixture
def config(tmp_path, monkeypatch):
    """This test's own settings and projects folders (no keymap left by another test)."""
    monkeypatch.setenv("POLYPVIEWER_CONFIG", str(tmp_path / "config"))
    monkeypatch.setenv("POLYPVIEWER_PROJECTS", str(tmp_path / "projects"))
    return tmp_path / "config"


@pytest.fixture
def make_window(open_window, tiny_predictor, config, qtbot):
    """Factory: the shown, active window (keys reach its shortcuts); shut down at the end."""
    made = []

    def make():
        win = open_window(tiny_predictor, TIMEOUT)
        win.activateWindow()
        qtbot.waitUntil(lambda: QApplication.activeWindow() is win, timeout=5000)
        made.append(win)
        return win

    yield make
    for win in made:
        win.shutdown()


def _folder(root: Path, n: int = 3, masks: bool = True) -> Path:
    """``n`` shipped PolypGen frames: a Kvasir folder (images/ + masks/), or without masks a
    plain folder of frames (no ground truth)."""
    stems = sorted(p.stem for p in (POLYPGEN / "images").glob("*.jpg"))[:n]
    target = root / ("kvasir" if masks else "frames")
    (target / "images" if masks else target).mkdir(parents=True)
    for s in stems:
        shutil.copy(POLYPGEN / "images" / f"{s}.jpg", target / "images" / f"{s}.jpg" if masks else target)
        if masks:
            (target / "masks").mkdir(exist_ok=True)
            shutil.copy(POLYPGEN / "masks" / f"{s}.png", target / "masks")
    return target


def _wait_shown(qtbot, win, index):
    qtbot.waitUntil(lambda: win.index == index and win.predictions.cached(index) is not None
                    and win._shown_frame == (win.frames.generation, index)
                    and win.annotation.editor.frame == index, timeout=TIMEOUT)


def _open(qtbot, win, path):
    with qtbot.waitSignal(win.source_opened, timeout=TIMEOUT):
        win.open_path(path)
    _wait_shown(qtbot, win, 0)


def _key(qtbot, win, key, modifier=Qt.KeyboardModifier.NoModifier):
    """A real key press on the canvas, reaching the window-wide shortcuts."""
    qtbot.keyClick(win.canvas.viewport(), key, modifier)


def _rgba(image: QImage) -> np.ndarray:
    img = image.convertToFormat(QImage.Format.Format_RGBA8888)
    h, w = img.height(), img.width()
    return np.frombuffer(img.constBits(), np.uint8).reshape(h, img.bytesPerLine())[:, :4 * w].reshape(h, w, 4).copy()


def _grab(widget) -> np.ndarray:
    QApplication.processEvents()
    return _rgba(widget.grab().toImage())[..., :3].astype(int)


def _view_rect(tl) -> QRect:
    """The plot area (the 0..1 view box) in the timeline's own pixels."""
    plot = tl.plot_widget()
    rect = plot.mapFromScene(plot.getPlotItem().vb.sceneBoundingRect()).boundingRect()
    return QRect(plot.mapTo(tl, rect.topLeft()), rect.size())


def _to_pixel(tl, x: float, y: float) -> tuple[int, int]:
    plot = tl.plot_widget()
    p = plot.mapTo(tl, plot.mapFromScene(plot.getPlotItem().vb.mapViewToScene(QPointF(x, y))))
    return p.x(), p.y()


def _near(img: np.ndarray, x: int, y: int, color, radius: int = 3, tol: int = 45) -> bool:
    patch = img[max(0, y - radius):y + radius + 1, max(0, x - radius):x + radius + 1]
    return bool((np.abs(patch - np.asarray(color)).max(axis=-1) <= tol).any())


# ---- (10) the shipped demo frames ---------------------------------------------------------------------
def test_demo_opens_the_shipped_polypgen_frames_with_ground_truth(qtbot, make_window):
    from polypviewer.cli import demo

    parser = argparse.ArgumentParser()
    demo.configure(parser)
    path = demo.demo_source(parser.parse_args([]))
    assert path == demo.demo_frames() and path.parts[-3:] == ("resources", "demo", "polypgen")  # installed copy
    assert demo.demo_source(parser.parse_args(["--clip"])) == demo.demo_clip()
    images = sorted((path / "images").glob("*.jpg"))
    masks = sorted((path / "masks").glob("*.png"))
    assert len(images) == 24 and [p.stem for p in images] == [p.stem for p in masks]
    for img, msk in zip(images, masks):
        im, m = cv2.imread(str(img)), cv2.imread(str(msk), cv2.IMREAD_UNCHANGED)
        assert max(im.shape[:2]) <= 768 and m.shape == im.shape[:2]
        assert set(np.unique(m)) <= {0, 255} and m.any()
    readme = (path / "README.md").read_text(encoding="utf-8")
    for needed in ("Ali et al.", "A multi-centre polyp detection and segmentation dataset for generalisability "
                   "assessment", "Scientific Data", "10, 75 (2023)", "CC BY 4.0", "INTER_AREA", "INTER_NEAREST"):
        assert needed in " ".join(readme.split()), needed
    win = make_window()
    _open(qtbot, win, path)
    assert win.source["has_masks"] and win.n == 24 and win.source["kind"] == "kvasir"
    assert win.actions_["toggle_disagreement"].isEnabled() and win.timeline.mode() == "dice"
    assert win.metrics_panel.value("dice") != "–"
