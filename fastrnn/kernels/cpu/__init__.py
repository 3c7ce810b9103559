"""The ``cpu`` backend: Numba-compiled kernels for the whole sequence.

Implements the kernel contract of :mod:`fastrnn.kernels` (read it there).
Two families of kernels sit behind it:

* :mod:`.packed` (with :mod:`.tiles` and :mod:`.split`): float32 LSTM
  without projection and float32 GRU with ``reset_after=True`` (the
  configurations nearly all models use). Weights are packed once by
  :func:`pack` into panels of 16 units, and register-blocked SIMD tiles
  apply the gate math right after each panel's product.
* :mod:`.generic`: every other variant (float64, SimpleRNN, GRU with
  ``reset_after=False``, LSTM projection), with the same semantics.

Both fold the input projection into each step, so memory does not grow
with ``T``, and both write straight into the caller's buffers. How a call
uses the cores is :mod:`.threads`' business; kernels never call BLAS, so no
OpenBLAS thread spins beside them. :mod:`.stream` holds the per-frame
kernels of :class:`fastrnn.streaming.Stream`; :func:`warmup` compiles both.

Every kernel's gate math is :mod:`fastrnn.kernels._math`'s, built for the
CPU's scalars and vectors by :mod:`.gates`. While a kernel runs, subnormal
numbers read and are written as zero on each of its threads, and the
caller's floating-point control register is restored before it returns
(:mod:`.fpenv`). Read-only inputs reach the kernels as writable views of the
same memory (:mod:`.inputs`), so they run the same compiled code. The compiled kernels are cached
on disk, stamped with every kernel source (:mod:`fastrnn.kernels._cache`).
"""

from __future__ import annotations

import os
import sys

import numba
import numpy as np

from .. import _cache

_cache.install()  # before any cached kernel is defined

from .. import DYNAMIC, GRUParams, LSTMParams, SimpleRNNParams, quantize, run, state_sizes  # noqa: E402,E501
from . import dense, generic, stream, threads  # noqa: E402,F401
from .inputs import writable  # noqa: E402,F401
from . import packed as _packed  # noqa: E402
from .threads import get_num_threads, set_num_threads, threading_layer, tuned_splits  # noqa: E402,F401

threads.prefer_omp()

NAME = "cpu"
_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_NO_C = np.zeros((1, 1), dtype=np.float32)
_NO_PEEP = np.zeros(16, dtype=np.float32)
_NO_OUT = np.zeros((1, 1, 1), dtype=np.float32)


# ---------------------------------------------------------------- contract


def available():
    return True, f"numba {numba.__version__} compiles the kernels"


def supports(params):
    if params.precision in ("int8_dynamic", "bfloat16_dynamic") and not _packed_path_enabled():
        return False, (f"{params.precision} weights run on the packed kernels, switched off by "
                       "FASTRNN_CPU_GENERIC")
    for name in ("activation", "recurrent_activation"):
        code = getattr(params, name, 0)
        if callable(code):
            return False, f"{name} is a Python callable (only the reference backend runs it)"
    dtypes = {
        np.asarray(v).dtype
        for v in vars(params).values()
        if isinstance(v, np.ndarray)
    }
    if len(dtypes) != 1 or next(iter(dtypes)) not in _DTYPES:
        return False, f"weights must share one dtype, float32 or float64 (got {sorted(map(str, dtypes))})"
    if params.quantized is not None:
        mode = params.quantized.mode
        if _runs_packed(params):
            return True, f"its {mode} weights run packed as stored"
        return True, (f"its {mode} weights run as the float32 values they stand for (the generic "
                      "kernels of this configuration: float32 memory and speed)")
    return True, "compiled kernels run this configuration"


def _runs_packed(params):
    """Whether :func:`pack` puts ``params`` in packed panels (float32 LSTM
    without projection, float32 GRU with ``reset_after=True``)."""
    if np.asarray(params.kernel).dtype != np.float32 or not _packed_path_enabled():
        return False
    if params.kind == "lstm":
        return params.projection is None
    return params.kind == "gru" and bool(params.reset_after)


