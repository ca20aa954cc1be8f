"""Inference engine: policy, pre/post-processing, backends agreeing, the pipelined runner."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from polypviewer.engine import backends as B
from polypviewer.engine import policy as P
from polypviewer.engine.agreement import compare
from polypviewer.engine.calibration import calibrate_batchnorm
from polypviewer.engine.inference import (
    FrameError,
    NoWeightsError,
    PipelineRunner,
    Predictor,
    prepare_input,
    probabilities,
)
from polypviewer.nets.registry import IMAGENET_MEAN, IMAGENET_STD, Preprocessing, UnknownModelError

PRE64 = Preprocessing(64, "RGB", IMAGENET_MEAN, IMAGENET_STD)


def tiny_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                        nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 1, 1))
    for m in net.modules():  # non-trivial BN statistics so folding has something to fold
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return net.eval()


def frames(n: int = 5) -> list[np.ndarray]:
    rs = np.random.RandomState(1)
    return [rs.randint(0, 256, (40 + 7 * i, 50 + 3 * i, 3), dtype=np.uint8) for i in range(n)]


class ListSource:
    """A FrameSource stand-in: frames from a list, some indices failing, optional delay."""

    has_masks = False
    fps = None

    def __init__(self, items, bad=(), delay=0.0):
        self.items, self.bad, self.delay = items, set(bad), delay
        self.max_read = -1

    def __len__(self):
        return len(self.items)

    def frame(self, i):
        time.sleep(self.delay)
        self.max_read = max(self.max_read, i)
        if i in self.bad:
            raise ValueError("corrupt frame")
        return self.items[i]

    def mask(self, i):
        return None

    def name(self, i):
        return f"clip_{i:06d}"


# --------------------------------------------------------------------------- policy


@pytest.mark.parametrize("flags, expected", [
    ({"avx2", "amx_bf16", "amx_tile"}, "bf16"),
    ({"avx512f", "avx512_bf16"}, "bf16"),
    ({"avx2", "avx512f"}, "fp32"),
    (set(), "fp32"),
])
def test_cpu_precision_follows_native_bf16(flags, expected):
    assert B.choose_precision("cpu", "auto", flags=flags) == expected


def test_precision_overrides_and_refusals(monkeypatch):
    assert B.choose_precision("cpu", "fp32", flags={"amx_bf16"}) == "fp32"
    assert B.choose_precision("cpu", "bf16", flags=set()) == "bf16"  # asked for: emulated, allowed
    with pytest.raises(B.EngineError, match="fp16 inference needs a CUDA device"):
        B.choose_precision("cpu", "fp16")
    with pytest.raises(B.EngineError, match="unknown precision"):
        B.choose_precision("cpu", "int4")
    assert B.choose_precision("cpu", "int8", flags=set()) == "int8"
    with pytest.raises(B.EngineError, match="int8 inference runs on the CPU"):
        B.choose_precision("cuda", "int8")
    assert B.choose_precision("cuda", "auto") == "fp16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    with pytest.raises(B.EngineError, match="no bf16"):
        B.choose_precision("cuda", "bf16")


def test_cpu_flags_read_from_cpuinfo(tmp_path, monkeypatch):
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)  # portable mode caps the flags
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: X\nflags\t\t: fpu avx2 amx_bf16\n\nprocessor\t: 1\n")
    assert B.cpu_flags(info) == {"fpu", "avx2", "amx_bf16"}
    assert B.cpu_flags(tmp_path / "absent") == frozenset()


@pytest.mark.parametrize("cap, native_bf16, kept", [
    ("AVX2", False, {"avx2"}),
    ("avx2_vnni", False, {"avx2", "avx_vnni"}),
    ("AVX512_CORE", False, {"avx2", "avx_vnni", "avx512f"}),
    ("AVX512_CORE_BF16", True, {"avx2", "avx_vnni", "avx512f", "avx512_vnni", "avx512_bf16"}),
    ("AVX512_CORE_AMX", True, {"avx2", "avx_vnni", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile"}),
    ("NONSENSE", True, {"avx2", "avx_vnni", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile"}),
])
def test_onednn_isa_cap_limits_what_the_policy_plans_on(tmp_path, monkeypatch, cap, native_bf16, kept):
    """ONEDNN_MAX_CPU_ISA makes oneDNN (torch's and OpenVINO's) refuse instructions above it;
    the policy must then choose as a CPU without them does (an AMX Xeon as an AVX2 EPYC)."""
    info = tmp_path / "cpuinfo"
    info.write_text("flags\t\t: fpu avx2 avx_vnni avx512f avx512_vnni avx512_bf16 amx_bf16 amx_tile\n")
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", cap)
    flags = P.cpu_flags(info)
    assert flags == {"fpu"} | kept
    assert P.cpu_has_native_bf16(flags) is native_bf16
    assert P.choose_precision("cpu", "auto", flags=flags) == ("bf16" if native_bf16 else "fp32")
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    assert "amx_bf16" in P.cpu_flags(info)


def test_precision_reason_says_why():
    assert "natively (amx_bf16)" in P.precision_reason("cpu", "auto", "bf16", flags={"amx_bf16", "avx512_bf16"})
    assert "natively (avx512_bf16)" in P.precision_reason("cpu", "auto", "bf16", flags={"avx512_bf16"})
    assert P.precision_reason("cpu", "auto", "fp32", flags={"avx2"}).startswith("fp32: this CPU has no native bf16")
    assert "emulated" in P.precision_reason("cpu", "bf16", "bf16", flags={"avx2"})
    assert P.precision_reason("cpu", "fp32", "fp32", flags={"amx_bf16"}) == "fp32 as asked"
    line = P.describe_cpu({"avx2", "avx512f", "fpu"})
    assert "ISA avx2 avx512f" in line and "fpu" not in line


def test_device_and_backend_policy(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert B.choose_device("auto") == "cpu"
    with pytest.raises(B.EngineError, match="no CUDA device"):
        B.choose_device("cuda")
    assert B.choose_backend("cuda", "auto") == "torch"
    monkeypatch.setattr(P, "openvino_available", lambda: True)
    assert B.choose_backend("cpu", "auto") == "openvino"
    # bf16 asked for on a CPU without it: torch emulates it; OpenVINO cannot, and says so
    assert P.choose_backend("cpu", "auto", "bf16", flags={"avx2"}) == "torch"
    assert P.choose_backend("cpu", "auto", "bf16", flags={"avx512_bf16"}) == "openvino"
    with pytest.raises(P.EngineError, match="no native bf16"):
        P.choose_backend("cpu", "openvino", "bf16", flags={"avx2"})
    monkeypatch.setattr(P, "openvino_available", lambda: False)
    assert B.choose_backend("cpu", "auto") == "torch"
    with pytest.raises(B.EngineError, match="not installed"):
        B.choose_backend("cpu", "openvino")


# --------------------------------------------------------------------------- pre/post


def test_prepare_input_normalises_and_orders_channels():
    frame = np.zeros((10, 12, 3), np.uint8)
    frame[..., 0], frame[..., 1], frame[..., 2] = 255, 128, 0
    x = prepare_input(frame, Preprocessing(8, "RGB", IMAGENET_MEAN, IMAGENET_STD))
    assert x.shape == (3, 8, 8) and x.dtype == np.float32
    want = [(1.0 - 0.485) / 0.229, (128 / 255 - 0.456) / 0.224, (0.0 - 0.406) / 0.225]
    np.testing.assert_allclose(x[:, 3, 3], want, rtol=1e-5)
    bgr = prepare_input(frame, Preprocessing(8, "BGR"))  # ResUNet++: BGR/255, no mean/std
    np.testing.assert_allclose(bgr[:, 0, 0], [0.0, 128 / 255, 1.0], rtol=1e-6)


def test_probabilities_match_torch_bilinear_then_sigmoid():
    logits = np.random.RandomState(0).randn(16, 16).astype(np.float32) * 4
    p = probabilities(logits, (37, 53))
    ref = torch.sigmoid(F.interpolate(torch.from_numpy(logits)[None, None], size=(37, 53),
                                      mode="bilinear", align_corners=False))[0, 0].numpy()
    assert p.shape == (37, 53) and p.dtype == np.float32
    np.testing.assert_allclose(p, ref, atol=1e-5)
    assert probabilities(np.array([[-1000.0, 1000.0]], np.float32), (1, 2)).tolist() == [[0.0, 1.0]]


# --------------------------------------------------------------------------- backends


def reference_probs(net: nn.Module, imgs: list[np.ndarray], pre: Preprocessing) -> list[np.ndarray]:
    """Independent fp32 torch path: the unoptimised network, torch interpolate + sigmoid."""
    out = []
    with torch.no_grad():
        for f in imgs:
            x = torch.from_numpy(prepare_input(f, pre))[None]
            lg = net(x)
            out.append(torch.sigmoid(F.interpolate(lg, size=f.shape[:2], mode="bilinear",
                                                   align_corners=False))[0, 0].numpy())
    return out


def test_batchnorm_folding_keeps_the_output():
    net = tiny_net()
    folded, n = B.fold_batchnorm(B.InferenceHead(net, lambda o: o))
    assert n == 2
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), net(x), atol=1e-5, rtol=1e-5)


class Branchy(nn.Module):
    """conv -> bn in separate attributes (PraNet's BasicConv2d), and a conv whose output
    also feeds a skip connection, which must not be folded."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.conv2, self.bn2 = nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4)
        for bn in (self.bn, self.bn2):
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn(self.conv(x)))
        z = self.conv2(y)
        return (self.bn2(z) + z).sum(1, keepdim=True)


