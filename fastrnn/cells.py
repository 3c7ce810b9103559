"""Keras-style recurrent cells: parameters, configuration and one step.

A cell owns its weights (in Keras 3 layout and gate order) and its
configuration; it has no numerical loop of its own. ``cell.params()``
describes it to the kernels (:mod:`fastrnn.kernels`), and a one-step call
``cell(x_t, states)`` runs through the engine (:mod:`fastrnn._engine`): on
the ``cpu`` backend, the per-frame kernels that streams use.

Weights change only through ``build``, ``set_weights`` and ``quantize``,
which swap a complete new set in at once (see :mod:`fastrnn._engine`): a call running
in another thread computes with the old set or the new one, never a mix.

Arguments that only matter for training are accepted so that Keras
configurations load unchanged: the ``*_regularizer`` and ``*_constraint``
arguments are stored in ``get_config()`` and otherwise unused (fastrnn does
not train); ``trainable``, ``implementation`` (numerically identical),
``activity_regularizer`` and ``autocast`` are dropped. ``dropout`` and
``recurrent_dropout`` apply only when a layer is called with
``training=True``, their masks drawn from ``seed``.

The module is long because the three cells and their stack share one weight
machinery (build, ``set_weights``, ``quantize``, the one-step call); kept
together, it is written once.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from . import _device, _engine, activations, dispatch, initializers, serialization
from ._engine import WEIGHTS_LOCK, Weights
from ._nest import flatten
from .kernels import (PRECISIONS, GRUParams, LSTMParams, QuantizedWeights, SimpleRNNParams,
                      check_int8_finite)
from .kernels import quantize as quantize_params

_TRAINING_ONLY = (
    "kernel_regularizer", "recurrent_regularizer", "bias_regularizer",
    "kernel_constraint", "recurrent_constraint", "bias_constraint",
)
# Keras base-layer keywords that carry no meaning for inference.
# (Shape arguments belong to the layers, which use them; given to a cell they
# are an error rather than ignored.)
_IGNORED_KW = ("trainable", "implementation", "activity_regularizer", "autocast")


#: Keras's mixed-precision policies -> their variables' dtype. Keras computes
#: in float16 / bfloat16 with float32 weights; fastrnn has no half-precision
#: arithmetic, so such a layer is a float32 layer with the same weights (its
#: outputs differ from Keras's by Keras's half-precision rounding).
_MIXED_POLICIES = {"mixed_float16": "float32", "mixed_bfloat16": "float32"}


def resolve_dtype(dtype, argument="dtype"):
    """``"float32"`` / ``"float64"`` from a dtype, a name or a Keras DTypePolicy dict.

    A policy without a name (or with ``None``) is float32, as Keras reads it
    (its ``floatx``); a quantized policy's dtype is its ``source_name``; a
    mixed-precision policy (``"mixed_float16"``, ``"mixed_bfloat16"``) is
    float32, the dtype of its variables."""
    if isinstance(dtype, dict):  # Keras 3 serialised DTypePolicy
        config = dtype.get("config")
        if config is None:
            config = {}
        if not isinstance(config, dict):
            raise ValueError(f"{argument}: a dtype policy's config must be a dict, got "
                             f"{type(config).__name__} {config!r}")
        for key in ("name", "source_name"):
            if key in config:
                dtype = config[key]
                break
        else:
            dtype = dtype.get("name")
    if dtype is None:
        return np.dtype(np.float32)
    if isinstance(dtype, str) and dtype in _MIXED_POLICIES:
        dtype = _MIXED_POLICIES[dtype]
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise ValueError(f"{argument}: expected float32 or float64, got {dtype!r}") from exc
    if dt not in (np.float32, np.float64):
        raise ValueError(f"{argument}: expected float32 or float64, got {dtype!r}")
    return dt


def _check_rate(value, argument):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{argument}: expected a rate in [0, 1), got {value!r}")
    value = float(value)
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{argument}: expected a rate in [0, 1), got {value}")
    return value


def _pop_common(kwargs, cls_name):
    name = kwargs.pop("name", None)
    dtype = resolve_dtype(kwargs.pop("dtype", None))
    for key in _IGNORED_KW:
        kwargs.pop(key, None)
    if kwargs:
        raise TypeError(f"{cls_name}: unexpected keyword argument(s) {sorted(kwargs)}")
    return name, dtype


class _Cell:
    """Shared machinery of the three built-in cells."""

    _gates = 1
    _kind = None

    def __init__(self, units, activation="tanh", use_bias=True,
                 kernel_initializer="glorot_uniform", recurrent_initializer="orthogonal",
                 bias_initializer="zeros", dropout=0.0, recurrent_dropout=0.0, seed=None,
                 **kwargs):
        if isinstance(units, bool) or not isinstance(units, (int, np.integer)) or units <= 0:
            raise ValueError(f"units: expected a positive integer, got {units!r}")
        self.units = int(units)
        self.activation = activations.resolve(activation, "activation")
        self.use_bias = _device.flag(use_bias, "use_bias")
        self.kernel_initializer = initializers.get(kernel_initializer, "kernel_initializer")
        self.recurrent_initializer = initializers.get(recurrent_initializer,
                                                      "recurrent_initializer")
        self.bias_initializer = initializers.get(bias_initializer, "bias_initializer")
        for key in _TRAINING_ONLY:
            setattr(self, key, kwargs.pop(key, None))
        self.dropout = _check_rate(dropout, "dropout")
        self.recurrent_dropout = _check_rate(recurrent_dropout, "recurrent_dropout")
        self.seed = seed
        self._rng = None  # dropout's generator: seeded once, drawn on (see _dropout_rng)
        self.name, self.dtype = _pop_common(kwargs, type(self).__name__)
        self.built = False
        self.input_dim = None
        self.kernel = self.recurrent_kernel = self.bias = None
        self._kernel_weights = None  # an _engine.Weights once built
        self._frames = None  # (key, _engine.frames_for(...)) of the last one-step call
        self.version = 0  # bumped whenever the weights change
        self.quantization_mode = None  # or a mode of quantize()
        self._quantized = None  # the compact weights (kernels.QuantizedWeights) when quantized

    # ----- shapes -----
    @property
    def state_size(self):
        return self.units

    @property
    def _sizes(self):
        """The state sizes, flat (``[units]``, or ``[units, units]`` for an LSTM)."""
        sizes = self.__dict__.get("_state_sizes")
        if sizes is None:
            sizes = self.__dict__["_state_sizes"] = [int(n) for n in flatten(self.state_size)]
        return sizes

    @property
    def output_size(self):
        return self.units

    def _weight_specs(self, input_dim):
        g = self._gates * self.units
        specs = [("kernel", (input_dim, g)), ("recurrent_kernel", (self.units, g))]
        if self.use_bias:
            specs.append(("bias", self._bias_shape()))
        return specs

    def _bias_shape(self):
        return (self._gates * self.units,)

    # ----- weights -----
    def build(self, input_shape):
        """Create weights for inputs whose last axis is ``input_shape[-1]``."""
        input_dim = input_shape if isinstance(input_shape, (int, np.integer)) else input_shape[-1]
        if input_dim is None or int(input_dim) <= 0:
            raise ValueError(
                f"{type(self).__name__}.build: input_shape[-1] must be a positive integer, "
                f"got {input_shape!r}"
            )
        input_dim = int(input_dim)
        if self.built:
            if input_dim != self.input_dim:
                raise ValueError(
                    f"{type(self).__name__}: built for {self.input_dim} input features, "
                    f"got input_shape {tuple(input_shape) if not isinstance(input_shape, int) else input_shape}"
                )
            return
        g = self._gates * self.units
        arrays = [self._draw("kernel_initializer", (input_dim, g)),
                  self._draw("recurrent_initializer", (self.units, g))]
        if self.use_bias:
            arrays.append(self._init_bias())
        specs = self._weight_specs(input_dim)
        with WEIGHTS_LOCK:
            if not self.built:  # (another thread may have built it meanwhile)
                self._commit(specs, arrays, input_dim)

    def _init_bias(self):
        return self._draw("bias_initializer", self._bias_shape())

    def _draw(self, argument, shape):
        """A new array from the initializer ``argument`` names, called as
        Keras calls one, ``init(shape, dtype="float32")``: whatever it returns
        (a NumPy array, a Keras or framework tensor) becomes a NumPy array of
        the cell's dtype (Keras casts a variable's initial value to its
        dtype), and a result of another shape is a ``ValueError``."""
        init = getattr(self, argument)
        try:
            value = init(shape, self.dtype.name)
        except ValueError as exc:
            raise ValueError(f"{type(self).__name__}.build: {argument}: {exc}") from None
        if not isinstance(value, np.ndarray) and callable(getattr(value, "detach", None)) \
                and callable(getattr(value, "cpu", None)):
            value = value.detach().cpu()  # a PyTorch tensor (Keras on torch), maybe on a GPU
        value = np.asarray(value)
        if value.shape != tuple(shape):
            raise ValueError(f"{type(self).__name__}.build: {argument} returned shape "
                             f"{value.shape}, expected {tuple(shape)}")
        if not np.issubdtype(value.dtype, np.number) or value.dtype.kind == "c":
            raise TypeError(f"{type(self).__name__}.build: {argument} must return real numbers, "
                            f"got dtype {value.dtype}")
        return np.array(value, dtype=self.dtype)

    def _commit(self, specs, arrays, input_dim):
        """Put in a complete new set of weights (with WEIGHTS_LOCK held).

        The arrays are made read-only: the kernels run packed copies, so an
        edit in place would be ignored (set_weights replaces them).
        """
        for (name, _), w in zip(specs, arrays):
            w.setflags(write=False)
            setattr(self, name, w)
        if not self.use_bias:
            self.bias = None
        self.input_dim = input_dim
        params = self._make_params()
        if self.quantization_mode is not None:  # new weights of a quantized cell: re-quantized
            params = quantize_params(params, self.quantization_mode)
            self._hold_quantized(params)
        self._kernel_weights = Weights(params)
        self.built = True
        self.version += 1
        _engine.weights_changed()

    def _hold_quantized(self, params):
        """Keep a quantized record's weights: ``kernel`` / ``recurrent_kernel``
        become the float32 values the compact ones stand for."""
        for name in ("kernel", "recurrent_kernel"):
            w = np.array(getattr(params, name))
            w.setflags(write=False)
            setattr(self, name, w)
        self._quantized = params.quantized

    def _params(self):
        """The kernel parameter record of the current weights, with the
        compact weights of a quantized cell."""
        params = self._make_params()
        if self._quantized is not None:
            params = replace(params, quantized=self._quantized)
        return params

    # ----- reduced precision -----
    def quantize(self, mode):
        """Round this cell's ``kernel`` and ``recurrent_kernel`` to ``mode``, in
        place (Keras 3 ``Layer.quantize``); returns the cell.

        Parameters
        ----------
        mode : {"bfloat16", "int8", "int8_dynamic", "bfloat16_dynamic"}
            The weight format (:func:`fastrnn.kernels.quantize` gives the
            scheme). Biases, states, outputs and every sum stay float32.

        Raises
        ------
        ValueError
            For an unknown ``mode``, a cell that is not built, a float64 cell,
            one already quantized, or a ``_dynamic`` mode on a cell it does
            not cover (SimpleRNN, GRU with ``reset_after=False``).
        """
        quantize_cells(type(self).__name__, self._quantizable(), mode)
        return self

    def _quantizable(self):
        """The cells :meth:`quantize` rounds, whose compact weights
        ``fastrnn.save`` keeps: this one."""
        return [self]

    def _load_quantized(self, mode, arrays, where):
        """Put in the compact weights ``arrays`` of ``mode`` (from a file, in
        ``QuantizedWeights.arrays()`` order: ``[kernel, recurrent_kernel]`` as
        bfloat16 bits (both bfloat16 modes), or those as int8 and their two
        scale vectors) exactly;
        every shape and dtype checked."""
        if mode not in PRECISIONS:
            raise ValueError(f"{where}: unknown quantization mode {mode!r}; expected one of "
                             f"{', '.join(PRECISIONS)}")
        shapes = [self.kernel.shape, self.recurrent_kernel.shape]
        bf16 = mode.startswith("bfloat16")
        if bf16:
            want = [(np.uint16, shapes[0]), (np.uint16, shapes[1])]
        else:
            cols = (shapes[0][1],)
            want = [(np.int8, shapes[0]), (np.int8, shapes[1]), (np.float32, cols),
                    (np.float32, cols)]
        if len(arrays) != len(want):
            raise ValueError(f"{where}: {mode} weights expected {len(want)} arrays, "
                             f"got {len(arrays)}")
        arrays = [np.asarray(a) for a in arrays]
        for a, (dtype, shape) in zip(arrays, want):
            if a.dtype != dtype or a.shape != tuple(shape):
                raise ValueError(f"{where}: {mode} weights expected {np.dtype(dtype).name} "
                                 f"{tuple(shape)}, got {a.dtype} {a.shape}")
        if not bf16 and not all(np.isfinite(s).all() and (s >= 0).all()
                                          for s in arrays[2:]):
            raise ValueError(f"{where}: int8 scales must be finite and non-negative")
        with WEIGHTS_LOCK:
            if self.quantization_mode is not None or self.dtype != np.float32:
                raise ValueError(f"{where}: the {type(self).__name__} must be a float32 cell "
                                 "that is not quantized yet")
            try:  # (raises where mode does not cover this cell)
                check = quantize_params(self._make_params(), mode)
            except ValueError as exc:
                raise ValueError(f"{where}: {exc}") from None
            q = QuantizedWeights(mode, *[np.array(a) for a in arrays])
            kernel, recurrent = q.dequantize()
            self._hold_quantized(replace(check, kernel=kernel, recurrent_kernel=recurrent,
                                         quantized=q))
            self.quantization_mode = mode
            self._kernel_weights = Weights(self._params())
            self.version += 1
            _engine.weights_changed()

    def _weights_for(self, dtype=None):
        """The weights the kernels run (an ``_engine.Weights``); a cell's
        weights are in its own dtype."""
        w = self._kernel_weights
        if w is None:
            raise ValueError(f"{type(self).__name__} is not built: call build() or set_weights()")
        return w

    @property
    def weights(self):
        return [getattr(self, n) for n, _ in self._weight_specs(self.input_dim or 0)] if self.built else []

    def get_weights(self):
        """Copies of the weights, in Keras order: kernel, recurrent_kernel[, bias]."""
        return [np.array(w) for w in self.weights]

    def set_weights(self, weights):
        """Load weights in Keras order and shapes; builds the cell if needed.

        Raises ``ValueError`` naming the expected arrays when the count or a
        shape is wrong (``TypeError`` for a non-real dtype); nothing changes
        then. The arrays are copied (and cast to the cell's dtype).
        """
        self._stage_weights(weights)()

    def _stage_weights(self, weights):
        """Check ``weights`` and return a function that loads them: a stack
        or a Bidirectional layer checks every part before it changes any."""
        weights = _weight_list(weights, f"{type(self).__name__}.set_weights")
        input_dim = self.input_dim
        columns = self._weight_specs("D")[0][1][1]
        if input_dim is None and weights and np.ndim(weights[0]) == 2 \
                and np.shape(weights[0])[1] == columns:
            input_dim = np.shape(weights[0])[0]  # unbuilt: the kernel's rows are the inputs
        specs = self._weight_specs(input_dim if input_dim is not None else "D")
        expect = ", ".join(f"{n} {_shape_text(s)}" for n, s in specs)
        if len(weights) != len(specs):
            raise ValueError(
                f"{type(self).__name__}.set_weights: expected {len(specs)} arrays "
                f"[{expect}], got {len(weights)}"
            )
        arrays = []
        for (name, shape), w in zip(specs, weights):
            w = np.asarray(w)
            if w.shape != tuple(shape):
                hint = " (transposed?)" if len(shape) == 2 and w.ndim == 2 and (
                    w.shape[::-1] == tuple(shape) or w.shape[0] == shape[1]) else ""
                raise ValueError(
                    f"{type(self).__name__}.set_weights: {name} expected shape "
                    f"{_shape_text(shape)}, got {w.shape}{hint} (expected [{expect}])"
                )
            if not np.issubdtype(w.dtype, np.number) or np.dtype(w.dtype).kind == "c":
                raise TypeError(f"{type(self).__name__}.set_weights: {name} must be real numbers, "
                                f"got dtype {w.dtype}")
            arrays.append(np.array(w, dtype=self.dtype))
        mode = self.quantization_mode
        if mode is not None and mode.startswith("int8"):
            # (the re-quantization at commit would refuse them after the
            # arrays were in: a stack's lower cells already changed)
            for (name, _), a in zip(specs, arrays):
                if name in ("kernel", "recurrent_kernel"):
                    try:
                        check_int8_finite(a, f"{type(self).__name__}.set_weights: {name}")
                    except ValueError as exc:
                        raise ValueError(f"{exc} (nothing changed)") from None

        def commit():
            with WEIGHTS_LOCK:
                if self.built and self.input_dim != input_dim:
                    # unbuilt when the arrays were checked (their kernel's
                    # rows set the input size), built since by a call for
                    # other inputs, which it has checked them against
                    raise ValueError(
                        f"{type(self).__name__}.set_weights: kernel expected shape "
                        f"{_shape_text((self.input_dim, columns))}, got {arrays[0].shape} "
                        f"(a call built the {type(self).__name__} for {self.input_dim} "
                        "input features while set_weights checked the arrays); nothing "
                        "changed")
                self._commit(specs, arrays, input_dim)

        return commit

    def _bias_or_zeros(self, shape):
        return self.bias if self.bias is not None else np.zeros(shape, self.dtype)

    def params(self):
        """The kernel parameter record of this cell's current weights."""
        return self._weights_for().params

    # ----- one step -----
    def get_initial_state(self, batch_size):
        batch_size = _batch_arg(batch_size)
        sizes = self.state_size if isinstance(self.state_size, list) else [self.state_size]
        return [np.zeros((batch_size, s), self.dtype) for s in sizes]

    def __call__(self, inputs, states, training=False):
        """One step: ``inputs (batch, features)``, ``states`` list -> ``(output, new_states)``.

        An unbuilt cell builds itself for ``inputs``. ``training=True``
        applies the cell's dropout (on the ``reference`` backend, as layers
        do); the states are never modified. A cell with one state may take
        it as a bare array, and then returns a bare array, as Keras's cells
        do (``out, h = cell(x, h)``).
        """
        training = _device.training_flag(training)
        if not isinstance(states, (list, tuple)):
            y, new = self(inputs, [states], training)
            return y, new[0]
        w = self._kernel_weights  # (one attribute: a complete set of weights)
        if (w is not None and type(inputs) is np.ndarray and inputs.ndim == 2
                and inputs.dtype is self.dtype and inputs.flags.c_contiguous
                and inputs.shape[1] == self.input_dim
                and not (training and (self.dropout or self.recurrent_dropout))
                and _engine.plain_states(states, inputs.shape[0], self._sizes, self.dtype)):
            key = (w, inputs.shape[0], dispatch.default_key())
            hit = self._frames
            if hit is None or hit[0] != key:
                hit = self._frames = (key, _engine.frames_for((w,), inputs.shape[0]))
            if hit[1] is not None:  # the common case: one call of the frame kernel
                return _engine.step(hit[1], inputs, states)
        return _one_step(self, [self], inputs, list(states), [None], training)

    def _dropout_rng(self):
        """The generator of this cell's dropout masks: seeded from ``seed``
        at the first ``training=True`` call and drawn on by every later one,
        so each call gets new masks and the sequence of masks repeats for
        the same seed (Keras's seed generator does the same)."""
        rng = self.__dict__.get("_rng")  # (None in a cell unpickled from an older version)
        if rng is None:
            rng = self._rng = np.random.default_rng(self.seed)
        return rng

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_kernel_weights"] = None  # packed forms are per process: made again
        state["_frames"] = None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._frames = None
        if self.built:
            self._kernel_weights = Weights(self._params())

    # ----- config -----
    def get_config(self):
        config = {
            "name": self.name,
            "trainable": True,
            "dtype": self.dtype.name,
            "units": self.units,
            "activation": activations.name_of(self.activation),
            "use_bias": self.use_bias,
            "kernel_initializer": initializers.serialize(self.kernel_initializer),
            "recurrent_initializer": initializers.serialize(self.recurrent_initializer),
            "bias_initializer": initializers.serialize(self.bias_initializer),
        }
        config.update({key: getattr(self, key) for key in _TRAINING_ONLY})
        config.update(dropout=self.dropout, recurrent_dropout=self.recurrent_dropout,
                      seed=self.seed)
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        return f"{type(self).__name__}(units={self.units})"


class SimpleRNNCell(_Cell):
    """Fully connected RNN cell: ``h' = activation(x W + b + h U)``.

    Parameters
    ----------
    units : int
        Size of the state and output.
    activation : str, None or callable
        Default ``"tanh"``. A callable runs on the ``reference`` backend only.
    use_bias, kernel_initializer, recurrent_initializer, bias_initializer
        As in Keras 3.
    dropout, recurrent_dropout : float
        Fractions dropped when called with ``training=True`` (one mask per
        sequence, Keras semantics); unused at inference.
    kernel_regularizer, ..., bias_constraint
        Stored in the config; training-only, unused by fastrnn.

    Weights: ``kernel (input_dim, units)``, ``recurrent_kernel (units, units)``,
    ``bias (units,)``.
    """

    def _make_params(self):
        return SimpleRNNParams(self.kernel, self.recurrent_kernel,
                               self._bias_or_zeros((self.units,)), self.activation)


class GRUCell(_Cell):
    """Gated recurrent unit cell, gates **z, r, h** (Keras order).

    Parameters are those of :class:`SimpleRNNCell` plus
    ``recurrent_activation`` (default ``"sigmoid"``) and ``reset_after``
    (default True: the reset gate multiplies ``h U_h + b_rh``, the Keras 3
    and PyTorch/cuDNN convention; False: it multiplies ``h`` before the
    product, Keras 2 and TF1).

    Weights: ``kernel (input_dim, 3 units)``, ``recurrent_kernel (units,
    3 units)``, ``bias (2, 3 units)`` when ``reset_after`` (input bias,
    recurrent bias), else ``bias (3 units,)``.
    """

    _gates = 3

    def __init__(self, units, activation="tanh", recurrent_activation="sigmoid",
                 use_bias=True, kernel_initializer="glorot_uniform",
                 recurrent_initializer="orthogonal", bias_initializer="zeros",
                 dropout=0.0, recurrent_dropout=0.0, reset_after=True, seed=None, **kwargs):
        super().__init__(units, activation, use_bias, kernel_initializer,
                         recurrent_initializer, bias_initializer, dropout,
                         recurrent_dropout, seed, **kwargs)
        self.recurrent_activation = activations.resolve(recurrent_activation,
                                                        "recurrent_activation")
        self.reset_after = _device.flag(reset_after, "reset_after")

    def _bias_shape(self):
        return (2, 3 * self.units) if self.reset_after else (3 * self.units,)

    def _make_params(self):
        H = self.units
        if self.bias is None:
            bias = np.zeros((2, 3 * H), self.dtype)
        elif self.reset_after:
            bias = self.bias
        else:
            bias = np.stack([self.bias, np.zeros(3 * H, self.dtype)])
        return GRUParams(self.kernel, self.recurrent_kernel, bias, self.activation,
                         self.recurrent_activation, self.reset_after)

    def get_config(self):
        config = super().get_config()
        config["recurrent_activation"] = activations.name_of(self.recurrent_activation)
        config["reset_after"] = self.reset_after
        return config


class LSTMCell(_Cell):
    """Long short-term memory cell, gates **i, f, c, o** (Keras order).

    Parameters are those of :class:`SimpleRNNCell` plus
    ``recurrent_activation`` (default ``"sigmoid"``) and ``unit_forget_bias``
    (default True: the forget-gate bias is initialised to 1 when the layer
    is built; weights loaded with ``set_weights`` are used as they are).

    States are ``[h, c]``. Weights: ``kernel (input_dim, 4 units)``,
    ``recurrent_kernel (units, 4 units)``, ``bias (4 units,)``.
    """

    _gates = 4

    def __init__(self, units, activation="tanh", recurrent_activation="sigmoid",
                 use_bias=True, kernel_initializer="glorot_uniform",
                 recurrent_initializer="orthogonal", bias_initializer="zeros",
                 unit_forget_bias=True, dropout=0.0, recurrent_dropout=0.0, seed=None,
                 **kwargs):
        super().__init__(units, activation, use_bias, kernel_initializer,
                         recurrent_initializer, bias_initializer, dropout,
                         recurrent_dropout, seed, **kwargs)
        self.recurrent_activation = activations.resolve(recurrent_activation,
                                                        "recurrent_activation")
        self.unit_forget_bias = _device.flag(unit_forget_bias, "unit_forget_bias")

    @property
    def state_size(self):
        return [self.units, self.units]

    def _init_bias(self):
        bias = super()._init_bias()
        if self.unit_forget_bias:
            bias[self.units : 2 * self.units] = 1.0
        return bias

    def _make_params(self):
        return LSTMParams(self.kernel, self.recurrent_kernel,
                          self._bias_or_zeros((4 * self.units,)), self.activation,
                          self.recurrent_activation)

    def get_config(self):
        config = super().get_config()
        config["recurrent_activation"] = activations.name_of(self.recurrent_activation)
        config["unit_forget_bias"] = self.unit_forget_bias
        return config


class StackedRNNCells:
    """Cells run one after another at each step (Keras ``StackedRNNCells``).

    The output of cell ``k`` is the input of cell ``k + 1``; the stack's
    output is the last cell's. ``state_size`` is the list of the cells'
    state sizes (an LSTM cell contributes ``[units, units]``), and states are
    passed and returned nested the same way.
    """

    def __init__(self, cells, **kwargs):
        cells = list(cells)
        if not cells:
            raise ValueError("StackedRNNCells: cells must be a non-empty list")
        for c in cells:
            if not hasattr(c, "state_size"):
                raise ValueError(f"StackedRNNCells: {c!r} is not an RNN cell (no state_size)")
        self.cells = cells
        self.name, _ = _pop_common(kwargs, "StackedRNNCells")
        # the first cell that stores weights sets the stack's dtype; a stack
        # of the user's cells has none (the layer's dtype= applies)
        self.dtype = next((np.dtype(c.dtype) for c in cells
                           if getattr(c, "dtype", None) is not None), None)

    @property
    def state_size(self):
        return [c.state_size for c in self.cells]

    @property
    def output_size(self):
        last = self.cells[-1]
        size = getattr(last, "output_size", None)
        return size if size is not None else _first(last.state_size)

    @property
    def built(self):
        return all(getattr(c, "built", True) for c in self.cells)

    @property
    def version(self):
        return tuple(getattr(c, "version", 0) for c in self.cells)

    def build(self, input_shape):
        dim = input_shape if isinstance(input_shape, (int, np.integer)) else input_shape[-1]
        for c in self.cells:
            if hasattr(c, "build"):
                c.build((None, dim))
            dim = getattr(c, "output_size", None) or _first(c.state_size)

    def get_weights(self):
        return [w for c in self.cells for w in c.get_weights()]

    def set_weights(self, weights):
        """The cells' weights, bottom to top, in one list; every cell's arrays
        are checked before any cell changes."""
        self._stage_weights(weights)()

    def _stage_weights(self, weights):
        weights = _weight_list(weights, "StackedRNNCells.set_weights")
        counts = [len(c._weight_specs(0)) if hasattr(c, "_weight_specs") else len(c.get_weights())
                  for c in self.cells]
        if len(weights) != sum(counts):
            raise ValueError(
                f"StackedRNNCells.set_weights: expected {sum(counts)} arrays "
                f"({' + '.join(map(str, counts))} for the cells in order), got {len(weights)}"
            )
        stages, start, below = [], 0, None
        for i, (c, n) in enumerate(zip(self.cells, counts)):
            stages.append(stage_weights(c, weights[start : start + n]))
            if hasattr(c, "_weight_specs") and below is not None \
                    and np.shape(weights[start])[0] != below:
                raise ValueError(
                    f"StackedRNNCells.set_weights: cells[{i}] ({type(c).__name__}) kernel "
                    f"(array {start}): expected {below} rows (the output size of the cell "
                    f"below), got shape {np.shape(weights[start])}")
            below = getattr(c, "output_size", None) or _first(c.state_size)
            start += n

        def commit():
            with WEIGHTS_LOCK:  # every cell's new weights, seen together
                for stage in stages:
                    stage()

        return commit

    def quantize(self, mode):
        """Quantize every cell's weights to ``mode``, together (see
        :meth:`LSTMCell.quantize`); returns the stack."""
        quantize_cells("StackedRNNCells", self._quantizable(), mode)
        return self

    def _quantizable(self):
        """The cells :meth:`quantize` rounds (all)."""
        return list(self.cells)

    @property
    def quantization_mode(self):
        """None, the cells' mode, or ``"mixed"`` where they differ."""
        return quantization_mode_of(self.cells)

    def get_initial_state(self, batch_size):
        return [c.get_initial_state(batch_size) if isinstance(c.state_size, list)
                else c.get_initial_state(batch_size)[0] for c in self.cells]

    def __call__(self, inputs, states, training=False):
        """One step of every cell, bottom to top: ``states`` holds one entry
        per cell (a list of arrays, or one array for a single state), and
        the new states come back the same way."""
        training = _device.training_flag(training)
        if not isinstance(states, (list, tuple)):
            raise TypeError(f"StackedRNNCells: states expected a list with one entry per cell "
                            f"({len(self.cells)}), got {type(states).__name__}")
        states = list(states)
        if len(states) != len(self.cells):
            raise ValueError(f"StackedRNNCells: states expected one entry per cell "
                             f"({len(self.cells)}), got {len(states)}")
        if all(is_builtin(c) for c in self.cells):
            nested = [isinstance(s, (list, tuple)) for s in states]
            flat = [a for s, n in zip(states, nested) for a in (s if n else [s])]
            return _one_step(self, self.cells, inputs, flat, nested, training)
        x = inputs
        new_states = []
        for cell, s in zip(self.cells, states):
            is_list = isinstance(s, (list, tuple))
            x, new = _engine.call_cell(cell, x, list(s) if is_list else [s], training)
            new = list(new) if isinstance(new, (list, tuple)) else [new]
            new_states.append(new if is_list else new[0])
        return x, new_states

    def get_config(self):
        return {"name": self.name, "trainable": True,
                "cells": [serialization.serialize(c) for c in self.cells]}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        cells = [deserialize_cell(c) for c in config.pop("cells")]
        return cls(cells, **config)


def quantize_cells(owner, cells, mode):
    """Quantize ``cells`` (the built-in cells of ``owner``, a class name for
    messages) to ``mode``: every cell checked and quantized before any
    changes, and the new weights swapped in together."""
    if not isinstance(mode, str) or mode not in PRECISIONS:
        raise ValueError(f"{owner}.quantize: mode expected one of "
                         f"{', '.join(map(repr, PRECISIONS))}, got {mode!r}")
    for c in cells:
        if not is_builtin(c):
            raise TypeError(f"{owner}.quantize: {type(c).__name__} is not a built-in fastrnn "
                            "cell; only LSTMCell, GRUCell and SimpleRNNCell weights can be "
                            "quantized")
    with WEIGHTS_LOCK:
        for c in cells:
            name = type(c).__name__
            if not c.built:
                raise ValueError(f"{owner}.quantize: the {name} is not built; build it or set "
                                 "its weights first")
            if c.quantization_mode is not None:
                raise ValueError(f"{owner}.quantize: the {name} is already quantized to "
                                 f"{c.quantization_mode!r}; weights are quantized once, from "
                                 "float32 (set float32 weights on a fresh layer to change mode)")
            if c.dtype != np.float32:
                raise ValueError(f"{owner}.quantize: only float32 weights can be quantized; "
                                 f"the {name} is {c.dtype.name} (make the layer with "
                                 "dtype='float32')")
        try:
            made = [quantize_params(c._make_params(), mode) for c in cells]
        except ValueError as exc:
            raise ValueError(f"{owner}.quantize: {exc}") from None
        for c, params in zip(cells, made):
            c._hold_quantized(params)
            c.quantization_mode = mode
            c._kernel_weights = Weights(params)
            c.version += 1
        _engine.weights_changed()


def quantization_mode_of(cells):
    """None (no cell quantized), the mode all of ``cells`` share, or ``"mixed"``."""
    modes = {getattr(c, "quantization_mode", None) for c in cells}
    if len(modes) == 1:
        return modes.pop()
    return "mixed"


def is_builtin(cell):
    """Whether the kernels run ``cell``: fastrnn's own cell classes (not a
    user's subclass, which may override the step), or a private cell that
    declares it (``_fastrnn_cell``)."""
    return type(cell) in (SimpleRNNCell, GRUCell, LSTMCell) or getattr(type(cell), "_fastrnn_cell",
                                                                        False)


def _one_step(owner, cells, inputs, states, nested, training):
    """One step of built-in ``cells`` (a cell, or a stack's cells) through the engine.

    ``states`` is flat (Keras order per cell); ``nested[i]`` says whether cell
    ``i``'s states come as a list (None: the single cell's own call, always
    a list). Returns ``(output, new_states)`` nested like the states came.
    """
    name = type(owner).__name__
    x, xp, restore = _device.prepare(inputs)
    if not hasattr(x, "ndim"):
        x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"{name}: inputs expected shape (batch, features), got {tuple(x.shape)}")
    dim = cells[0].input_dim
    if dim is not None and x.shape[1] != dim:
        raise ValueError(f"{name}: inputs expected shape (batch, {dim}), got {tuple(x.shape)}")
    B = x.shape[0]
    sizes = [int(n) for c in cells for n in flatten(c.state_size)]
    if len(states) != len(sizes):
        raise ValueError(f"{name}: states expected {len(sizes)} arrays of shapes "
                         f"{[(B, n) for n in sizes]}, got {len(states)}")
    for k, (st, n) in enumerate(zip(states, sizes)):
        if tuple(np.shape(st)) != (B, n):
            raise ValueError(f"{name}: states[{k}] expected shape {(B, n)}, got {np.shape(st)}")
    if not owner.built:
        owner.build((B, x.shape[1]))
    dtype = cells[0].dtype
    x = _device.as_float_array(x, dtype, "inputs")
    flat = [_device.as_float_array(_device.prepare(st)[0], dtype, f"states[{k}]")
            for k, st in enumerate(states)]
    weights = _engine.snapshot(cells, stack=True)
    if training and any(c.dropout or c.recurrent_dropout for c in cells):
        y, new = _dropout_step(cells, weights, x, flat)
    elif xp is np and (frames := _engine.frames_for(weights, B)) is not None:
        y, new = _engine.step(frames, x, flat)
    else:
        choice = _engine.select_for(weights, "auto", on_device=xp is not np)
        packs = [w.packed(choice.module) for w in weights]
        _, new = _engine.run_cells(choice.module, packs, x[:, None], flat, None, False, False,
                                   False, xp)
        y = new[len(new) - weights[-1].params.n_states]
    y, new = restore(y), [restore(a) for a in new]
    if nested[0] is None:
        return y, new
    out, at = [], 0
    for c, is_list in zip(cells, nested):
        n = len(flatten(c.state_size))
        out.append(new[at:at + n] if is_list else new[at])
        at += n
    return y, out


