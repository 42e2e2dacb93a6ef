"""Fast-scan kernels against their NumPy twins, on every SIMD path this CPU runs,
and the fast-scan Index against the float path."""
import re

import numpy as np
import pytest
from numba import njit

import turboann as ta
from turboann import codebook
from turboann.kernels import _simd
from turboann.kernels import encode as enc
from turboann.kernels import fastscan as fs
from turboann.kernels import ivf_fastscan as ivf_fs
from turboann.kernels import reference as ref

from conftest import clustered

PATHS = list(_simd.RUNNABLE)   # avx512 runs in ymm halves on an AVX2 CPU


def _code(cents, bits, lay, tail_cents=None):
    """The `fastscan.BlockCodebook` of codes laid out as lay (bits is lay's), with no tail by default."""
    assert bits == lay.bits
    return fs.block_codebook(lay, cents, tail_cents)


def _random_blocks(rng, n, dim, bits):
    lay = fs.block_layout(dim, bits)
    codes = ref.pack_codes(rng.integers(0, 1 << bits, (n, dim)), bits)
    blocks = np.zeros((fs.n_blocks(n), lay.rows, 32), np.uint8)
    enc.write_into(codes, 0, bits, dim, enc.blocked_target(blocks, bits), 0)
    return lay, codes, blocks


@pytest.mark.parametrize("bits", [1, 2, 3, 4])
@pytest.mark.parametrize("dim", [40, 100])
def test_block_layout_round_trip_and_move(bits, dim):
    rng = np.random.default_rng(bits * 10 + dim)
    n = 75   # two full blocks and a partial one
    lay, codes, blocks = _random_blocks(rng, n, dim, bits)
    np.testing.assert_array_equal(blocks, ref.pack_blocks(codes, bits, dim))
    np.testing.assert_array_equal(fs.unpack_blocks(blocks, n, lay.width, lay.n_sub, codes.shape[1]), codes)
    scattered = np.zeros_like(blocks)
    enc.write_into(codes, 0, bits, dim, enc.blocked_target(scattered, bits), np.arange(n)[::-1].copy())
    np.testing.assert_array_equal(scattered, ref.pack_blocks(codes[::-1], bits, dim))
    fs.move_slot(blocks, 74, 3)
    moved = codes.copy()
    moved[3] = codes[74]
    np.testing.assert_array_equal(fs.unpack_blocks(blocks, n, lay.width, lay.n_sub, codes.shape[1]), moved)


