"""Sequence semantics of the Keras-style layers, on every backend under test.

Expected values come from small NumPy loops written here from the Keras
definitions (not from fastrnn), or from relations that must hold between
calls (a stateful second call equals one long call, ...).
"""

import json

import numpy as np
import pytest

import fastrnn
from conftest import layer_backends

BACKENDS = layer_backends()


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _lstm_numpy(x, W, U, b, h, c, go_backwards=False, mask=None):
    """Keras LSTM written out directly: the expected values of these tests."""
    H = U.shape[0]
    outs, prev = [], np.zeros_like(h)
    steps = range(x.shape[1] - 1, -1, -1) if go_backwards else range(x.shape[1])
    for t in steps:
        z = x[:, t] @ W + h @ U + b
        i, f, g, o = (z[:, k * H:(k + 1) * H] for k in range(4))
        c_new = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
        h_new = _sigmoid(o) * np.tanh(c_new)
        if mask is not None:
            m = mask[:, t, None]
            h_new, c_new = np.where(m, h_new, h), np.where(m, c_new, c)
            y = np.where(m, h_new, prev)
        else:
            y = h_new
        h, c, prev = h_new, c_new, y
        outs.append(y)
    return np.stack(outs, 1), h, c


def _random_lstm(rng, D, H, **kwargs):
    layer = fastrnn.LSTM(H, **kwargs)
    layer.set_weights([rng.uniform(-0.6, 0.6, (D, 4 * H)), rng.uniform(-0.6, 0.6, (H, 4 * H)),
                       rng.uniform(-0.6, 0.6, 4 * H)])
    return layer


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("go_backwards", [False, True])
def test_lstm_matches_numpy_definition(rng, backend, go_backwards):
    B, T, D, H = 3, 7, 5, 9
    layer = _random_lstm(rng, D, H, return_sequences=True, return_state=True,
                         go_backwards=go_backwards, backend=backend, dtype="float64")
    x = rng.standard_normal((B, T, D))
    mask = rng.random((B, T)) > 0.3
    mask[0] = False  # a fully masked row
    h0, c0 = rng.standard_normal((B, H)), rng.standard_normal((B, H))
    W, U, b = layer.get_weights()
    y, h, c = layer(x, mask=mask, initial_state=[h0, c0])
    ey, eh, ec = _lstm_numpy(x, W, U, b, h0, c0, go_backwards, mask)
    np.testing.assert_allclose(y, ey, atol=1e-10)
    np.testing.assert_allclose(h, eh, atol=1e-10)
    np.testing.assert_allclose(c, ec, atol=1e-10)
    np.testing.assert_array_equal(h[0], h0[0])  # masked everywhere: state untouched
    assert layer.backend == backend


@pytest.mark.parametrize("backend", BACKENDS)
def test_last_output_with_mask(rng, backend):
    """return_sequences=False returns the output of the last processed step."""
    B, T, D, H = 4, 6, 3, 5
    kw = dict(backend=backend, dtype="float64")
    seq = _random_lstm(rng, D, H, return_sequences=True, **kw)
    last = fastrnn.LSTM(H, **kw)
    last.set_weights(seq.get_weights())
    x = rng.standard_normal((B, T, D))
    mask = np.ones((B, T), bool)
    mask[1, 4:] = False
    mask[2, :] = False
    mask[3, 0] = False
    np.testing.assert_allclose(last(x, mask=mask), seq(x, mask=mask)[:, -1], atol=1e-12)
    assert np.all(last(x, mask=mask)[2] == 0)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cls", [fastrnn.SimpleRNN, fastrnn.GRU, fastrnn.LSTM])
