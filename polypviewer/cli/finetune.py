"""``polypviewer finetune``: adapt a model to corrected masks and prove it on held-out frames.

    polypviewer finetune --data corrected/ --out my-clinic-v1.safetensors

SOURCE is a Kvasir-layout folder (``images/`` + ``masks/``, as the app exports it). A
reproducible share (``--holdout``, default 0.3) is held out: the base model is scored on it,
fine-tuned on the rest, scored again. Writes OUT and its card ``OUT.json`` / ``OUT.md``;
never overwrites the base, a shipped model, or an existing file.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from polypviewer.cli import UserError


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--base", metavar="MODEL_OR_FILE",
                        help="checkpoint file or shipped model name (default: the shipped default model)")
    parser.add_argument("--data", required=True, type=Path, metavar="SOURCE",
                        help="corrected set: Kvasir-layout folder (images/ + masks/) or a review "
                             "project file (*.pvproj.h5: its accepted + corrected frames)")
    parser.add_argument("--out", required=True, type=Path, help="new checkpoint to write (.safetensors)")
    parser.add_argument("--holdout", type=float, default=0.3, help="share of frames held out (default 0.3)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the hold-out split and training")
    parser.add_argument("--epochs", type=int, help="override the fine-tune recipe's epochs")
    parser.add_argument("--recipe", default="finetune", help="training recipe (default: finetune)")
    parser.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--bf16", default="auto", choices=("auto", "on", "off"))
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--size", type=int, help="train/score at this input size (recorded in OUT)")
    parser.add_argument("--max-steps", type=int, help="stop training after this many steps (smoke runs)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    import torch

    from polypviewer.cli.train import ProgressBar
    from polypviewer.engine.data import load_set
    from polypviewer.engine.finetune import finetune, resolve_base
    from polypviewer.engine.training import load_trained

    if args.threads:
        torch.set_num_threads(args.threads)
    if not 0 < args.holdout < 1:
        raise UserError(f"--holdout must be between 0 and 1, got {args.holdout}")
    from polypviewer.nets.registry import get_spec

    base = resolve_base(args.base)
    _, name, ckpt = load_trained(base)
    size = args.size or (ckpt.preprocessing or get_spec(name).preprocessing).input_size
    data = load_set(args.data)
    for p in data.problems:
        print(f"polypviewer: warning: {p}", file=sys.stderr)
    print(f"fine-tuning {name} from {base} on {args.data} ({len(data)} frames, "
          f"{args.holdout:.0%} held out)", file=sys.stderr)
    try:
        res = finetune(data, args.out, base=base, holdout=args.holdout, seed=args.seed,
                       recipe=args.recipe, epochs=args.epochs, size=size, device=args.device,
                       bf16=args.bf16, callbacks=[] if args.quiet else [ProgressBar()],
                       max_steps=args.max_steps, source=str(args.data))
    except KeyboardInterrupt:
        print("polypviewer: interrupted; nothing was written", file=sys.stderr)
        return 130
    if res.interrupted:
        print("stopped before the end; nothing was written", file=sys.stderr)
        return 1
    if res.out is None:
        return 0  # a torchrun rank other than 0
    b, a = res.before, res.after
    assert a is not None and res.sha256 is not None  # set whenever a file was written
    print(f"held-out frames ({len(res.held_out_names)}): dice {b['dice']:.4f} -> {a['dice']:.4f} "
          f"({res.delta_dice:+.4f}), iou {b['iou']:.4f} -> {a['iou']:.4f}; {res.wall_time:.0f} s")
    print(f"wrote {res.out} (version {res.sha256[:12]}, base {res.card['meta']['base']['version']})")
    return 0
