"""A dialog that runs one long job (export, fine-tune) on its own QThread.

The worker is a QObject with a ``run`` slot, a ``stop`` event (``threading.Event``) and
signals; results reach the dialog only through those signals. The base class owns the thread's
life: start, finish, cancel, and stopping it before the dialog (or the window) closes, so no
"QThread: Destroyed while thread is still running" can happen.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np
from PySide6.QtCore import QObject, QThread
from PySide6.QtGui import QCloseEvent
from PySide6.QtWidgets import QDialog, QLabel, QPushButton, QWidget

# What the dialogs' workers read: ``(frame, name, mask copy, statistics row)`` per frame, taken
# on the GUI thread (``AnnotationController.snapshot``).
MaskRow = tuple[int, str, np.ndarray, dict[str, Any]]


class JobWorker(QObject):
    """The worker a :class:`WorkerDialog` runs: ``run`` on the dialog's thread (a subclass
    defines it and its signals); ``stop`` is set to ask it to end early."""

    def __init__(self) -> None:
        super().__init__()
        self.stop = threading.Event()

    def run(self) -> None:
        raise NotImplementedError


class WorkerDialog(QDialog):
    """Subclasses create ``start_button``, ``cancel_button`` and ``status`` and call :meth:`_run`."""

    start_button: QPushButton
    cancel_button: QPushButton
    status: QLabel
    stopping_message = ""  # shown when Cancel is pressed while the job runs

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._thread: QThread | None = None
        self._worker: JobWorker | None = None

    def busy(self) -> bool:
        return self._thread is not None and self._thread.isRunning()

    def _run(self, worker: JobWorker, name: str, connections: dict[str, Callable[..., Any]]) -> None:
        """Move ``worker`` to a new thread, connect ``{signal name: slot}`` and start it."""
        self._worker = worker
        self._thread = QThread()
        self._thread.setObjectName(name)
        worker.moveToThread(self._thread)
        self._thread.started.connect(worker.run)
        for signal, slot in connections.items():
            getattr(worker, signal).connect(slot)
        self.start_button.setEnabled(False)
        self.cancel_button.setText("Cancel")
        self._thread.start()

    def _finish(self) -> None:
        if self._thread is not None:
            self._thread.quit()  # run() has returned; quit() here, a queued one would wait on us
            self._thread.wait()
        self._thread, self._worker = None, None
        self.start_button.setEnabled(True)
        self.cancel_button.setText("Close")

    def _cancel_or_close(self) -> None:
        if self.busy() and self._worker is not None:
            self._worker.stop.set()
            if self.stopping_message:
                self.status.setText(self.stopping_message)
        else:
            self.close()

    def stop_worker(self) -> None:
        """Ask a running job to stop and wait for its thread (window shutdown)."""
        if self._worker is not None:
            self._worker.stop.set()
        if self._thread is not None:
            self._thread.quit()
            self._thread.wait()

    def closeEvent(self, event: QCloseEvent) -> None:
        if self.busy():  # closing while running cancels it; the thread ends before the dialog
            self.stop_worker()
        super().closeEvent(event)
