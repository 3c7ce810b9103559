"""The ``cuda`` backend: Numba ``@cuda.jit`` kernels on NVIDIA GPUs.

Implements the kernel contract of :mod:`fastrnn.kernels` (read it there).
Per sequence call:

1. the input projection of every step, ``x @ kernel + input bias``, is one
   GEMM before the time loop: cuBLAS through CuPy when CuPy is importable,
   else the tiled shared-memory kernel of :mod:`.kernels`;
2. then one fused kernel per step (two for an LSTM with a projection and
   for a GRU with ``reset_after=False``) does the recurrent product and the
   gate math for its slice of (batch row, unit) pairs, reading the state
   from one buffer and writing the other, swapped by step parity. From
   ``gemm_batch`` rows on (:func:`set_launch_config`), the recurrent
   product of each step is one GEMM instead and the step kernel does the
   point-wise gate math on its result.

Gate orders are Keras's: LSTM **i, f, c, o**; GRU **z, r, h**.

Arrays in and out: NumPy arguments are copied to the device once and the
results copied back once; device arrays (Numba device arrays, or anything
with the CUDA Array Interface: CuPy arrays, PyTorch CUDA tensors) are read
and written in place, with no trip through host memory. :func:`pack`
uploads the weights once; the layer keeps the result until its weights
change.

Under Numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``) the same code
runs on the CPU, for tests: :func:`available` is then true so that an
explicit ``backend="cuda"`` runs, while :func:`real_gpu` is false so that
``auto`` never picks the simulator. Launch sizes come from
:func:`set_launch_config` (or ``FASTRNN_CUDA_THREADS``,
``FASTRNN_CUDA_TILE``, ``FASTRNN_CUDA_MAX_BLOCKS``,
``FASTRNN_CUDA_GEMM_BATCH``, ``FASTRNN_CUDA_GEMM``); the simulator's
defaults are tiny so that several blocks, grid-stride loops and ragged
edges run.

The launch defaults above are reasoned, not tuned on a GPU (the tests run
the kernels in the simulator and compile them to PTX). There is no
persistent (cooperative, weights kept on chip) kernel for small batches:
the simulator cannot test a grid-wide sync (it runs blocks one after
another).
"""

from __future__ import annotations

import contextlib
import os
import threading

import numpy as np

try:
    import numba
    from numba import cuda
except ImportError as exc:  # pragma: no cover - numba itself is a dependency
    raise ImportError(
        f"the cuda backend needs numba-cuda: pip install \"fastrnn[cuda]\" ({exc})"
    ) from exc

from ...activations import NAMES as _ACT_NAMES
from . import kernels as _k

NAME = "cuda"

_SIM = bool(numba.config.ENABLE_CUDASIM)

# gemm_batch: from this batch size on, the recurrent product of each step is
# one GEMM (then a point-wise kernel); below it, each thread does its slice
# of the product inside the fused step kernel. 16 is a guess from memory
# traffic (U is read once per batch row by the fused kernel), not a
# measurement: no GPU was at hand to tune it.
# The simulator runs every thread as a Python thread and every syncthreads
# as a barrier between them: small blocks, and the per-step GEMM only when a
# test asks for it (gemm_batch=0), keep its runs short.
_DEFAULTS = {"threads": 8, "tile": 8, "max_blocks": 3, "gemm_batch": 0} if _SIM else {
    "threads": 128, "tile": 16, "max_blocks": 0, "gemm_batch": 16,
}


# the integers' ranges: a block holds at most 1024 threads (the GEMM's
# tile * tile of them)
_RANGES = {"threads": (1, 1024), "tile": (1, 32), "max_blocks": (0, None),
           "gemm_batch": (0, None)}
_GEMMS = ("auto", "cupy", "numba")


def _checked(key, value, argument):
    """``value`` for setting ``key``, or a ``ValueError`` naming ``argument``."""
    lo, hi = _RANGES[key]
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo \
            or (hi is not None and value > hi):
        want = f"an integer from {lo} to {hi}" if hi is not None else "a non-negative integer"
        raise ValueError(f"{argument}: expected {want}, got {value!r}")
    return int(value)


