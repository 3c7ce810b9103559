"""The ``cpu`` backend: Numba-compiled kernels for the whole sequence.

Implements the kernel contract of :mod:`fastrnn.kernels` (read it there).
Two families of kernels sit behind it:

* ``_cpu_packed``: float32 LSTM without projection and float32 GRU with
  ``reset_after=True`` (the configurations nearly all models use). Weights
  are packed once by :func:`pack` into panels of 16 units, and an explicit
  SIMD tile (``_simd``) keeps 4 batch rows x 4 gate vectors in registers
  and applies the gate math right after each panel's product.
* ``_cpu_generic``: every other variant (float64, SimpleRNN, GRU with
  ``reset_after=False``, LSTM projection), with the same semantics.

Both fold the input projection into each step, so memory does not grow
with ``T``, and both write straight into the caller's buffers.

Threads: batch rows are independent for the whole sequence, so a call with
8 rows or more splits the batch between threads (at most
:func:`get_num_threads`) and the threads never meet until the end: nothing
spins at a barrier, which keeps the engine robust when another process is
busy on the same cores (for 8-31 rows and weights past 640 KiB, where
neither split wins on every machine, a shape's first calls time both and
keep the faster). Smaller batches share each step's panels between
two threads (``_cpu_packed.split_work``), started by one parallel launch
per sequence on Numba's pool (``split_par``), or, under the ``workqueue``
layer, by this module's helper thread; the calling thread never waits for
the other to arrive and takes its panels over when it lags. Small calls
(and calls made while another thread is already inside a parallel kernel)
run on the calling thread alone. Kernels never call BLAS, so no OpenBLAS
thread spins beside them.
"""

from __future__ import annotations

import os
import sys
import threading
import time

import numpy as np

NAME = "cpu"

try:  # numba is a hard dependency, but say so plainly if it is broken
    import numba

    _IMPORT_ERROR = None
except Exception as exc:  # pragma: no cover
    numba = None
    _IMPORT_ERROR = exc

def _prefer_omp():
    """Prefer the OpenMP threading layer when the user chose none.

    A parallel launch costs ~1 us under ``omp`` and ~80 us under
    ``workqueue`` (which is also not thread-safe); ``tbb`` was not measured,
    so it comes second. Only the order of preference changes, and only when
    neither ``NUMBA_THREADING_LAYER`` nor ``NUMBA_THREADING_LAYER_PRIORITY``
    is set; it must happen before Numba's first parallel launch.
    """
    if numba is None:
        return
    if os.environ.get("NUMBA_THREADING_LAYER") or os.environ.get("NUMBA_THREADING_LAYER_PRIORITY"):
        return
    if numba.config.THREADING_LAYER == "default":
        numba.config.THREADING_LAYER_PRIORITY = ["omp", "tbb", "workqueue"]


_prefer_omp()

if numba is not None:
    from . import _cpu_generic as _gen
    from . import _cpu_packed as _pk
    from ._simd import HAVE_FUTEX as _HAVE_FUTEX

_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

# Work (multiply-adds per call) below which a second thread costs more than
# it saves (thread wake-up is ~10-50 us when the pool sleeps).
_MIN_PARALLEL_WORK = 2_000_000

