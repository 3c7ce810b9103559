"""Scale-out on Dask: score chunked datasets with any fastrnn layer or model.

fastrnn schedules nothing across processes or machines itself: this module
turns a model and a chunked dataset into Dask tasks, and Dask runs them on a
laptop (threads, or a ``LocalCluster``) or on a cluster. Needs the optional
extra ``pip install "fastrnn[dask]"`` (``dask[array,dataframe]``,
``distributed``, ``zarr``, ``pyarrow``); Dask is imported only when a
function here runs, so ``import fastrnn`` never imports it.

Public names
------------
:func:`predict`
    A model over a ``dask.array`` ``(n, time, features)`` -> a lazy
    ``dask.array`` with one output per sample, chunked like the input's
    sample axis.
:func:`predict_partitions`
    A model over a ``dask.dataframe`` column holding variable-length
    sequences (a Parquet list column) -> one output per row.
:class:`FastrnnPlugin`
    A ``distributed`` worker plugin: warms the compiled kernels on each
    worker and caps fastrnn's threads at the worker's ``nthreads``.
:mod:`fastrnn.cli.predict`
    ``python -m fastrnn predict MODEL INPUT OUTPUT`` runs these from the
    command line.

The model
---------
Any fastrnn layer (``LSTM``, ``GRU``, ``SimpleRNN``, ``RNN``,
``Bidirectional``) or model: any object callable as ``model(x, mask=...)``
returning one array. It must be built (weights set) before it is handed to
Dask; an unbuilt layer would otherwise build itself with different random
weights in every task. The model enters the task graph **once**: with a
``distributed`` client active it is scattered to the workers (one key that
every task refers to, fetched once per worker); otherwise it is one
``dask.delayed`` key shared by all tasks. It is never copied into each task
(Dask's ``sizeof`` cannot see a custom object's weights, so passing it as a
keyword to ``map_blocks`` would silently pickle it once per chunk).

The graph computes with the model as it was when :func:`predict` or
:func:`predict_partitions` was called, on every scheduler: a scatter to
worker processes serializes it then, and otherwise (Dask's threads, or
workers in this process) the key holds a deep copy made then (one copy of
the weights), so ``set_weights`` or ``quantize`` afterwards changes only
the graphs built after it. ``copy.deepcopy`` gives a function back as
itself, so a model that is or holds a plain function of the user's (a
lambda, a closure, a bound method, a ``functools.partial``) is copied by a
cloudpickle round trip instead, on every scheduler, as a worker process
would receive it: the copy holds copies of the layers the function closes
over or takes as defaults, and of the globals that a function defined in
``__main__`` or inside another function reads. A function importable by
name pickles by reference, with no copy of the layers it reads from its
module's globals (a worker process would read its own module's): such a
model is a ``TypeError`` (pass the layers in). A model that needs
``time_major`` inputs (``(time, batch, features)``) or holds a
``stateful`` layer is refused, at any depth: in a ``Sequential``, a
wrapper, a user's object, a function's closure, defaults or the globals
its code names. The tasks feed ``(batch, time, features)`` and split the
batch axis.
"""

from __future__ import annotations

import copy
import functools
import os
import pickle
import types

import numpy as np

from . import _device, dispatch
from .bidirectional import Bidirectional
from .layers import RNN
from .models import (Activation, Dense, Dropout, Embedding, InputLayer, Layer, Masking,
                     ModelStream, Sequential, TimeDistributed)
from .streaming import Stream

# (FastrnnPlugin comes from the module __getattr__, below)
__all__ = ["predict", "predict_partitions", "FastrnnPlugin"]  # noqa: F822

# Threads each task may give fastrnn's kernels in this process: set by
# FastrnnPlugin on a worker (the worker's nthreads) and by the CLI's local
# mode. None leaves the process default alone.
_TASK_THREADS = None

# Model file suffixes `python -m fastrnn predict` refuses with a reason, rather than a loader's
# traceback: none of them is a fastrnn or Keras 3 model file.
_REFUSED_MODEL_SUFFIXES = {
    ".pt": "a PyTorch file; convert it with fastrnn.from_torch and fastrnn.save",
    ".pth": "a PyTorch file; convert it with fastrnn.from_torch and fastrnn.save",
    ".onnx": "an ONNX file, which fastrnn does not read",
    ".pkl": "a pickle, which fastrnn never loads (it runs arbitrary code)",
    ".pickle": "a pickle, which fastrnn never loads (it runs arbitrary code)",
    ".npy": "an array, not a model",
    ".npz": "an array archive, not a model",
    ".weights.h5": ("Keras weights without their model config; load it in Python with "
                    "fastrnn.load_keras(path, config=...) and fastrnn.save the result"),
    ".index": ("a TensorFlow checkpoint, weights without the model; load it in Python "
               "(fastrnn.load_keras(path, config=...) for Keras 2 save_weights, "
               "cell.load_checkpoint for TF1 cells) and fastrnn.save the result"),
}


# --------------------------------------------------------------------------
# imports and helpers
# --------------------------------------------------------------------------

def _import_dask():
    try:
        import dask
        import dask.array as da
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("fastrnn.dask needs Dask: pip install 'fastrnn[dask]'") from exc
    return dask, da


def _current_client():
    """The ``distributed`` client that Dask would compute on now, or None.

    None under ``dask.config.set(scheduler="threads")`` (or "sync",
    "processes") even when a client exists, and for asynchronous clients.
    """
    try:
        from distributed import Client
    except ImportError:
        return None
    from dask.base import get_scheduler

    client = getattr(get_scheduler(), "__self__", None)
    if not isinstance(client, Client) or getattr(client, "asynchronous", False):
        return None
    return client


def _is_recurrent_layer(model):
    return isinstance(model, (RNN, Bidirectional))


def _is_ours(obj):
    return type(obj).__module__.split(".")[0] == "fastrnn"


# Never looked into: they hold no layer a model could call.
_LEAVES = (str, bytes, bytearray, int, float, complex, type(None), np.ndarray, np.generic,
           type, types.ModuleType, types.BuiltinFunctionType, types.CodeType)


def _code_names(code):
    """The global names ``code`` and the functions defined inside it read."""
    names, todo = set(), [code]
    while todo:
        c = todo.pop()
        names.update(c.co_names)
        todo.extend(k for k in c.co_consts if isinstance(k, types.CodeType))
    return names


def _function_refs(fn):
    """What a plain function reads besides its arguments: its closure, its
    defaults, its attributes and the module globals its code names."""
    refs = []
    for cell in fn.__closure__ or ():
        try:
            refs.append(cell.cell_contents)
        except ValueError:  # (an empty cell)
            pass
    refs.extend(fn.__defaults__ or ())
    refs.extend((fn.__kwdefaults__ or {}).values())
    refs.extend(vars(fn).values())
    g = fn.__globals__
    refs.extend(g[name] for name in sorted(_code_names(fn.__code__)) if name in g)
    return refs


