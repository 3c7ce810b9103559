"""The panel split: two threads share each step's panels, for small batches.

The calling thread ("main", worker 0) runs the whole sequence and never
depends on the other: it claims panels of its own half, then whatever the
helper (worker 1: a thread of Numba's pool through split_par, or the
backend's own thread under workqueue, see :mod:`.threads`; it may wake up late or lose its core to
another process) has not claimed yet, and waits only for panels the
helper is computing at that moment. The helper helps while it keeps up
and leaves as soon as it falls behind or finds the sequence finished;
nothing waits for it to arrive, so a busy machine costs at most one
stalled panel (plus, with split_par, the launch's join: the helper
returns as soon as it is scheduled and sees the "finished" flag).

The sync array (int64) holds, one cache line apart: the claim counters of
the two halves (cumulative over steps), the count of panels done
(cumulative), the number of threads asleep on it, the flag telling the
helper to leave, the spin limit (set by the caller), the "finished" flag,
the panels each worker ran, the step at which the helper claimed its
first panel (-1 until then, as the caller sets it; set before any of the
helper's panels counts as done, so a caller that has seen every panel done
sees it), the most panels one claim may take (set by the caller), and, in
a stack's stream, the flag that hands the layer's output over to the next
layer (:func:`stack_run`).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .fpenv import flush_denormals, restore_fp
from .packed import (call_record, hoist_size, is_dot, load_inputs, load_state, panel,
                     quantize_state, state_buffers, step_flags, store_state)
from .simd import LANES, prefetch_l1
from .sync import atomic_add, atomic_cas, atomic_load, cpu_relax, futex_wait, futex_wake

_CLAIM0, _CLAIM1, _DONE, _WAITERS, ABANDON, SPINS, FINISHED, _COUNT0, JOIN, CHUNK, HANDED, \
    SYNC_SIZE = (0, 8, 16, 24, 32, 40, 48, 56, 72, 80, 88, 96)
# panels run by worker w: sync[COUNT + 8 * w]
COUNT = _COUNT0
# pause-spins before a waiting thread stops waiting for the other (about
# 50-100 us: ten panels' time)
DEFAULT_SPINS = 4000
_SLEEP_NS = 200_000
_NAPS = 5  # naps of _SLEEP_NS without progress before main goes on alone


@njit(inline="always")
def _wait_done(sync, target, w):
    """Wait until ``target`` panels are done; False when the helper gives up.

    Patience is counted from the other thread's last finished panel: while
    it keeps finishing panels, waiting goes on."""
    spins = 0
    naps = 0
    seen = atomic_load(sync, _DONE)
    limit = sync[SPINS]
    while True:
        done = atomic_load(sync, _DONE)
        if done >= target:
            return True
        if done != seen:  # a panel was finished: wait afresh for the next
            seen = done
            spins = 0
            naps = 0
        if spins < limit:
            cpu_relax()
            spins += 1
            continue
        if w != 0:
            if spins < 4 * limit:  # the helper is more patient: main may just be late
                cpu_relax()
                spins += 1
                continue
            # ... and then naps (main wakes it when it finishes a panel):
            # main may have lost its vCPU for a moment (see below)
            naps += 1
            if naps > 2 * _NAPS:
                return False  # main stays away: it finishes alone
            atomic_add(sync, _WAITERS, 1)
            v = atomic_load(sync, _DONE)
            if v < target:
                futex_wait(sync, _DONE, v, _SLEEP_NS)
            atomic_add(sync, _WAITERS, -1)
            continue
        # The helper has sat on one panel far longer than a panel takes: its
        # core was taken. Sleep instead of spinning. A virtual machine loses
        # a vCPU for a fraction of a millisecond many times a second: the
        # helper then comes back and goes on. Only after _NAPS naps without
        # a panel finished (about a millisecond: another process has its
        # core for a scheduler slice) is it told to leave after that panel,
        # and main finishes alone.
        naps += 1
        if naps > _NAPS:
            atomic_cas(sync, ABANDON, 0, 1)
        atomic_add(sync, _WAITERS, 1)
        v = atomic_load(sync, _DONE)
        if v < target:
            futex_wait(sync, _DONE, v, _SLEEP_NS)
        atomic_add(sync, _WAITERS, -1)


@njit(inline="always")
def _left_out(sync, w):
    """True when the helper (``w != 0``) must stop: told to, or all is done."""
    return w != 0 and (atomic_load(sync, ABANDON) != 0 or atomic_load(sync, FINISHED) != 0)


@njit(nogil=True, _nrt=False)
def _claim_run(w, sync, slot, s, lo, cnt, call, t, hf, cb, cur, nxt, valid, started):
    """Claim and run the panels ``lo .. lo+cnt-1`` of step ``s`` one at a
    time until none is left; returns how many this thread ran. Odd steps
    take them last to first: the panels a step read last, still in this
    core's L2 where a half's panels do not all fit, are read first again."""
    did = 0
    end = (s + 1) * cnt
    # claim a few panels at a time: one atomic per chunk, not per panel (the
    # counters' cache lines bounce between the cores), while a stalled
    # thread still holds at most a chunk (at most sync[CHUNK] panels: large
    # panels are claimed one by one)
    chunk = max(1, min((cnt + 1) // 2, sync[CHUNK]))
    B = valid.shape[0]
    while True:
        if _left_out(sync, w):
            return did
        c = atomic_load(sync, slot)
        if c >= end:
            return did
        c1 = min(end, c + chunk)
        if atomic_cas(sync, slot, c, c1):
            if w != 0 and did == 0 and atomic_load(sync, JOIN) < 0:
                # the step the helper joined at, set before any of its
                # panels counts as done (the caller reads it once all are)
                atomic_cas(sync, JOIN, -1, s)
            for q in range(c, c1):
                j = q - s * cnt
                jn = (j + 1) % cnt  # the panel to prefetch
                if s & 1:
                    j, jn = cnt - 1 - j, cnt - 1 - jn
                # (row 0 typed int64, as run_rows passes it: a literal 0
                # would compile a second copy of panel)
                panel(call, lo + j, lo + jn, np.int64(0), B, t, hf, cb, cur, nxt, valid,
                      started)
            did += c1 - c
            atomic_add(sync, _COUNT0 + 8 * w, c1 - c)  # before _DONE: read once all is done
            atomic_add(sync, _DONE, c1 - c)
            if atomic_load(sync, _WAITERS) > 0:
                futex_wake(sync, _DONE)


@njit(cache=True, nogil=True)
def split_prepare(gru, H, h0, c0, hoist):
    """Buffers of a panel-split call: the state (``hf``, ``cb``, loaded from
    h0/c0) and the hoisted input sums ``P`` (see :mod:`.packed`)."""
    B = h0.shape[0]
    NP = (H + LANES - 1) // LANES
    Hp = NP * LANES
    hf = np.zeros(2 * B * Hp, dtype=np.float32)
    cb = np.zeros(B * Hp, dtype=np.float32)
    P = np.empty(hoist_size(H, hoist, B), dtype=np.float32)
    load_state(gru, 0, B, H, Hp, h0, c0, hf, cb)
    return hf, cb, P


@njit(cache=True, nogil=True)
def split_work(w, sync, gru, H, weights, gates, io, opts, hf, cb, P):
    """Worker ``w`` of a panel-split call (0: the caller, runs to the end;
    1: the helper, leaves when it falls behind). ``io``'s states are unused
    (``hf``/``cb`` hold them). Panels run: ``sync[COUNT + 8 * w]``."""
    x, h0, c0, mask, has_mask, out, has_out, h_out, c_out, xs = io
    reverse, zero_output, hoist = opts
    B, T, D = x.shape
    NP = (H + LANES - 1) // LANES
    Hp = NP * LANES
    half = (NP + 1) // 2
    if w == 0:
        my_slot, my_lo, my_cnt, ot_slot, ot_lo, ot_cnt = _CLAIM0, 0, half, _CLAIM1, half, NP - half
    else:
        my_slot, my_lo, my_cnt, ot_slot, ot_lo, ot_cnt = _CLAIM1, half, NP - half, _CLAIM0, 0, half
    started = np.zeros(B, dtype=np.bool_)
    valid = np.ones(B, dtype=np.bool_)
    # P: shared by both workers (see split_prepare)
    # int8_dynamic: each worker quantizes the state into its own buffers
    dot = is_dot(weights[0])
    hq, hs = state_buffers(weights[0], B, Hp)
    call = call_record(gru, H, weights, gates, io, (reverse, zero_output, hoist and B == 1), P,
                       (xs, hq, hs))
    fpu = flush_denormals()  # this thread, until the end (see .fpenv)
    for s in range(T):
        if _left_out(sync, w):
            break
        t = T - 1 - s if reverse else s
        cur = (s & 1) * B * Hp
        nxt = B * Hp - cur
        step_flags(0, B, t, mask, has_mask, valid)
        # half of h was written by the other core: ask for all of it at once
        for j in range(cur, cur + B * Hp, 16):
            prefetch_l1(hf, j)
        if dot:
            quantize_state(hf, cur, B, H, Hp, hq, hs)
        # own half first (its weights stay in this core's cache), then
        # whatever the other thread has not claimed yet
        _claim_run(w, sync, my_slot, s, my_lo, my_cnt, call, t, hf, cb, cur, nxt, valid,
                   started)
        _claim_run(w, sync, ot_slot, s, ot_lo, ot_cnt, call, t, hf, cb, cur, nxt, valid,
                   started)
        if not _wait_done(sync, (s + 1) * NP, w):
            break
        for r in range(B):
            started[r] = started[r] or valid[r]
    restore_fp(fpu)
    if w == 0:
        atomic_add(sync, FINISHED, 1)


@njit(cache=True, nogil=True, parallel=True)
def split_par(sync, gru, H, weights, gates, io, opts, hf, cb, P):
    """A panel-split call on Numba's thread pool: workers 0 and 1 are the two
    iterations of one parallel loop, so the second thread starts within a
    microsecond or two instead of waking a Python thread (which needs the
    GIL). Worker 1 still leaves as soon as it falls behind, and worker 0
    never waits for it to arrive."""
    for w in prange(2):
        # int64, as a caller from Python passes it (the loop index is
        # unsigned once the loop is parallel: a second copy of split_work)
        split_work(np.int64(w), sync, gru, H, weights, gates, io, opts, hf, cb, P)


@njit(cache=True, nogil=True)
def split_finish(gru, H, T, hf, cb, h_out, c_out):
    """Final states of a panel-split call."""
    B = h_out.shape[0]
    Hp = (H + LANES - 1) // LANES * LANES
    store_state(gru, 0, B, T, H, Hp, hf, cb, h_out, c_out)


# ----- a stream's calls: the same split, with a helper that stays awake -----
#
# A stream calls one step (a frame) or a few (a chunk) at a time, thousands
# of times a second. A parallel launch per call finds the pool's thread
# asleep (it spins only briefly after a launch, see .threads) and a frame is
# half over before it helps. A stream's split therefore keeps its own helper
# thread inside :func:`stream_helper`, on buffers fixed once for one call
# shape, and rings it per call through the ``bell`` array (int64, one cache
# line apart): the call count, the last call the helper finished, the stop
# flag, and the number of helpers asleep on it. The helper spins a while
# after each call, then sleeps on a futex; it goes to sleep at once when
# another stream split starts a call (``frames[0]`` counts the calls of
# every one in the process), so that a server interleaving streams does not
# keep idle helpers spinning beside the working ones. The caller rings only
# a helper that has finished its last call (one late helper never sees two
# calls' counters), and otherwise runs the call alone on a second sync array.
BELL_GEN, BELL_ACK, BELL_STOP, BELL_SLEEPERS, BELL_SIZE = 0, 8, 16, 24, 32
# a sleeping helper also looks at the stop flag this often
_IDLE_NS = 1_000_000_000


@njit(inline="always")
def _await_ring(bell, frames, spins, seen):
    """A helper's wait for the call after call ``seen`` on ``bell``: ``spins``
    pause-spins (fewer if another stream split starts a call), then sleep
    until rung. Returns the call's number, or -1 once told to stop."""
    n = 0
    others = atomic_load(frames, 0)
    while True:
        if atomic_load(bell, BELL_STOP) != 0:
            return -1
        g = atomic_load(bell, BELL_GEN)
        if g != seen:
            return g
        if n < spins and atomic_load(frames, 0) == others:
            cpu_relax()
            n += 1
            continue
        atomic_add(bell, BELL_SLEEPERS, 1)
        if atomic_load(bell, BELL_GEN) == seen and atomic_load(bell, BELL_STOP) == 0:
            futex_wait(bell, BELL_GEN, seen, _IDLE_NS)
        atomic_add(bell, BELL_SLEEPERS, -1)


