"""Realistic BatchNorm statistics for an untrained network.

PyTorch initialises BN running statistics to mean 0 / variance 1, so an untrained network's
activations grow layer after layer; in bf16 (8 mantissa bits) that makes a deep network like
PraNet diverge from fp32 in ways a trained one never does, and fp32 runs into denormals. To
benchmark and to test precision agreement before trained weights exist, we recompute the
running statistics on a few real frames (a forward pass in train mode without gradients):
the weights stay random, the activations become realistic.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from torch import nn


def calibrate_batchnorm(net: nn.Module, batches: Iterable[np.ndarray]) -> nn.Module:
    """Replace every BatchNorm's running statistics by their cumulative average over
    ``batches`` (preprocessed (N, 3, S, S) float32). Returns ``net`` in eval mode."""
    bns = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: every batch counts equally
    net.train()
    try:
        with torch.no_grad():
            for batch in batches:
                net(torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)))
    finally:
        for m, momentum in zip(bns, saved, strict=True):
            m.momentum = momentum
        net.eval()
    return net
