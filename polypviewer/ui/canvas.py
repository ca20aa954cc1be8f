"""The frame view: a zoomable, pannable QGraphicsView with a frame layer and a mask overlay.

Scene coordinates are image pixels (the frame sits at (0, 0), scale 1), so what the view
reports and what a tool receives are float image coordinates.

Mouse contract (for the annotation tools of ``polypviewer.ui.tools``):
  * ``canvas.set_tool(handler)`` installs an object with ``press(x, y, event)``,
    ``move(x, y, event)``, ``release(x, y, event)`` and ``hover(x, y)``; optional
    ``wheel(steps, event) -> bool`` (Shift+wheel, return True when consumed, e.g. brush size).
    ``set_tool(None)`` removes it.
  * With a tool, the LEFT and the RIGHT button go to the tool (the tool reads
    ``event.button()``: right inverts it); without one, left-drag pans and the right
    button does nothing. While one button drags, the other is ignored.
  * The MIDDLE button always pans (Space is play/pause, so it is not a pan modifier).
  * The wheel zooms at the cursor (with or without Ctrl).
  * A tool that changed the mask array it was given (the one passed to ``set_layers``)
    calls ``canvas.refresh_overlay((x0, y0, x1, y1))``: only that rectangle is recomputed
    and repainted.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QColor, QImage, QMouseEvent, QPainter, QPixmap, QResizeEvent, QWheelEvent, qRgba
from PySide6.QtWidgets import QGraphicsItem, QGraphicsScene, QGraphicsView, QStyleOptionGraphicsItem, QWidget

from polypviewer.core.overlay import OverlayStyle, Rect, color_table, overlay_codes

MIN_ZOOM, MAX_ZOOM = 0.05, 64.0


class CanvasTool(Protocol):
    """What :meth:`Canvas.set_tool` installs (the mouse contract above; ``ui.tools.Tool`` is
    one). The optional ``wheel(steps, event) -> bool`` and ``cancel()`` are looked up by name."""

    def press(self, x: float, y: float, event: Any = None) -> None: ...
    def move(self, x: float, y: float, event: Any = None) -> None: ...
    def release(self, x: float, y: float, event: Any = None) -> None: ...
    def hover(self, x: float, y: float) -> None: ...


def rgb_to_qimage(frame: np.ndarray) -> QImage:
    """A QImage that owns a copy of an RGB uint8 HxWx3 array."""
    frame = np.ascontiguousarray(frame)
    h, w = frame.shape[:2]
    return QImage(frame.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()


def display_qimage(frame: np.ndarray) -> QImage:
    """A QImage for the frame layer. BGRA (H, W, 4) uint8 (``workers.FrameData.display``) is
    wrapped without a copy as Qt's native RGB32, which the raster engine draws with no
    conversion; RGB (H, W, 3) is converted (slower: do that off the GUI thread)."""
    if frame.ndim == 3 and frame.shape[2] == 4:
        buf = np.ascontiguousarray(frame)
        h, w = buf.shape[:2]
        return _keep(QImage(buf.data, w, h, 4 * w, QImage.Format.Format_RGB32), buf)
    return rgb_to_qimage(frame)


def qt_color_table(style: OverlayStyle) -> list[int]:
    """The overlay's colour table as Qt ARGB values (256 entries, codes 0..3 used)."""
    return [qRgba(*c) for c in color_table(style)] + [0] * 252


def compose_codes(pred: np.ndarray | None, gt_codes: np.ndarray | None, style: OverlayStyle,
                  rect: Rect) -> np.ndarray:
    """Overlay codes for ``rect`` from the prediction and the (cached) ground-truth codes."""
    x0, y0, x1, y1 = rect
    fill = not style.outline or style.disagreement
    if pred is not None and fill and (style.show_pred or style.disagreement) and pred.dtype == np.bool_:
        # the common case in one pass: prediction bits OR the ground-truth codes
        bits = pred[y0:y1, x0:x1].view(np.uint8)
        out: np.ndarray = bits | gt_codes[y0:y1, x0:x1] if gt_codes is not None else bits.copy()
        return out
    if pred is not None:
        codes = overlay_codes(pred, None, style, rect)
    else:
        codes = np.zeros((y1 - y0, x1 - x0), np.uint8)
    if gt_codes is not None:
        codes |= gt_codes[y0:y1, x0:x1]
    return codes


