"""Write the files that pin fastrnn's behaviour across refactors.

Run with the fastrnn whose behaviour is to be kept (from the repository
root: ``PYTHONPATH=. python tests/data/pinned/make_pinned.py [NAME ...]``,
NAME among ``cpu_outputs``, ``model``, ``stream``; all three by default).
The two files of an old format are made once and kept; ``cpu_outputs`` is
made again only when a change of the numerics is intended (and says why in
its commit).

``cpu_outputs.npz``
    Inputs, weights and the ``cpu`` backend's outputs of a few layers that
    reach every batch kernel family (packed float32 LSTM and GRU tiles of
    6, 4, 2 and 1 rows, hoisted input sums at batch 1, the generic kernels
    for float64, projection, ``reset_after=False`` and SimpleRNN), with
    masks and both directions. ``tests/test_pinned.py`` checks that the
    outputs stay the same to the bit.
``model_v1.fastrnn``
    A ``fastrnn.save`` file (format version 1) of a Sequential model with a
    masked Bidirectional LSTM, a GRU and a Dense layer, with its input and
    output.
``stream_v1.npz``
    A ``Stream.save`` file (``fastrnn.stream/1``) of a stacked LSTM/GRU
    stream with carried state, with the next frame and its output.
"""

import json
import os

import numpy as np

import fastrnn
from fastrnn import models

HERE = os.path.dirname(os.path.abspath(__file__))

# (name, factory, batch, time, features, masked)
CASES = [
    ("lstm_b1", lambda: fastrnn.LSTM(37, return_sequences=True, return_state=True), 1, 9, 11, False),
    ("lstm_b15_mask_rev", lambda: fastrnn.LSTM(37, return_sequences=True, return_state=True,
                                               go_backwards=True), 15, 9, 11, True),
    ("lstm_b8", lambda: fastrnn.LSTM(50, return_state=True), 8, 7, 5, False),
    ("lstm_hard_relu", lambda: fastrnn.LSTM(21, activation="relu", recurrent_activation="hard_sigmoid",
                                            return_sequences=True), 7, 6, 5, True),
    ("gru_b1", lambda: fastrnn.GRU(33, return_sequences=True, return_state=True), 1, 9, 11, False),
    ("gru_b13_mask", lambda: fastrnn.GRU(33, return_sequences=True, return_state=True), 13, 9, 11, True),
    ("gru_reset_before", lambda: fastrnn.GRU(19, reset_after=False, return_sequences=True), 5, 6, 7, True),
    ("lstm_f64", lambda: fastrnn.LSTM(13, return_sequences=True, return_state=True,
                                      dtype="float64"), 4, 6, 5, True),
    ("gru_f64", lambda: fastrnn.GRU(13, return_sequences=True, dtype="float64"), 4, 6, 5, False),
    ("simple_rnn", lambda: fastrnn.SimpleRNN(17, return_sequences=True), 6, 6, 5, True),
]


def _flat(y):
    return [np.asarray(a) for a in (y if isinstance(y, list) else [y])]


def cpu_outputs():
    rng = np.random.default_rng(20261205)
    arrays = {}
    for name, make, B, T, D, masked in CASES:
        layer = make()
        layer.backend_arg = "cpu"
        layer.build((B, T, D))
        weights = [rng.uniform(-0.6, 0.6, w.shape).astype(layer.dtype) for w in layer.get_weights()]
        layer.set_weights(weights)
        x = rng.standard_normal((B, T, D)).astype(layer.dtype)
        mask = None
        if masked:
            lengths = rng.integers(1, T + 1, B)
            mask = np.arange(T)[None, :] < lengths[:, None]
            arrays[f"{name}/mask"] = mask
        arrays[f"{name}/x"] = x
        for i, w in enumerate(weights):
            arrays[f"{name}/w{i}"] = w
        for i, y in enumerate(_flat(layer(x, mask=mask))):
            arrays[f"{name}/y{i}"] = y
    # an LSTM with a projection (the generic kernel's projection path), through nn
    cell = fastrnn.nn.rnn_cell.LSTMCell(12, num_proj=7, use_peepholes=True, cell_clip=0.8,
                                        backend="cpu")
    x = rng.standard_normal((3, 5, 6)).astype(np.float32)
    cell.build((None, 6))
    weights = [rng.uniform(-0.6, 0.6, w.shape).astype(np.float32) for w in cell.get_weights()]
    cell.set_weights(weights)
    out, state = fastrnn.nn.dynamic_rnn(cell, x, dtype=np.float32)
    arrays["nn_lstm_proj/x"] = x
    for i, w in enumerate(weights):
        arrays[f"nn_lstm_proj/w{i}"] = w
    arrays["nn_lstm_proj/y0"], arrays["nn_lstm_proj/y1"], arrays["nn_lstm_proj/y2"] = (
        out, state.c, state.h)
    np.savez(os.path.join(HERE, "cpu_outputs.npz"), **arrays)


def saved_model():
    rng = np.random.default_rng(7)
    bi = fastrnn.Bidirectional(fastrnn.LSTM(6, return_sequences=True))
    bi.build((None, 7, 3))
    gru = fastrnn.GRU(5)
    gru.build((None, 7, 12))
    dense = models.Dense(3, activation="softmax")
    dense.set_weights([np.zeros((5, 3), np.float32), np.zeros(3, np.float32)])
    model = models.Sequential([models.Masking(0.0), bi, gru, dense])
    x = rng.standard_normal((4, 7, 3)).astype(np.float32)
    x[1, 5:] = 0.0
    x[3, 2:] = 0.0
    model.set_weights([rng.uniform(-0.6, 0.6, w.shape).astype(w.dtype) for w in model.get_weights()])
    fastrnn.save(model, os.path.join(HERE, "model_v1.fastrnn"))
    np.savez(os.path.join(HERE, "model_v1_io.npz"), x=x, y=model(x))


def saved_stream():
    rng = np.random.default_rng(11)
    layer = fastrnn.RNN([fastrnn.LSTMCell(6), fastrnn.GRUCell(4)], return_sequences=True)
    layer.build((2, None, 3))
    layer.set_weights([rng.uniform(-0.6, 0.6, w.shape).astype(w.dtype) for w in layer.get_weights()])
    stream = layer.stream(batch_size=2)
    for _ in range(3):
        stream(rng.standard_normal((2, 3)).astype(np.float32))
    stream.save(os.path.join(HERE, "stream_v1.npz"))
    nxt = rng.standard_normal((2, 3)).astype(np.float32)
    np.savez(os.path.join(HERE, "stream_v1_io.npz"), x=nxt, y=stream(nxt),
             config=json.dumps({"fastrnn": fastrnn.__version__}))


if __name__ == "__main__":
    import sys

    makers = {"cpu_outputs": cpu_outputs, "model": saved_model, "stream": saved_stream}
    for name in sys.argv[1:] or makers:
        makers[name]()
