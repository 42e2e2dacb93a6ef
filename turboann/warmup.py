"""Compile the kernels ahead of first use, into Numba's on-disk cache.

Every kernel is `@njit(cache=True)`: the first call of each signature in a
fresh cache compiles it (LLVM, tens of seconds for the large scan kernels),
later processes load it from the cache. `warmup` makes those first calls on
a small seeded workload through the public API, so that the signatures it
compiles are exactly the ones a user's first `add` and `search` reach:
flat and IVF indexes, every metric, both variants, batch and single query,
filters, re-ranking, exact search, a file opened with `mmap=True` (its
read-only arrays are a signature of their own) and `remove`.

The tasks (one index kind at one width) run in `jobs` spawned processes, so
several cores compile at once; a last pass in a fresh process runs every
task again and compiles whatever a concurrent cache write lost. Options
left out here (`compact`, a forced `layout`, `rotation`, `estimator`)
compile on their first use. The cache is tied to the CPU: a machine with
other SIMD features compiles again.
"""
from __future__ import annotations

import multiprocessing
import os
import tempfile
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

KINDS = ("flat", "ivf")
# Two dims: "auto" rotates below 256 with a dense matrix, from 256 on with Hadamard rounds (288 is not a
# power of two: the rounds' split case). 300 queries reach the batch engines (`index._DOT_BATCH`).
_ROWS, _DIMS, _QUERIES, _NLIST = 1_500, (72, 288), 300, 6


def _exercise(index, x: np.ndarray, q: np.ndarray, *, nprobe: int | None = None, rerank: bool = False) -> None:
    """Search `index` the ways a user does: batch, single, filtered (sparse and dense), exact, re-ranked."""
    import turboann as ta
    extra = {} if nprobe is None else {"nprobe": nprobe}
    index.search(q, 10, **extra)
    index.search(q[:40], 10, **extra)
    index.search(q[:1], 10, **extra)
    index.search(q, 10, threads=1, **extra)
    index.search(q[:1], 10, threads=1, **extra)
    index.search(q, 10, exact=True, **extra)
    index.search(q, 10, filter=np.arange(0, len(x), 997), **extra)
    index.search(q, 10, filter=np.arange(0, len(x), 2), **extra)
    if rerank:
        index.search(q, 10, rerank=40, **extra)
    with tempfile.TemporaryDirectory(prefix="turboann-warmup-") as tmp:
        path = Path(tmp) / "index.tann"
        index.save(path)
        mapped = ta.load(path, mmap=True)
        mapped.search(q, 10, **extra)
        mapped.search(q[:1], 10, **extra)
        mapped.search(q, 10, filter=np.arange(0, len(x), 997), **extra)
        del mapped
        loaded = ta.load(path)
        loaded.remove(np.arange(0, len(x), 5))
        loaded.add(x[:100], ids=np.arange(len(x), len(x) + 100))
        loaded.search(q, 10, **extra)


def run_task(kind: str, bits: int) -> float:
    """Build and search small indexes of `kind` ("flat" or "ivf") at `bits`; the seconds it took."""
    start = time.perf_counter()
    rng = np.random.default_rng(bits)
    for dim in _DIMS:
        x = rng.standard_normal((_ROWS, dim)).astype(np.float32)
        q = rng.standard_normal((_QUERIES, dim)).astype(np.float32)
        _run_kind(kind, bits, dim, x, q)
    return time.perf_counter() - start


def _run_kind(kind: str, bits: int, dim: int, x: np.ndarray, q: np.ndarray) -> None:
    import turboann as ta
    for metric in ("cosine", "ip", "l2"):
        for variant in ("mse", "prod") if bits > 1 else ("mse",):
            keep = metric == "cosine" and variant == "mse"
            if kind == "flat":
                index = ta.Index(dim, bits, metric, variant=variant, keep_vectors=keep)
                index.add(x)
                _exercise(index, x, q, rerank=keep)
            else:
                index = ta.IVFIndex(dim, _NLIST, bits, metric, variant=variant, keep_vectors=keep)
                index.train(x)
                index.add(x)
                _exercise(index, x, q, nprobe=2, rerank=keep)
                index.search(q, 10, nprobe=_NLIST)


def _run_all(tasks: list[tuple[str, int]]) -> float:
    start = time.perf_counter()
    for kind, bits in tasks:
        run_task(kind, bits)
    return time.perf_counter() - start


def warmup(bits: int | Iterable[int] = range(1, 9), kinds: str | Iterable[str] = KINDS, jobs: int | None = None,
           report: Callable[[str], None] | None = None) -> float:
    """Compile the kernels `kinds` x `bits` need into Numba's cache; the total seconds.

    bits: a width 1-8 or several to cover. kinds: "flat" (Index), "ivf" (IVFIndex) or both.
    jobs: processes compiling at once (default: the CPUs this process may use).
    report: called with one line per finished task.
    """
    from . import _machine, _validate
    bits = [bits] if isinstance(bits, int) else bits
    kinds = [kinds] if isinstance(kinds, str) else kinds
    widths = sorted({_validate.integer("bits", b, low=1, high=8) for b in bits})
    kinds = list(dict.fromkeys(kinds))
    for kind in kinds:
        if kind not in KINDS:
            raise ValueError(f"kinds must hold only {', '.join(map(repr, KINDS))}, got {kind!r}")
    if not widths or not kinds:
        raise ValueError("warmup needs at least one width in bits and one kind in kinds")
    if jobs is None:
        jobs = _machine.usable_cores() or os.cpu_count() or 1
    jobs = _validate.integer("jobs", jobs, low=1)
    say = report or (lambda line: None)
    tasks = [(kind, b) for kind in kinds for b in widths]
    start = time.perf_counter()
    spawn = multiprocessing.get_context("spawn")   # a fresh interpreter: no Numba threads to fork
    # The first task alone compiles what every task shares (rotation, encoding), once.
    with ProcessPoolExecutor(max_workers=min(jobs, len(tasks)), mp_context=spawn) as pool:
        first = pool.submit(run_task, *tasks[0]).result()
        say(f"{tasks[0][0]} {tasks[0][1]} bits: {first:.1f} s")
        futures = {pool.submit(run_task, kind, b): (kind, b) for kind, b in tasks[1:]}
        for future, (kind, b) in futures.items():
            say(f"{kind} {b} bits: {future.result():.1f} s")
    with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
        check = pool.submit(_run_all, tasks).result()
    say(f"check, all tasks from the cache: {check:.1f} s")
    return time.perf_counter() - start
