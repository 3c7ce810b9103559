"""Packed float32 kernels: weights in panels, a register-blocked SIMD tile.

Used by the CPU backend for float32 LSTM (no projection) and GRU with
``reset_after=True``, the configurations that carry nearly all real traffic;
everything else runs ``_cpu_generic``.

Layout (built once by :func:`pack_lstm` / :func:`pack_gru`)
-----------------------------------------------------------
The units are cut into panels of 16 (the vector width). Panel ``p`` holds,
for its 16 units, the columns of every gate (LSTM **i, f, c, o**: 64
columns; GRU **z, r, h**: 48), for ``K = D + H`` rows: first the input
kernel's ``D`` rows, then the recurrent kernel's ``H`` rows, contiguous
along ``k``. The input projection is therefore folded into each step's
``k`` loop and nothing grows with ``T``. A unit count that is not a
multiple of 16 pads the last panel with zero columns; padded lanes are
computed and never read.

The tile keeps 6 batch rows x 4 vectors of 16 floats in registers (24
accumulators: 4 loads, 6 broadcasts and 24 FMAs per ``k``; 4-, 2- and
1-row tiles take the rows left over) and applies the gate math to those
registers right after the ``k`` loops, so pre-activations never go through
memory. GRU's four vectors are z, r, the input part of h and the recurrent
part of h (``reset_after=True`` needs them apart).

Memory, not arithmetic, sets the pace once the rows fill a tile: a 4-row
tile needs 256 bytes of panel per 8 cycles of FMAs, about what a core's L2
delivers on the Intel Xeon these kernels were last tuned on; 6 rows need
2/3 of that. Weights beyond L2 come from L3 far slower than the tiles
consume them, so while a panel's tiles run, each multi-row tile also
prefetches a quarter (GRU: a third) of the next panel into L2
(``prefetcht1``, one line per ``k``): the first tile of the next panel then
finds it in L2 instead of stalling on L3. The 6- and 4-row tiles also ask
for the panel's rows 8 ``k`` ahead into L1 (``prefetcht0``). What these
bought, ``python -m fastrnn bench`` before and after (cpu / ONNX Runtime):
LSTM B=32 D=256 H=512 1.18 -> 0.86, B=64 D=512 H=1024 1.08 -> 0.83.

Reference counting: every helper below the drivers is compiled with
``_nrt=False``. Numba otherwise increments and decrements the reference
count of each array argument of every call that LLVM does not inline; each
is a locked atomic, and in the panel split both threads hit the same
counters, so the cache line bounced between the cores. ``perf`` put 80% of
a one-row kernel's time in ``NRT_incref``/``NRT_decref``; without them a
batch-1 LSTM step (H=128) fell from 3.9 to 2.9 us on one thread and from
2.3 to 1.8 us on two. The helpers allocate nothing and keep no array
beyond the call, so the arrays they are handed (owned by the drivers) are
safe without counting.

State lives in a private double buffer of ``2 x rows x Hp`` floats
(``Hp`` = units rounded up to 16): step ``s`` reads half ``s % 2`` and
writes the other; the cell state is updated in place (each lane only reads
its own).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ._cpu_math import activate as _activate
# Numba's cache keys a cached function on its own file only: an edit of
# _math.py (the activations these kernels inline) does not invalidate it.
# Change this stamp with every such edit. _math: codes 0-24 (2026-12-04).
from ._simd import (aligned64, atomic_add, atomic_cas, atomic_load, cpu_relax, futex_wait, futex_wake,
                    sload, prefetch_l1, prefetch_l2, vclamp, vfma, vload, vmul, vrelu, vsigmoid, vsplat, vstore, vsub, vtanh)

LANES = 16
# A single row with large weights (``hoist``) takes its input sums (bias +
# x . W) for runs of this many steps at a time, 6 steps per weight load,
# into a buffer of NP x HOIST_STEPS x 64 floats (see ``_hoisted``); each
# step then streams only the recurrent rows of the panels.
HOIST_STEPS = 24


@njit(inline="always")
def vact(code, v, scratch):
    """Activation ``code`` on 16 lanes; vector forms for the common codes,
    a scalar loop through ``scratch`` (16 floats) for the rest."""
    if code == 1:
        return vtanh(v)
    if code == 2:
        return vsigmoid(v)
    if code == 0:
        return v
    if code == 3:
        return vclamp(vfma(v, vsplat(1.0 / 6.0), vsplat(0.5)), vsplat(0.0), vsplat(1.0))
    if code == 4:
        return vrelu(v)
    vstore(scratch, 0, v)
    _act_lanes(code, scratch)
    return vload(scratch, 0)


@njit(nogil=True, _nrt=False)
def _act_lanes(code, scratch):
    """The rarer activations, lane by lane (one compiled copy, called from
    every ``vact``: inlining it everywhere multiplied the compile time)."""
    for lane in range(LANES):
        scratch[lane] = _activate(code, scratch[lane])


# The gate math. Keras' defaults (tanh, sigmoid; no peepholes or clip) take
# a straight-line path; any other configuration goes through ``vact``'s
# dispatch on the activation codes.


@njit(inline="always")
def _lstm_std(ai, af, ac, ao, cold):
    """New (c, h) of one row, tanh/sigmoid, no peepholes, no clip."""
    cn = vfma(vsigmoid(af), cold, vmul(vsigmoid(ai), vtanh(ac)))
    return cn, vmul(vsigmoid(ao), vtanh(cn))


@njit(inline="always")
def _lstm_put(valid, ro, pu, cur, nxt, hf, cb, cn, h):
    if valid:
        vstore(cb, ro + pu, cn)
        vstore(hf, nxt + ro + pu, h)
    else:  # masked step: carry the state
        vstore(hf, nxt + ro + pu, vload(hf, cur + ro + pu))


@njit(inline="always")
def _lstm_is_std(has_peep, cell_clip, act, ract):
    return act == 1 and ract == 2 and not has_peep and cell_clip < 0.0


@njit(nogil=True, _nrt=False)
def _lstm_cell(ai, af, ac, ao, valid, ro, pu, cur, nxt, hf, cb, peep, has_peep, Hp,
               cell_clip, act, ract, scratch):
    if not valid:  # masked step: carry the state
        vstore(hf, nxt + ro + pu, vload(hf, cur + ro + pu))
        return
    if _lstm_is_std(has_peep, cell_clip, act, ract):
        cn, h = _lstm_std(ai, af, ac, ao, vload(cb, ro + pu))
        _lstm_put(True, ro, pu, cur, nxt, hf, cb, cn, h)
        return
    cold = vload(cb, ro + pu)
    if has_peep:
        ai = vfma(vload(peep, pu), cold, ai)
        af = vfma(vload(peep, Hp + pu), cold, af)
    i = vact(ract, ai, scratch)
    f = vact(ract, af, scratch)
    cn = vfma(f, cold, vmul(i, vact(act, ac, scratch)))
    if cell_clip >= 0.0:
        cn = vclamp(cn, vsplat(-cell_clip), vsplat(cell_clip))
    if has_peep:
        ao = vfma(vload(peep, 2 * Hp + pu), cn, ao)
    o = vact(ract, ao, scratch)
    vstore(cb, ro + pu, cn)
    vstore(hf, nxt + ro + pu, vmul(o, vact(act, cn, scratch)))


@njit(nogil=True, _nrt=False)
def _lstm_cell4(i0, f0, c0, o0, i1, f1, c1, o1, i2, f2, c2, o2, i3, f3, c3, o3,
                v0, v1, v2, v3, ro0, ro1, ro2, ro3, pu, cur, nxt, hf, cb, peep, has_peep, Hp,
                cell_clip, act, ract, scratch):
    """The gate math of a 4-row tile in one call: the four rows' chains are
    independent, so in straight-line code the core overlaps them (four
    calls of ``_lstm_cell`` cost about twice as much)."""
    if _lstm_is_std(has_peep, cell_clip, act, ract):
        cn0, h0 = _lstm_std(i0, f0, c0, o0, vload(cb, ro0 + pu))
        cn1, h1 = _lstm_std(i1, f1, c1, o1, vload(cb, ro1 + pu))
        cn2, h2 = _lstm_std(i2, f2, c2, o2, vload(cb, ro2 + pu))
        cn3, h3 = _lstm_std(i3, f3, c3, o3, vload(cb, ro3 + pu))
        _lstm_put(v0, ro0, pu, cur, nxt, hf, cb, cn0, h0)
        _lstm_put(v1, ro1, pu, cur, nxt, hf, cb, cn1, h1)
        _lstm_put(v2, ro2, pu, cur, nxt, hf, cb, cn2, h2)
        _lstm_put(v3, ro3, pu, cur, nxt, hf, cb, cn3, h3)
        return
    _lstm_cell(i0, f0, c0, o0, v0, ro0, pu, cur, nxt, hf, cb, peep, has_peep, Hp, cell_clip, act, ract, scratch)
    _lstm_cell(i1, f1, c1, o1, v1, ro1, pu, cur, nxt, hf, cb, peep, has_peep, Hp, cell_clip, act, ract, scratch)
    _lstm_cell(i2, f2, c2, o2, v2, ro2, pu, cur, nxt, hf, cb, peep, has_peep, Hp, cell_clip, act, ract, scratch)
    _lstm_cell(i3, f3, c3, o3, v3, ro3, pu, cur, nxt, hf, cb, peep, has_peep, Hp, cell_clip, act, ract, scratch)


@njit(inline="always")
def _gru_std(az, ar, ax, ah, hprev):
    """New h of one row, tanh/sigmoid: z * h + (1 - z) * hh."""
    hh = vtanh(vfma(vsigmoid(ar), ah, ax))
    return vfma(vsigmoid(az), vsub(hprev, hh), hh)


@njit(inline="always")
def _gru_put(valid, ro, pu, cur, nxt, hf, h):
    if valid:
        vstore(hf, nxt + ro + pu, h)
    else:
        vstore(hf, nxt + ro + pu, vload(hf, cur + ro + pu))


@njit(nogil=True, _nrt=False)
def _gru_cell(az, ar, ax, ah, valid, ro, pu, cur, nxt, hf, act, ract, scratch):
    hprev = vload(hf, cur + ro + pu)
    if not valid:
        vstore(hf, nxt + ro + pu, hprev)
        return
    if act == 1 and ract == 2:
        vstore(hf, nxt + ro + pu, _gru_std(az, ar, ax, ah, hprev))
        return
    z = vact(ract, az, scratch)
    r = vact(ract, ar, scratch)
    hh = vact(act, vfma(r, ah, ax), scratch)
    # z * h + (1 - z) * hh
    vstore(hf, nxt + ro + pu, vfma(z, vsub(hprev, hh), hh))


@njit(nogil=True, _nrt=False)
def _gru_cell4(z0, r0, x0, h0, z1, r1, x1, h1, z2, r2, x2, h2, z3, r3, x3, h3,
               v0, v1, v2, v3, ro0, ro1, ro2, ro3, pu, cur, nxt, hf, act, ract, scratch):
    """The gate math of a 4-row GRU tile in one call (see ``_lstm_cell4``)."""
    if act == 1 and ract == 2:
        n0 = _gru_std(z0, r0, x0, h0, vload(hf, cur + ro0 + pu))
        n1 = _gru_std(z1, r1, x1, h1, vload(hf, cur + ro1 + pu))
        n2 = _gru_std(z2, r2, x2, h2, vload(hf, cur + ro2 + pu))
        n3 = _gru_std(z3, r3, x3, h3, vload(hf, cur + ro3 + pu))
        _gru_put(v0, ro0, pu, cur, nxt, hf, n0)
        _gru_put(v1, ro1, pu, cur, nxt, hf, n1)
        _gru_put(v2, ro2, pu, cur, nxt, hf, n2)
        _gru_put(v3, ro3, pu, cur, nxt, hf, n3)
        return
    _gru_cell(z0, r0, x0, h0, v0, ro0, pu, cur, nxt, hf, act, ract, scratch)
    _gru_cell(z1, r1, x1, h1, v1, ro1, pu, cur, nxt, hf, act, ract, scratch)
    _gru_cell(z2, r2, x2, h2, v2, ro2, pu, cur, nxt, hf, act, ract, scratch)
    _gru_cell(z3, r3, x3, h3, v3, ro3, pu, cur, nxt, hf, act, ract, scratch)


@njit(nogil=True, _nrt=False)
def _lstm_cell6(i0, f0, c0, o0, i1, f1, c1, o1, i2, f2, c2, o2, i3, f3, c3, o3, i4, f4, c4, o4, i5, f5, c5, o5,
                v0, v1, v2, v3, v4, v5, ro0, ro1, ro2, ro3, ro4, ro5, pu, cur, nxt, hf, cb, peep, has_peep, Hp,
                cell_clip, act, ract, scratch):
    """The gate math of a 6-row tile in one call (see ``_lstm_cell4``)."""
    if _lstm_is_std(has_peep, cell_clip, act, ract):
        cn0, h0 = _lstm_std(i0, f0, c0, o0, vload(cb, ro0 + pu))
        cn1, h1 = _lstm_std(i1, f1, c1, o1, vload(cb, ro1 + pu))
        cn2, h2 = _lstm_std(i2, f2, c2, o2, vload(cb, ro2 + pu))
        cn3, h3 = _lstm_std(i3, f3, c3, o3, vload(cb, ro3 + pu))
        cn4, h4 = _lstm_std(i4, f4, c4, o4, vload(cb, ro4 + pu))
        cn5, h5 = _lstm_std(i5, f5, c5, o5, vload(cb, ro5 + pu))
        _lstm_put(v0, ro0, pu, cur, nxt, hf, cb, cn0, h0)
        _lstm_put(v1, ro1, pu, cur, nxt, hf, cb, cn1, h1)
        _lstm_put(v2, ro2, pu, cur, nxt, hf, cb, cn2, h2)
        _lstm_put(v3, ro3, pu, cur, nxt, hf, cb, cn3, h3)
        _lstm_put(v4, ro4, pu, cur, nxt, hf, cb, cn4, h4)
        _lstm_put(v5, ro5, pu, cur, nxt, hf, cb, cn5, h5)
        return
    _lstm_cell(i0, f0, c0, o0, v0, ro0, pu, cur, nxt, hf, cb, peep, has_peep, Hp, cell_clip, act, ract, scratch)
    _lstm_cell(i1, f1, c1, o1, v1, ro1, pu, cur, nxt, hf, cb, peep, has_peep, Hp, cell_clip, act, ract, scratch)
    _lstm_cell(i2, f2, c2, o2, v2, ro2, pu, cur, nxt, hf, cb, peep, has_peep, Hp, cell_clip, act, ract, scratch)
    _lstm_cell(i3, f3, c3, o3, v3, ro3, pu, cur, nxt, hf, cb, peep, has_peep, Hp, cell_clip, act, ract, scratch)
    _lstm_cell(i4, f4, c4, o4, v4, ro4, pu, cur, nxt, hf, cb, peep, has_peep, Hp, cell_clip, act, ract, scratch)
    _lstm_cell(i5, f5, c5, o5, v5, ro5, pu, cur, nxt, hf, cb, peep, has_peep, Hp, cell_clip, act, ract, scratch)


@njit(nogil=True, _nrt=False)
def _gru_cell6(z0, r0, x0, h0, z1, r1, x1, h1, z2, r2, x2, h2, z3, r3, x3, h3, z4, r4, x4, h4, z5, r5, x5, h5,
               v0, v1, v2, v3, v4, v5, ro0, ro1, ro2, ro3, ro4, ro5, pu, cur, nxt, hf, act, ract, scratch):
    """The gate math of a 6-row GRU tile in one call (see ``_lstm_cell4``)."""
    if act == 1 and ract == 2:
        n0 = _gru_std(z0, r0, x0, h0, vload(hf, cur + ro0 + pu))
        n1 = _gru_std(z1, r1, x1, h1, vload(hf, cur + ro1 + pu))
        n2 = _gru_std(z2, r2, x2, h2, vload(hf, cur + ro2 + pu))
        n3 = _gru_std(z3, r3, x3, h3, vload(hf, cur + ro3 + pu))
        n4 = _gru_std(z4, r4, x4, h4, vload(hf, cur + ro4 + pu))
        n5 = _gru_std(z5, r5, x5, h5, vload(hf, cur + ro5 + pu))
        _gru_put(v0, ro0, pu, cur, nxt, hf, n0)
        _gru_put(v1, ro1, pu, cur, nxt, hf, n1)
        _gru_put(v2, ro2, pu, cur, nxt, hf, n2)
        _gru_put(v3, ro3, pu, cur, nxt, hf, n3)
        _gru_put(v4, ro4, pu, cur, nxt, hf, n4)
        _gru_put(v5, ro5, pu, cur, nxt, hf, n5)
        return
    _gru_cell(z0, r0, x0, h0, v0, ro0, pu, cur, nxt, hf, act, ract, scratch)
    _gru_cell(z1, r1, x1, h1, v1, ro1, pu, cur, nxt, hf, act, ract, scratch)
    _gru_cell(z2, r2, x2, h2, v2, ro2, pu, cur, nxt, hf, act, ract, scratch)
    _gru_cell(z3, r3, x3, h3, v3, ro3, pu, cur, nxt, hf, act, ract, scratch)
    _gru_cell(z4, r4, x4, h4, v4, ro4, pu, cur, nxt, hf, act, ract, scratch)
    _gru_cell(z5, r5, x5, h5, v5, ro5, pu, cur, nxt, hf, act, ract, scratch)


# ---- tiles (6, 4, 2 and 1 rows); unrolled by hand so the accumulators are
# plain locals that LLVM keeps in registers. ``pf``: where this tile's share
# of the next panel's prefetch starts ----

@njit(nogil=True, _nrt=False)
def _lstm_tile4(Wp, wbase, pf, bp, pb, pu, D, H, xf, hf, cur, nxt, cb, peep, has_peep, Hp, cell_clip, act, ract, scratch, xo0, xo1, xo2, xo3, v0, v1, v2, v3, ro0, ro1, ro2, ro3):
    bi = vload(bp, pb)
    bf = vload(bp, pb + 16)
    bc = vload(bp, pb + 32)
    bo = vload(bp, pb + 48)
    i0 = bi
    f0 = bf
    c0 = bc
    o0 = bo
    i1 = bi
    f1 = bf
    c1 = bc
    o1 = bo
    i2 = bi
    f2 = bf
    c2 = bc
    o2 = bo
    i3 = bi
    f3 = bf
    c3 = bc
    o3 = bo
    w = wbase
    q = pf
    for k in range(D):
        prefetch_l2(Wp, q)
        q += 16
        prefetch_l1(Wp, w + 512)
        prefetch_l1(Wp, w + 528)
        prefetch_l1(Wp, w + 544)
        prefetch_l1(Wp, w + 560)
        w0 = vload(Wp, w)
        w1 = vload(Wp, w + 16)
        w2 = vload(Wp, w + 32)
        w3 = vload(Wp, w + 48)
        s = vsplat(sload(xf, xo0 + k))
        i0 = vfma(s, w0, i0)
        f0 = vfma(s, w1, f0)
        c0 = vfma(s, w2, c0)
        o0 = vfma(s, w3, o0)
        s = vsplat(sload(xf, xo1 + k))
        i1 = vfma(s, w0, i1)
        f1 = vfma(s, w1, f1)
        c1 = vfma(s, w2, c1)
        o1 = vfma(s, w3, o1)
        s = vsplat(sload(xf, xo2 + k))
        i2 = vfma(s, w0, i2)
        f2 = vfma(s, w1, f2)
        c2 = vfma(s, w2, c2)
        o2 = vfma(s, w3, o2)
        s = vsplat(sload(xf, xo3 + k))
        i3 = vfma(s, w0, i3)
        f3 = vfma(s, w1, f3)
        c3 = vfma(s, w2, c3)
        o3 = vfma(s, w3, o3)
        w += 64
    for k in range(H):
        prefetch_l2(Wp, q)
        q += 16
        prefetch_l1(Wp, w + 512)
        prefetch_l1(Wp, w + 528)
        prefetch_l1(Wp, w + 544)
        prefetch_l1(Wp, w + 560)
        w0 = vload(Wp, w)
        w1 = vload(Wp, w + 16)
        w2 = vload(Wp, w + 32)
        w3 = vload(Wp, w + 48)
        s = vsplat(sload(hf, cur + ro0 + k))
        i0 = vfma(s, w0, i0)
        f0 = vfma(s, w1, f0)
        c0 = vfma(s, w2, c0)
        o0 = vfma(s, w3, o0)
        s = vsplat(sload(hf, cur + ro1 + k))
        i1 = vfma(s, w0, i1)
        f1 = vfma(s, w1, f1)
        c1 = vfma(s, w2, c1)
        o1 = vfma(s, w3, o1)
        s = vsplat(sload(hf, cur + ro2 + k))
        i2 = vfma(s, w0, i2)
        f2 = vfma(s, w1, f2)
        c2 = vfma(s, w2, c2)
        o2 = vfma(s, w3, o2)
        s = vsplat(sload(hf, cur + ro3 + k))
        i3 = vfma(s, w0, i3)
        f3 = vfma(s, w1, f3)
        c3 = vfma(s, w2, c3)
        o3 = vfma(s, w3, o3)
        w += 64
    _lstm_cell4(i0, f0, c0, o0, i1, f1, c1, o1, i2, f2, c2, o2, i3, f3, c3, o3,
                v0, v1, v2, v3, ro0, ro1, ro2, ro3, pu, cur, nxt, hf, cb, peep, has_peep, Hp,
                cell_clip, act, ract, scratch)


# Rows left over after the 6- and 4-row tiles go two at a time, then one.
# Every tile sums a row's products in the same order (k ascending, one
# accumulator per gate vector), so a row's result does not depend on the
# rows beside it: the same sequence gives the same bits in any batch, at
# any position, split between threads or not. (An earlier one-row tile
# that split k into even and odd chains was faster for 2-3 leftover rows
# and broke that.)


@njit(nogil=True, _nrt=False)
def _lstm_tile1(Wp, wbase, bp, pb, pu, D, H, xf, hf, cur, nxt, cb, peep, has_peep, Hp, cell_clip, act, ract, scratch, xo0, v0, ro0):
    bi = vload(bp, pb)
    bf = vload(bp, pb + 16)
    bc = vload(bp, pb + 32)
    bo = vload(bp, pb + 48)
    i0 = bi
    f0 = bf
    c0 = bc
    o0 = bo
    w = wbase
    for k in range(D):
        w0 = vload(Wp, w)
        w1 = vload(Wp, w + 16)
        w2 = vload(Wp, w + 32)
        w3 = vload(Wp, w + 48)
        s = vsplat(sload(xf, xo0 + k))
        i0 = vfma(s, w0, i0)
        f0 = vfma(s, w1, f0)
        c0 = vfma(s, w2, c0)
        o0 = vfma(s, w3, o0)
        w += 64
    for k in range(H):
        w0 = vload(Wp, w)
        w1 = vload(Wp, w + 16)
        w2 = vload(Wp, w + 32)
        w3 = vload(Wp, w + 48)
        s = vsplat(sload(hf, cur + ro0 + k))
        i0 = vfma(s, w0, i0)
        f0 = vfma(s, w1, f0)
        c0 = vfma(s, w2, c0)
        o0 = vfma(s, w3, o0)
        w += 64
    _lstm_cell(i0, f0, c0, o0, v0, ro0, pu, cur, nxt, hf, cb, peep, has_peep, Hp, cell_clip, act, ract, scratch)


@njit(nogil=True, _nrt=False)
def _lstm_tile2(Wp, wbase, bp, pb, pu, D, H, xf, hf, cur, nxt, cb, peep, has_peep, Hp, cell_clip, act, ract, scratch, xo0, xo1, v0, v1, ro0, ro1):
    bi = vload(bp, pb)
    bf = vload(bp, pb + 16)
    bc = vload(bp, pb + 32)
    bo = vload(bp, pb + 48)
    i0 = bi
    f0 = bf
    c0 = bc
    o0 = bo
    i1 = bi
    f1 = bf
    c1 = bc
    o1 = bo
    w = wbase
    for k in range(D):
        w0 = vload(Wp, w)
        w1 = vload(Wp, w + 16)
        w2 = vload(Wp, w + 32)
        w3 = vload(Wp, w + 48)
        s = vsplat(sload(xf, xo0 + k))
        i0 = vfma(s, w0, i0)
        f0 = vfma(s, w1, f0)
        c0 = vfma(s, w2, c0)
        o0 = vfma(s, w3, o0)
        s = vsplat(sload(xf, xo1 + k))
        i1 = vfma(s, w0, i1)
        f1 = vfma(s, w1, f1)
        c1 = vfma(s, w2, c1)
        o1 = vfma(s, w3, o1)
        w += 64
    for k in range(H):
        w0 = vload(Wp, w)
        w1 = vload(Wp, w + 16)
        w2 = vload(Wp, w + 32)
        w3 = vload(Wp, w + 48)
        s = vsplat(sload(hf, cur + ro0 + k))
        i0 = vfma(s, w0, i0)
        f0 = vfma(s, w1, f0)
        c0 = vfma(s, w2, c0)
        o0 = vfma(s, w3, o0)
        s = vsplat(sload(hf, cur + ro1 + k))
        i1 = vfma(s, w0, i1)
        f1 = vfma(s, w1, f1)
        c1 = vfma(s, w2, c1)
        o1 = vfma(s, w3, o1)
        w += 64
    _lstm_cell(i0, f0, c0, o0, v0, ro0, pu, cur, nxt, hf, cb, peep, has_peep, Hp, cell_clip, act, ract, scratch)
    _lstm_cell(i1, f1, c1, o1, v1, ro1, pu, cur, nxt, hf, cb, peep, has_peep, Hp, cell_clip, act, ract, scratch)


@njit(nogil=True, _nrt=False)
def _gru_tile4(Wp, wbase, pf, bp, pb, pu, D, H, xf, hf, cur, nxt, act, ract, scratch, xo0, xo1, xo2, xo3, v0, v1, v2, v3, ro0, ro1, ro2, ro3):
    bz = vload(bp, pb)
    br = vload(bp, pb + 16)
    bx = vload(bp, pb + 32)
    bh = vload(bp, pb + 48)
    z0 = bz
    r0 = br
    x0 = bx
    h0 = bh
    z1 = bz
    r1 = br
    x1 = bx
    h1 = bh
    z2 = bz
    r2 = br
    x2 = bx
    h2 = bh
    z3 = bz
    r3 = br
    x3 = bx
    h3 = bh
    w = wbase
    q = pf
    for k in range(D):
        prefetch_l2(Wp, q)
        q += 16
        prefetch_l1(Wp, w + 384)
        prefetch_l1(Wp, w + 400)
        prefetch_l1(Wp, w + 416)
        w0 = vload(Wp, w)
        w1 = vload(Wp, w + 16)
        w2 = vload(Wp, w + 32)
        s = vsplat(sload(xf, xo0 + k))
        z0 = vfma(s, w0, z0)
        r0 = vfma(s, w1, r0)
        x0 = vfma(s, w2, x0)
        s = vsplat(sload(xf, xo1 + k))
        z1 = vfma(s, w0, z1)
        r1 = vfma(s, w1, r1)
        x1 = vfma(s, w2, x1)
        s = vsplat(sload(xf, xo2 + k))
        z2 = vfma(s, w0, z2)
        r2 = vfma(s, w1, r2)
        x2 = vfma(s, w2, x2)
        s = vsplat(sload(xf, xo3 + k))
        z3 = vfma(s, w0, z3)
        r3 = vfma(s, w1, r3)
        x3 = vfma(s, w2, x3)
        w += 48
    for k in range(H):
        prefetch_l2(Wp, q)
        q += 16
        prefetch_l1(Wp, w + 384)
        prefetch_l1(Wp, w + 400)
        prefetch_l1(Wp, w + 416)
        w0 = vload(Wp, w)
        w1 = vload(Wp, w + 16)
        w2 = vload(Wp, w + 32)
        s = vsplat(sload(hf, cur + ro0 + k))
        z0 = vfma(s, w0, z0)
        r0 = vfma(s, w1, r0)
        h0 = vfma(s, w2, h0)
        s = vsplat(sload(hf, cur + ro1 + k))
        z1 = vfma(s, w0, z1)
        r1 = vfma(s, w1, r1)
        h1 = vfma(s, w2, h1)
        s = vsplat(sload(hf, cur + ro2 + k))
        z2 = vfma(s, w0, z2)
        r2 = vfma(s, w1, r2)
        h2 = vfma(s, w2, h2)
        s = vsplat(sload(hf, cur + ro3 + k))
        z3 = vfma(s, w0, z3)
        r3 = vfma(s, w1, r3)
        h3 = vfma(s, w2, h3)
        w += 48
    _gru_cell4(z0, r0, x0, h0, z1, r1, x1, h1, z2, r2, x2, h2, z3, r3, x3, h3,
               v0, v1, v2, v3, ro0, ro1, ro2, ro3, pu, cur, nxt, hf, act, ract, scratch)


@njit(nogil=True, _nrt=False)
def _gru_tile1(Wp, wbase, bp, pb, pu, D, H, xf, hf, cur, nxt, act, ract, scratch, xo0, v0, ro0):
    bz = vload(bp, pb)
    br = vload(bp, pb + 16)
    bx = vload(bp, pb + 32)
    bh = vload(bp, pb + 48)
    z0 = bz
    r0 = br
    x0 = bx
    h0 = bh
    w = wbase
    for k in range(D):
        w0 = vload(Wp, w)
        w1 = vload(Wp, w + 16)
        w2 = vload(Wp, w + 32)
        s = vsplat(sload(xf, xo0 + k))
        z0 = vfma(s, w0, z0)
        r0 = vfma(s, w1, r0)
        x0 = vfma(s, w2, x0)
        w += 48
    for k in range(H):
        w0 = vload(Wp, w)
        w1 = vload(Wp, w + 16)
        w2 = vload(Wp, w + 32)
        s = vsplat(sload(hf, cur + ro0 + k))
        z0 = vfma(s, w0, z0)
        r0 = vfma(s, w1, r0)
        h0 = vfma(s, w2, h0)
        w += 48
    _gru_cell(z0, r0, x0, h0, v0, ro0, pu, cur, nxt, hf, act, ract, scratch)


@njit(nogil=True, _nrt=False)
def _gru_tile2(Wp, wbase, bp, pb, pu, D, H, xf, hf, cur, nxt, act, ract, scratch, xo0, xo1, v0, v1, ro0, ro1):
    bz = vload(bp, pb)
    br = vload(bp, pb + 16)
    bx = vload(bp, pb + 32)
    bh = vload(bp, pb + 48)
    z0 = bz
    r0 = br
    x0 = bx
    h0 = bh
    z1 = bz
    r1 = br
    x1 = bx
    h1 = bh
    w = wbase
    for k in range(D):
        w0 = vload(Wp, w)
        w1 = vload(Wp, w + 16)
        w2 = vload(Wp, w + 32)
        s = vsplat(sload(xf, xo0 + k))
        z0 = vfma(s, w0, z0)
        r0 = vfma(s, w1, r0)
        x0 = vfma(s, w2, x0)
        s = vsplat(sload(xf, xo1 + k))
        z1 = vfma(s, w0, z1)
        r1 = vfma(s, w1, r1)
        x1 = vfma(s, w2, x1)
        w += 48
    for k in range(H):
        w0 = vload(Wp, w)
        w1 = vload(Wp, w + 16)
        w2 = vload(Wp, w + 32)
        s = vsplat(sload(hf, cur + ro0 + k))
        z0 = vfma(s, w0, z0)
        r0 = vfma(s, w1, r0)
        h0 = vfma(s, w2, h0)
        s = vsplat(sload(hf, cur + ro1 + k))
        z1 = vfma(s, w0, z1)
        r1 = vfma(s, w1, r1)
        h1 = vfma(s, w2, h1)
        w += 48
    _gru_cell(z0, r0, x0, h0, v0, ro0, pu, cur, nxt, hf, act, ract, scratch)
    _gru_cell(z1, r1, x1, h1, v1, ro1, pu, cur, nxt, hf, act, ract, scratch)


@njit(nogil=True, _nrt=False)
def _lstm_tile6(Wp, wbase, pf, bp, pb, pu, D, H, xf, hf, cur, nxt, cb, peep, has_peep, Hp, cell_clip, act, ract, scratch, xo0, xo1, xo2, xo3, xo4, xo5, v0, v1, v2, v3, v4, v5, ro0, ro1, ro2, ro3, ro4, ro5):
    bi = vload(bp, pb)
    bf = vload(bp, pb + 16)
    bc = vload(bp, pb + 32)
    bo = vload(bp, pb + 48)
    i0 = bi
    f0 = bf
    c0 = bc
    o0 = bo
    i1 = bi
    f1 = bf
    c1 = bc
    o1 = bo
    i2 = bi
    f2 = bf
    c2 = bc
    o2 = bo
    i3 = bi
    f3 = bf
    c3 = bc
    o3 = bo
    i4 = bi
    f4 = bf
    c4 = bc
    o4 = bo
    i5 = bi
    f5 = bf
    c5 = bc
    o5 = bo
    w = wbase
    q = pf
    for k in range(D):
        prefetch_l2(Wp, q)
        q += 16
        prefetch_l1(Wp, w + 512)
        prefetch_l1(Wp, w + 528)
        prefetch_l1(Wp, w + 544)
        prefetch_l1(Wp, w + 560)
        w0 = vload(Wp, w)
        w1 = vload(Wp, w + 16)
        w2 = vload(Wp, w + 32)
        w3 = vload(Wp, w + 48)
        s = vsplat(sload(xf, xo0 + k))
        i0 = vfma(s, w0, i0)
        f0 = vfma(s, w1, f0)
        c0 = vfma(s, w2, c0)
        o0 = vfma(s, w3, o0)
        s = vsplat(sload(xf, xo1 + k))
        i1 = vfma(s, w0, i1)
        f1 = vfma(s, w1, f1)
        c1 = vfma(s, w2, c1)
        o1 = vfma(s, w3, o1)
        s = vsplat(sload(xf, xo2 + k))
        i2 = vfma(s, w0, i2)
        f2 = vfma(s, w1, f2)
        c2 = vfma(s, w2, c2)
        o2 = vfma(s, w3, o2)
        s = vsplat(sload(xf, xo3 + k))
        i3 = vfma(s, w0, i3)
        f3 = vfma(s, w1, f3)
        c3 = vfma(s, w2, c3)
        o3 = vfma(s, w3, o3)
        s = vsplat(sload(xf, xo4 + k))
        i4 = vfma(s, w0, i4)
        f4 = vfma(s, w1, f4)
        c4 = vfma(s, w2, c4)
        o4 = vfma(s, w3, o4)
        s = vsplat(sload(xf, xo5 + k))
        i5 = vfma(s, w0, i5)
        f5 = vfma(s, w1, f5)
        c5 = vfma(s, w2, c5)
        o5 = vfma(s, w3, o5)
        w += 64
    for k in range(H):
        prefetch_l2(Wp, q)
        q += 16
        prefetch_l1(Wp, w + 512)
        prefetch_l1(Wp, w + 528)
        prefetch_l1(Wp, w + 544)
        prefetch_l1(Wp, w + 560)
        w0 = vload(Wp, w)
        w1 = vload(Wp, w + 16)
        w2 = vload(Wp, w + 32)
        w3 = vload(Wp, w + 48)
        s = vsplat(sload(hf, cur + ro0 + k))
        i0 = vfma(s, w0, i0)
        f0 = vfma(s, w1, f0)
        c0 = vfma(s, w2, c0)
        o0 = vfma(s, w3, o0)
        s = vsplat(sload(hf, cur + ro1 + k))
        i1 = vfma(s, w0, i1)
        f1 = vfma(s, w1, f1)
        c1 = vfma(s, w2, c1)
        o1 = vfma(s, w3, o1)
        s = vsplat(sload(hf, cur + ro2 + k))
        i2 = vfma(s, w0, i2)
        f2 = vfma(s, w1, f2)
        c2 = vfma(s, w2, c2)
        o2 = vfma(s, w3, o2)
        s = vsplat(sload(hf, cur + ro3 + k))
        i3 = vfma(s, w0, i3)
        f3 = vfma(s, w1, f3)
        c3 = vfma(s, w2, c3)
        o3 = vfma(s, w3, o3)
        s = vsplat(sload(hf, cur + ro4 + k))
        i4 = vfma(s, w0, i4)
        f4 = vfma(s, w1, f4)
        c4 = vfma(s, w2, c4)
        o4 = vfma(s, w3, o4)
        s = vsplat(sload(hf, cur + ro5 + k))
        i5 = vfma(s, w0, i5)
        f5 = vfma(s, w1, f5)
        c5 = vfma(s, w2, c5)
        o5 = vfma(s, w3, o5)
        w += 64
    _lstm_cell6(i0, f0, c0, o0, i1, f1, c1, o1, i2, f2, c2, o2, i3, f3, c3, o3, i4, f4, c4, o4, i5, f5, c5, o5,
                v0, v1, v2, v3, v4, v5, ro0, ro1, ro2, ro3, ro4, ro5, pu, cur, nxt, hf, cb, peep, has_peep, Hp,
                cell_clip, act, ract, scratch)


@njit(nogil=True, _nrt=False)
def _gru_tile6(Wp, wbase, pf, bp, pb, pu, D, H, xf, hf, cur, nxt, act, ract, scratch, xo0, xo1, xo2, xo3, xo4, xo5, v0, v1, v2, v3, v4, v5, ro0, ro1, ro2, ro3, ro4, ro5):
    bz = vload(bp, pb)
    br = vload(bp, pb + 16)
    bx = vload(bp, pb + 32)
    bh = vload(bp, pb + 48)
    z0 = bz
    r0 = br
    x0 = bx
    h0 = bh
    z1 = bz
    r1 = br
    x1 = bx
    h1 = bh
    z2 = bz
    r2 = br
    x2 = bx
    h2 = bh
    z3 = bz
    r3 = br
    x3 = bx
    h3 = bh
    z4 = bz
    r4 = br
    x4 = bx
    h4 = bh
    z5 = bz
    r5 = br
    x5 = bx
    h5 = bh
    w = wbase
    q = pf
    for k in range(D):
        prefetch_l2(Wp, q)
        q += 16
        prefetch_l1(Wp, w + 384)
        prefetch_l1(Wp, w + 400)
        prefetch_l1(Wp, w + 416)
        w0 = vload(Wp, w)
        w1 = vload(Wp, w + 16)
        w2 = vload(Wp, w + 32)
        s = vsplat(sload(xf, xo0 + k))
        z0 = vfma(s, w0, z0)
        r0 = vfma(s, w1, r0)
        x0 = vfma(s, w2, x0)
        s = vsplat(sload(xf, xo1 + k))
        z1 = vfma(s, w0, z1)
        r1 = vfma(s, w1, r1)
        x1 = vfma(s, w2, x1)
        s = vsplat(sload(xf, xo2 + k))
        z2 = vfma(s, w0, z2)
        r2 = vfma(s, w1, r2)
        x2 = vfma(s, w2, x2)
        s = vsplat(sload(xf, xo3 + k))
        z3 = vfma(s, w0, z3)
        r3 = vfma(s, w1, r3)
        x3 = vfma(s, w2, x3)
        s = vsplat(sload(xf, xo4 + k))
        z4 = vfma(s, w0, z4)
        r4 = vfma(s, w1, r4)
        x4 = vfma(s, w2, x4)
        s = vsplat(sload(xf, xo5 + k))
        z5 = vfma(s, w0, z5)
        r5 = vfma(s, w1, r5)
        x5 = vfma(s, w2, x5)
        w += 48
    for k in range(H):
        prefetch_l2(Wp, q)
        q += 16
        prefetch_l1(Wp, w + 384)
        prefetch_l1(Wp, w + 400)
        prefetch_l1(Wp, w + 416)
        w0 = vload(Wp, w)
        w1 = vload(Wp, w + 16)
        w2 = vload(Wp, w + 32)
        s = vsplat(sload(hf, cur + ro0 + k))
        z0 = vfma(s, w0, z0)
        r0 = vfma(s, w1, r0)
        h0 = vfma(s, w2, h0)
        s = vsplat(sload(hf, cur + ro1 + k))
        z1 = vfma(s, w0, z1)
        r1 = vfma(s, w1, r1)
        h1 = vfma(s, w2, h1)
        s = vsplat(sload(hf, cur + ro2 + k))
        z2 = vfma(s, w0, z2)
        r2 = vfma(s, w1, r2)
        h2 = vfma(s, w2, h2)
        s = vsplat(sload(hf, cur + ro3 + k))
        z3 = vfma(s, w0, z3)
        r3 = vfma(s, w1, r3)
        h3 = vfma(s, w2, h3)
        s = vsplat(sload(hf, cur + ro4 + k))
        z4 = vfma(s, w0, z4)
        r4 = vfma(s, w1, r4)
        h4 = vfma(s, w2, h4)
        s = vsplat(sload(hf, cur + ro5 + k))
        z5 = vfma(s, w0, z5)
        r5 = vfma(s, w1, r5)
        h5 = vfma(s, w2, h5)
        w += 48
    _gru_cell6(z0, r0, x0, h0, z1, r1, x1, h1, z2, r2, x2, h2, z3, r3, x3, h3, z4, r4, x4, h4, z5, r5, x5, h5,
               v0, v1, v2, v3, v4, v5, ro0, ro1, ro2, ro3, ro4, ro5, pu, cur, nxt, hf, act, ract, scratch)



# ---- one panel of one step, every row of a row range ----


# ---- the input projection, hoisted for a single row with large weights ----

@njit(nogil=True, _nrt=False)
def _lstm_proj6(Wp, wbase, bp, pb, D, xf, P, xo0, xo1, xo2, xo3, xo4, xo5, po0, po1, po2, po3, po4, po5):
    """6 steps of one panel: bias + the input part of the gate sums, stored at ``P[po]``."""
    bi = vload(bp, pb)
    bf = vload(bp, pb + 16)
    bc = vload(bp, pb + 32)
    bo = vload(bp, pb + 48)
    i0 = bi
    f0 = bf
    c0 = bc
    o0 = bo
    i1 = bi
    f1 = bf
    c1 = bc
    o1 = bo
    i2 = bi
    f2 = bf
    c2 = bc
    o2 = bo
    i3 = bi
    f3 = bf
    c3 = bc
    o3 = bo
    i4 = bi
    f4 = bf
    c4 = bc
    o4 = bo
    i5 = bi
    f5 = bf
    c5 = bc
    o5 = bo
    w = wbase
    for k in range(D):
        w0 = vload(Wp, w)
        w1 = vload(Wp, w + 16)
        w2 = vload(Wp, w + 32)
        w3 = vload(Wp, w + 48)
        s = vsplat(sload(xf, xo0 + k))
        i0 = vfma(s, w0, i0)
        f0 = vfma(s, w1, f0)
        c0 = vfma(s, w2, c0)
        o0 = vfma(s, w3, o0)
        s = vsplat(sload(xf, xo1 + k))
        i1 = vfma(s, w0, i1)
        f1 = vfma(s, w1, f1)
        c1 = vfma(s, w2, c1)
        o1 = vfma(s, w3, o1)
        s = vsplat(sload(xf, xo2 + k))
        i2 = vfma(s, w0, i2)
        f2 = vfma(s, w1, f2)
        c2 = vfma(s, w2, c2)
        o2 = vfma(s, w3, o2)
        s = vsplat(sload(xf, xo3 + k))
        i3 = vfma(s, w0, i3)
        f3 = vfma(s, w1, f3)
        c3 = vfma(s, w2, c3)
        o3 = vfma(s, w3, o3)
        s = vsplat(sload(xf, xo4 + k))
        i4 = vfma(s, w0, i4)
        f4 = vfma(s, w1, f4)
        c4 = vfma(s, w2, c4)
        o4 = vfma(s, w3, o4)
        s = vsplat(sload(xf, xo5 + k))
        i5 = vfma(s, w0, i5)
        f5 = vfma(s, w1, f5)
        c5 = vfma(s, w2, c5)
        o5 = vfma(s, w3, o5)
        w += 64
    vstore(P, po0, i0)
    vstore(P, po0 + 16, f0)
    vstore(P, po0 + 32, c0)
    vstore(P, po0 + 48, o0)
    vstore(P, po1, i1)
    vstore(P, po1 + 16, f1)
    vstore(P, po1 + 32, c1)
    vstore(P, po1 + 48, o1)
    vstore(P, po2, i2)
    vstore(P, po2 + 16, f2)
    vstore(P, po2 + 32, c2)
    vstore(P, po2 + 48, o2)
    vstore(P, po3, i3)
    vstore(P, po3 + 16, f3)
    vstore(P, po3 + 32, c3)
    vstore(P, po3 + 48, o3)
    vstore(P, po4, i4)
    vstore(P, po4 + 16, f4)
    vstore(P, po4 + 32, c4)
    vstore(P, po4 + 48, o4)
    vstore(P, po5, i5)
    vstore(P, po5 + 16, f5)
    vstore(P, po5 + 32, c5)
    vstore(P, po5 + 48, o5)


@njit(nogil=True, _nrt=False)
def _lstm_proj1(Wp, wbase, bp, pb, D, xf, P, xo0, po0):
    """1 step of one panel: bias + the input part of the gate sums, stored at ``P[po]``."""
    bi = vload(bp, pb)
    bf = vload(bp, pb + 16)
    bc = vload(bp, pb + 32)
    bo = vload(bp, pb + 48)
    i0 = bi
    f0 = bf
    c0 = bc
    o0 = bo
    w = wbase
    for k in range(D):
        w0 = vload(Wp, w)
        w1 = vload(Wp, w + 16)
        w2 = vload(Wp, w + 32)
        w3 = vload(Wp, w + 48)
        s = vsplat(sload(xf, xo0 + k))
        i0 = vfma(s, w0, i0)
        f0 = vfma(s, w1, f0)
        c0 = vfma(s, w2, c0)
        o0 = vfma(s, w3, o0)
        w += 64
    vstore(P, po0, i0)
    vstore(P, po0 + 16, f0)
    vstore(P, po0 + 32, c0)
    vstore(P, po0 + 48, o0)


@njit(nogil=True, _nrt=False)
def _gru_proj6(Wp, wbase, bp, pb, D, xf, P, xo0, xo1, xo2, xo3, xo4, xo5, po0, po1, po2, po3, po4, po5):
    """6 steps of one panel: bias + the input part of the gate sums (z, r, the candidate's input part; its recurrent part's bias copied), stored at ``P[po]``."""
    bz = vload(bp, pb)
    br = vload(bp, pb + 16)
    bx = vload(bp, pb + 32)
    z0 = bz
    r0 = br
    x0 = bx
    z1 = bz
    r1 = br
    x1 = bx
    z2 = bz
    r2 = br
    x2 = bx
    z3 = bz
    r3 = br
    x3 = bx
    z4 = bz
    r4 = br
    x4 = bx
    z5 = bz
    r5 = br
    x5 = bx
    w = wbase
    for k in range(D):
        w0 = vload(Wp, w)
        w1 = vload(Wp, w + 16)
        w2 = vload(Wp, w + 32)
        s = vsplat(sload(xf, xo0 + k))
        z0 = vfma(s, w0, z0)
        r0 = vfma(s, w1, r0)
        x0 = vfma(s, w2, x0)
        s = vsplat(sload(xf, xo1 + k))
        z1 = vfma(s, w0, z1)
        r1 = vfma(s, w1, r1)
        x1 = vfma(s, w2, x1)
        s = vsplat(sload(xf, xo2 + k))
        z2 = vfma(s, w0, z2)
        r2 = vfma(s, w1, r2)
        x2 = vfma(s, w2, x2)
        s = vsplat(sload(xf, xo3 + k))
        z3 = vfma(s, w0, z3)
        r3 = vfma(s, w1, r3)
        x3 = vfma(s, w2, x3)
        s = vsplat(sload(xf, xo4 + k))
        z4 = vfma(s, w0, z4)
        r4 = vfma(s, w1, r4)
        x4 = vfma(s, w2, x4)
        s = vsplat(sload(xf, xo5 + k))
        z5 = vfma(s, w0, z5)
        r5 = vfma(s, w1, r5)
        x5 = vfma(s, w2, x5)
        w += 48
    bh = vload(bp, pb + 48)
    vstore(P, po0, z0)
    vstore(P, po0 + 16, r0)
    vstore(P, po0 + 32, x0)
    vstore(P, po0 + 48, bh)
    vstore(P, po1, z1)
    vstore(P, po1 + 16, r1)
    vstore(P, po1 + 32, x1)
    vstore(P, po1 + 48, bh)
    vstore(P, po2, z2)
    vstore(P, po2 + 16, r2)
    vstore(P, po2 + 32, x2)
    vstore(P, po2 + 48, bh)
    vstore(P, po3, z3)
    vstore(P, po3 + 16, r3)
    vstore(P, po3 + 32, x3)
    vstore(P, po3 + 48, bh)
    vstore(P, po4, z4)
    vstore(P, po4 + 16, r4)
    vstore(P, po4 + 32, x4)
    vstore(P, po4 + 48, bh)
    vstore(P, po5, z5)
    vstore(P, po5 + 16, r5)
    vstore(P, po5 + 32, x5)
    vstore(P, po5 + 48, bh)


@njit(nogil=True, _nrt=False)
def _gru_proj1(Wp, wbase, bp, pb, D, xf, P, xo0, po0):
    """1 step of one panel: bias + the input part of the gate sums (z, r, the candidate's input part; its recurrent part's bias copied), stored at ``P[po]``."""
    bz = vload(bp, pb)
    br = vload(bp, pb + 16)
    bx = vload(bp, pb + 32)
    z0 = bz
    r0 = br
    x0 = bx
    w = wbase
    for k in range(D):
        w0 = vload(Wp, w)
        w1 = vload(Wp, w + 16)
        w2 = vload(Wp, w + 32)
        s = vsplat(sload(xf, xo0 + k))
        z0 = vfma(s, w0, z0)
        r0 = vfma(s, w1, r0)
        x0 = vfma(s, w2, x0)
        w += 48
    bh = vload(bp, pb + 48)
    vstore(P, po0, z0)
    vstore(P, po0 + 16, r0)
    vstore(P, po0 + 32, x0)
    vstore(P, po0 + 48, bh)


@njit(nogil=True, _nrt=False)
def _hoisted(gru, p, b, T, t, D, Wp, wbase, bp, pb, xf, P, reverse):
    """Where in ``P`` panel ``p``'s input sums for step ``t`` of row ``b``
    lie; at the first step of each run of HOIST_STEPS steps, computes them
    for the whole run first (6 steps per weight load)."""
    s = T - 1 - t if reverse else t
    tl = s % HOIST_STEPS
    base = p * HOIST_STEPS * 64
    if tl == 0:
        m = min(HOIST_STEPS, T - s)
        d = -1 if reverse else 1
        x0 = (b * T + t) * D
        j = 0
        while m - j >= 6:
            if gru:
                _gru_proj6(Wp, wbase, bp, pb, D, xf, P, x0 + d * j * D, x0 + d * (j + 1) * D,
                           x0 + d * (j + 2) * D, x0 + d * (j + 3) * D, x0 + d * (j + 4) * D,
                           x0 + d * (j + 5) * D, base + 64 * j, base + 64 * (j + 1),
                           base + 64 * (j + 2), base + 64 * (j + 3), base + 64 * (j + 4),
                           base + 64 * (j + 5))
            else:
                _lstm_proj6(Wp, wbase, bp, pb, D, xf, P, x0 + d * j * D, x0 + d * (j + 1) * D,
                            x0 + d * (j + 2) * D, x0 + d * (j + 3) * D, x0 + d * (j + 4) * D,
                            x0 + d * (j + 5) * D, base + 64 * j, base + 64 * (j + 1),
                            base + 64 * (j + 2), base + 64 * (j + 3), base + 64 * (j + 4),
                            base + 64 * (j + 5))
            j += 6
        while j < m:
            if gru:
                _gru_proj1(Wp, wbase, bp, pb, D, xf, P, x0 + d * j * D, base + 64 * j)
            else:
                _lstm_proj1(Wp, wbase, bp, pb, D, xf, P, x0 + d * j * D, base + 64 * j)
            j += 1
    return base + tl * 64


@njit(nogil=True, _nrt=False)
def _panel(gru, p, pn, r0, n, T, t, D, H, Hp, Wp, bp, peep, has_peep, cell_clip, act, ract,
           xf, hf, cur, nxt, cb, valid, started, zero_output, out, has_out, scratch, P, hoist,
           reverse):
    """Units ``16p .. 16p+15`` of rows ``r0 .. r0+n-1`` at step ``t``: the
    products, the gate math, the new state, and those units' outputs."""
    KP = D + H
    pb = p * 64
    pu = p * LANES
    r = 0
    tile = 0
    if gru:
        wbase = p * KP * 48
        pfb = pn * KP * 48
        while n - r >= 6 and n - r != 8 and n - r != 9:
            b = r0 + r
            _gru_tile6(Wp, wbase, pfb + (tile % 3) * KP * 16, bp, pb, pu, D, H, xf, hf, cur, nxt, act, ract, scratch,
                       (b * T + t) * D, ((b + 1) * T + t) * D, ((b + 2) * T + t) * D,
                       ((b + 3) * T + t) * D, ((b + 4) * T + t) * D, ((b + 5) * T + t) * D,
                       valid[r], valid[r + 1], valid[r + 2], valid[r + 3], valid[r + 4], valid[r + 5],
                       r * Hp, (r + 1) * Hp, (r + 2) * Hp, (r + 3) * Hp, (r + 4) * Hp, (r + 5) * Hp)
            r += 6
            tile += 1
        while r + 4 <= n:
            b = r0 + r
            _gru_tile4(Wp, wbase, pfb + (tile % 3) * KP * 16, bp, pb, pu, D, H, xf, hf, cur, nxt, act, ract, scratch,
                       (b * T + t) * D, ((b + 1) * T + t) * D,
                       ((b + 2) * T + t) * D, ((b + 3) * T + t) * D,
                       valid[r], valid[r + 1], valid[r + 2], valid[r + 3],
                       r * Hp, (r + 1) * Hp, (r + 2) * Hp, (r + 3) * Hp)
            r += 4
            tile += 1
        while r + 2 <= n:
            b = r0 + r
            _gru_tile2(Wp, wbase, bp, pb, pu, D, H, xf, hf, cur, nxt, act, ract, scratch,
                       (b * T + t) * D, ((b + 1) * T + t) * D, valid[r], valid[r + 1],
                       r * Hp, (r + 1) * Hp)
            r += 2
        if hoist and n == 1:  # the input sums come from P: only the recurrent rows
            _gru_tile1(Wp, wbase + D * 48, P, _hoisted(gru, p, r0, T, t, D, Wp, wbase, bp, pb, xf, P, reverse),
                       pu, 0, H, xf, hf, cur, nxt, act, ract, scratch, 0, valid[0], 0)
        elif r < n:
            b = r0 + r
            _gru_tile1(Wp, wbase, bp, pb, pu, D, H, xf, hf, cur, nxt, act, ract, scratch,
                       (b * T + t) * D, valid[r], r * Hp)
    else:
        wbase = p * KP * 64
        pfb = pn * KP * 64
        while n - r >= 6 and n - r != 8 and n - r != 9:
            b = r0 + r
            _lstm_tile6(Wp, wbase, pfb + (tile & 3) * KP * 16, bp, pb, pu, D, H, xf, hf, cur, nxt, cb, peep,
                        has_peep, Hp, cell_clip, act, ract, scratch,
                        (b * T + t) * D, ((b + 1) * T + t) * D, ((b + 2) * T + t) * D,
                        ((b + 3) * T + t) * D, ((b + 4) * T + t) * D, ((b + 5) * T + t) * D,
                        valid[r], valid[r + 1], valid[r + 2], valid[r + 3], valid[r + 4], valid[r + 5],
                        r * Hp, (r + 1) * Hp, (r + 2) * Hp, (r + 3) * Hp, (r + 4) * Hp, (r + 5) * Hp)
            r += 6
            tile += 1
        while r + 4 <= n:
            b = r0 + r
            _lstm_tile4(Wp, wbase, pfb + (tile & 3) * KP * 16, bp, pb, pu, D, H, xf, hf, cur, nxt, cb, peep,
                        has_peep, Hp, cell_clip, act, ract, scratch,
                        (b * T + t) * D, ((b + 1) * T + t) * D,
                        ((b + 2) * T + t) * D, ((b + 3) * T + t) * D,
                        valid[r], valid[r + 1], valid[r + 2], valid[r + 3],
                        r * Hp, (r + 1) * Hp, (r + 2) * Hp, (r + 3) * Hp)
            r += 4
            tile += 1
        while r + 2 <= n:
            b = r0 + r
            _lstm_tile2(Wp, wbase, bp, pb, pu, D, H, xf, hf, cur, nxt, cb, peep,
                        has_peep, Hp, cell_clip, act, ract, scratch,
                        (b * T + t) * D, ((b + 1) * T + t) * D, valid[r], valid[r + 1],
                        r * Hp, (r + 1) * Hp)
            r += 2
        if hoist and n == 1:  # the input sums come from P: only the recurrent rows
            _lstm_tile1(Wp, wbase + D * 64, P, _hoisted(gru, p, r0, T, t, D, Wp, wbase, bp, pb, xf, P, reverse),
                        pu, 0, H, xf, hf, cur, nxt, cb, peep, has_peep, Hp, cell_clip, act, ract, scratch,
                        0, valid[0], 0)
        elif r < n:
            b = r0 + r
            _lstm_tile1(Wp, wbase, bp, pb, pu, D, H, xf, hf, cur, nxt, cb, peep,
                        has_peep, Hp, cell_clip, act, ract, scratch,
                        (b * T + t) * D, valid[r], r * Hp)
    if has_out:
        # ``out`` is C-contiguous (cpu.py makes sure): a full panel is one
        # vector store at flat offset ((b * T + t) * H + pu)
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
                vstore(out, (b * T + t) * H + pu, vsplat(0.0))
            else:
                for j in range(pu, jend):
                    out[b, t, j] = 0.0


