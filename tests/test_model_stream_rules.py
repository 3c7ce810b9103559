"""Model stream rules (``Sequential.stream``): what a stream refuses when it
is made, that a failed frame or chunk leaves every state as it was, one
dtype rule for the caller's frames whatever identity layers come first,
chunks of no steps, and ``Embedding(mask_zero=True)``'s mask of float ids.

The streams run on the stream kernels (layers on ``"auto"``); every
expected value comes from ``model(x)`` on the reference backend (``_want``:
``fastrnn.set_backend("reference")`` around the call, after the stream is
made) or from live Keras 3, never from a stream. Random weights and
inputs, odd sizes.
"""

import warnings

import numpy as np
import pytest

import fastrnn
from fastrnn import _nest
from fastrnn.models import Dense, Dropout, Embedding, Masking, TimeDistributed

TOL = dict(rtol=2e-5, atol=2e-5)


def _want(model, x):
    """An expected value: ``model(x)`` with its recurrent layers on the
    reference backend."""
    fastrnn.set_backend("reference")
    try:
        assert {layer.backend for layer in model.layers
                if isinstance(layer, fastrnn.RNN)} == {"reference"}
        return model(x)
    finally:
        fastrnn.set_backend(None)


def _on_stream_kernels(stream):
    assert [s.backend for s in stream.streams] == ["stream"] * len(stream.streams), \
        [s.backend_reason for s in stream.streams]
    return stream


def _weights(rng, *shapes):
    return [rng.uniform(-0.8, 0.8, s).astype(np.float32) for s in shapes]


def _lstm_weights(rng, D, H):
    return _weights(rng, (D, 4 * H), (H, 4 * H), (4 * H,))


def _same_states(a, b):
    a, b = _nest.flatten(a), _nest.flatten(b)
    assert len(a) == len(b)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)


# ----- models no call can run are refused when the stream is made -----

def test_timedistributed_after_a_layer_that_returns_one_step_is_refused(rng):
    """TimeDistributed needs a time axis, which a recurrent layer with
    return_sequences=False does not give: the model call raises, and the
    stream is refused when made (it took frames the model cannot run, and a
    chunk failed after the LSTM's state had moved), naming both layers."""
    D, H = 3, 5
    model = fastrnn.Sequential([fastrnn.LSTM(H, name="encoder"),
                                TimeDistributed(Dense(4), name="per_step")])
    model.set_weights(_lstm_weights(rng, D, H) + _weights(rng, (H, 4), (4,)))
    x = rng.standard_normal((2, 7, D)).astype(np.float32)
    with pytest.raises(ValueError, match="per_step"):
        model(x)
    with pytest.raises(ValueError, match=r"layer 'per_step' is TimeDistributed and follows "
                                         r"recurrent layer 'encoder'.*return_sequences=False"):
        model.stream(batch_size=2)


def test_layers_whose_input_size_differs_from_the_layer_before_are_refused(rng):
    """A Dense whose kernel takes another number of features than the
    recurrent layer before gives, and a recurrent layer built for another
    number than the Dense before gives: the model call raises, and the
    stream is refused when made (its first frame failed after the first
    LSTM's state had moved), naming both layers."""
    D, H = 3, 5
    dense = fastrnn.Sequential([fastrnn.LSTM(H, return_sequences=True, name="lstm"),
                                Dense(4, name="head")])
    dense.set_weights(_lstm_weights(rng, D, H) + _weights(rng, (H + 1, 4), (4,)))
    gru = fastrnn.Sequential([fastrnn.LSTM(H, return_sequences=True, name="lstm"),
                              Dense(6, name="proj"), fastrnn.GRU(2, name="gru")])
    gru.set_weights(_lstm_weights(rng, D, H) + _weights(rng, (H, 6), (6,))
                    + _weights(rng, (7, 6), (2, 6), (2, 6)))  # the GRU built for 7
    x = rng.standard_normal((2, 4, D)).astype(np.float32)
    for model, message in (
            (dense, r"layer 'head' takes 6 input features, and layer 'lstm' before it gives 5"),
            (gru, r"layer 'gru' takes 7 input features, and layer 'proj' before it gives 6")):
        with pytest.raises(ValueError):
            model(x)
        with pytest.raises(ValueError, match=message):
            model.stream(batch_size=2)


# ----- a frame or chunk that fails leaves every state as it was -----

class _Gate(fastrnn.models.Layer):
    """A user's layer that raises while ``closed``, else passes ``x`` on."""

    closed = False

    def call(self, x, mask=None):
        if self.closed:
            raise RuntimeError("gate closed")
        return x


