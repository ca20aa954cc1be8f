"""``polypviewer predict`` on an image folder, a Kvasir-layout dataset with ground truth (the shipped
demo clip's frames, ``demo_set``), the shipped demo clip and the real clip."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from polypviewer.cli import main

from ..conftest import truncated_avi


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    """An untrained U-Net whose checkpoint says 64x64 input: the real code path, tiny cost."""
    from polypviewer.nets import build_model
    from polypviewer.nets.registry import Preprocessing
    from polypviewer.nets.weights import save_checkpoint

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("w") / "unet64.safetensors"
    save_checkpoint(path, build_model("unet"), model_name="unet", preprocessing=Preprocessing(64, "BGR"))
    return path


def read(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert img is not None, path
    return img


def test_predict_image_folder_names_masks_by_stem_and_skips_a_bad_file(demo_set, weights, tmp_path, capsys):
    src = tmp_path / "frames"
    src.mkdir()
    stems = sorted(p.stem for p in (demo_set / "images").iterdir())[:3]
    for s in stems:
        os.symlink(demo_set / "images" / f"{s}.png", src / f"{s}.png")
    (src / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "out"
    rc = main(["predict", str(src), "--weights", str(weights), "--out", str(out), "--save-prob", "-q"])
    err = capsys.readouterr().err
    assert rc == 1
    assert "broken" in err and "Traceback" not in err
    assert sorted(p.stem for p in (out / "masks").iterdir()) == stems
    for s in stems:
        frame = read(src / f"{s}.png")
        mask, prob = read(out / "masks" / f"{s}.png"), read(out / "probs" / f"{s}.png")
        assert mask.shape == prob.shape == frame.shape[:2]
        assert set(np.unique(mask)) <= {0, 255}
        # the mask is the thresholded probability map that was saved alongside it
        assert np.array_equal(mask == 255, prob >= 128)


def test_predict_video_names_frames_and_two_shards_equal_one_run(weights, tmp_path, capsys):
    from polypviewer.io.demo_asset import shipped_demo

    clip = shipped_demo()  # 60 frames with sidecar masks
    full, a, b = tmp_path / "full", tmp_path / "a", tmp_path / "b"
    assert main(["predict", str(clip), "--weights", str(weights), "--out", str(full), "-q"]) == 0
    names = sorted(p.name for p in (full / "masks").iterdir())
    assert names == [f"demo_clip_{i:06d}.png" for i in range(60)]
    assert main(["predict", str(clip), "--weights", str(weights), "--out", str(a), "--shard", "0/2", "-q"]) == 0
    assert main(["predict", str(clip), "--weights", str(weights), "--out", str(b), "--shard", "1/2", "-q"]) == 0
    sa = sorted(p.name for p in (a / "masks").iterdir())
    sb = sorted(p.name for p in (b / "masks").iterdir())
    assert sa == names[0::2] and sb == names[1::2]
    for n in names:
        other = a if n in sa else b
        assert np.array_equal(read(full / "masks" / n), read(other / "masks" / n)), n


def test_predict_dataset_with_ground_truth_prints_metrics_and_overlay(demo_set, weights, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["predict", str(demo_set), "--weights", str(weights), "--out", str(out), "--shard", "0/3",
               "--overlay-video", str(tmp_path / "overlay.mp4"), "-q", "--backend", "torch"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert len(list((out / "masks").iterdir())) == 4
    assert "ground truth for 4 item(s)" in captured.out and "dice" in captured.out
    cap = cv2.VideoCapture(str(tmp_path / "overlay.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 4
    cap.release()


def test_predict_refuses_to_overwrite_and_reports_usage_errors(demo_set, weights, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["predict", str(demo_set), "--weights", str(weights), "--out", str(out), "--shard", "0/10", "-q",
            "--backend", "torch"]
    assert main(args) == 0
    before = {p: p.read_bytes() for p in (out / "masks").iterdir()}
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "already exists" in err and "--overwrite" in err and len(err.strip().splitlines()) == 1
    assert {p: p.read_bytes() for p in (out / "masks").iterdir()} == before
    assert main(args + ["--overwrite"]) == 0

    assert main(["predict", str(demo_set), "--model", "unet", "--out", str(tmp_path / "x")]) == 2
    assert "--weights" in capsys.readouterr().err
    assert main(["predict", str(demo_set), "--weights", str(weights), "--out", str(tmp_path / "y"),
                 "--shard", "3/2"]) == 2
    assert main(["predict", str(tmp_path / "missing"), "--weights", str(weights), "--out", str(tmp_path / "z")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "missing" in err


def test_predict_impossible_engine_choice_is_a_one_line_usage_error(demo_set, weights, tmp_path, capsys,
                                                                     monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["predict", str(demo_set), "--weights", str(weights), "--out", str(tmp_path / "o"),
                 "--device", "cuda"]) == 2
    assert main(["predict", str(demo_set), "--weights", str(weights), "--out", str(tmp_path / "o"),
                 "--precision", "fp16"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "no CUDA device" in err[0] and "fp16 inference needs a CUDA device" in err[1]
    assert not (tmp_path / "o" / "masks").exists()


def test_predict_int8_calibrates_on_the_source_and_shards_equal_one_run(clip384, weights, tmp_path, capsys,
                                                                          monkeypatch):
    from polypviewer.cli.predict import calibration_frames
    from polypviewer.engine import backends as B
    from polypviewer.io.sources import open_source

    with open_source(clip384) as src:  # evenly over the whole clip: the same for every shard
        picks = calibration_frames(src, n=4)
        assert len(picks) == 4
        assert np.array_equal(picks[0], src.frame(0)) and np.array_equal(picks[-1], src.frame(len(src) - 1))
    if not (B.openvino_available() and B.nncf_available()):
        pytest.skip("openvino or nncf not installed")
    monkeypatch.setenv("POLYPVIEWER_CACHE", str(tmp_path / "cache"))
    full, a, b = tmp_path / "full", tmp_path / "a", tmp_path / "b"
    assert main(["predict", str(clip384), "--weights", str(weights), "--out", str(full), "--precision", "int8"]) == 0
    err = capsys.readouterr().err
    assert "int8: quantising on 26 frames" in err and "openvino int8" in err
    assert main(["predict", str(clip384), "--weights", str(weights), "--out", str(a), "--precision", "int8",
                 "--shard", "0/2", "-q"]) == 0
    assert main(["predict", str(clip384), "--weights", str(weights), "--out", str(b), "--precision", "int8",
                 "--shard", "1/2", "-q"]) == 0
    names = sorted(p.name for p in (full / "masks").iterdir())
    assert len(names) == 26
    for n in names:
        other = a if (a / "masks" / n).exists() else b
        assert np.array_equal(read(full / "masks" / n), read(other / "masks" / n)), n
    assert main(["predict", str(clip384), "--weights", str(weights), "--out", str(tmp_path / "t"),
                 "--precision", "int8", "--backend", "torch"]) == 2
    assert "--backend openvino" in capsys.readouterr().err


# -- what the source opener found is reported, and the exit status says the run was not clean


def _write_img(path: Path, h: int, w: int, value: int = 120) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.full((h, w, 3), value, np.uint8))
    return path


def _problem_lines(err: str, command: str = "predict") -> list[str]:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert "Traceback" not in err
    assert lines and all(ln.startswith(f"polypviewer {command}: ") for ln in lines), lines
    assert "the run was not clean" in lines[-1]
    return lines


def test_predict_reports_two_files_with_one_name_and_predicts_the_rest(weights, tmp_path, capsys):
    src = tmp_path / "frames"
    kept = _write_img(src / "frame.jpg", 48, 64)
    skipped = _write_img(src / "frame.png", 24, 32)
    _write_img(src / "other.png", 40, 40)
    out = tmp_path / "out"
    rc = main(["predict", str(src), "--weights", str(weights), "--out", str(out), "-q"])
    lines = _problem_lines(capsys.readouterr().err)
    assert rc == 1
    assert sorted(p.name for p in (out / "masks").iterdir()) == ["frame.png", "other.png"]
    assert read(out / "masks" / "frame.png").shape == (48, 64)  # the kept file's prediction
    clash = [ln for ln in lines if str(skipped) in ln]
    assert len(clash) == 1 and "skipped" in clash[0] and kept.name in clash[0]
    assert len(lines) == 2


def test_predict_truncated_video_says_how_many_frames_were_lost(weights, tmp_path, capsys):
    avi = truncated_avi(tmp_path / "cut.avi")
    out = tmp_path / "out"
    rc = main(["predict", str(avi), "--weights", str(weights), "--out", str(out), "-q"])
    lines = _problem_lines(capsys.readouterr().err)
    assert rc == 1
    assert len(list((out / "masks").iterdir())) == 14
    assert lines[:-1] == [f"polypviewer predict: {avi}: header says 26 frames, only 14 could be decoded"]


def test_predict_kvasir_reports_pairing_and_bad_ground_truth_and_still_predicts(weights, tmp_path, capsys):
    root = tmp_path / "data"
    for stem in ("a", "b", "c", "lonely"):
        _write_img(root / "images" / f"{stem}.png", 30, 40)
    gt = np.zeros((30, 40), np.uint8)
    gt[5:15, 5:20] = 255
    (root / "masks").mkdir()
    assert cv2.imwrite(str(root / "masks" / "a.png"), gt)
    assert cv2.imwrite(str(root / "masks" / "b.png"), np.zeros((10, 10), np.uint8))  # wrong size
    (root / "masks" / "c.png").write_bytes(b"not a png")                             # unreadable
    assert cv2.imwrite(str(root / "masks" / "orphan.png"), gt)
    out = tmp_path / "out"
    rc = main(["predict", str(root), "--weights", str(weights), "--out", str(out), "-q"])
    captured = capsys.readouterr()
    lines = _problem_lines(captured.err)
    assert rc == 1
    # every image is predicted, a bad ground-truth mask or none at all
    assert sorted(p.stem for p in (out / "masks").iterdir()) == ["a", "b", "c", "lonely"]
    assert "ground truth for 1 item(s)" in captured.out  # only a is scored

    def line(needle: str) -> str:
        found = [ln for ln in lines if needle in ln]
        assert len(found) == 1, (needle, lines)
        return found[0]

    assert "no mask" in line(str(root / "images" / "lonely.png"))
    assert "mask without an image" in line(str(root / "masks" / "orphan.png"))
    assert "differs from image size" in line(str(root / "masks" / "b.png"))
    assert "cannot decode" in line(str(root / "masks" / "c.png"))
    assert "left out of the metrics" in line("b.png") and "left out of the metrics" in line("c.png")
    assert len(lines) == 5
