"""Behaviour pinned across refactors: the ``cpu`` backend's bits, and files
written by earlier versions (made by ``tests/data/pinned/make_pinned.py``)."""

import os

import numpy as np
import pytest

import fastrnn
from fastrnn import models

from conftest import DATA

PINNED = os.path.join(DATA, "pinned")
_LAYERS = {
    "lstm_b1": lambda: fastrnn.LSTM(37, return_sequences=True, return_state=True),
    "lstm_b15_mask_rev": lambda: fastrnn.LSTM(37, return_sequences=True, return_state=True,
                                              go_backwards=True),
    "lstm_b8": lambda: fastrnn.LSTM(50, return_state=True),
    "lstm_hard_relu": lambda: fastrnn.LSTM(21, activation="relu",
                                           recurrent_activation="hard_sigmoid",
                                           return_sequences=True),
    "gru_b1": lambda: fastrnn.GRU(33, return_sequences=True, return_state=True),
    "gru_b13_mask": lambda: fastrnn.GRU(33, return_sequences=True, return_state=True),
    "gru_reset_before": lambda: fastrnn.GRU(19, reset_after=False, return_sequences=True),
    "lstm_f64": lambda: fastrnn.LSTM(13, return_sequences=True, return_state=True,
                                     dtype="float64"),
    "gru_f64": lambda: fastrnn.GRU(13, return_sequences=True, dtype="float64"),
    "simple_rnn": lambda: fastrnn.SimpleRNN(17, return_sequences=True),
}


def _case(data, name):
    prefix = name + "/"
    return {k[len(prefix):]: data[k] for k in data.files if k.startswith(prefix)}


def _same_bits(got, want):
    got = np.ascontiguousarray(got)
    assert got.dtype == want.dtype and got.shape == want.shape
    bad = got.view(np.uint8) != want.view(np.uint8)
    assert not bad.any(), f"max abs difference {np.max(np.abs(got - want))}"


@pytest.mark.parametrize("name", sorted(_LAYERS))
def test_cpu_outputs_keep_their_bits(name):
    with np.load(os.path.join(PINNED, "cpu_outputs.npz")) as data:
        case = _case(data, name)
    layer = _LAYERS[name]()
    layer.backend_arg = "cpu"
    layer.set_weights([case[f"w{i}"] for i in range(sum(k.startswith("w") for k in case))])
    y = layer(case["x"], mask=case.get("mask"))
    ys = y if isinstance(y, list) else [y]
    assert len(ys) == sum(k.startswith("y") for k in case)
    for i, got in enumerate(ys):
        _same_bits(got, case[f"y{i}"])


def test_cpu_projection_keeps_its_bits():
    with np.load(os.path.join(PINNED, "cpu_outputs.npz")) as data:
        case = _case(data, "nn_lstm_proj")
    cell = fastrnn.nn.rnn_cell.LSTMCell(12, num_proj=7, use_peepholes=True, cell_clip=0.8,
                                        backend="cpu")
    cell.set_weights([case[f"w{i}"] for i in range(sum(k.startswith("w") for k in case))])
    out, state = fastrnn.nn.dynamic_rnn(cell, case["x"], dtype=np.float32)
    for got, key in ((out, "y0"), (state.c, "y1"), (state.h, "y2")):
        _same_bits(got, case[key])


def test_model_file_of_format_1_loads():
    model = fastrnn.load(os.path.join(PINNED, "model_v1.fastrnn"))
    assert isinstance(model, models.Sequential)
    with np.load(os.path.join(PINNED, "model_v1_io.npz")) as io:
        np.testing.assert_allclose(model(io["x"]), io["y"], rtol=0, atol=2e-6)


def test_stream_file_of_format_1_loads():
    stream = fastrnn.streaming.load_stream(os.path.join(PINNED, "stream_v1.npz"))
    with np.load(os.path.join(PINNED, "stream_v1_io.npz")) as io:
        np.testing.assert_allclose(stream(io["x"]), io["y"], rtol=0, atol=2e-6)
