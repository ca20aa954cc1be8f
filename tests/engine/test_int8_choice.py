"""int8 as a candidate for ``auto`` (issue 17 §1): the stem kept in float, calibrated on frames
the agreement never sees, chosen only when it agrees and is fastest, cached with what it depends on.

Tiny networks on 64x64 inputs; no speed is asserted. Where a test needs one path to be the
fastest it makes the others slow on purpose (a sleep), so the rule is tested, not the machine."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch
from torch import nn

from polypviewer.engine import policy as P
from polypviewer.engine import selection as S
from polypviewer.engine.agreement import compare
from polypviewer.engine.backends import Backend, InferenceHead, make_backend, state_digest
from polypviewer.engine.backends.quantise import RECIPE, float_layers, int8_recipe, overflow_fix, quantise_int8
from polypviewer.engine.inference import Predictor
from polypviewer.nets.registry import IMAGENET_MEAN, IMAGENET_STD, Preprocessing

PRE64 = Preprocessing(64, "RGB", IMAGENET_MEAN, IMAGENET_STD)

needs_int8 = pytest.mark.skipif(not (P.openvino_available() and P.nncf_available()),
                                reason="openvino and nncf needed: pip install 'polypviewer[int8]'")


def stem_net(seed: int = 0) -> nn.Module:
    """Stem convolution, BatchNorm, ReLU6, a depthwise convolution (EfficientNet's block 0
    shape), then ordinary convolutions: the layers ``float_layers`` must and must not name."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU6(),
                        nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False), nn.BatchNorm2d(8), nn.ReLU6(),
                        nn.Conv2d(8, 8, 1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.ReLU(),
                        nn.Conv2d(8, 1, 1))
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return net.eval()


