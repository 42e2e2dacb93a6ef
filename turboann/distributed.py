"""ShardedIndex: one turboann index per Ray actor, searched as one index.

Codes are data-oblivious: with the same settings and seed every shard encodes
a vector exactly as a single index would, so the shards' top k merged exactly
equal that index's top k (same ids, same scores). What is data-dependent is
decided once on the driver and handed to every shard: the centre (as
`Index(center=...)` would estimate it from the first add) and, for IVF, the
coarse centroids (`train`).

Vectors go to shard `shard_of(id, shards)`, a multiplicative hash of the id,
so ids stay global and unique and strided ids still spread evenly.

Ray is an optional dependency: pip install 'turboann[ray]'.
"""
from __future__ import annotations

import json
import os
import uuid
import warnings

import numpy as np

from . import _files, _validate
from ._rwlock import RWLock, reading, writing
from .index import MIN_CENTER_SAMPLE, Index, estimate_centre
from .io import IndexFileError, ReadOnlyIndexError
from .ivf import IVFIndex

_RAY_HINT = "pip install 'turboann[ray]'"
MANIFEST = "manifest.json"
_FORMAT = "turboann-sharded"
_VERSION = 1
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)   # 2^64 / golden ratio: Fibonacci hashing


class ShardUnavailableError(RuntimeError):
    """A shard's actor died or cannot be reached; `shard` is its number."""

    def __init__(self, message: str, shard: int):
        super().__init__(message)
        self.shard = shard


class PartialResultWarning(UserWarning):
    """search(allow_partial=True) answered without some dead shards."""


def _import_ray():
    try:
        import ray
    except ImportError:
        raise ImportError(f"turboann.distributed needs Ray: {_RAY_HINT}") from None
    return ray


def shard_of(ids: np.ndarray, shards: int) -> np.ndarray:
    """Shard number (n,) int64 of each id (n,) int64: Fibonacci hash of the id, mod shards."""
    with np.errstate(over="ignore"):
        h = np.asarray(ids, np.int64).view(np.uint64) * _GOLDEN
    return ((h >> np.uint64(32)) % np.uint64(shards)).astype(np.int64)


class _Shard:
    """The actor body: holds one Index or IVFIndex. Plain class; wrapped by ray.remote on use."""

    def __init__(self, kind: str, settings: dict | None = None):
        self.index = None if settings is None else _build(kind, settings)

    def load(self, path: str, mmap: bool = False) -> None:
        """Load a shard file (a method, not the constructor, so that its errors reach the caller);
        mmap=True maps it (`io.load(..., mmap=True)`)."""
        from . import io
        self.index = io.load(path, mmap=mmap)

    def reset(self, kind: str, settings: dict, centroids=None) -> None:
        """Rebuild the (empty) index, e.g. with the centre or the coarse centroids now known."""
        self.index = _build(kind, settings)
        if centroids is not None:
            self.index.set_centroids(centroids)

    def absent(self, ids: np.ndarray) -> np.ndarray:
        """(n,) bool: which ids this shard does not hold.

        Through the store's id -> slot dict (built on first use, ~100 bytes a
        vector): each later check costs O(len(ids)), where the dict-less
        `contains` costs O(shard size) per call, too slow for streaming adds.
        """
        return self.index._store.slots(ids) < 0

    def add(self, x: np.ndarray, ids: np.ndarray) -> int:
        self.index.add(x, ids)
        return len(self.index)

    def search(self, q: np.ndarray, k: int, kwargs: dict):
        return self.index.search(q, k, **kwargs)

    def remove(self, ids: np.ndarray) -> int:
        return self.index.remove(ids, missing="ignore")

    def save(self, path: str) -> int:
        self.index.save(path)
        return len(self.index)

    def state(self, shard: int, shards: int) -> dict:
        """What the driver checks and rebuilds from after a load."""
        ids = self.index.ids
        index = self.index
        return {"n": len(ids), "routed": bool((shard_of(ids, shards) == shard).all()),
                "next_id": int(index._store.next_id), "nbytes": int(index.nbytes),
                "mean": index.mean, "spread": getattr(index, "spread", None),
                "centroids": getattr(index, "centroids", None),
                "settings": index._settings()}

    def nbytes(self) -> int:
        return int(self.index.nbytes)


def _build(kind: str, settings: dict):
    return (IVFIndex if kind == "IVFIndex" else Index)(**settings)


