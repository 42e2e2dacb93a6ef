"""Top-k selection helpers shared by the scan kernels.

Scores are always "higher is better" inside the kernels; the index flips
the sign for distances. A heap is a pair of arrays (scores, slots) of length
k holding a min-heap on score, padded with (-inf, -1).
"""
from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True, inline="always")
def heap_push(hs, hi, score, slot):
    """Replace the root of the min-heap (hs, hi) with (score, slot) and sift down.

    Call only when score > hs[0]; equal scores keep the earlier slot, which
    matches a stable sort on -score.
    """
    k = hs.shape[0]
    pos = 0
    while True:
        child = 2 * pos + 1
        if child >= k:
            break
        right = child + 1
        if right < k and (hs[right] < hs[child] or (hs[right] == hs[child] and hi[right] > hi[child])):
            child = right
        if hs[child] < score or (hs[child] == score and hi[child] > slot):
            hs[pos] = hs[child]
            hi[pos] = hi[child]
            pos = child
        else:
            break
    hs[pos] = score
    hi[pos] = slot


@njit(cache=True, nogil=True, inline="always")
def heap_push_row(hs, hi, j, score, slot):
    """`heap_push` on row j of the heaps (hs, hi) (rows, k), indexed in place: a view of the row per
    push cost a kernel that pushes on every hit more than the push itself."""
    k = hs.shape[1]
    pos = 0
    while True:
        child = 2 * pos + 1
        if child >= k:
            break
        right = child + 1
        if right < k and (hs[j, right] < hs[j, child] or (hs[j, right] == hs[j, child] and hi[j, right] > hi[j, child])):
            child = right
        if hs[j, child] < score or (hs[j, child] == score and hi[j, child] > slot):
            hs[j, pos] = hs[j, child]
            hi[j, pos] = hi[j, child]
            pos = child
        else:
            break
    hs[j, pos] = score
    hi[j, pos] = slot


@njit(cache=True, nogil=True)
def sorted_topk(scores, slots, k, out_s, out_i):
    """Write the best k of (scores, slots) to out_s/out_i, best first.

    Ties break towards the lower slot; missing entries are (-inf, -1).
    """
    m = scores.shape[0]
    by_slot = np.empty(m, np.int64)
    for j in range(m):
        by_slot[j] = slots[j] if slots[j] >= 0 else np.iinfo(np.int64).max
    # Two stable sorts: by slot, then by score, give score order with slot tie-break.
    first = np.argsort(by_slot, kind="mergesort")
    key = np.empty(m, np.float64)
    for j in range(m):
        key[j] = -np.float64(scores[first[j]])
    order = first[np.argsort(key, kind="mergesort")]
    for w in range(k):
        if w < m and slots[order[w]] >= 0:
            out_s[w] = scores[order[w]]
            out_i[w] = slots[order[w]]
        else:
            out_s[w] = -np.inf
            out_i[w] = -1
