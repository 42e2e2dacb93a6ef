"""Cost against n: in-process Index / IVFIndex against ShardedIndex (Ray) on 1 and 2 shards.

For each n (default 10^4, 10^5, 10^6): the wordnet vectors, tiled beyond their
116,659 rows with copies plus small seeded noise, and the same --queries
queries for every method, all in this one process and one local Ray instance:

  Index, Sharded 1, Sharded 2               flat, 4 bits (fast-scan), cosine
  IVFIndex, Sharded IVF 1, Sharded IVF 2    nlist = 2^round(log2(4 sqrt n)), residual codes

Every flat method gets the same centre (as Index(center="auto") takes it from
one add of the n rows) and every IVF method the same coarse centroids (Faiss
k-means on --train-per-list * nlist sampled rows, --niter iterations; cached
in bench/results/): the three flat rows and the three IVF rows return the same
results, so their recalls agree and only the costs differ.

  start s  building an empty index and loading its kernels in every process
           (for ShardedIndex: starting the actors), by adding 256 rows and
           searching once, then removing them; not part of "add s"
  add s    adding the n rows (ids 0..n-1) to such an index: median of --repeat
           fresh indexes, fewer once the adds took --add-budget seconds
  nprobe   IVF: the smallest of --nprobes whose recall reaches --target
           (swept on IVFIndex; the sharded rows use the same)
  QPS      the --queries queries in one batch, k = 10, median of --repeat;
           "1t" with threads=1 (per shard: 2 shards use 2 cores), "all" with
           Numba's default pool (all cores, in every shard)
  recall   10@10 by the ann-benchmarks rule (true distance within 1e-3 of the
           10th true distance; near-copies tie) against brute-force cosine over
           the n rows; "set" the plain overlap with the true top 10
  B/vec    Index.nbytes / n: codes, factors, ids, centre or centroids (every
           shard holds its own copy of the centroids)
  load     the 1-minute load average when the row finished (a shared machine)

NumPy's BLAS runs one thread everywhere (see BLAS_THREADS); adds use Numba's
whole pool.

Prints a table, writes JSON (--out) and a PNG of add s, QPS and bytes per vector
against n (--plot), both atomically.

    nice -n 19 python bench/scale.py [--n 10000,100000,1000000] [--queries 200] [--repeat 3]
        [--methods Index,Sharded 1,...] [--out PATH] [--plot PATH]
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

# NumPy's BLAS (the IVF probe's q . C^T, the assignment of added rows) at one thread, in this
# process and in every shard actor (Ray gives its workers one anyway): threads beyond the
# cores Numba already keeps busy only contend (measured: IVFIndex 1,568 -> 2,661 QPS at 10^5).
BLAS_THREADS = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
if __name__ == "__main__":
    os.environ.update(BLAS_THREADS)   # read once, when NumPy is first imported

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

import numpy as np  # noqa: E402

import turboann as ta  # noqa: E402
from turboann import datasets, eval as ev  # noqa: E402
from turboann.index import estimate_centre  # noqa: E402

WORDNET = _common.DATASETS / "wordnet-minilm-384-angular.hdf5"
RESULTS = _common.REPO / "bench" / "results"
K = 10
WARM_ROWS = 256
FLAT = ("Index", "Sharded 1", "Sharded 2")
IVF = ("IVFIndex", "Sharded IVF 1", "Sharded IVF 2")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(WORDNET))
    p.add_argument("--n", default="10000,100000,1000000")
    p.add_argument("--bits", type=int, default=4)
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--add-budget", type=float, default=60.0, help="seconds of adds after which to stop repeating")
    p.add_argument("--methods", default=",".join(FLAT + IVF))
    p.add_argument("--nprobes", default="1,2,3,4,6,8,12,16,24,32,48,64,96,128,192,256")
    p.add_argument("--target", type=float, default=0.9)
    p.add_argument("--train-per-list", type=int, default=40, help="k-means sample: rows per list")
    p.add_argument("--niter", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(RESULTS / "scale.json"))
    p.add_argument("--plot", default=str(RESULTS / "scale.png"))
    return p.parse_args(argv)


# -- data ---------------------------------------------------------------------------------------------

def tiled(train: np.ndarray, n: int, seed: int = 0, noise: float = 0.01) -> np.ndarray:
    """n rows: the real rows first, then copies of them plus small seeded Gaussian noise."""
    if n <= train.shape[0]:
        return train[:n]
    rng = np.random.default_rng(seed)
    extra = train[rng.integers(0, train.shape[0], n - train.shape[0])]
    scale = noise * float(np.linalg.norm(train[:1000], axis=1).mean()) / np.sqrt(train.shape[1])
    return np.concatenate([train, extra + scale * rng.standard_normal(extra.shape).astype(np.float32)])


def nlist_for(n: int) -> int:
    """4 sqrt(n) lists, rounded to the nearest power of two (10^4: 512, 10^5: 1024, 10^6: 4096)."""
    return 2 ** round(math.log2(4 * math.sqrt(n)))


def coarse_centroids(x: np.ndarray, nlist: int, args, name: str) -> tuple[np.ndarray, float | None]:
    """Cosine k-means centroids from --train-per-list * nlist sampled rows; cached. (centroids, seconds)."""
    cache = RESULTS / f"scale-centroids-{name}-{len(x)}-{nlist}-{args.train_per_list}-{args.niter}-{args.seed}.npy"
    if cache.exists():
        return np.load(cache), None
    rng = np.random.default_rng(args.seed)
    sample = x[np.sort(rng.choice(len(x), min(len(x), args.train_per_list * nlist), replace=False))]
    index = ta.IVFIndex(x.shape[1], nlist=nlist, metric="cosine", seed=args.seed)
    t0 = time.perf_counter()
    index.train(sample, niter=args.niter, threads=os.cpu_count() or 1)
    seconds = time.perf_counter() - t0
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.save(cache, index.centroids)
    return index.centroids, seconds


def recalls(x, q, gt, I) -> tuple[float, float]:
    """(ann-benchmarks recall 10@10, plain set recall) of the ids I (nq, K); gt = (ids, distances)."""
    return (ev.mean_knn_recall(gt[1], ev.true_distances(x, q, I, "angular"), K),
            ev.intersection_recall(I, gt[0], K))


# -- indexes ------------------------------------------------------------------------------------------

def makers(dim: int, bits: int, centre: np.ndarray, centroids: np.ndarray, names) -> dict:
    """name -> a function building an empty index of that method."""
    from turboann.distributed import ShardedIndex

    def sharded_ivf(shards):
        sh = ShardedIndex(dim, shards=shards, bits=bits, metric="cosine", seed=0, ivf={"nlist": len(centroids)})
        sh.set_centroids(centroids)
        return sh

    def ivf():
        index = ta.IVFIndex(dim, nlist=len(centroids), bits=bits, metric="cosine", seed=0)
        index.set_centroids(centroids)
        return index

    every = {
        "Index": lambda: ta.Index(dim, bits=bits, metric="cosine", seed=0, center=centre),
        "Sharded 1": lambda: ShardedIndex(dim, shards=1, bits=bits, metric="cosine", seed=0, center=centre),
        "Sharded 2": lambda: ShardedIndex(dim, shards=2, bits=bits, metric="cosine", seed=0, center=centre),
        "IVFIndex": ivf, "Sharded IVF 1": lambda: sharded_ivf(1), "Sharded IVF 2": lambda: sharded_ivf(2),
    }
    return {name: every[name] for name in names}


def warmed(make, x: np.ndarray, q: np.ndarray):
    """(index, seconds): a new empty index whose every process has loaded its kernels.

    WARM_ROWS rows go in under ids n.. (reaching every shard), one search, out
    again; with the centre or centroids given, that changes nothing else.
    """
    t0 = time.perf_counter()
    index = make()
    ids = np.arange(len(x), len(x) + WARM_ROWS)
    index.add(x[:WARM_ROWS], ids)
    index.search(q[:2], K, **({"nprobe": 1} if _is_ivf(index) else {}))
    index.remove(ids)
    return index, time.perf_counter() - t0


def _is_ivf(index) -> bool:
    return isinstance(index, ta.IVFIndex) or getattr(index, "_kind", None) == "IVFIndex"


def _close(index) -> None:
    if hasattr(index, "close"):
        index.close()


def build(make, x, q, repeat: int, budget: float):
    """(index holding x, median start s, median add s, adds timed): fresh warmed indexes, one add each."""
    ids = np.arange(len(x))
    starts, adds, index = [], [], None
    while len(adds) < max(1, repeat) and sum(adds) < budget:
        if index is not None:
            _close(index)
        index, start = warmed(make, x, q)
        starts.append(start)
        adds += _common.timed(lambda: index.add(x, ids), 1)
    return index, _common.median(starts), _common.median(adds), len(adds)


# -- measuring ----------------------------------------------------------------------------------------

def smallest_nprobe(index, x, q, gt, nprobes, target) -> tuple[int, list]:
    """The first nprobe whose recall reaches target (else the last tried), and the sweep."""
    sweep = []
    for p in (p for p in nprobes if p <= index.nlist):
        sweep.append({"nprobe": p, "recall": recalls(x, q, gt, index.search(q, K, nprobe=p)[1])[0]})
        if sweep[-1]["recall"] >= target:
            break
    return sweep[-1]["nprobe"], sweep


def measure(name, make, x, q, gt, args, nprobe=None) -> dict:
    """One table row; nprobe "sweep" finds it on this index (IVF), None for flat."""
    index, start_s, add_s, adds = build(make, x, q, args.repeat, args.add_budget)
    row = {"method": name, "n": len(x), "start_s": start_s, "add_s": add_s, "adds_timed": adds,
           "bytes_per_vector": index.nbytes / len(x)}
    if nprobe == "sweep":
        nprobe, row["sweep"] = smallest_nprobe(index, x, q, gt, _common.csv_list(args.nprobes, int), args.target)
    kw = {} if nprobe is None else {"nprobe": nprobe}
    row["nprobe"] = nprobe
    row["recall"], row["set_recall"] = recalls(x, q, gt, index.search(q, K, **kw)[1])
    for label, threads in (("qps_1t", 1), ("qps_mt", None)):
        seconds = _common.timed(lambda: index.search(q, K, threads=threads, **kw), args.repeat)
        row[label] = len(q) / _common.median(seconds)
    _close(index)
    row["load_1min"] = os.getloadavg()[0]
    return row


def measure_n(data, n: int, args, names) -> tuple[list[dict], dict]:
    """Every method's row at n, and facts of that n (nlist, training and ground-truth seconds)."""
    x, q = tiled(data.train, n, args.seed), data.test
    t0 = time.perf_counter()
    gt = datasets.exact_ground_truth(x, q, "angular", K)
    facts = {"n": n, "ground_truth_s": time.perf_counter() - t0, "nlist": nlist_for(n)}
    centroids, facts["train_s"] = (coarse_centroids(x, facts["nlist"], args, data.name)
                                   if set(names) & set(IVF) else (np.zeros((1, x.shape[1])), None))
    methods = makers(x.shape[1], args.bits, estimate_centre(x, "cosine"), centroids, names)
    rows, nprobe = [], "sweep"
    for name, make in methods.items():
        try:
            rows.append(measure(name, make, x, q, gt, args, nprobe if name in IVF else None))
        except Exception as e:   # noqa: BLE001 -- a method that fails (memory, Ray) is reported, the rest go on
            rows.append({"method": name, "n": n, "error": f"{type(e).__name__}: {e}"})
            print(f"{name} at n={n} failed: {rows[-1]['error']}", flush=True)
            continue
        if name in IVF:
            rows[-1]["nlist"] = facts["nlist"]
            nprobe = rows[-1]["nprobe"]
        print({k: v for k, v in rows[-1].items() if k != "sweep"}, flush=True)
    return rows, facts


