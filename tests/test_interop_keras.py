"""fastrnn.from_keras and fastrnn.load_keras against live Keras 3 (torch backend).

* every keras_* golden case through ``from_keras`` on a live Keras layer
  rebuilt from the case's config with the golden weights;
* live random parity: masks, go_backwards, initial_state, stateful, every
  merge mode, stacked cells (the live Keras tests the core issue asks for);
* models: Sequential and functional through ``from_keras`` and through
  ``.keras`` / ``.weights.h5`` / legacy ``.h5`` files, and the ``.keras``
  model loaded in a subprocess where importing keras or tensorflow fails.
"""

import glob
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

keras = pytest.importorskip("keras")
pytest.importorskip("h5py")

import fastrnn  # noqa: E402
from conftest import DATA, load_golden  # noqa: E402

L = keras.layers
CASES = sorted(os.path.basename(p)[:-4] for p in glob.glob(os.path.join(DATA, "keras_*.npz")))
ATOL = 1e-5


def _flat(outputs):
    if isinstance(outputs, (list, tuple)):
        return [a for o in outputs for a in _flat(o)]
    return [keras.ops.convert_to_numpy(outputs) if not isinstance(outputs, np.ndarray)
            else outputs]


def _golden_flat(outputs):
    """As tests/test_golden_keras.py: a stacked cell's nested [h, c] becomes one array."""
    flat = []
    for o in outputs if isinstance(outputs, (list, tuple)) else [outputs]:
        if isinstance(o, (list, tuple)):
            flat.append(np.stack([np.asarray(keras.ops.convert_to_numpy(v)) for v in o]))
        else:
            flat.append(np.asarray(keras.ops.convert_to_numpy(o)))
    return flat


def _randomize(layer, rng):
    layer.set_weights([rng.uniform(-0.6, 0.6, w.shape).astype("float32")
                       for w in layer.get_weights()])


def _x(rng, *shape):
    return rng.uniform(-1, 1, shape).astype("float32")


def _ragged_mask(rng, B, T):
    m = rng.random((B, T)) > 0.35
    m[0] = True
    m[-1, T // 2:] = False  # trailing padding
    m[:, 0] |= rng.random(B) > 0.5
    return m


def test_all_keras_cases_present():
    assert len(CASES) >= 20


@pytest.mark.parametrize("case", CASES)
def test_keras_golden_through_from_keras(case):
    meta, a = load_golden(case)
    layer = keras.layers.deserialize({"module": "keras.layers", "class_name": meta["layer"],
                                      "config": meta["config"], "registered_name": None})
    layer.build(a["x"].shape)
    layer.set_weights([a[f"w{i}"] for i in range(sum(k.startswith("w") for k in a))])
    converted = fastrnn.from_keras(layer)
    assert type(converted).__name__ == meta["layer"]
    kwargs = {}
    if "mask" in a:
        kwargs["mask"] = a["mask"]
    if "s0" in a:
        kwargs["initial_state"] = [a[f"s{i}"] for i in range(sum(k.startswith("s") for k in a))]
    got = _golden_flat(converted(a["x"], **kwargs))
    if "x2" in a:
        got += _golden_flat(converted(a["x2"]))
    want = [a[f"y{i}"] for i in range(sum(k.startswith("y") for k in a))]
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, atol=ATOL, rtol=0)


# ------------------------------------------------------------------ live parity


def _check(klayer, flayer, x, **kwargs):
    kw = dict(kwargs)
    want = _flat(klayer(x, **kw))
    got = _flat(flayer(x, **kwargs))
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, atol=ATOL, rtol=0)


RNN_LAYERS = [
    lambda: L.LSTM(7, return_sequences=True),
    lambda: L.LSTM(5, return_state=True, go_backwards=True),
    lambda: L.GRU(6, return_sequences=True, return_state=True),
    lambda: L.GRU(5, reset_after=False, go_backwards=True, return_sequences=True),
    lambda: L.SimpleRNN(4, activation="relu", return_sequences=True, go_backwards=True),
    lambda: L.LSTM(3, use_bias=False, recurrent_activation="hard_sigmoid"),
    lambda: L.RNN([L.LSTMCell(3), L.GRUCell(5), L.SimpleRNNCell(4)], return_sequences=True,
                  return_state=True),
    lambda: L.RNN(L.GRUCell(4), go_backwards=True, zero_output_for_mask=True,
                  return_sequences=True),
]


