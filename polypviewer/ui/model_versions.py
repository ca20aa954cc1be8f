"""Annotate > Model versions: every shipped model version, and every checkpoint fine-tuned
here (and its base), stays selectable.

Fine-tuned checkpoints are written under ``<projects dir>/models`` (see
``finetune_dialog.default_output``), so those of earlier sessions are listed again at start.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from PySide6.QtWidgets import QMenu

from polypviewer.core.paths import projects_dir

__all__ = ["ModelVersions", "finetuned_dir"]


def finetuned_dir() -> Path:
    """Where the fine-tune dialog writes its checkpoints (``<projects dir>/models``)."""
    return projects_dir() / "models"


class ModelVersions:
    """The menu and what it lists (``versions``: menu text -> checkpoint path); choosing one
    calls ``load(path)``."""

    def __init__(self, menu: QMenu, load: Callable[[str], None]) -> None:
        self.menu = menu
        self.load = load
        self.versions: dict[str, str] = {}
        self.menu.setEnabled(False)

    def list_shipped(self, catalog: Any = None) -> None:
        """The versions shipped in ``models/`` (each card's weights: several versions of one
        network, e.g. the default and an earlier one), the default marked. A broken card is
        left out here (``polypviewer info`` names it). ``catalog``: a ``ui.catalog.Catalog``
        already read (the window reads it off the GUI thread), else it is read here."""
        if catalog is None:
            from polypviewer.ui.catalog import read_catalog

            catalog = read_catalog()
        default = catalog.default
        for rec in catalog.shipped:
            role = "shipped, default" if rec.file == default else "shipped"
            self.add(f"{rec.file.stem}: {rec.model} {rec.version} ({role})", str(rec.file))

    def list_finetuned(self) -> None:
        """The fine-tuned checkpoints of earlier sessions."""
        try:
            found = sorted(finetuned_dir().glob("*.safetensors"))
        except OSError:
            return
        for path in found:
            self.add(f"{path.name} (fine-tuned)", str(path))

    def add(self, label: str, path: str) -> None:
        """List a checkpoint (once; the old ones stay selectable)."""
        if label in self.versions or path in self.versions.values():
            return
        self.versions[label] = path
        self.menu.addAction(label, partial(self.load, path))
        self.menu.setEnabled(True)
