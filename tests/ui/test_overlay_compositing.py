"""Overlay codes, colour tables and numpy compositing (core.overlay), and the per-frame
mask slots / scores behind the window (ui.overlay). No display needed."""

from __future__ import annotations

import numpy as np
import pytest

from polypviewer.core.metrics import scores
from polypviewer.core.overlay import (
    BOTH,
    GT,
    PRED,
    OverlayStyle,
    color_table,
    composite,
    disagreement_counts,
    outline,
    overlay_codes,
)
from polypviewer.ui.overlay import FrameScores, MaskSlots, area_confidence


def _masks():
    pred = np.zeros((40, 60), bool)
    gt = np.zeros((40, 60), bool)
    pred[5:25, 10:40] = True  # 20 x 30 = 600
    gt[15:35, 20:50] = True  # 20 x 30 = 600, overlap 10 x 20 = 200
    return pred, gt


def test_codes_are_tp_fp_fn_by_hand():
    pred, gt = _masks()
    codes = overlay_codes(pred, gt, OverlayStyle(disagreement=True))
    assert disagreement_counts(codes) == {"tp": 200, "fp": 400, "fn": 400}
    assert codes[0, 0] == 0 and codes[6, 11] == PRED and codes[30, 45] == GT and codes[20, 30] == BOTH


def test_hidden_layers_and_disagreement_overrides_visibility():
    pred, gt = _masks()
    only_pred = overlay_codes(pred, gt, OverlayStyle(show_gt=False))
    assert set(np.unique(only_pred)) == {0, PRED}
    # disagreement needs both layers whatever the visibility toggles say
    both = overlay_codes(pred, gt, OverlayStyle(show_gt=False, disagreement=True))
    assert set(np.unique(both)) == {0, PRED, GT, BOTH}


def test_outline_is_inner_boundary_and_rect_matches_full():
    pred, _ = _masks()
    edge = outline(pred, 2)
    assert edge.sum() == 600 - 16 * 26  # 2-px ring of a 20x30 box
    assert not edge[10, 20] and edge[5, 10] and edge[24, 39]
    rect = (8, 3, 31, 19)
    np.testing.assert_array_equal(outline(pred, 2, rect), edge[3:19, 8:31])
    # a polyp touching the border is closed by the border
    border = np.zeros((10, 10), bool)
    border[:, :5] = True
    assert outline(border, 1)[:, 0].all()


def test_rect_codes_write_in_place():
    pred, gt = _masks()
    style = OverlayStyle(outline=True)
    full = overlay_codes(pred, gt, style)
    out = np.zeros_like(full)
    for rect in ((0, 0, 30, 20), (30, 0, 60, 20), (0, 20, 30, 40), (30, 20, 60, 40)):
        overlay_codes(pred, gt, style, rect, out=out)
    np.testing.assert_array_equal(out, full)


def test_color_table_and_composite():
    style = OverlayStyle(pred_color=(0, 0, 255), pred_opacity=1.0, gt_color=(255, 0, 0), gt_opacity=0.5)
    table = color_table(style)
    assert table[0][3] == 0 and table[PRED] == (0, 0, 255, 255) and table[GT] == (255, 0, 0, 128)
    assert table[BOTH] == (0, 0, 255, 255)  # an opaque prediction hides the ground truth under it
    frame = np.full((2, 2, 3), 100, np.uint8)
    codes = np.array([[0, PRED], [GT, BOTH]], np.uint8)
    out = composite(frame, codes, table)
    assert out[0, 0].tolist() == [100, 100, 100]
    assert out[0, 1].tolist() == [0, 0, 255]
    assert out[1, 0].tolist() == [178, 50, 50]  # 100 * (1 - 128/255) + 255 * 128/255
    dis = color_table(OverlayStyle(disagreement=True))
    assert dis[BOTH][:3] == OverlayStyle().tp_color and dis[PRED][:3] == OverlayStyle().fp_color


def test_codes_need_a_layer():
    with pytest.raises(ValueError):
        overlay_codes(None, None, OverlayStyle())


def test_mask_slots_start_from_thresholded_prediction_and_stay():
    prob = np.linspace(0, 1, 100, dtype=np.float32).reshape(10, 10)
    slots = MaskSlots()
    m = slots.ensure(3, prob, 0.5)
    np.testing.assert_array_equal(m, prob >= 0.5)
    m[0, 0] = True  # an edit, in place
    assert slots.ensure(3, prob, 0.9) is m and m[0, 0]  # a later threshold does not reset edits
    empty = slots.ensure(4, None, 0.5, (4, 5))
    assert empty.shape == (4, 5) and not empty.any()
    with pytest.raises(ValueError):
        slots.ensure(5, None, 0.5)
    assert slots.indices() == [3, 4]


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
