"""Fault injection on the project file, its journal, the edit model and export: kill -9 at
random moments, a really full disk, and byte flips of the journal and of the HDF5 file.

    .venv/bin/python benchmarks/faults.py [--kills 200] [--journal-flips 100] [--h5-flips 200]
        [--enospc 90] [--truncations 50] [--seed 1] [--out benchmarks/results/faults.json]

Everything goes through the project's own API (``io.store.Project``, ``core.edits``,
``io.export.export_kvasir``) on real frames: the 20 CVC-ClinicDB frames of
``../shared/data/cvc-clinicdb`` (read there, never copied; the script stops with a message
when they are absent). The model's mask of a frame is its expert mask moved 2 px and grown
3 px; the first ``N_FRAMES`` frames are edited. Work goes to a temporary folder.

1. **kill -9** (``--kills`` trials). A forked child opens the project (replaying the journal
   the previous child left) and runs a deterministic sequence of operations: brush and
   eraser drags, flood fills, polygons, grow/shrink, keep-largest, fill-holes, undo, review
   states, compaction (Ctrl+S), export of the accepted + corrected frames to a new folder,
   and close + reopen. It writes ``BEGIN k`` to a pipe before operation ``k`` and ``ACK k``
   after the call returned (so its journal record is fsynced). The parent SIGKILLs it at a
   random moment of a randomly chosen kind of work (open + journal replay, an edit, a
   compaction, an export, a close + reopen, or anywhere): it waits for that operation's
   ``BEGIN`` and kills after a random part of its typical duration (measured as the run
   goes). It then copies the project's files to a check folder, opens the copy and compares
   every mask, model mask, threshold, model version, name, stroke count and review state
   with its own replay of operations ``0..n`` (``n`` = acknowledged; ``n + 1`` allowed only
   when operation ``n`` had begun). Every acknowledged export folder is verified
   (``verify_export``, the names exported, every mask equal to the replay's); an export the
   kill interrupted is checked for half-written or unpaired files, then exported again over
   it. The next child continues the sequence from the project as the kill left it.
2. **full disk** (``--enospc`` trials): the project and its export folders on a real 2 MiB
   tmpfs (``mount -t tmpfs``; one more with 48 inodes for "no inodes left"), filled by a
   file that leaves 0 B to 1.1 MB free; a child then edits, saves, exports, frees and
   refills space, and saves while a thread fills the disk as soon as the save's temporary
   file appears (ENOSPC in the middle of its write). Every failure must be a one-line
   PolypviewerError naming a file, and export must leave no half-written file, unpaired
   image or temporary. The child is then
   SIGKILLed; the parent opens the project with the disk still full (opens, or a one-line
   refusal), frees the space, opens it again, and checks it holds the last acknowledged
   state or a later one. Where mount is not permitted, ENOSPC is injected at ``os.write``,
   ``fileio``'s file writes and ``shutil.disk_usage`` instead; the results say which.
3. **byte flips**: a project of real frames left by a killed child (an HDF5 file and a
   journal with records after it). ``--journal-flips`` seeded flips (random byte, random
   xor) of the journal and a sweep of every xor of the journal's 8 magic bytes plus every
   single-bit flip of its two generation copies; ``--h5-flips`` seeded flips of the HDF5
   file; ``--truncations`` cuts of each. Every open must either give exactly the original
   content, or the original minus exactly the records inside the damage the recovery
   report names (with a one-line message saying they were LOST, the damaged journal kept
   byte for byte), or refuse with a one-line ProjectError leaving the files as they were.

The table (trials, acknowledged edits checked, lost, refused with a message, crashed, per
category) is printed and saved with the CPU, the command and the date. "Acknowledged edits
checked": kill rows, the edits acknowledged since the previous kill (each check compares the
whole project, so they are checked again at every later kill); full-disk operation rows,
the operations acknowledged (an export: its masks compared); reopen rows and flips, the
acknowledged edits (flips: records or edits) the reopened content was compared on. "Lost":
an acknowledged edit missing or content changed without a word; "crashed": an uncaught
exception, a message of more than one line, a dead or hung child. Exit status 1 when
anything was lost or crashed.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import hashlib
import json
import os
import pickle
import platform
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import cv2  # noqa: E402
import numpy as np  # noqa: E402

from polypviewer.core import fileio  # noqa: E402
from polypviewer.core import masks as mk  # noqa: E402
from polypviewer.core.edits import EditSession, FrameEdits, ReviewState  # noqa: E402
from polypviewer.core.errors import PolypviewerError  # noqa: E402
from polypviewer.core.paths import shared_data_default  # noqa: E402
from polypviewer.engine.policy import cpu_name, describe_cpu  # noqa: E402
from polypviewer.io import journal as jr  # noqa: E402
from polypviewer.io.export import export_kvasir, verify_export  # noqa: E402
from polypviewer.io.images import decode_file  # noqa: E402
from polypviewer.io.sources import open_source  # noqa: E402
from polypviewer.io.store import Project, ProjectError, SourceRef  # noqa: E402

cv2.setNumThreads(1)  # no OpenCV worker threads across fork()

N_FRAMES = 8
PROJECT = "review.pvproj.h5"
CONTENT_KINDS = ("start", "brush", "erase", "fill", "polygon", "grow", "shrink", "largest", "holes", "undo",
                 "state")
# Operation mix of the kill trials (compaction and export are frequent so kills land in them).
KILL_MIX = {"brush": 18, "erase": 8, "fill": 5, "polygon": 7, "grow": 2, "shrink": 2, "largest": 1, "holes": 1,
            "undo": 7, "state": 12, "compact": 6, "export": 2, "reopen": 2}
# What the kill trials aim at (weights): open + journal replay, an edit, a compaction, an export,
# a close + reopen, or any moment at all.
KILL_TARGETS = {"startup": 15, "edit": 30, "compact": 20, "export": 20, "reopen": 5, "any": 10}
EDIT_MIX = {k: v for k, v in KILL_MIX.items() if k in CONTENT_KINDS}


# ---- real frames ----------------------------------------------------------------------------

class Frames:
    """The source (CVC-ClinicDB frames) and the model masks the edits start from."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.source = open_source(folder)
        self.ref = SourceRef.from_path(folder, kind="kvasir", n_frames=len(self.source))
        n = min(N_FRAMES, len(self.source))
        self.names = [self.source.name(i) for i in range(n)]
        self.images = [self.source.frame(i) for i in range(n)]
        gt = [mk.binarise(self.source.mask(i)) for i in range(n)]
        self.model = [np.roll(mk.grow(g, 3), (2, 2), axis=(0, 1)) for g in gt]
        self.n = n


# ---- the deterministic operation sequence -------------------------------------------------------

