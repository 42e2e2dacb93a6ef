"""Packed codes, per-vector factors and user ids, in slot order.

Slots are dense 0..n-1. `CodeStore` keeps codes row-major;
`BlockedCodeStore` keeps the same codes in the fast-scan layout (blocks of
32 vectors, see `kernels.fastscan`) behind the same interface. Appends grow the arrays geometrically (amortised
O(1) per vector, no reallocation per add); removal moves the last slot into
the hole (O(removed)). The id -> slot map is built on first need, so an
index that only ever adds with default ids never pays for it.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .kernels import encode as _enc
from .kernels import fastscan as _fs


def grown(arr: np.ndarray, used: int, rows: int) -> np.ndarray:
    """A zeroed array of `rows` rows shaped like `arr`, holding its first `used` rows."""
    new = np.zeros((rows,) + arr.shape[1:], arr.dtype)
    new[:used] = arr[:used]
    return new


def growth(capacity: int, need: int) -> int:
    """The capacity to grow to for `need` rows: at least double, so appends cost O(1) amortised."""
    return max(need, 2 * capacity, 1024)


class SlotFilter(NamedTuple):
    """A search filter in slot terms: mask (n_slots,) uint8, 1 where a slot may be returned (the
    kernels' `allowed`), and slots, those slots ascending (int64)."""
    mask: np.ndarray
    slots: np.ndarray


class SlotLookup:
    """Vectorised id -> slot lookup over held (id, slot) pairs, built once per change of the contents.

    Compact ids (the usual 0..n-1) take a dense id -> slot table, one
    gather a looked-up id; spread ids a binary search over the sorted ids.
    Building it reads every id once: a filter with m ids then costs O(m)
    (or O(m log n)), where the store's dict would cost a Python call each.
    """

    def __init__(self, ids: np.ndarray, slots: np.ndarray):
        self._table = self._keys = self._slots = None
        if ids.size and int(ids.max()) < 4 * ids.size + 1024:
            self._table = np.full(int(ids.max()) + 1, -1, np.int64)
            self._table[ids] = slots
        else:
            order = np.argsort(ids, kind="stable")
            self._keys, self._slots = ids[order], slots[order]

    def slots(self, ids: np.ndarray) -> np.ndarray:
        """Slot of every id (int64 array, any values); only the held ones' slots, in no set order."""
        if self._table is not None:
            ids = ids[(ids >= 0) & (ids < len(self._table))]
            found = self._table[ids]
            return found[found >= 0]
        if not len(self._keys):
            return np.zeros(0, np.int64)
        at = np.minimum(np.searchsorted(self._keys, ids), len(self._keys) - 1)
        return self._slots[at[self._keys[at] == ids]]


def slot_filter(lookup: SlotLookup, ids: np.ndarray, n_slots: int) -> SlotFilter:
    """The `SlotFilter` of ids (checked int64, any order, duplicates and unknown ids ignored).

    The slots come from sorting the m found ones, not from a pass over the mask: O(m log m)
    against O(n_slots), which a sparse filter of a large index would pay on every search.
    """
    slots = np.sort(lookup.slots(ids))
    if slots.size > 1:
        slots = slots[np.concatenate(([True], slots[1:] != slots[:-1]))]   # duplicates once
    mask = np.zeros(n_slots, np.uint8)
    mask[slots] = 1
    return SlotFilter(mask, slots)


class CodeStore:
    """Row-major store: codes (n, code_bytes) uint8, factors (n, nf) float32, ids (n,) int64.

    With `factor_codes` (a `compact.FactorCodes`) the factors are kept
    packed, (n, factor_codes.columns) uint8, and `factors` unpacks them.
    """

    def __init__(self, code_bytes: int, n_factors: int, capacity: int = 0, factor_codes=None):
        self.code_bytes = code_bytes
        self.n_factors = n_factors
        self.factor_codes = factor_codes
        self._codes = np.zeros((capacity, code_bytes), np.uint8)
        if factor_codes is None:
            self._factors = np.zeros((capacity, n_factors), np.float32)
        else:
            self._factors = np.zeros((capacity, factor_codes.columns), np.uint8)
        self._ids = np.zeros(capacity, np.int64)
        self._n = 0
        self._slot_of: dict[int, int] | None = None
        self._lookup: SlotLookup | None = None   # for filters: built on first need, dropped on change
        self.next_id = 0   # one past the largest id ever held: default ids never collide

    def __len__(self) -> int:
        return self._n

    @property
    def codes(self) -> np.ndarray:
        return self._codes[:self._n]

    @property
    def factors(self) -> np.ndarray:
        """The kernels' factors (n, n_factors) float32 (unpacked when packed)."""
        held = self._factors[:self._n]
        return held if self.factor_codes is None else self.factor_codes.unpack(held)

    @property
    def stored_factors(self) -> np.ndarray:
        """The factors as kept: float32 (n, n_factors), or packed uint8 (n, columns)."""
        return self._factors[:self._n]

    @property
    def factor_bytes(self) -> int:
        """Bytes of factors per vector."""
        return self._factors.itemsize * self._factors.shape[1]

    def factor_layout(self) -> tuple[int, np.dtype]:
        """(columns, dtype) of the factors as kept and saved (`stored_factors`)."""
        return self._factors.shape[1], self._factors.dtype

    @property
    def ids(self) -> np.ndarray:
        return self._ids[:self._n]

    @property
    def nbytes(self) -> int:
        """Bytes of codes + factors + ids actually held."""
        return self._n * (self.vector_code_bytes + self.factor_bytes + 8)

    @property
    def vector_code_bytes(self) -> int:
        """Bytes of codes held per vector in this store's layout."""
        return self.code_bytes

    def _reserve(self, n: int) -> None:
        cap = self._ids.shape[0]
        if n <= cap:
            return
        cap = growth(cap, n)
        self._factors = grown(self._factors, self._n, cap)
        self._ids = grown(self._ids, self._n, cap)
        self._grow_codes(cap)

    # -- the code layout: overridden by BlockedCodeStore ----------------------
    def _grow_codes(self, cap: int) -> None:
        self._codes = grown(self._codes, self._n, cap)

    def _write_codes(self, start: int, codes: np.ndarray) -> None:
        self._codes[start:start + codes.shape[0]] = codes

    def _move_code(self, src: int, dst: int) -> None:
        self._codes[dst] = self._codes[src]

    def _set_codes(self, codes: np.ndarray) -> None:
        self._codes = codes

    def contains(self, ids: np.ndarray) -> np.ndarray:
        """Boolean mask of which ids (int64 array) are held."""
        if self._slot_of is not None:
            return np.fromiter((int(i) in self._slot_of for i in ids), bool, len(ids))
        return np.isin(ids, self.ids)

    def filter(self, ids: np.ndarray) -> SlotFilter:
        """The slots of the held ones among ids (int64, any order), as a `SlotFilter` over len(self) slots."""
        lookup = self._lookup
        if lookup is None:   # searches may build it at once: each builds the same, one is kept
            lookup = self._lookup = SlotLookup(self.ids, np.arange(self._n, dtype=np.int64))
        return slot_filter(lookup, ids, self._n)

    def code_target(self, m: int, bits: int) -> _enc.CodeTarget:
        """Room for m more vectors: where the codes of slots len(self)..len(self)+m-1 go, for an encoder
        to write before `commit`. bits: per coordinate of the codes' first segment."""
        self._reserve(self._n + m)
        return _enc.row_major_target(self._codes, 0, bits)

    def append(self, codes: np.ndarray, factors: np.ndarray, ids: np.ndarray) -> None:
        """Append rows; ids must be checked for uniqueness by the caller."""
        self._reserve(self._n + codes.shape[0])
        self._write_codes(self._n, codes)
        self.commit(factors, ids)

    def commit(self, factors: np.ndarray, ids: np.ndarray) -> None:
        """Take in the next len(ids) slots, whose codes are written (`code_target`, `append`)."""
        n, m = self._n, ids.shape[0]
        self._lookup = None
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
        self._lookup = None
        removed = 0
        for i in ids.tolist():
            slot = slot_of.pop(i, None)
            if slot is None:
                continue
            last = self._n - 1
            if slot != last:
                self._move_code(last, slot)
                self._factors[slot] = self._factors[last]
                moved = int(self._ids[last])
                self._ids[slot] = moved
                slot_of[moved] = slot
            self._n = last
            removed += 1
        return removed

    def load_arrays(self, codes: np.ndarray, factors: np.ndarray, ids: np.ndarray, next_id: int) -> None:
        """Replace the contents (used by `Index._from_file`)."""
        self._factors, self._ids = factors, ids
        self._n = codes.shape[0]
        self._set_codes(codes)
        self._slot_of = None
        self._lookup = None
        self.next_id = next_id


class BlockedCodeStore(CodeStore):
    """Codes in the fast-scan layout: `blocks` (n_blocks, rows, 32) uint8.

    `codes` still returns row-major codes (rebuilt, for saving); `split_factors`
    gives the factors in the order the fast-scan kernel wants, cached until
    the next change.
    """

    def __init__(self, code_bytes: int, n_factors: int, layout: _fs.BlockLayout, capacity: int = 0,
                 factor_codes=None):
        self.layout = layout
        self._blocks = np.zeros((_fs.n_blocks(capacity), layout.rows, _fs.BLOCK), np.uint8)
        self._split = None
        super().__init__(code_bytes, n_factors, capacity, factor_codes)

    @property
    def blocks(self) -> np.ndarray:
        return self._blocks[:_fs.n_blocks(self._n)]

    @property
    def codes(self) -> np.ndarray:
        runs = [_fs.unpack_blocks(self._blocks[:, sub0 // 2:], self._n, width, n_sub, (count * bits + 7) // 8)
                for count, bits, width, sub0, n_sub in _fs.layout_parts(self.layout)]
        return runs[0] if len(runs) == 1 else np.hstack(runs)

    @property
    def vector_code_bytes(self) -> int:
        return self.layout.rows

    @property
    def nbytes(self) -> int:
        """As `CodeStore.nbytes`, plus the factors' copy in split order (8 B a vector) that the first
        search builds."""
        return super().nbytes + _fs.SPLIT_BYTES * self._n

    def split_factors(self) -> np.ndarray:
        """(2, n_blocks * 32) float32: see `kernels.fastscan.split_factors`."""
        if self._split is None:
            self._split = _fs.split_factors(self.factors, self._n)
        return self._split

    def code_target(self, m: int, bits: int) -> _enc.CodeTarget:
        self._reserve(self._n + m)
        return _enc.blocked_target(self._blocks, self.layout.bits)

    def commit(self, factors: np.ndarray, ids: np.ndarray) -> None:
        self._split = None
        super().commit(factors, ids)

    def remove(self, ids: np.ndarray) -> int:
        self._split = None
        return super().remove(ids)

    def load_blocks(self, blocks: np.ndarray, split: np.ndarray, factors: np.ndarray, ids: np.ndarray,
                    next_id: int) -> None:
        """Take blocks (n_blocks(n), rows, 32) uint8 and their `split_factors` (2, n_blocks * 32) float32
        as they are, with the factors as kept and ids (n,): no copy, they may be mapped from a file."""
        self.load_arrays(np.zeros((0, self.code_bytes), np.uint8), factors, ids, next_id)
        self._n = ids.shape[0]
        self._blocks, self._split = blocks, split

    def _grow_codes(self, cap: int) -> None:
        self._blocks = grown(self._blocks, _fs.n_blocks(self._n), _fs.n_blocks(cap))

    def _write_codes(self, start: int, codes: np.ndarray) -> None:
        offset = 0
        for count, bits, _, sub0, _ in _fs.layout_parts(self.layout):
            _enc.write_into(codes, offset, bits, count, _enc.blocked_target(self._blocks, bits, sub0 // 2), start)
            offset += (count * bits + 7) // 8

    def _move_code(self, src: int, dst: int) -> None:
        _fs.move_slot(self._blocks, src, dst)

    def _set_codes(self, codes: np.ndarray) -> None:
        self._split = None
        self._blocks = np.zeros((_fs.n_blocks(codes.shape[0]),) + self._blocks.shape[1:], np.uint8)
        self._write_codes(0, codes)
