"""Default shortcuts of the annotation actions, by the names the user's keymap uses.

The window resolves the user's keymap (``io.settings`` "keymap") over :func:`annotation_keys`
and the viewing keys together, so a collision between any two is found in one place
(``ui/actions.py`` ``resolve_keymap``). A new annotation action adds its default key to
:data:`EXTRA_KEYS` and its ``QAction`` through ``AnnotationController.add_action``.
"""

from __future__ import annotations

__all__ = ["EXTRA_KEYS", "annotation_keys"]

# Keys added here on top of the Editor's (Esc/B/E/F/P, [ ], Ctrl+Z/Ctrl+Shift+Z/Ctrl+Y, A/C/X/U).
EXTRA_KEYS: dict[str, tuple[str, ...]] = {
    "next_unreviewed": ("N",), "prev_unreviewed": ("Shift+N",), "save": ("Ctrl+S",),
    "export": ("Ctrl+E",), "finetune": ("Ctrl+Shift+T",), "carry_forward": ("K",),
    "keep_largest": ("L",), "fill_holes": ("H",), "grow": ("=",), "shrink": ("-",),
    "clear": ("Delete",), "reset": ("R",), "finish_polygon": ("Return", "Enter"),
    "propagate_forward": ("Ctrl+Shift+Right",), "propagate_backward": ("Ctrl+Shift+Left",),
    "stop_propagation": ("Ctrl+Shift+Down",), "worst_drift": ("Shift+J",),
}


def annotation_keys() -> dict[str, tuple[str, ...]]:
    """Default shortcuts of every annotation action, by the name the user's keymap uses."""
    from polypviewer.ui.tools import REVIEW_KEYS, TOOL_KEYS

    keys: dict[str, tuple[str, ...]] = {name: (key,) for name, key in TOOL_KEYS.items()}
    keys.update({"bigger": ("]",), "smaller": ("[",), "undo": ("Ctrl+Z",), "redo": ("Ctrl+Shift+Z", "Ctrl+Y")})
    keys.update({f"state_{st.name.lower()}": (key,) for st, key in REVIEW_KEYS.items()})
    keys.update(EXTRA_KEYS)
    return keys
