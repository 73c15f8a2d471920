"""Sequential detection of a rise in a delayed count: support contacts per routed request.

Users who got a wrong answer call support hours to days after the request. A window that
compares the last day's contacts with the last day's requests sees a rise only once the
window has filled, and a shorter window is biased by the traffic's daily cycle (the
contacts of the evening come from the afternoon's requests). Here each hour's contacts
are compared with the number *expected* from the requests of the hours before it:

.. math::

    \\lambda_h = p_0 \\sum_{a=0}^{A-1} n_{h-a} f(a)

where ``n`` counts routed requests per hourly bucket, ``f`` is the distribution of the
contact delay in buckets and ``p0`` the contacts per request, both estimated from the
reference period (:class:`DelayProfile`, which corrects for the contacts of recent
requests that have not arrived yet). A one-sided Poisson CUSUM (:class:`PoissonCusum`)
accumulates the log-likelihood ratio of ``p0 + floor`` against ``p0``:

.. math::

    S_h = \\max(0, S_{h-1} + x_h \\ln\\rho - (\\rho - 1)\\lambda_h),\\quad
    \\rho = (p_0 + \\text{floor}) / p_0

Under no change ``exp`` of each restart's sum is a non-negative martingale with mean 1,
so by Ville's inequality it crosses ``e^t`` with probability at most ``e^-t``; with the
threshold ``t = ln(1/α)``, the chance of a false alarm in ``T`` buckets is at most
``T·α``: the same per-evaluation level ``α`` as a Bonferroni family of fixed-window
tests, which is how :class:`~pipeline.core.router_state.RouterState` budgets it.

>>> profile = DelayProfile(max_delay=4)
>>> for d in range(24):                      # a reference day: 100 requests an hour,
...     profile.add_exposure("cheap", d, 100)
...     for a in (1, 2):                     # one contact 1 h and one 2 h after them
...         if d + a <= 23:
...             profile.add_contact("cheap", d, d + a)
>>> model = profile.model(now_bucket=23)     # bucket 23 is the newest closed one
>>> [float(x) for x in model.pmf]
[0.0, 0.5, 0.5, 0.0]
>>> round(model.rate("cheap"), 4)            # 0.02 measured; its 90 % upper bound
0.0244
>>> c = PoissonCusum(threshold=4.0)
>>> lam = model.expected("cheap", np.full(4, 100.0))
>>> round(lam, 2)
2.44
>>> rate = model.rate("cheap")
>>> [c.update(x, lam, rate, floor=0.02, bucket=b) for b, x in enumerate([2, 1, 4, 6, 7])]
[False, False, False, False, True]
>>> c.since, round(c.excess_rate(model.rate("cheap")), 3)
(2, 0.032)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray
from scipy import special

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


@dataclass(frozen=True, slots=True)
class DelayModel:
    """What :meth:`DelayProfile.model` estimated: the delay pmf and per-key rates."""

    pmf: FloatArray
    rates: dict[str, float]

    def rate(self, key: str) -> float:
        return self.rates.get(key, math.nan)

    def expected(self, key: str, routed_recent: FloatArray) -> float:
        """Expected count in a bucket given the routed counts of it and the buckets
        before it, newest first (``routed_recent[a]`` is ``a`` buckets back)."""
        a = min(len(routed_recent), len(self.pmf))
        return self.rate(key) * float(np.dot(routed_recent[:a], self.pmf[:a]))


@dataclass(slots=True)
class DelayProfile:
    """Reference-period requests and their contacts, by bucket and key.

    :meth:`add_exposure` counts requests routed in reference bucket ``d``;
    :meth:`add_contact` a contact in bucket ``c`` caused by a request of reference
    bucket ``d`` (delays of ``max_delay`` buckets or more count in the last bin).
    :meth:`model` estimates, at bucket ``now``:

    * the delay pmf with the contacts of requests not yet old enough left out: the
      contacts per request at delay ``a`` is the count at ``a`` over the requests at
      least ``a`` buckets old (a life-table estimate, so recent requests whose contacts
      are still on their way do not bias the delays short);
    * each key's rate as its contacts over its requests weighted by the share of their
      contacts that should have arrived by ``now``, taken at a one-sided upper
      confidence bound (``rate_confidence``), so that a reference that happened to be
      quiet does not make every later hour look like a rise.
    """

    max_delay: int
    rate_confidence: float = 0.9
    exposure: dict[str, dict[int, float]] = field(default_factory=dict)
    contacts: dict[str, float] = field(default_factory=dict)
    delays: FloatArray = field(init=False)
    last_bucket: int = field(init=False, default=-(2**62))
    _cached: tuple[int, DelayModel | None] | None = field(init=False, default=None,
                                                          repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.max_delay < 1:
            raise ValueError(f"max_delay must be >= 1, got {self.max_delay!r}")
        self.delays = np.zeros(self.max_delay)

    def add_exposure(self, key: str, bucket: int, count: float) -> None:
        per = self.exposure.setdefault(key, {})
        per[bucket] = per.get(bucket, 0.0) + float(count)
        self._cached = None
        self.last_bucket = max(self.last_bucket, bucket)

    def add_contact(self, key: str, decision_bucket: int, contact_bucket: int) -> None:
        a = min(max(contact_bucket - decision_bucket, 0), self.max_delay - 1)
        self.delays[a] += 1.0
        self.contacts[key] = self.contacts.get(key, 0.0) + 1.0
        self._cached = None

    def model(self, now_bucket: int) -> DelayModel | None:
        """The delay pmf and per-key rates as of ``now_bucket``; None without contacts.

        Once every reference request is ``max_delay`` buckets old and no contact comes
        in, the estimate no longer changes: it is kept until the next contact.
        """
        settled = min(now_bucket, self.last_bucket + self.max_delay)
        if self._cached is not None and self._cached[0] == settled:
            return self._cached[1]
        model = self._estimate(settled)
        self._cached = (settled, model)
        return model

    def _estimate(self, now_bucket: int) -> DelayModel | None:
        if not self.exposure or self.delays.sum() <= 0:
            return None
        total: dict[int, float] = {}
        for per in self.exposure.values():
            for b, n in per.items():
                total[b] = total.get(b, 0.0) + n
        buckets = np.fromiter(total, dtype=np.int64)
        counts = np.fromiter(total.values(), dtype=np.float64)
        age = np.clip(now_bucket - buckets, -1, self.max_delay - 1)
        # requests at least a buckets old, for every a: a reversed cumulative sum by age
        by_age = np.bincount(age[age >= 0], weights=counts[age >= 0], minlength=self.max_delay)
        at_risk = np.cumsum(by_age[::-1])[::-1]
        per_request = np.divide(self.delays, at_risk, out=np.zeros(self.max_delay),
                                where=at_risk > 0)
        if per_request.sum() <= 0:
            return None
        pmf = per_request / per_request.sum()
        cdf = np.cumsum(pmf)
        rates: dict[str, float] = {}
        for key, per in self.exposure.items():
            ages = now_bucket - np.fromiter(per, dtype=np.int64)
            arrived = cdf[np.clip(ages, 0, self.max_delay - 1)]
            arrived[ages < 0] = 0.0
            exposure = float(np.dot(np.fromiter(per.values(), dtype=np.float64), arrived))
            if exposure > 0:
                rates[key] = _poisson_upper(self.contacts.get(key, 0.0),
                                            self.rate_confidence) / exposure
        return DelayModel(pmf, rates)


def _poisson_upper(count: float, confidence: float) -> float:
    """One-sided upper confidence bound of a Poisson mean from one ``count``
    (the exact Garwood bound, ``χ²(confidence; 2(count + 1)) / 2``)."""
    return float(special.gammaincinv(count + 1.0, confidence))
