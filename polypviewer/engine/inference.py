"""Inference: a ``Predictor`` (frames in, probability maps out) and a pipelined ``PipelineRunner``.

Pre- and post-processing happen here, once, whichever backend runs the network:

- preprocessing: ``cv2.resize(frame, (S, S), INTER_LINEAR)`` (bilinear, half-pixel centres,
  no antialiasing), colour order per the model (RGB for PraNet, BGR for ResUNet++), /255,
  per-channel mean/std. PraNet's reference test script resizes with PIL's bilinear filter,
  which antialiases when shrinking; on EndoTect frames (720x576 -> 352) the two differ by
  about 1.5/255 per pixel on average. We use OpenCV's: it is ~10x faster, it is exactly
  what the Keras ResUNet++ reference does, and ``prepare_input`` is public so training
  feeds the networks the same way.
- postprocessing: the selected map's logits are resized bilinearly (``INTER_LINEAR`` ==
  ``align_corners=False``) to the frame's size, then sigmoid; the mask is ``prob >= threshold``.
- test-time augmentation (off by default): the frame, its horizontal and its vertical flip;
  the logits are flipped back and averaged before the sigmoid.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import cv2
import numpy as np

from polypviewer.core.errors import PolypviewerError
from polypviewer.engine.backends import (Backend, EngineError, InferenceHead, choose_backend,
                                         choose_device, choose_precision, make_backend)

log = logging.getLogger(__name__)

DEFAULT_THRESHOLD = 0.5


class NoWeightsError(PolypviewerError):
    """No weights were given and none are shipped for the requested model."""


class FrameError(PolypviewerError):
    """One frame could not be read or predicted; the run goes on without it."""


# --------------------------------------------------------------------------- pre/post


def prepare_input(frame: np.ndarray, preprocessing: Any) -> np.ndarray:
    """RGB uint8 (H, W, 3) -> the network's input (3, S, S) float32 for ``preprocessing``
    (a ``nets.registry.Preprocessing``)."""
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"expected an RGB frame (H, W, 3), got shape {frame.shape}")
    s = int(preprocessing.input_size)
    img = frame if frame.shape[:2] == (s, s) else cv2.resize(frame, (s, s), interpolation=cv2.INTER_LINEAR)
    if preprocessing.color_order.upper() == "BGR":
        img = img[:, :, ::-1]
    mean = np.asarray(preprocessing.mean, dtype=np.float32)
    std = np.asarray(preprocessing.std, dtype=np.float32)
    # (x/255 - mean)/std as one multiply-add per pixel.
    scale = 1.0 / (255.0 * std)
    x = img.astype(np.float32) * scale - mean / std
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def probabilities(logits: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Logits (h, w) -> probabilities float32 at ``size`` = (H, W): bilinear resize, sigmoid."""
    h, w = size
    x = logits if logits.shape == (h, w) else cv2.resize(logits, (w, h), interpolation=cv2.INTER_LINEAR)
    x = np.array(x, dtype=np.float32, copy=True)
    with np.errstate(over="ignore"):  # exp overflow -> inf -> probability 0, as it should
        np.negative(x, out=x)
        np.exp(x, out=x)
        x += 1.0
        np.reciprocal(x, out=x)
    return x


def _tta_inputs(x: np.ndarray) -> np.ndarray:
    """(N, 3, S, S) -> (3N, 3, S, S): identity, horizontal flip, vertical flip."""
    return np.concatenate([x, x[..., ::-1], x[..., ::-1, :]]).copy()


def _tta_merge(logits: np.ndarray) -> np.ndarray:
    n = len(logits) // 3
    a, h, v = logits[:n], logits[n:2 * n, :, ::-1], logits[2 * n:, ::-1, :]
    return ((a + h + v) / 3.0).astype(np.float32)


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------- predictor


