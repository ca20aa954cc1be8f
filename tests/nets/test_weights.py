"""Safe checkpoint loading: formats, wrappers, refusals, named mismatches, weight records."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
import torch
from torch import nn

from polypviewer.core.errors import PolypviewerError
from polypviewer.nets.registry import Preprocessing
from polypviewer.nets.weights import (
    META_MODEL, Checkpoint, CheckpointError, CheckpointMismatchError, UnsafeCheckpointError,
    WeightRecord, default_weights, load_checkpoint, load_weights, save_checkpoint, sha256_file,
    shipped_weights)

PREP = Preprocessing(64, "BGR", (0.1, 0.2, 0.3), (0.5, 0.5, 0.5))



def tiny(out: int = 1) -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                        nn.Conv2d(4, out, 1))
    with torch.no_grad():  # non-trivial BN statistics, so a lost buffer would show
        net[1].running_mean.uniform_(-1, 1)
        net[1].running_var.uniform_(0.5, 2)
    return net.eval()


def outputs(net: nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return net(torch.linspace(-1, 1, 3 * 8 * 8).reshape(1, 3, 8, 8))


def assert_one_line(err: Exception, path: Path) -> None:
    text = str(err)
    assert "\n" not in text and text.startswith(str(path))


class Evil:
    """Unpickling this would create the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


# --- round trips -------------------------------------------------------------------------

def test_safetensors_round_trip_with_metadata(tmp_path):
    net, path = tiny(), tmp_path / "w.safetensors"
    digest = save_checkpoint(path, net, model_name="tiny", preprocessing=PREP,
                             meta={"data": "endotect", "dice": 0.5})
    assert digest == sha256_file(path)
    ckpt = load_checkpoint(path)
    assert ckpt.metadata[META_MODEL] == "tiny" and ckpt.model_name == "tiny"
    assert all(isinstance(v, str) for v in ckpt.metadata.values())
    assert ckpt.preprocessing == PREP
    assert ckpt.meta == {"data": "endotect", "dice": 0.5, "params": 125}
    assert ckpt.sha256 == digest and ckpt.version == digest[:12] and ckpt.path == path
    other = tiny(); nn.init.zeros_(other[0].weight); other[1].reset_running_stats()
    load_weights(other, ckpt, "tiny")
    assert torch.equal(outputs(other), outputs(net))
    assert not [p for p in tmp_path.iterdir() if p.name != "w.safetensors"]  # no temp files left


@pytest.mark.parametrize("wrap", ["plain", "state_dict", "model", "module_prefix", "legacy_format"])
def test_pth_wrappers_are_unwrapped(tmp_path, wrap):
    net, path = tiny(), tmp_path / "w.pth"
    sd = net.state_dict()
    obj = {"plain": sd, "state_dict": {"state_dict": sd, "epoch": 3},
           "model": {"model": sd, "optimizer": {"lr": 1e-4}},
           "module_prefix": {"state_dict": {f"module.{k}": v for k, v in sd.items()}},
           "legacy_format": sd}[wrap]
    torch.save(obj, path, _use_new_zipfile_serialization=(wrap != "legacy_format"))
    ckpt = load_checkpoint(path)
    assert sorted(ckpt.state_dict) == sorted(sd) and ckpt.metadata == {}
    fresh = tiny(); nn.init.zeros_(fresh[3].weight)
    load_weights(fresh, path, "tiny")
    assert torch.equal(outputs(fresh), outputs(net))


def test_fp16_safetensors_loads_into_fp32_model(tmp_path):
    net, path = tiny(), tmp_path / "half.safetensors"
    save_checkpoint(path, net, model_name="tiny", preprocessing=PREP, dtype=torch.float16)
    assert load_checkpoint(path).state_dict["0.weight"].dtype == torch.float16
    fresh = tiny(); nn.init.zeros_(fresh[0].weight)
    load_weights(fresh, path, "tiny")
    assert fresh[0].weight.dtype == torch.float32
    assert torch.allclose(outputs(fresh), outputs(net), atol=1e-2)
    assert fresh[1].num_batches_tracked.dtype == torch.long


