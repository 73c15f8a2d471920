"""``tierwatch status --by segment``: per tier and segment key, the top values' outcomes.

Reads the ``segments`` part of each router's ``/status`` snapshot (see
:meth:`pipeline.core.segments.SegmentCounts.table`) and the segment attribution that
firing alerts carry.
"""

from __future__ import annotations

from typing import Any


def _per_1000(x: float | None) -> str:
    return "—" if x is None else f"{1000 * x:.1f}"


def render_segments(status: dict[str, Any], router_id: str | None = None) -> str:
    """Per router, tier and key: requests, share and support contacts per 1,000 requests
    (7 days) against the value's reference, then the segments named by firing alerts."""
    lines: list[str] = []
    for rid, r in sorted(status.get("routers", {}).items()):
        if router_id and rid != router_id:
            continue
        lines.append(f"router {rid}: support contacts per 1,000 requests by segment (7d)")
        segments = (r.get("snapshot") or {}).get("segments") or {}
        if not any(segments.values()):
            lines.append("  no segments seen (routing events carry no `segment`)")
        for tier, keys in sorted(segments.items()):
            for key, rows in sorted(keys.items()):
                lines.append(f"  {tier} / {key}")
                lines.append(f"    {'value':<24}{'requests':>10}{'share':>8}{'contacts':>10}"
                             f"{'per 1k':>9}{'ref /1k':>9}{'ratio':>7}")
                for row in rows:
                    rate, ref = row.get("rate"), row.get("reference_rate")
                    ratio = f"{rate / ref:.1f}×" if rate is not None and ref else "—"
                    lines.append(f"    {str(row['value'])[:23]:<24}{row['requests']:>10.0f}"
                                 f"{row['share']:>8.0%}{row['contacts']:>10.0f}"
                                 f"{_per_1000(rate):>9}{_per_1000(ref):>9}{ratio:>7}")
        for a in r.get("firing", []):
            seg = (a.get("statistics") or {}).get("segments") or {}
            if a["kind"] == "segment_share_shift":
                lines.append(f"  SHARE SHIFT {a['severity']}: {a['summary']}")
            for top in seg.get("top", []):
                lines.append(f"  {a['kind']} [{a.get('tier')}]: {top['key']}={top['value']} "
                             f"{top['share']:.0%} of the excess, "
                             f"{top['rate_ratio'] or 0:.1f}× its reference "
                             f"(p={top['p_value']:.2g})")
    return "\n".join(lines)
