"""The base of the TF1 cells: ``RNNCell``, ``LSTMStateTuple`` and the helpers
every cell module shares (dtype and state checks, names, TF checkpoint
loading).

A user's ``RNNCell`` subclass needs nothing else; the built-in cells
(:mod:`fastrnn.nn._builtin`) and the wrappers (:mod:`fastrnn.nn._wrappers`)
build on this module, which knows none of them. The public namespace is
:mod:`fastrnn.nn.rnn_cell`.
"""

from __future__ import annotations

import collections
import difflib
import inspect
import operator
import re

import numpy as np

from .. import _device, _nest, _tf_bundle, dispatch, initializers
from .._engine import WEIGHTS_LOCK, check_pair

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


# Keywords TF1's base Layer takes from every cell besides trainable, name,
# dtype and _reuse. They describe a Keras model's input, its initial weights
# or its training, none of which a fastrnn.nn cell has, so only None (not
# given) is accepted.
_KERAS_KEYWORDS = ("input_dim", "input_shape", "batch_input_shape", "batch_size", "weights",
                   "activity_regularizer", "autocast", "implementation")

# Variables of TF1's LSTMCell that exist only with some settings: a
# checkpoint holding them beside a cell's kernel was written by a cell with
# peepholes or a projection, which the reading cell must have too.
_OPTIONAL_VARIABLES = ("w_f_diag", "w_i_diag", "w_o_diag", "projection/kernel")


