"""Packed kernels: weights in panels, register-blocked SIMD tiles.

Used by the CPU backend for float32 LSTM (no projection) and GRU with
``reset_after=True``, the configurations that carry nearly all real traffic;
everything else runs :mod:`.generic`. The panels hold float32 weights, or
the compact weights of :func:`fastrnn.kernels.quantize` (bfloat16 bit
patterns, int8 with column scales, int8_dynamic's groups of 4 int8, or
bfloat16_dynamic's pairs of bfloat16): the
format is the panels' dtype, and the tiles of :mod:`.tiles` are compiled for
it; everything here is written once for all of them.

Layout (built once by :func:`pack_lstm` / :func:`pack_gru`)
-----------------------------------------------------------
The units are cut into panels of 16 (the float32 vector width). Panel
``p`` holds, for its 16 units, the columns of every gate (LSTM **i, f, c,
o**: 64 columns; GRU **z, r, h**: 48), for ``K = D + H`` rows: first the
input kernel's ``D`` rows, then the recurrent kernel's ``H`` rows,
contiguous along ``k``. The input projection is therefore folded into each
step's ``k`` loop and nothing grows with ``T``. A unit count that is not a
multiple of 16 pads the last panel with zero columns; padded lanes are
computed and never read (but lane ``H`` of an odd ``H`` in weights-only
bfloat16, whose recurrent rows come in pairs: :func:`panel` zeroes it).
The tiles that run a panel for a few rows at a time, and the gate math
they end with, are in :mod:`.tiles`.

A single row with large weights (``hoist``) takes its input sums (bias +
``x W``) for runs of :data:`HOIST_STEPS` steps at a time, 6 steps per
weight load, into a buffer of ``NP x HOIST_STEPS x 64`` floats
(:func:`_hoisted`); each step then streams only the recurrent rows of the
panels. The sums run in the same order either way: same bits.

Reference counting: every helper below the drivers is compiled with
``_nrt=False``. Numba otherwise increments and decrements the reference
count of each array argument of every call that LLVM does not inline; each
is a locked atomic, and in the panel split both threads hit the same
counters, so the cache line bounces between the cores. The helpers
allocate nothing and keep no array beyond the call, so the arrays they are
handed (owned by the drivers) are safe without counting.

State lives in a private double buffer of ``2 x rows x Hp`` floats
(``Hp`` = units rounded up to 16): step ``s`` reads half ``s % 2`` and
writes the other; the cell state is updated in place (each lane only reads
its own).

Arguments of the drivers (tuples keep the signatures short):

``weights = (Wp, bp, peep, sp)``
    Panels, bias panels, peepholes (``(3, Hp)`` flat; zeros when unused),
    int8 scale panels (:data:`NO_SCALES` for the other formats).
``gates = (has_peep, cell_clip, act, ract)``
    ``cell_clip < 0``: no clip; activation codes of :mod:`fastrnn.activations`.
``io = (x, h0, c0, mask, has_mask, out, has_out, h_out, c_out, xs)``
    As in the kernel contract (:mod:`fastrnn.kernels`); ``c0``/``c_out``
    are ignored for a GRU, ``mask``/``out`` are dummies when their flag is
    false. int8_dynamic: ``x`` is the quantized input (:func:`quantize_inputs`,
    uint8 ``(B, T, D4)``) and ``xs`` its row scales; otherwise ``xs`` is a
    dummy.

int8_dynamic panels (:func:`pack_lstm` / :func:`pack_gru` with such
weights) are int32 arrays: one row per group of 4 ``k``, each element the 4
int8 weights of one column (see :mod:`.simd`, ``vdot``); the calls' record
then counts input and recurrent rows in groups (:func:`weight_rows`). Each
driver quantizes its rows' state at every step (:func:`quantize_state`) into
its own buffers ``hq`` / ``hs``. bfloat16_dynamic panels are uint32 arrays
the same way, one row per pair of ``k`` (see ``simd.bdot``); its input is
rounded to bfloat16 before the call (:func:`bfloat16_inputs`, uint16 ``(B,
T, D2)``, no scales) and the state at every step into a uint16 ``hq``.
Weights-only bfloat16 panels hold the same pairs as uint16 (two uint16 per
column and pair of ``k``, the lower ``k`` first): the tiles widen each pair
with one shift or mask (``simd.pair_lo`` / ``pair_hi``) where widening 16
bfloat16 at a time takes a shuffle and a shift, which is what bounds a
single row's ``k`` loop; the calls' record counts their rows padded to even, and
an odd input size gets a zero feature before the call (:func:`even_inputs`).
``opts = (reverse, zero_output, hoist)``
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange, types
from numba.extending import overload

from .fpenv import flush_denormals, restore_fp
from .simd import LANES, aligned64, f32_from_bits, vload, vstore, vzero
from .tiles import (gru_proj_1, gru_proj_6, gru_tile_1, gru_tile_2, gru_tile_4, gru_tile_6,
                    lstm_proj_1, lstm_proj_6, lstm_tile_1, lstm_tile_2, lstm_tile_4, lstm_tile_6)

#: Steps of one run of hoisted input sums (see the module docstring).
HOIST_STEPS = 24


# ---- one call's constants: built once per driver call ----

def is_dot(Wp):
    """Whether ``Wp`` holds int8_dynamic panels (a constant for Numba)."""
    raise NotImplementedError  # typed by the overload below


@overload(is_dot, inline="always")
def _ov_is_dot(Wp):
    dot = isinstance(Wp, types.Array) and Wp.dtype in (types.int32, types.uint32)
    return lambda Wp: dot


def weight_rows(Wp, n):
    """Panel rows of ``n`` k: ``n``, or groups of 4 for int8_dynamic panels,
    pairs for bfloat16_dynamic panels, ``n`` padded to even for weights-only
    bfloat16 panels (pairs of uint16 rows)."""
    raise NotImplementedError  # typed by the overload below


@overload(weight_rows, inline="always")
def _ov_weight_rows(Wp, n):
    if isinstance(Wp, types.Array) and Wp.dtype == types.int32:
        return lambda Wp, n: (n + 3) // 4
    if isinstance(Wp, types.Array) and Wp.dtype == types.uint32:
        return lambda Wp, n: (n + 1) // 2
    if isinstance(Wp, types.Array) and Wp.dtype == types.uint16:
        return lambda Wp, n: n + (n & 1)  # in pairs: padded to even
    return lambda Wp, n: n


@njit(inline="always")
def call_record(gru, H, weights, gates, io, opts, P, qa):
    """``(gru, Wp, bp, peep, sp, has_peep, cell_clip, act, ract, T, D, H, Hp,
    xf, mask, has_mask, out, has_out, zero_output, hoist, reverse, P, qa)``:
    what every panel of a call needs, in one record (``D``: panel rows of
    the input; ``qa = (xs, hq, hs)``: int8_dynamic's scales and quantized
    state, dummies otherwise)."""
    Wp, bp, peep, sp = weights
    has_peep, cell_clip, act, ract = gates
    x, h0, c0, mask, has_mask, out, has_out, h_out, c_out, xs = io
    reverse, zero_output, hoist = opts
    B, T, D = x.shape
    Hp = (H + LANES - 1) // LANES * LANES
    return (gru, Wp, bp, peep, sp, has_peep, cell_clip, act, ract, T, weight_rows(Wp, D), H,
            Hp, x.reshape(x.size), mask, has_mask, out, has_out, zero_output, hoist, reverse, P,
            qa)


# ---- the input projection, hoisted for a single row with large weights ----

@njit(nogil=True, _nrt=False)
def _hoisted(call, p, b, t):
    """Where in ``P`` panel ``p``'s input sums for step ``t`` of row ``b``
    lie; at the first step of each run of HOIST_STEPS steps, computes them
    for the whole run first (6 steps per weight load)."""
    (gru, Wp, bp, peep, sp, has_peep, cell_clip, act, ract, T, D, H, Hp, xf,
     mask, has_mask, out, has_out, zero_output, hoist, reverse, P, qa) = call
    s = T - 1 - t if reverse else t
    tl = s % HOIST_STEPS
    base = p * HOIST_STEPS * 64
    if tl == 0:
        W = (Wp, p * (D + weight_rows(Wp, H)) * (48 if gru else 64), 0, sp,
             p * (256 if is_dot(Wp) else 128))
        bias = (bp, p * 64)
        m = min(HOIST_STEPS, T - s)
        d = -D if reverse else D
        x0 = (b * T + t) * D
        j = 0
        while m - j >= 6:
            x = (xf, D, (x0 + d * j, x0 + d * (j + 1), x0 + d * (j + 2), x0 + d * (j + 3),
                         x0 + d * (j + 4), x0 + d * (j + 5)), qa)
            po = (base + 64 * j, base + 64 * (j + 1), base + 64 * (j + 2), base + 64 * (j + 3),
                  base + 64 * (j + 4), base + 64 * (j + 5))
            if gru:
                gru_proj_6(W, bias, x, P, po)
            else:
                lstm_proj_6(W, bias, x, P, po)
            j += 6
        while j < m:
            x = (xf, D, (x0 + d * j,), qa)
            if gru:
                gru_proj_1(W, bias, x, P, (base + 64 * j,))
            else:
                lstm_proj_1(W, bias, x, P, (base + 64 * j,))
            j += 1
    return base + tl * 64


# ---- one panel of one step, every row of a row range ----

@njit(nogil=True, _nrt=False)
def panel(call, p, pn, r0, n, t, hf, cb, cur, nxt, valid, started):
    """Units ``16p .. 16p+15`` of rows ``r0 .. r0+n-1`` at step ``t``: the
    products, the gate math, the new state, and those units' outputs.
    ``pn`` is the panel to prefetch for next."""
    (gru, Wp, bp, peep, sp, has_peep, cell_clip, act, ract, T, D, H, Hp, xf,
     mask, has_mask, out, has_out, zero_output, hoist, reverse, P, qa) = call
    KP = D + weight_rows(Wp, H)
    G = 48 if gru else 64
    pu = p * LANES
    bias = (bp, p * 64)
    state = (hf, cb, cur, nxt)
    cfg = (pu, H, Hp, peep, has_peep, cell_clip, act, ract)
    wbase = p * KP * G
    pfb = pn * KP * G
    # each multi-row tile prefetches one share of the next panel, one cache
    # line per k: a third (GRU) or a quarter (LSTM) of its columns in
    # float32, a half or all of them in bfloat16 or int8
    per_line = 64 // Wp.itemsize
    shares = (G * Wp.itemsize + 63) // 64
    so = p * (256 if is_dot(Wp) else 128)
    r = 0
    tile = 0
    # 6-row tiles, unless what is left would end in a 2-row tile (8, 9 -> 4+4, 4+4+1)
    while n - r >= 6 and n - r != 8 and n - r != 9:
        b = r0 + r
        W = (Wp, wbase, pfb + (tile % shares) * KP * per_line, sp, so)
        x = (xf, D, ((b * T + t) * D, ((b + 1) * T + t) * D, ((b + 2) * T + t) * D,
                     ((b + 3) * T + t) * D, ((b + 4) * T + t) * D, ((b + 5) * T + t) * D), qa)
        rows = ((r * Hp, (r + 1) * Hp, (r + 2) * Hp, (r + 3) * Hp, (r + 4) * Hp, (r + 5) * Hp),
                (valid[r], valid[r + 1], valid[r + 2], valid[r + 3], valid[r + 4], valid[r + 5]))
        if gru:
            gru_tile_6(W, bias, x, state, rows, cfg)
        else:
            lstm_tile_6(W, bias, x, state, rows, cfg)
        r += 6
        tile += 1
    while r + 4 <= n:
        b = r0 + r
        W = (Wp, wbase, pfb + (tile % shares) * KP * per_line, sp, so)
        x = (xf, D, ((b * T + t) * D, ((b + 1) * T + t) * D, ((b + 2) * T + t) * D,
                     ((b + 3) * T + t) * D), qa)
        rows = ((r * Hp, (r + 1) * Hp, (r + 2) * Hp, (r + 3) * Hp),
                (valid[r], valid[r + 1], valid[r + 2], valid[r + 3]))
        if gru:
            gru_tile_4(W, bias, x, state, rows, cfg)
        else:
            lstm_tile_4(W, bias, x, state, rows, cfg)
        r += 4
        tile += 1
    while r + 2 <= n:
        b = r0 + r
        W = (Wp, wbase, 0, sp, so)
        x = (xf, D, ((b * T + t) * D, ((b + 1) * T + t) * D), qa)
        rows = ((r * Hp, (r + 1) * Hp), (valid[r], valid[r + 1]))
        if gru:
            gru_tile_2(W, bias, x, state, rows, cfg)
        else:
            lstm_tile_2(W, bias, x, state, rows, cfg)
        r += 2
    if hoist and n == 1:
        # the input sums come from P: only the recurrent rows
        W = (Wp, wbase + D * G, 0, sp, so)
        hb = (P, _hoisted(call, p, r0, t))
        # typed zeros: a literal 0 would compile a second copy of the
        # 1-row tile and its gate math for this call alone
        x = (xf, np.int64(0), (np.int64(0),), qa)
        rows = ((np.int64(0),), (valid[0],))
        if gru:
            gru_tile_1(W, hb, x, state, rows, cfg)
        else:
            lstm_tile_1(W, hb, x, state, rows, cfg)
    elif r < n:
        b = r0 + r
        W = (Wp, wbase, 0, sp, so)
        x = (xf, D, ((b * T + t) * D,), qa)
        rows = ((r * Hp,), (valid[r],))
        if gru:
            gru_tile_1(W, bias, x, state, rows, cfg)
        else:
            lstm_tile_1(W, bias, x, state, rows, cfg)
    if Wp.itemsize == 2 and H & 1 and pu + LANES > H:
        # weights-only bfloat16 reads the recurrent rows in pairs, so the
        # next step reads padded lane H (times a zero row): keep it 0, not
        # whatever an inf input made of it (inf * 0 there is NaN)
        for rr in range(n):
            hf[nxt + rr * Hp + H] = 0.0
    if has_out:
        # ``out`` is C-contiguous (the backend makes sure): a full panel is
        # one vector store at flat offset ((b * T + t) * H + pu)
        jend = min(H, pu + LANES)
        full = jend - pu == LANES
        for r in range(n):
            b = r0 + r
            if valid[r] or (started[r] and not zero_output):
                base = nxt + r * Hp
                if full:
                    vstore(out, (b * T + t) * H + pu, vload(hf, base + pu))
                else:
                    for j in range(pu, jend):
                        out[b, t, j] = hf[base + j]
            elif full:  # masked: zeros before the first processed step or when asked
                vstore(out, (b * T + t) * H + pu, vzero(out))
            else:
                for j in range(pu, jend):
                    out[b, t, j] = 0.0


@njit(inline="always")
def load_state(gru, r0, n, H, Hp, h0, c0, hf, cb):
    for r in range(n):
        for j in range(H):
            hf[r * Hp + j] = h0[r0 + r, j]
            if not gru:
                cb[r * Hp + j] = c0[r0 + r, j]


@njit(inline="always")
def store_state(gru, r0, n, T, H, Hp, hf, cb, h_out, c_out):
    last = (T & 1) * n * Hp
    for r in range(n):
        for j in range(H):
            h_out[r0 + r, j] = hf[last + r * Hp + j]
            if not gru:
                c_out[r0 + r, j] = cb[r * Hp + j]


@njit(inline="always")
def step_flags(r0, n, t, mask, has_mask, valid):
    for r in range(n):
        valid[r] = (not has_mask) or mask[r0 + r, t]


# ---- int8_dynamic: activations quantized per row (fastrnn.kernels.quantize) ----

@njit(nogil=True, error_model="numpy", fastmath=False)  # (see the docstring)
def _row_inverse(m):
    """``127 / m`` for a row's largest magnitude ``m`` (finite, not zero),
    rounded once, whatever the fast-math flags of the kernel calling
    :func:`_quantize_row`: under ``arcp`` (the stream kernels') the division
    may become ``127 * (1 / m)``, and ``1 / m`` is subnormal, so flushed to
    zero, for ``m`` above ``2**126``: the row would quantize to zeros. A call,
    not inlined by Numba, keeps this function's own flags; ``fastmath=False``
    is explicit because a function that leaves it unset inherits its
    caller's."""
    return np.float32(127.0) / m


@njit(inline="always")
def _quantize_row(src, s0, K, dst, d0):
    """Quantize ``src[s0 : s0 + K]`` (float32) into ``dst[d0 : d0 + K]``
    (uint8, value + 128); returns the row's scale (0 for a zero row, NaN
    for one holding NaN or inf). float32 arithmetic, ties to even, as
    :func:`fastrnn.kernels.quantize_rows`.

    The largest magnitude is found as the largest of the values' bit
    patterns with the sign cleared (they order as the magnitudes do, and
    inf's and NaN's lie above every finite one's): an integer maximum,
    which LLVM turns into vector code, where a float maximum that must
    notice NaN stays one value at a time.

    The loops index slices from 0 (see :func:`_bfloat16_row`)."""
    row = src[s0:s0 + K]
    out = dst[d0:d0 + K]
    su = row.view(np.uint32)
    mb = np.uint32(0)
    for k in range(K):
        mb = max(mb, np.uint32(su[k] & np.uint32(0x7FFFFFFF)))
    if mb == 0 or mb >= np.uint32(0x7F800000):  # all zero; or NaN or inf
        for k in range(K):
            out[k] = 128
        return np.float32(0.0) if mb == 0 else np.float32(np.nan)
    m = f32_from_bits(mb)
    inv = _row_inverse(m)
    for k in range(K):
        q = np.rint(row[k] * inv)
        q = min(max(q, np.float32(-127.0)), np.float32(127.0))
        out[k] = np.uint8(np.int32(q) + 128)
    return m / np.float32(127.0)


@njit(cache=True, nogil=True)
def quantize_inputs(x):
    """``x (B, T, D)`` float32 -> ``(xq uint8 (B, T, D4), xs float32 (B*T,))``:
    each row of each step quantized (D4: D rounded up to 4, padded with the
    zero point 128), by :func:`load_inputs`."""
    B, T, D = x.shape
    xq = np.full((B, T, (D + 3) // 4 * 4), 128, dtype=np.uint8)
    xs = np.empty(B * T, dtype=np.float32)
    load_inputs(x, xq, xs)
    return xq, xs


@njit(inline="always")
def _bfloat16_row(src, s0, K, dst, d0):
    """``src[s0 : s0 + K]`` (float32, viewed as uint32 bits) rounded to
    bfloat16 (ties to even, NaN kept) into ``dst[d0 : d0 + K]`` (uint16), as
    :func:`fastrnn.kernels.bfloat16_values`.

    The loop indexes slices from 0: an index ``s0 + k`` of unknown sign
    keeps Numba's wraparound for negative indices, and LLVM then reads the
    values one gather lane at a time (about 10x slower)."""
    row = src[s0:s0 + K]
    out = dst[d0:d0 + K]
    for k in range(K):
        u = np.int64(row[k])
        r = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
        if (u & 0x7FFFFFFF) > 0x7F800000:  # NaN: keep it (quiet)
            r = (u >> 16) | 0x40
        out[k] = np.uint16(r & 0xFFFF)


def load_inputs(x, xb, xs):
    """A call's input ``x (B, T, D)`` (float32, C-contiguous) into a split's
    input buffer ``xb (B, T, Dp)``, as the drivers read it: float32, copied
    (``Dp == D``); uint8, each row of each step quantized as
    :func:`quantize_inputs` (int8_dynamic; scales to ``xs[b * T + t]``,
    the padding left at 128); uint16, rounded to bfloat16 as
    :func:`bfloat16_inputs` (bfloat16_dynamic; the padding left at 0)."""
    raise NotImplementedError  # typed by the overload below


@overload(load_inputs, inline="always")
def _ov_load_inputs(x, xb, xs):
    if xb.dtype == types.uint8:
        def quantized(x, xb, xs):
            B, T, D = x.shape
            Dp = xb.shape[2]
            xf = x.reshape(x.size)
            qf = xb.reshape(xb.size)
            for i in range(B * T):
                xs[i] = _quantize_row(xf, i * D, D, qf, i * Dp)
        return quantized
    if xb.dtype == types.uint16:
        def rounded(x, xb, xs):
            B, T, D = x.shape
            Dp = xb.shape[2]
            xu = x.reshape(x.size).view(np.uint32)
            qf = xb.reshape(xb.size)
            for i in range(B * T):
                _bfloat16_row(xu, i * D, D, qf, i * Dp)
        return rounded

    def copied(x, xb, xs):
        B, T, D = x.shape
        for r in range(B):
            for t in range(T):
                for k in range(D):
                    xb[r, t, k] = x[r, t, k]
    return copied


def state_buffers(Wp, n, Hp):
    """A driver's rounded state ``hq`` and its row scales ``hs``: for
    int8_dynamic panels uint8 (``n`` rows of ``Hp``) and ``n`` scales; for
    bfloat16_dynamic panels uint16 (``n`` rows of ``Hp``) and a dummy;
    one-element dummies otherwise."""
    raise NotImplementedError  # typed by the overload below


@overload(state_buffers, inline="always")
def _ov_state_buffers(Wp, n, Hp):
    if Wp.dtype == types.int32:
        return lambda Wp, n, Hp: (np.full(n * Hp, 128, dtype=np.uint8),
                                  np.zeros(n, dtype=np.float32))
    if Wp.dtype == types.uint32:
        return lambda Wp, n, Hp: (np.zeros(n * Hp, dtype=np.uint16),
                                  np.zeros(1, dtype=np.float32))
    return lambda Wp, n, Hp: (np.full(1, 128, dtype=np.uint8), np.zeros(1, dtype=np.float32))


@njit(nogil=True, _nrt=False)
def quantize_state(hf, cur, n, H, Hp, hq, hs):
    """Each row's state ``hf[cur + r*Hp :][:H]`` rounded into ``hq[r*Hp:]``:
    int8 (uint8 ``hq``, scale ``hs[r]``) or bfloat16 (uint16 ``hq``)."""
    _round_state(hf, cur, n, H, Hp, hq, hs)


def _round_state(hf, cur, n, H, Hp, hq, hs):
    raise NotImplementedError  # typed by the overload below


@overload(_round_state, inline="always")
def _ov_round_state(hf, cur, n, H, Hp, hq, hs):
    if hq.dtype == types.uint16:
        def rounded(hf, cur, n, H, Hp, hq, hs):
            hu = hf.view(np.uint32)
            for r in range(n):
                _bfloat16_row(hu, cur + r * Hp, H, hq, r * Hp)
        return rounded

    def quantized(hf, cur, n, H, Hp, hq, hs):
        for r in range(n):
            hs[r] = _quantize_row(hf, cur + r * Hp, H, hq, r * Hp)
    return quantized


@njit(cache=True, nogil=True)
def bfloat16_inputs(x):
    """``x (B, T, D)`` float32 -> ``(xq uint16 (B, T, D2), dummy scales)``:
    each value rounded to bfloat16 (D2: D rounded up to even, padded with 0),
    by :func:`load_inputs`."""
    B, T, D = x.shape
    xq = np.zeros((B, T, D + (D & 1)), dtype=np.uint16)
    xs = np.zeros(1, dtype=np.float32)
    load_inputs(np.ascontiguousarray(x), xq, xs)
    return xq, xs


@njit(inline="always")
def hoist_size(H, hoist, rows):
    """Length of the hoisted-sums buffer ``P`` (a dummy unless one row hoists)."""
    NP = (H + LANES - 1) // LANES
    return NP * HOIST_STEPS * 64 if hoist and rows == 1 else LANES


# ---- drivers ----


@njit(cache=True, nogil=True)
def run_rows(r0, r1, gru, H, weights, gates, io, opts):
    """Rows ``r0 .. r1-1`` for the whole sequence on the calling thread
    (``gru``: GRU with reset_after, else LSTM), subnormals flushed (:mod:`.fpenv`)."""
    x, h0, c0, mask, has_mask, out, has_out, h_out, c_out, xs = io
    reverse, zero_output, hoist = opts
    T = x.shape[1]
    NP = (H + LANES - 1) // LANES
    Hp = NP * LANES
    n = r1 - r0
    hf = np.zeros(2 * n * Hp, dtype=np.float32)
    cb = np.zeros(n * Hp, dtype=np.float32)
    started = np.zeros(n, dtype=np.bool_)
    valid = np.ones(n, dtype=np.bool_)
    hoist = hoist and n == 1
    P = np.empty(hoist_size(H, hoist, n), dtype=np.float32)
    dot = is_dot(weights[0])
    hq, hs = state_buffers(weights[0], n, Hp)
    call = call_record(gru, H, weights, gates, io, (reverse, zero_output, hoist), P, (xs, hq, hs))
    fpu = flush_denormals()  # this thread, until the end (see .fpenv)
    load_state(gru, r0, n, H, Hp, h0, c0, hf, cb)
    for s in range(T):
        t = T - 1 - s if reverse else s
        cur = (s & 1) * n * Hp
        nxt = n * Hp - cur
        if dot:
            quantize_state(hf, cur, n, H, Hp, hq, hs)
        step_flags(r0, n, t, mask, has_mask, valid)
        for p in range(NP):
            panel(call, p, (p + 1) % NP, r0, n, t, hf, cb, cur, nxt, valid, started)
        for r in range(n):
            started[r] = started[r] or valid[r]
    store_state(gru, r0, n, T, H, Hp, hf, cb, h_out, c_out)
    restore_fp(fpu)


@njit(cache=True, nogil=True, parallel=True)
def run_rows_par(bounds, gru, H, weights, gates, io, opts):
    """Batch split: thread ``c`` runs rows ``bounds[c] .. bounds[c+1]-1`` for
    the whole sequence. Rows never interact, so the threads never wait."""
    for c in prange(bounds.shape[0] - 1):
        run_rows(bounds[c], bounds[c + 1], gru, H, weights, gates, io, opts)


# ---- packing (NumPy, once per weight set) ----


def _panels(blocks, H, ncols_per_gate):
    """Stack ``blocks`` (each (K_i, G*H), gate-major, one dtype) into panels
    of 16 units.

    Returns a flat array of the blocks' dtype (float32 values, bfloat16 bit
    patterns or int8) indexed ``[p, k, g, lane]``.
    """
    G = ncols_per_gate
    NP = (H + LANES - 1) // LANES
    Hp = NP * LANES
    K = sum(b.shape[0] for b in blocks)
    full = np.concatenate([np.asarray(b) for b in blocks], axis=0)
    padded = np.zeros((K, G, Hp), dtype=full.dtype)
    padded[:, :, :H] = full.reshape(K, G, H)
    # (K, G, NP, 16) -> (NP, K, G, 16), on a 64-byte boundary
    return aligned64(padded.reshape(K, G, NP, LANES).transpose(2, 0, 1, 3).reshape(-1))


def _bias_panels(vectors, H):
    """``vectors`` (4 arrays of H) -> flat (NP, 4, 16) float32."""
    NP = (H + LANES - 1) // LANES
    Hp = NP * LANES
    b = np.zeros((4, Hp), dtype=np.float32)
    for g, v in enumerate(vectors):
        b[g, :H] = v
    return aligned64(b.reshape(4, NP, LANES).transpose(1, 0, 2).reshape(-1))


#: The scale panels of float32 and bfloat16 weights (unused by their tiles).
NO_SCALES = aligned64(np.zeros(LANES, dtype=np.float32))


def _scale_panels(quantized, H, G):
    """int8 column scales -> flat (NP, 2, 64) float32: per panel the input
    kernel's scales of its ``G`` gate vectors, then the recurrent kernel's."""
    if quantized is None or quantized.mode.startswith("bfloat16"):
        return NO_SCALES
    NP = (H + LANES - 1) // LANES
    Hp = NP * LANES
    s = np.zeros((2, 4, Hp), dtype=np.float32)
    for m, scale in enumerate((quantized.kernel_scale, quantized.recurrent_scale)):
        s[m, :G, :H] = np.asarray(scale, np.float32).reshape(G, H)
    return aligned64(s.reshape(2, 4, NP, LANES).transpose(2, 0, 1, 3).reshape(-1))


def _grouped_panels(blocks, H, G, narrow, wide):
    """Narrow ``blocks`` (each (K_i, G*H), dtype ``narrow``) -> panels of
    ``wide`` elements indexed ``[p, kg, g, lane]``, each element the ``n =
    wide.itemsize // narrow.itemsize`` weights of ``k = n kg .. n kg + n - 1``
    of one column, lowest ``k`` in the lowest bits (``K_i`` padded with zero
    rows to a multiple of ``n``); a block's groups follow the previous
    block's. int8_dynamic: int8 in int32 (4 k); bfloat16_dynamic: bfloat16
    bits (uint16) in uint32 (2 k)."""
    n = np.dtype(wide).itemsize // np.dtype(narrow).itemsize
    NP = (H + LANES - 1) // LANES
    Hp = NP * LANES
    parts = []
    for b in blocks:
        K = b.shape[0]
        Kn = (K + n - 1) // n * n
        padded = np.zeros((Kn, G, Hp), dtype=narrow)
        padded[:K, :, :H] = np.asarray(b, narrow).reshape(K, G, H)
        # (Kn/n, n, G, NP, 16) -> (NP, Kn/n, G, 16, n): n k per lane
        grouped = padded.reshape(Kn // n, n, G, NP, LANES).transpose(3, 0, 2, 4, 1)
        parts.append(np.ascontiguousarray(grouped).view(wide)[..., 0])
    return aligned64(np.concatenate(parts, axis=1).reshape(-1))


def _dot_scale_panels(quantized, H, G):
    """int8_dynamic scale panels: flat (NP, 256) float32: per panel the input
    and the recurrent column scales (64 each), then, as int32 bits, 128 x
    each column's sum of int8 weights (the zero point of the uint8
    activations), input then recurrent."""
    NP = (H + LANES - 1) // LANES
    Hp = NP * LANES
    s = np.zeros((2, 4, Hp), dtype=np.float32)
    c = np.zeros((2, 4, Hp), dtype=np.int32)
    for m, (q, scale) in enumerate(((quantized.kernel, quantized.kernel_scale),
                                    (quantized.recurrent_kernel, quantized.recurrent_scale))):
        s[m, :G, :H] = np.asarray(scale, np.float32).reshape(G, H)
        c[m, :G, :H] = 128 * np.asarray(q, np.int32).sum(axis=0).reshape(G, H)
    per_panel = lambda a: a.reshape(2, 4, NP, LANES).transpose(2, 0, 1, 3).reshape(NP, 128)  # noqa: E731
    out = np.concatenate([per_panel(s), per_panel(c).view(np.float32)], axis=1)
    return aligned64(out.reshape(-1))


def _matrices(kernel, recurrent_kernel, quantized):
    """The two matrices in the format the panels hold."""
    if quantized is None:
        return np.asarray(kernel, np.float32), np.asarray(recurrent_kernel, np.float32)
    return quantized.kernel, quantized.recurrent_kernel


def _layout(mats, H, G, mode):
    """The panels of ``mats`` for weights of ``mode`` (None: float32)."""
    if mode == "int8_dynamic":
        return _grouped_panels(mats, H, G, np.int8, np.int32)
    if mode == "bfloat16_dynamic":
        return _grouped_panels(mats, H, G, np.uint16, np.uint32)
    if mode == "bfloat16":  # the same pairs, as uint16 (the tiles widen them in registers)
        return _grouped_panels(mats, H, G, np.uint16, np.uint32).view(np.uint16)
    return _panels(mats, H, G)


def even_inputs(x):
    """``x (B, T, D)`` with a zero feature added when ``D`` is odd: weights-only
    bfloat16 panels take the input k two at a time."""
    if x.shape[2] % 2 == 0:
        return x
    return np.concatenate([x, np.zeros(x.shape[:2] + (1,), x.dtype)], axis=2)


def pack_lstm(kernel, recurrent_kernel, bias, forget_bias, peepholes, quantized=None):
    """``(Wp, bp, peep, sp)``: panels (float32, or the compact arrays of
    ``quantized``, :class:`fastrnn.kernels.QuantizedWeights`), bias panels,
    peepholes, int8 scale panels."""
    H = recurrent_kernel.shape[1] // 4
    Hp = (H + LANES - 1) // LANES * LANES
    mode = quantized.mode if quantized is not None else None
    dot = mode == "int8_dynamic"
    mats = _matrices(kernel, recurrent_kernel, quantized)
    Wp = _layout(mats, H, 4, mode)
    b = np.asarray(bias, dtype=np.float64)
    bp = _bias_panels([b[:H], b[H:2 * H] + forget_bias, b[2 * H:3 * H], b[3 * H:]], H)
    peep = np.zeros(3 * Hp, dtype=np.float32)
    if peepholes is not None:
        for g in range(3):
            peep[g * Hp:g * Hp + H] = peepholes[g]
    sp = _dot_scale_panels(quantized, H, 4) if dot else _scale_panels(quantized, H, 4)
    return Wp, bp, aligned64(peep), sp


def pack_gru(kernel, recurrent_kernel, bias, quantized=None):
    """``(Wp, bp, sp)``: as :func:`pack_lstm`, for a GRU with ``reset_after``."""
    H = recurrent_kernel.shape[0]
    mode = quantized.mode if quantized is not None else None
    dot = mode == "int8_dynamic"
    mats = _matrices(kernel, recurrent_kernel, quantized)
    Wp = _layout(mats, H, 3, mode)
    bias = np.asarray(bias, dtype=np.float64)
    b_in, b_rec = bias[0], bias[1]
    bp = _bias_panels([b_in[:H] + b_rec[:H], b_in[H:2 * H] + b_rec[H:2 * H],
                       b_in[2 * H:], b_rec[2 * H:]], H)
    return Wp, bp, _dot_scale_panels(quantized, H, 3) if dot else _scale_panels(quantized, H, 3)
