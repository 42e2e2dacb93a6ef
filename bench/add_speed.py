"""Build time of turboann and its anchors, interleaved so that ratios are fair on a shared machine.

bench/core_recall.py times each method's builds one after the other, minutes
apart from the next method's: on a machine whose speed drifts by tens of
percent within the hour, the ratio of two such medians inherits the drift.
Here every (method, bits) build runs once per round, the rounds repeat
--repeat times (the order rotating each round), and each round gives a
paired ratio of every anchor's build time to turboann's at the same bits:

  add s      median of the builds (training, calibration and encoding included,
             from an empty index to all train vectors held), min and max
  x ta       median over rounds of (anchor's time / turboann's time) in that round

Threads: --threads for everyone (Faiss OpenMP, Numba; turbovec's rayon pool
is pinned to it before first use).

    python bench/add_speed.py [--data PATH] [--bits 2,3,4] [--methods turboann,faiss-pqfs,turbovec]
        [--repeat 7] [--threads 1] [--out PATH]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "passive")

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

from turboann import datasets  # noqa: E402
from turboann import eval as ev  # noqa: E402

DEFAULT_DATA = _common.DATASETS / "wordnet-minilm-384-angular.hdf5"
WARMUP_ROWS = 10_000   # untimed first build of each config: JIT compilation, library start-up
COLUMNS = [("method", "method", 12, "s"), ("bits", "bits", 4, "d"), ("add_s", "add s", 7, ".3f"),
           ("min_s", "min s", 7, ".3f"), ("max_s", "max s", 7, ".3f"), ("vps", "vec/s", 11, ",.0f"),
           ("x_turboann", "x ta", 6, ".1f")]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="ann-benchmarks HDF5 file")
    p.add_argument("--bits", type=lambda s: _common.csv_list(s, int), default=[2, 3, 4])
    p.add_argument("--methods", type=_common.csv_list, default=["turboann", "faiss-pqfs", "turbovec"],
                   help="turboann first; anchors from turboann.eval.METHODS")
    p.add_argument("--repeat", type=int, default=7)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    if args.methods[0] != "turboann":
        p.error("--methods must start with turboann (the other methods' ratios are to it)")
    return args


def builder(ds, method: str, bits: int, seed: int):
    """A no-argument job that builds `method` at `bits` on all train vectors and drops it."""
    def build():
        m = ev.make_method(method, ds.train.shape[1], bits, ds.metric, seed=seed)
        m.add(ds.train)
    return build


def main(argv=None) -> None:
    args = parse_args(argv)
    threads = ev.set_num_threads(args.threads)   # before turbovec's first use pins its pool
    ds = datasets.load_ann_benchmarks(args.data, queries=1)
    configs = []
    for bits in args.bits:
        for method in args.methods:
            try:
                warm = ev.make_method(method, ds.train.shape[1], bits, ds.metric, seed=args.seed)
            except ev.MethodUnavailable as exc:
                print(f"  {method} {bits} bits: unavailable: {exc}", flush=True)
                continue
            warm.add(ds.train[:WARMUP_ROWS])
            del warm
            configs.append((method, bits))
    print(f"{ds.name}: n={ds.train.shape[0]:,} d={ds.train.shape[1]}; threads {args.threads}; "
          f"repeat {args.repeat}; load average {os.getloadavg()[0]:.2f}", flush=True)
    times = {c: [] for c in configs}
    for r in range(args.repeat):
        shift = r % len(configs)   # rotate the order: no config is always first after a pause
        for c in configs[shift:] + configs[:shift]:
            t0 = time.perf_counter()
            builder(ds, c[0], c[1], args.seed)()
            times[c].append(time.perf_counter() - t0)
    rows = []
    for method, bits in configs:
        t = times[method, bits]
        base = times.get(("turboann", bits))
        paired = None if base is None or method == "turboann" else statistics.median(
            a / b for a, b in zip(t, base))
        rows.append({"method": method, "bits": bits, "add_s": statistics.median(t), "min_s": min(t), "max_s": max(t),
                     "vps": ds.train.shape[0] / statistics.median(t), "x_turboann": paired, "times": t})
    print(_common.table(rows, COLUMNS))
    print(f"load average at end {os.getloadavg()[0]:.2f}")
    report = {"settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
              "machine": _common.machine_info(), "thread_counts": threads, "results": rows}
    _common.finish_report(report, args.out or _common.REPO / "bench" / "results" / f"add_speed_{ds.name}.json")


if __name__ == "__main__":
    main()
