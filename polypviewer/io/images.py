"""Reading and writing image and mask files.

Files are read with ``cv2.imdecode(np.fromfile(path))`` and written with ``cv2.imencode``
plus a plain file write, because ``cv2.imread``/``imwrite`` cannot open non-ASCII paths on
Windows. Every reader returns what the rest of the app expects whatever the file holds:
``read_image`` gives ``(H, W, 3) uint8`` RGB (16-bit scaled to 8-bit, grey expanded, alpha
dropped), ``read_mask`` gives ``(H, W) bool``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np

from polypviewer.core.errors import PolypviewerError
from polypviewer.core.fileio import atomic_write, remove_stale_temporaries
from polypviewer.core.masks import binarise

__all__ = [
    "IMAGE_EXTENSIONS",
    "ItemError",
    "SourceError",
    "by_stem",
    "decode_file",
    "first_by_stem",
    "is_image_file",
    "natural_key",
    "read_image",
    "read_mask",
    "to_rgb8",
    "write_atomic",
    "remove_stale_temporaries",
    "encode_image",
    "ensure_rgb8",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")


class SourceError(PolypviewerError):
    """A frame source (video, image, folder) cannot be opened; one line naming the path."""


class ItemError(SourceError):
    """One frame or mask of a source cannot be read; callers name it and skip it."""


def natural_key(name: str) -> tuple[int | str, ...]:
    """Sort key that orders ``frame2`` before ``frame10`` (case-insensitive)."""
    return tuple(int(p) if p.isdigit() else p.lower() for p in re.split(r"(\d+)", name))


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def by_stem(files: Iterable[Path]) -> dict[str, list[Path]]:
    """Files grouped by stem (the name without its extension), each group in the order given.

    The one pairing rule: an image and its mask (or prediction) belong together when their
    stems are equal, so a stem that more than one file claims is ambiguous. Callers decide what
    that means (``first_by_stem`` uses the first and names the others; ``eval`` scores neither).
    """
    out: dict[str, list[Path]] = {}
    for p in files:
        out.setdefault(p.stem, []).append(p)
    return out


def first_by_stem(files: Iterable[Path], problems: list[str]) -> dict[str, Path]:
    """One file per stem: the first of each :func:`by_stem` group; every other one is named in
    ``problems`` as skipped (one name, one frame)."""
    out: dict[str, Path] = {}
    for stem, group in by_stem(files).items():
        out[stem] = group[0]
        problems.extend(f"{p}: skipped: {group[0].name} has the same name ({stem}) and is used "
                        "instead (one name, one frame)" for p in group[1:])
    return out


def decode_file(path: str | Path, flags: int = cv2.IMREAD_UNCHANGED) -> np.ndarray:
    """Decode an image file as stored (any bit depth and channel count)."""
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except FileNotFoundError:
        raise ItemError("file not found", path) from None
    except OSError as exc:
        raise ItemError(f"cannot read file ({exc.strerror or exc})", path) from None
    if data.size == 0:
        raise ItemError("cannot decode image (zero bytes)", path)
    img = cv2.imdecode(data, flags)
    if img is None or img.size == 0:
        raise ItemError(
            f"cannot decode image (not a valid {Path(path).suffix.lstrip('.').upper() or 'image'} file)", path
        )
    return img


def _to_8bit(img: np.ndarray) -> np.ndarray:
    out: np.ndarray  # (numpy's stubs type this arithmetic as Any)
    if img.dtype == np.uint8:
        out = img
    elif img.dtype == np.uint16:
        # Full-range scaling (x/257) keeps 0 -> 0 and 65535 -> 255, so 16-bit masks and
        # 16-bit photos land where their 8-bit equivalents would.
        out = ((img.astype(np.uint32) + 128) // 257).astype(np.uint8)
    elif np.issubdtype(img.dtype, np.floating):
        hi = 1.0 if float(np.nanmax(img)) <= 1.0 else 255.0
        out = np.clip(np.nan_to_num(img) * (255.0 / hi), 0, 255).round().astype(np.uint8)
    else:
        out = np.clip(img, 0, 255).astype(np.uint8)
    return out


def to_rgb8(img: np.ndarray) -> np.ndarray:
    """OpenCV's decoded array (grey / BGR / BGRA, 8 or 16 bit) as ``(H, W, 3) uint8`` RGB."""
    img = _to_8bit(img)
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    if img.shape[2] == 1:
        return cv2.cvtColor(img[:, :, 0], cv2.COLOR_GRAY2RGB)
    if img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def ensure_rgb8(img: np.ndarray) -> np.ndarray:
    """An array already in RGB(A) / grey order (not OpenCV's BGR) as ``(H, W, 3) uint8`` RGB."""
    img = _to_8bit(np.asarray(img))
    if img.ndim == 2:
        return np.repeat(img[:, :, None], 3, axis=2)
    if img.ndim == 3 and img.shape[2] == 1:
        return np.repeat(img, 3, axis=2)
    if img.ndim == 3 and img.shape[2] in (3, 4):
        return np.ascontiguousarray(img[:, :, :3])
    raise ValueError(f"an image is HxW, HxWx3 or HxWx4: got shape {img.shape}")


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as ``(H, W, 3) uint8`` RGB; raises :class:`ItemError`."""
    return to_rgb8(decode_file(path))


def read_mask(path: str | Path) -> np.ndarray:
    """Read a mask file as ``(H, W) bool`` by the one threshold rule (``core.masks.to_mask``:
    8-bit ``v >= 128``, so JPEG ringing around a 0/255 mask is removed). A mask whose only
    values are 0 and 1 (a label image) is read as 0 -> False, 1 -> True rather than all
    background.
    """
    raw = decode_file(path)
    raw8 = _to_8bit(raw) if raw.dtype != np.uint8 else raw
    if raw.dtype == np.uint8 and raw.max() == 1:
        return binarise(raw8 > 0)
    return binarise(raw8)


def encode_image(img: np.ndarray, ext: str, *, jpeg_quality: int = 95) -> bytes:
    """Encode an array for a file of type ``ext`` (``.png`` / ``.jpg``); RGB input is expected
    for colour images and converted to OpenCV's BGR here."""
    arr = np.asarray(img)
    if arr.ndim == 3 and arr.shape[2] == 3:
        arr = cv2.cvtColor(arr, cv2.COLOR_RGB2BGR)
    params: list[int] = []
    if ext.lower() in (".jpg", ".jpeg"):
        params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)]
    ok, buf = cv2.imencode(ext, arr, params)
    if not ok:
        raise ValueError(f"OpenCV could not encode a {arr.shape} {arr.dtype} array as {ext}")
    return buf.tobytes()


def write_atomic(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (:func:`polypviewer.core.fileio.atomic_write`:
    exclusive temporary, fsync, rename; a link at ``path`` is refused; failures are one-line
    :class:`~polypviewer.core.fileio.OutputError` naming ``path``)."""
    atomic_write(path, data)
