"""``dynamic_rnn`` and friends: TF1's sequence functions on NumPy arrays."""

from __future__ import annotations

import numpy as np

from .. import _device
from .. import _nest
from .. import dispatch
from ._base import RNNCell, _cell_label, _check_pair, check_state, compute_dtype
from ._builtin import RUN, _FusedCell, _Run, pinned, resolve_backend, run_cell, snapshot
from ._wrappers import DropoutWrapper, MultiRNNCell, ResidualWrapper, check_residual

__all__ = [
    "dynamic_rnn",
    "static_rnn",
    "bidirectional_dynamic_rnn",
    "static_bidirectional_rnn",
]


# --------------------------------------------------------------------------
# argument checks


def _check_cell(cell, argument="cell"):
    if not isinstance(cell, RNNCell):
        raise TypeError(
            f"{argument}: expected a fastrnn.nn.rnn_cell.RNNCell, got {type(cell).__name__}"
        )


def _sequence(inputs, time_major, argument="inputs"):
    _device.flag(time_major, "time_major")  # ("False" would run time-major)
    if isinstance(inputs, (list, tuple)) and any(hasattr(a, "shape") for a in inputs):
        raise TypeError(
            f"{argument}: expected one array (batch, max_time, depth); nested inputs are "
            "not supported (for a list of time steps use static_rnn)"
        )
    if _device.is_device_array(inputs):
        raise TypeError(
            f"{argument}: fastrnn.nn takes host (NumPy) arrays, got a GPU array "
            f"({type(inputs).__module__}.{type(inputs).__name__}); pass a NumPy array "
            "with backend='cuda', or use the Keras-style layers, which take GPU arrays"
        )
    x = _device.host_array(inputs, argument)
    if x.dtype.kind != "f":
        raise TypeError(f"{argument}: expected floating-point values, got dtype {x.dtype}")
    if x.ndim != 3:
        layout = "(max_time, batch, depth)" if time_major else "(batch, max_time, depth)"
        raise ValueError(f"{argument}: expected shape {layout}, got {x.shape}")
    return x.transpose(1, 0, 2) if time_major else x


def _lengths(sequence_length, batch, max_time):
    """Validate ``sequence_length``: integers in [0, max_time], shape (batch,)."""
    if sequence_length is None:
        return None
    lengths = np.asarray(sequence_length)
    if lengths.shape != (batch,):
        raise ValueError(
            f"sequence_length: expected shape ({batch},) (batch,), got {lengths.shape}"
        )
    if lengths.dtype == bool or lengths.dtype.kind not in "iuf":
        raise ValueError(f"sequence_length: expected integers, got dtype {lengths.dtype}")
    if not np.issubdtype(lengths.dtype, np.integer):
        if not np.all(np.isfinite(lengths)) or np.any(lengths != np.round(lengths)):
            raise ValueError(f"sequence_length: expected integers, got {lengths.tolist()}")
    # The range is checked in the given dtype: a cast first would wrap
    # uint64 values from 2**63 to negative ones.
    if np.any(lengths < 0):
        i = int(np.argmin(lengths))
        raise ValueError(
            f"sequence_length: lengths must be >= 0, got {int(lengths[i])} at batch index {i}"
        )
    if np.any(lengths > max_time):
        i = int(np.argmax(lengths))
        raise ValueError(
            f"sequence_length: lengths must be <= max_time {max_time}, got "
            f"{int(lengths[i])} at batch index {i}"
        )
    return lengths.astype(np.int64)


def _unused_args(parallel_iterations, swap_memory, scope):
    """Check the TF1 arguments that do not change the numbers: an argument
    given by position one place off lands in one of them."""
    if parallel_iterations is not None and (
            isinstance(parallel_iterations, (bool, np.bool_))
            or not isinstance(parallel_iterations, (int, np.integer)) or parallel_iterations < 1):
        raise ValueError(
            f"parallel_iterations: expected a positive integer or None, got {parallel_iterations!r}"
        )
    _device.flag(swap_memory, "swap_memory")
    if scope is not None and not isinstance(scope, str):
        raise TypeError(f"scope: expected a string or None, got {type(scope).__name__}")


def _request(backend):
    """The call's ``backend=``, checked before anything runs, whatever the
    cell (a run stepped in Python, or with no step to run, checks it too): the
    errors of a built-in cell's run, a ``TypeError`` for a value that is not
    a str, a ``ValueError`` for an unknown name, a ``RuntimeError`` for a
    backend that cannot run here."""
    backend = dispatch._check_request(backend, "backend")
    if backend != "auto":
        dispatch.select(backend, [])
    return backend


def _initial_state(cell, initial_state, batch, dtype, argument):
    if initial_state is None:
        return cell.zero_state(batch, dtype)
    return check_state(cell, initial_state, batch, dtype, argument)