def _walk(model):
    """``(parts, functions)``: ``model`` and every fastrnn object reachable
    from it, at any depth, and the plain Python functions (not fastrnn's own)
    on the way.

    Looked into: lists, tuples, sets and dicts; a ``Sequential``'s
    ``layers``, a wrapper's ``layer``, a ``Bidirectional``'s two halves
    (fastrnn objects' attributes that are fastrnn objects or containers);
    a user object's attributes; a function's closure, defaults and the
    module globals its code names; a bound method's object; a
    ``functools.partial``'s function and arguments.
    """
    seen, parts, functions, todo = set(), [], [], [model]
    while todo:
        obj = todo.pop()
        if id(obj) in seen or (obj is not model and isinstance(obj, _LEAVES)):
            continue
        seen.add(id(obj))
        if isinstance(obj, (list, tuple, set, frozenset)):
            todo.extend(reversed(list(obj)))
            continue
        if isinstance(obj, dict):
            todo.extend(reversed(list(obj.values())))
            continue
        ours = _is_ours(obj)
        if obj is model or ours:
            parts.append(obj)
        if isinstance(obj, types.FunctionType):
            if not obj.__module__ or obj.__module__.split(".")[0] != "fastrnn":
                functions.append(obj)
                todo.extend(reversed(_function_refs(obj)))
            continue
        if isinstance(obj, types.MethodType):
            todo.extend([obj.__func__, obj.__self__])
            continue
        if isinstance(obj, functools.partial):
            todo.extend(reversed([obj.func, *obj.args, *obj.keywords.values()]))
            continue
        try:
            state = vars(obj)
        except Exception:  # noqa: BLE001 - no __dict__ (or a proxy that refuses it)
            continue
        if not isinstance(state, dict):
            continue
        values = list(state.values())
        if ours:  # fastrnn's own: its layers, not its helpers
            values = [v for v in values if isinstance(v, (list, tuple, dict)) or _is_ours(v)]
        todo.extend(reversed(values))
    return parts, functions


def _parts(model):
    """``model`` and every fastrnn layer inside it, at any depth (see :func:`_walk`):
    in a ``Sequential``, a wrapper, a user's object or closure."""
    return _walk(model)[0]


def _label_of(part, model):
    if part is model:
        return _label(model)
    return f"layer {getattr(part, 'name', None) or type(part).__name__!r}"


def _check_model(model):
    """Reject, before any task exists, a model that cannot run per chunk."""
    if isinstance(model, (Stream, ModelStream)):
        what = "model" if isinstance(model, ModelStream) else "layer"
        raise TypeError(f"model: a {type(model).__name__} carries state from one call to the "
                        "next, which has no meaning across independent chunks; predict its "
                        f"{what} (stream.{what}) instead")
    if not callable(model):
        raise TypeError(f"model: expected a fastrnn layer or model (callable as model(x, "
                        f"mask=...)), got {type(model).__name__}")
    try:
        built = bool(getattr(model, "built", True))
    except ValueError:
        built = False
    if not built:
        raise ValueError(
            f"model: {type(model).__name__} was never built. Call model.build(input_shape) "
            "or model.set_weights(...) (or load it) before predict: every task would "
            "otherwise build its own copy with different random weights")
    if getattr(model, "return_state", False):
        raise ValueError("model: return_state=True returns several arrays; fastrnn.dask.predict "
                         "needs a model with one output array (build it with return_state=False)")
    parts = _parts(model)
    for part in parts:
        if getattr(part, "stateful", False) is True:
            raise ValueError(f"model: {_label_of(part, model)} is stateful=True: it carries "
                             "state from one call to the next, which has no meaning across "
                             "independent chunks; use stateful=False")
    for part in parts:
        # fastrnn.dask gives the model (rows, time, ...) and splits and pads the
        # rows: a layer that reads axis 0 as time would mix samples and steps.
        if getattr(part, "time_major", False) is True:
            raise ValueError(f"model: {_label_of(part, model)} is time_major=True (inputs "
                             "(time, batch, features)); fastrnn.dask feeds (batch, time, "
                             "features) and splits the batch axis into chunks: build the model "
                             "with time_major=False (the same weights)")
        if getattr(part, "batch_first", True) is False:
            raise ValueError(f"model: {_label_of(part, model)} is batch_first=False (inputs "
                             "(time, batch, features)); fastrnn.dask feeds (batch, time, "
                             "features) and splits the batch axis into chunks: use "
                             "batch_first=True")


def _first_layers(model):
    """The layers a model's input meets first, in order: a ``Sequential``'s
    ``layers`` (a ``TimeDistributed`` as its inner layer), else the model."""
    layers = getattr(model, "layers", None)
    if not isinstance(layers, (list, tuple)):
        return [model]
    return [layer.layer if isinstance(layer, TimeDistributed) else layer for layer in layers]


def _passes_inputs_on(layer):
    """A layer without weights (``InputLayer``, ``Masking``, ``Dropout``,
    ``Activation``): it hands its input on in the input's dtype and features,
    whatever its own ``dtype`` says."""
    return isinstance(layer, Layer) and not layer._weight_names


def _model_dtype(model):
    """The float dtype to pad inputs in: the model's, or that of its first layer
    that computes (one with weights), or float32."""
    for part in [model] + _first_layers(model):
        if _passes_inputs_on(part):
            continue
        dtype = getattr(part, "dtype", None)
        try:
            if dtype is not None and np.dtype(dtype).kind == "f":
                return np.dtype(dtype)
        except TypeError:
            pass
        if part is not model:
            break
    return np.dtype(np.float32)


# _input_features for a model that takes token ids (it starts with an Embedding).
_TOKENS = "tokens"


def _input_features(model):
    """The feature count the model takes, read off its first layer that reads
    features (a built recurrent layer's kernel, a ``Dense`` kernel, an
    ``InputLayer``'s declared shape); :data:`_TOKENS` for a model that starts
    with an ``Embedding``; None where the model does not say."""
    for part in _first_layers(model):
        if isinstance(part, Bidirectional):
            part = part.forward_layer
        if isinstance(part, RNN):
            d = getattr(part.cells[0], "input_dim", None) if part.cells else None
            return int(d) if d else None
        if isinstance(part, Embedding):
            return _TOKENS
        if isinstance(part, Dense):
            kernel = part.kernel
            return int(kernel.shape[0]) if kernel is not None else None
        if isinstance(part, InputLayer):
            shape = part.batch_shape
            if shape is not None and len(shape) >= 3 and shape[-1] is not None:
                return int(shape[-1])
            continue
        if _passes_inputs_on(part):
            continue
        return None
    return None


def _call_model(model, x, mask):
    if mask is None:
        return model(x)
    return model(x, mask=mask)


