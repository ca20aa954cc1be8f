"""Export dialog (Ctrl+E): the reviewed frames' corrected masks in Kvasir-SEG layout.

Which frames: accepted + corrected (default) or every frame that has a mask. The export
runs :func:`polypviewer.io.export.export_kvasir` on a worker thread (images read from the
source there; masks are copies taken on the GUI thread when the export starts), writes the
per-frame correction statistics to ``stats.csv``, shows a progress bar and the verification
line, and can be cancelled (the pairs already written stay valid).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PySide6.QtCore import Signal, Slot
from PySide6.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QRadioButton,
    QVBoxLayout,
    QWidget,
)

from polypviewer.core.edits import ReviewState
from polypviewer.core.errors import PolypviewerError, describe_exception
from polypviewer.ui.worker_dialog import JobWorker, MaskRow, WorkerDialog

if TYPE_CHECKING:
    from polypviewer.io.export import ExportReport
    from polypviewer.io.sources import FrameSource

__all__ = ["ExportDialog", "ExportWorker", "REVIEWED", "ALL_STATES"]

REVIEWED = (ReviewState.ACCEPTED, ReviewState.CORRECTED)
ALL_STATES = tuple(ReviewState)


class _Cancelled(Exception):
    pass


class ExportWorker(JobWorker):
    """Runs one export on its thread. ``rows`` = ``(frame, name, mask, stats)`` snapshots."""

    progress = Signal(int, str)
    done = Signal(object)  # ExportReport
    failed = Signal(str)

    def __init__(self, source_path: str, rows: list[MaskRow], out_dir: str, mask_format: str,
                 overwrite: bool) -> None:
        super().__init__()
        self.source_path, self.rows, self.out_dir = source_path, rows, out_dir
        self.mask_format, self.overwrite = mask_format, overwrite

    @Slot()
    def run(self) -> None:
        from polypviewer.io.export import export_kvasir
        from polypviewer.io.sources import open_source

        skipped: list[str] = []

        def items(src: FrameSource) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
            for frame, name, mask, _ in self.rows:
                try:
                    image = src.frame(frame)
                except PolypviewerError as exc:  # one unreadable frame: named, the rest goes on
                    skipped.append(str(exc))
                    continue
                yield name, image, mask

        def progress(k: int, name: str) -> None:
            if self.stop.is_set():
                raise _Cancelled
            self.progress.emit(k, name)

        try:
            with open_source(self.source_path) as src:
                report = export_kvasir(self.out_dir, items(src), mask_format=self.mask_format,
                                       overwrite=self.overwrite, stats={r[1]: r[3] for r in self.rows},
                                       on_progress=progress)
        except _Cancelled:
            self.failed.emit("export cancelled; the pairs already written are complete and valid")
            return
        except PolypviewerError as exc:
            self.failed.emit(str(exc))
            return
        except Exception as exc:  # noqa: BLE001 - shown as one line, never ends the app
            self.failed.emit(f"{self.out_dir}: export failed ({describe_exception(exc, with_type=True)})")
            return
        report.errors[:0] = skipped
        self.done.emit(report)


class ExportDialog(WorkerDialog):
    """Signals: ``exported(report)``, ``export_failed(message)``."""

    exported = Signal(object)
    export_failed = Signal(str)

    def __init__(self, controller: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Export corrected masks (Kvasir-SEG layout)")
        self.controller = controller
        self.report: ExportReport | None = None
        info = controller.source_info or {}
        src = Path(str(info.get("path", "export")))
        self.out_edit = QLineEdit(str(Path.home() / "polypviewer-exports" / f"{src.stem}-kvasir"))
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        n_rev = len(controller.frames_in(REVIEWED))
        n_all = len(controller.frames_in(ALL_STATES))
        self.reviewed = QRadioButton(f"Accepted + corrected frames ({n_rev})")
        self.all_frames = QRadioButton(f"Every frame with a mask, any state ({n_all})")
        self.reviewed.setChecked(True)
        group = QButtonGroup(self)
        group.addButton(self.reviewed)
        group.addButton(self.all_frames)
        self.mask_format = QComboBox()
        self.mask_format.addItems(["png", "jpg"])
        self.mask_format.setToolTip("PNG: lossless 0/255 (recommended). JPG: like the original Kvasir-SEG, lossy")
        self.overwrite = QCheckBox("Add to a folder that is not empty (same names are replaced)")
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.start_button = QPushButton("Export")
        self.start_button.setDefault(True)
        self.start_button.clicked.connect(self.start)
        self.cancel_button = QPushButton("Close")
        self.cancel_button.clicked.connect(self._cancel_or_close)
        row = QHBoxLayout()
        row.addWidget(self.out_edit, 1)
        row.addWidget(browse)
        form = QFormLayout()
        form.addRow("Folder", row)
        form.addRow("Frames", self.reviewed)
        form.addRow("", self.all_frames)
        form.addRow("Mask format", self.mask_format)
        form.addRow("", self.overwrite)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        buttons.addWidget(self.start_button)
        buttons.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addLayout(buttons)
        self.resize(640, 260)

    def _browse(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Export folder", self.out_edit.text())
        if path:
            self.out_edit.setText(path)

    def start(self) -> bool:
        """Start the export with the dialog's choices; False when there is nothing to do."""
        if self.busy():
            return False
        states = REVIEWED if self.reviewed.isChecked() else ALL_STATES
        rows = self.controller.snapshot(states)
        if not rows:
            self.status.setText("Nothing to export: no frame in the chosen states has a mask yet.")
            return False
        out = self.out_edit.text().strip()
        if not out:
            self.status.setText("Choose a folder to export to.")
            return False
        self.progress.setRange(0, len(rows))
        self.progress.setValue(0)
        self.status.setText(f"Exporting {len(rows)} frame(s) to {out}…")
        self.report = None
        worker = ExportWorker(str(self.controller.source_info["path"]), rows, out,
                              self.mask_format.currentText(), self.overwrite.isChecked())
        self._run(worker, "polypviewer-export",
                  {"progress": self._on_progress, "done": self._on_done, "failed": self._on_failed})
        return True

    def _on_progress(self, k: int, name: str) -> None:
        self.progress.setValue(k)
        self.status.setText(f"Exported {k} / {self.progress.maximum()}: {name}")

    def _on_done(self, report: ExportReport) -> None:
        self._finish()
        self.report = report
        self.progress.setValue(len(report.written))
        lines = [report.summary] + [f"  {e}" for e in report.errors[:5]]
        self.status.setText("\n".join(lines))
        if report.errors:
            self.controller.message.emit(report.summary)
        else:
            self.controller.host.notify(report.summary, 8000)
        self.exported.emit(report)

    def _on_failed(self, message: str) -> None:
        self._finish()
        self.status.setText(message)
        self.export_failed.emit(message)
