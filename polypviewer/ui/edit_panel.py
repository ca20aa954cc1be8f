"""The annotation dock's panel: the current frame's review state and correction effort, the N
of grow/shrink, and the counts of every review state in the source."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFormLayout, QGroupBox, QLabel, QSpinBox, QVBoxLayout, QWidget

from polypviewer.core.edits import EditSession, ReviewState
from polypviewer.core.metrics import scores
from polypviewer.ui.elided import ElidedLabel

__all__ = ["EditPanel"]

_FRAME_ROWS = ("model_vs_corrected", "changed", "strokes", "model_vs_gt", "corrected_vs_gt")
# key, row label, what the row means (the label's tooltip)
_ROWS = (("state", "State", "This frame's review state: unreviewed, accepted, corrected, flagged or propagated"),
         ("tool", "Tool", "The editing tool, with the brush radius for the tools that paint"),
         ("model_vs_corrected", "Dice vs model",
          "Dice of the corrected mask against the model's mask (1.000: nothing changed)"),
         ("changed", "Pixels changed", "Pixels your edits changed on this frame (+added / −removed)"),
         ("strokes", "Changes", "Edits on this frame (strokes, fills, polygons, clean-ups): its undo steps"),
         ("model_vs_gt", "Model vs GT", "Dice of the model's mask against the ground truth"),
         ("corrected_vs_gt", "Corrected vs GT", "Dice of the corrected mask against the ground truth"),
         ("counts", "Frames", "How many frames of the source are in each review state"),
         ("project", "Project", "The project file that holds the corrections (full path in its tooltip)"))


class EditPanel(QGroupBox):
    """Rows by key (``value(key)`` reads one): state, tool, model_vs_corrected, changed,
    strokes, model_vs_gt, corrected_vs_gt, counts, project; ``px`` is the grow/shrink N."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Review and edits", parent)
        self.rows: dict[str, QLabel] = {}
        form = QFormLayout()
        # Short row labels, the meaning in their tooltips: a long label column leaves the values a
        # narrow one, they wrap, and on a 900 px tall window the dock scrolled once a frame was edited.
        for key, label, tip in _ROWS:
            # the project's path is elided (full path in its tooltip): a long path never widens the dock
            self.rows[key] = ElidedLabel("–") if key == "project" else QLabel("–")
            self.rows[key].setWordWrap(key != "project")
            self.rows[key].setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            name = QLabel(label)
            name.setToolTip(tip)
            form.addRow(name, self.rows[key])
        self.px = QSpinBox()
        self.px.setRange(1, 100)
        self.px.setValue(3)
        self.px.setSuffix(" px")
        self.px.setToolTip("How far Grow (=) and Shrink (-) move the mask's border")
        self.px.setFocusPolicy(Qt.FocusPolicy.ClickFocus)
        form.addRow("Grow / shrink by", self.px)
        layout = QVBoxLayout(self)
        layout.addLayout(form)

    def value(self, key: str) -> str:
        row = self.rows[key]
        return row.full_text() if isinstance(row, ElidedLabel) else row.text()

    def set(self, key: str, text: str) -> None:
        self.rows[key].setText(text)

    def show_tool(self, name: str, radius: int | None) -> None:
        """The tool, with the brush radius for tools that paint with it."""
        self.set("tool", f"{name} (radius {radius} px)" if radius is not None else name)

    def show_project(self, path: object | None) -> None:
        self.set("project", str(path) if path else "not created yet (first edit creates it)")

    def show_session(self, session: EditSession | None, n_frames: int, index: int | None,
                     gt: np.ndarray | None) -> None:
        """Counts over the ``n_frames`` of the source, then frame ``index``'s state and, once it
        has a mask, its correction statistics (and Dice against ``gt`` when there is one)."""
        if session is None:
            self.set("counts", "–")
            return
        counts = {s: 0 for s in ReviewState}
        for f in range(n_frames):
            counts[session.state(f)] += 1
        self.set("counts", f"{counts[ReviewState.ACCEPTED]} accepted, {counts[ReviewState.CORRECTED]} corrected, "
                           f"{counts[ReviewState.FLAGGED]} flagged, {counts[ReviewState.UNREVIEWED]} unreviewed"
                           + (f", {n} propagated" if (n := counts[ReviewState.PROPAGATED]) else ""))
        if index is None:
            return
        self.set("state", session.state(index).name.lower())
        edits = session.get(index)
        if edits is None:
            for key in _FRAME_ROWS:
                self.set(key, "–")
            return
        st = edits.stats()
        self.set("model_vs_corrected", f"{st.dice_model_vs_corrected:.3f}")
        self.set("changed", f"{st.pixels_changed} (+{st.pixels_added} / −{st.pixels_removed})")
        self.set("strokes", str(st.strokes))
        if gt is not None:
            self.set("model_vs_gt", f"{scores(edits.model_mask, gt)['dice']:.3f}")
            self.set("corrected_vs_gt", f"{scores(edits.mask, gt)['dice']:.3f}")
        else:
            self.set("model_vs_gt", "– (no ground truth)")
            self.set("corrected_vs_gt", "– (no ground truth)")
