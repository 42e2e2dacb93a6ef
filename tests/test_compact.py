"""Compact codes (Index(compact=True)): the byte budget, the packed factors, tail coordinates in the
quantizer and both layouts, persistence and errors."""
import math

import numpy as np
import pytest

import turboann as ta
from turboann import codebook, compact
from turboann.kernels import reference as ref

from conftest import exact_topk, recall

METRICS = ("cosine", "ip", "l2")


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("bits", [2, 3, 4])
@pytest.mark.parametrize("dim", [33, 100, 384, 769])
def test_tail_split_is_the_fewest_narrow_coordinates_that_fit(metric, bits, dim):
    budget = math.ceil(dim * bits / 8)
    tail, tail_bits = compact.tail_split(dim, bits, metric)
    assert tail_bits == (2 if bits == 4 else bits - 1)
    q = ta.TurboQuantMSE(dim, bits, tail_coords=tail, tail_bits=tail_bits)
    assert q.code_bytes + compact.FACTOR_BYTES[metric] <= budget
    # the next head that fills whole bytes (one more coordinate at full width) would not fit
    head = dim - tail
    wider = next((h for h in range(head + 1, dim) if h * bits % 8 == 0), None)
    if wider is not None:
        assert wider * bits // 8 + math.ceil((dim - wider) * tail_bits / 8) + compact.FACTOR_BYTES[metric] > budget


def test_tail_split_rejects_what_cannot_fit():
    with pytest.raises(ValueError, match="compact=True needs bits 2, 3 or 4, got bits 1"):
        compact.tail_split(100, 1, "cosine")
    with pytest.raises(ValueError, match="compact=True needs room for 3 B of factors"):
        compact.tail_split(4, 2, "l2")


@pytest.mark.parametrize("metric", METRICS)
def test_factor_codes_round_trip(metric):
    codes = compact.FactorCodes(metric, 128, 2)
    rng = np.random.default_rng(0)
    c = np.exp(rng.uniform(np.log(codes.lowest), np.log(codes.highest), 1000))
    c[:3] = (0.0, codes.lowest / 2, codes.highest * 2)   # zero stays zero; outside the range clips
    norms = rng.uniform(0.01, 300.0, 1000)
    packed = codes.pack(norms, c)
    assert packed.dtype == np.uint8 and packed.shape == (1000, compact.FACTOR_BYTES[metric])
    w = codes.unpack(packed)
    assert w.dtype == np.float32 and w.shape == (1000, 2 if metric == "l2" else 1)
    got_c = codes.corrections[packed[:, 0]]
    assert got_c[0] == 0.0 and np.isclose(got_c[1], codes.lowest) and np.isclose(got_c[2], codes.highest)
    half_step = (codes.highest / codes.lowest) ** (1 / 254 / 2)   # a log code's worst rounding
    assert np.all(np.maximum(got_c[3:] / c[3:], c[3:] / got_c[3:]) <= half_step * (1 + 1e-12))
    if metric == "cosine":
        np.testing.assert_array_equal(w[:, 0], got_c.astype(np.float32))
        return
    got_n = norms.astype(np.float16).astype(np.float64)
    assert np.all(np.abs(got_n / norms - 1) <= 2.0 ** -11)
    if metric == "ip":
        np.testing.assert_allclose(w[:, 0], got_n * got_c, rtol=1e-6)
    else:
        np.testing.assert_allclose(w, np.stack([2 * got_n * got_c, -got_n ** 2], axis=1), rtol=1e-6)
    assert codes.norm_overflow(np.array([1.0, 7e4, 1e5])) == 1 and codes.norm_overflow(norms) == -1


def test_the_correction_range_holds_the_corrections_of_real_codes():
    """Corrections 1 / <u, u_hat> of random unit vectors fall inside the u8 code's range (no clipping)."""
    for dim, bits in ((64, 2), (384, 2), (384, 4)):
        x = np.random.default_rng(dim + bits).standard_normal((2000, dim)).astype(np.float32)
        enc = ta.TurboQuantMSE(dim, bits).encode(x)
        low, high = compact.correction_range(dim, bits)
        assert low < (1 / enc.dots).min() and (1 / enc.dots).max() < high


