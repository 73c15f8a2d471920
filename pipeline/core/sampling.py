"""Tier-aware, boundary-oversampled selection of requests for human review.

Design
------
* **Separate daily quota per tier.**  The cheap tier serves most traffic; a
  single quota over all traffic would leave the capable tier (or whichever is
  smaller) almost unreviewed.
* **Oversampling where it matters.**  A request's *priority* ``r`` is 1, times
  up to ``boundary_boost`` near the thresholds (a Gaussian kernel of the
  score's distance to the nearest threshold, distance 0 inside the uncertain
  band), times ``ood_boost`` when ``ood_distance >= ood_threshold``.
* **Poisson sampling with honest inclusion probabilities.**  A request is
  selected iff ``u < π`` with ``π = min(1, quota × r / V̂)``, where ``V̂`` is the
  tier's expected daily sum of priorities.  ``u`` is a hash-based uniform of
  ``(seed, request_id)`` (:func:`uniform`, BLAKE2b), so the decision is
  deterministic, reproducible on replay, and independent of ``π``.  Every
  selected request carries its ``π``; Horvitz–Thompson weights ``1/π`` give
  unbiased per-tier estimates (see :func:`pipeline.core.quality.horvitz_thompson_mean`).
  ``π`` may depend on the past (the volume estimate) but never on the
  request's own ``u``, so ``E[1{u < π} / π | past] = 1`` and the HT estimator
  stays unbiased under this adaptive design.
* **Quota control by a rate estimate.**  ``V̂`` is the mean of the tier's
  daily priority sums over the last ``history_days`` complete event-time days
  (:class:`DailyVolume`).  With no complete day yet it is
  ``initial_daily_volume`` (requests/day, times the mean priority seen so
  far) or, failing that, today's sum projected over the elapsed part of the
  day.  Expected selections per day are then ``≈ quota``; stable traffic holds
  the quota to Poisson noise.
* **Hard cap (optional).**  ``cap_factor`` stops selection for the rest of
  the day once ``cap_factor × quota`` requests were selected (reviewer
  capacity is real).  When the cap binds the late requests' true inclusion
  probability is below the reported ``π`` and HT estimates become biased;
  :attr:`ReviewSampler.n_capped` counts those requests so the bias is visible.
  The rate estimate makes the cap rare.

Partitioning
------------
Volume state is additive and merges exactly.  When the sampler runs in ``P``
workers partitioned by ``request_id``, give each ``quota / P``: each sees
``1/P`` of the volume, so ``π`` is the same as in one worker.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple, Self

import numpy as np
from numpy.typing import NDArray

from pipeline.core.mergeable import Mergeable

__all__ = ["DailyVolume", "ReviewDecision", "ReviewSampler", "uniform", "uniforms"]

_SCALE = 2.0**-53


def uniform(seed: str | int, request_id: str) -> float:
    """Deterministic uniform in [0, 1) from ``(seed, request_id)`` (BLAKE2b-64).

    Examples
    --------
    >>> uniform("s", "req-1") == uniform("s", "req-1")
    True
    >>> 0.0 <= uniform("s", "req-1") < 1.0
    True
    >>> uniform("s", "req-1") != uniform("t", "req-1")
    True
    """
    h = hashlib.blake2b(f"{seed}\x1f{request_id}".encode(), digest_size=8).digest()
    return (int.from_bytes(h, "big") >> 11) * _SCALE


def uniforms(seed: str | int, request_ids: Sequence[str]) -> NDArray[np.float64]:
    """:func:`uniform` of each request id, as one array (the digests are decoded at once).

    >>> ids = ["req-1", "req-2", "req-3"]
    >>> uniforms("s", ids).tolist() == [uniform("s", r) for r in ids]
    True
    """
    prefix, blake2b = f"{seed}\x1f", hashlib.blake2b
    digests = b"".join([blake2b((prefix + rid).encode(), digest_size=8).digest()
                        for rid in request_ids])
    # 53 of the 64 bits, as an integer below 2**53 that a float holds exactly
    bits = np.frombuffer(digests, dtype=">u8") >> np.uint64(11)
    return bits.astype(np.float64) * _SCALE


_PRIORITY, _REQUESTS, _SELECTED = 0, 1, 2


class DailyVolume(Mergeable):
    """Mergeable per-event-time-day totals: priority sum, requests, selected.

    Keeps the current day and the ``history_days`` days before it.

    Parameters
    ----------
    history_days
        Complete days averaged by :meth:`estimate`.
    day_seconds
        Length of a day (event time).

    Examples
    --------
    >>> v = DailyVolume(history_days=3)
    >>> for day, n in enumerate([100, 120, 80]):
    ...     for i in range(n):
    ...         _ = v.update(day * 86400.0 + i, priority=2.0)
    >>> v.estimate(3)        # mean of days 0-2, in priority units
    200.0
    >>> v.estimate(0) is None
    True
    """

    def __init__(self, history_days: int = 7, day_seconds: float = 86400.0) -> None:
        if history_days < 1:
            raise ValueError(f"history_days must be >= 1, got {history_days!r}")
        if not day_seconds > 0:
            raise ValueError(f"day_seconds must be > 0, got {day_seconds!r}")
        self.history_days = int(history_days)
        self.day_seconds = float(day_seconds)
        self._days: dict[int, list[float]] = {}
        self._head: int | None = None
        self._first: int | None = None
        self.n_late = 0
        # estimate(day) memo: (day, value). Valid while no day before ``day`` changes and
        # head/first stay put; in-order traffic only touches the head day, so it hits.
        self._memo: tuple[int, float | None] | None = None

    def day(self, ts: float) -> int:
        """Event-time day index of ``ts``."""
        return math.floor(ts / self.day_seconds)

    def _trim(self) -> None:
        assert self._head is not None
        oldest = self._head - self.history_days
        for d in [d for d in self._days if d < oldest]:
            del self._days[d]

    def update(
        self, ts: float, priority: float = 1.0, selected: bool = False, requests: float = 1.0
    ) -> Self:
        """Count one request (or ``requests`` of them) at ``ts``."""
        d = math.floor(ts / self.day_seconds)
        head = self._head
        if head is not None and d < head - self.history_days:
            self.n_late += 1
            return self
        row = self._days.get(d)
        if row is None:
            row = self._days[d] = [0.0, 0.0, 0.0]
        row[_PRIORITY] += priority
        row[_REQUESTS] += requests
        row[_SELECTED] += 1.0 if selected else 0.0
        memo = self._memo
        if memo is not None and d < memo[0]:
            self._memo = None
        if self._first is None or d < self._first:
            self._first = d
            self._memo = None
        if head is None or d > head:
            self._head = d
            self._memo = None
            self._trim()
        return self

    def totals(self, day: int) -> tuple[float, float, float]:
        """``(priority sum, requests, selected)`` of ``day`` (zeros if unknown)."""
        row = self._days.get(day)
        return (0.0, 0.0, 0.0) if row is None else (row[0], row[1], row[2])

    def estimate(self, day: int) -> float | None:
        """Mean daily priority sum over the complete days before ``day``.

        Only days since the first event and still held count; ``None`` when
        there is none.
        """
        memo = self._memo
        if memo is not None and memo[0] == day:
            return memo[1]
        if self._head is None or self._first is None:
            return None
        lo = max(day - self.history_days, self._first, self._head - self.history_days)
        hi = day - 1
        if hi < lo:
            est = None
        else:
            total = sum(self._days[d][_PRIORITY] for d in range(lo, hi + 1) if d in self._days)
            est = total / (hi - lo + 1)
        self._memo = (day, est)
        return est

    @property
    def head(self) -> int | None:
        """Latest day seen."""
        return self._head

    def merge(self, other: DailyVolume) -> Self:
        """Add the totals of another partition (same configuration)."""
        if (self.history_days, self.day_seconds) != (other.history_days, other.day_seconds):
            raise ValueError("cannot merge DailyVolume with different history_days/day_seconds")
        self._memo = None
        for d, row in other._days.items():
            mine = self._days.setdefault(d, [0.0, 0.0, 0.0])
            for i in range(3):
                mine[i] += row[i]
        if other._first is not None:
            self._first = other._first if self._first is None else min(self._first, other._first)
        if other._head is not None:
            self._head = other._head if self._head is None else max(self._head, other._head)
        if self._head is not None:
            self._trim()
        self.n_late += other.n_late
        return self

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able state."""
        return {
            "history_days": self.history_days,
            "day_seconds": self.day_seconds,
            "head": self._head,
            "first": self._first,
            "n_late": self.n_late,
            "days": [[d, *self._days[d]] for d in sorted(self._days)],
        }

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> DailyVolume:
        """Inverse of :meth:`to_dict`."""
        v = cls(int(state["history_days"]), float(state["day_seconds"]))
        v._head = None if state["head"] is None else int(state["head"])
        v._first = None if state["first"] is None else int(state["first"])
        v.n_late = int(state["n_late"])
        v._days = {int(d): [float(a), float(b), float(c)] for d, a, b, c in state["days"]}
        return v

    def __repr__(self) -> str:
        return f"DailyVolume(history_days={self.history_days}, head={self._head})"


