"""Streams with large weights time the one-core stream kernels against the
batch engine on two threads and keep the faster.

The decision is tested with an injected clock (no real timing): each
engine's calls advance it by a fixed amount. The numbers are checked
against the ``reference`` backend over the whole sequence, across the
switch from one engine to the other.
"""

import os
import weakref

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

    def init(self, stream, which, kernel, runner, ran=None):
        real(self, stream, which, kernel, runner, ran)
        self.fns = (_timed(self.fns[0], clock, kernel_cost),
                    _timed(self.fns[1], clock, engine_cost))
        self.ran = None  # every engine call counts (whether the helper was free or not)

    monkeypatch.setattr(streaming._Tuner, "__init__", init)
    return layer.stream()


def _calls_to_decide():
    """Calls a tuner takes to keep an engine: blocks of TUNE_BLOCK per
    engine in turn, the first call of each not timed."""
    # the batch engine's last sample: block 2b + 1, after the untimed first
    b, r = divmod(streaming.TUNE_SAMPLES - 1, streaming.TUNE_BLOCK - 1)
    return (2 * b + 1) * streaming.TUNE_BLOCK + 2 + r


def _stack_cells(kind, H):
    """A stack's cells: every layer split (``"stack"``), or one the panel
    split does not run (``"stack_generic"``: the batch engine's frames are
    then a pool launch each)."""
    return [fastrnn.LSTMCell(H), fastrnn.GRUCell(H, reset_after=kind == "stack")]


@pytest.mark.parametrize("kind", ["lstm", "gru", "stack", "stack_generic"])
@pytest.mark.parametrize("engine_wins", [True, False])
def test_stream_keeps_the_faster_engine(monkeypatch, rng, kind, engine_wins):
    n = _calls_to_decide()
    n_frames, n_chunks, C = n + 3, n + 2, 3
    T, D, H = n_frames + n_chunks * C, 11, 37
    if kind.startswith("stack"):  # every layer split in turn, one helper thread
        layer = fastrnn.RNN(_stack_cells(kind, H), return_sequences=True)
    else:  # one layer: the frame split with the stream's own helper thread
        layer = (fastrnn.LSTM if kind == "lstm" else fastrnn.GRU)(H, return_sequences=True)
    layer.build((1, None, D))
    layer.set_weights([rng.uniform(-0.4, 0.4, w.shape).astype(np.float32)
                       for w in layer.get_weights()])
    stream = _stream_with_costs(monkeypatch, layer, 1.0, 0.5 if engine_wins else 2.0)
    assert stream.threads is None and "frames: timing" in stream.backend_reason
    x = rng.standard_normal((1, T, D)).astype(np.float32)
    frames = [stream(x[:, t]) for t in range(n - 1)]
    assert stream.threads is None
    frames += [stream(x[:, t]) for t in range(n - 1, n_frames)]
    winner = "the cpu batch engine" if engine_wins else "the stream kernels"
    if engine_wins:
        # (the batch engine splits no frame of the small generic stack at
        # batch 1: its frames run on one thread)
        threads = 1 if kind == "stack_generic" else 2
        assert stream.backend == "cpu" and stream.threads == threads
        assert ("panel split on 2 threads" in stream.backend_reason) == (kind != "stack_generic")
    else:
        assert stream.backend == "stream" and stream.threads == 1
    assert f"frames: {winner}" in stream.backend_reason
    assert "chunks: timing" in stream.backend_reason
    chunks = [stream(x[:, t:t + C]) for t in range(n_frames, T, C)]
    assert f"chunks: {winner}" in stream.backend_reason
    if kind.startswith("stack"):
        ref = fastrnn.RNN(_stack_cells(kind, H), return_sequences=True, backend="reference",
                          dtype="float64")
        ref.build((1, None, D))
    else:
        ref = (fastrnn.LSTM if kind == "lstm" else fastrnn.GRU)(
            H, return_sequences=True, backend="reference", dtype="float64")
    ref.set_weights([w.astype(np.float64) for w in layer.get_weights()])
    want = ref(x.astype(np.float64))
    got = np.concatenate([np.stack(frames, axis=1)] + chunks, axis=1)
    np.testing.assert_allclose(got, want, atol=2e-5)


@pytest.mark.parametrize("kind", ["gru", "stack", "stack_generic"])
def test_streams_time_their_engines_again(monkeypatch, rng, kind):
    """A stream times both engines again RETUNE_CALLS calls after keeping
    one: a stream whose first calls found the stream kernels faster (a
    busy machine) moves to the batch engine once that is faster, and back;
    the interval starts over when the other engine wins and doubles when
    the same one does. A stack the panel split does not run, whose chunks
    ran on the batch engine (which leaves the stream kernels' work array as
    it was), sizes it again for
    chunks longer than any the stream kernels ran. The outputs follow the
    reference across every switch."""
    every = 30
    monkeypatch.setattr(streaming, "RETUNE_CALLS", every)
    clock = _Clock()
    monkeypatch.setattr(streaming, "time", clock)
    monkeypatch.setattr(streaming, "TUNE_MIN_BYTES", 0)
    costs = [1.0, 2.0]  # per call: the stream kernels, the batch engine
    real = streaming._Tuner.__init__

    def init(self, stream, which, kernel, runner, ran=None):
        real(self, stream, which, kernel, runner, ran)
        fns = self.fns

        def timed(k):
            def run(*args):
                clock.now += costs[k]
                return fns[k](*args)
            return run

        self.fns = (timed(0), timed(1))
        self.ran = None

    monkeypatch.setattr(streaming._Tuner, "__init__", init)
    D, H = 11, 37
    if kind.startswith("stack"):
        layer = fastrnn.RNN(_stack_cells(kind, H), return_sequences=True)
    else:
        layer = fastrnn.GRU(H, return_sequences=True)
    layer.build((1, None, D))
    layer.set_weights([rng.uniform(-0.4, 0.4, w.shape).astype(np.float32)
                       for w in layer.get_weights()])
    stream = layer.stream()
    n = _calls_to_decide()
    x = rng.standard_normal((1, 3 * n + 2 * every + 3 * n + 5 * (every + n), D)) \
        .astype(np.float32)
    got, t = [], 0

    def frames(count):
        nonlocal t
        got.extend(stream(np.ascontiguousarray(x[:, t + i]))[:, None] for i in range(count))
        t += count

    def chunks(count, C):
        nonlocal t
        got.extend(stream(x[:, t + C * i:t + C * (i + 1)]) for i in range(count))
        t += count * C

    frames(n - 1)
    assert stream.threads is None
    frames(1)
    assert stream.backend == "stream" and stream._retune_every["frame"] == every
    costs[1] = 0.5  # the machine is quiet now: the batch engine is faster
    frames(every - 1)
    assert stream.backend == "stream"
    frames(1 + n)  # the last call of the interval, then a timing round
    assert stream.backend == "cpu" and stream._retune_every["frame"] == every
    frames(every + n)  # the same engine wins again: the interval doubles
    assert stream.backend == "cpu" and stream._retune_every["frame"] == 2 * every
    chunks(n, 3)
    assert "chunks: the cpu batch engine" in stream.backend_reason
    chunks(every, 5)  # a longer chunk than the stream kernels have run
    costs[1] = 2.0
    chunks(n, 5)
    assert "chunks: the stream kernels" in stream.backend_reason
    assert stream._retune_every["chunk"] == every
    if kind.startswith("stack"):
        ref = fastrnn.RNN(_stack_cells(kind, H), return_sequences=True, backend="reference",
                          dtype="float64")
        ref.build((1, None, D))
    else:
        ref = fastrnn.GRU(H, return_sequences=True, backend="reference", dtype="float64")
    ref.set_weights([w.astype(np.float64) for w in layer.get_weights()])
    want = ref(x[:, :t].astype(np.float64))
    np.testing.assert_allclose(np.concatenate(got, axis=1), want, atol=5e-5)
    gone = weakref.ref(stream)
    stream = None
    assert gone() is None  # nothing it holds refers back to it (its helper stops with it)


