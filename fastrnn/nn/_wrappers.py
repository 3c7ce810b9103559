"""Cells made of other cells: ``MultiRNNCell``, ``ResidualWrapper``,
``DropoutWrapper``.

Their structure and weights are those of the cells they hold; the public
namespace is :mod:`fastrnn.nn.rnn_cell`.
"""

from __future__ import annotations

import copy

import numpy as np

from .. import _device, _nest
from .._engine import WEIGHTS_LOCK
from ._base import (LSTMStateTuple, RNNCell, _as_inputs, _cell_label, _check_pair, _name,
                    check_state, compute_dtype)
from ._builtin import RUN, _real, _Run, resolve_backend, snapshot

class MultiRNNCell(RNNCell):
    """TF1 ``MultiRNNCell``: cells stacked, each feeding the next.

    ``state_size`` is a tuple with one entry per layer (or their sum with
    ``state_is_tuple=False``, when every cell's state must be a single
    array); ``get_weights`` is the concatenation of the cells' lists in
    order. :func:`fastrnn.nn.dynamic_rnn` runs it layer by layer, one kernel
    call per built-in layer; outputs and states equal TF1's step-by-step
    stacking because masked steps neither change state nor read the layer
    below. Its ``backend``, unless ``"auto"``, runs every cell it holds, in
    runs and one-step calls alike (a run's ``backend=`` comes first), and
    both read the weights of all its cells together, once.
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
        self._state_is_tuple = _device.flag(state_is_tuple, "state_is_tuple")
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

    def zero_state(self, batch_size, dtype=None):
        """Zeros shaped like ``state_size``, each ``(batch_size, size)``.

        ``dtype`` defaults to the stack's: its own ``dtype`` if given, else
        the cells' (float64 when a cell's zero state is float64; float32
        before they have weights), so a run from this state computes in it.
        """
        if dtype is None and self.dtype is None:
            leaves = [np.asarray(a) for cell in self._cells
                      for a in _nest.flatten(cell.zero_state(0))]
            dtype = np.result_type(*leaves) if leaves else None
        return super().zero_state(batch_size, dtype)

    def _builtin_cells(self):
        return [b for cell in self._cells for b in cell._builtin_cells()]

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
        return sum(cell._n_weights() for cell in self._cells)

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
            n = cell._n_weights()
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
        """One step of every cell, each feeding the next: the built-in cells
        run on the stack's ``backend`` (unless the run it is part of requests
        one) and on weights read together before the first cell, so a
        ``set_weights`` in another thread cannot land between two cells."""
        x = _as_inputs(inputs)
        dtype = compute_dtype(None, state, x)
        state = check_state(self, state, x.shape[0], dtype)
        run = RUN.get()
        weights = {} if run is None else run.weights
        # (a run has read them, unless the stack is inside a user's cell)
        missing = [c for c in self._builtin_cells() if (id(c), dtype) not in weights]
        if missing:
            weights.update(snapshot(missing, dtype))
        token = RUN.set(_Run(resolve_backend(None if run is None else run.backend, self),
                             weights))
        try:
            new_states = []
            for cell, s in zip(self._cells, self.split_state(state)):
                x, s = _check_pair(cell, cell(x, s))
                new_states.append(s)
        finally:
            RUN.reset(token)
        return x, self.join_states(new_states)


class _Wrapper(RNNCell):
    """A cell around another: structure and weights are the inner cell's."""

    def __init__(self, cell, name=None, **kwargs):
        if not isinstance(cell, RNNCell):
            raise TypeError(f"cell: expected an RNNCell, got {type(cell).__name__}")
        if "backend" in kwargs:
            raise TypeError(
                f"{type(self).__name__}: keyword argument not understood: 'backend' (a "
                "wrapper runs on its cell's backend: give backend= to the cell, or to "
                "dynamic_rnn)"
            )
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
        return self.cell._n_weights()

    def _builtin_cells(self):
        return self.cell._builtin_cells()


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
        check_residual(x, out)
        return x + out, new_state


def check_residual(x, out):
    """Raise unless a cell's inputs ``x`` and outputs ``out`` can be added."""
    if x.shape != out.shape:
        raise ValueError(
            f"ResidualWrapper: inputs {x.shape} and the cell's outputs {out.shape} "
            "must have the same shape to be added"
        )


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
    an ``LSTMStateTuple``, as TF1's default filter;
    ``dropout_state_filter_visitor``, a bool or a structure of bools like
    the state, says which state parts take dropout instead), through a
    per-step Python loop, with a NumPy generator seeded by ``seed``.
    ``variational_recurrent=True`` is not supported.
    """

    def __init__(self, cell, input_keep_prob=1.0, output_keep_prob=1.0, state_keep_prob=1.0,
                 variational_recurrent=False, input_size=None, dtype=None, seed=None,
                 dropout_state_filter_visitor=None, **kwargs):
        super().__init__(cell, **kwargs)
        for arg, p in (("input_keep_prob", input_keep_prob),
                       ("output_keep_prob", output_keep_prob),
                       ("state_keep_prob", state_keep_prob)):
            if not 0.0 < _real(p, arg) <= 1.0:
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
