"""Per-user settings: recent files, window layout, keymap overrides, default model.

A JSON file in the platform's config folder (``core.paths.config_dir()``), so the keymap is
editable by hand. Settings never hold user work (projects are their own files), so a broken
settings file costs nothing but preferences: it is moved aside (kept, never deleted), reported
in one line, and replaced by defaults.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

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
                           ("window_state", str), ("keymap", dict), ("default_model", str)):
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
        aside = path.with_name(f"{path.name}.broken-{time.strftime('%Y%m%d-%H%M%S')}")
        try:
            os.replace(path, aside)
            where = f"moved to {aside.name}"
        except OSError:
            where = "left in place"
        reason = " ".join(str(exc).split())
        return Settings(), f"{path}: settings file is broken ({reason}); {where}, using defaults"


def save_settings(settings: Settings, path: Path | None = None) -> None:
    """Write atomically (temp file + rename) so a crash never leaves half a file."""
    path = path or settings_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"schema": SCHEMA, **asdict(settings)}
    fd, tmp = tempfile.mkstemp(prefix=".settings-", suffix=".json", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