@pytest.mark.parametrize("i", range(len(RNN_LAYERS)))
@pytest.mark.parametrize("masked", [False, True])
def test_live_rnn_layers(i, masked, rng):
    klayer = RNN_LAYERS[i]()
    x = _x(rng, 3, 7, 5)
    klayer.build(x.shape)
    _randomize(klayer, rng)
    flayer = fastrnn.from_keras(klayer)
    kwargs = {"mask": _ragged_mask(rng, 3, 7)} if masked else {}
    _check(klayer, flayer, x, **kwargs)


@pytest.mark.parametrize("merge_mode", ["concat", "sum", "mul", "ave", None])
@pytest.mark.parametrize("inner", ["lstm_seq", "gru_state"])
def test_live_bidirectional(merge_mode, inner, rng):
    if inner == "lstm_seq":
        klayer = L.Bidirectional(L.LSTM(4, return_sequences=True), merge_mode=merge_mode)
    else:
        klayer = L.Bidirectional(L.GRU(3, return_state=True), merge_mode=merge_mode)
    x = _x(rng, 4, 6, 3)
    klayer.build(x.shape)
    _randomize(klayer, rng)
    flayer = fastrnn.from_keras(klayer)
    _check(klayer, flayer, x)
    _check(klayer, flayer, x, mask=_ragged_mask(rng, 4, 6))


def test_live_bidirectional_custom_backward(rng):
    klayer = L.Bidirectional(L.SimpleRNN(3, return_sequences=True),
                             backward_layer=L.GRU(3, return_sequences=True, go_backwards=True))
    x = _x(rng, 2, 5, 4)
    klayer.build(x.shape)
    _randomize(klayer, rng)
    _check(klayer, fastrnn.from_keras(klayer), x, mask=_ragged_mask(rng, 2, 5))


@pytest.mark.parametrize("forward,backward", [
    (lambda: L.LSTM(3, return_sequences=True),
     lambda: L.GRU(3, use_bias=False, go_backwards=True, return_sequences=True)),
    (lambda: L.SimpleRNN(3, use_bias=False, return_sequences=True),
     lambda: L.RNN([L.LSTMCell(2), L.GRUCell(3)], go_backwards=True, return_sequences=True)),
])
def test_live_bidirectional_backward_with_other_weight_count(forward, backward, rng):
    """A backward layer whose weights are another number of arrays than the
    forward layer's: each half takes its own count (split in half before)."""
    klayer = L.Bidirectional(forward(), backward_layer=backward())
    x = _x(rng, 2, 5, 4)
    klayer.build(x.shape)
    _randomize(klayer, rng)
    flayer = fastrnn.from_keras(klayer)
    _check(klayer, flayer, x, mask=_ragged_mask(rng, 2, 5))
    weights = flayer.get_weights()
    flayer.set_weights([w[::-1] * 0.5 if w.ndim == 1 else w * 0.5 for w in weights])
    klayer.set_weights([w[::-1] * 0.5 if w.ndim == 1 else w * 0.5 for w in weights])
    _check(klayer, flayer, x)
    with pytest.raises(ValueError, match=r"expected \d+ arrays \(\d+ of the forward layer"):
        flayer.set_weights(weights[:-1])


@pytest.mark.parametrize("make,sizes", [
    (lambda: L.LSTM(5, return_sequences=True, return_state=True), [5, 5]),
    (lambda: L.GRU(4, go_backwards=True, return_state=True), [4]),
    (lambda: L.RNN([L.LSTMCell(3), L.SimpleRNNCell(4)], return_state=True), [3, 3, 4]),
])
def test_live_initial_state(make, sizes, rng):
    klayer = make()
    x = _x(rng, 3, 6, 2)
    klayer.build(x.shape)
    _randomize(klayer, rng)
    flayer = fastrnn.from_keras(klayer)
    flat = [_x(rng, 3, s) for s in sizes]
    kstate = flat if len(sizes) != 3 else [[flat[0], flat[1]], [flat[2]]]
    want = _flat(klayer(x, initial_state=kstate))
    got = _flat(flayer(x, initial_state=kstate))
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, atol=ATOL)
    got = _flat(flayer(x, initial_state=kstate, mask=_ragged_mask(rng, 3, 6)))
    assert len(got) == len(want)


def test_live_stateful(rng):
    klayer = L.LSTM(4, stateful=True, return_sequences=True)
    x1, x2, x3 = _x(rng, 2, 5, 3), _x(rng, 2, 4, 3), _x(rng, 2, 3, 3)
    klayer.build(x1.shape)
    _randomize(klayer, rng)
    flayer = fastrnn.from_keras(klayer)
    _check(klayer, flayer, x1)
    _check(klayer, flayer, x2)  # continues from the carried state
    klayer.reset_states()
    flayer.reset_states()
    _check(klayer, flayer, x3)
    # converting mid-stream carries Keras's current states over
    klayer(x1)
    _check(klayer, fastrnn.from_keras(klayer), x2)


