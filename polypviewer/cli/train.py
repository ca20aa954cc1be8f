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
import contextlib
import os
import shlex
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from polypviewer.cli import UserError

if TYPE_CHECKING:
    from polypviewer.engine.data import SampleSet
    from polypviewer.engine.training import TrainEvent


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="registered network (see `polypviewer info`)")
    parser.add_argument("--data", required=True, action="append", metavar="SET",
                        help="training set: a Kvasir-layout folder (images/ + masks/), or DIR,FILE:KEY for "
                             "the stems listed under KEY in FILE (repeatable: the sets are combined)")
    parser.add_argument("--split", metavar="FILE:KEY",
                        help="with one --data DIR: train only on the stems listed under KEY in FILE")
    parser.add_argument("--val", action="append", default=[], metavar="SET",
                        help="validation set that picks the epoch (DIR or DIR,FILE:KEY; repeatable)")
    parser.add_argument("--val-split", metavar="KEY", help="validation stems: KEY of each --data set's split file")
    parser.add_argument("--val-fraction", type=float, metavar="F",
                        help="also validate on this share of the training images, held out of training "
                             "(seeded by --seed; recorded in the card)")
    parser.add_argument("--negatives", action="append", default=[], metavar="SET",
                        help="polyp-free frames without masks (DIR or DIR,FILE:KEY) trained as all-empty masks")
    parser.add_argument("--negatives-holdout", type=float, default=0.0, metavar="F",
                        help="hold this share of the negatives out of training and report false alarms on it")
    parser.add_argument("--blank-corner", action="store_true",
                        help="paint HyperKvasir's ScopeGuide corner black on every training image "
                             "(the negatives have it black: without this a model learns the shortcut)")
    parser.add_argument("--epochs", type=int, help="override the recipe's epoch count")
    parser.add_argument("--recipe", default=None,
                        help="pranet, pranet_faithful, resunetpp, resunetpp_seed, resunetpp_fast, lite, "
                             "lite_anneal, lite_cosine, finetune "
                             "(default: the model's own, shown by `polypviewer info`)")
    parser.add_argument("--out", required=True, type=Path, help="checkpoint to write (.safetensors)")
    parser.add_argument("--resume", action="store_true", help="continue from OUT.state.pt")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing OUT, its card (OUT.json, OUT.md) and state; "
                             "without it existing outputs are refused")
    parser.add_argument("--test", action="append", default=[], metavar="SET",
                        help="extra set to score the best weights on for the card (DIR or DIR,FILE:KEY; "
                             "repeatable; never used to pick anything)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--bf16", default="auto", choices=("auto", "on", "off"),
                        help="bf16 autocast (auto: where the CPU/GPU has it natively)")
    parser.add_argument("--fp16-weights", action="store_true", help="store the checkpoint in fp16")
    parser.add_argument("--init", type=Path, metavar="WEIGHTS",
                        help="start from this trained checkpoint of the same network (its weights and "
                             "normalisation; optimiser and schedule start afresh; recorded in the card)")
    parser.add_argument("--no-pretrained", action="store_true",
                        help="start an ImageNet-pretrained encoder (lite_pranet's) from random weights")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--max-steps", type=int, help="stop after this many steps (smoke runs)")
    parser.add_argument("--size", type=int, help="train at this input size instead of the model's "
                                                 "(recorded in the checkpoint)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def load_spec(spec: str, *, negatives: bool = False) -> tuple[str, SampleSet]:
    """``DIR`` or ``DIR,FILE:KEY`` -> (label, SampleSet)."""
    from polypviewer.engine.data import load_set, read_split

    root, sep, split = spec.partition(",")
    names = read_split(split) if sep else None
    label = f"{root} ({split})" if sep else root
    return label, load_set(root, names, negatives=negatives)


def load_init(path: Path, model_name: str) -> tuple[Any, Any]:
    """``--init``: the network and preprocessing of a trained checkpoint of ``model_name``
    (through the safe loader: no code from the file runs)."""
    from polypviewer.core.errors import PolypviewerError
    from polypviewer.engine.training import load_trained

    try:
        model, name, ckpt = load_trained(path)
    except PolypviewerError as exc:
        raise UserError(f"--init: {exc}") from None
    if name != model_name:
        raise UserError(f"--init {path}: it holds a {name!r} network, not {model_name!r}")
    return model, ckpt.preprocessing


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


@contextlib.contextmanager
def stop_on_terminate() -> Iterator[None]:
    """``kill`` (SIGTERM) stops a run as Ctrl-C does: the state is saved at the step in
    progress and ``--resume`` continues from it. A run started in the background (``nohup ...
    &``) ignores Ctrl-C, so SIGTERM is how it is stopped; without this the epoch in progress
    was lost."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be installed from the main thread
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class ProgressBar:
    """One self-rewriting line on stderr per epoch; a full line when an epoch ends."""

    def __init__(self, stream: TextIO = sys.stderr, width: int = 24) -> None:
        self.stream, self.width = stream, width

    _start: tuple[float, int] | None = None

    def eta(self, ev: TrainEvent) -> str:
        """Time left for the whole run at this process's pace so far (validation included)."""
        if self._start is None:
            self._start = (ev.elapsed, ev.global_step)
            return "ETA -"
        t0, g0 = self._start
        done = ev.global_step - g0
        if done <= 0:
            return "ETA -"
        left = (ev.epochs * ev.steps_per_epoch - ev.global_step) * (ev.elapsed - t0) / done
        h, m = divmod(int(left) // 60, 60)
        return f"ETA {h}h{m:02d}m" if h else f"ETA {m}m{int(left) % 60:02d}s"

    def __call__(self, ev: TrainEvent) -> None:
        if ev.kind == "step":
            filled = int(self.width * ev.step / ev.steps_per_epoch)
            self.stream.write(f"\repoch {ev.epoch + 1}/{ev.epochs} [{'#' * filled}{'.' * (self.width - filled)}] "
                              f"{ev.step}/{ev.steps_per_epoch} loss {ev.loss:.4f} lr {ev.lr:.2e} "
                              f"{ev.elapsed:.0f}s {self.eta(ev)}")
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

    from polypviewer.core.fileio import sha256_file
    from polypviewer.engine import cards, training
    from polypviewer.engine.data import blank_scopeguide_corner, concat, holdout_split, load_set, read_split
    from polypviewer.nets.registry import get_spec

    if args.threads:
        torch.set_num_threads(args.threads)
    spec = get_spec(args.model)
    recipe = training.get_recipe(args.recipe or spec.recipe)
    replace_card = check_outputs(args.out, resume=args.resume, overwrite=args.overwrite)
    size = args.size or spec.preprocessing.input_size
    if size % 32 or not 32 <= size <= 2048:  # the rule load_checkpoint applies to what we write
        raise UserError(f"--size {size}: the input size must be a multiple of 32 from 32 to 2048")
    model, preprocessing = load_init(args.init, args.model) if args.init else (None, None)
    if args.split and len(args.data) != 1:
        raise UserError("--split goes with a single --data DIR; write each set as DIR,FILE:KEY instead")
    if args.split and "," in args.data[0]:
        raise UserError("--data already names its split (DIR,FILE:KEY); drop --split")
    specs = [f"{args.data[0]},{args.split}"] if args.split else list(args.data)
    if args.val_split and not all("," in sp for sp in specs):
        raise UserError("--val-split KEY needs each training set's split file (--split FILE:KEY or DIR,FILE:KEY)")
    parts = [load_spec(sp) for sp in specs]
    train_set = parts[0][1] if len(parts) == 1 else concat("combined", [p[1] for p in parts])
    val_parts = [load_spec(v) for v in args.val]
    if args.val_split:
        for sp in specs:
            root, _, split = sp.partition(",")
            val_parts.append((f"{root},{split.rpartition(':')[0]}:{args.val_split}",
                              load_set(root, read_split(f"{split.rpartition(':')[0]}:{args.val_split}"))))
    data_meta: dict[str, Any] = {"train": [f"{label} ({len(s)} images)" for label, s in parts]}
    if args.val_fraction:
        rest, held = holdout_split(train_set.names, args.val_fraction, args.seed)
        carved = train_set.subset(held)
        train_set = train_set.subset(rest)
        val_parts.append((f"{len(held)} training images held out (--val-fraction {args.val_fraction}, "
                          f"seed {args.seed})", carved))
        data_meta["val_fraction_held_out"] = held
    negatives_test = None
    neg_parts = [load_spec(n, negatives=True) for n in args.negatives]
    if neg_parts:
        negs = neg_parts[0][1] if len(neg_parts) == 1 else concat("negatives", [p[1] for p in neg_parts])
        if args.negatives_holdout:
            rest, held = holdout_split(negs.names, args.negatives_holdout, args.seed)
            negatives_test = (f"negatives held out ({len(held)})", negs.subset(held))
            data_meta["negatives_held_out"] = held
            negs = negs.subset(rest)
        data_meta["negatives"] = [f"{label} ({len(s)} frames)" for label, s in neg_parts]
        data_meta["negatives_trained"] = len(negs)
        train_set = concat("combined", [train_set, negs], prefix=False)
    if args.blank_corner:
        train_set = blank_scopeguide_corner(train_set)
        data_meta["blank_corner"] = "ScopeGuide corner blanked on every training image"
    val_set = None
    if val_parts:
        val_set = val_parts[0][1] if len(val_parts) == 1 else concat("validation", [p[1] for p in val_parts])
        data_meta["val"] = [f"{label} ({len(s)} images)" for label, s in val_parts]
    for p in train_set.problems + (val_set.problems if val_set else []):
        print(f"polypviewer: warning: {p}", file=sys.stderr)
    print(f"training {args.model} on {len(train_set)} images"
          + (f", validating on {len(val_set)}" if val_set else ", no validation set (keeping the last epoch)")
          + f"; recipe {recipe.name}", file=sys.stderr)
    # The command that reproduces the weights (--resume only continues the same run).
    command = "polypviewer train " + " ".join(shlex.quote(a) for a in sys.argv[2:]
                                              if a not in ("--resume", "--overwrite")) \
        if len(sys.argv) > 1 and sys.argv[1] == "train" else None
    if args.init:
        data_meta["init"] = f"{args.init.name} (sha256 {sha256_file(args.init)})"
    tests = [load_spec(t) for t in args.test] + ([negatives_test] if negatives_test else [])
    callbacks = [] if args.quiet else [ProgressBar()]
    try:
        with stop_on_terminate():
            result = training.train(
                args.model, train_set, val_set, args.out, recipe=recipe, epochs=args.epochs,
                pretrained=not args.no_pretrained, device=args.device, bf16=args.bf16, seed=args.seed,
                resume=args.resume, overwrite=args.overwrite, callbacks=callbacks, half=args.fp16_weights,
                max_steps=args.max_steps, model=model, preprocessing=preprocessing,
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
                               tests=tests, device=args.device)
    jpath, mpath = cards.write_card(args.out, card, overwrite=replace_card)
    best = f"best val dice {result.best_score:.4f} at epoch {result.best_epoch}" if val_set else "last epoch kept"
    print(f"wrote {args.out} (sha256 {card['sha256'][:12]}, {best}), card {jpath} and {mpath}")
    return 0
