"""Binomial intervals and Kish's effective counts."""

from __future__ import annotations

import math

from scipy import special


def _check_counts(successes: float, n: float) -> tuple[float, float]:
    if not (n >= 0 and math.isfinite(n)):
        raise ValueError(f"n must be a finite number >= 0, got {n!r}")
    if not math.isfinite(successes):
        raise ValueError(f"successes must be finite, got {successes!r}")
    # Tiny negative/overshoot from float sums of weights is clipped, not an error.
    return min(max(float(successes), 0.0), float(n)), float(n)


def _check_confidence(confidence: float) -> float:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    return float(confidence)


def wilson_interval(successes: float, n: float, confidence: float = 0.95) -> tuple[float, float]:
    """Two-sided Wilson score interval for a binomial proportion.

    Parameters
    ----------
    successes, n
        Counts; may be fractional *effective* counts (see :func:`effective_counts`)
        for weighted or Horvitz–Thompson data.
    confidence
        Two-sided coverage, e.g. 0.95.

    Returns
    -------
    tuple of float
        ``(low, high)``; ``(0.0, 1.0)`` when ``n == 0``.

    Examples
    --------
    >>> lo, hi = wilson_interval(7, 20)
    >>> round(lo, 4), round(hi, 4)
    (0.1812, 0.5671)
    """
    s, n = _check_counts(successes, n)
    confidence = _check_confidence(confidence)
    if n == 0:
        return 0.0, 1.0
    z = float(special.ndtri(0.5 + confidence / 2))
    p = s / n
    z2n = z * z / n
    denom = 1.0 + z2n
    center = (p + z2n / 2) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z2n / (4 * n))
    lo = 0.0 if s <= 0 else max(0.0, center - half)
    hi = 1.0 if s >= n else min(1.0, center + half)
    return lo, hi


def beta_interval(
    successes: float, n: float, confidence: float = 0.95, method: str = "jeffreys"
) -> tuple[float, float]:
    """Two-sided Beta-quantile interval for a binomial proportion.

    Parameters
    ----------
    successes, n
        Counts, possibly fractional effective counts.
    confidence
        Two-sided coverage.
    method
        ``"jeffreys"``: equal-tailed Beta(s+½, n−s+½) posterior interval,
        with the lower bound set to 0 when ``s == 0`` and the upper to 1 when
        ``s == n`` (Brown, Cai & DasGupta 2001).  ``"clopper-pearson"``: the
        exact interval ``Beta(α/2; s, n−s+1)``, ``Beta(1−α/2; s+1, n−s)``.

    Examples
    --------
    >>> [round(x, 4) for x in beta_interval(7, 20)]
    [0.1723, 0.5678]
    >>> [round(x, 4) for x in beta_interval(7, 20, 0.9, method="clopper-pearson")]
    [0.1773, 0.558]
    """
    s, n = _check_counts(successes, n)
    confidence = _check_confidence(confidence)
    if n == 0:
        return 0.0, 1.0
    a = 1.0 - confidence
    if method == "jeffreys":
        lo = 0.0 if s <= 0 else float(special.betaincinv(s + 0.5, n - s + 0.5, a / 2))
        hi = 1.0 if s >= n else float(special.betaincinv(s + 0.5, n - s + 0.5, 1 - a / 2))
    elif method in ("clopper-pearson", "exact"):
        lo = 0.0 if s <= 0 else float(special.betaincinv(s, n - s + 1, a / 2))
        hi = 1.0 if s >= n else float(special.betaincinv(s + 1, n - s, 1 - a / 2))
    else:
        raise ValueError(f"method must be 'jeffreys' or 'clopper-pearson', got {method!r}")
    return lo, hi


def kish_effective_n(sum_w: float, sum_w2: float) -> float:
    """Kish's effective sample size ``(Σw)² / Σw²`` (0 when there is no weight).

    Examples
    --------
    >>> kish_effective_n(4.0, 4.0)   # four unit weights
    4.0
    >>> kish_effective_n(1 + 3.0, 1 + 9.0)  # weights 1 and 3
    1.6
    """
    if sum_w <= 0 or sum_w2 <= 0:
        return 0.0
    return sum_w * sum_w / sum_w2


def effective_counts(sum_wy: float, sum_w: float, sum_w2: float) -> tuple[float, float]:
    """Effective ``(successes, n)`` of weighted outcomes, for the binomial intervals.

    ``n_eff`` is Kish's effective size and ``successes = rate × n_eff`` with the
    weighted rate ``Σwy / Σw``: the binomial with these counts has the same
    rate and (for a constant-rate population) the same variance as the
    weighted estimate.

    Examples
    --------
    >>> effective_counts(3.0, 4.0, 4.0)
    (3.0, 4.0)
    """
    n_eff = kish_effective_n(sum_w, sum_w2)
    if n_eff == 0.0:
        return 0.0, 0.0
    rate = min(max(sum_wy / sum_w, 0.0), 1.0)
    return rate * n_eff, n_eff
