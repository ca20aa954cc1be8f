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
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import PolypviewerError

__all__ = [
    "TMP_PREFIX",
    "OutputError",
    "atomic_write",
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


def _umask() -> int:
    # os.umask can only be read by setting it; set it back at once (single-threaded enough:
    # the window of a different umask is two syscalls).
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def describe_exception(exc: BaseException) -> str:
    """One line for any exception: its message (or its type's name when it has none)."""
    if isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())


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
