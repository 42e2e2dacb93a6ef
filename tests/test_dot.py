"""The integer dot-product engine (kernels.dot) against its NumPy twins, at every width and SIMD level."""
import numpy as np
import pytest

import turboann as ta
from turboann import codebook
from turboann.kernels import _simd, _wide, dot
from turboann.kernels import reference as ref

# Levels this machine runs: 3 VBMI decode + AVX512-VNNI, 2 AVX512-VNNI with the scalar decode, 1 AVX-VNNI
# where present (plain IR otherwise), 0 plain IR. Each is a runtime branch of one compiled kernel.
LEVELS = sorted({dot.simd_level(k) for k in _simd.AVAILABLE} | ({2} if _wide.HAS_VNNI512 else set()) | {1, 0},
                reverse=True)


def _case(bits, dim, n, nq, seed, bias=True):
    rng = np.random.default_rng(seed)
    cents = codebook.centroids(dim, bits).astype(np.float32)
    codes = ref.pack_codes(rng.integers(0, 1 << bits, (n, dim)), bits)
    factors = rng.uniform(0.5, 2.0, (n, 2 if bias else 1)).astype(np.float32)
    q = (rng.standard_normal((nq, dim)) / np.sqrt(dim)).astype(np.float32)
    off = 0.01 * rng.standard_normal(nq)
    return cents, codes, factors, q, off


def _search(cents, codes, factors, q, off, bits, k, *, exact=True, shortlist=None, n_chunks=1, simd=None):
    book = dot.dot_codebook(cents, bits)
    p = dot.dot_queries(q, off, book)
    return dot.search_dot(codes, factors, p, book, cents, k, shortlist or k, n_chunks, exact,
                          dot.simd_level() if simd is None else simd)


def _reference_scores(cents, codes, factors, q, off, bits):
    partial = ref.dot_partials(codes, bits, q.astype(np.float64), off, cents)
    bias = factors[:, 1].astype(np.float64) if factors.shape[1] > 1 else 0.0
    return factors[:, 0].astype(np.float64) * partial + bias


@pytest.mark.parametrize("bits", range(1, 9))
@pytest.mark.parametrize("dim", [2, 63, 130])
def test_exact_top_k_equals_float_top_k(bits, dim):
    cents, codes, factors, q, off = _case(bits, dim, 700, 21, seed=bits * 1000 + dim)
    truth = _reference_scores(cents, codes, factors, q, off, bits)
    order = np.argsort(-truth, axis=1, kind="stable")[:, :10]
    for simd in LEVELS:
        # 21 queries: a full group of 16 and 5 scored one at a time; 1 and 3: the few-query path alone
        for nq, n_chunks in ((21, 1), (21, 3), (1, 2), (3, 1)):
            s, i = _search(cents, codes, factors, q[:nq], off[:nq], bits, 10, n_chunks=n_chunks, simd=simd)
            np.testing.assert_array_equal(i, order[:nq], err_msg=f"simd {simd}, {nq} queries")
            np.testing.assert_array_equal(s, np.take_along_axis(truth, order, 1)[:nq].astype(np.float32))


@pytest.mark.parametrize("bits", [3, 5, 8])
def test_shortlist_returns_exact_scores_of_its_candidates(bits):
    cents, codes, factors, q, off = _case(bits, 100, 900, 17, seed=bits)
    truth = _reference_scores(cents, codes, factors, q, off, bits)
    s, i = _search(cents, codes, factors, q, off, bits, 10, exact=False, shortlist=30)
    np.testing.assert_array_equal(s, np.take_along_axis(truth, i, 1).astype(np.float32))
    assert (np.diff(s, axis=1) <= 0).all()
    exact_i = np.argsort(-truth, axis=1, kind="stable")[:, :10]
    assert np.mean([set(a) == set(b) for a, b in zip(i, exact_i)]) >= 0.9


