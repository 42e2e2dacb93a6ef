import sys

import numpy as np
import pytest

import turboann as ta
from turboann import io
from turboann.invlists import BLOCK, InvertedLists
from turboann.kernels import _simd, ivf_scan
from turboann.kernels import reference as ref

from conftest import clustered, exact_topk, recall

NLIST = 32
METRICS = ["ip", "cosine", "l2"]
MODES = ["residual", "raw"]


@pytest.fixture(scope="session")
def data_32():
    # Tests train with threads=1: on a tiny sample, Faiss's OpenMP threads mostly
# wait for each other (and for Numba's, when both runtimes spin on 2 cores).


# 8 clusters cut into 32 lists: true neighbours spread over several lists.
    x = clustered(3100, 32, seed=2, clusters=8, spread=1.0, offset=1.0)
    return x[:3000], x[3000:]


@pytest.fixture(scope="session")
def built(data_32):
    """One trained and filled IVFIndex per (metric, mode), shared by read-only tests."""
    x, _ = data_32
    cache = {}

    def get(metric, mode):
        if (metric, mode) not in cache:
            index = ta.IVFIndex(32, nlist=NLIST, bits=4, metric=metric, mode=mode, seed=0)
            index.train(x, threads=1)
            index.add(x)
            cache[metric, mode] = index
        return cache[metric, mode]
    return get


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("metric", METRICS)
def test_recall_rises_with_nprobe_to_flat_recall(data_32, built, metric, mode):
    x, q = data_32
    index = built(metric, mode)
    truth = exact_topk(x, q, 10, metric)
    r = {p: recall(index.search(q, 10, nprobe=p)[1], truth) for p in (1, 4, NLIST)}
    # the codes and scoring IVF shares
    flat = ta.Index(32, bits=4, metric=metric, seed=0, center=False, layout=index.layout)
    flat.add(x)
    D_flat, I_flat = flat.search(q, 10)
    r_flat = recall(I_flat, truth)
    # measured: nprobe 1 -> 0.48-0.54, 4 -> 0.80-0.86, all lists -> 0.82-0.90
    assert r[1] + 0.2 < r[4] <= r[NLIST] + 0.01, r
    if mode == "raw":
        # the same codes and estimator as the flat index: the same results once every list is scanned
        D, I = index.search(q, 10, nprobe=NLIST)
        np.testing.assert_array_equal(D, D_flat)
        assert r[NLIST] == r_flat
    else:
        # residuals are shorter than the vectors, so their codes are at least as good
        assert r[NLIST] >= r_flat - 0.005, (r, r_flat)


@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_prod_variant(data_32, metric):
    """TurboQuantProd codes in lists: raw equals the flat index; residual codes are no worse."""
    x, q = data_32
    truth = exact_topk(x, q, 10, metric)
    flat = ta.Index(32, bits=3, metric=metric, variant="prod", center=False)
    flat.add(x)
    D_flat, I_flat = flat.search(q, 10)
    raw = ta.IVFIndex(32, nlist=8, bits=3, metric=metric, variant="prod", mode="raw")
    raw.train(x, threads=1)
    raw.add(x)
    np.testing.assert_array_equal(raw.search(q, 10, nprobe=8)[0], D_flat)
    residual = ta.IVFIndex(32, nlist=8, bits=3, metric=metric, variant="prod")
    residual.set_centroids(raw.centroids)
    residual.add(x)
    assert recall(residual.search(q, 10, nprobe=8)[1], truth) >= recall(I_flat, truth) - 0.01


def test_residual_is_the_default_mode():
    assert ta.IVFIndex(8, nlist=2).mode == "residual"


@pytest.mark.parametrize("metric", METRICS)
def test_scores_are_the_metric(data_32, built, metric):
    """D at nprobe = nlist estimates the true similarity / squared distance of the ids returned."""
    x, q = data_32
    D, I = built(metric, "residual").search(q, 5, nprobe=NLIST)
    xx, qq = x.astype(np.float64), q.astype(np.float64)
    if metric == "cosine":
        xx /= np.linalg.norm(xx, axis=1, keepdims=True)
        qq /= np.linalg.norm(qq, axis=1, keepdims=True)
    picked = xx[I]                                                   # (nq, 5, d)
    true = (((qq[:, None] - picked) ** 2).sum(-1) if metric == "l2" else (qq[:, None] * picked).sum(-1))
    scale = np.abs(true).mean()
    assert np.abs(D - true).mean() < 0.05 * scale
    assert np.abs(D - true).mean() > 0           # estimates, not the exact values


