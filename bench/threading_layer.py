"""Search speed under Numba's TBB threading layer (turboann's default) against GNU OpenMP.

Numba fixes its threading layer once a process, so each measurement is a
child process with NUMBA_THREADING_LAYER set; the children alternate
omp, tbb, omp, tbb, ... for --rounds rounds so that load changes on a
shared machine hit both alike, and each reports the median of --repeat
timings per case. Printed: per case, the median over rounds of each
layer's time and QPS, and per other layer the median over rounds of its
time over omp's in the same round (> 1: slower); the load average before
and after (OpenMP's spinning threads suffer most on a busy machine).
--layers omp,tbb,workqueue adds Numba's third layer.

Data: wordnet-minilm-384-angular (../shared/datasets), the first 10,000
and 100,000 rows, 1,000 of its queries. Cases at --threads (default 2):
flat Index (4-bit fast-scan, cosine) batch of 1,000 queries and single
queries (p50 of 200, the database split across threads), IVFIndex (nlist
1024 at 100k / 128 at 10k, nprobe 16, centroids from a seeded sample)
batch of 1,000.

    PYTHONPATH=. python bench/threading_layer.py [--rounds 5] [--repeat 5] [--sizes 10000,100000]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import _common
import h5py
import numpy as np

DATA = _common.DATASETS / "wordnet-minilm-384-angular.hdf5"


def _median_time(fn, repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def worker(sizes: list[int], repeat: int, threads: int) -> dict:
    import turboann as ta
    from turboann._threading import threading_layer
    with h5py.File(DATA) as f:
        train = np.asarray(f["train"][:max(sizes)], np.float32)
        q = np.asarray(f["test"][:1000], np.float32)
    rng = np.random.default_rng(0)
    out = {}
    for n in sizes:
        x = train[:n]
        flat = ta.Index(x.shape[1], bits=4, metric="cosine")
        flat.add(x)
        nlist = 1024 if n >= 100_000 else 128
        ivf = ta.IVFIndex(x.shape[1], nlist=nlist, bits=4, metric="cosine")
        ivf.set_centroids(x[rng.choice(n, nlist, replace=False)])
        ivf.add(x)
        out[f"flat batch n={n}"] = _median_time(lambda: flat.search(q, 10, threads=threads), repeat)
        singles = [_median_time(lambda: flat.search(q[i:i + 1], 10, threads=threads), 1) for i in range(200)]
        out[f"flat nq=1 p50 n={n}"] = statistics.median(singles)
        out[f"ivf batch n={n}"] = _median_time(lambda: ivf.search(q, 10, nprobe=16, threads=threads), repeat)
    return {"layer": threading_layer(), "times": out}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--layers", default="omp,tbb", help="omp first: the others are compared with it")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    sizes = _common.csv_list(args.sizes, int)
    layers = tuple(_common.csv_list(args.layers))
    if args.worker:
        print(json.dumps(worker(sizes, args.repeat, args.threads)))
        return
    load_before = os.getloadavg()
    runs = {layer: [] for layer in layers}
    for r in range(args.rounds):
        for layer in (layers if r % 2 == 0 else layers[::-1]):
            cmd = [sys.executable, __file__, "--worker", "--repeat", str(args.repeat), "--threads",
                   str(args.threads), "--sizes", args.sizes]
            done = subprocess.run(cmd, env=dict(os.environ, NUMBA_THREADING_LAYER=layer),
                                  capture_output=True, text=True, check=True)
            res = json.loads(done.stdout.strip().splitlines()[-1])
            assert res["layer"] == layer, res
            runs[layer].append(res["times"])
    print(f"load average before {load_before[0]:.2f}, after {os.getloadavg()[0]:.2f}; {args.threads} threads, "
          f"{args.rounds} rounds x median of {args.repeat}")
    print(f"{'case':<22}" + "".join(f" {layer + ' ms':>12} {layer + ' QPS':>13}" for layer in layers)
          + "".join(f" {layer + '/omp':>13}" for layer in layers[1:]))
    for case in runs["omp"][0]:
        med = {layer: statistics.median(t[case] for t in runs[layer]) for layer in layers}
        nq = 1 if "nq=1" in case else 1000
        ratios = [statistics.median(t[case] / o[case] for t, o in zip(runs[layer], runs["omp"]))
                  for layer in layers[1:]]
        print(f"{case:<22}" + "".join(f" {med[layer] * 1e3:>12.3f} {nq / med[layer]:>13,.0f}" for layer in layers)
              + "".join(f" {r:>13.3f}" for r in ratios))


if __name__ == "__main__":
    main()
