"""Regenerates the Keras-written fixtures of ``tests/nets/test_keras_import.py`` (not run by
the tests; needs ``pip install keras`` and any Keras 3 backend, e.g. KERAS_BACKEND=torch):

    KERAS_BACKEND=torch python tests/nets/data/keras_tiny/make_fixtures.py

Builds small-width ResUNet++ variants and the U-Net in Keras, layer for layer as the
official Keras code (DebeshJha/ResUNetPlusPlus ``m_resunet.py`` / ``unet.py``) and the
MediaEval 2020 paper describe them, gives BN and biases random values, saves each with
``model.save(.h5)`` (the legacy HDF5 layout that Keras 2 also writes) and stores Keras's
pre-sigmoid output for a fixed input in ``expected.npz``.
"""
import keras
from keras import layers as L


def se(x, ratio=8):
    f = x.shape[-1]
    s = L.GlobalAveragePooling2D()(x)
    s = L.Reshape((1, 1, f))(s)
    s = L.Dense(f // ratio, activation="relu", use_bias=False)(s)
    s = L.Dense(f, activation="sigmoid", use_bias=False)(s)
    return L.Multiply()([x, s])


def stem(x, n, strides=1):
    xi = x
    x = L.Conv2D(n, 3, padding="same", strides=strides)(x)
    x = L.BatchNormalization()(x)
    x = L.Activation("relu")(x)
    x = L.Conv2D(n, 3, padding="same")(x)
    s = L.Conv2D(n, 1, padding="same", strides=strides)(xi)
    s = L.BatchNormalization()(s)
    return se(L.Add()([x, s]))


def res(x, n, strides=1):
    xi = x
    x = L.BatchNormalization()(x)
    x = L.Activation("relu")(x)
    x = L.Conv2D(n, 3, padding="same", strides=strides)(x)
    x = L.BatchNormalization()(x)
    x = L.Activation("relu")(x)
    x = L.Conv2D(n, 3, padding="same", strides=1)(x)
    s = L.Conv2D(n, 1, padding="same", strides=strides)(xi)
    s = L.BatchNormalization()(s)
    return se(L.Add()([x, s]))


def aspp(x, n, rates, sep=False):
    ys = []
    for r in rates:
        conv = L.SeparableConv2D if sep else L.Conv2D
        y = conv(n, 3, dilation_rate=r, padding="same")(x)
        ys.append(L.BatchNormalization()(y))
    y = L.Add()(ys)
    return L.Conv2D(n, 1, padding="same")(y)


def daspp(x, n, relu):
    x0 = L.SeparableConv2D(n, 1, padding="same")(x)
    x0 = L.BatchNormalization()(x0)
    xs = []
    for r in (3, 6, 9):
        y = L.SeparableConv2D(n, 3, dilation_rate=r, padding="same")(x)
        if relu:
            y = L.Activation("relu")(y)
        y = L.BatchNormalization()(y)
        xs.append(L.Conv2D(n, 3, padding="same")(y))
    x4 = L.AveragePooling2D(2)(x)
    x4 = L.Conv2D(16, 1, padding="same")(x4)
    x4 = L.UpSampling2D(2)(x4)
    y = L.Concatenate()([x, x0, *xs, x4])
    return L.Conv2D(n, 1, padding="same")(y)


def att(g, x):
    f = x.shape[-1]
    gc = L.BatchNormalization()(g)
    gc = L.Activation("relu")(gc)
    gc = L.Conv2D(f, 3, padding="same")(gc)
    gp = L.MaxPooling2D(2, 2)(gc)
    xc = L.BatchNormalization()(x)
    xc = L.Activation("relu")(xc)
    xc = L.Conv2D(f, 3, padding="same")(xc)
    s = L.Add()([gp, xc])
    s = L.BatchNormalization()(s)
    s = L.Activation("relu")(s)
    s = L.Conv2D(f, 3, padding="same")(s)
    return L.Multiply()([s, x])


def block(kind, x, n):
    if kind == "aspp4":
        return aspp(x, n, (6, 12, 18, 1))
    if kind == "aspp5":
        return aspp(x, n, (6, 12, 18, 1, 24))
    if kind == "sepconv":
        return aspp(x, n, (6, 12, 18, 1, 24), sep=True)
    return daspp(x, n, kind == "daspp_relu")


def resunetpp(kind, size=256, f=(16, 32, 64, 128, 256)):
    inp = keras.Input((size, size, 3))
    c1 = stem(inp, f[0])
    c2 = res(c1, f[1], 2)
    c3 = res(c2, f[2], 2)
    c4 = res(c3, f[3], 2)
    b1 = block(kind, c4, f[4])
    d = att(c3, b1)
    d = L.UpSampling2D(2)(d)
    d = L.Concatenate()([d, c3])
    d = res(d, f[3])
    d2 = att(c2, d)
    d2 = L.UpSampling2D(2)(d2)
    d2 = L.Concatenate()([d2, c2])
    d2 = res(d2, f[2])
    d3 = att(c1, d2)
    d3 = L.UpSampling2D(2)(d3)
    d3 = L.Concatenate()([d3, c1])
    d3 = res(d3, f[1])
    out = block(kind, d3, f[0])
    out = L.Conv2D(1, 1, padding="same")(out)
    out = L.Activation("sigmoid")(out)
    return keras.Model(inp, out)


def unet(size=256, f=(16, 32, 64, 128, 256), up=128):
    def cb(x, n, pool=True):
        x = L.Conv2D(n, 3, padding="same")(x)
        x = L.BatchNormalization()(x)
        x = L.Activation("relu")(x)
        x = L.Conv2D(n, 3, padding="same")(x)
        x = L.BatchNormalization()(x)
        x = L.Activation("relu")(x)
        return (x, L.MaxPooling2D(2, 2)(x)) if pool else x
    inp = keras.Input((size, size, 3))
    c1, p1 = cb(inp, f[0])
    c2, p2 = cb(p1, f[1])
    c3, p3 = cb(p2, f[2])
    c4, p4 = cb(p3, f[3])
    b = cb(cb(p4, f[4], False), f[4], False)
    d = b
    for skip, n in ((c4, f[3]), (c3, f[2]), (c2, f[1]), (c1, f[0])):
        d = L.Conv2DTranspose(up, 3, padding="same", strides=2)(d)
        d = L.Concatenate()([d, skip])
        d = cb(d, n, False)
    out = L.Conv2D(1, 1, padding="same")(d)
    out = L.BatchNormalization()(out)
    out = L.Activation("sigmoid")(out)
    return keras.Model(inp, out)


KINDS = {"resunetpp": "aspp4", "resunetpp_seed": "aspp5", "resunetpp_sepconv": "sepconv",
         "resunetpp_daspp": "daspp", "resunetpp_daspp_relu": "daspp_relu"}


def build(name, size=256, **kw):
    return unet(size, **kw) if name == "unet" else resunetpp(KINDS[name], size, **kw)


TINY = {"resunetpp_sepconv": {"f": (8, 8, 8, 8, 16)},
        "resunetpp_daspp_relu": {"f": (8, 8, 8, 8, 16)},
        "unet": {"f": (4, 4, 4, 4, 8), "up": 4}}
SIZE = 32


def main() -> None:
    import os

    import h5py
    import numpy as np
    from keras.src.legacy.saving import legacy_h5_format

    here = os.path.dirname(os.path.abspath(__file__))
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, size=(2, SIZE, SIZE, 3)).astype("float32")
    expected = {"input_nhwc": x}
    for name, cfg in TINY.items():
        keras.backend.clear_session()
        model = build(name, SIZE, **cfg)
        weights = []
        for w in model.weights:
            a = np.asarray(w.numpy())  # Keras's own initialisers for kernels
            leaf = w.path.split("/")[-1]
            if leaf in ("bias", "beta", "moving_mean"):
                a = rng.normal(0, 0.1, size=w.shape)
            elif leaf in ("gamma", "moving_variance"):
                a = rng.uniform(0.5, 1.5, size=w.shape)
            weights.append(a.astype("float32"))
        model.set_weights(weights)
        path = os.path.join(here, f"{name}.h5")
        # libver="latest": compact HDF5 groups keep the fixtures small; same content
        with h5py.File(path, "w", libver="latest") as f:
            if name == "unet":  # model.save: weights under model_weights/ plus model_config
                legacy_h5_format.save_model_to_hdf5(model, f, include_optimizer=False)
            else:  # the layout of Keras 2's model.save_weights("x.h5")
                legacy_h5_format.save_weights_to_hdf5_group(f, model)
        logits = keras.Model(model.inputs, model.layers[-2].output)
        expected[name] = keras.ops.convert_to_numpy(logits(x, training=False))[..., 0]
        expected[name + "_keras_params"] = np.array(
            [sum(int(np.prod(w.shape)) for w in model.trainable_weights), model.count_params()])
    np.savez_compressed(os.path.join(here, "expected.npz"), **expected)


if __name__ == "__main__":
    main()
