"""Frame-exact video access: real H.264 clip against a plain sequential decode."""

from __future__ import annotations

import os
import random

import cv2
import numpy as np
import pytest

from polypviewer.io import video as V
from polypviewer.io.sources import ItemError, SourceError, open_source

from ..conftest import frame_number, write_video


@pytest.mark.parametrize("cache_frames,max_forward", [(0, 0), (4, 3), (8, 32)])
def test_h264_random_seeks_match_sequential_decode(h264_clip, cache_frames, max_forward):
    ref = V.decode_sequential(h264_clip)
    assert len(ref) == 26
    order = random.Random(7).sample(range(len(ref)), 12)
    order += [25, 0, 24, 1, 13, 12, 11, 20, 3]  # explicit far backward / forward jumps
    with open_source(h264_clip, cache_frames=cache_frames, max_forward=max_forward) as src:
        assert src.kind == "video" and len(src) == 26 and src.fps == pytest.approx(12.9)
        assert src.timestamp_ms(13) == pytest.approx(13 * 1000 / 12.9)
        assert src.frame(0).shape == (384, 818, 3)
        for i in order:
            assert np.array_equal(src.frame(i), ref[i]), f"frame {i} differs from the sequential decode"
        if cache_frames == 0 and max_forward == 0:
            assert src.reader.stats["seeks"] > 0, "the seek path was not exercised"


def test_sequential_reads_never_seek(h264_clip):
    with open_source(h264_clip, cache_frames=2) as src:
        for i in range(len(src)):
            src.frame(i)
        assert src.reader.stats["seeks"] == 0 and src.reader.stats["reopens"] == 0
        assert src.reader.stats["grabs"] == len(src)


def test_numbered_video_seeks_land_exactly(numbered_video):
    with open_source(numbered_video, cache_frames=0, max_forward=2) as src:
        assert len(src) == 120 and src.index.seekable
        order = list(range(120))
        random.Random(3).shuffle(order)
        for i in order[:60] + [119, 0, 118, 60, 59, 61]:
            assert frame_number(src.frame(i)) == i


def test_variable_frame_rate_mp4_where_opencv_seeks_land_wrong(vfr_video):
    cap = cv2.VideoCapture(str(vfr_video))
    naive_wrong = 0
    for i in range(0, 60, 3):
        cap.set(cv2.CAP_PROP_POS_FRAMES, i)
        ok, f = cap.read()
        naive_wrong += not ok or frame_number(cv2.cvtColor(f, cv2.COLOR_BGR2RGB)) != i
    cap.release()
    assert naive_wrong > 0, "fixture no longer exercises OpenCV's wrong landing"
    with open_source(vfr_video, cache_frames=0, max_forward=0) as src:
        assert len(src) == 60
        step = src.timestamp_ms(1) - src.timestamp_ms(0)
        assert src.timestamp_ms(31) - src.timestamp_ms(30) == pytest.approx(4 * step)
        order = random.Random(5).sample(range(60), 30) + [59, 0, 45, 44, 30, 29, 58]
        for i in order:
            assert frame_number(src.frame(i)) == i
        assert src.reader.stats["reopens"] == 0, "verified seeks, not decoding from the start"


class _LyingCapture:
    """A real capture whose frame-position setter lands ``offset`` frames off, as OpenCV's
    does on some streams."""

    def __init__(self, cap, offset):
        self._cap, self._offset = cap, offset

    def set(self, prop, value):
        if prop == cv2.CAP_PROP_POS_FRAMES:
            value = max(0, value + self._offset)
        return self._cap.set(prop, value)

    def __getattr__(self, name):
        return getattr(self._cap, name)


@pytest.mark.parametrize("offset", [3, -4, 40])
def test_wrong_seek_landing_is_detected_and_corrected(numbered_video, monkeypatch, offset):
    real_open = V._open
    monkeypatch.setattr(V, "_open", lambda path: _LyingCapture(real_open(path), offset))
    with open_source(numbered_video, cache_frames=0, max_forward=0) as src:
        for i in [50, 10, 90, 89, 3, 117, 0]:
            assert frame_number(src.frame(i)) == i


