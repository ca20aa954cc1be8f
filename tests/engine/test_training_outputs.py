"""engine.training's files: the resumable state via core.fileio, links never written through."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from polypviewer.core.errors import PolypviewerError
from polypviewer.engine import training


def test_state_is_saved_atomically_and_not_through_links(tmp_path: Path) -> None:
    spath = training.state_path(tmp_path / "m.safetensors")
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    old_tmp = spath.with_name(spath.name + ".tmp")  # the old writer's predictable temporary
    old_tmp.symlink_to(victim)
    training._save_state(spath, epoch=3, model={"w": torch.ones(2)})
    assert victim.read_bytes() == b"precious"
    assert training._load_state(spath)["epoch"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([spath.name, old_tmp.name, "victim"])
    old_tmp.unlink()
    spath.unlink()
    spath.symlink_to(victim)
    with pytest.raises(PolypviewerError, match="symbolic link"):
        training._save_state(spath, epoch=4)
    assert victim.read_bytes() == b"precious" and spath.is_symlink()


@pytest.mark.parametrize("which", ["out", "state"])
@pytest.mark.parametrize("flags", [{}, {"overwrite": True}, {"resume": True}])
def test_train_refuses_a_link_at_its_outputs_before_training(tmp_path: Path, which, flags) -> None:
    out = tmp_path / "m.safetensors"
    link = out if which == "out" else training.state_path(out)
    link.symlink_to(tmp_path / "nowhere")  # dangling: exists() would say no
    with pytest.raises(PolypviewerError) as err:
        # The refusal comes first: no data is needed to see it.
        training.train("unet", None, None, out, device="cpu", **flags)
    assert str(err.value).startswith(str(link)) and "symbolic link" in str(err.value)
    assert not (tmp_path / "nowhere").exists()