@pytest.mark.parametrize("bits", [1, 3, 4, 6, 7, 8])
def test_estimate_within_its_bound(bits):
    """The bound E the exact mode prunes with holds for every (query, vector), on skewed queries too."""
    cents, codes, _, q, off = _case(bits, 96, 500, 30, seed=7 + bits)
    q[:5] *= np.linspace(0.0, 3.0, 96, dtype=np.float32)   # uneven coordinates: large rounding steps
    q[5] = 0.0                                              # a zero query
    est, bound = ref.dot_estimates(codes, bits, q.astype(np.float64), off, cents)
    partial = ref.dot_partials(codes, bits, q.astype(np.float64), off, cents)
    assert (np.abs(est - partial) <= bound[:, None] * (1 + 1e-9) + 1e-12).all()
    book = dot.dot_codebook(cents, bits)
    p = dot.dot_queries(q, off, book)
    assert (p.e[:30] >= bound).all()   # the kernel's bound includes the reference's


@pytest.mark.parametrize("bits", [1, 2, 4, 5, 8])
def test_vector_bound_holds_and_matches_its_twin(bits):
    """The per-vector bound of the exact scan (resid * N_v + ec) holds for every (query, vector), is the
    reference's up to its float32 widening, and N_v (`code_norm_bound`, every SIMD level) bounds the
    reconstruction's norm, padding bytes included."""
    dim = 100   # not a multiple of 64: the last chunk has padding
    cents, codes, _, q, off = _case(bits, dim, 300, 20, seed=11 + bits)
    q[:4] *= np.linspace(0.0, 3.0, dim, dtype=np.float32)
    q[4] = 0.0
    est, _ = ref.dot_estimates(codes, bits, q.astype(np.float64), off, cents)
    partial = ref.dot_partials(codes, bits, q.astype(np.float64), off, cents)
    bound = ref.dot_vector_bounds(codes, bits, q.astype(np.float64), cents)
    assert (np.abs(est - partial) <= bound * (1 + 1e-9) + 1e-12).all()
    book = dot.dot_codebook(cents, bits)
    p = dot.dot_queries(q, off, book)
    dp = dot.padded_dim(dim)
    values = np.empty((codes.shape[0], dp), np.uint8)
    raw = np.empty(dp, np.uint8)
    for v in range(codes.shape[0]):
        dot.decode_scalar(codes, v, dim, bits, book.decode, values[v], raw)
    c = np.asarray(cents, np.float64)[ref.unpack_codes(codes, 0, bits, dim)]
    err_norm = np.sqrt(dim) * book.err
    for simd in LEVELS:
        norms = np.array([dot.code_norm_bound(values.reshape(-1), v * dp, dp, simd, book.scale, err_norm)
                          for v in range(codes.shape[0])])
        assert (norms >= np.linalg.norm(c, axis=1)).all(), f"simd {simd}"
        kernel = p.resid[:20, None].astype(np.float64) * norms[None, :] + p.ec[:20, None]
        assert (kernel >= bound).all(), f"simd {simd}"
        # the padding's squares widen N a little, never by more than its coordinates' largest centroid
        assert (norms <= np.sqrt(np.linalg.norm(c, axis=1) ** 2 + (dp - dim) * book.cmax ** 2) * 1.01
                + 2 * err_norm).all(), f"simd {simd}"


def test_codebook_and_queries_match_reference_quantization():
    cents = codebook.centroids(64, 8).astype(np.float32)
    book = dot.dot_codebook(cents, 8)
    c8 = book.decode.astype(np.int64) - 128
    assert np.abs(c8).max() == 127
    assert np.abs(cents - book.scale * c8).max() <= book.err + 1e-12 <= book.scale / 2 + 1e-12
    q = np.random.default_rng(0).standard_normal((20, 64)).astype(np.float32)
    p = dot.dot_queries(q, np.zeros(20), book)
    assert p.lanes.shape == (2, 16, 64)
    q8 = p.lanes.reshape(2, 16, 16, 4).transpose(0, 2, 1, 3).reshape(32, 64)
    assert np.abs(q8[:20]).max() == 127 and (q8[20:] == 0).all()
    np.testing.assert_allclose(q8[:20] * (np.abs(q).max(1) / 127)[:, None], q, atol=np.abs(q).max() / 254 + 1e-6)


