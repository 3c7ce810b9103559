"""Streams (fastrnn.streaming) against whole-sequence layer calls on the reference backend.

Every expected value comes from ``layer(x)`` on ``backend="reference"``,
never from a stream. Random weights and inputs, odd sizes.
"""

import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import fastrnn
from fastrnn.kernels.cpu import stream as _stream
from fastrnn.streaming import Stream, StreamBusyError, load_stream

TOL = {"float32": dict(rtol=2e-5, atol=2e-5), "float64": dict(rtol=1e-10, atol=1e-10)}


def _cells(spec, dtype):
    out = []
    for kind, units, kw in spec:
        cls = {"lstm": fastrnn.LSTMCell, "gru": fastrnn.GRUCell,
               "simple": fastrnn.SimpleRNNCell}[kind]
        out.append(cls(units, dtype=dtype, **kw))
    return out


CONFIGS = {
    "lstm": [("lstm", 7, {})],
    "gru": [("gru", 5, {})],
    "gru_reset_before": [("gru", 6, dict(reset_after=False))],
    "simple": [("simple", 9, {})],
    "lstm_acts": [("lstm", 5, dict(activation="softsign", recurrent_activation="hard_sigmoid"))],
    "gru_acts": [("gru", 4, dict(activation="relu", recurrent_activation="sigmoid",
                                 reset_after=False))],
    "simple_elu": [("simple", 3, dict(activation="elu"))],
    "stack": [("lstm", 6, {}), ("gru", 5, {}), ("simple", 3, dict(activation="selu"))],
    "stack_gru_lstm": [("gru", 4, dict(reset_after=False)), ("lstm", 8, {})],
}


class _Ref(fastrnn.RNN):
    """A layer whose calls run on the reference backend (the expected
    values) and whose streams run as those of a layer on "auto" (the stream
    kernels where they run it): a layer's backend="reference" would run its
    streams on the reference backend too. The stream's layer is a plain RNN
    over the same cells, so set_weights on this one reaches its streams."""

    def stream(self, batch_size=1, **kwargs):
        twin = fastrnn.RNN(self.cell, return_sequences=self.return_sequences,
                           return_state=self.return_state, time_major=self.time_major,
                           nan_policy=self.nan_policy, dtype=self.dtype.name)
        return twin.stream(batch_size, **kwargs)


def _make(config, dtype, rng, D=3, **layer_kw):
    spec = CONFIGS[config]
    cells = _cells(spec, dtype)
    layer = _Ref(cells if len(cells) > 1 else cells[0], backend="reference", dtype=dtype,
                 **layer_kw)
    layer.build((1, None, D))
    layer.set_weights([rng.uniform(-0.7, 0.7, w.shape) for w in layer.get_weights()])
    return layer


def _x(rng, shape, dtype):
    return rng.uniform(-2, 2, shape).astype(dtype)


def _ref_states(layer, x, initial_state=None):
    saved = layer.return_state
    layer.return_state = True
    try:
        result = layer(x, initial_state=initial_state)
    finally:
        layer.return_state = saved
    return result[0], [np.asarray(s) for s in _flat(result[1:])]


