"""Reduced-precision weights: the scheme of ``kernels.quantize`` and every
quantized kernel against the quantized ``reference``.

The quantized semantics are the float32 values in ``params.kernel`` /
``params.recurrent_kernel`` (the dequantized weights), so ``reference``
runs them unchanged; the cpu backend runs the compact panels (bfloat16 bit
patterns, int8 with column scales) through its own loads. Accuracy against
float64 is checked at the bounds the quantized layers promise (5e-3 for
bfloat16, 1.5e-2 for int8, 1e-2 for bfloat16_dynamic, 2.5e-2 for
int8_dynamic; PyTorch-initialised weights, normal inputs).
Run under ``NUMBA_CPU_NAME=generic`` too: the widening loads have a path on
every target.
"""

from __future__ import annotations

import numpy as np
import pytest
from numba import njit

import fastrnn
from fastrnn import dispatch
from fastrnn.kernels import (DYNAMIC, GRUParams, LSTMParams, QuantizedWeights, SimpleRNNParams,
                             bfloat16_values, quantize, quantize_rows, reference, run,
                             state_sizes)
from fastrnn.kernels.cpu import packed as packed_kernels
from fastrnn.kernels.cpu import stream as stream_kernels
from fastrnn.kernels.cpu.simd import bdot, dload, vload, vstore

from test_kernels import BACKENDS, _force_parallel, compare, make_params, ragged_mask

MODES = ("bfloat16", "int8")  # weights only: every configuration
ALL_MODES = MODES + DYNAMIC  # activations too: LSTM and GRU (reset_after)


@pytest.fixture
def cpu():
    return dispatch.backend_module("cpu")


@pytest.fixture(params=BACKENDS)
def backend(request):
    """Each backend of ``FASTRNN_TEST_BACKENDS`` (see test_kernels)."""
    ok, why = dispatch.available(request.param)
    if not ok:
        pytest.skip(f"backend {request.param!r} not available: {why}")
    return dispatch.backend_module(request.param)


# ------------------------------------------------------------------ the scheme


def _bf16_round_independent(w):
    """Nearest bfloat16, ties to even, computed with float64 arithmetic on
    the value (not on its bits): the spacing of bfloat16 at ``|w|`` is
    2^(e - 7) for ``2^e <= |w| < 2^(e+1)``."""
    out = np.empty_like(w)
    for i, v in enumerate(w.ravel()):
        v = float(v)
        if v == 0.0:
            out.flat[i] = v
            continue
        e = np.floor(np.log2(abs(v)))
        ulp = 2.0 ** (e - 7)
        out.flat[i] = np.round(v / ulp) * ulp  # np.round: ties to even
    return out.astype(np.float32)


def test_bfloat16_rounds_to_nearest_even():
    rng = np.random.default_rng(3)
    k = (rng.standard_normal((7, 12)) * rng.choice([1e-3, 1.0, 300.0], (7, 12))).astype(np.float32)
    # exact ties: 1 + 2^-8 lies halfway between 1 and 1 + 2^-7 (even: 1);
    # 1 + 3 * 2^-8 between 1 + 2^-7 and 1 + 2^-6 (even: 1 + 2^-6)
    k[0, :4] = [1 + 2 ** -8, 1 + 3 * 2 ** -8, -(1 + 2 ** -8), 0.0]
    p = quantize(SimpleRNNParams(k[:, :3].copy(), k[:3, :3].copy(), np.zeros(3, np.float32)),
                 "bfloat16")
    q = quantize(LSTMParams(k, k[:3].copy(), np.zeros(12, np.float32)), "bfloat16")
    np.testing.assert_array_equal(q.kernel, _bf16_round_independent(k))
    assert list(q.kernel[0, :4]) == [1.0, 1 + 2 ** -6, -1.0, 0.0]
    assert q.precision == "bfloat16" and p.precision == "bfloat16"
    assert q.quantized.kernel.dtype == np.uint16
    np.testing.assert_array_equal(q.quantized.kernel.astype(np.uint32) << 16,
                                  q.kernel.view(np.uint32))


def test_bfloat16_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    k = rng.standard_normal((33, 3 * 21)).astype(np.float32)
    r = rng.standard_normal((21, 3 * 21)).astype(np.float32)
    q = quantize(GRUParams(k, r, np.zeros((2, 63), np.float32)), "bfloat16")
    want = torch.from_numpy(r).to(torch.bfloat16).to(torch.float32).numpy()
    np.testing.assert_array_equal(q.recurrent_kernel, want)


