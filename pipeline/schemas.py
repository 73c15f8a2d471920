"""Payload contracts: one pydantic model per message on every tierwatch topic.

Field names are a contract with routers and tests (see DESIGN.md). Validation is
strict: out-of-range scores, NaN and infinities, missing ids, unknown enum values,
naive timestamps, unknown fields and oversized payloads are all rejected with a
reason that names the offending field.

>>> ev = RoutingEvent.model_validate({
...     "event_id": "e1", "request_id": "r1", "router_id": "support", "tier": "cheap",
...     "ts": "2026-01-01T00:00:00+00:00", "score": 0.91, "route_reason": "confident_cheap",
...     "thresholds": {"cheap_above": 0.7, "capable_below": 0.5, "exploration_rate": 0.1}})
>>> ev.propensity, ev.epoch
(1.0, 1767225600.0)
>>> decode_events(b'[{"nope": 1}]', RoutingEvent)[1][0].field
'event_id'
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Final, Literal, TypeVar

import orjson
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

SCHEMA_VERSION: Final = "1"
MAX_EVENT_BYTES = 64 * 1024
MAX_MESSAGE_BYTES = 8 * 1024 * 1024
MAX_MAP_ITEMS = 32

Id = Annotated[str, Field(min_length=1, max_length=256)]
Name = Annotated[str, Field(min_length=1, max_length=64)]
Unit = Annotated[float, Field(ge=0.0, le=1.0)]
Money = Annotated[float, Field(ge=0.0)]
EARLIEST, LATEST = datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC)


# An event dated year 1 or 9999 is a broken clock, not history: it would drag the
# watermark (and every evaluation boundary) across centuries. The bounds are checked by
# pydantic-core, as every other constraint is: no Python runs per field on the hot path.
Timestamp = Annotated[AwareDatetime, Field(strict=False, ge=EARLIEST, lt=LATEST)]

RouteReason = Literal[
    "confident_cheap",
    "confident_capable",
    "uncertain_default",
    "exploration",
    "escalated",
    "fallback",
    "override",
]
FeedbackKind = Literal["thumbs", "rating", "review", "shadow", "support_contact", "survey"]
AlertKind = Literal[
    "confidence_drift",
    "tier_confidence_drift",
    "signal_drift",
    "tier_quality_drop",
    "tier_quality_gap",
    "boundary_degradation",
    "support_contact_rise",
    "feedback_starvation",
    "pareto_trap",
    "segment_share_shift",
]


class Strict(BaseModel):
    """Base for every payload: no unknown fields, no NaN/inf, frozen values."""

    # strict: a string "0.5" is not a score; timestamps opt back into parsing from text.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True, strict=True)


class Thresholds(Strict):
    """A router's policy: score ≥ cheap_above → cheap; score < capable_below → capable.

    Between them lies the uncertain band: capable by default, with ``exploration_rate``
    of it sent to cheap at random. ``escalate_below`` is the cascade's self-confidence
    floor, for routers that run one.
    """

    cheap_above: Unit
    capable_below: Unit
    exploration_rate: Unit = 0.0
    escalate_below: Unit | None = None

    @model_validator(mode="after")
    def _ordered(self) -> Thresholds:
        if self.capable_below > self.cheap_above:
            raise ValueError("capable_below must be <= cheap_above")
        return self

    def p_cheap(self, score: float) -> float:
        """Probability that a request with this score is routed cheap."""
        if score >= self.cheap_above:
            return 1.0
        if score >= self.capable_below:
            return self.exploration_rate
        return 0.0

    @property
    def key(self) -> tuple[float, float, float]:
        return (self.cheap_above, self.capable_below, self.exploration_rate)


class _Event(Strict):
    schema_version: Literal["1"] = SCHEMA_VERSION
    event_id: Id
    request_id: Id
    ts: Timestamp

    @property
    def epoch(self) -> float:
        """Event time in seconds since the Unix epoch."""
        return self.ts.timestamp()


class RoutingEvent(_Event):
    """One routing decision, emitted by the router when it picks a tier."""

    router_id: Name
    tier: Name
    model: Id | None = None
    score: Unit
    route_reason: RouteReason
    propensity: Annotated[float, Field(gt=0.0, le=1.0)] = 1.0
    thresholds: Thresholds
    policy_seq: Annotated[int, Field(ge=0)] | None = None
    classifier_version: Id | None = None
    cost_usd: Money | None = None
    latency_ms: Annotated[float, Field(ge=0.0)] | None = None
    segment: Annotated[dict[Name, Annotated[str, Field(max_length=128)]],
                       Field(max_length=MAX_MAP_ITEMS)] | None = None
    signals: Annotated[dict[Name, float], Field(max_length=MAX_MAP_ITEMS)] | None = None


_KIND_RANGES: dict[str, tuple[float, float]] = {
    "thumbs": (0.0, 1.0),
    "rating": (1.0, 5.0),
    "review": (0.0, 1.0),
    "shadow": (0.0, 1.0),
    "support_contact": (1.0, 1.0),
    "survey": (0.0, 1.0),
}


class FeedbackEvent(_Event):
    """A quality signal about one request: a vote, a review, a support contact…"""

    router_id: Name | None = None
    kind: FeedbackKind
    value: float
    tier: Name | None = None
    score: Unit | None = None
    weight: Annotated[float, Field(ge=1e-6, le=1e6)] | None = None
    source: Id | None = None

    @model_validator(mode="after")
    def _value_in_kind_range(self) -> FeedbackEvent:
        lo, hi = _KIND_RANGES[self.kind]
        if not lo <= self.value <= hi:
            raise ValueError(f"value {self.value} outside [{lo}, {hi}] for kind {self.kind}")
        if self.kind in ("thumbs", "rating") and self.value != int(self.value):
            raise ValueError(f"value of kind {self.kind} must be a whole number")
        return self


class BinnedDistribution(Strict):
    """A reference distribution as fine bins of (near) equal mass.

    ``edges`` are the n+1 bin edges (the outer two bound the baseline sample);
    ``probs`` the baseline mass of each of the n bins; ``n`` the sample size.
    """

    edges: list[float] = Field(min_length=3)
    probs: list[Annotated[float, Field(ge=0.0, le=1.0)]] = Field(min_length=2)
    n: Annotated[int, Field(ge=1)]

    @model_validator(mode="after")
    def _consistent(self) -> BinnedDistribution:
        if len(self.edges) != len(self.probs) + 1:
            raise ValueError("edges must have one more entry than probs")
        if any(b < a for a, b in zip(self.edges, self.edges[1:], strict=False)):
            raise ValueError("edges must be non-decreasing")
        if not math.isclose(sum(self.probs), 1.0, abs_tol=1e-6):
            raise ValueError("probs must sum to 1")
        return self


class Baseline(Strict):
    """The classifier's score distribution on its training/calibration data."""

    schema_version: Literal["1"] = SCHEMA_VERSION
    router_id: Name
    version: Id
    created_at: Timestamp
    classifier_version: Id | None = None
    score: BinnedDistribution
    signals: dict[Name, BinnedDistribution] = Field(default_factory=dict)


