"""Hostile index files for the loader: bit flips, truncations, crafted headers and crafted arrays.

Shared by tests/test_io.py (a short seeded run) and bench/fuzz_files.py (a long one). Every file
made here must load into a working index or raise IndexFileError, quickly and without allocating
much more than its own size.
"""
from __future__ import annotations

import json
import struct
import zlib

import numpy as np

import turboann as ta
from turboann import io

HOSTILE = [-1, 0, 1, 2, 3, 5, 9, 255, 256, 2 ** 22, 2 ** 31, 2 ** 63 - 1, 2 ** 63, -2 ** 63, 10 ** 30, 8000,
           1e300, 0.5, float("inf"), "x", "", None, True, False, [], {}, [1, 2], {"a": 1}, "auto", "dense",
           "hadamard", "l2", "ip", "cosine", "prod", "residual", "fastscan", "flat"]


def sample_indexes(seed: int = 0) -> dict:
    """Small indexes of every kind and layout files hold: name -> index."""
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((300, 32)) + 0.5).astype(np.float32)
    flat = ta.Index(32, bits=3, metric="l2", variant="prod", keep_vectors=True)
    flat.add(x, ids=np.arange(300) * 3)
    flat.remove([0, 3])
    fast = ta.Index(32, bits=4, metric="cosine")
    fast.add(x)
    compact = ta.Index(32, bits=2, metric="ip", compact=True)
    compact.add(x)
    ivf = ta.IVFIndex(32, nlist=4, bits=2, metric="l2", keep_vectors=True)
    ivf.set_centroids(x[:4])
    ivf.add(x[:200])
    ivf_fast = ta.IVFIndex(32, nlist=3, bits=4, metric="cosine", mode="raw")
    ivf_fast.set_centroids(x[:3])
    ivf_fast.add(x[:100], ids=np.arange(100) + 1000)
    return {"flat": flat, "fastscan": fast, "compact": compact, "ivf": ivf, "ivf_fastscan": ivf_fast}


def file_version(path) -> int:
    """The format version in a file's prefix."""
    with open(path, "rb") as f:
        return struct.unpack("<8sII", f.read(16))[1]


def split(data: bytes):
    """(version, header dict, payload after the header checksum) of a file's bytes."""
    _, version, hlen = struct.unpack("<8sII", data[:16])
    return version, json.loads(data[16:16 + hlen]), data[16 + hlen + 4:]


def join(version: int, meta, payload: bytes, header: bytes | None = None) -> bytes:
    """File bytes with `meta` (or raw `header` bytes) as header and a valid header checksum."""
    header = json.dumps(meta).encode() if header is None else header
    body = struct.pack("<II", version, len(header)) + header
    return b"TURBOANN" + body + struct.pack("<I", zlib.crc32(body) & 0xFFFFFFFF) + payload


def flip(data: bytes, rng) -> bytes:
    out = bytearray(data)
    for _ in range(int(rng.integers(1, 4))):
        out[int(rng.integers(len(out)))] ^= 1 << int(rng.integers(8))
    return bytes(out)


def truncate(data: bytes, rng) -> bytes:
    return data[:int(rng.integers(len(data)))]


