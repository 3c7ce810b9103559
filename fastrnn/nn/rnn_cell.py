"""TF1's ``tf.nn.rnn_cell`` classes on NumPy arrays, run by fastrnn's kernels.

Weights are kept exactly as TF1 stored them (names, shapes, order of
``tf.compat.v1.global_variables()``), so a checkpoint's arrays go straight
into :meth:`RNNCell.set_weights`. The built-in cells convert them once, when
they change, into the Keras layout and gate order of the kernel contract
(:mod:`fastrnn.kernels`): LSTM ``i, j, f, o`` becomes ``i, f, c, o`` with the
``(depth + units, 4 units)`` kernel split into ``kernel`` and
``recurrent_kernel``; GRU ``r, u`` gates plus candidate become ``z, r, h``
with ``reset_after=False``.

Cells
-----
``RNNCell``
    The abstract base. Subclass it and define ``state_size``,
    ``output_size`` and ``call(inputs, state) -> (output, new_state)`` (and
    ``build(inputs_shape)`` creating weights with :meth:`RNNCell.add_weight`
    if it has any); :func:`fastrnn.nn.dynamic_rnn` then runs it one step at
    a time in Python with TF1's semantics.
``BasicRNNCell``, ``GRUCell``, ``BasicLSTMCell``, ``LSTMCell``
    Built-in cells: :func:`fastrnn.nn.dynamic_rnn` runs each over the whole
    sequence in a single kernel call.
``MultiRNNCell``
    Stacks cells; runs layer after layer (one kernel call per built-in
    layer).
``DropoutWrapper``, ``ResidualWrapper``
    TF1's wrappers. Dropout is a training-time regulariser: with every keep
    probability at 1.0 (the default, and what inference wants) the wrapper
    is the identity and the fused kernels run; below 1.0 it drops at random
    on every call exactly as TF1 did, one step at a time.
"""

from __future__ import annotations

import collections
import copy
import re

import numpy as np

from .. import _engine, _nest, _tf_bundle, activations, initializers
from .._engine import WEIGHTS_LOCK, Weights
from ..activations import SIGMOID
from ..kernels import GRUParams, LSTMParams, SimpleRNNParams

__all__ = [
    "RNNCell",
    "BasicRNNCell",
    "GRUCell",
    "BasicLSTMCell",
    "LSTMCell",
    "MultiRNNCell",
    "LSTMStateTuple",
    "DropoutWrapper",
    "ResidualWrapper",
]


class LSTMStateTuple(collections.namedtuple("LSTMStateTuple", ("c", "h"))):
    """The state of an LSTM cell: ``(c, h)``, in that order, as in TF1.

    ``c`` is the cell state ``(batch, num_units)``; ``h`` the output
    ``(batch, num_proj or num_units)``. (Keras orders LSTM states ``[h, c]``.)
    """

    __slots__ = ()

    @property
    def dtype(self):
        c, h = self
        if getattr(c, "dtype", None) != getattr(h, "dtype", None):
            raise TypeError(f"inconsistent internal state: {c.dtype} vs {h.dtype}")
        return c.dtype


# --------------------------------------------------------------------------
# helpers


def _initializer(identifier):
    """``identifier`` -> a callable ``init(shape, dtype)``; None = glorot_uniform."""
    if identifier is None:
        identifier = "glorot_uniform"
    if isinstance(identifier, (int, float)) and not isinstance(identifier, bool):
        value = float(identifier)
        return lambda shape, dtype="float32": np.full(shape, value, dtype=dtype)
    return initializers.get(identifier)


def _default_name(cls):
    """TF1's (Keras's) snake case of a class name: ``BasicLSTMCell`` -> ``basic_lstm_cell``."""
    name = re.sub(r"(.)([A-Z][a-z0-9]+)", r"\1_\2", cls.__name__)
    name = re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()
    return "private" + name if name.startswith("_") else name


def _float_dtype(dtype):
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"dtype: expected float32 or float64, got {dtype}")
    return dtype


def compute_dtype(dtype=None, state=None, inputs=None):
    """The dtype a run computes in: ``dtype=``, else the state's, else the inputs'."""
    if dtype is not None:
        return _float_dtype(dtype)
    if state is not None:
        leaves = [s for s in _nest.flatten(state) if hasattr(s, "dtype")]
        if leaves and np.dtype(leaves[0].dtype) in (np.float32, np.float64):
            return np.dtype(leaves[0].dtype)
    if inputs is not None and np.dtype(inputs.dtype) in (np.float32, np.float64):
        return np.dtype(inputs.dtype)
    return np.dtype(np.float32)


def check_state(cell, state, batch, dtype, argument="state"):
    """Validate ``state`` against ``cell.state_size``; return it in that structure.

    Lists and tuples are interchangeable (TF1 flattens them alike), but the
    nesting and every leaf's shape ``(batch, size)`` must match.
    """
    size = cell.state_size
    if not _nest.same_structure(size, state):
        raise ValueError(
            f"{argument}: structure does not match {_cell_label(cell)}.state_size: "
            f"expected {_nest.describe(size)} ({_nest.count(size)} array(s) of shape "
            f"(batch, size)), got {_nest.describe(state)}"
        )
    leaves = []
    for i, (n, s) in enumerate(zip(_nest.flatten(size), _nest.flatten(state))):
        a = np.asarray(s)
        if a.dtype.kind != "f":
            raise TypeError(f"{argument}: element {i} of the state: expected floating-point "
                            f"values, got dtype {a.dtype}")
        if a.shape != (batch, int(n)):
            raise ValueError(
                f"{argument}: element {i} of the state should have shape "
                f"({batch}, {int(n)}) (batch, size) for {_cell_label(cell)}.state_size "
                f"{_nest.describe(size)}, got {a.shape}"
            )
        leaves.append(np.asarray(a, dtype=dtype))
    return _nest.pack_as(size, leaves)


