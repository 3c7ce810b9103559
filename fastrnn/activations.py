"""Activation names, the integer codes the kernels take, and NumPy versions.

Kernels never see a name: layers resolve ``activation="tanh"`` to a code
once, at construction, and pass the code to the kernel as an argument (so
one compiled kernel serves every activation). A Python callable is kept as
it is; only the ``reference`` backend can run it, and the dispatcher says so.
Keras's own activation functions (``keras.activations.relu``) and their
serialised forms resolve to codes; Keras activation *layers* resolve only
where a code computes them exactly (``ReLU()``, ``LeakyReLU(0.2)``, ...),
and anything else is a ``ValueError`` rather than a guess.

The definitions follow Keras 3 (``keras.activations``): in particular
``hard_sigmoid(x) = clip(x / 6 + 1/2, 0, 1)`` (Keras 2 used ``0.2 x + 0.5``,
named ``"keras2_hard_sigmoid"`` here: see :data:`EXTRA_CODES`) and ``gelu``
is the exact erf form (``approximate=False``).
"""

from __future__ import annotations

import math
import sys

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
RELU6 = 12
LEAKY_RELU = 13
SOFT_SHRINK = 14
SPARSE_PLUS = 15
SQUAREPLUS = 16
CELU = 17
TANH_SHRINK = 18
HARD_TANH = 19
HARD_SHRINK = 20
LOG_SIGMOID = 21
SPARSE_SIGMOID = 22
HARD_SILU = 23
MISH = 24
KERAS2_HARD_SIGMOID = 25
#: Over each row, not one value at a time: only for the compiled ``Dense`` of a
#: model stream (fastrnn.kernels.cpu.dense), never for a recurrent cell.
SOFTMAX = -1
LOG_SOFTMAX = -2

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
    # Keras 3's other element-wise activations, with Keras' default arguments
    # (leaky_relu: negative_slope=0.2; soft_shrink / hard_shrink: threshold=0.5;
    # squareplus: b=4; celu: alpha=1)
    "relu6": RELU6,
    "leaky_relu": LEAKY_RELU,
    "soft_shrink": SOFT_SHRINK,
    "sparse_plus": SPARSE_PLUS,
    "squareplus": SQUAREPLUS,
    "celu": CELU,
    "tanh_shrink": TANH_SHRINK,
    "hard_tanh": HARD_TANH,
    "hard_shrink": HARD_SHRINK,
    "log_sigmoid": LOG_SIGMOID,
    "sparse_sigmoid": SPARSE_SIGMOID,
    "hard_silu": HARD_SILU,
    "hard_swish": HARD_SILU,
    "mish": MISH,
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
    RELU6: "relu6",
    LEAKY_RELU: "leaky_relu",
    SOFT_SHRINK: "soft_shrink",
    SPARSE_PLUS: "sparse_plus",
    SQUAREPLUS: "squareplus",
    CELU: "celu",
    TANH_SHRINK: "tanh_shrink",
    HARD_TANH: "hard_tanh",
    HARD_SHRINK: "hard_shrink",
    LOG_SIGMOID: "log_sigmoid",
    SPARSE_SIGMOID: "sparse_sigmoid",
    HARD_SILU: "hard_silu",
    MISH: "mish",
    KERAS2_HARD_SIGMOID: "keras2_hard_sigmoid",
}


#: Activations of fastrnn's own, not Keras 3 names (so not in :data:`CODES`):
#: ``keras2_hard_sigmoid``, Keras 2's ``hard_sigmoid``, ``clip(0.2 x + 0.5, 0,
#: 1)`` (Keras 3's is ``clip(x / 6 + 0.5, 0, 1)``): what ``"hard_sigmoid"``
#: means in a model Keras 2 saved, which :func:`fastrnn.load_keras` reads as
#: this. Every backend runs them; ``get_config`` writes these names.
EXTRA_CODES = {"keras2_hard_sigmoid": KERAS2_HARD_SIGMOID}

SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


def resolve(activation, argument="activation"):
    """Return the kernel code for ``activation``, or the callable itself.

    Parameters
    ----------
    activation : str, None, int, dict or callable
        A Keras activation name (``"tanh"``), ``None`` (linear), a kernel
        code from this module, a Keras-serialised activation (see
        ``_resolve_serialized``), or any callable mapping an array to an
        array.
    argument : str
        The argument's name, used in the error message.
    """
    if activation is None:
        return LINEAR
    if isinstance(activation, str):
        key = activation.lower()
        if key in EXTRA_CODES:
            return EXTRA_CODES[key]
        if key not in CODES:
            raise ValueError(
                f"{argument}: unknown activation {activation!r}; expected one of "
                f"{sorted(CODES) + sorted(EXTRA_CODES)} or a callable"
            )
        return CODES[key]
    if isinstance(activation, dict):  # a Keras-serialised activation
        return _resolve_serialized(activation, argument)
    if isinstance(activation, (int, np.integer)) and not isinstance(activation, bool):
        if int(activation) not in NAMES:
            raise ValueError(f"{argument}: unknown activation code {activation}")
        return int(activation)
    if callable(activation):
        # keras.activations.tanh and friends come back as their codes, so a
        # layer built from live Keras objects still compiles; any other
        # callable (keras.ops.gelu, whose default is the tanh approximation,
        # or a Keras activation layer) runs as it is.
        code = _keras_function_code(activation)
        return activation if code is None else code
    raise TypeError(
        f"{argument}: expected an activation name, None or a callable, "
        f"got {type(activation).__name__}"
    )


#: The modules a serialised Keras function may name for an activation of
#: ``keras.activations`` ("builtins": Keras looks the name up among its own).
_ACTIVATION_MODULES = (None, "builtins", "keras.activations", "keras.src.activations",
                       "keras.src.activations.activations")

#: Keras activation layers a code computes exactly: class name -> (the layer's
#: arguments and the only values fastrnn takes, the code). ``ReLU`` with
#: ``max_value=6`` is ``relu6``; Keras's ``LeakyReLU`` layer defaults to a
#: slope of 0.3, the ``leaky_relu`` function (the code) to 0.2.
_LAYERS = {
    "ReLU": [({"max_value": None, "negative_slope": 0.0, "threshold": 0.0}, RELU),
             ({"max_value": 6.0, "negative_slope": 0.0, "threshold": 0.0}, RELU6)],
    "LeakyReLU": [({"negative_slope": 0.2}, LEAKY_RELU)],
    "ELU": [({"alpha": 1.0}, ELU)],
}
#: Keras layer arguments that do not change what an activation layer computes.
_LAYER_BASE_KEYS = ("name", "trainable", "dtype")


def _resolve_serialized(config, argument):
    """The code of a serialised Keras activation: a function of
    ``keras.activations`` (``{"class_name": "function", "config": "relu",
    "module": "keras.activations", ...}``), an ``Activation`` layer, or an
    activation layer that a code computes exactly (``_LAYERS``)."""
    class_name = config.get("class_name")
    module = config.get("module")
    inner = config.get("config")
    if class_name == "function":
        if module in _ACTIVATION_MODULES and isinstance(inner, str):
            return resolve(inner, argument)
        raise ValueError(f"{argument}: {config!r} is not one of keras.activations' functions; "
                         f"expected one of {sorted(CODES)}")
    if module in (None, "keras.layers") and isinstance(inner, dict):
        args = {k: v for k, v in inner.items() if k not in _LAYER_BASE_KEYS}
        if class_name == "Activation" and set(args) == {"activation"}:
            return resolve(args["activation"], argument)
        for values, code in _LAYERS.get(class_name, ()):
            if set(args) == set(values) and all(
                    args[k] is None if v is None else
                    (_is_real(args[k]) and float(args[k]) == v) for k, v in values.items()):
                return code
        if class_name in _LAYERS or class_name == "Activation":
            given = ", ".join(f"{k}={v!r}" for k, v in args.items())
            forms = " or ".join(", ".join(f"{k}={v!r}" for k, v in values.items())
                                for values, _ in _LAYERS.get(class_name, ()))
            raise ValueError(f"{argument}: the Keras layer {class_name}({given}) is not an "
                             "activation fastrnn computes"
                             + (f" (it computes {class_name} with {forms})" if forms else ""))
    raise ValueError(f"{argument}: {config!r} is not an activation fastrnn computes; expected "
                     f"a name from {sorted(CODES)}, a serialised keras.activations function, "
                     f"or a callable")


