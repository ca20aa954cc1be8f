"""The ONNX Runtime backend beside torch and OpenVINO, and ``auto`` chosen by measurement
(``engine.selection``): agreement, caches, streams, the choice and its invalidation.

Everything runs a tiny network on 64x64 inputs, so the measurements take well under a
second; no timing is asserted (which path wins depends on the machine)."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
import torch
from torch import nn

from polypviewer.engine import policy as P
from polypviewer.engine import selection as S
from polypviewer.engine.agreement import AGREEMENT, agrees, compare
from polypviewer.engine.backends import Backend, EngineError, InferenceHead, make_backend, state_digest
from polypviewer.engine.inference import PipelineRunner, Predictor
from polypviewer.nets.registry import IMAGENET_MEAN, IMAGENET_STD, Preprocessing

PRE64 = Preprocessing(64, "RGB", IMAGENET_MEAN, IMAGENET_STD)

needs_ort = pytest.mark.skipif(not P.onnxruntime_available(),
                               reason="onnxruntime (and onnx) not installed: pip install 'polypviewer[onnxruntime]'")


def tiny_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                        nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 1, 1))
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return net.eval()


def frames(n: int = 4) -> list[np.ndarray]:
    rs = np.random.RandomState(1)
    return [rs.randint(0, 256, (40 + 7 * i, 50 + 3 * i, 3), dtype=np.uint8) for i in range(n)]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("POLYPVIEWER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(S, "SECONDS", 0.05)  # time each path briefly: the tests assert no speed
    return tmp_path / "cache"


# --------------------------------------------------------------------------- ONNX Runtime


@needs_ort
def test_onnxruntime_agrees_with_torch_fp32(cache):
    net, imgs = tiny_net(), frames()
    ref = Predictor.from_module(net, name="tiny", preprocessing=PRE64, backend="torch", precision="fp32")
    ort = Predictor.from_module(net, name="tiny", preprocessing=PRE64, backend="onnxruntime")
    assert ort.info["backend"] == "onnxruntime" and ort.info["precision"] == "fp32"
    assert ort.info["engine_choice"] == "asked"
    got, want = ort.predict(imgs), ref.predict(imgs)
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, atol=1e-4)  # fp32 noise: another order of the same sums
    a = compare(got, want)
    assert a is not None and a["mean_abs_diff"] < 1e-5 and a["dice"] > 0.99


@needs_ort
def test_onnxruntime_export_is_cached_keyed_like_openvino(cache):
    net, imgs = tiny_net(), frames(2)
    first = Predictor.from_module(net, name="tiny", preprocessing=PRE64, backend="onnxruntime")
    assert not first.backend.cache_hit
    entries = list((cache / "onnxruntime").glob("tiny-*-64-fp32-ort*-torch*.onnx"))
    assert len(entries) == 1
    assert state_digest(InferenceHead(net, lambda y: y))[:16] in entries[0].name
    second = Predictor.from_module(net, name="tiny", preprocessing=PRE64, backend="onnxruntime")
    assert second.backend.cache_hit
    np.testing.assert_array_equal(first.predict(imgs)[0], second.predict(imgs)[0])
    other = Predictor.from_module(tiny_net(seed=1), name="tiny", preprocessing=PRE64, backend="onnxruntime")
    assert not other.backend.cache_hit  # other weights, another entry
    entries[0].write_bytes(b"not an onnx model")  # a damaged entry is exported again, never fatal
    again = Predictor.from_module(net, name="tiny", preprocessing=PRE64, backend="onnxruntime")
    assert not again.backend.cache_hit
    np.testing.assert_array_equal(again.predict(imgs)[0], first.predict(imgs)[0])


@needs_ort
def test_onnxruntime_stream_keeps_runs_in_flight_and_delivers_each_tag(cache):
    p = Predictor.from_module(tiny_net(), name="tiny", preprocessing=PRE64, backend="onnxruntime")
    be = p.backend
    assert be.requests_in_flight >= 2
    xs = [p.prepare(f)[None] for f in frames(6)]
    got: dict[int, np.ndarray] = {}
    threads: set[str] = set()

    def on_result(tag, logits):
        got[tag] = logits
        threads.add(threading.current_thread().name)

    stream = be.stream(on_result)
    for i, x in enumerate(xs):
        stream.submit(i, x)
    stream.wait()
    assert sorted(got) == list(range(6))
    for i, x in enumerate(xs):
        np.testing.assert_allclose(got[i], be.infer(x), atol=1e-6)
    assert all(t.startswith("polypviewer-ort") for t in threads)  # run off the submitting thread
    results = list(PipelineRunner(ListSource(frames(5)), p, range(5)))
    assert [r.index for r in results] == list(range(5)) and all(r.ok for r in results)


class ListSource:
    has_masks, fps = False, None

    def __init__(self, items):
        self.items = items

    def __len__(self):
        return len(self.items)

    def frame(self, i):
        return self.items[i]

    def mask(self, i):
        return None

    def name(self, i):
        return f"f{i}"


def test_onnxruntime_policy_runs_fp32_on_the_cpu_only(monkeypatch):
    monkeypatch.setattr(P, "onnxruntime_available", lambda: True)
    assert P.choose_precision("cpu", "auto", flags={"amx_bf16"}, backend="onnxruntime") == "fp32"
    assert "ONNX Runtime" in P.precision_reason("cpu", "auto", "fp32", backend="onnxruntime")
    with pytest.raises(EngineError, match="fp32 only"):
        P.choose_precision("cpu", "bf16", backend="onnxruntime")
    with pytest.raises(EngineError, match="fp32 only"):
        P.choose_backend("cpu", "onnxruntime", "bf16")
    with pytest.raises(EngineError, match="CPU only"):
        P.choose_backend("cuda", "onnxruntime", "fp16")
    with pytest.raises(EngineError, match="int8 inference runs through OpenVINO"):
        P.check_combination("onnxruntime", "int8", [np.zeros((1, 3, 8, 8))])
    monkeypatch.setattr(P, "onnxruntime_available", lambda: False)
    with pytest.raises(EngineError, match="pip install"):
        P.choose_backend("cpu", "onnxruntime", "fp32")


# --------------------------------------------------------------------------- auto by measurement


def test_exact_paths_follow_the_cpu_and_the_request(monkeypatch):
    monkeypatch.setattr(S, "openvino_available", lambda: True)
    monkeypatch.setattr(S, "onnxruntime_available", lambda: True)
    avx2 = {"avx2"}
    assert S.exact_paths("cpu", "auto", avx2) == [("torch", "fp32"), ("openvino", "fp32"), ("onnxruntime", "fp32")]
    amx = {"avx2", "avx512f", "amx_bf16"}
    assert ("openvino", "bf16") in S.exact_paths("cpu", "auto", amx)
    assert ("onnxruntime", "bf16") not in S.exact_paths("cpu", "auto", amx)
    assert S.exact_paths("cpu", "fp32", amx) == S.exact_paths("cpu", "auto", avx2)
    assert S.exact_paths("cpu", "bf16", avx2) == []  # emulated bf16: nothing to choose
    assert S.exact_paths("cpu", "int8", amx) == []  # never auto
    assert S.exact_paths("cuda", "auto", amx) == []
    monkeypatch.setattr(S, "onnxruntime_available", lambda: False)
    assert ("onnxruntime", "fp32") not in S.exact_paths("cpu", "auto", avx2)


def test_measured_choice_is_cached_then_reused_without_measuring(cache, monkeypatch):
    net = tiny_net()
    said: list[str] = []
    first = Predictor.from_module(net, name="tiny", preprocessing=PRE64, measure="now",
                                  on_measure=lambda: said.append("measuring"))
    assert first.info["engine_choice"] == "measured" and said == ["measuring"]  # told before it measured
    assert "fastest agreeing path measured" in first.info["why"]
    files = list((cache / "engine-choice").glob("tiny-*-64-auto.json"))
    assert len(files) == 1
    saved = json.loads(files[0].read_text())
    assert (saved["backend"], saved["precision"]) == (first.info["backend"], first.info["precision"])
    labels = {m["backend"] for m in saved["measured"]}
    assert {b for b, _ in S.exact_paths("cpu", "auto")} == labels  # every available path was timed
    assert all(m["fps"] > 0 for m in saved["measured"] if m["error"] is None)
    assert saved["machine"] == S.machine()

    def no_measuring(*a, **k):
        raise AssertionError("measured again although the choice is cached")

    monkeypatch.setattr(S, "measure", no_measuring)
    second = Predictor.from_module(net, name="tiny", preprocessing=PRE64, measure="now",
                                   on_measure=lambda: said.append("again"))
    assert second.info["engine_choice"] == "measured" and said == ["measuring"]  # cached: nothing said
    assert (second.info["backend"], second.info["precision"]) == (saved["backend"], saved["precision"])
    frame = frames(1)
    out = second.predict(frame)[0]
    np.testing.assert_allclose(out, first.predict(frame)[0], atol=1e-6)  # the cached path is the one measured
    ref = Predictor.from_module(net, name="tiny", preprocessing=PRE64, backend="torch",
                                precision="fp32").predict(frame)[0]
    if saved["precision"] != "fp32":  # int8 or, with native bf16 (AMX), bf16 won: within the bar
        won = [m for m in saved["measured"] if (m["backend"], m["precision"]) == (saved["backend"], saved["precision"])]
        assert len(won) == 1 and won[0]["agrees"] and agrees(won[0]["agreement"])
        assert np.abs(out - ref).mean() < AGREEMENT["mean_abs_diff"]
    else:  # an exact path: fp32's output
        np.testing.assert_allclose(out, ref, atol=1e-4)


def test_new_weights_or_engine_version_invalidate_the_choice(cache, monkeypatch):
    net = tiny_net()
    head = InferenceHead(net, lambda y: y)
    digest = state_digest(head)
    S.measure(head, model_name="tiny", digest=digest, preprocessing=PRE64, cache_root=cache,
              paths=[("torch", "fp32")])  # one path is enough to cache a choice
    assert S.cached_choice(cache, "tiny", digest, 64) is not None
    other = state_digest(InferenceHead(tiny_net(seed=1), lambda y: y))
    assert S.cached_choice(cache, "tiny", other, 64) is None  # new weights
    assert S.cached_choice(cache, "tiny", digest, 96) is None  # another input size
    real = S.machine()
    for key, value in (("onnxruntime", "9.9.9"), ("openvino", "2099.1"), ("torch", "9.0.0"), ("cpu", "other")):
        monkeypatch.setattr(S, "machine", lambda key=key, value=value: {**real, key: value})
        assert S.cached_choice(cache, "tiny", digest, 64) is None, key
    monkeypatch.setattr(S, "machine", lambda: real)
    assert S.cached_choice(cache, "tiny", digest, 64) is not None
    # without a cached choice the static rule runs and says so
    p = Predictor.from_module(tiny_net(seed=1), name="tiny", preprocessing=PRE64)
    assert p.info["engine_choice"] == "rule" and "not measured" in p.info["why"]


class _Off(Backend):
    """A path that is very fast and wrong: its logits are shifted far from fp32's."""

    name = "onnxruntime"

    def __init__(self, inner: Backend) -> None:
        super().__init__("cpu", "fp32", inner.input_size)
        self.inner = inner
        self.out: np.ndarray | None = None

    def infer(self, batch: np.ndarray) -> np.ndarray:
        if self.out is None or len(self.out) != len(batch):
            self.out = self.inner.infer(batch) + 4.0
        return self.out


