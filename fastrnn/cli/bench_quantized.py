"""Reduced-precision rows of ``python -m fastrnn bench --precision ...``.

Engines, all built from the same float32 weights as the float32 rows:

* **fastrnn** ``bfloat16`` / ``int8`` / ``int8_dynamic`` / ``bfloat16_dynamic``:
  ``layer.quantize(mode)`` on the float32 layer, then ``layer(x)`` on the cpu
  backend (bfloat16 and int8: weights only, inputs, states and sums stay
  float32; int8_dynamic: activations quantized per row and step too, as
  ONNX Runtime and PyTorch do; bfloat16_dynamic: activations rounded to
  bfloat16 for the products).
* **ONNX Runtime int8** (LSTM only: ONNX Runtime has no quantized GRU): one
  ``com.microsoft`` ``DynamicQuantizeLSTM`` node, ``W (1, D, 4H)`` and ``R
  (1, H, 4H)`` int8 with per-column scales (fastrnn's int8 weights, zero
  points 0); ONNX Runtime also quantizes the activations, per call, to
  uint8.
* **PyTorch int8**: ``torch.ao.quantization.quantize_dynamic`` with
  per-channel int8 weights (``per_channel_dynamic_qconfig``), applied to a
  container holding the ``nn.LSTM`` / ``nn.GRU`` (``quantize_dynamic``
  swaps child modules only); PyTorch quantizes its activations dynamically
  too.

Each engine's output is compared with the same layer run in float64
(``reference`` backend, float64 weights and input): the max abs error.
"""

from __future__ import annotations

import warnings

import numpy as np

from ..kernels import GRUParams, LSTMParams, quantize, reference, run
from ..layers import GRU, LSTM

#: The weight formats ``--precision`` takes.
PRECISIONS = ("float32", "bfloat16", "int8", "int8_dynamic", "bfloat16_dynamic")


def parse_precisions(text):
    """``"float32,int8"`` -> ``["float32", "int8"]``; ValueError naming the bad one."""
    got = [p.strip() for p in str(text).split(",") if p.strip()]
    bad = [p for p in got if p not in PRECISIONS]
    if bad or not got:
        raise ValueError(f"--precision: expected a comma-separated list of "
                         f"{', '.join(PRECISIONS)}, got {text!r}")
    return list(dict.fromkeys(got))


def _params(cell, w):
    kernel, rec, bias = w
    return LSTMParams(kernel, rec, bias) if cell == "lstm" else GRUParams(kernel, rec, bias)


def fastrnn_engine(cell, w, x, mode, backend_name="cpu"):
    """A fastrnn layer (``LSTM`` / ``GRU``, ``return_sequences=True``) on
    ``backend_name`` with weights ``w`` (Keras layout), quantized to ``mode``
    (``"float32"``: as given): a zero-argument callable returning
    ``layer(x)``, the ``(B, T, H)`` output sequence. The layer call is what
    a user times: its Python (checks, states, the backend's choice) is
    counted with the kernels."""
    kernel, rec, bias = w
    layer = (LSTM if cell == "lstm" else GRU)(rec.shape[0], return_sequences=True,
                                              backend=backend_name)
    layer.build((None, None, kernel.shape[0]))
    layer.set_weights([kernel, rec, bias])
    if mode != "float32":
        layer.quantize(mode)
    return lambda: layer(x)


def _onnx_order(m, H):
    """Keras LSTM gates i, f, c, o -> ONNX i, o, f, c (last axis)."""
    return np.concatenate([m[..., k * H:(k + 1) * H] for k in (0, 3, 1, 2)], -1)


