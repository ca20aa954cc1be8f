"""Side panels and the navigation bar. Panels show state and emit what the user asked for;
they never talk to workers or to each other (the main window wires them)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor, QFont, QIcon, QPaintEvent, QPalette
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QColorDialog,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QRadioButton,
    QSizePolicy,
    QSlider,
    QStyle,
    QStyleOptionComboBox,
    QStylePainter,
    QTableWidget,
    QTableWidgetItem,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from polypviewer.core.metrics import SCORE_NAMES
from polypviewer.core.overlay import RGB, OverlayStyle
from polypviewer.ui.elided import ElidedLabel, WrappedLabel

# The model panel's wrapped lines: "Why" always has room for WHY_LINES (a longer reason ends in
# "…", whole in its tooltip and in the message log), the message for up to MESSAGE_LINES; the
# panel's height is therefore known before any model runs, and the side docks are fitted to it.
WHY_LINES = 4
MESSAGE_LINES = 4
COMBO_CHARS = 6  # a side-panel combo box asks for this many characters' width, never its longest item's
SCORE_LABELS = {"dice": "Dice", "iou": "IoU", "precision": "Precision", "recall": "Recall",
                "accuracy": "Accuracy", "f2": "F2"}


NAME_WIDTH = 170  # the frame name's fixed width in the navigation bar

# A column pair of means for MetricsPanel.set_means: (seen means, frames seen, whole-source
# means, frames scored), as core.review's seen_means() + whole_means() give them.
Means = tuple[Mapping[str, float] | None, int, Mapping[str, float] | None, int]


def _fmt(value: float | None) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


class ModelPanel(QGroupBox):
    """Network choice, weights, and what inference runs on (device, precision, measured fps)."""

    model_chosen = Signal(str)  # a registry name: build it with the shipped/default weights
    weights_requested = Signal()  # the user wants to pick a checkpoint file
    random_requested = Signal(str)  # the user asks for random weights explicitly
    backend_chosen = Signal(str)  # "auto" or an engine.policy backend name

    BACKENDS = (("auto", "Engine: auto (fastest exact, measured)"), ("torch", "Engine: PyTorch"),
                ("openvino", "Engine: OpenVINO"), ("onnxruntime", "Engine: ONNX Runtime"))

    def __init__(self, models: list[str], parent: QWidget | None = None) -> None:
        super().__init__("Model", parent)
        self.combo = NarrowCombo()
        for name in models:  # the item's data is the registry name; its text says if it is ready
            self.combo.addItem(name, name)
        self.combo.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.combo.activated.connect(lambda _i: self.model_chosen.emit(self.current_model()))
        self.combo.currentIndexChanged.connect(lambda _i: self._combo_tip())
        self._ready: set[str] | None = None  # None: not told (every network offered as is)
        self.load_button = QPushButton("Load weights…")
        self.load_button.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.load_button.clicked.connect(self.weights_requested)
        self.random_button = QPushButton("Use random weights")
        self.random_button.setToolTip("Run the chosen network untrained (its masks are noise); "
                                      "only to try the app without weights")
        self.random_button.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.random_button.clicked.connect(lambda: self.random_requested.emit(self.current_model()))
        self.random_button.hide()
        self.backend_combo = NarrowCombo()
        for key, text in self.BACKENDS:
            self.backend_combo.addItem(text, key)
        self.backend_combo.setToolTip("Which inference engine runs the network. auto: the fastest path that "
                                      "agrees with fp32 on this CPU, timed once per network and weights in the "
                                      "background (PyTorch on a GPU)")
        self.backend_combo.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.backend_combo.activated.connect(lambda _i: self.backend_chosen.emit(self.current_backend()))
        # the panel's texts fit the dock's width, never widen it: a long weights file, version
        # or engine path is elided (full text in the tooltip); "Why" and the message wrap, inside
        # a word too where one word is wider than the panel
        self.message = WrappedLabel("", max_lines=MESSAGE_LINES)
        self.message.setObjectName("message")
        self.info: dict[str, QLabel] = {}
        form = QFormLayout()
        form.setLabelAlignment(Qt.AlignmentFlag.AlignRight)
        form.setRowWrapPolicy(QFormLayout.RowWrapPolicy.DontWrapRows)
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        for key, label in (("weights", "Weights"), ("version", "Version"), ("runs_on", "Runs on"),
                           ("why", "Why"), ("fps", "Speed")):
            self.info[key] = (WrappedLabel("–", max_lines=WHY_LINES, reserve_lines=WHY_LINES) if key == "why"
                              else ElidedLabel("–"))
            self.info[key].setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            form.addRow(label, self.info[key])
        for key in ("device", "precision", "backend"):  # shown together in "Runs on"
            self.info[key] = QLabel("–")
        top = QHBoxLayout()  # the network and its weights on one row: the panel fits a 900 px screen
        top.addWidget(self.combo, 1)
        top.addWidget(self.load_button)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.backend_combo)
        layout.addLayout(form)
        layout.addWidget(self.message)
        layout.addWidget(self.random_button, 0, Qt.AlignmentFlag.AlignLeft)  # shown with the message that offers it

    NO_WEIGHTS = "no trained weights"

    def current_model(self) -> str:
        """The registry name of the network selected in the combo box."""
        return str(self.combo.currentData() or self.combo.currentText())

    def current_backend(self) -> str:
        return str(self.backend_combo.currentData())

    def select_backend(self, name: str) -> None:
        i = self.backend_combo.findData(name)
        if i >= 0:
            self.backend_combo.setCurrentIndex(i)

    def select_model(self, name: str) -> None:
        i = self.combo.findData(name)
        if i >= 0:
            self.combo.setCurrentIndex(i)

    def set_models(self, models: list[str], ready: set[str]) -> None:
        """List ``models`` (registry names), keeping the selected one where it is listed, and
        mark which are ``ready`` (see :meth:`set_ready`)."""
        current = self.current_model()
        self.combo.blockSignals(True)
        self.combo.clear()
        for name in models:
            self.combo.addItem(name, name)
        self.combo.blockSignals(False)
        self.select_model(current)
        self.set_ready(ready)

    def set_ready(self, ready: set[str]) -> None:
        """Mark which networks have trained weights here (shipped or fine-tuned); the others
        read "NAME — no trained weights" and their tooltip says how to give them some."""
        self._ready = set(ready)
        for i in range(self.combo.count()):
            name = str(self.combo.itemData(i))
            ok = name in self._ready
            self.combo.setItemText(i, name if ok else f"{name} — {self.NO_WEIGHTS}")
            self.combo.setItemData(i, "" if ok else f"{name} has {self.NO_WEIGHTS} here: choose it, then "
                                   "Load weights… (Ctrl+L) with a checkpoint for it",
                                   Qt.ItemDataRole.ToolTipRole)
        self._combo_tip()

    def _combo_tip(self) -> None:
        """The model combo's tooltip: the chosen network's full entry (the box may elide it)."""
        i = self.combo.currentIndex()
        tip = self.combo.itemData(i, Qt.ItemDataRole.ToolTipRole) if i >= 0 else ""
        self.combo.setToolTip(tip or self.combo.currentText())

    def ready_models(self) -> set[str]:
        return set(self._ready or ())

    def is_ready(self, name: str) -> bool:
        return self._ready is None or name in self._ready

    def set_info(self, info: Mapping[str, Any] | None) -> None:
        info = info or {}
        if info.get("model"):
            self.select_model(str(info["model"]))
        weights = info.get("weights")
        self.info["weights"].setText(str(weights).rsplit("/", 1)[-1] if weights else "random init")
        self.info["weights"].setToolTip(str(weights or ""))
        for key in ("version", "device", "precision", "backend"):
            self.info[key].setText(str(info.get(key, "–")))
        runs_on = " · ".join(str(info.get(k, "–")) for k in ("device", "precision", "backend"))
        self.info["runs_on"].setText(runs_on)
        self.info["runs_on"].setToolTip("\n".join(t for t in (runs_on, str(info.get("path") or "")) if t))
        self.info["why"].setText(str(info.get("why", "–")))

    def set_fps(self, fps: float | None) -> None:
        self.info["fps"].setText("–" if fps is None else f"{fps:.1f} frames/s")

    def set_message(self, text: str, *, offer_random: bool = False, error: bool = False) -> None:
        self.message.setText(text)
        self.message.setProperty("error", error)
        self.message.style().unpolish(self.message)
        self.message.style().polish(self.message)
        self.random_button.setVisible(offer_random)


class OverlayPanel(QGroupBox):
    """Threshold, per-layer colour and opacity, fill/outline, disagreement."""

    style_changed = Signal(object)  # OverlayStyle
    threshold_changed = Signal(float)

    def __init__(self, style: OverlayStyle, threshold: float = 0.5, parent: QWidget | None = None) -> None:
        super().__init__("Overlay", parent)
        self._style = style
        self.threshold = QSlider(Qt.Orientation.Horizontal)
        self.threshold.setRange(1, 99)
        self.threshold.setValue(round(threshold * 100))
        self.threshold.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.threshold.setToolTip("Mask threshold: a pixel is polyp where the model's probability is at "
                                  "least this value; the mask, the metrics and the timeline follow at once "
                                  "(keys: Raise / Lower threshold, steps of 0.05)")
        self.threshold_label = QLabel(f"{threshold:.2f}")
        self.threshold.valueChanged.connect(self._threshold_moved)
        self.pred_box = QCheckBox("Prediction")
        self.gt_box = QCheckBox("Ground truth")
        self.pred_opacity = self._opacity_slider(style.pred_opacity)
        self.gt_opacity = self._opacity_slider(style.gt_opacity)
        self.pred_color = self._color_button(style.pred_color)
        self.gt_color = self._color_button(style.gt_color)
        self.filled = QRadioButton("Filled")
        self.outline = QRadioButton("Outline")
        self.disagree = QCheckBox("Disagreement: TP / FP / FN")
        for w in (self.pred_box, self.gt_box, self.filled, self.outline, self.disagree):
            w.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.legend = QLabel()
        self.legend.setObjectName("legend")
        self.set_style(style)
        for box in (self.pred_box, self.gt_box, self.outline, self.disagree):
            box.toggled.connect(self._emit)
        for s in (self.pred_opacity, self.gt_opacity):
            s.valueChanged.connect(self._emit)
        self.pred_color.clicked.connect(lambda: self._pick("pred_color", self.pred_color))
        self.gt_color.clicked.connect(lambda: self._pick("gt_color", self.gt_color))
        grid = QFormLayout()
        row = QHBoxLayout()
        row.addWidget(self.threshold, 1)
        row.addWidget(self.threshold_label)
        grid.addRow("Threshold", row)
        for box, color, op in ((self.pred_box, self.pred_color, self.pred_opacity),
                               (self.gt_box, self.gt_color, self.gt_opacity)):
            line = QHBoxLayout()
            line.addWidget(color)
            line.addWidget(op, 1)
            grid.addRow(box, line)
        modes = QHBoxLayout()
        modes.addWidget(self.filled)
        modes.addWidget(self.outline)
        layout = QVBoxLayout(self)
        layout.addLayout(grid)
        layout.addLayout(modes)
        layout.addWidget(self.disagree)
        layout.addWidget(self.legend)

    @staticmethod
    def _opacity_slider(value: float) -> QSlider:
        s = QSlider(Qt.Orientation.Horizontal)
        s.setRange(0, 100)
        s.setValue(round(value * 100))
        s.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        s.setToolTip("opacity")
        return s

    @staticmethod
    def _color_button(rgb: RGB) -> QToolButton:
        b = QToolButton()
        b.setFixedSize(22, 18)
        b.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        b.setStyleSheet(f"background: rgb{tuple(rgb)}; border: 1px solid #555;")
        b.setToolTip("colour")
        return b

    def _pick(self, field: str, button: QToolButton) -> None:
        current = QColor(*getattr(self._style, field))
        color = QColorDialog.getColor(current, self, "Overlay colour")
        if color.isValid():
            rgb = (color.red(), color.green(), color.blue())
            button.setStyleSheet(f"background: rgb{rgb}; border: 1px solid #555;")
            self._style = self._style.with_(**{field: rgb})
            self.style_changed.emit(self._style)

    def _threshold_moved(self, value: int) -> None:
        self.threshold_label.setText(f"{value / 100:.2f}")
        self.threshold_changed.emit(value / 100)

    def threshold_value(self) -> float:
        return self.threshold.value() / 100

    def set_threshold(self, value: float) -> None:
        self.threshold.setValue(round(value * 100))

    def set_has_gt(self, has_gt: bool, reason: str = "") -> None:
        """Enable the ground-truth controls; without ground truth they are disabled and say
        ``reason`` in their tooltip (the disagreement view would call every polyp a false positive)."""
        for w in (self.gt_box, self.gt_color, self.gt_opacity, self.disagree):
            w.setEnabled(has_gt)
        self.disagree.setToolTip("Colour true positives, false positives and false negatives"
                                 if has_gt else reason)
        self.gt_box.setToolTip("" if has_gt else reason)

    def overlay_style(self) -> OverlayStyle:
        """The overlay's style (not ``style()``: that is the widget's QStyle)."""
        return self._style

    def set_style(self, style: OverlayStyle) -> None:
        """Show ``style`` without emitting (the window calls this after a key toggled it)."""
        self._style = style
        widgets = (self.pred_box, self.gt_box, self.filled, self.outline, self.disagree,
                   self.pred_opacity, self.gt_opacity)
        for w in widgets:
            w.blockSignals(True)
        self.pred_box.setChecked(style.show_pred)
        self.gt_box.setChecked(style.show_gt)
        self.filled.setChecked(not style.outline)
        self.outline.setChecked(style.outline)
        self.disagree.setChecked(style.disagreement)
        self.pred_opacity.setValue(round(style.pred_opacity * 100))
        self.gt_opacity.setValue(round(style.gt_opacity * 100))
        for w in widgets:
            w.blockSignals(False)
        if style.disagreement:
            self.legend.setText(_swatch(style.tp_color, "TP") + _swatch(style.fp_color, "FP")
                                + _swatch(style.fn_color, "FN"))
        else:
            self.legend.setText(_swatch(style.pred_color, "prediction") + _swatch(style.gt_color, "ground truth"))

    def _emit(self) -> None:
        self.set_style(self._style.with_(
            show_pred=self.pred_box.isChecked(), show_gt=self.gt_box.isChecked(),
            outline=self.outline.isChecked(), disagreement=self.disagree.isChecked(),
            pred_opacity=self.pred_opacity.value() / 100, gt_opacity=self.gt_opacity.value() / 100))
        self.style_changed.emit(self._style)


class NarrowCombo(QComboBox):
    """A combo box that asks for ``COMBO_CHARS`` characters' width instead of its longest
    item's ("resunetpp_daspp_relu — no trained weights" would widen the side dock), and
    elides the chosen item's text to the box (a plain QComboBox cuts it mid-letter); the
    open list shows every item in full."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.setMinimumContentsLength(COMBO_CHARS)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)

    def shown_text(self) -> str:
        """The chosen item's text as drawn in the box at its current width."""
        opt = QStyleOptionComboBox()
        self.initStyleOption(opt)
        return self._elided(opt)

    def _elided(self, opt: QStyleOptionComboBox) -> str:
        field = self.style().subControlRect(QStyle.ComplexControl.CC_ComboBox, opt,
                                            QStyle.SubControl.SC_ComboBoxEditField, self)
        icon = opt.iconSize.width() + 4 if not opt.currentIcon.isNull() else 0
        return self.fontMetrics().elidedText(opt.currentText, Qt.TextElideMode.ElideRight,
                                             max(field.width() - icon - 4, 1))

    def paintEvent(self, event: QPaintEvent) -> None:  # QComboBox::paintEvent, with the label elided
        painter = QStylePainter(self)
        painter.setPen(self.palette().color(QPalette.ColorRole.Text))
        opt = QStyleOptionComboBox()
        self.initStyleOption(opt)
        painter.drawComplexControl(QStyle.ComplexControl.CC_ComboBox, opt)
        opt.currentText = self._elided(opt)
        painter.drawControl(QStyle.ControlElement.CE_ComboBoxLabel, opt)


