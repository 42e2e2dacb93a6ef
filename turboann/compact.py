"""Compact codes: codes and per-vector factors in ceil(dim * bits / 8) bytes, a PQ code's size.

A default index keeps each vector's scan factors in float32 beside its
dim * bits / 8 bytes of codes: 4 B more under "cosine" and "ip", 8 B under
"l2". `Index(compact=True)` fits both in the budget of the codes alone:

- the correction c = 1 / <u, u_hat> (a vector's weight is ||x|| * c)
  becomes a u8 log code over a range fixed by the codebook alone
  (data-oblivious: `correction_range`); code 0 stands for a weight of 0
  (<u, u_hat> <= 0);
- under "ip" and "l2" the norm (of x, or of x - mean when centred under
  "l2") is kept as float16;
- the bytes those take come out of the codes: the last coordinates are
  coded with fewer bits (`tail_split`). The rotation makes every coordinate
  alike, so which coordinates lose the bits does not matter.

What it costs in recall for the bytes it saves: docs/design.md, "Measurements
behind the code" (bench/core_recall.py).
"""
from __future__ import annotations

import math

import numpy as np

from . import codebook

# Bytes of factors a vector: the u8 correction, plus the float16 norm where the score needs it.
FACTOR_BYTES = {"cosine": 1, "ip": 3, "l2": 3}
# The u8 correction covers [1 / _RANGE, _RANGE / (1 - D)] in log steps: c lies near
# [1, 1 / (1 - D)] (1 with a centre that takes most of the spread, 1 / (1 - D) without).
_RANGE = 1.25
_FLOAT16_MAX = float(np.finfo(np.float16).max)


def tail_split(dim: int, bits: int, metric: str) -> tuple[int, int]:
    """(tail_coords, tail_bits): the fewest narrower last coordinates that make codes plus factors fit
    ceil(dim * bits / 8) bytes under `metric`, bits 2..4.

    Narrower means bits - 1, or 2 at 4 bits (two to a fast-scan nibble, so
    the blocked layout saves the bytes too). The other coordinates fill
    whole bytes, so each part starts on one.
    """
    if bits not in (2, 3, 4):
        raise ValueError(f"compact=True needs bits 2, 3 or 4, got bits {bits}")
    tail_bits = 2 if bits == 4 else bits - 1
    budget = (dim * bits + 7) // 8 - FACTOR_BYTES[metric]
    for head in range(dim - 1, 0, -1):
        if head * bits % 8 == 0 and head * bits // 8 + -(-(dim - head) * tail_bits // 8) <= budget:
            return dim - head, tail_bits
    raise ValueError(f"compact=True needs room for {FACTOR_BYTES[metric]} B of factors in the "
                     f"{(dim * bits + 7) // 8} B of a {dim}-dimensional {bits}-bit code, got dim {dim}")


def correction_range(dim: int, bits: int) -> tuple[float, float]:
    """(lowest, highest) correction the u8 code represents for a `bits`-bit code in dimension dim."""
    distortion = min(0.9, dim * codebook.coordinate_mse(dim, bits))   # E ||u - u_hat||^2 of unit u
    return 1.0 / _RANGE, _RANGE / (1.0 - distortion)


class FactorCodes:
    """Packs the scan factors of `Index(compact=True)` into FACTOR_BYTES[metric] bytes a vector.

    `pack` takes norms and corrections, `unpack` gives back the kernels'
    weights (and bias under "l2"), computed from the stored values only.
    """

    def __init__(self, metric: str, dim: int, bits: int):
        self.metric = metric
        self.columns = FACTOR_BYTES[metric]
        self.lowest, self.highest = correction_range(dim, bits)
        self._log_step = math.log(self.highest / self.lowest) / 254.0
        self.corrections = np.concatenate([[0.0], self.lowest * np.exp(self._log_step * np.arange(255))])

    def pack(self, norms: np.ndarray | None, corrections: np.ndarray) -> np.ndarray:
        """(n, columns) uint8 from norms (n,) float32 or float64 and corrections (n,) float64
        (corrections >= 0; 0 stays 0, others are clipped to the range); norms must not exceed the
        float16 range (see `norm_overflow`), and may be None under "cosine", which keeps none."""
        out = np.empty((corrections.shape[0], self.columns), np.uint8)
        with np.errstate(divide="ignore"):
            steps = np.log(corrections / self.lowest) / self._log_step
        out[:, 0] = np.where(corrections > 0, np.clip(np.rint(steps), 0, 254) + 1, 0).astype(np.uint8)
        if self.columns > 1:
            out[:, 1:3] = norms.astype(np.float16).reshape(-1, 1).view(np.uint8)
        return out

    def unpack(self, packed: np.ndarray) -> np.ndarray:
        """The kernels' factors (n, 1) float32 weight, or (n, 2) weight and bias under "l2"."""
        c = self.corrections[packed[:, 0]]
        if self.columns == 1:
            return c.astype(np.float32)[:, None]
        norms = np.ascontiguousarray(packed[:, 1:3]).view(np.float16)[:, 0].astype(np.float64)
        if self.metric == "ip":
            return (norms * c).astype(np.float32)[:, None]
        return np.stack([2.0 * norms * c, -norms * norms], axis=1).astype(np.float32)

    def norm_overflow(self, norms: np.ndarray | None) -> int:
        """The first row whose norm float16 cannot hold, or -1 (always under "cosine": norms may be None)."""
        if self.columns == 1:
            return -1
        bad = np.flatnonzero(norms > _FLOAT16_MAX)
        return int(bad[0]) if bad.size else -1
