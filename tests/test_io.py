"""fastrnn.save / fastrnn.load: exact round trips, and bad files are clear errors."""

import hashlib
import io
import os
import json
import zipfile

import numpy as np
import pytest

import fastrnn
from fastrnn import models


def _randomize(obj, rng):
    weights = obj.get_weights()
    obj.set_weights([rng.uniform(-0.6, 0.6, w.shape).astype(w.dtype) for w in weights])


def _x(rng, B=3, T=5, D=4, dtype=np.float32):
    return rng.uniform(-1, 1, (B, T, D)).astype(dtype)


def _flat(y):
    if isinstance(y, (list, tuple)):
        return [a for item in y for a in _flat(item)]
    return [np.asarray(y)]


def _rnn(make):
    def factory(rng):
        layer = make()
        layer.build((3, 5, 4))
        _randomize(layer, rng)
        return layer, _x(rng, dtype=layer.dtype)
    return factory


LAYERS = {
    "simple_rnn_relu": _rnn(lambda: fastrnn.SimpleRNN(5, activation="relu",
                                                      return_sequences=True)),
    "gru": _rnn(lambda: fastrnn.GRU(7, return_state=True)),
    "gru_reset_before": _rnn(lambda: fastrnn.GRU(3, reset_after=False, go_backwards=True,
                                                 return_sequences=True)),
    "lstm": _rnn(lambda: fastrnn.LSTM(6, return_sequences=True, return_state=True)),
    "lstm_nobias_f64": _rnn(lambda: fastrnn.LSTM(5, use_bias=False, dtype="float64")),
    "lstm_hard_sigmoid": _rnn(lambda: fastrnn.LSTM(5, recurrent_activation="hard_sigmoid",
                                                   activation="relu")),
    "rnn_cell": _rnn(lambda: fastrnn.RNN(fastrnn.GRUCell(5), return_sequences=True)),
    "rnn_stacked": _rnn(lambda: fastrnn.RNN([fastrnn.LSTMCell(3), fastrnn.GRUCell(5),
                                             fastrnn.SimpleRNNCell(2)], return_state=True)),
    "bi_lstm_concat": _rnn(lambda: fastrnn.Bidirectional(fastrnn.LSTM(5, return_sequences=True))),
    "bi_gru_sum_state": _rnn(lambda: fastrnn.Bidirectional(fastrnn.GRU(3, return_state=True),
                                                           merge_mode="sum")),
    "bi_simple_none": _rnn(lambda: fastrnn.Bidirectional(
        fastrnn.SimpleRNN(3, return_sequences=True), merge_mode=None)),
    "bi_lstm_mul": _rnn(lambda: fastrnn.Bidirectional(fastrnn.LSTM(5), merge_mode="mul")),
}


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_layer_round_trip(name, rng, tmp_path):
    layer, x = LAYERS[name](rng)
    mask = rng.random(x.shape[:2]) > 0.3
    mask[:, 0] = True
    path = tmp_path / "layer.fastrnn"
    fastrnn.save(layer, path)
    loaded = fastrnn.load(path)
    assert type(loaded) is type(layer)
    assert loaded.get_config() == layer.get_config()
    for a, b in zip(loaded.get_weights(), layer.get_weights(), strict=True):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    for kwargs in ({}, {"mask": mask}):
        for a, b in zip(_flat(loaded(x, **kwargs)), _flat(layer(x, **kwargs)), strict=True):
            np.testing.assert_array_equal(a, b)


def test_stateful_states_round_trip(rng, tmp_path):
    layer = fastrnn.LSTM(4, stateful=True, return_sequences=True)
    layer.build((2, 3, 5))
    _randomize(layer, rng)
    layer(_x(rng, 2, 3, 5))  # the layer now carries states
    fastrnn.save(layer, tmp_path / "s.fastrnn")
    loaded = fastrnn.load(tmp_path / "s.fastrnn")
    for a, b in zip(loaded.states, layer.states, strict=True):
        np.testing.assert_array_equal(a, b)
    x2 = _x(rng, 2, 4, 5)
    np.testing.assert_array_equal(loaded(x2), layer(x2))


