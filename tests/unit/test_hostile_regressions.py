"""Minimal reproductions of the bugs the broker fuzz test (tests/integration/
test_fuzz_broker.py) found in the decoder, the processor and the core.

Each failed before its fix; they stay as regression tests.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from pipeline.replay import build_monitor
from pipeline.settings import Settings
from pipeline.stream.metrics import WorkerMetrics
from pipeline.stream.processor import MAX_DEAD_LETTERS, InMessage, Processor

TH = {"cheap_above": 0.6, "capable_below": 0.4, "exploration_rate": 0.05}


def routing(i: int, ts: str, tier: str = "cheap", score: float = 0.9) -> dict[str, Any]:
    return {"event_id": f"e{i}", "request_id": f"q{i}", "router_id": "r", "tier": tier,
            "ts": ts, "score": score, "route_reason": "confident_cheap", "thresholds": TH}


def processor(clock: Callable[[], float] | None = None,
              registry: CollectorRegistry | None = None) -> Processor:
    settings = Settings()
    return Processor(settings, build_monitor(settings),
                     WorkerMetrics(registry or CollectorRegistry()),
                     **({} if clock is None else {"clock": clock}))


def send(p: Processor, kind: str, doc: Any) -> list[Any]:
    raw = doc if isinstance(doc, bytes) else orjson.dumps(doc)
    # no partition/offset: never fenced as already counted
    return p.handle(kind, InMessage(f"tierwatch.{kind}", None, None, b"k", raw))


def test_a_tiny_legal_feedback_weight_does_not_crash_the_evaluation() -> None:
    # weight only needs to be > 0; any weight below ~1.5e-162 squares to 0.0
    p = processor()
    send(p, "routing", [routing(0, "2026-05-01T00:00:00Z", "cheap", 0.9),
                        routing(1, "2026-05-01T00:00:00Z", "capable", 0.1)])
    send(p, "feedback", [
        {"event_id": "f0", "request_id": "q0", "kind": "thumbs", "value": 1,
         "ts": "2026-05-01T00:01:00Z", "weight": 5e-324},
        {"event_id": "f1", "request_id": "q1", "kind": "thumbs", "value": 1,
         "ts": "2026-05-01T00:01:00Z"}])
    send(p, "routing", routing(2, "2026-05-02T01:00:00Z"))  # the next day: economics run
    p.flush()  # ZeroDivisionError in RouterState._extra_rate → Totals.variance


@pytest.mark.parametrize("raw", [
    b"\x80" + os.urandom(900_000),                        # not UTF-8: base64, x4/3
    b'{"event_id": "' + b'\\"' * 300_000 + b'"}',          # escaped quotes: x2
], ids=["binary", "quotes"])
def test_a_dead_letter_is_no_larger_than_the_message_it_rejects(raw: bytes) -> None:
    # Both messages fit under the broker's default message.max.bytes (1 MiB), so a router
    # can publish them; their dead letters (1.2 MB) exceed the worker producer's
    # max_request_size, faust raises ProducerSendError and the whole worker exits. On
    # restart it re-reads the same message: a poison pill.
    [dead] = send(processor(), "routing", raw)
    assert len(dead.value) <= len(raw) + 16 * 1024


def test_a_batch_is_parsed_a_bounded_number_of_times(monkeypatch: pytest.MonkeyPatch) -> None:
    # Measured: a batch of 10k non-objects (20 KB) takes 2 s, of 50k (100 KB) 51 s; a
    # 1 MB message of "[0,0,…]" would hold the worker for tens of minutes.
    parsed = 0
    loads = orjson.loads

    def counting(data: Any) -> Any:
        nonlocal parsed
        parsed += len(data)
        return loads(data)

    raw = b"[" + b"0," * 1999 + b"0]"
    monkeypatch.setattr(orjson, "loads", counting)
    out = send(processor(), "routing", raw)
    # at most MAX_DEAD_LETTERS records, then one that sums up the rest: no amplification
    assert len(out) == MAX_DEAD_LETTERS + 1
    summary = orjson.loads(out[-1].value)
    assert summary["reason_class"] == "too_many_invalid" and summary.get("index") is None
    assert f"{2000 - MAX_DEAD_LETTERS} more invalid events" in summary["reason"]
    assert parsed <= 4 * len(raw)


def test_metrics_count_only_the_events_the_monitor_counts() -> None:
    registry = CollectorRegistry()
    p = processor(registry=registry)
    send(p, "routing", routing(0, "2026-05-01T00:00:00Z"))
    send(p, "routing", routing(0, "2026-05-01T00:00:00Z"))            # duplicate
    assert send(p, "routing", routing(1, "2026-03-01T00:00:00Z"))     # late: dead-lettered
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for fam in text_string_to_metric_families(generate_latest(registry).decode())
               for s in fam.samples}
    assert p.monitor.counts.routed == {("r", "cheap"): 1}
    # today: 3 routed, 3 valid + 1 dead-lettered for 3 events
    assert samples[("tierwatch_routed_events_total",
                    (("router_id", "r"), ("tier", "cheap")))] == 1
    assert samples[("tierwatch_events_total",
                    (("outcome", "valid"), ("topic", "routing")))] == 1


def test_an_ancient_first_event_does_not_stall_the_monitor() -> None:
    # The first event sets the watermark with no lateness check; with ts 1970-01-01 the next
    # real event makes drain() run ~494k hourly evaluations (about 4 minutes for one
    # router here; 0001-01-01 would take hours): one message stalls the worker.
    p = processor()
    calls = 0
    evaluate = p.monitor.evaluate

    def bounded(now: float) -> None:
        nonlocal calls
        calls += 1
        if calls > 1000:
            raise AssertionError("more than 1000 evaluations for two events")
        evaluate(now)

    p.monitor.evaluate = bounded  # type: ignore[method-assign]
    send(p, "routing", routing(0, "1970-01-01T00:00:00Z"))
    send(p, "routing", routing(1, "2026-05-01T00:00:00Z"))
    p.flush()


def test_replay_survives_a_watermark_before_year_one() -> None:
    # "0001-01-01T00:00:00+14:00" is a legal aware timestamp whose UTC instant is in year 0;
    # in event time (clock=None, what `tierwatch replay` runs) the next dead letter's
    # rejected_at = datetime.fromtimestamp(watermark) raises "year 0 is out of range".
    p = Processor(Settings(), build_monitor(Settings()), WorkerMetrics(CollectorRegistry()),
                  clock=None)
    send(p, "routing", routing(0, "0001-01-01T00:00:00+14:00"))
    send(p, "routing", b"not json")
