"""Per-frame strip under the frame slider (pyqtgraph): Dice per frame against the ground
truth, or without ground truth the predicted polyp area (% of the frame) and the mean
confidence inside it. Click to jump; the worst frames are marked and reachable by key."""

from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import QVBoxLayout, QWidget

WORST_FRACTION = 0.1  # the worst 10 % of the scored frames are "worst" (at least one)


class Timeline(QWidget):
    """``set_length(n)``, ``set_value(i, primary, secondary=nan)``, ``set_current(i)``;
    signal ``frame_clicked(int)``. ``primary`` is Dice (0..1) or area (0..1 of the frame),
    ``secondary`` the mean confidence (area mode only)."""

    frame_clicked = Signal(int)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self._n = 0
        self._primary = np.zeros(0, np.float64)
        self._secondary = np.zeros(0, np.float64)
        self._mode = "dice"
        # Values arrive with every prediction; redraw at most every 100 ms so a playing
        # video does not repaint the plot on the GUI thread for each frame.
        self._redraw_timer = QTimer(self, singleShot=True, interval=100, timeout=self._redraw)
        self._plot = pg.PlotWidget(background=(24, 24, 27))
        self._plot.setObjectName("timeline")
        self._plot.setMenuEnabled(False)
        self._plot.setMouseEnabled(x=False, y=False)
        self._plot.hideButtons()
        self._plot.setYRange(0, 1, padding=0.02)
        self._plot.showGrid(x=False, y=True, alpha=0.15)
        item = self._plot.getPlotItem()
        item.setContentsMargins(0, 0, 0, 0)
        item.getAxis("left").setWidth(34)
        item.getAxis("left").setTicks([[(0, "0"), (0.5, ".5"), (1, "1")]])
        self._curve = self._plot.plot([], [], pen=pg.mkPen((0, 200, 255), width=1.5),
                                      connect="finite")
        self._curve2 = self._plot.plot([], [], pen=pg.mkPen((255, 210, 0), width=1, style=Qt.PenStyle.DashLine),
                                       connect="finite")
        self._worst = pg.ScatterPlotItem(size=7, brush=pg.mkBrush(255, 70, 70), pen=None)
        self._plot.addItem(self._worst)
        self._cursor = pg.InfiniteLine(0, angle=90, pen=pg.mkPen((240, 240, 240), width=1))
        self._plot.addItem(self._cursor)
        self._label = pg.TextItem("", color=(170, 170, 170), anchor=(0, 0))
        self._plot.addItem(self._label, ignoreBounds=True)
        self._label.setPos(0, 1)
        self._plot.scene().sigMouseClicked.connect(self._clicked)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self._plot)
        self.setMinimumHeight(90)
        self.setMaximumHeight(170)

    # ---- data --------------------------------------------------------------------------
    def set_length(self, n: int, mode: str = "dice") -> None:
        """Reset for a source of ``n`` frames; ``mode`` is "dice" or "area"."""
        self._n = n
        self._mode = mode
        self._primary = np.full(n, np.nan)
        self._secondary = np.full(n, np.nan)
        self._plot.setXRange(-0.5, max(n - 0.5, 0.5), padding=0)
        self._label.setText("Dice per frame" if mode == "dice" else
                            "polyp area (blue) and mean confidence (amber) per frame")
        self._redraw()

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

    def flush(self) -> None:
        """Draw pending values now (they are otherwise drawn at most every 100 ms)."""
        self._redraw_timer.stop()
        self._redraw()

    def values(self) -> np.ndarray:
        return self._primary.copy()

    def set_current(self, index: int) -> None:
        self._cursor.setValue(index)

    def plot_widget(self) -> pg.PlotWidget:
        """The plot, for layers drawn by others (annotation: review-state markers)."""
        return self._plot

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
        self._curve.setData(x, np.nan_to_num(self._primary, nan=np.nan))
        self._curve2.setData(x, self._secondary if self._mode == "area" else np.full(self._n, np.nan))
        worst = self.worst_frames()
        self._worst.setData(worst.astype(float), self._primary[worst] if self._mode == "dice"
                            else self._secondary[worst])

    def _clicked(self, event) -> None:
        if self._n == 0 or event.button() != Qt.MouseButton.LeftButton:
            return
        pos = self._plot.getPlotItem().vb.mapSceneToView(event.scenePos())
        index = int(round(pos.x()))
        self.frame_clicked.emit(min(max(index, 0), self._n - 1))
