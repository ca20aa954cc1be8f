"""Overlay codes, colour tables and numpy compositing (core.overlay). No display needed
(the per-frame scores behind the window are tested in tests/core/test_review.py)."""

from __future__ import annotations

import numpy as np
import pytest

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

from .conftest import two_masks

_masks = two_masks


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
