"""The U-Net baseline of the MediaEval 2020 ResUNet++ paper (Keras ``unet.py`` of
DebeshJha/ResUNetPlusPlus), layer for layer so Keras weights port unchanged.

Blocks of two conv3x3 -> BN -> ReLU at 16, 32, 64, 128 with 2x2 max-pooling, a bridge of two
such blocks at 256 (four convs), a decoder whose transposed convs (3x3, stride 2, TF 'same')
all have 128 filters, and a head conv1x1 -> BN. ``forward`` returns the head's BN output as
logits (N, 1, H, W); the Keras sigmoid is left to inference and the losses.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from polypviewer.nets.registry import register_model
from polypviewer.nets.resunetpp import KERAS_PREPROCESSING, check_input_size, five_filters, keras_bn, tf_same_conv2d

__all__ = ["UNet", "TFSameConvTranspose2d"]


class TFSameConvTranspose2d(nn.ConvTranspose2d):
    """Keras ``Conv2DTranspose(padding="same", strides=2)``: output exactly 2x the input.

    It is the transpose of a TF 'same' stride-2 conv, which pads 0 before and 1 after; so
    the full transposed output (2n + 1 for a 3x3 kernel) is cropped at the END. PyTorch's
    ``padding=1, output_padding=1`` crops one at the start instead: a one-pixel shift.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3,
                 stride: int = 2) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=0)
        total = max(kernel_size - stride, 0)
        self.crop_before = total // 2  # TF puts the odd pixel after

    # Ignored [override]: it takes no output_size, the output is always exactly stride x the input.
    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        h, w = x.shape[-2] * self.stride[0], x.shape[-1] * self.stride[1]
        y = super().forward(x)
        b = self.crop_before
        return y[:, :, b:b + h, b:b + w]


class ConvBlock(nn.Module):
    """Two conv3x3 -> BN -> ReLU."""

    def __init__(self, in_channels: int, filters: int) -> None:
        super().__init__()
        self.conv1 = tf_same_conv2d(in_channels, filters, 3)
        self.bn1 = keras_bn(filters)
        self.conv2 = tf_same_conv2d(filters, filters, 3)
        self.bn2 = keras_bn(filters)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(x)))


class UNet(nn.Module):
    """U-Net baseline; input H, W multiples of 16 (four 2x2 max-pools)."""

    size_multiple = 16

    def __init__(self, *, in_channels: int = 3, filters: Sequence[int] = (16, 32, 64, 128, 256),
                 up_filters: int = 128, name: str = "unet") -> None:
        super().__init__()
        f = five_filters(filters)
        self.name = name
        self.in_channels = in_channels
        self.enc1 = ConvBlock(in_channels, f[0])
        self.enc2 = ConvBlock(f[0], f[1])
        self.enc3 = ConvBlock(f[1], f[2])
        self.enc4 = ConvBlock(f[2], f[3])
        self.bridge1 = ConvBlock(f[3], f[4])
        self.bridge2 = ConvBlock(f[4], f[4])
        # Keras creates each transposed conv right before its decoder block.
        self.up1 = TFSameConvTranspose2d(f[4], up_filters)
        self.dec1 = ConvBlock(up_filters + f[3], f[3])
        self.up2 = TFSameConvTranspose2d(f[3], up_filters)
        self.dec2 = ConvBlock(up_filters + f[2], f[2])
        self.up3 = TFSameConvTranspose2d(f[2], up_filters)
        self.dec3 = ConvBlock(up_filters + f[1], f[1])
        self.up4 = TFSameConvTranspose2d(f[1], up_filters)
        self.dec4 = ConvBlock(up_filters + f[0], f[0])
        self.head = nn.Conv2d(f[0], 1, 1)
        self.head_bn = keras_bn(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input_size(x, self.size_multiple, self.name, self.in_channels)
        c1 = self.enc1(x)
        c2 = self.enc2(F.max_pool2d(c1, 2))
        c3 = self.enc3(F.max_pool2d(c2, 2))
        c4 = self.enc4(F.max_pool2d(c3, 2))
        b = self.bridge2(self.bridge1(F.max_pool2d(c4, 2)))
        d = self.dec1(torch.cat([self.up1(b), c4], dim=1))
        d = self.dec2(torch.cat([self.up2(d), c3], dim=1))
        d = self.dec3(torch.cat([self.up3(d), c2], dim=1))
        d = self.dec4(torch.cat([self.up4(d), c1], dim=1))
        logits: torch.Tensor = self.head_bn(self.head(d))
        return logits


@register_model("unet", preprocessing=KERAS_PREPROCESSING,
                description="U-Net baseline of the MediaEval 2020 ResUNet++ paper: 16..256 "
                            "filters, 128-filter transposed convs, 256x256 input, BGR/255.",
                reference="Ali et al., MediaEval 2020; Ronneberger et al., MICCAI 2015; "
                          "github.com/DebeshJha/ResUNetPlusPlus (unet.py)",
                recipe="resunetpp_seed")  # the baseline is trained like the paper's ResUNet++
def unet(**cfg: Any) -> UNet:
    return UNet(**cfg)
