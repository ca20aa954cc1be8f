"""The review app (the only package that imports PySide6 / pyqtgraph).

Importing it changes nothing global: the start-up code (``ui.app.make_app``, and
``MainWindow`` for embedders and tests that make their own QApplication) applies the PySide6
work-around of ``ui/qtfix.py`` before any signal is emitted.
"""
