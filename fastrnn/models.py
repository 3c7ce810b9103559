"""A Keras-style ``Sequential`` model for inference, and the non-recurrent layers it needs.

``Sequential([InputLayer, Embedding, Masking, Dense, Dropout, Activation,
TimeDistributed(Dense), LSTM, GRU, SimpleRNN, RNN, Bidirectional, ...])``
runs its layers in order on NumPy arrays and propagates masks with Keras 3's
rules:

* ``Embedding(mask_zero=True)`` produces the mask ``x != 0``; an Embedding
  without ``mask_zero`` drops any incoming mask.
* ``Masking(mask_value)`` produces ``any(x != mask_value, axis=-1)`` and
  zeroes the masked steps (an incoming mask is replaced).
* ``Dense``, ``Dropout``, ``Activation`` and ``TimeDistributed`` pass the mask
  through unchanged (they do not apply it).
* A recurrent layer consumes the mask; its output carries it on only with
  ``return_sequences=True``.

This is what :func:`fastrnn.load_keras` and :func:`fastrnn.from_keras`
return for Keras models. The layers take Keras 3 configs
(``Layer.from_config(keras_config)``); options that change training only
(regularizers, constraints, initializers, ``trainable``) are accepted and
ignored. Dropout is the identity (inference).
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import threading

import numpy as np

from . import activations as _act
from . import _device, dispatch, serialization
from . import _engine
from ._engine import WEIGHTS_LOCK
from .bidirectional import Bidirectional
from .cells import quantization_mode_of, quantize_cells, resolve_dtype
from .layers import RNN
from .streaming import Stream, StreamBusyError, _with_saved_threads

# ----------------------------------------------------------------- activations


def _softmax(x, axis=-1):
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return e / np.sum(e, axis=axis, keepdims=True)


def _log_softmax(x, axis=-1):
    s = x - np.max(x, axis=axis, keepdims=True)
    return s - np.log(np.sum(np.exp(s), axis=axis, keepdims=True))


_EXTRA_ACTIVATIONS = {
    "softmax": _softmax,
    "log_softmax": _log_softmax,
    "relu6": lambda x: np.clip(x, 0.0, 6.0),
    "leaky_relu": lambda x: np.where(x >= 0, x, 0.2 * x),
    "hard_silu": lambda x: x * np.clip(x / 6.0 + 0.5, 0.0, 1.0),
    "hard_swish": lambda x: x * np.clip(x / 6.0 + 0.5, 0.0, 1.0),
    "mish": lambda x: x * np.tanh(np.logaddexp(0.0, x)),
    "tanh_shrink": lambda x: x - np.tanh(x),
    "log_sigmoid": lambda x: -np.logaddexp(0.0, -x),
}


# The activation names a Dense or Activation takes that have a kernel code:
# Keras 3's, and fastrnn's own (keras2_hard_sigmoid, for models Keras 2 saved).
_CODES = {**_act.CODES, **_act.EXTRA_CODES}


def _activation_name(activation):
    if activation is None:
        return "linear"
    if isinstance(activation, dict):  # Keras-serialised: a function of keras.activations
        inner = activation.get("config")
        if activation.get("class_name") == "function" and isinstance(inner, str):
            if activation.get("module") not in _act._ACTIVATION_MODULES:
                raise ValueError(f"activation: {activation!r} is not one of keras.activations' "
                                 "functions")
            activation = inner
        else:  # ... or an activation layer a built-in computes exactly (or an error)
            activation = _act.name_of(_act.resolve(activation))
    if not isinstance(activation, str):
        raise ValueError(f"activation: expected a name (str), got {activation!r}")
    name = activation.lower()
    if name not in _CODES and name not in _EXTRA_ACTIVATIONS:
        raise ValueError(f"activation: unsupported activation {activation!r}; expected one of "
                         f"{sorted(set(_CODES) | set(_EXTRA_ACTIVATIONS))}")
    return name


def _sigmoid64(z):
    with np.errstate(over="ignore"):  # exp(-z) -> inf: sigmoid 0
        return 1.0 / (1.0 + np.exp(-z))


def _gelu64(z):
    from scipy.special import erf  # (scipy loads only where a model uses gelu)

    return 0.5 * z * (1.0 + erf(z * 0.5 ** 0.5))


# The model's forms of activations whose reference forms (fastrnn.activations.
# apply, written for the recurrent gates) lose relative precision far below
# zero: evaluated in float64 and rounded once, as the compiled Dense
# (kernels._math) does, so that a Dense gives Keras's values there too
# (sigmoid(-17) is 4.14e-8, not 5.96e-8) and the same values at any call size.
_WIDE_FORMS = {
    _act.SIGMOID: _sigmoid64,
    _act.SILU: lambda z: z * _sigmoid64(z),
    _act.GELU: _gelu64,
    _act.SQUAREPLUS: lambda z: (z + np.sqrt(z * z + 4.0)) / 2.0,
}


def _apply_activation(name, x):
    if name in _EXTRA_ACTIVATIONS:
        return np.asarray(_EXTRA_ACTIVATIONS[name](x), dtype=x.dtype)
    code = _CODES[name]
    wide = _WIDE_FORMS.get(code)
    if wide is not None and x.dtype.kind == "f":
        return np.asarray(wide(x.astype(np.float64)), dtype=x.dtype)
    return np.asarray(_act.apply(code, x), dtype=x.dtype)


# ----------------------------------------------------------------- layers

# Keras keys that describe training, building or placement only.
_IGNORED = ("trainable", "dtype", "batch_input_shape", "input_shape", "batch_size",
            "input_dim_", "autocast", "activity_regularizer", "build_config",
            "kernel_initializer", "bias_initializer", "kernel_regularizer",
            "bias_regularizer", "kernel_constraint", "bias_constraint",
            "embeddings_initializer", "embeddings_regularizer", "embeddings_constraint",
            "quantization_config", "lora_alpha", "input_length", "sparse", "seed",
            "noise_shape", "gradient_checkpointing")


class Layer:
    """Base of the non-recurrent layers: config, weights, and one call with a mask."""

    _weight_names = ()

    def __init__(self, name=None, dtype=None, **kwargs):
        self.name = name or _snake(type(self).__name__)
        self.dtype = resolve_dtype(dtype)
        for key in _IGNORED:
            kwargs.pop(key, None)
        if kwargs:
            raise TypeError(f"{type(self).__name__}: unexpected keyword argument(s) "
                            f"{sorted(kwargs)}")

    @property
    def built(self):
        return all(getattr(self, n, None) is not None for n in self._weight_names)

    def get_weights(self):
        return [np.array(getattr(self, n)) for n in self._weight_names
                if getattr(self, n, None) is not None]

    def _weight_shapes(self):
        return []

    def set_weights(self, weights):
        """Load weights in Keras order; shapes must match the config."""
        self._stage_weights(weights)()

    def _stage_weights(self, weights, specs=None):
        """Check ``weights`` against ``specs`` (default :meth:`_weight_shapes`);
        return a function that puts them in (all at once)."""
        weights = list(weights)
        specs = self._weight_shapes() if specs is None else specs
        expect = ", ".join(f"{n} {s}" for n, s in specs)
        if len(weights) != len(specs):
            raise ValueError(f"{type(self).__name__}.set_weights: expected {len(specs)} arrays "
                             f"[{expect}], got {len(weights)}")
        for (n, shape), w in zip(specs, weights):
            w = np.asarray(w)
            if shape is not None and w.shape != tuple(shape):
                raise ValueError(f"{type(self).__name__}.set_weights: {n} expected shape "
                                 f"{tuple(shape)}, got {w.shape}")
            if not np.issubdtype(w.dtype, np.number):
                raise TypeError(f"{type(self).__name__}.set_weights: {n} must be numeric")
        arrays = [(n, np.array(w, dtype=self.dtype)) for (n, _), w in zip(specs, weights)]

        def commit():
            with WEIGHTS_LOCK:
                for n, a in arrays:
                    setattr(self, n, a)

        return commit

    def _snapshot(self):
        """The weights a call runs with (read with ``WEIGHTS_LOCK`` held)."""
        return tuple(getattr(self, n, None) for n in self._weight_names)

    def _with(self, snapshot):
        """This layer with the weights of ``snapshot`` (a shallow copy)."""
        twin = copy.copy(self)
        for n, a in zip(self._weight_names, snapshot):
            setattr(twin, n, a)
        return twin

    def compute_mask(self, x, mask):
        return mask

    def call(self, x, mask=None):
        raise NotImplementedError

    def _run(self, snapshot, x, mask):
        """:meth:`call` with the weights of ``snapshot``."""
        return _call(self._with(snapshot), x, mask)

    def __call__(self, x, mask=None, training=False):
        _device.training_flag(training)  # (checked: inference layers)
        if not self._weight_names:
            return _call(self, x, mask)
        with WEIGHTS_LOCK:  # one consistent set of this layer's weights
            snapshot = self._snapshot()
        return self._run(snapshot, x, mask)

    def _base_config(self):
        return {"name": self.name, "trainable": True}

    @classmethod
    def from_config(cls, config):
        return cls(**copy.deepcopy(config))

    def __repr__(self):
        return f"{type(self).__name__}(name={self.name!r})"


def _fits(want, got):
    """Whether shape ``got`` matches ``want`` (``None``: any size)."""
    return len(got) == len(want) and all(w is None or w == g for w, g in zip(want, got))


def _count(value, name, owner):
    """``value`` as a positive int (an integral float from a config too), or
    a ``ValueError`` naming ``owner``'s argument ``name``."""
    ok = isinstance(value, (int, np.integer, float, np.floating)) \
        and not isinstance(value, (bool, np.bool_)) and float(value).is_integer() and value > 0
    if not ok:
        raise ValueError(f"{owner}: {name} expected a positive integer, got {value!r}")
    return int(value)


