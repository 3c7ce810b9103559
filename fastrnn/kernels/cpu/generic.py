"""Generic CPU kernels: every variant, float32 and float64, one row at a time.

These run whatever the packed float32 kernels (:mod:`.packed`) do not:
float64, SimpleRNN, GRU with ``reset_after=False``, LSTM with a projection,
and any machine where the packed path is switched off. Each function runs
the whole sequence of batch rows ``r0 .. r1-1``; rows are independent, so
the parallel wrappers split the batch between threads and never meet.

The input projection is folded into each step (``k`` over the input
features, then over the state), so no buffer grows with ``T``. The gate
math of float32 runs on the SIMD vectors of :mod:`.simd` (:mod:`.gates`), a
vector of units at a time (the last, partial one loaded and stored lane by
lane): as scalars, ``math.tanh`` alone took more than half of a float32
SimpleRNN's time. float64 keeps the scalar forms (its vector activations
would run lane by lane anyway, and slower).

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
from .simd import vload_part, vstore_part
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


@njit(inline="always")
def _matvec_acc(acc, v, M, ncols):
    # acc[:ncols] += v @ M[:, :ncols]   (k outer, so the j loop vectorises)
    for k in range(v.shape[0]):
        a = v[k]
        for j in range(ncols):
            acc[j] += a * M[k, j]


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
                _simple_gates(acc, h, H, act)
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
                    _gru_reset_before(xp, hp, h, rh, H, ract)
                    for k in range(H):
                        a = rh[k]
                        for j in range(H):
                            hp[2 * H + j] += a * U[k, 2 * H + j]
                _gru_gates(xp, hp, h, H, act, ract, reset_after)
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
                _lstm_gates(acc, c, hu, H, forget_bias, peep, has_peep, cell_clip, act, ract)
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
