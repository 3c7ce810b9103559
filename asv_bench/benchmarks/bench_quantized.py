"""Reduced-precision weights (``fastrnn.kernels.quantize``): the cpu
kernels on float32, bfloat16, int8 and the two dynamic modes' weights, at the batch shapes where
weights pass 1 MB (a step is then bound by bytes per step, not arithmetic)
and in streams (batch 1, one frame per call)."""

from __future__ import annotations

import numpy as np

from .common import check_backend, inputs, skip, warm

PRECISIONS = ["float32", "bfloat16", "int8", "int8_dynamic", "bfloat16_dynamic"]


def _params(cell, D, H, precision, seed=0):
    try:
        from fastrnn.kernels import GRUParams, LSTMParams, quantize
    except ImportError:
        skip("this version has no quantized weights")
    rng = np.random.default_rng(seed)
    g = 4 if cell == "lstm" else 3
    s = 1.0 / np.sqrt(H)
    kernel = rng.uniform(-s, s, (D, g * H)).astype(np.float32)
    rec = rng.uniform(-s, s, (H, g * H)).astype(np.float32)
    if cell == "lstm":
        params = LSTMParams(kernel, rec, rng.uniform(-s, s, g * H).astype(np.float32))
    else:
        params = GRUParams(kernel, rec, rng.uniform(-s, s, (2, g * H)).astype(np.float32))
    if precision == "float32":
        return params
    try:
        return quantize(params, precision)
    except ValueError:
        skip(f"this version has no {precision} mode")


class QuantizedBatch:
    """A whole sequence through the kernel contract (cpu backend)."""

    params = [["lstm 1,100,256,512", "lstm 8,50,512,512", "gru 1,100,256,512",
               "lstm 64,10,1024,1024"], PRECISIONS]
    param_names = ["cell B,T,D,H", "precision"]
    timeout = 300

    def setup(self, case, precision):
        check_backend("cpu")
        from fastrnn import dispatch
        from fastrnn.kernels import run

        cell, shape = case.split()
        B, T, D, H = (int(v) for v in shape.split(","))
        self.run = run
        self.mod = dispatch.backend_module("cpu")
        params = _params(cell, D, H, precision)
        self.packed = self.mod.pack(params)
        self.x = inputs(B, T, D)
        self.states = [np.zeros((B, H), np.float32) for _ in range(params.n_states)]
        self.outs = [np.empty((B, H), np.float32) for _ in self.states]
        self.out = np.empty((B, T, H), np.float32)
        warm(self.time_sequence, B)

    def time_sequence(self, *args):
        self.run(self.mod, self.packed, self.x, self.states, None, False, False, self.out,
                 self.outs)


class QuantizedStream:
    """One frame of a stream (batch 1, D = H), the stream kernels called directly."""

    params = [["lstm", "gru"], [512, 1024], PRECISIONS]
    param_names = ["cell", "units", "precision"]

    def setup(self, cell, H, precision):
        from fastrnn.kernels.cpu import stream

        self.frame = stream.frame
        self.w, self.cfg, n = stream.pack([_params(cell, H, H, precision)], 1, False)
        self.s = np.zeros(n, np.float32)
        self.work = np.zeros(stream.work_size(self.cfg, 1, 1), np.float32)
        self.x = inputs(1, 1, H)[:, 0].copy()
        self.out = np.empty((1, H), np.float32)
        self.time_frame()

    def time_frame(self, *args):
        self.frame(self.x, self.w, self.s, self.work, self.out, self.cfg)
