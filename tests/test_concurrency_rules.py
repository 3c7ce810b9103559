"""Races the rules of weights, streams and the warm-up must survive.

Each race is made to happen, not hoped for: one thread is held at the
worst moment on an event while another acts, and every wait has a
timeout, so a bug fails a test and never hangs it. Expected values come
from separate runs with the old weights only, then the new ones only
(the ``reference`` backend, float64, for the streams).

- ``set_weights`` on an unbuilt layer while its first call builds it for
  other inputs: refused at commit, nothing changed, the call runs the
  weights it built; two ``set_weights`` of an unbuilt ``Dense`` with
  kernels for other input sizes: the first to commit wins.
- A ``threads=2`` stream given new weights while one thread is allowed:
  repacked with its state, on one core until two are allowed again; a
  repack that raises leaves the stream as it was.
- ``fastrnn.warmup`` changes no setting another thread sees.
- ``backend_reason`` after a call that raced a weight change inside a
  ``Bidirectional`` or a model.
"""

import threading

import numpy as np
import pytest

import fastrnn
from fastrnn import dispatch, kernels, models
from fastrnn._nest import flatten
from fastrnn.kernels import cpu
from fastrnn.kernels.cpu import threads as th

_WAIT = 60  # seconds one thread waits for another: a bug fails the test, never hangs it
_RUN = 900  # ... for a thread that runs kernels, which may compile first

needs_two = pytest.mark.skipif(dispatch.get_num_threads() < 2,
                               reason="a threads=2 stream needs two threads allowed")


class _Gate:
    """A point where a thread stops (``reached`` set) until ``go`` is set."""

    def __init__(self):
        self.reached, self.go = threading.Event(), threading.Event()

    def stop(self):
        self.reached.set()
        assert self.go.wait(_WAIT), "never released"