@pytest.mark.parametrize("mode,metric", [("residual", "l2"), ("residual", "ip"), ("raw", "cosine")])
def test_kernel_equals_numpy_reference(data_32, built, mode, metric):
    x, q = data_32
    index = built(metric, mode)
    q = q[:9] / np.linalg.norm(q[:9], axis=1, keepdims=True) if metric == "cosine" else q[:9]
    quant, lists, p = index.quantizer, index._store, index.quantizer.plan
    qc = (q @ index._centroids.T).astype(np.float32)
    args = (lists.codes, lists.factors, lists.start, lists.size, qc, index._cnorm2, metric != "ip",
            index._list_bias_mult(), 5, *index._segment_values(q), quant.centroid_table)
    S, P = ivf_scan.search_lists(*args, *p, 15, np.zeros(0, np.uint8))
    S_ref, P_ref = ref.search_lists(*args, quant.segments, 15)
    np.testing.assert_allclose(S, S_ref, rtol=1e-4, atol=1e-4)
    assert (P == P_ref).mean() > 0.95        # positions agree except where scores tie to rounding
    assert (P >= 0).all()


@pytest.mark.parametrize("probe_l2", [True, False])
def test_select_lists_equals_reference(probe_l2):
    rng = np.random.default_rng(3)
    qc = rng.standard_normal((6, 40)).astype(np.float32)
    cnorm2 = rng.random(40).astype(np.float32)
    want = ref.select_lists(qc, cnorm2, probe_l2, 7)
    for i in range(6):
        out = np.empty(7, np.int64)
        ivf_scan.select_lists(qc[i], cnorm2, probe_l2, 7, out)
        np.testing.assert_array_equal(out, want[i])
        ivf_scan.nearest_lists(qc[i], cnorm2, probe_l2, np.empty(7, np.float32), out)   # the same set, unsorted
        np.testing.assert_array_equal(np.sort(out), np.sort(want[i]))


def test_many_small_adds_equal_one_add(data_32):
    """Lists that outgrow their runs move and the arena regrows, without changing any result."""
    x, q = data_32
    one = ta.IVFIndex(32, nlist=NLIST, bits=3, metric="l2")
    one.train(x, threads=1)
    many = ta.IVFIndex(32, nlist=NLIST, bits=3, metric="l2")
    many.set_centroids(one.centroids)
    one.add(x)
    for lo in range(0, 3000, 97):
        many.add(x[lo:lo + 97], ids=np.arange(lo, min(lo + 97, 3000)))
    lists = many._store
    assert lists.reserved_bytes > lists.nbytes and (lists.capacity % BLOCK == 0).all()
    assert (lists.start % BLOCK == 0).all() and (lists.size <= lists.capacity).all()
    np.testing.assert_array_equal(one.list_sizes, many.list_sizes)
    np.testing.assert_array_equal(np.sort(many.ids), np.arange(3000))
    D1, I1 = one.search(q, 10, nprobe=6)
    D2, I2 = many.search(q, 10, nprobe=6)
    # the dense rotation is a BLAS product, whose rounding depends on the batch
    np.testing.assert_allclose(D1, D2, rtol=1e-5)
    assert (I1 == I2).mean() > 0.99


def test_inverted_lists_against_a_model():
    """Random appends and removals keep every list's contents equal to a plain dict model."""
    rng = np.random.default_rng(4)
    lists = InvertedLists(5, code_bytes=3, n_factors=1)
    model = {}                                   # id -> (list, code row)
    next_id = 0
    for step in range(60):
        if rng.random() < 0.6 or not model:
            m = int(rng.integers(1, 50))
            ids = np.arange(next_id, next_id + m)
            next_id += m
            lno = rng.integers(0, 5, m)
            codes = rng.integers(0, 256, (m, 3)).astype(np.uint8)
            lists.append(lno, codes, ids[:, None].astype(np.float32), ids)
            model.update({int(i): (int(l), c) for i, l, c in zip(ids, lno, codes)})
        else:
            gone = rng.choice(list(model), size=min(len(model), int(rng.integers(1, 30))), replace=False)
            assert lists.remove(np.concatenate([gone, [10 ** 9]])) == len(gone)
            for i in gone.tolist():
                del model[i]
    assert len(lists) == len(model)
    for l in range(5):
        s, n = lists.start[l], lists.size[l]
        held = lists.ids[s:s + n]
        assert sorted(held.tolist()) == sorted(i for i, (ll, _) in model.items() if ll == l)
        for pos, i in zip(range(s, s + n), held.tolist()):
            np.testing.assert_array_equal(lists.codes[pos], model[i][1])
            assert lists.factors[pos, 0] == i
    assert lists.slots(np.array([next(iter(model)), -7])).tolist()[1] == -1