def indexed_image(codes: np.ndarray, table: list[int]) -> QImage:
    """An Indexed8 QImage over ``codes`` (no copy; the array is kept alive with it)."""
    codes = np.ascontiguousarray(codes)
    h, w = codes.shape
    img = QImage(codes.data, w, h, w, QImage.Format.Format_Indexed8)
    img.setColorTable(table)
    return _keep(img, codes)


def render_overlay(pred: np.ndarray | None, gt: np.ndarray | None, style: OverlayStyle) -> QImage | None:
    """The whole overlay as a premultiplied ARGB32 QImage, exactly what the canvas would draw
    for these layers and style. Thread-safe (QImage only): the inference worker renders
    overlays ahead so showing a cached frame converts nothing on the GUI thread."""
    ref = pred if pred is not None else gt
    if ref is None:
        return None
    gt_codes = overlay_codes(None, gt, style) if gt is not None else None
    codes = compose_codes(pred, gt_codes, style, (0, 0, ref.shape[1], ref.shape[0]))
    return indexed_image(codes, qt_color_table(style)).convertToFormat(
        QImage.Format.Format_ARGB32_Premultiplied)


class PixmapLayer(QGraphicsItem):
    """A pixmap the item owns alone, so a dirty rectangle can be painted into it in place
    (a QGraphicsPixmapItem hands out shared copies, and painting into one copies 8 MB)."""

    def __init__(self, z: float) -> None:
        super().__init__()
        self._pm = QPixmap()
        self._image: QImage | None = None
        self.setZValue(z)
        self.setFlag(QGraphicsItem.GraphicsItemFlag.ItemUsesExtendedStyleOption, True)

    def boundingRect(self) -> QRectF:
        return QRectF(0, 0, self._pm.width(), self._pm.height())

    def paint(self, painter: QPainter, option: QStyleOptionGraphicsItem, widget: QWidget | None = None) -> None:
        if self._pm.isNull():
            return
        exposed = option.exposedRect.toAlignedRect().intersected(self._pm.rect())
        painter.drawPixmap(exposed, self._pm, exposed)

    def pixmap(self) -> QPixmap:
        return self._pm

    def set_image(self, image: QImage | None) -> None:
        if image is None:
            self.prepareGeometryChange()
            self._pm = QPixmap()
            self._image = None
            return
        if image.size() != self._pm.size():
            self.prepareGeometryChange()
        # For native formats the raster pixmap can share the image's memory: keep the image
        # (and the numpy buffer tied to it) alive as long as the pixmap.
        self._image = image
        self._pm = QPixmap.fromImage(image)
        self.update()

    def paint_region(self, x0: int, y0: int, image: QImage) -> None:
        painter = QPainter(self._pm)
        painter.setCompositionMode(QPainter.CompositionMode.CompositionMode_Source)
        painter.drawImage(x0, y0, image)
        painter.end()
        self.update(QRectF(x0, y0, image.width(), image.height()))


