"""The engine: what every public class does to run its cells on the kernels.

Cells, layers, ``Bidirectional``, streams, the TF1-style API and the
converted PyTorch modules all run through the functions here:

* :class:`Weights`: the weights of one cell as the kernels see them (a
  parameter record of :mod:`fastrnn.kernels`) and their packed forms, one
  per backend, made on first use. A ``Weights`` object never changes:
  ``set_weights`` makes a new one and swaps it in, under
  :data:`WEIGHTS_LOCK`. A call takes the ``Weights`` of every cell it runs
  at its start, under the same lock, so it computes with one complete set
  of weights (never half of a stack's old weights and half of its new
  ones), and every call that starts after ``set_weights`` returned
  computes with the new set.
* :func:`select`: the backend for a run (:mod:`fastrnn.dispatch`), with the
  placement of a layer.
* :func:`run_cells`: a stack of cells over a whole sequence, one kernel
  call per cell; :func:`run_pair`: a forward and a backward stack, both
  outputs aligned with the input in time (PyTorch's bidirectional layers;
  Keras's ``Bidirectional`` runs its two sub-layers, which keep Keras's
  output order, on one snapshot of both).
* :func:`step`: one time step of a stack, on the per-frame kernels where
  the ``cpu`` backend runs it (a cell's one-step call, ``cell(x, states)``).
* :func:`host_loop`: a user's Python cell, stepped from Python with Keras's
  masking rules.
"""

from __future__ import annotations

import inspect
import os
import threading

import numpy as np

from . import dispatch, kernels
from ._nest import flatten, pack_as
from .kernels import reference, state_sizes

#: Held while a ``set_weights`` swaps in new weights, and while a call reads
#: the weights of the cells it runs.
WEIGHTS_LOCK = threading.RLock()
if hasattr(os, "register_at_fork"):
    # a fork waits for a set_weights in another thread to finish: a child
    # forked while it held the lock would wait for it forever
    os.register_at_fork(before=WEIGHTS_LOCK.acquire, after_in_parent=WEIGHTS_LOCK.release,
                        after_in_child=WEIGHTS_LOCK.release)
#: Counts the changes of any cell's weights (see :func:`weights_changed`):
#: a stream compares it on each call, and only when it moved looks at its
#: own cells' weights.
generation = 0


def weights_changed():
    """Note a change of weights (called with ``WEIGHTS_LOCK`` held)."""
    global generation
    generation += 1


class Weights:
    """One cell's weights for the kernels: ``params`` (a parameter record of
    :mod:`fastrnn.kernels`), and its packed forms, made once per backend.

    Never changed once made (a change of weights is a new ``Weights``).
    """

    __slots__ = ("params", "_packed", "_stack")

    def __init__(self, params):
        self.params = params
        self._packed = {}
        self._stack = {}  # what a stack with this cell on top derives: see _for_stack

    def packed(self, module):
        """The weights in ``module``'s layout (``module.pack(params)``, once)."""
        got = self._packed.get(module.NAME)
        if got is None:  # two threads may both pack: the same result either way
            got = self._packed[module.NAME] = module.pack(self.params)
        return got


def snapshot(cells, dtype=None, stack=False):
    """The current :class:`Weights` of each cell, read together (see the
    module docstring). ``cell._weights_for(dtype)`` gives one cell's.

    ``stack``: the cells are stacked, each reading the output of the one
    below; a cell whose kernel takes another input size is a ``ValueError``
    (its weights were set, or it was built, apart from the stack: the
    kernels would read past the rows it has)."""
    with WEIGHTS_LOCK:
        weights = tuple(c._weights_for(dtype) for c in cells)
    if stack:
        check_stack(cells, weights)
    return weights


