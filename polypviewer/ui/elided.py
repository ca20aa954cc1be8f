"""A one-line label that never widens its panel: long text (a path, a weights name) is elided
to the width it is given, and the full text is its tooltip.

A plain ``QLabel`` asks for the width of its longest word, so one long path without spaces
widens the dock that holds it and moves everything beside it (issue 16 §2). This label asks
for a small fixed minimum and a preferred width, takes what the layout gives, and elides.
"""

from __future__ import annotations

from PySide6.QtCore import QSize, Qt
from PySide6.QtWidgets import QLabel, QSizePolicy, QWidget

__all__ = ["ElidedLabel"]


class ElidedLabel(QLabel):
    """``setText(text)`` keeps ``text`` (``full_text()``), shows it elided (the middle, by
    default: a path keeps its start and its file name) and puts it in the tooltip."""

    def __init__(self, text: str = "", parent: QWidget | None = None, *,
                 mode: Qt.TextElideMode = Qt.TextElideMode.ElideMiddle, min_width: int = 60) -> None:
        super().__init__(parent)
        self._full = ""
        self._mode = mode
        self._min_width = min_width
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Preferred)
        self.setWordWrap(False)
        self.setText(text)

    def full_text(self) -> str:
        return self._full

    def setText(self, text: str) -> None:
        self._full = str(text)
        self.setToolTip(self._full if self._full not in ("", "–") else "")
        self._elide()

    def minimumSizeHint(self) -> QSize:
        return QSize(self._min_width, super().minimumSizeHint().height())

    def sizeHint(self) -> QSize:
        return QSize(self._min_width, super().sizeHint().height())

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        self._elide()

    def _elide(self) -> None:
        width = max(self.contentsRect().width(), 1)
        super().setText(self.fontMetrics().elidedText(self._full, self._mode, width))