def test_int8_per_column_scheme():
    rng = np.random.default_rng(5)
    D, H = 9, 6
    k = rng.uniform(-2, 2, (D, 4 * H)).astype(np.float32)
    r = rng.uniform(-0.1, 0.1, (H, 4 * H)).astype(np.float32)
    k[:, 5] = 0.0  # a column of zeros
    bias = rng.standard_normal(4 * H).astype(np.float32)
    p = LSTMParams(k, r, bias)
    q = quantize(p, "int8")
    qw = q.quantized
    assert q.precision == "int8" and qw.kernel.dtype == np.int8
    for w, qi, s in ((k, qw.kernel, qw.kernel_scale), (r, qw.recurrent_kernel, qw.recurrent_scale)):
        assert s.dtype == np.float32 and s.shape == (4 * H,)
        np.testing.assert_allclose(s, np.abs(w).max(axis=0) / 127, rtol=1e-6)
        nonzero = s > 0
        assert (np.abs(qi).max(axis=0)[nonzero] == 127).all()  # symmetric, full range
        # round to nearest: within half a step of the weight
        assert (np.abs(qi * s.astype(np.float64) - w) <= s / 2 * (1 + 1e-5)).all()
    assert qw.kernel_scale[5] == 0 and not qw.kernel[:, 5].any() and not q.kernel[:, 5].any()
    # the two matrices have their own scales
    assert not np.allclose(qw.kernel_scale, qw.recurrent_scale)
    # the float32 values are q * scale, in float32
    np.testing.assert_array_equal(q.kernel, qw.kernel.astype(np.float32) * qw.kernel_scale)
    # biases (and everything else) stay as they were; the input is untouched
    assert q.bias is bias and p.quantized is None and p.precision == "float32"
    np.testing.assert_array_equal(p.kernel, k)


@pytest.mark.parametrize("mode", ["int8", "int8_dynamic"])
def test_int8_columns_of_tiny_weights(mode):
    """A column whose largest weight is below 1.5e-36 had a subnormal scale,
    which the cpu kernels (flushing subnormals) read as 0: the column then
    added nothing, where the reference used its weights."""
    H, D = 16, 4
    rng = np.random.default_rng(0)
    W = rng.uniform(-1, 1, (D, 4 * H)).astype(np.float32)
    W[:, :H] *= np.float32(1e-37)  # the input gate's columns: tiny, but normal numbers
    U = rng.uniform(-0.5, 0.5, (H, 4 * H)).astype(np.float32)
    b = np.zeros(4 * H, np.float32)
    qw = quantize(LSTMParams(W, U, b), mode).quantized
    assert (qw.kernel_scale[:H] == np.finfo(np.float32).tiny).all()
    assert (np.abs(qw.kernel[:, :H]) <= 127).all() and np.abs(qw.kernel[:, :H]).max() > 1
    x = np.full((1, 3, D), 1e36, np.float32)
    x[0, 1] *= -0.5
    got = {}
    for backend in ("cpu", "reference"):
        layer = fastrnn.LSTM(H, backend=backend, return_sequences=True)
        layer.set_weights([W, U, b])
        got[backend] = layer.quantize(mode)(x)
    assert np.isfinite(got["cpu"]).all()
    np.testing.assert_allclose(got["cpu"], got["reference"], atol=1e-5)


@pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor:UserWarning")
def test_int8_matches_torch_per_channel():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(6)
    k = rng.uniform(-0.3, 0.3, (17, 3 * 11)).astype(np.float32)
    q = quantize(GRUParams(k, k[:11].copy(), np.zeros((2, 33), np.float32)), "int8").quantized
    scale = torch.from_numpy(q.kernel_scale.astype(np.float64))
    got = torch.quantize_per_channel(torch.from_numpy(k.T.copy()), scale,
                                     torch.zeros(33, dtype=torch.long), 0, torch.qint8)
    np.testing.assert_array_equal(got.int_repr().numpy().T, q.kernel)


@pytest.mark.parametrize("mode", MODES)
def test_dequantize_is_exact(mode):
    rng = np.random.default_rng(7)
    p = make_params("gru", rng, 5, 7, np.float32)
    q = quantize(p, mode)
    k, r = q.quantized.dequantize()
    np.testing.assert_array_equal(k, q.kernel)
    np.testing.assert_array_equal(r, q.recurrent_kernel)
    # quantizing the quantized values again changes nothing (they are on the grid)
    again = quantize(GRUParams(q.kernel, q.recurrent_kernel, q.bias), mode)
    np.testing.assert_array_equal(again.kernel, q.kernel)


