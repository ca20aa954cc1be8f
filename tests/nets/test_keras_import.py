"""Keras .h5 import: layer conventions checked against numpy versions of the Keras ops, and
whole models through files built in the Keras 2 HDF5 layout (no TensorFlow here)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from torch import nn

from polypviewer.nets import build_model
from polypviewer.nets.keras_import import (
    KerasImportError,
    _targets,
    import_keras_h5,
    load_keras_weights,
    main,
    read_keras_h5,
)
from polypviewer.nets.resunetpp import SeparableConv2d, keras_bn, tf_same_conv2d
from polypviewer.nets.unet import TFSameConvTranspose2d

FIXTURES = Path(__file__).parent / "data" / "keras_tiny"  # written by Keras: make_fixtures.py
TINY = {"resunetpp_sepconv": {"filters": (8, 8, 8, 8, 16)},
        "resunetpp_daspp_relu": {"filters": (8, 8, 8, 8, 16)},
        "unet": {"filters": (4, 4, 4, 4, 8), "up_filters": 4}}



def write_keras_h5(path, layers, *, full_model=False, classes=None, shuffle=True):
    """``layers``: [(layer name, {short weight name: array})] as Keras 2 writes them.

    The file lists layers in another order than their numbers (Keras writes topological
    order), and ``full_model`` puts them under ``model_weights`` with a ``model_config``."""
    layers = list(layers)
    if shuffle:
        random.Random(0).shuffle(layers)
    with h5py.File(path, "w") as f:
        root = f.create_group("model_weights") if full_model else f
        if full_model:
            cfg = {"class_name": "Model", "config": {"layers": [
                {"class_name": (classes or {}).get(n, "Conv2D"), "config": {"name": n}}
                for n, _ in layers] + [{"class_name": "Activation", "config": {"name": "act"}}]}}
            f.attrs["model_config"] = json.dumps(cfg).encode()
        root.attrs["layer_names"] = np.array([n.encode() for n, _ in layers] + [b"act"])
        root.attrs["backend"] = b"tensorflow"
        root.create_group("act").attrs["weight_names"] = np.array([], dtype="S1")
        for name, weights in layers:
            g = root.create_group(name)
            g.attrs["weight_names"] = np.array([f"{name}/{k}:0".encode() for k in weights])
            for k, v in weights.items():
                g.create_dataset(f"{name}/{k}:0", data=np.asarray(v, np.float32))
    return path


def keras_layers_of(model: nn.Module):
    """Our model's tensors in Keras layout and names (TF2 numbering: conv2d, conv2d_1, ..)."""
    out = []
    for kind, mods in _targets(model).items():
        for i, (_, m) in enumerate(mods):
            name = kind if i == 0 else f"{kind}_{i}"
            t = lambda x: x.detach().numpy()  # noqa: E731
            if kind in ("conv2d", "conv2d_transpose"):
                w = {"kernel": t(m.weight).transpose(2, 3, 1, 0), "bias": t(m.bias)}
            elif kind == "separable_conv2d":
                w = {"depthwise_kernel": t(m.depthwise.weight).transpose(2, 3, 0, 1),
                     "pointwise_kernel": t(m.pointwise.weight).transpose(2, 3, 1, 0),
                     "bias": t(m.pointwise.bias)}
            elif kind == "dense":
                w = {"kernel": t(m.weight).T}
            else:
                w = {"gamma": t(m.weight), "beta": t(m.bias), "moving_mean": t(m.running_mean),
                     "moving_variance": t(m.running_var)}
            out.append((name, w))
    return out


def _randomise(model: nn.Module, seed: int) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in list(model.parameters()) + [b for n, b in model.named_buffers() if "running" in n]:
            t.copy_(torch.rand(t.shape, generator=g) + 0.1)
    return model


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = tf_same_conv2d(2, 3, 3)
        self.bn = keras_bn(3)
        self.sep = SeparableConv2d(3, 4, 3, dilation=2)
        self.dense = nn.Linear(4, 2, bias=False)
        self.up = TFSameConvTranspose2d(4, 2)


def _pad(x, p):
    return np.pad(x, ((0, 0), (p, p), (p, p)))


