"""fastrnn.nn: shapes, structures, TF1 semantics, and errors."""

import re

import numpy as np
import pytest

from conftest import layer_backends
from fastrnn import dispatch, nn
from fastrnn import _nest
from fastrnn.nn import rnn_cell

# reference, plus cpu (and cuda with FASTRNN_TEST_BACKENDS=cuda) where they run
BACKENDS = layer_backends()


@pytest.fixture(autouse=True)
def _reference_by_default(monkeypatch):
    """Unpinned runs use ``reference``; tests parametrised by backend pin theirs."""
    monkeypatch.setenv("FASTRNN_BACKEND", "reference")
    monkeypatch.setattr(dispatch, "_default", None)


def _x(rng, *shape, dtype=np.float32):
    return rng.uniform(-1.0, 1.0, shape).astype(dtype)


def _randomise(cell, rng):
    """Replace a built cell's weights with non-trivial random ones."""
    cell.set_weights([rng.uniform(-0.6, 0.6, w.shape) for w in cell.get_weights()])
    return cell


def _stack(rng, depth, batch=3):
    cell = rnn_cell.MultiRNNCell([
        rnn_cell.LSTMCell(5, use_peepholes=True, cell_clip=0.7, num_proj=3, proj_clip=0.5),
        rnn_cell.GRUCell(4),
        rnn_cell.BasicRNNCell(6, activation="relu"),
        rnn_cell.BasicLSTMCell(2, forget_bias=0.5),
    ])
    cell.build((batch, depth))
    return _randomise(cell, rng)


def _step_loop(cell, x, lengths, state):
    """A hand-written TF1 loop: one cell call per step, zeros past length."""
    outputs = []
    for t in range(x.shape[1]):
        y, new = cell(x[:, t], state)
        valid = (t < lengths)[:, None]
        outputs.append(np.where(valid, y, 0))
        state = _nest.map_structure(lambda n, o: np.where(valid, n, o), new, state)
    return np.stack(outputs, axis=1), state


def _assert_nested_close(a, b, atol=1e-5):
    assert _nest.same_structure(a, b)
    assert type(a) is type(b)
    for u, v in zip(_nest.flatten(a), _nest.flatten(b)):
        np.testing.assert_allclose(u, v, atol=atol, rtol=0)


# --------------------------------------------------------------------------
# shapes and structures


@pytest.mark.parametrize("backend", BACKENDS)
def test_dynamic_rnn_shapes_batch_and_time_major(rng, backend):
    cell = rnn_cell.GRUCell(7)
    x = _x(rng, 4, 6, 3)
    out, state = nn.dynamic_rnn(cell, x, dtype=np.float32, backend=backend)
    assert out.shape == (4, 6, 7) and out.dtype == np.float32
    assert state.shape == (4, 7)
    out_tm, state_tm = nn.dynamic_rnn(
        cell, x.transpose(1, 0, 2), dtype=np.float32, time_major=True, backend=backend
    )
    assert out_tm.shape == (6, 4, 7)
    np.testing.assert_allclose(out_tm.transpose(1, 0, 2), out, atol=1e-6)
    np.testing.assert_allclose(state_tm, state, atol=1e-6)
    np.testing.assert_allclose(out[:, -1], state, atol=1e-6)


def test_multi_rnn_cell_state_size_and_state(rng):
    cell = _stack(rng, depth=4)
    assert cell.state_size == (rnn_cell.LSTMStateTuple(5, 3), 4, 6, rnn_cell.LSTMStateTuple(2, 2))
    assert isinstance(cell.state_size, tuple)
    assert cell.output_size == 2
    out, state = nn.dynamic_rnn(cell, _x(rng, 3, 5, 4), sequence_length=[5, 2, 0])
    assert out.shape == (3, 5, 2)
    assert isinstance(state, tuple) and len(state) == 4
    assert isinstance(state[0], rnn_cell.LSTMStateTuple)
    assert state[0].c.shape == (3, 5) and state[0].h.shape == (3, 3)
    assert state[1].shape == (3, 4) and state[2].shape == (3, 6)
    zero = cell.zero_state(3, np.float32)
    assert _nest.same_structure(zero, state) and not any(z.any() for z in _nest.flatten(zero))
    # length 0: the final state is the initial state and every output is zero
    for s, z in zip(_nest.flatten(state), _nest.flatten(zero)):
        np.testing.assert_array_equal(s[2], z[2])
    assert not out[2].any() and not out[1, 2:].any()


def test_lstm_state_tuple_field_order(rng):
    assert rnn_cell.LSTMStateTuple._fields == ("c", "h")
    s = rnn_cell.LSTMStateTuple(np.ones((2, 3), np.float32), np.zeros((2, 3), np.float32))
    assert s[0] is s.c and s[1] is s.h and s.dtype == np.float32
    cell = _randomise(_built(rnn_cell.BasicLSTMCell(4), 3), rng)
    out, state = nn.dynamic_rnn(cell, _x(rng, 2, 5, 3))
    np.testing.assert_allclose(state.h, out[:, -1], atol=1e-6)  # h is the output
    assert not np.allclose(state.c, state.h)


def _built(cell, depth, batch=2):
    cell.build((batch, depth))
    return cell


def test_num_proj_changes_output_size(rng):
    cell = rnn_cell.LSTMCell(6, num_proj=4)
    assert cell.output_size == 4
    assert cell.state_size == rnn_cell.LSTMStateTuple(c=6, h=4)
    cell.build((2, 3))
    assert [w.shape for w in cell.get_weights()] == [(7, 24), (24,), (6, 4)]
    assert cell.variable_names == ["lstm_cell/kernel", "lstm_cell/bias", "lstm_cell/projection/kernel"]
    _randomise(cell, rng)
    out, state = nn.dynamic_rnn(cell, _x(rng, 2, 5, 3), sequence_length=[5, 3])
    assert out.shape == (2, 5, 4)
    assert state.c.shape == (2, 6) and state.h.shape == (2, 4)
    np.testing.assert_allclose(state.h[1], out[1, 2], atol=1e-6)
    plain = rnn_cell.LSTMCell(6)
    assert plain.output_size == 6 and plain.state_size == (6, 6)


