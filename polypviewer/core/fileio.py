"""Safe output files: the one place the project writes a file a user keeps.

Every output (a mask, a project file, a card, a settings file, an export's JSON) is written
to a temporary file created exclusively (``O_EXCL``, unpredictable name) in the target's own
folder, fsynced, then moved into place; the folder is fsynced too. A reader or a crash sees
the old file or the complete new one, never half. Outputs never follow a symbolic link: a
link at the target path is refused, not written through. New files get the usual
``0o666 & ~umask`` mode (``mkstemp`` alone would make every output 0600).

Stdlib only, like the rest of ``core``'s non-numeric helpers.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import secrets
import shutil
import tempfile
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

from .errors import PolypviewerError, describe_exception  # re-exported: fileio's users take it from here

__all__ = [
    "TMP_PREFIX",
    "OutputError",
    "atomic_write",
    "atomic_write_all",
    "write_json",
    "atomic_path",
    "describe_exception",
    "ensure_free_space",
    "fsync_dir",
    "refuse_link",
    "remove_stale_temporaries",
    "sha256_file",
]

#: Prefix of every temporary file :func:`atomic_write` / :func:`atomic_path` create.
TMP_PREFIX = ".polypviewer-tmp-"


class OutputError(PolypviewerError):
    """An output could not be written (a link in the way, a full disk, no permission)."""


_UMASK_LOCK = threading.Lock()


def _umask() -> int:
    """The process umask, read without changing it where the OS tells (Linux: /proc)."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    # os.umask can only be read by setting it. Writer threads (predict writes on two) must
    # not interleave here, or one reads the other's temporary value and restores that for
    # good; and the temporary value is the strictest, so a file another thread creates in
    # the window is never more open than intended.
    with _UMASK_LOCK:
        mask = os.umask(0o077)
        os.umask(mask)
    return mask


def refuse_link(path: str | Path) -> None:
    """Raise :class:`OutputError` when ``path`` is a symbolic link (dangling or not)."""
    p = Path(path)
    if p.is_symlink():
        raise OutputError("is a symbolic link; refusing to write through it", p)


def fsync_dir(folder: str | Path) -> None:
    """fsync a folder so a rename inside it survives a power cut (no-op where unsupported)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def ensure_free_space(folder: str | Path, needed: int, *, what: str | Path | None = None) -> None:
    """Raise :class:`OutputError` when ``folder``'s file system has less than ``needed`` bytes."""
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return  # cannot tell: let the write itself fail loudly
    if free < needed:
        raise OutputError(
            f"not enough free space: {needed / 1e6:.1f} MB needed, {free / 1e6:.1f} MB free",
            what if what is not None else folder,
        )


def _commit(tmp: str, path: Path, *, overwrite: bool) -> None:
    if overwrite:
        refuse_link(path)
        os.replace(tmp, path)
    else:
        # link() fails with EEXIST when anything (a file, a link, a dangling link) has the
        # name, so an existing output is never replaced; then drop the temporary name.
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise OutputError("already exists; not overwriting it", path) from None
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
                raise
            # File systems without hard links: check, then rename (a small race, no links).
            if os.path.lexists(path):
                raise OutputError("already exists; not overwriting it", path) from None
            os.rename(tmp, path)
            return
        os.unlink(tmp)