def _env(key, name):
    """Setting ``key`` from environment variable ``name`` (the default when unset)."""
    value = os.environ.get(name)
    if not value:
        return _DEFAULTS.get(key, "auto")
    if key == "gemm":
        if value not in _GEMMS:
            raise ValueError(f"{name}: expected one of {list(_GEMMS)}, got {value!r}")
        return value
    try:
        number = int(value)
    except ValueError:
        raise ValueError(f"{name}: expected an integer, got {value!r}") from None
    return _checked(key, number, name)


_config = {
    "threads": _env("threads", "FASTRNN_CUDA_THREADS"),
    "tile": _env("tile", "FASTRNN_CUDA_TILE"),
    "max_blocks": _env("max_blocks", "FASTRNN_CUDA_MAX_BLOCKS"),
    "gemm_batch": _env("gemm_batch", "FASTRNN_CUDA_GEMM_BATCH"),
    "gemm": _env("gemm", "FASTRNN_CUDA_GEMM"),
}


def set_launch_config(threads=None, tile=None, max_blocks=None, gemm=None, gemm_batch=None):
    """Set the launch sizes; returns the previous settings (a dict).

    Parameters
    ----------
    threads : int, optional
        Threads per block of the step kernels (1 to 1024).
    tile : int, optional
        Tile edge of the shared-memory GEMM (``tile * tile`` threads a block:
        1 to 32).
    max_blocks : int, optional
        Cap on blocks per grid dimension (``0``: enough to cover the work
        in one pass); a small cap makes the grid-stride loops go round.
    gemm : {"auto", "cupy", "numba"}, optional
        GEMMs by cuBLAS through CuPy, by the Numba kernel, or CuPy when
        importable (``auto``, the default).
    gemm_batch : int, optional
        Smallest batch whose per-step recurrent product is a GEMM followed
        by a point-wise kernel (``0``: never; smaller batches use the fused
        step kernel alone).
    """
    previous = dict(_config)
    settings = {key: _checked(key, value, key) for key, value in (
        ("threads", threads), ("tile", tile), ("max_blocks", max_blocks),
        ("gemm_batch", gemm_batch)) if value is not None}
    if gemm is not None:
        if gemm not in _GEMMS:
            raise ValueError(f"gemm: expected 'auto', 'cupy' or 'numba', got {gemm!r}")
        settings["gemm"] = gemm
    _config.update(settings)  # (all checked first: a refused call changes nothing)
    return previous


def get_launch_config():
    """The current launch sizes (a copy)."""
    return dict(_config)


# --- availability ----------------------------------------------------------


def real_gpu():
    """``(True, reason)`` when a real CUDA GPU is usable (never the simulator).

    This is what ``auto`` asks: the simulator is for tests only.
    """
    if _SIM:
        return False, "only Numba's CUDA simulator is active (NUMBA_ENABLE_CUDASIM=1)"
    try:
        if cuda.is_available():
            return True, "a CUDA GPU is present"
    except Exception as exc:  # pragma: no cover - broken driver installs
        return False, f"no usable CUDA GPU ({exc})"
    return False, "no CUDA driver or GPU was found"


def available():
    """``(True, reason)`` when this backend can run here (GPU or simulator)."""
    if _SIM:
        return True, "Numba's CUDA simulator is active (NUMBA_ENABLE_CUDASIM=1): slow, for tests"
    ok, why = real_gpu()
    if ok:
        return True, why
    return False, why + "; the cuda backend needs an NVIDIA GPU and pip install \"fastrnn[cuda]\""