def test_bad_calls_are_clear_errors():
    rng = np.random.default_rng(8)
    p = make_params("lstm", rng, 3, 5, np.float32)
    for bad in ("fp8", "BFLOAT16", None, 8):
        with pytest.raises(ValueError, match=r"mode: expected one of 'bfloat16', 'int8', "
                                             r"'int8_dynamic', 'bfloat16_dynamic', got"):
            quantize(p, bad)
    for cell, what in ((make_params("simple_rnn", rng, 3, 5, np.float32), "a SimpleRNN"),
                       (make_params("gru", rng, 3, 5, np.float32, reset_after=False),
                        "a GRU with reset_after=False"),
                       (make_params("lstm", rng, 3, 5, np.float32, proj=2),
                        "an LSTM with a projection")):
        with pytest.raises(ValueError, match=f"mode: 'int8_dynamic' covers .* not {what}; use"):
            quantize(cell, "int8_dynamic")
    with pytest.raises(ValueError, match="params: only float32 weights can be quantized, got float64"):
        quantize(make_params("gru", rng, 3, 5, np.float64), "int8")
    q = quantize(p, "int8")
    with pytest.raises(ValueError, match="params: already quantized to int8"):
        quantize(q, "bfloat16")
    nan = LSTMParams(p.kernel.copy(), p.recurrent_kernel.copy(), p.bias)
    nan.recurrent_kernel[1, 2] = np.nan
    with pytest.raises(ValueError, match="recurrent_kernel: int8 quantization needs finite"):
        quantize(nan, "int8")
    assert np.isnan(quantize(nan, "bfloat16").recurrent_kernel[1, 2])


# ------------------------------------------------------------------ batch kernels


