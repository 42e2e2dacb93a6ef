"""Encoding kernels: bucket rotated coordinates and pack them into bytes.

Codes are a bitstream per segment, least significant bit first: coordinate
`i` of a `bits`-wide segment starting at byte `offset` occupies bits
`[i * bits, (i + 1) * bits)` counted from `offset * 8`. A coordinate may
straddle two bytes when `bits` does not divide 8. Every kernel here has a
NumPy twin in `kernels.reference`.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from ..rotation import LANES, rotate_lanes_forward, scaled_rounds, scatter_targets


# Up to this many boundaries, bucketing compares against every boundary: a
# loop LLVM vectorises, several times faster than a (mispredicting) binary search.
_LINEAR_MAX_BOUNDARIES = 31
_ROWS_PER_TASK = 256


@njit(cache=True, nogil=True)
def _bucket_row(u, boundaries, centroids, steps, codes, u_hat):
    """codes[i] = number of boundaries <= u[i] (searchsorted right); u_hat[i] = centroids[codes[i]].

    codes (d,) float32: counting in float keeps every array of the loop
    32-bit wide, so LLVM vectorises it 8 lanes at a time (int64 counters
    measured 2.6x slower at 4 bits).
    """
    d = u.shape[0]
    nb = boundaries.shape[0]
    if nb <= _LINEAR_MAX_BOUNDARIES:
        for i in range(d):
            codes[i] = 0.0
            u_hat[i] = centroids[0]
        for j in range(nb):
            bj = boundaries[j]
            sj = steps[j]
            for i in range(d):
                m = np.float32(u[i] >= bj)
                codes[i] += m
                u_hat[i] += sj * m
    else:
        for i in range(d):
            c = 0
            step = (nb + 1) >> 1
            while step > 0:
                c += step * np.int64(u[i] >= boundaries[c + step - 1])
                step >>= 1
            codes[i] = c
            u_hat[i] = centroids[c]


# Reassociation lets LLVM vectorise these reductions; the result differs from
# a sequential sum only by rounding.
@njit(cache=True, nogil=True, fastmath={"reassoc", "nsz"})
def _sum_squares(u):
    s = 0.0
    for i in range(u.shape[0]):
        s += np.float64(u[i]) * u[i]
    return s


@njit(cache=True, nogil=True, fastmath={"reassoc", "nsz"})
def _dot(u, v):
    s = np.float32(0.0)
    for i in range(u.shape[0]):
        s += u[i] * v[i]
    return s


@njit(cache=True, nogil=True)
def _pack_row(c, bits, row, offset):
    """Pack c (d,) codes into row[offset:]: 8 coordinates make exactly `bits` bytes."""
    d = c.shape[0]
    end = offset + (d * bits + 7) // 8
    for g in range((d + 7) // 8):
        acc = np.uint64(0)
        for t in range(8):
            i = 8 * g + t
            if i < d:
                acc |= np.uint64(np.int32(c[i])) << np.uint64(t * bits)
        for b in range(bits):
            pos = offset + g * bits + b
            if pos < end:
                row[pos] = np.uint8((acc >> np.uint64(8 * b)) & np.uint64(0xFF))


@njit(cache=True, nogil=True)
def _encode_row(u, r, scale, translate, centre, boundaries, centroids, steps, bits, codes, offset,
                norms, dots, residual, c, u_hat, w):
    """Encode row r whose rotated values sit in u (d,) float32 (overwritten); w (d,) scratch."""
    d = u.shape[0]
    sc = np.float32(scale[r])
    for i in range(d):
        u[i] = u[i] * sc - translate[i]
    norm = np.sqrt(_sum_squares(u))
    inv = np.float32(1.0 / norm if norm > 0.0 else 0.0)
    norms[r] = norm
    for i in range(d):
        u[i] *= inv
        w[i] = u[i] - centre[i]
    _bucket_row(w, boundaries, centroids, steps, c, u_hat)
    for i in range(d):
        u_hat[i] += centre[i]
    dot = _dot(u, u_hat)
    dots[r] = dot if norm > 0.0 else 0.0
    if residual.shape[0] > r:
        for i in range(d):
            residual[r, i] = u[i] - u_hat[i]
    _pack_row(c, bits, codes[r], offset)


@njit(parallel=True, cache=True, nogil=True)
def encode_directions(y, scale, translate, centre, boundaries, centroids, bits, codes, offset, norms, dots,
                      residual):
    """Normalise each rotated row, bucket its coordinates and pack the codes.

    y          (n, d) float32  rotated vectors; row r is first mapped to
               v = y[r] * scale[r] - translate (rotation commutes with both, so
               the index normalises and translates here instead of in separate
               passes), then u = v / ||v|| is quantized as codes of u - centre
    scale      (n,) float64; translate, centre (d,) float32, rotated (the
               index's data mean for l2 and mean direction for ip and cosine)
    boundaries (2**bits - 1,) float32, centroids (2**bits,) float32
    codes      (n, nbytes) uint8; this segment's bytes, from `offset`, are overwritten
    norms      (n,) float32 out: ||v||
    dots       (n,) float32 out: <u, u_hat> with u_hat = centroids[codes] + centre
               the reconstruction (0 for a zero row)
    residual   (n, d) float32 out, or shape (0, 0) to skip: u - u_hat
    """
    n, d = y.shape
    # Centroid increments make u_hat a sum of comparisons, like the code itself.
    steps = (centroids[1:] - centroids[:-1]).astype(np.float32)
    for task in prange((n + _ROWS_PER_TASK - 1) // _ROWS_PER_TASK):
        u = np.empty(d, np.float32)
        u_hat = np.empty(d, np.float32)
        c = np.empty(d, np.float32)
        w = np.empty(d, np.float32)
        for r in range(task * _ROWS_PER_TASK, min(n, (task + 1) * _ROWS_PER_TASK)):
            u[:] = y[r]
            _encode_row(u, r, scale, translate, centre, boundaries, centroids, steps, bits, codes, offset,
                        norms, dots, residual, c, u_hat, w)


@njit(parallel=True, cache=True, nogil=True)
def pack_signs(z, codes, offset):
    """Pack sign bits (1 where z >= 0) of z (n, d) float32 into codes[:, offset:] (overwritten)."""
    n, d = z.shape
    for r in prange(n):
        for g in range((d + 7) // 8):
            byte = 0
            for t in range(min(8, d - 8 * g)):
                byte |= np.int64(z[r, 8 * g + t] >= 0.0) << t
            codes[r, offset + g] = np.uint8(byte)


@njit(parallel=True, cache=True, nogil=True)
def unpack_codes(codes, offset, bits, d, out):
    """Inverse of the packing: out (n, d) int32 receives each coordinate's code."""
    n = codes.shape[0]
    mask = (1 << bits) - 1
    for r in prange(n):
        row = codes[r]
        for i in range(d):
            p = i * bits
            byte = offset + (p >> 3)
            shift = p & 7
            c = np.int32(row[byte]) >> shift
            if shift + bits > 8:
                c |= np.int32(row[byte + 1]) << (8 - shift)
            out[r, i] = c & mask


# Below this many rows a parallel launch costs more than it saves: 35 us against
# 12 us for one query row on an idle machine, milliseconds when other
# processes hold the cores the woken threads need.
_PARALLEL_NORM_ROWS = 4096


def row_norms(x):
    """Euclidean norm of each row of x (n, d) float32, accumulated in float64: (n,) float64."""
    out = np.empty(x.shape[0], np.float64)
    if x.shape[0] < _PARALLEL_NORM_ROWS:
        _row_norms_into(x, out)
    else:
        _row_norms_parallel(x, out, _PARALLEL_NORM_ROWS)
    return out


@njit(cache=True, nogil=True)
def _row_norms_into(x, out):
    for r in range(x.shape[0]):
        out[r] = np.sqrt(_sum_squares(x[r]))


@njit(parallel=True, cache=True, nogil=True)
def _row_norms_parallel(x, out, chunk):
    """`_row_norms_into` over chunks of `chunk` rows, one task a chunk."""
    for c in prange((x.shape[0] + chunk - 1) // chunk):
        _row_norms_into(x[c * chunk:(c + 1) * chunk], out[c * chunk:(c + 1) * chunk])


@njit(parallel=True, cache=True, nogil=True)
def encode_hadamard(x, weights, index, overlap_signs, scale, translate, centre, boundaries, centroids, bits,
                    codes, offset, norms, dots, residual):
    """`encode_directions` fused with the Hadamard rotation of x (n, d) float32.

    Rotating a block of rows in a cache-resident buffer and encoding it at
    once never writes the (n, d) rotated array: half the memory traffic and
    none of its page faults. weights, index, overlap_signs: the forward
    rounds (`rotation.HadamardRounds`). Other arguments as `encode_directions`.
    """
    n, d = x.shape
    flat = x.reshape(n * d)
    p, scaled, overlap_scaled = scaled_rounds(weights, overlap_signs, d)
    position, factor = scatter_targets(index[0], scaled[0])
    steps = (centroids[1:] - centroids[:-1]).astype(np.float32)
    n_blocks = (n + LANES - 1) // LANES
    per_task = _ROWS_PER_TASK // LANES
    for task in prange((n_blocks + per_task - 1) // per_task):
        # Scratch once per task, not per block of LANES rows.
        buf_a = np.empty(d * LANES, np.float32)
        buf_b = np.empty(d * LANES, np.float32)
        tile = np.empty(LANES * LANES, np.float32)
        u = np.empty(d, np.float32)
        u_hat = np.empty(d, np.float32)
        c = np.empty(d, np.float32)
        w = np.empty(d, np.float32)
        for block in range(task * per_task, min(n_blocks, (task + 1) * per_task)):
            r0 = block * LANES
            m = min(LANES, n - r0)
            cur, _ = rotate_lanes_forward(flat, r0, m, d, scaled, index, overlap_scaled, p, position, factor,
                                          buf_a, buf_b, tile)
            for lane in range(m):
                for i in range(d):
                    u[i] = cur[i * LANES + lane]
                _encode_row(u, r0 + lane, scale, translate, centre, boundaries, centroids, steps, bits,
                            codes, offset, norms, dots, residual, c, u_hat, w)