def test_scalar_and_simd_decode_agree():
    rng = np.random.default_rng(3)
    for bits in range(1, 9):
        for dim in (5, 64, 200):
            codes = ref.pack_codes(rng.integers(0, 1 << bits, (40, dim)), bits)
            cents = codebook.centroids(dim, bits).astype(np.float32)
            book = dot.dot_codebook(cents, bits)
            values = np.empty(dot.padded_dim(dim), np.uint8)
            raw = np.empty_like(values)
            want = ref.unpack_codes(codes, 0, bits, dim)
            for v in range(40):
                dot.decode_scalar(codes, v, dim, bits, book.decode, values, raw)
                np.testing.assert_array_equal(raw[:dim], want[v])
                np.testing.assert_array_equal(values[:dim], book.decode[want[v]])


@pytest.mark.parametrize("bits", [3, 5, 6, 7, 8])
@pytest.mark.parametrize("metric", ["cosine", "ip", "l2"])
def test_index_flat_search_is_the_float_top_k(bits, metric):
    """Index with row-major codes (the auto layout at 3 and 5-8 bits) returns the reference top k."""
    rng = np.random.default_rng(bits)
    x = rng.standard_normal((1500, 48)).astype(np.float32) + 0.5
    q = rng.standard_normal((40, 48)).astype(np.float32) + 0.5
    idx = ta.Index(48, bits, metric)
    assert idx.layout == "flat" and idx._dot_book is not None
    idx.add(x)
    D, I = idx.search(q, 7)
    qq, _, _, _ = idx._queries(q, 7, None)
    (qrot, qoff), cents = idx._fastscan_queries(qq), idx._head_codebook()
    scores = _reference_scores(cents, idx._store.codes, idx._store.factors, qrot, qoff, bits)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :7]
    np.testing.assert_array_equal(I, idx.ids[order])
    for threads in (1, 2):
        D1, I1 = idx.search(q[:1], 7, threads=threads)   # one query: the database split across threads
        np.testing.assert_array_equal(I1, I[:1])
        # the dense rotation's matrix product of one row may round differently from a batch's
        np.testing.assert_allclose(D1, D[:1], rtol=1e-6)


@pytest.mark.parametrize("metric", ["cosine", "l2", "ip"])
@pytest.mark.parametrize("bits", [3, 6])
def test_ivf_flat_lists_match_the_float_table_scan(metric, bits):
    """IVF lists of row-major codes go through the integer engine: the same top k as the float-table
    list scan (kernels.ivf_scan.search_lists) of the same lists, every SIMD level."""
    pytest.importorskip("faiss")
    from turboann.kernels.ivf_scan import search_lists

    rng = np.random.default_rng(bits)
    x = rng.standard_normal((1200, 32)).astype(np.float32) + 0.3
    q = rng.standard_normal((9, 32)).astype(np.float32) + 0.3
    ivf = ta.IVFIndex(32, nlist=8, bits=bits, metric=metric, layout="flat")
    ivf.train(x)
    ivf.add(x)
    assert ivf._dot_book is not None
    qq, _, _, _ = ivf._queries(q, 5, None)
    qc = np.ascontiguousarray(qq @ ivf._centroids.T, dtype=np.float32)
    lists = ivf._store
    want_s, want_i = search_lists(lists.codes, lists.factors, lists.start, lists.size, qc, ivf._cnorm2,
                                  metric != "ip", ivf._list_bias_mult(), 3, *ivf._segment_values(qq),
                                  ivf._centroid_table, *ivf._quant.plan, 5, np.zeros(0, np.uint8))
    (qrot, qoff), cents = ivf._fastscan_queries(qq), ivf._head_codebook()
    book = ivf._dot_book
    p = dot.dot_queries(qrot, qoff, book)
    for simd in LEVELS:
        s, i = dot.search_dot_lists(lists.codes, lists.factors, lists.start, lists.size, qc, ivf._cnorm2,
                                    metric != "ip", ivf._list_bias_mult(), 3, p, book, cents, 5, True, simd)
        # float32 tables against float64 exact sums: equal sets, scores within float32 rounding
        assert [set(a) for a in i] == [set(b) for b in want_i], f"simd {simd}"
        np.testing.assert_allclose(s, want_s, rtol=1e-5, atol=1e-5)
    D, I = ivf.search(q, 5, nprobe=3)
    np.testing.assert_array_equal(I, np.where(i >= 0, lists.ids[np.maximum(i, 0)], -1))


