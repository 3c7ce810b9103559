"""Subnormal numbers read as zero inside the CPU kernels, and the caller's
floating-point control register is left as it was.

With Keras's default zero biases and a zero initial state, an all-subnormal
input keeps every sum of products subnormal: without flush-to-zero the
outputs are subnormal numbers (and the call takes a slow microcode path on
many CPUs); with it, exactly zero, the outputs of an all-zero input.
(Speed is measured by asv: ``asv_bench/benchmarks/bench_subnormal.py``.)
"""

from __future__ import annotations

import numpy as np
import pytest
from numba import njit, prange

from fastrnn import dispatch
from fastrnn.kernels import GRUParams, LSTMParams, SimpleRNNParams, reference, run, state_sizes
from fastrnn.kernels.cpu import fpenv, stream, threads

cpu = dispatch.backend_module("cpu")
FLUSH = fpenv.FLUSH
pytestmark = pytest.mark.skipif(not FLUSH, reason="no flush-to-zero control on this architecture")


@njit
def _control():
    return fpenv.fp_control()


@njit
def _set_flush():
    return fpenv.flush_denormals()


@njit
def _restore(word):
    fpenv.restore_fp(word)


@njit(parallel=True)
def _pool_controls(n):
    """The control register of the pool threads that run ``n`` iterations."""
    out = np.empty(n, np.int64)
    for i in prange(n):
        out[i] = fpenv.fp_control()
    return out


def _subnormal(rng, shape, dtype):
    tiny = np.finfo(dtype).tiny
    x = rng.uniform(0.01, 0.99, shape) * tiny * rng.choice([-1.0, 1.0], shape)
    x = x.astype(dtype)
    assert np.all((x != 0) & (np.abs(x) < tiny))
    return x


def _params(kind, rng, D, H, dtype, zero_bias):
    r = lambda *s: rng.uniform(-0.5, 0.5, s).astype(dtype)  # noqa: E731
    b = (lambda *s: np.zeros(s, dtype)) if zero_bias else r
    if kind == "lstm":
        return LSTMParams(r(D, 4 * H), r(H, 4 * H), b(4 * H))
    if kind == "gru":
        return GRUParams(r(D, 3 * H), r(H, 3 * H), b(2, 3 * H))
    if kind == "gru_reset_before":
        return GRUParams(r(D, 3 * H), r(H, 3 * H), b(2, 3 * H), reset_after=False)
    return SimpleRNNParams(r(D, H), r(H, H), b(H))


def _call(backend, params, x, states, mask=None):
    B, T, _ = x.shape
    out = np.full((B, T, params.output_size), np.nan, x.dtype)
    outs = [np.full_like(s, np.nan) for s in states]
    run(backend, backend.pack(params), x, states, mask, False, False, out, outs)
    return [out] + outs


KINDS = [("lstm", np.float32), ("gru", np.float32), ("lstm", np.float64),
         ("gru_reset_before", np.float32), ("simple_rnn", np.float64)]


@pytest.mark.parametrize("kind,dtype", KINDS)
def test_subnormal_inputs_read_as_zero(rng, threading, kind, dtype):
    B = threads._BATCH_SPLIT_MIN + 3 if threading == "rows split" else 2
    D, H, T = 6, 37, 5
    x = _subnormal(rng, (B, T, D), dtype)
    zeros = np.zeros_like(x)
    # zero biases and states: every sum stays subnormal unless flushed
    params = _params(kind, rng, D, H, dtype, zero_bias=True)
    states = [np.zeros((B, n), dtype) for n in state_sizes(params)]
    before = _control()
    got = _call(cpu, params, x, states)
    assert _control() == before, "the caller's control register changed"
    for g in got:
        assert np.all(g == 0), "a subnormal input did not read as zero"
    # random biases and states: the same bits as a zero input, and the
    # reference agrees on that
    params = _params(kind, rng, D, H, dtype, zero_bias=False)
    states = [rng.uniform(-1, 1, (B, n)).astype(dtype) for n in state_sizes(params)]
    mask = rng.random((B, T)) < 0.8
    got = _call(cpu, params, x, states, mask)
    want = _call(cpu, params, zeros, states, mask)
    oracle = _call(reference, params, zeros, states, mask)
    tol = dict(rtol=1e-4, atol=3e-5) if dtype == np.float32 else dict(rtol=1e-9, atol=1e-10)
    for g, w, o in zip(got, want, oracle):
        np.testing.assert_array_equal(g, w)
        np.testing.assert_allclose(w, o, **tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("fn", ["frame", "chunk_seq", "chunk_last"])
def test_stream_kernels_flush_and_restore(rng, fn, dtype):
    D, H, B = 5, 19, 1
    params = _params("lstm", rng, D, H, dtype, zero_bias=True)
    w, cfg, state_len = stream.pack([params], B, False)
    work = np.zeros(stream.work_size(cfg, B, 4), dtype)
    shape = (B, D) if fn == "frame" else (B, 4, D)
    oshape = {"frame": (B, H), "chunk_seq": (B, 4, H), "chunk_last": (B, H)}[fn]
    s = np.zeros(state_len, dtype)
    out = np.full(oshape, np.nan, dtype)
    before = _control()
    getattr(stream, fn)(_subnormal(rng, shape, dtype), w, s, work, out, cfg)
    assert _control() == before
    assert np.all(out == 0) and np.all(s == 0)


def test_a_caller_that_flushes_keeps_flushing(rng):
    """The kernels put back the caller's exact setting: one that had
    flush-to-zero on itself still has it after a call."""
    old = _set_flush()
    try:
        on = _control()
        assert on & FLUSH == FLUSH
        params = _params("lstm", rng, 3, 5, np.float32, zero_bias=False)
        _call(cpu, params, rng.uniform(-1, 1, (2, 3, 3)).astype(np.float32),
              [np.zeros((2, 5), np.float32)] * 2)
        assert _control() == on
    finally:
        _restore(old)
    assert _control() & FLUSH == 0


def test_pool_threads_are_left_as_they_were(rng, monkeypatch):
    """After parallel calls, the pool's threads have the setting they had."""
    cpu.set_num_threads(2)
    monkeypatch.setattr(threads, "_MIN_PARALLEL_WORK", 0)
    monkeypatch.setattr(threads, "_MIN_SPLIT_STEP_WORK", 0)
    try:
        for B in (2, threads._BATCH_SPLIT_MIN + 1):  # panels split, rows split
            for kind, dtype in (("lstm", np.float32), ("lstm", np.float64)):
                params = _params(kind, rng, 4, 40, dtype, zero_bias=True)
                _call(cpu, params, _subnormal(rng, (B, 3, 4), dtype),
                      [np.zeros((B, 40), dtype)] * 2)
                assert np.all(_pool_controls(64) & FLUSH == 0)
    finally:
        cpu.set_num_threads(None)
