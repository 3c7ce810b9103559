"""The kernel contract directly: long sequences in bounded memory, and the
float32 batch shapes of ``python -m fastrnn bench``."""

from __future__ import annotations

import numpy as np

from .common import check_backend, inputs, warm


def _lstm(D, H, seed=0):
    from fastrnn.kernels import LSTMParams

    rng = np.random.default_rng(seed)
    s = 1.0 / np.sqrt(H)
    return LSTMParams(
        rng.uniform(-s, s, (D, 4 * H)).astype(np.float32),
        rng.uniform(-s, s, (H, 4 * H)).astype(np.float32),
        np.zeros(4 * H, np.float32),
    )


class LongSequence:
    """T = 100,000 steps, B = 4, H = 256, final state only (``out=None``).

    Peak memory must not grow with T beyond the input itself (4 x T x 4
    floats: 6.4 MB at T = 100,000): compare the two ``steps`` values (the
    peak is the process's, imports and weights included, so only the
    difference says something). B = 4 is below the batches for which the
    cpu backend times its two thread splits (8-31 rows with these 1 MB of
    weights), whose first calls, seconds each here, would alternate.
    """

    params = [[1_000, 100_000], ["cpu"]]
    param_names = ["steps", "backend"]
    timeout = 600

    def setup(self, steps, backend):
        check_backend(backend)
        from fastrnn import dispatch
        from fastrnn.kernels import run

        self.run = run
        self.mod = dispatch.backend_module(backend)
        self.packed = self.mod.pack(_lstm(4, 256))
        self.x = inputs(4, steps, 4)
        self.states = [np.zeros((4, 256), np.float32) for _ in range(2)]
        self.outs = [np.empty((4, 256), np.float32) for _ in range(2)]
        self.run(self.mod, self.packed, self.x[:, :2], self.states, None, False, False, None,
                 self.outs)

    def _call(self):
        self.run(self.mod, self.packed, self.x, self.states, None, False, False, None, self.outs)

    def peakmem_lstm_final_state(self, steps, backend):
        self._call()

    def time_lstm_final_state(self, steps, backend):
        self._call()


class BenchGrid:
    """float32 LSTM at the shapes of ``python -m fastrnn bench`` (contract
    level), but 64,50,512,1024: 20e9 multiply-adds a call, too long for asv's
    repeats on a small machine."""

    params = [["1,100,64,128", "8,100,128,256", "32,100,256,512", "256,50,128,128"], ["cpu"]]
    param_names = ["B,T,D,H", "backend"]
    timeout = 300

    def setup(self, shape, backend):
        check_backend(backend)
        from fastrnn import dispatch
        from fastrnn.kernels import run

        B, T, D, H = (int(v) for v in shape.split(","))
        self.run = run
        self.mod = dispatch.backend_module(backend)
        self.packed = self.mod.pack(_lstm(D, H))
        self.x = inputs(B, T, D)
        self.states = [np.zeros((B, H), np.float32) for _ in range(2)]
        self.outs = [np.empty((B, H), np.float32) for _ in range(2)]
        self.out = np.empty((B, T, H), np.float32)
        warm(self.time_lstm, B)

    def time_lstm(self, *args):
        self.run(self.mod, self.packed, self.x, self.states, None, False, False, self.out,
                 self.outs)
