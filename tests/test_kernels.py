"""Every backend against ``reference``, through the kernel contract.

One parametrised body serves every backend: the list comes from the
environment variable ``FASTRNN_TEST_BACKENDS`` (comma-separated, default
``cpu``), and a backend that is not available on this machine is skipped
with its reason. Sizes are small and can be made smaller for slow backends
(the CUDA simulator)::

    NUMBA_ENABLE_CUDASIM=1 FASTRNN_TEST_BACKENDS=cuda FASTRNN_TEST_SIZE=tiny \\
        FASTRNN_TEST_EXAMPLES=5 python -m pytest -q tests/test_kernels.py

``FASTRNN_TEST_SIZE=tiny`` keeps unit counts and sequence lengths small;
``FASTRNN_TEST_EXAMPLES`` is the number of hypothesis examples per test.
"""

from __future__ import annotations

import json
import os
import pathlib
import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastrnn import activations, dispatch
from fastrnn.kernels import (GRUParams, LSTMParams, SimpleRNNParams, quantize, reference, run,
                             state_sizes)

BACKENDS = [b.strip() for b in os.environ.get("FASTRNN_TEST_BACKENDS", "cpu").split(",") if b.strip()]
TINY = os.environ.get("FASTRNN_TEST_SIZE", "") == "tiny"
EXAMPLES = int(os.environ.get("FASTRNN_TEST_EXAMPLES", "25"))

UNITS = (1, 7, 17) if TINY else (1, 7, 17, 37, 70)
T_LONG = 3 if TINY else 6
DTYPES = (np.float32, np.float64)
DATA = pathlib.Path(__file__).parent / "data"

HSETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def tol(dtype):
    if np.dtype(dtype) == np.float32:
        return dict(rtol=1e-4, atol=3e-5)
    return dict(rtol=1e-9, atol=1e-10)


@pytest.fixture(params=BACKENDS)
def backend(request):
    name = request.param
    ok, why = dispatch.available(name)
    if not ok:
        pytest.skip(f"backend {name!r} not available: {why}")
    return dispatch.backend_module(name)


# ------------------------------------------------------------------ helpers


def rand(rng, shape, dtype, scale=0.5):
    return (rng.uniform(-scale, scale, size=shape)).astype(dtype)


def make_params(kind, rng, D, H, dtype, **opts):
    """A params record with fresh random weights; ``opts`` pick the variant."""
    r = lambda *s: rand(rng, s, dtype)  # noqa: E731
    if kind == "lstm":
        P = opts.pop("proj", None)
        out = P or H
        return LSTMParams(
            r(D, 4 * H), r(out, 4 * H), r(4 * H),
            activation=opts.pop("act", 1), recurrent_activation=opts.pop("ract", 2),
            forget_bias=opts.pop("forget_bias", 0.0),
            peepholes=r(3, H) if opts.pop("peep", False) else None,
            cell_clip=opts.pop("cell_clip", None),
            projection=r(H, P) if P else None,
            proj_clip=opts.pop("proj_clip", None),
        )
    if kind == "gru":
        reset_after = opts.pop("reset_after", True)
        bias = r(2, 3 * H)
        if not reset_after and opts.pop("zero_rec_bias", False):
            bias[1] = 0
        return GRUParams(r(D, 3 * H), r(H, 3 * H), bias, activation=opts.pop("act", 1),
                         recurrent_activation=opts.pop("ract", 2), reset_after=reset_after)
    return SimpleRNNParams(r(D, H), r(H, H), r(H), activation=opts.pop("act", 1))


def compare(backend, params, x, mask=None, reverse=False, zero_output=False,
            use_out=True, alias=False, states=None, rng=None):
    """Run ``backend`` and ``reference`` on the same call; assert they agree."""
    dtype = x.dtype
    B, T, _ = x.shape
    rng = rng or np.random.default_rng(0)
    if states is None:
        states = [rand(rng, (B, n), dtype) for n in state_sizes(params)]
    ref_states = [np.full_like(s, np.nan) for s in states]
    ref_out = np.full((B, T, params.output_size), np.nan, dtype)
    run(reference, reference.pack(params), x, states, mask, reverse, zero_output, ref_out, ref_states)

    packed = backend.pack(params)
    assert packed.params is params
    inputs = [s.copy() for s in states]
    if alias:
        outs = inputs  # streams update their state in place
    else:
        outs = [np.full_like(s, np.nan) for s in states]
    out = np.full((B, T, params.output_size), np.nan, dtype) if use_out else None
    x_before = x.copy()
    run(backend, packed, x, inputs, mask, reverse, zero_output, out, outs)

    np.testing.assert_array_equal(x, x_before)
    if not alias:
        for s, s0 in zip(inputs, states):
            np.testing.assert_array_equal(s, s0)  # initial states never modified
    if use_out:
        np.testing.assert_allclose(out, ref_out, err_msg="out", **tol(dtype))
    for i, (got, want) in enumerate(zip(outs, ref_states)):
        np.testing.assert_allclose(got, want, err_msg=f"state {i}", **tol(dtype))
    return out, outs


