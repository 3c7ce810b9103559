"""Keras-style layers over a small grid, per backend (JIT warmed in setup)."""

from __future__ import annotations

from .common import D_IN, check_backend, inputs, require_layers, warm

BATCH = [1, 8, 64]
STEPS = [50, 200]
UNITS = [64, 256, 1024]
BACKENDS = ["cpu", "reference"]
GATES = {"LSTM": 4, "GRU": 3, "SimpleRNN": 1}


class _Layer:
    """One layer kind over batch x steps x units x backend."""

    cell = "LSTM"
    params = [BATCH, STEPS, UNITS, BACKENDS]
    param_names = ["batch", "steps", "units", "backend"]
    timeout = 300

    def setup(self, batch, steps, units, backend):
        require_layers()
        check_backend(backend, GATES[self.cell] * batch * steps * units * (units + D_IN))
        import fastrnn

        self.layer = getattr(fastrnn, self.cell)(units, return_sequences=True, backend=backend)
        self.layer.build((batch, steps, D_IN))
        self.x = inputs(batch, steps)
        warm(lambda: self.layer(self.x), batch)  # compile or load the kernels, tune

    def time_forward(self, batch, steps, units, backend):
        self.layer(self.x)


class LSTM(_Layer):
    cell = "LSTM"


class GRU(_Layer):
    cell = "GRU"


class SimpleRNN(_Layer):
    cell = "SimpleRNN"


class Bidirectional:
    params = [BATCH, STEPS, [64, 256], BACKENDS]
    param_names = ["batch", "steps", "units", "backend"]
    timeout = 300

    def setup(self, batch, steps, units, backend):
        require_layers()
        check_backend(backend, 8 * batch * steps * units * (units + D_IN))
        import fastrnn

        self.layer = fastrnn.Bidirectional(
            fastrnn.LSTM(units, return_sequences=True), backend=backend)
        self.layer.build((batch, steps, D_IN))
        self.x = inputs(batch, steps)
        warm(lambda: self.layer(self.x), batch)

    def time_bidirectional_lstm(self, batch, steps, units, backend):
        self.layer(self.x)


class Stacked:
    """Two LSTM layers and a GRU, cell-stacked in one ``RNN``."""

    params = [BATCH, STEPS, [64, 256], BACKENDS]
    param_names = ["batch", "steps", "units", "backend"]
    timeout = 300

    def setup(self, batch, steps, units, backend):
        require_layers()
        # 4u(u + D) + 4u(2u) + 3u(2u) multiply-adds a row and step
        check_backend(backend, batch * steps * units * (18 * units + 4 * D_IN))
        import fastrnn

        cells = [fastrnn.LSTMCell(units), fastrnn.LSTMCell(units), fastrnn.GRUCell(units)]
        self.layer = fastrnn.RNN(cells, return_sequences=True, backend=backend)
        self.layer.build((batch, steps, D_IN))
        self.x = inputs(batch, steps)
        warm(lambda: self.layer(self.x), batch)

    def time_stacked(self, batch, steps, units, backend):
        self.layer(self.x)


class GenericKernels:
    """The cpu backend's generic kernels (blocks of 4 batch rows share each
    weight read): GRU with ``reset_after=False`` (TF1's ``GRUCell``, Keras
    2) and float64 LSTM and GRU; SimpleRNN above runs them too."""

    params = [["gru_reset_before", "lstm_float64", "gru_float64"], BATCH, [64, 256]]
    param_names = ["kind", "batch", "units"]
    timeout = 300

    def setup(self, kind, batch, units):
        require_layers()
        check_backend("cpu")
        import fastrnn

        steps = 50
        if kind == "gru_reset_before":
            self.layer = fastrnn.GRU(units, reset_after=False, return_sequences=True,
                                     backend="cpu")
        else:
            cls = fastrnn.LSTM if kind == "lstm_float64" else fastrnn.GRU
            self.layer = cls(units, return_sequences=True, dtype="float64", backend="cpu")
        self.layer.build((batch, steps, D_IN))
        self.x = inputs(batch, steps).astype(self.layer.dtype)
        warm(lambda: self.layer(self.x), batch)

    def time_forward(self, kind, batch, units):
        self.layer(self.x)
