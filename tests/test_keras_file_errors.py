"""fastrnn.load_keras on malformed Keras files: each is a ValueError naming the file and
saying what was expected and what was found, never a TypeError, AttributeError, KeyError
or RecursionError from deep inside the loader.

The files are written here with zipfile and h5py (no Keras needed): a ``.keras`` zip whose
``config.json`` is malformed, a legacy ``.h5`` whose ``model_config`` attribute or
``weight_names`` is, and a copy of a Keras 2 SavedModel from tests/data/tf whose
``keras_metadata.pb`` is replaced.
"""

import io
import json
import os
import re
import shutil
import zipfile

import numpy as np
import pytest

import fastrnn
from conftest import DATA

h5py = pytest.importorskip("h5py")

_LSTM = {"class_name": "LSTM", "config": {"name": "lstm", "units": 2}}
_SEQUENTIAL = {"class_name": "Sequential", "config": {"name": "s", "layers": [_LSTM]}}


def _empty_h5():
    buf = io.BytesIO()
    with h5py.File(buf, "w"):
        pass
    return buf.getvalue()


def _keras_file(path, config_text):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("config.json", config_text)
        z.writestr("metadata.json", "{}")
        z.writestr("model.weights.h5", _empty_h5())
    return path


def _refused(path, pattern, **kwargs):
    with pytest.raises(ValueError) as info:
        fastrnn.load_keras(path, **kwargs)
    message = str(info.value)
    assert message.startswith(f"load_keras: {os.fspath(path)!r}"), message
    assert re.search(pattern, message), message
    return message


def _tensor(name, index=0):
    return {"class_name": "__keras_tensor__", "config": {"keras_history": [name, 0, index]}}


def _functional(history, output=(["dense", 0, 0],)):
    return {"class_name": "Functional", "config": {
        "name": "f",
        "layers": [
            {"name": "inp", "class_name": "InputLayer",
             "config": {"name": "inp", "batch_shape": [None, 5, 3]}, "inbound_nodes": []},
            {"name": "lstm", "class_name": "LSTM",
             "config": {"name": "lstm", "units": 2, "return_state": True},
             "inbound_nodes": [{"args": [_tensor("inp")], "kwargs": {}}]},
            {"name": "dense", "class_name": "Dense", "config": {"name": "dense", "units": 1},
             "inbound_nodes": [{"args": [{"class_name": "__keras_tensor__",
                                          "config": {"keras_history": history}}],
                                "kwargs": {}}]}],
        "input_layers": [["inp", 0, 0]], "output_layers": output}}


@pytest.mark.parametrize("config, pattern", [
    ({"class_name": "Sequential", "config": {"layers": 5}},
     r"the Sequential model's layers: expected a list of layer entries, got int 5"),
    ({"class_name": "Sequential", "config": {"layers": [5]}},
     r"layers\[0\]: expected a layer entry .*, got int 5"),
    ({"class_name": "Sequential", "config": {"layers": [{"class_name": "LSTM", "config": 5}]}},
     r"layers\[0\] \(LSTM\): expected a dict config, got int 5"),
    ({"class_name": "Sequential", "config": {"layers": [{"config": {}}]}},
     r"layers\[0\]: expected a string class_name, got NoneType None"),
    ({"class_name": "Sequential", "config": [1]},
     r"the 'Sequential' model's config: expected a dict, got list \[1\]"),
    ({"class_name": "Functional", "config": {"layers": {"a": 1}}},
     r"the Functional model's layers: expected a list of layer entries, got dict"),
    ([1, 2], r"expected a serialised Keras model .*got list \[1, 2\]"),
    (_functional(["lstm", 0, 0], output=5),
     r"outputs: expected a list of tensor references, got int 5"),
    (_functional("lstm"), (r"layer 'dense' \(Dense\): inbound node keras_history: expected "
                           r"a tensor reference \[layer name, node index, tensor index\], "
                           r"got str")),
    (_functional(["lstm", 0, "x"]), r"expected a tensor reference .*got list \['lstm', 0, 'x'\]"),
    # the state c of an LSTM with return_state=True, read onward
    (_functional(["lstm", 0, 2]), (r"layer 'dense' \(Dense\) reads output 2 \(a state it "
                                   r"returns with return_state=True\) of layer 'lstm' "
                                   r"\(LSTM\)")),
], ids=["layers-int", "layer-int", "layer-config-int", "no-class-name", "config-list",
        "functional-layers-dict", "root-list", "outputs-int", "history-str", "history-index-str",
        "reads-state"])
