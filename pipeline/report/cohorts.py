"""The report's "Outcomes months later" section: cohort curves and a table.

:func:`cohort_report` builds a :class:`~pipeline.report.data.CohortReport` from the last
recorded snapshot's ``delayed`` part (:meth:`pipeline.core.delayed.DelayedOutcomes.snapshot`).
:func:`cohort_plot` draws one panel per delayed outcome: each week's cohort as a curve
of its bad share against age (days since the interaction), cohorts from before the last
routing change in grey, those after it in the cheap tier's colour, flagged ones in red.
:func:`cohort_table` lists the cohorts with their latest figures.

Examples
--------
>>> from pipeline.report.example import example_report_data
>>> data = example_report_data()
>>> [p.outcome for p in data.delayed.panels]
['survey', 'retention']
>>> len(cohort_plot(data).axes)
2
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from matplotlib.figure import Figure

from pipeline.report.data import CohortCurve, CohortPanel, CohortReport, ReportData
from pipeline.report.page import esc
from pipeline.report.style import BAD, CHEAP, MUTED
from pipeline.report.summary import fmt_ts
from pipeline.report.svg import new_figure

__all__ = ["cohort_plot", "cohort_report", "cohort_table"]

_TITLES = {"survey": "bad surveys", "retention": "churned subjects"}
MAX_ROWS = 12


def cohort_report(history: Sequence[Mapping[str, Any]]) -> CohortReport | None:
    """The section's data from the newest snapshot that has it; ``None`` without any."""
    latest = next((s["delayed"] for s in reversed(history) if s.get("delayed")), None)
    if latest is None:
        return None
    changes = latest.get("changes") or []
    change = changes[-1] if changes else None
    change_ts = None if change is None else float(change["ts"])
    panels = []
    for outcome in ("survey", "retention"):
        part = latest.get(outcome)
        if part is None:
            continue
        cohorts = [CohortCurve(
            week_start=c["week_start"], maturity_days=int(c["maturity_days"]),
            requests=float(c["requests"]), cheap_share=c.get("cheap_share"),
            points=[(float(a), float(r)) for a, r in c["curve"]], flagged=c.get("flagged"),
            before_change=change_ts is not None and c["week_start"] + 7 * 86400 <= change_ts)
            for c in part["cohorts"]]
        ipw = part.get("ipw")
        panels.append(CohortPanel(outcome=outcome, cohorts=cohorts,
                                  ipw={k: float(v) for k, v in ipw.items()} if ipw else None))
    if not any(p.cohorts for p in panels):
        return None
    return CohortReport(panels=panels, change_ts=change_ts,
                        change=None if change is None else change["what"])


def cohort_plot(data: ReportData) -> Figure | None:
    """One panel per outcome: bad share by age for each cohort."""
    rep = data.delayed
    if rep is None or not rep.panels:
        return None
    fig = new_figure(10.0, 3.2)
    axes = fig.subplots(1, len(rep.panels), squeeze=False)[0]
    for ax, panel in zip(axes, rep.panels, strict=True):
        drawn = 0
        for c in panel.cohorts:
            if not c.points:
                continue
            x = [p[0] for p in c.points]
            y = [100 * p[1] for p in c.points]
            if c.flagged:
                ax.plot(x, y, color=BAD, lw=2.2, marker="o", ms=3, zorder=3)
            elif c.before_change:
                ax.plot(x, y, color=MUTED, lw=1.2, zorder=1)
            else:
                ax.plot(x, y, color=CHEAP, lw=1.4, zorder=2)
            drawn += 1
        title = _TITLES.get(panel.outcome, panel.outcome)
        ax.set_title(title if drawn else f"{title}: none yet", fontsize=10, loc="left")
        ax.set_xlabel("days since the interaction")
        ax.set_ylabel("bad share (%)")
        ax.set_ylim(bottom=0)
        ax.set_xlim(left=0)
    return fig


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{x:.1%}"


def cohort_table(data: ReportData) -> str:
    """The newest cohorts that have outcomes (:data:`MAX_ROWS` per outcome) and every
    flagged one, with their latest bad share; empty without cohorts."""
    rep = data.delayed
    if rep is None:
        return ""
    rows = []
    for panel in rep.panels:
        newest = [c for c in sorted(panel.cohorts, key=lambda c: -c.week_start) if c.points]
        keep = {c.week_start for c in newest[:MAX_ROWS]} | {c.week_start for c in newest
                                                          if c.flagged}
        shown = [c for c in newest if c.week_start in keep]
        if not shown:
            rows.append(f"<tr><td>{esc(panel.outcome)}</td><td colspan=\"7\">no cohort has "
                        "outcomes yet</td></tr>")
        for c in shown:
            last = c.points[-1]
            when = "before" if c.before_change else ("after" if rep.change_ts else "")
            rows.append(
                f"<tr><td>{esc(panel.outcome)}</td><td>{esc(fmt_ts(c.week_start)[:10])}</td>"
                f"<td>{when}</td><td>{c.requests:,.0f}</td><td>{_pct(c.cheap_share)}</td>"
                f"<td>{c.maturity_days}</td><td>{_pct(last[1])}</td>"
                f"<td>{esc(c.flagged or '')}</td></tr>")
    change = (f"Last routing change: {esc(rep.change or '')}, {esc(fmt_ts(rep.change_ts))} "
              f"UTC." if rep.change_ts is not None else "No routing change seen.")
    ipw = "".join(
        f" In-band exploration ({esc(p.outcome)}): cheap {_pct(p.ipw['cheap'])} against "
        f"capable {_pct(p.ipw['capable'])} (IPW, ±{1.96 * p.ipw['se']:.1%})."
        for p in rep.panels if p.ipw)
    return (f'<p class="lede">{change}{ipw}</p>'
            '<table class="alerts cohorts"><thead><tr><th>outcome</th><th>cohort week</th>'
            "<th>vs change</th><th>requests</th><th>cheap share</th><th>maturity (days)</th>"
            "<th>bad share so far</th><th>flagged</th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>")
