"""The project file: one HDF5 file per source, autosaved through a journal, crash-safe.

``review.pvproj.h5`` holds the reference to the source (path, size, content hash) and, per
frame, the corrected mask, the model's mask it started from, the review state, the model
version and threshold used, and the edit statistics (chunked, gzip-compressed, with a
schema version). Layout (schema 1)::

    /                  attrs format="polypviewer-project", schema_version, generation,
                             parent_generation (16 bytes each), created, saved
    /source            attrs path, size, content_hash ("sha256:..."), kind, n_frames
    /frames/000123/    attrs state (0..4), state_name, model_version, threshold, name,
                             strokes, pixels_changed, pixels_added, pixels_removed,
                             dice_model_vs_corrected
        mask           the corrected mask
        model_mask     the model's mask it started from
                       each uint8 (H, ceil(W/8)) = np.packbits(mask, axis=1), gzip and
                       fletcher32; attrs encoding="packbits-rows", width=W (unpack with
                       np.unpackbits(ds[()], axis=1, count=W)) and data_sha256 (of the
                       packed array as read)

Integrity: every dataset carries HDF5's fletcher32 checksum and the sha256 of its whole
array, and the root attribute ``content_digest`` is a sha256 over every attribute, group
and dataset name, shape, dtype and filter of the file (:func:`_content_digest`); all are
checked on open, so a damaged file is refused instead of read with changed content
(fletcher32 alone checks only the chunks that are found: a damaged entry of the chunk index
makes a chunk read as zeros). Files written before the digest (or the data sha256)
existed have none and are read as before (and get them at their next save).

Beside it, ``review.pvproj.h5.journal`` receives every completed change (fsynced before
the call returns), so nothing needs a save button.

The HDF5 file is never modified in place: :meth:`Project.compact` builds a NEW file in
memory with a new *generation* id, checks there is room for it, writes it through
:mod:`polypviewer.core.fileio` (an exclusive random temporary, fsynced, moved over the old
one, the folder fsynced; links refused), and only then starts an empty journal for the new
generation. On open, a journal of the file's generation is replayed (the work of a killed
run); one of the previous generation is already inside the file (the kill hit between the
replace and the new journal) and is dropped; any other journal is moved aside, never
deleted. A killed run therefore loses at most the change it was in the middle of writing.
A damaged journal is copied aside (``.damaged-<time>``) and read past its damage (see
:mod:`polypviewer.io.journal`); :attr:`Project.recovery` says what was recovered and what
was lost. A failed journal append (a full disk) keeps the change in memory, reports it,
and writes it with the next change or save that succeeds.
"""

from __future__ import annotations

import glob
import hashlib
import os
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from polypviewer.core import fileio
from polypviewer.core.edits import Diff, EditSession, FrameEdits, ReviewState, Stroke
from polypviewer.core.errors import PolypviewerError
from polypviewer.io import journal as jr

try:  # advisory lock so two windows never write the same project; absent on Windows
    import fcntl

    _HAVE_FCNTL = True
except ImportError:  # pragma: no cover
    _HAVE_FCNTL = False

__all__ = ["ProjectError", "SourceRef", "RecoveryReport", "Project", "content_hash",
           "FORMAT", "SCHEMA_VERSION"]

FORMAT = "polypviewer-project"
SCHEMA_VERSION = 1
_MIB = 1 << 20
# Compact automatically once the journal holds this much (keeps recovery fast).
AUTO_COMPACT_BYTES = 32 * _MIB
# Free space a compaction needs beyond the new file's size (the new journal, metadata).
_SPACE_MARGIN = _MIB
_DIGEST_ATTR = "content_digest"
_DATA_SHA_ATTR = "data_sha256"  # per mask dataset: the whole array, as read back


class ProjectError(PolypviewerError):
    """A project file that cannot be created, opened or written (one line, names the file)."""