def test_stateful_two_calls_equal_one_long_call(rng, backend, cls):
    B, D, H = 2, 3, 7
    x = rng.standard_normal((B, 8, D)).astype(np.float32)
    full = cls(H, return_sequences=True, backend=backend)
    full.build(x.shape)
    st = cls(H, return_sequences=True, stateful=True, backend=backend)
    st.set_weights(full.get_weights())
    y = full(x)
    y1, y2 = st(x[:, :3]), st(x[:, 3:])
    np.testing.assert_allclose(np.concatenate([y1, y2], 1), y, atol=1e-6)
    st.reset_states()
    np.testing.assert_allclose(st(x[:, :3]), y[:, :3], atol=1e-6)
    with pytest.raises(ValueError, match="stateful with batch size 2"):
        st(x[:1])
    # an initial_state of another batch too (it used to be broadcast into the carried states)
    carried = [s.copy() for s in st.states]
    for batch in (1, 3):
        xb = rng.standard_normal((batch, 2, D)).astype(np.float32)
        init = [np.ones((batch, H), np.float32) for _ in st.states]
        with pytest.raises(ValueError, match=f"stateful with batch size 2.*batch size {batch}"):
            st(xb, initial_state=init)
    for a, b in zip(st.states, carried):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("backend", BACKENDS)
def test_time_major_is_a_transpose(rng, backend):
    x = rng.standard_normal((3, 5, 4)).astype(np.float32)
    a = fastrnn.GRU(6, return_sequences=True, backend=backend)
    a.build(x.shape)
    b = fastrnn.GRU(6, return_sequences=True, time_major=True, backend=backend)
    b.set_weights(a.get_weights())
    np.testing.assert_allclose(b(x.transpose(1, 0, 2)), a(x).transpose(1, 0, 2), atol=1e-6)
    # with time_major the mask is (time, batch), like the inputs
    mask = rng.random((3, 5)) > 0.3
    np.testing.assert_allclose(b(x.transpose(1, 0, 2), mask=mask.T),
                               a(x, mask=mask).transpose(1, 0, 2), atol=1e-6)
    with pytest.raises(ValueError, match=r"mask: expected shape \(time, batch\) with "
                                         r"time_major=True = \(5, 3\), got \(3, 5\)"):
        b(x.transpose(1, 0, 2), mask=mask)


@pytest.mark.parametrize("backend", BACKENDS)
def test_stacked_list_equals_sequential_layers(rng, backend):
    x = rng.standard_normal((2, 6, 3)).astype(np.float32)
    stack = fastrnn.RNN([fastrnn.LSTMCell(5), fastrnn.GRUCell(4), fastrnn.SimpleRNNCell(3)],
                        return_sequences=True, return_state=True, backend=backend)
    stack.build(x.shape)
    w = stack.get_weights()
    l1 = fastrnn.LSTM(5, return_sequences=True, backend=backend)
    l2 = fastrnn.GRU(4, return_sequences=True, backend=backend)
    l3 = fastrnn.SimpleRNN(3, return_sequences=True, backend=backend)
    l1.set_weights(w[:3]); l2.set_weights(w[3:6]); l3.set_weights(w[6:])
    y, (h1, c1), (h2,), (h3,) = stack(x)
    np.testing.assert_allclose(y, l3(l2(l1(x))), atol=1e-6)
    np.testing.assert_allclose(h3, y[:, -1], atol=1e-6)


def test_zero_time_steps_returns_initial_state(rng):
    layer = _random_lstm(rng, 3, 4, return_sequences=False, return_state=True)
    h0 = rng.standard_normal((2, 4)).astype(np.float32)
    c0 = rng.standard_normal((2, 4)).astype(np.float32)
    y, h, c = layer(np.ones((2, 0, 3), np.float32), initial_state=[h0, c0])
    assert y.shape == (2, 4) and not y.any()
    np.testing.assert_array_equal(h, h0)
    np.testing.assert_array_equal(c, c0)
    seq = fastrnn.LSTM(4, return_sequences=True)
    seq.set_weights(layer.get_weights())
    assert seq(np.ones((2, 0, 3), np.float32)).shape == (2, 0, 4)


