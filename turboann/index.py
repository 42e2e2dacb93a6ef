"""Index: the flat index. Wires a quantizer, a code store and the scan kernels.

Scores are estimated similarities for "ip" and "cosine" (descending) and
estimated squared L2 distances for "l2" (ascending).
"""
from __future__ import annotations

import math
import os
from contextlib import nullcontext

import numba
import numpy as np

from . import _validate, compact as _compact
from .half import HalfFactors
from .kernels import dot as _dot
from .kernels import encode as _enc
from .kernels import fastscan as _fs
from .kernels.scan import search_codes
from ._rwlock import RWLock, reading, writing
from . import index_file, io
from .io import IndexFileError, ReadOnlyIndexError
from .quantizer import TurboQuantMSE, TurboQuantProd
from .store import BlockedCodeStore, CodeStore, SlotFilter
from .vectors import KeptVectors

VARIANTS = ("mse", "prod")
CORRECTIONS = ("ip", "none")
LAYOUTS = ("auto", "flat", "fastscan")
ESTIMATORS = ("auto", "translate", "direction")
# Fewer vectors than this in the first add give too noisy a mean: stay oblivious.
MIN_CENTER_SAMPLE = 256
# k may exceed len(index) (the rest is padding) up to this; beyond it a k above len is a mistake
# that would allocate (nq, k) outputs of padding alone.
MAX_PADDED_K = 1 << 16
_FLOAT32_MAX = float(np.finfo(np.float32).max)
# A database chunk scanned by one thread should amortise its lookup tables.
_MIN_CHUNK = 4096
_CHUNKS_PER_THREAD = 4
# The kernels' `allowed` when a search has no filter.
_NO_FILTER = np.zeros(0, np.uint8)
# A fast-scan filter is scored slot by slot (no scan) when it allows at most this many slots per
# 32-vector block it touches (scoring one exactly reads its whole block, as scanning it does) and at
# most _DIRECT_PER_RESULT per result asked for: with fewer allowed per result the scan's bound
# skips few of them, so it pays its tables and block sums on top of the same exact scores.
_DIRECT_PER_BLOCK = 2.0
_DIRECT_PER_RESULT = 50
# The same where the integer engine serves the batch (`_DOT_BATCH`): it meets each block with every
# query group at once, so direct scoring gains only on the sparsest filters (wordnet, 4 bits, 200
# queries, 1 thread: level at 58 random ids, 0.60x at 116, 0.43x at 349).
_DIRECT_PER_RESULT_DOT = 5
# Fast-scan widths whose blocks the integer engine also scans, from this many queries a call on: it
# decodes each block once for a whole batch, where fast-scan builds and reads tables per group of
# queries; below it fast-scan's lookups are faster, and at 1 bit (a nibble holds 4 coordinates)
# always (bench/fastscan.py).
_DOT_BATCH = {2: 256, 4: 64}