def ragged_mask(rng, B, T, all_false_row=True):
    lengths = rng.integers(0, T + 1, size=B)
    mask = np.arange(T)[None, :] < lengths[:, None]
    mask |= rng.random((B, T)) < 0.2  # holes, not only suffixes
    mask &= rng.random((B, T)) < 0.85
    if all_false_row:
        mask[0] = False
    if B > 1:
        mask[-1] = True
    return mask


# ------------------------------------------------------------------ variants


LSTM_VARIANTS = {
    "plain": {},
    "peepholes": dict(peep=True),
    "cell_clip": dict(cell_clip=0.3),
    "projection": dict(proj=5),
    "projection_clip": dict(proj=3, proj_clip=0.2),
    "forget_bias": dict(forget_bias=1.0),
    "tf1_everything": dict(peep=True, cell_clip=0.5, proj=4, proj_clip=0.3, forget_bias=1.0),
    "peep_clip_nobias": dict(peep=True, cell_clip=0.25, forget_bias=0.5),
    "relu_hard_sigmoid": dict(act=4, ract=3),
    "linear_sigmoid": dict(act=0, ract=2),
    "softsign_tanh": dict(act=5, ract=1),
}


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("H", UNITS)
@pytest.mark.parametrize("variant", sorted(LSTM_VARIANTS))
def test_lstm_variants(backend, variant, H, dtype):
    rng = np.random.default_rng(H)
    D, B = 5, 6
    params = make_params("lstm", rng, D, H, dtype, **LSTM_VARIANTS[variant])
    x = rand(rng, (B, T_LONG, D), dtype, 1.0)
    compare(backend, params, x, rng=rng)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("H", UNITS)
@pytest.mark.parametrize("reset_after", [True, False], ids=["reset_after", "reset_before"])
def test_gru_variants(backend, reset_after, H, dtype):
    rng = np.random.default_rng(H + 100)
    D, B = 4, 5
    params = make_params("gru", rng, D, H, dtype, reset_after=reset_after)
    x = rand(rng, (B, T_LONG, D), dtype, 1.0)
    compare(backend, params, x, rng=rng)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("H", UNITS)
def test_simple_rnn(backend, H, dtype):
    rng = np.random.default_rng(H + 200)
    params = make_params("simple_rnn", rng, 3, H, dtype)
    compare(backend, params, rand(rng, (4, T_LONG, 3), dtype, 1.0), rng=rng)


# every activation code, as activation and as recurrent activation
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("code", sorted(activations.NAMES))
@pytest.mark.parametrize("kind", ["lstm", "gru", "simple_rnn"])
def test_activation_codes(backend, kind, code, dtype):
    rng = np.random.default_rng(code)
    H = 17
    # bounded partners, so that exponential and friends cannot overflow
    opts = dict(act=code) if kind == "simple_rnn" else dict(act=code, ract=(2, 3, 1, 5)[code % 4])
    params = make_params(kind, rng, 3, H, dtype, **opts)
    compare(backend, params, rand(rng, (5, 3, 3), dtype, 1.0), rng=rng)
    if kind != "simple_rnn":
        params = make_params(kind, rng, 3, H, dtype, act=1, ract=code)
        compare(backend, params, rand(rng, (5, 3, 3), dtype, 1.0), rng=rng)


# ------------------------------------------------------------------ sequence semantics

KINDS = {
    "lstm": {},
    "lstm_tf1": dict(peep=True, cell_clip=0.5, proj=4, forget_bias=1.0),
    "gru": {},
    "gru_reset_before": dict(reset_after=False),
    "simple_rnn": {},
}


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("zero_output", [False, True], ids=["carry", "zeros"])
@pytest.mark.parametrize("use_mask", [False, True], ids=["nomask", "mask"])
def test_sequence_semantics(backend, kind, reverse, zero_output, use_mask, dtype):
    rng = np.random.default_rng(7)
    B, T, D, H = 9, T_LONG + 1, 3, 17
    params = make_params(kind.split("_tf1")[0].replace("_reset_before", ""), rng, D, H, dtype,
                         **KINDS[kind])
    x = rand(rng, (B, T, D), dtype, 1.0)
    mask = ragged_mask(rng, B, T) if use_mask else None
    compare(backend, params, x, mask, reverse, zero_output, rng=rng)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_out_none_and_aliasing(backend, kind, dtype):
    rng = np.random.default_rng(11)
    B, T, D, H = 6, T_LONG, 4, 7
    params = make_params(kind.split("_tf1")[0].replace("_reset_before", ""), rng, D, H, dtype,
                         **KINDS[kind])
    x = rand(rng, (B, T, D), dtype, 1.0)
    mask = ragged_mask(rng, B, T)
    compare(backend, params, x, mask, use_out=False, rng=rng)
    compare(backend, params, x, mask, alias=True, rng=rng)
    compare(backend, params, x, None, True, True, use_out=False, alias=True, rng=rng)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("kind", ["lstm", "gru", "simple_rnn"])
