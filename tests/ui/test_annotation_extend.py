"""Extending the Annotate UI: ``AnnotationController.add_action`` (keymap, menu group,
toolbar, window-wide shortcut) is what a new annotation action uses."""

from __future__ import annotations

import pytest
from PySide6.QtGui import QKeySequence


@pytest.fixture
def win(qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("POLYPVIEWER_CONFIG", str(tmp_path / "config"))
    from polypviewer.ui.main_window import MainWindow

    w = MainWindow(load_default_model=False)
    qtbot.addWidget(w)
    yield w
    w.shutdown()


def test_an_added_action_lands_in_its_menu_group_with_its_key(win):
    c = win.annotation
    calls = []
    win.keymap["propagate"] = ("Ctrl+Shift+P",)  # what annotation_keys.EXTRA_KEYS would give it
    last = c._group_ends["mask"]  # the "mask" group's last entry so far (Propagate's worst-drift action)
    act = c.add_action("propagate", "Propagate to the next frames", lambda: calls.append(1), toolbar=True)
    entries = c.menu.actions()
    i = entries.index(act)
    assert entries[i - 1] is last and entries[i + 1].isSeparator()  # end of "mask"
    second = c.add_action("second", "Second", lambda: None)
    assert c.menu.actions().index(second) == i + 1  # after the first one, same group
    assert act.shortcuts() == [QKeySequence("Ctrl+Shift+P")] and "Ctrl+Shift+P" in act.toolTip()
    assert act in win.actions() and act in c.toolbar.actions() and c.actions["propagate"] is act
    act.trigger()
    assert calls == [1]
    with pytest.raises(ValueError, match="exists already"):
        c.add_action("propagate", "Again", lambda: None)
    with pytest.raises(ValueError, match="no menu group"):
        c.add_action("other", "Other", lambda: None, group="nowhere")