def test_batchnorm_folding_finds_pairs_by_dataflow_and_refuses_shared_outputs():
    torch.manual_seed(0)
    net = Branchy().eval()
    x = torch.randn(1, 3, 16, 16)
    folded, n = B.fold_batchnorm(net, x)
    assert n == 1 and isinstance(folded.bn, nn.Identity) and isinstance(folded.bn2, nn.BatchNorm2d)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), net(x), atol=1e-5, rtol=1e-5)
    assert isinstance(net.bn, nn.BatchNorm2d)  # the original is untouched


@pytest.mark.parametrize("backend", ["torch", "openvino"])
def test_fp32_backends_match_the_reference(backend):
    if backend == "openvino" and not B.openvino_available():
        pytest.skip("openvino not installed")
    net, imgs = tiny_net(), frames()
    p = Predictor.from_module(net, name="tiny", preprocessing=PRE64, backend=backend, precision="fp32")
    assert p.info["backend"] == backend and p.info["precision"] == "fp32"
    for got, want in zip(p.predict(imgs), reference_probs(net, imgs, PRE64), strict=True):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, atol=1e-4)


def test_tta_averages_flipped_logits():
    net, imgs = tiny_net(), frames(2)
    p = Predictor.from_module(net, name="tiny", preprocessing=PRE64, backend="torch", precision="fp32", tta=True)
    got = p.predict(imgs)
    with torch.no_grad():
        for f, g in zip(imgs, got, strict=True):
            x = torch.from_numpy(prepare_input(f, PRE64))[None]
            lg = (net(x) + net(x.flip(-1)).flip(-1) + net(x.flip(-2)).flip(-2)) / 3
            want = torch.sigmoid(F.interpolate(lg, size=f.shape[:2], mode="bilinear"))[0, 0].numpy()
            np.testing.assert_allclose(g, want, atol=1e-4)


