"""Plain NumPy twins of the Numba kernels: slow, obvious, and the truth in tests."""
from __future__ import annotations

import math

import numpy as np


def pack_codes(c: np.ndarray, bits: int, offset: int = 0, out: np.ndarray | None = None) -> np.ndarray:
    """Pack codes c (n, d) ints < 2**bits as an LSB-first bitstream starting at byte `offset`.

    Writes into `out` (n, >= offset + ceil(d * bits / 8)) uint8, or a fresh
    array of exactly that width.
    """
    n, d = c.shape
    seg = (d * bits + 7) // 8
    out = np.zeros((n, offset + seg), np.uint8) if out is None else out
    bit_index = np.arange(d)[:, None] * bits + np.arange(bits)[None, :]   # (d, bits)
    bit_values = (c[:, :, None].astype(np.int64) >> np.arange(bits)) & 1  # (n, d, bits)
    flat = np.zeros((n, seg * 8), np.uint8)
    flat[:, bit_index.ravel()] = bit_values.reshape(n, -1)
    out[:, offset:offset + seg] |= np.packbits(flat, axis=1, bitorder="little")
    return out


def unpack_codes(codes: np.ndarray, offset: int, bits: int, d: int) -> np.ndarray:
    """Inverse of `pack_codes`: (n, d) int32."""
    bitsarr = np.unpackbits(codes[:, offset:], axis=1, bitorder="little")[:, :d * bits]
    bitsarr = bitsarr.reshape(len(codes), d, bits).astype(np.int32)
    return (bitsarr << np.arange(bits, dtype=np.int32)).sum(axis=2).astype(np.int32)


def encoder_norms(v: np.ndarray) -> np.ndarray:
    """Twin of the encoders' row norms (`kernels.encode._norm` of `_squares32`): (n,) float64 of v (n, d)
    float32, from float32 sums in their order, or from sequential float64 ones outside [2^-100, 2^100]."""
    n, d = v.shape
    partial = np.zeros((4, n), np.float32)
    wide = np.zeros(n)
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        for i in range(d):
            k = i % 4 if i < d - d % 4 else 0
            partial[k] += v[:, i] * v[:, i]
            wide += v[:, i].astype(np.float64) ** 2
        total = (partial[0] + partial[1]) + (partial[2] + partial[3])
        in_range = (total >= np.float32(2.0 ** -100)) & (total <= np.float32(2.0 ** 100))
    return np.sqrt(np.where(in_range, total.astype(np.float64), wide))


def encode_directions(y: np.ndarray, scale: np.ndarray, translate: np.ndarray, centre: np.ndarray,
                      boundaries: np.ndarray, centroids: np.ndarray, bits: int, spread: np.ndarray | None = None):
    """Twin of `kernels.encode.encode_directions`: (codes of the segment alone, norms, dots, residual).
    spread (d,) float32, None for all 1."""
    spread = np.ones(y.shape[1], np.float32) if spread is None else spread
    inv_spread = (np.float32(1.0) / spread).astype(np.float32)
    v = y * scale.astype(np.float32)[:, None] - translate
    norms = encoder_norms(v)
    inv = np.where(norms > 0, 1.0 / np.where(norms > 0, norms, 1.0), 0.0).astype(np.float32)
    u = v * inv[:, None]
    c = np.searchsorted(boundaries, (u - centre) * inv_spread, side="right")
    uh = centroids[c] * spread + centre
    dots = np.where(norms > 0, (u.astype(np.float64) * uh).sum(axis=1), 0.0)
    codes = pack_codes(c, bits)
    return codes, norms.astype(np.float32), dots.astype(np.float32), (u - uh).astype(np.float32)


def norms_and_dots(x: np.ndarray, m: np.ndarray):
    """Twin of `kernels.encode.norms_and_dots`: (||x[r]|| (n,), <x[r], m> (n,)) float64."""
    x64 = x.astype(np.float64)
    return np.sqrt((x64 * x64).sum(axis=1)), x64 @ m.astype(np.float64)


def pack_signs(z: np.ndarray, offset: int = 0) -> np.ndarray:
    """Twin of `kernels.encode.pack_signs`, into a fresh (n, offset + ceil(d / 8)) array."""
    return pack_codes((z >= 0).astype(np.int64), 1, offset)


