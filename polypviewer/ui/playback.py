"""Playback at the source's frame rate: every frame shown when inference keeps up, frames
dropped only when it cannot.

``PlaybackClock`` is the arithmetic (where the playhead is, which ready frame to show, when
to wait); ``Player`` drives it from a QTimer on the GUI thread and asks the prediction service
for the frames ahead of the playhead, strided to the measured inference rate.

Where playback used to drop frames it had time for (issue 16 §11, measured with
``benchmarks/bench_ui.py``): at every start, and after every jump, the pipeline needs a
moment (a seek, the first decode and forward pass) before the first frame ahead is ready;
the playhead ran on at the source's rate meanwhile, and when the frames came the clock
skipped to the newest, dropping the rest. And the look-ahead asked for 64 frames ahead
whatever their size: at 1920x1080 that is more than the frame cache (512 MB, ~30 decoded
frames) and the prediction cache hold, so the pipeline evicted the frames due next to make
room for later ones, and those were dropped. Now the look-ahead is what half of each cache
holds (``Player.depth``), and, while nothing new is ready, the playhead waits
at the next frame due (up to ``HOLD_S``, and ``HOLD_FRACTION`` of the time played beyond
that) instead of running on, and the look-ahead is requested when playback starts, not at
the first tick.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
from PySide6.QtCore import QObject, Qt, QTimer

if TYPE_CHECKING:
    from polypviewer.ui.main_window import MainWindow

HOLD_S = 2.0  # the longest the playhead waits for one frame's prediction before running on
# Waiting in all: HOLD_S (a start, a warm-up) plus this fraction of the time played. Where
# inference cannot keep up, playback then drops frames at the source's rate instead of
# turning into slow motion.
HOLD_FRACTION = 0.05
MAX_AHEAD, MIN_AHEAD = 64, 4  # frames decoded and predicted ahead of the playhead (see Player.depth)

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

    def start(self, index: int, fps: float, infer_fps: float | None, now: float | None = None) -> None:
        self.i0 = int(index)
        self.fps = float(fps) if fps and fps > 0 else 10.0
        self.t0 = time.perf_counter() if now is None else float(now)
        self.dropped = 0
        self.shown = 0
        self.held_s = 0.0  # time the playhead waited for a prediction (playback ran that much slower)
        self._wait_since: float | None = None
        self._last_now = self._started = self.t0
        self.stride = 1 if not infer_fps else max(1, int(np.ceil(self.fps / max(infer_fps, 1e-3))))

    def advance(self, now: float, current: int, ready: Callable[[int], bool], last: int) -> int | None:
        """The frame to show at ``now`` (None: keep ``current``), the playhead held while the
        next frame due (``current + stride``) is not ready yet: it waits there, up to
        ``HOLD_S`` per frame and ``HOLD_S + HOLD_FRACTION`` x the time played in all, instead
        of running on and dropping what arrives meanwhile."""
        elapsed, self._last_now = now - self._last_now, now
        target = min(self.target(now), last)
        shown = self.pick(current, target, ready) if target > current else None
        if shown is not None:
            self._wait_since = None
            return shown
        nxt = min(current + self.stride, last)
        if nxt > current and target >= nxt:  # due, not ready: hold the playhead at it
            if self._wait_since is None:
                self._wait_since = now
            budget = HOLD_S + HOLD_FRACTION * (now - self._started)
            if now - self._wait_since <= HOLD_S and self.held_s < budget:
                self.t0 = now - (nxt - self.i0 + 1e-6) / self.fps
                self.held_s += max(elapsed, 0.0)
        return None

    def target(self, now: float) -> int:
        return self.i0 + int((now - self.t0) * self.fps)

    def pick(self, current: int, target: int, ready: Callable[[int], bool]) -> int | None:
        """The newest ``j`` in (current, target] with ``ready(j)``; counts the frames dropped."""
        for j in range(target, current, -1):
            if ready(j):
                self.dropped += j - current - 1
                self.shown += 1
                return j
        return None


class Player(QObject):
    """Plays ``window`` (a MainWindow): ``start()``, ``stop()``, ``active()``."""

    def __init__(self, window: MainWindow) -> None:
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
        self._request(w.index)  # the frames ahead now, not a tick later
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

    def depth(self) -> int:
        """How many frames ahead of the playhead to decode and predict: at most MAX_AHEAD, and
        no more than half of the frame cache and half of the prediction cache hold (at
        1920x1080 a decoded frame is ~17 MB, a probability map ~8 MB). Asking for more made
        the pipeline evict the frames due next to make room for later ones: those were then
        never ready in time and were dropped, however fast inference ran."""
        from polypviewer.ui.workers import LruCache

        w = self.window
        depth = MAX_AHEAD
        data, prob = w.frames.get(w.index), w.predictions.cached(w.index)
        if data is not None:
            depth = min(depth, w.frames.cache.max_bytes // max(2 * LruCache._size(data), 1))
        if prob is not None:
            depth = min(depth, w.predictions.cache.max_bytes // max(2 * prob.nbytes, 1))
        return max(MIN_AHEAD, int(depth))

    def _request(self, target: int) -> None:
        w = self.window
        n = w.n
        depth = self.depth()
        ahead = list(range(target + 1, n, self.clock.stride))[:depth]
        if ahead and ahead[-1] != n - 1 and n - 1 - ahead[-1] < self.clock.stride:
            ahead.append(n - 1)  # the last frame is always shown (once it is within reach: asked
            # for earlier, it would cost every job a seek to the end and back)
        if w.predictions.info is not None:
            w.predictions.request(ahead, behind=int(2 * self.clock.fps))
            # a frame whose prediction is cached is not predicted again, so its pixels come
            # only from the frame loader (they may have left the frame cache since)
            missing = [i for i in ahead[:3] if w.frames.get(i) is None and w.predictions.cached(i) is not None]
            if missing:
                w.frames.request(missing)
        else:
            w.frames.request(ahead[:3])

    def _tick(self) -> None:
        w = self.window
        n = w.n
        now = time.perf_counter()
        shown = self.clock.advance(now, w.index, self.ready, n - 1)
        if shown is not None:
            w.go_to(shown, playing=True)
        target = min(self.clock.target(now), n - 1)
        self._request(target)
        if w.index >= n - 1 or (target >= n - 1 and not w.predictions.busy() and not self.ready(n - 1)):
            w.set_playing(False)
        w.refresh_status()
