"""Assemble :class:`ReportData` from a monitor that recorded its evaluations."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pipeline.core.monitor import Monitor
from pipeline.report.cohorts import cohort_report
from pipeline.report.data import BandQuality, HistogramSnapshot, ReportData, Snapshot
from pipeline.report.segments import segment_report
from pipeline.report.summary import headline_from, timeline_from
from pipeline.schemas import Alert


def report_data(monitor: Monitor, router_id: str, alerts: Sequence[Alert], *,
                onset_ts: float | None, generated_from: str, title: str | None = None,
                onset_label: str = "onset") -> ReportData:
    """The report of ``router_id`` from ``monitor.history`` and the published alerts."""
    history = monitor.history.get(router_id, [])
    series = [Snapshot.from_dict({k: v for k, v in s.items()
                                  if k not in ("segments", "delayed")})
              for s in history]
    mine = [a for a in alerts if a.router_id == router_id]
    state = monitor.routers.get(router_id)
    hist: dict[str, Any] | None = monitor.first_drift_histogram.get(router_id)
    if hist is None and state is not None and monitor.watermark is not None:
        hist = state.histogram(monitor.next_eval or monitor.watermark)
    histogram = None
    if hist is not None:
        histogram = HistogramSnapshot(label=("at the first drift alert"
                                             if router_id in monitor.first_drift_histogram
                                             else "at the end of the replay"), **hist)
    bands = None
    if state is not None and monitor.next_eval is not None:
        bands = BandQuality.from_dict(state.band_quality(monitor.next_eval))
    return ReportData(
        title=title or f"{router_id} router · tierwatch replay", router_id=router_id,
        generated_from=generated_from, onset_ts=onset_ts,
        timeline=timeline_from(series, mine, onset_ts, onset_label),
        headline=headline_from(series, mine, onset_ts), series=series, alerts=mine,
        drift_histogram=histogram, band_quality=bands,
        segments=segment_report(history, mine, monitor.config.cheap_tier),
        delayed=cohort_report(history))