class ExpectedImpact(Strict):
    cost_per_day_usd: float
    cost_change_per_day_usd: float
    cheap_share: Unit
    quality_change: float
    net_value_change_per_day_usd: float | None = None


class ThresholdRecommendation(Strict):
    """A signed, bounded threshold change for one router, on the control topic."""

    schema_version: Literal["1"] = SCHEMA_VERSION
    router_id: Name
    seq: Annotated[int, Field(ge=1)]
    issued_at: Timestamp
    valid_until: Timestamp
    mode: Literal["advisory", "enforce"]
    thresholds: Thresholds
    previous: Thresholds
    reasons: list[str]
    evidence: dict[str, Any]
    expected_impact: ExpectedImpact
    baseline_version: Id | None = None
    key_id: Id
    signature: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class Alert(Strict):
    """A firing or resolved condition, keyed by a stable fingerprint."""

    schema_version: Literal["1"] = SCHEMA_VERSION
    alert_id: Id
    kind: AlertKind
    state: Literal["firing", "resolved"]
    severity: Literal["page", "ticket", "info"]
    router_id: Name
    tier: Name | None = None
    window: Name
    ts: Timestamp
    statistics: dict[str, Any]
    summary: str
    runbook: str


class ReviewRequest(Strict):
    """A request selected for human review, with its inclusion probability."""

    schema_version: Literal["1"] = SCHEMA_VERSION
    request_id: Id
    router_id: Name
    tier: Name
    score: Unit
    band: Annotated[int, Field(ge=0)]
    inclusion_probability: Annotated[float, Field(gt=0.0, le=1.0)]
    reason: str
    ts: Timestamp


