"""Inputs of other types than a plain float32 NumPy array, at every entry
point: layers, cells, models, streams and ``fastrnn.nn``.

Each is either taken as the plain array of its values (the result compared
with the same call on that array) or refused with an error naming the
argument: NumPy subclasses (``np.matrix``, ``np.memmap``) come back as plain
arrays, never as the results' type; a ``numpy.ma.MaskedArray`` with masked
values is refused (its mask would be dropped); PyTorch CPU tensors that
require grad, and bfloat16 (PyTorch's or ``ml_dtypes``'), are read as
float32 values; ``training`` is a flag.
"""

import numpy as np
import pytest

import fastrnn
from fastrnn import nn
from fastrnn.models import Dense, Embedding, Masking, TimeDistributed

torch = pytest.importorskip("torch")

B, T, D, H = 3, 5, 4, 6


@pytest.fixture
def x(rng):
    return rng.standard_normal((B, T, D)).astype(np.float32)


def _lstm(rng, **kwargs):
    layer = fastrnn.LSTM(H, **kwargs)
    layer.build((None, None, D))
    layer.set_weights([rng.uniform(-0.5, 0.5, w.shape).astype(np.float32)
                       for w in layer.get_weights()])
    return layer


def _masked(a, masked=True):
    m = np.ma.MaskedArray(a, mask=np.zeros(a.shape, bool))
    if masked:
        m[(0,) * a.ndim] = np.ma.masked
    return m


@pytest.mark.parametrize("kind", ["matrix", "memmap", "unmasked"])
def test_array_subclasses_come_back_as_plain_arrays(rng, x, tmp_path, kind):
    layer = _lstm(rng, return_state=True)
    h0 = rng.standard_normal((B, H)).astype(np.float32)
    if kind == "matrix":
        state = np.matrix(h0)
    elif kind == "memmap":
        np.save(tmp_path / "h0.npy", h0)
        state = np.load(tmp_path / "h0.npy", mmap_mode="r")
    else:
        state = _masked(h0, masked=False)
    got = layer(x, initial_state=[state, state])
    want = layer(x, initial_state=[h0, h0])
    assert [type(a) for a in got] == [np.ndarray] * 3
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)
    stateful = fastrnn.GRU(H, stateful=True)
    stateful.build((B, None, D))
    stateful(x, initial_state=[state])
    assert type(stateful.states[0]) is np.ndarray


def test_masked_values_are_refused_everywhere(rng, x):
    """Its mask would be dropped silently: refused, naming the argument."""
    layer = _lstm(rng)
    h0 = rng.standard_normal((B, H)).astype(np.float32)
    calls = {
        "inputs": lambda: layer(_masked(x)),
        r"initial_state\[0\]": lambda: layer(x, initial_state=[_masked(h0), h0]),
        "mask": lambda: layer(x, mask=_masked(np.ones((B, T), bool))),
        "x": lambda: fastrnn.Sequential([layer]).predict(_masked(x)),
    }
    stream = layer.stream(batch_size=1)
    calls["x "] = lambda: stream(_masked(x[:1, 0]))
    calls[r"states\[0\]"] = lambda: setattr(stream, "states", [_masked(h0[:1]), h0[:1]])
    calls[" inputs"] = lambda: nn.dynamic_rnn(nn.rnn_cell.GRUCell(H), _masked(x),
                                              dtype=np.float32)
    for argument, call in calls.items():
        with pytest.raises(TypeError, match=rf"^{argument.strip()}: a numpy.ma.MaskedArray "
                                            "with masked values"):
            call()
    # nothing masked: its values
    np.testing.assert_array_equal(layer(_masked(x, masked=False)), layer(x))
    # the per-step layers of a model, called alone
    emb = Embedding(9, D)
    emb.set_weights([rng.standard_normal((9, D)).astype(np.float32)])
    dense = Dense(D)
    dense.set_weights([rng.standard_normal((D, D)).astype(np.float32), np.zeros(D, np.float32)])
    for part, value in ((emb, _masked(np.ones((B, T), np.int64))), (Masking(0.0), _masked(x)),
                        (TimeDistributed(dense), _masked(x))):
        with pytest.raises(TypeError, match="a numpy.ma.MaskedArray with masked values"):
            part(value)


