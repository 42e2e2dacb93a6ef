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
top k (ties to the lower slot). Batches of query groups (`_scan_groups`)
bound each vector on its own instead: the query's rounding by Cauchy-
Schwarz against the vector's reconstruction norm, E_v = ||q - s_q q8|| *
N_v + (E's second term), N_v from its decoded bytes (`code_norm_bound`).
exact=False keeps the `shortlist` best by the estimate and returns the k
best of those by their exact scores.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit, prange

from . import _simd, _wide as w
from .ivf_scan import select_lists
from .topk import heap_push, heap_push_row, sorted_topk

GROUP = 16          # queries scored together: the int32 lanes of one 512-bit register
CHUNK = 64          # coordinates decoded together
TASKS_PER_THREAD = 4   # search_dot's tasks a thread: more balance, fewer decodes of each vector
BLOCK = 64          # vectors decoded together, for every query group of a task: 24 KB at d = 384
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
    resid, ec (n_groups * GROUP,) float32: the parts of a bound per vector, E_v = resid * N_v + ec,
             N_v >= ||c(code_v)|| (`code_norm_bound`): resid >= ||q - s_q q8||, and ec the
             codebook's rounding term with the float32 slack (E's second term). By Cauchy-Schwarz
             this bounds the rounding of the query by the vector's own norm rather than every
             coordinate's largest centroid (E's first term).
    rows     (nq, padded_dim) int8: the same int8 values, one row a query
    """
    rotated: np.ndarray
    off: np.ndarray
    lanes: np.ndarray
    rows: np.ndarray
    a: np.ndarray
    b: np.ndarray
    e: np.ndarray
    resid: np.ndarray
    ec: np.ndarray


@njit(cache=True, nogil=True)
def padded_dim(dim):
    """dim rounded up to whole chunks."""
    return -(-dim // CHUNK) * CHUNK


def dot_queries(qrot: np.ndarray, qoff: np.ndarray, book: DotCodebook) -> DotQueries:
    """Quantize rotated queries qrot (nq, dim) float32 with offsets qoff (nq,) to int8 lanes."""
    q = np.ascontiguousarray(qrot, dtype=np.float64)
    off = np.ascontiguousarray(qoff, dtype=np.float64)
    return DotQueries(q, off, *_quantize_queries(q, off, book.scale, book.cmax, book.err))


@njit(cache=True, nogil=True)
def _quantize_queries(q, off, c_scale, cmax, err):
    """`dot_queries`' arrays (lanes, rows, a, b, e) for q (nq, dim) float64, off (nq,) float64: one
    compiled pass (as NumPy expressions, a single query's preparation cost more than its scan of
    ten thousand vectors). q8 = round-half-even(q / s_q) with s_q = max|q| / 127."""
    nq, dim = q.shape
    ng = -(-nq // GROUP)
    dp = padded_dim(dim)
    rows = np.zeros((nq, dp), np.int8)
    lanes = np.zeros((ng, dp // 4, 64), np.int8)
    a = np.zeros(ng * GROUP, np.float32)
    b = np.zeros(ng * GROUP, np.float32)
    e = np.zeros(ng * GROUP, np.float32)
    resid = np.zeros(ng * GROUP, np.float32)
    ec = np.zeros(ng * GROUP, np.float32)
    for r in range(nq):
        qmax = 0.0
        for i in range(dim):
            qmax = max(qmax, abs(q[r, i]))
        sq = qmax / 127.0 if qmax > 0 else 1.0
        total = 0.0      # sum q8, exact
        magnitude = 0.0  # sum |q8|, exact
        rounding = 0.0   # sum |q - s_q q8|
        squares = 0.0    # sum (q - s_q q8)**2
        g, j = divmod(r, GROUP)
        for i in range(dim):
            x = min(max(np.rint(q[r, i] / sq), -127.0), 127.0)
            rows[r, i] = np.int8(x)
            lanes[g, i // 4, 4 * j + i % 4] = np.int8(x)
            total += x
            magnitude += abs(x)
            left = q[r, i] - sq * x
            rounding += abs(left)
            squares += left * left
        scale = sq * c_scale
        a[r] = off[r] - scale * 128.0 * total
        b[r] = scale
        codebook = sq * magnitude * err
        # float32 evaluation of a + b * S: widen by the slack of its largest magnitude
        slack = _F32_SLACK * (abs(off[r]) + scale * 255.0 * magnitude + abs(np.float64(a[r])))
        e[r] = (rounding * cmax + codebook + slack) * (1 + 1e-6)
        # (1 + 1e-5): the float32 products and sum of resid * N_v + ec round by a few 2**-24
        resid[r] = np.sqrt(squares) * (1 + 1e-5)
        ec[r] = (codebook + slack) * (1 + 1e-5)
    return lanes, rows, a, b, e, resid, ec


# -- decoding --------------------------------------------------------------------------

@njit(cache=True, nogil=True)
def decode_codes(codes, v, dim, bits, raw):
    """Row v of codes (n, code_bytes) uint8: raw[i] = code of coordinate i for i < dim, 0 up to raw's
    length (without SIMD).

    Eight coordinates take exactly `bits` bytes: each such group is gathered into one 64-bit word
    and its codes shifted out of it, rather than two bytes read and a branch taken per coordinate.
    """
    mask = np.uint64((1 << bits) - 1)
    nbytes = codes.shape[1]
    full = dim // 8
    for g in range(full):
        base = g * bits
        x = np.uint64(0)
        for t in range(bits):
            x |= np.uint64(codes[v, base + t]) << np.uint64(8 * t)
        for t in range(8):
            raw[8 * g + t] = np.uint8((x >> np.uint64(t * bits)) & mask)
    for i in range(8 * full, dim):
        p = i * bits
        byte = p >> 3
        x32 = np.int32(codes[v, byte])
        if byte + 1 < nbytes:
            x32 |= np.int32(codes[v, byte + 1]) << 8
        raw[i] = (x32 >> (p & 7)) & ((1 << bits) - 1)
    for i in range(dim, raw.shape[0]):
        raw[i] = 0


@njit(cache=True, nogil=True)
def decode_scalar(codes, v, dim, bits, table, values, raw, start=0):
    """Row v of codes (n, code_bytes) uint8: raw[i] = code of coordinate i, values[start + i] =
    table[code], for i < dim; 0 and table[0] up to raw's length (`decode_codes`, then the table).
    An offset rather than a slice of values: a view a vector took a reference count."""
    decode_codes(codes, v, dim, bits, raw)
    for i in range(raw.shape[0]):
        values[start + i] = table[raw[i]]


@njit(cache=True, nogil=True, inline="always")
def decoder(book):
    """The registers `decode_chunk` takes, from a `DotCodebook`: (t0, t1, t2, t3, spread, shifts, mask)."""
    table = book.decode
    return (w.load_i8(table, 0), w.load_i8(table, 64), w.load_i8(table, 128), w.load_i8(table, 192),
            w.load_i8(book.spread, 0), w.load_i8(book.shifts, 0), w.splat8((1 << book.bits) - 1))


@njit(cache=True, nogil=True, inline="always")
def chunk_codes(flat, start, count, bits, spread, shifts, mask):
    """The codes of the chunk whose `count` packed bytes start at flat[start], one a byte, as u8x64
    (VBMI; spread, shifts, mask as `decode_chunk` takes them)."""
    x = w.load_bytes(flat, start, max(count, 0))
    if bits < 8:
        x = w.and8(w.multishift(shifts, w.permute64(x, spread)), mask)
    return x


@njit(cache=True, nogil=True, inline="always")
def decode_chunk(flat, start, count, bits, t0, t1, t2, t3, spread, shifts, mask):
    """(code bytes, decoded bytes) as two u8x64 of the chunk whose `count` (<= 8 * bits) packed bytes
    start at flat[start] (VBMI; see the module docstring).

    t0..t3: the decode table's four 64-entry quarters, spread and shifts
    (`DotCodebook`) and mask (2**bits - 1 in every byte), as u8x64.
    """
    x = chunk_codes(flat, start, count, bits, spread, shifts, mask)
    if bits <= 6:
        y = w.permute64(t0, x)
    elif bits == 7:
        y = w.permute128(t0, x, t1)
    else:
        y = w.select_high(x, w.permute128(t0, x, t1), w.permute128(t2, x, t3))
    return x, y


@njit(cache=True, nogil=True, inline="always")
def decode_simd(flat, row_start, row_bytes, bits, t0, t1, t2, t3, spread, shifts, mask, values, start, count):
    """The decoded bytes of `decode_scalar`, into values[start: start + count] (count: a multiple of
    `CHUNK`), for the row at flat[row_start:] (VBMI; arguments as in `decode_chunk`). An offset
    rather than a slice: a view a vector took a reference count."""
    step = 8 * bits
    ch = 0
    for at in range(start, start + count, CHUNK):
        x, y = decode_chunk(flat, row_start + ch * step, row_bytes - ch * step, bits, t0, t1, t2, t3, spread,
                            shifts, mask)
        w.store_wide(values, at, y)
        ch += 1


# -- scoring -----------------------------------------------------------------------------

@njit(cache=True, nogil=True, inline="always")
def code_norm_bound(values, start, count, simd, scale, err_norm):
    """N >= ||c(code)||, float32, from a vector's decoded bytes values[start: start + count] (u8,
    u = c8 + 128; count a multiple of 64): ||c|| <= s_c ||c8|| + ||c - s_c c8|| <= scale *
    sqrt(sum (u - 128)**2) + err_norm, with err_norm >= sqrt(dim) * max|c - s_c c8|. Bytes past
    the code's coordinates only add squares: N stays an upper bound.

    sum (u - 128)**2 = sum u (u - 128) - 128 sum u + 128**2 count, two dot products (u - 128 is u
    with its top bit flipped, read as int8)."""
    flip = w.splat8(128)
    one = w.splat8(1)
    s0 = w.zero_i32()
    s1 = w.zero_i32()
    for at in range(start, start + count, CHUNK):
        u = w.load_i8(values, at)
        s0 = _dot(simd, s0, w.as_i32(u), w.xor8(u, flip))
        s1 = _dot(simd, s1, w.as_i32(u), one)
    squares = w.reduce_add(s0) - 128 * w.reduce_add(s1) + 16384 * count
    return np.float32((scale * np.sqrt(np.float64(squares)) + err_norm) * (1 + 1e-6))


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
def group_sums(values, base, flat, at, quads, simd):
    """The int32 sums S of one decoded vector against the 16 queries whose lanes start at flat[at]
    (i32x16), with the dot-product instruction of level `simd` (`_dot`).

    values[base: base + 4 * quads]: the vector's decoded bytes; flat[at: at +
    quads * 64] (int8): the group's lanes raveled.
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
        s0 = _dot(simd, s0, w.broadcast_dword(values, base + 4 * c), w.load_i8(flat, at + 64 * c))
        s1 = _dot(simd, s1, w.broadcast_dword(values, base + 4 * c + 4), w.load_i8(flat, at + 64 * c + 64))
        s2 = _dot(simd, s2, w.broadcast_dword(values, base + 4 * c + 8), w.load_i8(flat, at + 64 * c + 128))
        s3 = _dot(simd, s3, w.broadcast_dword(values, base + 4 * c + 12), w.load_i8(flat, at + 64 * c + 192))
        s4 = _dot(simd, s4, w.broadcast_dword(values, base + 4 * c + 16), w.load_i8(flat, at + 64 * c + 256))
        s5 = _dot(simd, s5, w.broadcast_dword(values, base + 4 * c + 20), w.load_i8(flat, at + 64 * c + 320))
        s6 = _dot(simd, s6, w.broadcast_dword(values, base + 4 * c + 24), w.load_i8(flat, at + 64 * c + 384))
        s7 = _dot(simd, s7, w.broadcast_dword(values, base + 4 * c + 28), w.load_i8(flat, at + 64 * c + 448))
        c += 8
    while c < quads:
        s0 = _dot(simd, s0, w.broadcast_dword(values, base + 4 * c), w.load_i8(flat, at + 64 * c))
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
        if m > 1:
            s0 = _dot(simd, s0, u, w.load_i8(rows, a0 + 64 * c))
            s1 = _dot(simd, s1, u, w.load_i8(rows, a1 + 64 * c))
            s2 = _dot(simd, s2, u, w.load_i8(rows, a2 + 64 * c))
            s3 = _dot(simd, s3, u, w.load_i8(rows, a3 + 64 * c))
        elif c & 1:   # one query: two sums, so that each vpdpbusd waits for the one before last
            s1 = _dot(simd, s1, u, w.load_i8(rows, a0 + 64 * c))
        else:
            s0 = _dot(simd, s0, u, w.load_i8(rows, a0 + 64 * c))
    if m == 1:
        return w.reduce_add(w.add_i32(s0, s1)), 0, 0, 0
    return w.reduce_add(s0), w.reduce_add(s1), w.reduce_add(s2), w.reduce_add(s3)


