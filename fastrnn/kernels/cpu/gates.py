"""The activations and gate updates of :mod:`fastrnn.kernels._math`, for the CPU.

Two builds of the same source: :func:`lstm_update`, :func:`gru_reset` and
:func:`gru_update` run on the SIMD vectors (:mod:`.simd`) of the packed,
stream and float32 generic kernels, where ``activate``, ``muladd`` (fused,
``llvm.fma``) and ``clip`` below are the vector forms; ``scalar_*`` run on
the float scalars of the float64 generic kernels, with the scalar
primitives of :mod:`fastrnn.kernels._math` (``muladd`` is ``a * b + c``
there). :func:`gru_row` and :func:`gru_reset_input` run a GRU's gate math
over a row of units, a vector at a time, for the stream and generic
kernels.

float32 vectors take vector forms of tanh, sigmoid, hard sigmoid, relu and
the identity (:mod:`.simd`); every other activation, and every float64
one, runs lane by lane through the scalar code (``math.tanh`` and so on).
"""

from __future__ import annotations

from numba import njit, types
from numba.extending import overload

from .. import _math
from .simd import (VEC, VecType, vclamp, vfill, vfma, vget, vlanes, vload_part, vrelu, vset,
                   vsigmoid, vstore_part, vtanh)

(_scalar_sigmoid, scalar_clip, scalar_activate, _scalar_muladd, scalar_lstm_update,
 scalar_gru_reset, scalar_gru_update) = _math.compiled(njit(inline="always"),
                                                      names=_math.SCALARS + _math.GATES)

_F32 = VEC[types.float32]


@njit(nogil=True, _nrt=False)
def _activate_lanes(code, v):
    """Activation ``code`` on each lane of ``v`` (one compiled copy per
    vector type, called from every ``activate``: inlining the scalar
    dispatch everywhere multiplies the compile time)."""
    for i in range(vlanes(v)):
        v = vset(v, i, scalar_activate(code, vget(v, i)))
    return v


def activate(code, x):
    """Activation ``code`` applied to every lane of a vector."""
    raise NotImplementedError  # typed by the overload below


@overload(activate, inline="always")
def _ov_activate(code, x):
    if x == _F32:
        def impl(code, x):
            if code == 1:
                return vtanh(x)
            if code == 2:
                return vsigmoid(x)
            if code == 0:
                return x
            if code == 3:
                return vclamp(vfma(x, vfill(x, 1.0 / 6.0), vfill(x, 0.5)), vfill(x, 0.0),
                              vfill(x, 1.0))
            if code == 4:
                return vrelu(x)
            return _activate_lanes(code, x)
        return impl
    if isinstance(x, VecType):
        return lambda code, x: _activate_lanes(code, x)
    return None


@njit(inline="always")
def muladd(a, b, c):
    """``a * b + c`` on vectors, in one rounding."""
    return vfma(a, b, c)


@njit(inline="always")
def clip(x, limit):
    """Clip every lane to ``[-limit, limit]``; ``limit < 0`` means no clipping."""
    if limit < 0.0:
        return x
    return vclamp(x, vfill(x, -limit), vfill(x, limit))


lstm_update, gru_reset, gru_update = _math.compiled(
    njit(inline="always"), names=("lstm_update", "gru_reset", "gru_update"),
    activate=activate, muladd=muladd, clip=clip)


# Explicit fastmath flags of the row kernels below and of the stream kernels
# (contraction into FMAs, reassociation); no 'nnan'/'ninf' (NaN must
# propagate, sigmoid saturates).
FASTMATH = {"reassoc", "contract", "nsz", "arcp"}


@njit(fastmath=FASTMATH, error_model="numpy", _nrt=False)
def gru_row(zx, g, h, H, ra, act, ract):
    """``g``/``zx``: the recurrent/input parts of the pre-activations (3H,
    gates z, r, h; without ``ra``, ``g``'s candidate part already holds
    ``(r * h) U_h + b_rh``); ``h`` is updated in place, a vector of units
    at a time (the stream kernels, the float32 generic kernels)."""
    L = 64 // g.itemsize
    for u in range(0, H, L):
        n = min(L, H - u)
        zz = vload_part(g, u, n) + vload_part(zx, u, n)
        if ra:
            zh = gru_reset(vload_part(g, H + u, n) + vload_part(zx, H + u, n),
                           vload_part(zx, 2 * H + u, n), vload_part(g, 2 * H + u, n), ract)
        else:
            zh = vload_part(g, 2 * H + u, n) + vload_part(zx, 2 * H + u, n)
        vstore_part(h, u, gru_update(zz, zh, vload_part(h, u, n), act, ract), n)


@njit(fastmath=FASTMATH, error_model="numpy", _nrt=False)
def gru_reset_input(zx, g, h, rh, H, ract):
    """``rh = r * h`` with ``r = ract(g_r + zx_r)``: the input of the
    candidate's product when ``reset_after=False`` (Keras 2, TF1)."""
    L = 64 // g.itemsize
    for u in range(0, H, L):
        n = min(L, H - u)
        r = activate(ract, vload_part(g, H + u, n) + vload_part(zx, H + u, n))
        vstore_part(rh, u, r * vload_part(h, u, n), n)
