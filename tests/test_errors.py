"""Bad input gets a clear error naming the argument, what was expected and what came."""

import numpy as np
import pytest

import fastrnn


@pytest.fixture
def lstm(rng):
    layer = fastrnn.LSTM(4, return_sequences=True, backend="reference")
    layer.build((2, 5, 3))
    return layer


def x_(rng, *shape, dtype=np.float32):
    return rng.standard_normal(shape).astype(dtype)


def test_wrong_rank(lstm, rng):
    with pytest.raises(ValueError, match=r"inputs: expected a 3D array \(batch, time, features\), got shape \(2, 3\)"):
        lstm(x_(rng, 2, 3))


def test_wrong_feature_count(lstm, rng):
    with pytest.raises(ValueError, match=r"inputs: expected 3 features .* got shape \(2, 5, 4\)"):
        lstm(x_(rng, 2, 5, 4))


def test_integer_input_is_a_type_error(lstm):
    with pytest.raises(TypeError, match="inputs: expected a floating-point array, got dtype int64"):
        lstm(np.ones((2, 5, 3), dtype=np.int64))


def test_empty_batch_of_a_stateful_layer(lstm):
    """(An empty batch gives empty outputs, as in Keras: test_keras_live.)"""
    with pytest.raises(ValueError, match="inputs: the batch is empty .* stateful"):
        fastrnn.LSTM(4, stateful=True)(np.ones((0, 5, 3), np.float32))


@pytest.mark.parametrize("mask_shape", [(2, 4), (5, 2), (2,), (2, 5, 1)])
def test_mask_shape(lstm, rng, mask_shape):
    with pytest.raises(ValueError, match=r"mask: expected shape \(batch, time\) = \(2, 5\)"):
        lstm(x_(rng, 2, 5, 3), mask=np.ones(mask_shape, bool))


@pytest.mark.parametrize("mask_shape", [(3, 5), (1, 5), (2, 7)])
def test_predict_checks_the_whole_mask(lstm, rng, mask_shape):
    """predict sliced the mask per batch: extra rows ran silently, and too few
    or too many steps were named by a batch's slice of them."""
    model = fastrnn.Sequential([lstm])
    with pytest.raises(ValueError, match=r"mask: expected shape \(batch, time\) = \(2, 5\), "
                                         rf"got \({mask_shape[0]}, {mask_shape[1]}\)"):
        model.predict(x_(rng, 2, 5, 3), mask=np.ones(mask_shape, bool), batch_size=1)


def test_mask_values(lstm, rng):
    with pytest.raises(ValueError, match=r"mask: expected booleans or 0/1 values, got the value 2 \(dtype int64\)"):
        lstm(x_(rng, 2, 5, 3), mask=np.full((2, 5), 2, np.int64))
    with pytest.raises(ValueError, match="mask: expected booleans or 0/1 values, got the value 0.5"):
        lstm(x_(rng, 2, 5, 3), mask=np.full((2, 5), 0.5))
    with pytest.raises(ValueError, match="mask: expected booleans or 0/1 values, got dtype <U1"):
        lstm(x_(rng, 2, 5, 3), mask=np.full((2, 5), "a"))
    # 0/1 integers are fine
    lstm(x_(rng, 2, 5, 3), mask=np.ones((2, 5), np.int8))


def test_initial_state_count_and_shape(lstm, rng):
    with pytest.raises(ValueError, match=r"initial_state: expected 2 arrays of shapes \[\(2, 4\), \(2, 4\)\], got 1"):
        lstm(x_(rng, 2, 5, 3), initial_state=[x_(rng, 2, 4)])
    with pytest.raises(ValueError, match=r"initial_state\[1\]: expected shape \(2, 4\), got \(2, 5\)"):
        lstm(x_(rng, 2, 5, 3), initial_state=[x_(rng, 2, 4), x_(rng, 2, 5)])


