"""Segmentation scores: per image from confusion counts, and the polyp-benchmark metrics.

Conventions (the MediaEval 2020 Medico task's metrics, as Jha et al., ResUNet++, ISM 2019 and
Ali et al., MediaEval 2020 compute them; the benchmark metrics follow Fan et al., PraNet,
MICCAI 2020):

* **Binary decision.** A probability map ``p`` (float, 0..1) is foreground where
  ``p >= 0.5``; an 8-bit map ``v`` where ``v >= 128`` (that is ``v / 255 >= 0.5``), a 16-bit
  map where ``v >= 32768``; ``bool`` is taken as is. Ground truth read from a file follows the
  same rule, which for 8-bit masks is the papers' ``> 127``. Colour masks use the brightest of
  their first three channels (an alpha channel is ignored).
* **Per image**, from the counts TP, FP, FN, TN::

      dice      = 2TP / (2TP + FP + FN)        iou      = TP / (TP + FP + FN)
      precision = TP / (TP + FP)               recall   = TP / (TP + FN)
      accuracy  = (TP + TN) / N                f2       = 5TP / (5TP + 4FN + FP)

  ``f2`` is ``5PR / (4P + R)`` written with counts, so it is 0/0 only when TP = FN = FP = 0.
* **0/0 is 1.** Each ratio whose denominator is 0 (its numerator is then 0 too) scores 1: an
  empty prediction on an empty mask is perfect. So an empty prediction on a polyp has
  precision 1 (it raised no false alarm), recall 0, Dice / IoU / F2 0; a non-empty prediction
  on an empty mask has precision 0, recall 1 (there was nothing to miss), Dice / IoU / F2 0.
* **Dataset level** is the mean of the per-image scores (not scores of pooled counts).
* **Polyp benchmark** (as reported after PraNet), computed with ``pysodmetrics`` on the map
  quantised to 8 bits (``round(255 p)``) against the binary mask, *without* the min-max
  normalisation the reference applies (SPEC: it turns an empty prediction into noise):
  ``s_measure`` (S-measure, alpha 0.5), ``weighted_f`` (weighted F-measure; 0 when the ground
  truth is empty, the library's and the MATLAB reference's convention), ``mae``, and the
  E-measure curve over 256 thresholds: ``e_measure_mean`` is the mean over thresholds and
  ``e_measure_max`` the maximum of the dataset's mean curve (so ``e_measure_max`` has no
  per-image value); on an empty ground truth an empty prediction scores N/(N-1), a hair
  above 1, from the reference's ``w*h - 1`` denominator. ``mean_dice_256`` / ``mean_iou_256``
  are Dice / IoU at each of the 256 thresholds ``v >= t`` (t = 0..255, counted by
  pysodmetrics), averaged over thresholds and then over images, with the 0/0 = 1 rule above.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from polypviewer.core.masks import THRESHOLD, to_mask

__all__ = [
    "SCORE_NAMES", "BENCHMARK_NAMES", "MEAN_NAMES", "PER_IMAGE_NAMES", "THRESHOLD",
    "Counts", "confusion", "scores", "scores_from_counts", "to_gray", "to_mask", "to_uint8",
    "benchmark_scores", "MetricAccumulator",
]

SCORE_NAMES: tuple[str, ...] = ("dice", "iou", "precision", "recall", "accuracy", "f2")
BENCHMARK_NAMES: tuple[str, ...] = ("s_measure", "weighted_f", "e_measure_mean", "e_measure_max",
                                    "mae", "mean_dice_256", "mean_iou_256")
MEAN_NAMES: tuple[str, ...] = SCORE_NAMES + BENCHMARK_NAMES
# e_measure_max is a property of the dataset's mean curve, not of one image.
PER_IMAGE_NAMES: tuple[str, ...] = SCORE_NAMES + tuple(n for n in BENCHMARK_NAMES
                                                       if n != "e_measure_max")

Number = int | np.ndarray


@dataclass(frozen=True)
class Counts:
    """Confusion counts: ints for one image, int arrays of shape (N,) for a batch."""

    tp: Number
    fp: Number
    fn: Number
    tn: Number

    @property
    def total(self) -> Number:
        return self.tp + self.fp + self.fn + self.tn

    def __add__(self, other: Counts) -> Counts:
        return Counts(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn,
                      self.tn + other.tn)


def to_gray(x: np.ndarray) -> np.ndarray:
    """(H, W) from (H, W), (H, W, 1), RGB or RGBA: the brightest colour channel, alpha ignored."""
    x = np.asarray(x)
    if x.ndim == 3 and x.shape[-1] in (1, 3, 4):
        gray: np.ndarray = x[..., :3].max(axis=-1)
        return gray
    return x


def to_uint8(x: np.ndarray) -> np.ndarray:
    """A map quantised to 8 bits: probabilities -> round(255 p), bool -> 0/255, 16-bit -> v/257."""
    x = np.asarray(x)
    if x.dtype == np.uint8:
        return x
    if x.dtype == bool:
        scaled: np.ndarray = x.astype(np.uint8) * np.uint8(255)
        return scaled
    if x.dtype == np.uint16:
        return np.rint(x / 257.0).astype(np.uint8)
    if np.issubdtype(x.dtype, np.floating):
        return np.rint(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)
    raise TypeError(f"cannot read a map of {x.dtype}: expected bool, uint8, uint16 or float")


def confusion(pred: np.ndarray, gt: np.ndarray) -> Counts:
    """TP, FP, FN, TN of bool ``pred`` against bool ``gt``, both (H, W) or (N, H, W).

    For (N, H, W) the spatial axes are reduced at once and each count is an int array (N,).
    Non-bool inputs are binarised with :func:`to_mask` first.
    """
    pred = to_mask(pred)
    gt = to_mask(gt)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {gt.shape} differ in size")
    if pred.ndim == 2:
        # Three popcounts and one AND: about 0.3 ms for 1920x1080 (benchmarks/bench_metrics.py).
        tp = int(np.count_nonzero(np.logical_and(pred, gt)))
        n_pred = int(np.count_nonzero(pred))
        n_gt = int(np.count_nonzero(gt))
        total = pred.size
    elif pred.ndim == 3:
        flat_p = pred.reshape(pred.shape[0], -1)
        flat_g = gt.reshape(gt.shape[0], -1)
        tp = np.count_nonzero(np.logical_and(flat_p, flat_g), axis=1)
        n_pred = np.count_nonzero(flat_p, axis=1)
        n_gt = np.count_nonzero(flat_g, axis=1)
        total = flat_p.shape[1]
    else:
        raise ValueError(f"expected (H, W) or (N, H, W) masks, got shape {pred.shape}")
    fp = n_pred - tp
    fn = n_gt - tp
    return Counts(tp=tp, fp=fp, fn=fn, tn=total - tp - fp - fn)


def _ratio(num: Number, den: Number) -> Any:
    """num / den with 0/0 = 1 (den == 0 implies num == 0 for every ratio used here)."""
    if isinstance(den, np.ndarray):
        num = np.asarray(num, dtype=np.float64)
        out = np.ones(den.shape, dtype=np.float64)
        np.divide(num, den, out=out, where=den != 0)
        return out
    return float(num) / float(den) if den else 1.0


def scores_from_counts(counts: Counts) -> dict[str, Any]:
    """The six per-image scores (:data:`SCORE_NAMES`) from counts; floats, or arrays for a batch."""
    tp, fp, fn, tn = counts.tp, counts.fp, counts.fn, counts.tn
    return {
        "dice": _ratio(2 * tp, 2 * tp + fp + fn),
        "iou": _ratio(tp, tp + fp + fn),
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        "accuracy": _ratio(tp + tn, tp + fp + fn + tn),
        "f2": _ratio(5 * tp, 5 * tp + 4 * fn + fp),
    }


def scores(pred: np.ndarray, gt: np.ndarray) -> dict[str, Any]:
    """The six per-image scores of a mask or probability map against ground truth.

    (H, W) inputs give floats; (N, H, W) inputs give float arrays of shape (N,).
    """
    return scores_from_counts(confusion(pred, gt))


def _sod() -> Any:  # the py_sod_metrics module (an untyped library)
    # pysodmetrics pulls in scipy and scikit-image (seconds to import): only when needed.
    import py_sod_metrics

    return py_sod_metrics


class _Benchmark:
    """pysodmetrics evaluators fed one image at a time; per-image values are read back."""

    def __init__(self) -> None:
        sod = _sod()
        self._sm, self._wfm = sod.Smeasure(), sod.WeightedFmeasure()
        self._em, self._mae = sod.Emeasure(), sod.MAE()
        self._fm = sod.FmeasureV2()

    def __call__(self, map_u8: np.ndarray, gt: np.ndarray) -> tuple[dict[str, float], np.ndarray]:
        """Per-image benchmark values and the image's E-measure curve (256,)."""
        pred = map_u8.astype(np.float64) / 255.0  # exact: pysodmetrics maps back with *255
        gt = np.ascontiguousarray(gt, dtype=bool)
        self._sm.step(pred, gt, normalize=False)
        self._wfm.step(pred, gt, normalize=False)
        self._em.step(pred, gt, normalize=False)
        self._mae.step(pred, gt, normalize=False)
        fg = int(np.count_nonzero(gt))
        dyn = self._fm.dynamically_binarizing(pred=pred, gt=gt, FG=fg, BG=gt.size - fg)
        at = scores_from_counts(Counts(tp=dyn["tp"], fp=dyn["fp"], fn=dyn["fn"], tn=dyn["tn"]))
        curve = np.asarray(self._em.changeable_ems[-1], dtype=np.float64)
        values = {
            "s_measure": float(self._sm.sms[-1]),
            "weighted_f": float(self._wfm.weighted_fms[-1]),
            "e_measure_mean": float(curve.mean()),
            "mae": float(self._mae.maes[-1]),
            "mean_dice_256": float(np.mean(at["dice"])),
            "mean_iou_256": float(np.mean(at["iou"])),
        }
        # The evaluators keep every image's value; we keep our own (replaceable) copy.
        for store in (self._sm.sms, self._wfm.weighted_fms, self._em.changeable_ems,
                      self._em.adaptive_ems, self._mae.maes):
            store.clear()
        return values, curve


