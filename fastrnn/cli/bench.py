"""``python -m fastrnn bench``: fastrnn against ONNX Runtime and PyTorch.

Batch inference of float32 LSTM and GRU layers over a fixed grid of shapes
``(B, T, D, H)``, on every available fastrnn backend (``reference`` only at
the smallest shape) and, when installed, ONNX Runtime (one ONNX ``LSTM`` /
``GRU`` node built with ``onnx.helper``, intra-op threads = 2) and PyTorch
(``torch.nn.LSTM`` / ``GRU`` under ``inference_mode``, 2 threads). All
engines get the same weights; after a warm-up the calls are interleaved
(engine A, B, C, A, B, C, ...) so that a burst of load on a shared machine
hits every engine alike, and the table reports medians, achieved GFLOP/s
and the ratios fastrnn / ONNX Runtime and fastrnn / PyTorch (below 1 means
fastrnn is faster). Outputs are checked against fastrnn's before timing.
"best" compares the fastest sample of each engine: on a shared, noisy
machine it is the better estimate of what each engine can do.

fastrnn is timed as users call it: ``layer(x)`` on an ``LSTM`` / ``GRU``
layer holding the weights (its output allocated per call like the other
engines').
ONNX Runtime gets its input in its native ``(T, B, D)`` layout, prepared
before timing.

The header also gives the float32 FMA peak of this machine, measured with a
register-only loop (:mod:`fastrnn.cli.peak`), and the table fastrnn's
GFLOP/s as a share of it: the hardware's limit, not another engine.

Before anything is timed, the float32 LSTM and GRU kernels the grid runs
are compiled into Numba's cache, once (on 2 cores about a minute at the
first run, a second later), with a progress line saying so. Progress goes
to stderr: one line redrawn in place on a terminal, a plain line per
finished shape anywhere else (a log, a pipe).

Options: ``--quick`` (a shorter grid, < 30 s on 2 cores once compiled), ``--json PATH``,
``--contention`` (a busy process competes for the cores while timing),
``--runs N`` (the whole grid N times, one table per run, then the spread of
each ratio over the runs: on a shared machine a single run's ratio moves),
``--streaming`` (per-call latency of streams; see :mod:`fastrnn.cli.bench_streaming`),
``--accuracy`` (float32 error against float64, fastrnn beside PyTorch; see
:mod:`fastrnn.cli.bench_accuracy`).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import statistics
import sys
import time

import numpy as np

from .. import dispatch
from . import bench_quantized as bq
from . import bench_accuracy
from ._progress import PAUSE, Progress, warm
from .bench_gpu import bench_gpu, format_gpu_table
from .bench_streaming import run as run_streaming
from .peak import dot_peak, fma_peak

SHAPES = [(1, 100, 64, 128), (8, 100, 128, 256), (32, 100, 256, 512),
          (64, 50, 512, 1024), (256, 50, 128, 128)]
# --quick: the same shapes, shorter sequences where a call is long (per-step
# cost is what the ratios compare)
QUICK_SHAPES = [(1, 100, 64, 128), (8, 50, 128, 256), (32, 20, 256, 512),
                (64, 5, 512, 1024), (256, 10, 128, 128)]
CELLS = ("lstm", "gru")
THREADS = 2


# ------------------------------------------------------------------ helpers


def flops(cell, B, T, D, H):
    """Multiply-adds x 2 of the matrix products (the gate math is not counted)."""
    gates = 4 if cell == "lstm" else 3
    return 2.0 * gates * B * T * H * (D + H)


def _weights(cell, D, H, seed=0):
    """Keras-layout weights, scaled like a trained layer (outputs not saturated)."""
    rng = np.random.default_rng(seed)
    g = 4 if cell == "lstm" else 3
    s_in, s_rec = 1.0 / np.sqrt(D), 1.0 / np.sqrt(H)
    kernel = rng.uniform(-s_in, s_in, (D, g * H)).astype(np.float32)
    rec = rng.uniform(-s_rec, s_rec, (H, g * H)).astype(np.float32)
    if cell == "lstm":
        bias = rng.uniform(-0.1, 0.1, g * H).astype(np.float32)
    else:
        bias = rng.uniform(-0.1, 0.1, (2, g * H)).astype(np.float32)
    return kernel, rec, bias


# ------------------------------------------------------------------ engines
# Each factory returns a zero-argument callable that runs one batch and
# returns the output sequence as a (B, T, H) array, or raises ImportError.


def fastrnn_engine(backend_name, cell, w, x):
    return bq.fastrnn_engine(cell, w, x, "float32", backend_name)


def ort_engine(cell, w, x, threads=THREADS):
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    kernel, rec, bias = w
    B, T, D = x.shape
    H = rec.shape[0]
    if cell == "lstm":
        # Keras i, f, c, o -> ONNX i, o, f, c
        order = [0, 3, 1, 2]
        blocks = lambda m: np.concatenate([m[..., k * H:(k + 1) * H] for k in order], -1)  # noqa: E731
        W = blocks(kernel).T[None]
        R = blocks(rec).T[None]
        Bv = np.concatenate([blocks(bias), np.zeros(4 * H, np.float32)])[None]
        node = helper.make_node("LSTM", ["X", "W", "R", "B"], ["Y"], hidden_size=H)
    else:
        # Keras z, r, h == ONNX z, r, h; Keras reset_after == linear_before_reset=1
        W, R = kernel.T[None], rec.T[None]
        Bv = np.concatenate([bias[0], bias[1]])[None]
        node = helper.make_node("GRU", ["X", "W", "R", "B"], ["Y"], hidden_size=H,
                                linear_before_reset=1)
    inits = [numpy_helper.from_array(np.ascontiguousarray(a, np.float32), n)
             for a, n in ((W, "W"), (R, "R"), (Bv, "B"))]
    graph = helper.make_graph(
        [node], f"fastrnn_bench_{cell}",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [T, B, D])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [T, 1, B, H])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = min(model.ir_version, 10)
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    xt = np.ascontiguousarray(x.transpose(1, 0, 2))  # ONNX layout (T, B, D)

    def call():
        (y,) = sess.run(None, {"X": xt})
        return y

    def result():
        return call()[:, 0].transpose(1, 0, 2)

    call.result = result
    return call


def torch_engine(cell, w, x, threads=THREADS):
    import torch

    torch.set_num_threads(threads)
    kernel, rec, bias = w
    B, T, D = x.shape
    H = rec.shape[0]
    if cell == "lstm":
        m = torch.nn.LSTM(D, H, batch_first=True)  # gates i, f, g, o = Keras order
        w_ih, w_hh, b_ih, b_hh = kernel.T, rec.T, bias, np.zeros_like(bias)
    else:
        m = torch.nn.GRU(D, H, batch_first=True)  # gates r, z, n
        order = [1, 0, 2]
        blk = lambda a: np.concatenate([a[..., k * H:(k + 1) * H] for k in order], -1)  # noqa: E731
        w_ih, w_hh, b_ih, b_hh = blk(kernel).T, blk(rec).T, blk(bias[0]), blk(bias[1])
    with torch.no_grad():
        for p, v in zip((m.weight_ih_l0, m.weight_hh_l0, m.bias_ih_l0, m.bias_hh_l0),
                        (w_ih, w_hh, b_ih, b_hh)):
            p.copy_(torch.from_numpy(np.ascontiguousarray(v)))
    m.eval()
    xt = torch.from_numpy(x)

    def call():
        with torch.inference_mode():
            y, _ = m(xt)
        return y

    call.result = lambda: call().numpy()
    call.module = m
    return call


# ------------------------------------------------------------------ timing


def _time(fn, reps_inner):
    t0 = time.perf_counter()
    for _ in range(reps_inner):
        fn()
    return (time.perf_counter() - t0) / reps_inner


# Each sample runs the engine for at least this long (back-to-back calls):
# after the pause a core takes a few milliseconds to come back to full
# speed, and 50 ms keeps that ramp to a small share of every sample.
MIN_SAMPLE = 0.05


def sample(engines, repeats, min_sample=MIN_SAMPLE, progress=None, label=""):
    """Seconds per call of each engine, ``repeats`` samples each, interleaved.

    ``engines``: name -> callable. Each sample runs enough calls to last
    about ``min_sample`` seconds.
    """
    inner = {}
    for name, fn in engines.items():
        fn()  # warm-up (compiles, allocates, wakes thread pools)
        # calls per sample from the fastest of a few: a slow second call (a
        # pool still starting, an engine still tuning) would otherwise leave
        # every sample one call long
        t = min(_time(fn, 1) for _ in range(3))
        inner[name] = max(1, int(min_sample / max(t, 1e-7)))
    samples = {name: [] for name in engines}
    for r in range(repeats):
        for name, fn in engines.items():
            if progress is not None:
                progress.show(f"{label} {name} {r + 1}/{repeats}")
            time.sleep(PAUSE)
            fn()  # untimed: wakes this engine's threads (each pool slept in the pause)
            samples[name].append(_time(fn, inner[name]))
    return samples


def _busy(stop_at):
    x = 0
    while time.time() < stop_at:
        x += 1


class Contention:
    """A competing busy process (one core) for the duration of a ``with``."""

    def __init__(self, enabled, seconds=3600):
        self.enabled, self.seconds, self.proc = enabled, seconds, None

    def __enter__(self):
        if self.enabled:
            ctx = multiprocessing.get_context("spawn")
            self.proc = ctx.Process(target=_busy, args=(time.time() + self.seconds,), daemon=True)
            self.proc.start()
            time.sleep(0.2)
        return self

    def __exit__(self, *exc):
        if self.proc is not None:
            self.proc.terminate()
            self.proc.join()


# ------------------------------------------------------------------ batch benchmark


def fastrnn_backends(shape, names=None):
    """Available fastrnn backends to time at ``shape``: ``names`` (``--backends``,
    checked by :func:`parse`), else every one, the slow reference at the
    smallest shape of the grid only."""
    out = []
    for name in names or ("cpu", "cuda", "reference"):
        if (name == "reference" and not names
                and shape != min(SHAPES, key=lambda s: flops("lstm", *s))):
            continue
        ok, _ = dispatch.available(name)
        if ok:
            out.append(name)
    return out


def bench_batch(opts):
    """Time every engine over the grid; returns the list of result rows."""
    shapes = QUICK_SHAPES if opts.quick else SHAPES
    if opts.shapes:
        shapes = list(opts.shapes)  # (checked by parse)
    repeats = opts.repeats or (5 if opts.quick else 15)
    precisions = getattr(opts, "precision", None) or ["float32"]
    reduced = [m for m in precisions if m != "float32"]
    notes, rows = [], []
    progress = Progress(len(shapes) * len(opts.cells), not opts.no_progress)
    for cell in opts.cells:
        for shape in shapes:
            B, T, D, H = shape
            label = f"{cell} B={B} T={T} D={D} H={H}"
            progress.show(label)
            rng = np.random.default_rng(1)
            x = rng.standard_normal((B, T, D)).astype(np.float32)
            w = _weights(cell, D, H)
            engines, results = {}, {}
            full = SHAPES[QUICK_SHAPES.index(shape)] if shape in QUICK_SHAPES else shape
            if "float32" in precisions:
                for name in fastrnn_backends(full if opts.quick else shape, opts.backends):
                    engines[f"fastrnn-{name}"] = fastrnn_engine(name, cell, w, x)
            for mode in reduced:
                engines[f"fastrnn-cpu-{mode}"] = bq.fastrnn_engine(cell, w, x, mode)
            others = []
            if "float32" in precisions:
                others += [("onnxruntime", lambda: ort_engine(cell, w, x)),
                           ("pytorch", lambda: torch_engine(cell, w, x))]
            if "int8" in precisions or "int8_dynamic" in precisions:
                others += [("onnxruntime-int8", lambda: bq.ort_int8_engine(cell, w, x, THREADS)),
                           ("pytorch-int8", lambda: bq.torch_int8_engine(
                               torch_engine(cell, w, x).module, x, THREADS))]
            for name, factory in others:
                if name.split("-")[0] in opts.skip:
                    continue
                try:
                    engine = factory()
                except ImportError as exc:
                    note = f"{name}: not installed ({exc.name or exc}); skipped"
                    if note not in notes:
                        notes.append(note)
                    continue
                if engine is None:
                    note = f"{name}: no quantized {cell.upper()} in this engine; skipped"
                    if note not in notes:
                        notes.append(note)
                    continue
                engines[name] = engine
            # agreement of the float32 engines, before timing (the reduced
            # formats differ by their rounding: their error vs float64 says it)
            reduced_names = {f"fastrnn-cpu-{m}" for m in reduced} | {"onnxruntime-int8",
                                                                      "pytorch-int8"}
            f32 = [n for n in engines if n not in reduced_names]
            base = None
            if f32:
                base_fn = engines[f32[0]]
                base = np.asarray(base_fn.result() if hasattr(base_fn, "result") else base_fn())
            agree, err64 = {}, {}
            exact = bq.float64_output(cell, w, x) if reduced else None
            for name, fn in engines.items():
                got = np.asarray(fn.result() if hasattr(fn, "result") else fn())
                if base is not None and name in f32:
                    agree[name] = float(np.max(np.abs(got - base)))
                if exact is not None:
                    err64[name] = float(np.max(np.abs(got - exact)))
            samples = sample(engines, repeats, progress=progress, label=label)
            fl = flops(cell, B, T, D, H)
            for name, v in samples.items():
                t = statistics.median(v)
                results[name] = dict(ms=t * 1e3, best_ms=min(v) * 1e3, gflops=fl / t / 1e9)
                if name in agree:
                    results[name]["max_abs_diff"] = agree[name]
                if name in err64:
                    results[name]["err_f64"] = err64[name]
            # the float32 fastrnn engine the rate and ratio columns describe:
            # cpu, else the first of --backends
            main = next((n for n in f32 if n.startswith("fastrnn-")), None)
            row = dict(cell=cell, B=B, T=T, D=D, H=H, engines=results, main=main)
            for other, key in (("onnxruntime", "vs_ort"), ("pytorch", "vs_torch")):
                if other in results and main in results:
                    row[key] = results[main]["ms"] / results[other]["ms"]
                    row[key + "_best"] = results[main]["best_ms"] / results[other]["best_ms"]
            if reduced:
                bq.add_ratios(row)
            rows.append(row)
            progress.step(label + ": " + ", ".join(f"{n} {r['ms']:.3g} ms"
                                                    for n, r in results.items()))
    progress.close()
    if any("fastrnn-cpu" in r["engines"] for r in rows):
        cpu = dispatch.backend_module("cpu")
        for (cell, B, D, H, t0, t1, fmt), split in sorted(cpu.tuned_splits().items()):
            engine = "fastrnn-cpu" + ("" if fmt == "float32" else f"-{fmt}")
            notes.append(f"{engine} {cell} B={B} D={D} H={H} T={t0}-{t1}: {split} split, "
                         "chosen by timing both")
    return rows, notes


def fma_peaks():
    """The float32 FMA peak of one core and of fastrnn's threads (GFLOP/s,
    register-only loop: :mod:`fastrnn.cli.peak`)."""
    # The peak's parallel loop would otherwise be the process's first
    # parallel launch, loading OpenMP with its default spin (idle threads
    # spin for milliseconds): fastrnn starts the pool with a short one, as
    # in any program that runs its kernels (measured on 2 cores: PyTorch's
    # LSTM B=256 took 26-41 ms beside the long spin, 12-15 ms without).
    dispatch.backend_module("cpu").threading_layer(start=True)
    peaks = {"1": fma_peak(1)}
    n = dispatch.get_num_threads()
    if n > 1:
        peaks[str(n)] = fma_peak(n)
    return peaks


def dot_peaks():
    """The int8 and bfloat16 dot-product peaks on fastrnn's threads (GOP/s,
    register-only loops: :mod:`fastrnn.cli.peak`), for the ``_dynamic``
    weight formats."""
    n = dispatch.get_num_threads()
    return {fmt: dot_peak(fmt, n) for fmt in ("int8", "bfloat16")}


def markdown_table(head, body):
    """``head`` (column names) and ``body`` (rows of cell strings) as a Markdown table."""
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(cells) + " |" for cells in body])


def format_table(rows, peak=None):
    """The batch table; its rate and ratio columns describe each row's
    ``main`` engine (float32 fastrnn: cpu, else the backend timed), named in
    their headers, and "max abs diff" the float32 engines' agreement."""
    names = []
    for row in rows:
        for n in row["engines"]:
            if n not in names:
                names.append(n)
    who = _who(rows)
    # ratio columns only for engines that ran (``--skip pytorch`` drops cpu/torch)
    ratios = [(k, h) for k, h in (("vs_ort", f"{who}/ORT"), ("vs_torch", f"{who}/torch"),
                                  ("vs_ort_best", f"{who}/ORT best"))
              if any(k in row for row in rows)]
    ran = any(row.get("main") for row in rows)  # (a float32 fastrnn engine: the rate columns)
    rate = [f"{who} GFLOP/s"] + ([f"{who} % of peak"] if peak else []) if ran else []
    head = (["cell", "B,T,D,H"] + [f"{n} ms" for n in names] + rate
            + [h for _, h in ratios] + ["max abs diff"])
    body = []
    for row in rows:
        e = row["engines"]
        cells = [row["cell"], f"{row['B']},{row['T']},{row['D']},{row['H']}"]
        cells += [f"{e[n]['ms']:.3g}" if n in e else "" for n in names]
        if rate:
            main = e.get(row.get("main"))
            cells.append(f"{main['gflops']:.0f}" if main else "")
            if peak:
                cells.append(f"{100 * main['gflops'] / peak:.0f}" if main else "")
        cells += [f"{row[k]:.2f}" if k in row else "" for k, _ in ratios]
        diffs = [v["max_abs_diff"] for v in e.values() if "max_abs_diff" in v]
        cells.append(f"{max(diffs):.1e}" if diffs else "")
        body.append(cells)
    return markdown_table(head, body)