# -- output -------------------------------------------------------------------------------------------

COLUMNS = [("method", "method", 13, "s"), ("n", "n", 9, ",d"), ("nlist", "nlist", 5, "d"),
           ("nprobe", "nprobe", 6, "d"), ("start_s", "start s", 7, ".2f"), ("add_s", "add s", 7, ".2f"),
           ("qps_1t", "QPS 1t", 8, ",.0f"), ("qps_mt", "QPS all", 8, ",.0f"), ("recall", "10@10", 6, ".4f"),
           ("set_recall", "set", 6, ".4f"), ("bytes_per_vector", "B/vec", 6, ".1f"), ("load_1min", "load", 5, ".1f")]


def plot(rows: list[dict], path: Path, title: str) -> None:
    """add s, QPS (1 thread solid, all dashed) and bytes per vector against n, log x; atomically."""
    from turboann.report import _pyplot

    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6))
    names = list(dict.fromkeys(r["method"] for r in rows))
    for i, name in enumerate(names):
        mine = sorted((r for r in rows if r["method"] == name and "error" not in r), key=lambda r: r["n"])
        n = [r["n"] for r in mine]
        style = {"color": f"C{i}", "marker": "s" if name in IVF else "o",
                 "linewidth": 2.2 if "Sharded" not in name else 1.4}
        axes[0].plot(n, [r["add_s"] for r in mine], label=name, **style)
        axes[1].plot(n, [r["qps_1t"] for r in mine], label=f"{name} 1t", **style)
        axes[1].plot(n, [r["qps_mt"] for r in mine], linestyle="--", **style)
        axes[2].plot(n, [r["bytes_per_vector"] for r in mine], label=name, **style)
    for ax, label in zip(axes, ("add seconds", "queries per second (solid 1 thread, dashed all)",
                                "bytes per vector in RAM")):
        ax.set_xscale("log")
        ax.set_xlabel("n (vectors)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3, which="both")
    axes[0].set_yscale("log")
    axes[1].set_yscale("log")
    axes[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{path.name}")
    fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    from turboann._files import move_into_place
    move_into_place(tmp, path)


def main(argv=None) -> None:
    args = parse_args(argv)
    import ray

    names = _common.csv_list(args.methods)
    unknown = sorted(set(names) - set(FLAT + IVF))
    if unknown:
        raise SystemExit(f"--methods: unknown {unknown}; choose from {', '.join(FLAT + IVF)}")
    data = datasets.load_ann_benchmarks(args.data, queries=args.queries)
    # The shard actors import this checkout's turboann too.
    ray.init(include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(_common.REPO), **BLAS_THREADS}})
    report = {"machine": _common.machine_info(), "args": vars(args), "k": K, "blas_threads": BLAS_THREADS,
              "per_n": [], "rows": []}
    for n in _common.csv_list(args.n, lambda v: int(float(v))):
        rows, facts = measure_n(data, n, args, names)
        report["rows"] += rows
        report["per_n"].append(facts)
        _common.write_json(args.out, report)          # a partial report survives a later failure
    ray.shutdown()
    load = f"load average {report['machine']['load_average'][0]:.1f} at start, {os.getloadavg()[0]:.1f} at end"
    print(f"\n{data.name}, {args.bits} bits, cosine, {len(data.test)} queries, k={K}, {load}")
    print(_common.table(report["rows"], COLUMNS))
    for facts in report["per_n"]:
        print(f"n={facts['n']:,}: nlist {facts['nlist']}, k-means "
              f"{_common.fmt(facts['train_s'], '.1f', 'cached')} s, ground truth {facts['ground_truth_s']:.1f} s")
    _common.finish_report(report, args.out)
    plot(report["rows"], Path(args.plot), f"{data.name}: cost against n ({args.bits} bits, cosine; {load})")
    print(f"wrote {args.out} and {args.plot}")


if __name__ == "__main__":
    main()