def _label(layer, index):
    """How a message names a model's layer: its name, or its place when it has none."""
    return repr(layer.name) if layer.name else f"{index} (an unnamed {type(layer).__name__})"


def _snake(name):
    import re

    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


class InputLayer(Layer):
    """Declares the input shape; the identity at run time.

    ``batch_shape`` (or ``shape``) is checked against the input's
    non-batch, non-``None`` dimensions.
    """

    def __init__(self, shape=None, batch_size=None, dtype=None, batch_shape=None, name=None,
                 sparse=False, ragged=False, optional=False, input_shape=None,
                 batch_input_shape=None, **kwargs):
        super().__init__(name=name, **kwargs)
        batch_shape = batch_shape or batch_input_shape
        if batch_shape is None and (shape is not None or input_shape is not None):
            batch_shape = [batch_size] + list(shape if shape is not None else input_shape)
        self.batch_shape = list(batch_shape) if batch_shape is not None else None
        self.input_dtype = None if dtype is None else str(
            dtype.get("config", {}).get("name") if isinstance(dtype, dict) else dtype)

    def call(self, x, mask=None):
        if self.batch_shape is not None and not _fits(self.batch_shape[1:], np.shape(x)[1:]):
            raise ValueError(f"{self.name}: expected inputs of shape "
                             f"{tuple(self.batch_shape)}, got {np.shape(x)}")
        return x

    def get_config(self):
        return {"batch_shape": self.batch_shape, "dtype": self.input_dtype, "name": self.name}


class Embedding(Layer):
    """Integer indices ``(batch, time)`` -> vectors ``(batch, time, output_dim)``.

    ``mask_zero=True`` makes index 0 padding: the mask ``x != 0`` flows into
    the next layers (on the values given, as in Keras: a float id 0.5 is
    not masked, and embeds row 0). Weight: ``embeddings (input_dim,
    output_dim)``. Indices outside ``[0, input_dim)`` are a ``ValueError``.
    """

    _weight_names = ("embeddings",)

    def __init__(self, input_dim, output_dim, mask_zero=False, name=None, dtype=None,
                 lora_rank=None, **kwargs):
        super().__init__(name=name, **kwargs)
        if lora_rank:
            raise ValueError(f"Embedding {name!r}: LoRA (lora_rank={lora_rank}) is not "
                             "supported; merge the LoRA weights into the embeddings first")
        self.dtype = resolve_dtype(dtype)
        self.input_dim = _count(input_dim, "input_dim", "Embedding")
        self.output_dim = _count(output_dim, "output_dim", "Embedding")
        self.mask_zero = bool(mask_zero)
        self.embeddings = None

    def _weight_shapes(self):
        return [("embeddings", (self.input_dim, self.output_dim))]

    def call(self, x, mask=None):
        x = _device.host_array(x, self.name)
        if x.dtype.kind == "f":
            if not np.all(np.isfinite(x)):
                raise ValueError(f"{self.name}: indices must be finite numbers, got NaN or inf")
            x = x.astype(np.int64)  # Keras casts indices to int32 too
        elif x.dtype.kind not in "iu":
            raise TypeError(f"{self.name}: expected integer indices, got dtype {x.dtype}")
        if x.size and (x.min() < 0 or x.max() >= self.input_dim):
            raise ValueError(f"{self.name}: indices must be in [0, {self.input_dim}), got "
                             f"min {x.min()} max {x.max()}")
        if self.embeddings is None:
            raise ValueError(f"Embedding {self.name!r} has no weights: call set_weights() first")
        return self.embeddings[x]

    def compute_mask(self, x, mask):
        if not self.mask_zero:
            return None
        # on the values as given, as Keras (``inputs != 0``): a float id of
        # 0.5 is kept (and embeds row 0, truncated as call truncates it),
        # and NaN is not cast (call refuses it)
        return _device.host_array(x, self.name) != 0

    def get_config(self):
        return {**self._base_config(), "dtype": self.dtype.name, "input_dim": self.input_dim,
                "output_dim": self.output_dim, "mask_zero": self.mask_zero}