def test_small_weights_and_float64_are_not_timed(rng):
    small = fastrnn.LSTM(16)
    small.build((1, None, 8))
    s = small.stream()
    assert s.backend == "stream" and s.threads == 1
    wide = fastrnn.GRU(16, dtype="float64")
    wide.build((1, None, 8))
    assert wide.stream().threads == 1


@pytest.mark.parametrize("kind", ["lstm", "stack", "stack_generic"])
@pytest.mark.parametrize("threads", [1, 2])
def test_a_stream_keeps_the_engine_named_by_threads(monkeypatch, rng, kind, threads):
    """threads=1 keeps every call on the one-core stream kernels, threads=2
    on the batch engine (the stream's own split where it runs the layer),
    whatever the weights' size, and neither is ever timed: frames and
    chunks across many more calls than a timing round waits for give the
    reference's numbers, on the engine named. threads=2 of a stack the
    panel split does not run, whose frames the batch engine runs on one
    thread at batch 1, is a ValueError."""
    monkeypatch.setattr(streaming, "RETUNE_CALLS", 2)
    timed = []
    monkeypatch.setattr(streaming._Tuner, "__init__",
                        lambda *a, **k: timed.append(1) or pytest.fail("timed"))
    D, H = 7, 35
    layer = (fastrnn.LSTM(H, return_sequences=True) if kind == "lstm" else
             fastrnn.RNN(_stack_cells(kind, H), return_sequences=True))
    _random_weights(layer, D, rng)  # (small: a stream made with None would not time them)
    if kind == "stack_generic" and threads == 2:
        with pytest.raises(ValueError, match="threads=2: every frame of this stack would run "
                                             "on one thread at batch_size=1"):
            layer.stream(threads=threads)
        return
    stream = layer.stream(threads=threads)
    assert stream.backend == ("stream" if threads == 1 else "cpu")
    assert f"threads={threads} was requested" in stream.backend_reason
    split = kind != "stack_generic" and threads == 2
    assert stream.threads == (2 if split else 1)
    assert bool(stream._splits) == split
    x = rng.standard_normal((1, 40, D)).astype(np.float32)
    if kind == "lstm":
        ref = fastrnn.LSTM(H, return_sequences=True, backend="reference", dtype="float64")
    else:
        ref = fastrnn.RNN(_stack_cells(kind, H), return_sequences=True, backend="reference",
                          dtype="float64")
        ref.build((1, None, D))
    ref.set_weights([w.astype(np.float64) for w in layer.get_weights()])
    want = ref(x.astype(np.float64))
    got = [stream(np.ascontiguousarray(x[:, t])) for t in range(30)]
    got.append(stream(x[:, 30:]))  # a chunk
    got = np.concatenate([g[:, None] if g.ndim == 2 else g for g in got], axis=1)
    np.testing.assert_allclose(got, want, atol=3e-5)
    assert timed == [] and stream.backend == ("stream" if threads == 1 else "cpu")


def test_threads_the_stream_cannot_use_is_an_error(rng):
    layer = fastrnn.GRU(12)
    layer.build((1, None, 5))
    for bad in (0, 3, True, "2", 2.0):
        with pytest.raises(ValueError, match="threads: expected None, 1 or 2"):
            layer.stream(threads=bad)
    wide = fastrnn.GRU(12, dtype="float64")
    wide.build((1, None, 5))
    assert wide.stream(threads=1).threads == 1
    with pytest.raises(ValueError, match="threads=2: .*float32.*float64"):
        wide.stream(threads=2)
    for n in (1, 2):
        with pytest.raises(ValueError, match=f"threads={n}: the stream kernels do not run"):
            layer.stream(threads=n, backend="reference")
    unbuilt = fastrnn.LSTM(6, dtype="float64").stream(threads=2)  # checked when built
    with pytest.raises(ValueError, match="threads=2"):
        unbuilt(np.zeros((1, 3)))


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


# ----- a one-layer stream's frames on two cores (cpu.stream_split) -----

def _frame_layer(rng, kind, D, H, mode=None):
    return _random_weights((fastrnn.LSTM if kind == "lstm" else fastrnn.GRU)(H), D, rng, mode)


def _random_weights(layer, D, rng, mode=None):
    """``layer`` built for ``D`` features, with random weights (``mode``:
    then quantized)."""
    layer.build((1, None, D))
    layer.set_weights([rng.uniform(-0.4, 0.4, w.shape).astype(np.float32)
                       for w in layer.get_weights()])
    if mode is not None:
        layer.quantize(mode)
    return layer


