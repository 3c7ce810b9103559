"""Weight initializers with Keras 3 names, arguments and formulas.

A layer built without loaded weights draws them from these, so a freshly
built fastrnn layer is distributed like a freshly built Keras layer (the
random streams differ: Keras's generators are not reproduced). Pass
``seed=`` to an initializer for repeatable weights.

``get(identifier)`` accepts a name (``"glorot_uniform"``, and Keras's
aliases), a Keras serialised dict (``{"class_name": "GlorotUniform",
"config": {...}}``, whose keys must be the initializer's arguments, as in
Keras), an :class:`Initializer`, or any callable ``f(shape, dtype) ->
array``.
"""

from __future__ import annotations

import inspect
import math

import numpy as np


def _fans(shape, input_axes=None, output_axes=None):
    """Keras's ``compute_fans``: the named axes' products when both are given."""
    if input_axes is not None and output_axes is not None:
        return (int(np.prod([shape[a] for a in input_axes])),
                int(np.prod([shape[a] for a in output_axes])))
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    receptive = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
    return shape[-2] * receptive, shape[-1] * receptive


class Initializer:
    """Base class: ``init(shape, dtype="float32") -> np.ndarray``."""

    def __init__(self, seed=None):
        self.seed = seed

    def _rng(self):
        return np.random.default_rng(self.seed)

    def __call__(self, shape, dtype="float32"):
        shape = tuple(int(s) for s in shape)
        return np.asarray(self.generate(shape), dtype=dtype)

    def generate(self, shape):  # pragma: no cover - abstract
        raise NotImplementedError

    def get_config(self):
        return {"seed": self.seed}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


class Zeros(Initializer):
    def __init__(self):
        super().__init__(None)

    def generate(self, shape):
        return np.zeros(shape)

    def get_config(self):
        return {}


class Ones(Zeros):
    def generate(self, shape):
        return np.ones(shape)


class Constant(Initializer):
    """``value`` everywhere: a real number, or (as Keras allows) an array that
    broadcasts to the shape; ``get_config`` writes an array as Keras does
    (``{"class_name": "__numpy__", "config": {"value": [...], "dtype": ...}}``),
    which is JSON."""

    def __init__(self, value=0.0):
        super().__init__(None)
        given = value
        if isinstance(value, dict) and value.get("class_name") == "__numpy__" \
                and isinstance(value.get("config"), dict):  # Keras's serialised array
            value = value["config"].get("value")
        try:
            array = np.asarray(value)
        except (TypeError, ValueError):
            array = np.asarray(None)
        if array.dtype.kind not in "biuf":
            raise ValueError(f"Constant: value expected a real number or an array of them, "
                             f"got {given!r}")
        self._array = array.astype(np.float64)
        self.value = array.item() if array.ndim == 0 else array

    def generate(self, shape):
        try:
            return np.array(np.broadcast_to(self._array, shape))
        except ValueError:
            raise ValueError(f"Constant: value of shape {self._array.shape} does not broadcast "
                             f"to the shape {shape}") from None

    def get_config(self):
        if isinstance(self.value, np.ndarray):
            return {"value": {"class_name": "__numpy__", "config": {
                "value": self.value.tolist(), "dtype": self.value.dtype.name}}}
        return {"value": self.value}


class RandomNormal(Initializer):
    def __init__(self, mean=0.0, stddev=0.05, seed=None):
        super().__init__(seed)
        self.mean, self.stddev = mean, stddev

    def generate(self, shape):
        return self._rng().normal(self.mean, self.stddev, shape)

    def get_config(self):
        return {"mean": self.mean, "stddev": self.stddev, "seed": self.seed}


class RandomUniform(Initializer):
    def __init__(self, minval=-0.05, maxval=0.05, seed=None):
        super().__init__(seed)
        self.minval, self.maxval = minval, maxval

    def generate(self, shape):
        return self._rng().uniform(self.minval, self.maxval, shape)

    def get_config(self):
        return {"minval": self.minval, "maxval": self.maxval, "seed": self.seed}