CONFIGS = [
    ("lstm", {}), ("gru", {}),  # packed panels
    ("gru", {"reset_after": False}), ("simple_rnn", {}),  # generic kernels, float32 values
    ("lstm", {"proj": 5}), ("lstm", {"peep": True, "cell_clip": 0.7}),
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind,opts", CONFIGS)
@pytest.mark.parametrize("H", [1, 17, 37])
def test_batch_kernels_against_reference(cpu, mode, kind, opts, H):
    rng = np.random.default_rng(H)
    params = quantize(make_params(kind, rng, 11, H, np.float32, **dict(opts)), mode)
    for B, T in ((1, 7), (2, 5), (5, 4), (13, 3)):
        x = rng.standard_normal((B, T, 11)).astype(np.float32)
        compare(cpu, params, x, rng=rng)
        compare(cpu, params, x, mask=ragged_mask(rng, B, T), reverse=True, zero_output=B % 2 == 1,
                rng=rng)


@pytest.mark.parametrize("mode", ALL_MODES)
@pytest.mark.parametrize("kind", ["lstm", "gru", "simple_rnn"])
def test_every_backend_runs_the_quantized_semantics(backend, mode, kind):
    """Every backend of ``FASTRNN_TEST_BACKENDS`` (see test_kernels; cuda
    runs the dequantized float32 values and refuses the dynamic modes)
    against the quantized reference."""
    if mode in DYNAMIC and kind == "simple_rnn":
        pytest.skip("dynamic modes: LSTM and GRU only (test_bad_calls_are_clear_errors)")
    rng = np.random.default_rng(14)
    params = quantize(make_params(kind, rng, 7, 19, np.float32), mode)
    ok, why = backend.supports(params)
    if mode in DYNAMIC and backend.NAME == "cuda":
        assert not ok and mode in why
        return
    assert ok, why
    x = rng.standard_normal((3, 4, 7)).astype(np.float32)
    if mode in DYNAMIC:
        _compare_dynamic(backend, params, x, mask=ragged_mask(rng, 3, 4), rng=rng)
    else:
        compare(backend, params, x, mask=ragged_mask(rng, 3, 4), rng=rng)


@pytest.mark.parametrize("mode", ALL_MODES)
@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_packed_panels_hold_the_compact_weights(cpu, mode, kind):
    rng = np.random.default_rng(9)
    q = quantize(make_params(kind, rng, 6, 20, np.float32), mode)
    packed = cpu.pack(q)
    want = {"bfloat16": np.uint16, "int8": np.int8, "int8_dynamic": np.int32,
            "bfloat16_dynamic": np.uint32}[mode]
    assert packed.packed and packed.arrays[0].dtype == want
    assert mode in repr(packed)


def _use_split(cpu, monkeypatch, split):
    """Two threads, splitting the rows or the panels of even tiny calls."""
    _force_parallel(cpu, monkeypatch)
    monkeypatch.setattr(cpu.threads, "_max_threads", 2)
    monkeypatch.setattr(cpu.threads, "_BATCH_SPLIT_MIN", 1 if split == "rows" else 1 << 30)
    monkeypatch.setattr(cpu.threads, "_ROW_SPLIT_MAX_BYTES", 1 << 40)
    monkeypatch.setattr(cpu.threads, "_TUNE_MIN_BYTES", 1 << 40)


@pytest.mark.parametrize("mode", ALL_MODES)
@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("split", ["rows", "panels"])
def test_thread_splits_against_reference(cpu, monkeypatch, mode, kind, split):
    _use_split(cpu, monkeypatch, split)
    rng = np.random.default_rng(10)
    params = quantize(make_params(kind, rng, 9, 45, np.float32), mode)
    for B in (1, 3, 9):
        monkeypatch.setattr(cpu.threads, "_contended_until", 0.0)
        x = rng.standard_normal((B, 6, 9)).astype(np.float32)
        if mode in DYNAMIC:
            _compare_dynamic(cpu, params, x, mask=ragged_mask(rng, B, 6), reverse=B == 3,
                             rng=rng)
        else:
            compare(cpu, params, x, mask=ragged_mask(rng, B, 6), reverse=B == 3, rng=rng)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("split", ["one", "rows", "panels"])
def test_bfloat16_odd_units_with_an_inf_input(cpu, monkeypatch, kind, split):
    """Weights-only bfloat16 reads the recurrent rows in pairs: with an odd H
    the padded lane H was read at the next step, and an inf input had made it
    NaN (inf times its zero columns), so the whole row turned NaN."""
    if split != "one":
        _use_split(cpu, monkeypatch, split)
    rng = np.random.default_rng(11)
    for H in (5, 17):
        params = quantize(make_params(kind, rng, 3, H, np.float32), "bfloat16")
        for B in (1, 3, 8):
            monkeypatch.setattr(cpu.threads, "_contended_until", 0.0)
            x = rng.standard_normal((B, 4, 3)).astype(np.float32)
            x[0, 0, 1] = np.inf
            x[B - 1, 1, 0] = -np.inf
            compare(cpu, params, x, rng=rng)


# ------------------------------------------------------------------ dynamic modes


def test_activation_quantization_scheme():
    rng = np.random.default_rng(15)
    a = (rng.standard_normal((6, 33)) * rng.choice([1e-3, 1.0, 50.0], (6, 1))).astype(np.float32)
    a[1] = 0.0
    a[2, 4] = np.nan
    a[3, 0] = -np.inf
    q, s = quantize_rows(a)
    assert q.dtype == np.int32 and s.dtype == np.float32
    assert s[1] == 0 and not q[1].any()
    assert np.isnan(s[2]) and np.isnan(s[3])
    for r in (0, 4, 5):
        m = np.abs(a[r]).max()
        assert s[r] == np.float32(m) / np.float32(127)
        assert np.abs(q[r]).max() == 127
        # nearest step (float32 arithmetic: within half a step and a hair)
        assert (np.abs(q[r] - a[r].astype(np.float64) * 127 / m) <= 0.5 + 1e-4).all()


def test_bfloat16_activation_rounding():
    """bfloat16_dynamic's activations: the compiled rounding of inputs and
    states gives the bits of ``bfloat16_values`` (NumPy), which are
    PyTorch's float32 -> bfloat16 conversion (ties to even, NaN kept)."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(21)
    x = (rng.standard_normal((4, 5, 21)) * rng.choice([1e-3, 1.0, 300.0], (4, 5, 1)))
    x = x.astype(np.float32)
    x[0, 0, :3] = [1 + 2 ** -8, 1 + 3 * 2 ** -8, -(1 + 2 ** -8)]  # ties
    x[1, 2, 4] = np.nan
    x[2, 3, 0] = -np.inf
    want = torch.from_numpy(x).to(torch.bfloat16).to(torch.float32).numpy()
    np.testing.assert_array_equal(bfloat16_values(x), want)
    assert list(bfloat16_values(x)[0, 0, :3]) == [1.0, 1 + 2 ** -6, -1.0]
    xq, _ = packed_kernels.bfloat16_inputs(x)
    assert xq.shape == (4, 5, 22) and xq.dtype == np.uint16 and (xq[..., 21] == 0).all()
    got = (xq[..., :21].astype(np.uint32) << 16).view(np.float32)
    np.testing.assert_array_equal(got, want)
    hq = np.ones(20 * 32, np.uint16)
    hf = np.zeros(20 * 32 + 7, np.float32)
    for r in range(20):
        hf[7 + r * 32:7 + r * 32 + 21] = x.reshape(20, 21)[r]
    packed_kernels.quantize_state(hf, 7, 20, 21, 32, hq, np.zeros(1, np.float32))
    got = (hq.reshape(20, 32)[:, :21].astype(np.uint32) << 16).view(np.float32)
    np.testing.assert_array_equal(got, want.reshape(20, 21))


@njit
def _bdot_lanes(acc, a, b, out):
    for i in range(acc.size // 16):
        vstore(out, 16 * i, bdot(vload(acc, 16 * i), dload(a, 16 * i), dload(b, 16 * i)))


def test_bfloat16_dot_product_rounding():
    """simd.bdot (vdpbf16ps with AVX512_BF16, two multiply-adds elsewhere):
    per lane ``acc + odd product`` rounded to float32, then ``+ even
    product`` rounded; the products of two bfloat16 are exact in float32.
    The same bits either way, so the dynamic mode's results do not depend on
    the CPU's instructions."""
    rng = np.random.default_rng(22)
    n = 16 * 500
    a = bfloat16_values(rng.standard_normal(2 * n))
    b = bfloat16_values(rng.standard_normal(2 * n) * rng.choice([1e-2, 1.0, 30.0], 2 * n))
    acc = (rng.standard_normal(n) * rng.choice([1e-3, 1.0, 100.0], n)).astype(np.float32)
    out = np.empty(n, np.float32)
    pair_bits = lambda v: (v.view(np.uint32) >> 16).astype(np.uint16).view(np.int32)  # noqa: E731
    _bdot_lanes(acc, pair_bits(a), pair_bits(b), out)
    odd = (acc + a[1::2] * b[1::2]).astype(np.float32)
    want = (odd + a[0::2] * b[0::2]).astype(np.float32)
    np.testing.assert_array_equal(out, want)


def test_kernel_quantization_is_the_reference_quantization():
    """The packed kernels' quantization of inputs and states (compiled
    loops) gives the very bits of ``quantize_rows`` (NumPy) on the same
    float32 values: the two sides of the int8_dynamic semantics agree."""
    rng = np.random.default_rng(16)
    x = (rng.standard_normal((5, 7, 22)) * 3).astype(np.float32)
    x[0, 1] = 0.0
    x[2, 3, 5] = np.nan
    x[4, 6] = np.float32(0.5) + np.arange(22, dtype=np.float32) / 2  # ties in a * 127 / m
    x[1, 4, 7] = -np.inf
    x[3, 2] = rng.standard_normal(22).astype(np.float32) * np.float32(1e-40)  # subnormal
    x[0, 5, 21] = np.float32(-3.4028235e38)  # the largest magnitude, negative, last
    xq, xs = packed_kernels.quantize_inputs(x)
    q, s = quantize_rows(x.reshape(35, 22))
    assert xq.shape == (5, 7, 24) and (xq[..., 22:] == 128).all()
    np.testing.assert_array_equal(xq[..., :22].reshape(35, 22).astype(np.int32) - 128, q)
    np.testing.assert_array_equal(xs, s)  # NaN where NaN
    hq = np.zeros(35 * 32, np.uint8)
    hs = np.zeros(35, np.float32)
    hf = np.zeros(35 * 32 + 7, np.float32)
    for r in range(35):
        hf[7 + r * 32:7 + r * 32 + 22] = x.reshape(35, 22)[r]
    packed_kernels.quantize_state(hf, 7, 35, 22, 32, hq, hs)
    np.testing.assert_array_equal(hq.reshape(35, 32)[:, :22].astype(np.int32) - 128, q)
    np.testing.assert_array_equal(hs, s)


def _compare_dynamic(backend, params, x, mask=None, reverse=False, zero_output=False, rng=None):
    """A dynamic mode against the reference. At the first step both round
    the same float32 values (the same integers, or bfloat16); later the
    state differs in its last bits between a float32 kernel and the float64
    reference, and a value on a rounding edge may land one step apart (about
    1e-4 here): the first step to float32 rounding, the sequence to 2e-3 and
    on average far closer."""
    B, T, _ = x.shape
    rng = rng or np.random.default_rng(0)
    states = [(rng.standard_normal((B, n)) * 0.5).astype(np.float32) for n in state_sizes(params)]
    want = np.full((B, T, params.units), np.nan, np.float32)
    want_s = [np.empty_like(s) for s in states]
    run(reference, reference.pack(params), x, states, mask, reverse, zero_output, want, want_s)
    got = np.full_like(want, np.nan)
    got_s = [np.full_like(s, np.nan) for s in states]
    run(backend, backend.pack(params), x, [s.copy() for s in states], mask, reverse, zero_output,
        got, got_s)
    first = T - 1 if reverse else 0
    unmasked = np.ones(B, bool) if mask is None else mask[:, first]
    np.testing.assert_allclose(got[unmasked, first], want[unmasked, first], rtol=1e-4, atol=3e-5)
    assert np.isfinite(got).all()
    err = np.abs(got - want)
    assert err.max() < 2e-3 and err.mean() < 2e-5, (err.max(), err.mean())
    for g, w_ in zip(got_s, want_s):
        assert np.abs(g - w_).max() < 2e-3


@pytest.mark.parametrize("mode", DYNAMIC)
@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("H", [1, 17, 37, 70])
def test_dynamic_batch_against_reference(cpu, mode, kind, H):
    rng = np.random.default_rng(100 + H)
    params = quantize(make_params(kind, rng, 11, H, np.float32), mode)
    for B, T in ((1, 1), (1, 9), (2, 5), (5, 4), (13, 3)):
        x = rng.standard_normal((B, T, 11)).astype(np.float32)
        _compare_dynamic(cpu, params, x, rng=rng)
        _compare_dynamic(cpu, params, x, mask=ragged_mask(rng, B, T), reverse=True,
                         zero_output=B % 2 == 1, rng=rng)


@pytest.mark.parametrize("mode", DYNAMIC)
def test_dynamic_nan_and_zero_rows(cpu, mode):
    rng = np.random.default_rng(17)
    params = quantize(make_params("lstm", rng, 6, 19, np.float32), mode)
    x = rng.standard_normal((3, 4, 6)).astype(np.float32)
    x[1, 2, 3] = np.nan  # row 1 turns NaN from step 2 on (as in float32)
    x[2] = 0.0  # a zero input row: the input part is zero, the bias and state remain
    got = np.empty((3, 4, 19), np.float32)
    states = [np.zeros((3, 19), np.float32)] * 2
    run(cpu, cpu.pack(params), x, states, None, False, False, got,
        [np.empty((3, 19), np.float32) for _ in states])
    want = np.empty_like(got)
    run(reference, reference.pack(params), x, states, None, False, False, want,
        [np.empty((3, 19), np.float32) for _ in states])
    assert np.isnan(got[1, 2:]).all() and np.isfinite(got[1, :2]).all()
    assert np.isfinite(got[[0, 2]]).all()
    np.testing.assert_allclose(got[2], want[2], rtol=1e-4, atol=3e-5)


@pytest.mark.parametrize("mode", DYNAMIC)
def test_dynamic_hoisted_input_sums(cpu, monkeypatch, mode):
    """One row with its input sums hoisted (6 steps per weight load) and
    without: the same bits (int8: exact integers; bfloat16: the same sums in
    the same order either way)."""
    rng = np.random.default_rng(18)
    params = quantize(make_params("gru", rng, 13, 40, np.float32), mode)
    x = rng.standard_normal((1, 31, 13)).astype(np.float32)
    outs = []
    for hoist in (True, False):
        monkeypatch.setattr(cpu.threads, "_HOIST_MIN_BYTES", -1 if hoist else 1 << 40)
        monkeypatch.setattr(cpu.threads, "_max_threads", 1)
        out = np.empty((1, 31, 40), np.float32)
        run(cpu, cpu.pack(params), x, [np.zeros((1, 40), np.float32)], None, False, False, out,
            [np.empty((1, 40), np.float32)])
        outs.append(out)
    np.testing.assert_array_equal(outs[0], outs[1])
    _compare_dynamic(cpu, params, x, rng=rng)


# ------------------------------------------------------------------ stream kernels


def _stream_run(params_list, x, states):
    """The stream kernels on ``x (B, T, D)`` from ``states`` (flat list, Keras
    order per layer): ``(out (B, T, P), final states)``."""
    B, T, _ = x.shape
    w, cfg, n = stream_kernels.pack(params_list, B, False)
    s = np.zeros(n, np.float32)
    views = stream_kernels.state_views(s, cfg, B)
    for v, s0 in zip(views, states):
        v[...] = s0
    work = np.zeros(stream_kernels.work_size(cfg, B, T), np.float32)
    P = params_list[-1].output_size
    out = np.zeros((B, T, P), np.float32)
    if T == 1:
        frame_out = np.zeros((B, P), np.float32)
        assert stream_kernels.frame(np.ascontiguousarray(x[:, 0]), w, s, work, frame_out, cfg) == 0
        out[:, 0] = frame_out
    else:
        assert stream_kernels.chunk_seq(x, w, s, work, out, cfg) == 0
    return out, [v.copy() for v in views]


def _reference_stack(params_list, x, states):
    y, finals, i = x, [], 0
    for p in params_list:
        n = p.n_states
        B, T, _ = y.shape
        outs = [np.empty((B, s), np.float32) for s in state_sizes(p)]
        out = np.empty((B, T, p.output_size), np.float32)
        run(reference, reference.pack(p), y, states[i:i + n], None, False, False, out, outs)
        y, finals, i = out, finals + outs, i + n
    return y, finals


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind,opts", [("lstm", {}), ("gru", {}), ("gru", {"reset_after": False}),
                                       ("simple_rnn", {})])
