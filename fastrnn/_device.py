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


def flag(value, argument):
    """A boolean argument: True/False (NumPy's too) or 0/1, else a TypeError
    naming ``argument`` (``bool("False")`` is True: a string must not pass)."""
    if isinstance(value, (bool, np.bool_)) or (isinstance(value, (int, np.integer))
                                               and value in (0, 1)):
        return bool(value)
    raise TypeError(f"{argument}: expected True or False, got {value!r}")


def training_flag(value):
    """``training=``: None (Keras's "not set": inference) or a flag."""
    return False if value is None else flag(value, "training")


def _is_simulated(x):
    # Numba's CUDA simulator (NUMBA_ENABLE_CUDASIM=1) has fake device arrays
    # in host memory, without the CUDA Array Interface.
    return ".cuda.simulator." in type(x).__module__


def is_device_array(x):
    """True for arrays in GPU memory (CUDA Array Interface or a CUDA tensor).

    Under Numba's CUDA simulator its fake device arrays count too.
    """
    if isinstance(x, np.ndarray):
        return False
    if _is_simulated(x):
        return True
    if hasattr(x, "__cuda_array_interface__"):
        return True
    if bool(getattr(x, "is_cuda", False)):
        return True
    return _dlpack_on_gpu(x)


def _dlpack_on_gpu(x):
    # DLPack-only arrays (JAX, ...): device type 2 is CUDA, 13 CUDA managed.
    device = getattr(x, "__dlpack_device__", None)
    if device is None:
        return False
    try:
        return int(device()[0]) in (2, 13)
    except Exception:  # a producer that cannot say: not ours to take
        return False


def identity(a):
    """``restore`` for host inputs (see :func:`prepare`): the array itself."""
    return a



def prepare(x):
    """Return ``(array, xp, restore)`` for an input ``x``.

    ``xp`` is the array namespace (``numpy`` or ``cupy``) the layer computes
    with, and ``restore(result)`` converts a result array back to the kind
    of ``x`` (a PyTorch CUDA tensor stays a tensor, a Numba device array
    stays one; an array known only through DLPack comes back as CuPy).
    """
    if not is_device_array(x):
        return x, np, identity
    if _is_simulated(x):
        # No CuPy under the simulator: compute on the host copy it holds.
        from numba import cuda

        return x.copy_to_host(), np, cuda.to_device
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
    if not hasattr(x, "__cuda_array_interface__") and _dlpack_on_gpu(x):
        return cupy.from_dlpack(x), cupy, identity
    return cupy.asarray(x), cupy, identity


def host_array(x, argument):
    """``x`` (not a GPU array) as a plain NumPy array: a PyTorch CPU tensor
    without its autograd graph, bfloat16 (a PyTorch or ``ml_dtypes`` type)
    as float32, an ``ndarray`` subclass (``np.matrix``, ``np.memmap``) as a
    plain array of the same memory, anything else through
    ``numpy.asarray``. A ``numpy.ma.MaskedArray`` with masked values is a
    ``TypeError`` (its mask would be dropped); nested lists that do not form
    one array are a ``ValueError``; both name ``argument``."""
    if type(x) is np.ndarray and x.dtype.kind != "V":  # (the common case, first: streams)
        return x
    if type(x).__module__.split(".")[0] == "torch" and hasattr(x, "detach"):
        x = x.detach()
        if str(x.dtype) == "torch.bfloat16":
            x = x.float()
        return x.numpy()
    if isinstance(x, np.ma.MaskedArray):
        if np.ma.getmaskarray(x).any():
            skip = (", and the time steps to skip as mask="
                    if not argument.startswith(("mask", "states", "initial_state")) else "")
            raise TypeError(f"{argument}: a numpy.ma.MaskedArray with masked values, whose "
                            f"mask fastrnn would not read; pass plain values (x.filled(0))"
                            f"{skip}")
        x = x.data
    try:
        a = np.asarray(x)
    except ValueError as exc:  # ragged nested lists
        raise ValueError(f"{argument}: expected an array, got a {type(x).__name__} that "
                         f"does not form one ({exc})") from exc
    if a.dtype.kind == "V" and a.dtype.name == "bfloat16":  # (ml_dtypes')
        a = a.astype(np.float32)
    return a


def as_float_array(x, dtype, argument):
    """Validate an input array: numeric, floating (cast to ``dtype``), C-contiguous.

    A NumPy array, or a CuPy array for inputs on the GPU (see :func:`prepare`);
    no copy when it already is what is asked. Integer and other non-float
    inputs are a ``TypeError`` naming ``argument`` (they are not cast: an
    integer array is more often a mistake than data).
    """
    xp = np
    if is_device_array(x):
        import cupy as xp  # noqa: F811 - only reached with GPU arrays
    elif type(x) is not np.ndarray or x.dtype.kind == "V":
        # (a subclass would come back as the results' type; ml_dtypes'
        # bfloat16 is a plain array of kind "V")
        x = host_array(x, argument)
    kind = np.dtype(x.dtype).kind
    if kind in "iub":
        raise TypeError(f"{argument}: expected a floating-point array, got dtype {x.dtype}"
                        " (integer inputs are not cast; convert them explicitly)")
    if kind not in "f":
        raise TypeError(f"{argument}: expected a floating-point array, got dtype {x.dtype}")
    if x.dtype != dtype or not x.flags.c_contiguous:
        # (not ascontiguousarray, which makes a scalar 1-d: errors then
        # report the shape the caller passed)
        x = xp.asarray(x, dtype=dtype, order="C")
    return x
