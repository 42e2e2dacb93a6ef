"""Scan factors kept as float16: 4 B a vector for the "translate" estimator's two factors.

The "translate" estimator scores a vector as w <q - m, e_hat> + b with a weight
w = ||r|| / <e, e_hat> and a bias b = <m, x - m> (see `Index`). Neither needs
more precision than float16's 11 significant bits: the estimate's own error
is larger (measured in bench/core_recall.py). Keeping them as float16 makes the
estimator cost the 4 B a vector of a single float32 factor, a turbovec or
default code's. Both are divided by one power of two, `scale`, fixed by the
first vectors packed, so that data of any norm fits float16's range
(values up to 2**10 at first, so later vectors may be 64 times larger).
"""
from __future__ import annotations

import math

import numpy as np

_FLOAT16_MAX = float(np.finfo(np.float16).max)
# The first pack's largest value is scaled to at most this.
_FIRST_MAX = 2.0 ** 10


class HalfFactors:
    """Packs (n, 2) float32 scan factors (weight, bias) into (n, 4) uint8: two float16 of factors / scale.

    The interface `store.CodeStore` takes for packed factors: `columns`
    (bytes a vector) and `unpack`; `pack`, `overflow` and `scale` are this
    class's own. scale: None until the first `fit` (or given, from a file).
    """

    columns = 4
    n_factors = 2

    def __init__(self, scale: float | None = None):
        self.scale = None if scale is None else self._check_scale(scale)

    @staticmethod
    def _check_scale(scale) -> float:
        scale = float(scale)
        if not (math.isfinite(scale) and scale > 0 and math.frexp(scale)[0] == 0.5):
            raise ValueError(f"scale must be a positive power of two, got {scale!r}")
        return scale

    def fit(self, factors: np.ndarray) -> None:
        """Fix `scale` (once) from the first factors (n, 2) to be packed: the power of two that brings
        their largest magnitude to at most _FIRST_MAX (1 when they are all 0)."""
        if self.scale is not None:
            return
        top = float(np.abs(factors).max()) if factors.size else 0.0
        self.scale = 2.0 ** math.ceil(math.log2(top / _FIRST_MAX)) if top > 0 and math.isfinite(top) else 1.0

    def pack(self, factors: np.ndarray) -> np.ndarray:
        """(n, 4) uint8 from factors (n, 2) float32 or float64, every value within the range
        (see `overflow`); fits `scale` first if it is not fixed yet."""
        self.fit(factors)
        half = (np.asarray(factors, np.float64) / self.scale).astype(np.float16)
        return np.ascontiguousarray(half).view(np.uint8).reshape(factors.shape[0], self.columns)

    def unpack(self, packed: np.ndarray) -> np.ndarray:
        """The kernels' factors (n, 2) float32 (weight, bias) from packed (n, 4) uint8."""
        half = np.ascontiguousarray(packed).view(np.float16).reshape(packed.shape[0], 2)
        return (half.astype(np.float32) * np.float32(1.0 if self.scale is None else self.scale))

    def overflow(self, factors: np.ndarray) -> int:
        """The first row of factors (n, 2) with a value the float16 range cannot hold at `scale` (as
        `fit` would fix it), or -1."""
        scale = self.scale
        if scale is None:
            probe = HalfFactors()
            probe.fit(factors)
            scale = probe.scale
        bad = np.flatnonzero(~(np.abs(factors) <= _FLOAT16_MAX * scale).all(axis=1))
        return int(bad[0]) if bad.size else -1
