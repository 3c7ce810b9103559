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
:func:`predict_main`
    ``python -m fastrnn predict MODEL INPUT OUTPUT``.

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
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

__all__ = ["predict", "predict_partitions", "FastrnnPlugin", "predict_main"]

# Threads each task may give fastrnn's kernels in this process: set by
# FastrnnPlugin on a worker (the worker's nthreads) and by the CLI's local
# mode. None leaves the process default alone.
_TASK_THREADS = None

# Model file suffixes the CLI refuses with a reason, rather than a loader's
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
    from .layers import RNN, Bidirectional

    return isinstance(model, (RNN, Bidirectional))


def _check_model(model):
    """Reject, before any task exists, a model that cannot run per chunk."""
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
    parts = [model] + list(getattr(model, "layers", None) or [])
    if any(getattr(part, "stateful", False) for part in parts):
        raise ValueError("model: stateful=True carries state from one call to the next, which "
                         "has no meaning across independent chunks; use stateful=False")


def _model_dtype(model):
    """The float dtype to pad inputs in: the model's, its first layer's, or float32."""
    for part in [model] + list(getattr(model, "layers", None) or [])[:1]:
        dtype = getattr(part, "dtype", None)
        try:
            if dtype is not None and np.dtype(dtype).kind == "f":
                return np.dtype(dtype)
        except TypeError:
            pass
    return np.dtype(np.float32)


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


def _thread_setter():
    """fastrnn's process-wide kernel thread cap, where this fastrnn has one."""
    import fastrnn

    for owner in (fastrnn, getattr(fastrnn, "dispatch", None)):
        setter = getattr(owner, "set_num_threads", None)
        if setter is not None:
            return setter
    return None


def _apply_task_threads():
    """Cap the kernel threads for the calling (task) thread.

    fastrnn's own cap (``set_num_threads``) is process-wide and was set by
    :class:`FastrnnPlugin`; without it, Numba's ``set_num_threads`` is the
    fallback, and that one is per thread, so it is applied here, in the Dask
    executor thread that runs the kernels.
    """
    n = _TASK_THREADS
    if n is None or _thread_setter() is not None:
        return
    import numba

    numba.set_num_threads(max(1, min(n, numba.config.NUMBA_NUM_THREADS)))


def _check_batch_size(batch_size):
    if batch_size is None:
        return None
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
            or batch_size < 1:
        raise ValueError(f"batch_size: expected a positive integer or None, got {batch_size!r}")
    return int(batch_size)


def _model_ref(model):
    """One graph key holding the model: scattered to a live client, else a delayed."""
    dask, _ = _import_dask()
    client = _current_client()
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
        """For a memmap of a whole file region (not a view of one), else None."""
        import mmap

        if getattr(m, "filename", None) is None or not isinstance(m.base, mmap.mmap):
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

def _predict_block(model, x, extra=None, *, kind=None, batch_size=None, tail=(),
                   out_dtype=None):
    """One chunk: ``x (b, time, features)`` (plus its lengths or mask) -> outputs."""
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
    _apply_task_threads()
    return _run_batches(model, x, mask, batch_size)


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
        y = _single_output(_call_model(model, probe, None), "on a probe input")
    except (ValueError, TypeError) as exc:
        raise type(exc)(f"model: does not accept inputs like x {tuple(x_shape)} of dtype "
                        f"{np.dtype(x_dtype)} ({exc})") from exc
    if y.ndim < 1 or y.shape[0] != 1:
        raise ValueError(f"model: expected one output row per input row, got shape {y.shape} "
                         f"for a probe of shape {probe.shape}")
    return (x_shape[0],) + y.shape[1:], y.dtype


