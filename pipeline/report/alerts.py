"""Alert events folded into one row per alert, firing spans, and runbook links.

The alert topic carries events (``firing`` then, later, ``resolved``) keyed by a stable
``alert_id``. The report shows one row per ``alert_id`` and shades the time spans during
which alerts of the kinds relevant to a plot were firing.

Examples
--------
>>> from pipeline.schemas import Alert, AlertKind
>>> def ev(state, ts):
...     return Alert(alert_id="a1", kind="confidence_drift", state=state, severity="page",
...                  router_id="r", window="1d", ts=ts, statistics={}, summary=state,
...                  runbook="deploy/runbook.md#confidence-drift")
>>> rows = alert_rows([ev("firing", "2026-01-02T00:00:00Z"),
...                    ev("resolved", "2026-01-05T00:00:00Z")])
>>> rows[0].state, rows[0].spans, rows[0].summary
('resolved', [(1767312000.0, 1767571200.0)], 'resolved')
>>> runbook_href("../deploy/runbook.md", rows[0].runbook)
'../deploy/runbook.md#confidence-drift'
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, field

from pipeline.schemas import Alert, AlertKind

DRIFT_KINDS = frozenset({"confidence_drift", "tier_confidence_drift", "signal_drift"})
QUALITY_KINDS = frozenset({"tier_quality_drop", "tier_quality_gap", "boundary_degradation",
                           "support_contact_rise", "pareto_trap"})
STARVATION_KINDS = frozenset({"feedback_starvation"})
ALL_KINDS = DRIFT_KINDS | QUALITY_KINDS | STARVATION_KINDS


@dataclass
class AlertRow:
    """One alert (all events sharing an ``alert_id``), in the order of its first event."""

    alert_id: str
    kind: AlertKind
    severity: str
    tier: str | None
    window: str
    first_ts: float
    last_ts: float
    state: str
    summary: str
    runbook: str
    spans: list[tuple[float, float | None]] = field(default_factory=list)
    """Firing intervals; an open interval (still firing) ends in ``None``."""


def alert_rows(alerts: Iterable[Alert]) -> list[AlertRow]:
    """Fold alert events (in any order) into rows sorted by first event time, then id."""
    rows: dict[str, AlertRow] = {}
    for a in sorted(alerts, key=lambda a: (a.ts.timestamp(), a.alert_id, a.state)):
        ts = a.ts.timestamp()
        row = rows.get(a.alert_id)
        if row is None:
            row = rows[a.alert_id] = AlertRow(
                a.alert_id, a.kind, a.severity, a.tier, a.window, ts, ts, a.state, a.summary,
                a.runbook)
        row.last_ts, row.state, row.summary, row.runbook = ts, a.state, a.summary, a.runbook
        row.severity = a.severity
        open_span = bool(row.spans) and row.spans[-1][1] is None
        if a.state == "firing" and not open_span:
            row.spans.append((ts, None))
        elif a.state == "resolved" and open_span:
            row.spans[-1] = (row.spans[-1][0], ts)
    return sorted(rows.values(), key=lambda r: (r.first_ts, r.alert_id))


def firing_spans(rows: Iterable[AlertRow], kinds: Collection[str], end: float,
                 tier: str | None = None) -> list[tuple[float, float]]:
    """Merged firing intervals of alerts of ``kinds`` (and of ``tier`` or router-wide).

    Open intervals are closed at ``end`` (the last evaluation).
    """
    raw = sorted((s, end if e is None else e) for r in rows
                 if r.kind in kinds and (tier is None or r.tier in (None, tier))
                 for s, e in r.spans)
    merged: list[tuple[float, float]] = []
    for s, e in raw:
        if merged and s <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], e))
        else:
            merged.append((s, e))
    return merged


def runbook_anchor(runbook: str) -> str:
    """The anchor of an Alert's ``runbook`` field (``deploy/runbook.md#x``, ``#x`` or ``x``)."""
    return runbook.rsplit("#", 1)[-1].strip()


def runbook_href(base: str, runbook: str) -> str:
    """Link to the runbook section, relative to the configurable ``base`` (URL or path)."""
    return f"{base.split('#', 1)[0]}#{runbook_anchor(runbook)}"