def test_torch_tensors_that_require_grad_or_are_bfloat16(rng, x):
    """What the layers take, the models, streams and fastrnn.nn take too: a
    tensor that requires grad is read without its graph, bfloat16 as float32."""
    layer = _lstm(rng)
    model = fastrnn.Sequential([layer])
    grad = torch.tensor(x, requires_grad=True)
    half = torch.tensor(x).bfloat16()
    plain = half.float().numpy()
    np.testing.assert_array_equal(model(grad), model(x))
    np.testing.assert_array_equal(model.predict(grad), model(x))
    np.testing.assert_array_equal(model(half), model(plain))
    np.testing.assert_array_equal(model.stream()(grad[:1]), model(x[:1]))
    stream = layer.stream(batch_size=1)
    stream.states = [torch.zeros(1, H, requires_grad=True)] * 2
    np.testing.assert_array_equal(stream(grad[:1, 0]), layer(x[:1, :1]))
    cell = nn.rnn_cell.GRUCell(H)
    want, _ = nn.dynamic_rnn(cell, x, dtype=np.float32)
    got, _ = nn.dynamic_rnn(cell, grad, initial_state=torch.zeros(B, H, requires_grad=True))
    assert got.dtype == np.float32  # (the dtype of a tensor state, without dtype=)
    np.testing.assert_array_equal(got, want)


def test_ml_dtypes_bfloat16_is_read_as_float32(rng, x):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    layer = _lstm(rng)
    half = x.astype(ml_dtypes.bfloat16)
    plain = half.astype(np.float32)
    np.testing.assert_array_equal(layer(half), layer(plain))
    stream = layer.stream(batch_size=1)  # (as a PyTorch bfloat16 frame: its float32 values)
    np.testing.assert_array_equal(stream(half[:1, 0]), layer(plain[:1, :1]))
    wide = _lstm(rng, dtype="float64").stream(batch_size=1)
    with pytest.raises(TypeError, match=r"got a bfloat16 \(read as float32\) array"):
        wide(half[:1, 0])
    cell = fastrnn.GRUCell(H)
    cell.build((None, D))
    states = cell.get_initial_state(B)
    np.testing.assert_array_equal(cell(half[:, 0], states)[0], cell(plain[:, 0], states)[0])
    got, _ = nn.dynamic_rnn(nn.rnn_cell.GRUCell(H), half, dtype=np.float32)
    assert got.shape == (B, T, H)


@pytest.mark.parametrize("bad", ["complex", "str", "object"])
def test_a_dense_first_model_refuses_what_is_not_real_numbers(rng, x, bad):
    dense = Dense(D)
    dense.set_weights([rng.standard_normal((D, D)).astype(np.float32), np.zeros(D, np.float32)])
    model = fastrnn.Sequential([TimeDistributed(dense), _lstm(rng)])
    value = {"complex": x + 1j, "str": x.astype(str), "object": x.astype(object)}[bad]
    with pytest.raises(TypeError, match="expected real numbers, got dtype"):
        model(value)


def test_training_is_a_flag(rng, x):
    layer = _lstm(rng, dropout=0.5)
    cell = fastrnn.GRUCell(H, dropout=0.5)
    cell.build((None, D))
    stack = fastrnn.StackedRNNCells([fastrnn.GRUCell(H), fastrnn.GRUCell(2)])
    stack.build((None, D))
    bi = fastrnn.Bidirectional(fastrnn.GRU(H))
    bi.build((None, None, D))
    calls = [lambda t: layer(x, training=t), lambda t: bi(x, training=t),
             lambda t: fastrnn.Sequential([layer])(x, training=t),
             lambda t: cell(x[:, 0], cell.get_initial_state(B), training=t),
             lambda t: stack(x[:, 0], stack.get_initial_state(B), training=t)]
    for call in calls:
        with pytest.raises(TypeError, match=r"^training: expected True or False, got 'False'"):
            call("False")
        call(None)  # (Keras's "not set": inference)
    np.testing.assert_array_equal(layer(x, training=None), layer(x, training=False))


def test_stacked_cells_states_must_be_a_list(rng, x):
    stack = fastrnn.StackedRNNCells([fastrnn.GRUCell(H), fastrnn.GRUCell(2)])
    stack.build((None, D))
    with pytest.raises(TypeError, match=r"StackedRNNCells: states expected a list with one "
                                        r"entry per cell \(2\), got NoneType"):
        stack(x[:, 0], None)


def test_model_stream_names_the_token_ids_it_expects(rng):
    emb = Embedding(9, D)
    emb.set_weights([rng.standard_normal((9, D)).astype(np.float32)])
    model = fastrnn.Sequential([emb, _lstm(rng)])
    stream = model.stream(batch_size=1)
    with pytest.raises(ValueError, match=r"x: expected 1 token ids per frame \(batch_size=1\), "
                                         r"got shape \(2,\)"):
        stream(np.array([1, 2]))