class _Packed:
    """Weights in the layout of the kernel family that runs them.

    ``fixed`` (packed panels only): the drivers' ``weights`` and ``gates``
    tuples (see :mod:`.packed`), made once here rather than on every call
    (at batch 1 a call's Python costs as much as a short sequence's steps).
    """

    __slots__ = ("params", "dtype", "packed", "arrays", "fixed")

    def __init__(self, params, dtype, packed, arrays):
        self.params = params
        self.dtype = dtype
        self.packed = packed  # True: .packed panels; False: .generic
        self.arrays = arrays
        self.fixed = None
        if packed:
            p = params
            if p.kind == "gru":
                Wp, bp, sp = arrays
                self.fixed = ((Wp, bp, _NO_PEEP, sp),
                              (False, -1.0, int(p.activation), int(p.recurrent_activation)))
            else:
                Wp, bp, peep, sp = arrays
                self.fixed = ((Wp, bp, peep, sp),
                              (p.peepholes is not None, _limit(p.cell_clip), int(p.activation),
                               int(p.recurrent_activation)))

    def __repr__(self):
        kind = (f"packed {self.params.precision} panels" if self.packed
                else f"generic {self.dtype} (weights {self.params.precision})")
        return f"<cpu {self.params.kind} weights, {kind}>"


def _packed_path_enabled():
    # FASTRNN_CPU_GENERIC=1 forces the generic kernels (tests, debugging). It
    # is read when a layer's weights are packed, so it applies to weights
    # packed after it was set. A value that is neither on nor off raises:
    # "false" or "no" must not switch the packed kernels off.
    value = os.environ.get("FASTRNN_CPU_GENERIC", "").strip().lower()
    if value in ("", "0", "false", "no", "off"):
        return True
    if value in ("1", "true", "yes", "on"):
        return False
    raise ValueError("FASTRNN_CPU_GENERIC: expected 1, true, yes or on (generic kernels) or "
                     f"0, false, no, off or empty (packed kernels), got "
                     f"{os.environ['FASTRNN_CPU_GENERIC']!r}")


def _c(a, dtype):
    # C-contiguous, of ``dtype``, and writable: a read-only input runs the
    # same compiled kernels through a view of its memory (see .inputs)
    return writable(np.ascontiguousarray(a, dtype=dtype))


def pack(params):
    """Derive the CPU layout of ``params`` (once, when weights are set).

    Quantized weights (:func:`fastrnn.kernels.quantize`) of an LSTM without
    projection or a GRU with ``reset_after=True`` are packed in their
    compact format (bfloat16 bit patterns, or int8 with column scales) and
    widened to float32 in registers; every other configuration runs the
    generic kernels on the dequantized float32 weights (same semantics).
    int8_dynamic weights (those two cells only) are packed for integer dot
    products (:mod:`.packed`); the input is quantized per row and step
    before a call, the state at every step.
    """
    dtype = np.asarray(params.kernel).dtype
    kind = params.kind
    fast = _runs_packed(params)
    if kind == "lstm":
        if fast:
            arrays = _packed.pack_lstm(
                params.kernel, params.recurrent_kernel, params.bias,
                float(params.forget_bias), params.peepholes, params.quantized,
            )
            return _Packed(params, dtype, True, arrays)
        H = params.units
        peep = params.peepholes
        proj = params.projection
        arrays = (
            _c(params.kernel, dtype),
            _c(params.recurrent_kernel, dtype),
            _c(params.bias, dtype),
            _c(peep if peep is not None else np.zeros((3, H)), dtype),
            _c(proj if proj is not None else np.zeros((1, 1)), dtype),
        )
        return _Packed(params, dtype, False, arrays)
    if kind == "gru":
        if fast:
            return _Packed(params, dtype, True, _packed.pack_gru(
                params.kernel, params.recurrent_kernel, params.bias, params.quantized))
        bias = np.asarray(params.bias)
        if bias.ndim == 1:  # tolerate a (3H,) bias: no recurrent bias
            bias = np.stack([bias, np.zeros_like(bias)])
        arrays = (_c(params.kernel, dtype), _c(params.recurrent_kernel, dtype), _c(bias, dtype))
        return _Packed(params, dtype, False, arrays)
    arrays = (_c(params.kernel, dtype), _c(params.recurrent_kernel, dtype), _c(params.bias, dtype))
    return _Packed(params, dtype, False, arrays)


