"""core.fileio: writing a group of files (an image and its mask) all or nothing; reading the
umask without racing other writer threads."""

from __future__ import annotations

import errno
import os
import stat
import threading
from pathlib import Path

import pytest

from polypviewer.core import fileio
from polypviewer.core.fileio import OutputError, atomic_write_all


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_group_writes_every_file_with_umask_mode(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        atomic_write_all([(tmp_path / "a.png", b"A"), (tmp_path / "b.txt", "B")])
    finally:
        os.umask(old)
    assert (tmp_path / "a.png").read_bytes() == b"A" and (tmp_path / "b.txt").read_text() == "B"
    assert {stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()} == {0o640}
    assert _names(tmp_path) == ["a.png", "b.txt"]


def test_a_failed_write_changes_none_of_the_group(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "old.png").write_bytes(b"old")
    real, calls = os.fsync, []

    def fsync(fd):
        calls.append(fd)
        if len(calls) == 2:  # the second file's data does not fit
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd)

    monkeypatch.setattr(fileio.os, "fsync", fsync)
    with pytest.raises(OutputError) as info:
        atomic_write_all([(tmp_path / "old.png", b"new"), (tmp_path / "second.png", b"2")])
    assert str(info.value) == f"{tmp_path / 'second.png'}: could not write: No space left on device"
    assert (tmp_path / "old.png").read_bytes() == b"old"
    assert _names(tmp_path) == ["old.png"]


def test_a_failed_move_rolls_back_the_moves_already_made(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "img.png").write_bytes(b"old image")
    (tmp_path / "mask.png").write_bytes(b"old mask")
    real = os.replace

    def replace(src, dst):
        if str(dst).endswith(("mask.png", "m2.png")):
            raise OSError(errno.EIO, "Input/output error")
        return real(src, dst)

    monkeypatch.setattr(fileio.os, "replace", replace)
    with pytest.raises(OutputError, match="mask.png: could not write: Input/output error"):
        atomic_write_all([(tmp_path / "img.png", b"new image"), (tmp_path / "mask.png", b"new mask")])
    with pytest.raises(OutputError, match="m2.png"):
        atomic_write_all([(tmp_path / "i2.png", b"i"), (tmp_path / "m2.png", b"m")])
    assert (tmp_path / "img.png").read_bytes() == b"old image", "the replaced file got its content back"
    assert (tmp_path / "mask.png").read_bytes() == b"old mask"
    assert _names(tmp_path) == ["img.png", "mask.png"], "a new file of a failed group is removed"


def test_group_refuses_links_and_existing_files_before_writing(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious")
    (tmp_path / "link.png").symlink_to(victim)
    with pytest.raises(OutputError, match="symbolic link"):
        atomic_write_all([(tmp_path / "first.png", b"1"), (tmp_path / "link.png", b"x")])
    (tmp_path / "mine.png").write_text("mine")
    with pytest.raises(OutputError, match="already exists"):
        atomic_write_all([(tmp_path / "first.png", b"1"), (tmp_path / "mine.png", b"x")], overwrite=False)
    assert victim.read_text() == "precious" and (tmp_path / "mine.png").read_text() == "mine"
    assert _names(tmp_path) == ["link.png", "mine.png", "victim"]


@pytest.mark.parametrize("proc", [True, False], ids=["proc", "no-proc"])
def test_reading_the_umask_from_two_threads_never_loses_it(tmp_path: Path, monkeypatch, proc) -> None:
    """Thread B reads the umask while thread A is inside its set-and-restore window (as
    predict's two writer threads can): B must still see the real umask, and the process
    keeps it afterwards. ``no-proc``: where /proc/self/status cannot tell it."""
    if not proc:
        def no_open(*a, **k):
            raise OSError(errno.ENOENT, "No such file or directory")

        monkeypatch.setattr(fileio, "open", no_open, raising=False)
    real_umask = os.umask
    seen: list[int] = []
    b: list[threading.Thread] = []

    def umask(value):
        previous = real_umask(value)
        if not b:  # the first call: A is now in the window; B reads the umask meanwhile
            b.append(threading.Thread(target=lambda: seen.append(fileio._umask())))
            b[0].start()
            b[0].join(0.3)  # returns at once if B did not wait for A (the race), else times out
        return previous

    old = real_umask(0o077)
    try:
        monkeypatch.setattr(fileio.os, "umask", umask)
        a = fileio._umask()
        if b:
            b[0].join(5)
        monkeypatch.undo()
        if not proc:
            assert b and seen, "the fallback was exercised"
        after = real_umask(0o077)
    finally:
        real_umask(old)
    assert a == 0o077
    assert seen in ([], [0o077]), f"the other thread read a temporary umask {seen}"
    assert after == 0o077, "the process umask is the one it had"