def _lengths_array(lengths, n, t, sample_chunks, da):
    if isinstance(lengths, da.Array):
        if lengths.ndim != 1 or lengths.shape[0] != n:
            raise ValueError(f"lengths: expected shape (n,) = ({n},), got {lengths.shape}")
        if np.dtype(lengths.dtype).kind not in "iu":
            raise TypeError(f"lengths: expected integers, got dtype {lengths.dtype}")
        if tuple(lengths.chunks[0]) != tuple(sample_chunks):
            raise ValueError(
                f"lengths: chunks {tuple(lengths.chunks[0])} do not line up with x's chunks "
                f"along the sample axis {tuple(sample_chunks)}; use "
                "lengths.rechunk((x.chunks[0],))")
        return lengths
    arr = np.asarray(lengths)
    if arr.shape != (n,):
        raise ValueError(f"lengths: expected shape (n,) = ({n},), got {arr.shape}")
    if arr.dtype.kind not in "iu":
        raise TypeError(f"lengths: expected integers, got dtype {arr.dtype}")
    if arr.size and (arr.min() < 0 or arr.max() > t):
        raise ValueError(f"lengths: expected values in [0, {t}] (the time axis), got values "
                         f"in [{arr.min()}, {arr.max()}]")
    return da.from_array(arr, chunks=(tuple(sample_chunks),))


def _mask_dask(mask, n, t, sample_chunks, da):
    if isinstance(mask, da.Array):
        if mask.shape != (n, t):
            raise ValueError(f"mask: expected shape (n, time) = {(n, t)}, got {mask.shape}")
        if tuple(mask.chunks[0]) != tuple(sample_chunks):
            raise ValueError(
                f"mask: chunks {tuple(mask.chunks[0])} do not line up with x's chunks along "
                f"the sample axis {tuple(sample_chunks)}; use mask.rechunk((x.chunks[0], -1))")
        if len(mask.chunks[1]) > 1:
            mask = mask.rechunk({1: -1})
    else:
        arr = np.asarray(mask)
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
    ``dask.delayed`` object shared by all tasks.
    """
    _, da = _import_dask()
    _check_model(model)
    batch_size = _check_batch_size(batch_size)
    if lengths is not None and mask is not None:
        raise ValueError("lengths and mask: give one of them, not both")
    if not isinstance(x, da.Array):
        if not hasattr(x, "shape") or not hasattr(x, "dtype"):
            x = np.asarray(x)
        meta = None
        if isinstance(x, np.memmap):
            # Tasks map the file themselves; the graph holds its path, not its bytes.
            mapped = _MappedFile.from_memmap(x)
            if mapped is not None:
                x, meta = mapped, np.empty((0,) * x.ndim, x.dtype)
        x = da.from_array(x, chunks=("auto",) + (-1,) * (len(x.shape) - 1), meta=meta,
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
    args = [x, x_index]
    kind = None
    if lengths is not None:
        args += [_lengths_array(lengths, n, t, sample_chunks, da), "i"]
        kind = "lengths"
    elif mask is not None:
        args += [_mask_dask(mask, n, t, sample_chunks, da), "it"]
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


def _pad_partition(series, dtype, column):
    """Pad one partition's sequences to its own longest one.

    Returns ``x (rows, max_length, features)``, ``lengths (rows,)``. Each
    row is a list of steps, each step a number (one feature) or a list of
    ``features`` numbers; a list of integers is token ids, returned as
    ``x (rows, max_length)`` int64 padded with 0. Lengths come from the list
    offsets: nothing is copied row by row on the Arrow path.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    n = len(series)
    arr = _as_list_array(series)
    if arr is None:
        # Object column of 2D arrays (or anything else Arrow cannot take): per row.
        rows = []
        for i, value in enumerate(series):
            if value is None:
                raise ValueError(f"{column}: row {series.index[i]!r} is null")
            a = np.asarray(value, dtype=dtype)
            rows.append(a[:, None] if a.ndim == 1 else a)
        lengths = np.array([r.shape[0] for r in rows], np.int64)
        widths = {r.shape[1] for r in rows if r.ndim == 2 and r.shape[0]} or {1}
        if any(r.ndim != 2 for r in rows) or len(widths) > 1:
            raise ValueError(f"{column}: every row must be (length,) or (length, features) with "
                             f"one feature count, got feature counts {sorted(widths)}")
        d = widths.pop()
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
        d = int(widths[0]) if len(widths) else 1
        values = steps.flatten().to_numpy(zero_copy_only=False).astype(dtype, copy=False)
        values = values.reshape(-1, d)
    elif pa.types.is_integer(steps.type):
        # Token ids for a model that starts with an Embedding: (rows, time), 0-padded.
        d = None
        values = steps.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
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


