"""One protocol for everything the app can open: a video, an image, a folder of frames, or a
Kvasir-SEG dataset (``images/`` + ``masks/``).

>>> with open_source("clip.mp4") as src:          # doctest: +SKIP
...     for i in range(len(src)):
...         rgb, gt = src.frame(i), src.mask(i)   # (H, W, 3) uint8 RGB, (H, W) bool or None

A source that cannot be opened raises :class:`SourceError`; one bad item raises
:class:`ItemError` from ``frame(i)`` / ``mask(i)`` (the caller names it and goes on).
Anything odd found while opening (an image without a mask, a mask without an image, two
files with one stem, a broken link, a video shorter than its header says) is a one-line string
naming the file in ``source.problems``; the CLI prints each one and exits 1.
"""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from polypviewer.io.images import (
    IMAGE_EXTENSIONS,
    ItemError,
    SourceError,
    decode_file,
    first_by_stem,
    is_image_file,
    natural_key,
    read_image,
    read_mask,
)
from polypviewer.io.video import VIDEO_EXTENSIONS, ProgressFn, VideoReader, load_index

__all__ = [
    "FrameSource", "ImageListSource", "ItemError", "SourceError", "VideoSource",
    "open_source", "IMAGE_EXTENSIONS", "VIDEO_EXTENSIONS",
]


class FrameSource:
    """Base of all sources: ``len``, ``frame(i)``, ``mask(i)``, ``name(i)``, ``fps``."""

    kind: str = ""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fps: float | None = None
        self.problems: list[str] = []

    def __len__(self) -> int:
        raise NotImplementedError

    def frame(self, i: int) -> np.ndarray:
        """Frame ``i`` as ``(H, W, 3) uint8`` RGB; :class:`ItemError` when it cannot be read."""
        raise NotImplementedError

    def mask(self, i: int) -> np.ndarray | None:
        """Ground truth of frame ``i`` as ``(H, W) bool``, or None when there is none."""
        raise NotImplementedError

    def name(self, i: int) -> str:
        """A stable name for frame ``i``: the file stem, or ``<video-stem>_<i:06d>``."""
        raise NotImplementedError

    @property
    def has_masks(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def _check(self, i: int) -> int:
        n = len(self)
        if not isinstance(i, (int, np.integer)) or not 0 <= int(i) < n:
            raise ItemError(f"frame {i} out of range (source has {n} frames)", self.path)
        return int(i)

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.kind} {str(self.path)!r} n={len(self)}>"


def _mask_checked(mask_path: Path, shape: tuple[int, int]) -> np.ndarray:
    mask = read_mask(mask_path)
    if mask.shape != shape:
        raise ItemError(
            f"mask size {mask.shape[1]}x{mask.shape[0]} differs from image size {shape[1]}x{shape[0]}",
            mask_path)
    return mask


class ImageListSource(FrameSource):
    """Images (and optional masks) listed once when opened; each read decodes one file."""

    def __init__(self, path: Path, kind: str, images: list[Path], masks: list[Path | None]) -> None:
        super().__init__(path)
        self.kind = kind
        self.images = images
        self.masks = masks
        self._shapes: dict[int, tuple[int, int]] = {}  # ints only: bounded by the listing

    def __len__(self) -> int:
        return len(self.images)

    def frame(self, i: int) -> np.ndarray:
        i = self._check(i)
        img = read_image(self.images[i])
        self._shapes[i] = img.shape[:2]
        return img

    def mask(self, i: int) -> np.ndarray | None:
        i = self._check(i)
        mpath = self.masks[i]
        if mpath is None:
            return None
        shape = self._shapes.get(i)
        if shape is None:
            shape = decode_file(self.images[i]).shape[:2]
            self._shapes[i] = shape
        return _mask_checked(mpath, shape)

    def name(self, i: int) -> str:
        return self.images[self._check(i)].stem

    @property
    def has_masks(self) -> bool:
        return any(m is not None for m in self.masks)


def _stat_problem(path: Path) -> SourceError | None:
    """Why ``path`` cannot be reached (a link loop, a broken link, nothing there), or None."""
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return SourceError("symbolic link loop", path)
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            if path.is_symlink():
                try:
                    target = os.readlink(path)
                except OSError:
                    target = "?"
                return SourceError(f"broken symbolic link (to {target})", path)
            return SourceError("no such file or folder", path)
        raise
    return None


def _list_images(folder: Path, problems: list[str] | None = None) -> list[Path]:
    found = []
    for p in folder.iterdir():
        if not is_image_file(p):
            continue
        if p.is_file():
            found.append(p)
        elif problems is not None and p.is_symlink():
            why = _stat_problem(p)  # an image name that leads nowhere: say so, do not drop it silently
            if why is not None:
                problems.append(f"{why}; skipped")
    return sorted(found, key=lambda p: natural_key(p.name))


def _open_kvasir(root: Path) -> ImageListSource:
    img_dir, mask_dir = root / "images", root / "masks"
    problems: list[str] = []
    images = list(first_by_stem(_list_images(img_dir, problems), problems).values())
    if not images:
        raise SourceError("no images in images/ (expected .jpg/.png/.tif/.bmp files)", root)
    masks_by_stem = first_by_stem(_list_images(mask_dir, problems), problems) if mask_dir.is_dir() else {}
    if not mask_dir.is_dir():
        problems.append(f"{mask_dir}: no masks/ folder; opened without ground truth")
    masks: list[Path | None] = []
    for p in images:
        m = masks_by_stem.pop(p.stem, None)
        if m is None and mask_dir.is_dir():
            problems.append(f"{p}: no mask with this name in masks/")
        masks.append(m)
    for _stem, m in sorted(masks_by_stem.items(), key=lambda kv: natural_key(kv[0])):
        problems.append(f"{m}: mask without an image in images/")
    src = ImageListSource(root, "kvasir", images, masks)
    src.problems = problems
    return src


