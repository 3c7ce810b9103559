"""Generic CPU kernels: every variant, float32 and float64, a block of rows at a time.

These run whatever the packed float32 kernels (:mod:`.packed`) do not:
float64, SimpleRNN, GRU with ``reset_after=False``, LSTM with a projection,
and any machine where the packed path is switched off. Each function runs
the whole sequence of batch rows ``r0 .. r1-1``, four rows at a time (the
last few one by one): each weight vector read serves every row of the
block (see ``_mv``), and a row's products are summed in one order however
it is blocked, so a sequence gives the same bits at any position of any
batch. Rows are independent, so the parallel wrappers split the batch
between threads and never meet.

The input projection is folded into each step (``k`` over the input
features, then over the state), so no buffer grows with ``T``. Products
are fused multiply-adds on the SIMD vectors of :mod:`.simd`. The gate
math of float32 runs on the same vectors (:mod:`.gates`), a vector of
units at a time (the last, partial one loaded and stored lane by lane): as
scalars, ``math.tanh`` alone took more than half of a float32 SimpleRNN's
time. float64 keeps the scalar forms of the gate math (its vector
activations would run lane by lane anyway, and slower).

Gate orders are Keras's: LSTM i, f, c, o; GRU z, r, h. Each ``*_rows``
flushes subnormals to zero on its thread for its duration (:mod:`.fpenv`),
so the parallel wrappers' threads do too. Optional arguments
arrive as dummies plus a flag (``has_mask``, ``has_out``...), so one compiled
kernel serves every call of one dtype. Clip limits below zero mean no clip.
"""

from __future__ import annotations

import numpy as np
from numba import get_thread_id, njit, prange, types
from numba.extending import overload

from .fpenv import flush_denormals, restore_fp
from .gates import activate, gru_reset_input, gru_row, lstm_update
from .gates import scalar_activate as s_activate
from .gates import scalar_clip as clip
from .gates import scalar_gru_reset as s_gru_reset
from .gates import scalar_gru_update as s_gru_update
from .gates import scalar_lstm_update as s_lstm_update
from .simd import (sload, vfma, vget, vlanes, vload, vload_part, vsplat, vstore,
                   vstore_part)
from .sync import current_cpu, thread_id


@njit(inline="always")
def _emit(out, b, t, h, n, masked, zero_output, started):
    # Output at step t of row b: the new state, or (masked) the previous
    # output: zeros before the first processed step or with zero_output.
    if masked and (zero_output or not started):
        for j in range(n):
            out[b, t, j] = 0.0
    else:
        for j in range(n):
            out[b, t, j] = h[j]


# ---- products: a block of rows at a time ----
#
# acc[r, c] += sum_k V[r, voff + k] * M[k, c] for the rows r of a block and
# the columns c0 <= c < c1, on flat arrays (acc: rows of N, V: rows of KV,
# M: K rows of N). Each column of each row is one chain of fused
# multiply-adds, k ascending, from the value in acc: the same bits for a
# row whichever block height computes it, and in any batch.
#
# The k loop is cut into groups (4 k for a block of 4 rows, 8 for one row)
# whose multipliers sit in registers while the group sweeps the columns a
# vector at a time: the weights are read a few whole rows at a time, in
# order, as the hardware prefetchers expect (a run of columns down all of
# M would touch a new page at every k once M outgrows L2), and each weight
# vector loaded serves every row of the block. The
# last columns that do not fill a vector are computed as the vector ending
# at c1 (its other lanes, columns done already, are dropped), so every load
# is a whole vector; a range narrower than a vector goes lane by lane.


@njit(inline="always")
def _put(acc, i, v, keep):
    """Store the last ``keep`` lanes of ``v`` at their place from flat ``i``
    (the whole vector when ``keep`` is its width)."""
    L = vlanes(v)
    if keep == L:
        vstore(acc, i, v)
    else:
        for q in range(L - keep, L):
            acc[i + q] = vget(v, q)


@njit(inline="always")
def _put4(acc, N, e, a0, a1, a2, a3, keep):
    """:func:`_put` for the 4 rows of a block (rows ``N`` apart)."""
    _put(acc, e, a0, keep)
    _put(acc, N + e, a1, keep)
    _put(acc, 2 * N + e, a2, keep)
    _put(acc, 3 * N + e, a3, keep)


