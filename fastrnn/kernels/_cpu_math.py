"""The scalar math of :mod:`fastrnn.kernels._math`, compiled for the CPU.

``_math`` is plain Python whose functions call each other by global name
(``activate`` calls ``sigmoid``); wrapping only ``activate`` with ``njit``
would leave Numba facing the plain ``sigmoid``. Each function is rebuilt
from its own code object with globals pointing at the compiled siblings,
then wrapped with ``njit(inline="always")`` (the same scheme as
``_cuda_math`` for the GPU). The formulas stay written once, in ``_math``.
"""

from __future__ import annotations

import types

from numba import njit

from . import _math

# Dependency order: a function comes after every sibling it calls.
_NAMES = ("sigmoid", "clip", "activate")


def _build():
    env = dict(vars(_math))
    built = {}
    for name in _NAMES:
        fn = getattr(_math, name)
        clone = types.FunctionType(fn.__code__, env, name, fn.__defaults__, fn.__closure__)
        clone.__doc__ = fn.__doc__
        env[name] = built[name] = njit(inline="always")(clone)
    return built


_built = _build()
sigmoid = _built["sigmoid"]
clip = _built["clip"]
activate = _built["activate"]
