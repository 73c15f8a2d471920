"""The published JSON Schemas against the pydantic models, over a corpus of bad events.

- Every event the models reject, ``jsonschema`` rejects too, except for the rules
  JSON Schema cannot state: those are exactly ``RULES_NOT_IN_JSON_SCHEMA``, each shown
  here to be enforced by the models and missed by the schemas, and listed in
  schemas/README.md.
- Valid events (hypothesis) pass both.
- Every field has a description; every ``$id`` is absolute; the envelopes validate one
  event or a batch, self-contained.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.schemas import (
    ENVELOPES,
    MAX_MAP_ITEMS,
    PAYLOADS,
    RULES_NOT_IN_JSON_SCHEMA,
    SCHEMA_BASE,
    Rejection,
    decode_events,
    envelope_schema,
    json_schema,
    schema_text,
    validate_event,
)

SCHEMAS = Path(__file__).parents[2] / "schemas"
MISSING = object()


def validator(name: str) -> jsonschema.Draft202012Validator:
    """The checked-in schema file, as another language's validator would load it."""
    schema = json.loads((SCHEMAS / f"{name}.v1.schema.json").read_text())
    return jsonschema.Draft202012Validator(schema)


VALIDATORS = {name: validator(name) for name in [*PAYLOADS, *ENVELOPES]}

TH = {"cheap_above": 0.7, "capable_below": 0.5, "exploration_rate": 0.1}
GOOD: dict[str, dict[str, Any]] = {
    "routing_event": {
        "schema_version": "1", "event_id": "e1", "request_id": "r1", "router_id": "support",
        "ts": "2026-03-01T12:00:00+01:00", "tier": "cheap", "model": "small-1", "score": 0.8,
        "route_reason": "confident_cheap", "propensity": 1.0, "thresholds": TH,
        "policy_seq": 3, "classifier_version": "c1", "cost_usd": 0.001, "latency_ms": 120.0,
        "segment": {"locale": "fr"}, "signals": {"ood_distance": 0.2}},
    "feedback_event": {
        "schema_version": "1", "event_id": "f1", "request_id": "r1", "router_id": "support",
        "ts": "2026-03-01T12:00:00Z", "kind": "rating", "value": 4, "tier": "cheap",
        "score": 0.8, "weight": 2.0, "source": "widget"},
    "baseline": {
        "schema_version": "1", "router_id": "support", "version": "b1",
        "created_at": "2026-01-01T00:00:00Z", "classifier_version": "c1",
        "score": {"edges": [0.0, 0.5, 1.0], "probs": [0.5, 0.5], "n": 100},
        "signals": {"ood_distance": {"edges": [0.0, 1.0, 2.0], "probs": [0.4, 0.6], "n": 9}}},
}


@dataclass(frozen=True)
class Case:
    payload: str
    doc: Any
    what: str
    #: the documented rule this case breaks, when JSON Schema cannot state it
    rule: str | None = None


def mutate(payload: str, path: str, value: Any) -> Any:
    doc = json.loads(json.dumps(GOOD[payload]))
    *parents, last = path.split(".")
    node = doc
    for p in parents:
        node = node[p]
    if value is MISSING:
        node.pop(last, None)
    else:
        node[last] = value
    return doc


LONG_ID, LONG_NAME = "x" * 257, "x" * 65
NOT_STR = [5, 1.5, True, [], {}]
NOT_NUM = ["0.5", True, [], {}, None]
BAD_TS = [
    "2026-03-01T12:00:00", "2026-03-01", "yesterday", "", "2026-02-29T12:00:00Z",
    "2100-02-29T12:00:00Z", "2026-13-01T00:00:00Z", "2026-04-31T00:00:00Z",
    "2026-03-01T24:00:00Z", "2026-03-01T12:00:60Z", "2026-03-01T12:00:00+24:00",
    "2026-03-01T12:00:00Z\n", " 2026-03-01T12:00:00Z", "2026-03-01T12:00:00 Z",
    "\u0662\u0660\u0662\u0666-03-01T12:00:00Z", "0001-01-01T00:00:00Z", "1999-06-01T00:00:00Z",
    "2100-01-01T00:00:00Z", "2100-06-01T00:00:00Z", "9999-12-31T23:59:59Z",
    "2000-01-01T00:30:00+01:00", "2099-12-31T23:30:00-01:00", "2026-03-01T12Z",
    "2026-03-01T12:00:00.Z", "+2026-03-01T12:00:00Z", [2026], None, True, {},
]


