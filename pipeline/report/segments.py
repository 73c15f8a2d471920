"""The report's "where the cheap tier fails" section: a ranked table, small multiples.

:func:`segment_report` builds a :class:`~pipeline.report.data.SegmentReport` from a
monitor's recorded snapshots (their ``segments`` tables) and the alerts: values are
ranked by the attribution of the first quality/contact alert on the cheap tier that
carried one, else by their contact rate against their reference.
:func:`segment_plot` draws one small panel per top value (its support contacts per
1,000 requests over time against its reference rate); :func:`segment_table` the table.

Examples
--------
>>> from pipeline.report.example import example_report_data
>>> data = example_report_data()
>>> data.segments is not None and data.segments.rows[0].value
'billing'
>>> len(segment_plot(data).axes) == len(data.segments.series)
True
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from matplotlib.figure import Figure

from pipeline.report.axes import mark_onset, time_axis, to_dates
from pipeline.report.data import ReportData, SegmentReport, SegmentRow
from pipeline.report.page import esc
from pipeline.report.style import BAD, CHEAP, MUTED, TEXT
from pipeline.report.svg import new_figure
from pipeline.schemas import Alert

__all__ = ["segment_plot", "segment_report", "segment_table"]

TOP = 6
QUALITY = ("support_contact_rise", "tier_quality_drop", "boundary_degradation")


def _label(key: str, value: str) -> str:
    return f"{key}={value}"


def segment_report(history: Sequence[Mapping[str, Any]], alerts: Sequence[Alert],
                   tier: str = "cheap", top: int = TOP) -> SegmentReport | None:
    """The section's data from recorded snapshots and alerts; ``None`` without segments."""
    latest = next((s.get("segments", {}).get(tier) for s in reversed(history)
                   if s.get("segments", {}).get(tier)), None)
    if not latest:
        return None
    table = {(key, r["value"]): r for key, rows in latest.items() for r in rows
             if r["value"] != "(other)"}
    attributed = next((a for a in sorted(alerts, key=lambda a: a.ts)
                       if a.state == "firing" and a.tier == tier and a.kind in QUALITY
                       and (a.statistics.get("segments") or {}).get("values")), None)
    rows: list[SegmentRow] = []
    if attributed is not None:
        source = (f"attribution of the first {attributed.kind} on the {tier} tier, "
                  f"{attributed.ts:%Y-%m-%d %H:%M} UTC")
        for v in attributed.statistics["segments"]["values"]:
            if v["excess"] <= 0 and not v["significant"]:
                continue
            t = table.get((v["key"], v["value"]), {})
            ratio = v.get("rate_ratio")
            rows.append(SegmentRow(
                key=v["key"], value=v["value"], requests=float(t.get("requests") or 0.0),
                share=float(t.get("share") or v.get("traffic_share") or 0.0),
                rate=t.get("rate"), reference_rate=t.get("reference_rate"),
                excess_share=v["share"],
                rate_ratio=ratio if ratio is not None and math.isfinite(ratio) else None,
                significant=bool(v["significant"])))
    else:
        source = f"contact rate against each value's reference, last 7 days ({tier} tier)"
        for (key, value), t in table.items():
            rate, ref = t.get("rate"), t.get("reference_rate")
            rows.append(SegmentRow(key=key, value=value, requests=float(t["requests"]),
                                   share=float(t["share"]), rate=rate, reference_rate=ref,
                                   rate_ratio=rate / ref if rate is not None and ref else None))
        rows.sort(key=lambda r: (-(r.rate_ratio or 0.0), -r.requests, r.key, r.value))
    rows = rows[:top]
    series: dict[str, list[tuple[float, float | None]]] = {}
    for r in rows:
        pts: list[tuple[float, float | None]] = []
        for snap in history:
            found = [x for x in snap.get("segments", {}).get(tier, {}).get(r.key, [])
                     if x["value"] == r.value]
            pts.append((float(snap["ts"]), found[0].get("rate") if found else None))
        series[_label(r.key, r.value)] = pts
    return SegmentReport(tier=tier, source=source, rows=rows, series=series)


def segment_plot(data: ReportData) -> Figure | None:
    """Small multiples: each top value's support contacts per 1,000 requests (7d)."""
    seg = data.segments
    if seg is None or not seg.series:
        return None
    refs = {_label(r.key, r.value): r.reference_rate for r in seg.rows}
    n = len(seg.series)
    cols = min(3, n)
    nrows = math.ceil(n / cols)
    fig = new_figure(10.0, 2.4 * nrows + 0.4)
    axes = fig.subplots(nrows, cols, squeeze=False, sharex=True)
    t0 = min(p[0] for pts in seg.series.values() for p in pts)
    t1 = max(p[0] for pts in seg.series.values() for p in pts)
    for i, (label, pts) in enumerate(seg.series.items()):
        ax = axes[i // cols][i % cols]
        x = to_dates([p[0] for p in pts])
        y = [math.nan if p[1] is None else 1000 * p[1] for p in pts]
        ax.plot(x, y, color=CHEAP, lw=1.8)
        ref = refs.get(label)
        if ref is not None:
            ax.axhline(1000 * ref, color=MUTED, lw=1.2, ls=(0, (4, 3)))
        ax.set_title(label, fontsize=10, loc="left", color=BAD if i == 0 else TEXT)
        ax.set_ylim(bottom=0)
        time_axis(ax, t0, t1)
        mark_onset(ax, data.onset_ts, label=False)
        if i % cols == 0:
            ax.set_ylabel("contacts / 1k")
    for j in range(n, nrows * cols):
        axes[j // cols][j % cols].set_visible(False)
    return fig


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{x:.0%}"


def _k(x: float | None) -> str:
    return "—" if x is None else f"{1000 * x:.1f}"


def _ratio(x: float | None) -> str:
    return "—" if x is None else f"{x:.1f}×"


def segment_table(data: ReportData) -> str:
    """The ranked table (HTML), or an empty string without segments."""
    seg = data.segments
    if seg is None or not seg.rows:
        return ""
    body = "".join(
        f"<tr><td>{i}</td><td><code>{esc(r.key)}={esc(r.value)}</code></td>"
        f"<td>{_pct(r.excess_share)}</td><td>{_ratio(r.rate_ratio)}</td><td>{_k(r.rate)}</td><td>{_k(r.reference_rate)}</td>"
        f"<td>{r.requests:,.0f}</td><td>{_pct(r.share)}</td>"
        f"<td>{'yes' if r.significant else ''}</td></tr>"
        for i, r in enumerate(seg.rows, 1))
    return (f'<p class="lede">Ranked by the {esc(seg.source)}.</p>'
            '<table class="alerts segments"><thead><tr><th>#</th><th>segment</th>'
            "<th>share of the excess</th><th>rate ratio</th><th>contacts / 1k</th>"
            "<th>reference / 1k</th><th>requests (7d)</th><th>share of tier</th>"
            "<th>significant (BH)</th></tr></thead>"
            f"<tbody>{body}</tbody></table>")
