"""``tierwatch status``: the worker's ``/status`` as a terminal table."""

from __future__ import annotations

import json
import urllib.request
from typing import Any


def fetch(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url.rstrip("/") + "/status", timeout=10) as resp:
        return dict(json.loads(resp.read()))


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
    return "\n".join(lines)


def print_status(url: str, router_id: str | None = None, by: str | None = None) -> int:
    status = fetch(url)
    if by == "segment":
        from pipeline.segment_status import render_segments

        print(render_segments(status, router_id))
        return 0
    print(render(status, router_id))
    return 0
