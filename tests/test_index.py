import numba
import numpy as np
import pytest

import turboann as ta
from turboann.kernels import reference as ref

from conftest import exact_topk, recall

# Recall 10@10 against brute force on the seeded clustered set (d = 64, n = 4000),
# per variant, metric and bits: measured values sit 0.03-0.06 above these floors.
FLOORS = {("mse", "cosine", 2): 0.50, ("mse", "cosine", 4): 0.80,
          ("mse", "ip", 2): 0.60, ("mse", "ip", 4): 0.84,
          ("mse", "l2", 2): 0.58, ("mse", "l2", 4): 0.83,
          ("prod", "cosine", 2): 0.32, ("prod", "cosine", 4): 0.60,
          ("prod", "ip", 2): 0.40, ("prod", "ip", 4): 0.69,
          ("prod", "l2", 2): 0.35, ("prod", "l2", 4): 0.67}


@pytest.mark.parametrize("variant,metric,bits", sorted(FLOORS))
def test_recall_against_brute_force(data_64, variant, metric, bits):
    x, q = data_64
    index = ta.Index(64, bits=bits, metric=metric, variant=variant, seed=0)
    index.add(x)
    D, I = index.search(q, 10)
    r = recall(I, exact_topk(x, q, 10, metric))
    assert r >= FLOORS[variant, metric, bits], r
    assert D.dtype == np.float32 and I.dtype == np.int64 and D.shape == (100, 10)
    if metric == "l2":
        assert (np.diff(D, axis=1) >= 0).all()
    else:
        assert (np.diff(D, axis=1) <= 0).all()


@pytest.mark.parametrize("metric", ["ip", "cosine", "l2"])
@pytest.mark.parametrize("variant,center,estimator", [("mse", False, "auto"), ("mse", True, "direction"),
                                                      ("prod", True, "direction"), ("mse", True, "translate"),
                                                      ("prod", True, "translate")])
def test_kernel_scores_equal_numpy_reference(data_64, metric, variant, center, estimator):
    """The index's D equals a decode-and-dot NumPy computation of the same estimator."""
    x, q = data_64
    x, q = x[:700], q[:7]
    index = ta.Index(64, bits=3, metric=metric, variant=variant, center=center, estimator=estimator)
    index.add(x)
    D, I = index.search(q, 20)
    quant = index.quantizer
    qq = (q / np.linalg.norm(q, axis=1, keepdims=True) if metric == "cosine" else q).astype(np.float32)
    translate = center and (metric == "l2" or index.estimator == "translate")
    if translate:   # data and queries translated by the centre
        qq = qq - index.mean
    qv = quant.segment_values(qq)
    qoff = np.zeros(qv.shape[:2])
    cents = quant.centroid_table
    if center and not translate:   # every reconstruction holds the centre direction: <R q, R m>
        qoff[:, 0] = quant.rotation.apply(qq) @ quant.rotation.apply(index.mean[None, :])[0]
        cents = quant.centroid_table.copy()   # the codebook narrowed to the centred spread
        cents[0] *= np.sqrt(1.0 - index.mean.astype(np.float64) @ index.mean)
    if index.spread is not None:   # the codes are of the coordinates over their spreads
        qv[:, 0, :] *= index.spread
    scores = ref.score_codes(index._store.codes, index._store.factors, qv, cents, quant.segments, qoff)
    if metric == "l2":
        scores = (qq.astype(np.float64) ** 2).sum(1)[:, None] - scores
        order = np.argsort(scores, axis=1, kind="stable")[:, :20]
    else:
        if translate:   # the per-query part of <q, x>: <q, m>
            scores = scores + ((qq + index.mean).astype(np.float64) @ index.mean)[:, None]
        order = np.argsort(-scores, axis=1, kind="stable")[:, :20]
    want = np.take_along_axis(scores, order, 1)
    np.testing.assert_allclose(D, np.maximum(want, 0) if metric == "l2" else want, rtol=1e-4, atol=1e-4)
    # ids agree except where two scores are equal up to rounding
    same = (I == order) | np.isclose(np.take_along_axis(scores, I, 1), want, rtol=1e-5, atol=1e-5)
    assert same.all()


