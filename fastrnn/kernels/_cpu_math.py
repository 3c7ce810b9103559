"""The scalar math of :mod:`fastrnn.kernels._math`, compiled for the CPU
(``njit(inline="always")``; :func:`fastrnn.kernels._math.compiled` says how).
"""

from numba import njit

from . import _math

sigmoid, clip, activate = _math.compiled(njit(inline="always"))
