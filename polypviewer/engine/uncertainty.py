"""Per-frame uncertainty: which frame should a reviewer look at (and correct) next.

Everything here is computed from the probability map the look-ahead already produces (no
extra forward pass), on a strided view of it (about ``SIDE`` x ``SIDE`` samples: the map is
a bilinear upsampling of the network's 256 px output, so sampling it more finely adds
nothing but time). Candidate scores (``candidates``), higher = less sure:

- ``entropy``: mean binary entropy (bits) over the whole frame;
- ``entropy_region``: the summed entropy divided by the size of the predicted region
  (``p >= threshold``, at least ``MIN_REGION`` of the frame): how much of the predicted
  polyp is unsure, so a large confident polyp scores low and a faint blob high;
- ``soft_dice_gap``: 1 - soft Dice between the map and its own thresholded mask (0 when
  every pixel is 0 or 1);
- ``low_confidence``: 1 - the mean probability inside the predicted region (what the
  timeline's "least confident" marks already use); 1 for an empty prediction;
- ``confidence_gap``: the same for a non-empty prediction, and for an empty one the highest
  probability anywhere (how close the model came to seeing a polyp): an empty prediction is
  sure when every pixel is near 0, so polyp-free video frames do not all rank first.

``flip_disagreement`` (needs one extra forward pass of the flipped frame) and
``temporal_change`` (needs the neighbouring frames' maps) are measured beside them by
``benchmarks/bench_uncertainty.py``; ``SCORE`` names the one the app uses, chosen there on
training frames (see the README's table). ``most_uncertain`` ranks frames for review.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from polypviewer.core.masks import THRESHOLD

SIDE = 256  # the strided view keeps about SIDE x SIDE samples of the map
MIN_REGION = 0.01  # entropy_region divides by at least 1 % of the frame
EPS = 1e-6
# The score the app plots and ranks by: the best of the free candidates on the choice sets of
# benchmarks/bench_uncertainty.py (pooled Spearman with 1 - Dice 0.685; flips 0.702 for twice
# the inference; see the README's table).
SCORE = "confidence_gap"

__all__ = ["SCORE", "SIDE", "candidates", "flip_disagreement", "frame_uncertainty", "most_uncertain",
           "next_to_review", "strided", "temporal_change"]


def strided(prob: np.ndarray, side: int = SIDE) -> np.ndarray:
    """A view of ``prob`` (H, W) keeping every k-th row and column, about ``side`` of each."""
    if prob.ndim != 2:
        raise ValueError(f"expected a probability map (H, W), got shape {prob.shape}")
    sy = max(1, prob.shape[0] // side)
    sx = max(1, prob.shape[1] // side)
    return prob[::sy, ::sx]


def _entropy(p: np.ndarray) -> np.ndarray:
    q = np.clip(p.astype(np.float32, copy=False), EPS, 1.0 - EPS)
    out: np.ndarray = -(q * np.log2(q) + (1.0 - q) * np.log2(1.0 - q))
    return out


def candidates(prob: np.ndarray, threshold: float = THRESHOLD) -> dict[str, float]:
    """Every candidate score of one probability map (see the module's docstring)."""
    p = strided(prob)
    ent = _entropy(p)
    mask = p >= threshold
    area = int(np.count_nonzero(mask))
    n = p.size
    region = max(area, int(np.ceil(MIN_REGION * n)))
    inter = float(p[mask].sum()) if area else 0.0
    total = float(p.sum()) + area
    return {
        "entropy": float(ent.mean()),
        "entropy_region": float(ent.sum()) / region,
        "soft_dice_gap": 1.0 - (2.0 * inter / total if total > 0 else 1.0),
        "low_confidence": 1.0 - (inter / area if area else 0.0),
        "confidence_gap": 1.0 - inter / area if area else float(p.max()),
    }


def frame_uncertainty(prob: np.ndarray, threshold: float = THRESHOLD, score: str = SCORE) -> float:
    """The app's per-frame uncertainty (``SCORE``) of one probability map: 0 = sure."""
    return candidates(prob, threshold)[score]


def flip_disagreement(prob: np.ndarray, prob_flipped_back: np.ndarray, threshold: float = THRESHOLD) -> float:
    """1 - Dice between the masks of a frame and of its flipped copy (flipped back): costs one
    extra forward pass per frame. Both empty counts as agreement."""
    a = strided(prob) >= threshold
    b = strided(prob_flipped_back) >= threshold
    sa, sb = int(np.count_nonzero(a)), int(np.count_nonzero(b))
    if sa + sb == 0:
        return 0.0
    return 1.0 - 2.0 * int(np.count_nonzero(a & b)) / (sa + sb)


def temporal_change(prob: np.ndarray, neighbours: Iterable[np.ndarray], threshold: float = THRESHOLD) -> float:
    """Mean over the neighbouring frames' maps (same size) of 1 - Dice with this frame's mask;
    0 without neighbours."""
    a = strided(prob) >= threshold
    sa = int(np.count_nonzero(a))
    out = []
    for nb in neighbours:
        b = strided(nb) >= threshold
        sb = int(np.count_nonzero(b))
        out.append(0.0 if sa + sb == 0 else 1.0 - 2.0 * int(np.count_nonzero(a & b)) / (sa + sb))
    return float(np.mean(out)) if out else 0.0


def most_uncertain(scores: Mapping[int, float], k: int, *, exclude: Iterable[int] = (),
                   min_gap: int = 0) -> list[int]:
    """The ``k`` frames with the highest uncertainty, most uncertain first, skipping
    ``exclude`` (e.g. reviewed frames) and NaN scores. ``min_gap`` > 0 keeps picked frames
    at least that many indices apart (neighbouring video frames are near-duplicates: one
    correction teaches what its neighbours would). Ties go to the lower index."""
    if k <= 0:
        return []
    skip = set(exclude)
    ranked = sorted(((-float(v), int(i)) for i, v in scores.items()
                     if int(i) not in skip and np.isfinite(v)))
    picked: list[int] = []
    for _, i in ranked:
        if min_gap > 0 and any(abs(i - j) < min_gap for j in picked):
            continue
        picked.append(i)
        if len(picked) == k:
            break
    return picked


def next_to_review(scores: Mapping[int, float], current: int, reviewed: Iterable[int] = (), *,
                   walking: bool = False) -> int | None:
    """Where the "most uncertain unreviewed frame" key goes from ``current``: the most
    uncertain frame not in ``reviewed``. ``walking`` (the key brought the user to ``current``
    and it is still unreviewed), or ``current`` being that frame already: the next one down
    the ranking (wrapping), so pressing the key again walks the list while reviewing a frame
    takes it off. None when no unreviewed frame has a score."""
    ranked = most_uncertain(scores, len(scores), exclude=reviewed)
    if not ranked:
        return None
    if current in ranked and (walking or ranked[0] == current):
        return ranked[(ranked.index(current) + 1) % len(ranked)]
    return ranked[0]