def choose(seed: int, k: int, session: EditSession, mix: dict[str, int], n: int
           ) -> tuple[str, int, np.random.Generator]:
    """Operation ``k``: (kind, frame, the rng its parameters come from); deterministic in
    seed, k and the session's content."""
    rng = np.random.default_rng([seed, k])
    frame = int(rng.integers(n))
    kinds = list(mix)
    p = np.array([mix[x] for x in kinds], float)
    kind = kinds[int(rng.choice(len(kinds), p=p / p.sum()))]
    if kind in CONTENT_KINDS and session.get(frame) is None:
        kind = "start"
    return kind, frame, rng


def apply_content(session: EditSession, kind: str, frame: int, rng: np.random.Generator,
                  history: dict[int, list], frames: Frames) -> None:
    """One editing operation, through the public edit model (the project journals it)."""
    if kind == "start":
        session.start(frame, frames.model[frame], model_version=f"cvc-model-v{frame % 3}",
                      threshold=0.37 + frame / 100, name=frames.names[frame])
        return
    e = session.get(frame)
    h, w = e.shape
    stroke = None
    if kind in ("brush", "erase"):
        value = kind == "brush"
        pts = rng.uniform([-5, -5], [w + 5, h + 5], size=(int(rng.integers(2, 9)), 2))
        radius = int(rng.integers(2, 25))
        e.begin_stroke()
        e.dab(*pts[0], radius, value)
        for a, b in zip(pts[:-1], pts[1:], strict=True):
            e.line(*a, *b, radius, value)
        stroke = e.end_stroke()
    elif kind == "fill":
        stroke = e.fill(*rng.uniform([0, 0], [w, h]), bool(rng.integers(2)))
    elif kind == "polygon":
        stroke = e.polygon(rng.uniform([0, 0], [w, h], size=(int(rng.integers(3, 8)), 2)), bool(rng.integers(2)))
    elif kind == "grow":
        stroke = e.grow(int(rng.integers(1, 4)))
    elif kind == "shrink":
        stroke = e.shrink(int(rng.integers(1, 4)))
    elif kind == "largest":
        stroke = e.keep_largest()
    elif kind == "holes":
        stroke = e.fill_holes()
    elif kind == "undo":
        if history.get(frame):
            e.revert(history[frame].pop())
        return
    elif kind == "state":
        try:
            session.set_state(frame, ReviewState(int(rng.integers(4))))
        except ValueError:
            pass  # refused by the edit model (corrected without a correction): nothing changes
        return
    else:
        raise ValueError(kind)
    if stroke is not None:
        history.setdefault(frame, []).append(stroke)


def reopened(s: EditSession) -> EditSession:
    """What reopening a project gives for this content: the same frames and states, without
    the in-memory-only 'state before correction' (documented in core.edits)."""
    out = EditSession()
    for f, e in sorted(s.frames.items()):
        out.adopt(f, FrameEdits(e.model_mask, mask=e.mask, model_version=e.model_version, threshold=e.threshold,
                                strokes=e.strokes), name=s.names.get(f))
    out.states = {f: st for f, st in s.states.items() if st != ReviewState.UNREVIEWED}
    return out


def snapshot(s: EditSession) -> tuple:
    """Everything a session holds, comparable with ==."""
    frames = tuple((f, e.mask.shape, e.mask.tobytes(), e.model_mask.tobytes(), e.model_version, e.threshold,
                    e.strokes, s.names.get(f)) for f, e in sorted(s.frames.items()))
    known = sorted(set(s.frames) | set(s.states))
    return frames, tuple((f, int(s.state(f))) for f in known if s.state(f) != ReviewState.UNREVIEWED)


def digest(s: EditSession) -> str:
    return hashlib.sha256(pickle.dumps(snapshot(s), protocol=4)).hexdigest()


def export_format(rng: np.random.Generator) -> str:
    return str(rng.choice(["png", "jpg"]))


def export_project(project: Project, frames: Frames, out: Path, rng: np.random.Generator):
    """Export the accepted + corrected frames like the app does (with per-frame stats)."""
    image_format = export_format(rng)
    stats = {}
    for f in project.session.frames:
        st = project.session.stats(f)
        stats[project.session.names.get(f, frames.names[f])] = {
            "state": project.session.state(f).name.lower(), "pixels_changed": st.pixels_changed,
            "dice_model_vs_corrected": round(st.dice_model_vs_corrected, 4)}
    return export_kvasir(out, project.items(source=frames.source), image_format=image_format, stats=stats)


# ---- small helpers -------------------------------------------------------------------------------

def one_line(msg: str) -> bool:
    return bool(msg) and "\n" not in msg and "\r" not in msg


def temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.rglob(fileio.TMP_PREFIX + "*")] if folder.exists() else []


def copy_project(src: Path, dst: Path) -> None:
    """The project's files (file, journal, temporaries, kept copies), not its lock or exports."""
    shutil.rmtree(dst, ignore_errors=True)
    dst.mkdir(parents=True)
    for p in src.iterdir():
        if p.is_file() and not p.is_symlink() and not p.name.endswith(".lock"):
            shutil.copy2(p, dst / p.name)


class LineReader:
    """Lines from a child's pipe, as they come."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buf = bytearray()
        self._pos = 0

    def wait(self, deadline: float, stop) -> bool:
        """Read until a line for which ``stop(line)`` is true (True), EOF or ``deadline`` (False)."""
        while True:
            end = self.buf.find(b"\n", self._pos)
            while end >= 0:
                line = self.buf[self._pos:end].decode(errors="replace")
                self._pos = end + 1
                if stop(line):
                    return True
                end = self.buf.find(b"\n", self._pos)
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            r, _, _ = select.select([self.fd], [], [], left)
            if r:
                chunk = os.read(self.fd, 65536)
                if not chunk:
                    return False
                self.buf += chunk


def read_lines(fd: int, deadline: float, buf: bytearray, until: bytes | None = None) -> bool:
    """Read the pipe into ``buf`` until ``deadline``, EOF (True) or a line starting ``until`` (True)."""
    while True:
        if until is not None and (buf.startswith(until) or b"\n" + until in buf):
            return True
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        r, _, _ = select.select([fd], [], [], left)
        if r:
            chunk = os.read(fd, 65536)
            if not chunk:
                return True
            buf += chunk


def fork_child(target, *args) -> tuple[int, int]:
    """Run ``target(write_fd, *args)`` in a forked child; it never returns there."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        os.close(r)
        try:
            target(w, *args)
        except BaseException:  # noqa: BLE001 - reported through the pipe, never a parent's traceback
            with contextlib.suppress(Exception):
                os.write(w, ("ERROR " + " | ".join(traceback.format_exc().split("\n")[-4:])).encode() + b"\n")
            os._exit(3)
        os._exit(0)
    os.close(w)
    return pid, r


