"""Would an int8 LiteMedSAM image encoder help? (issue 13: embedding < 400 ms on 2 cores)

Quantises the app's OpenVINO fp32 encoder (``engine.prompting.PromptSegmenter``) with NNCF
post-training on the 16 shipped PolypGen calibration frames (``engine.selection.
calibration_frames``, the int8 network's own), two ways: ``default`` (``engine.backends.
quantise.quantise_int8``: every layer, this CPU's overflow fix) and ``transformer`` (NNCF's
``ModelType.TRANSFORMER`` scheme, the same fix). Then, in interleaved rounds, times one
embedding on each against fp32, and judges each with the engine's own precision rule
(``engine.prompting.check_precision``: jittered ground-truth boxes, Dice vs the fp32 masks
> 0.98 and ground-truth Dice lower by < 0.005) on ``--frames`` Kvasir-SEG TRAIN frames spread
evenly (never the test split). Nothing here is used by the app: it answers whether to build it.

    .venv/bin/python benchmarks/medsam_int8.py [--frames 24] [--rounds 3] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from polypviewer.core.paths import shared_data_default  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=shared_data_default() / "kvasir-seg")
    p.add_argument("--frames", type=int, default=24, help="Kvasir-SEG train frames for the agreement")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--repeats", type=int, default=5, help="embeddings per path per round")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)

    import nncf
    import torch
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix

    from polypviewer.core.fileio import write_json
    from polypviewer.engine import prompting as PR
    from polypviewer.engine.backends.quantise import overflow_fix, quantise_int8
    from polypviewer.engine.policy import describe_cpu
    from polypviewer.engine.selection import calibration_frames
    from polypviewer.io.sources import open_source

    if not (args.data / "split.json").is_file():
        print(f"{args.data}: Kvasir-SEG with split.json not found (../shared/data beside the project)",
              file=sys.stderr)
        return 2
    torch.set_num_threads(2)
    seg = PR.PromptSegmenter.create(backend="openvino", precision="fp32")
    enc = seg.encoder
    cal = [PR.preprocess(f)[0][None] for f in calibration_frames()]
    fix = overflow_fix()
    report: dict = {"machine": describe_cpu(), "command": "python " + " ".join(sys.argv), "overflow_fix": fix,
                    "calibration_frames": len(cal), "quantise_s": {}, "embedding_ms": {}, "agreement": {}}
    parts = {"fp32": enc}
    for name in ("default", "transformer"):
        t0 = time.perf_counter()
        if name == "default":
            q = quantise_int8(enc._model, cal, keep_float=[])
        else:
            q = nncf.quantize(enc._model, nncf.Dataset(cal), subset_size=len(cal),
                              model_type=nncf.ModelType.TRANSFORMER,
                              advanced_parameters=AdvancedQuantizationParameters(overflow_fix=OverflowFix(fix)))
        report["quantise_s"][name] = round(time.perf_counter() - t0, 1)
        part = object.__new__(PR.OpenVINOPart)
        part.part, part.cache_hit, part._core, part._model = "encoder", False, enc._core, q
        part._compile("fp32")  # int8 weights and activations; fp32 only where NNCF left them
        parts[name] = part
    x = cal[0]
    per_round: dict[str, list[float]] = {k: [] for k in parts}
    for _ in range(args.rounds):
        for name, part in parts.items():
            part(x)
            t0 = time.perf_counter()
            for _ in range(args.repeats):
                part(x)
            per_round[name].append((time.perf_counter() - t0) / args.repeats * 1000)
    report["embedding_ms"] = {k: {"median": round(float(np.median(v)), 1), "rounds": [round(t, 1) for t in v]}
                              for k, v in per_round.items()}
    train = json.loads((args.data / "split.json").read_text())["train"]
    names = train[:: max(1, len(train) // args.frames)][: args.frames]
    with open_source(args.data) as src:
        index = {src.name(i): i for i in range(len(src))}
        frames = [(src.frame(index[n]), np.asarray(src.mask(index[n])) > 0) for n in names]
    for name in ("default", "transformer"):
        # check_precision's second precision slot ("bf16") carries the int8 encoder here
        checks = PR.check_precision({"fp32": (enc, seg.decoder), "bf16": (parts[name], seg.decoder)}, frames)
        report["agreement"][name] = checks[("bf16", "fp32")].as_dict()
    base = report["embedding_ms"]["fp32"]["median"]
    print(f"{report['machine']}; overflow fix {fix}; {len(cal)} calibration frames")
    for name in parts:
        ms = report["embedding_ms"][name]["median"]
        line = f"  {name:<12} embedding {ms:7.1f} ms  {base / ms:4.2f}x fp32"
        if name in report["agreement"]:
            a = report["agreement"][name]
            line += (f"  quantise {report['quantise_s'][name]} s; Dice vs fp32 {a['dice_vs_fp32']:.3f} "
                     f"(min {a['dice_vs_fp32_min']:.3f}), GT Dice {a['gt_dice_drop']:+.4f} lower, "
                     f"agrees {a['agrees']}")
        print(line)
    if args.json:
        write_json(args.json, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
