"""The synthetic demo clip: deterministic rendering, and the shipped asset is what the code makes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from polypviewer.io.demo_asset import DEMO_STEM, DemoError, DemoScene, count_frames, generate_demo, shipped_demo
from polypviewer.io.images import read_mask
from polypviewer.io.sources import open_source

CHECKED = (0, 31, 59)


@pytest.fixture(scope="module")
def rendered() -> dict[int, tuple[np.ndarray, np.ndarray]]:
    scene = DemoScene()  # the shipped clip's defaults: 60 frames, 384x384, seed 0
    return {i: scene.render(i) for i in CHECKED}


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0 ** 2 / max(mse, 1e-12)))


def test_rendering_is_deterministic(rendered):
    img, mask = DemoScene().render(31)
    assert np.array_equal(img, rendered[31][0]) and np.array_equal(mask, rendered[31][1])
    other, _ = DemoScene(seed=1).render(31)
    assert _psnr(other, img) < 25  # another seed is another scene
    for img, mask in rendered.values():
        assert img.shape == (384, 384, 3) and img.dtype == np.uint8
        assert mask.shape == (384, 384) and mask.dtype == bool
        assert 0.003 < mask.mean() < 0.2  # one polyp, not empty, not the whole frame
    # colonoscopy-like: red dominates green and blue over the field of view
    img = rendered[0][0]
    fov = img.sum(axis=2) > 30
    r, g, b = (img[..., c][fov].mean() for c in range(3))
    assert r > 1.4 * g and r > 1.4 * b


def test_shipped_clip_decodes_with_matching_masks(rendered):
    video = shipped_demo()
    assert video.stat().st_size + sum(p.stat().st_size for p in video.parent.rglob("*")) < 2e6
    assert count_frames(video, (384, 384)) == 60
    masks_dir = video.parent / f"{DEMO_STEM}_masks"
    assert sorted(p.name for p in masks_dir.iterdir()) == [f"{DEMO_STEM}_{i:06d}.png"
                                                          for i in range(60)]
    with open_source(video) as src:  # the IO layer finds the sidecar masks
        assert src.kind == "video" and len(src) == 60 and src.has_masks
        for i, (img, mask) in rendered.items():
            shipped = src.mask(i)
            assert np.array_equal(shipped, read_mask(masks_dir / f"{DEMO_STEM}_{i:06d}.png"))
            # Exact on the machine that made it; elsewhere SIMD sin/atan may move a boundary
            # pixel by one ulp, so allow a handful of pixels.
            assert np.count_nonzero(shipped != mask) <= max(5, mask.sum() // 500)
            assert _psnr(src.frame(i), img) > 30  # the video is these frames, lightly coded


def test_polyp_moves_and_grows():
    masks_dir = shipped_demo().parent / f"{DEMO_STEM}_masks"
    first = read_mask(masks_dir / f"{DEMO_STEM}_000000.png")
    last = read_mask(masks_dir / f"{DEMO_STEM}_000059.png")
    c0 = np.argwhere(first).mean(axis=0)
    c1 = np.argwhere(last).mean(axis=0)
    assert np.hypot(*(c1 - c0)) > 10
    assert last.sum() > 1.5 * first.sum()
    for i in range(0, 60, 6):
        assert read_mask(masks_dir / f"{DEMO_STEM}_{i:06d}.png").any()


def test_generate_small_clip_keeps_existing_output(tmp_path: Path):
    asset = generate_demo(tmp_path, n_frames=4, size=(64, 96), fps=8)
    assert count_frames(asset.video, (64, 96)) == 4
    assert len(list(asset.masks_dir.glob("*.png"))) == 4
    assert read_mask(asset.masks_dir / f"{DEMO_STEM}_000003.png").shape == (64, 96)
    with pytest.raises(DemoError, match="already exists"):
        generate_demo(tmp_path, n_frames=4, size=(64, 96))
    user_file = asset.masks_dir / "my_notes.txt"
    user_file.write_text("mine")
    with pytest.raises(DemoError, match="not demo masks"):
        generate_demo(tmp_path, n_frames=2, size=(64, 96), overwrite=True)
    assert user_file.read_text() == "mine"
    user_file.unlink()
    again = generate_demo(tmp_path, n_frames=2, size=(64, 96), overwrite=True)
    assert count_frames(again.video) == 2 and len(list(again.masks_dir.iterdir())) == 2
    assert not list(tmp_path.glob(".*partial*"))  # no temporaries left behind


def test_the_demo_set_fixture_is_a_kvasir_layout_with_the_clips_exact_masks(demo_set, kvasir_copy):
    """tests/conftest.py's ``demo_set``: what tests needing "frames with ground truth" use."""
    import json

    from polypviewer.io.demo_asset import render_frame
    from polypviewer.io.sources import open_source

    with open_source(demo_set) as src:
        assert src.kind == "kvasir" and len(src) == 12 and not src.problems
        mask = src.mask(3)  # frame 15 of the clip
    assert np.array_equal(mask, render_frame(15)[1])
    split = json.loads((demo_set / "split.json").read_text())
    assert (len(split["train"]), len(split["val"])) == (8, 4) and not set(split["train"]) & set(split["val"])
    root, stems = kvasir_copy(3)
    assert sorted(p.stem for p in (root / "masks").iterdir()) == stems == split["train"][:3]
