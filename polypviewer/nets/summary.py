"""Model size and cost, computed (never typed in): parameter counts and GFLOPs.

``count_parameters`` reports both the PyTorch count and what Keras calls "total params"
(which also counts BatchNorm moving statistics), because the ResUNet++ papers quote the
Keras numbers. ``gflops`` counts with ``torch.utils.flop_counter.FlopCounterMode``, which
counts multiply-adds of convolutions and matrix products as 2 FLOPs (FLOPs = 2 x MACs);
element-wise ops, BN and resizes are not counted, as in the usual published figures.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

__all__ = ["count_parameters", "gflops", "model_summary"]


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """``(trainable, keras_total)``: trainable parameters, and all parameters plus the
    elements of every BatchNorm's ``running_mean`` and ``running_var``."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    stats = 0
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
            stats += m.running_mean.numel() + (m.running_var.numel() if m.running_var is not None else 0)
    return int(trainable), int(total + stats)


def _meta_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose tensors live on the meta device (shapes only, no memory,
    no arithmetic): counting FLOPs needs only shapes."""
    memo: dict[int, Any] = {}
    for p in model.parameters():
        memo[id(p)] = nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=p.requires_grad)
    for b in model.buffers():
        memo[id(b)] = torch.empty_like(b, device="meta")
    return copy.deepcopy(model, memo)


def _count_flops(model: nn.Module, x: torch.Tensor) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    flops: int = counter.get_total_flops()
    return flops


def gflops(model: nn.Module, input_size: int | tuple[int, int], in_channels: int = 3) -> float:
    """Forward GFLOPs (2 x MACs) for one ``in_channels x H x W`` input, in eval mode.

    Runs on a shape-only (meta) copy of the model; falls back to a real forward pass for
    models whose forward needs actual values. ``model`` itself is left untouched.
    """
    h, w = (input_size, input_size) if isinstance(input_size, int) else input_size
    try:
        shadow = _meta_copy(model).eval()
        return _count_flops(shadow, torch.zeros(1, in_channels, h, w, device="meta")) / 1e9
    except (NotImplementedError, RuntimeError):  # data-dependent forward: count for real
        pass
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    was_training = model.training
    model.eval()
    try:
        return _count_flops(model, torch.zeros(1, in_channels, h, w, device=device, dtype=dtype)) / 1e9
    finally:
        model.train(was_training)


def model_summary(name: str, input_size: int | None = None, *, with_flops: bool = True,
                  **cfg: Any) -> dict[str, Any]:
    """Build the registered model ``name`` and describe it (for ``polypviewer info``):
    ``{"model", "description", "reference", "input_size", "preprocessing", "recipe",
    "pretrained_encoder", "params", "keras_total_params", "gflops"}``; ``gflops`` is at the
    model's native input size unless ``input_size`` is given, and None when ``with_flops`` is
    False (it runs a forward pass)."""
    from polypviewer.nets.registry import get_spec

    spec = get_spec(name)
    model = spec.builder(**cfg)
    size = input_size or spec.preprocessing.input_size
    trainable, keras_total = count_parameters(model)
    return {
        "model": name,
        "description": spec.description,
        "reference": spec.reference,
        "input_size": size,
        "preprocessing": spec.preprocessing.to_dict(),
        "recipe": spec.recipe,  # the default training recipe
        "pretrained_encoder": spec.pretrained_encoder,
        "params": trainable,
        "keras_total_params": keras_total,
        "gflops": round(gflops(model, size), 2) if with_flops else None,
    }