@njit(cache=True, nogil=True, inline="always")
def row_sum(values, rows, at, chunks, simd):
    """The int32 sum S of decoded bytes values (64 * chunks,) against the int8 query row
    rows[at: at + 64 * chunks], as int64 (`row_sums` for a vector already decoded to a buffer)."""
    s0 = w.zero_i32()
    for c in range(chunks):
        s0 = _dot(simd, s0, w.as_i32(w.load_i8(values, 64 * c)), w.load_i8(rows, at + 64 * c))
    return w.reduce_add(s0)


@njit(cache=True, nogil=True, inline="always")
def exact_partial(raw, q, off, cents, dim):
    """off + sum_i q[i] * cents[raw[i]] in float64, four running sums over i mod 4 added as
    (s0 + s1) + (s2 + s3): the float scores every path and the NumPy twin agree on bit for bit.
    Inlined: called once a candidate, a call took a reference count on each of its three arrays."""
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
    """The largest float32 <= x (float64), or one a few ulps below it: a float32 threshold that never
    skips a vector above x. (np.nextafter is a library call, and thresholds move on every push.)"""
    r = np.float32(x)
    if r > x:
        # x * (1 -+ 2**-22) lies over an ulp below x, so rounding it cannot land above x
        r = np.float32(x * (1.0 - 2.0 ** -22)) if x > 0 else np.float32(x * (1.0 + 2.0 ** -22))
        if r > x:   # float32 underflow near 0
            r = np.float32(-np.inf) if x < 0 else np.float32(0.0)
    return r