def test_stream_kernels_against_reference(mode, kind, opts):
    rng = np.random.default_rng(11)
    # two layers: the quantized cell under test, then a quantized LSTM; odd sizes
    bottom = quantize(make_params(kind, rng, 13, 37, np.float32, **dict(opts)), mode)
    top = quantize(make_params("lstm", rng, 37, 70, np.float32), mode)
    for B, T in ((1, 1), (1, 6), (3, 4)):
        states = [(rng.standard_normal((B, s)) * 0.3).astype(np.float32)
                  for p in (bottom, top) for s in state_sizes(p)]
        x = rng.standard_normal((B, T, 13)).astype(np.float32)
        got, got_s = _stream_run([bottom, top], x, states)
        want, want_s = _reference_stack([bottom, top], x, states)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=3e-5)
        for g, w_ in zip(got_s, want_s):
            np.testing.assert_allclose(g, w_, rtol=1e-4, atol=3e-5)


@pytest.mark.parametrize("mode", DYNAMIC)
@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_stream_kernels_dynamic(mode, kind):
    """The stream kernels round each row of the chunk's input and each
    step's state; the first step exactly as the reference, the rest to the
    tolerance of :func:`_compare_dynamic`."""
    rng = np.random.default_rng(19)
    bottom = quantize(make_params(kind, rng, 13, 37, np.float32), mode)
    top = quantize(make_params("lstm", rng, 37, 70, np.float32), mode)
    for B, T in ((1, 1), (1, 9), (3, 4)):
        states = [(rng.standard_normal((B, s)) * 0.3).astype(np.float32)
                  for p in (bottom, top) for s in state_sizes(p)]
        x = rng.standard_normal((B, T, 13)).astype(np.float32)
        got, got_s = _stream_run([bottom, top], x, states)
        want, want_s = _reference_stack([bottom, top], x, states)
        np.testing.assert_allclose(got[:, 0], want[:, 0], rtol=1e-4, atol=3e-5)
        err = np.abs(got - want)
        assert err.max() < 2e-3 and err.mean() < 2e-5
        for g, w_ in zip(got_s, want_s):
            assert np.abs(g - w_).max() < 2e-3