def _reference_frames(layer, x, states):
    """The ``reference`` backend's outputs for frames ``x (B, T, D)`` from
    ``states``, with the layer's (dequantized) weights."""
    ref = type(layer)(layer.units, return_sequences=True, backend="reference",
                      dtype="float64")
    ref.set_weights([w.astype(np.float64) for w in layer.get_weights()])
    return ref(x.astype(np.float64), initial_state=[s.astype(np.float64) for s in states])


def _split_of(layer, B, rng, steps=1, sequences=False):
    from fastrnn import _engine
    cpu = dispatch.backend_module("cpu")
    w = _engine.snapshot(layer.cells)[0]
    states = [rng.standard_normal((B, layer.units)).astype(np.float32)
              for _ in range(2 if isinstance(layer, fastrnn.LSTM) else 1)]
    split = cpu.stream_split(w.packed(cpu), B, *states, steps=steps, sequences=sequences)
    assert split is not None
    return split, states


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("mode", [None, "int8", "bfloat16"])
@pytest.mark.parametrize("steps", [1, 4])
def test_stream_split_matches_the_reference(rng, kind, mode, steps):
    """Frames, and chunks of 4 steps (every step's output kept), through
    the split, helper thread rung or not (whichever the machine gives), at
    odd sizes and batch 3 (batch 1 for chunks: input sums hoisted): the
    reference's numbers."""
    B, T, D, H = (3, 9, 12, 37) if steps == 1 else (1, 12, 12, 37)
    layer = _frame_layer(rng, kind, D, H, mode)
    split, states = _split_of(layer, B, rng, steps, sequences=steps > 1)
    x = rng.standard_normal((B, T, D)).astype(np.float32)
    want = _reference_frames(layer, x, states)
    got = []
    y = np.full((B, H), np.nan, np.float32)  # (frames: the new h goes here too)
    for t in range(0, T, steps):
        split.run(np.ascontiguousarray(x[:, t:t + steps]), y=y if steps == 1 else None)
        got.append(split.args[4][5].copy() if steps > 1 else states[0][:, None].copy())
        np.testing.assert_allclose(got[-1][:, -1], states[0])
        if steps == 1:
            np.testing.assert_array_equal(y, states[0])
    split.close()
    tol = 2e-5 if mode is None else 1e-4
    np.testing.assert_allclose(np.concatenate(got, axis=1), want, atol=tol)



@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("mode", ["int8_dynamic", "bfloat16_dynamic"])
@pytest.mark.parametrize("steps", [1, 4])
def test_stream_split_dynamic_formats_match_the_reference(rng, kind, mode, steps):
    """The dynamic formats through the split: each call's input quantized
    (or rounded) into the split's buffer, at an odd input size (padded to
    4, or to 2), against the reference run on the same quantized weights
    over the whole sequence. Bounds as the dynamic batch kernels'
    (test_quantized): the first step to float32 rounding; later a value on
    a rounding edge of the state may round one step apart."""
    from fastrnn import _engine
    from fastrnn.kernels import reference, run as run_kernel

    B, T, D, H = (3, 9, 13, 37) if steps == 1 else (1, 12, 13, 37)
    layer = _frame_layer(rng, kind, D, H, mode)
    split, states = _split_of(layer, B, rng, steps, sequences=steps > 1)
    params = _engine.snapshot(layer.cells)[0].params
    x = rng.standard_normal((B, T, D)).astype(np.float32)
    x[0, 2] = 0.0  # a zero input row: scale 0
    want = np.empty((B, T, H), np.float32)
    run_kernel(reference, reference.pack(params), x, [s.copy() for s in states], None, False,
               False, want, [np.empty_like(s) for s in states])
    got = []
    y = np.full((B, H), np.nan, np.float32)
    for t in range(0, T, steps):
        split.run(np.ascontiguousarray(x[:, t:t + steps]), y=y if steps == 1 else None)
        got.append(split.args[4][5].copy() if steps > 1 else y[:, None].copy())
    split.close()
    got = np.concatenate(got, axis=1)
    np.testing.assert_allclose(got[:, 0], want[:, 0], rtol=1e-4, atol=3e-5)
    err = np.abs(got - want)
    assert err.max() < 2e-3 and err.mean() < 2e-5, (err.max(), err.mean())

@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_stream_split_in_a_forked_child(rng):
    """A split whose helper thread runs in the parent starts a helper of its
    own in a forked child (the parent's thread is not there), which shares
    the child's frames: the reference's numbers on both sides."""
    import signal

    from fastrnn.kernels.cpu import threads as th

    B, T, D, H = 1, 8, 10, 40
    layer = _frame_layer(rng, "gru", D, H)
    split, states = _split_of(layer, B, rng)
    x = rng.standard_normal((B, T, D)).astype(np.float32)
    want = _reference_frames(layer, x, states)
    for t in range(3):
        split.run(np.ascontiguousarray(x[:, t:t + 1]))
    assert split._pid == os.getpid()  # (the helper started here)
    pid = os.fork()
    if pid == 0:  # the child: exit 0 when every check holds, 1 otherwise
        ok = False
        try:
            signal.alarm(60)
            helped = []
            for t in range(3, T):
                while not split.ready():  # (a new helper, not yet there)
                    pass
                helped.append(split.run(np.ascontiguousarray(x[:, t:t + 1]), True))
                np.testing.assert_allclose(states[0], want[:, t], atol=2e-5)
            ok = split._pid == os.getpid() == th._PID and min(helped) >= 0
        finally:
            os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    for t in range(3, T):  # the parent's helper carries on
        split.run(np.ascontiguousarray(x[:, t:t + 1]))
    split.close()
    np.testing.assert_allclose(states[0], want[:, -1], atol=2e-5)


