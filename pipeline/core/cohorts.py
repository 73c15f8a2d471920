"""Cohort curves of outcomes that arrive months later, and the ``delayed_outcome_gap`` test.

An **interaction cohort** is the requests of one UTC week (weeks start on Monday) served by
one tier. Each delayed outcome (a 90-day ``survey`` of a request; a subject's 6-month
``retention``, attributed to the subject's interactions by :mod:`pipeline.core.subjects`)
is added to the cohort of the interaction it belongs to, at its **age**: whole days from
the interaction to the outcome. A cohort's curve at age ``a`` is the share of bad outcomes
(a survey below ``bad_below``; a churned subject) among its outcomes known within ``a``
days of their interaction.

**Censoring.** A cohort whose week ended ``A`` days ago has seen every member for at
least ``A`` days and some for up to ``A + 7``. It is compared with older cohorts **at
equal maturity**: both sides count only outcomes that came within ``A`` days of their
interaction, so a cohort still maturing is never compared with complete ones (its
missing late outcomes are missing from the reference too). Under no change both sides
estimate the same truncated rate, whatever the delay distribution.

**What is compared.** The whole cohort (every tier: the routing policy's effect on the
same population of queries) against the pooled cohorts of ``reference_weeks`` weeks
before the last **change** at or before it (a routing policy never seen before: new
thresholds, a new classifier version, the rollout), or before the cohort itself when
nothing changed. The per-tier curves and the in-band IPW contrast are reported beside it.

A cohort flagged ``info`` is still looked at, and becomes a ``ticket`` finding if a
later look passes the floor; a ``ticket`` finding is final.

**False alarms.** Each cohort is looked at no more than ``looks`` times: when its
outcome weight first reaches ``min_n``, ``2·min_n``, ``4·min_n``..., and once at full
maturity (``max_age_days``). A look is a one-sided z-test of the bad rates (ratio
estimator variances, pooled rate), at the level
``budget / (30/7 · n_outcome_kinds · looks)``: about 30/7 cohorts start per 30 days, so by
the union bound the expected false findings per router per 30 days are within
``budget``, one budget per severity (``ticket``: the gap is also past its floor;
``info``: significant below it). Dependence between looks and cohorts (they share
reference weeks) does not matter to the union bound.

>>> c = CohortCurves(CohortConfig(min_n=20, max_age_days=10))
>>> c.observe_routing(0.0, "cheap", ("p1",))
>>> c.observe_outcome("survey", decision_ts=0.0, ts=3 * DAY, tier="cheap", bad=1.0)
>>> c.curve("survey", week_of(0.0), tier="cheap")[3]
1.0
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats

DAY = 86400.0
WEEK = 7 * DAY
# 1970-01-01 was a Thursday; weeks start on Monday 00:00 UTC
_MONDAY_OFFSET = 4 * DAY
#: a published curve starts once this many outcomes (by weight) are in: before, a rate
#: of a handful of early outcomes is noise
CURVE_MIN_N = 30.0
#: the columns of a cell: Σw, Σw·y, Σw², Σw²·y (y ∈ {0, 1}: a bad outcome)
W, WY, W2, W2Y = range(4)


def week_of(ts: float) -> int:
    """The index of the UTC week (Monday to Sunday) holding ``ts``.

    >>> week_of(4 * DAY) == week_of(10.99 * DAY), week_of(11 * DAY) - week_of(4 * DAY)
    (True, 1)
    """
    return math.floor((ts - _MONDAY_OFFSET) / WEEK)


def week_start(week: int) -> float:
    """The first instant of week ``week``."""
    return week * WEEK + _MONDAY_OFFSET


@dataclass(frozen=True, slots=True)
class CohortConfig:
    """Cohort curves and the gap test; see the module docstring."""

    outcomes: tuple[str, ...] = ("survey", "retention")
    bad_below: float = 0.5
    max_age_days: int = 200
    reference_weeks: int = 4
    min_n: float = 200.0
    looks: int = 6
    floors: dict[str, float] = field(default_factory=lambda: {"survey": 0.03,
                                                              "retention": 0.02})
    # a delayed gap is news about months ago, never a page: small budgets, one per level
    ticket_false_alarms_per_30d: float = 0.1
    info_false_alarms_per_30d: float = 0.1

    def alpha(self, budget: float) -> float:
        """Level of one look for a budget of false findings per router per 30 days.

        >>> round(CohortConfig().alpha(0.1), 6)
        0.001944
        """
        cohorts_per_30d = 30.0 / 7.0
        return budget / (cohorts_per_30d * len(self.outcomes) * self.looks)


@dataclass(frozen=True, slots=True)
class Comparison:
    """A cohort against its reference at equal maturity ``age`` (days)."""

    rate: float
    reference_rate: float
    n: float
    reference_n: float
    z: float
    p_value: float

    @property
    def gap(self) -> float:
        return self.rate - self.reference_rate


def compare(cur: np.ndarray, ref: np.ndarray) -> Comparison | None:
    """One-sided z-test that the bad rate of ``cur`` exceeds that of ``ref``.

    Each side is a cell total (Σw, Σwy, Σw², Σw²y). The rates are ratio (Hajek)
    estimates. Under the null every outcome is bad with the same probability ``p``,
    estimated by the pooled rate, so each side's variance is ``p(1 − p)·Σw²/(Σw)²``:
    for unit weights, the classical pooled two-proportion z-test.

    >>> c = compare(np.array([100.0, 20, 100, 20]), np.array([400.0, 40, 400, 40]))
    >>> round(c.gap, 3), round(c.z, 3)
    (0.1, 2.752)
    """
    if cur[W] <= 0 or ref[W] <= 0:
        return None
    r1, r0 = cur[WY] / cur[W], ref[WY] / ref[W]
    pooled = (cur[WY] + ref[WY]) / (cur[W] + ref[W])

    def var(c: np.ndarray) -> float:
        return float(pooled * (1 - pooled) * c[W2]) / float(c[W]) ** 2

    se = math.sqrt(max(var(cur) + var(ref), 0.0))
    z = (r1 - r0) / se if se > 0 else 0.0
    return Comparison(float(r1), float(r0), float(cur[W] ** 2 / max(cur[W2], 1e-300)),
                      float(ref[W] ** 2 / max(ref[W2], 1e-300)), float(z),
                      float(stats.norm.sf(z)))


def hajek(cell: np.ndarray) -> tuple[float, float] | None:
    """The weighted bad rate of a cell and its sandwich standard error."""
    if cell[W] <= 0:
        return None
    r = float(cell[WY] / cell[W])
    v = float(cell[W2Y] - 2 * r * cell[W2Y] + r * r * cell[W2]) / float(cell[W]) ** 2
    return r, math.sqrt(max(v, 0.0))


@dataclass(slots=True)
class Finding:
    """A cohort flagged at one of its looks (sticky: the gap is a fact about the past)."""

    kind: str
    week: int
    level: str  # "ticket" or "info"
    ts: float
    statistics: dict[str, Any]


class CohortCurves:
    """Per-router cohort curves of delayed outcomes, changes, and the gap test."""

    def __init__(self, config: CohortConfig | None = None) -> None:
        self.config = config or CohortConfig()
        n_age = self.config.max_age_days + 1
        self._n_age = n_age
        #: (kind, week, tier) → per-age rows of (Σw, Σwy, Σw², Σw²y)
        self.cells: dict[tuple[str, int, str], np.ndarray] = {}
        #: in-band explored outcomes weighted by 1/propensity: (kind, tier) → totals
        self.explored: dict[tuple[str, str], np.ndarray] = {}
        self.routed: dict[tuple[int, str], int] = {}
        self.policies: dict[Hashable, float] = {}  # routing policy → first seen
        self.changes: list[tuple[float, str]] = []  # (time, what changed), newest last
        self.too_old = 0  # outcomes later than max_age_days after their interaction
        self.looks: dict[tuple[str, int], int] = {}
        self.final: set[tuple[str, int]] = set()
        self.findings: dict[tuple[str, int], Finding] = {}

    # -- updates --------------------------------------------------------------------------
    def observe_routing(self, ts: float, tier: str, policy: Hashable) -> None:
        """Count one routed request; a policy never seen before is a change."""
        k = (week_of(ts), tier)
        self.routed[k] = self.routed.get(k, 0) + 1
        self.observe_policy(ts, policy)

    def observe_policy(self, ts: float, policy: Hashable) -> None:
        """A request routed under ``policy`` at ``ts`` (a new policy is a change)."""
        first = self.policies.get(policy)
        if first is None:
            if self.policies:
                self.changes.append((ts, _describe(policy)))
                self.changes.sort()
                del self.changes[:-20]
            self.policies[policy] = ts
        elif ts < first:
            self.policies[policy] = ts

    def observe_outcome(self, kind: str, *, decision_ts: float, ts: float, tier: str,
                        bad: float, weight: float = 1.0, ipw: float | None = None) -> None:
        """Add one delayed outcome (``bad`` 1 or 0) to its interaction's cohort.

        ``ipw``: for in-band explored interactions, the inverse propensity (the outcome
        then also enters the causal cheap-vs-capable contrast).
        """
        age = math.floor(max(ts - decision_ts, 0.0) / DAY)
        if age > self.config.max_age_days:
            self.too_old += 1
            return
        key = (kind, week_of(decision_ts), tier)
        cell = self.cells.get(key)
        if cell is None:
            cell = self.cells[key] = np.zeros((self._n_age, 4))
        _add(cell[age], weight, bad)
        if ipw is not None:
            ex = self.explored.get((kind, tier))
            if ex is None:
                ex = self.explored[(kind, tier)] = np.zeros(4)
            _add(ex, ipw, bad)

    # -- reads ----------------------------------------------------------------------------
    def weeks(self, kind: str) -> list[int]:
        return sorted({w for k, w, _ in self.cells if k == kind})

    def tiers(self) -> list[str]:
        """Every tier seen, routed or with outcomes."""
        return sorted({t for _, t in self.routed} | {t for _, _, t in self.cells})

    def totals(self, kind: str, weeks: Iterable[int], age: int,
               tier: str | None = None) -> np.ndarray:
        """Σ over ``weeks`` (and tiers, unless one is named) of outcomes within ``age``."""
        out = np.zeros(4)
        a = min(age, self.config.max_age_days)
        if a < 0:
            return out
        for w in weeks:
            for t in ([tier] if tier is not None else self.tiers()):
                cell = self.cells.get((kind, w, t))
                if cell is not None:
                    out += cell[: a + 1].sum(axis=0)
        return out

    def curve(self, kind: str, week: int, tier: str | None = None,
              until: float | None = None, min_n: float = 0.0) -> list[float | None]:
        """The cohort's bad rate among outcomes known by each age (``None``: none yet, or
        fewer than ``min_n`` by weight); ``until``: only ages the whole cohort has reached
        by then."""
        last = self.config.max_age_days
        if until is not None:
            last = min(last, self.maturity(week, until))
        rows = np.zeros((self._n_age, 4))
        for t in ([tier] if tier is not None else self.tiers()):
            cell = self.cells.get((kind, week, t))
            if cell is not None:
                rows += cell
        cum = np.cumsum(rows, axis=0)
        return [float(cum[a, WY] / cum[a, W]) if cum[a, W] > max(min_n, 0.0) else None
                for a in range(max(last + 1, 0))]

    @staticmethod
    def maturity(week: int, now: float) -> int:
        """Whole days every member of cohort ``week`` has been observed for at ``now``."""
        return math.floor((now - week_start(week + 1)) / DAY)

    def reference_weeks(self, week: int) -> tuple[list[int], float | None, str | None]:
        """The weeks ``week`` is compared with, and the change that chose them, if any."""
        change = next(((ts, what) for ts, what in reversed(self.changes)
                       if week_of(ts) <= week), None)
        end = week if change is None else week_of(change[0])
        weeks = [w for w in range(end - self.config.reference_weeks, end)
                 if any(self.routed.get((w, t)) for t in self.tiers())]
        return weeks, (change[0] if change else None), (change[1] if change else None)

    def ipw_contrast(self, kind: str, cheap: str, capable: str) -> dict[str, float] | None:
        """Cheap minus capable bad rate on in-band exploration (IPW, Hajek), with its
        standard error: the causal effect of routing one in-band request cheap."""
        a, b = self.explored.get((kind, cheap)), self.explored.get((kind, capable))
        if a is None or b is None:
            return None
        ha, hb = hajek(a), hajek(b)
        if ha is None or hb is None:
            return None
        return {"cheap": ha[0], "capable": hb[0], "effect": ha[0] - hb[0],
                "se": math.hypot(ha[1], hb[1]), "n_cheap": float(a[W] ** 2 / a[W2]),
                "n_capable": float(b[W] ** 2 / b[W2])}

    # -- the gap test ---------------------------------------------------------------------
    def evaluate(self, now: float) -> list[Finding]:
        """Run the looks that are due at ``now``; return the findings they made."""
        c = self.config
        alpha = {"ticket": c.alpha(c.ticket_false_alarms_per_30d),
                 "info": c.alpha(c.info_false_alarms_per_30d)}
        new: list[Finding] = []
        cum: dict[tuple[str, int], np.ndarray] = {}  # (kind, week) → cumulative by age

        def within(kind: str, weeks: list[int], age: int) -> np.ndarray:
            out = np.zeros(4)
            for w in weeks:
                rows = cum.get((kind, w))
                if rows is None:
                    rows = cum[(kind, w)] = np.cumsum(sum(
                        (cell for (k, wk, _), cell in self.cells.items()
                         if k == kind and wk == w), np.zeros((self._n_age, 4))), axis=0)
                out += rows[min(age, c.max_age_days)]
            return out

        for kind in c.outcomes:
            for week in self.weeks(kind):
                key = (kind, week)
                age = self.maturity(week, now)
                if age < 0 or key in self.final:
                    continue
                ref_weeks, change_ts, change = self.reference_weeks(week)
                if not ref_weeks:
                    continue
                cur = within(kind, [week], age)
                ref = within(kind, ref_weeks, age)
                done = self.looks.get(key, 0)
                n_cur = cur[W] ** 2 / cur[W2] if cur[W2] > 0 else 0.0
                n_ref = ref[W] ** 2 / ref[W2] if ref[W2] > 0 else 0.0
                final = age >= c.max_age_days
                passed = (0 if n_cur < c.min_n else
                          min(int(math.log2(n_cur / c.min_n)) + 1, c.looks - 1))
                if final:
                    self.final.add(key)
                if n_ref < c.min_n or n_cur < c.min_n or not (passed > done or final):
                    continue
                self.looks[key] = max(done, passed)
                cmp = compare(cur, ref)
                earlier = self.findings.get(key)
                if cmp is None or (earlier is not None and earlier.level == "ticket"):
                    continue  # an info finding may still grow into a ticket
                level = None
                if cmp.p_value < alpha["ticket"] and cmp.gap >= c.floors.get(kind, 0.0):
                    level = "ticket"
                elif cmp.p_value < alpha["info"]:
                    level = "info"
                if level is None or (earlier is not None and level == earlier.level):
                    continue
                stats_ = {
                    "outcome": kind, "cohort_week_start": week_start(week),
                    "reference_weeks_start": [week_start(w) for w in ref_weeks],
                    "maturity_days": age, "rate": cmp.rate,
                    "reference_rate": cmp.reference_rate, "gap": cmp.gap,
                    "floor": c.floors.get(kind, 0.0), "z": cmp.z, "p_value": cmp.p_value,
                    "alpha": alpha[level], "n_eff": cmp.n, "reference_n_eff": cmp.reference_n,
                    "look": self.looks[key], "looks": c.looks,
                    "delay_days_after_cohort": (now - week_start(week + 1)) / DAY,
                    "change": change, "change_ts": change_ts,
                    "delay_days_after_change": (None if change_ts is None
                                                else (now - change_ts) / DAY),
                    "tiers": {t: self._tier_gap(kind, week, ref_weeks, age, t)
                              for t in self.tiers()},
                }
                f = self.findings[key] = Finding(kind, week, level, now, stats_)
                new.append(f)
        return new

    def _tier_gap(self, kind: str, week: int, ref_weeks: list[int], age: int,
                  tier: str) -> dict[str, float | None]:
        cur = hajek(self.totals(kind, [week], age, tier))
        ref = hajek(self.totals(kind, ref_weeks, age, tier))
        return {"rate": cur[0] if cur else None, "reference_rate": ref[0] if ref else None}

    def active(self, kind: str, now: float) -> list[Finding]:
        """Findings of cohorts still within their maturity horizon at ``now``."""
        horizon = self.config.max_age_days + 14
        return [f for (k, w), f in sorted(self.findings.items())
                if k == kind and self.maturity(w, now) <= horizon]

    def trim(self, now: float) -> None:
        """Forget cohorts older than any look or reference could need."""
        c = self.config
        keep_from = week_of(now - (c.max_age_days + 7 * (c.reference_weeks + 3)) * DAY)
        if self.changes:  # the reference of the last change stays
            keep_from = min(keep_from, week_of(self.changes[-1][0]) - c.reference_weeks)
        for cell in [k for k in self.cells if k[1] < keep_from]:
            del self.cells[cell]
        for routed in [k for k in self.routed if k[0] < keep_from]:
            del self.routed[routed]
        for look in [k for k in self.looks if k[1] < keep_from]:
            del self.looks[look]
        for found in [k for k in self.findings if k[1] < keep_from]:
            del self.findings[found]
        self.final = {k for k in self.final if k[1] >= keep_from}

    def snapshot(self, now: float, cheap: str, capable: str) -> dict[str, Any]:
        """The cohort curves (every tier and per tier) for ``/status`` and the report."""
        out: dict[str, Any] = {}
        horizon = self.config.max_age_days + 7
        for kind in self.config.outcomes:
            weeks = [w for w in self.weeks(kind) if self.maturity(w, now) <= horizon]
            rows = []
            for w in weeks:
                age = self.maturity(w, now)
                if age < 0:
                    continue
                total = sum(self.routed.get((w, t), 0) for t in self.tiers())
                rows.append({
                    "week_start": week_start(w), "maturity_days": age, "requests": total,
                    "cheap_share": self.routed.get((w, cheap), 0) / total if total else None,
                    "curve": _thin(self.curve(kind, w, until=now, min_n=CURVE_MIN_N)),
                    "tiers": {t: _thin(self.curve(kind, w, t, until=now, min_n=CURVE_MIN_N))
                              for t in (cheap, capable)},
                    "flagged": (self.findings[(kind, w)].level
                                if (kind, w) in self.findings else None)})
            out[kind] = {"cohorts": rows, "ipw": self.ipw_contrast(kind, cheap, capable)}
        out["changes"] = [{"ts": ts, "what": what} for ts, what in self.changes[-5:]]
        return out


def _thin(curve: list[float | None], every: int = 7) -> list[list[float]]:
    """(age, rate) every ``every`` days and at the last age, for plots and /status."""
    pts = [[float(a), r] for a, r in enumerate(curve)
           if r is not None and (a % every == 0 or a == len(curve) - 1)]
    return pts


def _add(row: np.ndarray, w: float, y: float) -> None:
    row[W] += w
    row[WY] += w * y
    row[W2] += w * w
    row[W2Y] += w * w * y


def _describe(policy: Hashable) -> str:
    if isinstance(policy, tuple) and len(policy) == 2:
        th, version = policy
        if isinstance(th, tuple) and len(th) == 3:
            return (f"thresholds cheap_above={th[0]:g} capable_below={th[1]:g} "
                    f"exploration_rate={th[2]:g}, classifier {version or 'unversioned'}")
    return str(policy)