#: subject ids that are obviously personal data or not a hash: dead-lettered (issue #18)
PII_SUBJECT_IDS: list[Any] = [
    "ann.smith@example.com", "Ann Smith and family", "+4915112345678901", "0049-151-1234-5678",
    "(555) 123-4567 ext", "short", "x" * 129, "caf\u00e9-0123456789abcdef", "line\nbreak-12345678",
    "", None, 12345678901234567, []]
#: pseudonymous ids that pass
GOOD_SUBJECT_IDS = ["sha256:9f86d081884c7d65", "u_" + "ab12" * 8, "A1b2C3d4E5f6G7h8",
                    "k=v/x+y.z-0123456789", "1234567890123456x"]


def routing_cases() -> Iterator[Case]:
    p = "routing_event"
    for f in ("event_id", "request_id"):
        for v in ["", LONG_ID, None, MISSING, *NOT_STR]:
            yield Case(p, mutate(p, f, v), f"{f}={v!r}")
    for f in ("model", "classifier_version"):
        for v in ["", LONG_ID, *NOT_STR]:
            yield Case(p, mutate(p, f, v), f"{f}={v!r}")
    for f in ("router_id", "tier"):
        for v in ["", LONG_NAME, None, MISSING, *NOT_STR]:
            yield Case(p, mutate(p, f, v), f"{f}={v!r}")
    for v in [-0.1, 1.01, 1e308, -1e-300, MISSING, *NOT_NUM]:
        yield Case(p, mutate(p, "score", v), f"score={v!r}")
    for v in [0, -1, 1.5, "1", True, None]:
        yield Case(p, mutate(p, "propensity", v), f"propensity={v!r}")
    for v in ["vibes", "CONFIDENT_CHEAP", "", 1, None, MISSING]:
        yield Case(p, mutate(p, "route_reason", v), f"route_reason={v!r}")
    for v in [*BAD_TS, MISSING]:
        yield Case(p, mutate(p, "ts", v), f"ts={v!r}")
    for f in ("cheap_above", "capable_below", "exploration_rate", "escalate_below"):
        for v in [-0.1, 1.5, "0.5", True, []]:
            yield Case(p, mutate(p, f"thresholds.{f}", v), f"thresholds.{f}={v!r}")
    for f in ("cheap_above", "capable_below"):
        yield Case(p, mutate(p, f"thresholds.{f}", MISSING), f"thresholds.{f} missing")
    yield Case(p, mutate(p, "thresholds.extra", 1), "thresholds.extra")
    for v in [[0.7, 0.5], "x", None, MISSING, 0.5]:
        yield Case(p, mutate(p, "thresholds", v), f"thresholds={v!r}")
    for th in ({"cheap_above": 0.4, "capable_below": 0.6},
               {"cheap_above": 0.0, "capable_below": 1e-9, "exploration_rate": 0.5}):
        yield Case(p, mutate(p, "thresholds", th), f"thresholds={th}", "thresholds_order")
    for v in [-1, 1.5, "1", True, [], -2.0]:
        yield Case(p, mutate(p, "policy_seq", v), f"policy_seq={v!r}")
    for v in [2.0, 0.0, 1e3, 2**53 * 1.5]:
        yield Case(p, mutate(p, "policy_seq", v), f"policy_seq={v!r}", "integer_spelling")
    for f in ("cost_usd", "latency_ms"):
        for v in [-1, -1e-9, "1", True, []]:
            yield Case(p, mutate(p, f, v), f"{f}={v!r}")
    for v in [{f"k{i}": "v" for i in range(MAX_MAP_ITEMS + 1)}, {"k": "v" * 129}, {"": "v"},
              {LONG_NAME: "v"}, {"k": 1}, {"k": None}, ["k"], "k"]:
        yield Case(p, mutate(p, "segment", v), f"segment={str(v)[:40]}")
    for v in [{f"s{i}": 1.0 for i in range(MAX_MAP_ITEMS + 1)}, {"a": "x"}, {"a": None},
              {"": 1.0}, {LONG_NAME: 1.0}, {"a": True}, [1.0]]:
        yield Case(p, mutate(p, "signals", v), f"signals={str(v)[:40]}")
    for v in ["2", "0", 1, None]:
        yield Case(p, mutate(p, "schema_version", v), f"schema_version={v!r}")
    for f in ("extra", "Score", "__proto__"):
        yield Case(p, mutate(p, f, 1), f"unknown field {f}")
    for v in PII_SUBJECT_IDS:
        if v is not None:  # null is an absent subject_id
            yield Case(p, mutate(p, "subject_id", v), f"subject_id={v!r}")