def craft_header(data: bytes, rng) -> bytes:
    """The same payload under a header with one field changed, its checksum recomputed."""
    version, meta, payload = split(data)
    pick = lambda seq: seq[int(rng.integers(len(seq)))]  # noqa: E731
    what = int(rng.integers(6))
    if what == 0:      # a setting set to a hostile value (or a new one added)
        meta["settings"][pick(sorted(meta["settings"]) + ["extra"])] = pick(HOSTILE)
    elif what == 1:    # a setting removed
        meta["settings"].pop(pick(sorted(meta["settings"])))
    elif what == 2:    # a field of an array entry set to a hostile value
        pick(meta["arrays"])[pick(["name", "dtype", "shape", "offset", "nbytes", "crc32"])] = pick(HOSTILE)
    elif what == 3:    # an array entry reshaped consistently (same bytes, other shape)
        e = pick(meta["arrays"])
        n = e["nbytes"] // np.dtype(e["dtype"]).itemsize
        divisors = [d for d in range(1, min(n, 64) + 1) if n % d == 0] or [1]
        e["shape"] = pick([[n], [n // pick(divisors), -1], [1, n], [n, 1], [0, 5]])
        if -1 in e["shape"]:
            e["shape"][1] = n // e["shape"][0] if e["shape"][0] else 0
        e["nbytes"] = int(np.prod(e["shape"])) * np.dtype(e["dtype"]).itemsize
    elif what == 4:    # the whole top level replaced
        meta = pick([[], 7, "x", {"kind": "Index"}, {"kind": 1, "settings": {}, "arrays": []},
                     {**meta, "arrays": {}}, {**meta, "arrays": [1, 2]}, {**meta, "settings": []},
                     {**meta, "arrays": meta["arrays"] * 2}, {**meta, "kind": "ShardedIndex"}])
    else:              # deep nesting, which recursive parsers overflow on
        depth = pick([1000, 100_000])
        return join(version, None, payload, header=b"[" * depth + b"]" * depth)
    return join(version, meta, payload)


def craft_arrays(data: bytes, rng, path) -> bytes:
    """A file whose arrays are changed and whose checksums are all recomputed (`io.write_file`)."""
    path.write_bytes(data)
    kind, settings, arrays = io.read_file(path)
    arrays = {k: v.copy() for k, v in arrays.items()}
    pick = lambda seq: seq[int(rng.integers(len(seq)))]  # noqa: E731
    name = pick(sorted(arrays) + ["extra", "mean", "mean_direction", "centroids", "vectors"])
    a = arrays.get(name)
    what = int(rng.integers(6))
    if a is None or what == 0:         # an array added, or replaced by one of another shape or dtype
        arrays[name] = pick([np.zeros(3, np.float32), np.zeros((2, 2), np.uint8), np.zeros(0, np.int64),
                             np.full(32, np.nan, np.float32), np.zeros((300, 32), np.float32)])
    elif what == 1:
        del arrays[name]
    elif what == 2 and a.size:         # one element set to a hostile value
        flat = a.reshape(-1)
        values = ([np.nan, np.inf, -np.inf, 1e38, -1e30, 0.0] if a.dtype == np.float32 else
                  [-1, -7, 2 ** 63 - 1, 2 ** 62, 0, int(flat[0])] if a.dtype == np.int64 else [0, 255, 17])
        flat[int(rng.integers(flat.size))] = pick(values)
    elif what == 3:                    # another dtype
        arrays[name] = a.astype(pick([np.uint8, np.float32, np.int64]))
    elif what == 4 and a.ndim:         # rows dropped or repeated
        arrays[name] = pick([a[:-1], a[1:], np.concatenate([a, a[:1]]), a[:0]])
    elif name == "mean" or name == "mean_direction":   # the centre under the other key
        arrays["mean_direction" if name == "mean" else "mean"] = arrays.pop(name)
    else:
        arrays[name] = a[::-1].copy() if a.ndim else a
    io.write_file(path, kind, settings, arrays, version=split(data)[0])
    return path.read_bytes()


MUTATIONS = ("flip", "truncate", "header", "arrays")


def check_one(path, data: bytes, **load_options) -> str:
    """Write data to path and load it (with `ta.load`'s load_options, e.g. mmap=True): "refused"
    (IndexFileError) or "loaded" (and then searched without error, every id found held). Anything
    else raises."""
    path.write_bytes(data)
    try:
        index = ta.load(path, **load_options)
    except io.IndexFileError:
        return "refused"
    q = np.random.default_rng(1).standard_normal((3, index.dim)).astype(np.float32)
    if getattr(index, "is_trained", True):
        D, I = index.search(q, 5)
        held = set(index.ids.tolist())
        assert all(i == -1 or i in held for i in I.ravel().tolist()), "a search returned an id not held"
        assert not np.isnan(D).any(), "a search returned NaN scores"
    return "loaded"


def run(directory, seed: int, per_file: int, indexes: dict | None = None, mapped: bool = False) -> dict:
    """Apply per_file mutations of each kind to each sample file; counts per (mutation, outcome).

    mapped: also load every mutated file with mmap=True and verify=True, which must refuse exactly
    what `load` refuses, and with mmap=True alone, which must refuse it or give an index that searches
    (it reads no large array at open); counted under (mutation, "mapped " + outcome)."""
    rng = np.random.default_rng(seed)
    counts = {}
    for name, index in (indexes or sample_indexes(seed)).items():
        original = directory / f"{name}.tann"
        index.save(original)
        data = original.read_bytes()
        target = directory / f"{name}-mutated.tann"
        for mutation in MUTATIONS:
            for _ in range(per_file):
                if mutation == "flip":
                    mutated = flip(data, rng)
                elif mutation == "truncate":
                    mutated = truncate(data, rng)
                elif mutation == "header":
                    mutated = craft_header(data, rng)
                else:
                    mutated = craft_arrays(data, rng, directory / f"{name}-crafted.tann")
                outcome = check_one(target, mutated)
                counts[(mutation, outcome)] = counts.get((mutation, outcome), 0) + 1
                if mapped:
                    verified = check_one(target, mutated, mmap=True, verify=True)
                    assert verified == outcome, f"{name} {mutation}: load {outcome}, mmap+verify {verified}"
                    fast = "mapped " + check_one(target, mutated, mmap=True)
                    counts[(mutation, fast)] = counts.get((mutation, fast), 0) + 1
    return counts
