"""Segment attribution in alerts, and the ``segment_share_shift`` alert.

Kept apart from :mod:`pipeline.core.router_state` so that the router's evaluation only
calls :func:`annotate` on a firing quality/contact alert and :func:`share_shift_alerts`
once per evaluation.

>>> from pipeline.core.segments import SegmentCounts
>>> sc = SegmentCounts(reference=(0.0, 86400.0))
>>> annotate(sc, "support_contact_rise", "cheap", "support_contact", "1d", "s", {}, 1e6)
('s', {'segments': {'measure': 'contacts', 'window': '1d', 'values': [], 'top': []}})
"""

from __future__ import annotations

from typing import Any, Final

from pipeline.core.segments import DAY, Attribution, SegmentCounts, ShareShift, format_attribution
from pipeline.schemas import AlertKind

__all__ = ["KIND", "annotate", "share_shift_alerts", "share_shift_summary"]

KIND: Final[AlertKind] = "segment_share_shift"
_WHAT = {"contacts": "contacts", "feedback_bad": "bad feedback"}


def _measure(kind: AlertKind, signal: str, statistics: dict[str, Any]) -> str:
    if kind == "support_contact_rise":
        return "contacts"
    if kind == "boundary_degradation":
        signal = str((statistics.get("test") or {}).get("signal") or "support_contact")
    return "contacts" if signal == "support_contact" else "feedback_bad"


def annotate(segments: SegmentCounts, kind: AlertKind, tier: str, signal: str, window: str,
             summary: str, statistics: dict[str, Any], at: float,
             ) -> tuple[str, dict[str, Any]]:
    """Add the segment attribution of a firing alert to its statistics and summary.

    The window is the alert's (``7d`` → seven days; anything shorter → one day).
    The summary names up to ``config.top`` significant values (BH-controlled),
    e.g. ``top segments: intent=billing: 68% of the excess contacts, 3.9× its
    reference``.
    """
    measure = _measure(kind, signal, statistics)
    seconds = 7 * DAY if window == "7d" else DAY
    rows = segments.attribute(tier, at, seconds, measure=measure)
    top = [a for a in rows if a.significant][: segments.config.top]
    stats = {**statistics, "segments": {
        "measure": measure, "window": "7d" if seconds > DAY else "1d",
        "values": [a.to_dict() for a in rows[:20]],
        "top": [a.to_dict() for a in top]}}
    if top:
        what = _WHAT.get(measure, measure)
        summary += "; top segments: " + "; ".join(format_attribution(a, what) for a in top)
    return summary, stats


def share_shift_summary(s: ShareShift) -> str:
    text = (f"{s.tier} tier: {s.key}={s.value} is {s.share:.0%} of its requests on the last "
            f"day vs {s.reference_share:.0%} in the reference (a new cohort?)")
    if s.quality_effect and s.quality_ratio is not None:
        text += f"; its contact rate is {s.quality_ratio:.1f}× the tier's reference"
    return text


def share_shift_alerts(segments: SegmentCounts, tier: str, at: float,
                       ) -> list[tuple[str, str, dict[str, Any]]]:
    """``(detail, summary, statistics)`` of each share shift of ``tier`` at ``at``.

    ``detail`` is ``key=value`` (one alert per value); ``statistics["severity"]`` is
    ``info``, or ``ticket`` when the value also carries a quality effect.
    """
    out = []
    for s in segments.share_shifts(tier, at):
        stats = {**s.to_dict(), "severity": "ticket" if s.quality_effect else "info",
                 "alpha": segments.config.share_alpha}
        out.append((f"{s.key}={s.value}", share_shift_summary(s), stats))
    return out


def top_attributions(statistics: dict[str, Any]) -> list[Attribution]:
    """The attributions an alert's statistics carry (for the report and the CLI)."""
    seg = statistics.get("segments") or {}
    return [Attribution(a["key"], a["value"], a["observed"], a["expected"], a["exposure"],
                        a["reference_rate"], a["new"], a["p_value"], a["significant"],
                        a["share"], a.get("traffic_share", 0.0)) for a in seg.get("top", [])]
