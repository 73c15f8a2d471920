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

from pipeline.bootstrap import bootstrap
from pipeline.settings import Settings
from pipeline.stream.processor import MAX_DEAD_LETTERS, InMessage, Processor

TH = {"cheap_above": 0.6, "capable_below": 0.4, "exploration_rate": 0.05}


def routing(i: int, ts: str, tier: str = "cheap", score: float = 0.9) -> dict[str, Any]:
    return {"event_id": f"e{i}", "request_id": f"q{i}", "router_id": "r", "tier": tier,
            "ts": ts, "score": score, "route_reason": "confident_cheap", "thresholds": TH}


def processor(clock: Callable[[], float] | None = None,
              registry: CollectorRegistry | None = None) -> Processor:
    return bootstrap(Settings(), registry=registry,
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
    p = bootstrap(Settings(), clock=None)
    send(p, "routing", routing(0, "0001-01-01T00:00:00+14:00"))
    send(p, "routing", b"not json")


# -- issue #15: dead letters that keep their promise, and errors inside the monitor ------

def _metric(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return sum(s.value for fam in text_string_to_metric_families(
        generate_latest(registry).decode()) for s in fam.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def _dlq(out: list[Any]) -> list[dict[str, Any]]:
    return [orjson.loads(o.value) for o in out if o.topic == "dlq"]


def test_a_late_event_of_a_batch_carries_its_own_bytes_and_index() -> None:
    p = processor(clock=None)
    send(p, "routing", routing(0, "2026-05-10T00:00:00Z"))
    late = b'{ "event_id":"e1","request_id":"q1","router_id":"r","tier":"cheap",' \
           b'"ts":"2026-05-01T00:00:00+00:00","score":0.9,"route_reason":"confident_cheap",' \
           b'"thresholds":{"cheap_above":0.6,"capable_below":0.4,"exploration_rate":0.05} }'
    raw = b"[" + orjson.dumps(routing(2, "2026-05-10T00:01:00Z")) + b",\n  " + late + b"]"
    out = p.handle("routing", InMessage("tierwatch.routing", 3, 17, b"q2", raw))
    [d] = _dlq(out)
    assert (d["reason_class"], d["index"], d["partition"], d["offset"], d["key"]) == \
        ("late", 1, 3, 17, "q2")
    assert d["payload"].encode() == late  # the original bytes, spaces and all


def test_an_event_from_the_future_carries_its_own_bytes_and_index() -> None:
    p = processor(clock=lambda: 1.7e9)
    raw = b'[{"x": 1}, ' + orjson.dumps(routing(0, "2030-01-01T00:00:00Z")) + b"]"
    out = p.handle("routing", InMessage("tierwatch.routing", 0, 5, None, raw))
    got = {(d["index"], d["reason_class"]): d["payload"] for d in _dlq(out)}
    assert got == {(0, "invalid_field"): '{"x": 1}',
                   (1, "future"): orjson.dumps(routing(0, "2030-01-01T00:00:00Z")).decode()}


def test_unjoined_feedback_is_dead_lettered_with_its_bytes_and_coordinates() -> None:
    registry = CollectorRegistry()
    p = processor(clock=None, registry=registry)
    send(p, "routing", routing(0, "2026-05-01T00:00:00Z"))
    fb = b'{"event_id": "f1", "request_id": "nobody", "kind": "thumbs", "value": 1, ' \
         b'"ts": "2026-05-01T00:10:00Z"}'
    raw = b'[{"event_id":"f0","request_id":"q0","kind":"thumbs","value":1,' \
          b'"ts":"2026-05-01T00:05:00Z"},' + fb + b"]"
    assert not _dlq(p.handle("feedback", InMessage("tierwatch.feedback", 2, 41, b"q0", raw)))
    assert not _dlq(p.flush())
    send(p, "routing", routing(1, "2026-06-05T00:00:00Z"))  # 35 days on: the TTL ran out
    [d] = _dlq(p.flush())
    assert (d["reason_class"], d["topic"], d["partition"], d["offset"], d["index"],
            d["key"]) == ("unjoined", "tierwatch.feedback", 2, 41, 1, "q0")
    assert d["payload"].encode() == fb
    assert "join TTL" in d["reason"] and "2026-05-01T00:10:00" in d["reason"]
    # one record; the event was already counted valid when it arrived
    assert _metric(registry, "tierwatch_dead_letters_total", reason="unjoined") == 1
    assert _metric(registry, "tierwatch_events_total", outcome="dead_lettered") == 0


def test_a_batch_of_100k_bad_elements_counts_101_dead_letters() -> None:
    registry = CollectorRegistry()
    p = processor(registry=registry)
    raw = b"[" + b",".join([b"1"] * 100_000) + b"]"
    out = _dlq(send(p, "routing", raw))
    assert len(out) == MAX_DEAD_LETTERS + 1
    assert [d["payload"] for d in out[:MAX_DEAD_LETTERS]] == ["1"] * MAX_DEAD_LETTERS
    assert out[-1]["reason_class"] == "too_many_invalid" and out[-1]["reason"].startswith(
        "99900 more")
    assert _metric(registry, "tierwatch_dead_letters_total") == MAX_DEAD_LETTERS + 1
    assert _metric(registry, "tierwatch_events_total", outcome="dead_lettered") == 100_000


def test_an_exception_in_the_monitor_dead_letters_the_message(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    registry = CollectorRegistry()
    p = processor(registry=registry)
    calls = {"n": 0}
    original = p.monitor.observe_routing

    def flaky(events: Any, *columns: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyError("boom")
        return original(events, *columns)

    monkeypatch.setattr(p.monitor, "observe_routing", flaky)
    send(p, "routing", routing(0, "2026-05-01T00:00:00Z"))
    raw = orjson.dumps(routing(1, "2026-05-01T00:01:00Z"))
    [d] = _dlq(p.handle("routing", InMessage("tierwatch.routing", 0, 9, None, raw)))
    assert d["reason_class"] == "internal_error"
    assert d["reason"] == "internal_error: KeyError: 'boom'"
    assert d["payload"].encode() == raw and d["offset"] == 9
    assert "Traceback" in caplog.text and "tierwatch.routing[0]@9" in caplog.text
    assert _metric(registry, "tierwatch_processing_errors_total", stage="message") == 1
    send(p, "routing", routing(2, "2026-05-01T00:02:00Z"))  # the processor goes on
    assert p.monitor.counts.routed == {("r", "cheap"): 2}


def test_every_message_failing_stops_the_processor(monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.stream.processor import MAX_CONSECUTIVE_ERRORS, ProcessingError

    p = processor()

    def broken(events: Any, *columns: Any) -> Any:
        raise RuntimeError("broken")

    monkeypatch.setattr(p.monitor, "observe_routing", broken)
    for i in range(MAX_CONSECUTIVE_ERRORS - 1):
        assert _dlq(send(p, "routing", routing(i, "2026-05-01T00:00:00Z")))
    with pytest.raises(ProcessingError, match="consecutive"):
        send(p, "routing", routing(99, "2026-05-01T00:00:00Z"))


def test_a_router_whose_evaluation_raises_is_skipped_and_counted(
        monkeypatch: pytest.MonkeyPatch) -> None:
    registry = CollectorRegistry()
    p = processor(clock=None, registry=registry)
    send(p, "routing", [routing(0, "2026-05-01T00:00:00Z"),
                        {**routing(1, "2026-05-01T00:00:00Z"), "router_id": "other"}])
    bad = p.monitor.routers["r"]

    def broken(now: float) -> Any:
        raise ValueError("bad state")

    monkeypatch.setattr(bad, "evaluate", broken)
    send(p, "routing", routing(2, "2026-05-01T03:00:00Z"))
    p.flush()
    assert p.monitor.routers["other"].last_snapshot  # the other router was evaluated
    assert not bad.last_snapshot
    assert _metric(registry, "tierwatch_processing_errors_total", stage="evaluate") == 3
    assert p.monitor.errors == []
