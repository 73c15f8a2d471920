"""The score-axis plots: the live histogram against the baseline, and quality by band.

Bins and bands come from baseline quantiles, so they have unequal widths: bars are drawn
as densities (probability / bin width) over the score, which keeps their areas honest,
and the router's thresholds can be drawn on the same axis.

Examples
--------
>>> from pipeline.report.example import example_report_data
>>> fig = histogram_plot(example_report_data())
>>> len(fig.axes)
2
"""

from __future__ import annotations

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle

from pipeline.report.axes import percent_axis, tier_handles
from pipeline.report.data import ReportData, ThresholdPoint
from pipeline.report.style import (
    AGGREGATE,
    BAD,
    CAPABLE,
    CHEAP,
    GOOD,
    MUTED,
    tier_color,
)
from pipeline.report.svg import new_figure

WIDTH = 10.0


def _thresholds_at(data: ReportData, ts: float) -> ThresholdPoint | None:
    """The applied thresholds in force at ``ts`` (latest evaluation at or before it)."""
    found = None
    for s in data.series:
        if s.ts <= ts and s.applied is not None:
            found = s.applied
    if found is None and data.band_quality is not None:
        found = data.band_quality.thresholds
    return found


def _draw_thresholds(ax: Axes, th: ThresholdPoint, label: bool) -> None:
    ax.axvspan(th.capable_below, th.cheap_above, color=MUTED, alpha=0.10, lw=0, zorder=0)
    for x, color, name, ha, dx in ((th.capable_below, CAPABLE, "capable_below", "right", -4),
                                   (th.cheap_above, CHEAP, "cheap_above", "left", 4)):
        ax.axvline(x, color=color, lw=1.8, ls=(0, (1, 2.2)), zorder=4)
        if label:
            ax.annotate(f"{name} {x:.2f}", xy=(x, 1.0), xycoords=("data", "axes fraction"),
                        xytext=(dx, -2), textcoords="offset points", ha=ha, va="top",
                        fontsize=9, color=color, fontweight="bold", zorder=6,
                        bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "none",
                              "alpha": 0.9})


def histogram_plot(data: ReportData) -> Figure | None:
    """Live score distribution against the baseline at the first drift alert."""
    h = data.drift_histogram
    if h is None or not any(h.live) or not any(h.baseline):
        return None
    edges = np.asarray(h.edges, dtype=float)
    width = np.maximum(np.diff(edges), 1e-12)
    base, live = np.asarray(h.baseline, dtype=float), np.asarray(h.live, dtype=float)
    fig = new_figure(WIDTH, 4.6)
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[2.6, 1])
    top.stairs(base / width, edges, fill=True, color=MUTED, alpha=0.35, lw=0,
               label="baseline", zorder=2)
    top.stairs(base / width, edges, color=MUTED, lw=1.0, zorder=2)
    top.stairs(live / width, edges, color=AGGREGATE, lw=2.2, label="live", zorder=3)
    top.set_ylabel("density")
    top.set_ylim(0, float(max((base / width).max(), (live / width).max())) * 1.18)
    top.set_title(f"Router score distribution: {h.label}" if h.label
                  else "Router score distribution")
    eps = 1e-4
    ratio = np.log2((live + eps) / (base + eps))
    mids = (edges[:-1] + edges[1:]) / 2
    colors = [BAD if r > 0 else GOOD for r in ratio]
    bottom.bar(mids, ratio, width=width * 0.86, color=colors, alpha=0.75, lw=0, zorder=3)
    bottom.axhline(0, color=MUTED, lw=0.9)
    bottom.set_ylabel("log₂ live/base")
    bottom.set_xlabel("router score (higher → cheap)")
    bottom.set_xlim(edges[0], edges[-1])
    th = _thresholds_at(data, h.ts)
    if th is not None:
        _draw_thresholds(top, th, label=True)
        _draw_thresholds(bottom, th, label=False)
    handles: list[Line2D | Patch] = [Patch(color=MUTED, alpha=0.45, label="baseline"),
                                     Line2D([], [], color=AGGREGATE, lw=2.2, label="live")]
    fig.legend(handles=handles, loc="outside upper right", ncol=2)
    return fig


def band_quality_plot(data: ReportData) -> Figure | None:
    """Satisfaction per score band per tier (bar = interval, tick = estimate)."""
    bq = data.band_quality
    if bq is None or not any(r is not None for rates in bq.tiers.values() for r in rates):
        return None
    edges = np.asarray(bq.edges, dtype=float)
    order = list(bq.tiers)
    fig = new_figure(WIDTH, 4.0)
    ax = fig.subplots()
    _draw_thresholds(ax, bq.thresholds, label=True)
    k = len(order)
    for j, (tier, rates) in enumerate(bq.tiers.items()):
        color = tier_color(tier, order)
        for i, r in enumerate(rates):
            if r is None:
                continue
            left, w = edges[i], edges[i + 1] - edges[i]
            pad = w * 0.08
            slot = (w - 2 * pad) / k
            x0 = left + pad + j * slot
            ax.add_patch(Rectangle((x0, r.lo), slot, r.hi - r.lo, color=color, alpha=0.22,
                                   lw=0, zorder=2))
            ax.plot([x0, x0 + slot], [r.value, r.value], color=color, lw=2.4, zorder=3,
                    solid_capstyle="butt")
    for e in edges[1:-1]:
        ax.axvline(e, color="#eef0f3", lw=0.8, zorder=0)
    ax.set_xlim(edges[0], edges[-1])
    ax.set_xlabel("router score band (baseline quantiles)")
    ax.set_ylabel("satisfaction")
    percent_axis(ax)
    ax.autoscale_view()
    ax.set_title(f"Quality by score band · uncertain band explored at "
                 f"{bq.thresholds.exploration_rate:.0%}")
    handles: list[Line2D | Patch] = [
        *tier_handles(order, order),
        Patch(color=MUTED, alpha=0.3, label="interval"),
        Patch(color=MUTED, alpha=0.2, label="uncertain band"),
    ]
    fig.legend(handles=handles, loc="outside upper right", ncol=len(handles))
    return fig