@pytest.mark.parametrize("B,T", [(1, 1), (1, 5), (5, 1)])
def test_tiny_shapes(backend, kind, B, T, dtype):
    rng = np.random.default_rng(B * 10 + T)
    params = make_params(kind, rng, 2, 7, dtype)
    x = rand(rng, (B, T, 2), dtype, 1.0)
    compare(backend, params, x, rng=rng)
    compare(backend, params, x, np.zeros((B, T), bool), True, False, rng=rng)


def test_non_contiguous_buffers(backend):
    """Output buffers that are views (a Bidirectional half) are written in place."""
    rng = np.random.default_rng(3)
    B, T, D, H = 5, 4, 3, 7
    params = make_params("lstm", rng, D, H, np.float32)
    x = rand(rng, (B, T, D), np.float32)
    states = [rand(rng, (B, H), np.float32) for _ in range(2)]
    ref = np.empty((B, T, H), np.float32)
    ref_s = [np.empty((B, H), np.float32) for _ in range(2)]
    run(reference, reference.pack(params), x, states, None, False, False, ref, ref_s)
    big = np.full((B, T, 2 * H), np.nan, np.float32)
    hs = np.full((B, 2 * H), np.nan, np.float32)
    cs = np.full((2 * H, B), np.nan, np.float32)
    run(backend, backend.pack(params), x, states, None, False, False, big[:, :, H:],
        [hs[:, :H], cs.T[:, ::-1][:, :H]])
    np.testing.assert_allclose(big[:, :, H:], ref, **tol(np.float32))
    assert np.isnan(big[:, :, :H]).all()
    np.testing.assert_allclose(hs[:, :H], ref_s[0], **tol(np.float32))
    np.testing.assert_allclose(cs.T[:, ::-1][:, :H], ref_s[1], **tol(np.float32))


# ------------------------------------------------------------------ hypothesis


@st.composite
def cases(draw):
    kind = draw(st.sampled_from(sorted(KINDS)))
    dtype = draw(st.sampled_from(DTYPES))
    B = draw(st.integers(1, 9))
    T = draw(st.integers(1, 4 if TINY else 7))
    D = draw(st.integers(1, 9))
    H = draw(st.integers(1, 20 if TINY else 40))
    seed = draw(st.integers(0, 2**32 - 1))
    width = 32 if dtype == np.float32 else 64
    # the input comes from hypothesis (exactly representable floats of the
    # dtype's width); weights and states from a seeded generator
    x = np.array(draw(st.lists(st.floats(-2.0, 2.0, width=width), min_size=B * T * D,
                               max_size=B * T * D)), dtype=dtype).reshape(B, T, D)
    use_mask = draw(st.booleans())
    mask = None
    if use_mask:
        mask = np.array(draw(st.lists(st.booleans(), min_size=B * T, max_size=B * T)),
                        dtype=bool).reshape(B, T)
    return dict(kind=kind, dtype=dtype, B=B, T=T, D=D, H=H, seed=seed, x=x, mask=mask,
                reverse=draw(st.booleans()), zero_output=draw(st.booleans()),
                use_out=draw(st.booleans()), alias=draw(st.booleans()))


@HSETTINGS
@given(case=cases())
def test_hypothesis_against_reference(backend, case):
    rng = np.random.default_rng(case["seed"])
    kind = case["kind"]
    params = make_params(kind.split("_tf1")[0].replace("_reset_before", ""), rng, case["D"],
                         case["H"], case["dtype"], **KINDS[kind])
    compare(backend, params, case["x"], case["mask"], case["reverse"], case["zero_output"],
            case["use_out"], case["alias"], rng=rng)


# ------------------------------------------------------------------ threads


def _force_parallel(backend, monkeypatch):
    # make the cpu backend split even tiny calls between its threads
    if backend.NAME == "cpu":
        monkeypatch.setattr(backend.threads, "_MIN_PARALLEL_WORK", 0)
        monkeypatch.setattr(backend.threads, "_MIN_SPLIT_STEP_WORK", 0)
        monkeypatch.setattr(backend.threads, "_contended_until", 0.0)


def _use_threads(backend, monkeypatch, threads):
    # "split": every call split between the threads; "one": one thread
    if threads == "split":
        _force_parallel(backend, monkeypatch)
    else:
        monkeypatch.setattr(backend.threads, "_max_threads", 1)


@pytest.mark.parametrize("kind", ["lstm", "gru", "simple_rnn"])
def test_parallel_split_matches(backend, kind, monkeypatch):
    _force_parallel(backend, monkeypatch)
    rng = np.random.default_rng(5)
    for dtype in DTYPES:
        params = make_params(kind, rng, 6, 19, dtype)
        for B in (1, 2, 9, 13, 21):
            x = rand(rng, (B, T_LONG, 6), dtype)
            compare(backend, params, x, ragged_mask(rng, B, T_LONG), True, False, rng=rng)


