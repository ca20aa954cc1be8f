"""Where polypviewer keeps things: shipped resources and models, per-user cache and config.

Nothing is ever written next to a user's data: caches (video frame indices, compiled
inference models) go to the per-user cache folder, project files to the per-user projects
folder.

polypviewer's own environment variables are read here and nowhere else:
``POLYPVIEWER_CACHE``, ``POLYPVIEWER_CONFIG`` and ``POLYPVIEWER_PROJECTS`` move those folders;
``POLYPVIEWER_SHARED_DATA`` says where the (never shipped) evaluation data sets are.
"""

from __future__ import annotations

import os
import sys
from importlib.resources import files
from pathlib import Path


def _package_data(name: str) -> Path:
    # In a PyInstaller bundle the data folders sit under sys._MEIPASS/polypviewer/.
    frozen = getattr(sys, "_MEIPASS", None)
    if frozen:
        return Path(frozen) / "polypviewer" / name
    return Path(str(files(f"polypviewer.{name}")))


def resources_dir() -> Path:
    """The shipped ``resources/`` folder (icons, style, demo assets)."""
    return _package_data("resources")


def models_dir() -> Path:
    """The shipped ``models/`` folder (default weights and their model cards)."""
    return _package_data("models")


def _base(xdg: str, fallback: str, mac: str, win_env: str) -> Path:
    if sys.platform == "win32":
        return Path(os.environ.get(win_env) or Path.home() / "AppData" / "Local")
    if sys.platform == "darwin":
        return Path.home() / "Library" / mac
    return Path(os.environ.get(xdg) or Path.home() / fallback)


def cache_dir() -> Path:
    """Per-user cache (``$POLYPVIEWER_CACHE`` overrides); created on demand."""
    override = os.environ.get("POLYPVIEWER_CACHE")
    path = Path(override) if override else _base("XDG_CACHE_HOME", ".cache", "Caches", "LOCALAPPDATA") / "polypviewer"
    path.mkdir(parents=True, exist_ok=True)
    return path


def config_dir() -> Path:
    """Per-user settings folder (``$POLYPVIEWER_CONFIG`` overrides); created on demand."""
    override = os.environ.get("POLYPVIEWER_CONFIG")
    path = (Path(override) if override
            else _base("XDG_CONFIG_HOME", ".config", "Application Support", "APPDATA") / "polypviewer")
    path.mkdir(parents=True, exist_ok=True)
    return path


def projects_dir() -> Path:
    """Where project files live (``$POLYPVIEWER_PROJECTS`` overrides, else ``<config dir>/projects``);
    created on demand (an ``OSError`` when it cannot be)."""
    override = os.environ.get("POLYPVIEWER_PROJECTS")
    path = Path(override) if override else config_dir() / "projects"
    path.mkdir(parents=True, exist_ok=True)
    return path


def shared_data_dir() -> Path | None:
    """The evaluation data (``../shared/data``, never shipped): ``$POLYPVIEWER_SHARED_DATA``,
    else ``shared/data`` beside the project's folder, else beside the current folder; None
    when none of them is a folder."""
    return next((c for c in _shared_data_candidates() if c.is_dir()), None)


def shared_data_default() -> Path:
    """:func:`shared_data_dir`, or where it is looked for first when it is absent (for a
    ``--data`` default whose "not found" message names the place): the one answer to "where is
    ``../shared/data``" for the benchmarks and tests too."""
    return shared_data_dir() or _shared_data_candidates()[0]


def _shared_data_candidates() -> list[Path]:
    env = os.environ.get("POLYPVIEWER_SHARED_DATA")
    candidates = [Path(env)] if env else []
    return candidates + [Path(__file__).resolve().parents[2].parent / "shared" / "data",
                         Path.cwd().parent / "shared" / "data"]
