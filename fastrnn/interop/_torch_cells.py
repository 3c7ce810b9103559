"""A private LSTM cell with an output projection (PyTorch ``proj_size``).

Keras has no projected LSTM, so :class:`~fastrnn.cells.LSTMCell` has no
projection argument; the kernels do (``LSTMParams.projection``). This cell
exposes it to the layers: ``h' = (o * tanh(c')) @ projection``, with
``h`` of size ``proj_size`` (``P``) and ``c`` of size ``units`` (``H``).
It is only built by the PyTorch converters. It is registered as a cell
(:mod:`fastrnn.serialization`) so that fastrnn's own files (``fastrnn.save``,
``Stream.save``) of the layers and streams of a converted projected LSTM
can rebuild it from its config (which adds ``proj_size`` to
:class:`~fastrnn.cells.LSTMCell`'s). Keras has no such class and never
writes its name.
"""

from __future__ import annotations

import numpy as np

from .. import serialization
from ..cells import LSTMCell
from ..kernels import LSTMParams


@serialization.register("cell")
class _ProjLSTMCell(LSTMCell):
    """LSTM cell (gates i, f, c, o) whose output is projected to ``proj_size``.

    States are ``[h (batch, P), c (batch, H)]``. Weights: ``kernel (D, 4H)``,
    ``recurrent_kernel (P, 4H)``, ``bias (4H,)`` (when ``use_bias``),
    ``projection (H, P)``.
    """

    # The kernels run this cell (see fastrnn.cells.is_builtin).
    _fastrnn_cell = True

    def __init__(self, units, proj_size, **kwargs):
        super().__init__(units, **kwargs)
        if isinstance(proj_size, bool) or not isinstance(proj_size, (int, np.integer)) \
                or not 0 < proj_size < self.units:
            raise ValueError(f"proj_size: expected an integer in [1, units={self.units}), "
                             f"got {proj_size!r}")
        self.proj_size = int(proj_size)
        self.projection = None

    @property
    def state_size(self):
        return [self.proj_size, self.units]

    @property
    def output_size(self):
        return self.proj_size

    def _weight_specs(self, input_dim):
        H, P = self.units, self.proj_size
        specs = [("kernel", (input_dim, 4 * H)), ("recurrent_kernel", (P, 4 * H))]
        if self.use_bias:
            specs.append(("bias", (4 * H,)))
        specs.append(("projection", (H, P)))
        return specs

    def build(self, input_shape):
        input_dim = input_shape if isinstance(input_shape, (int, np.integer)) else input_shape[-1]
        if self.built:
            return super().build(input_shape)
        weights = []
        for name, shape in self._weight_specs(int(input_dim)):
            init = {"kernel": self.kernel_initializer, "bias": None}.get(
                name, self.recurrent_initializer)
            weights.append(self._init_bias() if name == "bias" else init(shape, self.dtype))
        self.set_weights(weights)

    def _make_params(self):
        return LSTMParams(self.kernel, self.recurrent_kernel,
                          self._bias_or_zeros((4 * self.units,)), self.activation,
                          self.recurrent_activation, projection=self.projection)

    def get_config(self):
        return {**super().get_config(), "proj_size": self.proj_size}