def reap(pid: int, fd: int, kill: bool) -> tuple[int, bytes]:
    if kill:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    buf = bytearray()
    read_lines(fd, time.monotonic() + 10, buf)
    os.close(fd)
    return status, bytes(buf)


@dataclass
class Row:
    trials: int = 0
    acked: int = 0       # acknowledged edits whose result was compared
    lost: int = 0        # an acknowledged edit missing, or content changed without a word
    refused: int = 0     # a one-line PolypviewerError (a refusal or a reported failure)
    crashed: int = 0     # an uncaught exception, a multi-line message, a hung or dead child
    notes: dict = field(default_factory=lambda: defaultdict(int))
    failures: list = field(default_factory=list)

    def fail(self, what: str, detail: str) -> None:
        if len(self.failures) < 20:
            self.failures.append(f"{what}: {detail}")


# ---- 1. kill -9 ------------------------------------------------------------------------------------

def _kill_child(w: int, path: Path, exports: Path, start: int, seed: int, frames: Frames) -> None:
    def say(line: str) -> None:
        os.write(w, line.encode() + b"\n")

    project = Project.open(path) if path.exists() else Project.create(path, frames.ref)
    say("READY")
    history: dict[int, list] = {}
    k = start
    while True:
        kind, frame, rng = choose(seed, k, project.session, KILL_MIX, frames.n)
        say(f"BEGIN {k} {kind}")
        t = time.perf_counter()
        if kind == "compact":
            project.compact()
        elif kind == "export":
            report = export_project(project, frames, exports / f"export-{k}", rng)
            if not report.ok:
                raise RuntimeError(f"export {k} failed on a healthy disk: {report.summary}")
        elif kind == "reopen":
            project.close()
            project = Project.open(path)
        else:
            apply_content(project.session, kind, frame, rng, history, frames)
        say(f"ACK {k} {kind} {time.perf_counter() - t:.5f}")
        k += 1


def _check_export(folder: Path, expected: EditSession, frames: Frames, row: Row, *, complete: bool) -> int:
    """An export folder against the replay: returns the masks compared."""
    want = {expected.names.get(f, frames.names[f]): expected.frames[f].mask
            for f in expected.with_state(ReviewState.ACCEPTED, ReviewState.CORRECTED) if f in expected.frames}
    checked = 0
    images = {p.stem: p for p in (folder / "images").glob("*") if not p.name.startswith(fileio.TMP_PREFIX)} \
        if (folder / "images").is_dir() else {}
    masks = {p.stem: p for p in (folder / "masks").glob("*") if not p.name.startswith(fileio.TMP_PREFIX)} \
        if (folder / "masks").is_dir() else {}
    if complete:
        v = verify_export(folder)
        if not v.ok:
            row.lost += 1
            row.fail("acknowledged export does not verify", v.summary)
        if set(masks) != set(want) or set(images) != set(want):
            row.lost += 1
            row.fail("acknowledged export has other frames", f"{sorted(masks)} != {sorted(want)}")
        if expected.frames and not (folder / "stats.csv").exists():
            row.lost += 1
            row.fail("acknowledged export", "no stats.csv")
    else:
        unpaired = set(images) ^ set(masks)
        if unpaired:
            row.notes["interrupted export: image without its mask (or mask without image)"] += len(unpaired)
            row.fail("interrupted export left unpaired files", f"{sorted(unpaired)} in {folder}")
    for p in list(images.values()) + list(masks.values()):
        try:
            decode_file(p)
        except PolypviewerError as err:
            row.lost += 1
            row.fail("half-written export file", str(err))
    for stem, p in masks.items():
        if stem not in want:
            row.lost += 1
            row.fail("exported a frame that is not accepted/corrected", str(p))
            continue
        if not np.array_equal(mk.binarise(decode_file(p)), want[stem]):
            row.lost += 1
            row.fail("exported mask differs from the acknowledged mask", str(p))
        checked += 1
    return checked


class Replay:
    """The parent's copy of the operation sequence, run as the children ran it."""

    def __init__(self, seed: int, frames: Frames) -> None:
        self.seed, self.frames = seed, frames
        self.expected = EditSession()
        self.history: dict[int, list] = {}
        self.edits = 0  # acknowledged edit operations since the project was created

    def new_run(self) -> None:
        """A child starts: it reopens the project and has no undo history yet."""
        self.expected = reopened(self.expected)
        self.history = {}

    def step(self, k: int, acked: bool, row: Row, exports: Path) -> None:
        kind, frame, orng = choose(self.seed, k, self.expected, KILL_MIX, self.frames.n)
        if kind == "export":
            folder = exports / f"export-{k}"
            if acked:
                row.notes["acknowledged exports verified"] += 1
                row.notes["exported masks compared"] += _check_export(folder, self.expected, self.frames, row,
                                                                       complete=True)
                shutil.rmtree(folder, ignore_errors=True)
            elif folder.exists():  # the export the kill interrupted
                row.notes["interrupted exports checked"] += 1
                _check_export(folder, self.expected, self.frames, row, complete=False)
                # the user exports again, the same way
                redo = export_kvasir(folder, _items(self.expected, self.frames), overwrite=True,
                                     image_format=export_format(orng))
                if not redo.ok or temporaries(folder):
                    row.lost += 1
                    row.fail("re-export over an interrupted one", redo.summary)
                shutil.rmtree(folder, ignore_errors=True)
        elif kind == "reopen":
            self.expected = reopened(self.expected)
        elif kind != "compact":
            apply_content(self.expected, kind, frame, orng, self.history, self.frames)
            if acked:
                self.edits += 1
                row.acked += 1  # newly acknowledged: checked at this kill (and again at every later one)


