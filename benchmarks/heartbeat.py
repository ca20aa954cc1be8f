"""The GUI-thread stall meter that ``bench_ui.py`` and ``bench_startup.py`` share: a 2 ms
QTimer on the GUI thread; each gap between its ticks is how long that thread could not run."""

from __future__ import annotations

import time


class Heartbeat:
    def __init__(self, interval_ms: int = 2) -> None:
        from PySide6.QtCore import QTimer

        self.gaps: list[float] = []  # milliseconds between ticks since the last restart()
        self._last = time.perf_counter()
        self.timer = QTimer()
        self.timer.setInterval(interval_ms)
        self.timer.timeout.connect(self._beat)

    def _beat(self) -> None:
        now = time.perf_counter()
        self.gaps.append((now - self._last) * 1e3)
        self._last = now

    def restart(self) -> None:
        """Forget the gaps so far and count from now (starting the timer if it is stopped)."""
        self.gaps.clear()
        self._last = time.perf_counter()
        if not self.timer.isActive():
            self.timer.start()

    def stop(self) -> None:
        self.timer.stop()
