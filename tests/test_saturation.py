"""Saturated gates over long sequences: a unit that holds its memory holds it.

An LSTM with forget bias +20 and input bias -20 keeps its cell state, and a
GRU whose update gate's pre-activation is +20 keeps its state: in float32
``1 / (1 + exp(-20))`` is exactly 1 (``1 - sigmoid(20) = 2e-9`` is below half
the spacing of floats under 1), so each step carries the state over to the
bit. The exact (float64) gates let the state drift by ``2e-9`` per step;
float32 gates must stay within float32 rounding of them, so after ``T``
steps a float32 path may be about ``T * 2**-25`` from the float64 loop
below and no further; where the gates are float32 (see ``_float32_gates``)
the state is carried to the bit. Every backend under test and the stream
kernels (frame by frame and in chunks) run the same weights.
"""

from __future__ import annotations

import numpy as np
import pytest

import fastrnn

from conftest import layer_backends

STEPS = (1000, 30000)
PATHS = [(b, "layer") for b in layer_backends()] + [("cpu", "stream frames"),
                                                    ("cpu", "stream chunks")]


def _sig(z):
    return 1.0 / (1.0 + np.exp(-z))


def _lstm64(x, W, U, b, h, c):
    """The float64 loop: Keras's LSTM, gates i, f, c, o."""
    H = h.shape[1]
    for t in range(x.shape[1]):
        z = x[:, t] @ W + h @ U + b
        i, f, o = _sig(z[:, :H]), _sig(z[:, H:2 * H]), _sig(z[:, 3 * H:])
        c = f * c + i * np.tanh(z[:, 2 * H:3 * H])
        h = o * np.tanh(c)
    return h, c


def _gru64(x, W, U, b, h, reset_after):
    """The float64 loop: Keras's GRU, gates z, r, h."""
    H = h.shape[1]
    for t in range(x.shape[1]):
        xz = x[:, t] @ W + b[0]
        if reset_after:
            hz = h @ U + b[1]
            z, r = _sig(xz[:, :H] + hz[:, :H]), _sig(xz[:, H:2 * H] + hz[:, H:2 * H])
            hh = np.tanh(xz[:, 2 * H:] + r * hz[:, 2 * H:])
        else:
            hz = h @ U[:, :2 * H]
            z, r = _sig(xz[:, :H] + hz[:, :H]), _sig(xz[:, H:2 * H] + hz[:, H:])
            hh = np.tanh(xz[:, 2 * H:] + (r * h) @ U[:, 2 * H:])
        h = z * h + (1 - z) * hh
    return h


def _run(layer, path, x, states):
    """Final states of ``layer`` over ``x`` from ``states``, on ``path``."""
    if path == "layer":
        return layer(x, initial_state=states)[1:]
    stream = layer.stream(batch_size=x.shape[0])
    stream(x[:, :1])  # ready; then start from the given states
    stream.states = states
    if path == "stream chunks":
        for t0 in range(0, x.shape[1], 997):
            stream(np.ascontiguousarray(x[:, t0:t0 + 997]))
    else:
        for t in range(x.shape[1]):
            stream(np.ascontiguousarray(x[:, t]))
    return stream.states


def _float32_gates(backend, path, packed):
    """Whether the path computes its gates in float32 (the cpu backend's
    packed kernels: LSTM, GRU with reset_after; the stream kernels). The
    generic and CUDA kernels evaluate the scalar sigmoid in float64, as the
    reference does: their state follows the exact drift (2e-9 a step)."""
    return backend == "cpu" and (packed or path != "layer")


def _within_rounding(got, want, T):
    """float32 gates, each within 2**-25 of the exact one: a state of size
    ``|s|`` (its update adds at most 1) moves at most ``T * 2**-25 * (|s| + 1)``
    from the float64 loop's, plus the rounding of the state itself."""
    bound = T * 2.0**-25 * (np.abs(want) + 1) + 8 * 2.0**-24 * np.abs(want)
    err = np.abs(np.asarray(got, np.float64) - want)
    assert (err <= bound).all(), f"max error {err.max():.3g} over a bound of {bound.min():.3g}"


