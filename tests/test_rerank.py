import numpy as np
import pytest

import turboann as ta
from turboann.kernels import reference as ref
from turboann.kernels.rerank import rerank_rows
from turboann.vectors import KeptVectors

from conftest import exact_topk, recall

METRICS = ["ip", "cosine", "l2"]


def exact_scores(x, q, ids, metric):
    """True similarity (ip, cosine) or squared distance (l2) of q[i] and x[ids[i, j]], float64."""
    x, q = x.astype(np.float64), q.astype(np.float64)
    if metric == "cosine":
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
    picked = x[ids]
    if metric == "l2":
        return ((q[:, None] - picked) ** 2).sum(-1)
    return (q[:, None] * picked).sum(-1)


def _flat(x, metric, bits=2):
    index = ta.Index(x.shape[1], bits=bits, metric=metric, keep_vectors=True)
    index.add(x)
    return index


def _ivf(x, metric, nlist=16):
    index = ta.IVFIndex(x.shape[1], nlist=nlist, bits=2, metric=metric, keep_vectors=True)
    index.train(x, threads=1)
    index.add(x)
    return index


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("kind", ["flat", "ivf"])
def test_rerank_raises_recall_and_gives_exact_scores(data_64, metric, kind):
    x, q = data_64
    index = _flat(x, metric) if kind == "flat" else _ivf(x, metric)
    probe = {} if kind == "flat" else {"nprobe": index.nlist}
    truth = exact_topk(x, q, 10, metric)
    base = recall(index.search(q, 10, **probe)[1], truth)
    mid = recall(index.search(q, 10, rerank=100, **probe)[1], truth)
    D, I = index.search(q, 10, rerank=10_000, **probe)
    # 2-bit codes alone: recall 0.5-0.6 here; a shortlist of 100 of 4000 rescored: >= 0.99
    assert base < 0.8 and mid >= 0.99 and recall(I, truth) >= 0.99, (base, mid)
    np.testing.assert_allclose(D, exact_scores(x, q, I, metric), rtol=1e-5, atol=1e-4)
    assert (np.diff(D, axis=1) >= 0).all() if metric == "l2" else (np.diff(D, axis=1) <= 0).all()


def test_rerank_within_the_probed_lists(data_64):
    """The shortlist comes from the probed lists only: at nprobe=1, the query's nearest list."""
    x, q = data_64
    index = _ivf(x, "l2")
    D, I = index.search(q, 10, nprobe=1, rerank=200)
    nearest = np.argmin(((q[:, None, :] - index.centroids[None]) ** 2).sum(-1), axis=1)
    lists = index._store
    for i in range(len(q)):
        found = I[i][I[i] >= 0]
        assert len(found) == min(10, lists.size[nearest[i]])
        assert (lists._owner[lists.slots(found)] == nearest[i]).all()


@pytest.mark.parametrize("l2", [False, True])
def test_rerank_kernel_equals_reference(l2):
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((50, 12)).astype(np.float32)
    rows = rng.integers(-1, 50, (7, 20))
    rows[0] = -1                                    # a query with no candidate at all
    q = rng.standard_normal((7, 12)).astype(np.float32)
    S, C = rerank_rows(vectors, rows, q, l2, 6)
    S_ref, C_ref = ref.rerank_rows(vectors, rows, q, l2, 6)
    np.testing.assert_allclose(S, S_ref, rtol=1e-10)
    np.testing.assert_array_equal(C, C_ref)
    assert (C[0] == -1).all() and np.isneginf(S[0]).all()


def test_kept_vectors_follow_adds_and_removes():
    rng = np.random.default_rng(1)
    kept = KeptVectors(4)
    x = rng.standard_normal((3000, 4)).astype(np.float32)
    kept.append(x[:2000], np.arange(2000) * 5)
    kept.append(x[2000:], np.arange(2000, 3000) * 5)
    kept.remove(np.array([0, 5, 14995, 7]))           # 7 is not held
    assert len(kept) == 2997
    ids = np.array([[10, 0, -1], [14990, 15, 3]])
    rows = kept.rows(ids)
    assert rows[0, 1] == rows[0, 2] == rows[1, 2] == -1
    np.testing.assert_array_equal(kept.vectors[rows[0, 0]], x[2])
    np.testing.assert_array_equal(kept.vectors[rows[1, 0]], x[2998])


@pytest.mark.parametrize("kind", ["flat", "ivf"])
def test_removed_vectors_are_never_reranked_and_persist(tmp_path, data_64, kind):
    x, q = data_64
    x = x[:1000]
    index = _flat(x, "ip") if kind == "flat" else _ivf(x, "ip", nlist=8)
    probe = {} if kind == "flat" else {"nprobe": 8}
    gone = np.arange(0, 1000, 2)
    index.remove(gone)
    D, I = index.search(q, 10, rerank=1000, **probe)
    assert not np.isin(I, gone).any()
    truth = np.arange(1, 1000, 2)[exact_topk(x[1::2], q, 10, "ip")]
    assert recall(I, truth) == 1.0
    index.save(tmp_path / "kept.tann")
    loaded = ta.load(tmp_path / "kept.tann")
    assert loaded.keep_vectors and type(loaded) is type(index)
    D2, I2 = loaded.search(q, 10, rerank=50, **probe)
    np.testing.assert_array_equal(I2, index.search(q, 10, rerank=50, **probe)[1])
    assert loaded.nbytes == index.nbytes


def test_rerank_errors(data_64):
    x, q = data_64
    plain = ta.Index(64)
    plain.add(x[:100])
    with pytest.raises(ValueError, match="rerank needs the vectors: build the index with keep_vectors=True"):
        plain.search(q, 5, rerank=50)
    kept = _flat(x[:100], "cosine")
    with pytest.raises(ValueError, match="rerank must be >= 5, got 4"):
        kept.search(q, 5, rerank=4)
    with pytest.raises(TypeError, match="rerank must be an integer, got float"):
        kept.search(q, 5, rerank=50.0)
    with pytest.raises(TypeError, match="keep_vectors must be True or False, got str"):
        ta.Index(64, keep_vectors="yes")


def test_padding_when_the_shortlist_is_short(data_64):
    x, q = data_64
    index = _flat(x[:3], "l2")
    D, I = index.search(q[:2], 5, rerank=8)
    assert (I[:, 3:] == -1).all() and np.isposinf(D[:, 3:]).all() and (I[:, :3] >= 0).all()


@pytest.mark.parametrize("stride", [1, 5, 10_000])
def test_kept_vector_rows_dense_and_sparse_ids(stride):
    """Compact ids use a dense table, spread ones a sorted search: the same rows either way."""
    rng = np.random.default_rng(stride)
    ids = rng.permutation(500) * stride
    kept = KeptVectors(2)
    kept.append(rng.standard_normal((500, 2)).astype(np.float32), ids)
    asked = np.concatenate([rng.choice(ids, 300), [-1, ids.max() + 1, ids.max() + stride + 7, 10**12]])
    rows = kept.rows(asked.reshape(2, -1))
    np.testing.assert_array_equal(rows.ravel()[:300], [np.flatnonzero(ids == a)[0] for a in asked[:300]])
    assert (rows.ravel()[300:] == -1).all()