class Predictor:
    """A network ready to segment frames: ``predict(frames) -> probabilities``.

    Build it with ``Predictor.create`` (by name / checkpoint) or ``Predictor.from_module``
    (an in-memory network, e.g. right after fine-tuning).
    """

    def __init__(self, backend: Backend, preprocessing: Any, info: dict[str, Any], *,
                 tta: bool = False, threshold: float = DEFAULT_THRESHOLD) -> None:
        self.backend = backend
        self.preprocessing = preprocessing
        self.tta = tta
        self.threshold = float(threshold)
        self._info = dict(info)

    # -- construction

    @classmethod
    def create(cls, model: str | None = None, weights: str | Path | None = None, device: str = "auto",
               precision: str = "auto", backend: str = "auto", tta: bool = False, *,
               allow_random: bool = False, threshold: float = DEFAULT_THRESHOLD,
               cache: bool = True) -> "Predictor":
        """Load a network for inference.

        - ``weights`` given: the model name comes from the checkpoint's metadata unless
          ``model`` names it; the checkpoint's preprocessing wins over the registry's.
        - neither: the shipped default weights (``models/default.json``).
        - only ``model``: the shipped default when it is that model, else random
          initialisation if ``allow_random`` (benchmarks), else ``NoWeightsError``.
        """
        from polypviewer.nets.registry import build_model, get_spec

        # Refuse an impossible device / precision / backend before loading anything.
        dev = choose_device(device)
        choose_backend(dev, backend)
        choose_precision(dev, precision)
        ckpt = None
        version = "random-init"
        weights_path: Path | None = Path(weights) if weights is not None else None
        if weights_path is None:
            default = _default_weights()
            if default is not None:
                default_ckpt = _load_checkpoint(default)
                default_model = default_ckpt.model_name
                if model is None or model == default_model:
                    weights_path, ckpt = default, default_ckpt
            if weights_path is None and not allow_random:
                what = f"for model {model!r}" if model else "(no models/default.json)"
                raise NoWeightsError(f"no weights given and none are shipped {what}; pass --weights FILE "
                                     "(or --allow-random to run an untrained network, for benchmarks)")
        elif ckpt is None:
            ckpt = _load_checkpoint(weights_path)
        if ckpt is not None and model is None:
            model = ckpt.model_name
            if not model:
                raise PolypviewerError("the checkpoint does not say which network it is for; "
                                       "pass --model NAME", weights_path)
        if model is None:
            raise EngineError("no model given: pass --model NAME")
        try:
            spec = get_spec(model)
        except KeyError as exc:
            raise EngineError(str(exc.args[0])) from None
        net = build_model(model)
        preprocessing = spec.preprocessing
        if ckpt is not None:
            from polypviewer.nets.weights import load_weights

            load_weights(net, ckpt, model)
            preprocessing = ckpt.preprocessing or preprocessing
            version = (ckpt.sha256 or file_sha256(weights_path))[:12]  # type: ignore[arg-type]
        return cls.from_module(net, name=model, preprocessing=preprocessing, select=spec.select,
                               device=device, precision=precision, backend=backend, tta=tta,
                               threshold=threshold, version=version,
                               weights=str(weights_path) if weights_path else None, cache=cache)

    @classmethod
    def from_module(cls, net: Any, *, name: str, preprocessing: Any, select: Callable | None = None,
                    device: str = "auto", precision: str = "auto", backend: str = "auto",
                    tta: bool = False, threshold: float = DEFAULT_THRESHOLD, version: str = "random-init",
                    weights: str | None = None, cache: bool = True) -> "Predictor":
        """Wrap an in-memory torch network (its weights are copied; later training does not leak in)."""
        import copy

        from polypviewer.core.paths import cache_dir
        from polypviewer.nets.registry import _last

        dev = choose_device(device)
        prec = choose_precision(dev, precision)
        kind = choose_backend(dev, backend)
        head = InferenceHead(copy.deepcopy(net).cpu().float().eval(), select or _last)
        for p in head.parameters():
            p.requires_grad_(False)
        be = make_backend(kind, head, int(preprocessing.input_size), device=dev, precision=prec,
                          model_name=name, cache_root=cache_dir() if cache else None)
        info = {"model": name, "weights": weights, "version": version, "device": dev,
                "precision": prec, "backend": kind, "threshold": float(threshold),
                "input_size": int(preprocessing.input_size), "tta": bool(tta),
                "path": be.describe()}
        return cls(be, preprocessing, info, tta=tta, threshold=threshold)

    # -- use

    @property
    def info(self) -> dict[str, Any]:
        """model, weights, version (sha256[:12] of the weights or "random-init"), device,
        precision, backend, threshold, input_size, tta, path (the backend in words)."""
        return {**self._info, "threshold": self.threshold, "tta": self.tta}

    def prepare(self, frame: np.ndarray) -> np.ndarray:
        return prepare_input(frame, self.preprocessing)

    def logits(self, batch: np.ndarray) -> np.ndarray:
        """Preprocessed (N, 3, S, S) -> logits (N, S', S'), with TTA when enabled."""
        if not self.tta:
            return self.backend.infer(batch)
        return _tta_merge(self.backend.infer(_tta_inputs(batch)))

    def predict(self, frames: Sequence[np.ndarray]) -> list[np.ndarray]:
        """RGB uint8 frames -> float32 probability maps, each at its frame's size."""
        if len(frames) == 0:
            return []
        batch = np.stack([self.prepare(f) for f in frames])
        logits = self.logits(batch)
        return [probabilities(lg, f.shape[:2]) for lg, f in zip(logits, frames)]

    def mask(self, prob: np.ndarray) -> np.ndarray:
        return prob >= self.threshold


