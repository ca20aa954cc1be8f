"""Safe checkpoint loading and saving, and the records that describe shipped weights.

Loading never executes code from a file: ``.safetensors`` files hold only tensors, and
PyTorch pickles (``.pth`` / ``.pt``) go through ``torch.load(weights_only=True)``, whose
unpickler refuses any global it does not know; we turn that refusal into
:class:`UnsafeCheckpointError`. Files we write are safetensors with the model name, its
preprocessing and free-form meta in the (string -> string) header metadata, so a checkpoint
says what it is and how to feed it (torchvision-style weight records).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from polypviewer.core.errors import PolypviewerError
from polypviewer.nets.registry import Preprocessing

__all__ = [
    "CheckpointError", "UnsafeCheckpointError", "CheckpointMismatchError", "Checkpoint",
    "WeightRecord", "load_checkpoint", "load_weights", "save_checkpoint", "sha256_file",
    "shipped_weights", "default_weights", "convert_checkpoint", "META_MODEL", "META_PREPROCESSING", "META_META",
]

META_MODEL = "polypviewer.model"
META_PREPROCESSING = "polypviewer.preprocessing"  # JSON of Preprocessing.to_dict()
META_META = "polypviewer.meta"  # JSON: params, training data, metrics, recipe...

# Wrappers that training scripts put around a state_dict, tried in this order.
_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "net", "network")
# Prefixes added by DataParallel / DistributedDataParallel and torch.compile.
_PREFIXES = ("module.", "_orig_mod.")
_MAX_LISTED = 5


class CheckpointError(PolypviewerError):
    """A checkpoint cannot be read or used (one line: path and reason)."""


class UnsafeCheckpointError(CheckpointError):
    """The file is a pickle that would run code (or build arbitrary objects) when loaded."""


class CheckpointMismatchError(CheckpointError):
    """The checkpoint's keys or shapes do not fit the model it is loaded into."""


@dataclass
class Checkpoint:
    """Tensors plus the header metadata of the file they came from.

    ``metadata`` holds the raw string entries (``polypviewer.model``,
    ``polypviewer.preprocessing`` and ``polypviewer.meta`` as JSON strings) for safetensors
    files we wrote, and is empty for plain ``.pth`` state_dicts; the properties decode it.
    """

    state_dict: dict[str, torch.Tensor]
    metadata: dict[str, str] = field(default_factory=dict)
    path: Path | None = None
    sha256: str | None = None  # of the file; None for a checkpoint built in memory

    @property
    def model_name(self) -> str | None:
        return self.metadata.get(META_MODEL) or None

    @property
    def preprocessing(self) -> Preprocessing | None:
        raw = self.metadata.get(META_PREPROCESSING)
        if not raw:
            return None
        try:
            return Preprocessing.from_dict(json.loads(raw))
        except (ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"bad {META_PREPROCESSING} metadata ({exc})", self.path) from None

    @property
    def meta(self) -> dict[str, Any]:
        raw = self.metadata.get(META_META)
        if not raw:
            return {}
        try:
            value = json.loads(raw)
        except ValueError as exc:
            raise CheckpointError(f"bad {META_META} metadata ({exc})", self.path) from None
        return value if isinstance(value, dict) else {"value": value}

    @property
    def version(self) -> str:
        """Short id shown to users: the first 12 hex digits of the file's sha256."""
        return self.sha256[:12] if self.sha256 else "in-memory"


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def _is_safetensors(head: bytes) -> bool:
    # Layout: 8-byte little-endian header length, then a JSON object.
    if len(head) < 10:
        return False
    n = int.from_bytes(head[:8], "little")
    return 2 <= n <= 100_000_000 and head[8:9] == b"{"


def _load_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # SafetensorError and friends: truncated or corrupt file
        raise CheckpointError(f"not a readable safetensors file ({_first_line(exc)})", path) from None
    return tensors, metadata


def _first_line(exc: BaseException) -> str:
    """``Type: first sentence`` of an exception, short enough for a one-line error."""
    lines = str(exc).strip().splitlines()
    text = lines[0].split(". ")[0] if lines else ""
    return f"{type(exc).__name__}: {text}".strip().rstrip(":")


