"""The shipped models side by side on PraNet's test sets, EndoTect val, polyp-free frames and
the PolypGen demo frames: the README's model table.

Every model is scored by ``engine.training.evaluate_model`` (the code a model card uses: the
app's ``Predictor`` path, the checkpoint's preprocessing, threshold 0.5, mean of per-image
scores at each mask's own size) on torch fp32, so the numbers do not depend on the CPU. Also
PraNet's convention (``mean_dice_256`` / ``mean_iou_256``: per-image scores averaged over 256
thresholds). Polyp-free frames: ``false_alarm_rate`` = share of frames with more than 0.5 % of
the frame predicted, ``false_positive_rate`` = with any pixel.

The HyperKvasir negatives are the slice a model card lists as held out of its training
(``meta.data.negatives_held_out`` of ``--negatives-from``, default: the shipped default), so
every model is scored on frames the default never trained on. Test splits are only scored
here; nothing is selected on them.

    .venv/bin/python benchmarks/model_table.py [--weights FILE ...] [--negatives-from CARD.json]
        [--data ../shared/data] [--json benchmarks/results/model-table.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from polypviewer.core.paths import shared_data_default  # noqa: E402

# PraNet (MICCAI 2020) Table 1, mDice / mIoU, for the README beside ours.
PRANET_PUBLISHED = {"kvasir-seg (test)": (0.898, 0.840), "cvc-clinicdb-612 (test)": (0.899, 0.849)}


def sets(data: Path, held_out_negatives: list[str] | None) -> dict[str, object]:
    from polypviewer.engine.data import load_set, read_split

    def split(name: str, key: str) -> object:
        return load_set(data / name, read_split(f"{data / name / 'split.json'}:{key}"))

    out = {"kvasir-seg (test)": split("kvasir-seg", "test"),
           "cvc-clinicdb-612 (test)": split("cvc-clinicdb-612", "test"),
           "endotect (val)": split("endotect", "val"),
           "negatives (10)": load_set(data / "negatives", negatives=True),
           "polypgen-demo (24)": load_set(data / "polypgen-demo")}
    if held_out_negatives:
        out[f"negatives-hyperkvasir held out ({len(held_out_negatives)})"] = load_set(
            data / "negatives-hyperkvasir", held_out_negatives, negatives=True)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", type=Path, nargs="*", help="checkpoints (default: every shipped lite_pranet)")
    p.add_argument("--negatives-from", type=Path,
                   help="model card listing the held-out HyperKvasir negatives (default: the default's)")
    p.add_argument("--data", type=Path, default=shared_data_default())
    p.add_argument("--json", type=Path, help="also write the result here")
    args = p.parse_args(argv)

    import torch

    from polypviewer.core.fileio import write_json
    from polypviewer.engine.backends import cpu_name
    from polypviewer.engine.training import evaluate_model, load_trained
    from polypviewer.nets.weights import default_weights, sha256_file, shipped_for

    if not args.data.is_dir():
        print(f"{args.data}: real data not found (../shared/data beside the project)", file=sys.stderr)
        return 2
    weights = args.weights or [r.file for r in shipped_for("lite_pranet")]
    card = args.negatives_from or (default_weights() or Path("none")).with_suffix(".json")
    held = None
    if card.is_file():
        held = json.loads(card.read_text(encoding="utf-8")).get("meta", {}).get("data", {}).get("negatives_held_out")
    data = sets(args.data, held)
    result: dict = {"machine": cpu_name(), "torch_threads": torch.get_num_threads(), "path": "torch fp32",
                    "command": "python benchmarks/model_table.py " + " ".join(argv or sys.argv[1:]),
                    "negatives_from": str(card) if held else None, "pranet_published": PRANET_PUBLISHED,
                    "models": {}}
    for w in weights:
        model, name, ckpt = load_trained(w)
        t0 = time.perf_counter()
        scores = {label: evaluate_model(model, name, s, preprocessing=ckpt.preprocessing, benchmark=True)
                  for label, s in data.items()}
        result["models"][Path(w).name] = {
            "sha256": sha256_file(w), "model": name, "input_size": ckpt.preprocessing.input_size,
            "params": sum(q.numel() for q in model.parameters()), "seconds": round(time.perf_counter() - t0, 1),
            "scores": {k: {m: (round(v, 4) if isinstance(v, float) else v) for m, v in sc.items()}
                       for k, sc in scores.items()}}
    header = f"{'set':<42}" + "".join(f"{Path(w).name[:30]:>32}" for w in weights)
    print(header)
    for label in data:
        cells = []
        for w in weights:
            sc = result["models"][Path(w).name]["scores"][label]
            if "dice" in sc and sc.get("n_empty_gt", 0) < sc["n"]:
                cells.append(f"Dice {sc['dice']:.3f} mDice256 {sc.get('mean_dice_256', float('nan')):.3f}")
            else:
                cells.append(f"alarms {sc['false_alarm_rate']:.2f} any {sc['false_positive_rate']:.2f}")
        print(f"{label:<42}" + "".join(f"{c:>32}" for c in cells))
    if args.json:
        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
