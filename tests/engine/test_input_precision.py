"""bf16 paths keep the convolutions that read the input image in fp32 (engine/input_precision.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from polypviewer.engine import backends as B
from polypviewer.engine import input_precision as IP
from polypviewer.engine.inference import Predictor
from polypviewer.nets import build_model
from polypviewer.nets.registry import Preprocessing

# Identity normalisation: the network sees the image scaled to [0, 1].
PLAIN = Preprocessing(32, "RGB", (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))


def rounding_probe() -> nn.Module:
    """A net whose first convolution computes 100.25 * R - 100 * G - 2: on a grey image that is
    0.25 * R - 2 in fp32, but bf16 (8 significant bits) rounds the weight 100.25 to 100 and loses
    the 0.25 * R. The 1x1 convolution after it runs in bf16 either way."""
    first = nn.Conv2d(3, 1, 1)
    last = nn.Conv2d(1, 1, 1)
    with torch.no_grad():
        first.weight.copy_(torch.tensor([100.25, -100.0, 0.0]).view(1, 3, 1, 1))
        first.bias.fill_(-2.0)
        last.weight.fill_(1.0)
        last.bias.zero_()
    return nn.Sequential(first, last).eval()


def grey_frames() -> list[np.ndarray]:
    rs = np.random.RandomState(0)
    return [np.repeat(rs.randint(0, 256, (32, 32, 1), dtype=np.uint8), 3, axis=2) for _ in range(2)]


@pytest.mark.parametrize("backend", ["torch", "openvino"])
def test_bf16_keeps_the_input_convolution_exact(backend):
    if backend == "openvino" and not B.openvino_available():
        pytest.skip("openvino not installed")
    if backend == "openvino" and not B.cpu_has_native_bf16():
        pytest.skip("OpenVINO runs bf16 only on CPUs with native bf16; here everything would be fp32")
    net, imgs = rounding_probe(), grey_frames()
    ref = Predictor.from_module(net, name="probe", preprocessing=PLAIN, backend="torch", precision="fp32",
                                cache=False)
    fast = Predictor.from_module(net, name="probe", preprocessing=PLAIN, backend=backend, precision="bf16",
                                 cache=False)
    assert "1 input conv fp32" in fast.info["path"]
    x = np.stack([fast.prepare(f) for f in imgs])
    want, got = ref.logits(x), fast.logits(x)
    # fp32 first convolution: only the second one's bf16 rounding (<= 2**-7 at |logit| ~ 2) remains;
    # a bf16 first convolution would be off by 0.25 * R, up to 0.25.
    np.testing.assert_allclose(got, want, atol=0.02)
    assert np.ptp(want) > 0.1  # the logits do carry the 0.25 * R that bf16 would lose


def test_torch_input_convolutions_found_by_dataflow():
    # PraNet's deep stem reads the input with its first convolution only; ResUNet++'s stem
    # has a convolution and a 1x1 shortcut both reading it.
    example = torch.randn(1, 3, 64, 64)
    assert IP.input_convolutions(build_model("pranet").eval(), example) == ["resnet.conv1.0"]
    assert len(IP.input_convolutions(build_model("resunetpp").eval(), example)) == 2


def test_torch_wrapped_convolution_runs_fp32_under_autocast():
    net = rounding_probe()
    names = IP.keep_input_convolutions_fp32(net, torch.randn(1, 3, 8, 8))
    assert names == ["0"]
    dtypes = []
    net[1].register_forward_hook(lambda m, i, o: dtypes.append((i[0].dtype, o.dtype)))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        net(torch.rand(1, 3, 8, 8))
    assert dtypes == [(torch.float32, torch.bfloat16)]  # first conv fp32 out, second in bf16


def test_mark_ir_refuses_a_name_it_cannot_find():
    xml = '<layer id="3" name="conv" type="Convolution" version="opset1">\n<data />\n<input>\n</input>\n</layer>'
    marked = IP.mark_ir(xml, ["conv"])
    assert marked.count('name="precise"') == 1 and marked.index("<rt_info>") < marked.index("<input>")
    with pytest.raises(ValueError, match="'other' found 0 times"):
        IP.mark_ir(xml, ["other"])


def test_openvino_bf16_cache_entry_keeps_the_mark(tmp_path, monkeypatch):
    if not B.openvino_available():
        pytest.skip("openvino not installed")
    monkeypatch.setenv("POLYPVIEWER_CACHE", str(tmp_path / "cache"))
    net = rounding_probe()
    if not B.cpu_has_native_bf16():  # OpenVINO has no bf16 here (an AVX2-only or capped CPU)
        with pytest.raises(B.EngineError, match="no native bf16"):
            Predictor.from_module(net, name="probe", preprocessing=PLAIN, backend="openvino", precision="bf16")
        return
    first = Predictor.from_module(net, name="probe", preprocessing=PLAIN, backend="openvino", precision="bf16")
    (entry,) = (tmp_path / "cache" / "openvino").glob("probe-*-32-bf16-fp32in-*.xml")
    assert entry.read_text().count('name="precise"') == 1
    second = Predictor.from_module(net, name="probe", preprocessing=PLAIN, backend="openvino", precision="bf16")
    assert second.backend.cache_hit and second.backend.fp32_convolutions == first.backend.fp32_convolutions
    # the compiled model really runs that convolution in f32
    runtime = second.backend.compiled("LATENCY").get_runtime_model()
    precisions = {op.get_friendly_name(): op.get_rt_info()["runtimePrecision"].astype(str)
                  for op in runtime.get_ordered_ops() if op.get_rt_info()["layerType"].astype(str) == "Convolution"}
    (marked,) = second.backend.fp32_convolutions
    assert precisions[marked].lower() == "f32"
    assert any(p.lower() == "bf16" for name, p in precisions.items() if name != marked)
