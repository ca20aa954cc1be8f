"""``auto`` by measurement: the fastest inference path that agrees with fp32 here, timed once.

The static rule (``policy.choose_backend``: OpenVINO on a CPU) is right on some CPUs and not
on others (on an AVX2-only EPYC ONNX Runtime is level with it; on AMX OpenVINO's bf16 is far
ahead). So on first use of a (network, weights, input size) the exact paths this machine has
(torch, OpenVINO and ONNX Runtime in fp32; bf16 too where the CPU computes it natively) are
each built and timed briefly through their streams (the look-ahead pipeline's way, about
``SECONDS`` each, interleaved in rounds so a neighbour's load hits all alike), and each is
scored against torch fp32 on real frames (the PolypGen frames shipped in
``resources/demo/polypgen``; ``agreement.AGREEMENT``: mean |dp| < 0.01, Dice > 0.98). The
fastest path that agrees is the choice; a path that does not agree is never chosen.

int8 is a candidate too, where NNCF is installed and ``auto`` was asked for: OpenVINO int8
with the stem kept in float (``backends/quantise.py``), calibrated on 16 of the 24 shipped
PolypGen frames (``calibration_frames``) and scored on the other 8 (``reference_frames``,
the frames every path is scored on), so the agreement that lets ``auto`` pick it is measured
on frames its quantisation never saw (``measure`` refuses overlapping sets). Like any path it
is chosen only when it agrees (mean |dp| < 0.01, Dice > 0.98) and is the fastest that does.

The choice is cached as JSON under ``cache_dir()/engine-choice``, one file per (network,
weights sha256, input size, precision asked for), holding the machine it was measured on:
CPU model, ISA flags (as capped by ``ONEDNN_MAX_CPU_ISA``), cores, and the torch, OpenVINO,
ONNX Runtime and NNCF versions and int8's quantisation rule (``quantise.int8_recipe()``, which depends on VNNI); an int8
choice also holds the digest of the frames it was calibrated on. Another machine, an engine
upgrade, another calibration set or new weights (another file) means measuring again.
``Predictor`` reads the cache for ``backend="auto"``; ``predict`` measures when nothing is
cached; the GUI measures in a child process at the lowest CPU priority (``polypviewer engines
--background``; a thread for a network with no weights file) and switches to the choice when
it is ready.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from polypviewer.core.errors import PolypviewerError
from polypviewer.core.fileio import write_json
from polypviewer.engine.agreement import agrees, compare
from polypviewer.engine.backends import Backend, InferenceHead, make_backend, safe_stem
from polypviewer.engine.backends.onnxruntime import onnxruntime_version
from polypviewer.engine.backends.openvino import openvino_version
from polypviewer.engine.backends.quantise import int8_recipe
from polypviewer.engine.policy import (
    ISA_FLAGS,
    cpu_flags,
    cpu_has_native_bf16,
    cpu_isa_cap,
    cpu_name,
    nncf_available,
    nncf_version,
    onnxruntime_available,
    openvino_available,
)
from polypviewer.engine.processing import prepare_input, probabilities
from polypviewer.engine.timing import interleaved, one_thread, stream_step

__all__ = ["INT8", "SECONDS", "Choice", "Measurement", "auto_engine", "cached_choice", "calibration_frames",
           "candidate_paths", "choice_path", "exact_paths", "frames_digest", "machine", "measure",
           "measure_in_background", "measure_in_child", "own_command", "reference_frames", "running_measurements",
           "should_measure", "stop_measurements"]

log = logging.getLogger(__name__)

SECONDS = 1.5  # timed per path, in 3 interleaved rounds (after one warm-up step each)
ROUNDS = 3
FOLDER = "engine-choice"
HELD_OUT_EVERY = 3  # every 3rd shipped PolypGen frame is held out for agreement (8 of 24), the rest calibrate int8
INT8 = ("openvino", "int8")  # the int8 candidate (NNCF, stem in float)
CONTENDER = 3.0  # timed only when one frame takes at most this many times the fastest path's


@dataclass
class Measurement:
    """One path's numbers: pipeline frames/s and its agreement with torch fp32."""

    backend: str
    precision: str
    fps: float | None = None
    agreement: dict[str, float] | None = None
    agrees: bool = False
    error: str | None = None
    #: int8: how many frames it was calibrated on (none of them among the agreement's)
    calibration_frames: int | None = None

    def label(self) -> str:
        return f"{self.backend} {self.precision}"