def feedback_cases() -> Iterator[Case]:
    p = "feedback_event"
    bad_values = {"thumbs": [2, 0.5, -1, 1.0000001], "rating": [0, 6, 3.5, 5.5, 0.999],
                  "review": [1.1, -0.0001, 2], "shadow": [2, -1], "survey": [1.5, -1],
                  "support_contact": [0, 2, 0.5, 1.5]}
    for kind, values in bad_values.items():
        for v in values:
            yield Case(p, {**mutate(p, "kind", kind), "value": v}, f"{kind} value={v!r}")
    for v in [*NOT_NUM, MISSING, 1e308]:
        yield Case(p, mutate(p, "value", v), f"value={v!r}")
    for v in ["emoji", "THUMBS", "", None, 1, MISSING]:
        yield Case(p, mutate(p, "kind", v), f"kind={v!r}")
    retention = {**GOOD[p], "kind": "retention", "value": 1, "subject_id": GOOD_SUBJECT_IDS[0]}
    for v in [0.5, 2, -1]:
        yield Case(p, {**retention, "value": v}, f"retention value={v!r}")
    yield Case(p, {k: v for k, v in retention.items() if k != "subject_id"},
               "retention without subject_id")
    for v in PII_SUBJECT_IDS:
        yield Case(p, {**retention, "subject_id": v}, f"retention subject_id={v!r}")
    for v in [0, 1e-7, 1e7, -1, "1", True]:
        yield Case(p, mutate(p, "weight", v), f"weight={v!r}")
    for v in [1.5, -0.5, "0.5"]:
        yield Case(p, mutate(p, "score", v), f"score={v!r}")
    for f, v in [("tier", ""), ("tier", LONG_NAME), ("router_id", LONG_NAME), ("router_id", ""),
                 ("source", ""), ("source", LONG_ID), ("event_id", ""), ("event_id", MISSING),
                 ("request_id", None), ("request_id", MISSING), ("schema_version", "0"),
                 ("extra", []), ("trace_id", "t")]:
        yield Case(p, mutate(p, f, v), f"{f}={v!r}")
    for v in [*BAD_TS[:12], MISSING]:
        yield Case(p, mutate(p, "ts", v), f"ts={v!r}")


