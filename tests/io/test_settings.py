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
