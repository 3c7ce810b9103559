"""Streams with large weights time the one-core stream kernels against the
batch engine on two threads and keep the faster.

The decision is tested with an injected clock (no real timing): each
engine's calls advance it by a fixed amount. The numbers are checked
against the ``reference`` backend over the whole sequence, across the
switch from one engine to the other.
"""

import numpy as np
import pytest

import fastrnn
from fastrnn import dispatch, streaming

pytestmark = pytest.mark.skipif(dispatch.get_num_threads() < 2,
                                reason="the batch engine's panel split needs two threads")


class _Clock:
    """``perf_counter`` that moves only when a wrapped engine runs."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self):
        return self.now


def _timed(fn, clock, cost):
    def run(*args):
        clock.now += cost
        return fn(*args)
    return run


def _stream_with_costs(monkeypatch, layer, kernel_cost, engine_cost):
    clock = _Clock()
    monkeypatch.setattr(streaming, "time", clock)
    monkeypatch.setattr(streaming, "TUNE_MIN_BYTES", 0)
    real = streaming._Tuner.__init__

    def init(self, stream, which, kernel, runner):
        real(self, stream, which, kernel, runner)
        self.fns = (_timed(self.fns[0], clock, kernel_cost),
                    _timed(self.fns[1], clock, engine_cost))

    monkeypatch.setattr(streaming._Tuner, "__init__", init)
    return layer.stream()


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("engine_wins", [True, False])
def test_stream_keeps_the_faster_engine(monkeypatch, rng, kind, engine_wins):
    S = streaming.TUNE_SAMPLES
    n_frames, n_chunks, C = 2 * S + 5, 2 * S + 4, 3
    T, D, H = n_frames + n_chunks * C, 11, 37
    layer = (fastrnn.LSTM if kind == "lstm" else fastrnn.GRU)(H, return_sequences=True)
    layer.build((1, None, D))
    layer.set_weights([rng.uniform(-0.4, 0.4, w.shape).astype(np.float32)
                       for w in layer.get_weights()])
    stream = _stream_with_costs(monkeypatch, layer, 1.0, 0.5 if engine_wins else 2.0)
    assert stream.threads is None and "frames: timing" in stream.backend_reason
    x = rng.standard_normal((1, T, D)).astype(np.float32)
    frames = [stream(x[:, t]) for t in range(n_frames)]
    winner = "the cpu batch engine" if engine_wins else "the stream kernels"
    if engine_wins:
        assert stream.backend == "cpu" and stream.threads == dispatch.get_num_threads()
    else:
        assert stream.backend == "stream" and stream.threads == 1
    assert f"frames: {winner}" in stream.backend_reason
    assert "chunks: timing" in stream.backend_reason
    chunks = [stream(x[:, t:t + C]) for t in range(n_frames, T, C)]
    assert f"chunks: {winner}" in stream.backend_reason
    ref = (fastrnn.LSTM if kind == "lstm" else fastrnn.GRU)(
        H, return_sequences=True, backend="reference", dtype="float64")
    ref.set_weights([w.astype(np.float64) for w in layer.get_weights()])
    want = ref(x.astype(np.float64))
    got = np.concatenate([np.stack(frames, axis=1)] + chunks, axis=1)
    np.testing.assert_allclose(got, want, atol=2e-5)


def test_small_weights_and_float64_are_not_timed(rng):
    small = fastrnn.LSTM(16)
    small.build((1, None, 8))
    s = small.stream()
    assert s.backend == "stream" and s.threads == 1
    wide = fastrnn.GRU(16, dtype="float64")
    wide.build((1, None, 8))
    assert wide.stream().threads == 1


def test_a_nan_frame_during_timing_leaves_the_state(monkeypatch, rng):
    layer = fastrnn.GRU(9, nan_policy="raise")
    layer.build((1, None, 5))
    stream = _stream_with_costs(monkeypatch, layer, 1.0, 0.5)
    x = rng.standard_normal((1, 5)).astype(np.float32)
    stream(x)
    for _ in range(2):  # one call on each engine
        before = [s.copy() for s in stream.states]
        bad = x.copy()
        bad[0, 2] = np.nan
        with pytest.raises(ValueError):
            stream(bad)
        for a, b in zip(stream.states, before):
            np.testing.assert_array_equal(a, b)