def _predict_partition(series, model, *, batch_size=None, column=None):
    import pandas as pd

    _apply_task_threads()
    x, lengths = _pad_partition(series, _model_dtype(model), column)
    out = np.empty(len(series), dtype=object)
    if len(series):
        mask = np.arange(x.shape[1])[None, :] < lengths[:, None]
        y = _run_batches(model, x, mask, batch_size)
        sequences = y.ndim == 3 and y.shape[1] == x.shape[1] and getattr(
            model, "return_sequences", True)
        for i in range(len(series)):
            # Sequence outputs are cut back to each row's own length.
            out[i] = y[i, : lengths[i]].copy() if sequences else y[i].copy()
    return pd.Series(out, index=series.index, name=series.name, dtype=object)


def predict_partitions(model, ddf, column, *, batch_size=None):
    """Run ``model`` over a column of variable-length sequences, one output per row.

    Parameters
    ----------
    model : fastrnn layer or model
        Built; as for :func:`predict`.
    ddf : dask.dataframe.DataFrame
        For example ``dask.dataframe.read_parquet(path)``.
    column : str
        A column whose rows are sequences: a list of steps, each a number
        (one feature) or a list of ``features`` numbers (Parquet
        ``list<list<float>>`` / ``list<float>`` read through pyarrow; an
        object column of NumPy arrays works too). A list of integers is
        token ids ``(time,)`` for a model that starts with an ``Embedding``;
        they are padded with 0, so use ``Embedding(mask_zero=True)`` as in
        Keras (an ``Embedding`` without it drops the mask).
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
    Each partition is padded to its own longest sequence only, and its
    lengths come from the list offsets (the mask is ``t < length``): a row
    gives the same result as the model run on that sequence alone.
    ``np.stack(result.compute())`` turns fixed-size outputs into one array.
    """
    _import_dask()
    _check_model(model)
    batch_size = _check_batch_size(batch_size)
    if not hasattr(ddf, "map_partitions") or not hasattr(ddf, "columns"):
        raise TypeError(f"ddf: expected a dask.dataframe.DataFrame, got {type(ddf).__name__} "
                        "(wrap a pandas DataFrame with dask.dataframe.from_pandas)")
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
    """Compile (or load from Numba's cache) the common kernels in this process.

    With one thread per task: SimpleRNN, GRU (both ``reset_after``) and LSTM
    layers in ``dtypes``, run once on tiny inputs (the serial kernels, which
    is all a one-thread worker runs). With more threads: the CPU backend's
    own ``warmup`` (both dtypes, serial and parallel kernels). Returns what
    was warmed.
    """
    import fastrnn

    try:
        from .kernels import cpu
    except ImportError:
        return []
    if nthreads > 1 and hasattr(cpu, "warmup"):
        return list(cpu.warmup())
    rng = np.random.default_rng(0)
    done = []
    for dtype in dtypes:
        x = rng.standard_normal((2, 3, 2)).astype(dtype)
        mask = np.array([[True, True, True], [True, False, False]])
        for cls, kwargs in ((fastrnn.SimpleRNN, {}), (fastrnn.GRU, {}),
                            (fastrnn.GRU, {"reset_after": False}), (fastrnn.LSTM, {})):
            for sequences in (False, True):
                layer = cls(3, return_sequences=sequences, dtype=dtype, **kwargs)
                layer.build(x.shape)
                layer(x, mask=mask)
            done.append(f"{cls.__name__}{kwargs or ''} {np.dtype(dtype).name}")
    return done


def _set_process_threads(n):
    """Cap fastrnn's kernel threads in this process at ``n`` (None: no cap)."""
    global _TASK_THREADS
    _TASK_THREADS = None if n is None else int(n)
    setter = _thread_setter()
    if setter is not None:
        try:
            setter(_TASK_THREADS)
        except RuntimeError:  # no compiled backend here: nothing to cap
            pass


def _thread_state():
    """This process's thread cap, to restore after the CLI changed it."""
    import numba

    cap = _kernel_threads()
    if cap is not None and cap >= numba.config.NUMBA_NUM_THREADS:
        cap = None  # no cap: all of Numba's pool
    return _TASK_THREADS, cap


def _kernel_threads():
    """``fastrnn.get_num_threads()``, or None where no compiled backend runs."""
    import fastrnn

    try:
        return fastrnn.get_num_threads()
    except RuntimeError:
        return None


