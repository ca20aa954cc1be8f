"""engine.propagation: flow + refinement on a synthetic moving disc (exact), and on real CVC frames."""

from __future__ import annotations

import json
import threading
from dataclasses import replace

import cv2
import numpy as np
import pytest

from polypviewer.engine.propagation import (
    DISFlow,
    Propagation,
    PropagationParams,
    drift_score,
    mask_box,
    mask_dice,
    prompted_regions,
    propagation_end,
    refine,
    scene_distance,
    warp,
)

H, W, R = 120, 160, 18


def _texture(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = cv2.GaussianBlur(rng.uniform(0, 255, (H, W * 2)).astype(np.float32), (0, 0), 2.0)
    return cv2.normalize(t, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)


def disc_clip(n: int = 12, step: int = 4) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """A textured disc sliding right by ``step`` px a frame over a static textured background."""
    bg, fg = _texture(1)[:, :W], _texture(2)
    yy, xx = np.mgrid[:H, :W]
    frames, masks = [], []
    for k in range(n):
        cx = 40 + step * k
        m = (yy - H // 2) ** 2 + (xx - cx) ** 2 <= R * R
        # the disc's texture moves with it: sample fg shifted by the disc's offset
        moved = fg[:, W - step * k: 2 * W - step * k]
        g = np.where(m, moved // 2 + 120, bg // 3)
        frames.append(np.dstack([g, g, g]).astype(np.uint8))
        masks.append(m)
    return frames, masks


def test_flow_carries_a_moving_disc_and_copy_forward_does_not():
    frames, masks = disc_clip()
    prop = Propagation(lambda i: frames[i], masks[0], 0, len(frames) - 1, params=PropagationParams(fusion="flow"))
    got = list(prop)
    assert [r.index for r in got] == list(range(1, len(frames)))
    assert prop.stopped == "end"
    flow_dice = [mask_dice(r.mask, masks[r.index]) for r in got]
    copy_dice = [mask_dice(masks[0], masks[r.index]) for r in got]
    assert min(flow_dice) > 0.8, flow_dice
    assert copy_dice[-1] < 0.2  # after 11 frames the disc has moved 44 px > its diameter
    # flow alone cannot tell where it went wrong: drift = disagreement = 0
    assert all(r.drift == r.disagreement == 0.0 for r in got)


def test_backward_and_refinement_with_a_probability_map():
    frames, masks = disc_clip()
    calls = []

    def prob(i, frame):  # a network that under-segments (p = 0.35 on the disc) and sees a blob far away
        calls.append(i)
        p = np.where(masks[i], 0.35, 0.0).astype(np.float32)
        p[5:15, 5:15] = 0.9
        return p

    prop = Propagation(lambda i: frames[i], masks[-1], len(frames) - 1, 0, probability=prob,
                       params=PropagationParams(fusion="hysteresis"))
    got = list(prop)
    assert [r.index for r in got] == list(range(len(frames) - 2, -1, -1)) and calls == [r.index for r in got]
    for r in got:
        # hysteresis: the weak disc is kept near the carried mask, the strong far blob also (p >= high)
        assert mask_dice(r.mask & ~_box(), masks[r.index]) == 1.0
        assert r.mask[5:15, 5:15].all()
        assert 0.0 < r.drift < 1.0
    # the shipped fusion (gated): an unsure network (mean p < 0.6 in its mask) gets the flow's mask added
    got = list(Propagation(lambda i: frames[i], masks[-1], len(frames) - 1, 0, probability=prob))
    for r in got:
        assert (r.mask & masks[r.index]).sum() >= 0.99 * masks[r.index].sum() and r.mask[5:15, 5:15].all()


def _box() -> np.ndarray:
    b = np.zeros((H, W), bool)
    b[5:15, 5:15] = True
    return b


def test_refine_fusions():
    warped = np.zeros((50, 50), np.float32)
    warped[10:30, 10:30] = 1.0
    prob = np.zeros((50, 50), np.float32)
    prob[12:32, 12:32] = 0.35  # weak, near the warped mask
    prob[40:45, 40:45] = 0.35  # weak, far from it
    p = PropagationParams(fusion="hysteresis", low=0.3, high=0.5, near=0.05)
    m, _ = refine(warped, prob, p)
    assert m[12:32, 12:32].all() and not m[40:45, 40:45].any()
    g, _ = refine(warped, prob, PropagationParams(fusion="gated", low=0.3, near=0.05, confident=0.6))
    assert (g == (m | (warped >= 0.5))).all() and g[10, 10]  # unsure network (mean p 0.35): union with the flow
    sure = np.where(prob > 0, 0.9, 0.0).astype(np.float32)
    g, _ = refine(warped, sure, PropagationParams(fusion="gated", confident=0.6))
    assert not g[10, 10] and g[31, 31]  # a confident network's mask alone
    m, _ = refine(warped, prob, PropagationParams(fusion="model"))
    assert (m == (warped >= 0.5)).all()  # the network finds nothing >= 0.5: the warped mask stands in
    m, soft = refine(warped, prob, PropagationParams(fusion="blend", alpha=0.5, threshold=0.6))
    assert m[15, 15] and not m[40, 40] and soft[15, 15] == pytest.approx(0.675)
    m, _ = refine(warped, None, p)
    assert (m == (warped >= 0.5)).all()


def test_drift_score():
    m = np.zeros((10, 10), bool)
    m[2:5, 2:5] = True
    p = np.full((10, 10), 0.9, np.float32)
    assert drift_score(m, p, 0.3) == pytest.approx(0.1)
    assert drift_score(np.zeros_like(m), p, 0.3) == 1.0
    assert drift_score(m, None, 0.3) == 0.3


def test_scene_change_stops_and_stop_event_cancels():
    frames, masks = disc_clip()
    other = np.zeros_like(frames[0])
    other[..., 0] = 200  # a red frame: another scene
    assert scene_distance(frames[0], frames[1]) < 0.1 < 0.9 < scene_distance(frames[5], other)
    cut = [*frames[:6], other, *frames[6:]]
    prop = Propagation(lambda i: cut[i], masks[0], 0, len(cut) - 1, params=PropagationParams(fusion="flow"))
    assert [r.index for r in prop] == [1, 2, 3, 4, 5]
    assert prop.stopped == "scene change at frame 6"

    stop = threading.Event()
    prop = Propagation(lambda i: frames[i], masks[0], 0, len(frames) - 1, params=PropagationParams(fusion="flow"),
                       stop=stop)
    seen = []
    for r in prop:
        seen.append(r.index)
        if r.index == 3:
            stop.set()
    assert seen == [1, 2, 3] and prop.stopped == "cancelled"


def test_box_fusion_prompts_with_the_warped_box():
    frames, masks = disc_clip(n=4)
    boxes = []

    def prompt(i, frame, box):
        boxes.append((i, box))
        return masks[i]

    got = list(Propagation(lambda i: frames[i], masks[0], 0, 3, params=PropagationParams(fusion="box"),
                           prompt=prompt))
    assert [b[0] for b in boxes] == [1, 2, 3]
    for (i, (x0, y0, x1, y1)), r in zip(boxes, got, strict=True):
        ys, xs = np.nonzero(masks[i])
        assert abs(x0 - xs.min()) <= 3 and abs(x1 - xs.max()) <= 3 and abs(y0 - ys.min()) <= 3
        assert abs(y1 - ys.max()) <= 3
        assert (r.mask == masks[i]).all()


def test_a_speck_is_not_prompted_with():
    """A mask the flow shrank to one row or column has no 2x2 box to prompt with: the box fusion
    keeps the warped speck instead of failing (a real CVC sequence did this, and the prompt
    refused the box: 'smaller than 2x2 pixels')."""
    assert mask_box(np.zeros((5, 5), bool)) is None
    speck = np.zeros((20, 30), bool)
    speck[7, 4:9] = True  # one row
    assert mask_box(speck) is None and mask_box(speck.T) is None
    speck[8, 4] = True
    assert mask_box(speck) == (4, 7, 8, 8)
    frames, _ = disc_clip(n=3)
    seed = np.zeros((H, W), bool)
    seed[60, 40] = True
    calls = []
    got = list(Propagation(lambda i: frames[i], seed, 0, 2, params=PropagationParams(fusion="box"),
                           prompt=lambda i, f, b: calls.append(b) or np.ones((H, W), bool)))
    assert calls == [] and len(got) == 2 and all(r.mask.sum() <= 1 for r in got)


def test_prompted_regions_prompt_one_box_per_region_and_carry_the_fused_mask():
    m = np.zeros((60, 80), bool)
    m[5:15, 5:25] = True  # region A: x 5..24, y 5..14
    m[40:50, 60:70] = True  # region B
    m[30, 30] = True  # a speck: too small to prompt with, kept
    asked = []

    def prompt(box):
        asked.append(box)
        out = np.zeros_like(m)
        x0, y0, x1, y1 = box
        out[y0:y1 + 1, x0:x1 + 1] = True
        out[y0, x0] = False  # the segmenter's answer differs from the box
        return out

    got = prompted_regions(m, prompt, min_region=16)
    assert sorted(asked) == [(5, 5, 24, 14), (60, 40, 69, 49)]
    assert got[30, 30] and not got[5, 5] and not got[40, 60] and got.sum() == m.sum() - 2
    assert (prompted_regions(np.zeros_like(m), prompt) == 0).all()
    # In a run: each frame's fused mask prompts; the fused mask, not the prompted one, goes on.
    frames, masks = disc_clip(n=4)
    seen = []

    def shrink(i, frame, box):
        seen.append(i)
        return np.zeros((H, W), bool) | (np.arange(W)[None, :] == box[0])  # one column: a poor answer

    params = PropagationParams(fusion="flow", prompt_regions=True)
    got = list(Propagation(lambda i: frames[i], masks[0], 0, 3, params=params, prompt=shrink))
    assert seen == [1, 2, 3] and all(r.mask.sum() == H for r in got)
    assert all(mask_dice(r.warped, masks[r.index]) > 0.8 for r in got)  # carried on: the flow's mask
    plain = list(Propagation(lambda i: frames[i], masks[0], 0, 3, params=replace(params, prompt_regions=False),
                             prompt=shrink))
    assert len(seen) == 3 and all(mask_dice(r.mask, masks[r.index]) > 0.8 for r in plain)


def test_seed_of_the_wrong_size_is_refused():
    frames, _ = disc_clip(n=2)
    with pytest.raises(ValueError, match="differ in size"):
        list(Propagation(lambda i: frames[i], np.zeros((5, 5), bool), 0, 1))


def test_propagation_end():
    assert propagation_end(3, 10) == 9
    assert propagation_end(3, 10, backward=True) == 0
    assert propagation_end(3, 10, reviewed={6, 8}) == 5
    assert propagation_end(3, 10, backward=True, reviewed={1}) == 2
    assert propagation_end(3, 10, to=5) == 5
    assert propagation_end(3, 10, to=50) == 9
    assert propagation_end(3, 10, to=1) == 3  # --to behind a forward start: nothing
    assert propagation_end(3, 10, reviewed={4}) == 3
    assert propagation_end(9, 10) == 9


def test_dis_flow_memo_and_downscale():
    frames, masks = disc_clip(n=2)
    memo: dict = {}
    f = DISFlow(width=80, memo=memo)
    a = f.backward(frames[0], frames[1], key=(0, 1))
    assert a.shape == (H, W, 2) and (0, 1) in memo and f.backward(frames[0], frames[1], key=(0, 1)) is a
    w = warp(masks[0], a) >= 0.5
    assert mask_dice(w, masks[1]) > 0.8


def test_real_cvc_sequence_one_step_flow_beats_copy(shared_data):
    """On CVC-ClinicDB sequence 1, the expert mask warped one frame on matches the next expert
    mask better than the mask copied (the flow is right about the motion)."""
    from polypviewer.io.images import read_image, read_mask

    root = shared_data / "cvc-clinicdb-612"
    if not (root / "sequences.json").is_file():
        pytest.skip(f"{root}/sequences.json not found")
    seq = json.loads((root / "sequences.json").read_text())["sequences"][0]["frames"][:10]
    frames = [read_image(root / "images" / f"{i}.png") for i in seq]
    gts = [read_mask(root / "masks" / f"{i}.png") for i in seq]
    flow = DISFlow()
    warped = [mask_dice(warp(gts[k], flow.backward(frames[k], frames[k + 1])) >= 0.5, gts[k + 1])
              for k in range(len(seq) - 1)]
    copied = [mask_dice(gts[k], gts[k + 1]) for k in range(len(seq) - 1)]
    assert np.mean(warped) > np.mean(copied) + 0.05, (warped, copied)
    # neighbouring frames of one sequence are not scene changes at the shipped threshold
    cut = PropagationParams().scene_cut
    assert all(scene_distance(frames[k], frames[k + 1]) < cut for k in range(len(seq) - 1))
