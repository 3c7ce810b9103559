"""Weights changed while other threads call: every call runs one complete
set of weights (the old or the new, never a mix), and every call that
starts after ``set_weights`` returned runs the new set.

The races are made to happen, not hoped for: the weight swap (or the call)
is paused at the worst moment with events, another thread runs meanwhile,
and the results are compared with the outputs of the old and the new
weights computed apart.
"""

import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import fastrnn
from fastrnn import _engine, models, nn

from conftest import layer_backends


def _weights(obj, rng):
    return [rng.uniform(-0.6, 0.6, w.shape).astype(w.dtype) for w in obj.get_weights()]


def _pause_swap(monkeypatch, when=1):
    """Pause the thread that swaps weights in, right after the ``when``-th cell
    got its new ones (the rest of the set not yet). Returns (inside, go_on)."""
    inside, go_on = threading.Event(), threading.Event()
    real = _engine.weights_changed
    seen = [0]

    def paused():
        real()
        if threading.current_thread() is not threading.main_thread():
            seen[0] += 1
            if seen[0] == when:
                inside.set()
                assert go_on.wait(30)

    monkeypatch.setattr(_engine, "weights_changed", paused)
    return inside, go_on


def _during_swap(obj, new_weights, call, monkeypatch, when=1):
    """Run ``call()`` in a thread while ``obj.set_weights(new_weights)`` is
    paused half-way; return what the call returned."""
    inside, go_on = _pause_swap(monkeypatch, when)
    writer = threading.Thread(target=obj.set_weights, args=(new_weights,))
    writer.start()
    assert inside.wait(30)
    got = {}
    reader = threading.Thread(target=lambda: got.setdefault("y", call()))
    reader.start()
    reader.join(0.3)  # it waits for the swap to end (or, unguarded, runs on a mix)
    go_on.set()
    writer.join(30)
    reader.join(30)
    return got["y"]


def _one_of(y, candidates):
    ys = y if isinstance(y, (list, tuple)) else [y]
    for cand in candidates:
        cs = cand if isinstance(cand, (list, tuple)) else [cand]
        if all(np.array_equal(a, b) for a, b in zip(ys, cs)):
            return True
    return False


@pytest.mark.parametrize("backend", layer_backends())
def test_stack_call_during_set_weights(backend, rng, monkeypatch):
    layer = fastrnn.RNN([fastrnn.GRUCell(5), fastrnn.LSTMCell(4), fastrnn.SimpleRNNCell(3)],
                        return_sequences=True, return_state=True, backend=backend)
    x = rng.standard_normal((3, 6, 2)).astype(np.float32)
    layer.build(x.shape)
    old, new = _weights(layer, rng), _weights(layer, rng)
    layer.set_weights(new)
    y_new = layer(x)
    layer.set_weights(old)
    y_old = layer(x)
    y = _during_swap(layer, new, lambda: layer(x), monkeypatch, when=1)
    assert _one_of(y, [y_old, y_new]), "a call ran with a mix of old and new weights"
    assert _one_of(layer(x), [y_new])


@pytest.mark.parametrize("backend", layer_backends())
def test_bidirectional_call_during_set_weights(backend, rng, monkeypatch):
    bi = fastrnn.Bidirectional(fastrnn.LSTM(4, return_sequences=True, backend=backend))
    x = rng.standard_normal((2, 5, 3)).astype(np.float32)
    bi.build(x.shape)
    old, new = _weights(bi, rng), _weights(bi, rng)
    bi.set_weights(new)
    y_new = bi(x)
    bi.set_weights(old)
    y_old = bi(x)
    y = _during_swap(bi, new, lambda: bi(x), monkeypatch, when=1)
    assert _one_of(y, [y_old, y_new]), "the two directions ran with different weight sets"
    assert _one_of(bi(x), [y_new])


def test_sequential_call_during_set_weights(rng, monkeypatch):
    lstm = fastrnn.LSTM(4)
    lstm.build((None, 5, 3))
    dense = models.Dense(2)
    dense.set_weights([np.zeros((4, 2), np.float32), np.zeros(2, np.float32)])
    model = models.Sequential([lstm, dense])
    x = rng.standard_normal((2, 5, 3)).astype(np.float32)
    old, new = _weights(model, rng), _weights(model, rng)
    model.set_weights(new)
    y_new = model(x)
    model.set_weights(old)
    y_old = model(x)
    # paused after the LSTM's new weights are in, before the Dense layer's
    y = _during_swap(model, new, lambda: model(x), monkeypatch, when=1)
    assert _one_of(y, [y_old, y_new]), "the layers ran with weights of different sets"
    assert _one_of(model(x), [y_new])


def test_tf1_multi_cell_call_during_set_weights(rng, monkeypatch):
    cell = nn.rnn_cell.MultiRNNCell([nn.rnn_cell.GRUCell(4), nn.rnn_cell.LSTMCell(3)])
    x = rng.standard_normal((2, 5, 3)).astype(np.float32)
    cell.build((None, 3))
    old, new = _weights(cell, rng), _weights(cell, rng)

    def run():
        out, state = nn.dynamic_rnn(cell, x, dtype=np.float32)
        return [out] + fastrnn._nest.flatten(state)

    cell.set_weights(new)
    y_new = run()
    cell.set_weights(old)
    y_old = run()
    # (set_weights first checks each cell on a copy: the third swap is the real first cell)
    y = _during_swap(cell, new, run, monkeypatch, when=3)
    assert _one_of(y, [y_old, y_new]), "the stacked TF1 cells ran with a mix of weights"
    assert _one_of(run(), [y_new])


