"""Model streams (``Sequential.stream``) against whole-sequence model calls.

The streams run on the stream kernels: the recurrent layers are on
``"auto"`` (the default), and a stream made then runs them (as the tests
that compare values check, ``stream.streams[i].backend == "stream"``); a
layer made with ``backend="reference"`` would stream on the reference
backend too, and a test would compare that backend with itself. Every
expected value comes from ``model(x)`` run on the reference backend
(``_want``: ``fastrnn.set_backend("reference")`` around the call, after
the stream is made, since a stream reads the backend asked for when it is
made), or from live Keras, never from a stream; only the round trips
(states assigned back, a saved file loaded) also compare a stream's output
after the trip with its output before it, bit for bit. Random weights and
inputs, odd sizes.
"""

import contextlib
import hashlib
import json
import math
import pickle
import threading
import zipfile

import numpy as np
import pytest

import fastrnn
from fastrnn import _nest, models
from fastrnn import activations as _act
from fastrnn.models import (Activation, Dense, Dropout, Embedding, InputLayer, Masking,
                            ModelStream, TimeDistributed)
from fastrnn.streaming import StreamBusyError

TOL = {"float32": dict(rtol=2e-5, atol=2e-5), "float64": dict(rtol=1e-10, atol=1e-10)}


@contextlib.contextmanager
def _reference():
    """Calls inside run their recurrent layers (on "auto") on the reference
    backend. Make a stream before: a stream reads the backend asked for
    when it is made."""
    fastrnn.set_backend("reference")
    try:
        yield
    finally:
        fastrnn.set_backend(None)


def _want(model, x):
    """An expected value: ``model(x)`` on the reference backend."""
    with _reference():
        assert {layer.backend for layer in model.layers
                if isinstance(layer, fastrnn.RNN)} == {"reference"}
        return model(x)


def _on_stream_kernels(stream):
    """``stream`` (a model stream) runs every recurrent layer on the stream
    kernels, not on the reference backend that gives the expected values."""
    assert [s.backend for s in stream.streams] == ["stream"] * len(stream.streams), \
        [s.backend_reason for s in stream.streams]
    return stream


def _randomize(model, rng, D):
    """Build every layer (one model call) and give it random weights."""
    x = rng.uniform(-1, 1, (1, 2, D)) if D else rng.integers(0, 11, (1, 2))
    for layer in model.layers:
        if isinstance(layer, (Dense, TimeDistributed)):
            inner = layer.layer if isinstance(layer, TimeDistributed) else layer
            shapes = [(inner.input_dim, inner.units)] + [(inner.units,)] * inner.use_bias
            layer.set_weights([rng.uniform(-0.8, 0.8, s) for s in shapes])
        elif isinstance(layer, Embedding):
            layer.set_weights([rng.uniform(-1, 1, (layer.input_dim, layer.output_dim))])
    model(x.astype(model.layers[-1].dtype) if D else x)  # builds the recurrent layers
    for layer in model.layers:
        if isinstance(layer, fastrnn.RNN):
            layer.set_weights([rng.uniform(-0.7, 0.7, w.shape) for w in layer.get_weights()])
    return model


