"""Variants of refining the gated propagation with LiteMedSAM, on CVC-ClinicDB's 29 sequences
(issue 13 §2; the README's propagation section quotes them).

Every frame is embedded once; each sequence is propagated from its first frame's expert mask
with the shipped gated fusion and the EndoTect-only network (it never saw CVC-ClinicDB), and the
fused mask G of every frame is refined in several ways: LiteMedSAM prompted with one box around
G (``sam``), that box widened by 5 / 10 % of its size (``sam_m0.05`` / ``sam_m0.1``), one box
per region (``sam_regions``: what ``propagate`` ships, ``engine.propagation.prompted_regions``),
its union with G, its intersection with G dilated by 7 px, the mean of LiteMedSAM's and the
network's probabilities (``avg0.5`` / ``avg0.4``), and two chains that carry the refined mask
on instead of G (``chain_sam``, ``chain_avg0.5``). Mean per-frame Dice on the tune half
(sequences 1-15), the held-out half (16-29) and all 583 non-seed frames.

    .venv/bin/python benchmarks/propagation_sam_variants.py [--json benchmarks/results/propagation-sam-variants.json]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_propagation import HELD, TUNE, _Keyed, load_sequences, predict_all  # noqa: E402

from polypviewer.core.fileio import write_json  # noqa: E402
from polypviewer.core.paths import shared_data_default  # noqa: E402
from polypviewer.engine.policy import describe_cpu  # noqa: E402
from polypviewer.engine.propagation import (  # noqa: E402
    DISFlow,
    Propagation,
    PropagationParams,
    mask_box,
    mask_dice,
    prompted_regions,
    refine,
    warp,
)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return np.asarray(1.0 / (1.0 + np.exp(-x)), dtype=np.float32)


def _widen(box: tuple[int, int, int, int], m: float, shape: tuple[int, ...]) -> tuple[float, ...]:
    x0, y0, x1, y1 = box
    h, w = shape[:2]
    mx, my = m * (x1 - x0 + 1), m * (y1 - y0 + 1)
    return (max(0.0, x0 - mx), max(0.0, y0 - my), min(w - 1.0, x1 + mx), min(h - 1.0, y1 + my))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=shared_data_default() / "cvc-clinicdb-612")
    ap.add_argument("--weights", type=Path, default=ROOT / "models" / "lite_pranet.safetensors")
    ap.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "propagation-sam-variants.json")
    args = ap.parse_args(argv)
    if not (args.data / "sequences.json").is_file():
        print(f"skip: {args.data}/sequences.json not found (the CVC-ClinicDB 612 set)", file=sys.stderr)
        return 0

    from polypviewer.engine.inference import Predictor
    from polypviewer.engine.prompting import PromptSegmenter

    seqs, ids, frames, gts = load_sequences(args.data)
    probs = predict_all(Predictor.create(weights=args.weights), ids, frames)
    seg = PromptSegmenter.create()
    t0 = time.perf_counter()
    emb = {i: seg.embed(frames[i]) for i in ids}
    embed_s = (time.perf_counter() - t0) / len(ids)
    print(f"{seg.why}; embedded {len(emb)} frames, {embed_s:.2f} s each", flush=True)
    flow = DISFlow(memo={})
    gated = PropagationParams(scene_cut=2.0, prompt_regions=False)  # the shipped fusion, no scene cut
    dil = np.ones((15, 15), np.uint8)
    res: dict[str, dict[int, float]] = {}

    def add(name: str, i: int, m: np.ndarray) -> None:
        res.setdefault(name, {})[i] = mask_dice(m, gts[i])

    for s in seqs:
        prop = Propagation(lambda j, s=s: frames[s[j]], gts[s[0]], 0, len(s) - 1,
                           probability=lambda j, _f, s=s: probs[s[j]], params=gated, flow=_Keyed(flow, s))
        for r in prop:
            i = s[r.index]
            g, p = r.mask, probs[i]
            add("model", i, p >= 0.5)
            add("gated", i, g)
            box = mask_box(g)
            if box is None:  # nothing to prompt with: every variant keeps the fused mask
                for name in ("sam", "sam_union", "sam_and_dil", "avg0.5", "avg0.4", "sam_m0.05", "sam_m0.1",
                             "sam_regions"):
                    add(name, i, g)
                continue
            lg = seg.logits(emb[i], boxes=[box])[0]
            sam = lg > 0
            add("sam", i, sam)
            add("sam_union", i, sam | g)
            add("sam_and_dil", i, sam & (cv2.dilate(g.astype(np.uint8), dil) > 0))
            q = (_sigmoid(lg) + p) / 2
            add("avg0.5", i, q >= 0.5)
            add("avg0.4", i, q >= 0.4)
            for m in (0.05, 0.1):
                add(f"sam_m{m}", i, seg.logits(emb[i], boxes=[_widen(box, m, g.shape)])[0] > 0)
            add("sam_regions", i, prompted_regions(g, lambda b, e=emb[i]: seg.segment(e, box=b)))

    chains: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
        "chain_sam": lambda lg, p: lg > 0,
        "chain_avg0.5": lambda lg, p: (_sigmoid(lg) + p) / 2 >= 0.5,
    }
    for name, post in chains.items():
        for s in seqs:
            soft = gts[s[0]].astype(np.float32)
            for a, b in zip(s, s[1:], strict=False):
                g, _ = refine(warp(soft, flow.backward(frames[a], frames[b], key=(a, b))), probs[b], gated)
                box = mask_box(g)
                m = g if box is None else post(seg.logits(emb[b], boxes=[box])[0], probs[b])
                m = m if m.any() else g
                add(name, b, m)
                soft = m.astype(np.float32)

    def mean(name: str, which: range) -> float:
        return round(float(np.mean([res[name][i] for k in which for i in seqs[k][1:]])), 4)

    rows = {n: {"tune": mean(n, TUNE), "held_out": mean(n, HELD), "all": mean(n, range(len(seqs)))} for n in res}
    for n, r in sorted(rows.items(), key=lambda kv: -kv[1]["tune"]):
        print(f"{n:14s} tune {r['tune']:.4f} held-out {r['held_out']:.4f} all {r['all']:.4f}")
    write_json(args.json, {
        "what": "issue 13 §2: refining the gated propagation with LiteMedSAM, variants",
        "rows": rows, "frames": len(res["model"]), "litemedsam": seg.why, "embed_s": round(embed_s, 3),
        "weights": str(args.weights), "cpu": describe_cpu(),
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *(argv or sys.argv[1:])]),
    })
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
