"""Matplotlib figures to deterministic, inline-ready SVG.

Figures are built with :class:`matplotlib.figure.Figure` directly (no pyplot, so no GUI
backend and no global figure registry). The SVG is made byte-stable by a fixed
``svg.hashsalt`` and no date in its metadata; its XML prolog is dropped and every id is
prefixed, so many SVGs can live in one HTML document without id clashes.

Examples
--------
>>> fig = new_figure(4, 2)
>>> _ = fig.add_subplot().plot([0, 1], [1, 0])
>>> svg = figure_to_svg(fig, "demo")
>>> svg.startswith("<svg") and 'id="demo-' in svg and svg == figure_to_svg(fig, "demo")
True
"""

from __future__ import annotations

import io
import re

import matplotlib as mpl
from matplotlib.figure import Figure

from pipeline.report.style import RC

_PROLOG = re.compile(r"\A.*?(?=<svg\b)", re.DOTALL)
_IDS = re.compile(r'(\bid="|href="#|url\(#)([^")]+)')


def new_figure(width: float, height: float) -> Figure:
    """A white figure of ``width`` x ``height`` inches, laid out with constrained layout."""
    with mpl.rc_context(RC):
        return Figure(figsize=(width, height), layout="constrained")


def figure_to_svg(fig: Figure, prefix: str) -> str:
    """Render ``fig`` as an ``<svg>`` element whose ids all start with ``prefix-``.

    Parameters
    ----------
    fig
        The figure; it is not modified (it can be rendered again, to the same bytes).
    prefix
        Id prefix, unique within the HTML document (e.g. the plot name).
    """
    buf = io.StringIO()
    with mpl.rc_context(RC):
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    svg = _PROLOG.sub("", buf.getvalue(), count=1)
    return _IDS.sub(lambda m: f"{m.group(1)}{prefix}-{m.group(2)}", svg).strip()
