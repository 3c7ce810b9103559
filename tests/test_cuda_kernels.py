"""The ``cuda`` backend against ``reference``, in Numba's CUDA simulator.

Runs only with ``NUMBA_ENABLE_CUDASIM=1`` (in its own pytest process: the
variable must be set before Numba is imported), at tiny sizes, with tiny
thread blocks and a cap on blocks so that several blocks, grid-stride loops
and ragged edges all run. What the shared backend test body
(``tests/test_kernels.py``) does not cover is here: launch configurations,
device arrays in and out, aliasing of states, and the dispatcher's rules
for the simulator.
"""

import os

import numpy as np
import pytest

if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":
    pytest.skip("CUDA simulator tests: run with NUMBA_ENABLE_CUDASIM=1",
                allow_module_level=True)

from hypothesis import given, settings, strategies as st  # noqa: E402
from numba import cuda  # noqa: E402

from fastrnn import dispatch  # noqa: E402
from fastrnn.kernels import GRUParams, LSTMParams, SimpleRNNParams  # noqa: E402
from fastrnn.kernels import cuda as kc  # noqa: E402
from fastrnn.kernels import reference as ref  # noqa: E402

pytestmark = pytest.mark.cudasim

TOL = {np.float32: 2e-5, np.float64: 1e-10}
VARIANTS = ["simple", "gru_after", "gru_before", "lstm", "lstm_full"]


def make_params(variant, rng, dtype, D=3, H=5, P=4):
    def r(*shape):
        return (0.6 * rng.standard_normal(shape)).astype(dtype)

    if variant == "simple":
        return SimpleRNNParams(r(D, H), r(H, H), r(H), activation=1)
    if variant == "gru_after":
        return GRUParams(r(D, 3 * H), r(H, 3 * H), r(2, 3 * H))
    if variant == "gru_before":
        return GRUParams(r(D, 3 * H), r(H, 3 * H), r(2, 3 * H), reset_after=False,
                         activation=5, recurrent_activation=3)
    if variant == "lstm":
        return LSTMParams(r(D, 4 * H), r(H, 4 * H), r(4 * H))
    # every optional part of the LSTM at once (TF1 / PyTorch style)
    return LSTMParams(r(D, 4 * H), r(P, 4 * H), r(4 * H), activation=7,
                      recurrent_activation=3, forget_bias=1.0, peepholes=r(3, H),
                      cell_clip=0.8, projection=r(H, P), proj_clip=0.4)


def run_backend(mod, params, x, states, mask, reverse, zero_output, with_out=True,
                device=False):
    """Run ``mod`` through the contract; return host copies of (out, *states)."""
    B, T, _ = x.shape
    sizes = [params.output_size, params.units][: params.n_states]
    out = np.full((B, T, params.output_size), np.nan, x.dtype) if with_out else None
    states_out = [np.full((B, n), np.nan, x.dtype) for n in sizes]
    args = [x, *states, mask, out, *states_out]
    if device:
        args = [None if a is None else cuda.to_device(a) for a in args]
    x_, *rest = args
    st_ = rest[: len(states)]
    mask_, out_ = rest[len(states)], rest[len(states) + 1]
    so_ = rest[len(states) + 2:]
    packed = mod.pack(params)
    if params.kind == "lstm":
        mod.lstm(packed, x_, st_[0], st_[1], mask_, reverse, zero_output, out_, *so_)
    elif params.kind == "gru":
        mod.gru(packed, x_, st_[0], mask_, reverse, zero_output, out_, so_[0])
    else:
        mod.simple_rnn(packed, x_, st_[0], mask_, reverse, zero_output, out_, so_[0])
    results = [out_] + list(so_)
    if device:
        return [None if a is None else a.copy_to_host() for a in results]
    return results


