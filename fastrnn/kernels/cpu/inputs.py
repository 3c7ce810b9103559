"""Inputs as the compiled kernels want them: one compiled kernel per dtype.

Numba types an array argument by dtype, dimensions, layout *and*
writability: a read-only array (``np.frombuffer`` of ``bytes``, a memmap
opened ``"r"``, an array a server received, ``np.broadcast_to``) would
compile a second copy of every kernel and helper it reaches (tens of
seconds), which ``python -m fastrnn warmup`` does not cover.

The kernels never write their inputs (``x``, masks, initial states,
weights), so :func:`writable` hands them a writable *view* of the same
memory instead: no copy, the same compiled kernels, the same results.
"""

from __future__ import annotations

import numpy as np


class _SameMemory:
    """The array interface of a read-only array with its read-only flag
    dropped; holds the array, so its memory outlives every view made from
    this object (NumPy keeps this object as the view's ``base``)."""

    __slots__ = ("__array_interface__", "_owner")

    def __init__(self, a):
        face = dict(a.__array_interface__)
        face["data"] = (face["data"][0], False)
        self.__array_interface__ = face
        self._owner = a


def writable(a):
    """``a`` itself when it is writable (or not an array), else a writable
    view of the same memory, same shape, strides and dtype.

    Only for arrays that compiled code reads and never writes: writing
    through the view writes into memory its owner declared read-only (a
    memmap opened ``"r"`` would fault).

    Parameters
    ----------
    a : numpy.ndarray or None
        Any shape.

    Returns
    -------
    numpy.ndarray or None
        Shape, strides and dtype of ``a``.
    """
    if not isinstance(a, np.ndarray) or a.flags.writeable:
        return a
    return np.asarray(_SameMemory(a))
