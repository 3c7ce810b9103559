"""fastrnn.nn: the backend request reaches every cell a run calls, a run reads
its weights once, and the errors of cells, wrappers and stacks."""

import threading

import numpy as np
import pytest

from fastrnn import GRUCell as fastrnn_GRUCell
from fastrnn import RNN as fastrnn_RNN
from fastrnn import serialize as fastrnn_serialize
from fastrnn import _engine, _nest, dispatch, nn
from fastrnn.nn import rnn_cell


@pytest.fixture(autouse=True)
def _auto_default(monkeypatch):
    """No process default: ``auto`` picks ``cpu`` where it runs, so a run that
    ignored ``backend="reference"`` would show it."""
    monkeypatch.delenv("FASTRNN_BACKEND", raising=False)
    monkeypatch.setattr(dispatch, "_default", None)


needs_cpu = pytest.mark.skipif(not dispatch.available("cpu")[0],
                               reason="auto must pick another backend than reference")


def _x(rng, *shape, dtype=np.float32):
    return rng.uniform(-1.0, 1.0, shape).astype(dtype)


def _random_weights(cell, rng, scale=0.6):
    return [rng.uniform(-scale, scale, w.shape) for w in cell.get_weights()]


def _sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def _gru_step(w, x, h):
    """TF1's GRUCell, in NumPy: weights [gates/kernel, gates/bias,
    candidate/kernel, candidate/bias]; gates r, u."""
    gk, gb, ck, cb = (np.asarray(a, np.float64) for a in w)
    H = h.shape[1]
    g = _sigmoid(np.concatenate([x, h], 1) @ gk + gb)
    r, u = g[:, :H], g[:, H:]
    c = np.tanh(np.concatenate([x, r * h], 1) @ ck + cb)
    return u * h + (1 - u) * c


def _lstm_step(w, x, c, h, forget_bias=1.0):
    """TF1's BasicLSTMCell, in NumPy: gates i, j, f, o."""
    k, b = (np.asarray(a, np.float64) for a in w)
    i, j, f, o = np.split(np.concatenate([x, h], 1) @ k + b, 4, axis=1)
    c = _sigmoid(f + forget_bias) * c + _sigmoid(i) * np.tanh(j)
    return c, _sigmoid(o) * np.tanh(c)