def baseline_cases() -> Iterator[Case]:
    p = "baseline"
    for path, v in [("score.probs", [0.5, 0.6, 0.1]), ("score.edges", [0.0, 1.0, 0.5, 2.0])]:
        yield Case(p, mutate(p, path, v), f"{path}={v}", "baseline_edges_count")
    yield Case(p, mutate(p, "score.edges", [0.0, 0.7, 0.5]), "edges decreasing",
               "baseline_edges_order")
    yield Case(p, mutate(p, "signals.ood_distance.edges", [2.0, 1.0, 0.0]),
               "signal edges decreasing", "baseline_edges_order")
    for v in ([0.5, 0.6], [0.2, 0.2]):
        yield Case(p, mutate(p, "score.probs", v), f"probs={v}", "baseline_probs_sum")
    yield Case(p, mutate(p, "score.n", 100.0), "n=100.0", "integer_spelling")
    for path, v in [("score.probs", [1.5, -0.5]), ("score.probs", [1.0]), ("score.n", 0),
                    ("score.n", 1.5), ("score.edges", [0.0, 1.0]), ("score.edges", "x"),
                    ("score", None), ("score", MISSING), ("version", MISSING), ("version", ""),
                    ("router_id", ""), ("created_at", "2026-04-01T00:00:00"),
                    ("created_at", "soon"), ("extra", 1),
                    ("signals", {"x": None}), ("signals", {"": GOOD[p]["score"]}),
                    ("score.extra", 1), ("score.edges", [0.0, "0.5", 1.0])]:
        yield Case(p, mutate(p, path, v), f"{path}={v!r}")


CORPUS = [*routing_cases(), *feedback_cases(), *baseline_cases()]


def pydantic_rejects(case: Case) -> bool:
    return isinstance(validate_event(case.doc, PAYLOADS[case.payload]), Rejection)


def schema_rejects(case: Case) -> bool:
    return not VALIDATORS[case.payload].is_valid(case.doc)


def test_the_corpus_is_large_and_every_case_is_bad() -> None:
    assert len(CORPUS) >= 200
    wrongly_good = [c.what for c in CORPUS if not pydantic_rejects(c)]
    assert wrongly_good == []


def test_jsonschema_rejects_what_pydantic_rejects() -> None:
    missed = [(c.payload, c.what) for c in CORPUS if c.rule is None and not schema_rejects(c)]
    assert missed == []


def test_documented_rules_are_exactly_what_json_schema_cannot_state() -> None:
    """Each documented rule: the models enforce it, the schemas let it through (or, for
    the timestamp's instant bound, are stricter at its edges) — and nothing else differs."""
    seen: set[str] = set()
    for case in CORPUS:
        if case.rule is not None:
            assert pydantic_rejects(case) and not schema_rejects(case), case.what
            seen.add(case.rule)
    # the instant bound: in range by pydantic, refused by the conservative pattern
    for ts in ("1999-12-31T23:30:00-01:00", "2000-01-01T05:00:00+01:00",
               "2099-12-31T12:00:00-01:00", "2100-01-01T00:30:00+01:00"):
        case = Case("routing_event", mutate("routing_event", "ts", ts), ts)
        assert not pydantic_rejects(case) and schema_rejects(case), ts
    seen.add("timestamp_instant")
    # the size of an event is a property of its bytes, not of its JSON value
    padded = orjson.dumps(GOOD["routing_event"]) + b" " * 70_000
    _, [rejection] = decode_events(padded, PAYLOADS["routing_event"])
    assert rejection.reason_class == "oversized"
    assert VALIDATORS["routing_event"].is_valid(json.loads(padded))
    seen.add("event_size")
    assert seen == set(RULES_NOT_IN_JSON_SCHEMA)


def test_readme_lists_exactly_the_documented_rules() -> None:
    text = (SCHEMAS / "README.md").read_text()
    section = text.split("## Rules JSON Schema cannot state", 1)[1].split("\n## ", 1)[0]
    listed = re.findall(r"^- `([a-z_]+)`", section, flags=re.M)
    assert sorted(listed) == sorted(RULES_NOT_IN_JSON_SCHEMA)