@pytest.mark.parametrize("metric", METRICS)
def test_remove(data_32, metric):
    x, q = data_32
    index = ta.IVFIndex(32, nlist=8, bits=2, metric=metric)
    index.train(x[:1000], threads=1)
    index.add(x[:1000])
    gone = np.arange(0, 1000, 3)
    assert index.remove(gone) == len(gone)
    assert len(index) == 1000 - len(gone) and index.list_sizes.sum() == len(index)
    _, I = index.search(x[gone[:50]], 20, nprobe=8)
    assert not np.isin(I, gone).any()
    with pytest.raises(ValueError, match="ids must be in the index, got unknown id 0"):
        index.remove([0, 1])
    assert index.remove([0, 1], missing="ignore") == 1
    # a removed id may be added again
    index.add(x[:1], ids=[0])
    assert index.search(x[:1], 1, nprobe=8)[1][0, 0] == 0


def test_persistence_round_trip(tmp_path, data_32):
    x, q = data_32
    index = ta.IVFIndex(32, nlist=NLIST, bits=3, metric="l2", mode="residual", seed=3, keep_vectors=True)
    index.train(x, threads=1)
    index.add(x[:1500], ids=np.arange(1500) * 2)
    index.add(x[1500:])
    index.remove([0, 2, 4])
    path = tmp_path / "ivf.tann"
    index.save(path)
    loaded = ta.load(path)
    assert type(loaded) is ta.IVFIndex
    assert (loaded.nlist, loaded.mode, loaded.seed, loaded.metric, loaded.bits) == (NLIST, "residual", 3, "l2", 3)
    np.testing.assert_array_equal(loaded.centroids, index.centroids)
    np.testing.assert_array_equal(loaded.list_sizes, index.list_sizes)
    for kwargs in ({"nprobe": 5}, {"nprobe": 5, "rerank": 40}):
        D1, I1 = index.search(q, 10, **kwargs)
        D2, I2 = loaded.search(q, 10, **kwargs)
        np.testing.assert_array_equal(D1, D2)
        np.testing.assert_array_equal(I1, I2)
    loaded.add(q[:2])
    assert sorted(loaded.ids.tolist())[-2:] == [4499, 4500]   # default ids continue after 4498
    assert loaded.remove([6]) == 1


def test_file_versions(tmp_path, data_32):
    """Plain row-major flat files stay version 1; IVF files and kept vectors need version 2, fast-scan
    codes (flat or IVF) as the search reads them version 3; an untrained IVF loads."""
    x, _ = data_32
    flat = ta.Index(32, bits=2, layout="flat")
    flat.add(x[:50])
    flat.save(tmp_path / "flat.tann")
    fast = ta.Index(32, bits=2)
    fast.add(x[:50])
    fast.save(tmp_path / "fast.tann")
    ta.IVFIndex(32, nlist=4, layout="flat").save(tmp_path / "ivf.tann")
    ta.IVFIndex(32, nlist=4).save(tmp_path / "ivf_fast.tann")
    version = {name: int.from_bytes((tmp_path / name).read_bytes()[8:12], "little")
               for name in ("flat.tann", "fast.tann", "ivf.tann", "ivf_fast.tann")}
    assert version == {"flat.tann": 1, "fast.tann": 3, "ivf.tann": 2, "ivf_fast.tann": 3}
    loaded = ta.load(tmp_path / "ivf.tann")
    assert type(loaded) is ta.IVFIndex and not loaded.is_trained and len(loaded) == 0


def test_corrupt_list_sizes_are_rejected(tmp_path, data_32):
    x, _ = data_32
    index = ta.IVFIndex(32, nlist=4, bits=2, layout="flat")   # the arena form: tests/test_mmap.py
    index.train(x[:200], threads=1)
    index.add(x[:200])
    path = tmp_path / "ivf.tann"
    index.save(path)
    kind, settings, arrays = io.read_file(path)
    arrays = dict(arrays)
    arrays["list_sizes"] = arrays["list_sizes"] + np.array([1, -1, 1, -1])
    arrays["list_sizes"][0] += 1
    io.write_file(path, kind, settings, arrays, version=2)
    with pytest.raises(io.IndexFileError, match="list sizes do not match the 200 vectors"):
        ta.load(path)
    del arrays["list_sizes"]
    io.write_file(path, kind, settings, arrays, version=2)
    with pytest.raises(io.IndexFileError, match="list sizes"):
        ta.load(path)


