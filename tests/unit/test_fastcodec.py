"""The hot-path decoder against the contract: the same fields and constraints, and (by a
differential hypothesis test) the same accepted events, rejections and reasons.

- The msgspec Structs declare what the pydantic models declare: their JSON Schemas agree
  field by field (types, defaults, required, bounds, lengths, enums, unknown fields).
- msgspec alone never accepts what pydantic refuses, and when both accept, the values
  (the event time too) are equal. Where msgspec refuses what the contract accepts, the
  input is one of the documented lax forms (numeric timestamps, more than six fraction
  digits, unknown fields dropped and counted), which the fast decoder hands to pydantic.
- The fast decoder as a whole (``decode_routing``) gives what ``decode_message`` gives:
  the same events, the same rejections (class, reason, field, index), the same unknown
  field counts and schema id, in strict mode and not, with and without the Schema
  Registry header, and from pre-decoded lines as the replay sends them.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import msgspec
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.codec import decode_message
from pipeline.core.columns import as_model
from pipeline.fastcodec import (
    FastRouting,
    FastThresholds,
    _ordered,
    _times,
    decode_line,
    decode_routing,
)
from pipeline.schemas import Rejection, RoutingEvent, Thresholds, validate_event

BASE: dict[str, Any] = {
    "event_id": "e1", "request_id": "r1", "router_id": "support", "tier": "cheap",
    "ts": "2026-01-01T00:00:00.123456+00:00", "score": 0.91, "route_reason": "confident_cheap",
    "thresholds": {"cheap_above": 0.7, "capable_below": 0.5, "exploration_rate": 0.1},
    "propensity": 1.0, "policy_seq": 3, "classifier_version": "c1", "cost_usd": 0.001,
    "latency_ms": 12.5, "segment": {"plan": "pro"}, "signals": {"ood_distance": 0.4},
    "model": "m1", "schema_version": "1"}

# --- the declarations -------------------------------------------------------------------------

_DOC_KEYS = {"title", "description", "$comment", "examples"}


def _norm(node: Any, defs: dict[str, Any]) -> Any:
    """A schema without its prose, with ``$ref``s resolved."""
    if isinstance(node, dict):
        if "$ref" in node:
            return _norm(defs[node["$ref"].rsplit("/", 1)[-1]], defs)
        out = {k: _norm(v, defs) for k, v in node.items() if k not in _DOC_KEYS}
        if "const" in out:  # one allowed value, spelt either way
            out["enum"] = [out.pop("const")]
        if "enum" in out:  # a set of values: order is not part of it
            out["enum"] = sorted(out["enum"], key=repr)
        if "enum" in out and "type" in out:
            out.pop("type", None)
        return out
    if isinstance(node, list):
        return [_norm(v, defs) for v in node]
    return node


def _msgspec_schema(struct: type) -> dict[str, Any]:
    (ref,), defs = msgspec.json.schema_components([struct])
    out: dict[str, Any] = _norm(ref, defs)
    return out


def _pydantic_schema(model: type[Any]) -> dict[str, Any]:
    schema = model.model_json_schema()
    out: dict[str, Any] = _norm(schema, schema.get("$defs", {}))
    out.pop("$defs", None)
    return out


@pytest.mark.parametrize(("struct", "model"), [(FastRouting, RoutingEvent),
                                               (FastThresholds, Thresholds)])
def test_structs_declare_what_the_contract_declares(struct: type, model: type[Any]) -> None:
    fast, contract = _msgspec_schema(struct), _pydantic_schema(model)
    assert set(fast["properties"]) == set(contract["properties"])
    assert sorted(fast.get("required", [])) == sorted(contract.get("required", []))
    assert fast.get("additionalProperties") is False
    assert contract.get("additionalProperties") is False
    for name, want in contract["properties"].items():
        have = fast["properties"][name]
        if name == "ts":
            # text here, parsed per batch: checked by the differential tests below
            assert want["type"] == have["type"] == "string"
            continue
        assert have == want, name


def test_a_drifted_field_is_noticed() -> None:
    """The comparison above can fail: a bound moved is a difference."""

    class Drifted(msgspec.Struct, forbid_unknown_fields=True):
        cheap_above: float
        capable_below: float
        exploration_rate: float = 0.0
        escalate_below: float | None = None

    assert _msgspec_schema(Drifted)["properties"] != _pydantic_schema(Thresholds)["properties"]


# --- the strategies ---------------------------------------------------------------------------

_two = st.integers(0, 99).map(lambda i: f"{i:02d}")


@st.composite
def timestamps(draw: st.DrawFn) -> Any:
    """Timestamps well and badly spelt, near the bounds and far from them, and numbers."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.one_of(st.integers(-10**11, 10**13),
                              st.floats(allow_nan=False, allow_infinity=False)))
    year = draw(st.sampled_from(["1999", "2000", "2026", "2099", "2100", "0001", "9999"]))
    month = draw(st.sampled_from(["01", "02", "12", "13", "00", "1"]))
    day = draw(st.sampled_from(["01", "28", "29", "30", "31", "32"]))
    sep = draw(st.sampled_from(["T", "t", " ", "_"]))
    hh, mm, ss = draw(st.sampled_from(["00", "23", "24"])), draw(_two), draw(_two)
    frac = draw(st.sampled_from(["", "."]) )
    if frac:
        frac += "".join(draw(st.lists(st.sampled_from("0123456789"), min_size=0, max_size=10)))
    offset = draw(st.sampled_from(["Z", "z", "+00:00", "-00:00", "+05:30", "-23:59",
                                   "+24:00", "", "+0530", "+05", "UTC"]))
    time = draw(st.sampled_from([f"{hh}:{mm}:{ss}", f"{hh}:{mm}", f"{hh}{mm}{ss}"]))
    return f"{year}-{month}-{day}{sep}{time}{frac}{offset}"


