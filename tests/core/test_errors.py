"""The one rule that turns any exception into a one-line reason (core.errors)."""

from __future__ import annotations

import errno

from polypviewer.core.errors import PolypviewerError, describe_exception


def test_describe_exception_is_one_line_with_the_type_when_asked() -> None:
    assert describe_exception(ValueError("bad\n  value")) == "bad value"
    assert describe_exception(ValueError("bad\n  value"), with_type=True) == "ValueError: bad value"
    assert describe_exception(IndexError()) == "IndexError"
    assert describe_exception(IndexError(), with_type=True) == "IndexError"
    assert describe_exception(OSError(errno.ENOSPC, "No space\nleft"), with_type=True) == "OSError: No space left"
    # A user error is already written for the user: no type name in front.
    assert describe_exception(PolypviewerError("no frames", "a.mp4"), with_type=True) == "a.mp4: no frames"


def test_describe_exception_cuts_a_long_message() -> None:
    text = describe_exception(RuntimeError("x" * 1000), with_type=True, limit=50)
    assert len(text) == 50 and text.startswith("RuntimeError: xxx") and text.endswith("…")
    assert describe_exception(RuntimeError("y" * 300)) == "y" * 300  # the default limit keeps 300

