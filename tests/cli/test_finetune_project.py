"""`polypviewer finetune --data PROJECT` on a review project made from 5 frames of the shipped demo
clip (``kvasir_copy``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from polypviewer.cli import main
from polypviewer.core.edits import ReviewState
from polypviewer.io.sources import open_source
from polypviewer.io.store import Project, SourceRef
from polypviewer.nets.weights import sha256_file


@pytest.fixture()
def project(kvasir_copy, tmp_path: Path) -> tuple[Path, list[str], str]:
    """A project over 5 frames: 2 accepted, 2 corrected (a stroke each), 1 flagged."""
    root, _ = kvasir_copy(5, name="cvc5")
    path = tmp_path / "cvc5.pvproj.h5"
    with open_source(root) as src:
        names = [src.name(i) for i in range(len(src))]
        with Project.create(path, SourceRef.from_path(root, kind=src.kind, n_frames=len(src))) as p:
            for i in range(4):
                edits = p.start_frame(i, src.mask(i), model_version="test", name=names[i])
                if i < 2:
                    p.set_state(i, ReviewState.ACCEPTED)
                else:  # a reviewer's correction: erase a block
                    assert edits.replace(np.zeros_like(edits.mask), "clear") is not None
                    assert p.session.state(i) == ReviewState.CORRECTED
            p.set_state(4, ReviewState.FLAGGED)
    return path, names, names[4]


@pytest.fixture()
def base(base_ckpt: Path) -> Path:
    return base_ckpt  # tests/conftest.py: an untrained lite_pranet at 64 px


def test_load_set_reads_accepted_and_corrected_frames_of_a_project(project) -> None:
    from polypviewer.engine.data import load_set

    path, names, flagged = project
    data = load_set(path)
    assert data.names == names[:4] and flagged not in data.names
    assert not data.masks[2].any() and not data.masks[3].any()  # the corrections, not the GT
    with open_source(path.parent / "cvc5") as src:
        np.testing.assert_array_equal(data.masks[0], src.mask(0))


def test_finetune_cli_on_a_project_file(project, base: Path, tmp_path: Path, capsys) -> None:
    path, names, flagged = project
    out = tmp_path / "tuned.safetensors"
    before = sha256_file(base)
    args = ["finetune", "--base", str(base), "--data", str(path), "--out", str(out), "--holdout", "0.5",
            "--epochs", "1", "--max-steps", "2", "--threads", "1", "--quiet"]
    assert main(args) == 0, capsys.readouterr().err
    assert sha256_file(base) == before
    meta = json.loads(out.with_suffix(".json").read_text())["meta"]
    used = sorted(meta["data"]["train"] + meta["data"]["held_out"])
    assert used == sorted(names[:4]) and flagged not in used
    assert meta["data"]["source"] == str(path)
    assert "held-out frames (2)" in capsys.readouterr().out


def test_finetune_cli_refuses_a_project_open_elsewhere_and_a_damaged_one(project, base, tmp_path, capsys) -> None:
    path, _, _ = project
    out = tmp_path / "t.safetensors"
    with Project.open(path):  # the app holds it: the CLI names the file and stops
        assert main(["finetune", "--base", str(base), "--data", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(path) in err[0] and "open in another" in err[0]
    bad = tmp_path / "bad.pvproj.h5"
    bad.write_bytes(b"not hdf5 at all")
    assert main(["finetune", "--base", str(base), "--data", str(bad), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(bad) in err[0]
    assert bad.read_bytes() == b"not hdf5 at all" and not out.exists()