def test_callable_activation_runs_on_reference_and_says_so(rng):
    layer = fastrnn.SimpleRNN(4, activation=lambda v: np.sin(v), return_sequences=True)
    x = rng.standard_normal((2, 3, 5)).astype(np.float32)
    layer.build(x.shape)
    W, U, b = layer.get_weights()
    h, outs = np.zeros((2, 4)), []
    for t in range(3):
        h = np.sin(x[:, t] @ W + b + h @ U)
        outs.append(h)
    np.testing.assert_allclose(layer(x), np.stack(outs, 1), atol=1e-6)
    assert layer.backend == "reference"
    if fastrnn.get_backend() == "auto":  # not forced by $FASTRNN_BACKEND
        assert "activation is a Python callable" in layer.backend_reason


def test_forced_backend_that_cannot_run_a_callable_raises(rng):
    if not fastrnn.dispatch.available("cpu")[0]:
        pytest.skip("cpu backend not available")
    layer = fastrnn.SimpleRNN(4, activation=np.sin, backend="cpu")
    layer.build((1, 2, 3))
    with pytest.raises(ValueError, match="backend 'cpu' was requested"):
        layer(np.ones((1, 2, 3), np.float32))


def test_cell_step_equals_layer_step(rng):
    for cell in (fastrnn.LSTMCell(6), fastrnn.GRUCell(6, reset_after=False), fastrnn.SimpleRNNCell(6)):
        cell.build((None, 4))
        layer = fastrnn.RNN(cell, return_state=True)
        x = rng.standard_normal((3, 4)).astype(np.float32)
        states = [rng.standard_normal((3, s)).astype(np.float32) for s in
                  (cell.state_size if isinstance(cell.state_size, list) else [cell.state_size])]
        y, new = cell(x, states)
        ref = layer(x[:, None], initial_state=states)
        np.testing.assert_allclose(y, ref[0], atol=1e-6)
        for a, b in zip(new, ref[1:]):
            np.testing.assert_allclose(a, b, atol=1e-6)


class _MinimalCell:
    """A user-written cell: h' = tanh(x A + h) (runs through the host loop)."""

    state_size = 3
    output_size = 3

    def __init__(self, A):
        self.A = A

    def __call__(self, x, states, training=False):
        h = np.tanh(x @ self.A + states[0])
        return h, [h]


def test_custom_cell_host_loop_with_mask(rng):
    A = rng.standard_normal((2, 3))
    layer = fastrnn.RNN(_MinimalCell(A), return_sequences=True, dtype="float64")
    x = rng.standard_normal((2, 4, 2))
    mask = np.array([[1, 1, 0, 1], [1, 0, 0, 0]], bool)
    h, prev, outs = np.zeros((2, 3)), np.zeros((2, 3)), []
    for t in range(4):
        new = np.tanh(x[:, t] @ A + h)
        m = mask[:, t, None]
        h = np.where(m, new, h)
        prev = np.where(m, new, prev)
        outs.append(prev)
    np.testing.assert_allclose(layer(x, mask=mask), np.stack(outs, 1), atol=1e-6)
    assert "host step loop" in layer.backend_reason or layer.backend == "custom"


class _PlainCell:
    """A cell written as the README describes one: ``state_size`` and
    ``__call__(x_t, states)``, no ``training`` argument (Keras passes it
    only to cells whose call takes it)."""

    state_size = 3
    output_size = 3

    def __init__(self, A):
        self.A = A

    def __call__(self, x, states):
        h = np.tanh(x @ self.A + states[0])
        return h, [h]


def _plain_numpy(x, A, mask):
    h, out = np.zeros((x.shape[0], A.shape[1])), []
    for t in range(x.shape[1]):
        h = np.where(mask[:, t, None], np.tanh(x[:, t] @ A + h), h)
        out.append(h)
    return np.stack(out, 1)


def test_custom_cell_without_training_argument(rng):
    A = rng.standard_normal((2, 3))
    x = rng.standard_normal((2, 5, 2))
    mask = np.ones((2, 5), bool)
    layer = fastrnn.RNN(_PlainCell(A), return_sequences=True, dtype="float64")
    for training in (False, True):
        np.testing.assert_allclose(layer(x, training=training), _plain_numpy(x, A, mask), atol=1e-12)


