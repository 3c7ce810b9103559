"""Keras-style recurrent layers: sequence semantics around the kernels.

``RNN(cell)`` owns what happens along time: masks, direction, initial and
carried state, return values; the engine (:mod:`fastrnn._engine`) runs the
cells. ``SimpleRNN``, ``GRU`` and ``LSTM`` are ``RNN`` over the matching
cell; :mod:`fastrnn.bidirectional` runs a layer both ways.
They match Keras 3 numerically (same weights in, same outputs out, to
float32 rounding) and take Keras 3's arguments, plus:

``backend``
    ``"auto"`` (default), ``"cpu"``, ``"cuda"`` or ``"reference"``; see
    :mod:`fastrnn.dispatch`. ``layer.backend`` is the backend the next call
    runs (the last call's, while nothing the choice depends on changed) and
    ``layer.backend_reason`` says why.
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

import numpy as np

from . import _device, _engine, dispatch, serialization
from ._nest import flatten, numbers_hint, pack_as
from .cells import (
    GRUCell, LSTMCell, SimpleRNNCell, StackedRNNCells, _batch_arg, _Cell, _first, _pop_common,
    deserialize_cell, is_builtin, quantization_mode_of, quantize_cells, stage_weights,
)
from .streaming import Stream

_RNN_ARGS = ("return_sequences", "return_state", "go_backwards", "stateful", "unroll",
             "zero_output_for_mask", "time_major")


# The choice of a layer whose cells are not all fastrnn's own.
_HOST_LOOP = dispatch.Choice("custom", None,
                             "host step loop: the cell is not a built-in fastrnn cell")
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


def _mask_array(mask, batch, time, xp, time_major=False):
    """The mask as booleans (batch, time); with ``time_major`` it comes
    (time, batch), like the inputs (as in Keras' ``time_major``)."""
    if mask is None:
        return None
    if _device.is_device_array(mask) and xp is np:
        raise TypeError("mask: a GPU array was given for inputs in host memory")
    m = _device.host_array(mask, "mask") if xp is np else xp.asarray(mask)
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
    trainable, activity_regularizer, use_cudnn, implementation
        (``LSTM``, ``GRU``, ``SimpleRNN``) Keras arguments that change nothing
        at inference, accepted so that Keras configs load, and not kept:
        ``get_config()`` gives ``trainable=True`` and
        ``activity_regularizer=None``. The cell's ``*_regularizer`` and
        ``*_constraint`` arguments are kept in the config, otherwise unused.
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
        integer inputs are a ``TypeError``. Given a cell object, the layer takes the
        cell's dtype (``layer.dtype`` says which): the weights are stored in
        the cell, and Keras too computes in the cell's dtype, though it then
        casts the outputs to this one. Make the cells with ``dtype=``.
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
        for c in cell if isinstance(cell, (list, tuple)) else [cell]:
            if getattr(c, "_tf1_state", False):
                raise TypeError(
                    f"cell: expected a Keras-style cell, got {type(c).__name__} of fastrnn.nn, "
                    "a TF1-style cell, which takes and returns its state in TF1's structure: "
                    "run it with fastrnn.nn.dynamic_rnn, or use fastrnn.LSTMCell, GRUCell "
                    "or SimpleRNNCell here")
        if isinstance(cell, (list, tuple)):
            cell = StackedRNNCells(cell)
        elif isinstance(cell, dict):
            cell = deserialize_cell(cell)
        if not hasattr(cell, "state_size") or not callable(cell):
            raise ValueError(f"cell: expected an RNN cell with state_size, got {cell!r}")
        self.cell = cell
        self.return_sequences = _device.flag(return_sequences, "return_sequences")
        self.return_state = _device.flag(return_state, "return_state")
        self.go_backwards = _device.flag(go_backwards, "go_backwards")
        self.stateful = _device.flag(stateful, "stateful")
        self.unroll = _device.flag(unroll, "unroll")
        self.zero_output_for_mask = _device.flag(zero_output_for_mask, "zero_output_for_mask")
        self.time_major = _device.flag(time_major, "time_major")
        self.backend_arg = dispatch._check_request(backend)
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
        self._placed = None
        self._chosen = None  # (_choice_key, dispatch.Choice) of the last choice: see _current
        self._plan = None  # see _plan_now
        self._declared_batch = batch  # a stateful layer's batch, from batch_size=
        if features is not None:
            self.build((batch, None, features))

    # ----- structure -----
    @property
    def cells(self):
        """The cells the layer runs, bottom to top (one unless stacked)."""
        return self.cell.cells if isinstance(self.cell, StackedRNNCells) else [self.cell]

    @property
    def compiled(self):
        """Whether the kernels run every cell (built-in cells); else the
        layer steps its cell from Python."""
        return all(is_builtin(c) for c in self.cells)

    @property
    def state_size(self):
        return self.cell.state_size

    @property
    def state_sizes(self):
        """The size of each state, flat, Keras order (``[h]`` or ``[h, c]`` per cell)."""
        if isinstance(self.cell, _Cell):  # a fastrnn cell keeps them (read on every call)
            return list(self.cell._sizes)
        return [int(s) for s in flatten(self.cell.state_size)]

    @property
    def state_structure(self):
        """How the states nest in calls and return values (one list per
        stacked cell, as Keras returns them)."""
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

    def _n_weights(self):
        """How many arrays :meth:`set_weights` takes, built or not."""
        return sum(len(c._weight_specs(0)) if hasattr(c, "_weight_specs")
                   else len(c.get_weights()) for c in self.cells)

    @property
    def weights(self):
        return self.get_weights()

    # ----- reduced precision -----
    def quantize(self, mode):
        """Round the recurrent weights to ``mode``, in place (Keras 3
        ``Layer.quantize``); returns the layer.

        Parameters
        ----------
        mode : {"bfloat16", "int8", "int8_dynamic", "bfloat16_dynamic"}
            ``"bfloat16"``: each weight rounded to bfloat16. ``"int8"``:
            symmetric int8 with one float32 scale per output column.
            ``"int8_dynamic"``: those int8 weights, and each row's input and
            state quantized per step for integer dot products.
            ``"bfloat16_dynamic"``: bfloat16 weights, and the input and state
            rounded to bfloat16 per step for bfloat16 dot products. (The two
            ``_dynamic`` modes: LSTM and GRU with ``reset_after=True``.)
            Only ``kernel`` and ``recurrent_kernel`` are stored quantized;
            biases, the states kept between steps, outputs and every sum stay
            float32 (the scheme: :func:`fastrnn.kernels.quantize`).

        Every cell of a stack is quantized, together. ``get_weights()`` then
        returns the float32 values the kernels compute with, and
        ``set_weights()`` quantizes the new weights the same way.

        Raises
        ------
        ValueError
            Unknown ``mode``; a layer not built, float64, or already quantized;
            a ``_dynamic`` mode on a cell it does not cover.
        TypeError
            The layer runs a cell of the user's (not a built-in cell).
        """
        quantize_cells(type(self).__name__, self._quantizable(), mode)
        return self

    @property
    def quantization_mode(self):
        """None (float weights), the mode of :meth:`quantize`, or ``"mixed"``
        (stacked cells quantized apart)."""
        return quantization_mode_of(self.cells)

    def _quantizable(self):
        """The cells :meth:`quantize` rounds (all; the user's are refused there)."""
        return list(self.cells)

    # ----- backend -----
    def to(self, device):
        """Place the layer: ``"cuda"`` (GPU even for NumPy inputs) or ``"cpu"``.

        ``"cpu"`` undoes ``to("cuda")``: NumPy inputs stay on the host. It
        requests no backend: the layer's ``backend=`` argument, then
        :func:`fastrnn.set_backend`, then ``FASTRNN_BACKEND``, then ``auto``
        choose, as for a layer never placed (``auto`` still runs a Python
        callable activation on ``reference``). Returns the layer.
        """
        if device not in ("cuda", "cpu"):
            raise ValueError(f"device: expected 'cuda' or 'cpu', got {device!r}")
        if device == "cuda":
            ok, why = dispatch.available("cuda")
            if not ok:
                raise RuntimeError(f"{type(self).__name__}.to('cuda'): {why}")
        self._placed = device
        return self

    def _choice_key(self, on_device):
        """What the backend choice of a call depends on: the weights
        (``_engine.generation``), the cells, the ``backend=`` argument, the
        placement, the process-wide default and whether the inputs are on
        the GPU (the last entry)."""
        return (_engine.generation, self.cell, self.backend_arg, self._placed,
                dispatch.default_key(), on_device)

    def _select(self, weights=None, on_device=False):
        """The backend for host inputs (or GPU inputs with ``on_device``),
        remembered for ``backend`` / ``backend_reason``."""
        if not self.compiled:
            return _HOST_LOOP
        if not self.built:
            raise ValueError(f"{type(self).__name__} is not built: call build() or set_weights()")
        # the key is read before the weights: a change of them meanwhile
        # leaves it stale, and the next look chooses again
        key = self._choice_key(on_device)
        if weights is None:
            weights = _engine.snapshot(self.cells, stack=True)
        choice = _engine.select_for(weights, self.backend_arg, on_device, self._placed)
        self._chosen = (key, choice)
        return choice

    def _current(self):
        """The choice the next call makes: the last call's while nothing in
        its :meth:`_choice_key` changed since, else chosen again (cheap: no
        packing, no compiling) for inputs where the last call's were (host
        or GPU; host before any call). None before the layer is built."""
        if not self.built:
            return None
        if not self.compiled:
            return _HOST_LOOP
        # (absent in a layer unpickled from an older version)
        chosen = getattr(self, "_chosen", None)
        on_device = chosen[0][-1] if chosen is not None else False
        if chosen is None or chosen[0] != self._choice_key(on_device):
            return self._select(on_device=on_device)
        return chosen[1]

    @property
    def backend(self):
        """The backend name the next call runs (see ``backend_reason``);
        None before the layer is built. An explicitly requested backend that
        cannot run raises here as the call would."""
        choice = self._current()
        return choice.name if choice else None

    @property
    def backend_reason(self):
        """Why the next call runs on ``backend`` (the last call's reason
        while nothing it depends on changed: a ``training=True`` call with
        dropout says so)."""
        choice = self._current()
        return choice.reason if choice else "not built yet"

    # ----- states -----
    def get_initial_state(self, batch_size, xp=np):
        batch_size = _batch_arg(batch_size)
        return [xp.zeros((batch_size, s), self.dtype) for s in self.state_sizes]

    def reset_states(self):
        """Zero the carried states of a stateful layer."""
        if self.states is not None:
            for s in self.states:
                s[...] = 0

    reset_state = reset_states

    def _zero_states(self, batch, sizes):
        """Zero initial states for ``batch`` rows, the same arrays from call to
        call while the batch and sizes stay (the kernels never write their
        inputs, and no call returns them)."""
        kept = getattr(self, "_zeros", None)
        key = (batch, self.dtype, sizes)
        if kept is None or kept[0] != key:
            kept = self._zeros = (key, [np.zeros((batch, n), self.dtype) for n in sizes])
        return list(kept[1])

    def _initial_states(self, initial_state, batch, xp, first=0):
        """The call's initial states; errors number them from ``first`` (a
        Bidirectional's backward states follow the forward ones)."""
        sizes = self.state_sizes
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
            if xp is np and self.compiled:  # (a user's cell may write its states)
                return self._zero_states(batch, sizes)
            return self.get_initial_state(batch, xp)
        flat = flatten(initial_state)
        if len(flat) != len(sizes):
            raise ValueError(
                f"initial_state: expected {len(sizes)} arrays of shapes "
                f"{[(batch, s) for s in sizes]}, got {len(flat)}{numbers_hint(flat)}"
            )
        states = []
        for k, (s, size) in enumerate(zip(flat, sizes), first):
            s = _device.as_float_array(s, self.dtype, f"initial_state[{k}]")
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
        return self._call(inputs, mask, initial_state, _device.training_flag(training), None)

    def _call(self, inputs, mask, initial_state, training, weights):
        """A call with the cells' ``weights`` (:meth:`_snapshot`; None: read now)."""
        x, m, states, xp, restore = self._prepare(inputs, mask, initial_state)
        output, new_states = self._forward(x, m, states, training, xp, weights)
        return self._finish(output, new_states, xp, restore)

    def _snapshot(self):
        """The cells' current weights (see ``_engine.snapshot``), None for the
        user's cells (they hold their own)."""
        return _engine.snapshot(self.cells, stack=True) if self.compiled and self.built else None

    def _prepare(self, inputs, mask, initial_state, first_state=0):
        """Check and convert a call's arguments: ``(x (B, T, D), mask (B, T)
        or None, flat initial states, xp, restore)`` (see ``_device.prepare``)."""
        x, xp, restore = _device.prepare(inputs)
        x = _device.as_float_array(x, self.dtype, "inputs")
        if x.ndim != 3:
            layout = "(time, batch, features)" if self.time_major else "(batch, time, features)"
            raise ValueError(f"inputs: expected a 3D array {layout}, got shape {tuple(x.shape)}")
        if self.time_major:
            x = xp.ascontiguousarray(x.transpose(1, 0, 2))
        B, T, D = x.shape
        if B == 0 and self.stateful:
            raise ValueError("inputs: the batch is empty (batch size 0), and a stateful "
                             "layer's batch size is fixed by its calls")
        if not self.built:
            self.build((B, T, D))
        in_dim = getattr(self.cells[0], "input_dim", None)
        if in_dim is not None and D != in_dim:
            raise ValueError(
                f"inputs: expected {in_dim} features (the layer was built for them), got "
                f"shape {tuple(x.shape)}"
            )
        if self.nan_policy == "raise" and bool(xp.isnan(x).any()):
            raise ValueError("inputs: contain NaN and nan_policy='raise'")
        m = _mask_array(mask, B, T, xp, self.time_major)
        states = self._initial_states(initial_state, B, xp, first_state)
        if self.stateful and self.states is None:
            self.states = [xp.zeros_like(s) for s in states]
        return x, m, states, xp, restore

    def _finish(self, output, new_states, xp, restore):
        """Carry a stateful layer's states, and shape the return value."""
        if self.stateful:
            for dst, src in zip(self.states, new_states):
                dst[...] = src
        if self.return_sequences and self.time_major:
            output = xp.ascontiguousarray(output.transpose(1, 0, 2))
        output = restore(output)
        if not self.return_state:
            return output
        new_states = [restore(s) for s in new_states]
        return [output] + pack_as(self.state_structure, new_states)

    def _forward(self, x, mask, states, training, xp, weights=None):
        """Run the cells over ``x (B, T, D)``; return (output, flat final states).

        ``weights``: the cells' weights to run (see ``_engine.snapshot``),
        read now when not given.
        """
        B, T, _ = x.shape
        P = self.output_size
        if T == 0 or B == 0:  # (as Keras 3: empty outputs, the initial states)
            shape = (B, T, P) if self.return_sequences else (B, P)
            return xp.zeros(shape, self.dtype), [s.copy() for s in states]
        reverse, zero = self.go_backwards, self.zero_output_for_mask
        if not self.compiled:
            return _engine.host_loop(self.cell, x, mask, states, self.state_structure, reverse,
                                     zero, self.return_sequences, training, self.output_size,
                                     self.state_sizes, self.dtype)
        plan = key = None
        if weights is None:
            plan = self._plan_now(xp is not np)
            key, weights = plan[0], plan[1]
        else:
            key = self._key_for(weights, xp is not np)
        if training and any(c.dropout or c.recurrent_dropout for c in self.cells):
            self._chosen = (key, dispatch.Choice(
                "reference", dispatch.backend_module("reference"), "reference: training=True "
                "with dropout (the fast backends run inference only)"))
            out, out_states, packs = self._dropout_run(weights, x, mask, states, reverse, zero)
        else:
            # (the cells are built-in and built: the weights were read)
            if plan is not None:
                choice, packs = plan[2], plan[3]
            else:
                choice = _engine.select_for(weights, self.backend_arg, xp is not np,
                                            self._placed)
                packs = [w.packed(choice.module) for w in weights]
            self._chosen = (key, choice)
            out, out_states = _engine.run_cells(choice.module, packs, x, states, mask, reverse,
                                                zero, self.return_sequences, xp)
        if self.return_sequences:
            return xp.ascontiguousarray(out[:, ::-1] if reverse else out), out_states
        return _engine.last_output(packs, out_states, mask, reverse, zero, xp), out_states

    def _key_for(self, weights, on_device):
        """The :meth:`_choice_key` of a call that runs ``weights``, read by
        its caller (a ``Bidirectional`` or a model reads every layer's
        together) before this key: where they are no longer the cells'
        weights, a key no later look matches, so ``backend`` and
        ``backend_reason`` choose again for the weights the cells have (the
        key is read first: weights changed after that move it on)."""
        key = self._choice_key(on_device)
        if any(c._kernel_weights is not w for c, w in zip(self.cells, weights)):
            return (None,) + key[1:]
        return key

    def _plan_now(self, on_device):
        """``(key, weights, choice, packs)`` for a call that starts now: the
        cells' weights (:func:`_engine.snapshot`), the backend and the weights
        packed for it, read again only when any weights changed
        (``_engine.generation``) or what the choice depends on did (at
        batch 1 reading them costs as much as a short sequence's steps)."""
        key = self._choice_key(on_device)
        plan = getattr(self, "_plan", None)  # (None in a layer unpickled from an older version)
        if plan is None or plan[0] != key:
            weights = _engine.snapshot(self.cells, stack=True)
            choice = _engine.select_for(weights, self.backend_arg, on_device, self._placed)
            plan = self._plan = (key, weights, choice, [w.packed(choice.module) for w in weights])
        return plan

    def _dropout_run(self, weights, x, mask, states, reverse, zero):
        """Keras training-mode dropout, cell by cell on the reference backend."""
        module = dispatch.backend_module("reference")
        layer_in, k, out_states, packs = x, 0, [], []
        for i, (cell, w) in enumerate(zip(self.cells, weights)):
            n = w.params.n_states
            xin, packed = _engine.reference_dropout(w, layer_in, cell._dropout_rng(),
                                                    cell.dropout, cell.recurrent_dropout)
            last = i == len(weights) - 1
            out, st = _engine.run_cells(module, [packed], xin, states[k:k + n], mask, reverse,
                                        zero, not last or self.return_sequences)
            out_states += st
            packs.append(packed)
            layer_in, k = out, k + n
        return layer_in, out_states, packs

    # ----- streaming and pickling -----
    def stream(self, batch_size=1, **kwargs):
        """A :class:`fastrnn.streaming.Stream`: frame-by-frame inference with carried state."""
        return Stream(self, batch_size=batch_size, **kwargs)

    def __getstate__(self):
        # The backend choice holds a module: per process, made again on demand.
        state = dict(self.__dict__)
        state["_chosen"] = state["_plan"] = None
        return state

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
        return [out] + pack_as(self.state_structure,
                                  [(batch, s) for s in self.state_sizes])

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
        return {**self._rnn_config(), "cell": serialization.serialize(self.cell)}

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


for _cls in (RNN, SimpleRNN, GRU, LSTM):
    serialization.register("rnn")(_cls)

serialize = serialization.serialize


def deserialize(obj):
    """Build a layer, cell or ``Sequential`` model from :func:`serialize`'s
    output or a Keras-serialised dict (every class :func:`serialize` takes).

    Keras-only keys that carry nothing for inference (``build_config``,
    ``registered_name``, ``module``) are ignored.
    """
    return serialization.deserialize(obj, kinds=("rnn", "cell", "layer", "model"))