@pytest.mark.parametrize("nq", [1, 5, 16])
def test_ties_everywhere_settle_in_slot_order(nq):
    """Identical vectors: every bound passes, candidate lists fill and are settled mid-scan; the top k
    is still the float top k with ties to the lower slot."""
    cents, codes, factors, q, off = _case(4, 70, 600, nq, seed=11)
    codes[:] = codes[0]
    factors[:] = factors[0]
    codes[450] = codes[1]          # one distinct vector late in the scan
    truth = _reference_scores(cents, codes, factors, q, off, 4)
    order = np.argsort(-truth, axis=1, kind="stable")[:, :3]
    for simd in LEVELS:
        s, i = _search(cents, codes, factors, q, off, 4, 3, simd=simd)
        np.testing.assert_array_equal(i, order, err_msg=f"simd {simd}")
        np.testing.assert_array_equal(s, np.take_along_axis(truth, order, 1).astype(np.float32))


def _restricted_order(truth, allowed, k):
    """The float top k among the allowed slots: (slots (nq, k) -1 padded, scores (nq, k) -inf padded)."""
    masked = np.where(allowed.astype(bool)[None, :], truth, -np.inf)
    order = np.argsort(-masked, axis=1, kind="stable")[:, :k]
    top = np.take_along_axis(masked, order, 1)
    return np.where(np.isfinite(top), order, -1), top.astype(np.float32)


@pytest.mark.parametrize("bits", [3, 8])
def test_many_queries_share_each_decoded_block(bits):
    """300 queries: tasks take several query groups, which share each block of decoded vectors."""
    cents, codes, factors, q, off = _case(bits, 70, 1000, 300, seed=40 + bits)
    truth = _reference_scores(cents, codes, factors, q, off, bits)
    order = np.argsort(-truth, axis=1, kind="stable")[:, :10]
    for simd in LEVELS:
        s, i = _search(cents, codes, factors, q, off, bits, 10, simd=simd)
        np.testing.assert_array_equal(i, order, err_msg=f"simd {simd}")
        np.testing.assert_array_equal(s, np.take_along_axis(truth, order, 1).astype(np.float32))


