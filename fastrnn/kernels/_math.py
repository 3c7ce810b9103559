"""Activations and gate updates, written once in plain Python.

Everything here uses only ``math``, arithmetic and the functions of this
module, so :func:`compiled` can rebuild the same source for each kernel
family: NumPy arrays (``reference``), scalars compiled for the CPU
(``numba.njit(inline="always")``), the CPU's SIMD vectors (whose operators
broadcast scalars, :mod:`fastrnn.kernels.cpu.simd`) and CUDA device
functions (``numba.cuda.jit(device=True, inline="always")``). Never call an
``@njit`` function from a CUDA kernel: build these for CUDA instead.

A family may replace the three primitives the gate updates rest on:
``activate(code, x)``, ``muladd(a, b, c)`` (``a * b + c``; the CPU's vectors
fuse it into one rounding) and ``clip(x, limit)``.

Activation codes are those of :mod:`fastrnn.activations`; they arrive as
arguments, so one compiled kernel serves every activation.
"""

import math

# Keep these equal to fastrnn.activations (tests check it); a module global
# would be frozen into cached kernels anyway.
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946
INV_SQRT2 = 0.7071067811865476


def sigmoid(x):
    # Relative accuracy of exp on both sides: for x << 0 the value is
    # exp(x) / (1 + exp(x)) to a rounding (0.5 * (tanh(x/2) + 1) would cancel
    # to 0 there), for x >> 0 it rounds to 1 exactly where 1 - sigmoid(x) is
    # below half an ulp of 1; exp(-x) overflowing to inf gives 0. NaN stays NaN.
    return 1.0 / (1.0 + math.exp(-x))


def activate(code, x):
    """Activation number ``code`` applied to the scalar ``x``."""
    if code == 1:
        return math.tanh(x)
    if code == 2:
        return sigmoid(x)
    if code == 0:
        return x
    if code == 3:
        v = x / 6.0 + 0.5
        return 0.0 if v < 0.0 else (1.0 if v > 1.0 else v)
    if code == 4:  # NaN stays NaN, -inf gives 0 (as np.maximum(x, 0))
        return x if x > 0.0 or x != x else 0.0
    if code == 5:
        return x / (1.0 + abs(x))
    if code == 6:
        # log(1 + exp(x)) without overflow
        return (x if x > 0.0 else 0.0) + math.log1p(math.exp(-abs(x)))
    if code == 7:
        return x if x > 0.0 else math.expm1(x)
    if code == 8:
        return SELU_SCALE * (x if x > 0.0 else SELU_ALPHA * math.expm1(x))
    if code == 9:
        return x * sigmoid(x)
    if code == 10:
        return 0.5 * x * (1.0 + math.erf(x * INV_SQRT2))
    if code == 11:
        return math.exp(x)
    if code == 12:  # relu6
        return 0.0 if x < 0.0 else (6.0 if x > 6.0 else x)
    if code == 13:  # leaky_relu, negative_slope 0.2
        return 0.2 * x if x < 0.0 else x
    if code == 14:  # soft_shrink, threshold 0.5
        if abs(x) <= 0.5:
            return 0.0
        return x - 0.5 if x > 0.0 else x + 0.5
    if code == 15:  # sparse_plus
        if x <= -1.0:
            return 0.0
        return x if x >= 1.0 else 0.25 * (x + 1.0) * (x + 1.0)
    if code == 16:  # squareplus, b 4
        ax = abs(x)
        if ax > 1e18:  # (x * x would pass float32's range; sqrt(x * x + 4) is |x| there)
            return (x + ax) / 2.0
        return (x + math.sqrt(x * x + 4.0)) / 2.0
    if code == 17:  # celu, alpha 1 (= elu)
        return x if x > 0.0 else math.expm1(x)
    if code == 18:  # tanh_shrink
        return x - math.tanh(x)
    if code == 19:  # hard_tanh
        return -1.0 if x < -1.0 else (1.0 if x > 1.0 else x)
    if code == 20:  # hard_shrink, threshold 0.5
        return 0.0 if abs(x) <= 0.5 else x
    if code == 21:  # log_sigmoid = -softplus(-x)
        return (x if x < 0.0 else 0.0) - math.log1p(math.exp(-abs(x)))
    if code == 22:  # sparse_sigmoid
        if x <= -1.0:
            return 0.0
        return 1.0 if x >= 1.0 else 0.5 * (x + 1.0)
    if code == 23:  # hard_silu = x * hard_sigmoid(x)
        v = x / 6.0 + 0.5
        return x * (0.0 if v < 0.0 else (1.0 if v > 1.0 else v))
    if code == 24:  # mish = x * tanh(softplus(x))
        return x * math.tanh((x if x > 0.0 else 0.0) + math.log1p(math.exp(-abs(x))))
    if code == 25:  # Keras 2's hard_sigmoid
        v = 0.2 * x + 0.5
        return 0.0 if v < 0.0 else (1.0 if v > 1.0 else v)
    return math.nan


