"""The ``@cuda.jit`` kernels of the ``cuda`` backend, and their signatures.

Host code lives in :mod:`fastrnn.kernels.cuda`; this module only defines
kernels, so the test suite can compile each of them to PTX
(:func:`ptx_signatures`) on a machine without a GPU.

Layout shared by every kernel
-----------------------------
``xw (B*T, G*H)``
    The input projection ``x @ kernel + input bias`` of every step, row
    ``b*T + t``, computed once before the time loop (gates side by side in
    Keras order: LSTM **i, f, c, o**; GRU **z, r, h**; SimpleRNN one gate).
``U (K, G*H)``
    The recurrent kernel in Keras layout (``K = H``, or ``P`` for an LSTM
    with a projection), or the columns of the gates a kernel computes (the
    two kernels of a GRU with ``reset_after=False``): gate ``g`` of unit
    ``j`` is column ``g*H + j``, here and in ``R``.
``h_in (B, K)``, ``h_nxt (B, K)``
    The state before and after the step: two buffers the host swaps by step
    parity, because every thread reads the whole row ``h_in[b]``.
``mask (B, T) bool`` and ``has_mask``; ``out (B, T, K)`` and ``has_out``
    When a flag is false the array is a ``(1, 1)`` / ``(1, 1, 1)`` dummy.
``t_prev``
    The time index processed just before ``t`` (``-1`` at the first step):
    a masked step repeats ``out[b, t_prev]``, which already holds the
    previous output.

Each step kernel gives one thread one ``(batch row, unit)`` pair, in a
grid-stride loop (``j`` fastest, so a warp reads ``U`` rows coalesced and
``h_in[b, k]`` as a broadcast). Two ways to get the recurrent product:

* ``has_r`` false (small batches): the thread does its pair's slice of
  ``h U`` itself, fused with the gate math, one launch per step; ``U`` is
  read once per batch row, which is cheap while the batch is small.
* ``has_r`` true (large batches): the host has just computed ``R = h U``
  (``(B, G*H)``, gates side by side) with one GEMM (cuBLAS, or
  :func:`make_matmul`), and the kernel does the gate math on ``R``: the
  per-step GEMM plus fused point-wise kernel of haste and cuDNN.

The kernels share their skeleton through device functions inlined into
each: ``_row_unit`` (the pair of a grid index), ``_valid`` (the mask),
``_recurrent`` (the recurrent terms of a unit's gates, either way) and
``_finish`` (the new state and the output of a step, masked or not).
"""

from __future__ import annotations

import functools

import numpy as np
from numba import cuda, types

from .. import _math

# The activations and gate updates of _math, as CUDA device functions (a
# CUDA kernel may call only device functions: nothing here is @njit).
_sigmoid, clip, activate, _muladd, lstm_update, gru_reset, gru_update = _math.compiled(
    cuda.jit(device=True, inline="always"), names=_math.SCALARS + _math.GATES)


@cuda.jit(device=True, inline="always")
def _row_unit(idx, n):
    """Grid index ``idx`` -> ``(batch row, unit)``, over rows of ``n`` units."""
    b = idx // n
    return b, idx - b * n


@cuda.jit(device=True, inline="always")
def _valid(mask, has_mask, b, t):
    """Whether step ``t`` of row ``b`` is a real (unmasked) step."""
    valid = True
    if has_mask:
        valid = mask[b, t]
    return valid


@cuda.jit(device=True, inline="always")
def _recurrent(h, U, R, has_r, b, j, H, n, a0, a1, a2, a3):
    """``(a0, a1, a2, a3)``, each gate ``g < n`` plus its recurrent term.

    Gate ``g`` of unit ``j`` is column ``g * H + j``: of ``R`` (``h U``,
    done by a GEMM) when ``has_r``, else of ``U``, summed here over the row
    ``h[b]`` in ``k`` order, one pass for all the gates. The gates from
    ``n`` on come back as they came; ``n`` is a constant at every call, so
    the compiler drops their code.
    """
    if has_r:
        a0 += R[b, j]
        if n > 1:
            a1 += R[b, H + j]
        if n > 2:
            a2 += R[b, 2 * H + j]
        if n > 3:
            a3 += R[b, 3 * H + j]
    else:
        for k in range(h.shape[1]):
            hk = h[b, k]
            a0 += hk * U[k, j]
            if n > 1:
                a1 += hk * U[k, H + j]
            if n > 2:
                a2 += hk * U[k, 2 * H + j]
            if n > 3:
                a3 += hk * U[k, 3 * H + j]
    return a0, a1, a2, a3


