"""Inference: a ``Predictor`` (frames in, probability maps out) and, re-exported from
``engine.pipeline``, the pipelined ``PipelineRunner``.

Pre- and post-processing (``engine.processing``) are shared by every backend:

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

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from polypviewer.core.errors import PolypviewerError
from polypviewer.core.fileio import sha256_file
from polypviewer.engine.backends import Backend, InferenceHead, make_backend, state_digest
from polypviewer.engine.pipeline import FrameError, FrameResult, PipelineRunner, ProgressCallback
from polypviewer.engine.policy import (
    EngineError,
    check_combination,
    choose_backend,
    choose_device,
    choose_precision,
    precision_reason,
)
from polypviewer.engine.processing import (
    DEFAULT_THRESHOLD,
    prepare_input,
    probabilities,
    tta_inputs,
    tta_merge,
)

log = logging.getLogger(__name__)


MEASURE = ("cached", "now", "background")  # how ``auto`` may use measured engine choices


class NoWeightsError(PolypviewerError):
    """No weights were given and none are shipped for the requested model."""


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
        self._pending: tuple[Any, str, str, Path] | None = None  # what measure_in_background times

    # -- construction

    @classmethod
    def create(cls, model: str | None = None, weights: str | Path | None = None, device: str = "auto",
               precision: str = "auto", backend: str = "auto", tta: bool = False, *,
               allow_random: bool = False, threshold: float = DEFAULT_THRESHOLD,
               cache: bool = True, fallback_model: str | None = None,
               calibration: Sequence[np.ndarray] | None = None, measure: str = "cached",
               on_measure: Callable[[], None] | None = None) -> Predictor:
        """Load a network for inference.

        - ``weights`` given: the model name comes from the checkpoint's metadata unless
          ``model`` names it; the checkpoint's preprocessing wins over the registry's. A
          foreign checkpoint that names no network (the official ``PraNet-19.pth``) is
          loaded into ``fallback_model`` when given (the GUI passes the selected network).
        - neither: the shipped default weights (``models/default.json``).
        - only ``model``: the shipped default when it is that model, else random
          initialisation if ``allow_random`` (benchmarks), else ``NoWeightsError``.
        - ``precision="int8"``: ``calibration`` (RGB uint8 frames like those to come) is
          required; the network is quantised on them (see ``engine.backends``).
        - ``measure`` (``backend="auto"`` on a CPU; see ``engine.selection``): ``"cached"``
          runs the choice measured before on this machine, else the static rule;
          ``"now"`` measures first when nothing is cached (seconds); ``"background"`` runs
          as ``"cached"`` and leaves ``measure_in_background`` to the caller.
          ``on_measure`` is called just before a ``"now"`` measurement starts (the CLI says
          that it may take a while, once).
        """
        from polypviewer.nets.registry import build_model, get_spec

        # Refuse an impossible device / precision / backend before loading anything.
        dev = choose_device(device)
        prec = choose_precision(dev, precision, backend=backend)
        check_combination(choose_backend(dev, backend, prec), prec, calibration)
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
            model = ckpt.model_name or fallback_model
            if not model:
                raise PolypviewerError("the checkpoint does not say which network it is for; "
                                       "pass --model NAME", weights_path)
        if model is None:
            raise EngineError("no model given: pass --model NAME")
        spec = get_spec(model)  # an unknown name: UnknownModelError, one line naming the known ones
        net = build_model(model)
        preprocessing = spec.preprocessing
        if ckpt is not None:
            from polypviewer.nets.weights import load_weights

            load_weights(net, ckpt, model)
            preprocessing = ckpt.preprocessing or preprocessing
            assert weights_path is not None  # ckpt was loaded from it
            version = (ckpt.sha256 or sha256_file(weights_path))[:12]
        return cls.from_module(net, name=model, preprocessing=preprocessing, select=spec.select,
                               device=device, precision=precision, backend=backend, tta=tta,
                               threshold=threshold, version=version,
                               weights=str(weights_path) if weights_path else None, cache=cache,
                               calibration=calibration, measure=measure, on_measure=on_measure)

    @classmethod
    def from_module(cls, net: Any, *, name: str, preprocessing: Any,
                    select: Callable[[Any], torch.Tensor] | None = None,
                    device: str = "auto", precision: str = "auto", backend: str = "auto",
                    tta: bool = False, threshold: float = DEFAULT_THRESHOLD, version: str = "random-init",
                    weights: str | None = None, cache: bool = True,
                    calibration: Sequence[np.ndarray] | None = None, measure: str = "cached",
                    on_measure: Callable[[], None] | None = None) -> Predictor:
        """Wrap an in-memory torch network (its weights are copied; later training does not leak in).
        ``calibration``: RGB frames for int8 quantisation (required for ``precision="int8"``);
        ``measure``: as in ``create`` (a measured choice is cached only with ``cache``)."""
        import copy

        from polypviewer.core.paths import cache_dir
        from polypviewer.engine import selection
        from polypviewer.nets.registry import _last

        if measure not in MEASURE:
            raise ValueError(f"measure must be one of {', '.join(MEASURE)}, not {measure!r}")
        dev = choose_device(device)
        prec = choose_precision(dev, precision, backend=backend)
        kind = choose_backend(dev, backend, prec)
        why = precision_reason(dev, precision, prec, backend=backend)
        prepared = [prepare_input(f, preprocessing)[None] for f in calibration] \
            if prec == "int8" and calibration else None  # make_backend refuses int8 without them
        head = InferenceHead(copy.deepcopy(net).cpu().float().eval(), select or _last)
        for p in head.parameters():
            p.requires_grad_(False)
        size = int(preprocessing.input_size)
        root = cache_dir() if cache else None
        choice = None
        pending = None
        engine = "rule"  # how the backend was chosen: "asked", "rule" (static policy) or "measured"
        if backend != "auto":
            engine = "asked"
            why = f"{kind} as asked; {why}"
        elif root is not None and selection.should_measure(dev, precision):
            digest = state_digest(head)
            choice = selection.cached_choice(root, name, digest, size, precision)
            if choice is None and measure == "now":
                if on_measure is not None:
                    on_measure()
                choice = selection.measure(head, model_name=name, digest=digest, preprocessing=preprocessing,
                                           requested_precision=precision, cache_root=root)
            if choice is not None:
                kind, prec, why, engine = choice.backend, choice.precision, choice.why, "measured"
            else:
                why += f"; {kind} by the static rule: the engines are not measured on this CPU yet"
                if measure == "background":
                    pending = (head, digest, precision, root)
        else:
            why += f"; {kind} by the static rule (OpenVINO on a CPU where installed, else torch)"
        if choice is not None and prec == "int8":  # measured int8: calibrated as it was measured
            prepared = None
            calibrated = next((m.calibration_frames for m in choice.measured
                               if (m.backend, m.precision) == selection.INT8), None)
            if choice.built is None:
                images = choice.calibration_images or selection.calibration_frames()
                choice.calibration_images = None  # the frames are not kept once prepared
                prepared = [prepare_input(f, preprocessing)[None] for f in images]
                calibrated = len(prepared)
        else:
            calibrated = len(prepared) if prepared is not None else None
        if choice is not None and choice.built is not None:
            be = choice.built
        else:
            be = make_backend(kind, head, size, device=dev, precision=prec,
                              model_name=name, cache_root=root, calibration=prepared)
        info: dict[str, Any] = {
                "model": name, "weights": weights, "version": version, "device": dev,
                "precision": prec, "backend": kind, "threshold": float(threshold),
                "input_size": size, "tta": bool(tta),
                "path": be.describe(), "why": why, "engine_choice": engine}
        if choice is not None:
            info["measured"] = {m.label(): m.fps for m in choice.measured}
            info["measured_when"] = choice.when
        if calibrated is not None:
            info["calibration_frames"] = calibrated
        predictor = cls(be, preprocessing, info, tta=tta, threshold=threshold)
        predictor._pending = pending
        return predictor

    @property
    def needs_measurement(self) -> bool:
        """True when ``auto`` ran the static rule because this machine has no measured choice
        for the network yet (and ``measure="background"`` was asked for)."""
        return self._pending is not None

    def measure_in_background(self, on_done: Callable[[Any, str | None], None]) -> Any:
        """Measure the engines for this network (``engine.selection``) and cache the choice,
        then call ``on_done(choice, error)`` from a daemon thread. Weights from a file are
        measured in a child process at the lowest CPU priority (``polypviewer engines
        --background``: nothing it runs competes with this process for the interpreter);
        an in-memory network on a thread here. A caller that wants the choice builds the
        predictor again (it reads the cache). Returns the waiting thread, or None when there
        is nothing to measure."""
        from polypviewer.engine import selection

        if self._pending is None:
            return None
        head, digest, requested, root = self._pending
        self._pending = None
        name = self._info["model"]
        weights = self._info.get("weights")
        if weights and Path(weights).is_file():
            size = int(self.preprocessing.input_size)
            command = [*selection.own_command(), "engines", "--weights", str(weights), "--model", name,
                       "--precision", requested, "--device", "cpu", "--seconds", repr(selection.SECONDS),
                       "--background"]
            return selection.measure_in_child(
                command, cache_root=root, on_done=on_done,
                read=lambda: selection.cached_choice(root, name, digest, size, requested))
        return selection.measure_in_background(
            lambda: selection.measure(head, model_name=name, digest=digest, preprocessing=self.preprocessing,
                                      requested_precision=requested, cache_root=root, keep_built=False),
            on_done)

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
        return tta_merge(self.backend.infer(tta_inputs(batch)))

    def predict(self, frames: Sequence[np.ndarray]) -> list[np.ndarray]:
        """RGB uint8 frames -> float32 probability maps, each at its frame's size."""
        if len(frames) == 0:
            return []
        batch = np.stack([self.prepare(f) for f in frames])
        logits = self.logits(batch)
        return [probabilities(lg, f.shape[:2]) for lg, f in zip(logits, frames, strict=True)]

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

    return load_checkpoint(path)  # names a missing file, a link loop, a folder, in one line


__all__ = ["DEFAULT_THRESHOLD", "FrameError", "FrameResult", "NoWeightsError", "PipelineRunner",
           "Predictor", "ProgressCallback", "prepare_input", "probabilities"]