def _single_output(y, where):
    if isinstance(y, (list, tuple)):
        raise ValueError(f"model: returned {len(y)} arrays {where}; fastrnn.dask needs one "
                         "output array (return_state=False, and merge_mode other than None "
                         "for Bidirectional)")
    return np.asarray(y)


def _run_batches(model, x, mask, batch_size):
    """``model`` over rows of ``x`` in slices of ``batch_size`` (None: all at once)."""
    n = x.shape[0]
    if batch_size is None or batch_size >= n:
        return _single_output(_call_model(model, x, mask), "for a chunk")
    out = None
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        y = _single_output(
            _call_model(model, x[start:stop], None if mask is None else mask[start:stop]),
            "for a chunk")
        if out is None:
            out = np.empty((n,) + y.shape[1:], y.dtype)
        out[start:stop] = y
    return out


def _own_mask_layer(model):
    """The first layer on the way to ``model``'s first recurrent layer that
    makes the mask itself, ignoring the one given with the inputs (an
    ``Embedding``: from token 0 with ``mask_zero=True``, none without; a
    ``Masking``: from its ``mask_value``), and whether only layers that are
    the identity at inference (``InputLayer``, ``Dropout`` and its kin) come
    before it, so that its mask is the one of the inputs as given. None
    when the given mask reaches a recurrent layer, or the model does not
    say (a function)."""
    first = True
    for part in _first_layers(model):
        if isinstance(part, (RNN, Bidirectional)):
            return None
        if isinstance(part, (Embedding, Masking)):
            return part, first
        if not isinstance(part, (InputLayer, Dropout)):
            first = False
    return None


def _describe_mask_layer(layer):
    if isinstance(layer, Embedding):
        return f"Embedding {layer.name!r} (mask_zero={layer.mask_zero})"
    return f"Masking {layer.name!r} (mask_value={layer.mask_value})"


def _check_mask_arrives(model, arg):
    """Refuse ``lengths`` / ``mask`` (named ``arg``) where they would change
    nothing: the model's first layers make its mask themselves. An
    ``Embedding(mask_zero=True)`` or a ``Masking`` on the inputs as given is
    checked per chunk instead (:func:`_check_padding_masked`): where it masks
    every step ``arg`` masks, the result is the same."""
    found = _own_mask_layer(model)
    if found is None:
        return
    layer, first = found
    if isinstance(layer, Embedding) and not layer.mask_zero:
        raise ValueError(
            f"{arg}: the model's {_describe_mask_layer(layer)} passes no mask on, so {arg} "
            "would change nothing: every row would run over its padding. Build the Embedding "
            f"with mask_zero=True and pad with 0, or leave {arg} out")
    if not first:
        raise ValueError(
            f"{arg}: the model's {_describe_mask_layer(layer)} makes the mask from what the "
            f"layers before it return and replaces the one {arg} give, so {arg} would change "
            "nothing; leave it out")


def _check_padding_masked(model, x, mask, arg, first_row):
    """Where the model's first layer makes its own mask from ``x`` (see
    :func:`_own_mask_layer`), every step ``mask`` (from ``arg``) masks must be
    masked by it too: that mask replaces ``mask``, and a step only ``arg``
    masks would run. ``x``'s rows are rows ``first_row ...`` of the input."""
    found = _own_mask_layer(model)
    if found is None or mask is None:
        return
    layer, first = found
    if not first:
        return  # (refused up front by _check_mask_arrives)
    own = layer.compute_mask(x, None)
    if own is None:
        return
    runs = np.asarray(own) & ~np.asarray(mask, bool)
    if runs.any():
        row, step = (int(i[0]) for i in np.nonzero(runs))
        pad = "0" if isinstance(layer, Embedding) else f"{layer.mask_value!r} in every feature"
        raise ValueError(
            f"{arg}: row {first_row + row} has step {step} masked by {arg} but "
            f"not by the model's {_describe_mask_layer(layer)}, which makes the mask from the "
            f"inputs and replaces the one {arg} give, so that step would run: pad with {pad} "
            f"where {arg} masks")


def _run_masked(model, x, mask, batch_size, arg, first_row):
    """:func:`_run_batches` with ``mask`` made by the caller from ``arg``
    (checked to reach the recurrent layers: :func:`_check_padding_masked`)."""
    _check_padding_masked(model, x, mask, arg, first_row)
    return _run_batches(model, x, mask, batch_size)


def _check_batch_size(batch_size):
    if batch_size is None:
        return None
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
            or batch_size < 1:
        raise ValueError(f"batch_size: expected a positive integer or None, got {batch_size!r}")
    return int(batch_size)


def _label(obj):
    """A model or layer as an error message names it."""
    if isinstance(obj, (types.FunctionType, types.MethodType)):
        return f"function {obj.__module__}.{obj.__qualname__}"
    return type(obj).__name__


def _snapshot(model):
    """A copy of ``model``: the weights it holds now, whatever is done to the
    model later.

    A model that holds no Python function of the user's is deep-copied: one
    copy of the arrays it holds (fastrnn layers leave their packed kernel
    forms out of a copy and make them again on first use). A function, a
    closure, a bound method or a ``functools.partial`` (or an object holding
    one) makes a round trip through cloudpickle instead, as a worker process
    would receive it: ``copy.deepcopy`` returns a function as itself, with the
    layers it closes over. A function importable by name is pickled by
    reference, so the layers it reads from its module's globals would not be
    copied: a copy that still shares a fastrnn layer with ``model`` is a
    ``TypeError``.
    """
    parts, functions = _walk(model)
    if functions and not _is_ours(model):
        import cloudpickle  # (comes with Dask)

        try:
            snapshot = cloudpickle.loads(cloudpickle.dumps(model,
                                                           protocol=pickle.HIGHEST_PROTOCOL))
        except Exception as exc:  # noqa: BLE001 - whatever pickling a user's object raises
            raise TypeError(f"model: {_label(model)} cannot be copied: cloudpickle failed "
                            f"({type(exc).__name__}: {exc}); the graph runs on a copy made at "
                            "the call, so that changes to the model made afterwards do not "
                            "reach it") from exc
    else:
        try:
            snapshot = copy.deepcopy(model)
        except (TypeError, copy.Error, pickle.PicklingError, NotImplementedError) as exc:
            raise TypeError(f"model: {_label(model)} cannot be copied ({exc}); the graph "
                            "runs on a copy made at the call, so that changes to the model made "
                            "afterwards do not reach it") from exc
    copied_parts, copied_functions = _walk(snapshot)
    kept = {id(p) for p in copied_parts}
    shared = [p for p in parts if p is not model and _is_ours(p) and id(p) in kept
              and callable(getattr(p, "get_weights", None))]  # (a layer, with weights)
    if shared:
        kept_functions = {id(f) for f in copied_functions}
        by_name = [f for f in functions if id(f) in kept_functions]
        via = (f" ({_label(by_name[0])} is pickled by reference: the copy reads the layers in "
               "its module's globals, as a worker process reads its own module's)"
               if by_name else "")
        raise TypeError(
            f"model: the copy made at the call still shares {_label_of(shared[0], model)} "
            f"with {_label(model)}{via}, so changes made to it afterwards would reach the graph, "
            "and worker processes would not run it as it is now; pass the layers in: as "
            "arguments (functools.partial(fn, layer)), in a closure, or in an object holding "
            "them")
    return snapshot


