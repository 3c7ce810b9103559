"""Streaming inference: one frame (or a short chunk) at a time, state carried.

``layer.stream(batch_size=1)`` returns a :class:`Stream`. A stream owns
everything a call needs, prepared once: the packed weights, the state and
work buffers, the compiled kernel and the input shape it expects. A call
checks the frame against that cached shape and dtype, runs one compiled
call for the whole stack of cells, and returns the output; nothing else
runs per call (no backend selection, no weight conversion, no allocation
beyond the output, and ``out=`` avoids even that).

Example
-------
>>> layer = fastrnn.LSTM(64)
>>> layer.build((1, None, 40))
>>> stream = layer.stream()                       # batch size 1
>>> for frame in frames:                          # frame: (1, 40) float32
...     y = stream(frame)                         # (1, 64), state carried
>>> y = stream(chunk)                             # chunk: (1, T, 40)
>>> h, c = stream.states                          # Keras order
>>> stream.save("stream.npz"); stream = fastrnn.streaming.load_stream("stream.npz")

Which kernels run
-----------------
The backend a stream is asked for is its own ``backend`` argument if
given, else the layer's ``backend`` if not ``"auto"``, else the process-wide
default (:func:`fastrnn.set_backend`, then ``FASTRNN_BACKEND``; a bad value
raises, as in a layer call) if not ``"auto"``. ``"reference"`` from any of
them, or the stream's own ``backend="cpu"``, runs the calls through the
kernel contract on that backend (the stream's own explicit ``threads=``
comes before ``"reference"`` from the layer or the default: the stream
kernels run it). Otherwise (``"auto"``, ``"cpu"`` from the layer or the
default, whose stream kernels these are, or ``"cuda"``: streams run on the
host) the stream kernels of :mod:`fastrnn.kernels.cpu.stream` (single-thread,
small-batch, vectorised gate math) run every configuration they support:
SimpleRNN, GRU (both ``reset_after``) and LSTM cells with any built-in
activation, stacked in any mix, float32 and float64. Anything else (a
Python callable as an activation, LSTM peepholes, projection or clipping,
custom cells) runs through the kernel contract on the backend ``"auto"``
picks on the host (on ``"cpu"`` where that was asked for). ``stream.backend_reason`` says which, why, and where a
named backend was asked for.

A stream packs the layer's weights when it is made, and again at its first
call after ``layer.set_weights`` (the carried state stays).

Weights too large for one core's cache: see :class:`Stream` (a stream times
the stream kernels against the batch engine on two threads and keeps the
faster). The module is long because the stream file format (``save`` /
:func:`load_stream`) and its checks live beside the class they restore.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import warnings
import weakref
import zipfile

import numpy as np

from . import _device, _engine, _safe_io, dispatch, serialization
from ._nest import flatten, numbers_hint, pack_as

__all__ = ["Stream", "StreamBusyError", "load_stream"]

_FORMAT = "fastrnn.stream/1"
_ndarray = np.ndarray
_empty = np.empty


class StreamBusyError(RuntimeError):
    """A stream was called from a second thread while a call was running."""


_BUSY = ("Stream: called while another call on the same stream is running (two threads "
         "share one stream). A stream carries one state; give each thread its own stream "
         "(layer.stream()) or serialise the calls with a lock.")


class _EngineRunner:
    """Run a stack frame by frame through the engine, on the backend the
    layer picks (or the user's cells stepped from Python).

    ``run(x, w, s, work, out, cfg)`` has the stream kernels' signature so the
    stream's call path is the same whichever runs; ``w``, ``s``, ``work``
    and ``cfg`` are unused here (everything lives on ``self``).
    """

    def __init__(self, layer, weights, choice, states):
        self.layer = layer
        self.states = states
        self.module = choice.module
        self.packs = None if weights is None else [w.packed(choice.module) for w in weights]
        self.nan_raise = layer.nan_policy == "raise"
        self.return_sequences = layer.return_sequences

    def run(self, x, w, s, work, out, cfg):
        if self.nan_raise and np.isnan(x).any():
            return 1
        frame = x.ndim == 2
        if frame:
            x = x.reshape(x.shape[0], 1, x.shape[1])
        seq_out = self.return_sequences and not frame
        layer = self.layer
        if self.packs is None:
            y, new = _engine.host_loop(layer.cell, x, None, list(self.states),
                                       layer.state_structure, False, False, seq_out, False,
                                       layer.output_size, layer.state_sizes, x.dtype)
        else:
            y, new = _engine.run_cells(self.module, self.packs, x, self.states, None, False,
                                       False, seq_out)
            if not seq_out:
                y = new[len(new) - self.packs[-1].params.n_states]
        for dst, src in zip(self.states, new):
            dst[...] = src
        out[...] = y
        return 0


class _SplitCalls:
    """Frames or chunks of a stream on two cores: the batch engine's panel
    split with a helper thread of the stream's own, awake between calls
    (:class:`fastrnn.kernels.cpu.threads.StreamSplit`, or for a stack
    :class:`~fastrnn.kernels.cpu.threads.StackSplit`, one per chunk length,
    the two used last kept), on the stream's state arrays (the output: the
    last layer's ``h``, or the buffer of every step's). A call the helper
    cannot share (the machine looks busy, one thread allowed, the helper
    still on its last call) runs on the stream kernel ``kernel`` instead,
    which is faster on one core. ``run`` has the stream kernels'
    signature, as :meth:`_EngineRunner.run`.

    ``make(T)`` builds the split for calls of ``T`` steps (``None`` where it
    cannot run them); ``sequences``: chunks return every step's output.
    """

    _KEEP = 2

    def __init__(self, make, kernel, nan_raise, sequences):
        self.make = make
        self.kernel = kernel
        self.nan_raise = nan_raise
        self.sequences = sequences
        self.splits = {}
        self.ran = False  # whether the last call shared its panels with the helper

    def _split(self, T):
        splits = self.splits
        got = splits.get(T, False)
        if got is not False:
            if len(splits) > 1 and next(reversed(splits)) != T:
                splits[T] = splits.pop(T)  # the most recently used last
            return got
        if len(splits) >= self._KEEP:  # a stream cycling through chunk lengths
            old = next(iter(splits))  # the least recently used
            if splits[old] is not None:
                splits[old].close()
            del splits[old]
        got = splits[T] = self.make(T)
        return got

    def run(self, x, w, s, work, out, cfg):
        frame = x.ndim == 2
        split = self._split(1 if frame else x.shape[1])
        self.ran = False
        if split is None or not split.ready():
            return self.kernel(x, w, s, work, out, cfg)
        if self.nan_raise and np.isnan(x).any():
            return 1
        if frame:
            self.ran = split.run(x.reshape(x.shape[0], 1, x.shape[1]), True, out) >= 0
        elif self.sequences:
            self.ran = split.run(x, True) >= 0
            out[...] = split.args[4][5]
        else:
            self.ran = split.run(x, True, out) >= 0
        return 0

    def close(self):
        """Stop the helper threads (a later call starts them again)."""
        for split in self.splits.values():
            if split is not None:
                split.close()


#: Streams whose recurrent and input weights pass this many bytes (about
#: one core's L2) time their first frames on both engines (below it, on the
#: 2-vCPU machines measured, with 1 MiB of L2 per core, the stream kernels
#: won every call).
TUNE_MIN_BYTES = 1 << 20
#: Timed frames per engine before a stream keeps one.
TUNE_SAMPLES = 8
#: The engines take turns in blocks of this many calls (the first of each
#: block is not timed).
TUNE_BLOCK = 4
#: ... and a stream keeps one after this many calls at most.
TUNE_MAX_CALLS = 200
#: Calls of a kind (frames or chunks) after which a stream times both
#: engines again: another process may have held a core while the first
#: calls were timed, and the machine may be quiet now (or busy now). The
#: interval doubles
#: each time the same engine wins, up to :data:`RETUNE_MAX_CALLS`, and
#: starts over when the other wins. A timing round costs about
#: ``2 * TUNE_BLOCK * ceil(TUNE_SAMPLES / (TUNE_BLOCK - 1))`` calls, half of
#: them on the slower engine.
RETUNE_CALLS = 500
RETUNE_MAX_CALLS = 64_000
# Batches this large split rows between threads, not panels (the stream
# kernels' rows are already independent): not tuned.
_ROWS_SPLIT = 8


def _is_one_or_two(n):
    """``threads`` of a stream: an integer (not a bool), 1 or 2."""
    return isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n in (1, 2)


def _weight_bytes(params):
    """Bytes of a layer's kernel and recurrent kernel as they count against
    :data:`TUNE_MIN_BYTES`: as the kernels hold them, except weights-only
    int8, counted as the float32 it is widened to. The stream kernels widen
    int8 weights one vector at a time (a sign extension and a convert
    each), and that arithmetic, not the cache, sets their pace well before
    the weights fill one core's L2: the two-core split, which halves it,
    won LSTM and GRU streams of H = 256 (D = H, 384-512 KiB of int8) on the
    2-vCPU machines measured."""
    q = params.quantized
    if q is not None:
        if q.mode == "int8":
            return 4 * (q.kernel.size + q.recurrent_kernel.size)
        return q.kernel.nbytes + q.recurrent_kernel.nbytes
    return np.asarray(params.kernel).nbytes + np.asarray(params.recurrent_kernel).nbytes


def _split_batch(pack):
    """The smallest batch at which the cpu batch engine runs one frame (one
    step) of a layer, ``pack`` (its weights packed for the cpu backend), on
    two threads, as its kernels decide (``threads.run_generic`` and
    ``run_packed`` in :mod:`fastrnn.kernels.cpu`), given two threads
    allowed: a call of ``_MIN_PARALLEL_WORK`` multiply-adds or more, then
    the generic kernels (SimpleRNN, ``GRU(reset_after=False)``, ...) split
    its rows, two rows or more; the packed ones each step's weight panels
    (two panels or more, a futex to meet at, ``_MIN_SPLIT_STEP_WORK`` per
    step), else its rows from ``_BATCH_SPLIT_MIN`` rows up."""
    th, p = dispatch.backend_module("cpu").threads, pack.params
    gates = {"simple_rnn": 1, "gru": 3, "lstm": 4}[p.kind]  # (the kernels' work per row)
    row = gates * p.units * (np.asarray(p.kernel).shape[0] + p.output_size)
    need = -(-th._MIN_PARALLEL_WORK // row)
    if not pack.packed:
        return max(2, need)
    if (p.units + th.packed.LANES - 1) // th.packed.LANES >= 2 and th._HAVE_FUTEX:
        return max(need, -(-th._MIN_SPLIT_STEP_WORK // row))
    return max(th._BATCH_SPLIT_MIN, need)


def _requested(layer, backend):
    """``(name, source)``: the backend a stream of ``layer`` is asked to run
    on and who asked, ``(None, "")`` for auto. The stream's own ``backend``
    if given, else the layer's if not "auto", else the process-wide default
    if not "auto" (:func:`fastrnn.dispatch.get_backend`: ``set_backend``,
    then ``FASTRNN_BACKEND``, whose bad value raises here as it does in a
    layer call), in the order a layer call reads them."""
    if backend is not None:
        return backend, _OWN
    if layer.backend_arg != "auto":
        return layer.backend_arg, "the layer's backend argument"
    default, source = dispatch._default_and_source()
    return (None, "") if default == "auto" else (default, source)


_OWN = "the stream's backend argument"


def _select(weights, requested, source):
    """:func:`_engine.select_for` of a named backend; its errors name who
    asked for it (``source``, see :func:`_requested`), not the backend
    argument of a call."""
    try:
        return _engine.select_for(weights, requested)
    except (ValueError, RuntimeError) as exc:
        if source == _OWN:
            raise
        message = str(exc).replace("requested by the backend argument",
                                   f"requested by {source}", 1)
        raise type(exc)(message) from exc


class _ThreadsError(ValueError):
    """A stream's ``threads`` it cannot run here (this layer, batch size,
    dtype or thread count): a saved stream is made again without it (see
    :func:`_with_saved_threads`)."""


_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _caller_level():
    """The ``stacklevel`` that points a warning issued by the function calling
    this at the first frame outside fastrnn: the user's line, however many
    of fastrnn's calls (``load_stream``, ``fastrnn.load``) lie between."""
    frame, level = sys._getframe(2), 2
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(_PACKAGE):
        frame, level = frame.f_back, level + 1
    return level


