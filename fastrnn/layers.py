"""Keras-style recurrent layers: sequence semantics around the kernels.

``RNN(cell)`` owns what happens along time: masks, direction, initial and
carried state, return values. ``SimpleRNN``, ``GRU`` and ``LSTM`` are
``RNN`` over the matching cell; ``Bidirectional`` runs a layer both ways.
They match Keras 3 numerically (same weights in, same outputs out, to
float32 rounding) and take Keras 3's arguments, plus:

``backend``
    ``"auto"`` (default), ``"cpu"``, ``"cuda"`` or ``"reference"``; see
    :mod:`fastrnn.dispatch`. ``layer.backend`` is the backend the last call
    used (or would use) and ``layer.backend_reason`` says why.
``time_major``
    Inputs and sequence outputs are ``(time, batch, features)``, and a mask
    is ``(time, batch)``.
``nan_policy``
    ``"propagate"`` (default: NaN in the input flows through, as in Keras)
    or ``"raise"`` (a ``ValueError`` before any kernel runs).

Calls take NumPy arrays (or GPU arrays, see the README) and return NumPy
arrays: ``layer(x, mask=None, initial_state=None, training=False)``.
"""

from __future__ import annotations

import copy
import threading

import numpy as np

from . import _device, dispatch
from .cells import (
    CELLS, GRUCell, LSTMCell, SimpleRNNCell, StackedRNNCells, _batch_arg, _first, _pop_common,
    _weight_list, call_cell, deserialize_cell, resolve_dtype, serialize_cell, stage_weights,
)
from .kernels import reference as _reference
from .kernels import run as _run_kernel

_RNN_ARGS = ("return_sequences", "return_state", "go_backwards", "stateful", "unroll",
             "zero_output_for_mask", "time_major")


def _flatten(nested):
    if isinstance(nested, (list, tuple)):
        return [x for item in nested for x in _flatten(item)]
    return [nested]


def _pack_like(structure, flat):
    """Rebuild ``structure``'s nesting (lists) from the flat list ``flat``."""
    it = iter(flat)

    def build(s):
        if isinstance(s, (list, tuple)):
            return [build(x) for x in s]
        return next(it)

    return build(structure)


def _flag(value, argument):
    """A boolean argument: True/False (NumPy's too) or 0/1; "False" would be truthy."""
    if isinstance(value, (bool, np.bool_)) or (isinstance(value, (int, np.integer))
                                               and value in (0, 1)):
        return bool(value)
    raise TypeError(f"{argument}: expected True or False, got {value!r}")


_SHAPE_KW = ("input_dim", "input_shape", "batch_input_shape", "batch_size")


def _shape_kwargs(kwargs, where):
    """(batch, features) from Keras' shape arguments (either may be None);
    pops them from ``kwargs``."""
    given = {k: kwargs.pop(k) for k in _SHAPE_KW if k in kwargs}
    given = {k: v for k, v in given.items() if v is not None}
    batch, features = [], []  # (argument, value), each size as often as it was given
    if "batch_input_shape" in given:
        shape = tuple(given["batch_input_shape"])
        if len(shape) != 3:
            raise ValueError(f"{where}: batch_input_shape expected (batch, time, features), "
                             f"got {shape}")
        if shape[0] is not None:
            batch.append(("batch_input_shape[0]", shape[0]))
        features.append(("batch_input_shape[2]", shape[2]))
    if "input_shape" in given:
        shape = tuple(given["input_shape"])
        if len(shape) != 2:
            raise ValueError(f"{where}: input_shape expected (time, features), got {shape}")
        features.append(("input_shape[1]", shape[1]))
    if "input_dim" in given:
        features.append(("input_dim", given["input_dim"]))
    if "batch_size" in given:
        batch.append(("batch_size", given["batch_size"]))
    out = []
    for what, values in (("batch", batch), ("features", features)):
        for argument, v in values:
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{where}: {argument} expected a positive integer, got {v!r}")
        if len({int(v) for _, v in values}) > 1:
            raise ValueError(f"{where}: the {what} size is given twice, differently: "
                             + ", ".join(f"{a}={v}" for a, v in values))
        out.append(int(values[0][1]) if values else None)
    return tuple(out)


