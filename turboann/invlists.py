"""Inverted lists: the codes of each coarse cell, contiguous in one arena.

List l holds its vectors at arena positions [start[l], start[l] + size[l]),
inside a reserved run of capacity[l] positions. Capacities and starts are
multiples of BLOCK (32), so a list always covers whole 32-vector blocks:
`BlockedInvertedLists` keeps the arena's codes in the fast-scan layout
(`kernels.fastscan`) with the same bookkeeping, list l owning blocks
start[l] / 32 onwards. A list that outgrows its run moves to the end of
the arena with doubled capacity (amortised O(1) per vector, nothing is
reallocated per add); the arena itself grows geometrically and is compacted
(holes dropped) whenever it grows. Removal moves the list's last vector
into the hole. Arena positions are the "slots" the scan kernel returns.
"""
from __future__ import annotations

import numpy as np

from .kernels import encode as _enc
from .kernels import fastscan as _fs
from .store import SlotFilter, SlotLookup, slot_filter

BLOCK = _fs.BLOCK
_MIN_ARENA = 1024


def _round_up(n, m: int = BLOCK):
    return -(-n // m) * m


def _run_starts(capacity: np.ndarray) -> np.ndarray:
    """Starts (nlist,) int64 of runs of these capacities laid one after the other from 0."""
    start = np.zeros(len(capacity), np.int64)
    start[1:] = np.cumsum(capacity)[:-1]
    return start


def arena_runs(sizes: np.ndarray) -> np.ndarray:
    """The run capacities of lists of these sizes laid out without slack: whole 32-vector blocks."""
    return _round_up(sizes.astype(np.int64))


class InvertedLists:
    """nlist lists of codes (code_bytes uint8), factors (n_factors float32) and int64 ids."""

    def __init__(self, nlist: int, code_bytes: int, n_factors: int):
        self.nlist = nlist
        self.code_bytes = code_bytes
        self.n_factors = n_factors
        self.start = np.zeros(nlist, np.int64)
        self.size = np.zeros(nlist, np.int64)
        self.capacity = np.zeros(nlist, np.int64)
        self._codes = self._new_codes(0)
        self._factors = np.zeros((0, n_factors), np.float32)
        self._ids = np.zeros(0, np.int64)
        self._owner = np.zeros(0, np.int32)     # list number of every position
        self._end = 0                           # first position past every reserved run
        self._pos_of: dict[int, int] | None = None
        self._lookup: SlotLookup | None = None   # for filters: built on first need, dropped on change
        self.next_id = 0

    def __len__(self) -> int:
        return int(self.size.sum())

    # -- arrays the kernels read ----------------------------------------------
    @property
    def codes(self) -> np.ndarray:
        """The arena's codes (arena size, code_bytes); only positions inside lists are meaningful."""
        return self._codes

    @property
    def arena_size(self) -> int:
        """Positions in the arena, reserved or not (a multiple of BLOCK)."""
        return self._ids.shape[0]

    @property
    def vector_code_bytes(self) -> int:
        """Bytes of codes held per vector in this layout."""
        return self.code_bytes

    # -- the code layout: overridden by BlockedInvertedLists ----------------------
    def _new_codes(self, size: int) -> np.ndarray:
        return np.zeros((size, self.code_bytes), np.uint8)

    def _write_codes(self, pos: np.ndarray, codes: np.ndarray) -> None:
        """Write codes (m, code_bytes) at arena positions pos (m,) int64."""
        self._codes[pos] = codes

    def _copy_run(self, src: np.ndarray, s: int, dst: np.ndarray, t: int, n: int) -> None:
        """Codes of positions s..s+n-1 of arena src into t..t+n-1 of dst (s, t multiples of BLOCK)."""
        dst[t:t + n] = src[s:s + n]

    def _move_code(self, src: int, dst: int) -> None:
        self._codes[dst] = self._codes[src]

    def _changed(self) -> None:
        """Called before every change of the contents."""
        self._lookup = None

    @property
    def factors(self) -> np.ndarray:
        return self._factors

    @property
    def ids(self) -> np.ndarray:
        """Id at every arena position (-1 outside lists)."""
        return self._ids

    @property
    def factor_bytes(self) -> int:
        """Bytes of factors per vector (float32 each)."""
        return 4 * self.n_factors

    def factor_layout(self) -> tuple[int, np.dtype]:
        """(columns, dtype) of the factors as kept and saved."""
        return self.n_factors, np.dtype(np.float32)

    @property
    def nbytes(self) -> int:
        """Bytes of codes + factors + ids held (reserved slack not counted)."""
        return len(self) * (self.vector_code_bytes + self.factor_bytes + 8)

    @property
    def reserved_bytes(self) -> int:
        """Bytes of the whole arena, slack and holes included."""
        return self.arena_size * (self.vector_code_bytes + self.factor_bytes + 8 + 4)

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
        self._changed()
        order = np.argsort(list_no, kind="stable")
        counts = np.bincount(list_no, minlength=self.nlist)
        self._reserve(counts)
        pos = np.empty(len(ids), np.int64)     # arena position of row order[i]
        first = 0
        for l in np.flatnonzero(counts).tolist():
            rows = order[first:first + counts[l]]
            at = int(self.start[l] + self.size[l])
            end = at + len(rows)
            pos[first:first + counts[l]] = np.arange(at, end)
            first += counts[l]
            self._factors[at:end] = factors[rows]
            self._ids[at:end] = ids[rows]
            self._owner[at:end] = l
            if self._pos_of is not None:
                self._pos_of.update(zip(ids[rows].tolist(), range(at, end)))
            self.size[l] += len(rows)
        self._write_codes(pos, codes[order])
        self.next_id = max(self.next_id, int(ids.max()) + 1)

    def _reserve(self, extra: np.ndarray) -> None:
        """Make room for extra[l] more vectors in every list l."""
        need = self.size + extra
        grow = np.flatnonzero(need > self.capacity)
        if not grow.size:
            return
        new_cap = self.capacity.copy()
        new_cap[grow] = _round_up(np.maximum(need[grow], 2 * self.capacity[grow]))
        if self._end + int(new_cap[grow].sum()) > self.arena_size:
            self._regrow(new_cap)
            return
        for l in grow.tolist():     # move each outgrown list to the end of the arena
            self._move(l, self._end)
            self.capacity[l] = new_cap[l]
            self._end += int(new_cap[l])

    def _move(self, l: int, to: int) -> None:
        s, n = int(self.start[l]), int(self.size[l])
        self._copy_run(self._codes, s, self._codes, to, n)
        for a in (self._factors, self._ids, self._owner):
            a[to:to + n] = a[s:s + n]
        self._ids[s:s + n] = -1     # `to` lies past every reserved run, so the ranges never overlap
        self.start[l] = to
        if self._pos_of is not None:
            self._pos_of.update(zip(self._ids[to:to + n].tolist(), range(to, to + n)))

    def _regrow(self, new_cap: np.ndarray) -> None:
        """A larger arena with the lists laid out afresh (no holes) at capacities new_cap."""
        total = int(new_cap.sum())
        size = max(total, 2 * self.arena_size, _MIN_ARENA)
        self._codes, self._factors, self._ids, self._owner, self.start = self._laid_out(new_cap, size)
        self.capacity, self._end = new_cap, total
        self._pos_of = None

    def _laid_out(self, new_cap: np.ndarray, size: int):
        """(codes, factors, ids, owner, start): a new arena of `size` positions holding the lists one
        after the other at capacities new_cap (ids -1 outside lists)."""
        codes = self._new_codes(size)
        factors = np.zeros((size, self.n_factors), np.float32)
        ids = np.full(size, -1, np.int64)
        owner = np.zeros(size, np.int32)
        start = _run_starts(new_cap)
        for l in np.flatnonzero(self.size).tolist():
            s, t, n = int(self.start[l]), int(start[l]), int(self.size[l])
            self._copy_run(self._codes, s, codes, t, n)
            factors[t:t + n] = self._factors[s:s + n]
            ids[t:t + n] = self._ids[s:s + n]
            owner[t:t + n] = l
        return codes, factors, ids, owner, start

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

    def filter(self, ids: np.ndarray) -> SlotFilter:
        """The arena positions of the held ones among ids (int64, any order), as a `SlotFilter`."""
        lookup = self._lookup
        if lookup is None:   # searches may build it at once: each builds the same, one is kept
            pos = np.flatnonzero(self._ids >= 0)
            lookup = self._lookup = SlotLookup(self._ids[pos], pos)
        return slot_filter(lookup, ids, self.arena_size)

    def list_of(self, positions: np.ndarray) -> np.ndarray:
        """The list holding each arena position (int64 array of held positions): (m,) int64."""
        held = np.flatnonzero(self.size)   # their runs are disjoint; an empty list's start may be any
        order = held[np.argsort(self.start[held], kind="stable")]
        at = np.searchsorted(self.start[order], positions, side="right") - 1
        return order[at]

    def slots(self, ids: np.ndarray) -> np.ndarray:
        """Arena position of every id (int64 array); -1 where absent."""
        pos_of = self._pos_map()
        return np.fromiter((pos_of.get(int(i), -1) for i in ids), np.int64, len(ids))

    def remove(self, ids: np.ndarray) -> int:
        """Remove the held ones among ids; return how many were removed."""
        pos_of = self._pos_map()
        self._changed()
        removed = 0
        for i in ids.tolist():
            pos = pos_of.pop(i, None)
            if pos is None:
                continue
            l = int(self._owner[pos])
            last = int(self.start[l] + self.size[l] - 1)
            if pos != last:
                self._move_code(last, pos)
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
        return self.codes[pos], self._factors[pos], self._ids[pos], self.size.copy()

    def export_arena(self):
        """(codes, factors, ids): the arena laid out afresh, list by list in runs of whole blocks
        (`arena_runs`) with no holes, ids -1 in the padding: the layout `load_arena` maps."""
        cap = arena_runs(self.size)
        return self._laid_out(cap, int(cap.sum()))[:3]

    def load_arena(self, codes: np.ndarray, factors: np.ndarray, ids: np.ndarray, sizes: np.ndarray,
                   runs: np.ndarray, next_id: int, writable: bool = True) -> None:
        """Take arena arrays as they are (no copy: they may be mapped from a file): list l holds
        sizes[l] vectors from the sum of runs before it. writable=False skips the bookkeeping only
        writes need (list owners: 4 B a position), for a read-only index."""
        self._changed()
        self._codes, self._factors, self._ids = codes, factors, ids
        self.size, self.capacity = sizes.astype(np.int64), runs.astype(np.int64)
        self.start = _run_starts(self.capacity)
        self._end = int(self.capacity.sum())
        self._owner = (np.repeat(np.arange(self.nlist, dtype=np.int32), self.capacity) if writable
                       else np.zeros(0, np.int32))
        self._pos_of = None
        self.next_id = next_id

    def load(self, codes: np.ndarray, factors: np.ndarray, ids: np.ndarray, sizes: np.ndarray,
             next_id: int) -> None:
        """Replace the contents with lists concatenated in list order (inverse of `export`)."""
        self._changed()
        self.size = np.zeros(self.nlist, np.int64)
        self.capacity = np.zeros(self.nlist, np.int64)
        self._end = 0
        self._ids = self._ids[:0]
        self._regrow(_round_up(sizes.astype(np.int64)))
        self.size = sizes.astype(np.int64)
        pos = self.positions()              # list by list, as the rows come
        self._write_codes(pos, codes)
        self._factors[pos] = factors
        self._ids[pos] = ids
        self._owner[pos] = np.repeat(np.arange(self.nlist, dtype=np.int32), self.size)
        self.next_id = next_id


class BlockedInvertedLists(InvertedLists):
    """Inverted lists whose arena codes are fast-scan blocks (arena size / 32, rows, 32) uint8.

    `codes` still returns row-major codes (rebuilt: for saving and tests);
    `split_factors` gives the arena's factors in the order the fast-scan
    kernel wants, cached until the next change. Padding positions of a
    list's last block hold stale codes and factors: the kernel stops at the
    list's size.
    """

    def __init__(self, nlist: int, code_bytes: int, n_factors: int, layout: _fs.BlockLayout):
        self.layout = layout
        self._split = None
        super().__init__(nlist, code_bytes, n_factors)

    @property
    def blocks(self) -> np.ndarray:
        return self._codes

    @property
    def codes(self) -> np.ndarray:
        lay = self.layout
        return _fs.unpack_blocks(self._codes, self.arena_size, lay.width, lay.n_sub, self.code_bytes)

    @property
    def vector_code_bytes(self) -> int:
        return self.layout.rows

    @property
    def nbytes(self) -> int:
        """As `InvertedLists.nbytes`, plus the factors' copy in split order (8 B a vector) that the
        first search builds."""
        return super().nbytes + _fs.SPLIT_BYTES * len(self)

    @property
    def reserved_bytes(self) -> int:
        return super().reserved_bytes + _fs.SPLIT_BYTES * self.arena_size

    def split_factors(self) -> np.ndarray:
        """(2, arena size) float32: see `kernels.fastscan.split_factors`."""
        if self._split is None:
            self._split = _fs.split_factors(self._factors, self.arena_size)
        return self._split

    def load_arena(self, codes, factors, ids, sizes, runs, next_id, writable=True, split=None) -> None:
        """`InvertedLists.load_arena` of blocks; split: their `split_factors` (saved with them), or
        None to compute it on the first search."""
        super().load_arena(codes, factors, ids, sizes, runs, next_id, writable)
        self._split = split

    def _changed(self) -> None:
        super()._changed()
        self._split = None

    def _new_codes(self, size: int) -> np.ndarray:
        return np.zeros((_fs.n_blocks(size), self.layout.rows, BLOCK), np.uint8)

    def _write_codes(self, pos: np.ndarray, codes: np.ndarray) -> None:
        lay = self.layout
        _enc.write_into(codes, 0, lay.bits, lay.dim, _enc.blocked_target(self._codes, lay.bits), pos)

    def _copy_run(self, src: np.ndarray, s: int, dst: np.ndarray, t: int, n: int) -> None:
        nb = _fs.n_blocks(n)
        dst[t // BLOCK:t // BLOCK + nb] = src[s // BLOCK:s // BLOCK + nb]

    def _move_code(self, src: int, dst: int) -> None:
        _fs.move_slot(self._codes, src, dst)