def _name(cell):
    return getattr(cell, "name", None) or _default_name(type(cell))


def _cell_label(cell):
    return f"{type(cell).__name__} {_name(cell)!r}"


def _as_inputs(inputs, argument="inputs"):
    x = np.asarray(inputs)
    if x.dtype.kind != "f":
        raise TypeError(f"{argument}: expected floating-point values, got dtype {x.dtype}")
    if x.ndim != 2:
        raise ValueError(f"{argument}: expected shape (batch, depth), got {x.shape}")
    return x


# --------------------------------------------------------------------------
# the base class


class RNNCell:
    """Abstract TF1 RNN cell: one step ``(inputs, state) -> (output, new_state)``.

    Subclass it like TF1's ``tf.nn.rnn_cell.RNNCell``: define the
    ``state_size`` and ``output_size`` properties (an ``int``, or a nested
    tuple of ints for several states), ``call(inputs, state)`` on NumPy
    arrays ``inputs (batch, depth)`` and ``state`` shaped like
    ``state_size`` with a leading batch dimension, and optionally
    ``build(inputs_shape)`` creating weights with :meth:`add_weight`.

    Parameters
    ----------
    name : str, optional
        The cell's name (TF1's variable scope); defaults to the snake-case
        class name, as TF1.
    dtype : float32 or float64, optional
        The dtype of the weights. Left out, a built-in cell takes the dtype
        of the weights it is given (float64 arrays, as a float64 checkpoint
        holds, make a float64 cell; anything else float32, which is also
        the dtype ``build`` starts with); given, the cell keeps it and
        :meth:`set_weights` casts to it (float64 arrays into a float32 cell
        are rounded). Runs compute in the dtype of their inputs, initial
        state or ``dtype=`` argument.
    backend : str
        ``"auto"`` (default), ``"reference"``, ``"cpu"`` or ``"cuda"``: the
        kernels that run a built-in cell (see :mod:`fastrnn.dispatch`);
        ``backend=`` on :func:`fastrnn.nn.dynamic_rnn` overrides it.
    reuse, trainable, **kwargs
        Accepted for TF1 compatibility and ignored.
    """

    # Class-level defaults keep a subclass working even when its __init__
    # forgets to call RNNCell.__init__ (old TF1 cells often did).
    built = False
    backend = "auto"
    dtype = None
    _dtype_fixed = False
    #: The :class:`fastrnn.dispatch.Choice` of the cell's last kernel run
    #: (built-in cells): which backend ran it and why.
    last_backend = None

    def __init__(self, trainable=True, name=None, dtype=None, backend="auto", **kwargs):
        self.name = name or _default_name(type(self))
        self.dtype = None if dtype is None else _float_dtype(dtype)
        self._dtype_fixed = dtype is not None
        self.backend = backend
        self.built = False
        self.last_backend = None
        self._weights = collections.OrderedDict()

    @property
    def _weight_dict(self):
        if "_weights" not in self.__dict__:
            self._weights = collections.OrderedDict()
        return self._weights

    def __getstate__(self):
        # The backend choice holds a module and the kernel cache packed
        # arrays: both are per process and rebuilt on demand.
        state = dict(self.__dict__)
        state.pop("last_backend", None)
        if "_cache" in state:
            state["_cache"] = {}
        return state

    # -- structure -------------------------------------------------------
    @property
    def state_size(self):
        """``int`` or a nested tuple of ints: the size of each state."""
        raise NotImplementedError("RNNCell subclasses define state_size")

    @property
    def output_size(self):
        """``int``: the size of the output of one step."""
        raise NotImplementedError("RNNCell subclasses define output_size")

    def zero_state(self, batch_size, dtype=None):
        """Zeros shaped like ``state_size``, each ``(batch_size, size)``."""
        dtype = np.dtype(dtype or self.dtype or np.float32)
        return _nest.map_structure(
            lambda n: np.zeros((int(batch_size), int(n)), dtype=dtype), self.state_size
        )

    def get_initial_state(self, inputs=None, batch_size=None, dtype=None):
        """``zero_state``, taking the batch size and dtype from ``inputs`` if given."""
        if inputs is not None:
            x = np.asarray(inputs)
            batch_size = x.shape[0] if batch_size is None else batch_size
            dtype = dtype or (x.dtype if x.dtype in (np.float32, np.float64) else None)
        if batch_size is None:
            raise ValueError("get_initial_state: give inputs or batch_size")
        return self.zero_state(batch_size, dtype)

    # -- weights ---------------------------------------------------------
    def build(self, inputs_shape):
        """Create the weights for inputs of shape ``(batch, depth)``."""
        self.built = True

    def add_weight(self, name, shape, dtype=None, initializer=None, trainable=True):
        """Create a weight, register it for get/set_weights and return it.

        The array returned is the one :meth:`set_weights` later overwrites
        in place, so a subclass may keep a reference to it.
        """
        if name in self._weight_dict:
            raise ValueError(f"{_cell_label(self)}: weight {name!r} already exists")
        dtype = np.dtype(dtype or self.dtype or np.float32)
        shape = tuple(int(s) for s in shape)
        value = np.array(_initializer(initializer)(shape, dtype), dtype=dtype)
        if value.shape != shape:
            raise ValueError(
                f"{_cell_label(self)}: initializer of {name!r} returned shape "
                f"{value.shape}, expected {shape}"
            )
        self._weight_dict[name] = value
        self._weights_changed()
        return value

    add_variable = add_weight

    @property
    def variable_names(self):
        """TF1 names of the weights, in ``get_weights`` order (no outer scope)."""
        return [f"{_name(self)}/{n}" for n in self._weight_dict]

    @property
    def weights(self):
        """The weight arrays themselves, in TF1 variable order.

        Built-in cells hand them out read-only (change them with
        :meth:`set_weights`); a subclass's arrays from :meth:`add_weight`
        are its own to edit.
        """
        return list(self._weight_dict.values())

    def get_weights(self):
        """Copies of the weights, in TF1 ``global_variables()`` order."""
        return [w.copy() for w in self._weight_dict.values()]

    def _expected(self):
        return ", ".join(f"{n} {w.shape}" for n, w in self._weight_dict.items())

    def set_weights(self, weights):
        """Set the weights from a list in TF1 variable order (shapes checked)."""
        weights = list(weights)
        if not self.built:
            raise ValueError(
                f"{_cell_label(self)}.set_weights: the cell is not built; call "
                "cell.build((batch, input_depth)) first"
            )
        if len(weights) != len(self._weight_dict):
            raise ValueError(
                f"{_cell_label(self)}.set_weights: expected {len(self._weight_dict)} arrays "
                f"in TF1 variable order [{self._expected()}], got {len(weights)}"
            )
        arrays = []
        for (n, w), value in zip(self._weight_dict.items(), weights):
            value = np.asarray(value)
            if value.dtype.kind not in "iuf":
                raise TypeError(f"{_cell_label(self)}.set_weights: variable {n!r} expects real "
                                f"numbers, got dtype {value.dtype}")
            if value.shape != w.shape:
                raise ValueError(
                    f"{_cell_label(self)}.set_weights: variable {n!r} expects shape "
                    f"{w.shape}, got {value.shape}"
                )
            arrays.append(value)
        self._store(arrays)

    def _store(self, arrays):
        """Write checked ``arrays`` into the weights: in place, so that a
        subclass's references from :meth:`add_weight` see them."""
        with WEIGHTS_LOCK:
            self._adopt_dtype(arrays)
            for w, value in zip(self._weight_dict.values(), arrays):
                writeable = w.flags.writeable
                w.setflags(write=True)
                w[...] = value
                w.setflags(write=writeable)
            self._weights_changed()

    def _weights_changed(self):
        pass

    def _adopt_dtype(self, arrays):
        """Hook before validated ``arrays`` are written: a subclass's weights
        keep the dtype ``add_weight`` gave them (they are written in place)."""

    def load_checkpoint(self, path, scope="rnn"):
        """Set the weights from a TensorFlow checkpoint, without TensorFlow.

        Reads the variables ``scope + "/" + name`` for each name of
        :attr:`variable_names` (``rnn/lstm_cell/kernel`` ...) and passes them
        to :meth:`set_weights`, so an unbuilt built-in cell is built from the
        kernel's shape and a cell without a fixed ``dtype`` takes the
        checkpoint's (float64 variables give a float64 cell).

        Parameters
        ----------
        path : str or os.PathLike
            The checkpoint prefix (``model.ckpt``, as given to
            ``Saver.restore``), its ``.index`` file, or a directory holding
            a ``checkpoint`` file; see :func:`fastrnn.io.read_tf_checkpoint`.
        scope : str
            The variable scope the cell ran under: ``"rnn"`` for
            ``dynamic_rnn``'s default, ``"bidirectional_rnn/fw"`` and
            ``"bidirectional_rnn/bw"`` for ``bidirectional_dynamic_rnn``'s;
            ``""`` for none.

        Returns
        -------
        self

        Raises
        ------
        ValueError
            A variable is not in the checkpoint (the error names it and the
            scopes where the cell's first variable was found), a shape does
            not match, or the checkpoint is damaged.
        """
        return _load_checkpoint(self, path, scope)

    # -- one step --------------------------------------------------------
    def __call__(self, inputs, state, scope=None):
        """Run one step: ``inputs (batch, depth)`` -> ``(output, new_state)``."""
        x = _as_inputs(inputs)
        if not getattr(self, "built", False):
            self.build(x.shape)
            self.built = True
        return self.call(x, state)

    def call(self, inputs, state):
        raise NotImplementedError("RNNCell subclasses define call(inputs, state)")