def _build(cell, depth):
    if not getattr(cell, "built", False):
        cell.build((None, depth))
        cell.built = True


def _mask(lengths, max_time):
    if lengths is None:
        return None
    return np.arange(max_time)[None, :] < lengths[:, None]


def _reverse_sequence(x, lengths):
    """TF1 ``reverse_sequence``: reverse each row's first ``length`` steps."""
    if lengths is None:
        return x[:, ::-1]
    B, T = x.shape[:2]
    t = np.arange(T)[None, :]
    idx = np.where(t < lengths[:, None], lengths[:, None] - 1 - t, t)
    return x[np.arange(B)[:, None], idx]


# --------------------------------------------------------------------------
# running a cell over a sequence


def _run(cell, x, lengths, state, reverse, backend, weights, argument="inputs"):
    """Run ``cell`` over ``x (B, T, D)``; return ``(outputs (B, T, O), state)``.

    Built-in cells make one kernel call each; ``MultiRNNCell`` runs layer by
    layer; anything else steps in Python. ``weights``: the run's weights,
    read before it starts (see :func:`_prepare`).
    """
    if isinstance(cell, MultiRNNCell):
        new_states = []
        for i, (sub, s) in enumerate(zip(cell._cells, cell.split_state(state))):
            x, s = _run(sub, x, lengths, s, reverse, resolve_backend(backend, cell), weights,
                        argument if i == 0 else f"outputs of cells[{i - 1}]")
            new_states.append(s)
        return x, cell.join_states(new_states)
    if isinstance(cell, _FusedCell):
        depth = x.shape[2]
        cell._ensure_built(depth)
        cell._check_depth(depth, argument)
        out, states = run_cell(
            cell, x, _mask(lengths, x.shape[1]), reverse,
            [np.ascontiguousarray(s, dtype=x.dtype) for s in cell._to_keras(state)],
            resolve_backend(backend, cell), pinned(cell, weights, x.dtype),
        )
        return out, cell._from_keras(states)
    if isinstance(cell, DropoutWrapper) and not cell.active:
        return _run(cell.cell, x, lengths, state, reverse, backend, weights, argument)
    if isinstance(cell, ResidualWrapper) and cell._residual_fn is None:
        out, state = _run(cell.cell, x, lengths, state, reverse, backend, weights, argument)
        check_residual(x, out)
        mask = _mask(lengths, x.shape[1])
        return out + (x if mask is None else np.where(mask[:, :, None], x, 0)), state
    token = RUN.set(_Run(resolve_backend(backend, cell), weights))
    try:
        return _loop(cell, x, lengths, state, reverse)
    finally:
        RUN.reset(token)


def _loop(cell, x, lengths, state, reverse):
    """Step a general cell in Python with TF1 semantics.

    Past a sequence's length the output is zeros and the state is carried;
    ``reverse`` reverses each sequence within its length, as TF1's
    ``reverse_sequence``, and reverses the outputs back. The built-in cells
    it calls run on the run's backend and weights (see ``_builtin.RUN``).
    """
    B, T, _ = x.shape
    dtype = x.dtype
    if reverse:
        x = _reverse_sequence(x, lengths)
    outputs = []
    for t in range(T):
        y, new_state = _check_pair(cell, cell(x[:, t], state))  # (also a cell's own __call__)
        new_state = check_state(cell, new_state, B, dtype, f"state returned by {type(cell).__name__}.call")
        y = np.asarray(y, dtype=dtype)
        if y.ndim != 2 or y.shape[0] != B:
            raise ValueError(
                f"{type(cell).__name__}.call returned an output of shape {y.shape}; "
                f"expected ({B}, output_size)"
            )
        if y.shape[1] != int(cell.output_size):  # (TF1 fails too: its outputs' element shape)
            raise ValueError(
                f"{_cell_label(cell)}.call returned outputs {y.shape[1]} wide; its "
                f"output_size is {int(cell.output_size)}"
            )
        if lengths is not None:
            valid = (t < lengths)[:, None]
            y = np.where(valid, y, 0).astype(dtype)
            new_state = _nest.map_structure(
                lambda n, o: np.where(valid, n, o).astype(dtype), new_state, state
            )
        state = new_state
        outputs.append(y)
    out = np.stack(outputs, axis=1)
    if reverse:
        out = _reverse_sequence(out, lengths)
    return np.ascontiguousarray(out), state


