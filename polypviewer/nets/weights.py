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
import errno
import hashlib
import io
import json
import math
import os
import pickle
import pickletools
import re
import stat
import sys
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from polypviewer.core.errors import PolypviewerError
from polypviewer.core.fileio import OutputError, atomic_write, describe_exception, refuse_link, sha256_file, write_json
from polypviewer.nets.registry import Preprocessing

__all__ = [
    "CheckpointError", "UnsafeCheckpointError", "CheckpointMismatchError", "Checkpoint",
    "WeightRecord", "load_checkpoint", "load_weights", "save_checkpoint", "sha256_file",
    "shipped_weights", "shipped_for", "default_weights", "convert_checkpoint", "checked_preprocessing",
    "META_MODEL", "META_PREPROCESSING", "META_META",
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


# What a file may say about its preprocessing. Every registered network accepts sides that
# are multiples of 32 (PraNet needs exactly that; U-Net 16, ResUNet++ 8 or 16, Lite PraNet
# any); 2048 keeps one frame's input tensor under 50 MB.
INPUT_SIZE_MULTIPLE = 32
INPUT_SIZE_RANGE = (32, 2048)
COLOR_ORDERS = ("RGB", "BGR")
_MEAN_LIMIT = 1e3  # |mean| of pixels scaled to [0, 1]
_STD_RANGE = (1e-6, 1e3)  # 1 / (255 * std) must stay a sane float32 scale


def checked_preprocessing(value: Any, path: str | Path | None, where: str) -> Preprocessing:
    """A :class:`Preprocessing` from the dict a file holds (checkpoint metadata, model card),
    checked field by field: ``input_size`` a multiple of 32 in 32..2048, ``color_order``
    RGB or BGR, ``mean`` / ``std`` three finite numbers each (std positive). Anything else
    raises :class:`CheckpointError` naming ``path``, ``where`` and the field."""

    def bad(reason: str) -> CheckpointError:
        return CheckpointError(f"bad {where}: {reason}", path)

    if not isinstance(value, Mapping):
        raise bad(f"expected a JSON object, got {type(value).__name__}")
    if "input_size" not in value:
        raise bad("no input_size")
    size = value["input_size"]
    lo, hi = INPUT_SIZE_RANGE
    if (isinstance(size, bool) or not isinstance(size, int) or not lo <= size <= hi
            or size % INPUT_SIZE_MULTIPLE):
        raise bad(f"input_size {_short(size)} is not a multiple of {INPUT_SIZE_MULTIPLE} "
                  f"from {lo} to {hi}")
    order = value.get("color_order", "RGB")
    if not isinstance(order, str) or order.upper() not in COLOR_ORDERS:
        raise bad(f"color_order {_short(order)} is not one of {', '.join(COLOR_ORDERS)}")

    def triple(name: str, default: tuple[float, float, float], lo: float, hi: float,
               what: str) -> tuple[float, float, float]:
        v = value.get(name, default)
        ok = (isinstance(v, (list, tuple)) and len(v) == 3
              and all(isinstance(x, (int, float)) and not isinstance(x, bool)
                      and math.isfinite(x) and lo <= x <= hi for x in v))
        if not ok:
            raise bad(f"{name} {_short(v)} is not 3 {what}")
        return (float(v[0]), float(v[1]), float(v[2]))

    mean = triple("mean", (0.0, 0.0, 0.0), -_MEAN_LIMIT, _MEAN_LIMIT,
                  f"finite numbers from {-_MEAN_LIMIT:g} to {_MEAN_LIMIT:g}")
    std = triple("std", (1.0, 1.0, 1.0), *_STD_RANGE,
                 f"positive numbers from {_STD_RANGE[0]:g} to {_STD_RANGE[1]:g}")
    return Preprocessing(size, order.upper(), mean, std)


def _short(value: Any, limit: int = 40) -> str:
    """``value`` as JSON, cut to ``limit`` characters (for a one-line error)."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


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
        where = f"{META_PREPROCESSING} metadata"
        try:
            value = json.loads(raw)
        except ValueError as exc:
            raise CheckpointError(f"bad {where} (not JSON: {exc})", self.path) from None
        return checked_preprocessing(value, self.path, where)

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
    except Exception as exc:  # noqa: BLE001 - SafetensorError and friends: truncated or corrupt file
        # Its own words ("incomplete metadata, file not fully covered"), not its type's name.
        lines = str(exc).strip().splitlines()
        detail = re.sub(r"^Error while deserializing header:\s*", "", lines[0] if lines else "")
        detail = f" ({detail.strip()})" if detail.strip() else ""
        raise CheckpointError(f"damaged or truncated safetensors file{detail}", path) from None
    return tensors, metadata


# What a file that is not a checkpoint most likely is, by its first bytes.
_OTHER_FORMATS = (
    (b"\x89HDF\r\n\x1a\n", "an HDF5 file (Keras .h5 weights? see polypviewer.nets.keras_import)"),
    (b"\x89PNG", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"), (b"GIF8", "a GIF image"),
    (b"\x1f\x8b", "a gzip file"), (b"BZh", "a bzip2 file"), (b"\xfd7zXZ", "an xz file"),
    (b"7z\xbc\xaf", "a 7-Zip archive"), (b"Rar!", "a RAR archive"), (b"%PDF", "a PDF document"),
    (b"\x93NUMPY", "a NumPy .npy array"), (b"\x7fELF", "a program (ELF)"), (b"MZ", "a Windows program"),
)
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a zip archive (torch.save's default format)
_LEGACY_MAGIC = pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2)  # torch's legacy format
_SCAN_LIMIT = 64 << 20  # bytes of pickle data read to check it is whole
_OPCODE_NAMES = {ord(op.code): op.name for op in pickletools.opcodes}


def _looks_like_text(head: bytes) -> bool:
    if b"\x00" in head or any(b < 0x20 and b not in b"\t\n\r\f\b\x1b" for b in head):
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:  # a character cut by the end of ``head`` is fine
        return exc.reason == "unexpected end of data" and exc.start >= len(head) - 3
    return True


_STRING_OPS = {"STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "BINUNICODE",
               "SHORT_BINUNICODE", "BINUNICODE8"}


def _scan_pickles(data: bytes, count: int = 1) -> list[str] | None:
    """The globals named by the first ``count`` pickles in ``data`` (opcode by opcode,
    building nothing), or None when one of them is cut short or malformed; fewer than
    ``count`` is fine when the data ends cleanly between two of them."""
    f = io.BytesIO(data)
    names: list[str] = []
    for _ in range(count):
        if f.tell() == len(data):
            break
        strings: list[Any] = []  # recent string pushes, for STACK_GLOBAL
        memo: dict[Any, Any] = {}
        last: Any = None
        try:
            for op, arg, _pos in pickletools.genops(f):
                name = op.name
                if name == "GLOBAL" or name == "INST":
                    names.append(str(arg).replace(" ", "."))
                elif name in _STRING_OPS:
                    last = arg
                    strings.append(arg)
                elif name in ("EXT1", "EXT2", "EXT4"):  # a global from copyreg's registry
                    names.append(f"extension code {arg}")
                elif name == "MEMOIZE":
                    memo[len(memo)] = last
                elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
                    memo[arg] = last
                elif name in ("GET", "BINGET", "LONG_BINGET"):
                    last = memo.get(arg)
                    strings.append(last)
                elif name == "STACK_GLOBAL":
                    if len(strings) >= 2:
                        names.append(f"{strings[-2]}.{strings[-1]}")
                    last = None
                elif name not in ("FRAME", "PROTO"):
                    last = None
        except Exception:  # noqa: BLE001 - ValueError (ends early, unknown opcode) and friends
            return None
    return names


def _safe_globals() -> set[str]:
    """Globals ``torch.load(weights_only=True)`` accepts (what a plain checkpoint names)."""
    try:
        from torch._weights_only_unpickler import _get_allowed_globals

        return set(_get_allowed_globals())
    except (ImportError, AttributeError, TypeError):  # a torch without this (private) helper: the names checkpoints use
        return {"collections.OrderedDict", "_codecs.encode", "torch._utils._rebuild_tensor_v2",
                "torch._utils._rebuild_parameter", "torch.FloatStorage", "torch.HalfStorage",
                "torch.LongStorage", "torch.BFloat16Storage", "torch.DoubleStorage"}


def _what_it_is(head: bytes, path: Path) -> str | None:
    """Why ``path`` is no PyTorch checkpoint at all, or None when it may be one."""
    if head.startswith(_ZIP_MAGIC):
        return None
    if head.startswith(b"\x80"):  # PROTO: a pickle of protocol 2+ (torch.save writes 2)
        return None if len(head) > 1 and 2 <= head[1] <= pickle.HIGHEST_PROTOCOL \
            else "not a zip or pickle file"
    if _looks_like_text(head):
        return "it is a text file"
    for magic, what in _OTHER_FORMATS:
        if head.startswith(magic):
            return f"it is {what}"
    try:  # a protocol 0/1 pickle has no marker: accept one that parses
        with open(path, "rb") as f:
            data = f.read(_SCAN_LIMIT)
    except OSError:
        return None
    return None if _scan_pickles(data) is not None else "not a zip or pickle file"


def _inspect(path: Path, head: bytes) -> tuple[str | None, list[str] | None]:
    """Read a zip or pickle checkpoint's structure without building any object: the reason
    it cannot be a whole PyTorch checkpoint (None when it looks whole) and the globals its
    pickles name (None when they could not be read)."""
    broken = "damaged or truncated PyTorch checkpoint: "
    try:
        if head.startswith(_ZIP_MAGIC):
            try:
                with zipfile.ZipFile(path) as z:
                    names = [n for n in z.namelist() if n == "data.pkl" or n.endswith("/data.pkl")]
                    if not names:
                        return "not a PyTorch checkpoint (a zip archive without PyTorch's data.pkl)", None
                    info = z.getinfo(names[0])
                    if info.file_size > _SCAN_LIMIT:
                        return None, None
                    data = z.read(info)
                    bad = z.testzip()  # every member's checksum
            except (zipfile.BadZipFile, EOFError, ValueError, NotImplementedError):
                return broken + "the zip archive is truncated or corrupt", None
            if bad is not None:
                return broken + f"zip member {bad} fails its checksum", None
            found = _scan_pickles(data)
            return (None if found is not None else broken + "its data.pkl is truncated or corrupt"), found
        with open(path, "rb") as f:
            data = f.read(_SCAN_LIMIT)
        # The legacy format is 5 pickles (magic, protocol, system info, the object, storage
        # keys) and then raw tensor data; any other pickle is one.
        found = _scan_pickles(data, 5 if data.startswith(_LEGACY_MAGIC) else 1)
        return (None if found is not None else broken + "the pickle data is truncated or corrupt"), found
    except OSError as exc:
        return f"cannot read ({describe_exception(exc)})", None


def _load_pickle(path: Path, head: bytes) -> Any:
    what = _what_it_is(head, path)
    if what:
        raise CheckpointError(f"not a PyTorch checkpoint ({what})", path)
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - whatever torch raised, the file is examined below for the reason
        msg = str(exc)
    # Only a file whose structure is whole can be said to carry code: a truncated one makes
    # the safe unpickler "refuse" half a name (or a stray byte read as an opcode).
    damage, names = _inspect(path, head)
    if damage:
        raise CheckpointError(damage, path)
    if "Weights only load failed" not in msg:
        raise CheckpointError("damaged or truncated PyTorch checkpoint: its contents do not "
                              "decode to tensors", path)
    # The wording differs between torch versions; both name the refused global.
    found = re.search(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) ([\w.]+)", msg)
    refused = found.group(1) if found else None
    operand = re.search(r"Unsupported operand (\d+)", msg)
    if operand and refused is None:
        # The safe unpickler lacks an instruction (FRAME, POP...): code only if the pickle
        # names globals a plain checkpoint never does.
        unsafe = sorted(set(names or ()) - _safe_globals())
        if names is not None and not unsafe:
            op = _OPCODE_NAMES.get(int(operand.group(1)), "an unknown")
            raise CheckpointError(
                f"not a PyTorch checkpoint the safe loader can read: its pickle uses the {op} "
                "instruction, which torch.load(weights_only=True) does not support; re-save "
                "it with torch.save", path)
        refused = unsafe[0] if unsafe else None
    what = f" (it would call {refused})" if refused else ""
    raise UnsafeCheckpointError(
        "refusing to load: the file contains code (pickled objects), not just tensors"
        f"{what}; nothing from it was run. If you trust it, re-save its state_dict "
        "(or convert it to .safetensors) and load that", path)


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


def _all_tensors(d: Mapping[Any, Any]) -> bool:
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
    _check_is_file(path)
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError as exc:
        raise CheckpointError(f"cannot read ({describe_exception(exc)})", path) from None
    if not head:
        raise CheckpointError("empty file", path)
    if _is_safetensors(head):
        raw, metadata = _load_safetensors(path)
    else:
        raw, metadata = _load_pickle(path, head), {}
    ckpt = Checkpoint(_unwrap(raw, path), metadata, path, sha256_file(path))
    ckpt.preprocessing  # refuse bad metadata now, not when a frame is first fed  # noqa: B018
    return ckpt


def _check_is_file(path: Path) -> None:
    """Raise :class:`CheckpointError` unless ``path`` names a regular file (after links)."""
    try:
        st = path.stat()
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            reason = "symbolic link loop"
        elif exc.errno == errno.ENOENT and path.is_symlink():
            reason = f"broken symbolic link (to {os.readlink(path)})"
        elif exc.errno in (errno.ENOENT, errno.ENOTDIR):
            reason = "no such checkpoint file"
        else:
            reason = f"cannot read ({describe_exception(exc)})"
        raise CheckpointError(reason, path) from None
    if stat.S_ISDIR(st.st_mode):
        raise CheckpointError("is a folder, not a checkpoint file", path)
    if not stat.S_ISREG(st.st_mode):
        raise CheckpointError("not a regular file", path)


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
    cast = {}
    for k, want in expected.items():  # in the model's order, so the first bad one is named
        cast[k] = _checked_tensor(k, ckpt.state_dict[k], want, ckpt.path)
    model.load_state_dict(cast, strict=True)
    return ckpt


_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_INT_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


def _checked_tensor(key: str, got: torch.Tensor, want: torch.Tensor, path: Path | None) -> torch.Tensor:
    """``got`` ready to copy into the model tensor ``want``: a floating parameter or buffer
    must be stored as float16/bfloat16/float32/float64 and hold finite values (it is cast to
    ``want``'s dtype, and must still be finite); an integer buffer (BatchNorm's
    num_batches_tracked) must be stored as an integer. Anything else raises
    :class:`CheckpointMismatchError` naming the tensor."""
    def bad(reason: str) -> CheckpointMismatchError:
        return CheckpointMismatchError(f"tensor {key} {reason}", path)

    if got.layout != torch.strided:
        raise bad(f"is stored as a {got.layout} tensor, not a dense one")
    if want.is_floating_point():
        if got.dtype not in _FLOAT_DTYPES:
            raise bad(f"is stored as {_dtype_name(got.dtype)}; the model needs floating-point "
                      "values (float16, bfloat16, float32 or float64) there")
        if not bool(torch.isfinite(got).all()):
            raise bad("holds NaN or infinite values (a damaged file, or training that diverged)")
        out = got.to(want.dtype)
        if not bool(torch.isfinite(out).all()):
            raise bad(f"holds values too large for {_dtype_name(want.dtype)}")
        return out
    if want.dtype in _INT_DTYPES and got.dtype not in _INT_DTYPES:
        raise bad(f"is stored as {_dtype_name(got.dtype)}; the model needs integers there")
    return got


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def save_checkpoint(path: str | Path, model: nn.Module | Mapping[str, torch.Tensor], *,
                    model_name: str, preprocessing: Preprocessing | Mapping[str, Any] | None = None,
                    meta: Mapping[str, Any] | None = None, dtype: torch.dtype | None = None,
                    overwrite: bool = False) -> str:
    """Write ``model``'s state_dict as safetensors with polypviewer metadata; return its sha256.

    Written with :func:`polypviewer.core.fileio.atomic_write` (an exclusive temporary beside
    it, renamed into place; never through a symbolic link), so a crash never leaves a
    half-written checkpoint. An existing file is kept unless ``overwrite=True``.
    ``dtype`` (e.g. ``torch.float16``) casts floating-point tensors to halve the file.
    ``preprocessing`` defaults to the registered model's.
    """
    from safetensors.torch import save as to_bytes

    path = Path(path)
    refuse_link(path)
    if os.path.lexists(path) and not overwrite:
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
    data = to_bytes(tensors, metadata=metadata)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create its folder ({describe_exception(exc)})", path) from None
    # Exclusive temporary beside it, fsync, rename; never through a link; umask mode.
    atomic_write(path, data, overwrite=overwrite)
    return hashlib.sha256(data).hexdigest()


def _count_params(model: nn.Module | Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor]) -> int:
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
    def from_card(cls, json_path: str | Path) -> WeightRecord:
        json_path = Path(json_path)
        try:
            card = json.loads(json_path.read_text(encoding="utf-8"))
            prep = card["preprocessing"]
            return cls(file=(json_path.parent / card["file"]).resolve(),
                       sha256=str(card["sha256"]), model=str(card["model"]),
                       preprocessing=checked_preprocessing(prep, json_path,
                                                           "model card preprocessing"),
                       meta=dict(card.get("meta") or {}))
        except OSError as exc:
            raise CheckpointError(f"cannot read model card ({exc.strerror or exc})", json_path) from None
        except (ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"bad model card ({describe_exception(exc, with_type=True)}); expected keys "
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
        write_json(json_path, card)

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


def shipped_for(model: str, problems: list[str] | None = None) -> list[WeightRecord]:
    """The shipped weights for ``model``, the default (``models/default.json``) first when it is
    one of them, the rest in card order: what "the shipped weights of this network" means where
    one file must be picked (``bench``). ``problems`` as in :func:`shipped_weights`; a broken
    default.json is then one more problem, not an error."""
    records = [r for r in shipped_weights(problems) if r.model == model]
    try:
        default = default_weights()
    except CheckpointError as exc:
        if problems is None:
            raise
        problems.append(str(exc))
        default = None
    return sorted(records, key=lambda r: r.file != default)


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
        why = describe_exception(exc, with_type=True)
        raise CheckpointError(f'bad default.json ({why}); expected {{"weights": "<file>"}}', card) from None
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
    except PolypviewerError as exc:  # an unknown model name too (UnknownModelError)
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{args.output}: {args.model} from {args.checkpoint.name}, sha256 {digest[:12]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
