import json

from polypviewer.io.settings import MAX_RECENT, Settings, load_settings, save_settings, settings_path


def test_round_trip_in_config_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("POLYPVIEWER_CONFIG", str(tmp_path / "cfg"))
    s = Settings(keymap={"undo": "Ctrl+Alt+Z"}, default_model="pranet")
    s.add_recent(tmp_path / "a.mp4")
    save_settings(s)
    assert settings_path().parent == tmp_path / "cfg"
    loaded, warning = load_settings()
    assert warning is None
    assert loaded == s


def test_recent_files_most_recent_first_and_bounded(tmp_path):
    s = Settings()
    for i in range(MAX_RECENT + 3):
        s.add_recent(tmp_path / f"v{i}.mp4")
    s.add_recent(tmp_path / "v5.mp4")
    assert len(s.recent_files) == MAX_RECENT
    assert s.recent_files[0].endswith("v5.mp4")
    assert sum(r.endswith("v5.mp4") for r in s.recent_files) == 1


def test_missing_file_gives_defaults(tmp_path):
    assert load_settings(tmp_path / "none.json") == (Settings(), None)


def test_broken_file_is_reported_kept_aside_and_replaced_by_defaults(tmp_path):
    path = tmp_path / "settings.json"
    path.write_text("{ not json", encoding="utf-8")
    project = tmp_path / "clip.polyp.h5"
    project.write_bytes(b"user work")
    settings, warning = load_settings(path)
    assert settings == Settings()
    assert warning is not None and "\n" not in warning and str(path) in warning
    aside = list(tmp_path.glob("settings.json.broken-*"))
    assert len(aside) == 1 and aside[0].read_text(encoding="utf-8") == "{ not json"
    assert project.read_bytes() == b"user work"


def test_wrong_types_are_broken_too(tmp_path):
    path = tmp_path / "settings.json"
    path.write_text(json.dumps({"schema": 1, "keymap": ["Ctrl+Z"]}), encoding="utf-8")
    settings, warning = load_settings(path)
    assert settings == Settings() and "keymap" in warning


def test_saved_settings_follow_the_umask_and_leave_no_temporaries(tmp_path):
    import os
    import stat

    path = tmp_path / "settings.json"
    old = os.umask(0o022)
    try:
        save_settings(Settings(default_model="pranet"), path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644, "not mkstemp's 0600"
    assert [p.name for p in tmp_path.iterdir()] == ["settings.json"]


def test_a_settings_link_is_not_replaced_nor_written_through(tmp_path):
    import pytest

    from polypviewer.core.errors import PolypviewerError

    dotfiles = tmp_path / "dotfiles-settings.json"
    dotfiles.write_text('{"schema": 1, "default_model": "mine"}', encoding="utf-8")
    path = tmp_path / "settings.json"
    path.symlink_to(dotfiles)
    with pytest.raises(PolypviewerError) as err:
        save_settings(Settings(default_model="other"), path)
    assert str(err.value).startswith(str(path)) and "symbolic link" in str(err.value)
    assert "\n" not in str(err.value)
    assert path.is_symlink() and json.loads(dotfiles.read_text())["default_model"] == "mine"


def test_two_broken_files_in_the_same_second_are_both_kept(tmp_path, monkeypatch):
    import time

    monkeypatch.setattr(time, "strftime", lambda fmt, *a: "20260101-120000")
    path = tmp_path / "settings.json"
    for text in ("{ first", "{ second"):
        path.write_text(text, encoding="utf-8")
        _, warning = load_settings(path)
        assert "moved to settings.json.broken-20260101-120000" in warning
    kept = sorted(p.read_text(encoding="utf-8") for p in tmp_path.glob("settings.json.broken-*"))
    assert kept == ["{ first", "{ second"]
    assert not path.exists()
