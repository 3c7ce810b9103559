"""Generic CPU kernels: every variant, float32 and float64, one row at a time.

These run whatever the packed float32 kernels (:mod:`.packed`) do not:
float64, SimpleRNN, GRU with ``reset_after=False``, LSTM with a projection,
and any machine where the packed path is switched off. Each function runs
the whole sequence of batch rows ``r0 .. r1-1``; rows are independent, so
the parallel wrappers split the batch between threads and never meet.

The input projection is folded into each step (``k`` over the input
features, then over the state), so no buffer grows with ``T``.

Gate orders are Keras's: LSTM i, f, c, o; GRU z, r, h. Each ``*_rows``
flushes subnormals to zero on its thread for its duration (:mod:`.fpenv`),
so the parallel wrappers' threads do too. Optional arguments
arrive as dummies plus a flag (``has_mask``, ``has_out``...), so one compiled
kernel serves every call of one dtype. Clip limits below zero mean no clip.
"""

from __future__ import annotations

import numpy as np
from numba import get_thread_id, njit, prange

from .fpenv import flush_denormals, restore_fp
from .sync import current_cpu, thread_id
from .gates import scalar_activate as activate
from .gates import scalar_clip as clip
from .gates import scalar_gru_reset as gru_reset
from .gates import scalar_gru_update as gru_update
from .gates import scalar_lstm_update as lstm_update


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


@njit(inline="always")
def _matvec_acc(acc, v, M, ncols):
    # acc[:ncols] += v @ M[:, :ncols]   (k outer, so the j loop vectorises)
    for k in range(v.shape[0]):
        a = v[k]
        for j in range(ncols):
            acc[j] += a * M[k, j]


@njit(cache=True, nogil=True)
def simple_rnn_rows(r0, r1, W, U, bias, act, x, h0, mask, has_mask, reverse,
                    zero_output, out, has_out, h_out):
    B, T, D = x.shape
    H = U.shape[1]
    acc = np.empty(H, dtype=W.dtype)
    h = np.empty(H, dtype=W.dtype)
    fpu = flush_denormals()  # this thread, until the end (see .fpenv)
    for b in range(r0, r1):
        h[:] = h0[b]
        started = False
        for s in range(T):
            t = T - 1 - s if reverse else s
            masked = has_mask and not mask[b, t]
            if not masked:
                acc[:] = bias
                _matvec_acc(acc, x[b, t], W, H)
                _matvec_acc(acc, h, U, H)
                for j in range(H):
                    h[j] = activate(act, acc[j])
            if has_out:
                _emit(out, b, t, h, H, masked, zero_output, started)
            started = started or not masked
        h_out[b] = h
    restore_fp(fpu)


@njit(cache=True, nogil=True)
def gru_rows(r0, r1, W, U, bias, act, ract, reset_after, x, h0, mask, has_mask,
             reverse, zero_output, out, has_out, h_out):
    B, T, D = x.shape
    H = U.shape[0]
    xp = np.empty(3 * H, dtype=W.dtype)
    hp = np.empty(3 * H, dtype=W.dtype)
    h = np.empty(H, dtype=W.dtype)
    rh = np.empty(H, dtype=W.dtype)
    b_in = bias[0]
    b_rec = bias[1]
    fpu = flush_denormals()
    for b in range(r0, r1):
        h[:] = h0[b]
        started = False
        for s in range(T):
            t = T - 1 - s if reverse else s
            masked = has_mask and not mask[b, t]
            if not masked:
                xp[:] = b_in
                _matvec_acc(xp, x[b, t], W, 3 * H)
                hp[:] = b_rec
                if reset_after:
                    _matvec_acc(hp, h, U, 3 * H)
                else:
                    _matvec_acc(hp, h, U, 2 * H)
                    for j in range(H):
                        r = activate(ract, xp[H + j] + hp[H + j])
                        rh[j] = r * h[j]
                    for k in range(H):
                        a = rh[k]
                        for j in range(H):
                            hp[2 * H + j] += a * U[k, 2 * H + j]
                for j in range(H):
                    # (one call per branch: a candidate typed float64 in one
                    # branch would make the other's float64 too)
                    if reset_after:
                        h[j] = gru_update(xp[j] + hp[j], gru_reset(xp[H + j] + hp[H + j],
                                                                   xp[2 * H + j], hp[2 * H + j],
                                                                   ract), h[j], act, ract)
                    else:
                        h[j] = gru_update(xp[j] + hp[j], xp[2 * H + j] + hp[2 * H + j], h[j],
                                          act, ract)
            if has_out:
                _emit(out, b, t, h, H, masked, zero_output, started)
            started = started or not masked
        h_out[b] = h
    restore_fp(fpu)


@njit(cache=True, nogil=True)
def lstm_rows(r0, r1, W, U, bias, act, ract, forget_bias, peep, has_peep,
              cell_clip, proj, has_proj, proj_clip, x, h0, c0, mask, has_mask,
              reverse, zero_output, out, has_out, h_out, c_out):
    B, T, D = x.shape
    P = U.shape[0]
    H = U.shape[1] // 4
    acc = np.empty(4 * H, dtype=W.dtype)
    h = np.empty(P, dtype=W.dtype)
    c = np.empty(H, dtype=W.dtype)
    hu = np.empty(H, dtype=W.dtype)
    fpu = flush_denormals()
    for b in range(r0, r1):
        h[:] = h0[b]
        c[:] = c0[b]
        started = False
        for s in range(T):
            t = T - 1 - s if reverse else s
            masked = has_mask and not mask[b, t]
            if not masked:
                acc[:] = bias
                _matvec_acc(acc, x[b, t], W, 4 * H)
                _matvec_acc(acc, h, U, 4 * H)
                for j in range(H):
                    c[j], hu[j] = lstm_update(
                        acc[j], acc[H + j] + forget_bias, acc[2 * H + j], acc[3 * H + j], c[j],
                        has_peep, peep[0, j], peep[1, j], peep[2, j], cell_clip, act, ract)
                if has_proj:
                    h[:] = 0.0
                    _matvec_acc(h, hu, proj, P)
                    for q in range(P):
                        h[q] = clip(h[q], proj_clip)
                else:
                    h[:] = hu
            if has_out:
                _emit(out, b, t, h, P, masked, zero_output, started)
            started = started or not masked
        h_out[b] = h
        c_out[b] = c
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