@pytest.mark.parametrize("variant,correction", [("mse", "ip"), ("mse", "none"), ("prod", "ip")])
@pytest.mark.parametrize("metric", ["cosine", "ip", "l2"])
def test_scan_factors_are_the_formula_rounded_once(metric, variant, correction):
    """Weights: ||x|| / <u, u_hat> (0 where that is not positive), ||x||, or ||x|| and ||x|| * gamma;
    under l2 doubled, with -||x||^2 last; computed in float64, rounded once to float32."""
    rng = np.random.default_rng(7)
    norms = rng.uniform(0.5, 2.0, 40).astype(np.float32)
    norms[0] = 3e38   # its l2 weights overflow float32: inf, which add rejects
    dots = rng.uniform(0.3, 1.0, 40).astype(np.float32)
    dots[1:5] = [0.0, -0.2, np.nan, 1e-30]
    gammas = rng.uniform(0.0, 0.5, 40).astype(np.float32)
    index = ta.Index(8, bits=3, metric=metric, variant=variant, correction=correction)
    got = index._scan_factors(norms, dots, gammas)
    n64, d64 = norms.astype(np.float64), dots.astype(np.float64)
    if variant == "prod":
        want = [n64, n64 * gammas.astype(np.float64)]
    elif correction == "ip":
        want = [np.array([n / d if d > 0 else 0.0 for n, d in zip(n64, d64)])]
    else:
        want = [n64]
    if metric == "l2":
        want = [2.0 * w for w in want] + [-n64 * n64]
    elif index._biased:   # the "translate" estimator's bias column: none given, zeros
        want = want + [np.zeros(40)]
    with np.errstate(over="ignore"):
        want = np.stack(want, axis=1).astype(np.float32)
    assert got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_array_equal(got, want)
    if variant == "mse" and correction == "ip":
        assert (got[2:4, 0] == 0).all() and np.isfinite(got[4, 0]) and got[4, 0] > 0


def test_correction_makes_inner_products_unbiased(data_64):
    x, q = data_64
    plain = ta.Index(64, bits=2, metric="ip", correction="none", center=False)
    corrected = ta.Index(64, bits=2, metric="ip", correction="ip", center=False)
    true = q.astype(np.float64) @ x.T.astype(np.float64)
    slopes = {}
    for name, index in (("plain", plain), ("corrected", corrected)):
        index.add(x)
        D, I = index.search(q, 4000)
        t = np.take_along_axis(true, I, 1)
        slopes[name] = (D * t).sum() / (t * t).sum()
    assert slopes["plain"] < 0.93            # MSE codes shrink inner products by ~(1 - D_mse)
    assert abs(slopes["corrected"] - 1.0) < 0.02


def test_center_auto_only_with_enough_vectors(data_64):
    x, q = data_64
    a = ta.Index(64, bits=4, center="auto")
    a.add(x[:10])
    a.add(x[10:])
    assert a.mean is None                     # first add too small: stays data-oblivious
    b = ta.Index(64, bits=4, center="auto")
    b.add(x)
    assert b.mean is not None
    given = ta.Index(64, bits=4, center=np.zeros(64))
    given.add(x)
    assert np.array_equal(given.mean, np.zeros(64, np.float32))


def test_ids_default_explicit_and_removal(data_64):
    x, q = data_64
    index = ta.Index(64, bits=4, metric="l2")
    index.add(x[:100])
    index.add(x[100:200], ids=np.arange(1000, 1100))
    index.add(x[200:300])                       # continues after the largest id
    assert len(index) == 300
    assert index.ids[200] == 1100
    D, I = index.search(x[150:151], 1)
    assert I[0, 0] == 1050
    assert index.remove([1050, 3, 1101]) == 3
    assert len(index) == 297
    D, I = index.search(x[150:151], 300)
    assert 1050 not in I and 3 not in I and 1101 not in I
    assert (I[0, 297:] == -1).all() and np.isinf(D[0, 297:]).all()
    assert sorted(I[0, :297].tolist()) == sorted(index.ids.tolist())
    # removed ids never come back, re-adding the same id is a new vector
    index.add(x[150:151], ids=[1050])
    D, I = index.search(x[150:151], 1)
    assert I[0, 0] == 1050
    assert index.remove([5], missing="ignore") == 1
    assert index.remove([5], missing="ignore") == 0
    with pytest.raises(ValueError, match="ids must be in the index, got unknown id 5"):
        index.remove([6, 5])
    assert 6 in index.ids                        # the failed call removed nothing


