"""Helpers for the io tests: small synthetic videos whose frames say their own number."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

BITS = 8


def numbered_frame(i: int, h: int = 48, w: int = 64) -> np.ndarray:
    """An RGB frame whose vertical stripes spell ``i`` in binary (black/white survives lossy codecs)."""
    img = np.zeros((h, w, 3), np.uint8)
    sw = w // BITS
    for b in range(BITS):
        if (i >> b) & 1:
            img[:, b * sw:(b + 1) * sw] = 255
    return img


def frame_number(rgb: np.ndarray) -> int:
    h, w = rgb.shape[:2]
    sw = w // BITS
    grey = rgb.mean(axis=2)
    return sum(1 << b for b in range(BITS) if grey[:, b * sw + 2:(b + 1) * sw - 2].mean() > 127)


def write_video(path: Path, n: int, *, fourcc: str = "mp4v", fps: float = 10.0,
                h: int = 48, w: int = 64) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (w, h))
    assert writer.isOpened(), f"OpenCV cannot write {fourcc} here"
    for i in range(n):
        writer.write(cv2.cvtColor(numbered_frame(i, h, w), cv2.COLOR_RGB2BGR))
    writer.release()
    return path


@pytest.fixture
def numbered_video(tmp_path: Path) -> Path:
    """120 frames of MPEG-4 part 2 (several keyframes, so seeks really jump)."""
    return write_video(tmp_path / "numbered.mp4", 120)
