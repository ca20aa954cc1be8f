"""Quit does not wait on work whose result is discarded (issue 16, quit < 1 s): once the window
has shut down, ``cli.gui.end_process`` ends the process at once while a daemon thread (the
engine measurement of ``--backend auto``) still runs, with its output flushed; with nothing
running it waits for non-daemon threads and runs the exit handlers as a normal exit does, but
skips the interpreter's teardown of every module (most of a quit with torch and OpenVINO
loaded)."""

from __future__ import annotations

import subprocess
import sys
import time

CHILD = """
import atexit, sys, threading, time
from polypviewer.cli.gui import background_threads, end_process
atexit.register(lambda: (time.sleep(20), print("teardown ran")))  # an exit that waits on the work


class Module:  # finalised in the interpreter's teardown of modules
    def __del__(self):
        print("module teardown ran")


KEEP = Module()
if sys.argv[1] == "busy":
    threading.Thread(target=time.sleep, args=(120,), daemon=True, name="engine-choice").start()
if sys.argv[1] == "writer":  # a non-daemon thread finishing a write: the exit waits for it
    threading.Thread(target=lambda: (time.sleep(1), print("written", end=""))).start()
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


def test_with_nothing_running_the_exit_handlers_run_but_not_the_module_teardown():
    proc, took = _run("idle")
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout.startswith("running []") and proc.stdout.rstrip().endswith("teardown ran")
    assert "module teardown ran" not in proc.stdout
    assert took >= 20


def test_the_exit_waits_for_a_non_daemon_thread():
    proc, _ = _run("writer")
    assert proc.returncode == 3, proc.stderr
    assert "written" in proc.stdout and proc.stdout.rstrip().endswith("teardown ran")
