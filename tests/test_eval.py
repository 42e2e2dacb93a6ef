"""turboann.eval: ann-benchmarks recall rules on hand-made cases, and the comparison methods."""
import numpy as np
import pytest

from turboann import eval as ev


# -- true_distances -------------------------------------------------------------

def test_true_distances_hand_made():
    train = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 4.0]])
    queries = np.array([[2.0, 0.0], [0.0, 1.0]])
    ids = np.array([[0, 1, -1], [2, 0, 1]])
    ang = ev.true_distances(train, queries, ids, "angular")
    assert ang.shape == (2, 3) and ang.dtype == np.float64
    np.testing.assert_allclose(ang[0, :2], [0.0, 1.0])
    assert ang[0, 2] == np.inf
    np.testing.assert_allclose(ang[1], [1 - 4 / 5, 1.0, 0.0])
    euc = ev.true_distances(train, queries, ids, "euclidean")
    np.testing.assert_allclose(euc[0, :2], [1.0, np.sqrt(8.0)])   # not squared
    assert euc[0, 2] == np.inf
    np.testing.assert_allclose(euc[1], [np.sqrt(9 + 9), np.sqrt(2.0), 1.0])
    # turboann metric names are accepted as aliases
    np.testing.assert_array_equal(ev.true_distances(train, queries, ids, "l2"), euc)


def test_true_distances_brute_force_seeded():
    rng = np.random.default_rng(3)
    train = rng.standard_normal((500, 16)).astype(np.float32)
    queries = rng.standard_normal((7, 16)).astype(np.float32)
    ids = rng.integers(0, 500, (7, 9))
    got = ev.true_distances(train, queries, ids, "angular")
    for i in range(7):
        for j in range(9):
            a, b = queries[i].astype(np.float64), train[ids[i, j]].astype(np.float64)
            assert got[i, j] == pytest.approx(1 - a @ b / np.linalg.norm(a) / np.linalg.norm(b), abs=1e-12)
    got = ev.true_distances(train, queries, ids, "euclidean")
    want = np.linalg.norm(queries[:, None, :].astype(np.float64) - train[ids], axis=2)
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_true_distances_rejects_bad_input():
    train, q = np.zeros((4, 3)), np.ones((2, 3))
    with pytest.raises(ValueError, match="distance"):
        ev.true_distances(train, q, np.zeros((2, 1), int), "hamming")
    with pytest.raises(ValueError, match=r"ids must lie in \[-1, 4\)"):
        ev.true_distances(train, q, np.array([[0], [4]]), "euclidean")
    with pytest.raises(ValueError, match="ids must have one row per query"):
        ev.true_distances(train, q, np.zeros((3, 1), int), "euclidean")
    with pytest.raises(TypeError, match="ids must be integers"):
        ev.true_distances(train, q, np.zeros((2, 1)), "euclidean")
    with pytest.raises(ValueError, match="queries must have 3 columns"):
        ev.true_distances(train, np.ones((2, 4)), np.zeros((2, 1), int), "euclidean")


# -- knn_recall: the ann-benchmarks epsilon rule -------------------------------------

def test_knn_recall_counts_ties_at_the_kth_distance():
    gt = np.array([[0.1, 0.2, 0.3, 0.3, 0.4]])
    # Returned another item tied with the 3rd neighbour: it counts.
    found = np.array([[0.1, 0.3, 0.3, 9.0]])
    assert ev.knn_recall(gt, found, 3).tolist() == [1.0]
    # Only the first k found distances are read.
    assert ev.knn_recall(gt, np.array([[0.1, 9.0, 9.0, 0.2]]), 3).tolist() == [pytest.approx(1 / 3)]