# --------------------------------------------------------------------------
# built-in cells


def resolve_backend(requested, cell):
    """The backend request for a run: the call's ``backend=``, else the cell's."""
    if requested is None or (isinstance(requested, str) and requested.lower() == "auto"):
        own = getattr(cell, "backend", None)
        if own is not None:
            return own
    return "auto" if requested is None else requested


def run_cell(cell, x, mask, reverse, states, backend, weights=None):
    """Run built-in ``cell`` over ``x (batch, time, depth)`` in one kernel call.

    ``mask (batch, time)`` is ``t < sequence_length`` (masked steps output
    zeros and carry the state); ``reverse`` processes each sequence from its
    last valid step back to step 0; ``states`` are the Keras-order states
    in ``x``'s dtype. Returns ``(outputs (batch, time, output_size) aligned
    with x in time, Keras-order states)``; the cell's ``last_backend`` says
    which backend ran it and why.
    """
    if weights is None:
        weights = _engine.snapshot([cell], x.dtype)
    choice = _engine.select_for(weights, backend)
    cell.last_backend = choice
    if mask is not None:
        mask = np.ascontiguousarray(mask, dtype=bool)
    return _engine.run_cells(choice.module, [weights[0].packed(choice.module)],
                             np.ascontiguousarray(x), states, mask, reverse, True, True)


