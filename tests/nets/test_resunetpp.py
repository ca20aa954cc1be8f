"""ResUNet++ family and U-Net: the specifics the generic model tests cannot see.

Numbers are those of the papers' Keras reference code, rebuilt (Jha et al., ResUNet++, ISM 2019;
Ali et al., MediaEval 2020, for the variants and U-Net): PyTorch
parameter counts, Keras "total" (= trainable + BN moving mean/variance) and GFLOPs at
256x256 measured with FlopCounterMode (FLOPs = 2 * MACs).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from polypviewer.core.errors import PolypviewerError
from polypviewer.nets import build_model, get_spec, list_models
from polypviewer.nets.resunetpp import ASPP, DASPP, InputSizeError, PadConv2d, SeparableConv2d, tf_same_conv2d
from polypviewer.nets.unet import TFSameConvTranspose2d

# name: (trainable, Keras total, GFLOPs @256 or None where the spec gives none)
EXPECTED = {
    "resunetpp": (4_062_993, 4_070_385, None),
    "resunetpp_seed": (4_363_329, 4_371_265, 32.6),
    "resunetpp_sepconv": (3_039_329, 3_047_265, 27.4),
    "resunetpp_daspp": (5_017_313, 5_024_705, 32.4),
    "resunetpp_daspp_relu": (5_017_313, 5_024_705, 32.4),
    "unet": (3_585_027, 3_588_997, 12.0),
}



def _meta_model(name: str) -> nn.Module:
    # Shapes only: counting parameters and FLOPs allocates and computes nothing.
    with torch.device("meta"):
        return build_model(name)


def test_all_registered_with_keras_preprocessing():
    assert set(EXPECTED) <= set(list_models())
    for name in EXPECTED:
        spec = get_spec(name)
        p = spec.preprocessing
        assert (p.input_size, p.color_order, p.mean, p.std) == (256, "BGR", (0.0,) * 3, (1.0,) * 3)
        assert spec.description and spec.reference


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_parameter_counts_match_keras(name):
    trainable, keras_total, _ = EXPECTED[name]
    model = _meta_model(name)
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params == trainable
    assert all(p.requires_grad for p in model.parameters())
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert n_params + sum(2 * bn.num_features for bn in bns) == keras_total
    # Keras BatchNormalization defaults: eps 1e-3, momentum 0.99 (= PyTorch 0.01)
    assert bns and all(bn.eps == 1e-3 and bn.momentum == pytest.approx(0.01) for bn in bns)


@pytest.mark.parametrize("name", [n for n, e in sorted(EXPECTED.items()) if e[2]])
def test_gflops_at_256(name):
    model = _meta_model(name)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        out = model(torch.empty(1, 3, 256, 256, device="meta"))
    assert tuple(out.shape) == (1, 1, 256, 256)
    assert counter.get_total_flops() / 1e9 == pytest.approx(EXPECTED[name][2], rel=0.02)


def test_tf_same_stride2_conv_pads_zero_before_one_after():
    x = torch.arange(36, dtype=torch.float32).reshape(1, 1, 6, 6)
    conv = tf_same_conv2d(1, 1, 3, stride=2, bias=False)
    assert isinstance(conv, PadConv2d)
    with torch.no_grad():
        conv.conv.weight.copy_(torch.arange(9, dtype=torch.float32).reshape(1, 1, 3, 3))
        got = conv(x)[0, 0].numpy()
    # TF: out[i, j] = sum_k x[2i + ki, 2j + kj] * w[ki, kj], zero past the bottom/right edge
    xp = np.pad(x[0, 0].numpy(), ((0, 1), (0, 1)))
    w = conv.conv.weight[0, 0].detach().numpy()
    want = np.array([[(xp[2 * i:2 * i + 3, 2 * j:2 * j + 3] * w).sum() for j in range(3)]
                     for i in range(3)])
    np.testing.assert_allclose(got, want)
    torch_style = F.conv2d(x, conv.conv.weight, stride=2, padding=1)[0, 0].detach().numpy()
    assert not np.allclose(torch_style, want)  # PyTorch's symmetric padding is a shifted grid
    # stride 1 and 1x1 convs: TF 'same' is the symmetric padding, dilation included
    dil = tf_same_conv2d(2, 3, 3, dilation=6)
    assert type(dil) is nn.Conv2d and dil.padding == (6, 6)
    assert tuple(dil(torch.zeros(1, 2, 16, 16)).shape) == (1, 3, 16, 16)
    assert type(tf_same_conv2d(2, 3, 1, stride=2)) is nn.Conv2d


def test_tf_same_transposed_conv_is_adjoint_of_same_conv():
    # Keras Conv2DTranspose is the gradient of a 'same' stride-2 conv: <conv(x), y> = <x, convT(y)>
    torch.manual_seed(0)
    conv = tf_same_conv2d(3, 4, 3, stride=2, bias=False)
    up = TFSameConvTranspose2d(4, 3)
    with torch.no_grad():
        up.weight.copy_(conv.conv.weight)
        up.bias.zero_()
    x = torch.randn(2, 3, 8, 10, requires_grad=True)
    y = torch.randn(2, 4, 4, 5)
    (conv(x) * y).sum().backward()
    got = up(y)
    assert got.shape == x.shape
    assert torch.allclose(got, x.grad, atol=1e-5)


def test_sepconv_variant_uses_depthwise_separable_branches():
    def depthwise(m: nn.Module) -> list[nn.Conv2d]:
        return [c for c in m.modules() if isinstance(c, nn.Conv2d) and c.groups > 1
                and c.groups == c.in_channels]

    sep = _meta_model("resunetpp_sepconv")
    for aspp in (sep.bridge, sep.head_aspp):
        assert isinstance(aspp, ASPP) and len(aspp.convs) == 5
        assert all(isinstance(c, SeparableConv2d) for c in aspp.convs)
        assert [c.depthwise.dilation[0] for c in aspp.convs] == [6, 12, 18, 1, 24]
        assert all(c.depthwise.bias is None and c.pointwise.bias is not None for c in aspp.convs)
    assert len(depthwise(sep)) == 10
    for plain in ("resunetpp", "resunetpp_seed"):
        assert depthwise(_meta_model(plain)) == []
    assert [c.dilation[0] for c in _meta_model("resunetpp").bridge.convs] == [6, 12, 18, 1]
    assert [c.dilation[0] for c in _meta_model("resunetpp_seed").bridge.convs] == [6, 12, 18, 1, 24]


def test_daspp_has_avgpool_branch():
    model = _meta_model("resunetpp_daspp")
    assert isinstance(model.bridge, DASPP) and isinstance(model.head_aspp, DASPP)
    assert model.bridge.pool_conv.out_channels == 16
    assert [b.sep.depthwise.dilation[0] for b in model.bridge.branches] == [3, 6, 9]
    # the pooled branch reaches the output: silencing its conv changes the result
    torch.manual_seed(0)
    daspp = DASPP(4, 8).eval()
    x = torch.randn(1, 4, 8, 8)
    with torch.no_grad():
        full = daspp(x)
        daspp.pool_conv.weight.zero_()
        daspp.pool_conv.bias.zero_()
        assert not torch.allclose(full, daspp(x))


def test_daspp_relu_differs_only_by_relus():
    torch.manual_seed(0)
    plain = build_model("resunetpp_daspp").eval()
    relu = build_model("resunetpp_daspp_relu").eval()
    relu.load_state_dict(plain.state_dict(), strict=True)  # same tensors, same names
    assert not any(b.relu for b in plain.bridge.branches)
    assert all(b.relu for b in relu.bridge.branches) and all(b.relu for b in relu.head_aspp.branches)
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert not torch.allclose(plain(x), relu(x))
        # with the ReLU, the BN input of each dilated branch is non-negative
        seen = []
        relu.bridge.branches[0].bn.register_forward_hook(lambda m, i, o: seen.append(i[0]))
        relu(x)
        assert seen and float(seen[0].min()) >= 0.0


@pytest.mark.parametrize("name,bad,multiple", [("resunetpp", (60, 64), 8),
                                               ("resunetpp_daspp", (64, 72), 16),
                                               ("unet", (40, 48), 16)])
def test_input_size_must_be_a_multiple(name, bad, multiple):
    model = build_model(name).eval()
    assert model.size_multiple == multiple
    with pytest.raises(InputSizeError, match=f"multiples of {multiple}.*{bad[0]}x{bad[1]}") as err:
        model(torch.zeros(1, 3, *bad))
    assert isinstance(err.value, PolypviewerError) and "\n" not in str(err.value)
    with pytest.raises(InputSizeError, match=r"\(N, 3, H, W\)"):
        model(torch.zeros(1, 1, 64, 64))


def test_unet_head_is_bn_logits():
    model = build_model("unet").eval()
    with torch.no_grad():
        model.head_bn.bias.fill_(-3.0)  # logits can be negative: no sigmoid in the module
        out = model(torch.rand(1, 3, 32, 32))
    assert out.shape == (1, 1, 32, 32) and float(out.min()) < 0.0


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_info_summary_shows_the_same_numbers(name):
    from polypviewer.nets.summary import model_summary

    trainable, keras_total, gflops = EXPECTED[name]
    info = model_summary(name, with_flops=gflops is not None)
    assert (info["params"], info["keras_total_params"], info["input_size"]) == (
        trainable, keras_total, 256)
    if gflops is not None:
        assert info["gflops"] == pytest.approx(gflops, rel=0.02)


@pytest.mark.parametrize("name,foldable", [("resunetpp", 22), ("resunetpp_daspp_relu", 16),
                                           ("unet", 21)])
def test_fx_traceable_and_every_conv_bn_pair_folds(name, foldable):
    # Every BN that directly follows a conv (stem, shortcuts, the conv in front of a residual
    # block's second BN, ASPP branches; all of U-Net's) must fold: asymmetric 'same' padding
    # is a separate ZeroPad2d, so fx sees plain nn.Conv2d modules. Pre-activation BNs cannot.
    with warnings.catch_warnings():  # torch's own module uses deprecated torch.jit on import
        warnings.simplefilter("ignore", DeprecationWarning)
        from torch.fx.experimental.optimization import fuse

    torch.manual_seed(0)
    model = build_model(name).eval()
    with torch.no_grad():
        for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
            bn.running_mean.normal_(0.0, 0.1)
            bn.running_var.uniform_(0.5, 1.5)
            bn.weight.uniform_(0.5, 1.5)
    fused = fuse(model, inplace=False)
    count = lambda m: sum(isinstance(b, nn.BatchNorm2d) for b in m.modules())  # noqa: E731
    assert count(model) - count(fused) == foldable
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(fused(x), model(x), atol=1e-5)
