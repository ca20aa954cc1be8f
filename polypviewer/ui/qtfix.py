"""Work-around for a reference-count bug in PySide6 6.12.0 on Python < 3.12.

``SignalInstance.emit()`` returns ``True`` without taking a reference to it, so every
signal emitted from Python drops ``True``'s reference count by one. On Python 3.12+
``True`` is immortal and nothing happens; on 3.10 / 3.11 the count reaches zero after a
few hundred emits (pyqtgraph alone emits that many while plotting) and the interpreter
aborts with "Fatal Python error: bool_dealloc: deallocating True or False".

``apply()`` detects the bug by emitting a signal and watching the count. When present, it
gives ``True`` (and ``False``) a huge extra reference count, which is what Python 3.12
does by design (immortal objects); the leak can then never reach zero. It is a no-op on
fixed bindings and on Python 3.12+.
"""

from __future__ import annotations

import ctypes
import sys

_applied = False
_PIN = 1 << 40  # unreachable by any number of emits in a process's lifetime


def emit_leaks_true() -> bool:
    """True when emitting a Qt signal from Python loses a reference to ``True``."""
    from PySide6.QtCore import QObject, Signal

    class _Probe(QObject):
        sig = Signal()

    probe = _Probe()
    before = sys.getrefcount(True)
    for _ in range(8):
        probe.sig.emit()
    return sys.getrefcount(True) < before - 4


def apply() -> bool:
    """Pin ``True``/``False`` when this PySide6 has the bug. Returns whether it pinned."""
    global _applied
    if _applied or sys.version_info >= (3, 12):
        return _applied
    if emit_leaks_true():
        for obj in (True, False):
            ctypes.c_ssize_t.from_address(id(obj)).value += _PIN
        _applied = True
    return _applied
