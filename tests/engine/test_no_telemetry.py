"""No usage data leaves the app: OpenVINO's converter and NNCF send telemetry by default."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("openvino")

CHILD = """
import sys
import polypviewer  # first, as every entry point imports it
import openvino as ov
import torch
ov.convert_model(torch.nn.Conv2d(3, 3, 1), example_input=torch.zeros(1, 3, 8, 8))
try:
    import nncf  # noqa: F401  (its telemetry wrapper imports openvino_telemetry too)
except ImportError:
    pass
print(sys.modules.get("openvino_telemetry", "absent"))
"""


def test_converting_a_model_sends_nothing_and_writes_nothing_in_home(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items()
           if k not in ("CI", "TF_BUILD", "JENKINS_URL")}  # each of these switches telemetry off
    env["HOME"] = str(home)
    root = Path(__file__).resolve().parents[2]
    env["PYTHONPATH"] = os.pathsep.join([str(root), env.get("PYTHONPATH", "")])
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True,
                         timeout=300, check=True)
    assert out.stdout.strip().splitlines()[-1] == "None"  # the telemetry package cannot be imported
    assert list(home.iterdir()) == []  # openvino_telemetry writes ~/intel/{openvino_ga_cid,stats}