def test_set_weights_count_and_shape(rng):
    layer = fastrnn.GRU(4)
    layer.build((1, 2, 3))
    with pytest.raises(ValueError, match=r"expected 3 arrays \[kernel \(3, 12\), recurrent_kernel \(4, 12\), bias \(2, 12\)\], got 2"):
        layer.set_weights([np.ones((3, 12)), np.ones((4, 12))])
    with pytest.raises(ValueError, match=r"recurrent_kernel expected shape \(4, 12\), got \(4, 8\)"):
        layer.set_weights([np.ones((3, 12)), np.ones((4, 8)), np.ones((2, 12))])


def test_set_weights_bad_values(rng):
    with pytest.raises(TypeError, match="LSTMCell.set_weights: expected a list of arrays, got NoneType"):
        fastrnn.LSTM(4).set_weights(None)
    with pytest.raises(TypeError, match="kernel must be real numbers, got dtype complex128"):
        fastrnn.LSTM(4).set_weights([np.ones((3, 16), complex), np.ones((4, 16)), np.ones(16)])
    with pytest.raises(ValueError, match=r"kernel expected shape \(D, 16\), got \(16, 3\) \(transposed\?\)"):
        fastrnn.LSTM(4).set_weights([np.ones((16, 3)), np.ones((4, 16)), np.ones(16)])


