"""Every CUDA kernel compiled to PTX, for float32 and float64, without a GPU.

The simulator ignores types, so this is what catches a typing error in a
kernel on a machine with no GPU: ``numba.cuda.compile_ptx`` runs Numba's
real CUDA pipeline (NVVM from the ``numba-cuda[cu12]`` wheels). Also the
behaviour of the ``cuda`` backend on a machine with neither GPU nor
simulator. Skipped under ``NUMBA_ENABLE_CUDASIM=1`` (the simulator replaces
the compiler).
"""

import importlib.util
import os

import numpy as np
import pytest

if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
    pytest.skip("PTX compilation needs the real CUDA target, not the simulator",
                allow_module_level=True)

cuda = pytest.importorskip("numba.cuda")
_k = pytest.importorskip("fastrnn.kernels.cuda.kernels")

CC = (7, 5)
DTYPES = [np.float32, np.float64]
NAMES = [name for name, _, _ in _k.ptx_signatures(np.float32)]


@pytest.fixture(scope="module")
def nvvm():
    """Skip when the PTX toolchain is incomplete (no numba-cuda[cu12]); never
    hide kernel errors. The probe calls a device function, as the kernels do:
    Numba's own (deprecated) ``numba.cuda`` compiles a lone kernel but asks
    the CUDA driver for the device when it meets a device function."""

    @cuda.jit(device=True, inline="always")  # as the kernels' helpers
    def twice(x):
        return 2.0 * x

    def probe(a):
        a[0] = twice(a[0])

    try:
        cuda.compile_ptx(probe, "void(float32[::1])", cc=CC)
    except Exception as exc:  # NvvmSupportError and friends
        if os.environ.get("FASTRNN_REQUIRE_PTX") == "1":  # CI: a skip would hide the check
            raise
        pytest.skip(f"no PTX compiler here: {_one_line(exc)}")


def _one_line(exc):
    """Why the probe failed, on one line (the driver's errors span several)."""
    if importlib.util.find_spec("numba_cuda") is None:
        return ("numba-cuda[cu12] is not installed (Numba's bundled numba.cuda needs a CUDA "
                "driver to compile device functions)")
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:160]}{'...' if len(text) > 160 else ''}"


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("name", NAMES)
def test_kernel_compiles_to_ptx(nvvm, name, dtype):
    (kernel, sig), = [(k, s) for n, k, s in _k.ptx_signatures(dtype) if n == name]
    ptx, restype = cuda.compile_ptx(kernel.py_func, sig, cc=CC)
    assert ".entry" in ptx
    # The kernel really computes in the requested precision.
    assert (".f64" in ptx) if dtype == np.float64 else (".f32" in ptx)


@pytest.mark.parametrize("tile", [1, 4, 32])
def test_matmul_compiles_for_other_tiles(nvvm, tile):
    name, kernel, sig = _k.ptx_signatures(np.float32, tile=tile)[-1]
    assert name.startswith("matmul_bias")
    ptx, _ = cuda.compile_ptx(kernel.py_func, sig, cc=CC)
    assert ".shared" in ptx


def test_forced_cuda_without_gpu_raises_clearly():
    from fastrnn import dispatch
    from fastrnn.kernels import cuda as kc

    if kc.real_gpu()[0]:
        pytest.skip("a GPU is present")
    ok, why = kc.available()
    assert not ok and "GPU" in why
    params = _lstm_params()
    with pytest.raises(RuntimeError, match="cuda.*GPU"):
        dispatch.select("cuda", [params])
    # auto stays off the GPU, and says why
    choice = dispatch.select("auto", [params], on_device=True)
    assert choice.name != "cuda" and "not cuda" in choice.reason


def test_forced_cuda_layer_without_gpu_raises_clearly():
    import fastrnn
    from fastrnn.kernels import cuda as kc

    if kc.real_gpu()[0]:
        pytest.skip("a GPU is present")
    layer = fastrnn.LSTM(3, backend="cuda")
    x = np.ones((2, 4, 5), np.float32)
    with pytest.raises(RuntimeError, match="GPU"):
        layer(x)
    with pytest.raises(RuntimeError, match="GPU"):
        fastrnn.LSTM(3).to("cuda")


def test_describe_says_what_is_visible():
    from fastrnn.kernels import cuda as kc

    text = kc.describe()
    assert isinstance(text, str) and text


def _lstm_params():
    from fastrnn.kernels import LSTMParams

    rng = np.random.default_rng(0)
    r = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    return LSTMParams(r(5, 12), r(3, 12), r(12))
