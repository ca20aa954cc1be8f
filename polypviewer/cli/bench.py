"""``polypviewer bench [--model NAME ...] [--json FILE] [--seconds S] [--quick]``

For each network, frames/s of a baseline (PyTorch fp32, eager, batch 1, no BN folding; the
better of one thread and all threads, see ``one_thread``) and
of the engine's paths, measured in the same run and interleaved in rounds (so a neighbour's
load hits both alike), and the ratio best / baseline. Paths:

- ``torch``: the engine's PyTorch path (BN folded, channels_last, bf16 autocast where native);
- ``openvino-latency``: OpenVINO, one frame at a time (what a single "predict this frame" costs);
- ``openvino-pipeline``: OpenVINO with several infer requests in flight (the look-ahead pipeline);
- ``onnxruntime-latency`` / ``onnxruntime-pipeline``: ONNX Runtime's CPU provider on the same
  export, one frame at a time / several runs in flight (when ``onnxruntime`` is installed);
- ``int8-latency`` / ``int8-pipeline``: the same, quantised to int8 by NNCF on 32 real training
  frames with the stem in fp32, as the engine's int8 is (``engine/backends/quantise.py``; only
  when NNCF is installed and the real data is there).

Before each timed slice the machine idles for a moment (the same for every path), so one
path's leftovers (PyTorch's OpenMP threads spinning, OpenVINO's workers) do not slow the next.

Each network runs with its shipped weights, or else random weights (seed 0) whose BatchNorm
statistics are calibrated on a few real frames (``engine.calibration``), so activations,
and thus speed and bf16 error, are realistic; ``--weights NAME=FILE`` benches other weights.
Every fast engine's agreement with fp32 (mean |dp| and Dice of the thresholded masks) on 20
real validation images is reported; "agrees" means mean |dp| < 0.01 and Dice > 0.98, and
``best_agreeing`` is the fastest path that does. ``fp32_noise_floor`` scores fp32 against
itself with invisible input noise (+-0.5 grey level): the scale on which to read those numbers. End to end: the real
``predict`` loop (decode, infer, write PNGs) on ``../shared/data/video/colonoscopy_clip_384.mp4``,
repeated to get a stable number, and its ratio to the model-only pipeline frames/s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from polypviewer.engine.agreement import AGREEMENT, agrees, compare, noise_floor  # noqa: F401 - bench's API
from polypviewer.engine.timing import interleaved, latency_step, one_thread, stream_step

DEFAULT_CLIP = "video/colonoscopy_clip_384.mp4"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", action="append", metavar="NAME", help="model to bench (repeatable; default: all)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--seconds", type=float, default=6.0, help="measuring time per path (default 6)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per path (default 3)")
    parser.add_argument("--quick", action="store_true", help="tiny durations, for tests (numbers are rough)")
    parser.add_argument("--data", type=Path, metavar="DIR",
                        help="real data folder (default: ../shared/data beside the project, or "
                             "$POLYPVIEWER_SHARED_DATA)")
    parser.add_argument("--size", type=int, metavar="S",
                        help="input side instead of each model's native one (quick checks; not comparable)")
    parser.add_argument("--no-end-to-end", action="store_true", help="skip the end-to-end predict measurement")
    parser.add_argument("--end-to-end-model", metavar="NAME",
                        help="model for the end-to-end run (default: pranet if benched, else the first)")
    parser.add_argument("--weights", action="append", metavar="NAME=FILE", default=[],
                        help="bench model NAME with these weights instead of the shipped / random ones (repeatable)")
    parser.add_argument("--no-int8", action="store_true", help="skip the int8 paths (their calibration takes a while)")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"),
                        help="precision of the torch and OpenVINO paths (default auto: bf16 where the CPU has "
                             "it natively); ONNX Runtime runs fp32 either way. fp32 compares the engines at "
                             "one precision")


def _data_dir(arg: Path | None) -> Path | None:
    if arg is not None:
        return arg
    from polypviewer.core.paths import shared_data_dir

    return shared_data_dir()


def _load() -> list[float] | None:
    """1/5/15-minute load averages: speeds measured on a busy machine are lower and noisier."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def machine() -> str:
    import torch

    from polypviewer.engine.backends.onnxruntime import onnxruntime_version
    from polypviewer.engine.policy import cpu_has_native_bf16, describe_cpu, openvino_available

    ov = "none"
    if openvino_available():
        import openvino

        ov = openvino.__version__.split("-")[0]
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return (f"{describe_cpu()}{', native bf16' if cpu_has_native_bf16() else ''}"
            f"{gpu}; {platform.system()} {platform.machine()}; python {platform.python_version()}, "
            f"torch {torch.__version__} ({torch.get_num_threads()} threads), openvino {ov}, "
            f"onnxruntime {onnxruntime_version()}")


