"""ShardedIndex on a local Ray instance: equal to one index, round trips, dead shards, errors.

Ray (with Ray Data) is in the test extra, so CI (CI set) must have it and fails without it;
elsewhere these tests skip when it is missing.
"""
import importlib
import json
import os
import re
import warnings

import numpy as np
import pytest


def _import_or_skip(module: str):
    if os.environ.get("CI"):
        return importlib.import_module(module)
    return pytest.importorskip(module)


ray = _import_or_skip("ray")

import turboann as ta  # noqa: E402
from turboann.distributed import (PartialResultWarning, ShardedIndex, ShardUnavailableError,  # noqa: E402
                                  merge_top_k, shard_of)

from conftest import clustered  # noqa: E402

DIM = 32
K = 10


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def data():
    x = clustered(720, DIM, seed=5, clusters=8, offset=1.0)
    return x[:700], x[700:]


def assert_same_results(got, want):
    (Dg, Ig), (Dw, Iw) = got, want
    np.testing.assert_array_equal(Ig, Iw)
    np.testing.assert_allclose(Dg, Dw, rtol=1e-5, atol=1e-5)


# The single index searches first in each test: its process compiles any kernel not yet in
# Numba's cache, and the shard actors then load it instead of each compiling it again.

@pytest.mark.parametrize("shards,metric", [(1, "cosine"), (2, "l2")])
def test_equals_single_index(data, shards, metric):
    x, q = data
    ids = np.arange(len(x), dtype=np.int64) * 3 + 7
    # center="auto": the driver estimates the centre from the first add as the single index does.
    single = ta.Index(DIM, bits=3, metric=metric, seed=4, keep_vectors=True)
    single.add(x, ids)
    want, want_padded = single.search(q, K), single.search(q, 800)
    rng = np.random.default_rng(shards)
    filters = [rng.choice(ids, m, replace=False) for m in (1, 30, 700)]
    want_filtered = [(single.search(q, K, filter=f), single.search(q, K, filter=f, rerank=40)) for f in filters]
    sh = ShardedIndex(DIM, shards=shards, bits=3, metric=metric, seed=4, keep_vectors=True)
    sh.add(x, ids)
    assert len(sh) == len(x)
    np.testing.assert_array_equal(sh.mean, single.mean)
    assert_same_results(sh.search(q, K), want)
    # Fewer vectors than k: padded exactly like the single index.
    assert_same_results(sh.search(q, 800), want_padded)
    # Filtered (and re-ranked): each shard gets its allowed ids, the merge is the single index's.
    for f, (plain, reranked) in zip(filters, want_filtered):
        assert_same_results(sh.search(q, K, filter=f), plain)
        assert_same_results(sh.search(q, K, filter=f, rerank=40), reranked)
    sh.close()


def test_ivf_shards_equal_single_ivf_index(data):
    x, q = data
    single = ta.IVFIndex(DIM, nlist=8, bits=4, metric="ip", seed=1)
    single.train(x, threads=1)
    single.add(x)
    want = {nprobe: single.search(q, K, nprobe=nprobe) for nprobe in (2, 8)}
    allowed = np.arange(0, 700, 9)
    want_filtered = single.search(q, K, nprobe=8, filter=allowed)
    trained = ShardedIndex(DIM, shards=2, bits=4, metric="ip", seed=1, ivf={"nlist": 8})
    with pytest.raises(ValueError, match="must be trained before add"):
        trained.add(x)
    trained.train(x, threads=1)
    given = ShardedIndex(DIM, shards=1, bits=4, metric="ip", seed=1, ivf={"nlist": 8})
    given.set_centroids(single.centroids)
    for sh in (trained, given):
        sh.add(x)
        for nprobe in (2, 8):
            assert_same_results(sh.search(q, K, nprobe=nprobe), want[nprobe])
        assert_same_results(sh.search(q, K, nprobe=8, filter=allowed), want_filtered)
        with pytest.raises(ValueError, match="set_centroids must come before add: the index already holds 700"):
            sh.set_centroids(single.centroids)
        sh.close()
    flat = ShardedIndex(DIM, shards=1, bits=4, metric="ip", seed=1)
    with pytest.raises(ValueError, match="set_centroids applies to IVF shards only"):
        flat.set_centroids(single.centroids)
    flat.close()


