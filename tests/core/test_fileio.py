"""core.fileio: exclusive temporaries, no writing through links, umask-respecting modes."""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path

import pytest

from polypviewer.core import fileio
from polypviewer.core.fileio import OutputError, atomic_path, atomic_write, write_json


def test_atomic_write_replaces_and_leaves_no_temporaries(tmp_path: Path) -> None:
    out = tmp_path / "a.json"
    atomic_write(out, "one")
    atomic_write(out, b"two")
    assert out.read_bytes() == b"two"
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_mode_follows_umask_not_0600(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        atomic_write(tmp_path / "m.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "m.txt").stat().st_mode) == 0o644


def test_refuses_to_write_through_a_symlink(tmp_path: Path) -> None:
    target = tmp_path / "victim"
    target.write_text("precious")
    link = tmp_path / "out.json"
    link.symlink_to(target)
    with pytest.raises(OutputError, match="symbolic link"):
        atomic_write(link, "evil")
    assert target.read_text() == "precious"
    dangling = tmp_path / "card.md"
    dangling.symlink_to(tmp_path / "nowhere")
    with pytest.raises(OutputError, match="symbolic link"):
        atomic_write(dangling, "x")
    assert not (tmp_path / "nowhere").exists()


def test_no_overwrite_keeps_the_existing_file(tmp_path: Path) -> None:
    out = tmp_path / "card.json"
    out.write_text("mine")
    with pytest.raises(OutputError, match="already exists"):
        atomic_write(out, "theirs", overwrite=False)
    assert out.read_text() == "mine"
    atomic_write(tmp_path / "new.json", "fresh", overwrite=False)
    assert (tmp_path / "new.json").read_text() == "fresh"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["card.json", "new.json"]


def test_failed_write_leaves_target_untouched(tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "x.bin"
    out.write_bytes(b"old")

    def boom(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fileio.os, "replace", boom)
    with pytest.raises(OutputError) as info:
        atomic_write(out, b"new")
    assert str(out) in str(info.value) and "No space left" in str(info.value)
    assert "\n" not in str(info.value)
    assert out.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["x.bin"]


def test_write_json_makes_the_folder_and_keeps_what_it_must_not_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "results" / "run" / "report.json"
    write_json(out, {"fps": 12.5, "names": ["a", "b"]})
    assert out.read_text(encoding="utf-8") == '{\n  "fps": 12.5,\n  "names": [\n    "a",\n    "b"\n  ]\n}\n'
    write_json(out, [1], indent=1)
    assert json.loads(out.read_text()) == [1]
    with pytest.raises(OutputError, match="already exists"):
        write_json(out, [2], overwrite=False)
    assert json.loads(out.read_text()) == [1]
    blocker = tmp_path / "file"
    blocker.write_text("mine")
    with pytest.raises(OutputError, match="could not create its folder") as info:
        write_json(blocker / "report.json", {})
    assert str(blocker / "report.json") in str(info.value) and blocker.read_text() == "mine"
    with pytest.raises(TypeError):  # not JSON: raised before anything is written
        write_json(tmp_path / "bad.json", {"x": object()})
    assert not (tmp_path / "bad.json").exists()


def test_atomic_path_removes_temporary_on_error(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "p.h5") as tmp:
            assert tmp.exists() and tmp.name.startswith(fileio.TMP_PREFIX)
            raise RuntimeError("library failed")
    assert list(tmp_path.iterdir()) == []


def test_ensure_free_space(tmp_path: Path) -> None:
    fileio.ensure_free_space(tmp_path, 1)
    with pytest.raises(OutputError, match="not enough free space"):
        fileio.ensure_free_space(tmp_path, 1 << 62)


def test_describe_exception_is_one_line() -> None:
    assert fileio.describe_exception(OSError(errno.ENOSPC, "No space\nleft")) == "No space left"
    assert fileio.describe_exception(IndexError()) == "IndexError"
