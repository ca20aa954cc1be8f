"""Where the review window's start spends the GUI thread's CPU before the first frame is shown
(issue 16): cProfile on the main thread's CPU clock (``time.thread_time``, so a loaded machine
changes the wall times, not what is counted), from the first import to the first ``displayed``.

    QT_QPA_PLATFORM=offscreen .venv/bin/python benchmarks/profile_startup.py [SOURCE] [--top N]

Starts the window as ``polypviewer gui SOURCE`` does (shipped default model, engine auto,
measured in the background), with its own settings and projects folders, prints the top N
functions by cumulative time, then one line: main-thread CPU to the first frame, wall times to
constructed / shown / first frame, and whether torch was imported on the main thread."""

from __future__ import annotations

import builtins
import cProfile
import os
import pstats
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's polypviewer, not the installed one


def main() -> int:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    top = int(sys.argv[sys.argv.index("--top") + 1]) if "--top" in sys.argv else 30
    if "--top" in sys.argv:
        args.remove(str(top))
    source = args[0] if args else str(ROOT / "resources" / "demo" / "polypgen")
    t0 = time.time()
    tmp = tempfile.mkdtemp()
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    os.environ.update(POLYPVIEWER_CONFIG=f"{tmp}/config", POLYPVIEWER_PROJECTS=f"{tmp}/projects")
    main_thread = threading.get_ident()
    torch_on_main: list[bool] = []
    real_import = builtins.__import__

    def spy(name, *a, **k):
        if name.split(".")[0] == "torch" and "torch" not in sys.modules:
            torch_on_main.append(threading.get_ident() == main_thread)
        return real_import(name, *a, **k)

    builtins.__import__ = spy
    profile = cProfile.Profile(time.thread_time)
    profile.enable()
    from polypviewer.ui.app import make_app
    from polypviewer.ui.main_window import MainWindow

    app = make_app()
    marks: dict[str, float] = {}
    win = MainWindow(predictor_options={"device": "auto", "backend": "auto", "precision": "auto",
                                        "measure": "background"})
    marks["constructed_s"] = time.time() - t0
    win.resize(1440, 900)
    win.show()
    marks["shown_s"] = time.time() - t0
    win.displayed.connect(lambda i, has: marks.setdefault("first_frame_s", time.time() - t0))
    win.open_path(source)
    while "first_frame_s" not in marks:
        app.processEvents()
        time.sleep(0.001)
    profile.disable()
    builtins.__import__ = real_import
    cpu = time.thread_time()
    pstats.Stats(profile).sort_stats("cumulative").print_stats(top)
    print(f"main-thread CPU to the first frame {cpu:.2f} s; wall: constructed {marks['constructed_s']:.2f} s, "
          f"shown {marks['shown_s']:.2f} s, first frame {marks['first_frame_s']:.2f} s; torch first imported "
          f"on the main thread: {bool(torch_on_main and torch_on_main[0])}; load {os.getloadavg()[0]:.1f}",
          flush=True)
    os._exit(0)  # the model build and engine measurement may still run: not part of this profile


if __name__ == "__main__":
    raise SystemExit(main())