class Masking(Layer):
    """Mask the time steps whose features all equal ``mask_value`` and zero them."""

    def __init__(self, mask_value=0.0, name=None, dtype=None, **kwargs):
        super().__init__(name=name, dtype=dtype, **kwargs)
        self.mask_value = float(mask_value)

    def call(self, x, mask=None):
        x = _device.host_array(x, self.name)
        keep = self.compute_mask(x, None)
        return np.where(keep[..., None], x, np.zeros((), x.dtype))

    def compute_mask(self, x, mask):
        return np.any(_device.host_array(x, self.name) != self.mask_value, axis=-1)

    def get_config(self):
        return {**self._base_config(), "dtype": self.dtype.name, "mask_value": self.mask_value}


# A Dense call of at most this many multiply-adds (rows x inputs x units)
# runs compiled, as one call (fastrnn.kernels.cpu.dense): NumPy's matmul,
# bias add and activation calls cost more than the arithmetic of a few
# rows; the compiled loop is not blocked for the cache, and from about 5e4
# multiply-adds NumPy's BLAS is faster.
_SMALL_DENSE = 32768
_DENSE_ROWS = []


def _dense_rows():
    """The compiled Dense kernel (its module imported at first use)."""
    if not _DENSE_ROWS:
        _DENSE_ROWS.append(dispatch.backend_module("cpu").dense.dense_rows)
    return _DENSE_ROWS[0]


class Dense(Layer):
    """``activation(x @ kernel + bias)`` on the last axis (any rank).

    Weights: ``kernel (input_dim, units)``, ``bias (units,)`` when ``use_bias``.
    """

    _weight_names = ("kernel", "bias")

    def __init__(self, units, activation=None, use_bias=True, name=None, dtype=None,
                 lora_rank=None, input_dim=None, **kwargs):
        super().__init__(name=name, dtype=dtype, **kwargs)
        if lora_rank:
            raise ValueError(f"Dense {name!r}: LoRA (lora_rank={lora_rank}) is not supported; "
                             "merge the LoRA weights into the kernel first")
        self.units = _count(units, "units", "Dense")
        self.activation = _activation_name(activation)
        self.use_bias = bool(use_bias)
        self.input_dim = None if input_dim is None else _count(input_dim, "input_dim", "Dense")
        self.kernel = self.bias = None

    @property
    def built(self):
        return self.kernel is not None

    def _weight_shapes(self, input_dim=None):
        input_dim = self.input_dim if input_dim is None else input_dim
        specs = [("kernel", None if input_dim is None else (input_dim, self.units))]
        if self.use_bias:
            specs.append(("bias", (self.units,)))
        return specs

    def _stage_weights(self, weights):
        weights = list(weights)
        if weights and np.ndim(weights[0]) == 2 and np.shape(weights[0])[1] == self.units \
                and self.input_dim in (None, np.shape(weights[0])[0]):
            input_dim = int(np.shape(weights[0])[0])
        elif weights and self.input_dim is not None:
            raise ValueError(f"Dense.set_weights: kernel expected shape ({self.input_dim}, "
                             f"{self.units}), got {np.shape(weights[0])}")
        elif weights:
            raise ValueError(f"Dense.set_weights: kernel expected shape (input_dim, "
                             f"{self.units}), got {np.shape(weights[0])}")
        else:
            input_dim = self.input_dim
        # checked against the kernel's own input size, with nothing of the
        # layer changed before the commit (another thread may be reading it)
        commit = super()._stage_weights(weights, self._weight_shapes(input_dim))

        def commit_all():
            with WEIGHTS_LOCK:
                if self.input_dim not in (None, input_dim):  # set by a commit meanwhile
                    raise ValueError(f"Dense.set_weights: kernel expected shape "
                                     f"({self.input_dim}, {self.units}), got "
                                     f"{(input_dim, self.units)}")
                self.input_dim = input_dim
                commit()

        return commit_all

    def call(self, x, mask=None):
        return self._apply(x, self.kernel, self.bias)

    def _run(self, snapshot, x, mask):
        if not _library_call(self):  # a subclass's own call
            return super()._run(snapshot, x, mask)
        return self._apply(x, *snapshot)  # (no copy of the layer per call)

    def _apply(self, x, kernel, bias):
        if kernel is None:
            raise ValueError(f"Dense {self.name!r} has no weights: call set_weights() first")
        x = np.asarray(x) if _device.is_device_array(x) else _device.host_array(x, self.name)
        if x.dtype.kind not in "biuf":  # (a cast would drop an imaginary part, parse strings)
            raise TypeError(f"{self.name}: expected real numbers, got dtype {x.dtype}")
        K, U = kernel.shape
        if x.ndim == 0 or x.shape[-1] != K:
            raise ValueError(f"{self.name}: expected {K} input features, got shape {x.shape}")
        if x.size * U <= _SMALL_DENSE and K > 0 and U > 0 and x.dtype == kernel.dtype:
            code = _compiled_dense(self)
            if code is not None:
                rows = np.ascontiguousarray(x.reshape(-1, K))
                out = np.empty((rows.shape[0], U), kernel.dtype)
                _dense_rows()(rows, np.ascontiguousarray(kernel),
                              np.zeros(U, kernel.dtype) if bias is None else bias, code, out)
                return out.reshape(x.shape[:-1] + (U,))
        y = np.matmul(x.astype(self.dtype, copy=False), kernel)
        if bias is not None:
            y = y + bias
        return _apply_activation(self.activation, y)

    def get_config(self):
        return {**self._base_config(), "dtype": self.dtype.name, "units": self.units,
                "activation": self.activation, "use_bias": self.use_bias,
                "input_dim": self.input_dim}


class Dropout(Layer):
    """Dropout: the identity at inference (``rate`` is recorded)."""

    def __init__(self, rate=0.0, name=None, dtype=None, **kwargs):
        super().__init__(name=name, dtype=dtype, **kwargs)
        if isinstance(rate, (bool, np.bool_)) or not isinstance(rate, (int, float, np.number)) \
                or not 0.0 <= rate <= 1.0:
            raise ValueError(f"{type(self).__name__}: rate expected a number in [0, 1], got "
                             f"{rate!r}")
        self.rate = float(rate)

    def call(self, x, mask=None):
        return x

    def get_config(self):
        return {**self._base_config(), "rate": self.rate}


class SpatialDropout1D(Dropout):
    """Identity at inference."""


class GaussianNoise(Dropout):
    """Identity at inference."""

    def __init__(self, stddev=0.0, name=None, **kwargs):
        super().__init__(0.0, name=name, **kwargs)
        self.stddev = float(stddev)

    def get_config(self):
        return {**self._base_config(), "stddev": self.stddev}


class Activation(Layer):
    """Apply a named activation (Keras 3 definitions; ``softmax`` on the last axis)."""

    def __init__(self, activation, name=None, dtype=None, **kwargs):
        super().__init__(name=name, dtype=dtype, **kwargs)
        self.activation = _activation_name(activation)

    def call(self, x, mask=None):
        x = np.asarray(x)
        if x.dtype.kind != "f":
            x = x.astype(self.dtype)
        return _apply_activation(self.activation, x)

    def get_config(self):
        # (the dtype integer inputs are cast to)
        return {**self._base_config(), "activation": self.activation, "dtype": self.dtype.name}


