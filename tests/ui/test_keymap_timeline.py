"""Action table + user keymap, the timeline strip, and the worker helpers (cache, clock)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PySide6.QtCore import QObject
from PySide6.QtGui import QKeySequence

from polypviewer.ui.actions import ACTIONS, build_actions, keymap_table, resolve_keymap
from polypviewer.ui.playback import PlaybackClock
from polypviewer.ui.prediction import FpsMeter
from polypviewer.ui.timeline import Timeline
from polypviewer.ui.workers import LruCache


def test_default_keymap_has_the_ux_keys_and_no_clash():
    keymap, problems = resolve_keymap({})
    assert problems == []
    assert keymap["next_frame"] == ("Right",) and keymap["back_10"] == ("Shift+Left",)
    assert keymap["play"] == ("Space",) and keymap["toggle_overlay"] == ("V",)
    assert keymap["toggle_outline"] == ("O",) and keymap["fit"] == ("Ctrl+F",)
    assert keymap["actual_size"] == ("Ctrl+0",)
    assert ("Space", "Play / pause") in keymap_table()


def test_user_overrides_and_bad_entries_are_reported():
    keymap, problems = resolve_keymap({"play": "P; Ctrl+Space", "nope": "X", "fit": "Ctrl+Bogus+Key"})
    assert keymap["play"] == ("P", "Ctrl+Space")
    assert keymap["fit"] == ("Ctrl+F",)  # unreadable: default kept
    assert any("unknown action 'nope'" in p for p in problems)
    assert any("'fit'" in p for p in problems)
    _, problems = resolve_keymap({"play": "V"})
    assert any("bound to both" in p for p in problems)
    keymap, problems = resolve_keymap({"predict_all": ""})
    assert keymap["predict_all"] == () and problems == []


def test_build_actions_connects_handlers(qtbot):
    parent = QObject()
    calls = []
    acts = build_actions(parent, {"next_frame": lambda: calls.append("next"),
                                  "toggle_overlay": lambda on: calls.append(on)},
                         resolve_keymap({"next_frame": "N"})[0])
    assert len(acts) == len(ACTIONS)
    assert acts["next_frame"].shortcut() == QKeySequence("N")
    acts["next_frame"].trigger()
    acts["toggle_overlay"].trigger()
    assert calls == ["next", True]
    assert not acts["quit"].isEnabled()  # no handler given


def test_timeline_values_worst_and_click(qtbot):
    tl = Timeline()
    qtbot.addWidget(tl)
    tl.resize(600, 100)
    tl.show()
    tl.set_length(20, "dice")
    for i in range(20):
        tl.set_value(i, 0.9)
    tl.set_value(4, 0.2)
    tl.set_value(13, 0.1)
    assert list(tl.worst_frames()) == [4, 13]
    assert tl.next_worst(0) == 4 and tl.next_worst(4) == 13 and tl.next_worst(13) == 4
    assert tl.next_worst(10, -1) == 4 and tl.next_worst(2, -1) == 13
    tl.clear_values()
    assert tl.next_worst(0) is None and np.isnan(tl.values()).all()
    # area mode: worst = least confident
    tl.set_length(5, "area")
    for i, c in enumerate((0.9, 0.8, 0.3, 0.95, math.nan)):
        tl.set_value(i, 0.1, c)
    assert list(tl.worst_frames()) == [2]
    # a click on the plot maps to the nearest frame
    got = []
    tl.frame_clicked.connect(got.append)
    vb = tl._plot.getPlotItem().vb
    scene_pos = vb.mapViewToScene(__import__("PySide6.QtCore", fromlist=["QPointF"]).QPointF(3.2, 0.5))

    class Click:
        def button(self):
            from PySide6.QtCore import Qt
            return Qt.MouseButton.LeftButton

        def scenePos(self):
            return scene_pos

    tl._clicked(Click())
    assert got == [3]


def test_lru_cache_is_bounded_in_bytes():
    cache = LruCache(max_bytes=3 * 400)
    for i in range(5):
        cache.put(i, np.zeros(100, np.float32))  # 400 bytes each
    assert len(cache) == 3 and cache.nbytes == 1200
    assert cache.get(0) is None and cache.get(2) is not None
    cache.put(5, np.zeros(100, np.float32))  # 2 was used last: 3 goes
    assert 3 not in cache and 2 in cache
    cache.put(6, np.zeros(10_000, np.float32))  # bigger than the bound: kept alone
    assert len(cache) == 1 and 6 in cache


def test_playback_clock_drops_late_frames_instead_of_waiting():
    clock = PlaybackClock()
    clock.start(10, fps=20.0, infer_fps=None)
    assert clock.stride == 1
    assert clock.target(clock.t0 + 0.26) == 15
    ready = {12, 14}.__contains__
    assert clock.pick(10, 15, ready) == 14 and clock.dropped == 3
    assert clock.pick(14, 15, ready) is None  # nothing new is ready: keep showing 14
    clock.start(0, fps=25.0, infer_fps=10.0)
    assert clock.stride == 3  # inference at 10/s cannot follow 25/s: predict every 3rd frame


def test_fps_meter():
    m = FpsMeter()
    for t in (0.0, 0.1, 0.2, 0.3, 0.4):
        m.tick(t)
    assert m.fps() == pytest.approx(10.0)


def test_uniform_strip_has_no_worst_frames(qtbot):
    tl = Timeline()
    qtbot.addWidget(tl)
    tl.set_length(30, "dice")
    for i in range(30):
        tl.set_value(i, 0.9)
    assert tl.worst_frames().size == 0
    tl.set_value(7, 0.5)
    assert list(tl.worst_frames()) == [7]
