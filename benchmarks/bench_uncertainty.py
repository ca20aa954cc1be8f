"""Which per-frame uncertainty ranks bad predictions best: Spearman with 1 - Dice.

The default model (or ``--weights``) predicts every frame as the app does
(``Predictor.create``, threshold 0.5, full-size maps); for each frame the candidate scores of
``engine.uncertainty.candidates`` (from that one map), the flip disagreement (one extra
forward pass of the horizontally flipped frame) and, on CVC-ClinicDB (29 real sequences),
the change from the neighbouring frames of the same sequence are set beside 1 - Dice.

The score is CHOSEN on frames the ranking is not reported on: EndoTect val, every 4th
Kvasir-SEG train frame and the CVC-ClinicDB-612 train frames (the shipped default trained on
EndoTect train only, so the last two are unseen by it too). It is REPORTED on Kvasir-SEG
test (100) and CVC-ClinicDB-612 test (62). Nothing is tuned on the test frames.

    .venv/bin/python benchmarks/bench_uncertainty.py [--weights FILE] [--threads 1] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from polypviewer.core.paths import shared_data_default

ROOT = Path(__file__).resolve().parents[1]
DATA = shared_data_default()
CHOOSE = ("endotect-val", "kvasir-train/4", "cvc612-train", "negatives-hk/3")
REPORT = ("kvasir-test", "cvc612-test")


def split(root: Path, key: str) -> list[str]:
    return [str(s) for s in json.loads((root / "split.json").read_text())[key]]


def predict_flip(predictor, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The map of the frame and of its horizontal flip (flipped back), at the frame's size."""
    from polypviewer.engine.processing import probabilities

    x = predictor.prepare(frame)[None]
    logits = predictor.backend.infer(np.concatenate([x, x[..., ::-1].copy()]))
    size = frame.shape[:2]
    return probabilities(logits[0], size), probabilities(np.ascontiguousarray(logits[1][:, ::-1]), size)


def measure(predictor, root: Path, names: list[str] | None, negatives: bool = False) -> dict[str, dict]:
    """name -> {dice, candidates..., flip} for each frame (masks kept small for neighbours)."""
    from polypviewer.core.metrics import scores
    from polypviewer.engine.data import load_set
    from polypviewer.engine.uncertainty import candidates, flip_disagreement, frame_uncertainty, strided

    data = load_set(root, names, negatives=negatives)
    if data.problems:
        print("\n".join(data.problems), file=sys.stderr)
    out: dict[str, dict] = {}
    for name, img, gt in zip(data.names, data.images, data.masks, strict=True):
        t0 = time.perf_counter()
        predictor.predict([img])  # timed alone: what the look-ahead spends on this frame
        t1 = time.perf_counter()
        prob, flipped = predict_flip(predictor, img)
        t2 = time.perf_counter()
        frame_uncertainty(prob, predictor.threshold)
        t3 = time.perf_counter()
        rec = {"dice": float(scores(prob >= predictor.threshold, gt)["dice"]),
               "empty": not bool((prob >= predictor.threshold).any()),
               **candidates(prob, predictor.threshold),
               "flip": flip_disagreement(prob, flipped, predictor.threshold)}
        rec["_ms"] = {"predict": 1e3 * (t1 - t0), "uncertainty": 1e3 * (t3 - t2), "pixels": prob.size}
        rec["_small"] = strided(prob).copy()  # for the neighbours' change (same frame size in CVC)
        out[name] = rec
    return out


def add_temporal(recs: dict[str, dict], sequences: list[list[str]]) -> None:
    from polypviewer.engine.uncertainty import temporal_change

    for seq in sequences:
        for j, name in enumerate(seq):
            nbs = [seq[k] for k in (j - 1, j + 1) if 0 <= k < len(seq)]
            recs[name]["temporal"] = temporal_change(recs[name]["_small"], [recs[n]["_small"] for n in nbs])


