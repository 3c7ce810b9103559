"""TF1's ``tf.nn.rnn_cell`` classes on NumPy arrays, run by fastrnn's kernels.

Weights are kept exactly as TF1 stored them (names, shapes, order of
``tf.compat.v1.global_variables()``), so a checkpoint's arrays go straight
into :meth:`RNNCell.set_weights`. The built-in cells convert them once, when
they change, into the Keras layout and gate order of the kernel contract
(:mod:`fastrnn.kernels`): LSTM ``i, j, f, o`` becomes ``i, f, c, o`` with the
``(depth + units, 4 units)`` kernel split into ``kernel`` and
``recurrent_kernel``; GRU ``r, u`` gates plus candidate become ``z, r, h``
with ``reset_after=False``.

Cells
-----
``RNNCell``
    The abstract base. Subclass it and define ``state_size``,
    ``output_size`` and ``call(inputs, state) -> (output, new_state)`` (and
    ``build(inputs_shape)`` creating weights with :meth:`RNNCell.add_weight`
    if it has any); :func:`fastrnn.nn.dynamic_rnn` then runs it one step at
    a time in Python with TF1's semantics.
``BasicRNNCell``, ``GRUCell``, ``BasicLSTMCell``, ``LSTMCell``
    Built-in cells: :func:`fastrnn.nn.dynamic_rnn` runs each over the whole
    sequence in a single kernel call.
``MultiRNNCell``
    Stacks cells; runs layer after layer (one kernel call per built-in
    layer).
``DropoutWrapper``, ``ResidualWrapper``
    TF1's wrappers. Dropout is a training-time regulariser: with every keep
    probability at 1.0 (the default, and what inference wants) the wrapper
    is the identity and the fused kernels run; below 1.0 it drops at random
    on every call exactly as TF1 did, one step at a time.
"""

from ._base import LSTMStateTuple, RNNCell
from ._builtin import BasicLSTMCell, BasicRNNCell, GRUCell, LSTMCell
from ._wrappers import DropoutWrapper, MultiRNNCell, ResidualWrapper

__all__ = [
    "RNNCell",
    "BasicRNNCell",
    "GRUCell",
    "BasicLSTMCell",
    "LSTMCell",
    "MultiRNNCell",
    "LSTMStateTuple",
    "DropoutWrapper",
    "ResidualWrapper",
]

# The classes live in private modules (``_base``, ``_builtin``, ``_wrappers``);
# their public home is here, and reprs and pickles name it.
for _cls in (RNNCell, BasicRNNCell, GRUCell, BasicLSTMCell, LSTMCell, MultiRNNCell,
             LSTMStateTuple, DropoutWrapper, ResidualWrapper):
    _cls.__module__ = __name__
del _cls