def test_weights_round_trip_and_names(rng):
    cell = rnn_cell.LSTMCell(5, use_peepholes=True, num_proj=3)
    cell.build((1, 4))
    assert cell.variable_names == [
        "lstm_cell/kernel", "lstm_cell/bias", "lstm_cell/w_f_diag", "lstm_cell/w_i_diag",
        "lstm_cell/w_o_diag", "lstm_cell/projection/kernel",
    ]
    weights = [rng.uniform(-1, 1, w.shape).astype(np.float32) for w in cell.get_weights()]
    cell.set_weights(weights)
    for a, b in zip(cell.get_weights(), weights):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="read-only"):
        cell.weights[0][0, 0] = 1.0  # set_weights is the way: it refreshes the kernels' copy
    # an unbuilt cell reads its input depth from the kernel's rows
    other = rnn_cell.LSTMCell(5, use_peepholes=True, num_proj=3)
    other.set_weights(weights)
    x = _x(rng, 2, 4, 4)
    _assert_nested_close(nn.dynamic_rnn(other, x), nn.dynamic_rnn(cell, x), atol=0)
    gru = rnn_cell.GRUCell(3)
    gru.build((1, 2))
    assert gru.variable_names == [
        "gru_cell/gates/kernel", "gru_cell/gates/bias",
        "gru_cell/candidate/kernel", "gru_cell/candidate/bias",
    ]
    np.testing.assert_array_equal(gru.get_weights()[1], 1.0)  # TF1's gates bias init
    np.testing.assert_array_equal(gru.get_weights()[3], 0.0)
    multi = rnn_cell.MultiRNNCell([rnn_cell.BasicRNNCell(2), rnn_cell.GRUCell(3)])
    multi.build((1, 4))
    assert multi.variable_names[0] == "multi_rnn_cell/cell_0/basic_rnn_cell/kernel"
    assert [w.shape for w in multi.get_weights()] == [(6, 2), (2,), (5, 6), (6,), (5, 3), (3,)]


# --------------------------------------------------------------------------
# semantics


@pytest.mark.parametrize("backend", BACKENDS)
def test_fused_stack_matches_one_step_calls(rng, backend):
    """One kernel call per layer equals TF1's step-by-step stacking."""
    cell = _stack(rng, depth=4)
    x = _x(rng, 3, 6, 4)
    lengths = np.array([6, 3, 0])
    init = _nest.map_structure(lambda n: _x(rng, 3, n), cell.state_size)
    out, state = nn.dynamic_rnn(cell, x, lengths, initial_state=init, backend=backend)
    ref_out, ref_state = _step_loop(cell, x, lengths, init)
    np.testing.assert_allclose(out, ref_out, atol=1e-5)
    _assert_nested_close(state, ref_state)
    for s, i in zip(_nest.flatten(state), _nest.flatten(init)):
        np.testing.assert_array_equal(s[2], i[2])  # length 0 keeps the initial state


class _MinimalRNN(rnn_cell.RNNCell):
    """A user-written cell with two states and weights from add_weight."""

    def __init__(self, units):
        super().__init__()
        self.units = units

    @property
    def state_size(self):
        return (self.units, self.units)

    @property
    def output_size(self):
        return self.units

    def build(self, inputs_shape):
        self.w = self.add_weight("w", (inputs_shape[-1], self.units))
        self.u = self.add_weight("u", (self.units, self.units))
        self.built = True

    def call(self, inputs, state):
        h, acc = state
        h = np.tanh(inputs @ self.w + h @ self.u)
        return 2.0 * h, (h, acc + h)


def _hand_loop(cell, x, lengths):
    B, T, _ = x.shape
    h, acc = np.zeros((B, cell.units)), np.zeros((B, cell.units))
    out = np.zeros((B, T, cell.units))
    for b in range(B):
        for t in range(lengths[b]):
            h[b] = np.tanh(x[b, t] @ cell.w + h[b] @ cell.u)
            acc[b] += h[b]
            out[b, t] = 2.0 * h[b]
    return out, (h, acc)


def test_custom_cell_through_dynamic_rnn_matches_hand_loop(rng):
    cell = _MinimalRNN(4)
    x = _x(rng, 3, 5, 2)
    lengths = np.array([5, 1, 3])
    out, state = nn.dynamic_rnn(cell, x, sequence_length=lengths)
    assert cell.built and cell.variable_names == ["private__minimal_rnn/w", "private__minimal_rnn/u"]
    ref_out, ref_state = _hand_loop(cell, x.astype(np.float64), lengths)
    assert out.shape == (3, 5, 4) and out.dtype == np.float32
    np.testing.assert_allclose(out, ref_out, atol=1e-5)
    assert isinstance(state, tuple) and len(state) == 2
    for s, r in zip(state, ref_state):
        np.testing.assert_allclose(s, r, atol=1e-5)
    # set_weights overwrites the arrays the cell holds
    new = [rng.uniform(-1, 1, w.shape) for w in cell.get_weights()]
    cell.set_weights(new)
    np.testing.assert_allclose(cell.w, new[0].astype(np.float32))


def test_custom_cell_backward_reverses_within_length(rng):
    cell = _MinimalRNN(3)
    x = _x(rng, 2, 5, 2)
    lengths = np.array([5, 3])
    (out_fw, out_bw), (s_fw, s_bw) = nn.bidirectional_dynamic_rnn(
        cell, cell, x, sequence_length=lengths
    )
    for b, n in enumerate(lengths):
        rev = x[b : b + 1, :n][:, ::-1]
        ref_out, ref_state = _hand_loop(cell, rev.astype(np.float64), [n])
        np.testing.assert_allclose(out_bw[b, :n], ref_out[0, ::-1], atol=1e-5)
        assert not out_bw[b, n:].any()
        np.testing.assert_allclose(s_bw[0][b], ref_state[0][0], atol=1e-5)


class _OldStyleCell(rnn_cell.RNNCell):
    """TF1-era style: no super().__init__, __call__ overridden, numbers only."""

    def __init__(self, units, w):
        self._units, self._w = units, w

    @property
    def state_size(self):
        return self._units

    @property
    def output_size(self):
        return self._units

    def __call__(self, inputs, state, scope=None):
        new = 0.5 * state + np.sin(inputs @ self._w)
        return new, new


def test_old_style_custom_cell(rng):
    w = rng.uniform(-1, 1, (3, 2))
    cell = _OldStyleCell(2, w)
    x = _x(rng, 2, 4, 3)
    out, state = nn.dynamic_rnn(cell, x, sequence_length=[4, 2], dtype=np.float64)
    h = np.zeros((2, 2))
    for t in range(4):
        h = np.where([[True], [t < 2]], 0.5 * h + np.sin(x[:, t].astype(np.float64) @ w), h)
        np.testing.assert_allclose(out[:, t], np.where([[True], [t < 2]], h, 0), atol=1e-12)
    np.testing.assert_allclose(state, h, atol=1e-12)
    assert cell.zero_state(2, np.float32).shape == (2, 2)


