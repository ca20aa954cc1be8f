"""``polypviewer segment-boxes SOURCE --boxes BOXES.json --out DIR``

Masks from boxes, for datasets that have boxes but no masks: each frame of SOURCE (a
Kvasir-layout folder, an image folder, an image or a video: anything ``predict`` opens) that
has an entry in BOXES.json is embedded once by LiteMedSAM (``engine.prompting``) and each of
its boxes prompts a mask; ``DIR/masks/<name>.png`` (0/255) is the union of them. BOXES.json
is Kvasir-SEG's ``bboxes.json`` format, the one ``io.export`` writes::

    {"<name>": {"height": H, "width": W,
                "bbox": [{"label": "polyp", "xmin": X0, "ymin": Y0, "xmax": X1, "ymax": Y1}]}}

An entry with an empty ``bbox`` list writes an empty mask (a frame with no polyp). A bad
entry (not an object, a box without numbers, a box outside its frame, a height/width other
than its frame's, a name SOURCE does not have) is one line on stderr naming BOXES.json, the
entry and the reason; it is skipped, the rest goes on, and the exit status is 1. When SOURCE
has ground truth, the written masks are scored against it (``core.metrics``) and the means
printed. Existing files are never replaced without ``--overwrite``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from polypviewer.cli import Report, UserError, refuse_existing_output

KEYS = ("xmin", "ymin", "xmax", "ymax")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", type=Path, help="Kvasir-layout folder, image folder, image or video")
    parser.add_argument("--boxes", required=True, type=Path, metavar="BOXES.json",
                        help="boxes per frame name in Kvasir-SEG's bboxes.json format")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder (masks/ inside)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing masks of the same name")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress on stderr")


def parse_entry(entry: Any) -> tuple[list[tuple[float, float, float, float]], tuple[int, int] | None]:
    """The boxes of one bboxes.json entry and its (height, width) if given; a ValueError or
    TypeError says why not."""
    if not isinstance(entry, dict):
        raise TypeError(f"expected an object with 'bbox', got {type(entry).__name__}")
    boxes = entry.get("bbox")
    if not isinstance(boxes, list):
        raise TypeError("no 'bbox' list")
    out = []
    for k, b in enumerate(boxes):
        if not isinstance(b, dict) or any(key not in b for key in KEYS):
            raise ValueError(f"box {k} lacks one of {', '.join(KEYS)}")
        vals = [b[key] for key in KEYS]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in vals):
            raise ValueError(f"box {k} has a coordinate that is not a finite number")
        x0, y0, x1, y1 = (float(v) for v in vals)
        if x1 <= x0 or y1 <= y0:
            raise ValueError(f"box {k} ({x0:g}, {y0:g}, {x1:g}, {y1:g}) is empty or reversed")
        out.append((x0, y0, x1, y1))
    size = None
    if "height" in entry or "width" in entry:
        h, w = entry.get("height"), entry.get("width")
        if not (isinstance(h, int) and isinstance(w, int)) or isinstance(h, bool) or isinstance(w, bool) \
                or h < 1 or w < 1:
            raise ValueError(f"height/width {h!r}x{w!r} are not positive integers")
        size = (h, w)
    return out, size


def read_boxes(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise UserError(f"{path}: not a readable JSON file ({' '.join(str(exc).split())})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected an object of name -> entry (Kvasir-SEG bboxes.json), "
                        f"got {type(data).__name__}")
    return data


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from polypviewer.core.errors import PolypviewerError
    from polypviewer.core.fileio import OutputError, atomic_path, describe_exception, remove_stale_temporaries
    from polypviewer.core.metrics import SCORE_NAMES, MetricAccumulator
    from polypviewer.engine.prompting import PromptError, PromptSegmenter, scale_box
    from polypviewer.io.export import ExportError
    from polypviewer.io.images import encode_image
    from polypviewer.io.sources import open_source

    entries = read_boxes(args.boxes)
    masks_dir: Path = args.out / "masks"
    if masks_dir.exists():
        refuse_existing_output(masks_dir, args.overwrite, "pass --overwrite to replace masks of the same name")
    report = Report("segment-boxes")
    seg = PromptSegmenter.create()
    acc = MetricAccumulator(benchmark=False)
    written = 0
    with open_source(args.source) as src:
        report.source(src)
        index = {src.name(i): i for i in range(len(src))}
        for name in entries:
            if name not in index:
                report(f"{args.boxes}: entry {name!r}: no frame of that name in {src.path}; skipped")
        todo = [name for name in entries if name in index]
        try:
            masks_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ExportError(f"cannot create output folder ({exc.strerror or exc})", masks_dir) from None
        remove_stale_temporaries(masks_dir)
        for k, name in enumerate(todo, 1):
            i = index[name]
            try:
                boxes, size = parse_entry(entries[name])
                frame = src.frame(i)
                h, w = frame.shape[:2]
                if size is not None and size != (h, w):
                    raise ValueError(f"height/width {size[0]}x{size[1]} differ from the frame's {h}x{w}")
                for b in boxes:
                    scale_box(b, (h, w))  # outside / degenerate: the whole entry is refused
                if boxes:
                    mask = seg.segment_boxes(seg.embed(frame), boxes)
                else:
                    mask = np.zeros((h, w), bool)
            except (ValueError, TypeError, PromptError) as exc:
                report(f"{args.boxes}: entry {name!r}: {exc}; skipped")
                continue
            except PolypviewerError as exc:
                report(f"{exc}; skipped")
                continue
            target = masks_dir / f"{name}.png"
            try:
                data = encode_image(mask.astype(np.uint8) * 255, ".png")
                with atomic_path(target, overwrite=args.overwrite) as tmp:
                    tmp.write_bytes(data)
            except (OutputError, OSError) as exc:
                why = exc.reason if isinstance(exc, OutputError) else describe_exception(exc)
                report(f"{target}: could not write mask: {why}")
                continue
            written += 1
            try:
                gt = src.mask(i)
            except PolypviewerError as exc:
                report(f"{exc} (ground truth; not scored)")
                gt = None
            if gt is not None:
                acc.add(name, mask, gt)
            if not args.quiet:
                print(f"[{k}/{len(todo)}] {target.name} ({len(boxes)} box(es))", file=sys.stderr)
    print(f"wrote {written} mask(s) to {masks_dir} from {len(entries)} entr{'y' if len(entries) == 1 else 'ies'}")
    if len(acc):
        mean = acc.summary()["mean"]
        print(f"against the ground truth (n={len(acc)}): "
              + "  ".join(f"{k} {mean[k]:.4f}" for k in SCORE_NAMES if mean.get(k) is not None))
    return report.finish()
