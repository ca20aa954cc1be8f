"""``polypviewer info`` and ``polypviewer bench`` (quick mode: the structure, not the speed)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from polypviewer.cli import main
from polypviewer.nets import registry


def test_info_json_counts_parameters_and_flops(capsys):
    assert main(["info", "--json", "--model", "unet"]) == 0
    report = json.loads(capsys.readouterr().out)
    (row,) = report["models"]
    # The U-Net of Ali et al., MediaEval 2020, counted by rebuilding its reference code.
    assert (row["model"], row["input_size"]) == ("unet", 256)
    assert row["params"] == 3_585_027 and row["keras_total_params"] == 3_588_997
    assert row["gflops"] == pytest.approx(12.0, abs=0.1)
    assert row["weights"] == []  # no U-Net weights are shipped
    assert (row["recipe"], row["pretrained_encoder"]) == ("resunetpp_seed", False)
    assert report["engine"]["device"] in ("cpu", "cuda")
    assert report["engine"]["precision"] in ("fp32", "bf16", "fp16")


def test_info_lists_the_shipped_default_weights(capsys):
    from polypviewer.nets.weights import default_weights

    assert main(["info", "--json", "--no-flops", "--model", "lite_pranet"]) == 0
    (row,) = json.loads(capsys.readouterr().out)["models"]
    # two shipped versions: the default (named by models/default.json) and the EndoTect-only one
    by_file = {Path(w["file"]).name: w for w in row["weights"]}
    assert set(by_file) == {"lite_pranet_kc352.safetensors", "lite_pranet_kc288.safetensors", "lite_pranet.safetensors"}
    assert [w["file"] for w in row["weights"] if w["default"]] == [str(default_weights())]
    assert by_file["lite_pranet_kc352.safetensors"]["default"]
    assert not by_file["lite_pranet_kc288.safetensors"]["default"] and not by_file["lite_pranet.safetensors"]["default"]
    assert all(len(w["version"]) == 12 for w in row["weights"]) and row["gflops"] is None
    assert (row["recipe"], row["pretrained_encoder"]) == ("lite", True)


def test_info_table_and_unknown_model(capsys):
    assert main(["info", "--no-flops", "--model", "pranet"]) == 0
    out = capsys.readouterr().out
    assert "pranet" in out and "32,547,319" in out
    assert main(["info", "--model", "nope"]) == 2
    assert "unknown model 'nope'" in capsys.readouterr().err


def test_info_lists_the_prompted_model_and_whether_its_weights_are_the_published_ones(capsys, monkeypatch,
                                                                                      tmp_path):
    from polypviewer.nets import litemedsam
    from polypviewer.nets.registry import get_prompted_spec

    assert main(["info", "--json", "--no-flops", "--model", "unet"]) == 0
    (row,) = json.loads(capsys.readouterr().out)["prompted"]
    assert (row["model"], row["input_size"], row["prompts"]) == ("litemedsam", 256, ["box", "point"])
    assert row["params"] == 9_791_300  # TinyViT-5M + SAM prompt encoder + mask decoder, counted
    if litemedsam.weights_path() is None:
        assert row["weights"] == "not installed"
    else:
        assert row["weights"] == f"lite_medsam.pth (sha256 {litemedsam.WEIGHTS_SHA256[:12]})"
    # a file that is not the published one is named as such, and a missing one as not installed
    other = tmp_path / "lite_medsam.pth"
    other.write_bytes(b"not the weights")
    spec = get_prompted_spec("litemedsam")

    for found, expected in ((other, f"{other}: not the published weights (sha256 differs)"),
                            (None, "not installed")):
        monkeypatch.setitem(registry._PROMPTED, "litemedsam",
                            dataclasses.replace(spec, weights=lambda found=found: found))
        assert main(["info", "--no-flops", "--model", "unet"]) == 0
        out = capsys.readouterr().out
        assert "litemedsam" in out and expected in out, out


@pytest.mark.slow
def test_bench_quick_writes_the_documented_json(shared_data, tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "--quick", "--model", "lite_pranet", "--size", "64", "--json", str(out),
                 "--data", str(shared_data)]) == 0
    report = json.loads(out.read_text())
    assert "cores" in report["machine"] and "torch" in report["machine"]
    (row,) = report["models"]
    assert row["name"] == "lite_pranet" and row["input"] == 64
    assert row["baseline_fps"] > 0 and row["best_fps"] > 0
    assert row["ratio"] == pytest.approx(row["best_fps"] / row["baseline_fps"], rel=0.02)
    assert row["best_fps"] == max(v for k, v in row["paths"].items() if not k.startswith("baseline"))
    assert row["baseline_fps"] == max(v for k, v in row["paths"].items() if k.startswith("baseline"))
    assert row["best_path"] in row["path_details"].values()
    agree = row["agreement_vs_fp32"]
    assert agree["images"] == 2 and 0 <= agree["mean_abs_diff"] <= 1 and 0 <= agree["dice"] <= 1
    # every fast engine is compared with fp32; "agrees" is the bar, applied as documented
    from polypviewer.engine.agreement import agrees
    from polypviewer.engine.backends import nncf_available, openvino_available

    engines = row["agreement_by_engine"]
    assert "torch" in engines and ("openvino" in engines) == openvino_available()
    assert ("int8" in engines) == (openvino_available() and nncf_available())
    if "int8" in engines:
        assert {"int8-latency", "int8-pipeline"} <= set(row["paths"])
        assert "openvino int8" in row["path_details"]["int8-pipeline"]
    assert row["agrees"] == agrees(agree)
    floor = row["fp32_noise_floor"]  # fp32 against itself under invisible input noise
    assert floor["images"] == 2 and 0 <= floor["mean_abs_diff"] < 0.5 and 0 <= floor["dice"] <= 1
    assert agrees({"mean_abs_diff": 0.009, "dice": 0.981}) and not agrees({"mean_abs_diff": 0.011, "dice": 0.99})
    assert not agrees({"mean_abs_diff": 0.001, "dice": 0.98}) and not agrees(None)
    if row["best_agreeing"] is not None:
        ba = row["best_agreeing"]
        key = next(k for k, v in row["path_details"].items() if v == ba["path"])
        assert ba["fps"] == row["paths"][key] and ba["fps"] <= row["best_fps"]
    (e2e,) = report["end_to_end"]
    assert e2e["model"] == "lite_pranet" and e2e["source"].endswith("colonoscopy_clip_384.mp4")
    assert e2e["fps"] > 0 and e2e["frames"] >= 26
    assert "lite_pranet" in capsys.readouterr().out


@pytest.mark.slow
def test_bench_takes_weights_per_model_and_refuses_bad_ones(shared_data, tmp_path, capsys):
    import torch

    from polypviewer.nets import build_model
    from polypviewer.nets.weights import save_checkpoint

    torch.manual_seed(3)
    ckpt = tmp_path / "unet.safetensors"
    save_checkpoint(ckpt, build_model("unet"), model_name="unet")
    out = tmp_path / "b.json"
    assert main(["bench", "--quick", "--model", "unet", "--size", "64", "--no-int8", "--no-end-to-end",
                 "--weights", f"unet={ckpt}", "--json", str(out), "--data", str(shared_data)]) == 0
    (row,) = json.loads(out.read_text())["models"]
    assert row["weights"].startswith("weights unet.safetensors") and "int8" not in row["agreement_by_engine"]
    capsys.readouterr()
    assert main(["bench", "--quick", "--model", "unet", "--weights", "unet", "--no-end-to-end"]) == 2
    assert main(["bench", "--quick", "--model", "unet", "--weights", f"unet={tmp_path / 'nope'}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "NAME=FILE" in err[0] and "nope: no such weights file" in err[1]


def test_bench_runs_trained_weights_at_their_own_input_size(shared_data, tmp_path):
    """A checkpoint trained at another size (the shipped default: lite_pranet at 288, the
    registry's 256) is timed at its own size, as the app runs it; --size still overrides."""
    import dataclasses

    import torch

    from polypviewer.nets import build_model, get_spec
    from polypviewer.nets.weights import save_checkpoint

    torch.manual_seed(3)
    ckpt = tmp_path / "unet96.safetensors"
    prep = dataclasses.replace(get_spec("unet").preprocessing, input_size=96)
    save_checkpoint(ckpt, build_model("unet"), model_name="unet", preprocessing=prep)
    for extra, want in (([], 96), (["--size", "64"], 64)):
        out = tmp_path / f"b{want}.json"
        assert main(["bench", "--quick", "--model", "unet", "--no-int8", "--no-end-to-end", *extra,
                     "--weights", f"unet={ckpt}", "--json", str(out), "--data", str(shared_data)]) == 0
        (row,) = json.loads(out.read_text())["models"]
        assert row["input"] == want, row


def test_noise_floor_is_zero_for_a_network_that_ignores_noise_and_not_for_one_that_does_not():
    import numpy as np
    import torch
    from torch import nn

    from polypviewer.engine.agreement import noise_floor
    from polypviewer.engine.inference import Predictor
    from polypviewer.nets.registry import IMAGENET_MEAN, IMAGENET_STD, Preprocessing

    pre = Preprocessing(32, "RGB", IMAGENET_MEAN, IMAGENET_STD)
    frames = [np.random.RandomState(i).randint(0, 256, (40, 48, 3), dtype=np.uint8) for i in range(3)]
    torch.manual_seed(0)
    steep = nn.Conv2d(3, 1, 3, padding=1)
    steep.weight.data *= 300  # a steep network: sub-grey-level noise moves it visibly
    blind = nn.Conv2d(3, 1, 1)
    blind.weight.data.zero_()  # output independent of the input
    floors = [noise_floor(Predictor.from_module(net, name="n", preprocessing=pre, backend="torch",
                                                 precision="fp32"), frames) for net in (steep, blind)]
    assert floors[0]["images"] == 3 and floors[0]["mean_abs_diff"] > 1e-3 and floors[0]["dice"] < 1
    assert floors[1]["mean_abs_diff"] == 0 and floors[1]["dice"] == 1.0
    assert noise_floor(None, []) is None
