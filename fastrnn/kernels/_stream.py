"""Small-batch step kernels for :class:`fastrnn.streaming.Stream`.

A stream calls one compiled function per frame (``frame``) or per chunk
(``chunk_seq`` / ``chunk_last``) for its whole stack of cells. Everything
lives in four flat arrays prepared once by :func:`pack`:

``w``
    All packed weights of all layers, in the stream's dtype: per layer the
    input kernel transposed to ``(N, D)`` rows (``N = gates * units``), the
    recurrent kernel transposed to ``(N, H)`` rows, the input-side bias
    ``(N,)`` and the recurrent-side bias ``(N,)``. Each output row of a
    matrix-vector product is then a contiguous dot product that LLVM
    vectorises (a float32 row of 64 is four AVX-512 vectors). Gate order
    inside ``N`` is Keras's: LSTM **i, f, c, o**; GRU **z, r, h**.
``s``
    The states, per layer ``h (B, H)`` then (LSTM) ``c (B, H)``, updated in
    place: a step reads the whole old state before it writes the new one.
``work``
    Scratch: the hoisted input projection of a chunk ``(B, T, N)``, the
    recurrent pre-activations ``(B, N)``, two sequence buffers for the
    outputs of inner layers ``(B, T, H)``, and one ``(B, H)`` temporary.
``cfg``
    ``int64 (layers, _NCFG)``: kind, sizes, activation codes and offsets.

Per layer and chunk the input projection ``x W + b`` is computed for all
steps first (each weight row is loaded once and used for every step), then
the recurrence runs step by step: recurrent product, then the gate math as
separate passes over contiguous arrays so every pass vectorises. This
Numba build has no SVML, so ``math.tanh`` / ``math.exp`` stay scalar; the
float32 kernels use a rational tanh (Eigen's ``ptanh_float`` minimax
coefficients, clamp at +-7.9053, relative error below 1e-6) and the
sigmoid as ``0.5 * (tanh(x / 2) + 1)``, both branch-free and vectorisable.
float64 kernels use ``math.tanh`` (exact).

No BLAS is called (BLAS threads spinning after a call at batch 1 stall
other work), and nothing here allocates: the kernels are ``nogil``.
The functions return 0, or 1 when NaN was found in the input and the
layer's ``nan_policy`` is ``"raise"`` (checked before any state is written).
"""

from __future__ import annotations

import math
import types as _pytypes

import numpy as np
from numba import njit, types
from numba.extending import overload

from . import _math

# cfg columns
_KIND, _D, _H, _ACT, _RACT, _RA, _WX, _WH, _BX, _BH, _SH, _SC, _NAN = range(13)
_NCFG = 13
SIMPLE, GRU, LSTM = 0, 1, 2
_KINDS = {"simple_rnn": SIMPLE, "gru": GRU, "lstm": LSTM}
_GATES = {SIMPLE: 1, GRU: 3, LSTM: 4}

# Explicit fastmath flags: reassociation lets LLVM vectorise the dot-product
# reductions; no 'nnan'/'ninf' (NaN must propagate, sigmoid saturates).
_FM = {"reassoc", "contract", "nsz", "arcp"}



def _jit_math(fn, **extra):
    """Compile a function of :mod:`._math`, its module-level helpers compiled too."""
    scope = dict(vars(_math))
    scope.update(extra)
    return njit(inline="always")(_pytypes.FunctionType(fn.__code__, scope, fn.__name__))


# Scalar path for the activations without a vectorised form (relu, elu, ...).
_activate = _jit_math(_math.activate, sigmoid=_jit_math(_math.sigmoid))

# ----- activations -----------------------------------------------------------

_T_CLAMP = np.float32(7.90531110763549805)
_T_TINY = np.float32(0.0004)
_A1 = np.float32(4.89352455891786e-03)
_A3 = np.float32(6.37261928875436e-04)
_A5 = np.float32(1.48572235717979e-05)
_A7 = np.float32(5.12229709037114e-08)
_A9 = np.float32(-8.60467152213735e-11)
_A11 = np.float32(2.00018790482477e-13)
_A13 = np.float32(-2.76076847742355e-16)
_B0 = np.float32(4.89352518554385e-03)
_B2 = np.float32(2.26843463243900e-03)
_B4 = np.float32(1.18534705686654e-04)
_B6 = np.float32(1.19825839466702e-06)
_HALF32 = np.float32(0.5)
_ONE32 = np.float32(1.0)


def tanh32(x):
    """float32 tanh, rational minimax approximation; NaN propagates."""
    # Written so that NaN fails both comparisons and passes through.
    c = _T_CLAMP if x > _T_CLAMP else (-_T_CLAMP if x < -_T_CLAMP else x)
    x2 = c * c
    p = x2 * _A13 + _A11
    p = x2 * p + _A9
    p = x2 * p + _A7
    p = x2 * p + _A5
    p = x2 * p + _A3
    p = x2 * p + _A1
    p = c * p
    q = x2 * _B6 + _B4
    q = x2 * q + _B2
    q = x2 * q + _B0
    r = p / q
    return c if abs(c) < _T_TINY else r


