"""Lloyd-Max codebooks against the exact coordinate law, closed forms and sampling."""
import math
import time

import numpy as np
import pytest

from turboann import codebook

# Unit-vector MSE of the Lloyd-Max quantizer at large d (Zandieh et al., 2025, Table 1).
PAPER_MSE = {1: 0.3634, 2: 0.1175, 3: 0.0345, 4: 0.0095}


@pytest.mark.parametrize("dim", [128, 384, 1536])
@pytest.mark.parametrize("bits", [1, 2, 3, 4])
def test_unit_vector_mse_matches_paper(dim, bits):
    assert dim * codebook.coordinate_mse(dim, bits) == pytest.approx(PAPER_MSE[bits], rel=0.03)


@pytest.mark.parametrize("dim", [1536, 10**6])
def test_large_dim_is_gaussian_lloyd_max(dim):
    # Gaussian Lloyd-Max, 4 levels: ±0.4528, ±1.510 standard deviations; 2 levels: ±sqrt(2/pi).
    scaled = codebook.centroids(dim, 2) * math.sqrt(dim)
    np.testing.assert_allclose(scaled, [-1.510, -0.4528, 0.4528, 1.510], atol=2e-3)
    assert codebook.centroids(dim, 1)[1] * math.sqrt(dim) == pytest.approx(math.sqrt(2 / math.pi), abs=2e-3)


@pytest.mark.parametrize("dim", [2, 3, 5, 384])
@pytest.mark.parametrize("bits", range(1, 9))
def test_every_bits_gives_sorted_symmetric_read_only_codebook(dim, bits):
    c = codebook.centroids(dim, bits)
    b = codebook.boundaries(dim, bits)
    assert c.dtype == np.float64 and c.shape == (2 ** bits,)
    assert b.dtype == np.float64 and b.shape == (2 ** bits - 1,)
    assert np.all(np.diff(c) > 0) and -1.0 < c[0] and c[-1] < 1.0
    np.testing.assert_array_equal(c, -c[::-1])
    np.testing.assert_allclose(b, 0.5 * (c[1:] + c[:-1]), rtol=0, atol=1e-15)
    assert b[2 ** (bits - 1) - 1] == 0.0
    for arr in (c, b):
        assert not arr.flags.writeable
        with pytest.raises(ValueError):
            arr[0] = 0.0
    mse = codebook.coordinate_mse(dim, bits)
    assert 0.0 < mse < 1.0 / dim   # better than always answering 0
    if bits > 1:
        # each bit buys a factor close to 4 (between 2 and 6 at any d)
        assert 2.0 < codebook.coordinate_mse(dim, bits - 1) / mse < 6.0


def test_results_are_cached():
    assert codebook.centroids(384, 4) is codebook.centroids(384, 4)
    assert codebook.centroids(np.int64(384), 4) is codebook.centroids(384, 4)


def test_dim_2_one_bit_is_two_over_pi():
    # arcsine law: E|x| = E|cos(theta)| = 2/pi
    np.testing.assert_allclose(codebook.centroids(2, 1), [-2 / math.pi, 2 / math.pi], rtol=1e-13)
    assert codebook.coordinate_mse(2, 1) == pytest.approx(0.5 - 4 / math.pi ** 2, rel=1e-12)


@pytest.mark.parametrize("dim", [2, 3, 7, 64, 384, 1536, 10**5])
def test_one_bit_is_the_mean_absolute_coordinate(dim):
    # E|x| = Gamma(d/2) / (sqrt(pi) Gamma((d+1)/2)); E x^2 = 1/d exactly
    mean_abs = math.exp(math.lgamma(dim / 2) - math.lgamma((dim + 1) / 2)) / math.sqrt(math.pi)
    assert codebook.centroids(dim, 1)[1] == pytest.approx(mean_abs, rel=1e-12)
    assert codebook.coordinate_mse(dim, 1) == pytest.approx(1 / dim - mean_abs ** 2, rel=1e-9)


@pytest.mark.parametrize("bits", range(1, 9))
def test_dim_3_is_the_uniform_quantizer(bits):
    levels = 2 ** bits
    expected = -1.0 + (2.0 * np.arange(levels) + 1.0) / levels
    np.testing.assert_allclose(codebook.centroids(3, bits), expected, rtol=0, atol=1e-12)
    # uniform law on [-1, 1], cells of width 2/levels: MSE = width^2 / 12
    assert codebook.coordinate_mse(3, bits) == pytest.approx((2.0 / levels) ** 2 / 12, rel=1e-9)


