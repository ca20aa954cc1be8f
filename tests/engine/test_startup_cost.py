"""What building the predictor costs at start-up (issue 16: first overlay < 4 s warm): it
imports no engine it does not run (ONNX's import takes 0.7 s and NNCF's 0.5 s; asking whether
``auto`` has paths to measure, or naming the machine a cached choice was measured on, used to
import both), and OpenVINO compiles only the model the look-ahead streams run on, the
single-frame one when it is first used."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from polypviewer.engine.policy import nncf_available, onnxruntime_available, openvino_available

CHILD = textwrap.dedent("""
    import sys
    from polypviewer.engine.inference import Predictor
    p = Predictor.create(weights=sys.argv[1], measure="background")
    print(p.info["engine_choice"], p.needs_measurement,
          *(m for m in ("onnx", "onnxruntime", "nncf") if m in sys.modules))
""")


@pytest.mark.skipif(not (onnxruntime_available() or nncf_available()), reason="neither ONNX nor NNCF installed")
def test_an_auto_build_waiting_for_its_measurement_imports_neither_onnx_nor_nncf(unet64, tmp_path):
    env = {**__import__("os").environ, "POLYPVIEWER_CACHE": str(tmp_path / "cache")}
    out = subprocess.run([sys.executable, "-c", CHILD, str(unet64)], capture_output=True, text=True,
                         env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    words = out.stdout.split()
    assert words[:2] == ["rule", "True"]  # nothing cached: the rule now, measured in the background
    assert words[2:] == [], f"imported at start-up: {words[2:]}"


@pytest.mark.skipif(not openvino_available(), reason="OpenVINO not installed")
def test_openvino_compiles_the_single_frame_model_only_when_first_used(unet64, tmp_path, monkeypatch):
    from polypviewer.engine.inference import Predictor

    monkeypatch.setenv("POLYPVIEWER_CACHE", str(tmp_path / "cache"))
    p = Predictor.create(weights=unet64, backend="openvino", precision="fp32")
    assert set(p.backend._compiled) == {"THROUGHPUT"}
    prob = p.predict([np.zeros((48, 80, 3), np.uint8)])[0]  # one frame: the latency model, compiled now
    assert prob.shape == (48, 80) and set(p.backend._compiled) == {"THROUGHPUT", "LATENCY"}
