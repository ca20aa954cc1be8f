"""A CVC-ClinicDB sequence opened as what it is: a video with ground truth (issue 13 §2).

The test builds ``seq2.mp4`` (MPEG-4 part 2) from frames of sequence 2 and ``seq2_masks/``
(``seq2_<i:06d>.png``, the layout ``io.sources.VideoSource`` reads as a video's ground
truth), then reviews it end to end with the shipped network: open it, predict it with the
metrics against the expert masks, and propagate the first expert mask through it.
Nothing is written into the repository (a temporary folder).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from polypviewer.cli import main
from polypviewer.io.images import read_image, read_mask
from polypviewer.io.sources import open_source

N = 12  # the first 12 frames of sequence 2 (the network alone scores ~0.87 on this sequence)


def build_sequence_video(root: Path, sequence: int, out: Path, n: int | None = None) -> tuple[Path, list[str]]:
    """``out/seq<k>.mp4`` + ``out/seq<k>_masks/`` from CVC-ClinicDB-612 sequence ``k``; the frame ids."""
    seqs = json.loads((root / "sequences.json").read_text())["sequences"]
    ids = [s for s in seqs if s["id"] == sequence][0]["frames"][:n]
    stem = f"seq{sequence}"
    video = out / f"{stem}.mp4"
    masks = out / f"{stem}_masks"
    masks.mkdir(parents=True)
    first = read_image(root / "images" / f"{ids[0]}.png")
    h, w = first.shape[:2]
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (w, h))
    assert writer.isOpened()
    for k, i in enumerate(ids):
        writer.write(read_image(root / "images" / f"{i}.png")[..., ::-1])
        cv2.imwrite(str(masks / f"{stem}_{k:06d}.png"), read_mask(root / "masks" / f"{i}.png").astype(np.uint8) * 255)
    writer.release()
    return video, ids


@pytest.fixture
def cvc_video(shared_data, tmp_path):
    root = shared_data / "cvc-clinicdb-612"
    if not (root / "sequences.json").is_file():
        pytest.skip(f"{root}/sequences.json not found")
    video, ids = build_sequence_video(root, 2, tmp_path, N)
    return root, video, ids


def test_a_cvc_sequence_opens_as_a_video_with_its_expert_masks(cvc_video):
    root, video, ids = cvc_video
    with open_source(video) as src:
        assert src.kind == "video" and len(src) == len(ids) and src.has_masks and not src.problems
        for k, i in enumerate(ids):
            assert (src.mask(k) == read_mask(root / "masks" / f"{i}.png")).all()
            diff = np.abs(src.frame(k).astype(int) - read_image(root / "images" / f"{i}.png").astype(int))
            assert diff.mean() < 8  # lossy MPEG-4, but the same frame in the same order
        assert src.name(3) == "seq2_000003"


def test_review_end_to_end_predict_scores_and_propagate(cvc_video, tmp_path, capsys):
    _, video, ids = cvc_video
    assert main(["predict", str(video), "--out", str(tmp_path / "pred"), "-q"]) == 0
    out = capsys.readouterr().out
    m = re.search(rf"ground truth for {len(ids)} item\(s\), mean per image: dice ([0-9.]+)", out)
    assert m and float(m.group(1)) > 0.7, out
    assert len(list((tmp_path / "pred" / "masks").glob("seq2_*.png"))) == len(ids)

    seed = video.parent / "seq2_masks" / "seq2_000000.png"
    assert main(["propagate", str(video), "--seed", str(seed), "--from", "0", "--out", str(tmp_path / "prop"),
                 "-q"]) == 0
    out = capsys.readouterr().out
    m = re.search(r"dice against the source's ground truth: ([0-9.]+) \(mean of (\d+) frames\)", out)
    assert m and int(m.group(2)) == len(ids) - 1 and float(m.group(1)) > 0.7, out
    names = sorted(p.name for p in (tmp_path / "prop" / "masks").iterdir())
    assert names == [f"seq2_{k:06d}.png" for k in range(1, len(ids))]
