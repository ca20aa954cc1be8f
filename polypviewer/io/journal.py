"""Append-only, checksummed journal of edits: what makes a project survive SIGKILL.

An HDF5 file killed in the middle of a write can be left unreadable, so the project file
is only ever replaced whole (see ``store.compact``). Between two compactions every
completed change is appended here as one record and flushed + fsynced before the call
returns. A run killed in the middle of an append leaves a torn last record; it is
recognised as such (its own header says it is longer than what is on disk) and cut off.

Layout (format 2, magic ``PVJRNL02``): a 48-byte header ``MAGIC (8) | generation (16) |
crc32 (4) | generation (16) | crc32 (4)`` naming the HDF5 generation the records apply to
(twice, so one damaged copy does not orphan the records), then records::

    marker b"\\xd7PVr" (4) | length:u32 | crc32(payload):u32 | crc32(first 12 bytes):u32 | payload

The marker and the header's own CRC let a reader *resynchronise*: a damaged record is
skipped by scanning forward for the next marker whose header and payload CRCs hold, so
one bad byte costs the one record it is in, not every later one (:attr:`JournalContents.damaged`
says where). Payloads:

- ``B`` frame started: frame, h, w, threshold (float64), model version, name, packed model mask
- ``S`` mask changed: frame, y0, x0, h, w, the frame's review state after the change,
  packed new values of the rectangle (state and mask in one record: one is never kept
  without the other)
- ``T`` review state: frame, state

Masks are ``np.packbits`` then zlib (level 1): a 1080p mask is a few kB.

Format 1 (magic ``PVJRNL01``, 24-byte header, records ``length:u32 | crc32 | payload``,
threshold float32) is still read; it has no marker, so reading stops at its first bad
record (the store keeps such a journal aside and starts a format-2 one).
"""

from __future__ import annotations

import errno
import os
import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from polypviewer.core import fileio
from polypviewer.core.errors import PolypviewerError

MAGIC = b"PVJRNL02"
MAGIC_V1 = b"PVJRNL01"
_GEN = struct.Struct("<16sI")  # generation, crc32(generation)
HEADER_SIZE = len(MAGIC) + 2 * _GEN.size  # 48
V1_HEADER_SIZE = len(MAGIC_V1) + 16
MARKER = b"\xd7PVr"
_HEAD = struct.Struct("<4sIII")  # marker, payload length, crc32(payload), crc32(first 12 bytes)
_V1_FRAME = struct.Struct("<II")  # payload length, crc32
_MAX_RECORD = 1 << 30
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_KINDS = {b"B": "start", b"S": "mask change", b"T": "review state"}


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
    if bits.size * 8 < h * w:
        raise ValueError("mask shorter than its shape")
    return np.unpackbits(bits, count=h * w).astype(bool).reshape(h, w)


def _str(s: str) -> bytes:
    b = s.encode("utf-8")
    return struct.pack("<H", len(b)) + b


def encode(record: Record) -> bytes:
    """A record's payload (format 2)."""
    if isinstance(record, StrokeRecord):
        h, w = record.new.shape
        return (b"S" + struct.pack("<IIIIIB", record.frame, record.y0, record.x0, h, w, record.state)
                + _pack_mask(record.new))
    if isinstance(record, StateRecord):
        return b"T" + struct.pack("<IB", record.frame, record.state)
    h, w = record.model_mask.shape
    name = "\x00" if record.name is None else record.name  # NUL marks "no name"
    # float64: the threshold comes back exactly as it was set (float32 made 0.37 0.3700000047...)
    return (b"B" + struct.pack("<IIId", record.frame, h, w, float(record.threshold))
            + _str(record.model_version) + _str(name) + _pack_mask(record.model_mask))


