"""All configuration in one place: ``TIERWATCH_*`` environment variables and CLI flags.

>>> Settings(bootstrap_servers="kafka:9092").topic("routing")
'tierwatch.routing'
>>> Settings(topic_prefix="staging.tierwatch").topic("dlq")
'staging.tierwatch.dlq'
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, field_validator, model_validator
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
        json_schema_extra={"group": "connection"})
    connect_timeout_s: float = Field(
        10.0, gt=0, description="How long a command waits for the Kafka cluster (or the "
        "worker's web server) to answer before it gives up with an error.",
        json_schema_extra={"group": "connection"})
    topic_prefix: str = Field("tierwatch", description="Prefix of every topic name.",
        json_schema_extra={"group": "topics"})
    partitions: int = Field(4, ge=1, description="Partitions of the input topics.",
        json_schema_extra={"group": "topics"})
    replication_factor: int = Field(1, ge=1, description="Replication factor of new topics.",
        json_schema_extra={"group": "topics"})
    app_id: str = Field("tierwatch-worker", description="Kafka consumer group / faust app id.",
        json_schema_extra={"group": "worker"})
    web_port: int = Field(6066, ge=1, le=65535,
                          description="Port of the worker's web server: /metrics and /status.",
        json_schema_extra={"group": "web"})
    batch_size: int = Field(1000, ge=1, description="Messages taken per agent batch.",
        json_schema_extra={"group": "worker"})
    # faust's take waits this long after each batch is processed before handing over the
    # next, so it adds to every event's latency: 0.5 s gave p50 1.3 s at 10k events/s
    batch_within_s: float = Field(0.05, gt=0, description="Longest wait for a batch.",
        json_schema_extra={"group": "worker"})
    max_event_bytes: int = Field(64 * 1024, ge=1024, description="Largest single event.",
        json_schema_extra={"group": "input"})
    max_message_bytes: int = Field(8 * 1024 * 1024, ge=1024, description="Largest message.",
        json_schema_extra={"group": "input"})
    allowed_lateness_s: float = Field(
        7 * 86400, ge=0, description="Event-time lateness accepted before the DLQ.",
        json_schema_extra={"group": "input"})
    max_future_s: float = Field(300, ge=0, description="How far ahead of wall time an event "
                                "may be before it is dead-lettered as from the future.",
        json_schema_extra={"group": "input"})
    join_ttl_s: float = Field(30 * 86400, gt=0, description="Feedback↔routing join TTL.",
        json_schema_extra={"group": "statistics"})
    eval_every_s: float = Field(3600, gt=0, description="Event-time evaluation cadence.",
        json_schema_extra={"group": "statistics"})
    false_alarms_per_30d: float = Field(
        1.0, gt=0, description="Target false pages per router per 30 days.",
        json_schema_extra={"group": "statistics"})
    sequential_drift: bool = Field(
        True, description="Also watch drift minute by minute with sequential tests (half "
        "the false-alarm budget each for them and the hourly window tests).",
        json_schema_extra={"group": "statistics"})
    control_mode: Literal["advisory", "enforce"] = Field(
        "advisory", description="Mode of published recommendations.",
        json_schema_extra={"group": "control"})
    control_key_id: str = Field("dev", description="Id of the signing key.",
        json_schema_extra={"group": "control"})
    control_key: str = Field(
        "tierwatch-dev-key-change-me", min_length=16, description="HMAC key (hex or text).",
        json_schema_extra={"group": "control", "secret": True})
    control_key_file: Path | None = Field(
        None, description="File holding the HMAC key (read at start; it replaces "
        "TIERWATCH_CONTROL_KEY). Keeps the key out of the environment and of `ps`.",
        json_schema_extra={"group": "control"})
    support_contact_cost_usd: float = Field(
        8.0, ge=0, description="What one support contact costs (for hidden cost).",
        json_schema_extra={"group": "economics"})
    bad_outcome_cost_usd: float = Field(
        0.0, ge=0, description="What one bad answer costs beyond its support contacts.",
        json_schema_extra={"group": "economics"})
    session_timeout_s: float = Field(
        30.0, ge=6, description="Consumer group session timeout: how soon a dead worker's "
        "partitions move to a live one (the broker's minimum is 6 s by default).",
        json_schema_extra={"group": "worker"})
    checkpoint_dir: Path | None = Field(
        None, description="Where the worker keeps its checkpoints (state + input offsets); "
        "default .run/checkpoints/<app_id>. One worker per directory.",
        json_schema_extra={"group": "worker"})
    checkpoint_every_s: float = Field(
        30.0, gt=0, description="Wall-time interval between checkpoints; committed offsets "
        "follow them, so a restart re-reads at most this much input.",
        json_schema_extra={"group": "worker"})
    merge_idle_s: float = Field(
        2.0, ge=0, description="How long the ordered merge waits for a partition that has "
        "not delivered its next message before releasing without it.",
        json_schema_extra={"group": "worker"})
    merge_max_buffered: int = Field(
        5_000, ge=1, description="Messages the ordered merge may hold before releasing.",
        json_schema_extra={"group": "worker"})
    runbook_base_url: str = Field(
        "deploy/runbook.md", min_length=1, description="Where on-call reads the runbook: "
        "the Alert payloads, the Prometheus rules (`tierwatch rules render`) and the report "
        "link to <this>#<section>. Set it to a URL people can click, e.g. "
        "https://github.com/<org>/tierwatch/blob/main/deploy/runbook.md.",
        json_schema_extra={"group": "alerting"})
    prometheus_job: str = Field(
        "tierwatch", pattern=r'^[^"\\\n]+$', description="The `job` label Prometheus gives "
        "the worker's scrape target (the rules' `up{job=...}` checks it).",
        json_schema_extra={"group": "alerting"})
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Log level.", json_schema_extra={"group": "logging"})

    @model_validator(mode="after")
    def _key_from_file(self) -> Settings:
        """``control_key_file`` replaces ``control_key``: the key never needs a flag."""
        if self.control_key_file is not None:
            try:
                key = self.control_key_file.read_text().strip()
            except OSError as err:
                raise ValueError(f"control_key_file {self.control_key_file}: cannot read it "
                                 f"({err.strerror or err})") from err
            if len(key) < 16:
                raise ValueError(f"control_key_file {self.control_key_file}: the key must "
                                 f"be at least 16 characters")
            self.control_key = key
        return self

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
