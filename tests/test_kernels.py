"""Every Numba kernel against its NumPy twin in kernels.reference."""
import numpy as np
import pytest

from turboann import codebook
from turboann.kernels import encode as enc
from turboann.kernels import reference as ref
from turboann.kernels.scan import simple_plan as make_plan, score_codes, search_codes, segment_bytes
from turboann.kernels.topk import sorted_topk


@pytest.mark.parametrize("bits", range(1, 9))
@pytest.mark.parametrize("dim", [7, 100])
def test_encode_directions_matches_reference(bits, dim):
    rng = np.random.default_rng(bits * 100 + dim)
    y = rng.standard_normal((50, dim)).astype(np.float32) * 3
    b = codebook.boundaries(dim, bits).astype(np.float32)
    c = codebook.centroids(dim, bits).astype(np.float32)
    nbytes = segment_bytes(dim, bits) + 2
    codes = np.zeros((50, nbytes), np.uint8)
    norms, dots = np.empty(50, np.float32), np.empty(50, np.float32)
    resid = np.empty_like(y)
    scale = rng.uniform(0.5, 2.0, 50)
    translate = (0.3 * rng.standard_normal(dim)).astype(np.float32)
    centre = (0.1 * rng.standard_normal(dim) / np.sqrt(dim)).astype(np.float32)
    scale[3], y[3] = 1.0, translate   # a row that becomes zero gets zero dots and does not crash
    spread = rng.uniform(0.3, 3.0, dim).astype(np.float32)   # per-coordinate spreads
    enc.encode_directions(y, scale, translate, centre, spread, b, c, bits, codes, 1, norms, dots, resid)
    rcodes, rnorms, rdots, rresid = ref.encode_directions(y, scale, translate, centre, b, c, bits, spread)
    seg = segment_bytes(dim, bits)
    np.testing.assert_array_equal(codes[:, 1:1 + seg], rcodes)
    np.testing.assert_array_equal(codes[:, 0], 0)
    np.testing.assert_array_equal(codes[:, 1 + seg:], 0)
    np.testing.assert_allclose(norms, rnorms, rtol=1e-6)
    np.testing.assert_allclose(dots, rdots, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(resid, rresid, rtol=1e-6, atol=1e-7)
    assert dots[3] == 0.0 and norms[3] == 0.0
    out = np.empty((50, dim), np.int32)
    enc.unpack_codes(codes, 1, bits, dim, out)
    np.testing.assert_array_equal(out, ref.unpack_codes(codes, 1, bits, dim))
    v = y * scale.astype(np.float32)[:, None] - translate
    np.testing.assert_array_equal(out[rnorms > 0], np.searchsorted(
        b, (v / np.where(rnorms > 0, rnorms, 1)[:, None] - centre) / spread, side="right")[rnorms > 0])


def test_pack_signs_matches_reference():
    rng = np.random.default_rng(0)
    z = rng.standard_normal((30, 37)).astype(np.float32)
    codes = np.zeros((30, 10), np.uint8)
    enc.pack_signs(z, codes, 5)
    np.testing.assert_array_equal(codes, ref.pack_signs(z, 5))


def _random_layout(rng, n, dim, seg_bits, biased):
    plan = make_plan(dim, seg_bits)
    nbytes = int(plan.seg_bytes[-1])
    codes = np.zeros((n, nbytes), np.uint8)
    cents = np.zeros((len(seg_bits), 256), np.float32)
    for s, bits in enumerate(seg_bits):
        c = rng.integers(0, 1 << bits, (n, dim))
        ref.pack_codes(c, bits, int(plan.seg_bytes[s]), out=codes)
        cents[s, :1 << bits] = np.sort(rng.standard_normal(1 << bits))
    factors = rng.uniform(0.5, 2.0, (n, len(seg_bits) + biased)).astype(np.float32)
    return plan, codes, cents, factors


def _plan_args(p):
    return tuple(p)


@pytest.mark.parametrize("seg_bits", [(1,), (2,), (3,), (4,), (5,), (6,), (7,), (8,), (1, 1), (3, 1), (4, 1)])
@pytest.mark.parametrize("biased", [0, 1])
def test_scores_match_reference(seg_bits, biased):
    rng = np.random.default_rng(sum(seg_bits) * 7 + biased)
    dim = 45
    plan, codes, cents, factors = _random_layout(rng, 300, dim, seg_bits, biased)
    qv = rng.standard_normal((4, len(seg_bits), dim)).astype(np.float32)
    qoff = rng.standard_normal((4, len(seg_bits))).astype(np.float32)
    got = score_codes(codes, factors, qv, qoff, cents, *_plan_args(plan))
    want = ref.score_codes(codes, factors, qv, cents, [[(0, dim, b, s)] for s, b in enumerate(seg_bits)], qoff)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("n_chunks", [1, 3, 7])
@pytest.mark.parametrize("seg_bits", [(2,), (3,), (3, 1)])
def test_search_topk_matches_reference(n_chunks, seg_bits):
    rng = np.random.default_rng(n_chunks)
    dim, n, k = 33, 500, 10
    plan, codes, cents, factors = _random_layout(rng, n, dim, seg_bits, 1)
    qv = rng.standard_normal((6, len(seg_bits), dim)).astype(np.float32)
    qoff = rng.standard_normal((6, len(seg_bits))).astype(np.float32)
    scores = score_codes(codes, factors, qv, qoff, cents, *_plan_args(plan))
    got_s, got_i = search_codes(codes, factors, qv, qoff, cents, *_plan_args(plan), k, n_chunks, np.zeros(0, np.uint8))
    want_s, want_i = ref.topk(scores, k)   # same float32 scores: only the selection is tested
    np.testing.assert_array_equal(got_i, want_i)
    np.testing.assert_array_equal(got_s, want_s.astype(np.float32))
    # k larger than n pads with -inf / -1
    s, i = search_codes(codes[:5], factors[:5], qv, qoff, cents, *_plan_args(plan), 8, n_chunks, np.zeros(0, np.uint8))
    assert (i[:, 5:] == -1).all() and np.isneginf(s[:, 5:]).all()
    assert sorted(i[0, :5]) == [0, 1, 2, 3, 4]


def test_sorted_topk_breaks_ties_by_slot():
    scores = np.array([1.0, 3.0, 3.0, -np.inf, 2.0, 3.0], np.float32)
    slots = np.array([9, 7, 2, -1, 4, 5], np.int64)
    out_s, out_i = np.empty(5, np.float32), np.empty(5, np.int64)
    sorted_topk(scores, slots, 5, out_s, out_i)
    assert out_i.tolist() == [2, 5, 7, 4, 9]
    assert out_s.tolist() == [3.0, 3.0, 3.0, 2.0, 1.0]


@pytest.mark.parametrize("n", [1, 5000])   # the serial path and the parallel one
def test_row_norms_match_numpy(n):
    x = np.random.default_rng(n).standard_normal((n, 37)).astype(np.float32)
    np.testing.assert_allclose(enc.row_norms(x), np.linalg.norm(x.astype(np.float64), axis=1), rtol=1e-12)


def test_norms_and_dots_matches_reference():
    rng = np.random.default_rng(7)
    x = (3 * rng.standard_normal((300, 37))).astype(np.float32)
    x[5] = 0.0
    m = rng.standard_normal(37).astype(np.float32)
    norms, dots = np.empty(300), np.empty(300)
    enc.norms_and_dots(x, m, norms, dots)
    want_norms, want_dots = ref.norms_and_dots(x, m)
    np.testing.assert_allclose(norms, want_norms, rtol=1e-12)
    np.testing.assert_allclose(dots, want_dots, rtol=1e-10, atol=1e-9)
    assert norms[5] == dots[5] == 0.0
