"""The activations and gate updates of :mod:`fastrnn.kernels._math`, for the CPU.

Two builds of the same source: :func:`lstm_update`, :func:`gru_reset` and
:func:`gru_update` run on the SIMD vectors (:mod:`.simd`) of the packed and
stream kernels, where ``activate``, ``muladd`` (fused, ``llvm.fma``) and
``clip`` below are the vector forms; ``scalar_*`` run on the float scalars
of the generic kernels, with the scalar primitives of
:mod:`fastrnn.kernels._math` (``muladd`` is ``a * b + c`` there).

float32 vectors take vector forms of tanh, sigmoid, hard sigmoid, relu and
the identity (:mod:`.simd`); every other activation, and every float64
one, runs lane by lane through the scalar code (``math.tanh`` and so on).
"""

from __future__ import annotations

from numba import njit, types
from numba.extending import overload

from .. import _math
from .simd import VEC, VecType, vclamp, vfill, vfma, vget, vlanes, vrelu, vset, vsigmoid, vtanh

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