def _classifier(dtype, rng, D=5):
    """Per-step layers before, between and after two recurrent layers; the
    last one returns one step (and its states, which the model drops)."""
    model = fastrnn.Sequential([
        InputLayer(batch_shape=[None, None, D]),
        Dense(6, activation="tanh", dtype=dtype, input_dim=D),
        fastrnn.LSTM(7, return_sequences=True, dtype=dtype),
        Dropout(0.3),
        fastrnn.GRU(9, return_state=True, dtype=dtype),
        Dense(3, activation="softmax", dtype=dtype, input_dim=9),
    ])
    return _randomize(model, rng, D)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_frames_give_the_model_output_on_the_sequence_so_far(dtype, rng):
    model = _classifier(dtype, rng)
    B, T = 3, 11
    x = rng.uniform(-2, 2, (B, T, 5)).astype(dtype)
    stream = _on_stream_kernels(model.stream(batch_size=B))
    assert isinstance(stream, ModelStream) and len(stream.streams) == 2
    for t in range(T):
        y = stream(x[:, t])
        assert y.shape == (B, 3) and y.dtype == np.dtype(dtype)
        np.testing.assert_allclose(y, _want(model, x[:, :t + 1]), **TOL[dtype])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_chunks_carry_the_state(dtype, rng):
    model = fastrnn.Sequential([
        fastrnn.GRU(6, return_sequences=True, dtype=dtype),
        fastrnn.SimpleRNN(5, return_sequences=True, dtype=dtype),
        TimeDistributed(Dense(4, dtype=dtype, input_dim=5)),
        Activation("relu"),
    ])
    _randomize(model, rng, 3)
    x = rng.uniform(-2, 2, (2, 10, 3)).astype(dtype)
    stream = _on_stream_kernels(model.stream(batch_size=2))
    full = _want(model, x)
    got = [stream(x[:, 0:3]), stream(x[:, 3]), stream(x[:, 4:10])]
    assert got[0].shape == (2, 3, 4) and got[1].shape == (2, 4)
    np.testing.assert_allclose(np.concatenate([got[0], got[1][:, None], got[2]], axis=1), full,
                               **TOL[dtype])


def _softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


_DENSE_NUMPY = {  # Keras's definitions, written here
    "keras2_hard_sigmoid": lambda z: np.clip(0.2 * z + 0.5, 0.0, 1.0),   # Keras 2's hard_sigmoid
    "linear": lambda z: z,
    "relu": lambda z: np.maximum(z, 0),
    "tanh": np.tanh,
    "sigmoid": lambda z: 1 / (1 + np.exp(-z)),
    "softmax": _softmax,
    "log_softmax": lambda z: np.log(_softmax(z)),
}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("activation", sorted(set(models._CODES) | set(models._EXTRA_ACTIVATIONS)))
def test_dense_calls_compiled_and_with_numpy_agree(activation, dtype, rng, monkeypatch):
    """A small Dense call (at most models._SMALL_DENSE multiply-adds) runs
    compiled, a larger one with NumPy: both give Keras's definition (written
    here for the common activations) and each other's values, with and
    without a bias, on a frame and on every step of a sequence, in a model
    and in TimeDistributed; inputs are left unchanged."""
    tol = TOL[dtype]
    for use_bias in (True, False):
        dense = Dense(9, activation=activation, use_bias=use_bias, dtype=dtype)
        weights = [rng.uniform(-1, 1, (5, 9)).astype(dtype)]
        if use_bias:
            weights.append(rng.uniform(-1, 1, 9).astype(dtype))
        dense.set_weights(weights)
        for shape in ((1, 5), (3, 4, 5)):
            x = rng.uniform(-2, 2, shape).astype(dtype)
            before = x.copy()
            assert x.size * 9 <= models._SMALL_DENSE
            small = dense(x)
            layer = TimeDistributed(dense) if len(shape) == 3 else dense
            in_model = fastrnn.Sequential([layer])(x)
            monkeypatch.setattr(models, "_SMALL_DENSE", -1)
            large = dense(x)
            monkeypatch.undo()
            np.testing.assert_array_equal(x, before)
            assert small.shape == large.shape == shape[:-1] + (9,)
            assert small.dtype == large.dtype == np.dtype(dtype)
            np.testing.assert_allclose(small, large, **tol)
            np.testing.assert_array_equal(in_model, small)
            if activation in _DENSE_NUMPY:
                z = x.astype(np.float64) @ weights[0] + (weights[1] if use_bias else 0)
                np.testing.assert_allclose(small, _DENSE_NUMPY[activation](z), **tol)