def test_errors(data_32):
    x, q = data_32
    index = ta.IVFIndex(32, nlist=8)
    with pytest.raises(ValueError, match=r"must be trained before search: call train\(sample\)"):
        index.search(q, 5)
    with pytest.raises(ValueError, match="must be trained before add"):
        index.add(x)
    with pytest.raises(ValueError, match="sample must hold at least nlist = 8 rows, got 7"):
        index.train(x[:7])
    with pytest.raises(ValueError, match="sample must have 32 columns"):
        index.train(x[:, :5])
    index.train(x[:500], threads=1)
    index.add(x[:500])
    with pytest.raises(ValueError, match="nprobe must be >= 1, got 0"):
        index.search(q, 5, nprobe=0)
    with pytest.raises(ValueError, match="nprobe must be <= 8, got 9"):
        index.search(q, 5, nprobe=9)
    with pytest.raises(TypeError, match="nprobe must be an integer, got float 2.0"):
        index.search(q, 5, nprobe=2.0)
    with pytest.raises(ValueError, match="train must come before add: the index already holds 500"):
        index.train(x, threads=1)
    with pytest.raises(ValueError, match="set_centroids must come before add: the index already holds 500"):
        index.set_centroids(index.centroids)
    with pytest.raises(ValueError, match="centroids must have nlist = 4 rows, got 8"):
        ta.IVFIndex(32, nlist=4).set_centroids(index.centroids)
    with pytest.raises(ValueError, match="centroids must have 32 columns"):
        ta.IVFIndex(32, nlist=8).set_centroids(index.centroids[:, :3])
    with pytest.raises(ValueError, match="ids must not be in the index already, got id 3"):
        index.add(x[:2], ids=[3, 1000])
    with pytest.raises(ValueError, match="q must be finite"):
        index.search(np.full((1, 32), np.nan), 5)
    with pytest.raises(ValueError, match="k must be >= 1"):
        index.search(q, 0)
    with pytest.raises(ValueError, match="x row 1 is a zero vector"):
        index.add(np.stack([x[0], np.zeros(32)]))
    with pytest.raises(ValueError, match="nlist must be >= 1, got 0"):
        ta.IVFIndex(32, nlist=0)
    with pytest.raises(ValueError, match="mode must be one of 'residual', 'raw', got 'pq'"):
        ta.IVFIndex(32, nlist=4, mode="pq")
    with pytest.raises(ValueError, match="metric must be one of"):
        ta.IVFIndex(32, nlist=4, metric="hamming")


def test_fewer_results_than_k_are_padded(data_32):
    x, q = data_32
    index = ta.IVFIndex(32, nlist=8, metric="l2")
    index.train(x[:400], threads=1)
    D, I = index.search(q[:2], 3, nprobe=2)
    assert (I == -1).all() and np.isinf(D).all() and (D > 0).all()
    index.add(x[:5])
    D, I = index.search(q[:2], 10, nprobe=8)
    assert (I[:, :5] >= 0).all() and (I[:, 5:] == -1).all() and np.isposinf(D[:, 5:]).all()


def test_training_is_seeded_bounded_and_quiet_unless_asked(capfd, data_32):
    x, _ = data_32
    a = ta.IVFIndex(32, nlist=4, seed=7, max_train_per_list=50)
    a.train(x, threads=1)
    b = ta.IVFIndex(32, nlist=4, seed=7, max_train_per_list=50)
    b.train(x, threads=1)
    np.testing.assert_array_equal(a.centroids, b.centroids)
    assert capfd.readouterr().out == ""
    c = ta.IVFIndex(32, nlist=4, seed=7, max_train_per_list=50)
    c.train(x, verbose=True, threads=1)
    out = capfd.readouterr().out
    assert "Clustering 200 points" in out and "Iteration" in out     # the sample was cut to 4 * 50 rows


def test_missing_faiss_names_the_extra(monkeypatch, data_32):
    monkeypatch.setitem(sys.modules, "faiss", None)
    with pytest.raises(ImportError, match=r"needs faiss for k-means: pip install 'turboann\[faiss\]'"):
        ta.IVFIndex(32, nlist=4).train(data_32[0][:100])


