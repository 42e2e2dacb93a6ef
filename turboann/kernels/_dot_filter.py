"""TEMPORARY: filtered search over the integer engine's row-major codes until `kernels.dot` takes
an `allowed` mask itself (`search_dot(..., allowed=)`, `search_dot_lists(..., allowed=)`).

Until then `Index._search_dot` and `IVFIndex._search_lists` route a filtered
dot-engine search here: when few slots are allowed each is scored directly
by the engine's own exact score (`dot._exact_score`, so results equal its
exact top k restricted to them); otherwise the index asks the unfiltered
kernel for a larger k and keeps the allowed ones (`Index._dot_overfetch`).
Delete this module when the engine's mask lands.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from .dot import _exact_score
from .ivf_scan import probed_lists
from .topk import heap_push, sorted_topk


@njit(parallel=True, cache=True, nogil=True)
def score_dot_slots(codes, factors, queries, book, cents, slots, k):
    """Exact top k among slots (m,) int64 (ascending) of codes (n, code_bytes) uint8 for each query
    of `queries` (a `dot.DotQueries`): scores (nq, k) float32 best first, slots (nq, k) int64."""
    nq = queries.rotated.shape[0]
    width = 4 * queries.lanes.shape[1]
    out_s = np.empty((nq, k), np.float32)
    out_i = np.empty((nq, k), np.int64)
    for q in prange(nq):
        values = np.empty(width, np.uint8)
        raw = np.empty(width, np.uint8)
        hs = np.full(k, -np.inf)
        hi = np.full(k, -1, np.int64)
        for t in range(slots.shape[0]):
            sc = _exact_score(codes, factors, slots[t], queries, q, book, cents, values, raw)
            if sc > hs[0]:
                heap_push(hs, hi, sc, slots[t])
        tmp = np.empty(k)
        sorted_topk(hs, hi, k, tmp, out_i[q])
        out_s[q] = tmp
    return out_s, out_i


@njit(parallel=True, cache=True, nogil=True)
def score_dot_list_slots(codes, factors, slots, slot_list, list_start, list_size, qc, cnorm2, probe_l2,
                         list_bias_mult, nprobe, queries, book, cents, k):
    """`score_dot_slots` over the nprobe nearest lists of each query (as `dot.search_dot_lists`):
    slot_list (m,) int64 is the list of each slot; a list's score shift is list_bias_mult * qc[q, l]."""
    nq = queries.rotated.shape[0]
    width = 4 * queries.lanes.shape[1]
    out_s = np.empty((nq, k), np.float32)
    out_i = np.empty((nq, k), np.int64)
    for q in prange(nq):
        probed = probed_lists(qc[q], cnorm2, probe_l2, nprobe)
        values = np.empty(width, np.uint8)
        raw = np.empty(width, np.uint8)
        hs = np.full(k, -np.inf)
        hi = np.full(k, -1, np.int64)
        for t in range(slots.shape[0]):
            l = slot_list[t]
            v = slots[t]
            if not probed[l] or v >= list_start[l] + list_size[l]:
                continue
            sc = (_exact_score(codes, factors, v, queries, q, book, cents, values, raw)
                  + list_bias_mult * np.float64(qc[q, l]))
            if sc > hs[0]:
                heap_push(hs, hi, sc, v)
        tmp = np.empty(k)
        sorted_topk(hs, hi, k, tmp, out_i[q])
        out_s[q] = tmp
    return out_s, out_i