class TimeDistributed(Layer):
    """Apply a per-step layer (``Dense``, ``Activation``, ``Dropout``) to every time step."""

    def __init__(self, layer, name=None, dtype=None, **kwargs):
        super().__init__(name=name, dtype=dtype, **kwargs)
        if isinstance(layer, dict):
            # the class is checked before the layer is made: a recurrent
            # layer's config may declare an input size that builds weights
            # (of any size, from a small file) when it is made
            if layer.get("class_name") not in ("Dense", "Activation", "Dropout"):
                raise ValueError(f"TimeDistributed: unsupported inner layer "
                                 f"{layer.get('class_name')!r}; expected Dense, Activation or "
                                 "Dropout")
            layer = layer_from_config(layer)
        if not isinstance(layer, (Dense, Activation, Dropout)):
            raise ValueError(f"TimeDistributed: unsupported inner layer "
                             f"{type(layer).__name__}; expected Dense, Activation or Dropout")
        self.layer = layer

    @property
    def built(self):
        return self.layer.built

    def get_weights(self):
        return self.layer.get_weights()

    def set_weights(self, weights):
        self.layer.set_weights(weights)

    def _stage_weights(self, weights):
        return self.layer._stage_weights(weights)

    def _snapshot(self):
        return self.layer._snapshot()

    def _with(self, snapshot):
        twin = copy.copy(self)
        twin.layer = self.layer._with(snapshot)
        return twin

    def __call__(self, x, mask=None, training=False):
        _device.training_flag(training)  # (checked: inference layers)
        with WEIGHTS_LOCK:
            snapshot = self._snapshot()
        return self._run(snapshot, x, mask)

    def _run(self, snapshot, x, mask):
        if not _library_call(self):  # a subclass's own call
            return super()._run(snapshot, x, mask)
        return self.layer._run(snapshot, self._timed(x), None)

    def call(self, x, mask=None):
        return _call(self.layer, self._timed(x), None)

    def _timed(self, x):
        x = np.asarray(x) if _device.is_device_array(x) else _device.host_array(x, self.name)
        if x.ndim < 3:
            raise ValueError(f"{self.name}: expected inputs (batch, time, ...), got shape "
                             f"{x.shape}")
        return x

    def get_config(self):
        return {**self._base_config(), "layer": serialize_layer(self.layer)}


for _cls in (InputLayer, Embedding, Masking, Dense, Dropout, SpatialDropout1D, GaussianNoise,
             Activation, TimeDistributed):
    serialization.register("layer")(_cls)


def serialize_layer(layer):
    """``{"class_name", "config"}`` for any layer a :class:`Sequential` holds."""
    return serialization.serialize(layer)


def layer_from_config(obj):
    """A layer from ``{"class_name", "config"}`` (fastrnn's or Keras 3's serialised form).

    Raises ``ValueError`` naming the class when it is not supported.
    """
    return serialization.deserialize(obj, kinds=("rnn", "layer"), where="layer",
                                     what="layer class")


# ----------------------------------------------------------------- model


def _n_weights(layer):
    """How many arrays ``layer.set_weights`` takes, built or not."""
    if isinstance(layer, Bidirectional):
        return _n_weights(layer.forward_layer) + _n_weights(layer.backward_layer)
    if isinstance(layer, RNN):
        return layer._n_weights()
    if isinstance(layer, TimeDistributed):
        return _n_weights(layer.layer)
    return len(layer._weight_shapes())


