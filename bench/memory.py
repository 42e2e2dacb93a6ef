"""The memory model, read off the code: bytes per vector in RAM for each bits and layout.

Builds small indexes (--n random vectors of --dim; bytes do not depend on the
data) and divides `nbytes` by n: codes + factors + 8-byte ids (+ the centre;
+ 4 dim + 8 bytes of kept vectors with keep_vectors=True). IVF adds the
centroids (nlist x dim float32, once per index, i.e. once per shard) and keeps
its lists in an arena with slack ("IVF arena": its reserved bytes per vector
after one add, with lists as long as 10^6 vectors make in --nlist lists). The
id -> slot map a store builds on its first remove (a Python dict) is measured
with tracemalloc. Then how many vectors the held bytes of one machine's RAM
would hold (before that slack, query buffers and the OS).

    python bench/memory.py [--dim 384] [--n 32768] [--nlist 4096] [--ram 16,64,256] [--out PATH]
"""
from __future__ import annotations

import argparse
import sys
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

import numpy as np  # noqa: E402

import turboann as ta  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--n", type=int, default=32768)
    p.add_argument("--nlist", type=int, default=4096, help="for the centroids' share at 10^6 vectors")
    p.add_argument("--ram", default="16,64,256", help="GiB")
    p.add_argument("--out", default=str(_common.REPO / "bench" / "results" / "memory.json"))
    return p.parse_args(argv)


def per_vector(make, x) -> tuple[float, float]:
    """(nbytes / n, reserved store bytes / n) of a fresh index after one add of x."""
    index = make()
    if isinstance(index, ta.IVFIndex):
        index.set_centroids(x[:index.nlist])
    index.add(x)
    store = index._store
    reserved = getattr(store, "reserved_bytes", store.nbytes)
    return index.nbytes / len(x), reserved / len(x)


def id_map_bytes(x) -> float:
    """Bytes per vector of the id -> slot dict that a first remove builds."""
    index = ta.Index(x.shape[1], bits=4, center=False)
    index.add(x)
    tracemalloc.start()
    index.remove([0])
    size = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return size / len(x)


def rows(x, nlist: int, ram_gib: list[int]) -> list[dict]:
    dim, out = x.shape[1], []
    lists = max(1, round(len(x) * nlist / 1e6))   # lists as long on average as 10^6 vectors in nlist lists
    specs = [(b, "flat") for b in range(1, 9)] + [(b, "fastscan") for b in (1, 2, 3, 4)]
    for bits, layout in specs:
        held, _ = per_vector(lambda: ta.Index(dim, bits=bits, center=False, layout=layout), x)
        ivf, reserved = per_vector(lambda: ta.IVFIndex(dim, nlist=lists, bits=bits, layout=layout), x)
        row = {"bits": bits, "layout": layout, "index": held,
               "ivf": ivf - lists * dim * 4 / len(x), "ivf_reserved": reserved,
               "auto": "yes" if ta.Index(dim, bits=bits).layout == layout else ""}
        row.update({f"m_{g}": g * 2 ** 30 / row["index"] / 1e6 for g in ram_gib})
        out.append(row)
    return out


def main(argv=None) -> None:
    args = parse_args(argv)
    x = np.random.default_rng(0).standard_normal((args.n, args.dim)).astype(np.float32)
    ram = _common.csv_list(args.ram, int)
    table = rows(x, args.nlist, ram)
    extras = {"keep_vectors": 4 * args.dim + 8, "id_map": id_map_bytes(x),
              "centroids_per_shard_bytes": args.nlist * args.dim * 4}
    columns = [("bits", "bits", 4, "d"), ("layout", "layout", 8, "s"), ("auto", "auto", 4, "s"),
               ("index", "Index B/vec", 11, ".1f"), ("ivf", "IVF B/vec", 9, ".1f"),
               ("ivf_reserved", "IVF arena", 9, ".1f")]
    columns += [(f"m_{g}", f"M in {g} GiB", 12, ",.0f") for g in ram]
    print(f"dim {args.dim}; n = {args.n:,} per index; nbytes / n (IVF: without the centroids); "
          f"M in R GiB: millions of vectors whose held bytes fill R GiB")
    print(_common.table(table, columns))
    print(f"+ keep_vectors: {extras['keep_vectors']} B/vec; + id -> slot map after a first remove: "
          f"{extras['id_map']:.0f} B/vec; IVF centroids: {extras['centroids_per_shard_bytes'] / 2**20:.1f} MiB "
          f"per index (nlist {args.nlist}) = {extras['centroids_per_shard_bytes'] / 1e6:.1f} B/vec at 10^6")
    _common.write_json(args.out, {"machine": _common.machine_info(), "args": vars(args), "rows": table,
                                  "extras": extras})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