def _restore_thread_state(saved):
    global _TASK_THREADS
    task_threads, cap = saved
    setter = _thread_setter()
    if setter is not None:
        try:
            setter(cap)
        except RuntimeError:
            pass
    _TASK_THREADS = task_threads


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
          ``dtypes``: the dtypes a one-thread worker warms, workers with more
          threads warm float32 and float64).

        Usage: ``client.register_plugin(fastrnn.dask.FastrnnPlugin())``.
        ``client.run(fastrnn.dask.worker_info)`` reports what it set.
        """

        name = "fastrnn"
        idempotent = True

        def __init__(self, nthreads=None, warm=True, dtypes=("float32",)):
            self.nthreads = nthreads
            self.warm = bool(warm)
            self.dtypes = tuple(np.dtype(d).name for d in dtypes)

        async def setup(self, worker):
            import asyncio

            n = self.nthreads or getattr(worker.state, "nthreads", None) or worker.nthreads
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
    info = dict(_WORKER_INFO, task_threads=_TASK_THREADS)
    threads = _kernel_threads()
    if threads is not None:
        info["fastrnn_threads"] = threads
    return info


def __getattr__(name):
    # The plugin subclasses distributed.WorkerPlugin, so it is created on first
    # use: importing fastrnn.dask must not import distributed.
    if name == "FastrnnPlugin":
        return _plugin_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --------------------------------------------------------------------------
# command line: python -m fastrnn predict
# --------------------------------------------------------------------------

def _load_model(path):
    """A model from a saved fastrnn file (fastrnn.load), a .keras / .h5 file or a Keras 2
    SavedModel directory (fastrnn.load_keras)."""
    import fastrnn

    if not os.path.exists(path):
        raise ValueError(f"MODEL: {path} does not exist")
    name = os.path.basename(path.rstrip("/")).lower()
    suffix = ".weights.h5" if name.endswith(".weights.h5") else os.path.splitext(name)[1]
    if suffix in _REFUSED_MODEL_SUFFIXES:
        raise ValueError(f"MODEL: {path} is {_REFUSED_MODEL_SUFFIXES[suffix]}; expected a model "
                         "saved by fastrnn.save, a Keras 3 .keras file, a Keras .h5 model or a "
                         "Keras 2 SavedModel directory")
    if suffix in (".keras", ".h5") or os.path.isdir(path):
        loader, what = getattr(fastrnn, "load_keras", None), "fastrnn.load_keras"
    else:
        loader, what = getattr(fastrnn, "load", None), "fastrnn.load"
    if loader is None:
        raise ValueError(f"MODEL: reading {path} needs {what}, which this fastrnn does not have")
    try:
        model = loader(path)
    except Exception as exc:  # noqa: BLE001 - the loader's reason, with the argument named
        raise ValueError(f"MODEL: cannot load {path} with {what}: {exc}") from exc
    _check_model(model)
    return model


def _open_input(path, chunk_rows):
    """INPUT as a dask array: a Zarr array (lazy) or a .npy file (memory-mapped)."""
    _, da = _import_dask()
    if chunk_rows is not None and chunk_rows < 1:
        raise ValueError(f"--chunk-rows: expected a positive integer, got {chunk_rows}")
    if not os.path.exists(path):
        raise ValueError(f"INPUT: {path} does not exist")
    if path.lower().endswith(".npy") and os.path.isfile(path):
        arr = _MappedFile.from_npy(path)
    elif os.path.isdir(path) and any(os.path.exists(os.path.join(path, f))
                                     for f in ("zarr.json", ".zarray", ".zgroup")):
        import zarr

        arr = zarr.open(path, mode="r")
        if not hasattr(arr, "shape"):
            names = sorted(k for k, _ in arr.arrays()) if hasattr(arr, "arrays") else []
            raise ValueError(f"INPUT: {path} is a Zarr group; name one of its arrays, e.g. "
                             f"{os.path.join(path, names[0]) if names else path + '/<array>'}")
    else:
        raise ValueError(f"INPUT: expected a Zarr array (a directory) or a .npy file, got {path}")
    if arr.ndim not in (2, 3):
        raise ValueError(f"INPUT: expected an array (n, time, features), got shape {arr.shape}")
    if chunk_rows is None:
        stored = getattr(arr, "chunks", None)
        if isinstance(stored, tuple) and stored and stored[0] < arr.shape[0]:
            # Zarr: keep whole stored chunks per task, at least ~16 MiB of them.
            row_bytes = max(1, int(np.prod(arr.shape[1:])) * arr.dtype.itemsize)
            per = max(1, (16 << 20) // (row_bytes * stored[0]))
            chunk_rows = stored[0] * per
        else:
            row_bytes = max(1, int(np.prod(arr.shape[1:])) * arr.dtype.itemsize)
            chunk_rows = max(1, (32 << 20) // row_bytes)
    chunk_rows = min(int(chunk_rows), max(1, arr.shape[0]))
    return da.from_array(arr, chunks=(chunk_rows,) + tuple(arr.shape[1:]), lock=False,
                         asarray=True, meta=np.empty((0,) * arr.ndim, arr.dtype))


def _open_lengths(path, x):
    """``--lengths``: a .npy file or Zarr array (n,), chunked like ``x``, read lazily."""
    if path is None:
        return None
    _, da = _import_dask()
    if not os.path.exists(path):
        raise ValueError(f"--lengths: {path} does not exist")
    if path.lower().endswith(".npy"):
        arr = _MappedFile.from_npy(path)
    else:
        import zarr

        arr = zarr.open_array(path, mode="r")
    if arr.shape != (x.shape[0],):
        raise ValueError(f"--lengths: expected shape (n,) = ({x.shape[0]},), got {arr.shape}")
    if np.dtype(arr.dtype).kind not in "iu":
        raise TypeError(f"--lengths: expected integers, got dtype {arr.dtype}")
    return da.from_array(arr, chunks=(x.chunks[0],), lock=False, asarray=True,
                         meta=np.empty((0,), arr.dtype))


def _parser():
    p = argparse.ArgumentParser(
        prog="python -m fastrnn predict",
        description="Score a Zarr array or .npy file (n, time, features) with a saved fastrnn "
                    "model or a Keras .keras file, on Dask, into a Zarr array; prints "
                    "throughput.",
        epilog="python -m fastrnn predict --example DIR [--rows N --time N --features N "
               "--units N --seed N] writes DIR/model.fastrnn, DIR/x.npy and DIR/lengths.npy "
               "to try it on (see 'python -m fastrnn predict --example --help').")
    p.add_argument("model", metavar="MODEL",
                   help="a model saved by fastrnn.save, a Keras .keras (or .h5) model, or a "
                        "Keras 2 SavedModel directory")
    p.add_argument("input", metavar="INPUT", help="Zarr array directory or .npy file")
    p.add_argument("output", metavar="OUTPUT", help="Zarr array to write (a new directory)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--scheduler", metavar="ADDRESS",
                       help="a running Dask scheduler (tcp://host:8786); default: local threads")
    where.add_argument("--workers", metavar="N[,N...]",
                       help="start a LocalCluster of N worker processes (1 thread each); "
                            "0: no Dask, this process calls the model chunk by chunk; "
                            "'threads': Dask's local threads (the default). A list such as "
                            "0,threads,1,2 runs each in turn and prints a comparison")
    p.add_argument("--batch-size", type=int, metavar="N", help="rows per model call in a chunk")
    p.add_argument("--chunk-rows", type=int, metavar="N",
                   help="rows per task (default: ~16-32 MiB of input, whole Zarr chunks)")
    p.add_argument("--lengths", metavar="PATH", help="valid steps per sample (.npy or Zarr, (n,))")
    p.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _parse_workers(text):
    """``--workers`` -> a list of modes: None (local threads), 0 (no Dask) or N workers."""
    if text is None:
        return [None]
    modes = []
    for item in text.split(","):
        item = item.strip().lower()
        if item == "threads":
            modes.append(None)
            continue
        try:
            value = int(item)
        except ValueError:
            value = -1
        if value < 0:
            raise ValueError(f"--workers: expected 0, a number of workers or 'threads' "
                             f"(comma-separated), got {item!r}")
        modes.append(value)
    return modes


def _example_main(argv):
    """``python -m fastrnn predict --example DIR``: a model and data to score."""
    import fastrnn

    p = argparse.ArgumentParser(prog="python -m fastrnn predict --example",
                                description="Write DIR/model.fastrnn (a built LSTM with random "
                                            "weights), DIR/x.npy and DIR/lengths.npy.")
    p.add_argument("dir", metavar="DIR")
    p.add_argument("--rows", type=int, default=20000)
    p.add_argument("--time", type=int, default=100)
    p.add_argument("--features", type=int, default=32)
    p.add_argument("--units", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    if not hasattr(fastrnn, "save"):
        print("fastrnn predict: error: --example needs fastrnn.save", file=sys.stderr)
        return 2
    os.makedirs(a.dir, exist_ok=True)
    rng = np.random.default_rng(a.seed)
    layer = fastrnn.LSTM(a.units)
    layer.build((1, a.time, a.features))
    layer.set_weights([(rng.standard_normal(w.shape) / np.sqrt(w.shape[0])).astype(np.float32)
                       for w in layer.get_weights()])
    fastrnn.save(layer, os.path.join(a.dir, "model.fastrnn"))
    x = np.lib.format.open_memmap(os.path.join(a.dir, "x.npy"), mode="w+", dtype=np.float32,
                                  shape=(a.rows, a.time, a.features))
    for start in range(0, a.rows, 4096):  # in slices: the file may be larger than memory
        stop = min(start + 4096, a.rows)
        x[start:stop] = rng.standard_normal((stop - start, a.time, a.features))
    x.flush()
    np.save(os.path.join(a.dir, "lengths.npy"), rng.integers(1, a.time + 1, a.rows))
    d = a.dir
    print(f"wrote {d}/model.fastrnn (LSTM({a.units}) on {a.features} features), {d}/x.npy "
          f"{(a.rows, a.time, a.features)} float32, {d}/lengths.npy\n"
          f"try: python -m fastrnn predict {d}/model.fastrnn {d}/x.npy {d}/y.zarr "
          f"--lengths {d}/lengths.npy --workers 0,threads,1,2 --overwrite")
    return 0


def _run_single_process(model, x, lengths, batch_size, output, progress):
    """``--workers 0``: the baseline without Dask, chunk by chunk into Zarr."""
    import dask
    import zarr

    with dask.config.set(scheduler="sync"):
        y0 = predict(model, x[:1], None if lengths is None else lengths[:1],
                     batch_size=batch_size)
    shape = (x.shape[0],) + y0.shape[1:]
    out = zarr.create_array(store=output, shape=shape, dtype=y0.dtype,
                            chunks=(x.chunks[0][0],) + shape[1:], overwrite=True)
    start = 0
    for size in x.chunks[0]:
        xb = np.asarray(x[start:start + size].compute(scheduler="sync"))
        mask = None
        if lengths is not None:
            valid = np.asarray(lengths[start:start + size].compute(scheduler="sync"))
            mask = np.arange(xb.shape[1])[None, :] < valid[:, None]
        out[start:start + size] = _run_batches(model, xb, mask, batch_size)
        start += size
        if progress:
            print(f"\r[{'#' * int(40 * start / x.shape[0]):<40}] {start}/{x.shape[0]}",
                  end="", file=sys.stderr, flush=True)
    if progress:
        print(file=sys.stderr)


def predict_main(argv=None):
    """``python -m fastrnn predict MODEL INPUT OUTPUT [--scheduler ADDRESS] [--batch-size N]``.

    Every argument is checked, and the model probed on a tiny input, before
    any task runs; errors exit with status 2 and one line on stderr.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--example"]:
        return _example_main(argv[1:])
    args = _parser().parse_args(argv)
    try:
        import dask
        import zarr  # noqa: F401  (OUTPUT is a Zarr array)
    except ImportError as exc:
        print(f"fastrnn predict: error: needs the dask extra ({exc}); "
              "pip install 'fastrnn[dask]'", file=sys.stderr)
        return 2
    try:
        modes = _parse_workers(args.workers)
        model = _load_model(args.model)
        x = _open_input(args.input, args.chunk_rows)
        lengths = _open_lengths(args.lengths, x)
        batch_size = _check_batch_size(args.batch_size)
        if os.path.exists(args.output) and not args.overwrite:
            raise ValueError(f"OUTPUT: {args.output} exists (use --overwrite to replace it)")
        # Validates shapes and probes the model in this process, before any task.
        with dask.config.set(scheduler="sync"):
            predict(model, x[:1], None if lengths is None else lengths[:1],
                    batch_size=batch_size)
    except (ValueError, TypeError, KeyError) as exc:
        print(f"fastrnn predict: error: {exc}", file=sys.stderr)
        return 2
    saved = _thread_state()
    try:
        results = [_score(model, x, lengths, args, batch_size, mode) for mode in modes]
    finally:
        _restore_thread_state(saved)  # predict_main may be called from Python
    if len(results) > 1:
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        print(f"\n{os.cpu_count()} cores, load average {load:.1f} at the end")
        print(f"{'run':<48} {'sequences/s':>12}")
        for where, rate in results:
            print(f"{where:<48} {rate:>12,.0f}")
    return 0


