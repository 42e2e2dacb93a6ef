"""IVF comparison: turboann IVFIndex against Faiss IVF PQ fast-scan and IVF RaBitQ.

On one ann-benchmarks file (default wordnet-minilm-384-angular), with nlist
lists, every method in this one process on the same data and queries:

  turboann-residual  IVFIndex(mode="residual", bits=4, keep_vectors=True): fast-scan lists
  turboann-residual-flat  the same with layout="flat" (the row-major float-table list scan)
  turboann-raw       IVFIndex(mode="raw", bits=4)
  faiss-pqfs         IVF{nlist},PQ{d}x4fs  (4 bits a coordinate: d/2 code bytes, as turboann)
  faiss-rabitq       IVF{nlist},RaBitQ4, searched with IVFRaBitQSearchParameters(qb=8)

All share one set of coarse centroids (Faiss k-means, trained once, cached in
bench/results/), so the rows differ only in how they code and scan the
lists. "+rr" rows re-rank a shortlist of --rerank candidates exactly:
turboann from its kept vectors, Faiss through IndexRefineFlat (k_factor =
rerank / k). Faiss uses L2 on unit vectors for "angular" files.

The sweep searches all queries once per nprobe (k=10) and stops a row once it
reaches the highest target; then for each target recall 10@10 (ann-benchmarks
rule) the smallest nprobe reaching it is timed again: median of --repeat runs
with --threads (default 1) and with --mt-threads (default all cores), the
repeats taken round-robin over every (row, target) so that load changes on a
shared machine hit all rows alike.
NumPy's BLAS (turboann's q . C^T) is pinned to --threads at start-up, so
the all-threads figures keep it at that count.

    python bench/ivf.py [--data PATH] [--nlist 1024] [--queries 1000] [--rerank 100]
        [--nprobes 1,2,4,...] [--targets 0.90,0.95] [--threads 1] [--repeat 3] [--out PATH]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

K = 10


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=None, help="ann-benchmarks HDF5 file (default: wordnet)")
    p.add_argument("--nlist", type=int, default=1024)
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--rerank", type=int, default=100, help="shortlist size of the +rr rows")
    p.add_argument("--nprobes", default="1,2,4,8,12,16,24,32,48,64,96,128,192,256")
    p.add_argument("--targets", default="0.90,0.95")
    p.add_argument("--methods",
                   default="turboann-residual,turboann-residual-flat,turboann-raw,faiss-pqfs,faiss-rabitq")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--mt-threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="JSON path (default bench/results/ivf.json)")
    return p.parse_args(argv)


ARGS = parse_args() if __name__ == "__main__" else None
if ARGS is not None:
    # Idle OpenMP threads (Numba's and Faiss's own runtime) sleep instead of spinning on the
    # cores the other library's threads need; as in bench/fastscan.py.
    os.environ.setdefault("OMP_WAIT_POLICY", "passive")
    # NumPy's OpenBLAS reads this once, when NumPy is first imported.
    os.environ["OPENBLAS_NUM_THREADS"] = str(ARGS.threads)

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

import numpy as np  # noqa: E402

import turboann as ta  # noqa: E402
from turboann import datasets, eval as ev  # noqa: E402

DEFAULT_DATA = _common.DATASETS / "wordnet-minilm-384-angular.hdf5"


class TurboannIVF:
    """IVFIndex rows; one index serves the plain and the re-ranked row."""

    def __init__(self, data, centroids, mode, keep, seed, layout="auto"):
        self.index = ta.IVFIndex(data.train.shape[1], nlist=len(centroids), bits=4, metric=data.metric,
                                 mode=mode, seed=seed, keep_vectors=keep, layout=layout)
        self.index.set_centroids(centroids)
        t0 = time.perf_counter()
        self.index.add(data.train)
        self.add_s = time.perf_counter() - t0
        self.code_bytes = self.index.code_bytes

    def search(self, q, nprobe, rerank):
        return self.index.search(q, K, nprobe=nprobe, rerank=rerank or None)


class FaissIVF:
    """A Faiss IVF index over the shared centroids, wrapped in IndexRefineFlat for the +rr row."""

    def __init__(self, data, centroids, factory, qb, seed):
        import faiss
        self.faiss, self.qb = faiss, qb
        d = data.train.shape[1]
        x = _faiss_rows(data, data.train)
        self.base = faiss.index_factory(d, factory, faiss.METRIC_L2 if data.metric != "ip"
                                        else faiss.METRIC_INNER_PRODUCT)
        self.ivf = faiss.extract_index_ivf(self.base)
        self.ivf.quantizer.add(centroids)          # a full quantizer: train() skips the coarse k-means
        t0 = time.perf_counter()
        self.base.train(x[np.sort(np.random.default_rng(seed).choice(len(x), min(len(x), 100_000), False))])
        self.refine = faiss.IndexRefineFlat(self.base)
        self.refine.add(x)
        self.add_s = time.perf_counter() - t0      # training of the codes included
        self.code_bytes = int(self.base.sa_code_size())
        self.by_residual = bool(self.ivf.by_residual)

    def _params(self, nprobe):
        if self.qb is None:
            params = self.faiss.SearchParametersIVF()
        else:
            params = self.faiss.IVFRaBitQSearchParameters()
            params.qb = self.qb
        params.nprobe = nprobe
        return params

    def search(self, q, nprobe, rerank):
        if not rerank:
            return self.base.search(q, K, params=self._params(nprobe))
        params = self.faiss.IndexRefineSearchParameters()
        params.k_factor = rerank / K
        params.base_index_params = self._params(nprobe)
        return self.refine.search(q, K, params=params)


def _faiss_rows(data, x):
    """Unit rows under "cosine" (Faiss ranks them by L2), the rows themselves otherwise."""
    if data.metric != "cosine":
        return x
    return np.ascontiguousarray(x / np.linalg.norm(x, axis=1, keepdims=True), dtype=np.float32)


def coarse_centroids(data, nlist, seed) -> tuple[np.ndarray, float | None]:
    """Faiss k-means centroids via IVFIndex.train (all cores), cached beside the results."""
    cache = _common.REPO / "bench" / "results" / f"ivf-centroids-{data.name}-{nlist}-{seed}.npy"
    if cache.exists():
        return np.load(cache), None
    index = ta.IVFIndex(data.train.shape[1], nlist=nlist, metric=data.metric, seed=seed)
    t0 = time.perf_counter()
    index.train(data.train, threads=os.cpu_count() or 1)
    seconds = time.perf_counter() - t0
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.save(cache, index.centroids)
    return index.centroids, seconds


def build(data, centroids, names, seed):
    methods = {}
    for name in names:
        if name == "turboann-residual":
            methods[name] = TurboannIVF(data, centroids, "residual", True, seed)
        elif name == "turboann-residual-flat":
            methods[name] = TurboannIVF(data, centroids, "residual", True, seed, layout="flat")
        elif name == "turboann-raw":
            methods[name] = TurboannIVF(data, centroids, "raw", False, seed)
        elif name == "faiss-pqfs":
            d = data.train.shape[1]
            methods[name] = FaissIVF(data, centroids, f"IVF{len(centroids)},PQ{d}x4fs", None, seed)
        elif name == "faiss-rabitq":
            methods[name] = FaissIVF(data, centroids, f"IVF{len(centroids)},RaBitQ4", 8, seed)
        else:
            raise SystemExit(f"--methods: unknown method {name!r}")
        print(f"built {name}: {methods[name].add_s:.1f} s", flush=True)
    return methods


def recall_of(data, I) -> float:
    return _common.dataset_recall(data, I, K)


def sweep(data, method, q, nprobes, rerank, top_target, nlist):
    """[(nprobe, recall, qps)] from one timed search per nprobe, up to the first reaching top_target."""
    points = []
    for p in nprobes:
        if p > nlist:
            break
        t0 = time.perf_counter()
        _, I = method.search(q, p, rerank)
        qps = len(q) / (time.perf_counter() - t0)
        points.append({"nprobe": p, "recall": recall_of(data, I), "qps": qps})
        if points[-1]["recall"] >= top_target:
            break
    return points


def interleaved_qps(jobs, nq, threads, repeat) -> list[float]:
    """QPS of each job (a no-argument search), median of `repeat` taken round-robin over the jobs."""
    ev.set_num_threads(threads)
    return [nq / _common.median(t) for t in _common.round_robin(jobs, repeat)]


def main(args) -> None:
    data = datasets.load_ann_benchmarks(args.data or DEFAULT_DATA, queries=args.queries)
    targets = _common.csv_list(args.targets, float)
    nprobes = _common.csv_list(args.nprobes, int)
    centroids, train_s = coarse_centroids(data, args.nlist, args.seed)
    ev.set_num_threads(args.threads)
    methods = build(data, centroids, args.methods.split(","), args.seed)
    rows = [(name, 0) for name in methods] + [(name, args.rerank) for name in methods
                                                  if name not in ("turboann-raw", "turboann-residual-flat")]
    qs = {name: (data.test if isinstance(m, TurboannIVF) else _faiss_rows(data, data.test))
          for name, m in methods.items()}
    for name, m in methods.items():               # warm-up: JIT compilation, first-touch of the lists
        m.search(qs[name][:100], 8, 0)
    results, timed = [], []
    for name, rerank in rows:
        m = methods[name]
        row = f"{name}+rr{rerank}" if rerank else name
        ev.set_num_threads(args.threads)
        points = sweep(data, m, qs[name], nprobes, rerank, max(targets), args.nlist)
        print(f"{row}: " + ", ".join(f"{p['nprobe']}:{p['recall']:.3f}/{p['qps']:.0f}" for p in points), flush=True)
        entry = {"row": row, "method": name, "rerank": rerank, "code_bytes": m.code_bytes,
                 "add_s": m.add_s, "sweep": points, "at": {}}
        for target in targets:
            hit = next((p for p in points if p["recall"] >= target), None)
            entry["at"][str(target)] = hit and {"nprobe": hit["nprobe"], "recall": hit["recall"]}
            if hit:
                timed.append((entry["at"][str(target)],
                              lambda m=m, q=qs[name], p=hit["nprobe"], r=rerank: m.search(q, p, r)))
        results.append(entry)
    for key, threads in (("qps", args.threads), ("qps_mt", args.mt_threads)):
        for (at, _), qps in zip(timed, interleaved_qps([job for _, job in timed], len(data.test), threads,
                                                       args.repeat)):
            at[key] = qps
    report(data, args, results, train_s, methods)


def report(data, args, results, train_s, methods) -> None:
    targets = [t for t in args.targets.split(",")]
    table_rows = []
    for e in results:
        row = {"row": e["row"], "code_bytes": e["code_bytes"], "add_s": e["add_s"]}
        for t in targets:
            hit = e["at"].get(str(float(t)))
            if hit:
                row.update({f"np{t}": hit["nprobe"], f"r{t}": hit["recall"], f"qps{t}": hit["qps"],
                            f"mt{t}": hit["qps_mt"]})
        table_rows.append(row)
    columns = [("row", "method", 24, "s"), ("code_bytes", "B/vec", 5, "d"), ("add_s", "add s", 6, ".1f")]
    for t in targets:
        columns += [(f"np{t}", f"np@{t}", 7, "d"), (f"r{t}", "10@10", 6, ".4f"),
                    (f"qps{t}", f"QPS {args.threads}t", 8, ",.0f"), (f"mt{t}", f"QPS {args.mt_threads}t", 8, ",.0f")]
    print(f"\n{data.name}: n={len(data.train)}, queries={len(data.test)}, nlist={args.nlist}, k={K}, "
          f"rerank shortlist={args.rerank}; smallest nprobe reaching recall 10@10 >= {', '.join(targets)}")
    print(_common.table(table_rows, columns))
    out = Path(args.out) if args.out else _common.REPO / "bench" / "results" / "ivf.json"
    _common.write_json(out, {
        "dataset": data.name, "n": len(data.train), "queries": len(data.test), "nlist": args.nlist, "k": K,
        "rerank": args.rerank, "threads": args.threads, "mt_threads": args.mt_threads, "repeat": args.repeat,
        "coarse_train_s": train_s, "machine": _common.machine_info(),
        "faiss_by_residual": {n: m.by_residual for n, m in methods.items() if isinstance(m, FaissIVF)},
        "results": results})
    print(f"wrote {out}")


if __name__ == "__main__":
    main(ARGS)
