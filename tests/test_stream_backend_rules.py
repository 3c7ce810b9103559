"""Which backend a stream runs on, and how many threads it says it uses.

A stream's request is its own ``backend`` argument, else the layer's
``backend`` (not ``"auto"``), else the process-wide default
(``fastrnn.set_backend``, then ``FASTRNN_BACKEND``), else auto; ``"cuda"``
from the layer or the default runs on the host. ``threads=2`` is refused
where every frame would run on one thread.

Expected values come from layer calls on ``backend="reference"`` (a layer
over the same cells), never from a stream. Random weights and inputs, odd
sizes; no timing.
"""

import numpy as np
import pytest

import fastrnn
from fastrnn import _nest
from fastrnn import dispatch, streaming
from fastrnn.kernels.cpu import threads as _threads


@pytest.fixture(autouse=True)
def _no_default(monkeypatch):
    """Every test starts and ends with no process-wide default backend."""
    monkeypatch.delenv("FASTRNN_BACKEND", raising=False)
    fastrnn.set_backend(None)
    try:
        yield
    finally:
        fastrnn.set_backend(None)


def _layer(rng, kind="lstm", units=7, D=5, **kw):
    cls = {"lstm": fastrnn.LSTM, "gru": fastrnn.GRU, "simple": fastrnn.SimpleRNN}[kind]
    layer = cls(units, return_sequences=True, **kw)
    layer.build((1, None, D))
    layer.set_weights([rng.uniform(-0.6, 0.6, w.shape) for w in layer.get_weights()])
    return layer


def _ask(source, name, monkeypatch):
    """Ask for backend ``name`` through the process default: ``"set_backend"``
    or ``"env"`` (FASTRNN_BACKEND); ``"layer"`` asked when the layer was made."""
    if source == "set_backend":
        fastrnn.set_backend(name)
    elif source == "env":
        monkeypatch.setenv("FASTRNN_BACKEND", name)


def _reference(layer, x):
    """``layer``'s output for the whole sequence ``x`` on the reference backend."""
    ref = fastrnn.RNN(layer.cell, return_sequences=True, backend="reference",
                      dtype=layer.dtype.name)
    return ref(x)


def _frames(stream, x):
    return np.stack([stream(np.ascontiguousarray(x[:, t])) for t in range(x.shape[1])], axis=1)


def _spy_kernels(monkeypatch, name):
    """Record the sequence kernels of backend ``name`` that run."""
    module = dispatch.backend_module(name)
    ran = []
    for kind in ("lstm", "gru", "simple_rnn"):
        real = getattr(module, kind)
        monkeypatch.setattr(module, kind,
                            lambda *a, _real=real, _kind=kind: ran.append(_kind) or _real(*a))
    return ran


# ----- A: the layer's backend and the process-wide default -----

@pytest.mark.parametrize("name", ["reference"])
@pytest.mark.parametrize("source", ["layer", "set_backend", "env"])
def test_a_named_backend_from_the_layer_or_the_default_runs_the_stream(
        monkeypatch, rng, name, source):
    """backend="reference" from the layer, set_backend or FASTRNN_BACKEND
    runs the stream through the kernel contract on that backend (the
    stream kernels ran it, whatever was asked), and backend_reason says who
    asked. ("cpu" from them keeps the stream kernels: see below.)"""
    B, T, D = 2, 6, 5
    layer = _layer(rng, "lstm", 7, D, backend=name if source == "layer" else "auto")
    x = rng.uniform(-2, 2, (B, T, D)).astype(np.float32)
    want = _reference(layer, x)
    _ask(source, name, monkeypatch)
    stream = layer.stream(batch_size=B)
    ran = _spy_kernels(monkeypatch, name)
    got = _frames(stream, x)
    assert stream.backend == name and ran == ["lstm"] * T
    who = {"layer": "the layer's backend argument", "set_backend": "fastrnn.set_backend",
           "env": "the FASTRNN_BACKEND environment variable"}[source]
    assert f"backend={name!r} was requested by {who}" in stream.backend_reason
    assert stream.threads == 1  # (a frame this small runs on one thread on either)
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5)


