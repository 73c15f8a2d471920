"""`tierwatch status --by segment` renders the snapshot's per-segment tables."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from pipeline.core.monitor import Monitor
from pipeline.schemas import FeedbackEvent, RoutingEvent
from pipeline.segment_status import render_segments

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _monitor() -> Monitor:
    m = Monitor()
    events = [RoutingEvent.model_validate({
        "event_id": f"e{i}", "request_id": f"r{i}", "router_id": "support", "tier": "cheap",
        "ts": (T0 + timedelta(seconds=60 * i)).isoformat(), "score": 0.9,
        "route_reason": "confident_cheap",
        "segment": {"intent": "billing" if i % 4 == 0 else "how_to", "plan": "pro"},
        "thresholds": {"cheap_above": 0.7, "capable_below": 0.5, "exploration_rate": 0.1}})
        for i in range(120)]
    m.observe_routing(events[:100])
    m.observe_feedback([FeedbackEvent.model_validate({
        "event_id": "f1", "request_id": "r0", "router_id": "support",
        "ts": (T0 + timedelta(minutes=30)).isoformat(), "kind": "support_contact", "value": 1})])
    m.observe_routing(events[100:])  # crosses the hour: an evaluation
    m.drain()
    return m


def test_status_by_segment_lists_values_with_contacts() -> None:
    m = _monitor()
    status = json.loads(json.dumps(m.status()))  # what /status serves
    rows = status["routers"]["support"]["snapshot"]["segments"]["cheap"]["intent"]
    by_value = {r["value"]: r for r in rows}
    assert by_value["billing"]["contacts"] == 1  # the contact joined to r0's segment
    assert by_value["how_to"]["contacts"] == 0
    assert by_value["billing"]["requests"] + by_value["how_to"]["requests"] == 60
    text = render_segments(status, "support")
    assert "cheap / intent" in text and "cheap / plan" in text
    line = next(x for x in text.splitlines() if x.strip().startswith("billing"))
    assert line.split()[1] == f"{by_value['billing']['requests']:.0f}"
    assert render_segments(status, "other") == ""


def test_cli_accepts_by_segment() -> None:
    from pipeline.cli import build_parser

    ns = build_parser().parse_args(["status", "--router-id", "r", "--by", "segment"])
    assert ns.by == "segment" and ns.router_id == "r"
