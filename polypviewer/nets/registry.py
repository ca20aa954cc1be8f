"""Model registry: name -> builder plus everything needed to feed and read the network.

Every registered network's ``forward`` returns logits: one tensor ``(N, 1, H, W)`` or a
tuple of them (deep supervision); ``ModelSpec.select`` picks the map used at inference.
Preprocessing travels with the spec (and with checkpoints, see ``weights.py``), and so do
the facts training needs: the model's default recipe (a name in
``polypviewer.engine.training.RECIPES``, as torchvision keeps the recipe in its weights' meta)
and whether its builder can start from an ImageNet-pretrained encoder (``pretrained=True``,
as smp keeps the pretrained settings in its encoder registry).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from polypviewer.core.errors import PolypviewerError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocessing:
    """How a frame (RGB uint8) becomes the network's input tensor."""

    input_size: int  # square side the frame is resized to (bilinear)
    color_order: str = "RGB"  # "RGB" or "BGR": channel order fed to the network
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)  # after scaling to [0, 1]
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)

    def to_dict(self) -> dict[str, Any]:
        return {"input_size": self.input_size, "color_order": self.color_order,
                "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocessing:
        return cls(int(d["input_size"]), str(d.get("color_order", "RGB")),
                   tuple(d.get("mean", (0.0, 0.0, 0.0))), tuple(d.get("std", (1.0, 1.0, 1.0))))


def _last(out: Any) -> torch.Tensor:
    t: torch.Tensor = out[-1] if isinstance(out, (tuple, list)) else out
    return t


@dataclass(frozen=True)
class ModelSpec:
    name: str
    builder: Callable[..., nn.Module]
    preprocessing: Preprocessing
    description: str = ""
    # Picks the inference logits (N, 1, H, W) from forward's output. Default: the last map
    # of a tuple (PraNet's map2) or the tensor itself.
    select: Callable[[Any], torch.Tensor] = field(default=_last)
    reference: str = ""  # paper / source the architecture follows
    recipe: str = "pranet"  # default training recipe (engine.training.RECIPES)
    # The builder takes ``pretrained=True`` and then loads ImageNet weights into its encoder.
    pretrained_encoder: bool = False


class UnknownModelError(PolypviewerError):
    """A model name the registry does not know; the message lists the known ones."""


_REGISTRY: dict[str, ModelSpec] = {}

_Builder = TypeVar("_Builder", bound=Callable[..., nn.Module])


def register_model(name: str, *, preprocessing: Preprocessing, description: str = "",
                   reference: str = "", select: Callable[[Any], torch.Tensor] = _last,
                   recipe: str = "pranet", pretrained_encoder: bool = False) -> Callable[[_Builder], _Builder]:
    """Decorator for a builder ``fn(**cfg) -> nn.Module``; registers it under ``name``."""

    def deco(fn: _Builder) -> _Builder:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} registered twice")
        _REGISTRY[name] = ModelSpec(name, fn, preprocessing, description, select, reference,
                                    recipe, pretrained_encoder)
        return fn

    return deco


def _ensure_loaded() -> None:
    # Importing the package imports every model module, which registers them.
    import polypviewer.nets  # noqa: F401


def list_models() -> list[str]:
    _ensure_loaded()
    return sorted(_REGISTRY)


def get_spec(name: str) -> ModelSpec:
    """The registered model ``name``; :class:`UnknownModelError` (one line) otherwise."""
    _ensure_loaded()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownModelError(f"unknown model {name!r}; choose one of: "
                                f"{', '.join(sorted(_REGISTRY))}") from None


def build_model(name: str, **cfg: Any) -> nn.Module:
    return get_spec(name).builder(**cfg)


# -- prompted models: networks that segment what a prompt (a box, a point) points at, not
# whole frames. They are kept apart from the frame segmenters above, so the model panel,
# the parametrised model tests and ``Predictor`` never offer them; ``engine.prompting``
# drives them.
@dataclass(frozen=True)
class PromptedModelSpec:
    name: str
    builder: Callable[[], nn.Module]
    load: Callable[[], nn.Module]  # the network with its published weights (strict, safe)
    input_size: int
    prompts: tuple[str, ...]  # "box", "point"
    description: str = ""
    reference: str = ""
    license: str = ""
    weights: Callable[[], Path | None] | None = None  # where the published weights are installed
    weights_sha256: str = ""  # what that file must hash to


_PROMPTED: dict[str, PromptedModelSpec] = {}


def register_prompted_model(spec: PromptedModelSpec) -> PromptedModelSpec:
    if spec.name in _PROMPTED or spec.name in _REGISTRY:
        raise ValueError(f"model {spec.name!r} registered twice")
    _PROMPTED[spec.name] = spec
    return spec


def list_prompted_models() -> list[str]:
    _ensure_loaded()
    return sorted(_PROMPTED)


def get_prompted_spec(name: str) -> PromptedModelSpec:
    _ensure_loaded()
    try:
        return _PROMPTED[name]
    except KeyError:
        raise UnknownModelError(f"unknown prompted model {name!r}; choose one of: "
                                f"{', '.join(sorted(_PROMPTED))}") from None