class _FusedCell(RNNCell):
    """A built-in cell: TF1 weights, converted once to a kernel params record."""

    _depth = None

    def __init__(self, num_units, activation=None, reuse=None, name=None, dtype=None,
                 backend="auto", **kwargs):
        super().__init__(name=name, dtype=dtype, backend=backend, **kwargs)
        num_units = int(num_units)
        if num_units < 1:
            raise ValueError(f"num_units: expected a positive integer, got {num_units}")
        self._num_units = num_units
        self._activation = activations.resolve(
            "tanh" if activation is None else activation, "activation"
        )
        self._cache = {}

    # subclasses: _spec(depth) -> [(name, shape, initializer)], _recurrent_rows
    def _names(self):
        return [n for n, _, _ in self._spec(1)]

    @property
    def variable_names(self):
        return [f"{_name(self)}/{n}" for n in self._names()]

    def build(self, inputs_shape):
        depth = inputs_shape[-1] if isinstance(inputs_shape, (tuple, list)) else inputs_shape
        if depth is None or int(depth) < 1:
            raise ValueError(
                f"{_cell_label(self)}.build: expected inputs_shape (batch, depth) with "
                f"depth >= 1, got {inputs_shape!r}"
            )
        depth = int(depth)
        self._weights = collections.OrderedDict()
        self.dtype = self.dtype or np.dtype(np.float32)
        for n, shape, init in self._spec(depth):
            # Read-only: the kernels run a converted copy, refreshed by
            # set_weights, so an edit in place would silently be ignored.
            self.add_weight(n, shape, initializer=init).setflags(write=False)
        self._depth = depth
        self.built = True

    def set_weights(self, weights):
        """Set the weights from a list in TF1 variable order.

        An unbuilt cell is built first, its input depth read from the
        kernel's rows (``depth + num_units``, or ``depth + num_proj``).
        """
        weights = list(weights)
        names = self._names()
        if len(weights) != len(names):
            expected = self._expected() if self.built else ", ".join(names)
            raise ValueError(
                f"{_cell_label(self)}.set_weights: expected {len(names)} arrays in TF1 "
                f"variable order [{expected}], got {len(weights)}"
            )
        if not self.built:
            kernel = np.asarray(weights[0])
            depth = kernel.shape[0] - self._recurrent_rows if kernel.ndim == 2 else 0
            if depth < 1:
                raise ValueError(
                    f"{_cell_label(self)}.set_weights: {names[0]} should have shape "
                    f"(depth + {self._recurrent_rows}, ...), got {kernel.shape}"
                )
            self.build((None, depth))
        super().set_weights(weights)

    def _store(self, arrays):
        """Swap in read-only copies of ``arrays`` (the kernels run packed forms
        of them: see ``_weights_for``), all at once."""
        with WEIGHTS_LOCK:
            self._adopt_dtype(arrays)
            new = collections.OrderedDict()
            for (n, w), value in zip(self._weight_dict.items(), arrays):
                a = np.array(value, dtype=w.dtype)
                a.setflags(write=False)
                new[n] = a
            self._weights = new
            self._weights_changed()

    def _weights_changed(self):
        self._cache = {}
        _engine.weights_changed()

    def _adopt_dtype(self, arrays):
        if self._dtype_fixed:
            return
        dtype = np.dtype(np.float64 if any(a.dtype == np.float64 for a in arrays)
                         else np.float32)
        if dtype != self.dtype:
            self.dtype = dtype
            self._weights = collections.OrderedDict(
                (n, np.zeros(w.shape, dtype)) for n, w in self._weights.items())
            for w in self._weights.values():
                w.setflags(write=False)

    def __setstate__(self, state):
        self.__dict__.update(state)
        for w in self._weight_dict.values():
            w.setflags(write=False)

    def _check_depth(self, depth, argument="inputs"):
        if depth != self._depth:
            first = next(iter(self._weights))
            raise ValueError(
                f"{argument}: input depth {depth} does not match the depth {self._depth} "
                f"{_cell_label(self)} was built for ({first} "
                f"{self._weights[first].shape} = (depth + {self._recurrent_rows}, ...))"
            )

    def _weights_for(self, dtype):
        """The weights as the kernels run them in ``dtype`` (an
        ``_engine.Weights``, made once per dtype until the weights change)."""
        dtype = np.dtype(dtype)
        cache = self._cache
        w = cache.get(dtype)
        if w is None:
            arrays = {n: np.asarray(a, dtype=dtype) for n, a in self._weights.items()}
            w = cache[dtype] = Weights(self._make_params(arrays, self._depth, dtype))
        return w

    def _ensure_built(self, depth):
        if not self.built:
            self.build((None, depth))

    def call(self, inputs, state):
        x = inputs
        if (type(x) is np.ndarray and x.ndim == 2 and x.shape[1] == self._depth
                and (x.dtype == np.float32 or x.dtype == np.float64) and x.flags.c_contiguous
                and self.backend == "auto"):
            # the common case, checked cheaply: one call of the frame kernel
            states = self._plain_states(state, x.shape[0], x.dtype)
            if states is not None:
                weights = (self._weights_for(x.dtype),)  # (one cell: one consistent set)
                frames = _engine.frames_for(weights, x.shape[0])
                if frames is not None:
                    out, states = _engine.step(frames, x, states)
                    self.last_backend = _engine.select_for(weights, "auto")
                    return out, self._from_keras(states)
        x = _as_inputs(inputs)
        self._ensure_built(x.shape[1])
        self._check_depth(x.shape[1])
        dtype = compute_dtype(None, state, x)
        state = check_state(self, state, x.shape[0], dtype)
        if x.shape[0] == 0:
            return np.zeros((0, self.output_size), dtype), state
        x = np.ascontiguousarray(x, dtype=dtype)
        states = [np.ascontiguousarray(a, dtype=dtype) for a in self._to_keras(state)]
        weights = _engine.snapshot([self], dtype)
        backend = resolve_backend(None, self)
        frames = _engine.frames_for(weights, x.shape[0]) if backend == "auto" else None
        if frames is not None:
            out, states = _engine.step(frames, x, states)
            self.last_backend = _engine.select_for(weights, "auto")
            return out, self._from_keras(states)
        out, states = run_cell(self, x[:, None, :], None, False, states, backend, weights)
        return out[:, 0], self._from_keras(states)

    def _plain_states(self, state, batch, dtype):
        """``state`` as the Keras-order list the kernels take, when it needs
        no checking beyond this (C-contiguous ``(batch, size)`` arrays of
        ``dtype`` in the cell's structure); else None."""
        if not isinstance(state, (tuple, np.ndarray)) or isinstance(state, tuple) and (
                len(state) != 2 or not self._state_is_tuple):
            return None
        states = self._to_keras(state)
        sizes = self._weights_for(dtype).params
        want = [sizes.output_size, sizes.units] if len(states) == 2 else [sizes.units]
        for a, n in zip(states, want):
            if type(a) is not np.ndarray or a.dtype != dtype or a.shape != (batch, n) \
                    or not a.flags.c_contiguous:
                return None
        return states

    # TF1 state <-> the kernels' Keras-order list
    _state_is_tuple = False

    def _to_keras(self, state):
        return [state]

    def _from_keras(self, states):
        return states[0]


