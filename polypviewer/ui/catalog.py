"""What the window lists about networks, read off the GUI thread: the registered networks, which
of them have trained weights shipped here, and the shipped versions (Annotate > Model versions).

Reading them imports ``polypviewer.nets`` and with it torch: about 5 s of CPU on the GUI thread
before the first frame could be drawn (cProfile of the window's start, 5.1 of its 8.1 s of
main-thread CPU to the first frame). ``ModelCatalog.start`` reads them on a daemon thread
instead and delivers them with the queued ``ready`` signal; the inference worker imports torch
at the same time to build the model, so the import is paid once, beside the first frame."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from PySide6.QtCore import QObject, Signal

from polypviewer.core.errors import describe_exception

__all__ = ["Catalog", "ModelCatalog", "read_catalog"]


@dataclass(frozen=True)
class Catalog:
    """``models``: every registered network; ``ready``: those with shipped trained weights;
    ``shipped``: the shipped versions' records (``nets.weights.WeightRecord``); ``default``: the
    default weights file (None when its card is broken); ``error``: why reading failed."""

    models: list[str] = field(default_factory=list)
    ready: set[str] = field(default_factory=set)
    shipped: list[Any] = field(default_factory=list)
    default: Any = None
    error: str = ""


def read_catalog() -> Catalog:
    """Read the catalog (imports torch; call off the GUI thread)."""
    try:
        from polypviewer.nets.registry import list_models
        from polypviewer.nets.weights import CheckpointError, default_weights, shipped_weights

        records = list(shipped_weights([]))  # a broken card is reported by ``info``, not here
        try:
            default = default_weights()
        except CheckpointError:
            default = None
        return Catalog(list(list_models()), {r.model for r in records}, records, default)
    except Exception as exc:  # noqa: BLE001 - one line in the window, which goes on without a list
        return Catalog(error=f"the list of networks could not be read: {describe_exception(exc, with_type=True)}")


class ModelCatalog(QObject):
    """``start()`` reads the catalog on a daemon thread; ``ready(Catalog)`` arrives queued on
    this object's (the GUI) thread."""

    ready = Signal(object)

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self._run, name="polypviewer-catalog", daemon=True)
        thread.start()
        return thread

    def _run(self) -> None:
        catalog = read_catalog()
        try:
            self.ready.emit(catalog)
        except RuntimeError:  # the window closed (and this object with it) before the list was read
            pass
