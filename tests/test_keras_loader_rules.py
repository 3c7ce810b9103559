"""What fastrnn.load_keras and fastrnn.from_keras refuse, and what Keras 2's files mean.

* A user's class registered with Keras (or an unregistered subclass) named like a
  built-in (``class Dense(keras.layers.Dense)`` overriding ``call``) is refused, in a
  file and live, nested too: building the built-in of that name would drop its call.
* A ``mask=`` passed to a layer in a functional model is refused unless it is the mask
  Keras itself propagates there (which Keras records in the same form), which runs.
* ``hard_sigmoid`` in a model Keras 2 saved (TF checkpoint, legacy ``.h5`` with a 2.x
  ``keras_version`` or none, a ``.keras`` whose metadata says 2.x) is Keras 2's
  ``clip(0.2 x + 0.5, 0, 1)``, kept through ``get_config`` and ``fastrnn.save``.
* A Keras-quantized model (``model.quantize("int8")``) is refused naming the layer.
* A truncated ``.keras`` file is said to be a truncated zip.

Expected outputs come from live Keras 3 (torch backend): for Keras 2's activation, a
Keras 3 model whose activation is Keras 2's formula written out here.
"""

import json
import os
import shutil
import zipfile

import numpy as np
import pytest

keras = pytest.importorskip("keras")
h5py = pytest.importorskip("h5py")

import fastrnn  # noqa: E402
from conftest import DATA  # noqa: E402

L = keras.layers
ATOL = 2e-5


def _randomize(model, rng):
    for layer in model.layers:
        ws = layer.get_weights()
        if ws:
            layer.set_weights([rng.uniform(-0.6, 0.6, w.shape).astype(w.dtype) for w in ws])


def _predict(model, x):
    return np.asarray(model.predict(x, verbose=0))


def _as_keras2(source, target):
    """A copy of the .keras file ``source`` whose metadata.json says Keras 2.15
    (the format tf.keras 2.13-2.15 wrote)."""
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w") as dst:
        for member in src.namelist():
            data = src.read(member)
            if member == "metadata.json":
                data = json.dumps(dict(json.loads(data), keras_version="2.15.0"))
            dst.writestr(member, data)


# ------------------------------------------------------------- custom classes


@keras.saving.register_keras_serializable(package="fastrnn_rules")
class Dense(L.Dense):
    """A user's layer named like the built-in, with its own call."""

    def call(self, inputs):
        return super().call(inputs) * 2.0 + 1.0


@keras.saving.register_keras_serializable(package="fastrnn_rules")
class LSTMCell(L.LSTMCell):
    def call(self, inputs, states, training=False):
        h, new = super().call(inputs, states, training=training)
        return h * 0.5, [s * 0.5 for s in new]


@keras.saving.register_keras_serializable(package="fastrnn_rules")
class GRU(L.GRU):
    def call(self, sequences, initial_state=None, mask=None, training=False):
        return super().call(sequences, initial_state=initial_state, mask=mask,
                            training=training) * 3.0


class LSTM(L.LSTM):  # not registered: Keras writes module None, registered_name "LSTM"
    pass


CUSTOM = {
    "dense": (lambda: [L.LSTM(4), Dense(3, name="mine")], "mine"),
    "cell": (lambda: [L.RNN(LSTMCell(4, name="mine"))], "mine"),
    "stacked": (lambda: [L.RNN([L.GRUCell(3), LSTMCell(4, name="mine")])], "mine"),
    "gru": (lambda: [GRU(4, name="mine")], "mine"),
    "bidirectional": (lambda: [L.Bidirectional(GRU(3), name="bi")], "forward_"),
    "time_distributed": (lambda: [L.LSTM(4, return_sequences=True),
                                  L.TimeDistributed(Dense(2, name="mine"))], "mine"),
    "unregistered": (lambda: [LSTM(3, name="mine")], "mine"),
}