def test_stream_helper_runs_a_whole_frame_and_stops(rng):
    """The helper thread answers a ring made before it first ran, runs every
    panel of a frame the caller has not claimed (here: all of them, the
    caller starting after it finished), says so, and leaves when told to
    stop."""
    import threading

    from fastrnn.kernels.cpu import split as sp
    from fastrnn.kernels.cpu import threads as th

    B, D, H = 1, 6, 40
    layer = _frame_layer(rng, "lstm", D, H)
    fs, states = _split_of(layer, B, rng)
    x = rng.standard_normal((B, 1, D)).astype(np.float32)
    want = _reference_frames(layer, x, states)[:, 0]
    gru, H_, weights, gates, io, opts = fs.args
    io[0][...] = x
    sp.load_state(gru, 0, B, H, fs.hf.size // (2 * B), io[1], io[2], fs.hf, fs.cb)
    sync = fs.sync
    sync[:] = 0
    sync[sp.SPINS], sync[sp.CHUNK], sync[sp.JOIN] = fs.spins, fs.chunk, -1
    bell = np.zeros(sp.BELL_SIZE, np.int64)
    frames = np.zeros(8, np.int64)
    helper = threading.Thread(target=sp.stream_helper,
                              args=(bell, frames, 0, ((sync,) + fs.args + (fs.hf, fs.cb, fs.P),)))
    bell[sp.BELL_GEN] = 1  # rung before its thread first runs: it must still answer
    helper.start()
    helper.join(timeout=0.05)
    for _ in range(2000):  # until the helper says it finished frame 1
        if bell[sp.BELL_ACK] == 1:
            break
        helper.join(timeout=0.005)
    assert bell[sp.BELL_ACK] == 1
    NP = (H + 15) // 16
    assert sync[sp.COUNT + 8] == NP and sync[sp.COUNT] == 0
    sp.split_work(0, sync, *fs.args, fs.hf, fs.cb, fs.P)  # nothing left to claim
    sp.store_state(gru, 0, B, 1, H, fs.hf.size // (2 * B), fs.hf, fs.cb, io[7], io[8])
    np.testing.assert_allclose(states[0], want, atol=2e-5)
    # asleep now (spins=0): a second ring wakes it, and it runs that frame
    for _ in range(2000):
        if bell[sp.BELL_SLEEPERS] == 1:
            break
        helper.join(timeout=0.005)
    assert bell[sp.BELL_SLEEPERS] == 1
    sync[:] = 0
    sync[sp.SPINS], sync[sp.CHUNK], sync[sp.JOIN] = fs.spins, fs.chunk, -1
    bell[sp.BELL_GEN] = 2
    sp.wake(bell)
    for _ in range(2000):
        if bell[sp.BELL_ACK] == 2:
            break
        helper.join(timeout=0.005)
    assert bell[sp.BELL_ACK] == 2 and sync[sp.COUNT + 8] == NP
    th._stop_helper(bell, helper)
    assert not helper.is_alive()


def _calls_not_shared(split, x, monkeypatch):
    """Steps 0-2 of ``x`` through ``split`` (a stream or stack split, no
    helper thread started) while its "helper" is still on call 5, then
    while the machine looks busy, then with one thread allowed: none is
    rung (the bell stays at call 5)."""
    import os

    from fastrnn.kernels.cpu import split as sp
    from fastrnn.kernels.cpu import threads as th

    split._pid = os.getpid()  # no helper thread is started
    split.bell[sp.BELL_GEN], split.bell[sp.BELL_ACK] = 5, 4  # it has finished call 4 only
    got = [split.run(np.ascontiguousarray(x[:, 0:1]))]
    split.bell[sp.BELL_ACK] = 5
    monkeypatch.setattr(th, "_contended_until", float("inf"))
    got.append(split.run(np.ascontiguousarray(x[:, 1:2])))
    monkeypatch.setattr(th, "_contended_until", 0.0)
    dispatch.set_num_threads(1)
    try:
        got.append(split.run(np.ascontiguousarray(x[:, 2:3])))
    finally:
        dispatch.set_num_threads(None)
    assert got == [-1, -1, -1] and split.bell[sp.BELL_GEN] == 5


def test_stream_split_runs_alone_while_the_helper_is_busy_or_the_machine_is(rng, monkeypatch):
    """A helper still inside its last frame (it has not said it finished) is
    not rung: the frame runs alone on the second sync array, and the first
    one is left as the helper sees it. Likewise while the machine looks
    busy, or with one thread allowed."""
    from fastrnn.kernels.cpu import split as sp

    B, T, D, H = 2, 5, 7, 33
    layer = _frame_layer(rng, "gru", D, H)
    fs, states = _split_of(layer, B, rng)
    x = rng.standard_normal((B, T, D)).astype(np.float32)
    want = _reference_frames(layer, x, states)
    fs.sync[:] = 7
    _calls_not_shared(fs, x, monkeypatch)
    assert (fs.sync == 7).all()
    # rung now (no thread: the caller does all), and not again, since no
    # helper says it finished that frame
    assert [fs.run(np.ascontiguousarray(x[:, t:t + 1])) for t in range(3, T)] == \
        [0] + [-1] * (T - 4)
    assert fs.bell[sp.BELL_GEN] == 6
    np.testing.assert_allclose(states[0], want[:, -1], atol=2e-5)


def test_stream_split_is_not_offered_where_it_cannot_run(rng):
    cpu = dispatch.backend_module("cpu")
    from fastrnn import _engine

    def offered(layer, B=1):
        w = _engine.snapshot(layer.cells)[0]
        n = 2 if isinstance(layer, fastrnn.LSTM) else 1
        return cpu.stream_split(w.packed(cpu), B, *[np.zeros((B, layer.units), np.float32)
                                                   for _ in range(n)]) is not None

    assert offered(_frame_layer(rng, "lstm", 8, 40))
    assert not offered(_frame_layer(rng, "lstm", 8, 40), B=8)  # rows split instead
    assert not offered(_frame_layer(rng, "lstm", 8, 16))  # one panel
    assert offered(_frame_layer(rng, "gru", 8, 40, "int8_dynamic"))  # input quantized per call
    assert not offered(_frame_layer(rng, "gru", 9, 40, "bfloat16"))  # odd input size
    g = fastrnn.GRU(40, reset_after=False)
    g.build((1, None, 8))
    assert not offered(g)  # generic kernels


@pytest.mark.parametrize("sequences", [False, True])
def test_split_stream_compiles_its_fallback_kernels_when_set_up(rng, monkeypatch, sequences):
    """A stream that keeps the split (``threads=2``) compiles, when it is set
    up, the one-core stream kernels that run the calls its helper cannot
    share, for the argument types those calls pass: nothing else calls them,
    and the first such call (the machine turned busy) would otherwise
    compile or load them, several milliseconds."""
    from numba import typeof

    from fastrnn.kernels.cpu import threads as th

    kernels = dispatch.backend_module("cpu").stream
    compiled, called = [], []

    class Recording:  # a kernel dispatcher that notes what is compiled and called
        def __init__(self, name):
            self.name, self.fn = name, getattr(kernels, name)

        def compile(self, sig):
            compiled.append((self.name, tuple(sig)))
            return self.fn.compile(sig)

        def __call__(self, *args):
            called.append((self.name, tuple(typeof(a) for a in args)))
            return self.fn(*args)

    for name in ("frame", "chunk_seq", "chunk_last"):
        monkeypatch.setattr(kernels, name, Recording(name))
    T, D, H = 5, 10, 35
    layer = _frame_layer(rng, "lstm", D, H)
    layer.return_sequences = sequences
    stream = layer.stream(threads=2)
    x = rng.standard_normal((1, T, D)).astype(np.float32)
    stream(np.ascontiguousarray(x[:, 0]))  # (set up, on the split)
    assert called == []
    chunk = "chunk_seq" if sequences else "chunk_last"
    assert {n for n, _ in compiled} == {"frame", chunk}
    monkeypatch.setattr(th, "get_num_threads", lambda: 1)  # no call can be shared now
    stream(np.ascontiguousarray(x[:, 1]))
    stream(np.ascontiguousarray(x[:, 2:]))
    assert [n for n, _ in called] == ["frame", chunk]
    assert all(c in compiled for c in called), (called, compiled)


def test_split_frames_fall_back_to_the_stream_kernel(rng, monkeypatch):
    """A stream that kept the frame split runs a frame the helper cannot
    share (the machine looks busy) on its one-core stream kernel: the state
    carries across both, and the helper is not rung."""
    from fastrnn.kernels.cpu import split as sp
    from fastrnn.kernels.cpu import threads as th

    T, D, H = 8, 10, 35
    layer = _frame_layer(rng, "lstm", D, H)
    stream = _stream_with_costs(monkeypatch, layer, 1.0, 0.5)
    stream._keep("frame", 1, (1.0, 0.5))
    fs = stream._splits["frame"]._split(1)
    x = rng.standard_normal((1, T, D)).astype(np.float32)
    want = _reference_frames(layer, x, [np.zeros((1, H), np.float32)] * 2)
    got = []
    for t in range(T):
        busy = t % 3 == 1
        monkeypatch.setattr(th, "_contended_until", float("inf") if busy else 0.0)
        gen = int(fs.bell[sp.BELL_GEN])
        got.append(stream(np.ascontiguousarray(x[:, t])))
        if busy:
            assert fs.bell[sp.BELL_GEN] == gen
        else:  # rung, unless the helper was still leaving its last frame
            assert fs.bell[sp.BELL_GEN] in (gen, gen + 1)
    np.testing.assert_allclose(np.stack(got, axis=1), want, atol=2e-5)


@pytest.mark.parametrize("sequences", [True, False])
def test_split_chunks_of_changing_lengths(rng, monkeypatch, sequences):
    """Chunks of a one-layer stream that kept the split: each length gets a
    split of its own, the two used last kept (the others' helpers stopped),
    and frames and chunks carry one state: the reference's numbers."""
    D, H = 6, 33
    lengths = [2, 3, 2, 5, 2, 1, 3, 3]
    T = sum(lengths)
    layer = fastrnn.GRU(H, return_sequences=sequences)
    layer.build((1, None, D))
    layer.set_weights([rng.uniform(-0.4, 0.4, w.shape).astype(np.float32)
                       for w in layer.get_weights()])
    stream = _stream_with_costs(monkeypatch, layer, 1.0, 0.5)
    stream._keep("frame", 1, (1.0, 0.5))
    stream._keep("chunk", 1, (1.0, 0.5))
    x = rng.standard_normal((1, T, D)).astype(np.float32)
    want = _reference_frames(layer, x, [np.zeros((1, H), np.float32)])
    got, t = [], 0
    for i, n in enumerate(lengths):
        y = stream(x[:, t] if n == 1 else x[:, t:t + n])
        if i == 0:
            first_two = stream._splits["chunk"].splits[2]
        got.append(y[:, None] if n == 1 or not sequences else y)
        if not sequences:
            np.testing.assert_allclose(y, want[:, t + n - 1], atol=2e-5)
        t += n
    chunks = stream._splits["chunk"].splits
    # 2, 3; 2 used again; 5 evicts 3 (not 2, added first); 3 evicts 5
    assert sorted(chunks) == [2, 3]
    assert chunks[2] is first_two
    if sequences:
        np.testing.assert_allclose(np.concatenate(got, axis=1), want, atol=2e-5)


@pytest.mark.skipif(not hasattr(__import__("os"), "sched_setaffinity"),
                    reason="thread affinity is Linux's")
def test_stream_split_helper_starts_off_the_callers_cpu(rng):
    """The helper thread may use every CPU the process may but the one its
    caller was on (a new thread may start beside its creator and stay)."""
    import os

    layer = _frame_layer(rng, "lstm", 8, 40)
    fs, _ = _split_of(layer, 1, rng)
    allowed = os.sched_getaffinity(0)
    if len(allowed) < 2:
        pytest.skip("the process may use one CPU only")
    fs.run(rng.standard_normal((1, 1, 8)).astype(np.float32))
    if fs._tid is None:
        pytest.skip("the helper was not started (the machine looked busy)")
    assert len(fs._placed) == len(allowed) - 1 and fs._placed < allowed
    assert os.sched_getaffinity(fs._tid) == fs._placed
    fs.close()


def test_tuning_counts_only_calls_that_ran_on_two_cores(monkeypatch, rng):
    """Calls a stream split ran on the stream kernel (the machine looked
    busy) are not timed as the split's; when none ran on two cores, the
    stream keeps the stream kernels after TUNE_MAX_CALLS calls and says
    why."""
    from fastrnn.kernels.cpu import threads as th

    D, H = 7, 40
    layer = _frame_layer(rng, "gru", D, H)
    clock = _Clock()
    monkeypatch.setattr(streaming, "time", clock)
    monkeypatch.setattr(streaming, "TUNE_MIN_BYTES", 0)
    stream = layer.stream()
    tuner = stream._frame_fn.__self__
    tuner.fns = (_timed(tuner.fns[0], clock, 1.0), _timed(tuner.fns[1], clock, 0.5))
    monkeypatch.setattr(th, "_contended_until", float("inf"))  # every split call: the kernel
    x = rng.standard_normal((1, streaming.TUNE_MAX_CALLS, D)).astype(np.float32)
    want = _reference_frames(layer, x, [np.zeros((1, H), np.float32)])
    got = [stream(np.ascontiguousarray(x[:, t])) for t in range(streaming.TUNE_MAX_CALLS)]
    assert tuner.times[1] == [] and len(tuner.times[0]) >= streaming.TUNE_SAMPLES
    assert stream.backend == "stream" and stream.threads == 1
    assert "no call ran on two cores" in stream.backend_reason
    np.testing.assert_allclose(np.stack(got, axis=1), want, atol=2e-5)


def test_stream_split_places_a_woken_helper_again(rng, monkeypatch):
    """A call that had to wake its helper checks the helper's placement
    (the caller may have moved onto the helper's CPU, where the helper's
    spinning after each call held it back); a call that found it awake
    does not (that check waits for every _PLACE_EVERY-th call)."""
    from fastrnn.kernels.cpu import split as sp
    from fastrnn.kernels.cpu import threads as th

    fs, _ = _split_of(_frame_layer(rng, "lstm", 8, 64), 1, rng)
    placed = []
    monkeypatch.setattr(fs, "_place", lambda: placed.append(fs._calls))
    sync = np.zeros(sp.SYNC_SIZE, np.int64)
    sync[sp.COUNT + 8], sync[sp.JOIN] = 2, 0  # the helper's whole share
    awake, woken = (sp.outcome(r, sync, fs.NP, 1, th._STARVED) for r in (1, 2))
    for _ in range(3):
        assert fs._judge(awake) == 2
    assert placed == []
    assert fs._judge(woken) == 2
    assert placed == [4]
    fs._calls = th._PLACE_EVERY - 1
    fs._judge(awake)
    assert placed == [4, th._PLACE_EVERY]


def test_stream_split_contention_rule(rng, monkeypatch):
    """Only a run of starved calls (helper awake, under half its share), or
    one the caller had to take over, makes the machine look busy to a
    stream split, for a pause that doubles while it lasts; a woken
    helper's late start tells nothing; a clean call ends the run. (Each
    call's counters go through the kernels' own summary, split.outcome.)"""
    from fastrnn.kernels.cpu import split as sp
    from fastrnn.kernels.cpu import threads as th

    class Clock:
        now = 100.0

        def monotonic(self):
            return self.now

    clock = Clock()
    monkeypatch.setattr(th, "time", clock)
    monkeypatch.setattr(th, "_contended_until", 0.0)  # (the batch engine's, on this clock)
    layer = _frame_layer(rng, "lstm", 8, 64)  # 4 panels: the helper's share is 2
    fs, _ = _split_of(layer, 1, rng)

    def judge(rung, helper, joined, abandoned):
        sync = np.zeros(sp.SYNC_SIZE, np.int64)
        sync[sp.COUNT + 8], sync[sp.JOIN], sync[sp.ABANDON] = helper, joined, abandoned
        return fs._judge(sp.outcome(rung, sync, fs.NP, 1, th._STARVED))

    run, pause = th._STREAM_STARVED_RUN, th._STREAM_PAUSE
    for _ in range(run - 1):
        assert judge(1, 0, 0, False) == 0
    assert fs.ready()
    judge(2, 0, 0, False)  # woken: not judged
    judge(1, 0, 0, False)
    assert not fs.ready() and fs._busy_until == 100.0 + pause
    clock.now += pause
    assert fs.ready()
    for _ in range(run):
        judge(1, 0, 0, False)
    assert fs._busy_until == clock.now + 2 * pause  # doubled: still busy
    clock.now += 2 * pause
    assert judge(1, 2, 0, False) == 2  # clean: the pause starts again from the shortest
    assert judge(1, 2, 0, True) == 2  # the caller took over: busy at once
    assert fs._busy_until == clock.now + pause and not fs.ready()
    assert judge(0, 2, 0, False) == -1  # not rung
    assert not th._contended()  # the batch engine's rule is not touched


def test_split_stream_takes_new_weights(rng, monkeypatch):
    """set_weights on a stream that kept the split: its helpers (on the old
    weights) stop, the next frames use the new weights from the carried
    state."""
    D, H = 9, 36
    layer = _frame_layer(rng, "lstm", D, H)
    stream = _stream_with_costs(monkeypatch, layer, 1.0, 0.5)
    stream._keep("frame", 1, (1.0, 0.5))
    old_split = stream._splits["frame"]._split(1)
    x = rng.standard_normal((1, 6, D)).astype(np.float32)
    first = [stream(np.ascontiguousarray(x[:, t])) for t in range(3)]
    states = [s.copy() for s in stream.states]
    want_first = _reference_frames(layer, x[:, :3], [np.zeros((1, H), np.float32)] * 2)
    layer.set_weights([rng.uniform(-0.4, 0.4, w.shape).astype(np.float32)
                       for w in layer.get_weights()])
    stream._keep = lambda which, engine, fastest: None  # (keep timing out of the way)
    second = [stream(np.ascontiguousarray(x[:, t])) for t in range(3, 6)]
    assert old_split._tid is None or old_split._finalizer is None or \
        not old_split._finalizer.alive
    want_second = _reference_frames(layer, x[:, 3:], states)
    np.testing.assert_allclose(np.stack(first, axis=1), want_first, atol=2e-5)
    np.testing.assert_allclose(np.stack(second, axis=1), want_second, atol=2e-5)


# ----- a stack's calls on two cores (cpu.stack_split) -----

def _stack(rng, D, sizes=(37, 45, 33), mode=None):
    """LSTM, GRU, LSTM: random weights (``mode``: every layer quantized)."""
    cells = [fastrnn.LSTMCell(sizes[0]), fastrnn.GRUCell(sizes[1]), fastrnn.LSTMCell(sizes[2])]
    return _random_weights(fastrnn.RNN(cells, return_sequences=True), D, rng, mode)


def _stack_split_of(layer, B, rng, steps=1, sequences=False):
    """The layer's stack split and its per-layer ``(h, c)`` states (random)."""
    from fastrnn import _engine
    cpu = dispatch.backend_module("cpu")
    packs = [w.packed(cpu) for w in _engine.snapshot(layer.cells)]
    states = [(rng.standard_normal((B, c.units)).astype(np.float32),
               rng.standard_normal((B, c.units)).astype(np.float32)
               if isinstance(c, fastrnn.LSTMCell) else None) for c in layer.cells]
    split = cpu.stack_split(packs, B, states, steps=steps, sequences=sequences)
    assert split is not None
    return split, states


def _reference_stack(layer, x, states):
    """The ``reference`` backend's outputs of the stack for ``x`` from ``states``."""
    ref = fastrnn.RNN([type(c)(c.units) for c in layer.cells], return_sequences=True,
                      backend="reference", dtype="float64")
    ref.build((1, None, x.shape[2]))
    ref.set_weights([w.astype(np.float64) for w in layer.get_weights()])
    flat = [np.asarray(a, np.float64) for pair in states for a in pair if a is not None]
    return ref(x.astype(np.float64), initial_state=flat)


@pytest.mark.parametrize("mode", [None, "bfloat16", "int8_dynamic", "bfloat16_dynamic"])
@pytest.mark.parametrize("steps", [1, 4])
def test_stack_split_matches_the_reference(rng, mode, steps):
    """A stack's frames (and chunks, every step's output) through the stack
    split: each layer's output feeds the next; the states carry between
    calls; LSTM and GRU layers of different sizes, random initial states
    (bfloat16 weights take an even input size: the inner layers' units).
    The dynamic formats quantize (or round) each layer's input, odd sizes
    included, into that layer's buffer: against the reference run layer by
    layer on the same quantized weights, within the dynamic batch kernels'
    bounds (test_stream_split_dynamic_formats_match_the_reference)."""
    dynamic = mode is not None and mode.endswith("_dynamic")
    B, T, D = (3, 7, 12) if steps == 1 else (1, 12, 12)
    D += dynamic
    layer = _stack(rng, D, sizes=(38, 46, 33) if mode == "bfloat16" else (37, 45, 33),
                   mode=mode)
    split, states = _stack_split_of(layer, B, rng, steps, sequences=steps > 1)
    x = rng.standard_normal((B, T, D)).astype(np.float32)
    want = (_reference_stack_quantized if dynamic else _reference_stack)(layer, x, states)
    got = []
    for t in range(0, T, steps):
        split.run(np.ascontiguousarray(x[:, t:t + steps]))
        got.append(split.args[4][5].copy() if steps > 1 else states[-1][0][:, None].copy())
    split.close()
    got = np.concatenate(got, axis=1)
    if dynamic:
        err = np.abs(got - want)
        assert err.max() < 2e-3 and err.mean() < 2e-5, (err.max(), err.mean())
        return
    tol = 2e-5 if mode is None else 1e-4
    np.testing.assert_allclose(got, want, atol=tol)
    h, c = states[-1]
    np.testing.assert_allclose(h, want[:, -1], atol=tol)


@pytest.mark.parametrize("mode", ["int8_dynamic", "bfloat16_dynamic"])
def test_stacked_dynamic_stream_runs_on_two_cores(rng, mode):
    """``layer.stream(threads=2)`` of a stack in a dynamic format runs every
    layer's panel split (it used to fall back to the batch engine's
    threads), and its frames are the reference's."""
    T, D = 6, 11
    layer = _stack(rng, D, mode=mode)
    stream = layer.stream(threads=2)
    x = rng.standard_normal((1, T, D)).astype(np.float32)
    got = np.stack([stream(np.ascontiguousarray(x[:, t])) for t in range(T)], axis=1)
    assert "panel split on 2 threads" in stream.backend_reason, stream.backend_reason
    zeros = [(np.zeros((1, c.units), np.float32),
              np.zeros((1, c.units), np.float32) if isinstance(c, fastrnn.LSTMCell) else None)
             for c in layer.cells]
    err = np.abs(got - _reference_stack_quantized(layer, x, zeros))
    assert err.max() < 2e-3 and err.mean() < 2e-5, (err.max(), err.mean())


def _reference_stack_quantized(layer, x, states):
    """The ``reference`` backend's outputs of a quantized stack: each layer
    on its quantized weights (the dynamic formats: its input and state
    quantized, or rounded, at every step), the next one fed its float32
    output."""
    from fastrnn import _engine
    from fastrnn.kernels import reference, run as run_kernel

    for w, pair in zip(_engine.snapshot(layer.cells), states):
        st = [a.copy() for a in pair if a is not None]
        out = np.empty(x.shape[:2] + (w.params.units,), np.float32)
        run_kernel(reference, reference.pack(w.params), x, st, None, False, False, out,
                   [np.empty_like(a) for a in st])
        x = out
    return x


def test_stack_helper_waits_for_the_layer_before(rng):
    """The helper runs layer l only once the caller has finished layer l - 1
    and handed its output over: with a caller that has not started, it runs
    every panel of the first layer and waits; each layer handed over lets
    it run the next one whole; it says it finished the call once it has run
    the last. The
    caller then finds nothing left to claim, and the result is the
    reference's."""
    import threading

    from fastrnn.kernels.cpu import split as sp
    from fastrnn.kernels.cpu import threads as th

    B, D = 1, 6
    layer = _stack(rng, D, sizes=(40, 36, 33))
    ss, states = _stack_split_of(layer, B, rng)
    x = rng.standard_normal((B, 1, D)).astype(np.float32)
    want = _reference_stack(layer, x, states)[:, 0]
    ss.parts[0]["xb"][...] = x
    for p in ss.parts:
        sync, gru, H, weights, gates, io, opts, hf, cb, P = p["job"]
        sp.load_state(gru, 0, B, H, hf.size // (2 * B), io[1], io[2], hf, cb)
        _, spins, chunk = p["next"][:3]
        sync[:] = 0
        sync[sp.SPINS], sync[sp.CHUNK], sync[sp.JOIN] = spins, chunk, -1
    bell = np.zeros(sp.BELL_SIZE, np.int64)
    layers = tuple(p["job"] for p in ss.parts)
    helper = threading.Thread(target=sp.stream_helper, daemon=True,
                              args=(bell, np.zeros(8, np.int64), 0, layers))
    bell[sp.BELL_GEN] = 1
    helper.start()
    try:
        _stack_call_in_steps(ss, bell, B)
    finally:
        for p in ss.parts:  # (a failed check must not leave it waiting)
            p["sync"][sp.FINISHED] = p["sync"][sp.HANDED] = 1
        th._stop_helper(bell, helper)
    assert not helper.is_alive()
    np.testing.assert_allclose(states[-1][0], want, atol=2e-5)


def _stack_call_in_steps(ss, bell, B):
    """test_stack_helper_waits_for_the_layer_before: the caller's side."""
    import time

    from fastrnn.kernels.cpu import split as sp

    def helper_panels(k):
        return int(ss.parts[k]["sync"][sp.COUNT + 8])

    for k, p in enumerate(ss.parts):
        for _ in range(2000):  # until the helper has run all of layer k
            if helper_panels(k) == p["NP"]:
                break
            time.sleep(0.002)
        assert helper_panels(k) == p["NP"]
        time.sleep(0.02)  # ... and it does not go on: the caller has not finished layer k
        assert all(helper_panels(j) == 0 for j in range(k + 1, len(ss.parts)))
        assert bell[sp.BELL_ACK] == (k == len(ss.parts) - 1)  # (all its work done after the last)
        sync, gru, H, weights, gates, io, opts, hf, cb, P = p["job"]
        sp.split_work(0, sync, gru, H, weights, gates, io, opts, hf, cb, P)  # nothing left
        assert int(sync[sp.COUNT]) == 0 and int(sync[sp.FINISHED]) == 1
        if k + 1 < len(ss.parts):  # finished, not yet handed over: the helper waits
            time.sleep(0.02)
            assert helper_panels(k + 1) == 0
        sync[sp.HANDED] = 1  # (float32: the next layer reads this one's output buffer)
        sp.store_state(gru, 0, B, 1, H, hf.size // (2 * B), hf, cb, io[7], io[8])
    assert bell[sp.BELL_ACK] == 1


def test_stack_helper_stops_while_waiting_for_a_layer(rng):
    """A helper waiting for a layer the caller never finishes (a call
    interrupted between two layers) still stops when told to."""
    import threading
    import time

    from fastrnn.kernels.cpu import split as sp
    from fastrnn.kernels.cpu import threads as th

    layer = _stack(rng, 6, sizes=(40, 36, 33))
    ss, _ = _stack_split_of(layer, 1, rng)
    for p in ss.parts:
        _, spins, chunk = p["next"][:3]
        p["sync"][:] = 0
        p["sync"][sp.SPINS], p["sync"][sp.CHUNK], p["sync"][sp.JOIN] = spins, chunk, -1
    bell = np.zeros(sp.BELL_SIZE, np.int64)
    helper = threading.Thread(target=sp.stream_helper, daemon=True,
                              args=(bell, np.zeros(8, np.int64), 0,
                                    tuple(p["job"] for p in ss.parts)))
    bell[sp.BELL_GEN] = 1
    helper.start()
    for _ in range(2000):  # it runs the first layer, then waits for the caller
        if ss.parts[0]["sync"][sp.COUNT + 8] == ss.parts[0]["NP"]:
            break
        time.sleep(0.002)
    assert ss.parts[0]["sync"][sp.COUNT + 8] == ss.parts[0]["NP"]
    th._stop_helper(bell, helper)
    assert not helper.is_alive() and bell[sp.BELL_ACK] == 0


def test_stack_split_runs_alone_while_the_helper_is_busy(rng, monkeypatch):
    """A stack call the helper cannot share (still inside its last call, the
    machine busy, one thread allowed) runs every layer alone on the solo
    array and leaves the layers' sync arrays as the helper sees them."""
    from fastrnn.kernels.cpu import split as sp

    B, T, D = 2, 4, 7
    layer = _stack(rng, D)
    ss, states = _stack_split_of(layer, B, rng)
    x = rng.standard_normal((B, T, D)).astype(np.float32)
    want = _reference_stack(layer, x, states)
    for p in ss.parts:
        p["sync"][:] = 7
    _calls_not_shared(ss, x, monkeypatch)
    assert all((p["sync"] == 7).all() for p in ss.parts)
    assert ss.run(np.ascontiguousarray(x[:, 3:4])) == 0  # rung (no thread: the caller does all)
    assert ss.bell[sp.BELL_GEN] == 6
    np.testing.assert_allclose(states[-1][0], want[:, -1], atol=2e-5)


def test_stack_split_is_not_offered_where_it_cannot_run(rng):
    from fastrnn import _engine
    cpu = dispatch.backend_module("cpu")

    def offered(layer, B=1):
        packs = [w.packed(cpu) for w in _engine.snapshot(layer.cells)]
        states = [(np.zeros((B, c.units), np.float32), np.zeros((B, c.units), np.float32))
                  for c in layer.cells]
        states = [(h, c if isinstance(cell, fastrnn.LSTMCell) else None)
                  for (h, c), cell in zip(states, layer.cells)]
        return cpu.stack_split(packs, B, states) is not None

    assert offered(_stack(rng, 8))
    assert not offered(_stack(rng, 8), B=8)  # rows split instead
    mixed = _stack(rng, 8)
    mixed.cells[1].quantize("int8")
    assert not offered(mixed)  # one weight format for every layer
    generic = fastrnn.RNN([fastrnn.LSTMCell(40), fastrnn.GRUCell(40, reset_after=False)])
    generic.build((1, None, 8))
    assert not offered(generic)


@pytest.mark.skipif(dispatch.get_num_threads() < 2, reason="one thread: no engine to time")
def test_int8_weights_count_as_the_float32_they_widen_to(monkeypatch, rng):
    """Against TUNE_MIN_BYTES, weights-only int8 counts at float32's size
    (the stream kernels widen each weight, and that arithmetic, not the
    cache, limits them), every other format as stored: with the threshold
    between bfloat16's bytes and float32's, the float32 and int8 streams
    time both engines and the bfloat16 and int8_dynamic ones do not."""
    x = rng.standard_normal((1, 3, 20)).astype(np.float32)
    layer = fastrnn.LSTM(24)
    layer(x)
    n = layer.cell.kernel.size + layer.cell.recurrent_kernel.size
    monkeypatch.setattr(streaming, "TUNE_MIN_BYTES", 3 * n)  # bfloat16: 2n, float32: 4n
    timed = {}
    for mode in ("float32", "int8", "bfloat16", "int8_dynamic"):
        copy = fastrnn.LSTM(24)
        copy(x)
        copy.set_weights(layer.get_weights())
        if mode != "float32":
            copy.quantize(mode)
        stream = copy.stream()
        timed[mode] = stream.threads is None  # None while the first frames are timed
        for t in range(3):
            stream(x[:, t])
        if mode == "int8":
            assert "(int8, counted as the float32 it widens to)" in stream.backend_reason
    assert timed == {"float32": True, "int8": True, "bfloat16": False, "int8_dynamic": False}
