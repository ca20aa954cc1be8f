"""`polypviewer demo --screenshot FILE --frames N` in a subprocess: plays frames through the
real pipeline, writes the PNG, exits 0, and stops its threads cleanly (Qt prints "QThread:
Destroyed while thread is still running" and aborts otherwise)."""

from __future__ import annotations

import os
import subprocess
import sys

import cv2
import numpy as np


def test_demo_screenshot_smoke_mode(tmp_path):
    shot = tmp_path / "shot.png"
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
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
