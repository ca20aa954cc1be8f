"""`polypviewer finetune --data damaged.pvproj.h5`: one line naming the file, exit 2, the file kept."""

from __future__ import annotations

import hashlib
from pathlib import Path

import h5py
import numpy as np
import pytest

from polypviewer.cli import main
from polypviewer.core.edits import ReviewState
from polypviewer.io.store import Project, SourceRef


@pytest.fixture(scope="module")
def base() -> Path:
    from polypviewer.nets.weights import default_weights

    path = default_weights()
    if path is None:
        pytest.skip("no default model installed")
    return path


def _project(tmp_path: Path) -> Path:
    src = tmp_path / "clip.bin"
    src.write_bytes(bytes(range(256)) * 20)
    path = tmp_path / "review.pvproj.h5"
    with Project.create(path, SourceRef.from_path(src, kind="video", n_frames=3)) as p:
        for f in range(2):
            p.start_frame(f, np.eye(16, dtype=bool), model_version=f"clinic-v{f + 2}", name=f"frame{f}")
            p.set_state(f, ReviewState.ACCEPTED)
    return path


def _run(path: Path, base: Path, tmp_path: Path, capsys) -> list[str]:
    out = tmp_path / "t.safetensors"
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    assert main(["finetune", "--base", str(base), "--data", str(path), "--out", str(out), "--quiet"]) == 2
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before and not out.exists()
    return capsys.readouterr().err.strip().splitlines()


def test_a_byte_flipped_project_is_one_line_and_kept(tmp_path, base, capsys):
    path = _project(tmp_path)
    data = bytearray(path.read_bytes())
    pos = data.find(b"clinic-v2")
    assert pos > 0
    data[pos + 7] ^= ord("v") ^ ord("Z")  # 'v2' -> 'Z2', as the audit found accepted
    path.write_bytes(bytes(data))
    err = _run(path, base, tmp_path, capsys)
    assert len(err) == 1 and str(path) in err[0] and "damaged project file" in err[0], err


def test_content_changed_behind_the_checksum_is_one_line(tmp_path, base, capsys):
    path = _project(tmp_path)
    with h5py.File(path, "a") as h:
        h["frames/000000"].attrs["name"] = "another-frame"
    err = _run(path, base, tmp_path, capsys)
    assert len(err) == 1 and str(path) in err[0] and "checksum" in err[0], err