def _in_process(client):
    """Whether ``client``'s workers run in this process (``LocalCluster(processes=False)``):
    then a scattered object is shared, not serialized."""
    address = getattr(getattr(client, "scheduler", None), "address", None) or ""
    return str(address).startswith("inproc://")


def _model_ref(model):
    """One graph key holding the model as it is now: scattered to a live client,
    else a delayed.

    The graph computes with the weights the model has at this call, on every
    scheduler: a scatter to worker processes serializes it now; otherwise
    (threads, or workers in this process, which would share the object) the
    key holds a copy made now.
    """
    dask, _ = _import_dask()
    client = _current_client()
    if client is None or _in_process(client) or (_walk(model)[1] and not _is_ours(model)):
        # (worker processes receive the model serialized at the scatter, now:
        # a copy, except for the layers a function reads from its module's
        # globals, which _snapshot refuses)
        model = _snapshot(model)
    if client is not None:
        # Not broadcast: the Active Memory Manager drops replicas that no task
        # waits for yet, so copies sent up front were dropped again (and sent
        # twice) when the graph came a moment later. Each worker fetches the
        # key once, with its first task that needs it, and keeps it while
        # tasks that need it are waiting.
        return client.scatter(model, hash=True)
    return dask.delayed(model, pure=True)


class _MappedFile:
    """An array in a file (a ``.npy`` or any ``np.memmap``), mapped where it is read.

    Pickles as its path, offset, dtype and shape (a memory map pickles as
    its whole contents), so a task graph over a large file stays small; on a
    cluster the path must be readable by every worker.
    """

    def __init__(self, path, dtype, shape, offset=0, order="C"):
        self.path, self.offset, self.order = os.path.abspath(path), int(offset), order
        self.dtype, self.shape = np.dtype(dtype), tuple(shape)
        self.ndim = len(self.shape)
        self._map = None

    @classmethod
    def from_npy(cls, path):
        head = np.load(path, mmap_mode="r")
        return cls(path, head.dtype, head.shape, head.offset,
                   "F" if head.flags.f_contiguous and not head.flags.c_contiguous else "C")

    @classmethod
    def from_memmap(cls, m):
        """For a memmap of a whole file region (not a view of one), else None
        (also for a copy-on-write map, ``mode="c"``: its edits are in this
        process's memory only, not in the file the tasks would read)."""
        import mmap

        if getattr(m, "filename", None) is None or not isinstance(m.base, mmap.mmap) \
                or getattr(m, "mode", None) == "c":
            return None
        return cls(m.filename, m.dtype, m.shape, m.offset,
                   "F" if m.flags.f_contiguous and not m.flags.c_contiguous else "C")

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k != "_map"}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._map = None

    def __getitem__(self, item):
        if self._map is None:
            self._map = np.memmap(self.path, dtype=self.dtype, mode="r", shape=self.shape,
                                  offset=self.offset, order=self.order)
        return np.asarray(self._map[item])


# --------------------------------------------------------------------------
# predict over a dask.array
# --------------------------------------------------------------------------

def _predict_block(model, rows, x, extra=None, *, kind=None, batch_size=None, tail=(),
                   out_dtype=None):
    """One chunk: ``x (b, time, features)`` (plus its lengths or mask) -> outputs;
    ``rows``: the chunk's row numbers in the whole array (for errors)."""
    x = np.asarray(x)
    n, t = x.shape[0], x.shape[1]
    if n == 0:
        return np.empty((0,) + tuple(tail), out_dtype)
    mask = None
    if kind == "lengths":
        lengths = np.asarray(extra)
        if lengths.size and (lengths.min() < 0 or lengths.max() > t):
            raise ValueError(f"lengths: expected values in [0, {t}] (the time axis), got "
                             f"values in [{lengths.min()}, {lengths.max()}]")
        mask = np.arange(t)[None, :] < lengths[:, None]
    elif kind == "mask":
        mask = np.asarray(extra)
    return _run_masked(model, x, mask, batch_size, kind, int(rows[0]))


def _output_spec(model, x_shape, x_dtype):
    """Output shape and dtype, from one run of the model in this process.

    The model runs on zeros of shape ``(1, time, ...)`` (one row, the full
    time axis, since a model may fix it, as a Keras ``InputLayer`` does): a
    wrong feature count, time length, dtype or rank fails here, before any
    task exists, and the output's trailing shape and dtype are read off the
    result. ``compute_output_shape`` is not needed.
    """
    probe = np.zeros((1,) + tuple(x_shape[1:]), x_dtype)
    try:
        y = _call_model(model, probe, None)
    except (ValueError, TypeError) as exc:
        raise type(exc)(f"model: does not accept inputs like x {tuple(x_shape)} of dtype "
                        f"{np.dtype(x_dtype)} ({exc})") from exc
    # (outside the try: a model that returns several arrays is the model's
    # fault, not the input's)
    y = _single_output(y, "on a probe input")
    if y.ndim < 1 or y.shape[0] != 1:
        raise ValueError(f"model: expected one output row per input row, got shape {y.shape} "
                         f"for a probe of shape {probe.shape}")
    return (x_shape[0],) + y.shape[1:], y.dtype


def _rechunk_hint(what, x_is_dask, axes):
    """How to line ``what`` up with x's sample chunks: rechunk it like
    ``x.chunks[0]`` when x is a dask array; when x is not, its chunks are
    made by predict, so ``what`` is best given in memory."""
    if x_is_dask:
        return f"use {what}.rechunk({axes})"
    return (f"x is not a dask array, so predict chose its chunks: pass {what} as a NumPy "
            f"array ({what}.compute()), which is chunked like x, or pass x as a dask array "
            f"and {what}.rechunk({axes})")


def _lengths_array(lengths, n, t, sample_chunks, da, x_is_dask=True):
    if isinstance(lengths, da.Array):
        if lengths.ndim != 1 or lengths.shape[0] != n:
            raise ValueError(f"lengths: expected shape (n,) = ({n},), got {lengths.shape}")
        if np.dtype(lengths.dtype).kind not in "iu":
            raise TypeError(f"lengths: expected integers, got dtype {lengths.dtype}")
        if tuple(lengths.chunks[0]) != tuple(sample_chunks):
            raise ValueError(
                f"lengths: chunks {tuple(lengths.chunks[0])} do not line up with x's chunks "
                f"along the sample axis {tuple(sample_chunks)}; "
                + _rechunk_hint("lengths", x_is_dask, "(x.chunks[0],)"))
        return lengths
    arr = _device.host_array(lengths, "lengths")
    if arr.shape != (n,):
        raise ValueError(f"lengths: expected shape (n,) = ({n},), got {arr.shape}")
    if arr.dtype.kind not in "iu":
        raise TypeError(f"lengths: expected integers, got dtype {arr.dtype}")
    if arr.size and (arr.min() < 0 or arr.max() > t):
        raise ValueError(f"lengths: expected values in [0, {t}] (the time axis), got values "
                         f"in [{arr.min()}, {arr.max()}]")
    return da.from_array(arr, chunks=(tuple(sample_chunks),))


