"""Through a real broker: messages in the Schema Registry wire format and events with
added fields reach the worker's counts; the schema ids and unknown fields are counted;
a bad event in a framed message is dead-lettered with the original bytes."""

from __future__ import annotations

import base64
import json
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka import KafkaProducer

from pipeline.settings import Settings
from pipeline.topics import create_topics
from tests.integration.test_worker_ingest import consume_all, scrape
from tests.integration.worker_proc import http_get, running_worker

pytestmark = pytest.mark.kafka

TH = {"cheap_above": 0.6, "capable_below": 0.4, "exploration_rate": 0.05}
SCHEMA_ID = 0x80FF00FE  # its bytes are not valid UTF-8, as many real ids' are not


def routing(i: int, **extra: Any) -> dict[str, Any]:
    return {"event_id": f"r-{i}", "request_id": f"q-{i}", "router_id": "support",
            "tier": "cheap", "ts": f"2026-05-01T00:{i // 60 % 60:02d}:{i % 60:02d}Z",
            "score": 0.9, "route_reason": "confident_cheap", "thresholds": TH, **extra}


def framed(schema_id: int, doc: Any) -> bytes:
    return b"\x00" + schema_id.to_bytes(4, "big") + orjson.dumps(doc)


def test_wire_format_and_added_fields_through_the_worker(kafka_bootstrap: str,
                                                          tmp_path: Path) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}.tierwatch"
    settings = Settings(bootstrap_servers=kafka_bootstrap, topic_prefix=prefix, partitions=1)
    create_topics(settings)
    topic = settings.topic("routing")
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    for i in range(20):                                          # framed, one event each
        producer.send(topic, key=f"q-{i}".encode(), value=framed(SCHEMA_ID, routing(i)))
    batch = [routing(i) for i in range(20, 30)]                  # a framed batch of 10
    producer.send(topic, key=b"q-20", value=framed(7, batch))
    for i in range(30, 35):                                      # plain, with added fields
        producer.send(topic, key=f"q-{i}".encode(),
                      value=orjson.dumps(routing(i, trace_id=f"t{i}")))
    bad = framed(SCHEMA_ID, [routing(35), routing(36, score=1.5)])  # one bad event
    producer.send(topic, key=b"q-35", value=bad)
    broken = b"\x00" + SCHEMA_ID.to_bytes(4, "big") + b'{"event_id": '  # not JSON after it
    producer.send(topic, key=b"broken", value=broken)
    producer.flush()
    producer.close()

    env = {"TIERWATCH_BOOTSTRAP_SERVERS": kafka_bootstrap, "TIERWATCH_TOPIC_PREFIX": prefix,
           "TIERWATCH_APP_ID": f"{prefix}-worker", "TIERWATCH_MAX_FUTURE_S": "1e10",
           "TIERWATCH_PARTITIONS": "1", "TIERWATCH_CHECKPOINT_DIR": str(tmp_path / "ckpt")}
    with running_worker(env, tmp_path / "worker.log") as (_, base):
        dlq = consume_all(kafka_bootstrap, settings.topic("dlq"), 2, timeout=90)
        deadline = time.monotonic() + 60
        routed = 0
        while time.monotonic() < deadline and routed < 36:
            status = json.loads(http_get(base + "/status"))
            routed = sum(n for r in status["routers"].values() for n in r["routed"].values())
            time.sleep(0.5)
        metrics = scrape(http_get(base + "/metrics").decode())

    assert routed == 36  # 20 + 10 + 5 + the good event of the bad batch
    assert len(dlq) == 2
    records = [orjson.loads(m.value) for m in dlq]
    (rec,) = [r for r in records if r.get("index") is not None]
    (whole,) = [r for r in records if r.get("index") is None]
    assert rec["index"] == 1 and rec["field"] == "score" and rec["reason_class"] == "invalid_field"
    assert orjson.loads(rec["payload"]) == routing(36, score=1.5)  # the event, found in it
    # a framed message that is not JSON: named as such (not "not valid UTF-8"), and kept
    # byte for byte, header included
    assert whole["reason_class"] == "invalid_json" and "UTF-8" not in whole["reason"]
    assert whole["payload_encoding"] == "base64"
    assert base64.b64decode(whole["payload"]) == broken

    def count(name: str, **labels: str) -> float:
        return metrics.get((name, tuple(sorted(labels.items()))), 0.0)

    framed_total = "tierwatch_schema_registry_messages_total"
    assert count(framed_total, topic="routing", schema_id=str(SCHEMA_ID)) == 22
    assert count(framed_total, topic="routing", schema_id="7") == 1
    assert count("tierwatch_unknown_fields_total", topic="routing", field="trace_id") == 5
    assert count("tierwatch_dead_letters_total", topic="routing", reason="invalid_field") == 1
    assert count("tierwatch_dead_letters_total", topic="routing", reason="invalid_json") == 1
