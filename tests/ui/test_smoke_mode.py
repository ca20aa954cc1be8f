"""`polypviewer demo --screenshot FILE --frames N` in a subprocess: plays frames through the
real pipeline, writes the PNG, exits 0, and stops its threads cleanly (Qt prints "QThread:
Destroyed while thread is still running" and aborts otherwise)."""

from __future__ import annotations

import os
import subprocess
import sys

import cv2
import numpy as np
import pytest


def _headless_env() -> dict:
    """No display and no platform chosen: smoke mode must pick offscreen by itself on Linux."""
    drop = ("QT_QPA_PLATFORM", "DISPLAY", "WAYLAND_DISPLAY") if sys.platform.startswith("linux") else ()
    env = {k: v for k, v in os.environ.items() if k not in drop}
    return env if drop else dict(env, QT_QPA_PLATFORM="offscreen")


@pytest.mark.slow
def test_demo_screenshot_smoke_mode(tmp_path):
    shot = tmp_path / "shot.png"
    env = _headless_env()
    cmd = [sys.executable, "-m", "polypviewer", "demo", "--screenshot", str(shot), "--frames", "3",
           "--size", "1440x900", "--model", "unet", "--random-weights", "--backend", "torch",
           "--precision", "fp32", "--timeout", "120"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "QThread" not in out.stderr and "Traceback" not in out.stderr, out.stderr[-3000:]
    assert "3 frames shown" in out.stdout
    img = cv2.imread(str(shot))
    assert img is not None and img.shape[:2] == (900, 1440)
    assert float(np.std(img)) > 10  # a real picture, not a blank window


def test_screenshot_needs_a_source_and_bad_path_is_one_line(tmp_path):
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    out = subprocess.run([sys.executable, "-m", "polypviewer", str(tmp_path / "nope.mp4"), "--screenshot",
                          str(tmp_path / "x.png")], capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "nope.mp4" in out.stderr


@pytest.mark.slow
def test_smoke_mode_fails_when_the_model_cannot_be_loaded(tmp_path):
    """Without the real pipeline a smoke run proves nothing: a bad checkpoint is exit 1."""
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a checkpoint")
    out = subprocess.run([sys.executable, "-m", "polypviewer", "demo", "--screenshot", str(tmp_path / "x.png"),
                          "--frames", "2", "--weights", str(bad), "--timeout", "120"],
                         capture_output=True, text=True, timeout=180, env=_headless_env())
    assert out.returncode == 1, out.stderr[-2000:]
    assert "bad.safetensors" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "x.png").exists()