def test_a_path_that_disagrees_is_never_chosen_however_fast(cache, monkeypatch):
    real_make = S.make_backend

    def make(kind, head, size, **kw):
        be = real_make("torch" if kind == "onnxruntime" else kind, head, size, **kw)
        return _Off(be) if kind == "onnxruntime" else be

    monkeypatch.setattr(S, "make_backend", make)
    net = tiny_net()
    head = InferenceHead(net, lambda y: y)
    choice = S.measure(head, model_name="tiny", digest=state_digest(head), preprocessing=PRE64,
                       cache_root=cache, paths=[("torch", "fp32"), ("onnxruntime", "fp32")])
    assert choice is not None
    by = {m.label(): m for m in choice.measured}
    assert not by["onnxruntime fp32"].agrees and by["onnxruntime fp32"].agreement["mean_abs_diff"] > 0.01
    assert by["torch fp32"].agrees
    assert (choice.backend, choice.precision) == ("torch", "fp32")
    assert "disagrees" in choice.why


def test_background_measurement_never_blocks_and_the_next_build_uses_it(cache):
    net = tiny_net()
    p = Predictor.from_module(net, name="tiny", preprocessing=PRE64, measure="background")
    assert p.needs_measurement and p.info["engine_choice"] == "rule"
    done = threading.Event()
    seen: list = []

    def on_done(choice, error):
        seen.append((choice, error, threading.current_thread().name))
        done.set()

    thread = p.measure_in_background(on_done)
    assert thread is not None and thread.daemon
    assert not p.needs_measurement and p.measure_in_background(on_done) is None  # only once
    assert done.wait(120)
    choice, error, name = seen[0]
    assert error is None and choice is not None and name == "polypviewer-engine-choice"
    q = Predictor.from_module(net, name="tiny", preprocessing=PRE64, measure="background")
    assert not q.needs_measurement and q.info["engine_choice"] == "measured"
    assert q.info["backend"] == choice.backend


