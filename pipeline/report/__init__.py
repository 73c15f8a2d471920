"""Self-contained HTML report of one router: data contract, plots, page.

>>> from pipeline.report import ReportData, render_report
>>> callable(render_report) and "series" in ReportData.model_fields
True
"""

from pipeline.report.data import (
    BandQuality,
    DriftPoint,
    EconomicsPoint,
    HistogramSnapshot,
    Rate,
    ReportData,
    Snapshot,
    ThresholdPoint,
    TierSnapshot,
)
from pipeline.report.render import render_report, write_report

__all__ = [
    "BandQuality",
    "DriftPoint",
    "EconomicsPoint",
    "HistogramSnapshot",
    "Rate",
    "ReportData",
    "Snapshot",
    "ThresholdPoint",
    "TierSnapshot",
    "render_report",
    "write_report",
]
