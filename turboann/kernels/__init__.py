"""Numba scan kernels and their NumPy reference twins.

Pure functions over arrays; nothing here imports from the rest of turboann.
"""
from __future__ import annotations

import numpy as np


def read_only(x: np.ndarray) -> np.ndarray:
    """A read-only view of x, for kernel inputs.

    Numba compiles read-only and writable arrays separately, and a cold
    compile is slow; always passing a read-only view keeps it to one
    specialisation.
    """
    view = x.view()
    view.setflags(write=False)
    return view