def endotect_frames(endotect: Path, n: int, split: str = "val") -> list[np.ndarray]:
    import cv2

    stems = json.loads((endotect / "split.json").read_text())[split][:n]
    out = []
    for s in stems:
        path = next((endotect / "images").glob(f"{s}.*"))
        out.append(cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB))
    return out


# How closely bf16 and int8 agree with fp32 depends on the processor (AMX, AVX-512 BF16, AVX2
# emulation and VNNI round differently): those figures are benchmarks (`polypviewer bench`
# prints every engine's agreement with the CPU's ISA flags). The tests below assert what
# holds on any CPU: the fast path runs, names itself, gives probability maps of the right
# shape, and stays near fp32 by a margin an order of magnitude looser than any CPU measured
# (a broken path, e.g. garbage or all-empty maps, fails it).
SANITY = {"mean_abs_diff": 0.1, "dice": 0.8}


def assert_sane_against_fp32(got, ref, info):
    assert len(got) == len(ref)
    for g, r in zip(got, ref, strict=True):
        assert g.shape == r.shape and g.dtype == np.float32
        assert np.isfinite(g).all() and g.min() >= 0.0 and g.max() <= 1.0
    agreement = compare(got, ref)
    assert agreement["mean_abs_diff"] < SANITY["mean_abs_diff"] and agreement["dice"] > SANITY["dice"], \
        (agreement, info["path"], P.describe_cpu())
    return agreement