def test_remove_everything_then_search():
    x = np.random.default_rng(0).standard_normal((50, 16)).astype(np.float32)
    index = ta.Index(16, bits=2, metric="ip")
    index.add(x)
    assert index.remove(np.arange(50)) == 50
    D, I = index.search(x[:2], 3)
    assert (I == -1).all() and np.isneginf(D).all()


def test_k_larger_than_index_pads():
    x = np.random.default_rng(0).standard_normal((5, 16)).astype(np.float32)
    index = ta.Index(16, bits=2, metric="l2")
    index.add(x)
    D, I = index.search(x[0], 8)                 # 1-D query is one row
    assert I.shape == (1, 8) and (I[0, 5:] == -1).all() and np.isposinf(D[0, 5:]).all()
    assert I[0, 0] == 0
    empty = ta.Index(16)
    D, I = empty.search(x, 2)
    assert (I == -1).all()


def test_input_dtypes_are_converted_once(data_64):
    x, q = data_64
    results = []
    for dtype in (np.float16, np.float32, np.float64):
        index = ta.Index(64, bits=4, metric="ip", center=False)
        index.add(x.astype(dtype).astype(np.float32).astype(dtype))
        results.append(index.search(q.astype(dtype), 5)[1])
    assert np.array_equal(results[1], results[2])
    ints = ta.Index(4, bits=4, metric="l2")
    ints.add(np.arange(40).reshape(10, 4))
    assert ints.search(np.arange(4), 1)[1][0, 0] == 0


def test_nbytes_and_code_bytes():
    index = ta.Index(384, bits=2, metric="cosine", center=False)
    assert index.code_bytes == 96 + 4
    index.add(np.random.default_rng(0).standard_normal((10, 384)))
    assert index.nbytes == 10 * (96 + 4 + 8 + 8)     # fast-scan also holds the factors in split order
    flat = ta.Index(384, bits=2, metric="cosine", center=False, layout="flat")
    flat.add(np.random.default_rng(0).standard_normal((10, 384)))
    assert flat.nbytes == 10 * (96 + 4 + 8)
    assert ta.Index(384, bits=2, metric="l2").code_bytes == 96 + 8
    # the "translate" estimator's weight and bias as two float16 under cosine and ip
    assert ta.Index(384, bits=2, metric="cosine").code_bytes == 96 + 4
    assert ta.Index(384, bits=2, metric="ip").code_bytes == 96 + 4
    assert ta.Index(384, bits=2, metric="ip", estimator="direction").code_bytes == 96 + 4
    assert ta.Index(384, bits=2, variant="prod").code_bytes == 96 + 8


def test_threads_argument_gives_same_results(data_64):
    x, q = data_64
    index = ta.Index(64, bits=3)
    index.add(x)
    before = numba.get_num_threads()
    D1, I1 = index.search(q, 10, threads=1)
    assert numba.get_num_threads() == before
    D2, I2 = index.search(q[:1], 10)            # one query: the database is split across threads
    np.testing.assert_array_equal(I1[:1], I2)
    ta.set_num_threads(1)
    try:
        D3, I3 = index.search(q, 10)
    finally:
        ta.set_num_threads(before)
    np.testing.assert_array_equal(I1, I3)
    with pytest.raises(ValueError, match="threads must be >= 1, got 0"):
        index.search(q, 1, threads=0)


@pytest.mark.parametrize("layout", ["fastscan", "flat"])
def test_a_failed_add_changes_nothing(data_64, layout):
    """Codes are written where the store keeps them before x is checked: a rejected add must leave no trace."""
    x, q = data_64
    index = ta.Index(64, bits=2, layout=layout)
    bad = x[:1000].copy()
    bad[700, 3] = np.inf
    with pytest.raises(ValueError, match="x must be finite: row 700 holds NaN or inf"):
        index.add(bad)   # would have set the centre (center="auto", >= 256 rows)
    assert len(index) == 0 and index.mean is None
    index.add(x[:37])    # a partial block of 32, whose free lanes the next, failing, add writes into
    with pytest.raises(ValueError, match="x row 2 is a zero vector"):
        index.add(np.concatenate([x[37:39], np.zeros((1, 64), np.float32), x[39:100]]))
    index.add(x[37:])
    clean = ta.Index(64, bits=2, layout=layout)
    clean.add(x[:37])
    clean.add(x[37:])
    np.testing.assert_array_equal(index._store.codes, clean._store.codes)
    np.testing.assert_array_equal(index._store.factors, clean._store.factors)
    for got, want in zip(index.search(q, 10), clean.search(q, 10)):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dim", [64, 300])   # the dense rotation and the Hadamard one