@serialization.register("model")
class Sequential:
    """Layers run in order, with Keras 3 mask propagation (see the module docstring).

    Parameters
    ----------
    layers : list
        fastrnn recurrent layers (``LSTM``, ``GRU``, ``SimpleRNN``, ``RNN``,
        ``Bidirectional``) and the layers of this module.
    name : str
    trainable : bool
        Keras's flag, accepted so that Keras configs load; fastrnn does not
        train, so it changes nothing.

    Call
    ----
    ``model(x, mask=None)`` runs the whole batch; ``model.predict(x,
    batch_size=32)`` runs it in batches and concatenates the results;
    ``model.stream()`` runs it frame by frame (:class:`ModelStream`).
    Recurrent layers with ``return_state=True`` pass on their output only.
    """

    def __init__(self, layers=None, name=None, trainable=True):
        self.name = name or "sequential"
        self.layers = []
        for layer in layers or []:
            self.add(layer)

    def add(self, layer):
        if isinstance(layer, dict):
            layer = layer_from_config(layer)
        if not isinstance(layer, (Layer, RNN, Bidirectional)):
            raise TypeError(f"Sequential.add: expected a fastrnn layer, got "
                            f"{type(layer).__name__}")
        if isinstance(layer, Bidirectional) and layer.merge_mode is None:
            raise ValueError(f"Sequential: Bidirectional {_label(layer, len(self.layers))} with "
                             "merge_mode=None returns two tensors, and each layer of a "
                             "fastrnn.Sequential (what fastrnn loads a Keras model as, a "
                             "functional one too) gives the next one tensor; give it a "
                             "merge_mode")
        self.layers.append(layer)

    @property
    def built(self):
        return all(layer.built for layer in self.layers)

    def get_weights(self):
        return [w for layer in self.layers for w in layer.get_weights()]

    def set_weights(self, weights):
        """All layers' weights in order (each layer's Keras order). Every
        layer's arrays are checked before any layer changes, and a call in
        another thread runs with all the old weights or all the new ones."""
        weights = list(weights)
        stages, start = [], 0
        for layer in self.layers:
            n = _n_weights(layer)
            stages.append(layer._stage_weights(weights[start:start + n]))
            start += n
        if start != len(weights):
            raise ValueError(f"Sequential.set_weights: expected {start} arrays, got "
                             f"{len(weights)}")
        with WEIGHTS_LOCK:
            for stage in stages:
                stage()

    def quantize(self, mode):
        """Quantize the recurrent layers' weights to ``mode``, together (see
        :meth:`fastrnn.LSTM.quantize`); returns the model. ``Dense``,
        ``Embedding`` and the other per-step layers keep their float32
        weights: a recurrent layer reads its whole recurrent matrix at every
        step, the others once per call.

        Raises
        ------
        ValueError
            As :meth:`fastrnn.LSTM.quantize`, and for a model without a
            recurrent layer.
        """
        cells = self._quantizable()
        if not cells:
            raise ValueError(f"{type(self).__name__}.quantize: the model has no recurrent "
                             "layer to quantize")
        quantize_cells(type(self).__name__, cells, mode)
        return self

    @property
    def quantization_mode(self):
        """None, the recurrent layers' mode, or ``"mixed"``."""
        return quantization_mode_of(self._quantizable())

    def _quantizable(self):
        return [c for layer in self.layers if hasattr(layer, "_quantizable")
                for c in layer._quantizable()]

    def __call__(self, x, mask=None, training=False):
        """Run the layers on ``x`` (a batch); ``mask (batch, time)`` optional.

        Every layer runs with the weights it had when the call began (read
        together: see :mod:`fastrnn._engine`)."""
        training = _device.training_flag(training)
        if not _device.is_device_array(x):
            x = _device.host_array(x, "x")
        inputs = x
        with WEIGHTS_LOCK:
            snapshots = [layer._snapshot() for layer in self.layers]
        for layer, snapshot in zip(self.layers, snapshots):
            if isinstance(layer, (RNN, Bidirectional)):
                y = layer._call(x, mask, None, training, snapshot)
                if layer.return_state:
                    y = y[0]
                mask = mask if layer.return_sequences else None
            else:
                new_mask = layer.compute_mask(x, mask)
                y = layer._run(snapshot, x, mask)
                mask = new_mask
            x = y
        if isinstance(x, np.ndarray) and np.may_share_memory(x, inputs):
            x = x.copy()  # (identity layers only: the output is never the input)
        return x

    def predict(self, x, batch_size=32, verbose=0, mask=None):
        """Run ``x`` in batches of ``batch_size`` and concatenate the outputs
        (``verbose`` is Keras's progress bar: accepted, and nothing is printed)."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
                or batch_size <= 0:
            raise ValueError(f"batch_size: expected a positive integer, got {batch_size!r}")
        x = _device.host_array(x, "x")
        if x.ndim == 0:
            raise ValueError("x: expected an array with a batch axis (batch, time, ...), got a "
                             "scalar")
        n = x.shape[0]
        if n == 0:
            raise ValueError("predict: the input batch is empty")
        if any(getattr(layer, "stateful", False) for layer in self.layers) and batch_size < n:
            raise ValueError("predict: a stateful model must be run in one batch "
                             "(batch_size >= number of samples)")
        if mask is not None:
            # checked whole: each batch's slice of a mask of other rows would fit or
            # fail with the slice's shape
            mask = _device.host_array(mask, "mask")
            if x.ndim >= 2 and (mask.ndim != 2 or mask.shape != x.shape[:2]):
                raise ValueError(f"mask: expected shape (batch, time) = {tuple(x.shape[:2])}, "
                                 f"got {tuple(mask.shape)}")
        outs = []
        for start in range(0, n, batch_size):
            sl = slice(start, start + batch_size)
            outs.append(self(x[sl], mask=None if mask is None else mask[sl]))
        return outs[0] if len(outs) == 1 else np.concatenate(outs, axis=0)

    def reset_states(self):
        for layer in self.layers:
            if hasattr(layer, "reset_states"):
                layer.reset_states()

    def stream(self, batch_size=1, backend=None, threads=None):
        """A :class:`ModelStream`: the model frame by frame, each recurrent
        layer's state carried between calls (``backend`` and ``threads`` go
        to every recurrent layer's :class:`fastrnn.streaming.Stream`)."""
        return ModelStream(self, batch_size, backend=backend, threads=threads)

    def get_config(self):
        return {"name": self.name, "layers": [serialize_layer(layer) for layer in self.layers]}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        layers = [layer_from_config(c) for c in config.pop("layers")]
        return cls(layers, name=config.get("name"))

    def summary(self, print_fn=None):
        """Print each layer's class, name and parameter count, then the
        total, as Keras's ``summary``: line by line through ``print_fn``
        (default ``print``); returns None."""
        print_fn = print if print_fn is None else print_fn
        print_fn(f"Sequential {self.name!r}")
        for layer in self.layers:
            n = sum(int(np.prod(w.shape)) for w in layer.get_weights())
            print_fn(f"  {type(layer).__name__:<16} {layer.name or '-'!s:<24} {n} parameters")
        print_fn(f"Total parameters: {self.count_params()}")

    def count_params(self):
        """The number of weights (scalars) of every layer, as Keras's
        ``count_params``."""
        return sum(int(np.prod(w.shape)) for w in self.get_weights())

    def get_layer(self, name=None, index=None):
        """The layer called ``name``, or at ``index``, as Keras's ``get_layer``."""
        if (name is None) == (index is None):
            raise ValueError("get_layer: give name or index, one of them")
        if index is not None:
            if isinstance(index, bool) or not isinstance(index, (int, np.integer)) \
                    or not -len(self.layers) <= index < len(self.layers):
                raise ValueError(f"get_layer: index expected an integer in "
                                 f"[{-len(self.layers)}, {len(self.layers)}), got {index!r}")
            return self.layers[index]
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise ValueError(f"get_layer: no layer named {name!r}; the layers are "
                         f"{[layer.name for layer in self.layers]}")

    def pop(self):
        """Remove the last layer and return it, as Keras's ``pop``."""
        if not self.layers:
            raise ValueError("Sequential.pop: the model has no layer")
        return self.layers.pop()

    def __repr__(self):
        return f"Sequential(name={self.name!r}, layers={len(self.layers)})"


