"""Subjects' interactions, for outcomes about a subject rather than a request.

A router may tag each routing decision with a pseudonymous ``subject_id``
(:class:`~pipeline.schemas.RoutingEvent`). A subject-level outcome (``retention``: 1
the subject stayed, 0 it churned) is **attributed to the subject's interactions in the
lookback window** before it:

- the **exposure**: the share of those interactions routed cheap, tallied in buckets so
  churn can be read against exposure;
- each interaction gets weight ``1/k`` (``k`` interactions), so every subject counts
  once in its cohorts' curves (:mod:`pipeline.core.cohorts`);
- each **in-band explored** interaction (the tier drawn at random with a known
  propensity) also enters the causal contrast with weight ``1/propensity``: its
  subject's outcome, cheap against capable. As each such draw is independent of the
  subject's other interactions, the contrast estimates the effect of routing one more
  in-band request cheap on its subject's churn.

Memory: at most ``max_interactions`` per subject (the newest), and subjects are
forgotten once their newest interaction is older than the lookback. It lives in RAM
(about 100 bytes per interaction kept); a 180-day on-disk store is a separate piece.

>>> s = SubjectLedger(lookback_s=30 * DAY)
>>> s.observe("subj-000000000001", 0.0, "cheap", 1.0, False)
>>> s.observe("subj-000000000001", DAY, "capable", 1.0, False)
>>> a = s.attribute("subj-000000000001", 2 * DAY)
>>> a.share_cheap, [round(i.weight, 2) for i in a.interactions]
(0.5, [0.5, 0.5])
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import NamedTuple

DAY = 86400.0
#: exposure buckets by share of the subject's interactions routed cheap: upper bounds
EXPOSURE_EDGES: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
EXPOSURE_LABELS: tuple[str, ...] = ("none", "≤25%", "≤50%", "≤75%", ">75%")


class Interaction(NamedTuple):
    ts: float
    tier: str
    propensity: float
    explored: bool  # in the uncertain band, tier drawn at random
    weight: float = 1.0


@dataclass(frozen=True, slots=True)
class Attribution:
    """A subject outcome's interactions in the lookback, with their weights."""

    interactions: list[Interaction]
    share_cheap: float

    @property
    def bucket(self) -> str:
        return exposure_bucket(self.share_cheap)


def exposure_bucket(share: float) -> str:
    """The exposure bucket of a share of interactions routed cheap.

    >>> exposure_bucket(0.0), exposure_bucket(0.3), exposure_bucket(1.0)
    ('none', '≤50%', '>75%')
    """
    i = bisect.bisect_left(EXPOSURE_EDGES, share)
    return EXPOSURE_LABELS[min(i, len(EXPOSURE_LABELS) - 1)]


@dataclass(slots=True)
class SubjectLedger:
    """Each subject's recent interactions (see the module docstring)."""

    lookback_s: float = 180 * DAY
    max_interactions: int = 64
    cheap_tier: str = "cheap"
    subjects: dict[str, list[Interaction]] = field(default_factory=dict)
    #: exposure bucket → [outcomes, bad outcomes]
    exposure: dict[str, list[float]] = field(default_factory=dict)
    unattributed: int = 0  # subject outcomes with no interaction in the lookback

    def observe(self, subject: str, ts: float, tier: str, propensity: float,
                explored: bool) -> None:
        """Record one interaction of ``subject`` (kept in time order)."""
        rows = self.subjects.get(subject)
        item = Interaction(ts, tier, propensity, explored)
        if rows is None:
            self.subjects[subject] = [item]
            return
        if rows[-1].ts <= ts:
            rows.append(item)
        else:
            bisect.insort(rows, item)
        if len(rows) > self.max_interactions:
            del rows[0]

    def attribute(self, subject: str, ts: float) -> Attribution | None:
        """The subject's interactions in ``(ts - lookback, ts]``, weighted ``1/k``."""
        rows = self.subjects.get(subject)
        lo = ts - self.lookback_s
        inside = [r for r in rows or () if lo < r.ts <= ts]
        if not inside:
            return None
        k = len(inside)
        cheap = sum(r.tier == self.cheap_tier for r in inside)
        return Attribution([r._replace(weight=1.0 / k) for r in inside], cheap / k)

    def record_outcome(self, attribution: Attribution | None, bad: float) -> None:
        """Tally a subject outcome by its exposure bucket."""
        if attribution is None:
            self.unattributed += 1
            return
        row = self.exposure.setdefault(attribution.bucket, [0.0, 0.0])
        row[0] += 1.0
        row[1] += bad

    def expire(self, now: float) -> None:
        """Forget interactions older than the lookback, and subjects left with none."""
        lo = now - self.lookback_s
        for subject in [s for s, rows in self.subjects.items() if rows[-1].ts <= lo]:
            del self.subjects[subject]
        for rows in self.subjects.values():
            if rows[0].ts <= lo:
                rows[:] = [r for r in rows if r.ts > lo]

    def exposure_table(self) -> list[dict[str, float | str | None]]:
        """Subject outcomes and bad share per exposure bucket, in bucket order."""
        out: list[dict[str, float | str | None]] = []
        for label in EXPOSURE_LABELS:
            n, bad = self.exposure.get(label, (0.0, 0.0))
            out.append({"exposure": label, "subjects": n,
                        "bad_rate": bad / n if n else None})
        return out