def _who(rows):
    """The header name of the rows' ``main`` engine: its backend, or
    "fastrnn" when the rows differ."""
    mains = {row.get("main") for row in rows} - {None}
    return mains.pop()[len("fastrnn-"):] if len(mains) == 1 else "fastrnn"


# ------------------------------------------------------------------ streaming


def bench_streaming(opts):
    """Per-call latency of streams (batch 1, state carried): :mod:`fastrnn.cli.bench_streaming`."""
    return run_streaming(opts)


# ------------------------------------------------------------------ command line


def environment():
    import numba

    cpu = dispatch.backend_module("cpu")
    env = dict(
        python=platform.python_version(), numpy=np.__version__, numba=numba.__version__,
        machine=platform.machine(), cpus=os.cpu_count(),
        fastrnn_threads=cpu.get_num_threads(), threading_layer=cpu.threading_layer(start=True),
    )
    for mod in ("onnxruntime", "torch"):
        try:
            env[mod] = __import__(mod).__version__
        except ImportError:
            env[mod] = None
    return env


def _positive_ints(text):
    """``"1,100,64,128"`` -> (1, 100, 64, 128), or None if any is not a positive integer."""
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        return None
    return values if all(v > 0 for v in values) else None


def _check_lists(p, opts):
    """The arguments argparse's types do not check: each an error before any timing."""
    if opts.shapes:
        shapes = [_positive_ints(s) for s in opts.shapes]
        bad = [s for s, v in zip(opts.shapes, shapes) if v is None or len(v) != 4]
        if bad:
            p.error(f"--shapes: expected B,T,D,H (four positive integers) each, got {bad}")
        opts.shapes = shapes
    if opts.repeats is not None and opts.repeats < 1:
        p.error(f"--repeats: expected a positive number, got {opts.repeats}")
    if opts.calls is not None and opts.calls < 1:
        p.error(f"--calls: expected a positive number, got {opts.calls}")
    if opts.hs is not None and not all(h > 0 for h in opts.hs):
        p.error(f"--hs: expected positive unit counts, got {','.join(map(str, opts.hs))}")
    unknown = [b for b in opts.backends or () if b not in dispatch.BACKENDS]
    if unknown:
        p.error(f"--backends: expected a comma-separated subset of "
                f"{','.join(dispatch.BACKENDS)}, got {unknown}")
    unknown = [e for e in opts.skip if e not in _SKIPPABLE]
    if unknown:
        p.error(f"--skip: expected a comma-separated subset of {','.join(_SKIPPABLE)}, got "
                f"{unknown}")
    if opts.shapes is not None and not opts.shapes:
        p.error("--shapes: expected at least one B,T,D,H")
    for name in opts.backends or ():
        ok, why = dispatch.available(name)
        if not ok:
            p.error(f"--backends: {name} cannot run here: {why}")
    if opts.json:
        _check_writable(p, "--json", opts.json)