def test_malformed_keras_config(tmp_path, config, pattern):
    _refused(_keras_file(tmp_path / "bad.keras", json.dumps(config)), pattern)


def test_functional_cycle(tmp_path):
    config = _functional(["dense", 0, 0])  # dense reads itself: never reaches the input
    _refused(_keras_file(tmp_path / "cycle.keras", json.dumps(config)),
             r"config: the layers form a cycle through 'dense'")


def _legacy(path, model_config, weight_names, datasets):
    with h5py.File(path, "w") as f:
        f.attrs["model_config"] = model_config
        g = f.create_group("model_weights/lstm")
        g.attrs["weight_names"] = weight_names
        for name, shape in datasets.items():
            g[name] = np.zeros(shape, np.float32)
    return path


_LSTM_WEIGHTS = {"lstm/kernel": (3, 8), "lstm/recurrent_kernel": (2, 8), "lstm/bias": (8,)}


def test_legacy_h5_that_loads(tmp_path):
    """The hand-made legacy file below loads as it stands (so each refusal is for its
    one defect)."""
    path = _legacy(tmp_path / "ok.h5", json.dumps(_SEQUENTIAL),
                   [n.encode() for n in _LSTM_WEIGHTS], _LSTM_WEIGHTS)
    model = fastrnn.load_keras(path)
    assert [w.shape for w in model.get_weights()] == list(_LSTM_WEIGHTS.values())


@pytest.mark.parametrize("value, found", [(5, r"int64"), (np.arange(3), r"ndarray")])
def test_legacy_h5_model_config_not_a_string(tmp_path, value, found):
    path = _legacy(tmp_path / "cfg.h5", value, [n.encode() for n in _LSTM_WEIGHTS],
                   _LSTM_WEIGHTS)
    _refused(path, r"model_config attribute: expected a JSON string \(str or bytes\), got "
             + found)


def test_legacy_h5_weight_name_without_dataset(tmp_path):
    names = [b"lstm/kernel", b"lstm/recurrent_kernel", b"lstm/nope"]
    path = _legacy(tmp_path / "wn.h5", json.dumps(_SEQUENTIAL), names, _LSTM_WEIGHTS)
    _refused(path, r"model_weights/lstm lists dataset 'lstm/nope' in its weight_names, but "
                   r"holds no such dataset")


def test_legacy_h5_weight_names_not_a_list(tmp_path):
    path = _legacy(tmp_path / "wn.h5", json.dumps(_SEQUENTIAL), 7, _LSTM_WEIGHTS)
    _refused(path, r"model_weights/lstm has weight_names int64 .*7.*; expected a list of "
                   r"dataset names")


def test_legacy_h5_config_argument_is_checked(tmp_path):
    path = _legacy(tmp_path / "ok.h5", json.dumps(_SEQUENTIAL),
                   [n.encode() for n in _LSTM_WEIGHTS], _LSTM_WEIGHTS)
    with pytest.raises(TypeError, match="config: expected a dict, a JSON string or a path, "
                                        "got int"):
        fastrnn.load_keras(path, config=5)
    with pytest.raises(FileNotFoundError, match="config .*nope.json.*no such file"):
        fastrnn.load_keras(path, config=tmp_path / "nope.json")
    with pytest.raises(ValueError, match="is not a file"):
        fastrnn.load_keras(path, config=tmp_path)
    # a config that names another layer: its weights are looked for, and not found
    other = json.loads(json.dumps(_SEQUENTIAL))
    other["config"]["layers"][0]["config"]["name"] = "other"
    _refused(path, r"layer 'other' \(LSTM\) has no weights in the file", config=other)


