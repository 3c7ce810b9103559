"""``python -m fastrnn bench --streaming``: per-call latency of streams.

Batch 1, state carried from call to call, float32, ``D = H``; one frame
(``T = 1``) or a chunk of ``T = 10`` frames per call, for LSTM and GRU at
``H = 64, 128, 256, 512``. Engines, all with the same weights:

* **fastrnn**: ``layer.stream()``, called as ``stream(x)`` (the output is
  allocated per call; ``out=`` would save ~0.1 µs). ``T = 10`` uses a
  ``return_sequences=True`` layer, like the other engines' sequence output.
* **ONNX Runtime**: one ``LSTM`` / ``GRU`` node built with ``onnx.helper``
  (GRU ``linear_before_reset=1``, Keras's ``reset_after``), run with
  ``run_with_iobinding``; inputs and outputs bound once to preallocated
  buffers, the states ping-ponging between two bindings (no copy, no
  rebinding per call). Timed with 1 and 2 intra-op threads; the faster
  median is reported ("best thread count").
* **PyTorch**: ``nn.LSTMCell`` / ``nn.GRUCell`` (``T = 10``: ten cell calls
  from Python) and ``nn.LSTM`` / ``nn.GRU`` (``batch_first``, the whole
  chunk in one call), under ``torch.inference_mode()`` with
  ``torch.set_num_threads(1)`` (batch 1 gains nothing from more threads).

After a warm-up, every engine's calls run in interleaved blocks (A, B, C, A,
B, C, ...) so that load bursts on a shared machine hit every engine alike;
each engine gets at least ``--calls`` timed calls (2000; ``--quick``: 300).
Reported: median and p99 per call in µs, and fastrnn's median divided by
each engine's (below 1: fastrnn is faster). Outputs are checked against
fastrnn's over three successive calls before timing (so every engine
really carries its state): the table's "max abs diff", ``max_abs_diff`` in
the JSON. Also measured:
the stream's Python overhead, the median of ``stream(x, out=out)`` minus
the median of the bare compiled kernel call on the same buffers (T = 1,
H = 64).

``OPENBLAS_NUM_THREADS=1 python -m fastrnn.cli.bench_streaming --matvec`` times
the recurrent matrix-vector product alone against OpenBLAS ``sgemv``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
from numba import njit

from .. import dispatch, streaming
from ..kernels import quantize, reference, run as run_kernel
from ..kernels.cpu import stream as _stream
from ..layers import GRU, LSTM
from . import bench_quantized as bq
from ._progress import PAUSE, warm

# untimed calls after each pause before a block is timed (seconds)
RAMP = 0.01

HS = (64, 128, 256, 512)
TS = (1, 10)
CELLS = ("lstm", "gru")


def _layer(cell, H, T, rng):
    cls = LSTM if cell == "lstm" else GRU
    layer = cls(H, return_sequences=T > 1)
    layer.build((1, None, H))
    s = 1.0 / np.sqrt(H)  # PyTorch's initialisation: outputs not saturated, errors not amplified
    layer.set_weights([rng.uniform(-s, s, w.shape).astype(np.float32)
                       for w in layer.get_weights()])
    return layer


# ----- engines: each returns (call, output_getter) ---------------------------

def _fastrnn(layer, x):
    stream = layer.stream()
    if stream.threads is None:
        # Large weights: the stream times its two engines at its first calls
        # and again RETUNE_CALLS calls later (see Stream). Both rounds run
        # before timing, so that the table shows the engine it settles on,
        # not one chosen while the process was still busy with the row
        # before; then the state starts from zeros again.
        for _ in range(2 * streaming.TUNE_MAX_CALLS + streaming.RETUNE_CALLS):
            stream(x)
        stream.reset()

    def call():
        return stream(x)

    call.stream = stream  # (its threads are reported)
    return call, lambda: stream(x)


def _quantized(layer, mode):
    """A copy of ``layer`` (D = H) with its weights quantized to ``mode``."""
    copy = type(layer)(layer.units, return_sequences=layer.return_sequences)
    copy.build((1, None, layer.units))
    copy.set_weights(layer.get_weights())
    return copy.quantize(mode)


def _kept_threads(stream, T):
    """The threads of the engine ``stream`` kept for calls of ``T`` steps
    (see Stream): 1 for the stream kernels."""
    kept = stream._chosen.get("frame" if T == 1 else "chunk") \
        if hasattr(stream, "_chosen") else None
    return 1 if kept is None or not kept[0] else (
        2 if stream._splits else dispatch.get_num_threads())


def _fastrnn_kernel(layer, x, mode):
    """The stream kernels called directly (no ``Stream`` wrapper, output
    preallocated) on ``mode`` weights: ``quantize`` of the layer's params."""
    params = [c.params() for c in layer.cells]
    if mode != "float32":
        params = [quantize(p, mode) for p in params]
    w, cfg, n = _stream.pack(params, 1, False)
    T = x.shape[1] if x.ndim == 3 else 1
    s = np.zeros(n, np.float32)
    work = np.zeros(_stream.work_size(cfg, 1, T), np.float32)
    H = params[-1].output_size
    out = np.empty((1, H) if x.ndim == 2 else (1, T, H), np.float32)
    fn = _stream.frame if x.ndim == 2 else _stream.chunk_seq

    def call():
        fn(x, w, s, work, out, cfg)
        return out

    return call, lambda: call().copy()