def decode_segments(codes: np.ndarray, cents: np.ndarray, segments) -> list[np.ndarray]:
    """Each segment's centroids (n, d) float64: segments[s] is a sequence of parts (first, count, bits,
    table), packed one after the other from whole bytes; coordinates no part covers are 0."""
    d = max(p[0] + p[1] for parts in segments for p in parts)
    out, at = [], 0
    for parts in segments:
        decoded = np.zeros((codes.shape[0], d))
        for first, count, bits, table in parts:
            decoded[:, first:first + count] = cents[table][unpack_codes(codes, at, bits, count)]
            at += (count * bits + 7) // 8
        out.append(decoded)
    return out


def score_codes(codes: np.ndarray, factors: np.ndarray, qv: np.ndarray, cents: np.ndarray,
                segments, qoff=None) -> np.ndarray:
    """Twin of `kernels.scan.score_codes`: decode every segment, then dot products.

    qv (nq, nseg, d); cents (ntables, >= 2**bits); segments as in
    `decode_segments`; qoff (nq, nseg) segment offsets or None for zeros;
    returns (nq, n) float64.
    """
    nseg = len(segments)
    scores = np.zeros((qv.shape[0], codes.shape[0]))
    for s, decoded in enumerate(decode_segments(codes, cents, segments)):
        partial = qv[:, s, :].astype(np.float64) @ decoded.T
        if qoff is not None:
            partial += qoff[:, s].astype(np.float64)[:, None]
        scores += partial * factors[:, s][None, :]
    if factors.shape[1] > nseg:
        scores += factors[:, nseg][None, :]
    return scores


def topk(scores: np.ndarray, k: int):
    """Best k per row (highest first, ties to the lower column), -inf/-1 padded."""
    nq, n = scores.shape
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    out_s = np.full((nq, k), -np.inf, np.float64)
    out_i = np.full((nq, k), -1, np.int64)
    out_s[:, :order.shape[1]] = np.take_along_axis(scores, order, 1)
    out_i[:, :order.shape[1]] = order
    return out_s, out_i


def restrict(scores: np.ndarray, allowed) -> np.ndarray:
    """Twin of the kernels' `allowed` filter: scores (nq, n) with -inf where allowed (n,) uint8 is 0
    (a copy; allowed None or zero-length: unchanged)."""
    if allowed is None or not len(allowed):
        return scores
    return np.where(np.asarray(allowed, bool)[None, :len(scores[0])], scores, -np.inf)


def rerank_rows(vectors: np.ndarray, rows: np.ndarray, q: np.ndarray, l2: bool, k: int):
    """Twin of `kernels.rerank.rerank_rows`: exact scores of the shortlisted rows, best k."""
    x = vectors.astype(np.float64)[np.maximum(rows, 0)]            # (nq, r, d)
    qq = q.astype(np.float64)[:, None, :]
    scores = -((qq - x) ** 2).sum(axis=2) if l2 else (qq * x).sum(axis=2)
    scores[rows < 0] = -np.inf
    out_s, out_c = topk(scores, k)
    out_c[~np.isfinite(out_s)] = -1
    return out_s, out_c


def select_lists(qc: np.ndarray, cnorm2: np.ndarray, probe_l2: bool, nprobe: int) -> np.ndarray:
    """Twin of `kernels.ivf_scan.select_lists` for every query: (nq, nprobe) lists, nearest first."""
    key = 2.0 * qc.astype(np.float32) - cnorm2 if probe_l2 else qc
    return np.argsort(-key, axis=1, kind="stable")[:, :nprobe]


def search_lists(codes, factors, list_start, list_size, qc, cnorm2, probe_l2: bool, list_bias_mult: float,
                 nprobe: int, qv, qoff, cents, segments, k: int, allowed=None):
    """Twin of `kernels.ivf_scan.search_lists`: decode every code, keep the probed lists (and the
    allowed rows, see `restrict`), best k."""
    every = score_codes(codes, factors, qv, cents, segments, qoff)
    scores = np.full(every.shape, -np.inf)
    for i, probed in enumerate(select_lists(qc, cnorm2, probe_l2, nprobe)):
        for l in probed:
            rows = slice(list_start[l], list_start[l] + list_size[l])
            scores[i, rows] = every[i, rows] + list_bias_mult * qc[i, l]
    out_s, out_i = topk(restrict(scores, allowed), k)
    out_i[~np.isfinite(out_s)] = -1
    return out_s, out_i