def check_stack(cells, weights):
    """Refuse stacked ``cells`` (with their :class:`Weights`) where a cell's
    kernel takes another input size than the cell below gives."""
    for i in range(1, len(weights)):
        below, above = weights[i - 1].params, weights[i].params
        if above.kernel.shape[0] != below.output_size:
            raise ValueError(
                f"cells[{i}] ({type(cells[i]).__name__}): its kernel takes "
                f"{above.kernel.shape[0]} inputs, but cells[{i - 1}] gives "
                f"{below.output_size}; set its weights for a kernel of {below.output_size} rows")


def _for_stack(weights, key, make):
    """``make()``, cached in the top cell's ``Weights`` for this stack (the
    cells below are part of the key: a stack's result must not outlive a
    change of any of its cells)."""
    top, below = weights[-1], weights[:-1]
    hit = top._stack.get(key)
    if hit is None or hit[0] != below:
        if len(top._stack) >= 64:  # e.g. a server cycling through batch sizes
            top._stack.clear()
        hit = top._stack[key] = (below, make())
    return hit[1]


def select(requested, params_list, on_device=False, placed=None):
    """The backend that runs ``params_list``: a :class:`fastrnn.dispatch.Choice`.

    ``requested`` is the caller's ``backend=``; ``placed`` a layer's
    ``to("cpu")`` / ``to("cuda")`` placement; ``on_device`` whether the
    inputs are GPU arrays. Only ``"cuda"`` counts: it makes ``auto`` run
    NumPy inputs on the GPU. ``"cpu"`` is the host, where an unplaced
    layer runs too, so the backend is chosen as without a placement (it
    requests no backend: ``set_backend`` and ``FASTRNN_BACKEND`` still apply,
    and ``auto`` may pick ``reference``).
    """
    return dispatch.select(requested, params_list, on_device=on_device or placed == "cuda")


def select_for(weights, requested, on_device=False, placed=None):
    """:func:`select` for a stack's ``weights`` (see :func:`snapshot`), made
    once per stack, request and process-wide default backend."""
    key = ("choice", requested, dispatch.default_key(), on_device, placed)
    return _for_stack(weights, key, lambda: select(requested, [w.params for w in weights],
                                                     on_device, placed))


# ---------------------------------------------------------------- sequences


def run_cells(module, packs, x, states, mask, reverse, zero_output, want_sequence, xp=np):
    """Run a stack of cells over ``x (B, T, D)``, one kernel call per cell.

    Parameters
    ----------
    module : backend module
    packs : list
        Each cell's weights packed for ``module``, bottom to top.
    x : array (B, T, D)
        C-contiguous, the compute dtype.
    states : list of arrays
        The initial states, flat, Keras order per cell (``[h]``, ``[h, c]``).
    mask : array (B, T) bool or None
        ``False``: the step is skipped (state carried).
    reverse : bool
        Process steps last to first.
    zero_output : bool
        Masked steps output zeros (else the previous output).
    want_sequence : bool
        Return the last cell's output at every step.

    Returns
    -------
    out : array (B, T, P) aligned with ``x`` in time, or None
    states_out : list of arrays, flat, like ``states``
    """
    B, T, _ = x.shape
    dtype = x.dtype
    out_states = [xp.empty_like(s) for s in states]
    layer_in, k = x, 0
    last = len(packs) - 1
    for i, packed in enumerate(packs):
        params = packed.params
        n = params.n_states
        out = None
        if i < last or want_sequence:
            out = xp.empty((B, T, params.output_size), dtype)
        kernels.run(module, packed, layer_in, states[k : k + n], mask, reverse, zero_output,
                    out, out_states[k : k + n])
        layer_in, k = out, k + n
    return layer_in, out_states


def last_output(packs, states_out, mask, reverse, zero_output, xp=np):
    """The output of a stack's last processed step: the top cell's ``h``, or
    zeros for a row whose steps were all masked (and, with ``zero_output``,
    for a row whose last step in processing order was masked)."""
    n = packs[-1].params.n_states
    h = states_out[len(states_out) - n]
    if mask is None:
        return h.copy()
    T = mask.shape[1]
    valid = mask[:, 0 if reverse else T - 1] if zero_output else mask.any(axis=1)
    return xp.where(valid[:, None], h, xp.zeros_like(h))


