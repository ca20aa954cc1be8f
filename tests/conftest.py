"""Shared fixtures. Real data is read from ../shared/data (never copied into the repo)."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import cv2
import numpy as np
import pytest

from polypviewer.core.paths import shared_data_default

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = shared_data_default()  # $POLYPVIEWER_SHARED_DATA, else ../shared/data

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real data not found at {path} (expected ../shared/data beside the project; "
                    "set POLYPVIEWER_SHARED_DATA to point elsewhere)")
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return _need(SHARED_DATA)


@pytest.fixture(scope="session")
def endotect(shared_data: Path) -> Path:
    return _need(shared_data / "endotect")


@pytest.fixture(scope="session")
def endotect_only_weights() -> Path:
    """The first shipped lite_pranet (``models/lite_pranet.safetensors``, trained on 140 EndoTect
    images only): the model that never saw Kvasir-SEG or CVC-ClinicDB, for tests whose premise
    is a network meeting those frames for the first time (the default may have trained on them)."""
    from polypviewer.core.paths import models_dir

    return _need(models_dir() / "lite_pranet.safetensors")


@pytest.fixture(scope="session")
def cvc(shared_data: Path) -> Path:
    return _need(shared_data / "cvc-clinicdb")


@pytest.fixture(scope="session")
def negatives(shared_data: Path) -> Path:
    return _need(shared_data / "negatives")


@pytest.fixture(scope="session")
def h264_clip(shared_data: Path) -> Path:
    return _need(shared_data / "video" / "colonoscopy_clip_sidebyside_h264.mp4")


@pytest.fixture(scope="session")
def clip384(shared_data: Path) -> Path:
    return _need(shared_data / "video" / "colonoscopy_clip_384.mp4")


@pytest.fixture(autouse=True)
def _isolated_user_dirs(tmp_path_factory, monkeypatch):
    """Tests never touch the real user's cache or settings."""
    base = tmp_path_factory.getbasetemp()
    monkeypatch.setenv("POLYPVIEWER_CACHE", str(base / "user-cache"))
    monkeypatch.setenv("POLYPVIEWER_CONFIG", str(base / "user-config"))


# --- a Kvasir-layout set that every clone has ------------------------------------------------
# Tests that need "some frames with ground truth" (not real data's statistics) use frames of
# the shipped synthetic clip (resources/demo, exact masks), so they run without ../shared.
DEMO_EVERY = 5  # frames 0, 5, ..., 55 of the 60-frame clip: 12 frames, the polyp growing
DEMO_SPLIT = {"train": 8, "val": 4}  # split.json: the first 8 stems train, the last 4 val


@pytest.fixture(scope="session")
def demo_set(tmp_path_factory) -> Path:
    """A read-only Kvasir-layout folder made from the shipped demo clip: ``images/*.png``
    (lossless, 384x384 RGB), ``masks/*.png`` (0/255, the clip's exact ground truth) and a
    ``split.json`` (``train``, ``val``) like ../shared/data's. Copy it (``kvasir_copy``)
    before changing anything in it."""
    import json

    import cv2

    from polypviewer.io.demo_asset import shipped_demo
    from polypviewer.io.sources import open_source

    root = tmp_path_factory.mktemp("demo-kvasir")
    (root / "images").mkdir()
    (root / "masks").mkdir()
    stems = []
    with open_source(shipped_demo()) as src:
        for i in range(0, len(src), DEMO_EVERY):
            stem = src.name(i)
            mask = src.mask(i)
            assert mask is not None and mask.any(), f"demo frame {i} has no polyp"
            cv2.imwrite(str(root / "images" / f"{stem}.png"), cv2.cvtColor(src.frame(i), cv2.COLOR_RGB2BGR))
            cv2.imwrite(str(root / "masks" / f"{stem}.png"), mask.astype(np.uint8) * 255)
            stems.append(stem)
    n_train = DEMO_SPLIT["train"]
    (root / "split.json").write_text(json.dumps({"train": stems[:n_train], "val": stems[n_train:]}))
    return root


@pytest.fixture
def kvasir_copy(demo_set, tmp_path):
    """Factory: ``kvasir_copy(n)`` -> ``(root, stems)``, a writable Kvasir-layout folder under
    tmp_path holding the first ``n`` frames of ``demo_set`` (``link=True``: symbolic links)."""
    import shutil

    def make(n: int, *, link: bool = False, name: str | None = None) -> tuple[Path, list[str]]:
        stems = sorted(p.stem for p in (demo_set / "images").iterdir())[:n]
        assert len(stems) == n, f"demo_set has only {len(stems)} frames"
        root = tmp_path / (name or f"kvasir{n}")
        for sub in ("images", "masks"):
            (root / sub).mkdir(parents=True)
            for s in stems:
                src = demo_set / sub / f"{s}.png"
                if link:
                    (root / sub / src.name).symlink_to(src)
                else:
                    shutil.copy(src, root / sub)
        return root, stems

    return make


# --- small synthetic videos whose frames say their own number (video, sources, extract) -----
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


def truncated_avi(path, frames: int = 26, keep: int = 14):
    """An MJPG AVI whose header says ``frames`` frames, cut after its first ``keep`` frame chunks."""
    data = write_video(path, frames, fourcc="MJPG").read_bytes()
    off, chunks = data.index(b"movi") + 4, []
    while len(chunks) <= keep:
        cid, size = struct.unpack("<4sI", data[off:off + 8])
        if cid == b"00dc":
            chunks.append(off)
        off += 8 + size + (size & 1)
    path.write_bytes(data[:chunks[keep]])
    return path


@pytest.fixture(scope="module")
def unet64(tmp_path_factory):
    """An untrained U-Net checkpoint at 64 px: every build and engine measurement of it takes
    seconds (the engine choice, the background measurement, start-up cost)."""
    import torch

    from polypviewer.nets.registry import IMAGENET_MEAN, IMAGENET_STD, Preprocessing, build_model
    from polypviewer.nets.weights import save_checkpoint

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "unet64.safetensors"
    save_checkpoint(path, build_model("unet"), model_name="unet",
                    preprocessing=Preprocessing(64, "RGB", IMAGENET_MEAN, IMAGENET_STD))
    return path


@pytest.fixture
def base_ckpt(tmp_path):
    """An untrained lite_pranet checkpoint at 64 px: a base to fine-tune from, quickly (the UI
    dialogs, ``finetune`` on a project and on folders)."""
    from dataclasses import replace

    import torch

    from polypviewer.nets import build_model, get_spec
    from polypviewer.nets.weights import save_checkpoint

    torch.manual_seed(0)
    path = tmp_path / "base.safetensors"
    prep = replace(get_spec("lite_pranet").preprocessing, input_size=64)
    save_checkpoint(path, build_model("lite_pranet"), model_name="lite_pranet", preprocessing=prep)
    return path


@pytest.fixture
def full_disk_for(monkeypatch):
    """Factory: ``full_disk_for(pred)`` makes ``os.fsync`` fail with ENOSPC, as on a full disk,
    for every open file whose path ``pred(path)`` accepts (read from /proc/self/fd; skipped
    where there is none). ``monkeypatch.undo()`` ends it."""
    import errno

    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("needs /proc/self/fd to tell which file an fsync is for")
    real = os.fsync

    def install(pred) -> None:
        def fsync(fd):
            try:
                target = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                target = ""
            if target and pred(target):
                raise OSError(errno.ENOSPC, "No space left on device")
            return real(fd)

        monkeypatch.setattr(os, "fsync", fsync)  # the os module itself: any writer is caught

    return install

