"""PraNet: parallel reverse attention network for polyp segmentation.

Fan et al., "PraNet: Parallel Reverse Attention Network for Polyp Segmentation", MICCAI 2020.
Module names, the order of operations and every resize (mode, ``align_corners``, scale
factors) follow the authors' ``lib/PraNet_Res2Net.py`` so that the official ``PraNet-19.pth``
loads with ``strict=True`` unchanged and gives the same logits. ``forward`` returns the four
deep-supervision logit maps ``(map5, map4, map3, map2)`` at the input size; inference uses
``map2`` (the registry's ``select``). Inputs must have sides that are multiples of 32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from polypviewer.nets.registry import IMAGENET_MEAN, IMAGENET_STD, Preprocessing, register_model
from polypviewer.nets.res2net import Res2Net, res2net50_v1b_26w_4s

__all__ = ["BasicConv2d", "RFB", "PartialDecoder", "PraNet", "pranet", "PRANET_PREPROCESSING"]

PRANET_PREPROCESSING = Preprocessing(352, "RGB", IMAGENET_MEAN, IMAGENET_STD)


class BasicConv2d(nn.Module):
    """Bias-free conv + BN. The ReLU is owned but deliberately NOT applied (as in the
    reference: the trained weights expect the linear output)."""

    def __init__(self, in_planes: int, out_planes: int, kernel_size: int | tuple[int, int],
                 stride: int = 1, padding: int | tuple[int, int] = 0, dilation: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_planes, out_planes, kernel_size=kernel_size, stride=stride,
                              padding=padding, dilation=dilation, bias=False)
        self.bn = nn.BatchNorm2d(out_planes)
        self.relu = nn.ReLU(inplace=True)  # unused in forward; kept for layout parity

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = self.bn(self.conv(x))
        return y


def _rfb_branch(cin: int, cout: int, n: int) -> nn.Sequential:
    h = n // 2
    return nn.Sequential(
        BasicConv2d(cin, cout, 1),
        BasicConv2d(cout, cout, kernel_size=(1, n), padding=(0, h)),
        BasicConv2d(cout, cout, kernel_size=(n, 1), padding=(h, 0)),
        BasicConv2d(cout, cout, 3, padding=n, dilation=n),
    )


class RFB(nn.Module):
    """Receptive-field block ("RFB_modified"): four branches of growing receptive field,
    fused by a 3x3 conv, plus a 1x1 residual, then ReLU."""

    def __init__(self, in_channel: int, out_channel: int) -> None:
        super().__init__()
        self.relu = nn.ReLU(True)
        self.branch0 = nn.Sequential(BasicConv2d(in_channel, out_channel, 1))
        self.branch1 = _rfb_branch(in_channel, out_channel, 3)
        self.branch2 = _rfb_branch(in_channel, out_channel, 5)
        self.branch3 = _rfb_branch(in_channel, out_channel, 7)
        self.conv_cat = BasicConv2d(4 * out_channel, out_channel, 3, padding=1)
        self.conv_res = BasicConv2d(in_channel, out_channel, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_cat = self.conv_cat(torch.cat(
            (self.branch0(x), self.branch1(x), self.branch2(x), self.branch3(x)), 1))
        y: torch.Tensor = self.relu(x_cat + self.conv_res(x))
        return y


class PartialDecoder(nn.Module):
    """Dense aggregation of the three deepest RFB outputs into the coarse map S5 (stride 8).
    The reference calls the module ``aggregation``."""

    def __init__(self, channel: int) -> None:
        super().__init__()
        self.relu = nn.ReLU(True)
        self.upsample = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)
        self.conv_upsample1 = BasicConv2d(channel, channel, 3, padding=1)
        self.conv_upsample2 = BasicConv2d(channel, channel, 3, padding=1)
        self.conv_upsample3 = BasicConv2d(channel, channel, 3, padding=1)
        self.conv_upsample4 = BasicConv2d(channel, channel, 3, padding=1)
        self.conv_upsample5 = BasicConv2d(2 * channel, 2 * channel, 3, padding=1)
        self.conv_concat2 = BasicConv2d(2 * channel, 2 * channel, 3, padding=1)
        self.conv_concat3 = BasicConv2d(3 * channel, 3 * channel, 3, padding=1)
        self.conv4 = BasicConv2d(3 * channel, 3 * channel, 3, padding=1)
        self.conv5 = nn.Conv2d(3 * channel, 1, 1)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, x3: torch.Tensor) -> torch.Tensor:
        """``x1`` stride 32, ``x2`` stride 16, ``x3`` stride 8 -> logits at stride 8."""
        up = self.upsample
        x2_1 = self.conv_upsample1(up(x1)) * x2
        x3_1 = self.conv_upsample2(up(up(x1))) * self.conv_upsample3(up(x2)) * x3
        x2_2 = self.conv_concat2(torch.cat((x2_1, self.conv_upsample4(up(x1))), 1))
        x3_2 = self.conv_concat3(torch.cat((x3_1, self.conv_upsample5(up(x2_2))), 1))
        y: torch.Tensor = self.conv5(self.conv4(x3_2))
        return y


def _resize(x: torch.Tensor, scale: float) -> torch.Tensor:
    # Scale factors (not target sizes), bilinear, align_corners=False: exactly the reference.
    return F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)


class PraNet(nn.Module):
    """PraNet with a Res2Net-50 v1b 26w x 4s backbone (``resnet``)."""

    def __init__(self, channel: int = 32, backbone: Res2Net | None = None) -> None:
        super().__init__()
        self.resnet = backbone if backbone is not None else res2net50_v1b_26w_4s()
        self.rfb2_1 = RFB(512, channel)
        self.rfb3_1 = RFB(1024, channel)
        self.rfb4_1 = RFB(2048, channel)
        self.agg1 = PartialDecoder(channel)
        self.ra4_conv1 = BasicConv2d(2048, 256, kernel_size=1)
        self.ra4_conv2 = BasicConv2d(256, 256, kernel_size=5, padding=2)
        self.ra4_conv3 = BasicConv2d(256, 256, kernel_size=5, padding=2)
        self.ra4_conv4 = BasicConv2d(256, 256, kernel_size=5, padding=2)
        self.ra4_conv5 = BasicConv2d(256, 1, kernel_size=1)
        self.ra3_conv1 = BasicConv2d(1024, 64, kernel_size=1)
        self.ra3_conv2 = BasicConv2d(64, 64, kernel_size=3, padding=1)
        self.ra3_conv3 = BasicConv2d(64, 64, kernel_size=3, padding=1)
        self.ra3_conv4 = BasicConv2d(64, 1, kernel_size=3, padding=1)
        self.ra2_conv1 = BasicConv2d(512, 64, kernel_size=1)
        self.ra2_conv2 = BasicConv2d(64, 64, kernel_size=3, padding=1)
        self.ra2_conv3 = BasicConv2d(64, 64, kernel_size=3, padding=1)
        self.ra2_conv4 = BasicConv2d(64, 1, kernel_size=3, padding=1)

    @staticmethod
    def _reverse_attention(feat: torch.Tensor, prior: torch.Tensor,
                           convs: tuple[nn.Module, ...]) -> torch.Tensor:
        """Erase what ``prior`` already found (weight 1 - sigmoid), run the head (ReLU after
        every conv but the first and the last) and add the prior back (residual refinement)."""
        x = feat * (1.0 - torch.sigmoid(prior))  # broadcast over channels = reference's expand
        x = convs[0](x)
        for conv in convs[1:-1]:
            x = F.relu(conv(x))
        out: torch.Tensor = convs[-1](x) + prior
        return out

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``x`` (N, 3, H, W), H and W multiples of 32 -> (map5, map4, map3, map2) logits,
        each (N, 1, H, W)."""
        h, w = x.shape[-2:]
        # Checked in eager mode only: a tracer would bake the check in as a constant (and warn).
        if not torch.jit.is_tracing() and (h % 32 or w % 32):
            raise ValueError(f"PraNet needs sides that are multiples of 32: got {h}x{w}; "
                             "resize or pad the input (e.g. to 352x352)")
        _, x1, x2, x3, x4 = self.resnet.forward_features(x)
        del x1  # layer1 only feeds layer2; PraNet's heads start at layer2
        s5 = self.agg1(self.rfb4_1(x4), self.rfb3_1(x3), self.rfb2_1(x2))  # stride 8
        map5 = _resize(s5, 8)

        s4 = self._reverse_attention(x4, _resize(s5, 0.25), (
            self.ra4_conv1, self.ra4_conv2, self.ra4_conv3, self.ra4_conv4, self.ra4_conv5))
        map4 = _resize(s4, 32)

        s3 = self._reverse_attention(x3, _resize(s4, 2), (
            self.ra3_conv1, self.ra3_conv2, self.ra3_conv3, self.ra3_conv4))
        map3 = _resize(s3, 16)

        s2 = self._reverse_attention(x2, _resize(s3, 2), (
            self.ra2_conv1, self.ra2_conv2, self.ra2_conv3, self.ra2_conv4))
        map2 = _resize(s2, 8)
        return map5, map4, map3, map2


def _select_map2(out: tuple[torch.Tensor, ...] | list[torch.Tensor]) -> torch.Tensor:
    return out[-1]


@register_model(
    "pranet",
    preprocessing=PRANET_PREPROCESSING,
    description="PraNet (Res2Net-50 v1b 26w_4s backbone); loads the official PraNet-19.pth",
    reference="Fan et al., PraNet: Parallel Reverse Attention Network for Polyp Segmentation, "
              "MICCAI 2020; github.com/DengPingFan/PraNet",
    select=_select_map2,
    recipe="pranet",
)
def pranet(*, channel: int = 32) -> PraNet:
    """Build PraNet (random initialisation; load weights with ``nets.weights``)."""
    return PraNet(channel=channel)
