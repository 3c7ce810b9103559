"""How a CPU kernel call uses the cores: one thread, rows split, or panels split.

Batch rows are independent for the whole sequence, so a call with
:data:`_BATCH_SPLIT_MIN` rows or more splits the batch between threads (at
most :func:`get_num_threads`) and the threads never meet until the end:
nothing spins at a barrier, which keeps the engine robust when another
process is busy on the same cores. Smaller batches, and packed weights too
large to stay in the cores' caches (:data:`_ROW_SPLIT_MAX_BYTES`), share
each step's panels between two threads instead (:mod:`.split`), started by
one parallel launch per sequence on Numba's pool (``split_par``), or, under
the ``workqueue`` layer, by :class:`_Helper`; the calling thread never
waits for the other to arrive and takes its panels over when it lags. For
8-31 rows with weights past :data:`_TUNE_MIN_BYTES`, where neither split
wins on every machine, a shape's first calls time both and keep the
faster, and time them again now and then (:data:`_RETUNE_CALLS`). Small
calls (and calls made while another thread of the process is already
inside a parallel kernel) run on the calling thread alone. Both splits
give the same bits: every tile sums a row's products in one order.

Contention: a two-thread call whose helper ran far less than its share, or
whose calling thread spent long off its core, is a sign that another
process has the other core; the process then runs one thread per call for
a while (:data:`_CONTENDED_PAUSE`, doubling while it lasts, up to
:data:`_CONTENDED_PAUSE_MAX`). ``python -m fastrnn bench --contention``
measures this.

The thresholds below were measured with ``python -m fastrnn bench`` on
2-core machines; ``docs/internals.md`` says how.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import weakref

import numpy as np
import numba

from . import generic, packed, split
from .sync import HAVE_FUTEX

# Work (multiply-adds per call) below which a second thread costs more than
# it saves (waking a sleeping pool thread takes ~10-50 us).
_MIN_PARALLEL_WORK = 2_000_000
# Batches from this size up are split by rows (no synchronisation at all);
# smaller ones share each step's panels between two threads.
_BATCH_SPLIT_MIN = 8
# ... unless the packed weights exceed this many bytes: they no longer stay
# in the cores' caches between steps, and with rows split each thread
# streams all of them every step, with panels split only its half.
_ROW_SPLIT_MAX_BYTES = 2 << 20
# A single row whose packed weights exceed this many bytes hoists its input
# sums (see packed.HOIST_STEPS); it pays at every size measured, so 0.
_HOIST_MIN_BYTES = 0
# Panel split: one claim takes at most this much work (multiply-adds, ~20
# us of one core), so a thread that loses its core holds back little.
_CLAIM_WORK = 2_000_000
# Panel split: when the helper ran less than this share of its half (it
# joined late or lost its core to another process), the machine is busy:
# use one thread for _CONTENDED_PAUSE seconds (doubling while it lasts).
_STARVED = 0.5
# ... or when the calling thread spent this long (and half the call) off its
# core: with a busy process beside it, a pool launch's join can wait a
# whole scheduler slice for the other thread. (Waking a pool thread that
# slept through a pause can take up to ~1 ms on a VM: not contention.)
_STALL_MIN = 0.002
_CONTENDED_PAUSE = 0.005  # doubled at each starved call in a row, up to the max
_CONTENDED_PAUSE_MAX = 4.0
# Row-split calls with less work than this (multiply-adds; ~10 ms of one
# core) watch for the same stall and take one thread while the machine is
# busy. Longer calls keep both threads: one scheduler slice is a small part
# of them.
_CONTENDED_ROWS_WORK = 2_000_000_000
_contended_pause = _CONTENDED_PAUSE
_contended_until = 0.0
# The band where neither split wins on every machine: batches below
# _TUNE_MAX_B rows whose packed weights pass _TUNE_MIN_BYTES (with rows
# split, each core's L2 must hold all of them; with panels split, half).
# A shape's first 2 x (_TUNE_SAMPLES + 1) calls alternate between the
# splits (each one's first call is not counted) and the rest take the one
# with the faster call per step.
_TUNE_MIN_BYTES = 640 << 10
_TUNE_MAX_B = 32
_TUNE_SAMPLES = 3
_TUNE_MAX_SHAPES = 256
# A shape's kept split is timed again after this many calls of the shape
# (a machine busy while its first calls were timed must not keep it on the
# slower split for good), then after twice as many while the same split
# wins, up to _RETUNE_MAX_CALLS; back to the first interval when the other
# wins. A round is 2 x (_TUNE_SAMPLES + 1) calls, half of them on the
# slower split.
_RETUNE_CALLS = 200
_RETUNE_MAX_CALLS = 12_800
#: shape key -> _Timing (its splits being timed) or _Kept (the split chosen)
_tuning = {}


class _Timing:
    """A shape's splits being timed: each one's per-step times, and the
    split kept before this round with its interval (None in the first)."""

    __slots__ = ("times", "before", "every")

    def __init__(self, before=None, every=None):
        self.times = {"rows": [], "panels": []}
        self.before, self.every = before, every


class _Kept:
    """A shape's chosen split, the calls left before it is timed again,
    and the interval that set them."""

    __slots__ = ("split", "left", "every")

    def __init__(self, split, every):
        self.split, self.left, self.every = split, every, every
# Panel split only when a step has this much work (multiply-adds): below,
# meeting the other thread every step costs more than it saves.
_MIN_SPLIT_STEP_WORK = 20_000
# Panel split: pause-spins a thread waits for the other before it takes over
# the rest of the sequence alone (see split._wait_done).
_SPINS = split.DEFAULT_SPINS
_HAVE_FUTEX = HAVE_FUTEX

_max_threads = None
_parallel_lock = threading.Lock()

# Numba's pool size is fixed once the process starts (and reading
# numba.config costs microseconds: not per call).
_NUMBA_THREADS = int(numba.config.NUMBA_NUM_THREADS)


def prefer_omp():
    """Prefer the OpenMP threading layer when the user chose none.

    A parallel launch costs ~1 us under ``omp`` and ~80 us under
    ``workqueue`` (which is also not thread-safe); ``tbb`` comes second.
    Only the order of preference changes, and only when neither
    ``NUMBA_THREADING_LAYER`` nor ``NUMBA_THREADING_LAYER_PRIORITY`` is set;
    it must happen before Numba's first parallel launch.
    """
    if os.environ.get("NUMBA_THREADING_LAYER") or os.environ.get("NUMBA_THREADING_LAYER_PRIORITY"):
        return
    if numba.config.THREADING_LAYER == "default":
        numba.config.THREADING_LAYER_PRIORITY = ["omp", "tbb", "workqueue"]


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
    _max_threads = min(int(n), _NUMBA_THREADS)


def get_num_threads():
    """The most threads one kernel call uses."""
    return _NUMBA_THREADS if _max_threads is None else _max_threads


class _Warming(threading.local):
    """:func:`warming`'s setting, per thread: the threads this thread's
    calls take whatever their size (None: not warming up)."""

    threads = None


_warming = _Warming()


@contextlib.contextmanager
def warming(n):
    """In the block, the calls this thread makes (and no other thread's)
    take ``n`` threads (``None``: Numba's whole pool) however small they
    are, whatever the contention rule says, and record nothing in it;
    where the other threads of the process hold the parallel lock, they
    wait for it. :func:`fastrnn.kernels.cpu.warmup` runs small calls this
    way, so that each of the kernels it compiles runs: nothing another
    thread sees (:func:`get_num_threads`, the work thresholds, the
    contention period) changes."""
    before = _warming.threads
    _warming.threads = _NUMBA_THREADS if n is None else max(1, min(int(n), _NUMBA_THREADS))
    try:
        yield
    finally:
        _warming.threads = before


def _call_limits():
    """``(threads, least work to use two, least work per step to split
    panels, warming)`` of a call made now by this thread (see :func:`warming`)."""
    warm = _warming.threads
    if warm is None:
        return _pool_threads(), _MIN_PARALLEL_WORK, _MIN_SPLIT_STEP_WORK, False
    return (1 if _POOL_FORKED else warm), 0, 0, True


def threading_layer(start=False):
    """The Numba threading layer in use.

    ``None`` before the first parallel call, unless ``start`` is true: then
    a tiny parallel kernel (from Numba's cache) starts the pool first.
    """
    if start:
        _start_pool()
    try:
        return numba.threading_layer()
    except Exception:  # ValueError: not initialised yet
        return None


_LAYER = None  # the threading layer, once fastrnn started the pool
# libgomp's idle threads spin GOMP_SPINCOUNT rounds before they sleep
# (default 300,000: milliseconds). With another busy process on the cores,
# the caller then spins at the end of a parallel launch while the thread it
# waits for has no core. 1,000 rounds keep back-to-back calls warm and make
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
    if _LAYER is not None:
        return _LAYER
    ours = "GOMP_SPINCOUNT" not in os.environ and "OMP_WAIT_POLICY" not in os.environ
    if ours:
        os.environ["GOMP_SPINCOUNT"] = _GOMP_SPINCOUNT
    try:
        generic.touch_pool(np.zeros(2))
    finally:
        if ours:
            os.environ.pop("GOMP_SPINCOUNT", None)
    _LAYER = numba.threading_layer()
    return _LAYER


#: (process id, calling thread's id) -> [the other threads of the pool it
#: launches on, the CPU they were last placed away from]
_pools = {}


def _place_pool():
    """Keep the pool's other threads off the calling thread's CPU (Linux).

    A pool thread that sleeps between calls is woken by the caller, and the
    scheduler may wake it on the caller's CPU and leave it there: the two
    threads then take turns on one CPU while the other idles, and a call
    on two threads takes as long as on one (the contention rule does not
    see it: the caller never leaves its core). So the pool's other threads
    may use every CPU the caller may but its own, set again whenever the
    caller has moved, where there are fewer of them than the caller's CPUs
    (with more, the scheduler places them). Under the ``omp`` layer each calling thread has a
    team of its own, so the pool is found per calling thread. (The stream
    splits place their helpers the same way: ``StreamSplit._place``.)
    """
    me = threading.get_native_id()
    key = (os.getpid(), me)  # (a forked child has a new pool)
    pool = _pools.get(key)
    if pool is None:
        if len(_pools) >= 64:  # (callers come and go: forget them all)
            _pools.clear()
        ids = np.full(numba.config.NUMBA_NUM_THREADS, -1, dtype=np.int64)
        generic.pool_threads(ids)
        pool = _pools[key] = [tuple(int(t) for t in ids if t > 0 and t != me), None]
    tids, placed = pool
    if not tids:
        return
    if len(tids) >= len(os.sched_getaffinity(0)):
        # More pool threads than the caller's other CPUs (NUMBA_NUM_THREADS
        # above the CPU count): kept off one CPU they would share the rest,
        # and a call's rows would wait on them. Left to the scheduler.
        pool[0] = ()
        return
    here = generic.here()
    if here == placed:
        return
    try:
        _keep_off(tids, here, None)
        pool[1] = here
    except (AttributeError, OSError):
        pool[0] = ()  # no affinity here, or a pool thread has ended: leave them be


def _keep_off(tids, here, placed):
    """Let the threads ``tids`` use every CPU the calling thread may but
    ``here`` (the one it runs on), unless that is ``placed`` (the set they
    were given last). Returns the set they have now (``placed`` where the
    caller has no other CPU). Raises OSError where a thread has ended, or
    AttributeError without affinity (not Linux)."""
    allowed = os.sched_getaffinity(0)
    others = allowed - {here}
    if here not in allowed or not others or others == placed:
        return placed
    for tid in tids:
        os.sched_setaffinity(tid, others)
    return others


def _bounds(B, work):
    """Row bounds for the threads of one call: an int64 array of n+1 edges."""
    threads, min_work, _, _ = _call_limits()
    n = min(threads, B)
    if n <= 1 or work < min_work:
        return None
    # even shares: the packed tiles take 6, 4, 2 or 1 rows, so no multiple
    # suits every batch
    edges = [(B * c) // n for c in range(n)]
    edges.append(B)
    return np.asarray(edges, dtype=np.int64)


def run_generic(serial, parallel, B, work, args):
    """Call ``parallel(bounds, *args)`` on several threads, or ``serial(0, B, *args)``."""
    bounds = _bounds(B, work)
    if bounds is not None and _parallel_lock.acquire(blocking=_warming.threads is not None):
        # One parallel kernel at a time per process: a second caller thread
        # runs on its own core instead of doubling the thread count (and the
        # workqueue layer cannot run two parallel regions at once at all).
        try:
            _start_pool()
            _place_pool()
            parallel(bounds, *args)
            return
        finally:
            _parallel_lock.release()
    serial(0, B, *args)


class _Helper:
    """The second thread of the panel split under the ``workqueue`` layer
    (where a parallel launch costs ~80 us): a daemon thread that runs
    ``split.split_work(1, ...)`` on the job it is handed. The caller never
    waits for it (see :mod:`.split`): a helper that wakes up late finds the
    job finished and goes back to sleep."""

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
            split.split_work(1, *job)


_helper = _Helper()


def _run_split(T, args):
    """A panel-split call: this thread and the helper share each step's
    panels. Returns (panels the helper ran, the step it joined at or -1,
    whether the caller had to take over from it)."""
    gru, H, weights, gates, io, opts = args
    x, h0, c0 = io[0], io[1], io[2]
    h_out, c_out = io[7], io[8]
    hf, cb, P = split.split_prepare(gru, H, h0, c0, opts[2])
    sync = np.zeros(split.SYNC_SIZE, dtype=np.int64)
    sync[split.SPINS], sync[split.CHUNK] = _claims(x.shape, H, gru, _CLAIM_WORK)
    sync[split.JOIN] = -1
    work = (sync, gru, H, weights, gates, io, opts, hf, cb, P)
    if _start_pool() in ("omp", "tbb"):
        _place_pool()
        split.split_par(*work)
    else:  # workqueue: a parallel launch costs ~80 us; wake our own thread instead
        _helper.submit(work)
        split.split_work(0, *work)
    split.split_finish(gru, H, T, hf, cb, h_out, c_out)
    # the sync counters are complete once every panel is done (the helper
    # may still be on its way out under workqueue)
    return int(sync[split.COUNT + 8]), int(sync[split.JOIN]), bool(sync[split.ABANDON])


def _claims(shape, H, gru, claim_work):
    """The panel split's spin limit and claim size for calls of input
    ``shape`` ``(B, T, D)``: a waiting thread spins for about ten panels'
    time (a pause-spin takes ~20-40 ns; a core does ~10^5 multiply-adds per
    us), and one claim takes at most ``claim_work`` multiply-adds."""
    panel_work = shape[0] * (shape[2] + H) * (48 if gru else 64)
    return max(_SPINS, panel_work // 230), max(1, claim_work // panel_work)


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
    """The split a call of shape ``key`` takes and whether it is timed:
    while the shape is being timed, whichever has fewer timings; then the
    one with the lower time, until it is timed again (``_RETUNE_CALLS``)."""
    got = _tuning.get(key)
    if got is None:
        if len(_tuning) >= _TUNE_MAX_SHAPES:  # a server cycling through shapes
            _tuning.clear()
        got = _tuning[key] = _Timing()
    elif isinstance(got, _Kept):
        got.left -= 1
        if got.left >= 0:
            return got.split, False
        got = _tuning[key] = _Timing(got.split, got.every)
    # rows, panels, panels, rows, rows, ...: each split runs as often first
    # as second of a pair (a call right after a pause, or after other work
    # evicted the weights from cache, is slower than the next one)
    n = len(got.times["rows"]) + len(got.times["panels"])
    return ("rows" if n % 4 in (0, 3) else "panels"), True


def _tune_record(key, split_name, per_step):
    got = _tuning.get(key)
    if not isinstance(got, _Timing):
        return
    times = got.times
    times[split_name].append(per_step)
    # each split's first call is left out: it may have compiled or loaded
    # the kernel, started the pool, or brought the weights into cache
    if min(len(v) for v in times.values()) > _TUNE_SAMPLES:
        # the fastest call of each: noise (interrupts, a preempted thread)
        # only ever adds time
        best = min(times, key=lambda k: min(times[k][1:]))
        every = _RETUNE_CALLS if got.before != best else min(2 * got.every, _RETUNE_MAX_CALLS)
        _tuning[key] = _Kept(best, every)


def tuned_splits():
    """The splits chosen so far for shapes in the band where neither always
    wins: ``{(cell, B, D, H, T_min, T_max, weights): "rows" | "panels"}``
    (``weights``: the packed format, ``"float32"`` or a mode of
    :func:`fastrnn.kernels.quantize`: each format is timed on its own, since
    narrower weights move the balance between the splits); sequence lengths
    are timed in ranges ``2**k .. 2**(k+1) - 1`` (a short call spends more of
    its time starting threads). A shape timed again (see ``_RETUNE_CALLS``)
    shows the split it keeps until then; shapes timed for the first time
    are left out."""
    chosen = {k: v.split if isinstance(v, _Kept) else v.before for k, v in _tuning.items()}
    return {("gru" if k[0] else "lstm", k[1], k[2], k[3], 1 << (k[4] - 1), (1 << k[4]) - 1,
             k[5]): v
            for k, v in chosen.items() if v is not None}


# The weight format of packed panels, by their dtype (see .packed).
_PANEL_FORMATS = {np.dtype(np.float32): "float32", np.dtype(np.uint16): "bfloat16",
                  np.dtype(np.int8): "int8", np.dtype(np.int32): "int8_dynamic",
                  np.dtype(np.uint32): "bfloat16_dynamic"}


def run_packed(B, T, D, H, work, args):
    """Run a packed (float32 LSTM/GRU) call: rows split between threads for
    large batches, panels split for small ones and for weights too large to
    stay in cache, or one thread; in between, whichever measured faster.

    ``args = (gru, H, weights, gates, io, opts)``, the drivers' arguments
    (:mod:`.packed`).
    """
    threads, min_work, min_step, warm = _call_limits()
    gru, weights = args[0], args[2]
    if threads >= 2 and work >= min_work:
        NP = (H + packed.LANES - 1) // packed.LANES
        can_split = (NP >= 2 and _HAVE_FUTEX and T * NP < 2**30
                     and work >= min_step * T)
        # (while the machine looks busy, large batches keep the row split:
        # its threads never wait for each other; short calls take one thread,
        # since the launch's join could wait a scheduler slice for a thread
        # that has no core)
        nbytes = weights[0].nbytes
        contended = not warm and _contended()
        rows = B >= _BATCH_SPLIT_MIN and (nbytes <= _ROW_SPLIT_MAX_BYTES or contended or not can_split)
        tune = None
        if (rows and can_split and not contended and not warm and threads == 2 and B < _TUNE_MAX_B
                and nbytes > _TUNE_MIN_BYTES):
            tune = (bool(gru), B, D, H, T.bit_length(), _PANEL_FORMATS[weights[0].dtype])
            split_name, timing = _tune_pick(tune)
            rows = split_name == "rows"
            if not timing:
                tune = None
        if rows:
            bounds = _bounds(B, work)
            if (bounds is not None and (work >= _CONTENDED_ROWS_WORK or not contended)
                    and _parallel_lock.acquire(blocking=warm)):
                try:
                    _start_pool()
                    _place_pool()
                    wall, cpu_t = time.perf_counter(), time.thread_time()
                    packed.run_rows_par(bounds, *args)  # folded projection
                    wall, cpu_t = time.perf_counter() - wall, time.thread_time() - cpu_t
                finally:
                    _parallel_lock.release()
                stalled = _stalled(wall, cpu_t)
                if work < _CONTENDED_ROWS_WORK and not warm:
                    _note_contention(stalled)
                if tune is not None and not stalled:
                    _tune_record(tune, "rows", wall / T)
                return
        if can_split and not contended and _parallel_lock.acquire(blocking=warm):
            try:
                wall, cpu_t = time.perf_counter(), time.thread_time()
                helper, joined, abandoned = _run_split(T, args)
                wall, cpu_t = time.perf_counter() - wall, time.thread_time() - cpu_t
            finally:
                _parallel_lock.release()
            # The helper lost its core to another process: the caller had to
            # take a panel over from it, or, once it joined, it ran less than
            # _STARVED of its share; or the calling thread spent long off its
            # core (waiting at the launch's join for a thread that had no
            # core). Run on one thread for a while instead. (A helper that
            # joined late, or never in a short call, because its thread was
            # asleep is no sign of contention.)
            starved = _stalled(wall, cpu_t) or split.helper_starved(NP, T, helper, joined,
                                                                     abandoned, _STARVED)
            if not warm:
                _note_contention(starved)
            if tune is not None and not starved:
                _tune_record(tune, "panels", wall / T)
            return
    packed.run_rows(0, B, *args)


# A stream's split: pause-spins its helper waits for the next call before it
# sleeps (~0.2-0.3 ms; calls made back to back find it awake) ...
_STREAM_SPINS = 8000
# ... and claims at most this much work at a time (multiply-adds, ~2 us of
# one core): a frame is short, and a helper on a slow or shared core must
# leave most of its half to the caller
_STREAM_CLAIM_WORK = 150_000
# starved calls in a row (see StreamSplit._judge) that make the machine look
# busy, and for how long at first (seconds)
_STREAM_STARVED_RUN = 3
_STREAM_PAUSE = 0.0005
# rung calls between two checks that the helper is not on the caller's CPU
_PLACE_EVERY = 1024
# calls started by every stream split of the process (see split.stream_helper)
_FRAMES = np.zeros(8, dtype=np.int64)
# this process's id, kept by a fork hook: a stream split compares it with its
# helper's on every call, and os.getpid() costs a system call
_PID = os.getpid()


# A child forked after its parent ran a parallel launch under GNU OpenMP
# must not launch again (libgomp is not fork-safe: Numba terminates the
# child). Its calls then take one thread; the streams' helper threads are
# not OpenMP's and still run.
_POOL_FORKED = False


def _pool_threads():
    """The threads a call may take from Numba's pool (see _POOL_FORKED)."""
    return 1 if _POOL_FORKED else get_num_threads()


def _gnu_openmp_started():
    try:
        if numba.threading_layer() != "omp":
            return False
        from numba.np.ufunc import omppool
        return getattr(omppool, "openmp_vendor", "GNU") == "GNU"
    except Exception:  # ValueError: no parallel launch yet; ImportError: no omp pool
        return False


def _forked():
    global _PID, _POOL_FORKED
    _PID = os.getpid()
    _POOL_FORKED = _POOL_FORKED or _gnu_openmp_started()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forked)


class StreamSplit:
    """A stream's calls of one shape (a frame, or a chunk of ``T`` steps;
    ``batch_size`` rows below :data:`_BATCH_SPLIT_MIN`) on two cores: the
    panel split of :mod:`.split`, with its helper in a thread of its own
    that waits for the next call instead of a pool launch per call
    (:func:`split.stream_run`).

    ``args`` are the packed drivers' arguments for a ``(B, T, D)`` call
    whose input buffer is ``args[4][0]`` (``(B, T, Dp)``: ``x`` as the
    drivers read it, ``D`` float32 inputs, see :func:`split.stream_run`)
    and whose states are read from and written to the same arrays; they
    are fixed for the object's life.
    The helper thread starts at the first call (again in a forked child),
    kept off the caller's CPU (:meth:`_place`), and stops when the object
    is collected or the process exits. Calls run alone while
    :func:`get_num_threads` is 1 and while the machine looks busy (the
    batch engine's contention period, or this split's own: :meth:`_judge`),
    and a call never waits for the helper to arrive.
    """

    def __init__(self, args, D=None):
        gru, H, weights, gates, io, opts = args
        x, h0, c0 = io[0], io[1], io[2]
        self.T = x.shape[1]
        self.x_shape = x.shape if D is None else x.shape[:2] + (D,)
        self.args = args
        self.NP = (H + packed.LANES - 1) // packed.LANES
        self.hf, self.cb, self.P = split.split_prepare(gru, H, h0, c0, opts[2])
        self.sync = np.zeros(split.SYNC_SIZE, dtype=np.int64)
        self.spins, self.chunk = _claims(x.shape, H, gru, _STREAM_CLAIM_WORK)
        self._flat = split.flat_args(self.spins, self.chunk, *args, self.hf, self.cb, self.P)
        self._h = io[7]
        self._jobs = ((self.sync,) + args + (self.hf, self.cb, self.P),)
        self._init_helper()

    def _init_helper(self):
        """The helper's bookkeeping, before its thread first starts."""
        self.solo = np.zeros(split.SYNC_SIZE, dtype=np.int64)
        self.bell = np.zeros(split.BELL_SIZE, dtype=np.int64)
        self._pid = None
        self._finalizer = None
        self._tid, self._placed, self._calls = None, None, 0
        self._starved, self._busy_until, self._pause = 0, 0.0, _STREAM_PAUSE

    def _helper_job(self, bell):
        """The helper thread's function and arguments, rung on ``bell``
        (``_jobs``: per layer, the helper's share of its split)."""
        return split.stream_helper, (bell, _FRAMES, _STREAM_SPINS, self._jobs)

    def _start(self):
        if self._finalizer is not None:
            self._finalizer.detach()  # (a forked child: the parent's thread is not here)
        self._pid = _PID
        bell = self.bell = np.zeros(split.BELL_SIZE, dtype=np.int64)
        target, job = self._helper_job(bell)
        thread = threading.Thread(target=target, args=job, name="fastrnn-stream", daemon=True)
        thread.start()
        self._finalizer = weakref.finalize(self, _stop_helper, bell, thread)
        self._tid, self._placed, self._calls = thread.native_id, None, 0
        self._place()

    def _place(self):
        """Keep the helper off the calling thread's CPU (Linux).

        A new thread may start on its creator's CPU, and a helper that
        spins beside the caller on one CPU (the other idle) halves both; on
        the 2-vCPU machines measured, the scheduler left such a pair
        together for seconds, and put a freed helper back beside the caller.
        So the helper may use every CPU the process may but the caller's,
        checked again every :data:`_PLACE_EVERY` calls and at every call
        that had to wake the helper (the caller may move)."""
        if self._tid is None:
            return
        try:
            self._placed = _keep_off((self._tid,), generic.here(), self._placed)
        except (AttributeError, OSError):
            self._tid = None  # no affinity here, or the thread has ended: leave it be

    def _free(self):
        """Two threads allowed, and the machine not busy (for the batch
        engine, or for this split: :meth:`_judge`)."""
        now = time.monotonic()
        return get_num_threads() >= 2 and now >= _contended_until and now >= self._busy_until

    def ready(self):
        """Whether the next call would share its panels with the helper:
        :meth:`_free`, and the helper (if started) done with its last call. A
        caller with a faster one-core kernel runs that instead when not."""
        bell = self.bell
        return self._free() and (self._pid != _PID
                                 or bell[split.BELL_ACK] == bell[split.BELL_GEN])

    def run(self, x, ready=False, y=None):
        """One call ``x (B, T, D)`` (float32, C-contiguous); the states named
        in ``args`` hold the new state (and its output buffer every step's
        output, if it has one), and ``y (B, units)``, if given, the new
        ``h``. Returns the helper's panel count (``-1``: it was not rung).
        ``ready``: the caller has just seen :meth:`ready` true (its checks
        are not made again)."""
        ring = ready or self._free()
        if ring and self._pid != _PID:
            self._start()
        return self._judge(split.stream_run(self.bell, _FRAMES, ring, x,
                                            self._h if y is None else y, self.sync, self.solo,
                                            _STARVED, *self._flat))

    def _judge(self, told):
        """The contention rule of the batch split, for a call that rang the
        helper (``told``: :func:`split.outcome`), kept per split: one call
        is short, so only :data:`_STREAM_STARVED_RUN` starved calls in a
        row (or one the caller had to take over) make the machine look
        busy, and then for :data:`_STREAM_PAUSE` (doubling while it lasts,
        up to :data:`_CONTENDED_PAUSE_MAX`): another program's threads that
        spin for a moment after their own work should not cost a stream
        many calls on one core. A helper that had to be woken joins late
        and tells nothing. Returns the helper's panel count (-1: not
        rung)."""
        if not told:
            return -1
        self._calls += 1
        # (a helper that had to be woken may share the caller's CPU: the
        # caller moved onto it, and the helper, spinning there after the
        # last call, kept it from running until it slept; so look again)
        if told & 3 == 2 or self._calls % _PLACE_EVERY == 0:
            self._place()
        if told & 15 == 1:  # rung awake, not starved: the common case
            self._starved = 0
            self._pause = _STREAM_PAUSE
        elif told & 3 == 1:
            self._starved += 1
            if told & 8 or self._starved >= _STREAM_STARVED_RUN:
                self._starved = 0
                self._busy_until = time.monotonic() + self._pause
                self._pause = min(2 * self._pause, _CONTENDED_PAUSE_MAX)
        return told >> 4

    def compile(self):
        """Compile (or load from Numba's cache) both sides' kernels: runs one
        zero call alone and a helper that finds itself stopped."""
        stopped = np.zeros(split.BELL_SIZE, dtype=np.int64)
        stopped[split.BELL_STOP] = 1
        target, job = self._helper_job(stopped)
        target(*job)
        x = np.zeros(self.x_shape, dtype=np.float32)
        split.stream_run(self.bell, _FRAMES, False, x, self._h, self.sync, self.solo, _STARVED,
                         *self._flat)

    def close(self):
        """Stop the helper thread now (a later call starts a new one)."""
        if self._finalizer is not None:
            self._finalizer()
        self._pid = None


def _stop_helper(bell, thread):
    bell[split.BELL_STOP] = 1
    split.wake(bell)
    thread.join(timeout=1.0)


class StackSplit(StreamSplit):
    """A stacked stream's calls of one shape on two cores: each layer's
    panel split in turn (the layers' packed drivers' arguments
    ``layer_args``, one weight format for all), every layer's input buffer
    the output buffer of the layer before (for the dynamic formats, a
    buffer the caller quantizes, or rounds, that output into), with one
    helper thread for all layers (:func:`split.stream_helper`): it runs its
    share of a layer as soon as the caller has handed the layer before's
    output over. Otherwise as
    :class:`StreamSplit` (the same contention rule, judged over the
    layers, and the same placement)."""

    def __init__(self, layer_args, D=None):
        self.layer_args = layer_args
        self.args = layer_args[-1]  # (the last layer's: the stack's output)
        self._h = self.args[4][7]
        x = layer_args[0][4][0]
        self.T = x.shape[1]
        self.x_shape = x.shape if D is None else x.shape[:2] + (D,)
        self._init_helper()
        self.parts = []
        for gru, H, weights, gates, io, opts in layer_args:
            hf, cb, P = split.split_prepare(gru, H, io[1], io[2], opts[2])
            spins, chunk = _claims(io[0].shape, H, gru, _STREAM_CLAIM_WORK)
            sync = np.zeros(split.SYNC_SIZE, dtype=np.int64)
            self.parts.append({
                "NP": (H + packed.LANES - 1) // packed.LANES, "sync": sync, "xb": io[0],
                "job": (sync, gru, H, weights, gates, io, opts, hf, cb, P),
                # (as the layer before's next: its input buffer is loaded from
                # that layer's output where the format quantizes, or rounds, it)
                "next": (sync, spins, chunk, gru, H, hf, cb, io[1], io[2], io[0], io[9],
                         io[0].dtype != np.float32),
                "flat": split.flat_args(spins, chunk, gru, H, weights, gates, io, opts, hf, cb,
                                        P)})
        # per layer, stack_run's arguments after (bell, frames, ring, first, x,
        # y): its sync array and the solo one, then (after starved) the next
        # layer's (the last: its own, unused) and its own flat arguments
        self._jobs = tuple(p["job"] for p in self.parts)
        n = len(self.parts)
        self._calls_args = [((p["sync"], self.solo), self.parts[min(k + 1, n - 1)]["next"]
                             + (k + 1 < n,) + p["flat"]) for k, p in enumerate(self.parts)]

    def run(self, x, ready=False, y=None):
        """As :meth:`StreamSplit.run`: one call ``x (B, T, D)`` through every
        layer; the last layer's states (and output buffer) hold its result,
        and ``y``, if given, its new ``h``. The contention rule judges the
        call over its layers: the panels the helper ran in all of them, and
        starved in any."""
        ring = ready or self._free()
        if ring and self._pid != _PID:
            self._start()
        bell, y = self.bell, self._h if y is None else y
        head, rest = self._calls_args[0]
        told = split.stack_run(bell, _FRAMES, int(ring), True, x, y, *head, _STARVED, *rest)
        rung = told & 3
        for k in range(1, len(self.parts)):
            head, rest = self._calls_args[k]
            got = split.stack_run(bell, _FRAMES, rung, False, self.parts[k]["xb"], y, *head,
                                  _STARVED, *rest)
            told = (told | (got & 12)) + ((got >> 4) << 4)
        return self._judge(told)

    def compile(self):
        """Compile (or load from Numba's cache) both sides' kernels."""
        stopped = np.zeros(split.BELL_SIZE, dtype=np.int64)
        stopped[split.BELL_STOP] = 1
        target, job = self._helper_job(stopped)
        target(*job)
        x = np.zeros(self.x_shape, dtype=np.float32)
        for k, (head, rest) in enumerate(self._calls_args):
            split.stack_run(self.bell, _FRAMES, 0, k == 0, x if k == 0 else self.parts[k]["xb"],
                            self._h, *head, _STARVED, *rest)