def _load_pickle(path: Path) -> Any:
    import pickle

    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        msg = str(exc)
        if "Weights only load failed" in msg:
            # The wording differs between torch versions; both name the refused global.
            found = re.search(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) ([\w.]+)", msg)
            what = f" (it would call {found.group(1)})" if found else ""
            raise UnsafeCheckpointError(
                "refusing to load: the file contains code (pickled objects), not just tensors"
                f"{what}; nothing from it was run. If you trust it, re-save its state_dict "
                "(or convert it to .safetensors) and load that", path) from None
        raise CheckpointError(f"not a readable PyTorch checkpoint ({_first_line(exc)})", path) from None
    except Exception as exc:  # truncated zip (RuntimeError), garbage (KeyError, EOFError) ...
        raise CheckpointError(f"not a readable PyTorch checkpoint ({_first_line(exc)})", path) from None


def _unwrap(obj: Any, path: Path | None) -> dict[str, torch.Tensor]:
    """Find the state_dict inside common training-script wrappers."""
    for _ in range(3):  # e.g. {"model": {"state_dict": ...}}
        if isinstance(obj, Mapping) and not _all_tensors(obj):
            inner = next((obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
            if inner is None:
                break
            obj = inner
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"no state_dict found (the file holds a {type(obj).__name__})", path)
    if not obj:
        raise CheckpointError("no tensors in the file", path)
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(
            f"no state_dict found: entries that are not tensors: {', '.join(map(str, bad[:_MAX_LISTED]))} "
            f"(looked inside {'/'.join(_WRAPPER_KEYS)})", path)
    sd = {str(k): v for k, v in obj.items()}
    for prefix in _PREFIXES:
        if all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items()}
    return sd


def _all_tensors(d: Mapping) -> bool:
    return all(isinstance(v, torch.Tensor) for v in d.values())


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint without executing anything from it.

    Accepts safetensors, or a ``.pth``/``.pt`` plain state_dict or one wrapped in
    ``{"state_dict": ...}`` / ``{"model": ...}``, with or without ``module.`` prefixes. The
    format is sniffed from the content, not the extension.
    Raises :class:`UnsafeCheckpointError` for pickles that carry code, :class:`CheckpointError`
    for missing, empty, truncated or unreadable files.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError("no such checkpoint file" if not path.exists() else "not a file", path)
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError as exc:
        raise CheckpointError(f"cannot read ({exc.strerror or exc})", path) from None
    if not head:
        raise CheckpointError("empty file", path)
    if _is_safetensors(head):
        raw, metadata = _load_safetensors(path)
    else:
        raw, metadata = _load_pickle(path), {}
    return Checkpoint(_unwrap(raw, path), metadata, path, sha256_file(path))


def _describe_mismatch(model_name: str, expected: Mapping[str, torch.Tensor],
                       got: Mapping[str, torch.Tensor], ckpt: Checkpoint) -> str | None:
    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    shapes = [f"{k} is {tuple(got[k].shape)} in the file, {tuple(v.shape)} in the model"
              for k, v in expected.items()
              if k in got and tuple(got[k].shape) != tuple(v.shape)]
    if not (missing or unexpected or shapes):
        return None
    parts = []
    if ckpt.model_name and ckpt.model_name != model_name:
        parts.append(f"it was saved for model {ckpt.model_name!r}")
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes)):
        if keys:
            more = f", ... (+{len(keys) - _MAX_LISTED})" if len(keys) > _MAX_LISTED else ""
            parts.append(f"{len(keys)} {label}: {', '.join(keys[:_MAX_LISTED])}{more}")
    return f"checkpoint does not fit model {model_name!r}: " + "; ".join(parts)


def load_weights(model: nn.Module, checkpoint_or_path: Checkpoint | str | Path,
                 model_name: str | None = None) -> Checkpoint:
    """Load weights into ``model`` strictly (every key, every shape) and return the checkpoint.

    Floating-point tensors are cast to the model's dtype (an fp16 file loads into an fp32
    model). A checkpoint for another architecture raises :class:`CheckpointMismatchError`
    naming the model and the first missing / unexpected keys.
    """
    ckpt = checkpoint_or_path if isinstance(checkpoint_or_path, Checkpoint) \
        else load_checkpoint(checkpoint_or_path)
    name = model_name or type(model).__name__
    expected = model.state_dict()
    problem = _describe_mismatch(name, expected, ckpt.state_dict, ckpt)
    if problem:
        raise CheckpointMismatchError(problem, ckpt.path)
    cast = {k: (v.to(expected[k].dtype) if v.is_floating_point() and expected[k].is_floating_point()
                else v) for k, v in ckpt.state_dict.items()}
    model.load_state_dict(cast, strict=True)
    return ckpt


