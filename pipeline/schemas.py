"""Payload contracts: one pydantic model per message on every tierwatch topic.

Field names are a contract with routers and tests (see DESIGN.md). Validation is
strict: out-of-range scores, NaN and infinities, missing ids, unknown enum values,
naive timestamps, unknown fields and oversized payloads are all rejected with a
reason that names the offending field. (The decoder can instead drop and count unknown
fields of input events: see ``validate_event`` and ``pipeline/codec.py``.)

The JSON Schemas in ``schemas/`` are exported from these models, with absolute ``$id``s
under :data:`SCHEMA_BASE`; the rules they cannot state are
:data:`RULES_NOT_IN_JSON_SCHEMA`.

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

import functools
import json
import math
import re
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Final, Literal, TypeVar

import orjson
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    ValidationError,
    model_validator,
)

SCHEMA_VERSION: Final = "1"
#: the base of every schema's ``$id``: a name, not (yet) a place to fetch from
SCHEMA_BASE: Final = "https://tierwatch.dev/schemas/"
MAX_EVENT_BYTES = 64 * 1024
MAX_MESSAGE_BYTES = 8 * 1024 * 1024
MAX_MAP_ITEMS = 32

Id = Annotated[str, Field(min_length=1, max_length=256)]
Name = Annotated[str, Field(min_length=1, max_length=64)]
Unit = Annotated[float, Field(ge=0.0, le=1.0)]
Money = Annotated[float, Field(ge=0.0)]
EARLIEST, LATEST = datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC)

# RFC 3339 date-times of the years 2000-2099 as a JSON Schema pattern (ECMA-262 and
# Python alike: [0-9], not \d, which is Unicode-wide in Python; "nothing follows" instead
# of $, which Python lets match before a final newline). Real dates only (leap years
# too). At the edges it is conservative: the bound is an instant, and the pattern cannot
# subtract an offset, so 2000-01-01 with a positive offset and 2099-12-31 with a negative
# one are refused whole, as are 1999-12-31 and 2100-01-01 (some of them are in range).
_DATE = (r"20[0-9]{2}-(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])"
         r"|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)|02-(?:0[1-9]|1[0-9]|2[0-8]))"
         r"|20(?:[02468][048]|[13579][26])-02-29")
_TIME = r"[Tt](?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]+)?"
_OFFSET = r"(?:[Zz]|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])"
TIMESTAMP_PATTERN: Final = (
    r"^(?!2000-01-01[Tt][^+]*\+(?!00:00))(?!2099-12-31[Tt][^-]*-(?!00:00))"
    rf"(?:{_DATE}){_TIME}{_OFFSET}(?![\s\S])")

# An event dated year 1 or 9999 is a broken clock, not history: it would drag the
# watermark (and every evaluation boundary) across centuries. The bounds are checked by
# pydantic-core, as every other constraint is: no Python runs per field on the hot path.
Timestamp = Annotated[AwareDatetime, Field(strict=False, ge=EARLIEST, lt=LATEST,
                                           json_schema_extra={"pattern": TIMESTAMP_PATTERN})]

#: Rules the models enforce that JSON Schema (draft 2020-12) cannot state, by id: the
#: published schemas say them in ``$comment``s and schemas/README.md lists them; the
#: contract tests show each is enforced by the models and not by the schemas.
RULES_NOT_IN_JSON_SCHEMA: Final[dict[str, str]] = {
    "thresholds_order": "Thresholds: capable_below <= cheap_above (a comparison between "
                        "two fields).",
    "timestamp_instant": "Timestamps: the bound is an instant in [2000-01-01T00:00:00Z, "
                         "2100-01-01T00:00:00Z); the pattern checks the written date, so "
                         "within a day of either bound it refuses some timestamps whose "
                         "offset moves them into range (e.g. 1999-12-31T23:30:00-01:00).",
    "integer_spelling": "Integers (seq, policy_seq, n, band) must be written without a "
                        "fraction or exponent: 2, not 2.0 (JSON Schema's data model cannot "
                        "tell 2.0 from 2).",
    "event_size": "One event is at most 64 KiB of JSON (TIERWATCH_MAX_EVENT_BYTES), a "
                  "message at most 8 MiB (TIERWATCH_MAX_MESSAGE_BYTES).",
    "baseline_edges_count": "Baseline distributions: len(edges) == len(probs) + 1.",
    "baseline_edges_order": "Baseline distributions: edges are non-decreasing.",
    "baseline_probs_sum": "Baseline distributions: probs sum to 1 (within 1e-6).",
}

RouteReason = Literal[
    "confident_cheap",
    "confident_capable",
    "uncertain_default",
    "exploration",
    "escalated",
    "fallback",
    "override",
]
FeedbackKind = Literal["thumbs", "rating", "review", "shadow", "support_contact", "survey",
                       "retention"]
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
    "delayed_outcome_gap",
]


#: A pseudonymous subject id (issue #18): 16-128 characters of ``[A-Za-z0-9_:.=+/-]``, not
#: made of digits and phone punctuation alone. The same ECMA-262/Python pattern is published
#: in the schemas and checked by :func:`_pseudonymous`, which names the PII it refuses.
SUBJECT_ID_PATTERN: Final = (r"^(?![+]?[0-9().-]+(?![\s\S]))[A-Za-z0-9_:.=+/-]{16,128}"
                             r"(?![\s\S])")
_SUBJECT_ID_RE = re.compile(SUBJECT_ID_PATTERN)
_PHONE_RE = re.compile(r"[+]?[0-9() .-]*[0-9][0-9() .-]*")  # spaces too: "(030) 1234"


def _pseudonymous(value: str) -> str:
    """Refuse a subject id that is obviously personal data, naming what it looks like.

    >>> _pseudonymous("sha256:9f86d081884c7d65")
    'sha256:9f86d081884c7d65'
    >>> _pseudonymous("ann@example.com")
    Traceback (most recent call last):
    ValueError: subject_id looks like an email address (PII): send a pseudonymous hash
    """
    if "@" in value:
        raise ValueError("subject_id looks like an email address (PII): send a pseudonymous "
                         "hash")
    if _PHONE_RE.fullmatch(value):
        raise ValueError("subject_id looks like a phone number (PII): send a pseudonymous "
                         "hash")
    if any(c.isspace() for c in value):
        raise ValueError("subject_id contains whitespace, like a person's name (PII): send a "
                         "pseudonymous hash")
    if not _SUBJECT_ID_RE.match(value):
        raise ValueError("subject_id must be a pseudonymous hash: 16 to 128 characters of "
                         "A-Z a-z 0-9 _ : . = + / -")
    return value


SubjectId = Annotated[str, AfterValidator(_pseudonymous), Field(
    json_schema_extra={"pattern": SUBJECT_ID_PATTERN, "minLength": 16, "maxLength": 128})]


class Strict(BaseModel):
    """Base for every payload: no unknown fields, no NaN/inf, frozen values."""

    # strict: a string "0.5" is not a score; timestamps opt back into parsing from text.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True, strict=True)


class Thresholds(Strict):
    """A router's policy: score ≥ cheap_above → cheap; score < capable_below → capable.

    Between them lies the uncertain band: capable by default, with ``exploration_rate``
    of it sent to cheap at random. ``escalate_below`` is the cascade's self-confidence
    floor, for routers that run one. capable_below must not exceed cheap_above.
    """

    model_config = ConfigDict(json_schema_extra={
        "$comment": "Also required, not expressible in JSON Schema: capable_below <= "
                    "cheap_above (rule thresholds_order in schemas/README.md)."})

    cheap_above: Unit = Field(description="Scores at or above it go to the cheap tier.")
    capable_below: Unit = Field(description="Scores below it go to the capable tier; at most "
                                "cheap_above.")
    exploration_rate: Unit = Field(
        default=0.0, description="Share of the uncertain band [capable_below, cheap_above) sent to "
        "the cheap tier at random, so that the tiers can be compared causally there.")
    escalate_below: Unit | None = Field(
        default=None, description="Cascades only: the cheap model's self-confidence below which a "
        "request is escalated to the capable tier.")

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


_VERSION_DOC = "Version of this payload's schema; only \"1\" exists."


class _Event(Strict):
    schema_version: Literal["1"] = Field(default=SCHEMA_VERSION, description=_VERSION_DOC)
    event_id: Id = Field(description="Unique id of this event: a resent event with the same "
                         "id is counted once.")
    request_id: Id = Field(description="The request the event is about; joins feedback to "
                           "its routing decision.")
    ts: Timestamp = Field(description="Event time, RFC 3339 with an offset, in [2000, 2100).")

    @property
    def epoch(self) -> float:
        """Event time in seconds since the Unix epoch."""
        return self.ts.timestamp()


class RoutingEvent(_Event):
    """One routing decision, emitted by the router when it picks a tier."""

    router_id: Name = Field(description="The routing layer that decided.")
    tier: Name = Field(description="The model class that served the request, e.g. cheap or "
                       "capable.")
    model: Id | None = Field(default=None, description="The model that served it, when known.")
    score: Unit = Field(description="The classifier's soft score that the query is simple "
                        "enough for the cheap tier.")
    route_reason: RouteReason = Field(description="Why this tier: the score was confidently "
                                      "on one side, the uncertain band's default, an "
                                      "exploration draw, an escalation, a fallback or an "
                                      "override.")
    propensity: Annotated[float, Field(gt=0.0, le=1.0)] = Field(
        default=1.0, description="Probability that this request went to this tier given its score "
        "(1 outside the uncertain band); tier comparisons are weighted by its inverse.")
    thresholds: Thresholds = Field(description="The thresholds the router applied.")
    policy_seq: Annotated[int, Field(ge=0)] | None = Field(
        default=None, description="seq of the control message in force, if any.")
    classifier_version: Id | None = Field(
        default=None, description="Version of the classifier that produced the score.")
    cost_usd: Money | None = Field(
        default=None, description="What serving the request cost, in USD.")
    latency_ms: Annotated[float, Field(ge=0.0)] | None = Field(
        default=None, description="Time to answer the request, in milliseconds.")
    segment: Annotated[dict[Name, Annotated[str, Field(max_length=128)]],
                       Field(max_length=MAX_MAP_ITEMS)] | None = Field(
        default=None, description=f"Free labels of the request (e.g. locale, plan), at most "
        f"{MAX_MAP_ITEMS}.")
    signals: Annotated[dict[Name, float], Field(max_length=MAX_MAP_ITEMS)] | None = Field(
        default=None, description=f"Further monitored numbers by name (e.g. ood_distance, the "
        f"cheap model's self_confidence), at most {MAX_MAP_ITEMS}; each is watched for drift "
        f"against the baseline's distribution of the same name.")
    subject_id: SubjectId | None = Field(
        default=None, description="Pseudonymous id of the person (or account) served, for "
        "outcomes that come months later (6-month retention): a salted hash the router "
        "computes, never an email, phone number or name (those are dead-lettered). 16 to 128 "
        "characters of A-Z a-z 0-9 _ : . = + / -, not digits alone.")


#: each feedback kind's value range, and whether its values are whole numbers
_KIND_RANGES: dict[str, tuple[float, float]] = {
    "thumbs": (0.0, 1.0),
    "rating": (1.0, 5.0),
    "review": (0.0, 1.0),
    "shadow": (0.0, 1.0),
    "support_contact": (1.0, 1.0),
    "survey": (0.0, 1.0),
    "retention": (0.0, 1.0),
}
_WHOLE_KINDS = ("thumbs", "rating", "retention")
#: kinds about a subject, not a request: they carry subject_id (and are not joined)
SUBJECT_KINDS: Final = ("retention",)


def _kind_rules() -> list[JsonValue]:
    """The value range of each feedback kind as JSON Schema ``if``/``then`` rules."""
    rules: list[JsonValue] = []
    for kind, (lo, hi) in _KIND_RANGES.items():
        value: dict[str, JsonValue] = {"minimum": lo, "maximum": hi}
        if kind in _WHOLE_KINDS:
            value["multipleOf"] = 1
        then: dict[str, JsonValue] = {"properties": {"value": value}}
        if kind in SUBJECT_KINDS:
            then["required"] = ["subject_id"]
            then["properties"] = {"value": value, "subject_id": {"type": "string"}}
        rules.append({"if": {"properties": {"kind": {"const": kind}}, "required": ["kind"]},
                      "then": then})
    return rules


class FeedbackEvent(_Event):
    """A quality signal about one request: a vote, a review, a support contact…"""

    model_config = ConfigDict(json_schema_extra={"allOf": _kind_rules()})

    router_id: Name | None = Field(
        default=None, description="The router, when the source knows it; otherwise taken from "
        "the joined routing event.")
    kind: FeedbackKind = Field(description="What the value is: thumbs (1 up, 0 down), rating "
                               "(1 to 5), review (human score in [0,1]), shadow (agreement "
                               "between the cheap and capable answers in [0,1]), "
                               "support_contact (always 1: the user needed a human), survey "
                               "([0,1]), retention (1 the subject stayed, 0 it churned; "
                               "about subject_id, not a request).")
    value: float = Field(description="The signal, in the range of its kind (see kind); higher "
                         "is better except for support_contact.")
    tier: Name | None = Field(
        default=None, description="The tier that served the request, when the source knows it "
        "(no join needed).")
    score: Unit | None = Field(default=None, description="The routing score, when the source knows "
                               "it.")
    weight: Annotated[float, Field(ge=1e-6, le=1e6)] | None = Field(
        default=None, description="Weight of this signal, e.g. 1/inclusion probability of a "
        "sampled review.")
    source: Id | None = Field(
        default=None, description="Where the signal came from (widget, review tool, support "
        "desk, shadow scorer...).")
    subject_id: SubjectId | None = Field(
        default=None, description="Pseudonymous id of the subject the outcome is about "
        "(required for kind retention; see RoutingEvent.subject_id). A subject outcome's "
        "request_id is its own id: it is attributed to the subject's routed interactions, "
        "not joined to one request.")

    @model_validator(mode="after")
    def _value_in_kind_range(self) -> FeedbackEvent:
        lo, hi = _KIND_RANGES[self.kind]
        if not lo <= self.value <= hi:
            raise ValueError(f"value {self.value} outside [{lo}, {hi}] for kind {self.kind}")
        if self.kind in _WHOLE_KINDS and self.value != int(self.value):
            raise ValueError(f"value of kind {self.kind} must be a whole number")
        if self.kind in SUBJECT_KINDS and self.subject_id is None:
            raise ValueError(f"kind {self.kind} needs subject_id")
        return self


class BinnedDistribution(Strict):
    """A reference distribution as fine bins of (near) equal mass.

    ``edges`` are the n+1 bin edges (the outer two bound the baseline sample);
    ``probs`` the baseline mass of each of the n bins; ``n`` the sample size.
    """

    model_config = ConfigDict(json_schema_extra={
        "$comment": "Also required, not expressible in JSON Schema: len(edges) == "
                    "len(probs) + 1, edges non-decreasing, probs summing to 1 within 1e-6 "
                    "(rules baseline_* in schemas/README.md)."})

    edges: list[float] = Field(min_length=3, description="The bin edges, non-decreasing, one "
                               "more than probs; the outer two bound the sample.")
    probs: list[Annotated[float, Field(ge=0.0, le=1.0)]] = Field(
        min_length=2, description="The sample's share in each bin; they sum to 1.")
    n: Annotated[int, Field(ge=1)] = Field(description="Size of the sample the bins were fit "
                                           "on.")

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

    schema_version: Literal["1"] = Field(default=SCHEMA_VERSION, description=_VERSION_DOC)
    router_id: Name = Field(description="The router whose classifier this describes.")
    version: Id = Field(description="Version of this baseline; a new one replaces the old.")
    created_at: Timestamp = Field(description="When the baseline was fit.")
    classifier_version: Id | None = Field(default=None, description="The classifier version it "
                                          "describes.")
    score: BinnedDistribution = Field(description="Distribution of the classifier's score.")
    signals: dict[Name, BinnedDistribution] = Field(
        default_factory=dict, description="Distributions of further signals by name (see "
        "RoutingEvent.signals).")


class ExpectedImpact(Strict):
    """What a recommendation is expected to change, from the live score histogram."""

    cost_per_day_usd: float = Field(description="Expected cost per day under the new "
                                    "thresholds, in USD.")
    cost_change_per_day_usd: float = Field(description="Change in cost per day against the "
                                           "thresholds in force (negative: a saving).")
    cheap_share: Unit = Field(description="Expected share of requests routed cheap.")
    quality_change: float = Field(description="Expected change in the share of good "
                                  "outcomes.")
    net_value_change_per_day_usd: float | None = Field(
        default=None, description="Cost change plus the priced quality change, per day, when bad "
        "outcomes have a price.")


class ThresholdRecommendation(Strict):
    """A signed, bounded threshold change for one router, on the control topic.

    ``signature`` is the lower-case hex HMAC-SHA256, under the key ``key_id``, of the
    RFC 8785 (JCS) canonical form of this object without its ``signature`` member.
    """

    schema_version: Literal["1"] = Field(default=SCHEMA_VERSION, description=_VERSION_DOC)
    router_id: Name = Field(description="The router this is for; others must ignore it.")
    seq: Annotated[int, Field(ge=1)] = Field(description="Strictly increasing per router: "
                                             "apply only a seq above the last applied.")
    issued_at: Timestamp = Field(description="When it was issued (event time).")
    valid_until: Timestamp = Field(description="After this instant, fall back to the "
                                   "router's safe thresholds.")
    mode: Literal["advisory", "enforce"] = Field(description="enforce: apply it; advisory: "
                                                 "show it only.")
    thresholds: Thresholds = Field(description="The recommended thresholds.")
    previous: Thresholds = Field(description="The thresholds it replaces.")
    reasons: list[str] = Field(description="Why, in words.")
    evidence: dict[str, Any] = Field(description="The figures behind it (target, drift "
                                     "state, per-band evidence).")
    expected_impact: ExpectedImpact = Field(description="Expected cost and quality impact.")
    baseline_version: Id | None = Field(
        default=None, description="The baseline in force when it was computed.")
    key_id: Id = Field(description="Id of the signing key.")
    signature: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] = Field(
        description="Lower-case hex HMAC-SHA256 of the RFC 8785 canonical JSON of this "
        "object without its signature (see schemas/signing-test-vectors.json).")


class Alert(Strict):
    """A firing or resolved condition, keyed by a stable fingerprint."""

    schema_version: Literal["1"] = Field(default=SCHEMA_VERSION, description=_VERSION_DOC)
    alert_id: Id = Field(description="Stable fingerprint of the condition (kind, router, "
                         "tier, window): firing and resolved share it.")
    kind: AlertKind = Field(description="What fired; each kind has a runbook section.")
    state: Literal["firing", "resolved"] = Field(description="The transition this message "
                                                 "reports.")
    severity: Literal["page", "ticket", "info"] = Field(description="How urgent: page, "
                                                        "ticket or info.")
    router_id: Name = Field(description="The router concerned.")
    tier: Name | None = Field(default=None, description="The tier concerned, for per-tier kinds.")
    window: Name = Field(description="The evaluation window, e.g. 1d or 7d.")
    ts: Timestamp = Field(description="Event time of the evaluation that made the "
                          "transition.")
    statistics: dict[str, Any] = Field(description="The figures behind it (effect size, "
                                       "p-value, sample sizes...).")
    summary: str = Field(description="One line for humans.")
    runbook: str = Field(description="Where the runbook section for this kind is.")


class ReviewRequest(Strict):
    """A request selected for human review, with its inclusion probability."""

    schema_version: Literal["1"] = Field(default=SCHEMA_VERSION, description=_VERSION_DOC)
    request_id: Id = Field(description="The request to review.")
    router_id: Name = Field(description="The router that routed it.")
    tier: Name = Field(description="The tier that served it.")
    score: Unit = Field(description="Its routing score.")
    band: Annotated[int, Field(ge=0)] = Field(description="Index of its score band.")
    inclusion_probability: Annotated[float, Field(gt=0.0, le=1.0)] = Field(
        description="Probability it was selected; send the review back with weight = 1/this.")
    reason: str = Field(description="Why it was selected.")
    ts: Timestamp = Field(description="Event time of the request.")


class DeadLetter(Strict):
    """A rejected message (or one event of a batch) and why it was rejected."""

    schema_version: Literal["1"] = Field(default=SCHEMA_VERSION, description=_VERSION_DOC)
    topic: str = Field(description="The topic (or input file) the message came from.")
    partition: int | None = Field(default=None, description="Its partition, when from Kafka.")
    offset: int | None = Field(default=None, description="Its offset (or line number in a file).")
    index: int | None = Field(default=None, description="The event's index within a batch message; "
                              "absent when the whole message was rejected.")
    key: str | None = Field(default=None, description="The message key (at most 256 characters).")
    reason: str = Field(description="Why, naming the field at fault.")
    reason_class: str = Field(description="The reason's class: invalid_json, not_an_object, "
                              "invalid_field, oversized, late, future, unjoined, "
                              "too_many_invalid...")
    field: str | None = Field(default=None, description="Dotted name of the field at fault.")
    payload: str = Field(description="The rejected bytes (the first 64 KiB), as text or "
                         "base64 (see payload_encoding).")
    payload_encoding: Literal["utf-8", "base64"] = Field(
        default="utf-8", description="base64 when the bytes are not valid UTF-8.")
    rejected_at: Annotated[datetime, Field(strict=False)] = Field(
        description="Wall time of the rejection (event time in a replay).")
    #: set when ``payload`` holds only the first 64 KiB: the original size and digest
    payload_bytes: int | None = Field(default=None, description="Size of the original bytes, when "
                                      "payload holds only the first 64 KiB.")
    payload_sha256: str | None = Field(
        default=None, description="SHA-256 of the original bytes, when payload holds only the "
        "first 64 KiB.")


PAYLOADS: dict[str, type[BaseModel]] = {
    "routing_event": RoutingEvent,
    "feedback_event": FeedbackEvent,
    "baseline": Baseline,
    "threshold_recommendation": ThresholdRecommendation,
    "alert": Alert,
    "review_request": ReviewRequest,
    "dead_letter": DeadLetter,
}
#: the messages on the input topics: one event (an object) or a batch (an array of them)
ENVELOPES: dict[str, str] = {
    "routing_envelope": "routing_event",
    "feedback_envelope": "feedback_event",
}


def schema_id(name: str) -> str:
    """The absolute ``$id`` of schema ``name`` (a key of PAYLOADS or ENVELOPES)."""
    return f"{SCHEMA_BASE}{name}.v{SCHEMA_VERSION}.schema.json"


def json_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON Schema (draft 2020-12) with its absolute ``$id``."""
    name = next(k for k, v in PAYLOADS.items() if v is model)
    schema = model.model_json_schema()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": schema_id(name),
            **schema}


