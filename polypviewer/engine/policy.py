"""Hardware policy: which device, precision and backend to run on this machine, and why.

The processor decides what is fast *and* exact. ``auto`` picks bf16 only where the CPU
computes it natively (AMX-BF16 or AVX-512 BF16); elsewhere (an AVX2-only AMD EPYC, say)
bf16 would be emulated, slower than fp32 and no more exact, so ``auto`` runs fp32. This
static rule never picks int8; ``engine/selection.py`` may, once it has measured on this machine
that the int8 path agrees with fp32 on held-out frames and is the fastest. Every choice comes
with a one-line reason that ``info``, the predictor's ``info`` and the model panel show.

The CPU's flags are read from ``/proc/cpuinfo`` and capped by ``ONEDNN_MAX_CPU_ISA`` when it
is set: oneDNN (inside torch and inside OpenVINO's CPU plugin) then refuses the instructions
above the cap, so the policy must not plan on them either. ``ONEDNN_MAX_CPU_ISA=AVX2`` makes
an AMX or AVX-512 machine choose as an AVX2-only one does (``make test-portable``). Without
the cap OpenVINO's plugin still believes in bf16 and fails to build its bf16 convolutions
("object is not initialized"), measured with OpenVINO 2026.4 on an AVX-512 BF16 EPYC.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from polypviewer.core.errors import PolypviewerError

__all__ = [
    "BACKENDS", "DEVICES", "PRECISIONS", "EngineError", "check_combination", "choose_backend",
    "choose_device", "choose_precision", "cpu_flags", "cpu_has_native_bf16", "cpu_isa_cap", "cpu_name",
    "describe_cpu", "nncf_available", "nncf_version", "onnxruntime_available", "openvino_available", "precision_reason",
    "raw_cpu_flags",
]

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16", "fp16", "int8")
BACKENDS = ("auto", "torch", "openvino", "onnxruntime")

# Flags that say what the policy cares about, in the order `describe_cpu` prints them.
ISA_FLAGS = ("avx2", "avx_vnni", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")

# ONEDNN_MAX_CPU_ISA value -> the flags oneDNN then no longer uses (oneDNN's own ISA ladder).
_AVX512 = {"avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512cd", "avx512_vnni", "avx512_bf16",
           "avx512_fp16", "avx512_vbmi", "avx512_vbmi2", "avx512ifma", "avx512_bitalg", "avx512_vpopcntdq"}
_AMX = {"amx_bf16", "amx_int8", "amx_tile", "amx_fp16", "amx_complex"}
_ISA_CAPS: dict[str, frozenset[str]] = {
    "SSE41": frozenset({"avx", "avx2", "avx_vnni", "fma", "f16c"} | _AVX512 | _AMX),
    "AVX": frozenset({"avx2", "avx_vnni", "fma"} | _AVX512 | _AMX),
    "AVX2": frozenset({"avx_vnni"} | _AVX512 | _AMX),
    "AVX2_VNNI": frozenset(_AVX512 | _AMX),
    "AVX2_VNNI_2": frozenset(_AVX512 | _AMX),
    "AVX512_CORE": frozenset({"avx512_vnni", "avx512_bf16", "avx512_fp16"} | _AMX),
    "AVX512_CORE_VNNI": frozenset({"avx512_bf16", "avx512_fp16"} | _AMX),
    "AVX512_CORE_BF16": frozenset({"avx512_fp16"} | _AMX),
    "AVX512_CORE_FP16": frozenset(_AMX),
    "AVX10_1_512": frozenset(_AMX),
    "AVX512_CORE_AMX": frozenset(),
    "AVX512_CORE_AMX_FP16": frozenset(),
    "AVX10_1_512_AMX": frozenset(),
    "AVX10_1_512_AMX_FP16": frozenset(),
    "ALL": frozenset(),
    "DEFAULT": frozenset(),
}


class EngineError(PolypviewerError):
    """The requested device / precision / backend cannot be used here."""


def raw_cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> frozenset[str]:
    """The first processor's feature flags as the kernel reports them (empty without cpuinfo)."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def cpu_isa_cap() -> str | None:
    """``ONEDNN_MAX_CPU_ISA`` upper-cased, or None when unset or empty."""
    value = os.environ.get("ONEDNN_MAX_CPU_ISA", "").strip().upper()
    return value or None


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo", cap: str | None = None) -> frozenset[str]:
    """The flags the engine may plan on: ``raw_cpu_flags`` less what ``ONEDNN_MAX_CPU_ISA``
    (or ``cap``) rules out. An unknown cap value is ignored (oneDNN ignores it too)."""
    flags = raw_cpu_flags(cpuinfo)
    cap = cap if cap is not None else cpu_isa_cap()
    if cap:
        flags = flags - _ISA_CAPS.get(cap.upper(), frozenset())
    return flags


