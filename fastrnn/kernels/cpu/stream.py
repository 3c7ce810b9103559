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
    LSTM **i, f, c, o**; GRU **z, r, h**.
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
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .fpenv import flush_denormals, restore_fp
from .gates import activate, gru_reset, gru_update, lstm_update
from .simd import aligned64, lanes, vfma, vload, vload_part, vsplat, vstore, vstore_part, vzero

# cfg columns
_KIND, _D, _H, _ACT, _RACT, _RA, _WX, _WH, _WH2, _BX, _BH, _SH, _SC, _NAN, _PAR = range(15)
_NCFG = 15
SIMPLE, GRU, LSTM = 0, 1, 2
_KINDS = {"simple_rnn": SIMPLE, "gru": GRU, "lstm": LSTM}
_GATES = {SIMPLE: 1, GRU: 3, LSTM: 4}

# Explicit fastmath flags (contraction into FMAs, reassociation); no
# 'nnan'/'ninf' (NaN must propagate, sigmoid saturates).
_FM = {"reassoc", "contract", "nsz", "arcp"}


# ----- matrix-vector products ------------------------------------------------

@njit(error_model="numpy", _nrt=False)
def _pgemv(w, off, K, N, v, voff, vstride, nv, dst, doff, dstride, scratch, soff, rev):
    """``dst[doff + i*dstride + j] += sum_k v[voff + i*vstride + k] * W[k, j]``.

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
    L = 16 if w.itemsize == 4 else 8
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
            a0 = vzero(w)
            a1 = vzero(w)
            a2 = vzero(w)
            a3 = vzero(w)
            b0 = vzero(w)
            b1 = vzero(w)
            b2 = vzero(w)
            b3 = vzero(w)
            for k in range(K):
                q = base + k * P
                r = base2 + k * P
                x0 = vsplat(vone[k])
                a0 = vfma(vload(w, q), x0, a0)
                a1 = vfma(vload(w, q + L), x0, a1)
                a2 = vfma(vload(w, q + 2 * L), x0, a2)
                a3 = vfma(vload(w, q + 3 * L), x0, a3)
                b0 = vfma(vload(w, r), x0, b0)
                b1 = vfma(vload(w, r + L), x0, b1)
                b2 = vfma(vload(w, r + 2 * L), x0, b2)
                b3 = vfma(vload(w, r + 3 * L), x0, b3)
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
        p = idx + npair
        base = off + p * K * P
        c = doff + p * P
        ncol = min(P, N - p * P)
        i = 0
        while i < nv:
            two = i + 1 < nv
            v0 = voff + i * vstride
            va = v[v0 : v0 + K]
            vb = v[v0 + vstride : v0 + vstride + K] if two else va
            a0 = vzero(w)
            a1 = vzero(w)
            a2 = vzero(w)
            a3 = vzero(w)
            b0 = vzero(w)
            b1 = vzero(w)
            b2 = vzero(w)
            b3 = vzero(w)
            if two:
                for k in range(K):
                    q = base + k * P
                    w0 = vload(w, q)
                    w1 = vload(w, q + L)
                    w2 = vload(w, q + 2 * L)
                    w3 = vload(w, q + 3 * L)
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
                _emit(dst, c + (i + 1) * dstride, L, b0, b1, b2, b3, ncol, scratch, soff)
            else:
                for k in range(K):
                    q = base + k * P
                    x0 = vsplat(va[k])
                    a0 = vfma(vload(w, q), x0, a0)
                    a1 = vfma(vload(w, q + L), x0, a1)
                    a2 = vfma(vload(w, q + 2 * L), x0, a2)
                    a3 = vfma(vload(w, q + 3 * L), x0, a3)
            _emit(dst, c + i * dstride, L, a0, a1, a2, a3, ncol, scratch, soff)
            i += 2 if two else 1


@njit(error_model="numpy", _nrt=False)
def _emit(dst, d, L, a0, a1, a2, a3, ncol, scratch, soff):
    """``dst[d : d + ncol] += [a0 a1 a2 a3][:ncol]`` (a partial panel via ``scratch``)."""
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

@njit(fastmath=_FM, nogil=True, error_model="numpy", _nrt=False)
def _layer(w, s, work, cfg, l, xin, B, T, y, write_y, zx_off, zh_off, tmp_off, scr):
    """Run layer ``l`` over ``xin`` (flat ``(B, T, D)``), writing ``y`` (flat ``(B, T, H)``)."""
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
        _pgemv(w, wx, D, N, xin, 0, D, B * T, work, zx_off, N, work, scr, par % 2 == 1)
    for t in range(T):
        rev = (par + t) % 2 == 1
        # Recurrent products: zh[b] = h[b] U + b_h (b_h is zero but for a GRU).
        _fill_bias(w, bh, N, work, zh_off, B)
        _pgemv(w, wh, H, 2 * H if (kind == GRU and not ra) else N, s, sh, H, B, work, zh_off,
               N, work, scr, rev)
        if rec_first:
            _fill_bias(w, bx, N, work, zx_off, B)
            _pgemv(w, wx, D, N, xin, 0, D, B, work, zx_off, N, work, scr, rev)
        if kind == GRU and not ra:
            # r multiplies h before the candidate's product (Keras 2 / TF1)
            for b in range(B):
                zx = work[zx_off + (b * T + t) * N : zx_off + (b * T + t + 1) * N]
                g = work[zh_off + b * N : zh_off + (b + 1) * N]
                _gru_reset_before(zx, g, s[sh + b * H : sh + (b + 1) * H],
                                  work[tmp_off + b * H : tmp_off + (b + 1) * H], H, ract)
            _pgemv(w, cfg[l, _WH2], H, H, work, tmp_off, H, B, work, zh_off + 2 * H, N,
                   work, scr, rev)
        for b in range(B):
            zx = work[zx_off + (b * T + t) * N : zx_off + (b * T + t + 1) * N]
            g = work[zh_off + b * N : zh_off + (b + 1) * N]
            h = s[sh + b * H : sh + (b + 1) * H]
            if kind == LSTM:
                _lstm_row(zx, g, h, s[sc + b * H : sc + (b + 1) * H], H, act, ract)
            elif kind == GRU:
                _gru_row(zx, g, h, H, ra, act, ract)
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
def _gru_row(zx, g, h, H, ra, act, ract):
    """``g``/``zx``: the recurrent/input parts of the pre-activations (3H,
    gates z, r, h; without ``ra``, ``g``'s candidate part already holds
    ``(r * h) U_h + b_rh``); ``h`` is updated in place."""
    L = lanes_of(g)
    for u in range(0, H, L):
        n = min(L, H - u)
        zz = vload_part(g, u, n) + vload_part(zx, u, n)
        if ra:
            zh = gru_reset(vload_part(g, H + u, n) + vload_part(zx, H + u, n),
                           vload_part(zx, 2 * H + u, n), vload_part(g, 2 * H + u, n), ract)
        else:
            zh = vload_part(g, 2 * H + u, n) + vload_part(zx, 2 * H + u, n)
        vstore_part(h, u, gru_update(zz, zh, vload_part(h, u, n), act, ract), n)


@njit(fastmath=_FM, error_model="numpy", _nrt=False)
def _gru_reset_before(zx, g, h, rh, H, ract):
    """``rh = r * h`` with ``r = ract(g_r + zx_r)``: the input of the
    candidate's product when ``reset_after=False`` (Keras 2, TF1)."""
    L = lanes_of(g)
    for u in range(0, H, L):
        n = min(L, H - u)
        r = activate(ract, vload_part(g, H + u, n) + vload_part(zx, H + u, n))
        vstore_part(rh, u, r * vload_part(h, u, n), n)


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
def _stack(xf, w, s, work, cfg, B, T, yf, write_last):
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
    xin = xf
    for l in range(L):
        if l == L - 1:
            _layer(w, s, work, cfg, l, xin, B, T, yf, write_last, zx_off, zh_off, tmp_off, scr)
        else:
            seq = seq_a if l % 2 == 0 else seq_b
            H = cfg[l, _H]
            y = work[seq : seq + B * T * H]
            _layer(w, s, work, cfg, l, xin, B, T, y, True, zx_off, zh_off, tmp_off, scr)
            xin = y
    cfg[0, _PAR] += T


