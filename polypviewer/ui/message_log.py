"""The message log: every line the window showed the user, with its time (View > Message log).

The status bar shows one line at a time and the next one replaces it; the log keeps them
all: problems the window reported (``MainWindow.report``), passing status lines
(``notify``), what the model panel said when a model loaded (engine and precision, and
why), and the engine's own warnings, which go through :mod:`logging` (loggers under
``polypviewer``) from whatever thread they happen on. :class:`LogBridge` is the logging
handler that carries them to the GUI thread through a queued signal.
"""

from __future__ import annotations

import logging
import time

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtGui import QFontDatabase
from PySide6.QtWidgets import (
    QDockWidget,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

__all__ = ["MessageLog", "LogBridge", "LEVELS"]

LEVELS = ("error", "warning", "info")
MAX_ENTRIES = 5000  # oldest lines go first (a long session stays small)


class LogBridge(QObject):
    """A :class:`logging.Handler` (``handler``) whose records arrive as ``record(level, text)``
    on the thread this object lives on (the GUI thread), whichever thread logged them."""

    record = Signal(str, str)

    def __init__(self, parent: QObject | None = None, logger: str = "polypviewer",
                 level: int = logging.WARNING) -> None:
        super().__init__(parent)
        bridge = self

        class _Handler(logging.Handler):
            def emit(self, rec: logging.LogRecord) -> None:
                try:
                    text = " ".join(self.format(rec).split())
                    name = "error" if rec.levelno >= logging.ERROR else (
                        "warning" if rec.levelno >= logging.WARNING else "info")
                    bridge.record.emit(name, f"{rec.name.removeprefix('polypviewer.')}: {text}")
                except RuntimeError:  # the window (and this bridge) is gone
                    pass

        self.handler = _Handler(level)
        self.handler.setFormatter(logging.Formatter("%(message)s"))
        self._logger = logging.getLogger(logger)
        self._logger.addHandler(self.handler)

    def detach(self) -> None:
        self._logger.removeHandler(self.handler)


class MessageLog(QDockWidget):
    """A dock listing ``(time, level, text)`` entries, newest last; ``changed(count)``."""

    changed = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Message log", parent)
        self.setObjectName("messageLogDock")
        self.entries: list[tuple[str, str, str]] = []
        self.view = QPlainTextEdit()
        self.view.setReadOnly(True)
        self.view.setMaximumBlockCount(MAX_ENTRIES)
        self.view.setLineWrapMode(QPlainTextEdit.LineWrapMode.WidgetWidth)
        self.view.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.view.setPlaceholderText("Every status line, warning and error shown in this session, with its time.")
        self.summary = QLabel("")
        self.summary.setObjectName("note")
        clear = QPushButton("Clear")
        clear.setToolTip("Empty the log (the lines are not written anywhere else)")
        clear.clicked.connect(self.clear)
        body = QWidget()
        v = QVBoxLayout(body)
        v.setContentsMargins(4, 4, 4, 4)
        v.addWidget(self.view, 1)
        row = QHBoxLayout()
        row.addWidget(self.summary, 1)
        row.addWidget(clear)
        v.addLayout(row)
        self.setWidget(body)
        self.setAllowedAreas(Qt.DockWidgetArea.BottomDockWidgetArea | Qt.DockWidgetArea.RightDockWidgetArea
                             | Qt.DockWidgetArea.LeftDockWidgetArea)
        self.toggleViewAction().setText("&Message log")
        self.toggleViewAction().setToolTip("Every status line, warning and error of this session, with its time")
        self._update_summary()

    def add(self, level: str, text: str) -> None:
        """Append one line (``level`` one of :data:`LEVELS`; the text is kept on one line)."""
        level = level if level in LEVELS else "info"
        line = " ".join(str(text).split())
        stamp = time.strftime("%H:%M:%S")
        self.entries.append((stamp, level, line))
        del self.entries[:-MAX_ENTRIES]
        self.view.appendPlainText(f"{stamp}  {level.upper():7s}  {line}")
        self._update_summary()
        self.changed.emit(len(self.entries))

    def count(self, level: str | None = None) -> int:
        return sum(1 for e in self.entries if level is None or e[1] == level)

    def texts(self, level: str | None = None) -> list[str]:
        return [e[2] for e in self.entries if level is None or e[1] == level]

    def clear(self) -> None:
        self.entries.clear()
        self.view.clear()
        self._update_summary()
        self.changed.emit(0)

    def _update_summary(self) -> None:
        err, warn = self.count("error"), self.count("warning")
        self.summary.setText(f"{len(self.entries)} lines: {err} errors, {warn} warnings")
