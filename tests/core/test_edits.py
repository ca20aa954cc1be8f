"""The pure-numpy edit model: dabs, strokes as diffs, undo exactness, clean-ups, review states."""

from __future__ import annotations

import numpy as np
import pytest

from polypviewer.core.edits import Diff, EditSession, FrameEdits, ReviewState, union


def _blank(h: int = 40, w: int = 50) -> FrameEdits:
    return FrameEdits(np.zeros((h, w), bool))


def test_dab_is_a_round_footprint_and_returns_its_dirty_rect():
    e = _blank()
    e.begin_stroke()
    rect = e.dab(20, 15, 3, True)
    assert rect == (17, 12, 24, 19)
    ys, xs = np.nonzero(e.mask)
    assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == rect
    assert e.mask[15, 20] and not e.mask[12, 17]  # round: the corner stays empty
    assert 25 <= e.mask.sum() <= 37  # ~ pi r^2 = 28


def test_dab_is_clipped_at_the_border_and_off_image_is_none():
    e = _blank()
    e.begin_stroke()
    assert e.dab(0, 0, 3, True) == (0, 0, 4, 4)
    assert e.dab(-10, -10, 3, True) is None
    with pytest.raises(RuntimeError):
        _blank().dab(1, 1, 1, True)


def test_a_drag_is_one_stroke_over_its_bounding_rect_and_undo_is_exact():
    model = np.zeros((40, 50), bool)
    model[5:10, 5:10] = True
    e = FrameEdits(model)
    before = e.mask.copy()
    e.begin_stroke()
    e.dab(5, 20, 2, True)
    e.line(5, 20, 45, 30, 2, True)
    stroke = e.end_stroke()
    assert stroke is not None and stroke.label == "brush"
    assert stroke.rect == (3, 18, 48, 33)
    # No gaps along the line: every pixel on the segment is painted.
    for t in np.linspace(0, 1, 50):
        assert e.mask[int(round(20 + 10 * t)), int(round(5 + 40 * t))]
    after = e.mask.copy()
    e.revert(stroke)
    assert np.array_equal(e.mask, before)
    e.apply(stroke)
    assert np.array_equal(e.mask, after)


def test_a_stroke_that_changes_nothing_is_not_an_undo_step():
    e = _blank()
    e.begin_stroke()
    e.dab(10, 10, 4, False)  # erasing an empty mask
    assert e.end_stroke() is None
    assert e.fill(3, 3, False) is None


def test_cancel_stroke_restores_what_it_painted():
    e = _blank()
    e.begin_stroke()
    e.line(0, 0, 30, 30, 3, True)
    assert e.cancel_stroke() is not None
    assert not e.mask.any()


def test_fill_sets_only_the_connected_region():
    e = _blank()
    e.begin_stroke()
    for x0, y0, x1, y1 in ((10, 10, 30, 10), (30, 10, 30, 30), (30, 30, 10, 30), (10, 30, 10, 10)):
        e.line(x0, y0, x1, y1, 1, True)
    e.end_stroke()
    ring = e.mask.copy()
    stroke = e.fill(20, 20, True)
    assert stroke is not None and stroke.label == "fill"
    assert e.mask[20, 20] and e.mask[12, 12] and not e.mask[5, 5] and not e.mask[35, 45]
    assert stroke.rect[0] >= 10 and stroke.rect[2] <= 31  # the inside only, not the background
    e.revert(stroke)
    assert np.array_equal(e.mask, ring)


def test_polygon_fills_inside_and_clears_with_false():
    e = _blank()
    s = e.polygon([(10, 10), (30, 10), (30, 20), (10, 20)], True)
    assert s is not None
    assert e.mask[15, 20] and e.mask[10, 10] and e.mask[20, 30] and not e.mask[25, 20]
    assert int(e.mask.sum()) == 21 * 11
    s2 = e.polygon([(15, 12), (25, 12), (25, 18), (15, 18)], False)
    assert s2 is not None and not e.mask[15, 20] and e.mask[10, 10]
    assert e.polygon([(1, 1), (2, 2)], True) is None


def test_cleanups_are_single_undoable_strokes():
    model = np.zeros((40, 50), bool)
    model[5:25, 5:25] = True
    model[10:15, 10:15] = False  # a hole
    model[30:33, 40:43] = True  # a speck
    e = FrameEdits(model)
    s = e.fill_holes()
    assert s is not None and e.mask[12, 12]
    s2 = e.keep_largest()
    assert s2 is not None and not e.mask[31, 41] and e.mask[12, 12]
    area = int(e.mask.sum())
    e.grow(2)
    assert e.mask.sum() > area
    e.shrink(2)
    assert e.mask.sum() == area
    e.clear()
    assert not e.mask.any()
    e.reset_to_model()
    assert np.array_equal(e.mask, model)
    other = np.zeros((20, 25), bool)
    other[:10, :] = True
    e.carry_forward(other)  # resized nearest to 40x50
    assert e.mask[:20].all() and not e.mask[20:].any()
    for stroke in (e.reset_to_model(),):  # back and forth is exact
        e.revert(stroke)
        assert e.mask[:20].all() and not e.mask[20:].any()