_DUMMY_MASK = np.ones((1, 1), dtype=np.bool_)


def _mask(mask):
    if mask is None:
        return _DUMMY_MASK, False
    return writable(np.ascontiguousarray(mask, dtype=np.bool_)), True


def _buf(dst, dtype, shape):
    """Where a kernel writes an output: ``dst`` itself when it is a
    C-contiguous writable array of ``dtype``, else a new array of its shape
    (``shape`` when ``dst`` is None) that :func:`_put` copies back."""
    if dst is None:
        return np.empty(shape, dtype=dtype)
    if (flags := dst.flags).c_contiguous and flags.writeable and dst.dtype == dtype:
        return dst
    return np.empty(dst.shape, dtype=dtype)


def _put(dst, buf):
    if dst is not None and buf is not dst:
        dst[...] = buf


def _limit(v):
    return -1.0 if v is None else float(v)


_NO_XS = np.zeros(1, dtype=np.float32)


def _inputs(packed, x):
    """The input of the packed drivers and its row scales: ``x`` itself, or
    for int8_dynamic weights each row of each step quantized, for
    bfloat16_dynamic weights each value rounded to bfloat16, for weights-only
    bfloat16 ``x`` with a zero feature added when its size is odd."""
    q = packed.params.quantized  # (not .precision, whose dtype name costs microseconds a call)
    mode = None if q is None else q.mode
    if mode == "int8_dynamic":
        return _packed.quantize_inputs(x)
    if mode == "bfloat16_dynamic":
        return _packed.bfloat16_inputs(x)
    if mode == "bfloat16":
        return _packed.even_inputs(x), _NO_XS
    return x, _NO_XS


def simple_rnn(packed, x, h0, mask, reverse, zero_output, out, h_out):
    p = packed.params
    dt = packed.dtype
    x = _c(x, dt)
    B, T, D = x.shape
    H = p.units
    W, U, bias = packed.arrays
    m, has_mask = _mask(mask)
    o, ho = _buf(out, dt, (1, 1, 1)), _buf(h_out, dt, None)
    args = (W, U, bias, int(p.activation), x, _c(h0, dt), m, has_mask, bool(reverse),
            bool(zero_output), o, out is not None, ho)
    threads.run_generic(generic.simple_rnn_rows, generic.simple_rnn_par, B, B * T * H * (D + H), args)
    _put(out, o)
    _put(h_out, ho)


def gru(packed, x, h0, mask, reverse, zero_output, out, h_out):
    p = packed.params
    dt = packed.dtype
    x = _c(x, dt)
    B, T, D = x.shape
    H = p.units
    m, has_mask = _mask(mask)
    o, ho = _buf(out, dt, (1, 1, 1)), _buf(h_out, dt, None)
    work = 3 * B * T * H * (D + H)
    if packed.packed:
        weights, gates = packed.fixed
        xin, xs = _inputs(packed, x)
        args = (True, H, weights, gates, (xin, _c(h0, dt), _NO_C, m, has_mask, o,
                out is not None, ho, _NO_C, xs), (bool(reverse), bool(zero_output),
                weights[0].nbytes > threads._HOIST_MIN_BYTES))
        threads.run_packed(B, T, D, H, work, args)
    else:
        W, U, bias = packed.arrays
        args = (W, U, bias, int(p.activation), int(p.recurrent_activation),
                bool(p.reset_after), x, _c(h0, dt), m, has_mask, bool(reverse),
                bool(zero_output), o, out is not None, ho)
        threads.run_generic(generic.gru_rows, generic.gru_par, B, work, args)
    _put(out, o)
    _put(h_out, ho)