def test_pickle_round_trip(rng):
    import pickle

    cell = _stack(rng, depth=3)
    x = _x(rng, 3, 4, 3)
    out, state = nn.dynamic_rnn(cell, x)
    clone = pickle.loads(pickle.dumps(cell))
    assert not any(w.flags.writeable for w in clone.cells[0].weights)
    out2, state2 = nn.dynamic_rnn(clone, x)
    np.testing.assert_array_equal(out2, out)
    _assert_nested_close(state2, state, atol=0)


def test_public_classes_are_named_by_rnn_cell():
    # the classes live in private modules; reprs and pickles name the public one
    import pickle

    for name in rnn_cell.__all__:
        assert getattr(rnn_cell, name).__module__ == "fastrnn.nn.rnn_cell", name
    data = pickle.dumps(rnn_cell.DropoutWrapper(rnn_cell.LSTMCell(3)))
    assert b"fastrnn.nn.rnn_cell" in data and b"_builtin" not in data and b"_wrappers" not in data


def test_multi_rnn_cell_counts_the_weights_of_every_kind_of_cell(rng):
    user = _MinimalRNN(4)
    user.build((None, 4))
    cell = rnn_cell.MultiRNNCell([
        rnn_cell.DropoutWrapper(rnn_cell.LSTMCell(4, use_peepholes=True)),  # unbuilt: 5 arrays
        user,  # 2 arrays
        rnn_cell.ResidualWrapper(rnn_cell.GRUCell(4)),  # unbuilt: 4 arrays
    ])
    shapes = [(7, 16), (16,), (4,), (4,), (4,), (4, 4), (4, 4), (8, 8), (8,), (8, 4), (4,)]
    weights = [rng.uniform(-1, 1, s).astype(np.float32) for s in shapes]
    with pytest.raises(ValueError, match=r"expected 11 arrays .* got 10"):
        cell.set_weights(weights[:-1])
    cell.set_weights(weights)
    for got, want in zip(cell.get_weights(), weights):
        np.testing.assert_array_equal(got, want)
    unbuilt = rnn_cell.MultiRNNCell([rnn_cell.GRUCell(4), _MinimalRNN(4)])
    with pytest.raises(ValueError, match="_MinimalRNN .* build the cell before set_weights"):
        unbuilt.set_weights(weights[7:])


@pytest.mark.parametrize("backend", BACKENDS)
def test_bidirectional_backward_is_per_sequence_reverse(rng, backend):
    fw = _randomise(_built(rnn_cell.LSTMCell(4, use_peepholes=True), 3), rng)
    bw = _randomise(_built(rnn_cell.GRUCell(5), 3), rng)
    x = _x(rng, 3, 6, 3)
    lengths = np.array([6, 4, 1])
    (out_fw, out_bw), (s_fw, s_bw) = nn.bidirectional_dynamic_rnn(
        fw, bw, x, sequence_length=lengths, backend=backend
    )
    assert out_fw.shape == (3, 6, 4) and out_bw.shape == (3, 6, 5)
    ref_fw, ref_sfw = nn.dynamic_rnn(fw, x, lengths, backend=backend)
    np.testing.assert_allclose(out_fw, ref_fw, atol=1e-6)
    for b, n in enumerate(lengths):
        o, s = nn.dynamic_rnn(bw, x[b : b + 1, :n][:, ::-1].copy(), backend=backend)
        np.testing.assert_allclose(out_bw[b, :n], o[0, ::-1], atol=1e-5)
        np.testing.assert_allclose(s_bw[b], s[0], atol=1e-5)
        assert not out_bw[b, n:].any()
    outs, st_fw, st_bw = nn.static_bidirectional_rnn(
        fw, bw, [x[:, t] for t in range(6)], sequence_length=lengths, backend=backend
    )
    assert len(outs) == 6 and outs[0].shape == (3, 9)
    np.testing.assert_allclose(np.stack(outs, 1), np.concatenate([out_fw, out_bw], 2), atol=1e-6)


def test_stacks_with_custom_layers_and_backward_stacks(rng):
    """Mixed stacks (built-in and custom layers) and a stacked backward cell."""
    mixed = rnn_cell.MultiRNNCell([rnn_cell.GRUCell(4), _MinimalRNN(3), rnn_cell.BasicRNNCell(2)])
    mixed.build((3, 2))
    _randomise(mixed, rng)
    x = _x(rng, 3, 5, 2)
    lengths = np.array([5, 0, 2])
    init = _nest.map_structure(lambda n: _x(rng, 3, n), mixed.state_size)
    out, state = nn.dynamic_rnn(mixed, x, lengths, initial_state=init)
    ref_out, ref_state = _step_loop(mixed, x, lengths, init)
    np.testing.assert_allclose(out, ref_out, atol=1e-5)
    _assert_nested_close(state, ref_state)
    fw = rnn_cell.BasicRNNCell(2)
    (_, out_bw), (_, s_bw) = nn.bidirectional_dynamic_rnn(fw, mixed, x, lengths)
    for b, n in enumerate(lengths):
        if n == 0:
            assert not out_bw[b].any() and not any(u[b].any() for u in _nest.flatten(s_bw))
            continue
        init_b = _nest.map_structure(lambda a: np.zeros((1, a), np.float32), mixed.state_size)
        o, s = _step_loop(mixed, x[b : b + 1, :n][:, ::-1], np.array([n]), init_b)
        np.testing.assert_allclose(out_bw[b, :n], o[0, ::-1], atol=1e-5)
        assert not out_bw[b, n:].any()
        for u, v in zip(_nest.flatten(s_bw), _nest.flatten(s)):
            np.testing.assert_allclose(u[b], v[0], atol=1e-5)


def test_static_rnn_returns_lists(rng):
    cell = _randomise(_built(rnn_cell.BasicLSTMCell(5), 3), rng)
    x = _x(rng, 2, 4, 3)
    outs, state = nn.static_rnn(cell, [x[:, t] for t in range(4)], sequence_length=[4, 2])
    assert isinstance(outs, list) and len(outs) == 4
    assert all(o.shape == (2, 5) for o in outs)
    assert isinstance(state, rnn_cell.LSTMStateTuple)
    ref, ref_state = nn.dynamic_rnn(cell, x, sequence_length=[4, 2])
    np.testing.assert_allclose(np.stack(outs, 1), ref, atol=0)
    _assert_nested_close(state, ref_state, atol=0)


