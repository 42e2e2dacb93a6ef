"""Evaluation, kept apart from the index: recall metrics and comparison methods.

Recall follows ann-benchmarks exactly, so numbers compare with published ones:

    true_distances   exact distances of the ids a method returned
    knn_recall       per-query k-NN recall with the ann-benchmarks epsilon rule
    mean_knn_recall  its mean over the queries
    intersection_recall  plain set recall k@k (no tie tolerance), for papers' numbers
    recall_at        R@1@k: how often the true nearest neighbour is in the first k

Comparison methods ("anchors") share one small interface, `Method`, made by
`make_method(name, dim, bits, metric)`: turboann itself, Faiss (PQ, PQ
FastScan, RaBitQ, its TurboQuant scalar quantizer) and turbovec. Faiss and
turbovec are optional (``pip install turboann[compare]``) and imported only
by the methods that use them.

Metrics are turboann's: "cosine" (ann-benchmarks "angular"), "l2"
("euclidean") and "ip". Under "cosine" every anchor is fed L2-normalised
vectors. Every `Method.search` returns D and I like `turboann.Index.search`:
D float32 (nq, k), a similarity (descending) for "cosine"/"ip" and a squared
L2 distance (ascending) for "l2"; I int64 (nq, k), padded with -1.
"""
from __future__ import annotations

import numbers
import os

import numpy as np

from . import _validate

__all__ = ["DISTANCES", "METHODS", "Method", "MethodUnavailable",
           "intersection_recall", "make_method", "mean_knn_recall", "knn_recall", "metric_for_distance", "recall_at",
           "set_num_threads", "true_distances"]

# ann-benchmarks distance name -> turboann metric.
DISTANCES = {"angular": "cosine", "euclidean": "l2"}
_DISTANCE_ALIASES = {"angular": "angular", "cosine": "angular", "euclidean": "euclidean", "l2": "euclidean"}
_COMPARE_HINT = "pip install turboann[compare]"
# Rows gathered at once by true_distances: bounds its float64 scratch to ~32 MB.
_GATHER_ELEMENTS = 1 << 22


# -- small checks ---------------------------------------------------------------

def _float_rows(name: str, x, dim: int | None = None) -> np.ndarray:
    """`x` as a C-contiguous float32 (n, d) array of finite values; d must equal `dim` if given."""
    arr = _validate.real_array(name, x)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (n, d), got shape {arr.shape}")
    if dim is not None and arr.shape[1] != dim:
        raise ValueError(f"{name} must have {dim} columns, got shape {arr.shape}")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} must be finite, got NaN or inf")
    return arr


def _int_matrix(name: str, ids) -> np.ndarray:
    arr = np.asarray(ids)
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{name} must be integers, got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (nq, k), got shape {arr.shape}")
    return arr.astype(np.int64, copy=False)


def _real_matrix(name: str, values) -> np.ndarray:
    arr = _validate.real_array(name, values)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (nq, k), got shape {arr.shape}")
    return arr


def _distance_name(distance: str) -> str:
    if not isinstance(distance, str) or distance not in _DISTANCE_ALIASES:
        raise ValueError(f"distance must be 'angular' or 'euclidean' (or 'cosine', 'l2'), got {distance!r}")
    return _DISTANCE_ALIASES[distance]


def metric_for_distance(distance: str) -> str:
    """turboann metric ("cosine" | "l2") for an ann-benchmarks distance ("angular" | "euclidean")."""
    return DISTANCES[_distance_name(distance)]


# -- recall ---------------------------------------------------------------------

