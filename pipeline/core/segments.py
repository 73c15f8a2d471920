"""Segment drill-down: bounded per-value outcome counts, attribution and share shifts.

A routing event may carry ``segment`` (up to 32 ``key -> value`` pairs: intent,
product, locale, plan...).  Per router, tier, key and outcome *measure*, a
:class:`HeavyHitters` sketch keeps at most ``k`` values; every other value is
summed in ``other``.  Measures:

``routed``
    routed requests (by decision time);
``contacts``
    support contacts, attributed to the segment of the joined decision;
``feedback`` / ``feedback_bad``
    joined feedback events and their bad part ``1 - y`` (thumbs, ratings, ... pooled).

Time is kept in hour buckets for the current UTC day, rolled into day buckets when
the day closes (:meth:`SegmentCounts.trim`). A window of ``s`` seconds ending at
``at`` starts at the UTC midnight before ``at - s`` and ends with the hour that closes
at ``at``: events after ``at`` never count, however the input was batched. One
reference sketch per series is filled over the router's reference period (by
decision time).

Error bound
-----------
:class:`HeavyHitters` is a Misra–Gries summary with ``k`` counters, mergeable as
in Agarwal et al., "Mergeable summaries" (2012).  With ``N`` the total weight
and ``Δ <= N / (k + 1)`` the total decrement (:attr:`HeavyHitters.delta`), for
every value ``x`` with true count ``f(x)``:

* ``lower(x) <= f(x) <= upper(x) = lower(x) + Δ``: the upper estimate (the
  Space-Saving estimate) overestimates by at most ``N / (k + 1) < N / k``;
* every value with ``f(x) > N / (k + 1)`` is tracked; merges keep the bound with
  ``N = N1 + N2``, and are exact while nothing was evicted (``Δ = 0``).

For shares this means an absolute error of at most ``1 / (k + 1)`` (a value's
share of a tier's requests is known to within 3 points at ``k = 32``).  A rate
``bad(x) / routed(x)`` is bracketed by ``[lower_b / upper_r, upper_b / lower_r]``;
the tests below always use the conservative end (fewer bad outcomes, more
exposure in the window; more bad outcomes, less exposure in the reference), so
the sketch error can hide an excess but never create one.

Memory
------
``k`` counters per (tier, key, measure, day): with ``k = 32``, 2 tiers, 4
measures, 9 day buckets + 1 reference, about ``32 * 80`` bytes per sketch, i.e.
about 200 kB per segment key per router (``max_keys`` keys at most; further keys
are counted in :attr:`SegmentCounts.dropped_keys` and ignored).

>>> hh = HeavyHitters(k=2)
>>> for x in "aabac":
...     _ = hh.update(x)
>>> hh.lower("a"), hh.upper("a"), hh.delta, hh.n
(2.0, 3.0, 1.0, 5.0)
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Self

from scipy import stats

from pipeline.core.mergeable import Mergeable

__all__ = [
    "ATTRIBUTED_KINDS",
    "Attribution",
    "HeavyHitters",
    "SegmentConfig",
    "SegmentCounts",
    "ShareShift",
    "benjamini_hochberg",
    "format_attribution",
]

DAY = 86400.0
MEASURES = ("routed", "contacts", "feedback", "feedback_bad")
#: alert kinds whose excess bad outcomes are attributed to segment values
ATTRIBUTED_KINDS = frozenset({"support_contact_rise", "tier_quality_drop",
                              "boundary_degradation"})
_EPS = 1e-9


class HeavyHitters(Mergeable):
    """A mergeable, serializable Misra–Gries heavy-hitter summary with ``k`` counters.

    Parameters
    ----------
    k
        Number of counters (values tracked at once); memory is ``O(k)``.

    Examples
    --------
    >>> a = HeavyHitters(k=3).update("x").update("y", 2.0)
    >>> b = HeavyHitters(k=3).update("x", 4.0)
    >>> m = a + b
    >>> m.lower("x"), m.upper("x"), m.n, m.delta  # nothing evicted: exact
    (5.0, 5.0, 7.0, 0.0)
    >>> HeavyHitters.from_dict(m.to_dict()) == m
    True
    >>> m.top(1)
    [('x', 5.0)]
    """

    __slots__ = ("counts", "delta", "k", "n")

    def __init__(self, k: int = 32) -> None:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k!r}: a summary without counters "
                             "could not name any value")
        self.k = int(k)
        self.counts: dict[str, float] = {}
        self.delta = 0.0
        self.n = 0.0

    def update(self, value: str, w: float = 1.0) -> Self:
        """Add weight ``w >= 0`` to ``value``."""
        if not (w >= 0 and math.isfinite(w)):
            raise ValueError(f"weight must be finite and >= 0, got {w!r}")
        if w == 0:
            return self
        self.n += w
        c = self.counts
        if value in c:
            c[value] += w
            return self
        c[value] = w
        if len(c) > self.k:
            # k + 1 counters: the (k+1)-th largest is the smallest (a C-level min beats
            # any heap bookkeeping in Python at these sizes: about 1 us an update, k = 32)
            m = min(c.values())
            self.delta += m
            self.counts = {x: v - m for x, v in c.items() if v - m > _EPS}
        return self

    def _shrink(self) -> None:
        """Subtract the ``(k+1)``-th largest count from all and drop non-positive ones."""
        c = self.counts
        m = sorted(c.values(), reverse=True)[self.k]
        self.delta += m
        self.counts = {x: v - m for x, v in c.items() if v - m > _EPS}

    # -- reads -----------------------------------------------------------------------
    def lower(self, value: str) -> float:
        """A lower bound of ``value``'s true count (0 when untracked)."""
        return self.counts.get(value, 0.0)

    def upper(self, value: str) -> float:
        """An upper bound: ``lower + delta`` (the Space-Saving estimate)."""
        return self.counts.get(value, 0.0) + self.delta

    @property
    def bound(self) -> float:
        """The guaranteed bound ``N / (k + 1)`` on :attr:`delta`."""
        return self.n / (self.k + 1)

    @property
    def other(self) -> float:
        """Weight not attributed to a tracked value (untracked values plus ``delta`` slack)."""
        return max(self.n - sum(self.counts.values()), 0.0)

    def top(self, m: int | None = None) -> list[tuple[str, float]]:
        """Tracked values by lower count, largest first (ties by value)."""
        items = sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0]))
        return items if m is None else items[:m]

    def __len__(self) -> int:
        return len(self.counts)

    def __contains__(self, value: object) -> bool:
        return value in self.counts

    # -- merge -----------------------------------------------------------------------
    def merge(self, other: HeavyHitters) -> Self:
        """Fold in ``other`` (Agarwal et al.): add counters, then shrink back to ``k``."""
        if other.k != self.k:
            raise ValueError(f"cannot merge summaries with k={self.k} and k={other.k}: "
                             "the error bound would be the weaker one's, silently")
        c = self.counts
        for x, v in other.counts.items():
            c[x] = c.get(x, 0.0) + v
        self.n += other.n
        self.delta += other.delta
        if len(c) > self.k:
            self._shrink()
        return self

    # -- serde -----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able state (counters sorted)."""
        return {"k": self.k, "n": self.n, "delta": self.delta,
                "counts": [[x, v] for x, v in sorted(self.counts.items())]}

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> HeavyHitters:
        hh = cls(int(state["k"]))
        hh.n, hh.delta = float(state["n"]), float(state["delta"])
        hh.counts = {str(x): float(v) for x, v in state["counts"]}
        return hh

    def __repr__(self) -> str:
        return f"HeavyHitters(k={self.k}, n={self.n:g}, tracked={len(self)}, delta={self.delta:g})"


