"""Lookup-table scan of row-major packed codes, with top-k selection.

A code row is a concatenation of segments (see `kernels.encode`), and a
segment of one or more parts: runs of coordinates at one width with one
centroid table (a compact code keeps its last coordinates narrower, see
`quantizer`). For one query, each segment `s` has per-coordinate query
values `qv[s]` (d,) and an offset `off[s]`; a vector's partial score for the
segment is off[s] + sum over its coordinates i of qv[s, i] * cents[t_i, code_i]
(t_i: the table of i's part; the offset is the query's inner product with a
centre shared by every code). Its final score is

    score = sum_s factors[v, s] * partial_s  (+ factors[v, nseg] when biased)

Rather than one lookup per coordinate, the query is turned into one
256-entry table per code byte holding the summed contribution of every
coordinate that lies wholly inside that byte; that serves every bit width
with one lookup per byte. Coordinates that straddle two bytes (bits 3, 5, 6,
7) get a small table of their own. The `ScanPlan` arrays describe which
coordinate sits where; they depend only on the layout, not on the query.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np
from numba import njit, prange

from .topk import heap_push, sorted_topk


class Part(NamedTuple):
    """Coordinates first..first+count-1 at `bits` each, scored with centroid table row `table`."""
    first: int
    count: int
    bits: int
    table: int


class ScanPlan(NamedTuple):
    """Where each coordinate of each segment sits in a code row (all int64).

    seg_bytes  (nseg + 1,)  byte range [seg_bytes[s], seg_bytes[s+1]) of segment s
    whole_*    (m,)         coordinates wholly inside one byte: byte, coord, shift, segment,
                            bits, centroid table row
    split_*    (p,)         coordinates straddling bytes b and b+1: the same fields
    The kernels take the fields in this order (`*plan`).
    """
    seg_bytes: np.ndarray
    whole_byte: np.ndarray
    whole_coord: np.ndarray
    whole_shift: np.ndarray
    whole_seg: np.ndarray
    whole_bits: np.ndarray
    whole_cent: np.ndarray
    split_byte: np.ndarray
    split_coord: np.ndarray
    split_shift: np.ndarray
    split_seg: np.ndarray
    split_bits: np.ndarray
    split_cent: np.ndarray


def segment_bytes(dim: int, bits: int) -> int:
    """Bytes one run of `dim` coordinates at `bits` each occupies."""
    return (dim * bits + 7) // 8


def part_offsets(segments: Sequence[Sequence[Part]]) -> list[list[int]]:
    """The byte where each part of each segment starts: parts follow one another, each from a
    whole byte."""
    at, out = 0, []
    for parts in segments:
        out.append([])
        for part in parts:
            out[-1].append(at)
            at += segment_bytes(part.count, part.bits)
    return out


def make_plan(segments: Sequence[Sequence[Part]]) -> ScanPlan:
    """Describe the layout of code rows made of `segments`, each a sequence of `Part`s."""
    offsets = part_offsets(segments)
    seg_bytes = [o[0] for o in offsets] + [offsets[-1][-1] + segment_bytes(segments[-1][-1].count,
                                                                             segments[-1][-1].bits)]
    whole, split = [], []
    for s, parts in enumerate(segments):
        for part, offset in zip(parts, offsets[s]):
            for i in range(part.count):
                p = i * part.bits
                byte, shift = offset + (p >> 3), p & 7
                entry = (byte, part.first + i, shift, s, part.bits, part.table)
                (split if shift + part.bits > 8 else whole).append(entry)

    def cols(rows):
        a = np.array(rows, dtype=np.int64).reshape(-1, 6)
        return [np.ascontiguousarray(a[:, j]) for j in range(6)]

    return ScanPlan(np.array(seg_bytes, np.int64), *cols(whole), *cols(split))


def simple_plan(dim: int, segment_bits: Sequence[int]) -> ScanPlan:
    """The plan of segments that each cover all `dim` coordinates at one width, table row s for segment s."""
    return make_plan([[Part(0, dim, b, s)] for s, b in enumerate(segment_bits)])


@njit(cache=True, nogil=True)
def build_tables(qv, off, cents, whole_byte, whole_coord, whole_shift, whole_seg, whole_bits, whole_cent,
                 split_coord, split_seg, split_bits, split_cent, nbytes, byte_table, split_table):
    """Fill the per-query lookup tables.

    qv (nseg, d) float32; off (nseg,) float32 segment offsets, folded into
    the table of the byte holding each segment's coordinate 0 (always whole);
    cents (ntables, 256) float32 centroid tables (unused tail ignored);
    byte_table (nbytes, 256) float32 out; split_table (p, 256) float32 out.
    """
    byte_table[:, :] = 0.0
    for e in range(whole_byte.shape[0]):
        s = whole_seg[e]
        mask = (1 << whole_bits[e]) - 1
        val = qv[s, whole_coord[e]]
        sh = whole_shift[e]
        row = byte_table[whole_byte[e]]
        cent = cents[whole_cent[e]]
        base = off[s] if whole_coord[e] == 0 else np.float32(0.0)
        for v in range(256):
            row[v] += base + val * cent[(v >> sh) & mask]
    for e in range(split_coord.shape[0]):
        s = split_seg[e]
        val = qv[s, split_coord[e]]
        for c in range(1 << split_bits[e]):
            split_table[e, c] = val * cents[split_cent[e], c]


@njit(cache=True, nogil=True, inline="always")
def _score_row(row, fac, seg_bytes, split_byte, split_shift, split_seg, split_bits,
               byte_table, split_table, partial):
    nseg = seg_bytes.shape[0] - 1
    for s in range(nseg):
        acc = np.float32(0.0)
        for j in range(seg_bytes[s], seg_bytes[s + 1]):
            acc += byte_table[j, row[j]]
        partial[s] = acc
    for e in range(split_byte.shape[0]):
        b = split_byte[e]
        sh = split_shift[e]
        s = split_seg[e]
        c = ((np.int32(row[b]) >> sh) | (np.int32(row[b + 1]) << (8 - sh))) & ((1 << split_bits[e]) - 1)
        partial[s] += split_table[e, c]
    score = np.float32(0.0)
    for s in range(nseg):
        score += fac[s] * partial[s]
    if fac.shape[0] > nseg:
        score += fac[nseg]
    return score


# Rows whose filter bytes are checked together before any is scored.
_FILTER_RUN = 32


@njit(cache=True, nogil=True)
def _scan_range(codes, factors, lo, hi, seg_bytes, split_byte, split_shift, split_seg, split_bits,
                byte_table, split_table, hs, hi_slots, allowed):
    """Score rows lo..hi-1 into the heap (hs, hi_slots); with a filter (`allowed` (n,) uint8, not
    zero-length) only the rows it allows, runs of `_FILTER_RUN` rows with none skipped at once."""
    if allowed.shape[0] > 0:
        for run in range(lo, hi, _FILTER_RUN):
            end = min(hi, run + _FILTER_RUN)
            if allowed[run:end].any():
                _scan_allowed(codes, factors, run, end, seg_bytes, split_byte, split_shift, split_seg, split_bits,
                              byte_table, split_table, hs, hi_slots, allowed)
        return
    partial = np.zeros(seg_bytes.shape[0] - 1, np.float32)
    for v in range(lo, hi):
        score = _score_row(codes[v], factors[v], seg_bytes, split_byte, split_shift, split_seg, split_bits,
                           byte_table, split_table, partial)
        if score > hs[0]:
            heap_push(hs, hi_slots, score, v)


@njit(cache=True, nogil=True)
def _scan_allowed(codes, factors, lo, hi, seg_bytes, split_byte, split_shift, split_seg, split_bits,
                  byte_table, split_table, hs, hi_slots, allowed):
    """`_scan_range` of rows lo..hi-1 that `allowed` lets through."""
    partial = np.zeros(seg_bytes.shape[0] - 1, np.float32)
    for v in range(lo, hi):
        if allowed[v] == 0:
            continue
        score = _score_row(codes[v], factors[v], seg_bytes, split_byte, split_shift, split_seg, split_bits,
                           byte_table, split_table, partial)
        if score > hs[0]:
            heap_push(hs, hi_slots, score, v)


@njit(parallel=True, cache=True, nogil=True)
def search_codes(codes, factors, qv, qoff, cents, seg_bytes,
                 whole_byte, whole_coord, whole_shift, whole_seg, whole_bits, whole_cent,
                 split_byte, split_coord, split_shift, split_seg, split_bits, split_cent, k, n_chunks, allowed):
    """Top-k by estimated score for a batch of queries, among the rows `allowed` lets through: (n,)
    uint8, 1 where a row may be returned, or zero-length for all.

    codes (n, nbytes) uint8; factors (n, nseg or nseg + 1) float32;
    qv (nq, nseg, d) float32 per-query segment values; qoff (nq, nseg) float32
    segment offsets; cents (ntables, 256) float32; then the `ScanPlan` fields.
    The database is cut into n_chunks ranges so that small batches still use
    every thread; each (query, chunk) task builds its own tables.
    Returns scores (nq, k) float32 best first and slots (nq, k) int64, -1 padded.
    """
    n, nbytes = codes.shape
    nq = qv.shape[0]
    nsplit = split_byte.shape[0]
    part_s = np.full((nq, n_chunks, k), -np.inf, np.float32)
    part_i = np.full((nq, n_chunks, k), -1, np.int64)
    step = (n + n_chunks - 1) // n_chunks
    for t in prange(nq * n_chunks):
        q = t // n_chunks
        ch = t - q * n_chunks
        lo = ch * step
        hi = min(n, lo + step)
        if lo >= hi:
            continue
        byte_table = np.empty((nbytes, 256), np.float32)
        split_table = np.zeros((max(nsplit, 1), 256), np.float32)
        build_tables(qv[q], qoff[q], cents, whole_byte, whole_coord, whole_shift, whole_seg, whole_bits,
                     whole_cent, split_coord, split_seg, split_bits, split_cent, nbytes, byte_table, split_table)
        _scan_range(codes, factors, lo, hi, seg_bytes, split_byte, split_shift, split_seg, split_bits,
                    byte_table, split_table, part_s[q, ch], part_i[q, ch], allowed)
    out_s = np.empty((nq, k), np.float32)
    out_i = np.empty((nq, k), np.int64)
    for q in prange(nq):
        sorted_topk(part_s[q].ravel(), part_i[q].ravel(), k, out_s[q], out_i[q])
    return out_s, out_i


@njit(parallel=True, cache=True, nogil=True)
def score_codes(codes, factors, qv, qoff, cents, seg_bytes,
                whole_byte, whole_coord, whole_shift, whole_seg, whole_bits, whole_cent,
                split_byte, split_coord, split_shift, split_seg, split_bits, split_cent):
    """Every vector's score for every query, (nq, n) float32 (for tests and rescoring)."""
    n, nbytes = codes.shape
    nq = qv.shape[0]
    nseg = seg_bytes.shape[0] - 1
    out = np.empty((nq, n), np.float32)
    for q in prange(nq):
        byte_table = np.empty((nbytes, 256), np.float32)
        split_table = np.zeros((max(split_byte.shape[0], 1), 256), np.float32)
        build_tables(qv[q], qoff[q], cents, whole_byte, whole_coord, whole_shift, whole_seg, whole_bits,
                     whole_cent, split_coord, split_seg, split_bits, split_cent, nbytes, byte_table, split_table)
        partial = np.zeros(nseg, np.float32)
        for v in range(n):
            out[q, v] = _score_row(codes[v], factors[v], seg_bytes, split_byte, split_shift, split_seg,
                                   split_bits, byte_table, split_table, partial)
    return out
