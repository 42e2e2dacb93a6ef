"""Filtered search: `search(q, k, filter=ids)` returns the unfiltered ranking restricted to the
allowed ids, on every engine (fast-scan scan and direct scoring, float tables, integer engine),
flat and IVF, with rerank, and the kernels' `allowed` mask against their NumPy twins."""
import numpy as np
import pytest

import turboann as ta
from turboann import codebook
from turboann import index as index_module
from turboann.kernels import _simd
from turboann.kernels import encode as enc
from turboann.kernels import fastscan as fs
from turboann.kernels import ivf_fastscan as ivf_fs
from turboann.kernels import ivf_scan
from turboann.kernels import reference as ref
from turboann.kernels.scan import search_codes, simple_plan

from conftest import clustered

N, DIM, K = 1500, 48, 10
# (kwargs, engine it exercises): fast-scan, fast-scan with a compact tail, float tables, integer engine
FLAT = [({"bits": 4}, "fastscan"), ({"bits": 2, "compact": True}, "fastscan tail"),
        ({"bits": 3, "variant": "prod"}, "float tables"), ({"bits": 3}, "dot"), ({"bits": 4}, "dot over blocks")]
# allowed counts: one id up to all of them
SELECTIVITIES = [1, 7, 60, 400, N]


@pytest.fixture(scope="module")
def data():
    x = clustered(N + 12, DIM, seed=11, offset=0.5)
    return x[:N], x[N:]


@pytest.fixture(params=["scan", "direct"])
def path(request, monkeypatch):
    """Force the fast-scan kernels to scan blocks, or to score the allowed slots directly."""
    direct = request.param == "direct"
    monkeypatch.setattr(index_module, "_DIRECT_PER_BLOCK", np.inf if direct else 0.0)
    monkeypatch.setattr(index_module, "_DIRECT_PER_RESULT", np.inf)
    monkeypatch.setattr(index_module, "_DIRECT_PER_RESULT_DOT", np.inf)
    return request.param


def _restricted(D_all, I_all, allowed, k):
    """The rows of an unfiltered (D, I) over every vector, restricted to `allowed` ids: lists of (D, I)."""
    keep = np.isin(I_all, allowed)
    return [(D_all[r][keep[r]][:k], I_all[r][keep[r]][:k]) for r in range(len(I_all))]


def _assert_restricted(index, q, allowed, k=K, **kw):
    D_all, I_all = index.search(q, len(index), **kw)
    D, I = index.search(q, k, filter=allowed, **kw)
    held = np.intersect1d(allowed, index.ids).size
    for r, (want_d, want_i) in enumerate(_restricted(D_all, I_all, allowed, k)):
        got = I[r][I[r] >= 0]
        np.testing.assert_array_equal(got, want_i)
        np.testing.assert_array_equal(D[r][:len(got)], want_d)
        assert (I[r][len(got):] == -1).all()
        if "nprobe" not in kw or kw["nprobe"] == getattr(index, "nlist", 0):
            assert len(got) == min(k, held)   # a flat index (or every list) finds min(k, allowed and held)


@pytest.mark.parametrize("kwargs,engine", FLAT, ids=[e for _, e in FLAT])
@pytest.mark.parametrize("metric", ["ip", "cosine", "l2"])
def test_flat_filter_is_the_restricted_ranking(data, path, kwargs, engine, metric, monkeypatch):
    x, q = data
    if engine == "dot over blocks":   # fast-scan batches the integer engine serves (_DOT_BATCH): this one too
        monkeypatch.setitem(index_module._DOT_BATCH, 4, 1)
    index = ta.Index(DIM, metric=metric, seed=3, **kwargs)
    index.add(x)
    rng = np.random.default_rng(5)
    for m in SELECTIVITIES:
        _assert_restricted(index, q, rng.choice(N, m, replace=False))
    _assert_restricted(index, q, np.arange(200, 290))   # clustered: whole blocks allowed, the rest skipped


@pytest.mark.parametrize("kwargs", [{"bits": 4}, {"bits": 3}, {"bits": 3, "variant": "prod"}],
                         ids=["fastscan", "dot", "float tables"])