def test_mapped_load_searches_alike_and_refuses_writes(data, tmp_path):
    x, q = data
    sh = ShardedIndex(DIM, shards=2, bits=4, metric="cosine", seed=0)
    sh.add(x)
    want = sh.search(q, K)
    sh.save(tmp_path / "sh")
    sh.close()
    mapped = ShardedIndex.load(tmp_path / "sh", mmap=True)
    assert_same_results(mapped.search(q, K), want)
    for call in (lambda: mapped.add(x[:3]), lambda: mapped.remove([0]), lambda: mapped.save(tmp_path / "sh")):
        with pytest.raises(ta.ReadOnlyIndexError, match="read-only"):
            call()
    assert len(mapped) == len(x)
    mapped.save(tmp_path / "copy")             # a save elsewhere is a normal, writable copy
    mapped.close()
    copy = ShardedIndex.load(tmp_path / "copy")
    copy.add(x[:3])
    assert len(copy) == len(x) + 3
    copy.close()
    with pytest.raises(TypeError, match="mmap must be True or False, got str"):
        ShardedIndex.load(tmp_path / "copy", mmap="yes")


def test_add_remove_save_load_round_trip(data, tmp_path):
    x, q = data
    single = ta.Index(DIM, bits=4, metric="cosine", seed=0, keep_vectors=True)
    sh = ShardedIndex(DIM, shards=2, bits=4, metric="cosine", seed=0, keep_vectors=True)
    for index in (single, sh):
        index.add(x[:400])                      # default ids 0..399
        index.add(x[400:500], np.arange(1000, 1100))
        index.add(x[500:])                      # continues from 1100
    gone = np.array([3, 1000, 1150, 42])
    assert sh.remove(gone) == single.remove(gone) == 4
    assert sh.remove([3, 5], missing="ignore") == single.remove([3, 5], missing="ignore") == 1
    assert len(sh) == len(single) == 695
    want = single.search(q, K, rerank=40)
    assert_same_results(sh.search(q, K, rerank=40), want)

    sh.save(tmp_path / "sh")
    sh.add(x[:5])                               # after the save: must not appear in the reload
    sh.save(tmp_path / "sh")                    # a second save replaces the first's files
    names = sorted(os.listdir(tmp_path / "sh"))
    assert len(names) == 3 and "manifest.json" in names
    again = ShardedIndex.load(tmp_path / "sh")
    assert len(again) == 700
    assert again.remove(np.arange(1300, 1305)) == 5
    assert_same_results(again.search(q, K, rerank=40), want)
    again.add(x[:1])
    single.add(x[:1])
    assert_same_results(again.search(q, K), single.search(q, K))
    sh.close()
    again.close()

    shard_file = tmp_path / "sh" / next(n for n in names if n.startswith("shard-00001"))
    good = shard_file.read_bytes()
    shard_file.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    with pytest.raises(ta.IndexFileError, match="checksum mismatch"):
        ShardedIndex.load(tmp_path / "sh")
    shard_file.write_bytes(good)
    manifest = json.loads((tmp_path / "sh" / "manifest.json").read_text())
    manifest["count"] += 1
    (tmp_path / "sh" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ta.IndexFileError, match="do not agree"):
        ShardedIndex.load(tmp_path / "sh")


def test_bad_input_raises_the_single_index_errors(data):
    x, q = data
    single = ta.Index(DIM, bits=4, metric="cosine", seed=0)
    single.add(x[:50])
    sh = ShardedIndex(DIM, shards=2, bits=4, metric="cosine", seed=0)
    sh.add(x[:50])
    zero = np.zeros((2, DIM), np.float32)
    calls = [
        lambda i: i.add(x[:3, :5]),
        lambda i: i.add(x[:3], ids=[1, 2, 2]),
        lambda i: i.add(x[:3], ids=[60, 7, 61]),      # 7 is present
        lambda i: i.add(zero),
        lambda i: i.add(x[:3].astype(str)),
        lambda i: i.search(q[:, :5], K),
        lambda i: i.search(q, 0),
        lambda i: i.search(q, 2.5),
        lambda i: i.search(q, K, rerank=20),          # no kept vectors
        lambda i: i.remove([4, 9999]),                # unknown id
        lambda i: i.remove([4], missing="skip"),
    ]
    for call in calls:
        with pytest.raises((ValueError, TypeError)) as want:
            call(single)
        with pytest.raises(want.type, match=re.escape(str(want.value))):
            call(sh)
    assert len(sh) == len(single) == 50       # nothing half-done
    assert_same_results(sh.search(q, K), single.search(q, K))
    sh.close()


