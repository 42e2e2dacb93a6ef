"""IVFIndex: a coarse k-means layer over inverted lists of TurboQuant codes.

Only the coarse centroids are trained (Faiss k-means); the codes stay the
flat index's data-oblivious ones. Each vector joins the list of its nearest
centroid c and is encoded either as the residual x - c (mode "residual") or
as itself (mode "raw"). Search ranks the centroids, scans the nprobe nearest
lists with one lookup table per query (see `kernels.ivf_scan` for why one
table serves every list) and merges one top k.
"""
from __future__ import annotations

import numba
import numpy as np

from . import _blas, _validate, index_file, io
from ._rwlock import reading, writing
from .index import _NO_FILTER, Index, _score_directly, _ThreadCount
from .invlists import BlockedInvertedLists, InvertedLists, arena_runs
from .kernels import dot as _dot
from .kernels import fastscan as _fs
from .kernels import ivf_fastscan as _ivf_fs
from .kernels.ivf_scan import search_lists

MODES = ("residual", "raw")
# Measured on wordnet-minilm-384 (bench/ivf.py): residual codes reach a given
# recall at a smaller nprobe than raw codes, at the same scan cost.
DEFAULT_MODE = "residual"
DEFAULT_NPROBE = 16
_ASSIGN_ROWS = 8192      # rows per block of the assignment product, bounding its memory
_FAISS_HINT = "pip install 'turboann[faiss]'"


def _import_faiss():
    try:
        import faiss
    except ImportError:
        raise ImportError(f"IVFIndex.train needs faiss for k-means: {_FAISS_HINT}") from None
    return faiss


