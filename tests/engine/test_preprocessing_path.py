"""One preprocessing everywhere: training batches, validation, fine-tune scoring and cards
see the pixels the app's Predictor sees, with the checkpoint's own normalisation."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from polypviewer.core.metrics import SCORE_NAMES, MetricAccumulator
from polypviewer.engine.augment import AugmentConfig
from polypviewer.engine.data import load_set, make_batch, read_split
from polypviewer.engine.inference import Predictor
from polypviewer.engine.processing import prepare_input
from polypviewer.engine.training import Recipe, evaluate_model, train
from polypviewer.nets import build_model, get_spec
from polypviewer.nets.weights import load_checkpoint

SIZE = 64


@pytest.fixture(scope="module")
def val(demo_set: Path):
    return load_set(demo_set, read_split(f"{demo_set / 'split.json'}:val"))


def test_sets_keep_frames_at_their_own_size(val) -> None:
    for img, mask in zip(val.images, val.masks, strict=True):
        assert img.ndim == 3 and img.shape[:2] == mask.shape and mask.dtype == bool
    assert {img.shape for img in val.images} == {(384, 384, 3)}  # the demo frames' own size, not SIZE


def test_an_unaugmented_training_batch_is_exactly_the_inference_input(val) -> None:
    spec = get_spec("lite_pranet")
    prep = replace(spec.preprocessing, input_size=SIZE)
    x, y = make_batch(val, [0, 1, 2], SIZE, prep, np.random.default_rng(0), AugmentConfig.none())
    want = np.stack([prepare_input(val.images[i], prep) for i in range(3)])
    np.testing.assert_allclose(x.numpy(), want, rtol=0, atol=1e-5)
    assert y.shape == (3, 1, SIZE, SIZE) and set(np.unique(y.numpy())) <= {0.0, 1.0}


@pytest.mark.slow
def test_evaluate_model_equals_the_predictor_and_the_metric_accumulator(val) -> None:
    torch.manual_seed(0)
    model = build_model("lite_pranet").eval()
    spec = get_spec("lite_pranet")
    prep = replace(spec.preprocessing, input_size=SIZE)
    got = evaluate_model(model, "lite_pranet", val, preprocessing=prep, batch_size=2)
    predictor = Predictor.from_module(model, name="lite_pranet", preprocessing=prep, select=spec.select,
                                      backend="torch", precision="fp32", cache=False)
    acc = MetricAccumulator(benchmark=False)
    for name, img, gt in zip(val.names, val.images, val.masks, strict=True):
        acc.add(name, predictor.predict([img])[0], gt)
    want = acc.running_mean()
    assert got["n"] == len(val)
    for k in SCORE_NAMES:
        assert got[k] == pytest.approx(want[k], abs=1e-9), k


@pytest.mark.slow
def test_training_and_validation_use_the_given_preprocessing(val, tmp_path: Path) -> None:
    """A fine-tune of a checkpoint whose normalisation is not the registry's keeps it: in the
    batches it trains on, in the validation that picks its epoch, and in what it writes."""
    spec = get_spec("lite_pranet")
    odd = replace(spec.preprocessing, input_size=SIZE, mean=(0.3, 0.3, 0.3), std=(0.5, 0.5, 0.5))
    seen: list = []
    import polypviewer.engine.training as T

    real_eval, real_batch = T.evaluate_model, T.make_batch

    def spy_eval(*a, **k):
        seen.append(("eval", k["preprocessing"]))
        return real_eval(*a, **k)

    def spy_batch(data, idx, size, prep, *a, **k):
        seen.append(("batch", prep))
        return real_batch(data, idx, size, prep, *a, **k)

    recipe = Recipe("t", batch_size=2, epochs=1, rates=(1.0,), augment=AugmentConfig.none())
    mp = pytest.MonkeyPatch()
    try:
        mp.setattr(T, "evaluate_model", spy_eval)
        mp.setattr(T, "make_batch", spy_batch)
        out = tmp_path / "ft.safetensors"
        train("lite_pranet", val, val, out, recipe=recipe, pretrained=False, bf16="off",
              preprocessing=odd)
    finally:
        mp.undo()
    assert seen and all(p == odd for _, p in seen), seen
    assert {kind for kind, _ in seen} == {"eval", "batch"}
    assert load_checkpoint(tmp_path / "ft.safetensors").preprocessing == odd