def _with_saved_threads(make, threads, where):
    """``make(threads)``, a stream restored from a file (``where``): the
    saved ``threads`` is a preference, so where the stream cannot run it
    here (:class:`_ThreadsError`: another machine, thread count or
    ``FASTRNN_CPU_GENERIC``, or a file written before the rule that refuses
    it) the stream is made with ``threads=None``, with a ``UserWarning``
    and a note in ``backend_reason`` (of every stream of a model stream).
    Any other error is raised."""
    if threads is None:
        return make(None)
    try:
        return make(threads)
    except _ThreadsError as exc:
        why = str(exc)
    warnings.warn(f"{where}: the stream was saved with threads={threads}, which cannot run "
                  f"here ({why}); it runs with threads=None", UserWarning,
                  stacklevel=_caller_level())
    stream = make(None)
    for s in getattr(stream, "streams", None) or [stream]:
        s.backend_reason += (f"; the file asked for threads={threads}, which cannot run here, "
                             "so threads=None")
    return stream


def _readable(x):
    """``x``, or for a read-only array a writable view of its memory, which
    the kernels only read: the compiled kernels are typed by writability,
    and a read-only frame would compile a second copy of them."""
    if x.flags.writeable:
        return x
    return dispatch.backend_module("cpu").writable(x)


