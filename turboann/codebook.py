"""Lloyd-Max codebooks for one coordinate of a uniformly random unit vector.

After a random rotation every coordinate x of a unit vector in R^d follows
the same law, with density proportional to (1 - x^2)^((d - 3) / 2) on
[-1, 1]: the arcsine law at d = 2, uniform at d = 3, close to N(0, 1/d) at
large d. Because that law is known in advance, the optimal scalar quantizer
for it is too, and codes need no training.

We solve the Lloyd-Max conditions (boundaries are midpoints of adjacent
centroids, each centroid is the mean of its cell) for the exact law. The
substitution x = sin(t) turns the density into cos(t)^(d - 2) dt on
[-pi/2, pi/2]: smooth and bounded for every d >= 2, so each cell's mass and
moments come from Gauss-Legendre quadrature in t to near machine precision.
The law is symmetric, so only the positive half is solved.

Public: `centroids`, `boundaries`, `coordinate_mse`; results are cached per
(dim, bits) and returned as read-only float64 arrays.
"""
from __future__ import annotations

import functools
import math
from typing import NamedTuple

import numpy as np

from . import _validate

MAX_BITS = 8

# Tails where cos(t)^(d-2) is below e^-80 of its peak carry no mass worth a
# float64 digit; cutting them keeps quadrature panels where the mass is at large d.
_LOG_TAIL_CUTOFF = 80.0
# Gauss-Legendre nodes per panel and panels per cell: integrands are smooth
# in t, and even the widest cell (bits=1 at large d: a half-Gaussian over
# ~13 standard deviations) integrates to ~1e-15 relative with 4 x 24 nodes.
_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(24)
_PANELS_PER_CELL = 4
# Lloyd-Max fixed point: stop when no centroid moves by more than this
# fraction of the coordinate's standard deviation 1/sqrt(d).
_TOLERANCE = 1e-13
_MAX_ITERATIONS = 200


class Codebook(NamedTuple):
    """Solved quantizer for one (dim, bits); arrays are float64 and read-only."""
    centroids: np.ndarray    # (2**bits,) ascending, symmetric about 0
    boundaries: np.ndarray   # (2**bits - 1,) midpoints of adjacent centroids
    mse: float               # E[(x - Q(x))^2] for one coordinate


def centroids(dim: int, bits: int) -> np.ndarray:
    """Reconstruction levels: float64 (2**bits,), ascending, in raw coordinate units."""
    return solve(dim, bits).centroids


def boundaries(dim: int, bits: int) -> np.ndarray:
    """Decision thresholds: float64 (2**bits - 1,); code = searchsorted(boundaries, x, 'right')."""
    return solve(dim, bits).boundaries


def coordinate_mse(dim: int, bits: int) -> float:
    """Expected squared error of one coordinate; dim * this is the MSE on unit vectors."""
    return solve(dim, bits).mse


def solve(dim: int, bits: int) -> Codebook:
    """The Lloyd-Max codebook of the coordinate law at `dim`, with `bits` bits (1..8)."""
    dim = _validate.integer("dim", dim, low=2)
    bits = _validate.integer("bits", bits, low=1, high=MAX_BITS)
    return _solve_cached(dim, bits)


@functools.lru_cache(maxsize=512)
def _solve_cached(dim: int, bits: int) -> Codebook:
    t_max = _mass_extent(dim)
    half = _lloyd_max_half(dim, 2 ** (bits - 1), t_max)
    full = np.concatenate([-half[::-1], half])
    cuts = 0.5 * (full[1:] + full[:-1])
    cuts[2 ** (bits - 1) - 1] = 0.0   # exactly, not the rounding of (-c + c) / 2
    mass, first, second = _cell_moments(dim, _half_edges(half, t_max))
    mse = float(np.sum(second - 2.0 * half * first + half * half * mass) / np.sum(mass))
    full.setflags(write=False)
    cuts.setflags(write=False)
    return Codebook(full, cuts, mse)


def _mass_extent(dim: int) -> float:
    """Largest t worth integrating: cos(t)^(dim-2) >= exp(-_LOG_TAIL_CUTOFF), capped at pi/2."""
    if dim == 2:
        return math.pi / 2
    return math.acos(math.exp(-_LOG_TAIL_CUTOFF / (dim - 2)))


def _log_cos(t: np.ndarray) -> np.ndarray:
    # log1p keeps precision where cos(t) is close to 1, which is where the
    # mass sits at large d (the result is multiplied by d - 2).
    s = np.sin(t)
    return 0.5 * np.log1p(-s * s)


def _cell_moments(dim: int, t_edges: np.ndarray):
    """Unnormalised mass, first and second moment of x = sin(t) over each cell.

    t_edges (K + 1,) float64 ascending; returns three float64 (K,) arrays of
    integral over [t_edges[k], t_edges[k+1]] of cos(t)^(dim-2) * x^j dt, j = 0, 1, 2.
    """
    panel_edges = np.linspace(t_edges[:-1], t_edges[1:], _PANELS_PER_CELL + 1, axis=1)  # (K, P+1)
    lo, hi = panel_edges[:, :-1, None], panel_edges[:, 1:, None]
    half_width = 0.5 * (hi - lo)
    t = lo + half_width * (_GL_NODES + 1.0)                                # (K, P, n)
    w = np.exp((dim - 2) * _log_cos(t)) * half_width * _GL_WEIGHTS
    x = np.sin(t)
    mass = w.sum(axis=(1, 2))
    first = (w * x).sum(axis=(1, 2))
    second = (w * x * x).sum(axis=(1, 2))
    return mass, first, second