def test_subclasses_that_override_call_run_their_call(rng):
    """A Dense or TimeDistributed subclass that overrides ``call`` (as Keras
    users do) runs its own ``call`` alone, in a model call and in a model
    stream, not the compiled Dense of the class it extends."""

    class Shifted(Dense):
        def call(self, x, mask=None):
            return super().call(x, mask) * 2.0 + 1.0

    class Halved(TimeDistributed):
        def call(self, x, mask=None):
            return super().call(x, mask) * 0.5

    lstm = fastrnn.LSTM(6, return_sequences=True)
    lstm.build((None, None, 4))
    lstm.set_weights([rng.uniform(-0.5, 0.5, w.shape).astype(np.float32)
                      for w in lstm.get_weights()])
    kernel = rng.uniform(-1, 1, (6, 3)).astype(np.float32)
    bias = rng.uniform(-1, 1, 3).astype(np.float32)
    x = rng.standard_normal((2, 5, 4)).astype(np.float32)
    with _reference():
        h = lstm(x)
    plain = np.tanh(h.astype(np.float64) @ kernel + bias)
    for layer, want in ((Shifted(3, activation="tanh"), plain * 2 + 1),
                        (Halved(Dense(3, activation="tanh")), plain * 0.5),
                        (Halved(Shifted(3, activation="tanh")), (plain * 2 + 1) * 0.5)):
        layer.set_weights([kernel, bias])
        assert h.size * 3 <= models._SMALL_DENSE  # where the compiled Dense would run
        np.testing.assert_allclose(layer(h), want, rtol=1e-5, atol=1e-6)
        model = fastrnn.Sequential([lstm, layer])
        stream = _on_stream_kernels(model.stream(batch_size=2))
        np.testing.assert_allclose(_want(model, x), want, rtol=1e-5, atol=1e-6)
        frames = np.stack([stream(x[:, t]) for t in range(x.shape[1])], axis=1)
        np.testing.assert_allclose(frames, want, rtol=1e-5, atol=1e-6)