def test_the_order_of_the_requests(monkeypatch, rng):
    """The stream's own backend comes first, then the layer's, then
    set_backend, then FASTRNN_BACKEND; a layer on "auto" with none of them
    keeps the stream kernels, and so does "cpu" from the layer or the
    default (they are the cpu backend's)."""
    layer = _layer(rng, "gru", 6, 3, backend="reference")
    auto = _layer(rng, "gru", 6, 3)
    assert auto.stream().backend == "stream"
    monkeypatch.setenv("FASTRNN_BACKEND", "reference")
    assert auto.stream().backend == "reference"
    monkeypatch.setenv("FASTRNN_BACKEND", "cpu")
    assert auto.stream().backend == "stream"
    fastrnn.set_backend("reference")
    assert auto.stream().backend == "reference"
    fastrnn.set_backend("cpu")
    assert layer.stream().backend == "reference"
    assert layer.stream(backend="cpu").backend == "cpu"
    assert auto.stream(backend="reference").backend == "reference"


def test_a_bad_FASTRNN_BACKEND_raises_as_in_a_layer_call(monkeypatch, rng):
    layer = _layer(rng, "simple", 4, 3)
    x = rng.uniform(-1, 1, (1, 2, 3)).astype(np.float32)
    monkeypatch.setenv("FASTRNN_BACKEND", "bogus")
    with pytest.raises(ValueError, match="FASTRNN_BACKEND"):
        layer(x)
    with pytest.raises(ValueError, match="FASTRNN_BACKEND.*bogus"):
        layer.stream()
    # a named request does not read it (nor does a layer call with one)
    assert layer.stream(backend="reference").backend == "reference"


def test_model_streams_follow_the_layers_backend(rng):
    """A model stream's recurrent layers stream on their own backend (the
    consecutive ones with the same backend as one stack), and on the
    process-wide default where theirs is "auto"."""
    model = fastrnn.Sequential([
        fastrnn.SimpleRNN(5, return_sequences=True, backend="reference"),
        fastrnn.GRU(4, return_sequences=True),
    ])
    model(np.zeros((1, 2, 3), np.float32))
    for layer in model.layers:
        layer.set_weights([rng.uniform(-0.6, 0.6, w.shape) for w in layer.get_weights()])
    x = rng.uniform(-2, 2, (2, 5, 3)).astype(np.float32)
    fastrnn.set_backend("reference")
    try:
        want = model(x)
    finally:
        fastrnn.set_backend(None)
    live = model.stream(batch_size=2)
    assert [s.backend for s in live.streams] == ["reference", "stream"]
    got = np.stack([live(np.ascontiguousarray(x[:, t])) for t in range(5)], axis=1)
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5)
    fastrnn.set_backend("reference")
    assert [s.backend for s in model.stream(batch_size=2).streams] == ["reference"] * 2


# ----- B: "cuda" runs on the host, whoever asks -----

def _tanh(v):
    return np.tanh(v)


@pytest.mark.parametrize("source", ["layer", "set_backend", "env"])
def test_cuda_from_the_layer_or_the_default_runs_on_the_host(monkeypatch, rng, source):
    """A layer that runs through the kernel contract (a Python activation)
    and one the stream kernels run: both stream on the host as "auto" does,
    and backend_reason says so (FASTRNN_BACKEND=cuda raised RuntimeError:
    no CUDA driver)."""
    B, T, D = 1, 5, 3
    kw = {"backend": "cuda"} if source == "layer" else {}
    python_act = _layer(rng, "simple", 6, D, activation=_tanh, **kw)
    builtin = _layer(rng, "lstm", 5, D, **kw)
    x = rng.uniform(-2, 2, (B, T, D)).astype(np.float32)
    wants = [_reference(python_act, x), _reference(builtin, x)]
    _ask(source, "cuda", monkeypatch)
    for layer, want, engine in zip((python_act, builtin), wants, ("reference", "stream")):
        stream = layer.stream()
        assert stream.backend == engine
        assert "backend='cuda' was requested" in stream.backend_reason
        assert "streams run on the host" in stream.backend_reason
        np.testing.assert_allclose(_frames(stream, x), want, rtol=2e-5, atol=2e-5)