def ort_int8_model(w, T, B, D, states=False):
    """A serialized ONNX model of one ``DynamicQuantizeLSTM`` node on the
    int8 weights of ``w`` (Keras layout); inputs ``X (T, B, D)`` and, with
    ``states``, ``h0``/``c0`` ``(1, B, H)``; outputs ``Y`` (and ``Yh``, ``Yc``)."""
    from onnx import TensorProto, helper, numpy_helper

    kernel, rec, bias = w
    H = rec.shape[0]
    q = quantize(LSTMParams(kernel, rec, bias), "int8").quantized
    arrays = {
        "W": _onnx_order(q.kernel, H)[None], "R": _onnx_order(q.recurrent_kernel, H)[None],
        "B": np.concatenate([_onnx_order(bias, H), np.zeros(4 * H, np.float32)])[None],
        "W_scale": _onnx_order(q.kernel_scale, H)[None],
        "W_zero_point": np.zeros((1, 4 * H), np.int8),
        "R_scale": _onnx_order(q.recurrent_scale, H)[None],
        "R_zero_point": np.zeros((1, 4 * H), np.int8),
    }
    inits = [numpy_helper.from_array(np.ascontiguousarray(a), n) for n, a in arrays.items()]
    f = TensorProto.FLOAT
    ins = ["X", "W", "R", "B", "", "h0" if states else "", "c0" if states else "", "",
           "W_scale", "W_zero_point", "R_scale", "R_zero_point"]
    outs = ["Y", "Yh", "Yc"] if states else ["Y"]
    node = helper.make_node("DynamicQuantizeLSTM", ins, outs, hidden_size=H,
                            domain="com.microsoft")
    inputs = [helper.make_tensor_value_info("X", f, [T, B, D])]
    outputs = [helper.make_tensor_value_info("Y", f, [T, 1, B, H])]
    if states:
        inputs += [helper.make_tensor_value_info(n, f, [1, B, H]) for n in ("h0", "c0")]
        outputs += [helper.make_tensor_value_info(n, f, [1, B, H]) for n in ("Yh", "Yc")]
    graph = helper.make_graph([node], "fastrnn_bench_lstm_int8", inputs, outputs,
                              initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14),
                                                    helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = 8
    return model.SerializeToString()


def ort_session(model, threads):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])


def ort_int8_engine(cell, w, x, threads):
    """ONNX Runtime's ``DynamicQuantizeLSTM``; ``None`` for a GRU (none exists)."""
    if cell != "lstm":
        return None
    B, T, D = x.shape
    sess = ort_session(ort_int8_model(w, T, B, D), threads)
    xt = np.ascontiguousarray(x.transpose(1, 0, 2))

    def call():
        (y,) = sess.run(None, {"X": xt})
        return y

    call.result = lambda: call()[:, 0].transpose(1, 0, 2)
    return call


def torch_int8(module):
    """``module`` (an ``nn.LSTM``/``nn.GRU``/``nn.LSTMCell``/``nn.GRUCell``)
    with per-channel dynamic int8 weights: put in a container, since
    ``quantize_dynamic`` swaps child modules only, and taken out again."""
    import torch
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    holder = torch.nn.Sequential(module.eval())
    with warnings.catch_warnings():  # torch.ao.quantization's deprecation notices
        warnings.simplefilter("ignore")
        holder = quantize_dynamic(holder, {type(module): per_channel_dynamic_qconfig},
                                  dtype=torch.qint8)
    return holder[0]


def torch_int8_engine(module, x, threads):
    """PyTorch's dynamic int8 version of ``module`` (the float32 ``nn.LSTM`` /
    ``nn.GRU`` of the float32 rows, ``batch_first``) on ``x``."""
    import torch

    torch.set_num_threads(threads)
    m = torch_int8(module)
    xt = torch.from_numpy(x)

    def call():
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            y, _ = m(xt)
        return y

    call.result = lambda: call().numpy()
    return call


def float64_output(cell, w, x):
    """The layer's output in float64 (``reference`` backend): the accuracy baseline."""
    params = _params(cell, [np.asarray(a, np.float64) for a in w])
    B, T, _ = x.shape
    H = params.units
    out = np.empty((B, T, H))
    run(reference, reference.pack(params), np.asarray(x, np.float64),
        [np.zeros((B, H))] * params.n_states, None, False, False, out,
        [np.empty((B, H)) for _ in range(params.n_states)])
    return out