@pytest.mark.parametrize("case", sorted(CUSTOM))
def test_custom_class_named_like_a_builtin_is_refused(case, rng, tmp_path):
    """Keras's own reload runs the user's call; fastrnn built the built-in of that name
    and returned other numbers without a word."""
    make, name = CUSTOM[case]
    layers = make()
    model = keras.Sequential([keras.Input((6, 5))] + layers)
    _randomize(model, rng)
    pattern = rf"layer '{name}.*custom.*cannot run its call"
    with pytest.raises(ValueError, match=pattern):
        fastrnn.from_keras(model)
    with pytest.raises(ValueError, match=pattern):
        fastrnn.from_keras(layers[-1])
    model.save(tmp_path / "m.keras")
    with pytest.raises(ValueError, match=pattern):
        fastrnn.load_keras(tmp_path / "m.keras")
    if case not in ("dense", "gru", "unregistered"):
        # (a legacy .h5 names a top-level registered class "fastrnn_rules>Dense", which is
        # refused as unknown, and an unregistered one as the built-in, as Keras reads it)
        model.save(tmp_path / "m.h5")
        with pytest.raises(ValueError, match=pattern):
            fastrnn.load_keras(tmp_path / "m.h5")


def test_builtins_and_fastrnn_configs_still_load(rng, tmp_path):
    """The same kinds of layer, Keras's own, load from every form and match Keras; a
    fastrnn config (module "keras.layers", registered_name None) round-trips."""
    model = keras.Sequential([
        keras.Input((6, 5)), L.RNN([L.GRUCell(3), L.LSTMCell(4)], return_sequences=True),
        L.Bidirectional(L.GRU(3, return_sequences=True)),
        L.TimeDistributed(L.Dense(2)), L.LSTM(3), L.Dense(2)])
    _randomize(model, rng)
    x = rng.standard_normal((5, 6, 5)).astype(np.float32)
    want = _predict(model, x)
    model.save(tmp_path / "m.keras")
    model.save(tmp_path / "m.h5")
    for loaded in (fastrnn.from_keras(model), fastrnn.load_keras(tmp_path / "m.keras"),
                   fastrnn.load_keras(tmp_path / "m.h5")):
        np.testing.assert_allclose(loaded.predict(x), want, atol=ATOL)
    again = fastrnn.deserialize(json.loads(json.dumps(fastrnn.serialize(loaded))))
    again.set_weights(loaded.get_weights())
    np.testing.assert_array_equal(again.predict(x), loaded.predict(x))


# ------------------------------------------------------------------- mask=


def _tokens(rng, B=5, T=9, V=20):
    tok = rng.integers(1, V, (B, T))
    tok[0, 5:] = 0
    tok[2, :3] = 0
    tok[3, 4:] = 5
    return tok


def _mask_cases():
    i = keras.Input((9,), dtype="int32")
    e = L.Embedding(20, 4)(i)  # no mask_zero: the mask comes from the kwarg only
    other_value = keras.Model(i, L.LSTM(3)(e, mask=keras.ops.not_equal(i, 5)))
    i = keras.Input((9,), dtype="int32")
    e = L.Embedding(20, 4, mask_zero=True)(i)
    not_zero = keras.Model(i, L.GRU(3)(e, mask=keras.ops.not_equal(i, 5)))
    i = keras.Input((7, 5))
    L.Masking()(i)  # on another branch: not what reaches the LSTM
    d = L.Dense(5)(i)
    branch = keras.Model(i, L.LSTM(3)(d, mask=keras.ops.any(keras.ops.not_equal(i, 0), axis=-1)))
    return {"other value": (other_value, "lstm"), "mask_zero's other": (not_zero, "gru"),
            "another branch": (branch, "lstm")}


@pytest.mark.parametrize("case", ["other value", "mask_zero's other", "another branch"])
def test_explicit_mask_kwarg_is_refused(case, rng, tmp_path):
    model, name = _mask_cases()[case]
    pattern = rf"layer '{name}_?\d*' \(\w+\) is called with mask="
    with pytest.raises(ValueError, match=pattern):
        fastrnn.from_keras(model)
    for form in ("m.keras", "m.h5"):
        model.save(tmp_path / form)
        with pytest.raises(ValueError, match=pattern):
            fastrnn.load_keras(tmp_path / form)