def content_hash(path: str | Path) -> tuple[int, str]:
    """``(size, "sha256:...")`` identifying a source without reading all of it.

    A file: sha256 over its size, first MiB and last MiB. A folder (image set): sha256 over
    the sorted relative paths and sizes of its files, size = their total.
    """
    p = Path(path)
    h = hashlib.sha256()
    if p.is_dir():
        total = 0
        for f in sorted(q for q in p.rglob("*") if q.is_file()):
            size = f.stat().st_size
            total += size
            h.update(f"{f.relative_to(p).as_posix()}\0{size}\n".encode())
        return total, "sha256:" + h.hexdigest()
    size = p.stat().st_size
    h.update(str(size).encode())
    with open(p, "rb") as fh:
        h.update(fh.read(_MIB))
        if size > _MIB:
            fh.seek(max(size - _MIB, _MIB))
            h.update(fh.read(_MIB))
    return size, "sha256:" + h.hexdigest()


@dataclass(frozen=True)
class SourceRef:
    """Which video / image set a project belongs to."""

    path: str
    size: int
    content_hash: str
    kind: str = ""
    n_frames: int = 0

    @classmethod
    def from_path(cls, path: str | Path, *, kind: str = "", n_frames: int = 0) -> SourceRef:
        p = Path(path).resolve()
        if not p.exists():
            raise ProjectError("source not found", p)
        size, digest = content_hash(p)
        return cls(str(p), size, digest, kind, n_frames)

    def mismatch(self, path: str | Path | None = None) -> str | None:
        """Why the source at ``path`` (default: the recorded path) is not this one, or None."""
        p = Path(path or self.path)
        if not p.exists():
            return f"source {p} not found"
        size, digest = content_hash(p)
        if size != self.size or digest != self.content_hash:
            return f"source {p} changed since the project was made (size or content hash differs)"
        return None


@dataclass
class RecoveryReport:
    """What :meth:`Project.open` found beside the file."""

    replayed: int = 0          # journal records of a previous run applied on open
    torn_bytes: int = 0        # an incomplete last record (write cut by a kill), dropped
    stale_records: int = 0     # records already inside the file (kill during compaction)
    skipped: int = 0           # whole records that did not fit their frame (never written by us)
    moved_aside: list[str] = field(default_factory=list)  # foreign/corrupt journals kept
    damaged: list[jr.Damage] = field(default_factory=list)  # journal regions skipped (lost changes)
    damaged_copy: str | None = None  # the damaged journal, kept byte for byte
    save_error: str | None = None    # the recovered work could not be folded into the file yet

    @property
    def recovered(self) -> bool:
        return self.replayed > 0

    def describe(self) -> str | None:
        """One line for the user when the journal was damaged or could not be saved, else None."""
        if not self.damaged and not self.save_error and not self.skipped:
            return None
        parts = [f"recovered {self.replayed} change(s)"]
        lost = [d for d in self.damaged if d.kind != "header"]
        if lost:
            more = f" and {len(lost) - 1} more damaged region(s)" if len(lost) > 1 else ""
            parts.append(f"LOST: {lost[0].describe()}{more}")
        elif self.damaged:
            parts.append("the journal's header was damaged (its second copy was used); no change was lost")
        if self.skipped:
            parts.append(f"{self.skipped} record(s) that fit no frame skipped")
        if self.damaged_copy:
            parts.append(f"the damaged journal is kept as {self.damaged_copy}")
        if self.save_error:
            parts.append(f"not saved into the project file yet ({self.save_error}); it stays in the journal")
        return "; ".join(parts)