@cuda.jit(device=True, inline="always")
def _finish(h_in, h_nxt, out, b, t, j, valid, y, has_out, t_prev, zero_output):
    """End step ``t`` of unit ``j`` of row ``b``: its new state and output.

    A valid step writes ``y`` to both; a masked step carries the state and
    outputs zeros (``zero_output``, or no step before it) or repeats the
    previous output ``out[b, t_prev, j]``.
    """
    if valid:
        h_nxt[b, j] = y
    else:
        h_nxt[b, j] = h_in[b, j]
    if has_out:
        if valid:
            out[b, t, j] = y
        elif zero_output or t_prev < 0:
            out[b, t, j] = 0.0
        else:
            out[b, t, j] = out[b, t_prev, j]


@cuda.jit
def simple_rnn_step(xw, T, t, U, R, has_r, h_in, h_nxt, mask, has_mask, out, has_out,
                    t_prev, zero_output, act):
    """SimpleRNN step ``t``: ``h' = act(xw[b, t] + h U)``."""
    B, H = h_in.shape
    for idx in range(cuda.grid(1), B * H, cuda.gridsize(1)):
        b, j = _row_unit(idx, H)
        valid = _valid(mask, has_mask, b, t)
        y = 0.0
        if valid:
            acc = xw[b * T + t, j]
            acc, _, _, _ = _recurrent(h_in, U, R, has_r, b, j, H, 1, acc, 0.0, 0.0, 0.0)
            y = activate(act, acc)
        _finish(h_in, h_nxt, out, b, t, j, valid, y, has_out, t_prev, zero_output)


@cuda.jit
def gru_step(xw, T, t, U, R, has_r, brec, h_in, h_nxt, mask, has_mask, out, has_out,
             t_prev, zero_output, act, ract):
    """GRU step ``t``, ``reset_after=True``; gates z, r, h.

    ``h~ = act(x W_h + b_h + r * (h U_h + b_rh))``, ``h' = z h + (1 - z) h~``.
    """
    B, H = h_in.shape
    for idx in range(cuda.grid(1), B * H, cuda.gridsize(1)):
        b, j = _row_unit(idx, H)
        valid = _valid(mask, has_mask, b, t)
        y = 0.0
        if valid:
            row = b * T + t
            az, ar, ah, _ = _recurrent(h_in, U, R, has_r, b, j, H, 3,
                                       brec[j], brec[H + j], brec[2 * H + j], 0.0)
            zh = gru_reset(xw[row, H + j] + ar, xw[row, 2 * H + j], ah, ract)
            y = gru_update(xw[row, j] + az, zh, h_in[b, j], act, ract)
        _finish(h_in, h_nxt, out, b, t, j, valid, y, has_out, t_prev, zero_output)


@cuda.jit
def gru_gates(xw, T, t, U_zr, R, has_r, brec, h_in, z_buf, rh_buf, ract):
    """GRU step ``t``, ``reset_after=False``, first half: gates z and r.

    ``U_zr (H, 2H)`` holds the recurrent kernel's z and r columns. Writes
    the update gate's pre-activation and ``r * h`` for every unit, since
    the candidate's product ``(r * h) U_h`` needs the whole row before it
    can start.
    """
    B, H = h_in.shape
    for idx in range(cuda.grid(1), B * H, cuda.gridsize(1)):
        b, j = _row_unit(idx, H)
        row = b * T + t
        az, ar, _, _ = _recurrent(h_in, U_zr, R, has_r, b, j, H, 2, xw[row, j] + brec[j],
                                  xw[row, H + j] + brec[H + j], 0.0, 0.0)
        z_buf[b, j] = az
        rh_buf[b, j] = activate(ract, ar) * h_in[b, j]