def _as_float_array(x, dtype, argument):
    """Validate an input array: numeric, floating (cast to ``dtype``), no copy if possible."""
    xp = np
    if _device.is_device_array(x):
        import cupy as xp  # noqa: F811 - only reached with GPU arrays
    elif not isinstance(x, np.ndarray):
        x = np.asarray(x)
    kind = np.dtype(x.dtype).kind
    if kind in "iub":
        raise TypeError(f"{argument}: expected a floating-point array, got dtype {x.dtype}"
                        " (integer inputs are not cast; convert them explicitly)")
    if kind not in "f":
        raise TypeError(f"{argument}: expected a floating-point array, got dtype {x.dtype}")
    if x.dtype != dtype or not x.flags.c_contiguous:
        x = xp.ascontiguousarray(x, dtype=dtype)
    return x


def _mask_array(mask, batch, time, xp, time_major=False):
    """The mask as booleans (batch, time); with ``time_major`` it comes
    (time, batch), like the inputs (as in Keras' ``time_major``)."""
    if mask is None:
        return None
    if _device.is_device_array(mask) and xp is np:
        raise TypeError("mask: a GPU array was given for inputs in host memory")
    m = xp.asarray(mask)
    want = (time, batch) if time_major else (batch, time)
    if m.shape != want:
        layout = "(time, batch) with time_major=True" if time_major else "(batch, time)"
        raise ValueError(f"mask: expected shape {layout} = {want}, got {tuple(m.shape)}")
    if time_major:
        m = m.T
    if m.dtype != bool:
        kind = np.dtype(m.dtype).kind
        if kind not in "iuf":
            raise ValueError(f"mask: expected booleans or 0/1 values, got dtype {m.dtype}")
        bad = (m != 0) & (m != 1)
        if bool(bad.any()):
            raise ValueError(f"mask: expected booleans or 0/1 values, got the value "
                             f"{m[bad].ravel()[0].item()!r} (dtype {m.dtype})")
        m = m != 0
    return m