@pytest.mark.parametrize("T", STEPS)
@pytest.mark.parametrize("backend,path", PATHS)
@pytest.mark.parametrize("perturbed", [False, True], ids=["issue", "random"])
def test_lstm_holds_its_cell_state(rng, backend, path, T, perturbed):
    """H=16, forget bias +20, input bias -20, output bias +20, c0 = 1: the
    issue's case (W = U = 0, zero inputs) and the same with small random
    weights, inputs and cell states (every gate still saturated)."""
    B, D, H = 2, 3, 16
    scale = 0.005 if perturbed else 0.0
    W = rng.uniform(-scale, scale, (D, 4 * H)).astype(np.float32)
    U = rng.uniform(-scale, scale, (H, 4 * H)).astype(np.float32)
    b = np.zeros(4 * H, np.float32)
    b[:H], b[H:2 * H], b[3 * H:] = -20, 20, 20
    if perturbed:
        b[2 * H:3 * H] = rng.uniform(-1, 1, H)
    x = rng.uniform(-1, 1, (B, T, D)).astype(np.float32) if perturbed \
        else np.zeros((B, T, D), np.float32)
    h0 = rng.uniform(-1, 1, (B, H)).astype(np.float32) if perturbed else np.zeros((B, H), np.float32)
    c0 = rng.uniform(0.5, 1.5, (B, H)).astype(np.float32) if perturbed else np.ones((B, H), np.float32)

    layer = fastrnn.LSTM(H, return_state=True, backend=backend)
    layer.build((B, None, D))
    layer.set_weights([W, U, b])
    h, c = _run(layer, path, x, [h0, c0])
    h64, c64 = _lstm64(x.astype(np.float64), W.astype(np.float64), U.astype(np.float64),
                       b.astype(np.float64), h0.astype(np.float64), c0.astype(np.float64))
    _within_rounding(c, c64, T)
    _within_rounding(h, h64, T)
    if _float32_gates(backend, path, True):  # f = 1 and o = 1 exactly
        np.testing.assert_array_equal(c, c0)
        np.testing.assert_allclose(h, np.tanh(c0.astype(np.float64)), rtol=2.5 * 2.0**-23)


@pytest.mark.parametrize("T", STEPS)
@pytest.mark.parametrize("backend,path", PATHS)
@pytest.mark.parametrize("reset_after", [True, False], ids=["reset_after", "reset_before"])
def test_gru_holds_its_state(rng, backend, path, T, reset_after):
    """Update gate pre-activation +20 (its input and recurrent columns zero),
    random reset and candidate weights, inputs and initial state."""
    B, D, H = 2, 4, 16
    W = rng.uniform(-0.5, 0.5, (D, 3 * H)).astype(np.float32)
    U = rng.uniform(-0.5, 0.5, (H, 3 * H)).astype(np.float32)
    W[:, :H] = 0
    U[:, :H] = 0
    b = rng.uniform(-0.5, 0.5, (2, 3 * H)).astype(np.float32)
    b[0, :H], b[1, :H] = 20, 0
    if not reset_after:
        b = b[0]
    x = rng.uniform(-1, 1, (B, T, D)).astype(np.float32)
    h0 = rng.uniform(-1, 1, (B, H)).astype(np.float32)

    layer = fastrnn.GRU(H, return_state=True, reset_after=reset_after, backend=backend)
    layer.build((B, None, D))
    layer.set_weights([W, U, b])
    (h,) = _run(layer, path, x, [h0])
    b64 = np.asarray(b, np.float64)
    h64 = _gru64(x.astype(np.float64), W.astype(np.float64), U.astype(np.float64),
                 b64 if reset_after else np.stack([b64, np.zeros_like(b64)]),
                 h0.astype(np.float64), reset_after)
    _within_rounding(h, h64, T)
    if _float32_gates(backend, path, reset_after):  # z = 1: h' = 1 * h + 0 * hh = h
        np.testing.assert_array_equal(h, h0)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("backend", layer_backends())
def test_relu_of_minus_infinity_is_zero(backend, dtype):
    """relu(-inf) = 0 and relu(NaN) = NaN, as Keras's relu (max(x, 0)) and
    NumPy's np.maximum: the scalar forms (float64 generic kernels, CUDA)
    once gave NaN for -inf (0 * -inf)."""
    layer = fastrnn.SimpleRNN(3, activation="relu", backend=backend, dtype=dtype)
    layer.set_weights([np.ones((1, 3), dtype), np.zeros((3, 3), dtype),
                       np.array([-np.inf, np.nan, 1.0], dtype)])
    got = layer(np.ones((2, 1, 1), dtype))
    np.testing.assert_array_equal(got, np.tile(np.array([0.0, np.nan, 2.0], dtype), (2, 1)))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("backend", layer_backends())
def test_squareplus_of_huge_inputs(backend, dtype):
    """squareplus(x) = (x + sqrt(x * x + 4)) / 2 is x for huge x and 0 (to
    rounding: 1/|x|) for huge negative x; the compiled float32 form computed
    x * x in float32 and gave inf from |x| = 1.8e19."""
    x = np.array([1e20, -1e20, 1e30, -1e30, 3e18, -3e18, 2.0], dtype)
    want = np.array([1e20, 0.0, 1e30, 0.0, 3e18, 0.0, 1.0 + np.sqrt(2.0)], np.float64)
    layer = fastrnn.SimpleRNN(1, activation="squareplus", backend=backend, dtype=dtype)
    layer.set_weights([np.ones((1, 1), dtype), np.zeros((1, 1), dtype), np.zeros(1, dtype)])
    got = layer(x[:, None, None])[:, 0]
    np.testing.assert_allclose(got, want.astype(dtype), rtol=1e-6, atol=1e-18)