def real_frames(data: Path | None, split: str, n: int) -> list[Any]:
    """Up to ``n`` RGB frames of the EndoTect ``split`` (train / val); [] without the data."""
    import cv2

    if data is None or not (data / "endotect" / "split.json").is_file():
        return []
    stems = json.loads((data / "endotect" / "split.json").read_text())[split][:n]
    out = []
    for s in stems:
        path = next((data / "endotect" / "images").glob(f"{s}.*"), None)
        img = cv2.imread(str(path)) if path else None
        if img is not None:
            out.append(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
    return out


def preprocessing(name: str, size: int | None) -> Any:
    """The model's preprocessing, at ``size`` instead of its native input when given."""
    import dataclasses

    from polypviewer.nets import get_spec

    pre = get_spec(name).preprocessing
    return dataclasses.replace(pre, input_size=size) if size else pre


def network(name: str, data: Path | None, quick: bool, size: int | None = None,
            weights: Path | None = None) -> tuple[Any, str, Any]:
    """The network to time and the checkpoint's preprocessing (None for random weights):
    ``weights`` when given, else shipped weights when there are
    some, else random weights (seed 0) with BatchNorm statistics calibrated on real
    training frames."""
    import numpy as np
    import torch

    from polypviewer.engine.calibration import calibrate_batchnorm
    from polypviewer.engine.inference import prepare_input
    from polypviewer.nets import build_model
    from polypviewer.nets.weights import CheckpointError, load_weights, shipped_for

    try:
        records = shipped_for(name)
    except CheckpointError:
        records = []
    torch.manual_seed(0)
    net = build_model(name).eval()
    if weights is not None or records:
        from polypviewer.nets.weights import load_checkpoint

        ckpt = load_checkpoint(weights if weights is not None else records[0].file)
        load_weights(net, ckpt, name)
        what = (f"weights {weights.name} ({(ckpt.sha256 or '')[:12]})" if weights is not None
                else f"shipped weights {records[0].version}")
        return net.eval(), what, ckpt.preprocessing
    calib = real_frames(data, "train", 2 if quick else 8)
    if not calib:
        return net, "random init (BN statistics not calibrated: no real data)", None
    pre = preprocessing(name, size)
    calibrate_batchnorm(net, [np.stack([prepare_input(f, pre) for f in calib[i:i + 4]])
                              for i in range(0, len(calib), 4)])
    return net, f"random init, BN statistics calibrated on {len(calib)} real frames", None


def bench_model(name: str, data: Path | None, seconds: float, rounds: int, quick: bool,
                size: int | None = None, weights: Path | None = None,
                int8: bool = True, precision: str = "auto") -> tuple[dict[str, Any], Any]:
    import numpy as np
    import torch

    from polypviewer.engine.backends import InferenceHead, TorchBackend, nncf_available, openvino_available
    from polypviewer.engine.inference import Predictor, prepare_input
    from polypviewer.engine.policy import onnxruntime_available
    from polypviewer.nets import get_spec

    spec = get_spec(name)
    net, described_weights, trained_pre = network(name, data, quick, size, weights)
    # the checkpoint's own input size and normalisation (the app's), unless --size overrides it
    pre = trained_pre if trained_pre is not None and not size else preprocessing(name, size)
    size = pre.input_size
    val = real_frames(data, "val", 2 if quick else 20)
    x = (np.stack([prepare_input(val[0], pre)]) if val
         else np.random.RandomState(0).randn(1, 3, size, size).astype(np.float32))

    baseline = TorchBackend(InferenceHead(net, spec.select), size, precision="fp32", fold_bn=False, channels_last=False)
    engines: dict[str, Any] = {}
    setup: dict[str, float] = {}

    def make(key: str, **kw: Any) -> None:
        t0 = time.perf_counter()
        engines[key] = Predictor.from_module(net, name=name, preprocessing=pre, select=spec.select, **kw)
        setup[key] = round(time.perf_counter() - t0, 1)

    make("torch", backend="torch", precision=precision)
    on_cpu = engines["torch"].info["device"] == "cpu"
    if openvino_available() and on_cpu:
        make("openvino", backend="openvino", precision=precision)
    if onnxruntime_available() and on_cpu:
        make("onnxruntime", backend="onnxruntime")
    calib = real_frames(data, "train", 4 if quick else 32) if int8 else []
    if calib and openvino_available() and nncf_available() and on_cpu:
        make("int8", backend="openvino", precision="int8", calibration=calib)

    paths: dict[str, Callable[[], int]] = {"baseline": lambda: (baseline.infer(x), 1)[1]}
    engine_of: dict[str, str] = {}
    tb = engines["torch"].backend
    xb = np.repeat(x, tb.preferred_batch, axis=0)
    paths["torch"] = lambda: (tb.infer(xb), len(xb))[1]
    engine_of["torch"] = "torch"
    described = {"baseline": "torch fp32 eager batch 1, no BN folding", "torch": tb.describe() + f" batch {len(xb)}"}
    for key, prefix in (("openvino", "openvino"), ("onnxruntime", "onnxruntime"), ("int8", "int8")):
        if key not in engines:
            continue
        ob = engines[key].backend
        if key == "onnxruntime":
            ob.sessions_for_streams()  # made now, not inside the first timed step
            described[f"{prefix}-latency"] = f"onnxruntime {ob.precision}, 1 session ({ob.threads} threads)"
            described[f"{prefix}-pipeline"] = (f"onnxruntime {ob.precision}, {ob.requests_in_flight} runs in flight "
                                               f"({max(1, ob.threads // ob.requests_in_flight)} threads each)")
        else:
            ob.compiled("LATENCY")
            ob.compiled("THROUGHPUT")
            described[f"{prefix}-latency"] = f"openvino {ob.precision} LATENCY, 1 request"
            described[f"{prefix}-pipeline"] = (f"openvino {ob.precision} THROUGHPUT, "
                                               f"{ob.requests_in_flight} requests in flight")
        paths[f"{prefix}-latency"] = latency_step(ob, x)
        # 8 frames per request and step: the drain at the end of a step costs < 1/8 of a frame per request
        paths[f"{prefix}-pipeline"] = stream_step(ob, x, 8 * ob.requests_in_flight)
        engine_of[f"{prefix}-latency"] = engine_of[f"{prefix}-pipeline"] = key
    if torch.get_num_threads() > 1:
        # On a shared machine OpenMP's barriers make PyTorch with all threads up to 50x
        # slower than with one: time both and keep the better, so the baseline is fair.
        for k in ("baseline", "torch"):
            paths[f"{k}-1thread"] = one_thread(paths[k])
            described[f"{k}-1thread"] = described[k] + ", 1 thread"
            if k in engine_of:
                engine_of[f"{k}-1thread"] = engine_of[k]
    per_round: dict[str, list[float]] = {}
    fps = interleaved(paths, seconds, rounds, settle=0.0 if quick else 1.0, per_round=per_round)
    ref = Predictor.from_module(net, name=name, preprocessing=pre, select=spec.select, backend="torch",
                                precision="fp32")
    # one thread: the fp32 reference is slow either way, and 1 thread never collapses;
    # its maps are computed once and compared with every engine's and with the noisy ones
    ref_maps = one_thread(lambda: ref.predict(val))() if val else []
    agreement = {key: compare(e.predict(val), ref_maps) if val else None for key, e in engines.items()}
    floor = one_thread(lambda: noise_floor(ref, val, ref_maps))()
    base = max((k for k in fps if k.startswith("baseline")), key=lambda k: fps[k])
    best = max((k for k in fps if not k.startswith("baseline")), key=lambda k: fps[k])
    agreeing = [k for k in fps if k in engine_of and agrees(agreement[engine_of[k]])]
    best_agreeing = max(agreeing, key=lambda k: fps[k]) if agreeing else None
    row = {"name": name, "input": size, "baseline_fps": round(fps[base], 2),
           "best_fps": round(fps[best], 2), "ratio": round(fps[best] / fps[base], 2),
           "baseline_path": described[base], "best_path": described[best],
           "agreement_vs_fp32": agreement[engine_of[best]], "agrees": agrees(agreement[engine_of[best]]),
           "best_agreeing": None if best_agreeing is None else {
               "path": described[best_agreeing], "fps": round(fps[best_agreeing], 2),
               "ratio": round(fps[best_agreeing] / fps[base], 2)},
           "paths": {k: round(v, 2) for k, v in fps.items()}, "paths_per_round": per_round,
           "path_details": described,
           "agreement_by_engine": agreement, "fp32_noise_floor": floor,
           "engines": side_by_side(fps, engine_of, agreement),
           "setup_s": setup, "weights": described_weights}
    return row, engines.get("openvino", engines["torch"])


def side_by_side(fps: dict[str, float], engine_of: dict[str, str],
                 agreement: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per engine: batch-1 latency frames/s (the better of its thread settings), look-ahead
    pipeline frames/s (None for torch, which runs frame by frame: its latency is its
    throughput) and its agreement with fp32."""
    out: dict[str, dict[str, Any]] = {}
    for engine in dict.fromkeys(engine_of.values()):
        keys = [k for k, e in engine_of.items() if e == engine]
        latency = [fps[k] for k in keys if "pipeline" not in k]
        pipeline = [fps[k] for k in keys if k.endswith("-pipeline")]
        out[engine] = {"latency_fps": round(max(latency), 2) if latency else None,
                       "pipeline_fps": round(max(pipeline), 2) if pipeline else None,
                       "agreement": agreement.get(engine), "agrees": agrees(agreement.get(engine))}
    return out


def end_to_end(predictor: Any, data: Path | None, seconds: float, quick: bool) -> dict[str, Any] | None:
    """The predict loop on the real clip, repeated; and the same pipeline without the I/O."""
    import tempfile

    from polypviewer.cli.predict import write_predictions
    from polypviewer.engine.inference import PipelineRunner
    from polypviewer.io.sources import open_source

    clip = data / DEFAULT_CLIP if data else None
    if clip is None or not clip.is_file():
        return None
    name = predictor.info["model"]
    with open_source(clip) as src:
        n = len(src)
        frames = [src.frame(i) for i in range(n)]

        class Memory:  # the same frames without decoding: the model-only pipeline
            has_masks, fps = False, None

            def __len__(self) -> int:
                return n

            def frame(self, i: int) -> Any:
                return frames[i]

            def mask(self, i: int) -> None:
                return None

            def name(self, i: int) -> str:
                return f"f{i}"

        t0 = time.perf_counter()
        list(PipelineRunner(Memory(), predictor, range(n)))  # warm-up, and a first speed estimate
        rounds = 1 if quick else 3
        # One runner per slice over the clip repeated, so pipeline start/drain is not timed n times.
        reps = max(1, round(seconds / rounds * n / (time.perf_counter() - t0) / n))
        indices = list(range(n)) * reps
        with tempfile.TemporaryDirectory() as tmp:
            folders = {"masks": Path(tmp) / "masks"}
            folders["masks"].mkdir()
            model_s = e2e_s = 0.0
            for _ in range(rounds):  # interleaved, as for the models
                t0 = time.perf_counter()
                assert sum(1 for r in PipelineRunner(Memory(), predictor, indices) if r.ok) == len(indices)
                model_s += time.perf_counter() - t0
                t0 = time.perf_counter()
                if write_predictions(PipelineRunner(src, predictor, indices), folders):
                    raise RuntimeError("end-to-end run: some frames failed (see above)")
                e2e_s += time.perf_counter() - t0
            model_frames = e2e_frames = rounds * len(indices)
    model_fps, e2e_fps = model_frames / model_s, e2e_frames / e2e_s
    return {"model": name, "source": str(clip), "fps": round(e2e_fps, 2),
            "model_only_pipeline_fps": round(model_fps, 2), "ratio_to_model_only": round(e2e_fps / model_fps, 3),
            "path": predictor.info["path"], "frames": e2e_frames}


def run(args: argparse.Namespace) -> int:
    from polypviewer.cli import UserError
    from polypviewer.nets import list_models

    models = args.model or list_models()
    unknown = [m for m in models if m not in list_models()]
    if unknown:
        raise UserError(f"unknown model {unknown[0]!r}; choose one of: {', '.join(list_models())}")
    seconds, rounds = (0.3, 1) if args.quick else (args.seconds, args.rounds)
    data = _data_dir(args.data)
    report: dict[str, Any] = {"machine": machine(), "command": "polypviewer bench " + " ".join(sys.argv[2:]),
                              "models": [], "end_to_end": []}
    report["load_average_before"] = _load()
    print(report["machine"], f"(load average {report['load_average_before']})")
    if data is None:
        print("polypviewer: warning: real data not found: BN statistics stay at their initial values "
              "and there is no end-to-end run (pass --data DIR)", file=sys.stderr)
    print(f"{'model':<22} {'input':>5} {'baseline':>9} {'best':>7} {'ratio':>6}  best path / agreement with fp32")
    e2e_model = args.end_to_end_model or ("pranet" if "pranet" in models else models[0])
    if e2e_model not in models:
        raise UserError(f"--end-to-end-model {e2e_model!r} is not among the benched models")
    weights: dict[str, Path] = {}
    for item in args.weights:
        key, sep, file = item.partition("=")
        if not sep or key not in list_models():
            raise UserError(f"--weights: expected NAME=FILE with a registered NAME, got {item!r}")
        if not Path(file).is_file():
            raise UserError(f"{file}: no such weights file")
        weights[key] = Path(file)
    e2e_predictor = None
    for name in models:
        row, predictor = bench_model(name, data, seconds, rounds, args.quick, args.size, weights.get(name),
                                     int8=not args.no_int8, precision=args.precision)
        if name == e2e_model:
            e2e_predictor = predictor
        report["models"].append(row)
        agree = row["agreement_vs_fp32"]
        agree_s = (f"; mean|dp| {agree['mean_abs_diff']:.4f}, Dice {agree['dice']:.4f}"
                   f"{'' if row['agrees'] else ' (below the bar)'}") if agree else ""
        print(f"{name:<22} {row['input']:>5} {row['baseline_fps']:>9.2f} {row['best_fps']:>7.2f} "
              f"{row['ratio']:>5.1f}x  {row['best_path']}{agree_s}", flush=True)
        others = ", ".join(f"{k} {v:.2f}" for k, v in row["paths"].items())
        print(f"{'':<22} all paths (frames/s): {others}; {row['weights']}", flush=True)
        print(f"{'':<22} {'engine':<12} {'latency':>8} {'pipeline':>9}  agreement with fp32 (frames/s, batch 1)")
        for engine, e in row["engines"].items():
            a = e["agreement"]
            a_s = (f"mean|dp| {a['mean_abs_diff']:.4f} Dice {a['dice']:.4f}"
                   f"{'' if e['agrees'] else ' (below the bar)'}") if a else "-"
            pipe = f"{e['pipeline_fps']:.2f}" if e["pipeline_fps"] is not None else "-"
            print(f"{'':<22} {engine:<12} {e['latency_fps']:>8.2f} {pipe:>9}  {a_s}", flush=True)
        agreements = "; ".join(f"{k} mean|dp| {a['mean_abs_diff']:.4f} Dice {a['dice']:.4f}"
                               for k, a in row["agreement_by_engine"].items() if a)
        if agreements:
            ba = row["best_agreeing"]
            tail = (f"fastest agreeing path: {ba['path']} {ba['fps']:.2f} frames/s ({ba['ratio']:.1f}x)"
                    if ba else "no path agrees with fp32 (mean|dp| < 0.01, Dice > 0.98)")
            print(f"{'':<22} agreement with fp32: {agreements}; {tail}", flush=True)
        floor = row["fp32_noise_floor"]
        if floor:
            print(f"{'':<22} fp32 vs itself with +-0.5/255 input noise: mean|dp| {floor['mean_abs_diff']:.4f} "
                  f"Dice {floor['dice']:.4f}", flush=True)
    if not args.no_end_to_end and e2e_predictor is not None:
        e2e = end_to_end(e2e_predictor, data, 1.0 if args.quick else 2 * args.seconds, args.quick)
        if e2e is not None:
            report["end_to_end"].append(e2e)
            print(f"end to end: predict {e2e['model']} on {Path(e2e['source']).name}: {e2e['fps']:.2f} frames/s "
                  f"= {100 * e2e['ratio_to_model_only']:.0f}% of the model-only pipeline "
                  f"({e2e['model_only_pipeline_fps']:.2f} frames/s, {e2e['path']})")
    report["load_average_after"] = _load()
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0
