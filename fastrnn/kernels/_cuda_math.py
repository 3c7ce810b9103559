"""The scalar math of :mod:`fastrnn.kernels._math`, compiled for the GPU.

``_math`` is plain Python whose functions call each other by global name
(``activate`` calls ``sigmoid``). A CUDA kernel may call only CUDA device
functions, so each function is rebuilt here from its own code object with
its globals pointing at the device versions of its siblings, then wrapped
with ``cuda.jit(device=True, inline="always")``. The formulas stay written
once, in ``_math``; nothing here is an ``@njit`` function.
"""

from __future__ import annotations

import types

from numba import cuda

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
        dev = cuda.jit(device=True, inline="always")(clone)
        # Later clones (and kernels that look names up here) see the device one.
        env[name] = dev
        built[name] = dev
    return built


_built = _build()
sigmoid = _built["sigmoid"]
clip = _built["clip"]
activate = _built["activate"]