def save_checkpoint(path: str | Path, model: nn.Module | Mapping[str, torch.Tensor], *,
                    model_name: str, preprocessing: Preprocessing | Mapping[str, Any] | None = None,
                    meta: Mapping[str, Any] | None = None, dtype: torch.dtype | None = None,
                    overwrite: bool = False) -> str:
    """Write ``model``'s state_dict as safetensors with polypviewer metadata; return its sha256.

    The file is written next to its destination and renamed into place, so a crash never
    leaves a half-written checkpoint. An existing file is kept unless ``overwrite=True``.
    ``dtype`` (e.g. ``torch.float16``) casts floating-point tensors to halve the file.
    ``preprocessing`` defaults to the registered model's.
    """
    from safetensors.torch import save_file

    path = Path(path)
    if path.exists() and not overwrite:
        raise CheckpointError("already exists; not overwriting it (choose another name or "
                              "pass overwrite=True)", path)
    if preprocessing is None:
        from polypviewer.nets.registry import get_spec
        preprocessing = get_spec(model_name).preprocessing
    prep = preprocessing.to_dict() if isinstance(preprocessing, Preprocessing) else dict(preprocessing)
    state = model.state_dict() if isinstance(model, nn.Module) else dict(model)
    tensors = {}
    for k, v in state.items():
        v = v.detach().to("cpu")
        if dtype is not None and v.is_floating_point():
            v = v.to(dtype)
        tensors[k] = v.contiguous().clone()  # clone: safetensors refuses shared storage
    meta = dict(meta or {})
    meta.setdefault("params", _count_params(model, state))
    metadata = {META_MODEL: model_name, META_PREPROCESSING: json.dumps(prep),
                META_META: json.dumps(meta, default=str), "format": "pt"}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=metadata)
        digest = sha256_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return digest


def _count_params(model: nn.Module | Mapping, state: Mapping[str, torch.Tensor]) -> int:
    if isinstance(model, nn.Module):
        return sum(int(p.numel()) for p in model.parameters())
    # A bare state_dict: everything but BN statistics is a parameter.
    return sum(int(v.numel()) for k, v in state.items()
               if not k.endswith(("running_mean", "running_var", "num_batches_tracked")))


@dataclass(frozen=True)
class WeightRecord:
    """A weight file described by data (torchvision-style): where it is, its sha256, the
    model and preprocessing it expects, and meta (params, training data, metrics, recipe).

    A model card is a JSON file ``{"file", "sha256", "model", "preprocessing", "meta"}``
    with ``file`` relative to the card.
    """

    file: Path
    sha256: str
    model: str
    preprocessing: Preprocessing
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_card(cls, json_path: str | Path) -> "WeightRecord":
        json_path = Path(json_path)
        try:
            card = json.loads(json_path.read_text(encoding="utf-8"))
            return cls(file=(json_path.parent / card["file"]).resolve(),
                       sha256=str(card["sha256"]), model=str(card["model"]),
                       preprocessing=Preprocessing.from_dict(card["preprocessing"]),
                       meta=dict(card.get("meta") or {}))
        except OSError as exc:
            raise CheckpointError(f"cannot read model card ({exc.strerror or exc})", json_path) from None
        except (ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"bad model card ({_first_line(exc)}); expected keys "
                                  "file, sha256, model, preprocessing, meta", json_path) from None

    def to_card(self, json_path: str | Path) -> None:
        """Write the card; ``file`` is stored relative to the card's folder when possible."""
        json_path = Path(json_path)
        try:
            rel = os.path.relpath(self.file, json_path.parent)
        except ValueError:  # another drive on Windows
            rel = str(self.file)
        card = {"file": Path(rel).as_posix(), "sha256": self.sha256, "model": self.model,
                "preprocessing": self.preprocessing.to_dict(), "meta": self.meta}
        json_path.write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")

    @property
    def version(self) -> str:
        return self.sha256[:12]

    def verify(self) -> None:
        """Raise :class:`CheckpointError` if the file is missing or its sha256 differs."""
        if not self.file.is_file():
            raise CheckpointError("weight file named by the model card is missing", self.file)
        actual = sha256_file(self.file)
        if actual != self.sha256:
            raise CheckpointError(f"sha256 mismatch: card says {self.sha256[:12]}, file is "
                                  f"{actual[:12]} (corrupt or replaced)", self.file)