@pytest.mark.slow
def test_bf16_fast_path_runs_and_stays_near_fp32_on_real_images(endotect):
    """The engine's bf16 path (OpenVINO where native, torch-emulated elsewhere) vs fp32."""
    from polypviewer.nets import build_model, get_spec

    spec = get_spec("unet")
    pre = Preprocessing(64, spec.preprocessing.color_order, spec.preprocessing.mean, spec.preprocessing.std)
    imgs = endotect_frames(endotect, 6)
    torch.manual_seed(0)
    net = calibrate_batchnorm(build_model("unet"), [np.stack([prepare_input(f, pre) for f in imgs])])
    ref = Predictor.from_module(net, name="unet", preprocessing=pre, select=spec.select,
                                backend="torch", precision="fp32").predict(imgs)
    fast = Predictor.from_module(net, name="unet", preprocessing=pre, select=spec.select,
                                 backend="auto", precision="bf16")
    assert fast.info["precision"] == "bf16" and "bf16" in fast.info["path"]
    assert fast.info["backend"] == ("openvino" if P.cpu_has_native_bf16() and B.openvino_available() else "torch")
    if not P.cpu_has_native_bf16():
        assert "emulated" in fast.info["why"]
    got = fast.predict(imgs)
    agreement = assert_sane_against_fp32(got, ref, fast.info)
    assert agreement["mean_abs_diff"] > 0  # bf16 really rounded: not fp32 under another name


@pytest.mark.slow
def test_bf16_with_shipped_weights_stays_near_fp32(endotect):
    """With trained weights (the realistic case) on the real val images."""
    from polypviewer.nets.weights import shipped_weights

    records = shipped_weights([])
    if not records:
        pytest.skip("no shipped weights yet (models/*.json)")
    rec = min(records, key=lambda r: r.file.stat().st_size)  # the cheapest network
    imgs = endotect_frames(endotect, 6)
    ref = Predictor.create(weights=rec.file, backend="torch", precision="fp32").predict(imgs)
    fast = Predictor.create(weights=rec.file, backend="auto", precision="bf16")
    assert_sane_against_fp32(fast.predict(imgs), ref, fast.info)


@pytest.mark.slow
def test_openvino_model_is_cached_and_reused(tmp_path, monkeypatch):
    if not B.openvino_available():
        pytest.skip("openvino not installed")
    monkeypatch.setenv("POLYPVIEWER_CACHE", str(tmp_path / "cache"))
    net, imgs = tiny_net(), frames(2)
    first = Predictor.from_module(net, name="tiny", preprocessing=PRE64, backend="openvino", precision="fp32")
    assert not first.backend.cache_hit
    assert len(list((tmp_path / "cache" / "openvino").glob("tiny-*-64-fp32-*.xml"))) == 1
    second = Predictor.from_module(net, name="tiny", preprocessing=PRE64, backend="openvino", precision="fp32")
    assert second.backend.cache_hit
    np.testing.assert_array_equal(first.predict(imgs)[0], second.predict(imgs)[0])
    other = Predictor.from_module(tiny_net(seed=1), name="tiny", preprocessing=PRE64, backend="openvino",
                                  precision="fp32")
    assert not other.backend.cache_hit  # different weights, different cache entry