def test_custom_cell_receives_training():
    seen = []

    class Cell(_PlainCell):
        def __call__(self, x, states, **kwargs):
            seen.append(kwargs.get("training"))
            return super().__call__(x, states)

    layer = fastrnn.RNN(Cell(np.eye(2, 3)), dtype="float64")
    layer(np.ones((1, 2, 2)), training=True)
    layer(np.ones((1, 2, 2)))
    assert seen == [True, True, False, False]


def test_stack_of_custom_and_builtin_cells(rng):
    """A user's cell below a built-in LSTM cell: the stack steps each cell in
    turn (it recursed without end before), masks apply to the whole stack."""
    B, T, D, H = 3, 6, 2, 5
    A = rng.standard_normal((D, 3))
    lstm = fastrnn.LSTMCell(H, dtype="float64")
    lstm.build((None, 3))
    W, U, b = (rng.uniform(-0.6, 0.6, w.shape) for w in lstm.get_weights())
    lstm.set_weights([W, U, b])
    x = rng.standard_normal((B, T, D))
    mask = rng.random((B, T)) > 0.3
    mask[:, 0] = True
    stack = fastrnn.RNN([_PlainCell(A), lstm], return_sequences=True, return_state=True,
                        dtype="float64")
    y, (h1,), (h2, c2) = stack(x, mask=mask)
    h1_seq = _plain_numpy(x, A, mask)
    want, h, c = _lstm_numpy(h1_seq, W, U, b, np.zeros((B, H)), np.zeros((B, H)), mask=mask)
    np.testing.assert_allclose(y, want, atol=1e-6)
    np.testing.assert_allclose(h1, h1_seq[:, -1], atol=1e-12)
    np.testing.assert_allclose(h2, h, atol=1e-6)
    np.testing.assert_allclose(c2, c, atol=1e-6)
    # one step of the stack itself, states nested per cell
    out, new = stack.cell(x[:, 0], [[np.zeros((B, 3))], [np.zeros((B, H)), np.zeros((B, H))]])
    np.testing.assert_allclose(out, want[:, 0], atol=1e-6)
    assert len(new) == 2 and len(new[0]) == 1 and len(new[1]) == 2
    with pytest.raises(ValueError, match="one entry per cell"):
        stack.cell(x[:, 0], [np.zeros((B, 3))])


def test_dropout_only_in_training(rng):
    layer = fastrnn.LSTM(5, dropout=0.5, recurrent_dropout=0.5, return_sequences=True, seed=3)
    x = rng.standard_normal((4, 6, 3)).astype(np.float32)
    layer.build(x.shape)
    plain = fastrnn.LSTM(5, return_sequences=True)
    plain.set_weights(layer.get_weights())
    np.testing.assert_allclose(layer(x), plain(x), atol=1e-6)  # inference: no dropout
    y_train = layer(x, training=True)
    assert y_train.shape == (4, 6, 5)
    assert np.abs(y_train - plain(x)).max() > 1e-3
    assert np.isfinite(y_train).all()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("merge_mode", ["concat", "sum", "mul", "ave", None])