def envelope_schema(name: str) -> dict[str, Any]:
    """The schema of a whole input message: one event, or an array of events.

    The event's schema is embedded (``$defs``, with its own ``$id``), so the envelope
    validates on its own, without fetching anything.
    """
    event = ENVELOPES[name]
    ref = f"{event}.v{SCHEMA_VERSION}.schema.json"  # relative to this $id: the embedded one
    inner = json_schema(PAYLOADS[event])
    inner.pop("$schema")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema", "$id": schema_id(name),
        "title": f"{PAYLOADS[event].__name__} message",
        "description": f"One Kafka message on the {event.split('_')[0]} topic: one "
                       f"{PAYLOADS[event].__name__} (an object) or a batch of them (an "
                       f"array, possibly empty). Each event is validated on its own: a bad "
                       f"event in a batch is dead-lettered alone, with its index. The JSON "
                       f"may be preceded by the Schema Registry wire-format header (byte "
                       f"0x00, then a 4-byte big-endian schema id), which is not JSON and "
                       f"not part of this schema.",
        "oneOf": [{"$ref": ref}, {"type": "array", "items": {"$ref": ref}}],
        "$defs": {PAYLOADS[event].__name__: inner},
    }


def schema_text(model: type[BaseModel] | str) -> str:
    """The published text of a payload's schema, or of an envelope's (by name)."""
    schema = envelope_schema(model) if isinstance(model, str) else json_schema(model)
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def export_schemas(directory: Path) -> list[Path]:
    """Write ``<name>.v1.schema.json`` for every payload and envelope; return the paths."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    items: list[tuple[str, type[BaseModel] | str]] = [*PAYLOADS.items(),
                                                      *((n, n) for n in ENVELOPES)]
    for name, model in items:
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


def validate_event(obj: Any, model: type[E], index: int | None = None, *,
                   unknown: Counter[str] | None = None) -> E | Rejection:
    """Validate one decoded JSON object into ``model`` or say why not.

    ``unknown``: when given (the compatibility mode), fields the model does not know, at
    any depth, are dropped instead of rejecting the event, and the dotted names of those
    an accepted event carried are counted in it.

    >>> from collections import Counter
    >>> seen = Counter()
    >>> ev = validate_event({"event_id": "f", "request_id": "r", "kind": "thumbs",
    ...     "value": 1, "ts": "2026-01-01T00:00:00Z", "trace_id": "t"}, FeedbackEvent,
    ...     unknown=seen)
    >>> ev.kind, dict(seen)
    ('thumbs', {'trace_id': 1})
    """
    if not isinstance(obj, dict):
        return Rejection("not_an_object", f"expected a JSON object, got {type(obj).__name__}",
                         None, index)
    dropped: list[str] = []
    if unknown is not None:
        # top-level additions (the common case: a producer adds trace_id to every event)
        # cost a set difference, not a failed validation
        dropped = [k for k in obj if k not in _field_names(model)]
        if dropped:
            obj = {k: v for k, v in obj.items() if k not in dropped}
    try:
        event = model.model_validate(obj)
    except ValidationError as err:
        nested = [e["loc"] for e in err.errors(include_url=False)
                  if e["type"] == "extra_forbidden"] if unknown is not None else []
        if not nested:
            field, reason = _first_error(err)
            return Rejection("invalid_field", reason, field, index)
        # deeper additions: validate again without the members pydantic named
        try:
            event = model.model_validate(_copy_dropping(obj, nested))
        except ValidationError as again:
            field, reason = _first_error(again)
            return Rejection("invalid_field", reason, field, index)
        dropped += [".".join(str(p) for p in loc) for loc in nested]
    if dropped:
        assert unknown is not None
        unknown.update(dropped)
    return event


@functools.cache
def _field_names(model: type[BaseModel]) -> frozenset[str]:
    return frozenset(model.model_fields)


def _copy_dropping(node: Any, paths: list[tuple[int | str, ...]]) -> Any:
    """A copy of ``node`` without the members at ``paths``, copied only along them.

    Payload models nest only in objects; a path through anything else is left alone
    (the second validation then rejects that field as before).
    """
    if not isinstance(node, dict):
        return node
    drop = {p[0] for p in paths if len(p) == 1}
    out = {k: v for k, v in node.items() if k not in drop}
    deeper: dict[int | str, list[tuple[int | str, ...]]] = {}
    for p in paths:
        if len(p) > 1:
            deeper.setdefault(p[0], []).append(p[1:])
    for key, sub in deeper.items():
        if key in out:
            out[key] = _copy_dropping(out[key], sub)
    return out


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
    unknown: Counter[str] | None = None,
) -> tuple[list[E], list[Rejection]]:
    """Decode one message holding one event (an object) or a batch (an array).

    A malformed event inside a valid batch is rejected alone, with its index;
    a message that is not valid JSON is rejected whole. ``parsed``, when given, is
    ``orjson.loads(raw)`` already done by the caller (the replay parses every line for
    its merge key), so the bytes are not parsed twice; the result is the same.
    ``unknown``: see :func:`validate_event` (``None``: unknown fields are rejected).
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
        out = validate_event(doc, model, unknown=unknown)
        return ([], [out]) if isinstance(out, Rejection) else ([out], [])
    if not isinstance(doc, list):
        return [], [Rejection("not_an_object", f"expected an object or an array, got "
                              f"{type(doc).__name__}")]
    if len(raw) > max_event_bytes * max(len(doc), 1):
        return [], [Rejection("oversized", f"batch of {len(doc)} events is {len(raw)} bytes")]
    events: list[E] = []
    rejections: list[Rejection] = []
    for i, obj in enumerate(doc):
        out = validate_event(obj, model, i, unknown=unknown)
        if isinstance(out, Rejection):
            rejections.append(out)
        else:
            events.append(out)
    return events, rejections
