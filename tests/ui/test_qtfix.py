"""PySide6 6.12.0 loses a reference to True on every Python-side emit(); the app's start-up
(``ui.app.make_app``) pins True/False on such bindings so a long session cannot abort
(bool_dealloc). Importing ``polypviewer.ui`` alone changes nothing global."""

from __future__ import annotations

import os
import subprocess
import sys


def test_many_emits_do_not_abort_the_interpreter():
    code = (
        "import sys\n"
        "import polypviewer.ui\n"
        "from polypviewer.ui import qtfix\n"
        "assert not qtfix._applied\n"  # no global side effect at import
        "from polypviewer.ui.app import make_app\n"
        "app = make_app()\n"
        "from PySide6.QtCore import QObject, Signal\n"
        "class O(QObject):\n    s = Signal(object)\n"
        "o = O()\n"
        "o.s.connect(lambda v: None)\n"
        "for i in range(20000):\n    o.s.emit(i)\n"
        # Either the bindings leak and True was pinned, or they do not leak at all.
        "assert qtfix._applied or not qtfix.emit_leaks_true(), sys.getrefcount(True)\n"
        "assert not qtfix._applied or sys.getrefcount(True) > 1000, sys.getrefcount(True)\n"
        "print('ok')\n"
    )
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "bool_dealloc" not in out.stderr and out.stdout.strip() == "ok"
