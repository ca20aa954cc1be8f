"""Model cards: the JSON + Markdown record written beside every trained checkpoint.

The JSON has the shape ``nets.weights.WeightRecord`` reads (``file``, ``sha256``, ``model``,
``preprocessing``, ``meta``); ``meta`` holds the architecture, data (with licences where
known), recipe, epochs, wall time, machine, scores and the command that reproduces it.
"""

from __future__ import annotations

import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from polypviewer.engine.training import Recipe, TrainResult, choose_autocast, evaluate_model, load_trained
from polypviewer.nets.registry import get_spec

__all__ = ["machine", "card_paths", "write_card", "make_card", "build_card",
           "METRICS_NOTE"]


def machine() -> str:
    """The processor, thread count and torch version a run used (for the card)."""
    from polypviewer.engine.backends import cpu_name

    return f"{cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}, {platform.system()}"


def card_paths(out: str | Path) -> tuple[Path, Path]:
    """The model card beside a checkpoint: ``<stem>.json`` (machine-readable) and ``<stem>.md``."""
    out = Path(out)
    return out.with_suffix(".json"), out.with_suffix(".md")


def _fmt(metrics: Any) -> str:
    if isinstance(metrics, (int, float)):
        return f"{metrics:+.3f}"
    if not metrics:
        return "-"
    keys = ("dice", "iou", "precision", "recall", "false_positive_rate")
    return ", ".join(f"{k} {metrics[k]:.3f}" for k in keys if isinstance(metrics.get(k), (int, float)))


def write_card(out: str | Path, card: dict[str, Any], *, overwrite: bool = False) -> tuple[Path, Path]:
    """Write the model card (JSON + a short Markdown summary) next to checkpoint ``out``.

    Both files are written together by :func:`polypviewer.core.fileio.atomic_write_all`:
    both or neither, never through a symbolic link, and an existing card is kept (one-line
    ``OutputError``) unless ``overwrite``.
    """
    import json

    from polypviewer.core.fileio import atomic_write_all

    jpath, mpath = card_paths(out)
    json_text = json.dumps(card, indent=2, default=str) + "\n"
    top, card = card, card.get("meta", {})
    lines = [f"# {card.get('name', Path(out).stem)}", "",
             f"- architecture: `{top.get('model')}` ({card.get('params', 0):,} parameters) - "
             f"{card.get('description', '')}",
             f"- file: `{Path(out).name}`, sha256 `{top.get('sha256')}`",
             f"- preprocessing: {top.get('preprocessing')}"]
    if card.get("base"):
        lines.append(f"- fine-tuned from: `{card['base'].get('file')}` (sha256 {card['base'].get('sha256')})")
    for label, data in (card.get("data") or {}).items():
        lines.append(f"- data ({label}): {data}")
    if card.get("recipe"):
        r = card["recipe"]
        lines.append(f"- recipe: {r.get('name')} ({r.get('optimizer')} lr {r.get('lr')}, batch "
                     f"{r.get('batch_size')}, loss {r.get('loss')}), epochs run {card.get('epochs_run')}, "
                     f"best epoch {card.get('best_epoch')}")
    lines.append(f"- wall time: {card.get('wall_time_s', 0):.0f} s on {card.get('machine')}")
    lines += ["", "| set | scores (mean per image, threshold 0.5) |", "|---|---|"]
    for name, m in (card.get("metrics") or {}).items():
        lines.append(f"| {name} | {_fmt(m)} |")
    if card.get("command"):
        lines += ["", "Reproduce:", "", "```", card["command"], "```"]
    if card.get("notes"):
        lines += ["", str(card["notes"])]
    atomic_write_all([(jpath, json_text), (mpath, "\n".join(lines) + "\n")], overwrite=overwrite)
    return jpath, mpath


def build_card(out: str | Path, model_name: str, recipe: Recipe, result: TrainResult, *,
               data: dict[str, Any], command: str | None, tests: Sequence[Any] = (),
               device: str = "auto") -> dict[str, Any]:
    """The model card of a finished run; ``tests`` are extra sets scored now through the app's
    path, with the polyp-benchmark means too: Kvasir-layout folders, or ``(label, SampleSet)``
    pairs (a split of a folder, held-out negatives)."""
    from polypviewer.engine.backends import choose_device
    from polypviewer.engine.data import load_set

    dev = choose_device(device)
    spec = get_spec(model_name)
    model, _, ckpt = load_trained(out, dev)
    best = next((h for h in result.history if h["epoch"] == result.best_epoch), None)
    metrics: dict[str, Any] = {"val": best["val"] if best else None}
    prep = ckpt.preprocessing or spec.preprocessing
    for t in tests:
        label, s = (t if isinstance(t, tuple) else (Path(t).name, load_set(t)))
        metrics[label] = evaluate_model(model, model_name, s, preprocessing=prep, device=dev,
                                        autocast=choose_autocast(dev), benchmark=True)
    return make_card(out, model_name, ckpt.preprocessing or spec.preprocessing, {
        "description": spec.description, "reference": spec.reference,
        "params": sum(p.numel() for p in model.parameters()),
        "dtype": str(next(iter(ckpt.state_dict.values())).dtype),
        "data": data, "recipe": recipe.to_dict(), "epochs_run": result.epochs_run,
        "best_epoch": result.best_epoch, "global_steps": result.global_step,
        "wall_time_s": round(result.wall_time, 1), "machine": machine(), "metrics": metrics,
        "metrics_note": METRICS_NOTE, "history": result.history, "command": command,
    })


METRICS_NOTE = ("computed through the app's Predictor path; mean of per-image scores at the original "
                "resolution, threshold 0.5, 0/0 = 1; mean_dice_256 / mean_iou_256 = PraNet's convention "
                "(per-image scores averaged over 256 thresholds); false_positive_rate = share of polyp-free "
                "images with any predicted pixel, false_alarm_rate = with more than 0.5 % of the frame")


def make_card(out: str | Path, model_name: str, preprocessing: Any, meta: dict[str, Any]) -> dict[str, Any]:
    """A card in the shape ``nets.weights.WeightRecord`` reads: file, sha256, model,
    preprocessing, meta (everything else)."""
    from polypviewer.nets.weights import sha256_file

    prep = preprocessing.to_dict() if hasattr(preprocessing, "to_dict") else dict(preprocessing)
    return {"file": Path(out).name, "sha256": sha256_file(out), "model": model_name,
            "preprocessing": prep, "meta": {"name": Path(out).stem, **meta}}