@njit(inline="always")
def _chain4(a, s0, s1, s2, s3, M, w, N):
    """``a`` + 4 products down a column of M from flat ``w``, in order."""
    a = vfma(s0, vload(M, w), a)
    a = vfma(s1, vload(M, w + N), a)
    a = vfma(s2, vload(M, w + 2 * N), a)
    return vfma(s3, vload(M, w + 3 * N), a)


@njit(nogil=True, _nrt=False)
def _mv4(acc, N, V, KV, voff, M, K, c0, c1):
    """The product for 4 rows, 4 k at a time (one k for the last few)."""
    L = _lanes(acc)
    if c1 - c0 < L:  # narrower than a vector: lane by lane
        for r in range(4):
            _mv_lanes(acc, r * N, V, r * KV + voff, M, N, K, c0, c1)
        return
    k = 0
    while k < K:
        if K - k >= 4:
            v0, v1, v2, v3 = voff + k, KV + voff + k, 2 * KV + voff + k, 3 * KV + voff + k
            s00, s01, s02, s03 = vsplat(sload(V, v0)), vsplat(sload(V, v0 + 1)), \
                vsplat(sload(V, v0 + 2)), vsplat(sload(V, v0 + 3))
            s10, s11, s12, s13 = vsplat(sload(V, v1)), vsplat(sload(V, v1 + 1)), \
                vsplat(sload(V, v1 + 2)), vsplat(sload(V, v1 + 3))
            s20, s21, s22, s23 = vsplat(sload(V, v2)), vsplat(sload(V, v2 + 1)), \
                vsplat(sload(V, v2 + 2)), vsplat(sload(V, v2 + 3))
            s30, s31, s32, s33 = vsplat(sload(V, v3)), vsplat(sload(V, v3 + 1)), \
                vsplat(sload(V, v3 + 2)), vsplat(sload(V, v3 + 3))
            c = c0
            while c < c1:
                keep = min(L, c1 - c)
                e = c + keep - L  # the vector ending at c + keep
                w = k * N + e
                a0 = _chain4(vload(acc, e), s00, s01, s02, s03, M, w, N)
                a1 = _chain4(vload(acc, N + e), s10, s11, s12, s13, M, w, N)
                a2 = _chain4(vload(acc, 2 * N + e), s20, s21, s22, s23, M, w, N)
                a3 = _chain4(vload(acc, 3 * N + e), s30, s31, s32, s33, M, w, N)
                _put4(acc, N, e, a0, a1, a2, a3, keep)
                c += keep
            k += 4
        else:
            s0, s1 = vsplat(sload(V, voff + k)), vsplat(sload(V, KV + voff + k))
            s2, s3 = vsplat(sload(V, 2 * KV + voff + k)), vsplat(sload(V, 3 * KV + voff + k))
            c = c0
            while c < c1:
                keep = min(L, c1 - c)
                e = c + keep - L
                m = vload(M, k * N + e)
                _put4(acc, N, e, vfma(s0, m, vload(acc, e)), vfma(s1, m, vload(acc, N + e)),
                      vfma(s2, m, vload(acc, 2 * N + e)), vfma(s3, m, vload(acc, 3 * N + e)),
                      keep)
                c += keep
            k += 1


@njit(nogil=True, _nrt=False)
def _mv1(acc, N, V, KV, voff, M, K, c0, c1):
    """The product for one row, 8 k at a time (one k for the last few)."""
    L = _lanes(acc)
    if c1 - c0 < L:
        _mv_lanes(acc, 0, V, voff, M, N, K, c0, c1)
        return
    k = 0
    while k < K:
        if K - k >= 8:
            v = voff + k
            s0, s1, s2, s3 = vsplat(sload(V, v)), vsplat(sload(V, v + 1)), \
                vsplat(sload(V, v + 2)), vsplat(sload(V, v + 3))
            s4, s5, s6, s7 = vsplat(sload(V, v + 4)), vsplat(sload(V, v + 5)), \
                vsplat(sload(V, v + 6)), vsplat(sload(V, v + 7))
            c = c0
            while c < c1:
                keep = min(L, c1 - c)
                e = c + keep - L
                w = k * N + e
                a = _chain4(vload(acc, e), s0, s1, s2, s3, M, w, N)
                a = _chain4(a, s4, s5, s6, s7, M, w + 4 * N, N)
                _put(acc, e, a, keep)
                c += keep
            k += 8
        else:
            s = vsplat(sload(V, voff + k))
            c = c0
            while c < c1:
                keep = min(L, c1 - c)
                e = c + keep - L
                _put(acc, e, vfma(s, vload(M, k * N + e), vload(acc, e)), keep)
                c += keep
            k += 1


