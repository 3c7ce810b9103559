"""The built-in TF1 cells: ``BasicRNNCell``, ``GRUCell``, ``BasicLSTMCell``,
``LSTMCell``, run by fastrnn's kernels.

Each keeps its weights as TF1 stored them and converts them once, when they
change, into a parameter record of :mod:`fastrnn.kernels` (Keras layout and
gate order); :func:`run_cell` runs a cell over a whole sequence in one
kernel call, and a cell's one-step call runs on the engine's per-frame
kernels. The public namespace is :mod:`fastrnn.nn.rnn_cell`.
"""

from __future__ import annotations

import collections
import contextvars
import operator
from typing import NamedTuple

import numpy as np

from .. import _device, _engine, activations, dispatch
from .._engine import WEIGHTS_LOCK, Weights
from ..activations import SIGMOID
from ..kernels import GRUParams, LSTMParams, SimpleRNNParams
from ._base import LSTMStateTuple, RNNCell, _as_inputs, _cell_label, _name, check_state, compute_dtype


def resolve_backend(requested, cell):
    """The backend request for a run: the call's ``backend=``, else the cell's."""
    if requested is None or (isinstance(requested, str) and requested.lower() == "auto"):
        own = getattr(cell, "backend", None)
        if own is not None:
            return own
    return "auto" if requested is None else requested


class _Run(NamedTuple):
    """What the cells a run calls one step at a time take from it (see :data:`RUN`)."""

    backend: str  # the backend request ("auto": each cell's own)
    weights: dict  # the run's weights: see snapshot


#: The run a one-step call belongs to: set while :func:`fastrnn.nn.dynamic_rnn`
#: steps a cell in Python and while a ``MultiRNNCell`` calls its cells. The
#: built-in cells called meanwhile run on its backend request and on its
#: weights, read once for the whole run (a ``set_weights`` in another thread
#: cannot land between two layers or two steps). A context variable, not an
#: argument: wrappers and a user's cells call their cells as ``cell(x, state)``
#: and pass nothing on. Each thread has its own, and each run its own
#: ``weights`` dict, which only that run's thread reads and adds to.
RUN = contextvars.ContextVar("fastrnn.nn.run", default=None)


def snapshot(cells, dtype):
    """The weights of the built-in ``cells`` in ``dtype`` (a ``np.dtype``),
    read together (:func:`fastrnn._engine.snapshot`): ``{(id(cell), dtype):
    (cell, Weights)}``. Unbuilt cells are left out: a run builds them, then
    reads their weights when it runs them."""
    cells = [c for c in cells if c.built]
    weights = _engine.snapshot(cells, dtype)
    return {(id(c), dtype): (c, w) for c, w in zip(cells, weights)}


def pinned(cell, weights, dtype):
    """``(Weights,)`` of built-in ``cell`` in ``dtype``: from a run's
    ``weights`` (see :func:`snapshot`); read now where the run has none of
    ``cell`` (a cell reached through a user's cell, or built during the
    run), and then kept in ``weights`` for the rest of the run. ``weights``
    None (no run): read now."""
    if weights is None:
        return _engine.snapshot([cell], dtype)
    key = (id(cell), dtype)
    hit = weights.get(key)
    if hit is None or hit[0] is not cell:
        hit = weights[key] = (cell, _engine.snapshot([cell], dtype)[0])
    return (hit[1],)


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


def _positive_int(value, argument):
    """``value`` as an int, or a ValueError naming ``argument`` (int(2.5)
    would silently make 2, and True 1)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) \
            or value < 1:
        raise ValueError(f"{argument}: expected a positive integer, got {value!r}")
    return int(value)


def _real(value, argument):
    """``value`` as a float, or a TypeError naming ``argument`` (float() would
    convert strings and booleans, and fail on None without naming it)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer,
                                                                     np.floating)):
        raise TypeError(f"{argument}: expected a real number, got {value!r}")
    return float(value)


def _clip(value, argument):
    """A clip limit: a real number >= 0 (TF1 clamps to [-limit, limit]; a
    negative one, which TF takes, would clamp every value to one constant),
    else a ValueError naming ``argument``."""
    value = _real(value, argument)
    if not value >= 0:  # (NaN too)
        raise ValueError(f"{argument}: expected a number >= 0 (None: no clipping), got "
                         f"{value!r}")
    return value


