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


# ---- (4) D without ground truth --------------------------------------------------------------
def test_d_is_disabled_without_ground_truth_and_never_paints_a_polyp_magenta(qtbot, make_window, tmp_path):
    win = make_window()
    act = win.actions_["toggle_disagreement"]
    assert not act.isEnabled() and "ground truth" in act.toolTip()  # nothing open yet
    _open(qtbot, win, _folder(tmp_path / "a", masks=True))
    assert act.isEnabled() and win.overlay_panel.disagree.isEnabled()
    _key(qtbot, win, Qt.Key.Key_D)
    assert win.canvas.overlay_style().disagreement

    _open(qtbot, win, _folder(tmp_path / "b", masks=False))
    assert not win.source["has_masks"]
    assert not win.canvas.overlay_style().disagreement  # switched off, not carried into a source without masks
    assert not act.isEnabled()
    for tip in (act.toolTip(), win.overlay_panel.disagree.toolTip()):
        assert "needs ground truth" in tip and "false positive" in tip and "frames" in tip
    assert not win.overlay_panel.disagree.isEnabled()
    prob = win.predictions.cached(0)
    win.overlay_panel.set_threshold(math.floor(float(np.median(prob)) * 100) / 100)  # half the frame or more
    assert win.current_mask().any()
    _key(qtbot, win, Qt.Key.Key_D)
    assert not win.canvas.overlay_style().disagreement
    drawn = _rgba(win.canvas.overlay_pixmap().toImage())
    on = drawn[..., 3] > 0
    np.testing.assert_array_equal(on, win.current_mask())  # what is drawn is the mask...
    style = win.canvas.overlay_style()
    assert np.abs(drawn[on][:, :3].astype(int) - style.pred_color).max() <= 4  # ...in the prediction's colour
    assert not (np.abs(drawn[on][:, :3].astype(int) - style.fp_color).max(axis=-1) <= 30).any()  # no magenta


# ---- (5) the timeline --------------------------------------------------------------------------
def test_end_on_a_fresh_clip_draws_the_last_frame(qtbot, make_window):
    win = make_window()
    _open(qtbot, win, DEMO / "demo_clip.mp4")
    n = win.n
    _key(qtbot, win, Qt.Key.Key_End)
    _wait_shown(qtbot, win, n - 1)
    qtbot.waitUntil(lambda: np.isfinite(win.timeline.values()[n - 1]), timeout=TIMEOUT)
    values = win.timeline.values()
    assert not np.isfinite(values[n - 2])  # a lone point: no neighbour for a line to reach
    win.timeline.flush()
    img = _grab(win.timeline)
    x, y = _to_pixel(win.timeline, n - 1, values[n - 1])
    assert _near(img, x, y, PRIMARY), f"nothing drawn at frame {n - 1} (Dice {values[n - 1]:.3f})"


def test_empty_axis_dice_one_inside_the_plot_and_the_caption_off_the_curve(qtbot, make_window, tmp_path):
    win = make_window()
    tl = win.timeline
    vb = tl.plot_widget().getPlotItem().vb
    assert vb.viewRange()[0] == pytest.approx([0.0, 1.0])  # no source: 0..1, not -0.5..0.5
    _open(qtbot, win, _folder(tmp_path))
    assert vb.viewRange()[1] == pytest.approx([-0.02, 1.05])
    win.annotation.editor.edits(create=True).replace(win.frames.get(0).gt, "a perfect correction")  # Dice 1.0
    win.refresh_mask(0, None)
    win.rescore(0)
    assert win.metrics_panel.value("dice") == "1.000" and tl.values()[0] == 1.0
    tl.flush()
    img = _grab(tl)
    plot = _view_rect(tl)
    x, y = _to_pixel(tl, 0, 1.0)
    assert y - plot.top() >= 4  # the line at Dice 1 is drawn whole, below the plot's edge
    assert _near(img, x, y, PRIMARY, radius=1)
    for v in (0.0, 1.0):  # the axis labels "0" and "1" are drawn (they were hidden at the edges)
        _, yy = _to_pixel(tl, 0, v)
        label = img[max(0, yy - 6):yy + 7, 2:plot.left() - 6]
        assert (label.max(axis=-1) > 110).sum() >= 4, f"no axis label at {v}"
    # the caption sits above the plot, not over the curve
    assert tl.caption.isVisible() and tl.caption.text().startswith("Dice per frame")
    caption = QRect(tl.caption.mapTo(tl, QPoint(0, 0)), tl.caption.size())
    assert not caption.intersects(plot)
    assert not [i for i in vb.addedItems if isinstance(i, pg.TextItem) and i.toPlainText()]


