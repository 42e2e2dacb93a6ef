"""The randomised Hadamard rotation's lane kernels: butterflies, lane loads and stores, prefetch.

The rotation itself (what the rounds are, how they are drawn from a seed)
is `turboann.rotation`; here are the Numba kernels that apply rounds given
as arrays, used by `rotation.Rotation` and, a group of rows at a time, by
the lane encoder (`kernels.encode.encode_lanes`). The NumPy twin of
`hadamard_rotate` is `kernels.reference.hadamard_rotate`.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from . import _lanes as L
from ._simd import prefetch

# Rows are processed LANES at a time in a coordinate-major buffer,
# v[i * LANES + l] = coordinate i of row l, so every butterfly works on one
# full AVX2 register of float32 (`kernels._lanes.f32x8`) whatever its
# stride; transforming one row at a time leaves the first log2(8) stages
# scalar. Offsets into the buffer below are in floats (coordinates * LANES).

LANES = L.WIDTH
# How far ahead rows are prefetched (`prefetch_ahead`): two groups of LANES.
PREFETCH_ROWS = 2 * LANES


@njit(cache=True, nogil=True)
def _butterflies8(x0, x1, x2, x3, x4, x5, x6, x7):
    """Three butterfly stages over eight f32x8 values (distances 1, 2 and 4 among them)."""
    a0, a1, a2, a3 = x0 + x1, x0 - x1, x2 + x3, x2 - x3
    a4, a5, a6, a7 = x4 + x5, x4 - x5, x6 + x7, x6 - x7
    b0, b1, b2, b3 = a0 + a2, a1 + a3, a0 - a2, a1 - a3
    b4, b5, b6, b7 = a4 + a6, a5 + a7, a4 - a6, a5 - a7
    return b0 + b4, b1 + b5, b2 + b6, b3 + b7, b0 - b4, b1 - b5, b2 - b6, b3 - b7


@njit(cache=True, nogil=True)
def _store8(v, t, h, y):
    """y[q] (eight f32x8) to v[t + q * h]."""
    L.store(v, t, y[0])
    L.store(v, t + h, y[1])
    L.store(v, t + 2 * h, y[2])
    L.store(v, t + 3 * h, y[3])
    L.store(v, t + 4 * h, y[4])
    L.store(v, t + 5 * h, y[5])
    L.store(v, t + 6 * h, y[6])
    L.store(v, t + 7 * h, y[7])


@njit(cache=True, nogil=True)
def _radix8_pass(v, lo, hi, h):
    """Three butterfly stages, at distances h, 2h and 4h (floats), over v[lo:hi], in registers."""
    for base in range(lo, hi, 8 * h):
        for t in range(base, base + h, LANES):
            _store8(v, t, h, _butterflies8(L.load(v, t), L.load(v, t + h), L.load(v, t + 2 * h),
                                           L.load(v, t + 3 * h), L.load(v, t + 4 * h), L.load(v, t + 5 * h),
                                           L.load(v, t + 6 * h), L.load(v, t + 7 * h)))


@njit(cache=True, nogil=True)
def _radix4_pass(v, lo, hi, h):
    """Two butterfly stages at distances h and 2h (floats) over v[lo:hi]."""
    for base in range(lo, hi, 4 * h):
        for t in range(base, base + h, LANES):
            a, b, c, e = L.load(v, t), L.load(v, t + h), L.load(v, t + 2 * h), L.load(v, t + 3 * h)
            s01, d01, s23, d23 = a + b, a - b, c + e, c - e
            L.store(v, t, s01 + s23)
            L.store(v, t + h, d01 + d23)
            L.store(v, t + 2 * h, s01 - s23)
            L.store(v, t + 3 * h, d01 - d23)


@njit(cache=True, nogil=True)
def _radix2_pass(v, lo, hi, h):
    """One butterfly stage at distance h (floats) over v[lo:hi]."""
    for base in range(lo, hi, 2 * h):
        for t in range(base, base + h, LANES):
            a, b = L.load(v, t), L.load(v, t + h)
            L.store(v, t, a + b)
            L.store(v, t + h, a - b)


@njit(cache=True, nogil=True)
def _fwht_lanes(v, lo, hi):
    """Unnormalised Walsh-Hadamard transform of coordinates [lo, hi) / LANES of every lane."""
    _fwht_stages(v, lo, hi, LANES)


@njit(cache=True, nogil=True)
def _fwht_stages(v, lo, hi, h):
    """The stages of `_fwht_lanes` from distance h (floats) on.

    Stages run at distances h, 2h, 4h, ..., three at a time while they
    last: the same butterflies in the same order whatever the grouping.
    """
    size = hi - lo
    while 8 * h <= size:
        _radix8_pass(v, lo, hi, h)
        h *= 8
    if 4 * h <= size:
        _radix4_pass(v, lo, hi, h)
    elif 2 * h <= size:
        _radix2_pass(v, lo, hi, h)


@njit(cache=True, nogil=True)
def _gathered(v, sources, gains, i):
    return L.splat(gains[i]) * L.load(v, sources[i])


@njit(cache=True, nogil=True)
def _transform_gathered(v, lo, size, sources, gains):
    """Transform a block of `size` (a power of two) coordinates at float offset lo of v whose
    coordinate i is first made gains[i] * v[sources[i] : + LANES]: the gather rides on the first
    butterfly pass instead of a pass of its own.

    Sources outside the block, or coordinate i of the block itself, are safe:
    each group of 8 coordinates is read whole before it is written.
    """
    if size < 8:
        for i in range(size):
            L.store(v, lo + i * LANES, _gathered(v, sources, gains, i))
        _fwht_stages(v, lo, lo + size * LANES, LANES)
        return
    for j in range(0, size, 8):
        _store8(v, lo + j * LANES, LANES, _butterflies8(
            _gathered(v, sources, gains, j), _gathered(v, sources, gains, j + 1),
            _gathered(v, sources, gains, j + 2), _gathered(v, sources, gains, j + 3),
            _gathered(v, sources, gains, j + 4), _gathered(v, sources, gains, j + 5),
            _gathered(v, sources, gains, j + 6), _gathered(v, sources, gains, j + 7)))
    _fwht_stages(v, lo, lo + size * LANES, 8 * LANES)


@njit(cache=True, nogil=True)
def _round_transforms_transposed(v, d, p, overlap_weights):
    """Both block transforms of one round of the transpose, on the lane buffer v (d * LANES,).

    The block [d-p, d) first, then the overlap [d-p, p) (transformed twice,
    so one factor 1/sqrt(p) short of the round's gather) with its signs:
    overlap_weights (2p - d,) = ±1/sqrt(p), then the block [0, p).
    """
    if p == d:
        _fwht_lanes(v, 0, d * LANES)
        return
    _fwht_lanes(v, (d - p) * LANES, d * LANES)
    for j in range(2 * p - d):
        at = (d - p + j) * LANES
        L.store(v, at, L.load(v, at) * L.splat(overlap_weights[j]))
    _fwht_lanes(v, 0, p * LANES)


@njit(cache=True, nogil=True)
def _gather_lanes(src, index, weight, dst):
    """dst coordinate i = weight[i] * src coordinate index[i], for every lane."""
    for i in range(index.shape[0]):
        L.store(dst, i * LANES, L.splat(weight[i]) * L.load(src, index[i] * LANES))


@njit(cache=True, nogil=True)
def scaled_rounds(weights, overlap_signs, d):
    """(p, weights / sqrt(p), overlap_signs / sqrt(p)): the rounds as the lane kernels take them.

    p is the largest power of two <= d; weights (rounds, d) and
    overlap_signs (rounds, 2p - d) are the ±1 arrays of `rotation.HadamardRounds`.
    """
    p = 1
    while 2 * p <= d:
        p *= 2
    inv_sqrt_p = np.float32(1.0 / np.sqrt(p))
    return p, (weights * inv_sqrt_p).astype(np.float32), (overlap_signs * inv_sqrt_p).astype(np.float32)


@njit(cache=True, nogil=True)
def forward_plan(weights, index, overlap_signs, d):
    """(p, sources, gains): forward rounds as `rotate_lanes_forward` takes them.

    weights (rounds, d), index (rounds, d), overlap_signs (rounds, 2p - d) as
    in `rotation.HadamardRounds`; p the largest power of two <= d.
    sources (rounds, 2, p) int64, gains (rounds, 2, p) float32: round k runs
    in half k % 2 of a buffer of 2 * d * LANES floats (the rows are loaded
    into half 1); block transform b (b = 0: coordinates [0, p), b = 1:
    [d-p, d), absent when p == d) takes its coordinate i as
    gains[k, b, i] * buf[sources[k, b, i] : + LANES]: round k's gather from
    the other half (weights / sqrt(p) through index[k]), or, in the overlap
    [d-p, p), the first transform's output times overlap_signs[k] / sqrt(p).
    """
    p, scaled, overlap_scaled = scaled_rounds(weights, overlap_signs, d)
    rounds = weights.shape[0]
    half = d * LANES
    sources = np.zeros((rounds, 2, p), np.int64)
    gains = np.ones((rounds, 2, p), np.float32)
    for k in range(rounds):
        here, before = (k % 2) * half, ((k + 1) % 2) * half
        for b in range(2 if p < d else 1):
            for i in range(p):
                c = i + b * (d - p)   # the coordinate
                if b == 1 and c < p:
                    sources[k, b, i] = here + c * LANES
                    gains[k, b, i] = overlap_scaled[k, c - (d - p)]
                else:
                    sources[k, b, i] = before + index[k, c] * LANES
                    gains[k, b, i] = scaled[k, c]
    return p, sources, gains


@njit(cache=True, nogil=True)
def prefetch_ahead(flat, r0, d):
    """Where the LANES rows PREFETCH_ROWS after row r0 start in flat (n * d,) (the last LANES rows near
    the end), for `prefetch_chunk`; -1 when flat is too short to prefetch from."""
    last = flat.shape[0] - LANES * d - 48   # every chunk's lines inside flat
    if last < 0:
        return -1
    return min((r0 + PREFETCH_ROWS) * d, last)


@njit(cache=True, nogil=True)
def prefetch_chunk(flat, ahead, j):
    """Hint the 64 floats flat[ahead + j * LANES :][:64] (4 cache lines) into cache; none when ahead < 0.

    Calling it for j = 0, 8, 16, ... < d while a group of LANES rows is
    worked on fetches the group `prefetch_ahead` names. Rows read LANES at a
    time in lockstep defeat the hardware prefetcher, and a burst of 192
    line prefetches at once stalls the loads behind it: the lines are spread
    over a whole pass.
    """
    if ahead >= 0:
        at = ahead + j * LANES
        prefetch(flat, at)
        prefetch(flat, at + 16)
        prefetch(flat, at + 32)
        prefetch(flat, at + 48)


@njit(cache=True, nogil=True)
def load_lanes(flat, r0, m, d, dst, tile, prefetching=True):
    """Rows r0..r0+m-1 (m <= LANES) of a C-contiguous (n, d) float32 array, given flattened as
    flat (n * d,), into the lane buffer dst (d * LANES,): coordinate j of row r0 + l at [j * LANES + l];
    lanes >= m get zeros. tile (LANES * LANES,) float32 scratch.

    With `prefetching`, the rows PREFETCH_ROWS ahead are fetched on the way
    (`prefetch_chunk`); a caller with a longer pass over each group can
    spread them there instead (the lane encoder does).
    """
    ahead = prefetch_ahead(flat, r0, d) if prefetching else -1
    for j in range(0, d, LANES):
        prefetch_chunk(flat, ahead, j)
        if m == LANES and j + LANES <= d:   # a whole tile, its columns written out
            c0, c1, c2, c3, c4, c5, c6, c7 = L.transpose(flat, r0 * d + j, d)
            L.store(dst, j * LANES, c0)
            L.store(dst, (j + 1) * LANES, c1)
            L.store(dst, (j + 2) * LANES, c2)
            L.store(dst, (j + 3) * LANES, c3)
            L.store(dst, (j + 4) * LANES, c4)
            L.store(dst, (j + 5) * LANES, c5)
            L.store(dst, (j + 6) * LANES, c6)
            L.store(dst, (j + 7) * LANES, c7)
            continue
        for r in range(LANES):
            for c in range(LANES):
                inside = r < m and j + c < d
                tile[r * LANES + c] = flat[(r0 + r) * d + j + c] if inside else np.float32(0.0)
        cols = L.transpose(tile, 0, LANES)
        for c in range(min(LANES, d - j)):
            L.store(dst, (j + c) * LANES, cols[c])


@njit(cache=True, nogil=True)
def store_lanes(src, r0, m, d, out, tile):
    """Inverse of an unpermuted, unscaled `load_lanes`: lanes 0..m-1 of the lane buffer src into rows
    r0..r0+m-1 of out (n, d) float32, C-contiguous. tile (LANES * LANES,) float32 scratch."""
    flat = out.reshape(out.shape[0] * d)
    for i in range(0, d - LANES + 1, LANES):
        rows = L.transpose(src, i * LANES, LANES)
        for lane in range(m):
            L.store(flat, (r0 + lane) * d + i, rows[lane])
    for lane in range(m):
        for i in range(d - d % LANES, d):
            flat[(r0 + lane) * d + i] = src[i * LANES + lane]


@njit(cache=True, nogil=True)
def rotate_lanes_forward(flat, r0, m, d, p, sources, gains, buf, tile, prefetching=True):
    """Rotate rows r0..r0+m-1 (m <= LANES) of x (n, d) float32, given flattened as flat (n * d,).

    Returns the lane buffer holding them, a view of half of buf (2 * d * LANES,)
    float32 scratch, with coordinate i of row r0 + l at [i * LANES + l]
    (lanes >= m are zero); tile (LANES * LANES,) float32 scratch.
    p, sources, gains as from `forward_plan`; prefetching as in `load_lanes`.
    """
    half = d * LANES
    load_lanes(flat, r0, m, d, buf[half:], tile, prefetching)
    rounds = sources.shape[0]
    for k in range(rounds):
        here = (k % 2) * half
        _transform_gathered(buf, here, p, sources[k, 0], gains[k, 0])
        if p < d:
            _transform_gathered(buf, here + (d - p) * LANES, p, sources[k, 1], gains[k, 1])
    last = ((rounds - 1) % 2) * half
    return buf[last:last + half]


@njit(parallel=True, cache=True, nogil=True)
def hadamard_rotate(x, weights, index, overlap_signs, transpose, out):
    """Randomised Hadamard rotation of every row of x into out.

    x, out  (n, d) float32, distinct arrays; x may be read-only
    weights (rounds, d) float32 of ±1; index (rounds, d) int64 permutations;
    overlap_signs (rounds, 2p - d) float32 of ±1 (see `rotation.HadamardRounds`)
    transpose False: rounds k = 0..rounds-1 each gather w[i] = weights[k, i] *
              v[index[k, i]], then transform coordinates [0, p) with the
              normalised Hadamard matrix (p = largest power of two <= d),
              flip the signs of the overlap [d-p, p), transform [d-p, d).
              True: the inverse; pass `rotation.HadamardRounds.inverse()`; rounds
              run backwards, transforms first, gather last.
    Rows are independent: the result of a row does not depend on n, its
    position or the thread count.
    """
    n, d = x.shape
    flat = x.reshape(n * d)
    p, scaled, overlap_scaled = scaled_rounds(weights, overlap_signs, d)
    if transpose:   # the forward plan is not used: none to build
        sources, gains = np.zeros((0, 2, 0), np.int64), np.zeros((0, 2, 0), np.float32)
    else:
        _, sources, gains = forward_plan(weights, index, overlap_signs, d)
    for block in prange((n + LANES - 1) // LANES):
        tile = np.empty(LANES * LANES, np.float32)
        r0 = block * LANES
        m = min(LANES, n - r0)
        if not transpose:
            buf = np.empty(2 * d * LANES, np.float32)
            store_lanes(rotate_lanes_forward(flat, r0, m, d, p, sources, gains, buf, tile), r0, m, d, out, tile)
        else:
            cur = np.empty(d * LANES, np.float32)
            nxt = np.empty(d * LANES, np.float32)
            load_lanes(flat, r0, m, d, cur, tile)
            for k in range(scaled.shape[0] - 1, 0, -1):
                _round_transforms_transposed(cur, d, p, overlap_scaled[k])
                _gather_lanes(cur, index[k], scaled[k], nxt)
                cur, nxt = nxt, cur
            _round_transforms_transposed(cur, d, p, overlap_scaled[0])
            _gather_lanes(cur, index[0], scaled[0], nxt)
            store_lanes(nxt, r0, m, d, out, tile)