class RNN:
    """Run a cell (or a list of cells, stacked) over sequences, as Keras 3 ``RNN``.

    Parameters
    ----------
    cell : cell or list of cells
        A fastrnn cell (``LSTMCell``, ``GRUCell``, ``SimpleRNNCell``,
        ``StackedRNNCells``), a list of them (stacked), or any object with
        ``state_size`` and ``__call__(x_t, states) -> (output, new_states)``
        (run step by step on the host).
    return_sequences : bool
        Return the output of every step ``(batch, time, units)`` instead of
        the last one ``(batch, units)``.
    return_state : bool
        Return ``[output, *states]``; LSTM states are ``[h, c]``.
    go_backwards : bool
        Read the input last to first; the returned sequence is in processing
        order (reversed), as in Keras.
    stateful : bool
        The final states of a call are the initial states of the next; the
        batch size is fixed by the first call; ``reset_states()`` zeroes them.
    unroll : bool
        Accepted for Keras compatibility; the kernels never unroll in Python,
        so it changes nothing.
    zero_output_for_mask : bool
        Masked steps output zeros instead of the previous output.
    time_major : bool
        Inputs and sequence outputs are ``(time, batch, features)``, and a
        mask ``(time, batch)``.
    backend : str
        ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"reference"``.
    nan_policy : str
        ``"propagate"`` or ``"raise"``.
    dtype : str
        ``"float32"`` (default) or ``"float64"``; other float inputs are cast,
        integer inputs are a ``TypeError``.
    input_dim, input_shape, batch_input_shape, batch_size
        Keras' shape arguments: the feature count (``input_dim``,
        ``input_shape=(time, features)``, ``batch_input_shape=(batch, time,
        features)``) builds the layer now; a batch size (``batch_size`` or
        ``batch_input_shape[0]``) fixes the batch of a stateful layer from
        the start (a layer that is not stateful runs any batch).

    Call
    ----
    ``layer(inputs, mask=None, initial_state=None, training=False)`` with
    ``inputs (batch, time, features)``, ``mask (batch, time)`` of booleans
    or 0/1, ``initial_state`` a list of ``(batch, size)`` arrays (nested per
    cell for a stack). With zero time steps the output is zeros and the
    states are the initial states.
    """

    def __init__(self, cell, return_sequences=False, return_state=False, go_backwards=False,
                 stateful=False, unroll=False, zero_output_for_mask=False, time_major=False,
                 backend="auto", nan_policy="propagate", **kwargs):
        if isinstance(cell, (list, tuple)):
            cell = StackedRNNCells(cell)
        elif isinstance(cell, dict):
            cell = deserialize_cell(cell)
        if not hasattr(cell, "state_size") or not callable(cell):
            raise ValueError(f"cell: expected an RNN cell with state_size, got {cell!r}")
        self.cell = cell
        self.return_sequences = _flag(return_sequences, "return_sequences")
        self.return_state = _flag(return_state, "return_state")
        self.go_backwards = _flag(go_backwards, "go_backwards")
        self.stateful = _flag(stateful, "stateful")
        self.unroll = _flag(unroll, "unroll")
        self.zero_output_for_mask = _flag(zero_output_for_mask, "zero_output_for_mask")
        self.time_major = _flag(time_major, "time_major")
        self.backend_arg = dispatch._check_name(backend)
        if nan_policy not in ("propagate", "raise"):
            raise ValueError(f"nan_policy: expected 'propagate' or 'raise', got {nan_policy!r}")
        self.nan_policy = nan_policy
        kwargs.pop("use_cudnn", None)  # fastrnn picks its own fast path
        batch, features = _shape_kwargs(kwargs, type(self).__name__)
        self.name, dtype = _pop_common(kwargs, type(self).__name__)
        # The cell's dtype rules: its weights are stored in it.
        cell_dtype = getattr(cell, "dtype", None)
        self.dtype = np.dtype(dtype if cell_dtype is None else cell_dtype)
        self.states = None
        self._packed = {}
        self._placed = None
        self._choice = None
        self._lock = threading.Lock()
        self._declared_batch = batch  # a stateful layer's batch, from batch_size=
        if features is not None:
            self.build((batch, None, features))

    # ----- structure -----
    @property
    def _cells(self):
        """The cells the kernels run, bottom to top."""
        return self.cell.cells if isinstance(self.cell, StackedRNNCells) else [self.cell]

    @property
    def _compiled(self):
        # Exact built-in types (a user subclass may override the step), or a
        # private cell that declares it runs on the kernels (``_fastrnn_cell``).
        return all(type(c) in (SimpleRNNCell, GRUCell, LSTMCell)
                   or getattr(type(c), "_fastrnn_cell", False) for c in self._cells)

    @property
    def state_size(self):
        return self.cell.state_size

    @property
    def _flat_state_sizes(self):
        return [int(s) for s in _flatten(self.cell.state_size)]

    @property
    def _state_structure(self):
        size = self.cell.state_size
        if isinstance(self.cell, StackedRNNCells):
            # Keras returns each stacked cell's states as a list, even a GRU's [h].
            return [s if isinstance(s, list) else [s] for s in size]
        return size if isinstance(size, list) else [size]

    @property
    def output_size(self):
        size = getattr(self.cell, "output_size", None)
        return size if size is not None else _first(self.cell.state_size)

    @property
    def built(self):
        # A user cell without build() has nothing to create.
        return bool(getattr(self.cell, "built", not hasattr(self.cell, "build")))

    @property
    def units(self):
        return getattr(self.cell, "units", None)

    def build(self, input_shape):
        """Create weights for inputs of shape ``(batch, time, features)``."""
        shape = tuple(input_shape)
        if len(shape) != 3:
            raise ValueError(f"{type(self).__name__}.build: input_shape expected (batch, time, "
                             f"features), got {shape}")
        if hasattr(self.cell, "build"):
            self.cell.build((shape[0], shape[2]))

    def get_weights(self):
        return self.cell.get_weights()

    def set_weights(self, weights):
        """Load weights in Keras order (the cell's, or the stacked cells' concatenated)."""
        self._stage_weights(weights)()

    def _stage_weights(self, weights):
        return stage_weights(self.cell, weights)

    @property
    def weights(self):
        return self.get_weights()

    # ----- backend -----
    def to(self, device):
        """Place the layer: ``"cuda"`` (GPU even for NumPy inputs) or ``"cpu"``."""
        if device not in ("cuda", "cpu"):
            raise ValueError(f"device: expected 'cuda' or 'cpu', got {device!r}")
        if device == "cuda":
            ok, why = dispatch.available("cuda")
            if not ok:
                raise RuntimeError(f"{type(self).__name__}.to('cuda'): {why}")
        self._placed = device
        return self

    def _params_list(self):
        return [c.params() for c in self._cells]

    def _select(self, on_device=False):
        if not self._compiled:
            self._choice = dispatch.Choice(
                "custom", None, "host step loop: the cell is not a built-in fastrnn cell")
            return self._choice
        if not self.built:
            raise ValueError(f"{type(self).__name__} is not built: call build() or set_weights()")
        requested = self.backend_arg
        if requested == "auto" and self._placed == "cpu":
            requested = "cpu"
        choice = dispatch.select(requested, self._params_list(),
                                 on_device=on_device or self._placed == "cuda")
        self._choice = choice
        return choice

    @property
    def backend(self):
        """The backend name the layer uses for host inputs (see ``backend_reason``)."""
        if self._choice is None and self.built:
            self._select()
        return self._choice.name if self._choice else None

    @property
    def backend_reason(self):
        if self._choice is None and self.built:
            self._select()
        return self._choice.reason if self._choice else "not built yet"

    def _packs(self, choice):
        """Packed weights for ``choice``, re-derived only when weights changed."""
        key = choice.name
        version = tuple(c.version for c in self._cells)
        with self._lock:
            hit = self._packed.get(key)
            if hit is None or hit[0] != version:
                hit = (version, [choice.module.pack(p) for p in self._params_list()])
                self._packed[key] = hit
        return hit[1]

    # ----- states -----
    def get_initial_state(self, batch_size, xp=np):
        batch_size = _batch_arg(batch_size)
        return [xp.zeros((batch_size, s), self.dtype) for s in self._flat_state_sizes]

    def reset_states(self):
        """Zero the carried states of a stateful layer."""
        if self.states is not None:
            for s in self.states:
                s[...] = 0

    reset_state = reset_states

    def _initial_states(self, initial_state, batch, xp):
        sizes = self._flat_state_sizes
        fixed, by = None, None
        if self.stateful and self.states is not None:
            fixed, by = self.states[0].shape[0], "its first call"
        elif self.stateful and getattr(self, "_declared_batch", None) is not None:
            fixed, by = self._declared_batch, "batch_size / batch_input_shape"
        if fixed is not None and fixed != batch:
            # (checked with an initial_state too: the result is carried into self.states)
            raise ValueError(
                f"{type(self).__name__} is stateful with batch size {fixed} (fixed by {by}); "
                f"inputs have batch size {batch}. Use the same batch size, or a new layer with "
                "the same weights (new.set_weights(layer.get_weights()))."
            )
        if initial_state is None:
            if self.stateful and self.states is not None:
                return [s.copy() for s in self.states]
            return self.get_initial_state(batch, xp)
        flat = _flatten(initial_state) if isinstance(initial_state, (list, tuple)) else [initial_state]
        if len(flat) != len(sizes):
            raise ValueError(
                f"initial_state: expected {len(sizes)} arrays of shapes "
                f"{[(batch, s) for s in sizes]}, got {len(flat)}"
            )
        states = []
        for k, (s, size) in enumerate(zip(flat, sizes)):
            s = _as_float_array(s, self.dtype, f"initial_state[{k}]")
            if tuple(s.shape) != (batch, size):
                raise ValueError(
                    f"initial_state[{k}]: expected shape {(batch, size)}, got {tuple(s.shape)}"
                )
            if self.nan_policy == "raise" and bool(xp.isnan(s).any()):
                raise ValueError(f"initial_state[{k}]: contains NaN and nan_policy='raise'")
            states.append(s)
        return states

    # ----- call -----
    def __call__(self, inputs, mask=None, initial_state=None, training=False):
        x, xp, restore = _device.prepare(inputs)
        x = _as_float_array(x, self.dtype, "inputs")
        if x.ndim != 3:
            layout = "(time, batch, features)" if self.time_major else "(batch, time, features)"
            raise ValueError(f"inputs: expected a 3D array {layout}, got shape {tuple(x.shape)}")
        if self.time_major:
            x = xp.ascontiguousarray(x.transpose(1, 0, 2))
        B, T, D = x.shape
        if B == 0:
            raise ValueError("inputs: the batch is empty (batch size 0)")
        if not self.built:
            self.build((B, T, D))
        in_dim = getattr(self._cells[0], "input_dim", None)
        if in_dim is not None and D != in_dim:
            raise ValueError(
                f"inputs: expected {in_dim} features (the layer was built for them), got "
                f"shape {tuple(x.shape)}"
            )
        if self.nan_policy == "raise" and bool(xp.isnan(x).any()):
            raise ValueError("inputs: contain NaN and nan_policy='raise'")
        m = _mask_array(mask, B, T, xp, self.time_major)
        states = self._initial_states(initial_state, B, xp)
        if self.stateful and self.states is None:
            self.states = [xp.zeros_like(s) for s in states]
        output, new_states = self._forward(x, m, states, training, xp)
        if self.stateful:
            for dst, src in zip(self.states, new_states):
                dst[...] = src
        if self.return_sequences and self.time_major:
            output = xp.ascontiguousarray(output.transpose(1, 0, 2))
        output = restore(output)
        if not self.return_state:
            return output
        new_states = [restore(s) for s in new_states]
        return [output] + _pack_like(self._state_structure, new_states)

    def _forward(self, x, mask, states, training, xp):
        """Run the cells over ``x (B, T, D)``; return (output, flat final states)."""
        B, T, _ = x.shape
        P = self.output_size
        if T == 0:
            shape = (B, 0, P) if self.return_sequences else (B, P)
            return xp.zeros(shape, self.dtype), [s.copy() for s in states]
        if not self._compiled:
            self._select()
            return self._host_loop(x, mask, states, training)
        dropout = training and any(c.dropout or c.recurrent_dropout for c in self._cells)
        if dropout:
            choice = self._choice = dispatch.Choice(
                "reference", _reference, "reference: training=True with dropout (the fast "
                "backends run inference only)")
            packs = None
        else:
            choice = self._select(on_device=xp is not np)
            packs = self._packs(choice)
        out_states = [xp.empty_like(s) for s in states]
        reverse, zero = self.go_backwards, self.zero_output_for_mask
        layer_in, k = x, 0
        cells = self._cells
        for i, cell in enumerate(cells):
            n = 2 if cell.params().kind == "lstm" else 1
            last = i == len(cells) - 1
            out = None
            if not last or self.return_sequences:
                out = xp.empty((B, T, cell.output_size), self.dtype)
            if dropout:
                layer_in, packed = self._dropout_pack(cell, layer_in, B)
            else:
                packed = packs[i]
            _run_kernel(choice.module, packed, layer_in, states[k : k + n], mask, reverse,
                        zero, out, out_states[k : k + n])
            layer_in, k = out, k + n
        if self.return_sequences:
            output = layer_in[:, ::-1] if reverse else layer_in
            return xp.ascontiguousarray(output), out_states
        h = out_states[k - (2 if cells[-1].params().kind == "lstm" else 1)]
        if mask is None:
            return h.copy(), out_states
        valid = mask[:, 0 if reverse else T - 1] if zero else mask.any(axis=1)
        return xp.where(valid[:, None], h, xp.zeros_like(h)), out_states

    def _dropout_pack(self, cell, x, batch):
        """Keras training-mode dropout: one mask per sequence, for all steps."""
        rng = np.random.default_rng(cell.seed)
        if cell.dropout:
            keep = rng.random((batch, 1, x.shape[2])) >= cell.dropout
            x = x * (keep / (1.0 - cell.dropout)).astype(x.dtype)
        packed = _reference.pack(cell.params())
        if cell.recurrent_dropout:
            keep = rng.random((batch, cell.units)) >= cell.recurrent_dropout
            packed.recurrent_mask = keep / (1.0 - cell.recurrent_dropout)
        return np.ascontiguousarray(x), packed

    def _host_loop(self, x, mask, states, training):
        """Step a custom cell from Python, with Keras masking semantics."""
        B, T, _ = x.shape
        structure = self._state_structure
        flat = [s.copy() for s in states]
        prev, outputs = None, []
        steps = range(T - 1, -1, -1) if self.go_backwards else range(T)
        for t in steps:
            y, new = call_cell(self.cell, x[:, t], _pack_like(structure, flat), training)
            y = np.asarray(y, self.dtype)
            new = [np.asarray(s, self.dtype) for s in _flatten(new)]
            self._check_step(y, new, B)
            if prev is None:
                prev = np.zeros_like(y)
            if mask is not None:
                keep = mask[:, t, None]
                new = [np.where(keep, n, s) for n, s in zip(new, flat)]
                y = np.where(keep, y, np.zeros_like(y) if self.zero_output_for_mask else prev)
            flat, prev = new, y
            outputs.append(y)
        if self.return_sequences:
            return np.ascontiguousarray(np.stack(outputs, axis=1)), flat
        return prev, flat

    def _check_step(self, y, new, B):
        """What the user's cell returned has the shapes it declared."""
        name = type(self.cell).__name__
        size = self.output_size
        if y.shape != (B, size):
            raise ValueError(f"{name} returned an output of shape {y.shape}; expected "
                             f"(batch, output_size) = {(B, size)}")
        sizes = self._flat_state_sizes
        if len(new) != len(sizes):
            raise ValueError(f"{name} returned {len(new)} states; its state_size declares "
                             f"{len(sizes)}")
        for k, (s, n) in enumerate(zip(new, sizes)):
            if s.shape != (B, n):
                raise ValueError(f"{name} returned states[{k}] of shape {s.shape}; expected "
                                 f"{(B, n)} (state_size)")

    # ----- streaming and pickling -----
    def stream(self, batch_size=1, **kwargs):
        """A :class:`fastrnn.streaming.Stream`: frame-by-frame inference with carried state."""
        from .streaming import Stream

        return Stream(self, batch_size=batch_size, **kwargs)

    def __getstate__(self):
        # Locks and backend-packed weights are per process: rebuilt on demand.
        state = dict(self.__dict__)
        state["_lock"] = None
        state["_packed"] = {}
        state["_choice"] = None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()

    # ----- shapes and config -----
    def compute_output_shape(self, input_shape):
        shape = tuple(input_shape)
        batch, time = (shape[1], shape[0]) if self.time_major else (shape[0], shape[1])
        if self.return_sequences:
            out = (time, batch, self.output_size) if self.time_major else (batch, time, self.output_size)
        else:
            out = (batch, self.output_size)
        if not self.return_state:
            return out
        return [out] + _pack_like(self._state_structure,
                                  [(batch, s) for s in self._flat_state_sizes])

    def _rnn_config(self):
        config = {
            "name": self.name, "trainable": True, "dtype": self.dtype.name,
            **{k: getattr(self, k) for k in _RNN_ARGS},
            "backend": self.backend_arg, "nan_policy": self.nan_policy,
        }
        if getattr(self, "_declared_batch", None) is not None:
            config["batch_size"] = self._declared_batch
        return config

    def get_config(self):
        if not hasattr(self.cell, "get_config"):
            raise ValueError(f"{type(self).__name__}.get_config: the cell has no get_config")
        return {**self._rnn_config(), "cell": serialize_cell(self.cell)}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        return f"{type(self).__name__}(units={self.units}, backend={self.backend_arg!r})"