def test_the_area_curve_has_its_own_scale_on_the_right(qtbot, make_window, tmp_path):
    win = make_window()
    _open(qtbot, win, _folder(tmp_path, masks=False))
    tl = win.timeline
    assert tl.mode() == "area" and "right axis" in tl.caption.text()
    win.overlay_panel.set_threshold(0.99)  # the random network marks (next to) nothing at 0.99
    for i, frac in ((0, 0.02), (1, 0.03)):  # small polyps: 2 % and 3 % of the frame
        win.go_to(i)
        _wait_shown(qtbot, win, i)
        edits = win.annotation.editor.edits(create=True)
        h, w = edits.shape
        side = int(math.sqrt(frac * h * w))
        mask = np.zeros((h, w), bool)
        mask[10:10 + side, 10:10 + side] = True
        edits.replace(mask, "a small polyp")
        win.refresh_mask(i, None)
        win.rescore(i)
    qtbot.waitUntil(lambda: np.isfinite(tl.values()).all(), timeout=TIMEOUT)
    assert np.nanmax(tl.values()) == pytest.approx(0.03, abs=0.002)
    tl.flush()
    right = tl.plot_widget().getPlotItem().getAxis("right")
    assert right.isVisible() and "area %" in right.labelText
    assert 3 <= tl.area_axis_top() <= 10  # fitted to the data, not 0..100 %
    img = _grab(tl)
    plot = _view_rect(tl)
    box = img[plot.top():plot.bottom(), plot.left():plot.right()]
    ys, _ = np.nonzero(np.abs(box - np.asarray(PRIMARY)).max(axis=-1) <= 45)
    assert ys.size and ys.min() < plot.height() / 2  # 3 % of the frame reaches the upper half


# ---- (9) small things ----------------------------------------------------------------------------
def test_play_button_uses_the_styles_media_icons(qtbot, make_window):
    win = make_window()
    _open(qtbot, win, DEMO / "demo_clip.mp4")
    button, style = win.nav.play_button, win.nav.style()

    def shows(pixmap) -> bool:
        want = style.standardIcon(pixmap)
        return not want.isNull() and button.icon().pixmap(16, 16).toImage() == want.pixmap(16, 16).toImage()

    assert button.toolButtonStyle() == Qt.ToolButtonStyle.ToolButtonIconOnly
    assert shows(QStyle.StandardPixmap.SP_MediaPlay)
    _key(qtbot, win, Qt.Key.Key_Space)
    assert win.actions_["play"].isChecked() and shows(QStyle.StandardPixmap.SP_MediaPause)
    _key(qtbot, win, Qt.Key.Key_Space)
    assert not win.actions_["play"].isChecked() and shows(QStyle.StandardPixmap.SP_MediaPlay)


def test_polygon_preview_is_not_the_ground_truths_colour_and_the_threshold_has_a_tooltip(
        qtbot, make_window, tmp_path):
    win = make_window()
    _open(qtbot, win, _folder(tmp_path))
    assert "threshold" in win.overlay_panel.threshold.toolTip().lower()
    _key(qtbot, win, Qt.Key.Key_P)
    editor = win.annotation.editor
    assert editor.tool.name == "polygon"
    vp = win.canvas.viewport()
    for x, y in ((40, 40), (120, 60)):
        qtbot.mouseClick(vp, Qt.MouseButton.LeftButton, pos=win.canvas.mapFromScene(QPointF(x, y)))
    qtbot.mouseMove(vp, win.canvas.mapFromScene(QPointF(100, 140)))
    assert not editor.preview.path().isEmpty() and editor.preview.isVisible()
    line = editor.preview.pen().color()
    gt = QColor(*win.canvas.overlay_style().gt_color)
    hue_gap = abs(line.hsvHue() - gt.hsvHue())
    hue_gap = min(hue_gap, 360 - hue_gap)
    assert line.hsvSaturation() < 40 or hue_gap >= 40, f"preview {line.name()} looks like the ground truth {gt.name()}"