def _mask_dask(mask, n, t, sample_chunks, da, x_is_dask=True):
    if isinstance(mask, da.Array):
        if mask.shape != (n, t):
            raise ValueError(f"mask: expected shape (n, time) = {(n, t)}, got {mask.shape}")
        if tuple(mask.chunks[0]) != tuple(sample_chunks):
            raise ValueError(
                f"mask: chunks {tuple(mask.chunks[0])} do not line up with x's chunks along "
                f"the sample axis {tuple(sample_chunks)}; "
                + _rechunk_hint("mask", x_is_dask, "(x.chunks[0], -1)"))
        if len(mask.chunks[1]) > 1:
            mask = mask.rechunk({1: -1})
    else:
        arr = _device.host_array(mask, "mask")
        if arr.shape != (n, t):
            raise ValueError(f"mask: expected shape (n, time) = {(n, t)}, got {arr.shape}")
        if arr.dtype != np.bool_ and arr.dtype.kind in "iuf":
            arr = _mask_block(arr)  # in memory: a bad value is an error now, not in a task
        mask = da.from_array(arr, chunks=(tuple(sample_chunks), t))
    if np.dtype(mask.dtype) != np.bool_:
        if np.dtype(mask.dtype).kind not in "iuf":
            raise TypeError(f"mask: expected booleans or 0/1 values, got dtype {mask.dtype}")
        # values other than 0/1 are an error, as in a layer call (an
        # in-memory mask was checked above; a Dask one in each chunk's task)
        mask = mask.map_blocks(_mask_block, dtype=np.bool_)
    return mask


def _mask_block(block):
    bad = (block != 0) & (block != 1)
    if bool(bad.any()):
        raise ValueError(f"mask: expected booleans or 0/1 values, got the value "
                         f"{block[bad].ravel()[0].item()!r} (dtype {block.dtype})")
    return block != 0


def predict(model, x, lengths=None, mask=None, *, batch_size=None):
    """Run ``model`` over every sample of a chunked array, lazily, on Dask.

    Parameters
    ----------
    model : fastrnn layer or model
        Built (weights set). Any object callable as ``model(x, mask=...)``
        that returns one array with one row per input row.
    x : dask.array.Array or array-like, shape (n, time, features)
        The samples (``(n, time)`` token ids for a model that starts with an
        embedding). A NumPy array is wrapped with ``dask.array.from_array``
        (its slices go into the graph); an ``np.memmap`` such as
        ``np.load(path, mmap_mode="r")`` is read by path in each task. Chunks along the sample axis are kept as
        they are; the time and feature axes are made whole in every chunk
        (``x.rechunk({1: -1, 2: -1})`` when they are split), because a
        recurrence cannot be split in time.
    lengths : dask.array.Array or array-like of ints, shape (n,), optional
        Valid steps per sample (ragged data padded at the end): the mask is
        ``t < lengths[i]``, built per chunk. A dask array must have the same
        chunks as ``x`` along the samples (a ``ValueError`` says so).
    mask : dask.array.Array or array-like of bools, shape (n, time), optional
        Keras mask (``False`` = skip the step). Not with ``lengths``.
    batch_size : int, optional
        Rows per model call inside a chunk (bounds the model's working
        memory); default: the whole chunk in one call.

    Returns
    -------
    dask.array.Array
        ``(n, units)``, or ``(n, time, units)`` for ``return_sequences``
        (whatever the model returns per row), chunked like ``x`` along the
        samples and whole along the other axes, in the model's dtype.

    Notes
    -----
    Before building the graph, the model runs once in the calling process
    on one row of zeros ``(1, time, features)``: a wrong feature count, time
    length or dtype fails there, not in a task, and the output's shape and
    dtype are read off the result (so any callable works; it needs no
    ``compute_output_shape``).

    The model is one key in the graph, whatever the number of chunks: when a
    ``distributed.Client`` is active at the call, it is scattered to the
    workers now (so compute the result on that client); otherwise it is a
    ``dask.delayed`` object shared by all tasks. Either way it is the model
    as it is at this call: the graph does not see later changes to it
    (``set_weights``, ``quantize``), whatever the scheduler. Without a client,
    or with workers in this process, that takes one deep copy of the model
    now (a model that cannot be copied is a ``TypeError``); a function or
    closure, or an object holding one, is copied by a cloudpickle round
    trip on every scheduler, and one that reads its layers from the globals
    of a module it can be imported from is a ``TypeError`` (see the module
    docstring).

    A model with a ``time_major=True`` (or PyTorch ``batch_first=False``)
    layer anywhere in it, in a closure or user object too, is a
    ``ValueError``: its axis 0 is time, and the chunks split axis 0; so is
    one with a ``stateful=True`` layer (state carried from call to call
    means nothing across independent chunks).

    Rows with ``lengths`` or a ``mask`` get what the model returns for the
    masked batch, over the whole time axis: for a ``go_backwards`` layer
    with ``return_sequences``, which returns its steps in the order it ran
    them, a row's own outputs are its last ``lengths[i]`` steps (the steps
    before them are its padding). :func:`predict_partitions` cuts each row's
    own outputs out.
    """
    _, da = _import_dask()
    _check_model(model)
    batch_size = _check_batch_size(batch_size)
    if lengths is not None and mask is not None:
        raise ValueError("lengths and mask: give one of them, not both")
    if lengths is not None or mask is not None:
        _check_mask_arrives(model, "lengths" if lengths is not None else "mask")
    x_is_dask = isinstance(x, da.Array)
    if not x_is_dask:
        if not isinstance(x, np.memmap):  # (a PyTorch tensor, a MaskedArray, a list, ...)
            x = _device.host_array(x, "x")
        if np.dtype(x.dtype).kind not in "biufc":
            raise TypeError(f"x: expected an array of numbers, got dtype {x.dtype}")
        meta = None
        if isinstance(x, np.memmap):
            # Tasks map the file themselves; the graph holds its path, not its bytes.
            mapped = _MappedFile.from_memmap(x)
            if mapped is not None:
                x, meta = mapped, np.empty((0,) * x.ndim, x.dtype)
        rows = "auto"
        if 0 in tuple(x.shape[1:]):  # (automatic chunks divide by a row's size)
            rows = max(int(x.shape[0]), 1)
        x = da.from_array(x, chunks=(rows,) + (-1,) * (len(x.shape) - 1), meta=meta,
                          asarray=True)
    if x.ndim not in (2, 3) or (x.ndim == 2 and _is_recurrent_layer(model)):
        raise ValueError(f"x: expected a 3D array (n, time, features), got shape {x.shape}")
    if any(np.isnan(c) for axis in x.chunks for c in axis):
        raise ValueError(f"x: unknown chunk sizes (shape {x.shape}); call "
                         "x.compute_chunk_sizes() first")
    if any(len(c) > 1 for c in x.chunks[1:]):
        # A recurrence cannot be split in time: every chunk holds whole sequences.
        x = x.rechunk({axis: -1 for axis in range(1, x.ndim)})
    n, t = x.shape[0], x.shape[1]
    sample_chunks = x.chunks[0]
    shape, dtype = _output_spec(model, x.shape, x.dtype)

    x_index = "itf"[: x.ndim]
    # each chunk's row numbers, for its errors (made in the task, not stored)
    args = [da.arange(n, chunks=(sample_chunks,)), "i", x, x_index]
    kind = None
    if lengths is not None:
        args += [_lengths_array(lengths, n, t, sample_chunks, da, x_is_dask), "i"]
        kind = "lengths"
    elif mask is not None:
        args += [_mask_dask(mask, n, t, sample_chunks, da, x_is_dask), "it"]
        kind = "mask"
    out_index = "i" + "abcdeghjk"[: len(shape) - 1]
    new_axes = dict(zip(out_index[1:], shape[1:]))
    return da.blockwise(
        _predict_block, out_index, _model_ref(model), None, *args,
        new_axes=new_axes, concatenate=True, dtype=dtype,
        meta=np.empty((0,) * len(shape), dtype), token="fastrnn-predict",
        kind=kind, batch_size=batch_size, tail=tuple(shape[1:]), out_dtype=dtype,
    )