@pytest.mark.parametrize("dim,bits,tail,tail_bits", [(100, 2, 8, 1), (104, 3, 8, 2), (100, 4, 4, 2), (100, 4, 10, 3)])
def test_quantizer_tail_codes(dim, bits, tail, tail_bits):
    """The last coordinates are bucketed with their own codebook and packed after the others."""
    x = np.random.default_rng(bits).standard_normal((300, dim)).astype(np.float32)
    q = ta.TurboQuantMSE(dim, bits, tail_coords=tail, tail_bits=tail_bits)
    enc = q.encode(x)
    head = dim - tail
    assert enc.codes.shape[1] == head * bits // 8 + math.ceil(tail * tail_bits / 8) == q.code_bytes
    u = q.rotation.apply(x / np.linalg.norm(x, axis=1, keepdims=True))
    want_head = np.searchsorted(codebook.boundaries(dim, bits), u[:, :head], side="right")
    want_tail = np.searchsorted(codebook.boundaries(dim, tail_bits), u[:, head:], side="right")
    got_head = ref.unpack_codes(enc.codes, 0, bits, head)
    got_tail = ref.unpack_codes(enc.codes, head * bits // 8, tail_bits, tail)
    assert (got_head == want_head).mean() > 0.999 and (got_tail == want_tail).mean() > 0.999   # float ties
    u_hat = np.concatenate([codebook.centroids(dim, bits)[got_head], codebook.centroids(dim, tail_bits)[got_tail]],
                           axis=1).astype(np.float32)
    np.testing.assert_allclose(enc.dots, (u * u_hat).sum(1), rtol=1e-5)
    np.testing.assert_allclose(q.decode(enc), q.rotation.apply_transpose(u_hat) * enc.norms[:, None], rtol=1e-4,
                               atol=1e-5)


def test_quantizer_tail_errors():
    with pytest.raises(ValueError, match="tail_bits must be <= 1, got 2"):
        ta.TurboQuantMSE(64, 2, tail_coords=8, tail_bits=2)
    with pytest.raises(ValueError, match="tail_coords must leave dim - tail_coords coordinates that fill whole bytes"):
        ta.TurboQuantMSE(64, 3, tail_coords=4, tail_bits=2)
    with pytest.raises(ValueError, match="tail_coords needs variant 'mse' and bits <= 4, got variant 'mse' and bits 5"):
        ta.TurboQuantMSE(64, 5, tail_coords=8, tail_bits=2)
    with pytest.raises(ValueError, match="tail_coords must be <= 63, got 64"):
        ta.TurboQuantMSE(64, 2, tail_coords=64, tail_bits=1)
    with pytest.raises(TypeError, match="tail_bits must be an integer, got NoneType"):
        ta.TurboQuantMSE(64, 2, tail_coords=8)


# Recall 10@10 against brute force on the seeded clustered set (d = 64, n = 4000): measured values
# sit 0.04-0.05 above these floors. At d = 64 the narrow tail is a large share of the code (4-24 of
# 64 coordinates), so compact recall is well below the default's there; at d = 384 the gap is 0.1-1.5 points.
COMPACT_FLOORS = {("cosine", 2): 0.53, ("cosine", 4): 0.80, ("ip", 2): 0.57, ("ip", 4): 0.79,
                  ("l2", 2): 0.50, ("l2", 4): 0.77}


@pytest.mark.parametrize("metric,bits", sorted(COMPACT_FLOORS))
def test_compact_index_fits_the_budget_and_finds_neighbours(data_64, metric, bits):
    x, q = data_64
    index = ta.Index(64, bits=bits, metric=metric, compact=True)
    index.add(x)
    assert index.code_bytes == 64 * bits // 8   # a PQ code's size, factors included
    assert index.nbytes == len(x) * (index.code_bytes + 8 + 8) + index.mean.nbytes   # + ids, + split factors
    D, I = index.search(q, 10)
    assert recall(I, exact_topk(x, q, 10, metric)) >= COMPACT_FLOORS[metric, bits]


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("bits", [2, 3, 4])
def test_compact_scores_equal_numpy_reference_in_both_layouts(data_64, metric, bits):
    """D is the decode-and-dot score of the packed factors, the same in the flat and fast-scan layouts."""
    x, q = data_64
    x, q = x[:700], q[:7]
    flat = ta.Index(64, bits=bits, metric=metric, compact=True, layout="flat", center=False)
    blocked = ta.Index(64, bits=bits, metric=metric, compact=True, layout="fastscan", center=False)
    flat.add(x)
    blocked.add(x)
    np.testing.assert_array_equal(blocked._store.codes, flat._store.codes)
    np.testing.assert_array_equal(blocked._store.stored_factors, flat._store.stored_factors)
    quant = flat.quantizer
    qq = q / np.linalg.norm(q, axis=1, keepdims=True) if metric == "cosine" else q
    scores = ref.score_codes(flat._store.codes, flat._store.factors, quant.segment_values(qq),
                             quant.centroid_table, quant.segments)
    if metric == "l2":
        scores = (qq.astype(np.float64) ** 2).sum(1)[:, None] - scores
    for index in (flat, blocked):
        D, I = index.search(q, 20)
        want = np.take_along_axis(scores, I, 1)
        np.testing.assert_allclose(D, np.maximum(want, 0) if metric == "l2" else want, rtol=1e-4, atol=1e-4)
        best = np.sort(scores, axis=1)[:, :20] if metric == "l2" else -np.sort(-scores, axis=1)[:, :20]
        np.testing.assert_allclose(np.take_along_axis(scores, I, 1), best, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("layout", ["flat", "fastscan"])
def test_compact_round_trip_and_removal(tmp_path, data_64, layout):
    x, q = data_64
    index = ta.Index(64, bits=2, metric="ip", compact=True, layout=layout)
    index.add(x)
    assert index.remove(np.arange(0, 4000, 3)) == 1334
    path = tmp_path / "compact.tann"
    index.save(path)
    loaded = ta.load(path)
    assert loaded.compact and loaded.code_bytes == 16 and loaded.layout == layout
    for a, b in zip(index.search(q, 10), loaded.search(q, 10)):
        np.testing.assert_array_equal(a, b)


def test_compact_errors(data_64):
    x, _ = data_64
    with pytest.raises(TypeError, match="compact must be True or False, got str"):
        ta.Index(64, bits=2, compact="yes")
    with pytest.raises(ValueError, match="compact=True needs variant 'mse' and correction 'ip', got variant 'prod'"):
        ta.Index(64, bits=2, variant="prod", compact=True)
    with pytest.raises(ValueError, match="compact=True needs variant 'mse' and correction 'ip', got .* 'none'"):
        ta.Index(64, bits=2, correction="none", compact=True)
    with pytest.raises(ValueError, match="compact=True needs bits 2, 3 or 4, got bits 8"):
        ta.Index(64, bits=8, compact=True)
    index = ta.Index(64, bits=2, metric="ip", compact=True)
    big = x[:300].copy()
    big[7] *= 1e5
    with pytest.raises(ValueError, match=r"x row 7 has norm .*, beyond the float16 range \(65504\)"):
        index.add(big)
    assert len(index) == 0   # nothing was added