def test_rows_too_large_for_float32_are_rejected(dim):
    x = np.ones((5, dim), np.float32)
    x[2] = 1e38   # finite, but its norm is not a float32
    index = ta.Index(dim, bits=2, metric="ip")
    with pytest.raises(ValueError, match=r"x row 2 is too large to encode: it overflows float32 "
                                         r"\(largest magnitude 1e\+38\)"):
        index.add(x)
    assert len(index) == 0


def test_bad_input_errors(data_64):
    x, q = data_64
    index = ta.Index(64, bits=4, metric="cosine")
    index.add(x[:100])
    with pytest.raises(ValueError, match=r"x must have 64 columns \(the index dim\), got shape \(2, 63\)"):
        index.add(np.zeros((2, 63)))
    with pytest.raises(ValueError, match="x must be a 2-D array of shape \\(n, 64\\), got ndim 3"):
        index.add(np.zeros((2, 2, 64)))
    with pytest.raises(TypeError, match="x must hold real numbers .* got dtype <U1"):
        index.add(np.full((2, 64), "a"))
    with pytest.raises(TypeError, match="x must hold real numbers .* got dtype complex128"):
        index.add(np.zeros((2, 64), complex))
    bad = x[:5].copy()
    bad[3, 7] = np.nan
    with pytest.raises(ValueError, match="x must be finite: row 3 holds NaN or inf"):
        index.add(bad)
    bad[3, 7] = np.inf
    with pytest.raises(ValueError, match="q must be finite: row 3"):
        index.search(bad, 1)
    with pytest.raises(ValueError, match="k must be >= 1, got 0"):
        index.search(q, 0)
    with pytest.raises(TypeError, match="k must be an integer, got float"):
        index.search(q, 2.0)
    with pytest.raises(ValueError, match="ids must be unique, got duplicate id 7"):
        index.add(x[:3], ids=[7, 8, 7])
    with pytest.raises(ValueError, match="ids must not be in the index already, got id 5"):
        index.add(x[:2], ids=[500, 5])
    with pytest.raises(ValueError, match=r"ids must have one id per vector \(2\), got 3"):
        index.add(x[:2], ids=[1000, 1001, 1002])
    with pytest.raises(TypeError, match="ids must be integers"):
        index.add(x[:2], ids=[1.5, 2.5])
    zero = x[:3].copy()
    zero[1] = 0
    with pytest.raises(ValueError, match="x row 1 is a zero vector, which has no direction under metric 'cosine'"):
        index.add(zero)
    with pytest.raises(ValueError, match="q row 1 is a zero vector"):
        index.search(zero, 1)
    assert len(index) == 100                     # nothing was added by the failed calls
    with pytest.raises(ValueError, match="metric must be one of 'ip', 'cosine', 'l2', got 'dot'"):
        ta.Index(64, metric="dot")
    with pytest.raises(ValueError, match="variant must be one of 'mse', 'prod', got 'pq'"):
        ta.Index(64, variant="pq")
    with pytest.raises(ValueError, match=r"ids must be non-negative \(-1 marks a missing result\), got -1"):
        ta.Index(64).add(np.ones((2, 64)), ids=[3, -1])
    with pytest.raises(ValueError, match="center must be 'auto', True, False or a \\(64,\\) array"):
        ta.Index(64, center=np.zeros(3))
    with pytest.raises(ValueError, match="dim must be >= 2, got 0"):
        ta.Index(0)
    # a zero vector is fine under ip and l2
    for metric in ("ip", "l2"):
        other = ta.Index(64, bits=2, metric=metric)
        other.add(np.zeros((3, 64)))
        assert len(other) == 3


# -- numeric edges (issue 17) ------------------------------------------------------------------------

def _state(index):
    return len(index), index.ids.tolist(), index._store.next_id


def test_ids_leave_room_for_the_next_default_id(tmp_path, data_64):
    x = data_64[0][:3]
    index = ta.Index(64, bits=2)
    with pytest.raises(ValueError, match="ids must be at most 9223372036854775806, got 9223372036854775807"):
        index.add(x[:1], ids=[2 ** 63 - 1])
    assert len(index) == 0
    index.add(x[:1], ids=[2 ** 63 - 2])              # the largest id: next_id is int64's max
    before = _state(index)
    with pytest.raises(ValueError, match="ids must be given: the 1 default ids from 9223372036854775807"):
        index.add(x[1:2])
    assert _state(index) == before
    index.add(x[1:3], ids=[5, 6])                   # explicit ids still work
    index.save(tmp_path / "big.tann")                # used to raise OverflowError
    assert ta.load(tmp_path / "big.tann").ids.tolist() == [2 ** 63 - 2, 5, 6]