def test_live_cells(rng):
    for kcell in (L.LSTMCell(4), L.GRUCell(3, reset_after=False), L.SimpleRNNCell(5)):
        kcell.build((2, 3))
        _randomize(kcell, rng)
        fcell = fastrnn.from_keras(kcell)
        x = _x(rng, 2, 3)
        sizes = kcell.state_size if isinstance(kcell.state_size, list) else [kcell.state_size]
        states = [_x(rng, 2, s) for s in sizes]
        want = _flat(kcell(x, states))
        got = _flat(fcell(x, states))
        for g, w in zip(got, want, strict=True):
            np.testing.assert_allclose(g, w, atol=ATOL)


# ------------------------------------------------------------------ models


def _randomize_model(model, rng):
    for layer in model.layers:
        if layer.get_weights():
            _randomize(layer, rng)


def _tokens(rng, B=5, T=7, V=11):
    x = rng.integers(1, V, (B, T))
    x[0, 4:] = 0
    x[2, :2] = 0
    x[3, 1:6:2] = 0
    return x


def _sequential(rng):
    model = keras.Sequential([
        keras.Input((7,), dtype="int32"),
        L.Embedding(11, 4, mask_zero=True),
        L.Bidirectional(L.LSTM(6, return_sequences=True)),
        L.GRU(5, return_sequences=True),
        L.RNN([L.LSTMCell(3), L.SimpleRNNCell(4)], return_sequences=True),
        L.Bidirectional(L.SimpleRNN(3, return_sequences=True),
                        backward_layer=L.SimpleRNN(3, return_sequences=True, go_backwards=True),
                        merge_mode="ave"),
        L.TimeDistributed(L.Dense(3, activation="relu")),
        L.Dropout(0.3),
        L.Masking(0.5),
        L.RNN(L.GRUCell(2)),
        L.Activation("tanh"),
        L.Dense(2, activation="softmax"),
    ])
    _randomize_model(model, rng)
    return model


def _functional(rng):
    inp = keras.Input((6, 3))
    y = L.Masking(0.0)(inp)
    y = L.LSTM(4, return_sequences=True)(y)
    y = L.Dropout(0.2)(y)
    y = L.Activation("relu")(y)
    y = L.Bidirectional(L.GRU(3), merge_mode="sum")(y)
    y = L.Dense(2)(y)
    model = keras.Model(inp, y)
    _randomize_model(model, rng)
    x = _x(rng, 4, 6, 3)
    x[1, 4:] = 0.0
    x[2, :2] = 0.0
    return model, x


def test_sequential_from_keras_and_files(rng, tmp_path):
    model = _sequential(rng)
    x = _tokens(rng)
    want = model.predict(x, verbose=0)
    fm = fastrnn.from_keras(model)
    assert isinstance(fm, fastrnn.Sequential)
    np.testing.assert_allclose(fm.predict(x, batch_size=2), want, atol=ATOL)
    model.save(tmp_path / "m.keras")
    np.testing.assert_allclose(fastrnn.load_keras(tmp_path / "m.keras").predict(x), want,
                               atol=ATOL)
    # the converted model saves natively and loads back exactly
    fastrnn.save(fm, tmp_path / "m.fastrnn")
    np.testing.assert_array_equal(fastrnn.load(tmp_path / "m.fastrnn")(x), fm(x))


def test_functional_from_keras_and_files(rng, tmp_path):
    model, x = _functional(rng)
    want = model.predict(x, verbose=0)
    np.testing.assert_allclose(fastrnn.from_keras(model)(x), want, atol=ATOL)
    model.save(tmp_path / "f.keras")
    model.save_weights(tmp_path / "f.weights.h5")
    for loaded in (fastrnn.load_keras(tmp_path / "f.keras"),
                   fastrnn.load_keras(tmp_path / "f.weights.h5", config=tmp_path / "f.keras"),
                   fastrnn.load_keras(tmp_path / "f.weights.h5", config=model.to_json())):
        np.testing.assert_allclose(loaded.predict(x, batch_size=3), want, atol=ATOL)
    with pytest.raises(ValueError, match="config="):
        fastrnn.load_keras(tmp_path / "f.weights.h5")


