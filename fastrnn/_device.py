"""Where an array lives, and how layers compute on it without copies.

Layers call :func:`prepare` on their input: host arrays come back as NumPy
with ``numpy`` as the array namespace; GPU arrays (anything exposing the
CUDA Array Interface: CuPy arrays, Numba device arrays, PyTorch CUDA
tensors) come back as CuPy views of the same memory, with ``cupy`` as the
namespace and a function that turns a result back into the caller's kind.
Nothing here imports CuPy or PyTorch unless such an array arrives.
"""

from __future__ import annotations

import numpy as np


def is_device_array(x):
    """True for arrays in GPU memory (CUDA Array Interface or a CUDA tensor)."""
    if isinstance(x, np.ndarray):
        return False
    if hasattr(x, "__cuda_array_interface__"):
        return True
    return bool(getattr(x, "is_cuda", False))


def _identity(a):
    return a


def prepare(x):
    """Return ``(array, xp, restore)`` for an input ``x``.

    ``xp`` is the array namespace (``numpy`` or ``cupy``) the layer computes
    with, and ``restore(result)`` converts a result array back to the kind
    of ``x`` (a PyTorch CUDA tensor stays a tensor, a Numba device array
    stays one).
    """
    if not is_device_array(x):
        return x, np, _identity
    try:
        import cupy
    except ImportError as exc:  # pragma: no cover - needs a GPU build
        raise RuntimeError(
            "GPU arrays need CuPy: pip install 'fastrnn[cuda]'"
        ) from exc
    kind = type(x).__module__.split(".")[0]
    if kind == "torch":
        import torch

        return cupy.asarray(x.detach()), cupy, lambda a: torch.as_tensor(a, device=x.device)
    if kind == "numba":
        from numba import cuda

        return cupy.asarray(x), cupy, lambda a: cuda.as_cuda_array(a)
    return cupy.asarray(x), cupy, _identity
