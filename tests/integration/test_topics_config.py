"""``tierwatch topics create`` lets the broker take every message the worker takes (#15).

The worker accepts messages up to ``TIERWATCH_MAX_MESSAGE_BYTES`` (8 MiB by default);
the broker's default ``max.message.bytes`` is about 1 MiB, which refused larger batches
at the producer. The input topics are now created with a limit that fits the worker's.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaProducer
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient

from pipeline.settings import Settings
from pipeline.topics import create_topics, max_message_bytes

pytestmark = pytest.mark.kafka


def _topic_config(bootstrap: str, topic: str) -> dict[str, str]:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        resp = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
        return {k: v["value"] for k, v in resp["topic"][topic].items()}
    finally:
        admin.close()


def test_input_topics_take_the_workers_largest_message(kafka_bootstrap: str) -> None:
    prefix = f"m{uuid.uuid4().hex[:8]}.tierwatch"
    settings = Settings(bootstrap_servers=kafka_bootstrap, topic_prefix=prefix,
                        max_message_bytes=3 * 1024 * 1024)
    create_topics(settings)
    for name in ("routing", "feedback", "baselines"):
        config = _topic_config(kafka_bootstrap, settings.topic(name))
        assert int(config["max.message.bytes"]) == max_message_bytes(settings)
    assert _topic_config(kafka_bootstrap, settings.topic("baselines"))["cleanup.policy"] \
        == "compact"
    # a 2.5 MB batch: above the broker's default limit, below the worker's
    value = b"[" + b",".join([b'{"pad":"' + b"x" * 1000 + b'"}'] * 2500) + b"]"
    assert 1_048_588 < len(value) < settings.max_message_bytes

    async def send() -> int:
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap,
                                    max_request_size=8 * 1024 * 1024)
        await producer.start()
        try:
            meta = await producer.send_and_wait(settings.topic("routing"), value)
            return int(meta.offset)
        finally:
            await producer.stop()

    assert asyncio.run(send()) == 0