def decode(payload: bytes, version: int = 2) -> Record:
    kind, body = payload[:1], memoryview(payload)[1:]
    if kind == b"S":
        frame, y0, x0, h, w, state = struct.unpack_from("<IIIIIB", body)
        return StrokeRecord(frame, y0, x0, _unpack_mask(bytes(body[21:]), h, w), state)
    if kind == b"T":
        frame, state = struct.unpack_from("<IB", body)
        return StateRecord(frame, state)
    if kind == b"B":
        if version >= 2:
            frame, h, w, threshold = struct.unpack_from("<IIId", body)
            pos = 20
        else:
            frame, h, w, t32 = struct.unpack_from("<IIIf", body)
            # Format 1 stored float32: its shortest repr is the value the user set (0.37).
            threshold, pos = float(str(np.float32(t32))), 16
        strings = []
        for _ in range(2):
            (n,) = struct.unpack_from("<H", body, pos)
            if pos + 2 + n > len(body):
                raise ValueError("string runs past the record")
            strings.append(bytes(body[pos + 2:pos + 2 + n]).decode("utf-8"))
            pos += 2 + n
        name = None if strings[1] == "\x00" else strings[1]
        return BaseRecord(frame, _unpack_mask(bytes(body[pos:]), h, w), float(threshold), strings[0], name)
    raise ValueError(f"unknown record type {kind!r}")


def frame_record(payload: bytes) -> bytes:
    """``payload`` with its format-2 record header."""
    head = MARKER + struct.pack("<II", len(payload), zlib.crc32(payload))
    return head + struct.pack("<I", zlib.crc32(head)) + payload


def header(generation: bytes) -> bytes:
    copy = _GEN.pack(generation, zlib.crc32(generation))
    return MAGIC + copy + copy


@dataclass(frozen=True)
class Damage:
    """Bytes of a journal that hold no readable record (skipped, kept in the damaged copy)."""

    offset: int
    length: int
    frame: int | None = None  # guessed from the damaged bytes: may be wrong
    kind: str = ""            # likewise ("mask change", "start", "review state", "header")

    def describe(self) -> str:
        what = "damaged journal header" if self.kind == "header" else "damaged record(s)"
        guess = ""
        if self.frame is not None:
            guess = f" ({self.kind + ' of ' if self.kind else ''}frame {self.frame}?)"
        return f"{what} skipped at byte {self.offset} ({self.length} bytes){guess}"


@dataclass(frozen=True)
class JournalContents:
    generation: bytes
    records: list[Record]
    valid_bytes: int  # offset just past the last whole record
    torn_bytes: int   # bytes after it (an append cut short, or damage at the end)
    version: int = 2
    damaged: tuple[Damage, ...] = ()  # skipped regions (records after them are kept)
    append_at: int = 0  # where a writer goes on: the end of the file less a torn tail only
    offsets: tuple[int, ...] = ()  # byte offset of each record

    @property
    def torn_tail(self) -> bool:
        """The trailing bytes are an append cut short (safe to cut), not damage."""
        return self.append_at == self.valid_bytes and self.torn_bytes > 0


def read_journal(path: Path) -> JournalContents:
    """Every readable record of a journal; see :func:`parse_journal`."""
    return parse_journal(read_bytes(path), path)


def read_bytes(path: Path) -> bytes:
    """A file's bytes, refusing to follow a symbolic link."""
    fd = os.open(path, os.O_RDONLY | _O_NOFOLLOW | _O_CLOEXEC)
    with open(fd, "rb") as f:
        return f.read()


