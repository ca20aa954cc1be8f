"""When ``auto`` runs the measured int8 path, the model panel and the message log say so:
the precision and engine under *Runs on*, what int8 is and its held-out agreement under *Why*."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch
from torch import nn

from polypviewer.engine import selection as S
from polypviewer.engine.backends import InferenceHead, state_digest
from polypviewer.engine.policy import nncf_available, openvino_available
from polypviewer.nets.registry import IMAGENET_MEAN, IMAGENET_STD, Preprocessing

pytestmark = pytest.mark.skipif(not (openvino_available() and nncf_available()),
                                reason="openvino and nncf needed: pip install 'polypviewer[int8]'")


def test_a_measured_int8_engine_shows_in_the_model_panel(qtbot, tmp_path, monkeypatch):
    from polypviewer.engine.inference import Predictor
    from polypviewer.ui.main_window import _model_line
    from polypviewer.ui.panels import ModelPanel

    monkeypatch.setenv("POLYPVIEWER_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU6(), nn.Conv2d(8, 8, 3, padding=1, groups=8),
                        nn.ReLU(), nn.Conv2d(8, 1, 1)).eval()
    pre = Preprocessing(64, "RGB", IMAGENET_MEAN, IMAGENET_STD)
    rs = np.random.RandomState(0)
    cal = [rs.randint(0, 256, (48, 56, 3), dtype=np.uint8) for _ in range(4)]
    monkeypatch.setattr(S, "calibration_frames", lambda: cal)
    digest = state_digest(InferenceHead(net, lambda y: y))
    why = ("openvino int8 (NNCF, stem in fp32, calibrated on 4 shipped frames; agrees with fp32 on 3 others: "
           "mean |dp| 0.0040, Dice 0.990): the fastest agreeing path measured on this CPU (9.0 frames/s)")
    choice = S.Choice("openvino", "int8", why, [S.Measurement("openvino", "int8", fps=9.0, agrees=True,
                                                              calibration_frames=4)],
                      machine=S.machine(), calibration=S.frames_digest(cal))
    path = S.choice_path(tmp_path / "cache", "tiny", digest, 64, "auto")
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(choice.to_json()))
    info = Predictor.from_module(net, name="tiny", preprocessing=pre, measure="background").info
    assert (info["precision"], info["backend"], info["engine_choice"]) == ("int8", "openvino", "measured")
    panel = ModelPanel(["tiny"])
    qtbot.addWidget(panel)
    panel.set_info(info)
    assert panel.info["runs_on"].text() == "cpu · int8 · openvino"
    assert "kept in fp32" in panel.info["runs_on"].toolTip()
    assert panel.info["why"].text() == why
    line = _model_line(info)
    assert "on openvino int8 cpu" in line and "agrees with fp32 on 3 others" in line


@pytest.mark.slow
def test_the_window_switches_to_a_measured_int8_and_runs_it(qtbot, tmp_path, monkeypatch):
    """The background measurement (int8 made the agreeing, fastest path on purpose: the other
    paths sleep, int8's measured stand-in is exact) caches an int8 choice; the window rebuilds
    on it, quantising for real on the shipped calibration frames, and predicts with it."""
    from polypviewer.engine.backends import Backend
    from polypviewer.nets.registry import build_model
    from polypviewer.nets.weights import save_checkpoint
    from polypviewer.ui.main_window import MainWindow

    if not S.calibration_frames():
        pytest.skip("resources/demo/polypgen not present")
    monkeypatch.setenv("POLYPVIEWER_CACHE", str(tmp_path / "cache"))
    # Plan as an AVX2-only CPU (the measuring child reads the cap too): with native bf16 (AMX)
    # OpenVINO bf16 ran this tiny network as fast as int8 (936 against 909 frames/s) and won.
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    monkeypatch.setattr(S, "SECONDS", 0.1)
    torch.manual_seed(0)
    weights = tmp_path / "unet64.safetensors"
    save_checkpoint(weights, build_model("unet"), model_name="unet",
                    preprocessing=Preprocessing(64, "RGB", IMAGENET_MEAN, IMAGENET_STD))
    real = S.make_backend

    class Slow(Backend):
        def __init__(self, inner: Backend) -> None:
            super().__init__("cpu", inner.precision, inner.input_size)
            self.inner = inner

        def infer(self, batch):
            time.sleep(0.2)
            return self.inner.infer(batch)

    def make(kind, head, size, **kw):
        if kw.get("precision") == "int8":
            assert kw.get("calibration")
            return real("torch", head, size, **{**kw, "precision": "fp32", "calibration": None})
        return Slow(real(kind, head, size, **kw))

    monkeypatch.setattr(S, "make_backend", make)
    win = MainWindow(load_default_model=False, predictor_options={"backend": "auto", "measure": "background"})
    qtbot.addWidget(win)
    win.show()
    seen: list[dict] = []
    win.predictions.model_ready.connect(lambda info: seen.append(dict(info)))
    win.load_model(None, str(weights))
    qtbot.waitUntil(lambda: any(i.get("precision") == "int8" for i in seen), timeout=600_000)
    final = next(i for i in seen if i.get("precision") == "int8")
    assert final["engine_choice"] == "measured" and final["backend"] == "openvino"
    assert final["calibration_frames"] == len(S.calibration_frames()) and "kept in fp32" in final["path"]
    assert "agrees with fp32 on 8 others" in final["why"]
    assert win.model_panel.info["runs_on"].text() == "cpu · int8 · openvino"
    predictor = win.predictions._worker.predictor  # the worker's, idle: no source is open
    assert predictor is not None and predictor.info["precision"] == "int8"
    assert any(op.get_type_name() == "FakeQuantize" for op in predictor.backend.model.get_ops())  # really int8
    frame = S.reference_frames()[0]
    prob = predictor.predict([frame])[0]
    assert prob.shape == frame.shape[:2] and np.isfinite(prob).all()