def benjamini_hochberg(p_values: Sequence[float], q: float = 0.05) -> list[bool]:
    """Benjamini–Hochberg step-up: which hypotheses are rejected at FDR ``q``.

    >>> benjamini_hochberg([0.001, 0.04, 0.03, 0.5], q=0.05)
    [True, False, False, False]
    """
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    cut = 0
    for rank, i in enumerate(order, start=1):
        if p_values[i] <= q * rank / m:
            cut = rank
    rejected = [False] * m
    for i in order[:cut]:
        rejected[i] = True
    return rejected


def _rate_test(obs: float, n1: float, x0: float, n0: float) -> float:
    """Exact one-sided p-value that the window rate ``obs/n1`` exceeds ``x0/n0``.

    Conditional binomial test of two Poisson rates: given ``obs + x0`` events, the
    window's share is Binomial(obs + x0, n1 / (n1 + n0)) under the null.
    """
    o, r = math.floor(obs), math.ceil(x0)
    if o <= 0 or n1 <= 0:
        return 1.0
    if n0 <= 0:
        return 1.0
    return float(stats.binom.sf(o - 1, o + r, n1 / (n1 + n0)))


def _poisson_test(obs: float, expected: float) -> float:
    o = math.floor(obs)
    if o <= 0:
        return 1.0
    if expected <= 0:
        return 0.0
    return float(stats.poisson.sf(o - 1, expected))


