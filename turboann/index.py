"""Index: the flat index. Wires a quantizer, a code store and the scan kernels.

Scores are estimated similarities for "ip" and "cosine" (descending) and
estimated squared L2 distances for "l2" (ascending).
"""
from __future__ import annotations

import math
import os
from contextlib import contextmanager

import numba
import numpy as np

from . import _validate
from .kernels import encode as _enc
from .kernels import fastscan as _fs
from .kernels.scan import search_codes
from .quantizer import EncodedVectors, TurboQuantMSE, TurboQuantProd
from .store import BlockedCodeStore, CodeStore

VARIANTS = ("mse", "prod")
CORRECTIONS = ("ip", "none")
LAYOUTS = ("auto", "flat", "fastscan")
# Fewer vectors than this in the first add give too noisy a mean: stay oblivious.
MIN_CENTER_SAMPLE = 256
# A database chunk scanned by one thread should amortise its lookup tables.
_MIN_CHUNK = 4096
_CHUNKS_PER_THREAD = 4


def set_num_threads(n: int) -> None:
    """Threads for every later search in this thread of the process (Numba's pool)."""
    numba.set_num_threads(_validate.integer("n", n, low=1, high=numba.config.NUMBA_NUM_THREADS))


@contextmanager
def _thread_count(threads):
    if threads is None:
        yield numba.get_num_threads()
        return
    threads = _validate.integer("threads", threads, low=1, high=numba.config.NUMBA_NUM_THREADS)
    old = numba.get_num_threads()
    numba.set_num_threads(threads)
    try:
        yield threads
    finally:
        numba.set_num_threads(old)


def _make_quantizer(dim, bits, seed, variant, rotation):
    cls = TurboQuantProd if variant == "prod" else TurboQuantMSE
    return cls(dim, bits, seed=seed, rotation=rotation)