def test_cpu_panel_split_helper_late_or_absent(backend):
    """The panel split's caller finishes alone when the helper never comes,
    and a helper arriving after the end changes nothing (batch 9, and batch
    1 with the input sums hoisted)."""
    if backend.NAME != "cpu":
        pytest.skip("cpu backend internals")
    from fastrnn.kernels.cpu import split as pk

    rng = np.random.default_rng(17)
    T, D, H = 2 * T_LONG + 1, 4, 40
    for B, hoist in ((9, False), (1, True)):
        for gru in (False, True):
            kind = "gru" if gru else "lstm"
            params = make_params(kind, rng, D, H, np.float32)
            x = rand(rng, (B, T, D), np.float32)
            states = [rand(rng, (B, H), np.float32) for _ in range(params.n_states)]
            want = np.empty((B, T, H), np.float32)
            want_s = [np.empty((B, H), np.float32) for _ in states]
            run(reference, reference.pack(params), x, states, None, False, False, want, want_s)
            packed = backend.pack(params)
            out = np.empty_like(want)
            h_out = np.empty((B, H), np.float32)
            c_out = np.empty((B, H), np.float32) if not gru else np.zeros((1, 1), np.float32)
            c0 = states[1] if not gru else np.zeros((1, 1), np.float32)
            peep = packed.arrays[2] if not gru else np.zeros(16, np.float32)
            hf, cb, P = pk.split_prepare(gru, H, states[0], c0, hoist)
            sync = np.zeros(pk.SYNC_SIZE, np.int64)
            sync[pk.SPINS] = pk.DEFAULT_SPINS
            job = (sync, gru, H, (packed.arrays[0], packed.arrays[1], peep, packed.arrays[-1]),
                   (False, -1.0, 1, 2),
                   (x, states[0], c0, np.ones((1, 1), bool), False, out, True, h_out, c_out,
                    np.zeros(1, np.float32)),
                   (False, False, hoist), hf, cb, P)
            pk.split_work(0, *job)
            pk.split_work(1, *job)  # too late: must do nothing
            pk.split_finish(gru, H, T, hf, cb, h_out, c_out)
            assert sync[pk.COUNT] == T * ((H + 15) // 16) and sync[pk.COUNT + 8] == 0
            np.testing.assert_allclose(out, want, **tol(np.float32))
            np.testing.assert_allclose(h_out, want_s[0], **tol(np.float32))


@pytest.mark.parametrize("spins", [0, 1, 50])
def test_cpu_panel_split_takeover(backend, monkeypatch, spins):
    """With (almost) no patience, a waiting thread takes the rest of the
    sequence over from the other at once: results stay exact."""
    if backend.NAME != "cpu":
        pytest.skip("cpu backend internals")
    _force_parallel(backend, monkeypatch)
    monkeypatch.setattr(backend.threads, "_SPINS", spins)
    rng = np.random.default_rng(spins)
    for kind in ("lstm", "gru"):
        params = make_params(kind, rng, 5, 70, np.float32)
        for B in (1, 4, 7):
            x = rand(rng, (B, 2 * T_LONG, 5), np.float32)
            for _ in range(3):
                monkeypatch.setattr(backend.threads, "_contended_until", 0.0)
                compare(backend, params, x, ragged_mask(rng, B, 2 * T_LONG), True, False,
                        rng=rng)


@pytest.mark.parametrize("layer", ["omp", "workqueue"])
def test_cpu_panel_split_both_launchers(backend, monkeypatch, layer):
    """The panel split runs on Numba's pool (omp/tbb) or, under workqueue,
    on the caller plus fastrnn's own helper thread: both match the
    reference, with ragged masks, in both directions, at odd unit counts."""
    if backend.NAME != "cpu":
        pytest.skip("cpu backend internals")
    _force_parallel(backend, monkeypatch)
    backend.threads._start_pool()  # start the pool first, then pretend
    monkeypatch.setattr(backend.threads, "_LAYER", layer)
    seen = []
    real = backend.threads._run_split

    def spy(*args):
        res = real(*args)
        seen.append(res)
        return res

    monkeypatch.setattr(backend.threads, "_run_split", spy)
    rng = np.random.default_rng(31)
    for kind in ("lstm", "gru"):
        params = make_params(kind, rng, 3, 37, np.float32)
        for B, reverse in ((1, False), (5, True)):
            monkeypatch.setattr(backend.threads, "_contended_until", 0.0)
            x = rand(rng, (B, 4 * T_LONG, 3), np.float32)
            compare(backend, params, x, ragged_mask(rng, B, 4 * T_LONG), reverse, False,
                    rng=rng)
    assert seen, "the panel split was not used"
    for helper, joined, abandoned in seen:
        assert 0 <= helper and -1 <= joined < 4 * T_LONG


def test_cpu_panel_split_for_large_weights(backend, monkeypatch):
    """Weights too large for the cores' caches send large batches through the
    panel split too (one panel per claim when panels are large): exact, with
    ragged masks and both directions; a busy machine, or one without the
    panel split, keeps the row split (a busy machine: for long calls; short
    ones run on one thread)."""
    if backend.NAME != "cpu":
        pytest.skip("cpu backend internals")
    _force_parallel(backend, monkeypatch)
    monkeypatch.setattr(backend.threads, "_ROW_SPLIT_MAX_BYTES", 0)
    monkeypatch.setattr(backend.threads, "_CLAIM_WORK", 1)
    used = []
    real_split, real_rows = backend.threads._run_split, backend.threads.packed.run_rows_par
    monkeypatch.setattr(backend.threads, "_run_split",
                        lambda *a: used.append("panels") or real_split(*a))
    monkeypatch.setattr(backend.threads.packed, "run_rows_par",
                        lambda *a: used.append("rows") or real_rows(*a))
    rng = np.random.default_rng(41)
    for kind in ("lstm", "gru"):
        params = make_params(kind, rng, 6, 45, np.float32)
        for B, reverse in ((16, False), (21, True)):
            monkeypatch.setattr(backend.threads, "_contended_until", 0.0)
            x = rand(rng, (B, T_LONG, 6), np.float32)
            compare(backend, params, x, ragged_mask(rng, B, T_LONG), reverse, False, rng=rng)
    assert used == ["panels"] * 4
    monkeypatch.setattr(backend.threads, "_contended_until", float("inf"))
    x = rand(rng, (16, T_LONG, 6), np.float32)
    compare(backend, params, x, ragged_mask(rng, 16, T_LONG), False, True, rng=rng)
    assert used == ["panels"] * 4  # a short call on a busy machine: one thread
    monkeypatch.setattr(backend.threads, "_CONTENDED_ROWS_WORK", 0)  # ... a long one: rows
    compare(backend, params, x, ragged_mask(rng, 16, T_LONG), False, True, rng=rng)
    assert used[-1] == "rows"
    # ... and so do platforms where the panel split cannot run (no futex)
    monkeypatch.setattr(backend.threads, "_contended_until", 0.0)
    monkeypatch.setattr(backend.threads, "_HAVE_FUTEX", False)
    compare(backend, params, x, ragged_mask(rng, 16, T_LONG), True, False, rng=rng)
    assert used[-2:] == ["rows", "rows"]


def test_cpu_row_split_stall_falls_back_to_one_thread(backend, monkeypatch):
    """A short row-split call whose caller waited long at the join (a pool
    thread had no core) puts the process on one thread for a while; results
    stay exact either way, and a long call keeps both threads."""
    if backend.NAME != "cpu":
        pytest.skip("cpu backend internals")
    import time

    _force_parallel(backend, monkeypatch)
    rng = np.random.default_rng(43)
    params = make_params("lstm", rng, 6, 33, np.float32)
    x = rand(rng, (9, T_LONG, 6), np.float32)
    compare(backend, params, x, None, False, False, rng=rng)  # compiled, pool started
    # the one-thread period a stall starts: long enough for a slow machine
    monkeypatch.setattr(backend.threads, "_contended_pause", 60.0)
    # (and none running now: on a busy machine an earlier call may have started one)
    monkeypatch.setattr(backend.threads, "_contended_until", 0.0)
    used = []
    real_rows, real_one = backend.threads.packed.run_rows_par, backend.threads.packed.run_rows

    def stalled_rows(*a):
        used.append("rows")
        real_rows(*a)
        time.sleep(0.01)  # off-core time of the caller, as at a join that waits

    monkeypatch.setattr(backend.threads.packed, "run_rows_par", stalled_rows)
    monkeypatch.setattr(backend.threads.packed, "run_rows", lambda *a: used.append("one") or real_one(*a))
    for _ in range(3):
        compare(backend, params, x, ragged_mask(rng, 9, T_LONG), False, False, rng=rng)
    assert used == ["rows", "one", "one"]
    assert backend.threads._contended()
    monkeypatch.setattr(backend.threads, "_CONTENDED_ROWS_WORK", 0)
    compare(backend, params, x, ragged_mask(rng, 9, T_LONG), True, False, rng=rng)
    assert used[-1] == "rows"


@pytest.mark.parametrize("threads", ["one", "split"])
def test_cpu_hoisted_input_sums(backend, monkeypatch, threads):
    """A single row's hoisted input sums (computed for runs of steps at a
    time) are exact against the reference (ragged mask, both directions, a
    last run cut short, peepholes, zero_output) and give the same bits as
    the sums folded into each step, and as the same row inside a batch
    (where they are folded)."""
    if backend.NAME != "cpu":
        pytest.skip("cpu backend internals")
    from fastrnn.kernels.cpu import packed as pk

    _use_threads(backend, monkeypatch, threads)
    rng = np.random.default_rng(61)
    D, H = 11, 37
    T = (1 if TINY else 2) * pk.HOIST_STEPS + 7
    for kind, opts in (("lstm", {}), ("gru", {}), ("lstm", {"peep": True})):
        params = make_params(kind, rng, D, H, np.float32, **opts)
        packed = backend.pack(params)
        for reverse, zero_output in ((False, False), (True, True)):
            x = rand(rng, (3, T, D), np.float32, 1.0)
            mask = ragged_mask(rng, 3, T)
            states = [rand(rng, (3, n), np.float32) for n in state_sizes(params)]

            def call(rows, hoist):
                monkeypatch.setattr(backend.threads, "_contended_until", 0.0)
                monkeypatch.setattr(backend.threads, "_HOIST_MIN_BYTES", -1 if hoist else 1 << 40)
                out = np.empty((len(range(*rows.indices(3))), T, H), np.float32)
                outs = [np.empty((out.shape[0], n), np.float32) for n in state_sizes(params)]
                run(backend, packed, x[rows], [st[rows] for st in states], mask[rows], reverse,
                    zero_output, out, outs)
                return [out] + outs

            folded = call(slice(0, 3), False)
            for rows in (slice(0, 3), slice(1, 2)):
                for got, want in zip(call(rows, True), folded):
                    np.testing.assert_array_equal(got, want[rows], err_msg=f"{kind} {opts} {rows}")
            monkeypatch.setattr(backend.threads, "_HOIST_MIN_BYTES", -1)
            monkeypatch.setattr(backend.threads, "_contended_until", 0.0)
            compare(backend, params, x, mask, reverse, zero_output, rng=rng)


@pytest.mark.parametrize("faster", ["rows", "panels"])
def test_cpu_split_tuning_picks_the_faster(backend, monkeypatch, faster):
    """In the band where neither split always wins, a shape's first calls
    alternate rows, panels, panels, rows, ... (every result exact); after
    each split's first call plus _TUNE_SAMPLES timed ones the faster is
    kept for that shape, and reported by tuned_splits()."""
    if backend.NAME != "cpu":
        pytest.skip("cpu backend internals")
    _force_parallel(backend, monkeypatch)
    monkeypatch.setattr(backend.threads, "_max_threads", 2)
    monkeypatch.setattr(backend.threads, "_TUNE_MIN_BYTES", 0)
    monkeypatch.setattr(backend.threads, "_tuning", {})
    # a slow CI machine must not look busy: every call is then timed
    monkeypatch.setattr(backend.threads, "_stalled", lambda wall, cpu_t: False)
    monkeypatch.setattr(backend.threads, "_STARVED", 0.0)
    monkeypatch.setattr(backend.threads, "_SPINS", 10**7)
    used = []
    real_split, real_rows = backend.threads._run_split, backend.threads.packed.run_rows_par
    monkeypatch.setattr(backend.threads, "_run_split", lambda *a: used.append("panels") or real_split(*a))
    monkeypatch.setattr(backend.threads.packed, "run_rows_par", lambda *a: used.append("rows") or real_rows(*a))
    real_record = backend.threads._tune_record
    # the first call of each split is not counted: make it the fastest of all
    seen = set()

    def record(key, split, per_step):
        t = 1e-9 if split not in seen else (1.0 if split == faster else 2.0)
        seen.add(split)
        real_record(key, split, t)

    monkeypatch.setattr(backend.threads, "_tune_record", record)
    rng = np.random.default_rng(59)
    for kind in ("lstm", "gru"):
        params = make_params(kind, rng, 7, 35, np.float32)
        seen.clear()
        used.clear()
        n = 2 * (backend.threads._TUNE_SAMPLES + 1)
        for _ in range(n + 2):
            monkeypatch.setattr(backend.threads, "_contended_until", 0.0)
            x = rand(rng, (9, T_LONG, 7), np.float32)
            compare(backend, params, x, ragged_mask(rng, 9, T_LONG), False, False, rng=rng)
        assert used[:n] == ["rows", "panels", "panels", "rows"] * (n // 4)
        assert used[n:] == [faster, faster]
        lo = 1 << (T_LONG.bit_length() - 1)
        assert backend.tuned_splits()[(kind, 9, 7, 35, lo, 2 * lo - 1, "float32")] == faster
        # the same shape with narrower weights is timed on its own
        q = quantize(params, "bfloat16")
        compare(backend, q, rand(rng, (9, T_LONG, 7), np.float32), None, False, False, rng=rng)
        assert used[-1] == "rows" and (kind == "gru", 9, 7, 35, T_LONG.bit_length(),
                                       "bfloat16") in backend.threads._tuning
    # below the band (or one thread, or a busy machine) nothing is timed
    monkeypatch.setattr(backend.threads, "_TUNE_MIN_BYTES", 1 << 40)
    monkeypatch.setattr(backend.threads, "_tuning", {})
    compare(backend, params, rand(rng, (9, T_LONG, 7), np.float32), None, False, False, rng=rng)
    assert backend.threads._tuning == {} and used[-1] == "rows"


def test_cpu_split_tuning_bookkeeping(backend, monkeypatch):
    """Each split's first timing is left out, the fastest remaining call
    decides, and the table is bounded."""
    if backend.NAME != "cpu":
        pytest.skip("cpu backend internals")
    monkeypatch.setattr(backend.threads, "_tuning", {})
    key = (False, 8, 128, 256, 7)
    times = {"rows": [50.0, 3.0, 3.5, 9.0], "panels": [0.1, 4.0, 3.2, 3.3]}
    for _ in range(8):
        split, timing = backend.threads._tune_pick(key)
        assert timing
        backend.threads._tune_record(key, split, times[split].pop(0))
    assert backend.threads._tune_pick(key) == ("rows", False)
    monkeypatch.setattr(backend.threads, "_TUNE_MAX_SHAPES", 3)
    for B in range(8, 12):
        backend.threads._tune_pick((True, B, 5, 40, 7))
    assert len(backend.threads._tuning) <= 3


def test_cpu_split_tuning_times_again(backend, monkeypatch):
    """A kept split is timed again after _RETUNE_CALLS calls of its shape
    (tuned_splits() shows it meanwhile); the interval starts over when the
    other split wins, doubles when the same one does, up to
    _RETUNE_MAX_CALLS."""
    if backend.NAME != "cpu":
        pytest.skip("cpu backend internals")
    th = backend.threads
    monkeypatch.setattr(th, "_tuning", {})
    monkeypatch.setattr(th, "_RETUNE_CALLS", 5)
    monkeypatch.setattr(th, "_RETUNE_MAX_CALLS", 15)
    key = (False, 8, 128, 256, 7, "float32")
    shown = ("lstm", 8, 128, 256, 64, 127, "float32")

    def timing_round(faster):
        calls = 0
        while calls == 0 or not isinstance(th._tuning.get(key), th._Kept):
            split, timing = th._tune_pick(key)
            assert timing
            th._tune_record(key, split, 1.0 if split == faster else 2.0)
            calls += 1
        return calls

    def kept(split, every):
        for _ in range(every):
            assert th._tune_pick(key) == (split, False)
            assert backend.tuned_splits()[shown] == split

    assert timing_round("rows") == 2 * (th._TUNE_SAMPLES + 1)
    kept("rows", 5)
    assert th._tune_pick(key) == ("rows", True)  # timed again: the next round has begun
    assert backend.tuned_splits()[shown] == "rows"  # (still the split kept)
    th._tune_record(key, "rows", 2.0)
    assert timing_round("panels") == 2 * (th._TUNE_SAMPLES + 1) - 1
    kept("panels", 5)  # the other split won: the first interval again
    timing_round("panels")
    kept("panels", 10)  # the same split: twice as long
    timing_round("panels")
    kept("panels", 15)  # ... up to the longest
    timing_round("panels")
    kept("panels", 15)


@pytest.mark.parametrize("threads", ["one", "split"])
def test_cpu_row_results_do_not_depend_on_the_batch(backend, monkeypatch, threads):
    """A sequence gives the same bits alone, or at any position of a batch:
    every tile height (6, 4, 2, 1 rows), the row split and the panel split
    sum a row's products in one order. Packed float32 (and bfloat16 weights,
    whose tiles take k two at a time, with an odd input size and unit count)
    and generic float64."""
    if backend.NAME != "cpu":
        pytest.skip("a cpu backend property (the reference and cuda backends use BLAS)")
    _use_threads(backend, monkeypatch, threads)
    rng = np.random.default_rng(53)
    D, H, T = 17, 37, T_LONG
    cases = [(make_params(kind, rng, D, H, dtype, **opts), dtype) for dtype in DTYPES
             for kind, opts in (("lstm", {}), ("gru", {}), ("lstm", {"peep": True}),
                                ("simple", {}))]
    cases += [(quantize(make_params(kind, rng, D, H, np.float32), "bfloat16"), np.float32)
              for kind in ("lstm", "gru")]
    for params, dtype in cases:
        packed = backend.pack(params)
        for B in (13, 20):
            monkeypatch.setattr(backend.threads, "_contended_until", 0.0)
            x = rand(rng, (B, T, D), dtype, 1.0)
            mask = ragged_mask(rng, B, T)
            states = [rand(rng, (B, n), dtype) for n in state_sizes(params)]
            out = np.empty((B, T, params.output_size), dtype)
            outs = [np.empty_like(s) for s in states]
            run(backend, packed, x, states, mask, False, False, out, outs)
            for b in range(B):
                o1 = np.empty((1, T, params.output_size), dtype)
                s1 = [np.empty((1, n), dtype) for n in state_sizes(params)]
                run(backend, packed, x[b:b + 1], [s[b:b + 1] for s in states],
                    mask[b:b + 1], False, False, o1, s1)
                np.testing.assert_array_equal(o1[0], out[b],
                                              err_msg=f"{params.kind} {dtype} B={B} row {b}")
                for got, want in zip(s1, outs):
                    np.testing.assert_array_equal(got[0], want[b])


def test_many_threads_one_weight_set(backend, monkeypatch):
    """Several Python threads run one packed weight set at once."""
    _force_parallel(backend, monkeypatch)
    rng = np.random.default_rng(9)
    B, T, D, H = 8, T_LONG, 5, 33
    params = make_params("lstm", rng, D, H, np.float32)
    packed = backend.pack(params)
    jobs = []
    for i in range(6):
        x = rand(rng, (B, T, D), np.float32)
        states = [rand(rng, (B, H), np.float32) for _ in range(2)]
        want = np.empty((B, T, H), np.float32)
        want_s = [np.empty((B, H), np.float32) for _ in range(2)]
        run(reference, reference.pack(params), x, states, None, False, False, want, want_s)
        jobs.append((x, states, want, want_s))
    errors = []
    barrier = threading.Barrier(len(jobs))

    def work(x, states, want, want_s):
        try:
            barrier.wait()
            for _ in range(5):
                out = np.empty_like(want)
                outs = [np.empty_like(s) for s in states]
                run(backend, packed, x, states, None, False, False, out, outs)
                np.testing.assert_allclose(out, want, **tol(np.float32))
                for got, exp in zip(outs, want_s):
                    np.testing.assert_allclose(got, exp, **tol(np.float32))
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=job) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]


