"""Fault injection on the project file: a full disk, single-byte damage of the journal and of
the HDF5 file, planted links, and values that must come back exactly.

Each test says which bug it pins down. Injected faults are real OS errors raised where the
store writes (``os.write``, the file-size limit, the free-space query), never a stub of
the store itself.
"""

from __future__ import annotations

import errno
import hashlib
import os
import resource
import shutil
import signal
import struct
import zlib
from pathlib import Path

import h5py
import numpy as np
import pytest

from polypviewer.core.edits import ReviewState
from polypviewer.io import journal as jr
from polypviewer.io.store import Project, ProjectError, SourceRef

H, W = 24, 32


@pytest.fixture
def source(tmp_path: Path) -> SourceRef:
    video = tmp_path / "clip.bin"
    video.write_bytes(np.random.default_rng(0).integers(0, 255, 5000, np.uint8).tobytes())
    return SourceRef.from_path(video, kind="video", n_frames=50)


def _abandon(project: Project) -> None:
    """What SIGKILL leaves: the journal as written so far, no compaction, the lock released."""
    project._writer._f.close()
    os.close(project._lock_fd)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _snapshot(p: Project) -> dict:
    """Everything the project holds, comparable with ==."""
    s = p.session
    frames = {}
    for f, e in sorted(s.frames.items()):
        frames[f] = (e.mask.tobytes(), e.model_mask.tobytes(), e.mask.shape, e.model_version, e.threshold,
                     e.strokes, s.names.get(f))
    return {"source": p.source, "created": p.created, "frames": frames, "states": p.states()}


