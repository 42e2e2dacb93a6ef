"""Scan QPS: turboann against turbovec, Faiss PQ{M}x4fs, Faiss SQ8 and Faiss IndexFlat.

On one ann-benchmarks file (default wordnet-minilm-384-angular), or its
first --rows rows (exact ground truth recomputed over them), at each bit
width, every method is built once in this process on the same data and
measured with the same queries (k = 10), the timings of all methods
interleaved round-robin so that load changes on a shared machine hit them
alike:

  recall 10@10  ann-benchmarks k-NN recall of the first batch search
  QPS           all queries in one batch, median of --repeat, at 1 thread and
                at --mt-threads (default 2)
  p50 nq=1      median latency of single-query searches (the first
                --single queries), at the same two thread counts
  ratios        turboann QPS / anchor QPS and anchor p50 / turboann p50
                (> 1 means turboann is faster), per thread count
  agree         share of the first --exact-queries queries whose turboann
                top 10 (as a set) equals the full-code float top 10: the
                float-table scan (kernels.scan.search_codes) of the same
                codes, a path independent of the fast-scan and integer engines
  anchors       turbovec at 2-4 bits, PQ{M}x4fs where M = d*bits/4 divides d,
                SQ8 and IndexFlat at 5-8 bits (their widths are their own:
                see B/vec)

turbovec's rayon pool takes RAYON_NUM_THREADS once per process, so this
process pins it to 1 before anything runs and turbovec's multi-thread
figures come from a child process (same build, RAYON_NUM_THREADS set).

OpenMP (Numba's pool and Faiss) runs with OMP_WAIT_POLICY=passive unless the
environment sets it: on a shared machine with more runnable threads than
cores, idle OpenMP threads that spin steal the cores the working thread
needs (measured: turboann nq=1 p50 16 ms spinning vs 1.7 ms passive).
Faiss's wheel bundles an OpenBLAS that does not know recent CPUs and falls
back to its oldest kernels (measured on an Emerald Rapids Xeon: "Prescott",
IndexFlat 242 QPS on wordnet, 1,035 QPS with SkylakeX kernels), so unless the
environment sets OPENBLAS_CORETYPE the script sets it to the newest kernel
family this CPU runs; the header and the JSON name each BLAS's kernels.
Run it with PYTHONPATH=. from a checkout to measure that checkout.

    python bench/fastscan.py [--data PATH] [--rows 10000,30000,0] [--bits 2,3,4] [--repeat 5] [--mt-threads 2]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "passive")   # before any OpenMP runtime loads (see above)
sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

_common.fair_blas()   # before numpy and Faiss load their OpenBLAS (see _common.fair_blas)

import numpy as np  # noqa: E402

from turboann import datasets, eval as ev  # noqa: E402

K = 10
METHODS = ("turboann", "turbovec", "faiss-pqfs", "faiss-sq8", "faiss-flat")
ANCHORS = METHODS[1:]
RAYON_METHODS = ("turbovec",)
DEFAULT_DATA = _common.DATASETS / "wordnet-minilm-384-angular.hdf5"


def timings(methods: dict, queries: np.ndarray, repeat: int, single: int) -> dict:
    """Batch and single-query seconds of each method, interleaved round-robin so that a
    change of machine load over time hits every method alike (after one warm-up each)."""
    for m in methods.values():
        m.search(queries[:16], K)
        m.search(queries[:1], K)
    batch = _common.round_robin([lambda m=m: m.search(queries, K) for m in methods.values()], repeat)
    single_s = [[] for _ in methods]
    for i in range(single):   # query i for every method, then query i + 1
        for t, m in zip(single_s, methods.values()):
            t += _common.timed(lambda: m.search(queries[i:i + 1], K), 1)
    return {name: {"batch_s": b, "single_s": s} for name, b, s in zip(methods, batch, single_s)}


def summarise(t: dict, nq: int) -> dict:
    return {"qps": nq / _common.median(t["batch_s"]), "p50_ms": 1e3 * _common.median(t["single_s"]), **t}


def build(ds: datasets.Dataset, method: str, bits: int, seed: int, **options) -> ev.Method:
    m = ev.make_method(method, ds.train.shape[1], bits, ds.metric, seed=seed, **options)
    m.add(ds.train)
    return m


def recall10(ds: datasets.Dataset, m: ev.Method) -> tuple[float, np.ndarray]:
    _, I = m.search(ds.test, K)
    return _common.dataset_recall(ds, I, K), I


def load(path: Path, rows: int, queries: int | None) -> datasets.Dataset:
    """The file, or its first `rows` train rows (0: all) with exact ground truth recomputed over them."""
    ds = datasets.load_ann_benchmarks(path, queries=queries)
    if not rows or rows >= ds.train.shape[0]:
        return ds
    train = np.ascontiguousarray(ds.train[:rows])
    neighbors, distances = datasets.exact_ground_truth(train, ds.test, ds.distance, 100)
    return datasets.Dataset(f"{ds.name}[:{rows}]", train, ds.test, neighbors, distances, ds.distance)


def in_child(args, method: str, bits: int, threads: int, rows: int) -> dict:
    """Timings of `method` in a fresh process whose rayon pool has `threads`."""
    argv = ["--data", str(args.data), "--repeat", str(args.repeat), "--single", str(args.single),
            "--seed", str(args.seed)] + (["--queries", str(args.queries)] if args.queries else [])
    spec = {"method": method, "bits": bits, "threads": threads, "rows": rows}
    return _common.run_child(__file__, spec, argv, threads)


def worker(args) -> None:
    spec = json.loads(args.worker)
    ev.set_num_threads(spec["threads"])
    ds = load(args.data, spec["rows"], args.queries)
    m = build(ds, spec["method"], spec["bits"], args.seed)
    r, _ = recall10(ds, m)
    print(json.dumps({**timings({"m": m}, ds.test, args.repeat, args.single)["m"], "recall10": r}))


def agreement(ds: datasets.Dataset, bits: int, seed: int, ids: np.ndarray, nq: int) -> float:
    """Share of the first nq queries whose top-K id set equals the full-code float top K, scored by the
    float-table scan (`kernels.scan.search_codes`) of an index with the same codes."""
    from turboann.kernels.scan import search_codes

    flat = build(ds, "turboann", bits, seed, layout="flat").index
    q, _, _, _ = flat._queries(ds.test[:nq], K, None)
    _, slots = search_codes(flat._store.codes, flat._store.factors, *flat._segment_values(q), flat._centroid_table,
                            *flat._quant.plan, K, 1, np.zeros(0, np.uint8))
    truth = flat._store.ids[slots]
    return float(np.mean([set(a) == set(b) for a, b in zip(ids[:nq], truth)]))


def measure_bits(ds, bits: int, args, rows: int) -> list[dict]:
    """Every method at `bits`: build at 1 thread, recall, interleaved timings at 1 and mt threads."""
    ev.set_num_threads(1)
    results, built, ids = {}, {}, {}
    for method in args.methods:
        out = results[method] = {"method": method, "bits": bits, "n": ds.train.shape[0]}
        try:
            m = build(ds, method, bits, args.seed)
        except ev.MethodUnavailable as exc:
            out.update(available=False, reason=str(exc))
            continue
        built[method] = m
        out.update(available=True, describe=m.describe(), code_bytes=m.code_bytes)
        out["recall10"], ids[method] = recall10(ds, m)
    nq = ds.test.shape[0]
    for method, t in timings(built, ds.test, args.repeat, args.single).items():
        results[method]["t1"] = summarise(t, nq)
    if "turboann" in built and args.exact_queries:
        results["turboann"]["agree"] = agreement(ds, bits, args.seed, ids["turboann"], args.exact_queries)
    ev.set_num_threads(args.mt_threads)
    same = {name: m for name, m in built.items() if name not in RAYON_METHODS}
    for method, t in timings(same, ds.test, args.repeat, args.single).items():
        results[method]["tmt"] = {**summarise(t, nq), "process": "same"}
    ev.set_num_threads(1)
    for method in [name for name in built if name in RAYON_METHODS]:
        del built[method]
        child = in_child(args, method, bits, args.mt_threads, rows)
        results[method]["tmt"] = {**summarise(child, nq), "process": "child"}
        if abs(child["recall10"] - results[method]["recall10"]) > 1e-9:
            results[method]["tmt"]["note"] = f"child recall {child['recall10']:.4f} differs"
    return list(results.values())


COLUMNS = [("n", "n", 7, ",d"), ("method", "method", 11, "s"), ("bits", "bits", 4, "d"),
           ("code_bytes", "B/vec", 5, "d"),
           ("recall10", "10@10", 6, ".4f"), ("qps1", "QPS 1t", 8, ",.0f"), ("qpsmt", "QPS mt", 8, ",.0f"),
           ("p50_1", "p50 1t ms", 9, ".2f"), ("p50_mt", "p50 mt ms", 9, ".2f"),
           ("vs_tv1", "x tv 1t", 7, ".2f"), ("vs_tvmt", "x tv mt", 7, ".2f"),
           ("vs_fs1", "x fs 1t", 7, ".2f"), ("vs_fsmt", "x fs mt", 7, ".2f"),
           ("vs_sq1", "x sq8 1t", 8, ".2f"), ("vs_flat1", "x flat 1t", 9, ".2f"),
           ("p50_vs_tv1", "p50 x tv", 8, ".2f"), ("agree", "agree", 6, ".4f")]


def table_rows(results: list[dict]) -> list[dict]:
    """One row per available result; turboann rows get the ratios to each anchor at the same bits."""
    rows = []
    by = {(r["method"], r["bits"], r["n"]): r for r in results if r["available"]}
    for r in results:
        if not r["available"]:
            continue
        row = {"n": r["n"], "method": r["method"], "bits": r["bits"], "code_bytes": r["code_bytes"],
               "recall10": r["recall10"],
               "qps1": r["t1"]["qps"], "qpsmt": r["tmt"]["qps"], "p50_1": r["t1"]["p50_ms"],
               "p50_mt": r["tmt"]["p50_ms"], "agree": r.get("agree")}
        if r["method"] == "turboann":
            for anchor, tag in (("turbovec", "tv"), ("faiss-pqfs", "fs"), ("faiss-sq8", "sq"),
                                ("faiss-flat", "flat")):
                a = by.get((anchor, r["bits"], r["n"]))
                if a:
                    row[f"vs_{tag}1"] = r["t1"]["qps"] / a["t1"]["qps"]
                    row[f"vs_{tag}mt"] = r["tmt"]["qps"] / a["tmt"]["qps"]
                    if anchor == "turbovec":
                        row["p50_vs_tv1"] = a["t1"]["p50_ms"] / r["t1"]["p50_ms"]
        rows.append(row)
    return rows


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="ann-benchmarks HDF5 file")
    p.add_argument("--bits", default="2,3,4", help="comma-separated bit widths")
    p.add_argument("--rows", default="0", help="comma-separated prefixes of the train rows (0: all)")
    p.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated from {', '.join(METHODS)}")
    p.add_argument("--queries", type=int, default=None, help="first N test queries (default all)")
    p.add_argument("--mt-threads", type=int, default=2, help="threads of the multi-thread columns")
    p.add_argument("--repeat", type=int, default=5, help="batch searches timed per measurement")
    p.add_argument("--single", type=int, default=200, help="single-query searches timed per measurement")
    p.add_argument("--exact-queries", type=int, default=200,
                   help="queries compared with the float path (0: skip)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="JSON path (default bench/results/fastscan_<dataset>.json)")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.bits = _common.csv_list(args.bits, int)
    args.rows = _common.csv_list(args.rows, int)
    args.methods = _common.csv_list(args.methods)
    bad = [m for m in args.methods if m not in METHODS]
    if bad:
        p.error(f"--methods: unknown {bad}; choose from {', '.join(METHODS)}")
    if args.repeat < 1 or args.mt_threads < 1 or args.single < 1:
        p.error("--repeat, --single and --mt-threads must be >= 1")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.worker:
        worker(args)
        return
    ev.set_num_threads(1)   # before any turbovec call: its pool keeps this count
    full = datasets.load_ann_benchmarks(args.data, queries=args.queries)
    out_path = args.out or _common.REPO / "bench" / "results" / f"fastscan_{full.name}.json"
    report = {"settings": {**{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                           "dataset": full.name, "n": full.train.shape[0], "dim": full.train.shape[1],
                           "nq": full.test.shape[0], "k": K, "omp_wait_policy": os.environ["OMP_WAIT_POLICY"]},
              "machine": _common.machine_info(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "results": []}
    print(f"{full.name}: n={full.train.shape[0]} d={full.train.shape[1]} queries={full.test.shape[0]}; "
          f"{report['machine']['cpu_model']}, {report['machine']['cores']} cores, SIMD "
          f"{report['machine']['simd']}; turboann kernels {report['machine']['kernels']}; threads 1 / "
          f"{args.mt_threads}; repeat {args.repeat}; BLAS {report['machine']['blas']}; load average "
          f"{report['machine']['load_average'][0]:.2f}", flush=True)
    for rows in args.rows:
        ds = load(args.data, rows, args.queries)
        for bits in args.bits:
            t0 = time.perf_counter()
            for r in measure_bits(ds, bits, args, rows):
                report["results"].append(r)
                if r["available"]:
                    print(f"  n={ds.train.shape[0]:,} {r['method']:<11} {bits} bits: 10@10 {r['recall10']:.4f}, "
                          f"QPS {r['t1']['qps']:,.0f} / {r['tmt']['qps']:,.0f}, {r['describe']}", flush=True)
                else:
                    print(f"  n={ds.train.shape[0]:,} {r['method']:<11} {bits} bits: unavailable: {r['reason']}",
                          flush=True)
            _common.write_json(out_path, report)
            print(f"  ({time.perf_counter() - t0:.0f} s)", flush=True)
    _common.finish_report(report, out_path)
    print()
    print(_common.table(table_rows(report["results"]), COLUMNS))
    print(f"x tv / x fs / x sq8 / x flat: turboann QPS over turbovec / Faiss PQ{{M}}x4fs / SQ8 / IndexFlat QPS; "
          f"p50 x tv: turbovec p50 over turboann p50 (1 thread); mt = {args.mt_threads} threads; agree: share "
          f"of {args.exact_queries} queries whose top {K} equals the full-code float top {K}; load average at end "
          f"{report['load_average_end'][0]:.2f}; wrote {out_path}")


if __name__ == "__main__":
    main()