def test_state_is_tuple_false_concatenates(rng):
    tup = _randomise(_built(rnn_cell.LSTMCell(4, num_proj=3), 2), rng)
    flat = rnn_cell.LSTMCell(4, num_proj=3, state_is_tuple=False)
    flat.set_weights(tup.get_weights())
    assert flat.state_size == 7
    x = _x(rng, 3, 5, 2)
    c0, h0 = _x(rng, 3, 4), _x(rng, 3, 3)
    out_t, s_t = nn.dynamic_rnn(tup, x, [5, 2, 4], rnn_cell.LSTMStateTuple(c0, h0))
    out_f, s_f = nn.dynamic_rnn(flat, x, [5, 2, 4], np.concatenate([c0, h0], 1))
    assert s_f.shape == (3, 7)
    np.testing.assert_allclose(out_f, out_t, atol=0)
    np.testing.assert_allclose(s_f, np.concatenate([s_t.c, s_t.h], 1), atol=0)
    y, s1 = flat(x[:, 0], np.concatenate([c0, h0], 1))
    assert y.shape == (3, 3) and s1.shape == (3, 7)
    # MultiRNNCell(state_is_tuple=False) concatenates the layers' states
    cells = [rnn_cell.BasicLSTMCell(3, state_is_tuple=False), rnn_cell.GRUCell(2)]
    multi = rnn_cell.MultiRNNCell(cells, state_is_tuple=False)
    assert multi.state_size == 8
    out, state = nn.dynamic_rnn(multi, x)
    assert out.shape == (3, 5, 2) and state.shape == (3, 8)
    np.testing.assert_allclose(state[:, 6:], out[:, -1], atol=1e-6)
    with pytest.raises(ValueError, match="state_is_tuple=False"):
        rnn_cell.MultiRNNCell([rnn_cell.BasicLSTMCell(3)], state_is_tuple=False)


def test_wrappers(rng):
    inner = _randomise(_built(rnn_cell.GRUCell(3), 3), rng)
    x = _x(rng, 2, 5, 3)
    lengths = [5, 2]
    ref, ref_state = nn.dynamic_rnn(inner, x, lengths)
    out, state = nn.dynamic_rnn(rnn_cell.DropoutWrapper(inner), x, lengths)
    np.testing.assert_array_equal(out, ref)
    out, state = nn.dynamic_rnn(rnn_cell.ResidualWrapper(inner), x, lengths)
    np.testing.assert_allclose(out[0], ref[0] + x[0], atol=1e-6)
    np.testing.assert_allclose(out[1, :2], ref[1, :2] + x[1, :2], atol=1e-6)
    assert not out[1, 2:].any()
    np.testing.assert_allclose(state, ref_state, atol=0)
    # output dropout leaves the recurrence alone: each value is 0 or y / keep
    drop = rnn_cell.DropoutWrapper(inner, output_keep_prob=0.5, seed=0)
    out, state = nn.dynamic_rnn(drop, x, lengths)
    np.testing.assert_allclose(state, ref_state, atol=1e-6)
    kept = out != 0
    assert kept.any() and (~kept[0]).any()
    np.testing.assert_allclose(out[kept], 2.0 * ref[kept], atol=1e-5)


def test_dropout_wrapper_state_filter(rng):
    inner = _randomise(_built(rnn_cell.BasicLSTMCell(4), 3), rng)
    x, state = _x(rng, 5, 3), inner.zero_state(5, np.float32)
    _, ref = inner(x, state)
    _, new = rnn_cell.DropoutWrapper(inner, state_keep_prob=0.5, seed=1)(x, state)
    np.testing.assert_array_equal(new.c, ref.c)  # TF1's default filter spares c
    dropped = new.h == 0
    assert dropped.any() and (~dropped).any()
    np.testing.assert_allclose(new.h[~dropped], 2 * ref.h[~dropped], atol=1e-6)
    only_c = rnn_cell.DropoutWrapper(
        inner, state_keep_prob=0.5, seed=1,
        dropout_state_filter_visitor=lambda s: rnn_cell.LSTMStateTuple(True, False)
        if isinstance(s, rnn_cell.LSTMStateTuple) else True,
    )
    _, new = only_c(x, state)
    np.testing.assert_array_equal(new.h, ref.h)
    assert (new.c == 0).any()
    with pytest.raises(ValueError, match="input_keep_prob: expected a probability in"):
        rnn_cell.DropoutWrapper(inner, input_keep_prob=0.0)
    for bad in ("0.5", True, None):   # float() would take "0.5" and True
        with pytest.raises(TypeError, match="state_keep_prob: expected a real number"):
            rnn_cell.DropoutWrapper(inner, state_keep_prob=bad)
    with pytest.raises(ValueError, match="output_keep_prob: expected a probability in"):
        rnn_cell.DropoutWrapper(inner, output_keep_prob=float("nan"))


def test_built_in_cells_make_one_kernel_call_per_layer(rng, monkeypatch):
    """No Python loop over time: one kernel call per layer and direction."""
    from fastrnn import kernels
    from fastrnn.nn import _rnn

    calls = []
    real_run = kernels.run

    def counting_run(backend, packed, x, *args):
        calls.append(x.shape)
        return real_run(backend, packed, x, *args)

    def no_loop(*args):
        raise AssertionError("a built-in cell was stepped in Python")

    monkeypatch.setattr(kernels, "run", counting_run)
    monkeypatch.setattr(_rnn, "_loop", no_loop)
    cell = _stack(rng, depth=3)
    x = _x(rng, 3, 50, 3)
    nn.dynamic_rnn(cell, x, sequence_length=[50, 7, 0])
    assert calls == [(3, 50, 3), (3, 50, 3), (3, 50, 4), (3, 50, 6)]
    calls.clear()
    nn.bidirectional_dynamic_rnn(
        rnn_cell.ResidualWrapper(rnn_cell.GRUCell(3)), rnn_cell.DropoutWrapper(cell), x
    )
    assert len(calls) == 1 + 4


def test_float64_and_backend_reporting(rng):
    cell = rnn_cell.BasicRNNCell(3)
    out, state = nn.dynamic_rnn(cell, _x(rng, 2, 4, 3, dtype=np.float64), backend="reference")
    assert out.dtype == np.float64 and state.dtype == np.float64
    assert cell.last_backend.name == "reference" and cell.last_backend.reason
    with pytest.raises(ValueError, match="backend"):
        nn.dynamic_rnn(cell, _x(rng, 2, 4, 3), backend="tpu")


def test_callable_activation_runs_on_reference(rng):
    cell = rnn_cell.BasicRNNCell(3, activation=lambda v: np.tanh(v) * 0.5)
    out, _ = nn.dynamic_rnn(cell, _x(rng, 2, 4, 3))
    assert cell.last_backend.name == "reference"
    assert np.abs(out).max() <= 0.5


