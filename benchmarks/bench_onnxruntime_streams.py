"""How many ONNX Runtime runs to keep in flight for the look-ahead pipeline.

Times the onnxruntime backend's stream (``engine/backends/onnxruntime.py``) with 1, 2 and 4
runs in flight (each on a session of its own with the cores shared out), against its
single-frame latency path, interleaved in rounds in one process (so a neighbour's load hits
every variant alike). ``DEFAULT_RUNS_IN_FLIGHT`` is set from this. Shipped weights of the
default model (else random, seed 0), batch 1, fp32. Writes the table as JSON.

    python benchmarks/bench_onnxruntime_streams.py [--model lite_pranet] [--seconds 6] \\
        [--json benchmarks/results/onnxruntime-streams.json]
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
from pathlib import Path

import numpy as np
import torch

from polypviewer.core.fileio import write_json
from polypviewer.engine.backends import InferenceHead
from polypviewer.engine.backends.onnxruntime import OnnxRuntimeBackend, onnxruntime_version
from polypviewer.engine.policy import describe_cpu
from polypviewer.engine.timing import interleaved, latency_step, stream_step
from polypviewer.nets import build_model, get_spec
from polypviewer.nets.weights import load_weights, shipped_for


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="lite_pranet")
    ap.add_argument("--seconds", type=float, default=6.0, help="timed per variant (default 6)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    spec = get_spec(args.model)
    torch.manual_seed(0)
    net = build_model(args.model).eval()
    records = shipped_for(args.model)
    if records:
        load_weights(net, records[0].file, args.model)
    size = spec.preprocessing.input_size
    head = InferenceHead(net, spec.select)
    x = np.random.RandomState(0).randn(1, 3, size, size).astype(np.float32)
    variants = {k: OnnxRuntimeBackend(head, size, runs_in_flight=k) for k in (1, 2, 4)}
    paths = {"latency (1 session, all threads)": latency_step(variants[1], x)}
    for k, be in variants.items():
        paths[f"stream, {k} in flight ({max(1, be.threads // k)} threads each)"] = stream_step(be, x, 8 * k)
    per_round: dict[str, list[float]] = {}
    fps = interleaved(paths, args.seconds, args.rounds, settle=1.0, per_round=per_round)
    load = [round(v, 2) for v in os.getloadavg()]
    report = {"machine": describe_cpu(), "onnxruntime": onnxruntime_version(), "torch": torch.__version__,
              "model": args.model, "input": size, "weights": records[0].version if records else "random init",
              "command": "python " + " ".join(sys.argv), "date": datetime.date.today().isoformat(),
              "load_average_after": load, "fps": {k: round(v, 2) for k, v in fps.items()},
              "fps_per_round": per_round}
    print(f"{report['machine']}; onnxruntime {report['onnxruntime']}; load average {load}")
    print(f"command: {report['command']}")
    base = fps["latency (1 session, all threads)"]
    for k, v in fps.items():
        print(f"  {k:<44} {v:7.2f} frames/s  {v / base:4.2f}x  rounds {per_round[k]}")
    if args.json:
        write_json(args.json, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