def spearman(records: list[dict], key: str) -> float:
    from scipy.stats import spearmanr

    u = [r[key] for r in records]
    bad = [1.0 - r["dice"] for r in records]
    rho = spearmanr(u, bad).statistic
    return float(rho) if np.isfinite(rho) else float("nan")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", type=Path, help="checkpoint (default: the shipped default model)")
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", type=Path, help="also write the result here")
    args = p.parse_args(argv)
    if not (args.data / "kvasir-seg").is_dir() or not (args.data / "cvc-clinicdb-612").is_dir():
        print(f"skip: kvasir-seg / cvc-clinicdb-612 not found under {args.data}", file=sys.stderr)
        return 0
    import torch

    from polypviewer.engine.inference import Predictor
    from polypviewer.engine.policy import describe_cpu
    from polypviewer.engine.uncertainty import SCORE

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    predictor = Predictor.create(weights=args.weights)
    kv, cvc, et = args.data / "kvasir-seg", args.data / "cvc-clinicdb-612", args.data / "endotect"
    neg = args.data / "negatives-hyperkvasir"
    seqs = [[str(f) for f in s["frames"]] for s in json.loads((cvc / "sequences.json").read_text())["sequences"]]
    cvc_all = measure(predictor, cvc, [n for s in seqs for n in s])
    add_temporal(cvc_all, seqs)
    sets = {
        "endotect-val": measure(predictor, et, [str(s) for s in json.loads((et / "split.json").read_text())["val"]]),
        "kvasir-train/4": measure(predictor, kv, split(kv, "train")[::4]),
        "cvc612-train": {n: cvc_all[n] for n in split(cvc, "train")},
        "negatives-hk/3": measure(predictor, neg, sorted(f.stem for f in (neg / "images").iterdir())[::3],
                                  negatives=True),
        "kvasir-test": measure(predictor, kv, split(kv, "test")),
        "cvc612-test": {n: cvc_all[n] for n in split(cvc, "test")},
    }
    keys = ["entropy", "entropy_region", "soft_dice_gap", "low_confidence", "confidence_gap", "flip", "temporal"]
    table: dict[str, dict] = {}
    for set_name, recs in sets.items():
        rows = list(recs.values())
        table[set_name] = {"n": len(rows), "mean_dice": round(float(np.mean([r["dice"] for r in rows])), 4),
                           "empty_predictions": int(sum(r["empty"] for r in rows)),
                           **{k: round(spearman(rows, k), 3) for k in keys if k in rows[0]}}
    choose_rows = [r for s in CHOOSE for r in sets[s].values()]
    choice = {k: round(spearman(choose_rows, k), 3) for k in keys[:6]}
    chosen = max(choice, key=lambda k: choice[k])
    free = max((k for k in choice if k != "flip"), key=lambda k: choice[k])
    timing = {}
    for set_name in ("kvasir-test", "cvc612-test"):
        ms = [r["_ms"] for r in sets[set_name].values()]
        timing[set_name] = {"median_predict_ms": round(float(np.median([m["predict"] for m in ms])), 2),
                            "median_uncertainty_ms": round(float(np.median([m["uncertainty"] for m in ms])), 3),
                            "median_ratio": round(float(np.median([m["uncertainty"] / m["predict"] for m in ms])), 4),
                            "median_megapixels": round(float(np.median([m["pixels"] for m in ms])) / 1e6, 3)}
    report = {
        "what": "Spearman(uncertainty, 1 - Dice) per frame, default model, threshold 0.5",
        "model": predictor.info.get("model"), "weights": predictor.info.get("weights"),
        "version": predictor.info.get("version"), "backend": predictor.info.get("path"),
        "choose_on": list(CHOOSE), "report_on": list(REPORT),
        "spearman_on_choice_sets_pooled": choice, "best_on_choice_sets": chosen,
        "best_free_on_choice_sets": free, "app_score": SCORE,
        "per_set": table,
        "timing": timing,
        "costs": {"candidates": "from the cached probability map, no forward pass",
                  "flip": "one extra forward pass per frame", "temporal": "the neighbours' maps (video only)"},
        "command": " ".join(["benchmarks/bench_uncertainty.py", *(argv if argv is not None else sys.argv[1:])]),
        "cpu": describe_cpu(), "threads": args.threads, "wall_s": round(time.perf_counter() - t0, 1),
        "date": time.strftime("%Y-%m-%d"), "note": "machine shared with a training run (loaded)",
    }
    print(f"chosen on {', '.join(CHOOSE)} (pooled Spearman): {choice} -> best {chosen}, "
          f"best without an extra forward pass {free}; the app uses {SCORE}")
    print(f"{'set':16} {'n':>4} {'dice':>6} {'empty':>5} " + " ".join(f"{k:>14}" for k in keys))
    for s, row in table.items():
        print(f"{s:16} {row['n']:4d} {row['mean_dice']:6.3f} {row['empty_predictions']:5d} "
              + " ".join(f"{row.get(k, float('nan')):14.3f}" for k in keys))
    for set_name, t in timing.items():
        print(f"{set_name}: uncertainty {t['median_uncertainty_ms']} ms vs predict {t['median_predict_ms']} ms "
              f"per frame (median ratio {t['median_ratio']}, {t['median_megapixels']} MP maps)")
    if args.json:
        from polypviewer.core.fileio import write_json

        write_json(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