# Batches from this size up are split by rows (no synchronisation at all);
# smaller ones share each step's panels between two threads. From 8 rows
# (4 per thread) the row split is the faster one while the weights stay in
# cache (``python -m fastrnn bench``, B=8 D=128 H=256, panels -> rows: GRU
# 0.54 -> 0.45-0.49x ONNX Runtime's time); with more weights panels win (below).
_BATCH_SPLIT_MIN = 8
# ... unless the packed weights exceed this many bytes: they no longer stay
# in the cores' caches between steps, and with rows split each thread
# streams all of them every step, with panels split only its half.
# Measured, LSTM, 2 threads, rows -> panels: B=64 D=512 H=1024 (25 MB)
# 378 -> 423 GFLOP/s, B=16 same weights 238 -> 325, B=32 D=256 H=512
# (6 MB) 443 -> 459, B=32 D=128 H=256 (1.5 MB) 374 -> 391; B=256 D=H=128
# (0.25 MB) 370 -> 359, B=128 D=H=256 (2 MB) 410 -> 404.
_ROW_SPLIT_MAX_BYTES = 2 << 20
# A single row (batch 1, or one row per thread) whose packed weights exceed
# this many bytes computes its input sums (bias + x . W) for runs of
# _pk.HOIST_STEPS steps at a time, 6 steps per weight load, instead of in
# every step: each step then streams only the recurrent rows of the panels
# (LSTM D=256 H=512: 6.3 -> 4.2 MB per step, and a GRU's half of them
# then fits a core's L2). Same bits either way (the sums run in the same
# order). Measured, batch 1, interleaved, hoisted / folded time, two
# threads: LSTM D=256 H=512 0.43, D=512 H=512 0.39, D=128 H=256 0.84,
# D=64 H=128 0.84, D=64 H=1024 0.96; GRU D=256 H=512 0.44, D=64 H=128 0.91;
# one thread: LSTM D=64 H=128 0.87, D=256 H=512 0.77, D=4 H=256 1.02. So
# every size hoists.
_HOIST_MIN_BYTES = 0
# Panel split: one claim takes at most this much work (multiply-adds, ~20
# us of one core), so a thread that loses its core holds back little.
_CLAIM_WORK = 2_000_000
# Panel split: when the helper ran less than this share of its half (it
# joined late or lost its core to another process), the machine is busy:
# use one thread for _CONTENDED_PAUSE seconds (doubling while it lasts).
_STARVED = 0.5
# ... or when the calling thread spent this long (and half the call) off its
# core: with a busy process beside it, a pool launch's join could wait a
# whole scheduler slice (8 ms) for the other thread. Waking a pool thread
# that slept through a pause can take up to ~1 ms on a VM: not contention.
_STALL_MIN = 0.002
_CONTENDED_PAUSE = 0.005  # doubled at each starved call in a row, up to the max
# (a single stall is often a blip: an interrupt, a daemon; a busy process
# starves every call and reaches the max within a few calls)
_CONTENDED_PAUSE_MAX = 4.0
# Row-split calls with less work than this (multiply-adds; ~10 ms of one
# core) watch for the same stall and take one thread while the machine is
# busy (``python -m fastrnn bench --contention``, LSTM B=8 D=128 H=256,
# 3 x 10^8: 1.33 -> 0.49x ONNX Runtime's time). Longer calls keep both
# threads: a stall of one scheduler slice is a small part of them.
_CONTENDED_ROWS_WORK = 2_000_000_000
_contended_pause = _CONTENDED_PAUSE
_contended_until = 0.0
# Between the two splits lies a band where neither wins on every machine:
# batches of 8-31 rows whose packed weights pass _TUNE_MIN_BYTES (with rows
# split, each core's L2 must hold all of them; with panels split, half).
# Interleaved runs on one Intel host (LSTM D=128 H=256, 1.5 MB, two threads,
# panels / rows time): B=8 0.86, B=10 0.72, B=16 0.88, B=12 1.03, B=24 1.03;
# D=H=128 (0.5 MB) B=8 1.21. An earlier host of the same family had the row
# split ahead at B=8. So calls in the band time both: a shape's first
# 2 x (_TUNE_SAMPLES + 1) calls alternate between them (each one's first
# call is not counted) and the rest take the one with the faster call per
# step. Both give the same bits (every tile
# sums a row's products in one order): only the speed differs.
_TUNE_MIN_BYTES = 640 << 10
_TUNE_MAX_B = 32
_TUNE_SAMPLES = 3
_TUNE_MAX_SHAPES = 256
_tuning = {}
# Panel split only when a step has this much work (multiply-adds): below,
# meeting the other thread every step costs more than it saves. Measured on
# 2 cores (Zen 5), batch 1, one thread -> two, us per step: LSTM D=H=32 (8k)
# 0.28 -> 0.41, D=16 H=48 (12k) 0.47 -> 0.51, D=H=64 (33k) 1.08 -> 0.80,
# D=64 H=128 (98k) 2.99 -> 1.84; GRU D=H=64 (25k) 0.97 -> 0.62.
_MIN_SPLIT_STEP_WORK = 20_000
# Panel split: pause-spins a thread waits for the other before it takes over
# the rest of the sequence alone (and this process falls back to one thread
# for a while): see _cpu_packed._wait_done.
_SPINS = 4000 if numba is None else _pk.DEFAULT_SPINS