class ShardedIndex:
    """One turboann index per Ray actor, added to, searched and saved as one index.

    dim, bits, metric, seed and **options (variant, rotation, correction,
    rotation_rounds, keep_vectors, layout, center) as in `Index`; every shard
    gets the same. ivf=None for flat shards, or {"nlist": N, ...} (IVFIndex
    options: nlist, mode, max_train_per_list) for IVF shards, which then need
    `train(sample)` before the first add. actor_options: passed to Ray's
    `.options()` of every shard actor (num_cpus, resources, ...).
    Ray must be initialised (ray.init) or it starts a local instance.
    """

    def __init__(self, dim: int, shards: int = 8, bits: int = 4, metric: str = "cosine", *,
                 ivf: dict | None = None, seed: int = 0, actor_options: dict | None = None, **options):
        # The driver's own state (count, next id, centre) and the shards must change together: searches
        # share this lock, writes hold it alone, so a search never sees some shards after an add and
        # others before it (each actor runs its calls one at a time, in order).
        self._lock = RWLock()
        self.shards = _validate.integer("shards", shards, low=1)
        self._kind, self._settings = self._check_settings(dim, bits, metric, seed, ivf, options)
        self._template = _build(self._kind, self._settings)   # validates the settings here, on the driver
        self.dim, self.bits, self.metric = self._template.dim, self._template.bits, self._template.metric
        self._center = self._template.center if self._kind == "Index" else False
        self._mean = self._template.mean
        self._spread = None
        self._actor_options = dict(actor_options or {})
        self._count = 0
        self._next_id = 0
        self.last_missing_shards: tuple[int, ...] = ()
        self._mapped_from: str | None = None   # the directory a `load(..., mmap=True)` maps
        self._actors = self._start([(self._kind, self._shard_settings())] * self.shards)

    @staticmethod
    def _check_settings(dim, bits, metric, seed, ivf, options):
        if "center" in options and ivf is not None:
            raise ValueError("center does not apply to IVF shards (the coarse centroids take its place), "
                             "got center with ivf")
        settings = {"dim": dim, "bits": bits, "metric": metric, "seed": seed, **options}
        if ivf is None:
            return "Index", settings
        if not isinstance(ivf, dict) or "nlist" not in ivf:
            raise TypeError(f"ivf must be None or a dict with at least 'nlist', got {ivf!r}")
        allowed = {"nlist", "mode", "max_train_per_list"}
        if set(ivf) - allowed:
            raise ValueError(f"ivf keys must be among {sorted(allowed)}, got {sorted(set(ivf) - allowed)}")
        return "IVFIndex", {**settings, **ivf}

    def _shard_settings(self) -> dict:
        """Settings each shard is built with: the driver's centre decision, never its own."""
        if self._kind != "Index":
            return dict(self._settings)
        settings = {**self._settings, "estimator": self._template.estimator}   # as decided for the driver's centre
        if self._mean is None:
            return {**settings, "center": False}
        return {**settings, "center": self._mean,
                **({"spread": self._spread} if self._spread is not None else {})}

    def _start(self, specs):
        ray = _import_ray()
        actor_class = ray.remote(_Shard)
        if self._actor_options:
            actor_class = actor_class.options(**self._actor_options)
        return [actor_class.remote(*spec) for spec in specs]

    # -- introspection ----------------------------------------------------------
    def __len__(self) -> int:
        return self._count

    def __repr__(self) -> str:
        return (f"ShardedIndex(dim={self.dim}, shards={self.shards}, bits={self.bits}, metric={self.metric!r}, "
                f"kind={self._kind!r}, n={self._count})")

    @property
    def actors(self) -> list:
        """The shards' Ray actor handles, shard 0 first."""
        return list(self._actors)

    @property
    def mean(self) -> np.ndarray | None:
        """The centre every shard subtracts, or None."""
        return None if self._mean is None else self._mean.copy()

    @property
    def spread(self) -> np.ndarray | None:
        """The per-coordinate spreads every shard's codes take (see `Index.spread`), or None."""
        return None if self._spread is None else self._spread.copy()

    @property
    @reading
    def nbytes(self) -> int:
        """Bytes held by all shards (see `Index.nbytes`)."""
        return int(sum(self._gather([a.nbytes.remote() for a in self._actors], "nbytes")))

    # -- talking to shards ------------------------------------------------------
    def _gather(self, refs, action: str, *, allow_partial: bool = False):
        """ray.get each shard's result; a dead shard raises naming it (or is None with allow_partial).

        Errors the shard's index raised (ValueError, TypeError) reach the
        caller as themselves.
        """
        ray = _import_ray()
        out = []
        for shard, ref in enumerate(refs):
            try:
                out.append(ray.get(ref))
            except ray.exceptions.RayActorError as e:
                if not allow_partial:
                    raise ShardUnavailableError(
                        f"shard {shard} of {self.shards} is unavailable during {action}: its Ray actor "
                        f"died ({type(e).__name__}); restore the index with ShardedIndex.load from the "
                        f"last save", shard) from None
                out.append(None)
            except ray.exceptions.RayTaskError as e:
                cause = getattr(e, "cause", None)
                if isinstance(cause, Exception):
                    raise cause from None
                raise
        return out

    def _route(self, ids: np.ndarray):
        """Per shard: the positions (into ids) of the ids it holds."""
        where = shard_of(ids, self.shards)
        order = np.argsort(where, kind="stable")
        bounds = np.searchsorted(where[order], np.arange(self.shards + 1))
        return [order[bounds[s]:bounds[s + 1]] for s in range(self.shards)]

    def _absent(self, ids: np.ndarray, parts) -> np.ndarray:
        """(n,) bool: which ids no shard holds (one call per shard holding some)."""
        absent = np.zeros(ids.shape[0], bool)
        calls = [(s, self._actors[s].absent.remote(ids[p])) for s, p in enumerate(parts) if p.size]
        for (s, _), found in zip(calls, self._gather([r for _, r in calls], "id lookup")):
            absent[parts[s]] = found
        return absent

    # -- training and adding ----------------------------------------------------
    @writing
    def train(self, sample, **kwargs) -> None:
        """IVF only: fit the coarse centroids once on the driver (see `IVFIndex.train`) and give
        them to every shard. Must come before the first add."""
        self._check_writable("train")
        self._check_untrained_ivf("train")
        self._template.train(sample, **kwargs)
        self._share_centroids("train")

    @writing
    def set_centroids(self, centroids) -> None:
        """IVF only: give every shard these coarse centroids (nlist, dim), as `IVFIndex.set_centroids`
        (e.g. trained elsewhere, or shared with an in-process index). Must come before the first add."""
        self._check_writable("set_centroids")
        self._check_untrained_ivf("set_centroids")
        self._template.set_centroids(centroids)
        self._share_centroids("set_centroids")

    def _check_writable(self, action: str) -> None:
        """Refuse `action` on a mapped index (`load(..., mmap=True)`), before any shard is asked."""
        if self._mapped_from is not None:
            raise ReadOnlyIndexError(f"{action} needs a writable index, got one mapping {self._mapped_from!r} "
                                     f"read-only (ShardedIndex.load(..., mmap=True)); load it without mmap to "
                                     f"change it")

    def _check_untrained_ivf(self, action: str) -> None:
        if self._kind != "IVFIndex":
            raise ValueError(f"{action} applies to IVF shards only: build with ivf={{'nlist': N}}, got flat shards")
        if self._count:
            raise ValueError(f"{action} must come before add: the index already holds {self._count} vectors")

    def _share_centroids(self, action: str) -> None:
        centroids = self._template.centroids
        self._gather([a.reset.remote(self._kind, self._settings, centroids) for a in self._actors], action)

    @writing
    def add(self, x, ids=None) -> None:
        """Add vectors x (n, dim), any real dtype; ids: optional unique int64 (n,), global.

        Default ids continue from one past the largest id ever added. Checked
        on the driver first, so a bad call changes no shard. One batched call
        per shard.
        """
        self._check_writable("add")
        x, norms = _validate.vectors_and_norms("x", x, self.dim)
        if self._kind == "IVFIndex":
            self._template._require_trained("add")
        n = x.shape[0]
        if ids is None:
            ids = np.arange(self._next_id, self._next_id + n, dtype=np.int64)
            parts = self._route(ids)
        else:
            ids = _validate.ids("ids", ids, n)
            parts = self._route(ids)
            present = ~self._absent(ids, parts)
            if present.any():
                raise ValueError(f"ids must not be in the index already, got id {int(ids[present][0])} "
                                 f"which is present")
        if n == 0:
            return
        self._template._row_scale(norms, "x")   # rejects zero rows under cosine, as Index does
        self._decide_centre(x)
        calls = [(s, self._actors[s].add.remote(x[p], ids[p])) for s, p in enumerate(parts) if p.size]
        self._gather([r for _, r in calls], "add")
        self._count += n
        self._next_id = max(self._next_id, int(ids.max()) + 1)

    def add_dataset(self, dataset, column: str = "embedding", id_column: str | None = None, *,
                    batch_size: int = 65536) -> int:
        """Add the vectors of a Ray Dataset batch by batch (never collecting it); returns how many.

        column holds the vectors (dim each); id_column, when given, their ids
        (else ids continue as in `add`). Each batch is one `add`: a bad batch
        raises after the earlier batches were added.
        """
        self._check_writable("add_dataset")
        batch_size = _validate.integer("batch_size", batch_size, low=1)
        added = 0
        for batch in dataset.iter_batches(batch_size=batch_size, batch_format="numpy"):
            if column not in batch or (id_column is not None and id_column not in batch):
                raise ValueError(f"dataset must have columns {column!r}"
                                 f"{'' if id_column is None else f' and {id_column!r}'}, got {sorted(batch)}")
            x = _column_vectors(batch[column], column, self.dim, added)
            ids = None if id_column is None else _validate.ids(f"dataset column {id_column!r}",
                                                                batch[id_column], x.shape[0])
            self.add(x, ids)
            added += x.shape[0]
        return added

    def _decide_centre(self, x: np.ndarray) -> None:
        """Estimate the centre from the first add exactly as `Index` would, and give it to every shard."""
        if self._kind != "Index" or self._mean is not None or self._center is False or self._count:
            return
        if self._center is True or x.shape[0] >= MIN_CENTER_SAMPLE:
            self._mean = estimate_centre(x, self.metric, self._template.estimator)
            if self._template.estimator == "translate":   # the spreads one add of x would fit
                one = _build(self._kind, {**self._settings, "center": self._mean})
                one.fit_spread(x)
                self._spread = one.spread
            self._gather([a.reset.remote(self._kind, self._shard_settings()) for a in self._actors], "add")

    # -- searching --------------------------------------------------------------
    @reading
    def search(self, q, k: int, *, nprobe: int | None = None, threads: int | None = None,
               rerank: int | None = None, allow_partial: bool = False, filter=None, exact: bool = False):
        """k nearest neighbours of each query row over all shards: D (nq, k) float32, I (nq, k) int64.

        Same conventions as `Index.search` (and nprobe as `IVFIndex.search`).
        Every shard gets the whole query batch once and returns its top k; the
        merge is exact, ties going to the lower id. A dead shard raises
        ShardUnavailableError naming it; with allow_partial=True the live
        shards' merged result comes back instead, with a PartialResultWarning,
        and `last_missing_shards` names the dead ones. filter as in
        `Index.search`: the driver sends each shard the allowed ids it holds
        (by `shard_of`), so the merge is the restricted ranking of the whole.
        exact as in `Index.search`, in every shard.
        """
        kwargs = {"threads": threads, "rerank": rerank, "exact": exact}
        if self._kind == "IVFIndex":
            nlist = self._template.nlist
            kwargs["nprobe"] = (None if nprobe is None
                                else _validate.integer("nprobe", nprobe, low=1, high=nlist))
        elif nprobe is not None:
            raise ValueError(f"nprobe applies to IVF shards only, got nprobe={nprobe!r} on flat shards")
        q = _validate.vectors("q", q, self.dim)
        k = self._template._queries(q, k, rerank)[2]   # the single index's checks, in its order
        if self._kind == "IVFIndex":
            self._template._require_trained("search")
        shard_kwargs = [kwargs] * self.shards
        if filter is not None:
            allowed = _validate.id_filter("filter", filter)
            where = shard_of(allowed, self.shards)
            shard_kwargs = [{**kwargs, "filter": allowed[where == s]} for s in range(self.shards)]
        q_ref = _import_ray().put(q)   # one copy in the object store, read by every shard
        parts = self._gather([a.search.remote(q_ref, k, kw) for a, kw in zip(self._actors, shard_kwargs)], "search",
                             allow_partial=allow_partial)
        self.last_missing_shards = tuple(s for s, r in enumerate(parts) if r is None)
        if self.last_missing_shards:
            warnings.warn(f"search answered without dead shards {list(self.last_missing_shards)} of "
                          f"{self.shards}: results cover the live shards only", PartialResultWarning,
                          stacklevel=2)
        live = [r for r in parts if r is not None]
        return merge_top_k([d for d, _ in live], [i for _, i in live], k, self.metric == "l2", q.shape[0])

    # -- removing ---------------------------------------------------------------
    @writing
    def remove(self, ids, *, missing: str = "raise") -> int:
        """Remove vectors by id from their shards; returns how many were removed.

        missing as in `Index.remove`: "raise" removes nothing if any id is absent.
        """
        self._check_writable("remove")
        _validate.choice("missing", missing, ("raise", "ignore"))
        ids = _validate.ids("ids", ids)
        if ids.size == 0:
            return 0
        parts = self._route(ids)
        if missing == "raise":
            absent = self._absent(ids, parts)
            if absent.any():
                raise ValueError(f"ids must be in the index, got unknown id {int(ids[absent][0])}")
        calls = [self._actors[s].remove.remote(ids[p]) for s, p in enumerate(parts) if p.size]
        removed = int(sum(self._gather(calls, "remove")))
        self._count -= removed
        return removed

    # -- persistence ------------------------------------------------------------
    @reading
    def save(self, directory: str | os.PathLike) -> None:
        """Write one index file per shard (each shard writes its own, atomically) and a manifest.

        The files of a save carry a fresh token and the manifest is renamed
        into place last, so a crash mid-save leaves the previous save whole;
        files of earlier saves are deleted afterwards. The directory must be
        reachable from every shard's node (shared storage on a cluster).
        """
        directory = os.path.abspath(os.fspath(directory))
        if self._mapped_from is not None and os.path.realpath(directory) == os.path.realpath(self._mapped_from):
            raise ReadOnlyIndexError(f"directory {directory!r} holds the files this index maps read-only "
                                     f"(ShardedIndex.load(..., mmap=True)); save it elsewhere")
        os.makedirs(directory, exist_ok=True)
        token = uuid.uuid4().hex[:12]
        names = [f"shard-{s:05d}-{token}.tann" for s in range(self.shards)]
        counts = self._gather([a.save.remote(os.path.join(directory, name))
                               for a, name in zip(self._actors, names)], "save")
        manifest = {"format": _FORMAT, "version": _VERSION, "kind": self._kind, "settings": self._settings,
                    "shards": self.shards, "routing": "fibonacci64", "next_id": self._next_id,
                    "count": self._count, "files": [{"name": nm, "n": int(c)} for nm, c in zip(names, counts)]}
        _files.atomic_write(os.path.join(directory, MANIFEST),
                            [json.dumps(manifest, indent=1, sort_keys=True).encode()])
        keep = set(names) | {MANIFEST}
        for name in os.listdir(directory):
            if name.startswith("shard-") and name.endswith(".tann") and name not in keep:
                os.unlink(os.path.join(directory, name))

    @classmethod
    def load(cls, directory: str | os.PathLike, *, mmap: bool = False,
             actor_options: dict | None = None) -> "ShardedIndex":
        """Start one actor per shard file of a save and check them against the manifest.

        mmap=True: each shard maps its file (`turboann.load(..., mmap=True)`), so
        shards on one node share the pages; the index is then read-only: train,
        set_centroids, add, add_dataset and remove raise `ReadOnlyIndexError`
        before any shard is asked, as does a save into the directory it maps
        (a save elsewhere writes a normal copy).
        """
        mmap = _validate.flag("mmap", mmap)
        directory = os.path.abspath(os.fspath(directory))
        manifest = _read_manifest(directory)
        self = cls.__new__(cls)
        self._lock = RWLock()
        self._mapped_from = directory if mmap else None
        self.shards, self._kind, self._settings = manifest["shards"], manifest["kind"], manifest["settings"]
        self._actor_options = dict(actor_options or {})
        self.last_missing_shards = ()
        self._actors = self._start([(self._kind, None)] * self.shards)
        self._gather([a.load.remote(os.path.join(directory, f["name"]), mmap)
                      for a, f in zip(self._actors, manifest["files"])], "load")
        states = self._gather([a.state.remote(s, self.shards) for s, a in enumerate(self._actors)], "load")
        for s, (f, st) in enumerate(zip(manifest["files"], states)):
            if st["n"] != f["n"] or not st["routed"]:
                raise IndexFileError(f"{directory!r} is corrupt: shard {s} holds {st['n']} vectors "
                                     f"(manifest: {f['n']}){'' if st['routed'] else ' or ids of other shards'}")
        self._template = _build(self._kind, self._settings)
        self.dim, self.bits, self.metric = self._template.dim, self._template.bits, self._template.metric
        self._center = self._template.center if self._kind == "Index" else False
        self._mean, self._spread = states[0]["mean"], states[0]["spread"]
        if self._kind == "IVFIndex" and states[0]["centroids"] is not None:
            self._template.set_centroids(states[0]["centroids"])
        self._count, self._next_id = int(manifest["count"]), int(manifest["next_id"])
        return self

    @writing
    def close(self) -> None:
        """Stop every shard actor (the data is gone unless saved)."""
        ray = _import_ray()
        for actor in self._actors:
            ray.kill(actor)
        self._actors = []


