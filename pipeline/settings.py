"""All configuration in one place: ``TIERWATCH_*`` environment variables and CLI flags.

>>> Settings(bootstrap_servers="kafka:9092").topic("routing")
'tierwatch.routing'
>>> Settings(topic_prefix="staging.tierwatch").topic("dlq")
'staging.tierwatch.dlq'
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

TOPIC_NAMES = ("routing", "feedback", "baselines", "control", "alerts", "review", "dlq")
COMPACTED = frozenset({"baselines", "control"})


class Settings(BaseSettings):
    """tierwatch settings. Every field reads ``TIERWATCH_<FIELD>`` from the environment.

    ``KAFKA_BOOTSTRAP_SERVERS`` is honoured too, so one variable points the worker,
    the CLI and the tests at an existing cluster.
    """

    model_config = SettingsConfigDict(env_prefix="TIERWATCH_", extra="ignore")

    bootstrap_servers: str = Field(
        default="127.0.0.1:9092",
        validation_alias=AliasChoices(
            "bootstrap_servers", "TIERWATCH_BOOTSTRAP_SERVERS", "KAFKA_BOOTSTRAP_SERVERS"
        ),
        description="Kafka bootstrap servers (host:port,…).",
    )
    topic_prefix: str = Field("tierwatch", description="Prefix of every topic name.")
    partitions: int = Field(4, ge=1, description="Partitions of the input topics.")
    replication_factor: int = Field(1, ge=1, description="Replication factor of new topics.")
    app_id: str = Field("tierwatch-worker", description="Kafka consumer group / faust app id.")
    web_port: int = Field(6066, ge=1, le=65535,
                          description="Port of the worker's web server: /metrics and /status.")
    batch_size: int = Field(1000, ge=1, description="Messages taken per agent batch.")
    # faust's take waits this long after each batch is processed before handing over the
    # next, so it adds to every event's latency: 0.5 s gave p50 1.3 s at 10k events/s
    batch_within_s: float = Field(0.05, gt=0, description="Longest wait for a batch.")
    max_event_bytes: int = Field(64 * 1024, ge=1024, description="Largest single event.")
    max_message_bytes: int = Field(8 * 1024 * 1024, ge=1024, description="Largest message.")
    allowed_lateness_s: float = Field(
        7 * 86400, ge=0, description="Event-time lateness accepted before the DLQ."
    )
    max_future_s: float = Field(300, ge=0, description="How far ahead of wall time an event "
                                "may be before it is dead-lettered as from the future.")
    join_ttl_s: float = Field(30 * 86400, gt=0, description="Feedback↔routing join TTL.")
    eval_every_s: float = Field(3600, gt=0, description="Event-time evaluation cadence.")
    false_alarms_per_30d: float = Field(
        1.0, gt=0, description="Target false pages per router per 30 days."
    )
    # Drift findings keep budgets of their own, per level (README, statistics section).
    ticket_false_alarms_per_30d: float = Field(
        1.0, gt=0, description="Target false drift tickets (a drift above its effect floor) "
        "per router per 30 days.")
    info_false_alarms_per_30d: float = Field(
        1.0, gt=0, description="Target false info findings (a certain drift below its "
        "effect floor; never pages) per router per 30 days.")
    sequential_drift: bool = Field(
        True, description="Also watch drift minute by minute with sequential tests (half "
        "the false-alarm budget each for them and the hourly window tests).")
    control_mode: Literal["advisory", "enforce"] = Field(
        "advisory", description="Mode of published recommendations."
    )
    control_key_id: str = Field("dev", description="Id of the signing key.")
    control_key: str = Field(
        "tierwatch-dev-key-change-me", min_length=16, description="HMAC key (hex or text)."
    )
    support_contact_cost_usd: float = Field(
        8.0, ge=0, description="What one support contact costs (for hidden cost).")
    bad_outcome_cost_usd: float = Field(
        0.0, ge=0, description="What one bad answer costs beyond its support contacts.")
    session_timeout_s: float = Field(
        30.0, ge=6, description="Consumer group session timeout: how soon a dead worker's "
        "partitions move to a live one (the broker's minimum is 6 s by default).")
    checkpoint_dir: Path | None = Field(
        None, description="Where the worker keeps its checkpoints (state + input offsets); "
        "default .run/checkpoints/<app_id>. One worker per directory.")
    checkpoint_every_s: float = Field(
        30.0, gt=0, description="Wall-time interval between checkpoints; committed offsets "
        "follow them, so a restart re-reads at most this much input.")
    merge_idle_s: float = Field(
        2.0, ge=0, description="How long the ordered merge waits for a partition that has "
        "not delivered its next message before releasing without it.")
    merge_max_buffered: int = Field(
        5_000, ge=1, description="Messages the ordered merge may hold before releasing.")
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator("topic_prefix")
    @classmethod
    def _no_trailing_dot(cls, v: str) -> str:
        if not v or v.endswith("."):
            raise ValueError("topic_prefix must be non-empty and not end with '.'")
        return v

    def topic(self, name: str) -> str:
        """Full topic name of one of :data:`TOPIC_NAMES`."""
        if name not in TOPIC_NAMES:
            raise ValueError(f"unknown topic {name!r}; one of {TOPIC_NAMES}")
        return f"{self.topic_prefix}.{name}"
