"""fastrnn against the live Keras 3 (torch backend) on fresh random configurations.

Each case builds a Keras layer, copies its config (through
``fastrnn.deserialize``, the path a saved Keras config takes) and its
random weights into fastrnn, and compares outputs on random data.
"""

import numpy as np
import pytest

import fastrnn
from conftest import layer_backends

keras = pytest.importorskip("keras")

BACKENDS = layer_backends()
CLASSES = ["LSTM", "GRU", "SimpleRNN"]


def _np(v):
    if isinstance(v, (list, tuple)):  # a stacked cell's nested states
        return np.stack([_np(u) for u in v])
    return keras.ops.convert_to_numpy(v)


def _as_list(y):
    return [_np(v) for v in y] if isinstance(y, (list, tuple)) else [_np(y)]


def _randomize(klayer, rng):
    klayer.set_weights([rng.uniform(-0.6, 0.6, w.shape).astype(np.float32)
                        for w in klayer.get_weights()])


def _twin(klayer, backend):
    layer = fastrnn.deserialize({"class_name": type(klayer).__name__,
                                 "config": klayer.get_config()})
    if isinstance(layer, fastrnn.Bidirectional):
        for sub in (layer.forward_layer, layer.backward_layer):
            sub.backend_arg = backend
    else:
        layer.backend_arg = backend
    layer.set_weights(klayer.get_weights())
    return layer


def _compare(klayer, layer, x, **kwargs):
    kk = dict(kwargs)
    if "mask" in kk:
        kk["mask"] = keras.ops.convert_to_tensor(kk["mask"])
    want = _as_list(klayer(x, **kk))
    got = layer(x, **kwargs)
    got = [np.stack(g) if isinstance(g, list) else g for g in (got if isinstance(got, list) else [got])]
    assert len(got) == len(want)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("seed", range(6))
def test_random_layer_configs(seed, backend):
    rng = np.random.default_rng(1000 + seed)
    cls = CLASSES[seed % 3]
    kwargs = dict(units=int(rng.integers(1, 12)),
                  return_sequences=bool(rng.integers(2)), return_state=bool(rng.integers(2)),
                  go_backwards=bool(rng.integers(2)), use_bias=bool(rng.integers(2)),
                  activation=str(rng.choice(["tanh", "relu", "sigmoid", "softsign", "elu"])))
    if cls != "SimpleRNN":
        kwargs["recurrent_activation"] = str(rng.choice(["sigmoid", "hard_sigmoid", "tanh"]))
    if cls == "GRU":
        kwargs["reset_after"] = bool(rng.integers(2))
    B, T, D = int(rng.integers(1, 5)), int(rng.integers(1, 8)), int(rng.integers(1, 6))
    x = rng.standard_normal((B, T, D)).astype(np.float32)
    klayer = getattr(keras.layers, cls)(**kwargs)
    klayer(x)
    _randomize(klayer, rng)
    layer = _twin(klayer, backend)
    call = {}
    if rng.integers(2):
        mask = rng.random((B, T)) > 0.3
        mask[0] = False  # a fully masked row: state kept, output zeros
        call["mask"] = mask
    if rng.integers(2):
        n = 2 if cls == "LSTM" else 1
        call["initial_state"] = [rng.standard_normal((B, kwargs["units"])).astype(np.float32)
                                 for _ in range(n)]
    _compare(klayer, layer, x, **call)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("merge_mode", ["concat", "sum", "mul", "ave", None])
def test_bidirectional_merge_modes(merge_mode, backend, rng):
    x = rng.standard_normal((3, 6, 4)).astype(np.float32)
    mask = rng.random((3, 6)) > 0.3
    klayer = keras.layers.Bidirectional(keras.layers.LSTM(5, return_sequences=True),
                                        merge_mode=merge_mode)
    klayer(x)
    _randomize(klayer, rng)
    _compare(klayer, _twin(klayer, backend), x, mask=mask)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kwargs", [{}, {"return_sequences": True},
                                    {"return_sequences": True, "return_state": True,
                                     "go_backwards": True}])
def test_an_empty_batch_gives_what_keras_gives(backend, kwargs, rng):
    """Batch 0: empty outputs and states of Keras's shapes (it was refused);
    a Bidirectional too."""
    x = np.zeros((0, 5, 3), np.float32)
    for klayer in (keras.layers.LSTM(4, **kwargs),
                   keras.layers.Bidirectional(keras.layers.GRU(
                       4, **{k: v for k, v in kwargs.items() if k != "go_backwards"}))):
        klayer(rng.standard_normal((2, 5, 3)).astype(np.float32))
        _randomize(klayer, rng)
        _compare(klayer, _twin(klayer, backend), x)
        want = [a.shape for a in _as_list(klayer(x))]
        got = _twin(klayer, backend)(x)
        assert [a.shape for a in (got if isinstance(got, list) else [got])] == want


@pytest.mark.parametrize("backend", BACKENDS)
def test_bidirectional_gru_states(backend, rng):
    x = rng.standard_normal((2, 5, 3)).astype(np.float32)
    klayer = keras.layers.Bidirectional(keras.layers.GRU(4, return_state=True,
                                                         go_backwards=False))
    klayer(x)
    _randomize(klayer, rng)
    _compare(klayer, _twin(klayer, backend), x)


@pytest.mark.parametrize("backend", BACKENDS)
def test_stateful(backend, rng):
    x1 = rng.standard_normal((2, 4, 3)).astype(np.float32)
    x2 = rng.standard_normal((2, 3, 3)).astype(np.float32)
    klayer = keras.layers.GRU(5, stateful=True, return_sequences=True)
    klayer(x1)
    _randomize(klayer, rng)
    klayer.reset_states()
    layer = _twin(klayer, backend)
    _compare(klayer, layer, x1)
    _compare(klayer, layer, x2)  # continues from the carried state


