"""An int8 that agrees with fp32? NNCF's accuracy-controlled quantisation, tried (issue 17 §1).

``nncf.quantize_with_accuracy_control`` quantises the OpenVINO model of the shipped default
(the conversion the engine runs), ranks the quantised layers by how much each one costs the
metric, and returns layers to floating point, most sensitive first, until the metric is within
``--max-drop`` of the fp32 model's. The metric is the engine's agreement bar: Dice of the
thresholded masks against torch fp32 (fp32's own is 1.0), per image, on EndoTect val frames
(never a test split); calibration on EndoTect train frames. The result is then scored with
``engine.agreement.compare`` on the same val frames and timed against OpenVINO fp32 and the
plain int8 (interleaved, same run). Writes the outcome as JSON.

    python benchmarks/int8_accuracy_control.py [--max-drop 0.015] [--val 20] [--calibration 32] \\
        [--json benchmarks/results/int8-accuracy-control.json]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

from polypviewer.cli.bench import real_frames
from polypviewer.core.fileio import atomic_write
from polypviewer.core.masks import THRESHOLD
from polypviewer.engine.agreement import agrees, compare
from polypviewer.engine.backends import OpenVINOBackend
from polypviewer.engine.backends.quantise import quantise_int8
from polypviewer.engine.inference import Predictor
from polypviewer.engine.policy import describe_cpu
from polypviewer.engine.processing import probabilities
from polypviewer.engine.timing import interleaved, stream_step

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def dice(p: np.ndarray, q: np.ndarray) -> float:
    a, b = p >= THRESHOLD, q >= THRESHOLD
    total = int(a.sum() + b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-drop", type=float, default=0.015, help="allowed Dice drop vs fp32 (default 0.015)")
    ap.add_argument("--val", type=int, default=20, help="val frames the accuracy control selects on")
    ap.add_argument("--held-out", type=int, default=40,
                    help="EndoTect train frames after the calibration ones, never seen by the quantisation "
                         "or the selection, to score the result on (the val split has only 20)")
    ap.add_argument("--calibration", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    import nncf
    import openvino as ov

    nncf.set_log_level(logging.ERROR)
    val = real_frames(DATA, "val", args.val)
    held = real_frames(DATA, "train", args.calibration + args.held_out)[args.calibration:]
    cal = real_frames(DATA, "train", args.calibration)
    if not val or not cal:
        print(f"real data not found under {DATA}", file=sys.stderr)
        return 2
    ref = Predictor.create(backend="torch", precision="fp32")  # the shipped default
    pre = ref.preprocessing
    ref_maps = ref.predict(val)
    xs_val = [ref.prepare(f)[None] for f in val]
    xs_cal = [ref.prepare(f)[None] for f in cal]
    ovb = Predictor.create(backend="openvino", precision="fp32", cache=False).backend
    assert isinstance(ovb, OpenVINOBackend)
    fp32_model = ovb.model
    core = ov.Core()

    def validate(compiled, items):
        scores = []
        for i in items:
            logits = compiled(xs_val[i])[0][0, 0]
            scores.append(dice(probabilities(np.asarray(logits, dtype=np.float32), val[i].shape[:2]), ref_maps[i]))
        return float(np.mean(scores)), scores

    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        controlled = nncf.quantize_with_accuracy_control(
            fp32_model, nncf.Dataset(xs_cal), nncf.Dataset(list(range(len(val)))), validate,
            max_drop=args.max_drop, drop_type=nncf.DropType.ABSOLUTE, subset_size=len(xs_cal))
    quantise_s = time.perf_counter() - t0
    plain = quantise_int8(fp32_model, xs_cal)
    models = {"openvino fp32": fp32_model, "int8 (plain NNCF)": plain, "int8 (accuracy control)": controlled}
    compiled = {k: core.compile_model(m, "CPU", {"PERFORMANCE_HINT": "THROUGHPUT", "INFERENCE_PRECISION_HINT": "f32"})
                for k, m in models.items()}
    agreement, held_out = {}, {}
    held_maps = ref.predict(held)
    for k, cm in compiled.items():
        maps = [probabilities(np.asarray(cm(x)[0][0, 0], dtype=np.float32), f.shape[:2]) for x, f in zip(xs_val, val,
                                                                                                         strict=True)]
        agreement[k] = compare(maps, ref_maps)
        maps = [probabilities(np.asarray(cm(ref.prepare(f)[None])[0][0, 0], dtype=np.float32), f.shape[:2])
                for f in held]
        held_out[k] = compare(maps, held_maps)

    def quantised(m):  # the nodes whose inputs a FakeQuantize feeds: what runs in int8
        return {t.get_node().get_friendly_name() for op in m.get_ops() if op.get_type_name() == "FakeQuantize"
                for t in op.output(0).get_target_inputs()}

    kept_float = sorted(quantised(plain) - quantised(controlled))

    class _Stream:  # the backend's stream shape over a compiled model (AsyncInferQueue, 2 in flight)
        def __init__(self, cm):
            self.cm = cm

        def stream(self, on_result):
            q = ov.AsyncInferQueue(self.cm, 2)

            class S:
                def submit(self, tag, x):
                    q.start_async({0: x}, tag)

                def wait(self):
                    q.wait_all()

            return S()

    fps = interleaved({k: stream_step(_Stream(cm), xs_val[0], 16) for k, cm in compiled.items()}, args.seconds, 3,
                      settle=1.0)
    fq = {k: sum(1 for op in m.get_ops() if op.get_type_name() == "FakeQuantize") for k, m in models.items()}
    report = {"machine": describe_cpu(), "command": "python " + " ".join(sys.argv),
              "date": datetime.date.today().isoformat(), "load_average": [round(v, 2) for v in os.getloadavg()],
              "model": ref.info["model"], "weights": ref.info["version"], "input": int(pre.input_size),
              "val_frames": len(val), "calibration_frames": len(cal), "max_drop": args.max_drop,
              "quantise_with_accuracy_control_s": round(quantise_s, 1),
              "fake_quantize_ops": fq, "kept_in_float_by_accuracy_control": kept_float,
              "agreement_on_selection_frames": agreement,
              "agrees_on_selection_frames": {k: agrees(a) for k, a in agreement.items()},
              "held_out_frames": len(held), "agreement_held_out": held_out,
              "agrees_held_out": {k: agrees(a) for k, a in held_out.items()},
              "pipeline_fps": {k: round(v, 2) for k, v in fps.items()}}
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(args.json, json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
