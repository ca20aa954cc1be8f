"""Res2Net-50 v1b (26w x 4s), the backbone of PraNet.

Module and parameter names follow the reference implementation (Gao et al., "Res2Net: A New
Multi-scale Backbone Architecture", TPAMI 2019; the ``Res2Net_v1b.py`` that PraNet ships) so
that its checkpoints load with ``strict=True`` without renaming a key. That is also why the
unused ImageNet classifier ``fc`` exists: the PraNet checkpoint contains it.

:class:`Res2Net` follows the encoder contract of :mod:`polypviewer.nets.encoder`:
:meth:`Res2Net.forward_features` returns the stem output and the four stage outputs;
``out_channels``, ``strides`` and ``output_stride`` describe them.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

__all__ = ["Bottle2neck", "Res2Net", "res2net50_v1b_26w_4s"]


class Bottle2neck(nn.Module):
    """Res2Net bottleneck: the 3x3 conv is split into ``scale`` groups of ``width`` channels
    that are processed hierarchically (split i sees split i-1's output)."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None, base_width: int = 26, scale: int = 4,
                 stype: str = "normal") -> None:
        super().__init__()
        if stype not in ("normal", "stage"):
            raise ValueError(f"stype must be 'normal' or 'stage', got {stype!r}")
        width = int(math.floor(planes * (base_width / 64.0)))
        self.conv1 = nn.Conv2d(inplanes, width * scale, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width * scale)
        self.nums = 1 if scale == 1 else scale - 1
        if stype == "stage":
            # The last split of a stage's first block skips the convs; pooling gives it the
            # same stride as the others.
            self.pool = nn.AvgPool2d(kernel_size=3, stride=stride, padding=1)
        self.convs = nn.ModuleList(
            nn.Conv2d(width, width, kernel_size=3, stride=stride, padding=1, bias=False)
            for _ in range(self.nums))
        self.bns = nn.ModuleList(nn.BatchNorm2d(width) for _ in range(self.nums))
        self.conv3 = nn.Conv2d(width * scale, planes * self.expansion, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stype = stype
        self.scale = scale
        self.width = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        spx = torch.split(out, self.width, 1)
        outs: list[torch.Tensor] = []
        sp = spx[0]
        # The loop bounds and the branch depend only on the configuration, never on data, so
        # the forward traces/exports to a static graph.
        for i in range(self.nums):
            sp = spx[i] if (i == 0 or self.stype == "stage") else sp + spx[i]
            sp = self.relu(self.bns[i](self.convs[i](sp)))
            outs.append(sp)
        if self.scale != 1:
            last = spx[self.nums]
            outs.append(self.pool(last) if self.stype == "stage" else last)
        out = self.bn3(self.conv3(torch.cat(outs, 1)))
        y: torch.Tensor = self.relu(out + residual)
        return y


class Res2Net(nn.Module):
    """Res2Net v1b: deep 3-conv stem and average-pool downsampling shortcuts."""

    # The encoder contract (nets/encoder.py): forward_features' maps are at these strides.
    strides: tuple[int, ...] = (4, 4, 8, 16, 32)
    output_stride = 32

    def __init__(self, layers: tuple[int, int, int, int] = (3, 4, 6, 3), *, base_width: int = 26,
                 scale: int = 4, num_classes: int = 1000) -> None:
        super().__init__()
        self.inplanes = 64
        self.base_width = base_width
        self.scale = scale
        self.conv1 = nn.Sequential(
            nn.Conv2d(3, 32, 3, 2, 1, bias=False),
            nn.BatchNorm2d(32),
            nn.ReLU(inplace=True),
            nn.Conv2d(32, 32, 3, 1, 1, bias=False),
            nn.BatchNorm2d(32),
            nn.ReLU(inplace=True),
            nn.Conv2d(32, 64, 3, 1, 1, bias=False),
        )
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(64, layers[0])
        self.layer2 = self._make_layer(128, layers[1], stride=2)
        self.layer3 = self._make_layer(256, layers[2], stride=2)
        self.layer4 = self._make_layer(512, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512 * Bottle2neck.expansion, num_classes)
        # (stem, layer1..layer4) channels of forward_features
        self.out_channels: tuple[int, ...] = (64, 256, 512, 1024, 2048)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def _make_layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * Bottle2neck.expansion:
            downsample = nn.Sequential(
                nn.AvgPool2d(kernel_size=stride, stride=stride, ceil_mode=True,
                             count_include_pad=False),
                nn.Conv2d(self.inplanes, planes * Bottle2neck.expansion, kernel_size=1,
                          stride=1, bias=False),
                nn.BatchNorm2d(planes * Bottle2neck.expansion),
            )
        layers = [Bottle2neck(self.inplanes, planes, stride, downsample=downsample,
                              stype="stage", base_width=self.base_width, scale=self.scale)]
        self.inplanes = planes * Bottle2neck.expansion
        layers += [Bottle2neck(self.inplanes, planes, base_width=self.base_width, scale=self.scale)
                   for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        """Stride-4 features (64 channels) after the stem and max-pool."""
        y: torch.Tensor = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return y

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``[stem, layer1, layer2, layer3, layer4]`` at strides 4, 4, 8, 16, 32."""
        x0 = self.stem(x)
        x1 = self.layer1(x0)
        x2 = self.layer2(x1)
        x3 = self.layer3(x2)
        x4 = self.layer4(x3)
        return [x0, x1, x2, x3, x4]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet class logits (N, num_classes)."""
        x = self.forward_features(x)[-1]
        logits: torch.Tensor = self.fc(torch.flatten(self.avgpool(x), 1))
        return logits


def res2net50_v1b_26w_4s(**kwargs: Any) -> Res2Net:
    """Res2Net-50 v1b, base width 26, scale 4 (randomly initialised; no download)."""
    return Res2Net((3, 4, 6, 3), base_width=26, scale=4, **kwargs)