def test_save_never_overwrites_unless_asked(tmp_path):
    path = tmp_path / "w.safetensors"
    first = save_checkpoint(path, tiny(), model_name="tiny", preprocessing=PREP)
    with pytest.raises(CheckpointError, match="already exists") as info:
        save_checkpoint(path, tiny(2), model_name="tiny", preprocessing=PREP)
    assert_one_line(info.value, path)
    assert sha256_file(path) == first
    second = save_checkpoint(path, tiny(2), model_name="tiny", preprocessing=PREP, overwrite=True)
    assert second != first and sha256_file(path) == second


# --- refusals ----------------------------------------------------------------------------

@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # torch notes the raw pickle
@pytest.mark.parametrize("kind", ["torch_zip", "raw_pickle"])
def test_pickle_with_code_is_refused_and_nothing_runs(tmp_path, kind):
    marker, path = tmp_path / "PWNED", tmp_path / "evil.pth"
    payload = {"weight": torch.zeros(2), "hook": Evil(marker)}
    if kind == "torch_zip":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload))
    with pytest.raises(UnsafeCheckpointError, match="refusing to load: the file contains code") as info:
        load_checkpoint(path)
    assert_one_line(info.value, path)
    assert isinstance(info.value, PolypviewerError)
    assert not marker.exists()
    with pytest.raises(UnsafeCheckpointError):
        load_weights(tiny(), path, "tiny")
    assert not marker.exists()


@pytest.mark.parametrize("content, reason", [
    (b"", "empty file"),
    (b"this is not a checkpoint at all " * 8, "not a readable PyTorch checkpoint"),
    (None, "not a readable PyTorch checkpoint"),  # truncated zip
])
def test_garbage_and_truncated_files_give_one_line_errors(tmp_path, content, reason):
    path = tmp_path / "bad.pth"
    if content is None:
        torch.save(tiny().state_dict(), path)
        content = path.read_bytes()[: path.stat().st_size // 2]
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=reason) as info:
        load_checkpoint(path)
    assert_one_line(info.value, path)


def test_truncated_safetensors_and_missing_file(tmp_path):
    good = tmp_path / "good.safetensors"
    save_checkpoint(good, tiny(), model_name="tiny", preprocessing=PREP)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(good.read_bytes()[:-40])
    with pytest.raises(CheckpointError, match="not a readable safetensors file") as info:
        load_checkpoint(bad)
    assert_one_line(info.value, bad)
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        load_checkpoint(tmp_path / "nope.pth")


def test_pickle_without_a_state_dict_is_named(tmp_path):
    path = tmp_path / "list.pth"
    torch.save({"epoch": 3, "weights": [torch.zeros(1)]}, path)
    with pytest.raises(CheckpointError, match="no state_dict found") as info:
        load_checkpoint(path)
    assert_one_line(info.value, path)


# --- mismatches --------------------------------------------------------------------------

def test_wrong_architecture_names_model_and_keys(tmp_path):
    path = tmp_path / "other.safetensors"
    other = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv2d(4, 1, 1), nn.Conv2d(1, 1, 1))
    save_checkpoint(path, other, model_name="unet", preprocessing=PREP)
    with pytest.raises(CheckpointMismatchError) as info:
        load_weights(tiny(), path, "pranet")
    msg = str(info.value)
    assert_one_line(info.value, path)
    assert "does not fit model 'pranet'" in msg and "saved for model 'unet'" in msg
    assert ("5 missing: 1.running_mean, 1.running_var, 1.num_batches_tracked, 3.weight, 3.bias;"
            in msg)  # in the model's order
    assert "2 unexpected: 2.bias, 2.weight;" in msg
    assert "2 wrong shape: 1.weight is (1, 4, 1, 1) in the file, (4,) in the model" in msg


def test_shape_mismatch_is_named_and_model_untouched():
    net = tiny()
    before = outputs(net)
    sd = tiny(out=2).state_dict()
    expected = r"2 wrong shape: 3.weight is \(2, 4, 1, 1\) in the file, \(1, 4, 1, 1\) in the model"
    with pytest.raises(CheckpointMismatchError, match=expected):
        load_weights(net, Checkpoint(sd), "tiny")
    assert torch.equal(outputs(net), before)