def _open_folder(folder: Path) -> ImageListSource:
    problems: list[str] = []
    images = list(first_by_stem(_list_images(folder, problems), problems).values())
    if not images:
        videos = [p.name for p in folder.iterdir() if p.suffix.lower() in VIDEO_EXTENSIONS]
        hint = f"; it holds video(s), open one: {', '.join(sorted(videos)[:3])}" if videos else ""
        raise SourceError("no images found (expected .jpg/.png/.tif/.bmp files, or images/ + masks/ "
                          f"folders){hint}", folder)
    src = ImageListSource(folder, "folder", images, [None] * len(images))
    src.problems = problems
    return src


def _open_image(path: Path) -> ImageListSource:
    mask: Path | None = None
    # An image inside a Kvasir layout brings its mask along.
    if path.parent.name.lower() == "images" and (path.parent.parent / "masks").is_dir():
        for ext in IMAGE_EXTENSIONS:
            for cand in (path.parent.parent / "masks" / (path.stem + ext),
                         path.parent.parent / "masks" / (path.stem + ext.upper())):
                if cand.is_file():
                    mask = cand
                    break
            if mask is not None:
                break
    return ImageListSource(path, "image", [path], [mask])


class VideoSource(FrameSource):
    """A video file with frame-exact random access (see :mod:`polypviewer.io.video`).

    Ground truth: if a folder ``<video-stem>_masks/`` (or ``<video-stem>_masks/masks/``, what
    a Kvasir export to ``<video-stem>_masks/`` writes, or ``masks/``) beside the video holds
    ``<video-stem>_<i:06d>.png`` (any image extension), ``mask(i)`` returns it, else None.
    """

    kind = "video"

    def __init__(self, path: Path, *, cache_frames: int = 8, max_forward: int = 32,
                 on_progress: ProgressFn | None = None) -> None:
        super().__init__(path)
        self.index = load_index(path, on_progress)
        self.reader = VideoReader(path, self.index, cache_frames=cache_frames, max_forward=max_forward)
        self.fps = self.index.fps
        declared, count = self.index.declared_count, self.index.count
        if declared and declared > count:
            self.problems.append(f"{path}: header says {declared} frames, only {count} could be decoded")
        elif declared and declared < count:
            self.problems.append(f"{path}: header says {declared} frames, {count} could be decoded; "
                                 f"using all {count}")
        self._mask_files = self._find_masks()

    def _find_masks(self) -> dict[int, Path]:
        stem = self.path.stem
        pattern = re.compile(re.escape(stem) + r"_(\d{6})$")
        here = self.path.parent
        # <stem>_masks/masks/ is what exporting this video's masks to <stem>_masks/ writes.
        for folder in (here / f"{stem}_masks", here / f"{stem}_masks" / "masks", here / "masks"):
            if not folder.is_dir():
                continue
            found: dict[int, Path] = {}
            for p in _list_images(folder):
                m = pattern.match(p.stem)
                if m and int(m.group(1)) < self.index.count:
                    found.setdefault(int(m.group(1)), p)
            if found:
                return found
        return {}

    def __len__(self) -> int:
        return self.index.count

    def frame(self, i: int) -> np.ndarray:
        return self.reader.read(self._check(i))

    def mask(self, i: int) -> np.ndarray | None:
        mpath = self._mask_files.get(self._check(i))
        if mpath is None:
            return None
        return _mask_checked(mpath, (self.index.height, self.index.width))

    def name(self, i: int) -> str:
        return f"{self.path.stem}_{self._check(i):06d}"

    def timestamp_ms(self, i: int) -> float:
        """Presentation time of frame ``i`` in milliseconds (from the index, no decoding)."""
        return float(self.index.pts_ms[self._check(i)])

    @property
    def has_masks(self) -> bool:
        return bool(self._mask_files)

    def close(self) -> None:
        self.reader.close()


def open_source(path: str | Path, **video_options: Any) -> FrameSource:
    """Open a video file, an image, a Kvasir-SEG folder (``images/`` + ``masks/``, or its
    ``images/`` folder) or a plain folder of images (natural sort: frame2 before frame10).

    ``video_options`` (``cache_frames``, ``max_forward``, ``on_progress(done, declared)``
    while a new video is indexed) go to :class:`VideoSource`; other sources ignore them.
    Raises :class:`SourceError` (one line naming the path) when nothing can be opened.
    """
    path = Path(path).expanduser()
    try:
        return _open(path, video_options)
    except PermissionError as exc:
        raise SourceError("permission denied", exc.filename or path) from None
    except OSError as exc:
        raise SourceError(f"cannot read ({exc.strerror or exc})", exc.filename or path) from None


def _open(path: Path, video_options: dict[str, Any]) -> FrameSource:
    why = _stat_problem(path)
    if why is not None:
        raise why
    if path.is_dir():
        if (path / "images").is_dir():
            return _open_kvasir(path)
        if path.name.lower() == "images" and (path.parent / "masks").is_dir():
            return _open_kvasir(path.parent)
        return _open_folder(path)
    suffix = path.suffix.lower()
    if suffix in VIDEO_EXTENSIONS:
        return VideoSource(path, **video_options)
    if suffix in IMAGE_EXTENSIONS:
        return _open_image(path)
    raise SourceError(
        f"unsupported file type '{path.suffix or path.name}' (expected a video "
        f"{'/'.join(e[1:] for e in VIDEO_EXTENSIONS[:4])} or an image "
        f"{'/'.join(e[1:] for e in IMAGE_EXTENSIONS)})", path)
