"""``polypviewer info [--json] [--no-flops]``

Every registered network with its trainable parameters, the Keras-style total (trainable
+ BatchNorm running statistics, the number the ResUNet++ papers print), GFLOPs for one
frame at its native input size (counted by ``torch.utils.flop_counter``), its default
training recipe (the registry's, what ``train`` uses without ``--recipe``), and the weights
available for it (shipped model cards, and which one is the default); plus the inference
device / precision / backend the engine would choose on this machine.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--no-flops", action="store_true", help="skip the FLOP count (faster)")
    parser.add_argument("--model", action="append", metavar="NAME", help="only this model (repeatable)")


def collect(models: list[str] | None = None, with_flops: bool = True) -> dict[str, Any]:
    from polypviewer.engine.policy import (
        choose_backend,
        choose_device,
        choose_precision,
        cpu_flags,
        cpu_isa_cap,
        cpu_name,
        describe_cpu,
        openvino_available,
        precision_reason,
    )
    from polypviewer.nets import get_spec, list_models
    from polypviewer.nets.summary import model_summary
    from polypviewer.nets.weights import CheckpointError, default_weights, shipped_weights

    names = models or list_models()
    for name in names:  # an unknown name fails (one line, the known ones) before anything is built
        get_spec(name)
    problems: list[str] = []
    records = shipped_weights(problems)  # a broken card is named in problems, the rest listed
    try:
        default = default_weights()
    except CheckpointError as exc:
        default, problems = None, problems + [str(exc)]
    rows = []
    for name in names:
        row = model_summary(name, with_flops=with_flops)
        row["weights"] = [{"file": str(r.file), "version": r.version,
                           "default": default is not None and r.file == default,
                           "meta": r.meta} for r in records if r.model == name]
        rows.append(row)
    device = choose_device("auto")
    import torch

    precision = choose_precision(device, "auto")
    from polypviewer.engine.policy import ISA_FLAGS

    why = precision_reason(device, "auto", precision)
    engine: dict[str, Any] = {"device": device, "precision": precision, "why": why,
              "backend": choose_backend(device, "auto", precision), "cpu": cpu_name(),
              "cpu_line": describe_cpu(), "isa": [f for f in ISA_FLAGS if f in cpu_flags()],
              "isa_cap": cpu_isa_cap(),
              "torch": torch.__version__, "openvino": _ov_version() if openvino_available() else None}
    from polypviewer.engine.backends.onnxruntime import onnxruntime_version

    ort = onnxruntime_version()
    engine["onnxruntime"] = None if ort == "none" else ort
    if default is not None:  # what auto runs for the shipped default: measured, or the rule
        from polypviewer.core.paths import cache_dir
        from polypviewer.engine.selection import auto_engine

        engine["auto"] = auto_engine(default, cache_dir())
    return {"engine": engine, "models": rows, "prompted": _prompted_rows(), "problems": problems}


def _prompted_rows() -> list[dict[str, Any]]:
    """The prompted models (box/point to mask; the app's Box tool): parameters counted on the
    built network, and whether the published weights are installed and are the ones measured."""
    from polypviewer.core.fileio import sha256_file
    from polypviewer.nets.registry import get_prompted_spec, list_prompted_models

    rows = []
    for name in list_prompted_models():
        spec = get_prompted_spec(name)
        params = sum(p.numel() for p in spec.builder().parameters())
        path = spec.weights() if spec.weights is not None else None
        if path is None:
            state = "not installed"
        elif spec.weights_sha256 and sha256_file(path) != spec.weights_sha256:
            state = f"{path}: not the published weights (sha256 differs)"
        else:
            state = f"{path.name} (sha256 {spec.weights_sha256[:12]})" if spec.weights_sha256 else path.name
        rows.append({"model": name, "input_size": spec.input_size, "params": params,
                     "prompts": list(spec.prompts), "weights": state, "file": str(path) if path else None,
                     "license": spec.license})
    return rows


def _ov_version() -> str:
    import openvino

    version: str = openvino.__version__
    return version


def run(args: argparse.Namespace) -> int:
    report = collect(args.model, with_flops=not args.no_flops)
    if args.json:
        print(json.dumps(report, indent=2, default=str))
        return 0
    e = report["engine"]
    print(f"inference here: {e['backend']} {e['precision']} on {e['device']} "
          f"(torch {e['torch']}, openvino {e['openvino'] or 'not installed'}, "
          f"onnxruntime {e['onnxruntime'] or 'not installed'})")
    print(f"  why: {e['why']}")
    auto = e.get("auto")
    if auto:
        print(f"  auto for {auto['model']} (shipped default): {auto['backend']} {auto['precision']}, "
              f"{auto['how']}: {auto['why']}")
    print(f"  cpu: {e['cpu_line']}\n")
    header = (f"{'model':<22} {'input':>5} {'trainable':>12} {'Keras total':>12} {'GFLOPs':>7}  "
              f"{'recipe':<15} weights")
    print(header)
    print("-" * len(header))
    for r in report["models"]:
        flops = f"{r['gflops']:.1f}" if r.get("gflops") is not None else "-"
        weights = ", ".join(f"{w['version']}{' (default)' if w['default'] else ''}" for w in r["weights"])
        print(f"{r['model']:<22} {r['input_size']:>5} {r['params']:>12,} {r['keras_total_params']:>12,} "
              f"{flops:>7}  {r['recipe']:<15} {weights or 'none shipped'}")
    if report["prompted"]:
        print("\nprompted model (the Box tool, segment-boxes)  input       params  prompts     weights")
        for r in report["prompted"]:
            print(f"{r['model']:<46} {r['input_size']:>5} {r['params']:>12,}  {'/'.join(r['prompts']):<11} "
                  f"{r['weights']}")
    for p in report["problems"]:
        print(f"polypviewer: warning: {p}", file=sys.stderr)
    return 0
