"""The engine measurement of ``auto`` for a weights file runs in a child process at the lowest
CPU priority (``polypviewer engines --background``), not on a thread of the app: a thread
shares the interpreter lock with the window, whose thread it held up for 370-470 ms at a time
while a clip played (``benchmarks/bench_startup.py``). The child ends when asked
(``stop_measurements``: the window closes) or when its parent has gone; ``polypviewer engines``
is also a command of its own."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from polypviewer.engine import selection as S
from polypviewer.engine.inference import Predictor

TIMEOUT = 300


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("POLYPVIEWER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(S, "SECONDS", 0.05)  # passed to the child (--seconds): the tests assert no speed
    yield tmp_path / "cache"
    S.stop_measurements(wait=10)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")  # a zombie has exited (in a container nobody may reap it)


def _watch(pid: int, until: float) -> list[int]:
    """The child's nice value, sampled until it has exited or ``until`` seconds passed."""
    seen = []
    end = time.monotonic() + until
    while time.monotonic() < end and _alive(pid):
        try:
            seen.append(os.getpriority(os.PRIO_PROCESS, pid))
        except (ProcessLookupError, PermissionError):
            break
        time.sleep(0.05)
    return seen


def test_a_weights_files_measurement_runs_in_a_low_priority_child_and_is_cached(cache, unet64, monkeypatch):
    in_here: list[str] = []
    monkeypatch.setattr(S, "measure", lambda *a, **k: in_here.append("measured in the app's process"))
    p = Predictor.create(weights=unet64, precision="fp32", measure="background")
    assert p.needs_measurement and p.info["engine_choice"] == "rule"
    done = threading.Event()
    seen: list = []

    def on_done(choice, error):
        seen.append((choice, error))
        done.set()

    thread = p.measure_in_background(on_done)
    assert thread is not None and thread.daemon
    pids = S.running_measurements()
    assert len(pids) == 1
    if sys.platform.startswith("linux"):
        nice = _watch(pids[0], 60)
        assert 19 in nice, nice  # it lowered itself before the work started
    assert done.wait(TIMEOUT)
    choice, error = seen[0]
    assert error is None and choice is not None, error
    assert in_here == [] and S.running_measurements() == []
    assert choice.precision == "fp32" and "fastest agreeing path measured" in choice.why
    q = Predictor.create(weights=unet64, precision="fp32", measure="background")  # reads the cache
    assert not q.needs_measurement and q.info["engine_choice"] == "measured"
    assert (q.info["backend"], q.info["precision"]) == (choice.backend, choice.precision)


def test_stopping_ends_the_child_and_nobody_is_called(cache, unet64, monkeypatch):
    monkeypatch.setattr(S, "SECONDS", 60.0)  # long enough that only stopping ends it
    p = Predictor.create(weights=unet64, precision="fp32", measure="background")
    called: list = []
    thread = p.measure_in_background(lambda *a: called.append(a))
    [pid] = S.running_measurements()
    S.stop_measurements(wait=10)
    assert not _alive(pid) and S.running_measurements() == []
    thread.join(10)
    assert not thread.is_alive() and called == []


PARENT = textwrap.dedent("""
    import subprocess, sys
    from polypviewer.engine.selection import own_command
    child = subprocess.Popen([*own_command(), "engines", "--weights", sys.argv[1], "--precision", "fp32",
                              "--seconds", "60", "--background"])
    print(child.pid, flush=True)
""")  # and the parent exits at once, leaving its child


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_the_child_ends_when_its_parent_has_gone(cache, unet64):
    out = subprocess.run([sys.executable, "-c", PARENT, str(unet64)], capture_output=True, text=True,
                         timeout=60, check=True)
    pid = int(out.stdout.split()[0])
    end = time.monotonic() + 30
    while _alive(pid) and time.monotonic() < end:
        time.sleep(0.2)
    assert not _alive(pid), "the orphaned measurement went on (it times every path for 60 s)"


def test_the_engines_command_measures_once_then_reads_the_cache(cache, unet64, capsys, monkeypatch):
    from polypviewer.cli import main

    assert main(["engines", "--weights", str(unet64), "--precision", "fp32", "--seconds", "0.05"]) == 0
    out, err = capsys.readouterr()
    assert "measuring the engines" in err
    assert out.startswith("unet (") and "fp32 on cpu" in out and "why: " in out and "frames/s" in out
    monkeypatch.setattr(S, "measure", lambda *a, **k: pytest.fail("measured again"))
    assert main(["engines", "--weights", str(unet64), "--precision", "fp32", "--json"]) == 0
    out, err = capsys.readouterr()
    import json

    data = json.loads(out)
    assert data["measured"] is True and data["seconds"] == 0.0 and data["paths"]
    assert err == ""


def test_the_engines_command_names_a_missing_file(cache, tmp_path, capsys):
    from polypviewer.cli import main

    assert main(["engines", "--weights", str(tmp_path / "nope.safetensors")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "nope.safetensors: no such weights file" in err
