"""Kvasir export: round trip, bboxes.json, refusal to overwrite, atomic writes, verification."""

from __future__ import annotations

import csv
import json

import cv2
import numpy as np
import pytest

from polypviewer.core import fileio
from polypviewer.core.errors import PolypviewerError
from polypviewer.io import images as I
from polypviewer.io.export import ExportError, SourceItems, export_kvasir, verify_export
from polypviewer.io.sources import open_source


def _item(name: str, h: int = 20, w: int = 30, boxes=((2, 3, 6, 8),)):
    img = np.random.default_rng(len(name)).integers(0, 255, (h, w, 3), dtype=np.uint8)
    mask = np.zeros((h, w), bool)
    for x0, y0, x1, y1 in boxes:
        mask[y0:y1 + 1, x0:x1 + 1] = True
    return name, img, mask


def test_round_trip_real_cvc_masks_identical(tmp_path, cvc):
    out = tmp_path / "export ü"
    with open_source(cvc) as src:
        idx = [0, 3, 7, 19]
        report = export_kvasir(out, SourceItems(src, idx))
        assert report.ok and report.errors == [] and len(report.written) == 4
        assert report.verify.ok and report.verify.pairs == 4 and "verified" in report.summary
        with open_source(out) as back:
            assert back.kind == "kvasir" and back.problems == [] and len(back) == 4
            by_name = {back.name(k): k for k in range(len(back))}
            for i in idx:
                k = by_name[src.name(i)]
                assert np.array_equal(back.mask(k), src.mask(i))
                assert np.array_equal(back.frame(k), src.frame(i))  # PNG is lossless
    raw = cv2.imread(str(out / "masks" / f"{report.written[0]}.png"), cv2.IMREAD_UNCHANGED)
    assert raw.ndim == 2 and raw.dtype == np.uint8 and set(np.unique(raw)) <= {0, 255}


def test_video_frames_named_by_stem_and_frame_number(tmp_path, h264_clip):
    with open_source(h264_clip) as src:
        masks = {5: np.zeros((384, 818), bool), 17: np.ones((384, 818), bool)}
        report = export_kvasir(tmp_path / "out", SourceItems(src, [5, 17], masks=masks))
    stem = h264_clip.stem
    assert report.written == [f"{stem}_000005", f"{stem}_000017"]
    assert (tmp_path / "out" / "images" / f"{stem}_000017.png").is_file()
    assert report.verify.ok


def test_bboxes_json_is_kvasir_format_one_box_per_component(tmp_path):
    report = export_kvasir(tmp_path, [_item("two", boxes=((1, 1, 4, 5), (10, 2, 20, 9))),
                                      _item("none", boxes=())])
    assert report.ok
    data = json.loads((tmp_path / "bboxes.json").read_text())
    assert data["two"] == {"height": 20, "width": 30, "bbox": [
        {"label": "polyp", "xmin": 1, "ymin": 1, "xmax": 4, "ymax": 5},
        {"label": "polyp", "xmin": 10, "ymin": 2, "xmax": 20, "ymax": 9}]}
    assert data["none"] == {"height": 20, "width": 30, "bbox": []}


def test_refuses_non_empty_folder_and_overwrite_keeps_unrelated_files(tmp_path):
    out = tmp_path / "out"
    export_kvasir(out, [_item("a"), _item("b")])
    (out / "notes.txt").write_text("mine")
    mask_before = (out / "masks" / "a.png").read_bytes()
    with pytest.raises(ExportError) as err:
        export_kvasir(out, [_item("a", boxes=((0, 0, 29, 19),))])
    assert str(err.value).startswith(str(out)) and "not empty" in str(err.value)
    assert (out / "masks" / "a.png").read_bytes() == mask_before, "refused export must not touch files"

    report = export_kvasir(out, [_item("a", boxes=((0, 0, 29, 19),))], overwrite=True)
    assert report.ok
    assert (out / "notes.txt").read_text() == "mine"
    assert (out / "masks" / "b.png").exists()
    assert I.read_mask(out / "masks" / "a.png").all()
    boxes = json.loads((out / "bboxes.json").read_text())
    assert set(boxes) == {"a", "b"}, "bboxes.json is merged, not replaced"
    assert boxes["a"]["bbox"] == [{"label": "polyp", "xmin": 0, "ymin": 0, "xmax": 29, "ymax": 19}]


