"""Inverted-list search: pick the nearest lists, scan them with one lookup table per query.

The coarse layer writes every vector as x = c_l + r (residual mode) or x = r
(raw mode, c_l = 0) and encodes r as in the flat index. Then

    <q, x> = <q, c_l> + <q, r>

and the second term is the flat estimator on r. The rotation is linear, so
the lookup table built from the rotated query serves every list: only the
additive <q, c_l> differs per list, and it comes from the same q . C^T that
ranks the lists. For l2 the vector's bias factor holds the exact -||x||^2, so
the kernel's score 2<q, x> - ||x||^2 = ||q||^2 - ||q - x||^2 needs no
per-list table either (list_bias_mult = 2).
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from .scan import _score_row, build_tables
from .topk import heap_push, sorted_topk


@njit(cache=True, nogil=True)
def select_lists(qc, cnorm2, probe_l2, nprobe, out):
    """The nprobe lists nearest to one query, nearest first, into out (nprobe,) int64.

    qc (nlist,) float32 holds <q, c_l>; "nearest" is the largest
    2<q, c_l> - ||c_l||^2 (smallest ||q - c_l||) when probe_l2, else the largest <q, c_l>.
    """
    hs = np.empty(nprobe, np.float32)
    hi = np.empty(nprobe, np.int64)
    nearest_lists(qc, cnorm2, probe_l2, hs, hi)
    best = np.empty(nprobe, np.float32)
    sorted_topk(hs, hi, nprobe, best, out)


@njit(cache=True, nogil=True)
def probed_lists(qc, cnorm2, probe_l2, nprobe):
    """The lists `select_lists` picks for one query, as a (nlist,) bool mask: for scoring a filter's
    slots list by list in slot order."""
    lists = np.empty(nprobe, np.int64)
    keys = np.empty(nprobe, np.float32)
    nearest_lists(qc, cnorm2, probe_l2, keys, lists)
    probed = np.zeros(qc.shape[0], np.bool_)
    for j in range(nprobe):
        if lists[j] >= 0:
            probed[lists[j]] = True
    return probed


@njit(cache=True, nogil=True)
def nearest_lists(qc, cnorm2, probe_l2, keys, lists):
    """The nprobe = len(lists) lists of `select_lists`, in heap order (no sort: for callers that
    visit lists in their own order), into lists (nprobe,) int64; keys (nprobe,) float32 scratch."""
    keys[:] = -np.inf
    lists[:] = -1
    for l in range(qc.shape[0]):
        key = np.float32(2.0) * qc[l] - cnorm2[l] if probe_l2 else qc[l]
        if key > keys[0]:
            heap_push(keys, lists, key, l)


@njit(parallel=True, cache=True, nogil=True)
def search_lists(codes, factors, list_start, list_size, qc, cnorm2, probe_l2, list_bias_mult, nprobe,
                 qv, qoff, cents, seg_bytes, whole_byte, whole_coord, whole_shift, whole_seg, whole_bits,
                 whole_cent, split_byte, split_coord, split_shift, split_seg, split_bits, split_cent, k, allowed):
    """Top-k over the nprobe nearest lists of each query, among the arena rows `allowed` lets through
    ((arena,) uint8, 1 where a row may be returned, or zero-length for all).

    codes (arena, nbytes) uint8 and factors (arena, nf) float32 are the list
    arena; list l is rows [list_start[l], list_start[l] + list_size[l]).
    qc (nq, nlist) float32 = q . C^T; cnorm2 (nlist,) float32 = ||c_l||^2.
    A vector's score is the flat kernel's plus list_bias_mult * qc[q, l].
    qv (nq, nseg, d), qoff (nq, nseg) float32 and the plan arrays are as in `scan.search_codes`.
    Returns scores (nq, k) float32 best first and arena positions (nq, k) int64, -1 padded.
    """
    nbytes = codes.shape[1]
    nq = qv.shape[0]
    nseg = seg_bytes.shape[0] - 1
    nsplit = split_byte.shape[0]
    out_s = np.empty((nq, k), np.float32)
    out_i = np.empty((nq, k), np.int64)
    filtered = allowed.shape[0] > 0
    for q in prange(nq):
        lists = np.empty(nprobe, np.int64)
        select_lists(qc[q], cnorm2, probe_l2, nprobe, lists)
        byte_table = np.empty((nbytes, 256), np.float32)
        split_table = np.zeros((max(nsplit, 1), 256), np.float32)
        build_tables(qv[q], qoff[q], cents, whole_byte, whole_coord, whole_shift, whole_seg, whole_bits,
                     whole_cent, split_coord, split_seg, split_bits, split_cent, nbytes, byte_table, split_table)
        partial = np.zeros(nseg, np.float32)
        hs = np.full(k, -np.inf, np.float32)
        hi = np.full(k, -1, np.int64)
        for j in range(nprobe):
            l = lists[j]
            bias = np.float32(list_bias_mult * qc[q, l])
            lo = list_start[l]
            for v in range(lo, lo + list_size[l]):
                if filtered and allowed[v] == 0:
                    continue
                score = _score_row(codes[v], factors[v], seg_bytes, split_byte, split_shift, split_seg,
                                   split_bits, byte_table, split_table, partial) + bias
                if score > hs[0]:
                    heap_push(hs, hi, score, v)
        sorted_topk(hs, hi, k, out_s[q], out_i[q])
    return out_s, out_i
