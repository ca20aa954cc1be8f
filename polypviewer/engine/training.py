"""Train and fine-tune loops with callbacks, recipes of the papers, resumable state.

``train(...)`` runs a recipe on a :class:`~polypviewer.engine.data.SampleSet`, scores the
validation set every epoch (mean per-image Dice at the original resolution) and keeps the
best weights in a safetensors checkpoint whose metadata names the architecture and the
preprocessing (so ``predict --weights FILE`` needs no ``--model``). The full training state
(weights, optimizer, schedule, epoch, step, best score, history) goes to ``<out>.state.pt``
after every epoch and on interruption; it holds only tensors and plain containers and is
read back with ``torch.load(weights_only=True)``. Every random draw is seeded from
``(seed, epoch, step)``, so a resumed run continues exactly where the saved one stopped.

Progress is reported through callbacks receiving :class:`TrainEvent` (the GUI plots the
loss; the CLI draws a progress bar). ``stop`` (anything with ``is_set()``, e.g. a
``threading.Event``) interrupts cleanly after the current step.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from polypviewer.core.errors import PolypviewerError, describe_exception
from polypviewer.engine.augment import AugmentConfig, multiscale
from polypviewer.engine.data import SampleSet, make_batch
from polypviewer.engine.losses import deep_supervision, get_loss
from polypviewer.nets.registry import build_model, get_spec

__all__ = ["Recipe", "RECIPES", "TrainEvent", "TrainResult", "TrainingError", "train",
           "evaluate_model", "load_trained", "state_path", "choose_autocast", "get_recipe"]


class TrainingError(PolypviewerError):
    """Training cannot start or continue (bad state file, output exists, ...)."""


@dataclass(frozen=True)
class Recipe:
    """How to train: optimiser, schedule, loss, augmentation (the papers' settings as presets)."""

    name: str
    optimizer: str = "adam"  # adam | nadam | adamw
    lr: float = 1e-4
    weight_decay: float = 0.0
    batch_size: int = 16
    epochs: int = 20
    loss: str = "structure"
    clip_value: float | None = 0.5  # element-wise gradient clipping (PraNet)
    rates: tuple[float, ...] = (1.0,)  # multi-scale training rates
    multiscale: str = "all"  # "all": every rate each step (PraNet); "random": one per step
    schedule: str = "none"  # none | plateau (x factor after patience bad epochs) | cosine
    plateau_patience: int = 5
    plateau_factor: float = 0.1
    warmup_steps: int = 0  # linear warm-up (cosine schedule)
    early_stop: int | None = None  # stop after this many epochs without a better val Dice
    # Parameter-name prefixes kept frozen (their BatchNorm statistics too): freezing the
    # high-resolution stem of a pretrained encoder saves most of the backward pass on a CPU.
    freeze: tuple[str, ...] = ()
    augment: AugmentConfig = AugmentConfig()

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["augment"] = self.augment.to_dict()
        return d


RECIPES: dict[str, Recipe] = {
    # PraNet (MICCAI 2020): Adam 1e-4, batch 16, 20 epochs, rates 0.75/1/1.25 each step,
    # element-wise clip 0.5, structure loss on all four maps; MediaEval augmentation.
    "pranet": Recipe("pranet", rates=(0.75, 1.0, 1.25)),
    "pranet_faithful": Recipe("pranet_faithful", loss="structure_faithful", rates=(0.75, 1.0, 1.25)),
    # ResUNet++ (ISM 2019): Nadam 1e-4, batch 8, Dice loss, plateau x0.1 after 5, stop after 10.
    "resunetpp": Recipe("resunetpp", optimizer="nadam", batch_size=8, epochs=100, loss="dice",
                        clip_value=None, schedule="plateau", early_stop=10),
    # The MediaEval 2020 seed paper: the same with its mIoU loss.
    "resunetpp_seed": Recipe("resunetpp_seed", optimizer="nadam", batch_size=8, epochs=100,
                             loss="miou", clip_value=None, schedule="plateau", early_stop=10),
    # ResUNet++ from scratch on a CPU budget: a 10x higher rate and BCE + Dice converge in
    # a few epochs where the papers' Nadam 1e-4 needs a hundred.
    "resunetpp_fast": Recipe("resunetpp_fast", optimizer="adam", lr=1e-3, batch_size=8, epochs=30,
                             loss="bce_dice", clip_value=None, schedule="plateau", plateau_patience=3,
                             plateau_factor=0.3),
    # The shipped lite PraNet on a CPU budget: PraNet's loss, clipping and scales, one random
    # rate per step (a third of the cost), a higher rate (short run, pretrained encoder)
    # lowered on plateaus so the run can be stopped at any epoch, stride-2/4 stem frozen.
    "lite": Recipe("lite", lr=3e-4, batch_size=4, epochs=30, rates=(0.75, 1.0, 1.25),
                   multiscale="random", schedule="plateau", plateau_patience=3, plateau_factor=0.3,
                   freeze=("encoder._conv_stem.", "encoder._bn0.", "encoder._blocks.0.",
                           "encoder._blocks.1.", "encoder._blocks.2.")),
    # Fine-tuning a trained model on a few corrected frames.
    "finetune": Recipe("finetune", lr=1e-4, batch_size=4, epochs=12, rates=(1.0,),
                       multiscale="random"),
}


# Continuing a trained lite PraNet (``train --init``): lite's data handling at a third of its
# rate, annealed to zero by a cosine over the run (so its last epochs are the low-rate ones the
# plateau schedule had not reached), after a short warm-up.
RECIPES["lite_anneal"] = replace(RECIPES["lite"], name="lite_anneal", lr=1e-4, epochs=12, schedule="cosine",
                                 warmup_steps=100)
# A lite network from its ImageNet encoder in one sitting: lite's rate, annealed to zero by a
# cosine over the run after a short warm-up, so the last epoch is a low-rate one and a run
# sized to the time at hand ends converged rather than mid-plateau.
RECIPES["lite_cosine"] = replace(RECIPES["lite"], name="lite_cosine", epochs=12, schedule="cosine",
                                 warmup_steps=100)


def get_recipe(name: str) -> Recipe:
    try:
        return RECIPES[name]
    except KeyError:
        raise TrainingError(f"unknown recipe {name!r}; choose one of: {', '.join(RECIPES)}") from None


@dataclass
class TrainEvent:
    """What callbacks receive. ``kind``: "step", "epoch" (with ``val``, and ``monitor``:
    scores on a watch-only set that never picks weights), "checkpoint", "interrupted" or
    "done"."""

    kind: str
    epoch: int
    step: int  # step within the epoch (1-based after the step ran)
    steps_per_epoch: int
    global_step: int
    epochs: int
    loss: float | None = None
    lr: float | None = None
    val: dict[str, float] | None = None
    best: float | None = None
    monitor: dict[str, float] | None = None
    elapsed: float = 0.0


Callback = Callable[[TrainEvent], None]


class _Flag(Protocol):
    def is_set(self) -> bool: ...


@dataclass
class TrainResult:
    out: Path
    best_score: float
    best_epoch: int
    epochs_run: int
    global_step: int
    wall_time: float
    history: list[dict[str, Any]] = field(default_factory=list)
    interrupted: bool = False
    sha256: str | None = None


def state_path(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(out.name + ".state.pt")


def choose_autocast(device: str, bf16: str | bool = "auto") -> torch.dtype | None:
    """bf16 autocast where it is native (CPU with AMX / AVX-512 BF16, or a bf16 CUDA GPU)."""
    if bf16 in (False, "off", "no"):
        return None
    if bf16 in (True, "on", "yes"):
        return torch.bfloat16
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    from polypviewer.engine.backends import cpu_has_native_bf16

    return torch.bfloat16 if cpu_has_native_bf16() else None


def _optimizer(recipe: Recipe, params: Any) -> torch.optim.Optimizer:
    kinds = {"adam": torch.optim.Adam, "nadam": torch.optim.NAdam, "adamw": torch.optim.AdamW}
    if recipe.optimizer not in kinds:
        raise TrainingError(f"unknown optimizer {recipe.optimizer!r}")
    opt: torch.optim.Optimizer = kinds[recipe.optimizer](params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    return opt


def _lr_at(recipe: Recipe, step: int, total: int) -> float:
    if recipe.schedule != "cosine":
        return recipe.lr
    if step < recipe.warmup_steps:
        return recipe.lr * (step + 1) / recipe.warmup_steps
    t = (step - recipe.warmup_steps) / max(1, total - recipe.warmup_steps)
    return recipe.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


#: A polyp-free frame counts as a false alarm when more than this share of it is predicted.
FALSE_ALARM_AREA = 0.005


@torch.no_grad()
def evaluate_model(model: nn.Module, model_name: str, data: SampleSet, *, preprocessing: Any = None,
                   size: int | None = None, device: str = "cpu", autocast: torch.dtype | None = None,
                   batch_size: int = 8, benchmark: bool = False) -> dict[str, float]:
    """Mean per-image scores of ``model`` on ``data`` exactly as the app computes them.

    The frames go through ``Predictor`` (``processing.prepare_input``'s resize of the full
    frame, the checkpoint's normalisation, sigmoid, the bilinear resize back, threshold 0.5)
    on the torch backend, and are scored by ``core.metrics.MetricAccumulator`` at each mask's
    own size: the numbers ``polypviewer eval`` gives for the same weights and frames.
    ``preprocessing`` defaults to the registry's; ``size`` overrides its input size.
    ``autocast`` bf16 runs the predictor in bf16, else fp32.

    Also ``n``, and for images whose ground truth is empty: ``false_positive_rate`` (share
    of them with any predicted pixel), ``false_alarm_rate`` (share with more than
    :data:`FALSE_ALARM_AREA` of the frame predicted) and ``mean_predicted_area_on_empty``
    (fraction). ``benchmark``: also the polyp-benchmark means (``mean_dice_256`` /
    ``mean_iou_256``: PraNet's convention, averaged over 256 thresholds; S-measure, ...).
    """
    from polypviewer.core.metrics import BENCHMARK_NAMES, SCORE_NAMES, MetricAccumulator
    from polypviewer.engine.inference import Predictor

    spec = get_spec(model_name)
    prep = preprocessing or spec.preprocessing
    if size:
        prep = replace(prep, input_size=size)
    was_training = model.training
    model.eval()
    dev = device.split(":")[0]
    precision = "bf16" if autocast == torch.bfloat16 else ("fp16" if autocast == torch.float16 else "fp32")
    predictor = Predictor.from_module(model, name=model_name, preprocessing=prep, select=spec.select,
                                      device=dev, precision=precision, backend="torch", cache=False)
    model.train(was_training)
    acc = MetricAccumulator(benchmark=benchmark)
    empty_areas: list[float] = []
    for lo in range(0, len(data), batch_size):
        idx = range(lo, min(lo + batch_size, len(data)))
        probs = predictor.predict([data.images[i] for i in idx])
        for i, prob in zip(idx, probs, strict=True):
            gt = data.masks[i]
            acc.add(data.names[i], prob, gt)
            if not gt.any():
                empty_areas.append(float(predictor.mask(prob).mean()))
    means = acc.running_mean()
    result = {k: float(means[k]) for k in SCORE_NAMES}
    result["n"] = len(acc)
    if benchmark:
        summary = acc.summary()["mean"]
        result.update({k: summary[k] for k in BENCHMARK_NAMES})
    if empty_areas:  # images without a polyp: how often anything is flagged, and how much
        result["n_empty_gt"] = len(empty_areas)
        result["false_positive_rate"] = float(np.mean([a > 0 for a in empty_areas]))
        result["false_alarm_rate"] = float(np.mean([a > FALSE_ALARM_AREA for a in empty_areas]))
        result["mean_predicted_area_on_empty"] = float(np.mean(empty_areas))
    return result


def load_trained(path: str | Path, device: str = "cpu") -> tuple[nn.Module, str, Any]:
    """Build the network named in a checkpoint's metadata and load it: (model, name, checkpoint)."""
    from polypviewer.nets.weights import load_checkpoint, load_weights

    ckpt = load_checkpoint(path)
    name = ckpt.model_name
    if not name:
        raise TrainingError("checkpoint does not name its architecture (no polypviewer.model "
                            "metadata); train or convert it with polypviewer", path)
    model = build_model(name)
    load_weights(model, ckpt, name)
    return model.to(device).eval(), name, ckpt


def _save_state(path: Path, **state: Any) -> None:
    """Replace the resumable state atomically (core.fileio: never through a link)."""
    from polypviewer.core.fileio import OutputError, atomic_path, describe_exception

    try:
        with atomic_path(path) as tmp:
            torch.save(state, tmp)
    except OSError as exc:
        raise OutputError(f"could not save the training state: {describe_exception(exc)}", path) from exc


def _load_state(path: Path) -> dict[str, Any]:
    try:
        state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
        return state
    except Exception as exc:  # noqa: BLE001 - any unreadable state is one user-facing line
        raise TrainingError(f"cannot resume from this state file ({describe_exception(exc, with_type=True)})",
                            path) from None


def train(model_name: str, train_set: SampleSet, val_set: SampleSet | None, out: str | Path, *,
          recipe: Recipe | str | None = None, epochs: int | None = None, model: nn.Module | None = None,
          pretrained: bool = True, device: str = "auto", bf16: str | bool = "auto", seed: int = 0,
          resume: bool = False, overwrite: bool = False, callbacks: Sequence[Callback] = (),
          stop: _Flag | None = None, half: bool = False, meta: dict[str, Any] | None = None,
          max_steps: int | None = None, size: int | None = None,
          monitor_set: SampleSet | None = None, preprocessing: Any = None) -> TrainResult:
    """Train ``model_name`` (or the given ``model``) and keep the best checkpoint at ``out``.

    ``recipe`` defaults to the model's own (``ModelSpec.recipe`` in the registry); with
    ``pretrained`` a model whose spec has ``pretrained_encoder`` starts from ImageNet weights.

    ``monitor_set`` is scored after every epoch and reported (``TrainEvent.monitor``, the
    history) but never used to choose weights or stop: fine-tuning watches its held-out
    frames with it without letting them influence the result it then reports on them.

    Without ``val_set`` the last epoch's weights are kept. ``max_steps`` stops after that many
    optimiser steps in total (tests, smoke runs). ``half`` stores fp16 weights. ``size``
    trains at another input size than the model's (the checkpoint then records it).
    ``preprocessing`` (a checkpoint's, when fine-tuning) replaces the registry's: training,
    validation and the written checkpoint all use it.
    """
    from polypviewer.engine.backends import choose_device
    from polypviewer.nets.weights import save_checkpoint

    spec = get_spec(model_name)
    if recipe is None:
        recipe = spec.recipe
    recipe = get_recipe(recipe) if isinstance(recipe, str) else recipe
    if epochs is not None:
        recipe = replace(recipe, epochs=epochs)
    out = Path(out)
    spath = state_path(out)
    from polypviewer.core.fileio import refuse_link

    for p in (out, spath):  # even with overwrite/resume: a link is never written through
        refuse_link(p)
    if not resume and not overwrite:
        for p in (out, spath):
            if os.path.lexists(p):
                raise TrainingError("already exists; choose another --out, --resume the run, "
                                    "or pass --overwrite to replace it", p)
    dev = choose_device(device)
    world, rank, dev = _distributed(dev)
    is_main = rank == 0
    autocast = choose_autocast(dev, bf16)
    base_prep = preprocessing or spec.preprocessing
    size = size or base_prep.input_size
    prep = replace(base_prep, input_size=size)
    if model is None:
        torch.manual_seed(seed)  # the head's random init is part of the recipe too
        cfg = {"pretrained": True} if pretrained and spec.pretrained_encoder else {}
        model = build_model(model_name, **cfg)
    model.to(dev).train()
    frozen = _freeze(model, recipe.freeze)
    net: nn.Module = model
    if world > 1:  # scale-out under torchrun: gradients are all-reduced, BN buffers follow rank 0
        net = nn.parallel.DistributedDataParallel(model, device_ids=[dev] if dev.startswith("cuda") else None)
    opt = _optimizer(recipe, [p for p in model.parameters() if p.requires_grad])
    plateau = (torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=recipe.plateau_factor,
                                                          patience=recipe.plateau_patience)
               if recipe.schedule == "plateau" else None)
    loss_fn = get_loss(recipe.loss)
    n = len(train_set)
    bs = min(recipe.batch_size, n)
    # Drop the ragged tail (a batch of 1 upsets BatchNorm); each rank takes its own slice.
    steps_per_epoch = max(1, n // (bs * world))
    total_steps = steps_per_epoch * recipe.epochs

    start_epoch, start_step, global_step = 0, 0, 0
    best, best_epoch, bad_epochs, history, wall0 = -math.inf, -1, 0, [], 0.0
    if resume and spath.exists():
        st = _load_state(spath)
        if st.get("model_name") != model_name:
            raise TrainingError(f"state is for model {st.get('model_name')!r}, not {model_name!r}", spath)
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["optimizer"])
        if plateau is not None and st.get("plateau"):
            plateau.load_state_dict(st["plateau"])
        start_epoch, start_step, global_step = int(st["epoch"]), int(st["step"]), int(st["global_step"])
        best, best_epoch, bad_epochs = float(st["best"]), int(st["best_epoch"]), int(st["bad_epochs"])
        history, wall0 = list(st["history"]), float(st["wall_time"])
        seed = int(st["seed"])

    _keep_eval(frozen)
    t0 = time.perf_counter()

    def elapsed() -> float:
        return wall0 + time.perf_counter() - t0

    def emit(ev: TrainEvent) -> None:
        if not is_main:
            return
        for cb in callbacks:
            cb(ev)

    def save(epoch: int, step: int) -> None:
        if not is_main:
            return
        _save_state(spath, model_name=model_name, recipe=recipe.name, model=model.state_dict(),
                    optimizer=opt.state_dict(), plateau=plateau.state_dict() if plateau else {},
                    epoch=epoch, step=step, global_step=global_step, best=best, best_epoch=best_epoch,
                    bad_epochs=bad_epochs, history=history, wall_time=elapsed(), seed=seed)

    def checkpoint(epoch: int, val: dict[str, float] | None) -> str | None:
        if not is_main:
            return None
        m = {"recipe": recipe.to_dict(), "epoch": epoch + 1, "global_step": global_step,
             "val": val, "train_images": len(train_set), "seed": seed, **(meta or {})}
        return save_checkpoint(out, model, model_name=model_name, preprocessing=prep,
                               meta=m, dtype=torch.float16 if half else None, overwrite=True)

    sha = None
    epoch = start_epoch
    interrupted = False
    try:
        for epoch in range(start_epoch, recipe.epochs):
            perm = np.random.default_rng([seed, epoch]).permutation(n)
            losses = []
            first = start_step if epoch == start_epoch else 0
            for step in range(first, steps_per_epoch):
                if (stop is not None and stop.is_set()) or (max_steps is not None and global_step >= max_steps):
                    raise _Interrupt(step)
                rng = np.random.default_rng([seed, epoch, step])
                # Ranks augment differently but must agree on the scale drawn for the step.
                aug_rng = rng if world == 1 else np.random.default_rng([seed, epoch, step, rank])
                torch.manual_seed(seed * 1_000_003 + global_step)
                lo = (step * world + rank) * bs
                x, y = make_batch(train_set, perm[lo:lo + bs], size, prep, aug_rng, recipe.augment)
                lr = _lr_at(recipe, global_step, total_steps)
                if recipe.schedule == "cosine":
                    for g in opt.param_groups:
                        g["lr"] = lr
                rates = recipe.rates if recipe.multiscale == "all" else (recipe.rates[rng.integers(len(recipe.rates))],)
                opt.zero_grad(set_to_none=True)
                loss_sum = 0.0
                for rate in rates:
                    xs, ys = multiscale(x, y, rate)
                    xs, ys = xs.to(dev), ys.to(dev)
                    with torch.autocast(dev.split(":")[0], dtype=autocast or torch.bfloat16,
                                        enabled=autocast is not None):
                        outputs = net(xs)
                    loss = deep_supervision(loss_fn, outputs, ys)
                    loss.backward()
                    loss_sum += float(loss.detach())
                if recipe.clip_value:
                    torch.nn.utils.clip_grad_value_(model.parameters(), recipe.clip_value)
                opt.step()
                global_step += 1
                losses.append(loss_sum / len(rates))
                emit(TrainEvent("step", epoch, step + 1, steps_per_epoch, global_step, recipe.epochs,
                                loss=losses[-1], lr=opt.param_groups[0]["lr"], best=best, elapsed=elapsed()))
            if world > 1:  # BN statistics drift per rank within a step: take rank 0's
                _broadcast_buffers(model)
            val = (evaluate_model(model, model_name, val_set, preprocessing=prep, device=dev, autocast=autocast)
                   if val_set else None)
            mon = (evaluate_model(model, model_name, monitor_set, preprocessing=prep, device=dev,
                                  autocast=autocast) if monitor_set else None)
            _keep_eval(frozen)
            score = val["dice"] if val else None
            record = {"epoch": epoch + 1, "loss": float(np.mean(losses)) if losses else None,
                      "lr": opt.param_groups[0]["lr"], "val": val, "monitor": mon, "time": elapsed()}
            history.append(record)
            # Without validation every epoch is "best": the last weights are kept.
            if score is None or score > best:
                best, best_epoch, bad_epochs = (best if score is None else score), epoch, 0
                sha = checkpoint(epoch, val)
                emit(TrainEvent("checkpoint", epoch, steps_per_epoch, steps_per_epoch, global_step,
                                recipe.epochs, val=val, best=best, elapsed=elapsed()))
            else:
                bad_epochs += 1
            if plateau is not None and score is not None:
                plateau.step(score)
            save(epoch + 1, 0)
            emit(TrainEvent("epoch", epoch, steps_per_epoch, steps_per_epoch, global_step, recipe.epochs,
                            loss=record["loss"], lr=record["lr"], val=val, best=best, elapsed=elapsed(),
                            monitor=mon))
            if recipe.early_stop and bad_epochs >= recipe.early_stop:
                break
    except (_Interrupt, KeyboardInterrupt) as exc:
        interrupted = True
        # Ctrl-C mid-step: the step in progress is lost; resume redoes it. Every earlier
        # epoch ran all its steps (early stopping ends the loop, not an epoch).
        at = exc.step if isinstance(exc, _Interrupt) else global_step - epoch * steps_per_epoch
        save(epoch, at)
        emit(TrainEvent("interrupted", epoch, at, steps_per_epoch, global_step, recipe.epochs,
                        best=best, elapsed=elapsed()))
        if isinstance(exc, KeyboardInterrupt):
            raise
    if not interrupted:
        emit(TrainEvent("done", epoch, steps_per_epoch, steps_per_epoch, global_step, recipe.epochs,
                        best=best, elapsed=elapsed()))
    return TrainResult(out, best, best_epoch + 1, len(history), global_step, elapsed(), history,
                       interrupted, sha)


def _freeze(model: nn.Module, prefixes: Sequence[str]) -> list[nn.Module]:
    """Freeze parameters under ``prefixes``; return their modules (to keep in eval mode)."""
    if not prefixes:
        return []
    for name, p in model.named_parameters():
        if name.startswith(tuple(prefixes)):
            p.requires_grad_(False)
    return [m for name, m in model.named_modules()
            if (name + ".").startswith(tuple(prefixes)) and isinstance(m, nn.modules.batchnorm._BatchNorm)]


def _keep_eval(modules: Sequence[nn.Module]) -> None:
    for m in modules:
        m.eval()


def _distributed(device: str) -> tuple[int, int, str]:
    """(world size, rank, device) - joins the process group when run under torchrun."""
    import os

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 1, 0, device
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    if device.startswith("cuda"):
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    return dist.get_world_size(), dist.get_rank(), device


def _broadcast_buffers(model: nn.Module) -> None:
    import torch.distributed as dist

    for b in model.buffers():
        dist.broadcast(b, src=0)


class _Interrupt(Exception):
    def __init__(self, step: int) -> None:
        super().__init__(step)
        self.step = step
