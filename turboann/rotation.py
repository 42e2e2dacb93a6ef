"""Seeded random rotations: what makes every coordinate follow the codebook's law.

Two kinds, both orthogonal and both reproducible from (dim, seed):

- "dense": Haar-random orthogonal matrix (QR of a Gaussian matrix, signs
  fixed so the law is exactly uniform); y = R x is one BLAS matmul, O(d^2).
- "hadamard": rounds of random signs, a random permutation and normalised
  Walsh-Hadamard transforms; O(d log d) per vector, no matrix stored.

The Hadamard transform needs a power-of-two length, and we may not pad the
output (the code length is the product). With p the largest power of two
<= d, each round transforms coordinates [0, p) and then [d - p, d); the two
blocks overlap (d < 2p), so every coordinate is mixed with at least p - 1
others in every round, at any d. Splitting d into disjoint power-of-two
blocks instead leaves tiny blocks at d = 8 x odd and a recall cliff there.
Between the two transforms the overlap gets its own random signs: without
them, when d - p is a multiple of a large power of two (d = 384, 768, 1536)
the second Sylvester transform partly undoes the first, and spread inputs
collapse back onto few coordinates.

`resolve_kind` picks "hadamard" only where its measured distortion is within
2% of dense (bench/rotation_distortion.py), "dense" elsewhere.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from . import _validate
from .kernels import read_only
from .kernels.hadamard import hadamard_rotate

KINDS = ("dense", "hadamard")

# Seed-stream tags: different random objects drawn from one user seed are independent.
_DENSE_TAG = 0x44_45_4E_53      # "DENS"
_HADAMARD_TAG = 0x48_41_44_41   # "HADA"


def hadamard_round_count(dim: int) -> int:
    """Rounds the Hadamard rotation uses at `dim`: 2, or 3 when dim is a power of two.

    Where dim is not a power of two every round already runs two overlapping
    transforms, and 2 rounds measured within 0.5% of dense on every input
    set at d = 257, 300, 320, 384, 400, 640, 700, 768, 960, 1000, 1100, 1536,
    1600 and within 1.2% at d = 500 (bench/rotation_distortion.py --rounds 2,3);
    at d = 256 a round is one transform and 2 rounds left 5% on basis
    vectors. Each round dropped saves a third of the rotation, the largest
    cost of adding vectors.
    """
    dim = _validate.integer("dim", dim, low=2)
    return 3 if largest_power_of_two(dim) == dim else 2


# Smallest dim where "auto" picks "hadamard". Measured (bench/rotation_distortion.py
# and a scan of ~100 dims in [256, 4096], 3 rounds, hard inputs, bits 2 and 4):
# unit-vector MSE within 1% of the Haar expectation everywhere from here on.
# Below it, d = 2..32 powers of two and d < 8 reach 1.2-2.3x (too few distinct
# rotations), 129..255 stay within ~1.6%, and dense is about as fast anyway
# (d^2 flops from a cache-resident matrix).
_HADAMARD_MIN_DIM = 256


def resolve_kind(dim: int) -> str:
    """The rotation kind "auto" means at `dim`: "hadamard" from 256 on, "dense" below."""
    dim = _validate.integer("dim", dim, low=2)
    return "hadamard" if dim >= _HADAMARD_MIN_DIM else "dense"


class Rotation:
    """A fixed random orthogonal map R of R^dim, drawn from `seed`.

    apply(x)           (n, dim) float32 -> (n, dim) float32, rows y = R x
    apply_transpose(y) the inverse, rows x = R^T y
    matrix()           R as a (dim, dim) float32 array
    """

    def __init__(self, dim: int, kind: str = "auto", seed: int = 0, rounds: int | None = None):
        self.dim = _validate.integer("dim", dim, low=2)
        self.seed = _validate.integer("seed", seed, low=0)
        kind = _validate.choice("kind", kind, ("auto",) + KINDS)
        self.kind = resolve_kind(self.dim) if kind == "auto" else kind
        self.rounds = None
        if self.kind == "dense":
            self._matrix = dense_matrix(self.dim, self.seed)
        else:
            self.rounds = (hadamard_round_count(self.dim) if rounds is None
                           else _validate.integer("rounds", rounds, low=1, high=8))
            self._rounds = hadamard_rounds(self.dim, self.seed, self.rounds)
            self._inverse_rounds = self._rounds.inverse()

    def __repr__(self) -> str:
        return f"Rotation(dim={self.dim}, kind={self.kind!r}, seed={self.seed})"

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Rotate rows: x (n, dim) float32 -> y (n, dim) float32 with y[i] = R @ x[i]."""
        x = self._check_rows("x", x)
        if self.kind == "dense":
            return x @ self._matrix.T
        out = np.empty_like(x)
        r = self._rounds
        hadamard_rotate(read_only(x), r.signs, r.perms, r.overlap_signs, False, out)
        return out

    def apply_transpose(self, y: np.ndarray) -> np.ndarray:
        """Undo `apply`: y (n, dim) float32 -> x (n, dim) float32 with x[i] = R.T @ y[i]."""
        y = self._check_rows("y", y)
        if self.kind == "dense":
            return y @ self._matrix
        out = np.empty_like(y)
        r = self._inverse_rounds
        hadamard_rotate(read_only(y), r.signs, r.perms, r.overlap_signs, True, out)
        return out

    def matrix(self) -> np.ndarray:
        """R as a fresh (dim, dim) float32 array."""
        if self.kind == "dense":
            return self._matrix.copy()
        # Row i of R is R^T e_i.
        return self.apply_transpose(np.eye(self.dim, dtype=np.float32))

    def _check_rows(self, name: str, x) -> np.ndarray:
        if not isinstance(x, np.ndarray) or x.dtype != np.float32:
            got = x.dtype if isinstance(x, np.ndarray) else type(x).__name__
            raise TypeError(f"{name} must be a float32 numpy array, got {got}")
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"{name} must have shape (n, {self.dim}), got {x.shape}")
        return np.ascontiguousarray(x)


