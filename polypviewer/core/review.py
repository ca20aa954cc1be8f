"""The review model: which mask each frame shows and how it is scored (numpy only, no Qt).

The review window renders it (napari keeps its layer model apart from its Qt view the same
way); every rule about what is shown lives here, testable without a display:

* A frame's shown mask is its edited mask when the :class:`~polypviewer.core.edits.EditSession`
  has one (the session is the one owner of every edited mask; the window never copies it),
  else its thresholded prediction, which follows the threshold; an edited frame ignores the
  threshold from then on.
* :class:`FrameScores` keeps, for the current model version and threshold, each scored
  frame's six scores (or, without ground truth, predicted area and mean confidence), which
  frames the user has seen, and the means over seen frames and over the whole source.
  :func:`score_frame` is the same scoring on the inference worker thread; its result is
  taken as it is only for an unedited frame at the threshold it was scored at.
* ``scores`` are those of the masks as shown (corrected where the session has an edited
  mask, the model's elsewhere); ``model_scores`` are always those of the model's own
  thresholded prediction, edited or not, so the reviewer sees both side by side: how good
  the model is, and how good the masks are now.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple, Protocol

import numpy as np

from polypviewer.core.edits import EditSession
from polypviewer.core.metrics import SCORE_NAMES, scores

__all__ = ["Predictions", "Scored", "score_frame", "area_confidence", "FrameScores", "ReviewModel"]


class Predictions(Protocol):
    """The running model's cached results, by frame (the window's prediction service)."""

    def cached(self, index: int) -> np.ndarray | None:
        """The probability map of frame ``index`` (float HxW in 0..1), or None."""

    def cached_mask(self, index: int, threshold: float) -> np.ndarray | None:
        """``cached(index) >= threshold`` (cached too), or None."""


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


class ReviewModel:
    """What the review window shows for each frame of one source: the mask and its scores.

    ``predictions`` gives the running model's cached maps; ``session`` (replaced through
    :meth:`use_session`) the edited masks; ``threshold`` applies to unedited frames.
    """

    def __init__(self, predictions: Predictions, threshold: float = 0.5) -> None:
        self.predictions = predictions
        self.threshold = float(threshold)
        self.session = EditSession()
        self.scores = FrameScores()  # the shown masks (corrected where edited)
        self.model_scores = FrameScores()  # the model's thresholded predictions, always
        self.has_gt = False

    # -- the source and its masks ------------------------------------------------------------
    def open(self, n: int, has_gt: bool) -> None:
        """A new source of ``n`` frames: no edits (until :meth:`use_session`), nothing scored."""
        self.session = EditSession()
        self.scores.reset(n)
        self.model_scores.reset(n)
        self.has_gt = bool(has_gt)

    def use_session(self, session: EditSession) -> None:
        """Show and score ``session``'s masks from now on (their scores are recomputed)."""
        edited = set(self.session.frames) | set(session.frames)
        self.session = session
        for f in edited:
            self.scores.per_frame.pop(f, None)
            self.scores.area.pop(f, None)

    def is_edited(self, index: int) -> bool:
        """True when the frame shows an edited mask (the threshold no longer applies to it)."""
        return self.session.mask(index) is not None

    def shown_mask(self, index: int) -> np.ndarray | None:
        """The mask shown for frame ``index``: the session's (the very array, edited in place),
        else the thresholded prediction; None while there is neither."""
        mask = self.session.mask(index)
        if mask is not None:
            return mask
        return self.predictions.cached_mask(index, self.threshold)

    # -- scores ---------------------------------------------------------------------------------
    def score(self, index: int, gt: np.ndarray | None, prob: np.ndarray | None = None) -> bool:
        """Score frame ``index``'s shown mask against ``gt``; False when it has no mask yet.
        ``prob`` (default: the cached map) gives the mean confidence inside the mask."""
        prob = self.predictions.cached(index) if prob is None else prob
        mask = self.session.mask(index)
        if mask is None:
            if prob is None:
                return False
            mask = prob >= self.threshold
            s = self.scores.score(index, mask, gt, prob)
            self._put_model(index, s, self.scores.area[index])
            return True
        self.scores.score(index, mask, gt, prob)
        if prob is not None and index not in self.model_scores.area:
            self.model_scores.score(index, prob >= self.threshold, gt, prob)
        return True

    def _put_model(self, index: int, s: dict[str, float] | None, area: tuple[float, float]) -> None:
        self.model_scores.area[index] = area
        if s is None:
            self.model_scores.per_frame.pop(index, None)
        else:
            self.model_scores.per_frame[index] = dict(s)

    def take_scored(self, index: int, scored: Scored | None) -> bool:
        """Use the worker thread's scores of frame ``index`` when they are of what is shown (an
        unedited frame at the current threshold); False when the frame must be scored here."""
        if scored is None or scored.threshold != self.threshold:
            return False
        self.model_scores.put(index, scored)  # the model's own, edited frame or not
        if self.is_edited(index):
            return False
        self.scores.put(index, scored)
        return True

    def mark_seen(self, index: int) -> None:
        """The user has seen frame ``index`` (both seen means count it)."""
        self.scores.mark_seen(index)
        self.model_scores.mark_seen(index)

    def needs_score(self, index: int) -> bool:
        """Frame ``index`` has a mask to show (edited, or a cached prediction) and no score yet."""
        if index in self.scores.area:
            return False
        return self.is_edited(index) or self.predictions.cached(index) is not None

    def timeline_value(self, index: int) -> tuple[float, float]:
        """What the per-frame strip draws: ``(dice, nan)`` with ground truth, else
        ``(area, mean confidence)``; NaNs while the frame is not scored."""
        s = self.scores.get(index)
        if s is not None:
            return s["dice"], math.nan
        return self.scores.area.get(index, (math.nan, math.nan))

    def set_threshold(self, value: float) -> bool:
        """A new threshold (unedited frames follow it; every score goes); False if unchanged."""
        if math.isclose(value, self.threshold):
            return False
        self.threshold = float(value)
        self.scores.invalidate()
        self.model_scores.invalidate()
        return True

    def invalidate(self) -> None:
        """Another model version: every score goes (the record of seen frames stays)."""
        self.scores.invalidate()
        self.model_scores.invalidate()

    def no_gt_note(self, index: int) -> str:
        """The metrics panel's line for a source without ground truth ("" when it has some)."""
        if self.has_gt:
            return ""
        area, conf = self.scores.area.get(index, (math.nan, math.nan))
        return "No ground truth in this source. " + ("" if math.isnan(area) else
                                                      f"Predicted polyp area: {100 * area:.1f} % of the frame"
                                                      + ("" if math.isnan(conf) else f", mean confidence {conf:.2f}")
                                                      + ".")