# Closed-form cumulative mass and first moment of the (unnormalised) law,
# density (1 - x^2)^((d-3)/2), for the small d where they exist.
CLOSED_FORMS = {
    2: (lambda x: np.arcsin(x), lambda x: -np.sqrt(1 - x * x)),
    3: (lambda x: x, lambda x: x * x / 2),
    4: (lambda x: (x * np.sqrt(1 - x * x) + np.arcsin(x)) / 2, lambda x: -(1 - x * x) ** 1.5 / 3),
    5: (lambda x: x - x ** 3 / 3, lambda x: x * x / 2 - x ** 4 / 4),
}


@pytest.mark.parametrize("dim", sorted(CLOSED_FORMS))
@pytest.mark.parametrize("bits", range(1, 9))
def test_centroids_are_cell_means_in_closed_form(dim, bits):
    mass, first = CLOSED_FORMS[dim]
    c = codebook.centroids(dim, bits)
    edges = np.concatenate([[-1.0], codebook.boundaries(dim, bits), [1.0]])
    means = np.diff(first(edges)) / np.diff(mass(edges))
    np.testing.assert_allclose(c, means, rtol=0, atol=1e-11)


@pytest.mark.parametrize("dim", [9, 64, 384])
@pytest.mark.parametrize("bits", [1, 3, 6])
def test_centroids_are_cell_means_by_quadrature(dim, bits):
    # Simpson's rule in x on each cell, density in log space: a path independent
    # of the module's sin(t) substitution and Gauss-Legendre panels.
    c = codebook.centroids(dim, bits)
    edges = np.concatenate([[-1.0], codebook.boundaries(dim, bits), [1.0]])
    means = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        x = np.linspace(lo, hi, 4001)
        f = np.exp((dim - 3) / 2 * np.log(np.maximum(1.0 - x * x, 1e-300)))
        w = np.full(x.size, 2.0)
        w[1::2], w[0], w[-1] = 4.0, 1.0, 1.0
        m0, m1 = (w * f).sum(), (w * f * x).sum()
        means.append(m1 / m0)
    np.testing.assert_allclose(c, means, rtol=0, atol=1e-9 / math.sqrt(dim))


@pytest.mark.parametrize("dim,n_vectors", [(8, 40_000), (64, 6_000)])
@pytest.mark.parametrize("bits", [1, 2, 4])
def test_monte_carlo_mse_on_random_unit_vectors(dim, n_vectors, bits):
    rng = np.random.default_rng(dim * 10 + bits)
    u = rng.standard_normal((n_vectors, dim))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    c, b = codebook.centroids(dim, bits), codebook.boundaries(dim, bits)
    err = ((u - c[np.searchsorted(b, u, side="right")]) ** 2).sum(axis=1)  # per vector: independent
    mean, se = err.mean(), err.std(ddof=1) / math.sqrt(n_vectors)
    assert abs(mean - dim * codebook.coordinate_mse(dim, bits)) < 4 * se


def test_nearest_centroid_is_what_boundaries_pick():
    c, b = codebook.centroids(100, 3), codebook.boundaries(100, 3)
    x = np.random.default_rng(0).uniform(-0.4, 0.4, 10_000)
    nearest = np.abs(x[:, None] - c[None, :]).argmin(axis=1)
    np.testing.assert_array_equal(np.searchsorted(b, x, side="right"), nearest)


def test_fresh_codebooks_are_fast():
    t0 = time.perf_counter()
    for bits in range(1, 9):
        codebook.solve(4097, bits)   # a dim no other test uses: not cached
    assert time.perf_counter() - t0 < 2.0   # ~30 ms measured; generous for loaded CI


@pytest.mark.parametrize("fn", [codebook.centroids, codebook.boundaries, codebook.coordinate_mse])
def test_bad_arguments_name_themselves(fn):
    with pytest.raises(ValueError, match=r"dim must be >= 2, got 1"):
        fn(1, 2)
    with pytest.raises(ValueError, match=r"bits must be >= 1, got 0"):
        fn(64, 0)
    with pytest.raises(ValueError, match=r"bits must be <= 8, got 9"):
        fn(64, 9)
    with pytest.raises(TypeError, match=r"bits must be an integer, got float 2.0"):
        fn(64, 2.0)
    with pytest.raises(TypeError, match=r"dim must be an integer, got str '64'"):
        fn("64", 2)
    with pytest.raises(TypeError, match=r"dim must be an integer, got bool"):
        fn(True, 2)