def test_layer_conventions_match_keras_semantics(tmp_path):
    rng = np.random.default_rng(0)
    k_conv, b_conv = rng.normal(size=(3, 3, 2, 3)), rng.normal(size=3)
    gamma, beta, mean, var = rng.normal(size=3), rng.normal(size=3), rng.normal(size=3), rng.random(3)
    k_dw, k_pw, b_sep = rng.normal(size=(3, 3, 3, 1)), rng.normal(size=(1, 1, 3, 4)), rng.normal(size=4)
    k_dense = rng.normal(size=(4, 2))
    k_up, b_up = rng.normal(size=(3, 3, 2, 4)), rng.normal(size=2)
    path = write_keras_h5(tmp_path / "tiny.h5", [
        ("conv2d", {"kernel": k_conv, "bias": b_conv}),
        ("batch_normalization", {"gamma": gamma, "beta": beta, "moving_mean": mean,
                                 "moving_variance": var}),
        ("separable_conv2d", {"depthwise_kernel": k_dw, "pointwise_kernel": k_pw, "bias": b_sep}),
        ("dense", {"kernel": k_dense}),
        ("conv2d_transpose", {"kernel": k_up, "bias": b_up})])
    m = load_keras_weights(Tiny(), path).eval()
    x = rng.normal(size=(2, 6, 6))
    with torch.no_grad():
        run = lambda mod, a: mod(torch.from_numpy(a).float()[None])[0].double().numpy()  # noqa: E731
        # Conv2D 'same': out[o,i,j] = sum K[ki,kj,c,o] x[c,i+ki-1,j+kj-1] + b[o]
        xp = _pad(x, 1)
        want = np.einsum("hwco,chwij->oij", k_conv, np.stack(
            [[xp[:, a:a + 6, b:b + 6] for b in range(3)] for a in range(3)]).transpose(2, 0, 1, 3, 4)
        ) + b_conv[:, None, None]
        np.testing.assert_allclose(run(m.conv, x), want, rtol=1e-4, atol=1e-4)
        y = rng.normal(size=(3, 4, 4))
        want_bn = gamma[:, None, None] * (y - mean[:, None, None]) / np.sqrt(
            var[:, None, None] + 1e-3) + beta[:, None, None]
        np.testing.assert_allclose(run(m.bn, y), want_bn, rtol=1e-4, atol=1e-4)
        # SeparableConv2D, dilation 2: depth-wise then point-wise, bias at the end
        yp = _pad(y, 2)
        dw = sum(k_dw[a, b, :, 0][:, None, None] * yp[:, 2 * a:2 * a + 4, 2 * b:2 * b + 4]
                 for a in range(3) for b in range(3))
        want_sep = np.einsum("cf,cij->fij", k_pw[0, 0], dw) + b_sep[:, None, None]
        np.testing.assert_allclose(run(m.sep, y), want_sep, rtol=1e-4, atol=1e-4)
        v = rng.normal(size=(1, 4))
        got = m.dense(torch.from_numpy(v).float()).double().numpy()
        np.testing.assert_allclose(got, v @ k_dense, rtol=1e-4, atol=1e-4)
        # Conv2DTranspose 'same' stride 2: scatter x[c,i,j] K[ki,kj,o,c] to (2i+ki, 2j+kj),
        # keep the first 2n rows / columns
        z = rng.normal(size=(4, 3, 3))
        full = np.zeros((2, 7, 7))
        for a in range(3):
            for b in range(3):
                full[:, a:a + 5:2, b:b + 5:2] += np.einsum("oc,cij->oij", k_up[a, b], z)
        np.testing.assert_allclose(run(m.up, z), full[:, :6, :6] + b_up[:, None, None],
                                   rtol=1e-4, atol=1e-4)


def test_layers_follow_their_numbers_not_the_file_order(tmp_path):
    model = nn.Sequential(nn.Conv2d(1, 1, 1), nn.Conv2d(1, 1, 1))
    # numeric, not lexicographic: conv2d_9 was created before conv2d_10
    path = write_keras_h5(tmp_path / "two.h5", [
        ("conv2d_10", {"kernel": np.full((1, 1, 1, 1), 10.0), "bias": [0.0]}),
        ("conv2d_9", {"kernel": np.full((1, 1, 1, 1), 9.0), "bias": [0.0]})], shuffle=False)
    assert [layer.name for layer in read_keras_h5(path)] == ["conv2d_9", "conv2d_10"]
    load_keras_weights(model, path)
    assert [float(model[i].weight.detach()) for i in (0, 1)] == [9.0, 10.0]