def test_int8_needs_openvino_nncf_and_calibration(monkeypatch):
    with pytest.raises(B.EngineError, match="--backend openvino"):
        B.check_combination("torch", "int8")
    B.check_combination("torch", "bf16")  # anything else is not int8's business
    monkeypatch.setattr(P, "nncf_available", lambda: False)
    with pytest.raises(B.EngineError, match="pip install nncf"):
        B.check_combination("openvino", "int8")
    monkeypatch.undo()
    with pytest.raises(B.EngineError, match="--backend openvino"):
        Predictor.from_module(tiny_net(), name="tiny", preprocessing=PRE64, backend="torch", precision="int8",
                              calibration=frames(2))
    if not (B.openvino_available() and B.nncf_available()):
        pytest.skip("openvino or nncf not installed")
    with pytest.raises(B.EngineError, match="calibration frames"):
        Predictor.from_module(tiny_net(), name="tiny", preprocessing=PRE64, backend="openvino", precision="int8")
    with pytest.raises(B.EngineError, match="calibration frames"):
        Predictor.create("unet", allow_random=True, precision="int8")


@pytest.mark.slow
def test_int8_quantises_close_to_fp32_and_is_cached_per_calibration_set(tmp_path, monkeypatch):
    if not (B.openvino_available() and B.nncf_available()):
        pytest.skip("openvino or nncf not installed")
    monkeypatch.setenv("POLYPVIEWER_CACHE", str(tmp_path / "cache"))
    net, imgs = tiny_net(), frames(6)
    ref = Predictor.from_module(net, name="tiny", preprocessing=PRE64, backend="torch", precision="fp32")
    q = Predictor.from_module(net, name="tiny", preprocessing=PRE64, backend="auto", precision="int8",
                              calibration=imgs)
    assert (q.info["backend"], q.info["precision"], q.info["calibration_frames"]) == ("openvino", "int8", 6)
    assert not q.backend.cache_hit
    import nncf

    assert len(list((tmp_path / "cache" / "openvino").glob(f"tiny-*-64-int8-*-cal*-nncf{nncf.__version__}.xml"))) == 1
    # NNCF really quantised it: the model carries FakeQuantize nodes (int8 convolutions once compiled)
    assert any(op.get_type_name() == "FakeQuantize" for op in q.backend.model.get_ops())
    got, want = q.predict(imgs), ref.predict(imgs)
    assert all(g.shape == w.shape for g, w in zip(got, want, strict=True))
    diff = np.mean([np.abs(g - w).mean() for g, w in zip(got, want, strict=True)])
    assert 0 < diff < 0.05, diff  # quantisation changes the output a little, not much
    again = Predictor.from_module(net, name="tiny", preprocessing=PRE64, backend="openvino", precision="int8",
                                  calibration=imgs)
    assert again.backend.cache_hit
    np.testing.assert_array_equal(again.predict(imgs[:1])[0], got[0])
    other = Predictor.from_module(net, name="tiny", preprocessing=PRE64, backend="openvino", precision="int8",
                                  calibration=imgs[:3])
    assert not other.backend.cache_hit  # another calibration set is another int8 model


@pytest.mark.slow
def test_int8_with_shipped_weights_stays_near_fp32_on_real_images(endotect):
    """int8 trades accuracy for speed; how much is CPU-dependent (Dice 0.92-0.96 vs fp32
    measured on AVX2 and AMX machines) and reported by `polypviewer bench`. Here: it runs on
    trained weights and real frames and stays within the sanity margin."""
    from polypviewer.nets.weights import shipped_weights

    if not (B.openvino_available() and B.nncf_available()):
        pytest.skip("openvino or nncf not installed")
    records = shipped_weights([])
    if not records:
        pytest.skip("no shipped weights yet (models/*.json)")
    rec = min(records, key=lambda r: r.file.stat().st_size)
    calib, imgs = endotect_frames(endotect, 16, "train"), endotect_frames(endotect, 8)
    ref = Predictor.create(weights=rec.file, backend="torch", precision="fp32").predict(imgs)
    q = Predictor.create(weights=rec.file, precision="int8", calibration=calib)
    assert (q.info["backend"], q.info["precision"]) == ("openvino", "int8")
    assert_sane_against_fp32(q.predict(imgs), ref, q.info)


# --------------------------------------------------------------------------- Predictor.create


def test_create_needs_weights_unless_random_allowed(tmp_path):
    with pytest.raises(NoWeightsError, match="--weights"):
        Predictor.create("unet", backend="torch")
    p = Predictor.create("unet", backend="torch", allow_random=True, precision="fp32")
    assert p.info["version"] == "random-init" and p.info["model"] == "unet"


