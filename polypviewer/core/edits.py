"""The annotation model: per-frame masks edited through undoable diffs (numpy only, no Qt).

A :class:`Diff` is a rectangle's old and new values; every change to a mask (a brush
drag, a flood fill, a clean-up, an undo) is one ``Diff`` wrapped in a :class:`Stroke`, so
undo stores only what changed and the project journal can persist each completed stroke.

Rectangles are ``(x0, y0, x1, y1)`` in image pixels, half-open (``x1``/``y1`` excluded),
so ``mask[y0:y1, x0:x1]`` is the region.

:class:`EditSession` holds the frames being edited (created lazily from the model's
thresholded prediction), the review state of every frame, and reports every completed
change to an optional :class:`SessionListener` (the project store), which is how edits
reach the disk without a save button.
"""

from __future__ import annotations

import enum
import hashlib
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import cv2
import numpy as np

from polypviewer.core import masks as mk

__all__ = ["Rect", "Diff", "Stroke", "FrameEdits", "ReviewState", "EditStats", "SessionListener",
           "EditSession", "union"]

Rect = tuple[int, int, int, int]  # (x0, y0, x1, y1), half-open


def union(a: Rect | None, b: Rect | None) -> Rect | None:
    """Smallest rectangle holding both (``None`` is the empty rectangle)."""
    if a is None:
        return b
    if b is None:
        return a
    return (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))


@dataclass(frozen=True, eq=False)
class Diff:
    """One rectangle of a mask before (``old``) and after (``new``) a change."""

    y0: int
    x0: int
    old: np.ndarray
    new: np.ndarray

    @property
    def rect(self) -> Rect:
        h, w = self.new.shape
        return (self.x0, self.y0, self.x0 + w, self.y0 + h)

    @property
    def changed(self) -> int:
        """How many pixels this diff flips."""
        return int(np.count_nonzero(self.old != self.new))

    def inverted(self) -> Diff:
        return Diff(self.y0, self.x0, self.new, self.old)


@dataclass(frozen=True, eq=False)
class Stroke:
    """One undo step: a diff and what made it (``"brush"``, ``"fill"``, ``"grow 3"``...)."""

    diff: Diff
    label: str

    @property
    def rect(self) -> Rect:
        return self.diff.rect

    def inverted(self) -> Stroke:
        return Stroke(self.diff.inverted(), f"undo {self.label}")


class ReviewState(enum.IntEnum):
    """Per-frame review verdict; the integer is what the project file stores."""

    UNREVIEWED = 0
    ACCEPTED = 1   # the model's mask is right as it is
    CORRECTED = 2  # the mask was edited by a reviewer
    FLAGGED = 3    # unusable frame (blur, glare, no view): excluded from export/fine-tune
    PROPAGATED = 4  # the mask was carried here from a reviewed frame: not reviewed until accepted


@dataclass(frozen=True)
class EditStats:
    """How much a reviewer changed the model's mask on one frame."""

    pixels_changed: int
    pixels_added: int
    pixels_removed: int
    dice_model_vs_corrected: float  # 1.0 when both are empty
    strokes: int


_DISKS: dict[int, np.ndarray] = {}


def _disk(radius: int) -> np.ndarray:
    """Brush footprint: bool (2r+1, 2r+1), centre always set; cached per radius."""
    d = _DISKS.get(radius)
    if d is None:
        yy, xx = np.ogrid[-radius:radius + 1, -radius:radius + 1]
        # The +0.25 r slack keeps small brushes round (r=1 is a plus, not a lone pixel).
        d = _DISKS[radius] = (xx * xx + yy * yy) <= radius * radius + 0.25 * radius
    return d


