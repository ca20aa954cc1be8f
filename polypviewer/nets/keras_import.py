"""Port Keras ``.h5`` weights of ResUNet++ / the MediaEval variants / U-Net into our modules.

Reads the Keras 2 HDF5 layout (``model.save`` or ``model.save_weights``; ``h5py`` only, no
TensorFlow, and nothing in the file is executed: the optional ``model_config`` JSON is only
read for layer class names). Keras names layers by type in creation order (``conv2d``,
``conv2d_1``, ...); our modules are created in the same order as the Keras code creates its
layers, so the n-th Keras layer of a type fills the n-th module of that type:

- ``Conv2D`` kernel (H, W, in, out) -> ``Conv2d.weight`` (out, in, H, W);
- ``SeparableConv2D`` depth-wise (H, W, C, 1) -> (C, 1, H, W), point-wise (1, 1, C, F)
  -> (F, C, 1, 1), bias -> point-wise bias;
- ``Conv2DTranspose`` kernel (H, W, out, in) -> ``ConvTranspose2d.weight`` (in, out, H, W);
- ``Dense`` kernel (in, out) -> ``Linear.weight`` (out, in);
- ``BatchNormalization`` gamma, beta, moving mean / variance -> weight, bias, running stats.

Every shape is checked; a mismatch names the Keras layer and our module. The order within
the DASPP block follows the MediaEval paper's description (x0..x4, then the projection),
as its Keras code is not public: there, same-shaped branches cannot be told apart.

    python -m polypviewer.nets.keras_import weights.h5 --model resunetpp -o resunetpp.safetensors
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from polypviewer.core.errors import PolypviewerError
from polypviewer.nets.resunetpp import SeparableConv2d

__all__ = ["KerasImportError", "KerasLayer", "read_keras_h5", "load_keras_weights",
           "import_keras_h5", "main"]

# Keras class name -> our kind; also the kinds recognised from default layer names.
_KIND_OF_CLASS = {"Conv2D": "conv2d", "SeparableConv2D": "separable_conv2d",
                  "Conv2DTranspose": "conv2d_transpose", "Dense": "dense",
                  "BatchNormalization": "batch_normalization",
                  "BatchNormalizationV1": "batch_normalization",
                  "BatchNormalizationV2": "batch_normalization"}
_KINDS = ("conv2d", "separable_conv2d", "conv2d_transpose", "dense", "batch_normalization")
_NAME_RE = re.compile(r"^(conv2d_transpose|separable_conv2d|conv2d|dense|"
                      r"batch_normalization(?:_v\d+)?)(?:_(\d+))?$")


class KerasImportError(PolypviewerError):
    """The Keras file cannot be read, or does not fit the chosen model."""


class KerasLayer:
    """One Keras layer with weights: ``name``, ``kind``, ``weights`` {short name: array}."""

    def __init__(self, name: str, kind: str, index: int, weights: dict[str, np.ndarray]) -> None:
        self.name, self.kind, self.index, self.weights = name, kind, index, weights

    def __repr__(self) -> str:
        shapes = {k: v.shape for k, v in self.weights.items()}
        return f"KerasLayer({self.name!r}, {self.kind}, {shapes})"


def _text(v: Any) -> str:
    return v.decode("utf-8") if isinstance(v, bytes) else str(v)


def _classes_from_config(f: Any) -> dict[str, str]:
    raw = f.attrs.get("model_config")
    if raw is None:
        return {}
    try:
        config = json.loads(_text(raw))
        layers = config["config"]["layers"]
        return {layer["config"]["name"]: layer["class_name"] for layer in layers}
    except (ValueError, KeyError, TypeError):
        return {}  # an odd config: fall back to the layer names


def read_keras_h5(path: str | Path) -> list[KerasLayer]:
    """The layers with weights of a Keras 2 ``.h5`` file, per kind in creation order."""
    import h5py

    path = Path(path)
    try:
        f = h5py.File(path, "r")
    except (OSError, ValueError) as exc:
        raise KerasImportError(f"not a readable HDF5 file ({exc.__class__.__name__})", path) from None
    with f:
        classes = _classes_from_config(f)
        root = f["model_weights"] if "model_weights" in f else f
        if "layer_names" not in root.attrs:
            raise KerasImportError("no Keras 'layer_names' attribute: not a Keras 2 .h5 weight "
                                   "file (Keras 3 '.weights.h5' is not supported)", path)
        layers = []
        for name in (_text(n) for n in root.attrs["layer_names"]):
            group = root[name]
            weight_names = [_text(w) for w in group.attrs.get("weight_names", [])]
            if not weight_names:
                continue  # activations, pooling, concatenation ...
            kind, index = _kind_and_index(name, classes.get(name), path)
            weights = {}
            for wn in weight_names:
                short = wn.split("/")[-1].split(":")[0]  # 'conv2d_3/kernel:0' -> 'kernel'
                weights[short] = np.asarray(group[wn], dtype=np.float32)
            layers.append(KerasLayer(name, kind, index, weights))
    # Layer numbers are the creation order per type; the file's order is topological.
    return sorted(layers, key=lambda layer: (layer.kind, layer.index))


def _kind_and_index(name: str, class_name: str | None, path: Path) -> tuple[str, int]:
    m = _NAME_RE.match(name)
    index = int(m.group(2) or 0) if m else 0
    if class_name is not None:
        if class_name not in _KIND_OF_CLASS:
            raise KerasImportError(f"layer {name!r} of class {class_name} has weights but is "
                                   "not part of ResUNet++ / U-Net", path)
        return _KIND_OF_CLASS[class_name], index
    if m is None:
        raise KerasImportError(f"layer {name!r} has weights but no default Keras name and the "
                               "file has no model_config to tell its type", path)
    kind = "batch_normalization" if m.group(1).startswith("batch_normalization") else m.group(1)
    return kind, index


def _targets(model: nn.Module) -> dict[str, list[tuple[str, nn.Module]]]:
    """Our weight-holding modules per Keras kind, in registration (= Keras creation) order."""
    out: dict[str, list[tuple[str, nn.Module]]] = {k: [] for k in _KINDS}
    inside_sep: set[str] = set()
    for name, m in model.named_modules():
        if any(name.startswith(p + ".") for p in inside_sep):
            continue
        if isinstance(m, SeparableConv2d):
            out["separable_conv2d"].append((name, m))
            inside_sep.add(name)
        elif isinstance(m, nn.Conv2d):
            out["conv2d"].append((name, m))
        elif isinstance(m, nn.ConvTranspose2d):
            out["conv2d_transpose"].append((name, m))
        elif isinstance(m, nn.Linear):
            out["dense"].append((name, m))
        elif isinstance(m, nn.BatchNorm2d):
            out["batch_normalization"].append((name, m))
    return out


def _tensor(module: nn.Module, name: str) -> torch.Tensor:
    """``module.<name>`` (a dotted path) as a tensor; KeyError when it is absent (a bias-less layer)."""
    obj: Any = module
    for part in name.split("."):
        obj = getattr(obj, part, None)
    if not isinstance(obj, torch.Tensor):
        raise KeyError(name.rpartition(".")[2])
    return obj


def _assignments(layer: KerasLayer, module: nn.Module) -> list[tuple[str, torch.Tensor, np.ndarray]]:
    """(our name, our tensor, Keras array in our layout) for one layer."""
    w = layer.weights
    if layer.kind in ("conv2d", "conv2d_transpose", "dense"):
        kernel = w["kernel"].T if layer.kind == "dense" else w["kernel"].transpose(3, 2, 0, 1)
        pairs = [("weight", _tensor(module, "weight"), kernel)]
        if "bias" in w or getattr(module, "bias", None) is not None:
            pairs.append(("bias", _tensor(module, "bias"), w["bias"]))
        return pairs
    if layer.kind == "separable_conv2d":
        if w["depthwise_kernel"].shape[-1] != 1:
            raise ValueError("depth_multiplier != 1 is not used by these models")
        return [("depthwise.weight", _tensor(module, "depthwise.weight"),
                 w["depthwise_kernel"].transpose(2, 3, 0, 1)),
                ("pointwise.weight", _tensor(module, "pointwise.weight"),
                 w["pointwise_kernel"].transpose(3, 2, 0, 1)),
                ("pointwise.bias", _tensor(module, "pointwise.bias"), w["bias"])]
    # batch_normalization
    return [(name, _tensor(module, name), w[keras]) for name, keras in
            (("weight", "gamma"), ("bias", "beta"), ("running_mean", "moving_mean"),
             ("running_var", "moving_variance"))]


def load_keras_weights(model: nn.Module, layers: Sequence[KerasLayer] | str | Path,
                       model_name: str = "model") -> nn.Module:
    """Copy Keras weights into ``model`` (in place, returned). All or nothing: ``model`` is
    untouched when any layer does not fit."""
    path = None
    if isinstance(layers, (str, Path)):
        path = Path(layers)
        layers = read_keras_h5(path)
    targets = _targets(model)
    by_kind: dict[str, list[KerasLayer]] = {k: [] for k in targets}
    for layer in layers:
        by_kind.setdefault(layer.kind, []).append(layer)
    staged: list[tuple[torch.Tensor, torch.Tensor]] = []
    for kind, ours in targets.items():
        theirs = by_kind.get(kind, [])
        if len(theirs) != len(ours):
            raise KerasImportError(f"{model_name} has {len(ours)} {kind} layers, the Keras file "
                                   f"{len(theirs)}: not weights of this model", path)
        for layer, (mod_name, module) in zip(theirs, ours, strict=True):
            try:
                pairs = _assignments(layer, module)
            except (KeyError, ValueError) as exc:
                raise KerasImportError(f"Keras layer {layer.name!r} ({kind}) does not fit "
                                       f"{model_name}.{mod_name}: {exc}", path) from None
            for our_name, tensor, array in pairs:
                if tuple(array.shape) != tuple(tensor.shape):
                    raise KerasImportError(
                        f"Keras layer {layer.name!r} gives {model_name}.{mod_name}.{our_name} "
                        f"shape {tuple(array.shape)}, the model needs {tuple(tensor.shape)}", path)
                staged.append((tensor, torch.from_numpy(np.ascontiguousarray(array))))
    with torch.no_grad():
        for tensor, value in staged:
            tensor.copy_(value)
    return model


def import_keras_h5(path: str | Path, model_name: str) -> nn.Module:
    """Build the registered ``model_name`` and fill it from the Keras file; eval mode."""
    from polypviewer.nets.registry import build_model

    return load_keras_weights(build_model(model_name), path, model_name).eval()


def main(argv: Sequence[str] | None = None) -> int:
    """Convert a Keras ``.h5`` into a polypviewer safetensors checkpoint."""
    from polypviewer.nets.weights import save_checkpoint

    p = argparse.ArgumentParser(prog="python -m polypviewer.nets.keras_import",
                                description=main.__doc__)
    p.add_argument("h5", type=Path, help="Keras 2 weight file (model.save or save_weights)")
    p.add_argument("--model", required=True,
                   help="resunetpp, resunetpp_seed, resunetpp_sepconv, resunetpp_daspp, "
                        "resunetpp_daspp_relu or unet")
    p.add_argument("-o", "--output", type=Path, required=True, help="the .safetensors to write")
    args = p.parse_args(argv)
    try:
        model = import_keras_h5(args.h5, args.model)
        digest = save_checkpoint(args.output, model, model_name=args.model,
                                 meta={"source": f"keras:{args.h5.name}"})
    except PolypviewerError as exc:  # an unknown model name too (UnknownModelError)
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{args.output}: {args.model} from {args.h5.name}, sha256 {digest[:12]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
