"""Memory-mapped indexes: `load(path, mmap=True)` maps the arrays, gives the results a normal load
gives, is read-only as documented, refuses corrupt files as `load` does, and serves processes."""
import hashlib
import json
import mmap
import os
import subprocess
import sys

import numpy as np
import pytest

import turboann as ta
from turboann import io

import filefuzz  # tests/filefuzz.py
from conftest import clustered

DIM = 32


@pytest.fixture(scope="module")
def data():
    x = clustered(1300, DIM, seed=21, offset=0.5)
    return x[:1200], x[1200:]


def _indexes(x):
    """One index of every form a file holds its codes in: name -> index."""
    flat = ta.Index(DIM, bits=3, metric="l2", keep_vectors=True)            # row-major, integer engine
    fast = ta.Index(DIM, bits=4, metric="cosine", keep_vectors=True)        # fast-scan blocks
    compact = ta.Index(DIM, bits=2, metric="ip", compact=True)              # blocks, packed factors
    ivf = ta.IVFIndex(DIM, nlist=6, bits=3, metric="ip", keep_vectors=True)  # row-major lists
    ivf_fast = ta.IVFIndex(DIM, nlist=6, bits=2, metric="l2", keep_vectors=True)  # an arena of blocks
    for index in (ivf, ivf_fast):
        index.set_centroids(x[::200][:6])
    for index in (flat, fast, compact, ivf, ivf_fast):
        index.add(x, ids=np.arange(len(x)) * 5 + 3)
        index.remove([3, 8, 5998])
    return {"flat": flat, "fast": fast, "compact": compact, "ivf": ivf, "ivf_fast": ivf_fast}


@pytest.fixture(scope="module")
def saved(data, tmp_path_factory):
    x, _ = data
    directory = tmp_path_factory.mktemp("mapped")
    out = {}
    for name, index in _indexes(x).items():
        path = directory / f"{name}.tann"
        index.save(path)
        out[name] = (index, path)
    return out


def _searches(index, q):
    """Results of plain, filtered and (where vectors are kept) re-ranked searches."""
    kw = {"nprobe": 6} if isinstance(index, ta.IVFIndex) else {}
    allowed = np.arange(3, 6000, 15)
    out = [index.search(q, 10, **kw), index.search(q, 10, filter=allowed, **kw)]
    if index.keep_vectors:
        out.append(index.search(q, 10, rerank=30, filter=allowed, **kw))
    return out


def _mapped_base(a: np.ndarray):
    """The mmap.mmap an array views, or None."""
    while a is not None and not isinstance(a, mmap.mmap):
        a = getattr(a, "base", None) if isinstance(a, np.ndarray) else getattr(a, "obj", None)
    return a


@pytest.mark.parametrize("name", ["flat", "fast", "compact", "ivf", "ivf_fast"])
def test_mapped_load_gives_identical_results_without_copying(saved, data, name):
    index, path = saved[name]
    _, q = data
    mapped = ta.load(path, mmap=True)
    assert mapped.read_only and not ta.load(path).read_only
    assert len(mapped) == len(index) and type(mapped) is type(index)
    np.testing.assert_array_equal(mapped.ids, index.ids)
    for (D1, I1), (D2, I2) in zip(_searches(index, q), _searches(mapped, q)):
        np.testing.assert_array_equal(I2, I1)
        np.testing.assert_array_equal(D2, D1)
    store = mapped._store
    codes = store.blocks if mapped.layout == "fastscan" else store.codes
    held = [codes, store._ids] + ([mapped._vectors.vectors] if mapped.keep_vectors else [])
    if mapped.layout == "fastscan":
        held.append(store.split_factors())
    for a in held:   # views of the file's map, 64-byte aligned: nothing was copied
        assert _mapped_base(a) is not None and a.ctypes.data % 64 == 0


def test_mapped_index_is_read_only(saved, data, tmp_path):
    x, q = data
    for name in ("fast", "ivf_fast"):
        _, path = saved[name]
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        mapped = ta.load(path, mmap=True, verify=True)
        before = mapped.search(q, 5)
        calls = [("add", lambda: mapped.add(x[:3])), ("remove", lambda: mapped.remove([13]))]
        if name == "ivf_fast":
            calls += [("train", lambda: mapped.train(x)), ("set_centroids", lambda: mapped.set_centroids(x[:6]))]
        for action, call in calls:
            with pytest.raises(ta.ReadOnlyIndexError, match=f"{action} needs a writable index"):
                call()
        with pytest.raises(ta.ReadOnlyIndexError, match="is the file this index maps read-only"):
            mapped.save(path)
        assert len(mapped) == len(saved[name][0])
        np.testing.assert_array_equal(mapped.search(q, 5)[1], before[1])
        assert hashlib.sha256(path.read_bytes()).hexdigest() == digest   # the file never changes
        copy = tmp_path / f"{name}-copy.tann"
        mapped.save(copy)   # elsewhere: a normal file, loaded writable
        again = ta.load(copy)
        np.testing.assert_array_equal(again.search(q, 5)[1], before[1])
        again.add(x[:3], ids=[1, 2, 4])
        assert len(again) == len(mapped) + 3


def test_normal_load_of_blocked_files_stays_writable(data, tmp_path):
    """Version-3 arrays read into memory: adds and removes work, as on the index that was saved."""
    x, q = data
    for name, index in _indexes(x).items():
        index.save(tmp_path / "w.tann")
        loaded = ta.load(tmp_path / "w.tann")
        for ix in (index, loaded):
            ix.add(x[:40] + 0.5, ids=np.arange(40) + 10 ** 6)
            ix.remove([13, 10 ** 6 + 3])
        kw = {"nprobe": 6} if isinstance(index, ta.IVFIndex) else {}
        np.testing.assert_array_equal(loaded.search(q, 10, **kw)[1], index.search(q, 10, **kw)[1])


