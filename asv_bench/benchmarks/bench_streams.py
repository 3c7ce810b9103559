"""Streams with weights past one core's L2 (batch 1, D = H): one call (a
frame, or a chunk of 10 frames) on the one-core stream kernels and on the
two-core stream split (the engine a stream keeps after timing both), for
one layer and for a stack of two; and a model stream's frame."""

from __future__ import annotations

import numpy as np

from .common import inputs, require_layers, skip

THREADS = {"stream kernels": 1, "two-core split": 2}


def _forced(streaming, layer, x, steps, engine):
    """A stream on the engine named, for versions before ``threads=``."""
    saved = getattr(streaming, "TUNE_MIN_BYTES", None)
    if saved is None or not hasattr(streaming, "_SplitCalls"):
        skip("this version has no stream split")
    streaming.TUNE_MIN_BYTES = 0
    try:
        stream = layer.stream()
    finally:
        streaming.TUNE_MIN_BYTES = saved
    stream(x)  # builds
    which = "frame" if steps == 1 else "chunk"
    # the engine stays the one named: no timing round later (RETUNE_CALLS)
    retune = getattr(streaming, "RETUNE_CALLS", None)
    if retune is not None:
        streaming.RETUNE_CALLS = 1 << 62
    try:
        stream._keep(which, THREADS[engine] - 1, (0.0, 0.0))
    finally:
        if retune is not None:
            streaming.RETUNE_CALLS = retune
    return stream


class StreamEngines:
    params = [["lstm", "gru", "lstm x2"], [256, 512], [1, 10], list(THREADS)]
    param_names = ["cell", "units", "steps", "engine"]

    def setup(self, cell, H, steps, engine):
        require_layers()
        import fastrnn
        from fastrnn import dispatch, streaming

        if THREADS[engine] >= 2 and dispatch.get_num_threads() < 2:
            skip("one thread")
        if cell == "lstm x2":
            layer = fastrnn.RNN([fastrnn.LSTMCell(H), fastrnn.LSTMCell(H)],
                                return_sequences=steps > 1)
        else:
            layer = (fastrnn.LSTM if cell == "lstm" else fastrnn.GRU)(
                H, return_sequences=steps > 1)
        layer.build((1, None, H))
        rng = np.random.default_rng(0)
        s = 1.0 / np.sqrt(H)
        layer.set_weights([rng.uniform(-s, s, w.shape).astype(np.float32)
                           for w in layer.get_weights()])
        x = inputs(1, steps, H)
        self.x = np.ascontiguousarray(x[:, 0] if steps == 1 else x)
        try:
            self.stream = layer.stream(threads=THREADS[engine])  # kept for good, untimed
        except TypeError:  # a version without threads=
            self.stream = _forced(streaming, layer, self.x, steps, engine)
        self.stream(self.x)  # builds, compiles
        for _ in range(20):
            self.stream(self.x)

    def time_call(self, *args):
        self.stream(self.x)


class ModelStreamFrame:
    """One frame through a Keras-style model (LSTM, then a Dense softmax
    head) beside the same LSTM's own stream: what the per-step layers add
    to a frame."""

    params = [[64, 256], ["layer", "model"]]
    param_names = ["units", "what"]

    def setup(self, H, what):
        require_layers()
        import fastrnn

        if not hasattr(fastrnn.Sequential, "stream"):
            skip("this version has no model streams")
        from fastrnn.models import Dense

        rng = np.random.default_rng(0)
        layer = fastrnn.LSTM(H)
        layer.build((1, None, 40))
        s = 1.0 / np.sqrt(H)
        layer.set_weights([rng.uniform(-s, s, w.shape).astype(np.float32)
                           for w in layer.get_weights()])
        head = Dense(12, activation="softmax", input_dim=H)
        head.set_weights([rng.uniform(-s, s, (H, 12)).astype(np.float32),
                          np.zeros(12, np.float32)])
        model = fastrnn.Sequential([layer, head])
        self.stream = layer.stream(threads=1) if what == "layer" else model.stream(threads=1)
        self.x = np.ascontiguousarray(inputs(1, 1, 40)[:, 0])
        for _ in range(20):
            self.stream(self.x)

    def time_frame(self, *args):
        self.stream(self.x)