@pytest.mark.parametrize("make", [
    lambda: fastrnn.LSTMCell(5), lambda: fastrnn.GRUCell(4, reset_after=False),
    lambda: fastrnn.SimpleRNNCell(3),
    lambda: fastrnn.StackedRNNCells([fastrnn.LSTMCell(3), fastrnn.SimpleRNNCell(4)]),
], ids=["lstm", "gru", "simple", "stacked"])
def test_cell_round_trip(make, rng, tmp_path):
    cell = make()
    cell.build((2, 5))
    _randomize(cell, rng)
    fastrnn.save(cell, tmp_path / "c.fastrnn")
    loaded = fastrnn.load(tmp_path / "c.fastrnn")
    assert loaded.get_config() == cell.get_config()
    x = rng.uniform(-1, 1, (2, 5)).astype(np.float32)
    states = cell.get_initial_state(2)
    states = [rng.uniform(-1, 1, np.shape(s)).astype(np.float32) for s in _flat(states)]
    if isinstance(cell, fastrnn.StackedRNNCells):
        states = [[states[0], states[1]], states[2]]
    for a, b in zip(_flat(loaded(x, states)), _flat(cell(x, states)), strict=True):
        np.testing.assert_array_equal(a, b)


MODEL_LAYERS = {
    "dense": (lambda: models.Dense(4, activation="selu"), [(5, 4), (4,)], (3, 6, 5)),
    "dense_nobias": (lambda: models.Dense(3, use_bias=False), [(5, 3)], (3, 5)),
    "embedding": (lambda: models.Embedding(9, 4, mask_zero=True), [(9, 4)], None),
    "masking": (lambda: models.Masking(0.5), [], (2, 4, 3)),
    "dropout": (lambda: models.Dropout(0.4), [], (2, 4, 3)),
    "activation": (lambda: models.Activation("softmax"), [], (2, 4, 3)),
    "time_distributed": (lambda: models.TimeDistributed(models.Dense(2, activation="relu")),
                         [(3, 2), (2,)], (2, 4, 3)),
    "input": (lambda: models.InputLayer(batch_shape=[None, 4, 3]), [], (2, 4, 3)),
}


@pytest.mark.parametrize("name", sorted(MODEL_LAYERS))
def test_model_layer_round_trip(name, rng, tmp_path):
    make, shapes, xshape = MODEL_LAYERS[name]
    layer = make()
    if shapes:
        layer.set_weights([rng.uniform(-1, 1, s) for s in shapes])
    if xshape is None:
        x = rng.integers(0, 9, (3, 5))
    else:
        x = rng.uniform(-1, 1, xshape).astype(np.float32)
        x[0, 1] = 0.5  # a step Masking(0.5) masks
    fastrnn.save(layer, tmp_path / "l.fastrnn")
    loaded = fastrnn.load(tmp_path / "l.fastrnn")
    assert type(loaded) is type(layer)
    assert loaded.get_config() == layer.get_config()
    np.testing.assert_array_equal(loaded(x), layer(x))
    m1, m2 = loaded.compute_mask(x, None), layer.compute_mask(x, None)
    assert (m1 is None and m2 is None) or np.array_equal(m1, m2)


def _model(rng):
    model = fastrnn.Sequential([
        models.InputLayer(batch_shape=[None, 7], dtype="int32"),
        models.Embedding(13, 4, mask_zero=True),
        fastrnn.Bidirectional(fastrnn.LSTM(5, return_sequences=True)),
        models.TimeDistributed(models.Dense(3, activation="tanh")),
        models.Dropout(0.5),
        fastrnn.GRU(4, return_sequences=True),
        models.Masking(0.25),
        models.Activation("relu"),
        fastrnn.SimpleRNN(3),
        models.Dense(2, activation="softmax"),
    ])
    dims = {2: 4, 5: 3, 8: 4}
    for i, layer in enumerate(model.layers):
        if i in dims:
            layer.build((1, 7, dims[i]))
    model.layers[1].set_weights([rng.uniform(-1, 1, (13, 4))])
    model.layers[3].set_weights([rng.uniform(-1, 1, (10, 3)), rng.uniform(-1, 1, 3)])
    model.layers[9].set_weights([rng.uniform(-1, 1, (3, 2)), rng.uniform(-1, 1, 2)])
    for i in dims:
        _randomize(model.layers[i], rng)
    x = rng.integers(0, 13, (6, 7))
    x[0, 3:] = 0
    x[1, :2] = 0
    return model, x


