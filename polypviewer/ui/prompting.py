"""LiteMedSAM in the window: embeddings and prompt masks computed off the GUI thread.

:class:`PromptWorker` (a QObject on its own QThread) loads
:class:`~polypviewer.engine.prompting.PromptSegmenter` on first use, keeps an
:class:`~polypviewer.engine.prompting.EmbeddingCache` (byte-bounded, per frame) and serves two
kinds of request: *prompts* first (a box, or a click turned into the box of the shown mask's
region under it), then *embeddings* to compute ahead (the current frame and the next ones; a
newer request replaces the older one). It opens no source and decodes nothing: every request
carries the frame's pixels from the window's frame cache (``ReviewHost.frame(i).frame``, the
array the canvas shows), so what is segmented is what is on screen and a frame is decoded once.
:class:`PromptService` is its GUI-side face; results come back only through queued signals,
and the GUI thread never waits on the worker except at shutdown.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence
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
    pixels: np.ndarray | None = None  # the frame's RGB pixels as the window holds them (not a copy)


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
        self._embeds: deque[tuple[int, np.ndarray]] = deque()
        self._reset: int | None = None
        self._gen = 0
        self._seg: Any = None
        self._load_lock = threading.Lock()
        self._load_error: str | None = None
        self._load_reported = False
        self._cache_bytes = cache_bytes
        self.backend = "auto"  # PromptSegmenter.create's; set before the first prompt (docs/screenshots.py: torch)
        self.cache: Any = None
        self._wake.connect(self._work)

    # -- any thread
    def reset(self, generation: int) -> None:
        """A new source is open: drop what was asked of the old one, and its embeddings."""
        with self._lock:
            self._reset = generation
            self._prompts.clear()
            self._embeds.clear()
        self._wake.emit()

    def want_embeddings(self, generation: int, frames: list[tuple[int, np.ndarray]]) -> None:
        """Embed these (frame, pixels) next, after any prompt (replaces the previous list)."""
        with self._lock:
            if generation == self._gen or self._reset == generation:
                self._embeds = deque(frames)
        self._wake.emit()

    def prompt(self, generation: int, request: PromptRequest) -> None:
        with self._lock:
            if generation == self._gen or self._reset == generation:
                self._prompts.append(request)
        self._wake.emit()

    # -- the worker thread
    @Slot()
    def lower_priority(self) -> None:
        lower_thread_priority()

    def segmenter(self) -> Any:
        """The LiteMedSAM segmenter, loaded on first use, or None when it cannot be (the reason
        is kept for the Box tool's message). Any thread."""
        with self._load_lock:
            return self._segmenter()

    def frame_prompt(self) -> Any:
        """``engine.prompting.frame_prompt`` on this worker's segmenter and embedding cache (key
        ``(generation, frame)``, as the Box tool's), or None when LiteMedSAM cannot load. Any
        thread: the propagation worker refines with it (``PromptSegmenter`` serialises its own
        calls, the cache is thread-safe), so one copy runs and no frame is embedded twice."""
        from polypviewer.engine.prompting import frame_prompt

        seg = self.segmenter()
        if seg is None:
            return None
        gen = self._gen
        return frame_prompt(seg, self.cache, key=lambda i: (gen, i))

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

    def _embedding(self, frame: int, pixels: np.ndarray | None) -> Any:
        seg = self.segmenter()
        if seg is None:
            raise PolypviewerError(self._load_error or "Box tool: LiteMedSAM is not loaded")
        key = (self._gen, frame)
        if pixels is None and key not in self.cache:
            raise PolypviewerError(f"Box tool: frame {frame} is not decoded yet; try again in a moment")
        return self.cache.get_or_compute(key, lambda: seg.embed(pixels))

    @Slot()
    def _work(self) -> None:
        from polypviewer.engine.prompting import click_box

        while True:
            with self._lock:
                reset, self._reset = self._reset, None
                if reset is not None:
                    self._gen = reset
                req = self._prompts.popleft() if self._prompts else None
                ahead = self._embeds.popleft() if req is None and self._embeds else None
                gen = self._gen
            if reset is not None and self.cache is not None:
                self.cache.clear()
            if req is None and ahead is None:
                return
            emb_frame = ahead[0] if ahead is not None else None
            try:
                if req is not None:
                    emb = self._embedding(req.frame, req.pixels)
                    box = req.box
                    if box is None:
                        assert req.point is not None
                        region = req.region if req.region is not None else np.zeros(emb.size, bool)
                        box = click_box(region, *req.point)
                    mask = self._seg.segment(emb, box=box)
                    self.masked.emit(gen, req, mask, tuple(float(v) for v in box))
                elif ahead is not None and emb_frame is not None:
                    if self.cache is None or (gen, emb_frame) not in self.cache:
                        self._embedding(emb_frame, ahead[1])
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

    def new_source(self) -> None:
        """A source was opened: what was asked of (and embedded for) the previous one is dropped."""
        self._gen += 1
        self.embedded_frames.clear()
        self.worker.reset(self._gen)

    def look_ahead(self, index: int, n: int, frames: Callable[[int], np.ndarray | None],
                   ahead: int = LOOK_AHEAD) -> list[int]:
        """Embed ``index`` and the ``ahead`` frames after it (what is embedded is not redone), with
        the pixels ``frames(i)`` gives (the window's cache; None: not decoded yet, skipped).
        Returns the wanted frames that had no pixels yet."""
        wanted = [i for i in range(index, min(n, index + ahead + 1)) if i not in self.embedded_frames]
        have = [(i, px) for i in wanted if (px := frames(i)) is not None]
        self.worker.want_embeddings(self._gen, have)
        return [i for i in wanted if i not in {j for j, _ in have}]

    def prompt(self, frame: int, *, box: Sequence[float] | None = None, point: Sequence[float] | None = None,
               mode: str = "replace", region: np.ndarray | None = None,
               pixels: np.ndarray | None = None) -> PromptRequest:
        """Segment ``box`` (or the click ``point``) on ``frame``; ``pixels``: the frame as the window
        shows it (needed unless its embedding is cached)."""
        self._next_id += 1
        xyxy = None
        if box is not None:
            x0, y0, x1, y1 = (float(v) for v in box)  # (a box is 4 numbers)
            xyxy = (x0, y0, x1, y1)
        req = PromptRequest(frame, xyxy,
                            None if point is None else (float(point[0]), float(point[1])), mode,
                            None if region is None else np.array(region, dtype=bool), self._next_id, pixels)
        self.worker.prompt(self._gen, req)
        return req

    def _on_masked(self, gen: int, req: PromptRequest, mask: np.ndarray, box: tuple[float, ...]) -> None:
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
        return bool(self._thread.wait(timeout_ms))