def _flat(nested):
    if isinstance(nested, (list, tuple)):
        return [y for item in nested for y in _flat(item)]
    return [nested]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_frames_and_chunks_equal_whole_sequence(config, dtype, rng):
    B, T, D = 3, 11, 3
    layer = _make(config, dtype, rng, D=D, return_sequences=True)
    x = _x(rng, (B, T, D), dtype)
    expected, expected_states = _ref_states(layer, x)
    stream = layer.stream(batch_size=B)
    assert stream.backend == "stream"
    frames = np.stack([stream(np.ascontiguousarray(x[:, t])) for t in range(T)], axis=1)
    np.testing.assert_allclose(frames, expected, **TOL[dtype])
    for got, want in zip(_flat(stream.states), expected_states):
        np.testing.assert_allclose(got, want, **TOL[dtype])
    stream.reset()
    bounds = [0, 1, 4, 6, 7, T]  # chunks of 1, 3, 2, 1, 4 steps
    chunks = [stream(x[:, a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
    np.testing.assert_allclose(np.concatenate(chunks, axis=1), expected, **TOL[dtype])
    # The same shape twice takes the cached fast path and keeps carrying state.
    stream.reset()
    halves = [stream(np.ascontiguousarray(x[:, :5])), stream(np.ascontiguousarray(x[:, 5:10]))]
    np.testing.assert_allclose(np.concatenate(halves, axis=1), expected[:, :10], **TOL[dtype])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("config", ["lstm", "stack"])
def test_last_output_and_initial_states(config, dtype, rng):
    B, T, D = 2, 7, 3
    layer = _make(config, dtype, rng, D=D)
    x = _x(rng, (B, T, D), dtype)
    init = [_x(rng, (B, s), dtype) for s in layer.state_sizes]
    nested = fastrnn._nest.pack_as(layer.state_structure, init)
    expected, expected_states = _ref_states(layer, x, initial_state=nested)
    stream = layer.stream(batch_size=B)
    stream.states = nested
    y = stream(x[:, :4])
    y = stream(x[:, 4:])
    assert y.shape == (B, layer.output_size)
    np.testing.assert_allclose(y, expected, **TOL[dtype])
    for got, want in zip(_flat(stream.states), expected_states):
        np.testing.assert_allclose(got, want, **TOL[dtype])


def test_fallback_through_the_kernel_contract(rng):
    """A callable activation cannot compile: the stream runs the layer's backend."""
    def mytanh(v):
        return np.tanh(v)

    layer = fastrnn.GRU(5, activation=mytanh, return_sequences=True)  # (auto: reference)
    layer.build((1, None, 4))
    layer.set_weights([rng.uniform(-0.7, 0.7, w.shape) for w in layer.get_weights()])
    x = _x(rng, (2, 6, 4), "float32")
    expected = layer(x)
    stream = layer.stream(batch_size=2)
    assert stream.backend == "reference" and "callable" in stream.backend_reason
    got = np.stack([stream(np.ascontiguousarray(x[:, t])) for t in range(6)], axis=1)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    forced = _make("stack", "float64", rng).stream(backend="reference")
    assert forced.backend == "reference"


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_forced_contract_engine_matches(dtype, rng):
    layer = _make("stack", dtype, rng, return_sequences=True)
    x = _x(rng, (1, 5, 3), dtype)
    expected = layer(x)
    stream = layer.stream(backend="reference")
    got = np.concatenate([stream(x[:, :2]), stream(x[:, 2:])], axis=1)
    np.testing.assert_allclose(got, expected, **TOL[dtype])


def test_return_state_out_and_time_major(rng):
    layer = _make("lstm", "float32", rng, return_state=True)
    x = _x(rng, (1, 4, 3), "float32")
    expected = layer(x)
    stream = layer.stream()
    out = np.empty((1, 7), np.float32)
    for t in range(4):
        result = stream(np.ascontiguousarray(x[:, t]), out=out)
    assert result[0] is out and len(result) == 3
    for got, want in zip(result, expected):
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5)
    with pytest.raises(ValueError, match="out"):
        stream(np.ascontiguousarray(x[:, 0]), out=np.empty((1, 6), np.float32))
    # Every input layout: a fresh contiguous frame, a slice of a chunk (odd stride on
    # the size-1 axis), a non-contiguous view; each returns [output, h, c].
    wide = _x(np.random.default_rng(5), (1, 6), "float32")
    for frame in (wide[:, :3].copy(), _x(np.random.default_rng(6), (1, 2, 3), "float32")[:, 1],
                  wide[:, ::2]):
        stream.reset()
        got = stream(frame)
        want = layer(np.ascontiguousarray(frame)[:, None])
        assert isinstance(got, list) and len(got) == 3
        for g, w_ in zip(got, want):
            np.testing.assert_allclose(g, w_, rtol=2e-5, atol=2e-5)
    tm = _make("gru", "float64", rng, return_sequences=True, time_major=True)
    xt = _x(rng, (6, 2, 3), "float64")
    stream = tm.stream(batch_size=2)
    got = np.concatenate([stream(xt[:2]), stream(xt[2:])], axis=0)
    np.testing.assert_allclose(got, tm(xt), **TOL["float64"])


def test_states_round_trip_and_validation(rng):
    layer = _make("stack", "float32", rng)
    stream = layer.stream(batch_size=2)
    stream(_x(rng, (2, 5, 3), "float32"))
    states = stream.states
    assert [len(s) for s in states] == [2, 1, 1]  # Keras nesting: [h, c], [h], [h]
    before = [s.copy() for s in _flat(states)]
    _flat(states)[0][...] = 99.0  # the getter returns copies
    np.testing.assert_array_equal(_flat(stream.states)[0], before[0])
    with pytest.raises(ValueError, match="expected 4 arrays"):
        stream.states = before[:3]
    with pytest.raises(ValueError, match=r"states\[2\]: expected shape \(2, 5\)"):
        stream.states = before[:2] + [np.zeros((2, 4))] + before[3:]
    for got, want in zip(_flat(stream.states), before):
        np.testing.assert_array_equal(got, want)
    x = _x(rng, (2, 3), "float32")
    y1 = stream(x)
    stream.states = before  # flat lists are accepted too
    np.testing.assert_array_equal(stream(x), y1)
    stream.reset()
    assert all(not s.any() for s in _flat(stream.states))


def test_stateful_layer_stream_starts_from_zeros_and_takes_its_states(rng):
    """As documented: a new stream starts from zeros; assigning the stateful
    layer's states goes on from them, as the layer's next call would."""
    layer = fastrnn.LSTM(6, stateful=True)   # (on auto: its stream runs the stream kernels)
    layer(_x(rng, (2, 4, 3), "float32"))
    x = _x(rng, (2, 5, 3), "float32")
    fresh = fastrnn.LSTM(6, backend="reference")
    fresh.build((2, None, 3))
    fresh.set_weights(layer.get_weights())
    stream = layer.stream(batch_size=2)
    assert stream.backend == "stream"
    np.testing.assert_allclose(stream(x), fresh(x), **TOL["float32"])
    stream.states = layer.states
    np.testing.assert_allclose(stream(x), layer(x), **TOL["float32"])


def test_save_and_load(tmp_path, rng):
    layer = _make("stack_gru_lstm", "float64", rng, return_sequences=True)
    x = _x(rng, (2, 9, 3), "float64")
    expected = layer(x)
    stream = layer.stream(batch_size=2)
    first = stream(x[:, :4])
    path = stream.save(tmp_path / "s.npz")
    with np.load(path, allow_pickle=False) as data:  # no pickled objects inside
        assert "meta" in data.files
    restored = load_stream(path)
    assert restored.batch_size == 2 and restored.backend == "stream"
    rest = restored(x[:, 4:])
    np.testing.assert_allclose(np.concatenate([first, rest], axis=1), expected,
                               **TOL["float64"])
    assert Stream.load(path).states is not None
    layer.set_weights(layer.get_weights())  # the stream packs them again: saving still works
    load_stream(stream.save(tmp_path / "t.npz"))
    assert restored._threads_arg is None
    one = load_stream(layer.stream(batch_size=2, threads=1).save(tmp_path / "one.npz"))
    assert one._threads_arg == 1 and "threads=1 was requested" in one.backend_reason
    # a path without .npz: save appends it, and load_stream finds it by the same path
    for given in (tmp_path / "plain", str(tmp_path / "plain2")):
        assert stream.save(given) == str(given) + ".npz"
        np.testing.assert_array_equal(load_stream(given).states[0][0], stream.states[0][0])


@pytest.mark.parametrize("config", ["lstm", "stack_gru_lstm"])
def test_stream_follows_set_weights(rng, config):
    """After layer.set_weights, the next call runs the new weights from the
    carried state (it kept running the old ones, silently)."""
    layer = _make(config, "float64", rng, return_sequences=True)
    x = _x(rng, (1, 8, 3), "float64")
    stream = layer.stream()
    for t in range(3):
        stream(x[:, t])
    carried = stream.states
    new = [rng.uniform(-0.7, 0.7, w.shape) for w in layer.get_weights()]
    layer.set_weights(new)
    got = np.stack([stream(x[:, t]) for t in range(3, 8)], axis=1)
    want = layer(x[:, 3:], initial_state=carried)
    np.testing.assert_allclose(got, want, **TOL["float64"])
    # the same through chunks (their work buffers are sized again)
    chunk_stream = layer.stream()
    chunk_stream(x[:, :4])
    carried = chunk_stream.states
    layer.set_weights([w * 0.5 for w in new])
    np.testing.assert_allclose(chunk_stream(x[:, 4:]), layer(x[:, 4:], initial_state=carried),
                               **TOL["float64"])


def test_save_and_load_in_another_process(tmp_path, rng):
    layer = _make("lstm", "float32", rng, return_sequences=True)
    x = _x(rng, (1, 6, 3), "float32")
    expected = layer(x)
    stream = layer.stream()
    stream(x[:, :3])
    path = stream.save(tmp_path / "session.npz")
    np.save(tmp_path / "x.npy", x[:, 3:])
    code = ("import numpy as np, sys; from fastrnn.streaming import load_stream; "
            "d = sys.argv[1]; s = load_stream(d + '/session.npz'); "
            "np.save(d + '/y.npy', s(np.load(d + '/x.npy')))")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [os.path.dirname(os.path.dirname(os.path.abspath(fastrnn.__file__)))]
        + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True, env=env,
                   timeout=300)
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), expected[:, 3:],
                               rtol=2e-5, atol=2e-5)
    assert os.path.getsize(path) > 0


