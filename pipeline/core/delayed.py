"""Outcomes that arrive months later, for one router: cohorts, subjects, gap findings.

Holds a :class:`~pipeline.core.cohorts.CohortCurves` and a
:class:`~pipeline.core.subjects.SubjectLedger` and feeds them:

- every routed request: its week and tier (cohort sizes), its routing policy (changes),
  and, when it names a ``subject_id``, the subject's interaction;
- every joined request-level delayed outcome (``survey``: bad below ``bad_below``) at
  its request's time, tier and age;
- every subject-level outcome (``retention``: bad when the subject churned) spread over
  the subject's interactions in the lookback window.

:meth:`DelayedOutcomes.alerts` turns the cohort findings into one
``delayed_outcome_gap`` condition per outcome kind and level, and
:meth:`DelayedOutcomes.hidden_cost` prices the delayed outcomes for the economics.

>>> d = DelayedOutcomes(DelayedConfig(), "cheap", "capable")
>>> d.observe_routing([(0.0, "cheap", ("p",), "subj-000000000001", 1.0, False)])
>>> d.observe_subject_outcome("o1", "subj-000000000001", 0.0, 180 * DAY - 1)
True
>>> d.observe_subject_outcome("o1", "subj-000000000001", 0.0, 180 * DAY - 1)  # resent
False
>>> d.ledger.exposure_table()[-1]
{'exposure': '>75%', 'subjects': 1.0, 'bad_rate': 1.0}
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import chain, compress
from operator import ne
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from pipeline.core.cohorts import (
    DAY,
    WEEK,
    CohortConfig,
    CohortCurves,
    Finding,
    week_of,
    week_start,
)
from pipeline.core.subjects import SubjectLedger
from pipeline.schemas import AlertKind

KIND: Final[AlertKind] = "delayed_outcome_gap"
#: request-level delayed outcome kinds (joined to their request) and subject-level ones
REQUEST_KINDS = ("survey",)
SUBJECT_KINDS = ("retention",)
_NAMES = {"survey": "bad surveys", "retention": "churned subjects"}

#: a routed request as the monitor hands it over:
#: (time, tier, routing policy, subject_id or None, propensity, in-band explored)
RoutedRow = tuple[float, str, Hashable, str | None, float, bool]


@dataclass(frozen=True, slots=True)
class DelayedConfig:
    """Cohort curves (:class:`CohortConfig`) and the subject lookback window."""

    cohorts: CohortConfig = field(default_factory=CohortConfig)
    lookback_days: float = 180.0
    max_interactions: int = 64


class DelayedOutcomes:
    """One router's delayed outcomes; see the module docstring."""

    def __init__(self, config: DelayedConfig, cheap: str, capable: str) -> None:
        self.config = config
        self.cheap, self.capable = cheap, capable
        self.curves = CohortCurves(config.cohorts)
        self.ledger = SubjectLedger(config.lookback_days * DAY, config.max_interactions,
                                    cheap)
        self.seen: dict[str, float] = {}  # subject outcome event ids (resends count once)
        self.bad_below = config.cohorts.bad_below

    def observe_routing(self, rows: Sequence[RoutedRow]) -> None:
        """Count a batch of routed requests (the per-event hot path: the week and the
        policy of the previous row are reused while they hold)."""
        curves, ledger = self.curves, self.ledger
        routed = curves.routed
        lo = hi = 0.0
        week = 0
        last: Hashable = None
        for ts, tier, policy, subject, propensity, explored in rows:
            if not lo <= ts < hi:
                week = week_of(ts)
                lo = week_start(week)
                hi = lo + WEEK
            k = (week, tier)
            routed[k] = routed.get(k, 0) + 1
            if policy != last:
                curves.observe_policy(ts, policy)
                last = policy
            if subject is not None:
                ledger.observe(subject, ts, tier, propensity, explored)

    def observe_columns(self, ts: NDArray[np.float64], tiers: Sequence[str],
                        policies: Sequence[Hashable], subjects: Sequence[str | None],
                        propensities: Sequence[float], explored: Sequence[bool]) -> None:
        """:meth:`observe_routing` of a batch given as columns: the same state, with the
        weeks and the policy changes found at once."""
        monday = week_start(0)
        weeks = np.floor((ts - monday) / WEEK)  # week_of, at once
        start = weeks * WEEK + monday  # integers: exact, so the weeks tile exactly
        if not bool(((start <= ts) & (ts < start + WEEK)).all()):  # a division misrounded
            self.observe_routing(list(zip(ts.tolist(), tiers, policies, subjects,
                                          propensities, explored, strict=True)))
            return
        routed = self.curves.routed
        for k, n in Counter(zip(weeks.astype(np.int64).tolist(), tiers, strict=True)).items():
            routed[k] = routed.get(k, 0) + n
        ts_list: list[float] = ts.tolist()
        changed = map(ne, policies, chain([None], policies))
        for i in compress(range(len(ts_list)), changed):
            self.curves.observe_policy(ts_list[i], policies[i])
        ledger = self.ledger
        for i, subject in enumerate(subjects):
            if subject is not None:
                ledger.observe(subject, ts_list[i], tiers[i], propensities[i], explored[i])

    def observe_request_outcome(self, kind: str, value: float, *, ts: float,
                                decision_ts: float, tier: str, weight: float | None,
                                propensity: float | None, explored: bool) -> None:
        """A joined request-level outcome (a survey) at its request's cohort."""
        bad = 1.0 if value < self.bad_below else 0.0
        w = weight or 1.0
        ipw = w / propensity if explored and propensity else None
        self.curves.observe_outcome(kind, decision_ts=decision_ts, ts=ts, tier=tier,
                                    bad=bad, weight=w, ipw=ipw)

    def observe_subject_outcome(self, event_id: str, subject: str, value: float,
                                ts: float, kind: str = "retention") -> bool:
        """A subject outcome (``value`` 1 stayed, 0 churned); False when already seen."""
        if event_id in self.seen:
            return False
        self.seen[event_id] = ts
        bad = 1.0 - value
        att = self.ledger.attribute(subject, ts)
        self.ledger.record_outcome(att, bad)
        if att is None:
            return True
        for i in att.interactions:
            self.curves.observe_outcome(
                kind, decision_ts=i.ts, ts=ts, tier=i.tier, bad=bad, weight=i.weight,
                ipw=1.0 / i.propensity if i.explored else None)
        return True

    # -- evaluation -----------------------------------------------------------------------
    def alerts(self, now: float) -> list[tuple[str, str, bool, str, dict[str, Any]]]:
        """Per outcome kind and level: ``(kind, level, condition, summary, statistics)``.

        Runs the looks due at ``now`` (once a day is enough: cohorts are weeks). A level
        holds while any cohort within its maturity horizon is flagged at it; the newest
        such finding is the one reported.
        """
        self.curves.evaluate(now)
        out: list[tuple[str, str, bool, str, dict[str, Any]]] = []
        for kind in self.config.cohorts.outcomes:
            active = self.curves.active(kind, now)
            for level in ("ticket", "info"):
                found = [f for f in active if f.level == level]
                if not found:
                    out.append((kind, level, False, f"{_NAMES.get(kind, kind)}: no cohort "
                                "gap", {}))
                    continue
                f = max(found, key=lambda x: (x.ts, x.week))
                stats = {**f.statistics, "flagged_cohorts": len(found)}
                out.append((kind, level, True, summary(f), stats))
        return out

    def hidden_cost(self, cost_per_bad_survey: float, cost_per_churned_subject: float,
                    cheap_per_day: float) -> tuple[float, float, float]:
        """Delayed outcomes' cost per day of the cheap tier: estimate and 95 % interval.

        Per cheap request, the extra bad outcomes are the in-band IPW contrast (cheap
        minus capable). For surveys it is scaled by the surveys received per routed
        request (those still to come make it an underestimate). Negative effects count
        as zero, as in :func:`~pipeline.core.economics.tier_economics`. The contrast is
        measured in the uncertain band and applied to every cheap request.
        """
        out = [0.0, 0.0, 0.0]
        for kind, price in (("survey", cost_per_bad_survey),
                            ("retention", cost_per_churned_subject)):
            c = self.curves.ipw_contrast(kind, self.cheap, self.capable) if price > 0 else None
            if c is None:
                continue
            scale = self._response_rate(kind) if kind in REQUEST_KINDS else 1.0
            for i, eff in enumerate((c["effect"], c["effect"] - 1.96 * c["se"],
                                     c["effect"] + 1.96 * c["se"])):
                out[i] += max(eff, 0.0) * scale * cheap_per_day * price
        return out[0], out[1], out[2]

    def _response_rate(self, kind: str) -> float:
        curves = self.curves
        weeks = set(curves.weeks(kind))
        routed = sum(n for (w, _), n in curves.routed.items() if w in weeks)
        got = sum(float(cell[:, 0].sum()) for (k, _, _), cell in curves.cells.items()
                  if k == kind)
        return min(got / routed, 1.0) if routed else 0.0

    def snapshot(self, now: float) -> dict[str, Any]:
        out = self.curves.snapshot(now, self.cheap, self.capable)
        out["exposure"] = self.ledger.exposure_table()
        out["subjects"] = len(self.ledger.subjects)
        out["unattributed_subject_outcomes"] = self.ledger.unattributed
        return out

    def trim(self, now: float) -> None:
        self.curves.trim(now)
        self.ledger.expire(now)
        lo = now - self.ledger.lookback_s
        for k in [k for k, ts in self.seen.items() if ts < lo]:
            del self.seen[k]


