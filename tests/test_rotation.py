"""Random rotations: orthogonal, reproducible, kernel equals reference, good enough to quantize."""
import hashlib
import math
import os
import subprocess
import sys

import numba
import numpy as np
import pytest

from turboann import codebook
from turboann.kernels.reference import hadamard_rotate as _hadamard_rotate_reference
from turboann.rotation import KINDS, Rotation, hadamard_rounds, resolve_kind

ORTHO_DIMS = [2, 3, 7, 24, 40, 100, 200, 384]


def rows(n, dim, seed=0):
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dim", ORTHO_DIMS)
def test_rotation_is_orthogonal_and_apply_matches_matrix(kind, dim):
    rot = Rotation(dim, kind, seed=3)
    m = rot.matrix()
    assert m.dtype == np.float32 and m.shape == (dim, dim)
    np.testing.assert_allclose(m.astype(np.float64) @ m.T, np.eye(dim), atol=2e-6)
    x = rows(37, dim)   # 37: not a multiple of the kernel's 8-row blocks
    y = rot.apply(x)
    assert y.dtype == np.float32 and y.shape == x.shape and y.flags.c_contiguous
    np.testing.assert_allclose(np.linalg.norm(y, axis=1), np.linalg.norm(x, axis=1), rtol=2e-6)
    np.testing.assert_allclose(y, x @ m.T, rtol=0, atol=2e-5 * math.sqrt(dim))
    np.testing.assert_allclose(rot.apply_transpose(y), x, rtol=0, atol=3e-6 * math.sqrt(dim))


@pytest.mark.parametrize("transpose", [False, True])
@pytest.mark.parametrize("dim", [2, 3, 5, 8, 24, 64, 100, 129, 384, 776])
def test_hadamard_kernel_matches_reference(dim, transpose):
    rot = Rotation(dim, "hadamard", seed=dim)
    x = rows(21, dim, seed=1)
    got = rot.apply_transpose(x) if transpose else rot.apply(x)
    want = _hadamard_rotate_reference(x, rot._rounds, transpose=transpose)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6 * np.abs(x).max() * math.sqrt(dim))


