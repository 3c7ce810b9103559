"""``python -m fastrnn bench --accuracy``: float32 error against float64, fastrnn beside PyTorch.

For LSTM and GRU (``reset_after=True``) layers of 64 to 1024 units over
sequences of up to 1,000 steps, with two kinds of weights, every engine
runs the same float32 weights and inputs, and each output is compared with
a float64 evaluation of the same model (a NumPy loop over time, written
here from the Keras equations):

``random``
    Weights and biases uniform in ``+-1/sqrt(units)`` (PyTorch's default
    initialisation, Keras-like scale), inputs standard normal.
``saturating``
    Input weights four times larger, inputs twice as large and biases
    uniform in ``+-4``, so that most gates sit near 0 or 1, and a quarter of
    the units holding their state (LSTM: forget bias +20, input bias -20;
    GRU: update bias +20). The recurrent weights keep the random scale: four
    times larger, the recurrence becomes chaotic and every engine's error
    grows with T at a rate set by the model, not the arithmetic.

fastrnn's float32 paths: ``batch`` (one layer call over the sequence),
``stream`` (a :class:`fastrnn.streaming.Stream` fed frame by frame) and
``cell`` (one :class:`fastrnn.LSTMCell` / ``GRUCell`` call per step, as
code converted from a PyTorch cell loop runs). PyTorch's float32 paths:
``torch.nn.LSTM`` / ``GRU`` over the sequence and ``LSTMCell`` /
``GRUCell`` step by step. The error of a path is the largest, over every
output step and the final states of every sequence of :data:`SEEDS` weight
sets, of ``|y - y64| / max(1, |y64|)`` (absolute below 1, relative above:
an LSTM's cell state can grow with T).
The ratio columns divide each fastrnn path's error by PyTorch's error on
the path of the same kind (batch by ``nn.LSTM``; stream and cell by the
cell loop); below 1.5 is the target.

Options: ``--quick`` (64 and 256 units, 300 steps), ``--json PATH``.
"""

from __future__ import annotations

import numpy as np

from ..cells import GRUCell, LSTMCell
from ..layers import GRU, LSTM

D = 64
# (units, steps, batch)
GRID = [(64, 1000, 8), (256, 1000, 8), (1024, 1000, 4)]
QUICK_GRID = [(64, 300, 8), (256, 300, 4)]
# weight sets per row: an engine's largest error over one set moves by
# +-30% from set to set; the row reports the largest over all of them
SEEDS = 3
KINDS = ("random", "saturating")
FASTRNN_PATHS = ("batch", "stream", "cell")


def weights(cell, H, kind, rng):
    """Keras-layout float32 ``(kernel, recurrent_kernel, bias)``."""
    g = 4 if cell == "lstm" else 3
    s = 1.0 / np.sqrt(H)
    sat = kind == "saturating"
    kernel = rng.uniform(-s, s, (D, g * H)) * (4.0 if sat else 1.0)
    rec = rng.uniform(-s, s, (H, g * H))
    b = 4.0 if sat else s
    hold = np.arange(0, H, 4)
    if cell == "lstm":
        bias = rng.uniform(-b, b, g * H)
        if sat:
            bias[hold], bias[H + hold] = -20.0, 20.0
    else:
        bias = rng.uniform(-b, b, (2, g * H))
        if sat:
            bias[0, hold], bias[1, hold] = 20.0, 0.0
    return tuple(a.astype(np.float32) for a in (kernel, rec, bias))


def inputs(B, T, kind, rng):
    return (rng.standard_normal((B, T, D)) * (2.0 if kind == "saturating" else 1.0)).astype(
        np.float32)


def _sig(z):
    return 1.0 / (1.0 + np.exp(-z))


def float64_run(cell, w, x):
    """The float64 evaluation: ``(y (B, T, H), [final states])``."""
    W, U, b = (np.asarray(a, np.float64) for a in w)
    x = x.astype(np.float64)
    B, T, _ = x.shape
    H = U.shape[0]
    h = np.zeros((B, H))
    c = np.zeros((B, H))
    y = np.empty((B, T, H))
    for t in range(T):
        if cell == "lstm":
            z = x[:, t] @ W + h @ U + b
            i, f, o = _sig(z[:, :H]), _sig(z[:, H:2 * H]), _sig(z[:, 3 * H:])
            c = f * c + i * np.tanh(z[:, 2 * H:3 * H])
            h = o * np.tanh(c)
        else:
            xz, hz = x[:, t] @ W + b[0], h @ U + b[1]
            z, r = _sig(xz[:, :H] + hz[:, :H]), _sig(xz[:, H:2 * H] + hz[:, H:2 * H])
            hh = np.tanh(xz[:, 2 * H:] + r * hz[:, 2 * H:])
            h = z * h + (1 - z) * hh
        y[:, t] = h
    return y, ([h, c] if cell == "lstm" else [h])


def fastrnn_runs(cell, w, x):
    """``{path: (y, [final states])}`` for fastrnn's float32 paths."""
    B, T, _ = x.shape
    H = w[1].shape[0]
    layer_cls, cell_cls = (LSTM, LSTMCell) if cell == "lstm" else (GRU, GRUCell)
    layer = layer_cls(H, return_sequences=True, return_state=True)
    layer.build((B, None, D))
    layer.set_weights(list(w))
    got = {}
    res = layer(x)
    got["batch"] = (res[0], res[1:])
    stream = layer.stream(batch_size=B)
    frames = [np.ascontiguousarray(x[:, t]) for t in range(T)]
    ys = [stream(f)[0] for f in frames]
    got["stream"] = (np.stack(ys, axis=1), stream.states)
    one = cell_cls(H)
    one.build((B, D))
    one.set_weights(list(w))
    states = one.get_initial_state(B)
    ys = []
    for f in frames:
        out, states = one(f, states)
        ys.append(out)
    got["cell"] = (np.stack(ys, axis=1), list(states))
    return got