class FrameEdits:
    """The mask of one frame and the operations that change it.

    ``mask`` is edited in place (the overlay reads it directly). Painting is
    ``begin_stroke()``, any number of ``dab``/``line`` calls (each returns its dirty
    rectangle so only that part of the overlay is redrawn), then ``end_stroke()`` which
    returns the whole drag as one :class:`Stroke`. Every completed change is passed to
    ``on_change(diff)``.
    """

    def __init__(self, model_mask: np.ndarray, *, model_version: str = "", threshold: float = 0.5,
                 mask: np.ndarray | None = None, strokes: int = 0,
                 on_change: Callable[[Diff], None] | None = None) -> None:
        if model_mask.ndim != 2:
            raise ValueError(f"model mask must be HxW, got shape {model_mask.shape}")
        self.model_mask = np.array(model_mask, dtype=bool, copy=True)
        self.model_mask.flags.writeable = False
        self.mask = self.model_mask.copy() if mask is None else np.array(mask, dtype=bool, copy=True)
        if self.mask.shape != self.model_mask.shape:
            raise ValueError(f"mask {self.mask.shape} and model mask {self.model_mask.shape} differ in size")
        self.model_version = model_version
        self.threshold = float(threshold)
        self.strokes = strokes  # completed changes since the frame was started (statistics)
        self.on_change = on_change
        self._before: np.ndarray | None = None
        self._stroke_rect: Rect | None = None

    @property
    def shape(self) -> tuple[int, int]:
        h, w = self.mask.shape
        return h, w

    # -- painting ------------------------------------------------------------------------
    def begin_stroke(self) -> None:
        # One copy per drag (~0.2 ms at 1080p) makes the end-of-stroke diff exact and cheap.
        self._before = self.mask.copy()
        self._stroke_rect = None

    @property
    def in_stroke(self) -> bool:
        return self._before is not None

    def dab(self, x: float, y: float, radius: int, value: bool) -> Rect | None:
        """Stamp a round footprint centred on (x, y); returns the dirty rect (None if off-image)."""
        if self._before is None:
            raise RuntimeError("dab() outside begin_stroke()/end_stroke()")
        r = max(0, int(radius))
        cx, cy = int(math.floor(x + 0.5)), int(math.floor(y + 0.5))
        h, w = self.mask.shape
        x0, y0, x1, y1 = max(cx - r, 0), max(cy - r, 0), min(cx + r + 1, w), min(cy + r + 1, h)
        if x0 >= x1 or y0 >= y1:
            return None
        foot = _disk(r)[y0 - (cy - r):y1 - (cy - r), x0 - (cx - r):x1 - (cx - r)]
        region = self.mask[y0:y1, x0:x1]
        if value:
            region |= foot
        else:
            region &= ~foot
        rect = (x0, y0, x1, y1)
        self._stroke_rect = union(self._stroke_rect, rect)
        return rect

    def line(self, x0: float, y0: float, x1: float, y1: float, radius: int, value: bool) -> Rect | None:
        """Dabs along a drag segment, close enough that no gap shows; returns the dirty rect."""
        dist = math.hypot(x1 - x0, y1 - y0)
        step = max(1.0, radius * 0.5)
        n = max(1, int(math.ceil(dist / step)))
        rect: Rect | None = None
        for i in range(1, n + 1):  # the start point was dabbed by the previous call
            t = i / n
            rect = union(rect, self.dab(x0 + (x1 - x0) * t, y0 + (y1 - y0) * t, radius, value))
        return rect

    def end_stroke(self, label: str = "brush") -> Stroke | None:
        """Finish the drag: one Stroke over its bounding rect, or None if nothing changed."""
        before, rect = self._before, self._stroke_rect
        self._before = self._stroke_rect = None
        if before is None or rect is None:
            return None
        x0, y0, x1, y1 = rect
        old, new = before[y0:y1, x0:x1].copy(), self.mask[y0:y1, x0:x1].copy()
        if np.array_equal(old, new):
            return None
        return self._completed(Stroke(Diff(y0, x0, old, new), label))

    def cancel_stroke(self) -> Rect | None:
        """Abandon the drag in progress and restore what it painted over; returns the rect."""
        before, rect = self._before, self._stroke_rect
        self._before = self._stroke_rect = None
        if before is not None and rect is not None:
            x0, y0, x1, y1 = rect
            self.mask[y0:y1, x0:x1] = before[y0:y1, x0:x1]
        return rect

    # -- one-shot operations ---------------------------------------------------------------
    def fill(self, x: float, y: float, value: bool = True) -> Stroke | None:
        """Flood-fill the 4-connected region around (x, y) with ``value``."""
        h, w = self.mask.shape
        cx, cy = int(math.floor(x + 0.5)), int(math.floor(y + 0.5))
        if not (0 <= cx < w and 0 <= cy < h) or bool(self.mask[cy, cx]) == bool(value):
            return None
        work = self.mask.view(np.uint8).copy()
        _, _, _, (rx, ry, rw, rh) = cv2.floodFill(work, None, (cx, cy), 2, flags=4)
        new = work[ry:ry + rh, rx:rx + rw] == 2
        old = self.mask[ry:ry + rh, rx:rx + rw].copy()
        return self._replace_rect(ry, rx, old, np.where(new, bool(value), old), "fill")

    def polygon(self, points: Sequence[tuple[float, float]], value: bool = True) -> Stroke | None:
        """Set the inside of a closed polygon (x, y vertices in image pixels) to ``value``."""
        if len(points) < 3:
            return None
        h, w = self.mask.shape
        pts = np.round(np.asarray(points, dtype=np.float64)).astype(np.int32)
        x0, y0 = max(int(pts[:, 0].min()), 0), max(int(pts[:, 1].min()), 0)
        x1, y1 = min(int(pts[:, 0].max()) + 1, w), min(int(pts[:, 1].max()) + 1, h)
        if x0 >= x1 or y0 >= y1:
            return None
        inside = np.zeros((y1 - y0, x1 - x0), np.uint8)
        cv2.fillPoly(inside, [pts - np.array([x0, y0], np.int32)], 1)
        old = self.mask[y0:y1, x0:x1].copy()
        return self._replace_rect(y0, x0, old, np.where(inside.astype(bool), bool(value), old), "polygon")

    def keep_largest(self) -> Stroke | None:
        return self.replace(mk.largest_component(self.mask), "keep largest region")

    def fill_holes(self) -> Stroke | None:
        return self.replace(mk.fill_holes(self.mask), "fill holes")

    def grow(self, px: int) -> Stroke | None:
        return self.replace(mk.grow(self.mask, px), f"grow {px} px")

    def shrink(self, px: int) -> Stroke | None:
        return self.replace(mk.shrink(self.mask, px), f"shrink {px} px")

    def clear(self) -> Stroke | None:
        return self.replace(np.zeros_like(self.mask), "clear")

    def reset_to_model(self) -> Stroke | None:
        return self.replace(self.model_mask, "reset to model")

    def carry_forward(self, other: np.ndarray) -> Stroke | None:
        """Replace this mask by another frame's (resized nearest if the sizes differ)."""
        other = np.asarray(other, dtype=bool)
        if other.shape != self.mask.shape:
            other = mk.resize_mask(other, self.mask.shape)
        return self.replace(other, "carry forward")

    def replace(self, new_mask: np.ndarray, label: str) -> Stroke | None:
        """Make the mask equal ``new_mask`` as one stroke over the bounding rect of the change."""
        if new_mask.shape != self.mask.shape:
            raise ValueError(f"mask of shape {new_mask.shape} given for a {self.mask.shape} frame")
        changed = self.mask != new_mask
        rows, cols = np.flatnonzero(changed.any(axis=1)), np.flatnonzero(changed.any(axis=0))
        if rows.size == 0:
            return None
        y0, y1, x0, x1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
        old = self.mask[y0:y1, x0:x1].copy()
        return self._replace_rect(y0, x0, old, np.array(new_mask[y0:y1, x0:x1], dtype=bool), label)

    # -- undo / redo / replay ----------------------------------------------------------------
    def apply(self, stroke: Stroke | Diff) -> Rect:
        """Write a stroke's new values (redo)."""
        diff = stroke.diff if isinstance(stroke, Stroke) else stroke
        self._write(diff)
        self._notify(diff)
        return diff.rect

    def revert(self, stroke: Stroke | Diff) -> Rect:
        """Write a stroke's old values back (undo)."""
        diff = stroke.diff if isinstance(stroke, Stroke) else stroke
        inv = diff.inverted()
        self._write(inv)
        self._notify(inv)
        return diff.rect

    def stats(self) -> EditStats:
        added = int(np.count_nonzero(self.mask & ~self.model_mask))
        removed = int(np.count_nonzero(~self.mask & self.model_mask))
        inter = int(np.count_nonzero(self.mask & self.model_mask))
        total = inter * 2 + added + removed
        dice = 1.0 if total == 0 else 2.0 * inter / total
        return EditStats(added + removed, added, removed, dice, self.strokes)

    # -- internals -------------------------------------------------------------------------
    def _write(self, diff: Diff) -> None:
        x0, y0, x1, y1 = diff.rect
        h, w = self.mask.shape
        if x0 < 0 or y0 < 0 or x1 > w or y1 > h:
            raise ValueError(f"diff {diff.rect} falls outside the {w}x{h} frame")
        self.mask[y0:y1, x0:x1] = diff.new

    def _replace_rect(self, y0: int, x0: int, old: np.ndarray, new: np.ndarray, label: str) -> Stroke | None:
        if np.array_equal(old, new):
            return None
        stroke = Stroke(Diff(y0, x0, old, new), label)
        self._write(stroke.diff)
        return self._completed(stroke)

    def _completed(self, stroke: Stroke) -> Stroke:
        self._notify(stroke.diff)
        return stroke

    def _notify(self, diff: Diff) -> None:
        self.strokes += 1
        if self.on_change is not None:
            self.on_change(diff)