def _models_dir() -> Path | None:
    from polypviewer.core.paths import models_dir

    try:
        path = models_dir()
    except (ModuleNotFoundError, TypeError):  # no models/ package installed
        return None
    return path if path.is_dir() else None


def shipped_weights(problems: list[str] | None = None) -> list[WeightRecord]:
    """Every model card (``*.json`` except ``default.json``) in the shipped ``models/``.

    A bad card raises :class:`CheckpointError`; pass a ``problems`` list to collect the
    one-line errors there instead and still get the good cards.
    """
    folder = _models_dir()
    if folder is None:
        return []
    records = []
    for card in sorted(folder.glob("*.json")):
        if card.name == "default.json":
            continue
        try:
            records.append(WeightRecord.from_card(card))
        except CheckpointError as exc:
            if problems is None:
                raise
            problems.append(str(exc))
    return records


def default_weights() -> Path | None:
    """The default weight file named by ``models/default.json`` (``{"weights": "<file>"}``),
    or None when no default is shipped. A malformed default.json or one naming a missing
    file raises :class:`CheckpointError` (a broken install should not silently run an
    untrained network)."""
    folder = _models_dir()
    if folder is None:
        return None
    card = folder / "default.json"
    if not card.is_file():
        return None
    try:
        name = json.loads(card.read_text(encoding="utf-8"))["weights"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f'bad default.json ({_first_line(exc)}); expected {{"weights": "<file>"}}',
                              card) from None
    path = (folder / str(name)).resolve()
    if not path.is_file():
        raise CheckpointError(f"default weights {name!r} named by default.json are missing", card)
    return path


def convert_checkpoint(src: str | Path, dst: str | Path, *, model_name: str,
                       meta: Mapping[str, Any] | None = None, dtype: torch.dtype | None = None,
                       overwrite: bool = False) -> str:
    """Turn a third-party checkpoint (e.g. the official ``PraNet-19.pth``) into a polypviewer
    safetensors file that names its model and preprocessing; return the new sha256.

    The source is first loaded strictly into the registered ``model_name``, so a checkpoint
    for another architecture is refused before anything is written. ``meta`` records where it
    came from (``source`` and ``source_sha256`` are added).
    """
    from polypviewer.nets.registry import build_model, get_spec

    src = Path(src)
    model = build_model(model_name)
    ckpt = load_weights(model, src, model_name)
    info = {"source": src.name, "source_sha256": ckpt.sha256, **ckpt.meta, **dict(meta or {})}
    prep = ckpt.preprocessing or get_spec(model_name).preprocessing
    return save_checkpoint(dst, model, model_name=model_name, preprocessing=prep, meta=info,
                           dtype=dtype, overwrite=overwrite)


def main(argv: Sequence[str] | None = None) -> int:
    """Convert a .pth / .pt / .safetensors checkpoint into a polypviewer .safetensors."""
    from polypviewer.nets.registry import list_models

    p = argparse.ArgumentParser(prog="python -m polypviewer.nets.weights", description=main.__doc__)
    p.add_argument("checkpoint", type=Path, help="e.g. the official PraNet-19.pth")
    p.add_argument("--model", required=True, help=f"one of: {', '.join(list_models())}")
    p.add_argument("-o", "--output", type=Path, required=True, help="the .safetensors to write")
    p.add_argument("--half", action="store_true", help="store float16 (half the size)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    args = p.parse_args(argv)
    try:
        digest = convert_checkpoint(args.checkpoint, args.output, model_name=args.model,
                                    dtype=torch.float16 if args.half else None,
                                    overwrite=args.overwrite)
    except (PolypviewerError, KeyError) as exc:
        # KeyError: an unknown model name (its message lists the known ones)
        print(f"error: {exc.args[0] if isinstance(exc, KeyError) else exc}", file=sys.stderr)
        return 2
    print(f"{args.output}: {args.model} from {args.checkpoint.name}, sha256 {digest[:12]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
