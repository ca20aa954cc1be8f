"""``polypviewer engines [--weights FILE] [--model NAME] [--precision P] [--json]``

Measure the inference engines for a network on this machine now and cache the choice that
``--backend auto`` runs (``engine.selection``: every exact path this machine has, and int8
where NNCF is installed, built, scored against torch fp32 on the shipped PolypGen frames and
timed; the fastest that agrees wins). Nothing is measured again when the choice is cached
for this machine, these engines and these weights: the command then prints it.

``predict`` measures this way on its own when a run is long enough, and the app in the
background on first use (it runs this command, ``--background``: at the lowest CPU priority,
ending when the app does); run it beforehand (after installing, say) and neither waits.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

from polypviewer.cli import UserError

PARENT_POLL_S = 1.0


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", type=Path, help="checkpoint to measure (default: the shipped default model)")
    parser.add_argument("--model", help="network name, when the checkpoint does not say (PraNet-19.pth)")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"),
                        help="the precision asked for, as with predict --precision (default auto: fp32, "
                             "bf16 where native, and int8 where NNCF is installed)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                        help="only the CPU has engines to choose between (default auto)")
    parser.add_argument("--json", action="store_true", help="print the choice as JSON")
    # the app's: how long each path is timed, and the child-process mode (see run_in_background)
    parser.add_argument("--seconds", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--background", action="store_true", help=argparse.SUPPRESS)


def run_in_background() -> None:
    """The app's child: the lowest CPU priority for this process's threads (all started after
    this: torch's, OpenVINO's), and an end when the app that started it has ended."""
    try:
        os.nice(19)
    except (AttributeError, OSError):  # not POSIX (Windows: the parent starts it at idle priority)
        pass
    if hasattr(os, "sched_setscheduler") and hasattr(os, "SCHED_IDLE"):
        try:  # Linux: runs only on cycles nothing else wants
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        except OSError:
            pass
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_S)
        os._exit(3)  # the app is gone: nobody reads this measurement (it is cached only when complete)

    threading.Thread(target=watch, name="polypviewer-parent-watch", daemon=True).start()


def run(args: argparse.Namespace) -> int:
    if args.background:
        run_in_background()
    if args.weights is not None and not args.weights.is_file():
        raise UserError(f"{args.weights}: no such weights file")
    if args.seconds is not None and not args.seconds > 0:
        raise UserError("--seconds must be positive")
    from polypviewer.engine import selection
    from polypviewer.engine.inference import Predictor

    if args.seconds is not None:
        selection.SECONDS = args.seconds  # this process only measures: its timing per path
    started: list[float] = []

    def say() -> None:
        started.append(time.perf_counter())
        if not args.json:
            print("polypviewer engines: measuring the engines on this CPU (a minute or so)…",
                  file=sys.stderr, flush=True)

    p = Predictor.create(model=args.model, weights=args.weights, device=args.device, precision=args.precision,
                         backend="auto", measure="now", on_measure=say)
    info = p.info
    measured = info.get("engine_choice") == "measured"
    out = {"model": info["model"], "weights": info["weights"], "version": info["version"],
           "input_size": info["input_size"], "device": info["device"], "backend": info["backend"],
           "precision": info["precision"], "measured": measured, "why": info["why"],
           "paths": info.get("measured", {}), "when": info.get("measured_when"),
           "seconds": round(time.perf_counter() - started[0], 1) if started else 0.0}
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"{out['model']} ({out['version']}, {out['input_size']} px): {out['backend']} {out['precision']}"
              f" on {out['device']}")
        print(f"  why: {out['why']}")
        for path, fps in out["paths"].items():
            print(f"  {path:<18} {'-' if fps is None else f'{fps:.1f} frames/s'}")
        if measured and not started:
            print(f"  (measured {out['when']}; cached, not measured again)")
    if info["device"] != "cpu":
        return 0  # nothing to choose between on a GPU: the line above says what runs
    if not measured:
        print("polypviewer engines: no engine choice was measured or cached (see `why` above)", file=sys.stderr)
        return 1
    return 0
