"""What ``auto`` chooses for the shipped default on this machine, measured from scratch.

Run with an empty cache folder so the engines are measured now rather than read from an
earlier choice (``engine.selection``): every candidate path (torch, OpenVINO, ONNX Runtime in
fp32, bf16 where native, and the int8 calibrated on the 16 shipped PolypGen frames), scored on
the other 8 shipped frames and timed through its stream. Prints JSON: the machine, the load,
how long measuring took, the predictor's ``info`` (engine, why) and the cached choice file.

    POLYPVIEWER_CACHE=$(mktemp -d) python benchmarks/auto_choice.py > benchmarks/results/int8-auto-choice.json
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path


def main() -> int:
    if not os.environ.get("POLYPVIEWER_CACHE"):
        print("set POLYPVIEWER_CACHE to an empty folder (the choice is measured into it)", file=sys.stderr)
        return 2
    from polypviewer.engine import selection as S
    from polypviewer.engine.inference import Predictor
    from polypviewer.engine.policy import describe_cpu

    t = time.perf_counter()
    p = Predictor.create(measure="now")
    dt = time.perf_counter() - t
    keys = ("model", "version", "backend", "precision", "path", "why", "engine_choice", "calibration_frames",
            "measured")
    out = {"machine": describe_cpu(), "load_average": os.getloadavg(), "measure_s": round(dt, 1),
           "info": {k: p.info.get(k) for k in keys}}
    files = list((Path(os.environ["POLYPVIEWER_CACHE"]) / S.FOLDER).glob("*.json"))
    out["choice"] = json.loads(files[0].read_text()) if files else None
    print(json.dumps(out, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
