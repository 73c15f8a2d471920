"""The self-contained HTML report of one router: :func:`render_report`, :func:`write_report`.

The page has a header, a strip of headline numbers, a colour key, the timeline, then
nine numbered sections, each with one plot (inline SVG, wrapped in
``<figure class="plot" data-plot="<name>">``) and the alert table in the last one. A
plot without data shows a "no data" note in its place. No scripts, no external assets:
the file can be mailed, archived or opened offline. Rendering is deterministic: the same
data gives the same bytes.

Examples
--------
>>> from pipeline.report.example import example_report_data
>>> page = render_report(example_report_data())
>>> page.startswith("<!DOCTYPE html>"), page.count('class="plot"'), "<script" in page
(True, 10, False)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import matplotlib as mpl
from matplotlib.figure import Figure

from pipeline.report.alerts import alert_rows
from pipeline.report.cohorts import cohort_plot, cohort_table
from pipeline.report.data import ReportData
from pipeline.report.page import (
    CSS,
    alert_table,
    colour_keys,
    esc,
    headline_cards,
    timeline_list,
)
from pipeline.report.plots_score import band_quality_plot, histogram_plot
from pipeline.report.plots_time import (
    alerts_plot,
    drift_plot,
    economics_plot,
    mdd_plot,
    satisfaction_plot,
    thresholds_plot,
)
from pipeline.report.segments import segment_plot, segment_table
from pipeline.report.style import RC
from pipeline.report.summary import fmt_ts
from pipeline.report.svg import figure_to_svg


@dataclass(frozen=True)
class Section:
    """One numbered section: its anchor, title, what to look for, and its plot."""

    anchor: str
    title: str
    lede: str
    plot: str
    build: Callable[[ReportData], Figure | None]
    empty: str


SECTIONS: tuple[Section, ...] = (
    Section("trap", "The picture of the trap",
            "The aggregate satisfaction a dashboard shows, next to each tier's. A flat "
            "aggregate can hide a tier that is getting worse: the shift of traffic to the "
            "cheap tier and the drop of its quality cancel out in the average. Bands are 95% "
            "intervals; shaded spans are quality alerts.",
            "satisfaction", satisfaction_plot, "No satisfaction data in this period."),
    Section("drift", "Confidence drift",
            "How far the router's score distribution has moved from its training baseline, "
            "for the whole router and within each tier (against the baseline truncated to "
            "the tier's score interval). Shaded spans are drift alerts.",
            "drift", drift_plot, "No drift evaluations in this period."),
    Section("histogram", "Where the scores moved",
            "The live score distribution against the baseline at the first drift alert. "
            "Bins hold equal baseline mass, so bars are drawn as densities; the lower panel "
            "shows which bins gained (red) or lost (green) traffic.",
            "histogram", histogram_plot, "No drift alert, so no histogram to show."),
    Section("bands", "Quality by score band",
            "Satisfaction per score band and tier: bar height is the interval, the tick the "
            "estimate. The tiers serve the same queries only in the uncertain band, where "
            "exploration traffic makes the comparison causal.",
            "band_quality", band_quality_plot, "No per-band quality evaluated yet."),
    Section("segments", "Where the cheap tier fails",
            "The segment values (intent, plan, locale, ... as the router sends them) that "
            "carry the cheap tier's excess support contacts: each value's share of the "
            "excess and its rate against its own reference period (Benjamini-Hochberg "
            "across values). Below, each top value's contacts per 1,000 requests (7-day "
            "window) against its reference (dashed). Counts come from bounded heavy-hitter "
            "sketches: at most 1/33 of the tier's requests off per value.",
            "segments", segment_plot, "No segments: routing events carry no segment."),
    Section("thresholds", "Thresholds",
            "The thresholds tierwatch recommended (dotted) and those the router applied "
            "(solid). While drift fires, recommendations only move toward the capable tier.",
            "thresholds", thresholds_plot, "No threshold recommendations or applications."),
    Section("economics", "Savings against hidden cost",
            "What sending traffic to the cheap tier saves in inference, against what it "
            "costs in support contacts and lost quality; the net value below.",
            "economics", economics_plot, "No economics evaluated in this period."),
    Section("delayed", "Outcomes months later",
            "Each week's interactions (a cohort) and the share of their delayed outcomes "
            "that were bad (90-day surveys below 0.5; subjects who churned within 6 months), "
            "by days since the interaction, as the cohort matures. Grey: cohorts before the "
            "last routing change; orange: after it; red: flagged by delayed_outcome_gap, "
            "which compares a cohort with those before the change at equal maturity only.",
            "cohorts", cohort_plot, "No delayed outcomes: no survey or retention joined yet."),
    Section("blindness", "How blind is each tier?",
            "The smallest satisfaction drop each tier's feedback could detect over its "
            "window. When feedback is sparse, this rises and a real drop can go unseen; "
            "shaded spans are feedback-starvation alerts.",
            "mdd", mdd_plot, "No minimum detectable drop evaluated."),
    Section("alerts", "Alerts",
            "Every alert of the period, one row per alert. Each links to its runbook "
            "section.",
            "alerts", alerts_plot, "No alerts in this period."),
)


def _plot(section: Section, data: ReportData) -> str:
    with mpl.rc_context(RC):
        fig = section.build(data) if data.series else None
        body = (figure_to_svg(fig, section.plot) if fig is not None
                else f'<p class="nodata">{esc(section.empty)}</p>')
    return (f'<figure class="plot" data-plot="{section.plot}" '
            f'aria-label="{esc(section.title)}">{body}</figure>')


def _section(n: int, section: Section, data: ReportData) -> str:
    extra = ""
    if section.plot == "alerts":
        extra = alert_table(alert_rows(data.alerts), data.runbook_base, data.tier_names)
    elif section.plot == "segments":
        extra = segment_table(data)
    elif section.plot == "cohorts":
        extra = cohort_table(data)
    return (f'<section class="panel" id="{section.anchor}"><h2><span class="num">{n}</span>'
            f'{esc(section.title)}</h2><p class="lede">{esc(section.lede)}</p>'
            f"{_plot(section, data)}{extra}</section>")


def render_report(data: ReportData) -> str:
    """The full HTML page of the report.

    Parameters
    ----------
    data
        What to show; see :mod:`pipeline.report.data`.

    Returns
    -------
    str
        A complete, self-contained HTML document (UTF-8 text).
    """
    meta = [f"router <code>{esc(data.router_id)}</code>"]
    if data.series:
        meta.append(f"{esc(fmt_ts(data.series[0].ts))} → {esc(fmt_ts(data.series[-1].ts))} "
                    f"UTC · {len(data.series)} evaluations")
    if data.onset_ts is not None:
        meta.append(f"onset {esc(fmt_ts(data.onset_ts))} UTC")
    toc = "".join(f'<a href="#{s.anchor}">{i}. {esc(s.title)}</a>'
                  for i, s in enumerate(SECTIONS, 1))
    timeline = (f'<section class="panel" id="timeline"><h2>Timeline</h2>'
                f"{timeline_list(data.timeline)}</section>" if data.timeline else "")
    sections = "".join(_section(i, s, data) for i, s in enumerate(SECTIONS, 1))
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(data.title)}</title><style>{CSS}</style></head><body><main>"
        f'<header><div class="eyebrow">tierwatch report</div><h1>{esc(data.title)}</h1>'
        f'<p class="meta">{" · ".join(meta)}</p></header>'
        f"{headline_cards(data.headline)}"
        f"{colour_keys(data.tier_names, data.onset_ts is not None)}"
        f'<nav class="toc">{toc}</nav>{timeline}{sections}'
        f"<footer>Generated from <code>{esc(data.generated_from)}</code> by tierwatch. "
        f"Self-contained: no scripts, no external assets. All times UTC.</footer>"
        "</main></body></html>\n"
    )


def write_report(data: ReportData, path: str | Path) -> Path:
    """Render the report and write it to ``path`` (UTF-8); return the path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_report(data), encoding="utf-8")
    return out
