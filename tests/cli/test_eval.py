"""``polypviewer eval`` with written predictions: on ``demo_set`` (the shipped clip's frames and exact
masks) and on the real HyperKvasir negatives (skipped without ../shared)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from polypviewer.cli import main
from polypviewer.core.metrics import MEAN_NAMES, PER_IMAGE_NAMES
from polypviewer.io.images import natural_key, read_mask


def _write_png(path: Path, arr: np.ndarray) -> None:
    ok, buf = cv2.imencode(".png", arr)
    assert ok
    path.write_bytes(buf.tobytes())


def _hand_dice(pred: np.ndarray, gt: np.ndarray) -> float:
    inter = np.logical_and(pred, gt).sum()
    total = pred.sum() + gt.sum()
    return 1.0 if total == 0 else 2.0 * inter / total


@pytest.fixture(scope="module")
def preds(demo_set: Path, tmp_path_factory) -> tuple[Path, dict[str, np.ndarray]]:
    """Predictions for ``demo_set`` (the shipped clip's frames, every one with a polyp): shifted
    masks, a probability map, and bad items."""
    out = tmp_path_factory.mktemp("preds")
    stems = sorted((p.stem for p in (demo_set / "masks").iterdir()), key=natural_key)
    written: dict[str, np.ndarray] = {}
    for i, stem in enumerate(stems):
        gt = read_mask(next((demo_set / "masks").glob(stem + ".*")))
        if i == 0:
            continue  # missing prediction
        if i == 1:
            _write_png(out / f"{stem}.png", np.zeros((10, 10), np.uint8))  # wrong size
            continue
        if i == 2:
            (out / f"{stem}.png").write_bytes(b"not a png")  # unreadable
            continue
        if i == 3:  # an 8-bit probability map: blurred mask, threshold at 128
            prob = cv2.GaussianBlur(gt.astype(np.uint8) * 255, (31, 31), 0)
            _write_png(out / f"{stem}.png", prob)
            written[stem] = prob >= 128
            continue
        shifted = np.roll(gt, shift=(i % 5) * 3, axis=1)  # imperfect prediction
        _write_png(out / f"{stem}.png", shifted.astype(np.uint8) * 255)
        written[stem] = shifted
    _write_png(out / "not_in_ground_truth.png", np.zeros((8, 8), np.uint8))
    return out, written


def test_eval_json_on_masks(demo_set: Path, preds, tmp_path: Path, capsys):
    pred_dir, written = preds
    out_json, out_csv = tmp_path / "eval.json", tmp_path / "eval.csv"
    status = main(["eval", "--pred", str(pred_dir), "--gt", str(demo_set),
                   "--json", str(out_json), "--csv", str(out_csv)])
    captured = capsys.readouterr()
    assert status == 1  # three items reported
    result = json.loads(out_json.read_text())
    stems = sorted((p.stem for p in (demo_set / "masks").iterdir()), key=natural_key)
    assert result["n"] == len(stems) == 12
    assert tuple(result["mean"]) == MEAN_NAMES
    assert all(isinstance(v, float) for v in result["mean"].values())
    per = {e["name"]: e for e in result["per_image"]}
    assert list(per) == stems

    # the three bad items: named, reported, scored as empty masks (every frame holds a polyp)
    for i, why in ((0, "prediction missing"), (1, "prediction is 10x10"), (2, "cannot decode")):
        entry = per[stems[i]]
        assert why in entry["error"] and "scored as an empty mask" in entry["error"]
        assert why in captured.err
        assert entry["dice"] == 0.0 and entry["recall"] == 0.0 and entry["precision"] == 1.0
    assert "not_in_ground_truth" in captured.err and "without ground truth" in captured.err

    # every other item: Dice computed here by hand from the files
    for stem, pred in written.items():
        gt = read_mask(next((demo_set / "masks").glob(stem + ".*")))
        assert per[stem]["dice"] == pytest.approx(_hand_dice(pred, gt))
        assert "error" not in per[stem]
    assert per[stems[4]]["dice"] < 1.0  # shifted masks are not perfect
    dice_mean = np.mean([per[s]["dice"] for s in stems])
    assert result["mean"]["dice"] == pytest.approx(dice_mean)
    assert 0.0 < result["mean"]["s_measure"] < 1.0
    assert 0.0 < result["mean"]["mean_dice_256"] < 1.0

    # the table shows the mean row, the CSV one row per image
    assert "mean (n=12)" in captured.out and "meanDice(256)" in captured.out
    rows = list(csv.DictReader(out_csv.open()))
    assert [r["name"] for r in rows] == stems
    assert set(PER_IMAGE_NAMES) <= set(rows[0])
    assert float(rows[5]["dice"]) == pytest.approx(per[stems[5]]["dice"])


def test_eval_negatives_empty_predictions_are_perfect(negatives: Path, tmp_path: Path, capsys):
    pred = tmp_path / "pred" / "masks"  # a Kvasir layout on the prediction side too
    pred.mkdir(parents=True)
    for p in (negatives / "masks").iterdir():
        gt = read_mask(p)
        _write_png(pred / f"{p.stem}.png", np.zeros(gt.shape, np.uint8))
    (pred.parent / "probs").mkdir()  # as `polypviewer predict --save-prob` leaves it
    out_json = tmp_path / "neg.json"
    status = main(["eval", "--pred", str(pred.parent), "--gt", str(negatives),
                   "--json", str(out_json), "--fast", "--summary"])
    assert status == 0
    result = json.loads(out_json.read_text())
    assert result["n"] == 10
    assert all(result["mean"][k] == 1.0 for k in ("dice", "iou", "precision", "recall",
                                                   "accuracy", "f2"))
    assert result["mean"]["s_measure"] is None  # --fast
    captured = capsys.readouterr()
    assert "mean (n=10)" in captured.out and captured.out.count("\n") == 2  # header + mean
    assert f"--pred {pred.parent / 'probs'}" in captured.err  # the hint, not a silent switch


def test_eval_refuses_to_overwrite_and_names_bad_folders(negatives: Path, tmp_path: Path, capsys):
    existing = tmp_path / "keep.json"
    existing.write_text("user data")
    status = main(["eval", "--pred", str(negatives), "--gt", str(negatives),
                   "--json", str(existing), "--fast"])
    assert status == 2 and existing.read_text() == "user data"
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "keep.json" in err and "--overwrite" in err

    status = main(["eval", "--pred", str(negatives), "--gt", str(tmp_path / "nowhere"), "--fast"])
    err = capsys.readouterr().err.strip()
    assert status == 2 and "nowhere: not a folder" in err and err.count("\n") == 0

    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["eval", "--pred", str(negatives), "--gt", str(empty), "--fast"]) == 2
    assert "no mask images found" in capsys.readouterr().err

    assert main(["eval", "--pred", str(negatives), "--gt", str(negatives),
                 "--json", str(existing), "--fast", "--overwrite"]) == 0
    assert json.loads(existing.read_text())["n"] == 10


def test_eval_json_naming_a_folder_is_a_one_line_error_even_with_overwrite(tmp_path: Path, capsys):
    gt, pred, folder = tmp_path / "gt", tmp_path / "pred", tmp_path / "report.json"
    for d in (gt, pred, folder):
        d.mkdir()
    _write_png(gt / "a.png", np.zeros((8, 8), np.uint8))
    _write_png(pred / "a.png", np.zeros((8, 8), np.uint8))
    (folder / "mine.txt").write_text("keep")
    for extra in ([], ["--overwrite"]):
        status = main(["eval", "--pred", str(pred), "--gt", str(gt), "--json", str(folder), "--fast", *extra])
        err = capsys.readouterr().err.strip()
        assert status == 2 and err == f"polypviewer: error: {folder}: is a folder; give a file name"
        assert folder.is_dir() and (folder / "mine.txt").read_text() == "keep"


def test_eval_reports_problems_like_predict_and_extract(tmp_path: Path, capsys):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    gt.mkdir()
    pred.mkdir()
    for stem in ("a", "b"):
        _write_png(gt / f"{stem}.png", np.zeros((8, 8), np.uint8))
    _write_png(pred / "a.png", np.zeros((8, 8), np.uint8))
    _write_png(pred / "z.png", np.zeros((8, 8), np.uint8))  # no ground truth: a note, not a problem
    assert main(["eval", "--pred", str(pred), "--gt", str(gt), "--fast"]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert all(ln.startswith("polypviewer eval: ") for ln in lines), lines
    assert f"{pred / 'b'}.*: prediction missing; scored as an empty mask" in lines[0]
    assert "without ground truth ignored: z" in lines[1]
    assert lines[2] == "polypviewer eval: 1 problem(s) reported above; the run was not clean (exit status 1)"
    _write_png(pred / "b.png", np.zeros((8, 8), np.uint8))
    assert main(["eval", "--pred", str(pred), "--gt", str(gt), "--fast"]) == 0  # notes alone: clean
