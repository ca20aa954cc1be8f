"""``polypviewer predict SOURCE --out DIR [--model NAME] [--weights FILE] ...``

Segments an image, a folder of images, a Kvasir-SEG dataset or a video. Writes
``DIR/masks/<stem>.png`` (0/255) and, with ``--save-prob``, ``DIR/probs/<stem>.png``
(8-bit, round(255 * p)); video frames are named ``<video-stem>_<frame:06d>``. With
``--shard I/N`` only items whose index % N == I are done, so N machines (or processes)
split a dataset and their outputs together are exactly one run's. When the source has
ground truth the metrics are printed at the end. Problems are reported the way
:class:`polypviewer.cli.Report` says (one line each on stderr, exit status 1): what the source
found when it opened (two files with one name, a video shorter than its header, images
without masks), frames that cannot be read or written (skipped) and ground-truth masks that
cannot be used (the frame is still predicted, only left out of the metrics). Existing output
files are never replaced without ``--overwrite``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from polypviewer.cli import Report, UserError


def add_engine_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by the commands that build a Predictor."""
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                        help="where to run (auto: CUDA if present, else CPU)")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16", "int8"),
                        help="arithmetic (auto: fp16 on CUDA, bf16 on CPUs with native bf16, else fp32, or int8 "
                             "where measured to agree with fp32 and to be the fastest (--backend auto); "
                             "int8: CPU/OpenVINO, quantised on frames of the source with the stem in fp32, faster, "
                             "close to fp32 but not measured against it here)")
    parser.add_argument("--backend", default="auto", choices=("auto", "torch", "openvino", "onnxruntime"),
                        help="inference backend (auto: the fastest path that agrees with fp32, measured once "
                             "per network and weights on this machine and cached; on a GPU, PyTorch)")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", type=Path, help="image, image folder, Kvasir dataset (images/ + masks/) or video")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder")
    parser.add_argument("--model", metavar="NAME", help="network (default: the one the weights are for)")
    parser.add_argument("--weights", type=Path, metavar="FILE",
                        help="checkpoint (.safetensors or .pth); default: the shipped weights")
    parser.add_argument("--allow-random", action="store_true",
                        help="run an untrained network when no weights exist (benchmarks only)")
    parser.add_argument("--save-prob", action="store_true", help="also write DIR/probs/<stem>.png (round(255*p))")
    parser.add_argument("--threshold", type=float, default=0.5, metavar="T", help="mask = prob >= T (default 0.5)")
    add_engine_options(parser)
    parser.add_argument("--tta", action="store_true", help="test-time augmentation: average over flips (3x slower)")
    parser.add_argument("--overlay-video", type=Path, metavar="FILE",
                        help="also write an MP4 of the frames with the predicted mask blended in")
    parser.add_argument("--shard", metavar="I/N", help="only items with index %% N == I (e.g. 0/2 and 1/2)")
    parser.add_argument("--batch-size", type=int, default=None, metavar="B",
                        help="frames per inference call (default: the backend's choice)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files of the same name")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bar")


CALIBRATION_FRAMES = 32
# --backend auto measures the engines (engine.selection: seconds, once per network, weights and
# machine) before a run of at least this many frames; a shorter one runs the cached choice or
# the static rule, as the "engine:" line says.
MEASURE_FROM = 100


def _say_measuring() -> None:
    print("engine: measuring the engines on this machine before a long run (once per network, weights "
          "and machine, then cached; a minute or more where int8 is quantised; --backend NAME skips it)",
          file=sys.stderr)


def calibration_frames(src: Any, n: int = CALIBRATION_FRAMES) -> list[Any]:
    """Up to ``n`` frames spread evenly over the whole source (every shard picks the same
    ones, so shards stay equal to one run), for int8 calibration. Unreadable ones are skipped."""
    from polypviewer.core.errors import PolypviewerError

    total = len(src)
    picks = list(range(total)) if total <= n else [round(k * (total - 1) / max(n - 1, 1)) for k in range(n)]
    frames = []
    for i in picks:
        try:
            frames.append(src.frame(i))
        except (OSError, ValueError, PolypviewerError):
            continue
    if not frames:
        raise UserError(f"{src.path}: no readable frame to calibrate int8 on")
    return frames


def parse_shard(text: str | None) -> tuple[int, int]:
    if text is None:
        return 0, 1
    a, sep, b = text.partition("/")
    try:
        i, n = int(a), int(b)
    except ValueError:
        raise UserError(f"--shard: expected I/N such as 0/4, got {text!r}") from None
    if not sep or n < 1 or not 0 <= i < n:
        raise UserError(f"--shard: need 0 <= I < N, got {text!r}")
    return i, n