# ----- C: threads=2 only where a call runs on two threads -----

def _spy_parallel(monkeypatch):
    """Record whether each batch-engine call split its work between threads
    (rows: threads._bounds gave shares; panels: threads._run_split ran)."""
    split = []
    real_bounds, real_run = _threads._bounds, _threads._run_split

    def bounds(B, work):
        got = real_bounds(B, work)
        split.append(got is not None)
        return got

    def run_split(T, args):
        split.append(True)
        return real_run(T, args)

    monkeypatch.setattr(_threads, "_bounds", bounds)
    monkeypatch.setattr(_threads, "_run_split", run_split)
    return split


@pytest.mark.parametrize("kind", ["simple", "gru_reset_before", "stack"])
def test_threads2_is_refused_where_every_frame_runs_on_one_thread(rng, kind):
    """SimpleRNN and GRU(reset_after=False) have no panel split with a
    helper thread, and the batch engine splits no frame of them at batch 1
    (nor of a small stack with such a layer): threads=2 is a ValueError
    naming what would work, at once or at an unbuilt layer's first call."""
    if kind == "stack":
        layer = fastrnn.RNN([fastrnn.LSTMCell(35), fastrnn.GRUCell(33, reset_after=False)])
        layer.build((1, None, 7))
    else:
        layer = _layer(rng, "simple" if kind == "simple" else "gru", 37, 11,
                       **({} if kind == "simple" else {"reset_after": False}))
    with pytest.raises(ValueError, match=r"threads=2: .*one thread.*threads=None or 1"):
        layer.stream(threads=2)
    unbuilt = fastrnn.SimpleRNN(37).stream(threads=2)
    with pytest.raises(ValueError, match=r"threads=2: .*one thread"):
        unbuilt(np.zeros((1, 11), np.float32))


@pytest.mark.skipif(dispatch.get_num_threads() < 2, reason="needs two threads")
def test_threads2_refusal_names_bfloat16_weights_of_an_odd_input_size(rng):
    """The split reads bfloat16 inputs in pairs: the refusal said the layer
    had none of the reasons it listed."""
    layer = _layer(rng, "lstm", 33, 17)
    layer.quantize("bfloat16")
    with pytest.raises(ValueError, match=r"threads=2: .*bfloat16 weights have an odd input "
                                         r"size, 17.*one thread"):
        layer.stream(threads=2)


def test_threads2_is_refused_with_one_thread_allowed(rng):
    layer = _layer(rng, "lstm", 37, 11)  # (a layer the split runs, given two threads)
    fastrnn.set_num_threads(1)
    try:
        with pytest.raises(ValueError, match=r"threads=2: fastrnn.get_num_threads\(\) is 1"):
            layer.stream(threads=2)
    finally:
        fastrnn.set_num_threads(None)


@pytest.mark.skipif(dispatch.get_num_threads() < 2, reason="needs two threads")
def test_threads2_runs_where_the_batch_engine_splits_the_frames(rng, monkeypatch):
    """A SimpleRNN batch with the work to split rows between threads: the
    stream keeps threads=2, and its frames do run split (and give the
    reference's numbers)."""
    B, T, D, H = 15, 3, 211, 301  # (a frame of 15 * 301 * 512 multiply-adds)
    layer = _layer(rng, "simple", H, D)
    x = rng.uniform(-1, 1, (B, T, D)).astype(np.float32)
    want = _reference(layer, x)
    stream = layer.stream(batch_size=B, threads=2)
    assert stream.backend == "cpu" and stream.threads == dispatch.get_num_threads()
    split = _spy_parallel(monkeypatch)
    got = _frames(stream, x)
    assert split and all(split)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