def test_dead_shard_is_named_or_left_out(data, tmp_path):
    x, q = data
    sh = ShardedIndex(DIM, shards=2, bits=4, metric="l2", seed=0)
    sh.add(x)
    sh.save(tmp_path / "before")
    ray.kill(sh.actors[1])
    with pytest.raises(ShardUnavailableError, match="shard 1 of 2") as err:
        sh.search(q, K)
    assert err.value.shard == 1
    with pytest.warns(PartialResultWarning, match=r"dead shards \[1\]"):
        D, I = sh.search(q, K, allow_partial=True)
    assert sh.last_missing_shards == (1,)
    # The live shard's answer is exactly a single index holding shard 0's vectors.
    ids = np.arange(len(x))
    live = ids[shard_of(ids, 2) == 0]
    single = ta.Index(DIM, bits=4, metric="l2", seed=0, center=sh.mean, spread=sh.spread)
    single.add(x[live], live)
    assert_same_results((D, I), single.search(q, K))
    # Nothing saved is lost.
    restored = ShardedIndex.load(tmp_path / "before")
    assert len(restored) == len(x)
    full = ta.Index(DIM, bits=4, metric="l2", seed=0)
    full.add(x)
    assert_same_results(restored.search(q, K), full.search(q, K))
    restored.close()
    sh.close()


class _NumpyBatches:
    """Stands in for a ray.data.Dataset, recording the batch sizes asked for: iter_batches as
    Ray Data's, numpy batch format."""

    def __init__(self, columns):
        self.columns = columns
        self.batch_sizes = []

    def iter_batches(self, *, batch_size, batch_format):
        assert batch_format == "numpy"
        n = len(next(iter(self.columns.values())))
        for lo in range(0, n, batch_size):
            self.batch_sizes.append(min(batch_size, n - lo))
            yield {name: col[lo:lo + batch_size] for name, col in self.columns.items()}


def test_add_dataset_streams_batches(data):
    x, q = data
    ids = np.arange(len(x), dtype=np.int64) + 500
    ds = _NumpyBatches({"emb": x, "key": ids})
    sh = ShardedIndex(DIM, shards=2, bits=4, metric="ip", seed=0, center=False)
    assert sh.add_dataset(ds, column="emb", id_column="key", batch_size=256) == len(x)
    assert ds.batch_sizes == [256, 256, 188]
    single = ta.Index(DIM, bits=4, metric="ip", seed=0, center=False)
    single.add(x, ids)
    assert_same_results(sh.search(q, K), single.search(q, K))
    with pytest.raises(ValueError, match="dataset must have columns 'vec'"):
        sh.add_dataset(ds, column="vec")
    sh.close()


@pytest.fixture
def rd():
    """ray.data, progress bars off. Its DataContext warns about its own deprecated settings."""
    module = _import_or_skip("ray.data")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="ray")
        module.DataContext.get_current().enable_progress_bars = False
    return module


def test_add_dataset_streams_a_ray_dataset(data, rd):
    """A real Ray Dataset, in both forms Ray Data gives vectors in a numpy batch: a tensor
    column ((n, dim) float32) and a list column ((n,) object array of float64 rows)."""
    x, q = data
    ids = np.arange(len(x), dtype=np.int64) * 2 + 1
    single = ta.Index(DIM, bits=4, metric="cosine", seed=0, center=False)
    single.add(x, ids)
    tensor = rd.from_items([{"emb": row, "key": i} for row, i in zip(x, ids)], override_num_blocks=3)
    listed = rd.from_items([{"emb": row.tolist(), "key": int(i)} for row, i in zip(x, ids)])
    for ds in (tensor, listed):
        sh = ShardedIndex(DIM, shards=2, bits=4, metric="cosine", seed=0, center=False)
        sizes = []
        add = sh.add
        sh.add = lambda xb, ib: (sizes.append(len(xb)), add(xb, ib))
        assert sh.add_dataset(ds, column="emb", id_column="key", batch_size=300) == len(x)
        assert sum(sizes) == len(x) and max(sizes) <= 300 and len(sizes) >= 3   # batch by batch
        assert_same_results(sh.search(q, K), single.search(q, K))
        sh.close()