def test_bidirectional_merge_modes(rng, backend, merge_mode):
    B, T, D, H = 3, 5, 4, 6
    x = rng.standard_normal((B, T, D))
    mask = rng.random((B, T)) > 0.25
    bi = fastrnn.Bidirectional(fastrnn.LSTM(H, return_sequences=True, dtype="float64",
                                            backend=backend), merge_mode=merge_mode)
    bi.build(x.shape)
    w = bi.get_weights()
    fw, _, _ = _lstm_numpy(x, *w[:3], np.zeros((B, H)), np.zeros((B, H)), False, mask)
    bw, _, _ = _lstm_numpy(x, *w[3:], np.zeros((B, H)), np.zeros((B, H)), True, mask)
    fw = np.where(mask[..., None], fw, 0.0)   # inside Bidirectional: zeros at masked steps
    bw = np.where(mask[:, ::-1, None], bw, 0.0)[:, ::-1]  # flipped back into time order
    got = bi(x, mask=mask)
    want = {"concat": np.concatenate([fw, bw], -1), "sum": fw + bw, "mul": fw * bw,
            "ave": (fw + bw) / 2, None: [fw, bw]}[merge_mode]
    if merge_mode is None:
        for g, w_ in zip(got, want):
            np.testing.assert_allclose(g, w_, atol=1e-10)
    else:
        np.testing.assert_allclose(got, want, atol=1e-10)


def test_float_inputs_are_cast_and_never_modified(rng):
    layer = _random_lstm(rng, 3, 4, return_sequences=True)
    x64 = rng.standard_normal((2, 5, 3))
    before = x64.copy()
    y = layer(x64)
    assert y.dtype == np.float32
    np.testing.assert_array_equal(x64, before)
    np.testing.assert_allclose(y, layer(x64.astype(np.float32)), atol=0)
    y16 = layer(x64.astype(np.float16))
    assert y16.dtype == np.float32


@pytest.mark.parametrize("layer_fn", [
    lambda: fastrnn.LSTM(5, return_sequences=True, return_state=True, go_backwards=True,
                         activation="relu", recurrent_activation="hard_sigmoid", use_bias=False),
    lambda: fastrnn.GRU(4, reset_after=False, stateful=True, time_major=True, dtype="float64"),
    lambda: fastrnn.SimpleRNN(3, activation="selu", dropout=0.2, backend="reference"),
    lambda: fastrnn.RNN([fastrnn.LSTMCell(3), fastrnn.GRUCell(2)], return_sequences=True),
    lambda: fastrnn.Bidirectional(fastrnn.GRU(3, return_sequences=True), merge_mode="sum"),
])
def test_config_json_round_trip(rng, layer_fn):
    layer = layer_fn()
    time_major = getattr(layer, "time_major", False)
    x = rng.standard_normal((4, 2, 3) if time_major else (2, 4, 3))
    layer.build((2, 4, 3))
    config = json.loads(json.dumps(fastrnn.serialize(layer)))
    clone = fastrnn.deserialize(config)
    assert fastrnn.serialize(clone) == fastrnn.serialize(layer)
    clone.set_weights(layer.get_weights())
    a, b = layer(x), clone(x)
    for u, v in zip(a if isinstance(a, list) else [a], b if isinstance(b, list) else [b]):
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))


@pytest.mark.parametrize("make", [
    lambda: fastrnn.Sequential([fastrnn.models.Masking(0.0), fastrnn.LSTM(4, return_sequences=True),
                                fastrnn.models.Dense(2, activation="relu")]),
    lambda: fastrnn.models.Dense(5, activation="tanh"),
])
def test_deserialize_takes_every_object_serialize_takes(rng, make):
    """fastrnn.deserialize(fastrnn.serialize(obj)) for a model and a Dense
    layer too (it refused them: 'unsupported class')."""
    obj = make()
    x = rng.standard_normal((2, 4, 3)).astype(np.float32)
    shapes = [(3, 16), (4, 16), (16,), (4, 2), (2,)] if hasattr(obj, "layers") else [(3, 5), (5,)]
    weights = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    obj.set_weights(weights)
    clone = fastrnn.deserialize(json.loads(json.dumps(fastrnn.serialize(obj))))
    assert type(clone) is type(obj) and fastrnn.serialize(clone) == fastrnn.serialize(obj)
    clone.set_weights(weights)
    np.testing.assert_array_equal(clone(x), obj(x))


def test_embedding_without_weights_says_so():
    model = fastrnn.Sequential([fastrnn.models.Embedding(10, 4), fastrnn.LSTM(3)])
    with pytest.raises(ValueError, match="Embedding 'embedding' has no weights"):
        model(np.array([[1, 2, 3]]))