@njit(inline="always")
def _mv_lanes(acc, aoff, V, voff, M, N, K, c0, c1):
    """Columns ``c0 .. c1-1`` (fewer than a vector) of one row, one lane of a
    vector at a time: the same fused chain per column as the vector loops."""
    for c in range(c0, c1):
        a = vload_part(acc, aoff + c, 1)
        for k in range(K):
            a = vfma(vsplat(sload(V, voff + k)), vload_part(M, k * N + c, 1), a)
        acc[aoff + c] = vget(a, 0)


@njit(inline="always")
def _mv(acc, N, V, KV, voff, M, K, c0, c1, n):
    """The product for the first ``n`` (1 or 4) rows of a block."""
    if n == 4:
        _mv4(acc, N, V, KV, voff, M, K, c0, c1)
    else:
        _mv1(acc, N, V, KV, voff, M, K, c0, c1)


@njit(inline="always")
def _lanes(a):
    """Lanes of one vector of ``a``'s dtype."""
    return 64 // a.itemsize


# ---- gate math of one row: vectors for float32, scalars for float64 ----


@njit(inline="always")
def _simple_vec(acc, h, H, act):
    L = _lanes(acc)
    for u in range(0, H, L):
        n = min(L, H - u)
        vstore_part(h, u, activate(act, vload_part(acc, u, n)), n)


@njit(inline="always")
def _simple_scalar(acc, h, H, act):
    for j in range(H):
        h[j] = s_activate(act, acc[j])


@njit(inline="always")
def _reset_scalar(xp, hp, h, rh, H, ract):
    for j in range(H):
        rh[j] = s_activate(ract, xp[H + j] + hp[H + j]) * h[j]


@njit(inline="always")
def _gru_scalar(xp, hp, h, H, act, ract, reset_after):
    for j in range(H):
        # (one call per branch: a candidate typed float64 in one branch
        # would make the other's float64 too)
        if reset_after:
            h[j] = s_gru_update(xp[j] + hp[j], s_gru_reset(xp[H + j] + hp[H + j],
                                                           xp[2 * H + j], hp[2 * H + j],
                                                           ract), h[j], act, ract)
        else:
            h[j] = s_gru_update(xp[j] + hp[j], xp[2 * H + j] + hp[2 * H + j], h[j], act, ract)


@njit(inline="always")
def _lstm_vec(acc, c, hu, H, forget_bias, peep, has_peep, cell_clip, act, ract):
    L = _lanes(acc)
    for u in range(0, H, L):
        n = min(L, H - u)
        cn, hn = lstm_update(
            vload_part(acc, u, n), vload_part(acc, H + u, n) + forget_bias,
            vload_part(acc, 2 * H + u, n), vload_part(acc, 3 * H + u, n), vload_part(c, u, n),
            has_peep, vload_part(peep[0], u, n), vload_part(peep[1], u, n),
            vload_part(peep[2], u, n), cell_clip, act, ract)
        vstore_part(c, u, cn, n)
        vstore_part(hu, u, hn, n)


@njit(inline="always")
def _lstm_scalar(acc, c, hu, H, forget_bias, peep, has_peep, cell_clip, act, ract):
    for j in range(H):
        c[j], hu[j] = s_lstm_update(
            acc[j], acc[H + j] + forget_bias, acc[2 * H + j], acc[3 * H + j], c[j],
            has_peep, peep[0, j], peep[1, j], peep[2, j], cell_clip, act, ract)


# Each name below calls the vector version for float32 arrays and the scalar
# one otherwise, chosen when Numba types the call (a branch on the dtype at
# run time kept both versions in each kernel, and float64 LSTMs ran a
# quarter slower).

