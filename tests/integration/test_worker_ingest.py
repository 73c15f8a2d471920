"""The worker on a real broker: exact per-tier counts, an exact DLQ, and /metrics agreeing."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka import KafkaConsumer, KafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from pipeline.settings import Settings
from pipeline.topics import create_topics
from tests.integration.worker_proc import http_get, running_worker

pytestmark = pytest.mark.kafka

ROUTERS = ("support", "billing", "search")
TIERS = ("cheap", "capable")
KINDS = ("thumbs", "rating", "review", "shadow", "support_contact", "survey")
VALUES = {"thumbs": 0, "rating": 4, "review": 0.5, "shadow": 1.0, "support_contact": 1,
          "survey": 0.2}


def routing(i: int, rng: random.Random) -> dict[str, Any]:
    score = rng.random()
    return {
        "event_id": f"r-{i}", "request_id": f"q-{i}", "router_id": rng.choice(ROUTERS),
        "tier": "cheap" if score >= 0.6 else "capable",
        "ts": f"2026-05-01T{i // 3600 % 24:02d}:{i // 60 % 60:02d}:{i % 60:02d}+00:00",
        "score": score, "route_reason": "confident_cheap" if score >= 0.6 else
        "confident_capable",
        "thresholds": {"cheap_above": 0.6, "capable_below": 0.4, "exploration_rate": 0.05},
    }


def feedback(i: int, rng: random.Random) -> dict[str, Any]:
    kind = KINDS[i % len(KINDS)]
    return {"event_id": f"f-{i}", "request_id": f"q-{i}", "router_id": rng.choice(ROUTERS),
            "ts": "2026-05-01T12:00:00+00:00", "kind": kind, "value": VALUES[kind]}


def malformed(rng: random.Random) -> list[tuple[str, bytes, str]]:
    """500 bad messages: (topic short name, bytes, the field or class the reason names)."""

    def bad_routing(**change: Any) -> bytes:
        ev = routing(10**6 + rng.randrange(10**6), rng)
        ev.update(change)
        return orjson.dumps({k: v for k, v in ev.items() if v is not ...})

    def bad_feedback(**change: Any) -> bytes:
        ev = feedback(10**6 + rng.randrange(10**6), rng)
        ev.update(change)
        return orjson.dumps(ev)

    nan = bad_routing(score=0.123456).replace(b"0.123456", b"NaN")
    inf = bad_routing(score=0.123456).replace(b"0.123456", b"Infinity")
    classes: list[tuple[str, bytes, str]] = [
        ("routing", bad_routing(score=1.5), "score"),
        ("routing", nan, "score"),
        ("routing", inf, "score"),
        ("routing", bad_routing(event_id=...), "event_id"),
        ("routing", bad_routing(route_reason="vibes"), "route_reason"),
        ("feedback", bad_feedback(kind="emoji"), "kind"),
        ("routing", bad_routing(ts="2026-05-01T10:00:00"), "ts"),
        ("routing", bad_routing(model="m" * 200) + b" " * 70_000, "oversized"),
        ("feedback", b"\x00\x01 not json at all", "invalid_json"),
        ("routing", bad_routing(score="high"), "score"),
    ]
    return [classes[i % len(classes)] for i in range(500)]


def consume_all(bootstrap: str, topic: str, expected: int, timeout: float) -> list[Any]:
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             enable_auto_commit=False, consumer_timeout_ms=1000)
    out: list[Any] = []
    deadline = time.monotonic() + timeout
    while len(out) < expected and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=500).values():
            out.extend(records)
    # a short grace to catch anything beyond the expected count
    for records in consumer.poll(timeout_ms=1500).values():
        out.extend(records)
    consumer.close()
    return out


def scrape(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def test_counts_dlq_and_metrics_are_exact(kafka_bootstrap: str, tmp_path: Path) -> None:
    rng = random.Random(7)
    prefix = f"t{uuid.uuid4().hex[:8]}.tierwatch"
    settings = Settings(bootstrap_servers=kafka_bootstrap, topic_prefix=prefix, partitions=2)
    create_topics(settings)

    routings = [routing(i, rng) for i in range(10_000)]
    feedbacks = [feedback(i, rng) for i in range(1_000)]
    bad = malformed(rng)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=5,
                             max_request_size=2_000_000)
    # routing mostly in batches of 100 (the envelope), with 10 batches carrying a bad event
    bad_in_batch = [b for b in bad if b[0] == "routing" and b[2] == "score"
                    and b"NaN" not in b[1] and b"Infinity" not in b[1]][:10]
    rest_bad = list(bad)
    for k, start in enumerate(range(0, 9_000, 100)):
        batch: list[Any] = routings[start:start + 100]
        if k < len(bad_in_batch):
            batch = [*batch[:50], orjson.loads(bad_in_batch[k][1]), *batch[50:]]
            rest_bad.remove(bad_in_batch[k])
        producer.send(settings.topic("routing"), key=batch[0]["request_id"].encode(),
                      value=orjson.dumps(batch))
    for ev in routings[9_000:]:
        producer.send(settings.topic("routing"), key=ev["request_id"].encode(),
                      value=orjson.dumps(ev))
    for ev in feedbacks:
        producer.send(settings.topic("feedback"), key=ev["request_id"].encode(),
                      value=orjson.dumps(ev))
    for topic, raw, _ in rest_bad:
        producer.send(settings.topic(topic), key=b"bad", value=raw)
    producer.flush()
    producer.close()

    env = {"TIERWATCH_BOOTSTRAP_SERVERS": kafka_bootstrap, "TIERWATCH_TOPIC_PREFIX": prefix,
           "TIERWATCH_APP_ID": f"{prefix}-worker", "TIERWATCH_MAX_FUTURE_S": "1e10"}
    with running_worker(env, tmp_path / "worker.log") as (_, base):
        dlq = consume_all(kafka_bootstrap, settings.topic("dlq"), 500, timeout=120)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            status = json.loads(http_get(base + "/status"))
            total = sum(n for r in status["routers"].values() for n in r["routed"].values())
            if total >= 10_000:
                break
            time.sleep(0.5)
        exposition = http_get(base + "/metrics").decode()
        metrics = scrape(exposition)

    # DLQ: exactly the 500, each with a reason naming the offending field or class
    assert len(dlq) == 500
    records = [orjson.loads(m.value) for m in dlq]
    expected_marks = Counter(mark for _, _, mark in bad)
    got_marks: Counter[str] = Counter()
    for rec in records:
        assert rec["reason"] and rec["topic"].startswith(prefix)
        assert rec["offset"] is not None and rec["partition"] is not None
        mark = rec.get("field") or rec["reason_class"]
        assert rec.get("field") is None or rec["field"] in rec["reason"]
        got_marks[mark] += 1
    assert got_marks == expected_marks
    assert sum(1 for r in records if r.get("index") == 50) == len(bad_in_batch)

    # per-router, per-tier counts: exact, in /status and in /metrics
    want = Counter((e["router_id"], e["tier"]) for e in routings)
    got = {(router, tier): n for router, r in status["routers"].items()
           for tier, n in r["routed"].items()}
    assert got == dict(want)
    for (router, tier), n in want.items():
        key = ("tierwatch_routed_events_total", (("router_id", router), ("tier", tier)))
        assert metrics[key] == n
    want_fb = Counter((e["router_id"], e["kind"]) for e in feedbacks)
    for (router, kind), n in want_fb.items():
        assert metrics[("tierwatch_feedback_events_total",
                        (("kind", kind), ("router_id", router)))] == n
    dl = {k[1]: v for k, v in metrics.items() if k[0] == "tierwatch_dead_letters_total"}
    assert sum(dl.values()) == 500

    # the exposition passes promtool's lint
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CI") == "true":
            pytest.fail("promtool missing: run `make system-deps`")
        pytest.skip("promtool missing")
    check = subprocess.run([promtool, "check", "metrics"], input=exposition.encode(),
                           capture_output=True, timeout=60)
    assert check.returncode == 0, check.stdout.decode() + check.stderr.decode()
