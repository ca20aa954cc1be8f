"""Help > Keys: every shortcut of the running window (the user's keymap applied), from the
same table the guide's "Keyboard and mouse" section is generated from
(:func:`polypviewer.ui.actions.window_keymap_rows`), and the keymap's problems, if any."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QDialogButtonBox,
    QHeaderView,
    QLabel,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from polypviewer.ui.actions import window_keymap_rows


class KeysDialog(QDialog):
    """A read-only table of (keys, action) rows; ``rows()`` returns what it shows."""

    def __init__(self, window: QWidget, problems: list[str], settings_file: str) -> None:
        super().__init__(window)
        self.setWindowTitle("Keys")
        self.setObjectName("keysDialog")
        self.problems = QLabel("")
        self.problems.setObjectName("message")
        self.problems.setProperty("error", True)
        self.problems.setWordWrap(True)
        self.problems.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.table = QTableWidget(0, 2)
        self.table.setHorizontalHeaderLabels(["Keys", "Action"])
        self.table.verticalHeader().hide()
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        self.table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        self.table.horizontalHeader().setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        note = QLabel(f"Change a shortcut in {settings_file}, in its \"keymap\" object, by action name "
                      "(see the user guide, \"Keyboard and mouse\"); it applies at the next start.")
        note.setWordWrap(True)
        note.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.close)
        layout = QVBoxLayout(self)
        layout.addWidget(self.problems)
        layout.addWidget(self.table, 1)
        layout.addWidget(note)
        layout.addWidget(buttons)
        self.resize(560, 640)
        self.refresh(window, problems)

    def refresh(self, window: QWidget, problems: list[str]) -> None:
        """Fill the table from the window's actions as they are now."""
        self.problems.setText("\n".join(problems))
        self.problems.setVisible(bool(problems))
        rows = window_keymap_rows(window)
        self.table.setRowCount(len(rows))
        for r, (keys, text) in enumerate(rows):
            for c, value in enumerate((keys, text)):
                self.table.setItem(r, c, QTableWidgetItem(value))

    def rows(self) -> list[tuple[str, str]]:
        return [(self._text(r, 0), self._text(r, 1)) for r in range(self.table.rowCount())]

    def _text(self, row: int, column: int) -> str:
        item = self.table.item(row, column)
        return item.text() if item is not None else ""
