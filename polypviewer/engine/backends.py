"""Inference backends behind one interface, and the device / precision / backend policy.

A backend runs a network on preprocessed input ``(N, 3, S, S) float32`` and returns the
inference map's LOGITS ``(N, S', S') float32``. Pre- and post-processing (resize, colour
order, normalisation, sigmoid, resize back) live in ``inference.py``, once, so every
backend sees the same input and gives the same kind of output.

- ``TorchBackend``: eager PyTorch. BatchNorm folded into the preceding convolutions,
  channels_last, ``inference_mode``; bf16 autocast on CPUs with native bf16, fp16 autocast
  on CUDA.
- ``OpenVINOBackend``: the same torch module converted in memory with
  ``openvino.convert_model`` (no ONNX file), compiled for the CPU with a bf16 precision
  hint where the processor has AMX / AVX-512 BF16. The converted model is cached as
  ``.xml/.bin`` under ``cache_dir()/openvino`` keyed by model, weights content, input size
  and precision, and OpenVINO's compiled blobs under ``cache_dir()/openvino/blobs``, so a
  second start is fast. Several infer requests in flight feed the pipeline.
- In bf16 / fp16 both keep the convolutions that read the input image in fp32
  (``input_precision.py``): rounding the first layer to bf16 is the largest single source
  of disagreement with fp32, and those layers cost about 1 % of the time.
- ``int8`` (opt-in, CPU, OpenVINO only): the converted model is quantised after training
  by NNCF (``nncf.quantize``, its default "performance" preset: 8-bit weights per channel,
  8-bit activations per tensor) with statistics from calibration frames the caller passes
  (``predict`` samples them evenly from the source). Operations NNCF leaves in floating
  point run in bf16 where the CPU has it. Cached like the bf16 model, keyed also by the
  calibration frames. It trades accuracy for speed: ``polypviewer bench`` measures both
  against fp32, and ``auto`` never picks it.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import logging
import tempfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from polypviewer.engine.folding import fold_batchnorm
from polypviewer.engine.input_precision import (
    keep_input_convolutions_fp32,
    mark_ir,
    marked_nodes,
    openvino_input_convolutions,
)
from polypviewer.engine.policy import (  # re-exported (__all__): the policy is part of this API
    BACKENDS,
    DEVICES,
    PRECISIONS,
    EngineError,
    check_combination,
    choose_backend,
    choose_device,
    choose_precision,
    cpu_flags,
    cpu_has_native_bf16,
    cpu_name,
    describe_cpu,
    nncf_available,
    openvino_available,
    precision_reason,
)

log = logging.getLogger(__name__)

# Called with (tag, logits (n, S', S') float32) when a submitted batch is done; tag is the
# caller's per-batch token, handed back unchanged.
ResultCallback = Callable[[Any, np.ndarray], None]


# --------------------------------------------------------------------------- model prep


class InferenceHead(nn.Module):
    """The network followed by its spec's ``select``: one logits tensor (N, 1, H, W)."""

    def __init__(self, model: nn.Module, select: Callable[[Any], torch.Tensor]) -> None:
        super().__init__()
        self.model = model
        self._select = select

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._select(self.model(x))


def state_digest(module: nn.Module) -> str:
    """sha256 of every parameter and buffer (names, shapes, bytes): what the network computes."""
    h = hashlib.sha256()
    for name, t in module.state_dict().items():
        t = t.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


# --------------------------------------------------------------------------- backends


class Backend:
    """Runs the network on preprocessed input; see the module docstring."""

    name = "base"

    def __init__(self, device: str, precision: str, input_size: int) -> None:
        self.device = device
        self.precision = precision
        self.input_size = input_size

    #: how many frames the pipeline should put in one submitted batch
    preferred_batch = 1

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """(N, 3, S, S) float32 -> logits (N, S', S') float32, synchronously."""
        raise NotImplementedError

    def stream(self, on_result: ResultCallback) -> Stream:
        """A submission channel for the pipeline (several batches may be in flight)."""
        return SyncStream(self, on_result)

    def describe(self) -> str:
        return f"{self.name} {self.precision} {self.device}"


class Stream:
    """``submit(tag, batch)`` may return before the result; ``on_result`` gets it later.
    ``wait()`` returns when everything submitted has been delivered."""

    def submit(self, tag: Any, batch: np.ndarray) -> None:
        raise NotImplementedError

    def wait(self) -> None:
        raise NotImplementedError


