"""Small-batch step kernels for :class:`fastrnn.streaming.Stream`.

A stream calls one compiled function per frame (``frame``) or per chunk
(``chunk_seq`` / ``chunk_last``) for its whole stack of cells. Everything
lives in four flat arrays prepared once by :func:`pack`:

``w``
    All packed weights of all layers, in the stream's dtype, every block
    64-byte aligned: per layer the input kernel ``(D, N)`` and the recurrent
    kernel ``(H, N)`` (``N = gates * units``; a GRU with
    ``reset_after=False`` keeps its candidate columns in a third block) cut
    into panels of four 64-byte vectors of columns, each panel contiguous
    along ``k`` (see :func:`_pgemv`), then the input-side bias ``(N,)`` and
    the recurrent-side bias ``(N,)``. Gate order inside ``N`` is Keras's:
    LSTM **i, f, c, o**; GRU **z, r, h**. Quantized layers
    (:func:`fastrnn.kernels.quantize`) keep their compact panels in ``w``'s
    bytes (bfloat16 bit patterns in pairs of k, :func:`_ppair`; int8;
    int8_dynamic's int32 groups of 4 k, :func:`_pdyn`; or bfloat16_dynamic's
    uint32 pairs of k) with their column scales (and int8_dynamic's column
    sums) beside them; ``cfg`` names each layer's format.
``s``
    The states, per layer ``h (B, H)`` then (LSTM) ``c (B, H)``, updated in
    place: a step reads the whole old state before it writes the new one.
``work``
    Scratch: the hoisted input projection of a chunk ``(B, T, N)``, the
    recurrent pre-activations ``(B, N)``, two sequence buffers for the
    outputs of inner layers ``(B, T, H)``, and one ``(B, H)`` temporary.
``cfg``
    ``int64 (layers, _NCFG)``: kind, sizes, activation codes and offsets;
    ``cfg[0, _PAR]`` counts the steps run, the parity of the panel order.

Per layer and chunk the input projection ``x W + b`` is computed for all
steps first (each weight panel is streamed once per two steps), then the
recurrence runs step by step: the recurrent product, then the gate math of
:mod:`.gates` on one vector of units at a time (the last, partial vector
lane by lane). The matrix-vector products keep their accumulators in
registers (the vector type of :mod:`.simd`) and reach the L3 bandwidth from
H = 256 up, where the weights no longer fit in L2. Every function is
compiled with ``error_model="numpy"``: Python's error model checks each
division for zero, and that branch keeps LLVM from vectorising.

No BLAS is called (BLAS threads spinning after a call at batch 1 stall
other work), and nothing here allocates: the kernels are ``nogil``, and the
helpers are compiled with ``_nrt=False`` so that a call passes its arrays
without reference counting (see :mod:`.packed`).
The functions return 0, or 1 when NaN was found in the input and the
layer's ``nan_policy`` is ``"raise"`` (checked before any state is written).
While they run, subnormal numbers read and are written as zero on the
calling thread (:mod:`.fpenv`).

The module is long because each weight format (float32, bfloat16, int8,
int8_dynamic, bfloat16_dynamic) has its panel product here, beside the one stack driver that
uses them.
"""

from __future__ import annotations

import numpy as np
from numba import njit, types
from numba.extending import overload

from .fpenv import flush_denormals, restore_fp
from .gates import FASTMATH as _FM
from .gates import activate, gru_reset_input, gru_row, lstm_update
from .packed import _bfloat16_row, _quantize_row
from .simd import (IVEC, aligned64, bdot, dload, dsplat, isub, itof, izero, lanes, pair_hi,
                   pair_lo, vdot, vfma, vload, vload_part, vsplat, vstore, vstore_part, vzero,
                   wload)

# cfg columns
(_KIND, _D, _H, _ACT, _RACT, _RA, _WX, _WH, _WH2, _BX, _BH, _SH, _SC, _NAN, _PAR, _FMT, _SX,
 _SU, _SU2, _KX, _KU) = range(21)
_NCFG = 21
SIMPLE, GRU, LSTM = 0, 1, 2
# weight formats (cfg[l, _FMT])
F32, BF16, INT8, INT8DYN, BF16DYN = 0, 1, 2, 3, 4
_FORMATS = {"float32": F32, "float64": F32, "bfloat16": BF16, "int8": INT8,
            "int8_dynamic": INT8DYN, "bfloat16_dynamic": BF16DYN}
_KINDS = {"simple_rnn": SIMPLE, "gru": GRU, "lstm": LSTM}
_GATES = {SIMPLE: 1, GRU: 3, LSTM: 4}



# ----- matrix-vector products ------------------------------------------------

