"""LiteMedSAM in the window: embeddings and prompt masks computed off the GUI thread.

:class:`PromptWorker` (a QObject on its own QThread, with its own frame source, like
``workers.FrameLoader``) loads :class:`~polypviewer.engine.prompting.PromptSegmenter` on first
use, keeps an :class:`~polypviewer.engine.prompting.EmbeddingCache` (byte-bounded, per frame)
and serves two kinds of request: *prompts* first (a box, or a click turned into the box of the
shown mask's region under it), then *embeddings* to compute ahead (the current frame and the
next ones; a newer request replaces the older one). :class:`PromptService` is its GUI-side
face; results come back only through queued signals, and the GUI thread never waits on the
worker except at shutdown.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np
from PySide6.QtCore import QObject, QThread, Signal, Slot

from polypviewer.core.errors import PolypviewerError, describe_exception
from polypviewer.ui.workers import lower_thread_priority

__all__ = ["PromptRequest", "PromptWorker", "PromptService", "LOOK_AHEAD"]

LOOK_AHEAD = 1  # embeddings ahead of the frame shown (each is ~75 GFLOP: a few on a laptop CPU)


@dataclass(frozen=True)
class PromptRequest:
    frame: int
    box: tuple[float, float, float, float] | None  # a dragged box, or None for a click
    point: tuple[float, float] | None  # a click
    mode: str  # engine.prompting.MERGE_MODES
    region: np.ndarray | None = None  # the shown mask, for a click (its region under the click)
    request_id: int = 0


class PromptWorker(QObject):
    ready = Signal(str)  # a one-line description of the model once loaded
    embedded = Signal(int, int)  # generation, frame
    masked = Signal(int, object, object, object)  # generation, PromptRequest, mask (H, W) bool, box used
    failed = Signal(int, str)  # generation, one-line message
    _wake = Signal()

    def __init__(self, cache_bytes: int | None = None) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._prompts: deque[PromptRequest] = deque()
        self._embeds: deque[int] = deque()
        self._open: tuple[int, str] | None = None
        self._gen = 0
        self._source: Any = None
        self._seg: Any = None
        self._load_error: str | None = None
        self._load_reported = False
        self._cache_bytes = cache_bytes
        self.backend = "auto"  # PromptSegmenter.create's; set before the first prompt (docs/screenshots.py: torch)
        self.cache: Any = None
        self._wake.connect(self._work)

    # -- any thread
    def open(self, generation: int, path: str) -> None:
        with self._lock:
            self._open = (generation, path)
            self._prompts.clear()
            self._embeds.clear()
        self._wake.emit()

    def want_embeddings(self, generation: int, frames: list[int]) -> None:
        with self._lock:
            if generation == self._gen or self._open is not None:
                self._embeds = deque(frames)
        self._wake.emit()

    def prompt(self, generation: int, request: PromptRequest) -> None:
        with self._lock:
            if generation == self._gen or self._open is not None:
                self._prompts.append(request)
        self._wake.emit()

    # -- the worker thread
    @Slot()
    def lower_priority(self) -> None:
        lower_thread_priority()

    def _segmenter(self) -> Any:
        if self._seg is None and self._load_error is None:
            from polypviewer.engine.prompting import DEFAULT_CACHE_BYTES, EmbeddingCache, PromptSegmenter

            try:
                self._seg = PromptSegmenter.create(backend=self.backend)
            except PolypviewerError as exc:
                self._load_error = f"Box tool: {exc}"
            except Exception as exc:  # noqa: BLE001 - a broken install is reported, the app goes on
                self._load_error = f"Box tool: LiteMedSAM could not be loaded ({describe_exception(exc)})"
            else:
                self.cache = EmbeddingCache(self._cache_bytes or DEFAULT_CACHE_BYTES)
                self.ready.emit(f"Box tool: LiteMedSAM ready ({self._seg.why})")
        return self._seg

    def _embedding(self, frame: int) -> Any:
        seg = self._segmenter()
        if seg is None:
            raise PolypviewerError(self._load_error or "Box tool: LiteMedSAM is not loaded")
        if self._source is None:
            raise PolypviewerError("Box tool: no source is open")
        key = (self._gen, frame)
        return self.cache.get_or_compute(key, lambda: seg.embed(self._source.frame(frame)))

    @Slot()
    def _work(self) -> None:
        from polypviewer.engine.prompting import click_box

        while True:
            with self._lock:
                to_open, self._open = self._open, None
                req = self._prompts.popleft() if to_open is None and self._prompts else None
                emb_frame = self._embeds.popleft() if to_open is None and req is None and self._embeds else None
                gen = self._gen
            if to_open is not None:
                self._do_open(*to_open)
                continue
            if req is None and emb_frame is None:
                return
            try:
                if req is not None:
                    emb = self._embedding(req.frame)
                    box = req.box
                    if box is None:
                        assert req.point is not None
                        region = req.region if req.region is not None else np.zeros(emb.size, bool)
                        box = click_box(region, *req.point)
                    mask = self._seg.segment(emb, box=box)
                    self.masked.emit(gen, req, mask, tuple(float(v) for v in box))
                else:
                    if self.cache is None or (gen, emb_frame) not in self.cache:
                        self._embedding(emb_frame)
                    self.embedded.emit(gen, emb_frame)
            except Exception as exc:  # noqa: BLE001 - one failed prompt or frame is reported, the worker goes on
                text = str(exc) if isinstance(exc, PolypviewerError) else describe_exception(exc, with_type=True)
                if self._load_error is not None:  # no model: stop the look-ahead, say so once (and per prompt)
                    with self._lock:
                        self._embeds.clear()
                    if req is None and self._load_reported:
                        continue
                    self._load_reported = True
                self.failed.emit(gen, text)

    def _do_open(self, generation: int, path: str) -> None:
        from polypviewer.io.sources import open_source

        self.close_source()
        if self.cache is not None:
            self.cache.clear()
        try:
            src = open_source(path)
        except Exception as exc:  # noqa: BLE001 - the window reports the source's problems itself
            self.failed.emit(generation, describe_exception(exc, with_type=True))
            src = None
        with self._lock:
            self._source, self._gen = src, generation

    def close_source(self) -> None:
        if self._source is not None:
            try:
                self._source.close()
            finally:
                self._source = None


class PromptService(QObject):
    """GUI-side face of :class:`PromptWorker`: generations (a newly opened source drops what
    was asked of the old one) and signals on the GUI thread."""

    masked = Signal(object, object, object)  # PromptRequest, mask, box used
    embedded = Signal(int)  # frame
    failed = Signal(str)
    ready = Signal(str)

    def __init__(self, parent: QObject | None = None, *, cache_bytes: int | None = None) -> None:
        super().__init__(parent)
        self._gen = 0
        self._next_id = 0
        self._thread = QThread()
        self._thread.setObjectName("prompt-worker")
        self.worker = PromptWorker(cache_bytes)
        self.worker.moveToThread(self._thread)
        self._thread.started.connect(self.worker.lower_priority)
        self.worker.masked.connect(self._on_masked)
        self.worker.embedded.connect(self._on_embedded)
        self.worker.failed.connect(self._on_failed)
        self.worker.ready.connect(self.ready)
        self.embedded_frames: set[int] = set()
        self._thread.start()

    def open(self, path: str) -> None:
        self._gen += 1
        self.embedded_frames.clear()
        self.worker.open(self._gen, path)

    def look_ahead(self, index: int, n: int, ahead: int = LOOK_AHEAD) -> None:
        """Embed ``index`` and the ``ahead`` frames after it (what is cached is not redone)."""
        frames = [i for i in range(index, min(n, index + ahead + 1)) if i not in self.embedded_frames]
        self.worker.want_embeddings(self._gen, frames)

    def prompt(self, frame: int, *, box=None, point=None, mode: str = "replace", region=None) -> PromptRequest:
        self._next_id += 1
        req = PromptRequest(frame, None if box is None else tuple(float(v) for v in box),
                            None if point is None else (float(point[0]), float(point[1])), mode,
                            None if region is None else np.array(region, dtype=bool), self._next_id)
        self.worker.prompt(self._gen, req)
        return req

    def _on_masked(self, gen: int, req, mask, box) -> None:
        if gen == self._gen:
            self.masked.emit(req, mask, box)

    def _on_embedded(self, gen: int, frame: int) -> None:
        if gen == self._gen:
            self.embedded_frames.add(frame)
            self.embedded.emit(frame)

    def _on_failed(self, gen: int, message: str) -> None:
        if gen == self._gen:
            self.failed.emit(message)

    def shutdown(self, timeout_ms: int = 30000) -> bool:
        with self.worker._lock:
            self.worker._prompts.clear()
            self.worker._embeds.clear()
        self._thread.quit()
        ok = self._thread.wait(timeout_ms)
        if ok:
            self.worker.close_source()
        return bool(ok)
