"""Backend registry and selection: which kernels run a layer, and why.

The choice, in order of precedence:

1. the layer's ``backend=`` argument, when it is not ``"auto"``;
2. the process-wide default set by :func:`set_backend`;
3. the ``FASTRNN_BACKEND`` environment variable;
4. ``"auto"``: ``cuda`` when a real GPU is present and the inputs are on
   it or the layer was placed there; otherwise ``cpu`` for every
   configuration it supports; otherwise ``reference`` (for example when an
   activation is a Python callable), with the reason.

An explicitly requested backend that cannot run raises an error saying why;
``auto`` never raises, it falls back and says so in the reason string.
"""

from __future__ import annotations

import importlib
import os
import threading
from typing import NamedTuple

BACKENDS = ("reference", "cpu", "cuda")
_CHOICES = BACKENDS + ("auto",)

_default = None
_lock = threading.Lock()
_modules = {}


class Choice(NamedTuple):
    """The backend picked for a layer: its name, its module, and why."""

    name: str
    module: object
    reason: str


def _check_name(name, argument="backend"):
    if name is None:
        return "auto"
    if not isinstance(name, str) or name.lower() not in _CHOICES:
        raise ValueError(f"{argument}: expected one of {list(_CHOICES)}, got {name!r}")
    return name.lower()


def _check_request(name, argument="backend"):
    """:func:`_check_name` for a backend the user names (``set_backend``, a
    layer's ``backend=``): a value that is not a str (or None) is a
    ``TypeError``, an unknown name a ``ValueError``."""
    if name is not None and not isinstance(name, str):
        raise TypeError(f"{argument}: expected a str or None, got {type(name).__name__} "
                        f"{name!r}")
    return _check_name(name, argument)


def backend_module(name):
    """Import and return the kernel module of backend ``name``.

    Raises ``RuntimeError`` when the module cannot be imported (for example
    the ``cuda`` backend without the ``fastrnn[cuda]`` extra).
    """
    name = _check_name(name)
    if name == "auto":
        raise ValueError("backend_module needs a concrete backend, not 'auto'")
    with _lock:
        if name not in _modules:
            try:
                _modules[name] = importlib.import_module(f"fastrnn.kernels.{name}")
            except ImportError as exc:  # missing optional dependency
                _modules[name] = exc
    mod = _modules[name]
    if isinstance(mod, Exception):
        raise RuntimeError(f"backend {name!r} cannot be imported: {mod}") from mod
    return mod


def available(name):
    """``(True, reason)`` when backend ``name`` can run on this machine."""
    try:
        mod = backend_module(name)
    except RuntimeError as exc:
        return False, str(exc)
    return mod.available()


def set_backend(name):
    """Set the process-wide default backend (``None`` or ``"auto"`` resets it).

    It applies to layers whose ``backend=`` is ``"auto"``, and comes before
    the ``FASTRNN_BACKEND`` environment variable. ``name`` of another type
    than str is a ``TypeError``, an unknown name a ``ValueError``.
    """
    global _default
    name = _check_request(name, "fastrnn.set_backend: name")
    _default = None if name == "auto" else name


# os.environ keeps its values in a dict keyed by encoded names: reading that
# dict skips the encoding and decoding of os.environ.get, which a one-step
# call pays for on every frame.
_ENV = getattr(os.environ, "_data", None)
_ENV_KEY = os.environ.encodekey("FASTRNN_BACKEND") if _ENV is not None else None


def default_key():
    """What the process-wide default depends on (cheap to read on every
    call; caches of choices key on it, :func:`get_backend` checks it)."""
    if _ENV is None:
        return _default, os.environ.get("FASTRNN_BACKEND")
    return _default, _ENV.get(_ENV_KEY)


def get_backend():
    """The process-wide default: set_backend's value, else $FASTRNN_BACKEND, else auto."""
    return _default_and_source()[0]


def _default_and_source():
    """``(get_backend(), where it comes from)``, the latter for messages:
    ``"fastrnn.set_backend"`` or ``"the FASTRNN_BACKEND environment variable"``
    (``None`` when neither is set: ``"auto"``)."""
    default = _default  # (read once: another thread may set it meanwhile)
    if default is not None:
        return default, "fastrnn.set_backend"
    name = _check_name(os.environ.get("FASTRNN_BACKEND") or "auto", "FASTRNN_BACKEND")
    return name, None if name == "auto" else "the FASTRNN_BACKEND environment variable"


def _supports_all(mod, params_list):
    """``(False, why)`` for the first record ``mod`` cannot run, else
    ``(True, notes)``: how it runs the quantized weights among them (a
    float32 speed where the kernels widen them first is worth saying)."""
    notes = []
    for params in params_list:
        ok, why = mod.supports(params)
        if not ok:
            return False, why
        if getattr(params, "quantized", None) is not None and why not in notes:
            notes.append(why)
    return True, "; ".join(notes)


def _reason(head, notes):
    return f"{head}; {notes}" if notes else head


def select(requested, params_list, on_device=False):
    """Pick the backend for a layer made of ``params_list``.

    Parameters
    ----------
    requested : str
        The layer's ``backend=`` argument.
    params_list : list of kernel parameter records
        One per recurrent layer the call will run.
    on_device : bool
        True when the inputs are GPU arrays or the layer was placed on the GPU.

    Returns
    -------
    Choice
    """
    requested = _check_name(requested)
    source = "the backend argument"
    if requested == "auto":
        requested, source = _default_and_source()
    if requested != "auto":
        ok, why = available(requested)
        if not ok:
            raise RuntimeError(f"backend {requested!r} was requested by {source} but {why}")
        mod = backend_module(requested)
        ok, why = _supports_all(mod, params_list)
        if not ok:
            raise ValueError(f"backend {requested!r} was requested by {source} but {why}")
        return Choice(requested, mod, _reason(f"{requested}: requested by {source}", why))
    return _auto(params_list, on_device)


