"""ResUNet++ (Jha et al., ISM 2019) and the MediaEval 2020 ASPP variants (Ali et al.).

Layer for layer the official Keras model (DebeshJha/ResUNetPlusPlus, ``m_resunet.py``), so
Keras weights port unchanged (see ``keras_import.py``):

- every convolution has a bias; BatchNorm is Keras's (eps 1e-3, momentum 0.99, i.e. PyTorch
  momentum 0.01);
- TF ``padding="same"``: a stride-2 3x3 conv pads 0 before and 1 after (``tf_same_conv2d``);
- ``UpSampling2D`` is nearest;
- sub-modules are created in the order Keras creates its layers, so the n-th Keras
  ``conv2d`` / ``batch_normalization`` / ``dense`` layer is the n-th module of that type.

``forward`` returns logits ``(N, 1, H, W)``: the Keras sigmoid is applied by inference and
the losses, not here. H and W must be multiples of ``model.size_multiple``.

Registered names and what their ASPP is (bridge at 256 channels and head at 16):

==========================  ===================================================
``resunetpp``               official: 3x3 convs at dilations 6, 12, 18, 1 -> BN, summed, 1x1
``resunetpp_seed``          MediaEval ``resunet++``: a fifth branch at dilation 24
``resunetpp_sepconv``       MediaEval ``sepv_conv_resunet++``: the 5 branches separable
``resunetpp_daspp``         MediaEval ``dsapp_resunet++``: DASPP (separable, concatenated)
``resunetpp_daspp_relu``    MediaEval ``dsapp_relu_resunet++``: DASPP with ReLUs
==========================  ===================================================
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from polypviewer.core.errors import PolypviewerError
from polypviewer.nets.registry import Preprocessing, register_model

__all__ = ["ResUNetPlusPlus", "InputSizeError", "tf_same_conv2d", "PadConv2d",
           "SeparableConv2d", "keras_bn", "check_input_size", "five_filters", "KERAS_PREPROCESSING"]

# The Keras code reads frames with cv2 (BGR) and divides by 255: no mean/std.
KERAS_PREPROCESSING = Preprocessing(256, "BGR", (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
KERAS_BN_EPS = 1e-3
KERAS_BN_MOMENTUM = 0.01  # Keras momentum 0.99 is the weight of the old running value

_REFERENCE = ("Jha et al., ResUNet++: An Advanced Architecture for Medical Image "
              "Segmentation, ISM 2019; github.com/DebeshJha/ResUNetPlusPlus (m_resunet.py)")
_REFERENCE_ME = ("Ali et al., Depth-wise separable atrous convolution for polyps "
                 "segmentation in gastro-intestinal tract, MediaEval 2020; " + _REFERENCE)


class InputSizeError(PolypviewerError, ValueError):
    """The frame's size does not fit the network's down-sampling."""


def _is_exporting() -> bool:
    # Shape checks are plain Python; keep them out of traced / exported graphs.
    return (torch.jit.is_tracing() or torch.jit.is_scripting()
            or torch.compiler.is_compiling() or torch.onnx.is_in_onnx_export())


def five_filters(filters: Sequence[int]) -> tuple[int, ...]:
    """The five stage widths of ResUNet++ and its U-Net baseline (stem / encoder x3 / bridge)."""
    f = tuple(filters)
    if len(f) != 5:
        raise ValueError(f"filters must have 5 entries, got {f}")
    return f


def check_input_size(x: torch.Tensor | torch.fx.Proxy, multiple: int, model: str, channels: int = 3) -> None:
    """Raise ``InputSizeError`` unless ``x`` is (N, channels, H, W) with H, W multiples of
    ``multiple``.

    Skipped while torch.fx, TorchScript, dynamo or the ONNX exporter trace the network, so the
    graph holds no Python control flow on shapes."""
    if isinstance(x, torch.fx.Proxy) or _is_exporting():
        return
    if x.dim() != 4 or x.shape[1] != channels:
        raise InputSizeError(f"{model} expects a (N, {channels}, H, W) tensor, "
                             f"got {tuple(x.shape)}")
    h, w = int(x.shape[-2]), int(x.shape[-1])
    if h % multiple or w % multiple or h == 0 or w == 0:
        up_h, up_w = -(-h // multiple) * multiple, -(-w // multiple) * multiple
        raise InputSizeError(f"{model} needs height and width that are multiples of {multiple}: "
                             f"got {h}x{w}; resize or pad to {max(up_h, multiple)}x"
                             f"{max(up_w, multiple)} (the trained size is 256x256)")


def keras_bn(channels: int) -> nn.BatchNorm2d:
    """``BatchNorm2d`` with Keras's defaults (eps 1e-3, momentum 0.99)."""
    return nn.BatchNorm2d(channels, eps=KERAS_BN_EPS, momentum=KERAS_BN_MOMENTUM)


