"""Background work for the window: frame decoding, model loading, look-ahead inference.

Two QThreads, each with one worker QObject; results reach the GUI thread only through
queued signals, and the GUI thread never waits on a worker except at shutdown.

* ``FrameLoader`` (its own source instance): opens sources and decodes the frames the user
  is looking at. Requests collapse: only the newest wanted frames are decoded.
* ``InferenceWorker`` (another source instance): builds predictors and runs the engine's
  ``PipelineRunner`` (which has its own decode + infer threads) over a list of indices.

``PredictionService`` is the GUI-side face of the inference worker: it keeps the
prediction cache (keyed by source, frame, model version; bounded in bytes), decides
whether the running job still serves what is wanted or must be cancelled (a jump), and
measures the pipeline's frames per second.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any, Hashable, NamedTuple

import cv2
import numpy as np
from PySide6.QtCore import QObject, QThread, Signal, Slot

from polypviewer.core.errors import PolypviewerError


class LruCache:
    """Least-recently-used map bounded by the total ``nbytes`` of its values."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = int(max_bytes)
        self.nbytes = 0
        self._items: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()

    @staticmethod
    def _size(value: Any) -> int:
        if isinstance(value, np.ndarray):
            return value.nbytes
        if hasattr(value, "sizeInBytes"):  # QImage
            return int(value.sizeInBytes())
        if isinstance(value, (tuple, list)):
            return sum(v.nbytes for v in value if isinstance(v, np.ndarray))
        return 64

    def get(self, key: Hashable) -> Any:
        item = self._items.get(key)
        if item is None:
            return None
        self._items.move_to_end(key)
        return item[0]

    def __contains__(self, key: Hashable) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)

    def put(self, key: Hashable, value: Any) -> None:
        if key in self._items:
            self.nbytes -= self._items.pop(key)[1]
        size = self._size(value)
        self._items[key] = (value, size)
        self.nbytes += size
        while self.nbytes > self.max_bytes and len(self._items) > 1:
            _, (_, s) = self._items.popitem(last=False)
            self.nbytes -= s

    def clear(self) -> None:
        self._items.clear()
        self.nbytes = 0


class FrameData(NamedTuple):
    """A decoded frame as the window keeps it. ``display`` is the same pixels as BGRA
    (Qt's RGB32 layout), converted on the worker thread so the canvas wraps it without a
    copy or a format conversion on the GUI thread."""

    frame: np.ndarray  # (H, W, 3) uint8 RGB
    gt: np.ndarray | None  # (H, W) bool
    name: str
    display: np.ndarray  # (H, W, 4) uint8 BGRA


def frame_data(frame: np.ndarray, gt: np.ndarray | None, name: str) -> FrameData:
    return FrameData(frame, gt, name, cv2.cvtColor(frame, cv2.COLOR_RGB2BGRA))


class Prediction(NamedTuple):
    """What the inference worker delivers for one frame: the engine's FrameResult, the
    frame ready for display, and the frame scored at the threshold the job ran with (so
    the GUI thread does not threshold and score 2-megapixel maps during playback)."""

    result: Any  # engine.inference.FrameResult
    data: FrameData | None
    scored: Any  # ui.overlay.Scored or None
    overlay: Any = None  # QImage from canvas.render_overlay(mask, gt, job style), or None


BACKGROUND_NICE = 10  # how much lower than the GUI thread the workers run (Linux nice)


def lower_thread_priority(nice: int = BACKGROUND_NICE) -> bool:
    """Lower the calling thread's scheduling priority (Linux: per-thread nice, inherited by
    the threads it starts, e.g. the pipeline's decode/infer threads and torch's pool).

    On a machine with few cores, inference saturates them; the GUI thread must still get
    the CPU the moment it has an event to handle. QThread priorities are ignored under
    Linux's default scheduler, hence ``setpriority`` on the thread id."""
    if not hasattr(os, "setpriority") or not sys.platform.startswith("linux"):
        return False
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))
        return True
    except OSError:
        return False


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, PolypviewerError):
        return str(exc)
    return " ".join(f"{type(exc).__name__}: {exc}".split())


