"""The worker on a real broker and ``tierwatch replay`` agree, byte for byte.

Thirty days of the Pareto trap at 0.03 routing events/s go through ``Replay`` and, as
the very same messages, through a ``tierwatch worker`` subprocess on a real broker. The
alerts, control and review topics then hold exactly the lines the replay wrote, and the
DLQ the same records up to ``rejected_at`` (wall time in the worker, the watermark in the
replay).

Why the order of production matters, and how it is made the same:

- Evaluations run at event-time boundaries, once the watermark passes them, after the
  message that moved it. What an evaluation sees is everything processed before it, so
  both sides must process the same messages in the same order, with the evaluations at
  the same points.
- The worker reads the routing and the feedback topics in one stream, but Kafka orders
  messages only within a partition: a consumer that finds both topics full takes up to
  ``max_partition_fetch_bytes`` from each, and the feedback topic (small messages) would
  run days ahead of the routing one. So the test produces one message at a time and waits
  until the worker has processed it (``tierwatch_processing_seconds_count``), in the order
  of :meth:`Replay.messages`: windows of merged lines that close at each evaluation
  boundary, each as a routing batch, then a feedback batch.
- The worker takes one message per batch (``TIERWATCH_BATCH_SIZE=1``), so it flushes (runs
  the due evaluations) after every message, as the replay does.
- One partition per input topic, and output topics have one partition: per-topic order
  is total on both sides.

With the same messages in the same order, the monitor's state at every evaluation is the
same, down to the order of every floating-point sum, so the outputs are equal as bytes.
"""

from __future__ import annotations

import re
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka import KafkaConsumer, KafkaProducer

from pipeline.demo import simulate
from pipeline.replay import Replay, build_monitor
from pipeline.settings import Settings
from pipeline.topics import create_topics
from tests.integration.worker_proc import http_get, running_worker

pytestmark = pytest.mark.kafka

DAYS, RATE, SEED = 30.0, 0.03, 7
COMPARED = ("alerts", "control", "review", "dlq")
_PROCESSED = re.compile(rb'^tierwatch_processing_seconds_count\{topic="(\w+)"\} (\S+)$', re.M)


def processed(base: str) -> int:
    """Input messages the worker has handled and flushed (all input topics)."""
    return int(sum(float(v) for _, v in _PROCESSED.findall(http_get(base + "/metrics"))))


def wait_processed(base: str, n: int, proc: Any, log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    delay = 0.002
    while processed(base) < n:
        if proc.poll() is not None:
            raise RuntimeError(f"worker exited: {log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"worker did not process message {n}: {log.read_text()[-3000:]}")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.05)


def consume(bootstrap: str, topic: str, expected: int, timeout: float) -> list[bytes]:
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             enable_auto_commit=False, group_id=None)
    out: list[bytes] = []
    try:
        deadline = time.monotonic() + timeout
        while len(out) < expected and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                out.extend(r.value for r in records)
        for records in consumer.poll(timeout_ms=1500).values():  # anything beyond
            out.extend(r.value for r in records)
    finally:
        consumer.close()
    return out


def _without_wall_time(dead_letter: bytes) -> dict[str, Any]:
    record: dict[str, Any] = orjson.loads(dead_letter)
    record.pop("rejected_at")
    return record


def test_worker_and_replay_publish_the_same_bytes(kafka_bootstrap: str, tmp_path: Path) -> None:
    started = time.monotonic()
    routing, feedback, baselines, _ = simulate("pareto-trap", tmp_path / "data", days=DAYS,
                                               rate=RATE, seed=SEED)
    assert (tmp_path / "data" / "baselines.jsonl").read_bytes() == b"", "no retrains here"
    prefix = f"t{uuid.uuid4().hex[:8]}.tierwatch"
    settings = Settings(bootstrap_servers=kafka_bootstrap, topic_prefix=prefix, partitions=1,
                        app_id=f"{prefix}-worker", batch_size=1, max_future_s=1e10)

    replay = Replay(settings, build_monitor(settings), tmp_path / "replay")
    result = replay.run(routing, feedback, baselines, progress=False)
    want = {k: (tmp_path / "replay" / f"{k}.jsonl").read_bytes().splitlines() for k in COMPARED}
    firing = [orjson.loads(a) for a in want["alerts"] if b'"state":"firing"' in a]
    assert firing, "the data must make at least one alert fire"
    assert want["control"] and want["review"]
    replayed = time.monotonic()

    create_topics(settings)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", linger_ms=0,
                             max_request_size=8 * 1024 * 1024)
    env = {"TIERWATCH_BOOTSTRAP_SERVERS": kafka_bootstrap, "TIERWATCH_TOPIC_PREFIX": prefix,
           "TIERWATCH_APP_ID": settings.app_id, "TIERWATCH_PARTITIONS": "1",
           "TIERWATCH_BATCH_SIZE": "1", "TIERWATCH_MAX_FUTURE_S": "1e10"}
    log = tmp_path / "worker.log"
    sent = 0
    try:
        with running_worker(env, log) as (proc, base):
            for b in baselines:  # the replay sets them before its first event
                producer.send(settings.topic("baselines"), key=b.router_id.encode(),
                              value=b.model_dump_json().encode())
                producer.flush()
                sent += 1
                wait_processed(base, sent, proc, log)
            for msg in replay.messages(routing, feedback):
                producer.send(settings.topic(msg.kind), key=msg.key, value=msg.value)
                producer.flush()
                sent += 1
                wait_processed(base, sent, proc, log)
            produced = time.monotonic()
            got = {k: consume(kafka_bootstrap, settings.topic(k), len(want[k]), timeout=60)
                   for k in COMPARED}
    finally:
        producer.close()
    assert sent == len(baselines) + result.messages

    for k in ("alerts", "control", "review"):
        assert len(got[k]) == len(want[k]), k
        for i, (g, w) in enumerate(zip(got[k], want[k], strict=True)):
            assert g == w, f"{k}[{i}]:\nworker {g[:600]!r}\nreplay {w[:600]!r}"
    assert [_without_wall_time(v) for v in got["dlq"]] == [
        _without_wall_time(v) for v in want["dlq"]]
    print(f"\n{result.events} events, {result.messages} messages; replay "
          f"{replayed - started:.0f}s, worker {produced - replayed:.0f}s; "
          f"{len(want['alerts'])} alerts ({len(firing)} firing), {len(want['control'])} "
          f"control, {len(want['review'])} review, {len(want['dlq'])} dlq")