def cpu_has_native_bf16(flags: Iterable[str] | None = None) -> bool:
    """True when the CPU computes bf16 natively (AMX-BF16 or AVX-512 BF16)."""
    flags = cpu_flags() if flags is None else frozenset(flags)
    return "amx_bf16" in flags or "avx512_bf16" in flags


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def describe_cpu(flags: Iterable[str] | None = None) -> str:
    """``"AMD EPYC, 2 logical cores, ISA avx2 avx512f avx512_bf16 (capped at AVX2)"``: the
    line benchmarks and ``info`` print beside every machine-dependent number."""
    flags = cpu_flags() if flags is None else frozenset(flags)
    isa = " ".join(f for f in ISA_FLAGS if f in flags) or "none of " + "/".join(ISA_FLAGS[:3])
    cap = cpu_isa_cap()
    return (f"{cpu_name()}, {os.cpu_count()} logical cores, ISA {isa}"
            f"{f' (capped at {cap} by ONEDNN_MAX_CPU_ISA)' if cap else ''}")


def choose_device(requested: str = "auto") -> str:
    """``auto`` -> ``cuda`` when a CUDA device is usable, else ``cpu``."""
    if requested not in DEVICES:
        raise EngineError(f"unknown device {requested!r}; choose one of: {', '.join(DEVICES)}")
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise EngineError("--device cuda asked for, but no CUDA device is available "
                          "(this torch build or machine has none); use --device cpu")
    return requested


def choose_precision(device: str, requested: str = "auto",
                     flags: Sequence[str] | frozenset[str] | None = None, backend: str = "auto") -> str:
    """The arithmetic precision to run in.

    ``auto``: CUDA -> fp16; CPU -> bf16 where the processor has native bf16 (AMX or
    AVX-512 BF16; ``flags`` overrides the machine's, for tests), else fp32. An explicit
    request is honoured where it can run: fp16 needs CUDA; bf16 on a CPU without native
    support runs through torch (emulated, slowly) because the user asked for it.
    ``backend="onnxruntime"``: fp32, the one precision its CPU provider runs here.
    """
    if requested not in PRECISIONS:
        raise EngineError(f"unknown precision {requested!r}; choose one of: {', '.join(PRECISIONS)}")
    if backend == "onnxruntime" and device == "cpu":
        if requested not in ("auto", "fp32"):
            raise EngineError(f"the onnxruntime backend runs fp32 only, not {requested}; "
                              "use --precision fp32 or --backend openvino / torch")
        return "fp32"
    if device == "cuda":
        if requested == "int8":
            raise EngineError("int8 inference runs on the CPU (OpenVINO); on CUDA use fp16, bf16 or fp32")
        if requested == "auto":
            return "fp16"
        if requested == "bf16" and not torch.cuda.is_bf16_supported():
            raise EngineError("this CUDA device has no bf16 support; use --precision fp16 or fp32")
        return requested
    if requested == "auto":
        return "bf16" if cpu_has_native_bf16(flags) else "fp32"
    if requested == "fp16":
        raise EngineError("fp16 inference needs a CUDA device; on the CPU use --precision bf16 or fp32")
    return requested


def precision_reason(device: str, requested: str, chosen: str,
                     flags: Sequence[str] | frozenset[str] | None = None, backend: str = "auto") -> str:
    """Why ``chosen`` runs, in words (``info`` and the model panel show it)."""
    if backend == "onnxruntime" and requested == "auto" and device == "cpu":
        return "fp32: ONNX Runtime's CPU provider runs fp32"
    if requested != "auto":
        if device == "cpu" and chosen == "bf16" and not cpu_has_native_bf16(flags):
            return "bf16 as asked, emulated: this CPU has no native bf16 (slower than fp32)"
        if chosen == "int8":
            return "int8 as asked (post-training quantised; `polypviewer bench` measures its agreement)"
        return f"{chosen} as asked"
    if device == "cuda":
        return "fp16 autocast on CUDA"
    f = cpu_flags() if flags is None else frozenset(flags)
    if chosen == "bf16":
        native = "amx_bf16" if "amx_bf16" in f else "avx512_bf16"
        return f"bf16: the CPU computes it natively ({native})"
    return "fp32: this CPU has no native bf16 (no amx_bf16 / avx512_bf16), where bf16 would be slower"


