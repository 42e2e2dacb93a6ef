"""What the readers-writer lock costs a single-threaded search.

Every public call of an index holds its lock (turboann._rwlock). This
times `search` with the lock ("locked") against the same method without it
(`Index.search.__wrapped__`, the undecorated function: the code path is
otherwise identical), one Numba thread, the two interleaved call by call so
that load changes on a shared machine hit both alike. Data: the embedded
wordnet subset (10,000 x 384, angular), queries from its test rows; a flat
Index (4-bit fast-scan, and with rerank=50) and an IVFIndex (nlist 64,
nprobe 8, centroids from a seeded sample of rows). Also the bare cost of
one read acquire + release.

    PYTHONPATH=. python bench/lock_overhead.py [--reps-one 3000] [--reps-batch 41]
"""
from __future__ import annotations

import argparse
import statistics
import time

import _common  # noqa: F401  (puts this checkout first on sys.path)
import h5py
import numpy as np

import turboann as ta
from turboann._rwlock import RWLock

DATA = _common.REPO / "datasets" / "wordnet-minilm-384-angular-10k.hdf5"


def _time(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def measure(name: str, index, q: np.ndarray, reps: int, **kwargs) -> dict:
    bare = type(index).search.__wrapped__
    calls = {"locked": lambda: index.search(q, 10, **kwargs), "bare": lambda: bare(index, q, 10, **kwargs)}
    for fn in calls.values():
        fn()
    times = {v: [] for v in calls}
    for r in range(reps):
        order = list(calls) if r % 2 == 0 else list(calls)[::-1]
        for v in order:
            times[v].append(_time(calls[v]))
    med = {v: statistics.median(t) for v, t in times.items()}
    ratio = statistics.median(a / b for a, b in zip(times["locked"], times["bare"]))
    row = {"case": name, "nq": q.shape[0], "reps": reps, "locked_us": med["locked"] * 1e6,
           "bare_us": med["bare"] * 1e6, "overhead_pct": 100 * (med["locked"] / med["bare"] - 1),
           "paired_pct": 100 * (ratio - 1)}
    print(f"{name:<22} nq={row['nq']:<5} locked {row['locked_us']:>10.1f} us  bare {row['bare_us']:>10.1f} us  "
          f"overhead {row['overhead_pct']:+.2f} % (median of paired ratios {row['paired_pct']:+.2f} %)", flush=True)
    return row


def lock_cost(n: int = 200_000) -> float:
    lock = RWLock()
    t = time.perf_counter()
    for _ in range(n):
        lock.acquire_read()
        lock.release_read()
    return (time.perf_counter() - t) / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps-one", type=int, default=3000, help="repetitions of nq=1 searches")
    ap.add_argument("--reps-batch", type=int, default=41, help="repetitions of nq=1000 searches")
    args = ap.parse_args()
    with h5py.File(DATA) as f:
        x, test = np.asarray(f["train"], np.float32), np.asarray(f["test"], np.float32)
    rng = np.random.default_rng(0)
    queries = np.concatenate([test, x[rng.choice(len(x), 1000 - len(test), replace=False)]])
    ta.set_num_threads(1)
    flat = ta.Index(x.shape[1], bits=4, metric="cosine", keep_vectors=True)
    flat.add(x)
    ivf = ta.IVFIndex(x.shape[1], nlist=64, bits=4, metric="cosine")
    ivf.set_centroids(x[rng.choice(len(x), 64, replace=False)])
    ivf.add(x)
    print(f"one read acquire + release: {lock_cost():.2f} us")
    for nq, reps in ((1, args.reps_one), (1000, args.reps_batch)):
        q = queries[:nq]
        measure("Index", flat, q, reps)
        measure("Index rerank=50", flat, q, reps, rerank=50)
        measure("IVFIndex nprobe=8", ivf, q, reps, nprobe=8)


if __name__ == "__main__":
    main()