@pytest.mark.parametrize("nan_policy", ["raise", "propagate"])
def test_bad_frames_raise_and_leave_state(nan_policy, rng):
    layer = _make("lstm", "float32", rng, nan_policy=nan_policy)
    stream = layer.stream(batch_size=2)
    good = _x(rng, (2, 3), "float32")
    stream(good)
    before = [s.copy() for s in _flat(stream.states)]
    bad = [
        (ValueError, "3 features", _x(rng, (2, 4), "float32")),
        (ValueError, "batch_size=2", _x(rng, (1, 3), "float32")),
        (ValueError, "batch_size=2", _x(rng, (3, 5, 3), "float32")),
        (ValueError, "features", _x(rng, (2, 5, 2), "float32")),
        (TypeError, "float64", _x(rng, (2, 3), "float64")),
        (TypeError, "integer", np.ones((2, 3), np.int32)),
        (ValueError, "frame", _x(rng, (2,), "float32")),
    ]
    if nan_policy == "raise":
        nan = good.copy()
        nan[1, 2] = np.nan
        bad.append((ValueError, "NaN", nan))
        chunk = _x(rng, (2, 4, 3), "float32")
        chunk[0, 3, 0] = np.nan
        bad.append((ValueError, "NaN", chunk))
    for exc, words, frame in bad:
        with pytest.raises(exc, match=words):
            stream(frame)
        for got, want in zip(_flat(stream.states), before):
            np.testing.assert_array_equal(got, want)
    # states set by hand: under "raise" a NaN is refused, as the layer's
    # initial_state is (it was taken, and every later frame came out NaN)
    nan_states = [s.copy() for s in before]
    nan_states[0][1, 0] = np.nan
    if nan_policy == "raise":
        with pytest.raises(ValueError, match=r"states\[0\]: contains NaN"):
            stream.states = nan_states
        for got, want in zip(_flat(stream.states), before):
            np.testing.assert_array_equal(got, want)
    else:
        stream.states = nan_states
        stream.states = before
    if nan_policy == "propagate":
        nan = good.copy()
        nan[0, 0] = np.nan
        y = stream(nan)
        assert np.isnan(y[0]).all() and not np.isnan(y[1]).any()


