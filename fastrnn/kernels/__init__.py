"""The kernel contract: what every backend implements.

A backend is a module in this package (``reference``, ``cpu``, ``cuda``)
exposing the names below. Layers, cells, the TF1-style API and the
converters all reach the numerics only through them, so a new backend is a
new module and the tests run every backend through one parametrised body
against ``reference``.

Parameters of one recurrent layer
---------------------------------
A layer describes its cell with one of three frozen records
(:class:`SimpleRNNParams`, :class:`GRUParams`, :class:`LSTMParams`). Their
arrays are in **Keras layout and Keras gate order**:

* SimpleRNN: ``kernel (D, H)``, ``recurrent_kernel (H, H)``, ``bias (H,)``.
  ``h' = act(x W + b + h U)``.
* GRU (gates **z, r, h**): ``kernel (D, 3H)``, ``recurrent_kernel (H, 3H)``,
  ``bias (2, 3H)`` = ``[input bias, recurrent bias]``. With
  ``reset_after=True`` (Keras default, PyTorch)
  ``h~ = act(x W_h + b_h + r * (h U_h + b_rh))``; with ``reset_after=False``
  (Keras 2, TF1) ``h~ = act(x W_h + b_h + (r * h) U_h + b_rh)``, where the
  recurrent bias row is zero for Keras and TF1 weights. Then
  ``h' = z * h + (1 - z) * h~``.
* LSTM (gates **i, f, c, o**): ``kernel (D, 4H)``, ``recurrent_kernel
  (P, 4H)``, ``bias (4H,)``, where ``P = H`` or the projection size.
  ``i = ra(. + p_i * c)``, ``f = ra(. + forget_bias + p_f * c)``,
  ``c' = clip(f * c + i * act(.), cell_clip)``, ``o = ra(. + p_o * c')``,
  ``h' = clip((o * act(c')) @ projection, proj_clip)``. Optional parts:
  ``peepholes (3, H)`` rows ``[i, f, o]`` (TF1), ``cell_clip`` and
  ``proj_clip`` (TF1; ``None`` = no clip), ``projection (H, P)`` (TF1
  ``num_proj``, PyTorch ``proj_size``), ``forget_bias`` (TF1; 0 for Keras).

``activation`` / ``recurrent_activation`` are integer codes from
:mod:`fastrnn.activations`, or a Python callable (``reference`` only). All
arrays of one record share one float dtype (float32 or float64).

Backend module interface
------------------------
``NAME``
    The backend's name.
``available() -> (bool, str)``
    Whether the backend can run on this machine, and why not.
``supports(params) -> (bool, str)``
    Whether the backend can run this configuration, and why not.
``pack(params) -> packed``
    Derives the backend's own weight layout, once, when weights are set.
    The result is opaque to callers and is passed back to the functions
    below; ``packed.params`` is the record it was made from.
``simple_rnn(packed, x, h0, mask, reverse, zero_output, out, h_out)``
``gru(packed, x, h0, mask, reverse, zero_output, out, h_out)``
``lstm(packed, x, h0, c0, mask, reverse, zero_output, out, h_out, c_out)``
    Run the whole sequence; return nothing, write the buffers.

Arguments of the sequence functions:

``x (B, T, D)``
    The input, batch-major, C-contiguous, the params' dtype. ``T >= 1``,
    ``B >= 1``.
``h0 (B, P)``, ``c0 (B, H)``
    Initial states; never modified. ``h_out``/``c_out`` may be the very
    same arrays as ``h0``/``c0`` (streams update their state in place), so
    a backend reads the initial state before it writes the final one.
``mask (B, T) bool`` or ``None``
    ``False`` marks a step to skip: the state is carried through unchanged
    and the output at that step is the previous output (the output of the
    previously *processed* step, zeros before the first), or zeros when
    ``zero_output`` is true. TF1 ``sequence_length`` is the mask
    ``t < length`` with ``zero_output=True``; with ``reverse=True`` that is
    exactly TF1's per-sequence ``reverse_sequence`` backward direction.
``reverse``
    Process steps ``T-1, ..., 0`` instead of ``0, ..., T-1``.
``out (B, T, P)`` or ``None``
    Receives the output of every step, **aligned with the input**:
    ``out[:, t]`` is the output produced when step ``t`` was processed,
    whatever the direction. ``None`` when the caller needs final states
    only (the kernels then keep no per-step output).
``h_out (B, P)``, ``c_out (B, H)``
    Receive the final states.

Kernels validate nothing: the public entry points have checked every shape
and dtype before a kernel runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np


@dataclass(frozen=True, eq=False)
class SimpleRNNParams:
    """SimpleRNN weights (Keras layout) and configuration."""

    kernel: np.ndarray
    recurrent_kernel: np.ndarray
    bias: np.ndarray
    activation: Any = 1

    kind = "simple_rnn"

    @property
    def units(self):
        return self.recurrent_kernel.shape[1]

    @property
    def output_size(self):
        return self.units

    @property
    def n_states(self):
        return 1


@dataclass(frozen=True, eq=False)
class GRUParams:
    """GRU weights (Keras layout, gates z, r, h) and configuration."""

    kernel: np.ndarray
    recurrent_kernel: np.ndarray
    bias: np.ndarray  # (2, 3H): input bias, recurrent bias
    activation: Any = 1
    recurrent_activation: Any = 2
    reset_after: bool = True

    kind = "gru"

    @property
    def units(self):
        return self.recurrent_kernel.shape[0]

    @property
    def output_size(self):
        return self.units

    @property
    def n_states(self):
        return 1


@dataclass(frozen=True, eq=False)
class LSTMParams:
    """LSTM weights (Keras layout, gates i, f, c, o) and configuration."""

    kernel: np.ndarray
    recurrent_kernel: np.ndarray
    bias: np.ndarray
    activation: Any = 1
    recurrent_activation: Any = 2
    forget_bias: float = 0.0
    peepholes: Optional[np.ndarray] = None  # (3, H): i, f, o
    cell_clip: Optional[float] = None
    projection: Optional[np.ndarray] = None  # (H, P)
    proj_clip: Optional[float] = None

    kind = "lstm"

    @property
    def units(self):
        return self.kernel.shape[1] // 4

    @property
    def output_size(self):
        return self.units if self.projection is None else self.projection.shape[1]

    @property
    def n_states(self):
        return 2


def state_sizes(params):
    """Sizes of the states of one layer, in Keras order (``[h]`` or ``[h, c]``)."""
    if params.kind == "lstm":
        return [params.output_size, params.units]
    return [params.units]


def run(backend, packed, x, states, mask, reverse, zero_output, out, states_out):
    """Call the sequence function of ``backend`` that matches ``packed``.

    ``states`` and ``states_out`` are lists in Keras order (``[h]`` or
    ``[h, c]``).
    """
    kind = packed.params.kind
    if kind == "lstm":
        backend.lstm(
            packed, x, states[0], states[1], mask, reverse, zero_output, out,
            states_out[0], states_out[1],
        )
    elif kind == "gru":
        backend.gru(packed, x, states[0], mask, reverse, zero_output, out, states_out[0])
    else:
        backend.simple_rnn(
            packed, x, states[0], mask, reverse, zero_output, out, states_out[0]
        )
