"""The window's layout (where the docks and toolbars are) comes back at the next start:
``Settings.window_state`` is written on close and restored once every dock exists."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QDockWidget

from polypviewer.io.settings import Settings, load_settings, save_settings

LEFT, RIGHT = Qt.DockWidgetArea.LeftDockWidgetArea, Qt.DockWidgetArea.RightDockWidgetArea


def _window(qtbot):
    from polypviewer.ui.main_window import MainWindow

    win = MainWindow(load_default_model=False)
    qtbot.addWidget(win)
    win.show()
    return win


def _dock(win, name):
    return win.findChild(QDockWidget, name)


def test_a_moved_dock_and_a_hidden_toolbar_are_where_the_user_left_them(qtbot, config):
    win = _window(qtbot)
    assert win.dockWidgetArea(_dock(win, "annotationDock")) == RIGHT  # the default
    win.addDockWidget(LEFT, _dock(win, "annotationDock"))  # the user drags it to the left
    win.annotation.toolbar.hide()
    win.shutdown()
    assert load_settings()[0].window_state
    win2 = _window(qtbot)
    try:
        assert win2.dockWidgetArea(_dock(win2, "annotationDock")) == LEFT
        assert win2.dockWidgetArea(_dock(win2, "reviewDock")) == RIGHT
        assert win2.annotation.toolbar.isHidden()
    finally:
        win2.shutdown()


def test_a_layout_that_does_not_fit_is_ignored(qtbot, config):
    save_settings(Settings(window_state="bm90IGEgbGF5b3V0"))  # base64 of "not a layout"
    win = _window(qtbot)
    try:
        assert win.dockWidgetArea(_dock(win, "annotationDock")) == RIGHT
        assert not win.annotation.toolbar.isHidden()
    finally:
        win.shutdown()
