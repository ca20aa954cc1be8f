"""Playback at the source's frame rate that drops frames whose prediction is late.

``PlaybackClock`` is the arithmetic (where the playhead is, which ready frame to show);
``Player`` drives it from a QTimer on the GUI thread and asks the prediction service for
the frames ahead of the playhead, strided to the measured inference rate.
"""

from __future__ import annotations

import time

import numpy as np
from PySide6.QtCore import QObject, Qt, QTimer


class PlaybackClock:
    """Where playback should be now, and which ready frame to show.

    The playhead advances with the wall clock at the source's fps. Each tick shows the
    newest frame up to the playhead that is ready (decoded and predicted); frames skipped
    over are counted as dropped, so late predictions never stall the video. When the
    measured inference rate is below the source's fps, only every ``stride``-th frame is
    predicted, so the pipeline keeps up with the playhead.
    """

    def __init__(self) -> None:
        self.start(0, 10.0, None)

    def start(self, index: int, fps: float, infer_fps: float | None) -> None:
        self.i0 = int(index)
        self.fps = float(fps) if fps and fps > 0 else 10.0
        self.t0 = time.perf_counter()
        self.dropped = 0
        self.shown = 0
        self.stride = 1 if not infer_fps else max(1, int(np.ceil(self.fps / max(infer_fps, 1e-3))))

    def target(self, now: float) -> int:
        return self.i0 + int((now - self.t0) * self.fps)

    def pick(self, current: int, target: int, ready) -> int | None:
        """The newest ``j`` in (current, target] with ``ready(j)``; counts the frames dropped."""
        for j in range(target, current, -1):
            if ready(j):
                self.dropped += j - current - 1
                self.shown += 1
                return j
        return None


class Player(QObject):
    """Plays ``window`` (a MainWindow): ``start()``, ``stop()``, ``active()``."""

    def __init__(self, window) -> None:
        super().__init__(window)
        self.window = window
        self.clock = PlaybackClock()
        self.timer = QTimer(self)
        self.timer.setTimerType(Qt.TimerType.PreciseTimer)
        self.timer.timeout.connect(self._tick)

    def active(self) -> bool:
        return self.timer.isActive()

    def start(self) -> bool:
        w = self.window
        if not w.source:
            return False
        if w.index >= w.n - 1:
            w.go_to(0, playing=True)
        fps = float(w.source.get("fps") or 10.0)
        self.clock.start(w.index, fps, w.predictions.meter.fps())
        self.timer.start(max(4, int(500 / fps)))  # two ticks per frame
        return True

    def stop(self) -> None:
        self.timer.stop()

    def ready(self, index: int) -> bool:
        """Decoded, and predicted when a model is loaded."""
        w = self.window
        if w.frames.get(index) is None:
            return False
        return w.predictions.info is None or w.predictions.cached(index) is not None

    def _tick(self) -> None:
        w = self.window
        n = w.n
        target = min(self.clock.target(time.perf_counter()), n - 1)
        shown = self.clock.pick(w.index, target, self.ready)
        if shown is not None:
            w.go_to(shown, playing=True)
        ahead = list(range(target + 1, n, self.clock.stride))[:64]
        if ahead and ahead[-1] != n - 1 and len(ahead) < 64:
            ahead.append(n - 1)  # the last frame is always shown
        if w.predictions.info is not None:
            w.predictions.request(ahead, behind=int(2 * self.clock.fps))
        else:
            w.frames.request(ahead[:3])
        if w.index >= n - 1 or (target >= n - 1 and not w.predictions.busy() and not self.ready(n - 1)):
            w.set_playing(False)
        w.refresh_status()
