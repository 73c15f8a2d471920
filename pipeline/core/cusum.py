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


def tilt_directions(probs: FloatArray, n_coarse: int = 10) -> tuple[list[str], FloatArray]:
    """Directions in which a distribution over fine bins can move, standardized under it.

    With ``u`` the mid-rank of each bin under ``probs`` (its probability integral
    transform, uniform under no change), the directions are the first two Legendre
    polynomials of ``u`` in both signs (location and spread: Neyman's smooth-test
    components) and the indicators of ``n_coarse`` equal-mass slices of ``u`` (a new
    mode, a heavier tail). Each column has mean 0 and variance 1 under ``probs``; bins
    without mass get 0. Degenerate directions (no variance) are dropped.

    >>> names, g = tilt_directions(np.full(100, 0.01), n_coarse=4)
    >>> names
    ['location+', 'location-', 'spread+', 'spread-', 'slice0', 'slice1', 'slice2', 'slice3']
    >>> p = np.full(100, 0.01)
    >>> np.allclose(p @ g, 0), np.allclose(p @ g**2, 1)
    (True, True)
    """
    p = np.asarray(probs, dtype=np.float64)
    p = p / p.sum()
    u = np.cumsum(p) - p / 2
    x = 2.0 * u - 1.0
    raw: list[tuple[str, FloatArray]] = [
        ("location+", x), ("location-", -x),
        ("spread+", 1.5 * x**2 - 0.5), ("spread-", 0.5 - 1.5 * x**2)]
    slice_of = np.minimum((u * n_coarse).astype(np.int64), n_coarse - 1)
    raw += [(f"slice{i}", (slice_of == i).astype(np.float64)) for i in range(n_coarse)]
    names, cols = [], []
    for name, g in raw:
        mean = float(p @ g)
        sd = math.sqrt(max(float(p @ (g - mean) ** 2), 0.0))
        if sd > 1e-9:
            names.append(name)
            cols.append(np.where(p > 0, (g - mean) / sd, 0.0))
    return names, np.stack(cols, axis=1)