def test_add_dataset_bad_columns_name_the_column(data, rd):
    x, _ = data
    rows = [{"emb": x[i].tolist(), "key": i} for i in range(40)]
    rows[25]["emb"] = rows[25]["emb"][:-1]
    sh = ShardedIndex(DIM, shards=2, bits=4, metric="ip", seed=0, center=False)
    with pytest.raises(ValueError, match=r"dataset column 'emb' must hold vectors of length 32 .*"
                                         r"got shape \(31,\) in row 25"):
        sh.add_dataset(rd.from_items(rows), column="emb", batch_size=20)
    assert len(sh) == 20                       # the first batch went in, as documented
    wrong_dim = rd.from_items([{"emb": x[i, :8], "key": float(i)} for i in range(10)])
    with pytest.raises(ValueError, match=r"dataset column 'emb' must hold vectors of length 32 .*"
                                         r"got shape \(10, 8\)"):
        sh.add_dataset(wrong_dim, column="emb")
    with pytest.raises(TypeError, match="dataset column 'key' must be integers"):
        sh.add_dataset(wrong_dim.map_batches(lambda b: {"emb": np.tile(b["emb"], 4), "key": b["key"]}),
                       column="emb", id_column="key")
    assert len(sh) == 20
    sh.close()


def test_merge_breaks_ties_to_lower_id_and_pads():
    D = [np.array([[0.5, 0.2]], np.float32), np.array([[0.5, -np.inf]], np.float32)]
    I = [np.array([[9, 4]]), np.array([[3, -1]])]
    Dm, Im = merge_top_k(D, I, 4, False, 1)
    np.testing.assert_array_equal(Im, [[3, 9, 4, -1]])
    np.testing.assert_array_equal(Dm, np.array([[0.5, 0.5, 0.2, -np.inf]], np.float32))
    Dm, Im = merge_top_k([], [], 2, True, 3)
    assert Im.shape == (3, 2) and (Im == -1).all() and np.isposinf(Dm).all()


def test_shard_of_spreads_strided_ids():
    ids = np.arange(0, 20000, 4, dtype=np.int64)
    counts = np.bincount(shard_of(ids, 4), minlength=4)
    assert counts.min() > 0.2 * len(ids)


def test_searches_while_the_driver_writes(data):
    """A driver thread searching while another adds and removes sees each write whole across the
    shards (ShardedIndex's lock, README: threads), and ends equal to one index of the vectors held."""
    import threading

    x, q = data
    single = ta.Index(DIM, bits=4, metric="cosine", center=False)
    single.add(x[:200])
    single.search(q, K)
    sh = ShardedIndex(DIM, shards=2, bits=4, metric="cosine", center=False)
    try:
        sh.add(x[:200])
        held, epoch, removed_at, errors = set(range(200)), [0], {}, []
        stop = threading.Event()

        def reader():
            while not stop.is_set():
                start = epoch[0]
                try:
                    D, I = sh.search(q, K)
                except Exception as e:
                    errors.append(repr(e))
                    continue
                if (I < 0).any() or not np.isfinite(D).all():
                    errors.append("padding or non-finite score")
                if any(removed_at.get(i, start + 1) <= start for i in I.ravel().tolist()):
                    errors.append("an id removed before the search began")

        t = threading.Thread(target=reader)
        t.start()
        rng = np.random.default_rng(1)
        for r in range(15):
            ids = np.arange(200 + 30 * r, 230 + 30 * r)
            sh.add(x[ids], ids)
            held.update(ids.tolist())
            gone = rng.choice(sorted(held), 20, replace=False)
            assert sh.remove(gone) == 20
            epoch[0] += 1
            for i in gone.tolist():
                removed_at[i] = epoch[0]
            held.difference_update(gone.tolist())
        stop.set()
        t.join()
        assert errors == []
        order = np.array(sorted(held))
        fresh = ta.Index(DIM, bits=4, metric="cosine", center=False)
        fresh.add(x[order], order)
        assert len(sh) == len(order)
        assert_same_results(sh.search(q, K), fresh.search(q, K))
    finally:
        sh.close()