_max_threads = None
_parallel_lock = threading.Lock()
_NO_C = np.zeros((1, 1), dtype=np.float32)
_NO_PEEP = np.zeros(16, dtype=np.float32)


# ---------------------------------------------------------------- threads


# Numba's pool size is fixed once the process starts (and reading
# numba.config costs microseconds: not per call).
_NUMBA_THREADS = int(numba.config.NUMBA_NUM_THREADS) if numba is not None else 1


def _numba_threads():
    return _NUMBA_THREADS


def set_num_threads(n):
    """Bound the threads one kernel call may use (``None`` resets to all).

    Parameters
    ----------
    n : int or None
        At least 1; values above Numba's pool size (``NUMBA_NUM_THREADS``)
        are capped to it.
    """
    global _max_threads
    if n is None:
        _max_threads = None
        return
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n: expected a positive integer or None, got {n!r}")
    _max_threads = min(int(n), _numba_threads())


def get_num_threads():
    """The most threads one kernel call uses."""
    return _numba_threads() if _max_threads is None else _max_threads


def threading_layer(start=False):
    """The Numba threading layer in use.

    ``None`` before the first parallel call, unless ``start`` is true: then
    a tiny parallel kernel (from Numba's cache) starts the pool first.
    """
    if start and numba is not None:
        _start_pool()
    try:
        return numba.threading_layer()
    except Exception:  # ValueError: not initialised yet
        return None


_LAYER = None  # the threading layer, once fastrnn started the pool
# libgomp's idle threads spin GOMP_SPINCOUNT rounds before they sleep
# (default 300,000: milliseconds). With another busy process on the cores,
# the caller then spins at the end of a parallel launch while the thread it
# waits for has no core: measured, a batch-1 LSTM call took 8 ms instead of
# 0.3. 1,000 rounds keep back-to-back calls warm (no loss measured) and make
# the wait sleep.
_GOMP_SPINCOUNT = "1000"


def _start_pool():
    """Start Numba's thread pool, once, with a short OpenMP spin; return the
    threading layer.

    ``GOMP_SPINCOUNT`` is read by libgomp when it loads, which happens here
    (Numba's ``omp`` layer loads the system libgomp at its first parallel
    launch); it is set only when neither it nor ``OMP_WAIT_POLICY`` is set,
    and removed again right after, so that a library loaded later (PyTorch
    brings its own libgomp) does not inherit it. A pool that other code
    started before fastrnn's first parallel call keeps its own setting.
    """
    global _LAYER
    if _LAYER is not None or numba is None:
        return _LAYER
    ours = "GOMP_SPINCOUNT" not in os.environ and "OMP_WAIT_POLICY" not in os.environ
    if ours:
        os.environ["GOMP_SPINCOUNT"] = _GOMP_SPINCOUNT
    try:
        _gen.touch_pool(np.zeros(2))
    finally:
        if ours:
            os.environ.pop("GOMP_SPINCOUNT", None)
    _LAYER = numba.threading_layer()
    return _LAYER


