"""core.masks: hand-computed tiny cases."""

from __future__ import annotations

import numpy as np
import pytest

from polypviewer.core import masks as M


def test_binarise_threshold_is_strictly_greater_than_127():
    m = np.array([[0, 127, 128, 255]], np.uint8)
    assert M.binarise(m).tolist() == [[False, False, True, True]]


@pytest.mark.parametrize("shape", [(3, 4), (3, 4, 1), (3, 4, 3), (3, 4, 4)])
def test_binarise_accepts_all_layouts(shape):
    m = np.zeros(shape, np.uint8)
    m[1, 2] = 200
    out = M.binarise(m)
    assert out.shape == (3, 4) and out.dtype == bool
    assert out.sum() == 1 and out[1, 2]


def test_binarise_rgb_any_channel_and_rgba_ignores_opaque_alpha():
    m = np.zeros((2, 2, 4), np.uint8)
    m[..., 3] = 255                 # fully opaque everywhere: not a mask
    m[0, 1, 1] = 255                # green only
    assert M.binarise(m).tolist() == [[False, True], [False, False]]
    alpha_only = np.zeros((2, 2, 4), np.uint8)
    alpha_only[1, 0, 3] = 255       # mask drawn in alpha with black colour
    assert M.binarise(alpha_only).tolist() == [[False, False], [True, False]]


def test_binarise_uint16_bool_and_float_use_the_8bit_scale():
    assert M.binarise(np.array([[0, 65535, 127 * 257]], np.uint16)).tolist() == [[False, True, False]]
    assert M.binarise(np.array([[True, False]])).tolist() == [[True, False]]
    assert M.binarise(np.array([[0.2, 0.9]], np.float32)).tolist() == [[False, True]]
    with pytest.raises(ValueError):
        M.binarise(np.zeros((2, 2, 2), np.uint8))


def test_bboxes_one_per_8_connected_component_inclusive():
    m = np.zeros((6, 8), bool)
    m[0, 0] = m[1, 1] = True        # diagonal touch: one region
    m[3:5, 4:7] = True
    assert M.bboxes(m) == [(0, 0, 1, 1), (4, 3, 6, 4)]
    assert M.bboxes(np.zeros((4, 4), bool)) == []
    areas = [int(a) for a in M.components(m).areas]
    assert M.bboxes(m, min_area=max(areas)) == [M.bboxes(m)[int(np.argmax(areas))]]  # the small one dropped
    assert M.bboxes(m, min_area=max(areas) + 1) == []


def test_components_and_largest_component():
    m = np.zeros((5, 9), bool)
    m[0:2, 0:2] = True              # area 4
    m[2:5, 5:9] = True              # area 12
    comp = M.components(m)
    assert comp.count == 2 and sorted(comp.areas.tolist()) == [4, 12]
    largest = M.largest_component(m)
    assert largest.sum() == 12 and largest[3, 6] and not largest[0, 0]
    assert not M.largest_component(np.zeros((3, 3), bool)).any()


def test_fill_holes_fills_enclosed_but_not_border_background():
    m = np.zeros((7, 7), bool)
    m[1:6, 1:6] = True
    m[3, 3] = False                 # enclosed hole
    out = M.fill_holes(m)
    assert out[3, 3] and not out[0, 0] and out.sum() == 25
    # a "hole" open to the border is not a hole
    u = np.zeros((5, 5), bool)
    u[1:4, 1:4] = True
    u[2, 2:5] = False
    assert not M.fill_holes(u)[2, 2]


def test_grow_and_shrink_by_pixels():
    m = np.zeros((11, 11), bool)
    m[5, 5] = True
    g = M.grow(m, 2)
    assert g[5, 3] and g[5, 7] and g[3, 5] and not g[5, 2] and not g[3, 3]  # a disk, not a square
    assert (M.shrink(g, 2) == m).all()
    assert (M.grow(g, -2) == M.shrink(g, 2)).all()
    assert (M.grow(m, 0) == m).all()
    full = np.ones((4, 4), bool)
    assert M.shrink(full, 1).all(), "the image border must not erode"


def test_resize_mask_nearest_and_size_order_is_h_w():
    m = np.array([[1, 0], [0, 1]], bool)
    out = M.resize_mask(m, (4, 6))
    assert out.shape == (4, 6) and out.dtype == bool
    assert out[:2, :3].all() and not out[:2, 3:].any() and out[2:, 3:].all()


def test_contours_trace_outer_and_hole_boundaries():
    m = np.zeros((8, 8), bool)
    m[1:7, 1:7] = True
    m[3:5, 3:5] = False
    cs = M.contours(m)
    assert len(cs) == 2
    outer = max(cs, key=len)
    assert outer.dtype == np.int32 and outer.shape[1] == 2
    assert outer[:, 0].min() == 1 and outer[:, 0].max() == 6
    assert M.contours(np.zeros((3, 3), bool)) == []


def test_to_uint8_is_0_255():
    assert M.to_mask8(np.array([[True, False]])).tolist() == [[255, 0]]


def test_one_threshold_rule_for_files_maps_and_metrics() -> None:
    """binarise (mask files), metrics.to_mask (scores) and the predictor's mask agree at the
    boundary on every scale: p >= 0.5, 8-bit >= 128 (== > 127), 16-bit >= 32768."""
    from polypviewer.core import metrics
    from polypviewer.engine.processing import DEFAULT_THRESHOLD

    cases = [np.array([[0.499, 0.5, 0.501]], np.float32), np.array([[127, 128, 255]], np.uint8),
             np.array([[32767, 32768, 65535]], np.uint16), np.array([[127, 128, 300]], np.int64)]
    for x in cases:
        assert M.binarise(x).tolist() == [[False, True, True]], x.dtype
        if x.dtype != np.int64:
            assert metrics.to_mask(x).tolist() == [[False, True, True]], x.dtype
    assert metrics.THRESHOLD == M.THRESHOLD == DEFAULT_THRESHOLD == 0.5