def frames(n: int, seed: int = 1) -> list[np.ndarray]:
    rs = np.random.RandomState(seed)
    return [rs.randint(0, 256, (40 + 7 * i, 50 + 3 * i, 3), dtype=np.uint8) for i in range(n)]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("POLYPVIEWER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(S, "SECONDS", 0.05)
    return tmp_path / "cache"


def test_int8_is_a_candidate_only_for_auto_on_a_cpu_with_nncf(monkeypatch):
    monkeypatch.setattr(S, "openvino_available", lambda: True)
    monkeypatch.setattr(S, "onnxruntime_available", lambda: True)
    monkeypatch.setattr(S, "nncf_available", lambda: True)
    avx2 = {"avx2"}
    assert S.candidate_paths("cpu", "auto", avx2) == S.exact_paths("cpu", "auto", avx2) + [S.INT8]
    assert S.INT8 not in S.candidate_paths("cpu", "fp32", avx2)  # fp32 asked for: fp32 runs
    assert S.candidate_paths("cpu", "int8", avx2) == []  # int8 asked for: nothing to choose
    assert S.candidate_paths("cuda", "auto", avx2) == []
    monkeypatch.setattr(S, "nncf_available", lambda: False)
    assert S.INT8 not in S.candidate_paths("cpu", "auto", avx2)


class _Shifted(Backend):
    """int8 that is very fast and wrong: its logits are far from fp32's."""

    name = "openvino"

    def __init__(self, inner: Backend, shift: float) -> None:
        super().__init__("cpu", "int8", inner.input_size)
        self.inner, self.shift = inner, shift

    def infer(self, batch: np.ndarray) -> np.ndarray:
        return self.inner.infer(batch) + self.shift


class _Slow(Backend):
    """A path made slow on purpose, to decide which one is the fastest without timing the machine."""

    name = "torch"

    def __init__(self, inner: Backend) -> None:
        super().__init__("cpu", inner.precision, inner.input_size)
        self.inner = inner

    def infer(self, batch: np.ndarray) -> np.ndarray:
        time.sleep(0.1)
        return self.inner.infer(batch)


def _fake_int8(monkeypatch, shift: float, seen: list) -> None:
    """make_backend with int8 replaced by torch fp32 (+ shift), torch fp32 made slow; ``seen``
    collects the calibration each int8 build got."""
    real = S.make_backend

    def make(kind, head, size, **kw):
        if kw.get("precision") == "int8":
            seen.append(kw.get("calibration"))
            assert kw.get("calibration"), "int8 built without calibration frames"
            return _Shifted(real("torch", head, size, **{**kw, "precision": "fp32", "calibration": None}), shift)
        return _Slow(real(kind, head, size, **kw))

    monkeypatch.setattr(S, "make_backend", make)


def test_a_disagreeing_int8_is_never_chosen_however_fast(cache, monkeypatch):
    seen: list = []
    _fake_int8(monkeypatch, 4.0, seen)
    head = InferenceHead(stem_net(), lambda y: y)
    choice = S.measure(head, model_name="tiny", digest=state_digest(head), preprocessing=PRE64, cache_root=cache,
                       frames=frames(3), calibration=frames(4, seed=2), paths=[("torch", "fp32"), S.INT8])
    assert choice is not None and len(seen) == 1 and len(seen[0]) == 4
    by = {(m.backend, m.precision): m for m in choice.measured}
    assert not by[S.INT8].agrees and by[S.INT8].agreement["images"] == 3
    assert by[S.INT8].calibration_frames == 4
    assert (choice.backend, choice.precision) == ("torch", "fp32") and choice.calibration == ""
    assert "disagrees" in choice.why


def test_an_agreeing_faster_int8_is_chosen_and_says_what_it_is(cache, monkeypatch):
    seen: list = []
    _fake_int8(monkeypatch, 0.0, seen)  # exact, and the other path sleeps
    head = InferenceHead(stem_net(), lambda y: y)
    digest = state_digest(head)
    held, cal = frames(3), frames(5, seed=2)
    choice = S.measure(head, model_name="tiny", digest=digest, preprocessing=PRE64, cache_root=cache,
                       frames=held, calibration=cal, paths=[("torch", "fp32"), S.INT8])
    assert choice is not None and (choice.backend, choice.precision) == S.INT8
    assert "calibrated on 5 shipped frames; agrees with fp32 on 3 others" in choice.why
    assert choice.calibration == S.frames_digest(cal)
    saved = json.loads(next((cache / "engine-choice").glob("tiny-*-64-auto.json")).read_text())
    assert saved["calibration"] == S.frames_digest(cal) and saved["precision"] == "int8"
    # cached for exactly that calibration set: other calibration frames mean measuring again
    monkeypatch.setattr(S, "calibration_frames", lambda: cal)
    assert S.cached_choice(cache, "tiny", digest, 64) is not None
    monkeypatch.setattr(S, "calibration_frames", lambda: cal[:4])
    assert S.cached_choice(cache, "tiny", digest, 64) is None
    # and another NNCF release or quantisation rule too
    monkeypatch.setattr(S, "calibration_frames", lambda: cal)
    real = S.machine()
    for key, value in (("nncf", "9.9.9"), ("int8_recipe", RECIPE + "x")):
        monkeypatch.setattr(S, "machine", lambda key=key, value=value: {**real, key: value})
        assert S.cached_choice(cache, "tiny", digest, 64) is None, key



def test_a_cached_int8_builds_from_the_frames_its_digest_was_checked_on(cache, monkeypatch):
    """Start-up with int8 cached decodes the shipped calibration frames once, not once to check
    the choice's digest and again to build the network."""
    import polypviewer.engine.inference as I

    seen: list = []
    _fake_int8(monkeypatch, 0.0, seen)
    monkeypatch.setattr(I, "make_backend", S.make_backend)  # the fake int8, for the predictor too
    net = stem_net()
    cal = frames(5, seed=2)
    head = InferenceHead(net, lambda y: y)
    choice = S.measure(head, model_name="tiny", digest=state_digest(head),
                       preprocessing=PRE64, cache_root=cache, frames=frames(3), calibration=cal,
                       paths=[("torch", "fp32"), S.INT8])
    assert (choice.backend, choice.precision) == S.INT8
    decoded: list[int] = []
    monkeypatch.setattr(S, "calibration_frames", lambda: decoded.append(1) or cal)
    seen.clear()
    predictor = Predictor.from_module(net, name="tiny", preprocessing=PRE64, measure="now")
    assert (predictor.info["engine_choice"], predictor.info["precision"]) == ("measured", "int8")
    assert len(decoded) == 1  # was 2
    assert len(seen) == 1 and len(seen[0]) == len(cal)  # built on exactly the checked frames
    assert predictor.info["calibration_frames"] == len(cal)


def test_int8_agreement_is_never_measured_on_its_calibration_frames(cache, monkeypatch):
    head = InferenceHead(stem_net(), lambda y: y)
    held = frames(3)
    with pytest.raises(ValueError, match="not calibrated on"):
        S.measure(head, model_name="tiny", digest=state_digest(head), preprocessing=PRE64, cache_root=cache,
                  frames=held, calibration=frames(4, seed=2) + held[1:2], paths=[("torch", "fp32"), S.INT8])
    # without int8 among the paths the calibration frames play no part
    assert S.measure(head, model_name="tiny", digest=state_digest(head), preprocessing=PRE64, cache_root=cache,
                     frames=held, calibration=held, paths=[("torch", "fp32")]) is not None


def test_the_shipped_frames_split_into_held_out_and_calibration():
    held, cal = S.reference_frames(), S.calibration_frames()
    if not held:
        pytest.skip("resources/demo/polypgen not present")
    assert (len(held), len(cal)) == (8, 16)
    digests = {S._frame_digest(f) for f in held}
    assert not digests & {S._frame_digest(f) for f in cal}


@needs_int8
def test_float_layers_are_the_stem_and_its_depthwise_and_stay_unquantised(cache):
    head = InferenceHead(stem_net(), lambda y: y)
    xs = [np.random.RandomState(i).randn(1, 3, 64, 64).astype(np.float32) for i in range(4)]
    fp32 = make_backend("openvino", head, 64, device="cpu", precision="fp32", model_name="tiny")
    names = float_layers(fp32.model)
    ops = {op.get_friendly_name(): op for op in fp32.model.get_ordered_ops()}
    assert [ops[n].get_type_name() for n in names] == ["Convolution", "GroupConvolution"]
    assert ops[names[0]].input(0).get_source_output().get_node().get_type_name() == "Parameter"
    convs = [op for op in fp32.model.get_ordered_ops() if op.get_type_name() in ("Convolution", "GroupConvolution")]
    assert len(convs) == 5  # the later depthwise convolution is not the stem's

    def fed_by_fake_quantize(model):
        return {op.get_friendly_name() for op in model.get_ordered_ops()
                if op.get_type_name() in ("Convolution", "GroupConvolution")
                and op.input(0).get_source_output().get_node().get_type_name() == "FakeQuantize"}

    plain = fed_by_fake_quantize(quantise_int8(fp32.model, xs, keep_float=[]))
    kept = fed_by_fake_quantize(quantise_int8(fp32.model, xs))
    assert set(names) <= plain and not set(names) & kept and kept  # the rest is still int8
    q = make_backend("openvino", head, 64, device="cpu", precision="int8", model_name="tiny", cache_root=cache,
                     calibration=xs)
    q_ops = {op.get_friendly_name(): op for op in q.model.get_ordered_ops()}  # its own conversion: own names
    assert [q_ops[n].get_type_name() for n in q.float_layers] == ["Convolution", "GroupConvolution"]
    assert "2 convolutions kept in fp32" in q.describe()
    import nncf

    stems = [p.stem for p in (cache / "openvino").glob("tiny-*-int8-*.xml")]
    assert len(stems) == 1 and f"-{int8_recipe()}-cal" in stems[0] and stems[0].endswith(f"-nncf{nncf.__version__}")


@needs_int8
def test_a_measured_int8_choice_is_rebuilt_on_the_frames_it_was_calibrated_on(cache, monkeypatch):
    """A cached int8 choice, read back by ``Predictor``, quantises on ``calibration_frames()``
    (the shipped frames) and says in ``info`` what runs and why."""
    net = stem_net()
    head = InferenceHead(net, lambda y: y)
    digest = state_digest(head)
    cal = frames(6, seed=2)
    monkeypatch.setattr(S, "calibration_frames", lambda: cal)
    why = "openvino int8 (NNCF, ...): the fastest agreeing path measured on this CPU"
    choice = S.Choice("openvino", "int8", why, [S.Measurement("openvino", "int8", fps=1.0, agrees=True,
                                                              calibration_frames=6)],
                      machine=S.machine(), calibration=S.frames_digest(cal))
    path = S.choice_path(cache, "tiny", digest, 64, "auto")
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(choice.to_json()))
    monkeypatch.setattr(S, "measure", lambda *a, **k: pytest.fail("measured although cached"))
    p = Predictor.from_module(net, name="tiny", preprocessing=PRE64, measure="now")
    assert (p.info["backend"], p.info["precision"], p.info["engine_choice"]) == ("openvino", "int8", "measured")
    assert p.info["calibration_frames"] == 6 and p.info["why"] == why and "kept in fp32" in p.info["path"]
    ref = Predictor.from_module(net, name="tiny", preprocessing=PRE64, backend="torch", precision="fp32")
    imgs = frames(3)
    agreement = compare(p.predict(imgs), ref.predict(imgs))
    assert agreement["mean_abs_diff"] < 0.1  # quantised, and still this network
    again = Predictor.from_module(net, name="tiny", preprocessing=PRE64, backend="openvino", precision="int8",
                                  calibration=cal)
    assert again.backend.cache_hit  # the same int8 model: the same calibration frames


