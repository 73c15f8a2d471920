"""Weighted outcome sums (:class:`Totals`): they merge by addition."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from numpy.typing import ArrayLike

from pipeline.core.quality.intervals import (
    beta_interval,
    effective_counts,
    kish_effective_n,
    wilson_interval,
)


@dataclass(frozen=True, slots=True)
class Totals:
    """Weighted outcome sums: ``n, Σw, Σw², Σwy, Σw²y, Σw²y²``.

    Examples
    --------
    >>> t = Totals.from_arrays([1, 1, 0, 1])
    >>> t.rate, t.n_eff
    (0.75, 4.0)
    >>> [round(x, 3) for x in t.interval(0.95)]
    [0.301, 0.954]
    >>> (t + t).n
    8.0
    """

    n: float = 0.0
    w: float = 0.0
    w2: float = 0.0
    wy: float = 0.0
    w2y: float = 0.0
    w2y2: float = 0.0

    @classmethod
    def from_arrays(cls, y: ArrayLike, weights: ArrayLike | None = None) -> Totals:
        """Totals of outcomes ``y`` with optional weights (default 1)."""
        ya = np.asarray(y, dtype=float)
        wa = np.ones_like(ya) if weights is None else np.asarray(weights, dtype=float)
        w2 = wa * wa
        return cls(
            float(ya.size),
            float(wa.sum()),
            float(w2.sum()),
            float((wa * ya).sum()),
            float((w2 * ya).sum()),
            float((w2 * ya * ya).sum()),
        )

    @classmethod
    def from_vector(cls, v: Sequence[float] | np.ndarray) -> Totals:
        """Totals from the six sums in field order."""
        return cls(*(float(x) for x in v))

    def as_vector(self) -> np.ndarray:
        """The six sums as a float array."""
        return np.array([self.n, self.w, self.w2, self.wy, self.w2y, self.w2y2])

    def __add__(self, other: Totals) -> Totals:
        return Totals(
            self.n + other.n,
            self.w + other.w,
            self.w2 + other.w2,
            self.wy + other.wy,
            self.w2y + other.w2y,
            self.w2y2 + other.w2y2,
        )

    @property
    def rate(self) -> float:
        """Weighted (Hájek) good-rate ``Σwy/Σw`` clipped to [0, 1]; NaN when empty."""
        if self.w <= 0:
            return math.nan
        return min(max(self.wy / self.w, 0.0), 1.0)

    @property
    def n_eff(self) -> float:
        """Kish's effective sample size."""
        return kish_effective_n(self.w, self.w2)

    @property
    def successes_eff(self) -> float:
        """Effective successes ``rate × n_eff``."""
        return effective_counts(self.wy, self.w, self.w2)[0]

    @property
    def variance(self) -> float:
        """Linearized variance of the Hájek rate, ``Σw²(y−ȳ)² / (Σw)²``.

        For unweighted binary data this is ``p(1−p)/n``.  NaN when empty.
        """
        if self.w <= 0:
            return math.nan
        mu = self.wy / self.w
        num = self.w2y2 - 2 * mu * self.w2y + mu * mu * self.w2
        return max(num, 0.0) / (self.w * self.w)

    def interval(self, confidence: float = 0.95, method: str = "wilson") -> tuple[float, float]:
        """Interval of the rate from effective counts (``wilson``, ``jeffreys``,
        ``clopper-pearson``)."""
        s, n = effective_counts(self.wy, self.w, self.w2)
        if method == "wilson":
            return wilson_interval(s, n, confidence)
        return beta_interval(s, n, confidence, method)

    def to_dict(self) -> dict[str, float]:
        """The six sums by name."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, float]) -> Totals:
        """Inverse of :meth:`to_dict`."""
        return cls(**{k: float(v) for k, v in d.items()})


def _vec(y: float, w: float) -> np.ndarray:
    w2 = w * w
    return np.array([1.0, w, w2, w * y, w2 * y, w2 * y * y])


_ZERO6 = np.zeros(6)