def test_reference_is_orthogonal_with_the_drawn_rounds():
    r = hadamard_rounds(100, 0, 3)
    m = _hadamard_rotate_reference(np.eye(100, dtype=np.float32), r)
    np.testing.assert_allclose(m @ m.T, np.eye(100), atol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
def test_a_row_does_not_depend_on_its_batch_or_thread_count(kind):
    rot = Rotation(200, kind, seed=5)
    x = rows(50, 200)
    whole = rot.apply(x)
    if kind == "hadamard":
        # Numba kernel: bit-identical whatever the block a row falls in
        np.testing.assert_array_equal(whole[13:14], rot.apply(x[13:14]))
        np.testing.assert_array_equal(whole[3:45], rot.apply(x[3:45]))
        before = numba.get_num_threads()
        try:
            numba.set_num_threads(1)
            np.testing.assert_array_equal(whole, rot.apply(x))
        finally:
            numba.set_num_threads(before)
    else:
        # BLAS: a one-row product may take another kernel than the batch (gemv against gemm, AVX-512
        # OpenBLAS), i.e. another summation order of 200 float32 terms; the rows agree to a few ulps
        # of their norm (measured 1.3e-6 at norm 13.6), not to a fixed 1e-6.
        np.testing.assert_allclose(whole[13:14], rot.apply(x[13:14]), atol=1e-6 * np.linalg.norm(x[13]))


@pytest.mark.parametrize("kind", KINDS)
def test_edge_inputs(kind):
    rot = Rotation(40, kind)
    assert rot.apply(np.zeros((0, 40), np.float32)).shape == (0, 40)
    x = rows(9, 40)
    x.setflags(write=False)
    np.testing.assert_allclose(rot.apply(x), rot.apply(x.copy()), atol=1e-6)
    wide = rows(9, 80)
    np.testing.assert_allclose(rot.apply(wide[:, ::2]), rot.apply(np.ascontiguousarray(wide[:, ::2])),
                               atol=1e-6)


def _digest(dim, kind, seed):
    rot = Rotation(dim, kind, seed)
    x = np.linspace(-1.0, 1.0, 5 * dim, dtype=np.float32).reshape(5, dim)
    return hashlib.sha256(rot.apply(x).tobytes() + rot.matrix().tobytes()).hexdigest()


def test_same_seed_same_rotation_across_processes():
    for kind in KINDS:
        a, b = Rotation(100, kind, 7), Rotation(100, kind, 7)
        np.testing.assert_array_equal(a.matrix(), b.matrix())
        assert not np.array_equal(a.matrix(), Rotation(100, kind, 8).matrix())
    # Different kinds and different dims from one seed are different objects, not prefixes.
    assert not np.array_equal(Rotation(64, "dense", 0).matrix(), Rotation(64, "hadamard", 0).matrix())
    code = ("import sys; sys.path.insert(0, %r); from test_rotation import _digest; "
            "print(_digest(200, 'dense', 11), _digest(200, 'hadamard', 11))" % os.path.dirname(__file__))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == [_digest(200, "dense", 11), _digest(200, "hadamard", 11)]


# -- distortion: the Hadamard rotation must quantize as well as a Haar one ----

def _hard_unit_rows(dim, n, rng, n_means=10):
    """Sparse rows (1 and 3 nonzeros) and rows around axis-aligned common means.

    The rows around one mean share most of their quantization error, so one
    mean per rotation made the estimate swing by +-3% from seed to seed; the
    n rows are split among n_means means to measure the law, not one draw.
    """
    x = np.zeros((3 * n, dim))
    x[np.arange(n), rng.integers(0, dim, n)] = 1.0
    for _ in range(3):
        x[n + np.arange(n), rng.integers(0, dim, n)] += rng.standard_normal(n)
    means = np.zeros((n_means, dim))
    for mean in means:
        mean[rng.choice(dim, 3, replace=False)] = 3.0
    x[2 * n:] = means[np.arange(n) % n_means] + rng.standard_normal((n, dim)) / math.sqrt(dim)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _mse_ratio(kind, dim, bits, seeds=12, n=200):
    """Unit-vector MSE over `seeds` rotations, over the exact Haar expectation dim * coordinate_mse."""
    c, b = codebook.centroids(dim, bits), codebook.boundaries(dim, bits)
    total = 0.0
    for seed in range(seeds):
        rot = Rotation(dim, kind, seed)
        x = _hard_unit_rows(dim, n, np.random.default_rng([dim, seed]))
        y = rot.apply(x)
        back = rot.apply_transpose(c[np.searchsorted(b, y, side="right")].astype(np.float32))
        total += ((x - back.astype(np.float64)) ** 2).sum(axis=1).mean()
    return total / seeds / (dim * codebook.coordinate_mse(dim, bits))


@pytest.mark.parametrize("dim", [24, 40, 200, 776])
def test_no_recall_cliff_at_eight_times_odd(dim):
    assert _mse_ratio("hadamard", dim, 4) < 1.04


@pytest.mark.parametrize("dim", [40, 256, 384, 1000])
def test_auto_is_within_two_percent_of_dense(dim):
    kind = resolve_kind(dim)
    assert kind in KINDS
    for bits in (2, 4):
        assert _mse_ratio(kind, dim, bits) < 1.02


def test_dense_distortion_matches_its_expectation():
    # the yardstick itself: a Haar rotation gives dim * coordinate_mse on any input
    assert _mse_ratio("dense", 64, 4, seeds=20) == pytest.approx(1.0, abs=0.02)


# -- argument checks ---------------------------------------------------------

def test_bad_arguments_name_themselves():
    with pytest.raises(ValueError, match=r"dim must be >= 2, got 1"):
        Rotation(1)
    with pytest.raises(TypeError, match=r"dim must be an integer, got float"):
        Rotation(8.0)
    with pytest.raises(ValueError, match=r"kind must be one of .*'hadamard', got 'fft'"):
        Rotation(8, "fft")
    with pytest.raises(ValueError, match=r"seed must be >= 0, got -1"):
        Rotation(8, seed=-1)
    with pytest.raises(ValueError, match=r"dim must be >= 2, got 0"):
        resolve_kind(0)
    rot = Rotation(8, "hadamard")
    with pytest.raises(TypeError, match=r"x must be a float32 numpy array, got float64"):
        rot.apply(np.zeros((2, 8)))
    with pytest.raises(TypeError, match=r"x must be a float32 numpy array, got list"):
        rot.apply([[0.0] * 8])
    with pytest.raises(ValueError, match=r"x must have shape \(n, 8\), got \(2, 9\)"):
        rot.apply(np.zeros((2, 9), np.float32))
    with pytest.raises(ValueError, match=r"x must have shape \(n, 8\), got \(8,\)"):
        rot.apply(np.zeros(8, np.float32))
    with pytest.raises(ValueError, match=r"y must have shape \(n, 8\), got \(1, 2, 8\)"):
        rot.apply_transpose(np.zeros((1, 2, 8), np.float32))


@pytest.mark.parametrize("n,d", [(1, 5), (8, 384), (40, 384), (1000, 100)])
def test_prefetch_ahead_names_rows_inside_the_array(n, d):
    """The rows PREFETCH_ROWS on, clamped so that every chunk prefetch_chunk hints lies inside flat."""
    from turboann.kernels.hadamard import LANES, PREFETCH_ROWS, prefetch_ahead
    flat = np.zeros(n * d, np.float32)
    for r0 in range(0, n, LANES):
        ahead = prefetch_ahead(flat, r0, d)
        if n * d < LANES * d + 48:
            assert ahead == -1
            continue
        last_chunk = ahead + (d - 1) // 8 * 8 * LANES + 48   # the last line prefetch_chunk hints
        assert 0 <= ahead and last_chunk < n * d
        assert ahead == min((r0 + PREFETCH_ROWS) * d, n * d - LANES * d - 48)