def _default_weights() -> Path | None:
    try:
        from polypviewer.nets.weights import default_weights
    except ImportError:  # weights module not available: nothing is shipped
        return None
    return default_weights()


def _load_checkpoint(path: Path) -> Any:
    from polypviewer.nets.weights import load_checkpoint

    if not Path(path).is_file():
        raise PolypviewerError("weights file not found", path)
    return load_checkpoint(path)


# --------------------------------------------------------------------------- pipeline


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

    def __init__(self, source: Any, predictor: Predictor, indices: Sequence[int] | None = None, *,
                 batch_size: int | None = None, max_queue: int = 8,
                 on_progress: ProgressCallback | None = None, with_gt: bool = True) -> None:
        self.source = source
        self.predictor = predictor
        self.indices = list(range(len(source))) if indices is None else [int(i) for i in indices]
        self.batch_size = max(1, batch_size or predictor.backend.preferred_batch)
        self.max_queue = max(1, max_queue)
        self.on_progress = on_progress
        self.with_gt = with_gt and bool(getattr(source, "has_masks", False))
        self._jobs: queue.Queue = queue.Queue(self.max_queue)
        self._out: queue.Queue = queue.Queue(self.max_queue)
        self._cancel = threading.Event()
        self._threads: list[threading.Thread] = []
        self._started = False
        self.done = 0
        self.failed = 0
        self._t0 = 0.0

    # -- control

    def start(self) -> "PipelineRunner":
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

    def __enter__(self) -> "PipelineRunner":
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

    def _put(self, q: queue.Queue, item: Any) -> bool:
        while not self._cancel.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _get(self, q: queue.Queue) -> Any:
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
                job.error = FrameError(f"could not read frame: {type(exc).__name__}: {exc}", job.name)
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
                    j.error = FrameError(f"inference failed: {type(exc).__name__}: {exc}", j.name)
                    self._emit(j, None, threshold)
        if stream is not None:
            try:
                stream.wait()
            except Exception as exc:  # noqa: BLE001
                log.error("inference stream failed at the end of the run: %s", exc)
        self._put(self._out, _END)

    def _deliver(self, threshold: float) -> Callable[[Any, np.ndarray], None]:
        def on_result(jobs: list[_Job], logits: np.ndarray) -> None:
            for j, lg in zip(jobs, logits):
                try:
                    prob = probabilities(lg, j.frame.shape[:2])  # type: ignore[union-attr]
                except Exception as exc:  # noqa: BLE001
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


__all__ = ["DEFAULT_THRESHOLD", "FrameError", "FrameResult", "NoWeightsError", "PipelineRunner",
           "Predictor", "prepare_input", "probabilities"]
