"""Training data: Kvasir-layout sets held in memory, reproducible splits, batches.

A set is read once through :func:`polypviewer.io.sources.open_source` and kept as squares
a little larger than the network input (so augmentation warps a small image, not a 1920 px
frame); evaluation sets also keep each ground-truth mask at its original size, so scores are
computed where the user sees them. A bad pair is named in ``problems`` and skipped.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import torch

from polypviewer.core.errors import PolypviewerError
from polypviewer.engine.augment import AugmentConfig, augment_pair
from polypviewer.nets.registry import Preprocessing

__all__ = ["DataError", "SampleSet", "load_set", "read_split", "holdout_split", "make_batch",
           "normalise", "CACHE_MARGIN"]

CACHE_MARGIN = 1.25  # cached squares are this much larger than the input size


class DataError(PolypviewerError):
    """A training set or split file that cannot be used."""


@dataclass
class SampleSet:
    """Image/mask pairs in memory: ``images[i]`` RGB uint8 and ``masks[i]`` uint8 0/1, square."""

    root: Path
    names: list[str]
    images: list[np.ndarray]
    masks: list[np.ndarray]
    full_masks: list[np.ndarray] = field(default_factory=list)  # bool, original size
    full_sizes: list[tuple[int, int]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.names)

    def subset(self, names: Sequence[str]) -> "SampleSet":
        idx = {n: i for i, n in enumerate(self.names)}
        keep = [idx[n] for n in names]
        pick = lambda xs: [xs[i] for i in keep] if xs else []  # noqa: E731
        return SampleSet(self.root, [self.names[i] for i in keep], pick(self.images),
                         pick(self.masks), pick(self.full_masks), pick(self.full_sizes),
                         list(self.problems))


def read_split(spec: str) -> list[str]:
    """``FILE:KEY`` -> the list of stems stored under KEY in the JSON file FILE."""
    file, sep, key = spec.rpartition(":")
    if not sep or not file:
        raise DataError(f"split {spec!r} must be FILE:KEY (e.g. split.json:train)")
    path = Path(file)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read split file ({exc.__class__.__name__}: {exc})", path) from None
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


def load_set(root: str | Path, size: int, names: Sequence[str] | None = None, *,
             keep_full_masks: bool = False, margin: float = CACHE_MARGIN) -> SampleSet:
    """Read a Kvasir-layout folder (``images/`` + ``masks/``) into memory.

    ``names`` (file stems) restricts and orders the set; a listed stem that is missing is a
    problem, not a crash. Images are cached as ``round(size * margin)`` squares.
    """
    from polypviewer.io.sources import ItemError, SourceError, open_source

    root = Path(root)
    if root.is_file() and root.name.endswith(PROJECT_SUFFIX):  # a review project (the app's)
        return load_project_set(root, size, keep_full_masks=keep_full_masks, margin=margin)
    try:
        src = open_source(root)
    except SourceError as exc:
        raise DataError(exc.reason, exc.path) from None
    side = int(round(size * margin))
    out = SampleSet(root, [], [], [])
    with src:
        if not src.has_masks:
            raise DataError("no masks/ folder beside images/: training needs ground truth", root)
        index = {src.name(i): i for i in range(len(src))}
        wanted = list(index) if names is None else list(names)
        for name in wanted:
            if name not in index:
                out.problems.append(f"{root}: {name}: listed in the split but not found")
                continue
            try:
                img, gt = src.frame(index[name]), src.mask(index[name])
            except ItemError as exc:
                out.problems.append(str(exc))
                continue
            if gt is None:
                out.problems.append(f"{root}: {name}: no mask")
                continue
            out.names.append(name)
            out.images.append(cv2.resize(img, (side, side), interpolation=cv2.INTER_AREA))
            out.masks.append(cv2.resize(gt.astype(np.uint8), (side, side), interpolation=cv2.INTER_NEAREST))
            if keep_full_masks:
                out.full_masks.append(gt.astype(bool))
                out.full_sizes.append(gt.shape[:2])
    if not out.names:
        raise DataError("no usable image/mask pairs" + (f" ({out.problems[0]})" if out.problems else ""), root)
    return out


def normalise(images: np.ndarray, prep: Preprocessing) -> torch.Tensor:
    """(N, H, W, 3) RGB uint8 -> (N, 3, H, W) float32 as ``prep`` says (same as inference)."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255)
    if prep.color_order.upper() == "BGR":
        x = x.flip(1)
    mean = torch.tensor(prep.mean, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(prep.std, dtype=torch.float32).view(1, 3, 1, 1)
    return (x - mean) / std


def make_batch(data: SampleSet, indices: Sequence[int], size: int, prep: Preprocessing,
               rng: np.random.Generator, cfg: AugmentConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Augmented, normalised inputs (N, 3, S, S) and masks (N, 1, S, S) float 0/1."""
    pairs = [augment_pair(data.images[i], data.masks[i], size, rng, cfg) for i in indices]
    x = normalise(np.stack([p[0] for p in pairs]), prep)
    y = torch.from_numpy(np.stack([p[1] for p in pairs])).float().unsqueeze(1)
    return x, y


PROJECT_SUFFIX = ".pvproj.h5"


def samples_from_items(root: str | Path, items, size: int, *, keep_full_masks: bool = False,
                       margin: float = CACHE_MARGIN) -> SampleSet:
    """A set from ``(name, image RGB, mask bool)`` items (a review project's corrected frames)."""
    side = int(round(size * margin))
    out = SampleSet(Path(root), [], [], [])
    for name, img, gt in items:
        gt = np.asarray(gt, dtype=bool)
        out.names.append(name)
        out.images.append(cv2.resize(img, (side, side), interpolation=cv2.INTER_AREA))
        out.masks.append(cv2.resize(gt.astype(np.uint8), (side, side), interpolation=cv2.INTER_NEAREST))
        if keep_full_masks:
            out.full_masks.append(gt)
            out.full_sizes.append(gt.shape[:2])
    return out


def load_project_set(path: str | Path, size: int, *, keep_full_masks: bool = False,
                     margin: float = CACHE_MARGIN) -> SampleSet:
    """The accepted + corrected frames of a review project (flagged and unreviewed left out)."""
    from polypviewer.io.store import Project

    problems: list[PolypviewerError] = []
    with Project.open(path) as project:  # ProjectError (a PolypviewerError) names the file
        out = samples_from_items(path, project.items(errors=problems), size,
                                 keep_full_masks=keep_full_masks, margin=margin)
    out.problems = [str(p) for p in problems]
    if not out.names:
        raise DataError("no accepted or corrected frames in this project", path)
    return out
