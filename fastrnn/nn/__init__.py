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

Weights come from a TF1 checkpoint without TensorFlow:
``cell.load_checkpoint("model.ckpt", scope="rnn")``, or
``load_checkpoint("model.ckpt")`` for every variable by name.
"""

from .. import _tf_bundle
from . import rnn_cell
from ._rnn import bidirectional_dynamic_rnn, dynamic_rnn, static_bidirectional_rnn, static_rnn


def load_checkpoint(path):
    """Every variable of a TensorFlow checkpoint, by name, without TensorFlow.

    Parameters
    ----------
    path : str or os.PathLike
        The checkpoint prefix (``model.ckpt``, as given to
        ``Saver.restore``), its ``.index`` file, or a directory holding a
        ``checkpoint`` file (its latest checkpoint).

    Returns
    -------
    dict of str to np.ndarray
        ``{"rnn/lstm_cell/kernel": array, ...}`` in the checkpoint's dtypes
        (bfloat16 as float32); see :func:`fastrnn.io.read_tf_checkpoint`.
    """
    return _tf_bundle.read_tf_checkpoint(path)


__all__ = [
    "rnn_cell",
    "dynamic_rnn",
    "static_rnn",
    "bidirectional_dynamic_rnn",
    "static_bidirectional_rnn",
    "load_checkpoint",
]