class _TanhCell:
    """A user's cell that declares no input size: ``h = tanh(x W + h)``."""

    state_size = 4

    def __init__(self, rng):
        self.W = rng.uniform(-0.8, 0.8, (5, 4)).astype(np.float32)

    def __call__(self, x, states, training=False):
        h = np.tanh(x @ self.W + states[0])
        return h, [h]


@pytest.mark.parametrize("stacked", [False, True])
def test_user_cell_without_input_size_streams(stacked, rng):
    """The first frame's features fix the input size (the cell declares
    none); frames, an unbatched frame and a chunk then follow the cell's
    recurrence, written out here; another size is refused, state unchanged."""
    cell = _TanhCell(rng)
    gru = fastrnn.layers.GRUCell(3) if stacked else None
    layer = fastrnn.RNN([cell, gru] if stacked else cell, return_sequences=True)
    stream = layer.stream()
    x = rng.standard_normal((1, 6, 5)).astype(np.float32)
    got = [stream(x[:, 0]), stream(x[0, 1])[None]]  # a frame, an unbatched frame
    assert stream.backend == "custom"
    got.append(stream(x[:, 2:]))
    if not stacked:
        h, want = np.zeros((1, 4)), []
        for t in range(6):
            h = np.tanh(x[:, t].astype(np.float64) @ cell.W + h)
            want.append(h)
        np.testing.assert_allclose(np.concatenate([got[0][:, None], got[1][:, None], got[2]],
                                                  axis=1), np.stack(want, axis=1), atol=1e-5)
    else:  # the top cell's output: its own units
        assert got[0].shape == (1, 3) and got[2].shape == (1, 4, 3)
    fresh = fastrnn.RNN(_TanhCell(rng)).stream(batch_size=2)
    with pytest.raises(ValueError):  # a 1-d frame needs batch_size=1: the size stays open
        fresh(np.ones(5, np.float32))
    with pytest.raises(ValueError):  # the cell's product fails: the size stays open
        fresh(np.ones((2, 7), np.float32))
    assert fresh(np.ones((2, 5), np.float32)).shape == (2, 4)
    before = stream.states
    with pytest.raises(ValueError, match=r"\(1, 5\).*got shape \(1, 6\)"):
        stream(np.ones((1, 6), np.float32))
    for a, b in zip(_flat(stream.states), _flat(before)):
        np.testing.assert_array_equal(a, b)


