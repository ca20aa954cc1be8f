"""Background work for the window: the byte-bounded cache, frame decoding off the GUI thread.

``FrameLoader`` (a QObject on its own QThread, with its own source instance) opens sources
and decodes the frames the user is looking at; requests collapse, so only the newest wanted
frames are decoded. ``FrameService`` is its GUI-side face (generation counter, frame cache).
Results reach the GUI thread only through queued signals, and the GUI thread never waits on
a worker except at shutdown. Look-ahead inference is in ``prediction.py``.
"""

from __future__ import annotations

import os
import sys
import threading
from collections import OrderedDict, deque
from collections.abc import Hashable
from typing import TYPE_CHECKING, Any, NamedTuple

import cv2
import numpy as np
from PySide6.QtCore import QObject, QThread, Signal, Slot

from polypviewer.core.errors import PolypviewerError, describe_exception

if TYPE_CHECKING:
    from polypviewer.io.sources import FrameSource


class LruCache:
    """Least-recently-used map bounded by the total ``nbytes`` of its values."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = int(max_bytes)
        self.nbytes = 0
        self._items: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()

    @staticmethod
    def _size(value: Any) -> int:
        if isinstance(value, np.ndarray):
            return value.nbytes
        if hasattr(value, "sizeInBytes"):  # QImage
            return int(value.sizeInBytes())
        if isinstance(value, (tuple, list)):
            return sum(v.nbytes for v in value if isinstance(v, np.ndarray))
        return 64

    def get(self, key: Hashable) -> Any:
        item = self._items.get(key)
        if item is None:
            return None
        self._items.move_to_end(key)
        return item[0]

    def __contains__(self, key: Hashable) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)

    def put(self, key: Hashable, value: Any) -> None:
        if key in self._items:
            self.nbytes -= self._items.pop(key)[1]
        size = self._size(value)
        self._items[key] = (value, size)
        self.nbytes += size
        while self.nbytes > self.max_bytes and len(self._items) > 1:
            _, (_, s) = self._items.popitem(last=False)
            self.nbytes -= s

    def clear(self) -> None:
        self._items.clear()
        self.nbytes = 0


class FrameData(NamedTuple):
    """A decoded frame as the window keeps it. ``display`` is the same pixels as BGRA
    (Qt's RGB32 layout), converted on the worker thread so the canvas wraps it without a
    copy or a format conversion on the GUI thread."""

    frame: np.ndarray  # (H, W, 3) uint8 RGB
    gt: np.ndarray | None  # (H, W) bool
    name: str
    display: np.ndarray  # (H, W, 4) uint8 BGRA


def frame_data(frame: np.ndarray, gt: np.ndarray | None, name: str) -> FrameData:
    return FrameData(frame, gt, name, cv2.cvtColor(frame, cv2.COLOR_RGB2BGRA))


BACKGROUND_NICE = 10  # how much lower than the GUI thread the workers run (Linux nice)


def lower_thread_priority(nice: int = BACKGROUND_NICE) -> bool:
    """Lower the calling thread's scheduling priority (Linux: per-thread nice, inherited by
    the threads it starts, e.g. the pipeline's decode/infer threads and torch's pool).

    On a machine with few cores, inference saturates them; the GUI thread must still get
    the CPU the moment it has an event to handle. QThread priorities are ignored under
    Linux's default scheduler, hence ``setpriority`` on the thread id."""
    if not hasattr(os, "setpriority") or not sys.platform.startswith("linux"):
        return False
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))
        return True
    except OSError:
        return False


