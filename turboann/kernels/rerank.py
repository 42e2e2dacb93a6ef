"""Exact re-ranking of a shortlist against kept float32 vectors."""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from . import _simd
from .topk import sorted_topk

_AHEAD = 4   # shortlist rows prefetched ahead of the one being scored


# Reassociation lets LLVM split each float64 sum over lanes: one running sum
# is a chain of dependent adds, which halves the speed.
@njit(parallel=True, cache=True, nogil=True, fastmath={"reassoc", "contract"})
def rerank_rows(vectors, rows, q, l2, k):
    """Best k of each query's shortlist by the exact score.

    vectors (n, d) float32; rows (nq, r) int64 rows of `vectors`, -1 for none;
    q (nq, d) float32. The score is <q, x> or, when l2, -||q - x||^2, summed
    in float64. Returns scores (nq, k) float64 best first and the shortlist
    columns (nq, k) int64 they came from, -1 padded; ties keep shortlist order.
    """
    nq, r = rows.shape
    d = q.shape[1]
    flat = vectors.reshape(-1)
    out_s = np.empty((nq, k), np.float64)
    out_c = np.empty((nq, k), np.int64)
    for i in prange(nq):
        scores = np.full(r, -np.inf, np.float64)
        cols = np.full(r, -1, np.int64)
        # Shortlist rows are scattered over memory: ask for row j + _AHEAD
        # while row j is scored.
        for j in range(min(_AHEAD, r)):
            _prefetch_row(flat, rows[i, j], d)
        for j in range(r):
            if j + _AHEAD < r:
                _prefetch_row(flat, rows[i, j + _AHEAD], d)
            row = rows[i, j]
            if row < 0:
                continue
            x = vectors[row]
            s = 0.0
            if l2:
                for t in range(d):
                    diff = np.float64(q[i, t]) - x[t]
                    s -= diff * diff
            else:
                for t in range(d):
                    s += np.float64(q[i, t]) * x[t]
            scores[j] = s
            cols[j] = j
        sorted_topk(scores, cols, k, out_s[i], out_c[i])
    return out_s, out_c


@njit(cache=True, nogil=True, inline="always")
def _prefetch_row(flat, row, d):
    """Prefetch row `row` (none when < 0) of the raveled (n, d) float32 vectors, 16 floats a cache line."""
    if row >= 0:
        for t in range(0, d, 16):
            _simd.prefetch(flat, row * d + t)
