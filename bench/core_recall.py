"""Recall, code size, add time and QPS of turboann and its anchors on each of a list of vector sets.

Sets (--sets, default all): "wordnet" and "vocab" (the ann-benchmarks files
in shared/datasets), the seeded synthetic families of `_synthetic` (decaying
spectra, dominant shared directions, heavy-tailed norms; d 256-3072; cosine,
ip, l2), or any ann-benchmarks file with --data. Every method runs in this
one process on the same data, queries and ground truth, at each bit width:

  recall 10@10   ann-benchmarks k-NN recall (true distance <= 10th true distance
                 + 1e-3), from one search with k=10; "set" is plain
                 |found ∩ true top-10| / 10 (no tie tolerance), for papers' numbers
  R@1@k          true nearest neighbour among the first k, k = 1, 4, 16, 64,
                 from one search with k=64
  bytes          per vector: codes + per-vector factors (ids not counted)
  add            seconds to build from scratch (training/calibration included),
                 median of --repeat builds, and vectors per second
  QPS            all queries in one batch search (k=10), median of --repeat,
                 with --threads (default 1) and --mt-threads (default all cores)

Threads: Faiss (OpenMP) and turboann (Numba) change thread count at will.
turbovec's rayon pool takes RAYON_NUM_THREADS once, at its first use in a
process, so this process pins it to --threads before anything runs and
turbovec's all-threads QPS is measured in a child process (same data, same
build, RAYON_NUM_THREADS=--mt-threads).

After the sets, a margin table: per set and bit width, turboann's recall
10@10 and bytes against the best of the goal's anchors (Faiss RaBitQ qb=8
and turbovec + calibrate) that ran, and the anchors' own.

    python bench/core_recall.py [--sets wordnet,vocab,decay-768-cosine,...] [--data PATH] [--bits 2,3,4]
        [--methods ...] [--turboann-variants mse,prod] [--queries N] [--threads 1] [--repeat 3] [--out PATH]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402
import _synthetic  # noqa: E402

import numpy as np  # noqa: E402

from turboann import datasets  # noqa: E402
from turboann import eval as ev  # noqa: E402

# Named turboann configurations: row "turboann-<name>" runs Index(..., **options).
TURBOANN_CONFIGS = {
    "mse": {},
    "prod": {"variant": "prod"},
    "center": {"center": True},
    "oblivious": {"center": False},
    "compact": {"compact": True},
    "direction": {"estimator": "direction"},
}
ANCHORS = ("faiss-pq", "faiss-pqfs", "faiss-rabitq", "faiss-tq", "turbovec", "turbovec-cal")
DEFAULT_METHODS = ("turboann",) + ANCHORS
NAMED_FILES = {"wordnet": "wordnet-minilm-384-angular.hdf5", "vocab": "minilm-vocab-384-euclidean.hdf5"}
DEFAULT_SETS = tuple(NAMED_FILES) + tuple(_synthetic.FAMILIES)
MARGIN_ANCHORS = ("faiss-rabitq", "turbovec-cal")
K = 10
R1_AT = (1, 4, 16, 64)
WARMUP_ROWS = 10_000           # untimed first build: JIT compilation, library start-up
SEARCH_BUDGET_SECONDS = 60.0   # stop repeating a QPS timing once this much was spent
RAYON_METHODS = ("turbovec", "turbovec-cal")

COLUMNS = [("row", "method", 16, "s"), ("bits", "bits", 4, "d"), ("code_bytes", "B/vec", 5, "d"),
           ("recall10", "10@10", 6, ".4f"), ("recall10_set", "set10", 6, ".4f"),
           ("r1_at_1", "R1@1", 6, ".3f"), ("r1_at_4", "R1@4", 6, ".3f"), ("r1_at_16", "R1@16", 6, ".3f"),
           ("r1_at_64", "R1@64", 6, ".3f"), ("add_s", "add s", 7, ".2f"), ("add_vps", "add vec/s", 10, ",.0f"),
           ("qps", "QPS 1t", 8, ",.0f"), ("qps_mt", "QPS mt", 8, ",.0f")]


def plan_runs(methods: list[str], variants: list[str]) -> list[tuple[str, str, dict]]:
    """(row name, eval method name, options) for each requested method."""
    runs = []
    for name in methods:
        if name == "turboann":
            runs += [(f"turboann-{v}", "turboann", dict(TURBOANN_CONFIGS[v])) for v in variants]
        elif name.startswith("turboann-") and name[len("turboann-"):] in TURBOANN_CONFIGS:
            runs.append((name, "turboann", dict(TURBOANN_CONFIGS[name[len("turboann-"):]])))
        elif name in ev.METHODS:
            runs.append((name, name, {}))
        else:
            raise SystemExit(f"--methods: unknown method {name!r}; choose from turboann, "
                             f"turboann-<variant> ({', '.join(TURBOANN_CONFIGS)}), {', '.join(ev.METHODS)}")
    return runs


def load_set(spec: str, queries: int | None, seed: int):
    """A named file ("wordnet", "vocab"), a synthetic family, or an ann-benchmarks file path."""
    if spec in _synthetic.FAMILIES:
        return _synthetic.load(spec, seed=seed, queries=queries)
    path = _common.DATASETS / NAMED_FILES[spec] if spec in NAMED_FILES else Path(spec)
    return datasets.load_ann_benchmarks(path, queries=queries)


def build(ds: datasets.Dataset, method: str, bits: int, options: dict, seed: int) -> ev.Method:
    m = ev.make_method(method, ds.train.shape[1], bits, ds.metric, seed=seed, **options)
    m.add(ds.train)
    return m


def measure_qps(m: ev.Method, queries: np.ndarray, repeat: int) -> list[float]:
    """Seconds of each timed batch search (k=10) of all queries."""
    return _common.timed(lambda: m.search(queries, K), repeat, SEARCH_BUDGET_SECONDS)


def measure_row(ds: datasets.Dataset, row: str, method: str, options: dict, bits: int, args) -> dict:
    out = {"row": row, "method": method, "options": options, "bits": bits}
    try:
        warm = ev.make_method(method, ds.train.shape[1], bits, ds.metric, seed=args.seed, **options)
    except ev.MethodUnavailable as exc:
        return {**out, "available": False, "reason": str(exc)}
    ev.set_num_threads(args.threads)
    warm.add(ds.train[:WARMUP_ROWS])
    warm.search(ds.test[:16], K)
    del warm

    add_times, m = [], None
    for _ in range(args.repeat):
        m = None   # free the previous build first
        t0 = time.perf_counter()
        m = build(ds, method, bits, options, args.seed)
        add_times.append(time.perf_counter() - t0)
    out.update(available=True, describe=m.describe(), code_bytes=m.code_bytes,
               add_s=_common.median(add_times), add_s_all=add_times)
    out["add_vps"] = ds.train.shape[0] / out["add_s"]

    # Recall 10@10 from the first timed single-thread search.
    t0 = time.perf_counter()
    _, I = m.search(ds.test, K)
    first = time.perf_counter() - t0
    found = _synthetic.true_distances(ds, I)
    out["recall10"] = ev.mean_knn_recall(ds.distances, found, K)
    out["recall10_set"] = ev.intersection_recall(I, ds.neighbors, K)
    _, I64 = m.search(ds.test, max(R1_AT))
    for k in R1_AT:
        out[f"r1_at_{k}"] = ev.recall_at(I64, ds.neighbors, k)

    times = [first] + (measure_qps(m, ds.test, args.repeat - 1) if args.repeat > 1 else [])
    out["qps_s_all"] = times
    out["qps"] = ds.test.shape[0] / _common.median(times)

    if args.mt_threads and args.mt_threads != args.threads:
        if method in RAYON_METHODS:
            del m
            try:
                child = qps_in_child(args, method, bits, options)
            except RuntimeError as exc:
                out["qps_mt_note"] = str(exc)
                return out
            out["qps_mt_s_all"], out["qps_mt_process"] = child["times"], "child"
            if abs(child["recall10"] - out["recall10"]) > 1e-9:
                out["qps_mt_note"] = f"child recall {child['recall10']:.4f} differs"
        else:
            ev.set_num_threads(args.mt_threads)
            m.search(ds.test[:16], K)
            out["qps_mt_s_all"], out["qps_mt_process"] = measure_qps(m, ds.test, args.repeat), "same"
            ev.set_num_threads(args.threads)
        out["qps_mt"] = ds.test.shape[0] / _common.median(out["qps_mt_s_all"])
    return out


def qps_in_child(args, method: str, bits: int, options: dict) -> dict:
    """Batch-search timings of `method` in a fresh process whose rayon pool has mt_threads."""
    argv = ["--sets", args.current_set, "--repeat", str(args.repeat), "--threads", str(args.mt_threads),
            "--seed", str(args.seed)] + (["--queries", str(args.queries)] if args.queries else [])
    return _common.run_child(__file__, {"method": method, "bits": bits, "options": options}, argv,
                             args.mt_threads)


def worker(args) -> None:
    """--worker: build one method, print {"times": [...], "recall10": r} as JSON."""
    spec = json.loads(args.worker)
    ev.set_num_threads(args.threads)
    ds = load_set(args.sets[0], args.queries, args.seed)
    m = build(ds, spec["method"], spec["bits"], spec["options"], args.seed)
    _, I = m.search(ds.test, K)
    recall = ev.mean_knn_recall(ds.distances, _synthetic.true_distances(ds, I), K)
    times = measure_qps(m, ds.test, args.repeat)
    print(json.dumps({"times": times, "recall10": recall, "threads": ev.set_num_threads(args.threads)}))


def settings(args, ds: datasets.Dataset, runs) -> dict:
    return {"data": args.current_set, "dataset": ds.name, "distance": ds.distance, "metric": ds.metric,
            "n": ds.train.shape[0], "dim": ds.train.shape[1], "queries": ds.test.shape[0],
            "bits": args.bits, "rows": [r[0] for r in runs], "turboann_configs": TURBOANN_CONFIGS,
            "threads": args.threads, "mt_threads": args.mt_threads, "repeat": args.repeat, "seed": args.seed,
            "k": K, "epsilon": 1e-3, "r1_at": list(R1_AT), "warmup_rows": WARMUP_ROWS,
            "search_budget_seconds": SEARCH_BUDGET_SECONDS,
            "notes": ["recall10 and the first single-thread QPS timing come from the same k=10 search",
                      "R@1@k from one k=64 search",
                      "add time: median of `repeat` builds from scratch, training/calibration included",
                      "QPS timings stop repeating once they took search_budget_seconds",
                      "turbovec all-threads QPS is timed in a child process (rayon pool fixed at start)"]}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sets", default=",".join(DEFAULT_SETS),
                   help=f"comma-separated: {', '.join(NAMED_FILES)}, synthetic {', '.join(_synthetic.FAMILIES)}")
    p.add_argument("--data", type=Path, default=None, help="an ann-benchmarks HDF5 file instead of --sets")
    p.add_argument("--bits", default="2,3,4", help="comma-separated bit widths")
    p.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                   help=f"comma-separated; 'turboann' runs every --turboann-variants; anchors: {', '.join(ev.METHODS)}")
    p.add_argument("--turboann-variants", default="mse",
                   help=f"comma-separated names from {', '.join(TURBOANN_CONFIGS)}")
    p.add_argument("--queries", type=int, default=None, help="first N test queries (default all)")
    p.add_argument("--threads", type=int, default=1, help="threads of the main measurements")
    p.add_argument("--mt-threads", type=int, default=os.cpu_count() or 1,
                   help="threads of the all-threads QPS column (0: skip it)")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None,
                   help="JSON path with one set (default bench/results/core_recall_<set>.json)")
    p.add_argument("--reuse", default="",
                   help="comma-separated rows (e.g. faiss-rabitq,turbovec-cal) taken from the set's earlier JSON "
                        "report where it has them for the same queries and seed, instead of measured again")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.sets = [str(args.data)] if args.data else _common.csv_list(args.sets)
    unknown = [s for s in args.sets
               if s not in NAMED_FILES and s not in _synthetic.FAMILIES and not s.endswith(".hdf5")]
    if unknown:
        p.error(f"--sets: unknown {unknown}; choose from {', '.join(DEFAULT_SETS)} or give --data")
    args.bits = _common.csv_list(args.bits, int)
    args.reuse = _common.csv_list(args.reuse)
    args.methods = _common.csv_list(args.methods)
    args.turboann_variants = _common.csv_list(args.turboann_variants)
    unknown = [v for v in args.turboann_variants if v not in TURBOANN_CONFIGS]
    if unknown:
        p.error(f"--turboann-variants: unknown {unknown}; choose from {', '.join(TURBOANN_CONFIGS)}")
    if args.repeat < 1 or args.threads < 1:
        p.error("--repeat and --threads must be >= 1")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.worker:
        worker(args)
        return
    # Before any turbovec call: its rayon pool takes this count for the whole process.
    threads = ev.set_num_threads(args.threads)
    runs = plan_runs(args.methods, args.turboann_variants)
    reports = []
    for spec in args.sets:
        args.current_set = spec
        reports.append(run_set(args, spec, runs, threads))
    print()
    print(margin_table(reports))


def run_set(args, spec: str, runs, threads) -> dict:
    """Every run at every bit width on one set; prints its table, writes its JSON, returns the report."""
    ds = load_set(spec, args.queries, args.seed)
    out_path = (args.out if args.out and len(args.sets) == 1
                else _common.REPO / "bench" / "results" / f"core_recall_{ds.name}.json")
    report = {"settings": settings(args, ds, runs), "machine": _common.machine_info(),
              "thread_counts": threads, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "results": []}
    print(f"{ds.name}: n={ds.train.shape[0]} d={ds.train.shape[1]} queries={ds.test.shape[0]} "
          f"metric={ds.metric}; {report['machine']['cpu_model']}, {report['machine']['cores']} cores; "
          f"threads {args.threads} / {args.mt_threads or '-'}; repeat {args.repeat}; "
          f"load average {report['machine']['load_average'][0]:.2f}", flush=True)
    earlier = earlier_rows(out_path, ds, args) if args.reuse else {}
    for bits in args.bits:
        for row, method, options in runs:
            t0 = time.perf_counter()
            result = earlier.get((row, bits)) or measure_row(ds, row, method, options, bits, args)
            report["results"].append(result)
            _common.write_json(out_path, report)
            if result.get("reused_from"):
                print(f"  {row:<16} {bits} bits: 10@10 {result['recall10']:.4f}, {result['code_bytes']} B "
                      f"(reused from the run of {result['reused_from']})", flush=True)
            elif result["available"]:
                print(f"  {row:<16} {bits} bits: 10@10 {result['recall10']:.4f}, {result['code_bytes']} B, "
                      f"{result['describe']} ({time.perf_counter() - t0:.0f} s)", flush=True)
            else:
                print(f"  {row:<16} {bits} bits: unavailable: {result['reason']}", flush=True)
    _common.finish_report(report, out_path)

    done = [r for r in report["results"] if r["available"]]
    print()
    print(_common.table(done, COLUMNS))
    for r in report["results"]:
        if not r["available"]:
            print(f"skipped {r['row']} {r['bits']} bits: {r['reason']}")
    print(f"QPS mt = {args.mt_threads} threads; load average at end "
          f"{report['load_average_end'][0]:.2f}; wrote {out_path}\n", flush=True)
    return report


def earlier_rows(path: Path, ds, args) -> dict:
    """{(row, bits): result} of the --reuse rows in an earlier report at `path` of the same set, queries
    and seed (marked "reused_from" with its start time); empty when there is none."""
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    st = old.get("settings", {})
    if (st.get("dataset"), st.get("queries"), st.get("seed"), st.get("n")) != (
            ds.name, ds.test.shape[0], args.seed, ds.train.shape[0]):
        return {}
    return {(r["row"], r["bits"]): {**r, "reused_from": old.get("started")}
            for r in old.get("results", []) if r["row"] in args.reuse and r.get("available")}


def margin_table(reports: list[dict]) -> str:
    """Per set, bit width and turboann row: its recall 10@10 and bytes, each margin anchor's, and the
    margin (turboann minus the best anchor that takes at least turboann's bytes; "+" bytes: the
    anchor takes fewer bytes than turboann)."""
    lines = [f"{'set':<26} {'bits':>4} {'turboann row':<18} {'10@10':>6} {'B':>5}  "
             + "  ".join(f"{a:>20}" for a in MARGIN_ANCHORS) + f"  {'margin':>7}"]
    lines.append("-" * len(lines[0]))
    for report in reports:
        name = report["settings"]["dataset"]
        found = [r for r in report["results"] if r["available"]]
        for bits in report["settings"]["bits"]:
            anchors = {r["row"]: r for r in found if r["bits"] == bits and r["row"] in MARGIN_ANCHORS}
            for r in (r for r in found if r["bits"] == bits and r["method"] == "turboann"):
                cells, best = [], None
                for a in MARGIN_ANCHORS:
                    if a not in anchors:
                        cells.append(f"{'-':>20}")
                        continue
                    an = anchors[a]
                    more = "+" if an["code_bytes"] < r["code_bytes"] else " "
                    cells.append(f"{an['recall10']:.4f} ({an['code_bytes']:>4} B){more:>2}")
                    best = an["recall10"] if best is None else max(best, an["recall10"])
                margin = "-" if best is None else f"{r['recall10'] - best:+.4f}"
                lines.append(f"{name:<26} {bits:>4} {r['row']:<18} {r['recall10']:.4f} {r['code_bytes']:>5}  "
                             + "  ".join(cells) + f"  {margin:>7}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