def test_knn_recall_epsilon_edge():
    gt = np.array([[0.5, 1.0]])
    inside = np.array([[1.0 + 0.5e-3, 1.0 + 0.9e-3]])
    outside = np.array([[1.0 + 1.1e-3, 1.0 + 2e-3]])
    assert ev.knn_recall(gt, inside, 2).tolist() == [1.0]
    assert ev.knn_recall(gt, outside, 2).tolist() == [0.0]
    # epsilon=0: exactly the k-th distance still counts, anything above does not
    assert ev.knn_recall(gt, np.array([[1.0, 1.0 + 1e-9]]), 2, epsilon=0.0).tolist() == [0.5]
    # a larger epsilon admits more
    assert ev.knn_recall(gt, outside, 2, epsilon=0.01).tolist() == [1.0]


def test_knn_recall_padding_and_short_rows():
    gt = np.array([[0.1, 0.2, 0.3], [0.1, 0.2, 0.3]])
    found = np.array([[0.1, np.inf, np.nan], [0.1, 0.2, np.inf]])
    np.testing.assert_allclose(ev.knn_recall(gt, found, 3), [1 / 3, 2 / 3])
    # fewer than k results returned: still divided by k (ann-benchmarks)
    np.testing.assert_allclose(ev.knn_recall(gt, found[:, :1], 3), [1 / 3, 1 / 3])
    assert ev.mean_knn_recall(gt, found, 3) == pytest.approx(0.5)


def test_knn_recall_matches_ann_benchmarks_loop_on_random_data():
    """Against a direct transcription of ann-benchmarks' get_recall_values(knn_threshold)."""
    rng = np.random.default_rng(5)
    gt = np.sort(rng.random((40, 20)), axis=1)
    found = np.round(rng.random((40, 12)), 2)   # rounding makes ties and epsilon cases
    found[rng.random(found.shape) < 0.1] = np.inf
    for k, eps in [(1, 1e-3), (10, 1e-3), (10, 0.05), (12, 0.0)]:
        want = []
        for i in range(len(found)):
            t = gt[i][k - 1] + eps
            want.append(sum(1 for d in found[i][:k] if d <= t) / k)
        np.testing.assert_allclose(ev.knn_recall(gt, found, k, eps), want)


def test_knn_recall_end_to_end_brute_force():
    """Exact search scores 1; a shuffled result scores what the rule says."""
    rng = np.random.default_rng(9)
    train = rng.standard_normal((1000, 12)).astype(np.float32)
    queries = rng.standard_normal((20, 12)).astype(np.float32)
    all_ids = np.tile(np.arange(1000), (20, 1))
    d = ev.true_distances(train, queries, all_ids, "euclidean")
    order = np.argsort(d, axis=1)
    gt_dist = np.take_along_axis(d, order, axis=1)[:, :100]
    exact = order[:, :10]
    found = ev.true_distances(train, queries, exact, "euclidean")
    assert ev.mean_knn_recall(gt_dist, found, 10) == 1.0
    half = np.concatenate([order[:, :5], order[:, 500:505]], axis=1)
    found = ev.true_distances(train, queries, half, "euclidean")
    assert ev.mean_knn_recall(gt_dist, found, 10) == pytest.approx(0.5)
    assert ev.recall_at(half, order, 1) == 1.0
    assert ev.intersection_recall(half, order, 10) == pytest.approx(0.5)


def test_knn_recall_rejects_bad_input():
    gt = np.zeros((2, 5))
    with pytest.raises(ValueError, match="k must be <= 5"):
        ev.knn_recall(gt, np.zeros((2, 5)), 6)
    with pytest.raises(ValueError, match="found_distances must have one row per query"):
        ev.knn_recall(gt, np.zeros((3, 5)), 2)
    with pytest.raises(ValueError, match="epsilon"):
        ev.knn_recall(gt, np.zeros((2, 5)), 2, epsilon=-1.0)
    with pytest.raises(TypeError, match="k must be an integer"):
        ev.knn_recall(gt, np.zeros((2, 5)), 2.0)


# -- recall_at / intersection_recall ------------------------------------------------

