"""Accuracy of a model as the app and `predict` run it (the product path), on the real sets.

Full-size frames through ``Predictor.create`` (the engine's automatic device / precision /
backend, OpenVINO bf16 on an AMX CPU), threshold 0.5, mean per-image scores, on:
EndoTect val (``split.json:val``, held out from training), the CVC-ClinicDB sample (another
hospital: a domain shift) and the polyp-free negatives (how many frames get any
false-positive pixel, and the mean predicted area on them). Also scores fp32 on the same
frames, so the effect of the fast path on accuracy is read in the same run.

    .venv/bin/python benchmarks/product_accuracy.py [--weights FILE] [--data DIR] [--json OUT]

These are the ``metrics_product_path`` numbers of the model card (models/*.json).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from polypviewer.core.paths import shared_data_default

ROOT = Path(__file__).resolve().parents[1]


def frames_and_masks(root: Path, names: list[str] | None = None
                     ) -> tuple[list[str], list[np.ndarray], list[np.ndarray]]:
    from polypviewer.io.sources import open_source

    with open_source(root) as src:
        index = {src.name(i): i for i in range(len(src))}
        wanted = list(index) if names is None else names
        missing = [n for n in wanted if n not in index]
        if missing:
            raise SystemExit(f"{root}: not found: {', '.join(missing[:5])}")
        return wanted, [src.frame(index[n]) for n in wanted], [src.mask(index[n]) for n in wanted]


def score_set(predictor, names: list[str], frames: list[np.ndarray], masks: list[np.ndarray]) -> dict:
    """Mean per-image scores, by the metrics code `eval` and the app use."""
    from polypviewer.core.metrics import MetricAccumulator, to_gray, to_mask

    preds = [predictor.mask(predictor.predict([f])[0]) for f in frames]
    if not any(to_mask(to_gray(m)).any() for m in masks):  # negatives: only false positives can happen
        return {"n": len(preds), "false_positive_rate": round(float(np.mean([p.any() for p in preds])), 4),
                "mean_predicted_area_on_empty": round(float(np.mean([p.mean() for p in preds])), 4)}
    acc = MetricAccumulator(benchmark=False)
    for name, pred, gt in zip(names, preds, masks, strict=True):
        acc.add(name, pred, gt)
    mean = acc.running_mean()
    return {**{k: round(mean[k], 4) for k in ("dice", "iou", "precision", "recall")}, "n": len(acc)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", type=Path, help="checkpoint (default: the shipped default model)")
    p.add_argument("--data", type=Path, default=shared_data_default())
    p.add_argument("--json", type=Path, help="also write the result here")
    args = p.parse_args(argv)

    from polypviewer.core.fileio import write_json
    from polypviewer.engine.backends import cpu_name
    from polypviewer.engine.data import read_split
    from polypviewer.engine.inference import Predictor

    if not args.data.is_dir():
        print(f"{args.data}: real data not found (../shared/data beside the project)", file=sys.stderr)
        return 2
    fast = Predictor.create(weights=args.weights)
    exact = Predictor.create(weights=args.weights, backend="torch", precision="fp32")
    sets = {
        "endotect-val": frames_and_masks(args.data / "endotect",
                                         read_split(f"{args.data / 'endotect' / 'split.json'}:val")),
        "cvc-clinicdb": frames_and_masks(args.data / "cvc-clinicdb"),
        "negatives": frames_and_masks(args.data / "negatives"),
    }
    result: dict = {"machine": cpu_name(), "weights": fast.info["weights"], "version": fast.info["version"],
                    "command": "python benchmarks/product_accuracy.py", "threshold": fast.threshold}
    for label, predictor in (("product_path", fast), ("fp32", exact)):
        result[label] = {"path": predictor.info["path"],
                         **{name: score_set(predictor, *fm) for name, fm in sets.items()}}
    for name in sets:
        print(f"{name:<13} {fast.info['path']}: {result['product_path'][name]}")
        print(f"{'':<13} {exact.info['path']}: {result['fp32'][name]}")
    if args.json:
        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