def _tf_same_pad(kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """TF 'same' padding (before, after) for an input divisible by ``stride``."""
    total = max((kernel - 1) * dilation + 1 - stride, 0)
    return total // 2, total - total // 2


class PadConv2d(nn.Sequential):
    """TF 'same' where it is asymmetric: ``ZeroPad2d`` then a conv with no padding.

    A stride-2 3x3 conv on an even input pads 0 before and 1 after in TF, where PyTorch's
    ``padding=1`` would shift the sampling grid by one pixel. Two plain modules rather than a
    ``Conv2d`` subclass, so the convolution is an exact ``nn.Conv2d`` that BatchNorm folding
    (``engine/folding.py``, which finds conv -> BN pairs with forward hooks) folds like any other.
    """

    def __init__(self, pad: tuple[int, int, int, int], conv: nn.Conv2d) -> None:
        super().__init__()
        self.pad = nn.ZeroPad2d(pad)
        self.conv = conv


def tf_same_conv2d(in_channels: int, out_channels: int, kernel_size: int, *, stride: int = 1,
                   dilation: int = 1, groups: int = 1, bias: bool = True) -> nn.Module:
    """A conv with TensorFlow's ``padding="same"`` (for inputs divisible by ``stride``).

    TF pads ``total // 2`` before and the rest after: a plain ``nn.Conv2d`` with symmetric
    padding for stride 1 (any dilation) and 1x1 kernels, a ``PadConv2d`` otherwise.
    """
    before, after = _tf_same_pad(kernel_size, stride, dilation)
    symmetric = before == after
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride,
                     padding=before if symmetric else 0, dilation=dilation, groups=groups,
                     bias=bias)
    return conv if symmetric else PadConv2d((before, after, before, after), conv)