def _check_writable(p, flag, path):
    """An error now, not after minutes of timing, when ``path`` cannot be
    written: a folder, a missing folder, or no permission."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        p.error(f"{flag}: no folder {folder!r} to write {path!r} in")
    if os.path.isdir(path):
        p.error(f"{flag}: {path!r} is a folder; expected a file name")
    existed = os.path.exists(path)
    try:
        with open(path, "a"):
            pass
    except OSError as exc:
        p.error(f"{flag}: cannot write {path!r}: {exc.strerror or exc}")
    if not existed:
        os.remove(path)


# what each mode reads besides --quick, --json, --cells and --no-progress:
# any other option given is an error, not silently ignored
_MODE_OPTIONS = {
    "batch": ("contention", "shapes", "backends", "skip", "repeats", "precision", "runs"),
    "streaming": ("contention", "hs", "calls", "skip", "precision"),
    "accuracy": (),
}
_DEFAULTS = dict(contention=False, shapes=None, backends=None, skip=[], repeats=None,
                 precision="float32", runs=1, hs=None, calls=None)


def _check_mode_options(p, opts):
    mode = "streaming" if opts.streaming else "accuracy" if opts.accuracy else "batch"
    for name, default in _DEFAULTS.items():
        if name not in _MODE_OPTIONS[mode] and getattr(opts, name) != default:
            flag = "--" + name
            if mode == "batch":
                p.error(f"{flag}: only with --streaming")
            p.error(f"{flag}: not used with --{mode}")


#: engines ``--skip`` may leave out
_SKIPPABLE = ("onnxruntime", "pytorch")


def parse(argv):
    p = argparse.ArgumentParser(prog="python -m fastrnn bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="shorter sequences, fewer repeats (< 30 s once compiled)")
    p.add_argument("--json", metavar="PATH", help="write the results as JSON")
    p.add_argument("--contention", action="store_true",
                   help="time while a competing busy process runs")
    p.add_argument("--streaming", action="store_true", help="per-call latency of streams (batch 1, state carried)")
    p.add_argument("--hs", type=lambda s: tuple(int(v) for v in s.split(",")), default=None,
                   help="--streaming: the unit counts (default 64,128,256,512)")
    p.add_argument("--calls", type=int, default=None,
                   help="--streaming: timed calls per engine (default 2000; --quick 300)")
    p.add_argument("--accuracy", action="store_true",
                   help="float32 error against float64 (LSTM, GRU; batch, stream, cell), beside PyTorch")
    p.add_argument("--cells", default="lstm,gru", type=lambda s: s.split(","),
                   help="cell types to time, comma-separated (default lstm,gru)")
    p.add_argument("--shapes", nargs="*", metavar="B,T,D,H", help="override the grid")
    p.add_argument("--backends", type=lambda s: s.split(","), default=None,
                   help="fastrnn backends (default: every available one)")
    p.add_argument("--skip", type=lambda s: s.split(","), default=[],
                   help="engines to leave out: onnxruntime,pytorch")
    p.add_argument("--repeats", type=int, default=None,
                   help="timed samples per engine and shape")
    p.add_argument("--precision", default="float32",
                   help="weight formats to time, comma-separated: float32,bfloat16,int8,"
                        "int8_dynamic,bfloat16_dynamic (int8 adds ONNX Runtime's DynamicQuantizeLSTM and "
                        "PyTorch's quantize_dynamic; every row then gets its max abs error vs "
                        "float64)")
    p.add_argument("--runs", type=int, default=1,
                   help="time the whole grid this many times and summarise the ratios' spread")
    p.add_argument("--no-progress", action="store_true")
    opts = p.parse_args(argv)
    if opts.runs < 1:
        p.error(f"--runs: expected a positive number of runs, got {opts.runs}")
    if opts.streaming and opts.accuracy:
        p.error("--streaming and --accuracy: one at a time")
    _check_mode_options(p, opts)
    unknown = [c for c in opts.cells if c not in CELLS]
    if unknown:
        p.error(f"--cells: expected a comma-separated subset of {','.join(CELLS)}, got {unknown}")
    _check_lists(p, opts)
    try:
        opts.precision = bq.parse_precisions(opts.precision)
    except ValueError as exc:
        p.error(str(exc))
    if opts.backends and "cpu" not in opts.backends and opts.precision != ["float32"]:
        p.error("--precision: the bfloat16 and int8 rows run the cpu backend; add cpu to "
                "--backends")
    return opts


def format_spread(runs):
    """The ratios of every run (a list of ``bench_batch`` row lists) side by
    side, per shape, with their min / median / max."""
    who = _who(runs[0])
    keys = [(k, h) for k, h in (("vs_ort", f"{who}/ORT"), ("vs_torch", f"{who}/torch"))
            if any(k in row for rows in runs for row in rows)]
    if not keys:
        return None
    head = ["cell", "B,T,D,H"]
    for _, h in keys:
        head += [f"{h} per run", f"{h} min", f"{h} median", f"{h} max"]
    body = []
    for i, row in enumerate(runs[0]):
        cells = [row["cell"], f"{row['B']},{row['T']},{row['D']},{row['H']}"]
        for k, _ in keys:
            vals = [rows[i][k] for rows in runs if k in rows[i]]
            if vals:
                cells += [" ".join(f"{v:.2f}" for v in vals), f"{min(vals):.2f}",
                          f"{statistics.median(vals):.2f}", f"{max(vals):.2f}"]
            else:
                cells += ["", "", "", ""]
        body.append(cells)
    return markdown_table(head, body)


def main_accuracy(opts, argv):
    """``--accuracy``: the table of :mod:`fastrnn.cli.bench_accuracy`."""
    t0 = time.time()
    progress = Progress(len(opts.cells) * len(bench_accuracy.grid(opts)) * len(bench_accuracy.KINDS),
                        not opts.no_progress)
    rows, notes = bench_accuracy.run(opts, progress)
    progress.close()
    print(f"float32 error against float64 ({time.time() - t0:.0f} s): max over outputs and "
          "final states of |y - y64| / max(1, |y64|); ratios: fastrnn / PyTorch, same kind")
    print(bench_accuracy.format_table(rows))
    for note in notes:
        print(f"note: {note}")
    if opts.json:
        with open(opts.json, "w") as f:
            json.dump(dict(environment=environment(), quick=opts.quick, rows=rows, notes=notes,
                           argv=list(argv or [])), f, indent=1)
    return 0


def main(argv=None):
    opts = parse(sys.argv[1:] if argv is None else argv)
    if opts.accuracy:
        return main_accuracy(opts, argv)
    t0 = time.time()
    title = "float32 batch inference, median ms per call"
    if opts.precision != ["float32"]:
        title = f"batch inference, weights {', '.join(opts.precision)}, median ms per call"
    if opts.contention:
        title += ", with one competing busy process"
    runs, notes, env = [], [], None  # runs: dict(rows, fma_peak_gflops) per run
    if not opts.streaming and "cpu" in (opts.backends or ("cpu",)):
        # the grid runs float32 LSTM and GRU (reset_after) alone: compile
        # those, once, before the peak and the timing
        warm(tuple(opts.cells), dispatch.get_num_threads() > 1, not opts.no_progress)
    if opts.streaming:
        with Contention(opts.contention):
            rows, notes = bench_streaming(opts)
        env = environment()
    else:
        for run in range(opts.runs):
            t_run = time.time()
            # the machine's peak, before any competing process starts
            peaks = fma_peaks()
            dpeaks = dot_peaks() if opts.precision != ["float32"] else None
            with Contention(opts.contention):
                rows, run_notes = bench_batch(opts)
            env = env or environment()
            peak = peaks[str(env["fastrnn_threads"])] if peaks else None
            runs.append(dict(rows=rows, fma_peak_gflops=peaks))
            if dpeaks:
                runs[-1]["dot_peak_gops"] = dpeaks
            notes += [n for n in run_notes if n not in notes]
            which = f"run {run + 1} of {opts.runs}, " if opts.runs > 1 else ""
            print(f"{title} ({which}{time.time() - t_run:.0f} s; threads: fastrnn "
                  f"{env['fastrnn_threads']}, layer {env['threading_layer']}; ORT/PyTorch {THREADS})")
            if peaks:
                print(f"float32 FMA peak (register-only loop): {peaks['1']:.0f} GFLOP/s on one core, "
                      f"{peak:.0f} on {env['fastrnn_threads']} threads; '% of peak' uses the latter")
            print(format_table(rows, peak))
            if opts.precision != ["float32"]:
                ratios = bq.format_ratios(rows, markdown_table)
                if ratios:
                    print("\nreduced precision: ratios of median times (below 1: the first is faster)")
                    print(ratios)
                print("\nmax abs error of each engine's output vs the same layer in float64")
                print(bq.format_errors(rows, markdown_table))
                if peak and dpeaks:
                    print(f"\n% of the peak of the instructions each format multiplies with, on "
                          f"{env['fastrnn_threads']} threads: float32 FMA {peak:.0f} GFLOP/s "
                          f"(float32, bfloat16, int8: widened weights), int8 dot products "
                          f"{dpeaks['int8']:.0f} GOP/s (int8_dynamic), bfloat16 dot products "
                          f"{dpeaks['bfloat16']:.0f} GOP/s (bfloat16_dynamic)")
                    print(bq.format_peaks(rows, dict(dpeaks, float32=peak), markdown_table))
            if opts.runs > 1:
                print()
        rows = runs[0]["rows"]
        env["fma_peak_gflops"] = runs[0]["fma_peak_gflops"]
        if "dot_peak_gops" in runs[0]:
            env["dot_peak_gops"] = runs[0]["dot_peak_gops"]
        if opts.runs > 1:
            spread = format_spread([r["rows"] for r in runs])
            if spread:
                print(f"ratios over the {opts.runs} runs ({time.time() - t0:.0f} s in all; "
                      "below 1: fastrnn is faster)")
                print(spread)
    gpu_rows = []
    if not opts.streaming:
        # GPU rows: fastrnn cuda beside cuDNN, only with a real GPU
        gpu_rows, gpu_notes = bench_gpu(opts.quick, opts.cells)
        if gpu_rows:
            print("\nGPU: float32, device arrays in and out, CUDA-event ms per call")
            print(format_gpu_table(gpu_rows))
        notes = notes + gpu_notes
    for note in notes:
        print(f"note: {note}")
    if opts.json:
        out = dict(environment=env, contention=opts.contention, quick=opts.quick,
                   rows=rows, gpu_rows=gpu_rows, notes=notes, argv=list(argv or []))
        if len(runs) > 1:
            out["runs"] = runs
        with open(opts.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0