def test_unzipped_model_directory_and_sharded_weights(rng, tmp_path):
    """Keras 3's model.save(dir, zipped=False) loads (it was "neither a .keras
    zip nor an HDF5 file"); sharded weights are refused, saying so."""
    model, x = _functional(rng)
    want = model.predict(x, verbose=0)
    model.save(tmp_path / "dir", zipped=False)
    np.testing.assert_allclose(fastrnn.load_keras(tmp_path / "dir")(x), want, atol=ATOL)
    model.save_weights(tmp_path / "w.weights.json", max_shard_size=1e-6)
    with pytest.raises(ValueError, match=r"index of sharded Keras 3 weights"):
        fastrnn.load_keras(tmp_path / "w.weights.json", config=model.to_json())
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"a directory, but neither .* found \[\]"):
        fastrnn.load_keras(tmp_path / "empty")


def test_legacy_h5(rng, tmp_path):
    model, x = _functional(rng)
    model.save(tmp_path / "f.h5")
    np.testing.assert_allclose(fastrnn.load_keras(tmp_path / "f.h5")(x),
                               model.predict(x, verbose=0), atol=ATOL)


def test_unsupported_models(rng, tmp_path):
    model = keras.Sequential([keras.Input((5, 3)), L.Conv1D(2, 3), L.LSTM(2)])
    with pytest.raises(ValueError, match="Conv1D"):
        fastrnn.from_keras(model)
    model.save(tmp_path / "c.keras")
    with pytest.raises(ValueError, match="Conv1D"):
        fastrnn.load_keras(tmp_path / "c.keras")
    a, b = keras.Input((4, 2)), keras.Input((4, 2))
    two = keras.Model([a, b], L.LSTM(2)(L.Add()([a, b])))
    with pytest.raises(ValueError, match="inputs"):
        fastrnn.from_keras(two)
    with pytest.raises(ValueError, match="Conv1D"):
        fastrnn.from_keras(L.Conv1D(2, 3))
    with pytest.raises(TypeError, match="Keras layer or model"):
        fastrnn.from_keras(object())

    class Sub(keras.Model):
        def __init__(self):
            super().__init__()
            self.rnn = L.LSTM(2)

        def call(self, x):
            return self.rnn(x)

    with pytest.raises(ValueError, match="subclassed"):
        fastrnn.from_keras(Sub())
    bad = tmp_path / "bad.keras"
    bad.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="neither"):
        fastrnn.load_keras(bad)


_BLOCKED_SCRIPT = textwrap.dedent("""
    import sys, importlib.abc

    class _Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("keras", "tensorflow", "tf_keras"):
                raise ImportError(f"import of {name} is blocked in this test")
            return None

    sys.meta_path.insert(0, _Block())
    import numpy as np
    import fastrnn
    try:
        import keras  # noqa: F401
    except ImportError:
        pass
    else:
        raise SystemExit("the keras import was not blocked")
    data = np.load(sys.argv[2])
    model = fastrnn.load_keras(sys.argv[1])
    y = model.predict(data["x"], batch_size=3)
    np.testing.assert_allclose(y, data["want"], atol=1e-5, rtol=0)
    bad = [m for m in ("keras", "tensorflow") if m in sys.modules]
    assert not bad, bad
    print("OK", float(np.abs(y - data["want"]).max()))
""")


def test_keras_file_without_keras(rng, tmp_path):
    """Embedding(mask_zero) -> Bidirectional(LSTM) -> Dense, saved as .keras, loaded with
    keras and tensorflow unimportable, matches model.predict to 1e-5."""
    model = keras.Sequential([
        keras.Input((9,), dtype="int32"),
        L.Embedding(17, 5, mask_zero=True),
        L.Bidirectional(L.LSTM(7)),
        L.Dense(3),
    ])
    _randomize_model(model, rng)
    x = _tokens(rng, B=7, T=9, V=17)
    want = model.predict(x, verbose=0)
    model.save(tmp_path / "model.keras")
    np.savez(tmp_path / "data.npz", x=x, want=want)
    script = tmp_path / "run.py"
    script.write_text(_BLOCKED_SCRIPT)
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, str(script), str(tmp_path / "model.keras"),
                           str(tmp_path / "data.npz")], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("OK")


def test_h5_layout_documented_names(rng, tmp_path):
    """The group naming load_keras relies on, checked on a file Keras just wrote."""
    import h5py

    model = _sequential(rng)
    model.save_weights(tmp_path / "w.weights.h5")
    with h5py.File(tmp_path / "w.weights.h5", "r") as f:
        groups = set(f["layers"].keys())
    assert {"embedding", "bidirectional", "bidirectional_1", "gru", "rnn", "rnn_1",
            "time_distributed", "dense"} <= groups
    cfg = json.loads(model.to_json())
    from fastrnn.interop.keras_file import model_chain

    chain, names = model_chain(cfg)
    assert set(names.values()) <= groups | {"dropout", "masking", "activation"}