class _BlindCapture(_LyingCapture):
    """After a seek, the timestamp of the landing frame is unknown (garbage)."""

    def __init__(self, cap):
        super().__init__(cap, 0)
        self._blind = False

    def set(self, prop, value):
        self._blind = prop == cv2.CAP_PROP_POS_FRAMES
        return self._cap.set(prop, value)

    def grab(self):
        return self._cap.grab()

    def get(self, prop):
        if prop == cv2.CAP_PROP_POS_MSEC and self._blind:
            return -12345.0
        return self._cap.get(prop)


def test_unverifiable_seeks_fall_back_to_decoding_from_the_start(numbered_video, monkeypatch):
    real_open = V._open
    monkeypatch.setattr(V, "_open", lambda path: _BlindCapture(real_open(path)))
    with open_source(numbered_video, cache_frames=0, max_forward=0) as src:
        for i in [50, 10, 90, 89, 3, 117, 0]:
            assert frame_number(src.frame(i)) == i
        assert src.reader.stats["reopens"] >= 6
        assert src.reader._seek_failures == 3
        seeks = src.reader.stats["seeks"]
        for i in [70, 20, 5]:
            assert frame_number(src.frame(i)) == i
        assert src.reader.stats["seeks"] == seeks, "after 3 failed seeks the reader stops trying"


def test_index_is_cached_in_user_cache_not_beside_the_video(numbered_video, monkeypatch):
    before = sorted(p.name for p in numbered_video.parent.iterdir())
    open_source(numbered_video).close()
    assert sorted(p.name for p in numbered_video.parent.iterdir()) == before
    calls = []
    real = V.build_index
    monkeypatch.setattr(V, "build_index", lambda p, *a: calls.append(p) or real(p, *a))
    with open_source(numbered_video) as src:
        assert len(src) == 120
    assert calls == [], "a second open must reuse the cached index"
    write_video(numbered_video, 30)  # same path, new content: the cache key changes
    with open_source(numbered_video) as src:
        assert len(src) == 30
    assert len(calls) == 1


def test_lru_is_bounded(numbered_video):
    with open_source(numbered_video, cache_frames=4) as src:
        for i in range(0, 120, 7):
            src.frame(i)
        assert len(src.reader._lru) == 4


def test_frames_returned_are_independent_copies(numbered_video):
    with open_source(numbered_video, cache_frames=4) as src:
        a = src.frame(5)
        a[:] = 0
        assert frame_number(src.frame(5)) == 5


def test_names_out_of_range_and_no_masks(numbered_video):
    with open_source(numbered_video) as src:
        assert src.name(7) == "numbered_000007"
        assert src.mask(7) is None and not src.has_masks
        with pytest.raises(ItemError, match=r"frame 120 out of range"):
            src.frame(120)


def test_masks_beside_the_video(numbered_video):
    folder = numbered_video.parent / "numbered_masks"
    folder.mkdir()
    m = np.zeros((48, 64), np.uint8)
    m[10:20, 5:30] = 255
    cv2.imwrite(str(folder / "numbered_000004.png"), m)
    cv2.imwrite(str(folder / "numbered_000009.png"), np.zeros((10, 10), np.uint8))  # wrong size
    with open_source(numbered_video) as src:
        assert src.has_masks
        got = src.mask(4)
        assert got.dtype == bool and got.sum() == 250 and got[15, 10]
        assert src.mask(5) is None
        with pytest.raises(ItemError) as err:
            src.mask(9)
        assert "numbered_000009.png" in str(err.value) and "differs" in str(err.value)
        assert "\n" not in str(err.value)