def _truncated_normal(rng, mean, stddev, shape):
    """Normal samples redrawn until within two standard deviations."""
    out = rng.normal(0.0, 1.0, shape)
    bad = np.abs(out) > 2.0
    while bad.any():
        out[bad] = rng.normal(0.0, 1.0, int(bad.sum()))
        bad = np.abs(out) > 2.0
    return mean + stddev * out


class TruncatedNormal(RandomNormal):
    def generate(self, shape):
        return _truncated_normal(self._rng(), self.mean, self.stddev, shape)


def _axes(value, argument):
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__") or not all(
            isinstance(a, (int, np.integer)) and not isinstance(a, bool) for a in value):
        raise ValueError(f"{argument}: expected None or a list of axes (integers), got {value!r}")
    return [int(a) for a in value]


class VarianceScaling(Initializer):
    """Keras's ``VarianceScaling``: ``distribution="normal"`` is
    ``"truncated_normal"`` (as in Keras); ``input_axes`` and ``output_axes``,
    when both are given, name the axes whose sizes multiply into the fans."""

    def __init__(self, scale=1.0, mode="fan_in", distribution="truncated_normal", seed=None,
                 input_axes=None, output_axes=None):
        super().__init__(seed)
        if isinstance(scale, bool) or not isinstance(scale, (int, float, np.integer, np.floating)) \
                or not scale > 0:
            raise ValueError(f"scale: expected a positive number, got {scale!r}")
        if mode not in ("fan_in", "fan_out", "fan_avg"):
            raise ValueError(f"mode: expected fan_in, fan_out or fan_avg, got {mode!r}")
        dist = distribution.lower() if isinstance(distribution, str) else distribution
        if dist == "normal":
            dist = "truncated_normal"
        if dist not in ("truncated_normal", "untruncated_normal", "uniform"):
            raise ValueError(
                "distribution: expected truncated_normal, untruncated_normal, normal or uniform, "
                f"got {distribution!r}"
            )
        self.scale, self.mode, self.distribution = scale, mode, dist
        self.input_axes = _axes(input_axes, "input_axes")
        self.output_axes = _axes(output_axes, "output_axes")

    def _axes_config(self):
        """The axes, written only where set (a config without them reads the
        same in Keras versions before them)."""
        return {k: v for k, v in (("input_axes", self.input_axes),
                                  ("output_axes", self.output_axes)) if v is not None}

    def generate(self, shape):
        try:
            fan_in, fan_out = _fans(shape, self.input_axes, self.output_axes)
        except IndexError:
            raise ValueError(f"{type(self).__name__}: input_axes {self.input_axes} / output_axes "
                             f"{self.output_axes} do not fit the shape {shape}") from None
        n = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2.0}[self.mode]
        variance = self.scale / max(1.0, n)
        rng = self._rng()
        if self.distribution == "uniform":
            limit = math.sqrt(3.0 * variance)
            return rng.uniform(-limit, limit, shape)
        if self.distribution == "untruncated_normal":
            return rng.normal(0.0, math.sqrt(variance), shape)
        # 0.879... is the std of a unit normal truncated at +-2 (as Keras).
        return _truncated_normal(rng, 0.0, math.sqrt(variance) / 0.87962566103423978, shape)

    def get_config(self):
        return {"scale": self.scale, "mode": self.mode, "distribution": self.distribution,
                "seed": self.seed, **self._axes_config()}


def _scaling(name, scale, mode, distribution):
    class _Named(VarianceScaling):
        def __init__(self, seed=None, input_axes=None, output_axes=None):
            super().__init__(scale, mode, distribution, seed, input_axes, output_axes)

        def get_config(self):
            return {"seed": self.seed, **self._axes_config()}

    _Named.__name__ = _Named.__qualname__ = name
    return _Named


GlorotUniform = _scaling("GlorotUniform", 1.0, "fan_avg", "uniform")
GlorotNormal = _scaling("GlorotNormal", 1.0, "fan_avg", "truncated_normal")
HeNormal = _scaling("HeNormal", 2.0, "fan_in", "truncated_normal")
HeUniform = _scaling("HeUniform", 2.0, "fan_in", "uniform")
LecunNormal = _scaling("LecunNormal", 1.0, "fan_in", "truncated_normal")
LecunUniform = _scaling("LecunUniform", 1.0, "fan_in", "uniform")