def _simple_gates(acc, h, H, act):
    raise NotImplementedError


@overload(_simple_gates, inline="always")
def _ov_simple(acc, h, H, act):
    fn = _simple_vec if acc.dtype == types.float32 else _simple_scalar
    return lambda acc, h, H, act: fn(acc, h, H, act)


def _gru_reset_before(xp, hp, h, rh, H, ract):
    """``rh = r * h``: the candidate's recurrent input when ``reset_after=False``."""
    raise NotImplementedError


@overload(_gru_reset_before, inline="always")
def _ov_reset(xp, hp, h, rh, H, ract):
    fn = gru_reset_input if xp.dtype == types.float32 else _reset_scalar
    return lambda xp, hp, h, rh, H, ract: fn(xp, hp, h, rh, H, ract)


def _gru_gates(xp, hp, h, H, act, ract, reset_after):
    raise NotImplementedError


@overload(_gru_gates, inline="always")
def _ov_gru(xp, hp, h, H, act, ract, reset_after):
    if xp.dtype == types.float32:  # (the stream kernels' row: input part first)
        return lambda xp, hp, h, H, act, ract, reset_after: gru_row(xp, hp, h, H, reset_after,
                                                                      act, ract)
    return lambda xp, hp, h, H, act, ract, reset_after: _gru_scalar(xp, hp, h, H, act, ract,
                                                                    reset_after)


def _lstm_gates(acc, c, hu, H, forget_bias, peep, has_peep, cell_clip, act, ract):
    raise NotImplementedError


@overload(_lstm_gates, inline="always")
def _ov_lstm(acc, c, hu, H, forget_bias, peep, has_peep, cell_clip, act, ract):
    fn = _lstm_vec if acc.dtype == types.float32 else _lstm_scalar
    return (lambda acc, c, hu, H, forget_bias, peep, has_peep, cell_clip, act, ract:
            fn(acc, c, hu, H, forget_bias, peep, has_peep, cell_clip, act, ract))


@njit(inline="always")
def _block(r1, b):
    """Rows of the block starting at row ``b``: 4, or 1 for the last few."""
    return 4 if r1 - b >= 4 else 1


@njit(inline="always")
def _live(n, b, t, mask, has_mask):
    """Whether any of the block's ``n`` rows from ``b`` runs step ``t``."""
    if not has_mask:
        return True
    for r in range(n):
        if mask[b + r, t]:
            return True
    return False


@njit(inline="always")
def _begin(V, KV, D, h0, b, n, started):
    """A block's rows from ``b``: their initial ``h`` into ``V``, none started."""
    for r in range(n):
        V[r * KV + D:(r + 1) * KV] = h0[b + r]
        started[r] = False


@njit(inline="always")
def _step_inputs(V, KV, D, x, b, n, t, acc, N, bias):
    """The block's inputs at step ``t`` into ``V``, ``bias`` into each row's
    accumulators."""
    for r in range(n):
        V[r * KV:r * KV + D] = x[b + r, t]
        acc[r * N:(r + 1) * N] = bias


@njit(inline="always")
def _after(out, has_out, b, r, t, h, n, masked, zero_output, started):
    """Row ``r``'s output at step ``t``, and whether it has started."""
    if has_out:
        _emit(out, b + r, t, h, n, masked, zero_output, started[r])
    started[r] = started[r] or not masked


# Each *_rows runs rows r0 .. r1-1 in blocks (see _mv): a block's rows take
# their steps together. V holds each row's input at this step and its
# state (h), one row of D + H (P with a projection) after the other; the
# products read it as the vectors they multiply.