def _float64_outputs(cell, weights, x, calls):
    """The outputs of ``calls`` successive calls on ``x (1, T, H)`` from zero
    state, computed in float64 (``reference``): the accuracy baseline."""
    params = bq._params(cell, [np.asarray(a, np.float64) for a in weights])
    T, H = x.shape[1], params.units
    xs = np.concatenate([x] * calls, axis=1).astype(np.float64)
    out = np.empty((1, calls * T, H))
    run_kernel(reference, reference.pack(params), xs, [np.zeros((1, H))] * params.n_states,
               None, False, False, out, [np.empty((1, H)) for _ in range(params.n_states)])
    return [out[:, i * T:(i + 1) * T] for i in range(calls)]


def _onnx_model(cell, H, weights, T):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    kernel, rec, bias = weights
    if cell == "lstm":
        order = np.r_[0:H, 3 * H : 4 * H, H : 2 * H, 2 * H : 3 * H]  # Keras ifco -> ONNX iofc
        W = kernel[:, order].T[None]
        R = rec[:, order].T[None]
        B = np.concatenate([bias[order], np.zeros(4 * H, np.float32)])[None]
        op, extra = "LSTM", {}
    else:  # Keras z, r, h == ONNX z, r, h
        W, R = kernel.T[None], rec.T[None]
        B = np.concatenate([bias[0], bias[1]])[None]
        op, extra = "GRU", {"linear_before_reset": 1}
    inits = [numpy_helper.from_array(np.ascontiguousarray(a, np.float32), n)
             for a, n in ((W, "W"), (R, "R"), (B, "B"))]
    ins = ["X", "W", "R", "B", "", "h0"] + (["c0"] if cell == "lstm" else [])
    outs = ["Y", "Yh"] + (["Yc"] if cell == "lstm" else [])
    node = helper.make_node(op, ins, outs, hidden_size=H, **extra)
    f = TensorProto.FLOAT
    inputs = [helper.make_tensor_value_info("X", f, [T, 1, H]),
              helper.make_tensor_value_info("h0", f, [1, 1, H])]
    outputs = [helper.make_tensor_value_info("Y", f, [T, 1, 1, H]),
               helper.make_tensor_value_info("Yh", f, [1, 1, H])]
    if cell == "lstm":
        inputs.append(helper.make_tensor_value_info("c0", f, [1, 1, H]))
        outputs.append(helper.make_tensor_value_info("Yc", f, [1, 1, H]))
    graph = helper.make_graph([node], "stream", inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _onnxruntime(cell, H, T, weights, x, threads, int8=False):
    model = (bq.ort_int8_model(weights, T, 1, H, states=True) if int8
             else _onnx_model(cell, H, weights, T))
    sess = bq.ort_session(model, threads)
    X = np.ascontiguousarray(x.transpose(1, 0, 2))  # (T, 1, H): ORT's layout
    Y = np.zeros((T, 1, 1, H), np.float32)
    names = ["h", "c"] if cell == "lstm" else ["h"]
    bufs = [[np.zeros((1, 1, H), np.float32) for _ in names] for _ in range(2)]
    bindings = []
    for k in range(2):
        b = sess.io_binding()
        b.bind_cpu_input("X", X)
        b.bind_output("Y", "cpu", 0, np.float32, Y.shape, Y.ctypes.data)
        for j, n in enumerate(names):
            src, dst = bufs[k][j], bufs[1 - k][j]
            b.bind_cpu_input(n + "0", src)
            b.bind_output("Y" + n if n == "h" else "Yc", "cpu", 0, np.float32, dst.shape,
                          dst.ctypes.data)
        bindings.append(b)
    state = [0]
    run = sess.run_with_iobinding

    def call():
        k = state[0]
        run(bindings[k])
        state[0] = 1 - k

    def output():
        call()
        y = Y[:, 0, 0, :]
        return y[-1:] if T == 1 else y[None]

    return call, output, (bufs, bindings, sess)


def _torch_cell(cell, H, T, weights, x):
    import torch

    kernel, rec, bias = (torch.from_numpy(np.ascontiguousarray(w)) for w in weights)
    if cell == "lstm":  # Keras i,f,c,o == PyTorch i,f,g,o
        mod = torch.nn.LSTMCell(H, H)
        mod.weight_ih.data[:] = kernel.T
        mod.weight_hh.data[:] = rec.T
        mod.bias_ih.data[:] = bias
        mod.bias_hh.data[:] = 0
    else:  # Keras z,r,h -> PyTorch r,z,n
        mod = torch.nn.GRUCell(H, H)
        perm = np.r_[H : 2 * H, 0:H, 2 * H : 3 * H]
        mod.weight_ih.data[:] = kernel.T[perm]
        mod.weight_hh.data[:] = rec.T[perm]
        mod.bias_ih.data[:] = bias[0][perm]
        mod.bias_hh.data[:] = bias[1][perm]
    mod.eval()
    xt = torch.from_numpy(x)
    frames = [xt[:, t] for t in range(T)]
    st = {"h": torch.zeros(1, H), "c": torch.zeros(1, H)}
    lstm = cell == "lstm"

    def call():
        with torch.inference_mode():
            h, c = st["h"], st["c"]
            for f in frames:
                if lstm:
                    h, c = mod(f, (h, c))
                else:
                    h = mod(f, h)
            st["h"], st["c"] = h, c
        return h

    def output():
        with torch.inference_mode():
            h, c = st["h"], st["c"]
            ys = []
            for f in frames:
                if lstm:
                    h, c = mod(f, (h, c))
                else:
                    h = mod(f, h)
                ys.append(h)
            st["h"], st["c"] = h, c
        return torch.stack(ys, 1).numpy() if T > 1 else h.numpy()

    return call, output


def _torch_module(cell, H, T, weights, x, int8=False):
    import torch

    kernel, rec, bias = (torch.from_numpy(np.ascontiguousarray(w)) for w in weights)
    if cell == "lstm":
        mod = torch.nn.LSTM(H, H, batch_first=True)
        mod.weight_ih_l0.data[:] = kernel.T
        mod.weight_hh_l0.data[:] = rec.T
        mod.bias_ih_l0.data[:] = bias
        mod.bias_hh_l0.data[:] = 0
    else:
        mod = torch.nn.GRU(H, H, batch_first=True)
        perm = np.r_[H : 2 * H, 0:H, 2 * H : 3 * H]
        mod.weight_ih_l0.data[:] = kernel.T[perm]
        mod.weight_hh_l0.data[:] = rec.T[perm]
        mod.bias_ih_l0.data[:] = bias[0][perm]
        mod.bias_hh_l0.data[:] = bias[1][perm]
    mod.eval()
    if int8:
        mod = bq.torch_int8(mod)
    xt = torch.from_numpy(x)
    lstm = cell == "lstm"
    st = {"s": (torch.zeros(1, 1, H), torch.zeros(1, 1, H)) if lstm else torch.zeros(1, 1, H)}

    def call():
        with torch.inference_mode():
            y, st["s"] = mod(xt, st["s"])
        return y

    def output():
        y = call().numpy()
        return y[:, 0] if T == 1 else y

    return call, output


# ----- timing ------------------------------------------------------------------

def _time_interleaved(calls, n_calls, block=100, warmup=200, pause=PAUSE, ramp=RAMP):
    """Per-call µs of each callable, run in interleaved blocks of ``block``
    calls. Before each block: a pause of ``pause`` seconds, as
    :func:`.bench.sample` makes (the engine timed before may leave its
    thread pool spinning on both cores for milliseconds, and a two-thread
    stream sharing a core with it gives up its helper for a while, see
    :class:`fastrnn.streaming.Stream`), then untimed calls for ``ramp``
    seconds (at least one): they wake the engine's threads, and the cores
    come back to full speed after the pause, which a block of short calls
    would otherwise spend ramping up."""
    pc = time.perf_counter_ns
    for f in calls.values():
        for _ in range(warmup):
            f()
    samples = {k: [] for k in calls}
    rounds = max(1, -(-n_calls // block))
    ramp_ns = int(ramp * 1e9)
    for _ in range(rounds):
        for k, f in calls.items():
            out = samples[k]
            time.sleep(pause)
            t_end = pc() + ramp_ns
            f()
            while pc() < t_end:
                f()
            for _ in range(block):
                t0 = pc()
                f()
                out.append(pc() - t0)
    return {k: np.asarray(v, dtype=np.float64) / 1e3 for k, v in samples.items()}


def wrapper_overhead(n_calls=5000):
    """µs of Python around the kernel: median stream(x, out=out) - median bare kernel call."""
    rng = np.random.default_rng(1)
    layer = _layer("lstm", 64, 1, rng)
    stream = layer.stream()
    x = rng.standard_normal((1, 64)).astype(np.float32)
    out = np.empty((1, 64), np.float32)
    stream(x, out=out)
    k, w, s, work, cfg = stream._frame_fn, stream._w, stream._s, stream._work, stream._cfg

    def bare():
        k(x, w, s, work, out, cfg)

    def wrapped():
        stream(x, out=out)

    t = _time_interleaved({"bare": bare, "stream": wrapped}, n_calls, block=250)
    med = {key: float(np.median(v)) for key, v in t.items()}
    return med["stream"] - med["bare"], med


def matvec_vs_blas(hs=HS, repeats=100):
    """Rows ``(cell, H, stream_us, blas_us)``: one recurrent mat-vec ``h U`` (float32).

    The stream kernels' panel product (panel order alternating, as streams
    run it) against OpenBLAS ``sgemv`` (``np.dot`` inside ``@njit``), each
    repeated ``repeats`` times inside one compiled loop so no Python cost is
    counted. Run with ``OPENBLAS_NUM_THREADS=1`` for the single-thread BLAS.
    """
    @njit(error_model="numpy")
    def ours(n, w, K, N, v, dst, scratch):
        for i in range(n):
            _stream._pgemv(w, 0, K, N, v, 0, K, 1, dst, 0, N, scratch, 0, i % 2 == 1, scratch, -1)

    @njit
    def blas(n, wt, v, dst):
        for _ in range(n):
            dst += np.dot(wt, v)

    rng = np.random.default_rng(2)
    rows = []
    for H in hs:
        for cell, gates in (("lstm", 4), ("gru", 3)):
            K, N = H, gates * H
            W = rng.uniform(-1, 1, (K, N))
            wp = np.concatenate([_stream._panels(W, _stream.lanes(np.float32)),
                                 np.zeros(64)]).astype(np.float32)
            wt = np.ascontiguousarray(W.T, dtype=np.float32)
            v = rng.uniform(-1, 1, K).astype(np.float32)
            d = np.zeros(N, np.float32)
            scratch = np.zeros(64, np.float32)
            ours(1, wp, K, N, v, d, scratch)
            d2 = np.zeros(N, np.float32)
            blas(1, wt, v, d2)
            assert np.allclose(d, d2, rtol=1e-4, atol=1e-4)
            t = _time_interleaved({"stream": lambda: ours(repeats, wp, K, N, v, d, scratch),
                                   "blas": lambda: blas(repeats, wt, v, d)}, 40, block=5,
                                  warmup=3)
            rows.append((cell, H, float(np.median(t["stream"])) / repeats,
                         float(np.median(t["blas"])) / repeats))
    return rows


def run(opts):
    """Run the streaming benchmark; print the table; return (rows, notes)."""
    import torch

    torch.set_num_threads(1)
    quick = getattr(opts, "quick", False)
    n_calls = getattr(opts, "calls", None) or (300 if quick else 2000)
    hs = getattr(opts, "hs", None) or ((64, 256) if quick else HS)
    cells = [c for c in getattr(opts, "cells", CELLS) if c in CELLS]
    skip = set(getattr(opts, "skip", []) or [])
    # streams run the stream kernels alone (one thread): compile them before timing
    warm(("stream",), False, not getattr(opts, "no_progress", False))
    precisions = getattr(opts, "precision", None) or ["float32"]
    reduced = [m for m in precisions if m != "float32"]
    rng = np.random.default_rng(0)
    rows, notes = [], []
    t_start = time.time()
    for cell in cells:
        for T in TS:
            for H in hs:
                layer = _layer(cell, H, T, rng)
                weights = [np.asarray(w, np.float32) for w in layer.get_weights()]
                x = rng.uniform(-1, 1, (1, T, H)).astype(np.float32)
                xf = np.ascontiguousarray(x[:, 0]) if T == 1 else x
                engines, outputs, keep = {}, {}, []
                engines["fastrnn"], outputs["fastrnn"] = _fastrnn(layer, xf)
                if "onnxruntime" not in skip:
                    for threads in (1, 2):
                        c, o, k = _onnxruntime(cell, H, T, weights, x, threads)
                        engines[f"ort{threads}"], outputs[f"ort{threads}"] = c, o
                        keep.append(k)
                if "pytorch" not in skip:
                    engines["torch_cell"], outputs["torch_cell"] = _torch_cell(
                        cell, H, T, weights, x)
                    engines["torch_module"], outputs["torch_module"] = _torch_module(
                        cell, H, T, weights, x)
                if reduced:  # the stream kernels on each format, bare (see the docstring)
                    for mode in ["float32"] + reduced:
                        engines[f"kernel_{mode}"], outputs[f"kernel_{mode}"] = _fastrnn_kernel(
                            layer, xf, mode)
                    # ... and through layer.stream(), on the engine each stream keeps
                    for mode in reduced:
                        engines[f"stream_{mode}"], outputs[f"stream_{mode}"] = _fastrnn(
                            _quantized(layer, mode), xf)
                if "int8" in reduced or "int8_dynamic" in reduced:
                    if "onnxruntime" not in skip and cell == "lstm":
                        for threads in (1, 2):
                            c, o, k = _onnxruntime(cell, H, T, weights, x, threads, int8=True)
                            engines[f"ort_int8_{threads}"], outputs[f"ort_int8_{threads}"] = c, o
                            keep.append(k)
                    if "pytorch" not in skip:
                        engines["torch_int8"], outputs["torch_int8"] = _torch_module(
                            cell, H, T, weights, x, int8=True)
                # Same weights, same initial state (zeros), same input: the outputs of
                # three successive calls agree, so every engine carries its state
                # (float32 engines against fastrnn; all against float64 with --precision).
                diff = 0.0
                errs = {name: 0.0 for name in outputs}
                exact = _float64_outputs(cell, weights, x, 3) if reduced else None
                for i in range(3):
                    ref = outputs["fastrnn"]()
                    got = {name: np.asarray(out()) for name, out in outputs.items()
                           if name != "fastrnn"}
                    got["fastrnn"] = ref
                    for name, y in got.items():
                        y = y.reshape(-1, H)
                        if exact is not None:
                            want = exact[i].reshape(-1, H)[-y.shape[0]:]
                            errs[name] = max(errs[name], float(np.abs(y - want).max()))
                        if name == "fastrnn" or not (name.startswith("ort") or
                                                     name.startswith("torch")) \
                                or "int8" in name:
                            continue
                        diff = max(diff, float(np.abs(y - ref.reshape(-1, H)).max()))
                t = _time_interleaved(engines, n_calls)
                row = {"cell": cell, "T": T, "H": H, "max_abs_diff": diff, "calls": n_calls}
                if exact is not None:
                    row["err_f64"] = errs
                for name, v in t.items():
                    row[name] = {"median_us": float(np.median(v)),
                                 "p99_us": float(np.percentile(v, 99))}
                # the engine each stream kept for this kind of call (see Stream)
                for name in ["fastrnn"] + [f"stream_{mode}" for mode in reduced]:
                    row[name]["threads"] = _kept_threads(engines[name].stream, T)
                for prefix, key in (("ort", "ort"), ("ort_int8_", "ort_int8")):
                    if f"{prefix}1" in row:
                        best = min((f"{prefix}1", f"{prefix}2"), key=lambda k: row[k]["median_us"])
                        row[key] = dict(row[best], threads=int(best[-1]))
                        if "err_f64" in row:
                            row["err_f64"][key] = row["err_f64"][best]
                f = row["fastrnn"]["median_us"]
                for name in ("ort", "torch_cell", "torch_module"):
                    if name in row:
                        row[f"vs_{name}"] = f / row[name]["median_us"]
                rows.append(row)
                if not getattr(opts, "no_progress", False):
                    print(f"  {cell} T={T} H={H}: fastrnn {f:.2f} us", file=sys.stderr)
    overhead, med = wrapper_overhead(1000 if quick else 5000)
    notes.append(f"stream wrapper overhead (T=1, H=64 LSTM): {overhead:.2f} us "
                 f"(stream(x, out=out) {med['stream']:.2f} us - bare kernel call "
                 f"{med['bare']:.2f} us, medians)")
    notes.append(f"{time.time() - t_start:.0f} s; PyTorch threads: 1; ONNX Runtime: best of "
                 "1 and 2 intra-op threads (the count is in brackets)")
    print(format_table(rows))
    if reduced:
        notes.append("reduced precision: fastrnn's rows call the stream kernels directly "
                     "(stream.frame / chunk_seq, output preallocated; no Stream wrapper), "
                     "float32 included, so their ratios compare like with like")
        print()
        print(format_precision(rows))
        notes.append("reduced precision through layer.stream(): each format's stream on the "
                     "engine it kept [threads], as the float32 table's fastrnn column")
        print()
        print(format_precision(rows, _STREAM_COLUMNS, _STREAM_RATIOS, _STREAM_TITLE))
    return rows, notes


_PRECISION_COLUMNS = (("kernel_float32", "fastrnn f32"), ("kernel_bfloat16", "fastrnn bf16"),
                      ("kernel_int8", "fastrnn int8"), ("kernel_int8_dynamic", "fastrnn int8dyn"),
                      ("kernel_bfloat16_dynamic", "fastrnn bf16dyn"),
                      ("ort", "ORT f32 [thr]"),
                      ("ort_int8", "ORT int8 [thr]"), ("torch_int8", "PyTorch int8 module"))
_PRECISION_RATIOS = (("kernel_bfloat16", "kernel_float32", "bf16/f32"),
                     ("kernel_int8", "kernel_float32", "int8/f32"),
                     ("kernel_bfloat16", "ort", "bf16/ORT f32"),
                     ("kernel_int8", "ort", "int8/ORT f32"),
                     ("kernel_float32", "ort", "f32/ORT f32"),
                     ("kernel_int8", "ort_int8", "int8/ORT int8"),
                     ("kernel_int8", "torch_int8", "int8/PyTorch int8"),
                     ("kernel_int8_dynamic", "kernel_float32", "int8dyn/f32"),
                     ("kernel_int8_dynamic", "ort", "int8dyn/ORT f32"),
                     ("kernel_int8_dynamic", "ort_int8", "int8dyn/ORT int8"),
                     ("kernel_int8_dynamic", "torch_int8", "int8dyn/PyTorch int8"),
                     ("kernel_bfloat16_dynamic", "kernel_float32", "bf16dyn/f32"),
                     ("kernel_bfloat16_dynamic", "ort", "bf16dyn/ORT f32"))


_PRECISION_TITLE = ("reduced precision, batch 1, D = H, state carried; µs per call (median); "
                    "err = max abs error vs float64 over three calls")
_STREAM_COLUMNS = (("fastrnn", "stream f32 [thr]"), ("stream_bfloat16", "stream bf16 [thr]"),
                   ("stream_int8", "stream int8 [thr]"),
                   ("stream_int8_dynamic", "stream int8dyn [thr]"),
                   ("stream_bfloat16_dynamic", "stream bf16dyn [thr]"), ("ort", "ORT f32 [thr]"))
_STREAM_RATIOS = tuple((f"stream_{m}", b, f"{short}/{bn}")
                       for b, bn in (("fastrnn", "f32"), ("ort", "ORT f32"))
                       for m, short in (("bfloat16", "bf16"), ("int8", "int8"),
                                        ("int8_dynamic", "int8dyn"),
                                        ("bfloat16_dynamic", "bf16dyn")))
_STREAM_TITLE = ("reduced precision through layer.stream() (each on the engine it kept), "
                 "batch 1, D = H; µs per call (median); err = max abs error vs float64")


def format_precision(rows, columns=_PRECISION_COLUMNS, ratios=_PRECISION_RATIOS,
                     title=_PRECISION_TITLE):
    """A reduced-precision table: µs per call (median), ratios, and each
    engine's max abs error against float64 over three successive calls."""
    cols = [(k, h) for k, h in columns if any(k in r for r in rows)]
    ratios = [(a, b, h) for a, b, h in ratios if any(a in r and b in r for r in rows)]
    errs = [(k, h) for k, h in cols if any(k in r.get("err_f64", {}) for r in rows)]
    head = ["cell", "T", "H"] + [h for _, h in cols] + [h for _, _, h in ratios] + \
        [f"err {h.split(' [')[0]}" for _, h in errs]
    lines = [title, "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["cell"].upper(), str(r["T"]), str(r["H"])]
        for k, _ in cols:
            e = r.get(k)
            text = "" if e is None else f"{e['median_us']:.1f}"
            if e is not None and "threads" in e:
                text += f" [{e['threads']}]"
            cells.append(text)
        for a, b, _ in ratios:
            cells.append(f"{r[a]['median_us'] / r[b]['median_us']:.2f}" if a in r and b in r else "")
        for k, _ in errs:
            got = r.get("err_f64", {})
            cells.append(f"{got[k]:.1e}" if k in got else "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell_text(entry):
    return f"{entry['median_us']:.1f} ({entry['p99_us']:.0f})"


def format_table(rows):
    lines = [
        "float32, batch 1, D = H, state carried; µs per call: median (p99); "
        "ratios = fastrnn median / engine median; max abs diff: the other engines' outputs "
        "against fastrnn's over three successive calls",
        "",
        "| cell | T | H | fastrnn [threads] | ONNX Runtime io_binding [threads] | PyTorch cell "
        "| PyTorch module | vs ORT | vs cell | vs module | max abs diff |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        f = r["fastrnn"]
        cells = [r["cell"].upper(), str(r["T"]), str(r["H"]),
                 _cell_text(f) + (f" [{f['threads']}]" if "threads" in f else "")]
        cells.append(f"{_cell_text(r['ort'])} [{r['ort']['threads']}]" if "ort" in r else "")
        cells.append(_cell_text(r["torch_cell"]) if "torch_cell" in r else "")
        cells.append(_cell_text(r["torch_module"]) if "torch_module" in r else "")
        for k in ("vs_ort", "vs_torch_cell", "vs_torch_module"):
            cells.append(f"{r[k]:.2f}" if k in r else "")
        cells.append(f"{r['max_abs_diff']:.1e}" if "max_abs_diff" in r else "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m fastrnn.bench_streaming",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="H = 64, 256 and 300 calls")
    p.add_argument("--calls", type=int, default=None, help="timed calls per engine")
    p.add_argument("--hs", type=lambda s: tuple(int(v) for v in s.split(",")), default=None)
    p.add_argument("--cells", type=lambda s: s.split(","), default=list(CELLS),
                   help=f"cell types to time, comma-separated (default {','.join(CELLS)})")
    p.add_argument("--skip", type=lambda s: s.split(","), default=[],
                   help="engines to leave out: onnxruntime,pytorch")
    p.add_argument("--precision", default="float32",
                   help="weight formats, comma-separated: " + ",".join(bq.PRECISIONS))
    p.add_argument("--json", metavar="PATH")
    p.add_argument("--matvec", action="store_true",
                   help="only the mat-vec against OpenBLAS sgemv (run with "
                        "OPENBLAS_NUM_THREADS=1 for single-thread BLAS)")
    p.add_argument("--no-progress", action="store_true")
    opts = p.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        opts.precision = bq.parse_precisions(opts.precision)
    except ValueError as exc:
        p.error(str(exc))
    if opts.matvec:
        print("recurrent mat-vec h U, float32, µs per product (median): stream kernels vs "
              "OpenBLAS sgemv")
        print("| cell | H | stream kernels | OpenBLAS sgemv | ratio |\n|---|---|---|---|---|")
        for cell, H, ours, blas in matvec_vs_blas(opts.hs or HS):
            print(f"| {cell.upper()} | {H} | {ours:.2f} | {blas:.2f} | {ours / blas:.2f} |")
        return 0
    rows, notes = run(opts)
    for note in notes:
        print(f"note: {note}")
    if opts.json:
        with open(opts.json, "w") as f:
            json.dump({"rows": rows, "notes": notes}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