class _Holder(rnn_cell.RNNCell):
    """A user's cell that calls a built-in cell and halves its output."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    @property
    def state_size(self):
        return self.inner.state_size

    @property
    def output_size(self):
        return self.inner.output_size

    def call(self, inputs, state):
        out, new = self.inner(inputs, state)
        return 0.5 * out, new


# --------------------------------------------------------------------------
# backend= on runs stepped in Python, and on runs with nothing to run


def _stepped_cases():
    """(label, make) where make() -> (cell run in Python, the built-in cells it calls)."""
    def dropout():
        inner = rnn_cell.LSTMCell(5)
        return rnn_cell.DropoutWrapper(inner, output_keep_prob=0.6, seed=3), [inner]

    def residual_fn():
        inner = rnn_cell.GRUCell(3)
        return rnn_cell.ResidualWrapper(inner, residual_fn=lambda i, o: o - i[:, :3]), [inner]

    def user_cell():
        inner = rnn_cell.BasicRNNCell(4)
        return _Holder(inner), [inner]

    def stack_with_dropout():
        a, b = rnn_cell.GRUCell(4), rnn_cell.BasicLSTMCell(3)
        return rnn_cell.MultiRNNCell(
            [rnn_cell.DropoutWrapper(a, input_keep_prob=0.7, seed=1), b]), [a, b]

    return [("dropout", dropout), ("residual_fn", residual_fn), ("user_cell", user_cell),
            ("stack_with_dropout", stack_with_dropout)]


@needs_cpu
@pytest.mark.parametrize("label,make", _stepped_cases())
def test_backend_reaches_built_in_cells_stepped_in_python(rng, label, make):
    x = _x(rng, 3, 4, 3)
    cell, inner = make()
    # a first run builds the cells, then weights of this test's own draw
    # (the initializers' draws depend on the tests before)
    nn.dynamic_rnn(cell, x, sequence_length=[4, 1, 3], backend="reference")
    weights = [_random_weights(c, rng) for c in inner]
    for c, w in zip(inner, weights):
        c.set_weights(w)
    out, _ = nn.dynamic_rnn(cell, x, sequence_length=[4, 1, 3], backend="reference")
    assert [c.last_backend.name for c in inner] == ["reference"] * len(inner)
    # the same runs on the cpu kernels (the same weights and dropout seeds) agree
    again, inner_again = make()
    nn.dynamic_rnn(again, x, sequence_length=[4, 1, 3], backend="cpu")
    for c, w in zip(inner_again, weights):
        c.set_weights(w)
    out_cpu, _ = nn.dynamic_rnn(again, x, sequence_length=[4, 1, 3], backend="cpu")
    assert [c.last_backend.name for c in inner_again] == ["cpu"] * len(inner)
    assert np.abs(out).max() > 0.05
    np.testing.assert_allclose(out_cpu, out, rtol=0, atol=1e-5)


def _plain():
    return rnn_cell.LSTMCell(5)


def _cases_with_no_kernel_run():
    """(label, cell factory, batch, time): runs stepped in Python, and runs with
    no step to run (no row or no step)."""
    return [
        ("dropout", lambda: rnn_cell.DropoutWrapper(_plain(), output_keep_prob=0.5, seed=0), 2, 3),
        ("residual_fn", lambda: rnn_cell.ResidualWrapper(_plain(), residual_fn=lambda i, o: o),
         2, 3),
        ("user_cell", lambda: _Holder(rnn_cell.GRUCell(3)), 2, 3),
        ("no_step", lambda: rnn_cell.GRUCell(5), 2, 0),
        ("no_row", lambda: rnn_cell.GRUCell(5), 0, 3),
        ("plain", _plain, 2, 3),
    ]


def _runs(make, x):
    """Every public function on ``x (batch, time, depth)``, as callables of backend."""
    steps = [x[:, t] for t in range(x.shape[1])]
    runs = [lambda b: nn.dynamic_rnn(make(), x, backend=b),
            lambda b: nn.bidirectional_dynamic_rnn(make(), make(), x, backend=b)]
    if steps:  # (the static functions take a non-empty list of steps)
        runs += [lambda b: nn.static_rnn(make(), steps, backend=b),
                 lambda b: nn.static_bidirectional_rnn(make(), make(), steps, backend=b)]
    return runs


@pytest.mark.parametrize("label,make,batch,time", _cases_with_no_kernel_run())
def test_backend_is_checked_whatever_the_run(rng, label, make, batch, time):
    x = _x(rng, batch, time, 5)
    for run in _runs(make, x):
        with pytest.raises(ValueError, match=r"^backend: expected one of .*got 'bogus'$"):
            run("bogus")
        with pytest.raises(TypeError, match=r"^backend: expected a str or None, got int 1$"):
            run(1)
        ok, why = dispatch.available("cuda")
        if not ok:
            with pytest.raises(RuntimeError) as info:
                run("cuda")
            assert str(info.value) == (
                f"backend 'cuda' was requested by the backend argument but {why}")
        run("reference")  # (and a backend that runs is taken)


# --------------------------------------------------------------------------
# a run reads the weights of all its cells once, before the first kernel call


def _pause_after_first_kernel_call(monkeypatch, during_pause):
    """Make the first kernel call of a run (a whole sequence or one step) wait,
    once it has returned, while ``during_pause()`` runs in another thread."""
    paused, resumed = threading.Event(), threading.Event()
    errors = []

    def other():
        try:
            assert paused.wait(20)
            during_pause()
        except BaseException as exc:  # (reported by the test's thread)
            errors.append(exc)
        finally:
            resumed.set()

    def wrap(real):
        def kernel_call(*args, **kwargs):
            got = real(*args, **kwargs)
            if not paused.is_set():
                paused.set()
                assert resumed.wait(20)
            return got
        return kernel_call

    monkeypatch.setattr(_engine, "run_cells", wrap(_engine.run_cells))
    monkeypatch.setattr(_engine, "step", wrap(_engine.step))
    thread = threading.Thread(target=other)
    thread.start()

    def finish():
        thread.join(20)
        assert paused.is_set() and not errors, errors
    return finish


def _stack(rng, depth):
    m = rnn_cell.MultiRNNCell([rnn_cell.GRUCell(5), rnn_cell.BasicLSTMCell(3),
                               rnn_cell.BasicRNNCell(4)])
    m.build((None, depth))
    return m


def test_stack_run_uses_the_weights_of_its_start(rng, monkeypatch):
    m = _stack(rng, 3)
    old, new = _random_weights(m, rng), _random_weights(m, rng)
    x = _x(rng, 2, 7, 3)
    m.set_weights(old)
    expected, expected_state = nn.dynamic_rnn(m, x, sequence_length=[7, 4])
    m.set_weights(new)
    changed, _ = nn.dynamic_rnn(m, x, sequence_length=[7, 4])
    assert np.abs(changed - expected).max() > 1e-2  # (the new weights show)

    m.set_weights(old)
    finish = _pause_after_first_kernel_call(monkeypatch, lambda: m.set_weights(new))
    out, state = nn.dynamic_rnn(m, x, sequence_length=[7, 4])
    finish()
    np.testing.assert_array_equal(out, expected)
    for s, e in zip(state, expected_state):
        np.testing.assert_array_equal(np.asarray(s), np.asarray(e))


def test_bidirectional_run_uses_the_weights_of_its_start(rng, monkeypatch):
    fw, bw = rnn_cell.GRUCell(4), rnn_cell.GRUCell(4)
    x = _x(rng, 3, 5, 2)
    nn.bidirectional_dynamic_rnn(fw, bw, x)  # builds both
    old, new = _random_weights(bw, rng), _random_weights(bw, rng)
    bw.set_weights(old)
    (_, expected), _ = nn.bidirectional_dynamic_rnn(fw, bw, x, sequence_length=[5, 2, 4])
    finish = _pause_after_first_kernel_call(monkeypatch, lambda: bw.set_weights(new))
    (_, out), _ = nn.bidirectional_dynamic_rnn(fw, bw, x, sequence_length=[5, 2, 4])
    finish()
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("wrap", [
    lambda inner: rnn_cell.DropoutWrapper(inner, state_keep_prob=0.8, seed=7),
    _Holder,  # (its cell is read at its first step, then kept)
], ids=["dropout", "user_cell"])
def test_step_loop_uses_the_weights_of_its_start(rng, monkeypatch, wrap):
    inner = rnn_cell.GRUCell(5)
    inner.build((None, 3))
    old, new = _random_weights(inner, rng), _random_weights(inner, rng)
    x = _x(rng, 2, 6, 3)

    def run():
        return nn.dynamic_rnn(wrap(inner), x)

    inner.set_weights(old)
    expected, _ = run()
    finish = _pause_after_first_kernel_call(monkeypatch, lambda: inner.set_weights(new))
    out, _ = run()
    finish()
    np.testing.assert_array_equal(out, expected)


def test_stack_one_step_uses_the_weights_of_its_start(rng, monkeypatch):
    m = _stack(rng, 3)
    old, new = _random_weights(m, rng), _random_weights(m, rng)
    x = _x(rng, 3, 3)
    state = tuple(_x(rng, *a.shape) if not isinstance(a, tuple)
                  else type(a)(*(_x(rng, *b.shape) for b in a)) for a in m.zero_state(3))
    m.set_weights(old)
    expected, _ = m(x, state)
    finish = _pause_after_first_kernel_call(monkeypatch, lambda: m.set_weights(new))
    out, _ = m(x, state)
    finish()
    np.testing.assert_array_equal(out, expected)
    # and the numbers are TF1's
    w = old
    h0 = _gru_step(w[:4], x.astype(np.float64), state[0])
    c1, h1 = _lstm_step(w[4:6], h0, *state[1])
    h2 = np.tanh(np.concatenate([h1, state[2]], 1) @ w[6] + w[7])
    np.testing.assert_allclose(out, h2, atol=1e-5)


# --------------------------------------------------------------------------
# MultiRNNCell: its backend on one-step calls, its zero state's dtype


@needs_cpu
def test_stack_one_step_runs_on_the_stack_backend(rng):
    gru, lstm = rnn_cell.GRUCell(5), rnn_cell.BasicLSTMCell(3)
    m = rnn_cell.MultiRNNCell([gru, rnn_cell.DropoutWrapper(lstm)], backend="reference")
    m.build((None, 4))
    w = _random_weights(m, rng)
    m.set_weights(w)
    x = _x(rng, 3, 4)
    out, (h, (c2, h2)) = m(x, m.zero_state(3))
    assert gru.last_backend.name == "reference" and lstm.last_backend.name == "reference"
    h_ref = _gru_step(w[:4], x.astype(np.float64), np.zeros((3, 5)))
    c_ref, h2_ref = _lstm_step(w[4:], h_ref, np.zeros((3, 3)), np.zeros((3, 3)))
    np.testing.assert_allclose(h, h_ref, atol=1e-5)
    np.testing.assert_allclose(c2, c_ref, atol=1e-5)
    np.testing.assert_allclose(out, h2_ref, atol=1e-5)
    # backend= of a run still comes first
    nn.dynamic_rnn(m, x[:, None], backend="cpu")
    assert gru.last_backend.name == "cpu" and lstm.last_backend.name == "cpu"


@pytest.mark.parametrize("state_is_tuple", [True, False])
def test_stack_zero_state_takes_the_cells_dtype(rng, state_is_tuple):
    cells = [rnn_cell.GRUCell(5, dtype="float64"),
             rnn_cell.DropoutWrapper(rnn_cell.BasicLSTMCell(3, dtype="float64",
                                                            state_is_tuple=state_is_tuple))]
    m = rnn_cell.MultiRNNCell(cells, state_is_tuple=state_is_tuple)
    zero = m.zero_state(2)
    leaves = _nest.flatten(zero)
    assert len(leaves) == (3 if state_is_tuple else 1) and all(a.dtype == np.float64 and not a.any() for a in leaves)
    x = _x(rng, 2, 9, 3, dtype=np.float64)
    m.build((None, 3))
    m.set_weights(_random_weights(m, rng))
    out, state = nn.dynamic_rnn(m, x, initial_state=zero)
    assert out.dtype == np.float64
    # the numbers, from a float64 NumPy loop
    w = m.get_weights()
    h, c2, h2 = np.zeros((2, 5)), np.zeros((2, 3)), np.zeros((2, 3))
    for t in range(9):
        h = _gru_step(w[:4], x[:, t], h)
        c2, h2 = _lstm_step(w[4:], h, c2, h2)
    np.testing.assert_allclose(out[:, -1], h2, rtol=0, atol=1e-12)
    # a float32 stack, and the dtype given, as before
    assert rnn_cell.MultiRNNCell([rnn_cell.GRUCell(2)]).zero_state(1)[0].dtype == np.float32
    assert m.zero_state(1, np.float32)[0].dtype == np.float32


# --------------------------------------------------------------------------
# set_weights refused on an unbuilt cell leaves it unbuilt


@pytest.mark.parametrize("make", [
    lambda: rnn_cell.LSTMCell(4, use_peepholes=True, num_proj=3),
    lambda: rnn_cell.GRUCell(3),
    lambda: rnn_cell.BasicRNNCell(5),
    lambda: rnn_cell.BasicLSTMCell(3),
])
def test_refused_set_weights_leaves_the_cell_unbuilt(rng, make):
    model = make()
    model.build((None, 7))
    good = _random_weights(model, rng)
    wrong_shape = good[:-1] + [rng.uniform(-1, 1, good[-1].shape[0] + 1)]
    wrong_type = good[:-1] + [np.full(good[-1].shape, "a")]
    for bad, error in ((wrong_shape, ValueError), (wrong_type, TypeError)):
        cell = make()
        with pytest.raises(error, match="set_weights: variable"):
            cell.set_weights(bad)
        assert not cell.built and cell.get_weights() == []
    cell.set_weights(good)
    assert cell.built
    for a, b in zip(cell.get_weights(), good):
        np.testing.assert_array_equal(a, b.astype(np.float64))


# --------------------------------------------------------------------------
# clear errors


@pytest.mark.parametrize("wrapper", [rnn_cell.ResidualWrapper, rnn_cell.DropoutWrapper])
def test_wrappers_refuse_backend_naming_it(wrapper):
    with pytest.raises(TypeError, match=rf"^{wrapper.__name__}: keyword argument not "
                                        r"understood: 'backend' \(a wrapper runs on its "
                                        r"cell's backend"):
        wrapper(rnn_cell.GRUCell(3), backend="reference")


class Bare(rnn_cell.RNNCell):
    """Returns ``self.got(inputs, state)``: not the pair (output, new_state)."""

    state_size = 5
    output_size = 5

    def call(self, inputs, state):
        return self.got(inputs, state)


@pytest.mark.parametrize("got,what", [
    (lambda i, s: s + i[:, :1], "one ndarray"),
    (lambda i, s: (s, s, s), "a tuple of 3 items"),
    (lambda i, s: [s], "a list of 1 items"),
])
def test_user_cell_returning_no_pair(rng, got, what):
    message = rf"^Bare 'bare'\.call returned {what}; a cell returns \(output, new_state\)$"
    for batch in (2, 3, 5):  # (two rows once unpacked as a pair)
        cell = Bare()
        cell.got = got
        with pytest.raises(TypeError, match=message):
            nn.dynamic_rnn(cell, _x(rng, batch, 3, 4))
        with pytest.raises(TypeError, match=message):
            cell(_x(rng, batch, 4), _x(rng, batch, 5))
        stack = rnn_cell.MultiRNNCell([rnn_cell.GRUCell(4), cell])
        with pytest.raises(TypeError, match=message):
            stack(_x(rng, batch, 4), stack.zero_state(batch))


@pytest.mark.parametrize("depth", [2.7, 3.0, "3", True])
def test_build_refuses_a_depth_that_is_not_a_positive_integer(depth):
    for cell in (rnn_cell.GRUCell(3), rnn_cell.LSTMCell(2),
                 rnn_cell.MultiRNNCell([rnn_cell.BasicRNNCell(3)])):
        with pytest.raises(ValueError, match=r"build: expected inputs_shape \(batch, depth\) "
                                             r"with an integer depth >= 1, got \(None, "):
            cell.build((None, depth))
        assert not cell.built
    cell = rnn_cell.GRUCell(3)
    cell.build((None, np.int64(4)))
    assert [w.shape for w in cell.get_weights()] == [(7, 6), (6,), (7, 3), (3,)]


@pytest.mark.parametrize("make", [lambda: rnn_cell.GRUCell(3), lambda: rnn_cell.LSTMCell(3),
                                  lambda: rnn_cell.MultiRNNCell([rnn_cell.BasicRNNCell(3)])])
@pytest.mark.parametrize("stacked", [False, True])
def test_keras_rnn_refuses_a_tf1_cell_naming_it(make, stacked):
    cell = make()
    with pytest.raises(TypeError, match=r"cell: expected a Keras-style cell, got \w+ of "
                                        r"fastrnn\.nn.*dynamic_rnn"):
        fastrnn_RNN([fastrnn_GRUCell(2), cell] if stacked else cell)


@pytest.mark.parametrize("obj", [rnn_cell.GRUCell(3), object(), 3])
def test_serialize_refuses_what_has_no_config_naming_it(obj):
    with pytest.raises(TypeError, match=rf"serialize: expected a fastrnn layer .* got "
                                        rf"{type(obj).__name__}"):
        fastrnn_serialize(obj)


def test_a_float64_model_runs_in_float64_whatever_its_inputs(rng):
    """docs/tf1.md: a cell made float64 (or given float64 weights, as by a
    float64 checkpoint) runs in float64; float32 inputs and no initial
    state used to run it in float32."""
    x = _x(rng, 3, 4, 5)
    for make in (lambda: rnn_cell.LSTMCell(3, dtype="float64"),
                 lambda: rnn_cell.MultiRNNCell([rnn_cell.GRUCell(3), rnn_cell.LSTMCell(2)])):
        cell = make()
        cell.build((None, 5))
        cell.set_weights([w.astype(np.float64) for w in _random_weights(cell, rng)])
        want, _ = nn.dynamic_rnn(cell, x.astype(np.float64))
        for run in (lambda: nn.dynamic_rnn(cell, x)[0],
                    lambda: nn.static_rnn(cell, [x[:, t] for t in range(4)])[0][-1],
                    lambda: nn.bidirectional_dynamic_rnn(cell, make(), x)[0][0]):
            got = run()
            assert got.dtype == np.float64
        np.testing.assert_array_equal(nn.dynamic_rnn(cell, x)[0], want)


@pytest.mark.parametrize("argument", ["cell_clip", "proj_clip"])
@pytest.mark.parametrize("value", [-0.5, float("nan")])
def test_a_clip_below_zero_is_refused(argument, value):
    """TF1 takes a negative clip and clamps every value to one constant."""
    with pytest.raises(ValueError, match=rf"^{argument}: expected a number >= 0 \(None: no "
                                         rf"clipping\), got {value!r}"):
        rnn_cell.LSTMCell(3, num_proj=2, **{argument: value})