# --------------------------------------------------------------------------
# errors


def test_error_negative_lengths(rng):
    with pytest.raises(ValueError, match=r"sequence_length: lengths must be >= 0, got -1 at batch index 1"):
        nn.dynamic_rnn(rnn_cell.GRUCell(2), _x(rng, 2, 4, 3), sequence_length=[3, -1])


def test_error_lengths_over_time(rng):
    with pytest.raises(ValueError, match=r"sequence_length: lengths must be <= max_time 4, got 5"):
        nn.dynamic_rnn(rnn_cell.GRUCell(2), _x(rng, 2, 4, 3), sequence_length=[5, 1])
    with pytest.raises(ValueError, match=r"<= max_time 4"):
        nn.bidirectional_dynamic_rnn(
            rnn_cell.GRUCell(2), rnn_cell.GRUCell(2), _x(rng, 4, 2, 3), sequence_length=[5, 1],
            time_major=True,
        )


def test_error_lengths_shape(rng):
    with pytest.raises(ValueError, match=r"sequence_length: expected shape \(2,\) \(batch,\), got \(2, 1\)"):
        nn.dynamic_rnn(rnn_cell.GRUCell(2), _x(rng, 2, 4, 3), sequence_length=[[3], [1]])
    with pytest.raises(ValueError, match=r"expected shape \(2,\) \(batch,\), got \(3,\)"):
        nn.static_rnn(rnn_cell.GRUCell(2), list(_x(rng, 4, 2, 3)), sequence_length=[1, 2, 3])
    with pytest.raises(ValueError, match="sequence_length: expected integers"):
        nn.dynamic_rnn(rnn_cell.GRUCell(2), _x(rng, 2, 4, 3), sequence_length=[1.5, 2])


def test_error_initial_state_structure(rng):
    cell = rnn_cell.MultiRNNCell([rnn_cell.LSTMCell(3), rnn_cell.GRUCell(2)])
    x = _x(rng, 2, 4, 3)
    with pytest.raises(ValueError, match=r"initial_state: structure does not match MultiRNNCell 'multi_rnn_cell'\.state_size: expected \(LSTMStateTuple\(c=3, h=3\), 2\)"):
        nn.dynamic_rnn(cell, x, initial_state=(_x(rng, 2, 3), _x(rng, 2, 2)))
    with pytest.raises(ValueError, match=r"initial_state: element 2 of the state should have shape \(2, 2\)"):
        nn.dynamic_rnn(cell, x, initial_state=((_x(rng, 2, 3), _x(rng, 2, 3)), _x(rng, 2, 5)))
    with pytest.raises(ValueError, match=r"initial_state_bw: structure does not match"):
        nn.bidirectional_dynamic_rnn(
            rnn_cell.GRUCell(2), rnn_cell.LSTMCell(2), x, initial_state_bw=_x(rng, 2, 2)
        )
    # a plain (c, h) tuple is accepted and comes back as LSTMStateTuple
    _, state = nn.dynamic_rnn(rnn_cell.LSTMCell(3), x, initial_state=(_x(rng, 2, 3), _x(rng, 2, 3)))
    assert isinstance(state, rnn_cell.LSTMStateTuple)


def test_error_depth_mismatch_with_built_weights(rng):
    cell = rnn_cell.LSTMCell(4)
    cell.build((2, 3))
    with pytest.raises(ValueError, match=r"inputs: input depth 5 does not match the depth 3 LSTMCell 'lstm_cell' was built for \(kernel \(7, 16\)"):
        nn.dynamic_rnn(cell, _x(rng, 2, 4, 5))
    with pytest.raises(ValueError, match="input depth 5 does not match the depth 3"):
        cell(_x(rng, 2, 5), cell.zero_state(2, np.float32))
    stack = rnn_cell.MultiRNNCell([rnn_cell.GRUCell(2), rnn_cell.GRUCell(3)])
    stack.build((1, 3))
    with pytest.raises(ValueError, match=r"inputs: input depth 4 does not match the depth 3 GRUCell"):
        nn.dynamic_rnn(stack, _x(rng, 2, 4, 4))


def test_error_set_weights(rng):
    cell = rnn_cell.LSTMCell(4, use_peepholes=True)
    cell.build((1, 3))
    with pytest.raises(ValueError, match=r"expected 5 arrays in TF1 variable order \[kernel \(7, 16\), bias \(16,\), w_f_diag \(4,\), w_i_diag \(4,\), w_o_diag \(4,\)\], got 2"):
        cell.set_weights(cell.get_weights()[:2])
    bad = cell.get_weights()
    bad[2] = np.zeros(5)
    with pytest.raises(ValueError, match=r"variable 'w_f_diag' expects shape \(4,\), got \(5,\)"):
        cell.set_weights(bad)
    multi = rnn_cell.MultiRNNCell([rnn_cell.GRUCell(2), rnn_cell.BasicRNNCell(2)])
    with pytest.raises(ValueError, match=r"expected 6 arrays .*multi_rnn_cell/cell_1/basic_rnn_cell/bias\), got 5"):
        multi.set_weights([np.zeros((2, 2))] * 5)


def test_error_inputs(rng):
    with pytest.raises(ValueError, match=r"inputs: expected shape \(batch, max_time, depth\), got \(4, 3\)"):
        nn.dynamic_rnn(rnn_cell.GRUCell(2), _x(rng, 4, 3))
    with pytest.raises(ValueError, match="inputs: must not be empty"):
        nn.static_rnn(rnn_cell.GRUCell(2), [])
    with pytest.raises(TypeError, match="inputs: expected floating-point values, got dtype int64"):
        nn.dynamic_rnn(rnn_cell.GRUCell(2), np.ones((2, 4, 3), dtype=np.int64))
    class _FakeGPUArray:
        __cuda_array_interface__ = {}

    with pytest.raises(TypeError, match="inputs: fastrnn.nn takes host \\(NumPy\\) arrays"):
        nn.dynamic_rnn(rnn_cell.GRUCell(2), _FakeGPUArray())
    with pytest.raises(TypeError, match="inputs: .*nested inputs are not supported"):
        nn.dynamic_rnn(rnn_cell.GRUCell(2), list(_x(rng, 4, 2, 3)))
    with pytest.raises(TypeError, match="cell: expected a fastrnn.nn.rnn_cell.RNNCell"):
        nn.dynamic_rnn(object(), _x(rng, 2, 4, 3))


# --------------------------------------------------------------------------
# against TF1's equations, written here from TF1's source on TF1's layout