def test_create_reads_model_and_preprocessing_from_the_checkpoint(tmp_path):
    from polypviewer.nets import build_model
    from polypviewer.nets.weights import save_checkpoint

    torch.manual_seed(0)
    net = build_model("unet")
    sha = save_checkpoint(tmp_path / "u.safetensors", net, model_name="unet",
                          preprocessing=Preprocessing(64, "BGR"))
    p = Predictor.create(weights=tmp_path / "u.safetensors", backend="torch", precision="fp32")
    assert p.info["model"] == "unet" and p.info["version"] == sha[:12] and p.info["input_size"] == 64
    assert p.predict(frames(1))[0].shape == frames(1)[0].shape[:2]


# --------------------------------------------------------------------------- pipeline


@pytest.mark.parametrize("backend", ["torch", "openvino"])
def test_runner_yields_in_order_and_names_bad_frames(backend):
    if backend == "openvino" and not B.openvino_available():
        pytest.skip("openvino not installed")
    imgs = frames(9)
    p = Predictor.from_module(tiny_net(), name="tiny", preprocessing=PRE64, backend=backend, precision="fp32")
    want = p.predict(imgs)
    seen = []
    runner = PipelineRunner(ListSource(imgs, bad={4}), p, batch_size=3,
                            on_progress=lambda d, t, fps: seen.append((d, t)))
    results = list(runner)
    assert [r.index for r in results] == list(range(9))
    assert seen[-1] == (9, 9) and runner.failed == 1
    bad = results[4]
    assert isinstance(bad.error, FrameError) and str(bad.error).startswith("clip_000004: ")
    assert bad.prob is None and bad.mask is None
    for r in results:
        if r.ok:
            np.testing.assert_allclose(r.prob, want[r.index], atol=1e-5)
            assert r.mask.dtype == bool and r.name == f"clip_{r.index:06d}"


def test_runner_subset_of_indices_and_bounded_read_ahead():
    imgs = frames(3) * 20  # 60 frames
    p = Predictor.from_module(tiny_net(), name="tiny", preprocessing=PRE64, backend="torch", precision="fp32")
    src = ListSource(imgs)
    runner = PipelineRunner(src, p, indices=range(0, 60, 2), max_queue=2)
    it = iter(runner)
    first = next(it)
    time.sleep(0.5)  # a slow consumer: the decoder must stop after a bounded read-ahead
    assert first.index == 0
    # decode queue (2) + the job being put + infer batch + out queue (2) + the one held
    assert src.max_read <= 2 * (1 + 2 + 1 + 1 + 2 + 1)
    rest = [r.index for r in it]
    assert rest == list(range(2, 60, 2))


def test_cancel_stops_promptly_from_another_thread():
    imgs = frames(2) * 100
    p = Predictor.from_module(tiny_net(), name="tiny", preprocessing=PRE64, backend="torch", precision="fp32")
    runner = PipelineRunner(ListSource(imgs, delay=0.01), p)
    got = []

    def consume():
        for r in runner:
            got.append(r.index)

    t = threading.Thread(target=consume)
    t.start()
    time.sleep(0.3)
    runner.cancel()
    t.join(2.0)
    runner.join(2.0)
    assert not t.is_alive() and all(not th.is_alive() for th in runner._threads)
    assert 0 < len(got) < 200 and got == list(range(len(got)))


def test_breaking_out_of_the_loop_frees_the_threads():
    imgs = frames(2) * 50
    p = Predictor.from_module(tiny_net(), name="tiny", preprocessing=PRE64, backend="torch", precision="fp32")
    runner = PipelineRunner(ListSource(imgs), p, max_queue=2)
    for r in runner:
        if r.index == 1:
            break
    runner.join(2.0)
    assert all(not th.is_alive() for th in runner._threads)


def test_an_unknown_model_is_refused_in_one_line_naming_the_known_ones():
    with pytest.raises(UnknownModelError, match=r"^unknown model 'nope'; choose one of: .*lite_pranet"):
        Predictor.create("nope", allow_random=True)
