"""Per-image metrics speed: our count-based scores vs a naive float baseline, same run.

    .venv/bin/python benchmarks/bench_metrics.py [--repeats 200] [--size 1920x1080]

Target (tracker): the six per-image scores of a 1920x1080 pair in under 2 ms, so the GUI's
live panel can re-score a frame on every edit. Reports the median of many runs for

* ``bool``  : ``scores(pred_mask, gt_mask)`` on bool masks (the GUI's corrected mask);
* ``prob``  : ``scores(prob_float32, gt_mask)`` (thresholding at 0.5 included);
* ``naive`` : the textbook float implementation (masks cast to float64, TP/FP/FN/TN as sums
  of products), the baseline the ratio is against;

and, for information, the polyp-benchmark metrics of one 768x576 image (pysodmetrics).
Exit status 1 when the bool path misses the target.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from polypviewer.core import metrics
from polypviewer.engine.policy import describe_cpu

TARGET_MS = 2.0


def naive_scores(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """Float arithmetic over the whole image, as one writes it first."""
    p = pred.astype(np.float64)
    g = gt.astype(np.float64)
    tp = float(np.sum(p * g))
    fp = float(np.sum(p * (1 - g)))
    fn = float(np.sum((1 - p) * g))
    tn = float(np.sum((1 - p) * (1 - g)))

    def r(a: float, b: float) -> float:
        return a / b if b else 1.0

    prec, rec = r(tp, tp + fp), r(tp, tp + fn)
    return {"dice": r(2 * tp, 2 * tp + fp + fn), "iou": r(tp, tp + fp + fn),
            "precision": prec, "recall": rec, "accuracy": r(tp + tn, tp + fp + fn + tn),
            "f2": r(5 * tp, 5 * tp + 4 * fn + fp)}


def make_pair(h: int, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A polyp-sized ellipse and a shifted, slightly larger prediction with a soft edge."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    gt = ((yy - 0.55 * h) / (0.22 * h)) ** 2 + ((xx - 0.45 * w) / (0.16 * w)) ** 2 <= 1.0
    d = ((yy - 0.52 * h) / (0.24 * h)) ** 2 + ((xx - 0.47 * w) / (0.17 * w)) ** 2
    prob = (1.0 / (1.0 + np.exp(np.minimum(8.0 * (d - 1.0), 50.0)))).astype(np.float32)
    return prob >= 0.5, prob, gt


def median_ms(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--size", default="1920x1080", help="WxH of the pair")
    args = ap.parse_args(argv)
    w, h = (int(v) for v in args.size.lower().split("x"))

    print(f"command : {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"machine : {describe_cpu()}, {platform.system()} {platform.machine()}, "
          f"python {platform.python_version()}, numpy {np.__version__}")
    pred, prob, gt = make_pair(h, w)
    ours = metrics.scores(pred, gt)
    base = naive_scores(pred, gt)
    assert all(abs(ours[k] - base[k]) < 1e-12 for k in metrics.SCORE_NAMES), (ours, base)
    assert metrics.scores(prob, gt) == ours

    t_bool = median_ms(lambda: metrics.scores(pred, gt), args.repeats)
    t_prob = median_ms(lambda: metrics.scores(prob, gt), args.repeats)
    t_naive = median_ms(lambda: naive_scores(pred, gt), max(10, args.repeats // 10))
    print(f"pair    : {w}x{h}, dice {ours['dice']:.4f} (both implementations agree)")
    print(f"median of {args.repeats} runs (naive: {max(10, args.repeats // 10)}):")
    print(f"  scores(bool masks)        {t_bool:8.3f} ms   {t_naive / t_bool:6.1f}x naive")
    print(f"  scores(float32 prob map)  {t_prob:8.3f} ms   {t_naive / t_prob:6.1f}x naive")
    print(f"  naive float baseline      {t_naive:8.3f} ms")

    bp, bprob, bgt = make_pair(576, 768)
    acc = metrics.MetricAccumulator()
    acc.add("warm-up", bprob, bgt)
    t_bench = median_ms(lambda: acc.add("x", bprob, bgt), 5)
    print(f"  polyp-benchmark metrics, one 768x576 image (pysodmetrics): {t_bench:.1f} ms")

    ok = t_bool < TARGET_MS
    print(f"target  : < {TARGET_MS} ms for {w}x{h} bool masks -> {'met' if ok else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
