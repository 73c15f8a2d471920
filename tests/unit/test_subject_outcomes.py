"""subject_id and retention through the decoder and the monitor (issue #18)."""

from __future__ import annotations

import orjson
import pytest

from pipeline.core.monitor import Monitor, MonitorConfig
from pipeline.schemas import FeedbackEvent, RoutingEvent, decode_events

TH = {"cheap_above": 0.7, "capable_below": 0.5, "exploration_rate": 0.1}
SUBJECT = "sha256:9f86d081884c7d65"


def _routing(i: int, subject: str | None, ts: str = "2026-01-05T00:00:00Z") -> dict:
    ev = {"event_id": f"e{i}", "request_id": f"r{i}", "router_id": "support", "tier": "cheap",
          "ts": ts, "score": 0.8, "route_reason": "confident_cheap", "thresholds": TH}
    if subject is not None:
        ev["subject_id"] = subject
    return ev


@pytest.mark.parametrize(("subject", "says"), [
    ("ann.smith@example.com", "email address (PII)"),
    ("Ann Smith 1984 account", "person's name (PII)"),
    ("+4915112345678901", "phone number (PII)"),
    ("(030) 1234-5678-99", "phone number (PII)"),
    ("tiny", "pseudonymous hash"),
])
def test_pii_subject_ids_are_dead_lettered_with_a_reason(subject: str, says: str) -> None:
    raw = orjson.dumps([_routing(1, SUBJECT), _routing(2, subject)])
    events, rejections = decode_events(raw, RoutingEvent)
    assert [e.subject_id for e in events] == [SUBJECT]
    (bad,) = rejections
    assert bad.index == 1 and bad.field == "subject_id" and says in bad.reason


def test_retention_is_attributed_to_the_subjects_interactions_not_joined() -> None:
    m = Monitor(MonitorConfig())
    routing = [RoutingEvent.model_validate(_routing(i, SUBJECT if i % 2 else None,
                                                    f"2026-01-0{5 + i}T00:00:00Z"))
               for i in range(4)]
    m.observe_routing(routing)
    out = m.observe_feedback([FeedbackEvent.model_validate({
        "event_id": "ret-1", "request_id": "ret-1", "ts": "2026-06-30T00:00:00Z",
        "kind": "retention", "value": 0, "subject_id": SUBJECT})])
    assert out == []
    ledger = m.routers["support"].delayed.ledger
    assert [r["subjects"] for r in ledger.exposure_table()][-1] == 1.0  # >75 % cheap
    assert m.counts.feedback == {("support", "retention"): 1}
    assert m.join.n_pending == 0  # nothing waits for a request "ret-1"
    # a resend counts once
    m.observe_feedback([FeedbackEvent.model_validate({
        "event_id": "ret-1", "request_id": "ret-1", "ts": "2026-06-30T00:00:00Z",
        "kind": "retention", "value": 0, "subject_id": SUBJECT})])
    assert m.counts.feedback == {("support", "retention"): 1}
    cells = m.routers["support"].delayed.curves.cells
    assert sum(c[:, 0].sum() for c in cells.values()) == pytest.approx(1.0)