class _Tuner:
    """The first frames (or chunks) of a stream with large weights: the
    one-core stream kernel and the batch engine on both cores (each step's
    weight panels split between them, :mod:`fastrnn.kernels.cpu.split`)
    take turns in blocks of :data:`TUNE_BLOCK` calls, timed per step; then
    the stream keeps the faster for that kind of call. Frames and chunks
    are timed apart: a chunk pays the engine's thread wake-up once for all
    its steps, and the frames of a stream the panel split runs (a layer
    or a stack) have a helper thread of their own (:class:`_SplitCalls`).

    Both engines write the same state arrays (views of the stream kernel's
    state), so the state carries across the switch.

    ``ran()`` (optional) tells whether the engine's last call really ran
    on both cores: a stream split runs a call on the stream kernel while
    the machine looks busy, and such calls are not counted. If the engine
    has not had :data:`TUNE_SAMPLES` such calls after :data:`TUNE_MAX_CALLS`,
    the stream keeps what it has timed (the stream kernels if nothing).
    """

    def __init__(self, stream, which, kernel, engine, ran=None):
        self.stream = weakref.ref(stream)  # (the stream holds this tuner's run)
        self.which = which  # "frame" or "chunk"
        self.fns = (kernel, engine)
        self.ran = ran
        self.times = ([], [])
        self.calls = 0

    def run(self, x, w, s, work, out, cfg):
        # blocks of TUNE_BLOCK calls per engine; the first call of each block
        # is not counted: the other engine's weights have just evicted its own
        # from cache (or it compiled, or started its thread)
        k = (self.calls // TUNE_BLOCK) % 2
        first = self.calls % TUNE_BLOCK == 0
        self.calls += 1
        t0 = time.perf_counter()
        failed = self.fns[k](x, w, s, work, out, cfg)
        elapsed = time.perf_counter() - t0
        if not first and not failed and (k == 0 or self.ran is None or self.ran()):
            self.times[k].append(elapsed / (1 if x.ndim == 2 else x.shape[1]))
        done = len(self.times[1]) >= TUNE_SAMPLES and len(self.times[0]) >= TUNE_SAMPLES
        if done or self.calls >= TUNE_MAX_CALLS:
            # the fastest call of each: noise (another process, a vCPU the host
            # took away) only ever adds time, and a split that finds the
            # machine busy later runs its calls on the stream kernel anyway
            fastest = [float(np.min(t)) if t else float("inf") for t in self.times]
            stream = self.stream()
            if stream is not None:
                stream._keep(self.which, int(fastest[1] < fastest[0]), fastest)
        return failed


class Stream:
    """Stateful frame-by-frame inference for a unidirectional recurrent layer.

    Parameters
    ----------
    layer : fastrnn.RNN (or SimpleRNN, GRU, LSTM)
        The layer to stream. ``Bidirectional`` and ``go_backwards=True``
        layers cannot stream (they need the future) and raise ``TypeError``
        / ``ValueError``. An unbuilt layer is built by the first call.
    batch_size : int
        Number of independent streams run together (rows of each frame).
    backend : None, "reference" or "cpu"
        A name runs the calls through the kernel contract on that backend.
        ``None``: the layer's ``backend`` if not ``"auto"``, else the
        process-wide default (``fastrnn.set_backend``, then
        ``FASTRNN_BACKEND``, whose bad value raises) if not ``"auto"``;
        ``"reference"`` from either runs the contract path on it as well,
        unless ``threads`` is given (the stream's own request comes first).
        Otherwise (``"auto"``, ``"cpu"``, whose stream kernels these are,
        or ``"cuda"``, which a stream runs on the host as ``"auto"`` does)
        the stream kernels where they support the configuration, else the
        kernel contract on the backend ``"auto"`` picks on the host (on
        ``"cpu"`` where that was asked for). ``"cuda"`` here is a
        ``ValueError``; a value that is not a str a ``TypeError``.
    threads : None, 1 or 2
        How many cores the calls may use, where the stream kernels run the
        layer (see ``backend``). ``None``: as below (one core for small
        weights; for large ones the faster engine, timed now and again).
        ``1``: every call on the one-core stream kernels, no helper thread,
        never timed. ``2`` (a float32 layer, quantized or not, and
        ``fastrnn.get_num_threads()`` at least 2): every call on the batch
        engine on two threads (the panel split with the stream's own
        helper thread where it runs the layer, else the batch engine's own
        split of each call, which needs enough rows and work per frame: a
        SimpleRNN or ``GRU(reset_after=False)`` frame at batch 1 has none),
        never timed: no call runs on the slower engine for a timing round,
        which a server that counts its slowest calls may prefer; a call the
        helper cannot share still runs on the stream kernels (so do all of
        them while ``fastrnn.get_num_threads()`` is 1, which refuses only
        the making of the stream: new weights repacked meanwhile keep
        ``threads=2``, and two threads again once allowed). Anything
        else, or a value the layer cannot run at this ``batch_size`` (the
        ``ValueError`` says why; see also :attr:`backend_reason` of a
        stream made with ``None``), is a ``ValueError``; for an unbuilt
        layer, at its first call.

    Call
    ----
    ``stream(x, out=None)`` with ``x`` one frame ``(batch, features)`` or a
    chunk ``(batch, time, features)`` (``(time, batch, features)`` for a
    ``time_major`` layer), or in a stream of batch 1 an unbatched frame
    ``(features,)``, which returns ``(units,)`` (states stay ``(1, units)``),
    as PyTorch's cells do; in the layer's dtype (float32 or float64; other
    dtypes are a ``TypeError``, never silently cast). Returns what the layer
    returns for that input: for a chunk ``(batch, time, units)`` with
    ``return_sequences`` else ``(batch, units)``; for a frame always
    ``(batch, units)``; with ``return_state`` the list ``[output,
    *states]`` (Keras order, nested per cell for a stack). The final state
    is carried to the next call. ``out`` (the output's shape and dtype,
    C-contiguous and writeable) receives the output instead of a new array.

    A frame that fails a check (features, batch, dtype, NaN under the
    layer's ``nan_policy="raise"``) raises ``ValueError`` / ``TypeError``
    and leaves the state unchanged. Calling one stream from two threads at
    once raises :class:`StreamBusyError`.

    Attributes
    ----------
    states : list of ndarray
        The carried state in Keras order (``[h]``, ``[h, c]``, nested per
        cell for a stack); reading returns copies, assigning validates and
        copies in. A new stream starts from zeros, also for a ``stateful``
        layer: ``stream.states = layer.states`` goes on from the state the
        layer carries.
    backend, backend_reason : str
        The engine that runs the calls, and why (``backend`` None until the
        first call on a layer that was not built).
    threads : int or None
        How many threads a frame call may use: 1 on the stream kernels; on
        the batch engine 2 where the panel split runs it (below), else the
        cpu backend's thread count where the batch engine splits a frame of
        a layer at this batch size, 1 where it splits none; None while a
        stream with large weights is still timing both (below).

    A stream whose weights pass :data:`TUNE_MIN_BYTES` (float32, batch
    below 8, two threads or more) times its first frames on the one-core
    stream kernels and on the batch engine, whose two threads each keep
    half of every step's weight panels in their own cache, and keeps the
    faster (``backend`` ``"stream"`` or ``"cpu"``, for frames); its first
    chunks are timed the same way, apart (``backend_reason`` says what each
    kind of call runs). The choice is timed again after
    :data:`RETUNE_CALLS` calls of its kind, then at doubling intervals up to
    :data:`RETUNE_MAX_CALLS` while it holds: a machine that was busy while
    the first calls were timed does not keep a stream on the slower engine
    for good. An LSTM or GRU layer, or a stack of them, that the batch
    engine's panel split runs (one weight format for all its layers: any of
    float32, bfloat16, int8, int8_dynamic, bfloat16_dynamic) and that keeps
    the batch engine runs its calls with a helper thread of the stream's
    own, which shares each layer's panels in turn, spins a fraction of a
    millisecond after each call for the next, then sleeps; it stops when
    the stream is collected. On the batch engine a helper thread that is
    late or descheduled never holds a frame back: the calling thread takes
    its panels over.
    """

    def __init__(self, layer, batch_size=1, backend=None, threads=None):
        if hasattr(layer, "forward_layer"):  # Bidirectional
            layer.stream()  # raises the TypeError that explains why
        if serialization.kind_of(layer) != "rnn" or not hasattr(layer, "cells"):
            raise TypeError(f"layer: expected a fastrnn recurrent layer (RNN, SimpleRNN, GRU, "
                            f"LSTM), got {type(layer).__name__}")
        if layer.go_backwards:
            raise ValueError(
                f"{type(layer).__name__} has go_backwards=True: it reads the sequence last to "
                "first, so its first output needs the last frame, which a stream has not seen "
                "yet. Streams run forward layers only."
            )
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
                or batch_size < 1:
            raise ValueError(f"batch_size: expected a positive integer, got {batch_size!r}")
        if backend is not None:
            backend = dispatch._check_request(backend, "backend")
            if backend in ("auto",):
                backend = None
            elif backend == "cuda":
                raise ValueError("backend: streams run on the host; expected None, 'cpu' or "
                                 "'reference', got 'cuda'")
        if threads is not None and not _is_one_or_two(threads):
            raise ValueError(f"threads: expected None, 1 or 2, got {threads!r}")
        self.layer = layer
        self.batch_size = int(batch_size)
        self._backend_arg = backend
        self._threads_arg = None if threads is None else int(threads)
        # read once, when the stream is made: a stream set up again after
        # set_weights keeps its engine (a user's cells need no backend)
        self._request = _requested(layer, backend) if layer.compiled else (None, "")
        self._dt = np.dtype(layer.dtype)
        self._busy = threading.Lock()
        self._structure = layer.state_structure
        self._sizes = layer.state_sizes
        self._return_state = layer.return_state
        self._return_sequences = layer.return_sequences
        self._time_major = layer.time_major
        self._nan_raise = layer.nan_policy == "raise"
        self._ready = False
        # (set when the stream is set up: at once for a built layer, else at
        # the first call, which builds it)
        self.backend, self.threads = None, None
        self.backend_reason = ("not chosen yet: the layer is not built, and the first call "
                               "builds it")
        self._weights = None  # the weights packed (see _engine.snapshot)
        self._generation = None  # _engine.generation when they were read
        self._held = False  # a model stream's frame holds them (see _take_weights)
        # Shapes no call has matched yet: the first call fills them.
        self._fshape = self._foshape = None
        self._cshape = self._coshape = None
        self._work_T = 0
        if layer.built:
            self._setup()

    # ----- setup (once) -----
    def _setup(self, repack=False):
        """Make everything a call needs (:meth:`_check_weights` keeps the
        state of a ``repack``)."""
        layer, B, dt = self.layer, self.batch_size, self._dt
        self.units = int(layer.output_size)
        cells = layer.cells
        D = getattr(cells[0], "input_dim", None)
        self.input_dim = None if D is None else int(D)
        self._generation = _engine.generation
        weights = params = None
        fast_ok, why = False, "the layer has custom cells (host step loop)"
        requested, source = self._request
        own = source == _OWN
        # the contract path on that backend: "reference" from any source, or
        # the stream's own backend="cpu". A "cpu" from the layer or the
        # process default keeps the stream kernels (they are the cpu
        # backend's) where they run the layer, else the contract path on cpu.
        # The stream's own explicit threads= asks for the cpu stream engines,
        # and comes before the layer's backend and the process default.
        named = requested == "reference" and (own or self._threads_arg is None) \
            or (requested == "cpu" and own)
        note = ""
        if requested == "reference" and not named:
            note = (f"; threads={self._threads_arg} was requested over backend='reference' "
                    f"(requested by {source}): the stream's own threads argument comes first")
        elif requested == "cpu" and not own:
            note = (f"; backend='cpu' was requested by {source}, whose stream kernels these "
                    "are")
        # a stream runs on the host: "cuda" (from the layer or the process
        # default; the stream's own argument refuses it) runs as "auto" does
        self._host_note = "" if requested != "cuda" else (
            f"; backend='cuda' was requested by {source}, and streams run on the host, as "
            "'auto' does")
        self._host_note += note
        if layer.compiled:
            weights = _engine.snapshot(cells, stack=True)
            params = [w.params for w in weights]
            if named:
                why = f"backend={requested!r} was requested by {source}"
            else:
                fast_ok, why = _engine.frames_supported(params)
        self._weights = weights
        self._splits = {}  # (streams with large weights: see _tune)
        if fast_ok:
            kernels = dispatch.backend_module("cpu").stream
            self._w, self._cfg, state_len = kernels.pack(params, B, self._nan_raise)
            self._s = np.zeros(state_len, dt)
            self._states = kernels.state_views(self._s, self._cfg, B)
            self._frame_fn = kernels.frame
            self._chunk_fn = kernels.chunk_seq if self._return_sequences else kernels.chunk_last
            self._work_size = kernels.work_size
            self._work = np.zeros(self._work_size(self._cfg, B, 1), dt)
            self._work_T = 1
            self.backend = "stream"
            self.threads = 1
            self.backend_reason = ("stream: single-thread small-batch kernels "
                                   "(fastrnn.kernels.cpu.stream) support this configuration")
            if self._threads_arg == 1:
                self.backend_reason += " (threads=1 was requested)"
            self.backend_reason += self._host_note
            if self._threads_arg != 1:
                self._tune(weights, params, repack)
        else:
            if self._threads_arg is not None:
                raise _ThreadsError(f"threads={self._threads_arg}: the stream kernels do not run "
                                 f"this layer ({why}), so its calls run through the kernel "
                                 "contract, on the backend's own threads; expected "
                                 "threads=None")
            self._states = [np.zeros((B, s), dt) for s in self._sizes]
            if named or (requested == "cpu" and layer.compiled):
                choice = _select(weights, requested, source)
            elif layer.compiled:
                # auto's choice on the host, without reading the process-wide
                # default again: it was read when the stream was made ("cuda",
                # or "auto" then)
                choice = dispatch._auto(params, False)
            else:
                choice = dispatch.Choice("custom", None, "custom cells")
            runner = _EngineRunner(layer, weights, choice, self._states)
            self._frame_fn = self._chunk_fn = runner.run
            self._w = self._s = self._work = self._cfg = None
            self._work_T = 1 << 62
            self.backend = choice.name
            # the cpu backend's threads where its batch engine splits a frame
            # of a layer at this batch (_split_batch), else one
            self.threads = dispatch.get_num_threads() if choice.name == "cpu" and min(
                _split_batch(p) for p in runner.packs) <= B else 1
            self.backend_reason = (f"{choice.name} through the kernel contract: {why}"
                                   f"{self._host_note}")
        self._fshape = (B, self.input_dim)
        self._foshape = (B, self.units)
        self._ready = True

    def _tune(self, weights, params, repack=False):
        """Large weights on a machine with two threads or more: time the
        first frames, and apart the first chunks, on both engines
        (:class:`_Tuner`); with ``threads=2``, keep the batch engine for
        good, untimed (``repack``: new weights of a stream made so; see
        :meth:`_why_not_two`)."""
        nbytes = sum(_weight_bytes(p) for p in params)
        pinned = self._threads_arg == 2
        if pinned:
            why = self._why_not_two(weights, repack)
            if why:
                raise _ThreadsError(f"threads=2: {why}; expected threads=None or 1")
        elif (nbytes < TUNE_MIN_BYTES or self._dt != np.float32
              or self.batch_size >= _ROWS_SPLIT or dispatch.get_num_threads() < 2):
            return
        choice = _engine.select_for(weights, "cpu")
        if choice.name != "cpu":
            return
        runner = _EngineRunner(self.layer, weights, choice, self._states)
        self._kernel_fns = {"frame": self._frame_fn, "chunk": self._chunk_fn}
        self._engine_fns = {"frame": runner.run, "chunk": runner.run}
        cpu = choice.module
        packs, B = [w.packed(cpu) for w in weights], self.batch_size
        seq = self._return_sequences
        if len(packs) == 1:
            states = self._states
            make = lambda T: cpu.stream_split(packs[0], B, *states, steps=T,  # noqa: E731
                                              sequences=seq)
        else:  # a stack: every layer split in turn, one helper thread for all
            states, at = [], 0
            for p in params:
                n = p.n_states
                states.append((self._states[at], self._states[at + 1] if n > 1 else None))
                at += n
            make = lambda T: cpu.stack_split(packs, B, states, steps=T,  # noqa: E731
                                             sequences=seq)
        first = make(1)
        # Without a split of the stream's own, a call runs on the batch
        # engine's threads, which split a frame only of a layer with enough
        # rows and work (_split_batch): none at this batch, and every frame
        # runs on one thread.
        need = None if first is not None else min(_split_batch(p) for p in packs)
        if pinned and need is not None and need > B:
            what = "stack" if len(packs) > 1 else "layer"
            th = cpu.threads
            formats = sorted({p.precision for p in params})
            odd = [d for d in (np.shape(p.kernel)[0] for p in params) if d % 2]
            why = (f" (its layers' weights are of {len(formats)} formats: "
                   f"{', '.join(formats)})" if len(formats) > 1 else
                   f" (its bfloat16 weights have an odd input size, {odd[0]}: the split "
                   "reads bfloat16 inputs in pairs)" if formats == ["bfloat16"] and odd else "")
            raise _ThreadsError(
                f"threads=2: every frame of this {what}{why} would run on one thread at "
                f"batch_size={B}: the stream has no panel split with a helper thread for it "
                f"(packed LSTM and GRU(reset_after=True) layers of more than "
                f"{th.packed.LANES} units, one weight format, batch_size below "
                f"{th._BATCH_SPLIT_MIN}), and the batch engine splits a frame of it from "
                f"batch_size={need} up; expected threads=None or 1, or batch_size={need} "
                "or more")
        # the threads of a frame on the batch engine (see _describe_tuning;
        # with threads=2, those it runs on while two are allowed: a repack
        # may come while one is, see _why_not_two)
        n = max(2, dispatch.get_num_threads()) if pinned else dispatch.get_num_threads()
        self._engine_threads = 2 if first is not None else n if need <= B else 1
        if first is not None:
            for which in ("frame", "chunk"):
                self._splits[which] = _SplitCalls(make, self._kernel_fns[which],
                                                  self._nan_raise, seq)
                self._engine_fns[which] = self._splits[which].run
            self._splits["frame"].splits[1] = first  # (built to see whether it can run)
            self._compile_kernels()
        self._ran = {which: (lambda c=calls: c.ran) for which, calls in self._splits.items()}
        self._chosen = {}
        self._retune_every = {}
        self._kernel_T = self._work_T
        self._nbytes = nbytes
        self._int8 = any(p.quantized is not None and p.quantized.mode == "int8" for p in params)
        for which in ("frame", "chunk"):
            if pinned:
                self._keep(which, 1, None)
            else:
                self._time_engines(which)
        self._describe_tuning()

    def _compile_kernels(self):
        """Compile (or load from Numba's cache) the stream kernels for this
        stream's frames and chunks now, without running them. A split runs
        the calls its helper cannot share on them, and with ``threads=2``
        nothing else ever calls them: the first such call (the machine
        turned busy) would otherwise take several milliseconds."""
        from numba import typeof

        def arr(ndim):  # a C-contiguous array of the stream's dtype, as the fast path passes
            return typeof(np.empty((1,) * ndim, self._dt))

        common = (typeof(self._w), typeof(self._s), typeof(self._work))
        cfg = typeof(self._cfg)
        self._kernel_fns["frame"].compile((arr(2),) + common + (arr(2), cfg))
        self._kernel_fns["chunk"].compile(
            (arr(3),) + common + (arr(3 if self._return_sequences else 2), cfg))

    def _why_not_two(self, weights, repack=False):
        """Why ``threads=2`` cannot run this stream ("" when it can).

        One thread allowed (``fastrnn.set_num_threads(1)``) refuses a
        stream being made, not the new weights of one made with two
        (``repack``): such a stream runs its calls on one core while one
        thread is allowed, as it did with its old weights (the split's
        helper shares no call then), and on two again once two are."""
        if self._dt != np.float32:
            return (f"the two-core engines run float32 layers (quantized weights "
                    f"included), and this one is {self._dt.name}")
        if dispatch.get_num_threads() < 2 and not repack:  # (the split's helper runs no call)
            return ("fastrnn.get_num_threads() is 1 (fastrnn.set_num_threads or "
                    "NUMBA_NUM_THREADS), so every call runs on one thread")
        choice = _engine.select_for(weights, "cpu")
        if choice.name != "cpu":
            return f"the cpu backend does not run this layer ({choice.reason})"
        return ""

    def _time_engines(self, which):
        """Time both engines for the next ``which`` calls (:class:`_Tuner`)."""
        if which == "chunk" and self._work_T == 1 << 62:
            # the batch engine ran the chunks, so the stream kernels' work
            # array was not grown with them: the next chunk sizes it again
            # (through _slow)
            self._work_T = self._kernel_T
            self._cshape = self._coshape = None
        fn = _Tuner(self, which, self._kernel_fns[which], self._engine_fns[which],
                    self._ran.get(which)).run
        if which == "frame":
            self._frame_fn = fn
        else:
            self._chunk_fn = fn

    def _counted(self, which, fn, calls):
        """``fn``, which times both engines again after ``calls`` calls."""
        left = [calls]
        stream = weakref.ref(self)  # (the stream holds this function)

        def run(x, w, s, work, out, cfg):
            left[0] -= 1
            if left[0] == 0 and (me := stream()) is not None:
                me._time_engines(which)  # (from the next call on)
            return fn(x, w, s, work, out, cfg)

        return run

    def _keep(self, which, engine, fastest):
        """A tuner's decision for ``which`` calls: ``engine`` 1 (the batch
        engine on two threads or more) or 0 (the stream kernels), with the
        fastest step each took; ``fastest`` None (``threads=2``): kept for
        good, never timed again."""
        fn = self._engine_fns[which] if engine else self._kernel_fns[which]
        split = self._splits.get(which)
        if not engine and split is not None:
            split.close()  # its helper threads are not needed (a later timing restarts them)
        if fastest is not None:  # (None: threads=2, kept for good)
            before = self._chosen.get(which)
            every = self._retune_every.get(which)
            every = RETUNE_CALLS if every is None or before[0] != engine else \
                min(2 * every, RETUNE_MAX_CALLS)
            self._retune_every[which] = every
            fn = self._counted(which, fn, every)
        if which == "frame":
            self._frame_fn = fn
        else:
            self._chunk_fn = fn
            if engine and split is None:
                self._kernel_T = self._work_T
                self._work_T = 1 << 62  # (the stream kernels' work array is not used)
        self._chosen[which] = (engine, fastest)
        self._describe_tuning()

    def _describe_tuning(self):
        """``backend``, ``threads`` (of frame calls) and ``backend_reason``
        while and after the tuners time both engines."""
        n = self._engine_threads
        split = bool(self._splits)
        if split:
            engines = dict.fromkeys(("frame", "chunk"), (
                "the cpu batch engine's panel split on 2 threads (the stream's own helper "
                "thread waits between calls)"))
        elif n > 1:
            engines = dict.fromkeys(("frame", "chunk"), f"the cpu batch engine with {n} threads")
        else:  # (a frame has too few rows or too little work to split; a long chunk may not)
            engines = {"frame": f"the cpu batch engine on one thread (it splits no frame at "
                                f"batch_size={self.batch_size})",
                       "chunk": f"the cpu batch engine with up to "
                                f"{dispatch.get_num_threads()} threads"}
        parts = []
        for which in ("frame", "chunk"):
            got = self._chosen.get(which)
            if got is None:
                parts.append(f"{which}s: timing the stream kernels and {engines[which]}")
                continue
            engine, fastest = got
            what = engines[which] if engine else "the stream kernels"
            if fastest is None:
                parts.append(f"{which}s: {what}")
                continue
            one, two = fastest
            if two == float("inf"):
                parts.append(f"{which}s: {what} (fastest step {one * 1e6:.0f} us; no call "
                             "ran on two cores while timing: the machine looked busy)")
                continue
            parts.append(f"{which}s: {what} (fastest step {one * 1e6:.0f} us on the stream "
                         f"kernels, {two * 1e6:.0f} us on the batch engine)")
        frame = self._chosen.get("frame")
        self.backend = "cpu" if frame is not None and frame[0] else "stream"
        self.threads = None if frame is None else ((2 if split else n) if frame[0] else 1)
        int8 = " (int8, counted as the float32 it widens to)" if self._int8 else ""
        why = ("threads=2 was requested" if self._threads_arg == 2 else
               f"{self._nbytes / 2**20:.1f} MiB of weights{int8} pass one core's cache, so "
               "the faster engine is kept")
        self.backend_reason = f"{why}; " + "; ".join(parts) + self._host_note

    def _check_weights(self):
        """Pack the layer's weights again if they changed since the last call
        (``layer.set_weights``); the carried state stays. Where that raises
        (weights the stream's ``threads`` cannot run, say), the stream is
        left as it was, state and old weights, and its next call tries
        again (and raises again): no call runs the old weights."""
        if self._weights is None or self._generation == _engine.generation:
            return
        generation = _engine.generation
        if _engine.snapshot(self.layer.cells) == self._weights:
            self._generation = generation  # another object's weights changed
            return
        before = dict(self.__dict__)  # (_setup binds new objects; it changes none in place)
        try:
            self._cshape = self._coshape = None
            self._setup(repack=True)
        except BaseException:
            self.__dict__.clear()
            self.__dict__.update(before)  # (its _generation too: the next call tries again)
            raise
        for calls in before["_splits"].values():
            calls.close()  # (their helpers hold the old weights and state arrays)
        for dst, v in zip(self._states, before["_states"]):
            dst[...] = v

    def _take_weights(self):
        """For a model stream's call, with ``WEIGHTS_LOCK`` held: the layer's
        weights as they are now (packed again if they changed). The model
        stream then sets ``_held`` for the frame, so that this stream's calls
        keep them and the frame runs every layer with the weights of one
        moment."""
        if not self._busy.acquire(False):
            raise StreamBusyError(_BUSY)
        try:
            self._check_weights()
        finally:
            self._busy.release()

    # ----- the call -----
    def __call__(self, x, out=None):
        if not self._busy.acquire(False):
            raise StreamBusyError(_BUSY)
        try:
            if self._generation != _engine.generation and not self._held:
                self._check_weights()  # some weights changed: ours?
            # The fast path: the frame shape cached at setup, or the chunk shape
            # cached by the last chunk; anything else is validated in _slow.
            if x.__class__ is not _ndarray or x.dtype is not self._dt:
                return self._slow(x, out)
            shape = x.shape
            if shape == self._fshape:
                fn, oshape = self._frame_fn, self._foshape
            elif shape == self._cshape:
                fn, oshape = self._chunk_fn, self._coshape
            else:
                return self._slow(x, out)
            if not (flags := x.flags).c_contiguous or not flags.writeable:
                return self._slow(x, out)  # (a size-1 axis may have any stride)
            if out is None:
                out = _empty(oshape, self._dt)
            elif out.__class__ is not _ndarray or out.dtype is not self._dt or \
                    out.shape != oshape or not (flags := out.flags).c_contiguous or \
                    not flags.writeable:
                self._bad_out(out, oshape)
            if fn(x, self._w, self._s, self._work, out, self._cfg):
                self._nan_error()
            if self._return_state:
                return self._with_states(out)
            return out
        finally:
            self._busy.release()

    def _slow(self, x, out):
        """Every input the cached frame shape did not match: validate, then run."""
        # An unbatched frame (features,), as PyTorch's cells take, in a stream of
        # batch 1 runs as (1, features) and returns (units,); states stay (1, units).
        unbatched = self.batch_size == 1 and np.ndim(x) == 1
        if not self._ready:
            x = self._as_array(x)
            if x.ndim not in (2, 3) and not unbatched:
                raise ValueError(f"x: expected a frame (batch, features) or a chunk "
                                 f"(batch, time, features), got shape {tuple(x.shape)}")
            self.layer.build((self.batch_size, None, x.shape[-1]))
            self._setup()
        x = self._as_array(x)
        if self.input_dim is None and x.ndim in (1, 2, 3):
            # a user's cell need not declare its input size: the first call
            # that runs fixes it, as it builds a layer (a call that fails
            # leaves it open)
            self.input_dim = int(x.shape[-1])
            self._fshape = (self.batch_size, self.input_dim)
            try:
                return self._checked(x, out, unbatched)
            except BaseException:
                self.input_dim, self._fshape = None, (self.batch_size, None)
                raise
        return self._checked(x, out, unbatched)

    def _checked(self, x, out, unbatched):
        """:meth:`_slow` once the stream is set up: check ``x`` and run it."""
        B, D = self.batch_size, self.input_dim
        if unbatched:
            if x.shape != (D,):
                raise ValueError(self._shape_message(x, "an unbatched frame (features,)", (D,)))
            if out is not None:
                self._check_out(out, (self.units,))
            y = self._slow(x[None], None if out is None else out[None])
            if not self._return_state:
                return y[0] if out is None else out
            return [y[0][0] if out is None else out] + y[1:]
        if x.ndim == 2:
            if x.shape != (B, D):
                raise ValueError(self._shape_message(x, "a frame (batch, features)", (B, D)))
            x = _readable(np.ascontiguousarray(x))
            if out is None:
                out = _empty(self._foshape, self._dt)
            else:
                self._check_out(out, self._foshape)
            if self._frame_fn(x, self._w, self._s, self._work, out, self._cfg):
                self._nan_error()
            return self._with_states(out) if self._return_state else out
        if x.ndim != 3:
            one = " (an unbatched frame (features,) needs batch_size=1)" if x.ndim == 1 else ""
            raise ValueError(f"x: expected a frame {(B, D)} (batch, features) or a chunk "
                             f"(batch, time, features), got shape {tuple(x.shape)}{one}")
        if self._time_major:
            T = x.shape[0]
            if x.shape[1:] != (B, D):
                raise ValueError(self._shape_message(x, "a time-major chunk (time, batch, "
                                                     "features)", (T, B, D)))
            x = np.ascontiguousarray(x.transpose(1, 0, 2))
        else:
            T = x.shape[1]
            if x.shape[0] != B or x.shape[2] != D:
                raise ValueError(self._shape_message(x, "a chunk (batch, time, features)",
                                                     (B, T, D)))
        x = _readable(np.ascontiguousarray(x))
        oshape = (B, T, self.units) if self._return_sequences else (B, self.units)
        flip = self._return_sequences and self._time_major
        user_shape = (T, B, self.units) if flip else oshape
        if out is not None:
            self._check_out(out, user_shape)
        if T == 0:  # the layer returns zeros and keeps the state
            y = np.zeros(user_shape, self._dt) if out is None else out
            y[...] = 0
            return self._with_states(y) if self._return_state else y
        if T > self._work_T:
            self._work = np.zeros(self._work_size(self._cfg, B, T), self._dt)
            self._work_T = T
        y = out if (out is not None and not flip) else _empty(oshape, self._dt)
        if self._chunk_fn(x, self._w, self._s, self._work, y, self._cfg):
            self._nan_error()
        if not self._time_major:  # later chunks of this shape take the fast path
            self._cshape, self._coshape = x.shape, oshape
        if flip:
            y = np.ascontiguousarray(y.transpose(1, 0, 2))
            if out is not None:
                out[...] = y
                y = out
        return self._with_states(y) if self._return_state else y

    def _as_array(self, x):
        if type(x) is np.ndarray and x.dtype == self._dt:  # (every frame, first)
            return x
        given = x.dtype if isinstance(x, np.ndarray) else getattr(x, "dtype", None)
        if type(x) is not np.ndarray or x.dtype.kind == "V":  # (ml_dtypes' bfloat16 too)
            x = _device.host_array(x, "x")
        if x.dtype != self._dt:
            kind = x.dtype.kind
            what = "an integer" if kind in "iub" else f"a {x.dtype}"
            if given is not None and str(given) != str(x.dtype):  # (bfloat16: read as float32)
                what = f"a {str(given).replace('torch.', '')} (read as {x.dtype})"
            other = ("float64" if x.dtype == np.float64 else "float32") \
                if kind == "f" and x.dtype in (np.float32, np.float64) else None
            hint = (f" (or make the layer with dtype='{other}' if that is the model's "
                    "precision)") if other else ""
            raise TypeError(f"x: the stream runs in {self._dt} and got {what} array "
                            f"(dtype {x.dtype}); streams never cast per call: pass "
                            f"x.astype(np.{self._dt}){hint}")
        return x

    def _shape_message(self, x, what, expected):
        return (f"x: expected {what} of shape {expected} (batch_size={self.batch_size}, "
                f"{self.input_dim} features), got shape {tuple(x.shape)}; the state is "
                "unchanged")

    def _check_out(self, out, shape):
        if not isinstance(out, np.ndarray) or out.dtype != self._dt or \
                tuple(out.shape) != tuple(shape) or not out.flags.c_contiguous or \
                not out.flags.writeable:
            self._bad_out(out, shape)

    def _bad_out(self, out, shape):
        flags = getattr(out, "flags", None)
        layout = "" if flags is None else (
            " read-only" if not flags.writeable else "" if flags.c_contiguous
            else " non-contiguous")
        got = (f"{type(out).__name__}{layout} {getattr(out, 'dtype', '')} "
               f"{tuple(getattr(out, 'shape', ()))}")
        raise ValueError(f"out: expected a writeable C-contiguous {self._dt} array of shape "
                         f"{shape}, got {got}")

    def _nan_error(self):
        raise ValueError("x: contains NaN and the layer has nan_policy='raise'; the state is "
                         "unchanged")

    def _with_states(self, out):
        return [out] + pack_as(self._structure, [s.copy() for s in self._states])

    # ----- state -----
    @property
    def states(self):
        """Copies of the carried states, Keras order (nested per cell for a stack)."""
        self._ensure_ready("states")
        return pack_as(self._structure, self._snapshot())

    def _snapshot(self):
        # A copy taken while another thread's call is writing would mix two states.
        if not self._busy.acquire(False):
            raise StreamBusyError(_BUSY)
        try:
            return [s.copy() for s in self._states]
        finally:
            self._busy.release()

    @states.setter
    def states(self, values):
        self._ensure_ready("states")
        flat = flatten(values) if isinstance(values, (list, tuple)) else [values]
        B = self.batch_size
        if len(flat) != len(self._states):
            raise ValueError(f"states: expected {len(self._states)} arrays of shapes "
                             f"{[(B, s) for s in self._sizes]} (Keras order), got {len(flat)}"
                             f"{numbers_hint(flat)}")
        checked = []
        for k, (v, size) in enumerate(zip(flat, self._sizes)):
            v = _device.host_array(v, f"states[{k}]")
            if v.dtype.kind != "f":
                raise TypeError(f"states[{k}]: expected a floating-point array, got dtype "
                                f"{v.dtype}")
            if v.shape != (B, size):
                raise ValueError(f"states[{k}]: expected shape {(B, size)}, got {v.shape}")
            if self._nan_raise and np.isnan(v).any():  # (as the layer's initial_state)
                raise ValueError(f"states[{k}]: contains NaN and nan_policy='raise'")
            checked.append(v)
        if not self._busy.acquire(False):
            raise StreamBusyError(_BUSY)
        try:
            for dst, v in zip(self._states, checked):
                dst[...] = v
        finally:
            self._busy.release()

    def reset(self):
        """Zero the carried states (a new utterance, a new client, ...)."""
        self._ensure_ready("reset")
        if not self._busy.acquire(False):
            raise StreamBusyError(_BUSY)
        try:
            for s in self._states:
                s[...] = 0
        finally:
            self._busy.release()

    reset_states = reset

    def _ensure_ready(self, what):
        if not self._ready:
            raise ValueError(f"Stream.{what}: the layer is not built yet; build it or call "
                             "the stream once")

    # ----- save / restore -----
    def save(self, path):
        """Write the layer (config and weights) and the carried state to ``path``.

        The file is a NumPy ``.npz`` (a zip of ``.npy`` arrays plus the
        config as JSON text), loadable with ``allow_pickle=False``; restore
        it with :func:`load_stream`, in this process or another. A path
        not ending in ``.npz`` gets it appended, as ``np.savez`` does
        (:func:`load_stream` given the same path finds the file); returns
        the path written (a file object is written as it is).
        """
        self._ensure_ready("save")
        if not self._busy.acquire(False):
            raise StreamBusyError(_BUSY)
        try:
            self._check_weights()  # save what the next call would run
        finally:
            self._busy.release()
        config = serialization.serialize(self.layer)
        try:  # refuse now rather than write a file that cannot be loaded
            serialization.deserialize(json.loads(json.dumps(config)), kinds=("rnn",))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"Stream.save: the layer cannot be rebuilt from its config "
                             f"({exc}); save the model with its own format instead") from exc
        meta = {"format": _FORMAT, "layer": config,
                "batch_size": self.batch_size, "backend": self._backend_arg,
                "threads": self._threads_arg,
                "n_weights": len(self.layer.get_weights()), "n_states": len(self._states)}
        arrays = {}
        for i, w in enumerate(self.layer.get_weights()):
            arrays[f"w{i}"] = np.asarray(w)
        for i, s in enumerate(self._snapshot()):
            arrays[f"s{i}"] = s
        cells = self.layer.cells
        if any(getattr(c, "quantization_mode", None) for c in cells):
            # a quantized cell's compact weights, exactly (None: float)
            meta["quantized"] = []
            for i, c in enumerate(cells):
                mode = getattr(c, "quantization_mode", None)
                if mode is None:
                    meta["quantized"].append(None)
                    continue
                compact = c._quantized.arrays()
                names = [f"q{i}_{j}" for j in range(len(compact))]
                arrays.update(zip(names, compact))
                meta["quantized"].append({"mode": mode, "arrays": names})
        arrays["meta"] = np.array(json.dumps(meta))
        if isinstance(path, (str, os.PathLike)):
            path = os.fspath(path)
            if not path.endswith(".npz"):
                path += ".npz"
        np.savez(path, **arrays)
        return path

    @staticmethod
    def load(path):
        """Restore a stream written by :meth:`save` (see :func:`load_stream`)."""
        return load_stream(path)

    def __repr__(self):
        return (f"Stream({type(self.layer).__name__}(units={getattr(self.layer, 'units', None)}),"
                f" batch_size={self.batch_size}, dtype={self._dt.name}, "
                f"backend={getattr(self, 'backend', None)!r})")

    def __getstate__(self):
        raise TypeError("Stream objects are not pickled: use stream.save(path) and "
                        "fastrnn.streaming.load_stream(path)")


