"""What every backend shares: the network as one logits head, the interface, its digest.

A backend runs a network on preprocessed input ``(N, 3, S, S) float32`` and returns the
inference map's LOGITS ``(N, S', S') float32``. Pre- and post-processing (resize, colour
order, normalisation, sigmoid, resize back) live once, in ``engine/processing.py``, so every
backend sees the same input and gives the same kind of output, and backends differ only in
arithmetic.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["Backend", "InferenceHead", "ResultCallback", "Stream", "SyncStream", "safe_stem", "state_digest"]

# Called with (tag, logits (n, S', S') float32) when a submitted batch is done; tag is the
# caller's per-batch token, handed back unchanged.
ResultCallback = Callable[[Any, np.ndarray], None]


class InferenceHead(nn.Module):
    """The network followed by its spec's ``select``: one logits tensor (N, 1, H, W)."""

    def __init__(self, model: nn.Module, select: Callable[[Any], torch.Tensor]) -> None:
        super().__init__()
        self.model = model
        self._select = select

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._select(self.model(x))


def state_digest(module: nn.Module) -> str:
    """sha256 of every parameter and buffer (names, shapes, bytes): what the network computes."""
    h = hashlib.sha256()
    for name, t in module.state_dict().items():
        t = t.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def safe_stem(name: str) -> str:
    """``name`` with every character a file name may not safely hold replaced by ``_``."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


class Backend:
    """Runs the network on preprocessed input; see the module docstring."""

    name = "base"

    def __init__(self, device: str, precision: str, input_size: int) -> None:
        self.device = device
        self.precision = precision
        self.input_size = input_size

    #: how many frames the pipeline should put in one submitted batch
    preferred_batch = 1

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """(N, 3, S, S) float32 -> logits (N, S', S') float32, synchronously."""
        raise NotImplementedError

    def stream(self, on_result: ResultCallback) -> Stream:
        """A submission channel for the pipeline (several batches may be in flight)."""
        return SyncStream(self, on_result)

    def describe(self) -> str:
        return f"{self.name} {self.precision} {self.device}"


class Stream:
    """``submit(tag, batch)`` may return before the result; ``on_result`` gets it later.
    ``wait()`` returns when everything submitted has been delivered."""

    def submit(self, tag: Any, batch: np.ndarray) -> None:
        raise NotImplementedError

    def wait(self) -> None:
        raise NotImplementedError


class SyncStream(Stream):
    def __init__(self, backend: Backend, on_result: ResultCallback) -> None:
        self.backend = backend
        self.on_result = on_result

    def submit(self, tag: Any, batch: np.ndarray) -> None:
        self.on_result(tag, self.backend.infer(batch))

    def wait(self) -> None:
        return None