# ----------------------------------------------------------------- Keras 2 SavedModel


from test_tf_checkpoint import _field  # noqa: E402 (protobuf fields, byte by byte)


def _saved_model(tmp_path, metadata):
    d = tmp_path / "saved_model"
    shutil.copytree(os.path.join(DATA, "tf", "keras2_gru_functional"), d)
    (d / "keras_metadata.pb").write_bytes(_field(1, _field(3, b"root") + _field(5, metadata)))
    return d


@pytest.mark.parametrize("metadata, pattern", [
    (b"[" * 900 + b"]" * 900,
     r"keras_metadata.pb: the model's metadata is nested more than 100 levels deep"),
    (b"[" * 5000 + b"]" * 5000, r"keras_metadata.pb: the model's metadata is nested too deeply"),
    (b"[1, 2]", r"keras_metadata.pb: the model's metadata: expected a JSON object, got list"),
    (b"{\"class_name\": \"Functional\", \"config\": {\"layers\": 5}}",
     r"the Functional model's layers: expected a list of layer entries, got int 5"),
    (b"{\"class_name\": \"Sequential\", \"config\": {\"layers\": [5]}}",
     r"layers\[0\]: expected a layer entry .*got int 5"),
    (b"\xff{}", r"keras_metadata.pb: the model's metadata is not valid JSON"),
], ids=["depth-900", "depth-5000", "root-list", "layers-int", "layer-int", "not-utf8"])
def test_malformed_saved_model_metadata(tmp_path, metadata, pattern):
    _refused(_saved_model(tmp_path, metadata), pattern)


def test_saved_model_copy_loads(tmp_path):
    """The SavedModel copied above loads with its own metadata."""
    d = tmp_path / "saved_model"
    shutil.copytree(os.path.join(DATA, "tf", "keras2_gru_functional"), d)
    expected = np.load(d / "expected.npz")
    np.testing.assert_allclose(fastrnn.load_keras(d)(expected["x"]), expected["y0"],
                               atol=1e-5)


@pytest.mark.parametrize("layer, key", [
    ({"class_name": "RNN", "config": {"name": "rnn", "cell": {
        "class_name": "StackedRNNCells", "config": {}}}}, "cells"),
    ({"class_name": "Bidirectional", "config": {"name": "bi"}}, "layer"),
], ids=["stacked-cells-without-cells", "bidirectional-without-layer"])
def test_config_entry_missing(tmp_path, layer, key):
    """A config entry the loader looks up and does not find: a ValueError naming the file
    and the entry, not a bare KeyError."""
    path = tmp_path / "w.weights.h5"
    with h5py.File(path, "w") as f:
        f.create_group("layers/rnn/cell")
    config = {"class_name": "Sequential", "config": {"name": "s", "layers": [layer]}}
    _refused(path, rf"lacks an entry the model needs: '{key}'", config=config)


def _lstm_keras_file(path, layers):
    """A .keras file of ``[InputLayer, LSTM(2)]`` with ``layers`` edited, and real weights."""
    buf = io.BytesIO()
    rng = np.random.default_rng(0)
    with h5py.File(buf, "w") as f:
        for i, shape in enumerate([(3, 8), (2, 8), (8,)]):
            f[f"layers/lstm/cell/vars/{i}"] = rng.uniform(-1, 1, shape).astype(np.float32)
    config = {"class_name": "Sequential", "config": {"name": "s", "layers": layers}}
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("config.json", json.dumps(config))
        z.writestr("metadata.json", "{}")
        z.writestr("model.weights.h5", buf.getvalue())
    return path


def _input_lstm(**lstm):
    return [{"class_name": "InputLayer", "config": {"name": "in", "batch_shape": [None, 5, 3]}},
            {"class_name": "LSTM", "config": {"name": "lstm", "units": 2, **lstm}}]


def _edit(index, **changes):
    layers = _input_lstm()
    layers[index]["config"].update(changes)
    return layers


