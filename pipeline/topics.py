"""Create tierwatch's topics with kafka-python's admin client; running it twice is harmless."""

from __future__ import annotations

from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from pipeline import kafka_clients
from pipeline.settings import COMPACTED, TOPIC_NAMES, Settings

# Input topics are partitioned for scale-out; outputs are small and ordered per key.
PARTITIONED = frozenset({"routing", "feedback"})
#: topics that carry messages as large as the worker takes
INPUTS = frozenset({"routing", "feedback", "baselines"})
#: Kafka's default ``max.message.bytes`` (1 MiB plus the record-batch overhead)
BROKER_DEFAULT_MAX_MESSAGE_BYTES = 1_048_588
#: a record batch holds more than the value: key, headers and the batch header
BATCH_OVERHEAD_BYTES = 64 * 1024


def max_message_bytes(settings: Settings) -> int:
    """``max.message.bytes`` of the input topics: the worker's largest message plus the
    record-batch overhead, never below the broker's default.

    So every message the worker would take reaches it (a larger one is dead-lettered
    ``oversized`` by the worker, naming its size), instead of the broker refusing it
    at the producer below the worker's limit.

    >>> max_message_bytes(Settings(max_message_bytes=8 * 1024 * 1024))
    8454144
    >>> max_message_bytes(Settings(max_message_bytes=64 * 1024))
    1048588
    """
    return max(settings.max_message_bytes + BATCH_OVERHEAD_BYTES,
               BROKER_DEFAULT_MAX_MESSAGE_BYTES)


def topic_specs(settings: Settings) -> list[NewTopic]:
    """The NewTopic of each tierwatch topic under these settings."""
    specs = []
    for name in TOPIC_NAMES:
        configs = {"cleanup.policy": "compact"} if name in COMPACTED else {}
        if name in INPUTS:
            configs["max.message.bytes"] = str(max_message_bytes(settings))
        specs.append(NewTopic(settings.topic(name),
                              settings.partitions if name in PARTITIONED else 1,
                              settings.replication_factor, topic_configs=configs))
    return specs


def create_topics(settings: Settings) -> dict[str, str]:
    """Create every missing topic; return ``{topic: "created" | "exists"}``."""
    admin = kafka_clients.admin(settings, client_id="tierwatch-admin")
    try:
        existing = set(admin.list_topics())
        result = {}
        for spec in topic_specs(settings):
            if spec.name in existing:
                result[spec.name] = "exists"
                continue
            try:
                admin.create_topics([spec])
                result[spec.name] = "created"
            except TopicAlreadyExistsError:
                result[spec.name] = "exists"
        return result
    finally:
        admin.close()
