"""Per-frame uncertainty (engine.uncertainty): the scores' rules, the ranking, and on real frames
that it ranks the default model's bad predictions above its good ones."""

from __future__ import annotations

import json

import numpy as np
import pytest

from polypviewer.core.paths import shared_data_default
from polypviewer.engine import uncertainty as U

DATA = shared_data_default()


def test_sure_maps_score_zero_and_faint_ones_high() -> None:
    sure = np.zeros((288, 384), np.float32)
    sure[100:200, 100:200] = 1.0
    faint = np.zeros_like(sure)
    faint[100:200, 100:200] = 0.55
    for name in ("entropy", "entropy_region", "soft_dice_gap", "low_confidence", "confidence_gap"):
        c_sure, c_faint = U.candidates(sure)[name], U.candidates(faint)[name]
        assert c_sure == pytest.approx(0.0, abs=1e-3), name
        assert c_faint > c_sure + 0.05, name  # the frame mean is diluted by the sure background
        if name != "entropy":
            assert c_faint > 0.25, name
    assert U.frame_uncertainty(faint) > U.frame_uncertainty(sure)


def test_empty_prediction_confidence_gap_is_the_highest_probability() -> None:
    prob = np.full((100, 120), 0.01, np.float32)
    assert U.candidates(prob)["low_confidence"] == 1.0  # any empty prediction: maximally unsure
    assert U.candidates(prob)["confidence_gap"] == pytest.approx(0.01)  # near 0 everywhere: sure
    prob[50, 60] = 0.45  # a near miss (kept by the strided view: row/col 0 mod stride)
    assert U.candidates(prob)["confidence_gap"] == pytest.approx(0.45)


def test_strided_view_keeps_about_side_samples() -> None:
    prob = np.zeros((1080, 1920), np.float32)
    view = U.strided(prob)
    assert 256 <= view.shape[0] <= 2 * 256 and 256 <= view.shape[1] <= 2 * 256
    assert np.shares_memory(view, prob)
    small = np.zeros((100, 80), np.float32)
    assert U.strided(small).shape == (100, 80)
    with pytest.raises(ValueError):
        U.strided(np.zeros((2, 3, 4)))


def test_flip_and_temporal_disagreement() -> None:
    a = np.zeros((64, 64), np.float32)
    a[10:30, 10:30] = 0.9
    assert U.flip_disagreement(a, a) == 0.0
    b = np.zeros_like(a)
    b[40:60, 40:60] = 0.9
    assert U.flip_disagreement(a, b) == pytest.approx(1.0)
    assert U.flip_disagreement(np.zeros_like(a), np.zeros_like(a)) == 0.0
    assert U.temporal_change(a, [a, b]) == pytest.approx(0.5)
    assert U.temporal_change(a, []) == 0.0


def test_most_uncertain_ranks_skips_and_spreads() -> None:
    scores = {0: 0.1, 1: 0.9, 2: 0.8, 3: float("nan"), 4: 0.7, 10: 0.5, 11: 0.95}
    assert U.most_uncertain(scores, 3) == [11, 1, 2]
    assert U.most_uncertain(scores, 3, exclude={11}) == [1, 2, 4]
    assert U.most_uncertain(scores, 3, min_gap=3) == [11, 1, 4]  # 2 is next to 1; 10 next to 11
    assert U.most_uncertain(scores, 0) == []
    assert 3 not in U.most_uncertain(scores, 10)
    assert U.most_uncertain({5: 0.5, 2: 0.5}, 1) == [2]  # ties: the lower index


def test_next_to_review_walks_the_ranking_and_skips_reviewed() -> None:
    scores = {0: 0.2, 3: 0.9, 5: 0.5, 7: 0.7}
    assert U.next_to_review(scores, 1) == 3  # the top one
    assert U.next_to_review(scores, 5) == 3  # from a ranked frame too, unless walking
    assert U.next_to_review(scores, 3) == 7  # on the top one already: the next one down
    assert U.next_to_review(scores, 7, walking=True) == 5
    assert U.next_to_review(scores, 0, walking=True) == 3  # the last one wraps to the top
    assert U.next_to_review(scores, 1, reviewed={3, 7}) == 5
    assert U.next_to_review(scores, 3, reviewed={3}, walking=True) == 7  # reviewed now: the top of the rest
    assert U.next_to_review(scores, 1, reviewed={0, 3, 5, 7}) is None
    assert U.next_to_review({}, 0) is None


@pytest.mark.skipif(not (DATA / "cvc-clinicdb-612").is_dir(), reason="../shared/data/cvc-clinicdb-612 not found")
def test_ranks_bad_frames_on_real_unseen_frames(endotect_only_weights) -> None:
    """The EndoTect-only model never trained on CVC-ClinicDB: on 40 of its train frames (never used
    to choose the score's threshold constants), the app's score ranks 1 - Dice positively."""
    from scipy.stats import spearmanr

    from polypviewer.core.metrics import scores
    from polypviewer.engine.data import load_set
    from polypviewer.engine.inference import Predictor

    root = DATA / "cvc-clinicdb-612"
    names = [str(s) for s in json.loads((root / "split.json").read_text())["train"]][::14]
    data = load_set(root, names)
    predictor = Predictor.create(weights=endotect_only_weights, backend="torch", precision="fp32")
    unc, bad = [], []
    for img, gt in zip(data.images, data.masks, strict=True):
        prob = predictor.predict([img])[0]
        unc.append(U.frame_uncertainty(prob, predictor.threshold))
        bad.append(1.0 - float(scores(prob >= predictor.threshold, gt)["dice"]))
    assert len(unc) >= 35
    assert spearmanr(unc, bad).statistic > 0.4
