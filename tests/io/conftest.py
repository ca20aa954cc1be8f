"""Helpers for the io tests: small synthetic videos whose frames say their own number."""

from __future__ import annotations

import struct
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


# -- a real variable-frame-rate MP4 -------------------------------------------------------
# OpenCV's CAP_PROP_POS_FRAMES converts a frame number to a time with the average frame
# rate, so on a variable-frame-rate file it lands on the wrong frame. We make one by
# rewriting the sample timing table (stts) of an MP4 that OpenCV wrote: the first half of
# the frames keep their duration, the second half last `slow` times longer. The moov box
# sits after mdat in OpenCV's files, so growing it moves no sample data.

_CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"edts"}


def _boxes(data: bytes, off: int, end: int):
    while off < end:
        size, typ = struct.unpack(">I4s", data[off:off + 8])
        assert size >= 8, "64-bit box sizes are not expected in a small test file"
        yield typ, off, size
        off += size


def _rebuild(data: bytes, off: int, end: int, edit) -> bytes:
    out = b""
    for typ, o, size in _boxes(data, off, end):
        payload = _rebuild(data, o + 8, o + size, edit) if typ in _CONTAINERS else edit(typ, data[o + 8:o + size])
        out += struct.pack(">I4s", 8 + len(payload), typ) + payload
    return out


def make_vfr_mp4(src: Path, dst: Path, slow: int = 4) -> Path:
    data = src.read_bytes()
    boxes = {typ: (o, size) for typ, o, size in _boxes(data, 0, len(data))}
    assert boxes[b"moov"][0] > boxes[b"mdat"][0], "moov must follow mdat"
    state: dict = {}

    def edit(typ: bytes, p: bytes) -> bytes:
        if typ == b"mvhd":
            state["movie_scale"] = struct.unpack(">I", p[12:16])[0]
        if typ == b"stts":
            (count,) = struct.unpack(">I", p[4:8])
            assert count == 1, "expects a constant-frame-rate input"
            n, delta = struct.unpack(">II", p[8:16])
            first = n // 2
            state["media_duration"] = first * delta + (n - first) * delta * slow
            return p[:4] + struct.pack(">IIIII", 2, first, delta, n - first, delta * slow)
        return p

    moov_off, moov_size = boxes[b"moov"]
    _rebuild(data, moov_off, moov_off + moov_size, edit)  # first pass: learn the timing

    def fix_durations(typ: bytes, p: bytes) -> bytes:
        p = edit(typ, p)
        if typ == b"mdhd":
            state["media_scale"] = struct.unpack(">I", p[12:16])[0]
            return p[:16] + struct.pack(">I", state["media_duration"]) + p[20:]
        movie = state["media_duration"] * state["movie_scale"] // state["media_scale_guess"]
        if typ == b"mvhd":
            return p[:16] + struct.pack(">I", movie) + p[20:]
        if typ == b"tkhd":
            return p[:20] + struct.pack(">I", movie) + p[24:]
        if typ == b"elst":
            return p[:8] + struct.pack(">I", movie) + p[12:]
        return p

    # the media timescale sits in mdhd, which comes after mvhd/tkhd/elst: read it first
    mdia = data.index(b"mdhd") - 4
    state["media_scale_guess"] = struct.unpack(">I", data[mdia + 8 + 12:mdia + 8 + 16])[0]
    moov = _rebuild(data, moov_off, moov_off + moov_size, fix_durations)
    dst.write_bytes(data[:moov_off] + moov + data[moov_off + moov_size:])
    return dst


@pytest.fixture
def vfr_video(tmp_path: Path) -> Path:
    """60 numbered frames; frames 30..59 last 4x longer than frames 0..29 (real VFR MP4)."""
    src = write_video(tmp_path / "cfr.mp4", 60)
    return make_vfr_mp4(src, tmp_path / "vfr.mp4")
