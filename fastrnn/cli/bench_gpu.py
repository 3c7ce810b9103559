"""GPU rows of ``python -m fastrnn bench``: fastrnn ``cuda`` against cuDNN.

Runs only when a real NVIDIA GPU is visible (never in the CUDA simulator).
float32 LSTM and GRU over batch 1, 8, 64, 256 and units 256, 1024
(``D = H``), inputs and outputs already on the device for both engines, so
the table compares kernels, not host transfers. fastrnn is called through
the kernel contract with Numba device arrays; PyTorch runs ``torch.nn.LSTM``
/ ``GRU`` on CUDA (its cuDNN path) under ``inference_mode`` with the same
weights. Times are CUDA-event milliseconds per call (median of several
samples, each a run of back-to-back calls after a warm-up); the outputs of
the two engines are compared before timing.
"""

from __future__ import annotations

import statistics

import numpy as np

from .. import dispatch
from ..kernels import GRUParams, LSTMParams, run

BATCHES = (1, 8, 64, 256)
UNITS = (256, 1024)
STEPS = 100
STEPS_QUICK = 20


def gpu_present():
    """``(True, reason)`` when a real GPU can run the ``cuda`` backend."""
    try:
        kc = dispatch.backend_module("cuda")
    except RuntimeError as exc:
        return False, f"cuda backend not installed ({exc})"
    return kc.real_gpu()


def _weights(cell, D, H, seed=0):
    rng = np.random.default_rng(seed)
    g = 4 if cell == "lstm" else 3
    s_in, s_rec = 1.0 / np.sqrt(D), 1.0 / np.sqrt(H)
    kernel = rng.uniform(-s_in, s_in, (D, g * H)).astype(np.float32)
    rec = rng.uniform(-s_rec, s_rec, (H, g * H)).astype(np.float32)
    shape = (g * H,) if cell == "lstm" else (2, g * H)
    bias = rng.uniform(-0.1, 0.1, shape).astype(np.float32)
    return kernel, rec, bias


def _fastrnn_call(cell, w, x):
    from numba import cuda

    kc = dispatch.backend_module("cuda")

    kernel, rec, bias = w
    params = LSTMParams(kernel, rec, bias) if cell == "lstm" else GRUParams(kernel, rec, bias)
    packed = kc.pack(params)
    B, T, _ = x.shape
    H = params.units
    dx = cuda.to_device(x)
    states = [cuda.to_device(np.zeros((B, H), np.float32)) for _ in range(params.n_states)]
    outs = [cuda.device_array((B, H), np.float32) for _ in states]
    out = cuda.device_array((B, T, H), np.float32)

    def call():
        run(kc, packed, dx, states, None, False, False, out, outs)

    return call, lambda: out.copy_to_host()


def _torch_call(cell, w, x, device="cuda"):
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise ImportError("torch has no CUDA")
    kernel, rec, bias = w
    B, T, D = x.shape
    H = rec.shape[0]
    if cell == "lstm":
        m = torch.nn.LSTM(D, H, batch_first=True)  # gates i, f, g, o = Keras order
        vals = (kernel.T, rec.T, bias, np.zeros_like(bias))
    else:
        m = torch.nn.GRU(D, H, batch_first=True)  # gates r, z, n
        order = [1, 0, 2]

        def blk(a):
            return np.concatenate([a[..., k * H:(k + 1) * H] for k in order], -1)

        vals = (blk(kernel).T, blk(rec).T, blk(bias[0]), blk(bias[1]))
    with torch.no_grad():
        for p, v in zip((m.weight_ih_l0, m.weight_hh_l0, m.bias_ih_l0, m.bias_hh_l0), vals):
            p.copy_(torch.from_numpy(np.ascontiguousarray(v)))
    m = m.to(device).eval()
    xt = torch.from_numpy(x).to(device)
    result = {}

    def call():
        with torch.inference_mode():
            result["y"], _ = m(xt)

    return call, lambda: result["y"].cpu().numpy()


def _time_events(engine, call, calls, samples):
    """Median CUDA-event milliseconds per call."""
    if engine == "torch":
        import torch

        def event():
            return torch.cuda.Event(enable_timing=True)
    else:
        from numba import cuda

        event = cuda.event
    call()  # warm-up: compiles, allocates, picks algorithms
    times = []
    for _ in range(samples):
        start, end = event(), event()
        start.record()
        for _ in range(calls):
            call()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / calls)
    return statistics.median(times)


def bench_gpu(quick=False, cells=("lstm", "gru"), progress=None):
    """Rows ``{cell, B, T, D, H, cuda_ms, cudnn_ms, ratio, max_abs_diff}``.

    Returns ``([], [reason])`` without a real GPU.
    """
    ok, why = gpu_present()
    if not ok:
        return [], [f"GPU rows skipped: {why}"]
    T = STEPS_QUICK if quick else STEPS
    calls, samples = (3, 3) if quick else (5, 7)
    rows, notes = [], []
    for cell in cells:
        for H in UNITS:
            for B in BATCHES:
                if progress is not None:
                    progress(f"gpu {cell} B={B} H={H}")
                x = np.random.default_rng(1).standard_normal((B, T, H)).astype(np.float32)
                w = _weights(cell, H, H)
                fr, fr_out = _fastrnn_call(cell, w, x)
                row = dict(cell=cell, B=B, T=T, D=H, H=H)
                row["cuda_ms"] = _time_events("numba", fr, calls, samples)
                try:
                    tc, tc_out = _torch_call(cell, w, x)
                except ImportError as exc:
                    note = f"PyTorch cuDNN not timed: {exc}"
                    if note not in notes:
                        notes.append(note)
                else:
                    fr()
                    tc()
                    row["max_abs_diff"] = float(np.max(np.abs(fr_out() - tc_out())))
                    row["cudnn_ms"] = _time_events("torch", tc, calls, samples)
                    row["ratio"] = row["cuda_ms"] / row["cudnn_ms"]
                rows.append(row)
    return rows, notes


def format_gpu_table(rows):
    lines = [
        "| cell | B,T,D,H | fastrnn-cuda ms | torch-cuDNN ms | cuda/cuDNN | max abs diff |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        cudnn = f"{r['cudnn_ms']:.3g}" if "cudnn_ms" in r else ""
        ratio = f"{r['ratio']:.2f}" if "ratio" in r else ""
        diff = f"{r['max_abs_diff']:.1e}" if "max_abs_diff" in r else ""
        lines.append(f"| {r['cell']} | {r['B']},{r['T']},{r['D']},{r['H']} | "
                     f"{r['cuda_ms']:.3g} | {cudnn} | {ratio} | {diff} |")
    return "\n".join(lines)


def main(argv=None):
    """``python -m fastrnn._bench_gpu [--quick]``: the GPU rows alone."""
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    rows, notes = bench_gpu(quick="--quick" in argv)
    if rows:
        print("float32, device arrays in and out, CUDA-event ms per call")
        print(format_gpu_table(rows))
    for note in notes:
        print(f"note: {note}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
