"""The time plots: satisfaction, drift, thresholds, economics, blindness and alerts.

Each builder takes the :class:`~pipeline.report.data.ReportData` and returns a figure, or
``None`` when it has nothing to draw. Every time plot spans the evaluated period, marks
the onset with a dashed vertical line and shades the spans during which alerts of the
kinds it is about were firing.

Examples
--------
>>> from pipeline.report.example import example_report_data
>>> fig = satisfaction_plot(example_report_data())
>>> [ax.get_title() for ax in fig.axes][:2]
['Aggregate: what the dashboard shows', 'Per tier: what tierwatch shows']
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from pipeline.report.alerts import (
    ALL_KINDS,
    DRIFT_KINDS,
    QUALITY_KINDS,
    STARVATION_KINDS,
    alert_rows,
)
from pipeline.report.alerts import firing_spans as _spans
from pipeline.report.axes import (
    band,
    has_values,
    mark_onset,
    marker_handles,
    money_axis,
    percent_axis,
    rate_series,
    shade_spans,
    tier_handles,
    time_axis,
    to_dates,
    value_series,
)
from pipeline.report.data import ReportData, Snapshot, ThresholdPoint
from pipeline.report.style import (
    AGGREGATE,
    BAD,
    CAPABLE,
    CHEAP,
    GOOD,
    MUTED,
    ONSET_STYLE,
    SEVERITY,
    tier_color,
)
from pipeline.report.svg import new_figure

WIDTH = 10.0


def _decorate(data: ReportData, axes: Sequence[Axes], kinds: Collection[str],
              tier: str | None = None) -> bool:
    """Time axis, onset and alert spans on each axes; whether any span was drawn."""
    t0, t1 = data.series[0].ts, data.series[-1].ts
    spans = _spans(alert_rows(data.alerts), kinds, t1, tier)
    for ax in axes:
        time_axis(ax, t0, t1)
        shade_spans(ax, spans)
        spec = ax.get_subplotspec()
        mark_onset(ax, data.onset_ts, label=spec is None or spec.rowspan.start == 0)
    return bool(spans)


def _legend(fig: Figure, handles: Sequence[Line2D | Patch]) -> None:
    fig.legend(handles=list(handles), loc="outside upper right", ncol=len(handles),
               handlelength=2.2, columnspacing=1.6)


def _tier_get(t: str, attr: str) -> Callable[[Snapshot], Any]:
    """Getter of one attribute of tier ``t`` in a snapshot (``None`` without the tier)."""
    return lambda s: getattr(s.tiers[t], attr) if t in s.tiers else None


def _drift_get(key: str, attr: str) -> Callable[[Snapshot], Any]:
    """Getter of ``psi`` or ``ks`` of drift ``key`` in a snapshot."""
    return lambda s: getattr(s.drift[key], attr) if key in s.drift else None


def _mix_panels(data: ReportData, share_ax: Axes, support_ax: Axes) -> None:
    """Traffic share and support contacts per 1,000 requests, per tier."""
    tiers = data.tier_names
    for t in tiers:
        color = tier_color(t, tiers)
        x, v = value_series(data.series, _tier_get(t, "share"))
        share_ax.plot(x, v, color=color, lw=1.9, zorder=3)
        x, v, lo, hi = rate_series(data.series, _tier_get(t, "support_rate"))
        band(support_ax, x, v * 1000, lo * 1000, hi * 1000, color, t)
    share_ax.set_title("Traffic share")
    percent_axis(share_ax)
    share_ax.set_ylim(0, 1)
    # by the requests decided in the last 7 days, the contacts still to come estimated
    support_ax.set_title("Support contacts per 1,000 requests (by request time)")
    support_ax.set_ylim(bottom=0)


def satisfaction_plot(data: ReportData) -> Figure | None:
    """Aggregate satisfaction next to per-tier satisfaction: the picture of the trap.

    Below them, when the data has them: each tier's traffic share (the mix that keeps
    the aggregate flat) and its support contacts (the complaints that bypass the votes).
    """
    tiers = data.tier_names
    ax_, av, alo, ahi = rate_series(data.series, lambda s: s.aggregate)
    per_tier = {t: rate_series(data.series, _tier_get(t, "satisfaction")) for t in tiers}
    if not (has_values(av) or any(has_values(r[1]) for r in per_tier.values())):
        return None
    mix = any(has_values(value_series(data.series, _tier_get(t, "share"))[1],
                         rate_series(data.series, _tier_get(t, "support_rate"))[1])
              for t in tiers)
    fig = new_figure(WIDTH, 6.1 if mix else 3.9)
    grid = fig.subplots(2 if mix else 1, 2, sharex=True, squeeze=False,
                        height_ratios=[2.6, 1.3] if mix else [1])
    left, right = grid[0]
    right.sharey(left)
    band(left, ax_, av, alo, ahi, AGGREGATE, "aggregate", alpha=0.14)
    right.plot(ax_, av, color=AGGREGATE, lw=1.0, alpha=0.45, zorder=2)
    for t, (x, v, lo, hi) in per_tier.items():
        band(right, x, v, lo, hi, tier_color(t, tiers), t)
    left.set_title("Aggregate: what the dashboard shows")
    right.set_title("Per tier: what tierwatch shows")
    left.set_ylabel("satisfaction")
    percent_axis(left)
    values = np.concatenate([av, *(r[1] for r in per_tier.values())])
    lo_v, hi_v = np.nanmin(values), np.nanmax(values)
    pad = max(0.03, 0.25 * (hi_v - lo_v))
    left.set_ylim(max(0.0, lo_v - pad), min(1.0, hi_v + pad * 0.6))
    if mix:
        _mix_panels(data, grid[1][0], grid[1][1])
    spans = _decorate(data, list(grid.flat), QUALITY_KINDS)
    _legend(fig, tier_handles(["aggregate", *tiers], tiers)
            + marker_handles(data.onset_ts is not None, spans, "quality alert firing"))
    return fig


def drift_plot(data: ReportData) -> Figure | None:
    """PSI and KS over time for the whole router and each tier."""
    keys: dict[str, None] = {}
    for s in data.series:
        keys.update(dict.fromkeys(s.drift))
    order = sorted(keys, key=lambda k: (k != "router", data.tier_names.index(k)
                                        if k in data.tier_names else 99, k))
    psi = {k: value_series(data.series, _drift_get(k, "psi")) for k in order}
    ks = {k: value_series(data.series, _drift_get(k, "ks")) for k in order}
    if not any(has_values(v) for _, v in [*psi.values(), *ks.values()]):
        return None
    windows = sorted({d.window for s in data.series for d in s.drift.values() if d.window})
    suffix = f"  ·  window {', '.join(windows)}" if windows else ""
    fig = new_figure(WIDTH, 5.2)
    top, bottom = fig.subplots(2, 1, sharex=True)
    for ax, stat in ((top, psi), (bottom, ks)):
        for k, (x, v) in stat.items():
            ax.plot(x, v, color=tier_color(k, data.tier_names), lw=2.0 if k == "router" else 1.7,
                    label=k, zorder=3)
        ax.set_ylim(bottom=0)
    top.set_title("PSI against the baseline (coarse bins)" + suffix)
    bottom.set_title("KS distance against the baseline (fine bins)" + suffix)
    top.set_ylabel("PSI")
    bottom.set_ylabel("KS")
    spans = _decorate(data, [top, bottom], DRIFT_KINDS)
    _legend(fig, tier_handles(order, data.tier_names)
            + marker_handles(data.onset_ts is not None, spans, "drift alert firing"))
    return fig


def _threshold_lines(ax: Axes, x: np.ndarray, pts: list[ThresholdPoint | None],
                     recommended: bool) -> None:
    nan = float("nan")
    for attr, color in (("cheap_above", CHEAP), ("capable_below", CAPABLE)):
        y = np.array([nan if p is None else getattr(p, attr) for p in pts])
        if recommended:
            ax.plot(x, y, color=color, lw=1.6, ls=":", drawstyle="steps-post", zorder=4)
        else:
            ax.plot(x, y, color=color, lw=2.4, drawstyle="steps-post", zorder=3)


def thresholds_plot(data: ReportData) -> Figure | None:
    """Thresholds over time: recommended (dotted) and applied (solid)."""
    rec = [s.recommended for s in data.series]
    app = [s.applied for s in data.series]
    if not any(p is not None for p in rec + app):
        return None
    x = to_dates([s.ts for s in data.series])
    fig = new_figure(WIDTH, 4.8)
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1.25])
    nan = float("nan")
    _threshold_lines(top, x, app, recommended=False)
    _threshold_lines(top, x, rec, recommended=True)
    top.set_title("Score thresholds (the uncertain band lies between the two)")
    top.set_ylabel("score")
    for pts, style in ((app, {"lw": 2.2, "color": AGGREGATE}),
                       (rec, {"lw": 1.5, "color": AGGREGATE, "ls": ":"})):
        y = np.array([nan if p is None else p.exploration_rate for p in pts])
        bottom.plot(x, y, drawstyle="steps-post", **style)
    bottom.set_title("Exploration rate in the uncertain band")
    percent_axis(bottom)
    bottom.set_ylim(bottom=0)
    spans = _decorate(data, [top, bottom], ALL_KINDS - STARVATION_KINDS)
    handles: list[Line2D | Patch] = [
        Line2D([], [], color=CHEAP, lw=2.4, label="cheap_above"),
        Line2D([], [], color=CAPABLE, lw=2.4, label="capable_below"),
        Line2D([], [], color=AGGREGATE, lw=2.2, label="applied"),
        Line2D([], [], color=AGGREGATE, lw=1.6, ls=":", label="recommended"),
    ]
    _legend(fig, handles + marker_handles(data.onset_ts is not None, spans))
    return fig


def economics_plot(data: ReportData) -> Figure | None:
    """Inference savings vs hidden cost per day, and the net value per day."""
    def get(attr: str) -> tuple[np.ndarray, np.ndarray]:
        return value_series(data.series, lambda s: getattr(s.economics, attr)
                            if s.economics is not None else None)
    x, sav = get("savings_per_day")
    _, hid = get("hidden_cost_per_day")
    _, net = get("net_value_per_day")
    if not has_values(sav, hid, net):
        return None
    fig = new_figure(WIDTH, 5.0)
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[1.3, 1])
    top.plot(x, sav, color=GOOD, lw=2.1, label="inference savings / day", zorder=3)
    top.plot(x, hid, color=BAD, lw=2.1, label="hidden cost / day", zorder=3)
    top.fill_between(x, sav, hid, where=hid > sav, color=BAD, alpha=0.12, lw=0,
                     interpolate=True)
    top.set_title("What routing cheap saves, and what it quietly costs")
    top.set_ylim(bottom=0)
    bottom.axhline(0, color=MUTED, lw=0.9)
    bottom.fill_between(x, 0, net, where=net >= 0, color=GOOD, alpha=0.22, lw=0,
                        interpolate=True)
    bottom.fill_between(x, 0, net, where=net < 0, color=BAD, alpha=0.22, lw=0, interpolate=True)
    bottom.plot(x, net, color=AGGREGATE, lw=2.0, label="net value / day", zorder=3)
    bottom.set_title("Net value of the router per day")
    for ax in (top, bottom):
        money_axis(ax)
    spans = _decorate(data, [top, bottom], QUALITY_KINDS)
    handles: list[Line2D | Patch] = [
        Line2D([], [], color=GOOD, lw=2.2, label="savings"),
        Line2D([], [], color=BAD, lw=2.2, label="hidden cost"),
        Line2D([], [], color=AGGREGATE, lw=2.2, label="net value"),
    ]
    _legend(fig, handles + marker_handles(data.onset_ts is not None, spans,
                                          "quality alert firing"))
    return fig


def mdd_plot(data: ReportData) -> Figure | None:
    """Minimum detectable drop of satisfaction per tier over time."""
    tiers = data.tier_names
    lines = {t: value_series(data.series, _tier_get(t, "mdd")) for t in tiers}
    if not any(has_values(v) for _, v in lines.values()):
        return None
    fig = new_figure(WIDTH, 3.4)
    ax = fig.subplots()
    for t, (x, v) in lines.items():
        ax.plot(x, v, color=tier_color(t, tiers), lw=2.0, label=t, zorder=3)
    ax.set_title("Smallest satisfaction drop each tier's feedback could detect")
    ax.set_ylabel("min. detectable drop")
    percent_axis(ax)
    ax.set_ylim(bottom=0)
    spans = _decorate(data, [ax], STARVATION_KINDS)
    _legend(fig, tier_handles(tiers, tiers)
            + marker_handles(data.onset_ts is not None, spans, "feedback starvation"))
    return fig


def alerts_plot(data: ReportData) -> Figure | None:
    """One bar per alert over its firing spans, coloured by severity."""
    rows = alert_rows(data.alerts)
    if not rows or not data.series:
        return None
    end = data.series[-1].ts
    fig = new_figure(WIDTH, 1.3 + 0.34 * len(rows))
    ax = fig.subplots()
    for i, r in enumerate(rows):
        for s, e in r.spans:
            a, b = to_dates([s, end if e is None else e])
            ax.broken_barh([(float(a), float(max(b - a, 0.25)))], (i - 0.32, 0.64),
                           color=SEVERITY.get(r.severity, MUTED), lw=0, zorder=3)
    ax.set_yticks(range(len(rows)),
                  [f"{r.kind}{' · ' + r.tier if r.tier else ''}" for r in rows])
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.grid(axis="x", color="#eef0f3")
    ax.grid(axis="y", visible=False)
    ax.tick_params(axis="y", length=0)
    ax.set_title("When each alert was firing")
    time_axis(ax, data.series[0].ts, end)
    mark_onset(ax, data.onset_ts)
    handles: list[Line2D | Patch] = [Patch(color=c, label=k) for k, c in SEVERITY.items()]
    if data.onset_ts is not None:
        handles.append(Line2D([], [], label="onset", **{**ONSET_STYLE, "zorder": None}))
    _legend(fig, handles)
    return fig