def test_stream_mixes_formats():
    rng = np.random.default_rng(12)
    layers = [quantize(make_params("gru", rng, 8, 33, np.float32), "int8"),
              make_params("lstm", rng, 33, 21, np.float32),
              quantize(make_params("lstm", rng, 21, 19, np.float32), "bfloat16"),
              quantize(make_params("gru", rng, 19, 17, np.float32), "int8_dynamic"),
              quantize(make_params("lstm", rng, 17, 23, np.float32), "bfloat16_dynamic")]
    states = [np.zeros((2, s), np.float32) for p in layers for s in state_sizes(p)]
    x = rng.standard_normal((2, 5, 8)).astype(np.float32)
    got, _ = _stream_run(layers, x, states)
    want, _ = _reference_stack(layers, x, states)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=3e-5)


# ------------------------------------------------------------------ accuracy


# int8_dynamic also rounds every activation: about twice int8's error (at
# B=64, T=50, H=1024: 2.0e-2 for a GRU, where ONNX Runtime's int8 LSTM gives
# 1.9e-2 and PyTorch's 3.6e-2; python -m fastrnn bench --precision ...)
BOUND = {"bfloat16": 5e-3, "int8": 1.5e-2, "int8_dynamic": 2.5e-2, "bfloat16_dynamic": 1e-2}


