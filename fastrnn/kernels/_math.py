"""Scalar activation and gate math, written once in plain Python.

Each function here uses only ``math`` and arithmetic, so the same source is
compiled for the CPU (``numba.njit(inline="always")``) by ``cpu.py`` and for
the GPU (``numba.cuda.jit(device=True, inline="always")``) by ``cuda.py``.
Never call an ``@njit`` function from a CUDA kernel: wrap these instead.

Activation codes are those of :mod:`fastrnn.activations`; they arrive as
arguments, so one compiled kernel serves every activation.

Numba's on-disk cache does not notice an edit here: change the stamp in
``_cpu_generic.py``, ``_cpu_packed.py`` and ``_stream.py`` with it.
"""

import math

# Keep these equal to fastrnn.activations (tests check it); a module global
# would be frozen into cached kernels anyway.
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946
INV_SQRT2 = 0.7071067811865476


def sigmoid(x):
    # 0.5 * (tanh(x/2) + 1) never overflows and stays accurate for x << 0.
    return 0.5 * (math.tanh(0.5 * x) + 1.0)


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
    if code == 4:
        return x if x > 0.0 else 0.0 * x
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


# Dependency order: a function comes after every sibling it calls.
_COMPILED_NAMES = ("sigmoid", "clip", "activate")


def compiled(decorate):
    """Return ``(sigmoid, clip, activate)`` compiled with ``decorate``.

    The functions above call each other by global name, so wrapping only
    ``activate`` would leave the compiler facing the plain ``sigmoid``. Each
    one is rebuilt from its own code object with globals that point at the
    compiled siblings, then decorated (``njit(inline="always")`` for the CPU,
    ``cuda.jit(device=True, inline="always")`` for the GPU): the formulas
    stay written once, here.
    """
    import types

    source = globals()
    env = dict(source)
    for name in _COMPILED_NAMES:
        fn = source[name]
        clone = types.FunctionType(fn.__code__, env, name, fn.__defaults__, fn.__closure__)
        clone.__doc__ = fn.__doc__
        env[name] = decorate(clone)
    return tuple(env[name] for name in _COMPILED_NAMES)
