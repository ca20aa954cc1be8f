"""Every registered network passes the same checks (parametrised over ``list_models()``).

Adding a model: register it, then add its PyTorch parameter count to ``EXPECTED_PARAMS``
(and, if it was defined in Keras, its Keras "total params" to ``EXPECTED_KERAS_TOTAL``).
A registered model missing from the table fails ``test_parameter_count``, on purpose: the
count is the cheapest proof that the architecture is the one the paper describes.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from polypviewer.core.errors import PolypviewerError
from polypviewer.nets import UnknownModelError, build_model, get_spec, list_models
from polypviewer.nets.summary import count_parameters
from polypviewer.nets.weights import load_checkpoint, load_weights, save_checkpoint

# PyTorch parameter counts (trainable), counted by rebuilding the papers' reference code: PraNet
# (Fan et al., MICCAI 2020), ResUNet++ (Jha et al., ISM 2019), the MediaEval 2020 variants and
# U-Net (Ali et al., Depth-wise separable atrous convolution for polyps segmentation, MediaEval 2020).
EXPECTED_PARAMS = {
    "pranet": 32_547_319,
    "resunetpp": 4_062_993,
    "resunetpp_seed": 4_363_329,
    "resunetpp_sepconv": 3_039_329,
    "resunetpp_daspp": 5_017_313,
    "resunetpp_daspp_relu": 5_017_313,
    "unet": 3_585_027,
    "lite_pranet": 3_986_791,  # EfficientNet-Lite0 encoder (no classifier) + PraNet head, channel 32 / RA 64
    "lite_pranet_l2": 5_396_647,  # the same head on EfficientNet-Lite2 (21 blocks, 48 / 120 / 352 ch taps)
}
# Keras "total params" (trainable + BN moving statistics) of the Keras-defined models.
EXPECTED_KERAS_TOTAL = {
    "resunetpp": 4_070_385,
    "resunetpp_seed": 4_371_265,
    "resunetpp_sepconv": 3_047_265,
    "resunetpp_daspp": 5_024_705,
    "resunetpp_daspp_relu": 5_024_705,
    "unet": 3_588_997,
}
# Parameters a model owns but its forward never uses (kept so reference checkpoints load).
UNUSED_PARAMS = {"pranet": ("resnet.fc.",)}
# Small test input (H, W); every model here accepts multiples of 32. (PraNet's non-square
# inputs are checked in test_pranet.py.)
SIZE = (64, 64)

MODELS = list_models()



@pytest.fixture(scope="module")
def built() -> dict[str, nn.Module]:
    return {}


def get(built: dict[str, nn.Module], name: str) -> nn.Module:
    if name not in built:
        torch.manual_seed(0)
        built[name] = build_model(name)
    return built[name]


def probe(n: int = 2) -> torch.Tensor:
    h, w = SIZE
    t = torch.linspace(-2, 2, n * 3 * h * w)
    return torch.sin(t * 37.0).reshape(n, 3, h, w)


@pytest.mark.parametrize("name", MODELS)
def test_forward_gives_one_logit_map_per_image(built, name):
    model = get(built, name).eval()
    with torch.no_grad():
        out = model(probe())
    logits = get_spec(name).select(out)
    assert tuple(logits.shape) == (2, 1, *SIZE)
    assert logits.dtype == torch.float32 and torch.isfinite(logits).all()
    maps = out if isinstance(out, (tuple, list)) else (out,)
    assert all(tuple(m.shape) == (2, 1, *SIZE) for m in maps)


@pytest.mark.parametrize("name", MODELS)
def test_forward_returns_logits_not_probabilities(built, name):
    """Shift what the last convolution computes by +50: a logit map follows it far out of
    [0, 1]; a sigmoid (or any squashing) after it could not leave [0, 1]."""
    model = get(built, name).eval()
    ran: list[nn.Module] = []
    hooks = [m.register_forward_hook(lambda mod, i, o: ran.append(mod))
             for m in model.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        plain = get_spec(name).select(model(probe()))
    for h in hooks:
        h.remove()
    shift = ran[-1].register_forward_hook(lambda mod, i, o: o + 50.0)
    try:
        with torch.no_grad():
            shifted = get_spec(name).select(model(probe()))
    finally:
        shift.remove()
    assert shifted.min() > 1.0, f"{name}: the output stays inside [0, 1] (probabilities, not logits?)"
    assert torch.allclose(shifted - plain, torch.full_like(plain, 50.0), atol=1.0)  # the head is affine there


@pytest.mark.parametrize("name", MODELS)
def test_backward_reaches_every_used_parameter(built, name):
    model = get(built, name).train()
    model.zero_grad(set_to_none=True)
    out = model(probe())
    maps = out if isinstance(out, (tuple, list)) else (out,)
    target = (probe()[:, :1] > 0).float()
    loss = sum(nn.functional.binary_cross_entropy_with_logits(m, target) for m in maps)
    loss.backward()
    unused = UNUSED_PARAMS.get(name, ())
    no_grad = [n for n, p in model.named_parameters()
               if p.requires_grad and p.grad is None and not n.startswith(unused)]
    assert no_grad == [], f"{name}: no gradient reaches {no_grad[:5]} (declare truly unused ones in UNUSED_PARAMS)"
    bad = [n for n, p in model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
    assert bad == []
    assert math.isfinite(loss.item())
    model.zero_grad(set_to_none=True)


@pytest.mark.parametrize("name", MODELS)
def test_parameter_count(built, name):
    assert name in EXPECTED_PARAMS, (
        f"registered model {name!r} has no entry in tests/nets/test_models.py::EXPECTED_PARAMS; "
        "add its parameter count (from the paper or reference implementation)")
    trainable, keras_total = count_parameters(get(built, name))
    assert trainable == EXPECTED_PARAMS[name]
    if name in EXPECTED_KERAS_TOTAL:
        assert keras_total == EXPECTED_KERAS_TOTAL[name]


@pytest.mark.parametrize("name", MODELS)
def test_save_load_round_trip_gives_identical_outputs(built, name, tmp_path):
    model = get(built, name).eval()
    with torch.no_grad():  # make BN statistics non-default so a lost buffer would show
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_var is not None:
                m.running_var.fill_(1.5)
    path = tmp_path / f"{name}.safetensors"
    digest = save_checkpoint(path, model, model_name=name, meta={"test": True})
    ckpt = load_checkpoint(path)
    assert ckpt.model_name == name and ckpt.sha256 == digest
    assert ckpt.preprocessing == get_spec(name).preprocessing
    torch.manual_seed(1)  # a different random init
    fresh = build_model(name).eval()
    load_weights(fresh, ckpt, name)
    with torch.no_grad():
        a, b = get_spec(name).select(model(probe(1))), get_spec(name).select(fresh(probe(1)))
    assert torch.equal(a, b)


def test_count_parameters_splits_trainable_and_keras_total():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 1, 1))
    # conv 3*4*9+4 = 112, BN 4+4 (+ 4+4 moving statistics), conv 4+1 = 5
    assert count_parameters(net) == (125, 133)
    net[0].requires_grad_(False)
    assert count_parameters(net) == (13, 133)  # frozen weights still count in the total


def test_an_unknown_model_is_one_line_naming_the_known_ones():
    for call in (get_spec, build_model):
        with pytest.raises(UnknownModelError) as err:
            call("nope")
        assert isinstance(err.value, PolypviewerError)  # the CLI prints it, the GUI shows it
        assert str(err.value) == f"unknown model 'nope'; choose one of: {', '.join(list_models())}"
