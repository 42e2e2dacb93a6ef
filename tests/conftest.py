import numpy as np
import pytest


def clustered(n, dim, seed, *, clusters=32, spread=1.0, offset=0.0):
    """Seeded clustered data with a shared offset direction, like real embeddings."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim))
    x = centres[rng.integers(0, clusters, n)] + spread * rng.standard_normal((n, dim))
    x += offset * rng.standard_normal(dim)   # a common direction shared by every row
    return x.astype(np.float32)


def exact_topk(x, q, k, metric):
    """Brute-force ids (nq, k) by the true metric, float64."""
    x = x.astype(np.float64)
    q = q.astype(np.float64)
    if metric == "cosine":
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
    if metric == "l2":
        s = -((q * q).sum(1)[:, None] - 2 * q @ x.T + (x * x).sum(1)[None, :])
    else:
        s = q @ x.T
    return np.argsort(-s, axis=1, kind="stable")[:, :k]


def recall(found, truth):
    k = truth.shape[1]
    return np.mean([len(set(f[:k]) & set(t)) / k for f, t in zip(found, truth)])


@pytest.fixture(scope="session")
def data_64():
    x = clustered(4100, 64, seed=1, offset=1.0)
    return x[:4000], x[4000:]


def write_ann_file(path, *, n=2000, nq=50, dim=32, distance="angular", seed=0, k=100):
    """A seeded clustered ann-benchmarks HDF5 file with exact ground truth; returns (train, test)."""
    from turboann import datasets

    x = clustered(n + nq, dim, seed, offset=0.5)
    train, test = x[:n], x[n:]
    neighbors, distances = datasets.exact_ground_truth(train, test, distance, k)
    datasets.write_ann_benchmarks(path, train, test, neighbors, distances, distance)
    return train, test
