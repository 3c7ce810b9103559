"""``python -m fastrnn predict MODEL INPUT OUTPUT``: score an array with a saved model, on Dask.

The command-line face of :mod:`fastrnn.dask`: MODEL is a file written by
``fastrnn.save`` or a Keras ``.keras`` / ``.h5`` model, INPUT a Zarr array
or ``.npy`` file ``(n, time, features)``, OUTPUT a Zarr array; ``--workers``
starts a local cluster (or ``--scheduler`` joins one). ``--example DIR``
writes a small model and input to try it on.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

from ..dask import (_REFUSED_MODEL_SUFFIXES, _check_batch_size, _check_model, _import_dask,
                    _MappedFile, _plugin_class, _restore_thread_state, _run_masked,
                    _set_process_threads, _thread_state, predict)
from ..interop import load_keras
from ..io import load, save
from ..layers import LSTM

def _load_model(path):
    """A model from a saved fastrnn file (fastrnn.load), a .keras / .h5 file or a Keras 2
    SavedModel directory (fastrnn.load_keras)."""
    if not os.path.exists(path):
        raise ValueError(f"MODEL: {path} does not exist")
    name = os.path.basename(path.rstrip("/")).lower()
    suffix = ".weights.h5" if name.endswith(".weights.h5") else os.path.splitext(name)[1]
    if suffix in _REFUSED_MODEL_SUFFIXES:
        raise ValueError(f"MODEL: {path} is {_REFUSED_MODEL_SUFFIXES[suffix]}; expected a model "
                         "saved by fastrnn.save, a Keras 3 .keras file, a Keras .h5 model or a "
                         "Keras 2 SavedModel directory")
    if suffix in (".keras", ".h5") or os.path.isdir(path):
        loader, what = load_keras, "fastrnn.load_keras"
    else:
        loader, what = load, "fastrnn.load"
    try:
        model = loader(path)
    except Exception as exc:  # noqa: BLE001 - the loader's reason, with the argument named
        raise ValueError(f"MODEL: cannot load {path} with {what}: {exc}") from exc
    _check_model(model)
    return model


def _read(flag, path, opener):
    """``opener(path)``, its failure (not a .npy file, truncated, not a Zarr
    array, unreadable) an error naming ``flag``."""
    try:
        return opener(path)
    except (OSError, EOFError, ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"{flag}: cannot read {path}: {exc}") from exc


def _inside(path, folder):
    """Whether ``path`` is ``folder`` or lies inside it (real paths)."""
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _is_zarr_array(path):
    """Whether the folder ``path`` holds a Zarr array (v3 or v2), not a group."""
    import json

    if os.path.isfile(os.path.join(path, ".zarray")):
        return True
    try:
        with open(os.path.join(path, "zarr.json")) as f:
            return json.load(f).get("node_type") == "array"
    except (OSError, ValueError, AttributeError):
        return False


def _check_output(output, overwrite, reads):
    """OUTPUT must be a path that replacing cannot destroy anything else:
    not empty, not a file, not a folder other than a Zarr array, and
    neither holding nor inside ``reads`` (MODEL, INPUT, --lengths) or the
    working folder; a new OUTPUT's folder is made now, so a path that
    cannot be written fails before any task."""
    if not output.strip():
        raise ValueError("OUTPUT: expected the path of a Zarr array to write, got an empty string")
    real = os.path.realpath(output)
    for flag, path in reads:
        other = os.path.realpath(path)
        if _inside(other, real) or _inside(real, other):
            raise ValueError(f"OUTPUT: {output} would overwrite {flag} {path}; "
                             "write the scores somewhere else")
    if _inside(os.getcwd(), real):
        raise ValueError(f"OUTPUT: {output} holds the working folder; write the scores to a "
                         "new folder")
    if os.path.exists(output):
        if not os.path.isdir(output):
            raise ValueError(f"OUTPUT: {output} is a file; expected a Zarr array "
                             "(a directory) to write or replace")
        if not _is_zarr_array(output):
            raise ValueError(f"OUTPUT: {output} is a folder but not a Zarr array; --overwrite "
                             "replaces Zarr arrays only")
        if not overwrite:
            raise ValueError(f"OUTPUT: {output} exists (use --overwrite to replace it)")
        return
    try:
        os.makedirs(output)
    except OSError as exc:
        raise ValueError(f"OUTPUT: cannot create {output}: {exc.strerror or exc}") from exc


def _open_input(path, chunk_rows):
    """INPUT as a dask array: a Zarr array (lazy) or a .npy file (memory-mapped)."""
    _, da = _import_dask()
    if chunk_rows is not None and chunk_rows < 1:
        raise ValueError(f"--chunk-rows: expected a positive integer, got {chunk_rows}")
    if not os.path.exists(path):
        raise ValueError(f"INPUT: {path} does not exist")
    if path.lower().endswith(".npy") and os.path.isfile(path):
        arr = _read("INPUT", path, _MappedFile.from_npy)
    elif os.path.isdir(path) and any(os.path.exists(os.path.join(path, f))
                                     for f in ("zarr.json", ".zarray", ".zgroup")):
        import zarr

        arr = _read("INPUT", path, lambda p: zarr.open(p, mode="r"))
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
    if path.lower().endswith(".npy") and os.path.isfile(path):
        arr = _read("--lengths", path, _MappedFile.from_npy)
    elif os.path.isdir(path):
        import zarr

        arr = _read("--lengths", path, lambda p: zarr.open_array(p, mode="r"))
    else:
        raise ValueError(f"--lengths: expected a Zarr array (a directory) or a .npy file, "
                         f"got {path}")
    if arr.shape != (x.shape[0],):
        raise ValueError(f"--lengths: expected shape (n,) = ({x.shape[0]},), got {arr.shape}")
    if np.dtype(arr.dtype).kind not in "iu":
        raise TypeError(f"--lengths: expected integers, got dtype {arr.dtype}")
    lengths = da.from_array(arr, chunks=(x.chunks[0],), lock=False, asarray=True,
                            meta=np.empty((0,), arr.dtype))
    if not arr.shape[0]:  # (no row, nothing to check: min and max of nothing fail)
        return lengths
    # every value, before any task runs (n integers: read once, a chunk at a time)
    lo, hi = da.compute(lengths.min(), lengths.max(), scheduler="sync")
    t = x.shape[1]
    if lo < 0 or hi > t:
        raise ValueError(f"--lengths: expected values in [0, {t}] (the time axis of INPUT), "
                         f"got values in [{lo}, {hi}]")
    return lengths


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
    p.add_argument("--batch-size", type=_positive, metavar="N",
                   help="rows per model call in a chunk")
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


def _positive(text):
    """An argparse type: a positive integer, else argparse's one-line error."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _non_negative(text):
    """An argparse type: an integer >= 0."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    return value


def _example_args(argv):
    """The arguments of ``--example`` (anywhere on the line, ``--example DIR``
    or ``--example=DIR``), or None without it."""
    for i, arg in enumerate(argv):
        if arg == "--":
            return None
        if arg == "--example":
            return argv[:i] + argv[i + 1:]
        if arg.startswith("--example="):
            return argv[:i] + [arg[len("--example="):]] + argv[i + 1:]
    return None


def _example_main(argv):
    """``python -m fastrnn predict --example DIR``: a model and data to score."""
    p = argparse.ArgumentParser(prog="python -m fastrnn predict --example",
                                description="Write DIR/model.fastrnn (a built LSTM with random "
                                            "weights), DIR/x.npy and DIR/lengths.npy.")
    p.add_argument("dir", metavar="DIR")
    p.add_argument("--rows", type=_positive, default=20000)
    p.add_argument("--time", type=_positive, default=100)
    p.add_argument("--features", type=_positive, default=32)
    p.add_argument("--units", type=_positive, default=64)
    p.add_argument("--seed", type=_non_negative, default=0)
    p.add_argument("--overwrite", action="store_true",
                   help="replace the three files if DIR holds them")
    p.add_argument("--no-progress", action="store_true",
                   help="accepted, as for scoring (writing the example shows no progress)")
    a = p.parse_args(argv)
    if not a.dir.strip():
        p.error("DIR: expected a folder, got an empty string")
    if os.path.exists(a.dir) and not os.path.isdir(a.dir):
        p.error(f"DIR: {a.dir} is a file; expected a folder")
    names = ("model.fastrnn", "x.npy", "lengths.npy")
    there = [n for n in names if os.path.exists(os.path.join(a.dir, n))]
    if there and not a.overwrite:
        p.error(f"DIR: {a.dir} holds {', '.join(there)} (use --overwrite to replace them)")
    try:
        os.makedirs(a.dir, exist_ok=True)
    except OSError as exc:
        p.error(f"DIR: cannot create {a.dir}: {exc.strerror or exc}")
    rng = np.random.default_rng(a.seed)
    layer = LSTM(a.units)
    layer.build((1, a.time, a.features))
    layer.set_weights([(rng.standard_normal(w.shape) / np.sqrt(w.shape[0])).astype(np.float32)
                       for w in layer.get_weights()])
    save(layer, os.path.join(a.dir, "model.fastrnn"))
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
        out[start:start + size] = _run_masked(model, xb, mask, batch_size, "--lengths", start)
        start += size
        if progress:
            print(f"\r[{'#' * int(40 * start / x.shape[0]):<40}] {start}/{x.shape[0]}",
                  end="", file=sys.stderr, flush=True)
    if progress:
        print(file=sys.stderr)


def main(argv=None):
    """``python -m fastrnn predict MODEL INPUT OUTPUT [--scheduler ADDRESS] [--batch-size N]``.

    Every argument is checked (the lengths, all of them), and the model
    probed on a tiny input, before any task runs; errors exit with status 2
    and one line on stderr. A failure while scoring (a NaN in a row of a
    model with ``nan_policy="raise"``, a scheduler that cannot be reached)
    exits with status 1 and one line on stderr; OUTPUT then holds the chunks
    written before it.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    example = _example_args(argv)
    if example is not None:
        return _example_main(example)
    args = _parser().parse_args(argv)
    try:
        import dask
        import zarr  # (OUTPUT is a Zarr array)
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
        # Validates shapes and probes the model in this process, before any task.
        try:
            with dask.config.set(scheduler="sync"):
                y0 = predict(model, x[:1], None if lengths is None else lengths[:1],
                             batch_size=batch_size).compute()
        except (ValueError, TypeError) as exc:
            if str(exc).startswith("lengths:"):  # (the model would ignore them)
                raise ValueError(_option_named(str(exc))) from exc
            raise ValueError(f"INPUT {args.input} (shape {tuple(x.shape)}, dtype {x.dtype}): "
                             f"{exc}") from exc
        reads = [("MODEL", args.model), ("INPUT", args.input)]
        if args.lengths is not None:
            reads.append(("--lengths", args.lengths))
        _check_output(args.output, args.overwrite, reads)
    except (ValueError, TypeError, KeyError) as exc:
        print(f"fastrnn predict: error: {exc}", file=sys.stderr)
        return 2
    if x.shape[0] == 0:  # nothing to score: an empty OUTPUT of the model's output shape
        zarr.create_array(store=args.output, shape=y0.shape, dtype=y0.dtype,
                          chunks=(1,) + y0.shape[1:], overwrite=True)
        print(f"scored 0 sequences: INPUT {args.input} holds none -> {args.output}")
        return 0
    saved = _thread_state()
    try:
        results = [_score(model, x, lengths, args, batch_size, mode) for mode in modes]
    except Exception as exc:  # a task's failure (NaN under nan_policy="raise", a lost scheduler)
        print(f"fastrnn predict: error while scoring: {type(exc).__name__}: "
              f"{_option_named(str(exc))} "
              f"({args.output} holds what was written before it)", file=sys.stderr)
        return 1
    finally:
        _restore_thread_state(saved)  # predict_main may be called from Python
    if len(results) > 1:
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        print(f"\n{os.cpu_count()} cores, load average {load:.1f} at the end")
        print(f"{'run':<48} {'sequences/s':>12}")
        for where, rate in results:
            print(f"{where:<48} {rate:>12,.0f}")
    return 0