_tanh32 = njit(inline="always")(tanh32)


def _vtanh(x):  # typed by the overload below
    raise NotImplementedError


def _vsigmoid(x):
    raise NotImplementedError


@overload(_vtanh)
def _ov_tanh(x):
    if x == types.float32:
        return lambda x: _tanh32(x)
    return lambda x: math.tanh(x)


@overload(_vsigmoid)
def _ov_sigmoid(x):
    if x == types.float32:
        return lambda x: _HALF32 * (_tanh32(_HALF32 * x) + _ONE32)
    return lambda x: 0.5 * (math.tanh(0.5 * x) + 1.0)


@njit
def _act(buf, start, n, code):
    """Apply activation ``code`` to ``buf[start:start + n]`` in place."""
    if code == 1:
        for j in range(start, start + n):
            buf[j] = _vtanh(buf[j])
    elif code == 2:
        for j in range(start, start + n):
            buf[j] = _vsigmoid(buf[j])
    elif code != 0:
        for j in range(start, start + n):
            buf[j] = _activate(code, buf[j])


# ----- matrix-vector products ------------------------------------------------

@njit(fastmath=_FM)
def _gemv(w, woff, K, r0, r1, v, voff, vstride, nv, dst, doff, dstride):
    """``dst[doff + i*dstride + j] += w[woff + j*K : +K] . v[voff + i*vstride : +K]``.

    For rows ``r0 <= j < r1`` and vectors ``0 <= i < nv``: each weight row
    is loaded once and used for every vector (steps of a chunk, or rows of
    the batch).
    """
    zero = w.dtype.type(0)
    for j in range(r0, r1):
        wr = w[woff + j * K : woff + (j + 1) * K]
        for i in range(nv):
            vo = voff + i * vstride
            vr = v[vo : vo + K]
            a = zero
            for k in range(K):
                a += wr[k] * vr[k]
            dst[doff + i * dstride + j] += a


@njit
def _fill_bias(w, boff, N, dst, doff, n):
    """``dst[doff + i*N : +N] = w[boff : boff + N]`` for ``i < n``."""
    for i in range(n):
        o = doff + i * N
        for j in range(N):
            dst[o + j] = w[boff + j]


# ----- one layer over a chunk ------------------------------------------------

@njit(fastmath=_FM, nogil=True)
def _layer(w, s, work, cfg, l, xin, B, T, y, write_y, zx_off, zh_off, tmp_off):
    """Run layer ``l`` over ``xin`` (flat ``(B, T, D)``), writing ``y`` (flat ``(B, T, H)``)."""
    kind = cfg[l, _KIND]
    D = cfg[l, _D]
    H = cfg[l, _H]
    act = cfg[l, _ACT]
    ract = cfg[l, _RACT]
    N = H * (4 if kind == LSTM else (3 if kind == GRU else 1))
    wx, wh, bx, bh = cfg[l, _WX], cfg[l, _WH], cfg[l, _BX], cfg[l, _BH]
    sh, sc = cfg[l, _SH], cfg[l, _SC]
    one = w.dtype.type(1)
    # Input projection for every step of the chunk: zx[b, t] = x[b, t] W + b_x.
    _fill_bias(w, bx, N, work, zx_off, B * T)
    _gemv(w, wx, D, 0, N, xin, 0, D, B * T, work, zx_off, N)
    for t in range(T):
        if kind == GRU:
            rows = N if cfg[l, _RA] else 2 * H
            _fill_bias(w, bh, N, work, zh_off, B)
            _gemv(w, wh, H, 0, rows, s, sh, H, B, work, zh_off, N)
            if not cfg[l, _RA]:
                # r multiplies h before the candidate's product (Keras 2 / TF1).
                for b in range(B):
                    zo = zx_off + (b * T + t) * N
                    go = zh_off + b * N
                    for u in range(H, 2 * H):
                        work[go + u] += work[zo + u]
                    _act(work, go + H, H, ract)
                    for u in range(H):
                        work[tmp_off + b * H + u] = work[go + H + u] * s[sh + b * H + u]
                _gemv(w, wh, H, 2 * H, N, work, tmp_off, H, B, work, zh_off, N)
            for b in range(B):
                zo = zx_off + (b * T + t) * N
                go = zh_off + b * N
                ho = sh + b * H
                for u in range(H):
                    work[go + u] += work[zo + u]
                _act(work, go, H, ract)
                if cfg[l, _RA]:
                    for u in range(H, 2 * H):
                        work[go + u] += work[zo + u]
                    _act(work, go + H, H, ract)
                    for u in range(2 * H, 3 * H):
                        work[go + u] = work[zo + u] + work[go + u - H] * work[go + u]
                else:
                    for u in range(2 * H, 3 * H):
                        work[go + u] += work[zo + u]
                _act(work, go + 2 * H, H, act)
                for u in range(H):
                    z = work[go + u]
                    hn = z * s[ho + u] + (one - z) * work[go + 2 * H + u]
                    s[ho + u] = hn
                if write_y:
                    yo = (b * T + t) * H
                    for u in range(H):
                        y[yo + u] = s[ho + u]
        else:
            for b in range(B):
                zo = zx_off + (b * T + t) * N
                go = zh_off + b * N
                for j in range(N):
                    work[go + j] = work[zo + j]
            _gemv(w, wh, H, 0, N, s, sh, H, B, work, zh_off, N)
            for b in range(B):
                go = zh_off + b * N
                ho = sh + b * H
                if kind == LSTM:
                    co = sc + b * H
                    to = tmp_off + b * H
                    _act(work, go, 2 * H, ract)
                    _act(work, go + 2 * H, H, act)
                    _act(work, go + 3 * H, H, ract)
                    for u in range(H):
                        cn = work[go + H + u] * s[co + u] + work[go + u] * work[go + 2 * H + u]
                        s[co + u] = cn
                        work[to + u] = cn
                    _act(work, to, H, act)
                    for u in range(H):
                        s[ho + u] = work[go + 3 * H + u] * work[to + u]
                else:
                    _act(work, go, H, act)
                    for u in range(H):
                        s[ho + u] = work[go + u]
                if write_y:
                    yo = (b * T + t) * H
                    for u in range(H):
                        y[yo + u] = s[ho + u]


