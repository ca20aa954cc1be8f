"""ONNX Runtime's static int8 as the other int8 candidate (issue 17 §1): does it agree, is it faster?

Exports the shipped default (``models/default.json``'s checkpoint, its own input size) as the
ONNX Runtime backend does (``engine.backends.onnxruntime.export_onnx``), quantises it with
``onnxruntime.quantization.quantize_static`` (QDQ, per-channel s8 weights, u8 activations,
MinMax calibration) on the 16 shipped calibration frames (``engine.selection.
calibration_frames``, the engine int8's own), and, against the ONNX Runtime fp32 session and
the engine's OpenVINO int8 (``engine.backends.OpenVINOBackend``, NNCF, this CPU's recipe),
measures agreement with torch fp32 on the 8 held-out shipped frames (``engine.agreement``,
the bar ``auto`` uses) and single-frame latency in interleaved rounds. ``reduce_range``
quantises weights to 7 bits (ONNX Runtime's answer to the AVX2 u8s8 overflow); the third
variant also keeps the stem and block 0's depthwise convolution in float, as the engine's int8 does.

    .venv/bin/python benchmarks/ort_static_int8.py [--seconds 4] [--rounds 3] [--json OUT]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)

    import onnxruntime as ort
    import torch
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from polypviewer.core.fileio import write_json
    from polypviewer.engine.agreement import AGREEMENT, agrees, compare
    from polypviewer.engine.backends import InferenceHead, OpenVINOBackend, make_backend
    from polypviewer.engine.backends.onnxruntime import export_onnx, onnxruntime_version
    from polypviewer.engine.backends.quantise import int8_recipe
    from polypviewer.engine.policy import describe_cpu
    from polypviewer.engine.processing import prepare_input, probabilities
    from polypviewer.engine.selection import calibration_frames, reference_frames
    from polypviewer.engine.timing import interleaved, latency_step
    from polypviewer.engine.training import load_trained
    from polypviewer.nets.registry import _last
    from polypviewer.nets.weights import default_weights

    weights = default_weights()
    if weights is None:
        print("no shipped default model (models/default.json)", file=sys.stderr)
        return 2
    torch.set_num_threads(2)
    net, name, ckpt = load_trained(weights)
    pre = ckpt.preprocessing
    size = int(pre.input_size)
    head = InferenceHead(net.eval(), _last)
    cal = [prepare_input(f, pre)[None] for f in calibration_frames()]
    held = reference_frames()
    report: dict = {"machine": describe_cpu(), "onnxruntime": onnxruntime_version(), "model": name,
                    "weights": Path(weights).name, "input": size, "command": "python " + " ".join(sys.argv),
                    "calibration_frames": len(cal), "held_out_frames": len(held), "bar": AGREEMENT,
                    "quantise_s": {}, "agreement": {}, "latency_fps": {}}

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter(cal)

        def get_next(self) -> dict | None:
            x = next(self.items, None)
            return None if x is None else {"input": x}

    def session(path: str) -> ort.InferenceSession:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 2
        opts.inter_op_num_threads = 1
        return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])

    class Session:
        def __init__(self, sess: ort.InferenceSession) -> None:
            self.sess = sess

        def infer(self, batch: np.ndarray) -> np.ndarray:
            return self.sess.run(None, {"input": np.ascontiguousarray(batch, np.float32)})[0][:, 0]

    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        fp32.write_bytes(export_onnx(head, size))
        paths = {"onnxruntime fp32": Session(session(str(fp32)))}
        import onnx

        convs = [n.name for n in onnx.load(str(fp32)).graph.node if n.op_type == "Conv"]
        stem = convs[:2]  # the stem and block 0's depthwise convolution: what the engine keeps in float
        report["kept_in_float"] = stem
        for variant, reduce, exclude in (("onnxruntime static int8", False, []),
                                         ("onnxruntime static int8, 7-bit", True, []),
                                         ("onnxruntime static int8, 7-bit, stem float", True, stem)):
            out = Path(tmp) / f"int8-{len(report['quantise_s'])}.onnx"
            t0 = time.perf_counter()
            quantize_static(str(fp32), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            reduce_range=reduce, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            nodes_to_exclude=exclude)
            report["quantise_s"][variant] = round(time.perf_counter() - t0, 1)
            paths[variant] = Session(session(str(out)))
        t0 = time.perf_counter()
        ov = make_backend("openvino", head, size, device="cpu", precision="int8", model_name=name,
                          cache_root=None, calibration=cal)
        assert isinstance(ov, OpenVINOBackend)
        report["quantise_s"][f"openvino int8 ({int8_recipe()})"] = round(time.perf_counter() - t0, 1)
        paths[f"openvino int8 ({int8_recipe()})"] = ov
        torch_fp32 = make_backend("torch", head, size, device="cpu", precision="fp32", model_name=name)

        def probs(backend: object) -> list[np.ndarray]:
            return [probabilities(backend.infer(prepare_input(f, pre)[None])[0], f.shape[:2])  # type: ignore[attr-defined]
                    for f in held]

        ref = probs(torch_fp32)
        for label, be in paths.items():
            a = compare(probs(be), ref)
            report["agreement"][label] = {**(a or {}), "agrees": agrees(a)}
        x = cal[0]
        fps = interleaved({k: latency_step(be, x) for k, be in paths.items()}, args.seconds, args.rounds, settle=0.5)
        report["latency_fps"] = {k: round(v, 2) for k, v in fps.items()}
    base = report["latency_fps"]["onnxruntime fp32"]
    print(f"{report['machine']}; onnxruntime {report['onnxruntime']}; {name} {size} px, {Path(weights).name}")
    for label in paths:
        a = report["agreement"][label]
        print(f"  {label:<36} {report['latency_fps'][label]:7.2f} frames/s  {report['latency_fps'][label] / base:4.2f}x"
              f"  mean|dp| {a['mean_abs_diff']:.4f} Dice {a['dice']:.4f} agrees {a['agrees']}")
    if args.json:
        write_json(args.json, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