def lstm(packed, x, h0, c0, mask, reverse, zero_output, out, h_out, c_out):
    p = packed.params
    dt = packed.dtype
    x = _c(x, dt)
    B, T, D = x.shape
    H = p.units
    m, has_mask = _mask(mask)
    o, ho, co = _buf(out, dt, (1, 1, 1)), _buf(h_out, dt, None), _buf(c_out, dt, None)
    work = 4 * B * T * H * (D + p.output_size)
    if packed.packed:
        weights, gates = packed.fixed
        xin, xs = _inputs(packed, x)
        args = (False, H, weights, gates, (xin, _c(h0, dt), _c(c0, dt), m, has_mask, o,
                out is not None, ho, co, xs), (bool(reverse), bool(zero_output),
                weights[0].nbytes > threads._HOIST_MIN_BYTES))
        threads.run_packed(B, T, D, H, work, args)
    else:
        W, U, bias, peep, proj = packed.arrays
        args = (W, U, bias, int(p.activation), int(p.recurrent_activation),
                float(p.forget_bias), peep, p.peepholes is not None, _limit(p.cell_clip),
                proj, p.projection is not None, _limit(p.proj_clip), x, _c(h0, dt),
                _c(c0, dt), m, has_mask, bool(reverse), bool(zero_output), o,
                out is not None, ho, co)
        threads.run_generic(generic.lstm_rows, generic.lstm_par, B, work, args)
    _put(out, o)
    _put(h_out, ho)
    _put(c_out, co)


def stream_split(packed, batch_size, h, c=None, steps=1, sequences=False):
    """A stream's calls of ``steps`` steps (a frame, or a chunk) of
    ``packed`` (one layer) on two cores, or ``None`` where the panel split
    cannot run them.

    Returns a :class:`.threads.StreamSplit` whose ``run(x)`` reads
    ``x (batch_size, steps, D)`` and updates the states ``h`` (and, for an
    LSTM, ``c``) in place: C-contiguous float32 ``(batch_size, units)``
    arrays kept for the object's life; with ``sequences`` every step's
    output goes to its buffer ``out (batch_size, steps, units)``. Runs the
    packed float32 LSTM (no projection) and GRU (``reset_after``) and every
    weight format of theirs (weights-only bfloat16 with an even input
    size); the dynamic formats' input is quantized, or rounded, into the
    split's input buffer at each call (:func:`._packed.load_inputs`).
    """
    B, T = int(batch_size), int(steps)
    if not _splittable(packed, B, h, c):
        return None
    D = np.asarray(packed.params.kernel).shape[0]
    xb, xs = _input_buffer(packed, B, T, D)
    out = np.zeros((B, T, packed.params.units), dtype=np.float32) if sequences else _NO_OUT
    return threads.StreamSplit(_split_args(packed, h, c, xb, out, bool(sequences), xs), D)