def _swatch(rgb: RGB, text: str) -> str:
    return f'<span style="color: rgb{tuple(rgb)}">■</span> {text}&nbsp;&nbsp;'


class MetricsPanel(QGroupBox):
    """The model's scores and the corrected masks' side by side: this frame, the mean over the
    frames seen, and over the whole source, for each. "Model" is always the model's own
    thresholded prediction; "Corrected" is the masks as they are now (the reviewer's where a
    frame was edited, the model's elsewhere), so correcting never hides how good the model is."""

    COLUMNS = ("model", "model_seen", "model_all", "frame", "seen", "all")
    TIPS = ("The model's own prediction, even where it was corrected",
            "Corrected: the masks as they are now (edited frames: the reviewer's mask; others: the model's)")

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Metrics vs ground truth", parent)
        self.table = QTableWidget(len(SCORE_NAMES), len(self.COLUMNS))
        self._heads: list[QTableWidgetItem] = []  # the header's items, by column
        for c, label in enumerate(("Model\nframe", "Model\nseen", "Model\nall",
                                   "Corrected\nframe", "Corrected\nseen", "Corrected\nall")):
            head = QTableWidgetItem(label)
            head.setToolTip(self.TIPS[c // 3])
            self.table.setHorizontalHeaderItem(c, head)
            self._heads.append(head)
        self.table.setVerticalHeaderLabels([SCORE_LABELS[n] for n in SCORE_NAMES])
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.table.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        self.table.verticalHeader().setDefaultSectionSize(22)
        self.table.horizontalHeader().setFixedHeight(40)
        # six columns in a fixed width: the header's padding and type are smaller than elsewhere.
        # The type is the header's own font (not a style-sheet font-size), so what the header
        # measures is what it draws, under the app's style sheet too.
        self.table.setStyleSheet("QHeaderView::section:horizontal { padding: 1px 0px; }")
        small = QFont(self.table.horizontalHeader().font())
        small.setPointSize(8)
        self.table.horizontalHeader().setFont(small)
        self.table.setFixedHeight(22 * len(SCORE_NAMES) + 44)
        self.table.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.table.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self._cells: list[list[QTableWidgetItem]] = []  # [row][column]
        for r in range(len(SCORE_NAMES)):
            self._cells.append([])
            for c in range(len(self.COLUMNS)):
                item = QTableWidgetItem("–")
                item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                self.table.setItem(r, c, item)
                self._cells[r].append(item)
        self.note = QLabel("")
        self.note.setWordWrap(True)
        self.note.setObjectName("note")
        layout = QVBoxLayout(self)
        layout.addWidget(self.table)
        layout.addWidget(self.note)

    def _set_column(self, col: int, values: Mapping[str, float] | None) -> None:
        for r, name in enumerate(SCORE_NAMES):
            self._cells[r][col].setText(_fmt(None if values is None else values.get(name)))

    def set_current(self, values: Mapping[str, float] | None, model: Mapping[str, float] | None = None) -> None:
        """This frame: the shown (corrected) mask's scores, and the model's own."""
        self._set_column(3, values)
        self._set_column(0, model)

    def set_means(self, seen: Mapping[str, float] | None, n_seen: int,
                  whole: Mapping[str, float] | None, n_scored: int, n_total: int, *,
                  model: Means | None = None) -> None:
        """The means over seen / all frames of the shown masks, and (``model``: the same four
        values for the model's own predictions) of the model's."""
        for first, (s, k_seen, w, k_scored) in ((4, (seen, n_seen, whole, n_scored)),
                                               (1, model or (None, 0, None, 0))):
            self._set_column(first, s)
            self._set_column(first + 1, w)
            who = "Model" if first == 1 else "Corrected"
            self._heads[first].setText(f"{who}\nseen {k_seen}")
            self._heads[first + 1].setText(
                f"{who}\nall {n_total}" if w is not None else f"{who}\nall {k_scored}/{n_total}")

    def value(self, name: str, column: str = "frame") -> str:
        """The text shown for score ``name`` in ``column``: "frame", "seen", "all" (the shown,
        corrected masks) or "model", "model_seen", "model_all" (the model's own)."""
        return self._cells[SCORE_NAMES.index(name)][self.COLUMNS.index(column)].text()

    def header(self, column: str) -> str:
        return self._heads[self.COLUMNS.index(column)].text()

    def set_note(self, text: str) -> None:
        self.note.setText(text)


class NavigationBar(QWidget):
    """Play button, frame slider, counter and the frame's name / time."""

    frame_requested = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.play_button = QToolButton()
        # Qt's own media icons: a "⏸" glyph draws as an empty box in fonts that lack it.
        self.play_button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonIconOnly)
        self.play_button.setIcon(self.play_icon(False))
        self.play_button.setToolTip("Play / pause (Space)")
        self.play_button.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.slider.setRange(0, 0)
        self.slider.valueChanged.connect(self.frame_requested)
        self.counter = QLabel("0 / 0")
        self.counter.setObjectName("counter")
        self.counter.setMinimumWidth(70)
        self.counter.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        # elided (full name in the tooltip) in a fixed width: a long frame name neither squeezes
        # the slider nor moves it as frames change
        self.name = ElidedLabel("", mode=Qt.TextElideMode.ElideRight, min_width=NAME_WIDTH)
        self.name.setObjectName("frameName")
        self.name.setFixedWidth(NAME_WIDTH)
        self.slider.setMinimumWidth(160)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(6, 2, 6, 2)
        layout.addWidget(self.play_button)
        layout.addWidget(self.slider, 1)
        layout.addWidget(self.counter)
        layout.addWidget(self.name)

    def set_length(self, n: int) -> None:
        self.slider.blockSignals(True)
        self.slider.setRange(0, max(n - 1, 0))
        self.slider.blockSignals(False)

    def set_position(self, index: int, n: int, name: str, fps: float | None) -> None:
        self.slider.blockSignals(True)
        self.slider.setValue(index)
        self.slider.blockSignals(False)
        self.counter.setText(f"{index + 1} / {n}")
        if fps:
            t = index / fps
            self.name.setText(f"{name}   {int(t // 60):02d}:{t % 60:06.3f}")
        else:
            self.name.setText(name)

    def play_icon(self, playing: bool) -> QIcon:
        """The button's icon: pause while playing, else play (the style's standard icons)."""
        pixmap = QStyle.StandardPixmap.SP_MediaPause if playing else QStyle.StandardPixmap.SP_MediaPlay
        return self.style().standardIcon(pixmap)

    def set_playing(self, playing: bool) -> None:
        self.play_button.setIcon(self.play_icon(playing))
        self.play_button.setToolTip(f"{'Pause' if playing else 'Play'} (Space)")
