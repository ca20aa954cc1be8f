"""Per-frame strip under the frame slider (pyqtgraph): Dice per frame against the ground
truth, or without ground truth the predicted polyp area (% of the frame, on its own scale at
the right) and the mean confidence inside it (0..1, at the left). Click to jump; the worst
frames are marked and reachable by key. A third, dotted curve is the model's per-frame
uncertainty (``engine.uncertainty``, 0..1 on the left axis), drawn in both modes."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget

WORST_FRACTION = 0.1  # the worst 10 % of the scored frames are "worst" (at least one)
Y_RANGE = (-0.02, 1.05)  # Dice / confidence: 0 and 1 drawn whole, inside the plot
EMPTY_X_RANGE = (0.0, 1.0)  # no source: a plain 0..1 axis, not pyqtgraph's -0.5..0.5
AREA_TOPS = (1, 2, 5, 10, 20, 50, 100)  # the area axis ends at the first of these (%) above the data
PRIMARY_COLOR = (0, 200, 255)
SECONDARY_COLOR = (255, 210, 0)
UNCERTAINTY_COLOR = (255, 90, 200)
UNCERTAINTY_CAPTION = "; uncertainty (magenta, dotted; J: most uncertain unreviewed frame)"
CAPTIONS = {"dice": "Dice per frame",
            "area": "polyp area, % of the frame (blue, right axis) and mean confidence "
                    "(amber, left axis) per frame"}


def _isolated(values: np.ndarray) -> np.ndarray:
    """Indices of finite values whose neighbours are both missing: a line through finite
    neighbours never draws them, so they get a symbol."""
    ok = np.isfinite(values)
    prev = np.concatenate(([False], ok[:-1]))
    nxt = np.concatenate((ok[1:], [False]))
    return np.flatnonzero(ok & ~prev & ~nxt)


class Timeline(QWidget):
    """``set_length(n)``, ``set_value(i, primary, secondary=nan)``, ``set_current(i)``;
    signal ``frame_clicked(int)``. ``primary`` is Dice (0..1) or area (0..1 of the frame),
    ``secondary`` the mean confidence (area mode only)."""

    frame_clicked = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._n = 0
        self._primary = np.zeros(0, np.float64)
        self._secondary = np.zeros(0, np.float64)
        self._mode = "dice"
        self._area_top = float(AREA_TOPS[-1])
        # Values arrive with every prediction; redraw at most every 100 ms so a playing
        # video does not repaint the plot on the GUI thread for each frame.
        self._redraw_timer = QTimer(self, singleShot=True, interval=100)
        self._redraw_timer.timeout.connect(self._redraw)
        self._plot = pg.PlotWidget(background=(24, 24, 27))
        self._plot.setObjectName("timeline")
        self._plot.setMenuEnabled(False)
        self._plot.setMouseEnabled(x=False, y=False)
        self._plot.hideButtons()
        self._plot.setYRange(*Y_RANGE, padding=0)
        item = self._plot.getPlotItem()
        # Room above and below the axes for the "1" and "0" labels, which are drawn in full
        # (a grid would clip them to the plot, so faint lines at 0, .5 and 1 stand in for it).
        item.setContentsMargins(0, 6, 0, 4)
        for y in (0.0, 0.5, 1.0):
            self._plot.addItem(pg.InfiniteLine(y, angle=0, pen=pg.mkPen((255, 255, 255, 38), width=1)))
        item.getAxis("left").setWidth(34)
        item.getAxis("left").setTicks([[(0, "0"), (0.5, ".5"), (1, "1")]])
        for side in ("left", "right"):  # "0" and "1" sit at the ends: draw them, not hide them
            item.getAxis(side).setStyle(hideOverlappingLabels=False)
        # The area's own scale: a second view box sharing the frame axis, read on the right.
        self._area_vb = pg.ViewBox(enableMouse=False, enableMenu=False)
        self._area_vb.setXLink(item.vb)
        self._area_vb.setYRange(0, self._area_top * Y_RANGE[1], padding=0)
        item.scene().addItem(self._area_vb)
        item.getAxis("right").linkToView(self._area_vb)
        item.getAxis("right").setWidth(38)
        item.vb.sigResized.connect(self._sync_area_view)
        self._curve = pg.PlotDataItem([], [], pen=pg.mkPen(PRIMARY_COLOR, width=1.5), connect="finite")
        self._curve2 = self._plot.plot([], [], pen=pg.mkPen(SECONDARY_COLOR, width=1, style=Qt.PenStyle.DashLine),
                                       connect="finite")
        # A frame whose neighbours have no value is a point, not a line: drawn as a symbol.
        self._dots = pg.ScatterPlotItem(size=5, brush=pg.mkBrush(*PRIMARY_COLOR), pen=None)
        self._dots2 = pg.ScatterPlotItem(size=5, brush=pg.mkBrush(*SECONDARY_COLOR), pen=None)
        self._plot.addItem(self._curve)
        self._plot.addItem(self._dots)
        self._plot.addItem(self._dots2)
        # The model's uncertainty per frame, on the 0..1 axis (kept apart from the scores: it
        # belongs to the model version, not to the threshold or the shown mask).
        self._uncertainty = np.zeros(0, np.float64)
        self._curve_u = self._plot.plot([], [], pen=pg.mkPen(UNCERTAINTY_COLOR, width=1, style=Qt.PenStyle.DotLine),
                                        connect="finite")
        self._curve_u.setObjectName("uncertainty")
        self._dots_u = pg.ScatterPlotItem(size=4, brush=pg.mkBrush(*UNCERTAINTY_COLOR), pen=None)
        self._plot.addItem(self._dots_u)
        self._worst = pg.ScatterPlotItem(size=7, brush=pg.mkBrush(255, 70, 70), pen=None)
        self._plot.addItem(self._worst)
        self._cursor = pg.InfiniteLine(0, angle=90, pen=pg.mkPen((240, 240, 240), width=1))
        self._plot.addItem(self._cursor)
        # The caption sits above the plot, never over the curve.
        self.caption = QLabel("")
        self.caption.setObjectName("timelineCaption")
        self.caption.setStyleSheet("color: rgb(170, 170, 170); background: rgb(24, 24, 27); "
                                   "font-size: 8pt; padding-left: 36px;")
        self._plot.scene().sigMouseClicked.connect(self._clicked)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        layout.addWidget(self.caption)
        layout.addWidget(self._plot, 1)
        self.setMinimumHeight(90)
        self.setMaximumHeight(170)
        self.set_length(0)

    # ---- data --------------------------------------------------------------------------
    def set_length(self, n: int, mode: str = "dice") -> None:
        """Reset for a source of ``n`` frames; ``mode`` is "dice" or "area"."""
        self._n = n
        self._mode = mode
        self._primary = np.full(n, np.nan)
        self._secondary = np.full(n, np.nan)
        self._uncertainty = np.full(n, np.nan)
        if n > 0:
            self._plot.setXRange(-0.5, n - 0.5, padding=0)
        else:
            self._plot.setXRange(*EMPTY_X_RANGE, padding=0)
        self._cursor.setVisible(n > 0)
        self.caption.setText(CAPTIONS[mode] + UNCERTAINTY_CAPTION if n > 0 else "per-frame scores (open a source)")
        area = mode == "area"
        item = self._plot.getPlotItem()
        item.showAxis("right", area)
        if area:
            item.getAxis("right").setLabel("area %")
            item.getAxis("left").setLabel("conf.")
        else:
            item.getAxis("left").setLabel(None)
        self._move_primary(self._area_vb if area else item.vb)
        self._redraw()

    def _move_primary(self, view: pg.ViewBox) -> None:
        """Put the primary curve (and its points) on ``view``: the area's own box, or the 0..1 one."""
        for it in (self._curve, self._dots):
            if it.getViewBox() is not view:
                if it.getViewBox() is not None:
                    it.getViewBox().removeItem(it)
                view.addItem(it)
        self._sync_area_view()

    def _sync_area_view(self) -> None:
        vb = self._plot.getPlotItem().vb
        self._area_vb.setGeometry(vb.sceneBoundingRect())
        self._area_vb.linkedViewChanged(vb, self._area_vb.XAxis)

    def mode(self) -> str:
        return self._mode

    def clear_values(self) -> None:
        self._primary[:] = np.nan
        self._secondary[:] = np.nan
        self._redraw()

    def set_value(self, index: int, primary: float, secondary: float = math.nan) -> None:
        if 0 <= index < self._n:
            self._primary[index] = primary
            self._secondary[index] = secondary
            if not self._redraw_timer.isActive():
                self._redraw_timer.start()

    def set_uncertainty(self, index: int, value: float) -> None:
        """The model's uncertainty of frame ``index`` (0 = sure; NaN = unknown)."""
        if 0 <= index < self._n:
            self._uncertainty[index] = value
            if not self._redraw_timer.isActive():
                self._redraw_timer.start()

    def clear_uncertainty(self) -> None:
        """Another model version: its frames' uncertainty is not known yet."""
        self._uncertainty[:] = np.nan
        self._redraw()

    def uncertainty(self) -> np.ndarray:
        out: np.ndarray = self._uncertainty.copy()
        return out

    def flush(self) -> None:
        """Draw pending values now (they are otherwise drawn at most every 100 ms)."""
        self._redraw_timer.stop()
        self._redraw()

    def values(self) -> np.ndarray:
        out: np.ndarray = self._primary.copy()
        return out

    def set_current(self, index: int) -> None:
        self._cursor.setValue(index)

    def plot_widget(self) -> pg.PlotWidget:
        """The plot, for layers drawn by others (annotation: review-state markers)."""
        return self._plot

    def area_axis_top(self) -> float:
        """Top of the area scale (right axis) in % of the frame."""
        return self._area_top

    # ---- worst frames ------------------------------------------------------------------
    def badness(self) -> np.ndarray:
        """Higher is worse; NaN for frames without a value. Dice: 1 - Dice. Without ground
        truth: the least confident predictions (1 - mean confidence inside the polyp)."""
        if self._mode == "dice":
            return 1.0 - self._primary
        return 1.0 - self._secondary

    def worst_frames(self) -> np.ndarray:
        """The worst ``WORST_FRACTION`` of the scored frames (at least one), keeping only
        those strictly worse than the median frame (a uniform source has none)."""
        bad = self.badness()
        scored = np.flatnonzero(~np.isnan(bad))
        if scored.size == 0:
            return scored
        k = max(1, int(math.ceil(WORST_FRACTION * scored.size)))
        worst = scored[np.argsort(-bad[scored], kind="stable")][:k]
        worst = worst[bad[worst] > np.median(bad[scored])]
        return np.sort(worst)

    def next_worst(self, current: int, step: int = 1) -> int | None:
        """The next (step=1) or previous (step=-1) worst frame after ``current``, wrapping."""
        worst = self.worst_frames()
        if worst.size == 0:
            return None
        if step > 0:
            after = worst[worst > current]
            return int(after[0]) if after.size else int(worst[0])
        before = worst[worst < current]
        return int(before[-1]) if before.size else int(worst[-1])

    # ---- drawing -----------------------------------------------------------------------
    def _redraw(self) -> None:
        x = np.arange(self._n, dtype=np.float64)
        area = self._mode == "area"
        primary = self._primary * 100.0 if area else self._primary  # area: % on its own axis
        if area:
            finite = primary[np.isfinite(primary)]
            peak = float(finite.max()) if finite.size else 0.0
            self._area_top = float(next((t for t in AREA_TOPS if peak <= t), AREA_TOPS[-1]))
            self._area_vb.setYRange(self._area_top * Y_RANGE[0], self._area_top * Y_RANGE[1], padding=0)
        self._curve.setData(x, primary)
        lone = _isolated(primary)
        self._dots.setData(lone.astype(float), primary[lone])
        secondary = self._secondary if area else np.full(self._n, np.nan)
        self._curve2.setData(x, secondary)
        lone2 = _isolated(secondary)
        self._dots2.setData(lone2.astype(float), secondary[lone2])
        self._curve_u.setData(x, self._uncertainty)
        lone_u = _isolated(self._uncertainty)
        self._dots_u.setData(lone_u.astype(float), self._uncertainty[lone_u])
        worst = self.worst_frames()
        self._worst.setData(worst.astype(float), self._primary[worst] if self._mode == "dice"
                            else self._secondary[worst])

    def _clicked(self, event: Any) -> None:  # a pyqtgraph MouseClickEvent (pyqtgraph is untyped)
        if self._n == 0 or event.button() != Qt.MouseButton.LeftButton:
            return
        pos = self._plot.getPlotItem().vb.mapSceneToView(event.scenePos())
        index = int(round(pos.x()))
        self.frame_clicked.emit(min(max(index, 0), self._n - 1))