@pytest.mark.parametrize("bits", [2, 5])
def test_allowed_slots_give_the_restricted_float_ranking(bits):
    """A filter returns exactly the float top k among the allowed slots: one slot, a few, blocks with
    none allowed, half, all and none; every query path (a group, few queries) and SIMD level."""
    n = 900
    cents, codes, factors, q, off = _case(bits, 90, n, 21, seed=60 + bits)
    truth = _reference_scores(cents, codes, factors, q, off, bits)
    rng = np.random.default_rng(bits)
    masks = {"one": np.isin(np.arange(n), [417]), "few": rng.random(n) < 0.01,
             "blocks": (np.arange(n) // 64) % 3 == 1, "half": rng.random(n) < 0.5,
             "all": np.ones(n, bool), "none": np.zeros(n, bool)}
    for name, mask in masks.items():
        allowed = mask.astype(np.uint8)
        want_i, want_s = _restricted_order(truth, allowed, 10)
        for simd in LEVELS:
            for nq, n_chunks in ((21, 1), (21, 3), (3, 1), (1, 2)):
                book = dot.dot_codebook(cents, bits)
                p = dot.dot_queries(q[:nq], off[:nq], book)
                s, i = dot.search_dot(codes, factors, p, book, cents, 10, 10, n_chunks, True, simd, allowed)
                np.testing.assert_array_equal(i, want_i[:nq], err_msg=f"{name}, simd {simd}, {nq} queries")
                np.testing.assert_array_equal(s, want_s[:nq])
        # the shortlist mode keeps to the allowed slots too
        s, i = dot.search_dot(codes, factors, p, book, cents, 10, 30, 1, False, dot.simd_level(), allowed)
        assert np.isin(i[i >= 0], np.flatnonzero(mask)).all() and (i >= 0).sum(1).max() <= mask.sum()


@pytest.mark.parametrize("bits", [2, 4])
@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_batches_over_fastscan_blocks_match_fastscan(bits, metric):
    """From `index._DOT_BATCH` queries on, a fast-scan index is searched by the integer engine straight
    from its blocks: the same exact top k as fast-scan's own kernel, after removals too."""
    from turboann import index as index_module

    rng = np.random.default_rng(bits)
    x = rng.standard_normal((1500, 48)).astype(np.float32) + 0.2
    q = rng.standard_normal((300, 48)).astype(np.float32) + 0.2
    idx = ta.Index(48, bits, metric=metric, layout="fastscan")
    idx.add(x)
    idx.remove(np.arange(0, 1500, 7))
    assert idx._dot_book is not None and len(q) >= index_module._DOT_BATCH[bits]
    D, I = idx.search(q, 10)
    prepared = idx._queries(q, 10, None)[0]
    scores, slots = idx._search_fastscan(prepared, 10, 1)
    want_D, want_I = idx._finish(prepared, scores, slots)
    np.testing.assert_array_equal(I, want_I)
    np.testing.assert_allclose(D, want_D, rtol=1e-6, atol=1e-6)


def test_ivf_lists_with_allowed_positions_give_the_restricted_ranking():
    """search_dot_lists with an allowed mask over arena positions: the unfiltered list ranking (all
    lists probed, k = every vector) restricted to the allowed positions, every SIMD level."""
    pytest.importorskip("faiss")
    rng = np.random.default_rng(11)
    x = rng.standard_normal((900, 32)).astype(np.float32) + 0.3
    q = rng.standard_normal((7, 32)).astype(np.float32) + 0.3
    ivf = ta.IVFIndex(32, nlist=6, bits=5, metric="cosine", layout="flat")
    ivf.train(x)
    ivf.add(x)
    qq, _, _, _ = ivf._queries(q, 5, None)
    qc = np.ascontiguousarray(qq @ ivf._centroids.T, dtype=np.float32)
    lists = ivf._store
    (qrot, qoff), cents = ivf._fastscan_queries(qq), ivf._head_codebook()
    book = ivf._dot_book
    p = dot.dot_queries(qrot, qoff, book)
    arena = lists.codes.shape[0]
    args = (lists.codes, lists.factors, lists.start, lists.size, qc, ivf._cnorm2, False, ivf._list_bias_mult(), 6,
            p, book, cents)
    full_s, full_i = dot.search_dot_lists(*args, arena, True, dot.simd_level())
    for share in (0.002, 0.1, 0.6):
        allowed = (rng.random(arena) < share).astype(np.uint8)
        for simd in LEVELS:
            s, i = dot.search_dot_lists(*args, 10, True, simd, allowed)
            for r in range(len(q)):
                keep = full_i[r][(full_i[r] >= 0) & (allowed[np.maximum(full_i[r], 0)] == 1)][:10]
                np.testing.assert_array_equal(i[r][:keep.size], keep, err_msg=f"share {share}, simd {simd}")
                assert (i[r][keep.size:] == -1).all()