def test_without_vnni_int8_quantises_weights_to_7_bits_and_says_so_in_its_keys(monkeypatch):
    """AVX2 only (AMD Zen 3, or any CPU under ONEDNN_MAX_CPU_ISA=AVX2): u8 x s8 pairs summed in 16
    bits saturate, so every layer gets NNCF's overflow fix; with VNNI or AMX, NNCF's default."""
    assert overflow_fix({"avx2", "avx512f"}) == "enable"
    for vnni in ("avx512_vnni", "avx_vnni", "amx_int8"):
        assert overflow_fix({"avx2", vnni}) == "first_layer_only", vnni
    assert int8_recipe({"avx2"}) != int8_recipe({"avx2", "avx512_vnni"}) == RECIPE  # no model reused across
    # the cap counts, not what the CPU could do: AVX-512 VNNI capped at AVX2 has no VNNI
    monkeypatch.setattr(P, "raw_cpu_flags", lambda *a: frozenset({"avx2", "avx512f", "avx512_vnni"}))
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert overflow_fix() == "enable" and S.machine()["int8_recipe"] == int8_recipe({"avx2"})
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_VNNI")
    assert overflow_fix() == "first_layer_only" and S.machine()["int8_recipe"] == RECIPE


@needs_int8
def test_the_overflow_fix_keeps_every_later_dense_convolution_to_7_bit_weights():
    head = InferenceHead(stem_net(), lambda y: y)
    xs = [np.random.RandomState(i).randn(1, 3, 64, 64).astype(np.float32) for i in range(4)]
    fp32 = make_backend("openvino", head, 64, device="cpu", precision="fp32", model_name="tiny")

    def dense_weight_ranges(model):  # the int8 weights of each quantised dense convolution, in order
        out = []
        for op in model.get_ordered_ops():
            if op.get_type_name() != "Convolution":
                continue
            node = op.input(1).get_source_output().get_node()
            while node.get_type_name() != "Constant" and node.get_input_size():
                node = node.input(0).get_source_output().get_node()
            data = node.get_data()
            if data.dtype == np.int8:
                out.append((int(data.min()), int(data.max())))
        return out

    default = dense_weight_ranges(quantise_int8(fp32.model, xs, fix="first_layer_only"))
    fixed = dense_weight_ranges(quantise_int8(fp32.model, xs, fix="enable"))
    assert len(default) == len(fixed) == 2  # the 1x1 convolutions (the stem stays float; depthwise is grouped)
    assert all(-64 <= lo and hi <= 64 for lo, hi in fixed)
    assert max(max(-lo, hi) for lo, hi in default[1:]) > 64  # NNCF's default: only the first layer is fixed
