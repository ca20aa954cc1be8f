"""Safe checkpoint loading: formats, wrappers, refusals, named mismatches, weight records."""

from __future__ import annotations

import json
import os
import pickle
import re
from pathlib import Path

import pytest
import torch
from torch import nn

from polypviewer.core.errors import PolypviewerError
from polypviewer.nets.registry import Preprocessing
from polypviewer.nets.weights import (
    META_MODEL,
    Checkpoint,
    CheckpointError,
    CheckpointMismatchError,
    UnsafeCheckpointError,
    WeightRecord,
    default_weights,
    load_checkpoint,
    load_weights,
    save_checkpoint,
    sha256_file,
    shipped_for,
    shipped_weights,
)

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
    other = tiny()
    nn.init.zeros_(other[0].weight)
    other[1].reset_running_stats()
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
    fresh = tiny()
    nn.init.zeros_(fresh[3].weight)
    load_weights(fresh, path, "tiny")
    assert torch.equal(outputs(fresh), outputs(net))


def test_fp16_safetensors_loads_into_fp32_model(tmp_path):
    net, path = tiny(), tmp_path / "half.safetensors"
    save_checkpoint(path, net, model_name="tiny", preprocessing=PREP, dtype=torch.float16)
    assert load_checkpoint(path).state_dict["0.weight"].dtype == torch.float16
    fresh = tiny()
    nn.init.zeros_(fresh[0].weight)
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
    (b"this is not a checkpoint at all " * 8, r"not a PyTorch checkpoint \(it is a text file\)"),
    (None, "damaged or truncated PyTorch checkpoint"),  # truncated zip
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
    with pytest.raises(CheckpointError, match="damaged or truncated safetensors file") as info:
        load_checkpoint(bad)
    assert_one_line(info.value, bad)
    assert "Error" not in str(info.value)  # not "SafetensorError: ..."
    bad.write_bytes(good.read_bytes()[:8] + b"{\xff\xfe" + good.read_bytes()[11:])
    with pytest.raises(CheckpointError, match=r"damaged or truncated safetensors file \(.*UTF-8") as info:
        load_checkpoint(bad)
    assert "Error" not in str(info.value)
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
        f.seek(100)
        b = f.read(1)
        f.seek(100)
        f.write(bytes([b[0] ^ 1]))
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


