"""Exact re-ranking of a shortlist against kept float32 vectors."""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from .topk import sorted_topk


# Reassociation lets LLVM split each float64 sum over lanes: one running sum
# is a chain of dependent adds (measured 50 us a query for 100 x 384).
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
    out_s = np.empty((nq, k), np.float64)
    out_c = np.empty((nq, k), np.int64)
    for i in prange(nq):
        scores = np.full(r, -np.inf, np.float64)
        cols = np.full(r, -1, np.int64)
        for j in range(r):
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