class _CellLayer(RNN):
    """An RNN whose cell is built from the layer's own arguments (Keras LSTM & co)."""

    _cell_class = None

    def __init__(self, units, *, return_sequences=False, return_state=False,
                 go_backwards=False, stateful=False, unroll=False, zero_output_for_mask=False,
                 time_major=False, backend="auto", nan_policy="propagate", name=None,
                 dtype=None, **cell_kwargs):
        for key in ("trainable", "activity_regularizer", "use_cudnn", "implementation"):
            cell_kwargs.pop(key, None)
        shape_kwargs = {k: cell_kwargs.pop(k) for k in _SHAPE_KW if k in cell_kwargs}
        self.activity_regularizer = None
        cell = self._cell_class(units, dtype=dtype, **cell_kwargs)
        super().__init__(cell, return_sequences=return_sequences, return_state=return_state,
                         go_backwards=go_backwards, stateful=stateful, unroll=unroll,
                         zero_output_for_mask=zero_output_for_mask, time_major=time_major,
                         backend=backend, nan_policy=nan_policy, name=name, dtype=dtype,
                         **shape_kwargs)

    def __getattr__(self, item):
        # Forward cell properties (units, activation, kernel, ...) as Keras does.
        cell = self.__dict__.get("cell")
        if cell is not None and not item.startswith("_"):
            return getattr(cell, item)
        raise AttributeError(item)

    def get_config(self):
        cell_config = self.cell.get_config()
        for key in ("name", "trainable", "dtype"):
            cell_config.pop(key, None)
        return {**self._rnn_config(), **cell_config, "activity_regularizer": None}


