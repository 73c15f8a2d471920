"""The report's "where the cheap tier fails" section from recorded snapshots and alerts."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from pipeline.report.example import example_report_data
from pipeline.report.render import render_report
from pipeline.report.segments import segment_report
from pipeline.schemas import Alert

DAY = 86400.0


def _row(value: str, requests: float, rate: float | None, ref: float | None) -> dict[str, Any]:
    return {"value": value, "requests": requests, "share": requests / 1000, "contacts": 0.0,
            "rate": rate, "reference_rate": ref, "error_bound": 0.0}


def _history() -> list[dict[str, Any]]:
    return [{"ts": d * DAY, "segments": {"cheap": {"intent": [
        _row("how_to", 600, 0.004, 0.004),
        _row("billing", 300, 0.004 * (1 + d), 0.004),
        _row("(other)", 100, 0.004, None)]}}} for d in range(5)]


def _attr(value: str, share: float, excess: float, significant: bool) -> dict[str, Any]:
    return {"key": "intent", "value": value, "observed": 0, "expected": 0, "excess": excess,
            "exposure": 1, "reference_rate": 0.004, "rate_ratio": 3.9, "new": False,
            "p_value": 1e-6, "significant": significant, "share": share,
            "traffic_share": 0.3}


def test_ranked_by_the_first_alerts_attribution() -> None:
    alert = Alert(alert_id="a", kind="support_contact_rise", state="firing", severity="page",
                  router_id="r", tier="cheap", window="1d", ts=datetime(2026, 1, 5, tzinfo=UTC),
                  statistics={"segments": {"values": [
                      _attr("billing", 0.68, 20.0, True), _attr("how_to", 0.1, 2.0, False),
                      _attr("account", 0.0, -1.0, False)]}},
                  summary="s", runbook="deploy/runbook.md#support_contact_rise")
    rep = segment_report(_history(), [alert])
    assert rep is not None
    assert [r.value for r in rep.rows] == ["billing", "how_to"]
    assert rep.rows[0].excess_share == 0.68 and rep.rows[0].significant
    assert rep.rows[0].requests == 300
    assert [p[1] for p in rep.series["intent=billing"]] == [0.004 * (1 + d) for d in range(5)]
    assert "support_contact_rise" in rep.source


def test_without_an_alert_ranked_by_rate_ratio_and_none_without_segments() -> None:
    rep = segment_report(_history(), [])
    assert rep is not None and rep.rows[0].value == "billing"
    assert rep.rows[0].rate_ratio == 5.0
    assert segment_report([{"ts": 0.0}], []) is None


def test_report_page_shows_the_table_and_small_multiples() -> None:
    data = example_report_data()
    page = render_report(data)
    section = page[page.index('id="segments"'):page.index('id="thresholds"')]
    assert "Where the cheap tier fails" in section
    first = re.search(r"<tbody><tr><td>1</td><td><code>([^<]+)</code></td><td>([^<]+)</td>",
                      section)
    assert first is not None and first.groups() == ("intent=billing", "68%")
    assert section.count("<svg") == 1 and "intent=billing" in section
    page_without = render_report(data.model_copy(update={"segments": None}))
    assert "No segments: routing events carry no segment." in page_without
