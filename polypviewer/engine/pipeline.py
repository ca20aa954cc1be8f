"""``PipelineRunner``: decode on one thread, infer on another, results in order.

Used by ``predict`` (CLI), ``bench`` (end-to-end) and the GUI's look-ahead workers. Both
queues are bounded, so memory stays flat on long videos; ``cancel()`` stops both threads
promptly; a frame that fails becomes a result carrying a one-line ``FrameError``.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from polypviewer.core.errors import PolypviewerError, describe_exception
from polypviewer.engine.processing import DEFAULT_THRESHOLD, probabilities

log = logging.getLogger(__name__)


class FrameError(PolypviewerError):
    """One frame could not be read or predicted; the run goes on without it."""


@dataclass
class FrameResult:
    """One frame's outcome. ``error`` set (and ``prob`` None) when it could not be done."""

    index: int
    name: str
    frame: np.ndarray | None
    prob: np.ndarray | None
    gt: np.ndarray | None = None
    error: PolypviewerError | None = None
    threshold: float = DEFAULT_THRESHOLD

    @property
    def mask(self) -> np.ndarray | None:
        return None if self.prob is None else self.prob >= self.threshold

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class _Job:
    seq: int
    index: int
    name: str
    frame: np.ndarray | None = None
    gt: np.ndarray | None = None
    x: np.ndarray | None = None
    error: PolypviewerError | None = None


_END = object()
ProgressCallback = Callable[[int, int, float], None]


