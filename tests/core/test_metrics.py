"""Per-image scores on hand-computed cases, the 0/0 = 1 rule, and the benchmark wrapping."""

from __future__ import annotations

import numpy as np
import pytest

from polypviewer.core import metrics as m


def _masks() -> tuple[np.ndarray, np.ndarray]:
    # 4x4: gt has 4 pixels, pred 3, overlap 2 -> TP 2, FP 1, FN 2, TN 11.
    gt = np.zeros((4, 4), bool)
    gt[0, 0:4] = True
    pred = np.zeros((4, 4), bool)
    pred[0, 0:2] = True
    pred[3, 3] = True
    return pred, gt


def test_hand_computed_counts_and_scores():
    pred, gt = _masks()
    c = m.confusion(pred, gt)
    assert (c.tp, c.fp, c.fn, c.tn) == (2, 1, 2, 11)
    s = m.scores(pred, gt)
    assert s == pytest.approx({"dice": 4 / 7, "iou": 2 / 5, "precision": 2 / 3, "recall": 1 / 2,
                               "accuracy": 13 / 16, "f2": 10 / 19})
    p, r = s["precision"], s["recall"]
    assert s["f2"] == pytest.approx(5 * p * r / (4 * p + r))  # the SPEC's form
    assert tuple(s) == m.SCORE_NAMES


def test_zero_over_zero_is_one():
    empty = np.zeros((5, 6), bool)
    polyp = empty.copy()
    polyp[1:3, 2:5] = True
    # empty prediction on an empty mask is perfect
    assert m.scores(empty, empty) == {k: 1.0 for k in m.SCORE_NAMES}
    # empty prediction on a polyp: no false alarm (precision 0/0 = 1), everything missed
    s = m.scores(empty, polyp)
    assert s["precision"] == 1.0 and s["recall"] == 0.0
    assert s["dice"] == s["iou"] == s["f2"] == 0.0
    assert s["accuracy"] == pytest.approx(24 / 30)
    # a prediction on an empty mask: nothing to miss (recall 0/0 = 1), all false alarm
    s = m.scores(polyp, empty)
    assert s["precision"] == 0.0 and s["recall"] == 1.0
    assert s["dice"] == s["iou"] == s["f2"] == 0.0


def test_batch_matches_per_image_and_keeps_zero_over_zero():
    rng = np.random.default_rng(1)
    pred = rng.random((5, 16, 12)) > 0.6
    gt = rng.random((5, 16, 12)) > 0.7
    pred[0] = gt[0] = False  # one empty/empty pair in the batch
    batch = m.scores(pred, gt)
    assert batch["dice"].shape == (5,)
    for i in range(5):
        single = m.scores(pred[i], gt[i])
        for k in m.SCORE_NAMES:
            assert batch[k][i] == pytest.approx(single[k])
    assert batch["dice"][0] == 1.0 and batch["precision"][0] == 1.0


def test_threshold_rule_for_probabilities_and_integer_maps():
    probs = np.array([[0.0, 0.4999, 0.5, 1.0]], np.float32)
    assert m.to_mask(probs).tolist() == [[False, False, True, True]]
    u8 = np.array([[0, 127, 128, 255]], np.uint8)
    assert m.to_mask(u8).tolist() == [[False, False, True, True]]
    u16 = np.array([[0, 32767, 32768, 65535]], np.uint16)
    assert m.to_mask(u16).tolist() == [[False, False, True, True]]
    assert m.to_uint8(probs).tolist() == [[0, 127, 128, 255]]  # same decision after quantising
    with pytest.raises(TypeError):
        m.to_mask(np.zeros((2, 2), np.int64))


def test_size_mismatch_is_an_error():
    with pytest.raises(ValueError, match="differ in size"):
        m.confusion(np.zeros((4, 4), bool), np.zeros((4, 5), bool))
    acc = m.MetricAccumulator(benchmark=False)
    with pytest.raises(ValueError, match="x: prediction"):
        acc.add("x", np.zeros((4, 4), np.float32), np.zeros((5, 4), bool))


def test_accumulator_dataset_mean_is_mean_of_images_and_replaces_by_name():
    pred, gt = _masks()
    acc = m.MetricAccumulator(benchmark=False)
    acc.add("a", pred, gt)
    acc.add("b", np.zeros((8, 8), bool), np.zeros((8, 8), bool))  # perfect, 0/0
    assert acc.running_mean()["dice"] == pytest.approx((4 / 7 + 1.0) / 2)  # not pooled counts
    acc.add("b", np.ones((8, 8), np.float32), np.zeros((8, 8), np.uint8))  # re-scored after an edit
    assert len(acc) == 2
    assert acc.running_mean()["dice"] == pytest.approx((4 / 7 + 0.0) / 2)
    s = acc.summary()
    assert s["n"] == 2 and [e["name"] for e in s["per_image"]] == ["a", "b"]
    assert tuple(s["mean"]) == m.MEAN_NAMES
    assert s["mean"]["s_measure"] is None  # benchmark off


def test_benchmark_values_match_pysodmetrics_directly():
    import py_sod_metrics as sod

    rng = np.random.default_rng(7)
    acc = m.MetricAccumulator()
    ref = {"sm": sod.Smeasure(), "wfm": sod.WeightedFmeasure(), "em": sod.Emeasure(),
           "mae": sod.MAE()}
    fm = sod.FmeasureV2({"dice": sod.DICEHandler(with_dynamic=True, with_adaptive=False),
                         "iou": sod.IOUHandler(with_dynamic=True, with_adaptive=False)})
    yy, xx = np.mgrid[0:48, 0:64]
    for i in range(3):
        gt = (yy - 20 - 3 * i) ** 2 + (xx - 30) ** 2 < (8 + 2 * i) ** 2
        prob = np.clip(gt * 0.7 + rng.random(gt.shape) * 0.4, 0, 1).astype(np.float32)
        acc.add(f"img{i}", prob, gt)
        q = m.to_uint8(prob).astype(np.float64) / 255
        for ev in (*ref.values(), fm):
            ev.step(q, gt, normalize=False)
    mean = acc.summary()["mean"]
    assert mean["s_measure"] == pytest.approx(ref["sm"].get_results()["sm"])
    assert mean["weighted_f"] == pytest.approx(ref["wfm"].get_results()["wfm"])
    curve = ref["em"].get_results()["em"]["curve"]
    assert mean["e_measure_mean"] == pytest.approx(curve.mean())
    assert mean["e_measure_max"] == pytest.approx(curve.max())
    assert mean["mae"] == pytest.approx(ref["mae"].get_results()["mae"])
    # No empty ground truth here, so the library's 0/0 = 0 and our 0/0 = 1 cannot differ.
    res = fm.get_results()
    assert mean["mean_dice_256"] == pytest.approx(res["dice"]["dynamic"].mean())
    assert mean["mean_iou_256"] == pytest.approx(res["iou"]["dynamic"].mean())
    assert 0.5 < mean["mean_dice_256"] < 1.0


def test_benchmark_on_empty_ground_truth():
    empty = np.zeros((20, 30), bool)
    b = m.benchmark_scores(np.zeros((20, 30), np.float32), empty)
    assert b["s_measure"] == 1.0 and b["mae"] == 0.0
    assert b["weighted_f"] == 0.0  # pysodmetrics' convention for an empty mask, documented
    # 255 of the 256 thresholds leave the prediction empty (0/0 = 1); ">= 0" marks everything
    assert b["mean_dice_256"] == pytest.approx(255 / 256)
