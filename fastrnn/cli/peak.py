"""The machine's float32 FMA peak, measured: the ceiling the bench compares with.

A register-only loop of 16 independent 16-float FMA chains (enough to cover
the FMA latency on two FMA ports) with no memory traffic: what the packed
kernels' arithmetic could reach if loads and gate math were free.
``python -m fastrnn bench`` reports it beside the engines' GFLOP/s (``out``
is float32, so are the vectors).
"""

from __future__ import annotations

import time

import numpy as np
from numba import njit, prange

from ..kernels.cpu.simd import vfill, vfma, vstore


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
    run(1000)
    t0 = time.perf_counter()
    run(100_000)
    n = max(1000, int(100_000 * seconds / max(time.perf_counter() - t0, 1e-6)))
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        run(n)
        best = min(best, time.perf_counter() - t0)
    return max(1, threads) * n * FLOP_PER_ITER / best / 1e9