@njit(cache=True, nogil=True)
def simple_rnn_rows(r0, r1, W, U, bias, act, x, h0, mask, has_mask, reverse,
                    zero_output, out, has_out, h_out):
    B, T, D = x.shape
    H = U.shape[1]
    KV = D + H
    V = np.zeros(4 * KV, dtype=W.dtype)
    acc = np.empty(4 * H, dtype=W.dtype)
    Wf, Uf = W.reshape(W.size), U.reshape(U.size)
    started = np.zeros(4, dtype=np.bool_)
    fpu = flush_denormals()  # this thread, until the end (see .fpenv)
    b = r0
    while b < r1:
        n = _block(r1, b)
        _begin(V, KV, D, h0, b, n, started)
        for s in range(T):
            t = T - 1 - s if reverse else s
            if _live(n, b, t, mask, has_mask):
                _step_inputs(V, KV, D, x, b, n, t, acc, H, bias)
                _mv(acc, H, V, KV, 0, Wf, D, 0, H, n)
                _mv(acc, H, V, KV, D, Uf, H, 0, H, n)
            for r in range(n):
                masked = has_mask and not mask[b + r, t]
                h = V[r * KV + D:(r + 1) * KV]
                if not masked:
                    _simple_gates(acc[r * H:(r + 1) * H], h, H, act)
                _after(out, has_out, b, r, t, h, H, masked, zero_output, started)
        for r in range(n):
            h_out[b + r] = V[r * KV + D:(r + 1) * KV]
        b += n
    restore_fp(fpu)


@njit(cache=True, nogil=True)
def gru_rows(r0, r1, W, U, bias, act, ract, reset_after, x, h0, mask, has_mask,
             reverse, zero_output, out, has_out, h_out):
    B, T, D = x.shape
    H = U.shape[0]
    N = 3 * H
    KV = D + H
    V = np.zeros(4 * KV, dtype=W.dtype)
    xp = np.empty(4 * N, dtype=W.dtype)
    hp = np.empty(4 * N, dtype=W.dtype)
    rh = np.zeros(4 * H, dtype=W.dtype)
    Wf, Uf = W.reshape(W.size), U.reshape(U.size)
    b_in = bias[0]
    b_rec = bias[1]
    started = np.zeros(4, dtype=np.bool_)
    fpu = flush_denormals()
    b = r0
    while b < r1:
        n = _block(r1, b)
        _begin(V, KV, D, h0, b, n, started)
        for s in range(T):
            t = T - 1 - s if reverse else s
            if _live(n, b, t, mask, has_mask):
                _step_inputs(V, KV, D, x, b, n, t, xp, N, b_in)
                for r in range(n):
                    hp[r * N:(r + 1) * N] = b_rec
                _mv(xp, N, V, KV, 0, Wf, D, 0, N, n)
                if reset_after:
                    _mv(hp, N, V, KV, D, Uf, H, 0, N, n)
                else:
                    _mv(hp, N, V, KV, D, Uf, H, 0, 2 * H, n)
                    for r in range(n):
                        _gru_reset_before(xp[r * N:(r + 1) * N], hp[r * N:(r + 1) * N],
                                          V[r * KV + D:(r + 1) * KV], rh[r * H:(r + 1) * H], H,
                                          ract)
                    _mv(hp, N, rh, H, 0, Uf, H, 2 * H, N, n)
            for r in range(n):
                masked = has_mask and not mask[b + r, t]
                h = V[r * KV + D:(r + 1) * KV]
                if not masked:
                    _gru_gates(xp[r * N:(r + 1) * N], hp[r * N:(r + 1) * N], h, H, act, ract,
                               reset_after)
                _after(out, has_out, b, r, t, h, H, masked, zero_output, started)
        for r in range(n):
            h_out[b + r] = V[r * KV + D:(r + 1) * KV]
        b += n
    restore_fp(fpu)