class SimpleRNN(_CellLayer):
    """Fully connected RNN layer, Keras 3 ``SimpleRNN``: see :class:`RNN` and
    :class:`~fastrnn.cells.SimpleRNNCell` for the arguments."""

    _cell_class = SimpleRNNCell


class GRU(_CellLayer):
    """GRU layer, Keras 3 ``GRU`` (``reset_after=True`` by default): see
    :class:`RNN` and :class:`~fastrnn.cells.GRUCell` for the arguments."""

    _cell_class = GRUCell


class LSTM(_CellLayer):
    """LSTM layer, Keras 3 ``LSTM``; returns ``[output, h, c]`` with
    ``return_state``: see :class:`RNN` and :class:`~fastrnn.cells.LSTMCell`."""

    _cell_class = LSTMCell


class Bidirectional:
    """Run a recurrent layer forwards and backwards and merge (Keras 3 ``Bidirectional``).

    Parameters
    ----------
    layer : RNN
        The forward layer's template. Like Keras, fastrnn builds two new
        layers from its config (``forward_layer`` and ``backward_layer``, the
        latter with ``go_backwards`` flipped); load weights with
        ``set_weights(forward weights + backward weights)``.
    merge_mode : {"concat", "sum", "mul", "ave", None}
        How to combine the two outputs; ``None`` returns both.
    backward_layer : RNN, optional
        A layer to use as is for the backward direction.

    Masked steps output zeros in both directions (with
    ``return_sequences``), and the backward sequence is flipped back so
    both line up in time. ``return_state`` returns
    ``[output, *forward_states, *backward_states]``.
    """

    def __init__(self, layer, merge_mode="concat", weights=None, backward_layer=None,
                 **kwargs):
        if not isinstance(layer, RNN):
            raise ValueError(f"layer: expected a fastrnn recurrent layer, got {layer!r}")
        if backward_layer is not None and not isinstance(backward_layer, RNN):
            raise ValueError(f"backward_layer: expected a fastrnn recurrent layer, "
                             f"got {backward_layer!r}")
        if merge_mode not in ("concat", "sum", "mul", "ave", None):
            raise ValueError(f"merge_mode: expected one of 'concat', 'sum', 'mul', 'ave', None; "
                             f"got {merge_mode!r}")
        backend = kwargs.pop("backend", None)
        self.name, _ = _pop_common(kwargs, "Bidirectional")
        self.forward_layer = deserialize(serialize(layer))
        if backward_layer is None:
            config = serialize(layer)
            config["config"]["go_backwards"] = not layer.go_backwards
            backward_layer = deserialize(config)
        self.backward_layer = backward_layer
        if self.forward_layer.go_backwards == self.backward_layer.go_backwards:
            raise ValueError("backward_layer: must have the opposite go_backwards of layer")
        for attr in ("stateful", "return_sequences", "return_state"):
            if getattr(self.forward_layer, attr) != getattr(self.backward_layer, attr):
                raise ValueError(f"backward_layer: {attr} must equal the forward layer's")
        for sub in (self.forward_layer, self.backward_layer):
            sub.zero_output_for_mask = sub.return_sequences
            if backend is not None:
                sub.backend_arg = dispatch._check_name(backend)
        self.merge_mode = merge_mode
        self.return_sequences = layer.return_sequences
        self.return_state = layer.return_state
        self.stateful = layer.stateful
        self.time_major = layer.time_major
        self.dtype = layer.dtype
        if weights is not None:
            self.set_weights(weights)

    @property
    def built(self):
        return self.forward_layer.built and self.backward_layer.built

    def build(self, input_shape):
        self.forward_layer.build(input_shape)
        self.backward_layer.build(input_shape)

    def get_weights(self):
        return self.forward_layer.get_weights() + self.backward_layer.get_weights()

    def set_weights(self, weights):
        """Forward layer's weights then backward layer's, Keras order."""
        weights = _weight_list(weights, "Bidirectional.set_weights")
        if len(weights) % 2:
            raise ValueError(f"Bidirectional.set_weights: expected an even number of arrays "
                             f"(forward then backward), got {len(weights)}")
        half = len(weights) // 2
        # both halves checked before either layer changes
        forward = stage_weights(self.forward_layer, weights[:half])
        backward = stage_weights(self.backward_layer, weights[half:])
        forward()
        backward()

    def reset_states(self):
        self.forward_layer.reset_states()
        self.backward_layer.reset_states()

    reset_state = reset_states

    def to(self, device):
        self.forward_layer.to(device)
        self.backward_layer.to(device)
        return self

    @property
    def backend(self):
        return self.forward_layer.backend

    @property
    def backend_reason(self):
        return self.forward_layer.backend_reason

    def stream(self, *args, **kwargs):
        raise TypeError("Bidirectional layers cannot stream: the backward direction needs the "
                        "whole sequence (future frames) before it can emit anything")

    def __call__(self, inputs, mask=None, initial_state=None, training=False):
        fw_state = bw_state = None
        if initial_state is not None:
            flat = _flatten(initial_state)
            n_fw = len(self.forward_layer._flat_state_sizes)
            n_bw = len(self.backward_layer._flat_state_sizes)
            if len(flat) != n_fw + n_bw:
                raise ValueError(f"initial_state: expected {n_fw} forward states then {n_bw} "
                                 f"backward states ({n_fw + n_bw} arrays), got {len(flat)}")
            fw_state, bw_state = flat[:n_fw], flat[n_fw:]
        y = self.forward_layer(inputs, mask=mask, initial_state=fw_state, training=training)
        y_rev = self.backward_layer(inputs, mask=mask, initial_state=bw_state, training=training)
        states = []
        if self.return_state:
            states = list(y[1:]) + list(y_rev[1:])
            y, y_rev = y[0], y_rev[0]
        xp = np
        if _device.is_device_array(y):
            import cupy as xp
        if self.return_sequences:
            axis = 0 if self.time_major else 1
            y_rev = xp.flip(y_rev, axis=axis)
        if self.merge_mode == "concat":
            output = xp.concatenate([y, y_rev], axis=-1)
        elif self.merge_mode == "sum":
            output = y + y_rev
        elif self.merge_mode == "ave":
            output = (y + y_rev) / 2
        elif self.merge_mode == "mul":
            output = y * y_rev
        else:
            output = [y, xp.ascontiguousarray(y_rev)]
        if self.return_state:
            return (output if isinstance(output, list) else [output]) + states
        return output

    def compute_output_shape(self, input_shape):
        shape = self.forward_layer.compute_output_shape(input_shape)
        states = []
        if self.return_state:
            shape, states = shape[0], shape[1:]
        if self.merge_mode == "concat":
            shape = tuple(shape[:-1]) + (shape[-1] * 2,)
        elif self.merge_mode is None:
            shape = [shape, shape]
        if self.return_state:
            return (shape if self.merge_mode is None else [shape]) + states + states
        return shape

    def get_config(self):
        return {"name": self.name, "trainable": True, "merge_mode": self.merge_mode,
                "layer": serialize(self.forward_layer),
                "backward_layer": serialize(self.backward_layer)}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        layer = deserialize(config.pop("layer"))
        backward = config.pop("backward_layer", None)
        if backward is not None:
            backward = deserialize(backward)
        return cls(layer, backward_layer=backward, **config)


LAYERS = {c.__name__: c for c in (RNN, SimpleRNN, GRU, LSTM, Bidirectional)}


def serialize(layer):
    """``{"class_name", "config"}`` for a fastrnn layer (Keras's serialised form)."""
    return {"module": "keras.layers", "class_name": type(layer).__name__,
            "config": layer.get_config(), "registered_name": None}


def deserialize(obj):
    """Build a layer or cell from :func:`serialize`'s output or a Keras-serialised dict.

    Keras-only keys that carry nothing for inference (``build_config``,
    ``registered_name``, ``module``) are ignored.
    """
    if not isinstance(obj, dict) or "class_name" not in obj:
        raise ValueError(f"deserialize: expected a dict with 'class_name' and 'config', got {obj!r}")
    name = obj["class_name"]
    config = copy.deepcopy(obj.get("config", {}))
    if name in LAYERS:
        return LAYERS[name].from_config(config)
    if name in CELLS:
        return CELLS[name].from_config(config)
    raise ValueError(f"deserialize: unsupported class {name!r}; expected one of "
                     f"{sorted(LAYERS) + sorted(CELLS)}")