def test_interrupted_export_leaves_no_half_written_mask(tmp_path, monkeypatch):
    out = tmp_path / "out"
    export_kvasir(out, [_item("a")])
    old_mask = (out / "masks" / "a.png").read_bytes()
    real_replace = fileio.os.replace
    calls = []

    def dying_replace(src, dst):
        calls.append(dst)
        if str(dst).endswith(("masks/a.png", "masks/new.png")):
            raise KeyboardInterrupt  # the user pulls the plug right before the rename
        return real_replace(src, dst)

    monkeypatch.setattr(fileio.os, "replace", dying_replace)
    with pytest.raises(KeyboardInterrupt):
        export_kvasir(out, [_item("new")], overwrite=True)
    with pytest.raises(KeyboardInterrupt):
        export_kvasir(out, [_item("a", boxes=((0, 0, 29, 19),))], overwrite=True)
    monkeypatch.setattr(fileio.os, "replace", real_replace)
    assert not (out / "masks" / "new.png").exists()
    assert (out / "masks" / "a.png").read_bytes() == old_mask, "the old mask survives intact"
    leftovers = [p.name for p in out.rglob("*") if p.name.startswith(".polypviewer-tmp-")]
    assert leftovers == []


def test_bad_items_are_named_and_the_rest_is_written(tmp_path):
    name, img, mask = _item("ok")
    report = export_kvasir(tmp_path, [
        ("../escape", img, mask), ("", img, mask), ("ok", img, mask), ("ok", img, mask),
        ("nomask", img, None), ("small", img, mask[:10]), ("fine", img[..., 0], mask),
    ])
    assert report.written == ["ok", "fine"]
    assert len(report.errors) == 5 and all("\n" not in e for e in report.errors)
    assert any("'../escape'" in e and "invalid" in e for e in report.errors)
    assert any(e.startswith("ok:") and "duplicate" in e for e in report.errors)
    assert any(e.startswith("small:") and "mask size 30x10 differs" in e for e in report.errors)
    assert not (tmp_path.parent / "escape.png").exists()
    assert "exported 2 of 7" in report.summary and not report.ok
    assert report.verify.ok


def test_source_items_survive_a_bad_frame(tmp_path, cvc):
    root = tmp_path / "ds"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for stem in ("fine_3_1", "fine_3_2"):
        (root / "images" / f"{stem}.jpg").write_bytes((cvc / "images" / f"{stem}.jpg").read_bytes())
        (root / "masks" / f"{stem}.jpg").write_bytes((cvc / "masks" / f"{stem}.jpg").read_bytes())
    (root / "images" / "broken.jpg").write_bytes(b"")
    (root / "masks" / "broken.jpg").write_bytes((cvc / "masks" / "fine_3_1.jpg").read_bytes())
    with open_source(root) as src:
        report = export_kvasir(tmp_path / "out", SourceItems(src))
    assert sorted(report.written) == ["fine_3_1", "fine_3_2"]
    assert len(report.errors) == 1 and "broken.jpg" in report.errors[0] and "zero bytes" in report.errors[0]


def test_jpeg_masks_like_original_kvasir(tmp_path):
    items = [_item(f"j{i}", boxes=((i, i, i + 9, i + 7),)) for i in range(3)]
    report = export_kvasir(tmp_path, items, mask_format="jpg", image_format="jpg")
    assert report.ok and report.verify.lossy_masks == 3
    assert sorted(p.name for p in (tmp_path / "masks").iterdir()) == ["j0.jpg", "j1.jpg", "j2.jpg"]
    raw = cv2.imread(str(tmp_path / "masks" / "j1.jpg"), cv2.IMREAD_UNCHANGED)
    assert raw.ndim == 2
    flipped = 0
    with open_source(tmp_path) as src:
        for k in range(3):
            expect = next(m for n, _, m in items if n == src.name(k))
            flipped += int((src.mask(k) != expect).sum())
    assert flipped == report.jpeg_changed_pixels, "the report counts exactly what JPEG changed"