class Progress:
    """One-line progress bar with frames/s on stderr (a line per 10% when not a terminal)."""

    def __init__(self, total: int, quiet: bool) -> None:
        self.total, self.quiet = total, quiet
        self.tty = sys.stderr.isatty()
        self._last_decile = -1

    def __call__(self, done: int, total: int, fps: float) -> None:
        if self.quiet:
            return
        frac = done / max(total, 1)
        bar = "#" * int(30 * frac)
        line = f"[{bar:<30}] {done}/{total} frames  {fps:5.1f} frames/s"
        if self.tty:
            print("\r" + line, end="" if done < total else "\n", file=sys.stderr, flush=True)
        elif int(frac * 10) != self._last_decile or done == total:
            self._last_decile = int(frac * 10)
            print(line, file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    from polypviewer.core.errors import PolypviewerError
    from polypviewer.engine.inference import PipelineRunner, Predictor
    from polypviewer.io.images import remove_stale_temporaries
    from polypviewer.io.sources import open_source

    shard_i, shard_n = parse_shard(args.shard)
    if not 0.0 <= args.threshold <= 1.0:
        raise UserError(f"--threshold must be between 0 and 1 (got {args.threshold})")
    if args.batch_size is not None and args.batch_size < 1:
        raise UserError(f"--batch-size must be at least 1 (got {args.batch_size})")
    out: Path = args.out
    report = Report("predict")
    with open_source(args.source) as opened:
        report.source(opened)
        src = GroundTruthGuard(opened)
        indices = [i for i in range(len(src)) if i % shard_n == shard_i]
        folders = {"masks": out / "masks"}
        if args.save_prob:
            folders["probs"] = out / "probs"
        names = {i: src.name(i) for i in indices}
        if not args.overwrite:
            clash = [folders[k] / f"{names[i]}.png" for k in folders for i in indices
                     if (folders[k] / f"{names[i]}.png").exists()]
            if args.overlay_video is not None and args.overlay_video.exists():
                clash.append(args.overlay_video)
            if clash:
                raise UserError(f"{clash[0]}: already exists ({len(clash)} output file(s) would be replaced); "
                                "pass --overwrite or choose another --out")
        calibration = calibration_frames(src) if args.precision == "int8" else None
        if calibration and not args.quiet:
            print(f"int8: quantising on {len(calibration)} frames of the source "
                  "(once per weights and source; cached)", file=sys.stderr)
        predictor = Predictor.create(args.model, args.weights, device=args.device, precision=args.precision,
                                     backend=args.backend, tta=args.tta, allow_random=args.allow_random,
                                     threshold=args.threshold, calibration=calibration,
                                     measure="now" if len(indices) >= MEASURE_FROM else "cached",
                                     on_measure=None if args.quiet else _say_measuring)
        info = predictor.info
        if not args.quiet:
            shard = f", shard {shard_i}/{shard_n}" if shard_n > 1 else ""
            print(f"{info['model']} ({info['version']}) on {info['path']}: {len(indices)} item(s) "
                  f"from {src.path}{shard}", file=sys.stderr)
            print(f"engine: {info['why']}", file=sys.stderr)
        for folder in folders.values():
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise PolypviewerError(f"cannot create output folder ({exc.strerror or exc})", folder) from None
            remove_stale_temporaries(folder)

        acc = _accumulator() if src.has_masks else None
        writer = _OverlayWriter(args.overlay_video, src.fps) if args.overlay_video else None
        t0 = time.perf_counter()
        runner = PipelineRunner(src, predictor, indices, batch_size=args.batch_size,
                                on_progress=Progress(len(indices), args.quiet))
        try:
            failed = write_predictions(runner, folders, acc=acc, overlay=writer, report=report)
        finally:
            if writer is not None:
                writer.close()
            for i in sorted(src.gt_problems):
                report(src.gt_problems[i])
        elapsed = time.perf_counter() - t0
        done = len(indices) - failed
        if not args.quiet:
            print(f"{done} mask(s) written to {folders['masks']}, {failed} failed, "
                  f"{len(indices) / max(elapsed, 1e-9):.1f} frames/s overall", file=sys.stderr)
        if acc is not None and len(acc):
            _print_metrics(acc.summary())
    return report.finish()


class GroundTruthGuard:
    """A source as ``predict`` feeds it to the pipeline: a ground-truth mask that cannot be
    used (unreadable, another size than its image) reads as None and is recorded in
    ``gt_problems`` (frame index -> one line), so the frame is still predicted and only left
    out of the metrics. Everything else is the source's own."""

    def __init__(self, src: Any) -> None:
        self._src = src
        self.gt_problems: dict[int, str] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._src, name)

    def __len__(self) -> int:
        return len(self._src)

    def mask(self, i: int) -> Any:
        from polypviewer.core.errors import PolypviewerError

        try:
            return self._src.mask(i)
        except PolypviewerError as exc:
            self.gt_problems[int(i)] = f"{exc}; frame predicted, its ground truth left out of the metrics"
            return None