@pytest.fixture(scope="module")
def data_40():
    x = clustered(1300, 40, seed=6, clusters=8, spread=1.0, offset=1.0)
    return x[:1200], x[1200:]


@pytest.mark.parametrize("path", list(_simd.RUNNABLE))
@pytest.mark.parametrize("bits", [1, 2, 3, 4])
@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("mode", MODES)
def test_fastscan_lists_equal_flat_lists(tmp_path, monkeypatch, data_40, path, bits, metric, mode):
    """Same ids and scores as the row-major list scan after spread adds, removals and a save/load."""
    monkeypatch.setenv(_simd.ENV_VAR, path)
    x, q = data_40
    centroids = x[::75][:16]
    got = {}
    for layout in ("fastscan", "flat"):
        index = ta.IVFIndex(40, nlist=16, bits=bits, metric=metric, mode=mode, seed=1, layout=layout)
        assert index.layout == layout
        index.set_centroids(centroids)
        for lo, hi in [(0, 300), (300, 301), (301, 900)]:   # lists grow, move and regrow the arena
            index.add(x[lo:hi])
        index.remove(np.arange(0, 900, 7))
        index.add(x[900:], ids=np.arange(5000, 5300))
        index.save(tmp_path / f"{layout}.tann")
        loaded = ta.load(tmp_path / f"{layout}.tann")
        assert loaded.layout == layout
        got[layout] = [index.search(q, 10, nprobe=4), loaded.search(q, 10, nprobe=4)]
    np.testing.assert_array_equal(got["fastscan"][0][1], got["flat"][0][1])
    np.testing.assert_allclose(got["fastscan"][0][0], got["flat"][0][0], rtol=1e-4, atol=1e-5)
    for D, I in got["fastscan"][1], got["flat"][1]:       # loading changes nothing
        np.testing.assert_array_equal(I, got["flat"][0][1])
        np.testing.assert_allclose(D, got["flat"][0][0], rtol=1e-4, atol=1e-5)


def test_fastscan_layout_choice(tmp_path, data_32):
    assert ta.IVFIndex(32, nlist=4, bits=4).layout == "fastscan"
    assert ta.IVFIndex(32, nlist=4, bits=5).layout == "flat"
    assert ta.IVFIndex(32, nlist=4, bits=4, variant="prod").layout == "flat"
    with pytest.raises(ValueError, match="layout 'fastscan' needs variant 'mse' and bits <= 4"):
        ta.IVFIndex(32, nlist=4, bits=5, layout="fastscan")
    x, _ = data_32
    assert ta.IVFIndex(32, nlist=4, bits=3).layout == "flat"   # blocks would store 3 bits in 4
    index = ta.IVFIndex(32, nlist=4, bits=3, layout="fastscan")
    index.set_centroids(x[:4])
    index.add(x[:100])
    lists = index._store
    assert index.code_bytes == 32 // 2 + 4          # 3 bits take a nibble each in blocks
    assert lists.blocks.shape == (lists.arena_size // BLOCK, 16, BLOCK)   # 32 nibbles, two a row
    assert lists.nbytes == 100 * (16 + 4 + 8 + 8)           # + the split-order factor copy


def test_blas_runs_one_thread_inside_the_context_and_comes_back():
    from threadpoolctl import threadpool_info

    from turboann import _blas

    def blas_threads():
        return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]

    before = blas_threads()
    assert before   # NumPy's BLAS is found
    with _blas.one_thread():
        assert all(n == 1 for n in blas_threads())
    assert blas_threads() == before


def test_l2_row_too_large_for_its_bias_is_rejected_as_flat_add_does(data_32):
    """A 1e30 row used to be stored with bias -inf, never to be found; Index.add rejects it."""
    x, q = data_32
    for mode in ("residual", "raw"):
        index = ta.IVFIndex(32, nlist=4, bits=2, metric="l2", mode=mode)
        index.set_centroids(x[:4])
        index.add(x[:50])
        rows = x[50:60].copy()
        rows[7] = 1e30
        with pytest.raises(ValueError, match="x row 7 is too large to encode"):
            index.add(rows)
        flat = ta.Index(32, bits=2, metric="l2")
        with pytest.raises(ValueError, match="x row 7 is too large to encode"):
            flat.add(rows)
        assert len(index) == 50 and index.list_sizes.sum() == 50
        D, I = index.search(q[:2], 600, nprobe=4)    # k beyond len: padded, not allocated blindly
        assert I.shape == (2, 600) and (I[:, 50:] == -1).all() and (I[:, :50] >= 0).all()
