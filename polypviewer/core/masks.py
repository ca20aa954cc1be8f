"""Binary polyp masks: binarising, resizing, connected components, clean-up, outlines.

Every function takes a mask as a numpy array and returns a new array (inputs are never
modified). A *mask* here is ``bool`` of shape ``(H, W)``; :func:`binarise` turns whatever a
file or a network produced into one, by the project's one threshold rule (:func:`to_mask`):
foreground where a value is at least half its scale, i.e. probability ``p >= 0.5``, 8-bit
``v >= 128`` (the same as ``v > 127``, which strips JPEG ringing from 0/255 masks), 16-bit
``v >= 32768``. Connected components are 8-connected throughout (a
diagonal touch joins two regions), so holes and background are 4-connected.

OpenCV does the pixel work (labelling, morphology, contours): it is already a dependency,
imports no Qt or torch, and is far faster than hand-written numpy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

__all__ = [
    "THRESHOLD",
    "Components",
    "binarise",
    "bboxes",
    "components",
    "contours",
    "fill_holes",
    "grow",
    "largest_component",
    "resize_mask",
    "shrink",
    "to_mask",
    "to_mask8",
]

#: The one threshold, on the probability scale: masks, maps and ground truth all use it.
THRESHOLD = 0.5

BBox = tuple[int, int, int, int]


def to_mask(x: np.ndarray, threshold: float = THRESHOLD) -> np.ndarray:
    """Binary mask (bool, same shape) from a single-channel mask or probability map.

    ``threshold`` is on the 0..1 probability scale; integer maps are compared at the same
    fraction of their full scale (8-bit: ``v >= ceil(255 * threshold)``, so 0.5 -> 128).
    """
    x = np.asarray(x)
    if x.dtype == bool:
        return x
    if x.dtype == np.uint8:
        return x >= math.ceil(255 * threshold)
    if x.dtype == np.uint16:
        return x >= math.ceil(65535 * threshold)
    if np.issubdtype(x.dtype, np.floating):
        return x >= threshold
    raise TypeError(f"cannot make a mask from an array of {x.dtype}: "
                    "expected bool, uint8, uint16 or float probabilities")


def binarise(mask: np.ndarray, threshold: float = THRESHOLD) -> np.ndarray:
    """Return a ``bool`` ``(H, W)`` mask from a mask file's array or a network's map.

    Accepts ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` and ``(H, W, 4)`` arrays of ``bool``,
    ``uint8``, ``uint16`` or float, thresholded by :func:`to_mask` (``threshold`` on the
    probability scale). Colour masks are foreground where any colour channel is; an alpha
    channel is ignored unless the colour channels are all zero (a mask drawn only in alpha).
    """
    arr: np.ndarray = np.asarray(mask)
    if arr.ndim == 3:
        if arr.shape[2] == 1:
            arr = arr[:, :, 0]
        elif arr.shape[2] in (3, 4):
            colour = arr[:, :, :3].max(axis=2)
            if arr.shape[2] == 4 and not colour.any():
                colour = arr[:, :, 3]
            arr = colour
        else:
            raise ValueError(f"a mask has 1, 3 or 4 channels: got shape {arr.shape}")
    elif arr.ndim != 2:
        raise ValueError(f"a mask is HxW or HxWxC: got shape {arr.shape}")
    fg: np.ndarray  # (numpy's stubs type slices and comparisons as Any)
    if arr.dtype == np.bool_:
        fg = arr.copy()
    elif np.issubdtype(arr.dtype, np.integer) and arr.dtype not in (np.uint8, np.uint16):
        fg = arr >= math.ceil(255 * threshold)  # other integers: values on the 8-bit scale
    else:
        fg = to_mask(arr, threshold)
    return fg


def to_mask8(mask: np.ndarray) -> np.ndarray:
    """A boolean mask as single-channel ``uint8`` 0/255 (the Kvasir-SEG file convention).
    (Not ``metrics.to_uint8``, which quantises a probability map to 0..255.)"""
    return np.where(np.asarray(mask, dtype=bool), np.uint8(255), np.uint8(0))


def _u8(mask: np.ndarray) -> np.ndarray:
    arr = np.asarray(mask)
    if arr.ndim != 2:
        raise ValueError(f"expected an HxW mask: got shape {arr.shape}")
    return arr.astype(bool).view(np.uint8) if arr.dtype == np.bool_ else (arr != 0).astype(np.uint8)


@dataclass(frozen=True)
class Components:
    """8-connected regions of a mask.

    ``labels`` is ``int32 (H, W)``: 0 background, ``1..count`` the regions in raster order of
    their first pixel. ``areas[k]`` and ``boxes[k]`` (inclusive ``xmin, ymin, xmax, ymax``)
    describe region ``k + 1``.
    """

    count: int
    labels: np.ndarray
    areas: np.ndarray
    boxes: list[BBox]


def components(mask: np.ndarray) -> Components:
    """Label the 8-connected regions of ``mask``."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(_u8(mask), connectivity=8, ltype=cv2.CV_32S)
    stats = stats[1:]
    boxes = [
        (int(x), int(y), int(x + w - 1), int(y + h - 1))
        for x, y, w, h in stats[:, :4]
    ]
    return Components(int(n - 1), labels, stats[:, cv2.CC_STAT_AREA].astype(np.int64), boxes)


def bboxes(mask: np.ndarray, min_area: int = 0) -> list[BBox]:
    """One ``(xmin, ymin, xmax, ymax)`` box per 8-connected region of at least ``min_area``
    pixels, pixel coordinates inclusive."""
    comp = components(mask)
    return [b for b, a in zip(comp.boxes, comp.areas, strict=True) if a >= min_area]


def largest_component(mask: np.ndarray) -> np.ndarray:
    """Keep only the largest region (ties: the first in raster order); empty stays empty."""
    comp = components(mask)
    if comp.count == 0:
        return np.zeros(np.shape(mask), dtype=bool)
    largest: np.ndarray = comp.labels == int(np.argmax(comp.areas)) + 1
    return largest


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill every background region that does not touch the image border."""
    m = _u8(mask)
    h, w = m.shape
    # Flood the background from a one-pixel frame around the image: whatever the flood
    # cannot reach is enclosed by foreground, i.e. a hole.
    padded = np.zeros((h + 2, w + 2), np.uint8)
    padded[1:-1, 1:-1] = m
    flood_mask = np.zeros((h + 4, w + 4), np.uint8)
    cv2.floodFill(padded, flood_mask, (0, 0), 2, flags=4)
    filled: np.ndarray = padded[1:-1, 1:-1] != 2
    return filled


def _disk(px: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * px + 1, 2 * px + 1))


def grow(mask: np.ndarray, px: int) -> np.ndarray:
    """Dilate by a disk of radius ``px`` pixels (negative ``px`` shrinks)."""
    px = int(px)
    if px < 0:
        return shrink(mask, -px)
    m = _u8(mask)
    if px == 0:
        return m.astype(bool)
    return cv2.dilate(m, _disk(px)).astype(bool)


def shrink(mask: np.ndarray, px: int) -> np.ndarray:
    """Erode by a disk of radius ``px`` pixels (negative ``px`` grows).

    The image border does not erode: a polyp cut by the frame edge keeps that edge.
    """
    px = int(px)
    if px < 0:
        return grow(mask, -px)
    m = _u8(mask)
    if px == 0:
        return m.astype(bool)
    return cv2.erode(m, _disk(px), borderType=cv2.BORDER_REPLICATE).astype(bool)


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize to ``size = (height, width)``; returns ``bool``."""
    h, w = int(size[0]), int(size[1])
    if h <= 0 or w <= 0:
        raise ValueError(f"target size must be positive: got {h}x{w}")
    m = _u8(mask)
    if m.shape == (h, w):
        return m.astype(bool)
    return cv2.resize(m, (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)


def contours(mask: np.ndarray) -> list[np.ndarray]:
    """Outlines of every region and every hole, each an ``int32 (N, 2)`` array of ``(x, y)``.

    Points are the boundary pixels of the region (every pixel, not simplified), so a
    polyline through them traces the outline drawn over the image.
    """
    found, _ = cv2.findContours(_u8(mask), cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
    return [c.reshape(-1, 2).astype(np.int32) for c in found]