def inputs(params, rng, B, T, dtype, masked):
    D = params.kernel.shape[0]
    x = rng.standard_normal((B, T, D)).astype(dtype)
    sizes = [params.output_size, params.units][: params.n_states]
    states = [rng.standard_normal((B, n)).astype(dtype) for n in sizes]
    mask = (rng.random((B, T)) < 0.6) if masked else None
    if masked:
        mask[0, :] = False  # one sequence fully masked
    return x, states, mask


def check(params, rng, B, T, dtype, masked, reverse, zero_output, **kw):
    x, states, mask = inputs(params, rng, B, T, dtype, masked)
    want = run_backend(ref, params, x, states, mask, reverse, zero_output,
                       with_out=kw.get("with_out", True))
    got = run_backend(kc, params, x, states, mask, reverse, zero_output, **kw)
    for g, w in zip(got, want):
        if w is None:
            assert g is None
            continue
        assert g.dtype == dtype
        np.testing.assert_allclose(g, w, atol=TOL[dtype], rtol=TOL[dtype])


@pytest.fixture(autouse=True)
def tiny_blocks():
    previous = kc.set_launch_config(threads=4, tile=3, max_blocks=2, gemm_batch=2)
    yield
    kc.set_launch_config(**previous)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("masked,reverse,zero_output",
                         [(False, False, False), (True, False, False), (True, True, True)])
@pytest.mark.parametrize("gemm_batch", [0, 1], ids=["fused", "gemm"])
def test_matches_reference(variant, dtype, masked, reverse, zero_output, gemm_batch, rng):
    """Both ways to the recurrent product: fused in the step kernel, or a GEMM."""
    kc.set_launch_config(gemm_batch=gemm_batch)
    params = make_params(variant, rng, dtype)
    check(params, rng, 3, 4, dtype, masked, reverse, zero_output)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("gemm_batch", [0, 1], ids=["fused", "gemm"])
def test_device_arrays_in_and_out(variant, gemm_batch, rng):
    """Numba device arrays are read and written in place."""
    kc.set_launch_config(gemm_batch=gemm_batch)
    params = make_params(variant, rng, np.float32)
    check(params, rng, 2, 3, np.float32, True, True, False, device=True)


@pytest.mark.parametrize("variant", ["gru_after", "lstm_full"])
def test_no_output_buffer(variant, rng):
    params = make_params(variant, rng, np.float64)
    check(params, rng, 2, 3, np.float64, True, False, False, with_out=False)


@pytest.mark.parametrize("variant", ["simple", "lstm_full"])
def test_final_state_may_alias_initial_state(variant, rng):
    params = make_params(variant, rng, np.float64)
    x, states, mask = inputs(params, rng, 2, 3, np.float64, True)
    want = run_backend(ref, params, x, states, mask, False, False)
    packed = kc.pack(params)
    out = np.empty_like(want[0])
    if params.kind == "lstm":
        kc.lstm(packed, x, states[0], states[1], mask, False, False, out, states[0], states[1])
    else:
        kc.simple_rnn(packed, x, states[0], mask, False, False, out, states[0])
    for g, w in zip([out] + states, want):
        np.testing.assert_allclose(g, w, atol=1e-10)


@pytest.mark.parametrize("threads,tile,max_blocks,gemm_batch",
                         [(1, 1, 1, 1), (3, 2, 0, 0), (7, 5, 2, 2), (64, 16, 0, 1)])
def test_launch_configurations(threads, tile, max_blocks, gemm_batch, rng):
    kc.set_launch_config(threads=threads, tile=tile, max_blocks=max_blocks,
                         gemm_batch=gemm_batch)
    params = make_params("lstm_full", rng, np.float32, D=4, H=3, P=2)
    check(params, rng, 3, 2, np.float32, True, False, False)


