"""Searches in several threads while one thread adds, removes and saves (README: threads).

Numba's kernels release the GIL, so these threads really overlap. Each
reader checks every row it gets: no exception, no padding (the index always
holds far more than the shortlist), finite scores in order, no duplicate,
no id that was never added, no id whose removal had returned before the
search began, and under rerank exact scores that match the id's own vector.
At the end the index must equal a fresh one built from the vectors it holds,
and so must its last save.
"""
import threading

import numpy as np
import pytest

import turboann as ta
from conftest import clustered

DIM, BASE, POOL, NQ, K, RERANK = 64, 1000, 3600, 8, 10, 50
ROUNDS, ADD, REMOVE = 40, 64, 40
NLIST, NPROBE = 16, 8

CONFIGS = [   # (kind, metric, layout, bits)
    ("flat", "cosine", "auto", 4),     # fast-scan blocks
    ("flat", "l2", "flat", 3),         # row-major codes
    ("ivf", "cosine", "auto", 2),      # fast-scan lists
    ("ivf", "l2", "flat", 4),          # row-major lists
]


def _build(kind, metric, layout, bits, x, centre=None, spread=None):
    if kind == "flat":
        center = "auto" if centre is None else centre
        return ta.Index(DIM, bits=bits, metric=metric, seed=3, layout=layout, keep_vectors=True, center=center,
                        spread=spread)
    index = ta.IVFIndex(DIM, nlist=NLIST, bits=bits, metric=metric, seed=3, layout=layout, keep_vectors=True)
    index.set_centroids(x[:BASE:BASE // NLIST][:NLIST])
    return index


def _search(index, q, rerank):
    kwargs = {"rerank": rerank}
    if isinstance(index, ta.IVFIndex):
        kwargs["nprobe"] = NPROBE
    return index.search(q, K, **kwargs)


def _exact(x, q, ids, metric):
    """The exact score of every (query, id) pair, as `search(..., rerank=R)` returns it."""
    v = x[ids].astype(np.float64)
    q = q.astype(np.float64)
    if metric == "cosine":
        v /= np.linalg.norm(v, axis=2, keepdims=True)
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
        return np.einsum("qd,qkd->qk", q, v)
    return ((v - q[:, None, :]) ** 2).sum(axis=2)


class _Writer:
    """Adds fresh ids, removes held ones and saves, recording when each id was added and removed."""

    def __init__(self, index, x, path, seed):
        self.index, self.x, self.path = index, x, path
        self.rng = np.random.default_rng(seed)
        self.held = list(range(BASE))
        self.next = BASE          # ids below it have been passed to add (maybe not yet returned)
        self.epoch = 0            # bumped after every write returns
        self.removed_at = {}      # id -> epoch after its remove returned
        self.errors = []

    def run(self, start: threading.Barrier):
        start.wait()
        try:
            for r in range(ROUNDS):
                ids = np.arange(self.next, self.next + ADD)
                self.next += ADD
                self.index.add(self.x[ids], ids)
                self.held.extend(ids.tolist())
                self.epoch += 1
                extra = self.held[BASE:]     # the base stays, so searches always have candidates
                gone = self.rng.choice(extra, min(REMOVE, len(extra)), replace=False)
                assert self.index.remove(gone) == len(gone)
                self.epoch += 1
                for i in gone.tolist():
                    self.removed_at[i] = self.epoch
                dropped = set(gone.tolist())
                self.held = [i for i in self.held if i not in dropped]
                if r % 5 == 4 or r == ROUNDS - 1:
                    self.index.save(self.path)
        except Exception as e:   # reported by the test, with the readers' errors
            self.errors.append(repr(e))


def _reader(index, writer, x, q, rerank, metric, stop, start, out):
    start.wait()
    searches, attempts, errors = 0, 0, []
    while not stop.is_set() or attempts < 5:   # a few even if the writer was quicker
        attempts += 1
        epoch = writer.epoch
        try:
            D, I = _search(index, q, rerank)
        except Exception as e:
            errors.append(repr(e))
            continue
        searches += 1
        bad = []
        if (I < 0).any():
            bad.append("padding")
        if not np.isfinite(D).all():
            bad.append("non-finite score")
        if (I >= writer.next).any():
            bad.append(f"id {int(I.max())} never added")
        if any(writer.removed_at.get(i, epoch + 1) <= epoch for i in I.ravel().tolist()):
            bad.append("an id removed before the search began")
        if any(len(set(row)) != K for row in I.tolist()):
            bad.append("duplicate id in a row")
        order = np.diff(D.astype(np.float64), axis=1)
        if ((order > 1e-6) if metric != "l2" else (order < -1e-6)).any():
            bad.append("scores out of order")
        if rerank and not bad and not np.allclose(D, _exact(x, q, I, metric), rtol=1e-4, atol=1e-4):
            bad.append("rerank scores are not the ids' exact scores")
        if bad:
            errors.append(", ".join(bad))
    out.append((searches, errors))


@pytest.mark.parametrize("kind,metric,layout,bits", CONFIGS)
def test_searches_while_one_thread_writes(tmp_path, kind, metric, layout, bits):
    x = clustered(POOL + NQ, DIM, seed=11, offset=0.5)
    x, q = x[:POOL], x[POOL:]
    assert BASE + ROUNDS * ADD <= POOL
    index = _build(kind, metric, layout, bits, x)
    index.add(x[:BASE])
    for rerank in (None, RERANK):
        _search(index, q, rerank)   # compiled and cached before the clock starts
    path = tmp_path / "index.tann"
    writer = _Writer(index, x, path, seed=5)
    stop, start = threading.Event(), threading.Barrier(4)
    results = []
    readers = [threading.Thread(target=_reader, args=(index, writer, x, q, rerank, metric, stop, start, results))
               for rerank in (None, RERANK, RERANK)]
    for t in readers:
        t.start()
    writer.run(start)
    stop.set()
    for t in readers:
        t.join()

    assert writer.errors == []
    assert [errors[:3] for _, errors in results] == [[], [], []]
    assert all(searches >= 5 for searches, _ in results)

    held = np.array(sorted(writer.held))
    assert len(index) == len(held) and np.array_equal(np.sort(index.ids), held)
    assert len(index._vectors) == len(index)
    # A fresh index of the held vectors, added in the order the index keeps them, searches alike.
    order = index.ids
    fresh = _build(kind, metric, layout, bits, x, centre=index.mean if kind == "flat" else None,
                   spread=index.spread if kind == "flat" else None)
    fresh.add(x[order], order)
    saved = ta.load(path)
    for rerank in (None, RERANK):
        D, I = _search(index, q, rerank)
        for other in (fresh, saved):
            D2, I2 = _search(other, q, rerank)
            np.testing.assert_array_equal(I, I2)
            np.testing.assert_allclose(D, D2, rtol=1e-5, atol=1e-5)


def test_lock_is_reentrant_and_refuses_upgrades():
    from turboann._rwlock import RWLock

    lock = RWLock()
    assert lock.acquire_read() and not lock.acquire_read()    # nested read: nothing more to release
    with pytest.raises(RuntimeError, match="inside one of its own searches"):
        lock.acquire_write()
    lock.release_read()
    assert lock.acquire_write() and not lock.acquire_write() and not lock.acquire_read()
    lock.release_write()
    # free again: another thread can write
    done = []
    t = threading.Thread(target=lambda: done.append(lock.acquire_write() and lock.release_write() is None))
    t.start()
    t.join(timeout=10)
    assert done == [True]


def test_failed_calls_leave_the_index_usable_from_other_threads():
    index = ta.Index(DIM, bits=2, metric="cosine")
    index.add(clustered(300, DIM, seed=2))
    with pytest.raises(ValueError, match="dim"):
        index.search(np.ones((2, DIM + 1)), 5)          # a read that raised
    with pytest.raises(ValueError, match="present"):
        index.add(np.ones((1, DIM)), ids=[0])           # a write that raised
    out = []
    t = threading.Thread(target=lambda: out.append((index.remove([1]), index.search(np.ones((1, DIM)), 5)[1].shape)))
    t.start()
    t.join(timeout=60)
    assert out == [(1, (1, 5))]


def test_lock_keeps_writes_whole_under_many_threads():
    """Writers change two counters with a thread switch between; readers must always see them equal,
    and both sides must get in while the other keeps coming (writers first, readers that waited next)."""
    import time

    from turboann._rwlock import reading, writing

    class Pair:
        def __init__(self):
            from turboann._rwlock import RWLock
            self._lock, self.a, self.b = RWLock(), 0, 0

        @writing
        def bump(self):
            self.a += 1
            time.sleep(0)   # a thread switch halfway through the write (not synchronisation)
            self.b += 1

        @reading
        def read(self):
            a = self.a
            time.sleep(0)
            return a, self.b

    pair, torn, reads = Pair(), [], []
    writing_done = threading.Event()

    def reader():
        n = 0
        while not writing_done.is_set():
            a, b = pair.read()
            n += 1
            if a != b:
                torn.append((a, b))
        reads.append(n)

    def writer():
        for _ in range(500):
            pair.bump()

    readers = [threading.Thread(target=reader) for _ in range(3)]
    writers = [threading.Thread(target=writer) for _ in range(2)]
    for t in readers + writers:
        t.start()
    for t in writers:
        t.join()
    writing_done.set()
    for t in readers:
        t.join()
    assert torn == []
    assert (pair.a, pair.b) == (1000, 1000)
    assert min(reads) > 0   # no reader starved while the writers looped


# -- forked workers -------------------------------------------------------------------------------

_FORK_SCRIPT = r"""
import json, multiprocessing as mp
import numpy as np
import turboann as ta
from turboann._threading import threading_layer

rng = np.random.default_rng(0)
x = rng.standard_normal((6000, 64)).astype(np.float32)
q = rng.standard_normal((300, 64)).astype(np.float32)
flat = ta.Index(64, bits=4, keep_vectors=True)
flat.add(x)
ivf = ta.IVFIndex(64, nlist=16, bits=4, keep_vectors=True)
ivf.set_centroids(x[:16])
ivf.add(x)

def searches():
    return [flat.search(q, 10, threads=2), flat.search(q, 10, threads=2, rerank=40),
            ivf.search(q, 10, nprobe=4, threads=2, rerank=40)]

parent = searches()   # the parent's parallel launches come before the fork

def child(conn):
    conn.send(searches())
    conn.close()

ctx = mp.get_context("fork")
a, b = ctx.Pipe()
p = ctx.Process(target=child, args=(b,))
p.start()
b.close()
try:
    got = a.recv()
except EOFError:
    got = None
p.join()
same = got is not None and all(np.array_equal(D, D2) and np.array_equal(I, I2)
                               for (D, I), (D2, I2) in zip(parent, got))
print(json.dumps({"layer": threading_layer(), "exitcode": p.exitcode, "same": same}))
"""


def _run_own_session(script: str, **env):
    """Run script in a fresh interpreter in a session of its own: a layer that kills its process group
    on fork takes only that session down, not pytest."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    environ = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_THREADING_LAYER")}
    root = str(Path(__file__).resolve().parents[1])   # this checkout's turboann, whatever is installed
    environ["PYTHONPATH"] = os.pathsep.join(p for p in (root, environ.get("PYTHONPATH")) if p)
    environ.update(env)
    done = subprocess.run([sys.executable, "-c", script], env=environ, capture_output=True, text=True,
                          timeout=600, start_new_session=True)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


def test_forked_child_searches_like_its_parent():
    import multiprocessing as mp

    if "fork" not in mp.get_all_start_methods():
        pytest.skip("no fork on this platform")
    out, stderr = _run_own_session(_FORK_SCRIPT)
    assert "fork() called from a process already using GNU OpenMP" not in stderr
    assert out == {"layer": "tbb", "exitcode": 0, "same": True}


def test_explicit_threading_layer_is_respected():
    script = ("import json, numpy as np, turboann as ta\n"
              "from turboann._threading import threading_layer\n"
              "i = ta.Index(32); i.add(np.random.default_rng(0).random((2000, 32))); i.search(np.ones((64, 32)), 5)\n"
              "print(json.dumps({'layer': threading_layer()}))")
    out, _ = _run_own_session(script, NUMBA_THREADING_LAYER="workqueue")
    assert out == {"layer": "workqueue"}
