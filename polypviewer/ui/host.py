"""The seam between the review window and what plugs into it (annotation, its tools and dialogs).

:class:`ReviewHost` is everything the :class:`~polypviewer.ui.annotation.AnnotationController`,
the export and fine-tune dialogs, and any later tool may ask of the window. The window
(:class:`~polypviewer.ui.main_window.MainWindow`) implements it; nothing outside it reads
the window's attributes (its services, canvas, timeline or panels), so the window can change
its insides without breaking them, and a test can hand them a stub.

What it offers, by job:

* **what is on screen**: ``index`` (the frame shown), ``n`` (frames in the source),
  ``threshold`` (the probability a pixel needs to be foreground), ``frame_name(i)``,
  ``frame(i)`` (the decoded :class:`~polypviewer.ui.workers.FrameData`, or None),
  ``prediction(i)`` (the cached probability map, or None) and ``model_info()`` (the running
  model's info dict, or None while none is loaded), ``uncertainties()`` (frame -> the
  running model's ``engine.uncertainty`` score, for the frames it has predicted);
* **masks**: ``use_session(session)`` makes the window show and score the masks of that
  :class:`~polypviewer.core.edits.EditSession` (the one owner of every edited mask; a frame
  without one shows its thresholded prediction); ``show_mask(i)`` after a frame's mask was
  created or replaced; ``refresh_mask(i, rect)`` after pixels inside ``rect`` changed (only
  that rectangle is redrawn); ``rescore(i)`` to score the shown mask again (metrics, timeline);
* **composition**: ``main_window()`` (the QMainWindow that menus, toolbars, docks, actions and
  dialogs attach to), ``keymap`` (the user's shortcuts resolved over the defaults),
  ``set_canvas_tool(handler)`` and ``add_canvas_item(item)`` (the canvas's mouse handler and
  scene items such as a brush outline), ``add_timeline_item(item)`` (a pyqtgraph item drawn
  on the per-frame strip, x = frame index);
* **navigation and model**: ``go_to(i)``, ``set_playing(on)``, ``load_model(model, weights)``;
* **messages**: ``report(message)`` (a one-line problem: status bar, message log, ``errors``,
  the window's ``message`` signal), ``notify(message, ms)`` (a passing success line in the
  status bar, kept in the message log too) and ``model_message(text)`` (the model panel's line).

Signals (Qt, so not part of the typed protocol's methods): ``source_opened(info)``,
``displayed(index, has_prediction)``, ``frame_ready(index)`` (a decoded frame entered the
window's frame cache: ``frame(index)`` has it now) and ``message(str)``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import numpy as np
    from PySide6.QtCore import SignalInstance
    from PySide6.QtWidgets import QGraphicsItem, QMainWindow

    from polypviewer.core.edits import EditSession, Rect
    from polypviewer.ui.workers import FrameData

__all__ = ["ReviewHost"]


@runtime_checkable
class ReviewHost(Protocol):
    """What the review window offers the annotation controller, its tools and its dialogs."""

    source_opened: SignalInstance  # (info: dict) a source was opened; info has path, n, kind, ...
    displayed: SignalInstance  # (index: int, has_prediction: bool) a frame is on screen
    frame_ready: SignalInstance  # (index: int) frame(index) is decoded and cached now
    message: SignalInstance  # (text: str) every reported problem
    keymap: dict[str, tuple[str, ...]]

    # -- what is on screen -------------------------------------------------------------------
    @property
    def index(self) -> int: ...
    @property
    def n(self) -> int: ...
    @property
    def threshold(self) -> float: ...
    def frame_name(self, index: int) -> str: ...
    def frame(self, index: int) -> FrameData | None: ...
    def prediction(self, index: int) -> np.ndarray | None: ...
    def model_info(self) -> dict[str, Any] | None: ...
    def uncertainties(self) -> dict[int, float]: ...

    # -- masks -------------------------------------------------------------------------------
    def use_session(self, session: EditSession) -> None: ...
    def show_mask(self, index: int) -> None: ...
    def refresh_mask(self, index: int, rect: Rect | None) -> None: ...
    def rescore(self, index: int) -> None: ...

    # -- composition -------------------------------------------------------------------------
    def main_window(self) -> QMainWindow: ...
    def set_canvas_tool(self, handler: Any) -> None: ...
    def add_canvas_item(self, item: QGraphicsItem) -> None: ...
    def add_timeline_item(self, item: Any) -> None: ...

    # -- navigation and model ----------------------------------------------------------------
    def go_to(self, index: int) -> None: ...
    def set_playing(self, on: bool) -> None: ...
    def load_model(self, model: str | None = None, weights: str | None = None) -> None: ...

    # -- messages ----------------------------------------------------------------------------
    def report(self, message: str) -> None: ...
    def notify(self, message: str, timeout_ms: int = 4000) -> None: ...
    def model_message(self, text: str) -> None: ...
