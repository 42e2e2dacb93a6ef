"""Filtered search QPS: turboann `search(q, k, filter=ids)` against its unfiltered search and turbovec's
allow-list search (`IdMapIndex.search(q, k, allowlist=ids)`), and the mapped-file line (`--mmap`).

On one ann-benchmarks file (default wordnet-minilm-384-angular, cosine),
turboann Index(bits) (fast-scan at 1, 2, 4 bits) and turbovec
IdMapIndex(dim, bits) are built once in this process on the same unit
vectors, ids 0..n-1. For each share of allowed ids (--shares, default
0.1 %, 1 %, 10 %, 50 %) and each kind of allow-list:

  random     ids drawn uniformly (a tag spread over the data)
  clustered  runs of 1,024 consecutive ids at random offsets (a tenant or a
             date range added together)

every method searches the same query batch (k = 10), the timings
interleaved round-robin (turboann unfiltered, turboann filtered, turbovec
unfiltered, turbovec filtered; --repeat rounds) so that load changes on a
shared machine hit them alike; QPS is from the median, and each ratio is
the median of the per-round ratios. "recall" is the overlap of the top 10
with the exact float32 top 10 among the allowed ids. "path" says how
turboann served the filter (blocks scanned, or allowed slots scored
directly, or the integer engine over the blocks, which serves batches
from 64 queries at 4 bits). The filter's id -> slot mapping is inside the
timed call, as it is for the user.

turbovec's rayon pool takes RAYON_NUM_THREADS once per process, so this
process runs every method at one thread and a child process (same data,
same build) runs them all at --mt-threads; OMP_WAIT_POLICY=passive as in
bench/fastscan.py.

--mmap: the mapped-file line instead: wordnet tiled with seeded noise to a
file of about --mmap-gb GB, then in fresh processes (alternating, --repeat
each) `ta.load(path)` and `ta.load(path, mmap=True)`: open seconds and RSS
growth after open, after a 100-query search filtered to the first 1 % of
ids (clustered: 1 % of the blocks), and after an unfiltered 100-query
search (which reads every code). Each process first builds and searches a
small index, so that Numba's one-time start is not counted as opening. The
page cache is warm (the file was just written or read), so open times are
not disk times.

    python bench/filter.py [--data PATH] [--bits 4] [--queries 200] [--repeat 5] [--mt-threads 2]
    python bench/filter.py --mmap [--mmap-gb 1.0]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "passive")   # before any OpenMP runtime loads (see above)
sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

import numpy as np  # noqa: E402

from turboann import datasets, eval as ev  # noqa: E402

DEFAULT_DATA = _common.DATASETS / "wordnet-minilm-384-angular.hdf5"
K = 10
RUN = 1024   # ids per run of a clustered allow-list
METHODS = ("ta", "ta_filter", "tv", "tv_filter")


def allow_lists(n: int, share: float, seed: int) -> dict[str, np.ndarray]:
    """{"random": ids, "clustered": ids}: round(share * n) ids (at least one) of 0..n-1, sorted."""
    m = max(1, round(share * n))
    rng = np.random.default_rng(seed)
    spread = np.sort(rng.choice(n, m, replace=False))
    runs = -(-m // RUN)
    starts = np.sort(rng.choice(n // RUN, runs, replace=False)) * RUN
    clustered = np.concatenate([np.arange(s, min(n, s + RUN)) for s in starts])[:m]
    return {"random": spread, "clustered": np.sort(clustered)}


def build(x: np.ndarray, bits: int, seed: int):
    """(turboann Index, turbovec IdMapIndex) holding the unit rows x with ids 0..n-1."""
    import turboann as ta
    import turbovec

    index = ta.Index(x.shape[1], bits=bits, metric="cosine", seed=seed)
    index.add(x)
    tv = turbovec.IdMapIndex(x.shape[1], bits)
    tv.add_with_ids(x, np.arange(x.shape[0], dtype=np.uint64))
    tv.prepare()   # its docs: warms the search caches and the id -> slot map of allow-list searches
    return index, tv


def filtered_recall(x: np.ndarray, q: np.ndarray, allowed: np.ndarray, found: np.ndarray) -> float:
    """Mean overlap of found (nq, K) ids with the exact float32 top K among the allowed ids."""
    scores = q @ x[allowed].T
    top = allowed[np.argsort(-scores, axis=1, kind="stable")[:, :K]]
    return float(np.mean([len(set(f.tolist()) & set(t.tolist())) / min(K, len(allowed))
                          for f, t in zip(found, top)]))


def measure(x: np.ndarray, q: np.ndarray, args, threads: int) -> list[dict]:
    """One row per (share, kind) at `threads`: QPS of every method and the ratios."""
    index, tv = build(x, args.bits, args.seed)
    n = x.shape[0]
    nq = q.shape[0]
    search = {"ta": lambda f: index.search(q, K, threads=threads),
              "ta_filter": lambda f: index.search(q, K, threads=threads, filter=f),
              "tv": lambda f: tv.search(q, K, chunk_size=0),
              "tv_filter": lambda f: tv.search(q, K, allowlist=f.astype(np.uint64), chunk_size=0)}
    rows = []
    for share in args.shares:
        for kind, allowed in allow_lists(n, share, args.seed).items():
            jobs = [lambda m=m: search[m](allowed) for m in METHODS]
            for job in jobs:   # warm: compile, caches, turbovec's lazy maps
                job()
            times = _common.round_robin(jobs, args.repeat)
            row = {"threads": threads, "share": share, "kind": kind, "allowed": int(allowed.size),
                   "path": _path(index, allowed, nq)}
            for m, t in zip(METHODS, times):
                row[m] = nq / _common.median(t)
                row[m + "_times"] = t
            rounds = list(zip(*times))
            row["x_unfiltered"] = _common.median([r[0] / r[1] for r in rounds])   # ta time / ta_filter time
            row["x_tv"] = _common.median([r[3] / r[1] for r in rounds])          # tv_filter time / ta_filter time
            row["recall_ta"] = filtered_recall(x, q, allowed, search["ta_filter"](allowed)[1])
            row["recall_tv"] = filtered_recall(x, q, allowed, search["tv_filter"](allowed)[1].astype(np.int64))
            rows.append(row)
            print(f"  {threads} thr {100 * share:g}% {kind:<9} ({row['path']}): turboann {row['ta_filter']:,.0f} "
                  f"QPS filtered / {row['ta']:,.0f} unfiltered (x{row['x_unfiltered']:.2f}); turbovec "
                  f"{row['tv_filter']:,.0f} / {row['tv']:,.0f} (turboann x{row['x_tv']:.2f})", flush=True)
    return rows


def _path(index, allowed: np.ndarray, nq: int) -> str:
    """How turboann serves this filtered batch: "direct" (allowed slots scored one by one), "dot" (the
    integer engine over the fast-scan blocks, for large batches) or "scan" (the fast-scan kernel)."""
    from turboann import index as index_module

    batch = index._dot_book is not None and nq >= index_module._DOT_BATCH.get(index.bits, np.inf)
    if index_module._score_directly(allowed, K, index_module._DIRECT_PER_RESULT_DOT if batch else None):
        return "direct"
    return "dot" if batch else "scan"


def load_unit(args):
    ds = datasets.load_ann_benchmarks(args.data, queries=args.queries)
    x = ds.train / np.linalg.norm(ds.train, axis=1, keepdims=True)
    q = ds.test / np.linalg.norm(ds.test, axis=1, keepdims=True)
    return ds.name, np.ascontiguousarray(x, np.float32), np.ascontiguousarray(q, np.float32)


COLUMNS = [("threads", "thr", 3, "d"), ("pct", "allowed %", 9, "g"), ("kind", "list", 9, "s"),
           ("path", "path", 6, "s"), ("ta_filter", "ta filt QPS", 11, ",.0f"), ("ta", "ta QPS", 8, ",.0f"),
           ("x_unfiltered", "x unfilt", 8, ".2f"), ("tv_filter", "tv allow QPS", 12, ",.0f"),
           ("tv", "tv QPS", 8, ",.0f"), ("x_tv", "x tv", 6, ".2f"), ("recall_ta", "ta rec", 6, ".3f"),
           ("recall_tv", "tv rec", 6, ".3f")]


# -- the mapped-file line ------------------------------------------------------------------

_OPEN_CHILD = """
import json, os, resource, sys, time
import numpy as np
import turboann as ta
def rss():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmRSS"))
q = np.load(sys.argv[2])
warm = ta.Index(q.shape[1], bits=int(sys.argv[4]), metric="cosine")   # Numba's first kernel loads: once a process
warm.add(q[:300])
warm.search(q[:2], 10, threads=1, filter=[1, 2])
base = rss()
t0 = time.perf_counter()
index = ta.load(sys.argv[1], mmap=sys.argv[3] == "mmap")
opened = time.perf_counter() - t0
after_open = rss()
t0 = time.perf_counter()
index.search(q[:100], 10, threads=1, filter=np.arange(len(index) // 100))   # 1 %, clustered
filtered_s = time.perf_counter() - t0
after_filtered = rss()
t0 = time.perf_counter()
index.search(q[:100], 10, threads=1)
print(json.dumps({"open_s": opened, "rss_open": after_open - base, "filtered_s": filtered_s,
                  "rss_filtered": after_filtered - base, "search_s": time.perf_counter() - t0,
                  "rss_search": rss() - base, "n": len(index)}))
"""


def mmap_line(args) -> dict:
    """Open time and RSS of a file of about --mmap-gb GB, normal load against mmap, in fresh processes."""
    import turboann as ta

    name, x, q = load_unit(args)
    per_vector = ta.Index(x.shape[1], bits=args.bits).code_bytes + 8
    n = int(args.mmap_gb * 1e9 / per_vector)
    path = Path(args.mmap_dir) / f"filter_mmap_{n}.tann"
    if not path.exists():
        print(f"building {n:,} vectors ({name} tiled with 1 % seeded noise) into {path}", flush=True)
        index = ta.Index(x.shape[1], bits=args.bits, metric="cosine", seed=args.seed)
        rng = np.random.default_rng(args.seed)
        for lo in range(0, n, 100_000):
            rows = x[rng.integers(0, x.shape[0], min(100_000, n - lo))]
            index.add(rows + 0.01 * rng.standard_normal(rows.shape).astype(np.float32))
        index.save(path)
        del index
    qpath = Path(args.mmap_dir) / "filter_mmap_q.npy"
    np.save(qpath, np.tile(q, (-(-1000 // q.shape[0]), 1))[:1000])
    env = dict(os.environ, PYTHONPATH=str(_common.REPO))
    runs = {"load": [], "mmap": []}
    for _ in range(args.repeat):
        for mode in runs:
            subprocess.run(["sync"], check=False)
            done = subprocess.run([sys.executable, "-c", _OPEN_CHILD, str(path), str(qpath), mode, str(args.bits)],
                                  env=env,
                                  capture_output=True, text=True, check=True)
            runs[mode].append(json.loads(done.stdout.strip().splitlines()[-1]))
    size = path.stat().st_size
    out = {"file": str(path), "bytes": size, "n": n, "runs": runs}
    print(f"{name} tiled to {n:,} vectors, {args.bits} bits: file {size / 1e9:.2f} GB (page cache warm; "
          f"medians of {args.repeat} fresh processes each)")
    keys = ("open_s", "rss_open", "filtered_s", "rss_filtered", "search_s", "rss_search")
    print(f"{'mode':<6} {'open s':>8} {'RSS open MB':>12} {'1% search s':>12} {'RSS then MB':>12} "
          f"{'full search s':>14} {'RSS then MB':>12}")
    for mode, rs in runs.items():
        med = {key: _common.median([r[key] for r in rs]) for key in keys}
        out[mode] = med
        print(f"{mode:<6} {med['open_s']:>8.4f} {med['rss_open'] / 1e6:>12.1f} {med['filtered_s']:>12.3f} "
              f"{med['rss_filtered'] / 1e6:>12.1f} {med['search_s']:>14.3f} {med['rss_search'] / 1e6:>12.1f}")
    return out


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="ann-benchmarks HDF5 file")
    p.add_argument("--bits", type=int, default=4, help="bits of both indexes (turbovec: 2-4)")
    p.add_argument("--shares", default="0.001,0.01,0.1,0.5", help="comma-separated shares of allowed ids")
    p.add_argument("--queries", type=int, default=200, help="first N test queries, one batch")
    p.add_argument("--repeat", type=int, default=5, help="timed rounds (and mmap processes per mode)")
    p.add_argument("--mt-threads", type=int, default=2, help="threads of the all-thread rows (0: skip them)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mmap", action="store_true", help="measure the mapped-file line instead")
    p.add_argument("--mmap-gb", type=float, default=1.0, help="size of the mapped file, GB")
    p.add_argument("--mmap-dir", default="/tmp", help="where the mapped file is built (kept for reruns)")
    p.add_argument("--out", type=Path, default=None, help="JSON path (default bench/results/filter[_mmap].json)")
    p.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.shares = _common.csv_list(args.shares, float)
    if args.repeat < 1 or args.mt_threads < 0:
        p.error("--repeat must be >= 1 and --mt-threads >= 0")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.worker:   # the all-thread rows, in a process whose rayon pool has that many threads
        ev.set_num_threads(args.worker)
        _, x, q = load_unit(args)
        print(json.dumps(measure(x, q, args, args.worker)))
        return
    ev.set_num_threads(1)   # before any turbovec call: its pool keeps this count
    report = {"settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
              "machine": _common.machine_info(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    m = report["machine"]
    print(f"{m['cpu_model']}, {m['cores']} cores, SIMD {m['simd']}; turboann kernels {m['kernels']}; "
          f"load average {m['load_average'][0]:.2f}", flush=True)
    if args.mmap:
        out_path = args.out or _common.REPO / "bench" / "results" / "filter_mmap.json"
        report["mmap"] = mmap_line(args)
        _common.finish_report(report, out_path)
        print(f"wrote {out_path}")
        return
    out_path = args.out or _common.REPO / "bench" / "results" / "filter.json"
    name, x, q = load_unit(args)
    print(f"{name}: n={x.shape[0]:,} d={x.shape[1]} queries={q.shape[0]} (one batch), k={K}, {args.bits} bits; "
          f"repeat {args.repeat}; threads 1 / {args.mt_threads}", flush=True)
    rows = measure(x, q, args, 1)
    if args.mt_threads:
        argv = ["--data", str(args.data), "--bits", str(args.bits), "--shares", ",".join(map(str, args.shares)),
                "--queries", str(args.queries), "--repeat", str(args.repeat), "--seed", str(args.seed)]
        cmd = [sys.executable, __file__, "--worker", str(args.mt_threads), *argv]
        done = subprocess.run(cmd, env=dict(os.environ, RAYON_NUM_THREADS=str(args.mt_threads)),
                              capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"all-thread child failed:\n{done.stderr[-2000:]}")
        print(done.stdout.strip().rsplit("\n", 1)[0], flush=True)
        rows += json.loads(done.stdout.strip().splitlines()[-1])
    report["results"] = rows
    _common.finish_report(report, out_path)
    for row in rows:
        row["pct"] = 100 * row["share"]
    print()
    print(_common.table(rows, COLUMNS))
    print(f"x unfilt: turboann filtered QPS over its unfiltered QPS; x tv: over turbovec's allow-list QPS "
          f"(medians of per-round ratios); rec: overlap with the exact top {K} among the allowed ids; load "
          f"average at end {report['load_average_end'][0]:.2f}; wrote {out_path}")


if __name__ == "__main__":
    main()
