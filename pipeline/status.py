"""``tierwatch status``: the worker's ``/status`` as a terminal table."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from pipeline.errors import UserError


def fetch(url: str, timeout: float = 10.0) -> dict[str, Any]:
    """The worker's ``/status``; a :class:`UserError` when no tierwatch worker answers."""
    target = url.rstrip("/") + "/status"
    try:
        with urllib.request.urlopen(target, timeout=timeout) as resp:
            body = resp.read()
    except urllib.error.HTTPError as err:
        raise UserError(f"{target} answered HTTP {err.code}",
                        "is a tierwatch worker listening there? check --url or "
                        "TIERWATCH_WEB_PORT") from None
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise UserError(f"no tierwatch worker answers at {url} ({reason})",
                        "start one with `tierwatch worker`, or point --url or "
                        "TIERWATCH_WEB_PORT at the running one") from None
    try:
        doc = json.loads(body)
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        raise UserError(f"{target} did not answer with tierwatch's status JSON",
                        "check --url or TIERWATCH_WEB_PORT")
    return doc


def _pct(rate: dict[str, float] | None) -> str:
    if not rate:
        return "—"
    return f"{rate['value']:.1%} [{rate['lo']:.1%}, {rate['hi']:.1%}]"


def render(status: dict[str, Any], router_id: str | None = None) -> str:
    """Plain-text tables: per router, thresholds, tiers, drift, firing alerts."""
    lines = [f"watermark: {status.get('watermark')}"]
    for rid, r in sorted(status.get("routers", {}).items()):
        if router_id and rid != router_id:
            continue
        snap = r.get("snapshot") or {}
        lines.append(f"\nrouter {rid}  (baseline {r.get('baseline') or 'none'})")
        applied = snap.get("applied")
        if applied:
            lines.append(f"  thresholds  cheap_above {applied['cheap_above']:.3f}  "
                         f"capable_below {applied['capable_below']:.3f}  "
                         f"exploration {applied['exploration_rate']:.3f}")
        lines.append(f"  {'tier':<10}{'routed':>10}  {'satisfaction (7d)':<28}"
                     f"{'support contacts':<28}{'share':>7}")
        for tier, n in sorted(r.get("routed", {}).items()):
            t = (snap.get("tiers") or {}).get(tier, {})
            share = t.get("share")
            lines.append(f"  {tier:<10}{n:>10}  {_pct(t.get('satisfaction')):<28}"
                         f"{_pct(t.get('support_rate')):<28}"
                         f"{'' if share is None else f'{share:.0%}':>7}")
        for who, d in sorted((snap.get("drift") or {}).items()):
            lines.append(f"  drift {who:<10} PSI {d.get('psi') or 0:.3f}  KS {d.get('ks') or 0:.3f}"
                         f"  ({d.get('window')})")
        for a in r.get("firing", []):
            lines.append(f"  FIRING {a['severity']:<6} {a['kind']:<24} {a.get('tier') or '':<8} "
                         f"{a['summary']}")
        rec = r.get("last_recommendation")
        if rec:
            lines.append(f"  last recommendation #{rec['seq']} ({rec['mode']}): cheap_above "
                         f"{rec['previous']['cheap_above']:.3f} → "
                         f"{rec['thresholds']['cheap_above']:.3f}")
    routers = status.get("routers", {})
    for rid, version in sorted((status.get("baselines") or {}).items()):
        if rid not in routers and (not router_id or rid == router_id):
            lines.append(f"\nrouter {rid}  (baseline {version})  no routing events yet")
    return "\n".join(lines)


def print_status(url: str, router_id: str | None = None, timeout: float = 10.0,
                 by: str | None = None) -> int:
    status = fetch(url, timeout)
    if by == "segment":
        from pipeline.segment_status import render_segments

        print(render_segments(status, router_id))
        return 0
    if by == "cohort":
        from pipeline.cohort_status import render_cohorts

        print(render_cohorts(status, router_id))
        return 0
    routers = {*status.get("routers", {}), *(status.get("baselines") or {})}
    if router_id and router_id not in routers:
        known = ", ".join(sorted(routers)) or "none yet"
        raise UserError(f"the worker at {url} has no router {router_id!r} (it has: {known})",
                        "check --router-id")
    print(render(status, router_id))
    return 0
