"""Run one built-in TF1 cell over a whole sequence through the kernel contract.

Built-in cells describe themselves to the kernels as a Keras-layout params
record (:mod:`fastrnn.kernels`); this module picks the backend with
:func:`fastrnn.dispatch.select`, packs the weights once per backend and
dtype (the cell drops its cache when its weights change), and makes exactly
one kernel call for the whole sequence.
"""

from __future__ import annotations

import numpy as np

from .. import dispatch, kernels


def resolve_backend(requested, cell):
    """The backend request for a run: the call's ``backend=``, else the cell's."""
    if requested is None or (isinstance(requested, str) and requested.lower() == "auto"):
        own = getattr(cell, "backend", None)
        if own is not None:
            return own
    return "auto" if requested is None else requested


def run_layer(cell, x, mask, reverse, states, backend):
    """Run built-in ``cell`` over ``x`` in one kernel call.

    Parameters
    ----------
    cell : a built-in cell (has ``_kernel_params``)
    x : np.ndarray (batch, time, depth), C-contiguous, the compute dtype
    mask : np.ndarray (batch, time) bool, or None
        ``t < sequence_length``; masked steps output zeros and carry state.
    reverse : bool
        Process each sequence from its last valid step back to step 0.
    states : list of np.ndarray
        Keras order: ``[h]`` or ``[h, c]``, each (batch, size), x's dtype.
    backend : str
        ``"auto"``, ``"reference"``, ``"cpu"`` or ``"cuda"``.

    Returns
    -------
    out : np.ndarray (batch, time, output_size), aligned with ``x`` in time
    states_out : list of np.ndarray, Keras order
    """
    dtype = x.dtype
    params = cell._kernel_params(dtype)
    choice = dispatch.select(backend, [params])
    cell.last_backend = choice
    packed = cell._packed(choice, dtype, params)
    B, T, _ = x.shape
    out = np.empty((B, T, params.output_size), dtype=dtype)
    states = [np.ascontiguousarray(s, dtype=dtype) for s in states]
    states_out = [np.empty_like(s) for s in states]
    if mask is not None:
        mask = np.ascontiguousarray(mask, dtype=bool)
    kernels.run(choice.module, packed, x, states, mask, reverse, True, out, states_out)
    return out, states_out
