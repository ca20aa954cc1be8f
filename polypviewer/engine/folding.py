"""Fold eval-mode BatchNorm into the convolution that feeds it.

``y = gamma * (conv(x) - mean) / sqrt(var + eps) + beta`` is itself a convolution with
weights scaled per output channel and a new bias, so inference can skip the BN pass.

torch.fx's ``fuse`` needs a traceable graph, and our networks have data-dependent control
flow (PraNet's size checks); every convolution is a plain ``nn.Conv2d`` (the Keras ports'
asymmetric TF-"same" padding is a separate ``ZeroPad2d`` before it, see
``nets.resunetpp.PadConv2d``), so we find the pairs by running the network once with hooks:
a BatchNorm whose input tensor IS a convolution's output (same object) is folded into that
convolution. Pairs are then checked the cheap way: the folded network
must give the same output as the original on the same input; when it does not, only the
pairs that are exact on their own are folded.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

log = logging.getLogger(__name__)

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_Conv = nn.Conv1d | nn.Conv2d | nn.Conv3d


def _pairs(module: nn.Module, example: torch.Tensor) -> list[tuple[str, str]]:
    """(conv name, bn name) for every BN applied exactly once, directly to the output of a
    convolution called exactly once."""
    names = {m: n for n, m in module.named_modules()}
    outputs: dict[int, tuple[nn.Module, torch.Tensor]] = {}  # tensor kept alive: ids stay unique
    calls: dict[nn.Module, int] = {}
    fed_by: dict[nn.Module, nn.Module | None] = {}
    handles = []

    def conv_hook(m: nn.Module, inp: tuple[Any, ...], out: torch.Tensor) -> None:
        calls[m] = calls.get(m, 0) + 1
        outputs[id(out)] = (m, out)

    def bn_hook(m: nn.Module, inp: tuple[Any, ...]) -> None:
        calls[m] = calls.get(m, 0) + 1
        src = outputs.get(id(inp[0]))
        fed_by[m] = src[0] if src is not None else None

    for m in module.modules():
        if isinstance(m, _CONVS):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, _BatchNorm):
            handles.append(m.register_forward_pre_hook(bn_hook))
    try:
        with torch.no_grad():
            module(example)
    finally:
        for h in handles:
            h.remove()
    used: set[nn.Module] = set()
    pairs = []
    for bn, conv in fed_by.items():
        if conv is None or bn.running_var is None or calls.get(bn) != 1 or calls.get(conv) != 1 or conv in used:
            continue
        if bn.weight is not None and conv.out_channels != bn.num_features:
            continue
        used.add(conv)
        pairs.append((names[conv], names[bn]))
    return pairs


def _set(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, leaf = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, leaf, new)


@torch.no_grad()
def _fold_into(conv: _Conv, bn: _BatchNorm) -> None:
    if bn.running_mean is None or bn.running_var is None:  # _pairs() pairs only BNs with statistics
        raise ValueError("a BatchNorm without running statistics cannot be folded")
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    new_bias = (bias - bn.running_mean) * scale
    if bn.bias is not None:
        new_bias = new_bias + bn.bias
    shape = [-1] + [1] * (conv.weight.dim() - 1)
    conv.weight.copy_(conv.weight * scale.reshape(shape))
    conv.bias = nn.Parameter(new_bias, requires_grad=False)


def fold_batchnorm(module: nn.Module, example: torch.Tensor | None = None) -> tuple[nn.Module, int]:
    """A copy of ``module`` (eval mode) with BatchNorms folded into their convolutions.

    ``example``: an input the network accepts (default: 1x3x64x64). Returns (module,
    number folded). A pair whose folding changes the output (the convolution's output is
    also used elsewhere) is left unfolded; if nothing can be folded the original is returned.
    """
    module = module.eval()
    if example is None:
        example = torch.randn(1, 3, 64, 64)
    if not any(isinstance(m, _BatchNorm) for m in module.modules()):
        return module, 0
    try:
        pairs = _pairs(module, example)
    except Exception as exc:  # noqa: BLE001 - folding is an optimisation, never a failure
        log.info("BatchNorm folding skipped (%s: %s)", type(exc).__name__, exc)
        return module, 0
    if not pairs:
        return module, 0
    with torch.no_grad():
        want = module(example)
    folded = _folded(module, pairs, example, want)
    if folded is None:
        # Some convolution's output is used besides its BN (a skip connection): keep the
        # pairs that are exact one by one (rare, and at probe size each check is cheap).
        pairs = [p for p in pairs if _folded(module, [p], example, want) is not None]
        folded = _folded(module, pairs, example, want) if pairs else None
    if folded is None:
        log.warning("BatchNorm folding changed the output; running unfolded")
        return module, 0
    return folded, len(pairs)


def _folded(module: nn.Module, pairs: list[tuple[str, str]], example: torch.Tensor,
            want: torch.Tensor) -> nn.Module | None:
    """A folded copy, or None when it does not reproduce ``want`` on ``example``."""
    folded = copy.deepcopy(module)
    for conv_name, bn_name in pairs:
        conv, bn = folded.get_submodule(conv_name), folded.get_submodule(bn_name)
        if not isinstance(conv, _CONVS) or not isinstance(bn, _BatchNorm):  # what _pairs() found
            raise TypeError(f"{conv_name} -> {bn_name} is not a convolution followed by a BatchNorm")
        _fold_into(conv, bn)
        _set(folded, bn_name, nn.Identity())
    with torch.no_grad():
        got = folded(example)
    err = float((want - got).abs().max())
    scale = float(want.abs().max()) + 1e-6
    return folded if bool(torch.isfinite(got).all()) and err <= 1e-3 * scale else None


__all__ = ["fold_batchnorm"]
