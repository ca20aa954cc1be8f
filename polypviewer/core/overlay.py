"""Overlay compositing in numpy: prediction / ground truth / disagreement layers.

The overlay is a *code image* (uint8, one byte per pixel) plus a small colour table, not an
RGBA image: bit 0 = prediction (or its outline), bit 1 = ground truth (or its outline). The
view turns the codes into colours with an indexed image, so changing a colour or an opacity
never touches the pixels, and a brush stroke recomputes only the codes in its dirty
rectangle. In disagreement mode the same codes read as FP (1), FN (2) and TP (3).

Everything here is plain numpy (+ OpenCV for the outline erosion); no Qt.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import cv2
import numpy as np

Rect = tuple[int, int, int, int]  # (x0, y0, x1, y1), x1/y1 exclusive, image pixels
RGB = tuple[int, int, int]

PRED = 1
GT = 2
BOTH = 3


@dataclass(frozen=True)
class OverlayStyle:
    """How the overlay looks. Opacities are 0..1; colours are RGB 0..255."""

    pred_color: RGB = (0, 230, 255)  # cyan: visible on reddish mucosa
    gt_color: RGB = (255, 210, 0)  # amber
    pred_opacity: float = 0.45
    gt_opacity: float = 0.45
    show_pred: bool = True
    show_gt: bool = True
    outline: bool = False
    outline_px: int = 2
    disagreement: bool = False
    tp_color: RGB = (40, 220, 90)  # green: agreed polyp
    fp_color: RGB = (255, 60, 200)  # magenta: predicted, not in ground truth
    fn_color: RGB = (255, 150, 0)  # orange: missed
    disagreement_opacity: float = 0.55

    def with_(self, **changes: Any) -> OverlayStyle:
        return replace(self, **changes)


def _rgba(color: RGB, opacity: float) -> tuple[int, int, int, int]:
    return (int(color[0]), int(color[1]), int(color[2]), int(round(255 * min(max(opacity, 0.0), 1.0))))


def _over(top: tuple[int, int, int, int], bottom: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    """Porter-Duff 'over' of two straight-alpha colours (pred drawn over ground truth)."""
    ta, ba = top[3] / 255.0, bottom[3] / 255.0
    a = ta + ba * (1 - ta)
    if a <= 0:
        return (0, 0, 0, 0)
    rgb = [(top[i] * ta + bottom[i] * ba * (1 - ta)) / a for i in range(3)]
    return (int(round(rgb[0])), int(round(rgb[1])), int(round(rgb[2])), int(round(a * 255)))


def color_table(style: OverlayStyle) -> list[tuple[int, int, int, int]]:
    """RGBA (straight alpha) for codes 0..3 under ``style``."""
    if style.disagreement:
        op = style.disagreement_opacity
        return [(0, 0, 0, 0), _rgba(style.fp_color, op), _rgba(style.fn_color, op), _rgba(style.tp_color, op)]
    pred = _rgba(style.pred_color, style.pred_opacity)
    gt = _rgba(style.gt_color, style.gt_opacity)
    return [(0, 0, 0, 0), pred, gt, _over(pred, gt)]


def _clip_rect(rect: Rect | None, shape: tuple[int, ...]) -> Rect:
    h, w = shape[:2]
    if rect is None:
        return (0, 0, w, h)
    x0, y0, x1, y1 = (int(v) for v in rect)
    return (max(0, x0), max(0, y0), min(w, x1), min(h, y1))


def outline(mask: np.ndarray, px: int = 2, rect: Rect | None = None) -> np.ndarray:
    """Inner boundary of ``mask`` (``px`` pixels thick), for ``rect`` only when given.

    The erosion needs ``px`` pixels of context around the rectangle, so the crop is padded
    and the padding cut off again: the result equals the full-frame outline cropped.
    """
    x0, y0, x1, y1 = _clip_rect(rect, mask.shape)
    h, w = mask.shape[:2]
    px = max(1, int(px))
    px0, py0, px1, py1 = max(0, x0 - px), max(0, y0 - px), min(w, x1 + px), min(h, y1 + px)
    crop = np.ascontiguousarray(mask[py0:py1, px0:px1], dtype=np.uint8)
    kernel = np.ones((2 * px + 1, 2 * px + 1), np.uint8)
    # Pixels outside the image count as background, so a polyp touching the border is closed.
    eroded = cv2.erode(crop, kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    edge = (crop > eroded)
    return edge[y0 - py0:y0 - py0 + (y1 - y0), x0 - px0:x0 - px0 + (x1 - x0)]


def overlay_codes(pred: np.ndarray | None, gt: np.ndarray | None, style: OverlayStyle,
                  rect: Rect | None = None, out: np.ndarray | None = None) -> np.ndarray:
    """Code image (uint8) for ``rect`` (whole frame when None): bit 0 pred, bit 1 gt.

    ``pred`` and ``gt`` are bool HxW (either may be None). When ``out`` is given (the full
    HxW code image) the rectangle is written into it in place and ``out`` is returned.
    """
    ref = pred if pred is not None else gt
    if ref is None:
        raise ValueError("overlay_codes needs a prediction or a ground truth mask")
    x0, y0, x1, y1 = _clip_rect(rect, ref.shape)
    codes = np.zeros((y1 - y0, x1 - x0), np.uint8)
    use_outline = style.outline and not style.disagreement
    show_pred = style.show_pred or style.disagreement
    show_gt = style.show_gt or style.disagreement
    if pred is not None and show_pred:
        layer = outline(pred, style.outline_px, (x0, y0, x1, y1)) if use_outline else pred[y0:y1, x0:x1]
        codes |= layer.view(np.uint8) if layer.dtype == np.bool_ else (layer != 0).view(np.uint8)
    if gt is not None and show_gt:
        layer = outline(gt, style.outline_px, (x0, y0, x1, y1)) if use_outline else gt[y0:y1, x0:x1]
        g = layer.view(np.uint8) if layer.dtype == np.bool_ else (layer != 0).view(np.uint8)
        codes |= g << 1
    if out is None:
        return codes
    out[y0:y1, x0:x1] = codes
    return out


def composite(frame: np.ndarray, codes: np.ndarray, table: list[tuple[int, int, int, int]]) -> np.ndarray:
    """Blend the coloured codes over an RGB frame (uint8 HxWx3); for exports and tests.

    The app itself lets Qt blend an indexed image; this is the same arithmetic in numpy.
    """
    lut = np.asarray(table, np.float32)
    rgba = lut[codes]
    alpha = rgba[..., 3:4] / 255.0
    out = frame.astype(np.float32) * (1 - alpha) + rgba[..., :3] * alpha
    blended: np.ndarray = np.clip(out + 0.5, 0, 255).astype(np.uint8)
    return blended


def disagreement_counts(codes: np.ndarray) -> dict[str, int]:
    """Pixel counts of FP / FN / TP in a code image made with both layers filled."""
    counts = np.bincount(codes.ravel(), minlength=4)
    return {"fp": int(counts[PRED]), "fn": int(counts[GT]), "tp": int(counts[BOTH])}
