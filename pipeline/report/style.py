"""Colours and matplotlib settings shared by every plot, so a tier looks the same everywhere.

cheap is orange, capable is blue, the aggregate (or the whole router) is near-black; any
further tier takes the next colour of a colour-blind-friendly cycle.

Examples
--------
>>> tier_color("cheap"), tier_color("capable"), tier_color("router")
('#e8710a', '#2f6db5', '#262626')
>>> tier_color("premium", ["cheap", "capable", "premium"])
'#2a9d8f'
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from matplotlib.typing import RcKeyType

CHEAP = "#e8710a"
CAPABLE = "#2f6db5"
AGGREGATE = "#262626"
MUTED = "#8a8f98"
GRID = "#e6e8ec"
TEXT = "#33373d"
ALERT = "#d6455d"
ALERT_ALPHA = 0.12
GOOD = "#2e9a5b"
BAD = "#d6455d"
SEVERITY = {"page": "#d6455d", "ticket": "#e0a21b", "info": "#7d8ba1"}

_KNOWN = {"cheap": CHEAP, "capable": CAPABLE, "aggregate": AGGREGATE, "router": AGGREGATE}
_EXTRA = ["#2a9d8f", "#8e5ac8", "#c2477f", "#7f7f2a", "#5b8c5a", "#a0522d"]

ONSET_STYLE: dict[str, Any] = {"color": AGGREGATE, "linestyle": (0, (5, 3)), "linewidth": 1.3,
                               "zorder": 5}

RC: dict[RcKeyType, Any] = {
    "svg.hashsalt": "tierwatch",
    "svg.fonttype": "path",
    "font.family": "DejaVu Sans",
    "font.size": 10.5,
    "axes.titlesize": 11.5,
    "axes.titleweight": "bold",
    "axes.titlelocation": "left",
    "axes.titlepad": 10,
    "axes.labelsize": 10,
    "axes.labelcolor": TEXT,
    "axes.edgecolor": "#b9bec6",
    "axes.linewidth": 0.8,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "axes.grid.axis": "y",
    "axes.axisbelow": True,
    "grid.color": GRID,
    "grid.linewidth": 0.8,
    "xtick.color": "#6b7078",
    "ytick.color": "#6b7078",
    "xtick.labelcolor": TEXT,
    "ytick.labelcolor": TEXT,
    "legend.frameon": False,
    "legend.fontsize": 9.5,
    "lines.linewidth": 1.8,
    "lines.solid_capstyle": "round",
    "figure.facecolor": "white",
    "savefig.facecolor": "white",
    "text.color": TEXT,
}


def tier_color(name: str, order: Sequence[str] = ()) -> str:
    """The colour of a tier (or of ``"aggregate"`` / ``"router"``).

    Parameters
    ----------
    name
        Tier name; ``cheap``, ``capable``, ``aggregate`` and ``router`` have fixed colours.
    order
        All tier names of the report, so further tiers get stable, distinct colours.
    """
    if name in _KNOWN:
        return _KNOWN[name]
    others = [t for t in order if t not in _KNOWN]
    idx = others.index(name) if name in others else sum(map(ord, name))
    return _EXTRA[idx % len(_EXTRA)]