def flat_args(spins, chunk, gru, H, weights, gates, io, opts, hf, cb, P):
    """The arguments of :func:`stream_run` after ``sync, solo, starved``,
    flat: the packed drivers' tuples spread out, less ``io``'s initial
    states (a stream's calls start from their final states, the same
    arrays)."""
    if io[1] is not io[7] or io[2] is not io[8]:
        raise ValueError("a stream split reads its states from the arrays it writes them to")
    return (spins, chunk, gru, H) + tuple(weights) + tuple(gates) + (io[0],) + tuple(io[3:]) \
        + tuple(opts) + (hf, cb, P)


@njit(inline="always")
def _clear(s, spins, chunk):
    """A sync array ready for a call: counters at zero, the spin limit and
    claim size set, the helper not joined."""
    for i in range(SYNC_SIZE):
        s[i] = 0
    s[SPINS] = spins
    s[CHUNK] = chunk
    s[JOIN] = -1


@njit(inline="always")
def _ring(bell):
    """Ring a waiting helper: 1, or 2 when it was asleep and had to be woken."""
    atomic_add(bell, BELL_GEN, 1)
    if atomic_load(bell, BELL_SLEEPERS) > 0:
        futex_wake(bell, BELL_GEN)
        return 2
    return 1


@njit(cache=True)
def helper_starved(NP, T, helper, joined, abandoned, starved):
    """Whether a panel split's helper lost its core: the caller had to take
    a panel over from it (``abandoned``), or, once it joined (at step
    ``joined``), it ran fewer than ``starved`` (a fraction) of its half's
    panels (``NP`` panels a step, ``T`` steps). A helper that joined late,
    or never, is no sign of it."""
    share = (NP - (NP + 1) // 2) * (T - joined)
    return abandoned or (joined >= 0 and helper < starved * share)


@njit(cache=True)
def outcome(rung, sync, NP, T, starved):
    """What a stream call tells its caller, in one integer (0: the helper
    was not rung): ``rung`` (1 rung awake, 2 woken) in bits 0-1; bit 2 the
    helper looked starved (:func:`helper_starved` with the fraction
    ``starved``), bit 3 the caller took a panel over from it; from bit 4
    the panels it ran (``sync``'s counters, complete once the caller has
    finished: the helper may still be on its way out)."""
    if rung == 0:
        return 0
    helper = atomic_load(sync, COUNT + 8)
    abandoned = atomic_load(sync, ABANDON) != 0
    hungry = helper_starved(NP, T, helper, atomic_load(sync, JOIN), abandoned, starved)
    return rung | (np.int64(hungry) << 2) | (np.int64(abandoned) << 3) | (helper << 4)


@njit(inline="always")
def _copy_rows(dst, src):
    for r in range(src.shape[0]):
        for k in range(src.shape[1]):
            dst[r, k] = src[r, k]


@njit(cache=True, nogil=True)
def stream_run(bell, frames, ring, x, y, sync, solo, starved, spins, chunk, gru, H, w0, w1, w2,
               w3, g0, g1, g2, g3, xb, mask, has_mask, out, has_out, h, c, xs, reverse,
               zero_output, hoist, hf, cb, P):
    """One call ``x (B, T, D)`` of a stream's split (``T`` fixed by the input
    buffer ``xb``, which takes ``x`` as the drivers read it: copied, or for
    the dynamic formats quantized or rounded, see :func:`.packed.load_inputs`),
    from and into the states ``h`` / ``c``, whose final
    ``h`` is copied to ``y (B, units)`` too (the outputs of every step go to
    ``out`` when ``has_out``). With ``ring`` and the helper done with its
    last call, rings it and shares the panels; otherwise runs them alone
    (on ``solo``). Returns :func:`outcome` (``starved``: the fraction of
    its share below which the helper looks starved).

    The packed drivers' tuples (``weights``, ``gates``, ``io`` less its
    initial states, which are the final ones, ``opts``) come spread out
    (:func:`flat_args`): Numba's dispatcher types the elements of a tuple in
    Python but arrays passed one by one in C, and this call is made once
    per frame."""
    weights, gates, opts = (w0, w1, w2, w3), (g0, g1, g2, g3), (reverse, zero_output, hoist)
    io = (xb, h, c, mask, has_mask, out, has_out, h, c, xs)
    B, T = xb.shape[0], xb.shape[1]
    load_inputs(x, xb, xs)
    Hp = (H + LANES - 1) // LANES * LANES
    load_state(gru, 0, B, H, Hp, h, c, hf, cb)
    free = ring and atomic_load(bell, BELL_ACK) == atomic_load(bell, BELL_GEN)
    s = sync if free else solo
    _clear(s, spins, chunk)
    rung = _ring(bell) if free else 0
    # (after the ring: our own helper sees its bell before this count)
    atomic_add(frames, 0, 1)
    split_work(np.int64(0), s, gru, H, weights, gates, io, opts, hf, cb, P)
    store_state(gru, 0, B, T, H, Hp, hf, cb, h, c)
    _copy_rows(y, h)
    return outcome(rung, sync, (H + LANES - 1) // LANES, T, starved)


@njit(cache=True, nogil=True)
def wake(bell):
    """Wake a stream's sleeping frame helper (to see the stop flag)."""
    atomic_add(bell, BELL_GEN, 0)
    futex_wake(bell, BELL_GEN)


# ----- a stack's calls: every layer split, one helper for all of them -----
#
# A stack runs its layers in order, each split as above: the caller is
# worker 0 of every layer and one helper thread (stream_helper with every
# layer), rung once per stack call, worker 1 of every layer in turn. The
# caller makes one call per layer (stack_run, flat arguments); the helper
# starts on layer l only once the caller has handed layer l - 1's output
# over (its sync[HANDED], set after the layer finished, and for the dynamic
# formats after that output was quantized, or rounded, into layer l's input
# buffer): the layer's input is then complete. Before it finishes layer
# l - 1 (before it rings, for the first two), the caller has loaded layer
# l's state and cleared its sync array, so the helper never finds a layer
# that is not ready. A call the
# helper is not rung for runs every layer alone on ``solo``; a helper still
# on its last call then finds every layer of that call finished and touches
# nothing.

@njit(inline="always")
def _wait_handed(sync, bell):
    """Wait until the caller has handed the output of the layer of ``sync``
    over to the next layer; False when told to stop first (a call
    interrupted between two layers never hands the next one over)."""
    spins = 0
    while atomic_load(sync, HANDED) == 0:
        if atomic_load(bell, BELL_STOP) != 0:
            return False
        if spins < DEFAULT_SPINS:
            cpu_relax()
            spins += 1
        else:  # (the caller lost its core: nap; nothing wakes this wait)
            futex_wait(sync, HANDED, 0, _SLEEP_NS)
    return True


@njit(cache=True, nogil=True)
def stream_helper(bell, frames, spins, layers):
    """The helper of a stream's split: worker 1 of each layer of ``layers``
    (per layer ``(sync, gru, H, weights, gates, io, opts, hf, cb, P)``, one
    type for all; one layer for a one-layer stream) in turn, for every
    call rung on ``bell``, until ``bell[BELL_STOP]`` is set. Between calls
    it spins ``spins`` pause-spins (unless another stream split starts a
    call), then sleeps until rung."""
    # the last call it finished (not the count: the caller may ring before
    # this thread first runs, and that call must still be answered)
    seen = atomic_load(bell, BELL_ACK)
    while True:
        g = _await_ring(bell, frames, spins, seen)
        if g < 0:
            return
        seen = g
        for i in range(len(layers)):
            if i > 0 and not _wait_handed(layers[i - 1][0], bell):
                return
            sync, gru, H, weights, gates, io, opts, hf, cb, P = layers[i]
            split_work(np.int64(1), sync, gru, H, weights, gates, io, opts, hf, cb, P)
        atomic_add(bell, BELL_ACK, g - atomic_load(bell, BELL_ACK))  # only the helper writes it


@njit(nogil=True, _nrt=False)
def _load_next(out, xb, xs):
    """A layer's output loaded into the next layer's input buffer (a call,
    not inlined: stack_run inlines :func:`.packed.load_inputs` once
    already, for the first layer's input)."""
    load_inputs(out, xb, xs)


@njit(cache=True, nogil=True)
def stack_run(bell, frames, ring, first, x, y, sync, solo, starved, nsync, nspins, nchunk, ngru,
              nH, nhf, ncb, nh, nc, nxb, nxs, nload, has_next, spins, chunk, gru, H, w0, w1, w2,
              w3, g0, g1, g2, g3, xb, mask, has_mask, out, has_out, h, c, xs, reverse,
              zero_output, hoist, hf, cb, P):
    """One layer of a stack's call (the layer's flat arguments as
    :func:`stream_run`'s; ``n*``: the next layer's sync array, spins, claim
    size, cell, units, state buffers, states, input buffer and its row
    scales, and whether that buffer is loaded from this layer's output
    ``out`` (the dynamic formats; otherwise it is ``out``), when
    ``has_next``; the last layer copies its final ``h`` to ``y``).

    The ``first`` layer loads ``x`` into its input buffer
    (:func:`.packed.load_inputs`: copied, quantized or rounded), its state
    and, with ``ring`` and the helper done with its last call, rings it. A
    later layer gets the first one's rung value (its result's bits 0-1) as
    ``ring``. Every layer loads the next layer's state (and, rung, clears
    its sync array) before it runs, runs its panels (on ``sync`` when rung,
    else alone on ``solo``), hands its output over to the next layer
    (loaded into its input buffer with :func:`.packed.load_inputs` where
    ``nload``; then the flag the helper waits for, ``HANDED``), stores its
    own state and returns :func:`outcome` for its own panels."""
    weights, gates, opts = (w0, w1, w2, w3), (g0, g1, g2, g3), (reverse, zero_output, hoist)
    io = (xb, h, c, mask, has_mask, out, has_out, h, c, xs)
    B, T = xb.shape[0], xb.shape[1]
    Hp = (H + LANES - 1) // LANES * LANES
    rung = ring
    if first:
        load_inputs(x, xb, xs)
        load_state(gru, 0, B, H, Hp, h, c, hf, cb)
        rung = 0
        if ring != 0 and atomic_load(bell, BELL_ACK) == atomic_load(bell, BELL_GEN):
            rung = 1
    if has_next:
        load_state(ngru, 0, B, nH, (nH + LANES - 1) // LANES * LANES, nh, nc, nhf, ncb)
        if rung:
            _clear(nsync, nspins, nchunk)
    s = sync if rung else solo
    if first or not rung:
        _clear(s, spins, chunk)
    if first:
        if rung:
            rung = _ring(bell)
        atomic_add(frames, 0, 1)
    split_work(np.int64(0), s, gru, H, weights, gates, io, opts, hf, cb, P)
    if has_next:
        if nload:
            _load_next(out, nxb, nxs)
        atomic_add(s, HANDED, 1)
    store_state(gru, 0, B, T, H, Hp, hf, cb, h, c)
    if not has_next:
        _copy_rows(y, h)
    return outcome(rung, sync, (H + LANES - 1) // LANES, T, starved)
