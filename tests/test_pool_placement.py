"""Numba's pool threads are kept off the calling thread's CPU
(``kernels.cpu.threads._place_pool``): woken beside the caller, a pool
thread can stay there, and a call on two threads then runs at one's speed."""

from __future__ import annotations

import os
import threading

import numba
import numpy as np
import pytest

import fastrnn

pytestmark = pytest.mark.skipif(not hasattr(os, "sched_setaffinity"),
                                reason="thread affinity is Linux's")


@pytest.fixture
def two_cpus():
    allowed = os.sched_getaffinity(0)
    if len(allowed) < 2 or numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("the process may use one CPU only")
    before = fastrnn.get_num_threads()
    fastrnn.set_num_threads(2)
    yield allowed
    fastrnn.set_num_threads(before)


def test_pool_threads_leave_the_callers_cpu_and_follow_it(two_cpus, monkeypatch):
    from fastrnn.kernels.cpu import generic
    from fastrnn.kernels.cpu import threads as th

    allowed = two_cpus
    th._start_pool()
    th._place_pool()
    me = threading.get_native_id()
    tids, here = th._pools[(os.getpid(), me)]
    assert tids and me not in tids
    assert here in allowed
    for tid in tids:
        assert os.sched_getaffinity(tid) == allowed - {here}
    # the caller moved: the pool moves away from its new CPU
    moved = min(allowed - {here})
    monkeypatch.setattr(generic, "here", lambda: moved)
    th._place_pool()
    assert th._pools[(os.getpid(), me)][1] == moved
    for tid in tids:
        assert os.sched_getaffinity(tid) == allowed - {moved}


def test_a_two_thread_call_places_the_pool(two_cpus, monkeypatch, rng):
    """A row-split call (batch 8) places the pool before it runs, and gives
    the reference's numbers."""
    from fastrnn.kernels.cpu import threads as th

    monkeypatch.setattr(th, "_contended", lambda: False)
    monkeypatch.setattr(th, "_pools", {})
    layer = fastrnn.LSTM(33, return_sequences=True)
    layer.build((None, None, 70))
    x = rng.standard_normal((8, 30, 70)).astype(np.float32)
    got = layer(x)
    # 4 * 8 * 30 * 33 * 103 multiply-adds: the pool ran, placed first
    assert th._pools[(os.getpid(), threading.get_native_id())][1] is not None
    want = fastrnn.LSTM(33, return_sequences=True, backend="reference")
    want.build((None, None, 70))
    want.set_weights(layer.get_weights())
    np.testing.assert_allclose(got, want(x), atol=2e-5)


def test_each_calling_thread_places_its_own_pool(two_cpus):
    """Under the omp layer a second calling thread launches on a team of its
    own: its pool is found and placed apart from the first one's."""
    from fastrnn.kernels.cpu import threads as th

    th._start_pool()
    th._place_pool()
    seen = {}

    def other():
        th._place_pool()
        seen["key"] = (os.getpid(), threading.get_native_id())

    t = threading.Thread(target=other)
    t.start()
    t.join()
    tids, placed = th._pools[seen["key"]]
    assert seen["key"][1] not in tids and placed in two_cpus
    if th.threading_layer() == "omp":
        assert set(tids).isdisjoint(th._pools[(os.getpid(), threading.get_native_id())][0])


def test_a_pool_larger_than_the_other_cpus_is_left_unplaced(two_cpus, monkeypatch):
    """NUMBA_NUM_THREADS above the CPU count: kept off the caller's CPU, the
    pool's threads would all share the others, so none is pinned."""
    from fastrnn.kernels.cpu import threads as th

    me = threading.get_native_id()
    key = (os.getpid(), me)
    fake = tuple(range(10**6, 10**6 + len(two_cpus)))  # one more than the other CPUs
    pinned = []
    monkeypatch.setattr(th, "_pools", {key: [fake, None]})
    monkeypatch.setattr(os, "sched_setaffinity", lambda tid, cpus: pinned.append(tid))
    th._place_pool()
    assert pinned == [] and th._pools[key][0] == ()
    monkeypatch.setattr(th, "_pools", {key: [fake[:len(two_cpus) - 1], None]})
    th._place_pool()
    assert sorted(pinned) == sorted(fake[:len(two_cpus) - 1])