def test_asked_backend_and_no_cache_skip_measurement(cache, monkeypatch):
    monkeypatch.setattr(S, "measure", lambda *a, **k: pytest.fail("measured"))
    p = Predictor.from_module(tiny_net(), name="tiny", preprocessing=PRE64, backend="torch", measure="now")
    assert p.info["engine_choice"] == "asked"
    q = Predictor.from_module(tiny_net(), name="tiny", preprocessing=PRE64, cache=False, measure="now")
    assert q.info["engine_choice"] == "rule"
    with pytest.raises(ValueError, match="measure"):
        Predictor.from_module(tiny_net(), name="tiny", preprocessing=PRE64, measure="sometimes")


def test_make_backend_builds_each_peer(cache):
    head = InferenceHead(tiny_net(), lambda y: y)
    kinds = ["torch"] + (["openvino"] if P.openvino_available() else []) + \
        (["onnxruntime"] if P.onnxruntime_available() else [])
    x = np.random.RandomState(0).randn(1, 3, 64, 64).astype(np.float32)
    outs = {k: make_backend(k, head, 64, device="cpu", precision="fp32", model_name="tiny",
                            cache_root=cache).infer(x) for k in kinds}
    for k, y in outs.items():
        assert y.shape == (1, 64, 64), k
        np.testing.assert_allclose(y, outs["torch"], atol=1e-4, err_msg=k)
