"""int8 by NNCF post-training quantisation (opt-in, CPU, OpenVINO only).

The converted OpenVINO model is quantised by ``nncf.quantize`` with its default
"performance" preset (8-bit weights per channel, 8-bit activations per tensor) on
statistics from calibration frames the caller passes (``predict`` samples them evenly from
the source). The result is cached like the fp32 model, keyed also by the calibration frames
(``calibration_digest``) and NNCF's version. It trades accuracy for speed: ``polypviewer
bench`` measures it against fp32, and ``auto`` never picks it.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["calibration_digest", "quantise_int8"]

log = logging.getLogger(__name__)


def calibration_digest(batches: Sequence[np.ndarray]) -> str:
    """sha256 of the calibration inputs: a different calibration set is a different int8 model."""
    h = hashlib.sha256()
    for b in batches:
        b = np.ascontiguousarray(b, dtype=np.float32)
        h.update(f"{b.shape};".encode())
        h.update(b.tobytes())
    return h.hexdigest()


def quantise_int8(model: Any, calibration: Sequence[np.ndarray]) -> Any:
    """Post-training 8-bit quantisation of an OpenVINO model by NNCF.

    ``calibration``: preprocessed inputs, each (1, 3, S, S) or (3, S, S) float32. NNCF's
    defaults otherwise (performance preset, min/max statistics, fast bias correction)."""
    import nncf

    # NNCF logs each step at INFO and draws rich progress bars on stdout (where `predict`
    # prints its metrics); the caller reports the step itself.
    nncf.set_log_level(logging.ERROR)
    items = [np.ascontiguousarray(b, dtype=np.float32).reshape((1,) + np.shape(b)[-3:]) for b in calibration]
    log.info("quantising to int8 on %d calibration frames", len(items))
    with contextlib.redirect_stdout(io.StringIO()):
        return nncf.quantize(model, nncf.Dataset(items), subset_size=len(items))