def test_shipped_for_puts_the_default_first(models_folder):
    """Two shipped versions of one network: the one default.json names is the one to pick."""
    rec_a, rec_b = _record(models_folder, "a"), _record(models_folder, "b")
    assert shipped_for("tiny") == [rec_a, rec_b] and shipped_for("unet") == []
    (models_folder / "default.json").write_text(json.dumps({"weights": "b.safetensors"}))
    assert shipped_for("tiny") == [rec_b, rec_a]
    (models_folder / "default.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="bad default.json"):
        shipped_for("tiny")
    problems: list[str] = []
    assert shipped_for("tiny", problems) == [rec_a, rec_b] and "bad default.json" in problems[0]


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
    assert main([str(src), "--model", "nope", "-o", str(other)]) == 2
    assert capsys.readouterr().err.startswith("error: unknown model 'nope'; choose one of: ")


# --- metadata is checked, not trusted ----------------------------------------------------

GOOD_PREP = {"input_size": 64, "color_order": "RGB", "mean": [0.1, 0.2, 0.3], "std": [0.5, 0.5, 0.5]}


@pytest.mark.parametrize("field, value", [
    ("input_size", 0), ("input_size", -5), ("input_size", 60000), ("input_size", 100),
    ("input_size", 4096), ("input_size", "352"), ("input_size", 352.0), ("input_size", True),
    ("input_size", None),
    ("color_order", "XYZ"), ("color_order", 3), ("color_order", ""),
    ("mean", [0.1, 0.2]), ("mean", [0.1, float("nan"), 0.3]), ("mean", "0.5"),
    ("mean", [0.1, float("inf"), 0.3]), ("mean", [0.1, "a", 0.3]),
    ("std", [0.0, 0.5, 0.5]), ("std", [-0.5, 0.5, 0.5]), ("std", [0.5, 0.5, float("nan")]),
    ("std", [0.5, 0.5, 1e-30]), ("std", [0.5, 0.5, 0.5, 0.5]), ("std", None),
])
def test_bad_preprocessing_metadata_is_refused_on_load(tmp_path, field, value):
    path = tmp_path / "w.safetensors"
    save_checkpoint(path, tiny(), model_name="tiny", preprocessing={**GOOD_PREP, field: value})
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert_one_line(info.value, path)
    assert f"bad polypviewer.preprocessing metadata: {field} " in str(info.value)


def test_missing_input_size_and_non_object_metadata_are_refused(tmp_path):
    path = tmp_path / "w.safetensors"
    save_checkpoint(path, tiny(), model_name="tiny",
                    preprocessing={k: v for k, v in GOOD_PREP.items() if k != "input_size"})
    with pytest.raises(CheckpointError, match="no input_size") as info:
        load_checkpoint(path)
    assert_one_line(info.value, path)
    from safetensors.torch import save_file
    save_file({"w": torch.zeros(2)}, str(path), metadata={"polypviewer.preprocessing": "[352]"})
    with pytest.raises(CheckpointError, match="expected a JSON object, got list"):
        load_checkpoint(path)
    save_file({"w": torch.zeros(2)}, str(path), metadata={"polypviewer.preprocessing": "{352"})
    with pytest.raises(CheckpointError, match="bad polypviewer.preprocessing metadata"):
        load_checkpoint(path)


@pytest.mark.parametrize("size", [32, 352, 2048])
def test_sane_preprocessing_metadata_loads(tmp_path, size):
    path = tmp_path / "w.safetensors"
    # Defaults for absent fields; integers as mean/std; a lower-case colour order.
    save_checkpoint(path, tiny(), model_name="tiny",
                    preprocessing={"input_size": size, "color_order": "bgr", "std": [1, 2, 3]})
    assert load_checkpoint(path).preprocessing == Preprocessing(size, "BGR", (0.0, 0.0, 0.0),
                                                                (1.0, 2.0, 3.0))


def test_model_card_preprocessing_is_checked(tmp_path):
    _record(tmp_path)
    card_path = tmp_path / "tiny.json"
    card = json.loads(card_path.read_text())
    card["preprocessing"]["input_size"] = 60000
    card_path.write_text(json.dumps(card))
    with pytest.raises(CheckpointError, match="bad model card preprocessing: input_size 60000") as info:
        WeightRecord.from_card(card_path)
    assert_one_line(info.value, card_path)


# --- tensors are checked, not trusted ----------------------------------------------------

def _doctored(key: str, make) -> dict[str, torch.Tensor]:
    sd = dict(tiny().state_dict())
    sd[key] = make(sd[key])
    return sd


@pytest.mark.parametrize("key, make, reason", [
    ("0.weight", lambda t: (t * 1000).to(torch.int32), "tensor 0.weight is stored as int32"),
    ("0.weight", lambda t: t > 0, "tensor 0.weight is stored as bool"),
    ("3.bias", lambda t: t.to(torch.uint8), "tensor 3.bias is stored as uint8"),
    ("1.running_var", lambda t: t.to(torch.int64), "tensor 1.running_var is stored as int64"),
    ("0.weight", lambda t: t.index_fill(0, torch.tensor([1]), float("nan")),
     "tensor 0.weight holds NaN or infinite values"),
    ("1.running_mean", lambda t: t.index_fill(0, torch.tensor([0]), float("inf")),
     "tensor 1.running_mean holds NaN or infinite values"),
    ("0.bias", lambda t: t.to(torch.float16).index_fill(0, torch.tensor([0]), float("-inf")),
     "tensor 0.bias holds NaN or infinite values"),
    ("0.bias", lambda t: t.to(torch.float64).index_fill(0, torch.tensor([0]), 1e300),
     "tensor 0.bias holds values too large for float32"),
    ("1.num_batches_tracked", lambda t: t.to(torch.float32),
     "tensor 1.num_batches_tracked is stored as float32; the model needs integers"),
])
@pytest.mark.parametrize("fmt", ["safetensors", "pth"])
def test_wrongly_typed_or_non_finite_tensors_are_refused(tmp_path, key, make, reason, fmt):
    sd = _doctored(key, make)
    path = tmp_path / f"w.{fmt}"
    if fmt == "pth":
        torch.save(sd, path)
    else:
        save_checkpoint(path, sd, model_name="tiny", preprocessing=PREP)
    net = tiny()
    nn.init.zeros_(net[3].weight)
    before = outputs(net)
    with pytest.raises(CheckpointMismatchError, match=reason) as info:
        load_weights(net, path, "tiny")
    assert_one_line(info.value, path)
    assert torch.equal(outputs(net), before)  # nothing was loaded


def test_first_bad_tensor_in_model_order_is_named():
    sd = _doctored("3.weight", lambda t: t.to(torch.int32))
    sd["0.weight"] = sd["0.weight"].to(torch.int16)
    with pytest.raises(CheckpointMismatchError, match="tensor 0.weight is stored as int16"):
        load_weights(tiny(), Checkpoint(sd), "tiny")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_every_float_storage_loads_and_int_buffers_stay_int(dtype):
    net = tiny()
    sd = {k: (v.to(dtype) if v.is_floating_point() else v.to(torch.int32))
          for k, v in net.state_dict().items()}
    fresh = tiny()
    nn.init.zeros_(fresh[0].weight)
    load_weights(fresh, Checkpoint(sd), "tiny")
    assert torch.allclose(outputs(fresh), outputs(net), atol=5e-2)
    assert fresh[0].weight.dtype == torch.float32 and fresh[1].num_batches_tracked.dtype == torch.long


# --- what a file that is no checkpoint is ------------------------------------------------

_EXCEPTION_NAME = re.compile(r"\b\w*(Error|Exception)\b")


def _load_error(path: Path) -> CheckpointError:
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert_one_line(info.value, path)
    assert not _EXCEPTION_NAME.search(str(info.value)), str(info.value)
    return info.value


@pytest.mark.parametrize("content, reason", [
    (b"# my notes\nlr = 1e-4\nepochs: 20\n", "not a PyTorch checkpoint (it is a text file)"),
    ("Gewichte f\u00fcr PraNet \u2013 nicht \u00f6ffnen\n".encode() * 300, "(it is a text file)"),
    (b"\x89HDF\r\n\x1a\n" + bytes(200), "not a PyTorch checkpoint (it is an HDF5 file"),
    (b"\x89PNG\r\n\x1a\n" + bytes(200), "not a PyTorch checkpoint (it is a PNG image)"),
    (bytes(range(1, 256)) * 4, "not a PyTorch checkpoint (not a zip or pickle file)"),
    (bytes(range(128, 256)) * 4, "not a PyTorch checkpoint (not a zip or pickle file)"),
])
def test_files_that_are_not_checkpoints_say_what_they_are(tmp_path, content, reason):
    path = tmp_path / "weights.pth"
    path.write_bytes(content)
    err = _load_error(path)
    assert reason in str(err) and not isinstance(err, UnsafeCheckpointError)


def test_a_zip_that_is_not_a_torch_checkpoint_is_named(tmp_path):
    import numpy as np

    path = tmp_path / "weights.pth"
    with open(path, "wb") as f:
        np.savez(f, w=np.zeros(3))
    assert "not a PyTorch checkpoint (a zip archive without PyTorch's data.pkl)" in str(_load_error(path))


@pytest.mark.parametrize("content", [b"\x80\x02.", b"\x80\x02e."])
def test_malformed_pickles_are_damaged_not_internal_errors(tmp_path, content):
    path = tmp_path / "bad.pth"
    path.write_bytes(content)  # STOP / APPENDS on an empty stack: "pop from empty list" in torch
    err = _load_error(path)
    assert "damaged or truncated PyTorch checkpoint" in str(err)
    assert not isinstance(err, UnsafeCheckpointError)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("content, op", [
    (b"\x80\x02]q\x00(K\x01e0.", "POP"),  # a list, then POP: harmless, but torch lacks POP
    (pickle.dumps({"epoch": 3, "lr": 0.1}, protocol=5), "FRAME"),
])
def test_pickles_the_safe_loader_cannot_read_are_not_called_code(tmp_path, content, op):
    path = tmp_path / "odd.pth"
    path.write_bytes(content)
    err = _load_error(path)
    assert not isinstance(err, UnsafeCheckpointError)
    assert f"not a PyTorch checkpoint the safe loader can read: its pickle uses the {op} instruction" \
        in str(err)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("protocol", [2, 5])
def test_raw_pickles_with_code_name_the_callable(tmp_path, protocol):
    marker, path = tmp_path / "PWNED", tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps({"w": 1, "hook": Evil(marker)}, protocol=protocol))
    with pytest.raises(UnsafeCheckpointError, match=r"it would call (posix|os|nt)\.system"):
        load_checkpoint(path)
    assert not marker.exists()