def test_model_round_trip(rng, tmp_path):
    model, x = _model(rng)
    fastrnn.save(model, tmp_path / "m.fastrnn")
    loaded = fastrnn.load(tmp_path / "m.fastrnn")
    assert isinstance(loaded, fastrnn.Sequential)
    assert loaded.get_config() == model.get_config()
    np.testing.assert_array_equal(loaded.predict(x, batch_size=4), model.predict(x))
    np.testing.assert_array_equal(loaded(x), model(x))
    # and through a file object
    buf = io.BytesIO()
    fastrnn.save(model, buf)
    buf.seek(0)
    np.testing.assert_array_equal(fastrnn.load(buf)(x), model(x))


def test_model_pickles(rng):
    import pickle

    model, x = _model(rng)
    clone = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(clone(x), model(x))
    config = json.loads(json.dumps(model.get_config()))
    rebuilt = fastrnn.Sequential.from_config(config)
    rebuilt.set_weights(model.get_weights())
    assert rebuilt.get_config() == model.get_config()
    np.testing.assert_array_equal(rebuilt(x), model(x))


def test_model_masks_propagate(rng):
    """Embedding(mask_zero) masks the recurrent layers: trailing padding changes nothing."""
    def build(mask_zero):
        model = fastrnn.Sequential([models.Embedding(9, 3, mask_zero=mask_zero),
                                    fastrnn.Bidirectional(fastrnn.LSTM(4)),
                                    models.Dense(2)])
        model.layers[0].set_weights([emb])
        model.layers[1].set_weights(lstm)
        model.layers[2].set_weights(dense)
        return model

    emb = rng.uniform(-1, 1, (9, 3))
    lstm = [rng.uniform(-0.6, 0.6, s) for s in [(3, 16), (4, 16), (16,)] * 2]
    dense = [rng.uniform(-1, 1, (8, 2)), rng.uniform(-1, 1, 2)]
    x = rng.integers(1, 9, (4, 6))
    x[0, 4:] = 0
    masked = build(True)
    y = masked.predict(x, batch_size=3)
    np.testing.assert_allclose(y[0], masked(x[:1, :4])[0], atol=1e-6)
    assert not np.allclose(build(False)(x)[0], y[0])


def test_torch_module_round_trip(rng, tmp_path):
    torch = pytest.importorskip("torch")
    from fastrnn.interop.torch import from_torch

    for module in (torch.nn.LSTM(3, 5, num_layers=2, bidirectional=True, proj_size=2),
                   torch.nn.GRUCell(3, 4)):
        m = from_torch(module)
        fastrnn.save(m, tmp_path / "t.fastrnn")
        loaded = fastrnn.load(tmp_path / "t.fastrnn")
        assert loaded.get_config() == m.get_config()
        x = rng.uniform(-1, 1, (4, 2, 3) if "Cell" not in type(module).__name__ else (2, 3))
        x = x.astype(np.float32)
        for a, b in zip(_flat(loaded(x)), _flat(m(x)), strict=True):
            np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------ bad files


@pytest.fixture
def saved(rng, tmp_path):
    layer, _ = LAYERS["lstm"](rng)
    path = tmp_path / "good.fastrnn"
    fastrnn.save(layer, path)
    return path


def _rewrite(path, header=None, blob=None, fix_checksum=True):
    with zipfile.ZipFile(path) as z:
        text, arrays = z.read("fastrnn.json"), z.read("arrays.npz")
    h = json.loads(text)
    if header:
        header(h)
    if blob is not None:
        arrays = blob
    if fix_checksum:  # as a crafted file would: the builder's own checks must hold
        h["arrays_sha256"] = hashlib.sha256(arrays).hexdigest()
        if "object_sha256" in h:
            h["object_sha256"] = hashlib.sha256(
                json.dumps(h["object"], sort_keys=True, allow_nan=True).encode()).hexdigest()
    out = path.with_name("bad.fastrnn")
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("fastrnn.json", json.dumps(h))
        z.writestr("arrays.npz", arrays)
    return out