class Orthogonal(Initializer):
    def __init__(self, gain=1.0, seed=None):
        super().__init__(seed)
        self.gain = gain

    def generate(self, shape):
        if len(shape) < 2:
            raise ValueError(f"Orthogonal: expected a shape of at least 2 dimensions, got {shape}")
        rows = int(np.prod(shape[:-1]))
        cols = shape[-1]
        a = self._rng().normal(0.0, 1.0, (max(rows, cols), min(rows, cols)))
        q, r = np.linalg.qr(a)
        q = q * np.sign(np.diag(r))
        if rows < cols:
            q = q.T
        return self.gain * q.reshape(shape)

    def get_config(self):
        return {"gain": self.gain, "seed": self.seed}


class Identity(Initializer):
    def __init__(self, gain=1.0):
        super().__init__(None)
        self.gain = gain

    def generate(self, shape):
        if len(shape) != 2:
            raise ValueError(f"identity initializer: expected a 2D shape, got {shape}")
        return self.gain * np.eye(*shape)

    def get_config(self):
        return {"gain": self.gain}


_CLASSES = {
    cls.__name__: cls
    for cls in (Zeros, Ones, Constant, RandomNormal, RandomUniform, TruncatedNormal,
                VarianceScaling, GlorotUniform, GlorotNormal, HeNormal, HeUniform,
                LecunNormal, LecunUniform, Orthogonal, Identity)
}
_ALIASES = {
    "zeros": "Zeros", "ones": "Ones", "constant": "Constant",
    "random_normal": "RandomNormal", "random_uniform": "RandomUniform",
    "truncated_normal": "TruncatedNormal", "variance_scaling": "VarianceScaling",
    "glorot_uniform": "GlorotUniform", "glorot_normal": "GlorotNormal",
    "he_normal": "HeNormal", "he_uniform": "HeUniform",
    "lecun_normal": "LecunNormal", "lecun_uniform": "LecunUniform",
    "orthogonal": "Orthogonal", "identity": "Identity",
    # Keras's aliases (keras.initializers.ALL_OBJECTS_DICT; names match here
    # in any case)
    "normal": "RandomNormal", "uniform": "RandomUniform", "one": "Ones", "zero": "Zeros",
    "orthogonalinitializer": "Orthogonal", "identityinitializer": "Identity",
}


def get(identifier, argument="initializer"):
    """Resolve ``identifier`` to an initializer (see the module docstring)."""
    if isinstance(identifier, Initializer):
        return identifier
    if isinstance(identifier, str):
        key = _ALIASES.get(identifier.lower(), identifier)
        if key not in _CLASSES:
            raise ValueError(
                f"{argument}: unknown initializer {identifier!r}; expected one of "
                f"{sorted(_ALIASES)}"
            )
        return _CLASSES[key]()
    if isinstance(identifier, dict):
        name = identifier.get("class_name")
        config = dict(identifier.get("config") or {})
        key = _ALIASES.get(str(name).lower(), name)
        if key not in _CLASSES:
            raise ValueError(f"{argument}: unknown initializer class {name!r}")
        cls = _CLASSES[key]
        # Keras builds the initializer from its config, cls(**config): a key
        # that is not an argument (a misspelt "stdev") is a TypeError there.
        allowed = list(inspect.signature(cls).parameters)
        unknown = sorted(k for k in config if k not in allowed)
        if unknown:
            raise TypeError(f"{argument}: {key} got unexpected config key(s) {unknown}; "
                            f"it takes {allowed}")
        try:
            return cls(**config)
        except ValueError as exc:
            raise ValueError(f"{argument}: {key}: {exc}") from None
    if callable(identifier):
        return identifier
    raise TypeError(
        f"{argument}: expected an initializer name, dict or callable, "
        f"got {type(identifier).__name__}"
    )


def serialize(init):
    """The Keras-style dict ``get_config`` stores for an initializer."""
    if isinstance(init, Initializer):
        return {"module": "keras.initializers", "class_name": type(init).__name__,
                "config": init.get_config(), "registered_name": None}
    return getattr(init, "__name__", repr(init))
