"""Moving trained models into fastrnn, and fastrnn's own file format.

* :func:`from_keras` - a live Keras 3 layer or model -> fastrnn.
* :func:`load_keras` - a ``.keras`` / ``.weights.h5`` file (needs ``h5py``), a
  Keras 2 SavedModel directory or ``save_weights`` checkpoint -> a fastrnn
  model, without importing Keras or TensorFlow.
* :func:`from_torch`, :func:`from_torch_state_dict`, :func:`from_torch_weights` -
  PyTorch recurrent modules, checkpoints and bare PyTorch-layout arrays ->
  fastrnn objects with PyTorch's calling convention.

torch, keras and h5py are imported only inside the functions that use them.
"""

from __future__ import annotations

from .keras import from_keras
from .keras_file import load_keras
from .torch import from_torch
from .torch_weights import from_torch_state_dict, from_torch_weights

__all__ = ["from_keras", "load_keras", "from_torch", "from_torch_state_dict",
           "from_torch_weights"]