class Project:
    """An open project: ``session`` (masks + states) plus its crash-safe persistence.

    Every change made through ``project.session`` (or its frames' :class:`FrameEdits`) is
    journaled and fsynced before the call returns: the project installs itself as the
    session's listener once, when it is made. A caller may put its own listener there instead
    (the app's :class:`polypviewer.io.projects.SourceProject` does, to create the file lazily)
    and forward to the project's ``frame_started``/``mask_changed``/``state_changed``; no
    save, compaction or recovery puts the project back over it. Use as a context manager or
    call :meth:`close`.
    """

    def __init__(self, path: Path, source: SourceRef, session: EditSession, generation: bytes,
                 lock_fd: int | None, *, fsync: bool, created: str) -> None:
        self.path = path
        self.source = source
        self.session = session
        session.listener = self  # once; never re-installed (a caller's own listener stays)
        self.generation = generation
        self.created = created
        self.recovery = RecoveryReport()
        self._lock_fd = lock_fd
        self._fsync = fsync
        self._writer: jr.JournalWriter | None = None
        self._dirty: set[int] = set()  # frames whose datasets changed since the last compaction
        self._journal_records = 0
        self._pending: list[jr.Record] = []  # changes a failed append could not write yet
        self._next_auto_compact = AUTO_COMPACT_BYTES
        self._closed = False

    # -- create / open -----------------------------------------------------------------------
    @classmethod
    def create(cls, path: str | Path, source: SourceRef, *, fsync: bool = True,
               session: EditSession | None = None) -> Project:
        """Make a new project; refuses if ``path`` exists (nothing is ever overwritten).

        ``session``: edits made before the file existed, written into it now (the project
        becomes that session's listener; default: a new, empty session)."""
        path = Path(path).absolute()
        if os.path.lexists(path):
            raise ProjectError("a project already exists here; open it instead (polypviewer never overwrites one)",
                               path)
        if not path.parent.is_dir():
            raise ProjectError("folder does not exist", path.parent)
        lock_fd = _lock(path)
        try:
            project = cls(path, source, session if session is not None else EditSession(),
                          uuid.uuid4().bytes, lock_fd, fsync=fsync,
                          created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
            _move_aside(project.journal_path, project.recovery)  # a journal with no file is foreign
            # overwrite=False: refused if someone created it meanwhile (never overwrite)
            project._write_file(path, project._h5_image(parent=b"\0" * 16), overwrite=False)
            project._new_journal()
        except BaseException:
            _unlock(lock_fd)
            raise
        return project

    @classmethod
    def open(cls, path: str | Path, *, fsync: bool = True) -> Project:
        """Open a project, recovering the journal a killed run left; see :attr:`recovery`."""
        path = Path(path).absolute()
        if path.is_symlink():  # a project opened through a link is read and saved where it really is
            path = path.resolve()
        if not path.is_file():
            raise ProjectError("no such project file", path)
        lock_fd = _lock(path)
        project = None
        try:
            project, parent = cls._read_h5(path, lock_fd, fsync)
            _remove_temporaries(path)
            project._recover(parent)
        except BaseException as err:
            if project is not None and project._writer is not None:
                project._writer.close()
            _unlock(lock_fd)
            if isinstance(err, ProjectError) or not isinstance(err, Exception):
                raise
            # Whatever went wrong, one line and the files as they are (never a traceback
            # that leaves the window editing into nothing).
            raise ProjectError(f"cannot open the project ({type(err).__name__}: "
                               f"{fileio.describe_exception(err)})", path) from err
        return project

    @property
    def journal_path(self) -> Path:
        return self.path.with_name(self.path.name + ".journal")

    # -- the session's listener: every completed change goes to the journal ----------------------
    def frame_started(self, frame: int, edits: FrameEdits) -> None:
        self._dirty.add(frame)  # first: a failed append's change must still reach the next save
        self._append(jr.BaseRecord(frame, edits.model_mask, float(edits.threshold), edits.model_version,
                                   self.session.names.get(frame)))

    def mask_changed(self, frame: int, diff: Diff) -> None:
        self.record_stroke(frame, diff)

    def state_changed(self, frame: int, state: ReviewState) -> None:
        self._append(jr.StateRecord(frame, int(state)))

    def record_stroke(self, frame: int, stroke: Stroke | Diff) -> None:
        """Journal a change already applied to ``frame``'s mask (session edits call this themselves)."""
        diff = stroke.diff if isinstance(stroke, Stroke) else stroke
        self._dirty.add(frame)
        self._append(jr.StrokeRecord(frame, diff.y0, diff.x0, diff.new, int(self.session.state(frame))))

    # -- conveniences over the session ---------------------------------------------------------
    def start_frame(self, frame: int, model_mask: np.ndarray, *, model_version: str = "",
                    threshold: float = 0.5, name: str | None = None) -> FrameEdits:
        return self.session.start(frame, model_mask, model_version=model_version, threshold=threshold, name=name)

    def set_state(self, frame: int, state: ReviewState) -> None:
        self.session.set_state(frame, state)

    def masks(self) -> dict[int, np.ndarray]:
        """Corrected mask of every started frame (copies)."""
        return {f: e.mask.copy() for f, e in sorted(self.session.frames.items())}

    def states(self) -> dict[int, ReviewState]:
        return {f: self.session.state(f) for f in sorted(set(self.session.frames) | set(self.session.states))}

    def items(self, states: Iterable[ReviewState] = (ReviewState.ACCEPTED, ReviewState.CORRECTED), *,
              source: Any = None, errors: list[PolypviewerError] | None = None
              ) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
        """``(name, image RGB, corrected mask)`` for started frames in ``states`` (for export/fine-tune).

        ``source`` is an open FrameSource; by default the recorded source is opened (and must
        still match its content hash). A frame that cannot be read is appended to ``errors``
        (when given) and skipped.
        """
        frames = [f for f in self.session.with_state(*states) if f in self.session.frames]
        if not frames:
            return
        own = source is None
        if own:
            reason = self.source.mismatch()
            if reason:
                raise ProjectError(reason, self.path)
            from polypviewer.io.sources import open_source  # the IO engineer's reader
            source = open_source(self.source.path)
        try:
            for f in frames:
                try:
                    image = source.frame(f)
                    name = self.session.names.get(f) or source.name(f)
                except PolypviewerError as err:
                    if errors is None:
                        raise
                    errors.append(err)
                    continue
                yield name, image, self.session.frames[f].mask.copy()
        finally:
            if own:
                source.close()

    # -- saving --------------------------------------------------------------------------------
    def save(self) -> None:
        """Ctrl+S: everything is already durable in the journal; this folds it into the file."""
        self.compact()

    def compact(self) -> None:
        """Write a new HDF5 with everything, atomically replace the old, start an empty journal.

        Checks for free space first; on any failure the old file and its journal are as they
        were (the journal stays the truth) and a one-line :class:`ProjectError` is raised.
        """
        if self._closed:
            raise ProjectError("project is closed", self.path)
        parent, self.generation = self.generation, uuid.uuid4().bytes
        try:
            self._write_file(self.path, self._h5_image(parent=parent), overwrite=True)
        except BaseException:
            self.generation = parent  # the old file and its journal are untouched and still valid
            raise
        # The new file is in place and fsynced. A kill here leaves the old journal, whose
        # generation is now this file's parent: open() recognises its records as already
        # inside and drops them.
        self._pending.clear()  # the file holds them
        self._dirty.clear()
        self._journal_records = 0
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._new_journal()  # on failure the file holds everything; the next change retries

    def close(self) -> None:
        """Fold the journal into the file (if it has anything) and release the project."""
        if self._closed:
            return
        try:
            if self._pending:
                try:
                    self._flush_pending()
                except ProjectError:
                    pass  # compaction below is the last chance; its error says what is lost
            if self._journal_records or self._pending or self._writer is None:
                try:
                    self.compact()
                except ProjectError as err:
                    lost = len(self._pending)
                    tail = (f"{lost} change(s) could not be written anywhere and are lost" if lost else
                            "every change is in the journal and is recovered when the project is next opened")
                    raise ProjectError(f"{err.reason}; {tail}", err.path) from err
        finally:
            self._closed = True
            if self._writer is not None:
                self._writer.close()
                self._writer = None
            if self.session.listener is self:
                self.session.listener = None
            _unlock(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> Project:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals -------------------------------------------------------------------------------
    def _append(self, record: jr.Record) -> None:
        if self._closed:
            raise ProjectError("project is closed; the change was not saved", self.path)
        self._pending.append(record)
        self._flush_pending()
        if self._writer is not None and self._writer.size() > self._next_auto_compact:
            try:
                self.compact()
            except ProjectError:
                # The change itself is durable in the journal; try again after more growth.
                self._next_auto_compact = self._writer.size() + AUTO_COMPACT_BYTES // 8 if self._writer else 0
            else:
                self._next_auto_compact = AUTO_COMPACT_BYTES

    def _flush_pending(self) -> None:
        """Append every change not yet in the journal, oldest first, or raise ProjectError."""
        n = len(self._pending)
        try:
            if self._writer is None:
                self._new_journal()  # raises ProjectError while the folder stays unwritable
            assert self._writer is not None
            self._writer.append_many(self._pending)
        except (OSError, ProjectError) as err:
            why = err.reason if isinstance(err, ProjectError) else fileio.describe_exception(err)
            raise ProjectError(f"cannot write the journal ({why}); {n} change(s) NOT saved yet: kept in memory and "
                               "written with the next change or Ctrl+S once there is room", self.journal_path) from err
        self._journal_records += n
        self._pending.clear()

    def _new_journal(self) -> None:
        """Replace the journal with an empty one of this file's generation and write into it."""
        try:
            jr.write_new_journal(self.journal_path, self.generation)
            self._start_writer(jr.HEADER_SIZE)
        except (OSError, PolypviewerError) as err:
            why = err.reason if isinstance(err, PolypviewerError) else fileio.describe_exception(err)
            raise ProjectError(f"cannot start a new journal ({why})", self.journal_path) from err

    def _start_writer(self, valid_bytes: int) -> None:
        self._writer = jr.JournalWriter(self.journal_path, valid_bytes, fsync=self._fsync)

    def _write_file(self, path: Path, data: bytes, *, overwrite: bool) -> None:
        """``data`` to ``path`` safely (room checked first, temporary, fsync, move) or ProjectError."""
        try:
            fileio.ensure_free_space(path.parent, len(data) + _SPACE_MARGIN, what=path)
            jr.write_file(path, data, overwrite=overwrite)
        except fileio.OutputError as err:
            if not overwrite and os.path.lexists(path):
                raise ProjectError("a project already exists here; open it instead", path) from None
            raise ProjectError(f"cannot write the project ({err.reason})", path) from err
        except OSError as err:
            raise ProjectError(f"cannot write the project ({fileio.describe_exception(err)})", path) from err

    def _recover(self, parent: bytes) -> None:
        report = self.recovery
        jpath = self.journal_path
        contents = None
        data = b""
        if jpath.is_symlink():
            _move_aside(jpath, report)  # the link itself, never what it points to
        elif jpath.exists():
            try:
                data = jr.read_bytes(jpath)
                contents = jr.parse_journal(data, jpath)
            except (jr.JournalError, OSError):
                _move_aside(jpath, report)
        if contents is None or contents.generation != self.generation:
            if contents is not None:
                if contents.generation == parent:
                    report.stale_records = len(contents.records)
                else:
                    _move_aside(jpath, report)
            self._new_journal()
            return
        if contents.damaged or (contents.version == 1 and contents.torn_bytes):
            # Keep the damaged journal byte for byte before anything else touches it.
            report.damaged_copy = str(_keep_copy(jpath, data, "damaged"))
            report.damaged = list(contents.damaged)
        report.torn_bytes = contents.torn_bytes if contents.torn_tail or contents.version == 1 else 0
        for record in contents.records:
            try:
                self._replay(record)
                report.replayed += 1
            except (ValueError, IndexError, TypeError):  # checksummed yet inconsistent: skip it
                report.skipped += 1
        self._journal_records = report.replayed
        if contents.version == 1:
            # Format 1 is read, never appended to: fold it into the file, or refuse loudly.
            if report.replayed:
                self.compact()
            else:
                self._new_journal()
            return
        # The writer goes on after the last readable byte (only a torn tail is cut): damage
        # is never cut away, and readers resynchronise past it.
        self._start_writer(contents.append_at)
        try:
            if report.replayed:
                self.compact()  # the file alone now holds the recovered work
            elif contents.damaged:
                assert self._writer is not None  # started just above
                self._writer.close()  # nothing readable in it, and a copy is kept: start afresh
                self._writer = None
                self._new_journal()
        except ProjectError as err:
            report.save_error = err.reason
            if self._writer is None and self.generation == contents.generation:
                self._start_writer(contents.append_at)  # the journal is as it was: go on in it
            # (otherwise the new file holds everything and the next change starts a journal)

    def _replay(self, record: jr.Record) -> None:
        s = self.session
        if isinstance(record, jr.BaseRecord):
            if record.frame not in s.frames:
                s.adopt(record.frame, FrameEdits(record.model_mask, model_version=record.model_version,
                                                 threshold=record.threshold), name=record.name)
        elif isinstance(record, jr.StrokeRecord):
            edits = s.frames.get(record.frame)
            if edits is None:
                raise ValueError(f"stroke for frame {record.frame}, which was never started")
            h, w = record.new.shape
            edits._write(Diff(record.y0, record.x0, edits.mask[record.y0:record.y0 + h, record.x0:record.x0 + w],
                              record.new))
            edits.strokes += 1
            s.states[record.frame] = ReviewState(record.state)
        else:
            s.states[record.frame] = ReviewState(record.state)
        self._dirty.add(record.frame)

    @classmethod
    def _read_h5(cls, path: Path, lock_fd: int | None, fsync: bool) -> tuple[Project, bytes]:
        try:
            f = h5py.File(path, "r")
        except Exception as err:  # noqa: BLE001 - h5py raises OSError, but damage can raise others
            raise ProjectError(f"not a readable HDF5 project file ({fileio.describe_exception(err)})", path) from None
        try:
            with f:
                return cls._read_open_h5(f, path, lock_fd, fsync)
        except ProjectError:
            raise
        except Exception as err:  # noqa: BLE001 - any damage (OSError, RuntimeError, ...) is one line
            raise ProjectError(f"damaged project file ({fileio.describe_exception(err, with_type=True)})",
                               path) from None

    @classmethod
    def _read_open_h5(cls, f: h5py.File, path: Path, lock_fd: int | None,
                      fsync: bool) -> tuple[Project, bytes]:
        if f.attrs.get("format") != FORMAT:
            raise ProjectError("not a polypviewer project (HDF5 file without the project format tag)", path)
        version = int(f.attrs.get("schema_version", -1))
        if version > SCHEMA_VERSION:
            raise ProjectError(f"written by a newer polypviewer (schema {version}, this one reads "
                               f"{SCHEMA_VERSION}); update polypviewer", path)
        try:
            src = f["source"].attrs
            source = SourceRef(str(src["path"]), int(src["size"]), str(src["content_hash"]),
                               str(src.get("kind", "")), int(src.get("n_frames", 0)))
            session = EditSession()
            for key, grp in f["frames"].items():
                frame, a = int(key), grp.attrs
                if "mask" in grp:
                    edits = FrameEdits(_read_mask(grp["model_mask"]), mask=_read_mask(grp["mask"]),
                                       model_version=str(a.get("model_version", "")),
                                       threshold=float(a.get("threshold", 0.5)), strokes=int(a.get("strokes", 0)))
                    session.adopt(frame, edits, name=str(a["name"]) if "name" in a else None)
                state = ReviewState(int(a.get("state", 0)))
                if state != ReviewState.UNREVIEWED:
                    session.states[frame] = state
            generation = bytes(np.asarray(f.attrs["generation"], np.uint8))
            parent = bytes(np.asarray(f.attrs["parent_generation"], np.uint8))
            created = str(f.attrs.get("created", ""))
            if len(generation) != 16 or len(parent) != 16:
                raise ValueError("generation ids are not 16 bytes")
        except (KeyError, ValueError, TypeError, OSError) as err:
            raise ProjectError(f"damaged project file ({fileio.describe_exception(err)})", path) from None
        # Files written before the digest existed have none: they are read as before
        # (their datasets have no fletcher32 either) and get both at their next save.
        if _DIGEST_ATTR in f.attrs:
            stored = f.attrs[_DIGEST_ATTR]
            if not isinstance(stored, str) or stored != _content_digest(f):
                raise ProjectError("damaged project file (content checksum does not match; "
                                   "the file was changed or corrupted after it was written)", path)
        return cls(path, source, session, generation, lock_fd, fsync=fsync, created=created), parent

    def _h5_image(self, *, parent: bytes) -> bytes:
        """The whole project as the bytes of an HDF5 file, built in memory.

        Nothing touches the disk here (HDF5's core driver without a backing store): the
        bytes are written by :meth:`_write_file`, whose errors are ordinary OSErrors (h5py
        writing a file itself can crash the process when the disk fills up).
        """
        old = None
        if self.path.exists() and not self._all_dirty():
            try:
                old = h5py.File(self.path, "r")
            except OSError:
                old = None  # every frame is in the session: rewrite them all
        try:
            with h5py.File(f"pvproj-{uuid.uuid4().hex}", "w", driver="core", backing_store=False,
                           libver=("v108", "v108")) as f:
                f.attrs["format"] = FORMAT
                f.attrs["schema_version"] = SCHEMA_VERSION
                f.attrs["generation"] = np.frombuffer(self.generation, np.uint8)
                f.attrs["parent_generation"] = np.frombuffer(parent, np.uint8)
                f.attrs["created"] = self.created
                f.attrs["saved"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
                src = f.create_group("source").attrs
                for k, v in (("path", self.source.path), ("size", self.source.size),
                             ("content_hash", self.source.content_hash), ("kind", self.source.kind),
                             ("n_frames", self.source.n_frames)):
                    src[k] = v
                frames = f.create_group("frames")
                s = self.session
                for frame in sorted(set(s.frames) | set(s.states)):
                    key = f"{frame:06d}"
                    if old is not None and frame not in self._dirty and _copyable(old, f"frames/{key}"):
                        old.copy(old[f"frames/{key}"], frames, key)  # unchanged: no re-compression
                        grp = frames[key]
                    else:
                        grp = frames.create_group(key)
                        edits = s.frames.get(frame)
                        if edits is not None:
                            _write_frame(grp, edits, s.names.get(frame))
                    grp.attrs["state"] = int(s.state(frame))
                    grp.attrs["state_name"] = s.state(frame).name.lower()
                f.attrs[_DIGEST_ATTR] = _content_digest(f)
                f.flush()
                image: bytes = f.id.get_file_image()  # (h5py is untyped)
                return image
        except ProjectError:
            raise
        except Exception as err:
            raise ProjectError(f"cannot write the project ({fileio.describe_exception(err, with_type=True)})",
                               self.path) from err
        finally:
            if old is not None:
                old.close()

    def _all_dirty(self) -> bool:
        return set(self.session.frames) <= self._dirty


def _write_frame(grp: h5py.Group, edits: FrameEdits, name: str | None) -> None:
    for key, arr in (("mask", edits.mask), ("model_mask", edits.model_mask)):
        # Bit-packed along rows, then gzip: ~5x faster to read and write than one byte per
        # pixel at 1080p, which is what makes opening a project with many frames quick.
        packed = np.packbits(arr, axis=1)
        ds = grp.create_dataset(key, data=packed, chunks=(max(1, min(packed.shape[0], 128)), max(1, packed.shape[1])),
                                compression="gzip", compression_opts=1, fletcher32=True)
        ds.attrs["encoding"] = "packbits-rows"
        ds.attrs["width"] = arr.shape[1]
        ds.attrs[_DATA_SHA_ATTR] = _data_sha256(packed)
    st = edits.stats()
    a = grp.attrs
    a["model_version"] = edits.model_version
    a["threshold"] = float(edits.threshold)  # float64: exactly the value set
    if name is not None:
        a["name"] = name
    a["strokes"] = st.strokes
    a["pixels_changed"] = st.pixels_changed
    a["pixels_added"] = st.pixels_added
    a["pixels_removed"] = st.pixels_removed
    a["dice_model_vs_corrected"] = st.dice_model_vs_corrected


def _read_mask(ds: h5py.Dataset) -> np.ndarray:
    """A mask dataset as bool HxW (``packbits-rows``: uint8 (H, ceil(W/8)), ``width`` attr);
    ValueError when its data is not what was written (``data_sha256``, where present)."""
    data = ds[()]
    stored = ds.attrs.get(_DATA_SHA_ATTR)
    if stored is not None and stored != _data_sha256(data):
        frame, name = ds.name.split("/")[-2:]
        raise ValueError(f"frame {int(frame)} {name}: its data does not match the checksum written with it")
    if ds.attrs.get("encoding") == "packbits-rows":
        return np.unpackbits(data, axis=1, count=int(ds.attrs["width"])).astype(bool)
    return np.asarray(data).astype(bool)


def _data_sha256(data: np.ndarray) -> str:
    a = np.ascontiguousarray(data)
    return "sha256:" + hashlib.sha256(f"{a.dtype.str}{a.shape}".encode() + a.tobytes()).hexdigest()


def _copyable(old: h5py.File, key: str) -> bool:
    """A frame group of the old file that can be copied as is (its datasets carry fletcher32
    and their data's sha256; an older file's frames are rewritten so that they get them)."""
    if key not in old:
        return False
    grp = old[key]
    return all(grp[name].fletcher32 and _DATA_SHA_ATTR in grp[name].attrs
               for name in ("mask", "model_mask") if name in grp)


def _canon(value: Any) -> bytes:
    """An attribute value as bytes, the same whether just written or read back."""
    if isinstance(value, bytes):
        return b"b" + len(value).to_bytes(8, "little") + value
    if isinstance(value, str):
        b = value.encode("utf-8", "surrogatepass")
        return b"s" + len(b).to_bytes(8, "little") + b
    a = np.asarray(value)
    if a.dtype.kind in "OSU":
        return b"l" + a.size.to_bytes(8, "little") + b"".join(_canon(v) for v in a.ravel().tolist())
    head = f"{a.dtype.str}{a.shape}".encode()
    return b"n" + len(head).to_bytes(8, "little") + head + a.tobytes()


def _content_digest(f: h5py.File) -> str:
    """sha256 over every name, attribute, shape, dtype and filter in the file (the data
    itself is guarded by each dataset's fletcher32 checksum)."""
    h = hashlib.sha256()

    def visit(obj: h5py.Group | h5py.Dataset, name: str) -> None:
        h.update(_canon(name))
        for key in sorted(obj.attrs):
            if obj.name == "/" and key == _DIGEST_ATTR:
                continue
            h.update(_canon(key) + _canon(obj.attrs[key]))
        if isinstance(obj, h5py.Dataset):
            h.update(_canon(f"dataset {obj.shape} {obj.dtype.str} {obj.chunks} {obj.compression} "
                            f"{obj.compression_opts} {obj.fletcher32} {obj.shuffle}"))
        else:
            keys = sorted(obj.keys())
            h.update(_canon(f"group {len(keys)}"))
            for key in keys:
                visit(obj[key], f"{name}/{key}")

    visit(f, "")
    return "sha256:" + h.hexdigest()


def _lock(path: Path) -> int | None:
    if not _HAVE_FCNTL:
        return None
    lock_path = path.with_name(path.name + ".lock")
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0),
                     0o644)
    except OSError as err:
        raise ProjectError(f"cannot create the lock file ({err.strerror})", lock_path) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise ProjectError("project is open in another polypviewer window or process", path) from None
    return fd


def _unlock(fd: int | None) -> None:
    if fd is not None:
        os.close(fd)  # closing releases the flock


def _aside_name(path: Path, tag: str) -> Path:
    """A name beside ``path`` that nothing has yet: ``<name>.<tag>-<time>-<pid>[-k]``."""
    base = f"{path.name}.{tag}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    k = 0
    while True:
        target = path.with_name(base if k == 0 else f"{base}-{k}")
        if not os.path.lexists(target):
            return target
        k += 1


def _move_aside(path: Path, report: RecoveryReport) -> None:
    """Keep a journal we cannot use under a new name instead of deleting anybody's work."""
    if not os.path.lexists(path):
        return
    target = _aside_name(path, "orphan")
    try:
        os.link(path, target, follow_symlinks=False)  # never replaces anything at target
        os.unlink(path)
    except FileExistsError:
        raise ProjectError("cannot move a foreign journal aside (name taken)", path) from None
    except OSError:
        os.rename(path, target)  # no hard links here; target was free a moment ago
    fileio.fsync_dir(path.parent)
    report.moved_aside.append(str(target))


def _keep_copy(path: Path, data: bytes, tag: str) -> Path:
    """Write ``data`` (a damaged journal) beside ``path`` under a new name; ProjectError if impossible."""
    target = _aside_name(path, tag)
    try:
        jr.write_file(target, data, overwrite=False)
    except (OSError, PolypviewerError) as err:
        why = err.reason if isinstance(err, PolypviewerError) else fileio.describe_exception(err)
        raise ProjectError(f"the journal is damaged and a copy of it cannot be kept ({why}); "
                           "nothing was changed, free some space and open it again", path) from err
    return target


def _remove_temporaries(path: Path) -> None:
    """Delete half-written files of a killed compaction (safe: we hold the project's lock)."""
    journal = path.with_name(path.name + ".journal")
    patterns = [f".{path.name}.tmp-*", f"{path.name}.journal.tmp-*"]  # older polypviewer's names
    # fileio's: TMP_PREFIX + 8 random characters + our suffix (other projects' are not ours)
    patterns += [glob.escape(fileio.TMP_PREFIX) + "?" * 8 + glob.escape(jr.temp_suffix(p)) for p in (path, journal)]
    patterns.append(glob.escape(fileio.TMP_PREFIX) + "?" * 8 + glob.escape(f".{journal.name}.") + "damaged-*.part")
    for pattern in patterns:
        for tmp in path.parent.glob(pattern):
            if tmp.is_file() and not tmp.is_symlink():
                tmp.unlink(missing_ok=True)
