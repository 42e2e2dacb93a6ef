"""Inverted lists: the codes of each coarse cell, contiguous in one arena.

List l holds its vectors at arena positions [start[l], start[l] + size[l]),
inside a reserved run of capacity[l] positions. Capacities and starts are
multiples of BLOCK (32), so a list always covers whole 32-vector blocks: the
blocked fast-scan layout can replace the row-major codes arena without
changing this bookkeeping. A list that outgrows its run moves to the end of
the arena with doubled capacity (amortised O(1) per vector, nothing is
reallocated per add); the arena itself grows geometrically and is compacted
(holes dropped) whenever it grows. Removal moves the list's last vector
into the hole. Arena positions are the "slots" the scan kernel returns.
"""
from __future__ import annotations

import numpy as np

BLOCK = 32
_MIN_ARENA = 1024


def _round_up(n, m: int = BLOCK):
    return -(-n // m) * m


class InvertedLists:
    """nlist lists of codes (code_bytes uint8), factors (n_factors float32) and int64 ids."""

    def __init__(self, nlist: int, code_bytes: int, n_factors: int):
        self.nlist = nlist
        self.code_bytes = code_bytes
        self.n_factors = n_factors
        self.start = np.zeros(nlist, np.int64)
        self.size = np.zeros(nlist, np.int64)
        self.capacity = np.zeros(nlist, np.int64)
        self._codes = np.zeros((0, code_bytes), np.uint8)
        self._factors = np.zeros((0, n_factors), np.float32)
        self._ids = np.zeros(0, np.int64)
        self._owner = np.zeros(0, np.int32)     # list number of every position
        self._end = 0                           # first position past every reserved run
        self._pos_of: dict[int, int] | None = None
        self.next_id = 0

    def __len__(self) -> int:
        return int(self.size.sum())

    # -- arrays the kernels read ----------------------------------------------
    @property
    def codes(self) -> np.ndarray:
        """The arena's codes (arena size, code_bytes); only positions inside lists are meaningful."""
        return self._codes

    @property
    def factors(self) -> np.ndarray:
        return self._factors

    @property
    def ids(self) -> np.ndarray:
        """Id at every arena position (-1 outside lists)."""
        return self._ids

    @property
    def nbytes(self) -> int:
        """Bytes of codes + factors + ids held (reserved slack not counted)."""
        return len(self) * (self.code_bytes + 4 * self.n_factors + 8)

    @property
    def reserved_bytes(self) -> int:
        """Bytes of the whole arena, slack and holes included."""
        return self._codes.shape[0] * (self.code_bytes + 4 * self.n_factors + 8 + 4)

    def positions(self) -> np.ndarray:
        """Arena positions of every held vector, list by list (int64)."""
        if not len(self):
            return np.zeros(0, np.int64)
        return np.concatenate([np.arange(s, s + n) for s, n in zip(self.start.tolist(), self.size.tolist()) if n])

    # -- adding -----------------------------------------------------------------
    def append(self, list_no: np.ndarray, codes: np.ndarray, factors: np.ndarray, ids: np.ndarray) -> None:
        """Append rows to the lists list_no (n,) int; ids must be checked unique by the caller."""
        if not len(ids):
            return
        order = np.argsort(list_no, kind="stable")
        counts = np.bincount(list_no, minlength=self.nlist)
        self._reserve(counts)
        first = 0
        for l in np.flatnonzero(counts).tolist():
            rows = order[first:first + counts[l]]
            first += counts[l]
            at = int(self.start[l] + self.size[l])
            end = at + len(rows)
            self._codes[at:end] = codes[rows]
            self._factors[at:end] = factors[rows]
            self._ids[at:end] = ids[rows]
            self._owner[at:end] = l
            if self._pos_of is not None:
                self._pos_of.update(zip(ids[rows].tolist(), range(at, end)))
            self.size[l] += len(rows)
        self.next_id = max(self.next_id, int(ids.max()) + 1)

    def _reserve(self, extra: np.ndarray) -> None:
        """Make room for extra[l] more vectors in every list l."""
        need = self.size + extra
        grow = np.flatnonzero(need > self.capacity)
        if not grow.size:
            return
        new_cap = self.capacity.copy()
        new_cap[grow] = _round_up(np.maximum(need[grow], 2 * self.capacity[grow]))
        if self._end + int(new_cap[grow].sum()) > self._codes.shape[0]:
            self._regrow(new_cap)
            return
        for l in grow.tolist():     # move each outgrown list to the end of the arena
            self._move(l, self._end)
            self.capacity[l] = new_cap[l]
            self._end += int(new_cap[l])

    def _move(self, l: int, to: int) -> None:
        s, n = int(self.start[l]), int(self.size[l])
        for a in (self._codes, self._factors, self._ids, self._owner):
            a[to:to + n] = a[s:s + n]
        self._ids[s:s + n] = -1     # `to` lies past every reserved run, so the ranges never overlap
        self.start[l] = to
        if self._pos_of is not None:
            self._pos_of.update(zip(self._ids[to:to + n].tolist(), range(to, to + n)))

    def _regrow(self, new_cap: np.ndarray) -> None:
        """A larger arena with the lists laid out afresh (no holes) at capacities new_cap."""
        total = int(new_cap.sum())
        size = max(total, 2 * self._codes.shape[0], _MIN_ARENA)
        codes = np.zeros((size, self.code_bytes), np.uint8)
        factors = np.zeros((size, self.n_factors), np.float32)
        ids = np.full(size, -1, np.int64)
        owner = np.zeros(size, np.int32)
        start = np.zeros(self.nlist, np.int64)
        start[1:] = np.cumsum(new_cap)[:-1]
        for l in np.flatnonzero(self.size).tolist():
            s, t, n = int(self.start[l]), int(start[l]), int(self.size[l])
            codes[t:t + n] = self._codes[s:s + n]
            factors[t:t + n] = self._factors[s:s + n]
            ids[t:t + n] = self._ids[s:s + n]
            owner[t:t + n] = l
        self._codes, self._factors, self._ids, self._owner = codes, factors, ids, owner
        self.start, self.capacity, self._end = start, new_cap, total
        self._pos_of = None

    # -- ids ----------------------------------------------------------------------
    def _pos_map(self) -> dict[int, int]:
        if self._pos_of is None:
            pos = self.positions()
            self._pos_of = dict(zip(self._ids[pos].tolist(), pos.tolist()))
        return self._pos_of

    def contains(self, ids: np.ndarray) -> np.ndarray:
        """Boolean mask of which ids (int64 array) are held."""
        if self._pos_of is not None:
            return np.fromiter((int(i) in self._pos_of for i in ids), bool, len(ids))
        return np.isin(ids, self._ids[self.positions()])

    def slots(self, ids: np.ndarray) -> np.ndarray:
        """Arena position of every id (int64 array); -1 where absent."""
        pos_of = self._pos_map()
        return np.fromiter((pos_of.get(int(i), -1) for i in ids), np.int64, len(ids))

    def remove(self, ids: np.ndarray) -> int:
        """Remove the held ones among ids; return how many were removed."""
        pos_of = self._pos_map()
        removed = 0
        for i in ids.tolist():
            pos = pos_of.pop(i, None)
            if pos is None:
                continue
            l = int(self._owner[pos])
            last = int(self.start[l] + self.size[l] - 1)
            if pos != last:
                self._codes[pos] = self._codes[last]
                self._factors[pos] = self._factors[last]
                moved = int(self._ids[last])
                self._ids[pos] = moved
                pos_of[moved] = pos
            self._ids[last] = -1
            self.size[l] -= 1
            removed += 1
        return removed

    # -- persistence ----------------------------------------------------------------
    def export(self):
        """(codes, factors, ids, sizes): the lists concatenated in list order, without slack."""
        pos = self.positions()
        return self._codes[pos], self._factors[pos], self._ids[pos], self.size.copy()

    def load(self, codes: np.ndarray, factors: np.ndarray, ids: np.ndarray, sizes: np.ndarray,
             next_id: int) -> None:
        """Replace the contents with lists concatenated in list order (inverse of `export`)."""
        self.size = np.zeros(self.nlist, np.int64)
        self.capacity = np.zeros(self.nlist, np.int64)
        self._end = 0
        self._codes = self._codes[:0]
        self._regrow(_round_up(sizes.astype(np.int64)))
        bounds = np.concatenate([[0], np.cumsum(sizes)])
        for l in np.flatnonzero(sizes).tolist():
            rows = slice(int(bounds[l]), int(bounds[l + 1]))
            at, n = int(self.start[l]), int(sizes[l])
            self._codes[at:at + n] = codes[rows]
            self._factors[at:at + n] = factors[rows]
            self._ids[at:at + n] = ids[rows]
            self._owner[at:at + n] = l
        self.size = sizes.astype(np.int64)
        self.next_id = next_id