class ModelStream:
    """Frame-by-frame inference through a :class:`Sequential` model.

    Made by ``model.stream(batch_size=1, backend=None, threads=None)``. The
    recurrent layers run in :class:`fastrnn.streaming.Stream` objects
    (``backend`` and ``threads`` as there; each picks its engine and says
    why in ``stream.streams[i].backend_reason``): consecutive ones that
    can (built-in cells, the same dtype, backend and ``nan_policy``, each
    giving its sequence to the next) in one stream of their cells stacked,
    which runs a frame through all of them in one call (and on two cores,
    one helper thread for the stack), the others one stream each. The
    other layers run as in a model call, on the frame.

    Call
    ----
    ``stream(x)`` with ``x`` one frame ``(batch, features)`` (``(batch,)``
    token ids when the model starts with an ``Embedding``) or a chunk
    ``(batch, time, features)`` (``(batch, time)``), or in a stream of batch
    1 an unbatched frame ``(features,)`` (one token id), returns what the model
    returns for the sequence seen so far at those steps: for a frame, the
    model's output at that step with the time axis dropped (the last
    recurrent layer's ``return_sequences`` does not matter); for a chunk,
    the model's output on the chunk with every recurrent state carried
    from the call before. A chunk of 0 steps returns an empty sequence
    ``(batch, 0, ...)`` where the model returns sequences, and is a
    ``ValueError`` where it returns one step (the last recurrent layer's
    ``return_sequences=False``): it has no last step to return.

    A stream has no padding: a frame that a ``Masking`` layer or an
    ``Embedding(mask_zero=True)`` would mask is a ``ValueError``, before any
    state changes (the model would skip it; a stream runs every frame it is
    given, so leave padding out). A frame or chunk that raises, in any
    layer (a recurrent layer's checks of features, batch and dtype or its
    ``nan_policy="raise"``, a user's layer, ...), leaves every state as it
    was: the states of the recurrent layers that ran are put back (copied
    before each call of a model with layers after its first recurrent one).
    Calling one stream from two threads at once raises
    :class:`fastrnn.streaming.StreamBusyError`, and so do reading or
    setting ``states``, ``reset()`` and ``fastrnn.save`` while a frame runs
    (its layers' states are then of two frames). A layer that gives another
    dtype than the next recurrent layer's is cast to it, as in a model call;
    the caller's frames are not: a recurrent layer they reach as given
    (first, or behind ``Dropout`` or ``Masking`` layers) refuses another
    dtype with a ``TypeError``, as its own stream does.

    Attributes
    ----------
    streams : list of fastrnn.streaming.Stream
        One per recurrent layer or run of stacked recurrent layers, in
        order.
    states : list
        Each recurrent layer's ``Stream.states``, in order; reading returns
        copies, assigning checks and copies in (all layers' or, on an
        error, none).
    batch_size : int

    ``Bidirectional`` layers (they need the future), ``go_backwards`` and
    ``time_major`` recurrent layers, and masking layers after the first
    recurrent layer are refused when the stream is made, and so are models
    that no call can run: ``TimeDistributed`` after a recurrent layer with
    ``return_sequences=False`` (no time axis), and a ``Dense`` or recurrent
    layer whose weights or config fix another number of input features than
    the layer before gives (a ``ValueError`` naming both layers).
    """

    def __init__(self, model, batch_size=1, backend=None, threads=None):
        self.model = model
        self._backend_arg, self._threads_arg = backend, threads
        self._steps = []  # per layer: (kind, the Stream or the layer, detail)
        self._busy = threading.Lock()
        self._groups = []  # (Stream, the model's recurrent layers it runs)
        sequence = True  # whether the layers so far give a sequence (on a chunk)
        last = None  # the label of the last recurrent layer so far
        # The last axis the layers so far give, where known, and the label of
        # the layer that gives it: a layer that cannot take it fails every
        # frame (as every model call), after the recurrent layers before it
        # ran, so the stream is refused now.
        features = giver = None
        for index, layer in enumerate(model.layers):
            where = f"{type(model).__name__}.stream: layer {_label(layer, index)}"
            if isinstance(layer, Bidirectional):
                raise TypeError(f"{where} is Bidirectional: its backward half needs the whole "
                                "sequence (future frames) first, so the model cannot stream")
            takes, gives = _feature_sizes(layer)
            if None not in (takes, features) and takes != features:
                raise ValueError(f"{where} takes {takes} input features, and layer {giver} "
                                 f"before it gives {features} (the model call fails on them "
                                 "too)")
            if gives is not ...:  # (... : it gives what it takes)
                features, giver = gives, _label(layer, index)
            if isinstance(layer, TimeDistributed) and not sequence:
                raise ValueError(f"{where} is TimeDistributed and follows recurrent layer "
                                 f"{last}, which returns one step (return_sequences=False): "
                                 "it needs a time axis (the model call fails on it too)")
            if isinstance(layer, RNN):
                if layer.time_major:
                    raise ValueError(f"{where} is time_major; a model stream takes "
                                     "batch-major frames and chunks")
                if not sequence:
                    raise ValueError(f"{where} follows a recurrent layer that returns one step "
                                     "(return_sequences=False): it needs a sequence")
                sequence = layer.return_sequences
                last = _label(layer, index)
                if self._groups and self._steps[-1][0] == _STREAM \
                        and _stackable(self._groups[-1][1][-1], layer):
                    self._groups[-1][1].append(layer)  # streamed with the layers before
                else:
                    self._groups.append((None, [layer]))
                    self._steps.append((_STREAM, len(self._groups) - 1, layer.return_state))
                continue
            masks = isinstance(layer, Masking) or getattr(layer, "mask_zero", False)
            if masks and self._groups:
                raise ValueError(f"{where} masks steps after a recurrent layer; a model stream "
                                 "checks masks before its first recurrent layer only")
            code = _compiled_dense(layer)
            # (_MASK and _LAYER: whether the layer gives the caller's array or
            # its values in its dtype, which the next recurrent layer then
            # takes as the caller's: see __call__)
            passes = isinstance(layer, (Masking, Dropout)) and _library_call(layer)
            if isinstance(layer, InputLayer):
                self._steps.append((_INPUT, layer, None))
            elif masks:
                self._steps.append((_MASK, layer, passes))
            elif code is not None:
                self._steps.append((_DENSE, layer, code))
            else:
                self._steps.append((_LAYER, layer, passes))
        if not self._groups:
            raise ValueError(f"{type(model).__name__}.stream: the model has no recurrent "
                             "layer (nothing to carry from frame to frame)")
        for g, (_, group) in enumerate(self._groups):
            layer = group[0] if len(group) == 1 else _stacked(group)
            stream = Stream(layer, batch_size=batch_size, backend=backend, threads=threads)
            self._groups[g] = (stream, group)
        for i, (kind, step, detail) in enumerate(self._steps):
            if kind == _STREAM:  # the group's stream; a stack returns no states
                stream, group = self._groups[step]
                self._steps[i] = (kind, stream, detail and len(group) == 1)
        self.batch_size = self.streams[0].batch_size
        # Any layer after the first recurrent one may fail a frame after the
        # recurrent layers before it ran (a later one's nan_policy="raise", a
        # user's layer, weights set since, ...): every state is then put back
        # (see __call__), from copies taken before the frame into buffers kept
        # here. A model that ends in its first recurrent layer needs none (a
        # Stream that raises leaves its state as it was).
        first_stream = next(i for i, (kind, _, _) in enumerate(self._steps)
                            if kind == _STREAM)
        self._undo = first_stream < len(self._steps) - 1
        self._held_streams = tuple(self.streams)
        self._kept, self._kept_states, self._kept_at = [], [], None  # (see _keep)
        # the model's output is the last step of the sequence (a chunk of no
        # steps has none: see __call__)
        self._last_step = not sequence
        self._reads = [None if kind in (_STREAM, _INPUT) else layer._snapshot
                       for kind, layer, _ in self._steps]
        self._twins = [None] * len(self._steps)
        self._zero_bias = {}  # step -> zeros standing in for a bias-less Dense's bias
        if any(kind == _DENSE for kind, _, _ in self._steps):
            self._dense_rows = _dense_rows()
        # a frame has one axis less than the model's input (batch, time, ...)
        first = next((layer for kind, layer, _ in self._steps
                      if not isinstance(layer, (InputLayer, Dropout))), None)
        self._frame_ndim = 1 if isinstance(first, Embedding) else 2

    def __call__(self, x):
        if type(x) is not np.ndarray or x.dtype.kind == "V":  # (per frame: no call otherwise)
            x = _device.host_array(x, "x")
        if x.ndim == self._frame_ndim - 1 and self.batch_size == 1:  # an unbatched frame
            return self(x[None])[0]
        frame = x.ndim == self._frame_ndim
        if not frame and x.ndim != self._frame_ndim + 1:
            shape = "(batch,) token ids" if self._frame_ndim == 1 else "(batch, features)"
            chunk = "(batch, time)" if self._frame_ndim == 1 else "(batch, time, features)"
            raise ValueError(f"x: expected a frame {shape} or a chunk {chunk}, got shape "
                             f"{x.shape}")
        if x.shape[0] != self.batch_size:  # (said here: past an Embedding, the shape differs)
            what = ("token ids" if self._frame_ndim == 1 else "rows") + (
                " per frame" if frame else " per chunk")
            raise ValueError(f"x: expected {self.batch_size} {what} (batch_size="
                             f"{self.batch_size}), got shape {x.shape}; the state is unchanged")
        if not frame and x.shape[1] == 0 and self._last_step:
            # (the layers after the last recurrent one would run on the zeros
            # it gives for no steps, not on its output at the last frame)
            raise ValueError(f"x: a chunk of 0 steps (shape {x.shape}) has no last step to "
                             "return (the model's last recurrent layer returns one step, "
                             "return_sequences=False); the state is unchanged")
        if not self._busy.acquire(False):
            raise StreamBusyError("ModelStream: called while another call on the same stream "
                                  "is running (two threads sharing one stream)")
        held = self._held_streams
        try:
            # every layer's weights of one moment: the per-step layers'
            # snapshots, and the recurrent streams hold theirs for this call
            # (a set_weights while the frame runs waits for the next one)
            with WEIGHTS_LOCK:
                snapshots = [None if read is None else read() for read in self._reads]
                generation = _engine.generation
                for stream in held:
                    if stream._generation != generation:  # (weights changed somewhere)
                        stream._take_weights()
                    stream._held = True
            if self._undo:  # (see __init__)
                if generation != self._kept_at:  # (a stream may have been set up since)
                    self._keep(generation)
                for state, saved in self._kept:
                    saved[:] = state
            try:
                # A frame keeps no time axis from layer to layer (each of these
                # layers works on the last axis); ``timed``: a chunk still has one.
                timed = not frame
                # x is still the caller's array, or its values in its dtype
                # (Dropout and Masking give them): a stream casts none of
                # those, the same rule with or without such layers in front
                given = True
                for i, (kind, step, detail) in enumerate(self._steps):
                    if kind == _STREAM:
                        if not given and x.dtype != step._dt:
                            # a layer before it gave another dtype: cast, as a model call does
                            x = x.astype(step._dt)
                        x = step(x)
                        if detail:  # return_state: the model passes the output on
                            x = x[0]
                        given = False
                        timed = timed and step.layer.return_sequences
                    elif kind == _DENSE and (frame or timed
                                             or not isinstance(step, TimeDistributed)):
                        x = self._dense(x, snapshots[i], detail, i)
                        given = False
                    elif kind == _INPUT:
                        _check_features(step, x, timed)
                    else:
                        if kind == _MASK:
                            mask = step.compute_mask(x if timed else x[:, None], None)
                            if not np.all(mask):
                                raise ValueError(f"x: layer {_label(step, i)} masks steps of "
                                                 "this input (a stream runs every frame it is "
                                                 "given: leave padding out)")
                        x = self._layer(i, x if timed or not frame else x[:, None],
                                        snapshots[i])
                        x = x if timed or not frame else x[:, 0]
                        given = given and detail
                return x
            except BaseException:  # every state as before the frame, whatever failed
                if self._undo:
                    self._restore_states()
                raise
        finally:
            for stream in held:
                stream._held = False  # (released: its next call takes new weights)
            self._busy.release()

    def _keep(self, generation):
        """Buffers for a copy of every recurrent layer's carried states,
        taken before each frame (a memory copy each, no allocation per
        frame) and put back by :meth:`_restore_states` if it fails. A stream
        set up again (new state arrays) had new weights, a change of
        ``generation``, or was not set up (an unbuilt layer): made again
        then."""
        held = self._held_streams
        self._kept_states = [getattr(stream, "_states", None) for stream in held]
        self._kept = [pair for stream, states in zip(held, self._kept_states)
                      for pair in _state_copies(stream, states)]
        self._kept_at = generation if None not in self._kept_states else None

    def _restore_states(self):
        """Every recurrent layer's states as the copies taken before the frame."""
        for stream, states in zip(self._held_streams, self._kept_states):
            if states is None:  # set up by this frame (its first): its states were zeros
                for state in getattr(stream, "_states", None) or ():
                    state[...] = 0
        for state, saved in self._kept:
            state[:] = saved

    def _dense(self, x, weights, code, i):
        """A ``Dense`` (or one in ``TimeDistributed``) compiled: one call (see
        :mod:`fastrnn.kernels.cpu.dense`); as in a model call where ``x``
        does not have the layer's dtype and features."""
        kernel, bias = weights
        if kernel is None or x.dtype != kernel.dtype or x.shape[-1] != kernel.shape[0]:
            return self._layer(i, x, weights)  # (which raises what a model call raises)
        K, U = kernel.shape
        flat = x.ndim == 2 and x.flags.c_contiguous  # a frame: the rows as they are
        rows = x if flat else np.ascontiguousarray(x.reshape(-1, K))
        if bias is None:  # (zeros kept per layer: no allocation per frame)
            bias = self._zero_bias.get(i)
            if bias is None or bias.shape[0] != U or bias.dtype != kernel.dtype:
                bias = self._zero_bias[i] = np.zeros(U, kernel.dtype)
        out = np.empty((rows.shape[0], U), kernel.dtype)
        self._dense_rows(rows, kernel, bias, code, out)
        return out if flat else out.reshape(x.shape[:-1] + (U,))

    def _layer(self, i, x, weights):
        """Per-step layer ``i`` on ``x`` as in a model call, with ``weights``
        (its copy holding them is kept while they stay the same arrays)."""
        layer = self._steps[i][1]
        if not weights:
            return _call(layer, x, None)
        cached = self._twins[i]
        if cached is None or any(a is not b for a, b in zip(cached[0], weights)):
            cached = self._twins[i] = (weights, layer._with(weights))
        return _call(cached[1], x, None)

    @contextlib.contextmanager
    def _hold(self, what):
        """This stream's lock, held for ``what`` (states, reset): a frame
        running in another thread is half way through the layers, whose
        states are then of two different frames, so it is a StreamBusyError."""
        if not self._busy.acquire(False):
            raise StreamBusyError(f"ModelStream.{what}: a frame is running on this stream in "
                                  "another thread (its layers' states are of two frames "
                                  "until it ends)")
        try:
            yield
        finally:
            self._busy.release()

    @property
    def states(self):
        """Each recurrent layer's carried states (copies), in order."""
        with self._hold("states"):
            return self._states_now()

    def _states_now(self):
        out = []
        for stream, group in self._groups:
            states = stream.states
            if len(group) == 1:
                out.append(states)
                continue
            k = 0  # a stack's states: one entry per cell
            for layer in group:
                n = len(layer.cells)
                out.append(states[k] if n == 1 else states[k:k + n])
                k += n
        return out

    @states.setter
    def states(self, values):
        with self._hold("states"):
            self._set_states(values)

    def _set_states(self, values):
        values = list(values)
        n_layers = sum(len(group) for _, group in self._groups)
        if len(values) != n_layers:
            raise ValueError(f"states: expected one entry per recurrent layer "
                             f"({n_layers}), got {len(values)}")
        per_stream, k = [], 0
        for _, group in self._groups:
            if len(group) == 1:
                per_stream.append(values[k])
            else:  # the stack's states: one entry per cell
                per_stream.append([v for layer, value in zip(group, values[k:k + len(group)])
                                   for v in ([value] if len(layer.cells) == 1 else list(value))])
            k += len(group)
        old = [s.states for s in self.streams]
        firsts = [0]  # each stream's first entry in ``values``
        for _, group in self._groups[:-1]:
            firsts.append(firsts[-1] + len(group))
        try:
            for s, v, first in zip(self.streams, per_stream, firsts):
                try:
                    s.states = v
                except (TypeError, ValueError) as e:  # (its message counts its own entries)
                    raise type(e)(f"states[{first}]: {e}") from None
        except (TypeError, ValueError):  # all or nothing: put back the ones already set
            for s, v in zip(self.streams, old):
                s.states = v
            raise

    def reset(self):
        """Zero every recurrent layer's state (a new utterance, a new client, ...)."""
        with self._hold("reset"):
            for s in self.streams:
                s.reset()

    reset_states = reset

    @property
    def streams(self):
        return [stream for stream, _ in self._groups]

    def _config(self):
        """What :func:`fastrnn.save` records to make the stream again."""
        # (checked by the streams made: a NumPy integer threads is a number here)
        threads = self._threads_arg
        return {"batch_size": self.batch_size, "backend": self._backend_arg,
                "threads": None if threads is None else int(threads)}

    @staticmethod
    def _restore(model, batch_size, backend, threads, where):
        """The stream :func:`fastrnn.load` makes again from a file
        (``where``), its :meth:`_config` read back: the saved ``threads`` is
        a preference, which a model stream that cannot run it here is made
        without (a ``UserWarning``; see
        :func:`fastrnn.streaming._with_saved_threads`)."""
        return _with_saved_threads(
            lambda t: model.stream(batch_size, backend=backend, threads=t), threads, where)

    def __getstate__(self):
        raise TypeError("ModelStream objects are not pickled: use fastrnn.save(stream, path) "
                        "and fastrnn.load(path)")

    def __repr__(self):
        return (f"ModelStream({type(self.model).__name__}(name={self.model.name!r}), "
                f"batch_size={self.batch_size}, recurrent layers={len(self.streams)})")


