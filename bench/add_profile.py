"""Where turboann's Index.add spends its time, by phase, on one ann-benchmarks file.

At each bit width and thread count (1 and --mt-threads), Index(dim, bits)
is built from the whole train set --repeat times, each build after the
previous one is freed (as bench/core_recall.py does), the configurations
interleaved round-robin so that load changes on a shared machine hit them
alike. The phases are timed by wrapping the Index's own steps, so the total
is the real add:

  centre    the mean direction from the first add (index._estimate_centre)
  encode    rotation, checks' norms, bucketing and packing into the store
            (TurboQuantMSE._encode_into: kernels.encode.encode_lanes)
  store     reserving room for the codes (store.code_target) and committing
            factors and ids (store.commit)
  rest      everything else: argument checks, scan factors, the centre's rotation
  read x    one streaming pass over x (a float32 sum), for scale: the memory floor

Medians over the repeats. OpenMP/Numba threads wait passively unless the
environment says otherwise (see bench/fastscan.py).

    python bench/add_profile.py [--data PATH] [--bits 2,3,4] [--repeat 7] [--mt-threads 2] [--out PATH]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "passive")

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

import numba  # noqa: E402
import numpy as np  # noqa: E402

import turboann as ta  # noqa: E402
from turboann import datasets, index, quantizer, store  # noqa: E402

DEFAULT_DATA = _common.DATASETS / "wordnet-minilm-384-angular.hdf5"
# (phase, owner, attribute): the steps of Index.add that are timed
PHASES = [("centre", index, "_estimate_centre"), ("encode", quantizer.TurboQuantMSE, "_encode_into"),
          ("store", store.CodeStore, "code_target"), ("store", store.BlockedCodeStore, "code_target"),
          ("store", store.CodeStore, "commit"), ("store", store.BlockedCodeStore, "commit")]
COLUMNS = [("bits", "bits", 4, "d"), ("threads", "threads", 7, "d"), ("add_ms", "add ms", 7, ".1f"),
           ("centre_ms", "centre", 7, ".1f"), ("encode_ms", "encode", 7, ".1f"), ("store_ms", "store", 6, ".1f"),
           ("rest_ms", "rest", 6, ".1f"), ("read_ms", "read x", 7, ".1f"), ("vps", "vec/s", 10, ",.0f")]


@contextmanager
def timed_phases(spent: dict):
    """Time the PHASES while inside, adding seconds to spent[phase]; the originals come back after."""
    saved = [(owner, name, owner.__dict__[name]) for _, owner, name in PHASES]

    def wrap(phase, fn):
        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[phase] = spent.get(phase, 0.0) + time.perf_counter() - t0
        return timed
    for phase, owner, name in PHASES:
        setattr(owner, name, wrap(phase, owner.__dict__[name]))
    try:
        yield
    finally:
        for owner, name, fn in saved:
            setattr(owner, name, fn)


@numba.njit(cache=True, nogil=True, fastmath=True)
def _read(flat):
    s = np.float32(0.0)
    for i in range(flat.shape[0]):
        s += flat[i]
    return s


def build_once(x: np.ndarray, bits: int) -> dict:
    spent = {}
    idx = ta.Index(x.shape[1], bits=bits)
    with timed_phases(spent):
        t0 = time.perf_counter()
        idx.add(x)
        spent["add"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    _read(x.reshape(-1))
    spent["read"] = time.perf_counter() - t0
    return spent


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="ann-benchmarks HDF5 file")
    p.add_argument("--bits", default="2,3,4")
    p.add_argument("--repeat", type=int, default=7)
    p.add_argument("--mt-threads", type=int, default=numba.config.NUMBA_NUM_THREADS)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    ds = datasets.load_ann_benchmarks(args.data)
    x = ds.train
    configs = [(b, t) for b in _common.csv_list(args.bits, int) for t in sorted({1, args.mt_threads})]
    for bits, threads in configs:   # untimed warm-up: compilation, first-touch of memory
        numba.set_num_threads(threads)
        build_once(x[:5000], bits)
    runs = {c: [] for c in configs}
    for _ in range(args.repeat):
        for bits, threads in configs:
            numba.set_num_threads(threads)
            runs[bits, threads].append(build_once(x, bits))
    rows = []
    for (bits, threads), spent in runs.items():
        row = {"bits": bits, "threads": threads, "runs": spent}
        for key in ("add", "centre", "encode", "store", "read"):
            row[f"{key}_ms"] = 1e3 * _common.median([s.get(key, 0.0) for s in spent])
        row["rest_ms"] = 1e3 * _common.median([s["add"] - s.get("centre", 0.0) - s.get("encode", 0.0)
                                               - s.get("store", 0.0) for s in spent])
        row["vps"] = x.shape[0] / (row["add_ms"] / 1e3)
        rows.append(row)
    out = args.out or _common.REPO / "bench" / "results" / f"add_profile_{ds.name}.json"
    report = {"settings": {"data": str(args.data), "n": x.shape[0], "dim": x.shape[1], "repeat": args.repeat,
                           "bits": args.bits, "mt_threads": args.mt_threads},
              "machine": _common.machine_info(), "results": rows}
    _common.finish_report(report, out)
    print(f"{ds.name}: n={x.shape[0]} d={x.shape[1]}; Index(dim, bits).add(train), median of {args.repeat} "
          f"(ms); load average at end {report['load_average_end'][0]:.2f}")
    print(_common.table(rows, COLUMNS))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