#: Ratio columns of the precision table: (key, header, numerator, denominator).
RATIOS = (
    ("bf16_vs_f32", "bf16/f32", "fastrnn-cpu-bfloat16", "fastrnn-cpu"),
    ("bf16dyn_vs_f32", "bf16dyn/f32", "fastrnn-cpu-bfloat16_dynamic", "fastrnn-cpu"),
    ("int8_vs_f32", "int8/f32", "fastrnn-cpu-int8", "fastrnn-cpu"),
    ("int8_vs_ort_int8", "int8/ORT-int8", "fastrnn-cpu-int8", "onnxruntime-int8"),
    ("int8_vs_torch_int8", "int8/torch-int8", "fastrnn-cpu-int8", "pytorch-int8"),
    ("dyn_vs_f32", "int8dyn/f32", "fastrnn-cpu-int8_dynamic", "fastrnn-cpu"),
    ("dyn_vs_ort_int8", "int8dyn/ORT-int8", "fastrnn-cpu-int8_dynamic", "onnxruntime-int8"),
    ("dyn_vs_torch_int8", "int8dyn/torch-int8", "fastrnn-cpu-int8_dynamic", "pytorch-int8"),
    ("f32_vs_ort", "f32/ORT", "fastrnn-cpu", "onnxruntime"),
)


def add_ratios(row):
    e = row["engines"]
    for key, _, num, den in RATIOS:
        if num in e and den in e:
            row[key] = e[num]["ms"] / e[den]["ms"]


def format_ratios(rows, table):
    """The precision ratios (below 1: the first engine is faster), one row per shape."""
    keys = [(k, h) for k, h, _, _ in RATIOS if any(k in row for row in rows)]
    if not keys:
        return None
    body = [[row["cell"], f"{row['B']},{row['T']},{row['D']},{row['H']}"]
            + [f"{row[k]:.2f}" if k in row else "" for k, _ in keys] for row in rows]
    return table(["cell", "B,T,D,H"] + [h for _, h in keys], body)


def format_errors(rows, table):
    """Max abs error of each engine against float64, one row per shape."""
    names = []
    for row in rows:
        names += [n for n in row["engines"] if n not in names]
    head = ["cell", "B,T,D,H"] + names
    body = []
    for row in rows:
        e = row["engines"]
        cells = [row["cell"], f"{row['B']},{row['T']},{row['D']},{row['H']}"]
        cells += [f"{e[n]['err_f64']:.1e}" if n in e and "err_f64" in e[n] else "" for n in names]
        body.append(cells)
    return table(head, body)


#: The peak each fastrnn format's arithmetic is compared with: float32 FMAs
#: for the weights-only formats (their weights are widened to float32), the
#: int8 or bfloat16 dot products for the ``_dynamic`` ones
#: (:mod:`fastrnn.cli.peak`).
PEAK_OF = {"fastrnn-cpu": "float32", "fastrnn-cpu-bfloat16": "float32",
           "fastrnn-cpu-int8": "float32", "fastrnn-cpu-int8_dynamic": "int8",
           "fastrnn-cpu-bfloat16_dynamic": "bfloat16"}


def format_peaks(rows, peaks, table):
    """Each fastrnn format's rate (multiplies and adds of the gate products
    per second, from its median time) as a percentage of ``peaks[...]``
    (``"float32"``, ``"int8"``, ``"bfloat16"``), one row per shape."""
    names = [n for n in PEAK_OF if any(n in row["engines"] for row in rows)]
    head = ["cell", "B,T,D,H"] + [n.replace("fastrnn-cpu", "fastrnn") + " %" for n in names]
    body = []
    for row in rows:
        e = row["engines"]
        cells = [row["cell"], f"{row['B']},{row['T']},{row['D']},{row['H']}"]
        cells += [f"{100 * e[n]['gflops'] / peaks[PEAK_OF[n]]:.0f}" if n in e else ""
                  for n in names]
        body.append(cells)
    return table(head, body)
