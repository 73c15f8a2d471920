"""Helpers shared by the time plots: series extraction, time axes, onset line, alert spans.

Examples
--------
>>> from pipeline.report.data import Rate, Snapshot
>>> s = [Snapshot(ts=0.0, aggregate=Rate(value=0.5, lo=0.4, hi=0.6, n=9)), Snapshot(ts=86400.0)]
>>> x, v, lo, hi = rate_series(s, lambda snap: snap.aggregate)
>>> float(x[1] - x[0]), v.tolist()
(1.0, [0.5, nan])
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import matplotlib.dates as mdates
import numpy as np
from matplotlib.axes import Axes
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, PercentFormatter

from pipeline.report.data import Rate, Snapshot
from pipeline.report.style import ALERT, ALERT_ALPHA, ONSET_STYLE, tier_color

FloatArray = np.ndarray


def to_dates(ts: Sequence[float] | FloatArray) -> FloatArray:
    """Epoch seconds to matplotlib date numbers (days, in the configured date epoch)."""
    zero = float(mdates.date2num(np.datetime64("1970-01-01T00:00:00")))
    return np.asarray(ts, dtype=float) / 86400.0 + zero


def rate_series(series: Sequence[Snapshot], get: Callable[[Snapshot], Rate | None],
                ) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """Dates and (value, lo, hi) arrays, NaN where ``get`` returns no rate (a line gap)."""
    rates = [get(s) for s in series]
    nan = float("nan")
    v = np.array([nan if r is None else r.value for r in rates])
    lo = np.array([nan if r is None else r.lo for r in rates])
    hi = np.array([nan if r is None else r.hi for r in rates])
    return to_dates([s.ts for s in series]), v, lo, hi


def value_series(series: Sequence[Snapshot], get: Callable[[Snapshot], float | None],
                 ) -> tuple[FloatArray, FloatArray]:
    """Dates and values, NaN where ``get`` returns ``None``."""
    vals = [get(s) for s in series]
    return (to_dates([s.ts for s in series]),
            np.array([float("nan") if v is None else float(v) for v in vals]))


def has_values(*arrays: FloatArray) -> bool:
    """Whether any array holds a finite value."""
    return any(bool(np.isfinite(a).any()) for a in arrays if len(a))


def time_axis(ax: Axes, t0: float, t1: float) -> None:
    """Concise UTC date ticks, x limits on the evaluated period."""
    locator = mdates.AutoDateLocator(minticks=4, maxticks=9)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(
        locator, offset_formats=["", "%Y", "%Y", "%Y", "%Y-%m-%d", "%Y-%m-%d %H:%M"]))
    lo, hi = to_dates([t0, t1])
    if hi > lo:
        ax.set_xlim(lo, hi)


def _axes_index(ax: Axes) -> int:
    fig = ax.get_figure()
    return fig.axes.index(ax) if fig is not None else 0


def mark_onset(ax: Axes, onset_ts: float | None, label: bool = True) -> None:
    """The onset as a vertical dashed line (svg id ``onset-<axes>``), labelled at the top."""
    if onset_ts is None:
        return
    x = float(to_dates([onset_ts])[0])
    ax.axvline(x, gid=f"onset-{_axes_index(ax)}", **ONSET_STYLE)
    if label:
        ax.annotate("onset", xy=(x, 1.0), xycoords=("data", "axes fraction"),
                    xytext=(4, -2), textcoords="offset points", va="top", ha="left",
                    fontsize=9, fontweight="bold", color=ONSET_STYLE["color"])


def shade_spans(ax: Axes, spans: Iterable[tuple[float, float]]) -> None:
    """Shade alert firing spans behind the data (svg ids ``alertspan-<axes>-<i>``)."""
    idx = _axes_index(ax)
    for i, (s, e) in enumerate(spans):
        a, b = to_dates([s, e])
        ax.axvspan(float(a), float(max(b, a + 1 / 48)), color=ALERT, alpha=ALERT_ALPHA, lw=0,
                   zorder=0, gid=f"alertspan-{idx}-{i}")


def band(ax: Axes, x: FloatArray, v: FloatArray, lo: FloatArray, hi: FloatArray, color: str,
         label: str, lw: float = 1.9, alpha: float = 0.18) -> None:
    """A line with its interval band."""
    ax.fill_between(x, lo, hi, color=color, alpha=alpha, lw=0, zorder=1)
    ax.plot(x, v, color=color, lw=lw, label=label, zorder=3)


def tier_handles(names: Iterable[str], order: Sequence[str] = ()) -> list[Line2D]:
    """Legend lines for tiers (and ``aggregate`` / ``router``)."""
    return [Line2D([], [], color=tier_color(n, order), lw=2.2, label=n) for n in names]


def marker_handles(onset: bool, spans: bool, span_label: str = "alert firing",
                   ) -> list[Line2D | Patch]:
    """Legend entries for the onset line and the alert shading."""
    out: list[Line2D | Patch] = []
    if onset:
        out.append(Line2D([], [], label="onset", **{**ONSET_STYLE, "zorder": None}))
    if spans:
        out.append(Patch(color=ALERT, alpha=ALERT_ALPHA * 2, lw=0, label=span_label))
    return out


def percent_axis(ax: Axes, decimals: int = 0) -> None:
    """Y axis as percentages of 1."""
    ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=decimals))


def money(v: float, _pos: object = None) -> str:
    """Compact dollars: ``$1.2k``, ``-$350``."""
    sign = "-" if v < 0 else ""
    v = abs(v)
    if v >= 1e6:
        return f"{sign}${v / 1e6:.1f}M"
    if v >= 1e4:
        return f"{sign}${v / 1e3:.0f}k"
    if v >= 1e3:
        return f"{sign}${v / 1e3:.1f}k"
    return f"{sign}${v:.0f}"


def money_axis(ax: Axes) -> None:
    """Y axis in compact dollars."""
    ax.yaxis.set_major_formatter(FuncFormatter(money))