@cuda.jit
def gru_candidate(xw, T, t, U_h, R, has_r, brec, h_in, z_buf, rh_buf, h_nxt, mask,
                  has_mask, out, has_out, t_prev, zero_output, act, ract):
    """GRU step ``t``, ``reset_after=False``, second half: candidate, update.

    ``U_h (H, H)`` is the recurrent kernel's candidate columns.
    ``h~ = act(x W_h + b_h + (r * h) U_h + b_rh)``, ``h' = z h + (1 - z) h~``.
    """
    B, H = h_in.shape
    for idx in range(cuda.grid(1), B * H, cuda.gridsize(1)):
        b, j = _row_unit(idx, H)
        valid = _valid(mask, has_mask, b, t)
        y = 0.0
        if valid:
            ah = xw[b * T + t, 2 * H + j] + brec[2 * H + j]
            ah, _, _, _ = _recurrent(rh_buf, U_h, R, has_r, b, j, H, 1, ah, 0.0, 0.0, 0.0)
            y = gru_update(z_buf[b, j], ah, h_in[b, j], act, ract)
        _finish(h_in, h_nxt, out, b, t, j, valid, y, has_out, t_prev, zero_output)


@cuda.jit
def lstm_step(xw, T, t, U, R, has_r, peep, has_peep, h_in, c_in, h_nxt, c_nxt, m_buf,
              has_proj, mask, has_mask, out, has_out, t_prev, zero_output,
              act, ract, forget_bias, cell_clip):
    """LSTM step ``t``; gates i, f, c, o.

    ``i = ra(. + p_i c)``, ``f = ra(. + forget_bias + p_f c)``,
    ``c' = clip(f c + i act(.), cell_clip)``, ``o = ra(. + p_o c')``,
    ``m = o act(c')``. Without a projection ``m`` is the new ``h`` and this
    kernel finishes the step; with one it writes ``m`` to ``m_buf`` and
    :func:`lstm_project` finishes it. ``cell_clip < 0`` means no clip.
    """
    B, H = c_in.shape
    for idx in range(cuda.grid(1), B * H, cuda.gridsize(1)):
        b, j = _row_unit(idx, H)
        valid = _valid(mask, has_mask, b, t)
        c = c_in[b, j]
        y = 0.0
        if valid:
            row = b * T + t
            zi, zf, zc, zo = _recurrent(h_in, U, R, has_r, b, j, H, 4, xw[row, j],
                                        xw[row, H + j], xw[row, 2 * H + j], xw[row, 3 * H + j])
            # without peepholes ``peep`` is a (1, 1) placeholder: read its
            # only element (lstm_update ignores the values then)
            q = j if has_peep else 0
            g = 1 if has_peep else 0
            cn, y = lstm_update(zi, zf + forget_bias, zc, zo, c, has_peep, peep[0, q],
                                peep[g, q], peep[2 * g, q], cell_clip, act, ract)
            c_nxt[b, j] = cn
        else:
            c_nxt[b, j] = c
        if has_proj:
            m_buf[b, j] = y
        else:
            _finish(h_in, h_nxt, out, b, t, j, valid, y, has_out, t_prev, zero_output)


@cuda.jit
def lstm_project(m_buf, proj, R, has_r, proj_clip, t, h_in, h_nxt, mask, has_mask,
                 out, has_out, t_prev, zero_output):
    """LSTM step ``t``, projection: ``h' = clip(m @ projection, proj_clip)``."""
    B, P = h_in.shape
    H = m_buf.shape[1]
    for idx in range(cuda.grid(1), B * P, cuda.gridsize(1)):
        b, p = _row_unit(idx, P)
        valid = _valid(mask, has_mask, b, t)
        y = 0.0
        if valid:
            if has_r:
                acc = R[b, p]
            else:  # from the first product on (_recurrent starts from a given value)
                acc = m_buf[b, 0] * proj[0, p]
                for k in range(1, H):
                    acc += m_buf[b, k] * proj[k, p]
            y = clip(acc, proj_clip)
        _finish(h_in, h_nxt, out, b, t, p, valid, y, has_out, t_prev, zero_output)


