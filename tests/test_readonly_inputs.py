"""Read-only inputs run the compiled kernels a writable input runs.

Numba types an array by its writability too, so a read-only ``x`` (from
``np.frombuffer``, a read-only memmap, an array a server received), mask or
initial state would compile a second copy of each kernel. The check counts
the compiled signatures of every dispatcher of the CPU kernel modules
before and after calls with read-only inputs.
"""

from __future__ import annotations

import numpy as np
import pytest
from numba.core.registry import CPUDispatcher

from fastrnn import dispatch
from fastrnn.kernels import GRUParams, LSTMParams, SimpleRNNParams, run, state_sizes
from fastrnn.kernels.cpu import generic, inputs, packed, split, stream, threads, tiles

cpu = dispatch.backend_module("cpu")


def _signatures():
    found = {}
    for mod in (packed, split, generic, stream, tiles):
        for name, obj in vars(mod).items():
            if isinstance(obj, CPUDispatcher):
                found[f"{mod.__name__}.{name}"] = len(obj.signatures)
    return found


def _readonly(a):
    """A read-only copy of ``a``, as ``np.frombuffer`` of received bytes gives."""
    return np.frombuffer(a.tobytes(), dtype=a.dtype).reshape(a.shape)


def _params(kind, rng, D, H, dtype):
    r = lambda *s: rng.uniform(-0.5, 0.5, s).astype(dtype)  # noqa: E731
    if kind == "lstm":
        return LSTMParams(r(D, 4 * H), r(H, 4 * H), r(4 * H))
    if kind == "gru":
        return GRUParams(r(D, 3 * H), r(H, 3 * H), r(2, 3 * H))
    return SimpleRNNParams(r(D, H), r(H, H), r(H))


def _call(packed_w, params, x, states, mask):
    B, T, _ = x.shape
    out = np.empty((B, T, params.output_size), x.dtype)
    outs = [np.empty_like(s) for s in states]
    run(cpu, packed_w, x, states, mask, False, False, out, outs)
    return [out] + outs


@pytest.mark.parametrize("kind,dtype", [("lstm", np.float32), ("gru", np.float32),
                                        ("gru", np.float64), ("simple_rnn", np.float32)])
def test_readonly_inputs_add_no_specialization(rng, threading, kind, dtype):
    B = threads._BATCH_SPLIT_MIN + 1 if threading == "rows split" else 3
    D, H, T = 5, 37, 4
    params = _params(kind, rng, D, H, dtype)
    pk = cpu.pack(params)
    x = rng.uniform(-1, 1, (B, T, D)).astype(dtype)
    mask = rng.random((B, T)) < 0.8
    states = [rng.uniform(-1, 1, (B, n)).astype(dtype) for n in state_sizes(params)]
    want = _call(pk, params, x, states, mask)  # compiles (or loads) the writable kernels
    before = _signatures()
    got = _call(pk, params, _readonly(x), [_readonly(s) for s in states], _readonly(mask))
    assert _signatures() == before
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


def test_readonly_weights_add_no_specialization(rng):
    """Weights loaded read-only (e.g. a memmap opened "r") run the generic kernels as is."""
    params = _params("gru", rng, 4, 9, np.float64)
    x = rng.uniform(-1, 1, (2, 3, 4))
    states = [rng.uniform(-1, 1, (2, 9))]
    cpu.set_num_threads(1)
    try:
        want = _call(cpu.pack(params), params, x, states, None)
        before = _signatures()
        ro = GRUParams(_readonly(params.kernel), _readonly(params.recurrent_kernel),
                       _readonly(params.bias))
        got = _call(cpu.pack(ro), ro, x, states, None)
    finally:
        cpu.set_num_threads(None)
    assert _signatures() == before
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


def test_readonly_out_gets_a_clear_error(rng):
    """A read-only output buffer is never handed to a kernel: NumPy's ValueError."""
    params = _params("lstm", rng, 3, 5, np.float32)
    x = rng.uniform(-1, 1, (2, 3, 3)).astype(np.float32)
    states = [np.zeros((2, 5), np.float32)] * 2
    out = np.zeros((2, 3, 5), np.float32)
    out.setflags(write=False)
    with pytest.raises(ValueError, match="read-only"):
        run(cpu, cpu.pack(params), x, states, None, False, False, out,
            [np.empty((2, 5), np.float32) for _ in range(2)])
    assert not out.any()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_writable_view_for_the_stream_kernels(rng, dtype):
    """``inputs.writable`` (what a stream passes its frames through) shares the
    memory of a read-only frame and runs the compiled stream kernels."""
    params = _params("lstm", rng, 6, 11, dtype)
    w, cfg, state_len = stream.pack([params], 2, False)
    x = rng.uniform(-1, 1, (2, 6)).astype(dtype)
    s0 = rng.uniform(-1, 1, state_len).astype(dtype)

    def frame(xx):
        s = s0.copy()
        out = np.empty((2, 11), dtype)
        stream.frame(xx, w, s, np.zeros(stream.work_size(cfg, 2, 1), dtype), out, cfg)
        return out, s

    want = frame(x)
    before = _signatures()
    xr = _readonly(x)
    view = inputs.writable(xr)
    assert view.flags.writeable and np.shares_memory(view, xr)
    got = frame(view)
    assert _signatures() == before
    for g, wnt in zip(got, want):
        np.testing.assert_array_equal(g, wnt)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_readonly_frames_and_chunks_of_a_stream(rng, dtype):
    """A Stream given read-only frames and chunks runs the kernels its
    writable frames compiled, with the same results."""
    import fastrnn

    layer = fastrnn.GRU(13, return_sequences=True, dtype=dtype)
    layer.build((1, None, 7))
    x = rng.standard_normal((1, 6, 7)).astype(dtype)
    a, b = layer.stream(), layer.stream()
    want = [a(x[:, 0]), a(x[:, 1:4]), a(x[:, 4:])]
    before = _signatures()
    got = [b(_readonly(x[:, 0])), b(_readonly(x[:, 1:4])), b(_readonly(x[:, 4:]))]
    assert _signatures() == before
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


def test_writable_keeps_the_memory_alive():
    import gc
    import weakref

    ro = np.frombuffer(np.arange(12.0).tobytes(), dtype=np.float64).reshape(3, 4)
    alive = weakref.ref(ro)
    view = inputs.writable(ro)
    del ro
    gc.collect()
    assert alive() is not None  # the read-only owner lives as long as the view
    np.testing.assert_array_equal(view, np.arange(12.0).reshape(3, 4))
    assert inputs.writable(None) is None
    a = np.ones(3)
    assert inputs.writable(a) is a
