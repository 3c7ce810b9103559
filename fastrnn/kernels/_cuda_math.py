"""The scalar math of :mod:`fastrnn.kernels._math`, compiled for the GPU.

A CUDA kernel may call only CUDA device functions: each function is rebuilt
with ``cuda.jit(device=True, inline="always")`` and its siblings' device
versions (:func:`fastrnn.kernels._math.compiled`); nothing here is an
``@njit`` function.
"""

from numba import cuda

from . import _math

sigmoid, clip, activate = _math.compiled(cuda.jit(device=True, inline="always"))
