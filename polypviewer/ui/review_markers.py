"""The review states on the timeline: a coloured square per reviewed frame, under the curve."""

from __future__ import annotations

import pyqtgraph as pg

from polypviewer.core.edits import EditSession, ReviewState

__all__ = ["STATE_COLORS", "ReviewMarkers"]

STATE_COLORS: dict[ReviewState, tuple[int, int, int]] = {
    ReviewState.ACCEPTED: (60, 200, 90), ReviewState.CORRECTED: (200, 90, 255),
    ReviewState.FLAGGED: (255, 150, 0), ReviewState.PROPAGATED: (90, 170, 255)}


class ReviewMarkers(pg.ScatterPlotItem):
    """Add to the timeline (``host.add_timeline_item``); :meth:`show_states` redraws them."""

    Y = 0.03  # near the bottom of the strip's 0..1 scale

    def __init__(self) -> None:
        super().__init__(size=6, pen=None, symbol="s")

    def show_states(self, session: EditSession) -> None:
        xs, brushes = [], []
        for f, state in sorted(session.states.items()):
            if state in STATE_COLORS:
                xs.append(float(f))
                brushes.append(pg.mkBrush(*STATE_COLORS[state]))
        self.setData(xs, [self.Y] * len(xs), brush=brushes)