def write_predictions(runner: Any, folders: dict[str, Path], *, acc: Any = None, overlay: Any = None,
                      report: Any = None) -> int:
    """Drain ``runner``: write ``masks/`` (0/255) and ``probs/`` (round(255 p)) PNGs atomically,
    score against ground truth, add overlay frames. Returns the number of failed items, each
    named in one line through ``report`` (default: printed on stderr). ``bench`` times this
    same function for its end-to-end number.

    Encoding and the (fsynced) writes run on two writer threads, a bounded number of frames
    behind, so a slow disk does not stall the pipeline; scoring and the overlay video stay
    here, in frame order.
    """
    from collections import deque
    from concurrent.futures import Future, ThreadPoolExecutor

    import numpy as np

    from polypviewer.core.errors import PolypviewerError
    from polypviewer.core.fileio import describe_exception
    from polypviewer.io.images import encode_image, write_atomic

    if report is None:
        def report(line: str) -> None:
            print(f"polypviewer: {line}", file=sys.stderr)

    def write(name: str, mask: np.ndarray, prob: np.ndarray | None) -> None:
        write_atomic(folders["masks"] / f"{name}.png", encode_image(mask.astype(np.uint8) * 255, ".png"))
        if prob is not None:
            prob8 = np.rint(prob * 255.0).astype(np.uint8)
            write_atomic(folders["probs"] / f"{name}.png", encode_image(prob8, ".png"))

    def collect(name: str, fut: Future[None]) -> int:
        exc = fut.exception()
        if exc is None:
            return 0
        report(f"skipped {name}: cannot write output ({describe_exception(exc)})")
        return 1

    failed = 0
    pending: deque[tuple[str, Future[None]]] = deque()
    try:
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="polypviewer-write") as pool:
            for r in runner:
                if r.error is not None:
                    failed += 1
                    report(f"skipped {r.error}")
                    continue
                mask = r.mask
                pending.append((r.name, pool.submit(write, r.name, mask, r.prob if "probs" in folders else None)))
                try:
                    if acc is not None and r.gt is not None:
                        acc.add(r.name, mask, r.gt)
                    if overlay is not None:
                        overlay.add(r.frame, mask)
                except (OSError, ValueError, PolypviewerError) as exc:
                    failed += 1
                    report(f"{r.name}: not scored or not in the overlay video ({describe_exception(exc)})")
                while pending and (len(pending) > 16 or pending[0][1].done()):
                    failed += collect(*pending.popleft())
            while pending:
                failed += collect(*pending.popleft())
    finally:
        runner.cancel()
    return failed


def _accumulator() -> Any:
    from polypviewer.core.metrics import MetricAccumulator

    return MetricAccumulator(benchmark=False)


def _print_metrics(summary: dict[str, Any]) -> None:
    from polypviewer.core.metrics import SCORE_NAMES

    mean = summary["mean"]
    cells = "  ".join(f"{k} {mean[k]:.4f}" for k in SCORE_NAMES if mean.get(k) is not None)
    print(f"ground truth for {summary['n']} item(s), mean per image: {cells}")


class _OverlayWriter:
    """MP4 (mp4v) of the frames with the predicted mask tinted in, at the source's fps."""

    def __init__(self, path: Path, fps: float | None) -> None:
        self.path = path
        self.fps = fps or 10.0
        self._writer: Any = None
        self._size: tuple[int, int] | None = None

    def add(self, frame: Any, mask: Any) -> None:
        import cv2

        from polypviewer.core.overlay import OverlayStyle, color_table, composite, overlay_codes

        style = OverlayStyle(show_gt=False)
        img = composite(frame, overlay_codes(mask, None, style), color_table(style))
        h, w = img.shape[:2]
        if self._writer is None:
            self._size = (w, h)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter.fourcc(*"mp4v"), self.fps, (w, h))
            if not self._writer.isOpened():
                from polypviewer.core.errors import PolypviewerError

                raise PolypviewerError("cannot open the overlay video for writing", self.path)
        if (w, h) != self._size:  # image folders mix sizes; a video has one
            img = cv2.resize(img, self._size, interpolation=cv2.INTER_AREA)
        self._writer.write(cv2.cvtColor(img, cv2.COLOR_RGB2BGR))

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