def _dropout_step(cells, weights, x, states):
    """One step with Keras's training-mode dropout (``reference`` backend)."""
    module = dispatch.backend_module("reference")
    layer_in, new, k = x[:, None], [], 0
    for cell, w in zip(cells, weights):
        n = w.params.n_states
        xin, packed = _engine.reference_dropout(w, layer_in, cell._dropout_rng(),
                                                cell.dropout, cell.recurrent_dropout)
        out, st = _engine.run_cells(module, [packed], xin, states[k:k + n], None, False, False,
                                    True)
        new += st
        layer_in, k = out, k + n
    return layer_in[:, 0], new


def _batch_arg(batch_size):
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
            or batch_size < 0:
        raise ValueError(f"batch_size: expected a non-negative integer, got {batch_size!r}")
    return int(batch_size)


def _shape_text(shape):
    """``(D, 16)`` for a shape whose input size is not known yet."""
    shape = tuple(shape)
    return "(" + ", ".join(map(str, shape)) + ("," if len(shape) == 1 else "") + ")"


def _weight_list(weights, where):
    if weights is None or isinstance(weights, (str, bytes)) or not hasattr(weights, "__iter__"):
        raise TypeError(f"{where}: expected a list of arrays, got {type(weights).__name__}")
    return list(weights)


def stage_weights(obj, weights):
    """``obj._stage_weights(weights)`` where it exists (built-in cells, stacks,
    layers); else a function that calls ``obj.set_weights`` (the user's cell)."""
    if hasattr(obj, "_stage_weights"):
        return obj._stage_weights(weights)
    return lambda: obj.set_weights(weights)


def _first(size):
    return size[0] if isinstance(size, (list, tuple)) else size


for _cls in (SimpleRNNCell, GRUCell, LSTMCell, StackedRNNCells):
    serialization.register("cell")(_cls)


def deserialize_cell(obj):
    """A cell from its serialised form (``{"class_name", "config"}``)."""
    return serialization.deserialize(obj, kinds=("cell",), where="cell", what="cell class")