def test_masks_keras_propagates_still_run(rng, tmp_path):
    """Keras records the masks it propagates as mask= kwargs too (NotEqual / Any of the
    Embedding's or Masking's input): those, or the same passed by hand, load and match."""
    tok = _tokens(rng)
    i = keras.Input((9,), dtype="int32")
    h = L.Embedding(20, 4, mask_zero=True)(i)
    h = L.Dense(4)(h)
    h = L.LSTM(3, return_sequences=True)(h)
    h = L.TimeDistributed(L.Dense(3))(h)
    by_hand = L.GRU(3)(h, mask=keras.ops.not_equal(i, 0))
    embedded = keras.Model(i, by_hand)
    x = rng.standard_normal((5, 7, 5)).astype(np.float32)
    x[1, 4:] = 0.5
    x[3, :2] = 0.5
    i = keras.Input((7, 5))
    h = L.Masking(mask_value=0.5)(i)
    h = L.Bidirectional(L.LSTM(3, return_sequences=True))(h)
    h = L.Dense(4)(h)
    masked = keras.Model(i, L.GRU(2)(h))
    for model, data in ((embedded, tok), (masked, x)):
        _randomize(model, rng)
        want = _predict(model, data)
        np.testing.assert_allclose(fastrnn.from_keras(model).predict(data), want, atol=ATOL)
        for form in ("m.keras", "m.h5"):
            model.save(tmp_path / form)
            np.testing.assert_allclose(fastrnn.load_keras(tmp_path / form).predict(data), want,
                                       atol=ATOL)


def test_keras2_explicit_mask_kwarg_is_refused(tmp_path):
    """Keras 2 drops from a node the mask it passes on by itself: one recorded there was
    passed by the user (in Keras 2's form, a [layer, node, tensor] reference)."""
    config = json.load(open(os.path.join(DATA, "tf", "keras2_save_weights", "model.json")))
    entry = config["config"]["layers"][2]
    entry["inbound_nodes"][0][0][3] = {"mask": ["input_4", 0, 0]}
    with pytest.raises(ValueError, match=r"layer 'gru_4' \(GRU\) is called with mask="):
        fastrnn.load_keras(os.path.join(DATA, "tf", "keras2_save_weights", "ckpt"),
                           config=config)


# ------------------------------------------------------- Keras 2's hard_sigmoid


def _k2_hard_sigmoid(x):
    """Keras 2's (tf.keras, tf_keras) hard_sigmoid, written out."""
    return keras.ops.clip(0.2 * x + 0.5, 0.0, 1.0)


def _keras2_checkpoint(tmp_path):
    """A copy of tests/data/tf/keras2_save_weights whose config uses hard_sigmoid, as a
    Keras 2 user writes it, and the same model in Keras 3 with Keras 2's formula."""
    src = os.path.join(DATA, "tf", "keras2_save_weights")
    dst = tmp_path / "k2"
    shutil.copytree(src, dst)
    config = json.load(open(dst / "model.json"))
    layers = config["config"]["layers"]
    layers[1]["config"]["recurrent_activation"] = "hard_sigmoid"
    layers[2]["config"]["recurrent_activation"] = "hard_sigmoid"
    layers[2]["config"]["activation"] = "hard_sigmoid"
    json.dump(config, open(dst / "model.json", "w"))
    weights = fastrnn.io.read_tf_checkpoint(str(dst / "ckpt"))

    def w(i, name):
        return weights[f"layer_with_weights-{i}/{name}/.ATTRIBUTES/VARIABLE_VALUE"]

    i = keras.Input((7, 3))
    h = L.GRU(5, return_sequences=True, recurrent_activation=_k2_hard_sigmoid)(i)
    h = L.GRU(3, reset_after=False, activation=_k2_hard_sigmoid,
              recurrent_activation=_k2_hard_sigmoid)(h)
    ref = keras.Model(i, L.Dense(2, activation="tanh")(h))
    for k, layer in enumerate(ref.layers[1:3]):
        layer.set_weights([w(k, "cell/kernel"), w(k, "cell/recurrent_kernel"),
                           w(k, "cell/bias")])
    ref.layers[3].set_weights([w(2, "kernel"), w(2, "bias")])
    return dst, ref


