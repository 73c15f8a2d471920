"""Input as producers really send it: the Schema Registry wire format (header stripped,
schema id recorded) and added optional fields (accepted and counted, or rejected when
strict), through the decoder, the processor and the replay."""

from __future__ import annotations

import base64
import gzip
import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry

from pipeline.bootstrap import bootstrap
from pipeline.codec import decode_message, split_wire_format
from pipeline.core.monitor import Monitor
from pipeline.replay import Replay
from pipeline.schemas import FeedbackEvent, RoutingEvent
from pipeline.settings import Settings
from pipeline.stream.metrics import OTHER
from pipeline.stream.processor import InMessage, Processor

TH = {"cheap_above": 0.7, "capable_below": 0.5, "exploration_rate": 0.1}


def routing(i: int = 0, **over: Any) -> dict[str, Any]:
    ev = {"event_id": f"e{i}", "request_id": f"q{i}", "router_id": "support", "tier": "cheap",
          "ts": "2026-03-01T12:00:00Z", "score": 0.8, "route_reason": "confident_cheap",
          "thresholds": dict(TH)}
    ev.update(over)
    return ev


def wire(schema_id: int, doc: Any) -> bytes:
    return b"\x00" + schema_id.to_bytes(4, "big") + orjson.dumps(doc)


def processor(**settings: Any) -> tuple[Processor, CollectorRegistry]:
    registry = CollectorRegistry()
    return bootstrap(Settings(**settings), monitor=Monitor(), registry=registry,
                     clock=None), registry


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def dead(out: list[Any]) -> list[dict[str, Any]]:
    return [orjson.loads(m.value) for m in out if m.topic == "dlq"]


# -- the Schema Registry wire format ----------------------------------------------------------

@pytest.mark.parametrize("schema_id", [0, 1, 420, 0x80FF00FE, 2**32 - 1])
def test_header_is_stripped_and_the_big_endian_schema_id_read(schema_id: int) -> None:
    raw = wire(schema_id, routing())
    assert split_wire_format(raw) == (schema_id, orjson.dumps(routing()))
    d = decode_message(raw, RoutingEvent)
    assert d.rejections == [] and d.schema_id == schema_id
    assert d.events == [RoutingEvent.model_validate(routing())]


@pytest.mark.parametrize("raw", [b'{"a": 1}', b"[]", b" {}", b"\x00\x00\x01", b""])
def test_plain_json_and_short_messages_pass_through(raw: bytes) -> None:
    assert split_wire_format(raw) == (None, raw)


def test_a_batch_in_the_wire_format_decodes_like_the_plain_batch() -> None:
    batch = [routing(i) for i in range(5)]
    batch[3]["score"] = 1.5
    plain = decode_message(orjson.dumps(batch), RoutingEvent)
    framed = decode_message(wire(7, batch), RoutingEvent)
    assert framed.events == plain.events and len(framed.events) == 4
    assert framed.rejections == plain.rejections and framed.rejections[0].index == 3


def test_processor_accepts_the_wire_format_and_counts_schema_ids() -> None:
    """The id 0x80FF00FE is not valid UTF-8: the old decoder said exactly that."""
    p, registry = processor()
    out = p.handle("routing", InMessage("tierwatch.routing", 0, 0, b"q0",
                                        wire(0x80FF00FE, routing(0))))
    out += p.handle("routing", InMessage("tierwatch.routing", 0, 1, b"q1",
                                         wire(0x80FF00FE, [routing(1), routing(2)])))
    out += p.handle("routing", InMessage("tierwatch.routing", 0, 2, b"q3",
                                         wire(5, routing(3))))
    assert dead(out) == []
    assert p.monitor.counts.routed == {("support", "cheap"): 4}
    name = "tierwatch_schema_registry_messages_total"
    assert sample(registry, name, topic="routing", schema_id=str(0x80FF00FE)) == 2
    assert sample(registry, name, topic="routing", schema_id="5") == 1


def test_dead_letters_of_a_framed_message_keep_its_original_bytes() -> None:
    p, _ = processor()
    broken = b"\x00\x80\xff\x00\xfe" + b'{"event_id": '
    (whole,) = dead(p.handle("routing", InMessage("tierwatch.routing", 0, 0, b"k", broken)))
    assert whole["reason_class"] == "invalid_json" and "UTF-8" not in whole["reason"]
    assert whole["payload_encoding"] == "base64"
    assert base64.b64decode(whole["payload"]) == broken
    batch = [routing(0), routing(1, score=2.0)]
    (one,) = dead(p.handle("routing", InMessage("tierwatch.routing", 0, 1, b"k",
                                                wire(9, batch))))
    assert one["index"] == 1 and one["field"] == "score"
    assert orjson.loads(one["payload"]) == batch[1]  # the event, found after the header


