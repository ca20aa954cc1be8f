"""Image sources: Kvasir pairing on the real data, plain folders, and every bad input."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from polypviewer.io.images import read_image, read_mask
from polypviewer.io.sources import ItemError, SourceError, open_source


def _stems(folder: Path) -> set[str]:
    return {p.stem for p in folder.iterdir()}


@pytest.mark.parametrize("fixture", ["endotect", "cvc", "negatives"])
def test_kvasir_pairing_on_real_data(request, fixture):
    root = request.getfixturevalue(fixture)
    with open_source(root) as src:
        assert src.kind == "kvasir" and src.has_masks and src.problems == []
        assert len(src) == len(_stems(root / "images")) == len(_stems(root / "masks"))
        assert {src.name(i) for i in range(len(src))} == _stems(root / "images")
        for i in (0, len(src) // 2, len(src) - 1):
            img, mask = src.frame(i), src.mask(i)
            assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
            assert mask.dtype == bool and mask.shape == img.shape[:2]
            if fixture == "negatives":
                assert not mask.any()
            else:
                assert mask.any()


def test_cvc_jpeg_masks_are_binarised_above_127(cvc):
    with open_source(cvc) as src:
        i = next(k for k in range(len(src)) if src.name(k) == "fine_3_1")
        raw = cv2.imread(str(cvc / "masks" / "fine_3_1.jpg"), cv2.IMREAD_UNCHANGED)
        assert len(np.unique(raw)) > 2, "the CVC masks are expected to be non-binary JPEG"
        assert np.array_equal(src.mask(i), raw > 127)


def test_endotect_rgb_masks_read_single_channel(endotect):
    first = sorted((endotect / "masks").iterdir())[0]
    raw = cv2.imread(str(first), cv2.IMREAD_UNCHANGED)
    assert raw.ndim == 3
    assert np.array_equal(read_mask(first), raw.max(axis=2) > 127)


def test_images_folder_of_a_kvasir_layout_opens_the_dataset(cvc):
    assert open_source(cvc / "images").kind == "kvasir"


def test_single_image_inside_kvasir_layout_brings_its_mask(cvc):
    src = open_source(cvc / "images" / "fine_3_1.jpg")
    assert src.kind == "image" and len(src) == 1 and src.name(0) == "fine_3_1"
    assert src.mask(0) is not None and src.mask(0).any()


def _write(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(path.suffix, arr)
    assert ok
    buf.tofile(str(path))
    return path


def test_plain_folder_natural_sort_and_no_masks(tmp_path):
    for n in (10, 2, 1):
        _write(tmp_path / f"frame{n}.png", np.full((8, 8, 3), n, np.uint8))
    (tmp_path / "notes.txt").write_text("not an image")
    with open_source(tmp_path) as src:
        assert src.kind == "folder" and src.fps is None and not src.has_masks
        assert [src.name(i) for i in range(len(src))] == ["frame1", "frame2", "frame10"]
        assert src.frame(2)[0, 0, 0] == 10 and src.mask(0) is None


def _kvasir(tmp_path: Path) -> Path:
    root = tmp_path / "data set ü 結腸"  # spaces and non-ASCII on purpose
    img = np.zeros((20, 30, 3), np.uint8)
    img[..., 2] = 200                       # BGR on disk: red in RGB
    mask = np.zeros((20, 30), np.uint8)
    mask[5:10, 5:15] = 255
    _write(root / "images" / "good.jpg", img)
    _write(root / "masks" / "good.png", mask)
    _write(root / "images" / "grey.png", np.full((20, 30), 90, np.uint8))
    _write(root / "masks" / "grey.png", mask)
    _write(root / "images" / "rgba.png", np.dstack([img, np.full((20, 30), 7, np.uint8)]))
    _write(root / "masks" / "rgba.png", np.dstack([mask, mask, mask, np.full_like(mask, 255)]))
    _write(root / "images" / "deep.png", np.full((20, 30, 3), 65535, np.uint16))
    _write(root / "masks" / "deep.png", mask.astype(np.uint16) * 257)
    _write(root / "images" / "bigmask.png", img)
    _write(root / "masks" / "bigmask.png", np.zeros((21, 30), np.uint8))
    (root / "images" / "zero.png").write_bytes(b"")
    _write(root / "masks" / "zero.png", mask)
    (root / "images" / "text.png").write_text("I am not a PNG")
    _write(root / "masks" / "text.png", mask)
    _write(root / "images" / "tiffy.tif", img)
    _write(root / "masks" / "tiffy.bmp", mask)
    _write(root / "images" / "lonely.png", img)
    _write(root / "masks" / "orphan.png", mask)
    return root


def test_bad_items_give_one_line_named_errors_and_the_rest_goes_on(tmp_path):
    root = _kvasir(tmp_path)
    with open_source(root) as src:
        names = [src.name(i) for i in range(len(src))]
        assert names == ["bigmask", "deep", "good", "grey", "lonely", "rgba", "text", "tiffy", "zero"]
        assert any("lonely.png: no mask" in p for p in src.problems)
        assert any("orphan.png: mask without an image" in p for p in src.problems)
        good, errors = {}, {}
        for i, name in enumerate(names):
            try:
                good[name] = (src.frame(i), src.mask(i))
            except ItemError as exc:
                errors[name] = str(exc)
        assert set(errors) == {"bigmask", "zero", "text"}
        for name, msg in errors.items():
            assert "\n" not in msg and f"{name}.png" in msg and str(root) in msg
        assert "mask size 30x21 differs from image size 30x20" in errors["bigmask"]
        assert "zero bytes" in errors["zero"]
        assert "cannot decode image" in errors["text"]
        # the readable ones are fully normalised
        for name, (img, mask) in good.items():
            assert img.shape == (20, 30, 3) and img.dtype == np.uint8, name
            if name != "lonely":
                assert mask.sum() == 50 and mask[7, 10], name
        assert good["lonely"][1] is None
        r, g, b = (int(v) for v in good["good"][0][10, 15])  # JPEG: near (200, 0, 0), in RGB order
        assert r > 180 and g < 30 and b < 30
        assert tuple(good["grey"][0][0, 0]) == (90, 90, 90)
        assert tuple(good["rgba"][0][0, 0]) == (200, 0, 0)
        assert tuple(good["deep"][0][0, 0]) == (255, 255, 255)
        assert tuple(good["tiffy"][0][0, 0]) == (200, 0, 0)


def test_mask_read_before_frame_still_checks_size(tmp_path):
    root = _kvasir(tmp_path)
    with open_source(root) as src:
        with pytest.raises(ItemError, match="differs"):
            src.mask(0)


def test_label_masks_with_values_0_1_are_read_as_foreground(tmp_path):
    m = np.zeros((4, 4), np.uint8)
    m[1, 1] = 1
    p = _write(tmp_path / "m.png", m)
    assert read_mask(p).sum() == 1


@pytest.mark.parametrize("make,expect", [
    (lambda p: p / "missing", "no such file or folder"),
    (lambda p: (p / "empty").mkdir() or p / "empty", "no images found"),
    (lambda p: (p / "x.txt").write_text("x") and p / "x.txt", "unsupported file type"),
])
def test_source_errors_are_one_named_line(tmp_path, make, expect):
    path = make(tmp_path)
    with pytest.raises(SourceError) as err:
        open_source(path)
    msg = str(err.value)
    assert expect in msg and msg.startswith(str(path)) and "\n" not in msg


def test_empty_kvasir_images_folder(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    with pytest.raises(SourceError, match="no images in images/"):
        open_source(tmp_path)


def test_kvasir_without_masks_folder_opens_without_ground_truth(tmp_path):
    _write(tmp_path / "images" / "a.png", np.zeros((4, 4, 3), np.uint8))
    with open_source(tmp_path) as src:
        assert len(src) == 1 and src.mask(0) is None and not src.has_masks
        assert any("no masks/ folder" in p for p in src.problems)


def test_read_image_non_ascii_path(tmp_path):
    p = _write(tmp_path / "Bild ä 图像.png", np.full((3, 5, 3), 40, np.uint8))
    assert read_image(p).shape == (3, 5, 3)


def test_symlink_loop_and_broken_link_are_named_as_such(tmp_path):
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    with pytest.raises(SourceError) as err:
        open_source(loop)
    assert str(err.value) == f"{loop}: symbolic link loop"
    dangling = tmp_path / "gone.mp4"
    dangling.symlink_to(tmp_path / "deleted.mp4")
    with pytest.raises(SourceError) as err:
        open_source(dangling)
    assert str(err.value) == f"{dangling}: broken symbolic link (to {tmp_path / 'deleted.mp4'})"


def test_folder_reports_links_that_lead_nowhere_and_two_files_with_one_name(tmp_path):
    folder = tmp_path / "frames"
    kept = _write(folder / "f.jpg", np.zeros((4, 4, 3), np.uint8))
    skipped = _write(folder / "f.png", np.zeros((4, 4, 3), np.uint8))
    (folder / "loop.png").symlink_to(folder / "loop.png")
    (folder / "gone.png").symlink_to(tmp_path / "deleted.png")
    with open_source(folder) as src:
        assert [src.name(i) for i in range(len(src))] == ["f"] and src.images == [kept]
        problems = sorted(src.problems)
    assert len(problems) == 3
    assert problems[0].startswith(f"{skipped}: skipped: {kept.name} has the same name")
    assert any(p == f"{folder / 'loop.png'}: symbolic link loop; skipped" for p in problems)
    assert any(p.startswith(f"{folder / 'gone.png'}: broken symbolic link") for p in problems)


def test_video_shorter_than_its_header_is_one_problem(tmp_path):
    from ..conftest import truncated_avi

    cut = truncated_avi(tmp_path / "cut.avi", frames=26, keep=14)
    with open_source(cut) as src:
        assert len(src) == 14
        assert src.problems == [f"{cut}: header says 26 frames, only 14 could be decoded"]


def test_one_pairing_rule_by_stem(tmp_path):
    from polypviewer.io.images import by_stem, first_by_stem

    files = [tmp_path / "a.png", tmp_path / "b.png", tmp_path / "a.jpg"]
    assert by_stem(files) == {"a": [files[0], files[2]], "b": [files[1]]}
    problems: list[str] = []
    assert first_by_stem(files, problems) == {"a": files[0], "b": files[1]}
    assert problems == [f"{files[2]}: skipped: a.png has the same name (a) and is used instead "
                        "(one name, one frame)"]