def _half_edges(half: np.ndarray, t_max: float) -> np.ndarray:
    """Cell edges in t for positive centroids `half` (K,): 0, midpoints, t_max."""
    mids = 0.5 * (half[1:] + half[:-1])
    return np.concatenate([[0.0], np.arcsin(mids), [t_max]])


def _equal_mass_start(dim: int, cells: int, t_max: float) -> np.ndarray:
    """Centroids of `cells` equal-mass cells of the positive half: Lloyd's usual start."""
    # A rough midpoint-rule CDF is enough to place the start; Newton does the
    # rest. (Midpoints also avoid 0 * log 0 at t = pi/2 when dim = 2.)
    grid = np.linspace(0.0, t_max, 4097)
    density = np.exp((dim - 2) * _log_cos(0.5 * (grid[1:] + grid[:-1])))
    cdf = np.concatenate([[0.0], np.cumsum(density)])
    cdf /= cdf[-1]
    t_cuts = np.interp(np.linspace(0.0, 1.0, cells + 1)[1:-1], cdf, grid)
    mass, first, _ = _cell_moments(dim, np.concatenate([[0.0], t_cuts, [t_max]]))
    return first / mass


def _lloyd_max_half(dim: int, cells: int, t_max: float) -> np.ndarray:
    """Positive centroids (cells,) of the symmetric Lloyd-Max quantizer with 2 * cells levels.

    Plain Lloyd iteration c <- G(c) (G = cell means under midpoint cuts)
    contracts very slowly with 256 levels, so we take Newton steps on
    c - G(c) = 0 with G's tridiagonal Jacobian, falling back to a Lloyd step
    whenever Newton would break the ordering or not reduce the residual.
    """
    scale = 1.0 / math.sqrt(dim)
    c = _equal_mass_start(dim, cells, t_max)
    g, jac = _cell_means_and_jacobian(dim, c, t_max)
    for _ in range(_MAX_ITERATIONS):
        residual = np.max(np.abs(c - g))
        if residual <= _TOLERANCE * scale:
            return g
        trial = c + _solve_tridiagonal(*jac, g - c)
        if _is_valid(trial, t_max):
            g_trial, jac_trial = _cell_means_and_jacobian(dim, trial, t_max)
            if np.max(np.abs(trial - g_trial)) < residual:
                c, g, jac = trial, g_trial, jac_trial
                continue
        c = g
        g, jac = _cell_means_and_jacobian(dim, c, t_max)
    raise RuntimeError(f"Lloyd-Max did not converge for dim={dim}, {2 * cells} levels "
                       f"after {_MAX_ITERATIONS} iterations")


def _is_valid(c: np.ndarray, t_max: float) -> bool:
    return bool(c[0] > 0.0 and np.all(np.diff(c) > 0.0) and c[-1] < math.sin(t_max))


def _cell_means_and_jacobian(dim: int, c: np.ndarray, t_max: float):
    """G(c) (K,) and the bands (below, diagonal, above) of I - dG/dc for positive centroids c.

    For a cell [a, b] with mass m and mean g: dg/db = f(b)(b - g)/m and
    dg/da = f(a)(g - a)/m, f the (unnormalised) density of x; each inner
    cut is the mean of two centroids, hence the factors 1/2.
    """
    t_edges = _half_edges(c, t_max)
    mass, first, _ = _cell_moments(dim, t_edges)
    g = first / mass
    cuts = np.sin(t_edges[1:-1])
    density = np.exp((dim - 3) * _log_cos(t_edges[1:-1]))     # dx = cos(t) dt
    upper = 0.5 * density * (cuts - g[:-1]) / mass[:-1]        # cell k through its upper cut k
    lower = 0.5 * density * (g[1:] - cuts) / mass[1:]          # cell k+1 through its lower cut k
    # Bands of I - dG/dc: cell k moves with c[k] and c[k+1] through cut k.
    diagonal = np.ones(c.size)
    diagonal[:-1] -= upper
    diagonal[1:] -= lower
    return g, (-lower, diagonal, -upper)


def _solve_tridiagonal(below, diagonal, above, rhs):
    """Solve A x = rhs for tridiagonal A (K, K) given by its bands (Thomas algorithm).

    below (K-1,) sub-diagonal, diagonal (K,), above (K-1,) super-diagonal.
    No pivoting: I - dG/dc is weakly diagonally dominant for the log-concave
    laws (d >= 3) and at d = 2 only its outermost row falls short (by ~3%);
    the codebooks agree with those from a pivoted dense solve to 5e-13/sqrt(d).
    A hand-written O(K) solve also keeps BLAS threads out of it: the dense
    solve took ~20x longer on a busy machine.
    """
    size = diagonal.size
    d = diagonal.copy()
    r = rhs.copy()
    for k in range(1, size):
        f = below[k - 1] / d[k - 1]
        d[k] -= f * above[k - 1]
        r[k] -= f * r[k - 1]
    x = np.empty(size)
    x[-1] = r[-1] / d[-1]
    for k in range(size - 2, -1, -1):
        x[k] = (r[k] - above[k] * x[k + 1]) / d[k]
    return x