def test_keras2_checkpoint_hard_sigmoid_is_keras2s(rng, tmp_path):
    path, ref = _keras2_checkpoint(tmp_path)
    x = (rng.standard_normal((5, 7, 3)) * 3).astype(np.float32)
    model = fastrnn.load_keras(str(path / "ckpt"), config=str(path / "model.json"))
    want = _predict(ref, x)
    np.testing.assert_allclose(model.predict(x), want, atol=ATOL)
    # its config and the native format keep Keras 2's meaning
    config = model.layers[2].get_config()
    assert config["activation"] == config["recurrent_activation"] == "keras2_hard_sigmoid"
    assert "hard_sigmoid" not in json.dumps(model.get_config()).replace("keras2_hard_sigmoid",
                                                                        "")
    fastrnn.save(model, tmp_path / "m.fastrnn")
    np.testing.assert_array_equal(fastrnn.load(tmp_path / "m.fastrnn").predict(x),
                                  model.predict(x))
    again = fastrnn.Sequential.from_config(model.get_config())
    again.set_weights(model.get_weights())
    np.testing.assert_allclose(again.predict(x), want, atol=ATOL)


def _lstm_entry(name, units, **config):
    """A Keras 2 (tf.keras / tf_keras) LSTM or GRU entry, as its get_config writes it."""
    init = {"module": "keras.initializers", "class_name": "Zeros", "config": {},
            "registered_name": None}
    return {"module": "keras.layers", "class_name": config.pop("cls", "LSTM"),
            "config": {"name": name, "trainable": True, "dtype": "float32",
                       "return_sequences": False, "return_state": False,
                       "go_backwards": False, "stateful": False, "unroll": False,
                       "time_major": False, "units": units, "activation": "tanh",
                       "recurrent_activation": "sigmoid", "use_bias": True,
                       "kernel_initializer": init, "recurrent_initializer": init,
                       "bias_initializer": init, "kernel_regularizer": None,
                       "recurrent_regularizer": None, "bias_regularizer": None,
                       "activity_regularizer": None, "kernel_constraint": None,
                       "recurrent_constraint": None, "bias_constraint": None,
                       "dropout": 0.0, "recurrent_dropout": 0.0, "implementation": 2,
                       **config},
            "registered_name": None}


def _keras2_h5(path, entries, weights, version):
    """A legacy .h5 file as Keras 2's hdf5_format writes one: attributes keras_version
    (``version``; None leaves it out), backend, model_config (UTF-8 JSON bytes);
    ``model_weights/<layer>`` with ``weight_names`` ('<layer>/<cell>/kernel:0', ...)."""
    config = {"class_name": "Sequential", "config": {"name": "sequential", "layers": [
        {"class_name": "InputLayer", "config": {"batch_input_shape": [None, 6, 4],
                                                "dtype": "float32", "sparse": False,
                                                "ragged": False, "name": "input_1"}}]
        + entries}}
    with h5py.File(path, "w") as f:
        if version is not None:
            f.attrs["keras_version"] = version
        f.attrs["backend"] = "tensorflow"
        f.attrs["model_config"] = json.dumps(config).encode("utf8")
        root = f.create_group("model_weights")
        root.attrs["layer_names"] = [e["config"]["name"].encode() for e in entries]
        for entry in entries:
            name = entry["config"]["name"]
            arrays = weights.get(name, [])
            g = root.create_group(name)
            keys = ("cell/kernel", "cell/recurrent_kernel", "cell/bias") \
                if entry["class_name"] in ("LSTM", "GRU") else ("kernel", "bias")
            names = [f"{name}/{k}:0" for k in keys][:len(arrays)]
            g.attrs["weight_names"] = [n.encode() for n in names]
            for n, array in zip(names, arrays):
                g.create_dataset(n, data=array)


@pytest.mark.parametrize("version", [b"2.2.4", "2.15.0", None],
                         ids=["bytes-2.2.4", "str-2.15.0", "no-version"])
