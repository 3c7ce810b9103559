"""``activation(x @ kernel + bias)`` on a few rows: a model stream's
per-frame ``Dense`` layers (:class:`fastrnn.models.ModelStream`).

On one frame, NumPy's matmul, bias add and the several calls of a
softmax each cost more in call overhead than in arithmetic; compiled, the
whole layer is one call.
Each output sums its products over ``k`` in ascending order, in the
layer's dtype, from the bias; the activations are the kernels' scalar
ones (:mod:`fastrnn.kernels._math`); softmax and log-softmax subtract
the row's largest value first, as the NumPy path does, and sum the
exponentials in float64.
"""

from __future__ import annotations

import math

from numba import njit

from ...activations import LOG_SOFTMAX, SOFTMAX
from .gates import scalar_activate


@njit(cache=True, nogil=True)
def dense_rows(x, W, b, act, out):
    """``out[n] = activation(x[n] @ W + b)`` for each row ``n`` of ``x (N, K)``
    (``W (K, U)``, ``b (U,)``, ``out (N, U)``); ``act``: a code of
    :mod:`fastrnn.activations`, including ``SOFTMAX`` and ``LOG_SOFTMAX``
    (over each row)."""
    N, K = x.shape
    U = W.shape[1]
    for n in range(N):
        for u in range(U):
            out[n, u] = b[u]
        for k in range(K):
            v = x[n, k]
            for u in range(U):
                out[n, u] += v * W[k, u]
        if act == SOFTMAX or act == LOG_SOFTMAX:
            m = out[n, 0]
            for u in range(1, U):
                if out[n, u] > m or math.isnan(out[n, u]):
                    m = out[n, u]
            s = 0.0  # (float64)
            for u in range(U):
                e = math.exp(out[n, u] - m)
                s += e
                if act == SOFTMAX:
                    out[n, u] = e
            if act == SOFTMAX:
                for u in range(U):
                    out[n, u] /= s
            else:
                ls = math.log(s)
                for u in range(U):
                    out[n, u] = out[n, u] - m - ls
        else:
            for u in range(U):
                out[n, u] = scalar_activate(act, out[n, u])