def supports(params):
    """Whether this backend runs ``params``: float32/float64, built-in
    activations. Quantized weights (:func:`fastrnn.kernels.quantize`) run as
    the float32 values in ``params.kernel`` / ``recurrent_kernel``: the
    quantized semantics exactly, at float32's memory and speed."""
    dtype = np.asarray(params.kernel).dtype
    if dtype not in (np.float32, np.float64):
        return False, f"the cuda backend runs float32 and float64, not {dtype}"
    codes = [params.activation]
    if params.kind != "simple_rnn":
        codes.append(params.recurrent_activation)
    for code in codes:
        if isinstance(code, bool) or not isinstance(code, (int, np.integer)) or code not in _ACT_NAMES:
            return False, f"the cuda backend runs built-in activations only, not {code!r}"
    if params.quantized is not None and params.quantized.mode.endswith("_dynamic"):
        mode = params.quantized.mode
        return False, (f"the cuda backend does not round activations ({mode}); "
                       f"use {mode[:-8]!r} weights on the GPU")
    if params.quantized is not None:
        return True, (f"its {params.quantized.mode} weights run as the float32 values they "
                      "stand for (dequantized: same results, float32 memory and speed)")
    return True, "the cuda backend runs this configuration"


def describe():
    """A few lines for ``python -m fastrnn info``: driver, devices, CuPy."""
    lines = []
    if _SIM:
        lines.append("CUDA simulator active (NUMBA_ENABLE_CUDASIM=1): kernels run on the CPU")
    else:
        ok, why = real_gpu()
        if not ok:
            lines.append(f"no GPU: {why}")
        else:
            try:
                version = cuda.runtime.get_version()
                lines.append(f"CUDA runtime {version[0]}.{version[1]}")
            except Exception:  # pragma: no cover - depends on the install
                pass
            for dev in cuda.list_devices():
                try:
                    with dev:
                        cc = dev.compute_capability
                        lines.append(
                            f"GPU {dev.id}: {dev.name.decode() if isinstance(dev.name, bytes) else dev.name}"
                            f" (compute capability {cc[0]}.{cc[1]})"
                        )
                except Exception as exc:  # pragma: no cover
                    lines.append(f"GPU {dev.id}: not usable ({exc})")
    lines.append("reduced precision: bfloat16 and int8 layers run their dequantized float32 "
                 "weights (same results; no narrow kernels on the GPU); int8_dynamic and "
                 "bfloat16_dynamic run on the CPU")
    if _SIM or not real_gpu()[0]:
        # Importing CuPy without a GPU is pointless (and slow): look it up only.
        import importlib.util

        found = importlib.util.find_spec("cupy") is not None
        lines.append(f"CuPy {'installed' if found else 'not installed'} (cuBLAS for the input projection)")
    else:
        lines.append(
            "input projection: "
            + ("cuBLAS through CuPy" if _use_cupy() else "Numba shared-memory GEMM (no CuPy)")
        )
    return "\n".join(lines)


# --- host <-> device -------------------------------------------------------


def _is_numba_device(a):
    dev = cuda.devicearray
    kinds = tuple(
        getattr(dev, name) for name in ("DeviceNDArray", "FakeCUDAArray") if hasattr(dev, name)
    )
    return isinstance(a, kinds)


def _as_device(a):
    """A Numba view of a device array (Numba, CuPy, PyTorch...), no copy."""
    if _is_numba_device(a):
        return a
    if hasattr(a, "__cuda_array_interface__") and hasattr(cuda, "as_cuda_array"):
        return cuda.as_cuda_array(a)
    if hasattr(a, "__dlpack__") and _use_cupy():
        # DLPack only (JAX, ...): CuPy takes it without a copy and exposes
        # the CUDA Array Interface; the Numba view keeps the CuPy array alive.
        return cuda.as_cuda_array(_cupy.from_dlpack(a))
    raise TypeError(f"expected a NumPy or CUDA device array, got {type(a).__name__}")


class _Transfers:
    """Copies host arguments in once and host results back once."""

    def __init__(self):
        self._back = []

    def read(self, a):
        if a is None:
            return None
        if isinstance(a, np.ndarray):
            return cuda.to_device(np.ascontiguousarray(a))
        return _as_device(a)

    def write(self, a):
        if a is None:
            return None
        if isinstance(a, np.ndarray):
            d = cuda.device_array(a.shape, a.dtype)
            self._back.append((d, a))
            return d
        return _as_device(a)

    def state(self, a, dtype):
        """A fresh device buffer holding a copy of the initial state ``a``."""
        buf = cuda.device_array(a.shape, dtype)
        src = np.ascontiguousarray(a, dtype=dtype) if isinstance(a, np.ndarray) else _as_device(a)
        buf.copy_to_device(src)
        return buf

    def final(self, dst, src):
        """Write the final state ``src`` (device) into the caller's ``dst``."""
        if isinstance(dst, np.ndarray):
            dst[...] = src.copy_to_host()
        else:
            _as_device(dst).copy_to_device(src)

    def finish(self):
        for d, a in self._back:
            a[...] = d.copy_to_host()
        self._back.clear()


