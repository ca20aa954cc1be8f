"""Every encoder keeps the contract of ``polypviewer.nets.encoder.Encoder``.

The test is parametrised over ``ENCODERS``; ``test_every_registered_encoder_is_tested``
fails when a registered model carries an encoder type that is not in that table, so a new
backbone is checked the day its model is registered.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

from polypviewer.nets import build_model, list_models
from polypviewer.nets.encoder import Encoder
from polypviewer.nets.lite_pranet import EfficientNetLite, EfficientNetLite0
from polypviewer.nets.res2net import res2net50_v1b_26w_4s

ENCODERS: dict[str, Callable[[], nn.Module]] = {
    "res2net50_v1b_26w_4s": res2net50_v1b_26w_4s,
    "efficientnet_lite0": EfficientNetLite0,
    "efficientnet_lite2": lambda: EfficientNetLite("lite2"),
}


@pytest.mark.parametrize("name", sorted(ENCODERS))
@pytest.mark.parametrize("size", [(64, 64), (64, 96)])
def test_features_have_the_declared_channels_and_strides(name, size):
    torch.manual_seed(0)
    enc = ENCODERS[name]().eval()
    assert isinstance(enc, Encoder)
    assert len(enc.out_channels) == len(enc.strides) >= 3
    assert list(enc.strides) == sorted(enc.strides) and enc.output_stride == enc.strides[-1]
    h, w = size
    with torch.no_grad():
        feats = enc.forward_features(torch.randn(2, 3, h, w))
    assert len(feats) == len(enc.out_channels)
    got = [tuple(f.shape) for f in feats]
    want = [(2, c, h // s, w // s) for c, s in zip(enc.out_channels, enc.strides, strict=True)]
    assert got == want
    assert all(torch.isfinite(f).all() for f in feats)


def test_every_registered_encoder_is_tested():
    tested = {type(ENCODERS[n]()) for n in ENCODERS}
    found: dict[str, set[type]] = {}
    for name in list_models():
        kinds = {type(m) for m in build_model(name).modules() if isinstance(m, Encoder)}
        if kinds:
            found[name] = kinds
    assert {"pranet", "lite_pranet"} <= set(found)  # the two encoder-decoder models
    untested = {n: k - tested for n, k in found.items() if k - tested}
    assert untested == {}, f"add these encoders to ENCODERS: {untested}"