class Canvas(QGraphicsView):
    """Frame + overlay view. Signals: ``hovered(x, y)`` image pixel under the cursor,
    ``zoom_changed(zoom)``."""

    hovered = Signal(float, float)
    zoom_changed = Signal(float)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setScene(QGraphicsScene(self))
        self.setBackgroundBrush(QColor(18, 18, 20))
        self.setTransformationAnchor(QGraphicsView.ViewportAnchor.AnchorUnderMouse)
        self.setResizeAnchor(QGraphicsView.ViewportAnchor.AnchorViewCenter)
        self.setViewportUpdateMode(QGraphicsView.ViewportUpdateMode.MinimalViewportUpdate)
        self.setMouseTracking(True)
        self.setFrameShape(QGraphicsView.Shape.NoFrame)
        self.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, False)
        self.setAcceptDrops(False)  # the main window takes dropped files
        self._frame_layer = PixmapLayer(0)
        self._overlay_layer = PixmapLayer(1)
        self.scene().addItem(self._frame_layer)
        self.scene().addItem(self._overlay_layer)
        self._size: tuple[int, int] | None = None  # (h, w)
        self._pred: np.ndarray | None = None
        self._gt: np.ndarray | None = None
        self._gt_codes: np.ndarray | None = None  # cached: ground truth never changes per frame
        self._codes: np.ndarray | None = None
        self._style = OverlayStyle()
        self._table: list[int] = []
        self._tool: CanvasTool | None = None
        self._tool_down = False
        self._tool_button = Qt.MouseButton.NoButton  # the button of the drag in progress
        self._pan_from: QPointF | None = None
        self._pan_button = Qt.MouseButton.NoButton
        self._auto_fit = True
        self._update_table()

    # ---- frame -------------------------------------------------------------------------
    def set_frame(self, frame: np.ndarray | None) -> None:
        """Show a frame: RGB (H, W, 3) or, faster, BGRA (H, W, 4) uint8 (see
        :func:`display_qimage`). Zoom and position are kept while the size is the same."""
        if frame is None:
            self._frame_layer.set_image(None)
            self._size = None
            return
        size = frame.shape[:2]
        self._frame_layer.set_image(display_qimage(frame))
        if size != self._size:
            self._size = size
            self.scene().setSceneRect(QRectF(0, 0, size[1], size[0]))
            self._auto_fit = True
            self.fit()

    def image_size(self) -> tuple[int, int] | None:
        """(height, width) of the frame shown, or None."""
        return self._size

    # ---- overlay -----------------------------------------------------------------------
    def set_layers(self, pred: np.ndarray | None, gt: np.ndarray | None,
                   rendered: QImage | None = None) -> None:
        """Masks to draw (bool HxW, frame size). The canvas keeps references, not copies:
        a tool edits ``pred`` in place and calls :meth:`refresh_overlay` with the rect.
        ``rendered``: the overlay already made by :func:`render_overlay` for exactly these
        layers and the current style (the codes are then computed only when needed)."""
        self._pred = pred
        if gt is not self._gt:
            self._gt = gt
            self._gt_codes = None
        if rendered is None:
            self.refresh_overlay()
            return
        ref = pred if pred is not None else gt
        if ref is not None and self._size is not None and ref.shape[:2] != self._size:
            raise ValueError(f"mask size {ref.shape[:2]} does not match the frame {self._size}")
        self._codes = None  # made on the first dirty-rect refresh or overlay_codes() call
        self._overlay_layer.set_image(rendered)

    def layers(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        return self._pred, self._gt

    def set_style(self, style: OverlayStyle) -> None:
        old = self._style
        self._style = style
        geometry = (old.outline, old.outline_px, old.show_pred, old.show_gt, old.disagreement)
        if geometry != (style.outline, style.outline_px, style.show_pred, style.show_gt, style.disagreement):
            self._gt_codes = None
            self._update_table()
            self.refresh_overlay()
        else:  # colours / opacity only: same codes, new colour table
            self._update_table()
            self._repaint_from_codes()

    def overlay_style(self) -> OverlayStyle:
        """The overlay's style (not ``style()``: that is the widget's QStyle)."""
        return self._style

    def set_overlay_visible(self, visible: bool) -> None:
        self._overlay_layer.setVisible(visible)

    def overlay_visible(self) -> bool:
        return self._overlay_layer.isVisible()

    def overlay_codes(self) -> np.ndarray | None:
        """The current code image (bit 0 prediction, bit 1 ground truth)."""
        ref = self._pred if self._pred is not None else self._gt
        if self._codes is None and ref is not None:
            if self._gt is not None and self._gt_codes is None:
                self._gt_codes = overlay_codes(None, self._gt, self._style)
            self._codes = compose_codes(self._pred, self._gt_codes, self._style, (0, 0, ref.shape[1], ref.shape[0]))
        return self._codes

    def overlay_pixmap(self) -> QPixmap:
        return self._overlay_layer.pixmap()

    def refresh_overlay(self, rect: Rect | None = None) -> None:
        """Recompute the overlay for ``rect`` = (x0, y0, x1, y1) in image pixels (None: all).

        ``rect`` bounds the mask pixels that changed; in outline mode the canvas widens it
        by the outline width itself."""
        ref = self._pred if self._pred is not None else self._gt
        if ref is None:
            self._codes = None
            self._overlay_layer.set_image(None)
            return
        if self._size is not None and ref.shape[:2] != self._size:
            raise ValueError(f"mask size {ref.shape[:2]} does not match the frame {self._size}")
        style = self._style
        if self._gt is not None and self._gt_codes is None:
            self._gt_codes = overlay_codes(None, self._gt, style)
        current = self._codes  # None: the whole overlay is made again
        if rect is None or current is None or current.shape != ref.shape[:2]:
            rect, current = (0, 0, ref.shape[1], ref.shape[0]), None
        elif style.outline and not style.disagreement:
            # A changed pixel moves the outline up to outline_px pixels around it.
            m = style.outline_px + 1
            rect = (rect[0] - m, rect[1] - m, rect[2] + m, rect[3] + m)
        x0, y0, x1, y1 = (max(0, int(rect[0])), max(0, int(rect[1])),
                          min(ref.shape[1], int(np.ceil(rect[2]))), min(ref.shape[0], int(np.ceil(rect[3]))))
        if x1 <= x0 or y1 <= y0:
            return
        codes = compose_codes(self._pred, self._gt_codes, style, (x0, y0, x1, y1))
        if current is None:
            self._codes = codes
            self._overlay_layer.set_image(self._indexed(codes))
        else:
            current[y0:y1, x0:x1] = codes
            self._overlay_layer.paint_region(x0, y0, self._indexed(codes))

    def _update_table(self) -> None:
        self._table = qt_color_table(self._style)

    def _indexed(self, codes: np.ndarray) -> QImage:
        return indexed_image(codes, self._table)

    def _repaint_from_codes(self) -> None:
        codes = self.overlay_codes()
        if codes is not None:
            self._overlay_layer.set_image(self._indexed(codes))

    # ---- zoom / pan --------------------------------------------------------------------
    def zoom(self) -> float:
        return float(self.transform().m11())

    def fit(self) -> None:
        """Fit the whole frame in the view (Ctrl+F)."""
        if self._size is None:
            return
        self._auto_fit = True
        self.fitInView(self.sceneRect(), Qt.AspectRatioMode.KeepAspectRatio)
        self.zoom_changed.emit(self.zoom())

    def actual_size(self) -> None:
        """1:1, one image pixel per screen pixel (Ctrl+0)."""
        self._auto_fit = False
        self.resetTransform()
        self.zoom_changed.emit(1.0)

    def zoom_by(self, factor: float, anchor: QPointF | None = None) -> None:
        """Multiply the zoom by ``factor``; keeps the scene point under ``anchor`` (view
        coordinates) fixed, the view centre when None."""
        z = self.zoom()
        factor = min(max(z * factor, MIN_ZOOM), MAX_ZOOM) / z
        if factor == 1.0:
            return
        self._auto_fit = False
        if anchor is None:
            self.scale(factor, factor)
        else:
            before = self.mapToScene(anchor.toPoint())
            self.scale(factor, factor)
            after = self.mapToScene(anchor.toPoint())
            delta = after - before
            self.translate(delta.x(), delta.y())
            # translate() has no effect when the scene is smaller than the view on an axis;
            # scroll bars do the rest.
            moved = self.mapToScene(anchor.toPoint()) - before
            hs, vs = self.horizontalScrollBar(), self.verticalScrollBar()
            hs.setValue(hs.value() - round(moved.x() * self.zoom()))
            vs.setValue(vs.value() - round(moved.y() * self.zoom()))
        self.zoom_changed.emit(self.zoom())

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        if self._auto_fit:
            self.fit()

    def wheelEvent(self, event: QWheelEvent) -> None:
        steps = event.angleDelta().y() / 120.0
        if event.modifiers() & Qt.KeyboardModifier.ShiftModifier and self._tool is not None:
            wheel = getattr(self._tool, "wheel", None)
            if wheel is not None and wheel(steps, event):
                event.accept()
                return
        if steps:
            self.zoom_by(1.25 ** steps, event.position())
        event.accept()

    # ---- tools -------------------------------------------------------------------------
    def set_tool(self, handler: CanvasTool | None) -> None:
        """Install (or remove with None) the tool that receives left-button events."""
        cancel = getattr(self._tool, "cancel", None)
        if self._tool_down and cancel is not None:
            cancel()  # a drag in progress never ends half-applied in another tool
        self._tool = handler
        self._tool_down = False
        self._tool_button = Qt.MouseButton.NoButton
        self.viewport().setCursor(Qt.CursorShape.CrossCursor if handler else Qt.CursorShape.ArrowCursor)

    def tool(self) -> CanvasTool | None:
        return self._tool

    def image_pos(self, view_pos: QPointF) -> tuple[float, float]:
        """Image pixel coordinates (float) of a point in view coordinates."""
        p = self.mapToScene(view_pos.toPoint())
        return float(p.x()), float(p.y())

    def mousePressEvent(self, event: QMouseEvent) -> None:
        button = event.button()
        if button == Qt.MouseButton.MiddleButton or (button == Qt.MouseButton.LeftButton and self._tool is None):
            if self._pan_from is None:
                self._pan_from, self._pan_button = event.position(), button
                self.viewport().setCursor(Qt.CursorShape.ClosedHandCursor)
            event.accept()
            return
        if button in (Qt.MouseButton.LeftButton, Qt.MouseButton.RightButton) and self._tool is not None:
            if not self._tool_down and self._pan_from is None:
                self._tool_down, self._tool_button = True, button
                self._tool.press(*self.image_pos(event.position()), event)
            event.accept()
            return
        if button == Qt.MouseButton.RightButton:
            event.accept()  # no tool (navigate): the right button does nothing
            return
        super().mousePressEvent(event)

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        x, y = self.image_pos(event.position())
        if self._pan_from is not None:
            delta = event.position() - self._pan_from
            self._pan_from = event.position()
            self._auto_fit = False
            hs, vs = self.horizontalScrollBar(), self.verticalScrollBar()
            hs.setValue(hs.value() - round(delta.x()))
            vs.setValue(vs.value() - round(delta.y()))
        elif self._tool is not None:
            if self._tool_down:
                self._tool.move(x, y, event)
            else:
                self._tool.hover(x, y)
        self.hovered.emit(x, y)
        event.accept()

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        if self._pan_from is not None and event.button() == self._pan_button:
            self._pan_from, self._pan_button = None, Qt.MouseButton.NoButton
            self.viewport().setCursor(Qt.CursorShape.CrossCursor if self._tool else Qt.CursorShape.ArrowCursor)
        elif self._tool is not None and self._tool_down and event.button() == self._tool_button:
            self._tool_down, self._tool_button = False, Qt.MouseButton.NoButton
            self._tool.release(*self.image_pos(event.position()), event)
        event.accept()


def _keep(img: QImage, buf: np.ndarray) -> QImage:
    """Tie ``buf``'s lifetime to a QImage that wraps its memory without copying."""
    img._buf = buf  # type: ignore[attr-defined]
    return img