@njit(cache=True, nogil=True, fastmath=_FM, error_model="numpy")
def frame(x, w, s, work, out, cfg):
    """One frame: ``x (B, D)`` -> ``out (B, P)``, states in ``s`` updated in place."""
    B = x.shape[0]
    xf = x.reshape(x.size)
    if cfg[0, _NAN] and _has_nan(xf):
        return 1
    fpu = flush_denormals()  # until the return (see .fpenv)
    _stack(xf, w, s, work, cfg, B, 1, out.reshape(out.size), True)
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
    _stack(xf, w, s, work, cfg, B, T, out.reshape(out.size), True)
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
    _stack(xf, w, s, work, cfg, B, T, out.reshape(out.size), False)
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
    """``W (K, N)`` as panels of ``4 L`` columns, each contiguous along ``k`` (see ``_pgemv``)."""
    K, N = W.shape
    P = 4 * L
    npan = -(-N // P)
    padded = np.zeros((K, npan * P))
    padded[:, :N] = W
    return padded.reshape(K, npan, P).transpose(1, 0, 2).ravel()


def pack(params_list, batch_size, nan_raise):
    """``(w, cfg, state_len)`` for a stack of parameter records (bottom to top)."""
    dt = np.dtype(params_list[0].kernel.dtype)
    L = lanes(dt)
    B = int(batch_size)
    blocks, cfg, woff, soff = [], [], 0, 0
    for p in params_list:
        kind = _KINDS[p.kind]
        D, N = p.kernel.shape
        H = N // _GATES[kind]
        kernel = np.asarray(p.kernel, np.float64)
        rec = np.asarray(p.recurrent_kernel, np.float64)
        bias = np.asarray(p.bias, np.float64)
        wh2 = None
        if kind == GRU:
            bx, bh = bias[0].copy(), bias[1].copy()
            ra = bool(p.reset_after)
            ract = int(p.recurrent_activation)
            if not ra:  # the candidate's product takes r * h: its own panels
                rec, wh2 = rec[:, : 2 * H], rec[:, 2 * H :]
        elif kind == LSTM:
            bx, bh = bias.copy(), np.zeros(N)
            bx[H : 2 * H] += p.forget_bias  # TF1's forget_bias folds into the bias
            ra, ract = False, int(p.recurrent_activation)
        else:
            bx, bh = bias.copy(), np.zeros(N)
            ra, ract = False, 0
        row = [0] * _NCFG
        row[_KIND], row[_D], row[_H] = kind, D, H
        row[_ACT], row[_RACT], row[_RA] = int(p.activation), ract, int(ra)
        parts = [(_WX, _panels(kernel, L)), (_WH, _panels(rec, L)), (_BX, bx), (_BH, bh)]
        if wh2 is not None:
            parts.append((_WH2, _panels(wh2, L)))
        row[_WH2] = -1
        for col, block in parts:
            row[col] = woff
            size = -(-block.size // 16) * 16  # every block starts 64-byte aligned
            padded = np.zeros(size)
            padded[: block.size] = block
            blocks.append(padded)
            woff += size
        row[_SH] = soff
        soff += B * H
        if kind == LSTM:
            row[_SC] = soff
            soff += B * H
        else:
            row[_SC] = -1
        cfg.append(row)
    cfg = np.array(cfg, dtype=np.int64)
    cfg[0, _NAN] = int(bool(nan_raise))
    return aligned64(np.concatenate(blocks).astype(dt)), cfg, soff


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
    return B * T * nmax + B * nmax + 2 * B * T * hmax + B * hmax + 64


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