class FrameLoader(QObject):
    """Opens a source and decodes wanted frames on its own thread."""

    opened = Signal(int, object)  # generation, info dict (n, fps, kind, has_masks, path, problems)
    open_failed = Signal(int, str)
    loaded = Signal(int, int, object)  # generation, index, FrameData
    failed = Signal(int, int, str)  # generation, index, message
    _wake = Signal()

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._want: deque[int] = deque()
        self._open: tuple[int, str] | None = None
        self._gen = 0
        self._source: FrameSource | None = None
        self._wake.connect(self._work)  # queued: the slot runs on the loader's thread

    # -- called from the GUI thread
    def open(self, generation: int, path: str) -> None:
        with self._lock:
            self._open = (generation, path)
            self._want.clear()
        self._wake.emit()

    def request(self, generation: int, indices: list[int]) -> None:
        """Decode ``indices`` (newest request wins: older pending ones are dropped)."""
        with self._lock:
            if generation != self._gen and self._open is None:
                return
            self._want = deque(indices)
        self._wake.emit()

    # -- on the loader thread
    @Slot()
    def lower_priority(self) -> None:
        lower_thread_priority()

    @Slot()
    def _work(self) -> None:
        while True:
            with self._lock:
                to_open, self._open = self._open, None
                if to_open is None:
                    if not self._want:
                        return
                    index, gen, src = self._want.popleft(), self._gen, self._source
            if to_open is not None:
                self._do_open(*to_open)
                continue
            if src is None:  # no source open (its open failed): nothing to decode
                continue
            try:
                frame = src.frame(index)
                gt = src.mask(index) if src.has_masks else None
                data = frame_data(frame, gt, src.name(index))
            except Exception as exc:  # noqa: BLE001 - report and keep serving
                self.failed.emit(gen, index, describe_exception(exc, with_type=True))
                continue
            self.loaded.emit(gen, index, data)

    def _do_open(self, generation: int, path: str) -> None:
        from polypviewer.io.sources import open_source

        self.close_source()
        try:
            src = open_source(path)
            if len(src) == 0:
                src.close()
                raise PolypviewerError("no frames or images found", path)
        except Exception as exc:  # noqa: BLE001
            self.open_failed.emit(generation, describe_exception(exc, with_type=True))
            return
        with self._lock:
            self._source, self._gen = src, generation
        names = [src.name(i) for i in range(len(src))] if src.kind != "video" else None
        self.opened.emit(generation, {"n": len(src), "fps": src.fps, "kind": src.kind,
                                      "has_masks": bool(src.has_masks), "path": str(src.path),
                                      "problems": list(getattr(src, "problems", [])), "names": names})

    def close_source(self) -> None:
        if self._source is not None:
            try:
                self._source.close()
            finally:
                self._source = None


class FrameService(QObject):
    """GUI-side face of the frame loader: a thread, a generation counter, a frame cache."""

    opened = Signal(object)  # info dict
    open_failed = Signal(str)
    frame = Signal(int, object)  # index, FrameData
    failed = Signal(int, str)

    def __init__(self, cache_bytes: int = 512 << 20, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.cache = LruCache(cache_bytes)
        self.generation = 0
        self._thread = QThread()
        self._thread.setObjectName("polypviewer-frames")
        self._loader = FrameLoader()
        self._loader.moveToThread(self._thread)
        self._loader.opened.connect(self._on_opened)
        self._loader.open_failed.connect(self._on_open_failed)
        self._loader.loaded.connect(self._on_loaded)
        self._loader.failed.connect(self._on_failed)
        self._thread.started.connect(self._loader.lower_priority)
        self._thread.start()

    def open(self, path: str) -> int:
        self.generation += 1
        self.cache.clear()
        self._loader.open(self.generation, path)
        return self.generation

    def request(self, indices: list[int]) -> None:
        wanted = [i for i in indices if (self.generation, i) not in self.cache]
        if wanted:
            self._loader.request(self.generation, wanted)

    def get(self, index: int) -> FrameData | None:
        """The decoded frame if cached, else None."""
        data: FrameData | None = self.cache.get((self.generation, index))
        return data

    def put(self, index: int, data: FrameData) -> None:
        self.cache.put((self.generation, index), data)

    def _on_opened(self, gen: int, info: dict[str, Any]) -> None:
        if gen == self.generation:
            self.opened.emit(info)

    def _on_open_failed(self, gen: int, message: str) -> None:
        if gen == self.generation:
            self.open_failed.emit(message)

    def _on_loaded(self, gen: int, index: int, data: FrameData) -> None:
        if gen == self.generation:
            self.put(index, data)
            self.frame.emit(index, data)

    def _on_failed(self, gen: int, index: int, message: str) -> None:
        if gen == self.generation:
            self.failed.emit(index, message)

    def shutdown(self, timeout_ms: int = 10000) -> bool:
        """Stop the loader thread, wait for it, then close its source. True when it stopped."""
        self._loader.request(-1, [])
        self._thread.quit()
        ok = bool(self._thread.wait(timeout_ms))
        if ok:
            self._loader.close_source()
        return ok

    def thread(self) -> QThread:
        return self._thread