def _c(a):
    return np.ascontiguousarray(a)


class BasicRNNCell(_FusedCell):
    """TF1 ``BasicRNNCell``: ``h' = activation([x, h] @ kernel + bias)``.

    Weights: ``kernel (depth + num_units, num_units)``, ``bias (num_units,)``.
    """

    @property
    def state_size(self):
        return self._num_units

    @property
    def output_size(self):
        return self._num_units

    @property
    def _recurrent_rows(self):
        return self._num_units

    def _spec(self, depth):
        H = self._num_units
        return [("kernel", (depth + H, H), None), ("bias", (H,), "zeros")]

    def _make_params(self, w, D, dtype):

        k = w["kernel"]
        return SimpleRNNParams(_c(k[:D]), _c(k[D:]), _c(w["bias"]), activation=self._activation)


class GRUCell(_FusedCell):
    """TF1 ``GRUCell`` (reset gate applied before the recurrent product).

    ``r, u = sigmoid([x, h] @ gates/kernel + gates/bias)``,
    ``c = activation([x, r * h] @ candidate/kernel + candidate/bias)``,
    ``h' = u * h + (1 - u) * c``.

    Weights: ``gates/kernel (depth + H, 2H)`` (columns ``r, u``),
    ``gates/bias (2H,)`` (initialised to 1.0), ``candidate/kernel
    (depth + H, H)``, ``candidate/bias (H,)``.
    """

    def __init__(self, num_units, activation=None, reuse=None, kernel_initializer=None,
                 bias_initializer=None, name=None, dtype=None, backend="auto", **kwargs):
        super().__init__(num_units, activation, reuse, name, dtype, backend, **kwargs)
        self._kernel_initializer = kernel_initializer
        self._bias_initializer = bias_initializer

    @property
    def state_size(self):
        return self._num_units

    @property
    def output_size(self):
        return self._num_units

    @property
    def _recurrent_rows(self):
        return self._num_units

    def _spec(self, depth):
        H = self._num_units
        ki, bi = self._kernel_initializer, self._bias_initializer
        return [
            ("gates/kernel", (depth + H, 2 * H), ki),
            ("gates/bias", (2 * H,), 1.0 if bi is None else bi),
            ("candidate/kernel", (depth + H, H), ki),
            ("candidate/bias", (H,), "zeros" if bi is None else bi),
        ]

    def _make_params(self, w, D, dtype):

        H = self._num_units
        g, gb = w["gates/kernel"], w["gates/bias"]
        ck, cb = w["candidate/kernel"], w["candidate/bias"]
        # TF1 gates are (r, u); the kernels want (z, r, h) with z = u.
        kernel = np.concatenate([g[:D, H:], g[:D, :H], ck[:D]], axis=1)
        recurrent = np.concatenate([g[D:, H:], g[D:, :H], ck[D:]], axis=1)
        bias = np.zeros((2, 3 * H), dtype=dtype)
        bias[0] = np.concatenate([gb[H:], gb[:H], cb])
        return GRUParams(
            _c(kernel), _c(recurrent), bias, activation=self._activation,
            recurrent_activation=SIGMOID, reset_after=False,
        )


def _ifco(a):
    """TF1 LSTM columns ``i, j, f, o`` -> the kernels' ``i, f, c, o``."""
    i, j, f, o = np.split(a, 4, axis=-1)
    return np.ascontiguousarray(np.concatenate([i, f, j, o], axis=-1))


