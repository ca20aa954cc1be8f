"""Closing the main window when settings cannot be saved: one line in ``errors``, no crash."""

from __future__ import annotations

import json

from polypviewer.io.settings import settings_path


def test_a_linked_settings_file_is_reported_on_close_not_written_through(qtbot, tmp_path):
    from polypviewer.ui.main_window import MainWindow

    path = settings_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    dotfiles = tmp_path / "dotfiles-settings.json"
    dotfiles.write_text(json.dumps({"schema": 1, "default_model": "mine"}), encoding="utf-8")
    path.unlink(missing_ok=True)
    path.symlink_to(dotfiles)
    try:
        win = MainWindow(load_default_model=False)
        qtbot.addWidget(win)
        win.shutdown()
        lines = [e for e in win.errors if e.startswith("settings not saved")]
        assert len(lines) == 1 and "symbolic link" in lines[0] and "\n" not in lines[0]
        assert path.is_symlink() and json.loads(dotfiles.read_text())["default_model"] == "mine"
    finally:
        path.unlink(missing_ok=True)
