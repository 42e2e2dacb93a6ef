"""Seeded synthetic vector sets for bench/core_recall.py: data that was not used to tune turboann.

Each family draws n + queries rows x = mean + B (sqrt(spectrum) * z), z ~ N(0, I),
B a seeded random orthonormal basis, then scales row r by a radial factor
(heavy-tailed norms where the family asks for them). Queries come from the
same law, held out from the train rows. Ground truth is exact (float64).

    decay      a power-law spectrum lambda_j ~ (j + 1)^-alpha: low effective dimension
    shared     one dominant shared direction (the mean) plus a few strong directions
    heavy      heavy-tailed norms (|Student-t| radial factor)
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from turboann import datasets, eval as ev

K_TRUTH = 100


@dataclass(frozen=True)
class Family:
    """One synthetic set: its law and size. Spectrum lambda_j = (j + 1)^-alpha, times `strong_gain`
    for the first `strong` directions; mean of length mean_norm * sqrt(sum lambda) along a random
    direction; radial factor: 1, lognormal(sigma) or 1 + |t_nu| / 2."""
    name: str
    dim: int
    metric: str          # "cosine" | "ip" | "l2"
    n: int
    alpha: float
    strong: int = 0
    strong_gain: float = 1.0
    mean_norm: float = 0.0
    radial: str = "none"  # "none" | "lognormal" | "student"
    radial_param: float = 0.0
    queries: int = 1000


FAMILIES = {f.name: f for f in (
    Family("decay-768-cosine", 768, "cosine", 50_000, alpha=1.0),
    Family("decay-3072-cosine", 3072, "cosine", 20_000, alpha=0.8, mean_norm=0.8),
    Family("shared-1536-ip", 1536, "ip", 30_000, alpha=0.5, strong=4, strong_gain=30.0, mean_norm=1.2,
           radial="lognormal", radial_param=0.4),
    Family("shared-384-cosine", 384, "cosine", 50_000, alpha=0.3, strong=1, strong_gain=60.0, mean_norm=2.0),
    Family("heavy-256-l2", 256, "l2", 50_000, alpha=0.7, radial="student", radial_param=3.0),
    Family("few-512-l2", 512, "l2", 50_000, alpha=0.2, strong=8, strong_gain=80.0, mean_norm=0.5,
           radial="lognormal", radial_param=0.3),
)}


@dataclass(frozen=True)
class SyntheticSet(datasets.Dataset):
    """A `turboann.datasets.Dataset` whose distance may also be "dot" (distances -<q, x>, metric "ip")."""
    family_metric: str = "cosine"

    @property
    def metric(self) -> str:
        return self.family_metric


def draw(family: Family, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(train (n, dim), test (queries, dim)) float32 of a family."""
    rng = np.random.default_rng([seed, zlib.crc32(family.name.encode())])
    d = family.dim
    lam = (np.arange(d) + 1.0) ** -family.alpha
    lam[:family.strong] *= family.strong_gain
    basis, _ = np.linalg.qr(rng.standard_normal((d, d)))
    mean_dir = rng.standard_normal(d)
    mean = mean_dir / np.linalg.norm(mean_dir) * family.mean_norm * np.sqrt(lam.sum())
    rows = family.n + family.queries
    out = np.empty((rows, d), np.float32)
    scale = (basis * np.sqrt(lam)[None, :]).T   # z @ scale = B (sqrt(lam) * z)
    for lo in range(0, rows, 8192):
        z = rng.standard_normal((min(8192, rows - lo), d))
        x = z @ scale + mean
        if family.radial == "lognormal":
            x *= rng.lognormal(0.0, family.radial_param, (x.shape[0], 1))
        elif family.radial == "student":
            x *= 1.0 + np.abs(rng.standard_t(family.radial_param, (x.shape[0], 1))) / 2.0
        out[lo:lo + x.shape[0]] = x
    return out[:family.n], out[family.n:]


def ip_ground_truth(train: np.ndarray, test: np.ndarray, k: int = K_TRUTH):
    """(neighbors (nq, k) int64, distances (nq, k) float64 = -<q, x>), largest inner product first."""
    scores = test.astype(np.float64) @ train.astype(np.float64).T
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    top = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-top, axis=1, kind="stable")
    ids = np.take_along_axis(part, order, axis=1)
    return ids.astype(np.int64), -np.take_along_axis(top, order, axis=1)


def load(name: str, seed: int = 0, queries: int | None = None) -> SyntheticSet:
    """The family `name` drawn with `seed`, its first `queries` queries (default all), exact ground truth."""
    family = FAMILIES[name]
    train, test = draw(family, seed)
    if queries:
        test = test[:queries]
    if family.metric == "ip":
        neighbors, distances = ip_ground_truth(train, test)
        distance = "dot"
    else:
        distance = "angular" if family.metric == "cosine" else "euclidean"
        neighbors, distances = datasets.exact_ground_truth(train, test, distance, K_TRUTH)
    return SyntheticSet(name, train, test, neighbors, distances, distance, family.metric)


def true_distances(ds, ids: np.ndarray) -> np.ndarray:
    """Exact distances of the found ids (nq, k): `eval.true_distances`, or -<q, x> for "dot"."""
    if ds.distance != "dot":
        return ev.true_distances(ds.train, ds.test, ids, ds.distance)
    x = ds.train[np.where(ids >= 0, ids, 0)].astype(np.float64)
    dist = -(x * ds.test.astype(np.float64)[:, None, :]).sum(axis=2)
    return np.where(ids >= 0, dist, np.inf)
