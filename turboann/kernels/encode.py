"""Encoding kernels: bucket rotated coordinates and pack them into bytes.

Codes are a bitstream per segment, least significant bit first: coordinate
`i` of a `bits`-wide segment starting at byte `offset` occupies bits
`[i * bits, (i + 1) * bits)` counted from `offset * 8`. A coordinate may
straddle two bytes when `bits` does not divide 8. Every kernel here has a
NumPy twin in `kernels.reference`.

Two encoders. `encode_directions` takes rotated rows one at a time (any
bits; it also gives the residual the "prod" code sketches). `encode_lanes`
takes LANES rows at a time in vector registers (`kernels._lanes`), with the
Hadamard rounds inside, for MSE codes of up to 4 bits, and writes the codes
straight where they are kept: row-major or the fast-scan blocks, described
by a `CodeTarget`.
"""
from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np
from numba import njit, prange

from . import _lanes as L
from . import read_only
from ._simd import prefetch
from .fastscan import BLOCK
from .hadamard import LANES, forward_plan, load_lanes, prefetch_ahead, prefetch_chunk, rotate_lanes_forward


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


# The encoders' squared norms are float32 sums, in a fixed order both encoders
# share (`_squares32`): float64 ones took 3% of the lane encoder's time on
# wordnet. Their rounding (about 1e-7 relative) is the norm's float32 anyway.
# Outside [2^-100, 2^100] (and for NaN) float32 squares lose precision to
# underflow or overflow, so the norm is then summed again in float64,
# coordinate after coordinate (`_squares64`).
_SQUARES32_LOW = np.float32(2.0 ** -100)
_SQUARES32_HIGH = np.float32(2.0 ** 100)


@njit(cache=True, nogil=True)
def _squares32(u):
    """Sum of the squares of u (d,) float32 in float32: four running sums over coordinates 4k, 4k+1,
    4k+2, 4k+3 (the d % 4 last ones into the first), added as (s0 + s1) + (s2 + s3)."""
    d = u.shape[0]
    s0 = s1 = s2 = s3 = np.float32(0.0)
    for i in range(0, d - 3, 4):
        s0 += u[i] * u[i]
        s1 += u[i + 1] * u[i + 1]
        s2 += u[i + 2] * u[i + 2]
        s3 += u[i + 3] * u[i + 3]
    for i in range(d - d % 4, d):
        s0 += u[i] * u[i]
    return (s0 + s1) + (s2 + s3)


@njit(cache=True, nogil=True)
def _squares64(u, first, stride, count):
    """Sum of u[first + k * stride]^2, k < count, in float64, in that order."""
    s = 0.0
    for k in range(count):
        a = np.float64(u[first + k * stride])
        s += a * a
    return s


@njit(cache=True, nogil=True)
def _norm(squares32, u, first, stride, count):
    """The norm of u[first + k * stride], k < count, whose `_squares32` sum is squares32."""
    if _SQUARES32_LOW <= squares32 <= _SQUARES32_HIGH:
        return np.sqrt(np.float64(squares32))
    return np.sqrt(_squares64(u, first, stride, count))


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
def _encode_row(u, r, scale, translate, centre, spread, inv_spread, boundaries, centroids, steps, bits, codes,
                offset, norms, dots, residual, c, u_hat, w):
    """Encode row r whose rotated values sit in u (d,) float32 (overwritten); w (d,) scratch."""
    d = u.shape[0]
    sc = np.float32(scale[r])
    for i in range(d):
        u[i] = u[i] * sc - translate[i]
    norm = _norm(_squares32(u), u, 0, 1, d)
    inv = np.float32(1.0 / norm if norm > 0.0 else 0.0)
    norms[r] = norm
    for i in range(d):
        u[i] *= inv
        w[i] = (u[i] - centre[i]) * inv_spread[i]
    _bucket_row(w, boundaries, centroids, steps, c, u_hat)
    for i in range(d):
        u_hat[i] = u_hat[i] * spread[i] + centre[i]
    dot = _dot(u, u_hat)
    dots[r] = dot if norm > 0.0 else 0.0
    if residual.shape[0] > r:
        for i in range(d):
            residual[r, i] = u[i] - u_hat[i]
    _pack_row(c, bits, codes[r], offset)