def test_keras2_h5_hard_sigmoid_is_keras2s(version, rng, tmp_path):
    entries = [_lstm_entry("lstm", 4, return_sequences=True,
                           recurrent_activation="hard_sigmoid", unit_forget_bias=True),
               _lstm_entry("gru", 3, cls="GRU", activation="hard_sigmoid",
                           recurrent_activation="hard_sigmoid", reset_after=True),
               {"module": "keras.layers", "class_name": "Dense",
                "config": {"name": "dense", "units": 2, "activation": "linear",
                           "use_bias": True}, "registered_name": None}]
    ref = keras.Sequential([
        keras.Input((6, 4)),
        L.LSTM(4, return_sequences=True, recurrent_activation=_k2_hard_sigmoid),
        L.GRU(3, activation=_k2_hard_sigmoid, recurrent_activation=_k2_hard_sigmoid),
        L.Dense(2)])
    _randomize(ref, rng)
    weights = {n: layer.get_weights() for n, layer in zip(("lstm", "gru", "dense"),
                                                           ref.layers)}
    _keras2_h5(tmp_path / "k2.h5", entries, weights, version)
    x = (rng.standard_normal((5, 6, 4)) * 3).astype(np.float32)
    model = fastrnn.load_keras(tmp_path / "k2.h5")
    np.testing.assert_allclose(model.predict(x), _predict(ref, x), atol=ATOL)
    assert model.layers[1].get_config()["recurrent_activation"] == "keras2_hard_sigmoid"
    assert model.layers[1].backend == model.layers[2].backend == "cpu"   # a kernel code


@pytest.mark.parametrize("layer", ["dense", "activation", "time_distributed"])
def test_keras2_hard_sigmoid_in_dense_and_activation(layer, rng, tmp_path):
    """Dense, Activation and TimeDistributed(Dense) in a Keras 2 file run
    Keras 2's hard_sigmoid too, in a model call and in a model stream."""
    dense = {"module": "keras.layers", "class_name": "Dense",
             "config": {"name": "dense", "units": 2, "activation": "hard_sigmoid",
                        "use_bias": True}, "registered_name": None}
    entry = {"dense": dense,
             "activation": {"module": "keras.layers", "class_name": "Activation",
                            "config": {"name": "act", "activation": "hard_sigmoid"},
                            "registered_name": None},
             "time_distributed": {"module": "keras.layers", "class_name": "TimeDistributed",
                                  "config": {"name": "td", "layer": dense},
                                  "registered_name": None}}[layer]
    lstm = _lstm_entry("lstm", 3, return_sequences=True)
    head = {"dense": L.Dense(2, activation=_k2_hard_sigmoid),
            "activation": L.Activation(_k2_hard_sigmoid),
            "time_distributed": L.TimeDistributed(L.Dense(2, activation=_k2_hard_sigmoid))}
    ref = keras.Sequential([keras.Input((6, 4)), L.LSTM(3, return_sequences=True),
                            head[layer]])
    _randomize(ref, rng)
    weights = {"lstm": ref.layers[0].get_weights(), "dense": ref.layers[1].get_weights(),
               "td": ref.layers[1].get_weights()}
    _keras2_h5(tmp_path / "k2.h5", [lstm, entry], weights, "2.15.0")
    x = (rng.standard_normal((5, 6, 4)) * 3).astype(np.float32)
    model = fastrnn.load_keras(tmp_path / "k2.h5")
    want = _predict(ref, x)
    np.testing.assert_allclose(model.predict(x), want, atol=ATOL)
    live = model.stream(batch_size=5)
    np.testing.assert_allclose(live(x), want, atol=ATOL)