def test_stream_follows_set_weights_whole(rng, monkeypatch):
    layer = fastrnn.RNN([fastrnn.LSTMCell(6), fastrnn.GRUCell(4)], return_sequences=True)
    layer.build((1, None, 3))
    old, new = _weights(layer, rng), _weights(layer, rng)
    frame = rng.standard_normal((1, 3)).astype(np.float32)

    def first_frame(weights):
        ref = fastrnn.RNN([fastrnn.LSTMCell(6), fastrnn.GRUCell(4)], return_sequences=True)
        ref.build((1, None, 3))
        ref.set_weights(weights)
        return ref.stream()(frame)

    y_old, y_new = first_frame(old), first_frame(new)
    layer.set_weights(old)
    stream = layer.stream()
    got = _during_swap(layer, new, lambda: stream(frame), monkeypatch, when=1)
    assert _one_of(got, [y_old, y_new]), "a stream frame ran with a mix of weights"
    stream.reset()
    np.testing.assert_array_equal(stream(frame), y_new)  # set_weights returned: the new set


@pytest.mark.parametrize("backend", layer_backends())
def test_no_call_keeps_old_weights_after_set_weights_returned(backend, rng, monkeypatch):
    """A call that read the old weights and is still packing them when
    set_weights returns finishes with the old set; every later call runs
    the new one (packed forms belong to one set of weights, never reused
    for another)."""
    layer = fastrnn.GRU(6, return_sequences=True, backend=backend)
    x = rng.standard_normal((2, 4, 3)).astype(np.float32)
    layer.build(x.shape)
    old, new = _weights(layer, rng), _weights(layer, rng)
    ref = fastrnn.GRU(6, return_sequences=True, backend=backend)
    ref.build(x.shape)
    ref.set_weights(new)
    y_new = ref(x)
    ref.set_weights(old)
    y_old = ref(x)
    layer.set_weights(old)
    packing, go_on = threading.Event(), threading.Event()
    real = _engine.Weights.packed

    def slow_packed(self, module):
        if threading.current_thread() is not threading.main_thread():
            packing.set()
            assert go_on.wait(30)
        return real(self, module)

    monkeypatch.setattr(_engine.Weights, "packed", slow_packed)
    got = {}
    reader = threading.Thread(target=lambda: got.setdefault("y", layer(x)))
    reader.start()
    assert packing.wait(30)
    layer.set_weights(new)  # returns while the reader is still packing
    go_on.set()
    reader.join(30)
    np.testing.assert_array_equal(got["y"], y_old)
    for _ in range(3):
        np.testing.assert_array_equal(layer(x), y_new)


def test_cell_steps_follow_set_weights(rng):
    cell = fastrnn.LSTMCell(5)
    cell.build((None, 3))
    x = rng.standard_normal((2, 3)).astype(np.float32)
    states = cell.get_initial_state(2)
    old, new = _weights(cell, rng), _weights(cell, rng)
    ref = fastrnn.LSTMCell(5)
    ref.set_weights(new)
    cell.set_weights(old)
    cell(x, states)
    cell.set_weights(new)
    for got, want in zip(cell(x, states)[1], ref(x, states)[1]):
        np.testing.assert_array_equal(got, want)


_FORK_CHILD = r"""
import os, sys, threading, signal
import numpy as np
import fastrnn
from fastrnn import _engine
from fastrnn.kernels.cpu import threads

case = sys.argv[1]
rng = np.random.default_rng(0)
layer = fastrnn.LSTM(256)
x = rng.standard_normal((16, 20, 64)).astype(np.float32)
fastrnn.set_num_threads(2)
y = layer(x)  # on the pool's two threads (the row split)
paused = None
if case == "lock":
    # another thread inside set_weights, holding the weights lock, when the fork starts
    inside, go_on = threading.Event(), threading.Event()
    real = _engine.weights_changed
    def pausing():
        real()
        if threading.current_thread() is not threading.main_thread():
            inside.set()
            go_on.wait(30)
    _engine.weights_changed = pausing
    paused = threading.Thread(target=layer.set_weights, args=(layer.get_weights(),))
    paused.start()
    inside.wait(10)
    threading.Timer(0.5, go_on.set).start()  # the fork waits for set_weights to finish
pid = os.fork()
if pid == 0:
    signal.alarm(60)
    same = np.array_equal(layer(x), y)
    os._exit(0 if same else 1)
if paused is not None:
    paused.join()
_, status = os.waitpid(pid, 0)
print("CHILD", os.waitstatus_to_exitcode(status), threads._gnu_openmp_started())
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork")
@pytest.mark.parametrize("case", ["pool", "lock"])
def test_forked_child_calls(case):
    """pool: a child forked after the parent ran a call on GNU OpenMP's pool
    was terminated by Numba at its own parallel call ("fork() called from a
    process already using GNU OpenMP"); it now runs on one thread, with the
    parent's numbers. lock: a child forked while another thread held the
    weights lock inside set_weights waited for it forever."""
    proc = subprocess.run([sys.executable, "-c", _FORK_CHILD, case], capture_output=True,
                          text=True, timeout=600, env=dict(os.environ, NUMBA_NUM_THREADS="2"))
    assert "CHILD 0" in proc.stdout, proc.stdout + proc.stderr
