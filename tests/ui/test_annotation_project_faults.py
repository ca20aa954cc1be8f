"""The review window when its project cannot be opened or its journal is damaged: the user
is told in one line and the work still goes to a project file (never edited into nothing)."""

from __future__ import annotations

import os

import numpy as np

from polypviewer.core.edits import ReviewState

from .conftest import _open  # kvasir3: a fixture there


def test_an_unexpected_error_opening_the_project_still_saves_the_work_elsewhere(
        open_window, qtbot, tiny_predictor, kvasir3, monkeypatch):
    from polypviewer.io.projects import project_candidates
    from polypviewer.io.store import Project, SourceRef

    first = project_candidates(kvasir3)[0]
    Project.create(first, SourceRef.from_path(kvasir3)).close()
    before = first.read_bytes()

    def broken_open(path, **kw):  # an error the store did not turn into a ProjectError
        raise RuntimeError("H5Aread failed")

    monkeypatch.setattr(Project, "open", broken_open)
    win = open_window(tiny_predictor)
    c = win.annotation
    _open(qtbot, win, kvasir3)
    assert any(str(first) in e and "RuntimeError" in e and "new project file" in e for e in win.errors), win.errors
    assert all("\n" not in e for e in win.errors)
    assert c.set_state(ReviewState.FLAGGED)
    assert c.project is not None and c.project.path == project_candidates(kvasir3)[1]  # the work is saved
    assert c.project.journal_path.stat().st_size > 48
    assert first.read_bytes() == before
    win.close()


def test_a_damaged_journal_is_recovered_and_the_lost_change_named(open_window, qtbot, tiny_predictor, kvasir3):
    from polypviewer.io import journal as jr
    from polypviewer.io.projects import project_candidates
    from polypviewer.io.sources import open_source
    from polypviewer.io.store import Project, SourceRef

    path = project_candidates(kvasir3)[0]
    with open_source(kvasir3) as src:
        shape = src.frame(0).shape[:2]
    p = Project.create(path, SourceRef.from_path(kvasir3))
    for f in (0, 1):
        e = p.start_frame(f, np.zeros(shape, bool), model_version="test")
        e.polygon([(5, 5), (40, 5), (40, 30)], True)
    p._writer._f.close()
    os.close(p._lock_fd)
    data = bytearray(p.journal_path.read_bytes())
    offsets = jr.read_journal(p.journal_path).offsets
    data[offsets[1] + 40] ^= 0x04  # frame 0's polygon (record 2 of 4)
    p.journal_path.write_bytes(bytes(data))

    win = open_window(tiny_predictor)
    c = win.annotation
    _open(qtbot, win, kvasir3)
    assert c.project is not None and c.project.path == path
    lost = [e for e in win.errors if "LOST" in e]
    assert len(lost) == 1 and "frame 0?" in lost[0] and "recovered 3 change(s)" in lost[0] and "\n" not in lost[0]
    assert not c.session.get(0).mask.any() and c.session.get(1).mask.any()
    win.close()