def load_stream(path):
    """Restore a :class:`Stream` saved by :meth:`Stream.save`: layer, weights and state.

    Parameters
    ----------
    path : str, path-like or file object
        An ``.npz`` file written by ``Stream.save`` (given the path given
        to ``save``, which appended ``.npz``, it reads that file). It is read with
        ``allow_pickle=False`` semantics, and what it declares is checked
        against what it holds before anything is allocated: each array's
        shape must account for its bytes, the layer is made without random
        weights (the file's arrays build it, and must match its config), and
        the carried states must be ``(batch_size, size)`` arrays in the file,
        so a ``batch_size`` the file does not hold the states of is refused.
        A saved ``threads`` is a preference: where the stream cannot run it
        here (another machine or thread count, ``FASTRNN_CPU_GENERIC``, or
        a file older than a rule that refuses it) it runs with
        ``threads=None``, with a ``UserWarning`` naming the file and a note
        in ``backend_reason``.

    Raises
    ------
    ValueError
        Not a saved stream, or a file that declares more than it holds.
    FileNotFoundError
        No such file.
    TypeError
        A file object opened in text mode.
    """
    path = _safe_io.source(path, "load_stream")
    is_file = hasattr(path, "read")
    if not is_file and not os.path.exists(path) and os.path.exists(f"{os.fspath(path)}.npz"):
        path = f"{os.fspath(path)}.npz"  # (the name Stream.save wrote for this path)
    if not is_file and not os.path.exists(path):
        raise FileNotFoundError(f"load_stream: no such file {os.fspath(path)!r}")
    where = f"load_stream: {path!r}"
    try:
        size = _safe_io.size_of(path)
        if not zipfile.is_zipfile(path):
            if is_file:
                path.seek(0)
                magic = path.read(6)
            else:
                with open(path, "rb") as f:
                    magic = f.read(6)
            if magic == b"\x93NUMPY":
                raise ValueError(f"{where} is a single array, not a stream saved by "
                                 "Stream.save")
            raise ValueError(f"{where} is not a stream saved by Stream.save (it cannot be "
                             "read as an .npz archive)")
        data = _safe_io.NpzReader(path, size, where, kinds="fiubU")
    except OSError as exc:
        raise ValueError(f"{where} is not a stream saved by Stream.save ({exc})") from exc
    with data:
        try:
            return _restore_stream(data, where)
        except KeyError as exc:
            raise ValueError(f"{where} is incomplete: missing {exc}") from exc
        except ValueError as exc:
            message = str(exc)
            raise ValueError(message if message.startswith(where)
                             else f"{where}: {message}") from exc
        except Exception as exc:  # noqa: BLE001 - whatever a crafted file provokes is a bad file
            raise ValueError(f"{where}: invalid stream description: "
                             f"{type(exc).__name__}: {exc}") from exc