# --------------------------------------------------------------------------
# predict over a dask.dataframe column of variable-length sequences
# --------------------------------------------------------------------------

def _as_list_array(series):
    """A pandas Series of sequences as one pyarrow list array, or None if not possible."""
    import pyarrow as pa

    try:
        arr = pa.array(series.array) if hasattr(series.array, "__arrow_array__") \
            else pa.array(series, from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError):
        return None
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if not (pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type)):
        return None
    return arr


def _pad_partition(series, dtype, column, features=None):
    """Pad one partition's sequences to its own longest one.

    Returns ``x (rows, max_length, features)``, ``lengths (rows,)``. Each
    row is a list of steps, each step a number (one feature) or a list of
    ``features`` numbers. For a model that starts with an ``Embedding``
    (``features`` is :data:`_TOKENS`) a list of numbers is token ids,
    returned as ``x (rows, max_length)`` padded with 0 (int64, or float64
    for float ids); so is a list of integers for a model that does not say
    what it takes. Lengths come from the list offsets: nothing is copied
    row by row on the Arrow path.

    ``features`` (the model's, from :func:`_input_features`) is the feature
    count of a partition whose steps do not say it: every row empty, in a
    column whose type does not fix it (``list<list<float>>``; a
    ``fixed_size_list`` does).
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    n = len(series)
    arr = _as_list_array(series)
    if arr is None:
        # Object column of 2D arrays (or anything else Arrow cannot take): per row.
        rows, empty_widths = [], set()
        for i, value in enumerate(series):
            if value is None:
                raise ValueError(f"{column}: row {series.index[i]!r} is null")
            if isinstance(value, str):
                raise TypeError(
                    f"{column}: row {series.index[i]!r} is a string, not a sequence; Dask "
                    "turns object columns into strings unless dask.config.set("
                    "{'dataframe.convert-string': False}) is set before the frame is made "
                    "(a Parquet list column needs nothing)")
            a = np.asarray(value, dtype=dtype)
            if a.ndim == 0:
                raise TypeError(f"{column}: row {series.index[i]!r} is a single number, not a "
                                "sequence")
            rows.append(a[:, None] if a.ndim == 1 else a)
            if a.ndim == 2 and not a.shape[0]:
                empty_widths.add(a.shape[1])  # an empty (0, features) row still says features
        lengths = np.array([r.shape[0] for r in rows], np.int64)
        widths = {r.shape[1] for r in rows if r.ndim == 2 and r.shape[0]} or empty_widths
        if any(r.ndim != 2 for r in rows) or len(widths) > 1:
            raise ValueError(f"{column}: every row must be (length,) or (length, features) with "
                             f"one feature count, got feature counts {sorted(widths)}")
        # (no row says it, every row being empty: the model's feature count)
        d = widths.pop() if widths else _fallback_features(features)
        t = int(lengths.max()) if n else 0
        x = np.zeros((n, t, d), dtype)
        for i, r in enumerate(rows):
            x[i, : r.shape[0]] = r
        return x, lengths
    if arr.null_count:
        raise ValueError(f"{column}: {arr.null_count} null row(s) in a partition; drop or fill "
                         "them first")
    lengths = np.asarray(pc.list_value_length(arr).to_numpy(zero_copy_only=False), np.int64)
    steps = arr.flatten()  # honours the array's own offset and slicing
    if pa.types.is_list(steps.type) or pa.types.is_large_list(steps.type) \
            or pa.types.is_fixed_size_list(steps.type):
        if steps.null_count:
            raise ValueError(f"{column}: null steps inside a sequence")
        widths = np.unique(pc.list_value_length(steps).to_numpy(zero_copy_only=False))
        if len(widths) > 1:
            raise ValueError(f"{column}: every step must have the same number of features, got "
                             f"{sorted(int(w) for w in widths)}")
        if pa.types.is_fixed_size_list(steps.type):
            d = steps.type.list_size
        elif len(widths):
            d = int(widths[0])
        else:  # no step in this partition: the model says how many features
            d = _fallback_features(features)
        values = steps.flatten().to_numpy(zero_copy_only=False).astype(dtype, copy=False)
        values = values.reshape(-1, d)
    elif features == _TOKENS or (features is None and pa.types.is_integer(steps.type)):
        # Token ids for a model that starts with an Embedding (or, for a
        # model that does not say, integer steps): (rows, time), 0-padded.
        # Integers as int64; float ids as given, float64, as the model takes
        # them row by row (the Embedding truncates them and refuses NaN); a
        # column of empty lists only has steps of type null.
        d = None
        values = steps.to_numpy(zero_copy_only=False)
        values = values.astype(np.float64 if values.dtype.kind == "f" else np.int64,
                               copy=False)
    elif pa.types.is_null(steps.type):
        # Empty lists only, of a type Arrow could not tell (from an object column).
        d = _fallback_features(features)
        values = np.empty((0, d), dtype)
    else:
        d = 1
        values = steps.to_numpy(zero_copy_only=False).astype(dtype, copy=False).reshape(-1, 1)
    t = int(lengths.max()) if n else 0
    x = np.zeros((n, t) if d is None else (n, t, d), values.dtype)
    if values.shape[0]:
        row = np.repeat(np.arange(n), lengths)
        starts = np.cumsum(lengths) - lengths
        step = np.arange(values.shape[0]) - np.repeat(starts, lengths)
        x[row, step] = values
    return x, lengths


def _fallback_features(features):
    """The feature count of a partition that holds no step: the model's, else 1."""
    return features if isinstance(features, int) else 1


