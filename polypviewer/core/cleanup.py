"""Whole-mask clean-up operations used by the editor (numpy + OpenCV, no torch, no Qt).

Each function takes a boolean HxW mask and returns a NEW boolean HxW mask; the editor
turns the difference into one undoable stroke. OpenCV does the pixel work because it is
an order of magnitude faster than pure numpy on 1920x1080 frames.
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["keep_largest", "fill_holes", "grow", "shrink", "disk"]


def _u8(mask: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(mask, dtype=bool).view(np.uint8)


def disk(radius: int) -> np.ndarray:
    """Round footprint of ``radius`` pixels: bool (2r+1, 2r+1), centre pixel always set."""
    r = max(0, int(radius))
    yy, xx = np.ogrid[-r:r + 1, -r:r + 1]
    # +0.25 keeps small disks round (r=1 gives a plus-shaped 3x3 rather than a lone pixel).
    return (xx * xx + yy * yy) <= r * r + 0.25 * r


def keep_largest(mask: np.ndarray) -> np.ndarray:
    """Only the largest 8-connected region survives (an empty mask stays empty)."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(_u8(mask), connectivity=8)
    if n <= 2:  # background + at most one region: nothing to drop
        return np.array(mask, dtype=bool, copy=True)
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return labels == largest


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Set every background pixel not 4-connected to the image border."""
    m = _u8(mask)
    h, w = m.shape
    # Pad by one so the flood from a corner reaches all of the border's background.
    padded = np.zeros((h + 2, w + 2), np.uint8)
    padded[1:-1, 1:-1] = m
    cv2.floodFill(padded, None, (0, 0), 2, flags=4)
    return padded[1:-1, 1:-1] != 2


def grow(mask: np.ndarray, px: int) -> np.ndarray:
    """Dilate by ``px`` pixels with a round structuring element."""
    if px <= 0:
        return np.array(mask, dtype=bool, copy=True)
    kernel = disk(px).astype(np.uint8)
    return cv2.dilate(_u8(mask), kernel).astype(bool)


def shrink(mask: np.ndarray, px: int) -> np.ndarray:
    """Erode by ``px`` pixels with a round structuring element (the border counts as outside)."""
    if px <= 0:
        return np.array(mask, dtype=bool, copy=True)
    kernel = disk(px).astype(np.uint8)
    return cv2.erode(_u8(mask), kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0).astype(bool)