def test_schemas_state_their_cross_field_rules() -> None:
    routing = json.loads((SCHEMAS / "routing_event.v1.schema.json").read_text())
    assert "capable_below <= cheap_above" in routing["$defs"]["Thresholds"]["$comment"]
    baseline = json.loads((SCHEMAS / "baseline.v1.schema.json").read_text())
    assert "len(probs) + 1" in baseline["$defs"]["BinnedDistribution"]["$comment"]
    feedback = json.loads((SCHEMAS / "feedback_event.v1.schema.json").read_text())
    kinds = {r["if"]["properties"]["kind"]["const"]: r["then"]["properties"]["value"]
             for r in feedback["allOf"]}
    assert kinds["rating"] == {"minimum": 1.0, "maximum": 5.0, "multipleOf": 1}
    assert kinds["support_contact"] == {"minimum": 1.0, "maximum": 1.0}
    assert set(kinds) == set(feedback["properties"]["kind"]["enum"])


# -- valid events pass both -------------------------------------------------------------------

unit = st.floats(0, 1)
names = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1,
                max_size=64)
timestamps = st.builds(
    lambda t, off, frac: (datetime(2001, 1, 1, tzinfo=UTC) + timedelta(seconds=t))
    .astimezone(timezone(timedelta(minutes=off)))
    .isoformat(timespec="microseconds" if frac else "seconds"),
    st.integers(0, 97 * 365 * 86400), st.integers(-23 * 60 - 59, 23 * 60 + 59), st.booleans())


#: pseudonymous subject ids: hashes (hex, base64url), possibly prefixed
subject_ids = st.one_of(
    st.sampled_from(GOOD_SUBJECT_IDS),
    st.from_regex(r"\A(sha256:)?[0-9a-f]{15}[a-f][0-9a-f]{0,48}\Z"),
    st.from_regex(r"\A[A-Za-z0-9_-]{15}[A-Za-z_][A-Za-z0-9_=+/.:-]{0,100}\Z"))


@st.composite
def routing_events(draw: st.DrawFn) -> dict[str, Any]:
    lo, hi = sorted([draw(unit), draw(unit)])
    ev = {"event_id": draw(names), "request_id": draw(names), "router_id": draw(names),
          "ts": draw(timestamps), "tier": draw(names), "score": draw(unit),
          "route_reason": draw(st.sampled_from(
              PAYLOADS["routing_event"].model_fields["route_reason"].annotation.__args__)),
          "propensity": draw(st.floats(1e-9, 1)),
          "thresholds": {"cheap_above": hi, "capable_below": lo,
                         "exploration_rate": draw(unit)}}
    optional = {"policy_seq": st.integers(0, 2**53 - 1), "cost_usd": st.floats(0, 1e6),
                "segment": st.dictionaries(names, st.text(max_size=128), max_size=32),
                "signals": st.dictionaries(names, st.floats(-1e9, 1e9), max_size=32),
                "subject_id": subject_ids}
    for f, s in optional.items():
        if draw(st.booleans()):
            ev[f] = draw(s)
    return ev


@st.composite
def feedback_events(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["thumbs", "rating", "review", "shadow", "support_contact",
                                 "survey", "retention"]))
    value = {"thumbs": st.sampled_from([0, 1, 0.0, 1.0]), "rating": st.integers(1, 5),
             "support_contact": st.just(1), "retention": st.sampled_from([0, 1])}.get(kind,
                                                                                     unit)
    ev = {"event_id": draw(names), "request_id": draw(names), "ts": draw(timestamps),
          "kind": kind, "value": draw(value)}
    if kind == "retention" or draw(st.booleans()):
        ev["subject_id"] = draw(subject_ids)
    if draw(st.booleans()):
        ev["weight"] = draw(st.floats(1e-6, 1e6))
    return ev


def as_json(doc: dict[str, Any]) -> Any:
    """The event as a consumer parses it from the wire."""
    return orjson.loads(orjson.dumps(doc))


@settings(max_examples=150, deadline=None)
@given(ev=routing_events())
def test_valid_routing_events_pass_both(ev: dict[str, Any]) -> None:
    doc = as_json(ev)
    assert not isinstance(validate_event(doc, PAYLOADS["routing_event"]), Rejection)
    VALIDATORS["routing_event"].validate(doc)
    VALIDATORS["routing_envelope"].validate([doc, doc])


