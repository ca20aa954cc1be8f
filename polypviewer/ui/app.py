"""QApplication set-up (dark theme, icon) and the two ways to run the window: interactive,
or smoke mode (play N frames through the real pipeline, save a screenshot, exit)."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from PySide6.QtCore import QTimer
from PySide6.QtGui import QColor, QIcon, QPalette
from PySide6.QtWidgets import QApplication

from polypviewer.core.paths import resources_dir

if TYPE_CHECKING:
    from PySide6.QtCore import SignalInstance


def make_app(argv: list[str] | None = None) -> QApplication:
    """The QApplication, created once, with the Fusion style, a dark palette and style.qss."""
    from polypviewer.ui import qtfix

    qtfix.apply()  # before any signal is emitted from Python (the PySide6 6.12.0 bug)
    existing = QApplication.instance()
    if existing is not None and not isinstance(existing, QApplication):
        # (a QCoreApplication or QGuiApplication made elsewhere cannot show widgets)
        raise RuntimeError(f"a {type(existing).__name__} exists already; the window needs a QApplication")
    app = existing if existing is not None else QApplication(argv or [sys.argv[0]])
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


class SmokeHost(Protocol):
    """What :class:`SmokeRun` uses of the window (``MainWindow`` implements it), so the window's
    insides can change without breaking the demo; ``tests/ui/test_smoke_run.py`` runs a smoke
    run on a real window seen through exactly these members.

    Signals: ``displayed(index, has_prediction)`` (a frame is on screen, with its mask when
    ``has_prediction``), ``open_failed(message)`` (the source could not be opened) and
    ``model_failed(message)`` (the model could not be loaded)."""

    displayed: SignalInstance
    open_failed: SignalInstance
    model_failed: SignalInstance

    @property
    def index(self) -> int: ...
    @property
    def n(self) -> int: ...
    def go_to(self, index: int) -> None: ...
    def model_info(self) -> dict[str, Any] | None: ...
    def model_loading(self) -> bool: ...
    def save_screenshot(self, path: Path) -> bool: ...


class SmokeRun:
    """Open a source, show frames 0..N-1 one after another, each once its prediction is on
    screen, then save a screenshot of the window.

    ``result`` ends as 0 (saved), or 1 with ``error`` set (timeout, open failure, or the
    model could not be loaded: a smoke run without the real pipeline proves nothing)."""

    def __init__(self, window: SmokeHost, out: Path, frames: int, timeout_s: float = 300.0) -> None:
        self.window, self.out, self.frames = window, Path(out), max(1, int(frames))
        self.deadline = time.monotonic() + timeout_s
        self.result: int | None = None
        self.error = ""
        self.shown: list[int] = []
        self._want: int | None = None
        self._displayed: tuple[int, bool] | None = None  # the last displayed(index, has_prediction)
        self._timer = QTimer()
        self._timer.timeout.connect(self._poll)
        window.displayed.connect(self._on_displayed)
        window.open_failed.connect(lambda msg: self._finish(1, msg))
        window.model_failed.connect(lambda msg: self._finish(1, f"model: {msg}"))

    def start(self) -> None:
        self._timer.start(20)

    def _on_displayed(self, index: int, has_prediction: bool) -> None:
        self._displayed = (int(index), bool(has_prediction))

    def _poll(self) -> None:
        w = self.window
        if self.result is not None:
            return
        if time.monotonic() > self.deadline:
            self._finish(1, f"smoke run timed out after showing {len(self.shown)} frame(s)")
            return
        if w.n == 0 or w.model_loading():  # no source open yet, or the model still loading
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
        """Frame ``index`` is on screen with its prediction (or no model runs)."""
        if self.window.index != index or self._displayed is None or self._displayed[0] != index:
            return False
        return self._displayed[1] or self.window.model_info() is None

    def _finish(self, code: int, error: str = "") -> None:
        if self.result is not None:
            return
        self._timer.stop()
        if code == 0:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            if not self.window.save_screenshot(self.out):
                code, error = 1, f"{self.out}: could not write the screenshot"
        self.result, self.error = code, error
        QApplication.quit()


def run_window(path: str | None = None, *, model: str | None = None, weights: str | None = None,
               allow_random: bool = False, options: dict[str, Any] | None = None, screenshot: str | None = None,
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
              f"{(window.model_info() or {}).get('model', 'none')})")
    return 0