class _LSTMBase(_FusedCell):
    _use_peepholes = False
    _cell_clip = None
    _num_proj = None
    _proj_clip = None
    _initializer_id = None

    def __init__(self, num_units, forget_bias=1.0, state_is_tuple=True, activation=None,
                 reuse=None, name=None, dtype=None, backend="auto", **kwargs):
        super().__init__(num_units, activation, reuse, name, dtype, backend, **kwargs)
        self._forget_bias = float(forget_bias)
        self._state_is_tuple = bool(state_is_tuple)

    @property
    def state_size(self):
        P = self._num_proj or self._num_units
        if self._state_is_tuple:
            return LSTMStateTuple(self._num_units, P)
        return self._num_units + P

    @property
    def output_size(self):
        return self._num_proj or self._num_units

    @property
    def _recurrent_rows(self):
        return self._num_proj or self._num_units

    def _spec(self, depth):
        H, P = self._num_units, self._recurrent_rows
        init = self._initializer_id
        spec = [("kernel", (depth + P, 4 * H), init), ("bias", (4 * H,), "zeros")]
        if self._use_peepholes:
            spec += [(n, (H,), init) for n in ("w_f_diag", "w_i_diag", "w_o_diag")]
        if self._num_proj is not None:
            spec.append(("projection/kernel", (H, self._num_proj), init))
        return spec

    def _make_params(self, w, D, dtype):

        k = w["kernel"]
        peepholes = None
        if self._use_peepholes:
            peepholes = _c(np.stack([w["w_i_diag"], w["w_f_diag"], w["w_o_diag"]]))
        projection = w.get("projection/kernel")
        return LSTMParams(
            _ifco(k[:D]), _ifco(k[D:]), _ifco(w["bias"]), activation=self._activation,
            recurrent_activation=SIGMOID, forget_bias=self._forget_bias,
            peepholes=peepholes, cell_clip=self._cell_clip,
            projection=None if projection is None else _c(projection),
            proj_clip=self._proj_clip,
        )

    def _to_keras(self, state):
        if self._state_is_tuple:
            c, h = state
        else:
            c, h = state[:, : self._num_units], state[:, self._num_units :]
        return [h, c]

    def _from_keras(self, states):
        h, c = states
        if self._state_is_tuple:
            return LSTMStateTuple(c, h)
        return np.concatenate([c, h], axis=1)


class BasicLSTMCell(_LSTMBase):
    """TF1 ``BasicLSTMCell``: no peepholes, no clipping, no projection.

    Weights: ``kernel (depth + H, 4H)`` (columns ``i, j, f, o``; ``j`` the
    candidate), ``bias (4H,)``. ``forget_bias`` is added to the forget gate
    at run time. The state is ``LSTMStateTuple(c, h)``, or ``[c, h]``
    concatenated on axis 1 when ``state_is_tuple=False``.
    """


class LSTMCell(_LSTMBase):
    """TF1 ``LSTMCell``, with optional peepholes, cell clipping and projection.

    Weights, in order: ``kernel (depth + P, 4H)`` (columns ``i, j, f, o``),
    ``bias (4H,)``, then with ``use_peepholes`` ``w_f_diag, w_i_diag,
    w_o_diag`` (each ``(H,)``), then with ``num_proj``
    ``projection/kernel (H, P)``; ``P = num_proj or num_units``. The state
    is ``LSTMStateTuple(c (batch, H), h (batch, P))``; the output is ``h``.
    ``num_unit_shards`` / ``num_proj_shards`` (deprecated in TF1) are
    accepted when ``None`` or 1.
    """

    def __init__(self, num_units, use_peepholes=False, cell_clip=None, initializer=None,
                 num_proj=None, proj_clip=None, num_unit_shards=None, num_proj_shards=None,
                 forget_bias=1.0, state_is_tuple=True, activation=None, reuse=None,
                 name=None, dtype=None, backend="auto", **kwargs):
        super().__init__(num_units, forget_bias, state_is_tuple, activation, reuse, name,
                         dtype, backend, **kwargs)
        for arg, value in (("num_unit_shards", num_unit_shards),
                           ("num_proj_shards", num_proj_shards)):
            if value not in (None, 1):
                raise ValueError(f"{arg}: sharded variables are not supported, got {value}")
        self._use_peepholes = bool(use_peepholes)
        self._cell_clip = None if cell_clip is None else float(cell_clip)
        self._initializer_id = initializer
        if num_proj is not None and int(num_proj) < 1:
            raise ValueError(f"num_proj: expected a positive integer or None, got {num_proj}")
        self._num_proj = None if num_proj is None else int(num_proj)
        self._proj_clip = None if proj_clip is None else float(proj_clip)


# --------------------------------------------------------------------------
# composition


def _n_weights(cell):
    if isinstance(cell, _FusedCell):
        return len(cell._names())
    if isinstance(cell, (MultiRNNCell, _Wrapper)):
        return cell._n_weights()
    if not cell.built:
        raise ValueError(f"{_cell_label(cell)}: build the cell before set_weights")
    return len(cell._weight_dict)


def _first_depth(cell, weights):
    """Input depth of an unbuilt cell, read from its first weight array."""
    if isinstance(cell, _FusedCell):
        kernel = np.asarray(weights[0])
        return kernel.shape[0] - cell._recurrent_rows if kernel.ndim == 2 else None
    if isinstance(cell, (MultiRNNCell, _Wrapper)):
        return cell._first_depth(weights)
    return None