def _bounds(B, work):
    """Row bounds for the threads of one call: an int64 array of n+1 edges."""
    n = min(get_num_threads(), B)
    if n <= 1 or work < _MIN_PARALLEL_WORK:
        return None
    # even shares: the packed tiles take 6, 4, 2 or 1 rows, so no multiple
    # suits every batch (rounding to 4 gave B=12 shares of 8 and 4)
    edges = [(B * c) // n for c in range(n)]
    edges.append(B)
    return np.asarray(edges, dtype=np.int64)


def _run(serial, parallel, B, work, args):
    """Call ``parallel(bounds, *args)`` on several threads, or ``serial(0, B, *args)``."""
    bounds = _bounds(B, work)
    if bounds is not None and _parallel_lock.acquire(blocking=False):
        # One parallel kernel at a time per process: a second caller thread
        # runs on its own core instead of doubling the thread count (and the
        # workqueue layer cannot run two parallel regions at once at all).
        try:
            _start_pool()
            parallel(bounds, *args)
            return
        finally:
            _parallel_lock.release()
    serial(0, B, *args)


class _Helper:
    """The second thread of the panel split under the ``workqueue`` layer
    (where a parallel launch costs ~80 us): a daemon thread that runs
    ``_cpu_packed.split_work(1, ...)`` on the job it is handed. The caller
    never waits for it (see ``_cpu_packed``): a helper that wakes up late
    finds the job finished and goes back to sleep."""

    def __init__(self):
        self._cv = threading.Condition()
        self._job = None
        self._pid = None

    def submit(self, job):
        with self._cv:
            if self._pid != os.getpid():  # first use, or a forked child
                self._pid = os.getpid()
                self._job = None
                threading.Thread(target=self._loop, name="fastrnn-helper", daemon=True).start()
            self._job = job
            self._cv.notify()

    def _loop(self):
        while True:
            with self._cv:
                while self._job is None:
                    self._cv.wait()
                job, self._job = self._job, None
            _pk.split_work(1, *job)


_helper = _Helper()


def _run_split(T, args):
    """A panel-split call: this thread and the helper share each step's
    panels. Returns (panels the helper ran, the step it joined at or -1,
    whether the caller had to take over from it)."""
    (gru, Wp, bp, peep, has_peep, cell_clip, act, ract, H, x, h0, c0, mask, has_mask,
     reverse, zero_output, out, has_out, h_out, c_out, hoist) = args
    hf, cb, P = _pk.split_prepare(gru, H, h0, c0, hoist)
    sync = np.zeros(_pk.SYNC_SIZE, dtype=np.int64)
    # a waiting thread spins for about ten panels' time (a pause-spin is
    # ~23 ns on Zen 5; a core does ~10^5 multiply-adds per us)
    panel_work = x.shape[0] * (x.shape[2] + H) * (48 if gru else 64)
    sync[_pk.SPINS] = max(_SPINS, panel_work // 230)
    sync[_pk.CHUNK] = max(1, _CLAIM_WORK // panel_work)
    sync[_pk.JOIN] = -1
    work = (sync, gru, Wp, bp, peep, has_peep, cell_clip, act, ract, H, x, mask,
            has_mask, reverse, zero_output, out, has_out, hf, cb, P, hoist)
    if _start_pool() in ("omp", "tbb"):
        _pk.split_par(*work)
    else:  # workqueue: a parallel launch costs ~80 us; wake our own thread instead
        _helper.submit(work)
        _pk.split_work(0, *work)
    _pk.split_finish(gru, H, T, hf, cb, h_out, c_out)
    # the sync counters are complete once every panel is done (the helper
    # may still be on its way out under workqueue)
    return int(sync[_pk.COUNT + 8]), int(sync[_pk.JOIN]), bool(sync[_pk.ABANDON])


def _contended():
    return time.monotonic() < _contended_until


def _stalled(wall, cpu_t):
    """Whether the calling thread spent long off its core during a call of
    ``wall`` seconds that took it ``cpu_t`` seconds of CPU."""
    return wall - cpu_t > max(_STALL_MIN, 0.5 * wall)


def _note_contention(starved):
    """After a two-thread call: a starved one starts (or doubles) a period
    on one thread; a clean one resets the period's length."""
    global _contended_until, _contended_pause
    if starved:
        _contended_until = time.monotonic() + _contended_pause
        _contended_pause = min(2 * _contended_pause, _CONTENDED_PAUSE_MAX)
    else:
        _contended_pause = _CONTENDED_PAUSE


def _tune_pick(key):
    """The split a call of shape ``key`` takes: while it is being tuned,
    whichever has fewer timings; then the one with the lower median."""
    got = _tuning.get(key)
    if got is None:
        if len(_tuning) >= _TUNE_MAX_SHAPES:  # a server cycling through shapes
            _tuning.clear()
        got = _tuning[key] = {"rows": [], "panels": []}
    if isinstance(got, str):
        return got, False
    # rows, panels, panels, rows, rows, ...: each split runs as often first
    # as second of a pair (a call right after a pause, or after other work
    # evicted the weights from cache, is slower than the next one)
    n = len(got["rows"]) + len(got["panels"])
    return ("rows" if n % 4 in (0, 3) else "panels"), True


def _tune_record(key, split, per_step):
    got = _tuning.get(key)
    if not isinstance(got, dict):
        return
    got[split].append(per_step)
    # each split's first call is left out: it may have compiled or loaded
    # the kernel, started the pool, or brought the weights into cache
    if min(len(v) for v in got.values()) > _TUNE_SAMPLES:
        # the fastest call of each: noise (interrupts, a preempted thread)
        # only ever adds time
        _tuning[key] = min(got, key=lambda k: min(got[k][1:]))


def tuned_splits():
    """The splits chosen so far for shapes in the band where neither always
    wins: ``{(cell, B, D, H, T_min, T_max): "rows" | "panels"}``; sequence
    lengths are timed in ranges ``2**k .. 2**(k+1) - 1`` (a short call
    spends more of its time starting threads). Shapes still being timed are
    left out."""
    return {("gru" if k[0] else "lstm", k[1], k[2], k[3], 1 << (k[4] - 1), (1 << k[4]) - 1): v
            for k, v in _tuning.items() if isinstance(v, str)}


def _run_packed(B, T, H, work, args):
    """Run a packed (float32 LSTM/GRU) call: rows split between threads for
    large batches, panels split for small ones and for weights too large to
    stay in cache, or one thread; in between, whichever measured faster."""
    threads = get_num_threads()
    if threads >= 2 and work >= _MIN_PARALLEL_WORK:
        NP = (H + _pk.LANES - 1) // _pk.LANES
        can_split = (NP >= 2 and _HAVE_FUTEX and T * NP < 2**30
                     and work >= _MIN_SPLIT_STEP_WORK * T)
        # (while the machine looks busy, large batches keep the row split:
        # its threads never wait for each other; short calls take one thread,
        # since the launch's join could wait a scheduler slice for a thread
        # that has no core)
        nbytes = args[1].nbytes
        contended = _contended()
        rows = B >= _BATCH_SPLIT_MIN and (nbytes <= _ROW_SPLIT_MAX_BYTES or contended or not can_split)
        tune = None
        if (rows and can_split and not contended and threads == 2 and B < _TUNE_MAX_B
                and nbytes > _TUNE_MIN_BYTES):
            tune = (bool(args[0]), B, args[9].shape[2], H, T.bit_length())
            split, timing = _tune_pick(tune)
            rows = split == "rows"
            if not timing:
                tune = None
        if rows:
            bounds = _bounds(B, work)
            if (bounds is not None and (work >= _CONTENDED_ROWS_WORK or not contended)
                    and _parallel_lock.acquire(blocking=False)):
                try:
                    _start_pool()
                    wall, cpu_t = time.perf_counter(), time.thread_time()
                    _pk.run_rows_par(bounds, *args)  # folded projection
                    wall, cpu_t = time.perf_counter() - wall, time.thread_time() - cpu_t
                finally:
                    _parallel_lock.release()
                stalled = _stalled(wall, cpu_t)
                if work < _CONTENDED_ROWS_WORK:
                    _note_contention(stalled)
                if tune is not None and not stalled:
                    _tune_record(tune, "rows", wall / T)
                return
        if can_split and not contended and _parallel_lock.acquire(blocking=False):
            try:
                wall, cpu_t = time.perf_counter(), time.thread_time()
                helper, joined, abandoned = _run_split(T, args)
                wall, cpu_t = time.perf_counter() - wall, time.thread_time() - cpu_t
            finally:
                _parallel_lock.release()
            # The helper lost its core to another process: the caller had to
            # take a panel over from it, or, once it joined, it ran less than
            # _STARVED of its share. Run on one thread for a while instead.
            # (A helper that joined late, or never in a short call, because
            # its thread was asleep is no sign of contention.)
            # A call whose calling thread spent long off its core (waiting at
            # the launch's join for a thread that had no core, or preempted)
            # is another sign.
            share = (NP - (NP + 1) // 2) * (T - joined)
            starved = (abandoned or _stalled(wall, cpu_t)
                       or (joined >= 0 and helper < _STARVED * share))
            _note_contention(starved)
            if tune is not None and not starved:
                _tune_record(tune, "panels", wall / T)
            return
    _pk.run_rows(0, B, *args)


# ---------------------------------------------------------------- contract


def available():
    if numba is None:
        return False, f"numba cannot be imported: {_IMPORT_ERROR}"
    return True, f"numba {numba.__version__} compiles the kernels"


def supports(params):
    for name in ("activation", "recurrent_activation"):
        code = getattr(params, name, 0)
        if callable(code):
            return False, f"{name} is a Python callable (only the reference backend runs it)"
    dtypes = {
        np.asarray(v).dtype
        for v in vars(params).values()
        if isinstance(v, np.ndarray)
    }
    if len(dtypes) != 1 or next(iter(dtypes)) not in _DTYPES:
        return False, f"weights must share one dtype, float32 or float64 (got {sorted(map(str, dtypes))})"
    return True, "compiled kernels run this configuration"


class _Packed:
    """Weights in the layout of the kernel family that runs them."""

    __slots__ = ("params", "dtype", "packed", "arrays")

    def __init__(self, params, dtype, packed, arrays):
        self.params = params
        self.dtype = dtype
        self.packed = packed  # True: _cpu_packed panels; False: _cpu_generic
        self.arrays = arrays

    def __repr__(self):
        kind = "packed float32 panels" if self.packed else f"generic {self.dtype}"
        return f"<cpu {self.params.kind} weights, {kind}>"


def _packed_path_enabled():
    # FASTRNN_CPU_GENERIC=1 forces the generic kernels (tests, debugging).
    return os.environ.get("FASTRNN_CPU_GENERIC", "") in ("", "0")


def _c(a, dtype):
    return np.ascontiguousarray(a, dtype=dtype)


def pack(params):
    """Derive the CPU layout of ``params`` (once, when weights are set)."""
    dtype = np.asarray(params.kernel).dtype
    kind = params.kind
    fast = dtype == np.float32 and _packed_path_enabled()
    if kind == "lstm":
        if fast and params.projection is None:
            arrays = _pk.pack_lstm(
                params.kernel, params.recurrent_kernel, params.bias,
                float(params.forget_bias), params.peepholes,
            )
            return _Packed(params, dtype, True, arrays)
        H = params.units
        peep = params.peepholes
        proj = params.projection
        arrays = (
            _c(params.kernel, dtype),
            _c(params.recurrent_kernel, dtype),
            _c(params.bias, dtype),
            _c(peep if peep is not None else np.zeros((3, H)), dtype),
            _c(proj if proj is not None else np.zeros((1, 1)), dtype),
        )
        return _Packed(params, dtype, False, arrays)
    if kind == "gru":
        if fast and params.reset_after:
            return _Packed(params, dtype, True, _pk.pack_gru(
                params.kernel, params.recurrent_kernel, params.bias))
        bias = np.asarray(params.bias)
        if bias.ndim == 1:  # tolerate a (3H,) bias: no recurrent bias
            bias = np.stack([bias, np.zeros_like(bias)])
        arrays = (_c(params.kernel, dtype), _c(params.recurrent_kernel, dtype), _c(bias, dtype))
        return _Packed(params, dtype, False, arrays)
    arrays = (_c(params.kernel, dtype), _c(params.recurrent_kernel, dtype), _c(params.bias, dtype))
    return _Packed(params, dtype, False, arrays)


_DUMMY_MASK = np.ones((1, 1), dtype=np.bool_)


def _mask(mask):
    if mask is None:
        return _DUMMY_MASK, False
    return np.ascontiguousarray(mask, dtype=np.bool_), True


class _Out:
    """A C-contiguous stand-in for a caller buffer that is not one."""

    __slots__ = ("dst", "buf")

    def __init__(self, dst, dtype, shape):
        self.dst = dst
        if dst is None:
            self.buf = np.empty(shape, dtype=dtype)
        elif dst.flags.c_contiguous and dst.dtype == dtype:
            self.buf = dst
        else:
            self.buf = np.empty(dst.shape, dtype=dtype)

    def finish(self):
        if self.dst is not None and self.buf is not self.dst:
            self.dst[...] = self.buf


def _limit(v):
    return -1.0 if v is None else float(v)


def simple_rnn(packed, x, h0, mask, reverse, zero_output, out, h_out):
    p = packed.params
    dt = packed.dtype
    x = _c(x, dt)
    B, T, D = x.shape
    H = p.units
    W, U, bias = packed.arrays
    m, has_mask = _mask(mask)
    o = _Out(out, dt, (1, 1, 1))
    ho = _Out(h_out, dt, None)
    args = (W, U, bias, int(p.activation), x, _c(h0, dt), m, has_mask, bool(reverse),
            bool(zero_output), o.buf, out is not None, ho.buf)
    _run(_gen.simple_rnn_rows, _gen.simple_rnn_par, B, B * T * H * (D + H), args)
    o.finish()
    ho.finish()


def gru(packed, x, h0, mask, reverse, zero_output, out, h_out):
    p = packed.params
    dt = packed.dtype
    x = _c(x, dt)
    B, T, D = x.shape
    H = p.units
    m, has_mask = _mask(mask)
    o = _Out(out, dt, (1, 1, 1))
    ho = _Out(h_out, dt, None)
    work = 3 * B * T * H * (D + H)
    if packed.packed:
        Wp, bp = packed.arrays
        args = (True, Wp, bp, _NO_PEEP, False, -1.0, int(p.activation),
                int(p.recurrent_activation), H, x, _c(h0, dt), _NO_C, m, has_mask,
                bool(reverse), bool(zero_output), o.buf, out is not None, ho.buf, _NO_C,
                Wp.nbytes > _HOIST_MIN_BYTES)
        _run_packed(B, T, H, work, args)
    else:
        W, U, bias = packed.arrays
        args = (W, U, bias, int(p.activation), int(p.recurrent_activation),
                bool(p.reset_after), x, _c(h0, dt), m, has_mask, bool(reverse),
                bool(zero_output), o.buf, out is not None, ho.buf)
        _run(_gen.gru_rows, _gen.gru_par, B, work, args)
    o.finish()
    ho.finish()


def lstm(packed, x, h0, c0, mask, reverse, zero_output, out, h_out, c_out):
    p = packed.params
    dt = packed.dtype
    x = _c(x, dt)
    B, T, D = x.shape
    H = p.units
    m, has_mask = _mask(mask)
    o = _Out(out, dt, (1, 1, 1))
    ho = _Out(h_out, dt, None)
    co = _Out(c_out, dt, None)
    work = 4 * B * T * H * (D + p.output_size)
    if packed.packed:
        Wp, bp, peep = packed.arrays
        args = (False, Wp, bp, peep, p.peepholes is not None, _limit(p.cell_clip),
                int(p.activation), int(p.recurrent_activation), H, x, _c(h0, dt), _c(c0, dt),
                m, has_mask, bool(reverse), bool(zero_output), o.buf, out is not None,
                ho.buf, co.buf, Wp.nbytes > _HOIST_MIN_BYTES)
        _run_packed(B, T, H, work, args)
    else:
        W, U, bias, peep, proj = packed.arrays
        args = (W, U, bias, int(p.activation), int(p.recurrent_activation),
                float(p.forget_bias), peep, p.peepholes is not None, _limit(p.cell_clip),
                proj, p.projection is not None, _limit(p.proj_clip), x, _c(h0, dt),
                _c(c0, dt), m, has_mask, bool(reverse), bool(zero_output), o.buf,
                out is not None, ho.buf, co.buf)
        _run(_gen.lstm_rows, _gen.lstm_par, B, work, args)
    o.finish()
    ho.finish()
    co.finish()


# ---------------------------------------------------------------- warmup


def warmup(verbose=False):
    """Compile (or load from Numba's cache) the common kernels: LSTM and GRU
    in float32 and float64, SimpleRNN, on one thread and on two (rows split
    and panels split)."""
    global _MIN_PARALLEL_WORK, _MIN_SPLIT_STEP_WORK
    from . import GRUParams, LSTMParams, SimpleRNNParams, run

    rng = np.random.default_rng(0)
    done = []
    saved = (_MIN_PARALLEL_WORK, _MIN_SPLIT_STEP_WORK, _max_threads)
    _MIN_PARALLEL_WORK = _MIN_SPLIT_STEP_WORK = 0
    try:
        for dt in (np.float32, np.float64):
            D, H, T = 3, 20, 2

            def r(*shape):
                return (rng.standard_normal(shape) * 0.1).astype(dt)

            configs = [
                LSTMParams(r(D, 4 * H), r(H, 4 * H), r(4 * H)),
                GRUParams(r(D, 3 * H), r(H, 3 * H), r(2, 3 * H)),
                GRUParams(r(D, 3 * H), r(H, 3 * H), r(2, 3 * H), reset_after=False),
                SimpleRNNParams(r(D, H), r(H, H), r(H)),
            ]
            for params in configs:
                pk = pack(params)
                for B, threads in ((2, 1), (2, None), (_BATCH_SPLIT_MIN, None)):
                    set_num_threads(threads)
                    x = r(B, T, D)
                    states = [np.zeros((B, s), dt) for s in _state_sizes(params)]
                    outs = [np.empty_like(s) for s in states]
                    run(sys.modules[__name__], pk, x, states, None, False, False,
                        np.empty((B, T, params.output_size), dt), outs)
                done.append(f"{params.kind} {np.dtype(dt).name}")
                if verbose:
                    print(f"warmup: {done[-1]}", file=sys.stderr)
    finally:
        _MIN_PARALLEL_WORK, _MIN_SPLIT_STEP_WORK, restore = saved
        set_num_threads(restore)
    return done


def _state_sizes(params):
    from . import state_sizes

    return state_sizes(params)


def warmup_main(argv=None):
    """``python -m fastrnn warmup``: fill Numba's cache with the common kernels."""
    import argparse
    import time

    parser = argparse.ArgumentParser(prog="python -m fastrnn warmup",
                                     description=warmup.__doc__)
    parser.add_argument("-q", "--quiet", action="store_true")
    opts = parser.parse_args(argv)
    t0 = time.perf_counter()
    done = warmup(verbose=not opts.quiet)
    from . import _stream

    _stream.warmup()  # the per-frame kernels of layer.stream()
    print(f"compiled or loaded {len(done)} kernels and the stream kernels in {time.perf_counter() - t0:.1f} s "
          f"(cache: {numba.config.CACHE_DIR or 'next to the sources (__pycache__)'}; "
          f"threading layer: {threading_layer()})")
    return 0
