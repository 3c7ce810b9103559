"""TF1-style API: ``tf.nn.dynamic_rnn`` and friends on NumPy arrays.

``fastrnn.nn`` mirrors ``tf.compat.v1.nn`` for recurrent networks, with
TF1's numerics and semantics (``sequence_length``, per-sequence reversal in
the bidirectional functions, ``LSTMStateTuple(c, h)``), running on
fastrnn's whole-sequence kernels: one kernel call per layer and direction
for the built-in cells, no Python loop over time.

>>> import numpy as np
>>> from fastrnn import nn
>>> cell = nn.rnn_cell.LSTMCell(8)
>>> x = np.random.rand(2, 5, 3).astype(np.float32)
>>> outputs, state = nn.dynamic_rnn(cell, x, sequence_length=[5, 2], dtype=np.float32)
>>> outputs.shape, state.c.shape
((2, 5, 8), (2, 8))
"""

from . import rnn_cell
from ._rnn import bidirectional_dynamic_rnn, dynamic_rnn, static_bidirectional_rnn, static_rnn

__all__ = [
    "rnn_cell",
    "dynamic_rnn",
    "static_rnn",
    "bidirectional_dynamic_rnn",
    "static_bidirectional_rnn",
]