class SessionListener(Protocol):
    """What the project store implements to persist a session as it changes."""

    def frame_started(self, frame: int, edits: FrameEdits) -> None: ...
    def mask_changed(self, frame: int, diff: Diff) -> None:
        """``diff`` was applied to ``frame``; ``session.state(frame)`` is already its new state."""
    def state_changed(self, frame: int, state: ReviewState) -> None: ...


@dataclass
class EditSession:
    """All frames of one source: their editable masks and review states.

    A frame's :class:`FrameEdits` exists once :meth:`start` gave it the model's thresholded
    prediction; frames never started have no mask (only, possibly, a review state).
    """

    listener: SessionListener | None = None
    frames: dict[int, FrameEdits] = field(default_factory=dict)
    states: dict[int, ReviewState] = field(default_factory=dict)
    names: dict[int, str] = field(default_factory=dict)
    # The state a frame had before an edit made it CORRECTED, given back when its mask
    # returns to the model's (undo, reset). In memory only: after a reopen it is UNREVIEWED.
    _before_correction: dict[int, ReviewState] = field(default_factory=dict, repr=False)
    _propagating: int | None = field(default=None, repr=False)
    # Digest of each propagated frame's carried mask: an edit undone back to it gives the frame
    # the state it had before the edit (PROPAGATED, or ACCEPTED once accepted). In memory only.
    _propagated: dict[int, bytes] = field(default_factory=dict, repr=False)

    def start(self, frame: int, model_mask: np.ndarray, *, model_version: str = "", threshold: float = 0.5,
              name: str | None = None) -> FrameEdits:
        """The frame's edits, created from ``model_mask`` the first time (later calls return it)."""
        edits = self.frames.get(frame)
        if edits is not None:
            return edits
        edits = FrameEdits(model_mask, model_version=model_version, threshold=threshold)
        self.adopt(frame, edits, name=name)
        if self.listener is not None:
            self.listener.frame_started(frame, edits)
        return edits

    def adopt(self, frame: int, edits: FrameEdits, *, name: str | None = None) -> None:
        """Attach already-built edits (used when a project is reopened; reports nothing)."""
        self.frames[frame] = edits
        if name is not None:
            self.names[frame] = name
        edits.on_change = lambda diff, f=frame: self._changed(f, diff)

    def get(self, frame: int) -> FrameEdits | None:
        return self.frames.get(frame)

    def mask(self, frame: int) -> np.ndarray | None:
        edits = self.frames.get(frame)
        return None if edits is None else edits.mask

    def state(self, frame: int) -> ReviewState:
        return self.states.get(frame, ReviewState.UNREVIEWED)

    def set_state(self, frame: int, state: ReviewState) -> None:
        """Set a frame's review state. CORRECTED needs a mask that differs from the model's
        (a frame whose mask is the model's is accepted or unreviewed, never corrected)."""
        state = ReviewState(state)
        if state in (ReviewState.ACCEPTED, ReviewState.CORRECTED) and frame not in self.frames:
            raise ValueError(f"frame {frame} has no mask yet: start() it from the prediction first")
        if state == ReviewState.CORRECTED and self.is_model_mask(frame):
            raise ValueError(f"frame {frame}: nothing is corrected, its mask is the model's; "
                             "edit it first, or accept it")
        old = self.states.get(frame, ReviewState.UNREVIEWED)
        if old == state:
            return
        if state == ReviewState.CORRECTED:
            self._before_correction[frame] = old
        else:
            self._before_correction.pop(frame, None)
        self.states[frame] = state
        if self.listener is not None:
            self.listener.state_changed(frame, state)

    def propagate(self, frame: int, mask: np.ndarray) -> Stroke | None:
        """Give a started frame a mask carried from a reviewed frame (``engine.propagation``):
        one stroke, and the frame becomes PROPAGATED in the same change (the store keeps both
        in one record). Undoing the stroke gives the frame its earlier state back; editing a
        propagated mask makes it CORRECTED; accepting it makes it ACCEPTED. Returns None when
        the mask is already that one (the state is still set)."""
        edits = self.frames.get(frame)
        if edits is None:
            raise ValueError(f"frame {frame} has no mask yet: start() it from the prediction first")
        self._propagating = frame
        try:
            stroke = edits.replace(np.asarray(mask, dtype=bool), "propagate")
        finally:
            self._propagating = None
        if stroke is None:
            self.set_state(frame, ReviewState.PROPAGATED)
        return stroke

    def apply_propagation(self, frame: int, stroke: Stroke) -> Rect:
        """Redo a :meth:`propagate` stroke (the frame becomes PROPAGATED again, in the same change)."""
        self._propagating = frame
        try:
            return self.frames[frame].apply(stroke)
        finally:
            self._propagating = None

    def carry_forward(self, frame: int, from_frame: int) -> Stroke | None:
        """Copy ``from_frame``'s mask onto ``frame`` (both must be started) as one stroke."""
        src, dst = self.frames.get(from_frame), self.frames.get(frame)
        if src is None or dst is None:
            raise ValueError(f"carry forward needs masks on frames {from_frame} and {frame}")
        return dst.carry_forward(src.mask)

    def is_model_mask(self, frame: int) -> bool:
        """True when the frame has a mask and it equals the model's (nothing corrected)."""
        edits = self.frames.get(frame)
        return edits is not None and np.array_equal(edits.mask, edits.model_mask)

    def stats(self, frame: int) -> EditStats | None:
        edits = self.frames.get(frame)
        return None if edits is None else edits.stats()

    def with_state(self, *states: ReviewState) -> list[int]:
        """Frames (ascending) in any of ``states``; UNREVIEWED counts only frames that exist here."""
        wanted = set(states)
        known = set(self.frames) | set(self.states)
        return sorted(f for f in known if self.state(f) in wanted)

    def next_unreviewed(self, after: int, n_frames: int, *, wrap: bool = True) -> int | None:
        """The first frame after ``after`` still UNREVIEWED (wrapping round), or None."""
        order: Iterable[int] = range(after + 1, n_frames)
        if wrap:
            order = list(order) + list(range(0, min(after + 1, n_frames)))
        for f in order:
            if self.state(f) == ReviewState.UNREVIEWED:
                return f
        return None

    def _digest(self, frame: int) -> bytes:
        return hashlib.blake2b(np.packbits(self.frames[frame].mask).tobytes(), digest_size=16).digest()

    def _changed(self, frame: int, diff: Diff) -> None:
        # The review state follows the content: an edit that makes the mask differ from the
        # model's makes the frame "corrected" (unless it was flagged as unusable); a change
        # that brings it back to the model's mask (undo, reset, painting it back) gives the
        # frame the state it had before it was corrected. Set silently: the listener reads
        # the new state with the change, so the store persists both in ONE record (a kill
        # can never keep one without the other).
        # A propagated mask is the propagation's, not a reviewer's: PROPAGATED, undone the
        # same way.
        state = self.state(frame)
        if frame == self._propagating:
            if state != ReviewState.PROPAGATED:
                self._before_correction[frame] = state
            self.states[frame] = ReviewState.PROPAGATED
            self._propagated[frame] = self._digest(frame)
        elif (state == ReviewState.CORRECTED and frame in self._propagated and frame in self._before_correction
              and self._digest(frame) == self._propagated[frame]):
            self.states[frame] = self._before_correction.pop(frame)  # back to the carried mask
        elif self.is_model_mask(frame):
            if state in (ReviewState.CORRECTED, ReviewState.PROPAGATED):
                self.states[frame] = self._before_correction.pop(frame, ReviewState.UNREVIEWED)
        elif state in (ReviewState.UNREVIEWED, ReviewState.ACCEPTED, ReviewState.PROPAGATED):
            self._before_correction[frame] = state
            self.states[frame] = ReviewState.CORRECTED
        if self.listener is not None:
            self.listener.mask_changed(frame, diff)