class _Clock:
    """``time`` for the stream module: ``perf_counter`` moves only when an
    engine a tuner times runs (by the cost given to it)."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self):
        return self.now


@pytest.mark.skipif(dispatch.get_num_threads() < 2, reason="needs two threads")
def test_a_timed_stream_never_claims_two_threads_for_one(rng, monkeypatch):
    """A stream with large weights times the stream kernels against the
    batch engine; where that engine runs every frame on one thread (a
    SimpleRNN at batch 1), backend_reason and threads say one thread, also
    once the engine won (the costs are injected: no real timing)."""
    clock = _Clock()
    monkeypatch.setattr(streaming, "time", clock)
    monkeypatch.setattr(streaming, "TUNE_MIN_BYTES", 0)
    real = streaming._Tuner.__init__

    def costs(fn, cost):
        def run(*args):
            clock.now += cost
            return fn(*args)
        return run

    def init(self, stream, which, kernel, engine, ran=None):
        real(self, stream, which, kernel, engine, ran)
        self.fns = (costs(self.fns[0], 2.0), costs(self.fns[1], 1.0))  # the engine wins

    monkeypatch.setattr(streaming._Tuner, "__init__", init)
    T, D, H = 40, 9, 37
    layer = _layer(rng, "simple", H, D)
    x = rng.uniform(-1, 1, (1, T, D)).astype(np.float32)
    want = _reference(layer, x)
    stream = layer.stream()
    assert "frames: timing the stream kernels and the cpu batch engine on one thread" \
        in stream.backend_reason
    got = _frames(stream, x)  # (a timing round takes fewer frames than T)
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5)
    assert stream.backend == "cpu" and stream.threads == 1
    assert "frames: the cpu batch engine on one thread" in stream.backend_reason


# ----- D: regressions of the request rules (one test per fix) -----

@pytest.mark.parametrize("source", ["layer", "set_backend", "env"])
def test_cpu_from_the_layer_or_the_default_keeps_the_stream_kernels(monkeypatch, rng, source):
    """(3) "cpu" from the layer, set_backend or FASTRNN_BACKEND runs the
    stream kernels (the cpu backend's own), not the contract path; only the
    stream's own backend="cpu" forces that."""
    B, T, D = 1, 6, 5
    layer = _layer(rng, "lstm", 32, D, backend="cpu" if source == "layer" else "auto")
    x = rng.uniform(-2, 2, (B, T, D)).astype(np.float32)
    want = _reference(layer, x)
    _ask(source, "cpu", monkeypatch)
    stream = layer.stream(batch_size=B)
    ran = _spy_kernels(monkeypatch, "cpu")
    got = _frames(stream, x)
    assert stream.backend == "stream" and ran == [] and stream.threads == 1
    assert "backend='cpu' was requested by" in stream.backend_reason
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5)
    forced = layer.stream(batch_size=B, backend="cpu")
    assert forced.backend == "cpu"
    got = _frames(forced, x)
    assert ran == ["lstm"] * T
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("source", ["layer", "set_backend", "env"])
def test_threads_from_the_stream_comes_before_reference_from_the_layer_or_default(
        monkeypatch, rng, source):
    """(2) The stream's own threads=1 asks for the cpu stream kernels, over
    backend="reference" from the layer or the process default (the more
    specific request wins); the stream's own backend="reference" with
    threads is a contradiction, still refused."""
    B, T, D = 1, 5, 4
    layer = _layer(rng, "lstm", 8, D, backend="reference" if source == "layer" else "auto")
    x = rng.uniform(-2, 2, (B, T, D)).astype(np.float32)
    want = _reference(layer, x)
    _ask(source, "reference", monkeypatch)
    stream = layer.stream(threads=1)
    ran = _spy_kernels(monkeypatch, "reference")
    got = _frames(stream, x)
    assert stream.backend == "stream" and stream.threads == 1 and ran == []
    assert "threads=1 was requested over backend='reference'" in stream.backend_reason
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5)
    with pytest.raises(ValueError, match="threads=1"):
        layer.stream(backend="reference", threads=1)


def _lstm_t2(rng):
    return _layer(rng, "lstm", 40, 8)  # (a layer the panel split runs at batch 1)


