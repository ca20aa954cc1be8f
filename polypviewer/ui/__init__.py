"""The review app (the only package that imports PySide6 / pyqtgraph)."""

from polypviewer.ui import qtfix as _qtfix

# Must run before any Qt signal is emitted from Python (see qtfix: PySide6 6.12.0 bug).
_qtfix.apply()
