"""The review model (core/review.py), no Qt: which mask a frame shows (the session's edited
mask, else the thresholded prediction), and how frames are scored and when the worker's
scores are taken as they are."""

from __future__ import annotations

import math

import numpy as np
import pytest

from polypviewer.core.edits import EditSession
from polypviewer.core.metrics import scores
from polypviewer.core.review import FrameScores, ReviewModel, area_confidence, score_frame

from .conftest import two_masks

_masks = two_masks


class FakePredictions:
    """The cache the window's prediction service keeps: frame -> probability map."""

    def __init__(self, probs):
        self.probs = probs
        self.mask_calls = 0

    def cached(self, index):
        return self.probs.get(index)

    def cached_mask(self, index, threshold):
        self.mask_calls += 1
        p = self.probs.get(index)
        return None if p is None else p >= threshold


def test_frame_scores_means_seen_and_whole():
    pred, gt = _masks()
    fs = FrameScores(2)
    s0 = fs.score(0, pred, gt)
    assert s0["dice"] == pytest.approx(2 * 200 / (600 + 600))
    assert s0 == pytest.approx(scores(pred, gt))
    assert fs.whole_means() == (None, 1)
    fs.mark_seen(0)
    fs.score(1, gt, gt)
    seen, n_seen = fs.seen_means()
    assert n_seen == 1 and seen["dice"] == pytest.approx(s0["dice"])
    whole, k = fs.whole_means()
    assert k == 2 and whole["dice"] == pytest.approx((s0["dice"] + 1.0) / 2)
    fs.invalidate()
    assert fs.get(0) is None and fs.seen == {0}
    assert fs.score(0, pred, None, np.full(pred.shape, 0.75, np.float32)) is None
    assert fs.area[0] == pytest.approx((600 / 2400, 0.75))


def test_area_confidence_empty():
    area, conf = area_confidence(np.zeros((4, 4), bool), np.zeros((4, 4), np.float32))
    assert area == 0 and np.isnan(conf)


def _model():
    prob = np.linspace(0, 1, 40 * 60, dtype=np.float32).reshape(40, 60)
    preds = FakePredictions({0: prob, 1: prob[::-1].copy()})
    review = ReviewModel(preds)
    review.open(3, has_gt=True)
    return review, preds, prob


def test_an_unedited_frame_shows_its_thresholded_prediction_and_follows_the_threshold():
    review, _, prob = _model()
    np.testing.assert_array_equal(review.shown_mask(0), prob >= 0.5)
    assert review.set_threshold(0.8) and not review.set_threshold(0.8)
    np.testing.assert_array_equal(review.shown_mask(0), prob >= 0.8)
    assert review.shown_mask(2) is None  # no prediction yet, no edit: nothing to show
    assert not review.is_edited(0)


def test_an_edited_frame_shows_the_sessions_own_array_whatever_the_threshold():
    review, _, prob = _model()
    session = EditSession()
    edits = session.start(0, prob >= 0.5)
    review.use_session(session)
    assert review.is_edited(0) and review.shown_mask(0) is edits.mask  # the one owner, no copy
    edits.clear()
    review.set_threshold(0.1)
    assert review.shown_mask(0) is edits.mask and not review.shown_mask(0).any()
    review.open(3, has_gt=True)  # another source: the old session's masks are not shown
    assert not review.is_edited(0)
    np.testing.assert_array_equal(review.shown_mask(0), prob >= 0.1)


def test_scores_are_of_the_shown_mask():
    review, _, prob = _model()
    pred, gt = _masks()
    assert review.score(0, gt)
    assert review.scores.get(0) == pytest.approx(scores(prob >= 0.5, gt))
    assert review.timeline_value(0)[0] == pytest.approx(scores(prob >= 0.5, gt)["dice"])
    assert not review.score(2, gt)  # nothing shown yet: nothing scored
    assert review.needs_score(1) and not review.needs_score(0) and not review.needs_score(2)
    session = EditSession()
    session.start(0, prob >= 0.5).replace(gt, "perfect")
    review.use_session(session)
    assert review.needs_score(0)  # the new session's masks are scored again
    review.score(0, gt)
    assert review.scores.get(0)["dice"] == 1.0
    assert review.set_threshold(0.7)  # every score goes; the edited frame still scores 1.0
    assert review.scores.get(0) is None and review.needs_score(0)
    review.score(0, gt)
    assert review.scores.get(0)["dice"] == 1.0


def test_the_workers_scores_are_taken_only_for_what_is_shown():
    review, _, prob = _model()
    _, gt = _masks()
    assert review.take_scored(1, score_frame(prob, gt, 0.5))
    assert review.scores.get(1) == pytest.approx(scores(prob >= 0.5, gt))
    assert not review.take_scored(1, score_frame(prob, gt, 0.6))  # another threshold
    assert not review.take_scored(1, None)
    session = EditSession()
    session.start(0, prob >= 0.5)
    review.use_session(session)
    assert not review.take_scored(0, score_frame(prob, gt, 0.5))  # edited: scored here, not there


def test_without_ground_truth_the_strip_shows_area_and_confidence():
    review, _, prob = _model()
    review.open(3, has_gt=False)
    assert review.score(0, None)
    area, conf = review.timeline_value(0)
    assert area == pytest.approx(np.count_nonzero(prob >= 0.5) / prob.size)
    assert conf == pytest.approx(float(prob[prob >= 0.5].mean()))
    assert review.no_gt_note(0) == (f"No ground truth in this source. Predicted polyp area: {100 * area:.1f} % "
                                    f"of the frame, mean confidence {conf:.2f}.")
    assert review.no_gt_note(2) == "No ground truth in this source. "
    assert all(math.isnan(v) for v in review.timeline_value(2))
    review.open(3, has_gt=True)
    assert review.no_gt_note(0) == ""
