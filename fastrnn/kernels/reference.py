"""The ``reference`` backend: NumPy, one step at a time, obviously correct.

This module is the oracle every fast backend is tested against, and it is
itself tested against the real Keras, TensorFlow 1 and PyTorch (golden
vectors in ``tests/data``, live tests where those frameworks are
installed). It implements the contract written in
:mod:`fastrnn.kernels`; read it there. It computes in float64 whatever the
input dtype and rounds once when writing the outputs, so it is the most
accurate of the backends, and it accepts any Python callable as an
activation. Quantized weights run as the float32 values they stand for;
``"int8_dynamic"`` and ``"bfloat16_dynamic"`` records also round each row's
activations before each product, as :func:`fastrnn.kernels.quantize`
describes.
"""

from __future__ import annotations

import numpy as np

from ..activations import apply
from . import _math, bfloat16_values, quantize_rows

NAME = "reference"


def _clip(x, limit):
    return x if limit is None or limit < 0 else np.clip(x, -limit, limit)


# The gate updates of _math on NumPy arrays, with activations that also
# accept a Python callable.
_, _lstm_update, _gru_reset, _gru_update = _math.compiled(
    lambda fn: fn, names=_math.GATES, activate=apply, clip=_clip)


def available():
    return True, "NumPy is always available"


def supports(params):
    if getattr(params, "quantized", None) is not None:
        return True, f"its {params.quantized.mode} weights' semantics in float64"
    return True, "the reference backend runs every configuration"


class _Packed:
    """The reference backend keeps the Keras layout, in float64."""

    __slots__ = ("params", "w", "recurrent_mask")

    def __init__(self, params):
        self.params = params
        # Training-mode recurrent dropout (layers set it; not part of the
        # contract): scales h in the recurrent products only, as Keras does.
        self.recurrent_mask = None
        self.w = {
            name: (None if value is None else np.asarray(value, dtype=np.float64))
            for name, value in vars(params).items()
            if isinstance(value, np.ndarray) or value is None
        }


def pack(params):
    return _Packed(params)


def _steps(T, reverse):
    return range(T - 1, -1, -1) if reverse else range(T)


def _masked_update(mask, t, new, old):
    if mask is None:
        return new
    return np.where(mask[:, t, None], new, old)


def _emit(mask, t, zero_output, y_new, prev):
    if mask is None:
        return y_new
    fallback = np.zeros_like(y_new) if zero_output else prev
    return np.where(mask[:, t, None], y_new, fallback)


def _sequence(step, x, states, mask, reverse, zero_output, out, states_out, out_size):
    """Drive ``step(x_t, states) -> (y, new_states)`` over time with masking."""
    x = np.asarray(x, dtype=np.float64)
    B, T, _ = x.shape
    states = [np.array(s, dtype=np.float64) for s in states]
    prev = np.zeros((B, out_size))
    for t in _steps(T, reverse):
        y, new = step(x[:, t], states)
        states = [_masked_update(mask, t, n, s) for n, s in zip(new, states)]
        prev = _emit(mask, t, zero_output, y, prev)
        if out is not None:
            out[:, t] = prev
    for dst, src in zip(states_out, states):
        dst[...] = src


def _recurrent_input(packed, h):
    return h if packed.recurrent_mask is None else h * packed.recurrent_mask


def _product(packed, a, which):
    """``a @ W`` for ``which`` (``"kernel"`` or ``"recurrent_kernel"``); with
    ``"int8_dynamic"`` weights, each row of ``a`` quantized first and the
    sum taken in integers; with ``"bfloat16_dynamic"``, ``a`` rounded to
    bfloat16 first (:func:`fastrnn.kernels.quantize`)."""
    q = packed.params.quantized
    if q is not None and q.mode == "bfloat16_dynamic":
        return bfloat16_values(a).astype(np.float64) @ packed.w[which]
    if q is None or q.mode != "int8_dynamic":
        return a @ packed.w[which]
    if which == "kernel":
        wq, ws = q.kernel, q.kernel_scale
    else:
        wq, ws = q.recurrent_kernel, q.recurrent_scale
    aq, sa = quantize_rows(a)
    acc = (aq.astype(np.int64) @ wq.astype(np.int64)).astype(np.float64)
    return acc * (sa[:, None].astype(np.float64) * ws.astype(np.float64))


def simple_rnn(packed, x, h0, mask, reverse, zero_output, out, h_out):
    p, w = packed.params, packed.w

    def step(x_t, states):
        hr = _recurrent_input(packed, states[0])
        h = apply(p.activation, x_t @ w["kernel"] + w["bias"] + hr @ w["recurrent_kernel"])
        return h, [h]

    _sequence(step, x, [h0], mask, reverse, zero_output, out, [h_out], p.units)


def gru(packed, x, h0, mask, reverse, zero_output, out, h_out):
    p, w = packed.params, packed.w
    H = p.units
    b_in, b_rec = w["bias"][0], w["bias"][1]
    U = w["recurrent_kernel"]

    def step(x_t, states):
        h = states[0]
        hr = _recurrent_input(packed, h)
        xz, xr, xh = np.split(_product(packed, x_t, "kernel") + b_in, 3, axis=1)
        if p.reset_after:
            hz, hr_, hh = np.split(_product(packed, hr, "recurrent_kernel"), 3, axis=1)
            zr = xr + hr_ + b_rec[H : 2 * H]
            zh = _gru_reset(zr, xh, hh + b_rec[2 * H :], p.recurrent_activation)
        else:
            hz = hr @ U[:, :H]
            zr = xr + hr @ U[:, H : 2 * H] + b_rec[H : 2 * H]
            r = apply(p.recurrent_activation, zr)
            zh = xh + (r * hr) @ U[:, 2 * H :] + b_rec[2 * H :]
        h_new = _gru_update(xz + hz + b_rec[:H], zh, h, p.activation,
                            p.recurrent_activation)
        return h_new, [h_new]

    _sequence(step, x, [h0], mask, reverse, zero_output, out, [h_out], H)


def lstm(packed, x, h0, c0, mask, reverse, zero_output, out, h_out, c_out):
    p, w = packed.params, packed.w
    peep, proj = w["peepholes"], w["projection"]

    pi, pf, po = (None, None, None) if peep is None else peep

    def step(x_t, states):
        h, c = states
        zi, zf, zc, zo = np.split(
            _product(packed, x_t, "kernel")
            + _product(packed, _recurrent_input(packed, h), "recurrent_kernel") + w["bias"],
            4, axis=1
        )
        c_new, h_new = _lstm_update(zi, zf + p.forget_bias, zc, zo, c, peep is not None,
                                    pi, pf, po, p.cell_clip, p.activation,
                                    p.recurrent_activation)
        if proj is not None:
            h_new = _clip(h_new @ proj, p.proj_clip)
        return h_new, [h_new, c_new]

    _sequence(
        step, x, [h0, c0], mask, reverse, zero_output, out, [h_out, c_out],
        p.output_size,
    )