def test_stats_pixels_changed_and_dice_model_vs_corrected():
    model = np.zeros((10, 10), bool)
    model[:5] = True  # 50 px
    e = FrameEdits(model)
    assert e.stats().dice_model_vs_corrected == 1.0 and e.stats().pixels_changed == 0
    e.replace(np.pad(np.ones((5, 10), bool), ((2, 3), (0, 0))), "shift")  # rows 2..6
    st = e.stats()
    assert (st.pixels_added, st.pixels_removed, st.pixels_changed) == (20, 20, 40)
    assert st.dice_model_vs_corrected == pytest.approx(2 * 30 / 100)
    assert FrameEdits(np.zeros((4, 4), bool)).stats().dice_model_vs_corrected == 1.0


def test_diff_inversion_and_union():
    d = Diff(1, 2, np.zeros((2, 3), bool), np.ones((2, 3), bool))
    assert d.rect == (2, 1, 5, 3) and d.changed == 6
    assert d.inverted().new.sum() == 0
    assert union(None, (1, 1, 2, 2)) == (1, 1, 2, 2)
    assert union((0, 5, 3, 6), (2, 1, 4, 2)) == (0, 1, 4, 6)


class _Recorder:
    def __init__(self) -> None:
        self.events: list[tuple] = []

    def frame_started(self, frame, edits):
        self.events.append(("start", frame))

    def mask_changed(self, frame, diff):
        self.events.append(("mask", frame, diff.rect))

    def state_changed(self, frame, state):
        self.events.append(("state", frame, state))


def test_session_reports_changes_and_sets_corrected_unless_flagged():
    rec = _Recorder()
    s = EditSession(listener=rec)
    e = s.start(3, np.zeros((20, 20), bool), model_version="v1", threshold=0.4)
    assert s.start(3, np.ones((20, 20), bool)) is e  # second start returns the same edits
    assert s.state(3) == ReviewState.UNREVIEWED
    e.begin_stroke()
    e.dab(5, 5, 2, True)
    e.end_stroke()
    assert s.state(3) == ReviewState.CORRECTED
    # The automatic state comes with the change itself (one event, one journal record).
    assert rec.events == [("start", 3), ("mask", 3, (3, 3, 8, 8))]
    s.start(4, np.zeros((20, 20), bool))
    s.set_state(4, ReviewState.FLAGGED)
    assert s.get(4).fill(1, 1, True) is not None
    assert s.state(4) == ReviewState.FLAGGED
    with pytest.raises(ValueError):
        s.set_state(9, ReviewState.ACCEPTED)  # no mask to accept
    s.set_state(9, ReviewState.FLAGGED)
    assert s.with_state(ReviewState.FLAGGED) == [4, 9]
    assert s.next_unreviewed(3, 6) == 5
    assert s.next_unreviewed(5, 6) == 0
    s.carry_forward(4, 3)
    assert np.array_equal(s.mask(4), s.mask(3))



def test_review_state_follows_the_content_undo_and_reset_give_the_earlier_state_back():
    """A frame whose mask equals the model's is never "corrected": an edit makes it corrected,
    undoing it (or resetting to the model) returns the state it had before, in the same
    listener call as the change (so the store journals both in one record)."""
    rec = _Recorder()
    s = EditSession(listener=rec)
    model = np.zeros((20, 20), bool)
    model[5:10, 5:10] = True
    e = s.start(0, model)
    e.begin_stroke()
    e.dab(15, 15, 2, True)
    stroke = e.end_stroke()
    assert s.state(0) == ReviewState.CORRECTED
    seen: list = []
    s.listener = type("L", (), {"mask_changed": lambda self, f, d: seen.append(s.state(f))})()
    e.revert(stroke)  # undo: back to the model's mask
    assert s.state(0) == ReviewState.UNREVIEWED and seen == [ReviewState.UNREVIEWED]
    assert s.with_state(ReviewState.CORRECTED) == [] and s.next_unreviewed(5, 6) == 0
    e.apply(stroke)  # redo
    assert s.state(0) == ReviewState.CORRECTED
    s.listener = rec
    # accepted, then edited, then reset to the model: accepted again (not corrected)
    e2 = s.start(1, model)
    s.set_state(1, ReviewState.ACCEPTED)
    assert e2.clear() is not None and s.state(1) == ReviewState.CORRECTED
    assert e2.reset_to_model() is not None and s.state(1) == ReviewState.ACCEPTED
    # painting back exactly to the model's mask counts too
    e2.begin_stroke()
    e2.dab(2, 2, 1, True)
    e2.end_stroke()
    assert s.state(1) == ReviewState.CORRECTED
    e2.begin_stroke()
    e2.dab(2, 2, 1, False)
    e2.end_stroke()
    assert s.state(1) == ReviewState.ACCEPTED
    # flagged stays flagged whatever the content
    s.set_state(1, ReviewState.FLAGGED)
    assert e2.clear() is not None and s.state(1) == ReviewState.FLAGGED
    assert e2.reset_to_model() is not None and s.state(1) == ReviewState.FLAGGED
    # "corrected" cannot be set by hand on a frame whose mask is the model's
    with pytest.raises(ValueError, match="nothing is corrected"):
        s.set_state(1, ReviewState.CORRECTED)
    assert s.state(1) == ReviewState.FLAGGED
    e2.clear()
    s.set_state(1, ReviewState.CORRECTED)  # an edited mask may be marked corrected
    assert e2.reset_to_model() is not None and s.state(1) == ReviewState.FLAGGED