def test_initializers_follow_keras(rng):
    layer = fastrnn.LSTM(8, kernel_initializer=fastrnn.initializers.GlorotUniform(seed=1))
    layer.build((2, 3, 5))
    W, U, b = layer.get_weights()
    limit = np.sqrt(6 / (5 + 32))
    assert np.abs(W).max() <= limit and np.abs(W).max() > limit * 0.8
    np.testing.assert_allclose(U @ U.T, np.eye(8), atol=1e-5)  # orthogonal rows
    np.testing.assert_array_equal(b, np.r_[np.zeros(8), np.ones(8), np.zeros(16)])  # unit_forget_bias
    again = fastrnn.LSTM(8, kernel_initializer=fastrnn.initializers.GlorotUniform(seed=1))
    again.build((2, 3, 5))
    np.testing.assert_array_equal(again.get_weights()[0], W)


def test_compute_output_shape():
    assert fastrnn.LSTM(4, return_sequences=True).compute_output_shape((2, 7, 3)) == (2, 7, 4)
    assert fastrnn.LSTM(4, return_state=True).compute_output_shape((2, 7, 3)) == [(2, 4), (2, 4), (2, 4)]
    bi = fastrnn.Bidirectional(fastrnn.GRU(4, return_sequences=True))
    assert bi.compute_output_shape((2, 7, 3)) == (2, 7, 8)


@pytest.mark.parametrize("make", ["keras", "nn", "torch"])
def test_one_step_calls_run_the_frame_kernel(make, rng, monkeypatch):
    """A cell called frame by frame runs one call of the per-frame (stream)
    kernels per step, and gives the outputs of the whole-sequence run."""
    from fastrnn import _engine

    x = rng.standard_normal((2, 5, 6)).astype(np.float32)
    if make == "keras":
        cell = fastrnn.LSTMCell(7)
        cell.build((None, 6))
        state = cell.get_initial_state(2)
        step = lambda x_t, s: cell(x_t, s)  # noqa: E731
        want = fastrnn.RNN(cell, return_sequences=True)(x)
    elif make == "nn":
        cell = fastrnn.nn.rnn_cell.LSTMCell(7)
        cell.build((None, 6))
        state = cell.zero_state(2, np.float32)
        step = lambda x_t, s: cell(x_t, s)  # noqa: E731
        want = fastrnn.nn.dynamic_rnn(cell, x, dtype=np.float32)[0]
    else:
        torch = pytest.importorskip("torch")
        module = torch.nn.LSTMCell(6, 7)
        cell = fastrnn.from_torch(module)
        state = (np.zeros((2, 7), np.float32), np.zeros((2, 7), np.float32))
        step = lambda x_t, s: (lambda hc: (hc[0], hc))(cell(x_t, s))  # noqa: E731
        want = fastrnn.RNN(cell.layer.cell, return_sequences=True)(x)
    calls = []
    real = _engine.step
    monkeypatch.setattr(_engine, "step", lambda *a: calls.append(1) or real(*a))
    for t in range(5):
        y, state = step(x[:, t], state)
        np.testing.assert_allclose(y, want[:, t], rtol=1e-5, atol=1e-6)
    assert len(calls) == 5


