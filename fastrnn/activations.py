"""Activation names, the integer codes the kernels take, and NumPy versions.

Kernels never see a name: layers resolve ``activation="tanh"`` to a code
once, at construction, and pass the code to the kernel as an argument (so
one compiled kernel serves every activation). A Python callable is kept as
it is; only the ``reference`` backend can run it, and the dispatcher says so.

The definitions follow Keras 3 (``keras.activations``): in particular
``hard_sigmoid(x) = clip(x / 6 + 1/2, 0, 1)`` (Keras 2 used ``0.2 x + 0.5``)
and ``gelu`` is the exact erf form (``approximate=False``).
"""

from __future__ import annotations

import math

import numpy as np

LINEAR = 0
TANH = 1
SIGMOID = 2
HARD_SIGMOID = 3
RELU = 4
SOFTSIGN = 5
SOFTPLUS = 6
ELU = 7
SELU = 8
SILU = 9
GELU = 10
EXPONENTIAL = 11

#: Keras name -> kernel code. ``None`` and ``"linear"`` are the identity.
CODES = {
    "linear": LINEAR,
    "tanh": TANH,
    "sigmoid": SIGMOID,
    "hard_sigmoid": HARD_SIGMOID,
    "relu": RELU,
    "softsign": SOFTSIGN,
    "softplus": SOFTPLUS,
    "elu": ELU,
    "selu": SELU,
    "silu": SILU,
    "swish": SILU,
    "gelu": GELU,
    "exponential": EXPONENTIAL,
}

#: kernel code -> canonical Keras name (what ``get_config`` writes).
NAMES = {
    LINEAR: "linear",
    TANH: "tanh",
    SIGMOID: "sigmoid",
    HARD_SIGMOID: "hard_sigmoid",
    RELU: "relu",
    SOFTSIGN: "softsign",
    SOFTPLUS: "softplus",
    ELU: "elu",
    SELU: "selu",
    SILU: "silu",
    GELU: "gelu",
    EXPONENTIAL: "exponential",
}

SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


def resolve(activation, argument="activation"):
    """Return the kernel code for ``activation``, or the callable itself.

    Parameters
    ----------
    activation : str, None, int or callable
        A Keras activation name (``"tanh"``), ``None`` (linear), a kernel
        code from this module, or any callable mapping an array to an array.
    argument : str
        The argument's name, used in the error message.
    """
    if activation is None:
        return LINEAR
    if isinstance(activation, str):
        key = activation.lower()
        if key not in CODES:
            raise ValueError(
                f"{argument}: unknown activation {activation!r}; expected one of "
                f"{sorted(CODES)} or a callable"
            )
        return CODES[key]
    if isinstance(activation, dict):  # a Keras-serialised activation
        return resolve(activation.get("config", activation.get("class_name")), argument)
    if isinstance(activation, (int, np.integer)) and not isinstance(activation, bool):
        if int(activation) not in NAMES:
            raise ValueError(f"{argument}: unknown activation code {activation}")
        return int(activation)
    if callable(activation):
        name = getattr(activation, "__name__", "")
        # keras.activations.tanh and friends come back as their codes, so a
        # layer built from live Keras objects still compiles.
        if getattr(activation, "__module__", "").startswith("keras") and name in CODES:
            return CODES[name]
        return activation
    raise TypeError(
        f"{argument}: expected an activation name, None or a callable, "
        f"got {type(activation).__name__}"
    )


def name_of(code):
    """The name ``get_config`` stores for a resolved activation."""
    if callable(code):
        return getattr(code, "__name__", repr(code))
    return NAMES[code]


def _erf(x):
    return np.vectorize(math.erf, otypes=[x.dtype])(x) if x.size else x.copy()


def apply(code, x):
    """Apply a resolved activation to a NumPy array (the reference path)."""
    if callable(code):
        return np.asarray(code(x), dtype=x.dtype)
    if code == LINEAR:
        return x
    if code == TANH:
        return np.tanh(x)
    if code == SIGMOID:
        # Written with tanh so it neither overflows nor loses precision.
        return 0.5 * (np.tanh(0.5 * x) + 1.0)
    if code == HARD_SIGMOID:
        return np.clip(x / 6.0 + 0.5, 0.0, 1.0)
    if code == RELU:
        return np.maximum(x, 0.0)
    if code == SOFTSIGN:
        return x / (1.0 + np.abs(x))
    if code == SOFTPLUS:
        return np.logaddexp(0.0, x)
    if code == ELU:
        return np.where(x > 0, x, np.expm1(np.minimum(x, 0.0)))
    if code == SELU:
        return SELU_SCALE * np.where(x > 0, x, SELU_ALPHA * np.expm1(np.minimum(x, 0.0)))
    if code == SILU:
        return x * (0.5 * (np.tanh(0.5 * x) + 1.0))
    if code == GELU:
        return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))
    if code == EXPONENTIAL:
        return np.exp(x)
    raise ValueError(f"unknown activation code {code}")