def check_combination(backend: str, precision: str, calibration: Sequence[Any] | None = None) -> None:
    """Refuse a backend / precision pair that cannot run: int8 is OpenVINO + NNCF only, and
    needs calibration frames."""
    if precision != "int8":
        return
    if backend != "openvino":
        raise EngineError("int8 inference runs through OpenVINO; use --backend openvino (or auto) on the CPU")
    if not nncf_available():
        raise EngineError("int8 inference needs NNCF to quantise the network: pip install nncf "
                          "(or pip install 'polypviewer[int8]')")
    if not calibration:
        raise EngineError("int8 needs calibration frames (a few frames like those to segment)")


def nncf_version() -> str:
    """NNCF's release from its installed metadata, "none" when it is not installed; found, not
    imported (its import takes half a second, and is needed only when a network is quantised)."""
    if importlib.util.find_spec("nncf") is None:
        return "none"
    try:
        return importlib.metadata.version("nncf")
    except importlib.metadata.PackageNotFoundError:  # on the path without package metadata
        return "unknown"


def nncf_available() -> bool:
    """NNCF is installed (``nncf_version``; a broken install fails when it quantises, with its
    own error, which the int8 path reports: ``selection.measure`` then skips the candidate)."""
    return nncf_version() != "none"


def onnxruntime_available() -> bool:
    """ONNX Runtime to run the model and ``onnx``, which torch's exporter writes it with."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except Exception:  # noqa: BLE001 - a broken install is as good as none
        return False
    return True


def openvino_available() -> bool:
    try:
        import openvino  # noqa: F401
    except Exception:  # noqa: BLE001 - a broken install is as good as none: fall back to torch
        return False
    return True


def choose_backend(device: str, requested: str = "auto", precision: str = "fp32",
                   flags: Sequence[str] | frozenset[str] | None = None) -> str:
    """``auto``: CUDA -> torch; CPU with OpenVINO importable -> openvino; else torch.

    bf16 on a CPU without native bf16 (asked for explicitly) goes to torch, which emulates
    it: OpenVINO would run fp32 under the bf16 name, or fail where oneDNN is capped.
    This is the rule before anything is measured: ``engine/selection.py`` times the exact
    paths on this machine and, once it has, ``auto`` runs the fastest that agrees with fp32.
    ``onnxruntime``: the CPU, fp32 only, and only when ``onnxruntime`` and ``onnx`` import.
    """
    if requested not in BACKENDS:
        raise EngineError(f"unknown backend {requested!r}; choose one of: {', '.join(BACKENDS)}")
    emulated_bf16 = device == "cpu" and precision == "bf16" and not cpu_has_native_bf16(flags)
    if requested == "openvino":
        if device != "cpu":
            raise EngineError("the openvino backend runs on the CPU only; use --device cpu")
        if not openvino_available():
            raise EngineError("openvino is not installed; install it or use --backend torch")
        if emulated_bf16:
            raise EngineError("this CPU has no native bf16, so OpenVINO cannot run bf16; "
                              "use --precision fp32 or --backend torch (emulated bf16)")
        return "openvino"
    if requested == "onnxruntime":
        if device != "cpu":
            raise EngineError("the onnxruntime backend runs on the CPU only here; use --device cpu")
        if not onnxruntime_available():
            raise EngineError("onnxruntime is not installed: pip install onnxruntime onnx "
                              "(or pip install 'polypviewer[onnxruntime]'), or use another --backend")
        if precision != "fp32":
            raise EngineError(f"the onnxruntime backend runs fp32 only, not {precision}; use --precision fp32")
        return "onnxruntime"
    if requested == "torch":
        return "torch"
    if emulated_bf16:
        return "torch"
    return "openvino" if device == "cpu" and openvino_available() else "torch"
