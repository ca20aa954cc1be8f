"""The project of the source open in the app: which file, open or create it, persist, save, close.

No Qt: the review window's annotation controller holds one :class:`SourceProject` and reads
``session`` (the :class:`~polypviewer.core.edits.EditSession` every mask is edited in) and
``project`` (the open :class:`~polypviewer.io.store.Project`, or None).

* One file per source under :func:`~polypviewer.core.paths.projects_dir` (never next to the
  user's data), named after the source and a hash of its path (:func:`project_candidates`).
* :meth:`SourceProject.open` opens the first candidate that exists and belongs to this source
  (recovering a killed run's journal); a damaged project, or one of another version of the
  source, is reported and left untouched, and the work goes to the next free name.
* Otherwise nothing is written until the first change: the session's one listener (this
  object) creates the project then, so merely looking at a video leaves nothing behind.
* Every later change goes to the project's journal through the same listener; a failed write
  becomes one reported line (the change stays in memory), never an exception in the caller.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

from polypviewer.core.edits import Diff, EditSession, FrameEdits, ReviewState
from polypviewer.core.errors import PolypviewerError
from polypviewer.core.fileio import describe_exception
from polypviewer.core.paths import projects_dir
from polypviewer.io.store import Project, ProjectError, SourceRef

__all__ = ["projects_dir", "project_candidates", "SourceProject"]

NOT_SAVED = "this change is NOT saved; Export to keep the work"


def project_candidates(source: str | Path, limit: int = 20) -> list[Path]:
    """Project paths for a source, in the order they are tried: ``<name>-<hash>.pvproj.h5``,
    then ``...-2``, ``...-3`` (used when an earlier one is damaged or for another source)."""
    p = Path(source).resolve()
    digest = hashlib.sha256(str(p).encode()).hexdigest()[:12]
    stem = f"{p.name}-{digest}"
    folder = projects_dir()
    return [folder / f"{stem}{'' if k == 1 else f'-{k}'}.pvproj.h5" for k in range(1, limit + 1)]


class SourceProject:
    """The project file of the open source, created on its first change.

    ``report(line)`` receives every problem and recovery note (one line each);
    ``on_project(project or None)`` is called when a project is opened, created or closed.
    ``session`` is the session to edit; it is replaced by :meth:`open`. This object is the
    session's only listener (:class:`~polypviewer.core.edits.SessionListener`): the project
    never installs itself over it, so nothing needs re-installing after a save.
    """

    def __init__(self, report: Callable[[str], None],
                 on_project: Callable[[Project | None], None] | None = None) -> None:
        self.report = report
        self.on_project = on_project or (lambda project: None)
        self.project: Project | None = None
        self.session = EditSession()
        self.failed = False  # creating the project failed: reported once, not retried per change
        self._path: str | None = None
        self._kind = ""
        self._n = 0
        self._candidates: list[Path] = []

    # -- open / close -------------------------------------------------------------------------
    def open(self, path: str | Path, n_frames: int, kind: str = "") -> EditSession:
        """Close the current project and take ``path``'s: opened if one exists (its session
        returned), else a new empty session whose first change creates the file."""
        self.close()
        self._path, self._n, self._kind = str(path), int(n_frames), str(kind)
        self.session = EditSession()
        self.failed = False
        self._candidates = []
        try:
            self._candidates = project_candidates(path)
        except OSError as exc:
            self.report(f"{path}: no folder for its project ({exc}); edits will not be saved")
        for candidate in self._candidates:
            if not candidate.exists():
                continue
            try:
                project = Project.open(candidate)
            except Exception as exc:  # noqa: BLE001 - whatever happened, the work must go somewhere
                text = str(exc) if isinstance(exc, PolypviewerError) else \
                    f"{candidate}: cannot open the project ({type(exc).__name__}: {describe_exception(exc)})"
                self.report(f"{text} (left untouched; this session uses a new project file)")
                continue
            reason = project.source.mismatch(path)
            if reason is not None or project.source.n_frames not in (0, self._n):
                project.close()
                self.report(f"{candidate}: belongs to another version of this source "
                            f"({reason or 'frame count differs'}); left untouched")
                continue
            self._adopt(project)
            break
        self.session.listener = self
        return self.session

    def _adopt(self, project: Project) -> None:
        self.project = project
        self.session = project.session
        rec = project.recovery
        if rec.recovered:
            self.report(f"{project.path}: recovered {rec.replayed} unsaved change(s) of a previous run")
        damage = rec.describe()  # a damaged journal: which changes were lost, where the copy is
        if damage:
            self.report(f"{project.journal_path}: {damage}")
        for aside in rec.moved_aside:
            self.report(f"{aside}: a journal that did not belong to this project was kept aside")
        self.on_project(project)

    def ensure(self) -> Project | None:
        """The project of the open source, created now if it does not exist yet (None when
        no source is open or it cannot be created; the reason was reported once)."""
        if self.project is not None:
            return self.project
        if self._path is None or self.failed:
            return None
        for path in self._candidates:
            if path.exists():
                continue
            try:
                ref = SourceRef.from_path(self._path, kind=self._kind, n_frames=self._n)
                # The session already holds this first change: the project writes it into the
                # new file and journals what follows.
                project = Project.create(path, ref, session=self.session)
            except (ProjectError, OSError) as exc:
                self.report(f"{exc}; edits are kept in memory only")
                break
            finally:
                self.session.listener = self  # the one listener stays this object
            self.project = project
            self.on_project(project)
            return project
        self.failed = True
        return None

    def save(self) -> Path | None:
        """Fold the journal into the project file; its path, or None (nothing to save, or the
        failure was reported)."""
        if self.project is None:
            self.report("nothing to save yet: the project is created with the first edit")
            return None
        try:
            self.project.save()
        except PolypviewerError as exc:
            self.report(str(exc))
            return None
        return self.project.path

    def close(self) -> None:
        """Close the project (its journal folded into the file); later changes are not persisted."""
        if self.session.listener is self:
            self.session.listener = None
        if self.project is not None:
            try:
                self.project.close()
            except PolypviewerError as exc:
                self.report(str(exc))
            self.project = None
            self.on_project(None)

    # -- the session's listener ------------------------------------------------------------------
    def _persist(self, write: Callable[[Project], None]) -> None:
        project = self.ensure()
        if project is None:
            return
        try:
            write(project)
        except PolypviewerError as exc:
            self.report(f"{exc} — {NOT_SAVED}")

    def frame_started(self, frame: int, edits: FrameEdits) -> None:
        self._persist(lambda p: p.frame_started(frame, edits))

    def mask_changed(self, frame: int, diff: Diff) -> None:
        self._persist(lambda p: p.mask_changed(frame, diff))

    def state_changed(self, frame: int, state: ReviewState) -> None:
        self._persist(lambda p: p.state_changed(frame, state))