# ---- Help > Keys ----------------------------------------------------------------------------------
def _guide_rows() -> list[tuple[str, str]]:
    text = (ROOT / "docs" / "guide.md").read_text(encoding="utf-8")
    table = text[text.index("<!-- keymap:begin -->"):text.index("<!-- keymap:end -->")]
    rows = []
    for line in table.splitlines():
        cells = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        if len(cells) == 2 and cells[0] not in ("Keys", "---"):
            rows.append((cells[0].strip("`"), cells[1]))
    return rows


def _help_keys(qtbot, win):
    menus = [a for a in win.menuBar().actions() if a.menu() is not None]
    assert menus[-1].text().replace("&", "") == "Help"  # the last menu
    keys = next(a for a in menus[-1].menu().actions() if a.objectName() == "keys")
    _key(qtbot, win, keys.shortcuts()[0][0].key())
    from polypviewer.ui.keys_dialog import KeysDialog

    qtbot.waitUntil(lambda: win.findChild(KeysDialog) is not None and win.findChild(KeysDialog).isVisible(),
                    timeout=5000)
    return win.findChild(KeysDialog)


def test_help_keys_lists_the_current_keymap_from_the_guides_table(qtbot, make_window, config):
    win = make_window()
    dialog = _help_keys(qtbot, win)
    assert dialog.rows() == _guide_rows()  # the guide's table is this same table
    assert ("F1", "Keys") in dialog.rows() and not dialog.problems.isVisible()
    dialog.close()
    win.shutdown()
    save_settings(Settings(keymap={"play": "P", "keys": "F2"}))
    win = make_window()
    _key(qtbot, win, Qt.Key.Key_F2)
    from polypviewer.ui.keys_dialog import KeysDialog

    qtbot.waitUntil(lambda: win.findChild(KeysDialog) is not None, timeout=5000)
    dialog = win.findChild(KeysDialog)
    assert dialog.isVisible()
    rows = {text: keys for keys, text in dialog.rows()}
    assert rows["Play / pause"] == "P" and rows["Keys"] == "F2"  # the user's keymap, not the defaults


# ---- (7) keymap mistakes ----------------------------------------------------------------------------
def test_every_keymap_mistake_is_one_line_in_the_window_and_the_users_key_wins(qtbot, make_window, config):
    save_settings(Settings(keymap={"nope": "X", "fit": "Ctrl+Shfit+F", "brush": "Ctrl+Shift",
                                   "toggle_outline": "V", "eraser": "E; E"}))
    win = make_window()
    lines = [e for e in win.errors if e.startswith("keymap")]
    assert all("\n" not in e for e in lines)
    assert len(lines) == 5, lines
    assert any("unknown action 'nope'" in e for e in lines)
    assert any("'fit'" in e and "Ctrl+Shfit+F" in e for e in lines)
    assert any("'brush'" in e and "modifier keys only" in e for e in lines)
    assert any("'toggle_outline'" in e and "'toggle_overlay'" in e and "bound to both" in e for e in lines)
    assert any("'eraser'" in e and "listed twice" in e for e in lines)
    assert "keymap" in win.statusBar().currentMessage() and "Help > Keys" in win.statusBar().currentMessage()
    # unreadable entries keep the default; the key bound twice goes to the action the user bound it to
    assert win.actions_["fit"].shortcuts() == [QKeySequence("Ctrl+F")]
    assert win.annotation.actions["brush"].shortcuts() == [QKeySequence("B")]
    assert win.actions_["toggle_overlay"].shortcuts() == []
    assert not win.canvas.overlay_style().outline
    _key(qtbot, win, Qt.Key.Key_V)  # Qt fires neither of two actions that share a key
    assert win.canvas.overlay_style().outline and win.canvas.overlay_visible()
    dialog = win.show_keys()
    assert all(e in dialog.problems.text() for e in lines) and dialog.problems.isVisible()


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
    for img, msk in zip(images, masks, strict=True):
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