def _input_buffer(packed, B, T, D):
    """A split's input buffer for calls ``(B, T, D)`` of ``packed``, as the
    drivers read it, and its row scales: float32 ``(B, T, D)``; for
    int8_dynamic uint8, ``D`` padded to 4 with the zero point 128 (as
    ``_packed.quantize_inputs``); for bfloat16_dynamic uint16, ``D`` padded
    to even (as ``_packed.bfloat16_inputs``)."""
    q = packed.params.quantized
    mode = None if q is None else q.mode
    if mode == "int8_dynamic":
        return (np.full((B, T, (D + 3) // 4 * 4), 128, dtype=np.uint8),
                np.zeros(B * T, dtype=np.float32))
    if mode == "bfloat16_dynamic":
        return np.zeros((B, T, D + (D & 1)), dtype=np.uint16), _NO_XS
    return np.zeros((B, T, D), dtype=np.float32), _NO_XS


def stack_split(packs, batch_size, states, steps=1, sequences=False):
    """:func:`stream_split` for a stack: ``packs`` (two layers or more, one
    weight format), ``states`` a ``(h, c)`` pair per layer (``c`` ``None``
    for a GRU). Returns a :class:`.threads.StackSplit` (each layer's output
    buffer is the next one's input, or for the dynamic formats is quantized,
    or rounded, into the next one's input buffer; the last layer's ``out``
    buffer, with ``sequences``, holds every step's output), or ``None``."""
    B, T = int(batch_size), int(steps)
    modes = {None if p.params.quantized is None else p.params.quantized.mode for p in packs}
    if len(packs) < 2 or len(modes) != 1 or not all(
            _splittable(p, B, h, c) for p, (h, c) in zip(packs, states)):
        return None
    dynamic = modes <= set(DYNAMIC)
    D = np.asarray(packs[0].params.kernel).shape[0]
    xb, xs = _input_buffer(packs[0], B, T, D)
    layer_args = []
    for k, (p, (h, c)) in enumerate(zip(packs, states)):
        last = k == len(packs) - 1
        has_out = not last or bool(sequences)
        out = np.zeros((B, T, p.params.units), dtype=np.float32) if has_out else _NO_OUT
        layer_args.append(_split_args(p, h, c, xb, out, has_out, xs))
        if not last:
            xb, xs = _input_buffer(packs[k + 1], B, T, p.params.units) if dynamic else (out, xs)
    return threads.StackSplit(layer_args, D)


def _splittable(packed, B, h, c):
    """Whether the panel split runs a stream's calls of ``packed`` (see
    :func:`stream_split`) on the states ``h`` (and ``c``): every weight
    format (the dynamic ones' input is quantized, or rounded, into the
    split's input buffer at each call), bfloat16 with an even input size."""
    p = packed.params
    H = p.units
    mode = None if p.quantized is None else p.quantized.mode
    D = np.asarray(p.kernel).shape[0]
    states_ok = all(a is not None and a.dtype == np.float32 and a.flags.c_contiguous
                    and a.flags.writeable and a.shape == (B, H)
                    for a in ((h,) if p.kind == "gru" else (h, c)))
    return (packed.packed and threads._HAVE_FUTEX and B < threads._BATCH_SPLIT_MIN
            and H > _packed.LANES and states_ok
            and (mode in (None, "int8", "bfloat16") or mode in DYNAMIC)
            and not (mode == "bfloat16" and D % 2))


def _split_args(packed, h, c, xb, out, has_out, xs=_NO_XS):
    """The packed drivers' arguments of a split's calls: input buffer
    ``xb (B, T, D)`` (and its row scales ``xs``, int8_dynamic), states
    ``h``/``c`` read and written in place, every step's output to ``out``
    when ``has_out``."""
    p = packed.params
    H, T = p.units, xb.shape[1]
    io_tail = (_DUMMY_MASK, False, out, has_out)
    # a frame takes its input rows in the same k loop; a chunk of one row
    # takes its input sums for several steps per weight load (.packed)
    hoist = T > 1
    weights, gates = packed.fixed
    if p.kind == "gru":
        return (True, H, weights, gates, (xb, h, _NO_C) + io_tail + (h, _NO_C, xs),
                (False, False, hoist))
    return (False, H, weights, gates, (xb, h, c) + io_tail + (h, c, xs), (False, False, hoist))


# ---------------------------------------------------------------- warmup

#: What :func:`warmup` can compile, by name: the batch kernels of each layer
#: configuration, and the stream kernels (one per dtype runs every cell kind).
KINDS = ("lstm", "gru", "gru reset_after=False", "simple_rnn", "stream")


def _warm_params(kind, r, D, H):
    """The parameter record :func:`warmup` runs for ``kind`` (``r(*shape)``:
    random weights of the dtype being warmed)."""
    if kind in ("lstm", "stream"):  # one stream kernel per dtype runs every cell kind
        return LSTMParams(r(D, 4 * H), r(H, 4 * H), r(4 * H))
    if kind == "simple_rnn":
        return SimpleRNNParams(r(D, H), r(H, H), r(H))
    return GRUParams(r(D, 3 * H), r(H, 3 * H), r(2, 3 * H), reset_after=kind == "gru")


def warmup(dtypes=("float32", "float64"), parallel=True, kinds=KINDS, verbose=False,
           precisions=()):
    """Compile (or load from Numba's cache) the kernels of ``kinds`` in
    ``dtypes``: by default LSTM, GRU (both ``reset_after``), SimpleRNN and
    the stream kernels (frame, chunk with sequence output, chunk with last
    output); ``precisions`` adds the packed ``"lstm"`` / ``"gru"`` kernels
    and the stream kernels of those float32 weight formats.
    :func:`fastrnn.dispatch.warmup` documents the arguments.

    Returns the list of what was compiled or loaded, ``"<kind> <dtype>"``.
    """
    kinds = tuple(kinds)
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise ValueError(f"kinds: expected names from {KINDS}, got {unknown}")
    rng = np.random.default_rng(0)
    done = []
    # Each shape's call takes its threads through threads.warming, in this
    # thread only: the process-wide settings (set_num_threads, the work
    # thresholds, the contention period) are left alone, so calls in other
    # threads meanwhile run as they would, and a set_num_threads made
    # meanwhile holds.
    for dt in dtypes:
        name = np.dtype(dt).name
        D, H, T = 3, 20, 2

        def r(*shape):
            return (rng.standard_normal(shape) * 0.1).astype(dt)

        for kind in kinds:
            params = _warm_params(kind, r, D, H)
            if kind == "stream":
                stream.warmup(params)
                if np.dtype(dt) == np.float32:  # (compact weights are another type)
                    for mode in precisions:
                        stream.warmup(quantize(params, mode))
                x2 = r(2, D)  # Dense layers (model streams, small model calls)
                dense.dense_rows(x2, r(D, H), r(H), np.int64(0), np.empty((2, H), dt))
                done.append(f"{kind} {name}")
                if verbose:
                    print(f"warmup: {done[-1]}", file=sys.stderr)
                continue
            variants = [params]
            if np.dtype(dt) == np.float32 and kind in ("lstm", "gru"):
                variants += [quantize(params, mode) for mode in precisions]
            for params in variants:
                pk = pack(params)
                shapes = ((2, 1), (2, None), (threads._BATCH_SPLIT_MIN, None)) if parallel \
                    else ((2, 1),)
                for B, n in shapes:
                    x = r(B, T, D)
                    states = [np.zeros((B, s), dt) for s in state_sizes(params)]
                    outs = [np.empty_like(s) for s in states]
                    # n threads however small the call, and a busy machine
                    # (a starved call before) does not send it to one
                    # thread, which would leave the splits cold
                    with threads.warming(n):
                        run(sys.modules[__name__], pk, x, states, None, False, False,
                            np.empty((B, T, params.output_size), dt), outs)
                if parallel:  # a one-layer stream's frames on two cores
                    fs = stream_split(pk, 1, *[np.zeros((1, s), dt)
                                              for s in state_sizes(params)])
                    if fs is not None:
                        fs.compile()
                    if fs is not None and kind == "lstm":
                        # ... and a stack's (one build per weight format)
                        top = _warm_params(kind, r, H, H)
                        if params.quantized is not None:
                            top = quantize(top, params.quantized.mode)
                        layers = [(pk, params), (pack(top), top)]
                        ss = stack_split([p for p, _ in layers], 1, [
                            (np.zeros((1, q.units), dt), np.zeros((1, q.units), dt))
                            for _, q in layers])
                        if ss is not None:
                            ss.compile()
                done.append(f"{kind} {name}"
                            + (f" ({params.precision} weights)" if params.quantized else ""))
                if verbose:
                    print(f"warmup: {done[-1]}", file=sys.stderr)
    return done