# -- fast-scan (kernels.fastscan) ------------------------------------------------------

def nibbles(codes: np.ndarray, bits: int, dim: int) -> np.ndarray:
    """Sub-codes of row-major codes (n, code_bytes): (n, n_sub) int32, see `fastscan.block_layout`."""
    c = unpack_codes(codes, 0, bits, dim)
    per = 1 if bits == 3 else 4 // bits
    c = np.pad(c, ((0, 0), (0, -dim % per)))
    return (c.reshape(len(c), -1, per) << (bits * np.arange(per))).sum(axis=2).astype(np.int32)


def pack_blocks(codes: np.ndarray, bits: int, dim: int) -> np.ndarray:
    """The fast-scan blocks of row-major codes (`encode.write_codes` into a `blocked_target`), fresh:
    (n_blocks, rows, 32) uint8."""
    nib = nibbles(codes, bits, dim)
    n, n_sub = nib.shape
    nib = np.pad(nib, ((0, -n % 32), (0, n_sub % 2)))
    pairs = nib[:, 0::2] | (nib[:, 1::2] << 4)                 # (n padded, rows)
    return np.ascontiguousarray(pairs.reshape(-1, 32, pairs.shape[1]).transpose(0, 2, 1)).astype(np.uint8)


def _sub_code_tables(q: np.ndarray, cents: np.ndarray, bits: int) -> np.ndarray:
    """T_j[x] (n_sub, 16) float64 of coordinates q at `bits` each, packed into sub-codes."""
    d = q.shape[0]
    per = 1 if bits == 3 else 4 // bits
    n_sub = -(-d // per)
    x = np.arange(16)
    codes = (x[None, :] >> (bits * np.arange(per))[:, None]) & ((1 << bits) - 1)    # (per, 16)
    qp = np.pad(q.astype(np.float64), (0, n_sub * per - d)).reshape(n_sub, per)
    return np.einsum("jt,tx->jx", qp, cents.astype(np.float64)[codes])


def _float32_step(step: float) -> float:
    """The least float32 value at or above step, as a float."""
    v = np.float32(step)
    return float(np.nextafter(v, np.float32(np.inf)) if float(v) < step else v)   # compared in float64


def fastscan_tables(q: np.ndarray, cents: np.ndarray, bits: int, off: float = 0.0, tail=None):
    """Twin of `fastscan.build_tables`: (float tables (2 * rows, 16), u8 (rows * 32,), base, delta,
    err, residual u8 (rows * 32,), base2, delta2, err2).

    err and err2 here are the bare bounds sum_j max_x |rounding| of the two steps.
    tail: None, or (first, tail_cents, tail_bits) for coordinates first.. at tail_bits.
    """
    if tail is not None:   # the tail's sub-codes follow the others'
        first, tail_cents, tail_bits = tail
        tables = np.concatenate([_sub_code_tables(q[:first], cents, bits),
                                 _sub_code_tables(q[first:], tail_cents, tail_bits)])
    else:
        tables = _sub_code_tables(q, cents, bits)
    tables[0] += off
    tables = np.pad(tables, ((0, len(tables) % 2), (0, 0)))
    lo = tables.min(axis=1)
    span = (tables.max(axis=1) - lo).reshape(-1, 2).sum(axis=1).max()   # rows of two tables share a byte
    delta = _float32_step(span / 254.0 if span > 0 else 1.0)
    u = np.clip(np.floor((tables - lo[:, None]) * (1.0 / delta) + 0.5), 0, 255)   # as the kernel: by the inverse
    gap = tables - lo[:, None] - delta * u
    err = np.abs(gap).max(axis=1).sum()
    # the residual above its least possible value lo - delta / 2, in steps of delta2
    delta2 = _float32_step(delta / 126.0)
    g = gap + 0.5 * delta
    r = np.clip(np.floor(g * (1.0 / delta2) + 0.5), 0, 127)
    err2 = np.abs(g - delta2 * r).max(axis=1).sum()
    base = lo.sum()
    return (tables, u.astype(np.uint8).ravel(), base, delta, err, r.astype(np.uint8).ravel(),
            base - len(tables) * 0.5 * delta, delta2, err2)


def quantized_sums(blocks: np.ndarray, n: int, luts: np.ndarray) -> np.ndarray:
    """Twin of `fastscan.quantized_sums`: (nq, n) int64 sums of u8 table entries."""
    rows = blocks.shape[1]
    flat = blocks.transpose(0, 2, 1).reshape(-1, rows)[:n].astype(np.int64)   # (n, rows)
    nib = np.stack([flat & 15, flat >> 4], axis=2).reshape(n, 2 * rows)       # (n, 2 * rows)
    idx = 16 * np.arange(2 * rows)[None, :] + nib
    return luts.astype(np.int64)[:, idx].sum(axis=2)


def fastscan_estimates(blocks: np.ndarray, n: int, factors: np.ndarray, q: np.ndarray, qoff: np.ndarray,
                       cents: np.ndarray, bits: int) -> np.ndarray:
    """Twin of `fastscan.estimates` over slots 0..n-1: (nq, n) float32 w * (base + delta * S) + bias,
    in float32 arithmetic as the kernel does it."""
    out = np.empty((len(q), n), np.float32)
    bias = factors[:n, 1] if factors.shape[1] > 1 else np.zeros(n, np.float32)
    for i in range(len(q)):
        _, lut, base, delta, *_ = fastscan_tables(q[i], cents, bits, qoff[i])
        sums = quantized_sums(blocks, n, lut[None])[0].astype(np.float32)
        out[i] = factors[:n, 0] * (np.float32(base) + np.float32(delta) * sums) + bias
    return out


def search_list_blocks(blocks, factors, list_start, list_size, qc, cnorm2, probe_l2: bool,
                       list_bias_mult: float, nprobe: int, qrot, qoff, cents, bits: int, k: int, allowed=None):
    """Twin of `fastscan.search_list_blocks`: float64 scores from the float tables, probed lists only
    (and allowed slots, see `restrict`), best k.

    factors (arena, 1 or 2) float32 in slot order (weight, bias).
    """
    n, rows = blocks.shape[0] * 32, blocks.shape[1]
    flat = blocks.transpose(0, 2, 1).reshape(n, rows).astype(np.int64)
    nib = np.stack([flat & 15, flat >> 4], axis=2).reshape(n, 2 * rows)          # (arena, 2 * rows)
    bias = factors[:, 1].astype(np.float64) if factors.shape[1] > 1 else np.zeros(n)
    scores = np.full((len(qrot), n), -np.inf)
    for i, probed in enumerate(select_lists(qc, cnorm2, probe_l2, nprobe)):
        tables = fastscan_tables(qrot[i], cents, bits, qoff[i])[0]                  # (2 * rows, 16)
        partial = tables[np.arange(2 * rows)[None, :], nib].sum(axis=1)
        for l in probed:
            at = slice(list_start[l], list_start[l] + list_size[l])
            scores[i, at] = factors[at, 0] * partial[at] + bias[at] + list_bias_mult * np.float64(qc[i, l])
    out_s, out_i = topk(restrict(scores, allowed), k)
    out_i[~np.isfinite(out_s)] = -1
    return out_s, out_i


# -- code targets and the lane encoder (kernels.encode) ----------------------------------

def restream(codes: np.ndarray, offset: int, bits: int, d: int, width: int) -> np.ndarray:
    """The `bits`-bit segment at byte `offset` of row-major codes re-packed at `width` bits a
    coordinate: (n, ceil(d * width / 8)) uint8."""
    return pack_codes(unpack_codes(codes, offset, bits, d), width)


def code_addresses(slots: np.ndarray, nbytes: int, base: int, block_stride: int, lane_stride: int,
                   byte_stride: int) -> np.ndarray:
    """(len(slots), nbytes) int64: where each byte of each slot's code sits in a `CodeTarget`'s dest."""
    s = np.asarray(slots, np.int64)[:, None]
    return base + (s // 32) * block_stride + (s % 32) * lane_stride + np.arange(nbytes)[None, :] * byte_stride


def write_codes(codes: np.ndarray, offset: int, bits: int, d: int, dest: np.ndarray, slots: np.ndarray, base: int,
                block_stride: int, lane_stride: int, byte_stride: int, width: int) -> np.ndarray:
    """Twin of `kernels.encode.write_codes`: a copy of dest with the codes written."""
    stream = restream(codes, offset, bits, d, width)
    out = dest.copy()
    out[code_addresses(slots, stream.shape[1], base, block_stride, lane_stride,
                       byte_stride)] = stream
    return out


def encode_lanes(y: np.ndarray, scale: np.ndarray, translate: np.ndarray, centre: np.ndarray,
                 boundaries: np.ndarray, centroids: np.ndarray, width: int, tail=None,
                 spread: np.ndarray | None = None):
    """Twin of `kernels.encode.encode_lanes` with zero rounds (rows y already rotated):
    (codes at `width` bits a coordinate (n, ceil(d * width / 8)) uint8, norms float64, dots).

    tail: None, or (tail_first, tail_boundaries, tail_centroids, tail_width):
    coordinates from tail_first on take that codebook, their codes after
    the others' from a whole byte. spread (d,) float32: per-coordinate scales, None for all 1.
    """
    spread = np.ones(y.shape[1], np.float32) if spread is None else spread
    inv_spread = (np.float32(1.0) / spread).astype(np.float32)
    scale = np.ones(len(y)) if scale.shape[0] == 0 else scale
    norms = encoder_norms(y * scale.astype(np.float32)[:, None] - translate)
    bits = int(np.log2(len(centroids)))
    codes, _, dots, residual = encode_directions(y, scale, translate, centre, boundaries, centroids, bits, spread)
    if tail is None:
        return restream(codes, 0, bits, y.shape[1], width), norms, dots
    first, tail_b, tail_c, tail_width = tail
    d = y.shape[1]
    u = residual + centroids[unpack_codes(codes, 0, bits, d)] * spread + centre        # the unit directions
    c = np.searchsorted(tail_b, (u[:, first:] - centre[first:]) * inv_spread[first:], side="right")
    uh = (np.concatenate([centroids[unpack_codes(codes, 0, bits, d)[:, :first]], tail_c[c]], axis=1) * spread
          + centre)
    dots = np.where(norms > 0, (u.astype(np.float64) * uh).sum(axis=1), 0.0).astype(np.float32)
    head = restream(codes, 0, bits, first, width)
    return np.concatenate([head, pack_codes(c, tail_width)], axis=1), norms, dots


def sample_sum(x: np.ndarray, starts: np.ndarray, lengths: np.ndarray, unit: bool):
    """Twin of `kernels.encode.sample_sum`: (float64 sum over the row ranges (d,), rows summed)."""
    rows = np.concatenate([x[s:s + k] for s, k in zip(starts, lengths)]).astype(np.float64)
    if unit:
        norms = np.sqrt((rows ** 2).sum(axis=1))
        rows = rows[norms > 0] / norms[norms > 0, None]
    return rows.sum(axis=0), len(rows)


def dot_partials(codes: np.ndarray, bits: int, q: np.ndarray, off: np.ndarray, cents: np.ndarray) -> np.ndarray:
    """Twin of `kernels.dot.exact_partial` for every (query, vector): (nq, n) float64.

    off + sum_i q[i] * cents[code_i] with four sequential sums over i mod 4 added as (s0 + s1) + (s2 + s3),
    the kernel's order, so the two agree bit for bit. codes (n, bytes) packed; q (nq, d) float64.
    """
    d = q.shape[1]
    c = np.asarray(cents, np.float32).astype(np.float64)[unpack_codes(codes, 0, bits, d)]   # (n, d)
    sums = []
    for t in range(4):
        terms = q[:, None, t::4] * c[None, :, t::4]    # (nq, n, ~d/4)
        sums.append(np.cumsum(terms, axis=2)[:, :, -1] if terms.shape[2] else np.zeros(terms.shape[:2]))
    return off[:, None] + ((sums[0] + sums[1]) + (sums[2] + sums[3]))


def _dot_quantization(q: np.ndarray, cents: np.ndarray, bits: int):
    """The integer engine's quantization (`dot_codebook` / `dot_queries`): the codebook c (float64),
    its u8 scale s_c, c8 = round(c / s_c), err = max|c - s_c c8|, and the queries' s_q (nq,) and
    q8 (nq, d) = round(q / s_q)."""
    c = np.asarray(cents, np.float64)[:1 << bits]
    cmax = np.abs(c).max()
    sc = cmax / 127.0 if cmax > 0 else 1.0
    c8 = np.clip(np.round(c / sc), -127, 127)
    qmax = np.abs(q).max(axis=1)
    sq = np.where(qmax > 0, qmax / 127.0, 1.0)
    q8 = np.clip(np.round(q / sq[:, None]), -127, 127)
    return c, sc, c8, np.abs(c - sc * c8).max(), sq, q8


def dot_estimates(codes: np.ndarray, bits: int, q: np.ndarray, off: np.ndarray, cents: np.ndarray):
    """Twin of the integer estimate of `kernels.dot`: (estimates (nq, n) float64, bounds (nq,) float64).

    The codebook to u8 and the queries to int8 as `dot_codebook` / `dot_queries` do; the estimate
    a + b * S with S the exact integer dot product, and the bound E of the module docstring.
    """
    d = q.shape[1]
    c, sc, c8, err, sq, q8 = _dot_quantization(q, cents, bits)
    u = (c8 + 128)[unpack_codes(codes, 0, bits, d)]          # (n, d) the decoded bytes
    S = q8 @ u.T                                              # exact in float64 (|S| < 2**53)
    est = off[:, None] - (sq * sc * 128.0 * q8.sum(axis=1))[:, None] + (sq * sc)[:, None] * S
    bound = np.abs(q - sq[:, None] * q8).sum(axis=1) * np.abs(c).max() + sq * np.abs(q8).sum(axis=1) * err
    return est, bound


def dot_vector_bounds(codes: np.ndarray, bits: int, q: np.ndarray, cents: np.ndarray) -> np.ndarray:
    """Twin of the per-vector bound of `kernels.dot._scan_groups`: (nq, n) float64,
    ||q - s_q q8|| * (s_c ||c8(code)|| + sqrt(d) max|c - s_c c8|) + s_q sum|q8| max|c - s_c c8|
    (Cauchy-Schwarz on the query's rounding, the L1 term of `dot_estimates` on the codebook's)."""
    d = q.shape[1]
    _, sc, c8, err, sq, q8 = _dot_quantization(q, cents, bits)
    norms = sc * np.sqrt((c8[unpack_codes(codes, 0, bits, d)] ** 2).sum(axis=1)) + np.sqrt(d) * err   # (n,)
    return (np.linalg.norm(q - sq[:, None] * q8, axis=1)[:, None] * norms[None, :]
            + (sq * np.abs(q8).sum(axis=1) * err)[:, None])


def hadamard_rotate(x: np.ndarray, rounds, transpose: bool = False) -> np.ndarray:
    """Twin of `kernels.hadamard.hadamard_rotate`, from the forward rounds (signs, perms, overlap_signs)
    as in `rotation.HadamardRounds`.

    x (n, d) float32 -> (n, d) float64; every step is the plain normalised
    operation, so this is also the definition of the rotation.
    """
    d = x.shape[1]
    p = 1 << (d.bit_length() - 1)   # the largest power of two <= d
    signs, perms, overlap_signs = rounds
    first, second = ((d - p, d), (0, p)) if transpose else ((0, p), (d - p, d))
    v = x.astype(np.float64)
    for k in (reversed(range(len(signs))) if transpose else range(len(signs))):
        if not transpose:
            v = signs[k] * v[:, perms[k]]
        v[:, first[0]:first[1]] = _normalised_hadamard(v[:, first[0]:first[1]])
        if p < d:
            v[:, d - p:p] *= overlap_signs[k]
            v[:, second[0]:second[1]] = _normalised_hadamard(v[:, second[0]:second[1]])
        if transpose:
            undone = np.empty_like(v)
            undone[:, perms[k]] = signs[k] * v
            v = undone
    return v


def _normalised_hadamard(v: np.ndarray) -> np.ndarray:
    """Orthonormal Walsh-Hadamard transform of each row of v (n, p), p a power of two."""
    n, p = v.shape
    h = 1
    while h < p:
        pairs = v.reshape(n, p // (2 * h), 2, h)
        v = np.stack([pairs[:, :, 0] + pairs[:, :, 1], pairs[:, :, 0] - pairs[:, :, 1]], axis=2)
        v = v.reshape(n, p)
        h *= 2
    return v / math.sqrt(p)