@pytest.mark.parametrize("layers, pattern", [
    (_edit(0, batch_shape=5),
     r"TypeError: layer 'in' \(InputLayer\): 'int' object is not iterable"),
    (_edit(1, dtype={"class_name": "DTypePolicy", "config": "x"}),
     r"dtype: a dtype policy's config must be a dict, got str 'x'"),
    (_edit(1, return_sequences=None), r"return_sequences: expected True or False, got None"),
    (_edit(1, kernel_initializer={"class_name": [], "config": {}}), r"TypeError"),
    ([_input_lstm()[0], {"class_name": "LSTM", "config": {"name": "lstm"}}], r"units"),
    ([_input_lstm()[0], {"class_name": "RNN", "config": {"name": "lstm", "cell": {
        "class_name": "StackedRNNCells", "config": {"cells": None}}}}], r"TypeError"),
], ids=["batch_shape-int", "dtype-policy-str", "return_sequences-null", "initializer-list",
        "no-units", "cells-null"])
def test_config_values_of_the_wrong_type(tmp_path, layers, pattern):
    """Each raised a TypeError or AttributeError that did not name the file."""
    path = _lstm_keras_file(tmp_path / "bad.keras", layers)
    _refused(path, pattern)


def test_hdf5_layouts_keras_never_writes(tmp_path):
    """``vars`` a dataset (AttributeError) and a soft link to itself (h5py's
    RuntimeError) are refusals naming the file."""
    config = {"class_name": "Sequential", "config": {"name": "s", "layers": [_LSTM]}}

    def vars_dataset(g):
        g["vars"] = np.zeros(3)

    def link_loop(g):
        v = g.create_group("vars")
        v["0"] = h5py.SoftLink("/layers/lstm/cell/vars/0")
        v["1"] = np.zeros((2, 8), np.float32)
        v["2"] = np.zeros(8, np.float32)

    for name, write in (("ds.weights.h5", vars_dataset), ("loop.weights.h5", link_loop)):
        with h5py.File(tmp_path / name, "w") as f:
            write(f.create_group("layers/lstm/cell"))
        _refused(tmp_path / name, r"AttributeError|RuntimeError", config=config)


def test_a_bytes_path_loads(tmp_path):
    path = _lstm_keras_file(tmp_path / "ok.keras", _input_lstm())
    want = fastrnn.load_keras(path).get_weights()
    got = fastrnn.load_keras(os.fsencode(path)).get_weights()
    for a, b in zip(want, got):
        np.testing.assert_array_equal(a, b)


def test_weights_that_do_not_fit_the_declared_input_features(tmp_path):
    """The LSTM's kernel takes 4 features where the InputLayer declares 3 (the
    same holds for a layer after another): the load succeeded and the first
    call failed; Keras refuses such a file when it loads it."""
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        for i, shape in enumerate([(4, 8), (2, 8), (8,)]):
            f[f"layers/lstm/cell/vars/{i}"] = np.zeros(shape, np.float32)
        f["layers/dense/vars/0"] = np.zeros((5, 1), np.float32)
        f["layers/dense/vars/1"] = np.zeros(1, np.float32)
    layers = _input_lstm() + [{"class_name": "Dense", "config": {"name": "dense", "units": 1}}]
    for cut, message in ((2, r"layer 'lstm' \(LSTM\): its weights take 4 input features, but "
                                r"the input \('in'\) gives 3"),
                         (3, r"layer 'dense' \(Dense\): its weights take 5 input features, "
                             r"but layer 'lstm' \(LSTM\) gives 2")):
        config = {"class_name": "Sequential", "config": {"name": "s", "layers": layers[:cut]}}
        if cut == 3:
            config["config"]["layers"][0]["config"]["batch_shape"] = [None, 5, 4]
        path = tmp_path / f"features{cut}.keras"
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("config.json", json.dumps(config))
            z.writestr("metadata.json", "{}")
            z.writestr("model.weights.h5", buf.getvalue())
        _refused(path, message)