class _BlockingCell:
    """A custom cell that waits for an event inside its step (to overlap two calls)."""

    state_size = 2
    output_size = 2
    built = True
    input_dim = 2

    def __init__(self):
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, x, states, training=False):
        self.entered.set()
        self.release.wait(30)
        h = np.tanh(x + states[0])
        return h, [h]


def test_two_threads_at_once_raise():
    cell = _BlockingCell()
    stream = fastrnn.RNN(cell).stream()
    assert stream.backend == "custom"
    errors = []
    worker = threading.Thread(target=lambda: stream(np.ones((1, 2), np.float32)))
    worker.start()
    assert cell.entered.wait(30)
    try:
        with pytest.raises(StreamBusyError, match="another call"):
            stream(np.ones((1, 2), np.float32))
        with pytest.raises(StreamBusyError):
            stream.reset()
        with pytest.raises(StreamBusyError):
            stream.states
    except Exception as exc:  # pragma: no cover - keep the worker from hanging
        errors.append(exc)
    finally:
        cell.release.set()
        worker.join(30)
    assert not errors
    y = stream(np.ones((1, 2), np.float32))  # usable again once the first call ended
    np.testing.assert_allclose(y, np.tanh(1 + np.tanh(1)), rtol=1e-6)


def test_bidirectional_and_go_backwards_refuse():
    with pytest.raises(TypeError, match="Bidirectional.*future"):
        fastrnn.Bidirectional(fastrnn.LSTM(3)).stream()
    layer = fastrnn.GRU(3, go_backwards=True)
    with pytest.raises(ValueError, match="go_backwards"):
        layer.stream()
    with pytest.raises(ValueError, match="batch_size"):
        fastrnn.GRU(3).stream(batch_size=0)


def test_unbuilt_layer_builds_on_first_frame(rng):
    layer = fastrnn.SimpleRNN(4, backend="reference")
    stream = layer.stream()
    x = _x(rng, (1, 5), "float32")
    y = stream(x)
    assert layer.built and y.shape == (1, 4)
    np.testing.assert_allclose(y, layer(x[:, None]), rtol=2e-5, atol=2e-5)


def test_unbatched_frames_in_a_stream_of_one(rng):
    """(features,) frames in a batch-1 stream return (units,) and carry the state
    as (1, features) frames do; with return_state the states stay (1, units)."""
    layer = _make("lstm", "float32", rng, return_state=True)
    x = _x(rng, (1, 4, 3), "float32")
    expected = layer(x)
    stream = layer.stream()
    for t in range(4):
        result = stream(x[0, t])
    assert result[0].shape == (7,) and [s.shape for s in result[1:]] == [(1, 7), (1, 7)]
    np.testing.assert_allclose(result[0], expected[0][0], rtol=2e-5, atol=2e-5)
    for got, want in zip(result[1:], expected[1:]):
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5)
    unbuilt = fastrnn.GRU(5, backend="reference")
    y = unbuilt.stream()(x[0, 0])  # builds from the unbatched frame's features
    assert unbuilt.built and y.shape == (5,)
    np.testing.assert_allclose(y, unbuilt(x[:, :1])[0], rtol=2e-5, atol=2e-5)
    with pytest.raises(ValueError, match=r"needs batch_size=1"):
        layer.stream(batch_size=2)(x[0, 0])