class FrameLoader(QObject):
    """Opens a source and decodes wanted frames on its own thread."""

    opened = Signal(int, object)  # generation, info dict (n, fps, kind, has_masks, path, problems)
    open_failed = Signal(int, str)
    loaded = Signal(int, int, object)  # generation, index, FrameData
    failed = Signal(int, int, str)  # generation, index, message
    _wake = Signal()

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._want: deque[int] = deque()
        self._open: tuple[int, str] | None = None
        self._gen = 0
        self._source = None
        self._wake.connect(self._work)  # queued: the slot runs on the loader's thread

    # -- called from the GUI thread
    def open(self, generation: int, path: str) -> None:
        with self._lock:
            self._open = (generation, path)
            self._want.clear()
        self._wake.emit()

    def request(self, generation: int, indices: list[int]) -> None:
        """Decode ``indices`` (newest request wins: older pending ones are dropped)."""
        with self._lock:
            if generation != self._gen and self._open is None:
                return
            self._want = deque(indices)
        self._wake.emit()

    # -- on the loader thread
    @Slot()
    def lower_priority(self) -> None:
        lower_thread_priority()

    @Slot()
    def _work(self) -> None:
        while True:
            with self._lock:
                to_open, self._open = self._open, None
                if to_open is None:
                    if not self._want:
                        return
                    index, gen = self._want.popleft(), self._gen
            if to_open is not None:
                self._do_open(*to_open)
                continue
            try:
                frame = self._source.frame(index)
                gt = self._source.mask(index) if self._source.has_masks else None
                data = frame_data(frame, gt, self._source.name(index))
            except Exception as exc:  # noqa: BLE001 - report and keep serving
                self.failed.emit(gen, index, _one_line(exc))
                continue
            self.loaded.emit(gen, index, data)

    def _do_open(self, generation: int, path: str) -> None:
        from polypviewer.io.sources import open_source

        self.close_source()
        try:
            src = open_source(path)
            if len(src) == 0:
                src.close()
                raise PolypviewerError("no frames or images found", path)
        except Exception as exc:  # noqa: BLE001
            self.open_failed.emit(generation, _one_line(exc))
            return
        with self._lock:
            self._source, self._gen = src, generation
        names = [src.name(i) for i in range(len(src))] if src.kind != "video" else None
        self.opened.emit(generation, {"n": len(src), "fps": src.fps, "kind": src.kind,
                                      "has_masks": bool(src.has_masks), "path": str(src.path),
                                      "problems": list(getattr(src, "problems", [])), "names": names})

    def close_source(self) -> None:
        if self._source is not None:
            try:
                self._source.close()
            finally:
                self._source = None


@dataclass
class Job:
    id: int
    source_path: str
    source_id: int
    indices: list[int]
    pending: deque = field(default_factory=deque)
    threshold: float = 0.5  # the worker scores each frame at this threshold
    style: Any = None  # and renders its overlay in this OverlayStyle (None: no overlay)