# what a model stream does with each layer (ModelStream._steps)
_STREAM, _DENSE, _INPUT, _MASK, _LAYER = range(5)


def _stackable(below, above):
    """Whether recurrent layer ``above``, right after ``below``, streams in
    one stack with it: ``below`` gives its sequence, both run built-in
    cells forward with the same dtype, backend and NaN policy."""
    return (below.return_sequences and below.compiled and above.compiled
            and not below.go_backwards and not above.go_backwards
            and below.dtype == above.dtype and below.backend_arg == above.backend_arg
            and below.nan_policy == above.nan_policy)


def _stacked(group):
    """One ``RNN`` over the cells of ``group`` (consecutive recurrent layers
    of a model, see :func:`_stackable`), which share them: set_weights or
    quantize on a layer reaches the stack's stream."""
    return RNN([c for layer in group for c in layer.cells],
               return_sequences=group[-1].return_sequences, backend=group[0].backend_arg,
               nan_policy=group[0].nan_policy, dtype=group[0].dtype.name)


def _library_call(layer):
    """Whether ``layer.call`` is fastrnn's own: a subclass that overrides it
    (as Keras users do) runs its ``call`` in a model call and a model stream,
    never the compiled shortcut of the class it extends."""
    module = getattr(type(layer).call, "__module__", None) or ""
    return module == "fastrnn" or module.startswith("fastrnn.")


