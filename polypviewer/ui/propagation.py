"""Propagate in the window: carry the shown reviewed frame's mask forward or backward.

From an accepted or corrected frame, *Propagate forward* / *backward* runs
:class:`~polypviewer.engine.propagation.Propagation` on a :class:`PropagationWorker` (a QObject
on its own QThread, with its own frame source and its own predictor built from the running
model's weights, through PyTorch fp32, like ``workers.FrameLoader``; each refined region then
prompts the Box tool's LiteMedSAM, shared with it, when it loads), up to the frame before the next reviewed one
(accepted, corrected or flagged), the source's end, or a scene change. Each frame comes back
through a queued signal; the GUI thread starts the frame from the network's mask if it has no
edits yet, gives it the carried mask with ``EditSession.propagate`` (state PROPAGATED: not
reviewed until accepted) and pushes one undo step on that frame's stack. A frame reviewed while
the run goes on is left alone. *Stop propagation* sets the run's stop event.

Each propagated frame's drift (engine.propagation's score, high = check first) is kept in memory
and drawn on the timeline as a curve of points; *Worst drift* jumps to the propagated frame with
the highest drift.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QObject, QThread, Signal, Slot
from PySide6.QtGui import QUndoCommand

from polypviewer.core.edits import FrameEdits, Rect, ReviewState, Stroke
from polypviewer.core.errors import PolypviewerError, describe_exception
from polypviewer.ui.workers import lower_thread_priority

__all__ = ["PropagationRequest", "PropagationWorker", "Propagator", "PropagateCommand", "PropagateStateCommand",
           "REVIEWED"]

REVIEWED = (ReviewState.ACCEPTED, ReviewState.CORRECTED, ReviewState.FLAGGED)
DRIFT_COLOR = (255, 210, 60)


@dataclass(frozen=True)
class PropagationRequest:
    run: int
    path: str
    start: int
    end: int
    seed: np.ndarray
    threshold: float
    model: str | None
    weights: str | None
    options: dict[str, Any]
    #: () -> a LiteMedSAM ``prompt(i, frame, box)`` or None (``PromptWorker.frame_prompt``): each
    #: refined region then prompts it with its box (``engine.propagation.prompted_regions``), as
    #: ``polypviewer propagate`` does
    prompt_factory: Any = None


class PropagationWorker(QObject):
    frame_done = Signal(int, int, object, object, float)  # run, frame, mask, network mask, drift
    finished = Signal(int, str)  # run, why it stopped ("end", "scene change at frame N", "cancelled")
    failed = Signal(int, str)  # run, one line
    _start = Signal(object)

    def __init__(self) -> None:
        super().__init__()
        self.stop = threading.Event()
        self._predictor: Any = None
        self._predictor_key: tuple[Any, ...] | None = None
        self.refined_by = "the model"  # of the last run, said when it ends
        self._start.connect(self._run)

    def start(self, request: PropagationRequest) -> None:  # any thread
        self.stop.clear()
        self._start.emit(request)

    @Slot()
    def lower_priority(self) -> None:
        lower_thread_priority()

    def _predictor_for(self, req: PropagationRequest) -> Any:
        from polypviewer.engine.inference import Predictor

        if not req.weights:
            raise PolypviewerError("the running model has no weights file to load a second copy from "
                                   "(load weights, Ctrl+L, or the shipped default)")
        key = (req.model, req.weights, tuple(sorted(req.options.items())))
        if self._predictor is None or key != self._predictor_key:
            self._predictor = Predictor.create(req.model, req.weights, threshold=req.threshold, **req.options)
            self._predictor_key = key
        return self._predictor

    @Slot(object)
    def _run(self, req: PropagationRequest) -> None:
        from polypviewer.engine.propagation import Propagation
        from polypviewer.io.sources import open_source

        try:
            pred = self._predictor_for(req)
            probs: dict[int, np.ndarray] = {}

            def probability(i: int, frame: np.ndarray) -> np.ndarray:
                probs.clear()
                probs[i] = pred.predict([frame])[0]
                return probs[i]

            prompt = req.prompt_factory() if req.prompt_factory is not None else None
            self.refined_by = "the model and LiteMedSAM" if prompt is not None else "the model"
            with open_source(req.path) as src:
                prop = Propagation(src.frame, req.seed, req.start, req.end, probability=probability, stop=self.stop,
                                   prompt=prompt)
                for r in prop:
                    self.frame_done.emit(req.run, r.index, r.mask, probs[r.index] >= req.threshold, float(r.drift))
                self.finished.emit(req.run, prop.stopped)
        except Exception as exc:  # noqa: BLE001 - one failed run is reported, the app goes on
            self.failed.emit(req.run, str(exc) if isinstance(exc, PolypviewerError)
                             else describe_exception(exc, with_type=True))


class PropagateCommand(QUndoCommand):
    """One propagated frame as one undo step; redo makes it PROPAGATED again."""

    def __init__(self, propagator: Propagator, frame: int, edits: FrameEdits, stroke: Stroke) -> None:
        super().__init__("propagate")
        self.p, self.frame, self.edits, self.stroke = propagator, frame, edits, stroke
        self._skip_redo = True  # pushed after the stroke was applied

    def redo(self) -> None:
        if self._skip_redo:
            self._skip_redo = False
            return
        self._done(self.p.session.apply_propagation(self.frame, self.stroke))

    def undo(self) -> None:
        self._done(self.edits.revert(self.stroke))

    def _done(self, rect: Rect) -> None:
        self.p.controller.editor.refresh(self.frame, rect)


class PropagateStateCommand(QUndoCommand):
    """A propagation that left the mask as it was (the carried mask is the frame's already): the
    state change alone is the undo step."""

    def __init__(self, propagator: Propagator, frame: int, before: ReviewState) -> None:
        super().__init__("propagate")
        self.p, self.frame, self.before = propagator, frame, before
        self._skip_redo = True

    def redo(self) -> None:
        if self._skip_redo:
            self._skip_redo = False
            return
        self.p.session.set_state(self.frame, ReviewState.PROPAGATED)
        self.p.controller._on_state(self.frame)

    def undo(self) -> None:
        self.p.session.set_state(self.frame, self.before)
        self.p.controller._on_state(self.frame)


class Propagator(QObject):
    """The Propagate actions of an :class:`~polypviewer.ui.annotation.AnnotationController`."""

    changed = Signal()  # a frame was propagated, or a run ended

    def __init__(self, controller: Any) -> None:
        super().__init__(controller)
        self.controller = controller
        self.host = controller.host
        self.drift: dict[int, float] = {}
        self.running: int | None = None  # the run id while one goes on
        self.last_stop = ""
        self.done_frames: list[int] = []
        self._run = 0
        self._thread = QThread()
        self._thread.setObjectName("propagation-worker")
        self.worker = PropagationWorker()
        self.worker.moveToThread(self._thread)
        self._thread.started.connect(self.worker.lower_priority)
        self.worker.frame_done.connect(self._on_frame)
        self.worker.finished.connect(self._on_finished)
        self.worker.failed.connect(self._on_failed)
        self._thread.start()
        self.curve = pg.ScatterPlotItem(size=5, pen=None, brush=pg.mkBrush(*DRIFT_COLOR), symbol="o")
        self.host.add_timeline_item(self.curve)
        self.host.source_opened.connect(self._on_source_opened)
        for name, text, slot in (
                ("propagate_forward", "Propagate forward from this frame", lambda: self.propagate(backward=False)),
                ("propagate_backward", "Propagate backward from this frame", lambda: self.propagate(backward=True)),
                ("stop_propagation", "Stop propagation", self.cancel),
                ("worst_drift", "Propagated frame with the worst drift", self.jump_worst)):
            controller.add_action(name, text, slot, group="mask")

    @property
    def session(self) -> Any:
        return self.controller.session

    # ---- runs --------------------------------------------------------------------------------
    def propagate(self, *, backward: bool = False) -> bool:
        """Start a run from the shown frame; False (and a one-line message) when it cannot."""
        from polypviewer.engine.propagation import propagation_end

        host, ctl = self.host, self.controller
        if ctl.source_info is None or not host.n:
            ctl.message.emit("Propagate: open a source first")
            return False
        if self.running is not None:
            ctl.message.emit("Propagate: a propagation is running; stop it first")
            return False
        start, n = host.index, host.n
        name = host.frame_name(start)
        mask = self.session.mask(start)
        if self.session.state(start) not in (ReviewState.ACCEPTED, ReviewState.CORRECTED) or mask is None:
            ctl.message.emit(f"Propagate: {name} is not accepted or corrected; review it first (A accepts)")
            return False
        info = host.model_info() or {}
        reviewed = {f for f in range(n) if self.session.state(f) in REVIEWED}
        end = propagation_end(start, n, backward=backward, reviewed=reviewed)
        if end == start:
            ctl.message.emit(f"Propagate: nothing {'before' if backward else 'after'} {name} to propagate to "
                             "(the next frame is reviewed, or this is the source's end)")
            return False
        self._run += 1
        self.running = self._run
        self.done_frames = []
        # PyTorch fp32 on the running model's device: a second OpenVINO model running beside the
        # window's (its inference worker) aborted the process here ("double free or corruption").
        options = {"device": info.get("device") or "auto", "backend": "torch", "precision": "fp32"}
        req = PropagationRequest(self._run, str(ctl.source_info["path"]), start, end, np.array(mask, dtype=bool),
                                 float(host.threshold), info.get("model"), info.get("weights"), options,
                                 prompt_factory=ctl.prompts.worker.frame_prompt)
        host.set_playing(False)
        self.worker.start(req)
        host.notify(f"Propagating {name} {'backward' if backward else 'forward'} to frame {end}…", 4000)
        return True

    def cancel(self) -> None:
        if self.running is not None:
            self.worker.stop.set()

    def _on_frame(self, run: int, frame: int, mask: np.ndarray, model_mask: np.ndarray, drift: float) -> None:
        if run != self.running:
            return
        s, ctl = self.session, self.controller
        if s.state(frame) in REVIEWED:  # reviewed while the run went on: the reviewer's mask stays
            return
        edits = s.get(frame)
        if edits is None:
            info = self.host.model_info() or {}
            edits = s.start(frame, model_mask, model_version=str(info.get("version", "")),
                            threshold=float(self.host.threshold), name=self.host.frame_name(frame))
            self.host.show_mask(frame)
        before = s.state(frame)
        stroke = s.propagate(frame, mask)
        stack = ctl.editor.history.stack(frame)
        if stroke is not None:
            stack.push(PropagateCommand(self, frame, edits, stroke))
            ctl.editor.refresh(frame, stroke.rect)
        else:
            stack.push(PropagateStateCommand(self, frame, before))
        ctl._on_state(frame)  # the timeline's markers and the panel's counts now
        self.drift[frame] = drift
        self.done_frames.append(frame)
        self._show_drift()
        self.changed.emit()

    def _on_finished(self, run: int, why: str) -> None:
        if run != self.running:
            return
        self.running = None
        self.last_stop = why
        n = len(self.done_frames)
        tail = "" if why == "end" else f" ({why})"
        self.host.notify(f"Propagated to {n} frame(s){tail}, refined by {self.worker.refined_by}; review them "
                         "(A accepts; Annotate > worst drift)", 6000)
        self.changed.emit()

    def _on_failed(self, run: int, message: str) -> None:
        if run != self.running:
            return
        self.running = None
        self.last_stop = "failed"
        self.controller.message.emit(f"Propagate: {message}")
        self.changed.emit()

    # ---- drift -------------------------------------------------------------------------------
    def propagated_drift(self) -> dict[int, float]:
        """Drift of the frames still PROPAGATED (accepted or edited ones drop out)."""
        return {f: d for f, d in self.drift.items() if self.session.state(f) == ReviewState.PROPAGATED}

    def _show_drift(self) -> None:
        d = self.propagated_drift()
        xs = sorted(d)
        self.curve.setData([float(x) for x in xs], [float(d[x]) for x in xs])

    def jump_worst(self) -> None:
        d = self.propagated_drift()
        self._show_drift()
        if not d:
            self.controller.message.emit("Worst drift: no propagated frame is waiting for review")
            return
        worst = max(d, key=lambda f: (d[f], -f))
        self.host.set_playing(False)
        self.host.go_to(worst)

    def _on_source_opened(self, _info: dict[str, Any]) -> None:
        self.cancel()
        self.running = None
        self.drift.clear()
        self.done_frames = []
        self._show_drift()

    def shutdown(self, timeout_ms: int = 30000) -> bool:
        self.worker.stop.set()
        self._thread.quit()
        return bool(self._thread.wait(timeout_ms))