def _stack_weights_fail_atomically(obj, bad_index, bad_value):
    before = obj.get_weights()
    bad = [w + 1 for w in before]
    bad[bad_index] = bad_value
    with pytest.raises(ValueError, match="expected shape|expects shape"):
        obj.set_weights(bad)
    for a, b in zip(before, obj.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_set_weights_on_stacks_changes_nothing_when_a_later_part_is_bad(rng):
    """A bad last array used to leave the first cells with the new weights."""
    stack = fastrnn.RNN([fastrnn.LSTMCell(4), fastrnn.GRUCell(3)])
    stack.build((2, 5, 3))
    _stack_weights_fail_atomically(stack, -1, np.zeros(5))
    bi = fastrnn.Bidirectional(fastrnn.LSTM(4))
    bi.build((2, 5, 3))
    _stack_weights_fail_atomically(bi, -1, np.zeros(3))
    multi = fastrnn.nn.rnn_cell.MultiRNNCell([fastrnn.nn.rnn_cell.LSTMCell(4),
                                              fastrnn.nn.rnn_cell.GRUCell(3)])
    fastrnn.nn.dynamic_rnn(multi, x_(rng, 2, 5, 3), dtype=np.float32)
    _stack_weights_fail_atomically(multi, -1, np.zeros(7))


def test_set_weights_builds_an_unbuilt_layer(rng):
    layer = fastrnn.SimpleRNN(3)
    layer.set_weights([x_(rng, 5, 3), x_(rng, 3, 3), x_(rng, 3)])
    assert layer.built and layer(x_(rng, 2, 4, 5)).shape == (2, 3)


def test_unknown_activation_and_argument():
    with pytest.raises(ValueError, match="activation: unknown activation 'tanhh'"):
        fastrnn.LSTM(3, activation="tanhh")
    with pytest.raises(ValueError, match="recurrent_activation: unknown activation 'nope'"):
        fastrnn.GRU(3, recurrent_activation="nope")
    with pytest.raises(TypeError, match=r"unexpected keyword argument\(s\) \['return_sequence'\]"):
        fastrnn.LSTM(3, return_sequence=True)
    with pytest.raises(ValueError, match="units: expected a positive integer, got 0"):
        fastrnn.LSTM(0)
    with pytest.raises(ValueError, match=r"dropout: expected a rate in \[0, 1\), got 1.5"):
        fastrnn.LSTM(3, dropout=1.5)
    with pytest.raises(ValueError, match="backend: expected one of"):
        fastrnn.LSTM(3, backend="tpu")
    with pytest.raises(ValueError, match="dtype: expected float32 or float64, got 'int32'"):
        fastrnn.LSTM(3, dtype="int32")
    with pytest.raises(ValueError, match="merge_mode: expected one of"):
        fastrnn.Bidirectional(fastrnn.LSTM(3), merge_mode="max")


def test_nan_policy(rng):
    layer = fastrnn.GRU(3, nan_policy="raise")
    x = x_(rng, 2, 4, 3)
    layer(x)
    x[1, 2, 0] = np.nan
    with pytest.raises(ValueError, match="inputs: contain NaN and nan_policy='raise'"):
        layer(x)
    prop = fastrnn.GRU(3)
    prop.set_weights(layer.get_weights())
    y = prop(x)  # propagate: NaN flows into that sequence only
    assert np.isnan(y[1]).all() and np.isfinite(y[0]).all()


def test_forced_unavailable_backend_raises(rng):
    layer = fastrnn.LSTM(3, backend="cuda")
    layer.build((1, 2, 3))
    ok, why = fastrnn.dispatch.available("cuda")
    if ok:
        pytest.skip("a CUDA backend is available here")
    with pytest.raises(RuntimeError, match="backend 'cuda' was requested"):
        layer(x_(rng, 1, 2, 3))


def test_unbuilt_layer_reports_itself():
    layer = fastrnn.LSTM(3)
    assert layer.backend is None and layer.backend_reason == "not built yet"
    with pytest.raises(ValueError, match="is not built"):
        layer.cell.params()


def test_weights_are_read_only(rng):
    """An edit in place would be ignored by the packed kernels: refused."""
    layer = fastrnn.LSTM(4)
    layer.build((1, 2, 3))
    for w in layer.cell.weights:
        with pytest.raises(ValueError, match="read-only"):
            w[...] = 0
    copies = layer.get_weights()
    copies[0][...] = 0  # get_weights returns copies, free to edit
    layer.set_weights(copies)
    assert not layer.cell.kernel.any()


@pytest.mark.parametrize("kwargs", [dict(input_dim=7), dict(input_shape=(None, 7)),
                                    dict(batch_input_shape=(2, None, 7))])
def test_keras_shape_arguments_build_the_layer(kwargs, rng):
    """They were accepted and dropped: the layer then built for whatever came."""
    layer = fastrnn.LSTM(4, **kwargs)
    assert layer.built and layer.cell.input_dim == 7
    assert layer(x_(rng, 3, 5, 7)).shape == (3, 4)  # not stateful: any batch
    with pytest.raises(ValueError, match="expected 7 features"):
        layer(x_(rng, 3, 5, 6))


def test_batch_size_fixes_a_stateful_layer(rng, tmp_path):
    layer = fastrnn.GRU(4, stateful=True, batch_size=8)
    with pytest.raises(ValueError, match=r"stateful with batch size 8 \(fixed by batch_size"):
        layer(x_(rng, 6, 5, 3))
    assert layer(x_(rng, 8, 5, 3)).shape == (8, 4)
    fastrnn.save(layer, tmp_path / "g.fastrnn")
    assert fastrnn.load(tmp_path / "g.fastrnn")._declared_batch == 8


def test_shape_arguments_checked():
    with pytest.raises(ValueError, match="features size is given twice, differently"):
        fastrnn.GRU(4, input_dim=7, input_shape=(5, 6))
    with pytest.raises(ValueError, match="input_dim expected a positive integer, got 0"):
        fastrnn.GRU(4, input_dim=0)
    with pytest.raises(ValueError, match=r"input_shape expected \(time, features\), got \(7,\)"):
        fastrnn.GRU(4, input_shape=(7,))
    with pytest.raises(TypeError, match=r"LSTMCell: unexpected keyword argument\(s\) \['input_dim'\]"):
        fastrnn.LSTMCell(4, input_dim=3)


def test_nan_initial_state_with_nan_policy_raise(rng):
    layer = fastrnn.GRU(4, nan_policy="raise")
    layer.build((2, 5, 3))
    h = x_(rng, 2, 4)
    h[1, 2] = np.nan
    with pytest.raises(ValueError, match=r"initial_state\[0\]: contains NaN and nan_policy='raise'"):
        layer(x_(rng, 2, 5, 3), initial_state=[h])


def test_get_initial_state_batch_argument():
    for obj in (fastrnn.LSTMCell(3), fastrnn.LSTM(3)):
        with pytest.raises(ValueError, match="batch_size: expected a non-negative integer, got -1"):
            obj.get_initial_state(-1)
        with pytest.raises(ValueError, match="got 2.5"):
            obj.get_initial_state(2.5)


def test_cell_step_names_its_own_arguments(rng):
    cell = fastrnn.LSTMCell(4)
    cell.build((None, 5))
    with pytest.raises(ValueError, match=r"LSTMCell: inputs expected shape \(batch, 5\), got \(2, 3\)"):
        cell(x_(rng, 2, 3), cell.get_initial_state(2))
    with pytest.raises(ValueError, match=r"LSTMCell: states expected 2 arrays of shapes \[\(2, 4\), \(2, 4\)\], got 1"):
        cell(x_(rng, 2, 5), [x_(rng, 2, 4)])
    with pytest.raises(ValueError, match=r"LSTMCell: states\[1\] expected shape \(2, 4\), got \(2, 3\)"):
        cell(x_(rng, 2, 5), [x_(rng, 2, 4), x_(rng, 2, 3)])


class _BadCell:
    state_size = 3
    output_size = 3

    def __init__(self, out_cols=3, state_cols=3):
        self.out_cols, self.state_cols = out_cols, state_cols

    def __call__(self, x, states):
        B = x.shape[0]
        return np.zeros((B, self.out_cols)), [np.zeros((B, self.state_cols))]


def test_custom_cell_returning_wrong_shapes(rng):
    x = x_(rng, 2, 4, 3)
    with pytest.raises(ValueError, match=r"_BadCell returned states\[0\] of shape \(2, 4\); expected \(2, 3\)"):
        fastrnn.RNN(_BadCell(state_cols=4))(x)
    with pytest.raises(ValueError, match=r"_BadCell returned an output of shape \(2, 5\); expected"):
        fastrnn.RNN(_BadCell(out_cols=5))(x, mask=np.ones((2, 4), bool))


def test_bidirectional_initial_state_count(rng):
    bi = fastrnn.Bidirectional(fastrnn.LSTM(4))
    with pytest.raises(ValueError, match=r"initial_state: expected 2 forward states then 2 backward states \(4 arrays\), got 2"):
        bi(x_(rng, 2, 5, 3), initial_state=[x_(rng, 2, 4), x_(rng, 2, 4)])


def test_training_with_dropout_names_the_backend(rng):
    layer = fastrnn.LSTM(4, dropout=0.3, backend="cpu" if fastrnn.dispatch.available("cpu")[0] else "reference")
    layer.build((2, 5, 3))
    layer(x_(rng, 2, 5, 3), training=True)
    assert layer.backend == "reference" and "training=True with dropout" in layer.backend_reason


def test_flag_and_rate_arguments():
    with pytest.raises(TypeError, match="return_sequences: expected True or False, got 'False'"):
        fastrnn.LSTM(3, return_sequences="False")
    assert fastrnn.LSTM(3, return_sequences=np.True_, stateful=0).return_sequences
    with pytest.raises(ValueError, match=r"dropout: expected a rate in \[0, 1\), got 'x'"):
        fastrnn.LSTM(3, dropout="x")


@pytest.mark.parametrize("make, argument", [
    (lambda v: fastrnn.GRU(7, reset_after=v), "reset_after"),
    (lambda v: fastrnn.LSTM(7, use_bias=v), "use_bias"),
    (lambda v: fastrnn.LSTM(7, unit_forget_bias=v), "unit_forget_bias"),
    (lambda v: fastrnn.nn.rnn_cell.LSTMCell(7, use_peepholes=v), "use_peepholes"),
    (lambda v: fastrnn.nn.rnn_cell.LSTMCell(7, state_is_tuple=v), "state_is_tuple"),
    (lambda v: fastrnn.nn.rnn_cell.MultiRNNCell([fastrnn.nn.rnn_cell.GRUCell(3)],
                                                state_is_tuple=v), "state_is_tuple"),
    (lambda v: fastrnn.nn.dynamic_rnn(fastrnn.nn.rnn_cell.GRUCell(3),
                                      np.ones((2, 4, 5), np.float32), time_major=v),
     "time_major"),
])
def test_cell_flags_refuse_strings(make, argument):
    """bool("False") is True: a string where a flag belongs is an error,
    not a flipped option (reset_after="False" gave reset_after=True)."""
    with pytest.raises(TypeError, match=f"{argument}: expected True or False, got 'False'"):
        make("False")
    make(np.False_)  # NumPy's booleans (read from files) pass


def test_initial_state_as_nested_python_lists_says_so(rng):
    """Nested lists read as nesting: one (2, 3) state given as lists is six
    numbers, and the error says what happened and what to pass."""
    layer = fastrnn.GRU(3)
    x = x_(rng, 2, 4, 2)
    h = [[0.1, 0.2, 0.3], [0.1, 0.2, 0.3]]
    with pytest.raises(ValueError, match=r"expected 1 arrays .* got 6; nested Python lists of "
                                         r"numbers .*np\.asarray"):
        layer(x, initial_state=[h])
    y = layer(x, initial_state=[np.asarray(h, np.float32)])
    assert y.shape == (2, 3)
    stream = layer.stream(batch_size=2)
    with pytest.raises(ValueError, match=r"got 6; nested Python lists of numbers"):
        stream.states = [h]


@pytest.mark.parametrize("units", [2.5, 7.0, "7", True, 0])
def test_tf1_cell_units_must_be_a_positive_integer(units):
    with pytest.raises(ValueError, match="num_units: expected a positive integer"):
        fastrnn.nn.rnn_cell.LSTMCell(units)


def test_model_messages_name_unnamed_layers_by_place():
    from fastrnn.models import Dense
    model = fastrnn.Sequential([Dense(4), fastrnn.Bidirectional(fastrnn.LSTM(3))])
    with pytest.raises(TypeError, match=r"layer 1 \(an unnamed Bidirectional\) is Bidirectional"):
        model.stream()
    lines = []
    fastrnn.Sequential([fastrnn.LSTM(3, input_dim=2)]).summary(print_fn=lines.append)
    assert lines and not any("None" in line for line in lines)


def test_scalar_input_reports_its_own_shape():
    with pytest.raises(ValueError, match=r"got shape \(\)$"):
        fastrnn.LSTM(3)(1.0)


def test_model_layer_arguments_are_checked(rng, tmp_path):
    """The per-step layers and Sequential refuse what Keras refuses, naming
    the argument: counts must be positive integers, a rate lies in [0, 1],
    unknown keywords are errors, a Dense whose input size is known keeps it
    at set_weights; a scalar input to predict and NaN indices are named."""
    from fastrnn.models import Activation, Dense, Dropout, Embedding, InputLayer
    for bad in (0, -1, 2.7, True, "8"):
        with pytest.raises(ValueError, match=r"Dense: units expected a positive integer"):
            Dense(bad)
        with pytest.raises(ValueError, match=r"Embedding: input_dim expected a positive"):
            Embedding(bad, 3)
    assert Dense(np.int64(3)).units == 3 and Dense(8.0).units == 8  # (integral, from configs)
    for bad in (-0.1, 1.5, "0.5", None):
        with pytest.raises(ValueError, match=r"Dropout: rate expected a number in \[0, 1\]"):
            Dropout(bad)
    with pytest.raises(TypeError, match="nme"):
        fastrnn.Sequential([], nme="encoder")
    dense = Dense(2, input_dim=4)
    with pytest.raises(ValueError, match=r"kernel expected shape \(4, 2\), got \(7, 2\)"):
        dense.set_weights([np.ones((7, 2)), np.zeros(2)])
    dense.set_weights([np.ones((4, 2)), np.zeros(2)])
    with pytest.raises(ValueError, match=r"kernel expected shape \(4, 2\), got \(3, 2\)"):
        dense.set_weights([np.ones((3, 2)), np.zeros(2)])
    model = fastrnn.Sequential([dense])
    with pytest.raises(ValueError, match="got a scalar"):
        model.predict(np.float32(1.0))
    with pytest.raises(ValueError, match="finite"):
        embedding = Embedding(5, 3)
        embedding.set_weights([rng.standard_normal((5, 3))])
        embedding(np.array([[1.0, np.nan]]))
    # Activation keeps the dtype integer inputs are cast to through a file
    act = fastrnn.Sequential([Activation("relu", dtype="float64")])
    fastrnn.save(act, tmp_path / "act.fastrnn")
    again = fastrnn.load(tmp_path / "act.fastrnn")
    x = np.array([[1, -2, 3]])
    assert act(x).dtype == again(x).dtype == np.float64
    # an output is never the input itself, even through identity layers only
    ident = fastrnn.Sequential([InputLayer(shape=(None, 3)), Dropout(0.5), Activation("linear")])
    x = rng.standard_normal((2, 4, 3)).astype(np.float32)
    y = ident(x)
    assert not np.may_share_memory(y, x)
    np.testing.assert_array_equal(y, x)


def test_ragged_nested_lists_name_the_argument():
    """NumPy's own message, naming nothing, came through before."""
    layer = fastrnn.LSTM(4)
    with pytest.raises(ValueError, match=r"inputs: expected an array, got a list that does "
                                         r"not form one"):
        layer([[[1.0] * 5] * 3, [[1.0] * 5] * 2])
    with pytest.raises(ValueError, match=r"mask: expected an array, got a list that does not "
                                         r"form one"):
        layer(np.ones((2, 3, 5), np.float32), mask=[[1, 1, 1], [1, 1]])


def test_torch_cpu_tensors_with_grad_or_bfloat16():
    """A tensor that requires grad raised torch's "Can't call numpy() on
    Tensor that requires grad", and a bfloat16 one "Got unsupported
    ScalarType BFloat16"; both are inputs like any other."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 5)).astype(np.float32)
    h = rng.standard_normal((2, 4)).astype(np.float32)
    layer = fastrnn.LSTM(4)
    want = layer(x, initial_state=[h, h])
    got = layer(torch.tensor(x, requires_grad=True),
                initial_state=[torch.tensor(h, requires_grad=True)] * 2)
    np.testing.assert_array_equal(got, want)
    xb = torch.tensor(x).bfloat16()
    np.testing.assert_array_equal(layer(xb), layer(xb.float().numpy()))


@pytest.mark.parametrize("value, packed", [("", True), ("0", True), ("false", True),
                                           (" Off ", True), ("no", True), ("1", False),
                                           ("TRUE", False), ("yes", False), ("on", False)])
def test_cpu_generic_switch_values(monkeypatch, value, packed):
    from fastrnn.kernels import cpu
    monkeypatch.setenv("FASTRNN_CPU_GENERIC", value)
    assert cpu._packed_path_enabled() is packed   # "false" used to switch packing off


def test_cpu_generic_switch_refuses_other_values(monkeypatch, rng):
    monkeypatch.setenv("FASTRNN_CPU_GENERIC", "maybe")
    layer = fastrnn.LSTM(5, backend="cpu")
    with pytest.raises(ValueError, match="FASTRNN_CPU_GENERIC: expected 1, true.*got 'maybe'"):
        layer(rng.standard_normal((2, 3, 4)).astype(np.float32))


@pytest.mark.parametrize("bad, error", [("cpuu", ValueError), ("", ValueError), (3, TypeError)])
def test_tf1_cell_backend_checked_when_made(bad, error):
    from fastrnn.nn import rnn_cell
    with pytest.raises(error, match="backend: expected"):
        rnn_cell.BasicRNNCell(4, backend=bad)   # was taken, and refused at the first call
    assert rnn_cell.GRUCell(3, backend="CPU").backend == "cpu"
