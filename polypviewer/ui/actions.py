"""Every user command of the window, from one table, with a user-editable keymap.

The table says name, menu text, default shortcut(s), tip and whether the action toggles.
Users override shortcuts in the settings file (``io.settings.Settings.keymap``, a JSON
object ``{"action name": "Ctrl+Shift+X"}``; several shortcuts separated by ``;``; ``""``
removes the shortcut). Every mistake is reported in one line, never fatal: an unknown name,
an unreadable shortcut or one of modifier keys only (the default is kept), a key listed twice,
and a key bound to two actions (the action the user bound it to keeps it; the other loses it,
since Qt would otherwise fire neither).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from PySide6.QtCore import QObject, Qt
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QWidget


@dataclass(frozen=True)
class ActionSpec:
    name: str
    text: str
    shortcuts: tuple[str, ...] = ()
    tip: str = ""
    checkable: bool = False
    menu: str = ""  # "File", "View", "Frame", "Model", "Help"


ACTIONS: tuple[ActionSpec, ...] = (
    ActionSpec("open", "&Open video or image…", ("Ctrl+O",), "Open a video file or an image", menu="File"),
    ActionSpec("open_folder", "Open &folder…", ("Ctrl+Shift+O",),
               "Open a folder of frames or a Kvasir dataset (images/ + masks/)", menu="File"),
    ActionSpec("quit", "&Quit", ("Ctrl+Q",), "Close the app (stops every worker)", menu="File"),
    ActionSpec("prev_frame", "Previous frame", ("Left",), menu="Frame"),
    ActionSpec("next_frame", "Next frame", ("Right",), menu="Frame"),
    ActionSpec("back_10", "Back 10 frames", ("Shift+Left",), menu="Frame"),
    ActionSpec("forward_10", "Forward 10 frames", ("Shift+Right",), menu="Frame"),
    ActionSpec("first_frame", "First frame", ("Home",), menu="Frame"),
    ActionSpec("last_frame", "Last frame", ("End",), menu="Frame"),
    ActionSpec("play", "Play / pause", ("Space",), "Play at the source's frame rate; late "
               "predictions drop frames instead of stalling", checkable=True, menu="Frame"),
    ActionSpec("next_worst", "Next worst frame", ("W",),
               "Jump to the next frame whose Dice (or confidence) is among the worst", menu="Frame"),
    ActionSpec("prev_worst", "Previous worst frame", ("Shift+W",), menu="Frame"),
    ActionSpec("next_uncertain", "Most uncertain unreviewed frame", ("J",),
               "Jump to the unreviewed frame the model is least sure of (again: the next one down); "
               "Ctrl+R ranks the whole source", menu="Frame"),
    ActionSpec("toggle_overlay", "Show overlays", ("V",), checkable=True, menu="View"),
    ActionSpec("toggle_outline", "Outline mode", ("O",), checkable=True, menu="View"),
    ActionSpec("toggle_disagreement", "Disagreement (TP / FP / FN)", ("D",),
               "Colour true positives, false positives and false negatives", checkable=True, menu="View"),
    ActionSpec("toggle_gt", "Show ground truth", ("G",), checkable=True, menu="View"),
    ActionSpec("threshold_up", "Raise threshold", ("Ctrl+Up",), menu="View"),
    ActionSpec("threshold_down", "Lower threshold", ("Ctrl+Down",), menu="View"),
    ActionSpec("zoom_in", "Zoom in", ("Ctrl+=", "Ctrl++"), menu="View"),
    ActionSpec("zoom_out", "Zoom out", ("Ctrl+-",), menu="View"),
    ActionSpec("actual_size", "Actual size (1:1)", ("Ctrl+0",), menu="View"),
    ActionSpec("fit", "Fit to window", ("Ctrl+F",), menu="View"),
    ActionSpec("load_weights", "Load &weights…", ("Ctrl+L",),
               "Load a checkpoint (.safetensors / .pth); its model is read from the file", menu="Model"),
    ActionSpec("predict_all", "Predict the whole source", ("Ctrl+R",),
               "Run the model over every frame to get the means over the whole source", menu="Model"),
    ActionSpec("keys", "&Keys…", ("F1",), "List every shortcut of the current keymap", menu="Help"),
)

SPECS: dict[str, ActionSpec] = {a.name: a for a in ACTIONS}
MENUS: tuple[str, ...] = ("File", "Frame", "View", "Model", "Help")
# Keys that only modify another: a shortcut of these alone never fires.
MODIFIER_KEYS = frozenset({Qt.Key.Key_Shift, Qt.Key.Key_Control, Qt.Key.Key_Alt, Qt.Key.Key_Meta,
                           Qt.Key.Key_AltGr, Qt.Key.Key_Super_L, Qt.Key.Key_Super_R, Qt.Key.Key_Hyper_L,
                           Qt.Key.Key_Hyper_R})


def shortcut_problem(text: str) -> str | None:
    """Why ``text`` cannot be a shortcut (one phrase), or None when Qt reads it as keys."""
    seq = QKeySequence(text)
    # QKeySequence[i] (a QKeyCombination) exists at runtime; PySide6 6.11's stubs omit __getitem__
    keys = [seq[i].key() for i in range(seq.count())]  # type: ignore[index]
    if seq.isEmpty() or not seq.toString() or Qt.Key.Key_unknown in keys:
        return f"cannot read shortcut {text!r}"
    if any(k in MODIFIER_KEYS for k in keys):
        return f"shortcut {text!r} is modifier keys only (add a key, e.g. 'Ctrl+Shift+K')"
    return None


def resolve_keymap(overrides: Mapping[str, str] | None,
                   extra: Mapping[str, tuple[str, ...]] | None = None) -> tuple[dict[str, tuple[str, ...]], list[str]]:
    """Merge user overrides into the defaults (this table's, plus ``extra``: the annotation
    actions' names and keys). Returns ``(keymap, problems)``, one line per mistake."""
    keymap = {a.name: a.shortcuts for a in ACTIONS}
    keymap.update(extra or {})
    problems: list[str] = []
    overridden: list[str] = []
    for name, value in (overrides or {}).items():
        if name not in keymap:
            problems.append(f"keymap: unknown action '{name}' (known: {', '.join(sorted(keymap))})")
            continue
        keys = tuple(k.strip() for k in str(value).split(";") if k.strip())
        bad = next((p for p in map(shortcut_problem, keys) if p), None)
        if bad:
            problems.append(f"keymap: '{name}': {bad}; keeping the default")
            continue
        keymap[name] = keys
        overridden.append(name)
    owners: dict[str, list[str]] = {}  # normalised key -> actions bound to it, in table order
    for name, keys in keymap.items():
        kept: list[str] = []
        for k in keys:
            norm = QKeySequence(k).toString()
            if name in owners.get(norm, []):
                problems.append(f"keymap: '{name}': {k} is listed twice")
                continue
            kept.append(k)
            owners.setdefault(norm, []).append(name)
        keymap[name] = tuple(kept)
    for norm, names in owners.items():
        if len(names) < 2:
            continue
        # Qt fires neither of two actions sharing a key: the one the user bound it to keeps it.
        keeper = next((n for n in overridden if n in names), names[0])
        losers = [n for n in names if n != keeper]
        for n in losers:
            keymap[n] = tuple(k for k in keymap[n] if QKeySequence(k).toString() != norm)
        bound = " and ".join(f"'{n}'" for n in names)
        problems.append(f"keymap: {norm} is bound to {'both ' if len(names) == 2 else ''}{bound}; "
                        f"'{keeper}' keeps it, {', '.join(repr(n) for n in losers)} "
                        f"{'has' if len(losers) == 1 else 'have'} no {norm} now")
    return keymap, problems


def build_actions(parent: QObject, handlers: Mapping[str, Callable[..., object]],
                  keymap: Mapping[str, tuple[str, ...]] | None = None) -> dict[str, QAction]:
    """One QAction per table row, connected to ``handlers[name]`` (``triggered`` for plain
    actions, ``toggled(bool)`` for checkable ones). Missing handlers leave the action disabled."""
    keymap = keymap or {a.name: a.shortcuts for a in ACTIONS}
    actions: dict[str, QAction] = {}
    for spec in ACTIONS:
        act = QAction(spec.text, parent)
        act.setObjectName(spec.name)
        act.setShortcuts([QKeySequence(k) for k in keymap.get(spec.name, spec.shortcuts)])
        # Window-wide, so arrow keys step frames even while a slider has focus.
        act.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
        tip = spec.tip or spec.text.replace("&", "").rstrip("…")
        keys = ", ".join(keymap.get(spec.name, spec.shortcuts))
        act.setToolTip(f"{tip} ({keys})" if keys else tip)
        act.setStatusTip(tip)
        act.setCheckable(spec.checkable)
        handler = handlers.get(spec.name)
        if handler is None:
            act.setEnabled(False)
        elif spec.checkable:
            act.toggled.connect(handler)
        else:
            act.triggered.connect(lambda _checked=False, h=handler: h())
        actions[spec.name] = act
    return actions


def keymap_table(keymap: Mapping[str, tuple[str, ...]] | None = None) -> list[tuple[str, str]]:
    """(shortcut, what it does) rows, for the help text and the README."""
    keymap = keymap or {a.name: a.shortcuts for a in ACTIONS}
    return [(" / ".join(keymap[a.name]), a.text.replace("&", "").rstrip("…")) for a in ACTIONS if keymap[a.name]]


# Mouse controls: no QAction, but part of the same table (Help > Keys and the guide).
MOUSE_ROWS: tuple[tuple[str, str], ...] = (
    ("Right mouse button", "The tool inverted: brush erases, eraser paints, fill clears, polygon clears its inside"),
    ("Shift + mouse wheel", "Brush / eraser size"),
    ("Mouse wheel", "Zoom the canvas (about the mouse)"),
    ("Middle mouse button drag", "Pan the canvas"),
)


def window_keymap_rows(window: QWidget) -> list[tuple[str, str]]:
    """(shortcuts, action) for every action of the live window that has a shortcut, in the
    order they were added (the menus'), then the mouse controls. Read from the real QActions,
    so it is what the app does with the user's keymap; Help > Keys shows it and
    ``docs/screenshots.py`` writes it into the guide."""
    rows, seen = [], set()
    for act in window.actions():
        keys = [s.toString(QKeySequence.SequenceFormat.PortableText) for s in act.shortcuts()]
        keys = [k for k in keys if k]
        text = act.text().replace("&", "").rstrip("…").strip()
        if not keys or act.objectName() in seen:
            continue
        seen.add(act.objectName())
        rows.append((" / ".join(keys), text))
    rows.extend(MOUSE_ROWS)
    return rows