def _names(max_size: int) -> st.SearchStrategy[str]:
    return st.text(min_size=0, max_size=max_size)


_weird = st.one_of(st.none(), st.booleans(), st.integers(-2, 2**70), st.text(max_size=3),
                   st.floats(allow_nan=False, allow_infinity=False), st.just([]), st.just({}))
_unit = st.one_of(st.floats(-0.5, 1.5, allow_nan=False), st.sampled_from([0, 1, 0.0, 1.0]),
                  _weird)

FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "event_id": st.one_of(_names(3), st.just("x" * 256), st.just("x" * 257), _weird),
    "request_id": st.one_of(_names(3), st.just("é" * 256), _weird),
    "router_id": st.one_of(_names(3), st.just("r" * 64), st.just("r" * 65), _weird),
    "tier": st.one_of(st.sampled_from(["cheap", "capable", ""]), _weird),
    "ts": st.one_of(timestamps(), _weird),
    "score": _unit,
    "route_reason": st.one_of(st.sampled_from(["confident_cheap", "exploration", "other"]),
                              _weird),
    "propensity": st.one_of(st.sampled_from([0, 0.0, 1e-9, 1, 1.0, 1.5]), _weird),
    "thresholds": st.one_of(
        st.fixed_dictionaries({"cheap_above": _unit, "capable_below": _unit},
                              optional={"exploration_rate": _unit, "escalate_below": _unit,
                                        "extra": _weird}),
        _weird),
    "policy_seq": st.one_of(st.integers(-1, 2**64), st.sampled_from([2.0, True]), _weird),
    "classifier_version": st.one_of(_names(2), _weird),
    "cost_usd": st.one_of(st.floats(-1, 10, allow_nan=False), _weird),
    "latency_ms": st.one_of(st.floats(-1, 10, allow_nan=False), _weird),
    "segment": st.one_of(st.dictionaries(_names(65), st.one_of(_names(3), st.just("v" * 129),
                                                               _weird), max_size=34), _weird),
    "signals": st.one_of(st.dictionaries(_names(3), st.one_of(st.floats(allow_nan=False,
                                                                        allow_infinity=False),
                                                              _weird), max_size=33), _weird),
    "model": st.one_of(_names(2), _weird),
    "subject_id": st.one_of(
        st.sampled_from(["sha256:9f86d081884c7d65", "ann.person@example.com", "+49 30 1234567",
                         "0301234567890123", "Ann Person Smith", "x" * 15, "y" * 129]),
        st.from_regex(r"[A-Za-z0-9_:.=+/ @-]{14,20}", fullmatch=True), _weird),
    "schema_version": st.one_of(st.sampled_from(["1", "2", 1]), _weird),
}
MISSING = object()
#: RFC 3339 as msgspec is asked to read it: up to six fraction digits
_RFC3339 = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}"
                      r"(\.[0-9]{1,6})?([Zz]|[+-][0-9]{2}:[0-9]{2})\Z")