def _check_depth(cell, depth, argument="inputs"):
    """The input-depth checks :func:`_run` makes, for runs with no step to
    run: each built built-in cell against the depth it receives."""
    if isinstance(cell, MultiRNNCell):
        for i, sub in enumerate(cell._cells):
            _check_depth(sub, depth, argument if i == 0 else f"outputs of cells[{i - 1}]")
            depth = int(sub.output_size)
    elif isinstance(cell, _FusedCell):
        if cell.built:
            cell._check_depth(depth, argument)
    elif isinstance(cell, (DropoutWrapper, ResidualWrapper)):
        _check_depth(cell.cell, depth, argument)


def _prepare(cells, x):
    """Build ``cells`` for ``x``'s depth and read the weights of every
    built-in cell among them at once, so that a run (both directions of a
    bidirectional one) computes with one set of weights, whatever
    ``set_weights`` another thread makes meanwhile. None when there is no
    step to run (no row or no step): then the cells are only checked."""
    B, T, D = x.shape
    if B == 0 or T == 0:
        for cell in cells:
            _check_depth(cell, D)
        return None
    for cell in cells:
        _build(cell, D)
    return snapshot([b for cell in cells for b in cell._builtin_cells()], x.dtype)


def _forward(cell, x, lengths, state, reverse, backend, weights):
    """``cell`` over ``x`` on the run's ``weights`` (:func:`_prepare`)."""
    if weights is None:
        return np.zeros((*x.shape[:2], int(cell.output_size)), dtype=x.dtype), state
    return _run(cell, x, lengths, state, reverse, backend, weights)


# --------------------------------------------------------------------------
# public functions


def dynamic_rnn(cell, inputs, sequence_length=None, initial_state=None, dtype=None,
                parallel_iterations=None, swap_memory=False, time_major=False, scope=None,
                backend=None):
    """TF1 ``tf.nn.dynamic_rnn`` on NumPy arrays.

    Parameters
    ----------
    cell : RNNCell
        A built-in cell (one kernel call per layer), a ``MultiRNNCell`` or
        wrapper of them, or a user-written ``RNNCell`` (stepped in Python).
        An unbuilt cell is built for the input depth.
    inputs : array (batch, max_time, depth), or (max_time, batch, depth) if time_major
    sequence_length : int array (batch,), optional
        Steps at and past a sequence's length output zeros and leave its
        state as it was: the final state is the state after its last valid
        step (the initial state when the length is 0). Each length must be
        in ``[0, max_time]``.
    initial_state : nested arrays shaped like ``cell.state_size``, optional
        Each ``(batch, size)``; zeros when omitted.
    dtype : float32 or float64, optional
        The compute dtype; by default the initial state's, else float64
        where a cell is float64 (made so, or given float64 weights), else
        the inputs' (float16 inputs compute in float32; integer inputs are a
        ``TypeError``). Unlike TF1 it need not be given.
    time_major : bool
        Inputs and outputs are ``(max_time, batch, ...)``.
    backend : str, optional
        ``"auto"``, ``"reference"``, ``"cpu"`` or ``"cuda"``; defaults to the
        cell's ``backend`` (itself ``"auto"``). It applies to every built-in
        cell the run calls, those stepped in Python (inside an active
        ``DropoutWrapper``, a ``ResidualWrapper`` with ``residual_fn``, or a
        user's cell) included, and is checked before anything runs, even
        when nothing does (no step, no row): a value that is not a str is a
        ``TypeError``, an unknown name a ``ValueError``, a backend that
        cannot run here a ``RuntimeError``. After the call,
        ``cell.last_backend`` (on each built-in cell) says which ran and why.
    parallel_iterations : int, optional
        A positive integer or None. TF1's graph parallelism: the steps here
        run in order whatever its value.
    swap_memory : bool
        TF1's GPU-to-host memory swapping during training: no effect here.
    scope : str, optional
        TF1's variable scope: the weights here are the cell's own, so it
        changes nothing (a checkpoint's scope goes to
        :meth:`RNNCell.load_checkpoint`).

    Returns
    -------
    outputs : np.ndarray (batch, max_time, cell.output_size), or time-major
    state : nested arrays shaped like ``cell.state_size``

    Notes
    -----
    The weights of every built-in cell in ``cell`` (the layers of a
    ``MultiRNNCell``, the cells inside wrappers) are read together before
    the first step (a built-in cell that a user's cell calls: at its first
    step) and kept for the whole run: a ``set_weights`` in another thread
    meanwhile changes the next run, never part of this one.
    """
    _check_cell(cell)
    _unused_args(parallel_iterations, swap_memory, scope)
    backend = _request(backend)
    x = _sequence(inputs, time_major)
    B, T, _ = x.shape
    lengths = _lengths(sequence_length, B, T)
    dt = compute_dtype(dtype, initial_state, x, [cell])
    x = np.ascontiguousarray(x, dtype=dt)
    state = _initial_state(cell, initial_state, B, dt, "initial_state")
    out, state = _forward(cell, x, lengths, state, False, backend, _prepare([cell], x))
    if time_major:
        out = np.ascontiguousarray(out.transpose(1, 0, 2))
    return out, state


