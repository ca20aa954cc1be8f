"""Masks that follow the video: carry a reviewed frame's mask through its neighbours.

From a seed mask at frame ``start`` the mask is carried frame by frame (forward or backward)
by dense optical flow (OpenCV's DIS), and each warped mask is refined with what the frame
itself says (the network's probability map). The refined mask, not the warped one, is
carried on, so the flow's errors do not pile up. Given a box-prompted segmenter (``prompt``:
LiteMedSAM in ``polypviewer propagate`` and the window), each region of the refined mask prompts it with its
box and the union of its masks is what the frame gets (``prompt_regions``; measured +0.06 Dice
over the network alone on CVC-ClinicDB's sequences, against +0.02 without it; the window's
Propagate uses the Box tool's LiteMedSAM the same way). Propagation stops at the end frame the
caller gives (the next reviewed frame, ``--to``), at a scene change (a jump in the colour
histogram between neighbouring frames), or when the ``stop`` event is set.

Each frame gets a drift score in [0, 1], high for a frame to check first: 1 - the network's
mean probability inside the propagated mask (1 when the mask is empty). Of the scores
``benchmarks/bench_propagation.py`` compares on CVC-ClinicDB's 29 sequences it ranks bad
frames best (Spearman 0.755 with 1 - Dice for the shipped fusion; the refinement's change to
the warped mask, kept as ``disagreement``, 0.10; the flow's forward-backward error 0.05). The
fusion defaults here (``gated``) are the ones that benchmark chose on the first half of the
sequences. Without a network the
drift is the disagreement, which is then 0: flow alone cannot tell where it went wrong.

No Qt and no torch here: the probability map comes from a callable (``Predictor.predict``
of one frame, the app's prediction cache, or anything that maps a frame to an (H, W) map).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Literal, Protocol

import cv2
import numpy as np

__all__ = ["PropagationParams", "PropagatedFrame", "Propagation", "Flow", "DISFlow", "warp", "scene_distance",
           "propagation_end", "refine", "drift_score", "mask_dice", "mask_box",
           "prompted_regions"]

FrameFn = Callable[[int], np.ndarray]
ProbabilityFn = Callable[[int, np.ndarray], np.ndarray]  # (index, RGB frame) -> (H, W) map
PromptFn = Callable[[int, np.ndarray, tuple[int, int, int, int]], np.ndarray]  # (i, frame, box) -> mask
Fusion = Literal["flow", "model", "hysteresis", "gated", "blend", "box"]


@dataclass(frozen=True)
class PropagationParams:
    """How a warped mask and the network's map are fused (see :func:`refine`).

    - ``flow``: the warped mask as it is (no network).
    - ``model``: the network's mask alone (p >= ``high``); the warped mask only stands in
      where the network finds nothing.
    - ``hysteresis``: p >= ``high`` anywhere, or p >= ``low`` within ``near`` of the warped
      mask (``near`` is a fraction of the frame's diagonal); the warped mask where both are empty.
    - ``gated``: the hysteresis mask when the network is confident of it (its mean p inside is
      at least ``confident``), else its union with the warped mask (the flow keeps what an
      unsure network misses).
    - ``blend``: ``alpha * p + (1 - alpha) * warped_soft >= threshold``, where ``warped_soft``
      is the previous frame's fused map warped by the flow (a flow-guided running average).
    - ``box``: a box-prompted segmenter (LiteMedSAM, ``Propagation.prompt``) given the box
      around the warped mask; the warped mask where it is empty or no segmenter is given.

    ``prompt_regions`` (with a ``Propagation.prompt``, any fusion but ``box``): each region of
    the fused mask (8-connected, at least ``min_region`` px, 2x2 px or more) prompts the
    segmenter with its box, and the union of its masks is what the frame gets; the fused mask,
    not the prompted one, is carried on to the next frame (:func:`prompted_regions`).
    """

    fusion: Fusion = "gated"
    high: float = 0.5
    low: float = 0.3
    near: float = 0.05
    confident: float = 0.6
    alpha: float = 0.7
    threshold: float = 0.4
    prompt_regions: bool = True  # only where a Propagation is given a prompt (propagate's LiteMedSAM)
    min_region: int = 16  # px: a smaller region of the fused mask prompts nothing (and is kept)
    scene_cut: float = 0.4  # histogram distance (Bhattacharyya, 0..1) that ends propagation
    flow_width: int = 512  # the flow is computed on frames at most this wide


@dataclass
class PropagatedFrame:
    index: int
    mask: np.ndarray  # bool (H, W): what the frame gets
    warped: np.ndarray  # bool (H, W): the previous mask carried by the flow
    drift: float  # 1 - mean network probability inside mask (1 if empty); see the module doc
    disagreement: float  # 1 - Dice(warped, mask): how much the refinement changed the flow's mask
    scene: float  # histogram distance to the previous frame (scene_cut ends propagation)


def mask_dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two boolean masks, 1.0 when both are empty (the project's 0/0 = 1 rule)."""
    s = int(a.sum()) + int(b.sum())
    return 1.0 if s == 0 else 2.0 * int(np.logical_and(a, b).sum()) / s


def drift_score(mask: np.ndarray, prob: np.ndarray | None, disagreement: float) -> float:
    """1 - mean probability inside ``mask`` (1 when empty); ``disagreement`` without a map."""
    if prob is None:
        return disagreement
    if not mask.any():
        return 1.0
    return float(1.0 - np.clip(prob[mask], 0.0, 1.0).mean())


def _gray_small(frame: np.ndarray, width: int) -> tuple[np.ndarray, float]:
    g = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) if frame.ndim == 3 else frame
    h, w = g.shape[:2]
    if w <= width:
        return np.ascontiguousarray(g), 1.0
    s = width / w
    return cv2.resize(g, (width, max(1, round(h * s))), interpolation=cv2.INTER_AREA), s


