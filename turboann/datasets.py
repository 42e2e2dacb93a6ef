"""Datasets: ann-benchmarks HDF5 files, the registry of standard files, fetching, and .fvecs/.ivecs/.bvecs.

An ann-benchmarks file holds ``train`` (n, d), ``test`` (nq, d), ``neighbors``
(nq, k) and ``distances`` (nq, k) (the exact k nearest train rows of each test
row, nearest first) and the attribute ``distance`` ("angular" or
"euclidean"). `load_ann_benchmarks` reads one after checking that layout;
`inspect` checks it without reading the vectors. `fetch` downloads a standard
file into the cache (``$TURBOANN_DATA`` or ``~/.cache/turboann``), resuming a
partial download; `convert` writes vectors from .fvecs/.bvecs/.npy files in
that layout, computing the exact ground truth when none is given.

Every problem with a file raises `DatasetError` (a ValueError) whose message
is one line naming the file and what is wrong.
"""
from __future__ import annotations

import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from . import _validate
from ._files import atomic_path, move_into_place
from .eval import _distance_name, metric_for_distance

__all__ = ["REGISTRY", "Dataset", "DatasetError", "RegistryEntry", "cache_dir", "convert", "embedded_path",
           "exact_ground_truth", "fetch", "inspect", "load_ann_benchmarks", "read_vecs",
           "write_ann_benchmarks"]

KEYS = ("train", "test", "neighbors", "distances")
GROUND_TRUTH_K = 100
EMBEDDED_NAME = "wordnet-minilm-384-angular-10k"
_EMBEDDED_DIR = Path(__file__).resolve().parents[1] / "datasets"
_DOWNLOAD_BLOCK = 1 << 20
# Ground-truth blocks: (queries x train rows) float64 scratch of at most ~64 MB.
_GT_QUERY_BLOCK = 256
_GT_TRAIN_BLOCK = 32_768


class DatasetError(ValueError):
    """A data file is missing, unreadable, or not in the expected layout; the message says which and why."""


# -- the registry of standard ann-benchmarks files ------------------------------------------

@dataclass(frozen=True)
class RegistryEntry:
    """A standard ann-benchmarks file: name, dim, distance, train and test rows, and its URL.

    `size_bytes` is computed from the shapes (float32 vectors, 100 neighbours
    as int32 ids and float32 distances), which is what the published files hold.
    """
    name: str
    dim: int
    distance: str
    n_train: int
    n_test: int

    @property
    def url(self) -> str:
        return f"https://ann-benchmarks.com/{self.name}.hdf5"

    @property
    def size_bytes(self) -> int:
        return 4 * (self.n_train * self.dim + self.n_test * self.dim + 2 * self.n_test * GROUND_TRUTH_K)


def _registry() -> dict[str, RegistryEntry]:
    entries = [
        RegistryEntry("fashion-mnist-784-euclidean", 784, "euclidean", 60_000, 10_000),
        RegistryEntry("glove-25-angular", 25, "angular", 1_183_514, 10_000),
        RegistryEntry("glove-100-angular", 100, "angular", 1_183_514, 10_000),
        RegistryEntry("glove-200-angular", 200, "angular", 1_183_514, 10_000),
        RegistryEntry("sift-128-euclidean", 128, "euclidean", 1_000_000, 10_000),
        RegistryEntry("gist-960-euclidean", 960, "euclidean", 1_000_000, 1_000),
        RegistryEntry("nytimes-256-angular", 256, "angular", 290_000, 10_000),
        RegistryEntry("deep-image-96-angular", 96, "angular", 9_990_000, 10_000),
    ]
    # ann-benchmarks makes these from the first n of 1M OpenAI embeddings, 10,000 held out as queries.
    entries += [RegistryEntry(f"dbpedia-openai-{n}k-angular", 1536, "angular", n * 1000 - 10_000, 10_000)
                for n in range(100, 1001, 100)]
    return {e.name: e for e in entries}


REGISTRY: dict[str, RegistryEntry] = _registry()


