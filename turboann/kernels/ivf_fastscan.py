"""Fast-scan over inverted lists: a batch of queries scans each probed list together.

The lists hold codes in the blocked layout of `kernels.fastscan`, and one
lookup table per query serves every list (see `kernels.ivf_scan`): only the
additive <q, c_l> term differs per list, and it moves the query's threshold.

List-major batches. A query scanning its own lists reads about nprobe / nlist
of the codes, from memory, once per query. Here a batch of queries is first
inverted into "which queries probe list l", then each list is read once and
scanned for all of them, four queries per code load (`fastscan.block_sums`
with m = 4), while it sits in L1.

Deferred re-scoring. Lists come in arena order, not in each query's order of
nearness, so the running k-th best exact score would rise slowly and many
vectors would be re-scored early. Instead each query keeps the k best lower
bounds of its quantized scores (their root, tau, is at most the final k-th
best exact score) and records every vector whose upper bound reaches tau
(`fastscan.gather_candidates`, as the flat scan, with the list's shift).
The bounds of a block the u8 tables let by are refined by the residual
tables (`fastscan.build_tables`), about 126 times tighter, so tau sits just
below the k-th best and few vectors are recorded.
Afterwards each query re-scores its recorded vectors in order of falling
upper bound, stopping at the first whose bound is below its k-th best exact
score. Every vector of the exact top k is recorded (its upper bound is at
least its score, at least the final k-th best, at least every tau) and
re-scored (the k-th best at any time is at most the final one), so the top k
equals the float path's, ties to the lower slot.

Shortlists that are re-ranked from the kept vectors need no exact code
scores: with exact=False the same pass keeps each query's top k by the u8
estimate (`fastscan.estimates`, eight lanes at a time) + shift instead, and
nothing is re-scored. Shortlists are long (k ~ 100) and their threshold low,
so many vectors pass: they go to a reservoir of `_RESERVOIR` * k entries that
is cut back to its best k by selection when full (amortised O(1) a vector)
rather than through a heap (log k a vector).
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from .fastscan import (BLOCK, PAIR_BYTES, _bound_terms, _exact_partial, _refined_terms, _sums_avx2, _sums_avx512,
                       _sums_portable, block_allowed, build_tables, coordinate_centroids, direct_partial, estimates,
                       float_tables, gather_candidates, lane_allowed, n_pairs, pair_tables, reaches, refined_bounds, residual_sums,
                       slot_place, split_position, store_sums, store_upper, upper_bounds)
from .ivf_scan import nearest_lists, probed_lists
from .topk import heap_push, sorted_topk

_RESERVOIR = 4   # reservoir entries per shortlist place: a cut costs O(size) and frees size - k


# Bytes of per-query state a batch may hold: u8 and residual tables, and records or reservoir
# (records of 24 B, `_records_cap`, or 4k estimates of 16 B, a query).
_BATCH_BYTES = 64 << 20


def batch_size(nq: int, threads: int, k: int, rows: int) -> int:
    """Queries per list-major batch: two batches a thread, so that a thread the OS runs less does
    less, and no more than `_BATCH_BYTES` of state (long shortlists, k ~ 10^4, need small batches)."""
    per_query = 2 * PAIR_BYTES * -(-rows // 2) + 24 * _records_cap(k)
    return max(1, min(nq, 1024, -(-nq // (2 * threads)), _BATCH_BYTES // per_query))


@njit(cache=True, nogil=True)
def _records_cap(k):
    """Initial records a query (slot, bound, shift: 24 B each). About 230 a query pass tau on wordnet
    at k = 10, and each time the records fill up, those below tau are dropped (`_make_room`)."""
    return max(256, 8 * k)


@njit(parallel=True, cache=True, nogil=True)
def search_list_blocks(blocks, wsplit, list_start, list_size, qc, cnorm2, probe_l2, list_bias_mult, nprobe,
                       qrot, qoff, book, k, batch, simd, exact, allowed):
    """Exact float top k over the nprobe nearest inverted lists of each query (exact=False: top k
    by the u8-table estimate, see above), among the slots `allowed` lets through ((arena,) uint8,
    1 where a slot may be returned, or zero-length for all; blocks with none are not read).

    blocks (arena / 32, rows, 32) uint8 and wsplit (2, arena) float32 (from
    `fastscan.split_factors`) hold the list arena; list l is slots
    [list_start[l], list_start[l] + list_size[l]), list_start a multiple of 32.
    qc (nq, nlist) float32 = q . C^T, cnorm2 (nlist,) float32, probe_l2 and
    list_bias_mult as in `ivf_scan.search_lists`: a vector's score is
    w * partial + bias + list_bias_mult * qc[q, l]. qrot (nq, dim) float32,
    qoff (nq,) float64, book (a `fastscan.BlockCodebook` without a tail), simd
    as in `fastscan.search_blocks`. Queries go in list-major batches of `batch`
    (`batch_size`), one batch a task. Returns scores (nq, k) float32 best
    first and arena slots (nq, k) int64, -1 padded.
    """
    nq = qrot.shape[0]
    out_s = np.empty((nq, k), np.float32)
    out_i = np.empty((nq, k), np.int64)
    for t in prange((nq + batch - 1) // batch):
        q0 = t * batch
        _search_batch(blocks, wsplit, list_start, list_size, qc, cnorm2, probe_l2, list_bias_mult, nprobe,
                      qrot, qoff, book, k, simd, exact, q0, min(nq, q0 + batch), out_s, out_i, allowed)
    return out_s, out_i


@njit(parallel=True, cache=True, nogil=True)
def score_list_slots(blocks, wsplit, slots, slot_list, list_start, list_size, qc, cnorm2, probe_l2, list_bias_mult,
                     nprobe, qrot, qoff, book, k):
    """`search_list_blocks` among the given slots only, each scored directly (no scan): for filters
    that allow so few slots that scanning their blocks would cost more.

    slots (m,) int64 ascending arena slots, slot_list (m,) int64 the list of
    each; a slot counts for a query when its list is among the query's nprobe
    nearest. Scores are those `_rescore_records` computes (same sums, same
    order), so results equal `search_list_blocks`' filtered results; nothing
    is estimated, so this also serves exact=False. Returns scores (nq, k)
    float32 best first and arena slots (nq, k) int64, -1 padded.
    """
    nq, dim = qrot.shape
    rows = blocks.shape[1]
    flat = blocks.reshape(-1)
    w, bias = wsplit[0], wsplit[1]
    cents, bits, per_nibble, n_sub = book.cents, book.bits, book.per_nibble, book.n_sub
    cx = coordinate_centroids(cents, bits, per_nibble)
    out_s = np.empty((nq, k), np.float32)
    out_i = np.empty((nq, k), np.int64)
    for q in prange(nq):
        probed = probed_lists(qc[q], cnorm2, probe_l2, nprobe)
        ftab = np.empty((1, 2 * rows, 16))
        lo = np.empty(2 * rows)
        hi_tab = np.empty(2 * rows)
        qp = np.zeros(2 * rows)
        if per_nibble == 1:
            qp[:dim] = qrot[q]
        else:
            float_tables(qrot[q], qoff[q], cents, bits, per_nibble, n_sub, ftab[0], lo, hi_tab)
        hs = np.full(k, -np.inf)
        hi = np.full(k, -1, np.int64)
        for t in range(slots.shape[0]):
            l = slot_list[t]
            slot = slots[t]
            if not probed[l] or slot >= list_start[l] + list_size[l]:
                continue
            lane, at, offset = slot_place(slot, rows)
            partial = (direct_partial(flat, offset, rows, lane, qp, qoff[q], cx, 1) if per_nibble == 1
                       else _exact_partial(flat, offset, rows, lane, ftab, 0))
            score = np.float64(w[at]) * partial + bias[at] + list_bias_mult * np.float64(qc[q, l])
            if score > hs[0]:
                heap_push(hs, hi, score, slot)
        tmp = np.empty(k)
        sorted_topk(hs, hi, k, tmp, out_i[q])
        out_s[q] = tmp
    return out_s, out_i


@njit(cache=True, nogil=True)
def _queries_by_list(probes, nlist):
    """(first, by_list): batch queries probing list l are by_list[first[l]:first[l + 1]] (int64)."""
    first = np.zeros(nlist + 1, np.int64)
    for j in range(probes.shape[0]):
        for r in range(probes.shape[1]):
            first[probes[j, r] + 1] += 1
    for l in range(nlist):
        first[l + 1] += first[l]
    fill = first[:nlist].copy()
    by_list = np.empty(probes.size, np.int64)
    for j in range(probes.shape[0]):
        for r in range(probes.shape[1]):
            l = probes[j, r]
            by_list[fill[l]] = j
            fill[l] += 1
    return first, by_list


@njit(cache=True, nogil=True)
def _search_batch(blocks, wsplit, list_start, list_size, qc, cnorm2, probe_l2, list_bias_mult, nprobe,
                  qrot, qoff, book, k, simd, exact, q0, q1, out_s, out_i, allowed):
    """Queries q0..q1-1 of `search_list_blocks`, written into out_s, out_i."""
    cents, bits, per_nibble, n_sub = book.cents, book.bits, book.per_nibble, book.n_sub
    nb = q1 - q0
    rows = blocks.shape[1]
    flat = blocks.reshape(-1)
    probes = np.empty((nb, nprobe), np.int64)
    lut = np.empty(rows * 32, np.uint8)
    res = np.empty(rows * 32, np.uint8)
    tp = n_pairs(rows) * PAIR_BYTES
    tabs = np.empty(nb * tp, np.uint8)
    tabs2 = np.empty(nb * tp if exact else 0, np.uint8)   # the residual tables (`fastscan.build_tables`)
    scal = np.empty((nb, 6), np.float32)
    ftab = np.empty((1, 2 * rows, 16))
    keys = np.empty(nprobe, np.float32)
    for j in range(nb):
        nearest_lists(qc[q0 + j], cnorm2, probe_l2, keys, probes[j])
        (base, delta, err, _), (base2, delta2, err2, _) = build_tables(qrot[q0 + j], qoff[q0 + j], book, ftab[0],
                                                                       lut, res)
        pair_tables(lut, rows, tabs, j * tp)
        scal[j, 0], scal[j, 1], scal[j, 2] = _bound_terms(base, delta, err, rows)
        if exact:
            pair_tables(res, rows, tabs2, j * tp)
            scal[j, 3], scal[j, 4], scal[j, 5] = _refined_terms(base2, delta, delta2, err2, rows)
    first, by_list = _queries_by_list(probes, list_start.shape[0])

    # Per query: a min-heap of the k best lower bounds (root: tau) and the
    # recorded vectors (slot, upper bound + shift, shift).
    low_s = np.full((nb, k), -np.inf)
    low_i = np.full((nb, k), -1, np.int64)
    size = 0 if exact else _RESERVOIR * k   # exact=False: the reservoirs and their thresholds
    res_s = np.empty((nb, size))
    res_i = np.empty((nb, size), np.int64)
    thr = np.full(nb, -np.inf)
    cap = _records_cap(k) if exact else 0
    rec_slot = np.empty((nb, cap), np.int64)
    rec_up = np.empty((nb, cap))
    rec_shift = np.empty((nb, cap))
    n_rec = np.zeros(nb, np.int64)   # records (exact) or reservoir entries (exact=False) per query
    w, bias = wsplit[0], wsplit[1]
    sel = np.empty(4, np.int64)
    shifts = np.empty(4)
    scratch = np.empty(4 * BLOCK, np.float32)
    totals = np.empty(4 * BLOCK, np.float32)
    upper = np.empty(BLOCK, np.float32)
    lower = np.empty(BLOCK, np.float32)
    for l in range(list_start.shape[0]):
        end = list_start[l] + list_size[l]
        g = first[l]
        while g < first[l + 1] and list_size[l] > 0:
            cnt = min(4, first[l + 1] - g)
            m = 1 if cnt == 1 else 4   # three queries still share a load: the fourth repeats one
            for j in range(4):
                sel[j] = by_list[g + min(j, cnt - 1)]
                shifts[j] = list_bias_mult * np.float64(qc[q0 + sel[j], l])
            for b in range(list_start[l] // BLOCK, (end + BLOCK - 1) // BLOCK):
                if not block_allowed(allowed, b * BLOCK, min(end, b * BLOCK + BLOCK)):
                    continue
                t0, t1, t2, t3 = sel[0] * tp, sel[1] * tp, sel[2] * tp, sel[3] * tp
                if simd == 2:   # `fastscan.block_sums`, dispatched here (see there)
                    sums = _sums_avx512(flat, b * rows * BLOCK, rows, tabs, t0, t1, t2, t3, m)
                elif simd == 1:
                    sums = _sums_avx2(flat, b * rows * BLOCK, rows, tabs, t0, t1, t2, t3, m)
                else:
                    sums = _sums_portable(flat, b * rows * BLOCK, rows, tabs, t0, t1, t2, t3, m, scratch)
                for j in range(cnt):
                    qj = sel[j]
                    ue, uo = upper_bounds(sums[2 * j], sums[2 * j + 1], b * BLOCK, w, bias, scal, qj)
                    # kth - shift rounds in float64, far inside the bound's float32 slack
                    if not reaches(ue, uo, (low_s[qj, 0] if exact else thr[qj]) - shifts[j]):
                        continue
                    if not exact:
                        store_sums(sums[2 * j], sums[2 * j + 1], totals, j)
                        _reserve_estimates(b, end, j, qj, k, shifts[j], totals, w, bias, scal, res_s, res_i,
                                           n_rec, thr, upper, allowed)
                    else:   # the finer bounds of the residual tables, for the few blocks the first lets by
                        e2, o2 = residual_sums(flat, b * rows * BLOCK, rows, tabs2, qj * tp, simd, scratch)
                        ue, uo = refined_bounds(sums[2 * j], sums[2 * j + 1], e2, o2, b * BLOCK, w, bias, scal, qj,
                                                np.float32(1.0))
                        if not reaches(ue, uo, low_s[qj, 0] - shifts[j]):
                            continue
                        store_upper(ue, uo, upper)
                        le, lo = refined_bounds(sums[2 * j], sums[2 * j + 1], e2, o2, b * BLOCK, w, bias, scal, qj,
                                                np.float32(-1.0))
                        store_upper(le, lo, lower)
                        if n_rec[qj] + BLOCK > rec_slot.shape[1]:
                            rec_slot, rec_up, rec_shift = _make_room(qj, low_s, rec_slot, rec_up, rec_shift, n_rec)
                        had = n_rec[qj]
                        n_rec[qj] = gather_candidates(b, end, upper, lower, shifts[j], -np.inf, low_s[qj], low_i[qj],
                                                      rec_up[qj], rec_slot[qj], had, allowed)
                        rec_shift[qj, had:n_rec[qj]] = shifts[j]
            g += cnt

    hs = np.empty(k)
    hi = np.empty(k, np.int64)
    tmp = np.empty(k)
    cx = coordinate_centroids(cents, bits, per_nibble)
    lo = np.empty(2 * rows)
    hi_tab = np.empty(2 * rows)
    qp = np.zeros(2 * rows)   # the padded query (one coordinate a nibble) or the float tables serve
    for j in range(nb):
        if exact:
            if per_nibble == 1:
                qp[:qrot.shape[1]] = qrot[q0 + j]
            else:
                float_tables(qrot[q0 + j], qoff[q0 + j], cents, bits, per_nibble, n_sub, ftab[0], lo, hi_tab)
            c = _drop_below(j, low_s[j, 0], rec_slot, rec_up, rec_shift, n_rec)
            _rescore_records(flat, rows, w, bias, ftab, qp, qoff[q0 + j], cx, per_nibble, rec_slot[j, :c],
                             rec_up[j, :c], rec_shift[j, :c], hs, hi)
            sorted_topk(hs, hi, k, tmp, out_i[q0 + j])
        else:
            sorted_topk(res_s[j, :n_rec[j]], res_i[j, :n_rec[j]], k, tmp, out_i[q0 + j])
        out_s[q0 + j] = tmp


@njit(cache=True, nogil=True)
def _rescore_records(flat, rows, w, bias, ftab, qp, off, cx, per_nibble, slots, ups, shifts, hs, hi):
    """Exact top k (heap hs, hi, reset here) of one query's recorded vectors (slots, upper bounds
    + shift, shifts), re-scored in order of falling bound until a bound falls below the k-th best
    score. One coordinate a nibble (3, 4 bits): from qp, off, cx by `fastscan.direct_partial`
    (float tables would have to be rebuilt a query, and at d = 384 their 49 KB miss L1). More
    (1, 2 bits): from the float tables ftab[0], which fit in L1 and save as many products."""
    hs[:] = -np.inf
    hi[:] = -1
    for r in np.argsort(-ups):
        if ups[r] < hs[0]:
            break   # bounds fall from here on: none can enter the top k
        slot = slots[r]
        lane, at, offset = slot_place(slot, rows)
        partial = (direct_partial(flat, offset, rows, lane, qp, off, cx, 1) if per_nibble == 1
                   else _exact_partial(flat, offset, rows, lane, ftab, 0))
        score = np.float64(w[at]) * partial + bias[at] + shifts[r]
        if score > hs[0] or (score == hs[0] and slot < hi[0]):
            heap_push(hs, hi, score, slot)


@njit(cache=True, nogil=True)
def _reserve_estimates(b, end, j, qj, k, shift, totals, w, bias, scal, res_s, res_i, n_res, thr, est, allowed):
    """Add the block's vectors (slots below `end` that `allowed` lets through) whose estimate (`fastscan.estimates`) + shift
    reaches query qj's threshold to its reservoir (res_s, res_i, n_res), cutting it back to its best
    k (`_cut_reservoir`) when full; est (32,) float32 scratch."""
    i0 = b * BLOCK
    estimates(totals, j, i0, w, bias, scal, qj, est)
    for lane in range(min(BLOCK, end - i0)):
        e = np.float64(est[split_position(lane)]) + shift
        if e >= thr[qj] and lane_allowed(allowed, i0 + lane):   # ties stay: the final sort gives them to the lower slot
            r = n_res[qj]
            res_s[qj, r] = e
            res_i[qj, r] = i0 + lane
            n_res[qj] = r + 1
            if r + 1 == res_s.shape[1]:
                _cut_reservoir(qj, k, res_s, res_i, n_res, thr)


@njit(cache=True, nogil=True)
def _cut_reservoir(qj, k, res_s, res_i, n_res, thr):
    """Keep the entries of query qj's full reservoir at or above its k-th best estimate, which becomes
    its threshold; when the whole reservoir ties with it, the best k (ties to the lower slot)."""
    size = res_s.shape[1]
    kth = np.partition(res_s[qj], size - k)[size - k]
    kept = 0
    for r in range(size):
        if res_s[qj, r] >= kth:
            res_s[qj, kept] = res_s[qj, r]
            res_i[qj, kept] = res_i[qj, r]
            kept += 1
    if kept == size:   # the lower half all tie with the k-th: keep the best k, ties to the lower slot
        best_s = np.empty(k)
        best_i = np.empty(k, np.int64)
        sorted_topk(res_s[qj].copy(), res_i[qj].copy(), k, best_s, best_i)
        res_s[qj, :k] = best_s
        res_i[qj, :k] = best_i
        kept = k
    n_res[qj] = kept
    thr[qj] = kth


@njit(cache=True, nogil=True)
def _drop_below(qj, tau, rec_slot, rec_up, rec_shift, n_rec):
    """Keep query qj's records whose bound reaches tau (in order); returns how many."""
    kept = 0
    for r in range(n_rec[qj]):
        if rec_up[qj, r] >= tau:
            rec_slot[qj, kept] = rec_slot[qj, r]
            rec_up[qj, kept] = rec_up[qj, r]
            rec_shift[qj, kept] = rec_shift[qj, r]
            kept += 1
    n_rec[qj] = kept
    return kept


@njit(cache=True, nogil=True)
def _make_room(qj, low_s, rec_slot, rec_up, rec_shift, n_rec):
    """Room for one more block in query qj's records: drop those below its tau, else grow every row.

    Returns the (possibly new) record arrays.
    """
    kept = _drop_below(qj, low_s[qj, 0], rec_slot, rec_up, rec_shift, n_rec)
    cap = rec_slot.shape[1]
    if kept <= cap // 2:   # cap >= 2 * BLOCK, so a block fits
        return rec_slot, rec_up, rec_shift
    nb = rec_slot.shape[0]
    slot2 = np.empty((nb, 2 * cap), np.int64)
    up2 = np.empty((nb, 2 * cap))
    shift2 = np.empty((nb, 2 * cap))
    slot2[:, :cap] = rec_slot
    up2[:, :cap] = rec_up
    shift2[:, :cap] = rec_shift
    return slot2, up2, shift2