@pytest.mark.parametrize("backend", BACKENDS)
def test_repeated_calls_follow_weights_and_backend_changes(backend, rng, monkeypatch):
    """A layer keeps what a call reads (weights, backend, packed weights)
    from call to call: each change in between must reach the next call."""
    B, T, D, H = 2, 5, 3, 7
    layer = fastrnn.LSTM(H, return_sequences=True, backend=backend)
    x = rng.standard_normal((B, T, D)).astype(np.float32)
    layer(x)
    layer(x)  # (a second call with the same shape: the kept path)
    new = [rng.uniform(-0.5, 0.5, w.shape).astype(np.float32) for w in layer.get_weights()]
    layer.set_weights(new)
    zeros = np.zeros((B, H))
    expected = _lstm_numpy(x.astype(np.float64), *[w.astype(np.float64) for w in new],
                           zeros, zeros)[0]
    np.testing.assert_allclose(layer(x), expected, atol=1e-5)
    # the zero initial states the layer keeps between calls stay zero
    np.testing.assert_allclose(layer(x), expected, atol=1e-5)
    before = layer(x)
    layer.quantize("bfloat16")
    after = layer(x)
    assert np.abs(after - before).max() > 1e-6  # bfloat16 weights: other numbers
    if backend != "reference":
        monkeypatch.setenv("FASTRNN_BACKEND", "reference")
        layer_auto = fastrnn.LSTM(H, return_sequences=True)
        layer_auto(x)
        assert layer_auto.backend == "reference"
        monkeypatch.delenv("FASTRNN_BACKEND")
        layer_auto(x)
        assert layer_auto.backend != "reference"


@pytest.mark.parametrize("backend", BACKENDS)
def test_stacked_cells_whose_sizes_do_not_chain_are_refused(backend, rng):
    """An unbuilt stack took weights whose upper kernel did not fit the cell
    below (the cpu backend then returned NaN and garbage), and cells built
    apart ran stacked."""
    x = rng.standard_normal((3, 4, 5)).astype(np.float32)
    w = [rng.standard_normal(s).astype(np.float32)
         for s in [(5, 28), (7, 28), (28,), (6, 15), (5, 15), (2, 15)]]
    layer = fastrnn.RNN([fastrnn.LSTMCell(7), fastrnn.GRUCell(5)], backend=backend)
    with pytest.raises(ValueError, match=r"cells\[1\] \(GRUCell\) kernel \(array 3\): expected "
                                         r"7 rows .*got shape \(6, 15\)"):
        layer.set_weights(w)
    assert not layer.built  # nothing was set
    a, b = fastrnn.LSTMCell(7), fastrnn.GRUCell(5)
    a.build((None, 5))
    b.build((None, 9))
    message = r"cells\[1\] \(GRUCell\): its kernel takes 9 inputs, but cells\[0\] gives 7"
    for call in (lambda: fastrnn.RNN([a, b], backend=backend)(x),
                 lambda: fastrnn.Bidirectional(
                     fastrnn.RNN([fastrnn.LSTMCell(7), fastrnn.GRUCell(5)]), backend=backend,
                     backward_layer=fastrnn.RNN([a, b], go_backwards=True))(x),
                 lambda: fastrnn.RNN([a, b], backend=backend).stream()(x[:, 0])):
        with pytest.raises(ValueError, match=message):
            call()


def test_bidirectional_halves_must_agree():
    """A backward layer that is not time-major under a time-major forward one
    read the array the other way round; merge modes that add or multiply
    broadcast a 1-unit half over the other, silently."""
    with pytest.raises(ValueError, match="backward_layer: time_major must equal"):
        fastrnn.Bidirectional(fastrnn.GRU(7, time_major=True),
                              backward_layer=fastrnn.GRU(7, go_backwards=True))
    for mode in ("sum", "mul", "ave"):
        with pytest.raises(ValueError, match=rf"merge_mode='{mode}' .*the forward layer gives "
                                             r"7, the backward layer 1"):
            fastrnn.Bidirectional(fastrnn.GRU(7), merge_mode=mode,
                                  backward_layer=fastrnn.GRU(1, go_backwards=True))


def test_bidirectional_output_shape_with_halves_of_two_sizes(rng):
    x = rng.standard_normal((4, 6, 5)).astype(np.float32)
    bi = fastrnn.Bidirectional(fastrnn.GRU(7, return_sequences=True),
                               backward_layer=fastrnn.SimpleRNN(5, return_sequences=True,
                                                                go_backwards=True))
    assert bi.compute_output_shape((4, 6, 5)) == bi(x).shape == (4, 6, 12)
    bi = fastrnn.Bidirectional(fastrnn.LSTM(7, return_state=True),
                               backward_layer=fastrnn.GRU(5, return_state=True, go_backwards=True))
    want = [(4, 12), (4, 7), (4, 7), (4, 5)]
    assert [tuple(s) for s in bi.compute_output_shape((4, 6, 5))] == want
    assert [y.shape for y in bi(x)] == want