@pytest.mark.parametrize("mode", ALL_MODES)
@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("H", [64, 256, 1024])
def test_accuracy_against_float64(cpu, mode, kind, H):
    """PyTorch's initialisation (uniform +-1/sqrt(H)), normal inputs: the
    quantized cpu kernels stay within the promised bound of float64."""
    rng = np.random.default_rng(H)
    B, T, D = 3, 30, 64
    g = 4 if kind == "lstm" else 3
    s = 1 / np.sqrt(H)
    k = rng.uniform(-s, s, (D, g * H))
    r = rng.uniform(-s, s, (H, g * H))
    if kind == "lstm":
        exact = LSTMParams(k, r, rng.uniform(-s, s, g * H))
    else:
        exact = GRUParams(k, r, rng.uniform(-s, s, (2, g * H)))
    x = rng.standard_normal((B, T, D))
    want = np.empty((B, T, H))
    run(reference, reference.pack(exact), x, [np.zeros((B, H))] * exact.n_states, None, False,
        False, want, [np.empty((B, H)) for _ in range(exact.n_states)])
    f32 = type(exact)(*(np.asarray(a, np.float32) for a in (k, r, exact.bias)))
    q = quantize(f32, mode)
    got = np.empty((B, T, H), np.float32)
    run(cpu, cpu.pack(q), x.astype(np.float32), [np.zeros((B, H), np.float32)] * q.n_states,
        None, False, False, got, [np.empty((B, H), np.float32) for _ in range(q.n_states)])
    err = np.abs(got - want).max()
    assert err <= BOUND[mode], f"{mode} {kind} H={H}: max abs error {err:.2e}"
    # and the quantization did something: float32 weights are far closer
    assert err > 1e-5