class SeparableConv2d(nn.Module):
    """Keras ``SeparableConv2D``: depth-wise conv (no bias) then point-wise 1x1 (with bias)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *,
                 dilation: int = 1) -> None:
        super().__init__()
        self.depthwise = tf_same_conv2d(in_channels, in_channels, kernel_size, dilation=dilation,
                                      groups=in_channels, bias=False)
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = self.pointwise(self.depthwise(x))
        return y


class SqueezeExcite(nn.Module):
    """Global average pool -> dense C/8 ReLU -> dense C sigmoid (both bias-free) -> scale."""

    def __init__(self, channels: int, ratio: int = 8) -> None:
        super().__init__()
        self.fc1 = nn.Linear(channels, channels // ratio, bias=False)
        self.fc2 = nn.Linear(channels // ratio, channels, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean(dim=(2, 3))
        s = torch.sigmoid(self.fc2(F.relu(self.fc1(s))))
        return x * s[:, :, None, None]


class StemBlock(nn.Module):
    """conv3x3 -> BN -> ReLU -> conv3x3, plus shortcut conv1x1 -> BN; add; SE."""

    def __init__(self, in_channels: int, filters: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = tf_same_conv2d(in_channels, filters, 3, stride=stride)
        self.bn1 = keras_bn(filters)
        self.conv2 = tf_same_conv2d(filters, filters, 3)
        self.shortcut = tf_same_conv2d(in_channels, filters, 1, stride=stride)
        self.shortcut_bn = keras_bn(filters)
        self.se = SqueezeExcite(filters)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(F.relu(self.bn1(self.conv1(x))))
        out: torch.Tensor = self.se(y + self.shortcut_bn(self.shortcut(x)))
        return out


class ResidualBlock(nn.Module):
    """Pre-activation: BN -> ReLU -> conv3x3(stride) -> BN -> ReLU -> conv3x3, plus
    shortcut conv1x1(stride) -> BN; add; SE."""

    def __init__(self, in_channels: int, filters: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = keras_bn(in_channels)
        self.conv1 = tf_same_conv2d(in_channels, filters, 3, stride=stride)
        self.bn2 = keras_bn(filters)
        self.conv2 = tf_same_conv2d(filters, filters, 3)
        self.shortcut = tf_same_conv2d(in_channels, filters, 1, stride=stride)
        self.shortcut_bn = keras_bn(filters)
        self.se = SqueezeExcite(filters)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv1(F.relu(self.bn1(x)))
        y = self.conv2(F.relu(self.bn2(y)))
        out: torch.Tensor = self.se(y + self.shortcut_bn(self.shortcut(x)))
        return out


class ASPP(nn.Module):
    """Parallel 3x3 branches (plain or separable) at ``rates``, each -> BN, summed, conv1x1."""

    def __init__(self, in_channels: int, filters: int, rates: Sequence[int], *,
                 separable: bool = False) -> None:
        super().__init__()
        self.convs = nn.ModuleList()
        self.bns = nn.ModuleList()
        for r in rates:  # Keras creates conv, BN, conv, BN, ...: keep that order
            self.convs.append(SeparableConv2d(in_channels, filters, 3, dilation=r) if separable
                              else tf_same_conv2d(in_channels, filters, 3, dilation=r))
            self.bns.append(keras_bn(filters))
        self.project = nn.Conv2d(filters, filters, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = sum(bn(conv(x)) for conv, bn in zip(self.convs, self.bns, strict=True))
        out: torch.Tensor = self.project(y)
        return out


class DASPPBranch(nn.Module):
    """Separable 3x3 at a dilation -> [ReLU] -> BN -> conv3x3 (with bias)."""

    def __init__(self, in_channels: int, filters: int, rate: int, relu: bool) -> None:
        super().__init__()
        self.sep = SeparableConv2d(in_channels, filters, 3, dilation=rate)
        self.relu = relu
        self.bn = keras_bn(filters)
        self.conv = tf_same_conv2d(filters, filters, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.sep(x)
        if self.relu:  # a constructor flag, not data: traces to a fixed graph
            y = F.relu(y)
        out: torch.Tensor = self.conv(self.bn(y))
        return out


class DASPP(nn.Module):
    """Dilated separable ASPP of the MediaEval 2020 paper.

    x0 = separable 1x1 -> BN; x1..x3 = ``DASPPBranch`` at dilations 3, 6, 9;
    x4 = 2x2 average pool -> conv1x1 (16 filters) -> nearest upsampling x2;
    concat [input, x0, .., x4] -> conv1x1.
    """

    POOL_FILTERS = 16

    def __init__(self, in_channels: int, filters: int, *, relu: bool = False,
                 rates: Sequence[int] = (3, 6, 9)) -> None:
        super().__init__()
        self.sep0 = SeparableConv2d(in_channels, filters, 1)
        self.bn0 = keras_bn(filters)
        self.branches = nn.ModuleList(DASPPBranch(in_channels, filters, r, relu) for r in rates)
        self.pool_conv = nn.Conv2d(in_channels, self.POOL_FILTERS, 1)
        cat = in_channels + filters * (1 + len(rates)) + self.POOL_FILTERS
        self.project = nn.Conv2d(cat, filters, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.pool_conv(F.avg_pool2d(x, 2))
        pooled = F.interpolate(pooled, scale_factor=2.0, mode="nearest")
        parts = [x, self.bn0(self.sep0(x)), *(b(x) for b in self.branches), pooled]
        out: torch.Tensor = self.project(torch.cat(parts, dim=1))
        return out


class AttentionBlock(nn.Module):
    """attention(g, x) of the Keras code: no sigmoid, the gate multiplies ``x`` directly.

    g (encoder skip, twice x's size): BN -> ReLU -> conv3x3 -> 2x2 max-pool;
    x (decoder): BN -> ReLU -> conv3x3; add; BN -> ReLU -> conv3x3; times x.
    """

    def __init__(self, g_channels: int, x_channels: int) -> None:
        super().__init__()
        self.g_bn = keras_bn(g_channels)
        self.g_conv = tf_same_conv2d(g_channels, x_channels, 3)
        self.x_bn = keras_bn(x_channels)
        self.x_conv = tf_same_conv2d(x_channels, x_channels, 3)
        self.gc_bn = keras_bn(x_channels)
        self.gc_conv = tf_same_conv2d(x_channels, x_channels, 3)

    def forward(self, g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        g_pool = F.max_pool2d(self.g_conv(F.relu(self.g_bn(g))), 2)
        x_conv = self.x_conv(F.relu(self.x_bn(x)))
        gc = self.gc_conv(F.relu(self.gc_bn(g_pool + x_conv)))
        out: torch.Tensor = gc * x
        return out


ASPP_KINDS = ("aspp4", "aspp5", "sepconv", "daspp", "daspp_relu")


def _make_aspp(kind: str, in_channels: int, filters: int) -> nn.Module:
    if kind == "aspp4":
        return ASPP(in_channels, filters, (6, 12, 18, 1))
    if kind == "aspp5":
        return ASPP(in_channels, filters, (6, 12, 18, 1, 24))
    if kind == "sepconv":
        return ASPP(in_channels, filters, (6, 12, 18, 1, 24), separable=True)
    if kind in ("daspp", "daspp_relu"):
        return DASPP(in_channels, filters, relu=kind == "daspp_relu")
    raise ValueError(f"unknown ASPP kind {kind!r}; choose one of {', '.join(ASPP_KINDS)}")


class ResUNetPlusPlus(nn.Module):
    """ResUNet++ with a choice of ASPP (bridge and head). Returns logits (N, 1, H, W)."""

    def __init__(self, aspp: str = "aspp4", *, in_channels: int = 3,
                 filters: Sequence[int] = (16, 32, 64, 128, 256), name: str = "resunetpp") -> None:
        super().__init__()
        f = five_filters(filters)
        self.name = name
        self.in_channels = in_channels
        self.aspp_kind = aspp
        # 3 stride-2 stages; DASPP's 2x2 pool at the bridge needs one more factor of 2.
        self.size_multiple = 16 if aspp.startswith("daspp") else 8
        self.stem = StemBlock(in_channels, f[0])
        self.enc2 = ResidualBlock(f[0], f[1], stride=2)
        self.enc3 = ResidualBlock(f[1], f[2], stride=2)
        self.enc4 = ResidualBlock(f[2], f[3], stride=2)
        self.bridge = _make_aspp(aspp, f[3], f[4])
        self.att1 = AttentionBlock(f[2], f[4])
        self.dec1 = ResidualBlock(f[4] + f[2], f[3])
        self.att2 = AttentionBlock(f[1], f[3])
        self.dec2 = ResidualBlock(f[3] + f[1], f[2])
        self.att3 = AttentionBlock(f[0], f[2])
        self.dec3 = ResidualBlock(f[2] + f[0], f[1])
        self.head_aspp = _make_aspp(aspp, f[1], f[0])
        self.head = nn.Conv2d(f[0], 1, 1)

    @staticmethod
    def _up(x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=2.0, mode="nearest")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input_size(x, self.size_multiple, self.name, self.in_channels)
        c1 = self.stem(x)
        c2 = self.enc2(c1)
        c3 = self.enc3(c2)
        c4 = self.enc4(c3)
        b = self.bridge(c4)
        d = self.dec1(torch.cat([self._up(self.att1(c3, b)), c3], dim=1))
        d = self.dec2(torch.cat([self._up(self.att2(c2, d)), c2], dim=1))
        d = self.dec3(torch.cat([self._up(self.att3(c1, d)), c1], dim=1))
        logits: torch.Tensor = self.head(self.head_aspp(d))
        return logits


_VARIANTS = {
    "resunetpp": ("aspp4", "ResUNet++ (official Keras model): ASPP at dilations 6/12/18/1. "
                           "256x256 input, BGR/255.", _REFERENCE),
    "resunetpp_seed": ("aspp5", "ResUNet++ with a 5-branch ASPP (adds dilation 24); the "
                                "MediaEval 2020 'resunet++' model.", _REFERENCE_ME),
    "resunetpp_sepconv": ("sepconv", "ResUNet++ whose 5 ASPP branches are depth-wise separable "
                                     "convs (MediaEval 2020 'sepv_conv_resunet++').", _REFERENCE_ME),
    "resunetpp_daspp": ("daspp", "ResUNet++ with DASPP: separable dilations 3/6/9, 1x1 and an "
                                 "avg-pool branch, concatenated (MediaEval 2020 "
                                 "'dsapp_resunet++').", _REFERENCE_ME),
    "resunetpp_daspp_relu": ("daspp_relu", "As resunetpp_daspp with a ReLU after each dilated "
                                           "separable conv (MediaEval 2020 "
                                           "'dsapp_relu_resunet++').", _REFERENCE_ME),
}


def _register(name: str, aspp: str, description: str, reference: str) -> None:
    # Every variant trains by default as the MediaEval 2020 paper trained them (Nadam, mIoU).
    @register_model(name, preprocessing=KERAS_PREPROCESSING, description=description,
                    reference=reference, recipe="resunetpp_seed")
    def build(**cfg: Any) -> ResUNetPlusPlus:
        return ResUNetPlusPlus(aspp, name=name, **cfg)

    build.__name__ = build.__qualname__ = name


for _name, (_aspp, _desc, _ref) in _VARIANTS.items():
    _register(_name, _aspp, _desc, _ref)
