"""Canvas: frame + overlay layers, dirty-rect refresh, zoom at the cursor, pan, tool events
in image coordinates."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import QPoint, QPointF, Qt
from PySide6.QtGui import QImage

from polypviewer.core.overlay import GT, PRED, OverlayStyle
from polypviewer.ui.canvas import Canvas


@pytest.fixture
def canvas(qtbot):
    c = Canvas()
    c.resize(400, 300)
    qtbot.addWidget(c)
    c.show()
    qtbot.waitExposed(c)
    return c


def _frame(h=120, w=160):
    f = np.zeros((h, w, 3), np.uint8)
    f[..., 0] = np.arange(w, dtype=np.uint8)[None, :]
    f[..., 1] = 80
    return f


def _pixel(pm, x, y):
    c = pm.toImage().convertToFormat(QImage.Format.Format_ARGB32).pixelColor(x, y)
    return c.red(), c.green(), c.blue(), c.alpha()


def test_frame_and_overlay_pixels(canvas):
    canvas.set_frame(_frame())
    assert canvas.image_size() == (120, 160)
    pred = np.zeros((120, 160), bool)
    pred[10:50, 20:60] = True
    gt = np.zeros((120, 160), bool)
    gt[30:70, 40:80] = True
    style = OverlayStyle(pred_color=(0, 0, 255), pred_opacity=1.0, gt_color=(255, 0, 0), gt_opacity=1.0)
    canvas.set_style(style)
    canvas.set_layers(pred, gt)
    codes = canvas.overlay_codes()
    assert codes[15, 25] == PRED and codes[65, 75] == GT and codes[0, 0] == 0
    pm = canvas.overlay_pixmap()
    assert _pixel(pm, 25, 15) == (0, 0, 255, 255)
    assert _pixel(pm, 75, 65) == (255, 0, 0, 255)
    assert _pixel(pm, 0, 0)[3] == 0
    # opacity only: codes kept, colour table changed
    canvas.set_style(style.with_(pred_opacity=0.0))
    assert canvas.overlay_codes() is codes
    assert _pixel(canvas.overlay_pixmap(), 25, 15)[3] == 0


def test_refresh_rect_equals_full_recompute(canvas):
    canvas.set_frame(_frame())
    pred = np.zeros((120, 160), bool)
    canvas.set_layers(pred, None)
    pred[40:60, 50:90] = True  # a "brush stroke" in place
    canvas.refresh_overlay((45, 35, 95, 65))
    partial = canvas.overlay_codes().copy()
    img_partial = canvas.overlay_pixmap().toImage()
    canvas.refresh_overlay(None)
    np.testing.assert_array_equal(partial, canvas.overlay_codes())
    assert img_partial == canvas.overlay_pixmap().toImage()
    # outline mode: the erosion needs context outside the rect; still identical
    canvas.set_style(OverlayStyle(outline=True, outline_px=3))
    pred[60:70, 50:90] = True
    canvas.refresh_overlay((50, 60, 90, 70))  # exactly the changed pixels
    partial = canvas.overlay_codes().copy()
    canvas.refresh_overlay(None)
    np.testing.assert_array_equal(partial, canvas.overlay_codes())


def test_mask_of_wrong_size_is_refused(canvas):
    canvas.set_frame(_frame())
    with pytest.raises(ValueError, match="does not match"):
        canvas.set_layers(np.zeros((10, 10), bool), None)


def test_zoom_keeps_point_under_cursor_fit_and_actual_size(canvas):
    canvas.set_frame(_frame(600, 800))
    fit_zoom = canvas.zoom()
    assert fit_zoom < 1.0
    anchor = QPointF(120, 90)
    before = canvas.image_pos(anchor)
    canvas.zoom_by(2.0, anchor)
    assert canvas.zoom() == pytest.approx(fit_zoom * 2)
    after = canvas.image_pos(anchor)
    assert after == pytest.approx(before, abs=2.0 / canvas.zoom() + 0.5)
    canvas.actual_size()
    assert canvas.zoom() == 1.0
    canvas.fit()
    assert canvas.zoom() == pytest.approx(fit_zoom)
    canvas.zoom_by(1e6)
    assert canvas.zoom() == pytest.approx(64.0)


def test_wheel_zooms(canvas, qtbot):
    canvas.set_frame(_frame(600, 800))
    z = canvas.zoom()
    from PySide6.QtGui import QWheelEvent

    ev = QWheelEvent(QPointF(200, 150), canvas.viewport().mapToGlobal(QPointF(200, 150)), QPoint(0, 0),
                     QPoint(0, 120), Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier,
                     Qt.ScrollPhase.NoScrollPhase, False)
    canvas.wheelEvent(ev)
    assert canvas.zoom() == pytest.approx(z * 1.25)


class Recorder:
    def __init__(self):
        self.events = []

    def press(self, x, y, event):
        self.events.append(("press", x, y))

    def move(self, x, y, event):
        self.events.append(("move", x, y))

    def release(self, x, y, event):
        self.events.append(("release", x, y))

    def hover(self, x, y):
        self.events.append(("hover", x, y))


def test_tool_gets_image_coordinates_and_left_drag_pans_without_tool(canvas, qtbot):
    canvas.set_frame(_frame(600, 800))
    canvas.actual_size()
    tool = Recorder()
    canvas.set_tool(tool)
    vp = canvas.viewport()
    p0 = QPoint(50, 40)
    expected = canvas.image_pos(QPointF(p0))
    qtbot.mousePress(vp, Qt.MouseButton.LeftButton, pos=p0)
    qtbot.mouseMove(vp, QPoint(70, 40))
    qtbot.mouseRelease(vp, Qt.MouseButton.LeftButton, pos=QPoint(70, 40))
    kinds = [e[0] for e in tool.events]
    assert kinds[0] == "press" and kinds[-1] == "release" and "move" in kinds
    assert tool.events[0][1:] == pytest.approx(expected)
    assert tool.events[-1][1] - tool.events[0][1] == pytest.approx(20.0)  # 1:1 zoom
    # middle button pans even with a tool; the tool sees nothing
    n = len(tool.events)
    h = canvas.horizontalScrollBar().value()
    qtbot.mousePress(vp, Qt.MouseButton.MiddleButton, pos=QPoint(200, 100))
    qtbot.mouseMove(vp, QPoint(150, 100))
    qtbot.mouseRelease(vp, Qt.MouseButton.MiddleButton, pos=QPoint(150, 100))
    assert canvas.horizontalScrollBar().value() == h + 50
    assert all(e[0] == "hover" for e in tool.events[n:])
    # no tool: left-drag pans
    canvas.set_tool(None)
    h = canvas.horizontalScrollBar().value()
    qtbot.mousePress(vp, Qt.MouseButton.LeftButton, pos=QPoint(200, 100))
    qtbot.mouseMove(vp, QPoint(230, 100))
    qtbot.mouseRelease(vp, Qt.MouseButton.LeftButton, pos=QPoint(230, 100))
    assert canvas.horizontalScrollBar().value() == h - 30


def test_overlay_rendered_off_the_gui_thread_is_identical(canvas):
    from polypviewer.ui.canvas import render_overlay

    canvas.set_frame(_frame())
    pred = np.zeros((120, 160), bool)
    pred[10:50, 20:60] = True
    gt = np.zeros((120, 160), bool)
    gt[30:70, 40:80] = True
    for style in (OverlayStyle(), OverlayStyle(outline=True), OverlayStyle(disagreement=True),
                  OverlayStyle(show_gt=False, pred_opacity=0.8)):
        canvas.set_style(style)
        canvas.set_layers(pred, gt)
        own = canvas.overlay_pixmap().toImage()
        codes = canvas.overlay_codes().copy()
        canvas.set_layers(pred, gt, render_overlay(pred, gt, style))
        assert canvas.overlay_pixmap().toImage() == own
        np.testing.assert_array_equal(canvas.overlay_codes(), codes)  # made lazily, same
        # an edit after a pre-rendered overlay refreshes correctly
        pred[60:64, 0:10] = True
        canvas.refresh_overlay((0, 60, 10, 64))
        assert canvas.overlay_codes()[61, 5] & 1
        pred[60:64, 0:10] = False