@njit(cache=True, nogil=True)
def lstm_rows(r0, r1, W, U, bias, act, ract, forget_bias, peep, has_peep,
              cell_clip, proj, has_proj, proj_clip, x, h0, c0, mask, has_mask,
              reverse, zero_output, out, has_out, h_out, c_out):
    B, T, D = x.shape
    P = U.shape[0]
    H = U.shape[1] // 4
    N = 4 * H
    KV = D + P
    V = np.zeros(4 * KV, dtype=W.dtype)
    acc = np.empty(4 * N, dtype=W.dtype)
    c = np.empty(4 * H, dtype=W.dtype)
    hu = np.zeros(4 * H, dtype=W.dtype)
    pacc = np.empty(4 * P, dtype=W.dtype)
    Wf, Uf, projf = W.reshape(W.size), U.reshape(U.size), proj.reshape(proj.size)
    started = np.zeros(4, dtype=np.bool_)
    fpu = flush_denormals()
    b = r0
    while b < r1:
        n = _block(r1, b)
        _begin(V, KV, D, h0, b, n, started)
        for r in range(n):
            c[r * H:(r + 1) * H] = c0[b + r]
        for s in range(T):
            t = T - 1 - s if reverse else s
            live = _live(n, b, t, mask, has_mask)
            if live:
                _step_inputs(V, KV, D, x, b, n, t, acc, N, bias)
                _mv(acc, N, V, KV, 0, Wf, D, 0, N, n)
                _mv(acc, N, V, KV, D, Uf, P, 0, N, n)
            for r in range(n):
                if not (has_mask and not mask[b + r, t]):
                    _lstm_gates(acc[r * N:(r + 1) * N], c[r * H:(r + 1) * H],
                                hu[r * H:(r + 1) * H], H, forget_bias, peep, has_peep,
                                cell_clip, act, ract)
            if live and has_proj:
                pacc[:] = 0.0
                _mv(pacc, P, hu, H, 0, projf, H, 0, P, n)
            for r in range(n):
                masked = has_mask and not mask[b + r, t]
                h = V[r * KV + D:(r + 1) * KV]
                if not masked:
                    if has_proj:
                        for q in range(P):
                            h[q] = clip(pacc[r * P + q], proj_clip)
                    else:
                        h[:] = hu[r * H:(r + 1) * H]
                _after(out, has_out, b, r, t, h, P, masked, zero_output, started)
        for r in range(n):
            h_out[b + r] = V[r * KV + D:(r + 1) * KV]
            c_out[b + r] = c[r * H:(r + 1) * H]
        b += n
    restore_fp(fpu)


# Parallel wrappers: chunk c of n runs rows bounds[c] .. bounds[c+1]-1 for the
# whole sequence. Rows never interact, so the threads never wait for each
# other (nothing to spin on under contention).


@njit(cache=True, nogil=True, parallel=True)
def simple_rnn_par(bounds, W, U, bias, act, x, h0, mask, has_mask, reverse,
                   zero_output, out, has_out, h_out):
    for c in prange(bounds.shape[0] - 1):
        simple_rnn_rows(bounds[c], bounds[c + 1], W, U, bias, act, x, h0, mask,
                        has_mask, reverse, zero_output, out, has_out, h_out)


@njit(cache=True, nogil=True, parallel=True)
def gru_par(bounds, W, U, bias, act, ract, reset_after, x, h0, mask, has_mask,
            reverse, zero_output, out, has_out, h_out):
    for c in prange(bounds.shape[0] - 1):
        gru_rows(bounds[c], bounds[c + 1], W, U, bias, act, ract, reset_after, x,
                 h0, mask, has_mask, reverse, zero_output, out, has_out, h_out)


@njit(cache=True, nogil=True, parallel=True)
def lstm_par(bounds, W, U, bias, act, ract, forget_bias, peep, has_peep,
             cell_clip, proj, has_proj, proj_clip, x, h0, c0, mask, has_mask,
             reverse, zero_output, out, has_out, h_out, c_out):
    for c in prange(bounds.shape[0] - 1):
        lstm_rows(bounds[c], bounds[c + 1], W, U, bias, act, ract, forget_bias,
                  peep, has_peep, cell_clip, proj, has_proj, proj_clip, x, h0,
                  c0, mask, has_mask, reverse, zero_output, out, has_out, h_out,
                  c_out)


@njit(cache=True, nogil=True, parallel=True)
def touch_pool(a):
    """Start Numba's thread pool (so that its threading layer is known)."""
    for i in prange(a.shape[0]):
        a[i] += 1.0


@njit(cache=True, nogil=True, parallel=True)
def pool_threads(ids):
    """``ids[i]``: the kernel thread id of the pool's thread ``i`` (``ids``
    as long as the pool; -1 where a thread ran no iteration): many small
    iterations, so that every thread takes some."""
    n = ids.shape[0]
    for i in prange(64 * n):
        ids[get_thread_id()] = thread_id()


@njit(cache=True, nogil=True)
def here():
    """The CPU the calling thread runs on (-1 where unknown)."""
    return current_cpu()