_dummies = {}


def _dummy(dtype):
    """``(2-D, 3-D, bool mask)`` placeholders for absent optional arrays."""
    # One set per device: cuda.select_device may change it between calls.
    key = (np.dtype(dtype).str, getattr(cuda.current_context().device, "id", 0))
    if key not in _dummies:
        _dummies[key] = (
            cuda.to_device(np.zeros((1, 1), dtype)),
            cuda.to_device(np.zeros((1, 1, 1), dtype)),
            cuda.to_device(np.zeros((1, 1), np.bool_)),
        )
    return _dummies[key]


def _grid(n):
    threads = _config["threads"]
    blocks = max(1, -(-n // threads))
    if _config["max_blocks"]:
        blocks = min(blocks, _config["max_blocks"])
    return blocks, threads


# --- input projection ------------------------------------------------------

_cupy = None


def _use_cupy():
    """CuPy (cuBLAS) for the GEMM: never under the simulator."""
    global _cupy
    if _SIM or _config["gemm"] == "numba":
        return False
    if _cupy is None:
        try:
            import cupy

            _cupy = cupy
        except ImportError:
            _cupy = False
    if _config["gemm"] == "cupy" and _cupy is False:
        raise RuntimeError("FASTRNN_CUDA_GEMM=cupy but CuPy is not installed")
    return _cupy is not False


def _use_gemm(batch):
    return 0 < _config["gemm_batch"] <= batch


def _project(a, w, bias, c, add_bias=True):
    """``c = a @ w + bias`` on the device; ``a (M, K)``, ``w (K, N)``, ``bias (>= N,)``.

    With ``add_bias=False`` ``bias`` must be zeros (the Numba kernel adds it
    anyway; cuBLAS skips the extra launch).
    """
    if _use_cupy():
        cp = _cupy
        cc = cp.asarray(c)
        cp.matmul(cp.asarray(a), cp.asarray(w), out=cc)
        if add_bias:
            cc += cp.asarray(bias)[: c.shape[1]]
        return
    tile = _config["tile"]
    kernel = _k.make_matmul(tile, np.dtype(c.dtype))
    rows = -(-a.shape[0] // tile)
    cols = -(-w.shape[1] // tile)
    cap = _config["max_blocks"] or 65535
    # (a grid's y dimension holds at most 65535 blocks; the rows loop round)
    kernel[(min(cols, cap), min(rows, cap, 65535)), (tile, tile)](a, w, bias, c)


# --- packing ---------------------------------------------------------------


class _Packed:
    """Weights on the device, in Keras layout (the kernels index gates by column)."""

    __slots__ = (
        "params", "dtype", "kernel", "bias", "recurrent_kernel", "recurrent_bias",
        "peepholes", "projection", "zeros", "u_zr", "u_h",
    )

    def __init__(self, params):
        self.params = params
        dtype = np.dtype(np.asarray(params.kernel).dtype)
        self.dtype = dtype

        def up(a):
            if a is None:
                return None
            if isinstance(a, np.ndarray) or not hasattr(a, "__cuda_array_interface__"):
                return cuda.to_device(np.ascontiguousarray(a, dtype=dtype))
            return _as_device(a)

        self.kernel = up(params.kernel)
        self.recurrent_kernel = up(params.recurrent_kernel)
        bias = np.asarray(params.bias, dtype=dtype)
        if params.kind == "gru":
            bias = bias.reshape(2, -1)
            self.bias = up(bias[0])
            self.recurrent_bias = up(bias[1])
        else:
            self.bias = up(bias)
            self.recurrent_bias = None
        self.peepholes = up(getattr(params, "peepholes", None))
        self.projection = up(getattr(params, "projection", None))
        # The bias of the per-step GEMMs (the kernels add the real ones).
        self.zeros = cuda.to_device(np.zeros(max(self.recurrent_kernel.shape), dtype))
        self.u_zr = self.u_h = None
        if params.kind == "gru" and not params.reset_after:
            # (r * h) U_h needs r first: z and r, then the candidate, each
            # kernel (and GEMM) with the columns of its own gates.
            u = np.asarray(params.recurrent_kernel, dtype=dtype)
            H = u.shape[0]
            self.u_zr = up(np.ascontiguousarray(u[:, : 2 * H]))
            self.u_h = up(np.ascontiguousarray(u[:, 2 * H:]))


def pack(params):
    """Upload the weights of ``params`` to the device, once."""
    return _Packed(params)


# --- the sequence functions ------------------------------------------------


class _Run:
    """One sequence call on the device: the transfers (:class:`_Transfers`),
    the input projection ``xw (B*T, n_gates*H)`` of every step, the
    optional arrays (or their dummies) and the order of the steps."""

    def __init__(self, packed, x, mask, reverse, zero_output, out, n_gates):
        self.io = io = _Transfers()
        self.dtype = dtype = packed.dtype
        dx = io.read(x)
        B, T, D = dx.shape
        H = packed.params.units
        self.B, self.T, self.H = B, T, H
        self.xw = cuda.device_array((B * T, n_gates * H), dtype)
        _project(dx.reshape(B * T, D), packed.kernel, packed.bias, self.xw)
        self.dummy, d3, dmask = _dummy(dtype)
        dm, do = io.read(mask), io.write(out)
        self._ends = (dmask if dm is None else dm, mask is not None,
                      d3 if do is None else do, out is not None)
        self._zero_output = bool(zero_output)
        self._reverse = reverse
        self._zeros = packed.zeros
        self.has_r = _use_gemm(B)

    def buffer(self, cols):
        """A device buffer ``(B, cols)``."""
        return cuda.device_array((self.B, cols), self.dtype)

    def states(self, a, cols):
        """A state's two buffers ``(B, cols)``: a copy of the initial ``a``,
        and one to write; step ``n`` reads half ``n % 2``."""
        return [self.io.state(a, self.dtype), self.buffer(cols)]

    def gemm_out(self, cols, needed=True):
        """A buffer ``(B, cols)`` for a per-step GEMM's result where the
        steps use them (``has_r``); else the dummy."""
        return self.buffer(cols) if self.has_r and needed else self.dummy

    def product(self, h, w, R):
        """``R = h @ w`` on the device, where the steps use GEMMs."""
        if self.has_r:
            _project(h, w, self._zeros, R, False)

    def steps(self):
        """``(t, t_prev, i, o)`` for each step in order: its time index, the
        one before (``-1`` first), and the halves of the state buffers it
        reads and writes."""
        t_prev = -1
        for n in range(self.T):
            t = self.T - 1 - n if self._reverse else n
            yield t, t_prev, n % 2, (n + 1) % 2
            t_prev = t

    def ends(self, t_prev):
        """The last arguments of a kernel that ends a step: ``mask,
        has_mask, out, has_out, t_prev, zero_output``."""
        return self._ends + (t_prev, self._zero_output)

    def finish(self, *finals):
        """Write each ``(caller's array, state buffers)``'s final state, and
        the outputs, back."""
        for dst, bufs in finals:
            self.io.final(dst, bufs[self.T % 2])
        self.io.finish()


# The simulator swaps module globals while a kernel runs, so two host threads
# launching at once break each other there; a real GPU needs no lock (each
# call has its own buffers, and Numba serialises compilation).
_sim_lock = threading.RLock() if _SIM else contextlib.nullcontext()


def _serialised(fn):
    def run(*args):
        with _sim_lock:
            return fn(*args)

    run.__name__, run.__qualname__, run.__doc__ = fn.__name__, fn.__qualname__, fn.__doc__
    return run


@_serialised
def simple_rnn(packed, x, h0, mask, reverse, zero_output, out, h_out):
    """Run a SimpleRNN over ``x (B, T, D)``; see the contract in :mod:`fastrnn.kernels`."""
    run = _Run(packed, x, mask, reverse, zero_output, out, 1)
    h = run.states(h0, run.H)
    U, R = packed.recurrent_kernel, run.gemm_out(run.H)
    grid, act = _grid(run.B * run.H), int(packed.params.activation)
    for t, t_prev, i, o in run.steps():
        run.product(h[i], U, R)
        _k.simple_rnn_step[grid](run.xw, run.T, t, U, R, run.has_r, h[i], h[o],
                                 *run.ends(t_prev), act)
    run.finish((h_out, h))


@_serialised
def gru(packed, x, h0, mask, reverse, zero_output, out, h_out):
    """Run a GRU (gates z, r, h) over ``x (B, T, D)``; see :mod:`fastrnn.kernels`."""
    p = packed.params
    run = _Run(packed, x, mask, reverse, zero_output, out, 3)
    H = run.H
    h = run.states(h0, H)
    grid = _grid(run.B * H)
    act, ract = int(p.activation), int(p.recurrent_activation)
    brec = packed.recurrent_bias
    if p.reset_after:
        U, R = packed.recurrent_kernel, run.gemm_out(3 * H)
        for t, t_prev, i, o in run.steps():
            run.product(h[i], U, R)
            _k.gru_step[grid](run.xw, run.T, t, U, R, run.has_r, brec, h[i], h[o],
                              *run.ends(t_prev), act, ract)
    else:
        # (r * h) U_h needs r first: z and r, then the candidate
        z_buf, rh_buf = run.buffer(H), run.buffer(H)
        R, R2 = run.gemm_out(2 * H), run.gemm_out(H)
        for t, t_prev, i, o in run.steps():
            run.product(h[i], packed.u_zr, R)
            _k.gru_gates[grid](run.xw, run.T, t, packed.u_zr, R, run.has_r, brec, h[i],
                               z_buf, rh_buf, ract)
            run.product(rh_buf, packed.u_h, R2)
            _k.gru_candidate[grid](run.xw, run.T, t, packed.u_h, R2, run.has_r, brec, h[i],
                                   z_buf, rh_buf, h[o], *run.ends(t_prev), act, ract)
    run.finish((h_out, h))


@_serialised
def lstm(packed, x, h0, c0, mask, reverse, zero_output, out, h_out, c_out):
    """Run an LSTM (gates i, f, c, o) over ``x (B, T, D)``; see :mod:`fastrnn.kernels`."""
    p = packed.params
    run = _Run(packed, x, mask, reverse, zero_output, out, 4)
    B, H, P = run.B, run.H, p.output_size
    h, c = run.states(h0, P), run.states(c0, H)
    has_proj = packed.projection is not None
    has_peep = packed.peepholes is not None
    m_buf = run.buffer(H) if has_proj else run.dummy
    peep = packed.peepholes if has_peep else run.dummy
    proj = packed.projection if has_proj else run.dummy
    cell_clip = -1.0 if p.cell_clip is None else float(p.cell_clip)
    proj_clip = -1.0 if p.proj_clip is None else float(p.proj_clip)
    grid, grid_p = _grid(B * H), _grid(B * P)
    act, ract = int(p.activation), int(p.recurrent_activation)
    forget_bias = float(p.forget_bias)
    U = packed.recurrent_kernel
    R, R2 = run.gemm_out(4 * H), run.gemm_out(P, has_proj)
    for t, t_prev, i, o in run.steps():
        run.product(h[i], U, R)
        _k.lstm_step[grid](
            run.xw, run.T, t, U, R, run.has_r, peep, has_peep, h[i], c[i], h[o], c[o],
            m_buf, has_proj, *run.ends(t_prev), act, ract, forget_bias, cell_clip,
        )
        if has_proj:
            run.product(m_buf, proj, R2)
            _k.lstm_project[grid_p](m_buf, proj, R2, run.has_r, proj_clip, t, h[i], h[o],
                                    *run.ends(t_prev))
    run.finish((h_out, h), (c_out, c))