def _stroke(p: Project, frame: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    e = p.session.get(frame)
    assert e.replace(rng.random(e.mask.shape) < 0.5, "paint") is not None


def _small_project(path: Path, source: SourceRef, **kw) -> Project:
    p = Project.create(path, source, **kw)
    for f in range(3):
        p.start_frame(f, np.random.default_rng(f).random((H, W)) < 0.3, model_version=f"clinic-v{f + 1}",
                      threshold=0.37 + f / 10, name=f"frame_{f:04d}")
        _stroke(p, f, 100 + f)
    p.set_state(1, ReviewState.ACCEPTED)
    p.set_state(7, ReviewState.FLAGGED)
    return p


# ---- 1. a full disk during a journal append ----------------------------------------------------

class _FullDisk:
    """``os.write`` on the journal's descriptor writes ``room`` more bytes, then fails ENOSPC
    (a partial write first, as a real file system does)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, project: Project, room: int) -> None:
        self.real = os.write
        self.fd = project._writer._f.fileno()
        self.room = room
        self.failures = 0
        monkeypatch.setattr(os, "write", self)

    def __call__(self, fd: int, data) -> int:
        if fd != self.fd:
            return self.real(fd, data)
        if self.room <= 0:
            self.failures += 1
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        n = self.real(fd, bytes(memoryview(data)[:self.room]))
        self.room -= n
        return n


def test_a_full_disk_append_leaves_the_journal_at_its_last_good_record_and_loses_nothing(
        tmp_path, source, monkeypatch):
    path = tmp_path / "p.pvproj.h5"
    p = Project.create(path, source)
    p.start_frame(0, np.zeros((200, 300), bool), model_version="m", threshold=0.5)
    _stroke(p, 0, 1)
    good = p.journal_path.read_bytes()
    full = _FullDisk(monkeypatch, p, room=5000)  # the next record (~10 kB of noise) does not fit
    with pytest.raises(ProjectError) as err:
        _stroke(p, 0, 2)
    msg = str(err.value)
    assert "\n" not in msg and str(p.journal_path) in msg and "No space left" in msg and "NOT saved" in msg
    assert p.journal_path.read_bytes() == good  # cut back to the last good record
    with pytest.raises(ProjectError, match="2 change"):  # still full: refused loudly, kept pending
        p.set_state(0, ReviewState.FLAGGED)
    assert p.journal_path.read_bytes() == good and full.failures >= 1
    monkeypatch.undo()  # space is back
    _stroke(p, 0, 3)  # acknowledged: written with the two pending ones before it
    want = _snapshot(p)
    _abandon(p)
    with Project.open(path) as q:
        assert q.recovery.replayed == 5 and not q.recovery.damaged
        assert _snapshot(q) == want


def test_a_partial_write_at_the_file_size_limit_is_cut_back(tmp_path, source):
    """The OS's own short write + EFBIG (RLIMIT_FSIZE): later acknowledged appends must not sit
    behind torn bytes (before the fix the reader stopped there and dropped them)."""
    path = tmp_path / "p.pvproj.h5"
    p = Project.create(path, source)
    p.start_frame(0, np.zeros((200, 300), bool), threshold=0.5)
    good_size = p.journal_path.stat().st_size
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (good_size + 4096, hard))
    try:
        with pytest.raises(ProjectError, match="journal"):
            _stroke(p, 0, 1)  # ~10 kB record: 4 kB get written, then EFBIG
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old_handler)
    assert p.journal_path.stat().st_size == good_size
    p.set_state(0, ReviewState.FLAGGED)
    _stroke(p, 0, 2)
    want = _snapshot(p)
    _abandon(p)
    with Project.open(path) as q:
        assert _snapshot(q) == want and q.recovery.torn_bytes == 0 and not q.recovery.damaged


def test_closing_on_a_full_disk_says_what_is_lost(tmp_path, source, monkeypatch):
    path = tmp_path / "p.pvproj.h5"
    p = Project.create(path, source)
    p.start_frame(0, np.zeros((H, W), bool))
    _FullDisk(monkeypatch, p, room=0)
    with pytest.raises(ProjectError):
        _stroke(p, 0, 1)
    monkeypatch.setattr(shutil, "disk_usage", lambda _: shutil._ntuple_diskusage(10**9, 10**9, 10))
    with pytest.raises(ProjectError, match="1 change.*lost") as err:
        p.close()
    assert "\n" not in str(err.value)


# ---- 2. one bad byte in the journal ---------------------------------------------------------

def _journal_with_records(tmp_path: Path, source: SourceRef) -> tuple[Project, Path, bytes, jr.JournalContents]:
    path = tmp_path / "j.pvproj.h5"
    p = Project.create(path, source, fsync=False)
    for f in range(4):
        p.start_frame(f, np.zeros((8, 12), bool), model_version="m", threshold=0.5, name=f"n{f}")
        _stroke(p, f, f)
        p.set_state(f, ReviewState.FLAGGED if f % 2 else ReviewState.ACCEPTED)
    data = p.journal_path.read_bytes()
    contents = jr.parse_journal(data)
    assert len(contents.records) == 12 and not contents.damaged
    return p, path, data, contents


def test_every_single_byte_flip_of_a_journal_costs_at_most_the_record_it_hits(tmp_path, source):
    p, _, data, intact = _journal_with_records(tmp_path, source)
    p.close()
    bounds = list(intact.offsets) + [len(data)]
    payloads = [jr.encode(r) for r in intact.records]
    lost_total = 0
    for pos in range(len(data)):
        for pattern in (0xFF, 0x01):
            flipped = bytearray(data)
            flipped[pos] ^= pattern
            got = jr.parse_journal(bytes(flipped))
            assert got.generation == intact.generation
            kept = [jr.encode(r) for r in got.records]
            hit = next((i for i in range(len(payloads)) if bounds[i] <= pos < bounds[i + 1]), None)
            want = [b for i, b in enumerate(payloads) if i != hit]
            assert kept == want, f"flip at {pos}: kept {len(kept)} of the {len(want)} intact records"
            assert got.damaged, f"flip at {pos} went unnoticed"
            assert any(d.offset <= pos < d.offset + d.length for d in got.damaged)
            lost_total += len(payloads) - len(kept)
            if hit is not None and pos >= bounds[hit] + 16 + 5:  # the record's kind and frame are intact
                assert got.damaged[-1].frame == intact.records[hit].frame
    assert lost_total <= 2 * (len(data) - jr.HEADER_SIZE)  # at most one record per flip


def test_a_damaged_journal_is_kept_aside_and_reported(tmp_path, source):
    p, path, data, intact = _journal_with_records(tmp_path, source)
    want_states = p.states()
    _abandon(p)
    hit = 4  # the stroke record of frame 1
    pos = intact.offsets[hit] + 30
    flipped = bytearray(data)
    flipped[pos] ^= 0x10
    p.journal_path.write_bytes(bytes(flipped))
    with Project.open(path) as q:
        rec = q.recovery
        assert rec.replayed == 11 and len(rec.damaged) == 1
        assert Path(rec.damaged_copy).read_bytes() == bytes(flipped)  # kept byte for byte
        line = rec.describe()
        assert "\n" not in line and "recovered 11 change(s)" in line
        assert f"byte {intact.offsets[hit]}" in line and "frame 1?" in line and rec.damaged_copy in line
        assert q.states() == want_states
        assert not q.session.get(1).mask.any() and q.session.get(2).mask.any()  # only frame 1's stroke lost
        assert q.journal_path.stat().st_size == jr.HEADER_SIZE  # folded into the file
    with Project.open(path) as r:  # reported once: the damage is not found again
        assert not r.recovery.damaged and r.recovery.describe() is None


def test_damage_at_the_end_is_never_cut_away_and_appends_go_on_after_it(tmp_path, source, monkeypatch):
    p, path, data, intact = _journal_with_records(tmp_path, source)
    want = _snapshot(p)
    _abandon(p)
    flipped = bytearray(data)
    flipped[intact.offsets[-1] + 2] ^= 0xFF  # the marker of the last record (frame 3's state)
    p.journal_path.write_bytes(bytes(flipped))
    monkeypatch.setattr(shutil, "disk_usage", lambda _: shutil._ntuple_diskusage(10**9, 10**9, 10))
    q = Project.open(path, fsync=False)  # no room to fold the recovery into the file
    assert q.recovery.save_error and "not enough free space" in q.recovery.describe()
    assert q.journal_path.read_bytes() == bytes(flipped)  # nothing cut
    q.set_state(3, ReviewState.CORRECTED)
    want["states"] = {**want["states"], 3: ReviewState.CORRECTED}
    _abandon(q)
    monkeypatch.undo()
    with Project.open(path) as r:
        assert _snapshot(r)["states"] == want["states"] and _snapshot(r)["frames"] == want["frames"]
        assert len(r.recovery.damaged) == 1


def _v1_journal(generation: bytes, records: list[bytes]) -> bytes:
    out = jr.MAGIC_V1 + generation
    for payload in records:
        out += struct.pack("<II", len(payload), zlib.crc32(payload)) + payload
    return out


def test_a_format_1_journal_is_still_read_with_its_threshold_as_set(tmp_path, source):
    path = tmp_path / "old.pvproj.h5"
    p = Project.create(path, source)
    gen = p.generation
    _abandon(p)
    mask = np.zeros((H, W), bool)
    mask[3:9, 4:20] = True
    base = (b"B" + struct.pack("<IIIf", 5, H, W, 0.37) + struct.pack("<H", 2) + b"m1" + struct.pack("<H", 1)
            + b"\0" + zlib.compress(np.packbits(np.zeros((H, W), bool)).tobytes(), 1))
    stroke = (b"S" + struct.pack("<IIIIIB", 5, 0, 0, H, W, int(ReviewState.CORRECTED))
              + zlib.compress(np.packbits(mask).tobytes(), 1))
    p.journal_path.write_bytes(_v1_journal(gen, [base, stroke]))
    with Project.open(path) as q:
        assert q.recovery.replayed == 2
        e = q.session.get(5)
        assert np.array_equal(e.mask, mask) and e.threshold == 0.37 and e.model_version == "m1"
        assert q.journal_path.read_bytes()[:8] == jr.MAGIC  # format 2 from now on
    with h5py.File(path, "r") as h:
        assert h["frames/000005"].attrs["threshold"] == 0.37


# ---- 3. a damaged project file: one ProjectError, never changed content ------------------

@pytest.mark.slow
def test_random_byte_flips_of_the_project_file_are_refused_or_harmless(tmp_path, source):
    path = tmp_path / "p.pvproj.h5"
    with _small_project(path, source):
        pass
    with Project.open(path) as p:
        want = _snapshot(p)
    data = path.read_bytes()
    rng = np.random.default_rng(2024)
    positions = rng.choice(len(data), size=min(200, len(data)), replace=False)
    refused = 0
    for k, pos in enumerate(positions):
        folder = tmp_path / f"flip{k}"
        folder.mkdir()
        target = folder / path.name
        flipped = bytearray(data)
        flipped[pos] ^= int(rng.integers(1, 256))
        target.write_bytes(bytes(flipped))
        try:
            with Project.open(target) as q:
                got = _snapshot(q)
        except ProjectError as err:
            refused += 1
            msg = str(err)
            assert "\n" not in msg and msg.startswith(str(target)), msg
            assert target.read_bytes() == bytes(flipped)  # kept as it was, never deleted
            continue
        assert got == want, f"flip at byte {pos} was accepted with changed content"
    print(f"{refused} of {len(positions)} flips refused, the rest read unchanged")
    assert refused > 0


def test_content_changed_behind_the_checksum_is_refused(tmp_path, source):
    path = tmp_path / "p.pvproj.h5"
    with _small_project(path, source):
        pass
    with h5py.File(path, "r") as h:  # what the file guarantees
        assert h.attrs["content_digest"].startswith("sha256:")
        assert all(h[f"frames/00000{f}/{d}"].fletcher32 for f in range(3) for d in ("mask", "model_mask"))
    with h5py.File(path, "a") as h:  # a valid HDF5 edit (HDF5's own checksums are rewritten)
        h["frames/000001"].attrs["model_version"] = "clinic-Z2"
    before = _sha(path)
    with pytest.raises(ProjectError, match="checksum") as err:
        Project.open(path)
    assert "\n" not in str(err.value) and _sha(path) == before


def test_a_file_without_the_digest_is_still_read_and_gets_one_when_saved(tmp_path, source):
    """Project files written before the digest and fletcher32 existed."""
    path = tmp_path / "p.pvproj.h5"
    with _small_project(path, source) as p:
        want = _snapshot(p)
    old = tmp_path / "old.pvproj.h5"
    with h5py.File(path, "r") as h, h5py.File(old, "w") as o:  # the layout before, no filters
        for k, v in h.attrs.items():
            if k != "content_digest":
                o.attrs[k] = v
        h.copy(h["source"], o, "source")
        for key, grp in h["frames"].items():
            g = o.create_group(f"frames/{key}")
            for k, v in grp.attrs.items():
                g.attrs[k] = v
            for name in ("mask", "model_mask"):
                if name in grp:
                    ds = g.create_dataset(name, data=grp[name][()], chunks=True, compression="gzip")
                    for k, v in grp[name].attrs.items():
                        ds.attrs[k] = v
    with Project.open(old) as q:
        assert _snapshot(q) == want
        q.set_state(0, ReviewState.FLAGGED)
    with h5py.File(old, "r") as h:
        assert "content_digest" in h.attrs and h["frames/000000/mask"].fletcher32
    with Project.open(old) as r:
        assert r.states()[0] == ReviewState.FLAGGED


# ---- 4. saving on a full disk ------------------------------------------------------------------

def test_a_save_without_room_is_refused_before_writing_and_the_journal_stays(tmp_path, source, monkeypatch):
    path = tmp_path / "p.pvproj.h5"
    p = _small_project(path, source)
    before = (_sha(path), p.journal_path.read_bytes())
    monkeypatch.setattr(shutil, "disk_usage", lambda _: shutil._ntuple_diskusage(10**9, 10**9, 5000))
    with pytest.raises(ProjectError, match="not enough free space") as err:
        p.save()
    assert "\n" not in str(err.value) and str(path) in str(err.value)
    assert (_sha(path), p.journal_path.read_bytes()) == before
    monkeypatch.undo()
    want = _snapshot(p)
    _abandon(p)
    with Project.open(path) as q:
        assert _snapshot(q) == want


def test_a_write_failing_mid_save_leaves_the_old_file_and_journal(tmp_path, source, monkeypatch):
    path = tmp_path / "p.pvproj.h5"
    p = _small_project(path, source)
    before = (_sha(path), p.journal_path.read_bytes())
    journal_fd = p._writer._f.fileno()
    real = os.write

    def full(fd, data):  # any file but the journal: the disk fills up after 1000 bytes
        if fd == journal_fd:
            return real(fd, data)
        if full.room <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        n = real(fd, bytes(memoryview(data)[:full.room]))
        full.room -= n
        return n

    full.room = 1000
    monkeypatch.setattr(os, "write", full)
    with pytest.raises(ProjectError, match="No space left") as err:
        p.save()
    monkeypatch.undo()
    assert "\n" not in str(err.value)
    assert (_sha(path), p.journal_path.read_bytes()) == before
    assert not list(tmp_path.glob(".polypviewer-tmp-*"))
    p.set_state(2, ReviewState.FLAGGED)  # editing goes on into the same journal
    want = _snapshot(p)
    _abandon(p)
    with Project.open(path) as q:
        assert _snapshot(q) == want


# ---- 6. planted links ------------------------------------------------------------------------

def test_planted_links_at_the_old_temporary_names_and_the_journal_are_never_written_through(tmp_path, source):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    path = tmp_path / "p.pvproj.h5"
    pid = os.getpid()
    for name in (f".{path.name}.tmp-{pid}", f"{path.name}.journal.tmp-{pid}"):
        (tmp_path / name).symlink_to(victim)
    with _small_project(path, source) as p:
        p.save()
    assert victim.read_text() == "precious"
    p.journal_path.unlink()
    p.journal_path.symlink_to(victim)  # a link where the journal goes
    with Project.open(path) as q:
        assert q.recovery.moved_aside and not q.journal_path.is_symlink()
        q.set_state(0, ReviewState.FLAGGED)
    assert victim.read_text() == "precious"


def test_a_link_at_the_lock_file_is_refused(tmp_path, source):
    victim = tmp_path / "victim.txt"
    path = tmp_path / "p.pvproj.h5"
    (tmp_path / (path.name + ".lock")).symlink_to(victim)
    with pytest.raises(ProjectError, match="lock file"):
        Project.create(path, source)
    assert not victim.exists() and not path.exists()


# ---- 7. values come back exactly --------------------------------------------------------------

def test_a_threshold_recovered_from_the_journal_is_exactly_the_one_set(tmp_path, source):
    path = tmp_path / "p.pvproj.h5"
    p = Project.create(path, source)
    p.start_frame(0, np.zeros((H, W), bool), threshold=0.37)
    _abandon(p)
    with Project.open(path) as q:
        assert q.session.get(0).threshold == 0.37
    with h5py.File(path, "r") as h:
        assert h["frames/000000"].attrs["threshold"] == 0.37
    with Project.open(path) as r:
        assert r.session.get(0).threshold == 0.37



def test_a_damaged_journal_header_uses_its_second_copy_and_loses_nothing(tmp_path, source):
    p, path, data, intact = _journal_with_records(tmp_path, source)
    want = _snapshot(p)
    _abandon(p)
    flipped = bytearray(data)
    flipped[len(jr.MAGIC) + 3] ^= 0xFF  # the first copy of the generation id
    p.journal_path.write_bytes(bytes(flipped))
    with Project.open(path) as q:
        assert q.recovery.replayed == 12 and _snapshot(q) == want
        assert "no change was lost" in q.recovery.describe() and "LOST" not in q.recovery.describe()


def test_a_magic_damaged_into_the_format_1_magic_loses_nothing(tmp_path, source):
    """Found by benchmarks/faults.py (header sweep): 'PVJRNL02' ^ 0x03 at byte 7 reads
    'PVJRNL01', and the journal was parsed as format 1: no record read, nothing reported,
    the journal replaced by an empty one (every acknowledged change silently gone)."""
    p, path, data, intact = _journal_with_records(tmp_path, source)
    want = _snapshot(p)
    _abandon(p)
    flipped = bytearray(data)
    flipped[len(jr.MAGIC) - 1] ^= ord("2") ^ ord("1")
    assert bytes(flipped).startswith(jr.MAGIC_V1)
    got = jr.parse_journal(bytes(flipped))
    assert got.version == 2 and len(got.records) == 12 and got.damaged[0].kind == "header"
    p.journal_path.write_bytes(bytes(flipped))
    with Project.open(path) as q:
        assert q.recovery.replayed == 12 and _snapshot(q) == want
        assert "no change was lost" in q.recovery.describe()


def test_a_chunk_index_entry_changed_is_refused_not_read_as_an_empty_mask(tmp_path, source):
    """Found by benchmarks/faults.py (HDF5 flips, 3 of 200): a flipped byte in a chunk's entry
    of the chunk index (not covered by fletcher32, which checks the chunks that are read,
    nor by the digest of names and attributes) made that chunk 'never written', so its rows
    read back as the fill value: the corrected mask silently lost a band of 128 rows."""
    path = tmp_path / "p.pvproj.h5"
    with Project.create(path, source) as p:
        e = p.start_frame(0, np.zeros((300, 40), bool), model_version="m")  # 3 chunks of 128 rows
        assert e.replace(np.ones((300, 40), bool), "paint") is not None
    with Project.open(path) as q:
        want = _snapshot(q)
    with h5py.File(path, "r") as h:
        ds = h["frames/000000/mask"]
        assert ds.chunks == (128, 5) and ds.id.get_num_chunks() == 3
        addr = ds.id.get_chunk_info(1).byte_offset
    data = bytearray(path.read_bytes())
    child = data.find(struct.pack("<Q", addr))  # the index's pointer to chunk 1 (rows 128..255)
    assert child > 0
    key = child - 32  # its key before it: chunk size u32, filter mask u32, offsets u64 x 3
    assert struct.unpack_from("<QQQ", data, key + 8) == (128, 0, 0)
    data[key + 8] ^= 0x80  # the chunk's row offset 128 -> 0: rows 128..255 now 'never written'
    path.write_bytes(bytes(data))
    with h5py.File(path, "r") as h:  # HDF5 itself reads it without complaint, the rows as zeros
        back = h["frames/000000/mask"][()]
        assert back[:128].all() and not back[128:256].any()
    before = _sha(path)
    try:
        with Project.open(path) as r:
            got = _snapshot(r)
    except ProjectError as err:
        assert "\n" not in str(err) and str(path) in str(err) and "frame 0" in str(err)
        assert _sha(path) == before
    else:
        assert got == want, "a changed chunk index was accepted with changed content"