@st.composite
def events(draw: st.DrawFn) -> dict[str, Any]:
    """The base event with a few fields changed, dropped, or added."""
    doc = dict(BASE)
    for name in draw(st.lists(st.sampled_from(sorted(FIELDS)), max_size=3, unique=True)):
        value = draw(st.one_of(FIELDS[name], st.just(MISSING)))
        if value is MISSING:
            doc.pop(name, None)
        else:
            doc[name] = value
    if draw(st.integers(0, 9)) == 0:
        doc[draw(st.sampled_from(["trace_id", "Score", "ts "]))] = 1
    return doc


def _dumps(doc: Any) -> bytes:
    return json.dumps(doc, ensure_ascii=False).encode()


def _loads(raw: bytes) -> Any:
    """The JSON as the contract's decoder reads it (stdlib json past orjson's limits)."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json.loads(raw)


# --- msgspec alone ----------------------------------------------------------------------------


def _msgspec_accepts(raw: bytes) -> tuple[FastRouting, float] | None:
    ev = decode_line(raw)
    if ev is None or not _ordered([ev]):
        return None
    got = _times([ev])
    return None if got is None else (ev, float(got[1][0]))


def _lax(doc: dict[str, Any]) -> bool:
    """Forms the contract accepts that msgspec is not asked to (pydantic decides them)."""
    ts = doc.get("ts")
    if not isinstance(ts, str):
        return True  # numeric timestamps
    if not _RFC3339.match(ts):
        return True  # other spellings pydantic parses (2026-01-01_00:00:00Z, 7 digits...)
    return any(k not in RoutingEvent.model_fields for k in doc) or (
        isinstance(doc.get("thresholds"), dict)
        and any(k not in Thresholds.model_fields for k in doc["thresholds"]))


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events())
def test_msgspec_never_accepts_what_the_contract_refuses(doc: dict[str, Any]) -> None:
    raw = _dumps(doc)
    fast = _msgspec_accepts(raw)
    contract = validate_event(_loads(raw), RoutingEvent)
    if fast is not None:
        assert isinstance(contract, RoutingEvent), (doc, contract)
        ev, epoch = fast
        assert epoch == contract.epoch
        assert as_model(ev) == contract
    elif isinstance(contract, RoutingEvent):
        assert _lax(doc), f"msgspec refuses an event the contract takes: {doc}"


@settings(max_examples=300, deadline=None)
@given(timestamps())
def test_timestamps_agree_with_the_contract(ts: Any) -> None:
    """Naive, numeric, out of range, badly spelt: msgspec takes a subset of what pydantic
    takes, at the same instant; the fast decoder takes exactly what pydantic takes."""
    doc = {**BASE, "ts": ts}
    raw = _dumps(doc)
    contract = validate_event(_loads(raw), RoutingEvent)
    fast = _msgspec_accepts(raw)
    if fast is not None:
        assert isinstance(contract, RoutingEvent) and fast[1] == contract.epoch
    batch = decode_routing(b"[" + raw + b"]")
    if isinstance(contract, Rejection):
        assert batch.decoded.rejections == [Rejection(contract.reason_class, contract.reason,
                                                      contract.field, 0)]
    else:
        assert batch.epochs.tolist() == [contract.epoch]
        assert batch.times == [contract.ts]
        if (isinstance(ts, str) and ts[-1:] in "Zz") or (isinstance(ts, str) and "+" in ts):
            assert fast is not None or _lax(doc)


# --- the fast decoder as a whole ----------------------------------------------------------------


def _same(raw: bytes, strict: bool, parsed: Any = None) -> None:
    want = decode_message(raw, RoutingEvent, strict=strict)
    got = (decode_routing(raw, strict=strict) if parsed is None
           else decode_routing(raw, strict=strict, parsed=parsed))
    d = got.decoded
    assert d.rejections == want.rejections
    assert [as_model(e) for e in d.events] == want.events
    assert [e.epoch for e in want.events] == got.epochs.tolist()
    assert got.times == [e.ts for e in want.events]
    assert d.unknown_fields == want.unknown_fields
    assert d.schema_id == want.schema_id


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(events(), max_size=6), st.booleans(), st.booleans(), st.booleans())
def test_fast_decoder_gives_what_the_contract_gives(docs: list[dict[str, Any]], strict: bool,
                                                    header: bool, single: bool) -> None:
    if single and docs:
        payload = _dumps(docs[0])
    else:
        payload = b"[" + b",".join(_dumps(d) for d in docs) + b"]"
    raw = (b"\x00\x00\x00\x00\x07" + payload) if header else payload
    _same(raw, strict)
    if not header and not single:  # as the replay sends a batch: lines decoded already
        lines = [_dumps(d) for d in docs]
        try:  # a line orjson cannot read is sent alone by the replay, never in a batch
            parsed = [decode_line(x) or orjson.loads(x) for x in lines]
        except orjson.JSONDecodeError:
            return
        _same(raw, strict, parsed=parsed)


@pytest.mark.parametrize("payload", [
    b'[{"event_id": "e", "event_id": "f"}]',  # a repeated key
    b'[' + _dumps(BASE).replace(b'"e1"', b'"\\ud800"') + b']',  # a lone surrogate
    b'[' + _dumps(BASE).replace(b'0.91', b'NaN') + b']',  # NaN: named by pydantic
    b'[' + _dumps(BASE).replace(b'0.91', b'1e400') + b']',  # infinity
    b'[' + _dumps(BASE).replace(b'"e1"', b'"\\u0065\\u0031"') + b']',  # escapes
    b'[' + _dumps(BASE).replace(b'"ts":"', b'"ts":"\\u0032') .replace(b'"2026', b'"026')
    + b']',
    b' [' + _dumps(BASE) + b']',  # leading white space
    b'[' + _dumps(BASE) + b',' + _dumps({**BASE, "trace_id": 1}) + b']',
    b'[' + _dumps({**BASE, "thresholds": {"cheap_above": 0.2, "capable_below": 0.5}}) + b']',
    b'[' + b','.join([_dumps(BASE)] * 3) + b']',
    b'[' + _dumps({**BASE, "policy_seq": 2**64}) + b']',  # orjson: a float, refused
    b'[' + _dumps({**BASE, "policy_seq": 2**64 - 1}) + b']',
    # timestamps that would break the batch's joined text: each is decided on its own
    b'[' + _dumps({**BASE, "ts": '2026-01-01T00:00:00Z","2026-01-02T00:00:00Z'}) + b','
    + _dumps({**BASE, "request_id": "r2", "ts": "2026-01-01T00:00:00Z\\"}) + b','
    + _dumps({**BASE, "request_id": "r3"}) + b']',
    b'[]', b'{}', b'[1, "a", null]', b'not json', b'',
    # nesting past msgspec's recursion limit (and orjson's): found by the broker fuzz test
    b'[' * 2000 + b']' * 2000, b'[' + _dumps(BASE) + b',' + b'[' * 1000 + b']' * 1000 + b']',
    b'[' + b'{"a":' * 3000 + b'1' + b'}' * 3000 + b']', b'[' * 1000 + b']' * 1000,
])
@pytest.mark.parametrize("strict", [False, True])
def test_fast_decoder_on_awkward_messages(payload: bytes, strict: bool) -> None:
    _same(payload, strict)


def test_limits_are_the_contracts() -> None:
    raw = b"[" + _dumps(BASE) + b"]"
    for event, message in ((64, 10_000), (10_000, 64), (len(raw) - 3, 10_000)):
        want = decode_message(raw, RoutingEvent, max_event_bytes=event,
                              max_message_bytes=message)
        got = decode_routing(raw, max_event_bytes=event, max_message_bytes=message)
        assert got.decoded.rejections == want.rejections
        assert len(got.events) == len(want.events)
    assert not math.isnan(decode_routing(raw).epochs[0])