@pytest.mark.parametrize("legacy", [False, True])
@pytest.mark.slow
def test_every_truncation_is_damage_never_code(tmp_path, legacy):
    src = tmp_path / "full.pth"
    torch.save({"w": torch.arange(4.0), "n": torch.tensor(3)}, src,
               _use_new_zipfile_serialization=not legacy)
    data = src.read_bytes()
    path = tmp_path / "cut.pth"
    cut_in_a_global = 0
    for n in range(4, len(data)):
        path.write_bytes(data[:n])
        if legacy and data[:n].endswith(b"torch._utils\n_rebuild_ten"):
            cut_in_a_global += 1
        err = _load_error(path)
        assert not isinstance(err, UnsafeCheckpointError), (n, str(err))
        assert "damaged or truncated PyTorch checkpoint" in str(err), (n, str(err))
    assert cut_in_a_global == legacy  # the case that used to read as "it would call torch._u..."


def test_legacy_format_pickle_with_code_is_still_refused_as_code(tmp_path):
    marker, path = tmp_path / "PWNED", tmp_path / "evil.pth"
    torch.save({"weight": torch.zeros(2), "hook": Evil(marker)}, path,
               _use_new_zipfile_serialization=False)
    with pytest.raises(UnsafeCheckpointError, match=r"contains code .*it would call (posix|os|nt)\.system"):
        load_checkpoint(path)
    assert not marker.exists()


