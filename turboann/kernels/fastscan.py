"""Fast-scan: blocked 4-bit sub-codes, u8 lookup tables in registers, exact re-scoring.

Blocked layout. Vectors sit in blocks of 32 (`BLOCK`). A vector's MSE code is
cut into 4-bit sub-codes (nibbles): at bits 1, 2 and 4 a nibble holds 4, 2
or 1 whole coordinates, exactly the nibbles of the row-major bitstream; at
bits 3 a nibble holds one 3-bit coordinate and its top bit stays 0 (3 bits
do not split into additive nibbles: a centroid of a 3-bit code is not a sum
of per-bit-plane terms, so splitting would make the fast score inexact, and
the 4/3 memory is the price of a lossless, equally fast scan). Block b is a
(rows, 32) uint8 array: byte [r, l] holds nibble 2r of vector 32b + l in its
low half and nibble 2r + 1 in its high half, so one 32-byte load brings two
sub-codes of all 32 vectors. Every function takes the blocks as a
(n_blocks, rows, 32) uint8 array and slots 0..n-1; IVF lists reuse them.

Scoring. For a query with rotated values q and centroids c, sub-code j has a
16-entry float table T_j[x] = sum over its coordinates i of q_i * c[code_i(x)],
and a vector's partial score is sum_j T_j[nibble_j]. The tables are
quantized to u8 with one step `delta` per query and an offset per table:
T_j[x] ~ m_j + delta * u_j[x]. The SIMD kernel adds u_j[nibble] for 32
vectors per `vpshufb`; the two tables of a row are quantized jointly so that
their entries add in a byte, then widen to 16-bit lanes, flushed to 32-bit
totals every 256 rows (257 * 255 < 2**16), so no d overflows.
With S the total, partial ~ base + delta * S, where base = sum_j m_j, and
the error is at most `err` = sum_j max_x |T_j[x] - m_j - delta * u_j[x]|.

Exact top k. The vector's score is w * partial + bias (w, bias: its
factors). A vector is re-scored in float64 from the float tables only when
its upper bound w * (base + delta * S) + bias + |w| * err, refined by the
residual tables (`build_tables`), reaches the k best lower bounds seen and
the k-th best exact score found so far. Any vector of the true top k has an
upper bound at least its exact score, which is at least the final k-th
best, which is at least both: it is always re-scored, so the returned top k
is the exact float top k (ties to the lower slot).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import numba
from numba import njit, prange
from numba.cpython.unsafe.numbers import trailing_zeros

from . import _simd, _wide
from .topk import heap_push, sorted_topk

BLOCK = 32
# Rows summed in 16-bit lanes before a flush: a row adds at most 255 (its two
# tables are quantized jointly), and 257 * 255 < 2**16.
_FLUSH_ROWS = 256
# Bytes of `pair_tables` of one query group: an L1 data cache's worth (48 KB on current Intel
# server cores), as each block meets every table of the group.
_GROUP_TABLE_BYTES = 48 * 1024
_MAX_GROUP = 16
# Standard deviations of the summed table-rounding errors that the default (not exact) bound allows:
# under a normal law a vector's error exceeds it with probability about 2e-9.
LIKELY_SIGMAS = 6.0


class BlockLayout(NamedTuple):
    """Shape of one vector's code in the blocked layout.

    dim, bits  the code's coordinates and bits per coordinate (1..4)
    per_nibble coordinates per 4-bit sub-code
    width      bits of the row-major bitstream per sub-code (per_nibble * bits)
    n_sub      sub-codes per vector
    rows       32-byte rows per block (ceil(n_sub / 2))
    head_sub   sub-codes of coordinates 0..tail_first-1 (n_sub without a tail)
    tail_first, tail_bits, tail_per_nibble: a compact code's narrower last
               coordinates (`quantizer.TurboQuantMSE` tail_coords), from
               sub-code head_sub on, a whole block row; tail_first = dim without
    """
    dim: int
    bits: int
    per_nibble: int
    width: int
    n_sub: int
    rows: int
    head_sub: int
    tail_first: int
    tail_bits: int
    tail_per_nibble: int


def _per_nibble(bits: int) -> int:
    return 1 if bits == 3 else 4 // bits


def block_layout(dim: int, bits: int, tail_coords: int = 0, tail_bits: int = 0) -> BlockLayout:
    """The blocked layout of `dim` coordinates at `bits` (1..4) each, the last tail_coords of them at
    tail_bits (the others must fill whole block rows)."""
    if bits not in (1, 2, 3, 4):
        raise ValueError(f"bits must be 1, 2, 3 or 4 for the fast-scan layout, got {bits!r}")
    per_nibble = _per_nibble(bits)
    head = dim - tail_coords
    head_sub = -(-head // per_nibble)
    if tail_coords == 0:
        return BlockLayout(dim, bits, per_nibble, per_nibble * bits, head_sub, -(-head_sub // 2), head_sub, dim,
                           bits, per_nibble)
    if head % per_nibble or head_sub % 2:
        raise ValueError(f"the fast-scan layout needs the {head} coordinates before a tail to fill whole "
                         f"block rows at {bits} bits")
    tail_per_nibble = _per_nibble(tail_bits)
    n_sub = head_sub + -(-tail_coords // tail_per_nibble)
    return BlockLayout(dim, bits, per_nibble, per_nibble * bits, n_sub, -(-n_sub // 2), head_sub, head,
                       tail_bits, tail_per_nibble)


def layout_parts(lay: BlockLayout) -> list[tuple[int, int, int, int, int]]:
    """(coordinates, bits, width, first sub-code, sub-codes) of each run of coordinates at one width,
    in code order: all of them, or the others and then a compact code's tail. width: bits of the
    row-major bitstream a sub-code holds. Each run's sub-codes start a block row, and its row-major
    codes a byte."""
    parts = [(lay.tail_first, lay.bits, lay.width, 0, lay.head_sub)]
    if lay.head_sub < lay.n_sub:
        parts.append((lay.dim - lay.tail_first, lay.tail_bits, lay.tail_per_nibble * lay.tail_bits, lay.head_sub,
                      lay.n_sub - lay.head_sub))
    return parts


class BlockCodebook(NamedTuple):
    """What the bytes of a blocked code stand for: the codebooks and the widths the table builders
    read (`build_tables`), one argument of the kernels instead of eight.

    cents             (2**bits,) float32, the codebook of coordinates 0..tail_first-1
    bits, per_nibble  their bits per coordinate and coordinates per 4-bit sub-code
    n_sub             their sub-codes (`BlockLayout.head_sub`)
    tail_cents        (2**tail_bits,) float32, the codebook of a compact code's tail
    tail_bits, tail_per_nibble, tail_first: the tail's widths and first coordinate; without a
                      tail, tail_first = dim and the tail fields repeat the head's (nothing scanned)
    """
    cents: np.ndarray
    bits: int
    per_nibble: int
    n_sub: int
    tail_cents: np.ndarray
    tail_bits: int
    tail_per_nibble: int
    tail_first: int


def block_codebook(lay: BlockLayout, cents: np.ndarray, tail_cents: np.ndarray | None = None) -> BlockCodebook:
    """The `BlockCodebook` of codes laid out as `lay`: cents (2**lay.bits,) the head's codebook,
    tail_cents (2**lay.tail_bits,) the tail's (default: cents, for a code without a tail)."""
    cents = np.ascontiguousarray(cents, np.float32)
    tail_cents = cents if tail_cents is None else np.ascontiguousarray(tail_cents, np.float32)
    return BlockCodebook(cents, int(lay.bits), int(lay.per_nibble), int(lay.head_sub), tail_cents,
                         int(lay.tail_bits), int(lay.tail_per_nibble), int(lay.tail_first))