@contextlib.contextmanager
def atomic_path(
    path: str | Path, *, overwrite: bool = True, suffix: str | None = None
) -> Iterator[Path]:
    """Yield a fresh temporary path beside ``path`` for a library that writes by name
    (h5py, OpenCV); on a clean exit the file is fsynced and moved to ``path``, on an
    exception it is removed and ``path`` is untouched.

    The temporary file exists (empty, created with ``O_EXCL``) when the block starts.
    ``overwrite=False`` refuses (``OutputError``) when ``path`` exists by then.
    """
    path = Path(path)
    refuse_link(path)
    if not overwrite and os.path.lexists(path):
        raise OutputError("already exists; not overwriting it", path)
    fd, tmp = tempfile.mkstemp(
        prefix=TMP_PREFIX, suffix=path.suffix if suffix is None else suffix, dir=path.parent
    )
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~_umask())
        yield Path(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        _commit(tmp, path, overwrite=overwrite)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def atomic_write(path: str | Path, data: bytes | str, *, overwrite: bool = True) -> None:
    """Write ``data`` (text is UTF-8) to ``path`` atomically; see the module docstring.

    Raises :class:`OutputError` (one line naming ``path``) on a link at ``path``, an existing
    file with ``overwrite=False``, or any OS failure (full disk, permissions); ``path`` is
    then exactly as it was.
    """
    path = Path(path)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    try:
        with atomic_path(path, overwrite=overwrite) as tmp:
            with open(tmp, "wb") as fh:
                fh.write(payload)
                fh.flush()
    except OutputError:
        raise
    except OSError as exc:
        raise OutputError(f"could not write: {describe_exception(exc)}", path) from exc


def write_json(path: str | Path, obj: object, *, indent: int = 2, overwrite: bool = True) -> None:
    """``obj`` as indented JSON (one trailing newline) through :func:`atomic_write`; a
    missing parent folder is created first. Raises :class:`OutputError` naming ``path``."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"could not create its folder: {describe_exception(exc)}", path) from exc
    atomic_write(path, json.dumps(obj, indent=indent) + "\n", overwrite=overwrite)


def _new_temp(path: Path) -> str:
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, suffix=path.suffix, dir=path.parent)
    os.close(fd)
    return tmp


def atomic_write_all(
    files: Sequence[tuple[str | Path, bytes | str]], *, overwrite: bool = True
) -> None:
    """Write several files (e.g. an image and its mask) so that either all of them are in
    place or none changed.

    Every temporary is written and fsynced before any is moved into place, so a full disk
    (the usual failure) leaves every target as it was. Should a move fail after some
    succeeded, those are rolled back: a file that was new is removed, a replaced one gets
    its old content back (kept under a hard-linked temporary name until all moves are done).
    Raises :class:`OutputError` naming the file that failed; links and, with
    ``overwrite=False``, existing files are refused before anything is written.
    """
    items = [(Path(p), d.encode("utf-8") if isinstance(d, str) else d) for p, d in files]
    for path, _ in items:
        refuse_link(path)
        if not overwrite and os.path.lexists(path):
            raise OutputError("already exists; not overwriting it", path)
    temps: list[str] = []
    committed: list[tuple[Path, str | None, bool]] = []  # (target, backup of old content, existed)
    current = items[0][0] if items else None
    try:
        mode = 0o666 & ~_umask()
        for path, payload in items:
            current = path
            tmp = _new_temp(path)
            temps.append(tmp)
            os.chmod(tmp, mode)
            with open(tmp, "wb") as fh:
                fh.write(payload)
                fh.flush()
                os.fsync(fh.fileno())
        for (path, _), tmp in zip(items, temps, strict=True):
            current = path
            backup = None
            existed = os.path.lexists(path)
            if overwrite and existed:
                backup = str(path.with_name(f"{TMP_PREFIX}{secrets.token_hex(8)}.bak"))
                try:
                    os.link(path, backup)
                except OSError:
                    backup = None  # no hard links here: this one cannot be rolled back
            try:
                _commit(tmp, path, overwrite=overwrite)
            except BaseException:
                if backup is not None:
                    with contextlib.suppress(OSError):
                        os.unlink(backup)
                raise
            committed.append((path, backup, existed))
    except BaseException as exc:
        for path, backup, existed in reversed(committed):
            with contextlib.suppress(OSError):
                if backup is not None:
                    os.replace(backup, path)
                elif not existed:
                    os.unlink(path)
        for tmp in temps:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        if isinstance(exc, OSError):
            raise OutputError(f"could not write: {describe_exception(exc)}", current) from exc
        raise
    for _, backup, _ in committed:
        if backup is not None:
            with contextlib.suppress(OSError):
                os.unlink(backup)
    for folder in {path.parent for path, _ in items}:
        fsync_dir(folder)


def remove_stale_temporaries(folder: str | Path) -> int:
    """Delete temporary files this module left behind in ``folder`` after a crash."""
    n = 0
    for p in Path(folder).glob(TMP_PREFIX + "*"):
        with contextlib.suppress(OSError):
            p.unlink()
            n += 1
    return n


def sha256_file(path: str | Path, *, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()