def run_pair(module, packs_fw, packs_bw, x, states_fw, states_bw, mask, zero_output,
             want_sequence, xp=np):
    """A forward and a backward stack over the same ``x``: the backward one
    reads each sequence last to first (within its mask) and its outputs are
    aligned with ``x`` in time, like the forward one's.

    Returns ``(out_fw, out_bw, states_fw, states_bw)`` (see :func:`run_cells`).
    """
    out_fw, st_fw = run_cells(module, packs_fw, x, states_fw, mask, False, zero_output,
                              want_sequence, xp)
    out_bw, st_bw = run_cells(module, packs_bw, x, states_bw, mask, True, zero_output,
                              want_sequence, xp)
    return out_fw, out_bw, st_fw, st_bw


def reference_dropout(weights, x, rng, dropout, recurrent_dropout):
    """``(x, packed)`` for one cell run with Keras's training-mode dropout on
    the ``reference`` backend: one mask per sequence for the inputs and one
    for the recurrent state, scaled by ``1 / (1 - rate)``."""
    batch = x.shape[0]
    if dropout:
        keep = rng.random((batch, 1, x.shape[2])) >= dropout
        x = x * (keep / (1.0 - dropout)).astype(x.dtype)
    packed = reference.pack(weights.params)
    if recurrent_dropout:
        keep = rng.random((batch, weights.params.units)) >= recurrent_dropout
        packed.recurrent_mask = keep / (1.0 - recurrent_dropout)
    return np.ascontiguousarray(x), packed


# ---------------------------------------------------------------- one step


class _Frames:
    """A stack's weights in the per-frame kernels' layout, for one batch size."""

    __slots__ = ("fn", "w", "cfg", "work", "state_len", "slices", "out_size")

    def __init__(self, weights, batch):
        kernels = dispatch.backend_module("cpu").stream
        params_list = [w.params for w in weights]
        self.fn = kernels.frame
        self.w, self.cfg, self.state_len = kernels.pack(params_list, batch, False)
        self.work = kernels.work_size(self.cfg, batch, 1)
        self.slices, at = [], 0  # where each state lies in the flat state array
        for n in (s for p in params_list for s in state_sizes(p)):
            self.slices.append((at, at + batch * n, n))
            at += batch * n
        self.out_size = params_list[-1].output_size


def frames_supported(params_list):
    """Whether the ``cpu`` backend's per-frame kernels run this stack, and why not."""
    return dispatch.backend_module("cpu").stream.supports_all(params_list)


def frames_for(weights, batch):
    """The per-frame kernels' form of this stack for ``batch`` rows (made once),
    or None when one step of it does not run on them: ``auto`` does not pick
    the ``cpu`` backend for it, or those kernels do not support it."""
    def make():
        if select_for(weights, "auto").name != "cpu":
            return None
        if not frames_supported([w.params for w in weights])[0]:
            return None
        return _Frames(weights, batch)

    return _for_stack(weights, ("frames", batch, dispatch.default_key()), make)


def plain_states(states, batch, sizes, dtype):
    """Whether ``states`` need no conversion: ``(batch, size)`` arrays of
    ``dtype``, as many as ``sizes`` (they are copied into the kernel's own
    buffer, so any strides do)."""
    if len(states) != len(sizes):
        return False
    for st, n in zip(states, sizes):
        if type(st) is not np.ndarray or st.dtype is not dtype or st.shape != (batch, n):
            return False
    return True


