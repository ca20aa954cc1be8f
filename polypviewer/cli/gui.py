"""``polypviewer [gui] [PATH]``: the review app. With ``--screenshot`` it is the smoke mode:
play ``--frames`` frames through the real pipeline, save a screenshot of the window, exit 0."""

from __future__ import annotations

import argparse
import atexit
import logging
import os
import sys
import threading
from pathlib import Path

from polypviewer.cli import UserError


def add_window_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by ``gui`` and ``demo``."""
    parser.add_argument("--model", metavar="NAME", help="network to run (see `polypviewer info`); "
                        "default: the shipped default model")
    parser.add_argument("--weights", type=Path, metavar="FILE", help="checkpoint to load "
                        "(.safetensors or .pth); its network is read from the file")
    parser.add_argument("--random-weights", action="store_true",
                        help="run the network untrained when no weights exist (its masks are noise)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                        help="where inference runs (auto: the GPU when there is one)")
    parser.add_argument("--backend", default="auto", choices=("auto", "torch", "openvino", "onnxruntime"),
                        help="inference backend (auto: the fastest path that agrees with fp32 on this CPU, "
                             "measured in the background on first use; torch on GPUs)")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"),
                        help="inference precision (auto: the fastest the device does well)")
    parser.add_argument("--screenshot", type=Path, metavar="FILE",
                        help="smoke mode: play --frames frames, save a PNG of the window, exit")
    parser.add_argument("--frames", type=int, default=10, metavar="N",
                        help="frames to play in smoke mode (default 10)")
    parser.add_argument("--size", default="1440x900", metavar="WxH", help="window size in smoke mode")
    parser.add_argument("--timeout", type=float, default=300.0, metavar="S",
                        help="give up the smoke run after S seconds (exit 1)")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", nargs="?", type=Path, metavar="PATH",
                        help="video, image, folder of frames, or Kvasir dataset (images/ + masks/)")
    add_window_options(parser)


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UserError(f"--size: expected WxH such as 1440x900, got {text!r}") from None
    if w < 320 or h < 240:
        raise UserError(f"--size: {text} is too small (at least 320x240)")
    return w, h


def _threads(daemon: bool) -> list[threading.Thread]:
    """This process's running threads of that kind (not the main thread, nor the stand-ins
    Python keeps for threads it did not start, such as Qt's)."""
    dummy = getattr(threading, "_DummyThread", ())
    return [t for t in threading.enumerate()
            if t is not threading.main_thread() and t.daemon == daemon and t.is_alive() and not isinstance(t, dummy)]


def background_threads() -> list[threading.Thread]:
    """Daemon threads of this process still running."""
    return _threads(daemon=True)


def end_process(code: int) -> int:
    """Called once the window has shut down (every project folded into its file, the settings
    written, the window's worker threads stopped): the process ends now with ``code``, its
    output flushed, without the interpreter's teardown of every module (torch's, OpenVINO's,
    NNCF's: 0.75 s of a 0.9 s quit with the int8 model, ``benchmarks/bench_startup.py``).
    With nothing else running, the exit first does what a normal one does for a program:
    waits for non-daemon threads and runs the ``atexit`` handlers (temporary folders,
    logging). When daemon threads are still running, their work is one nobody will read (the
    engine measurement of an in-memory network, inside OpenVINO, which is cached only when it
    completes), and the handlers are skipped too: left to the interpreter, the exit waited for
    that work (quit 289 s on the loaded 2-core machine) or aborted while it ran (SIGABRT, exit
    status -6, in 2 of 3 runs)."""
    if not background_threads():
        for t in _threads(daemon=False):
            t.join()
        atexit._run_exitfuncs()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def launch(path: Path | None, args: argparse.Namespace) -> int:
    if path is not None and not path.exists():
        raise UserError(f"{path}: no such file or folder")
    if args.weights is not None and not args.weights.is_file():
        raise UserError(f"{args.weights}: no such weights file")
    if args.frames < 1:
        raise UserError("--frames must be at least 1")
    if (args.screenshot is not None and sys.platform.startswith("linux")
            and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))):
        # Smoke mode needs no screen: on a server or in CI, render offscreen.
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from polypviewer.ui.app import run_window

    code = run_window(str(path) if path else None, model=args.model,
                      weights=str(args.weights) if args.weights else None,
                      allow_random=args.random_weights,
                      options={"device": args.device, "backend": args.backend, "precision": args.precision,
                               # auto: time the engines in the background on first use (not in
                               # smoke mode, whose few frames would compete with it for the CPU)
                               "measure": "cached" if args.screenshot is not None else "background"},
                      screenshot=str(args.screenshot) if args.screenshot else None,
                      frames=args.frames, size=_size(args.size), timeout_s=args.timeout)
    return end_process(code)  # after the window's shutdown: nothing a user made is still unwritten


def run(args: argparse.Namespace) -> int:
    if args.screenshot is not None and args.path is None:
        raise UserError("--screenshot needs a PATH to open (or use `polypviewer demo --screenshot FILE`)")
    return launch(args.path, args)