class Flow(Protocol):
    def backward(self, src: np.ndarray, dst: np.ndarray, key: tuple[int, int] | None = None) -> np.ndarray: ...


class DISFlow:
    """Dense optical flow (OpenCV DIS, medium preset) between two frames, memoised by index
    pair when ``memo`` is given (benchmarks re-run several fusions over the same frames)."""

    def __init__(self, preset: int = cv2.DISOPTICAL_FLOW_PRESET_MEDIUM, width: int = 512,
                 memo: dict[tuple[int, int], np.ndarray] | None = None) -> None:
        self._dis = cv2.DISOpticalFlow_create(preset)  # type: ignore[attr-defined]  # missing from cv2's stubs
        self.width = int(width)
        self.memo = memo
        self._lock = threading.Lock()  # a DIS object is not re-entrant

    def backward(self, src: np.ndarray, dst: np.ndarray, key: tuple[int, int] | None = None) -> np.ndarray:
        """Flow on ``dst``'s pixel grid pointing into ``src`` (H, W, 2), at ``dst``'s size:
        ``dst(x) ~ src(x + flow(x))``, the map :func:`warp` samples with."""
        if self.memo is not None and key is not None and key in self.memo:
            return self.memo[key]
        gs, scale = _gray_small(src, self.width)
        gd, _ = _gray_small(dst, self.width)
        with self._lock:
            f = self._dis.calc(gd, gs, None)
        h, w = dst.shape[:2]
        if scale != 1.0:
            f = cv2.resize(f, (w, h), interpolation=cv2.INTER_LINEAR) / scale
        f = np.asarray(f, dtype=np.float32)
        if self.memo is not None and key is not None:
            self.memo[key] = f
        return f


def warp(x: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Sample ``x`` (a mask or a float map on the source grid) at ``grid + flow``: float32."""
    h, w = flow.shape[:2]
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return cv2.remap(x.astype(np.float32), gx + flow[..., 0], gy + flow[..., 1], cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def _hist(frame: np.ndarray) -> np.ndarray:
    hsv = cv2.cvtColor(frame, cv2.COLOR_RGB2HSV)
    h = cv2.calcHist([hsv], [0, 1], None, [30, 32], [0, 180, 0, 256])
    return cv2.normalize(h, h).astype(np.float32)


def scene_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Bhattacharyya distance (0 = same, 1 = disjoint) of two RGB frames' hue-saturation
    histograms: the scene-change cue (a cut between sequences jumps, a moving scope does not)."""
    return float(cv2.compareHist(_hist(a), _hist(b), cv2.HISTCMP_BHATTACHARYYA))


def _disk(r: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))


def refine(warped_soft: np.ndarray, prob: np.ndarray | None,
           params: PropagationParams) -> tuple[np.ndarray, np.ndarray]:
    """(mask, soft map carried on) from the warped map (float 0..1) and the network's map."""
    warped = warped_soft >= 0.5
    if prob is None or params.fusion == "flow":
        return warped, warped.astype(np.float32)
    if params.fusion == "model":
        m = prob >= params.high
        m = m if m.any() else warped
        return m, m.astype(np.float32)
    if params.fusion == "blend":
        q = params.alpha * prob + (1.0 - params.alpha) * warped_soft
        return q >= params.threshold, q.astype(np.float32)
    h, w = prob.shape[:2]
    r = max(1, round(params.near * float(np.hypot(h, w))))
    near = cv2.dilate(warped.astype(np.uint8), _disk(r)) > 0
    m = (prob >= params.high) | ((prob >= params.low) & near)
    if params.fusion == "gated" and (not m.any() or float(prob[m].mean()) < params.confident):
        m = m | warped
    m = m if m.any() else warped
    return m, m.astype(np.float32)