@njit(inline="always")
def _load_state(gru, r0, n, H, Hp, h0, c0, hf, cb):
    for r in range(n):
        for j in range(H):
            hf[r * Hp + j] = h0[r0 + r, j]
            if not gru:
                cb[r * Hp + j] = c0[r0 + r, j]


@njit(inline="always")
def _store_state(gru, r0, n, T, H, Hp, hf, cb, h_out, c_out):
    last = (T & 1) * n * Hp
    for r in range(n):
        for j in range(H):
            h_out[r0 + r, j] = hf[last + r * Hp + j]
            if not gru:
                c_out[r0 + r, j] = cb[r * Hp + j]


@njit(inline="always")
def _step_flags(r0, n, t, mask, has_mask, valid):
    for r in range(n):
        valid[r] = (not has_mask) or mask[r0 + r, t]


# ---- drivers ----


@njit(cache=True, nogil=True)
def run_rows(r0, r1, gru, Wp, bp, peep, has_peep, cell_clip, act, ract, H, x, h0, c0,
             mask, has_mask, reverse, zero_output, out, has_out, h_out, c_out, hoist):
    """Rows ``r0 .. r1-1`` for the whole sequence on the calling thread
    (``gru``: GRU with reset_after, else LSTM; ``c0``/``c_out``/``peep``
    are ignored for GRU)."""
    B, T, D = x.shape
    NP = (H + LANES - 1) // LANES
    Hp = NP * LANES
    n = r1 - r0
    hf = np.zeros(2 * n * Hp, dtype=np.float32)
    cb = np.zeros(n * Hp, dtype=np.float32)
    started = np.zeros(n, dtype=np.bool_)
    valid = np.ones(n, dtype=np.bool_)
    scratch = np.empty(LANES, dtype=np.float32)
    hoist = hoist and n == 1
    P = np.empty(NP * HOIST_STEPS * 64 if hoist else LANES, dtype=np.float32)
    xf = x.reshape(x.size)
    _load_state(gru, r0, n, H, Hp, h0, c0, hf, cb)
    for s in range(T):
        t = T - 1 - s if reverse else s
        cur = (s & 1) * n * Hp
        nxt = n * Hp - cur
        _step_flags(r0, n, t, mask, has_mask, valid)
        for p in range(NP):
            _panel(gru, p, (p + 1) % NP, r0, n, T, t, D, H, Hp, Wp, bp, peep, has_peep, cell_clip, act,
                   ract, xf, hf, cur, nxt, cb, valid, started, zero_output, out, has_out,
                   scratch, P, hoist, reverse)
        for r in range(n):
            started[r] = started[r] or valid[r]
    _store_state(gru, r0, n, T, H, Hp, hf, cb, h_out, c_out)


