"""Timing helpers for benchmarks: interleaved rounds, and the step functions they time.

Kept apart from the CLI so benchmarks/ scripts and ``polypviewer bench`` time paths the
same way (each path warmed up, then timed in alternating slices after idling).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["interleaved", "latency_step", "one_thread", "stream_step"]

T = TypeVar("T")


def interleaved(paths: dict[str, Callable[[], int]], seconds: float, rounds: int,
                settle: float = 0.0, per_round: dict[str, list[float]] | None = None) -> dict[str, float]:
    """frames/s of each path; each is warmed up, then timed in ``rounds`` slices in turn,
    each slice after ``settle`` seconds of idling (not timed). ``per_round`` collects each
    slice's frames/s: their spread shows how much a shared machine moved under the run."""
    for fn in paths.values():
        fn()
    frames = dict.fromkeys(paths, 0)
    spent = dict.fromkeys(paths, 0.0)
    for _ in range(max(1, rounds)):
        for name, fn in paths.items():
            time.sleep(settle)
            t0 = time.perf_counter()
            n = 0
            while True:
                n += fn()
                elapsed = time.perf_counter() - t0
                if elapsed >= seconds / max(1, rounds):
                    break
            frames[name] += n
            spent[name] += elapsed
            if per_round is not None:
                per_round.setdefault(name, []).append(round(n / elapsed, 2))
    return {k: frames[k] / spent[k] for k in paths}


def latency_step(backend: Any, x: Any) -> Callable[[], int]:
    """One frame through the backend, synchronously; returns 1."""
    return lambda: (backend.infer(x), 1)[1]


def stream_step(backend: Any, x: Any, n: int) -> Callable[[], int]:
    """Push ``n`` frames through the backend's stream (requests in flight); returns n.

    One stream serves every step, as one pipeline serves a whole video: making its infer
    requests again for each step would time their allocation, not the network."""
    stream = backend.stream(lambda tag, logits: None)

    def step() -> int:
        for _ in range(n):
            stream.submit(None, x)
        stream.wait()
        return n

    return step


def one_thread(fn: Callable[[], T]) -> Callable[[], T]:
    """``fn`` run with PyTorch limited to one intra-op thread (restored afterwards)."""
    import torch

    def step() -> T:
        n = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return fn()
        finally:
            torch.set_num_threads(n)

    return step
