"""An int8 that agrees with fp32? NNCF's accuracy-controlled quantisation, and the engine's int8 (issue 17 §1).

``nncf.quantize_with_accuracy_control`` quantises the OpenVINO model of the shipped default
(the conversion the engine runs), ranks the quantised layers by how much each one costs the
metric, and returns layers to floating point, most sensitive first, until the metric is within
``--max-drop`` of the fp32 model's. The metric is the engine's agreement bar: Dice of the
thresholded masks against torch fp32 (fp32's own is 1.0), per image, on EndoTect val frames
(never a test split); calibration on EndoTect train frames. The result is then scored with
``engine.agreement.compare`` on the same val frames and on held-out frames, and timed against
OpenVINO fp32, the plain int8 (everything quantised) and the engine's int8 (the stem kept in
float, ``engine/backends/quantise.py``), interleaved in the same run. Writes the outcome as JSON.

``--no-accuracy-control`` skips the 10-17 minute search and compares fp32, plain int8 and
the engine's int8 only; ``--calibration-set polypgen`` calibrates both int8 on the 16 shipped
PolypGen frames ``auto`` calibrates on (``engine.selection.calibration_frames``), and then
every EndoTect frame scored is held out (train[:--held-out] as well as val), plus the 8
shipped frames ``auto`` scores on.

    python benchmarks/int8_accuracy_control.py [--max-drop 0.015] [--val 20] [--calibration 32] \\
        [--no-accuracy-control] [--calibration-set endotect|polypgen] \\
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
from polypviewer.core.fileio import write_json
from polypviewer.core.masks import THRESHOLD
from polypviewer.core.paths import shared_data_default
from polypviewer.engine.agreement import agrees, compare
from polypviewer.engine.backends import OpenVINOBackend
from polypviewer.engine.backends.quantise import quantise_int8
from polypviewer.engine.inference import Predictor
from polypviewer.engine.policy import describe_cpu
from polypviewer.engine.processing import probabilities
from polypviewer.engine.selection import calibration_frames, reference_frames
from polypviewer.engine.timing import interleaved, stream_step

DATA = shared_data_default()


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
    ap.add_argument("--no-accuracy-control", action="store_true",
                    help="skip nncf.quantize_with_accuracy_control (10-17 min here): fp32, plain and engine int8 only")
    ap.add_argument("--calibration-set", choices=("endotect", "polypgen"), default="endotect",
                    help="endotect: --calibration EndoTect train frames; polypgen: the 16 shipped frames auto uses")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    import nncf
    import openvino as ov

    nncf.set_log_level(logging.ERROR)
    val = real_frames(DATA, "val", args.val)
    shipped_held: list[np.ndarray] = []
    if args.calibration_set == "polypgen":
        cal = calibration_frames()
        held = real_frames(DATA, "train", args.held_out)
        shipped_held = reference_frames()
    else:
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

    quantise_s: dict[str, float] = {}
    models = {"openvino fp32": fp32_model}
    t0 = time.perf_counter()
    models["int8 (plain NNCF)"] = quantise_int8(fp32_model, xs_cal, keep_float=[])
    quantise_s["int8 (plain NNCF)"] = round(time.perf_counter() - t0, 1)
    t0 = time.perf_counter()
    models["int8 (engine: stem in float)"] = quantise_int8(fp32_model, xs_cal)
    quantise_s["int8 (engine: stem in float)"] = round(time.perf_counter() - t0, 1)
    if not args.no_accuracy_control:
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            models["int8 (accuracy control)"] = nncf.quantize_with_accuracy_control(
                fp32_model, nncf.Dataset(xs_cal), nncf.Dataset(list(range(len(val)))), validate,
                max_drop=args.max_drop, drop_type=nncf.DropType.ABSOLUTE, subset_size=len(xs_cal))
        quantise_s["int8 (accuracy control)"] = round(time.perf_counter() - t0, 1)
    compiled = {k: core.compile_model(m, "CPU", {"PERFORMANCE_HINT": "THROUGHPUT", "INFERENCE_PRECISION_HINT": "f32"})
                for k, m in models.items()}
    agreement, held_out, shipped = {}, {}, {}
    held_maps = ref.predict(held)
    shipped_maps = ref.predict(shipped_held)

    def maps_of(cm, frames):
        return [probabilities(np.asarray(cm(ref.prepare(f)[None])[0][0, 0], dtype=np.float32), f.shape[:2])
                for f in frames]

    for k, cm in compiled.items():
        agreement[k] = compare(maps_of(cm, val), ref_maps)
        held_out[k] = compare(maps_of(cm, held), held_maps)
        if shipped_held:
            shipped[k] = compare(maps_of(cm, shipped_held), shipped_maps)

    def quantised(m):  # the nodes whose inputs a FakeQuantize feeds: what runs in int8
        return {t.get_node().get_friendly_name() for op in m.get_ops() if op.get_type_name() == "FakeQuantize"
                for t in op.output(0).get_target_inputs()}

    plain = models["int8 (plain NNCF)"]
    kept_float = {k: sorted(quantised(plain) - quantised(m)) for k, m in models.items() if k.startswith("int8")
                  and m is not plain}

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
              "val_frames": len(val), "calibration_set": args.calibration_set, "calibration_frames": len(cal),
              "max_drop": args.max_drop, "quantise_s": quantise_s,
              "fake_quantize_ops": fq, "kept_in_float": kept_float,
              "agreement_on_selection_frames": agreement,
              "agrees_on_selection_frames": {k: agrees(a) for k, a in agreement.items()},
              "held_out_frames": len(held), "agreement_held_out": held_out,
              "agrees_held_out": {k: agrees(a) for k, a in held_out.items()},
              "shipped_held_out_frames": len(shipped_held), "agreement_shipped_held_out": shipped,
              "agrees_shipped_held_out": {k: agrees(a) for k, a in shipped.items()},
              "pipeline_fps": {k: round(v, 2) for k, v in fps.items()}}
    print(json.dumps(report, indent=2))
    if args.json:
        write_json(args.json, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
