"""kernels._lanes, the vector type of the lane kernels, against NumPy."""
import re

import numpy as np
import pytest
from numba import njit

from turboann.kernels import _lanes as L


def _lane_ops(a, b, table, index, tile, out_f, out_b, out_d):
    """Every operation of kernels._lanes once; index holds the lane values 0..7 as floats."""
    x, y = L.load(a, 0), L.load(b, 0)
    i = L.splat_i32(0)
    for k in range(1, 8):   # an i32x8 from the float lanes: the count of k - 1/2 below each
        i = i + (L.ge(L.load(index, 0), L.splat(k - 0.5)) & L.splat_i32(1))
    L.store(out_f, 0, x + y * L.splat(2.0) - L.splat(1))
    L.store(out_f, 8, L.permute(L.load(table, 0), i))
    L.store(out_f, 16, L.where(L.ge(x, y), x, y))
    c = ((L.splat_i32(0) - L.ge(x, y)) << 3) | L.splat_i32(5)
    L.store_bytes(out_b, 0, c >> 1)
    L.store_bytes(out_b, 8, (c & L.splat_i32(6)) * L.splat_i32(3) + i)
    w = L.widen(x)
    s = w * w + w
    for lane in range(8):
        out_d[lane] = L.get(s, lane)
    c0, c1, c2, c3, c4, c5, c6, c7 = L.transpose(tile, 0, 8)
    for k, col in enumerate((c0, c1, c2, c3, c4, c5, c6, c7)):
        L.store(out_f, 24 + 8 * k, col)
    L.store(out_f, 88, L.fma(x, y, L.load(table, 0)))


def _check_lane_ops(fn):
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(8).astype(np.float32), rng.standard_normal(8).astype(np.float32)
    a[3] = b[3]   # a tie: >= holds
    a[5] = np.nan   # ordered comparison: NaN >= anything is false
    table = rng.standard_normal(8).astype(np.float32)
    a[0] = b[0] = 1 + 2.0 ** -12   # a * b = 1 + 2^-11 + 2^-24: rounded alone, the 2^-24 is lost
    table[0] = -1
    index = rng.integers(0, 8, 8).astype(np.float32)
    tile = rng.standard_normal(64).astype(np.float32)
    out_f, out_b, out_d = np.zeros(96, np.float32), np.zeros(16, np.uint8), np.zeros(8)
    fn(a, b, table, index, tile, out_f, out_b, out_d)
    ge = (a >= b).astype(np.int32)
    np.testing.assert_array_equal(out_f[:8], a + b * np.float32(2) - np.float32(1))
    np.testing.assert_array_equal(out_f[8:16], table[index.astype(int)])
    np.testing.assert_array_equal(out_f[16:24], np.where(a >= b, a, b))
    c = (ge << 3) | 5
    np.testing.assert_array_equal(out_b[:8], c >> 1)
    np.testing.assert_array_equal(out_b[8:], (c & 6) * 3 + index.astype(int))
    np.testing.assert_array_equal(out_d, a.astype(np.float64) ** 2 + a)
    np.testing.assert_array_equal(out_f[24:88].reshape(8, 8), tile.reshape(8, 8).T)
    # fma rounds once: a * b is exact in float64, and these lanes' float64 sums round to float32 as fma does
    np.testing.assert_array_equal(out_f[88:], (a.astype(np.float64) * b + table).astype(np.float32))
    assert out_f[88] == 2.0 ** -11 + 2.0 ** -24 != a[0] * b[0] + table[0]


def test_lane_operations_match_numpy():
    fresh = njit(_lane_ops)
    _check_lane_ops(fresh)
    # vpermps, or its integer twin vpermd where LLVM keeps the result in the integer domain
    assert bool(re.search(r"vperm(ps|d)\s", "".join(fresh.inspect_asm().values()))) == L.HAS_AVX2


def test_generic_permute_ir_matches_vpermps(monkeypatch):
    """The IR used on CPUs without AVX2 has vpermps's semantics."""
    monkeypatch.setattr(L, "HAS_AVX2", False)
    fresh = njit(_lane_ops)
    _check_lane_ops(fresh)
    assert not re.search(r"vperm(ps|d)\s", "".join(fresh.inspect_asm().values()))
