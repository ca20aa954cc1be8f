"""``polypviewer train``: train a network on a Kvasir-layout dataset, keep the best checkpoint.

    polypviewer train --model lite_pranet --data ../shared/data/endotect \\
        --split ../shared/data/endotect/split.json:train --val-split val \\
        --recipe lite --out lite_pranet.safetensors

Writes OUT (safetensors: the architecture and preprocessing are in its metadata), its
model card ``OUT.json`` + ``OUT.md``, and the resumable state ``OUT.state.pt``
(``--resume`` continues from it; Ctrl-C saves it). Existing outputs are refused before
training starts unless ``--overwrite`` (``--resume`` replaces only its own run's files, the
card only when it describes the OUT being continued); a symbolic link at any of these names
is always refused, never written through.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

from polypviewer.cli import UserError


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="registered network (see `polypviewer info`)")
    parser.add_argument("--data", required=True, type=Path, help="Kvasir-layout folder: images/ + masks/")
    parser.add_argument("--split", metavar="FILE:KEY", help="train only on the stems listed under KEY in FILE")
    val = parser.add_mutually_exclusive_group()
    val.add_argument("--val", type=Path, metavar="DIR", help="validation set (Kvasir layout)")
    val.add_argument("--val-split", metavar="KEY", help="validation stems: KEY of the --split file, from --data")
    parser.add_argument("--epochs", type=int, help="override the recipe's epoch count")
    parser.add_argument("--recipe", default=None,
                        help="pranet, pranet_faithful, resunetpp, resunetpp_seed, resunetpp_fast, lite, finetune "
                             "(default: lite for lite_pranet, resunetpp_seed for resunetpp*, else pranet)")
    parser.add_argument("--out", required=True, type=Path, help="checkpoint to write (.safetensors)")
    parser.add_argument("--resume", action="store_true", help="continue from OUT.state.pt")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing OUT, its card (OUT.json, OUT.md) and state; "
                             "without it existing outputs are refused")
    parser.add_argument("--test", type=Path, action="append", default=[], metavar="DIR",
                        help="extra Kvasir-layout set to score the best weights on for the card "
                             "(repeatable; all-empty masks give the false-positive rate)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--bf16", default="auto", choices=("auto", "on", "off"),
                        help="bf16 autocast (auto: where the CPU/GPU has it natively)")
    parser.add_argument("--fp16-weights", action="store_true", help="store the checkpoint in fp16")
    parser.add_argument("--no-pretrained", action="store_true", help="lite_pranet: random encoder")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--max-steps", type=int, help="stop after this many steps (smoke runs)")
    parser.add_argument("--size", type=int, help="train at this input size instead of the model's "
                                                 "(recorded in the checkpoint)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def check_outputs(out: Path, *, resume: bool, overwrite: bool) -> bool:
    """Refuse, before any training, outputs that would be written through a link or would
    replace someone's file. Returns whether the existing card may be replaced (``--overwrite``,
    or ``--resume`` of the run whose checkpoint that card describes)."""
    import json

    from polypviewer.core.fileio import refuse_link, sha256_file
    from polypviewer.engine import cards, training

    card = cards.card_paths(out)
    for p in (out, training.state_path(out), *card):
        refuse_link(p)
    if overwrite:
        return True
    if not resume:
        for p in (out, training.state_path(out), *card):
            if os.path.lexists(p):
                raise UserError(f"{p}: already exists; not overwriting it (choose another --out, "
                                f"--resume the run, or pass --overwrite)")
        return False
    existing = [p for p in card if os.path.lexists(p)]
    if not existing:
        return False
    try:  # the card of the very checkpoint being continued is this run's own: replaced
        ours = card[0].is_file() and json.loads(card[0].read_text(encoding="utf-8")).get("sha256") \
            == sha256_file(out)
    except (OSError, ValueError, AttributeError):
        ours = False
    if not ours:
        raise UserError(f"{existing[0]}: already exists and is not the card of {out.name}; not "
                        f"overwriting it (move it, or pass --overwrite)")
    return True


def default_recipe(model: str) -> str:
    if model == "lite_pranet":
        return "lite"
    return "resunetpp_seed" if model.startswith("resunetpp") or model == "unet" else "pranet"


class ProgressBar:
    """One self-rewriting line on stderr per epoch; a full line when an epoch ends."""

    def __init__(self, stream=sys.stderr, width: int = 24) -> None:
        self.stream, self.width = stream, width

    def __call__(self, ev) -> None:
        if ev.kind == "step":
            filled = int(self.width * ev.step / ev.steps_per_epoch)
            self.stream.write(f"\repoch {ev.epoch + 1}/{ev.epochs} [{'#' * filled}{'.' * (self.width - filled)}] "
                              f"{ev.step}/{ev.steps_per_epoch} loss {ev.loss:.4f} lr {ev.lr:.2e} "
                              f"{ev.elapsed:.0f}s")
        elif ev.kind == "epoch":
            val = f" val dice {ev.val['dice']:.4f} (best {ev.best:.4f})" if ev.val else ""
            loss = f"{ev.loss:.4f}" if ev.loss is not None else "-"
            self.stream.write(f"\repoch {ev.epoch + 1}/{ev.epochs} loss {loss}{val} {ev.elapsed:.0f}s"
                              + " " * 20 + "\n")
        elif ev.kind == "interrupted":
            self.stream.write(f"\ninterrupted at epoch {ev.epoch + 1} step {ev.step}; state saved\n")
        self.stream.flush()


def run(args: argparse.Namespace) -> int:
    import torch

    from polypviewer.engine import cards, training
    from polypviewer.engine.data import load_set, read_split
    from polypviewer.nets.registry import get_spec

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        spec = get_spec(args.model)
    except KeyError as exc:
        raise UserError(str(exc.args[0])) from None
    recipe = training.get_recipe(args.recipe or default_recipe(args.model))
    replace_card = check_outputs(args.out, resume=args.resume, overwrite=args.overwrite)
    if args.val_split and not args.split:
        raise UserError("--val-split KEY needs --split FILE:KEY (the file holding both lists)")
    size = args.size or spec.preprocessing.input_size
    if size % 32 or not 32 <= size <= 2048:  # the rule load_checkpoint applies to what we write
        raise UserError(f"--size {size}: the input size must be a multiple of 32 from 32 to 2048")
    names = read_split(args.split) if args.split else None
    train_set = load_set(args.data, names)
    val_set = None
    if args.val_split:
        val_file = args.split.rpartition(":")[0]
        val_set = load_set(args.data, read_split(f"{val_file}:{args.val_split}"))
    elif args.val:
        val_set = load_set(args.val)
    for p in train_set.problems + (val_set.problems if val_set else []):
        print(f"polypviewer: warning: {p}", file=sys.stderr)
    print(f"training {args.model} on {len(train_set)} images"
          + (f", validating on {len(val_set)}" if val_set else ", no validation set (keeping the last epoch)")
          + f"; recipe {recipe.name}", file=sys.stderr)
    # The command that reproduces the weights (--resume only continues the same run).
    command = "polypviewer train " + " ".join(shlex.quote(a) for a in sys.argv[2:]
                                              if a not in ("--resume", "--overwrite")) \
        if len(sys.argv) > 1 and sys.argv[1] == "train" else None
    data_meta = {"train": f"{args.data} ({args.split or 'all'}, {len(train_set)} images)",
                 "val": f"{args.val or args.data} ({args.val_split or 'all'}, {len(val_set)} images)" if val_set else None}
    callbacks = [] if args.quiet else [ProgressBar()]
    try:
        result = training.train(
            args.model, train_set, val_set, args.out, recipe=recipe, epochs=args.epochs,
            pretrained=not args.no_pretrained, device=args.device, bf16=args.bf16, seed=args.seed,
            resume=args.resume, overwrite=args.overwrite, callbacks=callbacks, half=args.fp16_weights,
            max_steps=args.max_steps,
            size=size,
            meta={"data": data_meta, "command": command})
    except KeyboardInterrupt:
        print(f"polypviewer: interrupted; continue with the same command plus --resume "
              f"(state in {training.state_path(args.out)})", file=sys.stderr)
        return 130
    if int(os.environ.get("RANK", "0")) != 0:
        return 0  # under torchrun only rank 0 writes and reports
    if result.interrupted:
        print(f"stopped after {result.global_step} steps; --resume continues", file=sys.stderr)
    if not args.out.exists():
        raise UserError(f"{args.out}: no checkpoint was written (no epoch finished)", status=1)
    card = cards.build_card(args.out, args.model, recipe, result, data=data_meta, command=command,
                               tests=args.test, device=args.device)
    jpath, mpath = cards.write_card(args.out, card, overwrite=replace_card)
    best = f"best val dice {result.best_score:.4f} at epoch {result.best_epoch}" if val_set else "last epoch kept"
    print(f"wrote {args.out} (sha256 {card['sha256'][:12]}, {best}), card {jpath} and {mpath}")
    return 0