class SyncStream(Stream):
    def __init__(self, backend: Backend, on_result: ResultCallback) -> None:
        self.backend = backend
        self.on_result = on_result

    def submit(self, tag: Any, batch: np.ndarray) -> None:
        self.on_result(tag, self.backend.infer(batch))

    def wait(self) -> None:
        return None


class TorchBackend(Backend):
    """Eager PyTorch with the engine's optimisations (each can be turned off for baselines)."""

    name = "torch"

    def __init__(self, head: InferenceHead, input_size: int, *, device: str = "cpu",
                 precision: str = "fp32", fold_bn: bool = True, channels_last: bool = True) -> None:
        super().__init__(device, precision, input_size)
        module: nn.Module = head.eval()
        self.folded = 0
        if fold_bn:
            # A small input finds the same conv->BN pairs as a full-size one, 30x cheaper.
            probe = min(input_size, 64)
            module, self.folded = fold_batchnorm(module, torch.randn(1, 3, probe, probe))
        self._dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
        self.fp32_convolutions: list[str] = []
        if self._dtype is not None:
            # The convolutions reading the input image run in fp32 (input_precision.py), as in
            # the OpenVINO backend. They are wrapped in place: never in the caller's module.
            if not self.folded:
                module = copy.deepcopy(module)
            probe = min(input_size, 64)
            self.fp32_convolutions = keep_input_convolutions_fp32(module, torch.randn(1, 3, probe, probe))
        self.channels_last = channels_last
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        # Module.to(memory_format=...) is documented and works; torch's overloads leave it out.
        self.module = module.to(device=device, memory_format=memory_format)  # type: ignore[call-overload]
        # CUDA: batches keep the GPU busy; CPU: batch 1 is as fast per frame and keeps latency low.
        self.preferred_batch = 8 if device == "cuda" else 1
        if device == "cuda":
            torch.backends.cudnn.benchmark = True

    def infer(self, batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
        if self.device == "cuda":
            x = x.pin_memory().to("cuda", non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), torch.autocast(device_type=self.device, dtype=self._dtype or torch.float32,
                                                     enabled=self._dtype is not None):
            y = self.module(x)
        logits: np.ndarray = y.float()[:, 0].cpu().numpy()
        return logits

    def describe(self) -> str:
        extras = [f"{self.folded} BN folded" if self.folded else "no BN folding",
                  "channels_last" if self.channels_last else "contiguous"]
        if self.fp32_convolutions:
            extras.append(f"{len(self.fp32_convolutions)} input conv fp32")
        return f"torch {self.precision} {self.device} ({', '.join(extras)})"


class OpenVINOBackend(Backend):
    """OpenVINO on the CPU; static input (1, 3, S, S), several requests in flight for streams."""

    name = "openvino"

    def __init__(self, head: InferenceHead, input_size: int, *, precision: str = "fp32",
                 cache_key: str | None = None, cache_root: Path | None = None,
                 calibration: Sequence[np.ndarray] | None = None) -> None:
        super().__init__("cpu", precision, input_size)
        import openvino as ov

        self._ov = ov
        self.core = ov.Core()
        self.cache_hit = False
        if precision == "int8":  # make_backend has checked NNCF and the calibration frames
            if not calibration:  # (constructed directly, without make_backend)
                raise EngineError("int8 needs calibration frames (a few frames like those to segment)")
            frames = calibration
            if cache_key is not None:  # another calibration set or NNCF release: another int8 model
                import nncf

                cache_key += f"-cal{calibration_digest(frames)[:12]}-nncf{nncf.__version__}"
            self.model = self._converted(head, input_size, cache_key, cache_root,
                                         quantise=lambda m: quantise_int8(m, frames))
        else:
            self.model = self._converted(head, input_size, cache_key, cache_root)
        self.fp32_convolutions = marked_nodes(self.model)
        self._compiled: dict[str, Any] = {}
        self._lock = threading.Lock()
        self.requests_in_flight = 0  # set when the throughput model is compiled
        # Compile both now (seconds; from OpenVINO's blob cache on later starts) so neither
        # the first look-ahead batch nor the first single-frame prediction stalls on it.
        self.compiled("THROUGHPUT")
        self.compiled("LATENCY")

    def _converted(self, head: InferenceHead, size: int, key: str | None, root: Path | None,
                   quantise: Callable[[Any], Any] | None = None) -> Any:
        ov = self._ov
        xml = None
        if key is not None and root is not None:
            folder = root / "openvino"
            folder.mkdir(parents=True, exist_ok=True)
            self.core.set_property({"CACHE_DIR": str(folder / "blobs")})
            xml = folder / f"{key}.xml"
            if xml.exists() and xml.with_suffix(".bin").exists():
                try:
                    model = self.core.read_model(str(xml))
                    self.cache_hit = True
                    return model
                except Exception as exc:  # noqa: BLE001 - a damaged cache entry is rebuilt, never fatal
                    log.warning("%s: unreadable cached OpenVINO model (%s); converting again", xml, exc)
        example = torch.zeros(1, 3, size, size)
        with torch.no_grad():
            # Trace ourselves without check_trace: OpenVINO's own trace re-runs the network
            # three more times to check it, which doubles the conversion time.
            traced = torch.jit.trace(head.eval(), example, check_trace=False, strict=False)
            model = ov.convert_model(traced, example_input=example, input=[(1, 3, size, size)])
        if quantise is not None:
            model = quantise(model)
        precise = openvino_input_convolutions(model) if self.precision == "bf16" else []
        if not precise:
            if xml is not None:
                _save_ir(model, xml)
            return model
        # bf16: the convolutions reading the input image stay in fp32 (input_precision.py).
        # The attribute that says so survives only in the IR's XML, so the model is read back
        # from an IR: the cache entry, or a scratch one read into memory.
        with tempfile.TemporaryDirectory(prefix="polypviewer-ov-") as scratch:
            final = xml if xml is not None else Path(scratch) / "model.xml"
            _save_ir(model, final, edit=lambda text: mark_ir(text, precise))
            if xml is not None:
                model = self.core.read_model(str(final))
            else:
                weights = np.fromfile(final.with_suffix(".bin"), dtype=np.uint8)
                model = self.core.read_model(final.read_bytes(), ov.Tensor(weights))
        if sorted(marked_nodes(model)) != sorted(precise):
            log.warning("OpenVINO did not keep the input convolutions in fp32; bf16 agrees less with fp32")
        return model

    def compiled(self, mode: str = "LATENCY") -> Any:
        """The model compiled for ``LATENCY`` (one frame fast) or ``THROUGHPUT`` (streams)."""
        with self._lock:
            if mode not in self._compiled:
                # int8: what NNCF leaves in floating point runs in bf16 where it is native
                floating = "bf16" if self.precision == "bf16" or (
                    self.precision == "int8" and cpu_has_native_bf16()) else "f32"
                config = {"PERFORMANCE_HINT": mode, "INFERENCE_PRECISION_HINT": floating}
                cm = self.core.compile_model(self.model, "CPU", config)
                self._compiled[mode] = cm
                if mode == "THROUGHPUT":
                    # At least 2 so one request decodes its result while the next computes.
                    self.requests_in_flight = max(2, int(cm.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))
            return self._compiled[mode]

    def infer(self, batch: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if len(batch) == 1:
            req = self._latency_request()
            out = req.infer({0: batch})
            return np.array(next(iter(out.values()))[:, 0], dtype=np.float32)
        results: list[np.ndarray | None] = [None] * len(batch)

        def done(i: Any, logits: np.ndarray) -> None:
            results[i] = logits[0]

        stream = self.stream(done)
        for i in range(len(batch)):
            stream.submit(i, batch[i:i + 1])
        stream.wait()
        got = [r for r in results if r is not None]
        if len(got) != len(results):
            raise EngineError(f"OpenVINO returned {len(got)} results for {len(results)} frames")
        return np.stack(got)

    def _latency_request(self) -> Any:
        # One request per thread: infer requests are not thread-safe.
        local = self.__dict__.setdefault("_tls", threading.local())
        if not hasattr(local, "req"):
            local.req = self.compiled("LATENCY").create_infer_request()
        return local.req

    def stream(self, on_result: ResultCallback) -> Stream:
        return _OpenVINOStream(self, on_result)

    def describe(self) -> str:
        n = len(self.fp32_convolutions)
        return f"openvino {self.precision} cpu" + (f" ({n} input conv fp32)" if n else "")


class _OpenVINOStream(Stream):
    def __init__(self, backend: OpenVINOBackend, on_result: ResultCallback) -> None:
        ov = backend._ov
        compiled = backend.compiled("THROUGHPUT")
        self.queue = ov.AsyncInferQueue(compiled, backend.requests_in_flight)
        self.errors: list[BaseException] = []

        def callback(request: Any, tag: Any) -> None:
            try:
                # Copy: the request's output buffer is reused by its next inference.
                logits = np.array(request.get_output_tensor(0).data[:, 0], dtype=np.float32)
                on_result(tag, logits)
            except BaseException as exc:  # noqa: BLE001 - an exception here would be lost
                self.errors.append(exc)

        self.queue.set_callback(callback)

    def submit(self, tag: Any, batch: np.ndarray) -> None:
        if len(batch) != 1:
            raise ValueError("the OpenVINO stream takes one frame per submission")
        self.queue.start_async({0: np.ascontiguousarray(batch, dtype=np.float32)}, tag)
        if self.errors:
            raise self.errors.pop(0)

    def wait(self) -> None:
        self.queue.wait_all()
        if self.errors:
            raise self.errors.pop(0)


def _save_ir(model: Any, xml: Path, edit: Callable[[str], str] | None = None) -> None:
    """Write ``model`` as ``xml`` + ``.bin``, the XML passed through ``edit`` first.

    Written under a temporary name, then renamed: a crash never leaves half a model. An
    ``edit`` that raises ``ValueError`` is logged and skipped (the model runs, only less exactly)."""
    import openvino as ov

    tmp = xml.with_name(xml.stem + ".partial.xml")
    ov.save_model(model, str(tmp), compress_to_fp16=False)
    if edit is not None:
        try:
            tmp.write_text(edit(tmp.read_text(encoding="utf-8")), encoding="utf-8")
        except ValueError as exc:
            log.warning("%s: cannot edit the OpenVINO model: %s", xml.name, exc)
    tmp.with_suffix(".bin").replace(xml.with_suffix(".bin"))
    tmp.replace(xml)


def calibration_digest(batches: Sequence[np.ndarray]) -> str:
    """sha256 of the calibration inputs: a different calibration set is a different int8 model."""
    h = hashlib.sha256()
    for b in batches:
        b = np.ascontiguousarray(b, dtype=np.float32)
        h.update(f"{b.shape};".encode())
        h.update(b.tobytes())
    return h.hexdigest()


def quantise_int8(model: Any, calibration: Sequence[np.ndarray]) -> Any:
    """Post-training 8-bit quantisation of an OpenVINO model by NNCF.

    ``calibration``: preprocessed inputs, each (1, 3, S, S) or (3, S, S) float32. NNCF's
    defaults otherwise (performance preset, min/max statistics, fast bias correction)."""
    import nncf

    # NNCF logs each step at INFO and draws rich progress bars on stdout (where `predict`
    # prints its metrics); the caller reports the step itself.
    nncf.set_log_level(logging.ERROR)
    items = [np.ascontiguousarray(b, dtype=np.float32).reshape((1,) + np.shape(b)[-3:]) for b in calibration]
    log.info("quantising to int8 on %d calibration frames", len(items))
    with contextlib.redirect_stdout(io.StringIO()):
        return nncf.quantize(model, nncf.Dataset(items), subset_size=len(items))


def cache_key(model_name: str, digest: str, input_size: int, precision: str) -> str:
    """File stem of a cached converted model: changes whenever what it computes could."""
    try:
        import openvino

        ov_version = openvino.__version__.split("-")[0]
    except Exception:  # noqa: BLE001 - a broken install is as good as none (policy.openvino_available)
        ov_version = "none"
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in model_name)
    if precision == "bf16":  # converted with the input convolutions marked fp32
        precision += "-fp32in"
    return f"{safe}-{digest[:16]}-{input_size}-{precision}-ov{ov_version}"


def make_backend(kind: str, head: InferenceHead, input_size: int, *, device: str, precision: str,
                 model_name: str, cache_root: Path | None = None,
                 calibration: Sequence[np.ndarray] | None = None) -> Backend:
    """Build the chosen backend; ``kind`` and friends come from the choose_* functions.
    ``calibration``: preprocessed inputs for int8 quantisation (ignored otherwise)."""
    check_combination(kind, precision, calibration)
    if kind == "openvino":
        key = cache_key(model_name, state_digest(head), input_size, precision) if cache_root else None
        return OpenVINOBackend(head, input_size, precision=precision, cache_key=key, cache_root=cache_root,
                               calibration=calibration)
    return TorchBackend(head, input_size, device=device, precision=precision)


__all__ = ["BACKENDS", "DEVICES", "PRECISIONS", "Backend", "EngineError", "InferenceHead", "OpenVINOBackend",
           "Stream", "TorchBackend", "cache_key", "calibration_digest", "check_combination", "choose_backend",
           "choose_device", "choose_precision", "cpu_flags", "cpu_has_native_bf16", "cpu_name", "describe_cpu",
           "fold_batchnorm", "make_backend", "nncf_available", "openvino_available", "precision_reason",
           "quantise_int8", "state_digest"]