@dataclass
class Choice:
    """The path ``auto`` runs, why, and what was measured to decide it."""

    backend: str
    precision: str
    why: str
    measured: list[Measurement] = field(default_factory=list)
    when: str = ""
    machine: dict[str, Any] = field(default_factory=dict)
    #: int8: ``frames_digest`` of the RGB frames it was calibrated on ("" otherwise)
    calibration: str = ""
    #: the chosen backend as built while measuring (not cached on disk); None when read from the cache
    built: Backend | None = None
    #: int8 read from the cache: the calibration frames its digest was checked against (not on
    #: disk), so the predictor builds from them instead of decoding the shipped frames again
    calibration_images: list[np.ndarray] | None = None

    def to_json(self) -> dict[str, Any]:
        return {"backend": self.backend, "precision": self.precision, "why": self.why, "when": self.when,
                "machine": self.machine, "calibration": self.calibration,
                "measured": [vars(m) for m in self.measured]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Choice:
        return cls(backend=str(data["backend"]), precision=str(data["precision"]), why=str(data["why"]),
                   when=str(data.get("when", "")), machine=dict(data.get("machine", {})),
                   calibration=str(data.get("calibration", "")),
                   measured=[Measurement(**m) for m in data.get("measured", [])])


def machine() -> dict[str, Any]:
    """What a measured choice holds for: another value anywhere here means measuring again."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return {"cpu": cpu_name(), "isa": [f for f in ISA_FLAGS if f in cpu_flags()], "isa_cap": cpu_isa_cap(),
            "cores": cores, "torch": torch.__version__, "openvino": openvino_version(),
            "onnxruntime": onnxruntime_version(), "nncf": nncf_version(), "int8_recipe": int8_recipe()}


def should_measure(device: str, requested_precision: str = "auto",
                   flags: Sequence[str] | frozenset[str] | None = None) -> bool:
    """Whether ``auto`` has paths to time here (``exact_paths`` is not empty: torch is always
    one), decided without importing any engine (ONNX, NNCF: over a second at start-up)."""
    if device != "cpu" or requested_precision in ("int8", "fp16"):
        return False
    return not (requested_precision == "bf16" and not cpu_has_native_bf16(flags))


def exact_paths(device: str, requested_precision: str = "auto",
                flags: Sequence[str] | frozenset[str] | None = None) -> list[tuple[str, str]]:
    """The (backend, precision) pairs worth timing here; empty when there is no choice to
    make (CUDA, int8, or bf16 asked for on a CPU that only emulates it: ``should_measure``)."""
    if not should_measure(device, requested_precision, flags):
        return []
    if requested_precision == "auto":
        precisions = ["fp32", "bf16"] if cpu_has_native_bf16(flags) else ["fp32"]
    else:
        precisions = [requested_precision]
    paths: list[tuple[str, str]] = []
    for p in precisions:
        paths.append(("torch", p))
        if openvino_available():
            paths.append(("openvino", p))
        if p == "fp32" and onnxruntime_available():
            paths.append(("onnxruntime", p))
    return paths


def candidate_paths(device: str, requested_precision: str = "auto",
                    flags: Sequence[str] | frozenset[str] | None = None) -> list[tuple[str, str]]:
    """``exact_paths`` plus the int8 candidate (``INT8``) where ``auto`` was asked for on a CPU
    with OpenVINO and NNCF: what ``measure`` times and scores."""
    paths = exact_paths(device, requested_precision, flags)
    if paths and requested_precision == "auto" and openvino_available() and nncf_available():
        paths.append(INT8)
    return paths


def choice_path(root: Path, model_name: str, digest: str, input_size: int, requested_precision: str) -> Path:
    return root / FOLDER / f"{safe_stem(model_name)}-{digest[:16]}-{input_size}-{requested_precision}.json"


def cached_choice(root: Path, model_name: str, digest: str, input_size: int,
                  requested_precision: str = "auto") -> Choice | None:
    """The choice measured for these weights on this machine with these engines, or None."""
    path = choice_path(root, model_name, digest, input_size, requested_precision)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        choice = Choice.from_json(data)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("%s: unreadable engine choice (%s); measuring again", path, exc)
        return None
    if choice.machine != machine():
        return None  # measured on another CPU or with other engine versions
    if (choice.backend, choice.precision) == INT8:
        images = calibration_frames()
        if choice.calibration != frames_digest(images):
            return None  # int8 calibrated on other frames than it would be built on now
        choice.calibration_images = images
    return choice


def _shipped_frames(held_out: bool) -> list[np.ndarray]:
    from polypviewer.core.paths import resources_dir
    from polypviewer.io.sources import open_source

    folder = resources_dir() / "demo" / "polypgen"
    if not folder.is_dir():
        return []
    with open_source(folder) as src:
        return [src.frame(i) for i in range(len(src)) if (i % HELD_OUT_EVERY == HELD_OUT_EVERY - 1) == held_out]


def reference_frames() -> list[np.ndarray]:
    """The agreement frames: every third of the real PolypGen frames shipped in
    ``resources/demo/polypgen`` (RGB; 8 of 24, from all six centres), never calibrated on."""
    return _shipped_frames(held_out=True)


def calibration_frames() -> list[np.ndarray]:
    """int8's calibration frames: the shipped PolypGen frames ``reference_frames`` leaves (16)."""
    return _shipped_frames(held_out=False)


def frames_digest(frames: Sequence[np.ndarray]) -> str:
    """sha256 over RGB frames (shape and bytes), in order."""
    return hashlib.sha256(b"".join(_frame_digest(f).encode() for f in frames)).hexdigest()


def _frame_digest(frame: np.ndarray) -> str:
    a = np.ascontiguousarray(frame)
    return hashlib.sha256(f"{a.shape}{a.dtype};".encode() + a.tobytes()).hexdigest()


def measure(head: InferenceHead, *, model_name: str, digest: str, preprocessing: Any,
            requested_precision: str = "auto", cache_root: Path | None = None,
            frames: Sequence[np.ndarray] | None = None, calibration: Sequence[np.ndarray] | None = None,
            seconds: float | None = None, paths: Sequence[tuple[str, str]] | None = None,
            keep_built: bool = True) -> Choice | None:
    """Build and time each candidate path, score it against torch fp32, cache and return the
    choice (None when there is nothing to choose between). ``frames``: RGB frames for the
    agreement (default: ``reference_frames()``); ``calibration``: RGB frames int8 is
    calibrated on (default: ``calibration_frames()``), none of which may be among ``frames``
    (``ValueError``); ``paths``: override ``candidate_paths`` (tests); ``seconds``: timed per
    path (default ``SECONDS``)."""
    seconds = SECONDS if seconds is None else seconds
    size = int(preprocessing.input_size)
    todo = list(paths) if paths is not None else candidate_paths("cpu", requested_precision)
    if not todo:
        return None
    frames = list(frames) if frames is not None else reference_frames()
    cal_frames: list[np.ndarray] = []
    if INT8 in todo:
        cal_frames = list(calibration) if calibration is not None else calibration_frames()
        shared = {_frame_digest(f) for f in frames} & {_frame_digest(f) for f in cal_frames}
        if shared:
            raise ValueError(f"{len(shared)} of the agreement frames are among int8's calibration frames: "
                             "its agreement must be measured on frames it was not calibrated on")
    xs = [prepare_input(f, preprocessing)[None] for f in frames]
    x = xs[0] if xs else np.random.RandomState(0).randn(1, 3, size, size).astype(np.float32)
    built: dict[tuple[str, str], Backend] = {}
    results = {p: Measurement(*p) for p in todo}
    for p in todo:
        try:
            cal = None
            if p[1] == "int8":
                cal = [prepare_input(f, preprocessing)[None] for f in cal_frames]
                results[p].calibration_frames = len(cal)
            built[p] = make_backend(p[0], head, size, device="cpu", precision=p[1], model_name=model_name,
                                    cache_root=cache_root, calibration=cal)
        except Exception as exc:  # noqa: BLE001 - a path that cannot be built is not a candidate
            results[p].error = f"{type(exc).__name__}: {exc}"
            log.warning("engine choice: %s cannot be built here: %s", "/".join(p), exc)
    # One frame each, after a first untimed one (first calls allocate): a path several times
    # slower than the fastest agreeing one (torch with all threads on a busy machine can be
    # 100x slower) is no contender and is not timed further.
    warm: dict[tuple[str, str], float] = {}
    for p, backend in built.items():
        backend.infer(x)
        t0 = time.perf_counter()
        backend.infer(x)
        warm[p] = time.perf_counter() - t0
    # fp32 reference maps from torch on one thread (never the collapse above; exact either way)
    reference = built.get(("torch", "fp32"))
    if reference is None:
        reference = make_backend("torch", head, size, device="cpu", precision="fp32", model_name=model_name)
    ref = reference
    ref_maps = one_thread(lambda: [probabilities(ref.infer(xi)[0], f.shape[:2])
                                   for xi, f in zip(xs, frames, strict=True)])()
    # Fastest first: agreement is checked until the paths left are more than CONTENDER times
    # slower than the fastest agreeing one; only agreeing contenders are timed in rounds.
    contenders: dict[tuple[str, str], Backend] = {}
    first_ok: tuple[str, str] | None = None
    for p in sorted(built, key=lambda q: warm[q]):
        m = results[p]
        m.fps = round(1.0 / max(warm[p], 1e-9), 2)  # one frame; replaced below when timed
        if first_ok is not None and warm[p] > CONTENDER * warm[first_ok]:
            m.error = f"not timed further: {warm[p] / warm[first_ok]:.0f}x slower than {'/'.join(first_ok)}"
            continue
        backend = built[p]
        maps = ref_maps if p == ("torch", "fp32") else [
            probabilities(backend.infer(xi)[0], f.shape[:2]) for xi, f in zip(xs, frames, strict=True)]
        m.agreement = compare(maps, ref_maps)
        # torch fp32 is the reference itself; with no frames to compare on nothing else agrees
        m.agrees = p == ("torch", "fp32") or agrees(m.agreement)
        if not m.agrees:
            m.error = "disagrees with fp32: never chosen, not timed further"
            continue
        first_ok = first_ok or p
        contenders[p] = backend
    steps = {"/".join(p): stream_step(b, x, 2 * max(1, int(getattr(b, "requests_in_flight", 1))))
             for p, b in contenders.items()}
    fps = interleaved(steps, seconds, ROUNDS) if steps else {}
    for p in contenders:
        results[p].fps = round(fps["/".join(p)], 2)
    agreeing = [m for m in results.values() if m.agrees and m.fps is not None and m.error is None]
    if not agreeing:
        return None
    best = max(agreeing, key=lambda m: m.fps or 0.0)
    others = ", ".join(f"{m.label()} {m.fps:.1f}" + (" (disagrees)" if m.agreement and not m.agrees else
                                                      " (one frame)" if m.error else "")
                       for m in results.values() if m is not best and m.fps is not None)
    label = best.label()
    if (best.backend, best.precision) == INT8 and best.agreement:  # say what int8 is and why it may run
        label += (f" (NNCF, stem in fp32, calibrated on {best.calibration_frames} shipped frames; agrees with "
                  f"fp32 on {best.agreement['images']} others: mean |dp| {best.agreement['mean_abs_diff']:.4f}, "
                  f"Dice {best.agreement['dice']:.3f})")
    why = (f"{label}: the fastest agreeing path measured on this CPU "
           f"({best.fps:.1f} frames/s{'; ' + others if others else ''})")
    choice = Choice(best.backend, best.precision, why, list(results.values()),
                    when=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                    machine=machine(), calibration=frames_digest(cal_frames) if best.precision == "int8" else "",
                    built=built[(best.backend, best.precision)] if keep_built else None)
    if cache_root is not None:
        path = choice_path(cache_root, model_name, digest, size, requested_precision)
        try:
            write_json(path, choice.to_json())
        except (OSError, PolypviewerError) as exc:  # a read-only cache: measured again next time
            log.warning("%s: cannot save the engine choice: %s", path, exc)
    return choice


def own_command() -> list[str]:
    """The ``polypviewer`` command as this process can run it: the desktop bundle's executable
    when frozen (PyInstaller; its entry point is the command line), else this interpreter on
    the package."""
    if getattr(sys, "frozen", False):
        return [sys.executable]
    return [sys.executable, "-m", "polypviewer"]


_children: dict[int, subprocess.Popen[bytes]] = {}  # measurements running in a child process, by pid
_children_lock = threading.Lock()


def measure_in_child(command: Sequence[str], *, cache_root: Path, read: Callable[[], Choice | None],
                     on_done: Callable[[Choice | None, str | None], None]) -> threading.Thread:
    """Run ``command`` (``polypviewer engines ... --background``: it measures, at the lowest
    CPU priority, and caches the choice under ``cache_root``) as a child process; when it has
    exited, ``read()`` the cached choice and call ``on_done(choice, error)`` from a daemon
    thread. A measurement in another process shares no interpreter lock with this one: built
    and timed in a thread here (NNCF's quantisation, OpenVINO's conversion, the timing loops
    are Python), it held up the window's thread for 370-470 ms at a time while a clip played
    (``benchmarks/bench_startup.py``). ``stop_measurements`` ends it without ``on_done``."""
    env = dict(os.environ, POLYPVIEWER_CACHE=str(cache_root))
    if not getattr(sys, "frozen", False):  # the package as this process imported it
        root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    flags = getattr(subprocess, "IDLE_PRIORITY_CLASS", 0)  # Windows; elsewhere the child lowers itself
    proc = subprocess.Popen(list(command), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env=env, creationflags=flags)
    with _children_lock:
        _children[proc.pid] = proc

    def body() -> None:
        t0 = time.perf_counter()
        _, err = proc.communicate()
        with _children_lock:
            stopped = _children.pop(proc.pid, None) is None
        if stopped:
            return
        lines = [ln for ln in err.decode("utf-8", "replace").splitlines() if ln.strip()]
        if proc.returncode != 0:
            error = lines[-1] if lines else f"the measurement exited with status {proc.returncode}"
            log.warning("engine choice: the measurement failed (the static rule stays): %s", error)
            on_done(None, error)
            return
        log.info("engine choice measured in a child process in %.1f s", time.perf_counter() - t0)
        choice = read()
        on_done(choice, None if choice is not None else "the measurement cached no choice")

    thread = threading.Thread(target=body, name="polypviewer-engine-choice", daemon=True)
    thread.start()
    return thread


def running_measurements() -> list[int]:
    """Process ids of the measurements running in child processes."""
    with _children_lock:
        return sorted(_children)


def stop_measurements(wait: float = 0.0) -> None:
    """End every measurement child (the window is closing: nobody will read the result; the
    next start measures again), without calling their ``on_done``. The quit does not wait for
    them to exit (at the idle priority that can take a second while this process is busy)
    unless ``wait`` > 0 seconds, after which one still running is killed."""
    with _children_lock:
        procs = list(_children.values())
        _children.clear()
    for proc in procs:
        proc.terminate()
    if wait <= 0:
        return
    for proc in procs:
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def measure_in_background(run: Callable[[], Choice | None],
                          on_done: Callable[[Choice | None, str | None], None]) -> threading.Thread:
    """``run()`` (a ``measure`` call) on a daemon thread; ``on_done(choice, error)`` after it,
    from that thread."""

    def body() -> None:
        t0 = time.perf_counter()
        try:
            choice = run()
        except Exception as exc:  # noqa: BLE001 - reported to the caller, never raised into nothing
            on_done(None, f"{type(exc).__name__}: {exc}")
            return
        log.info("engine choice measured in %.1f s", time.perf_counter() - t0)
        on_done(choice, None)

    thread = threading.Thread(target=body, name="polypviewer-engine-choice", daemon=True)
    thread.start()
    return thread


def auto_engine(weights: Path, cache_root: Path) -> dict[str, Any]:
    """What ``--backend auto`` runs for the checkpoint ``weights`` here, and why: the cached
    measured choice, or the static rule with the reason it runs (``info`` prints this)."""
    from polypviewer.engine.policy import (
        EngineError,
        choose_backend,
        choose_device,
        choose_precision,
        precision_reason,
    )
    from polypviewer.nets.registry import build_model, get_spec
    from polypviewer.nets.weights import load_checkpoint, load_weights

    ckpt = load_checkpoint(weights)
    name = ckpt.model_name
    if not name:
        raise EngineError("the checkpoint does not say which network it is for", weights)
    spec = get_spec(name)
    net = build_model(name)
    load_weights(net, ckpt, name)
    size = int((ckpt.preprocessing or spec.preprocessing).input_size)
    head = InferenceHead(net.eval(), spec.select)
    from polypviewer.engine.backends import state_digest

    device = choose_device("auto")
    precision = choose_precision(device, "auto")
    out: dict[str, Any] = {"model": name, "weights": str(weights), "input_size": size,
                           "candidates": ["/".join(p) for p in candidate_paths(device, "auto")]}
    choice = cached_choice(cache_root, name, state_digest(head), size) if out["candidates"] else None
    if choice is not None:
        out.update(backend=choice.backend, precision=choice.precision, how="measured", why=choice.why,
                   when=choice.when, measured={m.label(): m.fps for m in choice.measured})
        return out
    backend = choose_backend(device, "auto", precision)
    why = precision_reason(device, "auto", precision)
    if out["candidates"]:
        why += (f"; {backend} by the static rule: the engines are not measured on this CPU yet (the app "
                "measures them in the background on first use, `predict` before a run of 100+ frames)")
    out.update(backend=backend, precision=precision, how="rule", why=why)
    return out
