"""The smoke run (``polypviewer demo --screenshot``) uses only the window's public seam,
``ui.app.SmokeHost``: run on a real window seen through exactly those members, it still
plays its frames and saves the screenshot; reaching for anything else fails the test."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

TIMEOUT = 120_000


def _members() -> set[str]:
    from typing_extensions import get_protocol_members

    from polypviewer.ui.app import SmokeHost

    return set(get_protocol_members(SmokeHost))


class PublicOnly:
    """``window`` seen through ``members`` only: any other attribute is an AttributeError."""

    def __init__(self, window, members: set[str], used: set[str] | None = None) -> None:
        object.__setattr__(self, "_window", window)
        object.__setattr__(self, "_members", frozenset(members))
        object.__setattr__(self, "_used", set() if used is None else used)  # names asked for

    def __getattribute__(self, name: str):
        members = object.__getattribute__(self, "_members")
        if name not in members:
            raise AttributeError(f"the smoke run used {name!r}, which SmokeHost does not offer")
        object.__getattribute__(self, "_used").add(name)
        return getattr(object.__getattribute__(self, "_window"), name)

    def __setattr__(self, name: str, value) -> None:
        raise AttributeError(f"the smoke run set {name!r} on the window")


def test_the_guard_refuses_what_smokehost_does_not_offer(open_window, tiny_predictor):
    """The guard this file relies on: a private attribute through it is an error."""
    win = open_window(tiny_predictor)
    guarded = PublicOnly(win, _members())
    assert guarded.n == 0
    for name in ("_shown_frame", "frames", "predictions", "timeline", "canvas"):
        with pytest.raises(AttributeError, match=name):
            getattr(guarded, name)
    win.close()


def test_smoke_run_through_the_public_seam(open_window, tiny_predictor, kvasir3, qtbot, tmp_path):
    from polypviewer.ui.app import SmokeRun

    win = open_window(tiny_predictor)
    used: set[str] = set()
    guarded = PublicOnly(win, _members(), used)
    shot = tmp_path / "shot.png"
    smoke = SmokeRun(guarded, shot, frames=3, timeout_s=TIMEOUT / 1000)
    win.open_path(kvasir3)
    smoke.start()
    qtbot.waitUntil(lambda: smoke.result is not None, timeout=TIMEOUT)
    assert smoke.result == 0, smoke.error
    assert smoke.shown == [0, 1, 2]
    # each frame counted once its prediction was on screen: the last one is cached and shown
    assert win.index == 2 and win.prediction(2) is not None
    img = cv2.imread(str(shot))
    assert img is not None and img.shape[:2] == (win.height(), win.width())
    assert float(np.std(img)) > 10  # a real picture, not a blank window
    assert {"displayed", "go_to", "n", "index", "save_screenshot"} <= used
    win.close()


def test_smoke_run_fails_with_the_open_error(open_window, tiny_predictor, qtbot, tmp_path):
    """A source that cannot be opened ends the run with exit code 1 and the window's line."""
    from polypviewer.ui.app import SmokeRun

    win = open_window(tiny_predictor)
    smoke = SmokeRun(PublicOnly(win, _members()), tmp_path / "x.png", frames=2, timeout_s=60)
    smoke.start()
    win.open_path(tmp_path / "nope.mp4")
    qtbot.waitUntil(lambda: smoke.result is not None, timeout=TIMEOUT)
    assert smoke.result == 1 and "nope.mp4" in smoke.error
    assert not (tmp_path / "x.png").exists()
    win.close()