def _sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def _tf1_step(cell, w, x, state):
    """One step of a TF1 cell from ``rnn_cell_impl``'s formulas, float64."""
    if isinstance(cell, rnn_cell.BasicRNNCell):
        h = np.tanh(np.concatenate([x, state], 1) @ w[0] + w[1])
        return h, h
    if isinstance(cell, rnn_cell.GRUCell):
        r, u = np.split(_sigmoid(np.concatenate([x, state], 1) @ w[0] + w[1]), 2, axis=1)
        c = np.tanh(np.concatenate([x, r * state], 1) @ w[2] + w[3])
        h = u * state + (1 - u) * c
        return h, h
    c, m = state
    i, j, f, o = np.split(np.concatenate([x, m], 1) @ w[0] + w[1], 4, axis=1)
    fb = cell._forget_bias
    if isinstance(cell, rnn_cell.LSTMCell) and cell._use_peepholes:
        wf, wi, wo = w[2:5]
        c = _sigmoid(f + fb + wf * c) * c + _sigmoid(i + wi * c) * np.tanh(j)
    else:
        c = _sigmoid(f + fb) * c + _sigmoid(i) * np.tanh(j)
    if cell._cell_clip is not None:
        c = np.clip(c, -cell._cell_clip, cell._cell_clip)
    if isinstance(cell, rnn_cell.LSTMCell) and cell._use_peepholes:
        m = _sigmoid(o + wo * c) * np.tanh(c)
    else:
        m = _sigmoid(o) * np.tanh(c)
    if cell._num_proj is not None:
        m = m @ w[-1]
        if cell._proj_clip is not None:
            m = np.clip(m, -cell._proj_clip, cell._proj_clip)
    return m, rnn_cell.LSTMStateTuple(c, m)


def _tf1_dynamic_rnn(cell, x, lengths, reverse=False):
    """TF1's dynamic_rnn (and its reverse_sequence backward pass), float64."""
    w = [a.astype(np.float64) for a in cell.get_weights()]
    B, T, _ = x.shape
    x = x.astype(np.float64)
    if reverse:
        x = np.stack([np.concatenate([x[b, :n][::-1], x[b, n:]]) for b, n in enumerate(lengths)])
    state = _nest.map_structure(lambda n: np.zeros((B, n)), cell.state_size)
    outs = []
    for t in range(T):
        y, new = _tf1_step(cell, w, x[:, t], state)
        valid = (t < lengths)[:, None]
        outs.append(np.where(valid, y, 0.0))
        state = _nest.map_structure(lambda a, b: np.where(valid, a, b), new, state)
    out = np.stack(outs, 1)
    if reverse:
        out = np.stack([np.concatenate([out[b, :n][::-1], out[b, n:]]) for b, n in enumerate(lengths)])
    return out, state