def true_distances(train, queries, ids, distance: str) -> np.ndarray:
    """Exact ann-benchmarks distances from each query to the ids returned for it.

    train (n, d) and queries (nq, d) of any real dtype; ids (nq, k) integers in
    [-1, n). distance "angular" gives 1 - cos(q, x) (a zero vector counts as
    cos 0), "euclidean" gives ||q - x|| (not squared). Returns float64 (nq, k),
    +inf where ids == -1. Computed in float64.
    """
    kind = _distance_name(distance)
    train = _float_rows("train", train)
    queries = _float_rows("queries", queries, train.shape[1])
    ids = _int_matrix("ids", ids)
    if ids.shape[0] != queries.shape[0]:
        raise ValueError(f"ids must have one row per query ({queries.shape[0]}), got shape {ids.shape}")
    if ids.size and (ids.min() < -1 or ids.max() >= train.shape[0]):
        bad = ids[(ids < -1) | (ids >= train.shape[0])][0]
        raise ValueError(f"ids must lie in [-1, {train.shape[0]}) (-1 = no result), got {int(bad)}")
    out = np.full(ids.shape, np.inf)
    nq, k = ids.shape
    rows = max(1, _GATHER_ELEMENTS // max(1, k * train.shape[1]))
    for start in range(0, nq, rows):
        block = ids[start:start + rows]
        valid = block >= 0
        x = train[np.where(valid, block, 0)].astype(np.float64)        # (b, k, d)
        q = queries[start:start + rows].astype(np.float64)[:, None, :]  # (b, 1, d)
        if kind == "angular":
            dots = (x * q).sum(axis=2)
            norms = np.linalg.norm(x, axis=2) * np.linalg.norm(q, axis=2)
            cos = np.divide(dots, norms, out=np.zeros_like(dots), where=norms > 0)
            dist = 1.0 - cos
        else:
            dist = np.sqrt(((x - q) ** 2).sum(axis=2))
        out[start:start + rows] = np.where(valid, dist, np.inf)
    return out


def _check_recall_args(gt_distances, found_distances, k, epsilon):
    gt = _real_matrix("gt_distances", gt_distances)
    found = _real_matrix("found_distances", found_distances)
    if found.shape[0] != gt.shape[0]:
        raise ValueError(f"found_distances must have one row per query ({gt.shape[0]}), "
                         f"got shape {found.shape}")
    k = _validate.integer("k", k, low=1, high=gt.shape[1])
    if isinstance(epsilon, bool) or not isinstance(epsilon, numbers.Real) or not epsilon >= 0:
        raise ValueError(f"epsilon must be a real number >= 0, got {epsilon!r}")
    return gt, found, k, float(epsilon)


def knn_recall(gt_distances, found_distances, k: int, epsilon: float = 1e-3) -> np.ndarray:
    """Per-query k-NN recall in [0, 1], by the ann-benchmarks rule.

    ann-benchmarks' ``get_recall_values`` with ``knn_threshold``: for query i
    the threshold is t = gt_distances[i, k-1] + epsilon, and recall is the
    number of the first k found distances that are <= t, divided by k. Ties at
    the k-th distance therefore all count, and a missing result (+inf or NaN)
    never does.

    gt_distances (nq, >= k): the true sorted distances of the nearest
    neighbours (the dataset's "distances"); found_distances (nq, m): the TRUE
    distances of the returned ids, in returned order (see `true_distances`),
    of which the first min(m, k) are read. Returns float64 (nq,).
    """
    gt, found, k, eps = _check_recall_args(gt_distances, found_distances, k, epsilon)
    threshold = gt[:, k - 1].astype(np.float64) + eps
    with np.errstate(invalid="ignore"):
        hits = (found[:, :k] <= threshold[:, None]).sum(axis=1)
    return hits / float(k)


def mean_knn_recall(gt_distances, found_distances, k: int, epsilon: float = 1e-3) -> float:
    """Mean of `knn_recall` over the queries (ann-benchmarks' reported "k-nn" recall)."""
    return float(knn_recall(gt_distances, found_distances, k, epsilon).mean())


def intersection_recall(ids, gt_neighbors, k: int) -> float:
    """Plain set recall k@k: mean over queries of |first k ids  ∩  gt_neighbors[:, :k]| / k.

    No tolerance for ties, unlike `knn_recall`: many papers (and turbovec's
    own benchmarks) report this one; it runs ~0.01 below the ann-benchmarks
    value on data with near-duplicate neighbours. ids (nq, m >= k) and
    gt_neighbors (nq, >= k) integers. Returns a float in [0, 1].
    """
    ids = _int_matrix("ids", ids)
    gt = _int_matrix("gt_neighbors", gt_neighbors)
    k = _validate.integer("k", k, low=1, high=ids.shape[1])
    if gt.shape[0] != ids.shape[0] or gt.shape[1] < k:
        raise ValueError(f"gt_neighbors must be (nq={ids.shape[0]}, >= {k}), got shape {gt.shape}")
    if ids.shape[0] == 0:
        return 0.0
    hits = [len(set(f.tolist()) & set(t.tolist())) for f, t in zip(ids[:, :k], gt[:, :k])]
    return float(np.mean(hits) / k)


def recall_at(ids, gt_neighbors, k: int) -> float:
    """R@1@k: the fraction of queries whose true nearest neighbour gt_neighbors[:, 0]
    is among the first k returned ids.

    ids (nq, m >= k) integers, returned order; gt_neighbors (nq, >= 1) integers.
    Returns a float in [0, 1].
    """
    ids = _int_matrix("ids", ids)
    gt = _int_matrix("gt_neighbors", gt_neighbors)
    if gt.shape[0] != ids.shape[0] or gt.shape[1] < 1:
        raise ValueError(f"gt_neighbors must be (nq={ids.shape[0]}, >= 1), got shape {gt.shape}")
    k = _validate.integer("k", k, low=1, high=ids.shape[1])
    if ids.shape[0] == 0:
        return 0.0
    return float((ids[:, :k] == gt[:, :1]).any(axis=1).mean())


# -- threads --------------------------------------------------------------------

# turbovec searches on rayon's global pool, which reads RAYON_NUM_THREADS once,
# when it starts (the first turbovec add or search of the process). After
# that its size cannot change; we remember what it started with.
_rayon_threads: int | None = None


def _note_rayon_start() -> None:
    global _rayon_threads
    if _rayon_threads is None:
        env = os.environ.get("RAYON_NUM_THREADS", "")
        _rayon_threads = int(env) if env.isdigit() and int(env) > 0 else (os.cpu_count() or 1)


def set_num_threads(n: int) -> dict:
    """Threads for later adds and searches of every library used here.

    faiss: OpenMP (``faiss.omp_set_num_threads``), if faiss is installed.
    turboann: Numba's pool (``numba.set_num_threads``), capped at NUMBA_NUM_THREADS.
    turbovec: rayon's global pool reads RAYON_NUM_THREADS once, at the first
    turbovec add or search in the process; this sets that variable, so it
    works only before then. Afterwards turbovec keeps the count it started with.

    Returns {"faiss": int | None, "numba": int, "turbovec": int} — the counts in
    force afterwards (faiss None when it is not installed).
    """
    import numba

    n = _validate.integer("n", n, low=1)
    result = {"faiss": None}
    try:
        import faiss
    except ImportError:
        pass
    else:
        faiss.omp_set_num_threads(n)
        result["faiss"] = n
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    result["numba"] = numba.get_num_threads()
    if _rayon_threads is None:
        os.environ["RAYON_NUM_THREADS"] = str(n)
        result["turbovec"] = n
    else:
        result["turbovec"] = _rayon_threads
    return result


# -- comparison methods -----------------------------------------------------------

class MethodUnavailable(ValueError):
    """The method cannot run with these settings (metric, dim or bits); the message says why."""


class Method:
    """One comparison method: a flat index over compressed codes.

    Attributes: name, dim, bits, metric ("cosine" | "l2" | "ip"), seed, and
    `code_bytes` (bytes per vector of codes plus per-vector factors, ids not
    counted). `add(x)` includes any training or calibration the method needs
    on its first call; `search(q, k)` returns D float32 (nq, k) and I int64
    (nq, k) as described in the module docstring. Subclasses implement
    `_add(x)` and `_search(q, k)` on prepared float32 rows (unit rows under
    "cosine").
    """

    name: str = ""
    normalize_cosine = True   # feed unit rows under "cosine"
    checks_rows = False       # the library rejects NaN/inf rows itself: no pass of ours over them

    def __init__(self, dim: int, bits: int, metric: str, *, seed: int = 0):
        self.dim = _validate.integer("dim", dim, low=1)
        self.bits = _validate.integer("bits", bits, low=1, high=8)
        self.metric = _validate.choice("metric", metric, _validate.METRICS)
        self.seed = _validate.integer("seed", seed, low=0)
        self._n = 0

    def __len__(self) -> int:
        return self._n

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(name={self.name!r}, dim={self.dim}, bits={self.bits}, "
                f"metric={self.metric!r}, n={len(self)}, code_bytes={self.code_bytes})")

    @property
    def code_bytes(self) -> int:
        raise NotImplementedError

    def describe(self) -> str:
        """How the method is built (factory string, options), for reports."""
        return self.name

    def add(self, x) -> None:
        """Add rows x (n, dim) of any real dtype; the first call trains/calibrates if needed."""
        x = self._prepare("x", x)
        if x.shape[0]:
            self._add(x)
            self._n += x.shape[0]

    def search(self, q, k: int) -> tuple[np.ndarray, np.ndarray]:
        """k best rows for each query row of q (nq, dim): D float32 (nq, k), I int64 (nq, k)."""
        q = self._prepare("q", q)
        k = _validate.integer("k", k, low=1)
        if self._n == 0 or q.shape[0] == 0:
            return self._pad(np.empty((q.shape[0], 0), np.float32), np.empty((q.shape[0], 0), np.int64), k)
        D, I = self._search(q, k)
        return self._pad(D, I, k)

    # -- helpers for subclasses
    def _prepare(self, name: str, x) -> np.ndarray:
        if self.checks_rows:
            return _validate.rows(name, x, self.dim)
        x = _float_rows(name, x, self.dim)
        if self.metric == "cosine" and self.normalize_cosine:
            norms = np.linalg.norm(x, axis=1)
            if (norms == 0).any():
                raise ValueError(f"{name} row {int(np.flatnonzero(norms == 0)[0])} is a zero vector, "
                                 f"which has no direction under metric 'cosine'")
            x = np.ascontiguousarray(x / norms[:, None], dtype=np.float32)
        return x

    def _pad(self, D, I, k):
        """Pad/convert to (nq, k): missing ids -1 with the worst score for the metric."""
        D = np.asarray(D, dtype=np.float32)
        I = np.asarray(I, dtype=np.int64)
        worst = np.float32(np.inf if self.metric == "l2" else -np.inf)
        if I.shape[1] < k:
            extra = k - I.shape[1]
            D = np.concatenate([D, np.full((D.shape[0], extra), worst, np.float32)], axis=1)
            I = np.concatenate([I, np.full((I.shape[0], extra), -1, np.int64)], axis=1)
        D = np.ascontiguousarray(D[:, :k])
        I = np.ascontiguousarray(I[:, :k])
        D[I < 0] = worst
        return D, I

    def _add(self, x: np.ndarray) -> None:
        raise NotImplementedError

    def _search(self, q: np.ndarray, k: int):
        raise NotImplementedError


def _sample_rows(x: np.ndarray, rows: int, seed: int) -> np.ndarray:
    """A seeded uniform random sample of at most `rows` rows of x, in their original order."""
    if x.shape[0] <= rows:
        return x
    pick = np.sort(np.random.default_rng(seed).choice(x.shape[0], rows, replace=False))
    return x[pick]


# -- Faiss --------------------------------------------------------------------------

def _import_faiss():
    try:
        import faiss
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(f"this method needs faiss: {_COMPARE_HINT}") from exc
    return faiss


class _FaissMethod(Method):
    """A Faiss index built by `index_factory`, trained on a seeded sample of the first add.

    Options: max_train (rows sampled for training, default 100_000);
    faiss_metric ("ip" | "l2"): the Faiss metric used under "cosine", default
    "l2". Exact L2 and inner product rank unit vectors alike, but the
    quantized estimates differ, and L2 gave equal or higher recall on our
    data (docs/design.md, "Measurements behind the code").
    """

    cosine_metric = "l2"

    def __init__(self, dim, bits, metric, *, seed=0, max_train: int = 100_000, faiss_metric: str | None = None):
        super().__init__(dim, bits, metric, seed=seed)
        self.max_train = _validate.integer("max_train", max_train, low=1)
        if faiss_metric is not None:
            _validate.choice("faiss_metric", faiss_metric, ("ip", "l2"))
        if self.metric == "cosine":
            self.faiss_metric = faiss_metric or self.cosine_metric
        elif faiss_metric is not None and faiss_metric != self.metric:
            raise ValueError(f"faiss_metric must equal metric {self.metric!r} unless metric is 'cosine', "
                             f"got {faiss_metric!r}")
        else:
            self.faiss_metric = self.metric
        self.factory = self._factory_string()
        faiss = _import_faiss()
        faiss_metric_type = faiss.METRIC_L2 if self.faiss_metric == "l2" else faiss.METRIC_INNER_PRODUCT
        self.index = faiss.index_factory(self.dim, self.factory, faiss_metric_type)
        self._seed_training(faiss)

    def _factory_string(self) -> str:
        raise NotImplementedError

    def _seed_training(self, faiss) -> None:
        """Seed the index's own training randomness where Faiss exposes it."""

    def _search_params(self, faiss):
        return None

    def describe(self) -> str:
        return f"{self.factory} ({self.faiss_metric})"

    @property
    def code_bytes(self) -> int:
        return int(self.index.sa_code_size())

    def _add(self, x):
        if not self.index.is_trained:
            self.index.train(_sample_rows(x, self.max_train, self.seed))
        self.index.add(x)

    def _search(self, q, k):
        faiss = _import_faiss()
        params = self._search_params(faiss)
        if params is None:
            D, I = self.index.search(q, k)
        else:
            D, I = self.index.search(q, k, params=params)
        if self.metric == "cosine" and self.faiss_metric == "l2":
            D = 1.0 - D / 2.0          # unit vectors: ||q - x||^2 = 2 - 2 cos
        return D, I


class FaissPQ(_FaissMethod):
    """faiss.IndexPQ with d*bits/8 code bytes: M sub-quantizers of nbits each.

    nbits is 8 (M = d*bits/8) when M divides d; otherwise the smallest nbits
    in 9..10 whose M = d*bits/nbits divides d (e.g. d=384, bits=3: M=128 x 9
    bits = 144 bytes). Trained by k-means on <= max_train sampled rows.
    Factory ``PQ{M}x{nbits}np``, i.e. ``faiss.IndexPQ(d, M, nbits)``: plain
    index_factory("PQ{M}x8") would also run polysemous training, which costs
    ~20x the k-means and does not change the codes' recall.
    """

    name = "faiss-pq"

    def _factory_string(self) -> str:
        total = self.dim * self.bits
        for nbits in range(8, 11):
            if total % nbits == 0 and (m := total // nbits) >= 1 and self.dim % m == 0:
                self.M, self.nbits = m, nbits
                return f"PQ{m}x{nbits}np"
        raise MethodUnavailable(f"{self.name}: no M sub-quantizers of 8..10 bits give {total} bits "
                                f"with M dividing dim {self.dim}")

    def _seed_training(self, faiss):
        faiss.downcast_index(self.index).pq.cp.seed = self.seed


class FaissPQFastScan(_FaissMethod):
    """Faiss ``PQ{M}x4fs`` (IndexPQFastScan): M = d*bits/4 sub-quantizers of 4 bits, default search."""

    name = "faiss-pqfs"

    def _factory_string(self) -> str:
        total = self.dim * self.bits
        if total % 4 or self.dim % (total // 4):
            raise MethodUnavailable(f"{self.name}: M = dim*bits/4 = {total / 4:g} sub-quantizers "
                                    f"must divide dim {self.dim}")
        self.M = total // 4
        return f"PQ{self.M}x4fs"

    def _seed_training(self, faiss):
        faiss.downcast_index(self.index).pq.cp.seed = self.seed


class FaissRaBitQ(_FaissMethod):
    """Faiss ``RR,RaBitQ{bits}`` (``RR,RaBitQ`` at 1 bit): random rotation + (extended) RaBitQ.

    Searched with RaBitQSearchParameters(qb=qb), default qb=8. code_bytes is
    Faiss's code size, which includes RaBitQ's per-vector factors.
    """

    name = "faiss-rabitq"

    def __init__(self, dim, bits, metric, *, seed=0, qb: int = 8, **options):
        self.qb = _validate.integer("qb", qb, low=0, high=8)
        super().__init__(dim, bits, metric, seed=seed, **options)

    def _factory_string(self) -> str:
        return "RR,RaBitQ" if self.bits == 1 else f"RR,RaBitQ{self.bits}"

    def _search_params(self, faiss):
        params = faiss.RaBitQSearchParameters()
        params.qb = self.qb
        return params

    def describe(self) -> str:
        return f"{self.factory} ({self.faiss_metric}, qb={self.qb})"


class FaissTurboQuant(_FaissMethod):
    """Faiss's own TurboQuant-MSE scalar quantizer: ``{rotation},SQtqmse{bits}``.

    rotation "HR" (Hadamard; pads d to the next power of two, so codes take
    next_pow2(d)*bits/8 bytes) or "RR" (dense random rotation, d*bits/8 bytes).
    The codes store no norm: inputs must be unit vectors, so only "cosine" is
    available. bits 1, 2, 3, 4 or 8.
    """

    name = "faiss-tq"

    def __init__(self, dim, bits, metric, *, seed=0, rotation: str = "HR", **options):
        self.rotation = _validate.choice("rotation", rotation, ("HR", "RR"))
        if metric != "cosine":
            raise MethodUnavailable(f"{self.name}: SQtqmse stores no norm and expects unit vectors, "
                                    f"so only metric 'cosine' is available, got {metric!r}")
        super().__init__(dim, bits, metric, seed=seed, **options)

    def _factory_string(self) -> str:
        if self.bits not in (1, 2, 3, 4, 8):
            raise MethodUnavailable(f"{self.name}: bits must be 1, 2, 3, 4 or 8, got {self.bits}")
        return f"{self.rotation},SQtqmse{self.bits}"


class FaissTurboQuantRR(FaissTurboQuant):
    """`FaissTurboQuant` with a dense random rotation: ``RR,SQtqmse{bits}``, d*bits/8 bytes."""

    name = "faiss-tq-rr"

    def __init__(self, dim, bits, metric, *, seed=0, **options):
        options.setdefault("rotation", "RR")
        super().__init__(dim, bits, metric, seed=seed, **options)


# -- turbovec -------------------------------------------------------------------------

class FaissSQ8(_FaissMethod):
    """Faiss `IndexScalarQuantizer` QT_8bit ("SQ8"): 8 bits a coordinate, uniform per dimension
    (trained min and max). The anchor of the 5-8 bit widths: available at bits >= 5 only."""

    name = "faiss-sq8"

    def _factory_string(self) -> str:
        if self.bits < 5:
            raise MethodUnavailable(f"{self.name}: an 8-bit scalar quantizer, compared at bits 5-8, got {self.bits}")
        return "SQ8"


class FaissFlat(_FaissMethod):
    """Faiss `IndexFlat`: exhaustive float32 search (4 * dim bytes a vector), the brute-force floor a
    compressed index must beat; compared at bits >= 5 only."""

    name = "faiss-flat"

    def _factory_string(self) -> str:
        if self.bits < 5:
            raise MethodUnavailable(f"{self.name}: exhaustive float32, compared at bits 5-8, got {self.bits}")
        return "Flat"


class Turbovec(Method):
    """turbovec.TurboQuantIndex(dim, bits): TurboQuant codes, inner-product search.

    turbovec scores by inner product (descending) and stores one float32 norm
    per vector: code_bytes = dim*bits/8 + 4. "cosine" feeds it unit vectors,
    "ip" raw ones; "l2" is unavailable (it cannot rank by L2). dim must be a
    multiple of 8, bits 2, 3 or 4. Adds and searches run unchunked
    (chunk_size=0, its full-speed path), and every add ends with
    `prepare()`, as its docs recommend. Threads: see `set_num_threads`.
    """

    name = "turbovec"
    calibrate = False

    def __init__(self, dim, bits, metric, *, seed=0, calibration_rows: int = 1024):
        super().__init__(dim, bits, metric, seed=seed)
        if self.metric == "l2":
            raise MethodUnavailable(f"{self.name}: turbovec ranks by inner product only; metric 'l2' "
                                    f"is not supported")
        if self.bits not in (2, 3, 4):
            raise MethodUnavailable(f"{self.name}: bits must be 2, 3 or 4, got {self.bits}")
        if self.dim % 8:
            raise MethodUnavailable(f"{self.name}: dim must be a multiple of 8, got {self.dim}")
        self.calibration_rows = _validate.integer("calibration_rows", calibration_rows, low=1)
        try:
            import turbovec
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError(f"this method needs turbovec: {_COMPARE_HINT}") from exc
        self.index = turbovec.TurboQuantIndex(self.dim, self.bits)

    def describe(self) -> str:
        cal = f", calibrate({self.calibration_rows} sampled rows)" if self.calibrate else ""
        return f"TurboQuantIndex({self.dim}, {self.bits}){cal}"

    @property
    def code_bytes(self) -> int:
        return self.dim * self.bits // 8 + 4

    def _add(self, x):
        _note_rayon_start()
        if self.calibrate and self._n == 0:
            self.index.calibrate(np.ascontiguousarray(_sample_rows(x, self.calibration_rows, self.seed)))
        self.index.add(x, chunk_size=0)
        self.index.prepare()   # its docs: warm the search caches after adding, so no search pays for them

    def _search(self, q, k):
        _note_rayon_start()
        return self.index.search(q, k, chunk_size=0)


class TurbovecCalibrated(Turbovec):
    """`Turbovec` with ``calibrate(sample)`` (TQ+) on a seeded uniform sample of
    `calibration_rows` (default 1024) rows of the first add, before adding."""

    name = "turbovec-cal"
    calibrate = True


# -- turboann -------------------------------------------------------------------------

class Turboann(Method):
    """turboann.Index(dim, bits=bits, metric=metric, seed=seed, **options).

    Options go to the Index (e.g. variant="prod", center=False). The Index
    normalises for "cosine" itself; searches use the threads set by
    `set_num_threads`.
    """

    name = "turboann"
    normalize_cosine = False
    checks_rows = True

    def __init__(self, dim, bits, metric, *, seed=0, **options):
        super().__init__(dim, bits, metric, seed=seed)
        from .index import Index

        self.options = dict(options)
        self.index = Index(self.dim, bits=self.bits, metric=self.metric, seed=self.seed, **self.options)

    def describe(self) -> str:
        opts = "".join(f", {key}={value!r}" for key, value in self.options.items())
        return f"Index({self.dim}, bits={self.bits}, metric={self.metric!r}{opts})"

    @property
    def code_bytes(self) -> int:
        return int(self.index.code_bytes)

    def _add(self, x):
        self.index.add(x)

    def _search(self, q, k):
        return self.index.search(q, k)


METHODS: dict[str, type[Method]] = {cls.name: cls for cls in (
    Turboann, FaissPQ, FaissPQFastScan, FaissRaBitQ, FaissTurboQuant, FaissTurboQuantRR, FaissSQ8,
    FaissFlat, Turbovec, TurbovecCalibrated)}


def make_method(name: str, dim: int, bits: int, metric: str, *, seed: int = 0, **options) -> Method:
    """Build the comparison method `name` (a key of METHODS), empty and ready to `add`.

    name: "turboann", "faiss-pq", "faiss-pqfs", "faiss-rabitq", "faiss-tq",
    "faiss-tq-rr", "faiss-sq8", "faiss-flat", "turbovec" or "turbovec-cal". dim, bits: vector width and
    bits per coordinate (code bytes ~ dim*bits/8 plus the method's factors);
    metric "cosine" | "l2" | "ip"; seed: training samples and rotations;
    options: method-specific keywords (see each class).

    Raises ValueError for an unknown name, MethodUnavailable (a ValueError)
    when the method cannot serve these settings, ImportError naming
    ``turboann[compare]`` when its library is missing.
    """
    if not isinstance(name, str) or name not in METHODS:
        raise ValueError(f"name must be one of {', '.join(map(repr, METHODS))}, got {name!r}")
    return METHODS[name](dim, bits, metric, seed=seed, **options)
