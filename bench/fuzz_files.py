"""Long fuzz of the index-file loader (issue 17): bit flips, truncations, crafted headers and arrays.

    python bench/fuzz_files.py [--per-file N] [--seeds S]

Every mutated file must be refused with IndexFileError or load into an index that searches
(tests/filefuzz.py checks that), and no load may take long or allocate more than a small multiple
of the file's size (peak traced here with tracemalloc). Prints counts per mutation and outcome.

Last run (commit 1049ac2, --per-file 250 --seeds 4, 180 s on a loaded 2-core box): 20,000 files,
no exception but IndexFileError; flips 4,978 refused / 22 loaded, truncations 5,000 / 0, crafted
headers 4,869 / 131, crafted arrays 3,995 / 1,005 (every loaded one searched, ids all held);
slowest load 579 ms; every peak within 17 x the file + 32 MiB.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import _common  # noqa: F401  (puts this checkout first on sys.path)

sys.path.insert(0, str(_common.REPO / "tests"))
import filefuzz  # noqa: E402
import turboann as ta  # noqa: E402

# allowance as in turboann.index_file: 16 x the file plus 32 MiB, and the file itself read once
_LIMIT_PER_BYTE, _LIMIT_FIXED = 17, 32 << 20


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--per-file", type=int, default=250)
    ap.add_argument("--seeds", type=int, default=4)
    args = ap.parse_args()
    counts, worst_ratio, slowest = {}, 0.0, 0.0
    original_load = ta.load

    def watched(path):   # the peak and time of every load
        nonlocal worst_ratio, slowest
        size = Path(path).stat().st_size
        tracemalloc.start()
        t0 = time.perf_counter()
        try:
            return original_load(path)
        finally:
            slowest = max(slowest, time.perf_counter() - t0)
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            assert peak <= _LIMIT_PER_BYTE * size + _LIMIT_FIXED, (path, peak, size)
            worst_ratio = max(worst_ratio, peak / max(size, 1))

    filefuzz.ta.load = watched
    t0 = time.perf_counter()
    for seed in range(args.seeds):
        with tempfile.TemporaryDirectory() as d:
            for key, c in filefuzz.run(Path(d), seed=1000 + seed, per_file=args.per_file).items():
                counts[key] = counts.get(key, 0) + c
    total = sum(counts.values())
    print(f"{total:,} files ({args.seeds} seeds x 5 sample indexes x 4 mutations x {args.per_file}), "
          f"{time.perf_counter() - t0:.0f} s; no other exception")
    for m in filefuzz.MUTATIONS:
        print(f"  {m:<9} refused {counts.get((m, 'refused'), 0):>6,}  loaded and searched "
              f"{counts.get((m, 'loaded'), 0):>6,}")
    print(f"  slowest load {slowest * 1e3:.0f} ms; largest traced peak {worst_ratio:.1f} x the file's size")


if __name__ == "__main__":
    main()
