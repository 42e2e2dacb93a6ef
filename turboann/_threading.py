"""Make Numba's TBB threading layer loadable, so that forked workers can search.

Numba picks its threading layer at the first parallel launch, by default TBB
if it loads, else OpenMP. With GNU OpenMP a child made by fork() after the
parent ran a parallel kernel (gunicorn and Celery workers,
multiprocessing's "fork" on Linux) is killed at its first parallel launch
("fork() called from a process already using GNU OpenMP"), and the signal
goes to its whole process group. TBB is fork-safe and also takes parallel
launches from several threads at once, which concurrent searches need
(Numba's "workqueue" layer refuses those).

PyPI's `tbb` wheel (a dependency) installs libtbb.so.12 into the
environment's lib/ directory, where the dynamic loader does not look, so
Numba would fall back to OpenMP. Loading it here by its full path, before
any parallel kernel runs, lets Numba's own `CDLL("libtbb.so.12")` and its
TBB pool find it. Nothing else changes: Numba still chooses, so an explicit
NUMBA_THREADING_LAYER (or _PRIORITY) of the user wins, and without the
library Numba falls back as before.
"""
from __future__ import annotations

import ctypes
import importlib.metadata

# What Numba loads on Linux, Windows and macOS.
_NAMES = ("libtbb.so.12", "tbb12.dll", "libtbb.12.dylib")


def _tbb_library() -> str | None:
    """Full path of the `tbb` distribution's runtime library, or None."""
    try:
        files = importlib.metadata.distribution("tbb").files or ()
    except importlib.metadata.PackageNotFoundError:
        return None
    for f in files:
        if f.name in _NAMES:
            return str(f.locate())
    return None


def preload_tbb() -> str | None:
    """Load the `tbb` wheel's library into the process (globally) for Numba; its path, or None."""
    path = _tbb_library()
    if path is None:
        return None
    try:
        ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
    except OSError:   # a broken install: Numba falls back to another layer, as without the wheel
        return None
    return path


def threading_layer() -> str | None:
    """Numba's threading layer ("tbb", "omp", "workqueue"), or None before the first parallel launch."""
    import numba
    try:
        return numba.threading_layer()
    except ValueError:
        return None


preload_tbb()