class IVFIndex(Index):
    """Inverted-file index of TurboQuant codes.

    dim >= 2; nlist coarse lists; bits, metric, seed, variant, rotation,
    correction and keep_vectors as in `Index` (no global centring: the
    centroids take its place). mode "residual" encodes x - c, "raw" encodes x.
    train() fits the centroids on at most max_train_per_list * nlist rows,
    sampled with `seed`. layout as in `Index`: "fastscan" keeps each list as
    32-vector blocks scanned with SIMD u8 tables and exact re-scoring (same
    results as "flat" up to float rounding), "auto" picks it where it applies.
    """

    def __init__(self, dim: int, nlist: int = 1024, bits: int = 4, metric: str = "cosine", *, seed: int = 0,
                 mode: str = DEFAULT_MODE, variant: str = "mse", rotation: str = "auto",
                 correction: str = "ip", keep_vectors: bool = False, max_train_per_list: int = 256,
                 rotation_rounds: int | None = None, layout: str = "auto"):
        super().__init__(dim, bits, metric, seed=seed, variant=variant, rotation=rotation, center=False,
                         correction=correction, keep_vectors=keep_vectors, rotation_rounds=rotation_rounds,
                         layout=layout)
        self.nlist = _validate.integer("nlist", nlist, low=1)
        self.mode = _validate.choice("mode", mode, MODES)
        self.max_train_per_list = _validate.integer("max_train_per_list", max_train_per_list, low=1)
        if self.layout == "fastscan":
            self._store = BlockedInvertedLists(self.nlist, self._quant.code_bytes, self._store.n_factors,
                                               _fs.block_layout(self.dim, self.bits))
        else:
            self._store = InvertedLists(self.nlist, self._quant.code_bytes, self._store.n_factors)
        self._centroids: np.ndarray | None = None
        self._cnorm2: np.ndarray | None = None

    def __repr__(self) -> str:
        return (f"IVFIndex(dim={self.dim}, nlist={self.nlist}, bits={self.bits}, metric={self.metric!r}, "
                f"mode={self.mode!r}, layout={self.layout!r}, trained={self.is_trained}, n={len(self)})")

    @property
    def is_trained(self) -> bool:
        return self._centroids is not None

    @property
    def centroids(self) -> np.ndarray | None:
        """The coarse centroids (nlist, dim) float32 (a copy), or None before training."""
        return None if self._centroids is None else self._centroids.copy()

    @property
    @reading
    def ids(self) -> np.ndarray:
        """Ids held, list by list (a copy)."""
        return self._store.ids[self._store.positions()]

    @property
    @reading
    def list_sizes(self) -> np.ndarray:
        """Vectors in each list, (nlist,) int64 (a copy)."""
        return self._store.size.copy()

    @property
    @reading
    def nbytes(self) -> int:
        """Bytes held: codes + factors + ids + centroids (+ kept vectors)."""
        return super().nbytes + (0 if self._centroids is None else self._centroids.nbytes)

    # -- training -------------------------------------------------------------
    @writing
    def train(self, sample, *, niter: int = 20, verbose: bool = False, threads: int | None = None) -> None:
        """Fit the nlist coarse centroids by k-means on sample (n >= nlist, dim), any real dtype.

        At most max_train_per_list * nlist rows are used, sampled with the
        index seed. verbose=True prints Faiss's per-iteration progress.
        threads: Faiss's OpenMP threads for this call (default: its current
        setting). Training must come before the first add.
        """
        self._check_writable("train")
        x, norms = _validate.vectors_and_norms("sample", sample, self.dim, allow_empty=False)
        niter = _validate.integer("niter", niter, low=1)
        threads = None if threads is None else _validate.integer("threads", threads, low=1)
        if x.shape[0] < self.nlist:
            raise ValueError(f"sample must hold at least nlist = {self.nlist} rows, got {x.shape[0]}")
        if len(self):
            raise ValueError(f"train must come before add: the index already holds {len(self)} vectors")
        if self.metric == "cosine":
            x = (x * self._row_scale(norms, "sample")[:, None]).astype(np.float32)
        limit = self.max_train_per_list * self.nlist
        if x.shape[0] > limit:
            rng = np.random.default_rng(self.seed)
            x = x[np.sort(rng.choice(x.shape[0], limit, replace=False))]
        faiss = _import_faiss()
        kmeans = faiss.Kmeans(self.dim, self.nlist, niter=niter, seed=self.seed, verbose=bool(verbose),
                              max_points_per_centroid=self.max_train_per_list, min_points_per_centroid=1)
        old_threads = faiss.omp_get_max_threads()
        if threads is not None:
            faiss.omp_set_num_threads(threads)
        try:
            kmeans.train(np.ascontiguousarray(x))
        finally:
            faiss.omp_set_num_threads(old_threads)
        self._set_centroids(np.ascontiguousarray(kmeans.centroids, dtype=np.float32))

    @writing
    def set_centroids(self, centroids) -> None:
        """Use given coarse centroids (nlist, dim), any real dtype, instead of train().

        For cosine they should come from unit vectors, as train() does. Must come before the first add.
        """
        self._check_writable("set_centroids")
        c, _ = _validate.vectors_and_norms("centroids", centroids, self.dim)
        if c.shape[0] != self.nlist:
            raise ValueError(f"centroids must have nlist = {self.nlist} rows, got {c.shape[0]}")
        if len(self):
            raise ValueError(f"set_centroids must come before add: the index already holds {len(self)} vectors")
        self._set_centroids(c.copy())

    def _set_centroids(self, centroids: np.ndarray) -> None:
        self._centroids = centroids
        self._cnorm2 = (centroids.astype(np.float64) ** 2).sum(axis=1).astype(np.float32)

    def _require_trained(self, action: str) -> None:
        if self._centroids is None:
            raise ValueError(f"IVFIndex must be trained before {action}: call train(sample) first")

    def _assign(self, x: np.ndarray) -> np.ndarray:
        """Nearest centroid (L2, which keeps residuals smallest) of each row, (n,) int64."""
        out = np.empty(x.shape[0], np.int64)
        for lo in range(0, x.shape[0], _ASSIGN_ROWS):
            block = x[lo:lo + _ASSIGN_ROWS]
            out[lo:lo + _ASSIGN_ROWS] = np.argmax(2.0 * (block @ self._centroids.T) - self._cnorm2, axis=1)
        return out

    # -- adding ---------------------------------------------------------------
    @writing
    def add(self, x, ids=None) -> None:
        """Add vectors x (n, dim), any real dtype, to their nearest lists. ids as in `Index.add`."""
        self._check_writable("add")
        x, norms = _validate.vectors_and_norms("x", x, self.dim)
        self._require_trained("add")
        n = x.shape[0]
        ids = self._new_ids(ids, n)
        if n == 0:
            return
        scale = self._row_scale(norms, "x")
        unit = self.metric == "cosine"
        rows = x * scale[:, None].astype(np.float32) if unit else x
        lists = self._assign(rows)
        if self.mode == "residual":
            residuals = self._centroids[lists]
            enc = self._quant._encode(np.subtract(rows, residuals, out=residuals))
        else:
            enc = self._quant._encode(x)   # normalised after the rotation, as Index.add does
            if unit:
                enc.norms[:] = 1.0
        factors = self._scan_factors(enc.norms, enc.dots, enc.gammas)
        if self.metric == "l2" and self.mode == "residual":
            # The bias is the exact -||x||^2 (not -||r||^2): see kernels.ivf_scan.
            with np.errstate(over="ignore"):   # -inf for a huge row, rejected below
                factors[:, -1] = -(norms * norms)
        if not np.isfinite(factors).all():   # a row whose factors (e.g. its -||x||^2) overflow float32
            _validate.finite_rows("x", np.abs(factors).max(axis=1), x)
        self._store.append(lists, enc.codes, factors, ids)
        self._keep(x, scale, ids)

    # -- searching ------------------------------------------------------------
    @reading
    def search(self, q, k: int, *, nprobe: int | None = None, threads: int | None = None,
               rerank: int | None = None, filter=None, exact: bool = False):
        """k nearest neighbours of each query row among the nprobe nearest lists.

        nprobe 1..nlist, default min(16, nlist). D, I, threads, rerank and
        filter as in `Index.search` (rerank takes its shortlist from the same
        lists; filtered results are the probed lists' ranking restricted to
        the allowed ids, so at nprobe = nlist the whole index's). exact is
        accepted for `Index.search`'s sake: the lists' scan always returns
        the probed lists' full-code top k.
        """
        _validate.flag("exact", exact)
        nprobe = (min(DEFAULT_NPROBE, self.nlist) if nprobe is None
                  else _validate.integer("nprobe", nprobe, low=1, high=self.nlist))
        q, q_exact, k, shortlist = self._queries(q, k, rerank)
        allowed, shortlist = self._filter(filter, shortlist)
        self._require_trained("search")
        with _ThreadCount(threads):
            if allowed is not None and not allowed.slots.size:
                scores = np.full((q.shape[0], shortlist), -np.inf, np.float32)
                positions = np.full((q.shape[0], shortlist), -1, np.int64)
            else:
                scores, positions = self._search_lists(q, shortlist, nprobe, exact=rerank is None, allowed=allowed)
            return self._results(q, q_exact, scores, positions, k, rerank)

    def _search_lists(self, q: np.ndarray, k: int, nprobe: int, exact: bool = True, allowed=None):
        """Kernel scores and arena positions of the k best in the nprobe nearest lists (among the
        allowed positions, a `store.SlotFilter`, when given); exact as in `Index._search_prepared`."""
        with _blas.one_thread():
            qc = np.ascontiguousarray(q @ self._centroids.T, dtype=np.float32)
        lists = self._store
        mask = _NO_FILTER if allowed is None else allowed.mask
        probe = (lists.start, lists.size, qc, self._cnorm2, self.metric != "ip", self._list_bias_mult(), nprobe)
        if self.layout == "fastscan":
            queries, book = self._fastscan_queries(q), self._block_codebook()
            if allowed is not None and _score_directly(allowed.slots, k):
                return _ivf_fs.score_list_slots(lists.blocks, lists.split_factors(), allowed.slots,
                                                lists.list_of(allowed.slots), *probe, *queries, book, k)
            batch = _ivf_fs.batch_size(q.shape[0], numba.get_num_threads(), k, lists.layout.rows)
            with numba.parallel_chunksize(1):
                return _ivf_fs.search_list_blocks(lists.blocks, lists.split_factors(), *probe, *queries, book, k,
                                                  batch, _fs.simd_level(), exact, mask)
        if self._dot_book is not None:
            qrot, qoff = self._fastscan_queries(q)
            prepared = _dot.dot_queries(qrot, qoff, self._dot_book)
            return _dot.search_dot_lists(lists.codes, lists.factors, *probe, prepared, self._dot_book,
                                         self._head_codebook(), k,
                                         exact, _dot.simd_level(), None if allowed is None else allowed.mask)
        return search_lists(lists.codes, lists.factors, *probe, *self._segment_values(q), self._centroid_table,
                            *self._quant.plan, k, mask)

    def _list_bias_mult(self) -> float:
        """Multiple of <q, c_l> the kernel adds to a vector's score in list l."""
        if self.mode == "raw":
            return 0.0
        return 2.0 if self.metric == "l2" else 1.0

    # -- persistence ----------------------------------------------------------
    def _settings(self) -> dict:
        settings = super()._settings()
        del settings["center"]
        del settings["estimator"]   # no global centre, so always "direction"
        return {**settings, "nlist": self.nlist, "mode": self.mode,
                "max_train_per_list": self.max_train_per_list}

    def _code_arrays(self) -> tuple[dict[str, np.ndarray], np.ndarray, int]:
        """(arrays, ids, lowest format version) of the lists and centroids (see `Index._code_arrays`)."""
        store = self._store
        if self.layout == "fastscan":
            blocks, factors, arena_ids = store.export_arena()
            arrays = {"arena_blocks": blocks, "arena_factors": factors, "arena_ids": arena_ids,
                      "split_factors": _fs.split_factors(factors, factors.shape[0]), "list_sizes": store.size.copy()}
            ids = arena_ids[arena_ids >= 0]
            version = 3
        else:
            codes, factors, ids, sizes = store.export()
            arrays = {"codes": codes, "factors": factors, "ids": ids, "list_sizes": sizes}
            version = 2
        if self._centroids is not None:
            arrays["centroids"] = self._centroids
        return arrays, ids, version

    def _load_codes(self, stored: io.Stored, form: str, factors: np.ndarray, next_id: int) -> np.ndarray:
        """Install the centroids and fill the lists from the file (see `Index._load_codes`)."""
        arrays, store = stored.arrays, self._store
        if "centroids" in arrays:
            self._set_centroids(arrays["centroids"])
        sizes = arrays["list_sizes"]
        if form == "arena":
            ids = arrays["arena_ids"]
            store.load_arena(arrays["arena_blocks"], factors, ids, sizes, arena_runs(sizes), next_id,
                             writable=not stored.mapped, split=arrays["split_factors"])
            return ids[store.positions()]   # the kept vectors' order
        ids = arrays["ids"]
        if stored.mapped and self.layout == "flat":   # the concatenated lists are an arena without slack
            store.load_arena(arrays["codes"], factors, ids, sizes, sizes, next_id, writable=False)
        else:
            store.load(arrays["codes"], factors, ids, sizes, next_id)
        return ids


io.register("IVFIndex", IVFIndex._from_file, index_file.SMALL_ARRAYS)
