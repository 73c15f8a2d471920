"""`tierwatch status` renders the worker's /status as a readable table."""

from __future__ import annotations

from pipeline.core.monitor import Monitor
from pipeline.schemas import RoutingEvent
from pipeline.status import render


def test_render_shows_routers_tiers_and_counts() -> None:
    m = Monitor()
    events = [RoutingEvent.model_validate({
        "event_id": f"e{i}", "request_id": f"r{i}", "router_id": "support",
        "tier": "cheap" if i % 3 else "capable", "ts": "2026-01-01T00:00:00+00:00",
        "score": 0.9 if i % 3 else 0.1,
        "route_reason": "confident_cheap" if i % 3 else "confident_capable",
        "thresholds": {"cheap_above": 0.7, "capable_below": 0.5, "exploration_rate": 0.1}})
        for i in range(30)]
    m.observe_routing(events)
    text = render(m.status())
    assert "router support" in text
    assert "cheap" in text and "20" in text and "capable" in text and "10" in text
    assert render(m.status(), router_id="other").count("router ") == 0