def test_recall_at():
    ids = np.array([[5, 1, 2, 3], [0, 1, 2, 9], [-1, -1, -1, -1]])
    gt = np.array([[1, 7], [9, 8], [4, 3]])
    assert ev.recall_at(ids, gt, 1) == 0.0
    assert ev.recall_at(ids, gt, 2) == pytest.approx(1 / 3)
    assert ev.recall_at(ids, gt, 4) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="k must be <= 4"):
        ev.recall_at(ids, gt, 5)
    with pytest.raises(ValueError, match="gt_neighbors must be"):
        ev.recall_at(ids, gt[:2], 1)


def test_intersection_recall_has_no_tie_tolerance():
    ids = np.array([[1, 2, 3], [4, 4, -1]])
    gt = np.array([[3, 2, 9], [4, 5, 6]])
    assert ev.intersection_recall(ids, gt, 3) == pytest.approx((2 / 3 + 1 / 3) / 2)


def test_metric_for_distance():
    assert ev.metric_for_distance("angular") == "cosine"
    assert ev.metric_for_distance("euclidean") == "l2"
    with pytest.raises(ValueError, match="distance must be"):
        ev.metric_for_distance("ip")


# -- comparison methods ----------------------------------------------------------------

def _clustered(n, d, seed):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((16, d))
    x = centres[rng.integers(0, 16, n)] + 0.7 * rng.standard_normal((n, d))
    return x.astype(np.float32)


@pytest.fixture(scope="module", autouse=True)
def _faiss_one_thread():
    """OpenMP spin-waits: on a loaded 2-core machine a 2-thread k-means takes
    100x longer. One thread keeps these tests fast whatever else is running."""
    try:
        import faiss
    except ImportError:
        yield
        return
    old = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(old)


@pytest.fixture(scope="module")
def small():
    x = _clustered(2100, 32, seed=11)
    return x[:2000], x[2000:]


def _exact(x, q, k, metric):
    if metric == "cosine":
        ids = np.tile(np.arange(len(x)), (len(q), 1))
        d = ev.true_distances(x, q, ids, "angular")
    elif metric == "l2":
        d = ((q[:, None, :].astype(np.float64) - x[None]) ** 2).sum(2)
    else:
        d = -(q.astype(np.float64) @ x.T.astype(np.float64))
    return np.argsort(d, axis=1, kind="stable")[:, :k]


def _recall(found, truth):
    return np.mean([len(set(f) & set(t)) / truth.shape[1] for f, t in zip(found, truth)])


# name, metric, bits, expected code bytes at d = 32, recall 10@10 floor: measured
# values sit 0.10-0.15 above these floors; chance is 10/2000.
ANCHOR_CASES = [
    ("faiss-pq", "cosine", 4, 16, 0.7),
    ("faiss-pqfs", "l2", 4, 16, 0.7),
    ("faiss-rabitq", "cosine", 2, 28, 0.4),
    ("faiss-rabitq", "ip", 4, 36, 0.75),
    ("faiss-tq", "cosine", 4, 16, 0.7),
    ("faiss-tq-rr", "cosine", 4, 16, 0.7),
    ("turbovec", "cosine", 4, 20, 0.7),
    ("turbovec-cal", "ip", 3, 16, 0.65),
    ("faiss-sq8", "cosine", 8, 32, 0.9),
    ("faiss-flat", "l2", 6, 128, 0.999),
]
# k-means on all 2000 rows costs seconds here; a 1000-row sample keeps the test fast.
ANCHOR_OPTIONS = {"faiss-pq": {"max_train": 1000}}


@pytest.mark.parametrize("name,metric,bits,code_bytes,floor", ANCHOR_CASES)
def test_anchor_recall_shapes_and_bytes(small, name, metric, bits, code_bytes, floor):
    pytest.importorskip("turbovec" if name.startswith("turbovec") else "faiss")
    x, q = small
    m = ev.make_method(name, 32, bits, metric, seed=0, **ANCHOR_OPTIONS.get(name, {}))
    m.add(x)
    assert len(m) == 2000 and m.code_bytes == code_bytes and m.name == name
    D, I = m.search(q, 10)
    assert D.shape == I.shape == (100, 10) and D.dtype == np.float32 and I.dtype == np.int64
    assert ((I >= 0) & (I < 2000)).all()
    assert _recall(I, _exact(x, q, 10, metric)) >= floor
    if metric == "l2":
        assert (np.diff(D, axis=1) >= -1e-5).all()
    else:
        assert (np.diff(D, axis=1) <= 1e-5).all()


