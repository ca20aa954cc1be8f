"""Training data: Kvasir-layout sets held in memory, reproducible splits, batches.

A set is read once through :func:`polypviewer.io.sources.open_source` and kept at the frames'
own resolution. Every use resamples once from there, as inference does: a training batch is
one bilinear warp from the full frame to the network's square (``augment_pair``; with
augmentation off it is exactly the inference resize), and validation runs the frames through
the app's own ``Predictor`` and scores them at their original size. (Caching 1.25x squares
with ``INTER_AREA`` used to give training and validation other pixels than the app's
``INTER_LINEAR`` resize of the full frame.) A bad pair is named in ``problems`` and skipped.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from polypviewer.core.errors import PolypviewerError, describe_exception
from polypviewer.engine.augment import AugmentConfig, augment_pair
from polypviewer.nets.registry import Preprocessing

__all__ = ["DataError", "SampleSet", "SCOPEGUIDE_BOX", "blank_scopeguide_corner", "concat", "load_set", "read_split",
           "holdout_split", "make_batch", "normalise", "samples_from_items", "load_project_set"]


class DataError(PolypviewerError):
    """A training set or split file that cannot be used."""


@dataclass
class SampleSet:
    """Image/mask pairs in memory at their own size: ``images[i]`` RGB uint8 (H, W, 3) and
    ``masks[i]`` bool (H, W)."""

    root: Path
    names: list[str]
    images: list[np.ndarray]
    masks: list[np.ndarray]
    problems: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.names)

    def subset(self, names: Sequence[str]) -> SampleSet:
        idx = {n: i for i, n in enumerate(self.names)}
        keep = [idx[n] for n in names]
        return SampleSet(self.root, [self.names[i] for i in keep], [self.images[i] for i in keep],
                         [self.masks[i] for i in keep], list(self.problems))


def read_split(spec: str) -> list[str]:
    """``FILE:KEY`` -> the list of stems stored under KEY in the JSON file FILE."""
    file, sep, key = spec.rpartition(":")
    if not sep or not file:
        raise DataError(f"split {spec!r} must be FILE:KEY (e.g. split.json:train)")
    path = Path(file)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read split file ({describe_exception(exc, with_type=True)})", path) from None
    if key not in data or not isinstance(data[key], list):
        raise DataError(f"no list {key!r} in split file (keys: {', '.join(map(str, data))})", path)
    return [str(s) for s in data[key]]


def holdout_split(names: Sequence[str], fraction: float, seed: int = 0) -> tuple[list[str], list[str]]:
    """Reproducible (rest, held_out): the same names, fraction and seed give the same split.

    Names are sorted first, so the order a folder lists them in does not matter. At least
    one item lands on each side when there are two or more.
    """
    if not 0 < fraction < 1:
        raise DataError(f"hold-out fraction must be between 0 and 1, got {fraction}")
    pool = sorted(names)
    random.Random(seed).shuffle(pool)
    n = len(pool)
    k = min(max(1, round(n * fraction)), n - 1) if n >= 2 else 0
    return sorted(pool[k:]), sorted(pool[:k])


def load_set(root: str | Path, names: Sequence[str] | None = None, *, negatives: bool = False) -> SampleSet:
    """Read a Kvasir-layout folder (``images/`` + ``masks/``) into memory, at full size.

    ``names`` (file stems) restricts and orders the set; a listed stem that is missing is a
    problem, not a crash. ``negatives``: a folder of polyp-free frames without masks (every
    mask all-zero), to train against and measure false alarms.
    """
    from polypviewer.io.sources import ItemError, SourceError, open_source

    root = Path(root)
    if root.is_file() and root.name.endswith(PROJECT_SUFFIX):  # a review project (the app's)
        return load_project_set(root)
    try:
        src = open_source(root)
    except SourceError as exc:
        raise DataError(exc.reason, exc.path) from None
    out = SampleSet(root, [], [], [])
    with src:
        if not src.has_masks and not negatives:
            raise DataError("no masks/ folder beside images/: training needs ground truth", root)
        index = {src.name(i): i for i in range(len(src))}
        wanted = list(index) if names is None else list(names)
        for name in wanted:
            if name not in index:
                out.problems.append(f"{root}: {name}: listed in the split but not found")
                continue
            try:
                img = src.frame(index[name])
                gt = np.zeros(img.shape[:2], bool) if negatives else src.mask(index[name])
            except ItemError as exc:
                out.problems.append(str(exc))
                continue
            if gt is None:
                out.problems.append(f"{root}: {name}: no mask")
                continue
            out.names.append(name)
            out.images.append(np.ascontiguousarray(img))
            out.masks.append(np.asarray(gt, dtype=bool))
    if not out.names:
        raise DataError("no usable image/mask pairs" + (f" ({out.problems[0]})" if out.problems else ""), root)
    return out


def concat(root: str | Path, sets: Sequence[SampleSet], *, prefix: bool = True) -> SampleSet:
    """One set from several; names become ``<folder>/<name>`` (``prefix``) so that stems from
    different folders (Kvasir's hashes, CVC-ClinicDB's numbers) cannot collide."""
    out = SampleSet(Path(root), [], [], [])
    for s in sets:
        tag = f"{s.root.name}/" if prefix else ""
        out.names += [tag + n for n in s.names]
        out.images += s.images
        out.masks += s.masks
        out.problems += s.problems
    if len(set(out.names)) != len(out.names):
        raise DataError("the same image name appears twice in the combined set", root)
    return out


# HyperKvasir's green ScopeGuide inset (lower-left corner), painted black in the negatives of
# `negatives-hyperkvasir` and in about half of its source's polyp frames: measured over 100 of
# those negatives, the black box covers x < 34 % of the width and y > 67 % of the height.
SCOPEGUIDE_BOX = (0.35, 0.66)  # (right edge, top edge) as fractions of width and height


def blank_scopeguide_corner(data: SampleSet) -> SampleSet:
    """Paint the ScopeGuide corner black (and out of the mask) on every image, so a black box
    there says nothing about polyps: the shortcut the negatives would otherwise teach."""
    right, top = SCOPEGUIDE_BOX
    images, masks = [], []
    for img, m in zip(data.images, data.masks, strict=True):
        h, w = m.shape
        x1, y0 = int(round(w * right)), int(round(h * top))
        img, m = img.copy(), m.copy()
        img[y0:, :x1] = 0
        m[y0:, :x1] = False
        images.append(img)
        masks.append(m)
    return SampleSet(data.root, list(data.names), images, masks, list(data.problems))


def normalise(images: np.ndarray, prep: Preprocessing) -> torch.Tensor:
    """(N, H, W, 3) RGB uint8 -> (N, 3, H, W) float32 as ``prep`` says (same as inference)."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255)
    if prep.color_order.upper() == "BGR":
        x = x.flip(1)
    mean = torch.tensor(prep.mean, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(prep.std, dtype=torch.float32).view(1, 3, 1, 1)
    return (x - mean) / std


def make_batch(data: SampleSet, indices: Sequence[int] | np.ndarray, size: int, prep: Preprocessing,
               rng: np.random.Generator, cfg: AugmentConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Augmented, normalised inputs (N, 3, S, S) and masks (N, 1, S, S) float 0/1."""
    pairs = [augment_pair(data.images[i], data.masks[i], size, rng, cfg) for i in indices]
    x = normalise(np.stack([p[0] for p in pairs]), prep)
    y = torch.from_numpy(np.stack([p[1] for p in pairs])).float().unsqueeze(1)
    return x, y


PROJECT_SUFFIX = ".pvproj.h5"


def samples_from_items(root: str | Path, items: Any) -> SampleSet:
    """A set from ``(name, image RGB, mask bool)`` items (a review project's corrected frames)."""
    out = SampleSet(Path(root), [], [], [])
    for name, img, gt in items:
        gt = np.asarray(gt, dtype=bool)
        if img.shape[:2] != gt.shape:
            out.problems.append(f"{root}: {name}: image {img.shape[:2]} and mask {gt.shape} differ in size")
            continue
        out.names.append(name)
        out.images.append(np.ascontiguousarray(img))
        out.masks.append(gt)
    return out


def load_project_set(path: str | Path) -> SampleSet:
    """The accepted + corrected frames of a review project (flagged and unreviewed left out)."""
    from polypviewer.io.store import Project

    problems: list[PolypviewerError] = []
    with Project.open(path) as project:  # ProjectError (a PolypviewerError) names the file
        out = samples_from_items(path, project.items(errors=problems))
    out.problems = [str(p) for p in problems] + out.problems
    if not out.names:
        raise DataError("no accepted or corrected frames in this project", path)
    return out
