"""``TorchBackend``: eager PyTorch with the engine's optimisations.

BatchNorm folded into the preceding convolutions (``engine/folding.py``), channels_last,
``inference_mode``; bf16 autocast on CPUs with native bf16, fp16 autocast on CUDA, with the
convolutions that read the input image kept in fp32 (``engine/input_precision.py``).
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from polypviewer.engine.backends.base import Backend, InferenceHead
from polypviewer.engine.folding import fold_batchnorm
from polypviewer.engine.input_precision import keep_input_convolutions_fp32

__all__ = ["TorchBackend"]


class TorchBackend(Backend):
    """Eager PyTorch with the engine's optimisations (each can be turned off for baselines)."""

    name = "torch"

    def __init__(self, head: InferenceHead, input_size: int, *, device: str = "cpu",
                 precision: str = "fp32", fold_bn: bool = True, channels_last: bool = True) -> None:
        super().__init__(device, precision, input_size)
        module: nn.Module = head.eval()
        self.folded = 0
        if fold_bn:
            # A small input finds the same conv->BN pairs as a full-size one, 30x cheaper.
            probe = min(input_size, 64)
            module, self.folded = fold_batchnorm(module, torch.randn(1, 3, probe, probe))
        self._dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
        self.fp32_convolutions: list[str] = []
        if self._dtype is not None:
            # The convolutions reading the input image run in fp32 (input_precision.py), as in
            # the OpenVINO backend. They are wrapped in place: never in the caller's module.
            if not self.folded:
                module = copy.deepcopy(module)
            probe = min(input_size, 64)
            self.fp32_convolutions = keep_input_convolutions_fp32(module, torch.randn(1, 3, probe, probe))
        self.channels_last = channels_last
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        # Module.to(memory_format=...) is documented and works; torch's overloads leave it out.
        self.module = module.to(device=device, memory_format=memory_format)  # type: ignore[call-overload]
        # CUDA: batches keep the GPU busy; CPU: batch 1 is as fast per frame and keeps latency low.
        self.preferred_batch = 8 if device == "cuda" else 1
        if device == "cuda":
            torch.backends.cudnn.benchmark = True

    def infer(self, batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
        if self.device == "cuda":
            x = x.pin_memory().to("cuda", non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), torch.autocast(device_type=self.device, dtype=self._dtype or torch.float32,
                                                     enabled=self._dtype is not None):
            y = self.module(x)
        logits: np.ndarray = y.float()[:, 0].cpu().numpy()
        return logits

    def describe(self) -> str:
        extras = [f"{self.folded} BN folded" if self.folded else "no BN folding",
                  "channels_last" if self.channels_last else "contiguous"]
        if self.fp32_convolutions:
            extras.append(f"{len(self.fp32_convolutions)} input conv fp32")
        return f"torch {self.precision} {self.device} ({', '.join(extras)})"
