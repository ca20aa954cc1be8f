"""QApplication set-up (dark theme, icon) and the two ways to run the window: interactive,
or smoke mode (play N frames through the real pipeline, save a screenshot, exit)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from PySide6.QtCore import QTimer
from PySide6.QtGui import QColor, QIcon, QPalette
from PySide6.QtWidgets import QApplication

from polypviewer.core.paths import resources_dir


def make_app(argv: list[str] | None = None) -> QApplication:
    """The QApplication, created once, with the Fusion style, a dark palette and style.qss."""
    from polypviewer.ui import qtfix

    qtfix.apply()  # before any signal is emitted from Python (the PySide6 6.12.0 bug)
    app = QApplication.instance()
    if app is None:
        app = QApplication(argv or [sys.argv[0]])
    app.setApplicationName("polypviewer")
    app.setOrganizationName("polypviewer")
    app.setStyle("Fusion")
    pal = QPalette()
    for role, rgb in ((QPalette.ColorRole.Window, (32, 33, 36)), (QPalette.ColorRole.WindowText, (222, 222, 222)),
                      (QPalette.ColorRole.Base, (24, 24, 27)), (QPalette.ColorRole.AlternateBase, (38, 39, 43)),
                      (QPalette.ColorRole.Text, (222, 222, 222)), (QPalette.ColorRole.Button, (45, 46, 50)),
                      (QPalette.ColorRole.ButtonText, (222, 222, 222)), (QPalette.ColorRole.Highlight, (0, 150, 190)),
                      (QPalette.ColorRole.HighlightedText, (255, 255, 255)),
                      (QPalette.ColorRole.ToolTipBase, (45, 46, 50)), (QPalette.ColorRole.ToolTipText, (230, 230, 230)),
                      (QPalette.ColorRole.PlaceholderText, (130, 130, 130))):
        pal.setColor(role, QColor(*rgb))
    pal.setColor(QPalette.ColorGroup.Disabled, QPalette.ColorRole.Text, QColor(110, 110, 110))
    pal.setColor(QPalette.ColorGroup.Disabled, QPalette.ColorRole.WindowText, QColor(110, 110, 110))
    pal.setColor(QPalette.ColorGroup.Disabled, QPalette.ColorRole.ButtonText, QColor(110, 110, 110))
    app.setPalette(pal)
    qss = resources_dir() / "style.qss"
    if qss.is_file():
        app.setStyleSheet(qss.read_text(encoding="utf-8"))
    icon = resources_dir() / "icons" / "polypviewer.svg"
    if icon.is_file():
        app.setWindowIcon(QIcon(str(icon)))
    return app


class SmokeRun:
    """Open a source, show frames 0..N-1 one after another, each once its prediction is on
    screen, then save a screenshot of the window.

    ``result`` ends as 0 (saved), or 1 with ``error`` set (timeout, open failure, or the
    model could not be loaded: a smoke run without the real pipeline proves nothing)."""

    def __init__(self, window, out: Path, frames: int, timeout_s: float = 300.0) -> None:
        self.window, self.out, self.frames = window, Path(out), max(1, int(frames))
        self.deadline = time.monotonic() + timeout_s
        self.result: int | None = None
        self.error = ""
        self.shown: list[int] = []
        self._want: int | None = None
        self._timer = QTimer()
        self._timer.timeout.connect(self._poll)
        window.frames.open_failed.connect(lambda msg: self._finish(1, msg))
        window.predictions.model_failed.connect(lambda msg, _offer: self._finish(1, f"model: {msg}"))

    def start(self) -> None:
        self._timer.start(20)

    def _model_settled(self) -> bool:
        p = self.window.predictions
        return not p.loading_model

    def _poll(self) -> None:
        w = self.window
        if self.result is not None:
            return
        if time.monotonic() > self.deadline:
            self._finish(1, f"smoke run timed out after showing {len(self.shown)} frame(s)")
            return
        if w.source is None or not self._model_settled():
            return
        if self._want is None:
            self._want = 0
            w.go_to(0)
            return
        if not self._is_shown(self._want):
            return
        self.shown.append(self._want)
        if len(self.shown) >= min(self.frames, w.n):
            self._finish(0)
            return
        self._want += 1
        w.go_to(self._want)

    def _is_shown(self, index: int) -> bool:
        w = self.window
        if w.index != index or w.frames.get(index) is None or w._shown_frame != (w.frames.generation, index):
            return False
        return w.predictions.info is None or w.current_mask(index) is not None

    def _finish(self, code: int, error: str = "") -> None:
        if self.result is not None:
            return
        self._timer.stop()
        if code == 0:
            self.window.timeline.flush()
            QApplication.processEvents()
            self.out.parent.mkdir(parents=True, exist_ok=True)
            if not self.window.grab().save(str(self.out)):
                code, error = 1, f"{self.out}: could not write the screenshot"
        self.result, self.error = code, error
        QApplication.quit()


def run_window(path: str | None = None, *, model: str | None = None, weights: str | None = None,
               allow_random: bool = False, options: dict | None = None, screenshot: str | None = None,
               frames: int = 10, size: tuple[int, int] = (1440, 900), timeout_s: float = 300.0) -> int:
    """Start the app. With ``screenshot`` it runs the smoke mode and returns its exit code."""
    from polypviewer.ui.main_window import MainWindow

    app = make_app()
    window = MainWindow(model=model, weights=weights, allow_random=allow_random, predictor_options=options)
    smoke = None
    if screenshot:
        window.resize(*size)
        smoke = SmokeRun(window, Path(screenshot), frames, timeout_s)
    window.show()
    if path:
        window.open_path(path)
    if smoke is not None:
        if not path:
            print("polypviewer: error: --screenshot needs a source to open", file=sys.stderr)
            window.close()
            return 2
        smoke.start()
    app.exec()
    window.shutdown()
    window.close()
    window.deleteLater()
    if smoke is not None:
        if smoke.result != 0:
            print(f"polypviewer: error: {smoke.error or 'smoke run ended early'}", file=sys.stderr)
            return 1
        print(f"screenshot: {screenshot} ({len(smoke.shown)} frames shown; model "
              f"{(window.predictions.info or {}).get('model', 'none')})")
    return 0
