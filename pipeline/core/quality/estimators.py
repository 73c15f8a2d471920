"""Horvitz–Thompson and Hájek estimators, with their variances."""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike
from scipy import special

from pipeline.core.quality.intervals import _check_confidence


class Estimate(NamedTuple):
    """A point estimate with its (estimated) variance."""

    value: float
    variance: float
    n: int

    @property
    def se(self) -> float:
        """Standard error."""
        return math.sqrt(self.variance) if self.variance >= 0 else math.nan

    def interval(self, confidence: float = 0.95) -> tuple[float, float]:
        """Normal-approximation interval."""
        z = float(special.ndtri(0.5 + _check_confidence(confidence) / 2))
        return self.value - z * self.se, self.value + z * self.se


def _check_pi(y: ArrayLike, pi: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    ya = np.asarray(y, dtype=float)
    pa = np.asarray(pi, dtype=float)
    if ya.shape != pa.shape:
        raise ValueError(f"y and pi must have the same shape, got {ya.shape} and {pa.shape}")
    if pa.size and not (np.all(pa > 0) and np.all(pa <= 1)):
        raise ValueError("inclusion probabilities must be in (0, 1]")
    return ya, pa


def horvitz_thompson_total(y: ArrayLike, pi: ArrayLike) -> Estimate:
    """Horvitz–Thompson estimate of a population total from a Poisson sample.

    ``T = Σ y/π`` over the selected units; the unbiased variance estimator
    under Poisson (independent Bernoulli) sampling is ``Σ (1−π) y² / π²``.

    Examples
    --------
    >>> e = horvitz_thompson_total([1.0, 0.0, 1.0], [0.5, 0.25, 1.0])
    >>> e.value, e.variance
    (3.0, 2.0)
    """
    ya, pa = _check_pi(y, pi)
    total = float(np.sum(ya / pa))
    var = float(np.sum((1 - pa) * ya * ya / (pa * pa)))
    return Estimate(total, var, int(ya.size))


def horvitz_thompson_mean(y: ArrayLike, pi: ArrayLike, population_size: float) -> Estimate:
    """HT estimate of a population mean when the population size is known.

    Examples
    --------
    >>> horvitz_thompson_mean([1.0, 0.0, 1.0], [0.5, 0.25, 1.0], population_size=6).value
    0.5
    """
    if not population_size > 0:
        raise ValueError(f"population_size must be > 0, got {population_size!r}")
    e = horvitz_thompson_total(y, pi)
    return Estimate(e.value / population_size, e.variance / population_size**2, e.n)


def hajek_mean(y: ArrayLike, pi: ArrayLike) -> Estimate:
    """Hájek (ratio) mean ``Σ(y/π) / Σ(1/π)`` with its linearized variance.

    Needs no population size and is usually more stable than the HT mean;
    its variance estimate under Poisson sampling is
    ``Σ (1−π)(y−ȳ)²/π² / N̂²`` with ``N̂ = Σ 1/π``.

    Examples
    --------
    >>> round(hajek_mean([1.0, 0.0, 1.0], [0.5, 0.25, 1.0]).value, 4)
    0.4286
    """
    ya, pa = _check_pi(y, pi)
    if ya.size == 0:
        return Estimate(math.nan, math.nan, 0)
    inv = 1.0 / pa
    n_hat = float(inv.sum())
    mu = float((ya * inv).sum() / n_hat)
    var = float(np.sum((1 - pa) * (ya - mu) ** 2 * inv * inv)) / (n_hat * n_hat)
    return Estimate(mu, var, int(ya.size))