def _in_thread(fn):
    """Start ``fn()`` in a thread; returns (thread, {"value" or "error": ...})."""
    result = {}

    def run():
        try:
            result["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            result["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, result


def _weights(obj, rng, dtype=None):
    return [rng.uniform(-0.5, 0.5, w.shape).astype(dtype or w.dtype) for w in obj.get_weights()]


@pytest.fixture
def thread_settings(monkeypatch):
    """fastrnn.set_num_threads and the contention period as they were, after the test."""
    monkeypatch.setattr(th, "_max_threads", th._max_threads)
    monkeypatch.setattr(th, "_contended_until", 0.0)  # (a busy machine would skip the split)


# ------------------------------------------- set_weights racing a first call


@pytest.mark.parametrize("stacked", [False, True], ids=["lstm", "stack"])
def test_set_weights_on_an_unbuilt_layer_racing_its_first_call(stacked, rng, monkeypatch):
    """The arrays are for 6 features, checked while the layer is unbuilt;
    meanwhile a call builds it for its 4 features and checks its input.
    The commit must refuse the arrays (they no longer fit) and change
    nothing, and the call runs the weights it built."""
    H, D_weights, D_x = 8, 6, 4

    def make():
        if stacked:
            return fastrnn.RNN([fastrnn.LSTMCell(H, dtype="float64"),
                                fastrnn.GRUCell(5, dtype="float64")])
        return fastrnn.LSTM(H, dtype="float64")

    donor = make()
    donor.build((1, None, D_weights))
    arrays = _weights(donor, rng)
    x = rng.standard_normal((2, 3, D_x))
    compiled = make()  # (the kernels compiled before the race)
    compiled(x)
    layer = make()
    staged, called = _Gate(), _Gate()
    abort = []  # the call is not run where the commit went through (it would read past x)
    stage, forward = layer._stage_weights, layer._forward

    def paused_stage(weights):
        commit = stage(weights)  # (the arrays checked against the unbuilt layer)
        staged.stop()
        return commit

    def paused_forward(*args, **kwargs):  # (the layer built, x checked against it)
        called.stop()
        if abort:
            raise RuntimeError("not run: set_weights put in weights for other inputs")
        return forward(*args, **kwargs)

    monkeypatch.setattr(layer, "_stage_weights", paused_stage)
    monkeypatch.setattr(layer, "_forward", paused_forward)
    writer = reader = None
    try:
        writer, wrote = _in_thread(lambda: layer.set_weights(arrays))
        assert staged.reached.wait(_WAIT)
        reader, read = _in_thread(lambda: layer(x))
        assert called.reached.wait(_WAIT)
        built = layer.get_weights()
        staged.go.set()
        writer.join(_WAIT)
        assert not writer.is_alive()
        if "error" not in wrote:
            abort.append(True)
        assert isinstance(wrote.get("error"), ValueError), wrote
        message = str(wrote["error"])
        assert "LSTMCell.set_weights: kernel expected shape (4, 32), got (6, 32)" in message
        assert "nothing changed" in message
        assert all(np.array_equal(a, b) for a, b in zip(layer.get_weights(), built))
        called.go.set()
        reader.join(_RUN)
        assert not reader.is_alive() and "error" not in read, read
    finally:
        staged.go.set()
        called.go.set()
        for t in (writer, reader):
            if t is not None:
                t.join(_RUN)
    ref = make()
    ref.set_weights(built)
    np.testing.assert_array_equal(read["value"], ref(x))


def test_two_set_weights_on_an_unbuilt_dense(rng, monkeypatch):
    """An unbuilt Dense takes its input size from the first kernel it is
    given. One set_weights (kernel for 3 inputs) is held between its check
    and its commit while another (5 inputs) runs: the second must go
    through (nothing of the layer changed while the first checked its
    arrays), and the first's commit must then refuse its kernel."""
    dense = models.Dense(4, activation="tanh")
    first = [rng.standard_normal((3, 4)), rng.standard_normal(4)]
    second = [rng.standard_normal((5, 4)), rng.standard_normal(4)]
    staged = _Gate()
    stage = models.Layer._stage_weights

    def paused_stage(self, weights, specs=None):
        commit = stage(self, weights) if specs is None else stage(self, weights, specs)
        if threading.current_thread() is not threading.main_thread():
            staged.stop()
        return commit

    monkeypatch.setattr(models.Layer, "_stage_weights", paused_stage)
    writer = None
    try:
        writer, wrote = _in_thread(lambda: dense.set_weights(first))
        assert staged.reached.wait(_WAIT)
        dense.set_weights(second)
        staged.go.set()
        writer.join(_WAIT)
        assert not writer.is_alive()
    finally:
        staged.go.set()
        if writer is not None:
            writer.join(_WAIT)
    assert isinstance(wrote.get("error"), ValueError), wrote
    assert "Dense.set_weights: kernel expected shape (5, 4), got (3, 4)" in str(wrote["error"])
    assert dense.input_dim == 5 and dense.get_config()["input_dim"] == 5
    x = rng.standard_normal((2, 5)).astype(np.float32)
    want = np.tanh(x.astype(np.float64) @ second[0] + second[1])
    np.testing.assert_allclose(dense(x), want, rtol=1e-5, atol=1e-5)


# -------------------------------------- threads=2 streams and new weights


def _lstm(H, D, dtype="float32", **kwargs):
    layer = fastrnn.LSTM(H, dtype=dtype, **kwargs)
    layer.build((1, None, D))
    return layer


def _want(make_ref, old, new, x, switch):
    """The outputs of every step of ``x`` (float64, reference backend): the
    old weights up to step ``switch``, then the new ones from that state."""
    ref = make_ref()
    ref.set_weights([w.astype(np.float64) for w in old])
    first = ref(x[:, :switch].astype(np.float64))
    ref.set_weights([w.astype(np.float64) for w in new])
    rest = ref(x[:, switch:].astype(np.float64), initial_state=first[1:])
    return np.concatenate([first[0], rest[0]], axis=1)


@needs_two
def test_threads2_stream_repacks_while_one_thread_is_allowed(rng, thread_settings):
    """New weights reach a threads=2 stream while fastrnn.set_num_threads(1)
    holds: its next frame repacks them with its state and runs on one core
    (threads stays 2, the preference), and once two threads are allowed
    again its frames share the split with its helper."""
    D, H = 7, 35
    layer = _lstm(H, D)
    old, new = _weights(layer, rng), _weights(layer, rng)
    layer.set_weights(old)
    x = rng.standard_normal((1, 5, D)).astype(np.float32)
    frames = [np.ascontiguousarray(x[:, t]) for t in range(5)]
    stream = layer.stream(threads=2)
    got = [stream(frames[0]), stream(frames[1])]
    dispatch.set_num_threads(1)
    layer.set_weights(new)
    got.append(stream(frames[2]))
    assert (stream.backend, stream.threads) == ("cpu", 2), stream.backend_reason
    assert not stream._splits["frame"].ran  # one thread allowed: the stream kernels ran it
    got.append(stream(frames[3]))
    dispatch.set_num_threads(2)
    got.append(stream(frames[4]))
    assert stream._splits["frame"].ran  # two again: shared with the helper
    want = _want(lambda: _lstm(H, D, "float64", return_sequences=True, return_state=True,
                               backend="reference"), old, new, x, 2)
    np.testing.assert_allclose(np.stack(got, axis=1), want, atol=3e-5)


@needs_two
def test_a_repack_that_raises_leaves_the_stream_as_it_was(rng, thread_settings):
    """bfloat16 weights of an odd input size have no two-core split, so a
    threads=2 stream cannot run them: the frame after ``quantize`` raises,
    and the stream keeps its state and engine, and raises again at the next
    frame (it never runs the old weights)."""
    D, H = 7, 35
    layer = _lstm(H, D)
    layer.set_weights(_weights(layer, rng))
    x = rng.standard_normal((3, 1, D)).astype(np.float32)
    stream = layer.stream(threads=2)
    stream(x[0])
    stream(x[1])
    before = stream.states
    layer.quantize("bfloat16")
    for _ in range(2):
        with pytest.raises(ValueError, match=r"threads=2: every frame of this layer \(its "
                                             r"bfloat16 weights have an odd input size, 7.*\) "
                                             "would run on one thread"):
            stream(x[2])
        assert all(np.array_equal(a, b) for a, b in zip(stream.states, before))
        assert (stream.backend, stream.threads) == ("cpu", 2)
    with pytest.raises(ValueError, match="threads=2: every frame"):
        layer.stream(threads=2)  # (as a new stream is refused)


@needs_two
def test_threads2_model_stream_repacks_while_one_thread_is_allowed(rng, thread_settings):
    """The same for a model stream (its two LSTM layers stacked in one
    stream); then a repack that raises leaves every layer's state."""
    D, H = 7, 35
    model = fastrnn.Sequential([fastrnn.LSTM(H, return_sequences=True), fastrnn.LSTM(H)])
    model(np.zeros((1, 2, D), np.float32))
    old, new = _weights(model, rng), _weights(model, rng)
    model.set_weights(old)
    x = rng.standard_normal((1, 4, D)).astype(np.float32)
    stream = model.stream(threads=2)
    got = [stream(x[:, 0]), stream(x[:, 1])]
    dispatch.set_num_threads(1)
    model.set_weights(new)
    got.append(stream(x[:, 2]))
    assert [(s.backend, s.threads) for s in stream.streams] == [("cpu", 2)]
    dispatch.set_num_threads(2)
    got.append(stream(x[:, 3]))

    def make_ref():
        ref = fastrnn.RNN([fastrnn.LSTMCell(H, dtype="float64"),
                           fastrnn.LSTMCell(H, dtype="float64")],
                          return_sequences=True, return_state=True, backend="reference")
        ref.build((1, None, D))
        return ref

    np.testing.assert_allclose(np.stack(got, axis=1), _want(make_ref, old, new, x, 2),
                               atol=3e-5)
    before = stream.states
    model.quantize("bfloat16")  # (no split for an odd input size: the repack raises)
    with pytest.raises(ValueError, match="threads=2"):
        stream(x[:, 0])
    after = flatten(stream.states)
    assert len(after) == 4 and all(np.array_equal(a, b) for a, b in zip(after, flatten(before)))


# ------------------------------------------------------------------ warmup


def test_warmup_changes_nothing_other_threads_see(thread_settings, monkeypatch):
    """While fastrnn.warmup runs in one thread, the others see the thread
    count and thresholds they set, and a set_num_threads(1) made meanwhile
    holds after it returns."""
    seen = (dispatch.get_num_threads(), th._MIN_PARALLEL_WORK, th._MIN_SPLIT_STEP_WORK)
    gate = _Gate()
    run, calls = cpu.run, []

    def paused_run(*args, **kwargs):  # warmup's kernel calls, in its thread
        calls.append(1)
        if len(calls) == 1:
            gate.stop()
        return run(*args, **kwargs)

    monkeypatch.setattr(cpu, "run", paused_run)
    warm = None
    try:
        warm, result = _in_thread(lambda: fastrnn.warmup(dtypes="float64",
                                                        kinds=("simple_rnn",)))
        assert gate.reached.wait(_WAIT)
        now = (dispatch.get_num_threads(), th._MIN_PARALLEL_WORK, th._MIN_SPLIT_STEP_WORK)
        dispatch.set_num_threads(1)  # this thread limits the process meanwhile
        gate.go.set()
        warm.join(_RUN)  # (it may compile)
        assert not warm.is_alive() and "error" not in result, result
    finally:
        gate.go.set()
        if warm is not None:
            warm.join(_RUN)
    assert now == seen
    assert dispatch.get_num_threads() == 1
    assert result["value"] == ["simple_rnn float64"] and len(calls) == 3


def test_warmup_runs_the_two_thread_kernels_with_one_thread_allowed(thread_settings,
                                                                    monkeypatch):
    """The warm-up's own calls still take two threads where the process
    allows one (they compile the kernels other processes or later settings
    run), and a busy machine does not send them to one."""
    if th._NUMBA_THREADS < 2:
        pytest.skip("Numba's pool has one thread: no two-thread kernels")
    dispatch.set_num_threads(1)
    monkeypatch.setattr(th, "_contended_until", float("inf"))
    bounds, launched = th._bounds, []

    def spied(B, work):  # (every call of the generic kernels asks for its row bounds)
        got = bounds(B, work)
        launched.append(got is not None)
        return got

    monkeypatch.setattr(th, "_bounds", spied)
    assert fastrnn.warmup(dtypes="float64", kinds=("simple_rnn",)) == ["simple_rnn float64"]
    assert launched == [False, True, True]
    assert dispatch.get_num_threads() == 1 and th._contended_until == float("inf")


# ------------------------------------------------------------ backend_reason


@pytest.mark.parametrize("kind", ["bidirectional", "sequential"])
def test_backend_reason_after_a_call_that_raced_quantize(kind, rng, monkeypatch):
    """A call runs the float32 weights it read; ``quantize("int8")`` comes
    while its first kernel runs. Afterwards every layer's backend_reason
    is the int8 weights' (the call's choice, made for the old weights, is
    not kept as the new weights' choice)."""
    x = rng.standard_normal((2, 5, 4)).astype(np.float32)

    def make():
        if kind == "bidirectional":
            return fastrnn.Bidirectional(fastrnn.LSTM(8, return_sequences=True))
        return fastrnn.Sequential([fastrnn.LSTM(8, return_sequences=True), fastrnn.LSTM(6)])

    model = make()
    model(x)
    old = model(x)
    layers = ([model.forward_layer, model.backward_layer] if kind == "bidirectional"
              else model.layers)
    fresh = make()
    fresh(x)
    fresh.quantize("int8")
    int8 = fresh.layers[0].backend_reason if kind == "sequential" else fresh.backend_reason
    assert "int8" in int8
    gate = _Gate()
    run, calls = kernels.run, []

    def paused_run(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:  # the first layer's (direction's) kernel
            gate.stop()
        return run(*args, **kwargs)

    monkeypatch.setattr(kernels, "run", paused_run)
    caller = None
    try:
        caller, result = _in_thread(lambda: model(x))
        assert gate.reached.wait(_WAIT)
        model.quantize("int8")
        gate.go.set()
        caller.join(_RUN)
        assert not caller.is_alive() and "error" not in result, result
    finally:
        gate.go.set()
        if caller is not None:
            caller.join(_RUN)
    np.testing.assert_array_equal(result["value"], old)  # (all old weights)
    assert [layer.backend_reason for layer in layers] == [int8] * len(layers)