def benchmark_scores(prob: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """The polyp-benchmark values of one probability map (or mask) against ground truth."""
    acc = MetricAccumulator(benchmark=True)
    return {k: v for k, v in acc.add("_", prob, gt).items() if k in BENCHMARK_NAMES}


class MetricAccumulator:
    """Scores images one by one; keeps per-image values, running means and the dataset summary.

    Adding a name that is already there replaces its entry (the GUI re-scores a frame after
    an edit), so the running means always describe the latest mask of each image.
    """

    def __init__(self, *, benchmark: bool = True) -> None:
        self.benchmark = benchmark
        self._bench = _Benchmark() if benchmark else None
        self._entries: dict[str, dict[str, Any]] = {}
        self._curves: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def add(self, name: str, prob_or_mask: np.ndarray, gt: np.ndarray, *,
            error: str | None = None) -> dict[str, Any]:
        """Score one image; return its entry (``name``, the scores, ``error`` if given).

        ``prob_or_mask``: bool mask, float probabilities 0..1, or an 8/16-bit map, (H, W).
        ``gt``: the ground truth, same size, binarised by the same rule. ``error`` records why
        this item is not what the user meant (e.g. a missing prediction scored as empty).
        """
        gt_mask = to_mask(to_gray(gt))
        pred = to_gray(prob_or_mask)
        if pred.shape != gt_mask.shape or pred.ndim != 2:
            raise ValueError(f"{name}: prediction {pred.shape} and ground truth {gt_mask.shape} "
                             "differ in size")
        entry: dict[str, Any] = {"name": name}
        entry.update(scores(pred, gt_mask))
        curve = None
        if self._bench is not None:
            values, curve = self._bench(to_uint8(pred), gt_mask)
            entry.update(values)
        if error:
            entry["error"] = error
        self._entries.pop(name, None)  # re-adding moves the entry to the end
        self._entries[name] = entry
        if curve is not None:
            self._curves[name] = curve
        return entry

    def remove(self, name: str) -> None:
        self._entries.pop(name, None)
        self._curves.pop(name, None)

    @property
    def per_image(self) -> list[dict[str, Any]]:
        return [dict(e) for e in self._entries.values()]

    def running_mean(self) -> dict[str, float]:
        """Means of the six per-image scores so far (empty dict before the first image)."""
        if not self._entries:
            return {}
        return {k: float(np.mean([e[k] for e in self._entries.values()])) for k in SCORE_NAMES}

    def summary(self) -> dict[str, Any]:
        """``{"n": N, "mean": {...}, "per_image": [...]}``; benchmark means are None if off."""
        entries = list(self._entries.values())
        mean: dict[str, float | None] = {}
        for k in PER_IMAGE_NAMES:
            vals = [e[k] for e in entries if e.get(k) is not None]
            mean[k] = float(np.mean(vals)) if vals else None
        mean["e_measure_max"] = None
        if self._curves:
            curve = np.mean(np.stack(list(self._curves.values())), axis=0)
            mean["e_measure_max"] = float(curve.max())
        # A non-finite value would make invalid JSON; none is expected, but say so if one comes.
        clean = {k: (v if v is None or math.isfinite(v) else None) for k, v in mean.items()}
        return {"n": len(entries), "mean": {k: clean[k] for k in MEAN_NAMES},
                "per_image": self.per_image}

