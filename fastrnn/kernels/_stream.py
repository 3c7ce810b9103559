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
recurrence runs step by step: recurrent product, then the gate math as
separate passes over contiguous arrays so every pass vectorises. The
matrix-vector products keep their accumulators in registers through a
small vector type (``_vload``/``_vfma``/...) and reach the L3 bandwidth
from H = 256 up, where the weights no longer fit in L2. This
Numba build has no SVML, so ``math.tanh`` / ``math.exp`` stay scalar; the
float32 kernels use a rational tanh (Eigen's ``ptanh_float`` minimax
coefficients, clamp at +-7.9053, relative error below 1e-6) and the
sigmoid as ``0.5 * (tanh(x / 2) + 1)``, both branch-free and vectorisable.
float64 kernels use ``math.tanh`` (exact). Every function is compiled with
``error_model="numpy"``: Python's error model checks each division for
zero, and that branch keeps LLVM from vectorising the rational tanh.

No BLAS is called (BLAS threads spinning after a call at batch 1 stall
other work), and nothing here allocates: the kernels are ``nogil``, and the
helpers are compiled with ``_nrt=False`` so that a call passes its arrays
without reference counting (a locked atomic per array per call; see
``_cpu_packed``).
The functions return 0, or 1 when NaN was found in the input and the
layer's ``nan_policy`` is ``"raise"`` (checked before any state is written).
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic, models, overload, register_model

from . import _math
from ._simd import aligned64

# cfg columns
_KIND, _D, _H, _ACT, _RACT, _RA, _WX, _WH, _WH2, _BX, _BH, _SH, _SC, _NAN, _PAR = range(15)
_NCFG = 15
SIMPLE, GRU, LSTM = 0, 1, 2
_KINDS = {"simple_rnn": SIMPLE, "gru": GRU, "lstm": LSTM}
_GATES = {SIMPLE: 1, GRU: 3, LSTM: 4}

# Explicit fastmath flags for the gate math (contraction into FMAs,
# reassociation); no 'nnan'/'ninf' (NaN must propagate, sigmoid saturates).
_FM = {"reassoc", "contract", "nsz", "arcp"}


# Scalar path for the activations without a vectorised form (relu, elu, ...).
_, _, _activate = _math.compiled(njit(inline="always", error_model="numpy"))
# Numba's cache keys a cached function on its own file only: an edit of
# _math.py (the activations these kernels inline) does not invalidate it.
# Change this stamp with every such edit. _math: codes 0-24 (2026-12-04).

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


_tanh32 = njit(inline="always", error_model="numpy")(tanh32)


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


@njit(error_model="numpy", _nrt=False)
def _act(a, code):
    """Apply activation ``code`` to the 1-D view ``a`` in place.

    Every loop in this module indexes views from 0 with a ``range`` index:
    an index like ``start + j`` may be negative as far as Numba knows, and
    its wraparound select turns a vector loop into gathers or scalar code.
    """
    n = a.size
    if code == 1:
        for j in range(n):
            a[j] = _vtanh(a[j])
    elif code == 2:
        for j in range(n):
            a[j] = _vsigmoid(a[j])
    elif code != 0:
        for j in range(n):
            a[j] = _activate(code, a[j])


# ----- vectors in registers --------------------------------------------------
# A 64-byte vector value (16 float32 or 8 float64 lanes: one AVX-512 register,
# two AVX2 or four NEON registers) held in local variables, so LLVM keeps the
# matrix-vector accumulators in registers; plain loops over an accumulator
# array load and store it on every multiply-add.

class _VecType(types.Type):
    def __init__(self, dtype, lanes):
        self.dtype = dtype
        self.lanes = lanes
        super().__init__(name=f"StreamVec{lanes}x{dtype}")


_VEC = {types.float32: _VecType(types.float32, 16), types.float64: _VecType(types.float64, 8)}


@register_model(_VecType)
class _VecModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        lane = dmm.lookup(fe_type.dtype).get_value_type()
        super().__init__(dmm, fe_type, ir.VectorType(lane, fe_type.lanes))


def _llvm_vec(context, vty):
    return ir.VectorType(context.get_value_type(vty.dtype), vty.lanes)


