"""Issue 16, start-up: the window is built and shown without importing torch on the GUI thread
(cProfile of the start: torch was 5.1 of the 8.1 s of main-thread CPU before the first frame);
the networks' list is read off the GUI thread and fills the model panel when it arrives."""

from __future__ import annotations

import json
import os
import subprocess
import sys

CHILD = """
import json, os, sys, time
os.environ["QT_QPA_PLATFORM"] = "offscreen"
from polypviewer.ui import catalog
from polypviewer.ui.app import make_app
started = []
catalog.ModelCatalog.start = lambda self: started.append(self)  # held back: nothing else imports torch
from polypviewer.ui.main_window import MainWindow
app = make_app()
win = MainWindow(load_default_model=False)
win.resize(1280, 720)
win.show()
for _ in range(5):
    app.processEvents()
out = {"torch_after_show": "torch" in sys.modules, "listed_before": win.model_panel.combo.count()}
win._on_catalog(catalog.read_catalog())  # what the catalog thread delivers
out["listed"] = [win.model_panel.combo.itemData(i) for i in range(win.model_panel.combo.count())]
out["versions"] = sorted(win.annotation.versions.versions.values())
out["started"] = len(started)
print("RESULT " + json.dumps(out))
win.shutdown()
"""


def test_the_window_shows_without_torch_and_lists_the_networks_when_read(tmp_path):
    env = dict(os.environ, POLYPVIEWER_CONFIG=str(tmp_path / "config"), POLYPVIEWER_PROJECTS=str(tmp_path / "p"),
               QT_QPA_PLATFORM="offscreen")
    proc = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, env=env, timeout=600)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert lines, proc.stderr[-3000:]
    out = json.loads(lines[-1][len("RESULT "):])
    assert out["started"] == 1
    assert out["torch_after_show"] is False  # window built and shown: torch not imported
    assert out["listed_before"] == 0
    from polypviewer.nets.registry import list_models
    from polypviewer.nets.weights import shipped_weights

    assert out["listed"] == list(list_models())
    assert out["versions"] == sorted(str(r.file) for r in shipped_weights([]))