@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_ivf_filter_is_the_restricted_ranking(data, path, kwargs, metric):
    x, q = data
    ivf = ta.IVFIndex(DIM, nlist=8, metric=metric, seed=3, **kwargs)
    ivf.set_centroids(x[::N // 8][:8])
    ivf.add(x)
    rng = np.random.default_rng(6)
    for m in SELECTIVITIES:
        allowed = rng.choice(N, m, replace=False)
        _assert_restricted(ivf, q, allowed, nprobe=8)
        _assert_restricted(ivf, q, allowed, nprobe=3)


@pytest.mark.parametrize("layout", ["fastscan", "flat"])
def test_filter_with_rerank(data, path, layout):
    """The shortlist is taken among the allowed ids only; D is exact. With at least as many shortlist
    places as allowed ids the result is the exact top k among them."""
    x, q = data
    index = ta.Index(DIM, bits=4, metric="cosine", keep_vectors=True, layout=layout)
    index.add(x)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    rng = np.random.default_rng(8)
    for m in (5, 40, 700):
        allowed = rng.choice(N, m, replace=False)
        D, I = index.search(q, K, rerank=50, filter=allowed)
        found = I >= 0
        assert np.isin(I[found], allowed).all() and (found.sum(axis=1) == min(K, m)).all()
        exact = np.einsum("qd,qkd->qk", qn.astype(np.float64), xn[np.maximum(I, 0)].astype(np.float64))
        np.testing.assert_allclose(D[found], exact[found], rtol=1e-5)
        if m <= 50:
            truth = allowed[np.argsort(-(qn @ xn[allowed].T), axis=1, kind="stable")[:, :K]]
            np.testing.assert_array_equal(np.sort(I[:, :min(K, m)], axis=1), np.sort(truth, axis=1))


def test_filter_input(data):
    """Any order, duplicates, unknown and negative ids and sets are taken; other input raises naming
    `filter`, and leaves the index as it was."""
    x, q = data
    index = ta.Index(DIM, bits=4)
    index.add(x[:500], ids=np.arange(500) * 7)   # spread ids: the sorted lookup
    base = index.search(q, K, filter=[14, 700, 3493])
    for same in ([3493, 700, 14, 14, 700], {14, 700, 3493}, np.array([14, 700, 3493, 1, 10 ** 12, -5]),
                 np.array([14, 700, 3493, 2 ** 64 - 1], np.uint64)):
        D, I = index.search(q, K, filter=same)
        np.testing.assert_array_equal(I, base[1])
    assert set(base[1][0][:3]) == {14, 700, 3493} and (base[1][:, 3:] == -1).all()
    D, I = index.search(q, K, filter=[])
    assert (I == -1).all() and np.isneginf(D).all()
    before = index.search(q, K)
    for bad, error in ((np.array([1.5]), TypeError), ([True], TypeError), (np.zeros((2, 2), np.int64), ValueError),
                       ("12", TypeError)):
        with pytest.raises(error, match="filter"):
            index.search(q, K, filter=bad)
    assert len(index) == 500
    np.testing.assert_array_equal(index.search(q, K)[1], before[1])


def test_filter_follows_adds_and_removes(data):
    x, q = data
    for index in (ta.Index(DIM, bits=4), ta.IVFIndex(DIM, nlist=4, bits=4)):
        if isinstance(index, ta.IVFIndex):
            index.set_centroids(x[:4])
        index.add(x[:300])
        allowed = np.arange(0, 600, 2)
        assert np.isin(index.search(q, K, filter=allowed)[1], allowed).all()   # builds the id lookup
        index.remove(np.arange(0, 100, 2))
        index.add(x[300:600])
        I = index.search(q, 300, filter=allowed, **({"nprobe": 4} if isinstance(index, ta.IVFIndex) else {}))[1]
        got = set(I[0][I[0] >= 0].tolist())
        assert got == set(range(100, 600, 2))   # removed ids gone, added ones found


# -- kernels against their NumPy twins ----------------------------------------------------

NO_FILTER = np.zeros(0, np.uint8)


def _coded_blocks(rng, n, dim, bits):
    """Random codes of n vectors in the blocked layout, with factors and the codebook:
    (layout, packed codes, blocks, factors (n, 2) float32, centroids float32)."""
    lay = fs.block_layout(dim, bits)
    codes = ref.pack_codes(rng.integers(0, 1 << bits, (n, dim)), bits)
    blocks = np.zeros((fs.n_blocks(n), lay.rows, fs.BLOCK), np.uint8)
    enc.write_into(codes, 0, bits, dim, enc.blocked_target(blocks, bits), 0)
    factors = rng.uniform(0.5, 1.5, (n, 2)).astype(np.float32)
    return lay, codes, blocks, factors, codebook.centroids(dim, bits).astype(np.float32)


def _mask(rng, n, share):
    mask = (rng.random(n) < share).astype(np.uint8)
    mask[64:128] = 0   # two whole blocks with no allowed slot
    return mask


@pytest.mark.parametrize("simd", list(_simd.RUNNABLE))
@pytest.mark.parametrize("exact", [True, False])
def test_search_blocks_allowed_equals_reference(simd, exact):
    rng = np.random.default_rng(21)
    dim, bits, n, k = 40, 4, 300, 12
    lay, codes, blocks, factors, cents = _coded_blocks(rng, n, dim, bits)
    q = rng.standard_normal((6, dim)).astype(np.float32)
    qoff = rng.standard_normal(6)
    mask = _mask(rng, n, 0.1)
    book = fs.block_codebook(lay, cents)
    s, i = fs.search_blocks(blocks, n, fs.split_factors(factors, n), q, qoff, book, k, 2, 4, fs.simd_level(simd),
                            exact, mask)
    if exact:
        full = ((q.astype(np.float64) @ cents[ref.unpack_codes(codes, 0, bits, dim)].T.astype(np.float64)
                 + qoff[:, None]) * factors[:, 0] + factors[:, 1])
    else:
        full = ref.fastscan_estimates(blocks, n, factors, q, qoff, cents, bits).astype(np.float64)
    want_s, want_i = ref.topk(ref.restrict(full, mask), k)
    want_i[~np.isfinite(want_s)] = -1
    np.testing.assert_array_equal(i, want_i)
    np.testing.assert_allclose(s, want_s, rtol=1e-6)
    if exact:   # direct scoring of the same slots: the same result
        d_s, d_i = fs.score_slots(blocks, np.flatnonzero(mask), fs.split_factors(factors, n), q, qoff, book, k)
        np.testing.assert_array_equal(d_i, i)
        np.testing.assert_array_equal(d_s, s)


@pytest.mark.parametrize("exact", [True, False])
def test_search_list_blocks_allowed_equals_reference(exact):
    rng = np.random.default_rng(22)
    dim, bits, k = 40, 2, 9
    start, size, arena = np.array([0, 96, 160, 320]), np.array([70, 33, 128, 64]), 448
    lay, codes, blocks, factors, cents = _coded_blocks(rng, arena, dim, bits)
    nq = 5
    q = rng.standard_normal((nq, dim)).astype(np.float32)
    qc = rng.standard_normal((nq, 4)).astype(np.float32)
    cnorm2 = rng.random(4).astype(np.float32)
    qoff = rng.standard_normal(nq)
    mask = _mask(rng, arena, 0.15)
    args = (start, size, qc, cnorm2, True, 2.0, 2, q, qoff, cents, bits)
    wsplit = fs.split_factors(factors, arena)
    s, i = ivf_fs.search_list_blocks(blocks, wsplit, *args[:-2], fs.block_codebook(lay, cents), k, 2, fs.simd_level(),
                                     exact, mask)
    if exact:
        want_s, want_i = ref.search_list_blocks(blocks, factors, *args, k, allowed=mask)
        np.testing.assert_array_equal(i, want_i)
        np.testing.assert_allclose(s, want_s, rtol=1e-6)
        slots = np.flatnonzero(mask)
        owner = np.searchsorted(start, slots, side="right") - 1
        d_s, d_i = ivf_fs.score_list_slots(blocks, wsplit, slots, owner, *args[:-2], fs.block_codebook(lay, cents), k)
        np.testing.assert_array_equal(d_i, i)
        np.testing.assert_array_equal(d_s, s)
    else:
        assert np.isin(i[i >= 0], np.flatnonzero(mask)).all()
        full_i = ivf_fs.search_list_blocks(blocks, wsplit, *args[:-2], fs.block_codebook(lay, cents), arena, 2,
                                           fs.simd_level(), False, NO_FILTER)[1]
        for r in range(nq):   # the unfiltered estimate ranking, restricted
            want = [v for v in full_i[r] if v >= 0 and mask[v]][:k]
            np.testing.assert_array_equal(i[r][:len(want)], want)


def test_row_major_kernels_allowed_equal_reference():
    rng = np.random.default_rng(23)
    dim, n, k = 33, 400, 8
    plan = simple_plan(dim, [3])
    codes = ref.pack_codes(rng.integers(0, 8, (n, dim)), 3)
    cents = np.zeros((1, 256), np.float32)
    cents[0, :8] = np.sort(rng.standard_normal(8))
    factors = rng.uniform(0.5, 2.0, (n, 2)).astype(np.float32)
    qv = rng.standard_normal((4, 1, dim)).astype(np.float32)
    qoff = rng.standard_normal((4, 1)).astype(np.float32)
    mask = _mask(rng, n, 0.05)
    full = ref.score_codes(codes, factors, qv, cents, [[(0, dim, 3, 0)]], qoff)
    s, i = search_codes(codes, factors, qv, qoff, cents, *plan, k, 3, mask)
    want_s, want_i = ref.topk(ref.restrict(full, mask), k)
    want_i[~np.isfinite(want_s)] = -1
    np.testing.assert_array_equal(i, want_i)
    np.testing.assert_allclose(s, want_s, rtol=1e-5, atol=1e-5)
    start, size = np.array([0, 150, 300]), np.array([120, 150, 90])
    qc = rng.standard_normal((4, 3)).astype(np.float32)
    cnorm2 = rng.random(3).astype(np.float32)
    args = (codes, factors, start, size, qc, cnorm2, False, 1.0, 2, qv, qoff, cents)
    s, i = ivf_scan.search_lists(*args, *plan, k, mask)
    want_s, want_i = ref.search_lists(*args, [[(0, dim, 3, 0)]], k, allowed=mask)
    np.testing.assert_array_equal(i, want_i)
    np.testing.assert_allclose(s, want_s, rtol=1e-5, atol=1e-5)