# --- the path itself ---------------------------------------------------------------------

def test_links_and_folders_are_named(tmp_path):
    loop_a, loop_b = tmp_path / "a.pth", tmp_path / "b.pth"
    loop_a.symlink_to(loop_b)
    loop_b.symlink_to(loop_a)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(loop_a)
    assert str(info.value) == f"{loop_a}: symbolic link loop"
    dangling = tmp_path / "gone.pth"
    dangling.symlink_to(tmp_path / "deleted.pth")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(dangling)
    assert str(info.value) == f"{dangling}: broken symbolic link (to {tmp_path / 'deleted.pth'})"
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tmp_path)
    assert str(info.value) == f"{tmp_path}: is a folder, not a checkpoint file"
    good = tmp_path / "good.safetensors"
    save_checkpoint(good, tiny(), model_name="tiny", preprocessing=PREP)
    link = tmp_path / "link.safetensors"
    link.symlink_to(good)
    assert load_checkpoint(link).model_name == "tiny"  # reading through a link is fine


# --- saving ------------------------------------------------------------------------------

@pytest.mark.parametrize("overwrite", [False, True])
def test_save_never_writes_through_a_link(tmp_path, overwrite):
    victim = tmp_path / "victim.bin"
    dangling = tmp_path / "dangling.safetensors"
    dangling.symlink_to(victim)  # exists() says no
    with pytest.raises(PolypviewerError, match="symbolic link") as info:
        save_checkpoint(dangling, tiny(), model_name="tiny", preprocessing=PREP, overwrite=overwrite)
    assert_one_line(info.value, dangling)
    assert dangling.is_symlink() and not victim.exists()
    victim.write_bytes(b"precious")
    link = tmp_path / "link.safetensors"
    link.symlink_to(victim)
    with pytest.raises(PolypviewerError, match="symbolic link"):
        save_checkpoint(link, tiny(), model_name="tiny", preprocessing=PREP, overwrite=overwrite)
    assert victim.read_bytes() == b"precious" and link.is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dangling.safetensors", "link.safetensors",
                                                         "victim.bin"]  # no temporaries left


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield
    os.umask(old)


def test_saved_files_get_the_umask_mode(tmp_path, umask_027):
    rec = _record(tmp_path)
    assert rec.file.stat().st_mode & 0o777 == 0o640  # not mkstemp's 0600
    assert (tmp_path / "tiny.json").stat().st_mode & 0o777 == 0o640
    assert load_checkpoint(rec.file).sha256 == rec.sha256


def test_card_is_never_written_through_a_link(tmp_path):
    rec = _record(tmp_path)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    link = tmp_path / "link.json"
    link.symlink_to(victim)
    with pytest.raises(PolypviewerError, match="symbolic link"):
        rec.to_card(link)
    assert victim.read_text() == "precious"
