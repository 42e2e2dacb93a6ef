"""Argument checks shared by the public API.

Every error names the argument, what was expected and what came, so that a
user can fix the call without reading our source.
"""
from __future__ import annotations

import numbers

import numpy as np

from .kernels.encode import row_norms

METRICS = ("ip", "cosine", "l2")
# The largest id an index takes: one past it, the next default id, must still be an int64.
MAX_ID = np.iinfo(np.int64).max - 1


def integer(name: str, value, *, low: int | None = None, high: int | None = None) -> int:
    """Return `value` as a Python int, or raise naming `name`."""
    if type(value) is int and (low is None or value >= low) and (high is None or value <= high):
        return value   # the common case, without the ABC check below
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    value = int(value)
    if low is not None and value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    if high is not None and value > high:
        raise ValueError(f"{name} must be <= {high}, got {value}")
    return value


def flag(name: str, value) -> bool:
    """A True/False argument (numpy bools too) as a bool; anything else a TypeError naming it."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {type(value).__name__}")
    return bool(value)


def choice(name: str, value, options) -> str:
    if not isinstance(value, str) or value not in options:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, options))}, got {value!r}")
    return value


def vectors(name: str, x, dim: int, *, allow_empty: bool = True) -> np.ndarray:
    """Convert `x` to a C-contiguous float32 (n, dim) array, converting once.

    Accepts any real numeric dtype (float16/32/64, ints); a 1-D array of
    length `dim` is taken as one row. Rejects NaN/inf naming the first bad row.
    """
    return vectors_and_norms(name, x, dim, allow_empty=allow_empty)[0]


def real_array(name: str, x) -> np.ndarray:
    """`x` as an array of real numbers (any float or int dtype), not yet converted."""
    arr = np.asarray(x)
    if arr.dtype.kind not in "fiu":   # float, signed or unsigned int (not bool, complex, object, ...)
        raise TypeError(f"{name} must hold real numbers (float or int), got dtype {arr.dtype}")
    return arr


def vectors_and_norms(name: str, x, dim: int, *, allow_empty: bool = True):
    """`vectors`, plus the (n,) float64 row norms it computed to check finiteness."""
    arr = rows(name, x, dim, allow_empty=allow_empty)
    # A float64 sum of float32 squares cannot overflow, so a row's norm is
    # finite exactly when the row is: one pass serves both.
    norms = row_norms(arr)
    finite_rows(name, norms)
    return arr, norms


def rows(name: str, x, dim: int, *, allow_empty: bool = True) -> np.ndarray:
    """`vectors` without the NaN/inf check: for callers that compute the row norms in a later pass
    anyway and then call `finite_rows` on them."""
    arr = real_array(name, x)
    if arr.ndim == 1 and arr.shape[0] == dim:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array of shape (n, {dim}), got ndim {arr.ndim} "
                         f"with shape {arr.shape}")
    if arr.shape[1] != dim:
        raise ValueError(f"{name} must have {dim} columns (the index dim), got shape {arr.shape}")
    if not allow_empty and arr.shape[0] == 0:
        raise ValueError(f"{name} must hold at least one row, got shape {arr.shape}")
    return np.ascontiguousarray(arr, dtype=np.float32)


def finite_rows(name: str, norms: np.ndarray, rows: np.ndarray | None = None) -> None:
    """Raise naming the first row of `name` whose float64 norm (n,) is not finite.

    With the rows themselves (n, dim) float32, a finite row whose norm is not
    (it overflowed float32 on the way, say once rotated) gets its own message.
    """
    if np.isfinite(norms.sum()):   # one reduction: a sum of finite non-negative norms is finite
        return
    finite = np.isfinite(norms)
    if not finite.all():
        row = int(np.flatnonzero(~finite)[0])
        if rows is not None and np.isfinite(rows[row]).all():
            raise ValueError(f"{name} row {row} is too large to encode: it overflows float32 "
                             f"(largest magnitude {float(np.abs(rows[row]).max()):.3g})")
        raise ValueError(f"{name} must be finite: row {row} holds NaN or inf "
                         f"(after conversion to float32)")


def ids(name: str, value, n: int | None = None) -> np.ndarray:
    """Convert user ids to a 1-D int64 array, checking length and duplicates."""
    arr = np.asarray(value)
    if arr.ndim == 0:
        arr = arr[None]
    if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.integer) or arr.size == 0):
        raise TypeError(f"{name} must be integers (int64), got dtype {arr.dtype}")
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if n is not None and arr.shape[0] != n:
        raise ValueError(f"{name} must have one id per vector ({n}), got {arr.shape[0]}")
    if arr.size and np.issubdtype(arr.dtype, np.unsignedinteger) and arr.max() > np.iinfo(np.int64).max:
        raise ValueError(f"{name} must fit in int64, got {arr.max()}")
    arr = arr.astype(np.int64, copy=True)
    if arr.size and arr.min() < 0:
        raise ValueError(f"{name} must be non-negative (-1 marks a missing result), got {int(arr.min())}")
    if arr.size > 1:
        s = np.sort(arr)
        dup = s[1:][s[1:] == s[:-1]]
        if dup.size:
            raise ValueError(f"{name} must be unique, got duplicate id {int(dup[0])}")
    return arr


def id_filter(name: str, value) -> np.ndarray:
    """A search filter as a 1-D int64 array of ids: any order, duplicates kept (callers ignore them),
    ids no index can hold (negative, or beyond int64 in an unsigned array) dropped. A set or any
    array-like of integers; bools, floats and other dtypes are refused."""
    if isinstance(value, (set, frozenset)):
        value = list(value)
    arr = np.asarray(value)
    if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.integer) or arr.size == 0):
        raise TypeError(f"{name} must be an array-like of integer ids, got dtype {arr.dtype}")
    if arr.ndim == 0:
        arr = arr[None]
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size and np.issubdtype(arr.dtype, np.unsignedinteger):
        arr = arr[arr <= np.iinfo(np.int64).max]
    return arr.astype(np.int64, copy=False)