@njit(cache=True, nogil=True, parallel=True)
def run_rows_par(bounds, gru, Wp, bp, peep, has_peep, cell_clip, act, ract, H, x, h0, c0,
                 mask, has_mask, reverse, zero_output, out, has_out, h_out, c_out, hoist):
    """Batch split: thread ``c`` runs rows ``bounds[c] .. bounds[c+1]-1`` for
    the whole sequence. Rows never interact, so the threads never wait."""
    for c in prange(bounds.shape[0] - 1):
        run_rows(bounds[c], bounds[c + 1], gru, Wp, bp, peep, has_peep, cell_clip, act,
                 ract, H, x, h0, c0, mask, has_mask, reverse, zero_output, out, has_out,
                 h_out, c_out, hoist)


# Panel split: for small batches, two threads share each step's panels.
# The calling thread ("main", worker 0) runs the whole sequence and never
# depends on the other: it claims panels of its own half, then whatever the
# helper (worker 1: a thread of Numba's pool through split_par, or cpu.py's
# own thread under workqueue; it may wake up late or lose its core to
# another process) has not claimed yet, and waits only for panels the
# helper is computing at that moment. The helper helps while it keeps up
# and leaves as soon as it falls behind or finds the sequence finished;
# nothing waits for it to arrive, so a busy machine costs at most one
# stalled panel (plus, with split_par, the launch's join: the helper
# returns as soon as it is scheduled and sees the "finished" flag).
#
# The sync array (int64) holds, one cache line apart: the claim counters of
# the two halves (cumulative over steps), the count of panels done
# (cumulative), the number of threads asleep on it, the flag telling the
# helper to leave, the spin limit (set by the caller), the "finished" flag,
# the panels each worker ran, the step at which the helper ran its first
# panel (-1 until then; the caller sets it), and the most panels one claim
# may take (set by the caller).
_CLAIM0, _CLAIM1, _DONE, _WAITERS, ABANDON, SPINS, FINISHED, _COUNT0, JOIN, CHUNK, SYNC_SIZE = (
    0, 8, 16, 24, 32, 40, 48, 56, 72, 80, 88)