def test_user_calls_get_mask_and_training_as_keras_passes_them(rng):
    """A user's ``call(self, inputs)`` or ``call(self, inputs, training=None)``
    runs as in Keras: ``mask`` and ``training=False`` by keyword, each only
    where the call takes it (a mask never arrives as ``training``), in a
    layer call, a model call behind a Masking layer, TimeDistributed and a
    model stream."""
    from fastrnn.models import Layer

    class Doubled(Dense):
        def call(self, inputs):
            return super().call(inputs) * 2.0

    class Inference(Dense):
        def call(self, inputs, training=None):
            assert training is False
            return super().call(inputs)

    class Plus(Layer):
        def call(self, inputs, *, mask=None, **kwargs):
            assert set(kwargs) == {"training"} and kwargs["training"] is False
            return inputs + (0.0 if mask is None else 1.0)

    kernel = rng.uniform(-1, 1, (4, 3)).astype(np.float32)
    bias = rng.uniform(-1, 1, 3).astype(np.float32)
    x = rng.uniform(0.5, 1.5, (2, 5, 4)).astype(np.float32)  # no step masked
    plain = x.astype(np.float64) @ kernel + bias
    for layer, want in ((Doubled(3), plain * 2), (Inference(3), plain)):
        layer.set_weights([kernel, bias])
        np.testing.assert_allclose(layer(x), want, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(TimeDistributed(layer)(x), want, rtol=1e-5, atol=1e-6)
        model = fastrnn.Sequential([Masking(0.0), layer])
        np.testing.assert_allclose(model(x), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(Plus()(x), x)
    np.testing.assert_array_equal(fastrnn.Sequential([Masking(0.0), Plus()])(x), x + 1.0)
    lstm = fastrnn.LSTM(4, return_sequences=True)
    lstm.build((None, None, 4))
    doubled = Doubled(3)
    doubled.set_weights([kernel, bias])
    model = fastrnn.Sequential([lstm, doubled, Plus()])
    stream = _on_stream_kernels(model.stream(batch_size=2))
    frames = np.stack([stream(x[:, t]) for t in range(x.shape[1])], axis=1)
    np.testing.assert_allclose(frames, _want(model, x), rtol=1e-5, atol=1e-6)


def test_a_frame_runs_every_layer_with_the_weights_of_one_moment(rng):
    """A set_weights that lands while a model stream's frame runs (injected
    here between the frame's reading of the weights and its recurrent layer)
    takes effect at the next frame, for every layer at once: never the new
    recurrent weights with the old Dense ones."""
    lstm = fastrnn.LSTM(4, return_sequences=True)
    lstm.build((None, None, 3))
    model = fastrnn.Sequential([lstm, Dense(2, activation="tanh")])
    shapes = [w.shape for w in lstm.get_weights()] + [(4, 2), (2,)]
    old = [rng.uniform(-1, 1, s).astype(np.float32) for s in shapes]
    new = [rng.uniform(-1, 1, s).astype(np.float32) for s in shapes]
    x = rng.standard_normal((1, 3)).astype(np.float32)
    want = {}
    for key, weights in (("old", old), ("new", new)):
        model.set_weights(weights)
        want[key] = _want(model, x[:, None])[:, 0]  # the model call: one set of weights
    model.set_weights(old)
    stream = _on_stream_kernels(model.stream(batch_size=1))
    kind, inner, detail = stream._steps[0]

    class SwapFirst:
        """The stream, with a set_weights just before it runs."""
        layer = inner.layer

        def __call__(self, frame):
            model.set_weights(new)
            return inner(frame)

    stream._steps[0] = (kind, SwapFirst(), detail)
    np.testing.assert_allclose(stream(x), want["old"], rtol=1e-6)
    stream._steps[0] = (kind, inner, detail)
    stream.reset()
    np.testing.assert_allclose(stream(x), want["new"], rtol=1e-6)


# Keras's definitions of activations whose naive float32 forms lose relative
# precision far below zero, in exact (Python float64 scalar) arithmetic
_EXACT = {
    "sigmoid": lambda z: 1.0 / (1.0 + math.exp(-z)),
    "silu": lambda z: z / (1.0 + math.exp(-z)),
    "gelu": lambda z: 0.5 * z * math.erfc(-z / math.sqrt(2.0)),
    "squareplus": lambda z: 2.0 / (math.sqrt(z * z + 4.0) - z),  # (no cancellation)
}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_dense_edge_values_do_not_depend_on_the_call_size(dtype):
    """relu of -inf is 0 and of NaN NaN, compiled (a small call) as with
    NumPy (a large one); sigmoid, silu, gelu and squareplus far below zero
    give Keras's values to the dtype's precision (sigmoid(-17) is 4.14e-8)
    in a call of one row and in a call of thousands, in a model call and in
    a model stream; a layer with no input features gives its bias."""
    rows = models._SMALL_DENSE + 1  # one unit, one feature: above the limit
    x1 = np.ones((1, 1), dtype)
    xn = np.ones((rows, 1), dtype)
    relu = Dense(3, activation="relu", dtype=dtype)
    relu.set_weights([np.ones((1, 3), dtype), np.array([-np.inf, np.nan, 1.0], dtype)])
    for got in (relu(x1)[0], relu(xn)[-1]):
        np.testing.assert_array_equal(got, np.array([0.0, np.nan, 2.0], dtype))
    # (float64: Keras's gelu, 0.5 * z * (1 + erf(z / sqrt(2))), cancels to about
    # 1e-10 relative at -5 in float64 itself)
    rtol = 4 * np.finfo(np.float32).eps if dtype == "float32" else 1e-9
    for activation, exact in _EXACT.items():
        dense = Dense(1, activation=activation, dtype=dtype)
        for z in (-5.0, -6.0, -10.0, -17.0, -30.0):
            if activation == "gelu" and z < -6.0:
                continue  # (below float32's smallest normal)
            want = np.array([exact(z)])
            dense.set_weights([np.full((1, 1), z, dtype), np.zeros(1, dtype)])
            np.testing.assert_allclose(dense(x1)[0], want, rtol=rtol, atol=0)
            np.testing.assert_allclose(dense(xn)[-1], want, rtol=rtol, atol=0)
    lstm = fastrnn.LSTM(2, return_sequences=True, dtype=dtype)
    lstm.build((None, None, 1))
    lstm.set_weights([np.zeros(w.shape, dtype) for w in lstm.get_weights()])
    head = Dense(1, activation="sigmoid", dtype=dtype)
    head.set_weights([np.zeros((2, 1), dtype), np.array([-17.0], dtype)])
    model = fastrnn.Sequential([lstm, head])
    x = np.zeros((1, 1, 1), dtype)
    want = np.array([_EXACT["sigmoid"](-17.0)])
    stream = _on_stream_kernels(model.stream(1))
    np.testing.assert_allclose(_want(model, x)[0, 0], want, rtol=rtol, atol=0)
    np.testing.assert_allclose(stream(x[:, 0])[0], want, rtol=rtol, atol=0)
    empty = Dense(2, dtype=dtype)
    empty.set_weights([np.zeros((0, 2), dtype), np.array([3.0, -1.0], dtype)])
    np.testing.assert_array_equal(empty(np.ones((4, 0), dtype)), np.tile([3.0, -1.0], (4, 1)))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("activation", sorted(set(models._CODES) | set(models._EXTRA_ACTIVATIONS)))
def test_per_step_layers_on_frames(activation, dtype, rng, monkeypatch):
    """Dense layers run compiled where their activation has a compiled form
    (the model's own NumPy forms of relu6, leaky_relu, ... run as they are),
    in and out of TimeDistributed. The model call runs its Dense layers
    with NumPy here (small ones run compiled too: see
    test_dense_calls_compiled_and_with_numpy_agree)."""
    monkeypatch.setattr(models, "_SMALL_DENSE", -1)
    model = fastrnn.Sequential([
        fastrnn.SimpleRNN(7, return_sequences=True, dtype=dtype),
        TimeDistributed(Dense(6, activation=activation, dtype=dtype, input_dim=7)),
        Dense(5, activation=activation, use_bias=False, dtype=dtype, input_dim=6),
    ])
    _randomize(model, rng, 4)
    x = rng.uniform(-2, 2, (2, 5, 4)).astype(dtype)
    stream = _on_stream_kernels(model.stream(batch_size=2))
    compiled = activation in ("softmax", "log_softmax") \
        or activation not in models._EXTRA_ACTIVATIONS
    assert [kind == models._DENSE for kind, _, _ in stream._steps] == [False] + [compiled] * 2
    for t in range(5):
        np.testing.assert_allclose(stream(x[:, t]), _want(model, x[:, :t + 1])[:, t],
                                   **TOL[dtype])
    stream.reset()
    np.testing.assert_allclose(stream(x), _want(model, x), **TOL[dtype])


def test_token_ids_through_an_embedding(rng):
    model = fastrnn.Sequential([
        Embedding(11, 4),
        fastrnn.LSTM(6),
        Dense(2, input_dim=6),
    ])
    _randomize(model, rng, 0)
    ids = rng.integers(0, 11, (2, 7))
    stream = _on_stream_kernels(model.stream(batch_size=2))
    for t in range(7):
        np.testing.assert_allclose(stream(ids[:, t]), _want(model, ids[:, :t + 1]),
                                   **TOL["float32"])
    with pytest.raises(ValueError, match="indices"):
        stream(np.array([3, 11]))
    one = model.stream()  # batch 1: one token id at a time
    for t in range(3):
        y = one(ids[0, t])
        assert y.shape == (2,)
        np.testing.assert_allclose(y, _want(model, ids[:1, :t + 1])[0], **TOL["float32"])


@pytest.mark.parametrize("mode", ["bfloat16", "int8"])
def test_a_quantized_model_streams_its_quantized_weights(mode, rng):
    model = _classifier("float32", rng, D=4).quantize(mode)
    x = rng.uniform(-2, 2, (1, 6, 4)).astype(np.float32)
    stream = _on_stream_kernels(model.stream())
    for t in range(6):  # the reference runs the same quantized weights
        np.testing.assert_allclose(stream(x[:, t]), _want(model, x[:, :t + 1]), rtol=1e-4,
                                   atol=1e-5)


def test_states_reset_and_assignment(rng):
    model = _classifier("float32", rng)
    x = rng.uniform(-2, 2, (2, 6, 5)).astype(np.float32)
    stream = model.stream(batch_size=2)
    stream(x[:, :3])
    saved = stream.states
    assert [len(s) for s in saved] == [2, 1]  # LSTM [h, c], GRU [h]
    after = stream(x[:, 3:])
    stream.states = saved
    np.testing.assert_array_equal(stream(x[:, 3:]), after)
    stream.reset()
    np.testing.assert_allclose(stream(x[:, 3:]), _want(model, x[:, 3:]), **TOL["float32"])
    with pytest.raises(ValueError, match="one entry per recurrent layer"):
        stream.states = saved[:1]
    before = stream.states
    with pytest.raises(ValueError, match=r"expected shape \(2, 9\)"):  # the GRU's h
        stream.states = [saved[0], [np.ones((2, 8))]]
    for a, b in zip(_nest.flatten(before), _nest.flatten(stream.states)):
        np.testing.assert_array_equal(a, b)  # the LSTM's states were put back


def test_a_masked_frame_is_refused_before_any_state_changes(rng):
    model = fastrnn.Sequential([Masking(0.0), fastrnn.LSTM(5)])
    _randomize(model, rng, 3)
    x = rng.uniform(-2, 2, (2, 4, 3)).astype(np.float32)
    stream = model.stream(batch_size=2)
    stream(x[:, 0])
    before = stream.states
    padded = x[:, 1].copy()
    padded[1] = 0.0  # row 1 is padding
    with pytest.raises(ValueError, match="masks steps"):
        stream(padded)
    for a, b in zip(before[0], stream.states[0]):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(stream(x[:, 1]), _want(model, x[:, :2]), **TOL["float32"])


def test_models_that_cannot_stream_and_bad_input(rng):
    bi = fastrnn.Sequential([fastrnn.Bidirectional(fastrnn.LSTM(3)), Dense(2)])
    with pytest.raises(TypeError, match="Bidirectional"):
        bi.stream()
    with pytest.raises(ValueError, match="no recurrent layer"):
        fastrnn.Sequential([Dense(2)]).stream()
    with pytest.raises(ValueError, match="masks steps after a recurrent layer"):
        fastrnn.Sequential([fastrnn.LSTM(3, return_sequences=True), Masking()]).stream()
    with pytest.raises(ValueError, match="returns one step"):
        fastrnn.Sequential([fastrnn.LSTM(3), fastrnn.GRU(2)]).stream()
    with pytest.raises(ValueError, match="batch_size"):
        fastrnn.Sequential([fastrnn.LSTM(3)]).stream(batch_size=0)
    model = _classifier("float32", rng)
    stream = model.stream(batch_size=2)
    with pytest.raises(ValueError, match=r"x: expected a frame \(batch, features\)"):
        stream(np.zeros((2, 1, 1, 5), np.float32))
    with pytest.raises(ValueError, match=r"expects features \(5,\), got \(4,\)"):
        stream(np.zeros((2, 4), np.float32))


def test_two_threads_at_once_raise(rng):
    model = _classifier("float32", rng)
    stream = model.stream(batch_size=1)
    x = rng.uniform(-1, 1, (1, 5)).astype(np.float32)
    stream(x)
    inside, release = threading.Event(), threading.Event()
    dropout = model.layers[3]
    plain = type(dropout).call

    def paused(self, *args):  # the first call waits inside the model
        inside.set()
        release.wait(10)
        return plain(self, *args)

    dropout.call = paused.__get__(dropout)
    worker = threading.Thread(target=stream, args=(x,))
    worker.start()
    try:
        assert inside.wait(10)
        with pytest.raises(StreamBusyError):
            stream(x)
        # the frame has run the LSTM and not the GRU yet: reading, saving,
        # setting or zeroing the states now would mix two frames
        with pytest.raises(StreamBusyError, match="ModelStream.states"):
            stream.states
        with pytest.raises(StreamBusyError, match="ModelStream.states"):
            stream.states = None
        with pytest.raises(StreamBusyError, match="ModelStream.reset"):
            stream.reset()
        with pytest.raises(StreamBusyError):
            fastrnn.save(stream, __import__("io").BytesIO())
    finally:
        release.set()
        worker.join(10)
        del dropout.call
    stream(x)  # free again
    stream.states = stream.states


@pytest.mark.parametrize("mode", [None, "int8"])
def test_save_and_load_keep_the_model_and_every_state(tmp_path, rng, mode):
    model = _classifier("float32", rng)
    if mode:
        model.quantize(mode)
    x = rng.uniform(-2, 2, (2, 7, 5)).astype(np.float32)
    stream = _on_stream_kernels(model.stream(batch_size=2, threads=1))
    stream(x[:, :3])
    path = tmp_path / "live.fastrnn"
    fastrnn.save(stream, path)
    back = fastrnn.load(path)
    assert isinstance(back, ModelStream) and back.batch_size == 2
    assert back.streams[0].threads == 1 and back.model.quantization_mode == mode
    _on_stream_kernels(back)
    for a, b in zip(_nest.flatten(stream.states), _nest.flatten(back.states)):
        np.testing.assert_array_equal(a, b)
    got = back(x[:, 3:])
    np.testing.assert_array_equal(got, stream(x[:, 3:]))  # the round trip is exact
    np.testing.assert_allclose(got, _want(model, x), rtol=1e-4, atol=1e-5)
    with pytest.raises(TypeError, match="fastrnn.save"):
        pickle.dumps(back)


def test_a_file_whose_states_do_not_fit_its_batch_size_is_refused(tmp_path, rng):
    stream = _classifier("float32", rng).stream(batch_size=1)
    path = tmp_path / "live.fastrnn"
    fastrnn.save(stream, path)
    with zipfile.ZipFile(path) as z:
        header, blob = json.loads(z.read("fastrnn.json")), z.read("arrays.npz")
    obj = header["object"]
    obj["config"]["batch_size"] = 10**6  # states for one row: the stream is never made
    header["object_sha256"] = hashlib.sha256(
        json.dumps(obj, sort_keys=True, allow_nan=True).encode()).hexdigest()
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("fastrnn.json", json.dumps(header))
        z.writestr("arrays.npz", blob)
    with pytest.raises(ValueError, match=r"expected \(1000000, 7\) for batch_size=1000000"):
        fastrnn.load(path)


def test_a_keras_model_streams_as_keras_runs_it(rng):
    """Against live Keras 3: each frame's output is Keras's output on the
    sequence up to that frame."""
    keras = pytest.importorskip("keras")
    kmodel = keras.Sequential([
        keras.Input((None, 6)),
        keras.layers.Dense(7, activation="relu"),
        keras.layers.LSTM(9, return_sequences=True),
        keras.layers.GRU(5),
        keras.layers.Dense(4, activation="softmax"),
    ])
    kmodel.set_weights([rng.uniform(-0.6, 0.6, w.shape).astype(np.float32)
                        for w in kmodel.get_weights()])
    stream = fastrnn.from_keras(kmodel).stream(batch_size=2)
    x = rng.uniform(-2, 2, (2, 8, 6)).astype(np.float32)
    for t in range(8):
        want = keras.ops.convert_to_numpy(kmodel(x[:, :t + 1]))
        np.testing.assert_allclose(stream(x[:, t]), want, atol=2e-5, rtol=1e-5)


def test_consecutive_recurrent_layers_stream_as_one_stack(rng):
    stacked = fastrnn.RNN([fastrnn.GRUCell(4), fastrnn.SimpleRNNCell(6)],
                          return_sequences=True)
    model = fastrnn.Sequential([
        fastrnn.LSTM(7, return_sequences=True),
        stacked,
        fastrnn.GRU(5, return_state=True),
        Dense(3, activation="softmax", input_dim=5),
        ])
    _randomize(model, rng, 3)
    x = rng.uniform(-2, 2, (2, 6, 3)).astype(np.float32)
    stream = _on_stream_kernels(model.stream(batch_size=2))
    assert len(stream.streams) == 1 and len(stream.streams[0].layer.cells) == 4
    for t in range(3):
        np.testing.assert_allclose(stream(x[:, t]), _want(model, x[:, :t + 1]),
                                   **TOL["float32"])
    states = stream.states  # per layer of the model, as each layer's own stream gives them
    assert [np.shape(s) for s in _nest.flatten(states)] == [(2, 7)] * 2 + [(2, 4), (2, 6), (2, 5)]
    assert len(states) == 3 and len(states[0]) == 2 and len(states[1]) == 2
    after = stream(x[:, 3:])
    stream.states = states
    np.testing.assert_array_equal(stream(x[:, 3:]), after)
    # the stack shares the layers' cells: new weights reach it
    gru = model.layers[2]
    gru.set_weights([rng.uniform(-0.7, 0.7, w.shape) for w in gru.get_weights()])
    stream.reset()
    np.testing.assert_allclose(stream(x), _want(model, x), **TOL["float32"])


def test_layers_that_differ_stream_apart(rng):
    model = fastrnn.Sequential([
        fastrnn.LSTM(4, return_sequences=True),
        fastrnn.GRU(3, nan_policy="raise"),
    ])
    _randomize(model, rng, 2)
    stream = _on_stream_kernels(model.stream())
    assert len(stream.streams) == 2
    x = rng.uniform(-2, 2, (1, 4, 2)).astype(np.float32)
    np.testing.assert_allclose(stream(x), _want(model, x), **TOL["float32"])


def test_a_failed_frame_leaves_every_state_and_names_the_entry(rng):
    """A frame refused by a later recurrent layer (NaN reaching a layer with
    nan_policy="raise") leaves every layer's state as it was, as the message
    says; a bad ``states`` entry is named by its place in the model's list."""
    lstm = fastrnn.LSTM(4, return_sequences=True)
    lstm.build((None, None, 3))
    gru = fastrnn.GRU(3, nan_policy="raise")
    gru.build((None, None, 4))
    for layer in (lstm, gru):
        layer.set_weights([rng.uniform(-0.5, 0.5, w.shape).astype(np.float32)
                           for w in layer.get_weights()])
    dense = Dense(4)
    dense.set_weights([np.eye(4, dtype=np.float32), np.zeros(4, np.float32)])
    stream = fastrnn.Sequential([lstm, dense, gru]).stream(batch_size=1)
    stream(rng.standard_normal((1, 3)).astype(np.float32))
    before = stream.states
    with pytest.raises(ValueError, match="state is unchanged"):
        stream(np.full((1, 3), np.nan, np.float32))
    for got, want in zip(_nest.flatten(stream.states), _nest.flatten(before)):
        np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match=r"^states\[1\]: .*\(1, 3\), got \(1, 5\)"):
        stream.states = [[np.zeros((1, 4), np.float32)] * 2, np.zeros((1, 5), np.float32)]
    for got, want in zip(_nest.flatten(stream.states), _nest.flatten(before)):
        np.testing.assert_array_equal(got, want)


def test_a_layer_of_another_dtype_between_recurrent_layers_streams_as_the_model_runs(rng):
    """float32 LSTM -> float64 Dense -> float32 GRU: the model casts between
    layers; the stream refused the Dense's float64 output, blaming x, after
    the LSTM had moved on."""
    model = fastrnn.Sequential([fastrnn.LSTM(7, return_sequences=True),
                                Dense(6, input_dim=7, dtype="float64"), fastrnn.GRU(4)])
    _randomize(model, rng, 5)
    x = rng.uniform(-1, 1, (2, 3, 5)).astype(np.float32)
    stream = _on_stream_kernels(model.stream(batch_size=2))
    for t in range(3):
        y = stream(np.ascontiguousarray(x[:, t]))
        assert y.dtype == np.float32
        np.testing.assert_allclose(y, _want(model, x[:, :t + 1]), **TOL["float32"])