def test_truncated_videos(tmp_path, h264_clip):
    data = h264_clip.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])   # moov atom is lost: cannot be opened
    with pytest.raises(SourceError) as err:
        open_source(cut)
    assert str(err.value).startswith(str(cut)) and "\n" not in str(err.value)

    avi = write_video(tmp_path / "long.avi", 40, fourcc="MJPG")
    cut_avi = tmp_path / "cut.avi"
    cut_avi.write_bytes(avi.read_bytes()[: avi.stat().st_size // 2])  # frames lost at the end
    with open_source(cut_avi, cache_frames=0, max_forward=0) as src:
        assert 0 < len(src) < 40
        assert any("40 frames" in p for p in src.problems)
        for i in (len(src) - 1, 0, len(src) // 2):
            assert frame_number(src.frame(i)) == i


def test_video_path_with_spaces_and_non_ascii(tmp_path):
    folder = tmp_path / "Kolo skopie ß ü 結腸"
    folder.mkdir()
    path = write_video(folder / "clip ü.avi", 12, fourcc="MJPG")
    with open_source(path) as src:
        assert len(src) == 12 and frame_number(src.frame(11)) == 11
        assert src.name(3) == "clip ü_000003"


def test_empty_video_file_is_a_source_error(tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(SourceError, match="empty.mp4"):
        open_source(empty)


def test_reader_is_safe_from_two_threads(numbered_video):
    import threading

    errors = []
    with open_source(numbered_video, cache_frames=2, max_forward=4) as src:
        def work(seed):
            rng = random.Random(seed)
            for _ in range(40):
                i = rng.randrange(120)
                if frame_number(src.frame(i)) != i:
                    errors.append(i)
        threads = [threading.Thread(target=work, args=(s,)) for s in (1, 2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []


def test_index_progress_is_reported_while_a_new_video_is_indexed(numbered_video):
    seen = []
    with open_source(numbered_video, on_progress=lambda done, declared: seen.append((done, declared))) as src:
        assert len(src) == 120
    assert seen == [(100, 120)]


def test_stepping_backward_after_a_jump_is_served_from_the_cache(numbered_video):
    with open_source(numbered_video, cache_frames=8) as src:
        src.frame(0)
        assert frame_number(src.frame(100)) == 100          # a jump: one seek
        for i in (99, 98, 97, 96):                          # annotator steps back
            assert frame_number(src.frame(i)) == i
        assert src.reader.stats["seeks"] == 1 and src.reader.stats["cache_hits"] == 4
        assert frame_number(src.frame(95)) == 95            # beyond what was kept: decodes again


def test_masks_folder_named_masks_also_works(numbered_video):
    folder = numbered_video.parent / "masks"
    folder.mkdir()
    m = np.zeros((48, 64, 3), np.uint8)  # an RGB mask, as other tools write them
    m[1:3, 1:4] = 255
    cv2.imwrite(str(folder / "numbered_000119.png"), m)
    cv2.imwrite(str(folder / "other_000001.png"), m)  # another video's mask: ignored
    with open_source(numbered_video) as src:
        assert src.mask(119).sum() == 6 and src.mask(1) is None


def test_importing_changes_no_environment_and_ffmpeg_is_quieted_at_open(tmp_path):
    """No global side effect at import; the first capture opened sets FFmpeg's level (a level
    the user set is kept)."""
    import subprocess
    import sys

    code = ("import os, sys\n"
            "import polypviewer.io.sources, polypviewer.io.video as v\n"
            "assert 'OPENCV_FFMPEG_LOGLEVEL' not in os.environ\n"
            "try:\n    v.VideoReader(sys.argv[1])\nexcept Exception:\n    pass\n"
            "print(os.environ.get('OPENCV_FFMPEG_LOGLEVEL'))\n")
    clip = tmp_path / "x.mp4"
    clip.write_bytes(b"not a video")
    env = {k: val for k, val in os.environ.items() if k != "OPENCV_FFMPEG_LOGLEVEL"}
    out = subprocess.run([sys.executable, "-c", code, str(clip)], capture_output=True, text=True, env=env,
                         timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "-8"
    out = subprocess.run([sys.executable, "-c", code.replace("assert 'OPENCV_FFMPEG_LOGLEVEL' not in os.environ\n",
                                                             ""), str(clip)],
                         capture_output=True, text=True, env={**env, "OPENCV_FFMPEG_LOGLEVEL": "32"}, timeout=60)
    assert out.stdout.strip().splitlines()[-1] == "32"  # (and FFmpeg speaks again, as asked)
