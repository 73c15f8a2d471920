"""Create tierwatch's topics with kafka-python's admin client; running it twice is harmless."""

from __future__ import annotations

from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from pipeline import kafka_clients
from pipeline.settings import COMPACTED, TOPIC_NAMES, Settings

# Input topics are partitioned for scale-out; outputs are small and ordered per key.
PARTITIONED = frozenset({"routing", "feedback"})


def topic_specs(settings: Settings) -> list[NewTopic]:
    """The NewTopic of each tierwatch topic under these settings."""
    specs = []
    for name in TOPIC_NAMES:
        configs = {"cleanup.policy": "compact"} if name in COMPACTED else {}
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
