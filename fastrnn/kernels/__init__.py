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

Reduced-precision weights
-------------------------
:func:`quantize` turns a float32 record into one whose ``kernel`` and
``recurrent_kernel`` are rounded to a narrower format, ``params.precision``
(``"float32"``/``"float64"`` for plain records, else the mode below). Only
those two matrices are quantized, each on its own; the
biases, peepholes and the projection stay float32, and so do the inputs,
the states, the outputs and every sum (weights-only quantization; the two
``_dynamic`` modes also round the activations for the products).

* ``"bfloat16"``: each weight rounded to the nearest bfloat16 (8 bits of
  significand, float32's exponent range), ties to even; NaN stays NaN.
* ``"int8"``: symmetric, per output column (as PyTorch's ``quantize_dynamic``
  and ONNX Runtime's ``DynamicQuantizeLSTM`` quantize their weights), the
  input kernel and the recurrent kernel separately: for column ``j`` of a
  matrix ``W``, ``scale[j] = max_k |W[k, j]| / 127`` (float32) and
  ``q[k, j] = round(W[k, j] / scale[j])`` (ties to even), in -127..127. A
  column of zeros has scale 0, and a scale below float32's smallest normal
  number (1.2e-38; columns whose largest weight is below 1.5e-36) is that
  number, since kernels that flush subnormals would read it as 0.
  Non-finite weights are an error.

* ``"int8_dynamic"``: the int8 weights above, and the activations
  quantized too, as ONNX Runtime's ``DynamicQuantizeLSTM`` and PyTorch's
  ``quantize_dynamic`` do, so that the products are integer dot products
  (``vpdpbusd`` where the CPU has AVX512_VNNI). At every step, each row's
  input ``x_t`` and previous state ``h`` are quantized on their own,
  symmetric: with ``m = max_k |a_k|`` (float32), ``a_q = clip(rint(a *
  (127 / m)), -127, 127)`` (float32 arithmetic, ties to even) and scale
  ``m / 127``; then ``a W = (m / 127) * scale[j] * sum_k a_q[k] q[k, j]``,
  the sum exact in integers. A zero row gives zeros; a row holding NaN or
  inf gives NaN. Biases, the cell state and the gate math stay float32.
  LSTM (no projection) and GRU with ``reset_after=True`` only.
* ``"bfloat16_dynamic"``: the bfloat16 weights above, and the activations
  rounded to bfloat16 too (ties to even; NaN stays NaN) for the products
  only, so that they are bfloat16 dot products (``vdpbf16ps`` where the CPU
  has AVX512_BF16: twice the multiply-adds of a float32 FMA per
  instruction, half the weight bytes). At every step, each row's input
  ``x_t`` and previous state ``h`` are rounded; a product of two bfloat16 is
  exact in float32 and the sums are float32. The state kept from step to
  step, the biases and the gate math stay float32. LSTM (no projection) and
  GRU with ``reset_after=True`` only.

The record keeps both forms: ``params.quantized`` (:class:`QuantizedWeights`:
the bfloat16 bit patterns as uint16, or the int8 values and their float32
scales) and, in ``kernel`` / ``recurrent_kernel``, the float32 values they
stand for (``float32(q) * scale``; a bfloat16 is exactly a float32). For
``"bfloat16"`` and ``"int8"`` those values *are* the quantized layer: a
backend that reads only the float32 arrays (``cuda``) computes exactly its
semantics, and a backend with narrow kernels (``cpu``) packs
``params.quantized`` instead. The two ``_dynamic`` modes also round the
activations: ``reference`` implements them, ``cuda`` does not run them.

Backend module interface
------------------------
``NAME``
    The backend's name.
``available() -> (bool, str)``
    Whether the backend can run on this machine, and why not.
``supports(params) -> (bool, str)``
    Whether the backend can run this configuration, and why not; for a
    quantized record it can run, how it runs the weights (the dispatcher
    adds that to the layer's ``backend_reason``).
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

from dataclasses import dataclass, replace
from typing import Any, Optional

import numpy as np


#: The reduced-precision formats of :func:`quantize`.
PRECISIONS = ("bfloat16", "int8", "int8_dynamic", "bfloat16_dynamic")
#: The modes that round the activations too (LSTM and GRU(reset_after) only).
DYNAMIC = ("int8_dynamic", "bfloat16_dynamic")


@dataclass(frozen=True, eq=False)
class QuantizedWeights:
    """The compact form of a layer's ``kernel`` and ``recurrent_kernel``.

    ``mode`` is ``"bfloat16"`` or ``"bfloat16_dynamic"`` (``kernel`` and ``recurrent_kernel`` hold
    bfloat16 bit patterns, uint16, the Keras shapes ``(D, G*H)`` and
    ``(P, G*H)``; no scales) or ``"int8"`` / ``"int8_dynamic"`` (int8 arrays
    of those shapes, and ``kernel_scale`` / ``recurrent_scale``, float32
    ``(G*H,)``: one scale per output column). See :func:`quantize` for the
    scheme.
    """

    mode: str
    kernel: np.ndarray
    recurrent_kernel: np.ndarray
    kernel_scale: Optional[np.ndarray] = None
    recurrent_scale: Optional[np.ndarray] = None

    def arrays(self):
        """The compact arrays, in the order a file keeps them: ``[kernel,
        recurrent_kernel]`` (bfloat16 modes) or those and ``[kernel_scale,
        recurrent_scale]`` (int8 modes)."""
        if self.mode.startswith("bfloat16"):
            return [self.kernel, self.recurrent_kernel]
        return [self.kernel, self.recurrent_kernel, self.kernel_scale, self.recurrent_scale]

    def dequantize(self):
        """``(kernel, recurrent_kernel)``: the float32 values the compact
        arrays stand for (exact: no rounding happens here)."""
        if self.mode.startswith("bfloat16"):
            return tuple((np.asarray(a, np.uint32) << 16).view(np.float32)
                         for a in (self.kernel, self.recurrent_kernel))
        return (np.asarray(self.kernel, np.float32) * self.kernel_scale,
                np.asarray(self.recurrent_kernel, np.float32) * self.recurrent_scale)


def quantize_rows(a):
    """Dynamic symmetric int8 of each row of ``a (R, K)`` (``"int8_dynamic"``
    activations): ``(q int32 (R, K), scale float32 (R,))``, computed in
    float32 as the kernels do (see :func:`quantize`). A zero row has scale 0;
    a row holding NaN or inf has scale NaN."""
    a = np.asarray(a, np.float32)
    m = np.abs(a).max(axis=1) if a.shape[1] else np.zeros(a.shape[0], np.float32)
    finite = np.isfinite(m)
    safe = np.where(finite & (m > 0), m, np.float32(1))
    inv = (np.float32(127) / safe).astype(np.float32)
    with np.errstate(invalid="ignore"):
        q = np.clip(np.rint(a * inv[:, None]), -127, 127)
    q = np.where(finite[:, None] & (m[:, None] > 0), q, 0).astype(np.int32)
    scale = np.where(finite, m / np.float32(127), np.float32(np.nan)).astype(np.float32)
    return q, scale


def bfloat16_values(a):
    """``a`` rounded to the nearest bfloat16 (``"bfloat16_dynamic"``
    activations, as the kernels round them), as float32 values."""
    return (_bfloat16_bits(np.asarray(a, np.float32)).astype(np.uint32) << 16).view(np.float32)


class _Precision:
    """``precision``: the weight format of a params record (read-only)."""

    def __get__(self, params, owner=None):
        if params is None:
            return self
        q = params.quantized
        return q.mode if q is not None else np.asarray(params.kernel).dtype.name


@dataclass(frozen=True, eq=False)
class SimpleRNNParams:
    """SimpleRNN weights (Keras layout) and configuration.

    ``quantized``: the compact weights of a record made by :func:`quantize`
    (``None`` for float32 / float64 weights); ``precision`` names the
    format.
    """

    kernel: np.ndarray
    recurrent_kernel: np.ndarray
    bias: np.ndarray
    activation: Any = 1
    quantized: Optional[QuantizedWeights] = None

    kind = "simple_rnn"
    precision = _Precision()

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
    """GRU weights (Keras layout, gates z, r, h) and configuration
    (``quantized`` / ``precision``: see :class:`SimpleRNNParams`)."""

    kernel: np.ndarray
    recurrent_kernel: np.ndarray
    bias: np.ndarray  # (2, 3H): input bias, recurrent bias
    activation: Any = 1
    recurrent_activation: Any = 2
    reset_after: bool = True
    quantized: Optional[QuantizedWeights] = None

    kind = "gru"
    precision = _Precision()

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
    """LSTM weights (Keras layout, gates i, f, c, o) and configuration
    (``quantized`` / ``precision``: see :class:`SimpleRNNParams`)."""

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
    quantized: Optional[QuantizedWeights] = None

    kind = "lstm"
    precision = _Precision()

    @property
    def units(self):
        return self.kernel.shape[1] // 4

    @property
    def output_size(self):
        return self.units if self.projection is None else self.projection.shape[1]

    @property
    def n_states(self):
        return 2


def _bfloat16_bits(w):
    """``w`` (float32) rounded to the nearest bfloat16, ties to even: the
    uint16 bit patterns. NaN stays a (quiet) NaN; overflow gives inf."""
    bits = np.ascontiguousarray(w, np.float32).view(np.uint32)
    rounded = (bits + (np.uint32(0x7FFF) + ((bits >> 16) & 1))) >> 16
    nan = np.isnan(w)
    if nan.any():
        rounded = np.where(nan, (bits >> 16) | 0x40, rounded)
    return rounded.astype(np.uint16)


def check_int8_finite(w, name):
    """int8 quantization (both modes) needs finite weights: a ``ValueError``
    naming ``name`` otherwise (a quantized cell's ``set_weights`` checks
    before it changes anything)."""
    if not np.isfinite(w).all():
        raise ValueError(f"{name}: int8 quantization needs finite weights; this matrix holds "
                         "NaN or inf")


_TINY = np.finfo(np.float32).tiny


def _int8_columns(w, name):
    """Symmetric per-column int8 of ``w (K, N)`` float32: ``(q int8, scale float32 (N,))``."""
    w = np.asarray(w, np.float32)
    check_int8_finite(w, name)
    amax = np.abs(w).max(axis=0) if w.shape[0] else np.zeros(w.shape[1], np.float32)
    scale = (amax / np.float32(127)).astype(np.float32)
    # a subnormal scale would read as 0 in kernels that flush subnormals:
    # the smallest normal number instead (|W| / it still fits in 127)
    scale = np.where((scale > 0) & (scale < _TINY), _TINY, scale).astype(np.float32)
    safe = np.where(scale > 0, scale, np.float32(1))
    q = np.clip(np.rint(w.astype(np.float64) / safe), -127, 127).astype(np.int8)
    return q, scale


def quantize(params, mode):
    """A copy of ``params`` with its kernels rounded to ``mode``.

    Parameters
    ----------
    params : SimpleRNNParams, GRUParams or LSTMParams
        float32 weights, not yet quantized.
    mode : {"bfloat16", "int8", "int8_dynamic", "bfloat16_dynamic"}
        The format (the scheme is in the module docstring, "Reduced-precision
        weights").

    Returns
    -------
    params
        The same configuration; ``quantized`` holds the compact weights and
        ``kernel (D, G*H)`` / ``recurrent_kernel (P, G*H)`` the float32
        values they stand for. Biases, peepholes and the projection are the
        same arrays as in ``params``.

    Raises
    ------
    ValueError
        For an unknown ``mode``, float64 weights, a record that is already
        quantized, (int8) a kernel holding NaN or inf, or a ``_dynamic`` mode
        on a cell it does not cover (SimpleRNN, GRU with ``reset_after=False``,
        LSTM with a projection).
    """
    if not isinstance(mode, str) or mode not in PRECISIONS:
        raise ValueError(f"mode: expected one of {', '.join(map(repr, PRECISIONS))}, "
                         f"got {mode!r}")
    if params.quantized is not None:
        raise ValueError(f"params: already quantized to {params.quantized.mode}; quantize "
                         "the float32 weights, once")
    dtype = np.asarray(params.kernel).dtype
    if dtype != np.float32:
        raise ValueError(f"params: only float32 weights can be quantized, got {dtype} "
                         "(convert the layer to float32 first)")
    if mode in DYNAMIC:
        why = None
        if params.kind == "simple_rnn":
            why = "a SimpleRNN"
        elif params.kind == "gru" and not params.reset_after:
            why = "a GRU with reset_after=False"
        elif params.kind == "lstm" and params.projection is not None:
            why = "an LSTM with a projection"
        if why:
            raise ValueError(f"mode: {mode!r} covers LSTM (no projection) and GRU with "
                             f"reset_after=True, not {why}; use {mode[:-8]!r}")
    kernel = np.asarray(params.kernel)
    rec = np.asarray(params.recurrent_kernel)
    if mode.startswith("bfloat16"):
        q = QuantizedWeights(mode, _bfloat16_bits(kernel), _bfloat16_bits(rec))
    else:
        qk, sk = _int8_columns(kernel, "kernel")
        qr, sr = _int8_columns(rec, "recurrent_kernel")
        q = QuantizedWeights(mode, qk, qr, sk, sr)
    dk, dr = q.dequantize()
    return replace(params, kernel=dk, recurrent_kernel=dr, quantized=q)


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
