"""One Numba cache stamp for all the kernel sources.

Numba keys a cached function (``@njit(cache=True)``) on its own source file
only: an edit of a module it calls (the tiles, the gate math, the vector
type) would leave a stale compiled kernel in the cache. :func:`install`
adds cache locators, ahead of Numba's own, that apply to the files under
``fastrnn/kernels/`` and stamp their cache entries with a hash of every
``.py`` file there: any edit of any kernel source invalidates every cached
kernel, with nothing to remember by hand. Where the cache lives does not
change (``NUMBA_CACHE_DIR``, else ``__pycache__`` beside the sources, else
the user's cache directory).
"""

from __future__ import annotations

import hashlib
import os

_ROOT = os.path.dirname(os.path.abspath(__file__))
_memo = {}


def _sources():
    found = []
    for dirpath, dirnames, files in os.walk(_ROOT):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        found += [os.path.join(dirpath, f) for f in sorted(files) if f.endswith(".py")]
    return found


def stamp():
    """A hash of every kernel source file (recomputed when one changes on disk)."""
    files = _sources()
    key = tuple((p, os.stat(p).st_mtime_ns, os.stat(p).st_size) for p in files)
    got = _memo.get(key)
    if got is None:
        h = hashlib.sha256()
        for path in files:
            h.update(os.path.relpath(path, _ROOT).encode())
            with open(path, "rb") as f:
                h.update(f.read())
        got = _memo[key] = h.hexdigest()
    return got


def _kernel_locator(base):
    """``base`` (one of Numba's locators), for kernel files only, with :func:`stamp`."""

    def get_source_stamp(self):
        return stamp()

    def from_function(cls, py_func, py_file):
        if not os.path.abspath(py_file).startswith(_ROOT + os.sep):
            return None
        return base.from_function.__func__(cls, py_func, py_file)

    return type("Fastrnn" + base.__name__.lstrip("_"), (base,),
                {"get_source_stamp": get_source_stamp,
                 "from_function": classmethod(from_function)})


def install():
    """Put the kernel locators first in Numba's list (once per process)."""
    from numba.core import caching

    impl = getattr(caching, "CacheImpl", None) or caching._CacheImpl
    if getattr(impl, "_fastrnn_locators", False):
        return
    wanted = ("UserProvidedCacheLocator", "InTreeCacheLocator", "UserWideCacheLocator")
    ours = [_kernel_locator(c) for c in impl._locator_classes if c.__name__.lstrip("_") in wanted]
    impl._locator_classes = ours + list(impl._locator_classes)
    impl._fastrnn_locators = True
