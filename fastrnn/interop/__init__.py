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


def from_keras(obj, **kwargs):
    """A live Keras 3 layer or model -> fastrnn (see :mod:`fastrnn.interop.keras`)."""
    from .keras import from_keras as _f

    return _f(obj, **kwargs)


def load_keras(path, **kwargs):
    """A ``.keras`` or ``.weights.h5`` file, or a Keras 2 SavedModel -> fastrnn
    model, without Keras (see :mod:`fastrnn.interop.keras_file`)."""
    from .keras_file import load_keras as _f

    return _f(path, **kwargs)


def from_torch(module, **kwargs):
    """A PyTorch recurrent module -> fastrnn (see :mod:`fastrnn.interop.torch`)."""
    from .torch import from_torch as _f

    return _f(module, **kwargs)


def from_torch_state_dict(state_dict, mode=None, **kwargs):
    """A PyTorch ``state_dict`` -> fastrnn (see :mod:`fastrnn.interop.torch_weights`)."""
    from .torch_weights import from_torch_state_dict as _f

    return _f(state_dict, mode, **kwargs)


def from_torch_weights(mode, w_ih, w_hh, b_ih=None, b_hh=None, **kwargs):
    """Arrays in PyTorch's layout (``w_ih``, ``w_hh``, ``b_ih``, ``b_hh``) -> fastrnn
    (see :mod:`fastrnn.interop.torch_weights`)."""
    from .torch_weights import from_torch_weights as _f

    return _f(mode, w_ih, w_hh, b_ih, b_hh, **kwargs)


__all__ = ["from_keras", "load_keras", "from_torch", "from_torch_state_dict",
           "from_torch_weights"]