def _state_models():
    """Functional models that read an output of a recurrent layer other than its first."""
    inp = keras.Input((6, 4))
    _, _, c = L.LSTM(3, return_state=True, name="lstm")(inp)
    yield keras.Model(inp, L.Dense(2, name="dense")(c)), (
        r"layer 'dense' \(Dense\) reads output 2 \(a state it returns with return_state=True\)"
        r" of layer 'lstm' \(LSTM\)")
    yield keras.Model(inp, c), \
        r"the model's output is output 2 \(a state .*\) of layer 'lstm' \(LSTM\)"
    inp = keras.Input((6, 4))
    _, h, _ = L.LSTM(3, return_sequences=True, return_state=True, name="lstm")(inp)
    yield keras.Model(inp, L.Dense(2, name="dense")(h)), \
        r"layer 'dense' \(Dense\) reads output 1 \(a state .*\) of layer 'lstm' \(LSTM\)"
    inp = keras.Input((6, 4))
    outs = L.Bidirectional(L.GRU(3, return_state=True), name="bi")(inp)
    yield keras.Model(inp, L.Dense(2, name="dense")(outs[2])), \
        r"reads output 2 \(a state .*\) of layer 'bi' \(Bidirectional\)"
    # a Sequential ending in such a layer returns [output, *states] in Keras: the
    # model returned the output alone
    for last, cls in ((L.LSTM(3, return_state=True, name="last"), "LSTM"),
                      (L.Bidirectional(L.GRU(3, return_state=True), name="last"),
                       "Bidirectional")):
        yield keras.Sequential([keras.Input((6, 4)), last]), \
            rf"the model's last layer 'last' \({cls}\) has return_state=True"


def test_functional_state_outputs_refused(rng, tmp_path):
    """A layer fed a recurrent layer's state (not its first output) is refused, through
    from_keras, a .keras file and a legacy .h5 (fastrnn's Sequential passes the first
    output on: converting it silently gave another model)."""
    for model, pattern in _state_models():
        _randomize_model(model, rng)
        model.save(tmp_path / "s.keras")
        model.save(tmp_path / "s.h5")
        with pytest.raises(ValueError, match=pattern):
            fastrnn.from_keras(model)
        for path in (tmp_path / "s.keras", tmp_path / "s.h5"):
            with pytest.raises(ValueError, match=pattern):
                fastrnn.load_keras(path)


def test_functional_first_output_of_return_state_layer(rng, tmp_path):
    """The first output of a return_state layer, read onward, still converts."""
    x = _x(rng, 3, 6, 4)
    inp = keras.Input((6, 4))
    o, _, _ = L.LSTM(3, return_state=True)(inp)
    model = keras.Model(inp, L.Dense(2)(o))
    _randomize_model(model, rng)
    want = model.predict(x, verbose=0)
    model.save(tmp_path / "o.keras")
    for got in (fastrnn.from_keras(model)(x), fastrnn.load_keras(tmp_path / "o.keras")(x)):
        np.testing.assert_allclose(got, want, atol=ATOL)


def test_legacy_h5_with_config(rng, tmp_path):
    """config= replaces a legacy .h5 file's own config, as for a .keras file: here one
    whose last Dense has another activation, checked against that model in Keras."""
    model, x = _functional(rng)
    model.save(tmp_path / "f.h5")
    cfg = json.loads(model.to_json())
    dense = [e for e in cfg["config"]["layers"] if e["class_name"] == "Dense"][-1]
    dense["config"]["activation"] = "tanh"
    other = keras.models.model_from_json(json.dumps(cfg))
    other.set_weights(model.get_weights())
    want = other.predict(x, verbose=0)
    assert np.abs(want - model.predict(x, verbose=0)).max() > 1e-3
    for config in (json.dumps(cfg), cfg):
        np.testing.assert_allclose(fastrnn.load_keras(tmp_path / "f.h5", config=config)(x),
                                   want, atol=ATOL)
    with pytest.raises(TypeError, match="config: expected a dict"):
        fastrnn.load_keras(tmp_path / "f.h5", config=5)
    with pytest.raises(FileNotFoundError, match="no such file"):
        fastrnn.load_keras(tmp_path / "f.h5", config=tmp_path / "missing.json")
