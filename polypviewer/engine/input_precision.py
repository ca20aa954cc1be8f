"""Keep the convolutions that read the input image in fp32 when the rest runs in bf16 / fp16.

bf16 keeps 8 significant bits. Rounding the normalised input image to bf16 moves a pixel by up
to 2**-9 of its value (a quarter of an 8-bit grey level for the brightest pixels), and the first
convolution's weights by as much: small errors, but at the one layer whose errors every later
layer amplifies. On PraNet (trained weights) that first layer is most of bf16's disagreement
with fp32: keeping only the first convolution in fp32 moves mean |p_bf16 - p_fp32| on the real
val images from 0.0116 to 0.0090 and the masks' Dice from 0.976 to 0.981 (the bar is < 0.01
and > 0.98), for about 1 % of the frame time (0.75 ms of ~90 ms in OpenVINO's per-layer
profile: a 3-channel convolution is a tiny share of the work). Keeping PraNet's whole 3-layer
stem in fp32 gains little more (0.0060 / 0.987) for about 15 %. ``polypviewer bench`` measures
the agreement.

Both backends do the same thing:

- torch: the input convolutions are found by a probe forward pass (a convolution whose
  input is the network's input tensor itself) and run with autocast disabled;
- OpenVINO: those convolutions (whose data input is the model's Parameter) carry OpenVINO's
  ``precise`` runtime attribute, which the CPU plugin honours by executing them in f32 under
  a bf16 inference-precision hint. ``openvino.save_model`` does not write that attribute, but
  the IR reader reads it, so it is written into the serialised IR's XML (see ``mark_ir``).
"""

from __future__ import annotations

import re
from typing import Any
from xml.sax.saxutils import escape

import torch
from torch import nn

# OpenVINO's name for ov::DisableFP16Compression in IR files ("precise", version "0"); once
# read, it appears in a node's rt_info under this key.
_IR_ATTRIBUTE = '<attribute name="precise" version="0" />'
RT_INFO_KEY = "DisablePrecisionConversion_0"


# --------------------------------------------------------------------------- torch


def input_convolutions(module: nn.Module, example: torch.Tensor) -> list[str]:
    """Names of the ``nn.Conv2d`` submodules that read ``module``'s input tensor directly."""
    found: list[str] = []
    hooks = []
    for name, sub in module.named_modules():
        if isinstance(sub, nn.Conv2d):
            def pre(m: nn.Module, args: tuple[Any, ...], name: str = name) -> None:
                if args and args[0] is example:
                    found.append(name)
            hooks.append(sub.register_forward_pre_hook(pre))
    try:
        with torch.no_grad():
            module(example)
    finally:
        for h in hooks:
            h.remove()
    return found


class _Float32(nn.Module):
    """Runs the wrapped module in fp32 whatever autocast is active around it."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=x.device.type, enabled=False):
            y: torch.Tensor = self.inner(x.float())
            return y


def keep_input_convolutions_fp32(module: nn.Module, example: torch.Tensor) -> list[str]:
    """Wrap the convolutions that read the input so they run in fp32 under autocast.

    Changes ``module`` in place; returns the wrapped submodules' names. Parameters keep their
    names under an ``inner.`` prefix, so call this on an inference copy, not on a network whose
    state_dict is saved."""
    names = input_convolutions(module, example)
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        setattr(parent, child, _Float32(getattr(parent, child)))
    return names


# --------------------------------------------------------------------------- OpenVINO


def openvino_input_convolutions(model: Any) -> list[str]:
    """Friendly names of the Convolution nodes whose data input is one of the model's inputs."""
    names = []
    for op in model.get_ordered_ops():
        if op.get_type_name() == "Convolution":
            source = op.input(0).get_source_output().get_node()
            if source.get_type_name() == "Parameter":
                names.append(op.get_friendly_name())
    return names


def mark_ir(xml: str, names: list[str]) -> str:
    """The IR ``xml`` text with the ``precise`` attribute on each named Convolution layer.

    Raises ``ValueError`` if a name is not found exactly once: a model we cannot mark must not
    pass silently for one we did."""
    for name in names:
        quoted = escape(name, {'"': "&quot;"})
        pattern = re.compile(r'<layer id="\d+" name="' + re.escape(quoted) + r'" type="Convolution"[^>]*>')
        hits = list(pattern.finditer(xml))
        if len(hits) != 1:
            raise ValueError(f"convolution {name!r} found {len(hits)} times in the IR")
        start = hits[0].end()
        end = xml.index("</layer>", start)
        block = xml[start:end]
        if "<rt_info>" in block:
            at = start + block.index("<rt_info>") + len("<rt_info>")
            xml = xml[:at] + "\n\t\t\t\t" + _IR_ATTRIBUTE + xml[at:]
        else:
            at = start + block.index("<input>")
            xml = xml[:at] + "<rt_info>\n\t\t\t\t" + _IR_ATTRIBUTE + "\n\t\t\t</rt_info>\n\t\t\t" + xml[at:]
    return xml


def marked_nodes(model: Any) -> list[str]:
    """Friendly names of the nodes that carry the ``precise`` attribute (for checks and tests)."""
    return [op.get_friendly_name() for op in model.get_ordered_ops() if RT_INFO_KEY in op.get_rt_info()]


__all__ = ["RT_INFO_KEY", "input_convolutions", "keep_input_convolutions_fp32", "mark_ir",
           "marked_nodes", "openvino_input_convolutions"]
