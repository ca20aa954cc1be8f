"""``OnnxRuntimeBackend``: the torch module exported to ONNX and run by ONNX Runtime's CPU
execution provider (fp32 only: the CPU provider has no bf16 path to speak of).

The export is the one OpenVINO converts: the same ``torch.jit.trace`` of the inference head
(no trace check), written as ONNX by torch's TorchScript exporter (``dynamo=False``: it needs
the ``onnx`` package, not ``onnxscript``; measured once with torch 2.13 on a loaded machine it
exported lite_pranet in 3.7 s against 15.7 s for the ``torch.export`` exporter, whose graph
also ran at half the speed). Static input
(1, 3, S, S). The model is cached as ``.onnx`` under ``cache_dir()/onnxruntime`` keyed by
model, weights content, input size, precision, and the ONNX Runtime and torch versions
(``cache_key``), written atomically (``core.fileio``); a damaged entry is exported again.

One session with all threads serves single frames (``infer``); a stream (the look-ahead
pipeline) keeps ``requests_in_flight`` runs going at once on sessions of their own, each with
its share of the cores, so one run's serial parts overlap another's parallel ones.
"""

from __future__ import annotations

import logging
import os
import queue
import tempfile
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from polypviewer.core.fileio import atomic_write
from polypviewer.engine.backends.base import Backend, InferenceHead, ResultCallback, Stream, safe_stem
from polypviewer.engine.policy import EngineError

__all__ = ["DEFAULT_RUNS_IN_FLIGHT", "OnnxRuntimeBackend", "cache_key", "export_onnx", "onnxruntime_version"]

log = logging.getLogger(__name__)

#: runs in flight in a stream (``benchmarks/bench_onnxruntime_streams.py`` measures 1, 2 and 4)
DEFAULT_RUNS_IN_FLIGHT = 2
OPSET = 17


def onnxruntime_version() -> str:
    """ONNX Runtime's release (``1.32.0``), or ``none`` when it cannot be imported."""
    try:
        import onnxruntime

        return str(onnxruntime.__version__)
    except Exception:  # noqa: BLE001 - a broken install is as good as none (policy.onnxruntime_available)
        return "none"


def cache_key(model_name: str, digest: str, input_size: int, precision: str) -> str:
    """File stem of a cached exported model: changes whenever what it computes could (the
    exporter is torch's, so its version counts as well as ONNX Runtime's)."""
    torch_version = torch.__version__.split("+")[0]
    return (f"{safe_stem(model_name)}-{digest[:16]}-{input_size}-{precision}"
            f"-ort{onnxruntime_version()}-torch{torch_version}")


def export_onnx(head: InferenceHead, input_size: int) -> bytes:
    """The ONNX model (bytes) of ``head`` on a (1, 3, S, S) input, traced as OpenVINO's is."""
    example = torch.zeros(1, 3, input_size, input_size)
    with torch.no_grad(), warnings.catch_warnings(), tempfile.TemporaryDirectory(prefix="polypviewer-onnx-") as tmp:
        # torch warns that the TorchScript exporter is deprecated; it is the one that needs no
        # onnxscript and gives the faster graph here (module docstring).
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(head.eval(), example, check_trace=False, strict=False)
        out = Path(tmp) / "model.onnx"
        torch.onnx.export(traced, (example,), str(out), dynamo=False, input_names=["input"],
                          output_names=["logits"], opset_version=OPSET, do_constant_folding=True)
        return out.read_bytes()


