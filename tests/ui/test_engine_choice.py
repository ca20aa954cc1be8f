"""The model panel's engine choice and the background measurement of ``auto``
(``engine.selection``), through the real window, worker thread and predictor builds.

A U-Net checkpoint at 64 px keeps every build and measurement to a few seconds."""

from __future__ import annotations

import pytest

from polypviewer.engine.policy import onnxruntime_available

TIMEOUT = 180_000


def _window(qtbot, options):
    from polypviewer.ui.main_window import MainWindow

    win = MainWindow(load_default_model=False, predictor_options=options)
    qtbot.addWidget(win)
    win.show()
    return win


@pytest.mark.skipif(not onnxruntime_available(), reason="onnxruntime (and onnx) not installed")
def test_model_panel_engine_choice_rebuilds_the_network_on_it(qtbot, unet64):
    win = _window(qtbot, {"backend": "torch", "precision": "fp32"})
    panel = win.model_panel
    assert panel.current_backend() == "torch"  # the window's option is shown
    with qtbot.waitSignal(win.predictions.model_ready, timeout=TIMEOUT) as ready:
        win.load_model(None, str(unet64))
    assert ready.args[0]["backend"] == "torch"
    panel.select_backend("onnxruntime")
    with qtbot.waitSignal(win.predictions.model_ready, timeout=TIMEOUT) as ready:
        panel.backend_chosen.emit(panel.current_backend())
    info = ready.args[0]
    assert (info["backend"], info["precision"], info["weights"]) == ("onnxruntime", "fp32", str(unet64))
    assert "onnxruntime" in panel.info["runs_on"].text()
    assert panel.info["why"].text().startswith("onnxruntime as asked")
    assert [panel.backend_combo.itemData(i) for i in range(panel.backend_combo.count())] == \
        ["auto", "torch", "openvino", "onnxruntime"]


def test_auto_measures_in_the_background_then_runs_the_measured_engine(qtbot, unet64, monkeypatch):
    from polypviewer.engine import selection

    monkeypatch.setattr(selection, "SECONDS", 0.2)
    win = _window(qtbot, {"backend": "auto", "precision": "fp32", "measure": "background"})
    seen: list[dict] = []
    win.predictions.model_ready.connect(lambda info: seen.append(dict(info)))
    win.load_model(None, str(unet64))
    # first the static rule, at once; the measuring runs on its own thread meanwhile
    qtbot.waitUntil(lambda: len(seen) >= 1, timeout=TIMEOUT)
    assert seen[0]["engine_choice"] == "rule" and "not measured" in seen[0]["why"]
    qtbot.waitUntil(lambda: any(i.get("engine_choice") == "measured" for i in seen), timeout=TIMEOUT)
    final = next(i for i in seen if i.get("engine_choice") == "measured")
    assert "fastest agreeing path measured" in final["why"]
    assert final["precision"] == "fp32" and final["backend"] in ("torch", "openvino", "onnxruntime")
    assert win.model_panel.info["why"].text() == final["why"]
    assert win.predictions.info["backend"] == final["backend"]
    # a second window finds the choice cached: no measuring, the measured engine at once
    win2 = _window(qtbot, {"backend": "auto", "precision": "fp32", "measure": "background"})
    with qtbot.waitSignal(win2.predictions.model_ready, timeout=TIMEOUT) as ready:
        win2.load_model(None, str(unet64))
    assert ready.args[0]["engine_choice"] == "measured" and ready.args[0]["backend"] == final["backend"]
