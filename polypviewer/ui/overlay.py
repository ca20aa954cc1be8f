"""What the overlay and the metrics show, per frame: the editable masks and the scores.

No widgets here (plain Python + numpy), so the main window stays a composer and the rules
are testable without a display.

* ``MaskSlots`` holds the *editable mask per frame*. A frame without a slot shows its
  thresholded prediction (which follows the threshold slider); the first edit creates the
  slot from the thresholded prediction, and from then on the slot is what is shown, scored
  and (later) exported. Brush tools edit the slot's array in place.
* ``FrameScores`` keeps, for the current model version and threshold, each scored frame's
  six scores (or, without ground truth, predicted area and mean confidence), which frames
  the user has seen, and the means over seen frames and over the whole source.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from polypviewer.core.metrics import SCORE_NAMES, scores


class MaskSlots:
    """Editable masks keyed by frame index (bool HxW arrays, edited in place)."""

    def __init__(self) -> None:
        self._masks: dict[int, np.ndarray] = {}

    def __contains__(self, index: int) -> bool:
        return index in self._masks

    def __len__(self) -> int:
        return len(self._masks)

    def get(self, index: int) -> np.ndarray | None:
        return self._masks.get(index)

    def ensure(self, index: int, prob: np.ndarray | None, threshold: float,
               shape: tuple[int, int] | None = None) -> np.ndarray:
        """The slot for ``index``, created from ``prob >= threshold`` (or empty, of ``shape``,
        when there is no prediction yet)."""
        mask = self._masks.get(index)
        if mask is None:
            if prob is not None:
                mask = np.ascontiguousarray(prob >= threshold)
            elif shape is not None:
                mask = np.zeros(shape, bool)
            else:
                raise ValueError("an editable mask needs a prediction or a frame size")
            self._masks[index] = mask
        return mask

    def set(self, index: int, mask: np.ndarray) -> None:
        self._masks[index] = np.ascontiguousarray(mask, dtype=bool)

    def discard(self, index: int) -> None:
        self._masks.pop(index, None)

    def clear(self) -> None:
        self._masks.clear()

    def indices(self) -> list[int]:
        return sorted(self._masks)


def area_confidence(mask: np.ndarray, prob: np.ndarray | None) -> tuple[float, float]:
    """Fraction of the frame predicted as polyp, and the mean probability inside it."""
    area = float(np.count_nonzero(mask)) / mask.size
    if prob is None or area == 0:
        return area, math.nan
    return area, float(prob[mask].mean())


class Scored(NamedTuple):
    """One frame's thresholded prediction and what the metrics panel / timeline show."""

    threshold: float
    mask: np.ndarray  # prob >= threshold
    scores: dict[str, float] | None  # None without ground truth
    area: float  # fraction of the frame
    confidence: float  # mean probability inside the mask (nan when empty)


def score_frame(prob: np.ndarray, gt: np.ndarray | None, threshold: float) -> Scored:
    """Threshold and score one probability map (runs on the inference worker thread)."""
    mask = prob >= threshold
    s = None if gt is None else {k: float(v) for k, v in scores(mask, gt).items() if k in SCORE_NAMES}
    area, conf = area_confidence(mask, prob)
    return Scored(float(threshold), mask, s, area, conf)


class FrameScores:
    """Per-frame scores for one (model version, threshold); means over seen / all frames."""

    def __init__(self, n: int = 0) -> None:
        self.reset(n)

    def reset(self, n: int) -> None:
        self.n = n
        self.per_frame: dict[int, dict[str, float]] = {}
        self.area: dict[int, tuple[float, float]] = {}
        self.seen: set[int] = set()

    def invalidate(self) -> None:
        """Threshold or model changed: scores go, the record of seen frames stays."""
        self.per_frame.clear()
        self.area.clear()

    def score(self, index: int, mask: np.ndarray, gt: np.ndarray | None,
              prob: np.ndarray | None = None) -> dict[str, float] | None:
        """Score frame ``index``'s displayed mask against ``gt`` (and note area/confidence)."""
        self.area[index] = area_confidence(mask, prob)
        if gt is None:
            self.per_frame.pop(index, None)
            return None
        s = {k: float(v) for k, v in scores(mask, gt).items() if k in SCORE_NAMES}
        self.per_frame[index] = s
        return s

    def put(self, index: int, scored: Scored) -> dict[str, float] | None:
        """Store scores computed elsewhere (the worker thread) for frame ``index``."""
        self.area[index] = (scored.area, scored.confidence)
        if scored.scores is None:
            self.per_frame.pop(index, None)
        else:
            self.per_frame[index] = dict(scored.scores)
        return scored.scores

    def get(self, index: int) -> dict[str, float] | None:
        return self.per_frame.get(index)

    def mark_seen(self, index: int) -> None:
        self.seen.add(index)

    @staticmethod
    def _mean(rows: list[dict[str, float]]) -> dict[str, float] | None:
        if not rows:
            return None
        return {k: float(np.mean([r[k] for r in rows])) for k in SCORE_NAMES}

    def seen_means(self) -> tuple[dict[str, float] | None, int]:
        rows = [self.per_frame[i] for i in sorted(self.seen) if i in self.per_frame]
        return self._mean(rows), len(rows)

    def whole_means(self) -> tuple[dict[str, float] | None, int]:
        """Means over every frame once all ``n`` are scored (None before), and how many are."""
        k = len(self.per_frame)
        if self.n == 0 or k < self.n:
            return None, k
        return self._mean(list(self.per_frame.values())), k

    def summary(self) -> dict[str, Any]:
        """Same shape as the eval JSON's ``n`` / ``mean`` (mean of per-image scores)."""
        mean = self._mean(list(self.per_frame.values()))
        return {"n": len(self.per_frame), "mean": mean or {}}
