"""Alert lifecycle: stable fingerprints, firing/resolved transitions, hysteresis.

An alert fires on the first evaluation whose condition holds and resolves only after
the condition has been clear for ``clear_evals`` consecutive evaluations, so a
statistic hovering at its threshold does not flap.

>>> book = AlertBook(clear_evals=2)
>>> key = AlertKey("confidence_drift", "support", None)
>>> [book.update(key, c) for c in (True, True, False, False, True)]
['firing', None, None, 'resolved', 'firing']
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Literal

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
}


@dataclass(frozen=True, slots=True, order=True)
class AlertKey:
    kind: str
    router_id: str
    tier: str | None
    detail: str = ""  # e.g. the signal name, for one alert per signal

    @property
    def fingerprint(self) -> str:
        """A stable id: the same condition always gets the same ``alert_id``."""
        raw = "|".join((self.kind, self.router_id, self.tier or "", self.detail))
        return hashlib.sha256(raw.encode()).hexdigest()[:16]


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

    def firing(self, key: AlertKey) -> bool:
        s = self.states.get(key)
        return bool(s and s.firing)

    def active(self) -> list[AlertKey]:
        return sorted(k for k, s in self.states.items() if s.firing)

    def any_firing(self, router_id: str, kinds: set[str]) -> bool:
        return any(s.firing and k.router_id == router_id and k.kind in kinds
                   for k, s in self.states.items())

    def to_dict(self) -> list[list[Any]]:
        return [[k.kind, k.router_id, k.tier, k.detail, s.firing, s.clear, s.since]
                for k, s in sorted(self.states.items())]

    def load(self, rows: list[list[Any]]) -> AlertBook:
        self.states = {AlertKey(r[0], r[1], r[2], r[3]): _State(bool(r[4]), int(r[5]), r[6])
                       for r in rows}
        return self
