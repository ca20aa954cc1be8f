"""The annotation keys live in the same user-editable keymap as the viewing keys."""

from __future__ import annotations

from PySide6.QtGui import QKeySequence

from polypviewer.io.settings import Settings, save_settings
from polypviewer.ui.actions import resolve_keymap
from polypviewer.ui.annotation_keys import annotation_keys


def test_default_keys_do_not_collide():
    keymap, problems = resolve_keymap({}, annotation_keys())
    assert problems == []
    assert keymap["brush"] == ("B",) and keymap["state_flagged"] == ("X",) and keymap["undo"] == ("Ctrl+Z",)


def test_user_keymap_rebinds_annotation_actions_in_the_window(qtbot, tmp_path, monkeypatch):
    # Its own settings folder: the session's shared one would hand this keymap (B -> Ctrl+B)
    # to every later window test, whose B would then no longer pick the brush.
    monkeypatch.setenv("POLYPVIEWER_CONFIG", str(tmp_path / "config"))
    save_settings(Settings(keymap={"brush": "Ctrl+B", "state_flagged": "Shift+X; F9", "next_unreviewed": ""}))
    from polypviewer.ui.main_window import MainWindow

    win = MainWindow(load_default_model=False)
    qtbot.addWidget(win)
    try:
        acts = win.annotation.actions
        assert acts["brush"].shortcuts() == [QKeySequence("Ctrl+B")]
        assert acts["state_flagged"].shortcuts() == [QKeySequence("Shift+X"), QKeySequence("F9")]
        assert acts["next_unreviewed"].shortcuts() == []
        assert acts["eraser"].shortcuts() == [QKeySequence("E")]  # untouched defaults stay
        assert not any("keymap" in e for e in win.errors)  # annotation names are known names
    finally:
        win.shutdown()
