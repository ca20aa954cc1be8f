"""engine.cards.write_card: both files or neither, no overwrite by default, never through a link."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from polypviewer.core.errors import PolypviewerError
from polypviewer.engine.cards import card_paths, write_card

CARD = {"file": "m.safetensors", "sha256": "ab" * 32, "model": "unet", "preprocessing": {},
        "meta": {"name": "m", "params": 10}}


def test_card_written_with_umask_mode(tmp_path: Path) -> None:
    out = tmp_path / "m.safetensors"
    old = os.umask(0o022)
    try:
        jpath, mpath = write_card(out, CARD)
    finally:
        os.umask(old)
    assert (jpath, mpath) == card_paths(out)
    assert jpath.read_text().startswith("{") and mpath.read_text().startswith("# m")
    assert {stat.S_IMODE(p.stat().st_mode) for p in (jpath, mpath)} == {0o644}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "m.md"]


def test_an_existing_card_is_kept_unless_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "m.safetensors"
    jpath, mpath = card_paths(out)
    jpath.write_text("mine")
    with pytest.raises(PolypviewerError) as err:
        write_card(out, CARD)
    assert str(err.value).startswith(str(jpath)) and "already exists" in str(err.value)
    assert jpath.read_text() == "mine" and not mpath.exists()
    write_card(out, CARD, overwrite=True)
    assert '"sha256"' in jpath.read_text() and mpath.exists()


def test_a_dangling_md_link_is_not_followed_and_no_half_card(tmp_path: Path) -> None:
    out = tmp_path / "m.safetensors"
    jpath, mpath = card_paths(out)
    mpath.symlink_to(tmp_path / "planted.md")
    for overwrite in (False, True):
        with pytest.raises(PolypviewerError, match="symbolic link"):
            write_card(out, CARD, overwrite=overwrite)
    assert not (tmp_path / "planted.md").exists() and not jpath.exists()


def test_full_disk_on_the_md_leaves_no_json(tmp_path: Path, monkeypatch, full_disk_for) -> None:
    out = tmp_path / "m.safetensors"
    full_disk_for(lambda path: path.endswith(".md"))  # the Markdown half of the card
    with pytest.raises(PolypviewerError) as err:
        write_card(out, CARD)
    monkeypatch.undo()
    assert "No space left" in str(err.value) and "\n" not in str(err.value)
    assert list(tmp_path.iterdir()) == []