@settings(max_examples=12, deadline=None)
@given(
    variant=st.sampled_from(VARIANTS), gemm_batch=st.integers(0, 3),
    B=st.integers(1, 3), T=st.integers(1, 4), D=st.integers(1, 4), H=st.integers(1, 4),
    masked=st.booleans(), reverse=st.booleans(), zero_output=st.booleans(),
    seed=st.integers(0, 2**31),
)
def test_random_shapes(variant, gemm_batch, B, T, D, H, masked, reverse, zero_output, seed):
    kc.set_launch_config(gemm_batch=gemm_batch)
    rng = np.random.default_rng(seed)
    params = make_params(variant, rng, np.float64, D=D, H=H, P=max(1, H - 1))
    check(params, rng, B, T, np.float64, masked, reverse, zero_output)


def test_projection_gemm_ragged_edges(rng):
    """The shared-memory GEMM alone, on sizes no tile divides."""
    for tile, M, K, N in [(3, 7, 5, 4), (4, 1, 9, 10), (2, 5, 1, 3)]:
        kc.set_launch_config(tile=tile, max_blocks=2)
        a = rng.standard_normal((M, K))
        w = rng.standard_normal((K, N))
        b = rng.standard_normal(N)
        c = cuda.device_array((M, N), np.float64)
        kc._project(cuda.to_device(a), cuda.to_device(w), cuda.to_device(b), c)
        np.testing.assert_allclose(c.copy_to_host(), a @ w + b, atol=1e-12)


def test_auto_never_picks_the_simulator(rng):
    params = make_params("lstm", rng, np.float32)
    assert kc.available()[0]
    assert not kc.real_gpu()[0]
    choice = dispatch.select("auto", [params], on_device=True)
    assert choice.name != "cuda"
    assert "simulator" in choice.reason
    assert dispatch.select("cuda", [params]).name == "cuda"


def test_layer_on_cuda_in_the_simulator(rng):
    import fastrnn

    x = rng.standard_normal((2, 3, 4)).astype(np.float32)
    want = fastrnn.GRU(5, return_sequences=True, backend="reference")
    want.build((2, 3, 4))
    got = fastrnn.GRU(5, return_sequences=True, backend="cuda")
    got.build((2, 3, 4))
    got.set_weights(want.get_weights())
    assert got.backend == "cuda"
    np.testing.assert_allclose(got(x), want(x), atol=2e-5)
    # a simulated device array in gives one out
    y = got(cuda.to_device(x))
    assert not isinstance(y, np.ndarray)
    np.testing.assert_allclose(y.copy_to_host(), want(x), atol=2e-5)
    # placed on "cuda" but auto: the simulator is not a GPU, so cpu/reference
    placed = fastrnn.GRU(5, return_sequences=True).to("cuda")
    placed.build((2, 3, 4))
    assert placed.backend != "cuda"


def test_supports_rejects_python_activations(rng):
    params = make_params("simple", rng, np.float32)
    ok, why = kc.supports(SimpleRNNParams(params.kernel, params.recurrent_kernel,
                                          params.bias, activation=np.tanh))
    assert not ok and "activation" in why


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_gpu_bench_rows_in_the_simulator(cell, monkeypatch):
    """The GPU bench runs end to end (timings are meaningless here), and its
    PyTorch weight conversion agrees with fastrnn (checked on torch's CPU)."""
    from fastrnn.cli import bench_gpu as g

    assert not g.gpu_present()[0]
    assert g.bench_gpu(quick=True)[0] == []
    monkeypatch.setattr(g, "gpu_present", lambda: (True, "pretend"))
    monkeypatch.setattr(g, "BATCHES", (2,))
    monkeypatch.setattr(g, "UNITS", (3,))
    monkeypatch.setattr(g, "STEPS_QUICK", 2)
    rows, notes = g.bench_gpu(quick=True, cells=(cell,))
    assert len(rows) == 1 and "cuda_ms" in rows[0]
    assert "| fastrnn-cuda ms |" in g.format_gpu_table(rows)
    torch = pytest.importorskip("torch")  # noqa: F841
    x = np.random.default_rng(0).standard_normal((2, 4, 3)).astype(np.float32)
    w = g._weights(cell, 3, 3)
    fr, fr_out = g._fastrnn_call(cell, w, x)
    tc, tc_out = g._torch_call(cell, w, x, device="cpu")
    fr()
    tc()
    np.testing.assert_allclose(fr_out(), tc_out(), atol=1e-5)