def test_old_files_map_too(saved, data, tmp_path):
    """Files of versions 1 and 2 (row-major codes, concatenated lists) load with mmap=True."""
    _, q = data
    for name in ("fast", "ivf_fast"):
        index, _ = saved[name]
        kind, settings, arrays = io.read_file(saved[name][1])
        old = {"codes": index._store.codes[index._store.positions()] if name == "ivf_fast" else index._store.codes}
        if name == "ivf_fast":
            held = arrays["arena_ids"] >= 0
            old.update(factors=arrays["arena_factors"][held], ids=arrays["arena_ids"][held])
        else:
            old.update(factors=arrays["factors"], ids=arrays["ids"])
        old.update({n: a for n, a in arrays.items() if n in ("next_id", "list_sizes", "centroids", "vectors",
                                                               "mean_direction", "spread", "factor_scale")})
        path = tmp_path / f"{name}-v2.tann"
        io.write_file(path, kind, settings, old, version=2)
        for loaded in (ta.load(path), ta.load(path, mmap=True)):
            for (D1, I1), (D2, I2) in zip(_searches(index, q), _searches(loaded, q)):
                np.testing.assert_array_equal(I2, I1)


def test_mapped_load_checks_header_table_and_small_arrays(saved, tmp_path):
    """Without verify a mapped load reads no large array, yet refuses a bad header, array table or
    list sizes; a flipped code byte is found by verify=True (and by a normal load)."""
    _, path = saved["ivf_fast"]
    data = path.read_bytes()
    bad = tmp_path / "bad.tann"
    bad.write_bytes(data[:len(data) // 2])
    with pytest.raises(io.IndexFileError, match="truncated"):
        ta.load(bad, mmap=True)
    flipped = bytearray(data)
    flipped[20] ^= 1
    bad.write_bytes(bytes(flipped))
    with pytest.raises(io.IndexFileError, match="header checksum"):
        ta.load(bad, mmap=True)
    _, meta, _ = filefuzz.split(data)
    entry = next(e for e in meta["arrays"] if e["name"] == "arena_blocks")
    flipped = bytearray(data)
    flipped[io._aligned(16 + len(json.dumps(meta, sort_keys=True)) + 4) + entry["offset"] + 5] ^= 4
    bad.write_bytes(bytes(flipped))
    assert len(ta.load(bad, mmap=True)) == len(saved["ivf_fast"][0])   # not read at open
    for options in ({}, {"mmap": True, "verify": True}):
        with pytest.raises(io.IndexFileError, match="checksum mismatch in array 'arena_blocks'"):
            ta.load(bad, **options)
    kind, settings, arrays = io.read_file(path)
    arrays = {n: a.copy() for n, a in arrays.items()}
    sizes = arrays["list_sizes"]
    plain = {n: a for n, a in arrays.items() if n != "vectors"}   # the list sizes alone disagree
    io.write_file(bad, kind, {**settings, "keep_vectors": False},
                  {**plain, "list_sizes": sizes + np.where(np.arange(len(sizes)) == 0, 40, 0)})
    with pytest.raises(io.IndexFileError, match="list sizes do not match the arena of"):
        ta.load(bad, mmap=True)
    ids = arrays["arena_ids"].copy()
    ids[np.flatnonzero(ids < 0)[0]] = 77   # a padding position claims an id
    io.write_file(bad, kind, settings, {**arrays, "arena_ids": ids})
    with pytest.raises(io.IndexFileError, match="arena ids do not mark the lists' vectors"):
        ta.load(bad, mmap=True, verify=True)
    io.write_file(bad, kind, settings, {**arrays, "split_factors": arrays["split_factors"] * 2})
    with pytest.raises(io.IndexFileError, match="split factors are not those of the factors"):
        ta.load(bad)
    io.write_file(bad, kind, settings, arrays, version=2)
    with pytest.raises(io.IndexFileError, match="'arena_blocks' is not part of a version-2 IVFIndex file"):
        ta.load(bad, mmap=True)
    with pytest.raises(TypeError, match="mmap must be True or False"):
        ta.load(path, mmap="yes")


def test_fuzzed_files_are_refused_alike_when_mapped(tmp_path):
    """Every mutated file: mmap+verify refuses exactly what load refuses; mmap alone refuses it or
    gives an index that searches."""
    counts = filefuzz.run(tmp_path, seed=29, per_file=4, mapped=True)
    assert sum(v for (m, o), v in counts.items() if not o.startswith("mapped")) == 5 * 4 * 4
    assert sum(v for (m, o), v in counts.items() if o == "mapped refused") >= 30, counts


_CHILD = """
import json, sys
import numpy as np
import turboann as ta
index = ta.load(sys.argv[1], mmap=True)
q = np.load(sys.argv[2])
D, I = index.search(q, 10, filter=np.arange(0, 6000, 3))
print(json.dumps({"I": I.tolist(), "read_only": index.read_only}))
"""


def test_two_processes_search_one_mapped_file(saved, data, tmp_path):
    index, path = saved["fast"]
    _, q = data
    np.save(tmp_path / "q.npy", q)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.path.dirname(os.path.dirname(ta.__file__)),
                                                         os.environ.get("PYTHONPATH", "")])}
    children = [subprocess.Popen([sys.executable, "-c", _CHILD, str(path), str(tmp_path / "q.npy")], env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    want = index.search(q, 10, filter=np.arange(0, 6000, 3))[1]
    for child in children:
        out, err = child.communicate(timeout=300)
        assert child.returncode == 0, err
        got = json.loads(out.strip().splitlines()[-1])
        assert got["read_only"]
        np.testing.assert_array_equal(np.array(got["I"]), want)