# panels run by worker w: sync[COUNT + 8 * w]
COUNT = _COUNT0
# pause-spins before a waiting thread stops waiting for the other (about
# 50-100 us: ten panels' time)
DEFAULT_SPINS = 4000
_SLEEP_NS = 200_000
_NAPS = 5  # naps of _SLEEP_NS without progress before main goes on alone


@njit(inline="always")
def _wait_done(sync, target, w):
    """Wait until ``target`` panels are done; False when the helper gives up.

    Patience is counted from the other thread's last finished panel: while
    it keeps finishing panels, waiting goes on."""
    spins = 0
    naps = 0
    seen = atomic_load(sync, _DONE)
    limit = sync[SPINS]
    while True:
        done = atomic_load(sync, _DONE)
        if done >= target:
            return True
        if done != seen:  # a panel was finished: wait afresh for the next
            seen = done
            spins = 0
            naps = 0
        if spins < limit:
            cpu_relax()
            spins += 1
            continue
        if w != 0:
            if spins < 4 * limit:  # the helper is more patient: main may just be late
                cpu_relax()
                spins += 1
                continue
            # ... and then naps (main wakes it when it finishes a panel):
            # main may have lost its vCPU for a moment (see below)
            naps += 1
            if naps > 2 * _NAPS:
                return False  # main stays away: it finishes alone
            atomic_add(sync, _WAITERS, 1)
            v = atomic_load(sync, _DONE)
            if v < target:
                futex_wait(sync, _DONE, v, _SLEEP_NS)
            atomic_add(sync, _WAITERS, -1)
            continue
        # The helper has sat on one panel far longer than a panel takes: its
        # core was taken. Sleep instead of spinning. A virtual machine loses
        # a vCPU for 0.05-0.3 ms dozens of times a second (measured on the
        # 2-vCPU host of the fifth session: ~110-235 gaps over 50 us in 8 s,
        # p90 0.2-0.3 ms, 4-11 over 1 ms): the helper then comes back and
        # goes on. Only after _NAPS naps without a panel finished (about a
        # millisecond: another process has its core for a scheduler slice)
        # is it told to leave after that panel, and main finishes alone.
        naps += 1
        if naps > _NAPS:
            atomic_cas(sync, ABANDON, 0, 1)
        atomic_add(sync, _WAITERS, 1)
        v = atomic_load(sync, _DONE)
        if v < target:
            futex_wait(sync, _DONE, v, _SLEEP_NS)
        atomic_add(sync, _WAITERS, -1)


