"""Packed codes, per-vector factors and user ids, in slot order.

Slots are dense 0..n-1. Appends grow the arrays geometrically (amortised
O(1) per vector, no reallocation per add); removal moves the last slot into
the hole (O(removed)). The id -> slot map is built on first need, so an
index that only ever adds with default ids never pays for it.
"""
from __future__ import annotations

import numpy as np


class CodeStore:
    """Row-major store: codes (n, code_bytes) uint8, factors (n, nf) float32, ids (n,) int64."""

    def __init__(self, code_bytes: int, n_factors: int, capacity: int = 0):
        self.code_bytes = code_bytes
        self.n_factors = n_factors
        self._codes = np.zeros((capacity, code_bytes), np.uint8)
        self._factors = np.zeros((capacity, n_factors), np.float32)
        self._ids = np.zeros(capacity, np.int64)
        self._n = 0
        self._slot_of: dict[int, int] | None = None
        self.next_id = 0   # one past the largest id ever held: default ids never collide

    def __len__(self) -> int:
        return self._n

    @property
    def codes(self) -> np.ndarray:
        return self._codes[:self._n]

    @property
    def factors(self) -> np.ndarray:
        return self._factors[:self._n]

    @property
    def ids(self) -> np.ndarray:
        return self._ids[:self._n]

    @property
    def nbytes(self) -> int:
        """Bytes of codes + factors + ids actually held."""
        return self._n * (self.code_bytes + 4 * self.n_factors + 8)

    def _reserve(self, n: int) -> None:
        cap = self._codes.shape[0]
        if n <= cap:
            return
        cap = max(n, 2 * cap, 1024)
        for name in ("_codes", "_factors", "_ids"):
            old = getattr(self, name)
            new = np.zeros((cap,) + old.shape[1:], old.dtype)
            new[:self._n] = old[:self._n]
            setattr(self, name, new)

    def contains(self, ids: np.ndarray) -> np.ndarray:
        """Boolean mask of which ids (int64 array) are held."""
        if self._slot_of is not None:
            return np.fromiter((int(i) in self._slot_of for i in ids), bool, len(ids))
        return np.isin(ids, self.ids)

    def append(self, codes: np.ndarray, factors: np.ndarray, ids: np.ndarray) -> None:
        """Append rows; ids must be checked for uniqueness by the caller."""
        n, m = self._n, codes.shape[0]
        self._reserve(n + m)
        self._codes[n:n + m] = codes
        self._factors[n:n + m] = factors
        self._ids[n:n + m] = ids
        if self._slot_of is not None:
            self._slot_of.update(zip(ids.tolist(), range(n, n + m)))
        self._n = n + m
        if m:
            self.next_id = max(self.next_id, int(ids.max()) + 1)

    def slots(self, ids: np.ndarray) -> np.ndarray:
        """Slot of every id (int64 array); -1 where absent."""
        slot_of = self._slot_map()
        return np.fromiter((slot_of.get(int(i), -1) for i in ids), np.int64, len(ids))

    def _slot_map(self) -> dict[int, int]:
        if self._slot_of is None:
            self._slot_of = dict(zip(self.ids.tolist(), range(self._n)))
        return self._slot_of

    def remove(self, ids: np.ndarray) -> int:
        """Remove the held ones among ids; return how many were removed."""
        slot_of = self._slot_map()
        removed = 0
        for i in ids.tolist():
            slot = slot_of.pop(i, None)
            if slot is None:
                continue
            last = self._n - 1
            if slot != last:
                self._codes[slot] = self._codes[last]
                self._factors[slot] = self._factors[last]
                moved = int(self._ids[last])
                self._ids[slot] = moved
                slot_of[moved] = slot
            self._n = last
            removed += 1
        return removed

    def load_arrays(self, codes: np.ndarray, factors: np.ndarray, ids: np.ndarray, next_id: int) -> None:
        """Replace the contents (used by `io.load`)."""
        self._codes, self._factors, self._ids = codes, factors, ids
        self._n = codes.shape[0]
        self._slot_of = None
        self.next_id = next_id