class MultiRNNCell(RNNCell):
    """TF1 ``MultiRNNCell``: cells stacked, each feeding the next.

    ``state_size`` is a tuple with one entry per layer (or their sum with
    ``state_is_tuple=False``, when every cell's state must be a single
    array); ``get_weights`` is the concatenation of the cells' lists in
    order. :func:`fastrnn.nn.dynamic_rnn` runs it layer by layer, one kernel
    call per built-in layer; outputs and states equal TF1's step-by-step
    stacking because masked steps neither change state nor read the layer
    below.
    """

    def __init__(self, cells, state_is_tuple=True, name=None, backend="auto", **kwargs):
        super().__init__(name=name, backend=backend, **kwargs)
        cells = list(cells)
        if not cells:
            raise ValueError("cells: MultiRNNCell needs at least one cell")
        for i, cell in enumerate(cells):
            if not isinstance(cell, RNNCell):
                raise TypeError(f"cells[{i}]: expected an RNNCell, got {type(cell).__name__}")
        self._cells = cells
        self._state_is_tuple = bool(state_is_tuple)
        if not self._state_is_tuple:
            for i, cell in enumerate(cells):
                if _nest.is_sequence(cell.state_size):
                    raise ValueError(
                        "MultiRNNCell(state_is_tuple=False) needs cells whose state is one "
                        f"array; cells[{i}].state_size is {_nest.describe(cell.state_size)} "
                        "(build it with state_is_tuple=False)"
                    )

    @property
    def cells(self):
        return list(self._cells)

    @property
    def state_size(self):
        if self._state_is_tuple:
            return tuple(cell.state_size for cell in self._cells)
        return sum(int(cell.state_size) for cell in self._cells)

    @property
    def output_size(self):
        return self._cells[-1].output_size

    def build(self, inputs_shape):
        depth = inputs_shape[-1]
        for cell in self._cells:
            if not cell.built:
                cell.build((None, depth))
                cell.built = True
            depth = cell.output_size
        self.built = True

    @property
    def variable_names(self):
        return [
            f"{_name(self)}/cell_{i}/{n}"
            for i, cell in enumerate(self._cells)
            for n in cell.variable_names
        ]

    @property
    def weights(self):
        return [w for cell in self._cells for w in cell.weights]

    def get_weights(self):
        return [w for cell in self._cells for w in cell.get_weights()]

    def _n_weights(self):
        return sum(_n_weights(cell) for cell in self._cells)

    def _first_depth(self, weights):
        return _first_depth(self._cells[0], weights)

    def set_weights(self, weights):
        """Set every cell's weights from one list, the cells' lists in order."""
        weights = list(weights)
        expected = self._n_weights()
        if len(weights) != expected:
            raise ValueError(
                f"{_cell_label(self)}.set_weights: expected {expected} arrays (the cells' "
                f"TF1 variables in order: {', '.join(self.variable_names)}), "
                f"got {len(weights)}"
            )
        chunks, start = [], 0
        for cell in self._cells:
            n = _n_weights(cell)
            chunks.append(weights[start : start + n])
            start += n
        # every cell's arrays are checked (on a copy) before any cell changes,
        # and a run in another thread sees all the new weights or none
        for cell, chunk in zip(self._cells, chunks):
            copy.deepcopy(cell).set_weights(chunk)
        with WEIGHTS_LOCK:
            for cell, chunk in zip(self._cells, chunks):
                cell.set_weights(chunk)
        self.built = all(cell.built for cell in self._cells)

    def split_state(self, state):
        """The per-layer states of a MultiRNNCell state."""
        if self._state_is_tuple:
            return list(state)
        out, pos = [], 0
        for cell in self._cells:
            n = int(cell.state_size)
            out.append(state[:, pos : pos + n])
            pos += n
        return out

    def join_states(self, states):
        if self._state_is_tuple:
            return tuple(states)
        return np.concatenate(states, axis=1)

    def call(self, inputs, state):
        x = _as_inputs(inputs)
        dtype = compute_dtype(None, state, x)
        state = check_state(self, state, x.shape[0], dtype)
        new_states = []
        for cell, s in zip(self._cells, self.split_state(state)):
            x, s = cell(x, s)
            new_states.append(s)
        return x, self.join_states(new_states)


class _Wrapper(RNNCell):
    """A cell around another: structure and weights are the inner cell's."""

    def __init__(self, cell, name=None, **kwargs):
        if not isinstance(cell, RNNCell):
            raise TypeError(f"cell: expected an RNNCell, got {type(cell).__name__}")
        super().__init__(name=name or _name(cell), backend=cell.backend, **kwargs)
        self.cell = cell

    @property
    def wrapped_cell(self):
        return self.cell

    @property
    def state_size(self):
        return self.cell.state_size

    @property
    def output_size(self):
        return self.cell.output_size

    @property
    def built(self):
        return self.cell.built

    @built.setter
    def built(self, value):
        pass

    def build(self, inputs_shape):
        if not self.cell.built:
            self.cell.build(inputs_shape)
            self.cell.built = True

    def zero_state(self, batch_size, dtype=None):
        return self.cell.zero_state(batch_size, dtype)

    @property
    def variable_names(self):
        return self.cell.variable_names

    @property
    def weights(self):
        return self.cell.weights

    def get_weights(self):
        return self.cell.get_weights()

    def set_weights(self, weights):
        self.cell.set_weights(weights)

    def _n_weights(self):
        return _n_weights(self.cell)

    def _first_depth(self, weights):
        return _first_depth(self.cell, weights)