def test_baselines_accept_the_wire_format() -> None:
    p, registry = processor()
    edges = [i / 10 for i in range(11)]
    doc = {"router_id": "support", "version": "b1", "created_at": "2026-01-01T00:00:00Z",
           "score": {"edges": edges, "probs": [0.1] * 10, "n": 1000}}
    assert dead(p.handle("baselines", InMessage("tierwatch.baselines", 0, 0, b"support",
                                                wire(3, doc)))) == []
    assert doc["router_id"] in p.monitor.baselines
    assert sample(registry, "tierwatch_schema_registry_messages_total",
                  topic="baselines", schema_id="3") == 1


# -- added optional fields --------------------------------------------------------------------

def test_unknown_fields_are_accepted_counted_and_change_nothing_else() -> None:
    p, registry = processor()
    clean, _ = processor()
    extra = [routing(i, trace_id=f"t{i}", thresholds={**TH, "note": "x"}) for i in range(3)]
    extra[2].pop("thresholds")
    extra[2]["thresholds"] = dict(TH)
    out = p.handle("routing", InMessage("tierwatch.routing", 0, 0, b"k", orjson.dumps(extra)))
    assert dead(out) == []
    clean.handle("routing", InMessage("tierwatch.routing", 0, 0, b"k",
                                      orjson.dumps([routing(i) for i in range(3)])))
    assert p.monitor.counts.routed == clean.monitor.counts.routed == {("support", "cheap"): 3}
    assert p.monitor.status() == clean.monitor.status()
    name = "tierwatch_unknown_fields_total"
    assert sample(registry, name, topic="routing", field="trace_id") == 3
    assert sample(registry, name, topic="routing", field="thresholds.note") == 2


def test_an_event_with_unknown_fields_and_a_bad_one_is_rejected_for_the_bad_one() -> None:
    p, registry = processor()
    (rec,) = dead(p.handle("routing", InMessage("tierwatch.routing", 0, 0, b"k",
                                                orjson.dumps(routing(trace_id="t", score=9)))))
    assert rec["field"] == "score"
    assert sample(registry, "tierwatch_unknown_fields_total", topic="routing",
                  field="trace_id") == 0  # counted on accepted events only


def test_strict_keeps_rejecting_unknown_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIERWATCH_STRICT", "true")
    assert Settings().strict is True
    p, registry = processor(strict=True)
    (rec,) = dead(p.handle("feedback", InMessage("tierwatch.feedback", 0, 0, b"k", orjson.dumps(
        {"event_id": "f", "request_id": "q", "ts": "2026-03-01T12:00:00Z", "kind": "thumbs",
         "value": 1, "trace_id": "t"}))))
    assert rec["reason_class"] == "invalid_field" and rec["field"] == "trace_id"
    assert sample(registry, "tierwatch_unknown_fields_total", topic="feedback",
                  field="trace_id") == 0


def test_unknown_field_labels_are_capped_and_truncated() -> None:
    p, registry = processor()
    p.metrics._field_names.limit = 5
    docs = [{"event_id": f"f{i}", "request_id": "q", "ts": "2026-03-01T12:00:00Z",
             "kind": "thumbs", "value": 1, f"{i}{'x' * 100}": 1} for i in range(8)]
    p.handle("feedback", InMessage("tierwatch.feedback", 0, 0, b"k", orjson.dumps(docs)))
    labels = {s.labels["field"]: s.value for m in registry.collect()
              if m.name == "tierwatch_unknown_fields" for s in m.samples
              if s.name.endswith("_total")}
    assert len(labels) == 6 and labels[OTHER] == 3
    assert all(len(name) <= 64 for name in labels)


def test_feedback_unknown_fields_in_a_wire_format_batch() -> None:
    d = decode_message(wire(11, [{"event_id": "f", "request_id": "q", "kind": "rating",
                                  "value": 4, "ts": "2026-03-01T12:00:00Z", "span": {"a": 1},
                                  "locale": "fr"}] * 2), FeedbackEvent)
    assert len(d.events) == 2 and d.schema_id == 11
    assert d.unknown_fields == {"span": 2, "locale": 2}


@pytest.mark.parametrize(("strict", "accepted"), [(False, 2), (True, 1)])
def test_the_replay_follows_the_strict_setting(tmp_path: Path, strict: bool,
                                               accepted: int) -> None:
    path = tmp_path / "routing.jsonl.gz"
    lines = [routing(0), routing(1, trace_id="abc")]
    path.write_bytes(gzip.compress(b"\n".join(orjson.dumps(x) for x in lines) + b"\n"))
    replay = Replay(Settings(strict=strict), Monitor(), tmp_path / "out")
    replay.run(path, progress=False)
    assert sum(replay.monitor.counts.routed.values()) == accepted
    dlq = (tmp_path / "out" / "dlq.jsonl").read_text().splitlines()
    assert len(dlq) == 2 - accepted
    if dlq:
        assert json.loads(dlq[0])["field"] == "trace_id"