# Where a row's own outputs lie in the output of its partition, padded at the
# end and masked (t < length): see _valid_outputs.
_ROW = "row"      # one output per row, no time axis
_FIRST = "first"  # a sequence: its first `length` steps
_LAST = "last"    # a sequence: its last `length` steps (a go_backwards layer's order)


def _valid_outputs(model):
    """Where each row's outputs lie when its partition runs padded at the end
    with the mask ``t < length``, so that they equal the model run on that
    row alone: :data:`_ROW`, :data:`_FIRST` or :data:`_LAST`; None where the
    padded call cannot give them, or the model does not say.

    Read off the layers of a fastrnn layer or ``Sequential``, in order, as
    the call propagates the mask (see :mod:`fastrnn.models`):

    * a recurrent layer skips masked steps and keeps its state across them.
      Going forward, a row's outputs are the first ``length`` steps, and its
      last output the state after its own steps; a ``go_backwards`` layer
      returns its steps in the order it ran them, the padding first: the
      last ``length`` steps. A ``Bidirectional`` returns its forward half's
      order (its backward half is flipped back to it). None where the padding
      was not masked (an ``Embedding`` without ``mask_zero``) unless it only
      trails a forward sequence, or where the layer's input is a ``go_backwards``
      sequence (the mask still marks the first steps) or a forward
      ``zero_output_for_mask`` layer returns its last step (zeros for a row
      shorter than its partition);
    * per-step layers (``Dense``, ``Activation``, ``Dropout``,
      ``TimeDistributed``, ``InputLayer``) keep the steps where they are;
    * ``Embedding(mask_zero=True)`` masks the padding (token id 0); a
      ``Masking(0.0)`` before any layer that changes values masks it too.

    Anything else (a user's function or object, a layer of another kind) is None.
    """
    layers = model.layers if isinstance(model, Sequential) else [model]
    where, masked, zeros = _FIRST, True, True  # zeros: the padding still holds zeros
    for layer in layers:
        if isinstance(layer, (RNN, Bidirectional)):
            if where != _FIRST:
                return None
            halves = ([layer.forward_layer, layer.backward_layer]
                      if isinstance(layer, Bidirectional) else [layer])
            backwards = halves[0].go_backwards
            if not masked and (backwards or len(halves) > 1 or not layer.return_sequences):
                return None
            if not layer.return_sequences and any(
                    h.zero_output_for_mask and not h.go_backwards for h in halves):
                return None
            where = (_LAST if backwards else _FIRST) if layer.return_sequences else _ROW
            zeros = False
        elif isinstance(layer, Embedding):
            if where != _FIRST:
                return None
            masked, zeros = layer.mask_zero, False
        elif isinstance(layer, Masking):
            if where != _FIRST or not zeros or layer.mask_value != 0.0:
                return None
            masked = True  # (and the masked steps stay zeros)
        elif isinstance(layer, (InputLayer, Dropout)):  # the identity at inference
            pass
        elif isinstance(layer, (Dense, Activation, TimeDistributed)):
            zeros = False
        else:
            return None
    return where


def _run_by_length(model, x, lengths, batch_size, out):
    """Rows of one length together, unpadded and unmasked, into ``out``."""
    for n in np.unique(lengths):
        rows = np.flatnonzero(lengths == n)
        y = _run_batches(model, x[rows, :n], None, batch_size)
        for j, i in enumerate(rows):
            out[i] = y[j].copy()


def _predict_partition(series, model, *, batch_size=None, column=None):
    import pandas as pd

    x, lengths = _pad_partition(series, _model_dtype(model), column, _input_features(model))
    out = np.empty(len(series), dtype=object)
    if len(series):
        where = _valid_outputs(model)
        y = None
        if where is not None:
            t = x.shape[1]
            mask = np.arange(t)[None, :] < lengths[:, None]
            y = _run_batches(model, x, mask, batch_size)
            if where != _ROW and (y.ndim < 3 or y.shape[1] != t):
                y = None  # (not the sequence the layers promised: run the rows unpadded)
        if y is None:
            _run_by_length(model, x, lengths, batch_size, out)
        else:
            for i, n in enumerate(lengths):
                # each row's own outputs, as the model gives them for that row alone
                row = y[i] if where == _ROW else y[i, :n] if where == _FIRST else y[i, t - n:]
                out[i] = row.copy()
    return pd.Series(out, index=series.index, name=series.name, dtype=object)


