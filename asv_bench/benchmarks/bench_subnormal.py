"""The CPU kernel families (packed float32 LSTM and GRU, generic float64
LSTM and GRU with ``reset_after=False``, one-core streams) on all-subnormal
inputs beside normal ones.

Subnormal floats (below 1.2e-38 in float32) take a slow microcode path on
many CPUs; with Keras's default zero biases and a zero initial state, an
all-subnormal input keeps every sum of products subnormal. The kernels
flush subnormals to zero while they run (``fastrnn.kernels.cpu.fpenv``):
compare ``inputs="subnormal"`` with ``inputs="normal"`` for each kernel.
"""

from __future__ import annotations

import numpy as np

from .common import check_backend, require_layers, warm

# name: (family, cell, dtype, B, T, H)
KERNELS = {
    "packed lstm float32 B=8": ("contract", "lstm", np.float32, 8, 100, 256),
    "packed gru float32 B=8": ("contract", "gru", np.float32, 8, 100, 256),
    "packed lstm float32 B=1": ("contract", "lstm", np.float32, 1, 100, 256),
    "generic lstm float64 B=8": ("contract", "lstm", np.float64, 8, 100, 128),
    "generic gru reset_after=False float32 B=4": ("contract", "gru_rb", np.float32, 4, 100, 128),
    "stream lstm float32 frames": ("frames", "lstm", np.float32, 1, 100, 256),
    "stream gru float32 chunk": ("chunk", "gru", np.float32, 1, 100, 256),
    "stream lstm float64 frames": ("frames", "lstm", np.float64, 1, 100, 128),
}
D = 64


def _inputs(B, T, dtype, subnormal, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((B, T, D))
    if subnormal:
        x = np.sign(x) * np.finfo(dtype).tiny * rng.uniform(0.01, 0.99, x.shape)
    return x.astype(dtype)


def _weights(cell, H, dtype, seed=1):
    rng = np.random.default_rng(seed)
    g = 4 if cell == "lstm" else 3
    s = 1.0 / np.sqrt(H)
    kernel = rng.uniform(-s, s, (D, g * H)).astype(dtype)
    rec = rng.uniform(-s, s, (H, g * H)).astype(dtype)
    bias = np.zeros(g * H if cell == "lstm" else (2, g * H), dtype)  # Keras's default
    return kernel, rec, bias


class Subnormal:
    """One call (a batch, or 100 frames of a stream) per sample."""

    params = [list(KERNELS), ["normal", "subnormal"]]
    param_names = ["kernel", "inputs"]
    timeout = 300

    def setup(self, kernel, inputs):
        check_backend("cpu")
        family, cell, dtype, B, T, H = KERNELS[kernel]
        x = _inputs(B, T, dtype, inputs == "subnormal")
        if family == "contract":
            self._contract(cell, dtype, B, T, H, x)
        else:
            self._stream(family, cell, dtype, H, x)
        warm(self.call, B)

    def _contract(self, cell, dtype, B, T, H, x):
        from fastrnn import dispatch
        from fastrnn.kernels import GRUParams, LSTMParams, run

        w = _weights("gru" if cell == "gru_rb" else cell, H, dtype)
        params = LSTMParams(*w) if cell == "lstm" else GRUParams(*w, reset_after=cell == "gru")
        mod = dispatch.backend_module("cpu")
        packed = mod.pack(params)
        states = [np.zeros((B, H), dtype) for _ in range(params.n_states)]
        outs = [np.empty_like(s) for s in states]
        out = np.empty((B, T, H), dtype)

        def call():
            run(mod, packed, x, states, None, False, False, out, outs)

        self.call = call

    def _stream(self, family, cell, dtype, H, x):
        require_layers()
        import fastrnn

        layer = (fastrnn.LSTM if cell == "lstm" else fastrnn.GRU)(
            H, return_sequences=family == "chunk", dtype=np.dtype(dtype).name)
        layer.build((1, None, D))
        layer.set_weights(list(_weights(cell, H, dtype)))
        stream = layer.stream(batch_size=1, threads=1)  # the stream kernels, never re-timed
        if family == "chunk":
            self.call = lambda: stream(x)
            return
        frames = [np.ascontiguousarray(x[:, t]) for t in range(x.shape[1])]

        def call():
            for f in frames:
                stream(f)

        self.call = call

    def time_call(self, kernel, inputs):
        self.call()
