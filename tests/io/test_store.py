"""The project file: reopen exactness, recovery of a killed run, torn journals, refusals."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import h5py
import numpy as np
import pytest

from polypviewer.core.edits import ReviewState
from polypviewer.io import journal as jr
from polypviewer.io.store import SCHEMA_VERSION, Project, ProjectError, SourceRef


@pytest.fixture
def source(tmp_path: Path) -> SourceRef:
    video = tmp_path / "clip.bin"
    video.write_bytes(np.random.default_rng(0).integers(0, 255, 3 * (1 << 20) + 17, np.uint8).tobytes())
    return SourceRef.from_path(video, kind="video", n_frames=100)


def _model_mask(seed: int, h: int = 60, w: int = 80) -> np.ndarray:
    m = np.zeros((h, w), bool)
    rng = np.random.default_rng(seed)
    y, x = rng.integers(10, h - 10), rng.integers(10, w - 10)
    m[y - 8:y + 8, x - 8:x + 8] = True
    return m


def _edit(project: Project, frame: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    e = project.start_frame(frame, _model_mask(frame), model_version=f"v{frame}", threshold=0.5, name=f"f{frame}")
    e.begin_stroke()
    pts = rng.uniform(0, 80, size=(5, 2))
    e.dab(*pts[0], 3, True)
    for a, b in zip(pts[:-1], pts[1:], strict=True):
        e.line(*a, *b, 3, bool(seed % 2))
    e.end_stroke()
    e.polygon(rng.uniform(0, 60, size=(4, 2)), False)
    assert 0 < e.mask.sum() < e.mask.size / 2  # a mask that grow/clear/fill really change


def _abandon(project: Project) -> None:
    """What SIGKILL leaves: the journal as written so far, no compaction, the lock released."""
    project._writer._f.close()
    os.close(project._lock_fd)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_reopen_restores_masks_states_and_metadata_exactly(tmp_path, source):
    path = tmp_path / "p.pvproj.h5"
    with Project.create(path, source) as p:
        for f in (0, 5, 7):
            _edit(p, f, f)
        p.set_state(5, ReviewState.ACCEPTED)
        p.set_state(9, ReviewState.FLAGGED)
        want_masks, want_states = p.masks(), p.states()
        want_stats = {f: p.session.stats(f) for f in want_masks}
    with Project.open(path) as q:
        assert not q.recovery.recovered
        assert q.source == source
        assert q.states() == want_states == {0: ReviewState.CORRECTED, 5: ReviewState.ACCEPTED,
                                             7: ReviewState.CORRECTED, 9: ReviewState.FLAGGED}
        got = q.masks()
        assert got.keys() == want_masks.keys()
        for f in got:
            assert np.array_equal(got[f], want_masks[f])
            assert np.array_equal(q.session.get(f).model_mask, _model_mask(f))
            assert q.session.get(f).model_version == f"v{f}"
            assert q.session.stats(f) == want_stats[f]
            assert q.session.names[f] == f"f{f}"
    with h5py.File(path, "r") as h:  # the documented layout
        assert h.attrs["format"] == "polypviewer-project" and h.attrs["schema_version"] == SCHEMA_VERSION
        assert h["source"].attrs["content_hash"] == source.content_hash
        ds = h["frames/000005/mask"]
        assert ds.compression == "gzip" and ds.chunks is not None and ds.attrs["width"] == 80
        unpacked = np.unpackbits(ds[()], axis=1, count=80).astype(bool)  # the documented encoding
        assert np.array_equal(unpacked, want_masks[5])
        assert h["frames/000005"].attrs["state_name"] == "accepted"
        assert "pixels_changed" in h["frames/000007"].attrs


def test_a_killed_run_is_recovered_on_open(tmp_path, source):
    path = tmp_path / "p.h5"
    p = Project.create(path, source)
    _edit(p, 1, 1)
    p.compact()
    _edit(p, 2, 2)  # only in the journal
    e = p.session.get(1)
    s = e.keep_largest() or e.grow(2)
    e.revert(s)  # an undo is journaled like any change
    p.set_state(1, ReviewState.FLAGGED)
    want = p.masks()
    _abandon(p)
    with Project.open(path) as q:
        assert q.recovery.replayed > 0 and q.recovery.torn_bytes == 0
        assert q.states()[1] == ReviewState.FLAGGED
        for f, m in want.items():
            assert np.array_equal(q.masks()[f], m)
        assert q.journal_path.stat().st_size == jr.HEADER_SIZE  # recovered work folded into the file
    with Project.open(path) as r:
        assert not r.recovery.recovered and np.array_equal(r.masks()[2], want[2])


def test_a_torn_last_record_is_dropped_and_writing_goes_on(tmp_path, source):
    path = tmp_path / "p.h5"
    p = Project.create(path, source)
    _edit(p, 0, 0)
    p.compact()  # the torn record is then the journal's only one: nothing to replay, tail cut
    want = p.masks()
    e = p.session.get(0)
    size_before = p.journal_path.stat().st_size
    e.clear()  # this record will be torn
    full = p.journal_path.read_bytes()
    _abandon(p)
    p.journal_path.write_bytes(full[:size_before + (len(full) - size_before) // 2])
    q = Project.open(path)
    assert q.recovery.torn_bytes > 0 and not q.recovery.recovered
    assert np.array_equal(q.masks()[0], want[0])
    q.session.get(0).grow(1)
    want2 = q.masks()
    _abandon(q)
    with Project.open(path) as r:
        assert np.array_equal(r.masks()[0], want2[0])


def test_a_corrupt_record_ends_replay_at_the_last_good_one(tmp_path, source):
    path = tmp_path / "p.h5"
    p = Project.create(path, source)
    _edit(p, 0, 0)
    good = p.journal_path.stat().st_size
    want = p.masks()
    p.session.get(0).clear()
    _abandon(p)
    data = bytearray(p.journal_path.read_bytes())
    data[good + 12] ^= 0xFF  # flip a payload byte: CRC fails
    p.journal_path.write_bytes(bytes(data))
    contents = jr.read_journal(p.journal_path)
    assert contents.valid_bytes == good and contents.torn_bytes == len(data) - good
    with Project.open(path) as q:
        assert np.array_equal(q.masks()[0], want[0])


def test_journal_of_the_previous_generation_is_not_replayed_twice(tmp_path, source):
    """A kill after os.replace but before the new journal: the old journal is already inside."""
    path = tmp_path / "p.h5"
    p = Project.create(path, source)
    _edit(p, 3, 3)
    stale = p.journal_path.read_bytes()
    p.compact()
    p.session.get(3).clear()  # after the compaction: the stale journal must not undo this...
    p.compact()
    want = p.masks()
    _abandon(p)
    # ...but we restore a journal two generations old: foreign, so it is moved aside instead.
    p.journal_path.write_bytes(stale)
    with Project.open(path) as q:
        assert np.array_equal(q.masks()[3], want[3])
        assert len(q.recovery.moved_aside) == 1 and Path(q.recovery.moved_aside[0]).read_bytes() == stale

    q2 = Project.open(path)
    q2.session.get(3).fill(0, 0, True)
    parent_journal = q2.journal_path.read_bytes()
    q2.compact()
    want = q2.masks()
    _abandon(q2)
    q2.journal_path.write_bytes(parent_journal)  # exactly the kill window
    with Project.open(path) as q3:
        assert q3.recovery.stale_records > 0 and not q3.recovery.recovered
        assert np.array_equal(q3.masks()[3], want[3])


def test_create_never_overwrites(tmp_path, source):
    path = tmp_path / "p.h5"
    path.write_bytes(b"someone's file")
    with pytest.raises(ProjectError, match="already exists"):
        Project.create(path, source)
    assert path.read_bytes() == b"someone's file"


@pytest.mark.parametrize("content", [b"", b"not hdf5 at all" * 100, b"\x89HDF\r\n\x1a\n" + b"\0" * 500])
def test_corrupt_file_gives_one_line_error_and_is_untouched(tmp_path, content):
    path = tmp_path / "broken.h5"
    path.write_bytes(content)
    before = (_digest(path), path.stat().st_mtime_ns)
    with pytest.raises(ProjectError) as err:
        Project.open(path)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(str(path)) and "HDF5" in msg
    assert (_digest(path), path.stat().st_mtime_ns) == before


def test_foreign_hdf5_and_newer_schema_are_refused_untouched(tmp_path, source):
    foreign = tmp_path / "model.h5"
    with h5py.File(foreign, "w") as h:
        h["weights"] = np.arange(10)
    before = _digest(foreign)
    with pytest.raises(ProjectError, match="not a polypviewer project"):
        Project.open(foreign)
    assert _digest(foreign) == before and not Path(str(foreign) + ".journal").exists()

    newer = tmp_path / "newer.h5"
    Project.create(newer, source).close()
    with h5py.File(newer, "a") as h:
        h.attrs["schema_version"] = SCHEMA_VERSION + 1
    before = _digest(newer)
    with pytest.raises(ProjectError, match="newer polypviewer"):
        Project.open(newer)
    assert _digest(newer) == before


def test_a_project_cannot_be_opened_twice(tmp_path, source):
    path = tmp_path / "p.h5"
    with Project.create(path, source):
        with pytest.raises(ProjectError, match="open in another"):
            Project.open(path)
    Project.open(path).close()


def test_compaction_copies_unchanged_frames_and_keeps_them_exact(tmp_path, source):
    path = tmp_path / "p.h5"
    with Project.create(path, source) as p:
        for f in range(4):
            _edit(p, f, f)
        p.save()
        p.session.get(2).clear()
        p.set_state(0, ReviewState.FLAGGED)
        p.save()
        want, states = p.masks(), p.states()
    with Project.open(path) as q:
        assert q.states() == states
        assert all(np.array_equal(q.masks()[f], want[f]) for f in want)


def test_source_ref_detects_a_changed_source(tmp_path, source):
    assert source.mismatch() is None
    with open(source.path, "r+b") as f:
        f.seek(5)
        f.write(b"X")
    assert "changed" in source.mismatch()
    os.remove(source.path)
    assert "not found" in source.mismatch()


def test_items_yields_name_image_and_corrected_mask_for_chosen_states(tmp_path, demo_set):
    from polypviewer.io.sources import open_source

    ref = SourceRef.from_path(demo_set, kind="kvasir", n_frames=12)
    with open_source(demo_set) as src:
        shapes = [src.frame(i).shape[:2] for i in range(3)]
        names = [src.name(i) for i in range(3)]
    with Project.create(tmp_path / "neg.h5", ref) as p:
        for i, shape in enumerate(shapes):
            e = p.start_frame(i, np.zeros(shape, bool))
            if i != 1:
                e.polygon([(5, 5), (40, 5), (40, 30)], True)
        p.set_state(1, ReviewState.ACCEPTED)
        p.set_state(2, ReviewState.FLAGGED)
        items = list(p.items())
        assert [n for n, _, _ in items] == [names[0], names[1]]
        name, image, mask = items[0]
        assert image.shape == shapes[0] + (3,) and image.dtype == np.uint8
        assert mask.shape == shapes[0] and mask.sum() > 0 and not items[1][2].any()
        assert [n for n, _, _ in p.items([ReviewState.FLAGGED])] == [names[2]]


def test_a_well_formed_record_that_fits_no_frame_is_skipped_not_fatal(tmp_path, source):
    path = tmp_path / "p.h5"
    p = Project.create(path, source)
    _edit(p, 0, 0)
    want = p.masks()
    p._writer.append(jr.StrokeRecord(42, 0, 0, np.ones((3, 3), bool), 2))
    p._writer.append(jr.StrokeRecord(0, 59, 79, np.ones((5, 5), bool), 2))
    p.set_state(0, ReviewState.FLAGGED)
    _abandon(p)
    with Project.open(path) as q:
        assert q.recovery.skipped == 2 and q.states()[0] == ReviewState.FLAGGED
        assert np.array_equal(q.masks()[0], want[0])


def test_a_failed_compaction_keeps_the_old_file_and_journal_working(tmp_path, source, monkeypatch):
    path = tmp_path / "p.h5"
    p = Project.create(path, source)
    _edit(p, 0, 0)
    before = _digest(path)

    def refuse(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("polypviewer.io.store.os.replace", refuse)
    with pytest.raises(ProjectError, match="No space left"):
        p.compact()
    monkeypatch.undo()
    assert _digest(path) == before and not list(tmp_path.glob(".polypviewer-tmp-*"))
    p.session.get(0).grow(1)  # editing goes on, still journaled
    want = p.masks()
    _abandon(p)
    with Project.open(path) as q:
        assert q.recovery.replayed > 0 and np.array_equal(q.masks()[0], want[0])