def run_kills(frames: Frames, work: Path, trials: int, seed: int) -> dict[str, Row]:
    rows: dict[str, Row] = defaultdict(Row)
    rng = np.random.default_rng([seed, 1])
    check = work / "kill-check"
    epoch = 0

    def fresh() -> tuple[Path, Path]:
        folder = work / f"kill-{epoch}"
        folder.mkdir()
        (folder / "exports").mkdir()
        return folder / PROJECT, folder / "exports"

    path, exports = fresh()
    replay = Replay(seed, frames)
    done = 0
    total_ops = 0
    durations: dict[str, list[float]] = defaultdict(lambda: [0.005])
    targets = list(KILL_TARGETS)
    weights = np.array([KILL_TARGETS[t] for t in targets], float)
    for trial in range(trials):
        # Where to aim: a random moment of a randomly chosen kind of work (its typical
        # duration measured as the run goes), so that each kind gets kills.
        target = targets[int(rng.choice(len(targets), p=weights / weights.sum()))]
        pid, fd = fork_child(_kill_child, path, exports, done, seed, frames)
        reader = LineReader(fd)
        if target == "startup":
            reader.wait(time.monotonic() + float(rng.uniform(0.0, 0.12)), lambda line: False)
        elif not reader.wait(time.monotonic() + 60, lambda line: line == "READY"):
            status, rest = reap(pid, fd, True)
            rows["startup / recovery"].trials += 1
            rows["startup / recovery"].crashed += 1
            rows["startup / recovery"].fail("child never ready", (bytes(reader.buf) + rest).decode()[-300:])
            continue
        elif target == "any":
            reader.wait(time.monotonic() + float(rng.uniform(0.0, 0.45)), lambda line: False)
        else:
            skip = int(rng.integers(0, 25))
            seen = [0]

            def hit(line: str, target=target, skip=skip, seen=seen) -> bool:
                if not line.startswith("BEGIN "):
                    return False
                seen[0] += 1
                kind = line.split()[2]
                return (kind in CONTENT_KINDS if target == "edit" else kind == target) and seen[0] > skip

            if reader.wait(time.monotonic() + 30, hit):
                typical = float(np.median(durations[target][-20:]))
                reader.wait(time.monotonic() + float(rng.uniform(0.0, 1.2 * typical)), lambda line: False)
        status, rest = reap(pid, fd, True)
        lines = (bytes(reader.buf) + rest).decode(errors="replace").splitlines()
        for line in lines:
            if line.startswith("ACK ") and len(line.split()) == 4:
                _, _, kind, secs = line.split()
                durations["edit" if kind in CONTENT_KINDS else kind].append(float(secs))
        acks = [int(s.split()[1]) for s in lines if s.startswith("ACK ")]
        begins = [s.split() for s in lines if s.startswith("BEGIN ")]
        n_acked = acks[-1] + 1 if acks else done
        in_flight = begins[-1][2] if begins and int(begins[-1][1]) == n_acked else None
        if "READY" not in lines:
            phase = "startup / recovery"
        elif in_flight in ("compact", "export", "reopen"):
            phase = {"compact": "compaction (save)", "export": "export", "reopen": "close + reopen"}[in_flight]
        else:
            phase = "editing"
        row = rows[phase]
        row.trials += 1
        errors = [s for s in lines if s.startswith("ERROR")]
        if errors or not (os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL):
            row.crashed += 1
            row.fail(f"trial {trial}: the child failed by itself", (errors or [f"status {status}"])[0][:400])
        # -- the check: a copy of what the kill left, opened as the app would ---------------------
        copy_project(path.parent, check)
        target = check / PROJECT
        if not target.exists():
            if done or n_acked:
                row.lost += 1
                row.fail(f"trial {trial}", "the project file is gone")
            continue
        try:
            q = Project.open(target, fsync=False)
        except ProjectError as err:
            row.refused += 1
            row.notes["a killed project refused"] += 1
            if not one_line(str(err)) or not target.exists():
                row.crashed += 1
            row.fail(f"trial {trial}: refused", str(err))
            got = None
        except Exception as err:  # noqa: BLE001 - counted, that is the point
            row.crashed += 1
            row.fail(f"trial {trial}: open crashed", f"{type(err).__name__}: {err}")
            got = None
        else:
            left = temporaries(check)
            if left:
                row.notes["temporaries left after open"] += len(left)
            if q.recovery.describe():
                row.notes["recovery reported something"] += 1
                row.fail(f"trial {trial}: recovery report after a plain kill", q.recovery.describe())
            if q.recovery.replayed:
                row.notes["journal replayed"] += 1
            got = snapshot(q.session)
            q.close()
        # -- the replay: operations done .. n_acked (+1) as this child ran them -----------------
        replay.new_run()
        for k in range(done, n_acked):
            replay.step(k, True, row, exports)
        total_ops += n_acked - done
        match = None
        if got is not None and got == snapshot(replay.expected):
            match = n_acked
        row.notes["edit checks (every earlier acknowledged edit again, each kill)"] += replay.edits
        if in_flight is not None and (match is None or in_flight not in CONTENT_KINDS):
            replay.step(n_acked, False, row, exports)  # checks an interrupted export's folder too
            if match is None and got is not None and got == snapshot(replay.expected):
                match = n_acked + 1
        if got is None:  # refused or crashed: go on with a new project
            pass
        elif match is None:
            row.lost += 1
            row.fail(f"trial {trial}", f"project matches neither {n_acked} nor {n_acked + 1} operations "
                                       f"(from {done}); last lines {lines[-3:]}")
        else:
            done = match
            continue
        epoch += 1
        path, exports = fresh()
        replay, done = Replay(seed, frames), 0
    rows["_summary"].notes["operations acknowledged"] = total_ops
    rows["_summary"].notes["frames in the last project"] = len(replay.expected.frames)
    return rows


def _items(session: EditSession, frames: Frames):
    for f in session.with_state(ReviewState.ACCEPTED, ReviewState.CORRECTED):
        if f in session.frames:
            yield session.names.get(f, frames.names[f]), frames.images[f], session.frames[f].mask.copy()


# ---- 2. a full disk ---------------------------------------------------------------------------------

def _statvfs_free(folder: Path) -> int:
    st = os.statvfs(folder)
    return st.f_bavail * st.f_frsize


class InjectedDisk:
    """Where tmpfs cannot be mounted: a disk of ``free`` bytes under ``root``, enforced at
    ``os.write``, fileio's ``open(..., "wb")`` and ``shutil.disk_usage`` (a partial write,
    then ENOSPC, as a file system does)."""

    def __init__(self, root: Path, free: int) -> None:
        self.root, self.free = str(root), free
        self._write, self._open, self._usage = os.write, open, shutil.disk_usage
        os.write = self.write  # type: ignore[assignment]
        fileio.open = self.open  # type: ignore[attr-defined]
        shutil.disk_usage = self.usage  # type: ignore[assignment]

    def _ours(self, fd: int) -> bool:
        try:
            return os.readlink(f"/proc/self/fd/{fd}").startswith(self.root)
        except OSError:
            return False

    def take(self, n: int) -> int:
        if self.free <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        n = min(n, self.free)
        self.free -= n
        return n

    def write(self, fd: int, data) -> int:
        if not self._ours(fd):
            return self._write(fd, data)
        return self._write(fd, bytes(memoryview(data)[:self.take(len(data))]))

    def open(self, file, mode="r", *a, **kw):
        fh = self._open(file, mode, *a, **kw)
        if "w" not in mode or not str(file).startswith(self.root):
            return fh
        disk = self

        class Limited:
            def __enter__(self):
                return self

            def __exit__(self, *exc):
                fh.close()

            def write(self, data):
                done = 0
                while done < len(data):
                    n = disk.take(len(data) - done)
                    fh.write(data[done:done + n])
                    done += n
                return done

            def flush(self):
                fh.flush()

            def fileno(self):
                return fh.fileno()

            def close(self):
                fh.close()

        return Limited()

    def usage(self, path):
        if str(path).startswith(self.root):
            return shutil._ntuple_diskusage(2 << 20, (2 << 20) - self.free, self.free)
        return self._usage(path)