def parse_journal(data: bytes, path: Path | str | None = None) -> JournalContents:
    """Every record of a journal that checks out; damaged records are skipped (format 2)."""
    if len(data) >= V1_HEADER_SIZE and data.startswith(MAGIC_V1) and not _v2_generation_holds(data):
        return _parse_v1(data)  # (a format-2 magic damaged into format 1's: its checksummed header says so)
    if len(data) < HEADER_SIZE:
        raise JournalError("not a polypviewer journal (bad header)", path)
    damaged: list[Damage] = []
    generation = None
    for k in range(2):
        off = len(MAGIC) + k * _GEN.size
        gen, crc = _GEN.unpack_from(data, off)
        if zlib.crc32(gen) == crc:
            generation = generation or gen
        else:
            damaged.append(Damage(off, _GEN.size, kind="header"))
    if generation is None:
        raise JournalError("not a polypviewer journal (bad header)", path)
    if not data.startswith(MAGIC):  # a damaged magic, but a checksummed generation: ours
        damaged.insert(0, Damage(0, len(MAGIC), kind="header"))
    records: list[Record] = []
    offsets: list[int] = []
    n = len(data)
    pos = valid_end = HEADER_SIZE
    bad_start: int | None = None
    last_try = pos
    while pos < n:
        last_try = pos
        found = _try_record(data, pos)
        if found is not None:
            if bad_start is not None:
                damaged.append(_damage(data, bad_start, pos))
                bad_start = None
            end, record = found
            records.append(record)
            offsets.append(pos)
            pos = valid_end = end
            continue
        if bad_start is None:
            bad_start = pos
        pos = data.find(MARKER, pos + 1)
        if pos < 0:
            break
    append_at = n
    if bad_start is not None:
        if _is_torn(data, last_try):
            if last_try > bad_start:
                damaged.append(_damage(data, bad_start, last_try))
            else:
                append_at = last_try  # == valid_end: nothing but a cut-short append after it
        else:
            damaged.append(_damage(data, bad_start, n))
    return JournalContents(generation, records, valid_end, n - valid_end, 2, tuple(damaged),
                           append_at, tuple(offsets))


def _v2_generation_holds(data: bytes) -> bool:
    """A copy of the format-2 header's generation checks out (a format-1 file has its first
    record there: a match by chance is a 2**-32 event)."""
    for off in (len(MAGIC), len(MAGIC) + _GEN.size):
        if len(data) >= off + _GEN.size:
            gen, crc = _GEN.unpack_from(data, off)
            if zlib.crc32(gen) == crc:
                return True
    return False


def _try_record(data: bytes, pos: int) -> tuple[int, Record] | None:
    if pos + _HEAD.size > len(data):
        return None
    marker, length, crc, hcrc = _HEAD.unpack_from(data, pos)
    if marker != MARKER or zlib.crc32(data[pos:pos + 12]) != hcrc:
        return None
    end = pos + _HEAD.size + length
    if length == 0 or end > len(data):
        return None
    payload = data[pos + _HEAD.size:end]
    if zlib.crc32(payload) != crc:
        return None
    try:
        return end, decode(payload)
    except (ValueError, struct.error, zlib.error):  # checksummed but not ours: damage
        return None


def _is_torn(data: bytes, pos: int) -> bool:
    """``data[pos:]`` is the start of a record whose append was cut short (not damage)."""
    tail = data[pos:]
    if len(tail) < _HEAD.size:
        return MARKER.startswith(tail[:len(MARKER)])
    marker, length, _, hcrc = _HEAD.unpack_from(tail)
    return bool(marker == MARKER and zlib.crc32(tail[:12]) == hcrc and _HEAD.size + length > len(tail))


def _damage(data: bytes, start: int, end: int, head: int = _HEAD.size) -> Damage:
    """The region ``start:end`` with a guess of which record it held."""
    body = data[start + head:start + head + 5]
    kind = _KINDS.get(body[:1])
    frame = struct.unpack_from("<I", body, 1)[0] if kind and len(body) == 5 else None
    return Damage(start, end - start, frame if frame is not None and frame < 10**8 else None, kind or "")