def predict_partitions(model, ddf, column, *, batch_size=None):
    """Run ``model`` over a column of variable-length sequences, one output per row.

    Parameters
    ----------
    model : fastrnn layer or model
        Built; as for :func:`predict` (the graph runs the model as it is at
        this call).
    ddf : dask.dataframe.DataFrame
        For example ``dask.dataframe.read_parquet(path)`` (a frame: for a
        dask ``Series``, pass its frame and the column name).
    column : str
        One column name, whose rows are sequences: a list of steps, each a number
        (one feature) or a list of ``features`` numbers (Parquet
        ``list<list<float>>`` / ``list<float>`` read through pyarrow; an
        object column of NumPy arrays works too, made with
        ``dask.config.set({"dataframe.convert-string": False})``, without which
        Dask turns it into strings). A list of integers is
        token ids ``(time,)`` for a model that starts with an ``Embedding``;
        they are padded with 0 (masked by ``Embedding(mask_zero=True)``; an
        ``Embedding`` without it drops the mask, and then rows run length by
        length, see the notes).
    batch_size : int, optional
        Rows per model call inside a partition.

    Returns
    -------
    dask.dataframe.Series
        Same index and partitions as ``ddf``; each value a NumPy array: the
        output for that row (``(units,)``), or for ``return_sequences`` the
        ``(length, units)`` outputs of its own valid steps.

    Notes
    -----
    Each row gives the same result as the model run on that sequence alone,
    an empty row included. Lengths come from the list offsets. A fastrnn
    layer or a ``Sequential`` of them runs each partition in one call,
    padded to its own longest sequence and masked (``t < length``), and
    each row's outputs are cut where the model puts them for that row
    alone: the first ``length`` steps, or the last ``length`` where the
    sequence comes from a ``go_backwards`` layer (its steps in the order it
    ran them, the padding first; a ``Bidirectional`` returns its forward
    layer's order). Where a padded call cannot give each row's own outputs,
    or the model does not say where they are, the rows of each length run
    together, unpadded and unmasked (one call per distinct length in a
    partition): a plain function or user object, a recurrent layer fed by a
    ``go_backwards`` sequence (the mask still marks the first steps) or by
    unmasked padding (an ``Embedding`` without ``mask_zero``, a ``Masking``
    whose ``mask_value`` is not 0 or that follows a layer that changes
    values), a forward ``zero_output_for_mask`` layer returning its last
    output, or a layer class fastrnn.dask does not know. In a partition of
    empty rows only, the feature count comes from the column's type where
    it says it (``fixed_size_list``), else from the model (its first
    layer's kernel, or its ``InputLayer``).
    Sequences are padded in the dtype of the model's first layer with
    weights (a leading ``Masking`` or ``Dropout`` does not decide it).
    ``np.stack(result.compute())`` turns fixed-size outputs into one array.
    """
    _import_dask()
    _check_model(model)
    batch_size = _check_batch_size(batch_size)
    import dask.dataframe as dd

    if isinstance(ddf, dd.Series):
        raise TypeError(f"ddf: expected a dask.dataframe.DataFrame, got a dask Series "
                        f"({ddf.name!r}); pass its frame and the column name, "
                        "predict_partitions(model, frame, column), or series.to_frame()")
    if not isinstance(ddf, dd.DataFrame):
        raise TypeError(f"ddf: expected a dask.dataframe.DataFrame, got {type(ddf).__name__} "
                        "(wrap a pandas DataFrame with dask.dataframe.from_pandas)")
    try:
        hash(column)
    except TypeError:
        raise TypeError(f"column: expected one column name, got a {type(column).__name__} "
                        f"({column!r}); predict_partitions scores one column per call") from None
    if column not in ddf.columns:
        raise KeyError(f"column: {column!r} is not a column of the dataframe; columns are "
                       f"{list(ddf.columns)}")
    import pandas as pd

    meta = pd.Series([], dtype=object, name=column)
    return ddf[column].map_partitions(_predict_partition, _model_ref(model),
                                      batch_size=batch_size, column=column, meta=meta)


# --------------------------------------------------------------------------
# distributed worker plugin
# --------------------------------------------------------------------------

def _warm(nthreads=1, dtypes=("float32",)):
    """Compile (or load from Numba's cache) the kernels a worker runs:
    :func:`fastrnn.warmup` for ``dtypes``, with the parallel kernels only
    when the worker has more than one thread. Returns what was warmed."""
    return dispatch.warmup(dtypes=dtypes, parallel=nthreads > 1)


def _set_process_threads(n):
    """Cap fastrnn's kernel threads in this process at ``n`` (None: no cap)."""
    global _TASK_THREADS
    _TASK_THREADS = None if n is None else int(n)
    dispatch.set_num_threads(_TASK_THREADS)


def _thread_state():
    """This process's thread cap, to restore after the CLI changed it."""
    return _TASK_THREADS, dispatch.get_num_threads()


def _restore_thread_state(saved):
    global _TASK_THREADS
    _TASK_THREADS, cap = saved
    dispatch.set_num_threads(cap)


def _make_plugin_class():
    from distributed import WorkerPlugin

    class FastrnnPlugin(WorkerPlugin):
        """Prepare each ``distributed`` worker for fastrnn.

        On every worker (those present and those that join later) it

        * caps fastrnn's kernel threads at the worker's ``nthreads`` (or at
          ``nthreads=`` given here). Dask's nanny sets the BLAS thread
          variables to 1, but not ``NUMBA_NUM_THREADS``, so without the cap
          each worker's Numba kernels would use every core and ``workers x
          threads`` would oversubscribe the machine;
        * compiles the common kernels (or loads them from ``NUMBA_CACHE_DIR``)
          so that the first chunk does not pay for it (``warm=False`` skips;
          ``dtypes``: the dtypes warmed on every worker, with the parallel
          kernels too on workers of more than one thread).

        ``nthreads``: a positive integer, or None for each worker's own
        ``nthreads``; anything else is a ``ValueError``. ``dtypes``:
        ``"float32"`` and/or ``"float64"``, a sequence of them or one alone
        (a str); another dtype is a ``ValueError`` and a value that is not a
        dtype a ``TypeError``, here rather than on every worker.

        Usage: ``client.register_plugin(fastrnn.dask.FastrnnPlugin())``.
        ``client.run(fastrnn.dask.worker_info)`` reports what it set.
        """

        idempotent = True

        def __init__(self, nthreads=None, warm=True, dtypes=("float32",)):
            if nthreads is not None and (
                    isinstance(nthreads, bool) or not isinstance(nthreads, (int, np.integer))
                    or nthreads < 1):
                raise ValueError(f"nthreads: expected a positive integer or None (each "
                                 f"worker's own nthreads), got {nthreads!r}")
            self.nthreads = None if nthreads is None else int(nthreads)
            self.warm = bool(warm)
            # checked here, once, rather than failing on every worker
            self.dtypes = dispatch._warmup_dtypes(dtypes)
            # Registering the same settings again is skipped (idempotent);
            # other settings are another plugin, set up after it: they apply.
            self.name = f"fastrnn-{self.nthreads}-{int(self.warm)}-{'-'.join(self.dtypes)}"

        async def setup(self, worker):
            import asyncio

            n = self.nthreads
            if n is None:
                n = getattr(worker.state, "nthreads", None) or worker.nthreads
            _set_process_threads(n)
            if self.warm:
                # Compiling can take seconds: keep the worker's event loop free.
                warmed = await asyncio.get_running_loop().run_in_executor(
                    None, _warm, int(n), self.dtypes)
            else:
                warmed = []
            _WORKER_INFO.update(nthreads=int(n), warmed=list(warmed))

    # Pickled by reference (fastrnn.dask.FastrnnPlugin, through the module's
    # __getattr__), so that the worker runs this module's functions and globals.
    FastrnnPlugin.__module__ = __name__
    FastrnnPlugin.__qualname__ = "FastrnnPlugin"
    return FastrnnPlugin


_WORKER_INFO = {}
_PLUGIN_CLASS = None


def _plugin_class():
    global _PLUGIN_CLASS
    if _PLUGIN_CLASS is None:
        _PLUGIN_CLASS = _make_plugin_class()
    return _PLUGIN_CLASS


def worker_info():
    """What :class:`FastrnnPlugin` set in this process (for ``client.run``)."""
    return dict(_WORKER_INFO, task_threads=_TASK_THREADS,
                fastrnn_threads=dispatch.get_num_threads())


def __getattr__(name):
    # The plugin subclasses distributed.WorkerPlugin, so it is created on first
    # use: importing fastrnn.dask must not import distributed.
    if name == "FastrnnPlugin":
        return _plugin_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
