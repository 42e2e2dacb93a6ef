#!/usr/bin/env python3
"""Write the embedded default dataset: a seeded subset of wordnet-minilm-384-angular.

    python datasets/make_subset.py [SOURCE.hdf5]    (default ../shared/datasets/wordnet-minilm-384-angular.hdf5)

Takes a seeded uniform sample of TRAIN_ROWS train rows (kept in their original
order) and the first QUERIES test rows of the source file, recomputes the exact
100 nearest neighbours over the subset (float64 brute force, ties to the lower
index: `turboann.datasets.exact_ground_truth`), and writes
datasets/wordnet-minilm-384-angular-10k.hdf5 in the ann-benchmarks layout
(gzip-compressed, read transparently by h5py), atomically. Same source, same
file: the sample and the ground truth are deterministic.
"""
import sys
from pathlib import Path

import h5py
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from turboann import datasets  # noqa: E402

SOURCE = HERE.parent.parent / "shared" / "datasets" / "wordnet-minilm-384-angular.hdf5"
SEED = 20261123
TRAIN_ROWS = 10_000
QUERIES = 500


def main() -> None:
    source = Path(sys.argv[1]) if len(sys.argv) > 1 else SOURCE
    info = datasets.inspect(source)
    with h5py.File(source, "r") as f:
        rows = np.sort(np.random.default_rng(SEED).choice(info["n"], TRAIN_ROWS, replace=False))
        train = f["train"][:][rows]
        test = f["test"][:QUERIES]
    neighbors, distances = datasets.exact_ground_truth(train, test, info["distance"])
    out = HERE / f"{datasets.EMBEDDED_NAME}.hdf5"
    datasets.write_ann_benchmarks(
        out, train, test, neighbors, distances, info["distance"], compress=True,
        attrs={"source": source.name, "seed": SEED,
               "subset": f"train: seeded sample of {TRAIN_ROWS} of {info['n']} rows; test: first {QUERIES} rows; "
                         f"ground truth exact over the subset"})
    print(f"{out}: train {train.shape}, test {test.shape}, {info['distance']}, {out.stat().st_size:,} bytes")


if __name__ == "__main__":
    main()