def step(frames, x, states):
    """One step of a stack on the ``cpu`` backend's per-frame kernels.

    Parameters
    ----------
    frames : the stack's :func:`frames_for` for ``x``'s batch size
    x : ndarray (B, D)
        C-contiguous, the cells' dtype.
    states : list of ndarray
        Flat, Keras order per cell, each ``(B, size)``, C-contiguous;
        never modified.

    Returns
    -------
    output : ndarray (B, P)
    new_states : list of ndarray, like ``states``
    """
    B = x.shape[0]
    dtype = x.dtype
    s = np.empty(frames.state_len, dtype)
    for (a, b, _), st in zip(frames.slices, states):
        s[a:b] = st.reshape(-1)
    out = np.empty((B, frames.out_size), dtype)
    frames.fn(x, frames.w, s, np.empty(frames.work, dtype), out, frames.cfg)
    return out, [s[a:b].reshape(B, n) for a, b, n in frames.slices]


# ---------------------------------------------------------------- Python cells


def _takes_training(cell):
    """Whether ``cell(x, states, training=...)`` is accepted: Keras passes
    ``training`` only to a cell whose call has that argument (or ``**kwargs``)."""
    try:
        params = inspect.signature(cell).parameters.values()
    except (TypeError, ValueError):  # no signature to read: do not pass it
        return False
    return any(p.name == "training" or p.kind is p.VAR_KEYWORD for p in params)


def call_cell(cell, inputs, states, training):
    """One step of any cell, built-in or the user's, as Keras calls it:
    ``(output, new_states)``, or a ``TypeError`` saying what came instead."""
    got = cell(inputs, states, training=training) if _takes_training(cell) else \
        cell(inputs, states)
    return check_pair(got, type(cell).__name__, "new_states")


def check_pair(got, label, states="new_states"):
    """``got``, what one step of the cell ``label`` returned, if it is a pair
    ``(output, states)``; else a ``TypeError`` saying what came (one array
    would be unpacked row by row)."""
    if not isinstance(got, (list, tuple)) or len(got) != 2:
        what = (f"a {type(got).__name__} of {len(got)} items" if isinstance(got, (list, tuple))
                else f"one {type(got).__name__}")
        raise TypeError(f"{label}.call returned {what}; a cell returns (output, {states})")
    return got


def _check_step(cell, y, new, batch, output_size, sizes):
    """What the user's cell returned has the shapes it declared."""
    name = type(cell).__name__
    if y.shape != (batch, output_size):
        raise ValueError(f"{name} returned an output of shape {y.shape}; expected "
                         f"(batch, output_size) = {(batch, output_size)}")
    if len(new) != len(sizes):
        raise ValueError(f"{name} returned {len(new)} states; its state_size declares "
                         f"{len(sizes)}")
    for k, (s, n) in enumerate(zip(new, sizes)):
        if s.shape != (batch, n):
            raise ValueError(f"{name} returned states[{k}] of shape {s.shape}; expected "
                             f"{(batch, n)} (state_size)")


def host_loop(cell, x, mask, states, structure, reverse, zero_output, want_sequence, training,
              output_size, sizes, dtype):
    """Step the user's ``cell`` from Python over ``x (B, T, D)``, Keras's masking rules.

    ``structure`` nests the flat ``states`` as the cell expects them, and
    what the cell returns is checked against ``output_size`` and ``sizes``
    (the flat state sizes). Returns ``(output, flat final states)``: every
    step's output ``(B, T, P)`` in processing order with ``want_sequence``,
    else the last one.
    """
    B, T, _ = x.shape
    flat = [s.copy() for s in states]
    prev, outputs = None, []
    steps = range(T - 1, -1, -1) if reverse else range(T)
    for t in steps:
        y, new = call_cell(cell, x[:, t], pack_as(structure, flat), training)
        y = np.asarray(y, dtype)
        new = [np.asarray(s, dtype) for s in flatten(new)]
        _check_step(cell, y, new, B, output_size, sizes)
        if prev is None:
            prev = np.zeros_like(y)
        if mask is not None:
            keep = mask[:, t, None]
            new = [np.where(keep, n, s) for n, s in zip(new, flat)]
            y = np.where(keep, y, np.zeros_like(y) if zero_output else prev)
        flat, prev = new, y
        outputs.append(y)
    if want_sequence:
        return np.ascontiguousarray(np.stack(outputs, axis=1)), flat
    return prev, flat