def _random_cell(data, units, dtype):
    from hypothesis import strategies as st

    kind = data.draw(st.sampled_from(["rnn", "gru", "basic_lstm", "lstm"]))
    if kind == "rnn":
        return rnn_cell.BasicRNNCell(units, dtype=dtype)
    if kind == "gru":
        return rnn_cell.GRUCell(units, dtype=dtype)
    fb = data.draw(st.sampled_from([0.0, 1.0, -0.5]))
    if kind == "basic_lstm":
        return rnn_cell.BasicLSTMCell(units, forget_bias=fb, dtype=dtype)
    return rnn_cell.LSTMCell(
        units, forget_bias=fb, dtype=dtype,
        use_peepholes=data.draw(st.booleans()),
        cell_clip=data.draw(st.sampled_from([None, 0.3, 2.0])),
        num_proj=data.draw(st.sampled_from([None, 1, 3])),
        proj_clip=data.draw(st.sampled_from([None, 0.2])),
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_matches_tf1_equations(backend):
    pytest.importorskip("hypothesis")
    from hypothesis import given, settings, strategies as st

    @settings(max_examples=25, deadline=None, derandomize=True)
    @given(st.data())
    def check(data):
        B = data.draw(st.integers(1, 4), label="batch")
        T = data.draw(st.integers(1, 6), label="time")
        D = data.draw(st.integers(1, 5), label="depth")
        H = data.draw(st.integers(1, 7), label="units")
        dtype = data.draw(st.sampled_from([np.float32, np.float64]))
        lengths = np.array(data.draw(st.lists(st.integers(0, T), min_size=B, max_size=B)))
        rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
        fw, bw = _random_cell(data, H, dtype), _random_cell(data, H, dtype)
        for cell in (fw, bw):
            cell.build((B, D))
            _randomise(cell, rng)
        x = rng.uniform(-2, 2, (B, T, D)).astype(dtype)
        (out_fw, out_bw), (s_fw, s_bw) = nn.bidirectional_dynamic_rnn(
            fw, bw, x, sequence_length=lengths, backend=backend
        )
        atol = 2e-5 if dtype == np.float32 else 1e-10
        for got_out, got_state, cell, rev in ((out_fw, s_fw, fw, False), (out_bw, s_bw, bw, True)):
            ref_out, ref_state = _tf1_dynamic_rnn(cell, x, lengths, rev)
            assert got_out.dtype == dtype
            np.testing.assert_allclose(got_out, ref_out, atol=atol, rtol=0)
            for g, r in zip(_nest.flatten(got_state), _nest.flatten(ref_state)):
                np.testing.assert_allclose(g, r, atol=atol, rtol=0)

    check()


def test_non_float_values_are_type_errors(rng):
    """Complex, integer and string values were cast (or failed inside NumPy)."""
    cell = rnn_cell.GRUCell(4)
    x = rng.standard_normal((2, 5, 3)).astype(np.float32)
    nn.dynamic_rnn(cell, x, dtype=np.float32)
    with pytest.raises(TypeError, match="initial_state: element 0 of the state: expected floating-point values, got dtype complex128"):
        nn.dynamic_rnn(cell, x, initial_state=np.ones((2, 4), complex))
    with pytest.raises(TypeError, match="got dtype int64"):
        nn.dynamic_rnn(cell, x, initial_state=np.ones((2, 4), np.int64))
    with pytest.raises(ValueError, match="sequence_length: expected integers, got dtype complex128"):
        nn.dynamic_rnn(cell, x, sequence_length=np.ones(2, complex), dtype=np.float32)
    with pytest.raises(TypeError, match="expects real numbers, got dtype complex128"):
        cell.set_weights([np.ones(w.shape, complex) for w in cell.get_weights()])
    with pytest.raises(TypeError, match="expects real numbers, got dtype <U1"):
        cell.set_weights([np.full(w.shape, "a") for w in cell.get_weights()])
    with pytest.raises(TypeError, match="inputs: expected floating-point values, got dtype int64"):
        cell(np.ones((2, 3), np.int64), cell.zero_state(2, np.float32))


# --------------------------------------------------------------------------
# arguments: misspelt keywords, numbers given as other types, TF1's no-ops


class _KeywordCell(rnn_cell.RNNCell):
    """A user cell passing its keywords on, as TF1 cells do."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units

    @property
    def state_size(self):
        return self.units

    @property
    def output_size(self):
        return self.units

    def call(self, inputs, state):
        return state, state


@pytest.mark.parametrize("make, cls, key, near", [
    (lambda: rnn_cell.BasicLSTMCell(4, state_is_tupel=False), "BasicLSTMCell",
     "state_is_tupel", "state_is_tuple"),
    (lambda: rnn_cell.LSTMCell(4, use_peephole=True), "LSTMCell", "use_peephole",
     "use_peepholes"),
    (lambda: rnn_cell.LSTMCell(4, numproj=2), "LSTMCell", "numproj", "num_proj"),
    (lambda: rnn_cell.DropoutWrapper(rnn_cell.GRUCell(3), output_keep_probability=0.5),
     "DropoutWrapper", "output_keep_probability", "output_keep_prob"),
    (lambda: rnn_cell.MultiRNNCell([rnn_cell.GRUCell(3)], state_is_tupel=False),
     "MultiRNNCell", "state_is_tupel", "state_is_tuple"),
    (lambda: rnn_cell.ResidualWrapper(rnn_cell.GRUCell(3), residual=None),
     "ResidualWrapper", "residual", "residual_fn"),
    (lambda: rnn_cell.GRUCell(3, kernel_initialiser="zeros"), "GRUCell",
     "kernel_initialiser", "kernel_initializer"),
    (lambda: _KeywordCell(3, nmae="x"), "_KeywordCell", "nmae", "name"),
])
def test_misspelt_keyword_arguments_are_type_errors(make, cls, key, near):
    # TF1's base Layer refuses them too; they were taken and ignored
    with pytest.raises(TypeError, match=f"{cls}: keyword argument not understood: "
                                        f"'{key}'; did you mean '{near}'"):
        make()


def test_tf1_keywords_that_change_nothing_are_taken(rng):
    x = _x(rng, 3, 5, 2)
    plain = _randomise(_built(rnn_cell.LSTMCell(4, num_proj=3), 2), rng)
    ref, ref_state = nn.dynamic_rnn(plain, x, [5, 1, 3])
    tf1 = rnn_cell.LSTMCell(4, num_proj=3, reuse=True, trainable=False, name="lstm_cell",
                            input_shape=None, activity_regularizer=None)
    tf1.set_weights(plain.get_weights())
    assert tf1.trainable is False and tf1.variable_names == plain.variable_names
    wrapped = rnn_cell.DropoutWrapper(tf1, _reuse=False)
    out, state = nn.dynamic_rnn(rnn_cell.MultiRNNCell([wrapped], _reuse=True), x, [5, 1, 3],
                                parallel_iterations=8, swap_memory=True, scope="rnn")
    np.testing.assert_array_equal(out, ref)
    _assert_nested_close(state[0], ref_state, atol=0)
    assert _KeywordCell(2, _reuse=True, name="mine", dtype=np.float64).dtype == np.float64
    # values fastrnn cannot honour are refused, naming the keyword
    with pytest.raises(ValueError, match=r"weights: GRUCell takes only None.*set_weights"):
        rnn_cell.GRUCell(3, weights=plain.get_weights())
    with pytest.raises(ValueError, match="input_shape: BasicRNNCell takes only None"):
        rnn_cell.BasicRNNCell(3, input_shape=(5, 2))
    with pytest.raises(TypeError, match="reuse: expected True or False, got 'yes'"):
        rnn_cell.GRUCell(3, reuse="yes")
    with pytest.raises(TypeError, match="trainable: expected True or False, got 'False'"):
        _KeywordCell(3, trainable="False")


@pytest.mark.parametrize("num_proj", [2.5, True, "2", 0, np.float64(2.0)])
def test_num_proj_must_be_a_positive_integer(num_proj):
    # int() made 2.5 two outputs and True one
    message = f"num_proj: expected a positive integer, got {num_proj!r}"
    with pytest.raises(ValueError, match=re.escape(message)):
        rnn_cell.LSTMCell(3, num_proj=num_proj)


def test_num_proj_shards_must_be_integers(rng):
    with pytest.raises(ValueError, match="num_unit_shards: expected a positive integer, got True"):
        rnn_cell.LSTMCell(3, num_unit_shards=True)
    with pytest.raises(ValueError, match="num_proj_shards: expected a positive integer, got 1.5"):
        rnn_cell.LSTMCell(3, num_proj=2, num_proj_shards=1.5)
    with pytest.raises(ValueError, match="num_proj_shards: sharded variables are not supported"):
        rnn_cell.LSTMCell(3, num_proj=2, num_proj_shards=2)
    cell = rnn_cell.LSTMCell(3, num_proj=np.int64(2), num_unit_shards=1, num_proj_shards=1)
    out, state = nn.dynamic_rnn(cell, _x(rng, 2, 4, 5))
    assert cell.output_size == 2 and out.shape == (2, 4, 2) and state.h.shape == (2, 2)


@pytest.mark.parametrize("value", [None, "1", True])
def test_forget_bias_must_be_a_number(value):
    message = re.escape(f"forget_bias: expected a real number, got {value!r}")
    with pytest.raises(TypeError, match=message):
        rnn_cell.BasicLSTMCell(3, forget_bias=value)
    with pytest.raises(TypeError, match=message):
        rnn_cell.LSTMCell(3, forget_bias=value)


def test_clips_must_be_numbers(rng):
    with pytest.raises(TypeError, match="cell_clip: expected a real number, got '0.5'"):
        rnn_cell.LSTMCell(3, cell_clip="0.5")
    with pytest.raises(TypeError, match="proj_clip: expected a real number, got '0.5'"):
        rnn_cell.LSTMCell(3, num_proj=2, proj_clip="0.5")
    cell = rnn_cell.LSTMCell(3, cell_clip=np.float32(0.25), forget_bias=np.int64(0))
    _, state = nn.dynamic_rnn(cell, 4 * _x(rng, 2, 6, 3))
    assert np.abs(state.c).max() <= 0.25 and cell._forget_bias == 0.0


class _WideCell(rnn_cell.RNNCell):
    """Declares 2 outputs and returns 5."""

    state_size = 2
    output_size = 2

    def call(self, inputs, state):
        return np.tile(inputs[:, :1], (1, 5)), state + inputs[:, :2]


def test_custom_cell_output_wider_than_output_size(rng):
    # the outputs came back 5 wide from a cell declaring 2
    with pytest.raises(ValueError, match=r"_WideCell 'private__wide_cell'\.call returned outputs "
                                         r"5 wide; its output_size is 2"):
        nn.dynamic_rnn(_WideCell(), _x(rng, 2, 3, 4))
    with pytest.raises(ValueError, match=r"returned outputs 5 wide; its output_size is 2"):
        nn.bidirectional_dynamic_rnn(_GoodCell(), _WideCell(), _x(rng, 2, 3, 4),
                                     sequence_length=[3, 1])


class _GoodCell(_WideCell):
    def call(self, inputs, state):
        return state + inputs[:, 1:3], state + inputs[:, :2]


@pytest.mark.parametrize("shape", [(2, 0, 7), (0, 3, 7)])
def test_empty_runs_check_the_input_depth(rng, shape):
    # no step to run skipped the check: a depth-7 input passed a cell built for 4
    cell = _randomise(_built(rnn_cell.GRUCell(3), 4), rng)
    x = _x(rng, *shape)
    with pytest.raises(ValueError, match="inputs: input depth 7 does not match the depth 4 GRU"):
        nn.dynamic_rnn(cell, x)
    with pytest.raises(ValueError, match=r"input depth 7 does not match the depth 4 GRUCell"):
        nn.bidirectional_dynamic_rnn(rnn_cell.GRUCell(2), cell, x)
    stack = rnn_cell.MultiRNNCell([rnn_cell.GRUCell(2), rnn_cell.DropoutWrapper(cell)])
    stack.build((None, 7))
    with pytest.raises(ValueError, match=r"outputs of cells\[0\]: input depth 2 does not match "
                                         r"the depth 4 GRUCell"):
        nn.dynamic_rnn(stack, x)
    out, state = nn.dynamic_rnn(cell, x[..., :4])
    assert out.shape == shape[:2] + (3,) and state.shape == (shape[0], 3)


def test_unsigned_lengths_beyond_int64_are_reported_as_given(rng):
    cell = _randomise(_built(rnn_cell.GRUCell(3), 4), rng)
    x = _x(rng, 2, 3, 4)
    # int64 first wrapped 2**63 round to -9223372036854775808
    with pytest.raises(ValueError, match=r"sequence_length: lengths must be <= max_time 3, got "
                                         r"9223372036854775808 at batch index 0"):
        nn.dynamic_rnn(cell, x, sequence_length=np.array([2**63, 1], np.uint64))
    out, state = nn.dynamic_rnn(cell, x, sequence_length=np.array([3, 1], np.uint64))
    ref, ref_state = nn.dynamic_rnn(cell, x, sequence_length=[3, 1])
    np.testing.assert_array_equal(out, ref)
    np.testing.assert_array_equal(state, ref_state)


@pytest.mark.parametrize("batch_size", [2.7, 2.0, -1, True, "2"])
def test_zero_state_refuses_a_non_integer_batch_size(batch_size):
    cell = rnn_cell.MultiRNNCell([rnn_cell.LSTMCell(3), rnn_cell.GRUCell(2)])
    message = f"batch_size: expected an integer >= 0, got {batch_size!r}"
    with pytest.raises(ValueError, match=re.escape(message)):
        cell.zero_state(batch_size, np.float32)


def test_zero_state_refuses_a_non_float_dtype(rng):
    cell = _randomise(_built(rnn_cell.BasicLSTMCell(3), 2), rng)
    for dtype in (np.int32, bool, np.complex64):
        with pytest.raises(TypeError, match=f"dtype: expected a floating-point dtype .*, got "
                                            f"{np.dtype(dtype)}"):
            cell.zero_state(2, dtype)
    with pytest.raises(TypeError, match="dtype: expected a floating-point dtype"):
        rnn_cell.DropoutWrapper(cell).zero_state(2, np.int64)
    state = cell.zero_state(np.int64(2), np.float64)
    assert state.c.dtype == np.float64 and state.c.shape == (2, 3) and not state.h.any()
    out, _ = nn.dynamic_rnn(cell, _x(rng, 2, 3, 2), initial_state=state)
    assert out.dtype == np.float64 and out.any()


@pytest.mark.parametrize("kwargs, argument, error", [
    ({"parallel_iterations": True}, "parallel_iterations", ValueError),
    ({"parallel_iterations": 0}, "parallel_iterations", ValueError),
    ({"parallel_iterations": 2.5}, "parallel_iterations", ValueError),
    ({"parallel_iterations": "32"}, "parallel_iterations", ValueError),
    ({"swap_memory": "False"}, "swap_memory", TypeError),
    ({"scope": 3}, "scope", TypeError),
])
def test_tf1_arguments_without_effect_are_checked(rng, kwargs, argument, error):
    # an argument given one place off landed in them and was ignored
    cell, x = rnn_cell.GRUCell(3), _x(rng, 2, 3, 4)
    with pytest.raises(error, match=f"{argument}: expected"):
        nn.dynamic_rnn(cell, x, **kwargs)
    with pytest.raises(error, match=f"{argument}: expected"):
        nn.bidirectional_dynamic_rnn(cell, cell, x, **kwargs)
    if argument == "scope":
        with pytest.raises(error, match="scope: expected"):
            nn.static_rnn(cell, list(x.transpose(1, 0, 2)), **kwargs)


def test_positional_time_major_landing_in_parallel_iterations(rng):
    cell, x = rnn_cell.GRUCell(3), _x(rng, 3, 2, 4)
    with pytest.raises(ValueError, match="parallel_iterations: expected a positive integer or "
                                         "None, got True"):
        nn.dynamic_rnn(cell, x, None, None, np.float32, True)
    out, _ = nn.dynamic_rnn(cell, x, None, None, np.float32, 16, False, True)
    ref, _ = nn.dynamic_rnn(cell, x, time_major=True)
    np.testing.assert_array_equal(out, ref)


def test_docs_show_the_true_signatures():
    import inspect
    import os

    with open(os.path.join(os.path.dirname(__file__), "..", "docs", "tf1.md")) as f:
        text = f.read()
    for fn in (nn.dynamic_rnn, nn.bidirectional_dynamic_rnn, nn.static_rnn,
               nn.static_bidirectional_rnn):
        assert f"`{fn.__name__}{inspect.signature(fn)}`" in text, fn.__name__