class ReviewDecision(NamedTuple):
    """One sampling decision; ``inclusion_probability`` is the HT ``π``."""

    request_id: str
    tier: str
    selected: bool
    inclusion_probability: float
    u: float
    priority: float
    capped: bool = False

    @property
    def weight(self) -> float:
        """Horvitz–Thompson weight ``1/π`` (``inf`` when ``π == 0``)."""
        p = self.inclusion_probability
        return math.inf if p <= 0 else 1.0 / p


class ReviewSampler(Mergeable):
    """Select requests for human review with per-tier daily quotas.

    Parameters
    ----------
    quota_per_day
        Reviews per day per tier (a mapping), or one number for every tier.
        Tiers missing from a mapping are never selected.
    seed
        Seed of the hash-based uniforms.
    boundary_boost
        Priority multiplier at a threshold (and inside the uncertain band).
    boundary_width
        Score scale of the boost's Gaussian decay away from the thresholds.
    ood_threshold, ood_boost
        Requests with ``ood_distance >= ood_threshold`` get ``× ood_boost``;
        ``ood_threshold=None`` disables it.
    history_days
        Complete days in the daily-volume estimate.
    day_seconds
        Quota period (event time).
    initial_daily_volume
        Expected requests per day per tier, used until a complete day exists.
    cap_factor
        Stop selecting for the day after ``cap_factor × quota`` selections
        (``None``: no cap; see the module notes on bias).
    min_elapsed_seconds
        Floor on the elapsed time when projecting today's volume.

    Examples
    --------
    >>> s = ReviewSampler({"cheap": 10, "capable": 5}, seed="demo",
    ...                   initial_daily_volume={"cheap": 1000, "capable": 200})
    >>> d = s.offer("req-1", "cheap", 0.95, ts=0.0, cheap_above=0.7, capable_below=0.4)
    >>> round(d.inclusion_probability, 4)
    0.01
    >>> near = s.offer("req-2", "cheap", 0.71, ts=1.0, cheap_above=0.7, capable_below=0.4)
    >>> near.priority > d.priority and near.inclusion_probability > d.inclusion_probability
    True
    >>> s.offer("req-1", "cheap", 0.95, ts=0.0, cheap_above=0.7, capable_below=0.4).u == d.u
    True
    """

    def __init__(
        self,
        quota_per_day: Mapping[str, float] | float,
        *,
        seed: str | int = "tierwatch",
        boundary_boost: float = 4.0,
        boundary_width: float = 0.05,
        ood_threshold: float | None = None,
        ood_boost: float = 3.0,
        history_days: int = 7,
        day_seconds: float = 86400.0,
        initial_daily_volume: Mapping[str, float] | None = None,
        cap_factor: float | None = 1.5,
        min_elapsed_seconds: float = 3600.0,
    ) -> None:
        quotas: dict[str, float] | float
        if isinstance(quota_per_day, Mapping):
            quotas = {k: float(v) for k, v in quota_per_day.items()}
            bad = [v for v in quotas.values() if not v >= 0]
        else:
            quotas = float(quota_per_day)
            bad = [] if quotas >= 0 else [quotas]
        if bad:
            raise ValueError(f"quotas must be >= 0, got {quota_per_day!r}")
        if boundary_boost < 1 or ood_boost < 1:
            raise ValueError("boosts must be >= 1 (a boost < 1 would undersample the boundary)")
        if not boundary_width > 0:
            raise ValueError(f"boundary_width must be > 0, got {boundary_width!r}")
        if cap_factor is not None and cap_factor < 1:
            raise ValueError(f"cap_factor must be >= 1 or None, got {cap_factor!r}")
        self.quota_per_day = quotas
        self.seed = seed
        self.boundary_boost = float(boundary_boost)
        self.boundary_width = float(boundary_width)
        self.ood_threshold = None if ood_threshold is None else float(ood_threshold)
        self.ood_boost = float(ood_boost)
        self.history_days = int(history_days)
        self.day_seconds = float(day_seconds)
        self.initial_daily_volume = (
            None
            if initial_daily_volume is None
            else {k: float(v) for k, v in initial_daily_volume.items()}
        )
        self.cap_factor = None if cap_factor is None else float(cap_factor)
        self.min_elapsed_seconds = float(min_elapsed_seconds)
        self._volume: dict[str, DailyVolume] = {}
        self.n_capped = 0
        self.last: ReviewDecision | None = None

    # ------------------------------------------------------------ policy
    def quota(self, tier: str) -> float:
        """Daily quota of ``tier``."""
        q = self.quota_per_day
        return q.get(tier, 0.0) if isinstance(q, dict) else q

    def priority(
        self,
        score: float,
        *,
        cheap_above: float,
        capable_below: float,
        ood_distance: float | None = None,
    ) -> float:
        """Relative oversampling weight ``r >= 1`` of a request.

        Examples
        --------
        >>> s = ReviewSampler(10)
        >>> s.priority(0.5, cheap_above=0.7, capable_below=0.4)   # inside the band
        4.0
        >>> round(s.priority(0.99, cheap_above=0.7, capable_below=0.4), 6)   # far away
        1.0
        """
        if capable_below <= score < cheap_above:
            dist = 0.0
        else:
            dist = min(abs(score - cheap_above), abs(score - capable_below))
        z = dist / self.boundary_width
        r = 1.0 + (self.boundary_boost - 1.0) * math.exp(-0.5 * z * z)
        if (
            self.ood_threshold is not None
            and ood_distance is not None
            and ood_distance >= self.ood_threshold
        ):
            r *= self.ood_boost
        return r

    def _volume_of(self, tier: str) -> DailyVolume:
        v = self._volume.get(tier)
        if v is None:
            v = self._volume[tier] = DailyVolume(self.history_days, self.day_seconds)
        return v

    def expected_daily_priority(self, tier: str, ts: float, r: float = 1.0) -> float:
        """``V̂``: the tier's expected daily priority sum at ``ts``.

        ``r`` is the priority of the request being decided; it is counted in
        the same-day projection used before any complete day exists.
        """
        v = self._volume.get(tier)
        day = math.floor(ts / self.day_seconds)
        est = None if v is None else v.estimate(day)
        if est is not None and est > 0:
            return est
        prio, reqs, _ = (0.0, 0.0, 0.0) if v is None else v.totals(day)
        prio += r
        reqs += 1.0
        init = None if self.initial_daily_volume is None else self.initial_daily_volume.get(tier)
        if init is not None and init > 0:
            return init * prio / reqs
        elapsed = max(ts - day * self.day_seconds, self.min_elapsed_seconds)
        return prio * self.day_seconds / elapsed

    def inclusion_probability(
        self,
        tier: str,
        score: float,
        ts: float,
        *,
        cheap_above: float,
        capable_below: float,
        ood_distance: float | None = None,
    ) -> float:
        """``π`` the next request with these attributes would get (no state change)."""
        r = self.priority(
            score, cheap_above=cheap_above, capable_below=capable_below, ood_distance=ood_distance
        )
        return self._pi(tier, ts, r)

    def _pi(self, tier: str, ts: float, r: float) -> float:
        q = self.quota(tier)
        if q <= 0:
            return 0.0
        return min(1.0, q * r / self.expected_daily_priority(tier, ts, r))

    # ------------------------------------------------------------ updates
    def offer(
        self,
        request_id: str,
        tier: str,
        score: float,
        ts: float,
        *,
        cheap_above: float,
        capable_below: float,
        ood_distance: float | None = None,
    ) -> ReviewDecision:
        """Decide on one routed request and count it in the tier's volume."""
        r = self.priority(
            score, cheap_above=cheap_above, capable_below=capable_below, ood_distance=ood_distance
        )
        u = uniform(self.seed, request_id)
        pi, selected, capped = self.admit(tier, ts, r, u)
        self.last = ReviewDecision(request_id, tier, selected, pi, u, r, capped)
        return self.last

    def admit(self, tier: str, ts: float, priority: float,
              u: float) -> tuple[float, bool, bool]:
        """Decide one request of known ``priority`` and uniform ``u``, and count it in its
        day: ``(inclusion probability, selected, capped by the daily cap)``."""
        pi = self._pi(tier, ts, priority)
        selected = u < pi
        capped = False
        vol = self._volume_of(tier)
        if selected and self.cap_factor is not None:
            _, _, done = vol.totals(vol.day(ts))
            if done >= self.cap_factor * self.quota(tier):
                selected, capped = False, True
                self.n_capped += 1
        vol.update(ts, priority=priority, selected=selected)
        return pi, selected, capped

    def update(
        self,
        request_id: str,
        tier: str,
        score: float,
        ts: float,
        *,
        cheap_above: float,
        capable_below: float,
        ood_distance: float | None = None,
    ) -> Self:
        """:meth:`offer`, returning ``self`` (the decision is in :attr:`last`)."""
        self.offer(
            request_id,
            tier,
            score,
            ts,
            cheap_above=cheap_above,
            capable_below=capable_below,
            ood_distance=ood_distance,
        )
        return self

    # ------------------------------------------------------------ reads
    @property
    def tiers(self) -> list[str]:
        """Tiers seen, sorted."""
        return sorted(self._volume)

    def volume(self, tier: str) -> DailyVolume:
        """The tier's daily totals (an empty one for an unseen tier)."""
        return self._volume.get(tier) or DailyVolume(self.history_days, self.day_seconds)

    def selected_on(self, tier: str, day: int) -> float:
        """Requests of ``tier`` selected on event-time ``day``."""
        return self.volume(tier).totals(day)[2]

    # ------------------------------------------------------------ merge / serde
    def _config(self) -> dict[str, Any]:
        return {
            "quota_per_day": self.quota_per_day,
            "seed": self.seed,
            "boundary_boost": self.boundary_boost,
            "boundary_width": self.boundary_width,
            "ood_threshold": self.ood_threshold,
            "ood_boost": self.ood_boost,
            "history_days": self.history_days,
            "day_seconds": self.day_seconds,
            "initial_daily_volume": self.initial_daily_volume,
            "cap_factor": self.cap_factor,
            "min_elapsed_seconds": self.min_elapsed_seconds,
        }

    def merge(self, other: ReviewSampler) -> Self:
        """Add another partition's volume state (configuration must match)."""
        if self._config() != other._config():
            raise ValueError("cannot merge ReviewSamplers with different configurations")
        for tier, v in other._volume.items():
            self._volume_of(tier).merge(v)
        self.n_capped += other.n_capped
        return self

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able configuration and state."""
        return {
            "config": self._config(),
            "n_capped": self.n_capped,
            "volume": {t: self._volume[t].to_dict() for t in sorted(self._volume)},
        }

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> ReviewSampler:
        """Inverse of :meth:`to_dict`."""
        cfg = dict(state["config"])
        s = cls(cfg.pop("quota_per_day"), **cfg)
        s.n_capped = int(state["n_capped"])
        s._volume = {t: DailyVolume.from_dict(v) for t, v in state["volume"].items()}
        return s

    def __repr__(self) -> str:
        return f"ReviewSampler(quota_per_day={self.quota_per_day!r}, tiers={self.tiers})"