def test_bidirectional_backward_initial_state_error_names_its_entry(rng):
    x = rng.standard_normal((4, 6, 5)).astype(np.float32)
    bi = fastrnn.Bidirectional(fastrnn.LSTM(7))
    init = [np.zeros((4, 7), np.float32)] * 2 + [np.zeros((4, 6), np.float32)] * 2
    with pytest.raises(ValueError, match=r"initial_state\[2\]: expected shape \(4, 7\), got "
                                         r"\(4, 6\)"):
        bi(x, initial_state=init)


def test_seeded_dropout_draws_new_masks_each_call(rng):
    """A seeded layer re-seeded its dropout at every training=True call, so
    Monte-Carlo dropout returned one sample over and over; Keras's seed
    generator draws on. The same seed still gives the same sequence of masks."""
    x = rng.standard_normal((2, 5, 3)).astype(np.float32)
    a = fastrnn.LSTM(7, dropout=0.5, recurrent_dropout=0.5, seed=1)
    a.build(x.shape)
    b = fastrnn.LSTM(7, dropout=0.5, recurrent_dropout=0.5, seed=1)
    b.set_weights(a.get_weights())
    first, second = a(x, training=True), a(x, training=True)
    assert not np.array_equal(first, second)
    np.testing.assert_array_equal(b(x, training=True), first)
    np.testing.assert_array_equal(b(x, training=True), second)
    cell = fastrnn.GRUCell(4, dropout=0.5, seed=2)
    one, two = (cell(x[:, 0], [np.zeros((2, 4), np.float32)], training=True)[0]
                for _ in range(2))
    assert not np.array_equal(one, two)


def test_user_cell_returning_one_value_is_named(rng):
    """A cell whose call returns only its output gave "too many values to
    unpack" from inside the host loop."""
    class OutputOnly(_MinimalCell):
        def __call__(self, x, states, training=False):
            return np.tanh(x @ self.A + states[0])

    layer = fastrnn.RNN(OutputOnly(rng.standard_normal((2, 3))), dtype="float64")
    with pytest.raises(TypeError, match=r"OutputOnly.call returned one ndarray; a cell returns "
                                        r"\(output, new_states\)"):
        layer(rng.standard_normal((2, 4, 2)))


def test_sequential_has_keras_model_helpers(rng, capsys):
    """summary() prints (as Keras's does: it returned a string nobody saw),
    count_params, get_layer by name or index, pop."""
    from fastrnn.models import Dense

    model = fastrnn.Sequential([fastrnn.LSTM(4, return_sequences=True, name="enc"),
                                Dense(2, name="head")])
    model.set_weights([rng.standard_normal(s).astype(np.float32)
                       for s in [(3, 16), (4, 16), (16,), (4, 2), (2,)]])
    assert model.summary() is None
    out = capsys.readouterr().out
    assert "enc" in out and "head" in out and "Total parameters: 138" in out
    assert model.count_params() == 3 * 16 + 4 * 16 + 16 + 4 * 2 + 2
    assert model.get_layer("head") is model.layers[1] and model.get_layer(index=-2).name == "enc"
    for kw, message in [({"name": "nope"}, "no layer named 'nope'"), ({"index": 2}, "index"),
                        ({}, "one of them"), ({"name": "enc", "index": 0}, "one of them")]:
        with pytest.raises(ValueError, match=message):
            model.get_layer(**kw)
    head = model.pop()
    assert head.name == "head" and [layer.name for layer in model.layers] == ["enc"]
    assert model(rng.standard_normal((2, 5, 3)).astype(np.float32)).shape == (2, 5, 4)