@njit
def _has_nan(xf):
    for i in range(xf.size):
        if xf[i] != xf[i]:
            return True
    return False


@njit(fastmath=_FM, nogil=True)
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
    xin = xf
    for l in range(L):
        if l == L - 1:
            _layer(w, s, work, cfg, l, xin, B, T, yf, write_last, zx_off, zh_off, tmp_off)
        else:
            seq = seq_a if l % 2 == 0 else seq_b
            H = cfg[l, _H]
            y = work[seq : seq + B * T * H]
            _layer(w, s, work, cfg, l, xin, B, T, y, True, zx_off, zh_off, tmp_off)
            xin = y


@njit(cache=True, nogil=True, fastmath=_FM)
def frame(x, w, s, work, out, cfg):
    """One frame: ``x (B, D)`` -> ``out (B, P)``, states in ``s`` updated in place."""
    B = x.shape[0]
    xf = x.reshape(x.size)
    if cfg[0, _NAN] and _has_nan(xf):
        return 1
    _stack(xf, w, s, work, cfg, B, 1, out.reshape(out.size), True)
    return 0


@njit(cache=True, nogil=True, fastmath=_FM)
def chunk_seq(x, w, s, work, out, cfg):
    """A chunk ``x (B, T, D)`` -> every step's output ``out (B, T, P)``."""
    B, T = x.shape[0], x.shape[1]
    xf = x.reshape(x.size)
    if cfg[0, _NAN] and _has_nan(xf):
        return 1
    _stack(xf, w, s, work, cfg, B, T, out.reshape(out.size), True)
    return 0


@njit(cache=True, nogil=True, fastmath=_FM)
def chunk_last(x, w, s, work, out, cfg):
    """A chunk ``x (B, T, D)`` -> the last step's output ``out (B, P)``."""
    B, T = x.shape[0], x.shape[1]
    xf = x.reshape(x.size)
    if cfg[0, _NAN] and _has_nan(xf):
        return 1
    L = cfg.shape[0]
    _stack(xf, w, s, work, cfg, B, T, out.reshape(out.size), False)
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


def pack(params_list, batch_size, nan_raise):
    """``(w, cfg, state_len)`` for a stack of parameter records (bottom to top)."""
    dt = np.dtype(params_list[0].kernel.dtype)
    B = int(batch_size)
    blocks, cfg, woff, soff = [], [], 0, 0
    for p in params_list:
        kind = _KINDS[p.kind]
        D, N = p.kernel.shape
        H = N // _GATES[kind]
        wx = np.ascontiguousarray(np.asarray(p.kernel, np.float64).T)
        wh = np.ascontiguousarray(np.asarray(p.recurrent_kernel, np.float64).T)
        bias = np.asarray(p.bias, np.float64)
        if kind == GRU:
            bx, bh = bias[0].copy(), bias[1].copy()
            ra = bool(p.reset_after)
            ract = int(p.recurrent_activation)
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
        for col, block in ((_WX, wx), (_WH, wh), (_BX, bx), (_BH, bh)):
            row[col] = woff
            blocks.append(block.ravel())
            woff += block.size
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
    w = np.concatenate(blocks).astype(dt)
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
    return B * T * nmax + B * nmax + 2 * B * T * hmax + B * hmax + 16
