"""Labels that never widen their panel: ``ElidedLabel`` (one line, long text elided to the
width it is given, full text in the tooltip) and ``WrappedLabel`` (several lines, broken at
word boundaries and, where one word is wider than the label, inside it).

A plain ``QLabel`` asks for the width of its longest word, even with word wrap, so one long
path, weights file or engine name without spaces widens the dock that holds it and pushes
its right edge out of view (issue 16 §2, §3). These labels ask for a small fixed minimum
width, take what the layout gives, and fit their text into it.
"""

from __future__ import annotations

from PySide6.QtCore import QSize, Qt
from PySide6.QtGui import QResizeEvent, QTextLayout, QTextOption
from PySide6.QtWidgets import QLabel, QSizePolicy, QWidget

__all__ = ["ElidedLabel", "WrappedLabel"]


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

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        self._elide()

    def _elide(self) -> None:
        width = max(self.contentsRect().width(), 1)
        super().setText(self.fontMetrics().elidedText(self._full, self._mode, width))


class WrappedLabel(QLabel):
    """A plain-text label that wraps to the width it is given: at word boundaries, and inside
    a word only where that word alone is wider than the label. At most ``max_lines`` lines
    (0: no limit): a longer text ends its last line with "…" and is whole in the tooltip. It is
    always at least ``reserve_lines`` tall, so a text that grows up to that many lines moves
    nothing below it. ``text()`` is the text as set (the lines on screen: ``shown_text()``);
    its height follows its width (height for width); its minimum width is ``min_width``."""

    def __init__(self, text: str = "", parent: QWidget | None = None, *, min_width: int = 60,
                 max_lines: int = 0, reserve_lines: int = 1) -> None:
        super().__init__(parent)
        self._full = ""
        self._min_width = min_width
        self._max_lines = max(0, int(max_lines))
        self._reserve = max(1, int(reserve_lines))
        self._wrapped_for: tuple[int, str] | None = None
        policy = QSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Preferred)
        policy.setHeightForWidth(True)
        self.setSizePolicy(policy)
        self.setWordWrap(False)  # the lines are broken here, never by QLabel (which would not break a word)
        self.setTextFormat(Qt.TextFormat.PlainText)
        self.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
        self.setText(text)

    def text(self) -> str:
        return self._full

    def full_text(self) -> str:
        return self._full

    def shown_text(self) -> str:
        """The text as drawn: the lines it is broken into at its current width."""
        return super().text()

    def truncated(self) -> bool:
        """True when the text needs more than ``max_lines`` lines at the current width."""
        return bool(self._max_lines) and len(self._lines(self._text_width())) > self._max_lines

    def setText(self, text: str) -> None:
        self._full = str(text)
        self._wrapped_for = None
        self._wrap()
        self.updateGeometry()

    def _extra(self) -> tuple[int, int]:
        """Horizontal and vertical space around the text (frame, margins, style-sheet padding)."""
        m = self.contentsMargins()
        pad = 2 * (self.frameWidth() + self.margin())
        return m.left() + m.right() + pad, m.top() + m.bottom() + pad

    def _text_width(self) -> int:
        return max(self.contentsRect().width() - 2 * self.margin(), 1)

    def _lines(self, width: int) -> list[str]:
        """The text broken into lines of at most ``width`` pixels (no line limit)."""
        text = self._full.replace("\r\n", "\n").replace("\n", "\u2028")  # a forced break stays one
        layout = QTextLayout(text, self.font())
        option = QTextOption()
        option.setWrapMode(QTextOption.WrapMode.WrapAtWordBoundaryOrAnywhere)
        layout.setTextOption(option)
        layout.beginLayout()
        lines: list[str] = []
        while True:
            line = layout.createLine()
            if not line.isValid():
                break
            line.setLineWidth(max(width, 1))
            lines.append(text[line.textStart():line.textStart() + line.textLength()].rstrip(" \u2028"))
        layout.endLayout()
        return lines or [""]

    def _wrap(self) -> None:
        width = self._text_width()
        if self._wrapped_for == (width, self._full):
            return
        self._wrapped_for = (width, self._full)
        lines = self._lines(width)
        cut = bool(self._max_lines) and len(lines) > self._max_lines
        if cut:
            rest = " ".join(lines[self._max_lines - 1:])
            lines = lines[:self._max_lines - 1] + [
                self.fontMetrics().elidedText(rest + " …", Qt.TextElideMode.ElideRight, width)]
        self.setToolTip(self._full if cut else "")
        super().setText("\n".join(lines))

    def _shown_lines(self, width: int) -> int:
        n = len(self._lines(width))
        return max(self._reserve, min(n, self._max_lines) if self._max_lines else n)

    def heightForWidth(self, width: int) -> int:
        dx, dy = self._extra()
        return self._shown_lines(width - dx) * self.fontMetrics().lineSpacing() + dy

    def hasHeightForWidth(self) -> bool:
        return True

    def minimumSizeHint(self) -> QSize:
        return QSize(self._min_width, self._reserve * self.fontMetrics().lineSpacing() + self._extra()[1])

    def sizeHint(self) -> QSize:
        dx, _dy = self._extra()
        natural = max((self.fontMetrics().horizontalAdvance(s) for s in self._full.splitlines() or [""]),
                      default=0) + dx
        width = max(self._min_width, min(natural, 4 * self._min_width))
        return QSize(width, self.heightForWidth(width))

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        self._wrap()
