"""Errors a user can act on.

``str(err)`` is always one line that names the file (when there is one) and the reason, so
the CLI and the GUI can show it as is and carry on with the rest of the work.
"""

from __future__ import annotations

from pathlib import Path


class PolypviewerError(Exception):
    """Base class: ``PolypviewerError(reason, path=None)`` -> ``"path: reason"``."""

    def __init__(self, reason: str, path: str | Path | None = None) -> None:
        self.reason = " ".join(str(reason).split())  # one line, whatever the cause said
        self.path = None if path is None else str(path)
        super().__init__(str(self))

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}" if self.path else self.reason
