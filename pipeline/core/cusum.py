"""Sequential detection of a rise in a delayed count: support contacts per routed request.

Users who got a wrong answer call support hours to days after the request. A window that
compares the last day's contacts with the last day's requests sees a rise only once the
window has filled, and a shorter window is biased by the traffic's daily cycle (the
contacts of the evening come from the afternoon's requests). Here each hour's contacts
are compared with the number *expected* from the requests of the hours before it:

.. math::

    \\lambda_h = p_0 \\sum_{a=0}^{A-1} n_{h-a} f(a)

where ``n`` counts routed requests per hourly bucket, ``f`` is the distribution of the
contact delay in buckets and ``p0`` the contacts per request: the delay is learnt from
the data and the rate from the reference period, both with the contacts still to come
accounted for (:mod:`pipeline.core.lagged`). A one-sided Poisson CUSUM
(:class:`PoissonCusum`) accumulates the log-likelihood ratio of ``p0 + floor`` against
``p0``:

.. math::

    S_h = \\max(0, S_{h-1} + x_h \\ln\\rho - (\\rho - 1)\\lambda_h),\\quad
    \\rho = (p_0 + \\text{floor}) / p_0

Under no change ``exp`` of each restart's sum is a non-negative martingale with mean 1,
so by Ville's inequality it crosses ``e^t`` with probability at most ``e^-t``; with the
threshold ``t = ln(1/α)``, the chance of a false alarm in ``T`` buckets is at most
``T·α``: the same per-evaluation level ``α`` as a Bonferroni family of fixed-window
tests, which is how :class:`~pipeline.core.router_state.RouterState` budgets it.

>>> pmf = np.array([0.0, 0.5, 0.5, 0.0])     # contacts 1 or 2 hours after the request
>>> rate = 0.02                              # contacts per request
>>> lam = rate * float(np.dot(np.full(4, 100.0), pmf))   # 100 requests an hour
>>> c = PoissonCusum(threshold=4.0)
>>> [c.update(x, lam, rate, floor=0.02, bucket=b) for b, x in enumerate([2, 1, 4, 6, 7])]
[False, False, False, False, True]
>>> c.since, round(c.excess_rate(rate), 3)
(2, 0.037)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]


@dataclass(slots=True)
class PoissonCusum:
    """One-sided CUSUM for a rise of a Poisson count over its expectation.

    ``threshold`` is ``ln(1/α)``; the statistic is capped at ``cap × threshold`` so that
    an alarm clears within a bounded time once the rate is back to normal. While the
    statistic is positive the current excursion's start bucket (:attr:`since`, the
    CUSUM's change-point estimate) and its observed and expected counts are kept.
    """

    threshold: float
    cap: float = 2.0
    statistic: float = 0.0
    since: int | None = None
    observed: float = 0.0
    expected: float = 0.0

    def __post_init__(self) -> None:
        if not (self.threshold > 0 and math.isfinite(self.threshold)):
            raise ValueError(f"threshold must be positive and finite, got {self.threshold!r}")

    def update(self, observed: float, expected: float, rate: float, *, floor: float,
               bucket: int) -> bool:
        """Add one bucket: ``observed`` count, ``expected`` under ``rate``; alarm or not.

        The alternative is ``rate + floor``. A bucket with nothing expected adds nothing.
        """
        if not (observed >= 0 and expected >= 0 and rate > 0 and floor > 0):
            raise ValueError("need observed >= 0, expected >= 0, rate > 0 and floor > 0")
        if expected > 0 or observed > 0:
            rho = (rate + floor) / rate
            step = observed * math.log(rho) - (rho - 1.0) * expected
            s = self.statistic + step
            if s <= 0.0:
                self.statistic, self.since, self.observed, self.expected = 0.0, None, 0.0, 0.0
            else:
                if self.since is None:
                    self.since = bucket
                self.statistic = min(s, self.cap * self.threshold)
                self.observed += observed
                self.expected += expected
        return self.alarm

    @property
    def alarm(self) -> bool:
        return self.statistic >= self.threshold

    def excess_rate(self, rate: float) -> float:
        """Extra contacts per request over the current excursion (0 without one)."""
        if self.expected <= 0:
            return 0.0
        return (self.observed - self.expected) / (self.expected / rate)


