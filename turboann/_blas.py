"""BLAS products that come just before Numba's parallel kernels run on one BLAS thread.

After a call, OpenBLAS's worker threads spin for a while, on the very cores
Numba's threads need for the scan that follows, which then runs much slower
(docs/design.md, "Measurements behind the code"). A product of queries with
centroids is a small part of a search, so one thread costs little there. The k-means
assignment of `IVFIndex.add` keeps all BLAS threads: it is most of that work.

The limit is process-wide, so searches in several threads share one: the
first to enter sets it and the last to leave restores the counts from
before the first (nested limits, each restoring what the other set, would
leave BLAS on one thread for good). An add in another thread meanwhile
runs its product on one BLAS thread too.
"""
from __future__ import annotations

import sys
import threading
from contextlib import contextmanager

from threadpoolctl import ThreadpoolController

_controller: ThreadpoolController | None = None
_modules_seen = 0   # len(sys.modules) when _controller looked at the loaded libraries
_guard = threading.Lock()
_users = 0
_limiter = None


@contextmanager
def one_thread():
    """A context in which BLAS uses one thread; the previous counts come back when the last user leaves."""
    global _controller, _modules_seen, _users, _limiter
    with _guard:
        if _users == 0:
            # Inspecting the loaded libraries takes milliseconds: again only after imports, which
            # may have brought another BLAS (one bundled with a library imported later, as Ray
            # brings in the test suite) that a stale look would leave on all its threads.
            if _controller is None or len(sys.modules) != _modules_seen:
                _controller, _modules_seen = ThreadpoolController(), len(sys.modules)
            _limiter = _controller.limit(limits=1, user_api="blas")
        _users += 1
    try:
        yield
    finally:
        with _guard:
            _users -= 1
            if _users == 0:
                _limiter.restore_original_limits()
                _limiter = None