def _vec_ptr(context, builder, arrty, arr, idxty, idx, vty):
    ary = context.make_array(arrty)(context, builder, arr)
    i = context.cast(builder, idx, idxty, types.intp)
    return builder.bitcast(builder.gep(ary.data, [i]), _llvm_vec(context, vty).as_pointer())


def _vec_array(arr):
    return isinstance(arr, types.Array) and arr.dtype in _VEC


@intrinsic
def _vload(typingctx, arr, idx):
    """The vector at flat element ``idx`` of a contiguous array (unaligned load)."""
    if not _vec_array(arr):
        return None
    vty = _VEC[arr.dtype]

    def codegen(context, builder, sig, args):
        p = _vec_ptr(context, builder, sig.args[0], args[0], sig.args[1], args[1], vty)
        return builder.load(p, align=arr.dtype.bitwidth // 8)

    return vty(arr, idx), codegen


@intrinsic
def _vstore(typingctx, arr, idx, v):
    if not _vec_array(arr) or v != _VEC[arr.dtype]:
        return None

    def codegen(context, builder, sig, args):
        p = _vec_ptr(context, builder, sig.args[0], args[0], sig.args[1], args[1], v)
        builder.store(args[2], p, align=arr.dtype.bitwidth // 8)
        return context.get_dummy_value()

    return types.none(arr, idx, v), codegen


@intrinsic
def _vsplat(typingctx, x):
    """Every lane set to the scalar ``x`` (float32 or float64)."""
    if x not in _VEC:
        return None
    vty = _VEC[x]

    def codegen(context, builder, sig, args):
        lt = _llvm_vec(context, vty)
        v = builder.insert_element(ir.Constant(lt, ir.Undefined), args[0],
                                   ir.Constant(ir.IntType(32), 0))
        mask = ir.Constant(ir.VectorType(ir.IntType(32), vty.lanes), [0] * vty.lanes)
        return builder.shuffle_vector(v, ir.Constant(lt, ir.Undefined), mask)

    return vty(x), codegen


@intrinsic
def _vzero(typingctx, arr):
    """A zero vector of ``arr``'s dtype."""
    if not _vec_array(arr):
        return None
    vty = _VEC[arr.dtype]

    def codegen(context, builder, sig, args):
        return ir.Constant(_llvm_vec(context, vty), None)

    return vty(arr), codegen


@intrinsic
def _vfma(typingctx, a, b, c):
    """``a * b + c`` lane by lane, fused (``llvm.fma``)."""
    if not isinstance(a, _VecType) or a != b or a != c:
        return None

    def codegen(context, builder, sig, args):
        lt = _llvm_vec(context, a)
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(lt, [lt] * 3),
            "llvm.fma.v%df%d" % (a.lanes, a.dtype.bitwidth))
        return builder.call(fn, list(args))

    return a(a, b, c), codegen


@intrinsic
def _vadd(typingctx, a, b):
    if not isinstance(a, _VecType) or a != b:
        return None

    def codegen(context, builder, sig, args):
        return builder.fadd(args[0], args[1])

    return a(a, b), codegen


def lanes(dtype):
    """Lanes of one vector for ``dtype``: a panel is 4 vectors wide."""
    return 16 if np.dtype(dtype).itemsize == 4 else 8


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
            a0 = _vzero(w)
            a1 = _vzero(w)
            a2 = _vzero(w)
            a3 = _vzero(w)
            b0 = _vzero(w)
            b1 = _vzero(w)
            b2 = _vzero(w)
            b3 = _vzero(w)
            for k in range(K):
                q = base + k * P
                r = base2 + k * P
                x0 = _vsplat(vone[k])
                a0 = _vfma(_vload(w, q), x0, a0)
                a1 = _vfma(_vload(w, q + L), x0, a1)
                a2 = _vfma(_vload(w, q + 2 * L), x0, a2)
                a3 = _vfma(_vload(w, q + 3 * L), x0, a3)
                b0 = _vfma(_vload(w, r), x0, b0)
                b1 = _vfma(_vload(w, r + L), x0, b1)
                b2 = _vfma(_vload(w, r + 2 * L), x0, b2)
                b3 = _vfma(_vload(w, r + 3 * L), x0, b3)
            d = doff + p * P
            _vstore(dst, d, _vadd(_vload(dst, d), a0))
            _vstore(dst, d + L, _vadd(_vload(dst, d + L), a1))
            _vstore(dst, d + 2 * L, _vadd(_vload(dst, d + 2 * L), a2))
            _vstore(dst, d + 3 * L, _vadd(_vload(dst, d + 3 * L), a3))
            d += P
            _vstore(dst, d, _vadd(_vload(dst, d), b0))
            _vstore(dst, d + L, _vadd(_vload(dst, d + L), b1))
            _vstore(dst, d + 2 * L, _vadd(_vload(dst, d + 2 * L), b2))
            _vstore(dst, d + 3 * L, _vadd(_vload(dst, d + 3 * L), b3))
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
            a0 = _vzero(w)
            a1 = _vzero(w)
            a2 = _vzero(w)
            a3 = _vzero(w)
            b0 = _vzero(w)
            b1 = _vzero(w)
            b2 = _vzero(w)
            b3 = _vzero(w)
            if two:
                for k in range(K):
                    q = base + k * P
                    w0 = _vload(w, q)
                    w1 = _vload(w, q + L)
                    w2 = _vload(w, q + 2 * L)
                    w3 = _vload(w, q + 3 * L)
                    x0 = _vsplat(va[k])
                    x1 = _vsplat(vb[k])
                    a0 = _vfma(w0, x0, a0)
                    a1 = _vfma(w1, x0, a1)
                    a2 = _vfma(w2, x0, a2)
                    a3 = _vfma(w3, x0, a3)
                    b0 = _vfma(w0, x1, b0)
                    b1 = _vfma(w1, x1, b1)
                    b2 = _vfma(w2, x1, b2)
                    b3 = _vfma(w3, x1, b3)
                _emit(dst, c + (i + 1) * dstride, L, b0, b1, b2, b3, ncol, scratch, soff)
            else:
                for k in range(K):
                    q = base + k * P
                    x0 = _vsplat(va[k])
                    a0 = _vfma(_vload(w, q), x0, a0)
                    a1 = _vfma(_vload(w, q + L), x0, a1)
                    a2 = _vfma(_vload(w, q + 2 * L), x0, a2)
                    a3 = _vfma(_vload(w, q + 3 * L), x0, a3)
            _emit(dst, c + i * dstride, L, a0, a1, a2, a3, ncol, scratch, soff)
            i += 2 if two else 1


@njit(error_model="numpy", _nrt=False)
def _emit(dst, d, L, a0, a1, a2, a3, ncol, scratch, soff):
    """``dst[d : d + ncol] += [a0 a1 a2 a3][:ncol]`` (a partial panel via ``scratch``)."""
    if ncol == 4 * L:
        _vstore(dst, d, _vadd(_vload(dst, d), a0))
        _vstore(dst, d + L, _vadd(_vload(dst, d + L), a1))
        _vstore(dst, d + 2 * L, _vadd(_vload(dst, d + 2 * L), a2))
        _vstore(dst, d + 3 * L, _vadd(_vload(dst, d + 3 * L), a3))
    else:
        _vstore(scratch, soff, a0)
        _vstore(scratch, soff + L, a1)
        _vstore(scratch, soff + 2 * L, a2)
        _vstore(scratch, soff + 3 * L, a3)
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
    one = w.dtype.type(1)
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
        if kind == GRU:
            if not ra:
                # r multiplies h before the candidate's product (Keras 2 / TF1).
                for b in range(B):
                    zx = work[zx_off + (b * T + t) * N : zx_off + (b * T + t + 1) * N]
                    g = work[zh_off + b * N : zh_off + (b + 1) * N]
                    gr = g[H : 2 * H]
                    xr = zx[H : 2 * H]
                    for u in range(H):
                        gr[u] += xr[u]
                    _act(gr, ract)
                    h = s[sh + b * H : sh + (b + 1) * H]
                    rh = work[tmp_off + b * H : tmp_off + (b + 1) * H]
                    for u in range(H):
                        rh[u] = gr[u] * h[u]
                _pgemv(w, cfg[l, _WH2], H, H, work, tmp_off, H, B, work, zh_off + 2 * H, N,
                       work, scr, rev)
            for b in range(B):
                zx = work[zx_off + (b * T + t) * N : zx_off + (b * T + t + 1) * N]
                g = work[zh_off + b * N : zh_off + (b + 1) * N]
                h = s[sh + b * H : sh + (b + 1) * H]
                gz, gr, gh = g[:H], g[H : 2 * H], g[2 * H : 3 * H]
                xz, xr, xh = zx[:H], zx[H : 2 * H], zx[2 * H : 3 * H]
                for u in range(H):
                    gz[u] += xz[u]
                _act(gz, ract)
                if ra:
                    for u in range(H):
                        gr[u] += xr[u]
                    _act(gr, ract)
                    for u in range(H):
                        gh[u] = xh[u] + gr[u] * gh[u]
                else:
                    for u in range(H):
                        gh[u] += xh[u]
                _act(gh, act)
                for u in range(H):
                    z = gz[u]
                    h[u] = z * h[u] + (one - z) * gh[u]
                if write_y:
                    yy = y[(b * T + t) * H : (b * T + t + 1) * H]
                    for u in range(H):
                        yy[u] = h[u]
        else:
            for b in range(B):
                zx = work[zx_off + (b * T + t) * N : zx_off + (b * T + t + 1) * N]
                g = work[zh_off + b * N : zh_off + (b + 1) * N]
                for j in range(N):
                    g[j] += zx[j]
                h = s[sh + b * H : sh + (b + 1) * H]
                if kind == LSTM:
                    c = s[sc + b * H : sc + (b + 1) * H]
                    tc = work[tmp_off + b * H : tmp_off + (b + 1) * H]
                    gi, gf, gc, go = g[:H], g[H : 2 * H], g[2 * H : 3 * H], g[3 * H : 4 * H]
                    _act(g[: 2 * H], ract)
                    _act(gc, act)
                    _act(go, ract)
                    for u in range(H):
                        cn = gf[u] * c[u] + gi[u] * gc[u]
                        c[u] = cn
                        tc[u] = cn
                    _act(tc, act)
                    for u in range(H):
                        h[u] = go[u] * tc[u]
                else:
                    gh = g[:H]
                    _act(gh, act)
                    for u in range(H):
                        h[u] = gh[u]
                if write_y:
                    yy = y[(b * T + t) * H : (b * T + t + 1) * H]
                    for u in range(H):
                        yy[u] = h[u]


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
    _stack(xf, w, s, work, cfg, B, 1, out.reshape(out.size), True)
    return 0


@njit(cache=True, nogil=True, fastmath=_FM, error_model="numpy")
def chunk_seq(x, w, s, work, out, cfg):
    """A chunk ``x (B, T, D)`` -> every step's output ``out (B, T, P)``."""
    B, T = x.shape[0], x.shape[1]
    xf = x.reshape(x.size)
    if cfg[0, _NAN] and _has_nan(xf):
        return 1
    _stack(xf, w, s, work, cfg, B, T, out.reshape(out.size), True)
    return 0


@njit(cache=True, nogil=True, fastmath=_FM, error_model="numpy")
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


def warmup(dtypes=("float32", "float64")):
    """Compile (or load from Numba's cache) every stream kernel for ``dtypes``.

    The first call of a stream otherwise pays the compilation (seconds) the
    first time a process meets a dtype and a call kind (frame, chunk with
    sequence output, chunk with last output).
    """
    from ..cells import GRUCell, LSTMCell, SimpleRNNCell
    from ..layers import RNN

    for dtype in dtypes:
        for return_sequences in (True, False):
            cells = [LSTMCell(3, dtype=dtype), GRUCell(2, dtype=dtype),
                     SimpleRNNCell(2, dtype=dtype)]
            layer = RNN(cells, return_sequences=return_sequences, dtype=dtype)
            layer.build((1, None, 2))
            stream = layer.stream()
            stream(np.zeros((1, 2), dtype))
            stream(np.zeros((1, 2, 2), dtype))
