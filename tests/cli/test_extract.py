"""`polypviewer extract`: chosen frames as PNG named <video-stem>_<frame:06d>.png."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from polypviewer.cli import main
from polypviewer.io.images import read_image

from ..conftest import frame_number, truncated_avi


def test_extract_frames_from_real_clip(tmp_path, h264_clip, capsys):
    out = tmp_path / "frames"
    assert main(["extract", str(h264_clip), "--frames", "17,0,5", "--out", str(out)]) == 0
    stem = h264_clip.stem
    assert sorted(p.name for p in out.iterdir()) == [f"{stem}_{i:06d}.png" for i in (0, 5, 17)]
    cap = cv2.VideoCapture(str(h264_clip))
    ref = [cap.read()[1] for _ in range(18)]
    assert np.array_equal(read_image(out / f"{stem}_000017.png"), cv2.cvtColor(ref[17], cv2.COLOR_BGR2RGB))
    err = capsys.readouterr()
    assert "[3/3]" in err.err and "wrote 3 of 3" in err.out


def test_extract_out_of_range_is_named_and_skipped(tmp_path, numbered_video, capsys):
    out = tmp_path / "o"
    assert main(["extract", str(numbered_video), "--frames", "3,500,7", "--out", str(out), "-q"]) == 1
    assert sorted(frame_number(read_image(p)) for p in out.iterdir()) == [3, 7]
    err = capsys.readouterr().err
    assert "frame 500 out of range (source has 120 frames)" in err and str(numbered_video) in err


def test_extract_every_and_range(tmp_path, numbered_video):
    assert main(["extract", str(numbered_video), "--every", "50", "--out", str(tmp_path / "e"), "-q"]) == 0
    assert sorted(p.name for p in (tmp_path / "e").iterdir()) == [
        "numbered_000000.png", "numbered_000050.png", "numbered_000100.png"]
    assert main(["extract", str(numbered_video), "--range", "117:", "--out", str(tmp_path / "r"), "-q"]) == 0
    files = sorted((tmp_path / "r").iterdir())
    assert [frame_number(read_image(p)) for p in files] == [117, 118, 119]


def test_extract_refuses_non_empty_folder_unless_overwrite(tmp_path, numbered_video, capsys):
    out = tmp_path / "o"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    assert main(["extract", str(numbered_video), "--frames", "1", "--out", str(out)]) == 2
    assert "not empty" in capsys.readouterr().err
    assert main(["extract", str(numbered_video), "--frames", "1", "--out", str(out), "--overwrite", "-q"]) == 0
    assert (out / "mine.txt").read_text() == "keep me" and (out / "numbered_000001.png").exists()


@pytest.mark.parametrize("args,msg", [
    (["--frames", "1,x"], "'x' is not a frame number"),
    (["--range", "5"], "expected A:B"),
    (["--range", "9:3"], "need 0 <= A <= B"),
    (["--every", "0"], "at least 1"),
])
def test_extract_bad_selection_is_one_line_usage_error(tmp_path, numbered_video, capsys, args, msg):
    assert main(["extract", str(numbered_video), *args, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert msg in err and "\n" not in err


def test_extract_missing_video(tmp_path, capsys):
    assert main(["extract", str(tmp_path / "nope.mp4"), "--frames", "0", "--out", str(tmp_path / "o")]) == 2
    assert "nope.mp4: no such file or folder" in capsys.readouterr().err


def test_truncated_video_is_one_line_on_stderr_even_from_ffmpeg(tmp_path, h264_clip):
    import os
    import subprocess
    import sys

    cut = tmp_path / "cut clip ü.mp4"
    cut.write_bytes(h264_clip.read_bytes()[:100_000])
    env = {k: v for k, v in os.environ.items() if k != "OPENCV_FFMPEG_LOGLEVEL"}
    proc = subprocess.run([sys.executable, "-m", "polypviewer", "extract", str(cut), "--frames", "0",
                           "--out", str(tmp_path / "o")], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"polypviewer: error: {cut}: cannot open video (unreadable, truncated or unsupported codec)"]


# -- problems: one line each on stderr, the rest goes on, exit status 1


def _lines(err: str) -> list[str]:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert "Traceback" not in err and all(ln.startswith("polypviewer extract: ") for ln in lines), lines
    return lines


def test_extract_truncated_video_reports_the_lost_frames(tmp_path, capsys):
    avi = truncated_avi(tmp_path / "cut.avi")
    out = tmp_path / "o"
    assert main(["extract", str(avi), "--every", "1", "--out", str(out), "-q"]) == 1
    assert sorted(frame_number(read_image(p)) for p in out.iterdir()) == list(range(14))
    lines = _lines(capsys.readouterr().err)
    assert lines[0] == f"polypviewer extract: {avi}: header says 26 frames, only 14 could be decoded"
    assert len(lines) == 2 and "not clean" in lines[1]


def test_extract_folder_reports_two_files_with_one_name(tmp_path, capsys):
    src = tmp_path / "frames"
    src.mkdir()
    cv2.imwrite(str(src / "frame.jpg"), np.zeros((8, 8, 3), np.uint8))
    cv2.imwrite(str(src / "frame.png"), np.zeros((4, 4, 3), np.uint8))
    out = tmp_path / "o"
    assert main(["extract", str(src), "--every", "1", "--out", str(out), "-q"]) == 1
    assert [p.name for p in out.iterdir()] == ["frame.png"] and read_image(out / "frame.png").shape == (8, 8, 3)
    lines = _lines(capsys.readouterr().err)
    assert len(lines) == 2 and str(src / "frame.png") in lines[0] and "frame.jpg" in lines[0]


def test_extract_full_disk_names_the_file_and_the_frame(tmp_path, numbered_video, capsys, monkeypatch):
    import errno
    import os

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)  # the data never reaches the disk
    out = tmp_path / "o"
    assert main(["extract", str(numbered_video), "--frames", "3,7", "--out", str(out), "-q"]) == 1
    lines = _lines(capsys.readouterr().err)
    assert lines[:2] == [f"polypviewer extract: {out / f'numbered_{i:06d}.png'}: could not write frame {i}: "
                         "No space left on device" for i in (3, 7)]
    assert list(out.iterdir()) == []  # no partial file, no temporary left behind


def test_extract_symlink_loop_is_named_as_such(tmp_path, capsys):
    loop = tmp_path / "loop.mp4"
    loop.symlink_to(loop)
    assert main(["extract", str(loop), "--frames", "0", "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.strip() == f"polypviewer: error: {loop}: symbolic link loop"
