"""``polypviewer eval``: score predicted masks or probability maps against ground truth.

Both folders may be a Kvasir-SEG layout (its ``masks/`` is used; for ``polypviewer predict``
output, ``--pred OUT/probs`` scores the saved probability maps) or a plain folder of image
files; files are paired by stem (``a.png`` with ``a.jpg``). Every ground-truth stem is
scored: a prediction that is missing, unreadable or of another size is reported by name and
scored as an empty mask, so one bad file never changes ``n`` or hides the rest. A
ground-truth file that cannot be read is reported and left out. Problems are reported as
:class:`polypviewer.cli.Report` says (one line each on stderr; exit status 1 when any item was
reported, 0 otherwise); predictions without ground truth are only noted.

Prediction files: 8-bit (or 16-bit) grey or colour images; the value is a probability
``v / 255`` (foreground where ``v >= 128``), so 0/255 masks and saved probability maps both
work. A 0/1 label image (8-bit, maximum 1) is read as a mask. Ground truth is foreground
where ``> 127``. See :mod:`polypviewer.core.metrics` for the scores and the 0/0 = 1 rule.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from polypviewer.cli import Report, UserError

if TYPE_CHECKING:
    import numpy as np


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pred", required=True, type=Path, metavar="DIR",
                        help="predicted masks or 8-bit probability maps (folder or Kvasir layout)")
    parser.add_argument("--gt", required=True, type=Path, metavar="DIR",
                        help="ground-truth masks (folder or Kvasir layout with masks/)")
    parser.add_argument("--json", type=Path, metavar="FILE",
                        help='write {"n", "mean", "per_image"} as JSON')
    parser.add_argument("--csv", type=Path, metavar="FILE", help="write one row per image as CSV")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing --json / --csv file (refused otherwise)")
    parser.add_argument("--fast", action="store_true",
                        help="skip the polyp-benchmark metrics (S-measure, weighted F, E-measure, "
                             "MAE, 256-threshold Dice/IoU); they are null in the JSON")
    parser.add_argument("--summary", action="store_true",
                        help="print only the dataset means, not one row per image")


def mask_folder(root: Path) -> Path:
    """The folder holding the masks: ``root/masks`` for a Kvasir layout, else ``root``."""
    if not root.is_dir():
        raise UserError(f"{root}: not a folder")
    sub = root / "masks"
    return sub if sub.is_dir() else root


def index_by_stem(folder: Path) -> tuple[dict[str, Path], dict[str, list[Path]]]:
    """Image files by stem, and the stems that more than one file claims (ambiguous)."""
    from polypviewer.io.images import by_stem, is_image_file

    found = by_stem(p for p in sorted(folder.iterdir()) if p.is_file() and is_image_file(p))
    unique = {stem: paths[0] for stem, paths in found.items() if len(paths) == 1}
    clashes = {stem: paths for stem, paths in found.items() if len(paths) > 1}
    return unique, clashes


def read_prediction(path: Path) -> np.ndarray:
    """(H, W) uint8 map from a prediction file; raises ItemError naming the file."""
    import numpy as np

    from polypviewer.core.metrics import to_gray, to_uint8
    from polypviewer.io.images import decode_file

    raw = to_gray(decode_file(path))
    if raw.dtype == np.uint8 and raw.max() == 1:
        labels: np.ndarray = raw * np.uint8(255)  # a 0/1 label image, as read_mask reads it
        return labels
    return to_uint8(raw)


def _check_writable(path: Path | None, overwrite: bool) -> None:
    if path is None:
        return
    if path.is_dir():
        raise UserError(f"{path}: is a folder; give a file name")
    if path.exists() and not overwrite:
        raise UserError(f"{path}: already exists; pass --overwrite to replace it")
    if not path.parent.is_dir():
        raise UserError(f"{path}: folder {path.parent} does not exist")


def _write(path: Path, text: str) -> None:
    from polypviewer.core.fileio import atomic_write

    atomic_write(path, text)  # OutputError (one line naming the file) on any failure


def to_csv(per_image: list[dict[str, Any]]) -> str:
    from polypviewer.core.metrics import PER_IMAGE_NAMES

    buf = io.StringIO()
    fields = ["name", *PER_IMAGE_NAMES, "error"]
    writer = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in per_image:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in fields})
    return buf.getvalue()


def format_table(summary: dict[str, Any], *, per_image: bool) -> str:
    from polypviewer.core.metrics import SCORE_NAMES

    rows = summary["per_image"] if per_image else []
    label = f"mean (n={summary['n']})"
    width = max([len(label), 4] + [len(r["name"]) for r in rows])
    heads = [f"{'name':<{width}}"] + [f"{k:>9}" for k in SCORE_NAMES]
    lines = ["  ".join(heads)]

    def fmt(v: Any) -> str:
        return f"{v:9.4f}" if v is not None else f"{'-':>9}"

    for r in rows:
        mark = "  (!)" if r.get("error") else ""
        lines.append("  ".join([f"{r['name']:<{width}}"] + [fmt(r[k]) for k in SCORE_NAMES]) + mark)
    mean = summary["mean"]
    lines.append("  ".join([f"{label:<{width}}"] + [fmt(mean[k]) for k in SCORE_NAMES]))
    if mean.get("s_measure") is not None:
        lines.append(
            "polyp benchmark: "
            f"meanDice(256) {mean['mean_dice_256']:.4f}  meanIoU(256) {mean['mean_iou_256']:.4f}  "
            f"S {mean['s_measure']:.4f}  wF {mean['weighted_f']:.4f}  "
            f"mE {mean['e_measure_mean']:.4f}  maxE {mean['e_measure_max']:.4f}  "
            f"MAE {mean['mae']:.4f}")
    return "\n".join(lines)


def evaluate(pred_root: Path, gt_root: Path, *, benchmark: bool = True,
             report: Callable[[str], None] | None = None,
             note: Callable[[str], None] | None = None) -> tuple[dict[str, Any], list[str]]:
    """Score every ground-truth stem; return the summary and the one-line problem reports.

    ``report(line)`` is called for each problem, ``note(line)`` (default: ``report``) for
    lines that are not problems (predictions without ground truth, a hint)."""
    import numpy as np

    from polypviewer.core.errors import PolypviewerError
    from polypviewer.core.metrics import MetricAccumulator
    from polypviewer.io.images import natural_key, read_mask

    gt_dir, pred_dir = mask_folder(gt_root), mask_folder(pred_root)
    say = report or (lambda line: None)
    tell = note or say
    if pred_dir != pred_root and (pred_root / "probs").is_dir():
        tell(f"{pred_root}: scoring masks/; pass --pred {pred_root / 'probs'} to score the "
            "probability maps (the 256-threshold metrics need them)")
    gts, gt_clashes = index_by_stem(gt_dir)
    preds, pred_clashes = index_by_stem(pred_dir)
    if not gts and not gt_clashes:
        raise UserError(f"{gt_dir}: no mask images found")
    problems: list[str] = []

    def problem(line: str) -> None:
        problems.append(line)
        say(line)

    for stem, paths in sorted(gt_clashes.items()):
        problem(f"{gt_dir / stem}.*: several ground-truth files with this stem "
                f"({', '.join(p.name for p in paths)}); left out")
    acc = MetricAccumulator(benchmark=benchmark)
    for stem in sorted(gts, key=natural_key):
        try:
            gt = read_mask(gts[stem])
        except PolypviewerError as exc:
            problem(f"{exc}; ground truth left out")
            continue
        error = None
        pred = None
        if stem in pred_clashes:
            names = ", ".join(p.name for p in pred_clashes[stem])
            error = f"{pred_dir / stem}.*: several predictions with this stem ({names})"
        elif stem not in preds:
            error = f"{pred_dir / stem}.*: prediction missing"
        else:
            try:
                pred = read_prediction(preds[stem])
            except PolypviewerError as exc:
                error = str(exc)
            else:
                if pred.shape != gt.shape:
                    error = (f"{preds[stem]}: prediction is {pred.shape[1]}x{pred.shape[0]}, "
                             f"ground truth {gt.shape[1]}x{gt.shape[0]}")
                    pred = None
        if error is not None or pred is None:
            error = f"{error or 'no prediction'}; scored as an empty mask"
            problem(error)
            pred = np.zeros(gt.shape, dtype=np.uint8)
        acc.add(stem, pred, gt, error=error)
    extra = sorted(set(preds) - set(gts) - set(gt_clashes), key=natural_key)
    if extra:
        shown = ", ".join(extra[:5]) + (" ..." if len(extra) > 5 else "")
        tell(f"{pred_dir}: {len(extra)} prediction(s) without ground truth ignored: {shown}")
    summary = acc.summary()
    summary["errors"] = problems
    return summary, problems


def run(args: argparse.Namespace) -> int:
    _check_writable(args.json, args.overwrite)
    _check_writable(args.csv, args.overwrite)
    if args.json is not None and args.csv is not None and args.json.resolve() == args.csv.resolve():
        raise UserError(f"{args.json}: --json and --csv name the same file")

    report = Report("eval")
    summary, _ = evaluate(args.pred, args.gt, benchmark=not args.fast, report=report, note=report.note)
    print(format_table(summary, per_image=not args.summary))
    if args.json is not None:
        _write(args.json, json.dumps(summary, indent=2) + "\n")
    if args.csv is not None:
        _write(args.csv, to_csv(summary["per_image"]))
    return report.finish()
