"""int8 by NNCF post-training quantisation (CPU, OpenVINO only), with the stem kept in float.

The converted OpenVINO model is quantised by ``nncf.quantize`` with its default
"performance" preset (8-bit weights per channel, 8-bit activations per tensor) on
statistics from calibration frames the caller passes, except for the layers ``float_layers``
names, which NNCF leaves in floating point (its ``IgnoredScope``):

- the convolutions that read the input image (as bf16 keeps them in fp32,
  ``engine/input_precision.py``), and
- a depthwise (grouped) convolution those feed next, through BatchNorm / activation only.

Those two are what NNCF's accuracy-controlled quantisation (``nncf.quantize_with_accuracy_control``,
which ranks every quantised layer by what it costs the Dice against fp32 and returns the
worst to float until the drop is small) returned to float for the shipped ``lite_pranet``,
three runs out of three (``benchmarks/int8_accuracy_control.py``, README): the
EfficientNet-Lite stem convolution and block 0's depthwise convolution, 2 of 146
quantisation points. Found by structure, not by name, they are found again for any weights of
the network, at the cost of one plain quantisation (tens of seconds) instead of the accuracy
control's 10-17 minutes. Whether the result agrees with fp32 is measured, not assumed:
``engine/selection.py`` offers this int8 to ``auto`` only when it agrees on frames that were
not used to calibrate it. ``RECIPE`` names the rule in the cache keys: another rule, another
model.

On a CPU without VNNI (AVX2 only, as AMD Zen 3; or any CPU under ``ONEDNN_MAX_CPU_ISA=AVX2``)
oneDNN multiplies u8 activations by s8 weights with ``vpmaddubsw``, whose 16-bit sums of two
products saturate. NNCF's default guards only the first quantised layer against that (its
``OverflowFix.FIRST_LAYER``); the rest overflowed, and the shipped model's int8 disagreed
with fp32 there (Dice 0.970 against fp32 on the 8 held-out shipped frames, where VNNI gives
0.987). Without VNNI every layer's weights are therefore quantised to 7 bits
(``OverflowFix.ENABLE``: no product pair can saturate), which agrees (Dice 0.984, mean |dp|
0.0038, the same numbers on either CPU since nothing saturates) and runs no slower. With VNNI
(AVX-512 VNNI, AVX-VNNI, AMX) the 32-bit accumulation cannot saturate and the 8-bit weights
stay (``overflow_fix``). ``int8_recipe()`` names the rule with that choice, so an int8 model
built for one CPU kind is never reused on the other.

The result is cached like the fp32 model, keyed also by the calibration frames
(``calibration_digest``), ``int8_recipe()`` and NNCF's version.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

__all__ = ["RECIPE", "calibration_digest", "float_layers", "int8_recipe", "overflow_fix", "quantise_int8"]

log = logging.getLogger(__name__)

#: the quantisation rule, part of every int8 cache key (bump it when ``float_layers`` changes);
#: ``int8_recipe()`` adds the CPU-dependent part
RECIPE = "stemfloat1"

# the flags by which oneDNN's int8 convolutions accumulate in 32 bits (no 16-bit saturation)
_VNNI = ("avx512_vnni", "avx_vnni", "amx_int8")


def overflow_fix(flags: Iterable[str] | None = None) -> str:
    """NNCF's overflow fix for this CPU (as ``ONEDNN_MAX_CPU_ISA`` caps it): ``"enable"``
    (7-bit weights everywhere) without VNNI, else ``"first_layer_only"`` (NNCF's default)."""
    from polypviewer.engine.policy import cpu_flags

    have = cpu_flags() if flags is None else frozenset(flags)
    return "first_layer_only" if any(f in have for f in _VNNI) else "enable"


def int8_recipe(flags: Iterable[str] | None = None) -> str:
    """``RECIPE`` and, on a CPU without VNNI, the 7-bit weights it quantises to there."""
    return RECIPE if overflow_fix(flags) == "first_layer_only" else RECIPE + "-w7"

# what may sit between the input convolution and the depthwise one: BatchNorm (an Add or a
# Multiply + Add once converted), the activation, a Convert
_PASS_THROUGH = ("Add", "Multiply", "Clamp", "Relu", "Swish", "HSwish", "Sigmoid", "Convert", "PRelu")


def calibration_digest(batches: Sequence[np.ndarray]) -> str:
    """sha256 of the calibration inputs: a different calibration set is a different int8 model."""
    h = hashlib.sha256()
    for b in batches:
        b = np.ascontiguousarray(b, dtype=np.float32)
        h.update(f"{b.shape};".encode())
        h.update(b.tobytes())
    return h.hexdigest()


def float_layers(model: Any) -> list[str]:
    """Friendly names of the nodes int8 leaves in floating point (module docstring): the
    convolutions whose data input is a model input, and each depthwise convolution they feed
    through pass-through operations only (a few steps at most)."""
    from polypviewer.engine.input_precision import openvino_input_convolutions

    stem = openvino_input_convolutions(model)
    names = list(stem)
    stem_set = set(stem)
    for op in model.get_ordered_ops():
        if op.get_friendly_name() not in stem_set:
            continue
        frontier, seen = [op], 0
        while frontier and seen < 16:
            node = frontier.pop(0)
            seen += 1
            for target in node.output(0).get_target_inputs():
                nxt = target.get_node()
                kind = nxt.get_type_name()
                if kind == "GroupConvolution" and target.get_index() == 0:
                    if nxt.get_friendly_name() not in names:
                        names.append(nxt.get_friendly_name())
                elif kind in _PASS_THROUGH:
                    frontier.append(nxt)
    return names


def quantise_int8(model: Any, calibration: Sequence[np.ndarray], keep_float: Sequence[str] | None = None,
                  fix: str | None = None) -> Any:
    """Post-training 8-bit quantisation of an OpenVINO model by NNCF.

    ``calibration``: preprocessed inputs, each (1, 3, S, S) or (3, S, S) float32;
    ``keep_float``: the nodes to leave in floating point (default ``float_layers(model)``;
    ``[]`` quantises everything, NNCF's plain default); ``fix``: NNCF's overflow fix
    (default ``overflow_fix()``, this CPU's). NNCF's defaults otherwise (performance preset,
    min/max statistics, fast bias correction)."""
    import nncf
    import rich
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix

    # NNCF logs each step at INFO and draws rich progress bars on stdout (where `predict`
    # prints its metrics); the caller reports the step itself. The bars go to rich's global
    # console, made quiet here. Not contextlib.redirect_stdout: it swaps sys.stdout for the
    # whole process, and this runs on a worker thread (the auto engine's measurement), so it
    # swallowed what every other thread printed meanwhile (the GUI's, a command's results).
    nncf.set_log_level(logging.ERROR)
    rich.reconfigure(quiet=True)
    items = [np.ascontiguousarray(b, dtype=np.float32).reshape((1,) + np.shape(b)[-3:]) for b in calibration]
    names = list(float_layers(model) if keep_float is None else keep_float)
    fix = overflow_fix() if fix is None else fix
    log.info("quantising to int8 on %d calibration frames, %d layers kept in float, overflow fix %s",
             len(items), len(names), fix)
    advanced = AdvancedQuantizationParameters(overflow_fix=OverflowFix(fix))
    if not names:
        return nncf.quantize(model, nncf.Dataset(items), subset_size=len(items), advanced_parameters=advanced)
    return nncf.quantize(model, nncf.Dataset(items), subset_size=len(items),
                         ignored_scope=nncf.IgnoredScope(names=names), advanced_parameters=advanced)