@settings(max_examples=150, deadline=None)
@given(ev=feedback_events())
def test_valid_feedback_events_pass_both(ev: dict[str, Any]) -> None:
    doc = as_json(ev)
    assert not isinstance(validate_event(doc, PAYLOADS["feedback_event"]), Rejection)
    VALIDATORS["feedback_event"].validate(doc)
    VALIDATORS["feedback_envelope"].validate(doc)


# -- the schema files ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(ENVELOPES))
def test_checked_in_envelope_matches_the_code(name: str) -> None:
    path = SCHEMAS / f"{name}.v1.schema.json"
    assert path.read_text() == schema_text(name), f"{path} is stale: tierwatch schemas export"


def _properties(node: Any, where: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(node, dict):
        for name, sub in (node.get("properties") or {}).items():
            yield f"{where}.{name}", sub
        for key, sub in node.items():
            yield from _properties(sub, f"{where}/{key}")
    elif isinstance(node, list):
        for i, sub in enumerate(node):
            yield from _properties(sub, f"{where}[{i}]")


@pytest.mark.parametrize("name", sorted([*PAYLOADS, *ENVELOPES]))
def test_every_field_has_a_description_and_every_id_is_absolute(name: str) -> None:
    schema = json.loads((SCHEMAS / f"{name}.v1.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$id"] == f"{SCHEMA_BASE}{name}.v1.schema.json"
    assert SCHEMA_BASE.startswith("https://")
    fields = [(where, prop) for where, prop in _properties(schema)
              if "/if" not in where and "/then" not in where]  # rules restate, not declare
    assert fields
    undocumented = [where for where, prop in fields if not prop.get("description")]
    assert undocumented == []


def test_envelope_takes_one_event_or_a_batch_and_names_the_bad_one() -> None:
    v = VALIDATORS["routing_envelope"]
    good = GOOD["routing_event"]
    assert v.is_valid(good) and v.is_valid([good, good]) and v.is_valid([])
    bad = {**good, "score": 2}
    assert not v.is_valid(bad) and not v.is_valid([good, bad]) and not v.is_valid("x")
    errors = list(v.iter_errors([good, bad]))
    assert errors and any(list(e.path) == [1, "score"]
                          for err in errors for e in [err, *(err.context or [])])
    # self-contained: the embedded event schema carries the published $id
    assert envelope_schema("routing_envelope")["$defs"]["RoutingEvent"]["$id"] == \
        json_schema(PAYLOADS["routing_event"])["$id"]


# -- random mutations: the same verdict direction on values nobody thought of ------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**53 + 1, 2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=3),
    max_leaves=8)
FIELDS = {p: [*GOOD[p], *(f"thresholds.{k}" for k in TH if p == "routing_event"), "extra"]
          for p in ("routing_event", "feedback_event")}


def documented_rule(payload: str, doc: dict[str, Any]) -> str | None:
    """The documented rule a mutated event breaks, when it breaks one."""
    th = doc.get("thresholds")
    if payload == "routing_event" and isinstance(th, dict) and all(
            type(th.get(k)) in (int, float) for k in ("cheap_above", "capable_below")) \
            and th["capable_below"] > th["cheap_above"]:
        return "thresholds_order"
    if isinstance(doc.get("policy_seq"), float) and doc["policy_seq"].is_integer():
        return "integer_spelling"
    return None


@settings(max_examples=300, deadline=None)
@given(data=st.data(), payload=st.sampled_from(sorted(FIELDS)))
def test_random_mutations_rejected_by_the_models_are_rejected_by_the_schemas(
        data: st.DataObject, payload: str) -> None:
    path = data.draw(st.sampled_from(FIELDS[payload]))
    value = data.draw(json_values | st.just(MISSING))
    case = Case(payload, mutate(payload, path, value), f"{path}={value!r}")
    if not pydantic_rejects(case):
        return
    if documented_rule(payload, case.doc) is None:
        assert schema_rejects(case), case.what