def _check_keywords(cell, kwargs):
    """Refuse keyword arguments no cell takes (TF1's base Layer raises a
    TypeError for them too), suggesting the nearest parameter of the cell."""
    for key, value in kwargs.items():
        if key in _KERAS_KEYWORDS:
            if value is not None:
                hint = " (set weights with set_weights)" if key == "weights" else ""
                raise ValueError(
                    f"{key}: {type(cell).__name__} takes only None: TF1 passes it to Keras "
                    f"models, which fastrnn.nn does not have{hint}; got {value!r}"
                )
            continue
        names = [n for klass in (type(cell), RNNCell)
                 for n, p in inspect.signature(klass.__init__).parameters.items()
                 if n != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        close = difflib.get_close_matches(key, names, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise TypeError(f"{type(cell).__name__}: keyword argument not understood: {key!r}{hint}")


def _float_dtype(dtype):
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"dtype: expected float32 or float64, got {dtype}")
    return dtype


def compute_dtype(dtype=None, state=None, inputs=None, cells=()):
    """The dtype a run computes in: ``dtype=``, else the state's, else
    float64 when one of the built-in ``cells`` (or a cell they hold) has
    float64 weights or was made float64 (a float64 model runs in float64,
    whatever its inputs), else the inputs'."""
    if dtype is not None:
        return _float_dtype(dtype)
    if state is not None:
        leaves = [s for s in _nest.flatten(state) if hasattr(s, "dtype")]
        if leaves:  # (a PyTorch tensor's dtype is not NumPy's)
            first = _device.host_array(leaves[0], "initial_state").dtype
            if first in (np.float32, np.float64):
                return first
    if any(getattr(c, "dtype", None) == np.float64
           for cell in cells for c in [cell] + cell._builtin_cells()):
        return np.dtype(np.float64)
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
        a = _device.host_array(s, f"{argument}: element {i} of the state")
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


def _check_pair(cell, got):
    """``got``, what a step of ``cell`` returned, if it is a pair ``(output,
    new_state)``; else a ``TypeError`` saying what came."""
    return check_pair(got, _cell_label(cell), "new_state")


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
    trainable : bool
        TF1's flag for training the weights. fastrnn does not train, so
        either value runs the same.
    _reuse : bool, optional
        TF1's variable-scope reuse (the built-in cells' ``reuse``). Each
        fastrnn cell holds its own weights, so every value runs the same.
    **kwargs
        TF1's Keras-layer keywords (``input_shape``, ``weights``,
        ``activity_regularizer``...) are accepted only as None; any other
        keyword is a ``TypeError`` naming it, as in TF1.
    """

    # Class-level defaults keep a subclass working even when its __init__
    # forgets to call RNNCell.__init__ (old TF1 cells often did).
    built = False
    trainable = True
    backend = "auto"
    dtype = None
    _dtype_fixed = False
    #: The :class:`fastrnn.dispatch.Choice` of the cell's last kernel run
    #: (built-in cells): which backend ran it and why.
    last_backend = None
    #: Takes and returns its state in TF1's structure (a GRU's one array, an
    #: ``LSTMStateTuple``), not Keras's list: ``fastrnn.RNN`` refuses it.
    _tf1_state = True

    def __init__(self, trainable=True, name=None, dtype=None, backend="auto", _reuse=None,
                 **kwargs):
        _check_keywords(self, kwargs)
        self.trainable = _device.flag(trainable, "trainable")
        if _reuse is not None:
            _device.flag(_reuse, "reuse")
        self.name = name or _default_name(type(self))
        self.dtype = None if dtype is None else _float_dtype(dtype)
        self._dtype_fixed = dtype is not None
        self.backend = dispatch._check_request(backend, "backend")  # now, not at the first call
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
        state.pop("_frames", None)
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
        """Zeros shaped like ``state_size``, each ``(batch_size, size)``.

        ``batch_size`` is an integer >= 0; ``dtype`` a floating-point dtype,
        by default the cell's (float32 before it has weights).
        """
        try:  # integers only: int(2.7) would give 2 rows
            rows = -1 if isinstance(batch_size, (bool, np.bool_)) else operator.index(batch_size)
        except TypeError:
            rows = -1
        if rows < 0:
            raise ValueError(f"batch_size: expected an integer >= 0, got {batch_size!r}")
        dtype = np.dtype(dtype or self.dtype or np.float32)
        if dtype.kind != "f":  # (the runs take floating-point states only)
            raise TypeError(f"dtype: expected a floating-point dtype such as float32, got {dtype}")
        return _nest.map_structure(
            lambda n: np.zeros((rows, int(n)), dtype=dtype), self.state_size
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

    def _n_weights(self):
        """How many arrays :meth:`set_weights` takes (a user's cell: once built)."""
        if not self.built:
            raise ValueError(f"{_cell_label(self)}: build the cell before set_weights")
        return len(self._weight_dict)

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
        self._store(self._checked(weights, [(n, w.shape) for n, w in self._weight_dict.items()]))

    def _checked(self, weights, shapes):
        """``weights`` as arrays, each checked against its ``(name, shape)``
        of ``shapes``: real numbers of that shape."""
        arrays = []
        for (n, shape), value in zip(shapes, weights):
            value = np.asarray(value)
            if value.dtype.kind not in "iuf":
                raise TypeError(f"{_cell_label(self)}.set_weights: variable {n!r} expects real "
                                f"numbers, got dtype {value.dtype}")
            if value.shape != tuple(shape):
                raise ValueError(
                    f"{_cell_label(self)}.set_weights: variable {n!r} expects shape "
                    f"{tuple(shape)}, got {value.shape}"
                )
            arrays.append(value)
        return arrays

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
            not match, the checkpoint holds an LSTM cell's peepholes or
            projection that this cell was not made to read, or the
            checkpoint is damaged.
        """
        label = f"{_cell_label(self)}.load_checkpoint"
        if not isinstance(scope, str):
            raise TypeError(f"{label}: scope: expected a string such as 'rnn', got "
                            f"{type(scope).__name__}")
        self._n_weights()  # a user's cell must be built to have variable names
        reader = _tf_bundle.BundleReader(path)
        prefix = scope.strip("/") + "/" if scope.strip("/") else ""
        names = self.variable_names
        missing = [prefix + n for n in names if prefix + n not in reader]
        if missing:
            first = "/" + names[0]
            scopes = sorted({k[: -len(first)] for k in reader.keys() if k.endswith(first)})
            hint = (f"; {names[0]!r} is under the scope(s) {scopes}" if scopes else
                    f"; the checkpoint holds {reader.keys()[:12]}")
            raise ValueError(f"{label}: {reader.prefix}: no variable {missing[0]!r} (scope "
                             f"{scope!r} + the cell's variable_names){hint}")
        read = {prefix + n for n in names}
        unread = sorted(d + v for d in {k.rsplit("/", 1)[0] + "/" for k in read}
                        for v in _OPTIONAL_VARIABLES if d + v in reader and d + v not in read)
        if unread:
            # (the cell would run without them: other numbers, no error)
            raise ValueError(f"{label}: {reader.prefix}: the checkpoint holds {unread}, which "
                             f"{_cell_label(self)} does not read: the cell that wrote it had "
                             "peepholes (use_peepholes=True) or a projection (num_proj=...); "
                             "build this one with the same settings")
        arrays = [reader.read(prefix + n) for n in names]
        try:
            self.set_weights(arrays)
        except ValueError as exc:  # (a shape: name the checkpoint's variables)
            shapes = ", ".join(f"{prefix + n} {a.shape}" for n, a in zip(names, arrays))
            raise ValueError(f"{label}: {reader.prefix}: the variables under scope {scope!r} "
                             f"do not fit {_cell_label(self)} ({exc}); the checkpoint holds "
                             f"{shapes}: a cell of other settings (num_units, num_proj, "
                             "use_peepholes, the stack's layers)?") from exc
        return self

    def _builtin_cells(self):
        """The built-in cells among this cell and the cells it holds, whose
        weights a run reads together (a user's cell holds none it knows of)."""
        return []

    # -- one step --------------------------------------------------------
    def __call__(self, inputs, state, scope=None):
        """Run one step: ``inputs (batch, depth)`` -> ``(output, new_state)``."""
        x = _as_inputs(inputs)
        if not getattr(self, "built", False):
            self.build(x.shape)
            self.built = True
        got = self.call(x, state)
        return got if type(got) is tuple and len(got) == 2 else _check_pair(self, got)

    def call(self, inputs, state):
        raise NotImplementedError("RNNCell subclasses define call(inputs, state)")