@functools.lru_cache(maxsize=None)
def make_matmul(tile, dtype):
    """The tiled shared-memory GEMM ``C = A @ W + bias`` for one tile size.

    ``A (M, K)``, ``W (K, N)``, ``bias (N,)``, ``C (M, N)``; launched with
    ``(tile, tile)`` threads per block, blocks grid-striding over the tiles
    of ``C``. Used for the input projection when CuPy (cuBLAS) is not
    there. The shared arrays need their shape and type at compile time, so
    there is one kernel per ``(tile, dtype)``.
    """
    nbtype = types.float32 if np.dtype(dtype) == np.float32 else types.float64

    def matmul_bias(A, W, bias, C):
        sA = cuda.shared.array((tile, tile), nbtype)
        sW = cuda.shared.array((tile, tile), nbtype)
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        M = A.shape[0]
        K = A.shape[1]
        N = W.shape[1]
        n_rows = (M + tile - 1) // tile
        n_cols = (N + tile - 1) // tile
        n_k = (K + tile - 1) // tile
        # Loop bounds depend on the block only, so every thread of a block
        # reaches each syncthreads.
        for bi in range(cuda.blockIdx.y, n_rows, cuda.gridDim.y):
            for bj in range(cuda.blockIdx.x, n_cols, cuda.gridDim.x):
                row = bi * tile + ty
                col = bj * tile + tx
                acc = bias[min(col, N - 1)]
                for kt in range(n_k):
                    ka = kt * tile + tx
                    kw = kt * tile + ty
                    if row < M and ka < K:
                        sA[ty, tx] = A[row, ka]
                    else:
                        sA[ty, tx] = 0.0
                    if kw < K and col < N:
                        sW[ty, tx] = W[kw, col]
                    else:
                        sW[ty, tx] = 0.0
                    cuda.syncthreads()
                    for kk in range(tile):
                        acc += sA[ty, kk] * sW[kk, tx]
                    cuda.syncthreads()
                if row < M and col < N:
                    C[row, col] = acc

    return cuda.jit(matmul_bias)


def ptx_signatures(dtype, tile=16):
    """``[(name, kernel, signature)]``: every kernel with its launch types.

    The types are those the host code passes (C-contiguous arrays, int64
    indices, Python bools and floats), so compiling these is compiling
    what runs.
    """
    f = types.float32 if np.dtype(dtype) == np.float32 else types.float64
    a1 = types.Array(f, 1, "C")
    a2 = types.Array(f, 2, "C")
    a3 = types.Array(f, 3, "C")
    m2 = types.Array(types.boolean, 2, "C")
    i, fl, bo = types.int64, types.float64, types.boolean
    none = types.void
    return [
        ("simple_rnn_step", simple_rnn_step,
         none(a2, i, i, a2, a2, bo, a2, a2, m2, bo, a3, bo, i, bo, i)),
        ("gru_step", gru_step,
         none(a2, i, i, a2, a2, bo, a1, a2, a2, m2, bo, a3, bo, i, bo, i, i)),
        ("gru_gates", gru_gates, none(a2, i, i, a2, a2, bo, a1, a2, a2, a2, i)),
        ("gru_candidate", gru_candidate,
         none(a2, i, i, a2, a2, bo, a1, a2, a2, a2, a2, m2, bo, a3, bo, i, bo, i, i)),
        ("lstm_step", lstm_step,
         none(a2, i, i, a2, a2, bo, a2, bo, a2, a2, a2, a2, a2, bo, m2, bo, a3, bo,
              i, bo, i, i, fl, fl)),
        ("lstm_project", lstm_project,
         none(a2, a2, a2, bo, fl, i, a2, a2, m2, bo, a3, bo, i, bo)),
        (f"matmul_bias[tile={tile}]", make_matmul(tile, np.dtype(dtype)),
         none(a2, a2, a1, a2)),
    ]
