"""TurboQuant quantizers: data-oblivious codes, no training, no storage.

`TurboQuantMSE` rotates each vector randomly and buckets every coordinate of
the unit direction with the Lloyd-Max codebook of the exact coordinate law
(see `codebook`). `TurboQuantProd` spends one of its bits on a 1-bit QJL
sketch of the residual so that inner products are unbiased (Zandieh et al.,
2025, Algorithm 2).

Both describe their codes as segments of parts (`segments`, `centroid_table`,
`segment_values`) so that the scan kernels score them without decoding. An
MSE code may keep its last `tail_coords` coordinates at fewer bits (a
second part with its own codebook): the rotation makes every coordinate
alike, so which ones are narrower does not matter, and a compact index
(`Index(compact=True)`) pays for its per-vector factor with those bits.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from . import _validate, codebook
from .kernels import encode as _enc, read_only
from .kernels.scan import Part, ScanPlan, make_plan, part_offsets
from .rotation import Rotation

_QJL_TAG = 0x51_4A_4C  # seed stream of the QJL Gaussian matrix, apart from the rotation's
# Rows `_encode_into` encodes at a time where the encoding makes rotated copies of the rows (a dense
# rotation, or the row encoders): 65,536 x dim float32 (32 MB at dim 128) instead of 4 * dim bytes
# (and more under "prod") for every row of an add.
_ENCODE_CHUNK = 1 << 16


def _no_rounds(dim: int):
    """The Hadamard-round arrays of zero rounds: `kernels.encode.encode_lanes` then rotates nothing."""
    return np.zeros((0, dim), np.float32), np.zeros((0, dim), np.int64), np.zeros((0, 0), np.float32)


@dataclass(frozen=True)
class EncodedVectors:
    """Codes and per-vector factors of n vectors.

    codes  (n, code_bytes) uint8  packed segments (see `kernels.encode`)
    norms  (n,) float32           ||x||
    dots   (n,) float32           <u, u_hat>: unit direction u (rotated) against its
                                  MSE reconstruction; 0 for a zero vector
    gammas (n,) float32           ||u - u_hat|| for TurboQuantProd, zeros for MSE
    """
    codes: np.ndarray
    norms: np.ndarray
    dots: np.ndarray
    gammas: np.ndarray

    def __len__(self) -> int:
        return self.codes.shape[0]


class Factors(NamedTuple):
    """Per-vector results of `TurboQuantMSE._encode_into`, whose codes went to a `CodeTarget`.

    norms (n,) float64 ||v|| of the encoded rows v = rotated(x) * scale - translate
          (||x|| up to rounding without scale and translate); NaN or inf where
          a row of x is not finite, or overflows float32 once rotated
    dots, gammas (n,) float32 as in `EncodedVectors`
    """
    norms: np.ndarray
    dots: np.ndarray
    gammas: np.ndarray


class TurboQuantMSE:
    """Rotate, then quantize each coordinate with its Lloyd-Max codebook.

    dim >= 2, bits 1..8; `rotation` is "auto", "dense" or "hadamard";
    rotation_rounds: Hadamard rounds, None for `rotation.hadamard_round_count`.
    tail_coords, tail_bits: the last tail_coords coordinates take tail_bits
    (1..bits-1) each, with their own Lloyd-Max codebook; bits <= 4, and the
    other dim - tail_coords coordinates must fill whole bytes.
    Two quantizers with equal settings give identical codes.
    """

    variant = "mse"

    def __init__(self, dim: int, bits: int, seed: int = 0, rotation: str = "auto", *,
                 rotation_rounds: int | None = None, tail_coords: int = 0, tail_bits: int | None = None):
        self.dim = _validate.integer("dim", dim, low=2)
        self.bits = _validate.integer("bits", bits, low=self._min_bits(), high=8)
        self.seed = _validate.integer("seed", seed, low=0)
        self.tail_coords, self.tail_bits = self._check_tail(tail_coords, tail_bits)
        self.rotation = Rotation(self.dim, rotation, self.seed, rotation_rounds)
        mse_bits = self._mse_bits()
        self._centroids = codebook.centroids(self.dim, mse_bits).astype(np.float32)
        self._boundaries = codebook.boundaries(self.dim, mse_bits).astype(np.float32)
        if self.tail_coords:
            self._tail_centroids = codebook.centroids(self.dim, self.tail_bits).astype(np.float32)
            self._tail_boundaries = codebook.boundaries(self.dim, self.tail_bits).astype(np.float32)
        self.segments: tuple[tuple[Part, ...], ...] = self._segments()
        self.plan: ScanPlan = make_plan(self.segments)
        self.code_bytes = int(self.plan.seg_bytes[-1])
        self.centroid_table = self._centroid_table()

    def _check_tail(self, tail_coords, tail_bits) -> tuple[int, int]:
        """(tail_coords, tail_bits), checked; (0, 0) for no tail."""
        tail_coords = _validate.integer("tail_coords", tail_coords, low=0, high=self.dim - 1)
        if tail_coords == 0:
            return 0, 0
        if self.variant != "mse" or self.bits > 4:
            raise ValueError(f"tail_coords needs variant 'mse' and bits <= 4, got variant {self.variant!r} "
                             f"and bits {self.bits}")
        tail_bits = _validate.integer("tail_bits", tail_bits, low=1, high=self.bits - 1)
        if (self.dim - tail_coords) * self.bits % 8:
            raise ValueError(f"tail_coords must leave dim - tail_coords coordinates that fill whole bytes at "
                             f"{self.bits} bits, got tail_coords={tail_coords} ({self.dim - tail_coords} "
                             f"coordinates, {(self.dim - tail_coords) * self.bits} bits)")
        return tail_coords, tail_bits

    # -- layout --------------------------------------------------------------
    @staticmethod
    def _min_bits() -> int:
        return 1

    def _mse_bits(self) -> int:
        return self.bits

    def _segments(self) -> tuple[tuple[Part, ...], ...]:
        head = self.dim - self.tail_coords
        tail = (Part(head, self.tail_coords, self.tail_bits, 1),) if self.tail_coords else ()
        return ((Part(0, head, self.bits, 0),) + tail,)

    def _centroid_table(self) -> np.ndarray:
        """(tables, 256) float32: row t holds the centroids of the parts scored with table t."""
        table = np.zeros((max(p.table for parts in self.segments for p in parts) + 1, 256), np.float32)
        table[0, :self._centroids.size] = self._centroids
        if self.tail_coords:
            table[1, :self._tail_centroids.size] = self._tail_centroids
        return table

    def __repr__(self) -> str:
        tail = f", tail_coords={self.tail_coords}, tail_bits={self.tail_bits}" if self.tail_coords else ""
        return (f"{type(self).__name__}(dim={self.dim}, bits={self.bits}, seed={self.seed}, "
                f"rotation={self.rotation.kind!r}{tail})")

    # -- codes ---------------------------------------------------------------
    def encode(self, x) -> EncodedVectors:
        """Encode x (n, dim), any real dtype, into packed codes and factors."""
        return self._encode(_validate.vectors("x", x, self.dim))

    def _encode(self, x: np.ndarray, scale=None, translate=None, centre=None, gain: float = 1.0,
                spread=None) -> EncodedVectors:
        """Rotate and encode validated rows into row-major codes (see `_encode_rotated`)."""
        if not self._lane_encodes():
            return self._encode_rotated(self.rotation.apply(x), scale, translate, centre, gain, spread)
        codes = np.empty((x.shape[0], self.code_bytes), np.uint8)   # the kernel writes every byte
        f = self._encode_into(x, _enc.row_major_target(codes, 0, self.bits), 0, scale, translate, centre, gain,
                              spread)
        return EncodedVectors(codes, f.norms.astype(np.float32), f.dots, f.gammas)

    def _lane_encodes(self) -> bool:
        """Whether `kernels.encode.encode_lanes` makes these codes: MSE codes of at most 4 bits."""
        return self.variant == "mse" and self.bits <= 4

    def _encode_into(self, x: np.ndarray, target: _enc.CodeTarget, start: int, scale=None, translate=None,
                     centre=None, gain: float = 1.0, spread=None) -> Factors:
        """Encode rows x (n, dim) float32, C-contiguous, into slots start..start+n-1 of `target`.

        x need not be checked for NaN/inf: `Factors.norms` tells which rows
        are not finite (their codes are garbage). scale, translate, centre,
        gain and spread as in `_encode_rotated`. Unless `_lane_encodes()`, target
        must be row-major with `code_bytes` a row. Encodes _ENCODE_CHUNK rows
        at a time unless the lane encoder rotates them in place (Hadamard).
        """
        n = x.shape[0]
        if n > _ENCODE_CHUNK and (self.rotation.kind == "dense" or not self._lane_encodes()):
            parts = [self._encode_into(x[lo:lo + _ENCODE_CHUNK], target, start + lo,
                                       None if scale is None else scale[lo:lo + _ENCODE_CHUNK], translate,
                                       centre, gain, spread)
                     for lo in range(0, n, _ENCODE_CHUNK)]
            return Factors(*(np.concatenate(f) for f in zip(*parts)))
        if not self._lane_encodes():
            enc = self._encode(x, scale, translate, centre, gain, spread)
            _enc.write_into(enc.codes, 0, 8, self.code_bytes, target, start, width=8)   # whole bytes
            return Factors(enc.norms.astype(np.float64), enc.dots, enc.gammas)
        norms, dots = np.empty(n), np.empty(n, np.float32)
        if self.rotation.kind == "hadamard":
            r = self.rotation._rounds
            rows, rounds = x, (r.signs, r.perms, r.overlap_signs)
        else:   # dense: one BLAS product, then the lane encoder with no rounds
            rows, rounds = self.rotation.apply(x), _no_rounds(self.dim)
        zero = np.zeros(self.dim, np.float32)
        spread = np.ones(self.dim, np.float32) if spread is None else spread
        codebook, tail_first = self._codebook(gain), self.dim - self.tail_coords
        tail_codebook = self._codebook(gain, tail=True) if self.tail_coords else codebook
        _enc.encode_lanes(read_only(rows), *rounds, np.empty(0) if scale is None else scale,
                          zero if translate is None else translate, zero if centre is None else centre, spread,
                          *codebook, tail_first, *tail_codebook, _enc.target_width(self.tail_bits, target.nibbles),
                          target.dest, start, target.base, target.block_stride,
                          target.lane_stride, target.byte_stride, target.width, norms, dots)
        return Factors(norms, dots, np.zeros(n, np.float32))

    def _codebook(self, gain: float, tail: bool = False):
        """(boundaries, centroids) float32 of the MSE code (or its tail's) for data `gain` times narrower
        than the law."""
        b, c = (self._tail_boundaries, self._tail_centroids) if tail else (self._boundaries, self._centroids)
        if gain == 1.0:
            return b, c
        return (b / np.float32(gain)).astype(np.float32), (c / np.float32(gain)).astype(np.float32)

    def centroid_table_for(self, gain: float = 1.0) -> np.ndarray:
        """`centroid_table` with the MSE centroids divided by `gain` (see `_encode_rotated`)."""
        table = self.centroid_table.copy()
        for part in self.segments[0]:   # the MSE segment's tables (not the QJL sketch's)
            table[part.table] /= np.float32(gain)
        return table

    def _encode_rotated(self, y: np.ndarray, scale=None, translate=None, centre=None,
                        gain: float = 1.0, spread=None) -> EncodedVectors:
        """Encode rotated rows y (n, dim) float32 (see `kernels.encode.encode_directions`).

        Row r becomes v = y[r] * scale[r] - translate, its unit direction u is
        quantized as (u - centre) / spread and reconstructed as
        spread * (its centroids) + centre. scale (n,) float64 and translate,
        centre, spread (dim,) float32 (rotated) default to 1, 0, 0 and 1.
        u - centre is shorter than a unit vector, so its codebook is the
        law's divided by gain (the index passes 1 / sqrt(1 - ||centre||^2)).
        spread: per-coordinate scales that make each coordinate's spread over
        the data the law's (the index fits them on its first add); a query
        is scored against the reconstruction by scaling its rotated
        coordinates by spread (`Index._segment_values`), at no scan cost.
        """
        n = y.shape[0]
        codes = np.empty((n, self.code_bytes), np.uint8)   # the kernels write every byte
        norms = np.empty(n, np.float32)
        dots = np.empty(n, np.float32)
        scale, translate, centre, spread = self._offsets(n, scale, translate, centre, spread)
        _enc.encode_directions(y, scale, translate, centre, spread, *self._codebook(gain), self._mse_bits(),
                               codes, 0, norms, dots, np.empty((0, 0), np.float32))
        return EncodedVectors(codes, norms, dots, np.zeros(n, np.float32))

    def _offsets(self, n, scale, translate, centre, spread):
        zero = np.zeros(self.dim, np.float32)
        return (np.ones(n) if scale is None else scale, zero if translate is None else translate,
                zero if centre is None else centre, np.ones(self.dim, np.float32) if spread is None else spread)

    def decode(self, enc: EncodedVectors) -> np.ndarray:
        """Reconstruct (n, dim) float32 vectors, norms restored."""
        u_hat = self._decode_directions(enc)
        return (self.rotation.apply_transpose(u_hat) * enc.norms[:, None]).astype(np.float32)

    def _decode_directions(self, enc: EncodedVectors) -> np.ndarray:
        out = np.empty((len(enc), self.dim), np.float32)
        for part, offset in zip(self.segments[0], part_offsets(self.segments)[0]):
            c = np.empty((len(enc), part.count), np.int32)
            _enc.unpack_codes(enc.codes, offset, part.bits, part.count, c)
            out[:, part.first:part.first + part.count] = self.centroid_table[part.table][c]
        return out

    # -- queries -------------------------------------------------------------
    def segment_values(self, q: np.ndarray) -> np.ndarray:
        """Per-segment query values for the scan: (nq, nseg, dim) float32.

        q is (nq, dim) float32, already validated. Segment 0 holds the rotated
        query, scored against the MSE centroids.
        """
        return np.ascontiguousarray(self.rotation.apply(q)[:, None, :])


class TurboQuantProd(TurboQuantMSE):
    """(bits - 1)-bit MSE code plus a 1-bit QJL sketch of the residual; bits >= 2.

    decode() is unbiased for inner products: E_seed <y, decode(encode(x))> = <y, x>.
    """

    variant = "prod"

    def __init__(self, dim: int, bits: int, seed: int = 0, rotation: str = "auto", *,
                 rotation_rounds: int | None = None):
        super().__init__(dim, bits, seed, rotation, rotation_rounds=rotation_rounds)
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([self.seed, _QJL_TAG])))
        self._qjl = rng.standard_normal((self.dim, self.dim)).astype(np.float32)   # S, (m=dim, dim)
        self._qjl_scale = np.float32(np.sqrt(np.pi / 2.0) / self.dim)

    @staticmethod
    def _min_bits() -> int:
        return 2

    def _mse_bits(self) -> int:
        return self.bits - 1

    def _segments(self) -> tuple[tuple[Part, ...], ...]:
        return (Part(0, self.dim, self.bits - 1, 0),), (Part(0, self.dim, 1, 1),)

    def _centroid_table(self) -> np.ndarray:
        table = super()._centroid_table()
        scale = np.sqrt(np.pi / 2.0) / self.dim
        table[1, :2] = (-scale, scale)
        return table

    def _encode_rotated(self, y: np.ndarray, scale=None, translate=None, centre=None,
                        gain: float = 1.0, spread=None) -> EncodedVectors:
        n = y.shape[0]
        codes = np.empty((n, self.code_bytes), np.uint8)   # the kernels write every byte
        norms = np.empty(n, np.float32)
        dots = np.empty(n, np.float32)
        residual = np.empty_like(y)
        scale, translate, centre, spread = self._offsets(n, scale, translate, centre, spread)
        _enc.encode_directions(y, scale, translate, centre, spread, *self._codebook(gain), self._mse_bits(),
                               codes, 0, norms, dots, residual)
        gammas = _enc.row_norms(residual).astype(np.float32)
        _enc.pack_signs(residual @ self._qjl.T, codes, int(self.plan.seg_bytes[1]))
        return EncodedVectors(codes, norms, dots, gammas)

    def _decode_directions(self, enc: EncodedVectors) -> np.ndarray:
        u_mse = super()._decode_directions(enc)
        s = np.empty((len(enc), self.dim), np.int32)
        _enc.unpack_codes(enc.codes, int(self.plan.seg_bytes[1]), 1, self.dim, s)
        signs = (2 * s - 1).astype(np.float32)
        return u_mse + (self._qjl_scale * enc.gammas)[:, None] * (signs @ self._qjl)

    def segment_values(self, q: np.ndarray) -> np.ndarray:
        qr = self.rotation.apply(q)
        return np.ascontiguousarray(np.stack([qr, qr @ self._qjl.T], axis=1))