def test_under_one_thread(backend, monkeypatch):
    import fastrnn.dispatch as d

    if not hasattr(d, "set_num_threads"):
        pytest.skip("fastrnn.dispatch.set_num_threads is not there")
    _force_parallel(backend, monkeypatch)
    before = d.get_num_threads()
    d.set_num_threads(1)
    try:
        assert d.get_num_threads() == 1
        rng = np.random.default_rng(21)
        for kind in ("lstm", "gru"):
            params = make_params(kind, rng, 4, 20, np.float32)
            compare(backend, params, rand(rng, (9, T_LONG, 4), np.float32), rng=rng)
    finally:
        d.set_num_threads(before)
    assert d.get_num_threads() == before


def test_set_num_threads_validates():
    import fastrnn.dispatch as d

    if not hasattr(d, "set_num_threads"):
        pytest.skip("fastrnn.dispatch.set_num_threads is not there")
    with pytest.raises(ValueError, match="n"):
        d.set_num_threads(0)


# ------------------------------------------------------------------ golden (real Keras)


def _golden_cases():
    names = []
    for path in sorted(DATA.glob("keras_*.npz")):
        with np.load(path) as z:
            cfg = json.loads(str(z["config"]))
        if cfg.get("layer") in ("LSTM", "GRU", "SimpleRNN") and not cfg["config"].get("stateful"):
            names.append(path.stem)
    return names


