"""PraNet: the official checkpoint layout loads strictly and the forward matches the reference.

The golden numbers below were produced by running the authors' code
(DengPingFan/PraNet ``lib/PraNet_Res2Net.py`` + ``lib/Res2Net_v1b.py``) with the deterministic
weights and input built here; our module gave bit-identical maps. Each of these mistakes
moves a golden number by more than 0.05 (the tolerance is 1e-4): align_corners flipped in
either resize, a ReLU in BasicConv2d, attention instead of reverse attention, no residual
prior, a missing ReLU in a head.
"""

from __future__ import annotations

import math

import pytest
import torch

from polypviewer.nets import build_model, get_spec
from polypviewer.nets.summary import count_parameters, gflops
from polypviewer.nets.weights import Checkpoint, load_weights

from ..conftest import SHARED_DATA  # where ../shared/data is (tests/conftest.py, the one place)

KEYS_FILE = SHARED_DATA.parent / "reference" / "pranet_official_state_dict_keys.txt"

# (mean, std) of map5, map4, map3, map2 and map2 at a few pixels, from the reference code.
GOLDEN_MEAN = (-0.086447, 0.025543, 0.054380, -0.151655)
GOLDEN_STD = (0.276180, 0.161467, 0.159980, 0.227952)
GOLDEN_PIXELS = {(0, 0): -0.161733, (10, 20): -0.300068, (31, 47): -0.436682,
                 (40, 80): -0.040408, (63, 95): 0.199153, (5, 90): -0.020013}


def official_layout() -> dict[str, tuple[int, ...]]:
    if not KEYS_FILE.is_file():
        pytest.skip(f"official key list not found at {KEYS_FILE} (it lives in ../shared/reference)")
    shapes = {}
    for line in KEYS_FILE.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, shape = line.split("\t")
            shapes[key] = tuple(int(s) for s in shape.strip("()").split(",") if s.strip())
    return shapes



def hash_noise(n: int, seed: int) -> torch.Tensor:
    """Uniform [-1, 1) noise from an integer hash: exact on every machine, no RNG involved."""
    m = 4294967296
    h = (torch.arange(n, dtype=torch.int64) * 2654435761 + seed * 97531 + 12345) % m
    for _ in range(2):  # every product stays below 2**59: no int64 overflow
        h = ((h >> 16) ^ h) * 0x45D9F3B % m
    h = (h >> 16) ^ h
    return h.to(torch.float64) / 2147483648.0 - 1.0


_POOL = 2_097_169  # > the largest tensor (resnet.fc.weight, 2,048,000 values)


def _window(pool: torch.Tensor, start: int, n: int) -> torch.Tensor:
    start %= pool.numel()
    head = pool[start:start + n]
    return head if head.numel() == n else torch.cat((head, pool[:n - head.numel()]))


def formula_state_dict(shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    """Deterministic weights (windows of one hash-noise pool, keys in sorted order) with
    magnitudes that keep activations sane: fan-in scaled convs, BN near identity."""
    pool = hash_noise(_POOL, 0)
    sd = {}
    for i, (key, shape) in enumerate(sorted(shapes.items())):
        n = math.prod(shape)
        if key.endswith("num_batches_tracked"):
            sd[key] = torch.tensor(0, dtype=torch.long)
            continue
        noise = _window(pool, i * 104_729, n)
        if key.endswith("running_var"):
            v = 1.0 + 0.25 * noise
        elif key.endswith("running_mean"):
            v = 0.05 * noise
        elif key.endswith("bias"):
            v = 0.02 * noise
        elif len(shape) == 1:  # BN weight
            v = 1.0 + 0.1 * noise
        else:
            v = noise * math.sqrt(3.0 / (n // shape[0]))
        sd[key] = v.reshape(shape).float()
    return sd


def formula_input() -> torch.Tensor:
    return hash_noise(3 * 64 * 96, 10_000).reshape(1, 3, 64, 96).float()


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return build_model("pranet").eval()


def test_state_dict_layout_is_the_official_one(model):
    expected = official_layout()
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert len(expected) == 922
    assert sorted(set(ours) ^ set(expected)) == []
    assert {k: s for k, s in ours.items() if expected[k] != s} == {}
    assert count_parameters(model)[0] == 32_547_319
    fc = sum(p.numel() for n, p in model.named_parameters() if n.startswith("resnet.fc."))
    assert count_parameters(model)[0] - fc == 30_498_319


def test_official_layout_loads_strictly_and_gives_reference_maps(model):
    # A state_dict with exactly the official names and shapes (deterministic pseudo-random
    # values), through the same strict path as a user's PraNet-19.pth.
    sd = formula_state_dict(official_layout())
    load_weights(model, Checkpoint(sd), "pranet")
    assert torch.equal(model.state_dict()["ra2_conv4.conv.weight"], sd["ra2_conv4.conv.weight"])
    with torch.no_grad():
        maps = model(formula_input())
    assert [tuple(m.shape) for m in maps] == [(1, 1, 64, 96)] * 4
    for m, mean, std in zip(maps, GOLDEN_MEAN, GOLDEN_STD, strict=True):
        assert m.mean().item() == pytest.approx(mean, abs=1e-4)
        assert m.std().item() == pytest.approx(std, abs=1e-4)
    map2 = get_spec("pranet").select(maps)[0, 0]
    assert map2 is not maps[0][0, 0]
    for (y, x), value in GOLDEN_PIXELS.items():
        assert map2[y, x].item() == pytest.approx(value, abs=1e-4), (y, x)


def test_rejects_sides_that_are_not_multiples_of_32(model):
    with pytest.raises(ValueError, match="multiples of 32: got 70x64"):
        model(torch.zeros(1, 3, 70, 64))


def test_preprocessing_and_select_are_registered():
    spec = get_spec("pranet")
    assert spec.preprocessing.input_size == 352 and spec.preprocessing.color_order == "RGB"
    assert spec.preprocessing.mean == (0.485, 0.456, 0.406)
    assert spec.preprocessing.std == (0.229, 0.224, 0.225)
    maps = tuple(torch.full((1, 1, 2, 2), float(i)) for i in range(4))
    assert spec.select(maps) is maps[3]  # map2, the finest


def test_gflops_at_352_is_26(model):
    assert gflops(model, 352) == pytest.approx(26.0, rel=0.02)