def mask_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """The box (x0, y0, x1, y1, inclusive) around a mask's pixels, or None when there is no box
    to prompt with: an empty mask, or one spanning a single row or column (a prompt box needs
    2x2 pixels; a flow can shrink a mask to a speck)."""
    ys, xs = np.nonzero(np.asarray(mask))
    if not len(xs) or xs.max() == xs.min() or ys.max() == ys.min():
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())


def prompted_regions(mask: np.ndarray, prompt: Callable[[tuple[int, int, int, int]], np.ndarray],
                     min_region: int = 16) -> np.ndarray:
    """The union of ``prompt(box)`` over the boxes of ``mask``'s regions (8-connected, at least
    ``min_region`` px and 2x2 px): one box per region, as a box-prompted segmenter expects one
    object per box. Regions too small to prompt with are kept as they are; a mask without a
    region to prompt with is returned unchanged."""
    from polypviewer.core.masks import components

    m = np.asarray(mask, dtype=bool)
    comp = components(m)
    out = np.zeros_like(m)
    prompted = False
    for k, (box, area) in enumerate(zip(comp.boxes, comp.areas, strict=True), 1):
        x0, y0, x1, y1 = box
        if area >= min_region and x1 > x0 and y1 > y0:
            out |= np.asarray(prompt(box), dtype=bool)
            prompted = True
        else:
            out |= comp.labels == k
    return out if prompted else m


def propagation_end(start: int, n_frames: int, *, backward: bool = False, to: int | None = None,
                    reviewed: set[int] | frozenset[int] = frozenset()) -> int:
    """The last frame to propagate to from ``start``: ``to`` (clipped to the video), else the
    frame before the next reviewed one, else the video's end. Equal to ``start`` when there is
    nothing to do."""
    step = -1 if backward else 1
    last = 0 if backward else n_frames - 1
    if to is not None:
        last = max(0, min(n_frames - 1, int(to)))
        if (last - start) * step < 0:
            return start
    i = start + step
    while (last - i) * step >= 0:
        if i in reviewed:
            return i - step
        i += step
    return last


@dataclass
class Propagation:
    """One run: iterate it for the :class:`PropagatedFrame` of each frame after ``start``
    up to ``end`` (inclusive, either direction). ``stopped`` says why it ended: ``"end"``,
    ``"scene change at frame N"`` (N not propagated to), or ``"cancelled"``.

    ``frame(i)`` returns RGB uint8 frames; ``probability(i, frame)`` the network's map
    (None: flow only; the index lets a caller answer from its cache). ``stop`` (a
    ``threading.Event``) is checked before every frame. ``flow``: a :class:`DISFlow` (made
    here when None) or anything with its ``backward``. ``prompt(i, frame, box)``: the
    box-prompted segmenter the ``box`` fusion uses (box = x0, y0, x1, y1, inclusive).
    """

    frame: FrameFn
    seed: np.ndarray
    start: int
    end: int
    probability: ProbabilityFn | None = None
    params: PropagationParams = field(default_factory=PropagationParams)
    stop: threading.Event | None = None
    flow: Flow | None = None
    prompt: PromptFn | None = None
    stopped: str = ""

    def _prompted(self, i: int, frame: np.ndarray, warped: np.ndarray) -> np.ndarray:
        box = mask_box(warped)
        if self.prompt is None or box is None:
            return warped
        return np.asarray(self.prompt(i, frame, box), dtype=bool)

    def __iter__(self) -> Iterator[PropagatedFrame]:
        p = self.params
        flow: Flow = self.flow or DISFlow(width=p.flow_width)
        step = 1 if self.end >= self.start else -1
        prev = self.frame(self.start)
        seed = np.asarray(self.seed, dtype=bool)
        if seed.shape != prev.shape[:2]:
            raise ValueError(f"seed mask {seed.shape} and frame {self.start} {prev.shape[:2]} differ in size")
        soft = seed.astype(np.float32)
        prev_i = self.start
        self.stopped = "end"
        for i in range(self.start + step, self.end + step, step):
            if self.stop is not None and self.stop.is_set():
                self.stopped = "cancelled"
                return
            cur = self.frame(i)
            scene = scene_distance(prev, cur)
            if scene >= p.scene_cut:
                self.stopped = f"scene change at frame {i}"
                return
            f = flow.backward(prev, cur, key=(prev_i, i))
            wsoft = warp(soft, f)
            prob = self.probability(i, cur) if self.probability is not None and p.fusion != "flow" else None
            warped = wsoft >= 0.5
            if p.fusion == "box":
                mask = self._prompted(i, cur, warped)
                soft = mask.astype(np.float32)
            else:
                mask, soft = refine(wsoft, prob, p)
                if p.prompt_regions and self.prompt is not None:
                    mask = prompted_regions(mask, functools.partial(self.prompt, i, cur), p.min_region)
            dis = 1.0 - mask_dice(warped, mask)
            yield PropagatedFrame(i, mask, warped, drift_score(mask, prob, dis), dis, scene)
            prev, prev_i = cur, i
