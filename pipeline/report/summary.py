"""Standard headline numbers and timeline lines, computed from a series and its alerts.

A producer (the replay, the demo) can fill ``ReportData.headline`` and
``ReportData.timeline`` with these, or with anything else: the report shows whatever
it is given, formatting the keys it knows (see :mod:`pipeline.report.html`).

Examples
--------
>>> from pipeline.report.data import EconomicsPoint, Snapshot
>>> s = [Snapshot(ts=0.0, economics=EconomicsPoint(savings_per_day=900.0,
...                                                hidden_cost_per_day=1200.0,
...                                                net_value_per_day=-300.0))]
>>> headline_from(s, [], onset_ts=None)
{'savings_per_day': 900.0, 'hidden_cost_per_day': 1200.0, 'net_value_per_day': -300.0, \
'alerts_firing': 0.0}
>>> fmt_ts(86400.0 * 31)
'1970-02-01 00:00'
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from pipeline.report.alerts import STARVATION_KINDS, alert_rows
from pipeline.report.data import Snapshot, ThresholdPoint
from pipeline.schemas import Alert

DASH = " — "


def fmt_ts(ts: float) -> str:
    """``YYYY-MM-DD HH:MM`` in UTC."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M")


def headline_from(series: Sequence[Snapshot], alerts: Sequence[Alert],
                  onset_ts: float | None) -> dict[str, float | str]:
    """Latest economics, alerts firing now, and first detection relative to the onset.

    Keys: ``savings_per_day``, ``hidden_cost_per_day``, ``net_value_per_day`` (latest
    evaluation that has them), ``alerts_firing``, and with an onset
    ``detection_delay_h`` (hours from onset to the first alert at or after it, other
    than feedback starvation) and ``first_detection`` (that alert's kind), or
    ``first_detection = "not detected"``.
    """
    out: dict[str, float | str] = {}
    for attr in ("savings_per_day", "hidden_cost_per_day", "net_value_per_day"):
        vals = [getattr(s.economics, attr) for s in series if s.economics is not None]
        vals = [v for v in vals if v is not None]
        if vals:
            out[attr] = float(vals[-1])
    rows = alert_rows(alerts)
    out["alerts_firing"] = float(sum(r.state == "firing" for r in rows))
    if onset_ts is not None:
        hits = [r for r in rows if r.kind not in STARVATION_KINDS
                for s, _ in r.spans if s >= onset_ts]
        if hits:
            first = min(hits, key=lambda r: min(s for s, _ in r.spans if s >= onset_ts))
            start = min(s for s, _ in first.spans if s >= onset_ts)
            out["detection_delay_h"] = (start - onset_ts) / 3600.0
            out["first_detection"] = first.kind
        else:
            out["first_detection"] = "not detected"
    return out


def timeline_from(series: Sequence[Snapshot], alerts: Sequence[Alert],
                  onset_ts: float | None, onset_label: str = "onset") -> list[str]:
    """One ``"<UTC time> — <what happened>"`` line per event, in time order.

    Events: the onset, each alert firing or resolving, and each change of the recommended
    and of the applied thresholds.
    """
    events: list[tuple[float, int, str]] = []
    if onset_ts is not None:
        events.append((onset_ts, 0, onset_label))
    for r in alert_rows(alerts):
        where = f" on {r.tier}" if r.tier else ""
        for start, e in r.spans:
            events.append((start, 1,
                           f"{r.kind}{where} fires ({r.severity}, {r.window} window)"))
            if e is not None:
                events.append((e, 2, f"{r.kind}{where} resolves"))
    for attr, order, what in (("recommended", 3, "thresholds recommended"),
                              ("applied", 4, "thresholds applied")):
        prev: ThresholdPoint | None = None
        for snap in series:
            cur: ThresholdPoint | None = getattr(snap, attr)
            if cur is not None and prev is not None and cur != prev:
                changes = [f"{k} {getattr(prev, k):.2f} → {getattr(cur, k):.2f}"
                           for k in ("cheap_above", "capable_below", "exploration_rate")
                           if getattr(prev, k) != getattr(cur, k)]
                events.append((snap.ts, order, f"{what}: " + ", ".join(changes)))
            prev = cur if cur is not None else prev
    return [f"{fmt_ts(ts)}{DASH}{text}" for ts, _, text in sorted(events)]