def _column_vectors(col: np.ndarray, column: str, dim: int, first_row: int) -> np.ndarray:
    """A numpy batch's vector column as (n, dim) real numbers, not yet converted.

    Ray Data gives a fixed-shape tensor column as one (n, dim) array, but a
    list column (or a ragged tensor column) as an (n,) object array of rows;
    those are stacked, each row checked. first_row: the batch's first row
    number in the dataset, for the error message.
    """
    name = f"dataset column {column!r}"
    if col.dtype == object:
        rows = [np.asarray(r) for r in col]
        bad = next((i for i, r in enumerate(rows) if r.shape != (dim,)), None)
        if bad is not None:
            raise ValueError(f"{name} must hold vectors of length {dim} (the index dim), got shape "
                             f"{rows[bad].shape} in row {first_row + bad}")
        col = np.stack(rows) if rows else np.empty((0, dim), np.float32)
    col = _validate.real_array(name, col)
    if col.ndim != 2 or col.shape[1] != dim:
        raise ValueError(f"{name} must hold vectors of length {dim} (the index dim): batches of shape "
                         f"(n, {dim}), got shape {col.shape}")
    return col


def _read_manifest(directory: str) -> dict:
    path = os.path.join(directory, MANIFEST)
    try:
        with open(path, "rb") as f:
            manifest = json.loads(f.read())
    except OSError as e:
        raise IndexFileError(f"cannot open sharded index manifest {path!r}: {e.strerror}") from None
    except ValueError:
        raise IndexFileError(f"{path!r} is not a sharded index manifest (invalid JSON)") from None
    if not isinstance(manifest, dict) or manifest.get("format") != _FORMAT:
        raise IndexFileError(f"{path!r} is not a turboann sharded index manifest")
    if manifest.get("version") != _VERSION:
        raise IndexFileError(f"{path!r} has manifest version {manifest.get('version')!r}; this turboann "
                             f"reads version {_VERSION}")
    files = manifest.get("files")
    if (manifest.get("kind") not in ("Index", "IVFIndex") or not isinstance(manifest.get("settings"), dict)
            or not isinstance(files, list) or len(files) != manifest.get("shards") or not files
            or manifest.get("routing") != "fibonacci64"
            or any(not isinstance(f, dict) or os.path.basename(str(f.get("name"))) != f.get("name")
                   for f in files)
            or sum(int(f.get("n", -1)) for f in files) != manifest.get("count")):
        raise IndexFileError(f"{path!r} is corrupt: shards, files and counts do not agree")
    return manifest


def merge_top_k(Ds: list, Is: list, k: int, ascending: bool, nq: int):
    """Exact top k of per-shard top k lists: Ds, Is lists of (nq, k) float32 / int64.

    Best first (ascending distances for l2, descending similarities
    otherwise), ties to the lower id; rows padded with id -1 and -inf / +inf
    as `Index.search` does. Returns D (nq, k) float32, I (nq, k) int64.
    """
    pad = np.inf if ascending else -np.inf
    if not Ds:
        return np.full((nq, k), pad, np.float32), np.full((nq, k), -1, np.int64)
    D = np.concatenate(Ds, axis=1)
    I = np.concatenate(Is, axis=1)
    key = D if ascending else -D
    # Padding (id -1) sorts after every real entry: its key is +inf, theirs finite.
    tie = np.where(I < 0, np.iinfo(np.int64).max, I)
    order = np.lexsort((tie, key), axis=-1)[:, :k]
    return np.take_along_axis(D, order, axis=1), np.take_along_axis(I, order, axis=1)