_CALL_KEYWORDS = {}  # call function -> the keywords it takes of (mask, training)


def _call(layer, x, mask):
    """``layer.call(x)`` as Keras makes it: ``mask`` and ``training=False``
    by keyword, each only where the call takes it (a user's ``call(self,
    inputs)`` or ``call(self, inputs, training=None)`` works as in Keras)."""
    call = layer.call
    key = getattr(call, "__func__", call)
    keywords = _CALL_KEYWORDS.get(key)
    if keywords is None:
        params = inspect.signature(call).parameters.values()
        anything = any(p.kind is p.VAR_KEYWORD for p in params)
        names = {p.name for p in params if p.kind is not p.POSITIONAL_ONLY}
        keywords = tuple(k for k in ("mask", "training") if anything or k in names)
        if len(_CALL_KEYWORDS) < 1024:  # (a bound for functions made per call)
            _CALL_KEYWORDS[key] = keywords
    if keywords == ("mask",):  # (every fastrnn layer)
        return call(x, mask=mask)
    return call(x, **{k: (mask if k == "mask" else False) for k in keywords})


def _feature_sizes(layer):
    """``(takes, gives)``: the sizes of the last axis ``layer`` takes and
    gives in a model call, where its config or weights fix them (``None``:
    any size, or not known; ``gives`` ``...``: the size it takes, as a
    layer that keeps the features)."""
    if isinstance(layer, RNN):
        if not layer.compiled:  # (a user's cell: what its call does)
            return None, None
        return getattr(layer.cells[0], "input_dim", None), int(layer.output_size)
    inner = layer.layer if isinstance(layer, TimeDistributed) else layer
    if not _library_call(layer) or not _library_call(inner):
        return None, None  # a subclass's own call
    if isinstance(inner, Dense):
        return (inner.input_dim if inner.kernel is None else int(inner.kernel.shape[0]),
                inner.units)
    if isinstance(inner, Embedding):
        return None, inner.output_dim
    if isinstance(inner, InputLayer):
        shape = inner.batch_shape
        size = shape[-1] if shape is not None and len(shape) >= 3 else None
        return size, (... if size is None else size)
    if isinstance(inner, (Masking, Dropout, Activation)):
        return None, ...
    return None, None


def _compiled_dense(layer):
    """The activation code with which a model stream runs ``layer`` (a
    ``Dense``, or one in ``TimeDistributed``) compiled, or None."""
    dense = layer.layer if isinstance(layer, TimeDistributed) else layer
    if not isinstance(dense, Dense) or np.dtype(dense.dtype).kind != "f" \
            or not _library_call(dense) or not _library_call(layer):
        return None
    name = dense.activation
    if name in ("softmax", "log_softmax"):
        return _act.SOFTMAX if name == "softmax" else _act.LOG_SOFTMAX
    if name in _EXTRA_ACTIVATIONS or name not in _CODES:
        return None
    return _CODES[name]


def _state_copies(stream, states):
    """``[(state, buffer)]``: where ``stream``'s carried ``states`` are, and
    buffers of their size, as memoryviews of their bytes, which a slice
    assignment copies at the cost of a memcpy (a NumPy copy costs several
    times more than the copy itself for states this small); the stream
    kernels keep every state in one array, ``_s``, copied whole."""
    if states is None:
        return ()
    flat = getattr(stream, "_s", None)
    arrays = [flat] if flat is not None else states
    pairs = []
    for a in arrays:
        if a.flags.c_contiguous:
            pairs.append((memoryview(a).cast("B"), memoryview(np.empty_like(a)).cast("B")))
        else:  # (as NumPy arrays)
            pairs.append((a, np.empty_like(a)))
    return pairs


def _check_features(layer, x, timed):
    """An ``InputLayer``'s declared shape against a stream's input, less the
    time axis (a chunk may have any length)."""
    if layer.batch_shape is None:
        return
    want = layer.batch_shape[2:]
    got = np.shape(x)[2:] if timed else np.shape(x)[1:]
    if not _fits(want, got):
        raise ValueError(f"x: {layer.name} expects features {tuple(want)}, got "
                         f"{tuple(got)}")