def _score_directly(slots: np.ndarray, k: int, per_result: float | None = None) -> bool:
    """Whether a fast-scan search for the top k among slots (ascending int64) should score them one
    by one instead of scanning the blocks that hold them (see `_DIRECT_PER_BLOCK`); per_result:
    `_DIRECT_PER_RESULT` unless given."""
    if not slots.size:
        return True
    per_result = _DIRECT_PER_RESULT if per_result is None else per_result
    touched = 1 + np.count_nonzero(np.diff(slots // _fs.BLOCK))
    return slots.size <= _DIRECT_PER_BLOCK * touched and slots.size <= per_result * k


def set_num_threads(n: int) -> None:
    """Threads for every later search in this thread of the process (Numba's pool)."""
    numba.set_num_threads(_validate.integer("n", n, low=1, high=numba.config.NUMBA_NUM_THREADS))


class _ThreadCount:
    """`with _ThreadCount(threads) as n:` runs the block with Numba's pool at `threads` (None: as set)
    and yields the count; a class, not a generator context, since a 1-query search pays its cost."""

    __slots__ = ("threads", "old")

    def __init__(self, threads):
        self.old = numba.get_num_threads()
        self.threads = self.old if threads is None else _validate.integer(
            "threads", threads, low=1, high=numba.config.NUMBA_NUM_THREADS)

    def __enter__(self) -> int:
        if self.threads != self.old:
            numba.set_num_threads(self.threads)
        return self.threads

    def __exit__(self, *exc) -> None:
        if self.threads != self.old:
            numba.set_num_threads(self.old)


def _one_task_a_time(nthreads: int):
    """`numba.parallel_chunksize(1)` where threads share the tasks (see `_search_fastscan`); one thread
    takes them all, and a single-query search saves the context's cost."""
    return numba.parallel_chunksize(1) if nthreads > 1 else nullcontext()


# Rows of per-vector factors computed at a time: 64 KB float64 temporaries.
_FACTOR_CHUNK = 8192

# Rows of a centre estimate read one after the other: 256 rows of 384 float32
# are 384 KB. Reading every k-th row instead costs as much as reading x.
_CENTRE_RUN = 256
# Rows a centre estimate reads at most (64 runs).
_CENTRE_SAMPLE_ROWS = 16384


def _estimate_centre(x: np.ndarray, directions: bool, max_rows: int = _CENTRE_SAMPLE_ROWS) -> np.ndarray:
    """Mean of the rows, or of their unit directions x / ||x|| (zero rows skipped), float32 (dim,).

    x (n, dim) float32, C-contiguous. Over all rows, or, beyond max_rows,
    over max_rows of them in evenly spaced runs of _CENTRE_RUN consecutive
    rows: more do not move recall beyond the spread between samples, and
    reading runs of rows costs a fraction of reading them all (docs/design.md,
    "Measurements behind the code"). NaN where a row summed is not finite.
    """
    n = x.shape[0]
    if n <= max_rows:   # ranges of _CENTRE_RUN rows only to give threads tasks
        starts = np.arange(0, n, _CENTRE_RUN)
        lengths = np.minimum(_CENTRE_RUN, n - starts)
    else:
        runs = max(1, max_rows // _CENTRE_RUN)
        starts = np.round(np.linspace(0, n - _CENTRE_RUN, runs)).astype(np.int64)
        lengths = np.full(runs, _CENTRE_RUN)
    total, count = _enc.sample_sum(x, starts.astype(np.int64), lengths.astype(np.int64), directions)
    return (total / max(1, count)).astype(np.float32)


def estimate_centre(x: np.ndarray, metric: str, estimator: str = "translate") -> np.ndarray:
    """The centre `Index(center=True, estimator=estimator)` would take from one add of x (n, dim) float32
    under `metric`: the mean of the unit directions under "cosine" (and under "ip" with the "direction"
    estimator), else the mean of the rows.

    Callers adding in chunks pass it as `center=` so the index does not
    depend on how the rows were split.
    """
    return _estimate_centre(x, directions=_centres_directions(metric, estimator))


def _centres_directions(metric: str, estimator: str) -> bool:
    """Whether the centre is a mean of unit directions (else of the rows themselves)."""
    return metric == "cosine" or (metric == "ip" and estimator == "direction")


# Rows `_estimate_spread` reads at most.
_SPREAD_SAMPLE_ROWS = 4096
# Per-coordinate spreads are kept within this factor of their root mean square (a coordinate
# the sample never moved must not get an infinite inverse).
_SPREAD_FLOOR = 1e-3


def _estimate_spread(quant, x: np.ndarray, unit: bool, translate: np.ndarray,
                     max_rows: int = _SPREAD_SAMPLE_ROWS) -> np.ndarray:
    """Per-coordinate spread (dim,) float32 of the encoder's unit residuals e = v / ||v||,
    v = rotated(x) (/ ||x|| with unit=True) - translate, over evenly spaced rows of x (n, dim) float32: each
    coordinate's standard deviation over the sample, divided by their root mean square (so the
    codebook's overall width, the law's, is kept), floored at _SPREAD_FLOOR.

    After the rotation every coordinate of a random unit vector follows one law,
    but on data with few dominant directions the coordinates' spreads over the
    data differ by large factors; quantizing coordinate i as e_i / spread_i puts
    each on the codebook's scale. Zero or non-finite rows are left out.
    """
    n = x.shape[0]
    rows = np.unique(np.linspace(0, n - 1, min(n, max_rows)).astype(np.int64))
    v = quant.rotation.apply(np.ascontiguousarray(x[rows]))
    if unit:
        with np.errstate(divide="ignore", invalid="ignore"):   # zero rows: left out below
            v /= np.sqrt(np.einsum("ij,ij->i", v, v, dtype=np.float64)).astype(np.float32)[:, None]
    v -= translate
    norms = np.sqrt(np.einsum("ij,ij->i", v, v, dtype=np.float64))
    keep = np.isfinite(norms) & (norms > 0)
    if keep.sum() < 2:
        return np.ones(x.shape[1], np.float32)
    e = v[keep] * (1.0 / norms[keep]).astype(np.float32)[:, None]
    mean = e.mean(axis=0, dtype=np.float64)
    sd = np.sqrt(np.maximum(np.einsum("ij,ij->j", e, e, dtype=np.float64) / e.shape[0] - mean * mean, 0.0))
    rms = math.sqrt(float((sd * sd).mean()))
    if not rms > 0:
        return np.ones(x.shape[1], np.float32)
    return np.maximum(sd / rms, _SPREAD_FLOOR).astype(np.float32)


def _make_quantizer(dim, bits, seed, variant, rotation, rotation_rounds, tail=(0, None)):
    if variant == "prod":
        return TurboQuantProd(dim, bits, seed=seed, rotation=rotation, rotation_rounds=rotation_rounds)
    return TurboQuantMSE(dim, bits, seed=seed, rotation=rotation, rotation_rounds=rotation_rounds,
                         tail_coords=tail[0], tail_bits=tail[1])


def _check_l2_queries(norms: np.ndarray) -> None:
    """Under l2, reject the first query whose squared norm overflows float32 (norms (nq,) float64):
    every distance to it would be +inf, as `add` rejects rows whose -||x||^2 overflows."""
    big = np.flatnonzero(norms * norms > _FLOAT32_MAX)
    if big.size:
        row = int(big[0])
        raise ValueError(f"q row {row} is too large for metric 'l2': its squared norm "
                         f"{float(norms[row]) ** 2:.3g} overflows the float32 distances")


def _corrections(dots: np.ndarray) -> np.ndarray:
    """1 / <u, u_hat> as float64, 0 where the reconstruction does not point along u (dot <= 0)."""
    out = np.zeros(dots.shape[0])
    np.divide(1.0, dots.astype(np.float64), out=out, where=dots > 0)
    return out


class Index:
    """Flat index of TurboQuant codes; adding needs no training.

    dim >= 2; bits 1..8 (2..8 for variant "prod"); metric "ip" | "cosine" | "l2".
    center: real embeddings share a common direction that otherwise eats
    bits. With the "translate" estimator (the default) data and queries are
    translated by a centre m: the data mean (of the unit vectors under
    "cosine"). The code holds the unit direction e of r = x - m, scored as
    ||r|| <q - m, e_hat> / <e, e_hat>, and each vector keeps the exact
    <m, x - m> beside it (<q, m> is added per query), so the shared
    direction costs no bits and adds no
    error (as RaBitQ's centring does); under "l2" the kept term is -||r||^2.
    The same first add also fits per-coordinate spreads of the rotated unit
    residuals, so that each coordinate is quantized on the codebook's scale
    (data with few dominant directions spreads very unevenly over the
    rotated coordinates); queries are scaled by them, at no scan cost.
    With the "direction" estimator (files from before it, compact=True)
    each unit direction u is quantized as u - m with m the mean of the unit
    directions and reconstructed as (its code) + m; one factor a vector.
    "auto" estimates m from the first add when it holds at least
    MIN_CENTER_SAMPLE vectors, True always does, False never does (fully
    data-oblivious codes), or give m itself as a (dim,) array (see
    `estimate_centre`; the spreads are then fitted on the first add of at
    least MIN_CENTER_SAMPLE vectors).
    spread: None (fitted as above), or given (dim,) positive spreads in
    rotated coordinates (`Index.spread` of an index of the same settings;
    for shards and chunked builds that must encode as one index would).
    estimator: "auto" ("translate", or "direction" when compact=True,
    variant="prod" (whose factors would grow by one) or center=False,
    where no centre is kept), "translate" or "direction".
    rotation_rounds: Hadamard rounds, None for the measured default at dim.
    correction "ip" rescales each vector by ||x|| / <u, u_hat> so inner-product
    estimates are unbiased and comparable across vectors; "none" uses ||x||.
    keep_vectors=True also keeps every vector in float32 (4 * dim bytes each,
    saved with the index) so that `search(..., rerank=R)` can score a
    shortlist of R candidates exactly.
    layout: "flat" keeps row-major codes scanned with float tables;
    "fastscan" keeps blocks of 32 vectors scanned with SIMD u8 tables and
    exact re-scoring (variant "mse", bits 1..4; same results as "flat" up to
    float rounding; 3-bit codes take 4 bits a coordinate there); "auto"
    picks fastscan for variant "mse" at bits 1, 2 and 4.
    compact=True (variant "mse", bits 2..4, correction "ip") fits codes and
    factors in ceil(dim * bits / 8) bytes a vector, a PQ code's size: the
    correction as a u8 log code, the norm as float16 under "ip" and "l2"
    (norms up to 65504), and the last few coordinates one bit narrower (two
    at 4 bits) to pay for them (see `turboann.compact`; recall 10@10 on
    wordnet 0.05-0.45 points below the default's, which takes 4 B more).
    """

    def __init__(self, dim: int, bits: int = 4, metric: str = "cosine", *, seed: int = 0,
                 variant: str = "mse", rotation: str = "auto", center="auto", correction: str = "ip",
                 rotation_rounds: int | None = None, keep_vectors: bool = False,
                 layout: str = "auto", compact: bool = False, estimator: str = "auto", spread=None):
        # Searches share it, adds and removes hold it alone (see turboann._rwlock and README).
        self._lock = RWLock()
        self._mapped_from: str | None = None   # the file `io.load(mmap=True)` mapped: read-only
        self.metric = _validate.choice("metric", metric, _validate.METRICS)
        self.variant = _validate.choice("variant", variant, VARIANTS)
        self.correction = _validate.choice("correction", correction, CORRECTIONS)
        self.compact = self._check_compact(compact)
        tail = (0, None)
        if self.compact:
            tail = _compact.tail_split(_validate.integer("dim", dim, low=2),
                                       _validate.integer("bits", bits, low=1, high=8), self.metric)
        self._quant = _make_quantizer(dim, bits, seed, self.variant, rotation, rotation_rounds, tail)
        self.dim, self.bits, self.seed = self._quant.dim, self._quant.bits, self._quant.seed
        self.center, mean = self._check_center(center)
        self.estimator = self._check_estimator(estimator)
        self.layout = self._check_layout(layout)
        self._spread = self._check_spread(spread)
        self._set_mean(mean)
        nseg = len(self._quant.segments)
        n_factors = nseg + (1 if self._biased else 0)
        codes = _compact.FactorCodes(self.metric, self.dim, self.bits) if self.compact else None
        if self.estimator == "translate" and self.metric != "l2" and self.variant == "mse":
            codes = HalfFactors()
        if self.layout == "fastscan":
            self._store = BlockedCodeStore(self._quant.code_bytes, n_factors, self._block_layout(), factor_codes=codes)
        else:
            self._store = CodeStore(self._quant.code_bytes, n_factors, factor_codes=codes)
        self._vectors = KeptVectors(self.dim) if _validate.flag("keep_vectors", keep_vectors) else None

    def _check_compact(self, compact) -> bool:
        if _validate.flag("compact", compact) and (self.variant != "mse" or self.correction != "ip"):
            raise ValueError(f"compact=True needs variant 'mse' and correction 'ip', got variant "
                             f"{self.variant!r} and correction {self.correction!r}")
        return bool(compact)

    def _check_spread(self, spread) -> np.ndarray | None:
        """None, or a given (dim,) array of positive finite spreads as float32 (the "translate" estimator)."""
        if spread is None:
            return None
        arr = np.asarray(spread)
        if arr.shape != (self.dim,) or not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
            raise ValueError(f"spread must be None or a ({self.dim},) array, got shape {arr.shape} and dtype "
                             f"{arr.dtype}")
        arr = arr.astype(np.float32)
        if not (np.isfinite(arr).all() and (arr > 0).all()):
            raise ValueError("spread must be positive and finite")
        if self.estimator != "translate":
            raise ValueError(f"spread needs estimator 'translate', got {self.estimator!r}")
        return arr

    def _check_estimator(self, estimator) -> str:
        estimator = _validate.choice("estimator", estimator, ESTIMATORS)
        if estimator == "auto":
            return "direction" if self.compact or self.center is False or self.variant == "prod" else "translate"
        if estimator == "translate" and self.compact:
            raise ValueError("compact=True needs estimator 'direction' (or 'auto'), got 'translate'")
        return estimator

    @property
    def _biased(self) -> bool:
        """Whether each vector keeps a bias beside its weights: -||r||^2 under "l2", <m, x - m> when the
        "translate" estimator serves "ip" or "cosine"."""
        return self.metric == "l2" or self.estimator == "translate"

    @property
    def _translating_directions(self) -> bool:
        """Whether "ip"/"cosine" data and queries are translated by the centre (the "translate" estimator)."""
        return self.metric != "l2" and self.estimator == "translate"

    def _block_layout(self) -> _fs.BlockLayout:
        q = self._quant
        return _fs.block_layout(self.dim, self.bits, q.tail_coords, q.tail_bits)

    def _check_layout(self, layout) -> str:
        layout = _validate.choice("layout", layout, LAYOUTS)
        fits = self.variant == "mse" and self.bits <= 4
        if layout == "auto":
            # 3-bit codes take a whole nibble a coordinate in blocks (4/3 the bytes):
            # whoever picks 3 bits is buying memory, so auto keeps them flat.
            return "fastscan" if fits and self.bits != 3 else "flat"
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
    @reading
    def __len__(self) -> int:
        return len(self._store)

    def __repr__(self) -> str:
        return (f"Index(dim={self.dim}, bits={self.bits}, metric={self.metric!r}, variant={self.variant!r}, "
                f"n={len(self)}, code_bytes={self.code_bytes})")

    @property
    def code_bytes(self) -> int:
        """Bytes per vector of codes and factors (ids not counted)."""
        return self._store.vector_code_bytes + self._store.factor_bytes

    @property
    def keep_vectors(self) -> bool:
        return self._vectors is not None

    @property
    @reading
    def nbytes(self) -> int:
        """Bytes held: codes + factors + ids (+ the mean vector when centred, + kept vectors)."""
        return (self._store.nbytes + (0 if self._mean is None else self._mean.nbytes)
                + (0 if self._vectors is None else self._vectors.nbytes))

    @property
    @reading
    def ids(self) -> np.ndarray:
        """Ids held, in slot order (a copy)."""
        return self._store.ids.copy()

    @property
    def mean(self) -> np.ndarray | None:
        """The centre subtracted before encoding, or None."""
        return None if self._mean is None else self._mean.copy()

    @property
    def spread(self) -> np.ndarray | None:
        """Per-coordinate spreads (dim,) float32 of the rotated unit residuals the codes are scaled by, or
        None (see the class docstring)."""
        return None if self._spread is None else self._spread.copy()

    @property
    def quantizer(self) -> TurboQuantMSE:
        return self._quant

    # -- adding --------------------------------------------------------------
    @writing
    def add(self, x, ids=None) -> None:
        """Add vectors x (n, dim), any real dtype. ids: optional unique int64 (n,).

        Default ids continue from one past the largest id ever added.
        """
        self._check_writable("add")
        x = _validate.rows("x", x, self.dim)
        n = x.shape[0]
        ids = self._new_ids(ids, n)
        if n == 0:
            return
        mean, spread = self._mean, self._spread
        fitted = False   # the centre taken from these rows
        if mean is None and self.center is not False and len(self._store) == 0:
            if self.center is True or n >= MIN_CENTER_SAMPLE:
                mean = _estimate_centre(x, directions=_centres_directions(self.metric, self.estimator))
                if not np.isfinite(mean).all():   # a NaN/inf row summed: name it, not a row the centre spoilt
                    _validate.finite_rows("x", _enc.row_norms(x), x)
                fitted = True
        translate, centre, gain = self._centring(mean)
        scale, row_norms, centre_dots = None, None, None
        if self._translating_directions and self.metric == "cosine":
            # cosine: each row's direction is translated, so the encoder needs 1 / ||x|| first
            row_norms, centre_dots = np.empty(n), np.empty(n)
            _enc.norms_and_dots(x, np.zeros(self.dim, np.float32) if mean is None else mean, row_norms, centre_dots)
            _validate.finite_rows("x", row_norms, x)
            self._check_directions(row_norms, "x")
            scale = 1.0 / row_norms
        if (spread is None and mean is not None and self.estimator == "translate" and len(self._store) == 0
                and (fitted or n >= MIN_CENTER_SAMPLE)):
            spread = _estimate_spread(self._quant, x, self.metric == "cosine", translate)
        # One pass over x: the encoder rotates, then translates and
        # normalises (the rotation commutes with both), and writes the codes
        # where the store keeps them. The norms it computes on the way tell
        # which rows are not finite (and, where nothing is translated, they
        # are ||x||): nothing is committed until the checks pass.
        target = self._store.code_target(n, self._quant.bits)
        enc = self._quant._encode_into(x, target, len(self._store), scale=scale, translate=translate, centre=centre,
                                       gain=gain, spread=spread)
        _validate.finite_rows("x", enc.norms, x)
        if row_norms is None:
            self._check_directions(enc.norms, "x")
        with np.errstate(over="ignore"):   # inf for a huge row, rejected below
            norms = None if self.metric == "cosine" and row_norms is None else enc.norms.astype(np.float32)
        bias = self._centre_bias(x, mean, row_norms, centre_dots) if self._translating_directions else None
        factors = self._stored_factors(norms, enc.dots, enc.gammas, x, bias)
        if mean is not self._mean:
            self._set_mean(mean)
        self._spread = spread
        self._store.commit(factors, ids)
        if self._vectors is not None:
            self._keep(x, self._row_scale(enc.norms if row_norms is None else row_norms, "x"), ids)

    @writing
    def fit_spread(self, x) -> None:
        """Fit the per-coordinate spreads on rows x (n, dim) as one add of x would, before the first add.

        For callers adding in chunks: with center= from `estimate_centre` and
        the spreads from this, the index does not depend on how the rows were
        split. Needs the "translate" estimator, a centre and an empty index.
        """
        x = _validate.rows("x", x, self.dim)
        if self.estimator != "translate" or self._mean is None or len(self._store):
            raise ValueError(f"fit_spread needs estimator 'translate', a centre and an empty index, got "
                             f"estimator {self.estimator!r}, centre {'set' if self._mean is not None else 'None'} "
                             f"and {len(self._store)} vectors")
        spread = _estimate_spread(self._quant, x, self.metric == "cosine", self._translate)
        if not np.isfinite(spread).all():
            _validate.finite_rows("x", _enc.row_norms(x), x)
        self._spread = spread

    def _centre_bias(self, x: np.ndarray, mean: np.ndarray | None, row_norms: np.ndarray | None,
                     centre_dots: np.ndarray | None) -> np.ndarray:
        """<m, x - m> (n,) float64 for each row (its unit direction under "cosine", from its norm and
        <x, m> (n,) float64 already computed): the exact part of the "translate" estimator's score but
        for <m, m>, which `_finish` adds with the query's <q, m> (smaller numbers keep more of their
        precision as float16); zeros without a centre."""
        if mean is None:
            return np.zeros(x.shape[0])
        if row_norms is None:
            bias = (x @ mean.astype(np.float32)).astype(np.float64)
        else:
            bias = centre_dots / row_norms
        return bias - float(mean.astype(np.float64) @ mean)

    def _new_ids(self, ids, n: int) -> np.ndarray:
        """Checked ids for n new vectors; None gives the next n default ids."""
        if ids is None:
            if self._store.next_id + n - 1 > _validate.MAX_ID:
                raise ValueError(f"ids must be given: the {n} default ids from {self._store.next_id} on would "
                                 f"pass the largest id {_validate.MAX_ID}")
            return np.arange(self._store.next_id, self._store.next_id + n, dtype=np.int64)
        ids = _validate.ids("ids", ids, n)
        if ids.size and ids.max() > _validate.MAX_ID:   # it would leave no next default id in int64
            raise ValueError(f"ids must be at most {_validate.MAX_ID}, got {int(ids.max())}")
        present = self._store.contains(ids)
        if present.any():
            raise ValueError(f"ids must not be in the index already, got id {int(ids[present][0])} "
                             f"which is present")
        return ids

    def _keep(self, x: np.ndarray, scale: np.ndarray, ids: np.ndarray) -> None:
        """Keep the rows as the exact scores see them (unit rows for cosine)."""
        if self._vectors is not None:
            self._vectors.append(x if self.metric != "cosine" else x * scale[:, None].astype(np.float32), ids)

    def _set_mean(self, mean: np.ndarray | None) -> None:
        """Install the centre: translate by it under l2, centre directions on it otherwise."""
        self._mean = mean
        # float64 mean and its squared norm: what `_finish` adds back to every translated score
        self._mean64 = None if mean is None else mean.astype(np.float64)
        self._mean_sq = None if mean is None else self._mean64 @ self._mean64
        self._translate, self._centre, self._gain = self._centring(mean)
        self._centroid_table = self._quant.centroid_table_for(self._gain)
        self._block_book: _fs.BlockCodebook | None = None   # `_block_codebook`, built on first use
        self._dot_book = self._dot_codebook()

    def _dot_codebook(self) -> _dot.DotCodebook | None:
        """The integer engine's decoder where it scans these codes (codes of one MSE part: row-major, or
        fast-scan blocks at 1, 2 and 4 bits, whose columns are row-major codes), else None."""
        if self.variant != "mse" or self._quant.tail_coords:
            return None
        if self.layout != "flat" and not (self.layout == "fastscan" and self.bits in _DOT_BATCH):
            return None
        return _dot.dot_codebook(self._centroid_table[0, :1 << self.bits], self.bits)

    def _centring(self, mean: np.ndarray | None):
        """(translate, centre, gain) the encoder takes for centre `mean` (see `_set_mean`)."""
        rotated = None if mean is None else self._quant.rotation.apply(mean[None, :])[0]
        if self.estimator == "translate":   # see the class docstring
            return rotated, None, 1.0
        # l2 distances do not change when data and queries move together, and
        # smaller vectors quantize with smaller errors. Inner products do
        # change, so there the common direction m is taken out of each unit
        # direction u instead and kept in the reconstruction. u - m has mean
        # square norm 1 - ||m||^2 when m is the mean of the u: the codebook
        # narrows by that much (which recalls more than translating and
        # renormalising: docs/design.md, "Measurements behind the code").
        translate = rotated if self.metric == "l2" else None
        centre = rotated if self.metric != "l2" else None
        spread = 1.0 if centre is None else 1.0 - float(mean.astype(np.float64) @ mean)
        return translate, centre, 1.0 / math.sqrt(min(1.0, max(spread, 1e-4)))

    def _row_scale(self, norms: np.ndarray, name: str) -> np.ndarray:
        """Per-row factor applied before encoding: 1 / ||row|| for cosine (rejecting zero rows), else 1."""
        if self.metric != "cosine":
            return np.ones(norms.shape[0])
        self._check_directions(norms, name)
        return 1.0 / norms

    def _check_directions(self, norms: np.ndarray, name: str) -> None:
        """Under cosine, reject the first zero row of `name` (norms (n,)): it has no direction."""
        if self.metric == "cosine" and not norms.all():
            row = int(np.flatnonzero(norms == 0)[0])
            raise ValueError(f"{name} row {row} is a zero vector, which has no direction under metric 'cosine'")

    def _stored_factors(self, norms: np.ndarray | None, dots: np.ndarray, gammas: np.ndarray,
                        x: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
        """The factors the store keeps for rows x, from the encoder's (n,) float32 norms (None: all 1,
        under cosine), dots and gammas: `_scan_factors`, or packed by the store's `factor_codes` when
        compact; checked for rows too large for them."""
        codes = self._store.factor_codes
        if codes is None or isinstance(codes, HalfFactors):
            factors = self._scan_factors(norms, dots, gammas, bias)
            if not np.isfinite(factors).all():   # float32 factors of huge rows
                _validate.finite_rows("x", np.abs(factors).max(axis=1), x)
            if codes is None:
                return factors
            bad = codes.overflow(factors)
            if bad >= 0:
                raise ValueError(f"x row {bad} has factors {factors[bad].tolist()} beyond the float16 range at "
                                 f"the scale the first add fixed ({codes.scale}): more than 64 times "
                                 f"the largest of those")
            return codes.pack(factors)
        bad = codes.norm_overflow(norms)
        if bad >= 0:
            raise ValueError(f"x row {bad} has norm {float(norms[bad]):.6g}, beyond the float16 range "
                             f"(65504) in which compact=True keeps norms")
        return codes.pack(norms, _corrections(dots))

    def _scan_factors(self, norms: np.ndarray | None, dots: np.ndarray, gammas: np.ndarray,
                      bias: np.ndarray | None = None) -> np.ndarray:
        """Per-vector kernel weights (n, n_factors) float32 from the encoder's (n,) float32 norms (None:
        all 1), dots and gammas: score = sum_s w_s * partial_s (+ bias: -||r||^2 under l2, the given
        <m, x> (n,) float64 under the "translate" estimator's ip and cosine).

        Computed in float64 and rounded once into the float32 columns, a
        chunk of rows at a time: fresh arrays of n float64 cost page faults,
        chunks reuse memory already mapped and cached.
        """
        n = dots.shape[0]
        out = np.empty((n, self._store.n_factors), np.float32)
        for lo in range(0, n, _FACTOR_CHUNK):
            hi = min(n, lo + _FACTOR_CHUNK)
            self._scan_factors_into(None if norms is None else norms[lo:hi], dots[lo:hi], gammas[lo:hi],
                                    out[lo:hi], None if bias is None else bias[lo:hi])
        return out

    def _scan_factors_into(self, norms: np.ndarray | None, dots: np.ndarray, gammas: np.ndarray,
                           out: np.ndarray, bias: np.ndarray | None = None) -> None:
        """`_scan_factors` of a few rows, into out (m, n_factors) float32."""
        n = dots.shape[0]
        norms = np.ones(n) if norms is None else norms.astype(np.float64)
        if self.variant == "prod":
            weights = [norms, norms * gammas]
        elif self.correction == "ip":
            w = np.zeros(n)
            np.divide(norms, dots, out=w, where=dots > 0)   # 0 where <u, u_hat> is not positive
            weights = [w]
        else:
            weights = [norms]
        if self.metric == "l2":
            # -||q - x||^2 = 2<q, x> - ||x||^2 - ||q||^2; the last term is added per query.
            weights = [2.0 * w for w in weights] + [-norms * norms]
        elif self._biased:
            weights = weights + [np.zeros(n) if bias is None else bias]
        with np.errstate(over="ignore"):   # inf for a huge row, which add rejects
            for s, w in enumerate(weights):
                out[:, s] = w

    # -- searching -----------------------------------------------------------
    @reading
    def search(self, q, k: int, *, threads: int | None = None, rerank: int | None = None, filter=None,
               exact: bool = False):
        """k nearest neighbours of each query row.

        q (nq, dim) any real dtype; returns D (nq, k) float32 and I (nq, k) int64.
        D is the estimated similarity (descending) for "ip"/"cosine" and the
        estimated squared distance (ascending) for "l2". Missing results are
        id -1 with D -inf (similarity) or +inf (distance).
        k above len(index) is padded (up to MAX_PADDED_K; more is refused), and
        the kernels are asked for at most len(index) results, as is rerank.
        Under "l2" a query whose squared norm overflows float32 is refused.
        rerank=R (>= k, needs keep_vectors=True): take the R best by the codes
        (the fast-scan layout ranks them by its u8-table estimate, with no
        exact re-scoring), then return the k best of those by the exact
        metric, with exact D.
        filter: ids that may be returned (array-like or set of ints; any order,
        duplicates and ids not held ignored), or None for all. The result is
        the unfiltered ranking restricted to them (exact scores, ties to the
        lower slot; with rerank the shortlist is the R best allowed), so at
        most min(k, allowed ids held) are found. The kernels skip every
        32-vector block with no allowed vector, and score the allowed ones
        directly when they are that sparse.
        exact: the fast-scan layout re-scores every vector whose estimate's
        error bound reaches the running k-th best. exact=True bounds it by
        every table's worst rounding, so the top k is the full-code top k
        always; the default bounds it by LIKELY_SIGMAS standard deviations of
        the summed roundings (`kernels.fastscan.build_tables`), which
        re-scores fewer vectors and differs only where a vector's rounding
        error exceeds that (the bench prints the share of queries whose top
        k equals the full-code top k). The other layouts are always exact.
        """
        exact = _validate.flag("exact", exact)
        q, q_exact, k, shortlist = self._queries(q, k, rerank)
        allowed, shortlist = self._filter(filter, shortlist)
        with _ThreadCount(threads) as nthreads:
            scores, slots = self._search_prepared(q, shortlist, nthreads, exact=rerank is None, allowed=allowed,
                                                  guarantee=exact)
            return self._results(q, q_exact, scores, slots, k, rerank)

    def _filter(self, filter, shortlist: int) -> tuple[SlotFilter | None, int]:
        """The checked filter in slot terms (None: no filter) and the shortlist, cut to the allowed count."""
        if filter is None:
            return None, shortlist
        allowed = self._store.filter(_validate.id_filter("filter", filter))
        return allowed, max(1, min(shortlist, allowed.slots.size))

    def _queries(self, q, k, rerank):
        """Checked (q for the codes, q for exact scores, k, shortlist size) of a search call."""
        q, norms = _validate.vectors_and_norms("q", q, self.dim)
        k = _validate.integer("k", k, low=1)
        held = len(self._store)
        if k > max(held, MAX_PADDED_K):
            raise ValueError(f"k must be at most {MAX_PADDED_K} or the {held} vectors held (results beyond "
                             f"those are padding), got {k}")
        if self.metric == "l2":
            _check_l2_queries(norms)
        # Kernels are asked for no more than the index holds: `_results` pads to k.
        shortlist = min(self._shortlist(k, rerank), max(held, 1))
        if self.metric == "cosine":
            q = (q * self._row_scale(norms, "q")[:, None]).astype(np.float32)
        q_exact = q
        if self._translate is not None:
            q = q - self._mean
        return q, q_exact, k, shortlist

    def _results(self, q, q_exact, scores, slots, k, rerank):
        """D, I from the kernel's (scores, slots), re-ranked exactly when asked."""
        D, I = self._finish(q, scores, slots)
        if rerank is not None:
            scores, I = self._vectors.rerank(q_exact, I, min(k, I.shape[1]), self.metric == "l2")
            D = (-scores if self.metric == "l2" else scores).astype(np.float32)
        return self._padded(D, I, k)

    def _padded(self, D: np.ndarray, I: np.ndarray, k: int):
        """D, I widened to k columns of missing results (id -1, D -inf, or +inf under l2)."""
        if D.shape[1] >= k:
            return D, I
        nq, extra = D.shape[0], k - D.shape[1]
        fill = np.inf if self.metric == "l2" else -np.inf
        return (np.hstack([D, np.full((nq, extra), fill, np.float32)]),
                np.hstack([I, np.full((nq, extra), -1, np.int64)]))

    def _shortlist(self, k: int, rerank) -> int:
        """How many candidates the codes must deliver: k, or the checked rerank size."""
        if rerank is None:
            return k
        rerank = _validate.integer("rerank", rerank, low=k)
        if self._vectors is None:
            raise ValueError(f"rerank needs the vectors: build the index with keep_vectors=True, "
                             f"got rerank={rerank} on an index without them")
        return rerank

    def _search_prepared(self, q: np.ndarray, k: int, nthreads: int, exact: bool = True,
                         allowed: SlotFilter | None = None, guarantee: bool = True):
        """Kernel scores and slots of the k best (among the allowed slots, when given); exact=False lets
        fast-scan rank by its u8 estimate (a shortlist to re-rank from the vectors needs no exact code
        scores)."""
        n, nq = len(self._store), q.shape[0]
        if n == 0 or nq == 0 or (allowed is not None and not allowed.slots.size):
            return np.full((nq, k), -np.inf, np.float32), np.full((nq, k), -1, np.int64)
        if self.layout == "fastscan":
            batch = self._dot_book is not None and nq >= _DOT_BATCH[self.bits]
            if allowed is not None and _score_directly(allowed.slots, k, _DIRECT_PER_RESULT_DOT if batch else None):
                return self._score_fastscan_slots(q, k, allowed)
            if batch:
                return self._search_dot(q, k, nthreads, exact, allowed)
            return self._search_fastscan(q, k, nthreads, exact, allowed, guarantee)
        if self._dot_book is not None:
            return self._search_dot(q, k, nthreads, exact, allowed)
        n_chunks = 1
        if nq < nthreads:
            n_chunks = max(1, min(math.ceil(nthreads / nq), n // _MIN_CHUNK))
        return search_codes(self._store.codes, self._store.factors, *self._segment_values(q),
                            self._centroid_table, *self._quant.plan, k, n_chunks,
                            _NO_FILTER if allowed is None else allowed.mask)

    def _segment_values(self, q: np.ndarray):
        """The kernels' per-query inputs: qv (nq, nseg, d) and offsets qoff (nq, nseg) float32.

        Every reconstruction holds the rotated mean direction, so its inner
        product with the query is one offset of the first segment.
        """
        qv = self._quant.segment_values(q)
        qoff = np.zeros(qv.shape[:2], np.float32)
        if self._centre is not None:
            qoff[:, 0] = qv[:, 0, :] @ self._centre
        if self._spread is not None:
            qv[:, 0, :] *= self._spread
        return qv, qoff

    def _fastscan_queries(self, q: np.ndarray):
        """The fast-scan and integer kernels' per-query inputs: rotated queries (nq, dim) float32 and
        partial-score offsets (nq,) float64."""
        qv, qoff = self._segment_values(q)
        return np.ascontiguousarray(qv[:, 0, :]), qoff[:, 0].astype(np.float64)

    def _head_codebook(self) -> np.ndarray:
        """The codebook (2**bits,) float32 of the codes' first part (all of them without a tail)."""
        return np.ascontiguousarray(self._centroid_table[0, :1 << self.bits])

    def _block_codebook(self) -> _fs.BlockCodebook:
        """The fast-scan kernels' `BlockCodebook`: the head's codebook and, for a compact code, the last
        part's (its tail's). Kept until the centre changes (`_set_mean`): a 1-query search pays for
        building it."""
        if self._block_book is None:
            lay = self._store.layout
            self._block_book = _fs.block_codebook(
                lay, self._head_codebook(),
                self._centroid_table[self._quant.segments[0][-1].table, :1 << lay.tail_bits])
        return self._block_book

    def _search_fastscan(self, q: np.ndarray, k: int, nthreads: int, exact: bool = True,
                         allowed: SlotFilter | None = None, guarantee: bool = True):
        store, lay = self._store, self._store.layout
        group = _fs.query_group(lay.rows)
        n_groups = -(-q.shape[0] // group)
        n_chunks = 1
        if n_groups < nthreads:   # few queries: split the database across threads instead, in
            # several chunks per thread so that a thread the OS runs less does less of the work
            n_chunks = max(1, min(_CHUNKS_PER_THREAD * math.ceil(nthreads / n_groups), len(store) // _MIN_CHUNK))
        qrot, qoff = self._fastscan_queries(q)
        # Threads take tasks one at a time: on a shared machine a static split
        # waits for whichever thread the OS runs least.
        with _one_task_a_time(nthreads):
            return _fs.search_blocks(store.blocks, len(store), store.split_factors(), qrot, qoff,
                                     self._block_codebook(), k, n_chunks, group, _fs.simd_level(), exact,
                                     _NO_FILTER if allowed is None else allowed.mask, guarantee)

    def _score_fastscan_slots(self, q: np.ndarray, k: int, allowed: SlotFilter):
        """The exact top k among a sparse filter's slots, each scored directly (`fastscan.score_slots`)."""
        store = self._store
        return _fs.score_slots(store.blocks, allowed.slots, store.split_factors(), *self._fastscan_queries(q),
                               self._block_codebook(), k)

    def _search_dot(self, q: np.ndarray, k: int, nthreads: int, exact: bool = True,
                    allowed: SlotFilter | None = None):
        """The integer engine (`kernels.dot`) over the row-major codes or fast-scan blocks: the exact float
        top k, or with exact=False the k best by exact score of the k best by estimate (a shortlist
        to re-rank); among the allowed slots when given (the kernel skips blocks with none)."""
        store, book = self._store, self._dot_book
        mask = None if allowed is None else allowed.mask
        n_groups = -(-q.shape[0] // _dot.GROUP)
        n_chunks = 1
        if n_groups < nthreads:   # few queries: split the database across threads (see _search_fastscan)
            n_chunks = max(1, min(_CHUNKS_PER_THREAD * math.ceil(nthreads / n_groups), len(store) // _MIN_CHUNK))
        qrot, qoff = self._fastscan_queries(q)
        prepared, cents = _dot.dot_queries(qrot, qoff, book), self._head_codebook()
        with _one_task_a_time(nthreads):
            if self.layout == "fastscan":   # the blocks' columns are the row-major codes
                return _dot.search_dot(np.empty((0, store.blocks.shape[1]), np.uint8), store.factors, prepared,
                                       book, cents, k, k, n_chunks, exact, _dot.simd_level(), mask, nthreads,
                                       store.blocks, len(store))
            return _dot.search_dot(store.codes, store.factors, prepared, book, cents, k, k, n_chunks, exact,
                                   _dot.simd_level(), mask, nthreads)

    def _finish(self, q: np.ndarray, scores: np.ndarray, slots: np.ndarray):
        """Map slots to ids and turn kernel scores into the metric's D."""
        found = slots >= 0
        ids = self._store.ids
        I = np.where(found, ids.take(slots, mode="clip"), -1) if ids.size else np.full(slots.shape, -1, np.int64)
        D = scores.astype(np.float64)
        if self.metric == "l2":
            qn = _enc.row_norms(q) ** 2
            D = np.maximum(qn[:, None] - D, 0.0)
            D[~found] = np.inf
        else:
            if self._translate is not None:   # <q, x> = <q - m, x - m> + <m, x - m> + <q, m>, q here q - m
                D += (q.astype(np.float64) @ self._mean64 + self._mean_sq)[:, None]
            D[~found] = -np.inf
        return D.astype(np.float32), I

    # -- removing ------------------------------------------------------------
    @writing
    def remove(self, ids, *, missing: str = "raise") -> int:
        """Remove vectors by id; returns how many were removed.

        missing="raise" (default) rejects the whole call, removing nothing, if
        any id is absent; missing="ignore" skips absent ids.
        """
        self._check_writable("remove")
        _validate.choice("missing", missing, ("raise", "ignore"))
        ids = _validate.ids("ids", ids)
        if missing == "raise" and ids.size:
            absent = self._store.slots(ids) < 0
            if absent.any():
                raise ValueError(f"ids must be in the index, got unknown id {int(ids[absent][0])}")
        if self._vectors is not None:
            self._vectors.remove(ids)
        return self._store.remove(ids)

    # -- persistence ---------------------------------------------------------
    @reading
    def save(self, path: str | os.PathLike) -> None:
        """Write the index to one file, atomically (see `turboann.io`). A mapped index (`load(mmap=True)`)
        saves to any other path; over the file it maps it raises `ReadOnlyIndexError`."""
        mapped = self._mapped_from
        if mapped is not None and os.path.exists(path) and os.path.samefile(path, mapped):
            raise ReadOnlyIndexError(f"path {os.fspath(path)!r} is the file this index maps read-only "
                                     f"(load(..., mmap=True)): save it to another path")
        io.save(self, path)

    @property
    def read_only(self) -> bool:
        """True for an index mapped from a file (`load(path, mmap=True)`): searches only."""
        return self._mapped_from is not None

    def _check_writable(self, action: str) -> None:
        """Refuse `action` on a mapped index, before anything is checked or changed."""
        if self._mapped_from is not None:
            raise ReadOnlyIndexError(f"{action} needs a writable index, got one mapping {self._mapped_from!r} "
                                     f"read-only (load(..., mmap=True)); load it without mmap to change it")

    def _settings(self) -> dict:
        return {"dim": self.dim, "bits": self.bits, "metric": self.metric, "seed": self.seed,
                "variant": self.variant, "rotation": self._quant.rotation.kind,
                "rotation_rounds": self._quant.rotation.rounds,
                "correction": self.correction, "center": self.center, "layout": self.layout,
                "estimator": self.estimator,
                **({"keep_vectors": True} if self._vectors is not None else {}),
                **({"compact": True} if self.compact else {})}

    def _to_file(self) -> tuple[str, dict, dict[str, np.ndarray], int]:
        """(kind, settings, arrays, format version) for `io.save`: fast-scan codes as the search reads
        them (version 3), so that `load(mmap=True)` maps them as they are (see `turboann.index_file`)."""
        arrays, ids, version = self._code_arrays()
        arrays["next_id"] = np.array([self._store.next_id], np.int64)
        if self._mean is not None:
            # "mean" translates (l2); a mean direction is saved under its own name so
            # files from before directions were centred this way cannot be misread.
            arrays["mean" if self.metric == "l2" else "mean_direction"] = self._mean
        if getattr(self, "_spread", None) is not None:
            arrays["spread"] = self._spread
        half = getattr(self._store, "factor_codes", None)
        if getattr(half, "scale", None) is not None and hasattr(half, "fit"):   # float16 factors (`half.HalfFactors`)
            arrays["factor_scale"] = np.array([half.scale], np.float32)
        if self._vectors is not None:
            arrays["vectors"] = self._vectors.vectors[self._vectors.rows(ids)]
            version = max(version, 2)
        return type(self).__name__, self._settings(), arrays, version

    def _code_arrays(self) -> tuple[dict[str, np.ndarray], np.ndarray, int]:
        """(arrays, ids (n,) int64 in the order of the kept vectors, lowest format version) of the codes."""
        store = self._store
        if self.layout == "fastscan":
            return ({"blocks": store.blocks, "split_factors": store.split_factors(), "factors": store.stored_factors,
                     "ids": store.ids}, store.ids, 3)
        return {"codes": store.codes, "factors": store.stored_factors, "ids": store.ids}, store.ids, 1

    @classmethod
    def _from_file(cls, stored: io.Stored) -> "Index":
        """The index a file holds (`io.load`), its arrays checked against the settings before it is
        built and their contents after (see `turboann.index_file`)."""
        path, settings, arrays = stored.path, stored.settings, stored.arrays
        index_file.upgrade_settings(stored.kind, settings)
        form = index_file.codes_form(arrays)
        index_file.check_arrays(stored, form)
        try:
            index = cls(**settings)
        except (TypeError, ValueError) as e:
            raise IndexFileError(f"{path!r} has invalid settings: {e}") from None
        store = index._store
        factors = arrays["arena_factors" if form == "arena" else "factors"]
        factor_cols, factor_dtype = store.factor_layout()
        if form == "rows":
            fits = arrays["codes"].shape[1] == store.code_bytes
        else:   # blocks of this layout's rows
            fits = index.layout == "fastscan" and arrays[index_file.FORMS[form][0]].shape[1] == store.layout.rows
        if not fits or factors.shape[1] != factor_cols or factors.dtype != factor_dtype:
            raise IndexFileError(f"{path!r} is corrupt: arrays do not match the settings")
        index_file.check_contents(stored, form, getattr(store, "factor_codes", None), index.metric,
                                  getattr(index, "estimator", None), getattr(index, "center", None))
        centre_name = "mean" if index.metric == "l2" else "mean_direction"
        if centre_name in arrays:
            index._set_mean(arrays[centre_name])
        if "spread" in arrays:
            index._spread = arrays["spread"].copy()
        if "factor_scale" in arrays:
            store.factor_codes.scale = float(arrays["factor_scale"][0])
        ids = index._load_codes(stored, form, factors, int(arrays["next_id"][0]))
        if index._vectors is not None:
            vectors = arrays["vectors"]
            index._vectors.load(vectors if stored.mapped else vectors.copy(), ids.copy())
        if stored.mapped:
            index._mapped_from = os.path.abspath(path)
        return index

    def _load_codes(self, stored: io.Stored, form: str, factors: np.ndarray, next_id: int) -> np.ndarray:
        """Fill the store from the file's codes (`index_file.FORMS`); the ids (n,) int64 in the order of
        the kept vectors."""
        arrays = stored.arrays
        if form == "blocks":
            self._store.load_blocks(arrays["blocks"], arrays["split_factors"], factors, arrays["ids"], next_id)
        else:
            self._store.load_arrays(arrays["codes"], factors, arrays["ids"], next_id)
        return arrays["ids"]


io.register("Index", Index._from_file, index_file.SMALL_ARRAYS)
