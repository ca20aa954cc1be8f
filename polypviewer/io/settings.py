"""Per-user settings: recent files, window layout, keymap overrides, default model, brush size.

A JSON file in the platform's config folder (``core.paths.config_dir()``), so the keymap is
editable by hand. Settings never hold user work (projects are their own files), so a broken
settings file costs nothing but preferences: it is moved aside (kept, never deleted), reported
in one line, and replaced by defaults.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from polypviewer.core.fileio import atomic_write
from polypviewer.core.paths import config_dir

SCHEMA = 1
MAX_RECENT = 10


@dataclass
class Settings:
    recent_files: list[str] = field(default_factory=list)
    window_geometry: str = ""  # base64 of QWidget.saveGeometry()
    window_state: str = ""  # base64 of QMainWindow.saveState()
    keymap: dict[str, str] = field(default_factory=dict)  # action name -> shortcut, overrides
    default_model: str = ""  # registry name or a weights file; "" = the shipped default
    brush_radius: int = 0  # the annotation brush's radius in pixels; 0 = the editor's default

    def add_recent(self, path: str | Path) -> None:
        p = str(Path(path).resolve())
        self.recent_files = [p] + [r for r in self.recent_files if r != p][: MAX_RECENT - 1]


def settings_path() -> Path:
    return config_dir() / "settings.json"


def _validated(raw: Any) -> Settings:
    if not isinstance(raw, dict):
        raise ValueError("top level is not a JSON object")
    if raw.get("schema", SCHEMA) != SCHEMA:
        raise ValueError(f"unknown schema {raw.get('schema')!r} (expected {SCHEMA})")
    s = Settings()
    for name, expected in (("recent_files", list), ("window_geometry", str),
                           ("window_state", str), ("keymap", dict), ("default_model", str),
                           ("brush_radius", int)):
        if name in raw:
            if not isinstance(raw[name], expected):
                raise ValueError(f"'{name}' should be a {expected.__name__}")
            setattr(s, name, raw[name])
    if not all(isinstance(r, str) for r in s.recent_files):
        raise ValueError("'recent_files' should hold paths")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in s.keymap.items()):
        raise ValueError("'keymap' should map action names to shortcut strings")
    s.recent_files = s.recent_files[:MAX_RECENT]
    return s


def load_settings(path: Path | None = None) -> tuple[Settings, str | None]:
    """Return ``(settings, warning)``; ``warning`` is a one-line message when the file was
    broken and has been moved aside (defaults are returned then)."""
    path = path or settings_path()
    if not path.exists():
        return Settings(), None
    try:
        return _validated(json.loads(path.read_text(encoding="utf-8"))), None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        aside = _move_aside(path, f"{path.name}.broken-{time.strftime('%Y%m%d-%H%M%S')}")
        where = f"moved to {aside.name}" if aside is not None else "left in place"
        reason = " ".join(str(exc).split())
        return Settings(), f"{path}: settings file is broken ({reason}); {where}, using defaults"


def _move_aside(path: Path, name: str) -> Path | None:
    """Rename ``path`` to ``name`` (or ``name-2``, ``-3``...) in its folder, never over an
    existing file (an earlier broken copy of the same second is kept too); None on failure."""
    for k in range(1, 100):
        aside = path.with_name(name if k == 1 else f"{name}-{k}")
        try:
            os.link(path, aside)  # fails on an existing name: nothing is ever replaced
        except FileExistsError:
            continue
        except OSError:
            if os.path.lexists(aside):
                continue
            try:  # no hard links on this file system: check, then rename
                os.rename(path, aside)
                return aside
            except OSError:
                return None
        try:
            os.unlink(path)
        except OSError:
            return None
        return aside
    return None


def save_settings(settings: Settings, path: Path | None = None) -> None:
    """Write atomically (:func:`polypviewer.core.fileio.atomic_write`) so a crash never leaves
    half a file; raises its one-line ``OutputError`` (a link at ``path`` is refused)."""
    path = path or settings_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"schema": SCHEMA, **asdict(settings)}
    atomic_write(path, json.dumps(data, indent=2))
