"""ann-benchmarks HDF5 files: reading and checking them.

Layout: datasets `train` (n, d), `test` (nq, d), `neighbors` (nq, K) int,
`distances` (nq, K) float, and the attribute `distance` ("angular" |
"euclidean" | "dot"). Every check raises `DatasetError` naming the file and
what is wrong, so the CLI can print one line.
"""
from __future__ import annotations

import os
from typing import NamedTuple

import numpy as np

# ann-benchmarks distance -> turboann metric
METRIC_OF_DISTANCE = {"angular": "cosine", "euclidean": "l2", "dot": "ip", "ip": "ip"}


class DatasetError(ValueError):
    """The file is missing, unreadable, or not in the ann-benchmarks layout."""


class Dataset(NamedTuple):
    """An ann-benchmarks data set, float32 vectors, ground truth as stored."""
    name: str
    train: np.ndarray        # (n, d) float32
    test: np.ndarray         # (nq, d) float32
    neighbors: np.ndarray    # (nq, K) int64
    distances: np.ndarray    # (nq, K) float32
    distance: str            # "angular" | "euclidean" | "dot"

    @property
    def metric(self) -> str:
        return METRIC_OF_DISTANCE[self.distance]


def load_hdf5(path, *, queries: int | None = None) -> Dataset:
    """Read an ann-benchmarks HDF5 file; `queries` keeps only the first that many."""
    import h5py
    path = os.fspath(path)
    if not os.path.exists(path):
        raise DatasetError(f"{path}: no such file")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise DatasetError(f"{path}: not an HDF5 file ({e})") from None
    with f:
        missing = [k for k in ("train", "test", "neighbors", "distances") if k not in f]
        if missing:
            raise DatasetError(f"{path}: not an ann-benchmarks file (missing {', '.join(missing)})")
        distance = f.attrs.get("distance", None)
        if isinstance(distance, bytes):
            distance = distance.decode()
        if distance not in METRIC_OF_DISTANCE:
            raise DatasetError(f"{path}: attribute 'distance' must be one of "
                               f"{sorted(METRIC_OF_DISTANCE)}, got {distance!r}")
        sl = slice(None) if queries is None else slice(0, queries)
        train = np.asarray(f["train"], dtype=np.float32)
        test = np.asarray(f["test"][sl], dtype=np.float32)
        neighbors = np.asarray(f["neighbors"][sl], dtype=np.int64)
        distances = np.asarray(f["distances"][sl], dtype=np.float32)
    if train.ndim != 2 or test.ndim != 2 or train.shape[1] != test.shape[1]:
        raise DatasetError(f"{path}: train {train.shape} and test {test.shape} must be 2-D with equal dims")
    if neighbors.shape[0] != test.shape[0] or distances.shape != neighbors.shape:
        raise DatasetError(f"{path}: neighbors {neighbors.shape} / distances {distances.shape} "
                           f"do not match test {test.shape}")
    name = os.path.splitext(os.path.basename(path))[0]
    return Dataset(name, train, test, neighbors, distances, str(distance))
