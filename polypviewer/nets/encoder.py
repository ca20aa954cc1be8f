"""The encoder contract the backbones follow (after segmentation_models_pytorch's).

An encoder turns an image batch ``(N, 3, H, W)`` into feature maps, shallow to deep:
``forward_features(x)`` returns ``len(out_channels)`` tensors, the i-th with
``out_channels[i]`` channels at ``1 / strides[i]`` of the input's sides (for sides that are
multiples of ``output_stride``, the deepest map's stride). A decoder reads these numbers
instead of hard-coding them. Unlike smp, the input itself is not returned as the first map.

``tests/nets/test_encoders.py`` checks every encoder of every registered model against it.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

__all__ = ["Encoder"]


@runtime_checkable
class Encoder(Protocol):
    """A backbone: ``forward_features`` plus the channels and strides of what it returns."""

    @property
    def out_channels(self) -> tuple[int, ...]: ...

    @property
    def strides(self) -> tuple[int, ...]: ...

    @property
    def output_stride(self) -> int: ...

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]: ...