class InferenceWorker(QObject):
    """Builds predictors and runs prediction jobs, one at a time, on its own thread."""

    model_ready = Signal(object, object)  # request id, info dict
    model_failed = Signal(object, str, bool)  # request id, message, no-weights (offer random)
    result = Signal(int, object)  # job id, Prediction
    job_finished = Signal(int, float)  # job id, pipeline frames/s
    job_failed = Signal(int, str)

    def __init__(self, batch_size: int = 1, max_queue: int = 4) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.max_queue = max_queue
        self.predictor = None
        self._lock = threading.Lock()
        self._runner = None
        self._cancel_below = 0  # jobs with a smaller id are stale
        self._source = None
        self._source_key: tuple[int, str] | None = None

    @Slot()
    def lower_priority(self) -> None:
        lower_thread_priority()

    def cancel_below(self, job_id: int) -> None:
        """Called from the GUI thread: drop every job older than ``job_id``, stop the running one."""
        with self._lock:
            self._cancel_below = max(self._cancel_below, job_id)
            runner = self._runner
        if runner is not None and getattr(runner, "_job_id", job_id) < job_id:
            runner.cancel()

    @Slot(object)
    def load_model(self, request: dict) -> None:
        from polypviewer.engine.inference import NoWeightsError, Predictor

        try:
            predictor = request.get("predictor")
            if predictor is None:
                predictor = Predictor.create(model=request.get("model"), weights=request.get("weights"),
                                             allow_random=bool(request.get("allow_random")),
                                             **request.get("options", {}))
        except NoWeightsError as exc:
            self.model_failed.emit(request.get("id"), _one_line(exc), True)
            return
        except Exception as exc:  # noqa: BLE001 - a bad checkpoint must not end the app
            self.model_failed.emit(request.get("id"), _one_line(exc), False)
            return
        self.predictor = predictor
        self.model_ready.emit(request.get("id"), dict(predictor.info))

    @Slot(object)
    def run_job(self, job: Job) -> None:
        from polypviewer.engine.inference import PipelineRunner
        from polypviewer.io.sources import open_source

        with self._lock:
            if job.id < self._cancel_below or self.predictor is None:
                self.job_finished.emit(job.id, 0.0)
                return
        try:
            if self._source_key != (job.source_id, job.source_path):
                self.close_source()
                self._source = open_source(job.source_path)
                self._source_key = (job.source_id, job.source_path)
            runner = PipelineRunner(self._source, self.predictor, job.indices,
                                    batch_size=self.batch_size, max_queue=self.max_queue)
        except Exception as exc:  # noqa: BLE001
            self.job_failed.emit(job.id, _one_line(exc))
            return
        runner._job_id = job.id  # type: ignore[attr-defined]
        with self._lock:
            self._runner = runner
            if job.id < self._cancel_below:
                runner.cancel()
        t0, done = time.perf_counter(), 0
        try:
            from polypviewer.ui.canvas import render_overlay
            from polypviewer.ui.overlay import score_frame

            for res in runner:
                if runner.cancelled:
                    break
                done += 1
                data = scored = overlay = None
                if res.frame is not None:
                    data = frame_data(res.frame, res.gt, res.name)
                if res.prob is not None:
                    scored = score_frame(res.prob, res.gt, job.threshold)
                    if job.style is not None:
                        overlay = render_overlay(scored.mask, res.gt, job.style)
                self.result.emit(job.id, Prediction(res, data, scored, overlay))
        except Exception as exc:  # noqa: BLE001
            self.job_failed.emit(job.id, _one_line(exc))
        finally:
            runner.cancel()
            runner.join(5.0)
            with self._lock:
                self._runner = None
        elapsed = time.perf_counter() - t0
        self.job_finished.emit(job.id, done / elapsed if elapsed > 0 and done else 0.0)

    def close_source(self) -> None:
        if self._source is not None:
            try:
                self._source.close()
            finally:
                self._source, self._source_key = None, None

    @Slot()
    def shutdown(self) -> None:
        self.close_source()
        self.predictor = None


class FpsMeter:
    """Inference frames per second: the median interval between consecutive results of the
    same job (the first result of a job carries the pipeline's start-up, and the idle time
    between jobs is not inference time)."""

    def __init__(self, window: int = 16) -> None:
        self._intervals: deque[float] = deque(maxlen=window)
        self._last: tuple[int, float] | None = None

    def tick(self, now: float | None = None, job: int = 0) -> None:
        now = time.perf_counter() if now is None else now
        if self._last is not None and self._last[0] == job:
            self._intervals.append(now - self._last[1])
        self._last = (job, now)

    def reset(self) -> None:
        self._intervals.clear()
        self._last = None

    def fps(self) -> float | None:
        if len(self._intervals) < 2:
            return None
        median = float(np.median(self._intervals))
        return 1.0 / median if median > 0 else None