@pytest.mark.skipif(dispatch.get_num_threads() < 2, reason="needs two threads to save")
def test_a_saved_threads_the_stream_cannot_run_here_is_a_preference(rng, tmp_path):
    """(1) A stream file saved with threads=2 loads where threads=2 cannot
    run (here: one thread allowed): a UserWarning naming the file, the
    stream on threads=None with a note in backend_reason, its state kept."""
    B, T = 1, 6
    layer = _lstm_t2(rng)
    x = rng.uniform(-2, 2, (B, T, 8)).astype(np.float32)
    want = _reference(layer, x)
    stream = layer.stream(threads=2)
    stream(np.ascontiguousarray(x[:, 0]))
    path = stream.save(str(tmp_path / "s.npz"))
    fastrnn.set_num_threads(1)
    try:
        with pytest.raises(ValueError, match="threads=2"):
            layer.stream(threads=2)  # (a live request stays refused)
        with pytest.warns(UserWarning, match=r"s\.npz.*threads=2.*cannot run here") as rec:
            back = streaming.load_stream(path)
        assert rec[0].filename == __file__  # (the caller's line)
        assert back.backend == "stream" and back.threads == 1
        assert "the file asked for threads=2" in back.backend_reason
        got = np.stack([back(np.ascontiguousarray(x[:, t])) for t in range(1, T)], axis=1)
        np.testing.assert_allclose(got, want[:, 1:], rtol=2e-5, atol=2e-5)
    finally:
        fastrnn.set_num_threads(None)


@pytest.mark.skipif(dispatch.get_num_threads() < 2, reason="needs two threads to save")
def test_a_model_streams_saved_threads_is_a_preference(rng, tmp_path):
    """(1) fastrnn.load of a model stream treats threads the same way (the
    warning on the caller's line); other errors raise. A NumPy integer
    ``threads`` is saved as a number."""
    from fastrnn import models
    layer = _lstm_t2(rng)
    model = fastrnn.Sequential([layer])
    live = model.stream(threads=np.int64(2))
    assert live.streams[0].threads == 2
    x = rng.standard_normal((1, 3, 8)).astype(np.float32)
    live(x)
    fastrnn.save(live, tmp_path / "m.fastrnn")
    fastrnn.set_num_threads(1)
    try:
        with pytest.warns(UserWarning, match=r"m\.fastrnn.*threads=2") as rec:
            loaded = fastrnn.load(tmp_path / "m.fastrnn")
        assert rec[0].filename == __file__
        assert loaded.streams[0].backend == "stream"
        for a, b in zip(_nest.flatten(loaded.states), _nest.flatten(live.states)):
            np.testing.assert_array_equal(a, b)
        with pytest.warns(UserWarning, match=r"m\.fastrnn.*threads=2"):
            back = models.ModelStream._restore(model, 1, None, 2, "m.fastrnn")
        assert back.streams[0].backend == "stream"
        assert "the file asked for threads=2" in back.streams[0].backend_reason
        with pytest.raises(ValueError, match="batch_size"):
            models.ModelStream._restore(model, 0, None, 2, "m.fastrnn")
    finally:
        fastrnn.set_num_threads(None)


def test_a_stream_error_names_who_asked_for_the_backend(rng):
    """(6) set_backend("cpu") and a Python activation: the stream's error
    names fastrnn.set_backend, as a layer call's does."""
    layer = fastrnn.SimpleRNN(4, activation=_tanh)
    layer.build((1, None, 3))
    fastrnn.set_backend("cpu")
    with pytest.raises(ValueError, match="requested by fastrnn.set_backend"):
        layer(np.ones((1, 2, 3), np.float32))
    with pytest.raises(ValueError, match="requested by fastrnn.set_backend"):
        layer.stream()


def test_a_backend_that_is_not_a_str_is_a_TypeError(rng):
    """(7) As for a layer's backend= and set_backend."""
    layer = _layer(rng, "lstm", 3, 2)
    with pytest.raises(TypeError, match="backend"):
        layer.stream(backend=1)
    with pytest.raises(TypeError, match="backend"):
        fastrnn.Sequential([layer]).stream(backend=1)
