"""The machine's matrix-multiply peak, to read inference speeds against a compute floor.

A PraNet frame at 352x352 costs 26.0 GFLOP (`polypviewer info`); at the bf16 GEMM peak
measured here, frames/s cannot exceed peak / 26. Prints the machine and the command.

    python benchmarks/bench_gemm_peak.py
"""

from __future__ import annotations

import platform
import sys
import time

import torch

from polypviewer.nets.summary import model_summary


def peak_gflops(dtype: torch.dtype, n: int = 2048, seconds: float = 3.0) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(2):
        a @ b
    t, k = time.perf_counter(), 0
    while time.perf_counter() - t < seconds:
        a @ b
        k += 1
    return 2 * n**3 * k / (time.perf_counter() - t) / 1e9


def main() -> int:
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")),
               platform.processor()) if sys.platform.startswith("linux") else platform.processor()
    print(f"machine: {cpu}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"command: python {' '.join(sys.argv)}")
    fp32, bf16 = peak_gflops(torch.float32), peak_gflops(torch.bfloat16)
    flops = model_summary("pranet", with_flops=True)["gflops"]
    print(f"GEMM peak: fp32 {fp32:.0f} GFLOP/s, bf16 {bf16:.0f} GFLOP/s")
    print(f"PraNet at 352 ({flops:.1f} GFLOP/frame): compute floor {bf16 / flops:.1f} frames/s in bf16, "
          f"{fp32 / flops:.1f} in fp32")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
