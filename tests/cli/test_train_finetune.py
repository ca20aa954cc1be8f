"""`polypviewer train` / `finetune` end to end at 64 px on a few frames of the shipped demo clip
(`kvasir_copy`), and on real CVC-ClinicDB splits and negatives where combining sets is tested."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import pytest

from polypviewer.cli import main
from polypviewer.nets.weights import WeightRecord, load_checkpoint, sha256_file


@pytest.fixture()
def corrected(kvasir_copy) -> Path:
    """A small corrected set in Kvasir layout: 4 frames of the shipped demo clip (tests/conftest.py)."""
    return kvasir_copy(4, name="corrected")[0]


@pytest.fixture()
def base(base_ckpt: Path) -> Path:
    return base_ckpt  # tests/conftest.py: an untrained lite_pranet at 64 px


@pytest.mark.slow
def test_finetune_writes_a_new_file_and_leaves_the_base_untouched(base: Path, corrected: Path,
                                                                  tmp_path: Path, capsys) -> None:
    before = sha256_file(base)
    out = tmp_path / "tuned.safetensors"
    args = ["finetune", "--base", str(base), "--data", str(corrected), "--out", str(out),
            "--holdout", "0.5", "--epochs", "1", "--threads", "1", "--quiet"]
    assert main(args) == 0
    assert sha256_file(base) == before
    ckpt = load_checkpoint(out)
    assert ckpt.model_name == "lite_pranet" and ckpt.preprocessing.input_size == 64
    card = json.loads(out.with_suffix(".json").read_text())
    meta = card["meta"]
    assert meta["base"]["sha256"] == before and card["sha256"] == sha256_file(out)
    assert len(meta["data"]["held_out"]) == 2 and not set(meta["data"]["held_out"]) & set(meta["data"]["train"])
    m = meta["metrics"]
    assert m["delta_dice"] == pytest.approx(m["held_out_after"]["dice"] - m["held_out_before"]["dice"])
    assert WeightRecord.from_card(out.with_suffix(".json")).file == out.resolve()
    assert "held-out frames (2)" in capsys.readouterr().out
    stamp = out.stat().st_mtime_ns
    # A second run refuses to overwrite; fine-tuning into the base is refused too.
    assert main(args) == 2
    assert out.stat().st_mtime_ns == stamp
    assert main(["finetune", "--base", str(base), "--data", str(corrected), "--out", str(base)]) == 2
    assert sha256_file(base) == before
    assert "is the base model" in capsys.readouterr().err


@pytest.mark.slow
def test_train_cli_writes_checkpoint_and_card(corrected: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "m.safetensors"
    args = ["train", "--model", "lite_pranet", "--data", str(corrected), "--val", str(corrected),
            "--epochs", "1", "--size", "64", "--no-pretrained", "--bf16", "off", "--threads", "1",
            "--quiet", "--out", str(out)]
    assert main(args) == 0
    assert load_checkpoint(out).model_name == "lite_pranet"
    rec = WeightRecord.from_card(out.with_suffix(".json"))
    rec.verify()
    assert rec.meta["metrics"]["val"]["dice"] >= 0 and rec.meta["epochs_run"] == 1
    assert out.with_suffix(".md").read_text().startswith("# m")
    assert main(args) == 2  # exists: not overwritten
    assert "already exists" in capsys.readouterr().err
    # --overwrite replaces the checkpoint and its card; every output follows the umask.
    old_umask = os.umask(0o022)
    try:
        assert main(args + ["--overwrite"]) == 0
    finally:
        os.umask(old_umask)
    rec = WeightRecord.from_card(out.with_suffix(".json"))
    rec.verify()  # the new card describes the new checkpoint
    for p in (out.with_suffix(".json"), out.with_suffix(".md"), Path(f"{out}.state.pt")):
        assert stat.S_IMODE(p.stat().st_mode) == 0o644, p.name
    assert not list(tmp_path.glob(".polypviewer-tmp-*"))


def _train_args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--model", "lite_pranet", "--data", str(data), "--epochs", "1", "--size", "64",
            "--no-pretrained", "--bf16", "off", "--threads", "1", "--quiet", "--out", str(out), *extra]


def test_train_init_starts_from_a_checkpoint_and_records_it(corrected: Path, tmp_path: Path, capsys) -> None:
    """``--init`` trains on from the given weights (not from the seed's fresh network) with its
    normalisation, names the file and its hash in the card, and leaves it untouched; another
    network's checkpoint is refused in one line before any training."""
    from dataclasses import replace

    import torch

    from polypviewer.engine.training import load_trained
    from polypviewer.nets import build_model, get_spec
    from polypviewer.nets.weights import save_checkpoint

    torch.manual_seed(123)  # not the seed train uses for a fresh network (--seed 0)
    init = tmp_path / "init.safetensors"
    prep = replace(get_spec("lite_pranet").preprocessing, input_size=64, mean=(0.4, 0.4, 0.4))
    save_checkpoint(init, build_model("lite_pranet"), model_name="lite_pranet", preprocessing=prep)
    before = sha256_file(init)
    out = tmp_path / "m.safetensors"
    args = _train_args(corrected, out, "--init", str(init), "--recipe", "lite_anneal", "--max-steps", "1")
    assert main(args) == 0, capsys.readouterr().err
    assert sha256_file(init) == before
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["meta"]["data"]["init"] == f"init.safetensors (sha256 {before})"
    assert card["meta"]["recipe"]["name"] == "lite_anneal"
    assert load_checkpoint(out).preprocessing.mean == (0.4, 0.4, 0.4)

    def distance(a: torch.nn.Module, b: torch.nn.Module) -> float:
        return sum(float((x - y).abs().sum()) for x, y in zip(a.parameters(), b.parameters(), strict=True))

    start, trained = load_trained(init)[0], load_trained(out)[0]
    torch.manual_seed(0)
    fresh = build_model("lite_pranet")
    assert distance(trained, start) < 0.05 * distance(fresh, start)
    other = tmp_path / "other.safetensors"
    save_checkpoint(other, build_model("unet"), model_name="unet")
    capsys.readouterr()
    assert main(_train_args(corrected, tmp_path / "n.safetensors", "--init", str(other))) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--init" in err[0] and "'unet' network, not 'lite_pranet'" in err[0]
    assert not (tmp_path / "n.safetensors").exists()


def test_train_refuses_an_existing_card_before_training(corrected: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "m.safetensors"
    mine = out.with_suffix(".json")
    mine.write_text('{"mine": true}\n')
    assert main(_train_args(corrected, out)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(mine) in err[0] and "already exists" in err[0] and "--overwrite" in err[0]
    assert mine.read_text() == '{"mine": true}\n'
    assert not out.exists(), "refused before training, no checkpoint written"


def test_train_never_writes_through_a_card_link(corrected: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "m.safetensors"
    nowhere = tmp_path / "elsewhere" / "planted.md"
    nowhere.parent.mkdir()
    out.with_suffix(".md").symlink_to(nowhere)  # dangling
    for extra in ((), ("--overwrite",)):  # refused even when overwriting is allowed
        assert main(_train_args(corrected, out, *extra)) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and str(out.with_suffix(".md")) in err[0] and "symbolic link" in err[0]
    assert not nowhere.exists() and out.with_suffix(".md").is_symlink()
    assert not out.exists() and not out.with_suffix(".json").exists()


def test_resume_replaces_only_its_own_card(corrected: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "m.safetensors"
    # Two epochs of one step each; stopping after the first writes OUT, its card and the state.
    args = _train_args(corrected, out, "--epochs", "2")
    assert main(args + ["--max-steps", "1"]) == 0
    first = json.loads(out.with_suffix(".json").read_text())
    assert first["meta"]["epochs_run"] == 1
    assert main(args + ["--resume"]) == 0, capsys.readouterr().err
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["meta"]["epochs_run"] == 2 and card["sha256"] == sha256_file(out)
    # A card that is not this checkpoint's is someone else's: --resume keeps it.
    out.with_suffix(".json").write_text('{"sha256": "not this one"}\n')
    capsys.readouterr()
    assert main(args + ["--resume"]) == 2
    assert "is not the card of m.safetensors" in capsys.readouterr().err
    assert out.with_suffix(".json").read_text() == '{"sha256": "not this one"}\n'


def test_train_cli_errors_are_one_line(tmp_path: Path, capsys) -> None:
    assert main(["train", "--model", "nope", "--data", str(tmp_path), "--out", str(tmp_path / "x")]) == 2
    assert main(["train", "--model", "lite_pranet", "--data", str(tmp_path / "missing"),
                 "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "unknown model 'nope'" in err[0] and "missing" in err[1]


@pytest.mark.parametrize("size", ["200", "16", "4096"])
def test_train_refuses_an_input_size_its_checkpoint_could_not_be_loaded_with(tmp_path: Path, capsys, size) -> None:
    """load_checkpoint refuses sizes that are not a multiple of 32 in 32..2048: train says so
    before reading any data or training for hours into a file it would then refuse."""
    out = tmp_path / "m.safetensors"
    code = main(["train", "--model", "lite_pranet", "--data", str(tmp_path / "absent"), "--size", size,
                 "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and f"--size {size}" in err and "multiple of 32" in err
    assert not out.exists()


def test_predictor_names_a_symlink_loop_as_such(tmp_path: Path) -> None:
    from polypviewer.core.errors import PolypviewerError
    from polypviewer.engine.inference import Predictor

    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    a.symlink_to(b)
    b.symlink_to(a)
    with pytest.raises(PolypviewerError, match="symbolic link loop"):
        Predictor.create(weights=a)


@pytest.mark.slow
def test_train_combines_sets_carves_validation_and_holds_negatives_out(cvc: Path, negatives: Path,
                                                                       tmp_path: Path) -> None:
    """Several --data sets (DIR,FILE:KEY), a validation slice carved from them, polyp-free
    frames trained as empty masks with a held-out share scored for the card: what the new
    default's run uses, end to end at 64 px."""
    split = tmp_path / "split.json"
    stems = sorted(p.stem for p in (cvc / "images").iterdir())
    split.write_text(json.dumps({"a": stems[:6], "b": stems[6:10], "dup": stems[5:7], "test": stems[10:13]}))
    neg_images = tmp_path / "negs" / "images"  # a negatives folder has images only
    neg_images.mkdir(parents=True)
    for img in sorted((negatives / "images").iterdir())[:6]:
        shutil.copy(img, neg_images / img.name)
    out = tmp_path / "m.safetensors"
    common = ["--val-fraction", "0.2", "--negatives", str(tmp_path / "negs"), "--negatives-holdout", "0.5",
              "--blank-corner", "--test", f"{cvc},{split}:test", "--epochs", "1", "--size", "64",
              "--no-pretrained", "--bf16", "off", "--threads", "1", "--quiet", "--out", str(out)]
    # the same frame in two sets: refused, not silently trained twice
    assert main(["train", "--model", "lite_pranet", "--data", f"{cvc},{split}:a",
                 "--data", f"{cvc},{split}:dup", *common]) == 2
    assert main(["train", "--model", "lite_pranet", "--data", f"{cvc},{split}:a",
                 "--data", f"{cvc},{split}:b", *common]) == 0
    meta = WeightRecord.from_card(out.with_suffix(".json")).meta
    held = meta["data"]["val_fraction_held_out"]
    assert len(held) == 2 and meta["metrics"]["val"]["n"] == 2  # 20 % of the 10 cvc frames
    assert len(meta["data"]["negatives_held_out"]) == 3 and meta["data"]["negatives_trained"] == 3
    neg = meta["metrics"]["negatives held out (3)"]
    assert neg["n"] == 3 and neg["n_empty_gt"] == 3 and 0 <= neg["false_alarm_rate"] <= 1
    test = meta["metrics"][f"{cvc} ({split}:test)"]
    assert test["n"] == 3 and 0 <= test["mean_dice_256"] <= 1 and 0 <= test["dice"] <= 1
    assert meta["data"]["blank_corner"]


def test_blank_corner_and_concat() -> None:
    import numpy as np

    from polypviewer.engine.data import DataError, SampleSet, blank_scopeguide_corner, concat

    img = np.full((100, 200, 3), 255, np.uint8)
    s = SampleSet(Path("x"), ["a"], [img], [np.ones((100, 200), bool)])
    b = blank_scopeguide_corner(s)
    assert b.images[0][99, 0].tolist() == [0, 0, 0] and not b.masks[0][99, 0]
    assert b.images[0][0, 0].tolist() == [255, 255, 255] and b.masks[0][0, 199]
    assert b.images[0][99, 199].tolist() == [255, 255, 255]
    assert s.images[0][99, 0].tolist() == [255, 255, 255]  # the source is left as it was
    assert concat("c", [s, SampleSet(Path("y"), ["a"], [img], [s.masks[0]])]).names == ["x/a", "y/a"]
    with pytest.raises(DataError, match="twice"):
        concat("c", [s, s])


def test_progress_bar_shows_the_time_left() -> None:
    import io

    from polypviewer.cli.train import ProgressBar
    from polypviewer.engine.training import TrainEvent

    out = io.StringIO()
    bar = ProgressBar(out)
    bar(TrainEvent("step", 0, 1, 10, 1, 3, loss=1.0, lr=1e-3, elapsed=5.0))
    bar(TrainEvent("step", 0, 2, 10, 2, 3, loss=1.0, lr=1e-3, elapsed=7.0))  # 2 s a step
    assert out.getvalue().endswith("ETA 0m56s")  # 28 steps of 30 left at 2 s each



_KILL_AT_STEP_2 = """
import os, signal, sys
import polypviewer.cli.train as cli_train
class KillAtSecondStep:  # stands in for the progress bar; kills this process after step 2
    def __init__(self, *args, **kwargs):
        pass
    def __call__(self, ev):
        if ev.kind == "step" and ev.global_step == 2:
            os.kill(os.getpid(), signal.SIGTERM)
cli_train.ProgressBar = KillAtSecondStep
from polypviewer.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_kill_stops_a_run_with_its_state_saved_and_resume_finishes_it(corrected: Path, tmp_path: Path,
                                                                    monkeypatch, capsys) -> None:
    """SIGTERM (``kill``, the way to stop a background run) saves the state at the step in
    progress as Ctrl-C does, and --resume continues from that step. The kill goes to a child
    process, as a user's would: never to the test runner, which other tests' threads share."""
    import signal
    import subprocess
    import sys

    import polypviewer.cli.train as cli_train
    from polypviewer.engine import training

    previous = signal.getsignal(signal.SIGTERM)
    with cli_train.stop_on_terminate():
        assert signal.getsignal(signal.SIGTERM) is not previous
    assert signal.getsignal(signal.SIGTERM) == previous  # installed only while training runs

    out = tmp_path / "m.safetensors"
    # 4 frames at batch 4: one step per epoch, so the kill lands in the second of three epochs.
    args = [a for a in _train_args(corrected, out, "--epochs", "3") if a != "--quiet"]
    run = subprocess.run([sys.executable, "-c", _KILL_AT_STEP_2, *args], capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 130, run.stderr
    assert "continue with the same command plus --resume" in run.stderr
    state = training._load_state(training.state_path(out))
    assert int(state["global_step"]) == 2 and int(state["epoch"]) == 1
    monkeypatch.setattr(cli_train, "ProgressBar", lambda *args, **kwargs: (lambda ev: None))
    assert main(args + ["--resume"]) == 0, capsys.readouterr().err
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["meta"]["epochs_run"] == 3 and card["meta"]["global_steps"] == 3