class ResidualWrapper(_Wrapper):
    """TF1 ``ResidualWrapper``: the output is ``inputs + cell output``.

    ``residual_fn(inputs, outputs)`` replaces the sum when given. With the
    default sum around a built-in cell, :func:`fastrnn.nn.dynamic_rnn` still
    makes one kernel call; the input depth must equal the cell's output
    size.
    """

    def __init__(self, cell, residual_fn=None, **kwargs):
        super().__init__(cell, **kwargs)
        self._residual_fn = residual_fn

    def call(self, inputs, state):
        x = _as_inputs(inputs)
        out, new_state = self.cell(x, state)
        if self._residual_fn is not None:
            return self._residual_fn(x, out), new_state
        if x.shape != out.shape:
            raise ValueError(
                f"ResidualWrapper: inputs {x.shape} and the cell's outputs {out.shape} "
                "must have the same shape to be added"
            )
        return x + out, new_state


def _default_state_filter(substate):
    """TF1's default: drop every state except the ``c`` of an LSTMStateTuple."""
    if isinstance(substate, LSTMStateTuple):
        return LSTMStateTuple(c=False, h=True)
    return True


class DropoutWrapper(_Wrapper):
    """TF1 ``DropoutWrapper``: dropout on a cell's inputs, outputs and state.

    Dropout is a **training-time** regulariser, and TF1 applied it on every
    run of the graph. For inference leave every keep probability at 1.0
    (the default): the wrapper is then the identity and
    :func:`fastrnn.nn.dynamic_rnn` runs the wrapped cell's fused kernels.
    With a probability below 1.0 it drops at random, as TF1 did (each kept
    value scaled by ``1 / keep_prob``; the state dropout spares the ``c`` of
    an ``LSTMStateTuple``, as TF1's default filter), through a per-step
    Python loop, with a NumPy generator seeded by ``seed``.
    ``variational_recurrent=True`` is not supported.
    """

    def __init__(self, cell, input_keep_prob=1.0, output_keep_prob=1.0, state_keep_prob=1.0,
                 variational_recurrent=False, input_size=None, dtype=None, seed=None,
                 dropout_state_filter_visitor=None, **kwargs):
        super().__init__(cell, **kwargs)
        for arg, p in (("input_keep_prob", input_keep_prob),
                       ("output_keep_prob", output_keep_prob),
                       ("state_keep_prob", state_keep_prob)):
            if not 0.0 < float(p) <= 1.0:
                raise ValueError(f"{arg}: expected a probability in (0, 1], got {p}")
        if variational_recurrent:
            raise NotImplementedError(
                "DropoutWrapper(variational_recurrent=True) is not supported by fastrnn"
            )
        self._input_keep_prob = float(input_keep_prob)
        self._output_keep_prob = float(output_keep_prob)
        self._state_keep_prob = float(state_keep_prob)
        self._filter = dropout_state_filter_visitor
        self._rng = np.random.default_rng(seed)

    @property
    def active(self):
        """True when some keep probability is below 1 (then it drops at random)."""
        return min(self._input_keep_prob, self._output_keep_prob, self._state_keep_prob) < 1.0

    def _drop(self, a, keep):
        if keep >= 1.0:
            return a
        a = np.asarray(a)
        kept = self._rng.random(a.shape) < keep
        return np.where(kept, a / keep, 0.0).astype(a.dtype)

    def _drop_state(self, state):
        """State dropout where the filter says, traversed as TF1's nest does.

        The filter is called on the state and, where it answers with a
        structure of booleans, again on each child marked True; a boolean
        answer drops (True) or keeps (False) that whole subtree.
        """
        if self._state_keep_prob >= 1.0:
            return state
        visitor = self._filter or _default_state_filter

        def visit(s):
            decision = visitor(s)
            if isinstance(decision, (bool, np.bool_)):
                if not decision:
                    return s
                return _nest.map_structure(lambda a: self._drop(a, self._state_keep_prob), s)
            if not _nest.is_sequence(s) or len(decision) != len(s):
                raise ValueError(
                    "dropout_state_filter_visitor: expected a bool or a structure of bools "
                    f"matching {_nest.describe(s)}, got {decision!r}"
                )
            items = [visit(child) if d else child for child, d in zip(s, decision)]
            return type(s)(*items) if hasattr(s, "_fields") else type(s)(items)

        return visit(state)

    def call(self, inputs, state):
        x = self._drop(_as_inputs(inputs), self._input_keep_prob)
        out, new_state = self.cell(x, state)
        return self._drop(out, self._output_keep_prob), self._drop_state(new_state)


# --------------------------------------------------------------------------
# TensorFlow checkpoints


def _load_checkpoint(cell, path, scope):
    """:meth:`RNNCell.load_checkpoint`: the cell's TF1 variables, by name, from ``path``."""
    label = f"{_cell_label(cell)}.load_checkpoint"
    if not isinstance(scope, str):
        raise TypeError(f"{label}: scope: expected a string such as 'rnn', got "
                        f"{type(scope).__name__}")
    _n_weights(cell)  # a user's cell must be built to have variable names
    reader = _tf_bundle.BundleReader(path)
    prefix = scope.strip("/") + "/" if scope.strip("/") else ""
    names = cell.variable_names
    missing = [prefix + n for n in names if prefix + n not in reader]
    if missing:
        first = "/" + names[0]
        scopes = sorted({k[: -len(first)] for k in reader.keys() if k.endswith(first)})
        hint = (f"; {names[0]!r} is under the scope(s) {scopes}" if scopes else
                f"; the checkpoint holds {reader.keys()[:12]}")
        raise ValueError(f"{label}: {reader.prefix}: no variable {missing[0]!r} (scope "
                         f"{scope!r} + the cell's variable_names){hint}")
    cell.set_weights([reader.read(prefix + n) for n in names])
    return cell
