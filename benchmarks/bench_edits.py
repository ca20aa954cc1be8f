"""Brush latency at 1920x1080: dirty-rectangle updates vs whole-frame redraws, same run.

    .venv/bin/python benchmarks/bench_edits.py [--dabs 300] [--baseline-dabs 20] [--radius 12 40]
                                               [--repeats 3] [--no-qt]

Target (tracker): < 4 ms per dab, overlay refresh included. One dab = ``FrameEdits.dab`` on
the 1920x1080 mask plus redrawing what it changed. Measured paths, each over the same drag
(a sine-shaped sweep across the frame, one dab every radius/2 px as ``FrameEdits.line``):

* ``numpy rect`` : dab + RGBA composite (mask colour blended over the RGB frame) of the dab's
  dirty rectangle only;
* ``numpy full`` : dab + the same composite of the whole frame (the baseline);
* ``canvas rect`` / ``canvas full`` : dab + the app's real ``Canvas.refresh_overlay(rect)``
  vs ``refresh_overlay(None)`` (overlay codes + indexed QImage + painting into the overlay
  pixmap), offscreen Qt;
* ``stroke end`` : ``end_stroke`` (the undo diff) + the project journal append with fsync,
  once per drag.

Prints the median and 95th percentile per dab, the machine and the command. Exit status 1
when a dirty-rectangle path misses the target.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from polypviewer.core.edits import FrameEdits, Rect
from polypviewer.engine.policy import describe_cpu

TARGET_MS = 4.0
H, W = 1080, 1920
COLOUR = np.array([255, 64, 32], np.float32)
ALPHA = 0.45


def drag_points(radius: int, n: int) -> list[tuple[float, float]]:
    """``n`` dab centres radius/2 apart along a sine sweep (what FrameEdits.line produces)."""
    step = max(1.0, radius * 0.5)
    pts, x = [], 100.0
    for i in range(n):
        pts.append((x, H / 2 + 300 * math.sin(i * step / 200.0)))
        x += step
        if x > W - 100:
            x = 100.0
    return pts


def composite(rgba: np.ndarray, frame: np.ndarray, mask: np.ndarray, rect: Rect | None) -> None:
    """Blend the mask colour over the frame into ``rgba`` inside ``rect`` (None: all)."""
    x0, y0, x1, y1 = rect if rect is not None else (0, 0, W, H)
    f = frame[y0:y1, x0:x1].astype(np.float32)
    m = mask[y0:y1, x0:x1, None]
    out = np.where(m, f * (1 - ALPHA) + COLOUR * ALPHA, f)
    rgba[y0:y1, x0:x1, :3] = out.astype(np.uint8)
    rgba[y0:y1, x0:x1, 3] = 255


def time_dabs(edits: FrameEdits, pts: list[tuple[float, float]], radius: int, refresh) -> list[float]:
    times = []
    edits.begin_stroke()
    value = True
    for x, y in pts:
        t = time.perf_counter()
        rect = edits.dab(x, y, radius, value)
        refresh(rect)
        times.append((time.perf_counter() - t) * 1e3)
        value = not value if len(times) % 50 == 0 else value  # paint and erase: both paths
    edits.cancel_stroke()
    return times


def stats(times: list[float]) -> tuple[float, float]:
    s = sorted(times)
    return statistics.median(s), s[min(len(s) - 1, int(0.95 * len(s)))]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dabs", type=int, default=300)
    ap.add_argument("--radius", type=int, nargs="+", default=[12, 40])
    ap.add_argument("--baseline-dabs", type=int, default=20, help="dabs per drag on the whole-frame paths")
    ap.add_argument("--repeats", type=int, default=3, help="drags per path (best median kept)")
    ap.add_argument("--no-qt", action="store_true", help="skip the Canvas paths")
    args = ap.parse_args(argv)

    rng = np.random.default_rng(0)
    frame = rng.integers(0, 255, (H, W, 3), np.uint8)
    yy, xx = np.ogrid[:H, :W]
    model = ((yy - H / 2) / 300.0) ** 2 + ((xx - W / 2) / 400.0) ** 2 <= 1
    edits = FrameEdits(model)
    rgba = np.zeros((H, W, 4), np.uint8)

    paths = {
        "numpy rect": lambda r: composite(rgba, frame, edits.mask, r),
        "numpy full": lambda r: composite(rgba, frame, edits.mask, None),
    }
    canvas = None
    if not args.no_qt:
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
        from PySide6.QtWidgets import QApplication

        from polypviewer.ui.canvas import Canvas

        _app = QApplication.instance() or QApplication([])  # the canvas needs one (kept referenced)
        canvas = Canvas()
        canvas.resize(1280, 720)
        canvas.set_frame(frame)
        canvas.set_layers(edits.mask, None)
        paths["canvas rect"] = lambda r: canvas.refresh_overlay(r)
        paths["canvas full"] = lambda r: canvas.refresh_overlay(None)

    print(f"machine: {describe_cpu()}, "
          f"{platform.system()} {platform.release()}, Python {platform.python_version()}, numpy {np.__version__}")
    print(f"command: {' '.join([Path(sys.executable).name] + sys.argv)}")
    print(f"frame {W}x{H}, {args.dabs} dabs per drag ({args.baseline_dabs} on whole-frame paths), "
          f"best of {args.repeats} drags; ms per dab")
    failed = False
    for radius in args.radius:
        pts = drag_points(radius, args.dabs)
        results = {}
        for name, refresh in paths.items():
            # Whole-frame baselines are slow by nature; a short drag measures them well enough.
            sample = pts if "rect" in name else pts[:args.baseline_dabs]
            runs = [stats(time_dabs(edits, sample, radius, refresh)) for _ in range(args.repeats)]
            results[name] = min(runs)
        for name, (med, p95) in results.items():
            line = f"  radius {radius:3d}  {name:12s} median {med:8.3f}  p95 {p95:8.3f}"
            if "rect" in name:
                base = results[name.replace("rect", "full")][0]
                line += f"  {base / med:7.1f}x faster than {name.replace('rect', 'full')}"
                line += "  OK" if med < TARGET_MS else "  MISSES TARGET"
                failed |= med >= TARGET_MS
            print(line)

    # once per drag: the undo diff and the durable journal record
    from polypviewer.io.store import Project, SourceRef

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "clip.bin"
        src.write_bytes(b"\0" * 1024)
        with Project.create(Path(tmp) / "bench.h5", SourceRef.from_path(src)) as project:
            fe = project.start_frame(0, model)
            times = []
            for i in range(20):
                fe.begin_stroke()
                fe.line(100 + 20 * i, 200, 900 + 20 * i, 700, 20, i % 2 == 0)
                t = time.perf_counter()
                fe.end_stroke()
                times.append((time.perf_counter() - t) * 1e3)
            med, p95 = stats(times)
            print(f"  stroke end (800x500 px drag: diff + journal append + fsync) median {med:.2f} ms, "
          f"p95 {p95:.2f} ms")
    print(f"target < {TARGET_MS:.0f} ms per dab: {'MISSED' if failed else 'met'}")
    if canvas is not None:
        canvas.deleteLater()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
