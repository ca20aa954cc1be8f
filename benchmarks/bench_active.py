"""Correct the most uncertain frames first: does it teach the model more than random ones?

Real frames the model (``--weights``, default ``models/lite_pranet.safetensors``: the earlier
default, trained on EndoTect only; today's default trained on CVC-ClinicDB-612's train split,
so it cannot be measured on these frames) never saw: CVC-ClinicDB-612's
``train`` split (its ``test`` split is not used at all), divided BY SEQUENCE so no polyp is
on both sides: the odd-numbered sequences are the pool a user would review, the even-numbered
ones the held-out frames every fine-tuned model is scored on.

For each arm, k frames of the pool are "corrected" (their expert masks stand in for the
user's correction) and ``engine.finetune.finetune`` (the app's Fine-tune dialog and the CLI's
path: its recipe, its 30 % hold-out of the corrected frames, the base's input size) trains on
them; the new weights are then scored on the held-out sequences:

- ``uncertain``: the k frames with the highest ``engine.uncertainty.frame_uncertainty``
  (the app's score, from the default model's probability map), as ranked by
  ``most_uncertain``;
- ``uncertain_spread``: the same ranking with ``min_gap`` (no two picks closer than that many
  frames: neighbouring video frames are near-duplicates);
- ``random``: k frames drawn at random (seeded);
- ``mixed``: the k/2 most uncertain plus k/2 drawn at random from the rest (seeded; added
  after the first three arms had run, when the most uncertain alone trailed random).

Each arm runs with seeds 0, 1, 2 (the seed drives fine-tuning and, for ``random``, the draw).
Results go to ``--json`` after every run, so an interrupted run still reports what ran.

    .venv/bin/python benchmarks/bench_active.py [--weights FILE] [--k 10] [--seeds 0 1 2] [--threads 1] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from polypviewer.core.paths import shared_data_default

ROOT = Path(__file__).resolve().parents[1]
DATA = shared_data_default() / "cvc-clinicdb-612"
ARMS = ("uncertain", "uncertain_spread", "random", "mixed")


def pools(root: Path, design: str = "sequences") -> tuple[list[str], list[str]]:
    """(pool, held-out) among CVC-612 train frames, in frame order. ``sequences``: the odd /
    even sequences (no polyp on both sides); ``frames``: within every sequence, alternate
    frames (the app's case: correct some frames of a video, the rest of it should improve)."""
    train = {str(s) for s in json.loads((root / "split.json").read_text())["train"]}
    seqs = json.loads((root / "sequences.json").read_text())["sequences"]
    if design == "frames":
        frames = [[str(f) for f in s["frames"] if str(f) in train] for s in seqs]
        return [f for fs in frames for f in fs[0::2]], [f for fs in frames for f in fs[1::2]]
    pool = [str(f) for s in seqs if s["id"] % 2 == 1 for f in s["frames"] if str(f) in train]
    held = [str(f) for s in seqs if s["id"] % 2 == 0 for f in s["frames"] if str(f) in train]
    return pool, held


def write(path: Path | None, report: dict) -> None:
    if path is not None:
        from polypviewer.core.fileio import write_json

        write_json(path, report)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--weights", type=Path, default=ROOT / "models" / "lite_pranet.safetensors",
                   help="the base model: one that never trained on --data (default: the EndoTect-only model)")
    p.add_argument("--design", choices=("sequences", "frames"), default="sequences",
                   help="held-out frames: other sequences, or the other frames of the same sequences")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--arms", nargs="+", default=list(ARMS[:3]), choices=ARMS)
    p.add_argument("--min-gap", type=int, default=5, help="uncertain_spread: frames between picks")
    p.add_argument("--epochs", type=int, help="override the finetune recipe's epochs")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--picks-only", action="store_true",
                   help="no fine-tuning: each arm's picks and the base model's Dice on them")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    if not args.data.is_dir():
        print(f"skip: CVC-ClinicDB-612 not found at {args.data}", file=sys.stderr)
        return 0
    import torch

    from polypviewer.engine.data import load_set
    from polypviewer.engine.finetune import finetune, resolve_base
    from polypviewer.engine.inference import Predictor
    from polypviewer.engine.training import choose_autocast, evaluate_model, load_trained
    from polypviewer.engine.uncertainty import SCORE, frame_uncertainty, most_uncertain

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    base = resolve_base(args.weights)
    pool_names, held_names = pools(args.data, args.design)
    pool = load_set(args.data, pool_names)
    held = load_set(args.data, held_names)
    print(f"design {args.design}: pool {len(pool)} frames, held-out {len(held)}", flush=True)

    # The app's score from the app's predictor (the look-ahead's probability maps).
    predictor = Predictor.create(weights=base)
    unc = {i: frame_uncertainty(predictor.predict([img])[0], predictor.threshold)
           for i, img in enumerate(pool.images)}
    order = {int(n): i for i, n in enumerate(pool.names)}  # frame id -> pool index

    def by_id(scores: dict[int, float]) -> dict[int, float]:
        return {int(pool.names[i]): v for i, v in scores.items()}

    picks_unc = [str(f) for f in most_uncertain(by_id(unc), args.k)]
    picks_spread = [str(f) for f in most_uncertain(by_id(unc), args.k, min_gap=args.min_gap)]

    model, name, ckpt = load_trained(base)
    autocast = choose_autocast("cpu", "auto")
    base_scores = evaluate_model(model, name, held, preprocessing=ckpt.preprocessing, autocast=autocast)
    report: dict = {
        "what": "held-out Dice after fine-tuning on k corrected frames: most uncertain vs random",
        "base": str(base), "model": name, "score": SCORE, "k": args.k, "seeds": args.seeds,
        "min_gap": args.min_gap, "pool": len(pool), "held_out": len(held),
        "design": args.design,
        "pool_rule": {"sequences": "CVC-ClinicDB-612 train split, odd sequences",
                      "frames": "CVC-ClinicDB-612 train split, every other frame of each sequence"}[args.design],
        "held_out_rule": {"sequences": "train split, even sequences",
                          "frames": "train split, the other frames of each sequence"}[args.design],
        "held_out_base_dice": round(base_scores["dice"], 4),
        "pool_uncertainty": {"mean": float(np.mean(list(unc.values()))),
                             "picked_uncertain": {f: round(unc[order[int(f)]], 4) for f in picks_unc},
                             "picked_spread": {f: round(unc[order[int(f)]], 4) for f in picks_spread}},
        "runs": [], "command": " ".join(["benchmarks/bench_active.py",
                                         *(argv if argv is not None else sys.argv[1:])]),
        "threads": args.threads, "date": time.strftime("%Y-%m-%d"),
        "note": "2-core machine shared with a training run (loaded)",
    }
    print(f"base held-out dice {base_scores['dice']:.4f}; uncertain picks {picks_unc}; spread {picks_spread}",
          flush=True)
    write(args.json, report)
    for seed in args.seeds:
        for arm in args.arms:
            if arm == "random":
                rng = np.random.default_rng(seed)
                picks = sorted(str(pool.names[i]) for i in rng.choice(len(pool), args.k, replace=False))
            elif arm == "mixed":
                top = picks_unc[: (args.k + 1) // 2]
                rest = [n for n in pool.names if n not in top]
                rng = np.random.default_rng(seed)
                picks = top + sorted(str(rest[i]) for i in rng.choice(len(rest), args.k - len(top), replace=False))
            else:
                picks = picks_unc if arm == "uncertain" else picks_spread
            corrected = pool.subset(picks)
            if args.picks_only:
                on_picks = evaluate_model(model, name, corrected, preprocessing=ckpt.preprocessing, autocast=autocast)
                report["runs"].append({"arm": arm, "seed": seed, "frames": picks,
                                       "base_dice_on_picks": round(on_picks["dice"], 4)})
                print(f"seed {seed} {arm:17} base dice on its picks {on_picks['dice']:.4f}", flush=True)
                write(args.json, report)
                continue
            t1 = time.perf_counter()
            with tempfile.TemporaryDirectory() as tmp:
                res = finetune(corrected, Path(tmp) / "ft.safetensors", base=base, seed=seed,
                               epochs=args.epochs, source=str(args.data))
                tuned, _, tuned_ckpt = load_trained(res.out)
                after = evaluate_model(tuned, name, held, preprocessing=tuned_ckpt.preprocessing, autocast=autocast)
            run = {"arm": arm, "seed": seed, "frames": picks, "trained_on": res.train_names,
                   "held_out_dice": round(after["dice"], 4),
                   "delta_dice": round(after["dice"] - base_scores["dice"], 4),
                   "wall_s": round(time.perf_counter() - t1, 1)}
            report["runs"].append(run)
            print(f"seed {seed} {arm:17} held-out dice {after['dice']:.4f} "
                  f"({run['delta_dice']:+.4f}) in {run['wall_s']:.0f} s", flush=True)
            summary = {}
            for a in args.arms:
                vals = [r["held_out_dice"] for r in report["runs"] if r["arm"] == a]
                if vals:
                    summary[a] = {"mean_held_out_dice": round(float(np.mean(vals)), 4),
                                  "std": round(float(np.std(vals)), 4), "runs": len(vals)}
            report["summary"] = summary
            report["wall_s"] = round(time.perf_counter() - t0, 1)
            write(args.json, report)
    if args.picks_only:
        report["summary"] = {a: {"mean_base_dice_on_picks": round(float(np.mean(
            [r["base_dice_on_picks"] for r in report["runs"] if r["arm"] == a])), 4)} for a in args.arms}
        write(args.json, report)
    print(json.dumps(report.get("summary", {}), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