@dataclass(frozen=True, slots=True)
class SegmentConfig:
    """Sketch size, retention and the attribution / share-shift tests.

    ``share_alpha`` is the per-test level of the share-shift test: it runs on the
    last complete day, once a day in effect, over at most ``k * max_keys`` values,
    so ``false_alarms_per_30d / (30 * k * max_keys)`` Bonferroni-spends the budget.
    """

    k: int = 32
    max_keys: int = 16
    days: int = 9
    fdr: float = 0.05
    top: int = 3
    min_reference_n: float = 50.0
    share_floor: float = 0.05
    share_ratio_floor: float = 1.5
    false_alarms_per_30d: float = 1.0
    quality_ratio_floor: float = 1.5

    @property
    def share_alpha(self) -> float:
        return self.false_alarms_per_30d / (30 * self.k * self.max_keys)


@dataclass(frozen=True, slots=True)
class Attribution:
    """One segment value's part of a tier's excess bad outcomes."""

    key: str
    value: str
    observed: float
    expected: float
    exposure: float
    reference_rate: float
    new: bool
    p_value: float
    significant: bool = False
    share: float = 0.0
    traffic_share: float = 0.0

    @property
    def excess(self) -> float:
        return self.observed - self.expected

    @property
    def rate_ratio(self) -> float:
        if self.exposure <= 0 or self.reference_rate <= 0:
            return math.inf
        return self.observed / self.exposure / self.reference_rate

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "value": self.value, "observed": self.observed,
                "expected": self.expected, "excess": self.excess, "exposure": self.exposure,
                "reference_rate": self.reference_rate, "rate_ratio": self.rate_ratio,
                "new": self.new, "p_value": self.p_value, "significant": self.significant,
                "share": self.share, "traffic_share": self.traffic_share}


def format_attribution(a: Attribution, what: str = "contacts") -> str:
    """``intent=billing: 68% of the excess contacts, 3.9× its reference``."""
    ref = "the tier's reference (new value)" if a.new else "its reference"
    ratio = "∞" if not math.isfinite(a.rate_ratio) else f"{a.rate_ratio:.1f}"
    return f"{a.key}={a.value}: {a.share:.0%} of the excess {what}, {ratio}× {ref}"


@dataclass(frozen=True, slots=True)
class ShareShift:
    """A segment value whose share of a tier's requests jumped against the reference."""

    tier: str
    key: str
    value: str
    share: float
    reference_share: float
    n: float
    p_value: float
    quality_ratio: float | None = None
    quality_effect: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"tier": self.tier, "key": self.key, "value": self.value, "share": self.share,
                "reference_share": self.reference_share, "n": self.n,
                "p_value": self.p_value, "quality_ratio": self.quality_ratio,
                "quality_effect": self.quality_effect}


Series = tuple[str, str, str]  # (tier, key, measure)


