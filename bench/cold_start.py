"""Cold start: the first add and the first search of a fresh process with an empty Numba cache.

Each case runs in a child process with NUMBA_CACHE_DIR pointing at a new empty
folder, so every kernel the two calls need is compiled then; a second child
with the same folder shows the cached start. Then `turboann warmup` fills one
more new folder, timed, and a child per width starts from it: the first add and
search a user sees after the documented warm-up step. Prints seconds for import,
the first add and the first search (n rows of dim, seeded Gaussian, 100 queries,
then one) and writes JSON.

    python bench/cold_start.py [--bits 3,4,8] [--dim 384] [--n 20000] [--no-cold]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import numpy as np
import turboann as ta
t1 = time.perf_counter()
dim, bits, n = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
rng = np.random.default_rng(0)
x = rng.standard_normal((n, dim)).astype(np.float32)
idx = ta.Index(dim, bits)
idx.add(x)
t2 = time.perf_counter()
idx.search(x[:100], 10)
t3 = time.perf_counter()
idx.search(x[:1], 10)
t4 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "add_s": t2 - t1, "search_s": t3 - t2, "single_s": t4 - t3}))
"""


def _child(args: list[str], cache: str) -> subprocess.CompletedProcess:
    """Python run with `args` in a child whose Numba cache is the folder `cache`; raises on failure."""
    env = dict(os.environ, NUMBA_CACHE_DIR=cache, PYTHONPATH=str(_common.REPO))
    done = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(done.stderr[-2000:])
    return done


def run(dim: int, bits: int, n: int, cache: str) -> dict:
    done = _child(["-c", CHILD, str(dim), str(bits), str(n)], cache)
    return json.loads(done.stdout.strip().splitlines()[-1])


def warmup(cache: str) -> float:
    """Seconds `turboann warmup` takes to fill the empty Numba cache folder `cache`."""
    start = time.perf_counter()
    done = _child(["-m", "turboann.cli", "warmup"], cache)
    print(done.stderr.strip(), flush=True)
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--bits", default="3,4,8")
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--n", type=int, default=20000)
    p.add_argument("--no-cold", action="store_true", help="only the start after `turboann warmup`")
    p.add_argument("--out", type=Path, default=_common.REPO / "bench" / "results" / "cold_start.json")
    args = p.parse_args()
    rows, widths = [], _common.csv_list(args.bits, int)
    for bits in [] if args.no_cold else widths:
        with tempfile.TemporaryDirectory() as cache:
            cold = run(args.dim, bits, args.n, cache)
            warm = run(args.dim, bits, args.n, cache)
        rows.append({"bits": bits, **{f"cold_{k}": v for k, v in cold.items()},
                     **{f"warm_{k}": v for k, v in warm.items()}})
        r = rows[-1]
        print(f"bits {bits}: cold import {r['cold_import_s']:.1f} s, add {r['cold_add_s']:.1f} s, search "
              f"{r['cold_search_s']:.1f} s (first add + search {r['cold_add_s'] + r['cold_search_s']:.1f} s); "
              f"cached: add {r['warm_add_s']:.2f} s, search {r['warm_search_s']:.2f} s", flush=True)
    with tempfile.TemporaryDirectory() as cache:
        warm_s = warmup(cache)
        print(f"turboann warmup (all widths, flat and IVF): {warm_s:.0f} s", flush=True)
        after = []
        for bits in widths:
            r = run(args.dim, bits, args.n, cache)
            after.append({"bits": bits, **r})
            print(f"bits {bits} after warmup: import {r['import_s']:.1f} s, add {r['add_s']:.2f} s, search "
                  f"{r['search_s']:.2f} s, single {r['single_s']:.3f} s (first add + search "
                  f"{r['add_s'] + r['search_s']:.1f} s)", flush=True)
    _common.write_json(args.out, {"settings": vars(args) | {"out": str(args.out)}, "machine": _common.machine_info(),
                                  "results": rows, "warmup_s": warm_s, "after_warmup": after})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
