"""``OpenVINOBackend``: the torch module converted in memory and run by OpenVINO on the CPU.

``openvino.convert_model`` converts the traced module (no ONNX file); the model is compiled
for the CPU with a bf16 precision hint where the processor has AMX / AVX-512 BF16. The
converted model is cached as ``.xml/.bin`` under ``cache_dir()/openvino`` keyed by model,
weights content, input size, precision and OpenVINO version (``cache_key``), and OpenVINO's
compiled blobs under ``cache_dir()/openvino/blobs``, so a second start is fast. A latency
model serves single frames; a throughput model's async queue keeps several requests in
flight for the pipeline. In bf16 the convolutions reading the input image stay in fp32
(``engine/input_precision.py``: the ``precise`` attribute is written into the IR, since
``save_model`` drops it). int8 quantises the converted model (``quantise.py``: the stem stays
in float) and runs what it leaves in float in f32.
"""

from __future__ import annotations

import logging
import tempfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from polypviewer.engine.backends.base import Backend, InferenceHead, ResultCallback, Stream, safe_stem
from polypviewer.engine.backends.quantise import calibration_digest, float_layers, int8_recipe, quantise_int8
from polypviewer.engine.input_precision import mark_ir, marked_nodes, openvino_input_convolutions
from polypviewer.engine.policy import EngineError, nncf_version

__all__ = ["OpenVINOBackend", "cache_key", "openvino_version"]

log = logging.getLogger(__name__)


def openvino_version() -> str:
    """OpenVINO's release (``2026.4.1``), or ``none`` when it cannot be imported."""
    try:
        import openvino

        return str(openvino.__version__).split("-")[0]
    except Exception:  # noqa: BLE001 - a broken install is as good as none (policy.openvino_available)
        return "none"


def cache_key(model_name: str, digest: str, input_size: int, precision: str) -> str:
    """File stem of a cached converted model: changes whenever what it computes could."""
    if precision == "bf16":  # converted with the input convolutions marked fp32
        precision += "-fp32in"
    return f"{safe_stem(model_name)}-{digest[:16]}-{input_size}-{precision}-ov{openvino_version()}"


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
            if cache_key is not None:  # another rule, calibration set or NNCF release: another int8 model
                cache_key += f"-{int8_recipe()}-cal{calibration_digest(frames)[:12]}-nncf{nncf_version()}"
            self.model = self._converted(head, input_size, cache_key, cache_root,
                                         quantise=lambda m: quantise_int8(m, frames))
        else:
            self.model = self._converted(head, input_size, cache_key, cache_root)
        self.fp32_convolutions = marked_nodes(self.model)
        #: int8: the nodes NNCF left in floating point (no FakeQuantize feeds them)
        self.float_layers = _unquantised_convolutions(self.model) if precision == "int8" else []
        self._compiled: dict[str, Any] = {}
        self._lock = threading.Lock()
        self.requests_in_flight = 0  # set when the throughput model is compiled
        # The streams' model now (seconds; from OpenVINO's blob cache on later starts: the
        # look-ahead's first frames run on it); the single-frame one when a caller first needs
        # it (a quarter of a second from the cache at start-up that the app does not spend).
        self.compiled("THROUGHPUT")

    def _converted(self, head: InferenceHead, size: int, key: str | None, root: Path | None,
                   quantise: Callable[[Any], Any] | None = None) -> Any:
        ov = self._ov
        xml = None
        if key is not None and root is not None:
            folder = root / "openvino"
            folder.mkdir(parents=True, exist_ok=True)
            # A blob folder per precision: OpenVINO's blob key leaves the precision hint out
            # (prompting.OpenVINOPart._compile), so one IR compiled at two precisions collides.
            self.core.set_property({"CACHE_DIR": str(folder / "blobs" / self.precision)})
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
                # int8: what NNCF leaves in floating point is left there to be exact (quantise.py),
                # so it runs in f32, not in bf16 even where bf16 is native
                floating = "bf16" if self.precision == "bf16" else "f32"
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
        if self.precision == "int8":
            k = len(self.float_layers)
            return f"openvino int8 cpu (NNCF; {k} convolution{'s' if k != 1 else ''} kept in fp32)"
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


def _unquantised_convolutions(model: Any) -> list[str]:
    """``quantise.float_layers`` of a quantised model that really are not quantised: no
    FakeQuantize feeds their data input."""
    by_name = {op.get_friendly_name(): op for op in model.get_ordered_ops()}
    return [name for name in float_layers(model)
            if by_name[name].input(0).get_source_output().get_node().get_type_name() != "FakeQuantize"]


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
