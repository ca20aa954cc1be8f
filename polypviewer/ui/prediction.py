"""Look-ahead inference for the window: the inference worker thread and its GUI-side face.

``InferenceWorker`` (a QObject on its own QThread, with its own source instance) builds
predictors and runs the engine's ``PipelineRunner`` (which has its own decode + infer
threads) over a list of indices; for each frame it also converts the pixels for display,
thresholds and scores the prediction and renders its overlay, so the GUI thread only wraps
and draws. ``PredictionService`` lives on the GUI thread: it keeps the prediction cache
(keyed by source, frame, model version; bounded in bytes), decides whether the running job
still serves what is wanted or must be cancelled (a jump), and measures frames per second.
Results arrive only through queued signals.
"""

from __future__ import annotations

import math
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
from PySide6.QtCore import QObject, QThread, Signal, Slot

from polypviewer.core.errors import describe_exception
from polypviewer.ui.workers import FrameData, LruCache, frame_data, lower_thread_priority

if TYPE_CHECKING:
    from polypviewer.core.overlay import OverlayStyle
    from polypviewer.engine.inference import PipelineRunner, Predictor
    from polypviewer.engine.selection import Choice
    from polypviewer.io.sources import FrameSource


# The caches' key for a frame: (source id, frame index, model version), None where not known yet.
CacheKey = tuple[int | None, int, str | None]


class Prediction(NamedTuple):
    """What the inference worker delivers for one frame: the engine's FrameResult, the
    frame ready for display, and the frame scored at the threshold the job ran with (so
    the GUI thread does not threshold and score 2-megapixel maps during playback)."""

    result: Any  # engine.inference.FrameResult
    data: FrameData | None
    scored: Any  # core.review.Scored or None
    overlay: Any = None  # QImage from canvas.render_overlay(mask, gt, job style), or None
    uncertainty: float = math.nan  # engine.uncertainty.frame_uncertainty of the map (0 = sure)


@dataclass
class Job:
    id: int
    source_path: str
    source_id: int
    indices: list[int]
    pending: deque[int] = field(default_factory=deque)
    threshold: float = 0.5  # the worker scores each frame at this threshold
    style: Any = None  # and renders its overlay in this OverlayStyle (None: no overlay)


