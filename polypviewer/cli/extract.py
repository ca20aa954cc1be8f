"""``polypviewer extract VIDEO (--frames 0,5,17 | --every N | --range A:B) --out DIR``

Writes the chosen frames as lossless PNG named ``<video-stem>_<frame:06d>.png`` (the names
a Kvasir export of the same frames uses), for annotation in another tool or in the app.
Problems are reported as :class:`polypviewer.cli.Report` says (one line each on stderr, the
rest goes on, exit status 1): what the source found when it opened (a video shorter than its
header says, two files with one name), frames out of range or undecodable (skipped), and
frames that cannot be written (``<file>: could not write frame N: <reason>``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from polypviewer.cli import Report, UserError, refuse_existing_output


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("video", type=Path, help="video file (or any source: folder, image)")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--frames", metavar="I,J,...", help="comma-separated frame numbers (0-based), e.g. 0,5,17")
    which.add_argument("--every", metavar="N", type=int, help="every N-th frame: 0, N, 2N, ...")
    which.add_argument("--range", metavar="A:B", dest="frange",
                       help="frames A to B-1 (Python slice; A: to the end, :B from the start)")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder")
    parser.add_argument("--overwrite", action="store_true",
                        help="write into a non-empty DIR, replacing files of the same name (others are kept)")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress on stderr")


def _int(text: str, what: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise UserError(f"{what}: {text.strip()!r} is not a frame number") from None


def parse_selection(args: argparse.Namespace, n: int) -> list[int]:
    """Frame numbers asked for, in order, duplicates removed (may include out-of-range ones)."""
    if args.frames is not None:
        picked = [_int(t, "--frames") for t in args.frames.split(",") if t.strip()]
        if not picked:
            raise UserError("--frames: give at least one frame number, e.g. --frames 0,5,17")
    elif args.every is not None:
        if args.every < 1:
            raise UserError(f"--every: N must be at least 1 (got {args.every})")
        picked = list(range(0, n, args.every))
    else:
        a, sep, b = args.frange.partition(":")
        if not sep:
            raise UserError(f"--range: expected A:B, got {args.frange!r}")
        start = _int(a, "--range") if a.strip() else 0
        stop = _int(b, "--range") if b.strip() else n
        if start < 0 or stop < start:
            raise UserError(f"--range: need 0 <= A <= B (got {args.frange})")
        picked = list(range(start, stop))
    return list(dict.fromkeys(picked))


def run(args: argparse.Namespace) -> int:
    from polypviewer.core.errors import PolypviewerError
    from polypviewer.core.fileio import OutputError, atomic_path, describe_exception, remove_stale_temporaries
    from polypviewer.io.export import ExportError
    from polypviewer.io.images import encode_image
    from polypviewer.io.sources import open_source

    out: Path = args.out
    refuse_existing_output(out, args.overwrite)
    report = Report("extract")
    with open_source(args.video) as src:
        report.source(src)
        wanted = parse_selection(args, len(src))
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ExportError(f"cannot create output folder ({exc.strerror or exc})", out) from None
        remove_stale_temporaries(out)
        written, failed = 0, 0
        for k, i in enumerate(wanted, 1):
            try:
                if not 0 <= i < len(src):
                    raise ExportError(f"frame {i} out of range (source has {len(src)} frames); skipped", src.path)
                target = out / f"{src.name(i)}.png"
                data = encode_image(src.frame(i), ".png")
            except (PolypviewerError, OSError, ValueError) as exc:
                failed += 1
                report(str(exc) if isinstance(exc, PolypviewerError)
                       else f"{src.path}: frame {i}: {describe_exception(exc)}")
                continue
            try:
                with atomic_path(target) as tmp:
                    tmp.write_bytes(data)
            except (OutputError, OSError) as exc:
                failed += 1
                why = exc.reason if isinstance(exc, OutputError) else describe_exception(exc)
                report(f"{target}: could not write frame {i}: {why}")
                continue
            written += 1
            if not args.quiet:
                print(f"[{k}/{len(wanted)}] {target.name}", file=sys.stderr)
    print(f"wrote {written} of {len(wanted)} frame(s) to {out}" + (f"; {failed} failed" if failed else ""))
    return report.finish()
