"""The PROPAGATED review state (issue 13 §2): set with the mask in one change, undone with it,
left by an edit (CORRECTED) or an accept, and kept by the project file (HDF5 and journal)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from polypviewer.core.edits import EditSession, ReviewState
from polypviewer.io.store import Project, SourceRef


class Log:
    def __init__(self, session):
        self.session, self.events = session, []

    def frame_started(self, frame, edits):
        self.events.append(("start", frame))

    def mask_changed(self, frame, diff):
        self.events.append(("mask", frame, self.session.state(frame)))

    def state_changed(self, frame, state):
        self.events.append(("state", frame, state))


def _masks():
    model = np.zeros((20, 30), bool)
    model[5:10, 5:10] = True
    carried = np.zeros_like(model)
    carried[6:14, 8:16] = True
    return model, carried


def test_propagate_sets_mask_and_state_in_one_change_and_undo_restores_both():
    s = EditSession()
    log = Log(s)
    s.listener = log
    model, carried = _masks()
    e = s.start(3, model)
    stroke = s.propagate(3, carried)
    assert stroke is not None and stroke.label == "propagate"
    assert (s.mask(3) == carried).all() and s.state(3) == ReviewState.PROPAGATED
    assert log.events == [("start", 3), ("mask", 3, ReviewState.PROPAGATED)]  # one record: mask + state
    e.revert(stroke)
    assert (s.mask(3) == model).all() and s.state(3) == ReviewState.UNREVIEWED
    s.apply_propagation(3, stroke)  # redo
    assert (s.mask(3) == carried).all() and s.state(3) == ReviewState.PROPAGATED
    e.revert(stroke)
    # propagating a mask the frame already has only sets the state
    assert s.propagate(3, model) is None and s.state(3) == ReviewState.PROPAGATED
    with pytest.raises(ValueError, match="no mask yet"):
        s.propagate(4, carried)


def test_an_edit_makes_a_propagated_frame_corrected_and_undo_gives_propagated_back():
    s = EditSession()
    model, carried = _masks()
    e = s.start(0, model)
    s.propagate(0, carried)
    edit = e.clear()
    assert s.state(0) == ReviewState.CORRECTED
    e.revert(edit)
    assert s.state(0) == ReviewState.PROPAGATED
    s.set_state(0, ReviewState.ACCEPTED)
    assert s.state(0) == ReviewState.ACCEPTED and (s.mask(0) == carried).all()
    edit = e.grow(2)
    assert s.state(0) == ReviewState.CORRECTED
    e.revert(edit)
    assert s.state(0) == ReviewState.ACCEPTED
    assert s.with_state(ReviewState.PROPAGATED) == []


def test_the_project_file_keeps_propagated_frames(tmp_path):
    video = tmp_path / "clip.bin"
    video.write_bytes(os.urandom(4096))
    src = SourceRef.from_path(video, kind="video", n_frames=10)
    model, carried = _masks()
    path = tmp_path / "p.pvproj.h5"
    p = Project.create(path, src)
    p.start_frame(1, model, model_version="v", threshold=0.5, name="f1")
    p.start_frame(2, model, model_version="v", threshold=0.5, name="f2")
    p.session.propagate(1, carried)
    p.session.propagate(2, model)  # state only (a separate record)
    p.compact()
    p.start_frame(5, model, model_version="v", threshold=0.5, name="f5")
    p.session.propagate(5, carried)  # in the journal only, after the compaction
    p._writer._f.close()  # what a kill leaves: frame 5 only in the journal
    os.close(p._lock_fd)
    want = {1: ReviewState.PROPAGATED, 2: ReviewState.PROPAGATED, 5: ReviewState.PROPAGATED}
    with Project.open(path) as q:  # replayed from the journal, then folded into the file on close
        assert q.recovery.recovered and q.states() == want
        assert (q.masks()[1] == carried).all() and (q.masks()[5] == carried).all()
    with Project.open(path) as r:  # read from the HDF5 file alone
        assert not r.recovery.recovered and r.states() == want