def _generator(seed: int, tag: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, tag])))


def dense_matrix(dim: int, seed: int) -> np.ndarray:
    """Haar-random orthogonal (dim, dim) float32 matrix.

    QR alone is not Haar: R's diagonal signs bias Q; multiplying Q's columns
    by sign(diag(R)) removes the bias (Mezzadri, 2007).
    """
    gaussian = _generator(seed, _DENSE_TAG).standard_normal((dim, dim))
    q, r = np.linalg.qr(gaussian)
    q *= np.where(np.diag(r) < 0.0, -1.0, 1.0)
    return np.ascontiguousarray(q, dtype=np.float32)


class HadamardRounds(NamedTuple):
    """The random parts of a Hadamard rotation with `rounds` rounds at dim d.

    Forward round k: w[i] = signs[k, i] * v[perms[k, i]]; transform w[0:p];
    multiply the overlap w[d-p:p] by overlap_signs[k]; transform w[d-p:d].
    signs (rounds, d) float32 ±1, perms (rounds, d) int64,
    overlap_signs (rounds, 2p - d) float32 ±1 ((rounds, 0) when d == p).
    """
    signs: np.ndarray
    perms: np.ndarray
    overlap_signs: np.ndarray

    def inverse(self) -> "HadamardRounds":
        """The same rounds as the transpose kernel wants them: gathers through inverse perms."""
        inverse_perms = np.argsort(self.perms, axis=1).astype(np.int64)
        return HadamardRounds(np.take_along_axis(self.signs, inverse_perms, axis=1),
                              inverse_perms, self.overlap_signs)


def hadamard_rounds(dim: int, seed: int, rounds: int) -> HadamardRounds:
    """Draw the signs and permutations of `rounds` rounds at `dim` from `seed`."""
    rng = _generator(seed, _HADAMARD_TAG)
    p = largest_power_of_two(dim)
    overlap = 2 * p - dim if p < dim else 0
    signs = np.empty((rounds, dim), np.float32)
    perms = np.empty((rounds, dim), np.int64)
    overlap_signs = np.empty((rounds, overlap), np.float32)
    for k in range(rounds):
        signs[k] = 2.0 * rng.integers(0, 2, dim) - 1.0
        perms[k] = rng.permutation(dim)
        overlap_signs[k] = 2.0 * rng.integers(0, 2, overlap) - 1.0
    return HadamardRounds(signs, perms, overlap_signs)


def largest_power_of_two(dim: int) -> int:
    return 1 << (dim.bit_length() - 1)