def test_a_frame_that_fails_after_a_recurrent_layer_leaves_every_state(rng):
    """A frame or chunk that fails in a layer after the first recurrent
    layer (a user's layer raising any exception, a Dense without weights)
    leaves every recurrent layer's state as before it (the README's
    promise), after weights set since the stream was made too; the frames
    after it give the model's output on the frames that did run."""
    D, H, G = 3, 5, 4
    gate = _Gate()
    model = fastrnn.Sequential([fastrnn.LSTM(H, return_sequences=True), gate,
                                fastrnn.GRU(G, return_sequences=True, nan_policy="raise")])
    model.set_weights(_lstm_weights(rng, D, H) + _weights(rng, (H, 3 * G), (G, 3 * G),
                                                          (2, 3 * G)))
    x = rng.standard_normal((2, 9, D)).astype(np.float32)
    stream = _on_stream_kernels(model.stream(batch_size=2))
    assert len(stream.streams) == 2
    stream(x[:, :2])
    for t in range(2, 5):  # steps 0 to t - 1 have run
        before = stream.states
        gate.closed = True
        for failing in (x[:, t], x[:, t:t + 3]):
            with pytest.raises(RuntimeError, match="gate closed"):
                stream(failing)
            _same_states(stream.states, before)
        gate.closed = False
        np.testing.assert_allclose(stream(x[:, t]), _want(model, x[:, :t + 1])[:, t], **TOL)
        # new weights (the streams pack them again, in new state arrays): a
        # failed frame after them leaves the states as well
        model.layers[0].set_weights(model.layers[0].get_weights())
    # a Dense without weights after the recurrent layer: a ValueError
    head = Dense(3)
    headed = fastrnn.Sequential([model.layers[0], head])
    stream = _on_stream_kernels(headed.stream(batch_size=2))
    before = stream.states
    with pytest.raises(ValueError, match="has no weights"):
        stream(x[:, 0])
    _same_states(stream.states, before)
    head.set_weights(_weights(rng, (H, 3), (3,)))
    np.testing.assert_allclose(stream(x[:, :4]), _want(headed, x[:, :4]), **TOL)


# ----- the caller's frames: one dtype rule -----

@pytest.mark.parametrize("front", ["none", "dropout", "masking", "both"])
def test_the_caller_dtype_rule_does_not_depend_on_identity_layers_in_front(rng, front):
    """A float32 GRU's stream refuses integer and float64 frames (streams
    never cast per call), alone and behind Dropout or Masking, which give
    the caller's values as they are (a model call refuses integer inputs
    behind them too); the refused frame leaves the state; float32 frames
    give the model's output."""
    D, H = 3, 4
    pre = {"none": [], "dropout": [Dropout(0.2)], "masking": [Masking(-9.0)],
           "both": [Dropout(0.2), Masking(-9.0)]}[front]
    model = fastrnn.Sequential(pre + [fastrnn.GRU(H, return_sequences=True)])
    model.set_weights(_weights(rng, (D, 3 * H), (H, 3 * H), (2, 3 * H)))
    ids = rng.integers(1, 5, (2, 5, D))
    with pytest.raises(TypeError):
        model(ids)
    x = rng.standard_normal((2, 5, D)).astype(np.float32)
    stream = _on_stream_kernels(model.stream(batch_size=2))
    stream(x[:, 0])
    before = stream.states
    for bad in (ids[:, 1], x[:, 1].astype(np.float64), ids[:, 1:3]):
        with pytest.raises(TypeError, match="streams never cast per call"):
            stream(bad)
        _same_states(stream.states, before)
    np.testing.assert_allclose(stream(x[:, 1:]), _want(model, x)[:, 1:], **TOL)


# ----- chunks of no steps -----

