"""BLAS products that come just before Numba's parallel kernels run on one BLAS thread.

After a call, OpenBLAS's worker threads spin for a while, on the very cores
Numba's threads need for the scan that follows. `IVFIndex.search` on wordnet
(nlist 1024, nprobe 24, 2 Numba threads, NumPy's default 2 BLAS threads)
measured 8,046 QPS before and 13,274 with this, as with
OPENBLAS_NUM_THREADS=1 (13,728). A product of queries with centroids is a
small part of a search, so one thread costs little there. The k-means
assignment of `IVFIndex.add` keeps all BLAS threads: it is most of that work.
"""
from __future__ import annotations

from contextlib import AbstractContextManager

from threadpoolctl import ThreadpoolController

_controller: ThreadpoolController | None = None


def one_thread() -> AbstractContextManager:
    """A context in which BLAS uses one thread; the previous counts come back on exit."""
    global _controller
    if _controller is None:   # inspecting the loaded libraries takes milliseconds: once a process
        _controller = ThreadpoolController()
    return _controller.limit(limits=1, user_api="blas")