@pytest.mark.parametrize("name", _golden_cases())
def test_golden_keras_single_layer(backend, name):
    """Keras 3 outputs reproduced through the kernel contract."""
    from fastrnn import activations

    with np.load(DATA / f"{name}.npz") as z:
        data = dict(z)
    cfg = json.loads(str(data["config"]))
    layer, c = cfg["layer"], cfg["config"]
    x = data["x"]
    B, T, D = x.shape
    H = c["units"]
    act = activations.resolve(c["activation"])
    W, U = data["w0"], data["w1"]
    if layer == "LSTM":
        bias = data["w2"] if c["use_bias"] else np.zeros(4 * H, np.float32)
        params = LSTMParams(W, U, bias, act, activations.resolve(c["recurrent_activation"]))
    elif layer == "GRU":
        bias = data["w2"] if c["use_bias"] else np.zeros((2, 3 * H), np.float32)
        if bias.ndim == 1:
            bias = np.stack([bias, np.zeros_like(bias)])
        params = GRUParams(W, U, bias, act, activations.resolve(c["recurrent_activation"]),
                           reset_after=c["reset_after"])
    else:
        bias = data["w2"] if c["use_bias"] else np.zeros(H, np.float32)
        params = SimpleRNNParams(W, U, bias, act)
    sizes = state_sizes(params)
    states = [data[f"s{i}"] if f"s{i}" in data else np.zeros((B, n), np.float32)
              for i, n in enumerate(sizes)]
    mask = data.get("mask")
    reverse = c["go_backwards"]
    out = np.empty((B, T, params.output_size), np.float32)
    outs = [np.empty((B, n), np.float32) for n in sizes]
    run(backend, backend.pack(params), np.ascontiguousarray(x), states, mask, reverse, False,
        out, outs)
    ys = [data[f"y{i}"] for i in range(4) if f"y{i}" in data]
    if c["return_sequences"]:
        got = out[:, ::-1] if reverse else out  # Keras returns processing order
    else:
        got = outs[0]
    np.testing.assert_allclose(got, ys[0], rtol=1e-4, atol=2e-5)
    if c["return_state"]:
        for got_s, want_s in zip(outs, ys[1:]):
            np.testing.assert_allclose(got_s, want_s, rtol=1e-4, atol=2e-5)


@pytest.mark.parametrize("preset", [None, "5000"])
def test_cpu_pool_spin_setting_does_not_leak(preset):
    """fastrnn starts Numba's OpenMP pool with a short spin (GOMP_SPINCOUNT)
    and leaves the environment as it found it: unset stays unset (so a
    libgomp loaded later, PyTorch's, does not inherit it), a user's value
    is kept."""
    import subprocess
    import sys

    code = (
        "import os, numba\n"
        "from fastrnn.kernels import cpu\n"
        "layer = cpu.threading_layer(start=True)\n"
        "print(repr(os.environ.get('GOMP_SPINCOUNT')), layer)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    if preset is not None:
        env["GOMP_SPINCOUNT"] = preset
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    value, layer = out.stdout.split()
    assert value == repr(preset)
    assert layer in ("omp", "tbb", "workqueue")