@pytest.mark.parametrize("backend", BACKENDS)
def test_stateful_bidirectional_states(backend, rng):
    x1 = rng.standard_normal((2, 4, 3)).astype(np.float32)
    x2 = rng.standard_normal((2, 3, 3)).astype(np.float32)
    klayer = keras.layers.Bidirectional(keras.layers.LSTM(5, stateful=True))
    klayer(x1)
    _randomize(klayer, rng)
    klayer.reset_states()
    layer = _twin(klayer, backend)
    assert layer.states is None  # (no call yet)
    for x in (x1, x2):
        _compare(klayer, layer, x)
        want = [_np(s) for s in klayer.states]  # forward h, c, then backward h, c
        assert isinstance(layer.states, tuple) and len(layer.states) == len(want) == 4
        for g, w in zip(layer.states, want):
            np.testing.assert_allclose(g, w, atol=2e-5, rtol=1e-5)
    plain = fastrnn.Bidirectional(fastrnn.GRU(3))
    plain(x1)
    assert plain.states is None  # not stateful


@pytest.mark.parametrize("backend", BACKENDS)
def test_stacked_cells(backend, rng):
    x = rng.standard_normal((3, 5, 4)).astype(np.float32)
    mask = rng.random((3, 5)) > 0.3
    cells = [keras.layers.GRUCell(3, reset_after=False), keras.layers.LSTMCell(4),
             keras.layers.SimpleRNNCell(2)]
    klayer = keras.layers.RNN(cells, return_sequences=True, return_state=True)
    klayer(x)
    _randomize(klayer, rng)
    _compare(klayer, _twin(klayer, backend), x, mask=mask)


# every activation name fastrnn knows, against Keras' own function of that name
ACTIVATION_NAMES = sorted(fastrnn.activations.CODES)


@pytest.mark.parametrize("name", ACTIVATION_NAMES)
def test_activation_matches_keras(name):
    from fastrnn import activations

    x = np.concatenate([np.linspace(-7, 7, 281), [-1.0, -0.5, 0.5, 1.0, -3.0, 3.0, 6.0, 0.0],
                        np.random.default_rng(1).standard_normal(50) * 4]).astype(np.float64)
    want = _np(keras.activations.get(name)(keras.ops.convert_to_tensor(x)))
    got = activations.apply(activations.resolve(name), x)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ["relu6", "leaky_relu", "mish", "hard_silu", "log_sigmoid",
                                  "squareplus", "sparse_sigmoid"])
def test_new_activations_in_layers(backend, name):
    """A Keras layer trained with one of Keras' rarer activations converts by name."""
    rng = np.random.default_rng(len(name))
    klayer = keras.layers.GRU(7, activation=name, recurrent_activation="hard_sigmoid",
                              return_sequences=True)
    x = rng.standard_normal((3, 6, 4)).astype(np.float32)
    klayer(x)
    _randomize(klayer, rng)
    layer = _twin(klayer, backend)
    np.testing.assert_allclose(layer(x), _np(klayer(x)), atol=2e-5, rtol=2e-5)
    klstm = keras.layers.LSTM(5, recurrent_activation=name)
    klstm(x)
    _randomize(klstm, rng)
    np.testing.assert_allclose(_twin(klstm, backend)(x), _np(klstm(x)), atol=2e-5, rtol=2e-5)


@pytest.mark.parametrize("policy", [
    {"module": "keras", "class_name": "DTypePolicy", "config": {}, "registered_name": None},
    {"class_name": "DTypePolicy", "config": {"name": None}},
    {"class_name": "DTypePolicy", "config": {"name": "float64"}},
    {"class_name": "QuantizedDTypePolicy", "config": {"mode": "int8", "source_name": "float64"}},
    {}], ids=["no-name", "name-none", "float64", "quantized-source", "empty"])
def test_dtype_policy_dicts_read_as_keras_reads_them(policy):
    """A policy without a name was read as float64 (numpy's dtype of None)."""
    want = keras.dtype_policies.deserialize(policy).name if policy else "float32"
    if policy.get("class_name") == "QuantizedDTypePolicy":
        want = policy["config"]["source_name"]
    assert fastrnn.LSTM(4, dtype=policy).dtype == np.dtype(want)
    assert fastrnn.deserialize({"class_name": "GRU", "config": {"units": 4, "dtype": policy}}
                               ).dtype == np.dtype(want)


@pytest.mark.parametrize("name", ["GRUCell", "SimpleRNNCell"])
def test_one_state_cell_given_a_bare_array_returns_one(name):
    """Keras returns the new state as a bare array when it was given one (and
    a list for a list); fastrnn returned a list of one, which broke
    ``out, h = cell(x, h)`` loops ported from Keras."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 5)).astype(np.float32)
    h = rng.standard_normal((3, 7)).astype(np.float32)
    k = getattr(keras.layers, name)(7)
    f = getattr(fastrnn, name)(7)
    ky, kh = k(x, h)
    f.set_weights([keras.ops.convert_to_numpy(w) for w in k.weights])
    fy, fh = f(x, h)
    assert isinstance(fh, np.ndarray)
    np.testing.assert_allclose(fh, keras.ops.convert_to_numpy(kh), atol=1e-5)
    np.testing.assert_allclose(fy, keras.ops.convert_to_numpy(ky), atol=1e-5)
    _, kl = k(x, [h])
    _, fl = f(x, [h])
    assert isinstance(fl, list) and len(fl) == 1 and isinstance(kl, (list, tuple))