@njit(inline="always")
def _left_out(sync, w):
    """True when the helper (``w != 0``) must stop: told to, or all is done."""
    return w != 0 and (atomic_load(sync, ABANDON) != 0 or atomic_load(sync, FINISHED) != 0)


@njit(nogil=True, _nrt=False)
def _claim_run(w, sync, slot, s, lo, cnt, gru, T, t, D, H, Hp, Wp, bp, peep, has_peep, cell_clip,
               act, ract, xf, hf, cur, nxt, cb, valid, started, zero_output, out, has_out,
               scratch, P, hoist, reverse):
    """Claim and run the panels ``lo .. lo+cnt-1`` of step ``s`` one at a
    time until none is left; returns how many this thread ran."""
    did = 0
    end = (s + 1) * cnt
    # claim a few panels at a time: one atomic per chunk, not per panel (the
    # counters' cache lines bounce between the cores), while a stalled
    # thread still holds at most a chunk (at most sync[CHUNK] panels: large
    # panels are claimed one by one)
    chunk = max(1, min((cnt + 1) // 2, sync[CHUNK]))
    while True:
        if _left_out(sync, w):
            return did
        c = atomic_load(sync, slot)
        if c >= end:
            return did
        c1 = min(end, c + chunk)
        if atomic_cas(sync, slot, c, c1):
            for q in range(c, c1):
                _panel(gru, lo + q - s * cnt, lo + (q + 1 - s * cnt) % cnt, 0, valid.shape[0], T, t, D, H, Hp, Wp, bp, peep,
                       has_peep, cell_clip, act, ract, xf, hf, cur, nxt, cb, valid, started,
                       zero_output, out, has_out, scratch, P, hoist, reverse)
            did += c1 - c
            atomic_add(sync, _COUNT0 + 8 * w, c1 - c)  # before _DONE: read once all is done
            atomic_add(sync, _DONE, c1 - c)
            if atomic_load(sync, _WAITERS) > 0:
                futex_wake(sync, _DONE)


@njit(cache=True, nogil=True)
def split_prepare(gru, H, h0, c0, hoist):
    """Buffers of a panel-split call: the state (``hf``, ``cb``, loaded from
    h0/c0) and the hoisted input sums ``P`` (see ``_hoisted``)."""
    B = h0.shape[0]
    NP = (H + LANES - 1) // LANES
    Hp = NP * LANES
    hf = np.zeros(2 * B * Hp, dtype=np.float32)
    cb = np.zeros(B * Hp, dtype=np.float32)
    P = np.empty(NP * HOIST_STEPS * 64 if hoist and B == 1 else LANES, dtype=np.float32)
    _load_state(gru, 0, B, H, Hp, h0, c0, hf, cb)
    return hf, cb, P


@njit(cache=True, nogil=True)
def split_work(w, sync, gru, Wp, bp, peep, has_peep, cell_clip, act, ract, H, x,
               mask, has_mask, reverse, zero_output, out, has_out, hf, cb, P, hoist):
    """Worker ``w`` of a panel-split call (0: the caller, runs to the end;
    1: the helper, leaves when it falls behind). Panels run: ``sync[COUNT + 8 * w]``."""
    B, T, D = x.shape
    NP = (H + LANES - 1) // LANES
    Hp = NP * LANES
    half = (NP + 1) // 2
    if w == 0:
        my_slot, my_lo, my_cnt, ot_slot, ot_lo, ot_cnt = _CLAIM0, 0, half, _CLAIM1, half, NP - half
    else:
        my_slot, my_lo, my_cnt, ot_slot, ot_lo, ot_cnt = _CLAIM1, half, NP - half, _CLAIM0, 0, half
    started = np.zeros(B, dtype=np.bool_)
    valid = np.ones(B, dtype=np.bool_)
    scratch = np.empty(LANES, dtype=np.float32)
    hoist = hoist and B == 1  # P: shared by both workers (see split_prepare)
    xf = x.reshape(x.size)
    did = 0
    joined = False
    for s in range(T):
        if _left_out(sync, w):
            break
        t = T - 1 - s if reverse else s
        cur = (s & 1) * B * Hp
        nxt = B * Hp - cur
        _step_flags(0, B, t, mask, has_mask, valid)
        # half of h was written by the other core: ask for all of it at once
        for j in range(cur, cur + B * Hp, 16):
            prefetch_l1(hf, j)
        # own half first (its weights stay in this core's cache), then
        # whatever the other thread has not claimed yet
        did += _claim_run(w, sync, my_slot, s, my_lo, my_cnt, gru, T, t, D, H, Hp, Wp, bp, peep,
                          has_peep, cell_clip, act, ract, xf, hf, cur, nxt, cb, valid,
                          started, zero_output, out, has_out, scratch, P, hoist, reverse)
        did += _claim_run(w, sync, ot_slot, s, ot_lo, ot_cnt, gru, T, t, D, H, Hp, Wp, bp, peep,
                          has_peep, cell_clip, act, ract, xf, hf, cur, nxt, cb, valid,
                          started, zero_output, out, has_out, scratch, P, hoist, reverse)
        if w != 0 and did > 0 and not joined:
            joined = True
            atomic_cas(sync, JOIN, -1, s)
        if not _wait_done(sync, (s + 1) * NP, w):
            break
        for r in range(B):
            started[r] = started[r] or valid[r]
    if w == 0:
        atomic_add(sync, FINISHED, 1)


@njit(cache=True, nogil=True, parallel=True)
def split_par(sync, gru, Wp, bp, peep, has_peep, cell_clip, act, ract, H, x,
              mask, has_mask, reverse, zero_output, out, has_out, hf, cb, P, hoist):
    """A panel-split call on Numba's thread pool: workers 0 and 1 are the two
    iterations of one parallel loop, so the second thread starts within a
    microsecond or two instead of waking a Python thread (which needs the
    GIL). Worker 1 still leaves as soon as it falls behind, and worker 0
    never waits for it to arrive."""
    for w in prange(2):
        split_work(w, sync, gru, Wp, bp, peep, has_peep, cell_clip, act, ract, H, x,
                   mask, has_mask, reverse, zero_output, out, has_out, hf, cb, P, hoist)


@njit(cache=True, nogil=True)
def split_finish(gru, H, T, hf, cb, h_out, c_out):
    """Final states of a panel-split call."""
    B = h_out.shape[0]
    Hp = (H + LANES - 1) // LANES * LANES
    _store_state(gru, 0, B, T, H, Hp, hf, cb, h_out, c_out)


# ---- packing (NumPy, once per weight set) ----


def _panels(blocks, H, ncols_per_gate):
    """Stack ``blocks`` (each (K_i, G*H), gate-major) into panels of 16 units.

    Returns a flat float32 array indexed ``[p, k, g, lane]``.
    """
    G = ncols_per_gate
    NP = (H + LANES - 1) // LANES
    Hp = NP * LANES
    K = sum(b.shape[0] for b in blocks)
    full = np.concatenate([np.asarray(b, dtype=np.float32) for b in blocks], axis=0)
    padded = np.zeros((K, G, Hp), dtype=np.float32)
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


def pack_lstm(kernel, recurrent_kernel, bias, forget_bias, peepholes):
    H = recurrent_kernel.shape[1] // 4
    Hp = (H + LANES - 1) // LANES * LANES
    Wp = _panels([kernel, recurrent_kernel], H, 4)
    b = np.asarray(bias, dtype=np.float64)
    bp = _bias_panels([b[:H], b[H:2 * H] + forget_bias, b[2 * H:3 * H], b[3 * H:]], H)
    peep = np.zeros(3 * Hp, dtype=np.float32)
    if peepholes is not None:
        for g in range(3):
            peep[g * Hp:g * Hp + H] = peepholes[g]
    return Wp, bp, aligned64(peep)


def pack_gru(kernel, recurrent_kernel, bias):
    H = recurrent_kernel.shape[0]
    Wp = _panels([kernel, recurrent_kernel], H, 3)
    bias = np.asarray(bias, dtype=np.float64)
    b_in, b_rec = bias[0], bias[1]
    bp = _bias_panels([b_in[:H] + b_rec[:H], b_in[H:2 * H] + b_rec[H:2 * H],
                       b_in[2 * H:], b_rec[2 * H:]], H)
    return Wp, bp