def test_quantized_weights_record_fields():
    rng = np.random.default_rng(13)
    q = quantize(make_params("lstm", rng, 4, 3, np.float32), "int8").quantized
    assert isinstance(q, QuantizedWeights) and q.mode == "int8"
    assert q.kernel.shape == (4, 12) and q.recurrent_kernel.shape == (3, 12)
    b = quantize(make_params("lstm", rng, 4, 3, np.float32), "bfloat16").quantized
    assert b.kernel_scale is None and b.recurrent_scale is None


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("big", [8.6e37, -3.0e38])
def test_dynamic_stream_rows_of_huge_values(kind, big):
    # A row whose largest magnitude passes 2**126 quantizes with 127 / m,
    # whose reciprocal form 1 / m is subnormal: the stream kernels (fast-math)
    # once flushed it and dropped the whole input term.
    rng = np.random.default_rng(23)
    H, D = 5, 3
    layers = {}
    for backend in ("cpu", "reference"):
        if kind == "lstm":  # linear: h is the input term itself, x @ W_c
            layer = fastrnn.LSTM(H, activation="linear", backend=backend)
        else:
            layer = fastrnn.GRU(H, backend=backend)
        layer.build((1, None, D))
        layers[backend] = layer
    w = layers["cpu"].get_weights()
    w[0][:] = rng.standard_normal(w[0].shape) * 1e-2
    w[1][:] = rng.standard_normal(w[1].shape) * 0.1
    if kind == "lstm":
        w[0][:, :H] = w[0][:, H:2 * H] = w[0][:, 3 * H:] = 0
        w[2][:] = 0
        w[2][:H], w[2][H:2 * H], w[2][3 * H:] = 100, -100, 100  # i = 1, f = 0, o = 1
    for layer in layers.values():
        layer.set_weights(w)
        layer.quantize("int8_dynamic")
    x = rng.standard_normal((1, 2, D)).astype(np.float32)
    x[0, 1, 0] = big
    want = layers["reference"](x)
    stream = layers["cpu"].stream(batch_size=1, threads=1)
    got = np.concatenate([stream(x[:, 0]), stream(x[:, 1])])
    assert np.isfinite(want).all() and np.abs(want).max() > 1e-3
    np.testing.assert_allclose(got[1:], want, rtol=1e-5, atol=1e-6)