def test_stats_csv(tmp_path):
    report = export_kvasir(tmp_path, [_item("a"), _item("b")],
                           stats={"a": {"pixels_changed": 12, "dice_raw_vs_final": 0.9},
                                  "b": {"pixels_changed": 0}})
    assert report.ok
    with open(tmp_path / "stats.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert rows == [{"name": "a", "pixels_changed": "12", "dice_raw_vs_final": "0.9"},
                    {"name": "b", "pixels_changed": "0", "dice_raw_vs_final": ""}]


def test_verify_finds_every_kind_of_problem(tmp_path):
    export_kvasir(tmp_path, [_item(n) for n in ("rgb", "grey", "size", "orphan", "box", "good")])
    m = np.zeros((20, 30), np.uint8)
    m[2:5, 2:5] = 255
    cv2.imwrite(str(tmp_path / "masks" / "rgb.png"), np.dstack([m, m, m]))
    grey = m.copy()
    grey[0, 0] = 128
    cv2.imwrite(str(tmp_path / "masks" / "grey.png"), grey)
    cv2.imwrite(str(tmp_path / "masks" / "size.png"), np.zeros((5, 5), np.uint8))
    (tmp_path / "images" / "orphan.png").unlink()
    cv2.imwrite(str(tmp_path / "masks" / "box.png"), m)   # bboxes.json no longer matches
    (tmp_path / "images" / "alone.png").write_bytes((tmp_path / "images" / "good.png").read_bytes())
    rep = verify_export(tmp_path)
    assert not rep.ok and rep.pairs == 1
    text = "\n".join(rep.problems)
    assert "rgb.png: mask has 3 channels" in text
    assert "grey.png: mask is not binary" in text
    assert "size.png: mask size 5x5 differs" in text
    assert "orphan.png: mask without an image" in text
    assert "alone.png: no mask" in text
    assert "entry for box" in text
    assert rep.summary.startswith(f"verification of {tmp_path} found 6 problem(s)")


def test_verify_missing_folders(tmp_path):
    rep = verify_export(tmp_path)
    assert not rep.ok and any("images: missing" in p for p in rep.problems)


def test_masks_exported_beside_a_video_come_back_as_its_ground_truth(tmp_path):
    from ..conftest import write_video

    video = write_video(tmp_path / "clip.mp4", 12)
    corrected = {3: np.zeros((48, 64), bool), 8: np.zeros((48, 64), bool)}
    corrected[3][5:20, 10:40] = True
    with open_source(video) as src:
        assert not src.has_masks
        report = export_kvasir(tmp_path / "clip_masks", SourceItems(src, [3, 8], masks=corrected))
    assert report.ok
    with open_source(video) as src:
        assert src.has_masks
        assert np.array_equal(src.mask(3), corrected[3]) and not src.mask(8).any()
        assert src.mask(4) is None


# --- outputs never follow links, modes follow the umask, a full disk leaves whole pairs ---

def test_overwrite_refuses_a_symlinked_bboxes_json_and_never_reads_its_target(tmp_path):
    out = tmp_path / "out"
    export_kvasir(out, [_item("a")])
    secret = tmp_path / "elsewhere.json"
    secret.write_text(json.dumps({"someone_else": {"height": 1, "width": 1, "bbox": []}}))
    (out / "bboxes.json").unlink()
    (out / "bboxes.json").symlink_to(secret)
    mask_before = (out / "masks" / "a.png").read_bytes()
    with pytest.raises(ExportError) as err:
        export_kvasir(out, [_item("a", boxes=((0, 0, 29, 19),))], overwrite=True)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(str(out / "bboxes.json")) and "symbolic link" in msg
    assert (out / "bboxes.json").is_symlink(), "the link is left as it was"
    assert json.loads(secret.read_text()) == {"someone_else": {"height": 1, "width": 1, "bbox": []}}
    assert (out / "masks" / "a.png").read_bytes() == mask_before, "refused before writing anything"


