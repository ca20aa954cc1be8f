"""Helpers shared by the core tests."""

from __future__ import annotations

import numpy as np


def two_masks() -> tuple[np.ndarray, np.ndarray]:
    """A 40x60 prediction and ground truth, 600 pixels each, overlapping in 200."""
    pred = np.zeros((40, 60), bool)
    gt = np.zeros((40, 60), bool)
    pred[5:25, 10:40] = True  # 20 x 30 = 600
    gt[15:35, 20:50] = True  # 20 x 30 = 600, overlap 10 x 20 = 200
    return pred, gt