def _restore_stream(data, where):
    """The stream in an opened :class:`~fastrnn._safe_io.NpzReader` (see :func:`load_stream`)."""
    if "meta" not in data:
        raise ValueError("it has no 'meta' entry: not a saved stream")
    if data.dtype("meta").kind != "U" or data.shape("meta") != ():
        raise ValueError("its 'meta' entry is not a JSON string")
    meta = _safe_io.load_json(str(data.read("meta")), where, "its 'meta' entry")
    if not isinstance(meta, dict) or meta.get("format") != _FORMAT:
        got = meta.get("format") if isinstance(meta, dict) else meta
        raise ValueError(f"unsupported format {got!r}, expected {_FORMAT!r}")
    counts = {}
    for key in ("batch_size", "n_weights", "n_states"):
        value = meta[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"meta: {key} expected a non-negative integer, got {value!r}")
        counts[key] = value
    B = counts["batch_size"]
    spec, declared = _safe_io.defer_build(meta["layer"])
    layer = serialization.deserialize(spec, kinds=("rnn",))  # unbuilt: its weights build it
    if not hasattr(layer, "cells") or hasattr(layer, "forward_layer"):
        raise ValueError(f"its layer is a {type(layer).__name__}, which does not stream")
    sizes = layer.state_sizes
    if counts["n_states"] != len(sizes):
        raise ValueError(f"the layer carries {len(sizes)} states, the file lists "
                         f"{counts['n_states']}")
    for i, s in enumerate(sizes):  # the states must be in the file: this bounds batch_size
        got = data.shape(f"s{i}")
        if data.dtype(f"s{i}").kind != "f":
            raise ValueError(f"states[{i}] (s{i}): expected floats, got dtype "
                             f"{data.dtype(f's{i}')}")
        if got != (B, s):
            raise ValueError(f"states[{i}] (s{i}): expected shape {(B, s)} for batch_size={B}, "
                             f"got {got}")
    if counts["n_weights"] == 0:
        raise ValueError("it holds no weights (a stream is saved with its layer's weights)")
    for i in range(counts["n_weights"]):
        data.shape(f"w{i}")  # every name present before any array is read
    layer.set_weights([data.read(f"w{i}") for i in range(counts["n_weights"])])
    _safe_io.check_features(declared, layer.cells[0].input_dim, "the layer")
    _restore_quantized(layer, meta.get("quantized"), data)
    threads = meta.get("threads")  # (files written before it existed: None)
    if threads is not None and not _is_one_or_two(threads):
        raise ValueError(f"meta: threads expected null, 1 or 2, got {threads!r}")
    stream = _with_saved_threads(
        lambda t: Stream(layer, batch_size=B, backend=meta.get("backend"), threads=t),
        threads, where)
    stream.states = [data.read(f"s{i}") for i in range(len(sizes))]
    return stream


def _restore_quantized(layer, entries, data):
    """Put a stream file's compact weights (``meta["quantized"]``) into the
    layer's cells, exactly (see :meth:`Stream.save`)."""
    if entries is None:
        return
    cells = layer.cells
    if not isinstance(entries, list) or len(entries) != len(cells):
        raise ValueError(f"meta: quantized expected one entry per cell ({len(cells)})")
    for i, (cell, entry) in enumerate(zip(cells, entries)):
        if entry is None:
            continue
        names = entry.get("arrays") if isinstance(entry, dict) else None
        if (not isinstance(entry.get("mode") if isinstance(entry, dict) else None, str)
                or not isinstance(names, list) or not all(isinstance(n, str) for n in names)):
            raise ValueError(f"meta: quantized[{i}] expected null or {{mode, arrays}}")
        for n in names:
            data.shape(n)  # present before any is read
        cell._load_quantized(entry["mode"], [data.read(n) for n in names],
                             f"meta: quantized[{i}]")