def clip(x, limit):
    """Clip to ``[-limit, limit]``; ``limit < 0`` means no clipping."""
    if limit < 0.0:
        return x
    if x > limit:
        return limit
    if x < -limit:
        return -limit
    return x


def muladd(a, b, c):
    """``a * b + c``."""
    return a * b + c


# ---- gate updates (gate orders are Keras's: LSTM i, f, c, o; GRU z, r, h) ----


def lstm_update(zi, zf, zc, zo, c, peep, pi, pf, po, cell_clip, act, ract):
    """New ``(c, h)`` of an LSTM cell from its gates' pre-activations.

    ``c' = clip(f * c + i * act(zc), cell_clip)``, ``h' = o * act(c')`` with
    ``i, f, o = ract(z + p * c)``; the peepholes ``pi, pf`` read the old
    cell state and ``po`` the new one, and count only when ``peep`` is
    true. ``cell_clip < 0`` means no clip. A projection, if any, is applied
    to ``h'`` by the caller.
    """
    if peep:
        zi = muladd(pi, c, zi)
        zf = muladd(pf, c, zf)
    i = activate(ract, zi)
    f = activate(ract, zf)
    c_new = clip(muladd(f, c, i * activate(act, zc)), cell_clip)
    if peep:
        zo = muladd(po, c_new, zo)
    return c_new, activate(ract, zo) * activate(act, c_new)


def gru_reset(zr, xh, hr, ract):
    """The GRU candidate's pre-activation with ``reset_after=True``:
    ``xh + r * hr``, where ``hr = h U_h + b_rh`` and ``r = ract(zr)``."""
    return muladd(activate(ract, zr), hr, xh)


def gru_update(zz, zh, h, act, ract):
    """New ``h`` of a GRU cell: ``z * h + (1 - z) * act(zh)``, ``z = ract(zz)``.

    Keras's form: exact when the update gate saturates (``z`` of 0 or 1
    gives ``act(zh)`` or ``h`` to the bit), so a unit that holds its state
    keeps it over any number of steps.
    """
    z = activate(ract, zz)
    return muladd(z, h, (1.0 - z) * activate(act, zh))


#: The scalar activations, in dependency order (a function after every
#: sibling it calls).
SCALARS = ("sigmoid", "clip", "activate")
#: The gate updates, after the primitives they call.
GATES = ("muladd", "lstm_update", "gru_reset", "gru_update")


def compiled(decorate, names=SCALARS, **primitives):
    """The functions ``names`` of this module, rebuilt and decorated.

    The functions here call each other by global name, so wrapping only
    one of them would leave the compiler facing its plain siblings. Each is
    rebuilt from its own code object with globals in which ``primitives``
    (a family's own ``activate``, ``muladd`` or ``clip``) and the siblings
    already rebuilt replace this module's, then decorated
    (``njit(inline="always")``, ``cuda.jit(device=True, inline="always")``,
    or nothing for NumPy): the formulas stay written once, here.

    Returns a tuple in the order of ``names``.
    """
    import types

    source = globals()
    env = dict(source)
    env.update(primitives)
    for name in names:
        if name in primitives:
            continue
        fn = source[name]
        clone = types.FunctionType(fn.__code__, env, name, fn.__defaults__, fn.__closure__)
        clone.__doc__ = fn.__doc__
        env[name] = decorate(clone)
    return tuple(env[name] for name in names)