def _option_named(text):
    """A message of :mod:`fastrnn.dask` about its ``lengths`` argument, naming
    the option the CLI reads them from."""
    return "--lengths" + text[len("lengths"):] if text.startswith("lengths:") else text


def _warm_model(model, xs, mask, batch_size):
    """Run ``model`` once on a real sample, untimed: kernels compiled or loaded."""
    _run_masked(model, xs, mask, batch_size, "--lengths", 0)


def _cap_worker_threads(dask_worker):
    """On a worker of a cluster the CLI joined (``client.run`` passes the
    worker): cap fastrnn's threads at the worker's ``nthreads`` for this run,
    as :class:`fastrnn.dask.FastrnnPlugin` does; return the setting before,
    for :func:`_restore_worker_threads`."""
    before = _thread_state()
    _set_process_threads(getattr(dask_worker.state, "nthreads", None) or dask_worker.nthreads)
    return before


def _restore_worker_threads(saved, dask_worker):
    """Put back the thread setting :func:`_cap_worker_threads` found on this
    worker (``saved``: by worker address)."""
    before = saved.get(dask_worker.address)
    if before is not None:
        _restore_thread_state(before)


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
    capped = None  # {worker address: its thread setting before}, on a joined cluster
    try:
        if mode == 0:
            where = "1 process, no Dask"
            # The model's kernels may use every core (the process default).
            _set_process_threads(None)
            _warm_model(model, sample, sample_mask, batch_size)
            t0 = time.perf_counter()
            _run_single_process(model, x, lengths, batch_size, args.output, progress)
            elapsed = time.perf_counter() - t0
        else:
            if args.scheduler or mode:
                from distributed import Client, LocalCluster

                if args.scheduler:
                    client = Client(args.scheduler)
                    where = f"scheduler {args.scheduler}"
                    # Someone else's workers: threads capped at each worker's
                    # nthreads for this run only, and put back after it (a
                    # plugin would stay registered on the scheduler).
                    capped = client.run(_cap_worker_threads)
                else:
                    cluster = LocalCluster(n_workers=mode, threads_per_worker=1,
                                           processes=True, dashboard_address=":0")
                    client = Client(cluster)
                    where = f"LocalCluster {mode} worker(s) x 1 thread"
                    client.register_plugin(_plugin_class()())  # (threads capped)
                # Kernels warmed before the clock starts.
                client.run(_warm_model, model, sample, sample_mask, batch_size)
                if args.scheduler:
                    where += f" ({sum(client.nthreads().values())} threads)"
            else:
                where = f"Dask local threads ({os.cpu_count() or 1})"
                # Dask's threads share the cores: one kernel thread each.
                _set_process_threads(1)
                _warm_model(model, sample, sample_mask, batch_size)
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
            try:
                if capped:
                    client.run(_restore_worker_threads, capped)
            except Exception as exc:  # noqa: BLE001 - a lost cluster has nothing to put back
                print(f"fastrnn predict: warning: the workers' fastrnn thread setting was not "
                      f"put back ({type(exc).__name__}: {exc})", file=sys.stderr)
            finally:
                client.close()
        if cluster is not None:
            cluster.close()
    rate = n / elapsed if elapsed > 0 else float("inf")
    print(f"scored {n} sequences of shape {tuple(x.shape[1:])} in {elapsed:.2f} s: "
          f"{rate:,.0f} sequences/s ({where}; {len(x.chunks[0])} chunks of "
          f"<= {max(x.chunks[0])} rows) -> {args.output}", flush=True)
    return where, rate