def test_keras_files_hard_sigmoid_by_their_version(rng, tmp_path):
    """A Keras 3 file keeps Keras 3's hard_sigmoid; a .keras file whose metadata says
    Keras 2 (tf.keras 2.13-2.15 wrote the format) has Keras 2's."""
    x = (rng.standard_normal((5, 6, 4)) * 3).astype(np.float32)
    models = {}
    for act in ("hard_sigmoid", _k2_hard_sigmoid):
        models[act] = keras.Sequential([keras.Input((6, 4)),
                                        L.LSTM(3, recurrent_activation=act)])
    keras3 = models["hard_sigmoid"]
    _randomize(keras3, rng)
    models[_k2_hard_sigmoid].set_weights(keras3.get_weights())
    keras3.save(tmp_path / "m.keras")
    keras3.save(tmp_path / "m.h5")
    want = _predict(keras3, x)
    for form in ("m.keras", "m.h5"):
        np.testing.assert_allclose(fastrnn.load_keras(tmp_path / form).predict(x), want,
                                   atol=ATOL)
    _as_keras2(tmp_path / "m.keras", tmp_path / "k2.keras")
    np.testing.assert_allclose(fastrnn.load_keras(tmp_path / "k2.keras").predict(x),
                               _predict(models[_k2_hard_sigmoid], x), atol=ATOL)


# ------------------------------------------------------------ quantization


@pytest.mark.parametrize("mode", ["int8", "float8"])
def test_keras_quantized_model_is_refused(mode, rng, tmp_path):
    model = keras.Sequential([keras.Input((7, 5)), L.LSTM(6), L.Dense(3, name="head")])
    _randomize(model, rng)
    model.quantize(mode)
    pattern = r"layer 'head' \(Dense\).*quantiz.*not supported.*quantize\(\)"
    with pytest.raises(ValueError, match=pattern):
        fastrnn.from_keras(model)
    with pytest.raises(ValueError, match=pattern):
        fastrnn.from_keras(model.layers[-1])
    model.save(tmp_path / "q.keras")
    with pytest.raises(ValueError, match=pattern):
        fastrnn.load_keras(tmp_path / "q.keras")


# ------------------------------------------------------------ truncated zip


@pytest.mark.parametrize("cut", [30, 400])
def test_truncated_keras_file_is_said_to_be_truncated(cut, rng, tmp_path):
    model = keras.Sequential([keras.Input((7, 5)), L.LSTM(3)])
    model.save(tmp_path / "full.keras")
    model.save_weights(tmp_path / "m.weights.h5")
    data = (tmp_path / "full.keras").read_bytes()
    (tmp_path / "cut.keras").write_bytes(data[:-cut])
    pattern = r"zip archive .*truncated or corrupted"
    with pytest.raises(ValueError, match=pattern):
        fastrnn.load_keras(tmp_path / "cut.keras")
    with pytest.raises(ValueError, match=pattern):
        fastrnn.load_keras(tmp_path / "m.weights.h5", config=tmp_path / "cut.keras")


@pytest.mark.parametrize("module, refused", [("keras_custom", True), ("kerasx.layers", True),
                                             ("keras.layers", False),
                                             ("keras.src.layers.rnn.lstm", False),
                                             ("tf_keras.src.layers", False)])
def test_module_must_be_keras_or_tf_keras(module, refused):
    """A user's module whose name starts with "keras" (keras_custom) passed."""
    entry = {"module": module, "class_name": "LSTM", "registered_name": "LSTM",
             "config": {"name": "mine", "units": 3}}
    if refused:
        with pytest.raises(ValueError, match="layer 'mine' is of a custom"):
            fastrnn.deserialize(entry)
    else:
        assert fastrnn.deserialize(entry).units == 3


def test_a_keras2_keras_file_as_config_reads_as_keras2(rng, tmp_path):
    """A .keras file whose metadata says Keras 2 means Keras 2's hard_sigmoid
    whether it is loaded itself or passed as config= beside a weights file."""
    m = keras.Sequential([keras.Input((6, 4)), L.LSTM(3, recurrent_activation="hard_sigmoid")])
    _randomize(m, rng)
    m.save(tmp_path / "m.keras")
    m.save_weights(tmp_path / "m.weights.h5")
    _as_keras2(tmp_path / "m.keras", tmp_path / "k2.keras")
    whole = fastrnn.load_keras(tmp_path / "k2.keras")
    split = fastrnn.load_keras(tmp_path / "m.weights.h5", config=str(tmp_path / "k2.keras"))
    for model in (whole, split):
        assert model.layers[-1].get_config()["recurrent_activation"] == "keras2_hard_sigmoid"
    ref = keras.Sequential([keras.Input((6, 4)), L.LSTM(3, recurrent_activation=_k2_hard_sigmoid)])
    ref.set_weights(m.get_weights())
    x = (rng.standard_normal((2, 6, 4)) * 3).astype(np.float32)
    np.testing.assert_allclose(split.predict(x), _predict(ref, x), atol=ATOL)