@pytest.mark.parametrize("name", ["resunetpp_sepconv", "resunetpp_daspp", "unet"])
def test_whole_model_round_trip(tmp_path, name):
    source = _randomise(build_model(name), seed=1).eval()
    path = write_keras_h5(tmp_path / f"{name}.h5", keras_layers_of(source),
                          full_model=name == "unet",
                          classes={"conv2d": "Conv2D"} if name == "unet" else None)
    if name == "unet":  # a model.save file: the config's class names are used
        with h5py.File(path, "r+") as f:
            cfg = json.loads(f.attrs["model_config"])
            for layer in cfg["config"]["layers"]:
                n = layer["config"]["name"]
                layer["class_name"] = {"batch": "BatchNormalizationV1", "conv2d_t": "Conv2DTranspose",
                                       "conv2d": "Conv2D", "act": "Activation"}[
                    next(p for p in ("batch", "conv2d_t", "conv2d", "act") if n.startswith(p))]
            f.attrs["model_config"] = json.dumps(cfg).encode()
    loaded = import_keras_h5(path, name)
    assert not loaded.training
    dst = loaded.state_dict()
    differ = [k for k, v in source.state_dict().items()
              if "num_batches_tracked" not in k and not torch.equal(dst[k], v)]
    assert differ == []


def test_wrong_model_or_broken_file_is_refused_and_model_untouched(tmp_path):
    path = write_keras_h5(tmp_path / "seed.h5", keras_layers_of(build_model("resunetpp_seed")))
    target = build_model("resunetpp")
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(KerasImportError, match=r"seed\.h5: resunetpp has \d+ conv2d layers, the Keras file \d+"):
        load_keras_weights(target, path, "resunetpp")
    # same layer counts, one kernel of the wrong shape: nothing is copied
    layers = keras_layers_of(build_model("resunetpp"))
    name, w = layers[-1]
    layers[-1] = (name, {k: v[..., :1] if v.ndim else v for k, v in w.items()})
    bad = write_keras_h5(tmp_path / "bad.h5", layers)
    with pytest.raises(KerasImportError, match=r"bad\.h5: Keras layer .* shape"):
        load_keras_weights(target, bad, "resunetpp")
    assert all(torch.equal(v, before[k]) for k, v in target.state_dict().items())
    not_h5 = tmp_path / "weights.h5"
    not_h5.write_bytes(b"not an hdf5 file")
    with pytest.raises(KerasImportError, match=r"weights\.h5: not a readable HDF5 file"):
        read_keras_h5(not_h5)
    with h5py.File(tmp_path / "k3.weights.h5", "w") as f:
        f.create_group("layers")
    with pytest.raises(KerasImportError, match="Keras 3"):
        read_keras_h5(tmp_path / "k3.weights.h5")


def test_cli_converts_to_a_loadable_checkpoint(tmp_path, capsys):
    from polypviewer.nets.weights import load_checkpoint, load_weights

    source = _randomise(build_model("unet"), seed=4).eval()
    h5 = write_keras_h5(tmp_path / "unet.h5", keras_layers_of(source))
    out = tmp_path / "unet.safetensors"
    assert main([str(h5), "--model", "unet", "-o", str(out)]) == 0
    ckpt = load_checkpoint(out)
    assert ckpt.model_name == "unet" and ckpt.meta["source"] == "keras:unet.h5"
    assert ckpt.preprocessing is not None and ckpt.preprocessing.color_order == "BGR"
    fresh = build_model("unet").eval()
    load_weights(fresh, ckpt, "unet")
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(fresh(x), source(x), rtol=1e-5, atol=1e-6)
    assert main([str(h5), "--model", "unet", "-o", str(out)]) == 2  # never overwrites
    assert "already exists" in capsys.readouterr().err
    assert main([str(h5), "--model", "nope", "-o", str(tmp_path / "x.safetensors")]) == 2
    assert capsys.readouterr().err.startswith("error: unknown model 'nope'; choose one of: ")


@pytest.mark.parametrize("name", sorted(TINY))
def test_keras_written_file_reproduces_keras_output(name):
    """Files saved by Keras itself (small widths, same layers) and Keras's logits for them."""
    expected = np.load(FIXTURES / "expected.npz")
    model = load_keras_weights(build_model(name, **TINY[name]), FIXTURES / f"{name}.h5", name).eval()
    trainable, keras_total = (int(v) for v in expected[f"{name}_keras_params"])
    n_params = sum(p.numel() for p in model.parameters())
    n_stats = sum(2 * m.num_features for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    assert (n_params, n_params + n_stats) == (trainable, keras_total)
    x = torch.from_numpy(expected["input_nhwc"]).permute(0, 3, 1, 2).contiguous()
    with torch.no_grad():
        got = model(x)[:, 0].numpy()
    want = expected[name]
    assert want.std() > 1e-2  # a real signal, not a constant map
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
