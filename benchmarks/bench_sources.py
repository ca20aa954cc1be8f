"""Frame-source benchmark: random access vs sequential reads, and memory while streaming.

    .venv/bin/python benchmarks/bench_sources.py [--clip PATH] [--frames 1000] [--json OUT]

1. On the real H.264 clip (``../shared/data/video``): ms per frame for a sequential pass,
   for random access (our verified seeking, LRU off so every read really decodes), and,
   as the baseline in the same run, OpenCV's bare ``CAP_PROP_POS_FRAMES`` + ``read()``,
   counting how often that baseline returns the wrong frame.
2. A variable-frame-rate MP4 (the tests' fixture): how often OpenCV's bare seek returns
   the wrong frame, and ours, both timed.
3. Writes a long synthetic video (default 1000 frames of 640x480 MPEG-4) to a temporary
   folder, streams it through ``open_source`` and samples the process RSS every 100 frames:
   memory must stay flat (fixed-size LRU, no per-frame growth).
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from polypviewer.core.fileio import write_json  # noqa: E402
from polypviewer.core.paths import shared_data_default  # noqa: E402
from polypviewer.engine.policy import describe_cpu  # noqa: E402
from polypviewer.io.sources import open_source  # noqa: E402
from polypviewer.io.video import decode_sequential  # noqa: E402


def rss_mb() -> float:
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, AttributeError):
        import resource  # peak, not current: still shows growth
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_access(clip: Path, repeats: int) -> dict:
    ref = decode_sequential(clip)
    n = len(ref)
    rng = random.Random(0)
    order = [rng.randrange(n) for _ in range(repeats * n)]

    with open_source(clip, cache_frames=0) as src:
        t = time.perf_counter()
        for _ in range(repeats):
            for i in range(n):
                src.frame(i)
            src.reader._next = None  # next pass starts from a fresh seek, as a user would
        seq_ms = (time.perf_counter() - t) * 1000 / (repeats * n)

    with open_source(clip, cache_frames=0, max_forward=0) as src:
        wrong = 0
        t = time.perf_counter()
        for i in order:
            wrong += not np.array_equal(src.frame(i), ref[i])
        rand_ms = (time.perf_counter() - t) * 1000 / len(order)
        stats = dict(src.reader.stats)

    with open_source(clip) as src:  # default settings (8-frame LRU, forward decode <= 32)
        t = time.perf_counter()
        for i in order:
            src.frame(i)
        default_ms = (time.perf_counter() - t) * 1000 / len(order)

    backward = list(range(n - 1, -1, -1))  # an annotator stepping back frame by frame
    with open_source(clip) as src:
        t = time.perf_counter()
        back_wrong = sum(not np.array_equal(src.frame(i), ref[i]) for i in backward)
        back_ms = (time.perf_counter() - t) * 1000 / n

    cap = cv2.VideoCapture(str(clip))
    t = time.perf_counter()
    for i in backward:
        cap.set(cv2.CAP_PROP_POS_FRAMES, i)
        cap.read()
    naive_back_ms = (time.perf_counter() - t) * 1000 / n
    cap.release()

    cap = cv2.VideoCapture(str(clip))
    naive_wrong = 0
    t = time.perf_counter()
    for i in order:
        cap.set(cv2.CAP_PROP_POS_FRAMES, i)
        ok, f = cap.read()
        naive_wrong += not (ok and np.array_equal(cv2.cvtColor(f, cv2.COLOR_BGR2RGB), ref[i]))
    naive_ms = (time.perf_counter() - t) * 1000 / len(order)
    cap.release()
    return {
        "clip": str(clip), "frames": n, "size": f"{ref[0].shape[1]}x{ref[0].shape[0]}",
        "sequential_ms_per_frame": round(seq_ms, 3),
        "random_ms_per_frame_no_cache": round(rand_ms, 3),
        "random_ms_per_frame_default": round(default_ms, 3),
        "random_wrong_frames": wrong, "random_reads": len(order), "random_reader_stats": stats,
        "baseline_opencv_seek_ms_per_frame": round(naive_ms, 3),
        "baseline_opencv_seek_wrong_frames": naive_wrong,
        "step_back_ms_per_frame_default": round(back_ms, 3), "step_back_wrong_frames": back_wrong,
        "baseline_opencv_step_back_ms_per_frame": round(naive_back_ms, 3),
    }


def bench_vfr(repeats: int) -> dict:
    """A variable-frame-rate MP4 (made by the tests' helper): OpenCV's seek vs ours."""
    from tests.conftest import frame_number, make_vfr_mp4, write_video

    with tempfile.TemporaryDirectory() as tmp:
        path = make_vfr_mp4(write_video(Path(tmp) / "cfr.mp4", 60), Path(tmp) / "vfr.mp4")
        rng = random.Random(1)
        order = [rng.randrange(60) for _ in range(repeats * 60)]
        cap = cv2.VideoCapture(str(path))
        wrong = 0
        t = time.perf_counter()
        for i in order:
            cap.set(cv2.CAP_PROP_POS_FRAMES, i)
            ok, f = cap.read()
            wrong += not ok or frame_number(cv2.cvtColor(f, cv2.COLOR_BGR2RGB)) != i
        naive_ms = (time.perf_counter() - t) * 1000 / len(order)
        cap.release()
        with open_source(path, cache_frames=0, max_forward=0) as src:
            t = time.perf_counter()
            ours_wrong = sum(frame_number(src.frame(i)) != i for i in order)
            ours_ms = (time.perf_counter() - t) * 1000 / len(order)
    return {"reads": len(order), "baseline_opencv_seek_wrong_frames": wrong,
            "baseline_opencv_seek_ms_per_frame": round(naive_ms, 3),
            "ours_wrong_frames": ours_wrong, "ours_ms_per_frame": round(ours_ms, 3)}


def bench_memory(n_frames: int, width: int, height: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "long.mp4"
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (width, height))
        xs = np.arange(width, dtype=np.int32)[None, :]
        ys = np.arange(height, dtype=np.int32)[:, None]
        t = time.perf_counter()
        for i in range(n_frames):
            img = ((xs + ys * 2 + i * 3) % 256).astype(np.uint8)
            writer.write(cv2.merge([img, np.roll(img, i, axis=1), 255 - img]))
        writer.release()
        write_s = time.perf_counter() - t

        t = time.perf_counter()
        src = open_source(path)
        index_s = time.perf_counter() - t
        samples: list[tuple[int, float]] = []
        t = time.perf_counter()
        for i in range(len(src)):
            src.frame(i)
            if i % 100 == 99:
                samples.append((i + 1, round(rss_mb(), 1)))
        stream_s = time.perf_counter() - t
        src.close()
    after_warmup = [mb for k, mb in samples if k >= 200] or [mb for _, mb in samples]
    return {
        "frames": n_frames, "size": f"{width}x{height}", "write_s": round(write_s, 2),
        "index_s": round(index_s, 2), "stream_ms_per_frame": round(stream_s * 1000 / n_frames, 3),
        "rss_mb_every_100_frames": samples,
        "rss_growth_after_200_frames_mb": round(max(after_warmup) - min(after_warmup), 1),
        "decoded_frame_mb": round(width * height * 3 / 2**20, 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clip", type=Path,
                        default=shared_data_default() / "video" / "colonoscopy_clip_sidebyside_h264.mp4")
    parser.add_argument("--repeats", type=int, default=4, help="passes over the clip per measurement")
    parser.add_argument("--frames", type=int, default=1000, help="length of the synthetic video")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    result = {"machine": describe_cpu(), "python": platform.python_version(), "opencv": cv2.__version__,
              "command": " ".join([Path(sys.executable).name, *sys.argv])}
    print(f"machine: {result['machine']}\ncommand: {result['command']}")
    if args.clip.exists():
        acc = result["access"] = bench_access(args.clip, args.repeats)
        print(f"\n[access] {acc['clip']} ({acc['frames']} frames, {acc['size']})")
        print(f"  sequential                       {acc['sequential_ms_per_frame']:8.2f} ms/frame")
        print(f"  random, verified seek, no cache  {acc['random_ms_per_frame_no_cache']:8.2f} ms/frame "
              f"({acc['random_wrong_frames']} wrong of {acc['random_reads']})")
        print(f"  random, default (LRU 8)          {acc['random_ms_per_frame_default']:8.2f} ms/frame")
        print(f"  baseline: OpenCV set+read        {acc['baseline_opencv_seek_ms_per_frame']:8.2f} ms/frame "
              f"({acc['baseline_opencv_seek_wrong_frames']} wrong of {acc['random_reads']})")
        print(f"  step back 25..0, default         {acc['step_back_ms_per_frame_default']:8.2f} ms/frame "
              f"({acc['step_back_wrong_frames']} wrong; OpenCV set+read: "
              f"{acc['baseline_opencv_step_back_ms_per_frame']:.2f} ms/frame)")
        ratio = acc['random_ms_per_frame_no_cache'] / acc['sequential_ms_per_frame']
        print(f"  random/sequential ratio          {ratio:8.2f}x")
    else:
        print(f"\n[access] skipped: {args.clip} not found")
    vfr = result["vfr"] = bench_vfr(args.repeats)
    print(f"\n[vfr] synthetic variable-frame-rate MP4 (60 frames, 2nd half 4x longer), {vfr['reads']} random reads")
    print(f"  baseline: OpenCV set+read        {vfr['baseline_opencv_seek_ms_per_frame']:8.2f} ms/frame "
          f"({vfr['baseline_opencv_seek_wrong_frames']} wrong)")
    print(f"  verified seek (ours, no cache)   {vfr['ours_ms_per_frame']:8.2f} ms/frame "
          f"({vfr['ours_wrong_frames']} wrong)")
    mem = result["memory"] = bench_memory(args.frames, 640, 480)
    print(f"\n[memory] synthetic {mem['frames']} frames {mem['size']} MPEG-4: index {mem['index_s']} s, "
          f"stream {mem['stream_ms_per_frame']} ms/frame")
    print("  RSS (MB) every 100 frames: " + ", ".join(f"{mb}" for _, mb in mem["rss_mb_every_100_frames"]))
    print(f"  growth after frame 200: {mem['rss_growth_after_200_frames_mb']} MB "
          f"(one decoded frame is {mem['decoded_frame_mb']} MB; the whole video would be "
          f"{mem['decoded_frame_mb'] * mem['frames']:.0f} MB)")
    if args.json:
        write_json(args.json, result, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
