"""Fine-tune a trained model on corrected frames, and prove it on frames it never saw.

``finetune(base, data, out)`` splits the corrected set into a training part and a held-out
part (reproducibly: sorted names shuffled by ``seed``), scores the base model on the held-out
frames, trains on the rest, scores again, and writes a NEW checkpoint plus its card
(``<out>.json`` / ``<out>.md``) recording the base (file, sha256), the data, the split and
the before/after scores. The base file and anything shipped in ``models/`` are never
written; an existing ``out`` is never overwritten.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from polypviewer.engine.cards import METRICS_NOTE, card_paths, machine, make_card, write_card
from polypviewer.engine.data import SampleSet, holdout_split
from polypviewer.engine.training import (
    Callback,
    Recipe,
    TrainingError,
    choose_autocast,
    evaluate_model,
    get_recipe,
    load_trained,
    train,
)

__all__ = ["FinetuneResult", "finetune", "resolve_base", "check_output"]


@dataclass
class FinetuneResult:
    out: Path | None  # None when interrupted (nothing written)
    base: Path
    model: str
    before: dict[str, float]
    after: dict[str, float] | None
    train_names: list[str]
    held_out_names: list[str]
    wall_time: float
    sha256: str | None = None
    interrupted: bool = False
    card: dict[str, Any] = field(default_factory=dict)

    @property
    def delta_dice(self) -> float | None:
        return None if self.after is None else self.after["dice"] - self.before["dice"]


def resolve_base(base: str | Path | None) -> Path:
    """A checkpoint file, a shipped card's name (or model), or None for the shipped default."""
    from polypviewer.nets.weights import default_weights, shipped_weights

    if base is None:
        path = default_weights()
        if path is None:
            raise TrainingError("no default model is installed; pass --base FILE")
        return path
    path = Path(base).expanduser()
    if path.is_file():
        return path
    for rec in shipped_weights():
        if str(base) in (rec.file.stem, rec.model, rec.meta.get("name")):
            return rec.file
    raise TrainingError("not a checkpoint file nor the name of a shipped model", base)


def check_output(out: Path, base: Path) -> None:
    """Refuse to write over the base, a shipped file, or anything that already exists."""
    from polypviewer.core.paths import models_dir

    out_r = out.expanduser().resolve()
    if out_r == base.resolve():
        raise TrainingError("is the base model; fine-tuning never overwrites it (choose another --out)", out)
    try:
        shipped = models_dir().resolve()
    except (ModuleNotFoundError, TypeError):
        shipped = None
    if shipped is not None and shipped in out_r.parents:
        raise TrainingError("is inside the shipped models folder; write fine-tuned weights elsewhere", out)
    for p in (out_r, *card_paths(out_r)):
        if p.exists():
            raise TrainingError("already exists; not overwriting it (choose another --out)", p)


def finetune(data: SampleSet, out: str | Path, *, base: str | Path | None = None,
             holdout: float = 0.3, seed: int = 0, recipe: Recipe | str = "finetune",
             epochs: int | None = None, size: int | None = None, device: str = "cpu",
             bf16: str | bool = "auto", callbacks: Sequence[Callback] = (), stop: Any = None,
             max_steps: int | None = None, source: str | None = None) -> FinetuneResult:
    """Fine-tune ``base`` on ``data`` minus a held-out part; write ``out`` and its card.

    Training and the held-out scores use the base checkpoint's own preprocessing, and the
    scores come from the app's ``Predictor`` path at the frames' own resolution.
    """
    from polypviewer.nets.weights import save_checkpoint, sha256_file

    t0 = time.perf_counter()
    base_path = resolve_base(base)
    out = Path(out).expanduser()
    check_output(out, base_path)
    recipe = get_recipe(recipe) if isinstance(recipe, str) else recipe
    model, name, ckpt = load_trained(base_path, device)
    from polypviewer.nets.registry import get_spec

    size = size or (ckpt.preprocessing or get_spec(name).preprocessing).input_size
    prep = replace(ckpt.preprocessing or get_spec(name).preprocessing, input_size=size)
    # Keep the base's storage precision (a shipped fp16 file gives an fp16 fine-tune).
    dtype = next((v.dtype for v in ckpt.state_dict.values() if v.is_floating_point()), None)
    autocast = choose_autocast(device, bf16)
    rest, held = holdout_split(data.names, holdout, seed)
    if not rest or not held:
        raise TrainingError(f"need at least 2 corrected frames to hold some out (got {len(data)})", data.root)
    train_set, held_set = data.subset(rest), data.subset(held)
    before = evaluate_model(model, name, held_set, preprocessing=prep, device=device, autocast=autocast)
    with tempfile.TemporaryDirectory(prefix=".finetune-", dir=out.parent if out.parent.exists() else None) as tmp:
        result = train(name, train_set, None, Path(tmp) / "run.safetensors", model=model, recipe=recipe,
                       epochs=epochs, device=device, bf16=bf16, seed=seed, callbacks=callbacks,
                       stop=stop, max_steps=max_steps, size=size, monitor_set=held_set, preprocessing=prep)
    res = FinetuneResult(None, base_path, name, before, None, rest, held, 0.0, interrupted=result.interrupted)
    if result.interrupted:
        res.wall_time = time.perf_counter() - t0
        return res
    res.after = evaluate_model(model, name, held_set, preprocessing=prep, device=device, autocast=autocast)
    res.wall_time = time.perf_counter() - t0
    if int(os.environ.get("RANK", "0")) != 0:
        return res  # under torchrun only rank 0 writes
    base_sha = sha256_file(base_path)
    meta = {
        "base": {"file": str(base_path), "sha256": base_sha, "version": base_sha[:12], "model": name},
        "data": {"source": source or str(data.root), "images": len(data), "train": rest,
                 "held_out": held, "holdout": holdout, "seed": seed},
        "metrics": {"held_out_before": before, "held_out_after": res.after,
                    "delta_dice": res.delta_dice},
        "metrics_note": METRICS_NOTE, "recipe": recipe.to_dict() if epochs is None else
        {**recipe.to_dict(), "epochs": epochs}, "epochs_run": result.epochs_run,
        "global_steps": result.global_step, "wall_time_s": round(res.wall_time, 1), "machine": machine(),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    res.sha256 = save_checkpoint(out, model, model_name=name, preprocessing=prep, meta=meta, dtype=dtype)
    res.out = out
    res.card = make_card(out, name, prep,
                         {**meta, "params": sum(p.numel() for p in model.parameters()),
                          "description": f"{name} fine-tuned from {base_path.name}"})
    write_card(out, res.card)
    return res