def test_a_chunk_of_no_steps(rng):
    """A chunk of 0 steps has no last step: a model whose output is the last
    recurrent layer's last step (LSTM -> softmax Dense; an Embedding first)
    refuses it, where it returned the head on zeros (softmax of its bias),
    and the state stays; a model that returns sequences returns an empty
    sequence and keeps the state."""
    D, H = 3, 5
    last = fastrnn.Sequential([fastrnn.LSTM(H), Dense(3, activation="softmax")])
    last.set_weights(_lstm_weights(rng, D, H) + _weights(rng, (H, 3), (3,)))
    ids = fastrnn.Sequential([Embedding(7, D), fastrnn.LSTM(H), Dense(2)])
    ids.set_weights(_weights(rng, (7, D)) + _lstm_weights(rng, D, H)
                    + _weights(rng, (H, 2), (2,)))
    x = rng.standard_normal((1, 6, D)).astype(np.float32)
    tokens = rng.integers(0, 7, (1, 6))
    for model, inputs in ((last, x), (ids, tokens)):
        stream = _on_stream_kernels(model.stream())
        stream(inputs[:, :4])
        before = stream.states
        with pytest.raises(ValueError, match="a chunk of 0 steps .* has no last step"):
            stream(inputs[:, 4:4])
        _same_states(stream.states, before)
        np.testing.assert_allclose(stream(inputs[:, 4:5]), _want(model, inputs[:, :5]), **TOL)
    seq = fastrnn.Sequential([fastrnn.LSTM(H, return_sequences=True),
                              Dense(3, activation="softmax")])
    seq.set_weights(_lstm_weights(rng, D, H) + _weights(rng, (H, 3), (3,)))
    x = rng.standard_normal((2, 5, D)).astype(np.float32)
    stream = _on_stream_kernels(seq.stream(batch_size=2))
    stream(x[:, :2])
    empty = stream(x[:, 2:2])
    assert empty.shape == (2, 0, 3) and empty.dtype == np.float32
    np.testing.assert_allclose(stream(x[:, 2:]), _want(seq, x)[:, 2:], **TOL)


# ----- Embedding(mask_zero=True) with float ids -----

def test_float_ids_are_masked_on_their_values_as_keras_masks_them(rng):
    """Keras's Embedding(mask_zero=True) masks ``inputs != 0`` on the values
    given: a float id 0.5 or -0.4 is not masked (and embeds row 0, the id
    truncated). fastrnn's mask, model call and model stream give Keras's
    values; a NaN id is the ValueError that says so, with no NumPy warning
    on the way."""
    keras = pytest.importorskip("keras")
    V, E, H = 7, 3, 4
    kmodel = keras.Sequential([keras.Input((None,), dtype="float32"),
                               keras.layers.Embedding(V, E, mask_zero=True),
                               keras.layers.LSTM(H, return_sequences=True)])
    kmodel.set_weights([rng.uniform(-0.8, 0.8, w.shape).astype(np.float32)
                        for w in kmodel.get_weights()])
    model = fastrnn.from_keras(kmodel)
    ids = np.array([[2.0, 0.5, 3.7, -0.4, 1.0, 0.0],
                    [0.25, 6.5, 0.0, 4.0, -0.75, 5.0]], np.float32)
    kmask = keras.ops.convert_to_numpy(kmodel.layers[0].compute_mask(
        keras.ops.convert_to_tensor(ids)))
    embedding = next(layer for layer in model.layers if isinstance(layer, Embedding))
    np.testing.assert_array_equal(embedding.compute_mask(ids, None), kmask)
    want = keras.ops.convert_to_numpy(kmodel(ids))
    np.testing.assert_allclose(_want(model, ids), want, **TOL)
    ones = ids[:, :2]  # no id 0 (the stream takes no padding)
    stream = _on_stream_kernels(model.stream(batch_size=2))
    for t in range(ones.shape[1]):
        np.testing.assert_allclose(stream(ones[:, t]),
                                   keras.ops.convert_to_numpy(kmodel(ones[:, :t + 1]))[:, t],
                                   **TOL)
    bad = ids.copy()
    bad[1, 3] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # (a NumPy RuntimeWarning would be an error here)
        with pytest.raises(ValueError, match="indices must be finite"):
            model(bad)
        with pytest.raises(ValueError, match="indices must be finite"):
            stream(bad[:, 3])


@pytest.mark.skipif(fastrnn.get_num_threads() < 2, reason="threads=2 needs two threads allowed")
def test_threads2_refused_for_a_stack_of_two_weight_formats_says_so(rng):
    """Consecutive recurrent layers stream as one stack, whose two-core split
    needs one weight format: the refusal names the formats it found."""
    below = fastrnn.LSTM(40, return_sequences=True)
    below.build((1, None, 8))
    below.quantize("int8")
    above = fastrnn.LSTM(40)
    above.build((1, None, 40))
    with pytest.raises(ValueError, match=r"threads=2: every frame of this stack \(its layers' "
                                         r"weights are of 2 formats: float32, int8\)"):
        fastrnn.Sequential([below, above]).stream(threads=2)