def torch_runs(cell, w, x):
    """``{"sequence": ..., "cell": ...}`` for PyTorch float32 (ImportError without it)."""
    import torch

    W, U, b = w
    B, T, _ = x.shape
    H = U.shape[0]
    if cell == "lstm":
        params = dict(weight_ih=W.T, weight_hh=U.T, bias_ih=b, bias_hh=np.zeros_like(b))
        seq, step = torch.nn.LSTM(D, H, batch_first=True), torch.nn.LSTMCell(D, H)
    else:
        # Keras z, r, h -> PyTorch r, z, n
        order = np.concatenate([np.arange(H, 2 * H), np.arange(H), np.arange(2 * H, 3 * H)])
        params = dict(weight_ih=W[:, order].T, weight_hh=U[:, order].T, bias_ih=b[0, order],
                      bias_hh=b[1, order])
        seq, step = torch.nn.GRU(D, H, batch_first=True), torch.nn.GRUCell(D, H)
    with torch.no_grad():
        for name, value in params.items():
            value = torch.from_numpy(np.ascontiguousarray(value, np.float32))
            getattr(seq, name + "_l0").copy_(value)
            getattr(step, name).copy_(value)
    xt = torch.from_numpy(x)
    got = {}
    with torch.inference_mode():
        y, last = seq(xt)
        states = [last[0][0], last[1][0]] if cell == "lstm" else [last[0]]
        got["sequence"] = (y.numpy(), [s.numpy() for s in states])
        h = torch.zeros(B, H)
        c = torch.zeros(B, H)
        ys = []
        for t in range(T):
            if cell == "lstm":
                h, c = step(xt[:, t], (h, c))
            else:
                h = step(xt[:, t], h)
            ys.append(h)
        states = [h, c] if cell == "lstm" else [h]
        got["cell"] = (torch.stack(ys, 1).numpy(), [s.numpy() for s in states])
    return got


def error(got, want):
    """Largest ``|y - y64| / max(1, |y64|)`` over the outputs and the final states."""
    y, states = got
    y64, states64 = want
    worst = 0.0
    for a, b in [(y, y64)] + list(zip(states, states64)):
        a = np.asarray(a, np.float64)
        worst = max(worst, float(np.max(np.abs(a - b) / np.maximum(1.0, np.abs(b)))))
    return worst


# each fastrnn path against PyTorch's path of the same kind
_PAIRS = {"batch": "sequence", "stream": "cell", "cell": "cell"}


def grid(opts):
    """``(units, steps, batch)`` of each row, for ``opts.quick``."""
    return QUICK_GRID if opts.quick else GRID


def run(opts, progress=None):
    """The grid's rows for the cells ``opts.cells``: ``dict(cell, H, T, B, weights,
    errors={engine path: error}, ratios={fastrnn path: ratio})``; and notes.
    ``progress`` (optional) has ``show(text)`` and ``step(text)``."""
    rows, notes = [], []
    for cell in opts.cells:
        for H, T, B in grid(opts):
            for kind in KINDS:
                label = f"{cell} H={H} T={T} {kind}"
                if progress is not None:
                    progress.show(label)
                errors = {}
                for seed in range(SEEDS):
                    rng = np.random.default_rng([H, T, seed])
                    w = weights(cell, H, kind, rng)
                    x = inputs(B, T, kind, rng)
                    want = float64_run(cell, w, x)
                    got = {f"fastrnn {p}": g for p, g in fastrnn_runs(cell, w, x).items()}
                    try:
                        got.update({f"torch {p}": g for p, g in torch_runs(cell, w, x).items()})
                    except ImportError:
                        note = "PyTorch is not installed: no comparison"
                        if note not in notes:
                            notes.append(note)
                    for name, g in got.items():
                        errors[name] = max(errors.get(name, 0.0), error(g, want))
                ratios = {p: errors[f"fastrnn {p}"] / errors[f"torch {q}"]
                          for p, q in _PAIRS.items() if f"torch {q}" in errors}
                rows.append(dict(cell=cell, H=H, T=T, B=B, weights=kind, errors=errors,
                                 ratios=ratios))
                if progress is not None:
                    progress.step(label)
    return rows, notes


def format_table(rows):
    """The rows as a Markdown table."""
    engines = [e for e in ("torch sequence", "torch cell") + tuple(
        f"fastrnn {p}" for p in FASTRNN_PATHS) if any(e in r["errors"] for r in rows)]
    ratio_cols = [p for p in FASTRNN_PATHS if any(p in r["ratios"] for r in rows)]
    head = (["cell", "H", "T", "weights"] + [f"{e} error" for e in engines]
            + [f"{p} / torch" for p in ratio_cols])
    body = []
    for r in rows:
        cells = [r["cell"], str(r["H"]), str(r["T"]), r["weights"]]
        cells += [f"{r['errors'][e]:.2e}" if e in r["errors"] else "" for e in engines]
        cells += [f"{r['ratios'][p]:.2f}" if p in r["ratios"] else "" for p in ratio_cols]
        body.append(cells)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(cells) + " |" for cells in body])
