"""How closely a fast inference path agrees with fp32, and the scale to read that on.

``compare`` scores paired probability maps (mean |dp| and the Dice of the thresholded masks);
``noise_floor`` is fp32 against itself under invisible input noise; ``agrees`` applies the
bar (:data:`AGREEMENT`). Used by ``polypviewer bench``, the engine tests and any caller that
must decide whether a path is exact enough.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from polypviewer.core.masks import THRESHOLD
from polypviewer.engine.processing import probabilities

__all__ = ["AGREEMENT", "agrees", "compare", "noise_floor"]

AGREEMENT = {"mean_abs_diff": 0.01, "dice": 0.98}  # the bar: fast path vs fp32


def agrees(agreement: dict[str, float] | None) -> bool:
    return (agreement is not None and bool(agreement)
            and agreement["mean_abs_diff"] < AGREEMENT["mean_abs_diff"] and agreement["dice"] > AGREEMENT["dice"])


def compare(a: list[Any], b: list[Any]) -> dict[str, float] | None:
    """Mean |a - b| and Dice of the thresholded masks, over paired probability maps."""
    if not a:
        return None
    mad = float(np.mean([np.abs(p - q).mean() for p, q in zip(a, b, strict=True)]))
    inter = sum(int(((p >= THRESHOLD) & (q >= THRESHOLD)).sum()) for p, q in zip(a, b, strict=True))
    total = sum(int((p >= THRESHOLD).sum() + (q >= THRESHOLD).sum()) for p, q in zip(a, b, strict=True))
    return {"images": len(a), "mean_abs_diff": round(mad, 5),
            "dice": round(2 * inter / total, 5) if total else 1.0}


def noise_floor(ref: Any, frames: list[Any], clean: list[Any] | None = None) -> dict[str, float] | None:
    """The fp32 network against itself with invisible input noise (uniform, +-0.5 of an
    8-bit grey level, i.e. below the frames' own quantisation), scored like ``compare``.
    ``clean``: ``ref.predict(frames)`` when the caller has it already.

    A fast path cannot be expected to agree with fp32 better than fp32 agrees with itself
    under noise no camera or codec avoids: an untrained or weakly trained network is chaotic
    and flips pixels under such noise; a well-trained one barely moves."""
    if not frames:
        return None
    rs = np.random.RandomState(0)
    std = np.asarray(ref.preprocessing.std, dtype=np.float32).reshape(3, 1, 1)
    noisy = []
    for f in frames:
        x = ref.prepare(f)[None]
        x = x + ((rs.random_sample(x.shape) - 0.5) / 255.0 / std).astype(np.float32)
        noisy.append(probabilities(ref.logits(x)[0], f.shape[:2]))
    return compare(noisy, ref.predict(frames) if clean is None else clean)
