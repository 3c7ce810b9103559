"""The machine's float32 FMA peak, measured: the ceiling the bench compares with.

A register-only loop of 16 independent 16-float FMA chains (enough to cover
the FMA latency on two FMA ports) with no memory traffic: what the packed
kernels' arithmetic could reach if loads and gate math were free.
``python -m fastrnn bench`` reports it beside the engines' GFLOP/s (``out``
is float32, so are the vectors).

:func:`dot_peak` does the same for the dot-product instructions of the
``_dynamic`` weight formats (``simd.vdot``: 64 int8 products per vector,
``simd.bdot``: 32 bfloat16 products), which ``bench --precision`` compares
those formats with; the weights-only formats multiply in float32 (FMA peak).
"""

from __future__ import annotations

import time

import numpy as np
from numba import njit, prange

from ..kernels.cpu.simd import bdot, dload, itof, vdot, vfill, vfma, vstore


@njit(cache=True, nogil=True)
def _chains(n, out):
    m = vfill(out, 0.999)
    c = vfill(out, 0.001)
    a0 = vfill(out, 0.1)
    a1 = vfill(out, 0.2)
    a2 = vfill(out, 0.3)
    a3 = vfill(out, 0.4)
    a4 = vfill(out, 0.5)
    a5 = vfill(out, 0.6)
    a6 = vfill(out, 0.7)
    a7 = vfill(out, 0.8)
    a8 = vfill(out, 0.9)
    a9 = vfill(out, 1.0)
    a10 = vfill(out, 1.1)
    a11 = vfill(out, 1.2)
    a12 = vfill(out, 1.3)
    a13 = vfill(out, 1.4)
    a14 = vfill(out, 1.5)
    a15 = vfill(out, 1.6)
    for _ in range(n):
        a0 = vfma(a0, m, c)
        a1 = vfma(a1, m, c)
        a2 = vfma(a2, m, c)
        a3 = vfma(a3, m, c)
        a4 = vfma(a4, m, c)
        a5 = vfma(a5, m, c)
        a6 = vfma(a6, m, c)
        a7 = vfma(a7, m, c)
        a8 = vfma(a8, m, c)
        a9 = vfma(a9, m, c)
        a10 = vfma(a10, m, c)
        a11 = vfma(a11, m, c)
        a12 = vfma(a12, m, c)
        a13 = vfma(a13, m, c)
        a14 = vfma(a14, m, c)
        a15 = vfma(a15, m, c)
    # every chain is stored, so none is optimised away
    vstore(out, 0, a0)
    vstore(out, 16, a1)
    vstore(out, 32, a2)
    vstore(out, 48, a3)
    vstore(out, 64, a4)
    vstore(out, 80, a5)
    vstore(out, 96, a6)
    vstore(out, 112, a7)
    vstore(out, 128, a8)
    vstore(out, 144, a9)
    vstore(out, 160, a10)
    vstore(out, 176, a11)
    vstore(out, 192, a12)
    vstore(out, 208, a13)
    vstore(out, 224, a14)
    vstore(out, 240, a15)


@njit(cache=True, nogil=True, parallel=True)
def _chains_par(n, out):
    for w in prange(out.shape[0]):
        _chains(n, out[w])


FLOP_PER_ITER = 16 * 16 * 2  # 16 chains x 16 lanes x (multiply + add)


def fma_peak(threads=1, seconds=0.1, repeats=3):
    """Best float32 GFLOP/s of the FMA loop on ``threads`` threads (one
    parallel launch, each thread its own chains), over ``repeats`` runs of
    about ``seconds`` each."""
    out = np.zeros((max(1, threads), 256), dtype=np.float32)
    run = (lambda n: _chains(n, out[0])) if threads <= 1 else (lambda n: _chains_par(n, out))
    return _best(run, threads, FLOP_PER_ITER, seconds, repeats)


def _best(run, threads, per_iter, seconds, repeats):
    """Best rate (G per second) of ``run(n)``, ``per_iter`` operations per
    iteration per thread, over ``repeats`` runs of about ``seconds``."""
    run(1000)
    t0 = time.perf_counter()
    run(100_000)
    n = max(1000, int(100_000 * seconds / max(time.perf_counter() - t0, 1e-6)))
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        run(n)
        best = min(best, time.perf_counter() - t0)
    return max(1, threads) * n * per_iter / best / 1e9


@njit(cache=True, nogil=True)
def _int8_chains(n, w, out):
    """8 chains of int8 dot products (``w``: 32 int32 of packed bytes)."""
    a, b = dload(w, 0), dload(w, 16)
    a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = dload(w, 0)
    for _ in range(n):
        a0 = vdot(a0, a, b)
        a1 = vdot(a1, a, b)
        a2 = vdot(a2, a, b)
        a3 = vdot(a3, a, b)
        a4 = vdot(a4, a, b)
        a5 = vdot(a5, a, b)
        a6 = vdot(a6, a, b)
        a7 = vdot(a7, a, b)
    vstore(out, 0, itof(a0) + itof(a1) + itof(a2) + itof(a3) + itof(a4) + itof(a5)
           + itof(a6) + itof(a7))


@njit(cache=True, nogil=True)
def _bf16_chains(n, w, out):
    """8 chains of bfloat16 dot products (``w``: 32 int32 of bfloat16 pairs)."""
    a, b = dload(w, 0), dload(w, 16)
    a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = vfill(out, 0.0)
    for _ in range(n):
        a0 = bdot(a0, a, b)
        a1 = bdot(a1, a, b)
        a2 = bdot(a2, a, b)
        a3 = bdot(a3, a, b)
        a4 = bdot(a4, a, b)
        a5 = bdot(a5, a, b)
        a6 = bdot(a6, a, b)
        a7 = bdot(a7, a, b)
    vstore(out, 0, a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7)


@njit(cache=True, nogil=True, parallel=True)
def _int8_par(n, w, out):
    for t in prange(out.shape[0]):
        _int8_chains(n, w, out[t])


@njit(cache=True, nogil=True, parallel=True)
def _bf16_par(n, w, out):
    for t in prange(out.shape[0]):
        _bf16_chains(n, w, out[t])


#: Operations (multiplies + adds) of one loop iteration: 8 vectors x 16 lanes
#: x products per lane x 2.
DOT_OPS_PER_ITER = {"int8": 8 * 16 * 4 * 2, "bfloat16": 8 * 16 * 2 * 2}


def dot_peak(fmt, threads=1, seconds=0.1, repeats=3):
    """Best GOP/s (multiplies and adds) of the ``fmt`` (``"int8"`` or
    ``"bfloat16"``) dot-product loop on ``threads`` threads, as
    :func:`fma_peak`."""
    if fmt not in DOT_OPS_PER_ITER:
        raise ValueError(f"fmt: expected 'int8' or 'bfloat16', got {fmt!r}")
    # small values, so that no sum overflows or loses its integers
    w = np.full(32, 0x00010001 if fmt == "int8" else 0x3C003C00, dtype=np.int32)
    out = np.zeros((max(1, threads), 16), dtype=np.float32)
    one, par = (_int8_chains, _int8_par) if fmt == "int8" else (_bf16_chains, _bf16_par)
    run = (lambda n: one(n, w, out[0])) if threads <= 1 else (lambda n: par(n, w, out))
    return _best(run, threads, DOT_OPS_PER_ITER[fmt], seconds, repeats)