def test_turboann_method(small):
    pytest.importorskip("turboann.index")
    x, q = small
    m = ev.make_method("turboann", 32, 4, "cosine", seed=0)
    m.add(x)
    D, I = m.search(q, 10)
    assert D.shape == (100, 10) and I.dtype == np.int64
    assert m.code_bytes == m.index.code_bytes
    assert _recall(I, _exact(x, q, 10, "cosine")) >= 0.5


def test_methods_pad_when_fewer_than_k(small):
    pytest.importorskip("turbovec")
    x, q = small
    m = ev.make_method("turbovec", 32, 2, "cosine")
    m.add(x[:5])
    D, I = m.search(q[:3], 8)
    assert I.shape == (3, 8) and (I[:, 5:] == -1).all() and np.isneginf(D[:, 5:]).all()
    assert sorted(I[0, :5]) == [0, 1, 2, 3, 4]


def test_unavailable_combinations_say_why():
    pytest.importorskip("faiss")
    pytest.importorskip("turbovec")
    with pytest.raises(ev.MethodUnavailable, match="bits 5-8"):
        ev.make_method("faiss-sq8", 32, 4, "l2")
    with pytest.raises(ev.MethodUnavailable, match="bits 5-8"):
        ev.make_method("faiss-flat", 32, 2, "l2")
    with pytest.raises(ev.MethodUnavailable, match="inner product only"):
        ev.make_method("turbovec", 32, 4, "l2")
    with pytest.raises(ev.MethodUnavailable, match="bits must be 2, 3 or 4"):
        ev.make_method("turbovec", 32, 1, "cosine")
    with pytest.raises(ev.MethodUnavailable, match="only metric 'cosine'"):
        ev.make_method("faiss-tq", 32, 4, "l2")
    with pytest.raises(ev.MethodUnavailable, match="must divide dim"):
        ev.make_method("faiss-pqfs", 32, 3, "l2")
    # d=384 at 3 bits has no 8-bit PQ split: 9-bit sub-quantizers keep 144 bytes
    assert ev.make_method("faiss-pq", 384, 3, "l2").factory == "PQ128x9np"
    assert issubclass(ev.MethodUnavailable, ValueError)


def test_make_method_rejects_bad_arguments():
    with pytest.raises(ValueError, match="name must be one of .*'turbovec'.*got 'annoy'"):
        ev.make_method("annoy", 32, 4, "cosine")
    with pytest.raises(ValueError, match="metric must be one of"):
        ev.make_method("turboann", 32, 4, "hamming")
    with pytest.raises(TypeError, match="bits must be an integer"):
        ev.make_method("turboann", 32, "4", "cosine")


def test_method_search_rejects_bad_queries(small):
    pytest.importorskip("faiss")
    x, _ = small
    m = ev.make_method("faiss-rabitq", 32, 2, "cosine")
    m.add(x[:100])
    with pytest.raises(ValueError, match="q must have 32 columns"):
        m.search(np.zeros((2, 31)), 3)
    with pytest.raises(ValueError, match="zero vector"):
        m.search(np.zeros((2, 32)), 3)


def test_set_num_threads_reports_counts(monkeypatch):
    numba = pytest.importorskip("numba")
    monkeypatch.delenv("RAYON_NUM_THREADS", raising=False)   # restored afterwards
    old = numba.get_num_threads()
    try:
        got = ev.set_num_threads(1)
        assert got["numba"] == 1 and numba.get_num_threads() == 1
        assert got["turbovec"] >= 1
    finally:
        ev.set_num_threads(old)
    with pytest.raises(ValueError, match="n must be >= 1"):
        ev.set_num_threads(0)