@njit(parallel=True, cache=True, nogil=True)
def encode_directions(y, scale, translate, centre, spread, boundaries, centroids, bits, codes, offset, norms,
                      dots, residual):
    """Normalise each rotated row, bucket its coordinates and pack the codes.

    y          (n, d) float32  rotated vectors; row r is first mapped to
               v = y[r] * scale[r] - translate (rotation commutes with both, so
               the index normalises and translates here instead of in separate
               passes), then u = v / ||v|| is quantized as codes of (u - centre) / spread
    scale      (n,) float64; translate, centre, spread (d,) float32, rotated
               (translate: the index's centre; centre: the mean direction of the
               "direction" estimator; spread: per-coordinate scales, all 1 for none)
    boundaries (2**bits - 1,) float32, centroids (2**bits,) float32
    codes      (n, nbytes) uint8; this segment's bytes, from `offset`, are overwritten
    norms      (n,) float32 out: ||v||
    dots       (n,) float32 out: <u, u_hat> with u_hat = spread * centroids[codes] + centre
               the reconstruction (0 for a zero row)
    residual   (n, d) float32 out, or shape (0, 0) to skip: u - u_hat
    """
    n, d = y.shape
    # Centroid increments make u_hat a sum of comparisons, like the code itself.
    steps = (centroids[1:] - centroids[:-1]).astype(np.float32)
    inv_spread = (np.float32(1.0) / spread).astype(np.float32)
    for task in prange((n + _ROWS_PER_TASK - 1) // _ROWS_PER_TASK):
        u = np.empty(d, np.float32)
        u_hat = np.empty(d, np.float32)
        c = np.empty(d, np.float32)
        w = np.empty(d, np.float32)
        for r in range(task * _ROWS_PER_TASK, min(n, (task + 1) * _ROWS_PER_TASK)):
            u[:] = y[r]
            _encode_row(u, r, scale, translate, centre, spread, inv_spread, boundaries, centroids, steps, bits,
                        codes, offset, norms, dots, residual, c, u_hat, w)


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


# Below this many rows a parallel launch costs more than it saves: about three
# times the serial cost for one query row on an idle machine, milliseconds when
# other processes hold the cores the woken threads need.
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
def norms_and_dots(x, m, norms, dots):
    """One pass over x (n, d) float32: norms (n,) float64 out ||x[r]|| and dots (n,) float64 out
    <x[r], m>, m (d,) float32, both accumulated in float64 (the "translate" estimator's cosine rows
    need their norm before encoding and their inner product with the centre beside the code)."""
    n, d = x.shape
    for task in prange((n + _ROWS_PER_TASK - 1) // _ROWS_PER_TASK):
        for r in range(task * _ROWS_PER_TASK, min(n, (task + 1) * _ROWS_PER_TASK)):
            row = x[r]
            sq = 0.0
            dm = 0.0
            for i in range(d):
                a = np.float64(row[i])
                sq += a * a
                dm += a * m[i]
            norms[r] = np.sqrt(sq)
            dots[r] = dm


# Rows prefetched ahead when summing: measured 1.4x faster on wordnet.
_SUM_PREFETCH = 8


@njit(cache=True, nogil=True)
def _sum_rows_into(x, unit, r0, r1, acc):
    """acc (d,) float64 += rows r0..r1-1 of x (or their unit directions); returns how many were added."""
    d = x.shape[1]
    flat = x.reshape(x.shape[0] * d)
    last = flat.shape[0] - 1
    weight = np.zeros(4)
    count = 0
    for g in range(r0, r1, 4):
        for t in range(4):
            r = min(g + t, r1 - 1)
            for j in range(0, d, 16):
                prefetch(flat, min(last, (r + _SUM_PREFETCH) * d + j))
            weight[t] = 0.0   # past r1: the last row again, weighted 0 (NaN if it is not finite, as it should)
            if g + t < r1:
                norm = np.sqrt(_sum_squares(x[r])) if unit else 1.0
                if norm > 0.0:
                    weight[t] = 1.0 / norm
                    count += 1
        x0, x1, x2, x3 = x[g], x[min(g + 1, r1 - 1)], x[min(g + 2, r1 - 1)], x[min(g + 3, r1 - 1)]
        w0, w1, w2, w3 = weight[0], weight[1], weight[2], weight[3]
        for j in range(d):   # four rows a pass over acc
            acc[j] += ((np.float64(x0[j]) * w0 + np.float64(x1[j]) * w1)
                       + (np.float64(x2[j]) * w2 + np.float64(x3[j]) * w3))
    return count


@njit(parallel=True, cache=True, nogil=True)
def sample_sum(x, starts, lengths, unit):
    """Sum over the row ranges [starts[k], starts[k] + lengths[k]) (int64 (m,) each) of x (n, d) float32,
    C-contiguous, in float64: of the rows, or with unit=True of their unit directions x[r] / ||x[r]||
    (zero rows skipped).

    Returns (sum (d,) float64, rows summed); NaN where a summed row is not
    finite. One task a range, their sums added in range order: the result
    does not depend on the thread count.
    """
    d = x.shape[1]
    m = starts.shape[0]
    partial = np.zeros((m, d))
    counts = np.zeros(m, np.int64)
    for k in prange(m):
        counts[k] = _sum_rows_into(x, unit, starts[k], starts[k] + lengths[k], partial[k])
    total = np.zeros(d)
    for k in range(m):
        total += partial[k]
    return total, counts.sum()


# -- writing codes where they are kept ------------------------------------------------

class CodeTarget(NamedTuple):
    """Where an encoder writes codes, in row-major or fast-scan layout alike.

    Byte k of the code of slot s is dest[base + (s // BLOCK) * block_stride
    + (s % BLOCK) * lane_stride + k * byte_stride]; dest is a flat uint8
    array. Each coordinate takes `width` bits of the code's LSB-first
    bitstream (`width` >= the code's bits: the fast-scan layout gives 3-bit
    codes a whole nibble, `nibbles`).
    """
    dest: np.ndarray
    base: int
    block_stride: int
    lane_stride: int
    byte_stride: int
    width: int
    nibbles: bool = False


def target_width(bits: int, nibbles: bool) -> int:
    """Bits a `bits`-bit coordinate takes in a target: a whole nibble for 3 bits in fast-scan blocks."""
    return 4 if nibbles and bits == 3 else bits


def row_major_target(codes: np.ndarray, offset: int, bits: int) -> CodeTarget:
    """The segment at byte `offset` of row-major codes (n, code_bytes) uint8, `bits` per coordinate."""
    return CodeTarget(codes.reshape(-1), offset, BLOCK * codes.shape[1], codes.shape[1], 1, bits)


def blocked_target(blocks: np.ndarray, bits: int, row: int = 0) -> CodeTarget:
    """Fast-scan blocks (n_blocks, rows, BLOCK) uint8 (see `fastscan`) of `bits`-bit codes, from block
    row `row` on."""
    return CodeTarget(blocks.reshape(-1), row * BLOCK, blocks.shape[1] * BLOCK, 1, BLOCK,
                      target_width(bits, True), True)


@njit(cache=True, nogil=True)
def _code_address(s, base, block_stride, lane_stride):
    return base + (s // BLOCK) * block_stride + (s % BLOCK) * lane_stride


def write_into(codes: np.ndarray, offset: int, bits: int, d: int, target: CodeTarget, slots,
               width: int | None = None) -> None:
    """`write_codes` of a segment of row-major codes (m, code_bytes) into `target` (at its width, or
    `width`): into slots slots.. when slots is an int, else into slots[v] (m,) int64 for row v."""
    if isinstance(slots, (int, np.integer)):
        slots = np.arange(slots, slots + codes.shape[0], dtype=np.int64)
    write_codes(read_only(codes), offset, bits, d, target.dest, slots, target.base, target.block_stride,
                target.lane_stride, target.byte_stride, target.width if width is None else width)


@njit(parallel=True, cache=True, nogil=True)
def write_codes(codes, offset, bits, d, dest, slots, base, block_stride, lane_stride, byte_stride, width):
    """Copy the `bits`-bit segment at byte `offset` of row-major codes (m, code_bytes) uint8 into slot
    slots[v] (m,) int64 of a target (dest, base, ..., width: see `CodeTarget`), every byte of them.

    One call for scattered slots too (all the lists of an IVF add): a parallel
    launch costs milliseconds on a loaded machine."""
    m = codes.shape[0]
    nbytes = (d * width + 7) // 8
    mask = (1 << bits) - 1
    tail = (d * bits) & 7   # bits of the segment's last byte that hold codes (0: all 8)
    for v in prange(m):
        row = codes[v]
        at = _code_address(slots[v], base, block_stride, lane_stride)
        if width == bits:   # the same bitstream: copy its bytes (3x faster at 4 bits than restreaming)
            for k in range(nbytes):
                byte = row[offset + k]
                if k == nbytes - 1 and tail:
                    byte &= np.uint8((1 << tail) - 1)
                dest[at + k * byte_stride] = byte
            continue
        acc = 0
        shift = 0
        k = 0
        for i in range(d):
            p = i * bits
            byte = offset + (p >> 3)
            c = np.int64(row[byte]) >> (p & 7)
            if (p & 7) + bits > 8:
                c |= np.int64(row[byte + 1]) << (8 - (p & 7))
            acc |= (c & mask) << shift
            shift += width
            while shift >= 8:
                dest[at + k * byte_stride] = np.uint8(acc & 255)
                acc >>= 8
                shift -= 8
                k += 1
        if k < nbytes:
            dest[at + k * byte_stride] = np.uint8(acc & 255)


# -- the lane encoder ------------------------------------------------------------------
#
# Rotation and encoding of LANES rows at a time in the rotation's lane buffer
# (coordinate i of the LANES rows is one f32x8), so every step below is a
# vector instruction, and codes go straight where the store keeps them.

@njit(cache=True, nogil=True)
def bucket_tables(boundaries, centroids):
    """(b, search, sums, sums_down): the lane encoder's codebook tables for a b-bit code, b <= 4
    (boundaries (2**b - 1,), centroids (2**b,) float32).

    search (4 * LANES,) float32: entries [level * LANES, (level + 1) * LANES)
    hold the boundaries a binary search compares against at that level,
    indexed by the code so far >> (b - level): boundaries[2s * k + s - 1],
    s = 2**(b - 1 - level); zeros past them.
    sums (2 * LANES,) float32: sums[c] = centroids[0] + the increments
    centroids[j + 1] - centroids[j] for j < c, added in that order in float32:
    the reconstruction the row encoder (`_bucket_row`) builds.
    sums_down (LANES,) float32: sums[c] at index -c mod LANES (b <= 3; zeros
    for b = 4), for a code counted downwards by adding comparison masks (-1).
    """
    n = centroids.shape[0]
    bits = 0
    while (1 << bits) < n:
        bits += 1
    search = np.zeros(4 * LANES, np.float32)
    for level in range(bits):
        s = 1 << (bits - 1 - level)
        for k in range(n // (2 * s)):
            search[level * LANES + k] = boundaries[2 * s * k + s - 1]
    sums = np.zeros(2 * LANES, np.float32)
    sums[0] = centroids[0]
    steps = (centroids[1:] - centroids[:-1]).astype(np.float32)
    for c in range(1, n):
        sums[c] = sums[c - 1] + steps[c - 1]
    sums_down = np.zeros(LANES, np.float32)
    if n <= LANES:
        for c in range(n):
            sums_down[(LANES - c) % LANES] = sums[c]
    return bits, search, sums, sums_down


@njit(cache=True, nogil=True)
def _scale_coordinate(v, i, scale, translate, squares):
    a = L.load(v, i * LANES) * scale - L.splat(translate[i])
    L.store(v, i * LANES, a)
    return squares + a * a


@njit(cache=True, nogil=True)
def _scale_lanes(v, d, scale, translate):
    """v <- v * scale - translate, coordinate by coordinate; returns the lanes' `_squares32` sums."""
    # Four running sums: one chain of dependent additions would wait on each.
    s0 = s1 = s2 = s3 = L.splat(0.0)
    for i in range(0, d - 3, 4):
        s0 = _scale_coordinate(v, i, scale, translate, s0)
        s1 = _scale_coordinate(v, i + 1, scale, translate, s1)
        s2 = _scale_coordinate(v, i + 2, scale, translate, s2)
        s3 = _scale_coordinate(v, i + 3, scale, translate, s3)
    for i in range(d - d % 4, d):
        s0 = _scale_coordinate(v, i, scale, translate, s0)
    return (s0 + s1) + (s2 + s3)


@njit(cache=True, nogil=True)
def _add_squares(v, i, squares):
    a = L.load(v, i * LANES)
    return squares + a * a


@njit(cache=True, nogil=True)
def _lane_squares(v, d):
    """The lanes' `_squares32` sums: `_scale_lanes` with scale 1 and translate 0, which change nothing."""
    s0 = s1 = s2 = s3 = L.splat(0.0)
    for i in range(0, d - 3, 4):
        s0 = _add_squares(v, i, s0)
        s1 = _add_squares(v, i + 1, s1)
        s2 = _add_squares(v, i + 2, s2)
        s3 = _add_squares(v, i + 3, s3)
    for i in range(d - d % 4, d):
        s0 = _add_squares(v, i, s0)
    return (s0 + s1) + (s2 + s3)


@njit(cache=True, nogil=True)
def _quantize(v, c0, d, inv, centre, spread, inv_spread, tables, bits, width, out, at, step, flat, ahead):
    """`_quantize_lanes` for one (bits, width): both literal, so the search unrolls and shifts are constant."""
    numba.literally(bits)
    numba.literally(width)
    middle, table1, table2, table3, sums_low, sums_high, lower, upper, sums_down = tables
    even = odd = L.splat(0.0)
    for i0 in range(c0, d, 8):
        count = min(8, d - i0)
        prefetch_chunk(flat, ahead, i0)
        packed = L.splat_i32(0)
        for t in range(8):   # coordinate i0 + t at bits [width * t, width * (t + 1)) of each lane
            if t < count:
                u = L.load(v, (i0 + t) * LANES) * inv
                ci = L.splat(centre[i0 + t])
                si = L.splat(spread[i0 + t])
                w = (u - ci) * L.splat(inv_spread[i0 + t])
                if bits == 2:
                    # The code counts the boundaries <= w: three compares, no search. Each
                    # mask is -1, so their sum is -code, which indexes sums_down
                    # (vpermps takes an index mod 8), and is subtracted into the bitstream.
                    down = (L.ge(w, lower) + L.ge(w, middle)) + L.ge(w, upper)
                    u_hat = L.permute(sums_down, down)
                    packed = packed - (down << (width * t))
                else:
                    # binary search: the code counts the boundaries <= w
                    code = L.ge(w, middle) & L.splat_i32(1 << (bits - 1))
                    if bits >= 2:
                        code = code + (L.ge(w, L.permute(table1, code >> (bits - 1))) & L.splat_i32(1 << (bits - 2)))
                    if bits >= 3:
                        code = code + (L.ge(w, L.permute(table2, code >> (bits - 2))) & L.splat_i32(1 << (bits - 3)))
                    if bits >= 4:
                        code = code + (L.ge(w, L.permute(table3, code >> (bits - 3))) & L.splat_i32(1))
                    if bits == 4:
                        u_hat = L.where(code & L.splat_i32(8), L.permute(sums_high, code), L.permute(sums_low, code))
                    else:
                        u_hat = L.permute(sums_low, code)
                    packed = packed | (code << (width * t))
                if t % 2 == 0:   # two partial sums, for the same reason as in _scale_lanes
                    even = L.fma(u, L.fma(u_hat, si, ci), even)
                else:
                    odd = L.fma(u, L.fma(u_hat, si, ci), odd)
        for b in range((width * count + 7) // 8):
            L.store_bytes(out, at + ((i0 - c0) // 8 * width + b) * step, packed >> (8 * b))
    return even + odd


@njit(cache=True, nogil=True)
def _quantize_lanes(v, c0, d, inv, centre, spread, inv_spread, tables, bits, width, out, at, step, flat, ahead):
    """Quantize coordinates c0..d-1 of u = v * inv (each lane a unit direction) as codes of
    (u - centre) * inv_spread and pack them, prefetching chunks c0..d-1 (`hadamard.prefetch_chunk`) of flat from `ahead`.

    Byte k of the lanes' bitstreams (`width` bits a coordinate, 1..4, from
    coordinate c0) goes to out[at + k * step : + LANES]. tables: (middle, table1, table2, table3,
    sums_low, sums_high, lower, upper, sums_down) f32x8 from `bucket_tables`:
    middle the boundary all lanes compare against first, tableN the
    boundaries of search level N, picked per lane by vpermps; at 2 bits
    the code is counted against lower, middle and upper instead. Returns
    the f32x8 <u, u_hat>, u_hat = spread * centroids[code] + centre as `_encode_row`
    builds it; the dot's own rounding differs (fused multiply-adds, another order).
    """
    if bits == 1:
        return _quantize(v, c0, d, inv, centre, spread, inv_spread, tables, 1, 1, out, at, step, flat, ahead)
    if bits == 2:
        return _quantize(v, c0, d, inv, centre, spread, inv_spread, tables, 2, 2, out, at, step, flat, ahead)
    if bits == 3 and width == 3:
        return _quantize(v, c0, d, inv, centre, spread, inv_spread, tables, 3, 3, out, at, step, flat, ahead)
    if bits == 3:
        return _quantize(v, c0, d, inv, centre, spread, inv_spread, tables, 3, 4, out, at, step, flat, ahead)
    return _quantize(v, c0, d, inv, centre, spread, inv_spread, tables, 4, 4, out, at, step, flat, ahead)


@njit(cache=True, nogil=True)
def _lane_tables(boundaries, centroids):
    """(bits, tables) of `_quantize_lanes` for a codebook (see `bucket_tables`)."""
    bits, search, sums, sums_down = bucket_tables(boundaries, centroids)
    # at 2 bits the first level's boundaries are [b0, b2] and the middle b1
    return bits, (L.splat(search[0]), L.load(search, LANES), L.load(search, 2 * LANES),
                  L.load(search, 3 * LANES), L.load(sums, 0), L.load(sums, LANES),
                  L.splat(search[LANES]), L.splat(search[LANES + 1]), L.load(sums_down, 0))


@njit(parallel=True, cache=True, nogil=True)
def encode_lanes(x, weights, index, overlap_signs, scale, translate, centre, spread, boundaries, centroids,
                 tail_first, tail_boundaries, tail_centroids, tail_width,
                 dest, start, base, block_stride, lane_stride, byte_stride, width, norms, dots):
    """Rotate (Hadamard rounds, or none), normalise, bucket and pack rows straight into a code target.

    x          (n, d) float32 C-contiguous rows
    weights, index, overlap_signs  the forward rounds (`rotation.HadamardRounds`);
               zero rounds (shapes (0, d), (0, d), (0, 0)) take x as already rotated
    scale      (n,) float64 row factors, or shape (0,) for all 1
    translate, centre, spread  (d,) float32, rotated: row r is mapped to
               v = rotated(x[r]) * scale[r] - translate, and its unit direction
               u = v / ||v|| is quantized as codes of (u - centre) / spread
               (spread: per-coordinate scales, all 1 for none)
    boundaries (2**b - 1,) float32, centroids (2**b,) float32, b <= 4: the
               codebook of coordinates 0..tail_first-1
    tail_boundaries, tail_centroids, tail_width: the codebook and target width
               of coordinates tail_first..d-1 (none when tail_first == d), whose
               codes follow the others' from a whole byte (tail_first * width
               must be a multiple of 8)
    dest, start, base, block_stride, lane_stride, byte_stride, width: slots
               start..start+n-1 of a `CodeTarget`, every byte of their codes written
    norms      (n,) float64 out: ||v||; NaN or inf where x[r] is not finite (or
               overflows float32 once rotated)
    dots       (n,) float32 out: <u, u_hat>, u_hat = spread * centroids[code] + centre (0 for a zero v)

    The float operations of `encode_directions` on the rotated rows, but for
    the order and rounding of the dots (float32).
    """
    n, d = x.shape
    flat = x.reshape(n * d)
    rounds = weights.shape[0]
    p, sources, gains = forward_plan(weights, index, overlap_signs, d)
    # Without row factors or a translation, v is the rotated row: one read-only pass for its norm.
    plain = scale.shape[0] == 0 and not np.any(translate != 0)
    inv_spread = (np.float32(1.0) / spread).astype(np.float32)
    bits, tables = _lane_tables(boundaries, centroids)
    tail_bits, tail_tables = _lane_tables(tail_boundaries, tail_centroids)
    head_bytes = tail_first * width // 8
    nbytes = (tail_first * width + 7) // 8 + ((d - tail_first) * tail_width + 7) // 8
    n_groups = (n + LANES - 1) // LANES
    per_task = _ROWS_PER_TASK // LANES
    for task in prange((n_groups + per_task - 1) // per_task):
        buf = np.empty(2 * d * LANES, np.float32)
        tile = np.empty(LANES * LANES, np.float32)
        packed = np.empty(nbytes * LANES, np.uint8)
        lane_scale = np.ones(LANES, np.float32)
        lane_norm = np.zeros(LANES, np.float64)
        for group in range(task * per_task, min(n_groups, (task + 1) * per_task)):
            r0 = group * LANES
            m = min(LANES, n - r0)
            # The next rows are prefetched while quantizing, the longest pass over this group.
            if rounds:
                cur = rotate_lanes_forward(flat, r0, m, d, p, sources, gains, buf, tile, False)
            else:
                cur = buf[:d * LANES]
                load_lanes(flat, r0, m, d, cur, tile, False)
            if plain:
                squares = _lane_squares(cur, d)
            else:
                for lane in range(LANES):
                    lane_scale[lane] = scale[r0 + lane] if scale.shape[0] and lane < m else 1.0
                squares = _scale_lanes(cur, d, L.load(lane_scale, 0), translate)
            for lane in range(LANES):
                lane_norm[lane] = _norm(L.get(squares, lane), cur, lane, LANES, d)
                lane_scale[lane] = 1.0 / lane_norm[lane] if lane_norm[lane] > 0.0 else 0.0
            s0 = start + r0
            direct = lane_stride == 1 and m == LANES and s0 % BLOCK + LANES <= BLOCK
            if direct:   # LANES consecutive slots of one block: a row of bytes is one 8-byte store
                out, at, step = dest, _code_address(s0, base, block_stride, lane_stride), byte_stride
            else:
                out, at, step = packed, 0, LANES
            inv = L.load(lane_scale, 0)
            ahead = prefetch_ahead(flat, r0, d)
            dot = _quantize_lanes(cur, 0, tail_first, inv, centre, spread, inv_spread, tables, bits, width, out, at,
                                  step, flat, ahead)
            if tail_first < d:
                dot = dot + _quantize_lanes(cur, tail_first, d, inv, centre, spread, inv_spread, tail_tables,
                                            tail_bits, tail_width,
                                            out, at + head_bytes * step, step, flat, ahead)
            for lane in range(m):
                r = r0 + lane
                norms[r] = lane_norm[lane]
                dots[r] = L.get(dot, lane) if lane_norm[lane] > 0.0 else 0.0
                if not direct:
                    at = _code_address(s0 + lane, base, block_stride, lane_stride)
                    for k in range(nbytes):
                        dest[at + k * byte_stride] = packed[k * LANES + lane]
