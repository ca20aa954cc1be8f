import pytest


@pytest.fixture(scope="module")
def tiny_predictor():
    """A small real network (U-Net at 64 px, random weights, torch fp32): fast inference
    through the production path (worker thread, PipelineRunner, cache)."""
    import torch

    from polypviewer.engine.inference import Predictor
    from polypviewer.nets.registry import IMAGENET_MEAN, IMAGENET_STD, Preprocessing, build_model, get_spec

    torch.manual_seed(0)
    return Predictor.from_module(build_model("unet"), name="unet",
                                 preprocessing=Preprocessing(64, "RGB", IMAGENET_MEAN, IMAGENET_STD),
                                 select=get_spec("unet").select, device="cpu", precision="fp32",
                                 backend="torch", version="test-unet64", cache=False)



@pytest.fixture
def open_window(qtbot):
    """Factory: a shown 1200x800 main window (torch fp32, no default model) with the given
    predictor loaded."""
    def make(predictor, timeout: int = 60_000):
        from polypviewer.ui.main_window import MainWindow

        win = MainWindow(load_default_model=False, predictor_options={"backend": "torch", "precision": "fp32"})
        qtbot.addWidget(win)
        win.resize(1200, 800)
        win.show()
        with qtbot.waitSignal(win.predictions.model_ready, timeout=timeout):
            win.load_model(predictor=predictor)
        return win

    return make