class _HostCuPy:
    """Just enough of CuPy, on the simulator's host-backed device arrays,
    to run the cuBLAS code path of the backend (no GPU, no CuPy here)."""

    @staticmethod
    def asarray(a):
        return a._ary if hasattr(a, "_ary") else np.asarray(a)

    matmul = staticmethod(np.matmul)


@pytest.mark.parametrize("variant", VARIANTS)
def test_cupy_gemm_path(variant, rng, monkeypatch):
    """The GEMMs through CuPy (cuBLAS on a GPU): same results as reference."""
    monkeypatch.setattr(kc, "_use_cupy", lambda: True)
    monkeypatch.setattr(kc, "_cupy", _HostCuPy)
    kc.set_launch_config(gemm_batch=1)
    params = make_params(variant, rng, np.float64)
    check(params, rng, 2, 3, np.float64, True, False, False)


@pytest.mark.parametrize("name, value, message", [
    ("FASTRNN_CUDA_THREADS", "0", "expected an integer from 1 to 1024, got 0"),
    ("FASTRNN_CUDA_THREADS", "2048", "expected an integer from 1 to 1024, got 2048"),
    ("FASTRNN_CUDA_TILE", "-2", "expected an integer from 1 to 32, got -2"),
    ("FASTRNN_CUDA_MAX_BLOCKS", "-1", "expected a non-negative integer, got -1"),
    ("FASTRNN_CUDA_GEMM", "bogus", "expected one of"),
])
def test_launch_settings_from_the_environment_are_checked(name, value, message):
    """THREADS=0 or TILE=0 gave a ZeroDivisionError at the first call, negative
    values numpy's "negative dimensions", GEMM=bogus was taken silently."""
    import subprocess
    import sys

    code = "import fastrnn.kernels.cuda"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=dict(os.environ, **{name: value}), timeout=300)
    assert proc.returncode != 0 and f"{name}: {message}" in proc.stderr, proc.stderr


def test_set_launch_config_refuses_launches_no_gpu_takes():
    before = kc.get_launch_config()
    for kwargs, message in ((dict(threads=1025), "threads: expected an integer from 1 to 1024"),
                            (dict(tile=33), "tile: expected an integer from 1 to 32"),
                            (dict(threads=True), "threads: expected"),
                            (dict(threads=64, tile=0), "tile: expected")):
        with pytest.raises(ValueError, match=message):
            kc.set_launch_config(**kwargs)
        assert kc.get_launch_config() == before  # nothing changed


def test_bidirectional_takes_and_gives_device_arrays(rng):
    """The halves came back as device arrays before they were merged, and the
    merge then used CuPy (absent here; on a GPU it cannot concatenate Numba
    device arrays or flip PyTorch tensors)."""
    import fastrnn

    x = rng.standard_normal((2, 3, 4)).astype(np.float32)
    for mode in ("concat", None):
        got = fastrnn.Bidirectional(fastrnn.GRU(2, return_sequences=True, return_state=True),
                                    backend="cuda", merge_mode=mode)
        got.build(x.shape)
        want = fastrnn.Bidirectional(fastrnn.GRU(2, return_sequences=True, return_state=True),
                                     backend="reference", merge_mode=mode)
        want.set_weights(got.get_weights())
        flat = [a for o in got(cuda.to_device(x)) for a in (o if isinstance(o, list) else [o])]
        ref = [a for o in want(x) for a in (o if isinstance(o, list) else [o])]
        assert len(flat) == len(ref)
        for a, b in zip(flat, ref):
            assert not isinstance(a, np.ndarray)
            np.testing.assert_allclose(a.copy_to_host(), b, atol=2e-5)