def test_nan_row_is_named_when_it_spoils_the_centre(data_64):
    x = data_64[0][:300].copy()
    x[250, 7] = np.nan
    for metric in ("l2", "cosine"):
        index = ta.Index(64, bits=2, metric=metric)    # centre="auto" estimates from >= 256 rows
        with pytest.raises(ValueError, match="x must be finite: row 250 holds NaN or inf"):
            index.add(x)
        assert len(index) == 0 and index.mean is None


def test_huge_k_and_rerank_are_clamped_to_the_index_or_refused(data_64):
    x, q = data_64
    index = ta.Index(64, bits=2, metric="l2", keep_vectors=True)
    index.add(x[:500])
    D10, I10 = index.search(q[:3], 10)
    D, I = index.search(q[:3], 600)                 # beyond len: padded, the kernel asked for 500
    assert D.shape == I.shape == (3, 600)
    np.testing.assert_array_equal(I[:, :10], I10)
    assert (I[:, 500:] == -1).all() and np.isinf(D[:, 500:]).all() and (I[:, :500] >= 0).all()
    for k in (10 ** 9, 2 ** 62):                    # a bare MemoryError / "array is too big" before
        with pytest.raises(ValueError, match=f"k must be at most 65536 or the 500 vectors held .* got {k}"):
            index.search(q[:3], k)
    Dr, Ir = index.search(q[:3], 10, rerank=10 ** 9)   # rerank beyond len: every vector, exactly
    np.testing.assert_array_equal(Ir, exact_topk(x[:500], q[:3], 10, "l2"))
    Dr, Ir = index.search(q[:3], 700, rerank=10 ** 9)
    assert Ir.shape == (3, 700) and (Ir[:, 500:] == -1).all() and (Ir[:, :500] >= 0).all()
    empty = ta.Index(64, metric="ip")
    D, I = empty.search(q[:2], 65_536)              # padding alone, up to the limit
    assert D.shape == (2, 65_536) and (I == -1).all() and (D == -np.inf).all()
    with pytest.raises(ValueError, match="k must be at most 65536 or the 0 vectors held"):
        empty.search(q[:2], 65_537)


def test_l2_queries_too_large_for_float32_distances(data_64):
    x, q = data_64
    index = ta.Index(64, bits=2, metric="l2")
    index.add(x[:300])
    with pytest.raises(ValueError, match="q row 1 is too large for metric 'l2': its squared norm"):
        index.search(np.stack([q[0], np.full(64, 1e19, np.float32)]), 5)
    with np.errstate(all="raise"):                  # no silent RuntimeWarning either
        D, I = index.search(np.full((1, 64), 1e15, np.float32), 5)
    assert np.isfinite(D).all() and (I >= 0).all()


@pytest.mark.parametrize("variant,bits", [("mse", 4), ("prod", 3)])
def test_dense_rotation_add_is_chunked(monkeypatch, data_64, variant, bits):
    """Codes and factors do not depend on the chunking, and an add's peak stays near what it keeps."""
    import tracemalloc

    from turboann import quantizer
    x = np.tile(data_64[0], (5, 1))                  # 20,000 x 64, dense rotation
    whole = ta.Index(64, bits=bits, variant=variant, metric="l2", layout="flat", center=False)
    whole.add(x)
    monkeypatch.setattr(quantizer, "_ENCODE_CHUNK", 1000)
    chunked = ta.Index(64, bits=bits, variant=variant, metric="l2", layout="flat", center=False)
    chunked.add(x[:10])                              # compiled and warm
    chunked = ta.Index(64, bits=bits, variant=variant, metric="l2", layout="flat", center=False)
    tracemalloc.start()
    chunked.add(x)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    np.testing.assert_array_equal(chunked._store.codes, whole._store.codes)
    np.testing.assert_array_equal(chunked._store.factors, whole._store.factors)
    kept = chunked._store.nbytes
    # a rotated copy of x alone would be 256 B a vector; chunks of 1,000 rows cost a few hundred KB
    assert peak < kept + 40 * x.shape[0] + 3_000_000, (peak, kept)
