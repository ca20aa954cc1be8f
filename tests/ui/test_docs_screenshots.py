"""docs/screenshots.py end to end on the shipped PolypGen frames (shots 01-09) and the demo
clip (shot 10, propagation) with 2 frames stepped, a tiny real network and a 1-step fine-tune,
and the guide's keyboard table against the live window's actions."""

from __future__ import annotations

import csv
import importlib.util
import sys
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "docs" / "screenshots.py"


def _script():
    spec = importlib.util.spec_from_file_location("_pv_docs_screenshots", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def user_dirs(tmp_path, monkeypatch):
    """The script redirects the user folders itself; monkeypatch restores them afterwards."""
    for var in ("POLYPVIEWER_CONFIG", "POLYPVIEWER_CACHE", "POLYPVIEWER_PROJECTS"):
        monkeypatch.setenv(var, str(tmp_path / "unused" / var))
    return tmp_path


@pytest.mark.slow
def test_the_tour_runs_and_writes_every_screenshot(qapp, user_dirs):
    import torch

    from polypviewer.nets.registry import IMAGENET_MEAN, IMAGENET_STD, Preprocessing, build_model, get_spec
    from polypviewer.nets.weights import save_checkpoint

    tmp = user_dirs
    torch.manual_seed(0)
    # The window runs a weights file (not an in-memory predictor): Propagate loads a second copy
    # of the running model from it. A tiny unet at 64 px; the fine-tune's base a lite_pranet.
    shown = tmp / "unet64.safetensors"
    save_checkpoint(shown, build_model("unet"), model_name="unet",
                    preprocessing=Preprocessing(64, "RGB", IMAGENET_MEAN, IMAGENET_STD))
    base = tmp / "base.safetensors"
    save_checkpoint(base, build_model("lite_pranet"), model_name="lite_pranet",
                    preprocessing=replace(get_spec("lite_pranet").preprocessing, input_size=64))
    docs = _script()
    out = tmp / "images"
    res = docs.make_screenshots(out, frames=2, weights=str(shown), timeout=120, finetune_steps=1,
                                finetune_size=64, finetune_base=str(base), accept=2,
                                full_timeline=False, work=tmp / "work", propagate_frames=1)
    assert sorted(res.written) == sorted(docs.SHOTS)
    for name, path in res.written.items():
        assert path.parent == out and path.stat().st_size <= 290 * 1024, name
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        assert img is not None and img.shape[0] > 200 and img.shape[1] > 300, name
        assert float(np.std(img)) > 5.0, f"{name} is blank"  # a real grab, not an empty image
    # shots 01-09 are of the real PolypGen frames, the propagation (10) of the video
    assert res.sources == {**{name: "polypgen" for name in docs.SHOTS}, "10-propagate.png": "demo_clip.mp4"}
    # what the steps did, read back from their own outputs
    export = tmp / "work" / "export" / "polypgen-kvasir"  # the export folder is named after the source
    assert res.export == export
    masks = sorted(p.name for p in (export / "masks").glob("*.png"))
    with open(export / "stats.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    states = sorted(row["state"] for row in rows)
    assert len(masks) == 3 and states == ["accepted", "accepted", "corrected"]
    # the exported masks are of PolypGen frames (their Kvasir names), not of the clip
    images = {p.stem for p in (docs.POLYPGEN / "images").iterdir()}
    assert {Path(m).stem for m in masks} <= images
    corrected = next(r for r in rows if r["state"] == "corrected")
    assert int(corrected["strokes"]) >= 2  # brush + polygon (+ eraser where the model had a false positive)
    assert (tmp / "work" / "finetuned.safetensors").is_file()
    projects = tmp / "work" / "projects"
    assert list(projects.glob("polypgen-*.pvproj.h5")) and list(projects.glob("demo_clip.mp4-*.pvproj.h5"))
    # the Box tool made a mask on a PolypGen frame no earlier step touched (0..2: stepped,
    # accepted, corrected)
    assert res.boxed is not None and res.boxed not in (0, 1, 2) and res.box_pixels > 0
    # on the clip a box of its own, and propagation went on forward from that frame
    assert res.propagate_from is not None
    assert res.propagated and all(f > res.propagate_from for f in res.propagated)
    # the guide refers to every screenshot the script makes
    guide = (ROOT / "docs" / "guide.md").read_text(encoding="utf-8")
    for name in docs.SHOTS:
        assert f"images/{name}" in guide


def test_the_guides_keyboard_table_matches_the_app(qapp, user_dirs):
    docs = _script()
    table = docs.window_keymap()
    assert "| `W` | Next worst frame |" in table and "| `Ctrl+Z` | Undo |" in table
    guide = (ROOT / "docs" / "guide.md").read_text(encoding="utf-8")
    assert docs.guide_keymap(guide) == table, "run `docs/screenshots.py --update-guide`"


def test_png_writer_keeps_a_budget(qapp, tmp_path):
    from PySide6.QtGui import QPixmap
    from PySide6.QtWidgets import QLabel

    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (600, 800, 3), np.uint8)  # incompressible: forces the fallbacks
    cv2.imwrite(str(tmp_path / "noise.png"), noise)
    label = QLabel()
    label.setPixmap(QPixmap(str(tmp_path / "noise.png")))
    label.resize(800, 600)
    path = _script().save_png(label, tmp_path / "shot.png", max_kb=150)
    assert path.stat().st_size <= 150 * 1024
    assert cv2.imread(str(path)) is not None
