"""Joint image + mask augmentation as the papers did it, in one warp per sample.

Flips, rotation (PraNet's MediaEval entry: +-15 deg), border crop, scale and colour jitter.
All geometric steps are folded into ONE affine map from the output square back to the
source, applied with ``cv2.warpAffine`` to the image (bilinear) and to the mask (nearest),
so image and mask can never drift apart and a sample costs two warps whatever the recipe.

PraNet's multi-scale training (rates 0.75 / 1 / 1.25, sizes rounded to multiples of 32) is
:func:`multiscale`, applied to a whole batch of tensors.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["AugmentConfig", "augment_pair", "affine_matrix", "colour_jitter", "multiscale",
           "scaled_size"]


@dataclass(frozen=True)
class AugmentConfig:
    hflip: float = 0.5  # probability
    vflip: float = 0.5
    rotate: float = 15.0  # max degrees either way
    border_crop: float = 0.1  # up to this fraction cut from each side
    scale: tuple[float, float] = (0.9, 1.1)  # zoom range
    brightness: float = 0.2  # +- fraction
    contrast: float = 0.2
    saturation: float = 0.2
    enabled: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def none(cls) -> AugmentConfig:
        return cls(enabled=False)


def affine_matrix(src_hw: tuple[int, int], out: int, *, hflip: bool = False, vflip: bool = False,
                  angle: float = 0.0, zoom: float = 1.0,
                  crop: tuple[float, float, float, float] = (0, 0, 0, 0)) -> np.ndarray:
    """The 2x3 map from output pixel (x, y) to source pixel, for ``WARP_INVERSE_MAP``.

    ``crop`` = fractions cut from (left, top, right, bottom); the kept rectangle is
    stretched onto the ``out`` x ``out`` square (as inference stretches a frame), then
    zoomed by ``zoom`` and rotated by ``angle`` degrees about the centre, then flipped.
    """
    h, w = src_hw
    left, top, right, bottom = crop
    x0, x1 = left * w, w * (1 - right)
    y0, y1 = top * h, h * (1 - bottom)
    # Output pixel centres -> unit square [-1, 1]: u = (p + 0.5) / (out / 2) - 1.
    to_unit = np.array([[2 / out, 0, 1 / out - 1], [0, 2 / out, 1 / out - 1], [0, 0, 1]])
    flip = np.diag([-1.0 if hflip else 1.0, -1.0 if vflip else 1.0, 1.0])
    a = math.radians(angle)
    rot = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    unzoom = np.diag([1 / zoom, 1 / zoom, 1.0])
    # Unit square -> the kept source rectangle (pixel centres again).
    to_src = np.array([[(x1 - x0) / 2, 0, (x0 + x1) / 2 - 0.5],
                       [0, (y1 - y0) / 2, (y0 + y1) / 2 - 0.5], [0, 0, 1]])
    matrix: np.ndarray = (to_src @ unzoom @ rot @ flip @ to_unit)[:2]
    return matrix


def colour_jitter(image: np.ndarray, rng: np.random.Generator, brightness: float,
                  contrast: float, saturation: float) -> np.ndarray:
    """Random brightness, contrast and saturation on an RGB uint8 image."""
    img = image.astype(np.float32)
    if saturation:
        gray = img @ np.array([0.299, 0.587, 0.114], np.float32)
        s = 1 + rng.uniform(-saturation, saturation)
        img = gray[..., None] + s * (img - gray[..., None])
    if contrast:
        c = 1 + rng.uniform(-contrast, contrast)
        img = (img - img.mean()) * c + img.mean()
    if brightness:
        img = img * (1 + rng.uniform(-brightness, brightness))
    return np.clip(img, 0, 255).astype(np.uint8)


def augment_pair(image: np.ndarray, mask: np.ndarray, out: int, rng: np.random.Generator,
                 cfg: AugmentConfig = AugmentConfig()) -> tuple[np.ndarray, np.ndarray]:
    """Augment an RGB uint8 image and its (H, W) mask together; both come back ``out`` x ``out``.

    With ``cfg.enabled`` False this is the plain square resize that inference uses (the same
    ``cv2.resize(..., INTER_LINEAR)``, pixel for pixel). Sources are full-size frames: the one
    bilinear warp samples them as the inference resize does, so training sees the app's pixels.
    """
    h, w = mask.shape[:2]
    if image.shape[:2] != (h, w):
        raise ValueError(f"image {image.shape[:2]} and mask {(h, w)} differ in size")
    if not cfg.enabled:
        # Exactly the inference resize (processing.prepare_input): same pixels, not just close.
        img = image if (h, w) == (out, out) else cv2.resize(image, (out, out), interpolation=cv2.INTER_LINEAR)
        msk = cv2.resize(mask.astype(np.uint8), (out, out), interpolation=cv2.INTER_NEAREST)
        return img, msk
    m = affine_matrix(
        (h, w), out, hflip=rng.random() < cfg.hflip, vflip=rng.random() < cfg.vflip,
        angle=rng.uniform(-cfg.rotate, cfg.rotate), zoom=rng.uniform(*cfg.scale),
        crop=tuple(rng.uniform(0, cfg.border_crop, 4)))
    flags = cv2.WARP_INVERSE_MAP
    img = cv2.warpAffine(image, m, (out, out), flags=cv2.INTER_LINEAR | flags,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    msk = cv2.warpAffine(mask.astype(np.uint8), m, (out, out), flags=cv2.INTER_NEAREST | flags,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    img = colour_jitter(img, rng, cfg.brightness, cfg.contrast, cfg.saturation)
    return img, msk


def scaled_size(size: int, rate: float) -> int:
    """PraNet's multi-scale size: ``size * rate`` rounded to a multiple of 32."""
    return max(32, int(round(size * rate / 32) * 32))


def multiscale(images: torch.Tensor, masks: torch.Tensor, rate: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Resize a batch to PraNet's rate (bilinear, align_corners=True, as the reference does)."""
    if rate == 1:
        return images, masks
    size = scaled_size(images.shape[-1], rate)
    images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=True)
    masks = F.interpolate(masks, size=(size, size), mode="bilinear", align_corners=True)
    return images, masks