def _callable_activation(params_list):
    for params in params_list:
        for name in ("activation", "recurrent_activation"):
            fn = getattr(params, name, None)
            if callable(fn):
                label = getattr(fn, "__name__", repr(fn))
                return f"{name} is a Python callable ({label}); only reference can run it"
    return None


def _auto(params_list, on_device):
    why = _callable_activation(params_list)
    if why:
        return Choice("reference", backend_module("reference"), "reference: " + why)
    notes = []
    if on_device:
        ok, why = available("cuda")
        if ok:
            # The CUDA simulator is "available" for explicit requests (tests)
            # but auto must only pick a real GPU.
            ok, why = backend_module("cuda").real_gpu()
        if ok:
            mod = backend_module("cuda")
            ok, why = _supports_all(mod, params_list)
            if ok:
                return Choice("cuda", mod, _reason(
                    "cuda: a GPU is present and the data or layer is on it", why))
        notes.append(f"not cuda: {why}")
    ok, why = available("cpu")
    if ok:
        mod = backend_module("cpu")
        ok, why = _supports_all(mod, params_list)
        if ok:
            reason = _reason("cpu: compiled kernels support this configuration", why)
            return Choice("cpu", mod, "; ".join([reason] + notes))
    notes.append(f"not cpu: {why}")
    return Choice("reference", backend_module("reference"), "reference: " + "; ".join(notes))


def set_num_threads(n):
    """Bound the threads one kernel call may use (``None``: all of Numba's pool).

    Dask workers and servers that run one model per core set this to 1. It
    applies to the ``cpu`` backend, process-wide.
    """
    backend_module("cpu").set_num_threads(n)


def get_num_threads():
    """The most threads one ``cpu`` kernel call uses."""
    return backend_module("cpu").get_num_threads()


_WARM_DTYPES = ("float32", "float64")


def _warmup_dtypes(dtypes, argument="dtypes"):
    """:func:`warmup`'s ``dtypes`` as a tuple of names: float32 and float64
    only (what the kernels compute in), a single one (a str or dtype) as
    itself; anything else an error naming ``argument``."""
    import numpy as np  # (this module imports nothing heavy at its top; fastrnn has numpy)

    if isinstance(dtypes, (str, np.dtype)) or (isinstance(dtypes, type)
                                                and issubclass(dtypes, np.generic)):
        dtypes = (dtypes,)
    try:
        items = list(dtypes)
    except TypeError:
        raise TypeError(f"{argument}: expected dtype names from {list(_WARM_DTYPES)} (one "
                        f"alone, or a sequence of them), got {type(dtypes).__name__} "
                        f"{dtypes!r}") from None
    names = []
    for item in items:
        if not isinstance(item, (str, np.dtype)) and not (
                isinstance(item, type) and issubclass(item, np.generic)):
            raise TypeError(f"{argument}: expected dtype names from {list(_WARM_DTYPES)}, got "
                            f"{type(item).__name__} {item!r}")
        try:
            name = np.dtype(item).name
        except (TypeError, ValueError):  # not a dtype NumPy knows
            name = None
        if name not in _WARM_DTYPES:
            raise ValueError(f"{argument}: expected dtypes from {list(_WARM_DTYPES)} (what "
                             f"fastrnn's kernels compute in), got {item!r}")
        if name not in names:
            names.append(name)
    return tuple(names)


def warmup(dtypes=("float32", "float64"), parallel=True, kinds=None, verbose=False,
           precisions=()):
    """Compile (or load from Numba's on-disk cache) the ``cpu`` kernels that
    layers, streams and cells run, so that no first call pays for it.

    Parameters
    ----------
    dtypes : str or sequence of str
        The float dtypes to compile for: ``"float32"``, ``"float64"`` (or
        their NumPy dtypes); a single one may be given alone. Anything else
        is an error, before anything compiles: a ``ValueError`` for another
        dtype (``"int32"``; for ``"bfloat16"`` weights see ``precisions``),
        a ``TypeError`` for a value that is not a dtype.
    parallel : bool
        Also the two-thread kernels (rows split and panels split); a process
        limited to one thread (``set_num_threads(1)``) never runs them.
    kinds : sequence of str, optional
        Only these, from ``"lstm"``, ``"gru"`` (``reset_after=True``),
        ``"gru reset_after=False"``, ``"simple_rnn"`` and ``"stream"`` (the
        stream kernels, which run every cell kind, and the compiled ``Dense``
        of model streams and small model calls); default: all of them. A
        cold compile of all takes minutes; of float32 ``("lstm", "gru")``
        (what ``python -m fastrnn bench`` runs) about a minute of one core.
    verbose : bool
        Print a line to stderr after each kernel family.
    precisions : sequence of str
        Reduced-precision weight formats (``"bfloat16"``, ``"int8"``,
        ``"int8_dynamic"``, ``"bfloat16_dynamic"``) whose packed LSTM and GRU
        kernels, and stream kernels (with ``"stream"`` in ``kinds``), to
        compile too, for float32.

    Returns
    -------
    list of str
        What was compiled or loaded, ``"<kind> <dtype>"``. ``python -m
        fastrnn warmup`` runs this with every kind.
    """
    dtypes = _warmup_dtypes(dtypes)
    cpu = backend_module("cpu")
    kinds = cpu.KINDS if kinds is None else kinds
    return cpu.warmup(dtypes=dtypes, parallel=parallel, kinds=kinds, verbose=verbose,
                      precisions=precisions)
