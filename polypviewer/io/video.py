"""Frame-exact random access to video files through OpenCV.

``cv2.CAP_PROP_POS_FRAMES`` derives the frame number from timestamps and is known to land
on a neighbouring frame for some streams (B-frames, odd time bases, variable frame rate).
So a video is first *indexed*: one sequential ``grab()`` pass records the presentation
timestamp (``CAP_PROP_POS_MSEC``) of every decoded frame, and frame ``i`` is by definition
the ``i``-th frame that pass decoded. A random read then asks OpenCV to seek, grabs one
frame, looks its timestamp up in the index to learn where it really landed, and decodes
forward from there (or seeks earlier if it overshot). If timestamps cannot tell frames
apart, reads fall back to decoding forward from the start, which is slow but exact.

Sequential reads (``i``, ``i + 1``, ...) never seek; short forward jumps grab forward.
Decoded frames live in a small fixed-size LRU, so memory does not grow with the video.
The index is cached (keyed by path, size and mtime) under the user's cache folder, never
beside the video.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import cv2
import numpy as np

from polypviewer.core.fileio import OutputError, atomic_write
from polypviewer.core.paths import cache_dir
from polypviewer.io.images import ItemError, SourceError

__all__ = ["VIDEO_EXTENSIONS", "VideoIndex", "VideoReader", "build_index", "decode_sequential", "load_index",
           "quiet_ffmpeg"]

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".m4v", ".mpg", ".mpeg", ".wmv", ".webm")

_INDEX_VERSION = 1
_MAX_SEEK_FAILURES = 3


@dataclass(frozen=True)
class VideoIndex:
    """What one sequential pass learned about a video."""

    count: int                # frames actually decodable
    declared_count: int       # what the container header claims (may be wrong)
    fps: float | None
    width: int
    height: int
    pts_ms: np.ndarray        # float64 (count,): timestamp of each decoded frame

    @cached_property
    def seekable(self) -> bool:
        """True when timestamps identify frames (strictly increasing), so a seek's landing
        can be verified; otherwise reads decode forward from the start."""
        return self.count > 1 and bool(np.all(np.diff(self.pts_ms) > 0))

    def lookup(self, pts: float) -> int | None:
        """Index of the frame with timestamp ``pts``, or None when no frame has it."""
        if self.count == 0:
            return None
        k = int(np.searchsorted(self.pts_ms, pts))
        best = None
        for j in (k - 1, k):
            if 0 <= j < self.count and (best is None or abs(self.pts_ms[j] - pts) < abs(self.pts_ms[best] - pts)):
                best = j
        return best if best is not None and abs(self.pts_ms[best] - pts) <= self._tolerance else None

    @cached_property
    def _tolerance(self) -> float:
        # A quarter of the smallest frame interval: never matches a neighbouring frame.
        gaps = np.diff(self.pts_ms)
        return 0.25 * float(gaps.min()) if gaps.size and gaps.min() > 0 else 1e-3


def _rgb(frame: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB if frame.ndim == 3 else cv2.COLOR_GRAY2RGB)


def quiet_ffmpeg() -> None:
    """Keep FFmpeg's own multi-line complaints ("moov atom not found") off stderr, where ours
    are one line naming the file, unless the user asked for a level
    (``OPENCV_FFMPEG_LOGLEVEL=32`` brings FFmpeg's messages back). OpenCV reads the level when
    it first uses FFmpeg, so this runs before every capture is opened (not at import)."""
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")


def _open(path: Path) -> cv2.VideoCapture:
    quiet_ffmpeg()
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        cap.release()
        raise SourceError("cannot open video (unreadable, truncated or unsupported codec)", path)
    return cap


def decode_sequential(path: str | Path) -> list[np.ndarray]:
    """Every frame of a video as RGB, read in order with no seeking: the definition of
    "frame ``i``" that :class:`VideoReader`'s random access is checked against (tests,
    ``benchmarks/bench_sources.py``). Holds the whole clip in memory: for short clips only."""
    cap = _open(Path(path))
    frames = []
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            frames.append(_rgb(frame))
    finally:
        cap.release()
    return frames


def _cache_file(path: Path) -> Path:
    st = path.stat()
    key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|v{_INDEX_VERSION}"
    return cache_dir() / "video-index" / (hashlib.sha256(key.encode("utf-8")).hexdigest()[:32] + ".json")


ProgressFn = Callable[[int, int], None]  # (frames indexed so far, frames the header declares)


def build_index(path: str | Path, on_progress: ProgressFn | None = None) -> VideoIndex:
    """Decode ``path`` once, recording every frame's timestamp (no colour conversion).

    ``on_progress(done, declared)`` is called every 100 frames (long videos take a while:
    the pass decodes every frame once)."""
    path = Path(path)
    cap = _open(path)
    try:
        declared = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        width = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH) or 0)
        height = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0)
        pts: list[float] = []
        while cap.grab():
            pts.append(float(cap.get(cv2.CAP_PROP_POS_MSEC)))
            if on_progress is not None and len(pts) % 100 == 0:
                on_progress(len(pts), declared)
    finally:
        cap.release()
    if not pts:
        raise SourceError("video has no decodable frames (empty or truncated)", path)
    return VideoIndex(len(pts), declared, fps if fps > 0 else None, width, height, np.asarray(pts, np.float64))


def load_index(path: str | Path, on_progress: ProgressFn | None = None) -> VideoIndex:
    """The cached index of ``path``, building and caching it when missing or stale."""
    path = Path(path)
    try:
        cache = _cache_file(path)
    except OSError as exc:
        raise SourceError(f"cannot read video ({exc.strerror or exc})", path) from None
    try:
        data = json.loads(cache.read_text(encoding="utf-8"))
        if data.get("version") == _INDEX_VERSION:
            return VideoIndex(int(data["count"]), int(data["declared_count"]), data["fps"],
                              int(data["width"]), int(data["height"]), np.asarray(data["pts_ms"], np.float64))
    except (OSError, ValueError, KeyError, TypeError):
        pass  # missing or damaged cache: rebuild
    index = build_index(path, on_progress)
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(cache, json.dumps({
            "version": _INDEX_VERSION, "video": str(path.resolve()), "count": index.count,
            "declared_count": index.declared_count, "fps": index.fps, "width": index.width,
            "height": index.height, "pts_ms": index.pts_ms.tolist(),
        }))
    except (OSError, OutputError):
        pass  # a read-only cache (or a link in the way) only costs a re-index next time
    return index


class VideoReader:
    """Thread-safe, frame-exact reader over one ``cv2.VideoCapture``.

    ``cache_frames`` decoded frames are kept (LRU); jumps forward of at most ``max_forward``
    frames decode forward instead of seeking. ``stats`` counts seeks, reopens and decoded
    frames (for tests and benchmarks).
    """

    def __init__(self, path: str | Path, index: VideoIndex | None = None, *,
                 cache_frames: int = 8, max_forward: int = 32) -> None:
        self.path = Path(path)
        self.index = index if index is not None else load_index(self.path)
        self._cache_frames = max(0, int(cache_frames))
        self._max_forward = max(0, int(max_forward))
        self._keep_behind = min(4, self._cache_frames // 2)
        self._lru: OrderedDict[int, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self._cap: cv2.VideoCapture | None = _open(self.path)
        self._next: int | None = 0  # index of the frame the next grab() returns; None when unknown
        self._closed = False
        self._seek_failures = 0  # after a few, stop trusting OpenCV's seek for this file
        self.stats = {"seeks": 0, "reopens": 0, "grabs": 0, "cache_hits": 0}

    def __len__(self) -> int:
        return self.index.count

    def read(self, i: int) -> np.ndarray:
        """Frame ``i`` as ``(H, W, 3) uint8`` RGB (a fresh array the caller may modify)."""
        with self._lock:
            if self._closed:
                raise SourceError("video is closed", self.path)
            hit = self._lru.get(i)
            fresh: np.ndarray  # (numpy's stubs type ndarray.copy() as Any)
            if hit is not None:
                self._lru.move_to_end(i)
                self.stats["cache_hits"] += 1
                fresh = hit.copy()
                return fresh
            rgb = _rgb(self._decode(i))
            if self._cache_frames:
                self._store(i, rgb)
                fresh = rgb.copy()
                return fresh
            return rgb

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._lru.clear()
            if self._cap is not None:
                self._cap.release()
                self._cap = None

    # -- decoding (lock held) -------------------------------------------------------------

    def _store(self, i: int, rgb: np.ndarray) -> None:
        self._lru[i] = rgb
        self._lru.move_to_end(i)
        while len(self._lru) > self._cache_frames:
            self._lru.popitem(last=False)

    def _grab(self) -> bool:
        assert self._cap is not None
        ok = self._cap.grab()
        self.stats["grabs"] += 1
        return bool(ok)

    def _landed(self) -> int | None:
        """Where the last grab() really is, from its timestamp (None: cannot tell)."""
        assert self._cap is not None
        return self.index.lookup(float(self._cap.get(cv2.CAP_PROP_POS_MSEC)))

    def _forward_to(self, i: int) -> bool:
        """Grab from ``self._next`` up to and including ``i``; verify the landing.

        The few frames just before ``i`` are kept in the LRU on the way (each verified),
        so stepping backward after a jump does not decode from a keyframe again."""
        assert self._cap is not None
        keep_from = i - self._keep_behind
        while self._next is not None and self._next <= i:
            if not self._grab():
                self._next = None
                return False
            k = self._next
            self._next += 1
            if keep_from <= k < i and k not in self._lru and (
                    not self.index.seekable or self._landed() == k):
                frame = self._cap.retrieve()[1]
                if frame is not None:
                    self._store(k, _rgb(frame))
        if self.index.seekable and self._landed() != i:
            self._next = None
            return False
        return True

    def _reopen(self) -> None:
        if self._cap is not None:
            self._cap.release()
        self._cap = _open(self.path)
        self._next = 0
        self.stats["reopens"] += 1

    def _seek(self, i: int, start: int) -> bool:
        """Position so that the last grab() returned frame ``i``: ask OpenCV to seek to
        frame ``start <= i``, check where it really landed, decode forward from there,
        and retry further back if it overshot. False when that cannot be made to work."""
        assert self._cap is not None
        back = 1
        for _ in range(6):
            self.stats["seeks"] += 1
            self._cap.set(cv2.CAP_PROP_POS_FRAMES, start)
            j = self._landed() if self._grab() else None
            if j is not None and j <= i:
                self._next = j + 1
                if j < i and j >= i - self._keep_behind and j not in self._lru:
                    frame = self._cap.retrieve()[1]
                    if frame is not None:
                        self._store(j, _rgb(frame))
                return j == i or self._forward_to(i)
            if start == 0:
                break
            # Overshot, ran off the end or landed on an unknown timestamp: start earlier,
            # further back each time.
            start, back = max(0, start - back - (j - i if j is not None else 0)), back * 2
        self._next = None
        return False

    def _decode(self, i: int) -> np.ndarray:
        if not 0 <= i < self.index.count:
            raise ItemError(f"frame {i} out of range (video has {self.index.count} frames)", self.path)
        if self._cap is None:
            self._reopen()
        nxt = self._next
        ok = False
        if nxt is not None and nxt <= i <= nxt + self._max_forward:
            ok = self._forward_to(i)
        if not ok and self.index.seekable and self._seek_failures < _MAX_SEEK_FAILURES:
            # Land a little early so the frames just before i get cached on the way: an
            # annotator who jumps somewhere often steps back from there next.
            ok = self._seek(i, max(0, i - self._keep_behind))
            self._seek_failures += not ok
        if not ok:
            # Exact whatever the container does: decode forward from the very start.
            self._reopen()
            ok = self._forward_to(i)
        assert self._cap is not None  # opened by _reopen() above when it was not
        frame = self._cap.retrieve()[1] if ok else None
        if frame is None:
            self._next = None
            raise ItemError(f"cannot decode frame {i}", self.path)
        return frame