class DeadLetter(Strict):
    """A rejected message (or one event of a batch) and why it was rejected."""

    schema_version: Literal["1"] = SCHEMA_VERSION
    topic: str
    partition: int | None = None
    offset: int | None = None
    index: int | None = None
    key: str | None = None
    reason: str
    reason_class: str
    field: str | None = None
    payload: str
    payload_encoding: Literal["utf-8", "base64"] = "utf-8"
    rejected_at: Annotated[datetime, Field(strict=False)]
    #: set when ``payload`` holds only the first 64 KiB: the original size and digest
    payload_bytes: int | None = None
    payload_sha256: str | None = None


PAYLOADS: dict[str, type[BaseModel]] = {
    "routing_event": RoutingEvent,
    "feedback_event": FeedbackEvent,
    "baseline": Baseline,
    "threshold_recommendation": ThresholdRecommendation,
    "alert": Alert,
    "review_request": ReviewRequest,
    "dead_letter": DeadLetter,
}


def json_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON Schema (draft 2020-12) with a stable ``$id``."""
    name = next(k for k, v in PAYLOADS.items() if v is model)
    schema = model.model_json_schema()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": f"tierwatch/{name}.v{SCHEMA_VERSION}.schema.json", **schema}


def schema_text(model: type[BaseModel]) -> str:
    return json.dumps(json_schema(model), indent=2, sort_keys=True) + "\n"


def export_schemas(directory: Path) -> list[Path]:
    """Write ``<name>.v1.schema.json`` for every payload; return the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, model in PAYLOADS.items():
        path = directory / f"{name}.v{SCHEMA_VERSION}.schema.json"
        path.write_text(schema_text(model))
        paths.append(path)
    return paths


# --- decoding ---------------------------------------------------------------------------

E = TypeVar("E", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why one message, or one event of a batch (``index``), was rejected."""

    reason_class: str
    reason: str
    field: str | None = None
    index: int | None = None


def _first_error(err: ValidationError) -> tuple[str | None, str]:
    e = err.errors(include_url=False)[0]
    field = ".".join(str(p) for p in e["loc"]) or None
    return field, f"{field or 'payload'}: {e['msg']}"


def validate_event(obj: Any, model: type[E], index: int | None = None) -> E | Rejection:
    """Validate one decoded JSON object into ``model`` or say why not."""
    if not isinstance(obj, dict):
        return Rejection("not_an_object", f"expected a JSON object, got {type(obj).__name__}",
                         None, index)
    try:
        return model.model_validate(obj)
    except ValidationError as err:
        field, reason = _first_error(err)
        return Rejection("invalid_field", reason, field, index)


def _lenient_json(raw: bytes) -> Any:
    """Parse JSON that spells NaN/Infinity, so validation can name the field at fault."""
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        return None


#: ``decode_events``'s default ``parsed``: the message has not been parsed yet
UNPARSED: Final = object()


def decode_events(
    raw: bytes, model: type[E], *, max_event_bytes: int = MAX_EVENT_BYTES,
    max_message_bytes: int = MAX_MESSAGE_BYTES, parsed: Any = UNPARSED,
) -> tuple[list[E], list[Rejection]]:
    """Decode one message holding one event (an object) or a batch (an array).

    A malformed event inside a valid batch is rejected alone, with its index;
    a message that is not valid JSON is rejected whole. ``parsed``, when given, is
    ``orjson.loads(raw)`` already done by the caller (the replay parses every line for
    its merge key), so the bytes are not parsed twice; the result is the same.
    """
    if len(raw) > max_message_bytes:
        return [], [Rejection("oversized", f"message of {len(raw)} bytes exceeds "
                              f"{max_message_bytes}")]
    if parsed is not UNPARSED:
        doc = parsed
    else:
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError as err:
            doc = _lenient_json(raw)
            if doc is None:
                return [], [Rejection("invalid_json", f"not valid JSON: {err}")]
    if isinstance(doc, dict):
        if len(raw) > max_event_bytes:
            return [], [Rejection("oversized", f"event of {len(raw)} bytes exceeds "
                                  f"{max_event_bytes}")]
        out = validate_event(doc, model)
        return ([], [out]) if isinstance(out, Rejection) else ([out], [])
    if not isinstance(doc, list):
        return [], [Rejection("not_an_object", f"expected an object or an array, got "
                              f"{type(doc).__name__}")]
    if len(raw) > max_event_bytes * max(len(doc), 1):
        return [], [Rejection("oversized", f"batch of {len(doc)} events is {len(raw)} bytes")]
    events: list[E] = []
    rejections: list[Rejection] = []
    for i, obj in enumerate(doc):
        out = validate_event(obj, model, i)
        if isinstance(out, Rejection):
            rejections.append(out)
        else:
            events.append(out)
    return events, rejections
