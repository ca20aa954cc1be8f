"""Inference backends behind one interface (``base.Backend``: ``infer`` and a streaming
``submit``/``wait``), and ``make_backend``, which builds the one the policy chose.

- ``torch.py``: ``TorchBackend``, eager PyTorch (BatchNorm folded, channels_last, autocast).
- ``openvino.py``: ``OpenVINOBackend``, the same module converted by OpenVINO, its IR cached.
- ``onnxruntime.py``: ``OnnxRuntimeBackend``, the same trace exported to ONNX and run by ONNX
  Runtime's CPU provider (fp32), the export cached as OpenVINO's IR is.
- ``quantise.py``: NNCF's post-training int8 of the OpenVINO model (opt-in).

Which device, precision and backend to run is decided in ``engine/policy.py`` (re-exported
here, as callers have always found it here); pre- and post-processing live once, in
``engine/processing.py``, so backends differ only in arithmetic.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from polypviewer.engine.backends.base import (
    Backend,
    InferenceHead,
    ResultCallback,
    Stream,
    SyncStream,
    safe_stem,
    state_digest,
)
from polypviewer.engine.backends.onnxruntime import OnnxRuntimeBackend
from polypviewer.engine.backends.onnxruntime import cache_key as onnxruntime_cache_key
from polypviewer.engine.backends.openvino import OpenVINOBackend, cache_key
from polypviewer.engine.backends.quantise import calibration_digest, quantise_int8
from polypviewer.engine.backends.torch import TorchBackend
from polypviewer.engine.folding import fold_batchnorm
from polypviewer.engine.policy import (  # re-exported (__all__): the policy is part of this API
    BACKENDS,
    DEVICES,
    PRECISIONS,
    EngineError,
    check_combination,
    choose_backend,
    choose_device,
    choose_precision,
    cpu_flags,
    cpu_has_native_bf16,
    cpu_name,
    describe_cpu,
    nncf_available,
    onnxruntime_available,
    openvino_available,
    precision_reason,
)


def make_backend(kind: str, head: InferenceHead, input_size: int, *, device: str, precision: str,
                 model_name: str, cache_root: Path | None = None,
                 calibration: Sequence[np.ndarray] | None = None) -> Backend:
    """Build the chosen backend; ``kind`` and friends come from the choose_* functions.
    ``calibration``: preprocessed inputs for int8 quantisation (ignored otherwise)."""
    check_combination(kind, precision, calibration)
    if kind == "openvino":
        key = cache_key(model_name, state_digest(head), input_size, precision) if cache_root else None
        return OpenVINOBackend(head, input_size, precision=precision, cache_key=key, cache_root=cache_root,
                               calibration=calibration)
    if kind == "onnxruntime":
        key = onnxruntime_cache_key(model_name, state_digest(head), input_size, precision) if cache_root else None
        return OnnxRuntimeBackend(head, input_size, precision=precision, cache_key=key, cache_root=cache_root)
    return TorchBackend(head, input_size, device=device, precision=precision)


__all__ = ["BACKENDS", "DEVICES", "PRECISIONS", "Backend", "EngineError", "InferenceHead", "OnnxRuntimeBackend",
           "OpenVINOBackend", "ResultCallback", "Stream", "SyncStream", "TorchBackend", "cache_key",
           "calibration_digest", "check_combination", "choose_backend", "choose_device", "choose_precision",
           "cpu_flags", "cpu_has_native_bf16", "cpu_name", "describe_cpu", "fold_batchnorm", "make_backend",
           "nncf_available", "onnxruntime_available", "onnxruntime_cache_key", "openvino_available",
           "precision_reason", "quantise_int8", "safe_stem", "state_digest"]