def _fill(root: Path, variant: str, leave: int, injected: InjectedDisk | None) -> None:
    """Take the disk's free space down to ``leave`` bytes (or inodes)."""
    if injected is not None:
        injected.free = leave
        return
    if variant == "inodes":
        k = len(list(root.glob("filler-*")))
        while True:
            try:
                (root / f"filler-{k}").touch()
            except OSError:
                break
            k += 1
        for p in sorted(root.glob("filler-*"))[:leave]:
            p.unlink()
        return
    free = _statvfs_free(root)
    need = free - leave
    k = len(list(root.glob("filler-*")))
    if need <= 0:
        return
    with contextlib.suppress(OSError), open(root / f"filler-{k}", "wb") as fh:
        while need > 0:
            n = min(need, 1 << 16)
            fh.write(b"\0" * n)
            need -= n


def _free(root: Path, amount: int, injected: InjectedDisk | None, variant: str) -> None:
    if injected is not None:
        injected.free += amount
        return
    fillers = sorted(root.glob("filler-*"))
    if variant == "inodes":
        for p in fillers[:max(1, amount // 100_000)]:
            p.unlink()
        return
    for p in fillers:
        size = p.stat().st_size
        if size:
            os.truncate(p, max(0, size - amount))
            return


def _race_fill(root: Path, stop: threading.Event, delay: float) -> None:
    """Fill the disk while a compaction runs: after ``delay`` or as soon as its temporary
    file appears, whichever is first (a real ENOSPC in the middle of its write)."""
    t_end = time.monotonic() + delay
    pattern = fileio.TMP_PREFIX + "*"
    while not stop.is_set() and time.monotonic() < t_end and not any(root.glob(pattern)):
        time.sleep(0)
    k = len(list(root.glob("filler-*")))
    with contextlib.suppress(OSError), open(root / f"filler-{k}", "wb") as fh:
        while not stop.is_set():
            fh.write(b"\0" * 16384)
            fh.flush()


def _enospc_child(w: int, root: Path, variant: str, seed: int, trial: int, frames: Frames,
                  inject: bool) -> None:
    def out(**rec) -> None:
        os.write(w, json.dumps(rec).encode() + b"\n")

    injected = InjectedDisk(root, 1 << 30) if inject else None
    rng = np.random.default_rng([seed, 2, trial])
    path = root / PROJECT
    exports = root / "exports"
    exports.mkdir()
    project = Project.create(path, frames.ref)
    out(op="create", ok=True, ack=True, edits=0, digest=digest(project.session))
    history: dict[int, list] = {}
    edits = 0  # acknowledged edits so far
    for k in range(6):  # with room: a few frames and edits
        kind, frame, orng = choose(seed * 1000 + trial, k, project.session, EDIT_MIX, frames.n)
        apply_content(project.session, kind, frame, orng, history, frames)
        edits += 1
        out(op="warm-up", ok=True, ack=True, edits=edits, digest=digest(project.session))
    leaves = ([0, 0, 256, 1024, 4096, 16384, 65536, 262144, 1_100_000] if variant == "bytes" else [0, 0, 1, 2, 3])
    _fill(root, variant, int(rng.choice(leaves)), injected)
    ops = {"append": 45, "compact": 10, "export": 15, "free": 6, "refill": 4, "close-reopen": 5}
    if variant == "bytes" and injected is None:
        ops["compact-race"] = 6
    names, p = list(ops), np.array(list(ops.values()), float)
    pending = 0  # edits made since the last acknowledgement
    for k in range(6, 30):
        op = names[int(rng.choice(len(names), p=p / p.sum()))]
        before = digest(project.session)
        rec: dict = {"op": op, "ok": True}
        try:
            if op == "append":
                kind, frame, orng = choose(seed * 1000 + trial, k, project.session, EDIT_MIX, frames.n)
                rec["kind"] = kind
                apply_content(project.session, kind, frame, orng, history, frames)
            elif op == "compact":
                project.compact()
            elif op == "compact-race":  # room for the save, then a filler races its write
                for f in root.glob("filler-*"):
                    f.unlink()
                for f in exports.iterdir():
                    shutil.rmtree(f)
                stop = threading.Event()
                filler = threading.Thread(target=_race_fill, args=(root, stop, float(rng.uniform(0, 1.0))))
                filler.start()
                try:
                    project.compact()
                finally:
                    stop.set()
                    filler.join()
            elif op == "export":
                folder = exports / f"e{k}"
                try:
                    report = export_project(project, frames, folder, rng)
                except PolypviewerError as err:
                    rec.update(ok=False, error=str(err), named=str(root) in str(err))
                    report = None
                if report is not None:
                    rec["item_errors"] = report.errors
                    rec["ok"] = report.ok
                    if report.ok and not (report.verify and report.verify.ok):
                        rec["bad"] = "export reported ok but does not verify"
                rec.update(_export_leftovers(folder, project.session, frames))
            elif op == "free":
                _free(root, int(rng.choice([4096, 100_000, 1_200_000])), injected, variant)
            elif op == "refill":
                _fill(root, variant, int(rng.choice(leaves)), injected)
            elif op == "close-reopen":
                project.close()
                rec["closed"] = True
                project = Project.open(path)
        except PolypviewerError as err:
            rec.update(ok=False, error=str(err), named=str(root) in str(err))
            if op == "close-reopen":
                if not rec.get("closed"):  # close() failed (and said what is lost): the project is released
                    with contextlib.suppress(PolypviewerError):
                        project = Project.open(path)
                        rec["reopened"] = True
                if not rec.get("reopened"):
                    out(**rec, ack=False, edits=edits, digest=before)
                    out(op="end", reason="could not reopen", ok=True)
                    os.kill(os.getpid(), signal.SIGKILL)
        after = digest(project.session)
        if op == "append" and after != before:
            pending += 1
        project_op = op in ("append", "compact", "compact-race", "close-reopen")
        rec["ack"] = bool(rec["ok"] and project_op and (op != "append" or after != before))
        if rec["ack"]:
            edits, pending = edits + pending, 0
        if op == "close-reopen" and rec["ok"] and after != before:
            rec["bad"] = "a successful close + reopen changed the content"
        out(**rec, edits=edits, digest=after)
    out(op="end", ok=True)
    os.kill(os.getpid(), signal.SIGKILL)  # what a crash leaves: no close, no compaction


def _export_leftovers(folder: Path, session: EditSession, frames: Frames) -> dict:
    """After an export (failed or not): half-written files, unpaired pairs, temporaries, wrong masks."""
    want = {session.names.get(f, frames.names[f]): session.frames[f].mask for f in session.frames}
    res = {"torn": 0, "unpaired": 0, "temporaries": len(temporaries(folder)), "wrong": 0, "masks": 0}
    if not folder.exists():
        return res
    stems: dict[str, dict[str, Path]] = {"images": {}, "masks": {}}
    for sub in stems:
        for p in (folder / sub).glob("*") if (folder / sub).is_dir() else ():
            if not p.name.startswith(fileio.TMP_PREFIX):
                stems[sub][p.stem] = p
    res["unpaired"] = len(set(stems["images"]) ^ set(stems["masks"]))
    for sub, files in stems.items():
        for stem, p in files.items():
            try:
                arr = decode_file(p)
            except PolypviewerError:
                res["torn"] += 1
                continue
            if sub == "masks":
                res["masks"] += 1
                if stem not in want or not np.array_equal(mk.binarise(arr), want[stem]):
                    res["wrong"] += 1
    return res


def _mount(folder: Path, options: str) -> str | None:
    folder.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True, text=True)
    return None if r.returncode == 0 else (r.stderr.strip() or f"mount exited {r.returncode}")


CATEGORY = {"append": "journal appends (edits)", "compact": "compaction (save)",
            "compact-race": "compaction (save) racing a filler", "close-reopen": "close + reopen",
            "export": "export"}


def run_enospc(frames: Frames, work: Path, trials: int, seed: int, *, inject: bool = False
               ) -> tuple[dict[str, Row], dict]:
    rows: dict[str, Row] = defaultdict(Row)
    mounts = {"bytes": work / "tmpfs-2m", "inodes": work / "tmpfs-48-inodes"}
    why = "--inject-enospc given" if inject else _mount(mounts["bytes"], "size=2m,mode=0700")
    mode = "tmpfs" if why is None else "injected"
    info = {"mode": mode, "mount_error": why}
    variants = ["bytes"]
    if mode == "tmpfs":
        if _mount(mounts["inodes"], "size=2m,nr_inodes=48,mode=0700") is None:
            variants.append("inodes")
        info["mounted"] = [f"tmpfs {mounts[v]} ({'size=2m' if v == 'bytes' else 'size=2m,nr_inodes=48'})"
                           for v in variants]
    try:
        for trial in range(trials):
            variant = variants[-1] if trial % 3 == 2 else variants[0]
            root = mounts[variant] if mode == "tmpfs" else work / "injected"
            for p in list(root.iterdir()) if root.exists() else ():
                shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
            root.mkdir(exist_ok=True)
            pid, fd = fork_child(_enospc_child, root, variant, seed, trial, frames, mode == "injected")
            buf = bytearray()
            finished = read_lines(fd, time.monotonic() + 120, buf, until=b'{"op": "end"')
            status, rest = reap(pid, fd, not finished)
            text = (bytes(buf) + rest).decode(errors="replace")
            recs = [json.loads(s) for s in text.splitlines() if s.startswith("{")]
            errors = [s for s in text.splitlines() if s.startswith("ERROR")]
            disk = ("2 MiB tmpfs" if variant == "bytes" else "48-inode tmpfs") if mode == "tmpfs" \
                else "injected ENOSPC"

            def row_of(what: str, disk=disk) -> Row:
                return rows[f"{disk}: {what}"]

            if errors or not recs or recs[-1].get("op") != "end":
                row = row_of("child")
                row.trials += 1
                row.crashed += 1
                row.fail(f"trial {trial}: child failed", (errors or [text[-300:]])[0][:500])
                continue
            for r in recs:
                kind = r["op"]
                if kind in ("end", "create", "warm-up", "free", "refill"):
                    continue
                row = row_of(CATEGORY[kind])
                row.trials += 1
                if r.get("ack"):
                    row.acked += 1
                if not r["ok"]:
                    msg = r.get("error") or "; ".join(r.get("item_errors") or [])
                    if "error" in r and not (one_line(r["error"]) and r.get("named")):
                        row.crashed += 1
                        row.fail(f"trial {trial}: {kind} message", repr(r.get("error")))
                    elif any(not one_line(m) for m in r.get("item_errors") or []):
                        row.crashed += 1
                        row.fail(f"trial {trial}: {kind} item message", repr(r.get("item_errors")))
                    else:
                        row.refused += 1
                        if "No space left" in msg:
                            row.notes["failed with ENOSPC (No space left on device)"] += 1
                        elif "not enough free space" in msg:
                            row.notes["refused by the free-space check before writing"] += 1
                        else:
                            row.notes["failed: " + msg.split(": ", 1)[-1][:60]] += 1
                if r.get("bad"):
                    row.lost += 1
                    row.fail(f"trial {trial}: {kind}", r["bad"])
                if kind == "export":
                    for key in ("torn", "unpaired", "temporaries", "wrong"):
                        if r.get(key):
                            row.lost += 1
                            row.fail(f"trial {trial}: export left {key}", json.dumps(r)[:300])
                    row.acked += r.get("masks", 0)  # exported masks compared with the acknowledged ones
            last = max(i for i, r in enumerate(recs) if r.get("ack"))
            allowed = {r["digest"] for r in recs[last:] if "digest" in r}
            acked = recs[last]["edits"]
            # (a) reopened with the disk still full
            if mode == "tmpfs":  # (an injected full disk lived in the child only)
                _check_reopen(root / PROJECT, allowed, row_of("reopen while still full"), trial, False, acked)
            # (b) space back, reopened: everything acknowledged must be there
            for p in root.glob("filler-*"):
                p.unlink()
            _check_reopen(root / PROJECT, allowed, row_of("reopen after freeing"), trial, False, acked,
                          must_open=True)
    finally:
        if mode == "tmpfs":
            for v in variants:
                subprocess.run(["umount", str(mounts[v])], capture_output=True)
    return rows, info


def _check_reopen(path: Path, allowed: set[str], row: Row, trial: int, skip: bool, acked: int, *,
                  must_open: bool = False) -> None:
    """Open the project a full-disk child left: it must hold the last acknowledged state (or a
    later one); ``must_open``: a refusal counts as lost."""
    if skip:  # the injected full disk lived in the child only
        return
    row.trials += 1
    try:
        q = Project.open(path)
    except ProjectError as err:
        if must_open:
            row.lost += 1
            row.fail(f"trial {trial}", f"refused: {err}")
        else:
            row.refused += 1
        if not one_line(str(err)) or not path.exists():
            row.crashed += 1
        return
    except Exception as err:  # noqa: BLE001
        row.crashed += 1
        row.fail(f"trial {trial}: crashed", f"{type(err).__name__}: {err}")
        return
    row.acked += acked
    if q.recovery.save_error:
        row.notes["opened, recovery not saved into the file yet (no room): said so"] += 1
    if digest(q.session) not in allowed:
        row.lost += 1
        row.fail(f"trial {trial}", "content is not the last acknowledged state nor a later one")
    try:
        q.close()
    except ProjectError as err:
        row.notes["close refused (no room to save): said so"] += 1
        if not one_line(str(err)):
            row.crashed += 1
    except Exception as err:  # noqa: BLE001
        row.crashed += 1
        row.fail(f"trial {trial}: close crashed", f"{type(err).__name__}: {err}")


# ---- 3. byte flips and truncations -----------------------------------------------------------------

def _flip_child(w: int, folder: Path, seed: int, frames: Frames) -> None:
    project = Project.create(folder / PROJECT, frames.ref)
    history: dict[int, list] = {}
    edits = 0
    for f in range(frames.n):
        apply_content(project.session, "start", f, np.random.default_rng(f), history, frames)
    for k in range(60):
        if k == 40:
            project.compact()  # the first 40 operations in the HDF5 file, the rest in the journal
        kind, frame, rng = choose(seed + 17, k, project.session, EDIT_MIX, frames.n)
        apply_content(project.session, kind, frame, rng, history, frames)
        edits += 1
    os.write(w, json.dumps({"edits": edits + frames.n}).encode() + b"\n")
    os.kill(os.getpid(), signal.SIGKILL)


class FlipBench:
    def __init__(self, frames: Frames, work: Path, seed: int) -> None:
        self.work = work
        self.k = 0
        self._without: dict[frozenset, tuple] = {}
        self.base = work / "flip-base"
        self.base.mkdir()
        pid, fd = fork_child(_flip_child, self.base, seed, frames)
        status, out = reap(pid, fd, False)
        self.edits = json.loads(out.decode().splitlines()[0])["edits"]
        self.h5 = (self.base / PROJECT).read_bytes()
        self.journal = (self.base / (PROJECT + ".journal")).read_bytes()
        self.intact = jr.parse_journal(self.journal)
        assert not self.intact.damaged and len(self.intact.records) > 10, self.intact
        self.ends = list(self.intact.offsets[1:]) + [self.intact.valid_bytes]
        self.want = self._open_snapshot(self.h5, self.journal)

    def _folder(self) -> Path:
        self.k += 1
        folder = self.work / f"flip-{self.k % 4}"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        return folder

    def _open_snapshot(self, h5: bytes, journal: bytes) -> tuple:
        folder = self._folder()
        (folder / PROJECT).write_bytes(h5)
        (folder / (PROJECT + ".journal")).write_bytes(journal)
        with Project.open(folder / PROJECT, fsync=False) as q:
            return snapshot(q.session)

    def without(self, lost: frozenset) -> tuple:
        """The content with the journal records ``lost`` left out (a journal written without them)."""
        if lost not in self._without:
            keep = b"".join(jr.frame_record(jr.encode(r)) for i, r in enumerate(self.intact.records) if i not in lost)
            self._without[lost] = self._open_snapshot(self.h5, jr.header(self.intact.generation) + keep)
        return self._without[lost]

    def prefix(self, n_bytes: int) -> tuple:
        lost = frozenset(i for i, end in enumerate(self.ends) if end > n_bytes)
        return self.without(lost)

    def trial(self, row: Row, h5: bytes, journal: bytes, what: str, *, flip_pos: int | None = None,
              cut: int | None = None) -> None:
        """Open the damaged pair; judge the outcome."""
        row.trials += 1
        folder = self._folder()
        path, jpath = folder / PROJECT, folder / (PROJECT + ".journal")
        path.write_bytes(h5)
        jpath.write_bytes(journal)
        try:
            q = Project.open(path, fsync=False)
        except ProjectError as err:
            row.refused += 1
            if not one_line(str(err)) or not str(err).startswith(str(folder)):
                row.crashed += 1
                row.fail(f"{what}: message", repr(str(err)))
            if path.read_bytes() != h5:
                row.lost += 1
                row.fail(f"{what}: refused", "the project file was changed")
            if jpath.exists() and jpath.read_bytes() != journal:
                row.lost += 1
                row.fail(f"{what}: refused", "the journal was changed")
            return
        except Exception as err:  # noqa: BLE001
            row.crashed += 1
            row.fail(f"{what}: uncaught", f"{type(err).__name__}: {fileio.describe_exception(err)}")
            return
        with q:
            got = snapshot(q.session)
            rec = q.recovery
            line = rec.describe()
        damaged = [d for d in rec.damaged if d.kind != "header"]
        lost = frozenset(i for i, (a, b) in enumerate(zip(self.intact.offsets, self.ends, strict=True))
                         if any(d.offset < b and a < d.offset + d.length for d in damaged))
        if cut is not None:
            want = self.prefix(cut)
            row.acked += len(want[0]) + len(want[1])
            if got != want:
                row.lost += 1
                row.fail(what, "content differs from the records wholly before the cut")
            elif got != self.want:
                row.notes["cut: the records after the cut dropped (what a kill leaves)"] += 1
            return
        row.acked += self.edits
        if got == self.want and not lost:
            if rec.damaged:
                row.notes["opened unchanged, damage reported (nothing lost)"] += 1
                if line is None or "LOST" in line or not one_line(line):
                    row.crashed += 1
                    row.fail(what, f"header damage report: {line!r}")
            else:
                row.notes["opened unchanged"] += 1
            return
        want = self.without(lost) if lost else self.want
        if got != want:
            row.lost += 1
            row.fail(what, f"content changed without being reported (flip at {flip_pos}; damage {rec.damaged}; "
                           f"report {line!r})")
            return
        row.notes["opened, the damaged record(s) named as LOST"] += 1
        row.notes["records lost (named)"] += len(lost)
        if flip_pos is not None and not any(d.offset <= flip_pos < d.offset + d.length for d in rec.damaged):
            row.lost += 1
            row.fail(what, f"the damage reported {rec.damaged} does not contain the flipped byte {flip_pos}")
        if line is None or "LOST" not in line or not one_line(line) or not rec.damaged_copy:
            row.lost += 1
            row.fail(what, f"the loss is not reported in one line: {line!r}")
        elif Path(rec.damaged_copy).read_bytes() != journal:
            row.lost += 1
            row.fail(what, "the damaged journal was not kept byte for byte")


def run_flips(frames: Frames, work: Path, n_journal: int, n_h5: int, n_cuts: int, seed: int) -> dict[str, Row]:
    rows: dict[str, Row] = defaultdict(Row)
    bench = FlipBench(frames, work, seed)
    rng = np.random.default_rng([seed, 4])
    j, h = bench.journal, bench.h5
    for t in range(n_journal):
        pos, x = int(rng.integers(len(j))), int(rng.integers(1, 256))
        bad = bytearray(j)
        bad[pos] ^= x
        bench.trial(rows["journal: random byte flips"], h, bytes(bad), f"journal flip {t} (byte {pos} ^ {x:#x})",
                    flip_pos=pos)
    # the header: every xor of the 8 magic bytes, every single-bit flip of the two generation copies
    sweep = [(pos, x) for pos in range(len(jr.MAGIC)) for x in range(1, 256)]
    sweep += [(pos, 1 << b) for pos in range(len(jr.MAGIC), jr.HEADER_SIZE) for b in range(8)]
    row = rows["journal: header sweep (parse)"]
    n_records = len(bench.intact.records)
    for pos, x in sweep:
        bad = bytearray(j)
        bad[pos] ^= x
        row.trials += 1
        try:
            c = jr.parse_journal(bytes(bad))
        except jr.JournalError as err:
            row.refused += 1
            if not one_line(str(err)):
                row.crashed += 1
            continue
        except Exception as err:  # noqa: BLE001
            row.crashed += 1
            row.fail(f"header byte {pos} ^ {x:#x}", f"{type(err).__name__}: {err}")
            continue
        row.acked += n_records
        if len(c.records) != n_records or c.generation != bench.intact.generation:
            row.lost += 1
            row.fail(f"header byte {pos} ^ {x:#x}", f"{len(c.records)} of {n_records} records read, "
                                                   f"damage reported: {c.damaged}, version {c.version}")
        elif not c.damaged:
            row.lost += 1
            row.fail(f"header byte {pos} ^ {x:#x}", "damage not reported")
    # a few of the sweep opened for real (the whole store path), including the magic's
    for pos, x in [(p, x) for p, x in sweep if p < len(jr.MAGIC)][::97] + [(7, 0x03)]:
        bad = bytearray(j)
        bad[pos] ^= x
        bench.trial(rows["journal: header flips opened"], h, bytes(bad), f"header byte {pos} ^ {x:#x}",
                    flip_pos=pos)
    for t in range(n_h5):
        pos, x = int(rng.integers(len(h))), int(rng.integers(1, 256))
        bad = bytearray(h)
        bad[pos] ^= x
        bench.trial(rows["HDF5 file: random byte flips"], bytes(bad), j, f"h5 flip {t} (byte {pos} ^ {x:#x})")
    for _ in range(n_cuts):
        cut = int(rng.integers(jr.HEADER_SIZE, len(j)))
        bench.trial(rows["journal: truncated (torn)"], h, j[:cut], f"journal cut at {cut}", cut=cut)
    for _ in range(n_cuts):
        cut = int(rng.integers(0, len(h)))
        bench.trial(rows["HDF5 file: truncated"], h[:cut], j, f"h5 cut at {cut}")
    rows["_summary"].notes["journal bytes"] = len(j)
    rows["_summary"].notes["journal records"] = n_records
    rows["_summary"].notes["HDF5 bytes"] = len(h)
    return rows


# ---- the table ------------------------------------------------------------------------------------

COLUMNS = ("trials", "acked edits checked", "lost", "refused w/ message", "crashed")


def table(sections: dict[str, dict[str, Row]]) -> tuple[str, list[dict]]:
    out = [f"| category | {' | '.join(COLUMNS)} |", "|---|" + "---:|" * len(COLUMNS)]
    records = []
    for section, rows in sections.items():
        for name, r in rows.items():
            if name.startswith("_"):
                continue
            out.append(f"| {section}: {name} | {r.trials} | {r.acked} | {r.lost} | {r.refused} | {r.crashed} |")
            records.append({"section": section, "category": name, "trials": r.trials, "acked_edits_checked": r.acked,
                            "lost": r.lost, "refused_with_message": r.refused, "crashed": r.crashed,
                            "notes": dict(r.notes), "failures": r.failures})
    return "\n".join(out), records


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kills", type=int, default=200)
    p.add_argument("--journal-flips", type=int, default=100)
    p.add_argument("--h5-flips", type=int, default=200)
    p.add_argument("--enospc", type=int, default=90)
    p.add_argument("--truncations", type=int, default=50)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--inject-enospc", action="store_true",
                   help="inject ENOSPC instead of mounting a tmpfs (what happens where mount is refused)")
    p.add_argument("--data", type=Path, default=shared_data_default())
    p.add_argument("--out", type=Path, help="write the results as JSON here")
    p.add_argument("--keep", action="store_true", help="keep the work folder")
    args = p.parse_args(argv)
    folder = args.data / "cvc-clinicdb"
    if not folder.is_dir():
        print(f"{folder}: real frames not found (../shared/data beside the project); nothing measured",
              file=sys.stderr)
        return 2
    frames = Frames(folder)
    work = Path(tempfile.mkdtemp(prefix="polypviewer-faults-"))
    command = " ".join([".venv/bin/python", "benchmarks/faults.py", *(argv if argv is not None else sys.argv[1:])])
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    t0 = time.monotonic()
    sections: dict[str, dict[str, Row]] = {}
    times = {}
    info: dict = {}
    try:
        for name, run in (("kill -9", lambda: run_kills(frames, work, args.kills, args.seed)),
                          ("ENOSPC", lambda: run_enospc(frames, work, args.enospc, args.seed,
                                                        inject=args.inject_enospc)),
                          ("flips", lambda: run_flips(frames, work, args.journal_flips, args.h5_flips,
                                                      args.truncations, args.seed))):
            t = time.monotonic()
            result = run()
            if isinstance(result, tuple):
                result, info = result
            sections[name] = result
            times[name] = round(time.monotonic() - t, 1)
            print(f"{name}: done in {times[name]} s", file=sys.stderr, flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    text, records = table(sections)
    cpu = cpu_name()
    head = (f"faults: {command}\nCPU: {describe_cpu()}, {started}, "
            f"{time.monotonic() - t0:.0f} s; real frames: {folder} ({frames.n} frames of {frames.images[0].shape[1]}x"
            f"{frames.images[0].shape[0]} edited); full disk: {info.get('mode')}"
            + (f" ({info.get('mount_error')})" if info.get("mount_error") else ""))
    print(head)
    print(text)
    for section, rows in sections.items():
        for name, r in rows.items():
            if r.notes:
                print(f"  {section}: {name}: " + ", ".join(f"{k} {v}" for k, v in sorted(r.notes.items())))
            for f in r.failures[:5]:
                print(f"    ! {f}")
    bad = sum(r["lost"] + r["crashed"] for r in records)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        fileio.atomic_write(args.out, json.dumps({
            "command": command, "cpu": cpu, "cores": os.cpu_count(), "date": started,
            "python": platform.python_version(),
            "seconds": round(time.monotonic() - t0, 1), "seconds_per_section": times, "data": str(folder),
            "frames_edited": frames.n, "full_disk": info, "table": records,
            "summary": {s: {k: dict(v.notes) for k, v in rows.items() if k.startswith("_")}
                        for s, rows in sections.items()},
            "ok": bad == 0}, indent=1) + "\n")
        print(f"written {args.out}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
