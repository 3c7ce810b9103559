"""Shared helpers of the fastrnn asv suite (not benchmarks themselves)."""

from __future__ import annotations

import numpy as np

D_IN = 64  # input features of every benchmarked layer

# Each combination below is skipped on the reference backend (NumPy, one
# step at a time) when it is larger than this many multiply-adds: it would
# only measure NumPy and make the suite slow.
REFERENCE_MAX_WORK = 8 * 200 * 256 * 320 * 4


# Combinations above this many multiply-adds are skipped on every backend
# (LSTM and GRU at batch 64, 200 steps, 1024 units): seconds per call, and
# the suite must stay quick enough to run in CI.
MAX_WORK = 20e9


def skip(reason=""):
    """Tell asv that a parameter combination does not apply."""
    raise NotImplementedError(reason)


def require_layers():
    try:
        import fastrnn

        fastrnn.LSTM  # noqa: B018
    except (ImportError, AttributeError):
        skip("fastrnn layers API not available")


def check_backend(name, work=0):
    from fastrnn import dispatch

    ok, why = dispatch.available(name)
    if not ok:
        skip(why)
    if name == "reference" and work > REFERENCE_MAX_WORK:
        skip("too large for the reference backend")
    if work > MAX_WORK:
        skip("too large for this suite")


def warm(call, batch):
    """Call ``call`` until the kernels are compiled (or loaded from Numba's
    cache) and, for batches of 8-31 rows, until the cpu backend has timed
    its two thread splits for this shape (its first 2 x (_TUNE_SAMPLES + 1)
    calls alternate between them): asv then measures the split it keeps."""
    n, threads = 1, None
    if 8 <= batch < 32:
        try:
            from fastrnn.kernels.cpu import threads

            n = 2 * (threads._TUNE_SAMPLES + 1) + 1
        except (ImportError, AttributeError):
            n = 9
    for _ in range(n):
        call()
    # a stalled call (another process took a core) is not counted: go on,
    # up to 4 x as many calls, while a shape is still being timed
    timing = getattr(threads, "_Timing", None)
    for _ in range(3 * n if timing is not None else 0):
        if not any(isinstance(v, timing) for v in threads._tuning.values()):
            break
        call()


def inputs(batch, steps, features=D_IN, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((batch, steps, features)).astype(np.float32)