@njit(cache=True, nogil=True, inline="always")
def _offer(heap_s, heap_i, thr, j, v, score):
    """Push (score, slot v) into row j of the min-heaps (heap_s, heap_i) (rows, k) if it beats the root;
    thr[j] follows the root, rounded down to float32 so that the float32 comparison never skips a
    vector that would enter."""
    if score > heap_s[j, 0]:
        heap_push_row(heap_s, heap_i, j, score, v)
        thr[j] = _floor32(heap_s[j, 0])


@njit(cache=True, nogil=True, inline="always")
def _copy_column(blocks, v, out, row):
    """Vector v's column of fast-scan blocks (n_blocks, rows, 32) into out[row]: its row-major code (at
    1, 2 and 4 bits the block column is the row-major code)."""
    b = v // 32
    lane = v - 32 * b
    for r in range(blocks.shape[1]):
        out[row, r] = blocks[b, r, lane]


@njit(cache=True, nogil=True, inline="always")
def _exact_score(codes, flat, row, factors, v, q, off, cents, bits, raw, simd, spread, shifts, mask):
    """Vector v's exact score for the rotated query q (dim,) float64 with offset off: its code, row `row`
    of codes (or of a column copied by `_copy_column`; flat: codes raveled), decoded again into
    the scratch raw (padded_dim,) uint8, in registers with VBMI (spread, shifts, mask as
    `decode_chunk` takes them), else by `decode_codes`. Arrays only, and made by the caller: a
    function handed the NamedTuples, or a reshape here, paid a reference count on each of their
    arrays per candidate."""
    dim = q.shape[0]
    if simd == 3:
        row_bytes = codes.shape[1]
        step = 8 * bits
        for ch in range(raw.shape[0] // CHUNK):
            w.store_wide(raw, ch * CHUNK, chunk_codes(flat, row * row_bytes + ch * step, row_bytes - ch * step, bits,
                                                      spread, shifts, mask))
    else:
        decode_codes(codes, row, dim, bits, raw)
    bias = np.float64(factors[v, 1]) if factors.shape[1] > 1 else 0.0
    return np.float64(factors[v, 0]) * exact_partial(raw, q, off, cents, dim) + bias


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
def _settle(codes, blocks, factors, queries, book, cents, q0, j, p, thr, hs, hi_, raw, simd):
    """Score exactly query j's candidates whose upper bound still reaches T (thr[j]), in slot order, into
    its exact heap (hs[j], hi_[j]); then it has none."""
    hsj = hs[j]
    his = hi_[j]
    q = queries.rotated[q0 + j]
    off = queries.off[q0 + j]
    t0, t1, t2, t3, sp, sh, mask = decoder(book)
    cand_v, cand_u = p.cand_v[j], p.cand_u[j]
    t = thr[j]
    tmp = np.empty((1, blocks.shape[1]), np.uint8)
    flat, tmp_flat = codes.reshape(-1), tmp.reshape(-1)
    from_blocks = blocks.shape[0] > 0
    for c in range(p.count[j]):
        if cand_u[c] >= t:
            v = cand_v[c]
            if from_blocks:
                _copy_column(blocks, v, tmp, 0)
                sc = _exact_score(tmp, tmp_flat, 0, factors, v, q, off, cents, book.bits, raw, simd, sp, sh, mask)
            else:
                sc = _exact_score(codes, flat, v, factors, v, q, off, cents, book.bits, raw, simd, sp, sh, mask)
            if sc > hsj[0]:
                heap_push(hsj, his, sc, v)
    p.count[j] = 0


@njit(cache=True, nogil=True, inline="always")
def _candidate(low_s, low_i, cand_v, cand_u, count, thr, j, v, up, wv, ev):
    """Exact mode: vector v's float32 upper bound `up` reached thr[j] (query j of the group).

    Raises T (the root of the lower-bound heap row j, followed by thr[j]) by its lower bound
    up - 2 |w| E (less a slack for the float32 sums) and keeps it as a candidate. A full candidate
    list first drops those below T; returns True when it is still full: then v is not kept, and the
    caller settles the list (`_settle`) and keeps v (`_keep`).
    The arrays are a `Pending`'s, unpacked: a per-hit function handed whole NamedTuples of arrays
    paid a reference count on each of their arrays per hit, several times the cost of the push.
    """
    u = np.float64(up)
    low = u - 2.0 * np.float64(abs(wv)) * np.float64(ev) * (1.0 + 1e-6) - _F32_SLACK * abs(u)
    _offer(low_s, low_i, thr, j, v, low)
    n = count[j]
    if n == cand_v.shape[1]:
        kept = 0
        for c in range(n):
            if cand_u[j, c] >= thr[j]:
                cand_v[j, kept] = cand_v[j, c]
                cand_u[j, kept] = cand_u[j, c]
                kept += 1
        count[j] = kept
        if kept == n:
            return True
    _keep(cand_v, cand_u, count, j, v, up)
    return False


@njit(cache=True, nogil=True, inline="always")
def _keep(cand_v, cand_u, count, j, v, up):
    """Append candidate (slot v, float32 upper bound up) to row j of a `Pending`'s lists."""
    n = count[j]
    cand_v[j, n] = v
    cand_u[j, n] = up
    count[j] = n + 1


@njit(cache=True, nogil=True)
def _scan_few(codes, blocks, factors, queries, book, cents, q0, gq, lo, hi, exact, simd, allowed, hs, hi_):
    """`_scan_range` for the gq < `FEW` queries q0.. of a group: each decoded chunk meets up to four
    queries' int8 rows (`row_sums`), so no lane is wasted on absent queries (VBMI decode, row-major
    codes only: blocks is empty). allowed: (n,) uint8 or empty (no filter)."""
    bits = book.bits
    chunks = queries.lanes.shape[1] // 16
    flat = codes.reshape(-1)
    raw = np.empty(64 * chunks, np.uint8)
    thr = np.full(GROUP, -np.inf, np.float32)
    a, b, e = queries.a, queries.b, queries.e
    t0, t1, t2, t3, sp, sh, mask = decoder(book)
    rows = queries.rows.reshape(-1)
    row_bytes = codes.shape[1]
    two = factors.shape[1] > 1
    at = np.empty(4, np.int64)
    p = pending(gq, hs.shape[1])
    low_s, low_i, cand_v, cand_u, count = p
    filtered = allowed.shape[0] > 0
    for j0 in range(0, gq, 4):
        m = min(4, gq - j0)
        for j in range(4):   # past m: query j0 again, computed and ignored
            at[j] = (q0 + j0 + (j if j < m else 0)) * 64 * chunks
        for v in range(lo, hi):
            if filtered and allowed[v] == 0:
                continue
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
                    if not exact:
                        _offer(hs, hi_, thr, j0 + j, v, np.float64(est))
                    elif _candidate(low_s, low_i, cand_v, cand_u, count, thr, j0 + j, v, est, wv, e[q]):
                        _settle(codes, blocks, factors, queries, book, cents, q0, j0 + j, p, thr, hs, hi_, raw, simd)
                        _keep(cand_v, cand_u, count, j0 + j, v, est)
    if exact:
        for j in range(gq):
            _settle(codes, blocks, factors, queries, book, cents, q0, j, p, thr, hs, hi_, raw, simd)


@njit(cache=True, nogil=True)
def scan_one(codes, factors, queries, book, cents, q, lo, hi, shift, exact, simd, allowed, hs, hi_, scratch):
    """Rows lo..hi-1 of codes against query q alone into its heap (hs, hi_) (k,), with `shift` (float64)
    added to every score: an inverted list's <q, c_l> term. The heap may hold scores already (earlier
    lists): the float32 threshold starts at its root. scratch (2, 64 * chunks) uint8. allowed: (rows,)
    uint8 or empty (no filter).

    With VBMI each chunk is decoded in registers and met by the query at once
    (`row_sums`); without, the scalar decode fills a buffer first.
    """
    dim = queries.rotated.shape[1]
    bits = book.bits
    chunks = queries.lanes.shape[1] // 16
    flat = codes.reshape(-1)
    values, raw = scratch[0], scratch[1]
    thr = _floor32(hs[0] - shift)   # the threshold is on the unshifted estimate
    at = np.full(4, q * 64 * chunks, np.int64)
    rows = queries.rows.reshape(-1)
    t0, t1, t2, t3, sp, sh, mask = decoder(book)
    a, b, e = queries.a[q], queries.b[q], queries.e[q]
    qr, qo = queries.rotated[q], queries.off[q]
    row_bytes = codes.shape[1]
    two = factors.shape[1] > 1
    filtered = allowed.shape[0] > 0
    for v in range(lo, hi):
        if filtered and allowed[v] == 0:
            continue
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
                sc = _exact_score(codes, flat, v, factors, v, qr, qo, cents, bits, raw, simd, sp, sh, mask)
            else:
                sc = np.float64(est)
            sc += shift
            if sc > hs[0]:
                heap_push(hs, hi_, sc, v)
                thr = _floor32(hs[0] - shift)


@njit(cache=True, nogil=True, inline="always")
def _block_hits(buf, dp, b0, b1, lanes, at, quads, av, bv, rv, cv, norms, factors, thr, r0, exact, simd, allowed,
                hit_v, hit_mask, hit_est, h0):
    """Score the decoded block buf (rows b0..b1-1 at [(v - b0) * dp:]) against one query group: its lanes
    lanes[at: at + quads * 64] (int8) and a, b, resid, ec as f32x16 (`DotQueries`), norms (BLOCK,)
    float32 the vectors' `code_norm_bound`; record each vector whose estimate (exact: upper bound
    with E_v = resid * N_v + ec) reaches a threshold of thr[r0: r0 + 16] into hit_v, hit_mask,
    hit_est from hit h0 on. Returns the number of hits. allowed: (n,) uint8 or empty (no filter)."""
    two = factors.shape[1] > 1
    filtered = allowed.shape[0] > 0
    t = w.load_f32(thr, r0)
    n_hits = 0
    for v in range(b0, b1):
        if filtered and allowed[v] == 0:
            continue
        s = group_sums(buf, (v - b0) * dp, lanes, at, quads, simd)
        wv = np.float32(factors[v, 0])
        bias = np.float32(factors[v, 1]) if two else np.float32(0.0)
        est = w.fadd(w.fmul(w.splat_f32(wv), w.fadd(av, w.fmul(bv, w.to_float(s)))), w.splat_f32(bias))
        if exact:
            ev = w.fadd(w.fmul(rv, w.splat_f32(norms[v - b0])), cv)
            est = w.fadd(est, w.fmul(w.splat_f32(abs(wv)), ev))
        hits = w.ge_mask(est, t)
        if hits != 0:
            w.store_wide(hit_est, 16 * (h0 + n_hits), est)
            hit_v[h0 + n_hits] = v
            hit_mask[h0 + n_hits] = hits
            n_hits += 1
    return n_hits


@njit(cache=True, nogil=True)
def _scan_groups(codes, blocks, factors, queries, book, cents, g0, g1, lo, hi, exact, simd, allowed, hs, hi_):
    """`_scan_range` for query groups g0..g1-1: the range is decoded a block of `BLOCK` vectors at a
    time (once for all these groups), and each group's 16 queries share each decoded vector in the
    lanes of one register (`group_sums`); one float32 compare tests all 16 bounds. The hits of
    every group are recorded, then taken in one call a block (`_drain`): a call a group and block
    paid a reference count on each of its arrays.

    hs, hi_ (rows, width): the heaps of queries g0 * 16 .. on. Blocks with no allowed vector are
    neither decoded nor scored. With `blocks` non-empty the codes come from fast-scan's layout
    (`_copy_column`): each block's columns are copied to rows once, for all the task's groups.
    """
    nq, dim = queries.rotated.shape
    bits = book.bits
    quads = queries.lanes.shape[1]
    dp = 4 * quads
    from_blocks = blocks.shape[0] > 0
    row_bytes = blocks.shape[1] if from_blocks else codes.shape[1]
    src = np.empty((BLOCK, row_bytes), np.uint8) if from_blocks else codes
    flat = src.reshape(-1)
    lanes = queries.lanes.reshape(-1)   # group g's lanes from g * quads * 64
    q0 = g0 * GROUP
    rows = min(nq, g1 * GROUP) - q0
    buf = np.empty(BLOCK * dp, np.uint8)
    raw = np.empty(dp, np.uint8)
    thr = np.full((g1 - g0) * GROUP, np.inf, np.float32)   # lanes past the last query never pass
    thr[:rows] = -np.inf
    # Group g's hits of a block from (g - g0) * BLOCK on: n_hits[g - g0] of them.
    hit_v = np.empty((g1 - g0) * BLOCK, np.int64)
    hit_mask = np.empty((g1 - g0) * BLOCK, np.int64)
    hit_est = np.empty((g1 - g0) * GROUP * BLOCK, np.float32)
    n_hits = np.zeros(g1 - g0, np.int64)
    norms = np.zeros(BLOCK, np.float32)   # the block's `code_norm_bound`s (exact mode)
    err_norm = np.sqrt(np.float64(dim)) * book.err
    table = book.decode
    t0, t1, t2, t3, sp, sh, mask = decoder(book)
    p = pending(rows, hs.shape[1])
    filtered = allowed.shape[0] > 0
    for b0 in range(lo, hi, BLOCK):
        b1 = min(hi, b0 + BLOCK)
        if filtered:
            some = False
            for v in range(b0, b1):
                if allowed[v] != 0:
                    some = True
                    break
            if not some:
                continue
        # Only allowed vectors are copied and decoded (`_block_hits` reads no other): a sparse
        # filter leaves about one a block.
        for v in range(b0, b1):
            if filtered and allowed[v] == 0:
                continue
            if from_blocks:
                _copy_column(blocks, v, src, v - b0)
            row = v - b0 if from_blocks else v
            if simd == 3:
                decode_simd(flat, row * row_bytes, row_bytes, bits, t0, t1, t2, t3, sp, sh, mask, buf, (v - b0) * dp,
                            dp)
            else:
                decode_scalar(src, row, dim, bits, table, buf, raw, (v - b0) * dp)
            if exact:
                norms[v - b0] = code_norm_bound(buf, (v - b0) * dp, dp, simd, book.scale, err_norm)
        some = False
        for g in range(g0, g1):
            r0 = (g - g0) * GROUP
            n_hits[g - g0] = _block_hits(buf, dp, b0, b1, lanes, g * quads * 64, quads,
                                         w.load_f32(queries.a, g * GROUP), w.load_f32(queries.b, g * GROUP),
                                         w.load_f32(queries.resid, g * GROUP), w.load_f32(queries.ec, g * GROUP),
                                         norms, factors, thr, r0, exact, simd, allowed, hit_v, hit_mask, hit_est,
                                         (g - g0) * BLOCK)
            some = some or n_hits[g - g0] > 0
        if some:
            _drain(codes, blocks, factors, queries, book, cents, q0, rows, exact, hit_v, hit_mask, hit_est, n_hits,
                   norms, b0, hs, hi_, thr, p, raw, simd)
    if exact:
        for j in range(rows):
            _settle(codes, blocks, factors, queries, book, cents, q0, j, p, thr, hs, hi_, raw, simd)


@njit(cache=True, nogil=True)
def _drain(codes, blocks, factors, queries, book, cents, q0, rows, exact, hit_v, hit_mask, hit_est, n_hits, norms,
           b0, hs, hi_, thr, p, raw, simd):
    """Take the hits of a block (`_scan_groups`), group by group and in slot order within a group:
    group i's n_hits[i] from hit i * BLOCK on, hit_v slots, hit_mask their passing lanes, hit_est
    (16 per hit) float32 their estimates (exact: upper bounds with E_v = resid * N_v + ec, N_v =
    norms[v - b0]), for rows 16 i.. of hs, thr and p (queries q0 + 16 i ..; rows of them in all).
    Each lane is tested again: thresholds rise as earlier hits are taken.

    The scan loop only records its hits: handled in the loop, their heap work cost it registers and
    reference counts on every hit, about 3x the cost of the pushes themselves.
    """
    low_s, low_i, cand_v, cand_u, count = p
    resid, ec = queries.resid, queries.ec
    for i in range(n_hits.shape[0]):
        r0 = i * GROUP
        gq = min(GROUP, rows - r0)
        for h in range(i * BLOCK, i * BLOCK + n_hits[i]):
            v = hit_v[h]
            hits = hit_mask[h]
            wv = np.float32(factors[v, 0])
            for lane in range(gq):
                if (hits >> lane) & 1:
                    j = r0 + lane
                    up = hit_est[16 * h + lane]
                    if up < thr[j]:
                        continue
                    if not exact:
                        _offer(hs, hi_, thr, j, v, np.float64(up))
                    elif _candidate(low_s, low_i, cand_v, cand_u, count, thr, j, v, up, wv,
                                    resid[q0 + j] * norms[v - b0] + ec[q0 + j]):
                        _settle(codes, blocks, factors, queries, book, cents, q0, j, p, thr, hs, hi_, raw, simd)
                        _keep(cand_v, cand_u, count, j, v, up)


@njit(cache=True, nogil=True)
def _scan_range(codes, blocks, factors, queries, book, cents, g0, g1, lo, hi, exact, simd, allowed, heap_s,
                heap_i):
    """Slots lo..hi-1 against query groups g0..g1-1 into the heaps heap_s, heap_i (nq, width) (see
    `search_dot`).

    A function of its own rather than the body of search_dot's prange (as a
    parfor body the same loop ran 1.5-2x slower), and the two ways to score
    apart, each a small function that LLVM keeps in registers.
    """
    nq = queries.rotated.shape[0]
    q0 = g0 * GROUP
    q1 = min(nq, g1 * GROUP)
    hs = heap_s[q0:q1]
    hi_ = heap_i[q0:q1]
    if q1 - q0 < FEW and simd == 3 and blocks.shape[0] == 0:
        _scan_few(codes, blocks, factors, queries, book, cents, q0, q1 - q0, lo, hi, exact, simd, allowed, hs, hi_)
    else:
        _scan_groups(codes, blocks, factors, queries, book, cents, g0, g1, lo, hi, exact, simd, allowed, hs, hi_)


@njit(parallel=True, cache=True, nogil=True)
def search_dot(codes, factors, queries, book, cents, k, shortlist, n_chunks, exact, simd, allowed=None, threads=1,
               blocks=None, n_blocked=0):
    """Top k of slots 0..n-1 for each query: scores (nq, k) float32 best first, slots (nq, k) int64,
    -1 padded.

    codes (n, code_bytes) uint8 packed `book.bits`-bit codes; factors (n, 1
    or 2) float32 (weight, bias); queries a `DotQueries`, book a
    `DotCodebook`; cents (2**bits,) float32 the float codebook. exact:
    re-score by the bound (the float top k); otherwise keep `shortlist`
    (>= k) by the estimate and return the best k of them by exact score.
    The database is cut into n_chunks ranges so that small batches use every
    thread (call under `numba.parallel_chunksize(1)`). simd: `simd_level`.
    allowed: None, or (n,) uint8 with 1 where a slot may be returned: the
    others are never scored, and blocks with none allowed are skipped.

    Query groups are batched so that a task decodes each vector once for
    all its groups: one batch on one thread, else batches small enough for
    `TASKS_PER_THREAD` tasks for each of the `threads` the caller runs
    (numba.get_num_threads() read here would stop the kernel from being
    cached).

    blocks: None, or the n_blocked vectors' codes in fast-scan's layout
    (n_blocks, rows, 32) uint8 at 1, 2 or 4 bits (`kernels.fastscan`), whose
    columns are the row-major codes; codes is then (0, rows), unused.
    """
    filt = np.empty(0, np.uint8) if allowed is None else allowed
    blk = np.empty((0, codes.shape[1], 32), np.uint8) if blocks is None else blocks
    n = codes.shape[0] if blocks is None else n_blocked
    nq, dim = queries.rotated.shape
    ng = queries.lanes.shape[0]
    quads = queries.lanes.shape[1]
    width = k if exact else shortlist
    per_batch = ng if threads <= 1 else max(1, ng * n_chunks // (TASKS_PER_THREAD * threads))
    n_batches = -(-ng // per_batch)
    part_s = np.full((n_chunks, nq, width), -np.inf)
    part_i = np.full((n_chunks, nq, width), -1, np.int64)
    step = (n + n_chunks - 1) // n_chunks
    for t in prange(n_batches * n_chunks):
        bt = t // n_chunks
        ch = t - bt * n_chunks
        _scan_range(codes, blk, factors, queries, book, cents, bt * per_batch, min(ng, (bt + 1) * per_batch),
                    ch * step, min(n, (ch + 1) * step), exact, simd, filt, part_s[ch], part_i[ch])
    out_s = np.empty((nq, k), np.float32)
    out_i = np.empty((nq, k), np.int64)
    for q in prange(nq):
        cand_s = np.ascontiguousarray(part_s[:, q]).ravel()
        cand_i = np.ascontiguousarray(part_i[:, q]).ravel()
        if not exact:   # the shortlist by estimate: its exact scores
            raw = np.empty(4 * quads, np.uint8)
            tmp = np.empty((1, blk.shape[1]), np.uint8)
            flat, tmp_flat = codes.reshape(-1), tmp.reshape(-1)
            qr, qo = queries.rotated[q], queries.off[q]
            t0, t1, t2, t3, sp, sh, mask = decoder(book)
            for c in range(cand_i.shape[0]):
                v = cand_i[c]
                if v >= 0:
                    if blk.shape[0] > 0:
                        _copy_column(blk, v, tmp, 0)
                        cand_s[c] = _exact_score(tmp, tmp_flat, 0, factors, v, qr, qo, cents, book.bits, raw, simd,
                                                 sp, sh, mask)
                    else:
                        cand_s[c] = _exact_score(codes, flat, v, factors, v, qr, qo, cents, book.bits, raw, simd,
                                                 sp, sh, mask)
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
                     queries, book, cents, k, exact, simd, allowed=None):
    """`search_dot` over the nprobe nearest inverted lists of each query (`ivf_scan.select_lists`).

    codes (arena, code_bytes) uint8 and factors (arena, nf) float32 are the
    list arena, list l rows [list_start[l], list_start[l] + list_size[l]);
    qc (nq, nlist) float32 = q . C^T, cnorm2 (nlist,) float32; a vector's
    score is its flat score plus list_bias_mult * qc[q, l]. Returns scores
    (nq, k) float32 best first and arena positions (nq, k) int64, -1 padded.
    exact=False: top k by estimate (a shortlist to re-rank). allowed: None,
    or (arena,) uint8 with 1 where a position may be returned.
    """
    filt = np.empty(0, np.uint8) if allowed is None else allowed
    nq = queries.rotated.shape[0]
    chunks = queries.lanes.shape[1] // 16
    out_s = np.empty((nq, k), np.float32)
    out_i = np.empty((nq, k), np.int64)
    for q in prange(nq):
        lists = np.empty(nprobe, np.int64)
        select_lists(qc[q], cnorm2, probe_l2, nprobe, lists)
        hs = np.full(k, -np.inf)
        hi = np.full(k, -1, np.int64)
        scratch = np.empty((2, 64 * chunks), np.uint8)
        for j in range(nprobe):
            l = lists[j]
            if l >= 0:
                scan_one(codes, factors, queries, book, cents, q, list_start[l], list_start[l] + list_size[l],
                         list_bias_mult * np.float64(qc[q, l]), exact, simd, filt, hs, hi, scratch)
        tmp = np.empty(k)
        sorted_topk(hs, hi, k, tmp, out_i[q])
        out_s[q] = tmp
    return out_s, out_i