def _parse_v1(data: bytes) -> JournalContents:
    """Format 1: no marker, so reading stops at the first bad record."""
    generation = data[len(MAGIC_V1):V1_HEADER_SIZE]
    records: list[Record] = []
    offsets: list[int] = []
    pos = V1_HEADER_SIZE
    torn = True
    while pos + _V1_FRAME.size <= len(data):
        length, crc = _V1_FRAME.unpack_from(data, pos)
        end = pos + _V1_FRAME.size + length
        if length == 0 or length > _MAX_RECORD or end > len(data):
            break
        payload = data[pos + _V1_FRAME.size:end]
        try:
            if zlib.crc32(payload) != crc:
                raise ValueError("bad crc")
            records.append(decode(payload, version=1))
        except (ValueError, struct.error, zlib.error):
            torn = False  # a whole record that does not check out: damage
            break
        offsets.append(pos)
        pos = end
    damaged = () if torn or pos == len(data) else (_damage(data, pos, len(data), _V1_FRAME.size),)
    return JournalContents(generation, records, pos, len(data) - pos, 1, damaged,
                           pos if not damaged else len(data), tuple(offsets))


def fsync_dir(path: Path) -> None:
    """Make a rename or a new file in ``path`` durable (no-op where directories can't be opened)."""
    fileio.fsync_dir(path)


def write_new_journal(path: Path, generation: bytes) -> None:
    """Atomically replace ``path`` with an empty journal for ``generation``.

    Through :mod:`polypviewer.core.fileio` (random exclusive temporary, a link at ``path``
    refused); raises :class:`~polypviewer.core.fileio.OutputError` or ``OSError``.
    """
    write_file(Path(path), header(generation), overwrite=True)


def temp_suffix(path: Path) -> str:
    """The suffix of this file's temporaries (so the store can clean up its own only)."""
    return f".{path.name}.part"


def write_file(path: Path, data: bytes, *, overwrite: bool) -> None:
    """``data`` to ``path`` through an exclusive random temporary, fsynced, then moved."""
    with fileio.atomic_path(path, overwrite=overwrite, suffix=temp_suffix(path)) as tmp:
        fd = os.open(tmp, os.O_WRONLY | _O_NOFOLLOW | _O_CLOEXEC)
        try:
            _write_all(fd, data)
        finally:
            os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    done = 0
    while done < len(view):
        n = os.write(fd, view[done:])
        if n <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        done += n


class JournalWriter:
    """Appends records to an existing journal; each ``append`` is durable when it returns.

    A failed append (a full disk, an I/O error) cuts the file back to its last good record
    before raising, so later records never sit behind a torn one. ``fsync=False`` only
    hands the bytes to the OS (survives a killed process, not a power cut); it is for tests
    that need thousands of records fast.
    """

    def __init__(self, path: Path, valid_bytes: int, *, fsync: bool = True) -> None:
        self.path = Path(path)
        self._fsync = fsync
        fd = os.open(self.path, os.O_RDWR | _O_NOFOLLOW | _O_CLOEXEC)
        self._f = open(fd, "r+b", buffering=0)  # unbuffered: nothing is left to a later flush
        self._end = valid_bytes
        self._cut_needed = os.fstat(fd).st_size != valid_bytes
        try:
            self._cut()  # a torn tail is cut so new records never follow it
        except BaseException:
            self._f.close()
            raise

    def append(self, record: Record) -> None:
        self.append_many([record])

    def append_many(self, records: Iterable[Record]) -> None:
        """All of ``records``, durable when this returns; on an error none of them is kept."""
        blob = b"".join(frame_record(encode(r)) for r in records)
        fd = self._f.fileno()
        try:
            if self._cut_needed:
                self._cut()
            os.lseek(fd, self._end, os.SEEK_SET)
            _write_all(fd, blob)
            if self._fsync:
                os.fsync(fd)
        except BaseException:
            self._cut_needed = True
            try:
                self._cut()  # back to the last good record (shrinking needs no space)
            except OSError:
                pass  # retried before the next append
            raise
        self._end += len(blob)

    def size(self) -> int:
        return self._end

    def _cut(self) -> None:
        if self._cut_needed:
            os.ftruncate(self._f.fileno(), self._end)
            os.fsync(self._f.fileno())
            self._cut_needed = False

    def close(self) -> None:
        if not self._f.closed:
            try:
                if self._fsync and not self._cut_needed:
                    os.fsync(self._f.fileno())
            finally:
                self._f.close()