def _warm_model(model, xs, mask, batch_size, nthreads):
    """Run ``model`` once on a real sample, untimed: kernels compiled or loaded."""
    _set_process_threads(nthreads)
    _run_batches(model, xs, mask, batch_size)


def _score(model, x, lengths, args, batch_size, mode):
    """Score ``x`` into ``args.output`` one way; return (description, sequences/s).

    Before the clock starts, the model runs once on the first rows in every
    process that will score (so that compiling or loading kernels from
    Numba's cache is not counted); the clock covers building the graph,
    reading INPUT, scoring and writing OUTPUT.
    """
    import dask

    progress = not args.no_progress
    n = x.shape[0]
    rows = min(n, max(x.chunks[0][0], 1), 256)
    sample = np.asarray(x[:rows].compute(scheduler="sync"))
    sample_mask = None
    if lengths is not None:
        valid = np.asarray(lengths[:rows].compute(scheduler="sync"))
        sample_mask = np.arange(sample.shape[1])[None, :] < valid[:, None]
    cluster = client = None
    try:
        if mode == 0:
            where = "1 process, no Dask"
            # The model's kernels may use every core (the process default).
            _warm_model(model, sample, sample_mask, batch_size, None)
            t0 = time.perf_counter()
            _run_single_process(model, x, lengths, batch_size, args.output, progress)
            elapsed = time.perf_counter() - t0
        else:
            if args.scheduler or mode:
                from distributed import Client, LocalCluster

                if args.scheduler:
                    client = Client(args.scheduler)
                    where = f"scheduler {args.scheduler}"
                else:
                    cluster = LocalCluster(n_workers=mode, threads_per_worker=1,
                                           processes=True, dashboard_address=":0")
                    client = Client(cluster)
                    where = f"LocalCluster {mode} worker(s) x 1 thread"
                # Threads capped and kernels warmed before the clock starts.
                client.register_plugin(_plugin_class()())
                client.run(_warm_model, model, sample, sample_mask, batch_size, 1)
                if args.scheduler:
                    where += f" ({sum(client.nthreads().values())} threads)"
            else:
                where = f"Dask local threads ({os.cpu_count() or 1})"
                # Dask's threads share the cores: one kernel thread each.
                _warm_model(model, sample, sample_mask, batch_size, 1)
            t0 = time.perf_counter()
            with dask.config.set(scheduler=client.get if client is not None else "threads"):
                y = predict(model, x, lengths, batch_size=batch_size)
                store = y.to_zarr(args.output, overwrite=True, compute=False)
            if client is not None:
                from distributed import progress as dist_progress

                future = client.compute(store)
                if progress:
                    dist_progress(future)
                    print(file=sys.stderr)
                future.result()
            else:
                from dask.diagnostics import ProgressBar

                if progress:
                    with ProgressBar(out=sys.stderr):
                        dask.compute(store, scheduler="threads")
                else:
                    dask.compute(store, scheduler="threads")
            elapsed = time.perf_counter() - t0
    finally:
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
    rate = n / elapsed if elapsed > 0 else float("inf")
    print(f"scored {n} sequences of shape {tuple(x.shape[1:])} in {elapsed:.2f} s: "
          f"{rate:,.0f} sequences/s ({where}; {len(x.chunks[0])} chunks of "
          f"<= {max(x.chunks[0])} rows) -> {args.output}", flush=True)
    return where, rate
