"""Lagging signals attributed to the requests they belong to, with a censoring correction.

A support contact arrives hours to days after its request. Counting contacts in the
window *in which they arrive* against the requests *routed* in that window mixes two
populations: the numerator comes from the requests of earlier hours, the denominator
from those of this window. The ratio is unbiased only while volume is steady; on a
weekend (volume ×0.4) the contacts from Friday's requests land on Saturday's small
denominator and the rate reads high; after a threshold move, the band just above the
old threshold keeps receiving its old contacts while its volume has gone. Both paged.

Here each lagging event counts against **its own request**: by the decision's time
bucket, tier and score band (the join knows them). A window over the requests decided
in buckets ``b = K-m+1 .. K`` (``K`` the newest closed bucket) then has as numerator the
contacts of *those* requests that have arrived so far, ``C = Σ_b c_b``, and as
denominator the requests weighted by the share of their contacts expected to have
arrived by now:

.. math::

    E = \\sum_b n_b\\, F(K - b), \\qquad \\hat p = C / E

with ``F`` the cumulative distribution of the delay, in whole buckets, from a
decision's bucket to its contact's bucket (:class:`DelayDistribution`). Given ``F``, a
request of bucket ``b`` has had its contact by now with probability ``p·F(K-b)``, so
``E[C] = p·E`` whatever the volumes ``n_b``: the estimate is unbiased under volume
changes of any shape (weekly and diurnal cycles, holidays, ramps), and per band under
threshold moves. Buckets whose expected completed share is below ``min_completed``
(the newest hour or two) are left out of both sums: there ``F`` is small and its
relative error large, while they carry almost no exposure.

``C`` is a sum of independent Bernoulli counts with total mean ``p·E``, so it is
(very nearly, for rare contacts) Poisson: intervals are the exact Garwood interval of
a Poisson count over the exposure ``E`` (:func:`poisson_rate_interval`), and two
windows compare with the conditional binomial test, exact for Poisson counts. As a
good-rate (``1 - contacts per request``, as every quality signal is) the window is the
:class:`~pipeline.core.quality.Totals` of ``E`` effective requests of which ``C`` are
bad (:func:`attributed_totals`), so every drop test, band scan and economics formula
uses it unchanged.

The delay distribution is learnt from the data (:class:`DelayDistribution`), as a life
table: the contacts at delay ``a`` over the requests at least ``a`` buckets old, over a
rolling history of decision days (14 by default) that leaves out the newest day, so
that a fresh incident (whose contacts are short-delayed by construction: only the
early ones have arrived) does not bend the delay estimate. The estimate follows a
change of the delays (e.g. delays that double) within about the history's length.

>>> dist = DelayDistribution(max_delay=6, history_days=2, holdout_days=0, min_events=1)
>>> for h in range(48):                       # two days of 100 requests an hour,
...     dist.add_exposure(h, 100)
...     for a in (1, 2):                      # one contact 1 h and one 2 h after them
...         dist.add_delay(h, h + a)
>>> est = dist.estimate(now_bucket=49)
>>> [round(float(x), 3) for x in est.cdf]
[0.0, 0.5, 1.0, 1.0, 1.0, 1.0]
>>> counts = LaggedCounts(n_buckets=24)
>>> for h in range(24):
...     _ = counts.update_routed("cheap", 3, h, 100)
...     for a in (1, 2):
...         if h + a <= 23:
...             _ = counts.update_event("cheap", 3, h, h + a)
>>> t = counts.window(23, 24, est.cdf, tier="cheap")
>>> round(t.n, 1), round(1 - t.rate, 4)       # 2 contacts per 100 requests, unbiased
(2250.0, 0.02)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import special

from pipeline.core.quality import Totals

__all__ = [
    "DelayDistribution",
    "DelayEstimate",
    "LaggedCounts",
    "attributed_counts",
    "attributed_totals",
    "life_table_cdf",
    "poisson_rate_interval",
]

FloatArray = NDArray[np.float64]
Key = tuple[str, int]


def attributed_totals(contacts: float, exposure: float) -> Totals:
    """A lagging bad-event count over its expected-arrival exposure, as good-rate totals.

    ``exposure`` effective requests, ``contacts`` of them bad: ``rate = 1 - C/E``,
    ``n_eff = E``, variance ``p(1-p)/E`` (the binomial one at the effective size).

    >>> t = attributed_totals(3.0, 150.0)
    >>> round(t.rate, 3), t.n_eff
    (0.98, 150.0)
    """
    e = max(float(exposure), 0.0)
    c = max(float(contacts), 0.0)
    good = e - c
    return Totals(e, e, e, good, good, good)


def poisson_rate_interval(count: float, exposure: float,
                          confidence: float = 0.95) -> tuple[float, float]:
    """Exact (Garwood) two-sided interval of a Poisson rate: ``count`` events over
    ``exposure``; ``(0, inf)`` without exposure.

    Its coverage is at least ``confidence`` for Poisson counts and for sums of
    independent Bernoulli counts (less spread than Poisson at the same mean).

    >>> lo, hi = poisson_rate_interval(10, 1000)
    >>> round(lo, 5), round(hi, 5)
    (0.0048, 0.01839)
    """
    if not exposure > 0:
        return 0.0, math.inf
    a = (1.0 - confidence) / 2.0
    lo = 0.0 if count <= 0 else float(special.gammaincinv(count, a))
    hi = float(special.gammaincinv(count + 1.0, 1.0 - a))
    return lo / exposure, hi / exposure


def life_table_cdf(delays: ArrayLike, exposure: ArrayLike, ages: ArrayLike) -> FloatArray:
    """Delay cdf from a life table; vectorised over any leading axes.

    ``delays[..., a]`` counts events ``a`` buckets after their decision (the last bin:
    that long or longer) from requests ``exposure[..., j]`` decided ``ages[j]`` buckets
    before now. The events per request at delay ``a`` are ``delays[a]`` over the
    requests at least ``a`` buckets old (only those can have shown it yet); normalised,
    they are the pmf, whose cumulative sum is returned. NaN where nothing is known.

    >>> life_table_cdf([0, 5, 5], [100, 100], ages=[5, 1]).round(3).tolist()
    [0.0, 0.333, 1.0]
    """
    d = np.asarray(delays, dtype=np.float64)
    n = np.asarray(exposure, dtype=np.float64)
    age = np.asarray(ages, dtype=np.int64)
    depth = d.shape[-1]
    # requests at least a buckets old: those with age >= a
    at_risk = (n[..., :, None] * (age[:, None] >= np.arange(depth))).sum(axis=-2)
    per_request = np.divide(d, at_risk, out=np.zeros_like(d), where=at_risk > 0)
    total = per_request.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        cdf: FloatArray = np.minimum(np.cumsum(per_request, axis=-1) / total, 1.0)
    return cdf


def attributed_counts(routed: ArrayLike, events: ArrayLike, ages: ArrayLike, cdf: ArrayLike,
                      min_completed: float = 0.1) -> tuple[FloatArray, FloatArray]:
    """``(C, E)`` of a window; vectorised over any leading axes.

    ``routed[..., j]`` requests decided ``ages[j]`` buckets ago, ``events[..., j]`` of
    their lagging events in so far, ``cdf[..., a]`` the delay cdf: ``C = Σ events`` and
    ``E = Σ routed·F(age)`` over the buckets with ``F(age) ≥ min_completed``.

    >>> c, e = attributed_counts([100, 100, 100], [2, 1, 0], [2, 1, 0], [0.0, 0.5, 1.0])
    >>> float(c), float(e)
    (3.0, 150.0)
    """
    n = np.asarray(routed, dtype=np.float64)
    x = np.asarray(events, dtype=np.float64)
    age = np.asarray(ages, dtype=np.int64)
    f_all = np.asarray(cdf, dtype=np.float64)
    f = np.where(age < 0, 0.0, f_all[..., np.clip(age, 0, f_all.shape[-1] - 1)])
    use = f >= min_completed
    return (x * use).sum(axis=-1), (n * f * use).sum(axis=-1)


def _claim(tags: NDArray[np.int64], rows: np.ndarray, bucket: int) -> int | None:
    """The ring slot of absolute ``bucket``, reset if it held an older bucket; ``None``
    when it already holds a newer one (``bucket`` fell out of the ring)."""
    s = bucket % tags.size
    held = int(tags[s])
    if held == bucket:
        return s
    if held > bucket or bucket <= int(tags.max()) - tags.size:
        return None
    tags[s] = bucket
    rows[s] = 0.0
    return s


def _merge_ring(tags: NDArray[np.int64], rows: list[np.ndarray], other_tags: NDArray[np.int64],
                other_rows: list[np.ndarray]) -> None:
    """Add ``other``'s ring into this one, slot by slot: the newer bucket wins a slot (as
    it would have in one stream), equal buckets add."""
    newer = other_tags > tags
    for r in rows:
        r[newer] = 0.0
    np.maximum(tags, other_tags, out=tags)
    same = other_tags == tags
    for mine, theirs in zip(rows, other_rows, strict=True):
        mine[same] += theirs[same]
    # a bucket one side still held but the other's newer buckets push out of the ring
    stale = tags <= int(tags.max()) - tags.size
    tags[stale] = -(2**62)
    for r in rows:
        r[stale] = 0.0


def _read(tags: NDArray[np.int64], rows: np.ndarray, first: int, last: int) -> np.ndarray:
    """Rows of absolute buckets ``first..last`` (oldest first); zeros where not held."""
    idx = np.arange(first, last + 1)
    slots = idx % tags.size
    out = rows[slots].copy()
    out[(tags[slots] != idx) | (idx <= int(tags.max()) - tags.size)] = 0.0
    return out


@dataclass(frozen=True, slots=True)
class DelayEstimate:
    """The delay pmf and cdf in buckets (``cdf[a]``: share arrived within ``a`` buckets;
    the last bin holds every longer delay) and how many events they rest on."""

    pmf: FloatArray
    cdf: FloatArray
    events: float

    def completed(self, ages: NDArray[np.int64]) -> FloatArray:
        """Expected completed share ``F(age)`` of requests ``ages`` buckets old
        (0 for negative ages, 1 past the longest delay)."""
        a = np.clip(ages, 0, self.cdf.size - 1)
        out: FloatArray = np.where(ages < 0, 0.0, self.cdf[a])
        return out


class DelayDistribution:
    """Rolling life-table estimate of the delay from a decision's bucket to its event's.

    Parameters
    ----------
    max_delay
        Delays are counted in ``max_delay`` bins of one bucket; longer ones in the last.
    history_days
        Decision days (of 24 buckets) the estimate uses: it follows a change of the
        delays within about this long.
    holdout_days
        The newest decision days left out, so that a change of the *rate* (an incident,
        whose early contacts are the only ones in yet) does not shorten the delays.
    min_events
        Events needed for an estimate; below it the last estimate is kept (or none).
    """

    def __init__(self, max_delay: int = 168, *, history_days: int = 14, holdout_days: int = 1,
                 min_events: float = 20.0) -> None:
        if max_delay < 1 or history_days < 1 or holdout_days < 0:
            raise ValueError("need max_delay >= 1, history_days >= 1, holdout_days >= 0")
        self.max_delay = int(max_delay)
        self.history_days = int(history_days)
        self.holdout_days = int(holdout_days)
        self.min_events = float(min_events)
        n_days = self.history_days + self.holdout_days + 2
        self._day_tags = np.full(n_days, -(2**62), dtype=np.int64)
        self._delays = np.zeros((n_days, self.max_delay))
        self._hour_tags = np.full(n_days * 24, -(2**62), dtype=np.int64)
        self._exposure = np.zeros(n_days * 24)
        self._last: DelayEstimate | None = None
        self._cached: tuple[int, DelayEstimate | None] | None = None

    def add_exposure(self, bucket: int, count: float) -> None:
        """Count ``count`` requests decided in ``bucket``."""
        s = _claim(self._hour_tags, self._exposure, int(bucket))
        if s is not None:
            self._exposure[s] += float(count)
            self._cached = None

    def add_delay(self, decision_bucket: int, event_bucket: int, count: float = 1.0) -> None:
        """Count an event in ``event_bucket`` caused by a request of ``decision_bucket``."""
        a = min(max(int(event_bucket) - int(decision_bucket), 0), self.max_delay - 1)
        s = _claim(self._day_tags, self._delays, int(decision_bucket) // 24)
        if s is not None:
            self._delays[s, a] += float(count)
            self._cached = None

    def merge(self, other: DelayDistribution) -> DelayDistribution:
        """Add another partition's requests and delays (same configuration)."""
        if (self.max_delay, self.history_days, self.holdout_days) != (
                other.max_delay, other.history_days, other.holdout_days):
            raise ValueError("cannot merge DelayDistributions of different configurations")
        _merge_ring(self._day_tags, [self._delays], other._day_tags, [other._delays])
        _merge_ring(self._hour_tags, [self._exposure], other._hour_tags, [other._exposure])
        self._cached = None
        return self

    def estimate(self, now_bucket: int) -> DelayEstimate | None:
        """The estimate as of the close of ``now_bucket`` (cached per bucket)."""
        if self._cached is not None and self._cached[0] == now_bucket:
            return self._cached[1]
        est = self._estimate(int(now_bucket))
        if est is not None:
            self._last = est
        else:
            est = self._last
        self._cached = (now_bucket, est)
        return est

    def _estimate(self, k: int) -> DelayEstimate | None:
        d_hi = (k + 1) // 24 - 1 - self.holdout_days
        d_lo = d_hi - self.history_days + 1
        if d_hi < d_lo:
            return None
        delays = _read(self._day_tags, self._delays, d_lo, d_hi).sum(axis=0)
        events = float(delays.sum())
        if events < self.min_events:
            return None
        exposure = _read(self._hour_tags, self._exposure, 24 * d_lo, 24 * d_hi + 23)
        cdf = life_table_cdf(delays, exposure, k - np.arange(24 * d_lo, 24 * d_hi + 24))
        if not np.isfinite(cdf).all():
            return None
        cdf[-1] = 1.0
        return DelayEstimate(np.diff(cdf, prepend=0.0), cdf, events)