def summary(f: Finding) -> str:
    """One line: which cohort, how much worse than before, at what maturity, how late.

    >>> print(summary(Finding("survey", 0, "ticket", 0.0, {"rate": 0.2,
    ...     "reference_rate": 0.1, "maturity_days": 92, "p_value": 1e-5,
    ...     "cohort_week_start": 0.0, "delay_days_after_cohort": 92.0,
    ...     "delay_days_after_change": 97.5, "change": "classifier v2"})))
    bad surveys of the cohort of week 1970-01-01: 20.0% against 10.0% before classifier v2, \
compared at 92 days of maturity (p=1e-05); found 92 days after the cohort closed, 97.5 days \
after the change
    """
    s = f.statistics
    week = datetime.fromtimestamp(s["cohort_week_start"], UTC).date().isoformat()
    before = f"before {s['change']}" if s.get("change") else "in the weeks before"
    line = (f"{_NAMES.get(f.kind, f.kind)} of the cohort of week {week}: {s['rate']:.1%} "
            f"against {s['reference_rate']:.1%} {before}, compared at "
            f"{s['maturity_days']} days of maturity (p={s['p_value']:.2g}); found "
            f"{s['delay_days_after_cohort']:.0f} days after the cohort closed")
    if s.get("delay_days_after_change") is not None:
        line += f", {s['delay_days_after_change']:.1f} days after the change"
    return line