class TiltCusum:
    """CUSUMs of a binned stream against its expected distribution, one per direction.

    Each direction ``g`` (see :func:`tilt_directions`) defines the alternative
    ``q ∝ p·exp(tilt·g)``; an event in bin ``j`` adds ``tilt·g_j − ln Z`` to its
    CUSUM. Events are summed per time step (``step_seconds``) and each step closes, in
    order, when :meth:`advance` passes it, so the number of restarts, and with it the
    false-alarm bound ``steps × directions × e^-threshold``, does not depend on the
    traffic. A drift smaller than about half the tilt along every direction does not
    accumulate: ``tilt`` is the effect floor (0.25 standard deviations of the
    direction's statistic ≈ a mean shift of 0.25 sd, half of which, 0.125 sd, is a KS
    distance of about 0.05). The expected distribution ``p`` may change between calls
    (a tier truncated under new thresholds): each event is scored against its own.

    >>> rng = np.random.default_rng(0)
    >>> p = np.full(50, 0.02)
    >>> c = TiltCusum(threshold=12.0, step_seconds=60.0)
    >>> t = np.sort(rng.uniform(0, 3600, 4000))
    >>> c.add(t, rng.integers(0, 50, t.size), p)
    >>> c.advance(3600.0)
    False
    >>> shifted = np.minimum(rng.integers(0, 50, t.size) + 8, 49)   # mass moves up
    >>> c.add(t + 3600, shifted, p)
    >>> c.advance(7200.0), c.worst()[0]
    (True, 'location+')
    """

    def __init__(self, threshold: float, *, tilt: float = 0.25, step_seconds: float = 60.0,
                 n_coarse: int = 10, cap: float = 2.0) -> None:
        if not (threshold > 0 and tilt > 0 and step_seconds > 0):
            raise ValueError("threshold, tilt and step_seconds must be positive")
        self.threshold, self.tilt, self.cap = float(threshold), float(tilt), float(cap)
        self.step_seconds, self.n_coarse = float(step_seconds), int(n_coarse)
        self.names: list[str] = []
        self.statistic = np.zeros(0)
        self.since = np.zeros(0, dtype=np.int64)  # step an excursion began; -1: none
        self.pending: dict[int, dict[bytes, NDArray[np.int64]]] = {}
        self.closed = -(2**62)  # steps up to here are closed
        # per expected distribution: log q_m(j) / p(j), bins × directions in self.names
        self._tilts: dict[bytes, FloatArray] = {}

    def _for(self, probs: FloatArray) -> bytes:
        key = probs.tobytes()
        if key not in self._tilts:
            if len(self._tilts) >= 64:  # thresholds come and go; drop an idle truncation
                busy = {k for per in self.pending.values() for k in per}
                idle = next((k for k in self._tilts if k not in busy), None)
                if idle is not None:
                    del self._tilts[idle]
            names, g = tilt_directions(probs, self.n_coarse)
            p = probs / probs.sum()
            llr = self.tilt * g - np.log(p @ np.exp(self.tilt * g))
            if not self.names:
                self.names = names
                self.statistic = np.zeros(len(names))
                self.since = np.full(len(names), -1, dtype=np.int64)
            elif names != self.names:
                # a truncation that lost a direction (no variance left): it adds nothing
                keep = np.array([names.index(n) if n in names else -1 for n in self.names])
                llr = np.where(keep >= 0, llr[:, np.maximum(keep, 0)], 0.0)
            self._tilts[key] = llr
        return key

    def add(self, ts: FloatArray, bins: NDArray[np.intp], probs: FloatArray) -> None:
        """Count events at times ``ts`` in fine ``bins``, to be scored against ``probs``.

        Steps keep integer counts until they close, so the statistics do not depend on
        how the events were batched (float sums would, in their last bits).
        """
        if ts.size == 0:
            return
        p = np.asarray(probs, dtype=np.float64)
        key = self._for(p)
        steps = np.maximum(np.floor(ts / self.step_seconds).astype(np.int64), self.closed + 1)
        order = np.argsort(steps, kind="stable")
        steps, b = steps[order], np.asarray(bins)[order]
        cuts = np.flatnonzero(np.diff(steps)) + 1
        for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, steps.size], strict=True):
            self._pend(int(steps[lo]), key, np.bincount(b[lo:hi], minlength=p.size))

    def add_counts(self, ts: float, counts: NDArray[np.int64], probs: FloatArray) -> None:
        """Count pre-binned events (``counts`` per fine bin) at time ``ts``."""
        key = self._for(np.asarray(probs, dtype=np.float64))
        step = max(math.floor(ts / self.step_seconds), self.closed + 1)
        self._pend(step, key, np.asarray(counts, dtype=np.int64))

    def _pend(self, step: int, key: bytes, counts: NDArray[np.int64]) -> None:
        per = self.pending.setdefault(step, {})
        acc = per.get(key)
        per[key] = counts if acc is None else acc + counts

    def advance(self, now: float) -> bool:
        """Close every step that ends at or before ``now``; return :attr:`alarm`."""
        last = math.floor(now / self.step_seconds) - 1
        if last <= self.closed:
            return self.alarm
        cap = self.cap * self.threshold
        for s in sorted(k for k in self.pending if k <= last):
            per = self.pending.pop(s)
            x = self.statistic.copy()
            for key in sorted(per):
                x += per[key] @ self._tilts[key]
            up = x > 0
            self.since[up & (self.statistic <= 0)] = s
            self.since[~up] = -1
            np.maximum(x, 0.0, out=x)
            np.minimum(x, cap, out=x)
            self.statistic = x
        self.closed = last
        return self.alarm

    @property
    def alarm(self) -> bool:
        return bool(self.statistic.size and self.statistic.max() >= self.threshold)

    def worst(self) -> tuple[str, float, float | None] | None:
        """The direction with the largest statistic, the statistic, and since when."""
        if not self.statistic.size:
            return None
        i = int(np.argmax(self.statistic))
        since = None if self.since[i] < 0 else float(self.since[i]) * self.step_seconds
        return self.names[i], float(self.statistic[i]), since