@dataclass(slots=True)
class SegmentCounts:
    """One router's per-segment outcome counts (see the module docstring).

    >>> sc = SegmentCounts(reference=(0.0, 86400.0), config=SegmentConfig(k=4))
    >>> _ = sc.observe_routing("cheap", 10.0, {"intent": "billing"})
    >>> _ = sc.observe_outcome("cheap", 99.0, 10.0, {"intent": "billing"}, contacts=1.0)
    >>> sc.window("cheap", "intent", "contacts", at=100.0, seconds=86400.0).lower("billing")
    1.0
    >>> sc.reference_sketch("cheap", "intent", "routed").n
    1.0
    """

    reference: tuple[float, float]
    config: SegmentConfig = field(default_factory=SegmentConfig)
    days: dict[tuple[str, str, str, int], HeavyHitters] = field(default_factory=dict)
    hours: dict[tuple[str, str, str, int], HeavyHitters] = field(default_factory=dict)
    rolled: int | None = None  # days before this one live in ``days`` only
    # routed requests are first counted exactly per (tier, key, hour, in reference) and
    # fed to the sketches in sorted order at the next read: the sketches then do not
    # depend on how the input was batched (unless one hour of a key holds more than
    # ``exact_cap`` distinct values, when that hour is fed early)
    open: dict[tuple[str, str, int, bool], dict[str, float]] = field(default_factory=dict)
    exact_cap: int = 4096
    ref: dict[Series, HeavyHitters] = field(default_factory=dict)
    keys: set[str] = field(default_factory=set)
    dropped_keys: int = 0

    def _keys(self, segment: Mapping[str, str]) -> Iterable[tuple[str, str]]:
        for key, value in segment.items():
            if key not in self.keys:
                if len(self.keys) >= self.config.max_keys:
                    self.dropped_keys += 1
                    continue
                self.keys.add(key)
            yield key, value

    def _add(self, tier: str, key: str, measure: str, value: str, w: float, ts: float,
             ref_ts: float | None) -> None:
        k = self.config.k
        day = int(ts // DAY)
        if self.rolled is not None and day < self.rolled:
            store, slot = self.days, (tier, key, measure, day)
        else:
            store, slot = self.hours, (tier, key, measure, int(ts // 3600))
        hh = store.get(slot)
        if hh is None:
            hh = store[slot] = HeavyHitters(k)
        hh.update(value, w)
        if ref_ts is not None and self.reference[0] <= ref_ts < self.reference[1]:
            r = self.ref.get((tier, key, measure))
            if r is None:
                r = self.ref[(tier, key, measure)] = HeavyHitters(k)
            r.update(value, w)

    def observe_routing(self, tier: str, ts: float, segment: Mapping[str, str] | None,
                        n: float = 1.0) -> Self:
        """Count ``n`` routed requests of ``tier`` with ``segment`` at decision time ``ts``."""
        if segment:
            lo, hi = self.reference
            self._count_open(tier, int(ts // 3600), lo <= ts < hi, segment, n)
        return self

    def _count_open(self, tier: str, hour: int, in_ref: bool,
                    segment: Mapping[str, str], n: float) -> None:
        for key, value in self._keys(segment):
            slot = (tier, key, hour, in_ref)
            d = self.open.get(slot)
            if d is None:
                d = self.open[slot] = {}
            d[value] = d.get(value, 0.0) + n
            if len(d) > self.exact_cap:
                self._flush(slot)

    def _flush(self, slot: tuple[str, str, int, bool]) -> None:
        tier, key, hour, in_ref = slot
        d = self.open.pop(slot)
        t = hour * 3600.0
        if in_ref:
            t = max(t, self.reference[0])
        for value in sorted(d):
            self._add(tier, key, "routed", value, d[value], t, t if in_ref else None)

    def flush(self) -> None:
        """Feed every exact open count to the sketches (sorted: deterministic)."""
        for slot in sorted(self.open):
            self._flush(slot)

    def observe_many(self, rows: Iterable[tuple[str, float, Sequence[tuple[str, str]]]],
                     ) -> Self:
        """Count routed requests ``(tier, ts, segment pairs)`` in one pass: rows are
        grouped by (tier, day, reference or not, segment) first, so a batch costs one
        sketch update per distinct group and key rather than per event and key. Pass
        the join's interned segment tuples: equal segments are then one object.
        """
        groups: dict[tuple[str, int, bool, Sequence[tuple[str, str]]], int] = {}
        lo, hi = self.reference
        for tier, ts, seg in rows:
            g = (tier, int(ts // 3600), lo <= ts < hi, seg)
            groups[g] = groups.get(g, 0) + 1
        return self.observe_groups(groups.items())

    def observe_groups(self, groups: Iterable[tuple[
            tuple[str, int, bool, Sequence[tuple[str, str]]], int]]) -> Self:
        """Count routed requests already grouped by (tier, decision hour, in the
        reference or not, segment pairs), in the order the groups first appeared."""
        for (tier, hour, in_ref, seg), n in groups:
            self._count_open(tier, hour, in_ref, dict(seg), float(n))
        return self

    def observe_outcome(self, tier: str, ts: float, decision_ts: float | None,
                        segment: Mapping[str, str] | Sequence[tuple[str, str]] | None, *,
                        contacts: float = 0.0, feedback: float = 0.0,
                        feedback_bad: float = 0.0) -> Self:
        """Count an outcome at its own time ``ts`` (windows) and its decision's time
        ``decision_ts`` (the reference, whose contacts are then complete)."""
        if not segment:
            return self
        seg = dict(segment)
        for key, value in self._keys(seg):
            for measure, w in (("contacts", contacts), ("feedback", feedback),
                               ("feedback_bad", feedback_bad)):
                if w > 0:
                    self._add(tier, key, measure, value, w, ts, decision_ts)
        return self

    def trim(self, now: float) -> None:
        """Roll the hour buckets of closed days into day buckets; drop day buckets older
        than ``config.days``."""
        self.flush()
        today = int(now // DAY)
        for slot in sorted(s for s in self.hours if s[3] * 3600 // DAY < today):
            hh = self.hours.pop(slot)
            day_slot = (*slot[:3], int(slot[3] * 3600 // DAY))
            mine = self.days.get(day_slot)
            self.days[day_slot] = hh if mine is None else mine.merge(hh)
        self.rolled = today if self.rolled is None else max(self.rolled, today)
        oldest = today - self.config.days
        for slot in [s for s in self.days if s[3] < oldest]:
            del self.days[slot]

    def _span(self, tier: str, key: str, measure: str, day: int,
              last_hour: int | None = None) -> HeavyHitters:
        """One day's sketch (its rolled bucket and its hour buckets up to ``last_hour``)."""
        out = HeavyHitters(self.config.k)
        hh = self.days.get((tier, key, measure, day))
        if hh is not None:
            out.merge(hh)
        first = day * 24
        end = first + 24 if last_hour is None else min(first + 24, last_hour + 1)
        for h in range(first, end):
            hh = self.hours.get((tier, key, measure, h))
            if hh is not None:
                out.merge(hh)
        return out

    # -- reads -----------------------------------------------------------------------
    def window(self, tier: str, key: str, measure: str, at: float,
               seconds: float) -> HeavyHitters:
        """The merged sketch from the UTC midnight before ``at - seconds`` to the hour
        that closes at ``at``."""
        if self.open:
            self.flush()
        out = HeavyHitters(self.config.k)
        last = int(at // DAY)
        for d in range(int((at - seconds) // DAY), last + 1):
            out.merge(self._span(tier, key, measure, d, int(at // 3600) if d == last else None))
        return out

    def reference_sketch(self, tier: str, key: str, measure: str) -> HeavyHitters:
        if self.open:
            self.flush()
        return self.ref.get((tier, key, measure)) or HeavyHitters(self.config.k)

    # -- attribution ------------------------------------------------------------------
    def attribute(self, tier: str, at: float, seconds: float, *,
                  measure: str = "contacts") -> list[Attribution]:
        """Attribute ``tier``'s excess ``measure`` over the window to segment values.

        For every key, each value tracked among the window's bad outcomes is compared
        with its own reference rate (exact conditional binomial test), or with the
        tier's reference rate when the reference saw too little of it (a new value;
        exact Poisson test). Benjamini–Hochberg at ``config.fdr`` runs over every value
        of every key. ``share`` is the value's part of its key's excess (the larger of
        the tier's excess and the sum of the values' positive excesses), so the shares
        of one key add to at most 100 %. Ranked: significant first, then by how much
        more of the excess a value holds than of the traffic (``share - traffic_share``:
        a value that explains the excess concentrates it; a large value that only
        carries its part of someone else's excess does not), then by excess.
        """
        c = self.config
        exposure_measure = "routed" if measure == "contacts" else "feedback"
        rows: list[Attribution] = []
        denominators: dict[str, float] = {}
        for key in sorted(self.keys):
            w_bad = self.window(tier, key, measure, at, seconds)
            w_n = self.window(tier, key, exposure_measure, at, seconds)
            r_bad = self.reference_sketch(tier, key, measure)
            r_n = self.reference_sketch(tier, key, exposure_measure)
            if w_bad.n <= 0 or r_n.n <= 0:
                continue
            tier_rate = r_bad.n / r_n.n
            mine = []
            for value, obs in w_bad.top():
                n1 = w_n.upper(value)
                n0 = r_n.lower(value)
                if n0 >= c.min_reference_n:
                    x0 = r_bad.upper(value)
                    rate = x0 / n0
                    p = _rate_test(obs, n1, x0, n0)
                    new = False
                else:
                    rate = tier_rate
                    p = _poisson_test(obs, n1 * tier_rate)
                    new = True
                mine.append(Attribution(key, value, obs, n1 * rate, n1, rate, new, p,
                                        traffic_share=n1 / w_n.n if w_n.n > 0 else 0.0))
            tier_excess = w_bad.n - w_n.n * tier_rate
            positive = sum(max(a.excess, 0.0) for a in mine)
            denominators[key] = max(tier_excess, positive, _EPS)
            rows += mine
        rejected = benjamini_hochberg([a.p_value for a in rows], c.fdr)
        out = []
        for a, rej in zip(rows, rejected, strict=True):
            share = max(a.excess, 0.0) / denominators[a.key]
            out.append(Attribution(a.key, a.value, a.observed, a.expected, a.exposure,
                                   a.reference_rate, a.new, a.p_value,
                                   significant=rej and a.excess > 0, share=share,
                                   traffic_share=a.traffic_share))
        out.sort(key=lambda a: (not a.significant, -(a.share - a.traffic_share), -a.excess,
                                a.key, a.value))
        return out

    # -- share shifts -----------------------------------------------------------------
    def share_shifts(self, tier: str, at: float) -> list[ShareShift]:
        """Values whose share of ``tier``'s requests on the last complete day rose.

        Each value's count on that day against the reference (conditional binomial
        test: given both counts, the day's part is Binomial(x1 + x0, n1 / (n1 + n0))),
        at :attr:`SegmentConfig.share_alpha`, and with the effect floors: the share
        rises by ``share_floor`` and by the factor ``share_ratio_floor``. A shift with
        a contact rate ``quality_ratio_floor`` times the tier's reference rate (tested
        at the same level) carries a quality effect.
        """
        c = self.config
        day = int(at // DAY) - 1
        out = []
        for key in sorted(self.keys):
            if self.open:
                self.flush()
            w_n = self._span(tier, key, "routed", day)
            r_n = self.reference_sketch(tier, key, "routed")
            if w_n.n <= 0 or r_n.n <= 0:
                continue
            w_bad = self._span(tier, key, "contacts", day)
            r_bad = self.reference_sketch(tier, key, "contacts")
            tier_rate = r_bad.n / r_n.n
            for value, x1 in w_n.top():
                x0 = r_n.upper(value)
                share, ref_share = x1 / w_n.n, x0 / r_n.n
                if share - ref_share < c.share_floor or share < c.share_ratio_floor * ref_share:
                    continue
                p = _rate_test(x1, w_n.n, x0, r_n.n)
                if p > c.share_alpha:
                    continue
                ratio, effect = None, False
                n_v = w_n.upper(value)
                if tier_rate > 0 and n_v > 0:
                    bad = w_bad.lower(value)
                    ratio = bad / n_v / tier_rate
                    effect = (ratio >= c.quality_ratio_floor
                              and _poisson_test(bad, n_v * tier_rate) <= c.share_alpha)
                out.append(ShareShift(tier, key, value, share, ref_share, w_n.n, p, ratio,
                                      effect))
        out.sort(key=lambda s: (s.p_value, s.key, s.value))
        return out

    # -- surfaces ---------------------------------------------------------------------
    def table(self, tier: str, at: float, seconds: float = 7 * DAY,
              top: int = 5) -> dict[str, list[dict[str, Any]]]:
        """Per key, the top values of ``tier`` by requests with their contact rates
        (window and reference), plus an ``(other)`` row with the rest summed."""
        out: dict[str, list[dict[str, Any]]] = {}
        for key in sorted(self.keys):
            w_n = self.window(tier, key, "routed", at, seconds)
            if w_n.n <= 0:
                continue
            w_bad = self.window(tier, key, "contacts", at, seconds)
            r_n = self.reference_sketch(tier, key, "routed")
            r_bad = self.reference_sketch(tier, key, "contacts")
            rows = []
            shown_n = shown_bad = 0.0
            for value, n in w_n.top(top):
                bad = w_bad.lower(value)
                shown_n, shown_bad = shown_n + n, shown_bad + bad
                n0 = r_n.lower(value)
                rows.append({"value": value, "requests": n, "share": n / w_n.n,
                             "contacts": bad, "rate": bad / n if n else None,
                             "reference_rate": r_bad.upper(value) / n0 if n0 > 0 else None,
                             "error_bound": w_n.delta})
            rest_n = max(w_n.n - shown_n, 0.0)
            rest_bad = max(w_bad.n - shown_bad, 0.0)
            rows.append({"value": "(other)", "requests": rest_n, "share": rest_n / w_n.n,
                         "contacts": rest_bad, "rate": rest_bad / rest_n if rest_n else None,
                         "reference_rate": None, "error_bound": w_n.delta})
            out[key] = rows
        return out

    @staticmethod
    def gauges(router_id: str, tables: Mapping[str, Mapping[str, list[dict[str, Any]]]],
               ) -> list[tuple[str, dict[str, str], float]]:
        """``segment_requests`` / ``segment_support_contacts`` per tier, key and value from
        :meth:`table` output (``tables[tier]``): the top values only, the rest summed in
        ``value="other"``, so at most ``(top + 1) * max_keys`` series per tier and metric."""
        out: list[tuple[str, dict[str, str], float]] = []
        for tier, table in tables.items():
            for key, rows in table.items():
                for row in rows:
                    v = "other" if row["value"] == "(other)" else row["value"]
                    labels = {"router_id": router_id, "tier": tier, "key": key, "value": v}
                    out.append(("segment_requests", labels, float(row["requests"])))
                    out.append(("segment_support_contacts", labels, float(row["contacts"])))
        return out

    # -- serde ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"reference": list(self.reference), "keys": sorted(self.keys),
                "dropped_keys": self.dropped_keys,
                "days": [[*s, h.to_dict()] for s, h in sorted(self.days.items())],
                "hours": [[*s, h.to_dict()] for s, h in sorted(self.hours.items())],
                "rolled": self.rolled,
                "open": [[*s, sorted(d.items())] for s, d in sorted(self.open.items())],
                "ref": [[*s, h.to_dict()] for s, h in sorted(self.ref.items())]}

    @classmethod
    def from_dict(cls, state: Mapping[str, Any],
                  config: SegmentConfig | None = None) -> SegmentCounts:
        lo, hi = state["reference"]
        sc = cls((float(lo), float(hi)), config or SegmentConfig())
        sc.keys = set(state["keys"])
        sc.dropped_keys = int(state["dropped_keys"])
        sc.days = {(t, k, m, int(d)): HeavyHitters.from_dict(h)
                   for t, k, m, d, h in state["days"]}
        sc.hours = {(t, k, m, int(d)): HeavyHitters.from_dict(h)
                    for t, k, m, d, h in state.get("hours", [])}
        sc.rolled = state.get("rolled")
        sc.open = {(t, k, int(h), bool(r)): {str(v): float(c) for v, c in d}
                   for t, k, h, r, d in state.get("open", [])}
        sc.ref = {(t, k, m): HeavyHitters.from_dict(h) for t, k, m, h in state["ref"]}
        return sc

    def merge(self, other: SegmentCounts) -> Self:
        """Fold in another partition's counts (same reference period)."""
        if tuple(other.reference) != tuple(self.reference):
            raise ValueError("cannot merge segment counts with different reference periods")
        for key in sorted(other.keys):
            if key not in self.keys and len(self.keys) < self.config.max_keys:
                self.keys.add(key)
        for slot, d in other.open.items():
            if slot[1] in self.keys:
                mine_d = self.open.setdefault(slot, {})
                for v, c in d.items():
                    mine_d[v] = mine_d.get(v, 0.0) + c
        for mine, theirs in ((self.days, other.days), (self.hours, other.hours)):
            for s, h in theirs.items():
                if s[1] in self.keys:
                    mine[s] = mine[s] + h if s in mine else copy.deepcopy(h)
        if other.rolled is not None:
            # hours of a day one side has rolled stay in ``hours``: _span reads both
            self.rolled = other.rolled if self.rolled is None else min(self.rolled,
                                                                       other.rolled)
        for r, h in other.ref.items():
            if r[1] in self.keys:
                self.ref[r] = self.ref[r] + h if r in self.ref else copy.deepcopy(h)
        self.dropped_keys += other.dropped_keys
        return self