@pytest.mark.parametrize("batches", [(7, 7), (2, 3)])
def test_states_of_another_batch_than_the_layers_are_refused(rng, tmp_path, batches):
    """A stateful layer of batch_size=2 loaded states of batch 7 (or h and c
    of two batches) and then refused inputs of its own batch size."""
    layer = fastrnn.LSTM(4, stateful=True, batch_size=2)
    layer(_x(rng, 2, 3, 5))
    fastrnn.save(layer, tmp_path / "s.fastrnn")
    with zipfile.ZipFile(tmp_path / "s.fastrnn") as z:
        names = json.loads(z.read("fastrnn.json"))["object"]["states"]
        with np.load(io.BytesIO(z.read("arrays.npz"))) as data:
            arrays = {k: data[k] for k in data.files}
    for n, b in zip(names, batches):
        arrays[n] = rng.standard_normal((b, 4)).astype(np.float32)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    bad = _rewrite(tmp_path / "s.fastrnn", blob=buf.getvalue())
    with pytest.raises(ValueError, match=rf"states of batch size \[{min(batches)}.*\] for a "
                                         r"layer of batch_size=2"):
        fastrnn.load(bad)


def test_truncated_files(saved):
    data = saved.read_bytes()
    for cut in (0, 10, len(data) // 3, len(data) // 2, len(data) - 30, len(data) - 1):
        bad = saved.with_name(f"cut{cut}.fastrnn")
        bad.write_bytes(data[:cut])
        with pytest.raises(ValueError, match="fastrnn.load"):
            fastrnn.load(bad)


def test_flipped_bytes(saved):
    data = bytearray(saved.read_bytes())
    for pos in range(40, len(data) - 40, max(1, len(data) // 25)):
        bad = bytearray(data)
        bad[pos] ^= 0x5A
        path = saved.with_name("flip.fastrnn")
        path.write_bytes(bytes(bad))
        try:
            fastrnn.load(path)
        except ValueError as exc:
            assert "fastrnn.load" in str(exc)
        # a flip in zip padding that changes nothing may load: it must then be intact


def test_tampered_weights_fail_checksum(saved):
    with zipfile.ZipFile(saved) as z:
        blob = bytearray(z.read("arrays.npz"))
    blob[-5] ^= 0xFF
    bad = _rewrite(saved, blob=bytes(blob), fix_checksum=False)
    with pytest.raises(ValueError, match="checksum"):
        fastrnn.load(bad)


def test_edited_config_fails_checksum(saved, rng):
    """An edit that still builds (another activation, go_backwards) would
    change the numbers silently: the config has its own checksum."""
    for key, value in (("activation", "relu"), ("go_backwards", True)):
        def edit(h):
            h["object"]["config"][key] = value
        bad = _rewrite(saved, edit, fix_checksum=False)
        with pytest.raises(ValueError, match="configuration does not match its checksum"):
            fastrnn.load(bad)


def test_file_without_config_checksum_loads(saved, rng):
    """Files written before the config had a checksum still load."""
    def drop(h):
        del h["object_sha256"]
    old = fastrnn.load(_rewrite(saved, drop))
    x = rng.standard_normal((2, 3, 4)).astype(np.float32)
    for a, b in zip(_flat(old(x)), _flat(fastrnn.load(saved)(x)), strict=True):
        np.testing.assert_array_equal(a, b)


def test_tampered_config(saved):
    def units(h):
        h["object"]["config"]["units"] = 9
    with pytest.raises(ValueError, match="expected shape"):
        fastrnn.load(_rewrite(saved, units))

    def cls(h):
        h["object"]["class_name"] = "os.system"
    with pytest.raises(ValueError, match="unknown class"):
        fastrnn.load(_rewrite(saved, cls))

    def version(h):
        h["format_version"] = 99
    with pytest.raises(ValueError, match="format version 99"):
        fastrnn.load(_rewrite(saved, version))

    def tag(h):
        h["format"] = "other"
    with pytest.raises(ValueError, match="not a fastrnn file"):
        fastrnn.load(_rewrite(saved, tag))

    def junk(h):
        h["object"]["config"] = [1, 2]
    with pytest.raises(ValueError, match="config"):
        fastrnn.load(_rewrite(saved, junk))

    def weird(h):
        h["object"]["config"]["units"] = "many"
    with pytest.raises(ValueError, match="units"):
        fastrnn.load(_rewrite(saved, weird))

    def missing(h):
        h["object"]["weights"] = ["a0", "zz"]
    with pytest.raises(ValueError, match="missing"):
        fastrnn.load(_rewrite(saved, missing))


def test_json_depth_counts_objects_and_arrays():
    from fastrnn._safe_io import JSON_DEPTH, check_depth
    for inner in ("[]", "1", "{}"):   # 101 levels with an empty innermost array were taken
        check_depth(json.loads("[" * (JSON_DEPTH - 1) + inner + "]" * (JSON_DEPTH - 1)), "f", "x")
        deeper = "[" * JSON_DEPTH + inner + "]" * JSON_DEPTH
        if inner != "1":
            with pytest.raises(ValueError, match="x is nested more than 100 levels deep"):
                check_depth(json.loads(deeper), "f", "x")
        else:
            check_depth(json.loads(deeper), "f", "x")   # 100 arrays around a number


def test_deeply_nested_json(saved):
    with zipfile.ZipFile(saved) as z:
        blob = z.read("arrays.npz")
    bad = saved.with_name("deep.fastrnn")
    with zipfile.ZipFile(bad, "w") as z:
        z.writestr("fastrnn.json", "[" * 200000 + "]" * 200000)
        z.writestr("arrays.npz", blob)
    with pytest.raises(ValueError, match="fastrnn.load"):
        fastrnn.load(bad)


def test_pickled_arrays_refused(saved):
    buf = io.BytesIO()
    np.savez(buf, a0=np.array([{"x": 1}], dtype=object))
    with pytest.raises(ValueError, match="arrays.npz|pickle|missing"):
        fastrnn.load(_rewrite(saved, blob=buf.getvalue()))


def test_not_a_fastrnn_file(tmp_path):
    p = tmp_path / "x.fastrnn"
    p.write_text("hello")
    with pytest.raises(ValueError, match="not a readable fastrnn file"):
        fastrnn.load(p)
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("other.txt", "x")
    with pytest.raises(ValueError, match="expected members"):
        fastrnn.load(p)
    with pytest.raises(FileNotFoundError):
        fastrnn.load(tmp_path / "missing.fastrnn")


def test_unsaveable_objects(tmp_path):
    layer = fastrnn.SimpleRNN(3, activation=lambda v: v * 2.0)
    layer.build((1, 2, 3))
    with pytest.raises(ValueError, match="cannot be saved"):
        fastrnn.save(layer, tmp_path / "f.fastrnn")
    assert not (tmp_path / "f.fastrnn").exists()
    with pytest.raises(TypeError, match="cannot save"):
        fastrnn.save(object(), tmp_path / "g.fastrnn")


def relu(v):  # a user's activation that shares a built-in's name
    return np.where(v > 0, v, 0.5 * v)


@pytest.mark.parametrize("fn", [relu, np.tanh], ids=["own-relu", "numpy-tanh"])
def test_callable_named_like_a_builtin_is_not_saved_as_it(fn, rng, tmp_path):
    """Stored under its short name, the function would load as the built-in
    of that name: other numbers. It is refused like any Python callable,
    and its config names where it lives."""
    layer = fastrnn.SimpleRNN(3, activation=fn)
    layer(_x(rng))
    assert layer.get_config()["activation"] == f"{fn.__module__}.{fn.__qualname__}"
    with pytest.raises(ValueError, match="Python-callable activations cannot be stored"):
        fastrnn.save(layer, tmp_path / "f.fastrnn")
    assert not (tmp_path / "f.fastrnn").exists()
    with pytest.raises(ValueError, match="unknown activation"):
        fastrnn.SimpleRNN.from_config(layer.get_config())


def test_docstrings_state_no_pickle():
    assert "never executes code" in fastrnn.io.__doc__
    assert "Never executes code" in fastrnn.load.__doc__


def test_path_forms_bytes_and_text_mode_files(rng, tmp_path):
    """A bytes path loads (fastrnn.load read it as a file object: "'bytes' object
    has no attribute 'seek'"); a text-mode file object is a TypeError saying so
    (a bare UnicodeDecodeError before)."""
    from fastrnn.streaming import load_stream
    layer = fastrnn.GRU(3)
    layer.build((None, None, 2))
    layer.set_weights([rng.standard_normal(w.shape).astype(np.float32)
                       for w in layer.get_weights()])
    path = tmp_path / "g.fastrnn"
    fastrnn.save(layer, path)
    stream_path = layer.stream().save(tmp_path / "g")
    for a, b in zip(fastrnn.load(os.fsencode(path)).get_weights(), layer.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert isinstance(load_stream(os.fsencode(stream_path)), fastrnn.streaming.Stream)
    for load, p in ((fastrnn.load, path), (load_stream, stream_path)):
        with open(p) as f, pytest.raises(TypeError, match=r"expected a path or a binary file "
                                                          r"object, got a text-mode file"):
            load(f)