def query_group(rows: int) -> int:
    """Queries that scan each block together, for blocks of `rows` rows."""
    return max(1, min(_MAX_GROUP, _GROUP_TABLE_BYTES // (n_pairs(rows) * PAIR_BYTES)))


def n_blocks(n: int) -> int:
    """Blocks that hold n vectors."""
    return -(-n // BLOCK)


# -- layout kernels ---------------------------------------------------------------

@njit(parallel=True, cache=True, nogil=True)
def unpack_blocks(blocks, n, width, n_sub, code_bytes):
    """Inverse of `encode.write_codes` into a `blocked_target`, for slots 0..n-1: row-major codes
    (n, code_bytes) uint8."""
    out = np.zeros((n, code_bytes), np.uint8)
    for v in prange(n):
        b = v // BLOCK
        lane = v - b * BLOCK
        for j in range(n_sub):
            byte = blocks[b, j >> 1, lane]
            nib = (np.int32(byte) >> (4 * (j & 1))) & 15
            pos = j * width
            out[v, pos >> 3] |= np.uint8((nib << (pos & 7)) & 255)
            if (pos & 7) + width > 8:
                out[v, (pos >> 3) + 1] |= np.uint8(nib >> (8 - (pos & 7)))
    return out


@njit(cache=True, nogil=True)
def move_slot(blocks, src, dst):
    """Copy the code of slot src over slot dst (swap-with-last removal)."""
    bs, ls = src // BLOCK, src % BLOCK
    bd, ld = dst // BLOCK, dst % BLOCK
    for r in range(blocks.shape[1]):
        blocks[bd, r, ld] = blocks[bs, r, ls]


# -- per-query tables --------------------------------------------------------------

@njit(cache=True, nogil=True)
def float_tables(q, off, cents, bits, per_nibble, n_sub, ftab, lo, hi):
    """The float tables of one query, with each table's smallest and largest entry.

    q (dim,) float32 rotated query; off: a constant added to every partial
    score (the query's inner product with the codes' shared centre), held in
    table 0 which every vector reads once; cents (2**bits,) float32;
    ftab (2 * rows, 16) float64 out: T_j[x]; lo, hi (2 * rows,) float64 out.
    """
    ftab[:, :] = 0.0
    lo[:] = 0.0
    hi[:] = 0.0
    _add_part_tables(q, cents, bits, per_nibble, 0, 0, min(ftab.shape[0], n_sub), ftab, lo, hi)
    for x in range(16):
        ftab[0, x] += off
    lo[0] += off
    hi[0] += off


@njit(cache=True, nogil=True)
def _add_part_tables(q, cents, bits, per_nibble, first, sub0, sub_end, ftab, lo, hi):
    """Add the float tables of coordinates first.. (`bits` each, centroids cents, per_nibble to a
    sub-code) to sub-codes sub0..sub_end-1 of ftab, with their extremes to lo and hi: the codes' one
    part, or a compact code's tail after the others (see `BlockLayout`)."""
    d = q.shape[0]
    cx = coordinate_centroids(cents, bits, per_nibble)   # centroid of coordinate t of sub-code value x
    cmin = cx[0].min()
    cmax = cx[0].max()
    fl = ftab.reshape(-1)
    # Unsigned flat indices and no branch in the 16-entry loops: so LLVM vectorises them (Numba's
    # negative-index wraparound and min/max's NaN branches would keep them scalar).
    for jj in range(sub0, sub_end):
        j = np.uint64(jj)
        for t in range(per_nibble):
            i = first + (jj - sub0) * per_nibble + t
            qi = np.float64(q[i]) if i < d else 0.0
            for x in range(16):
                fl[np.uint64(16) * j + np.uint64(x)] += qi * cx[t, x]
            # Every combination of per-coordinate codes is some x, and
            # float addition is monotone, so summing each coordinate's
            # extreme term in the same order gives the table's exact
            # extremes without scanning its 16 entries.
            a = qi * cmin
            b = qi * cmax
            lo[j] += a if a < b else b
            hi[j] += b if a < b else a


@njit(cache=True, nogil=True)
def build_tables(q, off, book, ftab, lut, res):
    """Float, u8 and residual u8 tables of one query; returns ((base, delta, err, likely),
    (base2, delta2, err2, likely2)).

    q, off, ftab as in `float_tables`; book the codes' `BlockCodebook`
    (a tail is tabled from its own codebook); lut (rows * 32,) uint8 out: u_j[x] at 16 * j + x,
    with max u_2r + max u_2r+1 <= 255. partial ~ base + delta * sum_j u_j,
    |error| <= err.

    res (rows * 32,) uint8 out, laid out as lut: the u8 tables of what lut
    leaves, for a finer estimate where the first cannot decide:
    partial ~ base2 + delta * sum_j u_j + delta2 * sum_j r_j, |error| <= err2.
    Rounding to the nearest step leaves each entry within delta / 2, so the
    residual of table j lies in [m_j - delta / 2, m_j + delta / 2] and a
    step delta2 = delta / 126 keeps a row's two residual tables in a byte.

    err (err2): half a step per table, the largest any rounding leaves.
    likely (likely2): the error a vector's estimate stays within but for a
    vanishing share of vectors: LIKELY_SIGMAS standard deviations of a sum of
    one rounding error per table (each at most half a step, so its variance
    at most that squared, whatever the codes), plus the tables' mean signed
    rounding. err adds every table's worst case, which a sum of nt roughly
    independent errors nears only for crafted codes. Never above err.
    delta and delta2 are float32 values, so that the bounds evaluated in
    float32 use them unrounded.
    """
    nt = ftab.shape[0]
    lo = np.empty(nt)
    hi = np.empty(nt)
    float_tables(q, off, book.cents, book.bits, book.per_nibble, book.n_sub, ftab, lo, hi)
    _add_part_tables(q, book.tail_cents, book.tail_bits, book.tail_per_nibble, book.tail_first, book.n_sub, nt, ftab,
                     lo, hi)   # the tail
    # The two tables of a row are added in a byte before widening, so their
    # largest entries must sum to <= 255: the step is set by the widest pair,
    # with room for both roundings (254 + 2 * 0.5).
    span = 0.0
    size = 0.0
    base = 0.0
    for r in range(nt // 2):
        span = max(span, hi[2 * r] - lo[2 * r] + hi[2 * r + 1] - lo[2 * r + 1])
    for j in range(nt):
        size = max(size, max(abs(lo[j]), abs(hi[j])))
        base += lo[j]
    delta = _float32_step(span / 254.0 if span > 0.0 else 1.0)
    delta2 = _float32_step(delta / 126.0)   # not 127: the least residual, delta / 2, would round at a tie
    inv = 1.0 / delta
    inv2 = 1.0 / delta2
    half = 0.5 * delta
    fl = ftab.reshape(-1)
    drift = np.zeros(16)    # per entry x: the signed roundings summed over the tables
    drift2 = np.zeros(16)
    # Flat unsigned indices and no branch in the 16-entry loop: so LLVM vectorises it
    # (see `_add_part_tables`).
    for jj in range(nt):
        j = np.uint64(jj)
        m = lo[j]
        for xx in range(16):
            x = np.uint64(xx)
            i = np.uint64(16) * j + x
            f = fl[i] - m
            u = np.floor(f * inv + 0.5)
            u = u if u > 0.0 else 0.0
            u = u if u < 255.0 else 255.0
            g = f - delta * u + half    # the residual above its least possible value, in [0, delta]
            r = np.floor(g * inv2 + 0.5)
            r = r if r > 0.0 else 0.0
            r = r if r < 127.0 else 127.0
            lut[i] = np.uint8(u)
            res[i] = np.uint8(r)
            drift[x] += g - half
            drift2[x] += g - delta2 * r
    # float64 rounding of the tables and the sums that the bound compares: far below this slack
    slack = 1e-9 * (size * nt + 1.0)
    err = nt * half
    err2 = nt * 0.5 * delta2
    likely = min(err, LIKELY_SIGMAS * np.sqrt(nt) * half + abs(drift.sum()) / 16.0)
    likely2 = min(err2, LIKELY_SIGMAS * np.sqrt(nt) * 0.5 * delta2 + abs(drift2.sum()) / 16.0)
    return ((base, delta, err + slack, likely + slack),
            (base - nt * half, delta2, err2 + slack, likely2 + slack))


@njit(cache=True, nogil=True)
def _float32_step(step):
    """The least float32 value at or above step (float64), as float64."""
    v = np.float32(step)
    if v < step:
        v = np.nextafter(v, np.float32(np.inf))
    return np.float64(v)


# -- block accumulation: u8 table sums of 32 vectors ----------------------------------
# The SIMD kernel ends with the sums of even lanes in one register and odd
# lanes in another, so totals come in "split" order: position p holds lane
# 2 * (p % 16) + p // 16. Per-vector weights are laid out in that order too
# (`split_factors`) instead of interleaving the sums back.

@njit(cache=True, nogil=True, inline="always")
def split_lane(p):
    """The block lane whose total sits at split-order position p."""
    return 2 * (p % 16) + p // 16


@njit(cache=True, nogil=True, inline="always")
def split_position(lane):
    """The split-order position of block lane `lane` (inverse of `split_lane`)."""
    return (lane & 1) * 16 + (lane >> 1)


@njit(cache=True, nogil=True, inline="always")
def slot_place(v, rows):
    """Where slot v sits in blocks of `rows` rows: (its lane, its split-order factor index, the offset
    of its block in the raveled blocks)."""
    b = v // BLOCK
    lane = v - b * BLOCK
    return lane, b * BLOCK + split_position(lane), b * rows * BLOCK


PAIR_BYTES = 128   # `pair_tables` bytes per pair of block rows


@njit(cache=True, nogil=True)
def n_pairs(rows):
    """Row pairs of a block of `rows` rows (the last one half empty when rows is odd)."""
    return (rows + 1) // 2


@njit(cache=True, nogil=True)
def pair_tables(lut, rows, out, at):
    """One query's u8 tables (`build_tables`' lut (rows * 32,) uint8) as the kernels load them,
    written to out[at: at + n_pairs(rows) * PAIR_BYTES] (uint8).

    Pair p of block rows (2p, 2p + 1) takes PAIR_BYTES bytes from at + 128 p:
    [L(2p), L(2p), L(2p + 1), L(2p + 1)] then the same of H, each 16 bytes,
    where L(r) = lut[32 r: 32 r + 16] is the table of row r's low nibbles and
    H(r) = lut[32 r + 16: 32 r + 32] that of its high nibbles (a missing last
    row's tables are zeros). So one 64-byte load gives a zmm `vpshufb` the
    tables of a pair's 64 bytes of codes in its four 128-bit lanes, with no
    shuffle, and a 32-byte load from at + 128 p + 32 h gives a ymm those of
    row 2p + h.
    """
    # In 8-byte words: every offset is a multiple of 16 (at of PAIR_BYTES, see callers).
    src = lut.view(np.uint64)
    dst = out[at: at + n_pairs(rows) * PAIR_BYTES].view(np.uint64)
    for p in range(n_pairs(rows)):
        for h in range(2):
            r = 2 * p + h
            for half in range(2):
                d = (PAIR_BYTES * p + 64 * half + 32 * h) // 8
                a = src[(32 * r + 16 * half) // 8] if r < rows else np.uint64(0)
                b = src[(32 * r + 16 * half) // 8 + 1] if r < rows else np.uint64(0)
                dst[d] = a
                dst[d + 1] = b
                dst[d + 2] = a
                dst[d + 3] = b


@njit(cache=True, nogil=True, inline="always")
def _add_tables(tabs, at, lo, hi, full, odd):
    """full, odd (16-bit sums, u8x64) plus the entries of a row pair's nibbles lo and hi (u8x64) in
    the tables at tabs[at:] (low nibbles') and tabs[at + 64:] (high).

    The two entries of a vector fit one byte (`build_tables`), so they are
    added before widening. full: even byte + 256 * odd byte, mod 2**16; odd:
    odd byte alone; exact for `_FLUSH_ROWS` rows.
    """
    ab = _simd.add8(_simd.pshufb(_simd.load64(tabs, at), lo), _simd.pshufb(_simd.load64(tabs, at + 64), hi))
    return _simd.add16(full, ab), _simd.add16(odd, _simd.shift_right16(ab, 8))


@njit(cache=True, nogil=True, inline="always")
def _add_row_tables(tabs, at, lo, hi, full, odd):
    """`_add_tables` for one row: u8x32 sums and nibbles, 32-byte tables at tabs[at:] and tabs[at + 64:]."""
    ab = _simd.add8(_simd.pshufb(_simd.load(tabs, at), lo), _simd.pshufb(_simd.load(tabs, at + 64), hi))
    return _simd.add16(full, ab), _simd.add16(odd, _simd.shift_right16(ab, 8))


@njit(cache=True, nogil=True, inline="always")
def _nibbles(x, low):
    """(low nibbles, high nibbles) of the bytes of x, each a byte."""
    return _simd.and_(x, low), _simd.and_(_simd.shift_right16(x, 4), low)


@njit(cache=True, nogil=True, inline="always")
def _sums_avx512(flat, offset, rows, tabs, t0, t1, t2, t3, m):
    """`block_sums` with zmm registers: a row pair (64 bytes of codes) a step, one `vpshufb` per
    nibble half and query. Each half of a 64-byte sum holds every other row; the halves are added
    before the float conversion (a window of `_FLUSH_ROWS` rows still adds at most 256 * 255 per
    16-bit lane), and an odd last row takes a 32-byte step."""
    low = _simd.splat64(15)
    low32 = _simd.splat(15)
    e0 = _wide.splat_f32(0.0)
    o0, e1, o1, e2, o2, e3, o3 = e0, e0, e0, e0, e0, e0, e0
    r = 0
    while r < rows:
        end = min(rows, r + _FLUSH_ROWS)
        pairs_end = r + (end - r) // 2 * 2
        f0 = _simd.splat64(0)
        g0, f1, g1, f2, g2, f3, g3 = f0, f0, f0, f0, f0, f0, f0
        for rr in range(r, pairs_end, 2):
            lo, hi = _nibbles(_simd.load64(flat, offset + 32 * rr), low)
            at = 64 * rr
            f0, g0 = _add_tables(tabs, t0 + at, lo, hi, f0, g0)
            if m == 4:
                f1, g1 = _add_tables(tabs, t1 + at, lo, hi, f1, g1)
                f2, g2 = _add_tables(tabs, t2 + at, lo, hi, f2, g2)
                f3, g3 = _add_tables(tabs, t3 + at, lo, hi, f3, g3)
        h0, k0 = _simd.fold_halves16(f0), _simd.fold_halves16(g0)
        h1, k1 = _simd.fold_halves16(f1), _simd.fold_halves16(g1)
        h2, k2 = _simd.fold_halves16(f2), _simd.fold_halves16(g2)
        h3, k3 = _simd.fold_halves16(f3), _simd.fold_halves16(g3)
        if pairs_end < end:   # row pairs_end (even) alone: its tables open its pair's
            lo, hi = _nibbles(_simd.load(flat, offset + 32 * pairs_end), low32)
            at = 64 * pairs_end
            h0, k0 = _add_row_tables(tabs, t0 + at, lo, hi, h0, k0)
            if m == 4:
                h1, k1 = _add_row_tables(tabs, t1 + at, lo, hi, h1, k1)
                h2, k2 = _add_row_tables(tabs, t2 + at, lo, hi, h2, k2)
                h3, k3 = _add_row_tables(tabs, t3 + at, lo, hi, h3, k3)
        e0, o0 = _add_window(e0, o0, h0, k0)
        if m == 4:
            e1, o1 = _add_window(e1, o1, h1, k1)
            e2, o2 = _add_window(e2, o2, h2, k2)
            e3, o3 = _add_window(e3, o3, h3, k3)
        r = end
    return e0, o0, e1, o1, e2, o2, e3, o3


@njit(cache=True, nogil=True, inline="always")
def _add_window(e, o, full, odd):
    """Float sums (e, o) plus a window's 16-bit sums (full, odd: u8x32, see `_add_tables`)."""
    we, wo = _wide.split_sums(full, odd)
    return _wide.fadd(e, we), _wide.fadd(o, wo)


# The ymm and plain-loop kernels are called, not inlined: inlined beside the zmm one in the block loop,
# they cost it its registers (bench: the zmm scan ran 1.5x slower).
@njit(cache=True, nogil=True)
def _sums_avx2(flat, offset, rows, tabs, t0, t1, t2, t3, m):
    """`block_sums` with ymm registers: a row (32 bytes of codes) a step."""
    low = _simd.splat(15)
    e0 = _wide.splat_f32(0.0)
    o0, e1, o1, e2, o2, e3, o3 = e0, e0, e0, e0, e0, e0, e0
    r = 0
    while r < rows:
        end = min(rows, r + _FLUSH_ROWS)
        f0 = _simd.splat(0)
        g0, f1, g1, f2, g2, f3, g3 = f0, f0, f0, f0, f0, f0, f0
        # One loop per m, with m a constant inside, so that LLVM unrolls the four-query loop.
        if m == 4:
            for rr in range(r, end):
                lo, hi = _nibbles(_simd.load(flat, offset + 32 * rr), low)
                at = 64 * rr - 32 * (rr & 1)   # PAIR_BYTES * (rr // 2) + 32 * (rr % 2)
                f0, g0 = _add_row_tables(tabs, t0 + at, lo, hi, f0, g0)
                f1, g1 = _add_row_tables(tabs, t1 + at, lo, hi, f1, g1)
                f2, g2 = _add_row_tables(tabs, t2 + at, lo, hi, f2, g2)
                f3, g3 = _add_row_tables(tabs, t3 + at, lo, hi, f3, g3)
        else:
            for rr in range(r, end):
                lo, hi = _nibbles(_simd.load(flat, offset + 32 * rr), low)
                f0, g0 = _add_row_tables(tabs, t0 + 64 * rr - 32 * (rr & 1), lo, hi, f0, g0)
        e0, o0 = _add_window(e0, o0, f0, g0)
        if m == 4:
            e1, o1 = _add_window(e1, o1, f1, g1)
            e2, o2 = _add_window(e2, o2, f2, g2)
            e3, o3 = _add_window(e3, o3, f3, g3)
        r = end
    return e0, o0, e1, o1, e2, o2, e3, o3


@njit(cache=True, nogil=True)
def _sums_portable(flat, offset, rows, tabs, t0, t1, t2, t3, m, scratch):
    """`block_sums` in plain loops (any CPU), through scratch (4 * 32,) float32."""
    scratch[:] = 0.0
    starts = (t0, t1, t2, t3)
    for j in range(m):
        t = starts[j]
        for rr in range(rows):
            at = t + 64 * rr - 32 * (rr & 1)
            base = offset + 32 * rr
            for lane in range(BLOCK):
                x = np.int64(flat[base + lane])
                scratch[BLOCK * j + split_position(lane)] += np.float32(np.int32(tabs[at + (x & 15)])
                                                                        + np.int32(tabs[at + 64 + (x >> 4)]))
    return (_wide.load_f32(scratch, 0), _wide.load_f32(scratch, 16), _wide.load_f32(scratch, 32),
            _wide.load_f32(scratch, 48), _wide.load_f32(scratch, 64), _wide.load_f32(scratch, 80),
            _wide.load_f32(scratch, 96), _wide.load_f32(scratch, 112))


@njit(cache=True, nogil=True, inline="always")
def block_sums(flat, offset, rows, tabs, t0, t1, t2, t3, m, simd, scratch):
    """The u8-table sums of the 32 vectors of the block at flat[offset:] for the queries whose
    `pair_tables` start at tabs[t0:] (m = 1) or at t0..t3 (m = 4, one code load for all four).

    Returns (e0, o0, e1, o1, e2, o2, e3, o3): query j's sums as two f32x16,
    e_j for the even lanes and o_j for the odd ones, i.e. positions 0..15 and
    16..31 of split order (`split_lane`); exact integers (below 2**24).
    Queries past m get zeros. simd (`simd_level`): 2 zmm, 1 ymm, 0 plain
    loops through scratch (4 * 32,) float32.

    The scan loops write this dispatch out in their block loop instead of
    calling it: inlined twice over, the arrays' reference counts are taken
    around the branches on every block, which cost the one-query scan a
    third of its time.
    """
    if simd == 2:
        sums = _sums_avx512(flat, offset, rows, tabs, t0, t1, t2, t3, m)
    elif simd == 1:
        sums = _sums_avx2(flat, offset, rows, tabs, t0, t1, t2, t3, m)
    else:
        sums = _sums_portable(flat, offset, rows, tabs, t0, t1, t2, t3, m, scratch)
    return sums


@njit(cache=True, nogil=True, inline="always")
def store_sums(e, o, totals, j):
    """totals[32 j: 32 j + 32] (float32) = the sums (e, o) of `block_sums`, in split order."""
    _wide.store_wide(totals, BLOCK * j, e)
    _wide.store_wide(totals, BLOCK * j + 16, o)


def split_order() -> np.ndarray:
    """lane_of[p]: the block lane whose total sits at position p: (32,) int64."""
    return split_lane(np.arange(BLOCK))


# The bound is evaluated in float32, eight lanes at a time; every rounding
# of it is below 2**-24 of the magnitudes involved, so adding 2**-20 of them
# keeps it an upper bound.
_F32_SLACK = 2.0 ** -20
_LOWEST = np.float32(-np.finfo(np.float32).max)


SPLIT_BYTES = 8   # per vector held by `split_factors`: weight and bias, float32


@njit(parallel=True, cache=True, nogil=True)
def split_factors(factors, n):
    """Per-vector weight and bias of slots 0..n-1, in split order.

    factors (n, 1 or 2) float32 (weight, bias); returns (2, n_blocks * 32)
    float32. Padding lanes get weight 0 and the lowest float32 bias, so their
    bounds never pass (and stay finite: `_upper_bounds` widens the bias).
    """
    nb = (n + BLOCK - 1) // BLOCK
    out = np.empty((2, nb * BLOCK), np.float32)
    for b in prange(nb):
        for p in range(BLOCK):
            v = b * BLOCK + split_lane(p)
            i = b * BLOCK + p
            if v < n:
                out[0, i] = factors[v, 0]
                out[1, i] = factors[v, 1] if factors.shape[1] > 1 else np.float32(0.0)
            else:
                out[0, i] = 0.0
                out[1, i] = _LOWEST
    return out


@njit(cache=True, nogil=True, inline="always")
def _exact_partial(flat, offset, rows, lane, ftab, jf):
    """Float64 partial score of one lane of the block at flat[offset:], from the float tables ftab[jf]."""
    # Four running sums: one would make a chain of dependent adds, 4 cycles each.
    s0 = 0.0
    s1 = 0.0
    s2 = 0.0
    s3 = 0.0
    r = 0
    while r + 1 < rows:
        x = np.int64(flat[offset + 32 * r + lane])
        y = np.int64(flat[offset + 32 * r + 32 + lane])
        s0 += ftab[jf, 2 * r, x & 15]
        s1 += ftab[jf, 2 * r + 1, x >> 4]
        s2 += ftab[jf, 2 * r + 2, y & 15]
        s3 += ftab[jf, 2 * r + 3, y >> 4]
        r += 2
    if r < rows:
        x = np.int64(flat[offset + 32 * r + lane])
        s0 += ftab[jf, 2 * r, x & 15]
        s1 += ftab[jf, 2 * r + 1, x >> 4]
    return (s0 + s1) + (s2 + s3)


@njit(cache=True, nogil=True)
def coordinate_centroids(cents, bits, per_nibble):
    """(per_nibble, 16) float64: centroid of coordinate t of a sub-code whose nibble is x."""
    mask = (1 << bits) - 1
    cx = np.empty((per_nibble, 16))
    for t in range(per_nibble):
        for x in range(16):
            cx[t, x] = cents[(x >> (t * bits)) & mask]
    return cx


@njit(cache=True, nogil=True)
def padded_query(q, rows, per_nibble):
    """q (dim,) float32 as float64, zero-padded to the 2 * rows * per_nibble coordinates of a block row."""
    qp = np.zeros(2 * rows * per_nibble)
    qp[:q.shape[0]] = q
    return qp


@njit(cache=True, nogil=True, inline="always")
def _nibble_value(qp, j, x, cx, per_nibble):
    """T_j[x] of `float_tables` without its offset, summed in the same order: a padding
    coordinate adds 0 * c, which leaves a float sum unchanged."""
    at = j * per_nibble
    if per_nibble == 1:
        return qp[at] * cx[0, x]
    v = qp[at] * cx[0, x] + qp[at + 1] * cx[1, x]
    for t in range(2, per_nibble):
        v += qp[at + t] * cx[t, x]
    return v


@njit(cache=True, nogil=True)
def _direct_partial_whole(flat, offset, rows, lane, qp, off, cx):
    """`direct_partial` for one coordinate a nibble (3 and 4 bits)."""
    x = flat[offset + lane]
    s0 = qp[0] * cx[0, x & 15] + off
    s1 = qp[1] * cx[0, x >> 4]
    s2 = 0.0
    s3 = 0.0
    if rows > 1:
        y = flat[offset + 32 + lane]
        s2 = qp[2] * cx[0, y & 15]
        s3 = qp[3] * cx[0, y >> 4]
    r = 2
    while r + 1 < rows:
        x = flat[offset + 32 * r + lane]
        y = flat[offset + 32 * r + 32 + lane]
        s0 += qp[2 * r] * cx[0, x & 15]
        s1 += qp[2 * r + 1] * cx[0, x >> 4]
        s2 += qp[2 * r + 2] * cx[0, y & 15]
        s3 += qp[2 * r + 3] * cx[0, y >> 4]
        r += 2
    if r < rows:
        x = flat[offset + 32 * r + lane]
        s0 += qp[2 * r] * cx[0, x & 15]
        s1 += qp[2 * r + 1] * cx[0, x >> 4]
    return (s0 + s1) + (s2 + s3)


@njit(cache=True, nogil=True)
def direct_partial(flat, offset, rows, lane, qp, off, cx, per_nibble):
    """`_exact_partial` computed from the query instead of float tables, with the same sums in the
    same order (bit-identical): qp from `padded_query`, off its partial-score offset, cx from
    `coordinate_centroids`. 2x faster than looking up float64 tables, which do not fit in L1 at
    d = 384 (49 KB), and nothing to build per query."""
    if per_nibble == 1:
        return _direct_partial_whole(flat, offset, rows, lane, qp, off, cx)
    x = np.int64(flat[offset + lane])
    s0 = _nibble_value(qp, 0, x & 15, cx, per_nibble) + off
    s1 = _nibble_value(qp, 1, x >> 4, cx, per_nibble)
    s2 = 0.0
    s3 = 0.0
    # Row 0 (with the offset, which table 0 holds) and row 1 are _exact_partial's first pair.
    if rows > 1:
        y = np.int64(flat[offset + 32 + lane])
        s2 = _nibble_value(qp, 2, y & 15, cx, per_nibble)
        s3 = _nibble_value(qp, 3, y >> 4, cx, per_nibble)
    r = 2
    while r + 1 < rows:
        x = np.int64(flat[offset + 32 * r + lane])
        y = np.int64(flat[offset + 32 * r + 32 + lane])
        s0 += _nibble_value(qp, 2 * r, x & 15, cx, per_nibble)
        s1 += _nibble_value(qp, 2 * r + 1, x >> 4, cx, per_nibble)
        s2 += _nibble_value(qp, 2 * r + 2, y & 15, cx, per_nibble)
        s3 += _nibble_value(qp, 2 * r + 3, y >> 4, cx, per_nibble)
        r += 2
    if r < rows:
        x = np.int64(flat[offset + 32 * r + lane])
        s0 += _nibble_value(qp, 2 * r, x & 15, cx, per_nibble)
        s1 += _nibble_value(qp, 2 * r + 1, x >> 4, cx, per_nibble)
    return (s0 + s1) + (s2 + s3)


@njit(cache=True, nogil=True)
def _bound_terms(base, delta, err, rows):
    """base, delta and err as float32, err widened to cover float32 evaluation of the bound."""
    largest = abs(base) + delta * 510.0 * rows + err
    return np.float32(base), np.float32(delta), np.float32(err + _F32_SLACK * largest)


@njit(cache=True, nogil=True)
def _refined_terms(base2, delta, delta2, err2, rows):
    """`_bound_terms` of the residual estimate base2 + delta * S + delta2 * S2 (`build_tables`):
    (base2, delta2, err2 widened for float32 evaluation) as float32."""
    largest = abs(base2) + (delta + delta2) * 510.0 * rows + err2
    return np.float32(base2), np.float32(delta2), np.float32(err2 + _F32_SLACK * largest)


@njit(cache=True, nogil=True, inline="always")
def refined_bounds(e, o, e2, o2, i0, w, bias, bound, jf, side):
    """`upper_bounds` (side +1) or `lower_bounds` (-1) from the block's sums (e, o) over the u8
    tables and (e2, o2) over the residual tables: w (base2 + delta S + delta2 S2) + side (|w| err2
    + |bias| slack) + bias, two f32x16 in split order; bound[jf] = (base, delta, err, base2,
    delta2, err2) float32 (`_bound_terms`, `_refined_terms`)."""
    delta = _wide.splat_f32(bound[jf, 1])
    base2 = _wide.splat_f32(bound[jf, 3])
    delta2 = _wide.splat_f32(bound[jf, 4])
    pe = _wide.fma(delta2, e2, _wide.fma(delta, e, base2))
    po = _wide.fma(delta2, o2, _wide.fma(delta, o, base2))
    return _weighted_bounds(pe, po, i0, w, bias, bound[jf, 5], side)


@njit(cache=True, nogil=True, inline="always")
def _weighted_bounds(pe, po, i0, w, bias, err, side):
    """w p + side (|w| err + |bias| slack) + bias for the estimated partial scores (pe, po) of the
    block at slot i0 (two f32x16 in split order), err (float32) their error bound."""
    err = _wide.splat_f32(side * err)
    slack = _wide.splat_f32(side * _F32_SLACK)
    we, wo = _wide.load_f32(w, i0), _wide.load_f32(w, i0 + 16)
    be, bo = _wide.load_f32(bias, i0), _wide.load_f32(bias, i0 + 16)
    ue = _wide.fma(we, pe, _wide.fma(_wide.fabs(we), err, _wide.fma(_wide.fabs(be), slack, be)))
    uo = _wide.fma(wo, po, _wide.fma(_wide.fabs(wo), err, _wide.fma(_wide.fabs(bo), slack, bo)))
    return ue, uo


@njit(cache=True, nogil=True, inline="always")
def _bound_lanes(e, o, i0, w, bias, bound, jf, side):
    """w (base + delta S) + side (|w| err + |bias| slack) + bias for the sums (e, o) of the block at
    slot i0: two f32x16 in split order; side +1 gives `upper_bounds`, -1 `lower_bounds`."""
    base = _wide.splat_f32(bound[jf, 0])
    delta = _wide.splat_f32(bound[jf, 1])
    return _weighted_bounds(_wide.fma(delta, e, base), _wide.fma(delta, o, base), i0, w, bias, bound[jf, 2], side)


@njit(cache=True, nogil=True, inline="always")
def upper_bounds(e, o, i0, w, bias, bound, jf):
    """The upper bounds of the block at slot i0 from its sums (e, o) (`block_sums`): two f32x16 in
    split order.

    w, bias: rows of `split_factors`; bound[jf] = (base, delta, err), float32
    (`_bound_terms`). u = w (base + delta S) + |w| err + bias + |bias| slack:
    the bias is widened by _F32_SLACK of itself, like the table terms (fused
    multiply-adds round less than that allows).
    """
    return _bound_lanes(e, o, i0, w, bias, bound, jf, np.float32(1.0))


@njit(cache=True, nogil=True, inline="always")
def lower_bounds(e, o, i0, w, bias, bound, jf):
    """The lower bounds matching `upper_bounds` (same inputs): w (base + delta S) - |w| err + bias -
    |bias| slack, two f32x16 in split order. A vector's exact score is at least its lower bound."""
    return _bound_lanes(e, o, i0, w, bias, bound, jf, np.float32(-1.0))


@njit(cache=True, nogil=True, inline="always")
def reaches(ue, uo, kth):
    """Whether any of the 32 upper bounds (ue, uo) reaches kth (float64, compared in float32 rounded
    down, never up)."""
    t = _wide.splat_f32(_below32(kth))
    return (_wide.ge_mask(ue, t) | _wide.ge_mask(uo, t)) != 0


@njit(cache=True, nogil=True, inline="always")
def _below32(kth):
    """kth (float64) as the float32 at or below it: a float32 compare against it lets by every
    value that reaches kth."""
    thr = np.float32(kth)
    if thr > kth:
        thr = np.nextafter(thr, np.float32(-np.inf))
    return thr


@njit(cache=True, nogil=True, inline="always")
def store_upper(ue, uo, upper):
    """upper (32,) float32 = the bounds (ue, uo) of `upper_bounds`, in split order."""
    _wide.store_wide(upper, 0, ue)
    _wide.store_wide(upper, 16, uo)


@njit(cache=True, nogil=True, inline="always")
def lane_allowed(allowed, slot):
    """Whether `slot` may be returned: allowed is a (n_slots,) uint8 mask, or zero-length for no filter."""
    return allowed.shape[0] == 0 or allowed[slot] != 0


@njit(cache=True, nogil=True)
def block_allowed(allowed, lo, hi):
    """Whether any slot of lo..hi-1 may be returned (`lane_allowed`): a block with none is skipped
    before its codes are read."""
    if allowed.shape[0] == 0:
        return True
    for v in range(lo, hi):
        if allowed[v] != 0:
            return True
    return False


@njit(cache=True, nogil=True)
def active_blocks(allowed, n):
    """The blocks of slots 0..n-1 that hold an allowed slot (`lane_allowed`), ascending (int64): every
    block without a filter. One pass over the mask a search, so that chunks of work split the blocks
    that are read, and no task looks at the others."""
    nb = (n + BLOCK - 1) // BLOCK
    if allowed.shape[0] == 0:
        return np.arange(nb)
    out = np.empty(nb, np.int64)
    m = 0
    for b in range(nb):
        if block_allowed(allowed, b * BLOCK, min(n, b * BLOCK + BLOCK)):
            out[m] = b
            m += 1
    return out[:m]


@njit(cache=True, nogil=True)
def residual_sums(flat, offset, rows, tabs, t, simd, scratch):
    """`block_sums` of one query (m = 1), called rather than inlined: the scan meets the residual
    tables only in the few blocks the first estimate cannot rule out. Returns (e, o)."""
    if simd == 2:   # `block_sums`, dispatched here (see there)
        sums = _sums_avx512(flat, offset, rows, tabs, t, t, t, t, 1)
    elif simd == 1:
        sums = _sums_avx2(flat, offset, rows, tabs, t, t, t, t, 1)
    else:
        sums = _sums_portable(flat, offset, rows, tabs, t, t, t, t, 1, scratch)
    return sums[0], sums[1]


@njit(cache=True, nogil=True, inline="always")
def _spread16(x):
    """The low 16 bits of x (int64) moved to bits 0, 2, .., 30."""
    x &= 0xFFFF
    x = (x | (x << 8)) & 0x00FF00FF
    x = (x | (x << 4)) & 0x0F0F0F0F
    x = (x | (x << 2)) & 0x33333333
    return (x | (x << 1)) & 0x55555555


@njit(cache=True, nogil=True, inline="always")
def lanes_reaching(values, kth):
    """Bit l (int64) set where block lane l's value in values (32,) float32, split order, may reach
    kth (float64): compared in float32 rounded down, so a superset that the caller checks exactly."""
    t = _wide.splat_f32(_below32(kth))
    even = _wide.ge_mask(_wide.load_f32(values, 0), t)    # positions 0..15: the even lanes
    odd = _wide.ge_mask(_wide.load_f32(values, 16), t)    # positions 16..31: the odd lanes
    return _spread16(even) | (_spread16(odd) << 1)


@njit(cache=True, nogil=True)
def gather_candidates(b, end, upper, lower, shift, kth, floor_s, floor_i, cand_u, cand_s, count, allowed):
    """Candidates of the block at b: raise the floor (min-heap floor_s, floor_i of the k best lower
    bounds seen, which the final k-th best score reaches) by the block's lower bounds, then append
    every lane whose upper bound reaches both the floor and kth (the exact heap's root; -inf when
    every score is deferred) to cand_u (upper bounds, float64) and cand_s (slots, int64) from
    `count`; returns the new count.

    upper, lower (32,) float32 in split order, relative to `shift` (float64:
    0 for a flat index, an IVF list's share of the score), which is added
    to both before they meet the floor and kth, and to what is stored;
    slots from `end` on and those `allowed` excludes are skipped. Lanes go
    in slot order, so the candidates of a scan stay in slot order. The
    caller leaves room for 32. Only the lanes a vector compare lets through
    are visited (floor - shift rounds in float64, far inside the bounds'
    float32 slack).
    """
    i0 = b * BLOCK
    last = min(BLOCK, end - i0)
    bits = lanes_reaching(lower, floor_s[0] - shift)
    while bits:
        lane = trailing_zeros(bits)
        bits &= bits - 1
        low = np.float64(lower[split_position(lane)]) + shift
        if lane < last and low > floor_s[0] and lane_allowed(allowed, i0 + lane):
            heap_push(floor_s, floor_i, low, i0 + lane)
    thr = max(kth, floor_s[0])
    bits = lanes_reaching(upper, thr - shift)
    while bits:
        lane = trailing_zeros(bits)
        bits &= bits - 1
        up = np.float64(upper[split_position(lane)]) + shift
        if lane < last and up >= thr and lane_allowed(allowed, i0 + lane):
            cand_u[count] = up
            cand_s[count] = i0 + lane
            count += 1
    return count


@njit(cache=True, nogil=True)
def drop_candidates(cand_u, cand_s, count, thr):
    """Keep the candidates whose upper bound reaches thr, in their order; returns how many."""
    kept = 0
    for c in range(count):
        if cand_u[c] >= thr:
            cand_u[kept] = cand_u[c]
            cand_s[kept] = cand_s[c]
            kept += 1
    return kept


@njit(cache=True, nogil=True)
def rescore_candidates(cand_u, cand_s, count, floor, flat, rows, ftab, jf, w, bias, hs, hi):
    """Exact scores (float tables ftab[jf]) of the candidates whose upper bound reaches the floor
    and the heap (hs, hi)'s root, pushed into the heap; candidates in slot order, so equal scores
    keep the lower slot."""
    for c in range(count):
        if cand_u[c] >= floor and cand_u[c] >= hs[0]:
            v = cand_s[c]
            lane, at, offset = slot_place(v, rows)
            score = np.float64(w[at]) * _exact_partial(flat, offset, rows, lane, ftab, jf) + bias[at]
            if score > hs[0]:
                heap_push(hs, hi, score, v)


@njit(cache=True, nogil=True, inline="always")
def estimates(totals, jt, i0, w, bias, bound, jf, est):
    """est[p] = w * (base + delta * S) + bias in float32 for position p of the block at slot i0:
    the u8-table estimate of a partial score (inputs as in `upper_bounds`; totals (>= 32 (jt + 1),) float32 from `store_sums`), eight lanes at a time."""
    base, delta = bound[jf, 0], bound[jf, 1]
    ui, ut = np.uint64(i0), np.uint64(BLOCK * jt)
    for p in range(BLOCK):
        up = np.uint64(p)
        est[up] = w[ui + up] * (base + delta * np.float32(totals[ut + up])) + bias[ui + up]


@njit(cache=True, nogil=True)
def push_estimates(b, end, totals, jt, w, bias, bound, jf, shift, hs, hi, est, allowed):
    """Push the block's vectors (slots below `end` that `allowed` lets through) by their u8-table
    estimate (`estimates`) + shift into the heap (hs, hi); est (32,) float32 scratch.

    The estimate skips exact re-scoring: for shortlists that are re-ranked
    from the vectors anyway. totals, jt as in `estimates`, w, bias, bound, jf
    as in `upper_bounds`; ties go to the lower slot.
    """
    i0 = b * BLOCK
    estimates(totals, jt, i0, w, bias, bound, jf, est)
    for lane in range(min(BLOCK, end - i0)):
        e = np.float64(est[split_position(lane)]) + shift
        if (e > hs[0] or (e == hs[0] and i0 + lane < hi[0])) and lane_allowed(allowed, i0 + lane):
            heap_push(hs, hi, e, i0 + lane)


@njit(parallel=True, cache=True, nogil=True)
def search_blocks(blocks, n, wsplit, qrot, qoff, book, k, n_chunks, group, simd, exact, allowed, guarantee=True):
    """Exact float top k of slots 0..n-1 for each query (exact=False: top k by the u8-table
    estimate, see `push_estimates`), among the slots `allowed` lets through: (n_slots,) uint8, 1
    where a slot may be returned, or zero-length for all. Blocks with no allowed slot are not read.

    blocks
    (n_blocks, rows, 32) uint8; wsplit (2, n_blocks * 32) float32 from
    `split_factors`;
    qrot (nq, dim) float32 rotated queries; qoff (nq,) float64 partial-score
    offsets (see `build_tables`); book the codes' `BlockCodebook`.
    Tasks are (query group, database chunk) pairs: `group` queries scan each
    block while it is in cache; n_chunks > 1 splits the database across
    threads for small batches (call it under `numba.parallel_chunksize(1)`
    so threads take tasks one at a time). Returns scores (nq, k) float32 best first and
    slots (nq, k) int64, -1 padded. simd (`simd_level`): the registers of
    `block_sums` (2 zmm, 1 ymm, 0 plain loops). guarantee=True bounds each
    estimate's error by every table's worst rounding (`build_tables`' err),
    so the top k is the float top k always; False by its `likely` error,
    which lets fewer blocks by and misses a vector of the float top k only if
    its estimate's error exceeds that.

    Three steps a block. The u8 tables bound all 32 vectors for every query
    of the group; a query whose bounds reach max(k-th best exact score, floor)
    sums the block again over its residual tables, whose bounds are about 126
    times tighter; the lanes those let by become candidates, re-scored
    exactly once the task has seen all its blocks (or when their room,
    `candidate_room`, runs out). The floor, the k best refined lower bounds,
    sits just below the final k-th best, so about k candidates a query are
    re-scored, where re-scoring every lane that reaches the running k-th
    best would re-score each new entry of a running top k (about
    k ln(n / k) of them).
    """
    nq = qrot.shape[0]
    rows = blocks.shape[1]
    flat = blocks.reshape(-1)
    scan = active_blocks(allowed, n)   # the blocks to read, with at least one allowed slot
    nb = scan.shape[0]
    n_groups = (nq + group - 1) // group
    step = (nb + n_chunks - 1) // n_chunks
    part_s = np.full((nq, n_chunks, k), -np.inf)
    part_i = np.full((nq, n_chunks, k), -1, np.int64)
    tp = n_pairs(rows) * PAIR_BYTES
    cap = candidate_room(k)
    for t in prange(n_groups * n_chunks):
        g = t // n_chunks
        ch = t - g * n_chunks
        q0 = g * group
        gq = min(group, nq - q0)
        ftab = np.empty((gq, 2 * rows, 16))
        lut = np.empty(rows * 32, np.uint8)
        res = np.empty(rows * 32, np.uint8)
        tabs = np.empty(gq * tp, np.uint8)
        tabs2 = np.empty(gq * tp if exact else 0, np.uint8)   # the residual tables (`build_tables`)
        scal = np.empty((gq, 6), np.float32)
        for j in range(gq):
            (base, delta, err, likely), (base2, delta2, err2, likely2) = build_tables(
                qrot[q0 + j], qoff[q0 + j], book, ftab[j], lut, res)
            pair_tables(lut, rows, tabs, j * tp)
            scal[j, 0], scal[j, 1], scal[j, 2] = _bound_terms(base, delta, err if guarantee else likely, rows)
            if exact:
                pair_tables(res, rows, tabs2, j * tp)
                scal[j, 3], scal[j, 4], scal[j, 5] = _refined_terms(base2, delta, delta2,
                                                                    err2 if guarantee else likely2, rows)
        scratch = np.empty(4 * BLOCK, np.float32)
        totals = np.empty(4 * BLOCK, np.float32)
        upper = np.empty(BLOCK, np.float32)
        lower = np.empty(BLOCK, np.float32)
        # Per query of the task: the k best lower bounds (`gather_candidates`; -inf when not exact) and
        # the candidates, re-scored at the end or when their room runs out (`rescore_candidates`).
        floor_s = np.full((gq, k), -np.inf)
        floor_i = np.full((gq, k), -1, np.int64)
        cand_u = np.empty((gq, cap if exact else 0))
        cand_s = np.empty((gq, cap if exact else 0), np.int64)
        count = np.zeros(gq, np.int64)
        w, bias = wsplit[0], wsplit[1]
        for at in range(ch * step, min(nb, (ch + 1) * step)):
            b = scan[at]
            j0 = 0
            while j0 < gq:
                m = 4 if j0 + 4 <= gq else 1
                t0 = j0 * tp
                t1, t2, t3 = t0 + tp * (m // 4), t0 + 2 * tp * (m // 4), t0 + 3 * tp * (m // 4)
                if simd == 2:   # `block_sums`, dispatched here (see there)
                    sums = _sums_avx512(flat, b * rows * BLOCK, rows, tabs, t0, t1, t2, t3, m)
                elif simd == 1:
                    sums = _sums_avx2(flat, b * rows * BLOCK, rows, tabs, t0, t1, t2, t3, m)
                else:
                    sums = _sums_portable(flat, b * rows * BLOCK, rows, tabs, t0, t1, t2, t3, m, scratch)
                for j in range(m):
                    q = q0 + j0 + j
                    jj = j0 + j
                    ue, uo = upper_bounds(sums[2 * j], sums[2 * j + 1], b * BLOCK, w, bias, scal, jj)
                    kth = max(part_s[q, ch, 0], floor_s[jj, 0])
                    if not reaches(ue, uo, kth):
                        continue
                    if exact:
                        e2, o2 = residual_sums(flat, b * rows * BLOCK, rows, tabs2, jj * tp, simd, scratch)
                        ue, uo = refined_bounds(sums[2 * j], sums[2 * j + 1], e2, o2, b * BLOCK, w, bias, scal, jj,
                                                np.float32(1.0))
                        if not reaches(ue, uo, kth):
                            continue
                        store_upper(ue, uo, upper)
                        le, lo = refined_bounds(sums[2 * j], sums[2 * j + 1], e2, o2, b * BLOCK, w, bias, scal, jj,
                                                np.float32(-1.0))
                        store_upper(le, lo, lower)
                        if count[jj] > cap - BLOCK:   # room for the block: drop what the floor rules out,
                            count[jj] = drop_candidates(cand_u[jj], cand_s[jj], count[jj], kth)
                            if count[jj] > cap // 2:   # and if that frees too little, re-score them now
                                rescore_candidates(cand_u[jj], cand_s[jj], count[jj], floor_s[jj, 0], flat, rows,
                                                   ftab, jj, w, bias, part_s[q, ch], part_i[q, ch])
                                count[jj] = 0
                        count[jj] = gather_candidates(b, n, upper, lower, 0.0, part_s[q, ch, 0], floor_s[jj],
                                                      floor_i[jj], cand_u[jj], cand_s[jj], count[jj], allowed)
                    else:
                        store_sums(sums[2 * j], sums[2 * j + 1], totals, 0)
                        push_estimates(b, n, totals, 0, w, bias, scal, jj, 0.0, part_s[q, ch], part_i[q, ch],
                                       upper, allowed)
                j0 += m
        for j in range(gq if exact else 0):
            rescore_candidates(cand_u[j], cand_s[j], count[j], floor_s[j, 0], flat, rows, ftab, j, w, bias,
                               part_s[q0 + j, ch], part_i[q0 + j, ch])
    out_s = np.empty((nq, k), np.float32)
    out_i = np.empty((nq, k), np.int64)
    tmp = np.empty(k)
    for q in range(nq):
        sorted_topk(part_s[q].ravel(), part_i[q].ravel(), k, tmp, out_i[q])
        out_s[q] = tmp
    return out_s, out_i


@njit(cache=True, nogil=True)
def candidate_room(k):
    """Candidates held per query before `search_blocks` drops or re-scores them: a scan in random
    order meets about k ln(n / k) new entries of its running top k, and a few blocks more."""
    return 8 * k + 4 * BLOCK


# Scratch bytes of the per-chunk heaps of `_score_slots_direct` at most (chunks x queries x k).
_DIRECT_HEAP_BYTES = 64 << 20


def score_slots(blocks, slots, wsplit, qrot, qoff, book, k):
    """Exact float top k among the given slots for each query, each scored directly (no scan): for
    filters that allow so few slots that scanning their blocks would cost more.

    slots (m,) int64, ascending and distinct; the other arguments as in
    `search_blocks`. Scores are those `search_blocks` re-scores (the same
    sums in the same order: `direct_partial`, or the float tables for a
    compact code's tail), so results equal its filtered results; nothing is
    estimated, so this also serves exact=False. Returns scores (nq, k)
    float32 best first and slots (nq, k) int64, -1 padded.
    """
    if book.tail_first < qrot.shape[1]:
        return _score_slots_tables(blocks, slots, wsplit, qrot, qoff, book, k)
    nq = qrot.shape[0]
    n_chunks = max(1, min(4 * numba.get_num_threads(), slots.shape[0] // 16,
                          _DIRECT_HEAP_BYTES // (16 * k * max(nq, 1))))
    return _score_slots_direct(blocks, slots, wsplit, qrot, qoff, book.cents, book.bits, book.per_nibble, k,
                               n_chunks)


@njit(parallel=True, cache=True, nogil=True)
def _score_slots_direct(blocks, slots, wsplit, qrot, qoff, cents, bits, per_nibble, k, n_chunks):
    """`score_slots` by `direct_partial` (no tail), the slots in n_chunks ranges a task: each
    vector's bytes are gathered once (one per block row, a cache line apart in the block) and met by
    every query from L1, where scoring query by query would fetch them once a query."""
    nq = qrot.shape[0]
    rows = blocks.shape[1]
    flat = blocks.reshape(-1)
    w, bias = wsplit[0], wsplit[1]
    cx = coordinate_centroids(cents, bits, per_nibble)
    qps = np.empty((nq, 2 * rows * per_nibble))
    for q in range(nq):
        qps[q] = padded_query(qrot[q], rows, per_nibble)
    m = slots.shape[0]
    step = (m + n_chunks - 1) // n_chunks
    part_s = np.full((n_chunks, nq, k), -np.inf)
    part_i = np.full((n_chunks, nq, k), -1, np.int64)
    for ch in prange(n_chunks):
        own = np.zeros(BLOCK * rows, np.uint8)   # the vector's bytes at lane 0 of a block of its own
        for t in range(ch * step, min(m, (ch + 1) * step)):   # slot order: equal scores keep the lower slot
            v = slots[t]
            lane, at, offset = slot_place(v, rows)
            for r in range(rows):
                own[BLOCK * r] = flat[offset + BLOCK * r + lane]
            wv = np.float64(w[at])
            bv = bias[at]
            for q in range(nq):
                score = wv * direct_partial(own, 0, rows, 0, qps[q], qoff[q], cx, per_nibble) + bv
                if score > part_s[ch, q, 0]:
                    heap_push(part_s[ch, q], part_i[ch, q], score, v)
    out_s = np.empty((nq, k), np.float32)
    out_i = np.empty((nq, k), np.int64)
    for q in prange(nq):
        tmp = np.empty(k)
        sorted_topk(np.ascontiguousarray(part_s[:, q]).ravel(), np.ascontiguousarray(part_i[:, q]).ravel(), k, tmp,
                    out_i[q])
        out_s[q] = tmp
    return out_s, out_i


@njit(parallel=True, cache=True, nogil=True)
def _score_slots_tables(blocks, slots, wsplit, qrot, qoff, book, k):
    """`score_slots` from the float tables (a compact code's tail), query by query."""
    nq = qrot.shape[0]
    rows = blocks.shape[1]
    flat = blocks.reshape(-1)
    w, bias = wsplit[0], wsplit[1]
    out_s = np.empty((nq, k), np.float32)
    out_i = np.empty((nq, k), np.int64)
    for q in prange(nq):
        ftab = np.empty((1, 2 * rows, 16))
        lut = np.empty(rows * 32, np.uint8)
        res = np.empty(rows * 32, np.uint8)
        build_tables(qrot[q], qoff[q], book, ftab[0], lut, res)
        hs = np.full(k, -np.inf)
        hi = np.full(k, -1, np.int64)
        for t in range(slots.shape[0]):   # slot order, so equal scores keep the lower slot
            v = slots[t]
            lane, at, offset = slot_place(v, rows)
            score = np.float64(w[at]) * _exact_partial(flat, offset, rows, lane, ftab, 0) + bias[at]
            if score > hs[0]:
                heap_push(hs, hi, score, v)
        tmp = np.empty(k)
        sorted_topk(hs, hi, k, tmp, out_i[q])
        out_s[q] = tmp
    return out_s, out_i


@njit(parallel=True, cache=True, nogil=True)
def quantized_sums(blocks, n, luts, simd):
    """u8 table totals of slots 0..n-1 for each lut row: (nq, n) int64 (for tests).

    Rows go in fours through the shared-load kernel, the tail one at a time.

    luts (nq, rows * 32) uint8 as written by `build_tables`.
    """
    nq = luts.shape[0]
    rows = blocks.shape[1]
    flat = blocks.reshape(-1)
    tp = n_pairs(rows) * PAIR_BYTES
    tabs = np.empty(nq * tp, np.uint8)
    for q in range(nq):
        pair_tables(luts[q], rows, tabs, q * tp)
    out = np.zeros((nq, n), np.int64)
    for q in prange(nq):
        scratch = np.empty(4 * BLOCK, np.float32)
        totals = np.empty(4 * BLOCK, np.float32)
        m = 4 if 4 * (q // 4) + 4 <= nq else 1
        if m == 4 and q % 4:
            continue   # done with its group of four
        for b in range((n + BLOCK - 1) // BLOCK):
            sums = block_sums(flat, b * rows * BLOCK, rows, tabs, q * tp, (q + m // 4) * tp,
                              (q + 2 * (m // 4)) * tp, (q + 3 * (m // 4)) * tp, m, simd, scratch)
            for j in range(m):
                store_sums(sums[2 * j], sums[2 * j + 1], totals, j)
            for j in range(m):
                for p in range(BLOCK):
                    v = b * BLOCK + split_lane(p)
                    if v < n:
                        out[q + j, v] = np.int64(totals[BLOCK * j + p])
    return out


def simd_level(kernel: str | None = None) -> int:
    """The `simd` argument of the kernels for `kernel` ("auto", "avx512", "avx2", "portable", or
    None: $TURBOANN_SIMD, else the best this CPU runs): 2 avx512, 1 avx2, 0 portable."""
    return _simd.LEVELS[_simd.kernel_choice(kernel)]
