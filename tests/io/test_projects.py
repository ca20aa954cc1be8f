"""The app's project lifecycle without Qt (io/projects.py): which file, lazy create, one
listener that survives saves, failures as one reported line."""

from __future__ import annotations

import numpy as np
import pytest

from polypviewer.core.edits import ReviewState
from polypviewer.io.projects import NOT_SAVED, SourceProject, project_candidates
from polypviewer.io.store import Project


@pytest.fixture
def source(tmp_path, monkeypatch):
    monkeypatch.setenv("POLYPVIEWER_PROJECTS", str(tmp_path / "projects"))
    path = tmp_path / "clip.mp4"
    path.write_bytes(b"\0" * 1000)
    return path


def _keeper():
    lines: list[str] = []
    seen: list[object] = []
    return SourceProject(lines.append, seen.append), lines, seen


def test_candidates_live_in_the_projects_folder_named_after_the_source(source, tmp_path):
    c = project_candidates(source, limit=3)
    assert [p.parent for p in c] == [tmp_path / "projects"] * 3
    assert c[0].name.startswith("clip.mp4-") and c[0].name.endswith(".pvproj.h5")
    assert c[1].name.endswith("-2.pvproj.h5") and c[2].name.endswith("-3.pvproj.h5")
    assert project_candidates(source) == project_candidates(str(source))


def test_looking_writes_nothing_and_the_first_change_creates_the_project(source, tmp_path):
    keeper, lines, seen = _keeper()
    session = keeper.open(source, 3, "video")
    assert keeper.project is None and not list((tmp_path / "projects").iterdir())
    edits = session.start(1, np.zeros((20, 30), bool), model_version="v", name="f1")
    assert keeper.project is not None and keeper.project.path == project_candidates(source)[0]
    assert seen == [keeper.project] and lines == []
    edits.begin_stroke()
    edits.dab(10, 10, 3, True)
    edits.end_stroke()
    # a save compacts the journal; the session's one listener is still the keeper after it
    assert keeper.save() == keeper.project.path
    assert session.listener is keeper
    session.set_state(2, ReviewState.FLAGGED)  # a change after the save still reaches the file
    want = edits.mask.copy()
    keeper.close()
    assert seen[-1] is None and session.listener is None
    with Project.open(project_candidates(source)[0]) as p:
        np.testing.assert_array_equal(p.session.get(1).mask, want)
        assert p.session.state(2) == ReviewState.FLAGGED and p.session.state(1) == ReviewState.CORRECTED


def test_reopening_the_source_opens_its_project(source):
    keeper, _, _ = _keeper()
    keeper.open(source, 3).set_state(0, ReviewState.FLAGGED)
    keeper.close()
    again, lines, seen = _keeper()
    session = again.open(source, 3)
    assert again.project is not None and seen == [again.project] and lines == []
    assert session.state(0) == ReviewState.FLAGGED and session.listener is again
    again.close()


def test_a_damaged_project_is_left_untouched_and_the_work_goes_to_the_next_name(source):
    first, second = project_candidates(source)[:2]
    first.write_bytes(b"not HDF5")
    keeper, lines, _ = _keeper()
    session = keeper.open(source, 3)
    assert len(lines) == 1 and str(first) in lines[0] and "left untouched" in lines[0]
    session.set_state(0, ReviewState.FLAGGED)
    assert keeper.project is not None and keeper.project.path == second
    assert first.read_bytes() == b"not HDF5"
    keeper.close()


def test_another_version_of_the_source_is_not_adopted(source):
    keeper, _, _ = _keeper()
    keeper.open(source, 3).set_state(0, ReviewState.FLAGGED)
    keeper.close()
    other, lines, _ = _keeper()
    other.open(source, 5)  # the frame count differs
    assert other.project is None and "another version" in lines[0]
    other.close()


def test_a_failed_write_is_one_line_and_editing_goes_on(source, monkeypatch):
    keeper, lines, _ = _keeper()
    session = keeper.open(source, 3)
    session.set_state(0, ReviewState.FLAGGED)
    project = keeper.project

    def full_disk(*args, **kwargs):
        from polypviewer.io.store import ProjectError

        raise ProjectError("cannot write the journal (no space left)", project.journal_path)

    monkeypatch.setattr(project, "state_changed", full_disk)
    session.set_state(1, ReviewState.FLAGGED)  # no exception reaches the caller
    assert session.state(1) == ReviewState.FLAGGED
    assert len(lines) == 1 and NOT_SAVED in lines[0] and "\n" not in lines[0]
    monkeypatch.undo()
    keeper.close()


def test_no_folder_for_projects_is_reported_once(source, tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    monkeypatch.setenv("POLYPVIEWER_PROJECTS", str(blocker))
    keeper, lines, _ = _keeper()
    session = keeper.open(source, 3)
    session.set_state(0, ReviewState.FLAGGED)
    session.set_state(1, ReviewState.FLAGGED)
    assert keeper.project is None and len(lines) == 1 and "edits will not be saved" in lines[0]


def test_a_project_made_over_a_session_writes_what_it_holds(tmp_path, source):
    """``Project.create(session=...)``: the edits made before the file existed are in it."""
    from polypviewer.core.edits import EditSession
    from polypviewer.io.store import SourceRef

    session = EditSession()
    session.start(0, np.eye(8, dtype=bool), model_version="v")
    session.set_state(0, ReviewState.ACCEPTED)
    path = tmp_path / "p.pvproj.h5"
    with Project.create(path, SourceRef.from_path(source), session=session) as p:
        assert p.session is session and session.listener is p
    assert session.listener is None  # closed: detached
    with Project.open(path) as p:
        np.testing.assert_array_equal(p.session.get(0).mask, np.eye(8, dtype=bool))
        assert p.session.state(0) == ReviewState.ACCEPTED


def test_a_callers_listener_survives_compaction(tmp_path, source):
    """The project installs itself once; a save never puts it back over the caller's listener."""
    from polypviewer.core.edits import EditSession
    from polypviewer.io.store import SourceRef

    class Forward:
        def __init__(self, project):
            self.project, self.calls = project, 0

        def frame_started(self, frame, edits):
            self.calls += 1
            self.project.frame_started(frame, edits)

        def mask_changed(self, frame, diff):
            self.calls += 1
            self.project.mask_changed(frame, diff)

        def state_changed(self, frame, state):
            self.calls += 1
            self.project.state_changed(frame, state)

    with Project.create(tmp_path / "p.pvproj.h5", SourceRef.from_path(source), session=EditSession()) as p:
        fwd = p.session.listener = Forward(p)
        p.session.set_state(0, ReviewState.FLAGGED)
        p.save()
        assert p.session.listener is fwd
        p.session.set_state(1, ReviewState.FLAGGED)
        assert fwd.calls == 2
    with Project.open(tmp_path / "p.pvproj.h5") as p:
        assert p.session.state(1) == ReviewState.FLAGGED