def _is_real(value):
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _keras_function_code(fn):
    """The code of ``fn`` when it is one of Keras 3's activation functions
    (the object ``keras.activations.<name>``, with its default arguments,
    which the codes compute), else ``None``. Keras is not imported here: a
    Keras function exists only where Keras already is."""
    if not str(getattr(fn, "__module__", None) or "").startswith("keras"):
        return None
    public = sys.modules.get("keras.activations")
    major = str(getattr(sys.modules.get("keras"), "__version__", "0")).split(".")[0]
    if public is None or not major.isdigit() or int(major) < 3:  # Keras 2's hard_sigmoid differs
        return None
    name = getattr(fn, "__name__", "")
    if name in CODES and getattr(public, name, None) is fn:
        return CODES[name]
    return None


def name_of(code):
    """The name ``get_config`` stores for a resolved activation.

    A callable here is the user's own (Keras's named functions resolve to
    codes): it is named by its module and qualified name
    (``"__main__.relu"``, ``"numpy.tanh"``), which no activation name
    matches, so a config holding it never rebuilds as a built-in of the same
    short name (``fastrnn.save`` refuses it; a ``from_config`` raises)."""
    if callable(code):
        name = getattr(code, "__qualname__", None) or getattr(code, "__name__", None) \
            or type(code).__name__
        return f"{getattr(code, '__module__', None) or '?'}.{name}"
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
    if code == RELU6:
        return np.clip(x, 0.0, 6.0)
    if code == LEAKY_RELU:
        return np.where(x < 0, 0.2 * x, x)
    if code == SOFT_SHRINK:
        return np.where(np.abs(x) <= 0.5, 0.0, x - 0.5 * np.sign(x)).astype(x.dtype)
    if code == SPARSE_PLUS:
        return np.where(x <= -1, 0.0, np.where(x >= 1, x, 0.25 * (x + 1) ** 2)).astype(x.dtype)
    if code == SQUAREPLUS:
        return (x + np.sqrt(x * x + 4.0)) / 2.0
    if code == CELU:
        return np.where(x > 0, x, np.expm1(np.minimum(x, 0.0)))
    if code == TANH_SHRINK:
        return x - np.tanh(x)
    if code == HARD_TANH:
        return np.clip(x, -1.0, 1.0)
    if code == HARD_SHRINK:
        return np.where(np.abs(x) <= 0.5, 0.0, x).astype(x.dtype)
    if code == LOG_SIGMOID:
        return np.minimum(x, 0.0) - np.log1p(np.exp(-np.abs(x)))
    if code == SPARSE_SIGMOID:
        return np.where(x <= -1, 0.0, np.where(x >= 1, 1.0, 0.5 * (x + 1))).astype(x.dtype)
    if code == HARD_SILU:
        return x * np.clip(x / 6.0 + 0.5, 0.0, 1.0)
    if code == MISH:
        return x * np.tanh(np.logaddexp(0.0, x))
    if code == KERAS2_HARD_SIGMOID:
        return np.clip(0.2 * x + 0.5, 0.0, 1.0)
    raise ValueError(f"unknown activation code {code}")
