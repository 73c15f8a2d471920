"""All configuration in one place: ``TIERWATCH_*`` environment variables and CLI flags.

>>> Settings(bootstrap_servers="kafka:9092").topic("routing")
'tierwatch.routing'
>>> Settings(topic_prefix="staging.tierwatch").topic("dlq")
'staging.tierwatch.dlq'
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

TOPIC_NAMES = ("routing", "feedback", "baselines", "control", "alerts", "review", "dlq")
COMPACTED = frozenset({"baselines", "control"})
SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"]
# Field markers the CLI reads: the flag group, and secrets (env or file only, no flag).
_CONN: dict[str, Any] = {"group": "connection"}
_SECRET: dict[str, Any] = {"group": "connection", "secret": True}
# The built-in signing key: anyone can read it here, so it may sign advisories only.
DEV_CONTROL_KEY = "tierwatch-dev-key-change-me"
_TOKEN_PROVIDER = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")  # module:callable


def _need(names: set[str]) -> str:
    return "needs" if len(names) == 1 else "need"


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
    # -- Kafka connection: one block, applied to every client by pipeline.kafka_clients
    # (with connect_timeout_s). Secrets come from the environment or a file, never from a
    # flag, which ``ps`` shows.
    security_protocol: SecurityProtocol = Field(
        "PLAINTEXT", description="How clients talk to the brokers: PLAINTEXT, SSL (TLS, with "
        "a client certificate for mTLS), SASL_PLAINTEXT or SASL_SSL.", json_schema_extra=_CONN)
    sasl_mechanism: SaslMechanism | None = Field(
        None, description="SASL mechanism with SASL_*: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or "
        "OAUTHBEARER.", json_schema_extra=_CONN)
    sasl_username: str | None = Field(
        None, description="SASL user name (PLAIN, SCRAM); an API key on Confluent Cloud.",
        json_schema_extra=_CONN)
    sasl_password: SecretStr | None = Field(
        None, description="SASL password: set TIERWATCH_SASL_PASSWORD, or use "
        "sasl_password_file.", json_schema_extra=_SECRET)
    sasl_password_file: Path | None = Field(
        None, description="File holding the SASL password (e.g. a mounted secret); one "
        "trailing newline is ignored.", json_schema_extra=_CONN)
    sasl_oauth_token_provider: str | None = Field(
        None, description="OAUTHBEARER: 'module:callable' returning a token provider, an "
        "object whose token() (plain or async) returns a bearer token (MSK IAM, OAuth).",
        json_schema_extra=_CONN)
    ssl_cafile: Path | None = Field(
        None, description="CA bundle (PEM) that signs the brokers' certificates; default: "
        "the system's trust store.", json_schema_extra=_CONN)
    ssl_certfile: Path | None = Field(
        None, description="Client certificate chain (PEM) for mutual TLS.",
        json_schema_extra=_CONN)
    ssl_keyfile: Path | None = Field(
        None, description="Private key (PEM) of the client certificate.",
        json_schema_extra=_CONN)
    ssl_key_password: SecretStr | None = Field(
        None, description="Password of an encrypted ssl_keyfile: set "
        "TIERWATCH_SSL_KEY_PASSWORD.", json_schema_extra=_SECRET)
    ssl_check_hostname: bool = Field(
        True, description="Check that a broker's certificate names the host connected to.",
        json_schema_extra=_CONN)
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
    strict: bool = Field(
        False, description="Dead-letter input events that carry fields the schema does not "
        "know; by default such fields are dropped and counted in "
        "tierwatch_unknown_fields_total, and the event is accepted.",
        json_schema_extra={"group": "worker"})
    allowed_lateness_s: float = Field(
        7 * 86400, ge=0, description="Event-time lateness accepted before the DLQ.",
        json_schema_extra={"group": "input"})
    max_future_s: float = Field(300, ge=0, description="How far ahead of wall time an event "
                                "may be before it is dead-lettered as from the future.",
        json_schema_extra={"group": "input"})
    join_ttl_s: float = Field(30 * 86400, gt=0, description="Feedback↔routing join TTL "
        "(event time): how long a decision waits for its feedback. 90-180 days (7776000-"
        "15552000) joins surveys and churn months later; the worker keeps the decisions on "
        "disk (join_store), about 150 bytes each.",
        json_schema_extra={"group": "statistics"})
    # -- join horizon (issue 18): the join's decisions on disk ----------------------------
    join_store: Literal["rocksdb", "memory"] = Field(
        "rocksdb", description="Where the worker's join keeps its decisions: rocksdb (on "
        "disk, under <checkpoint_dir>/join-store, checkpointed with every snapshot by hard "
        "links; memory stays bounded whatever join_ttl_s) or memory (pickled whole into "
        "every snapshot: short TTLs only). The replay keeps them in memory; both give the "
        "same results.", json_schema_extra={"group": "worker"})
    eval_every_s: float = Field(3600, gt=0, description="Event-time evaluation cadence.",
        json_schema_extra={"group": "statistics"})
    false_alarms_per_30d: float = Field(
        1.0, gt=0, description="Target false pages per router per 30 days.",
        json_schema_extra={"group": "statistics"})
    # Drift findings keep budgets of their own, per level (README, statistics section).
    ticket_false_alarms_per_30d: float = Field(
        1.0, gt=0, description="Target false drift tickets (a drift above its effect floor) "
        "per router per 30 days.", json_schema_extra={"group": "statistics"})
    info_false_alarms_per_30d: float = Field(
        1.0, gt=0, description="Target false info findings (a certain drift below its "
        "effect floor; never pages) per router per 30 days.",
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
        DEV_CONTROL_KEY, min_length=16, description="HMAC key (hex or text).",
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
    # -- outcomes months later (issue 18): cohorts, subjects, delayed_outcome_gap ---------
    # (their own help group: the worker shows them; the replay reads them from the env)
    bad_survey_cost_usd: float = Field(
        0.0, ge=0, description="What one bad survey (value below 0.5) costs; priced in the "
        "hidden cost when set (the in-band IPW contrast, per cheap request).",
        json_schema_extra={"group": "delayed"})
    churned_subject_cost_usd: float = Field(
        0.0, ge=0, description="What one churned subject (retention 0) costs; priced in the "
        "hidden cost when set.", json_schema_extra={"group": "delayed"})
    subject_lookback_days: float = Field(
        180.0, gt=0, description="A subject outcome (retention) is attributed to the "
        "subject's interactions this many days before it.",
        json_schema_extra={"group": "delayed"})
    delayed_max_age_days: int = Field(
        200, ge=7, le=400, description="Cohort curves follow outcomes up to this many days "
        "after their interaction; later ones are not counted.",
        json_schema_extra={"group": "delayed"})
    delayed_ticket_false_alarms_per_30d: float = Field(
        0.1, gt=0, description="Target false delayed_outcome_gap tickets per router per 30 "
        "days (a cohort gap past its floor).", json_schema_extra={"group": "delayed"})
    delayed_info_false_alarms_per_30d: float = Field(
        0.1, gt=0, description="Target false delayed_outcome_gap info findings (significant, "
        "below the floor) per router per 30 days.", json_schema_extra={"group": "delayed"})
    session_timeout_s: float = Field(
        30.0, ge=6, description="Consumer group session timeout: how soon a dead worker's "
        "partitions move to a live one (the broker's minimum is 6 s by default).",
        json_schema_extra={"group": "worker"})
    standby_follows: bool = Field(
        True, description="A standby (a worker of the group assigned no partition) keeps "
        "its state current by reading, outside the group, what the active worker has "
        "committed, and publishes nothing: a takeover then re-reads seconds, not the "
        "whole topics. Costs the standby the active worker's CPU and memory.",
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
        "not delivered its next message before releasing without it; only once the "
        "partition is fetched up to its high watermark (records still to fetch are always "
        "waited for, so a slow fetch never changes the order).",
        json_schema_extra={"group": "worker"})
    merge_max_buffered: int = Field(
        5_000, ge=1, description="Messages the ordered merge aims to hold: a partition with "
        "more than its share buffered stops being fetched (nothing is dropped) until the "
        "merge has used them, so catching up any backlog keeps the exact order.",
        json_schema_extra={"group": "worker"})
    # -- exactness under faults (issue 15): backlog, checkpoints, replicas ---------------
    merge_overflow_messages: int = Field(
        1_000_000, ge=1, description="Hard ceiling of the ordered merge. Never reached while "
        "the per-partition pauses work; reaching it releases out of order, so results may "
        "then differ from a replay: logged as an error and paged (TierwatchMergeOverflow).",
        json_schema_extra={"group": "worker"})
    reset_state: bool = Field(
        False, description="When the checkpoint cannot be used (corrupt, or another format "
        "version), set it aside and rebuild the state from the beginning of the input "
        "topics instead of refusing to start. Logged and counted; no effect on a usable "
        "checkpoint.", json_schema_extra={"group": "worker"})
    checkpoint_key: str | None = Field(
        None, min_length=16, description="HMAC key of the checkpoint files (hex or text); "
        "unset, a built-in key checks integrity only. A file is unpickled only once its "
        "HMAC verifies.", json_schema_extra={"group": "worker", "secret": True})
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

    @model_validator(mode="after")
    def _connection_is_consistent(self) -> Settings:
        """Settings that would be silently ignored, or could never connect, are errors."""
        sasl = self.security_protocol.startswith("SASL_")
        tls = self.security_protocol.endswith("SSL")
        given = {name for name in ("sasl_mechanism", "sasl_username", "sasl_password",
                                   "sasl_password_file", "sasl_oauth_token_provider")
                 if getattr(self, name) is not None}
        if given and not sasl:
            raise ValueError(f"{', '.join(sorted(given))} {_need(given)} security_protocol "
                             f"SASL_SSL or SASL_PLAINTEXT, not {self.security_protocol}")
        tls_files = {name for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile",
                                       "ssl_key_password") if getattr(self, name) is not None}
        if tls_files and not tls:
            raise ValueError(f"{', '.join(sorted(tls_files))} {_need(tls_files)} "
                             f"security_protocol SSL or SASL_SSL, not {self.security_protocol}")
        if self.ssl_keyfile is not None and self.ssl_certfile is None:
            raise ValueError("ssl_keyfile needs ssl_certfile (the client certificate)")
        if sasl and self.sasl_mechanism is None:
            raise ValueError(f"security_protocol {self.security_protocol} needs sasl_mechanism "
                             "(PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER)")
        if self.sasl_mechanism == "OAUTHBEARER":
            spec = self.sasl_oauth_token_provider
            if spec is None or not _TOKEN_PROVIDER.match(spec):
                raise ValueError("sasl_mechanism OAUTHBEARER needs sasl_oauth_token_provider "
                                 "as 'module:callable'")
        elif self.sasl_mechanism is not None:
            if not self.sasl_username:
                raise ValueError(f"sasl_mechanism {self.sasl_mechanism} needs sasl_username")
            if (self.sasl_password is None) == (self.sasl_password_file is None):
                raise ValueError(f"sasl_mechanism {self.sasl_mechanism} needs one of "
                                 "TIERWATCH_SASL_PASSWORD or sasl_password_file")
        return self

    @model_validator(mode="after")
    def _enforce_needs_a_real_key(self) -> Settings:
        if self.control_mode == "enforce" and self.uses_dev_control_key:
            raise ValueError("control_mode enforce refuses the built-in development key: "
                             "set TIERWATCH_CONTROL_KEY (`tierwatch control keygen` makes one)")
        return self

    @property
    def uses_dev_control_key(self) -> bool:
        """Whether recommendations are signed with the public built-in key."""
        return self.control_key == DEV_CONTROL_KEY

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
