"""Alert lifecycle: stable fingerprints, firing/resolved transitions, hysteresis.

An alert fires on the first evaluation whose condition holds and resolves only after
the condition has been clear for ``clear_evals`` consecutive evaluations, so a
statistic hovering at its threshold does not flap.

>>> book = AlertBook(clear_evals=2)
>>> key = AlertKey("confidence_drift", "support", None)
>>> [book.update(key, c) for c in (True, True, False, False, True)]
['firing', None, None, 'resolved', 'firing']

A drift finding has two levels. Above its effect floor it takes its kind's severity
(:data:`SEVERITY`); statistically certain but below the floor it is an ``info`` finding
with a fingerprint of its own (``level="info"``), so that on-call tooling can route it
away from pages and an escalation is a new alert, not a changed one:

>>> info = AlertKey("confidence_drift", "support", None, level="info")
>>> severity_of(key), severity_of(info), info.fingerprint != key.fingerprint
('ticket', 'info', True)
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Literal

from pipeline.schemas import AlertKind

Transition = Literal["firing", "resolved"] | None

SEVERITY: dict[str, Literal["page", "ticket", "info"]] = {
    "confidence_drift": "ticket",
    "tier_confidence_drift": "ticket",
    "signal_drift": "info",
    "tier_quality_drop": "page",
    "tier_quality_gap": "ticket",
    "boundary_degradation": "page",
    "support_contact_rise": "page",
    "feedback_starvation": "ticket",
    "pareto_trap": "page",
    "segment_share_shift": "info",  # "ticket" when it carries a quality effect
    "delayed_outcome_gap": "ticket",  # "info" below its floor (level="info")
}


def runbook_link(base: str, section: str) -> str:
    """The link to a runbook section: ``base`` (a URL or the repo path) plus the anchor.

    >>> runbook_link("https://example.com/tierwatch/runbook.md", "pareto_trap")
    'https://example.com/tierwatch/runbook.md#pareto_trap'
    >>> runbook_link("deploy/runbook.md#old", "pareto_trap")
    'deploy/runbook.md#pareto_trap'
    """
    return f"{base.split('#', 1)[0]}#{section}"


@dataclass(frozen=True, slots=True, order=True)
class AlertKey:
    kind: AlertKind
    router_id: str
    tier: str | None
    detail: str = ""  # e.g. the signal name, for one alert per signal
    level: str = ""  # "" : the kind's severity; "info": a certain drift below its floor

    @property
    def fingerprint(self) -> str:
        """A stable id: the same condition always gets the same ``alert_id``."""
        parts = (self.kind, self.router_id, self.tier or "", self.detail)
        raw = "|".join(parts + ((self.level,) if self.level else ()))
        return hashlib.sha256(raw.encode()).hexdigest()[:16]


def severity_of(key: AlertKey) -> Literal["page", "ticket", "info"]:
    """The severity an alert is published with: its level's, else its kind's."""
    return "info" if key.level == "info" else SEVERITY[key.kind]


@dataclass(slots=True)
class _State:
    firing: bool = False
    clear: int = 0
    since: float | None = None


class AlertBook:
    """Tracks every alert's state; :meth:`update` says when one transitions."""

    def __init__(self, clear_evals: int = 3) -> None:
        self.clear_evals = clear_evals
        self.states: dict[AlertKey, _State] = {}

    def update(self, key: AlertKey, condition: bool, now: float = 0.0) -> Transition:
        s = self.states.setdefault(key, _State())
        if condition:
            s.clear = 0
            if not s.firing:
                s.firing, s.since = True, now
                return "firing"
            return None
        if s.firing:
            s.clear += 1
            if s.clear >= self.clear_evals:
                s.firing, s.clear, s.since = False, 0, None
                return "resolved"
        return None

    def clear(self, key: AlertKey) -> Transition:
        """Resolve ``key`` now, without hysteresis (it was superseded, e.g. an ``info``
        finding that escalated to a ticket); ``"resolved"`` if it was firing."""
        s = self.states.get(key)
        if s is None or not s.firing:
            return None
        s.firing, s.clear, s.since = False, 0, None
        return "resolved"

    def firing(self, key: AlertKey) -> bool:
        s = self.states.get(key)
        return bool(s and s.firing)

    def active(self) -> list[AlertKey]:
        return sorted(k for k, s in self.states.items() if s.firing)

    def any_firing(self, router_id: str, kinds: set[str], *, info: bool = False) -> bool:
        """Whether an alert of ``kinds`` fires for the router (``info`` findings only
        when asked for: a drift below its floor does not hold the policy back)."""
        return any(s.firing and k.router_id == router_id and k.kind in kinds
                   and (info or k.level != "info") for k, s in self.states.items())

    def to_dict(self) -> list[list[Any]]:
        return [[k.kind, k.router_id, k.tier, k.detail, s.firing, s.clear, s.since, k.level]
                for k, s in sorted(self.states.items())]

    def load(self, rows: list[list[Any]]) -> AlertBook:
        # rows written before alert levels existed have 7 fields
        self.states = {AlertKey(r[0], r[1], r[2], r[3], r[7] if len(r) > 7 else ""):
                       _State(bool(r[4]), int(r[5]), r[6]) for r in rows}
        return self