@njit(error_model="numpy", _nrt=False)
def _pgemv(w, off, K, N, v, voff, vstride, nv, dst, doff, dstride, scratch, soff, rev, sc,
           scoff):
    """``dst[doff + i*dstride + j] += sum_k v[voff + i*vstride + k] * W[k, j]``.

    ``w`` holds floats of ``dst``'s dtype, or int8 values widened to float32
    as they are loaded (bfloat16 panels go through :func:`_ppair`); with ``scoff >=
    0`` each column's sum is multiplied by its scale ``sc[scoff + j]`` (int8
    column scales, padded with zeros to whole panels) before it is added.

    ``W (K, N)`` is packed at ``w[off:]`` in panels of ``P = 4`` vectors of
    columns: panel ``p`` is ``W[:, p*P:(p+1)*P]`` stored row after row
    (contiguous along ``k``), zero-padded past ``N``. Each panel keeps four
    accumulators per vector of ``v`` in registers through the whole ``k``
    loop: two vectors at a time, or (one vector) two panels at a time, so
    that eight independent FMA chains hide the FMA latency. The last,
    partial panel goes through ``scratch[soff : soff + P]`` so that nothing
    past column ``N`` of ``dst`` is touched.

    With ``rev`` the panels are visited last to first. Callers alternate the
    direction from one product with the same weights to the next, so the
    panels read last (still in L2) are the first read again: at H = 256 an
    LSTM's weights (2 MB, twice L2) then come partly from L2 instead of L3.
    """
    L = lanes_of(dst)
    P = 4 * L
    npan = (N + P - 1) // P
    # One vector (a frame at batch 1): full panels two at a time.
    npair = (N // P) // 2 if nv == 1 else 0
    vone = v[voff : voff + K]
    nsteps = npair + npan - 2 * npair
    for step in range(nsteps):
        idx = nsteps - 1 - step if rev else step
        if idx < npair:
            p = 2 * idx
            base = off + p * K * P
            base2 = base + K * P
            a0 = vzero(dst)
            a1 = vzero(dst)
            a2 = vzero(dst)
            a3 = vzero(dst)
            b0 = vzero(dst)
            b1 = vzero(dst)
            b2 = vzero(dst)
            b3 = vzero(dst)
            for k in range(K):
                q = base + k * P
                r = base2 + k * P
                x0 = vsplat(vone[k])
                a0 = vfma(wload(w, q), x0, a0)
                a1 = vfma(wload(w, q + L), x0, a1)
                a2 = vfma(wload(w, q + 2 * L), x0, a2)
                a3 = vfma(wload(w, q + 3 * L), x0, a3)
                b0 = vfma(wload(w, r), x0, b0)
                b1 = vfma(wload(w, r + L), x0, b1)
                b2 = vfma(wload(w, r + 2 * L), x0, b2)
                b3 = vfma(wload(w, r + 3 * L), x0, b3)
            if scoff < 0:  # unscaled whole panels: straight into dst
                d = doff + p * P
                vstore(dst, d, vload(dst, d) + a0)
                vstore(dst, d + L, vload(dst, d + L) + a1)
                vstore(dst, d + 2 * L, vload(dst, d + 2 * L) + a2)
                vstore(dst, d + 3 * L, vload(dst, d + 3 * L) + a3)
                d += P
                vstore(dst, d, vload(dst, d) + b0)
                vstore(dst, d + L, vload(dst, d + L) + b1)
                vstore(dst, d + 2 * L, vload(dst, d + 2 * L) + b2)
                vstore(dst, d + 3 * L, vload(dst, d + 3 * L) + b3)
                continue
            so = scoff + p * P
            _emit(dst, doff + p * P, L, a0, a1, a2, a3, P, scratch, soff, sc, so)
            _emit(dst, doff + p * P + P, L, b0, b1, b2, b3, P, scratch, soff, sc, so + P)
            continue
        p = idx + npair
        base = off + p * K * P
        c = doff + p * P
        ncol = min(P, N - p * P)
        so = scoff + p * P if scoff >= 0 else -1
        i = 0
        while i < nv:
            two = i + 1 < nv
            v0 = voff + i * vstride
            va = v[v0 : v0 + K]
            vb = v[v0 + vstride : v0 + vstride + K] if two else va
            a0 = vzero(dst)
            a1 = vzero(dst)
            a2 = vzero(dst)
            a3 = vzero(dst)
            b0 = vzero(dst)
            b1 = vzero(dst)
            b2 = vzero(dst)
            b3 = vzero(dst)
            if two:
                for k in range(K):
                    q = base + k * P
                    w0 = wload(w, q)
                    w1 = wload(w, q + L)
                    w2 = wload(w, q + 2 * L)
                    w3 = wload(w, q + 3 * L)
                    x0 = vsplat(va[k])
                    x1 = vsplat(vb[k])
                    a0 = vfma(w0, x0, a0)
                    a1 = vfma(w1, x0, a1)
                    a2 = vfma(w2, x0, a2)
                    a3 = vfma(w3, x0, a3)
                    b0 = vfma(w0, x1, b0)
                    b1 = vfma(w1, x1, b1)
                    b2 = vfma(w2, x1, b2)
                    b3 = vfma(w3, x1, b3)
                _emit(dst, c + (i + 1) * dstride, L, b0, b1, b2, b3, ncol, scratch, soff, sc, so)
            else:
                for k in range(K):
                    q = base + k * P
                    x0 = vsplat(va[k])
                    a0 = vfma(wload(w, q), x0, a0)
                    a1 = vfma(wload(w, q + L), x0, a1)
                    a2 = vfma(wload(w, q + 2 * L), x0, a2)
                    a3 = vfma(wload(w, q + 3 * L), x0, a3)
            _emit(dst, c + i * dstride, L, a0, a1, a2, a3, ncol, scratch, soff, sc, so)
            i += 2 if two else 1


@njit(inline="always")
def _pair_fma(w, q, L, x, a0, a1, a2, a3, hi):
    """``a_g += x * W_g`` for the 4 gate vectors of one pair-row of a panel at
    ``w[q:]`` (:func:`_ppair`): its upper k when ``hi``, else its lower k."""
    if hi:
        return (vfma(pair_hi(dload(w, q)), x, a0), vfma(pair_hi(dload(w, q + 2 * L)), x, a1),
                vfma(pair_hi(dload(w, q + 4 * L)), x, a2),
                vfma(pair_hi(dload(w, q + 6 * L)), x, a3))
    return (vfma(pair_lo(dload(w, q)), x, a0), vfma(pair_lo(dload(w, q + 2 * L)), x, a1),
            vfma(pair_lo(dload(w, q + 4 * L)), x, a2), vfma(pair_lo(dload(w, q + 6 * L)), x, a3))


@njit(error_model="numpy", _nrt=False)
def _ppair(w, off, K, N, v, voff, vstride, nv, dst, doff, dstride, scratch, soff, rev):
    """:func:`_pgemv` for weights-only bfloat16 panels in pairs (two
    consecutive k of one column per 32-bit lane, lower k first; ``K`` padded
    to even: :func:`_pair_panels`), ``w`` as uint16: each vector of pairs
    widens with one shift (k) or one mask (k + 1), where 16 bfloat16 at a
    time take a shuffle and a shift. Every sum still runs over k in order
    (same bits as :func:`_pgemv`); an odd ``K`` ends with its last k alone.
    The same blocking as :func:`_pgemv`: one row, two panels at a time;
    several rows, two at a time, and a last row alone."""
    L = 16
    P = 64
    npan = (N + P - 1) // P
    Kn = K + (K & 1)
    kp = K // 2
    npair = (N // P) // 2 if nv == 1 else 0
    vone = v[voff : voff + K]
    nsteps = npair + npan - 2 * npair
    for step in range(nsteps):
        idx = nsteps - 1 - step if rev else step
        if idx < npair:
            p = 2 * idx
            base = off + p * Kn * P
            base2 = base + Kn * P
            a0 = a1 = a2 = a3 = b0 = b1 = b2 = b3 = vzero(dst)
            for j in range(kp + (K & 1)):
                q = base + j * 2 * P
                r = base2 + j * 2 * P
                x = vsplat(vone[2 * j])
                a0, a1, a2, a3 = _pair_fma(w, q, L, x, a0, a1, a2, a3, False)
                b0, b1, b2, b3 = _pair_fma(w, r, L, x, b0, b1, b2, b3, False)
                if j < kp:
                    x = vsplat(vone[2 * j + 1])
                    a0, a1, a2, a3 = _pair_fma(w, q, L, x, a0, a1, a2, a3, True)
                    b0, b1, b2, b3 = _pair_fma(w, r, L, x, b0, b1, b2, b3, True)
            _emit(dst, doff + p * P, L, a0, a1, a2, a3, P, scratch, soff, dst, -1)
            _emit(dst, doff + p * P + P, L, b0, b1, b2, b3, P, scratch, soff, dst, -1)
            continue
        p = idx + npair
        base = off + p * Kn * P
        c = doff + p * P
        ncol = min(P, N - p * P)
        i = 0
        while i < nv:
            two = i + 1 < nv
            v0 = voff + i * vstride
            va = v[v0 : v0 + K]
            vb = v[v0 + vstride : v0 + vstride + K] if two else va
            a0 = a1 = a2 = a3 = b0 = b1 = b2 = b3 = vzero(dst)
            for j in range(kp + (K & 1)):
                q = base + j * 2 * P
                a0, a1, a2, a3 = _pair_fma(w, q, L, vsplat(va[2 * j]), a0, a1, a2, a3, False)
                if two:
                    b0, b1, b2, b3 = _pair_fma(w, q, L, vsplat(vb[2 * j]), b0, b1, b2, b3,
                                               False)
                if j < kp:
                    a0, a1, a2, a3 = _pair_fma(w, q, L, vsplat(va[2 * j + 1]), a0, a1, a2, a3,
                                               True)
                    if two:
                        b0, b1, b2, b3 = _pair_fma(w, q, L, vsplat(vb[2 * j + 1]), b0, b1, b2,
                                                   b3, True)
            if two:
                _emit(dst, c + (i + 1) * dstride, L, b0, b1, b2, b3, ncol, scratch, soff, dst, -1)
            _emit(dst, c + i * dstride, L, a0, a1, a2, a3, ncol, scratch, soff, dst, -1)
            i += 2 if two else 1


@njit(error_model="numpy", _nrt=False)
def _emit(dst, d, L, a0, a1, a2, a3, ncol, scratch, soff, sc, so):
    """``dst[d : d + ncol] += [a0 a1 a2 a3][:ncol]`` (a partial panel via
    ``scratch``), each lane first multiplied by its scale ``sc[so + j]``
    when ``so >= 0``."""
    if so >= 0:
        a0 = a0 * vload(sc, so)
        a1 = a1 * vload(sc, so + L)
        a2 = a2 * vload(sc, so + 2 * L)
        a3 = a3 * vload(sc, so + 3 * L)
    if ncol == 4 * L:
        vstore(dst, d, vload(dst, d) + a0)
        vstore(dst, d + L, vload(dst, d + L) + a1)
        vstore(dst, d + 2 * L, vload(dst, d + 2 * L) + a2)
        vstore(dst, d + 3 * L, vload(dst, d + 3 * L) + a3)
    else:
        vstore(scratch, soff, a0)
        vstore(scratch, soff + L, a1)
        vstore(scratch, soff + 2 * L, a2)
        vstore(scratch, soff + 3 * L, a3)
        dv = dst[d : d + ncol]
        sv = scratch[soff : soff + ncol]
        for j in range(ncol):
            dv[j] += sv[j]


@njit(error_model="numpy", _nrt=False)
def _fill_bias(w, boff, N, dst, doff, n):
    """``dst[doff + i*N : +N] = w[boff : boff + N]`` for ``i < n``."""
    b = w[boff : boff + N]
    for i in range(n):
        d = dst[doff + i * N : doff + (i + 1) * N]
        for j in range(N):
            d[j] = b[j]


# ----- one layer over a chunk ------------------------------------------------

def _product(ws, fmt, off, K, N, v, voff, vstride, nv, dst, doff, dstride, scr, rev, scoff,
             koff, qv):
    """:func:`_pgemv` (or :func:`_pdyn`) on the weights at ``off`` in format
    ``fmt`` of ``ws`` (:func:`_views`); ``scoff``: int8 column scales in
    ``w``, ``koff``: int8_dynamic column corrections, ``qv``: its scratch
    (``dst`` is also the scratch array)."""
    raise NotImplementedError  # typed by the overload below


@overload(_product, inline="always")
def _ov_product(ws, fmt, off, K, N, v, voff, vstride, nv, dst, doff, dstride, scr, rev, scoff,
                koff, qv):
    if len(ws.types) == 1:  # a stack of float weights (see _views): no format dispatch
        def plain(ws, fmt, off, K, N, v, voff, vstride, nv, dst, doff, dstride, scr, rev,
                  scoff, koff, qv):
            _pgemv(ws[0], off, K, N, v, voff, vstride, nv, dst, doff, dstride, dst, scr, rev,
                   ws[0], -1)
        return plain

    def impl(ws, fmt, off, K, N, v, voff, vstride, nv, dst, doff, dstride, scr, rev, scoff,
             koff, qv):
        if fmt == INT8DYN:
            _pdyn(ws[3], off, K, N, v, voff, vstride, nv, dst, doff, dstride, scr, rev, ws[0],
                  scoff, koff, ws[4], qv)
        elif fmt == BF16DYN:
            _pdyn(ws[5], off, K, N, v, voff, vstride, nv, dst, doff, dstride, scr, rev, ws[0],
                  scoff, koff, ws[6], qv)
        elif fmt == BF16:
            _ppair(ws[1], off, K, N, v, voff, vstride, nv, dst, doff, dstride, dst, scr, rev)
        elif fmt == INT8:
            _pgemv(ws[2], off, K, N, v, voff, vstride, nv, dst, doff, dstride, dst, scr, rev,
                   ws[0], scoff)
        else:
            _pgemv(ws[0], off, K, N, v, voff, vstride, nv, dst, doff, dstride, dst, scr, rev,
                   ws[0], -1)
    return impl


# ----- the dynamic formats' products (one source, typed by the panels) -----
#
# int8_dynamic panels are int32 (4 int8 weights of 4 k per lane, integer
# sums, vdot), bfloat16_dynamic panels uint32 (2 bfloat16 weights of 2 k per
# lane, float32 sums, bdot); the helpers below pick their form by those
# types when Numba compiles _pdyn, once per format.

def _group(wv):
    """k per panel element: 4 (int8_dynamic) or 2 (bfloat16_dynamic)."""
    raise NotImplementedError  # typed by the overload below


@overload(_group, inline="always")
def _ov_group(wv):
    g = 4 if wv.dtype == types.int32 else 2
    return lambda wv: g


def _acc_zero(wv, wf):
    """A zero accumulator: int32 lanes (int8_dynamic) or float32 lanes."""
    raise NotImplementedError  # typed by the overload below


@overload(_acc_zero, inline="always")
def _ov_acc_zero(wv, wf):
    if wv.dtype == types.int32:
        return lambda wv, wf: izero(0)
    return lambda wv, wf: vzero(wf)


def _dyn_dot(acc, x, w):
    """:func:`.simd.vdot` on int32 accumulators, :func:`.simd.bdot` on float32 ones."""
    raise NotImplementedError  # typed by the overload below


@overload(_dyn_dot, inline="always")
def _ov_dyn_dot(acc, x, w):
    if acc == IVEC:
        return lambda acc, x, w: vdot(acc, x, w)
    return lambda acc, x, w: bdot(acc, x, w)


def _dyn_rows(wv, v, voff, vstride, nv, K, Kp, qa, q0, dst, qv):
    """Round the ``nv`` rows ``v[voff + i*vstride :][:K]`` into ``qa[q0 +
    i*Kp :]``: int8 (uint8, value + 128, padded with 128; scale at
    ``dst[qv + i]``) or bfloat16 (uint16 bits, padded with 0)."""
    raise NotImplementedError  # typed by the overload below


@overload(_dyn_rows, inline="always")
def _ov_dyn_rows(wv, v, voff, vstride, nv, K, Kp, qa, q0, dst, qv):
    if wv.dtype == types.int32:
        def quantized(wv, v, voff, vstride, nv, K, Kp, qa, q0, dst, qv):
            for i in range(nv):
                dst[qv + i] = _quantize_row(v, voff + i * vstride, K, qa, q0 + i * Kp)
                for k in range(K, Kp):
                    qa[q0 + i * Kp + k] = 128
        return quantized

    def rounded(wv, v, voff, vstride, nv, K, Kp, qa, q0, dst, qv):
        vu = v.view(np.uint32)
        for i in range(nv):
            _bfloat16_row(vu, voff + i * vstride, K, qa, q0 + i * Kp)
            for k in range(K, Kp):
                qa[q0 + i * Kp + k] = 0
    return rounded


def _dyn_emit(dst, d, L, a0, a1, a2, a3, rs, ncol, scr, wf, so, ko):
    """``dst[d : d + ncol] +=`` one row's sums of a panel (:func:`_emit`):
    int32 sums less the zero point's column sums ``wf[ko:]``, times the row
    scale ``rs`` and the column scales ``wf[so:]``; float32 sums as they are."""
    raise NotImplementedError  # typed by the overload below


@overload(_dyn_emit, inline="always")
def _ov_dyn_emit(dst, d, L, a0, a1, a2, a3, rs, ncol, scr, wf, so, ko):
    if a0 == IVEC:
        def scaled(dst, d, L, a0, a1, a2, a3, rs, ncol, scr, wf, so, ko):
            sr = vsplat(rs)
            _emit(dst, d, L,
                  itof(isub(a0, dload(wf, ko))) * (sr * vload(wf, so)),
                  itof(isub(a1, dload(wf, ko + L))) * (sr * vload(wf, so + L)),
                  itof(isub(a2, dload(wf, ko + 2 * L))) * (sr * vload(wf, so + 2 * L)),
                  itof(isub(a3, dload(wf, ko + 3 * L))) * (sr * vload(wf, so + 3 * L)),
                  ncol, dst, scr, wf, -1)
        return scaled

    def plain(dst, d, L, a0, a1, a2, a3, rs, ncol, scr, wf, so, ko):
        _emit(dst, d, L, a0, a1, a2, a3, ncol, dst, scr, wf, -1)
    return plain


@njit(error_model="numpy", _nrt=False)
def _pdyn(wv, off, K, N, v, voff, vstride, nv, dst, doff, dstride, scr, rev, wf, scoff, koff, qa,
          qv):
    """The dynamic formats: ``dst[doff + i*dstride + j] += (v_i W)[j]`` with
    each row ``v_i`` (``v[voff + i*vstride :][:K]``) rounded first
    (:func:`_dyn_rows`: at element ``g * (qv + nv) + i * Kp`` of ``qa``, the
    work array as uint8 or uint16, ``g`` k per panel element, ``Kp`` = ``K``
    padded to ``g``) and ``W`` in panels of 64 columns of groups of ``g`` k
    (``wv[off:]``: int32 or uint32, :func:`_grouped_panels`). int8_dynamic: row scales at ``dst[qv + i]``,
    column scales ``wf[scoff:]``, 128 x column sums ``wf[koff:]`` (int32
    bits), both padded to whole panels. Eight independent dot-product chains
    hide the instructions' latency: one row, two panels at a time; several
    rows (a chunk's input, a batch), two rows at a time."""
    L = 16
    P = 64
    g = _group(wv)
    Kp = (K + g - 1) // g * g
    kg = Kp // g
    npan = (N + P - 1) // P
    q0 = g * (qv + nv)
    _dyn_rows(wv, v, voff, vstride, nv, K, Kp, qa, q0, dst, qv)
    npair = (N // P) // 2 if nv == 1 else 0
    nsteps = npair + npan - 2 * npair
    for step in range(nsteps):
        idx = nsteps - 1 - step if rev else step
        if idx < npair:  # one row: two whole panels at a time
            p = 2 * idx
            base = off + p * kg * P
            base2 = base + kg * P
            a0 = _acc_zero(wv, wf)
            a1 = a0
            a2 = a0
            a3 = a0
            b0 = a0
            b1 = a0
            b2 = a0
            b3 = a0
            for k in range(kg):
                q = base + k * P
                r = base2 + k * P
                x = dsplat(qa, q0 + g * k)
                a0 = _dyn_dot(a0, x, dload(wv, q))
                a1 = _dyn_dot(a1, x, dload(wv, q + L))
                a2 = _dyn_dot(a2, x, dload(wv, q + 2 * L))
                a3 = _dyn_dot(a3, x, dload(wv, q + 3 * L))
                b0 = _dyn_dot(b0, x, dload(wv, r))
                b1 = _dyn_dot(b1, x, dload(wv, r + L))
                b2 = _dyn_dot(b2, x, dload(wv, r + 2 * L))
                b3 = _dyn_dot(b3, x, dload(wv, r + 3 * L))
            c = scoff + p * P
            z = koff + p * P
            _dyn_emit(dst, doff + p * P, L, a0, a1, a2, a3, dst[qv], P, scr, wf, c, z)
            _dyn_emit(dst, doff + p * P + P, L, b0, b1, b2, b3, dst[qv], P, scr, wf, c + P,
                      z + P)
            continue
        p = idx + npair
        base = off + p * kg * P
        ncol = min(P, N - p * P)
        so = scoff + p * P
        ko = koff + p * P
        i = 0
        while i < nv:  # two rows at a time: each weight vector loaded once for both
            two = i + 1 < nv
            qi = q0 + i * Kp
            a0 = _acc_zero(wv, wf)
            a1 = a0
            a2 = a0
            a3 = a0
            b0 = a0
            b1 = a0
            b2 = a0
            b3 = a0
            if two:
                for k in range(kg):
                    q = base + k * P
                    w0 = dload(wv, q)
                    w1 = dload(wv, q + L)
                    w2 = dload(wv, q + 2 * L)
                    w3 = dload(wv, q + 3 * L)
                    x = dsplat(qa, qi + g * k)
                    y = dsplat(qa, qi + Kp + g * k)
                    a0 = _dyn_dot(a0, x, w0)
                    a1 = _dyn_dot(a1, x, w1)
                    a2 = _dyn_dot(a2, x, w2)
                    a3 = _dyn_dot(a3, x, w3)
                    b0 = _dyn_dot(b0, y, w0)
                    b1 = _dyn_dot(b1, y, w1)
                    b2 = _dyn_dot(b2, y, w2)
                    b3 = _dyn_dot(b3, y, w3)
            else:
                for k in range(kg):
                    q = base + k * P
                    x = dsplat(qa, qi + g * k)
                    a0 = _dyn_dot(a0, x, dload(wv, q))
                    a1 = _dyn_dot(a1, x, dload(wv, q + L))
                    a2 = _dyn_dot(a2, x, dload(wv, q + 2 * L))
                    a3 = _dyn_dot(a3, x, dload(wv, q + 3 * L))
            _dyn_emit(dst, doff + i * dstride + p * P, L, a0, a1, a2, a3, dst[qv + i], ncol,
                      scr, wf, so, ko)
            if two:
                _dyn_emit(dst, doff + (i + 1) * dstride + p * P, L, b0, b1, b2, b3,
                          dst[qv + i + 1], ncol, scr, wf, so, ko)
            i += 2


@njit(fastmath=_FM, nogil=True, error_model="numpy", _nrt=False)
def _layer(ws, s, work, cfg, l, xin, B, T, y, write_y, zx_off, zh_off, tmp_off, scr, qv):
    """Run layer ``l`` over ``xin`` (flat ``(B, T, D)``), writing ``y`` (flat
    ``(B, T, H)``); ``ws``: the packed weights in each format's view."""
    w = ws[0]
    fmt = cfg[l, _FMT]
    kind = cfg[l, _KIND]
    D = cfg[l, _D]
    H = cfg[l, _H]
    act = cfg[l, _ACT]
    ract = cfg[l, _RACT]
    N = H * (4 if kind == LSTM else (3 if kind == GRU else 1))
    wx, wh, bx, bh = cfg[l, _WX], cfg[l, _WH], cfg[l, _BX], cfg[l, _BH]
    sh, sc = cfg[l, _SH], cfg[l, _SC]
    ra = cfg[l, _RA]
    # Panel order alternates from one product to the next (see _pgemv); the
    # parity carries over from call to call. A single frame on an odd parity
    # runs the recurrent product first, so it starts where the last one ended.
    par = cfg[0, _PAR]
    rec_first = T == 1 and par % 2 == 1
    if not rec_first:
        # Input projection for every step of the chunk: zx[b, t] = x[b, t] W + b_x.
        _fill_bias(w, bx, N, work, zx_off, B * T)
        _product(ws, fmt, wx, D, N, xin, 0, D, B * T, work, zx_off, N, scr, par % 2 == 1,
                 cfg[l, _SX], cfg[l, _KX], qv)
    for t in range(T):
        rev = (par + t) % 2 == 1
        # Recurrent products: zh[b] = h[b] U + b_h (b_h is zero but for a GRU).
        _fill_bias(w, bh, N, work, zh_off, B)
        _product(ws, fmt, wh, H, 2 * H if (kind == GRU and not ra) else N, s, sh, H, B, work,
                 zh_off, N, scr, rev, cfg[l, _SU], cfg[l, _KU], qv)
        if rec_first:
            _fill_bias(w, bx, N, work, zx_off, B)
            _product(ws, fmt, wx, D, N, xin, 0, D, B, work, zx_off, N, scr, rev, cfg[l, _SX],
                     cfg[l, _KX], qv)
        if kind == GRU and not ra:
            # r multiplies h before the candidate's product (Keras 2 / TF1)
            for b in range(B):
                zx = work[zx_off + (b * T + t) * N : zx_off + (b * T + t + 1) * N]
                g = work[zh_off + b * N : zh_off + (b + 1) * N]
                gru_reset_input(zx, g, s[sh + b * H : sh + (b + 1) * H],
                                  work[tmp_off + b * H : tmp_off + (b + 1) * H], H, ract)
            _product(ws, fmt, cfg[l, _WH2], H, H, work, tmp_off, H, B, work, zh_off + 2 * H, N,
                     scr, rev, cfg[l, _SU2], -1, qv)
        for b in range(B):
            zx = work[zx_off + (b * T + t) * N : zx_off + (b * T + t + 1) * N]
            g = work[zh_off + b * N : zh_off + (b + 1) * N]
            h = s[sh + b * H : sh + (b + 1) * H]
            if kind == LSTM:
                _lstm_row(zx, g, h, s[sc + b * H : sc + (b + 1) * H], H, act, ract)
            elif kind == GRU:
                gru_row(zx, g, h, H, ra, act, ract)
            else:
                _simple_row(zx, g, h, H, act)
            if write_y:
                yy = y[(b * T + t) * H : (b * T + t + 1) * H]
                for u in range(H):
                    yy[u] = h[u]


# ----- gate math of one row, one vector of units at a time -------------------

@njit(fastmath=_FM, error_model="numpy", _nrt=False)
def _lstm_row(zx, g, h, c, H, act, ract):
    """``g`` holds the recurrent part of the pre-activations (4H, gates i, f,
    c, o) and ``zx`` the input part; ``c`` and ``h`` are updated in place."""
    L = lanes_of(g)
    for u in range(0, H, L):
        n = min(L, H - u)
        zi = vload_part(g, u, n) + vload_part(zx, u, n)
        zf = vload_part(g, H + u, n) + vload_part(zx, H + u, n)
        zc = vload_part(g, 2 * H + u, n) + vload_part(zx, 2 * H + u, n)
        zo = vload_part(g, 3 * H + u, n) + vload_part(zx, 3 * H + u, n)
        cn, hn = lstm_update(zi, zf, zc, zo, vload_part(c, u, n), False, zi, zi, zi, -1.0,
                             act, ract)
        vstore_part(c, u, cn, n)
        vstore_part(h, u, hn, n)


@njit(fastmath=_FM, error_model="numpy", _nrt=False)
def _simple_row(zx, g, h, H, act):
    L = lanes_of(g)
    for u in range(0, H, L):
        n = min(L, H - u)
        vstore_part(h, u, activate(act, vload_part(g, u, n) + vload_part(zx, u, n)), n)


@njit(inline="always")
def lanes_of(a):
    """Lanes of one vector of ``a``'s dtype."""
    return 64 // a.itemsize


@njit(error_model="numpy", _nrt=False)
def _has_nan(xf):
    for i in range(xf.size):
        if xf[i] != xf[i]:
            return True
    return False


@njit(fastmath=_FM, nogil=True, error_model="numpy", _nrt=False)
def _stack(xf, ws, s, work, cfg, B, T, yf, write_last):
    """Run every layer over the chunk ``xf`` (flat ``(B, T, D)``); last layer -> ``yf``."""
    L = cfg.shape[0]
    nmax = 0
    hmax = 0
    for l in range(L):
        H = cfg[l, _H]
        g = 4 if cfg[l, _KIND] == LSTM else (3 if cfg[l, _KIND] == GRU else 1)
        nmax = max(nmax, g * H)
        hmax = max(hmax, H)
    zx_off = 0
    zh_off = B * T * nmax
    seq_a = zh_off + B * nmax
    seq_b = seq_a + B * T * hmax
    tmp_off = seq_b + B * T * hmax
    scr = tmp_off + B * hmax
    qv = scr + 64  # int8_dynamic: row scales, then the quantized rows' bytes
    xin = xf
    for l in range(L):
        if l == L - 1:
            _layer(ws, s, work, cfg, l, xin, B, T, yf, write_last, zx_off, zh_off, tmp_off, scr,
                   qv)
        else:
            seq = seq_a if l % 2 == 0 else seq_b
            H = cfg[l, _H]
            y = work[seq : seq + B * T * H]
            _layer(ws, s, work, cfg, l, xin, B, T, y, True, zx_off, zh_off, tmp_off, scr, qv)
            xin = y
    cfg[0, _PAR] += T


def _views(w, work):
    """The packed weights as the products read them: ``(w,)`` for a stack of
    float weights; for a stack with quantized layers (``w`` is then the
    bytes, :func:`pack`) ``(w as float32, as uint16, as int8, as int32, work
    as uint8, w as uint32, work as uint16)``: every format's view and the
    dynamic formats' scratch. The
    two kinds compile apart, so a float stack's products carry no format
    dispatch."""
    raise NotImplementedError  # typed by the overload below


@overload(_views, inline="always")
def _ov_views(w, work):
    if w.dtype == types.uint8:
        def every(w, work):
            return (w.view(np.float32), w.view(np.uint16), w.view(np.int8), w.view(np.int32),
                    work.view(np.uint8), w.view(np.uint32), work.view(np.uint16))
        return every

    def plain(w, work):
        return (w,)
    return plain


@njit(cache=True, nogil=True, fastmath=_FM, error_model="numpy")
def frame(x, w, s, work, out, cfg):
    """One frame: ``x (B, D)`` -> ``out (B, P)``, states in ``s`` updated in place."""
    B = x.shape[0]
    xf = x.reshape(x.size)
    if cfg[0, _NAN] and _has_nan(xf):
        return 1
    fpu = flush_denormals()  # until the return (see .fpenv)
    _stack(xf, _views(w, work), s, work, cfg, B, 1, out.reshape(out.size), True)
    restore_fp(fpu)
    return 0


@njit(cache=True, nogil=True, fastmath=_FM, error_model="numpy")
def chunk_seq(x, w, s, work, out, cfg):
    """A chunk ``x (B, T, D)`` -> every step's output ``out (B, T, P)``."""
    B, T = x.shape[0], x.shape[1]
    xf = x.reshape(x.size)
    if cfg[0, _NAN] and _has_nan(xf):
        return 1
    fpu = flush_denormals()
    _stack(xf, _views(w, work), s, work, cfg, B, T, out.reshape(out.size), True)
    restore_fp(fpu)
    return 0


@njit(cache=True, nogil=True, fastmath=_FM, error_model="numpy")
def chunk_last(x, w, s, work, out, cfg):
    """A chunk ``x (B, T, D)`` -> the last step's output ``out (B, P)``."""
    B, T = x.shape[0], x.shape[1]
    xf = x.reshape(x.size)
    if cfg[0, _NAN] and _has_nan(xf):
        return 1
    L = cfg.shape[0]
    fpu = flush_denormals()
    _stack(xf, _views(w, work), s, work, cfg, B, T, out.reshape(out.size), False)
    restore_fp(fpu)
    H = cfg[L - 1, _H]
    sh = cfg[L - 1, _SH]
    for b in range(B):
        for u in range(H):
            out[b, u] = s[sh + b * H + u]
    return 0


# ----- host side -------------------------------------------------------------

def supports(params):
    """``(ok, why)``: can these kernels run ``params``?"""
    kind = params.kind
    if kind not in _KINDS:
        return False, f"unknown cell kind {kind!r}"
    codes = [params.activation]
    if kind != "simple_rnn":
        codes.append(params.recurrent_activation)
    for code in codes:
        if callable(code) or not isinstance(code, (int, np.integer)):
            return False, "a Python callable activation runs on the reference backend only"
    if kind == "lstm":
        if params.peepholes is not None or params.projection is not None \
                or params.cell_clip is not None or params.proj_clip is not None:
            return False, ("LSTM peepholes, projection and clipping are not in the stream "
                           "kernels")
    if params.kernel.dtype not in (np.float32, np.float64):
        return False, f"dtype {params.kernel.dtype} is not float32 or float64"
    if params.precision not in _FORMATS:
        return False, f"{params.precision} weights are not in the stream kernels"
    return True, ""


def supports_all(params_list):
    for p in params_list:
        ok, why = supports(p)
        if not ok:
            return False, why
    dtypes = {np.dtype(p.kernel.dtype) for p in params_list}
    if len(dtypes) != 1:
        return False, "the stacked cells have different dtypes"
    return True, ""


def _panels(W, L):
    """``W (K, N)`` as panels of ``4 L`` columns, each contiguous along ``k``
    (see ``_pgemv``), in ``W``'s dtype."""
    K, N = W.shape
    P = 4 * L
    npan = -(-N // P)
    padded = np.zeros((K, npan * P), W.dtype)
    padded[:, :N] = W
    return padded.reshape(K, npan, P).transpose(1, 0, 2).ravel()


#: The panel element of each dynamic format (see :func:`_grouped_panels`).
_GROUPED = {"int8_dynamic": np.int32, "bfloat16_dynamic": np.uint32}


def _pair_panels(W, L):
    """Weights-only bfloat16 bits ``W (K, N)`` (uint16) in pairs of k, as
    :func:`_ppair` reads them: bfloat16_dynamic's panels, as uint16."""
    return _grouped_panels(W, L, np.uint32).view(np.uint16)


def _grouped_panels(W, L, wide):
    """Narrow ``W (K, N)`` (int8, or bfloat16 bits as uint16) as the dynamic
    formats' panels of ``4 L`` columns: ``wide`` elements (int32: 4 k,
    int8_dynamic; uint32: 2 k, bfloat16_dynamic), ``[panel, kg, column]``,
    each element the ``n`` weights of ``k = n kg .. n kg + n - 1`` of one
    column, lowest ``k`` in the lowest bits (``K`` padded with zero rows to a
    multiple of ``n``)."""
    K, N = W.shape
    n = np.dtype(wide).itemsize // W.dtype.itemsize
    P = 4 * L
    npan = -(-N // P)
    Kn = (K + n - 1) // n * n
    padded = np.zeros((Kn, npan * P), W.dtype)
    padded[:K, :N] = W
    grouped = padded.reshape(Kn // n, n, npan, P).transpose(2, 0, 3, 1)
    return np.ascontiguousarray(grouped).view(wide).ravel()


def _block(a, dt):
    """``a`` stored in ``dt`` elements from a 64-byte boundary: floats
    converted, packed bfloat16 / int8 weights as their bytes."""
    if a.dtype.kind == "f":
        out = np.zeros(-(-a.size // 16) * 16, dt)  # 16 elements: 64 bytes of float32
        out[: a.size] = a
        return out
    raw = np.zeros(-(-a.nbytes // 64) * 64, np.uint8)
    raw[: a.nbytes] = np.ascontiguousarray(a).view(np.uint8)
    return raw.view(dt)


def _scales(scale, L):
    """int8 column scales padded with zeros to whole panels of ``4 L`` columns."""
    P = 4 * L
    out = np.zeros(-(-scale.size // P) * P, np.float32)
    out[: scale.size] = scale
    return out


def pack(params_list, batch_size, nan_raise):
    """``(w, cfg, state_len)`` for a stack of parameter records (bottom to top).

    Quantized records (:func:`fastrnn.kernels.quantize`) keep their compact
    weights: bfloat16 bit patterns or int8 values in ``w``'s bytes, int8
    column scales beside them; ``w`` is then returned as its bytes (uint8),
    which selects the kernels' format dispatch (:func:`_views`)."""
    dt = np.dtype(params_list[0].kernel.dtype)
    L = lanes(dt)
    B = int(batch_size)
    blocks, cfg, woff, soff = [], [], 0, 0
    for p in params_list:
        kind = _KINDS[p.kind]
        D, N = p.kernel.shape
        H = N // _GATES[kind]
        q = p.quantized
        kx = ku = None
        if q is None:
            kernel = np.asarray(p.kernel, np.float64)
            rec = np.asarray(p.recurrent_kernel, np.float64)
            sx = su = None
        else:
            kernel, rec = q.kernel, q.recurrent_kernel
            sx, su = q.kernel_scale, q.recurrent_scale
            if q.mode == "int8_dynamic":  # 128 x column sums, as float32 bits
                kx, ku = (_scales(128 * np.asarray(m, np.int32).sum(axis=0), L).astype(np.int32)
                          .view(np.float32) for m in (kernel, rec))
        su2 = None
        bias = np.asarray(p.bias, np.float64)
        wh2 = None
        if kind == GRU:
            bx, bh = bias[0].copy(), bias[1].copy()
            ra = bool(p.reset_after)
            ract = int(p.recurrent_activation)
            if not ra:  # the candidate's product takes r * h: its own panels
                rec, wh2 = rec[:, : 2 * H], rec[:, 2 * H :]
                if su is not None:
                    su, su2 = su[: 2 * H], su[2 * H :]
        elif kind == LSTM:
            bx, bh = bias.copy(), np.zeros(N)
            bx[H : 2 * H] += p.forget_bias  # TF1's forget_bias folds into the bias
            ra, ract = False, int(p.recurrent_activation)
        else:
            bx, bh = bias.copy(), np.zeros(N)
            ra, ract = False, 0
        row = [-1] * _NCFG
        row[_KIND], row[_D], row[_H] = kind, D, H
        row[_ACT], row[_RACT], row[_RA] = int(p.activation), ract, int(ra)
        row[_NAN] = row[_PAR] = 0
        row[_FMT] = _FORMATS[p.precision]
        wide = _GROUPED.get(p.precision)
        if p.precision == "bfloat16":
            panels = _pair_panels
        elif wide is not None:
            panels = lambda m, L: _grouped_panels(m, L, wide)  # noqa: E731
        else:
            panels = _panels
        parts = [(_WX, panels(kernel, L)), (_WH, panels(rec, L)), (_BX, bx), (_BH, bh)]
        if wh2 is not None:
            parts.append((_WH2, panels(wh2, L)))
        for col, scale in ((_SX, sx), (_SU, su), (_SU2, su2)):
            if scale is not None:
                parts.append((col, _scales(scale, L)))
        if kx is not None:
            parts += [(_KX, kx), (_KU, ku)]
        for col, block in parts:
            stored = _block(block, dt)
            # offsets count elements of the view the kernels read the block with
            row[col] = woff * dt.itemsize // block.itemsize if block.dtype.kind != "f" else woff
            blocks.append(stored)
            woff += stored.size
        row[_SH] = soff
        soff += B * H
        if kind == LSTM:
            row[_SC] = soff
            soff += B * H
        cfg.append(row)
    cfg = np.array(cfg, dtype=np.int64)
    cfg[0, _NAN] = int(bool(nan_raise))
    w = aligned64(np.concatenate(blocks))
    if any(p.quantized is not None for p in params_list):
        w = w.view(np.uint8)  # its bytes: the kernels compile the format dispatch (_views)
    return w, cfg, soff


def state_views(s, cfg, batch_size):
    """The flat state ``s`` as ``(B, size)`` views, Keras order (``h`` then ``c``)."""
    B = int(batch_size)
    views = []
    for row in cfg:
        H = int(row[_H])
        views.append(s[row[_SH] : row[_SH] + B * H].reshape(B, H))
        if row[_SC] >= 0:
            views.append(s[row[_SC] : row[_SC] + B * H].reshape(B, H))
    return views


def work_size(cfg, batch_size, time):
    """Length of the work array for chunks of up to ``time`` steps."""
    B, T = int(batch_size), int(time)
    nmax = max(int(r[_H]) * _GATES[int(r[_KIND])] for r in cfg)
    hmax = max(int(r[_H]) for r in cfg)
    size = B * T * nmax + B * nmax + 2 * B * T * hmax + B * hmax + 64
    kmax = max(max(int(r[_D]), int(r[_H])) for r in cfg)
    fmts = {int(r[_FMT]) for r in cfg}
    # the dynamic formats' rounded rows (after int8_dynamic's row scales)
    rows = max(-(-B * T * ((kmax + 3) // 4 * 4) // 4) if INT8DYN in fmts else 0,
               -(-B * T * (kmax + 1) // 2) if BF16DYN in fmts else 0)
    if rows:
        size += B * T + rows + 16
    return size


def warmup(params):
    """Compile (or load from Numba's cache) the three stream kernels (frame,
    chunk with sequence output, chunk with last output) for the dtype of
    the parameter record ``params``; one compiled kernel per dtype runs
    every cell kind."""
    dt = np.dtype(params.kernel.dtype)
    D, H = params.kernel.shape[0], params.output_size
    w, cfg, state_len = pack([params], 1, False)
    s = np.zeros(state_len, dt)
    work = np.zeros(work_size(cfg, 1, 2), dt)
    frame(np.zeros((1, D), dt), w, s, work, np.zeros((1, H), dt), cfg)
    chunk_seq(np.zeros((1, 2, D), dt), w, s, work, np.zeros((1, 2, H), dt), cfg)
    chunk_last(np.zeros((1, 2, D), dt), w, s, work, np.zeros((1, H), dt), cfg)
