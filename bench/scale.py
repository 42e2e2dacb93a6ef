"""Cost against n: the in-process flat Index against ShardedIndex (Ray) with 1 and 2 shards.

Skeleton of issue 7's scale bench (flat only; IVF and the plot are still to come).
For each n: the wordnet vectors (tiled beyond their count with small seeded
noise), the same queries for every method, all in this one process:

  add        seconds to add the n vectors to an empty index (median of --repeat
             fresh builds) whose actors are up and have loaded kernels and
             codebook (once per process: see _warm; that start-up is not counted)
  QPS        --queries queries in one batch, k=10, median of --repeat, with
             threads=1 per index (per shard for ShardedIndex: 2 shards use 2
             cores) and with all cores
  recall     set recall 10@10 against brute-force cosine top 10 over the n vectors
  B/vec      bytes held per vector (Index.nbytes / n: codes, factors, ids, centre)

    python bench/scale.py [--n 10000,100000] [--bits 4] [--queries 200] [--repeat 3] [--out PATH]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

import numpy as np  # noqa: E402

import turboann as ta  # noqa: E402
from turboann.datasets import load_ann_benchmarks  # noqa: E402

WORDNET = _common.DATASETS / "wordnet-minilm-384-angular.hdf5"
K = 10


def tiled(train: np.ndarray, n: int, seed: int = 0, noise: float = 0.01) -> np.ndarray:
    """n rows: the real rows first, then copies of them plus small seeded Gaussian noise."""
    if n <= train.shape[0]:
        return train[:n]
    rng = np.random.default_rng(seed)
    extra = train[rng.integers(0, train.shape[0], n - train.shape[0])]
    scale = noise * float(np.linalg.norm(train[:1000], axis=1).mean()) / np.sqrt(train.shape[1])
    return np.concatenate([train, extra + scale * rng.standard_normal(extra.shape).astype(np.float32)])


def true_top10(x: np.ndarray, q: np.ndarray) -> np.ndarray:
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    return np.argsort(-(qn @ xn.T), axis=1)[:, :K]


def set_recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / K for f, t in zip(found, truth)]))


def _warm(index, x):
    """The index, after x was added under ids -1..-n and removed again.

    That loads the kernels and the codebook in this process or in every
    shard's actor (once per process) and fixes the centre exactly as adding
    x to a fresh index does; the timed add then measures adding alone.
    """
    ids = -1 - np.arange(len(x))
    index.add(x, ids=ids)
    index.remove(ids)
    return index


def measure(name: str, make, x, q, truth, repeat: int) -> dict:
    indexes = [_warm(make(), x) for _ in range(repeat)]
    add = _common.timed(lambda: indexes.pop().add(x), repeat)
    index = _warm(make(), x)
    index.add(x)
    row = {"method": name, "n": len(x), "add_s": _common.median(add),
           "recall": set_recall(index.search(q, K)[1], truth), "bytes_per_vector": index.nbytes / len(x)}
    for label, threads in (("qps_1t", 1), ("qps_mt", None)):
        t = _common.timed(lambda: index.search(q, K, threads=threads), repeat)
        row[label] = len(q) / _common.median(t)
    if hasattr(index, "close"):
        index.close()
    return row


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(WORDNET))
    ap.add_argument("--n", default="10000,100000")
    ap.add_argument("--bits", type=int, default=4)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", default=str(_common.REPO / "bench" / "results" / "scale.json"))
    args = ap.parse_args(argv)
    import ray
    from turboann.distributed import ShardedIndex

    data = load_ann_benchmarks(args.data, queries=args.queries)
    dim, q = data.train.shape[1], data.test
    # The shard actors import this checkout's turboann too.
    ray.init(include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(_common.REPO)}})
    methods = {
        "Index (in-process)": lambda: ta.Index(dim, bits=args.bits, metric="cosine", seed=0),
        "ShardedIndex 1 shard": lambda: ShardedIndex(dim, shards=1, bits=args.bits, metric="cosine", seed=0),
        "ShardedIndex 2 shards": lambda: ShardedIndex(dim, shards=2, bits=args.bits, metric="cosine", seed=0),
    }
    rows = []
    for n in (int(float(v)) for v in args.n.split(",")):
        x = tiled(data.train, n)
        truth = true_top10(x, q)
        for name, make in methods.items():
            rows.append(measure(name, make, x, q, truth, args.repeat))
            print(rows[-1], flush=True)
    ray.shutdown()
    print(_common.table(rows, [("method", "method", 22, "s"), ("n", "n", 8, "d"), ("add_s", "add s", 7, ".3f"),
                               ("qps_1t", "QPS 1t", 8, ",.0f"), ("qps_mt", "QPS all", 8, ",.0f"),
                               ("recall", "10@10", 6, ".4f"), ("bytes_per_vector", "B/vec", 7, ".1f")]))
    _common.write_json(args.out, {"machine": _common.machine_info(), "args": vars(args), "rows": rows})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