class _FusedCell(RNNCell):
    """A built-in cell: TF1 weights, converted once to a kernel params record."""

    _depth = None

    def __init__(self, num_units, activation=None, reuse=None, name=None, dtype=None,
                 backend="auto", **kwargs):
        super().__init__(name=name, dtype=dtype, backend=backend, _reuse=reuse, **kwargs)
        self._num_units = _positive_int(num_units, "num_units")
        self._activation = activations.resolve(
            "tanh" if activation is None else activation, "activation"
        )
        self._cache = {}

    # subclasses define _spec(depth) -> [(name, shape, initializer)] in TF1
    # variable order and _make_params(arrays by name, depth, dtype) -> the
    # kernels' params record; an LSTM also its state and output sizes
    @property
    def state_size(self):
        return self._num_units

    @property
    def output_size(self):
        return self._num_units

    @property
    def _recurrent_rows(self):
        """The kernel's rows after the input's: the state fed back, ``h``."""
        return self.output_size

    def _names(self):
        return [n for n, _, _ in self._spec(1)]

    def _n_weights(self):
        return len(self._names())

    @property
    def variable_names(self):
        return [f"{_name(self)}/{n}" for n in self._names()]

    def build(self, inputs_shape):
        depth = self._build_depth(inputs_shape)
        self._weights = collections.OrderedDict()
        self.dtype = self.dtype or np.dtype(np.float32)
        for n, shape, init in self._spec(depth):
            # Read-only: the kernels run a converted copy, refreshed by
            # set_weights, so an edit in place would silently be ignored.
            self.add_weight(n, shape, initializer=init).setflags(write=False)
        self._depth = depth
        self.built = True

    def _build_depth(self, inputs_shape):
        """The input depth of ``inputs_shape`` (``(batch, depth)``, or the
        depth): an integer >= 1 (int(2.7) would silently build depth 2)."""
        depth = inputs_shape[-1] if isinstance(inputs_shape, (tuple, list)) else inputs_shape
        try:
            depth = -1 if isinstance(depth, (bool, np.bool_)) else operator.index(depth)
        except TypeError:
            depth = -1
        if depth < 1:
            raise ValueError(
                f"{_cell_label(self)}.build: expected inputs_shape (batch, depth) with an "
                f"integer depth >= 1, got {inputs_shape!r}"
            )
        return depth

    def _builtin_cells(self):
        return [self]

    def set_weights(self, weights):
        """Set the weights from a list in TF1 variable order.

        An unbuilt cell is built, its input depth read from the kernel's rows
        (``depth + num_units``, or ``depth + num_proj``), once every array is
        checked: a refused list leaves the cell as it was, unbuilt.
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
            arrays = self._checked(weights, [(n, shape) for n, shape, _ in self._spec(depth)])
            with WEIGHTS_LOCK:  # (a run in another thread sees it unbuilt or set)
                self.build((None, depth))
                self._store(arrays)
            return
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

    _frames = None  # (see _frames_entry) of the last one-step call

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
        self._frames = None
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
        run = RUN.get()
        if (type(x) is np.ndarray and x.ndim == 2 and x.shape[1] == self._depth
                and x.flags.c_contiguous and self.backend == "auto"
                and (run is None or run.backend == "auto")):
            # the common case, checked cheaply: one call of the frame kernel
            hit = self._frames
            if (hit is None or hit[0] is not self._cache or hit[1] is not x.dtype
                    or hit[2] != x.shape[0] or hit[3] != dispatch.default_key()):
                hit = self._frames = self._frames_entry(x.dtype, x.shape[0])
            if hit[4] is not None and (run is None or pinned(self, run.weights, x.dtype)[0]
                                       is hit[7]):
                states = self._plain_states(state, x.shape[0], x.dtype, hit[6])
                if states is not None:
                    out, states = _engine.step(hit[4], x, states)
                    self.last_backend = hit[5]
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
        # part of a run (see RUN): its backend request and its weights
        weights = pinned(self, None if run is None else run.weights, dtype)
        backend = resolve_backend(None if run is None else run.backend, self)
        frames = _engine.frames_for(weights, x.shape[0]) if backend == "auto" else None
        if frames is not None:
            return self._step(frames, weights, x, states)
        out, states = run_cell(self, x[:, None, :], None, False, states, backend, weights)
        return out[:, 0], self._from_keras(states)

    def _step(self, frames, weights, x, states):
        """One step on the per-frame kernels ``frames`` (see ``_engine.step``)."""
        out, states = _engine.step(frames, x, states)
        self.last_backend = _engine.select_for(weights, "auto")
        return out, self._from_keras(states)

    def _frames_entry(self, dtype, batch):
        """What a one-step call in ``dtype`` with ``batch`` rows needs, made
        once per weights (``self._cache`` is new when they change), batch size
        and default backend: ``(cache, dtype, batch, default key, frames or
        None, backend choice, state sizes, the Weights the frames run)``."""
        cache = self._cache  # (read first: the weights below are then no older)
        weights = (self._weights_for(dtype),)
        params = weights[0].params
        sizes = [params.output_size, params.units] if params.kind == "lstm" else [params.units]
        return (cache, dtype, batch, dispatch.default_key(), _engine.frames_for(weights, batch),
                _engine.select_for(weights, "auto"), sizes, weights[0])

    def _plain_states(self, state, batch, dtype, sizes):
        """``state`` as the Keras-order list the kernels take, when it needs
        no checking beyond this (``(batch, size)`` arrays of ``dtype`` in the
        cell's structure, any strides); else None."""
        if isinstance(state, tuple):
            if len(state) != 2 or not self._state_is_tuple:
                return None
        elif type(state) is not np.ndarray:
            return None
        states = self._to_keras(state)
        return states if _engine.plain_states(states, batch, sizes, dtype) else None

    # TF1 state <-> the kernels' Keras-order list
    _state_is_tuple = False

    def _to_keras(self, state):
        return [state]

    def _from_keras(self, states):
        return states[0]


def _c(a):
    return np.ascontiguousarray(a)


def _rows(kernel, depth):
    """TF1's kernel over ``[x, h]`` -> the kernels' ``(kernel, recurrent_kernel)``:
    its first ``depth`` rows and the rest."""
    return _c(kernel[:depth]), _c(kernel[depth:])


class BasicRNNCell(_FusedCell):
    """TF1 ``BasicRNNCell``: ``h' = activation([x, h] @ kernel + bias)``.

    Weights: ``kernel (depth + num_units, num_units)``, ``bias (num_units,)``.
    """

    def _spec(self, depth):
        H = self._num_units
        return [("kernel", (depth + H, H), None), ("bias", (H,), "zeros")]

    def _make_params(self, w, D, dtype):
        return SimpleRNNParams(*_rows(w["kernel"], D), _c(w["bias"]),
                               activation=self._activation)


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
        kernel, recurrent = _rows(np.concatenate([g[:, H:], g[:, :H], ck], axis=1), D)
        bias = np.zeros((2, 3 * H), dtype=dtype)
        bias[0] = np.concatenate([gb[H:], gb[:H], cb])
        return GRUParams(kernel, recurrent, bias, activation=self._activation,
                         recurrent_activation=SIGMOID, reset_after=False)


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
        self._forget_bias = _real(forget_bias, "forget_bias")
        self._state_is_tuple = _device.flag(state_is_tuple, "state_is_tuple")

    @property
    def state_size(self):
        P = self._num_proj or self._num_units
        if self._state_is_tuple:
            return LSTMStateTuple(self._num_units, P)
        return self._num_units + P

    @property
    def output_size(self):
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
        peepholes = None
        if self._use_peepholes:
            peepholes = _c(np.stack([w["w_i_diag"], w["w_f_diag"], w["w_o_diag"]]))
        projection = w.get("projection/kernel")
        return LSTMParams(
            *_rows(_ifco(w["kernel"]), D), _ifco(w["bias"]), activation=self._activation,
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
            if value is not None and _positive_int(value, arg) != 1:
                raise ValueError(f"{arg}: sharded variables are not supported, got {value}")
        self._use_peepholes = _device.flag(use_peepholes, "use_peepholes")
        self._cell_clip = None if cell_clip is None else _clip(cell_clip, "cell_clip")
        self._initializer_id = initializer
        self._num_proj = None if num_proj is None else _positive_int(num_proj, "num_proj")
        self._proj_clip = None if proj_clip is None else _clip(proj_clip, "proj_clip")
