"""Quit does not wait on work whose result is discarded (issue 16, quit < 1 s): once the window
has shut down, ``cli.gui.end_process`` ends the process at once while a daemon thread (the
engine measurement of ``--backend auto``) still runs, with its output flushed; with nothing
running it returns the exit status and the interpreter ends as usual."""

from __future__ import annotations

import subprocess
import sys
import time

CHILD = """
import atexit, sys, threading, time
from polypviewer.cli.gui import background_threads, end_process
atexit.register(lambda: (time.sleep(20), print("teardown ran")))  # an exit that waits on the work
if sys.argv[1] == "busy":
    threading.Thread(target=time.sleep, args=(120,), daemon=True, name="engine-choice").start()
print(f"running {[t.name for t in background_threads()]}", end="")  # not flushed yet
sys.exit(end_process(3))
"""


def _run(mode: str) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True, timeout=300)
    return proc, time.monotonic() - t0


def test_a_running_background_thread_does_not_hold_the_exit():
    proc, took = _run("busy")
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout == "running ['engine-choice']"  # flushed before the process ended
    assert "teardown ran" not in proc.stdout
    assert took < 15  # the exit's 20 s wait did not run (the import of polypviewer.cli.gui is the rest)


def test_with_nothing_running_the_interpreter_ends_as_usual():
    proc, took = _run("idle")
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout.startswith("running []") and proc.stdout.rstrip().endswith("teardown ran")
    assert took >= 20