class Index:
    """Flat index of TurboQuant codes; adding needs no training.

    dim >= 2; bits 1..8 (2..8 for variant "prod"); metric "ip" | "cosine" | "l2".
    center: "auto" subtracts the mean of the first add when it holds at least
    MIN_CENTER_SAMPLE vectors (real embeddings share a common direction that
    otherwise eats bits), True always does, False never does (fully
    data-oblivious codes), or give the mean itself as a (dim,) array.
    correction "ip" rescales each vector by ||x|| / <u, u_hat> so inner-product
    estimates are unbiased and comparable across vectors; "none" uses ||x||.
    layout: "flat" keeps row-major codes scanned with float tables;
    "fastscan" keeps blocks of 32 vectors scanned with SIMD u8 tables and
    exact re-scoring (variant "mse", bits 1..4; same results as "flat" up to
    float rounding); "auto" picks fastscan where it applies.
    """

    def __init__(self, dim: int, bits: int = 4, metric: str = "cosine", *, seed: int = 0,
                 variant: str = "mse", rotation: str = "auto", center="auto", correction: str = "ip",
                 layout: str = "auto"):
        self.metric = _validate.choice("metric", metric, _validate.METRICS)
        self.variant = _validate.choice("variant", variant, VARIANTS)
        self.correction = _validate.choice("correction", correction, CORRECTIONS)
        self._quant = _make_quantizer(dim, bits, seed, self.variant, rotation)
        self.dim, self.bits, self.seed = self._quant.dim, self._quant.bits, self._quant.seed
        self.center, mean = self._check_center(center)
        self._set_mean(mean)
        nseg = len(self._quant.segment_bits)
        n_factors = nseg + (1 if self.metric == "l2" else 0)
        self.layout = self._check_layout(layout)
        if self.layout == "fastscan":
            self._store = BlockedCodeStore(self._quant.code_bytes, n_factors, _fs.block_layout(self.dim, self.bits))
        else:
            self._store = CodeStore(self._quant.code_bytes, n_factors)

    def _check_layout(self, layout) -> str:
        layout = _validate.choice("layout", layout, LAYOUTS)
        fits = self.variant == "mse" and self.bits <= 4
        if layout == "auto":
            return "fastscan" if fits else "flat"
        if layout == "fastscan" and not fits:
            raise ValueError(f"layout 'fastscan' needs variant 'mse' and bits <= 4, got variant "
                             f"{self.variant!r} and bits {self.bits}")
        return layout

    def _check_center(self, center):
        """(mode, mean): mode "auto", True or False; mean a (dim,) float32 array or None."""
        if isinstance(center, str):
            if center != "auto":
                raise ValueError(f"center must be 'auto', True, False or a ({self.dim},) array, got {center!r}")
            return "auto", None
        if center is None or isinstance(center, (bool, np.bool_)):
            return bool(center), None
        mean = np.asarray(center)
        if mean.shape != (self.dim,) or not (np.issubdtype(mean.dtype, np.floating)
                                            or np.issubdtype(mean.dtype, np.integer)):
            raise ValueError(f"center must be 'auto', True, False or a ({self.dim},) array, "
                             f"got {type(center).__name__} of shape {mean.shape} and dtype {mean.dtype}")
        if not np.isfinite(mean).all():
            raise ValueError("center must be finite, got NaN or inf")
        return True, mean.astype(np.float32)

    # -- introspection -------------------------------------------------------
    def __len__(self) -> int:
        return len(self._store)

    def __repr__(self) -> str:
        return (f"Index(dim={self.dim}, bits={self.bits}, metric={self.metric!r}, variant={self.variant!r}, "
                f"n={len(self)}, code_bytes={self.code_bytes})")

    @property
    def code_bytes(self) -> int:
        """Bytes per vector of codes and factors (ids not counted)."""
        return self._store.vector_code_bytes + 4 * self._store.n_factors

    @property
    def nbytes(self) -> int:
        """Bytes held: codes + factors + ids (+ the mean vector when centred)."""
        return self._store.nbytes + (0 if self._mean is None else self._mean.nbytes)

    @property
    def ids(self) -> np.ndarray:
        """Ids held, in slot order (a copy)."""
        return self._store.ids.copy()

    @property
    def mean(self) -> np.ndarray | None:
        """The centre subtracted before encoding, or None."""
        return None if self._mean is None else self._mean.copy()

    @property
    def quantizer(self) -> TurboQuantMSE:
        return self._quant

    # -- adding --------------------------------------------------------------
    def add(self, x, ids=None) -> None:
        """Add vectors x (n, dim), any real dtype. ids: optional unique int64 (n,).

        Default ids continue from one past the largest id ever added.
        """
        x, norms = _validate.vectors_and_norms("x", x, self.dim)
        n = x.shape[0]
        if ids is None:
            ids = np.arange(self._store.next_id, self._store.next_id + n, dtype=np.int64)
        else:
            ids = _validate.ids("ids", ids, n)
            present = self._store.contains(ids)
            if present.any():
                raise ValueError(f"ids must not be in the index already, got id {int(ids[present][0])} "
                                 f"which is present")
        if n == 0:
            return
        scale = self._row_scale(norms, "x")
        if self._mean is None and self.center is not False and len(self._store) == 0:
            if self.center is True or n >= MIN_CENTER_SAMPLE:
                self._set_mean(((scale / n).astype(np.float32) @ x).astype(np.float32))
        # Normalising and centring happen inside the encoder, after the rotation:
        # R(x s - mu) = (R x) s - R mu, which saves two passes over the data.
        enc = self._quant._encode(x, scale, self._rotated_mean)
        if self.metric == "cosine" and self._mean is None:
            enc.norms[:] = 1.0
        self._store.append(enc.codes, self._scan_factors(enc), ids)

    def _set_mean(self, mean: np.ndarray | None) -> None:
        self._mean = mean
        self._rotated_mean = None if mean is None else self._quant.rotation.apply(mean[None, :])[0]

    def _row_scale(self, norms: np.ndarray, name: str) -> np.ndarray:
        """Per-row factor applied before encoding: 1 / ||row|| for cosine (rejecting zero rows), else 1."""
        if self.metric != "cosine":
            return np.ones(norms.shape[0])
        if (norms == 0).any():
            row = int(np.flatnonzero(norms == 0)[0])
            raise ValueError(f"{name} row {row} is a zero vector, which has no direction under metric 'cosine'")
        return 1.0 / norms

    def _scan_factors(self, enc: EncodedVectors) -> np.ndarray:
        """Per-vector kernel weights: score = sum_s w_s * partial_s (+ bias for l2)."""
        norms = enc.norms.astype(np.float64)
        if self.variant == "prod":
            weights = [norms, norms * enc.gammas]
        elif self.correction == "ip":
            dots = enc.dots.astype(np.float64)
            weights = [np.where(dots > 0, norms / np.where(dots > 0, dots, 1.0), 0.0)]
        else:
            weights = [norms]
        if self.metric == "l2":
            # -||q - x||^2 = 2<q, x> - ||x||^2 - ||q||^2; the last term is added per query.
            weights = [2.0 * w for w in weights] + [-norms * norms]
        return np.stack(weights, axis=1).astype(np.float32)

    # -- searching -----------------------------------------------------------
    def search(self, q, k: int, *, threads: int | None = None):
        """k nearest neighbours of each query row.

        q (nq, dim) any real dtype; returns D (nq, k) float32 and I (nq, k) int64.
        D is the estimated similarity (descending) for "ip"/"cosine" and the
        estimated squared distance (ascending) for "l2". Missing results are
        id -1 with D -inf (similarity) or +inf (distance).
        """
        q, norms = _validate.vectors_and_norms("q", q, self.dim)
        k = _validate.integer("k", k, low=1)
        if self.metric == "cosine":
            q = (q * self._row_scale(norms, "q")[:, None]).astype(np.float32)
        elif self._mean is not None and self.metric == "l2":
            q = q - self._mean
        nq = q.shape[0]
        with _thread_count(threads) as nthreads:
            scores, slots = self._search_prepared(q, k, nthreads)
        return self._finish(q, scores, slots)

    def _search_prepared(self, q: np.ndarray, k: int, nthreads: int):
        n, nq = len(self._store), q.shape[0]
        if n == 0 or nq == 0:
            return np.full((nq, k), -np.inf, np.float32), np.full((nq, k), -1, np.int64)
        n_chunks = 1
        if self.layout == "fastscan":
            return self._search_fastscan(q, k, nthreads)
        if nq < nthreads:
            n_chunks = max(1, min(math.ceil(nthreads / nq), n // _MIN_CHUNK))
        p = self._quant.plan
        return search_codes(self._store.codes, self._store.factors, self._quant.segment_values(q),
                            self._quant.centroid_table, p.seg_bytes, p.seg_bits,
                            p.whole_byte, p.whole_coord, p.whole_shift, p.whole_seg,
                            p.split_byte, p.split_coord, p.split_shift, p.split_seg, k, n_chunks)

    def _search_fastscan(self, q: np.ndarray, k: int, nthreads: int):
        store, lay = self._store, self._store.layout
        group = _fs.query_group(lay.rows)
        n_groups = -(-q.shape[0] // group)
        n_chunks = 1
        if n_groups < nthreads:   # few queries: split the database across threads instead, in
            # several chunks per thread so that a thread the OS runs less does less of the work
            n_chunks = max(1, min(_CHUNKS_PER_THREAD * math.ceil(nthreads / n_groups), len(store) // _MIN_CHUNK))
        qrot = np.ascontiguousarray(self._quant.segment_values(q)[:, 0, :])
        # Threads take tasks one at a time: on a shared machine a static split
        # waits for whichever thread the OS runs least.
        with numba.parallel_chunksize(1):
            return _fs.search_blocks(store.blocks, len(store), store.split_factors(), qrot, self._quant._centroids,
                                     self.bits, lay.per_nibble, lay.n_sub, k, n_chunks, group, _fs.use_simd())

    def _finish(self, q: np.ndarray, scores: np.ndarray, slots: np.ndarray):
        """Map slots to ids and turn kernel scores into the metric's D."""
        found = slots >= 0
        I = np.full(slots.shape, -1, np.int64)
        I[found] = self._store.ids[slots[found]]
        D = scores.astype(np.float64)
        if self.metric == "l2":
            qn = _enc.row_norms(q) ** 2
            D = np.maximum(qn[:, None] - D, 0.0)
            D[~found] = np.inf
        else:
            if self._mean is not None:
                D = D + (q.astype(np.float64) @ self._mean.astype(np.float64))[:, None]
            D[~found] = -np.inf
        return D.astype(np.float32), I

    # -- removing ------------------------------------------------------------
    def remove(self, ids, *, missing: str = "raise") -> int:
        """Remove vectors by id; returns how many were removed.

        missing="raise" (default) rejects the whole call, removing nothing, if
        any id is absent; missing="ignore" skips absent ids.
        """
        _validate.choice("missing", missing, ("raise", "ignore"))
        ids = _validate.ids("ids", ids)
        if missing == "raise" and ids.size:
            absent = self._store.slots(ids) < 0
            if absent.any():
                raise ValueError(f"ids must be in the index, got unknown id {int(ids[absent][0])}")
        return self._store.remove(ids)

    # -- persistence ---------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Write the index to one file, atomically (see `turboann.io`)."""
        from . import io
        io.save(self, path)

    def _settings(self) -> dict:
        return {"dim": self.dim, "bits": self.bits, "metric": self.metric, "seed": self.seed,
                "variant": self.variant, "rotation": self._quant.rotation.kind,
                "correction": self.correction, "center": self.center, "layout": self.layout}