def test_keras2_shape_arguments_on_a_bidirectional(rng):
    """Keras 2 writes a first layer's input shape on a Bidirectional wrapper
    (tests/data/tf/keras2_bidirectional_first loads such a model): its
    features build both layers, its batch is a stateful pair's batch size."""
    from fastrnn import _safe_io

    spec = {"class_name": "Bidirectional", "config": {
        "name": "bi", "batch_input_shape": [2, 5, 3], "merge_mode": "sum",
        "layer": {"class_name": "LSTM", "config": {"name": "f", "units": 4, "stateful": True}}}}
    deferred, declared = _safe_io.defer_build(spec)
    assert declared == [("batch_input_shape[2]", 3)]
    assert "batch_input_shape" not in deferred["config"]
    assert deferred["config"]["layer"]["config"]["batch_size"] == 2
    live = fastrnn.Bidirectional(fastrnn.LSTM(4, stateful=True), merge_mode="sum",
                                 batch_input_shape=(2, 5, 3))
    assert live.built and live.forward_layer.cells[0].input_dim == 3
    for sub in (live.forward_layer, live.backward_layer):
        assert sub.get_config()["batch_size"] == 2
    with pytest.raises(ValueError, match="stateful with batch size 2"):
        live(rng.standard_normal((3, 5, 3)).astype(np.float32))
    with pytest.raises(ValueError, match=r"Bidirectional: the batch size is given twice"):
        fastrnn.Bidirectional(fastrnn.LSTM(4, stateful=True, batch_size=3),
                              batch_input_shape=(2, 5, 3))
    assert fastrnn.Bidirectional(fastrnn.GRU(3), input_shape=(None, 6)).built
    with pytest.raises(ValueError, match=r"input features are given twice, differently: 2 "
                                         r"and the inner layer's 5"):
        fastrnn.Bidirectional(fastrnn.LSTM(3, input_shape=(None, 5)), input_shape=(None, 2))
    for time in (-7, "x", 2.5):
        bad = dict(spec, config=dict(spec["config"], batch_input_shape=[2, time, 3]))
        with pytest.raises(ValueError, match=r"batch_input_shape\[1\]: expected None or a "
                                             r"positive number of time steps"):
            _safe_io.defer_build(bad)


@pytest.mark.parametrize("case", ["unsupported", "float16"])
def test_keras2_h5_errors_name_the_layer(case, rng, tmp_path):
    """A refusal while one layer of a file is built names that layer (the
    class alone, or a cell's set_weights, said nothing of which)."""
    weights = {"enc": [rng.standard_normal(s).astype(np.float32)
                       for s in ((4, 12), (3, 12), (12,))]}
    if case == "unsupported":
        entries = [{"module": "keras.layers", "class_name": "Conv1D",
                    "config": {"name": "conv", "filters": 2, "kernel_size": 3}}]
        pattern = r"layer 'conv' \(Conv1D\): .*unsupported layer class 'Conv1D'"
    else:
        entries = [_lstm_entry("enc", 3, dtype="float16")]
        pattern = r"layer 'enc' \(LSTM\): dtype: expected float32 or float64, got 'float16'"
    _keras2_h5(tmp_path / "k2.h5", entries, weights, "2.15.0")
    with pytest.raises(ValueError, match=pattern):
        fastrnn.load_keras(tmp_path / "k2.h5")


def test_a_bidirectional_without_merge_mode_in_a_model_says_what_to_do():
    with pytest.raises(ValueError, match=r"merge_mode=None returns two tensors, and each layer "
                                         r"of a fastrnn.Sequential .*functional one too.*give "
                                         r"it a merge_mode"):
        fastrnn.Sequential([fastrnn.Bidirectional(fastrnn.LSTM(3), merge_mode=None)])
