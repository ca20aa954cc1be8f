"""Fine-tune dialog: adapt the model to this project's accepted + corrected frames.

The same engine function as ``polypviewer finetune`` (:func:`polypviewer.engine.finetune.finetune`)
runs on a worker thread: an automatic, reproducible held-out split, the base scored on the
held-out frames, training with a live loss plot and the held-out Dice after every epoch
(watched only, never used to pick weights), the held-out frames scored again, a NEW
checkpoint + card written (never over the base or a shipped file). At the end the dialog
shows before/after on the held-out frames and offers to switch to the new version; the
base stays selectable under Annotate > Model versions. Frames nobody edited are then
re-predicted by the new version (the prediction cache is keyed by model version); edited
frames keep their corrected masks.

"Correct first" picks the k frames nobody has reviewed yet that the model is least sure of
(``engine.uncertainty``, from the predictions the window already has): the dialog lists them
and the window goes to the first; J (most uncertain unreviewed frame) walks the rest in the
same order. They are the frames most likely to be wrong (README: uncertainty vs 1 - Dice);
whether correcting them first makes a better fine-tune than correcting random frames is
measured by ``benchmarks/bench_active.py`` (README's table), not assumed.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from polypviewer.core.errors import PolypviewerError, describe_exception
from polypviewer.ui.export_dialog import REVIEWED
from polypviewer.ui.worker_dialog import JobWorker, MaskRow, WorkerDialog

if TYPE_CHECKING:
    from polypviewer.engine.finetune import FinetuneResult
    from polypviewer.engine.training import TrainEvent

__all__ = ["FinetuneDialog", "FinetuneWorker", "default_output", "finetuned_message"]


def default_output(base: str | Path) -> Path:
    """``<projects dir>/models/<base stem>-ft-<UTC time>.safetensors`` (a new, free name)."""
    from polypviewer.ui.model_versions import finetuned_dir

    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    stem = Path(str(base)).stem if base else "model"
    return finetuned_dir() / f"{stem}-ft-{stamp}.safetensors"


def finetuned_message(sha256: str) -> str:
    """The Model panel's line once a fine-tuned version is written: short, so the panel stays
    two lines taller at most (the four-line one pushed the Annotation dock into scrolling on a
    900 px tall window)."""
    return f"Fine-tuned {sha256[:12]} ready: Annotate > Model versions."

class FinetuneWorker(JobWorker):
    """One fine-tune run on its thread; ``rows`` are mask snapshots ``(frame, name, mask, stats)``."""

    progress = Signal(object)  # dict: kind, global_step, loss, epoch, epochs, held_out_dice
    stage = Signal(str)
    done = Signal(object)  # FinetuneResult
    failed = Signal(str)

    def __init__(self, source_path: str, project_path: str, rows: list[MaskRow], base: str, out: str, *,
                 holdout: float, epochs: int | None, size: int | None, max_steps: int | None,
                 device: str) -> None:
        super().__init__()
        self.source_path, self.project_path, self.rows = source_path, project_path, rows
        self.base, self.out = base, out
        self.holdout, self.epochs, self.size, self.max_steps, self.device = holdout, epochs, size, max_steps, device

    @Slot()
    def run(self) -> None:
        try:
            self.done.emit(self._run())
        except PolypviewerError as exc:
            self.failed.emit(str(exc))
        except Exception as exc:  # noqa: BLE001 - one line in the dialog, never ends the app
            self.failed.emit(f"{self.out}: fine-tune failed ({describe_exception(exc, with_type=True)})")

    def _run(self) -> FinetuneResult | None:
        from polypviewer.engine.data import samples_from_items
        from polypviewer.engine.finetune import check_output, finetune, resolve_base
        from polypviewer.io.sources import open_source
        from polypviewer.nets.weights import load_checkpoint

        base = resolve_base(self.base or None)
        check_output(Path(self.out), base)  # refuse before reading any frame
        ckpt = load_checkpoint(base)  # a bad base is refused before any frame is read, too
        # None: finetune() takes the network's own input size (it resolves a checkpoint that names no network)
        size = self.size or (ckpt.preprocessing.input_size if ckpt.preprocessing else None)
        self.stage.emit(f"Reading {len(self.rows)} corrected frame(s)…")
        items, problems = [], []
        with open_source(self.source_path) as src:
            for frame, name, mask, _ in self.rows:
                if self.stop.is_set():
                    return None
                try:
                    items.append((name, src.frame(frame), mask))
                except PolypviewerError as exc:
                    problems.append(str(exc))
        data = samples_from_items(self.project_path, items)
        data.problems = problems
        self.stage.emit(f"Fine-tuning on {len(data)} frame(s) (base scored on the held-out ones first)…")

        def callback(ev: TrainEvent) -> None:
            self.progress.emit({"kind": ev.kind, "global_step": ev.global_step, "loss": ev.loss,
                             "epoch": ev.epoch, "epochs": ev.epochs,
                             "held_out_dice": (ev.monitor or {}).get("dice")})

        return finetune(data, self.out, base=base, holdout=self.holdout, epochs=self.epochs, size=size,
                        device=self.device, callbacks=[callback], stop=self.stop, max_steps=self.max_steps,
                        source=self.project_path)


class FinetuneDialog(WorkerDialog):
    """Signals: ``finished_run(result or None)``, ``run_failed(message)``."""

    stopping_message = "Stopping after the current step…"

    finished_run = Signal(object)
    run_failed = Signal(str)

    def __init__(self, controller: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Fine-tune on the corrected frames")
        self.controller = controller
        self.outcome: Any = None  # the last run's engine.finetune.FinetuneResult (None: none, or stopped)
        self._steps: list[float] = []
        self._losses: list[float] = []
        self._epochs: list[float] = []
        self._held_dice: list[float] = []
        self.base_edit = QLineEdit(self._current_weights())
        self.base_edit.setPlaceholderText("checkpoint file (empty: the shipped default model)")
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        self.out_edit = QLineEdit(str(default_output(self.base_edit.text())))
        n = len(controller.frames_in(REVIEWED))
        self.frames_label = QLabel(f"{n} accepted + corrected frame(s) of this project "
                                   "(flagged and unreviewed frames are left out)")
        # Which frames to correct before fine-tuning: the k most uncertain unreviewed ones.
        self.pick_k = QSpinBox()
        self.pick_k.setRange(1, 1000)
        self.pick_k.setValue(10)
        self.pick_k.setToolTip("How many frames to pick")
        self.pick_button = QPushButton("Pick the most uncertain frames")
        self.pick_button.setToolTip("The unreviewed frames the model is least sure of: correct (or accept) "
                                    "them, then fine-tune. J walks them in the window.")
        self.pick_button.clicked.connect(self.pick_uncertain)
        self.pick_label = QLabel("")
        self.pick_label.setWordWrap(True)
        self.pick_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.picked: list[int] = []
        self.holdout = QDoubleSpinBox()
        self.holdout.setRange(0.05, 0.9)
        self.holdout.setSingleStep(0.05)
        self.holdout.setValue(0.3)
        self.holdout.setToolTip("Share of the frames held out (never trained on) to prove the change")
        self.epochs = QSpinBox()
        self.epochs.setRange(1, 500)
        self.epochs.setValue(5)
        self.max_steps = QSpinBox()
        self.max_steps.setRange(0, 1_000_000)
        self.max_steps.setSpecialValueText("no limit")
        self.input_size = QSpinBox()  # (not `size`: that is QWidget.size())
        self.input_size.setRange(0, 1024)
        self.input_size.setSingleStep(32)
        self.input_size.setSpecialValueText("the checkpoint's")
        self.device = QComboBox()
        self.device.addItems(self._devices())
        self.loss_plot = pg.PlotWidget(background=(24, 24, 27))
        self.loss_plot.setLabel("left", "training loss")
        self.loss_plot.setLabel("bottom", "step")
        self.loss_plot.setMinimumHeight(160)
        self.loss_curve = self.loss_plot.plot([], [], pen=pg.mkPen((0, 200, 255), width=1.5))
        self.dice_plot = pg.PlotWidget(background=(24, 24, 27))
        self.dice_plot.setLabel("left", "held-out Dice")
        self.dice_plot.getAxis("bottom").setTicks([[(0, "base"), (1, "fine-tuned")]])
        self.dice_plot.setXRange(-0.5, 1.5)
        self.dice_plot.setYRange(0, 1)
        self.dice_plot.setMinimumHeight(120)
        self.dice_bars = pg.BarGraphItem(x=[], height=[], width=0.5, brush=(200, 90, 255))
        self.dice_plot.addItem(self.dice_bars)
        # Held-out Dice after every epoch: watched only, it never picks the weights.
        self.val_plot = pg.PlotWidget(background=(24, 24, 27))
        self.val_plot.setLabel("left", "held-out Dice")
        self.val_plot.setLabel("bottom", "epoch")
        self.val_plot.setYRange(0, 1)
        self.val_plot.setMinimumHeight(120)
        self.val_curve = self.val_plot.plot([], [], pen=pg.mkPen((255, 190, 60), width=1.5),
                                            symbol="o", symbolSize=5, symbolBrush=(255, 190, 60))
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.start_button = QPushButton("Start")
        self.start_button.clicked.connect(self.start)
        self.use_button = QPushButton("Use the new model")
        self.use_button.setEnabled(False)
        self.use_button.clicked.connect(self.use_new_model)
        self.cancel_button = QPushButton("Close")
        self.cancel_button.clicked.connect(self._cancel_or_close)
        row = QHBoxLayout()
        row.addWidget(self.base_edit, 1)
        row.addWidget(browse)
        form = QFormLayout()
        form.addRow("Base model", row)
        form.addRow("New checkpoint", self.out_edit)
        form.addRow("Frames", self.frames_label)
        pick_row = QHBoxLayout()
        pick_row.addWidget(self.pick_k)
        pick_row.addWidget(self.pick_button, 1)
        form.addRow("Correct first", pick_row)
        form.addRow("", self.pick_label)
        form.addRow("Held out", self.holdout)
        form.addRow("Epochs", self.epochs)
        form.addRow("Stop after steps", self.max_steps)
        form.addRow("Input size", self.input_size)
        form.addRow("Device", self.device)
        buttons = QHBoxLayout()
        buttons.addWidget(self.use_button)
        buttons.addStretch(1)
        buttons.addWidget(self.start_button)
        buttons.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.loss_plot, 1)
        layout.addWidget(self.val_plot)
        layout.addWidget(self.dice_plot)
        layout.addWidget(self.status)
        layout.addLayout(buttons)
        self.resize(720, 820)

    # ---- choices ---------------------------------------------------------------------------
    def _current_weights(self) -> str:
        """The checkpoint the window runs now, else the shipped default, else empty."""
        info = self.controller.host.model_info() or {}
        weights = info.get("weights")
        if weights and Path(str(weights)).is_file():
            return str(weights)
        try:
            from polypviewer.nets.weights import default_weights

            path = default_weights()
        except PolypviewerError:
            path = None
        return str(path) if path else ""

    @staticmethod
    def _devices() -> list[str]:
        import torch

        return ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]

    def _browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Base checkpoint", self.base_edit.text(),
                                              "Checkpoints (*.safetensors *.pth *.pt);;All files (*)")
        if path:
            self.base_edit.setText(path)
            self.out_edit.setText(str(default_output(path)))

    def pick_uncertain(self) -> list[int]:
        """The k most uncertain frames not yet accepted, corrected or flagged (most uncertain
        first); listed in the dialog, and the window goes to the first of them."""
        from polypviewer.core.edits import ReviewState
        from polypviewer.engine.uncertainty import most_uncertain

        host = self.controller.host
        scores = host.uncertainties()
        done = set(self.controller.frames_in((*REVIEWED, ReviewState.FLAGGED)))
        self.picked = most_uncertain(scores, self.pick_k.value(), exclude=done)
        if not self.picked:
            self.pick_label.setText("No unreviewed frame has a prediction yet: Predict the whole source "
                                    "(Ctrl+R) so every frame is ranked, then pick again.")
            return []
        listed = ", ".join(f"{i + 1} ({host.frame_name(i)}, {scores[i]:.2f})" for i in self.picked)
        ranked = (f"ranked {len(scores)} of {host.n} frames"
                  + ("; Predict the whole source (Ctrl+R) to rank them all" if len(scores) < host.n else ""))
        self.pick_label.setText(f"Correct these {len(self.picked)} first (frame (name, uncertainty), most "
                                f"uncertain first): {listed}. {ranked}. J walks them in the window.")
        host.go_to(self.picked[0])
        return self.picked

    # ---- run ---------------------------------------------------------------------------------
    def start(self) -> bool:
        if self.busy():
            return False
        c = self.controller
        rows = c.snapshot(REVIEWED)
        if len(rows) < 2:
            self.status.setText("Fine-tuning needs at least 2 accepted or corrected frames "
                                "(some are held out to prove the change).")
            return False
        if c.project is not None:
            c.save()  # the project file then holds exactly what is trained on
        project_path = str(c.project.path) if c.project is not None else str(c.source_info["path"])
        self._steps, self._losses = [], []
        self._epochs, self._held_dice = [], []
        self.loss_curve.setData([], [])
        self.val_curve.setData([], [])
        self.dice_bars.setOpts(x=[], height=[])
        self.outcome = None
        self.use_button.setEnabled(False)
        worker = FinetuneWorker(
            str(c.source_info["path"]), project_path, rows, self.base_edit.text().strip(),
            self.out_edit.text().strip(), holdout=self.holdout.value(), epochs=self.epochs.value(),
            size=self.input_size.value() or None, max_steps=self.max_steps.value() or None,
            device=self.device.currentText())
        self._run(worker, "polypviewer-finetune",
                  {"progress": self._on_event, "stage": self.status.setText, "done": self._on_done,
                   "failed": self._on_failed})
        return True

    def _on_event(self, ev: dict[str, Any]) -> None:
        if ev["kind"] == "step" and ev["loss"] is not None:
            self._steps.append(float(ev["global_step"]))
            self._losses.append(float(ev["loss"]))
            self.loss_curve.setData(self._steps, self._losses)
            self.status.setText(f"Epoch {ev['epoch'] + 1}/{ev['epochs']}, step {ev['global_step']}: "
                                f"loss {ev['loss']:.4f}")
        elif ev["kind"] == "epoch" and ev.get("held_out_dice") is not None:
            self._epochs.append(float(ev["epoch"] + 1))
            self._held_dice.append(float(ev["held_out_dice"]))
            self.val_curve.setData(self._epochs, self._held_dice)

    def _on_done(self, res: FinetuneResult | None) -> None:
        self._finish()
        self.outcome = res
        if res is None or res.interrupted or res.out is None or res.after is None or res.sha256 is None:
            self.status.setText("Stopped before the end; nothing was written.")
            self.finished_run.emit(None)
            return
        b, a = res.before, res.after
        self.dice_bars.setOpts(x=[0, 1], height=[b["dice"], a["dice"]])
        self.status.setText(
            f"Held-out frames ({len(res.held_out_names)}): Dice {b['dice']:.3f} → {a['dice']:.3f} "
            f"({res.delta_dice:+.3f}), IoU {b['iou']:.3f} → {a['iou']:.3f}; trained on "
            f"{len(res.train_names)} frame(s) in {res.wall_time:.0f} s.\n"
            f"Wrote {res.out} (version {res.sha256[:12]}); the base {res.base.name} is unchanged.")
        c = self.controller
        c.add_model_version(f"{res.base.name} (base)", str(res.base))
        c.add_model_version(f"{res.out.name} (fine-tuned, {res.sha256[:12]})", str(res.out))
        c.host.model_message(finetuned_message(res.sha256))
        self.use_button.setEnabled(True)
        self.finished_run.emit(res)

    def _on_failed(self, message: str) -> None:
        self._finish()
        self.status.setText(message)
        self.run_failed.emit(message)

    def use_new_model(self) -> None:
        """Switch the window to the fine-tuned checkpoint; unedited frames are re-predicted."""
        if self.outcome is not None and self.outcome.out is not None:
            self.controller.host.load_model(None, str(self.outcome.out))