def bidirectional_dynamic_rnn(cell_fw, cell_bw, inputs, sequence_length=None,
                              initial_state_fw=None, initial_state_bw=None, dtype=None,
                              parallel_iterations=None, swap_memory=False, time_major=False,
                              scope=None, backend=None):
    """TF1 ``tf.nn.bidirectional_dynamic_rnn`` on NumPy arrays.

    The backward cell reads each sequence from its last valid step back to
    step 0 (TF1's ``reverse_sequence`` within ``sequence_length``, not the
    whole padded axis); its outputs are returned aligned with the input in
    time. Arguments as :func:`dynamic_rnn`.

    Returns
    -------
    (output_fw, output_bw) : each (batch, max_time, output_size), or time-major
    (state_fw, state_bw) : the final states of the two cells
    """
    _check_cell(cell_fw, "cell_fw")
    _check_cell(cell_bw, "cell_bw")
    _unused_args(parallel_iterations, swap_memory, scope)
    backend = _request(backend)
    x = _sequence(inputs, time_major)
    B, T, _ = x.shape
    lengths = _lengths(sequence_length, B, T)
    dt = compute_dtype(dtype, initial_state_fw if initial_state_fw is not None
                       else initial_state_bw, x, [cell_fw, cell_bw])
    x = np.ascontiguousarray(x, dtype=dt)
    s_fw = _initial_state(cell_fw, initial_state_fw, B, dt, "initial_state_fw")
    s_bw = _initial_state(cell_bw, initial_state_bw, B, dt, "initial_state_bw")
    weights = _prepare([cell_fw, cell_bw], x)
    out_fw, s_fw = _forward(cell_fw, x, lengths, s_fw, False, backend, weights)
    out_bw, s_bw = _forward(cell_bw, x, lengths, s_bw, True, backend, weights)
    if time_major:
        out_fw = np.ascontiguousarray(out_fw.transpose(1, 0, 2))
        out_bw = np.ascontiguousarray(out_bw.transpose(1, 0, 2))
    return (out_fw, out_bw), (s_fw, s_bw)


def _stack_list(inputs):
    if isinstance(inputs, np.ndarray) or not isinstance(inputs, (list, tuple)):
        raise TypeError(
            "inputs: expected a list of max_time arrays of shape (batch, depth), "
            f"got {type(inputs).__name__}"
        )
    if len(inputs) == 0:
        raise ValueError("inputs: must not be empty (a list of max_time arrays)")
    arrays = [np.asarray(a) for a in inputs]
    first = arrays[0].shape
    for t, a in enumerate(arrays):
        if a.ndim != 2 or a.shape != first:
            raise ValueError(
                f"inputs[{t}]: expected shape (batch, depth) equal to inputs[0]'s "
                f"{first}, got {a.shape}"
            )
    return np.stack(arrays, axis=1)


def static_rnn(cell, inputs, initial_state=None, dtype=None, sequence_length=None,
               scope=None, backend=None):
    """TF1 ``tf.nn.static_rnn``: ``inputs`` is a list of ``(batch, depth)`` arrays.

    Returns
    -------
    outputs : list of max_time arrays (batch, cell.output_size)
    state : the final state, as :func:`dynamic_rnn`
    """
    _check_cell(cell)
    x = _stack_list(inputs)
    out, state = dynamic_rnn(cell, x, sequence_length, initial_state, dtype, scope=scope,
                             backend=backend)
    return [out[:, t] for t in range(out.shape[1])], state


def static_bidirectional_rnn(cell_fw, cell_bw, inputs, initial_state_fw=None,
                             initial_state_bw=None, dtype=None, sequence_length=None,
                             scope=None, backend=None):
    """TF1 ``tf.nn.static_bidirectional_rnn``.

    Returns
    -------
    outputs : list of max_time arrays (batch, output_size_fw + output_size_bw),
        forward and backward outputs concatenated (backward aligned in time)
    output_state_fw, output_state_bw : the final states
    """
    _check_cell(cell_fw, "cell_fw")
    _check_cell(cell_bw, "cell_bw")
    x = _stack_list(inputs)
    (out_fw, out_bw), (s_fw, s_bw) = bidirectional_dynamic_rnn(
        cell_fw, cell_bw, x, sequence_length, initial_state_fw, initial_state_bw, dtype,
        scope=scope, backend=backend,
    )
    out = np.concatenate([out_fw, out_bw], axis=2)
    return [out[:, t] for t in range(out.shape[1])], s_fw, s_bw
