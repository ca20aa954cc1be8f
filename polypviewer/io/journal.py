"""Append-only, checksummed journal of edits: what makes a project survive SIGKILL.

An HDF5 file killed in the middle of a write can be left unreadable, so the project file
is only ever replaced whole (see ``store.compact``). Between two compactions every
completed change is appended here as one record and flushed + fsynced before the call
returns. A run killed in the middle of an append leaves a torn last record; its length or
CRC does not check out, so recovery keeps everything before it and drops the rest.

Layout: a 24-byte header ``MAGIC (8) | generation (16)`` naming the HDF5 generation the
records apply to, then records ``length:u32 | crc32:u32 | payload``. Payloads:

- ``B`` frame started: frame, h, w, threshold, model version, name, packed model mask
- ``S`` mask changed: frame, y0, x0, h, w, the frame's review state after the change,
  packed new values of the rectangle (state and mask in one record: one is never kept
  without the other)
- ``T`` review state: frame, state

Masks are ``np.packbits`` then zlib (level 1): a 1080p mask is a few kB.
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from polypviewer.core.errors import PolypviewerError

MAGIC = b"PVJRNL01"
HEADER_SIZE = len(MAGIC) + 16
_FRAME = struct.Struct("<II")  # payload length, crc32
_MAX_RECORD = 1 << 30


class JournalError(PolypviewerError):
    """The journal cannot be read or written."""


@dataclass(frozen=True)
class BaseRecord:
    frame: int
    model_mask: np.ndarray
    threshold: float
    model_version: str
    name: str | None


@dataclass(frozen=True)
class StrokeRecord:
    frame: int
    y0: int
    x0: int
    new: np.ndarray
    state: int


@dataclass(frozen=True)
class StateRecord:
    frame: int
    state: int


Record = BaseRecord | StrokeRecord | StateRecord


def _pack_mask(mask: np.ndarray) -> bytes:
    return zlib.compress(np.packbits(mask, axis=None).tobytes(), 1)


def _unpack_mask(blob: bytes, h: int, w: int) -> np.ndarray:
    bits = np.frombuffer(zlib.decompress(blob), np.uint8)
    return np.unpackbits(bits, count=h * w).astype(bool).reshape(h, w)


def _str(s: str) -> bytes:
    b = s.encode("utf-8")
    return struct.pack("<H", len(b)) + b


def encode(record: Record) -> bytes:
    if isinstance(record, StrokeRecord):
        h, w = record.new.shape
        return (b"S" + struct.pack("<IIIIIB", record.frame, record.y0, record.x0, h, w, record.state)
                + _pack_mask(record.new))
    if isinstance(record, StateRecord):
        return b"T" + struct.pack("<IB", record.frame, record.state)
    h, w = record.model_mask.shape
    name = "\x00" if record.name is None else record.name  # NUL marks "no name"
    return (b"B" + struct.pack("<IIIf", record.frame, h, w, record.threshold) + _str(record.model_version)
            + _str(name) + _pack_mask(record.model_mask))


def decode(payload: bytes) -> Record:
    kind, body = payload[:1], memoryview(payload)[1:]
    if kind == b"S":
        frame, y0, x0, h, w, state = struct.unpack_from("<IIIIIB", body)
        return StrokeRecord(frame, y0, x0, _unpack_mask(bytes(body[21:]), h, w), state)
    if kind == b"T":
        frame, state = struct.unpack_from("<IB", body)
        return StateRecord(frame, state)
    if kind == b"B":
        frame, h, w, threshold = struct.unpack_from("<IIIf", body)
        pos = 16
        strings = []
        for _ in range(2):
            (n,) = struct.unpack_from("<H", body, pos)
            strings.append(bytes(body[pos + 2:pos + 2 + n]).decode("utf-8"))
            pos += 2 + n
        name = None if strings[1] == "\x00" else strings[1]
        return BaseRecord(frame, _unpack_mask(bytes(body[pos:]), h, w), float(threshold), strings[0], name)
    raise ValueError(f"unknown record type {kind!r}")


@dataclass(frozen=True)
class JournalContents:
    generation: bytes
    records: list[Record]
    valid_bytes: int  # offset just past the last whole record
    torn_bytes: int   # bytes after it (a write cut short by a kill), dropped on recovery


def read_journal(path: Path) -> JournalContents:
    """Every whole record of a journal; stops at the first torn or corrupt one."""
    data = Path(path).read_bytes()
    if len(data) < HEADER_SIZE or not data.startswith(MAGIC):
        raise JournalError("not a polypviewer journal (bad header)", path)
    generation = data[len(MAGIC):HEADER_SIZE]
    records: list[Record] = []
    pos = HEADER_SIZE
    while pos + _FRAME.size <= len(data):
        length, crc = _FRAME.unpack_from(data, pos)
        end = pos + _FRAME.size + length
        if length == 0 or length > _MAX_RECORD or end > len(data):
            break
        payload = data[pos + _FRAME.size:end]
        if zlib.crc32(payload) != crc:
            break
        try:
            records.append(decode(payload))
        except (ValueError, struct.error, zlib.error):
            break  # a checksummed record we cannot parse: treat like a torn tail
        pos = end
    return JournalContents(generation, records, pos, len(data) - pos)


def fsync_dir(path: Path) -> None:
    """Make a rename or a new file in ``path`` durable (no-op where directories can't be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_new_journal(path: Path, generation: bytes) -> None:
    """Atomically replace ``path`` with an empty journal for ``generation``."""
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(MAGIC + generation)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


class JournalWriter:
    """Appends records to an existing journal; each ``append`` is durable when it returns.

    ``fsync=False`` only flushes to the OS (survives a killed process, not a power cut);
    it is for tests that need thousands of records fast.
    """

    def __init__(self, path: Path, valid_bytes: int, *, fsync: bool = True) -> None:
        self.path = Path(path)
        self._fsync = fsync
        self._f: BinaryIO = open(self.path, "r+b")
        # Cut a torn tail off so new records never follow garbage.
        self._f.truncate(valid_bytes)
        self._f.seek(valid_bytes)
        self._sync()

    def append(self, record: Record) -> None:
        payload = encode(record)
        self._f.write(_FRAME.pack(len(payload), zlib.crc32(payload)) + payload)
        self._sync()

    def size(self) -> int:
        return self._f.tell()

    def _sync(self) -> None:
        self._f.flush()
        if self._fsync:
            os.fsync(self._f.fileno())

    def close(self) -> None:
        if not self._f.closed:
            self._sync()
            self._f.close()
