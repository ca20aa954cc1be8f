"""Pre- and post-processing shared by every backend (see ``inference`` for the choices).

- ``prepare_input``: ``cv2.resize(frame, (S, S), INTER_LINEAR)``, the model's colour order,
  /255, per-channel mean/std -> (3, S, S) float32.
- ``probabilities``: logits resized bilinearly (``INTER_LINEAR`` == ``align_corners=False``)
  to the frame's size, then sigmoid.
- TTA helpers: identity + horizontal + vertical flip; logits flipped back and averaged.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from polypviewer.core.masks import THRESHOLD as DEFAULT_THRESHOLD  # the one rule: p >= 0.5


def prepare_input(frame: np.ndarray, preprocessing: Any) -> np.ndarray:
    """RGB uint8 (H, W, 3) -> the network's input (3, S, S) float32 for ``preprocessing``
    (a ``nets.registry.Preprocessing``)."""
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"expected an RGB frame (H, W, 3), got shape {frame.shape}")
    s = int(preprocessing.input_size)
    img = frame if frame.shape[:2] == (s, s) else cv2.resize(frame, (s, s), interpolation=cv2.INTER_LINEAR)
    if preprocessing.color_order.upper() == "BGR":
        img = img[:, :, ::-1]
    mean = np.asarray(preprocessing.mean, dtype=np.float32)
    std = np.asarray(preprocessing.std, dtype=np.float32)
    # (x/255 - mean)/std as one multiply-add per pixel.
    scale = 1.0 / (255.0 * std)
    x = img.astype(np.float32) * scale - mean / std
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def probabilities(logits: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Logits (h, w) -> probabilities float32 at ``size`` = (H, W): bilinear resize, sigmoid."""
    h, w = size
    x = logits if logits.shape == (h, w) else cv2.resize(logits, (w, h), interpolation=cv2.INTER_LINEAR)
    x = np.array(x, dtype=np.float32, copy=True)
    with np.errstate(over="ignore"):  # exp overflow -> inf -> probability 0, as it should
        np.negative(x, out=x)
        np.exp(x, out=x)
        x += 1.0
        np.reciprocal(x, out=x)
    return x


def tta_inputs(x: np.ndarray) -> np.ndarray:
    """(N, 3, S, S) -> (3N, 3, S, S): identity, horizontal flip, vertical flip."""
    batch: np.ndarray = np.concatenate([x, x[..., ::-1], x[..., ::-1, :]]).copy()
    return batch


def tta_merge(logits: np.ndarray) -> np.ndarray:
    n = len(logits) // 3
    a, h, v = logits[:n], logits[n:2 * n, :, ::-1], logits[2 * n:, ::-1, :]
    merged: np.ndarray = ((a + h + v) / 3.0).astype(np.float32)
    return merged



__all__ = ["DEFAULT_THRESHOLD", "prepare_input", "probabilities", "tta_inputs", "tta_merge"]
