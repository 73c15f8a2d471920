"""Payload contracts: strict validation with precise reasons, and schema files in sync."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.schemas import (
    MAX_MAP_ITEMS,
    PAYLOADS,
    FeedbackEvent,
    Rejection,
    RoutingEvent,
    decode_events,
    json_schema,
    schema_text,
    validate_event,
)

SCHEMAS = Path(__file__).parents[2] / "schemas"


def routing(**over: Any) -> dict[str, Any]:
    ev: dict[str, Any] = {
        "event_id": "e1", "request_id": "r1", "router_id": "support", "tier": "cheap",
        "ts": "2026-03-01T12:00:00+01:00", "score": 0.8, "route_reason": "confident_cheap",
        "thresholds": {"cheap_above": 0.7, "capable_below": 0.5, "exploration_rate": 0.1},
    }
    ev.update(over)
    return {k: v for k, v in ev.items() if v is not ...}


def feedback(**over: Any) -> dict[str, Any]:
    ev: dict[str, Any] = {"event_id": "f1", "request_id": "r1", "ts": "2026-03-01T12:00:00Z",
                          "kind": "thumbs", "value": 1}
    ev.update(over)
    return {k: v for k, v in ev.items() if v is not ...}


@pytest.mark.parametrize("name", sorted(PAYLOADS))
def test_checked_in_schema_matches_model(name: str) -> None:
    path = SCHEMAS / f"{name}.v1.schema.json"
    assert path.read_text() == schema_text(PAYLOADS[name]), \
        f"{path} is stale: run `tierwatch schemas export`"


@pytest.mark.parametrize("name", sorted(PAYLOADS))
def test_schema_file_is_valid_json_schema(name: str) -> None:
    schema = json.loads((SCHEMAS / f"{name}.v1.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)


def test_valid_events_decode_and_validate_against_the_json_schema() -> None:
    validator = jsonschema.Draft202012Validator(
        json.loads((SCHEMAS / "routing_event.v1.schema.json").read_text()))
    validator.validate(routing())
    events, rejections = decode_events(orjson.dumps(routing()), RoutingEvent)
    assert rejections == [] and events[0].score == 0.8
    assert events[0].epoch == 1772362800.0  # the +01:00 offset is honoured


BAD_ROUTING = [
    ({"score": 1.01}, "score"),
    ({"score": -0.1}, "score"),
    ({"score": "0.8"}, "score"),
    ({"score": True}, "score"),
    ({"event_id": ...}, "event_id"),
    ({"request_id": ""}, "request_id"),
    ({"route_reason": "because"}, "route_reason"),
    ({"ts": "2026-03-01T12:00:00"}, "ts"),
    ({"ts": "yesterday"}, "ts"),
    ({"propensity": 0.0}, "propensity"),
    ({"router_id": "x" * 65}, "router_id"),
    ({"segment": {f"k{i}": "v" for i in range(40)}}, "segment"),
    ({"thresholds": {"cheap_above": 0.3, "capable_below": 0.5}}, "thresholds"),
    ({"surprise": 1}, "surprise"),
]


@pytest.mark.parametrize(("change", "field"), BAD_ROUTING)
def test_bad_routing_event_is_rejected_naming_the_field(change: dict[str, Any],
                                                        field: str) -> None:
    events, [rejection] = decode_events(orjson.dumps(routing(**change)), RoutingEvent)
    assert events == []
    assert rejection.field is not None and rejection.field.startswith(field)
    assert field in rejection.reason


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity"])
def test_non_finite_scores_are_rejected_as_the_score_field(literal: bytes) -> None:
    raw = orjson.dumps(routing(score=0.123)).replace(b"0.123", literal)
    _, [rejection] = decode_events(raw, RoutingEvent)
    assert rejection.field == "score"


@pytest.mark.parametrize(("change", "field"), [
    ({"kind": "smiley"}, "kind"),
    ({"kind": "rating", "value": 6}, "value"),
    ({"kind": "rating", "value": 3.5}, "whole number"),
    ({"kind": "thumbs", "value": 2}, "value"),
    ({"kind": "support_contact", "value": 0}, "value"),
    ({"kind": "review", "value": 1.5}, "value"),
    ({"weight": 0}, "weight"),
])
def test_bad_feedback_is_rejected(change: dict[str, Any], field: str) -> None:
    _, [rejection] = decode_events(orjson.dumps(feedback(**change)), FeedbackEvent)
    assert field in rejection.reason


def test_batch_rejects_bad_events_alone_with_their_index() -> None:
    batch = [routing(event_id=f"e{i}") for i in range(5)]
    batch[3]["score"] = 7
    events, [rejection] = decode_events(orjson.dumps(batch), RoutingEvent)
    assert [e.event_id for e in events] == ["e0", "e1", "e2", "e4"]
    assert rejection.index == 3 and rejection.field == "score"


@pytest.mark.parametrize("raw", [b"", b"{", b"\xff\xfe\x00", b"[1, 2", b"null", b'"x"'])
def test_non_json_or_non_object_is_rejected_whole(raw: bytes) -> None:
    events, rejections = decode_events(raw, RoutingEvent)
    assert events == [] and len(rejections) == 1 and rejections[0].index is None


def test_oversized_message_is_rejected() -> None:
    raw = orjson.dumps(routing(model="m" * 200)) + b" " * 70_000
    _, [rejection] = decode_events(raw, RoutingEvent)
    assert rejection.reason_class == "oversized"


@given(st.binary(max_size=300))
def test_decoder_never_raises_on_arbitrary_bytes(raw: bytes) -> None:
    events, rejections = decode_events(raw, RoutingEvent)
    assert len(events) + len(rejections) >= 1 or raw.strip() == b"[]"


@given(score=st.floats(0, 1), prop=st.floats(0.001, 1), rate=st.floats(0, 1))
def test_valid_event_round_trips(score: float, prop: float, rate: float) -> None:
    ev = RoutingEvent.model_validate(routing(
        score=score, propensity=prop,
        thresholds={"cheap_above": 0.7, "capable_below": 0.5, "exploration_rate": rate}))
    again = RoutingEvent.model_validate_json(ev.model_dump_json())
    assert again == ev


@pytest.mark.parametrize(("ts", "ok"), [
    ("2000-01-01T00:00:00Z", True),
    ("2000-01-01T00:30:00+01:00", False),  # 1999-12-31T23:30Z: the bound is an instant
    ("1999-12-31T23:30:00-01:00", True),   # 2000-01-01T00:30Z
    ("2099-12-31T23:30:00-01:00", False),  # 2100-01-01T00:30Z
    ("2100-01-01T00:30:00+01:00", True),   # 2099-12-31T23:30Z
    ("0001-01-01T00:00:00Z", False),
])
def test_timestamp_range_compares_instants_whatever_the_offset(ts: str, ok: bool) -> None:
    got = validate_event(routing(ts=ts), RoutingEvent)
    assert isinstance(got, RoutingEvent) is ok, got


def test_maps_are_capped_in_the_schema_and_the_model() -> None:
    many = {f"s{i}": 1.0 for i in range(MAX_MAP_ITEMS + 1)}
    got = validate_event(routing(signals=many), RoutingEvent)
    assert isinstance(got, Rejection) and got.field == "signals"
    assert isinstance(validate_event(routing(signals=dict(list(many.items())[:-1])),
                                     RoutingEvent), RoutingEvent)
    schema = json_schema(RoutingEvent)
    signals = next(s for s in schema["properties"]["signals"]["anyOf"] if s["type"] == "object")
    assert signals["maxProperties"] == MAX_MAP_ITEMS