def test_symlinked_masks_folder_or_mask_file_is_not_written_through(tmp_path):
    out = tmp_path / "out"
    export_kvasir(out, [_item("a")])
    other = tmp_path / "other_masks"
    other.mkdir()
    (out / "masks" / "a.png").rename(other / "a.png")
    (out / "masks").rmdir()
    (out / "masks").symlink_to(other)
    with pytest.raises(ExportError, match="symbolic link"):
        export_kvasir(out, [_item("a", boxes=((0, 0, 29, 19),))], overwrite=True)
    assert not I.read_mask(other / "a.png").all()
    # A link at one mask's name: that item is refused (one line), the others are written.
    (out / "masks").unlink()
    (out / "masks").mkdir()
    victim = tmp_path / "victim.png"
    victim.write_bytes(b"precious")
    (out / "masks" / "a.png").symlink_to(victim)
    report = export_kvasir(out, [_item("a"), _item("b")], overwrite=True)
    assert report.written == ["b"] and len(report.errors) == 1
    assert "symbolic link" in report.errors[0] and str(out / "masks" / "a.png") in report.errors[0]
    assert victim.read_bytes() == b"precious"


def test_unreadable_bboxes_json_is_refused_not_replaced(tmp_path):
    out = tmp_path / "out"
    export_kvasir(out, [_item("a")])
    (out / "bboxes.json").write_text('{"a": hand-edited, broken')
    with pytest.raises(ExportError) as err:
        export_kvasir(out, [_item("b")], overwrite=True)
    assert str(err.value).startswith(str(out / "bboxes.json")) and "\n" not in str(err.value)
    assert (out / "bboxes.json").read_text() == '{"a": hand-edited, broken'
    assert not (out / "images" / "b.png").exists()


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_exported_files_follow_the_umask(tmp_path, umask):
    import os
    import stat

    old = os.umask(umask)
    try:
        export_kvasir(tmp_path / "out", [_item("a")], stats={"a": {"x": 1}})
    finally:
        os.umask(old)
    for rel in ("images/a.png", "masks/a.png", "bboxes.json", "stats.csv"):
        assert stat.S_IMODE((tmp_path / "out" / rel).stat().st_mode) == 0o666 & ~umask, rel


def _fail_fsync_in(full_disk_for, folder_name: str):
    """Make fsync of any file under a folder called ``folder_name`` fail as on a full disk."""
    import os

    full_disk_for(lambda t: os.path.basename(os.path.dirname(t)) == folder_name and not os.path.isdir(t))


def test_full_disk_leaves_no_image_without_its_mask_and_names_the_file(tmp_path, monkeypatch, full_disk_for):
    out = tmp_path / "out"
    export_kvasir(out, [_item("a")])
    old_image = (out / "images" / "a.png").read_bytes()
    _fail_fsync_in(full_disk_for, "masks")
    report = export_kvasir(out, [_item("new"), _item("a", boxes=((0, 0, 29, 19),))], overwrite=True)
    monkeypatch.undo()
    assert report.written == [] and len(report.errors) == 2
    for err, name in zip(report.errors, ("new", "a"), strict=True):
        assert "\n" not in err and err.startswith(str(out / "masks" / f"{name}.png"))
        assert "No space left on device" in err
    assert not (out / "images" / "new.png").exists(), "no image without its mask"
    assert (out / "images" / "a.png").read_bytes() == old_image, "the old pair is untouched"
    assert report.verify.ok, "the self-check still runs and the folder is consistent"
    assert [p.name for p in out.rglob(".polypviewer-tmp-*")] == []


def test_full_disk_on_bboxes_json_is_one_line_naming_it(tmp_path, monkeypatch, full_disk_for):
    out = tmp_path / "out"
    _fail_fsync_in(full_disk_for, "out")
    with pytest.raises(PolypviewerError) as err:
        export_kvasir(out, [_item("a")])
    monkeypatch.undo()
    msg = str(err.value)
    assert msg.startswith(str(out / "bboxes.json")) and "No space left" in msg and "\n" not in msg