class OnnxRuntimeBackend(Backend):
    """ONNX Runtime (CPU execution provider), fp32; see the module docstring."""

    name = "onnxruntime"

    def __init__(self, head: InferenceHead, input_size: int, *, precision: str = "fp32",
                 cache_key: str | None = None, cache_root: Path | None = None,
                 runs_in_flight: int = DEFAULT_RUNS_IN_FLIGHT, threads: int | None = None) -> None:
        if precision != "fp32":  # make_backend has refused it; constructed directly, say so too
            raise EngineError(f"the onnxruntime backend runs fp32 only, not {precision}; "
                              "use --precision fp32 or another backend")
        super().__init__("cpu", precision, input_size)
        import onnxruntime as ort

        self._ort = ort
        self.cache_hit = False
        self.threads = max(1, threads or _cores())
        self.requests_in_flight = max(1, int(runs_in_flight))
        path = cache_root / "onnxruntime" / f"{cache_key}.onnx" if cache_key and cache_root else None
        self.model = b""
        session = None
        if path is not None and path.is_file():
            try:
                self.model = path.read_bytes()
                session = self._session(self.threads)
                self.cache_hit = True
            except Exception as exc:  # noqa: BLE001 - a damaged cache entry is exported again, never fatal
                log.warning("%s: unreadable cached ONNX model (%s); exporting again", path, exc)
        if session is None:
            self.model = export_onnx(head, input_size)
            session = self._session(self.threads)
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                atomic_write(path, self.model)
        self.session = session
        self._input = session.get_inputs()[0].name
        self._stream_sessions: queue.SimpleQueue[Any] | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def _session(self, threads: int) -> Any:
        ort = self._ort
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # errors only: its warnings are about unused initialisers
        return ort.InferenceSession(self.model, options, providers=["CPUExecutionProvider"])

    def infer(self, batch: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        # the export's input is (1, 3, S, S): frames run one after another
        out = [self.session.run(None, {self._input: batch[i:i + 1]})[0][:, 0] for i in range(len(batch))]
        return np.ascontiguousarray(np.concatenate(out), dtype=np.float32)

    def sessions_for_streams(self) -> tuple[queue.SimpleQueue[Any], ThreadPoolExecutor]:
        """``requests_in_flight`` sessions with the cores shared out, and the threads that
        run them, made on first use and shared by every stream of this backend."""
        with self._lock:
            if self._stream_sessions is None or self._pool is None:
                sessions: queue.SimpleQueue[Any] = queue.SimpleQueue()
                share = max(1, self.threads // self.requests_in_flight)
                for _ in range(self.requests_in_flight):
                    sessions.put(self._session(share))
                self._stream_sessions = sessions
                self._pool = ThreadPoolExecutor(max_workers=self.requests_in_flight,
                                                thread_name_prefix="polypviewer-ort")
            return self._stream_sessions, self._pool

    def stream(self, on_result: ResultCallback) -> Stream:
        if self.requests_in_flight == 1:
            return super().stream(on_result)
        return _OnnxRuntimeStream(self, on_result)

    def describe(self) -> str:
        return (f"onnxruntime {self.precision} cpu ({self.threads} threads; "
                f"{self.requests_in_flight} runs in flight in streams)")


class _OnnxRuntimeStream(Stream):
    """Up to ``requests_in_flight`` runs at once, each on a session of its own."""

    def __init__(self, backend: OnnxRuntimeBackend, on_result: ResultCallback) -> None:
        self.backend = backend
        self.on_result = on_result
        self.sessions, self.pool = backend.sessions_for_streams()
        self.slots = threading.Semaphore(backend.requests_in_flight)
        self.pending: list[Any] = []
        self.errors: list[BaseException] = []

    def _run(self, tag: Any, batch: np.ndarray) -> None:
        session = self.sessions.get()
        try:
            name = self.backend._input
            out = [session.run(None, {name: batch[i:i + 1]})[0][:, 0] for i in range(len(batch))]
            self.on_result(tag, np.ascontiguousarray(np.concatenate(out), dtype=np.float32))
        except BaseException as exc:  # noqa: BLE001 - raised on the submitting thread instead
            self.errors.append(exc)
        finally:
            self.sessions.put(session)
            self.slots.release()

    def submit(self, tag: Any, batch: np.ndarray) -> None:
        if self.errors:
            raise self.errors.pop(0)
        self.slots.acquire()  # at most requests_in_flight at once, as OpenVINO's queue
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        self.pending = [f for f in self.pending if not f.done()]
        self.pending.append(self.pool.submit(self._run, tag, batch))

    def wait(self) -> None:
        for f in self.pending:
            f.result()
        self.pending = []
        if self.errors:
            raise self.errors.pop(0)


def _cores() -> int:
    """Cores this process may run on (ONNX Runtime's own default counts the machine's)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1