class PipelineRunner:
    """Decode on one thread, infer on another, yield ``FrameResult`` in index order.

    Both queues are bounded (``max_queue``), so memory stays flat however long the video;
    ``cancel()`` stops both threads promptly (iteration then ends). A frame that cannot be
    read or predicted comes out as a result with ``error`` set; the run goes on.
    ``on_progress(done, total, fps)`` is called from the iterating thread after each result.
    Iterate from a worker thread in a GUI: ``__next__`` waits for the next frame.
    """

    def __init__(self, source: Any, predictor: Any, indices: Sequence[int] | None = None, *,
                 batch_size: int | None = None, max_queue: int = 8,
                 on_progress: ProgressCallback | None = None, with_gt: bool = True) -> None:
        self.source = source
        self.predictor = predictor
        self.indices = list(range(len(source))) if indices is None else [int(i) for i in indices]
        self.batch_size = max(1, batch_size or predictor.backend.preferred_batch)
        self.max_queue = max(1, max_queue)
        self.on_progress = on_progress
        self.with_gt = with_gt and bool(getattr(source, "has_masks", False))
        # Jobs / results, then the _END sentinel.
        self._jobs: queue.Queue[Any] = queue.Queue(self.max_queue)
        self._out: queue.Queue[Any] = queue.Queue(self.max_queue)
        self._cancel = threading.Event()
        self._threads: list[threading.Thread] = []
        self._started = False
        self.done = 0
        self.failed = 0
        self._t0 = 0.0

    # -- control

    def start(self) -> PipelineRunner:
        if not self._started:
            self._started = True
            self._t0 = time.perf_counter()
            for target, name in ((self._decode, "polypviewer-decode"), (self._infer, "polypviewer-infer")):
                t = threading.Thread(target=target, name=name, daemon=True)
                t.start()
                self._threads.append(t)
        return self

    def cancel(self) -> None:
        """Stop both threads; returns at once (they exit within ~0.1 s of their current step)."""
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def join(self, timeout: float | None = None) -> None:
        for t in self._threads:
            t.join(timeout)

    @property
    def fps(self) -> float:
        elapsed = time.perf_counter() - self._t0
        return self.done / elapsed if self._started and elapsed > 0 else 0.0

    def __enter__(self) -> PipelineRunner:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.cancel()
        self.join(5.0)

    # -- results

    def __iter__(self) -> Iterator[FrameResult]:
        self.start()
        pending: dict[int, FrameResult] = {}
        next_seq, total = 0, len(self.indices)
        try:
            while next_seq < total and not self._cancel.is_set():
                while next_seq not in pending:
                    item = self._get(self._out)
                    if item is None or item is _END:
                        return
                    seq, result = item
                    pending[seq] = result
                result = pending.pop(next_seq)
                next_seq += 1
                self.done += 1
                self.failed += result.error is not None
                if self.on_progress is not None:
                    self.on_progress(self.done, total, self.fps)
                yield result
        finally:
            # The caller stopped early (break, exception) or all is done: free both threads.
            self.cancel()

    # -- threads

    def _put(self, q: queue.Queue[Any], item: Any) -> bool:
        while not self._cancel.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _get(self, q: queue.Queue[Any]) -> Any:
        while not self._cancel.is_set():
            try:
                return q.get(timeout=0.1)
            except queue.Empty:
                continue
        return None

    def _decode(self) -> None:
        src = self.source
        for seq, index in enumerate(self.indices):
            if self._cancel.is_set():
                return
            job = _Job(seq, index, _safe_name(src, index))
            try:
                job.frame = src.frame(index)
                job.gt = src.mask(index) if self.with_gt else None
                job.x = self.predictor.prepare(job.frame)
            except PolypviewerError as exc:
                job.error, job.frame, job.gt = exc, None, None
            except Exception as exc:  # noqa: BLE001 - one bad frame must not end the run
                job.error = FrameError(f"could not read frame: {describe_exception(exc, with_type=True)}", job.name)
                job.frame, job.gt = None, None
            if not self._put(self._jobs, job):
                return
        self._put(self._jobs, _END)

    def _infer(self) -> None:
        predictor = self.predictor
        threshold = predictor.threshold
        # TTA triples each frame: it runs synchronously; otherwise the backend's stream
        # (OpenVINO: several requests in flight) overlaps frames.
        on_result = self._deliver(threshold)
        stream = None if predictor.tta else predictor.backend.stream(on_result)
        finished = False
        while not finished and not self._cancel.is_set():
            job = self._get(self._jobs)
            if job is None:
                break
            if job is _END:
                break
            batch = [job]
            while len(batch) < self.batch_size:  # take what is already decoded, never wait
                try:
                    nxt = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if nxt is _END:
                    finished = True
                    break
                batch.append(nxt)
            good = [j for j in batch if j.error is None]
            for j in batch:
                if j.error is not None:
                    self._emit(j, None, threshold)
            if not good:
                continue
            x = np.stack([j.x for j in good])
            try:
                if stream is None:
                    on_result(good, predictor.logits(x))
                elif predictor.backend.preferred_batch == 1 and len(good) > 1:
                    for k, j in enumerate(good):
                        stream.submit([j], x[k:k + 1])
                else:
                    stream.submit(good, x)
            except Exception as exc:  # noqa: BLE001 - name the frames, go on
                for j in good:
                    j.error = FrameError(f"inference failed: {describe_exception(exc, with_type=True)}", j.name)
                    self._emit(j, None, threshold)
        if stream is not None:
            try:
                stream.wait()
            except Exception as exc:  # noqa: BLE001 - the results are all delivered; the failure is logged
                log.error("inference stream failed at the end of the run: %s", exc)
        self._put(self._out, _END)

    def _deliver(self, threshold: float) -> Callable[[Any, np.ndarray], None]:
        def on_result(jobs: list[_Job], logits: np.ndarray) -> None:
            for j, lg in zip(jobs, logits, strict=True):
                try:
                    if j.frame is None:  # only jobs with a decoded frame are inferred
                        raise RuntimeError("the frame was not kept")
                    prob = probabilities(lg, j.frame.shape[:2])
                except Exception as exc:  # noqa: BLE001 - one bad frame must not end the run
                    j.error = FrameError(f"post-processing failed: {exc}", j.name)
                    prob = None
                self._emit(j, prob, threshold)

        return on_result

    def _emit(self, job: _Job, prob: np.ndarray | None, threshold: float) -> None:
        job.x = None  # the input tensor is not needed any more: keep memory flat
        result = FrameResult(job.index, job.name, job.frame, prob, job.gt, job.error, threshold)
        self._put(self._out, (job.seq, result))


def _safe_name(source: Any, index: int) -> str:
    try:
        return str(source.name(index))
    except Exception:  # noqa: BLE001 - a name is only a label
        return f"item_{index:06d}"



__all__ = ["FrameError", "FrameResult", "PipelineRunner", "ProgressCallback"]
