"""Smoke tests: each pinned Kafka client against the real broker.

kafka-python, aiokafka and faust-streaming each produce, consume and commit offsets,
so a broker or client upgrade that breaks the wire protocol fails here first.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition as AIOTopicPartition
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import OffsetSpec
from kafka_broker import create_topics, unique_topic

# func_only: the session broker's first start (maybe fetching jars) is not the test's time.
pytestmark = [pytest.mark.kafka, pytest.mark.timeout(60, func_only=True)]

T = TypeVar("T")


def _eventually(check: Callable[[], T | None], timeout: float, what: str) -> T:
    """Poll ``check`` until it returns something other than None."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result is not None:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.2)


def _group_offsets(bootstrap: str, group: str) -> dict[TopicPartition, int]:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="smoke-admin")
    try:
        committed = admin.list_group_offsets(group).get(group, {})
    finally:
        admin.close()
    return {tp: meta.offset for tp, meta in committed.items()}


def test_kafka_python_produce_consume_commit_list_offsets(kafka_bootstrap: str) -> None:
    topic = unique_topic("smoke-kafka-python")
    create_topics(kafka_bootstrap, [topic], partitions=2)
    sent = {f"k{i}".encode(): f"v{i}".encode() for i in range(20)}

    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", linger_ms=5)
    try:
        futures = [producer.send(topic, key=k, value=v) for k, v in sent.items()]
        producer.flush(timeout=30)
        metadata = [f.get(timeout=30) for f in futures]
    finally:
        producer.close(timeout=10)
    assert {m.partition for m in metadata} == {0, 1}

    group = f"smoke-kafka-python-{uuid.uuid4().hex[:8]}"
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    received: dict[bytes, bytes] = {}
    try:
        deadline = time.monotonic() + 30
        while len(received) < len(sent) and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                received.update((r.key, r.value) for r in records)
        assert received == sent
        consumer.commit()

        partitions = [TopicPartition(topic, p) for p in (0, 1)]
        end = consumer.end_offsets(partitions)
        assert consumer.beginning_offsets(partitions) == {tp: 0 for tp in partitions}
        assert sum(end.values()) == len(sent)
        assert {tp: consumer.committed(tp) for tp in partitions} == end
        # ListOffsets by timestamp: everything was written after this point.
        by_time = consumer.offsets_for_times({tp: 0 for tp in partitions})
        assert {tp: o.offset for tp, o in by_time.items() if o is not None} == {
            tp: 0 for tp in partitions
        }
    finally:
        consumer.close()

    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap, client_id="smoke-admin")
    try:
        latest = admin.list_partition_offsets({tp: OffsetSpec.LATEST for tp in partitions})
    finally:
        admin.close()
    assert {tp: o.offset for tp, o in latest.items()} == end
    assert _group_offsets(kafka_bootstrap, group) == end


def test_aiokafka_produce_getmany_commit(kafka_bootstrap: str) -> None:
    topic = unique_topic("smoke-aiokafka")
    create_topics(kafka_bootstrap, [topic])
    group = f"smoke-aiokafka-{uuid.uuid4().hex[:8]}"
    tp = AIOTopicPartition(topic, 0)
    count = 500

    async def scenario() -> tuple[list[bytes], int | None, int]:
        # Idempotence needs InitProducerId, i.e. a working transaction coordinator.
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, enable_idempotence=True)
        await producer.start()
        try:
            batch = [producer.send(topic, f"m{i}".encode()) for i in range(count)]
            await asyncio.gather(*[await f for f in batch])
        finally:
            await producer.stop()

        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=kafka_bootstrap,
            group_id=group,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await consumer.start()
        values: list[bytes] = []
        try:
            while len(values) < count:
                for records in (await consumer.getmany(timeout_ms=1000, max_records=200)).values():
                    values.extend(r.value for r in records if r.value is not None)
            await consumer.commit()
            committed = await consumer.committed(tp)
            end = (await consumer.end_offsets([tp]))[tp]
        finally:
            await consumer.stop()
        return values, committed, end

    values, committed, end = asyncio.run(asyncio.wait_for(scenario(), timeout=45))
    assert values == [f"m{i}".encode() for i in range(count)]
    assert committed == end == count
    assert _group_offsets(kafka_bootstrap, group) == {TopicPartition(topic, 0): count}


FAUST_APP = textwrap.dedent(
    '''
    """A one-agent faust app: upper-cases every value of SOURCE into SINK."""
    import os

    import faust

    app = faust.App(
        os.environ["APP_ID"],
        broker="kafka://" + os.environ["BOOTSTRAP"],
        store="memory://",
        web_enabled=False,
        topic_partitions=1,
        topic_replication_factor=1,
        broker_commit_interval=0.5,
    )
    source = app.topic(os.environ["SOURCE"], value_serializer="raw")
    sink = app.topic(os.environ["SINK"], value_serializer="raw")


    @app.agent(source, concurrency=1)
    async def upper(stream):
        async for value in stream:
            await sink.send(value=value.upper())


    if __name__ == "__main__":
        app.main()
    '''
)


def test_faust_agent_consumes_produces_and_commits(kafka_bootstrap: str, tmp_path: Path) -> None:
    source, sink = unique_topic("smoke-faust-in"), unique_topic("smoke-faust-out")
    create_topics(kafka_bootstrap, [source, sink])
    app_id = f"smoke-faust-{uuid.uuid4().hex[:8]}"
    count = 50

    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    try:
        for i in range(count):
            producer.send(source, f"event-{i}".encode())
        producer.flush(timeout=30)
    finally:
        producer.close(timeout=10)

    app_file = tmp_path / "smoke_faust_app.py"
    app_file.write_text(FAUST_APP)
    log_path = tmp_path / "worker.log"
    env = {
        **os.environ,
        "APP_ID": app_id,
        "BOOTSTRAP": kafka_bootstrap,
        "SOURCE": source,
        "SINK": sink,
    }
    with log_path.open("wb") as log:
        worker = subprocess.Popen(
            # The worker CLI overrides web_enabled=False unless told --without-web.
            [sys.executable, str(app_file), "worker", "--without-web", "--loglevel", "warn"],
            cwd=tmp_path,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        consumer = KafkaConsumer(
            bootstrap_servers=kafka_bootstrap,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        consumer.assign([TopicPartition(sink, 0)])
        out: list[bytes] = []
        try:
            deadline = time.monotonic() + 40
            while len(out) < count and time.monotonic() < deadline:
                assert worker.poll() is None, "faust worker exited early"
                for records in consumer.poll(timeout_ms=500).values():
                    out.extend(r.value for r in records)
        finally:
            consumer.close()
        assert out == [f"EVENT-{i}".encode() for i in range(count)]

        committed = _eventually(
            lambda: (
                _group_offsets(kafka_bootstrap, app_id).get(TopicPartition(source, 0)) == count
                or None
            ),
            timeout=10,
            what="faust to commit the source offsets",
        )
        assert committed
    except BaseException:
        print(log_path.read_text(errors="replace")[-5000:])
        raise
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=15)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