class LaggedCounts:
    """Per ``(tier, band)``: requests by decision bucket, and their lagging events by
    decision bucket (for attributed windows) and by arrival bucket (for the arrival-time
    CUSUM), over a ring of ``n_buckets``; plus the reference period's requests and
    events by decision bucket, kept whole.

    Buckets are tagged with their absolute index, so a jump in event time needs no
    sweep: a slot is reset when a newer bucket claims it. An event whose decision has
    left the ring is not attributed (:meth:`update_event` returns False) and the caller
    counts it.
    """

    ROUTED, BY_DECISION, BY_ARRIVAL = 0, 1, 2

    def __init__(self, n_buckets: int, *, bucket_seconds: float = 3600.0,
                 reference: tuple[int, int] | None = None) -> None:
        if n_buckets < 1:
            raise ValueError(f"n_buckets must be >= 1, got {n_buckets!r}")
        self.n_buckets = int(n_buckets)
        self.bucket_seconds = float(bucket_seconds)
        self.reference = reference  # [first, end) decision buckets
        self._tags = np.full(self.n_buckets, -(2**62), dtype=np.int64)
        self._head = -(2**62)  # the newest bucket claimed
        self._rings: dict[Key, np.ndarray] = {}
        self._ref: dict[Key, np.ndarray] = {}

    @property
    def tiers(self) -> list[str]:
        """Tiers seen, sorted."""
        return sorted({k[0] for k in self._rings} | {k[0] for k in self._ref})

    def _slot(self, bucket: int) -> int | None:
        s = bucket % self.n_buckets
        held = int(self._tags[s])
        if held == bucket:
            return s
        if held > bucket or bucket <= self._head - self.n_buckets:
            return None
        self._head = max(self._head, bucket)
        self._tags[s] = bucket
        for ring in self._rings.values():
            ring[s] = 0.0
        return s

    def _ring(self, key: Key) -> np.ndarray:
        ring = self._rings.get(key)
        if ring is None:
            ring = self._rings[key] = np.zeros((self.n_buckets, 3))
        return ring

    def _ref_add(self, key: Key, bucket: int, col: int, count: float) -> None:
        ref = self.reference
        if ref is None or not ref[0] <= bucket < ref[1]:
            return
        arr = self._ref.get(key)
        if arr is None:
            arr = self._ref[key] = np.zeros((ref[1] - ref[0], 2))
        arr[bucket - ref[0], col] += count

    def update_routed(self, tier: str, band: int, bucket: int, count: float = 1.0) -> bool:
        """Count ``count`` requests decided in ``bucket``; False if it left the ring."""
        key = (tier, int(band))
        self._ref_add(key, bucket, 0, float(count))
        s = self._slot(int(bucket))
        if s is None:
            return False
        self._ring(key)[s, self.ROUTED] += float(count)
        return True

    def update_event(self, tier: str, band: int, decision_bucket: int, arrival_bucket: int,
                     count: float = 1.0) -> bool:
        """Count a lagging event of a request of ``decision_bucket``, arrived in
        ``arrival_bucket``. False when the decision has left the ring (not attributed
        in any window; the reference period still counts it)."""
        key = (tier, int(band))
        self._ref_add(key, decision_bucket, 1, float(count))
        s_arr = self._slot(int(arrival_bucket))
        ring = self._ring(key)
        if s_arr is not None:
            ring[s_arr, self.BY_ARRIVAL] += float(count)
        s = self._slot(int(decision_bucket))
        if s is None:
            return False
        ring[s, self.BY_DECISION] += float(count)
        return True

    def merge(self, other: LaggedCounts) -> LaggedCounts:
        """Add another partition's counts (same ring and reference period)."""
        if (self.n_buckets, self.reference) != (other.n_buckets, other.reference):
            raise ValueError("cannot merge LaggedCounts with different rings or references")
        for k in other._rings:
            self._ring(k)
        keys = list(self._rings)
        theirs = [other._rings.get(k, np.zeros((self.n_buckets, 3))) for k in keys]
        _merge_ring(self._tags, [self._rings[k] for k in keys], other._tags, theirs)
        self._head = max(self._head, other._head)
        for k, arr in other._ref.items():
            mine = self._ref.get(k)
            if mine is None:
                self._ref[k] = arr.copy()
            else:
                mine += arr
        return self

    def _keys(self, table: dict[Key, np.ndarray], tier: str | None,
              band: int | None) -> list[Key]:
        return [k for k in table
                if (tier is None or k[0] == tier) and (band is None or k[1] == band)]

    def series(self, first: int, last: int, *, tier: str | None = None,
               band: int | None = None) -> np.ndarray:
        """Rows ``(routed, events by decision, events by arrival)`` of buckets
        ``first..last``, oldest first, summed over the matching keys."""
        out = np.zeros((max(last - first + 1, 0), 3))
        if out.shape[0] == 0:
            return out
        idx = np.arange(first, last + 1)
        slots = idx % self.n_buckets
        held = (self._tags[slots] == idx) & (idx > self._head - self.n_buckets)
        for k in self._keys(self._rings, tier, band):
            out += self._rings[k][slots]
        out[~held] = 0.0
        return out

    def window(self, now_bucket: int, m: int, cdf: FloatArray, *, tier: str | None = None,
               band: int | None = None, min_completed: float = 0.1) -> Totals:
        """Attributed totals of the requests decided in buckets ``now-m+1 .. now``.

        Contacts of those requests arrived so far over the requests weighted by the
        expected completed share ``cdf[age]``; buckets below ``min_completed`` are left
        out of both (see the module docstring).
        """
        rows = self.series(now_bucket - m + 1, now_bucket, tier=tier, band=band)
        ages = now_bucket - np.arange(now_bucket - m + 1, now_bucket + 1)
        c, e = attributed_counts(rows[:, self.ROUTED], rows[:, self.BY_DECISION], ages, cdf,
                                 min_completed)
        return attributed_totals(float(c), float(e))

    def reference_totals(self, now_bucket: int, cdf: FloatArray, *, tier: str | None = None,
                         band: int | None = None, min_completed: float = 0.1) -> Totals:
        """Attributed totals of the reference period's requests, as of ``now_bucket``."""
        ref = self.reference
        keys = self._keys(self._ref, tier, band)
        if ref is None or not keys:
            return Totals()
        rows = sum((self._ref[k] for k in keys), np.zeros((ref[1] - ref[0], 2)))
        ages = now_bucket - np.arange(ref[0], ref[1])
        c, e = attributed_counts(rows[:, 0], rows[:, 1], ages, cdf, min_completed)
        return attributed_totals(float(c), float(e))

    def routed(self, now_bucket: int, m: int, *, tier: str | None = None,
               band: int | None = None) -> float:
        """Requests decided in buckets ``now-m+1 .. now``."""
        return float(self.series(now_bucket - m + 1, now_bucket, tier=tier,
                                 band=band)[:, self.ROUTED].sum())

    def reference_routed(self, *, tier: str | None = None, band: int | None = None) -> float:
        """Requests decided in the reference period."""
        return float(sum(self._ref[k][:, 0].sum() for k in self._keys(self._ref, tier, band)))

    def expected_arrivals(self, now_bucket: int, pmf: FloatArray, rate: float, *,
                          tier: str | None = None, band: int | None = None) -> float:
        """Events expected to arrive in ``now_bucket`` at ``rate`` per request: the
        requests of it and the buckets before it convolved with the delay pmf."""
        depth = pmf.size
        rows = self.series(now_bucket - depth + 1, now_bucket, tier=tier, band=band)
        return rate * float(np.dot(rows[::-1, self.ROUTED], pmf))
