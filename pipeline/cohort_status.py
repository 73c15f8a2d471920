"""``tierwatch status --by cohort``: outcomes months later, per weekly cohort.

Reads the ``delayed`` part of each router's ``/status`` snapshot
(:meth:`pipeline.core.delayed.DelayedOutcomes.snapshot`): per delayed outcome, each
week's cohort with its size, cheap share, maturity and bad share so far, the in-band
IPW contrast, and the subjects' churn by exposure to the cheap tier.

>>> snap = {"survey": {"cohorts": [{"week_start": 0.0, "maturity_days": 90,
...     "requests": 6000, "cheap_share": 0.6, "curve": [[0.0, 0.1], [90.0, 0.18]],
...     "flagged": "ticket"}], "ipw": None}, "changes": [], "exposure": []}
>>> print(render_cohorts({"routers": {"r": {"snapshot": {"delayed": snap}}}}))
router r: outcomes months later by weekly cohort
  last routing change: none seen
  survey
    week        requests  cheap  maturity  bad so far  flagged
    1970-01-01     6,000    60%       90d       18.0%  ticket
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def _date(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).date().isoformat()


def _pct(x: float | None, digits: int = 0) -> str:
    return "—" if x is None else f"{x:.{digits}%}"


def render_cohorts(status: dict[str, Any], router_id: str | None = None) -> str:
    """Per router and delayed outcome: the cohorts, newest first (see the module notes)."""
    lines: list[str] = []
    for rid, r in sorted(status.get("routers", {}).items()):
        if router_id and rid != router_id:
            continue
        delayed = (r.get("snapshot") or {}).get("delayed") or {}
        lines.append(f"router {rid}: outcomes months later by weekly cohort")
        if not delayed:
            lines.append("  no delayed outcomes yet (surveys, retention)")
            continue
        changes = delayed.get("changes") or []
        last = changes[-1] if changes else None
        lines.append("  last routing change: " + (
            f"{last['what']} at {datetime.fromtimestamp(last['ts'], UTC):%Y-%m-%d %H:%M} UTC"
            if last else "none seen"))
        for outcome in ("survey", "retention"):
            part = delayed.get(outcome)
            if not part:
                continue
            lines.append(f"  {outcome}")
            lines.append(f"    {'week':<10}{'requests':>10}{'cheap':>7}{'maturity':>10}"
                         f"{'bad so far':>12}  flagged")
            for c in sorted(part["cohorts"], key=lambda c: -c["week_start"]):
                bad = c["curve"][-1][1] if c["curve"] else None
                lines.append(f"    {_date(c['week_start']):<10}{c['requests']:>10,}"
                             f"{_pct(c.get('cheap_share')):>7}{c['maturity_days']:>9}d"
                             f"{_pct(bad, 1):>12}  {c.get('flagged') or ''}".rstrip())
            ipw = part.get("ipw")
            if ipw:
                lines.append(f"    in-band exploration (IPW): cheap {_pct(ipw['cheap'], 1)} "
                             f"against capable {_pct(ipw['capable'], 1)}, effect "
                             f"{ipw['effect']:+.1%} ± {1.96 * ipw['se']:.1%}")
        rows = [x for x in delayed.get("exposure") or [] if x.get("subjects")]
        if rows:
            lines.append("  churn by the share of a subject's interactions routed cheap")
            for x in rows:
                lines.append(f"    {x['exposure']:<6}{x['subjects']:>10,.0f} subjects  "
                             f"{_pct(x['bad_rate'], 1)} churned")
    return "\n".join(lines)