# --- weight records ----------------------------------------------------------------------

def _record(folder: Path, name: str = "tiny") -> WeightRecord:
    weights = folder / f"{name}.safetensors"
    digest = save_checkpoint(weights, tiny(), model_name="tiny", preprocessing=PREP)
    rec = WeightRecord(weights, digest, "tiny", PREP, {"params": 125, "data": "endotect"})
    rec.to_card(folder / f"{name}.json")
    return rec


def test_weight_record_card_round_trip_and_verify(tmp_path):
    rec = _record(tmp_path)
    card = json.loads((tmp_path / "tiny.json").read_text())
    assert card["file"] == "tiny.safetensors"  # relative to the card
    again = WeightRecord.from_card(tmp_path / "tiny.json")
    assert again == rec and again.version == rec.sha256[:12]
    again.verify()
    with open(rec.file, "r+b") as f:  # flip a byte
        f.seek(100); b = f.read(1); f.seek(100); f.write(bytes([b[0] ^ 1]))
    with pytest.raises(CheckpointError, match="sha256 mismatch"):
        again.verify()
    (tmp_path / "broken.json").write_text('{"file": "x.safetensors"}')
    with pytest.raises(CheckpointError, match="bad model card"):
        WeightRecord.from_card(tmp_path / "broken.json")


@pytest.fixture
def models_folder(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "models"
    folder.mkdir()
    monkeypatch.setattr("polypviewer.core.paths.models_dir", lambda: folder)
    return folder


def test_shipped_and_default_weights(models_folder):
    assert shipped_weights() == [] and default_weights() is None
    rec_a, rec_b = _record(models_folder, "a"), _record(models_folder, "b")
    (models_folder / "default.json").write_text(json.dumps({"weights": "b.safetensors"}))
    assert shipped_weights() == [rec_a, rec_b]  # default.json is not a card
    assert default_weights() == rec_b.file
    (models_folder / "c.json").write_text("{}")
    with pytest.raises(CheckpointError, match="bad model card"):
        shipped_weights()
    problems: list[str] = []
    assert shipped_weights(problems) == [rec_a, rec_b]
    assert len(problems) == 1 and problems[0].startswith(str(models_folder / "c.json"))


@pytest.mark.parametrize("text, reason", [
    ("{not json", "bad default.json"),
    ('{"weights": "missing.safetensors"}', "are missing"),
])
def test_broken_default_json_is_an_error(models_folder, text, reason):
    (models_folder / "default.json").write_text(text)
    with pytest.raises(CheckpointError, match=reason) as info:
        default_weights()
    assert_one_line(info.value, models_folder / "default.json")


# --- conversion of third-party checkpoints -----------------------------------------------

def test_convert_pth_to_safetensors_names_model_and_source(tmp_path, capsys):
    from polypviewer.nets import build_model, get_spec
    from polypviewer.nets.weights import main

    torch.manual_seed(3)
    net = build_model("unet").eval()
    src = tmp_path / "third_party.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}}, src)
    dst = tmp_path / "unet.safetensors"
    assert main([str(src), "--model", "unet", "-o", str(dst), "--half"]) == 0
    assert "sha256" in capsys.readouterr().out
    ckpt = load_checkpoint(dst)
    assert ckpt.model_name == "unet" and ckpt.preprocessing == get_spec("unet").preprocessing
    assert ckpt.meta["source"] == "third_party.pth" and ckpt.meta["source_sha256"] == sha256_file(src)
    assert {v.dtype for v in ckpt.state_dict.values() if v.is_floating_point()} == {torch.float16}
    # Refused before writing: wrong architecture, and an existing output.
    other = tmp_path / "wrong.safetensors"
    assert main([str(src), "--model", "resunetpp", "-o", str(other)]) == 2
    err = capsys.readouterr().err
    assert "does not fit model 'resunetpp'" in err and len(err.strip().splitlines()) == 1
    assert not other.exists()
    assert main([str(src), "--model", "unet", "-o", str(dst)]) == 2
    assert "already exists" in capsys.readouterr().err
