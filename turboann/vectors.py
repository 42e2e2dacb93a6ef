"""Kept float32 vectors, by id, for exact re-ranking of a shortlist.

Rows are dense in insertion order; removal moves the last row into the hole.
Ids are looked up in bulk through a sorted copy of the ids, rebuilt after a
change on the next lookup, so a whole (nq, R) shortlist costs one
`searchsorted`.
"""
from __future__ import annotations

import numpy as np

from .kernels.rerank import rerank_rows
from .store import growth, grown


class KeptVectors:
    """(n, dim) float32 vectors and their int64 ids."""

    def __init__(self, dim: int):
        self.dim = dim
        self._x = np.zeros((0, dim), np.float32)
        self._ids = np.zeros(0, np.int64)
        self._n = 0
        self._lookup: tuple | None = None   # built by _row_lookup on the first `rows` call

    def __len__(self) -> int:
        return self._n

    @property
    def vectors(self) -> np.ndarray:
        return self._x[:self._n]

    @property
    def nbytes(self) -> int:
        return self._n * (4 * self.dim + 8)

    def append(self, x: np.ndarray, ids: np.ndarray) -> None:
        """Append rows x (m, dim) float32 with their ids (checked unique by the caller)."""
        n, m = self._n, x.shape[0]
        if n + m > self._x.shape[0]:
            cap = growth(self._x.shape[0], n + m)
            self._x, self._ids = grown(self._x, n, cap), grown(self._ids, n, cap)
        self._x[n:n + m] = x
        self._ids[n:n + m] = ids
        self._n = n + m
        self._lookup = None

    def rows(self, ids: np.ndarray) -> np.ndarray:
        """Row of every id (any shape, int64); -1 for ids not held (e.g. the -1 padding).

        Compact ids (the usual 0..n-1) go through a dense id -> row table, one
        gather each, far cheaper than a binary search; spread ids take a binary
        search over the sorted ids.
        """
        if self._lookup is None:
            self._lookup = self._row_lookup()
        row_of, keys, order = self._lookup
        if row_of is not None:
            held = (ids >= 0) & (ids < len(row_of))    # ids are >= 0: the table needs no offset
            return np.where(held, row_of[np.where(held, ids, 0)], -1).astype(np.int64)
        if not len(keys):
            return np.full(ids.shape, -1, np.int64)
        at = np.minimum(np.searchsorted(keys, ids), len(keys) - 1)
        return np.where(keys[at] == ids, order[at], -1).astype(np.int64)

    def _row_lookup(self) -> tuple:
        """(dense id -> row table, None, None) when the ids are compact, else (None, sorted ids, their rows)."""
        ids = self._ids[:self._n]
        if self._n and int(ids.max()) < 4 * self._n + 1024:
            row_of = np.full(int(ids.max()) + 1, -1, np.int64)
            row_of[ids] = np.arange(self._n)
            return row_of, None, None
        order = np.argsort(ids, kind="stable")
        return None, ids[order], order

    def remove(self, ids: np.ndarray) -> None:
        """Drop the rows of the held ones among ids."""
        for row in sorted(self.rows(ids).tolist(), reverse=True):
            if row < 0:
                continue
            last = self._n - 1
            self._x[row] = self._x[last]
            self._ids[row] = self._ids[last]
            self._n = last
        self._lookup = None

    def load(self, x: np.ndarray, ids: np.ndarray) -> None:
        self._x, self._ids, self._n = x, ids, x.shape[0]
        self._lookup = None

    def rerank(self, q: np.ndarray, candidates: np.ndarray, k: int, l2: bool):
        """Exact top-k of each query's candidate ids.

        q (nq, dim) float32; candidates (nq, r) int64 ids, -1 for none.
        Returns scores (nq, k) float64 best first (<q, x>, or -||q - x||^2 when
        l2) and ids (nq, k) int64, -1 padded with score -inf.
        """
        scores, cols = rerank_rows(self.vectors, self.rows(candidates), q, l2, k)
        found = cols >= 0
        ids = np.full(cols.shape, -1, np.int64)
        ids[found] = np.take_along_axis(candidates, np.where(found, cols, 0), 1)[found]
        return scores, ids
