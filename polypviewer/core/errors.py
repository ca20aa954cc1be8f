"""Errors a user can act on, and the one way any other exception becomes one line.

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


def describe_exception(exc: BaseException, *, with_type: bool = False, limit: int = 300) -> str:
    """One line for any exception: its message (an OSError's ``strerror``; the type's name
    when there is no message), white space folded, cut to ``limit`` characters.

    ``with_type`` prefixes an unexpected exception's type (``"ValueError: ..."``), which says
    more than the message alone; a :class:`PolypviewerError` is already written for the user
    and is returned as it is.
    """
    if isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror
    else:
        text = str(exc)
    text = " ".join(text.split())
    if with_type and not isinstance(exc, PolypviewerError):
        text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    text = text or type(exc).__name__
    return text if len(text) <= limit else text[:limit - 1].rstrip() + "…"