class PredictionService(QObject):
    """GUI-side manager of look-ahead inference. Use from the GUI thread only."""

    prediction = Signal(int, object)  # frame index, Prediction (prob cached before the signal)
    model_ready = Signal(object)  # info dict
    model_failed = Signal(str, bool)  # message, offer random weights
    error = Signal(str)
    fps_changed = Signal(float)
    busy_changed = Signal(bool)

    _start_job = Signal(object)
    _load = Signal(object)
    _shutdown = Signal()

    def __init__(self, cache_bytes: int = 512 << 20, batch_size: int = 1, parent=None) -> None:
        super().__init__(parent)
        self.cache = LruCache(cache_bytes)
        # Thresholded masks (made on the worker thread, or once on the GUI thread), keyed by
        # (source, frame, version, threshold): showing a cached frame thresholds nothing.
        self.mask_cache = LruCache(cache_bytes // 4)
        # Overlays rendered by the worker, keyed by (source, frame, version, threshold, style).
        self.overlay_cache = LruCache(cache_bytes // 2)
        self.style = None  # OverlayStyle the worker renders overlays in (the window sets it)
        self.info: dict[str, Any] | None = None
        self._thread = QThread()
        self._thread.setObjectName("polypviewer-inference")
        self._worker = InferenceWorker(batch_size=batch_size)
        self._worker.moveToThread(self._thread)
        self._start_job.connect(self._worker.run_job)
        self._load.connect(self._worker.load_model)
        self._shutdown.connect(self._worker.shutdown)
        self._worker.result.connect(self._on_result)
        self._worker.job_finished.connect(self._on_job_finished)
        self._worker.job_failed.connect(self._on_job_failed)
        self._worker.model_ready.connect(self._on_model_ready)
        self._worker.model_failed.connect(self._on_model_failed)
        self._thread.started.connect(self._worker.lower_priority)
        self._thread.start()
        self._job: Job | None = None
        self._next_id = 1
        self._source: tuple[int, str] | None = None  # (source id, path)
        self._last_wanted: list[int] = []
        self._model_request = 0
        self.loading_model = False
        self.threshold = 0.5  # jobs score their frames at this threshold (the window sets it)
        self.meter = FpsMeter()
        self.slack = 2 * max(1, batch_size) + 2
        self._job_keys: dict[int, tuple] = {}  # job id -> (source id, model version) it ran for
        self._job_styles: dict[int, Any] = {}

    # -- state
    @property
    def version(self) -> str | None:
        return None if self.info is None else f"{self.info.get('model')}:{self.info.get('version')}"

    def key(self, index: int) -> tuple:
        return (self._source[0] if self._source else None, index, self.version)

    def cached(self, index: int) -> np.ndarray | None:
        """The cached probability map of frame ``index`` for the current model, or None."""
        return self.cache.get(self.key(index))

    def cached_overlay(self, index: int, threshold: float, style) -> Any:
        """The overlay QImage the worker rendered for this frame, threshold and style, or None."""
        return self.overlay_cache.get((*self.key(index), float(threshold), style))

    def cached_mask(self, index: int, threshold: float) -> np.ndarray | None:
        """``prob >= threshold`` for frame ``index`` (computed once, then cached), or None."""
        key = (*self.key(index), float(threshold))
        mask = self.mask_cache.get(key)
        if mask is None:
            prob = self.cache.get(self.key(index))
            if prob is None:
                return None
            mask = prob >= threshold
            self.mask_cache.put(key, mask)
        return mask

    def busy(self) -> bool:
        return self._job is not None

    def running_indices(self) -> list[int]:
        return list(self._job.pending) if self._job else []

    # -- commands
    def set_source(self, source_id: int, path: str) -> None:
        self.cancel()
        self._source = (source_id, path)
        self._last_wanted = []

    def load_model(self, model: str | None = None, weights: str | None = None, *,
                   allow_random: bool = False, options: dict | None = None, predictor=None) -> None:
        """Build a predictor on the worker thread (``Predictor.create(model, weights,
        allow_random, **options)``), or install a ready ``predictor`` (e.g. a fine-tuned
        network wrapped with ``Predictor.from_module``). ``model_ready`` / ``model_failed``
        tell the outcome; predictions of the previous model stay cached under its version."""
        self.cancel()
        self._model_request += 1
        self.loading_model = True
        self._load.emit({"id": self._model_request, "model": model, "weights": weights,
                         "allow_random": allow_random, "options": dict(options or {}),
                         "predictor": predictor})

    def request(self, wanted: list[int], *, behind: int | None = None) -> None:
        """Make sure ``wanted`` (in this order) gets predicted.

        Stepping (``behind`` None): keep the running job when it is already working on the
        first wanted frame (give or take a batch in flight), else cancel it and start anew:
        a jump never waits for stale work. Playback (``behind`` = N frames): keep the running
        job while it is no more than N frames behind the first wanted frame, since what it
        delivers late is still newer than the frame on screen; restarting a pipeline costs
        a seek and a warm-up, and restarting on every tick would never deliver anything."""
        if self.info is None or self._source is None or self.loading_model:
            return
        wanted = [i for i in wanted if self.key(i) not in self.cache]
        self._last_wanted = wanted
        if not wanted:
            return
        job = self._job
        if job is not None:
            first = wanted[0]
            if job.pending and behind is not None and job.pending[0] >= first - behind:
                return
            ahead = list(job.pending)[: len(wanted) + self.slack]
            if job.pending and first - self.slack <= job.pending[0] <= first and first in ahead:
                return  # the running job serves this; the tail is topped up when it ends
            self._worker.cancel_below(self._next_id)
        self._launch(wanted)

    def cancel(self) -> None:
        if self._job is not None:
            self._worker.cancel_below(self._next_id)
            self._job = None
            self.busy_changed.emit(False)

    def _launch(self, indices: list[int]) -> None:
        job = Job(self._next_id, self._source[1], self._source[0], list(indices), deque(indices),
                  self.threshold, self.style)
        self._next_id += 1
        self._job = job
        self._job_keys[job.id] = (self._source[0], self.version)
        self._job_styles[job.id] = job.style
        self.busy_changed.emit(True)
        self._start_job.emit(job)

    # -- worker signals (queued into the GUI thread)
    def _on_result(self, job_id: int, pred: Prediction) -> None:
        res = pred.result
        job = self._job
        if job is not None and job.id == job_id:
            while job.pending and job.pending[0] != res.index:
                job.pending.popleft()
            if job.pending:
                job.pending.popleft()
        source_id, version = self._job_keys.get(job_id, (None, None))
        if res.prob is None:
            self.error.emit(str(res.error) if res.error else f"{res.name}: no prediction")
            return
        # A cancelled job's late result is still a correct prediction for the source and model
        # it ran with: cache it under those, and tell the window only if they are current.
        self.cache.put((source_id, res.index, version), res.prob)
        if pred.scored is not None:
            self.mask_cache.put((source_id, res.index, version, pred.scored.threshold), pred.scored.mask)
            if pred.overlay is not None:
                self.overlay_cache.put((source_id, res.index, version, pred.scored.threshold,
                                        self._job_styles.get(job_id)), pred.overlay)
        if self._source is None or (source_id, version) != (self._source[0], self.version):
            return
        self.meter.tick(job=job_id)
        fps = self.meter.fps()
        if fps is not None:
            self.fps_changed.emit(fps)
        self.prediction.emit(res.index, pred)

    def _on_job_finished(self, job_id: int, fps: float) -> None:
        self._job_keys.pop(job_id, None)
        self._job_styles.pop(job_id, None)
        if self._job is not None and self._job.id == job_id:
            self._job = None
            self.busy_changed.emit(False)
            if self._last_wanted:
                self.request(self._last_wanted)

    def _on_job_failed(self, job_id: int, message: str) -> None:
        self._job_keys.pop(job_id, None)
        self._job_styles.pop(job_id, None)
        if self._job is not None and self._job.id == job_id:
            self._job = None
            self.busy_changed.emit(False)
        self.error.emit(message)

    def _on_model_ready(self, request_id, info) -> None:
        if request_id != self._model_request:
            return
        self.loading_model = False
        self.info = dict(info)
        self.meter.reset()
        self.model_ready.emit(self.info)

    def _on_model_failed(self, request_id, message: str, offer_random: bool) -> None:
        if request_id != self._model_request:
            return
        self.loading_model = False
        self.model_failed.emit(message, offer_random)

    # -- shutdown
    def shutdown(self, timeout_ms: int = 10000) -> bool:
        """Cancel everything, stop the thread and wait for it. True when it stopped."""
        self._worker.cancel_below(1 << 60)
        self._job = None
        self._shutdown.emit()
        self._thread.quit()
        ok = self._thread.wait(timeout_ms)
        return bool(ok)

    def thread(self) -> QThread:  # noqa: D401 - the worker thread (tests check it stopped)
        return self._thread


class FrameService(QObject):
    """GUI-side face of the frame loader: a thread, a generation counter, a frame cache."""

    opened = Signal(object)  # info dict
    open_failed = Signal(str)
    frame = Signal(int, object)  # index, FrameData
    failed = Signal(int, str)
    _shutdown = Signal()

    def __init__(self, cache_bytes: int = 512 << 20, parent=None) -> None:
        super().__init__(parent)
        self.cache = LruCache(cache_bytes)
        self.generation = 0
        self._thread = QThread()
        self._thread.setObjectName("polypviewer-frames")
        self._loader = FrameLoader()
        self._loader.moveToThread(self._thread)
        self._loader.opened.connect(self._on_opened)
        self._loader.open_failed.connect(self._on_open_failed)
        self._loader.loaded.connect(self._on_loaded)
        self._loader.failed.connect(self._on_failed)
        self._shutdown.connect(self._loader.close_source)
        self._thread.started.connect(self._loader.lower_priority)
        self._thread.start()

    def open(self, path: str) -> int:
        self.generation += 1
        self.cache.clear()
        self._loader.open(self.generation, path)
        return self.generation

    def request(self, indices: list[int]) -> None:
        wanted = [i for i in indices if (self.generation, i) not in self.cache]
        if wanted:
            self._loader.request(self.generation, wanted)

    def get(self, index: int) -> FrameData | None:
        """The decoded frame if cached, else None."""
        return self.cache.get((self.generation, index))

    def put(self, index: int, data: FrameData) -> None:
        self.cache.put((self.generation, index), data)

    def _on_opened(self, gen: int, info) -> None:
        if gen == self.generation:
            self.opened.emit(info)

    def _on_open_failed(self, gen: int, message: str) -> None:
        if gen == self.generation:
            self.open_failed.emit(message)

    def _on_loaded(self, gen: int, index: int, data: FrameData) -> None:
        if gen == self.generation:
            self.put(index, data)
            self.frame.emit(index, data)

    def _on_failed(self, gen: int, index: int, message: str) -> None:
        if gen == self.generation:
            self.failed.emit(index, message)

    def shutdown(self, timeout_ms: int = 10000) -> bool:
        self._loader.request(-1, [])
        self._shutdown.emit()
        self._thread.quit()
        return bool(self._thread.wait(timeout_ms))

    def thread(self) -> QThread:
        return self._thread


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