def test_vector_tanh_sigmoid_accuracy():
    """The float32 vector tanh and sigmoid of the packed and stream kernels:
    within float32 rounding (a few ulp) of the exact values, for the gate and
    for ``1 - gate`` (floats under 1 are 2**-24 apart), so saturated gates
    are exactly 0 or 1; NaN propagates, -0 stays -0."""
    from numba import njit

    from fastrnn.kernels.cpu.simd import vload, vsigmoid, vstore, vtanh

    @njit
    def apply(xs, sigmoid):
        out = np.empty_like(xs)
        for i in range(0, xs.size, 16):
            v = vload(xs, i)
            vstore(out, i, vsigmoid(v) if sigmoid else vtanh(v))
        return out

    rng = np.random.default_rng(5)
    xs = np.concatenate([np.linspace(-30, 30, 60001), rng.uniform(-90, 90, 20000),
                         np.geomspace(1e-30, 1, 2000), -np.geomspace(1e-30, 1, 2000)])
    xs = xs.astype(np.float32)
    xs = np.concatenate([xs, np.zeros(-xs.size % 16, np.float32)])
    x64 = xs.astype(np.float64)

    def ulps(got, want):
        return np.abs(got - want) / np.spacing(np.abs(want).astype(np.float32)).astype(np.float64)

    t = apply(xs, False).astype(np.float64)
    assert ulps(t, np.tanh(x64)).max() <= 3
    one_minus = 2 / (np.exp(2 * np.abs(x64)) + 1)  # 1 - |tanh|, exact
    err = np.abs((1 - np.abs(t)) - one_minus)
    # (near 1, floats are 2**-24 apart: that is the rounding of 1 - gate there)
    assert (err <= 3 * np.maximum(2.0**-24, np.spacing(one_minus.astype(np.float32)))).all()

    s = apply(xs, True).astype(np.float64)
    with np.errstate(over="ignore"):
        want, want_c = 1 / (1 + np.exp(-x64)), 1 / (1 + np.exp(x64))  # sigmoid, 1 - sigmoid
    normal = want >= np.finfo(np.float32).tiny
    assert ulps(s[normal], want[normal]).max() <= 3
    err = np.abs((1 - s) - want_c)
    assert (err <= 3 * np.maximum(2.0**-24, np.spacing(want_c.astype(np.float32)))).all()

    # saturation is exact: float32 1 / (1 + exp(-x)) is 1 above x = 17.33
    # (1 - sigmoid < 2**-25) and tanh is +-1 past |x| = 9.02
    # and 0 below x = -87.7, where the exact value is subnormal
    big = np.array([17.4, 17.5, 20, 40, 88, 89, 1e4, 3e38, np.inf] + [30] * 7, np.float32)
    assert (apply(big, True) == 1).all()
    assert (apply(-big - np.float32(70.4), True) == 0).all()
    assert (apply(big - np.float32(8.3), False) == 1).all()
    assert (apply(-big + np.float32(8.3), False) == -1).all()
    special = np.zeros(16, np.float32)
    special[:5] = [np.nan, np.inf, -np.inf, -0.0, -1e-30]
    t, sg = apply(special, False), apply(special, True)
    assert np.isnan(t[0]) and np.isnan(sg[0])
    assert t[1] == 1 and t[2] == -1 and sg[1] == 1 and sg[2] == 0
    assert np.signbit(t[3]) and t[3] == 0 and t[4] == np.float32(-1e-30) and sg[3] == 0.5


def test_bench_streaming_runs(capsys):
    """The benchmark's engines agree with fastrnn and its table prints (tiny sizes)."""
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from types import SimpleNamespace

    from fastrnn.cli import bench_streaming

    rows, notes = bench_streaming.run(SimpleNamespace(quick=True, calls=20, hs=(8,),
                                                      cells=["lstm", "gru"], skip=[],
                                                      no_progress=True))
    assert len(rows) == 4 and all(r["max_abs_diff"] < 1e-5 for r in rows)
    assert all("vs_ort" in r and "vs_torch_cell" in r for r in rows)
    assert "wrapper overhead" in notes[0]
    assert "| LSTM | 10 | 8 |" in capsys.readouterr().out