def cache_dir() -> Path:
    """Where `fetch` puts files: $TURBOANN_DATA, else ~/.cache/turboann."""
    env = os.environ.get("TURBOANN_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "turboann"


def embedded_path() -> Path:
    """The small real dataset committed under datasets/ of a source checkout (see datasets/README.md)."""
    path = _EMBEDDED_DIR / f"{EMBEDDED_NAME}.hdf5"
    if not path.is_file():
        raise DatasetError(f"the embedded dataset {path} is missing (it ships with a source checkout, not with "
                           f"an installed wheel); give a DATA file instead")
    return path


# -- reading ann-benchmarks files ---------------------------------------------------------------

@dataclass(frozen=True)
class Dataset:
    """An ann-benchmarks HDF5 file in memory.

    train (n, d) float32, test (nq, d) float32, neighbors (nq, k) int64,
    distances (nq, k) float64 (sorted true distances), distance "angular" |
    "euclidean", name the file's stem.
    """
    name: str
    train: np.ndarray
    test: np.ndarray
    neighbors: np.ndarray
    distances: np.ndarray
    distance: str

    @property
    def metric(self) -> str:
        """turboann metric for this file's distance."""
        return metric_for_distance(self.distance)


def _open_hdf5(path):
    import h5py

    path = os.fspath(path)
    if not os.path.exists(path):
        raise DatasetError(f"{path}: no such file")
    if os.path.isdir(path):
        raise DatasetError(f"{path}: is a directory, not an ann-benchmarks HDF5 file")
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise DatasetError(f"{path}: not an ann-benchmarks file (not readable as HDF5: {exc})") from None


def _check_layout(f, path) -> dict:
    """Check the ann-benchmarks layout of open file f; returns its shapes, dtypes and distance."""
    path = os.fspath(path)
    missing = [key for key in KEYS if key not in f]
    if missing:
        raise DatasetError(f"{path}: not an ann-benchmarks file: missing {', '.join(missing)}")
    shapes = {key: f[key].shape for key in KEYS}
    dtypes = {key: f[key].dtype for key in KEYS}
    for key in KEYS:
        if len(shapes[key]) != 2 or dtypes[key].kind not in "fiu":
            raise DatasetError(f"{path}: not an ann-benchmarks file: {key} must be a 2-D numeric array, "
                               f"got shape {shapes[key]} dtype {dtypes[key]}")
    (n, d), (nq, dq) = shapes["train"], shapes["test"]
    if dq != d:
        raise DatasetError(f"{path}: not an ann-benchmarks file: train has {d} columns but test has {dq}")
    if n == 0 or d == 0:
        raise DatasetError(f"{path}: not an ann-benchmarks file: train is empty (shape {shapes['train']})")
    if shapes["neighbors"] != shapes["distances"] or shapes["neighbors"][0] != nq:
        raise DatasetError(f"{path}: not an ann-benchmarks file: neighbors {shapes['neighbors']} and distances "
                           f"{shapes['distances']} must both have one row per test vector ({nq})")
    if dtypes["neighbors"].kind not in "iu":
        raise DatasetError(f"{path}: not an ann-benchmarks file: neighbors must be integers, got {dtypes['neighbors']}")
    distance = f.attrs.get("distance")
    if isinstance(distance, bytes):
        distance = distance.decode()
    if distance is None:
        raise DatasetError(f"{path}: not an ann-benchmarks file: no 'distance' attribute")
    try:
        distance = _distance_name(str(distance))
    except ValueError:
        raise DatasetError(f"{path}: distance {distance!r} is not supported (angular or euclidean)") from None
    return {"n": n, "dim": d, "queries": nq, "k": shapes["neighbors"][1], "distance": distance,
            "dtypes": {key: str(dt) for key, dt in dtypes.items()}}


def inspect(path) -> dict:
    """Check an ann-benchmarks file without reading its vectors.

    Returns {"path", "name", "n", "dim", "queries", "k", "distance", "metric",
    "dtypes", "bytes"}; raises DatasetError naming what is wrong.
    """
    with _open_hdf5(path) as f:
        info = _check_layout(f, path)
        _check_neighbors(path, f["neighbors"][:], info["n"])   # as load_ann_benchmarks does: build agrees
        attrs = {key: (v.decode() if isinstance(v, bytes) else v.item() if hasattr(v, "item") else v)
                 for key, v in f.attrs.items()}
    return {"path": os.fspath(path), "name": Path(path).stem, **info, "metric": metric_for_distance(info["distance"]),
            "bytes": os.path.getsize(path), "attrs": attrs}


def load_ann_benchmarks(path: str | os.PathLike, *, queries: int | None = None) -> Dataset:
    """Read an ann-benchmarks HDF5 file after checking its layout (see `inspect`).

    queries: keep only the first `queries` test rows (all when None).
    Raises DatasetError for a missing file or another layout.
    """
    nq_keep = None if queries is None else _validate.integer("queries", queries, low=1)
    with _open_hdf5(path) as f:
        info = _check_layout(f, path)
        nq = info["queries"] if nq_keep is None else min(nq_keep, info["queries"])
        data = Dataset(name=Path(path).stem,
                       train=np.ascontiguousarray(f["train"][:], dtype=np.float32),
                       test=np.ascontiguousarray(f["test"][:nq], dtype=np.float32),
                       neighbors=f["neighbors"][:nq].astype(np.int64),
                       distances=f["distances"][:nq].astype(np.float64),
                       distance=info["distance"])
    _check_neighbors(path, data.neighbors, info["n"])
    return data


def _check_neighbors(path, neighbors: np.ndarray, n: int) -> None:
    """Raise DatasetError unless every ground-truth id lies in [0, n)."""
    if neighbors.size and (neighbors.min() < 0 or neighbors.max() >= n):
        raise DatasetError(f"{os.fspath(path)}: corrupt ground truth: neighbors must lie in [0, {n}), "
                           f"got values in [{neighbors.min()}, {neighbors.max()}]")


# -- writing ---------------------------------------------------------------------------------------

def write_ann_benchmarks(path, train, test, neighbors, distances, distance: str, *,
                         compress: bool = False, attrs: dict | None = None) -> None:
    """Write an ann-benchmarks HDF5 file atomically (temp file, fsync, rename).

    train (n, d) and test (nq, d) are stored as float32, neighbors (nq, k) as
    int32, distances (nq, k) as float32; distance "angular" | "euclidean".
    compress: gzip with byte shuffling (read transparently by h5py). attrs:
    extra file attributes (e.g. provenance).
    """
    import h5py

    distance = _distance_name(distance)
    train = np.asarray(train, dtype=np.float32)
    test = np.asarray(test, dtype=np.float32)
    neighbors = np.asarray(neighbors)
    distances = np.asarray(distances)
    if train.ndim != 2 or test.ndim != 2 or test.shape[1] != train.shape[1]:
        raise ValueError(f"train and test must be 2-D with equal columns, got {train.shape} and {test.shape}")
    if neighbors.shape != distances.shape or neighbors.ndim != 2 or neighbors.shape[0] != test.shape[0]:
        raise ValueError(f"neighbors and distances must both be ({test.shape[0]}, k), "
                         f"got {neighbors.shape} and {distances.shape}")
    path = Path(path)
    options = {"compression": "gzip", "compression_opts": 4, "shuffle": True} if compress else {}
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs["distance"] = distance
            f.attrs["dimension"] = train.shape[1]
            f.attrs["point_type"] = "float"
            for key, value in (attrs or {}).items():
                f.attrs[key] = value
            f.create_dataset("train", data=train, **options)
            f.create_dataset("test", data=test, **options)
            f.create_dataset("neighbors", data=neighbors.astype(np.int32), **options)
            f.create_dataset("distances", data=distances.astype(np.float32), **options)


# -- exact ground truth ------------------------------------------------------------------------------

def exact_ground_truth(train, test, distance: str, k: int = GROUND_TRUTH_K) -> tuple[np.ndarray, np.ndarray]:
    """The exact k nearest train rows of each test row, by brute force in float64.

    train (n, d), test (nq, d) of any real dtype (memory-mapped arrays are read
    block by block); distance "angular" (1 - cos, a zero row counts as cos 0)
    or "euclidean" (not squared). Ties go to the lower train index, as in
    ann-benchmarks' own files. Returns neighbors int64 (nq, k) and distances
    float64 (nq, k), nearest first; k is capped at n.
    """
    kind = _distance_name(distance)
    n, nq = train.shape[0], test.shape[0]
    k = min(_validate.integer("k", k, low=1), n)
    q = np.asarray(test, dtype=np.float64)
    if kind == "angular":
        q = _unit_rows(q)
    q_sq = (q * q).sum(axis=1)
    best_d = np.full((nq, 0), np.inf)
    best_i = np.empty((nq, 0), np.int64)
    for start in range(0, n, _GT_TRAIN_BLOCK):
        x = np.asarray(train[start:start + _GT_TRAIN_BLOCK], dtype=np.float64)
        if kind == "angular":
            x = _unit_rows(x)
        x_sq = (x * x).sum(axis=1)
        ids = np.arange(start, start + x.shape[0])
        keep = min(k, best_d.shape[1] + x.shape[0])
        new_d, new_i = np.empty((nq, keep)), np.empty((nq, keep), np.int64)
        for qs in range(0, nq, _GT_QUERY_BLOCK):
            rows = slice(qs, qs + _GT_QUERY_BLOCK)
            dots = q[rows] @ x.T
            if kind == "angular":
                d = 1.0 - dots
            else:
                d = np.sqrt(np.maximum(q_sq[rows, None] - 2.0 * dots + x_sq[None, :], 0.0))
            new_d[rows], new_i[rows] = _smallest(np.concatenate([best_d[rows], d], axis=1),
                                                 np.concatenate([best_i[rows], np.broadcast_to(ids, d.shape)],
                                                                axis=1), keep)
        best_d, best_i = new_d, new_i
    return best_i, best_d


def _smallest(dist: np.ndarray, ids: np.ndarray, keep: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the `keep` smallest distances and their ids, sorted by (distance, id)."""
    if keep < dist.shape[1]:
        # Partition to the keep-th distance, widened so that ties with it all survive to the sort.
        kth = np.take_along_axis(dist, np.argpartition(dist, keep - 1, axis=1)[:, keep - 1:keep], axis=1)
        width = int((dist <= kth).sum(axis=1).max())
        if width < dist.shape[1]:
            part = np.argpartition(dist, width - 1, axis=1)[:, :width]
            dist, ids = np.take_along_axis(dist, part, axis=1), np.take_along_axis(ids, part, axis=1)
    order = np.lexsort((ids, dist), axis=1)[:, :keep]
    return np.take_along_axis(dist, order, axis=1), np.take_along_axis(ids, order, axis=1)


def _unit_rows(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


# -- .fvecs / .ivecs / .bvecs ----------------------------------------------------------------------------

_VECS_DTYPES = {".fvecs": np.float32, ".ivecs": np.int32, ".bvecs": np.uint8}


def read_vecs(path) -> np.ndarray:
    """Memory-map a TEXMEX .fvecs (float32), .ivecs (int32) or .bvecs (uint8) file.

    Each row is a little-endian int32 dimension d followed by d values. Every
    row's dimension is checked. Returns a read-only (n, d) view of the file
    (np.memmap); copy it to keep it after the file changes.
    """
    path = Path(path)
    dtype = _VECS_DTYPES.get(path.suffix.lower())
    if dtype is None:
        raise DatasetError(f"{path}: unknown vector file type {path.suffix!r} (expected .fvecs, .ivecs or .bvecs)")
    if not path.is_file():
        raise DatasetError(f"{path}: no such file")
    size = path.stat().st_size
    if size < 4:
        raise DatasetError(f"{path}: not a {path.suffix} file: {size} bytes, too short for a header")
    dim = int(np.fromfile(path, dtype="<i4", count=1)[0])
    itemsize = np.dtype(dtype).itemsize
    row_bytes = 4 + dim * itemsize
    if dim <= 0 or size % row_bytes:
        raise DatasetError(f"{path}: not a {path.suffix} file: first row has dimension {dim}, "
                           f"which does not divide the file size {size} into rows")
    n = size // row_bytes
    raw = np.memmap(path, dtype=np.uint8, mode="r", shape=(n, row_bytes))
    dims = raw[:, :4].copy().view("<i4")[:, 0]
    bad = np.flatnonzero(dims != dim)
    if bad.size:
        raise DatasetError(f"{path}: corrupt: row {int(bad[0])} has dimension {int(dims[bad[0]])}, row 0 has {dim}")
    return raw[:, 4:].view(np.dtype(dtype).newbyteorder("<"))


def _read_vectors(path) -> np.ndarray:
    """Vectors from .fvecs/.bvecs/.ivecs (memory-mapped) or .npy (memory-mapped), as an (n, d) array."""
    path = Path(path)
    if path.suffix.lower() == ".npy":
        if not path.is_file():
            raise DatasetError(f"{path}: no such file")
        try:
            arr = np.load(path, mmap_mode="r")
        except ValueError as exc:
            raise DatasetError(f"{path}: not a readable .npy file: {exc}") from None
        if arr.ndim != 2 or arr.dtype.kind not in "fiu":
            raise DatasetError(f"{path}: expected a 2-D numeric array, got shape {arr.shape} dtype {arr.dtype}")
        return arr
    return read_vecs(path)


def convert(train_path, test_path, out_path, distance: str, *, ground_truth=None, k: int = GROUND_TRUTH_K,
            on_progress: Callable[[str], None] | None = None) -> dict:
    """Write vectors from .fvecs/.bvecs/.npy files as an ann-benchmarks HDF5 file (atomically).

    ground_truth: an .ivecs (or .npy) file of true neighbour ids (nq, >= k),
    nearest first; their distances are computed exactly. Without it, the exact
    k nearest neighbours are computed by brute force (`exact_ground_truth`).
    Returns `inspect(out_path)`.
    """
    from .eval import true_distances

    distance = _distance_name(distance)
    train = _read_vectors(train_path)
    test = _read_vectors(test_path)
    if train.shape[1] != test.shape[1]:
        raise DatasetError(f"{test_path}: queries have {test.shape[1]} columns but the train vectors "
                           f"({train_path}) have {train.shape[1]}")
    say = on_progress or (lambda message: None)
    if ground_truth is None:
        say(f"computing exact ground truth: {test.shape[0]} queries x {train.shape[0]} vectors")
        neighbors, distances = exact_ground_truth(train, test, distance, k)
    else:
        neighbors = np.asarray(_read_vectors(ground_truth), dtype=np.int64)
        if neighbors.shape[0] != test.shape[0]:
            raise DatasetError(f"{ground_truth}: {neighbors.shape[0]} rows of ground truth for "
                               f"{test.shape[0]} queries")
        neighbors = neighbors[:, :k]
        if neighbors.min() < 0 or neighbors.max() >= train.shape[0]:
            raise DatasetError(f"{ground_truth}: neighbour ids must lie in [0, {train.shape[0]})")
        say("computing the distances of the given ground truth")
        distances = true_distances(train, test, neighbors, distance)
    write_ann_benchmarks(out_path, train, test, neighbors, distances, distance)
    return inspect(out_path)


# -- fetching ---------------------------------------------------------------------------------------

def fetch(name: str, *, url: str | None = None, dest_dir=None, timeout: float = 30.0,
          on_progress: Callable[[int, int | None], None] | None = None) -> Path:
    """Download the ann-benchmarks file `name` into `dest_dir` (default `cache_dir()`); returns its path.

    url: where to get it (default the registry's URL; needed for names not in
    REGISTRY). A complete file already there is checked and reused. A partial
    download (NAME.hdf5.part) is resumed with an HTTP Range request when the
    server allows it, else restarted; the result must have the size the server
    announced and pass `inspect` before it is renamed into place.
    on_progress(done_bytes, total_bytes_or_None) is called as data arrives.
    Raises DatasetError with a one-line reason (offline, HTTP error, bad file).
    """
    if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
        raise ValueError(f"name must be a dataset name such as 'glove-25-angular', got {name!r}")
    if url is None:
        if name not in REGISTRY:
            raise DatasetError(f"unknown dataset {name!r}: see `turboann datasets list`, or give its URL")
        url = REGISTRY[name].url
    directory = Path(dest_dir) if dest_dir is not None else cache_dir()
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatasetError(f"cannot create the download directory {directory}: {exc.strerror}") from None
    path = directory / f"{name}.hdf5"
    if path.is_file():
        inspect(path)
        return path
    part = path.with_name(path.name + ".part")
    _download(url, part, timeout, on_progress)
    try:
        inspect(part)
    except DatasetError as exc:
        part.unlink()
        raise DatasetError(f"{url}: the downloaded file is not an ann-benchmarks file "
                           f"({str(exc).split(': ', 1)[-1]})") from None
    move_into_place(part, path)
    return path


def _download(url: str, part: Path, timeout: float, on_progress) -> None:
    have = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "turboann"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # the partial file is already whole
            return
        raise DatasetError(f"cannot download {url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DatasetError(f"cannot download {url}: {reason} (offline? use a local file instead)") from None
    with response:
        resumed = have and response.status == 206
        if not resumed:
            have = 0
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None and length.isdigit() else None
        try:
            with open(part, "ab" if resumed else "wb") as out:
                done = have
                if on_progress:
                    on_progress(done, total)
                while True:
                    block = response.read(_DOWNLOAD_BLOCK)
                    if not block:
                        break
                    out.write(block)
                    done += len(block)
                    if on_progress:
                        on_progress(done, total)
        except OSError as exc:
            raise DatasetError(f"download of {url} interrupted after {done} bytes: {exc}; "
                               f"run fetch again to resume") from None
    if total is not None and done != total:
        raise DatasetError(f"download of {url} incomplete: {done} of {total} bytes; run fetch again to resume")
