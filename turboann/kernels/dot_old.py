"""Integer dot-product scan of row-major packed codes: every width 1..8, exact or shortlisted top k.

Codes. A vector's code is `dim` coordinates of `bits` bits each, packed
LSB-first into ceil(dim * bits / 8) bytes (`kernels.encode`), so 8
coordinates take exactly `bits` bytes and 64 coordinates (a "chunk") 8 *
bits bytes. Nothing is stored beyond the codes.

Decoding. A chunk is loaded (masked: never past the row), its bytes spread
so that each group of 8 coordinates fills a qword (vpermb), each
coordinate's bits shifted into a byte of its own (vpmultishiftqb) and
masked; the code bytes then index the codebook quantized to u8,
u[x] = round(c[x] / s_c) + 128 (vpermb / vpermi2b: up to 256 entries).
Without VBMI a scalar loop decodes the same bytes.

Scoring. A query q (rotated, float32) is quantized to int8, q8 = round(q /
s_q), per query. One vector's decoded bytes u are broadcast four at a time
against `GROUP` (16) queries' int8 values of the same four coordinates,
and vpdpbusd adds the 16 products sums in 16 int32 lanes, one per query:
the decode is paid once for 16 queries and no lane is reduced. The sum S
gives the estimate of the partial score

    partial ~ off + s_q * s_c * (S - 128 * sum(q8)) = A + B * S,

and the vector's score w * partial + bias (w, bias: its factors).

Exactness. |partial - estimate| <= E, with E = sum_i |q_i - s_q q8_i| *
max|c| + s_q * sum_i |q8_i| * max_x |c_x - s_c (u_x - 128)| (per query).
exact=True keeps the guarantee of the float scan: a vector is re-scored in
float64 from its codes when its upper bound w * est + bias + |w| * E
reaches the k-th best exact score so far, so the top k equals the float
top k (ties to the lower slot). exact=False keeps the `shortlist` best by
the estimate and returns the k best of those by their exact scores.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit, prange

from . import _simd, _wide as w
from .ivf_scan import select_lists
from .topk import heap_push, sorted_topk

GROUP = 16          # queries scored together: the int32 lanes of one 512-bit register
CHUNK = 64          # coordinates decoded together
FEW = 8             # groups of fewer queries score each with a dot product of its own
# The kernels' `simd` argument (`simd_level`): 3 VBMI decode and AVX512-VNNI sums, 2 scalar decode and
# AVX512-VNNI, 1 scalar decode and AVX-VNNI (ymm), 0 scalar decode and plain IR.
SIMD_LEVELS = {"avx512": 3, "avx2": 1, "portable": 0}
# The estimate is compared in float32: every rounding of it is below 2**-24
# of the magnitudes involved; 2**-20 of them keeps the bound an upper bound.
_F32_SLACK = 2.0 ** -20


class DotCodebook(NamedTuple):
    """The decoder of one width, from `dot_codebook`.

    bits     bits per coordinate, 1..8
    decode   (256,) uint8 u[x] = round(c[x] / scale) + 128 (unused entries 128)
    scale    s_c, float64
    cmax     max |c|, float64
    err      max_x |c_x - scale * (u_x - 128)|, float64
    spread   (64,) uint8 vpermb index: byte t < bits of qword g <- chunk byte g * bits + t
    shifts   (64,) uint8 vpmultishiftqb control: byte j of each qword <- bit j * bits
    """
    bits: int
    decode: np.ndarray
    scale: float
    cmax: float
    err: float
    spread: np.ndarray
    shifts: np.ndarray


def dot_codebook(cents: np.ndarray, bits: int) -> DotCodebook:
    """The u8 decoder of centroids cents (2**bits,) float32 for `bits`-bit codes."""
    c = np.asarray(cents, np.float64)[:1 << bits]
    cmax = float(np.abs(c).max())
    scale = cmax / 127.0 if cmax > 0 else 1.0
    c8 = np.clip(np.round(c / scale), -127, 127)
    decode = np.full(256, 128, np.uint8)
    decode[:c.shape[0]] = (c8 + 128).astype(np.uint8)
    err = float(np.abs(c - scale * c8).max())
    g, t = np.divmod(np.arange(64), 8)
    spread = np.minimum(g * bits + t, 63).astype(np.uint8)
    shifts = ((t * bits) % 64).astype(np.uint8)
    return DotCodebook(int(bits), decode, scale, cmax, err, spread, shifts)


class DotQueries(NamedTuple):
    """Queries prepared for `search_dot`, from `dot_queries`.

    rotated  (nq, dim) float64 rotated queries (the exact re-scoring's)
    off      (nq,) float64 partial-score offsets
    lanes    (n_groups, padded_dim // 4, 64) int8: group g's query j, coordinates 4c..4c+3,
             at [g, c, 4j: 4j + 4] (0 past dim and past the last query)
    a, b     (n_groups * GROUP,) float32: estimate = a + b * S
    e        (n_groups * GROUP,) float32: the bound E of each query
    rows     (nq, padded_dim) int8: the same int8 values, one row a query
    """
    rotated: np.ndarray
    off: np.ndarray
    lanes: np.ndarray
    rows: np.ndarray
    a: np.ndarray
    b: np.ndarray
    e: np.ndarray


def padded_dim(dim: int) -> int:
    """dim rounded up to whole chunks."""
    return -(-dim // CHUNK) * CHUNK


def dot_queries(qrot: np.ndarray, qoff: np.ndarray, book: DotCodebook) -> DotQueries:
    """Quantize rotated queries qrot (nq, dim) float32 with offsets qoff (nq,) to int8 lanes."""
    nq, dim = qrot.shape
    q = qrot.astype(np.float64)
    qmax = np.abs(q).max(axis=1) if dim else np.zeros(nq)
    sq = np.where(qmax > 0, qmax / 127.0, 1.0)
    q8 = np.clip(np.round(q / sq[:, None]), -127, 127)
    ng = -(-nq // GROUP)
    dp = padded_dim(dim)
    full = np.zeros((ng * GROUP, dp), np.int8)
    full[:nq, :dim] = q8
    lanes = np.ascontiguousarray(full.reshape(ng, GROUP, dp // 4, 4).transpose(0, 2, 1, 3)).reshape(ng, dp // 4, 64)
    a = np.zeros(ng * GROUP, np.float32)
    b = np.zeros(ng * GROUP, np.float32)
    e = np.zeros(ng * GROUP, np.float32)
    scale = sq * book.scale
    a[:nq] = qoff - scale * 128.0 * q8.sum(axis=1)
    b[:nq] = scale
    bound = np.abs(q - sq[:, None] * q8).sum(axis=1) * book.cmax + sq * np.abs(q8).sum(axis=1) * book.err
    # float32 evaluation of a + b * S: widen by the slack of its largest magnitude
    largest = np.abs(qoff) + scale * 255.0 * np.abs(q8).sum(axis=1) + np.abs(a[:nq])
    e[:nq] = (bound + _F32_SLACK * largest) * (1 + 1e-6)
    return DotQueries(q, np.asarray(qoff, np.float64), lanes, full[:nq], a, b, e)


# -- decoding --------------------------------------------------------------------------

@njit(cache=True, nogil=True)
def decode_scalar(codes, v, dim, bits, table, values, raw):
    """Row v of codes (n, code_bytes) uint8: raw[i] = code of coordinate i, values[i] = table[code],
    for i < dim; 0 and table[0] up to values' length."""
    mask = (1 << bits) - 1
    nbytes = codes.shape[1]
    for i in range(dim):
        p = i * bits
        byte = p >> 3
        x = np.int32(codes[v, byte])
        if byte + 1 < nbytes:
            x |= np.int32(codes[v, byte + 1]) << 8
        c = (x >> (p & 7)) & mask
        raw[i] = c
        values[i] = table[c]
    for i in range(dim, values.shape[0]):
        raw[i] = 0
        values[i] = table[0]


@njit(cache=True, nogil=True, inline="always")
def decoder(book):
    """The registers `decode_chunk` takes, from a `DotCodebook`: (t0, t1, t2, t3, spread, shifts, mask)."""
    table = book.decode
    return (w.load_i8(table, 0), w.load_i8(table, 64), w.load_i8(table, 128), w.load_i8(table, 192),
            w.load_i8(book.spread, 0), w.load_i8(book.shifts, 0), w.splat8((1 << book.bits) - 1))


@njit(cache=True, nogil=True, inline="always")
def decode_chunk(flat, start, count, bits, t0, t1, t2, t3, spread, shifts, mask):
    """(code bytes, decoded bytes) as two u8x64 of the chunk whose `count` (<= 8 * bits) packed bytes
    start at flat[start] (VBMI; see the module docstring).

    t0..t3: the decode table's four 64-entry quarters, spread and shifts
    (`DotCodebook`) and mask (2**bits - 1 in every byte), as u8x64.
    """
    x = w.load_bytes(flat, start, max(count, 0))
    if bits < 8:
        x = w.and8(w.multishift(shifts, w.permute64(x, spread)), mask)
    if bits <= 6:
        y = w.permute64(t0, x)
    elif bits == 7:
        y = w.permute128(t0, x, t1)
    else:
        y = w.select_high(x, w.permute128(t0, x, t1), w.permute128(t2, x, t3))
    return x, y


@njit(cache=True, nogil=True, inline="always")
def decode_simd(flat, row_start, row_bytes, bits, t0, t1, t2, t3, spread, shifts, mask, values):
    """The decoded bytes of `decode_scalar`, into values, for the row at flat[row_start:] (VBMI;
    arguments as in `decode_chunk`)."""
    step = 8 * bits
    ch = 0
    for at in range(0, values.shape[0], CHUNK):
        x, y = decode_chunk(flat, row_start + ch * step, row_bytes - ch * step, bits, t0, t1, t2, t3, spread,
                            shifts, mask)
        w.store_wide(values, at, y)
        ch += 1


# -- scoring -----------------------------------------------------------------------------

@njit(cache=True, nogil=True, inline="always")
def _dot(simd, acc, unsigned, signed):
    """The `_wide` dot product of SIMD level simd: >= 2 vpdpbusd zmm, 1 vpdpbusd ymm, 0 plain IR.
    simd is loop-invariant in every caller, so LLVM hoists the branch out of the loop."""
    if simd >= 2:
        return w.dot_vnni512(acc, unsigned, signed)
    if simd == 1:
        return w.dot_vnni256(acc, unsigned, signed)
    return w.dot_generic(acc, unsigned, signed)


@njit(cache=True, nogil=True, inline="always")
def group_sums(values, flat, quads, simd):
    """The int32 sums S of one decoded vector against the 16 queries whose lanes start flat (i32x16),
    with the dot-product instruction of level `simd` (`_dot`).

    values: the vector's decoded bytes (4 * quads,); flat: the group's lanes
    raveled (quads * 64,) int8.
    """
    # Eight independent sums: vpdpbusd takes several cycles and two can start each cycle.
    s0 = w.zero_i32()
    s1 = w.zero_i32()
    s2 = w.zero_i32()
    s3 = w.zero_i32()
    s4 = w.zero_i32()
    s5 = w.zero_i32()
    s6 = w.zero_i32()
    s7 = w.zero_i32()
    c = 0
    while c + 8 <= quads:
        s0 = _dot(simd, s0, w.broadcast_dword(values, 4 * c), w.load_i8(flat, 64 * c))
        s1 = _dot(simd, s1, w.broadcast_dword(values, 4 * c + 4), w.load_i8(flat, 64 * c + 64))
        s2 = _dot(simd, s2, w.broadcast_dword(values, 4 * c + 8), w.load_i8(flat, 64 * c + 128))
        s3 = _dot(simd, s3, w.broadcast_dword(values, 4 * c + 12), w.load_i8(flat, 64 * c + 192))
        s4 = _dot(simd, s4, w.broadcast_dword(values, 4 * c + 16), w.load_i8(flat, 64 * c + 256))
        s5 = _dot(simd, s5, w.broadcast_dword(values, 4 * c + 20), w.load_i8(flat, 64 * c + 320))
        s6 = _dot(simd, s6, w.broadcast_dword(values, 4 * c + 24), w.load_i8(flat, 64 * c + 384))
        s7 = _dot(simd, s7, w.broadcast_dword(values, 4 * c + 28), w.load_i8(flat, 64 * c + 448))
        c += 8
    while c < quads:
        s0 = _dot(simd, s0, w.broadcast_dword(values, 4 * c), w.load_i8(flat, 64 * c))
        c += 1
    return w.add_i32(w.add_i32(w.add_i32(s0, s1), w.add_i32(s2, s3)), w.add_i32(w.add_i32(s4, s5), w.add_i32(s6, s7)))


@njit(cache=True, nogil=True, inline="always")
def row_sums(flat, row_start, row_bytes, bits, t0, t1, t2, t3, spread, shifts, mask, rows, at, m, chunks, simd):
    """The int32 sums S of one vector (its packed row at flat[row_start:]) against the queries whose
    int8 rows are rows[at[j]: at[j] + 64 * chunks], j < 4, as four int64; m = 1 scores at[0] only.

    Each chunk is decoded in registers and met by the queries' 64 int8
    values at once; the lanes are reduced once at the end. Decoding into a
    buffer and loading it back was 2-3x slower for one query.
    """
    step = 8 * bits
    a0, a1, a2, a3 = at[0], at[1], at[2], at[3]
    s0 = w.zero_i32()
    s1 = w.zero_i32()
    s2 = w.zero_i32()
    s3 = w.zero_i32()
    for c in range(chunks):
        x, y = decode_chunk(flat, row_start + c * step, row_bytes - c * step, bits, t0, t1, t2, t3, spread,
                            shifts, mask)
        u = w.as_i32(y)
        s0 = _dot(simd, s0, u, w.load_i8(rows, a0 + 64 * c))
        if m > 1:
            s1 = _dot(simd, s1, u, w.load_i8(rows, a1 + 64 * c))
            s2 = _dot(simd, s2, u, w.load_i8(rows, a2 + 64 * c))
            s3 = _dot(simd, s3, u, w.load_i8(rows, a3 + 64 * c))
    return w.reduce_add(s0), w.reduce_add(s1), w.reduce_add(s2), w.reduce_add(s3)


@njit(cache=True, nogil=True, inline="always")
def row_sum(values, rows, at, chunks, simd):
    """The int32 sum S of decoded bytes values (64 * chunks,) against the int8 query row
    rows[at: at + 64 * chunks], as int64 (`row_sums` for a vector already decoded to a buffer)."""
    s0 = w.zero_i32()
    for c in range(chunks):
        s0 = _dot(simd, s0, w.as_i32(w.load_i8(values, 64 * c)), w.load_i8(rows, at + 64 * c))
    return w.reduce_add(s0)


@njit(cache=True, nogil=True)
def exact_partial(raw, q, off, cents, dim):
    """off + sum_i q[i] * cents[raw[i]] in float64, four running sums over i mod 4 added as
    (s0 + s1) + (s2 + s3): the float scores every path and the NumPy twin agree on bit for bit."""
    s0 = 0.0
    s1 = 0.0
    s2 = 0.0
    s3 = 0.0
    i = 0
    while i + 4 <= dim:
        s0 += q[i] * np.float64(cents[raw[i]])
        s1 += q[i + 1] * np.float64(cents[raw[i + 1]])
        s2 += q[i + 2] * np.float64(cents[raw[i + 2]])
        s3 += q[i + 3] * np.float64(cents[raw[i + 3]])
        i += 4
    if i < dim:
        s0 += q[i] * np.float64(cents[raw[i]])
    if i + 1 < dim:
        s1 += q[i + 1] * np.float64(cents[raw[i + 1]])
    if i + 2 < dim:
        s2 += q[i + 2] * np.float64(cents[raw[i + 2]])
    return off + ((s0 + s1) + (s2 + s3))


@njit(cache=True, nogil=True, inline="always")
def _floor32(x):
    """The largest float32 <= x (float64): a float32 threshold that never skips a vector above x."""
    r = np.float32(x)
    if r > x:
        r = np.nextafter(r, np.float32(-np.inf))
    return r


@njit(cache=True, nogil=True, inline="always")
def _offer(heap_s, heap_i, thr, j, v, score):
    """Push (score, slot v) into query j's heap if it beats the root; thr[j] follows the root, rounded
    down to float32 so that the float32 comparison never skips a vector that would enter."""
    hs = heap_s[j]
    if score > hs[0]:
        heap_push(hs, heap_i[j], score, v)
        thr[j] = _floor32(hs[0])


@njit(cache=True, nogil=True)
def _exact_score(codes, factors, v, queries, q, book, cents, values, raw):
    """Vector v's exact score for query q: its codes decoded again (scalar: only vectors whose bound
    passes get here) into the scratch values, raw."""
    dim = queries.rotated.shape[1]
    decode_scalar(codes, v, dim, book.bits, book.decode, values, raw)
    bias = np.float64(factors[v, 1]) if factors.shape[1] > 1 else 0.0
    return np.float64(factors[v, 0]) * exact_partial(raw, queries.rotated[q], queries.off[q], cents, dim) + bias


class Pending(NamedTuple):
    """Deferred exact re-scoring of one query group's scan (exact mode), from `pending`.

    low_s, low_i  (G, k) min-heaps of the best lower bounds w * est + bias - |w| * E: their root
                  T is a lower bound of the k-th best exact score, and a vector whose upper
                  bound is below T can never enter the top k
    cand_v, cand_u (G, cap) candidates (slot, float32 upper bound) in slot order, count (G,)
    Re-scoring waits for the end of the range, when T is highest: far fewer vectors are scored
    exactly than when each is scored as its bound passes the running k-th best.
    """
    low_s: np.ndarray
    low_i: np.ndarray
    cand_v: np.ndarray
    cand_u: np.ndarray
    count: np.ndarray


@njit(cache=True, nogil=True)
def pending(gq, k):
    """An empty `Pending` for gq queries and top k."""
    cap = 4 * k + 64
    return Pending(np.full((gq, k), -np.inf), np.full((gq, k), -1, np.int64), np.empty((gq, cap), np.int64),
                   np.empty((gq, cap), np.float32), np.zeros(gq, np.int64))


@njit(cache=True, nogil=True)
def _settle(codes, factors, queries, book, cents, q0, j, p, thr, hs, hi_, values, raw):
    """Score exactly query j's candidates whose upper bound still reaches T (thr[j]), in slot order, into
    its exact heap (hs[j], hi_[j]); then it has none."""
    hsj = hs[j]
    for c in range(p.count[j]):
        if p.cand_u[j, c] >= thr[j]:
            v = p.cand_v[j, c]
            sc = _exact_score(codes, factors, v, queries, q0 + j, book, cents, values, raw)
            if sc > hsj[0]:
                heap_push(hsj, hi_[j], sc, v)
    p.count[j] = 0


@njit(cache=True, nogil=True, inline="always")
def _check(codes, factors, v, queries, book, cents, values, raw, q0, j, est, exact, hs, hi_, thr, p, wv, ev):
    """Vector v's float32 estimate (exact: upper bound) est reached thr[j], query q0 + j's threshold.

    Shortlist mode offers it to the heap by the estimate. Exact mode raises T by its lower bound
    est - 2 |w| E (less a slack for the float32 sums) and keeps it as a candidate; a full candidate
    list first drops those below T, then, if still full, is settled (`_settle`) at once.
    """
    if not exact:
        _offer(hs, hi_, thr, j, v, np.float64(est))
        return
    up = np.float64(est)
    low = up - 2.0 * np.float64(abs(wv)) * np.float64(ev) * (1.0 + 1e-6) - _F32_SLACK * abs(up)
    if low > p.low_s[j, 0]:
        _offer(p.low_s, p.low_i, thr, j, v, low)
    n = p.count[j]
    if n == p.cand_v.shape[1]:
        kept = 0
        for c in range(n):
            if p.cand_u[j, c] >= thr[j]:
                p.cand_v[j, kept] = p.cand_v[j, c]
                p.cand_u[j, kept] = p.cand_u[j, c]
                kept += 1
        p.count[j] = kept
        if kept == n:
            _settle(codes, factors, queries, book, cents, q0, j, p, thr, hs, hi_, values, raw)
        n = p.count[j]
    p.cand_v[j, n] = v
    p.cand_u[j, n] = est
    p.count[j] = n + 1


@njit(cache=True, nogil=True)
def _scan_few(codes, factors, queries, book, cents, q0, gq, lo, hi, exact, simd, hs, hi_):
    """`_scan_range` for the gq < `FEW` queries q0.. of a group: each decoded chunk meets up to four
    queries' int8 rows (`row_sums`), so no lane is wasted on absent queries (VBMI decode only)."""
    bits = book.bits
    chunks = queries.lanes.shape[1] // 16
    flat = codes.reshape(-1)
    raw = np.empty(64 * chunks, np.uint8)
    scratch = np.empty(64 * chunks, np.uint8)
    thr = np.full(GROUP, -np.inf, np.float32)
    a, b, e = queries.a, queries.b, queries.e
    table = book.decode
    t0, t1, t2, t3, sp, sh, mask = decoder(book)
    rows = queries.rows.reshape(-1)
    row_bytes = codes.shape[1]
    two = factors.shape[1] > 1
    at = np.empty(4, np.int64)
    p = pending(gq, hs.shape[1])
    for j0 in range(0, gq, 4):
        m = min(4, gq - j0)
        for j in range(4):   # past m: query j0 again, computed and ignored
            at[j] = (q0 + j0 + (j if j < m else 0)) * 64 * chunks
        for v in range(lo, hi):
            sums = row_sums(flat, v * row_bytes, row_bytes, bits, t0, t1, t2, t3, sp, sh, mask, rows, at,
                            1 if m == 1 else 4, chunks, simd)
            wv = np.float32(factors[v, 0])
            bias = np.float32(factors[v, 1]) if two else np.float32(0.0)
            for j in range(m):
                q = q0 + j0 + j
                est = wv * (a[q] + b[q] * np.float32(sums[j])) + bias
                if exact:
                    est += abs(wv) * e[q]
                if est >= thr[j0 + j]:
                    _check(codes, factors, v, queries, book, cents, scratch, raw, q0, j0 + j, est, exact, hs, hi_,
                           thr, p, wv, e[q])
    if exact:
        for j in range(gq):
            _settle(codes, factors, queries, book, cents, q0, j, p, thr, hs, hi_, scratch, raw)


@njit(cache=True, nogil=True)
def scan_one(codes, factors, queries, book, cents, q, lo, hi, shift, exact, simd, hs, hi_, scratch):
    """Rows lo..hi-1 of codes against query q alone into its heap (hs, hi_) (k,), with `shift` (float64)
    added to every score: an inverted list's <q, c_l> term. The heap may hold scores already (earlier
    lists): the float32 threshold starts at its root. scratch (3, 64 * chunks) uint8.

    With VBMI each chunk is decoded in registers and met by the query at once
    (`row_sums`); without, the scalar decode fills a buffer first.
    """
    dim = queries.rotated.shape[1]
    bits = book.bits
    chunks = queries.lanes.shape[1] // 16
    flat = codes.reshape(-1)
    values, raw, spare = scratch[0], scratch[1], scratch[2]
    thr = _floor32(hs[0] - shift)   # the threshold is on the unshifted estimate
    at = np.full(4, q * 64 * chunks, np.int64)
    rows = queries.rows.reshape(-1)
    t0, t1, t2, t3, sp, sh, mask = decoder(book)
    a, b, e = queries.a[q], queries.b[q], queries.e[q]
    row_bytes = codes.shape[1]
    two = factors.shape[1] > 1
    for v in range(lo, hi):
        if simd == 3:
            S = row_sums(flat, v * row_bytes, row_bytes, bits, t0, t1, t2, t3, sp, sh, mask, rows, at, 1, chunks,
                         simd)[0]
        else:
            decode_scalar(codes, v, dim, bits, book.decode, values, raw)
            S = row_sum(values, rows, at[0], chunks, simd)
        wv = np.float32(factors[v, 0])
        est = wv * (a + b * np.float32(S)) + (np.float32(factors[v, 1]) if two else np.float32(0.0))
        if exact:
            est += abs(wv) * e
        if est >= thr:
            if exact:
                sc = _exact_score(codes, factors, v, queries, q, book, cents, spare, raw)
            else:
                sc = np.float64(est)
            sc += shift
            if sc > hs[0]:
                heap_push(hs, hi_, sc, v)
                thr = _floor32(hs[0] - shift)


@njit(cache=True, nogil=True)
def _scan_group(codes, factors, queries, book, cents, g, gq, lo, hi, exact, simd, hs, hi_):
    """`_scan_range` for the gq queries of group g together: each decoded vector is shared among them in
    the lanes of one register (`group_sums`), and one float32 compare tests all 16 bounds."""
    dim = queries.rotated.shape[1]
    bits = book.bits
    quads = queries.lanes.shape[1]
    flat = codes.reshape(-1)
    q0 = g * GROUP
    values = np.empty(4 * quads, np.uint8)
    raw = np.empty(4 * quads, np.uint8)
    scratch = np.empty(4 * quads, np.uint8)
    thr = np.full(GROUP, np.inf, np.float32)   # lanes past the last query never pass
    for j in range(gq):
        thr[j] = -np.inf
    upper = np.empty(GROUP, np.float32)
    av = w.load_f32(queries.a, q0)
    bv = w.load_f32(queries.b, q0)
    ev = w.load_f32(queries.e, q0)
    table = book.decode
    t0, t1, t2, t3, sp, sh, mask = decoder(book)
    group_lanes = queries.lanes[g].reshape(-1)
    row_bytes = codes.shape[1]
    two = factors.shape[1] > 1
    p = pending(gq, hs.shape[1])
    for v in range(lo, hi):
        if simd == 3:
            decode_simd(flat, v * row_bytes, row_bytes, bits, t0, t1, t2, t3, sp, sh, mask, values)
        else:
            decode_scalar(codes, v, dim, bits, table, values, raw)
        s = group_sums(values, group_lanes, quads, simd)
        wv = np.float32(factors[v, 0])
        bias = np.float32(factors[v, 1]) if two else np.float32(0.0)
        est = w.fadd(w.fmul(w.splat_f32(wv), w.fadd(av, w.fmul(bv, w.to_float(s)))), w.splat_f32(bias))
        if exact:
            est = w.fadd(est, w.fmul(w.splat_f32(abs(wv)), ev))
        hits = w.ge_mask(est, w.load_f32(thr, 0))
        if hits == 0:
            continue
        w.store_wide(upper, 0, est)
        for j in range(gq):
            if (hits >> j) & 1:
                _check(codes, factors, v, queries, book, cents, scratch, raw, q0, j, upper[j], exact, hs, hi_, thr,
                       p, wv, queries.e[q0 + j])
    if exact:
        for j in range(gq):
            _settle(codes, factors, queries, book, cents, q0, j, p, thr, hs, hi_, scratch, raw)


@njit(cache=True, nogil=True)
def _scan_range(codes, factors, queries, book, cents, g, lo, hi, exact, simd, heap_s, heap_i):
    """Slots lo..hi-1 against query group g into the heaps heap_s, heap_i (nq, width) (see `search_dot`).

    A function of its own rather than the body of search_dot's prange (as a
    parfor body the same loop ran 1.5-2x slower), and the two ways to score
    apart, each a small function that LLVM keeps in registers.
    """
    nq = queries.rotated.shape[0]
    q0 = g * GROUP
    gq = min(GROUP, nq - q0)
    hs = heap_s[q0:q0 + gq]
    hi_ = heap_i[q0:q0 + gq]
    if gq < FEW and simd == 3:
        _scan_few(codes, factors, queries, book, cents, q0, gq, lo, hi, exact, simd, hs, hi_)
    else:
        _scan_group(codes, factors, queries, book, cents, g, gq, lo, hi, exact, simd, hs, hi_)


@njit(parallel=True, cache=True, nogil=True)
def search_dot(codes, factors, queries, book, cents, k, shortlist, n_chunks, exact, simd):
    """Top k of slots 0..n-1 for each query: scores (nq, k) float32 best first, slots (nq, k) int64.

    codes (n, code_bytes) uint8 packed `book.bits`-bit codes; factors (n, 1
    or 2) float32 (weight, bias); queries a `DotQueries`, book a
    `DotCodebook`; cents (2**bits,) float32 the float codebook. exact:
    re-score by the bound (the float top k); otherwise keep `shortlist`
    (>= k) by the estimate and return the best k of them by exact score.
    The database is cut into n_chunks ranges so that small batches use every
    thread (call under `numba.parallel_chunksize(1)`). simd: `simd_level`.
    """
    n = codes.shape[0]
    nq, dim = queries.rotated.shape
    ng = queries.lanes.shape[0]
    quads = queries.lanes.shape[1]
    width = k if exact else shortlist
    part_s = np.full((n_chunks, nq, width), -np.inf)
    part_i = np.full((n_chunks, nq, width), -1, np.int64)
    step = (n + n_chunks - 1) // n_chunks
    for t in prange(ng * n_chunks):
        g = t // n_chunks
        ch = t - g * n_chunks
        _scan_range(codes, factors, queries, book, cents, g, ch * step, min(n, (ch + 1) * step), exact, simd,
                    part_s[ch], part_i[ch])
    out_s = np.empty((nq, k), np.float32)
    out_i = np.empty((nq, k), np.int64)
    for q in prange(nq):
        cand_s = np.ascontiguousarray(part_s[:, q]).ravel()
        cand_i = np.ascontiguousarray(part_i[:, q]).ravel()
        if not exact:   # the shortlist by estimate: its exact scores
            values = np.empty(4 * quads, np.uint8)
            raw = np.empty(4 * quads, np.uint8)
            for c in range(cand_i.shape[0]):
                if cand_i[c] >= 0:
                    cand_s[c] = _exact_score(codes, factors, cand_i[c], queries, q, book, cents, values, raw)
        tmp = np.empty(k)
        sorted_topk(cand_s, cand_i, k, tmp, out_i[q])
        out_s[q] = tmp
    return out_s, out_i


def simd_level(kernel: str | None = None) -> int:
    """The `simd` argument of `search_dot` for `kernel` ("auto", "avx512", "avx2", "portable", or None:
    $TURBOANN_SIMD, else the best this CPU runs)."""
    level = SIMD_LEVELS[_simd.kernel_choice(kernel)]
    return 2 if level == 3 and not w.HAS_VBMI else level


@njit(parallel=True, cache=True, nogil=True)
def search_dot_lists(codes, factors, list_start, list_size, qc, cnorm2, probe_l2, list_bias_mult, nprobe,
                     queries, book, cents, k, exact, simd):
    """`search_dot` over the nprobe nearest inverted lists of each query (`ivf_scan.select_lists`).

    codes (arena, code_bytes) uint8 and factors (arena, nf) float32 are the
    list arena, list l rows [list_start[l], list_start[l] + list_size[l]);
    qc (nq, nlist) float32 = q . C^T, cnorm2 (nlist,) float32; a vector's
    score is its flat score plus list_bias_mult * qc[q, l]. Returns scores
    (nq, k) float32 best first and arena positions (nq, k) int64, -1 padded.
    exact=False: top k by estimate (a shortlist to re-rank).
    """
    nq = queries.rotated.shape[0]
    chunks = queries.lanes.shape[1] // 16
    out_s = np.empty((nq, k), np.float32)
    out_i = np.empty((nq, k), np.int64)
    for q in prange(nq):
        lists = np.empty(nprobe, np.int64)
        select_lists(qc[q], cnorm2, probe_l2, nprobe, lists)
        hs = np.full(k, -np.inf)
        hi = np.full(k, -1, np.int64)
        scratch = np.empty((3, 64 * chunks), np.uint8)
        for j in range(nprobe):
            l = lists[j]
            if l >= 0:
                scan_one(codes, factors, queries, book, cents, q, list_start[l], list_start[l] + list_size[l],
                         list_bias_mult * np.float64(qc[q, l]), exact, simd, hs, hi, scratch)
        tmp = np.empty(k)
        sorted_topk(hs, hi, k, tmp, out_i[q])
        out_s[q] = tmp
    return out_s, out_i