def test_readme_streaming_example_runs(tmp_path, monkeypatch):
    import re

    readme = os.path.join(os.path.dirname(__file__), "..", "README.md")
    text = open(readme, encoding="utf-8").read()
    section = text.split("## Streaming", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    scope = {}
    exec(compile(code, "README streaming", "exec"), scope)
    assert scope["y"].shape == (1, 128) and scope["stream"].backend == "stream"


def test_warmup_compiles_every_kernel():
    fastrnn.dispatch.warmup(dtypes=("float32",), parallel=False)
    for fn in (_stream.frame, _stream.chunk_seq, _stream.chunk_last):
        assert any(sig[0].dtype.name == "float32" for sig in fn.signatures), fn


def test_matvec_vs_blas_runs():
    from fastrnn.cli import bench_streaming

    rows = bench_streaming.matvec_vs_blas(hs=(5, 70), repeats=2)
    assert [(r[0], r[1]) for r in rows] == [("lstm", 5), ("gru", 5), ("lstm", 70), ("gru", 70)]


def test_load_stream_bad_files(tmp_path, rng):
    with pytest.raises(FileNotFoundError, match="load_stream: no such file"):
        load_stream(tmp_path / "missing.npz")
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip at all")
    with pytest.raises(ValueError, match="is not a stream saved by Stream.save"):
        load_stream(junk)
    np.save(tmp_path / "one.npy", np.ones(3))
    with pytest.raises(ValueError, match="is a single array"):
        load_stream(tmp_path / "one.npy")
    layer = _make("lstm", "float32", rng)
    good = layer.stream().save(tmp_path / "good.npz")
    with np.load(good, allow_pickle=False) as data:
        entries = {k: data[k] for k in data.files}
    for name, edit, message in (
            ("nometa", lambda e: e.pop("meta"), "no 'meta' entry"),
            ("badjson", lambda e: e.update(meta=np.array("{oops")), "not valid JSON"),
            ("now1", lambda e: e.pop("w1"), "incomplete: missing"),
            ("badstate", lambda e: e.update(s0=np.ones((3, 7), np.float32)), r"states\[0\]"),
            ("badthreads", lambda e: e.update(meta=np.array(str(e["meta"]).replace(
                '"threads": null', '"threads": 3'))), "threads expected null, 1 or 2")):
        bad = dict(entries)
        edit(bad)
        path = tmp_path / f"{name}.npz"
        np.savez(path, **bad)
        with pytest.raises(ValueError, match=f"load_stream: .*{message}"):
            load_stream(path)


def test_integer_frame_error_suggests_only_a_cast(rng):
    stream = _make("gru", "float32", rng).stream()
    with pytest.raises(TypeError, match=r"pass x.astype\(np.float32\)$"):
        stream(np.ones((1, 3), np.int64))
    with pytest.raises(TypeError, match="make the layer with dtype='float64'"):
        stream(np.ones((1, 3), np.float64))


@pytest.mark.parametrize("name", ["relu6", "leaky_relu", "soft_shrink", "sparse_plus", "squareplus",
                                  "celu", "tanh_shrink", "hard_tanh", "hard_shrink", "log_sigmoid",
                                  "sparse_sigmoid", "hard_silu", "mish"])
def test_stream_kernels_run_every_activation(rng, name):
    layer = _Ref([fastrnn.LSTMCell(5, activation=name, recurrent_activation="hard_sigmoid",
                                   dtype="float64"),
                  fastrnn.GRUCell(4, recurrent_activation=name, dtype="float64")],
                 return_sequences=True, backend="reference")
    layer.build((1, None, 3))
    layer.set_weights([rng.uniform(-0.7, 0.7, w.shape) for w in layer.get_weights()])
    x = _x(rng, (1, 6, 3), "float64")
    stream = layer.stream()
    assert stream.backend == "stream"
    got = np.stack([stream(x[:, t]) for t in range(6)], axis=1)
    np.testing.assert_allclose(got, layer(x), **TOL["float64"])


def test_unbuilt_layer_stream_says_nothing_is_chosen_yet():
    """backend, threads and backend_reason raised AttributeError until the first call."""
    stream = fastrnn.LSTM(3).stream()
    assert stream.backend is None and stream.threads is None
    assert "not chosen yet" in stream.backend_reason
    stream(np.ones((1, 2), np.float32))
    assert stream.backend == "stream" and "not chosen" not in stream.backend_reason