class InferenceWorker(QObject):
    """Builds predictors and runs prediction jobs, one at a time, on its own thread."""

    model_ready = Signal(object, object)  # request id, info dict
    model_failed = Signal(object, str, bool)  # request id, message, no-weights (offer random)
    result = Signal(int, object)  # job id, Prediction
    job_finished = Signal(int, float)  # job id, pipeline frames/s
    job_failed = Signal(int, str)
    # request id, engine.selection.Choice (or None): emitted from the measuring thread
    engine_measured = Signal(object, object)

    def __init__(self, batch_size: int = 1, max_queue: int = 4) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.max_queue = max_queue
        self.predictor: Predictor | None = None
        self._lock = threading.Lock()
        self._runner: PipelineRunner | None = None
        self._runner_job = 0  # the id of the job self._runner runs
        self._cancel_below = 0  # jobs with a smaller id are stale
        self._source: FrameSource | None = None
        self._source_key: tuple[int, str] | None = None

    @Slot()
    def lower_priority(self) -> None:
        lower_thread_priority()

    def cancel_below(self, job_id: int) -> None:
        """Called from the GUI thread: drop every job older than ``job_id``, stop the running one."""
        with self._lock:
            self._cancel_below = max(self._cancel_below, job_id)
            runner, running = self._runner, self._runner_job
        if runner is not None and running < job_id:
            runner.cancel()

    @Slot(object)
    def load_model(self, request: dict[str, Any]) -> None:
        from polypviewer.engine.inference import NoWeightsError, Predictor

        try:
            predictor = request.get("predictor")
            if predictor is None:
                predictor = Predictor.create(model=request.get("model"), weights=request.get("weights"),
                                             allow_random=bool(request.get("allow_random")),
                                             fallback_model=request.get("fallback_model"),
                                             **request.get("options", {}))
        except NoWeightsError:
            # The engine's message speaks to the command line; say what to do in the window.
            what = request.get("model") or "the default model"
            self.model_failed.emit(request.get("id"), f"No trained weights are installed for {what}: "
                                   "load a checkpoint (Load weights…, Ctrl+L) or try the network "
                                   "untrained (Use random weights).", True)
            return
        except Exception as exc:  # noqa: BLE001 - a bad checkpoint must not end the app
            self.model_failed.emit(request.get("id"), describe_exception(exc, with_type=True), False)
            return
        self.predictor = predictor
        self.model_ready.emit(request.get("id"), dict(predictor.info))
        if getattr(predictor, "needs_measurement", False):
            # backend auto, never measured here: time the engines in a low-priority child
            # process (this thread keeps predicting), then the service switches to the fastest
            # exact one.
            rid = request.get("id")
            predictor.measure_in_background(lambda choice, _error: self.engine_measured.emit(rid, choice))

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
            self.job_failed.emit(job.id, describe_exception(exc, with_type=True))
            return
        with self._lock:
            self._runner, self._runner_job = runner, job.id
            if job.id < self._cancel_below:
                runner.cancel()
        t0, done = time.perf_counter(), 0
        try:
            from polypviewer.core.review import score_frame
            from polypviewer.engine.uncertainty import frame_uncertainty
            from polypviewer.ui.canvas import render_overlay

            for res in runner:
                if runner.cancelled:
                    break
                done += 1
                data = scored = overlay = None
                unc = math.nan
                if res.frame is not None:
                    data = frame_data(res.frame, res.gt, res.name)
                if res.prob is not None:
                    scored = score_frame(res.prob, res.gt, job.threshold)
                    if job.style is not None:
                        overlay = render_overlay(scored.mask, res.gt, job.style)
                    # At the model's own threshold (the measured score), not the slider's.
                    unc = frame_uncertainty(res.prob, getattr(self.predictor, "threshold", 0.5))
                self.result.emit(job.id, Prediction(res, data, scored, overlay, unc))
        except Exception as exc:  # noqa: BLE001
            self.job_failed.emit(job.id, describe_exception(exc, with_type=True))
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

    def __init__(self, cache_bytes: int = 512 << 20, batch_size: int = 1, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.cache = LruCache(cache_bytes)
        # Thresholded masks (made on the worker thread, or once on the GUI thread), keyed by
        # (source, frame, version, threshold): showing a cached frame thresholds nothing.
        self.mask_cache = LruCache(cache_bytes // 4)
        # Overlays rendered by the worker, keyed by (source, frame, version, threshold, style).
        self.overlay_cache = LruCache(cache_bytes // 2)
        self.style: OverlayStyle | None = None  # the worker renders overlays in it (the window sets it)
        self.info: dict[str, Any] | None = None
        self._thread = QThread()
        self._thread.setObjectName("polypviewer-inference")
        self._worker = InferenceWorker(batch_size=batch_size)
        self._worker.moveToThread(self._thread)
        self._start_job.connect(self._worker.run_job)
        self._load.connect(self._worker.load_model)
        self._worker.result.connect(self._on_result)
        self._worker.job_finished.connect(self._on_job_finished)
        self._worker.job_failed.connect(self._on_job_failed)
        self._worker.model_ready.connect(self._on_model_ready)
        self._worker.model_failed.connect(self._on_model_failed)
        self._worker.engine_measured.connect(self._on_engine_measured)
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
        self._job_keys: dict[int, tuple[int, str | None]] = {}  # job id -> (source id, model version) it ran for
        self._job_styles: dict[int, Any] = {}
        # Per-frame uncertainty, keyed like the cache (source, frame, model version): a float
        # per predicted frame, kept for as long as the window (a few bytes a frame).
        self._uncertainty: dict[CacheKey, float] = {}

    # -- state
    @property
    def version(self) -> str | None:
        return None if self.info is None else f"{self.info.get('model')}:{self.info.get('version')}"

    def key(self, index: int) -> CacheKey:
        return (self._source[0] if self._source else None, index, self.version)

    def cached(self, index: int) -> np.ndarray | None:
        """The cached probability map of frame ``index`` for the current model, or None."""
        prob: np.ndarray | None = self.cache.get(self.key(index))
        return prob

    def uncertainty(self, index: int) -> float:
        """The current model's uncertainty of frame ``index`` (NaN when not predicted yet)."""
        return self._uncertainty.get(self.key(index), math.nan)

    def uncertainties(self) -> dict[int, float]:
        """Frame index -> uncertainty, for every frame the current model has predicted."""
        src, version = self.key(0)[0], self.version
        return {k[1]: v for k, v in self._uncertainty.items() if k[0] == src and k[2] == version}

    def cached_overlay(self, index: int, threshold: float, style: OverlayStyle) -> Any:
        """The overlay QImage the worker rendered for this frame, threshold and style, or None."""
        return self.overlay_cache.get((*self.key(index), float(threshold), style))

    def cached_mask(self, index: int, threshold: float) -> np.ndarray | None:
        """``prob >= threshold`` for frame ``index`` (computed once, then cached), or None."""
        key = (*self.key(index), float(threshold))
        mask: np.ndarray | None = self.mask_cache.get(key)
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
        self._uncertainty.clear()  # the previous source's frames are never shown again under its id
        self._source = (source_id, path)
        self._last_wanted = []

    def load_model(self, model: str | None = None, weights: str | None = None, *,
                   allow_random: bool = False, options: dict[str, Any] | None = None,
                   predictor: Predictor | None = None,
                   fallback_model: str | None = None) -> None:
        """Build a predictor on the worker thread (``Predictor.create(model, weights,
        allow_random, **options)``), or install a ready ``predictor`` (e.g. a fine-tuned
        network wrapped with ``Predictor.from_module``). ``model_ready`` / ``model_failed``
        tell the outcome; predictions of the previous model stay cached under its version."""
        self.cancel()
        self._model_request += 1
        self.loading_model = True
        self._last_load: dict[str, Any] = {"model": model, "weights": weights, "allow_random": allow_random,
                           "options": dict(options or {}), "predictor": predictor, "fallback_model": fallback_model}
        self._load.emit({"id": self._model_request, **self._last_load})

    def reload(self, options: dict[str, Any]) -> bool:
        """Build the current network again with other ``options`` (the model panel's engine
        choice). False when there is nothing to rebuild: no model yet, or an in-memory one
        (a fine-tuned network) that cannot be loaded again by name."""
        last = getattr(self, "_last_load", None)
        if last is None or last.get("predictor") is not None:
            return False
        self.load_model(last["model"], last["weights"], allow_random=last["allow_random"], options=options,
                        fallback_model=last["fallback_model"])
        return True

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
        if self._source is None:  # (request() launches only with a source open)
            return
        source_id, path = self._source
        job = Job(self._next_id, path, source_id, list(indices), deque(indices), self.threshold, self.style)
        self._next_id += 1
        self._job = job
        self._job_keys[job.id] = (source_id, self.version)
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
        if not math.isnan(pred.uncertainty):
            self._uncertainty[(source_id, res.index, version)] = float(pred.uncertainty)
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

    def _end_job(self, job_id: int) -> bool:
        """Forget job ``job_id``; True when it was the current one (now idle)."""
        self._job_keys.pop(job_id, None)
        self._job_styles.pop(job_id, None)
        if self._job is None or self._job.id != job_id:
            return False
        self._job = None
        self.busy_changed.emit(False)
        return True

    def _on_job_finished(self, job_id: int, fps: float) -> None:
        if self._end_job(job_id) and self._last_wanted:
            self.request(self._last_wanted)

    def _on_job_failed(self, job_id: int, message: str) -> None:
        self._end_job(job_id)
        self.error.emit(message)

    def _on_model_ready(self, request_id: int, info: dict[str, Any]) -> None:
        if request_id != self._model_request:
            return
        self.loading_model = False
        self.info = dict(info)
        self.meter.reset()
        self.model_ready.emit(self.info)

    def _on_engine_measured(self, request_id: int, choice: Choice | None) -> None:
        """The background measurement is done and cached: rebuild the model (it reads the
        cached choice) when another engine won, else only tell why this one runs."""
        if request_id != self._model_request or choice is None or self.info is None:
            return
        if (choice.backend, choice.precision) != (self.info.get("backend"), self.info.get("precision")):
            self.reload(self._last_load["options"])
            return
        self.info.update(why=choice.why, engine_choice="measured")
        self.model_ready.emit(self.info)

    def _on_model_failed(self, request_id: int, message: str, offer_random: bool) -> None:
        if request_id != self._model_request:
            return
        self.loading_model = False
        self.model_failed.emit(message, offer_random)

    # -- shutdown
    def shutdown(self, timeout_ms: int = 60000) -> bool:
        """Cancel everything, stop the thread and wait for it. True when it stopped.

        A running job stops within a frame; building a model (an OpenVINO compile can take
        tens of seconds on a small CPU) cannot be interrupted, hence the long timeout."""
        self._worker.cancel_below(1 << 60)
        self._job = None
        selection = sys.modules.get("polypviewer.engine.selection")  # (imported once a model was built)
        if selection is not None:
            selection.stop_measurements()  # the engine measurement's child: nobody will read it now
        self._thread.quit()
        ok = bool(self._thread.wait(timeout_ms))
        if ok:  # the thread is gone: release its source and network from here
            self._worker.shutdown()
        return ok

    def thread(self) -> QThread:
        return self._thread