def _tail_blocks(rng, n, dim, bits, tail_coords, tail_bits):
    """Blocks of random codes whose last tail_coords coordinates take tail_bits:
    (layout, head codes, tail codes, blocks), as `store.BlockedCodeStore` writes them."""
    lay = fs.block_layout(dim, bits, tail_coords, tail_bits)
    first = lay.tail_first
    head = ref.pack_codes(rng.integers(0, 1 << bits, (n, first)), bits)
    tail = ref.pack_codes(rng.integers(0, 1 << tail_bits, (n, dim - first)), tail_bits)
    blocks = np.zeros((fs.n_blocks(n), lay.rows, 32), np.uint8)
    enc.write_into(head, 0, bits, first, enc.blocked_target(blocks, bits), 0)
    enc.write_into(tail, 0, tail_bits, dim - first, enc.blocked_target(blocks, tail_bits, lay.head_sub // 2), 0)
    return lay, head, tail, blocks


@pytest.mark.parametrize("bits,tail", [(1, None), (2, None), (3, None), (4, None), (2, (8, 1)), (3, (8, 2)),
                                       (4, (4, 2)), (4, (10, 3))])
@pytest.mark.parametrize("dim", [40, 100])
def test_tables_match_reference_and_bound_the_error(bits, tail, dim):
    rng = np.random.default_rng(bits + dim)
    tail_coords, tail_bits = tail or (0, bits)
    lay, codes, tail_codes, blocks = _tail_blocks(rng, 64, dim, bits, tail_coords, tail_bits)
    cents = codebook.centroids(dim, bits).astype(np.float32)
    tail_cents = codebook.centroids(dim, tail_bits).astype(np.float32)
    q = rng.standard_normal(dim).astype(np.float32)
    ftab = np.empty((2 * lay.rows, 16))
    lut = np.empty(lay.rows * 32, np.uint8)
    res = np.empty(lay.rows * 32, np.uint8)
    off = rng.standard_normal()
    (base, delta, err, likely), (base2, delta2, err2, likely2) = fs.build_tables(
        q, off, _code(cents, bits, lay, tail_cents), ftab, lut, res)
    first = lay.tail_first
    rtab, rlut, rbase, rdelta, rerr, rres, rbase2, rdelta2, rerr2 = ref.fastscan_tables(
        q, cents, bits, off, (first, tail_cents, tail_bits) if tail else None)
    np.testing.assert_allclose(ftab, rtab, rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(lut, rlut)
    np.testing.assert_array_equal(res, rres)
    nt = 2 * lay.rows
    for tables in (lut, res):   # a row's two tables fill one byte
        pairs = tables.reshape(-1, 2, 16).max(axis=2).astype(int).sum(axis=1)
        assert pairs.max() <= 255 and pairs.max() >= 240
    assert delta == rdelta and np.float32(delta) == delta and delta2 == rdelta2 and np.float32(delta2) == delta2
    assert 125.9 < delta / delta2 <= 126.0
    assert np.isclose(base, rbase) and np.isclose(base2, rbase2)
    # err (err2): half a step a table, at least each table's largest rounding summed
    assert rerr <= err <= nt * delta / 2 * (1 + 1e-9) + 1e-6 and rerr2 <= err2 <= nt * delta2 / 2 * (1 + 1e-9) + 1e-6
    # base + delta * (u8 sum) is within err of the exact partial score of every vector, and
    # base2 + delta * S + delta2 * (residual sum) within err2
    exact = (cents[ref.unpack_codes(codes, 0, bits, first)].astype(np.float64) @ q[:first].astype(np.float64)
             + tail_cents[ref.unpack_codes(tail_codes, 0, tail_bits, dim - first)].astype(np.float64)
             @ q[first:].astype(np.float64) + off)
    sums = ref.quantized_sums(blocks, 64, lut[None])[0]
    approx = base + delta * sums
    finer = base2 + delta * sums + delta2 * ref.quantized_sums(blocks, 64, res[None])[0]
    assert np.abs(approx - exact).max() <= err
    assert np.abs(approx - exact).max() > 0.05 * err   # the bound is not vacuous
    assert np.abs(finer - exact).max() <= err2
    assert np.abs(finer - exact).max() > 0.05 * err2
    assert np.abs(finer - exact).max() < np.abs(approx - exact).max() / 20   # the residual refines
    # the likely bounds hold for these vectors and are tighter than the worst case wherever tables are many
    assert np.abs(approx - exact).max() <= likely <= err
    assert np.abs(finer - exact).max() <= likely2 <= err2
    if nt >= 300:   # 6 sigmas of n errors against n worst cases: 6 / sqrt(n) of err, and drift
        assert likely < 0.5 * err and likely2 < 0.5 * err2


@njit(cache=True)
def _partials(blocks, n, qp, off, cx, per_nibble, ftab):
    """(direct_partial, _exact_partial) of slots 0..n-1: (2, n) float64."""
    rows = blocks.shape[1]
    flat = blocks.reshape(-1)
    out = np.empty((2, n))
    for s in range(n):
        b, lane = s // 32, s % 32
        out[0, s] = fs.direct_partial(flat, b * rows * 32, rows, lane, qp, off, cx, per_nibble)
        out[1, s] = fs._exact_partial(flat, b * rows * 32, rows, lane, ftab, 0)
    return out


@pytest.mark.parametrize("bits", [1, 2, 3, 4])
@pytest.mark.parametrize("dim", [33, 40, 101])
def test_direct_partial_is_the_float_table_partial_bit_for_bit(bits, dim):
    """Scores computed from the query equal those looked up in the float tables exactly, padding included."""
    rng = np.random.default_rng(bits * dim)
    lay, codes, blocks = _random_blocks(rng, 70, dim, bits)
    q = rng.standard_normal(dim).astype(np.float32)
    cents = codebook.centroids(dim, bits).astype(np.float32)
    ftab = np.empty((1, 2 * lay.rows, 16))
    fs.float_tables(q, 0.25, cents, bits, lay.per_nibble, lay.n_sub, ftab[0], np.empty(2 * lay.rows),
                    np.empty(2 * lay.rows))
    direct, table = _partials(blocks, 70, fs.padded_query(q, lay.rows, lay.per_nibble), 0.25,
                              fs.coordinate_centroids(cents, bits, lay.per_nibble), lay.per_nibble, ftab)
    np.testing.assert_array_equal(direct, table)
    want = ref.fastscan_tables(q, cents, bits, 0.25)[0]
    nib = ref.nibbles(codes, bits, dim)
    np.testing.assert_allclose(direct, want[np.arange(nib.shape[1]), nib].sum(axis=1), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("bits,dim", [(1, 40), (2, 100), (3, 40), (4, 100), (4, 600)])
def test_quantized_sums_match_reference(path, bits, dim):
    """(4, 600): 300 rows per block, beyond one 16-bit flush of 256 rows."""
    rng = np.random.default_rng(dim * bits)
    n = 70
    lay, _, blocks = _random_blocks(rng, n, dim, bits)
    # the two tables of a row add in a byte: build_tables keeps their largest entries' sum <= 255
    luts = rng.integers(0, 128, (6, lay.rows * 32)).astype(np.uint8)
    row_tables = luts[4].reshape(lay.rows, 2, 16)   # a view
    row_tables[:, 0, 0] = 255   # one table of a row may take the whole byte when its partner is 0
    row_tables[:, 1, :] = 0
    luts[[2, 5]] = 127     # the largest sums, in a group of four and alone: 16-bit lanes need the flush
    got = fs.quantized_sums(blocks, n, luts, fs.simd_level(path))
    np.testing.assert_array_equal(got, ref.quantized_sums(blocks, n, luts))
    assert (got[[2, 5]] == 127 * 2 * lay.rows).all()


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("guarantee", [True, False])
@pytest.mark.parametrize("n_chunks,group", [(1, 4), (3, 1)])
def test_search_blocks_is_exact_top_k(path, n_chunks, group, guarantee):
    """Top k after re-scoring equals the float64 top k, duplicates tie to the lower slot (with the
    likely bound too: these estimates stay within it)."""
    rng = np.random.default_rng(7)
    dim, bits, n, k = 100, 2, 300, 10
    lay, codes, blocks = _random_blocks(rng, n, dim, bits)
    codes[200:210] = codes[5]   # exact ties across blocks
    enc.write_into(codes, 0, bits, dim, enc.blocked_target(blocks, bits), 0)
    factors = rng.uniform(0.5, 1.5, (n, 2)).astype(np.float32)
    factors[200:210] = factors[5]
    cents = codebook.centroids(dim, bits).astype(np.float32)
    q = rng.standard_normal((9, dim)).astype(np.float32)
    q[8] = cents[ref.unpack_codes(codes[5:6], 0, bits, dim)[0]]   # its best match is the tie group
    qoff = rng.standard_normal(9)
    s, i = fs.search_blocks(blocks, n, fs.split_factors(factors, n), q, qoff, _code(cents, bits, lay),
                            k, n_chunks, group, fs.simd_level(path), True, np.zeros(0, np.uint8), guarantee)
    full = ((q.astype(np.float64) @ cents[ref.unpack_codes(codes, 0, bits, dim)].T.astype(np.float64)
             + qoff[:, None]) * factors[:, 0] + factors[:, 1])
    want_s, want_i = ref.topk(full, k)
    np.testing.assert_array_equal(i, want_i)
    np.testing.assert_allclose(s, want_s, rtol=1e-6)
    assert set(i[8]) == {5, *range(200, 209)}


@pytest.mark.parametrize("path", PATHS)
def test_search_blocks_by_estimate(path):
    """exact=False: the top k by the u8-table estimate (shortlists for re-ranking), not re-scored."""
    rng = np.random.default_rng(8)
    dim, bits, n, k = 100, 4, 300, 20
    lay, codes, blocks = _random_blocks(rng, n, dim, bits)
    factors = rng.uniform(0.5, 1.5, (n, 2)).astype(np.float32)
    cents = codebook.centroids(dim, bits).astype(np.float32)
    q = rng.standard_normal((9, dim)).astype(np.float32)
    qoff = rng.standard_normal(9)
    s, i = fs.search_blocks(blocks, n, fs.split_factors(factors, n), q, qoff, _code(cents, bits, lay),
                            k, 1, 4, fs.simd_level(path), False, np.zeros(0, np.uint8))
    want_s, want_i = ref.topk(ref.fastscan_estimates(blocks, n, factors, q, qoff, cents, bits), k)
    np.testing.assert_array_equal(i, want_i)
    np.testing.assert_allclose(s, want_s, rtol=1e-6)
    exact_i = fs.search_blocks(blocks, n, fs.split_factors(factors, n), q, qoff, _code(cents, bits, lay),
                               k, 1, 4, fs.simd_level(path), True, np.zeros(0, np.uint8))[1]
    assert (exact_i != i).any()   # the estimate does rank differently: the flag is not a no-op


@pytest.fixture(scope="module")
def data_40():
    x = clustered(1500, 40, seed=3, offset=1.0)
    return x[:1400], x[1400:]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("bits", [1, 2, 3, 4])
@pytest.mark.parametrize("metric", ["ip", "cosine", "l2"])
def test_index_fastscan_equals_flat(monkeypatch, data_40, path, bits, metric):
    """Same ids and scores as the float path, after incremental adds and removals."""
    monkeypatch.setenv(_simd.ENV_VAR, path)
    x, q = data_40
    fast = ta.Index(40, bits=bits, metric=metric, layout="fastscan", seed=1)
    flat = ta.Index(40, bits=bits, metric=metric, layout="flat", seed=1)
    for index in (fast, flat):
        for lo, hi in [(0, 300), (300, 301), (301, 1000)]:   # partial blocks in between
            index.add(x[lo:hi])
        index.remove(np.arange(0, 1000, 7))
        index.add(x[1000:], ids=np.arange(5000, 5400))
    np.testing.assert_array_equal(fast.ids, flat.ids)
    np.testing.assert_array_equal(fast._store.codes, flat._store.codes)
    Dl, Il = flat.search(q, 10)
    for exact in (False, True):   # the likely bound (default) and the worst case agree on these
        Df, If = fast.search(q, 10, exact=exact)
        np.testing.assert_array_equal(If, Il)
        np.testing.assert_allclose(Df, Dl, rtol=1e-4, atol=1e-5)
    with pytest.raises(TypeError, match="exact must be True or False, got str"):
        fast.search(q, 10, exact="yes")


def test_single_query_splits_the_database_across_threads(monkeypatch):
    monkeypatch.setattr("turboann.index._MIN_CHUNK", 100)
    x = clustered(1000, 40, seed=4)
    index = ta.Index(40, bits=4, metric="l2")
    index.add(x)
    D1, I1 = index.search(x[:1], 5, threads=1)
    D2, I2 = index.search(x[:1], 5, threads=2)
    np.testing.assert_array_equal(I1, I2)
    np.testing.assert_array_equal(D1, D2)
    assert I1[0, 0] == 0


def test_layout_choice_and_errors(tmp_path):
    assert ta.Index(8, bits=4).layout == "fastscan"
    assert ta.Index(8, bits=5).layout == "flat"
    assert ta.Index(8, bits=4, variant="prod").layout == "flat"
    assert ta.Index(8, bits=3).layout == "flat"       # 3-bit codes would grow by 4/3 in blocks
    with pytest.raises(ValueError, match="layout 'fastscan' needs variant 'mse' and bits <= 4"):
        ta.Index(8, bits=5, layout="fastscan")
    with pytest.raises(ValueError, match="layout must be one of"):
        ta.Index(8, layout="blocked")
    x = clustered(100, 8, seed=5)
    index = ta.Index(8, bits=3, metric="cosine", layout="fastscan")
    index.add(x)
    assert index.code_bytes == 8 // 2 + 4   # 3 bits take a nibble each in blocks
    index.save(tmp_path / "f.tann")
    back = ta.load(tmp_path / "f.tann")
    assert back.layout == "fastscan"
    np.testing.assert_array_equal(back.search(x[:5], 4)[1], index.search(x[:5], 4)[1])


def test_kernel_choice(monkeypatch):
    assert _simd.kernel_choice("portable") == "portable"
    assert _simd.kernel_choice("auto") == _simd.AVAILABLE[0]
    monkeypatch.setenv(_simd.ENV_VAR, "sse9")
    with pytest.raises(ValueError, match="TURBOANN_SIMD must be one of 'auto', 'avx512', 'avx2', 'portable', "
                                         "got 'sse9'"):
        _simd.kernel_choice()
    assert _simd.AVAILABLE[0] == ("avx512" if _simd.HAS_AVX512BW else "avx2" if _simd.HAS_AVX2 else "portable")
    if not _simd.HAS_AVX2:
        for kernel in ("avx2", "avx512"):
            with pytest.raises(ValueError, match="needs a CPU with AVX2"):
                _simd.kernel_choice(kernel)


def _shuffle_twin(table, index):
    out = table[(np.arange(32) & 16) + (index & 15)]
    return np.where(index >= 128, 0, out).astype(np.uint8)


def _pshufb_once(t, x, out):
    _simd.store(out, 0, _simd.pshufb(_simd.load(t, 0), _simd.load(x, 0)))


def _compile_and_check_shuffle(seed):
    """A fresh (uncached) compile of one pshufb, checked against its twin; returns its assembly."""
    fresh = njit(_pshufb_once)
    rng = np.random.default_rng(seed)
    t, x = rng.integers(0, 256, 32).astype(np.uint8), rng.integers(0, 256, 32).astype(np.uint8)
    out = np.zeros(32, np.uint8)
    fresh(t, x, out)
    np.testing.assert_array_equal(out, _shuffle_twin(t, x))
    return "".join(fresh.inspect_asm().values())


def test_generic_shuffle_ir_matches_vpshufb(monkeypatch):
    """The IR used on CPUs without AVX2 has vpshufb's semantics."""
    monkeypatch.setattr(_simd, "HAS_AVX2", False)
    assert "vpshufb" not in _compile_and_check_shuffle(0)


def _block_sums_asm(simd: int, rows: int) -> str:
    """The assembly of a fresh compile of one `fastscan.block_sums` call (four queries) at SIMD level simd."""
    @njit
    def sums(flat, rows, tabs, simd, scratch, totals):
        s = fs.block_sums(flat, 0, rows, tabs, 0, 128, 256, 384, 4, simd, scratch)
        fs.store_sums(s[0], s[1], totals, 0)

    sums(np.zeros(32 * rows, np.uint8), rows, np.zeros(4 * 128 * fs.n_pairs(rows), np.uint8), simd,
         np.zeros(128, np.float32), np.zeros(128, np.float32))
    return "".join(sums.inspect_asm().values())


@pytest.mark.skipif(not _simd.HAS_AVX2, reason="needs AVX2")
def test_avx2_kernel_emits_vpshufb():
    assert "vpshufb" in _compile_and_check_shuffle(1)
    assert re.search(r"vpshufb\s+%ymm", _block_sums_asm(1, 2))


@pytest.mark.skipif(not _simd.HAS_AVX2, reason="needs AVX2")
def test_avx512_kernel_shuffles_64_bytes():
    """On AVX-512BW: zmm vpshufb; on AVX2 alone: the same kernel in ymm vpshufb pairs."""
    asm = _block_sums_asm(2, 3)
    assert re.search(r"vpshufb\s+%zmm" if _simd.HAS_AVX512BW else r"vpshufb\s+%ymm", asm)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("bits,dim,probe_l2,mult,batch,k", [(1, 40, True, 2.0, 7, 12), (2, 100, False, 1.0, 3, 1),
                                                            (3, 40, True, 0.0, 1, 12), (4, 100, False, 2.0, 2, 40)])
def test_search_list_blocks_equals_reference(path, bits, dim, probe_l2, mult, batch, k):
    """Lists of whole blocks with gaps, an empty list and partial last blocks whose padding holds garbage;
    list-major batches of one query, of groups of four with three left over, and of all."""
    rng = np.random.default_rng(bits * dim)
    start = np.array([0, 96, 160, 160, 320, 416])
    size = np.array([70, 33, 0, 128, 1, 64])
    arena = 512
    lay, codes, blocks = _random_blocks(rng, arena, dim, bits)
    factors = rng.uniform(0.5, 1.5, (arena, 2)).astype(np.float32)
    factors[:, 1] -= 1.0
    cents = codebook.centroids(dim, bits).astype(np.float32)
    nq, nlist = 7, len(start)
    q = rng.standard_normal((nq, dim)).astype(np.float32)
    qc = rng.standard_normal((nq, nlist)).astype(np.float32)
    cnorm2 = rng.random(nlist).astype(np.float32)
    qoff = rng.standard_normal(nq)
    args = (start, size, qc, cnorm2, probe_l2, mult, 3, q, qoff, cents, bits)
    s, i = ivf_fs.search_list_blocks(blocks, fs.split_factors(factors, arena), *args[:-2], fs.block_codebook(lay, cents), k,
                                     batch, fs.simd_level(path), True, np.zeros(0, np.uint8))
    want_s, want_i = ref.search_list_blocks(blocks, factors, *args, k)
    np.testing.assert_array_equal(i, want_i)
    np.testing.assert_allclose(s, want_s, rtol=1e-6)
    inside = np.concatenate([np.arange(a, a + m) for a, m in zip(start, size)])
    assert np.isin(i[i >= 0], inside).all()   # never a padding slot or a slot between lists
    # exact=False: the top k of the probed lists by the u8-table estimate
    s, i = ivf_fs.search_list_blocks(blocks, fs.split_factors(factors, arena), *args[:-2], fs.block_codebook(lay, cents), k,
                                     batch, fs.simd_level(path), False, np.zeros(0, np.uint8))
    est = np.full((nq, arena), -np.inf)
    every = ref.fastscan_estimates(blocks, arena, factors, q, qoff, cents, bits)
    for r, probed in enumerate(ref.select_lists(qc, cnorm2, probe_l2, 3)):
        for l in probed:
            at = slice(start[l], start[l] + size[l])
            est[r, at] = every[r, at] + mult * np.float64(qc[r, l])
    want_s, want_i = ref.topk(est, k)
    want_i[~np.isfinite(want_s)] = -1
    np.testing.assert_array_equal(i, want_i)
    np.testing.assert_allclose(s, want_s, rtol=1e-6)


def test_records_make_room_by_dropping_then_growing():
    low_s = np.array([[0.5], [-np.inf]])
    slot = np.zeros((2, 64), np.int64)
    up = np.zeros((2, 64))
    shift = np.zeros((2, 64))
    slot[0, :40] = np.arange(40)
    up[0, :40] = np.linspace(0.0, 1.0, 40)      # 20 at or above tau = 0.5
    n_rec = np.array([40, 0])
    got = ivf_fs._make_room(0, low_s, slot, up, shift, n_rec)
    assert got[0] is slot and n_rec[0] == 20 and (up[0, :20] >= 0.5).all()
    np.testing.assert_array_equal(slot[0, :20], np.arange(20, 40))
    up[0, 20:40] = 0.9
    n_rec[0] = 40                                # all above tau: the rows must grow
    slot2, up2, shift2 = ivf_fs._make_room(0, low_s, slot, up, shift, n_rec)
    assert slot2.shape == (2, 128) and n_rec[0] == 40
    np.testing.assert_array_equal(up2[0, :40], up[0, :40])


def test_reservoir_cut_keeps_the_best_half_ties_to_lower_slots():
    res_s = np.array([[5.0, 1.0, 3.0, 3.0, 0.0, 3.0, 2.0, 4.0], [2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 7.0, 2.0]])
    res_i = np.array([[10, 11, 12, 13, 14, 15, 16, 17], [9, 8, 7, 6, 5, 4, 3, 2]])
    n_res = np.array([8, 8])
    thr = np.full(2, -np.inf)
    ivf_fs._cut_reservoir(0, 4, res_s, res_i, n_res, thr)
    assert n_res[0] == 5 and thr[0] == 3.0   # ties with the 4th best all stay: the final sort decides
    assert sorted(res_i[0, :5]) == [10, 12, 13, 15, 17]
    ivf_fs._cut_reservoir(1, 4, res_s, res_i, n_res, thr)
    assert n_res[1] == 4 and thr[1] == 2.0
    np.testing.assert_array_equal(res_i[1, :4], [3, 2, 4, 5])
    np.testing.assert_array_equal(res_s[1, :4], [7.0, 2.0, 2.0, 2.0])


def test_list_major_batches_shrink_for_long_shortlists():
    assert ivf_fs.batch_size(1000, 2, 10, 192) == 250           # two batches a thread
    assert ivf_fs.batch_size(3, 2, 10, 192) == 1
    assert ivf_fs.batch_size(1000, 1, 10_000, 192) == 34         # 64 MB of records at most
    assert ivf_fs.batch_size(1000, 1, 10**7, 192) == 1
