"""Signing: canonical JSON, key rotation by key_id, tamper detection — and the subscriber's
verdicts on signed messages, offline (no broker)."""

from __future__ import annotations

import json
import math
import string
import struct
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.control import Bounds, ThresholdSubscriber
from pipeline.core.signing import Keyring, canonical_json, new_key, parse_key
from pipeline.schemas import ExpectedImpact, ThresholdRecommendation, Thresholds
from pipeline.stream.processor import encode

K1 = bytes.fromhex(new_key())
K2 = bytes.fromhex(new_key())
NOW = datetime(2026, 5, 1, 12, tzinfo=UTC)
OLD = Thresholds(cheap_above=0.6, capable_below=0.5, exploration_rate=0.1)
NEW = Thresholds(cheap_above=0.65, capable_below=0.55, exploration_rate=0.1)
FALLBACK = Thresholds(cheap_above=0.9, capable_below=0.8, exploration_rate=0.0)


def recommendation(ring: Keyring, *, key_id: str = "k1", seq: int = 1,
                   router_id: str = "support", mode: str = "enforce",
                   thresholds: Thresholds = NEW, issued: datetime = NOW,
                   ttl: timedelta = timedelta(days=7)) -> ThresholdRecommendation:
    """A recommendation signed as the monitor signs one (``Monitor._recommend``)."""
    unsigned = ThresholdRecommendation.model_validate({
        "router_id": router_id, "seq": seq, "issued_at": issued, "valid_until": issued + ttl,
        "mode": mode, "thresholds": thresholds, "previous": OLD,
        "reasons": ["cheap_above 0.600 → 0.650 toward target 0.700"],
        "evidence": {"target": 0.7, "bands": [{"lo": 0.6, "hi": 0.7, "gap": 0.01}]},
        "expected_impact": ExpectedImpact(cost_per_day_usd=10.0, cost_change_per_day_usd=1.0,
                                          cheap_share=0.5, quality_change=0.001),
        "baseline_version": "b1", "key_id": key_id, "signature": "0" * 64})
    doc = unsigned.model_dump(mode="json", exclude_none=True)
    return unsigned.model_copy(update={"signature": ring.sign(key_id, doc)})


def subscriber(ring: Keyring, **kw: Any) -> ThresholdSubscriber:
    sub = ThresholdSubscriber("127.0.0.1:1", "support", ring, Bounds(), FALLBACK,
                              clock=lambda: NOW.timestamp(), **kw)
    sub.mark_contact()
    return sub


# -- canonical JSON --------------------------------------------------------------------------

def test_canonical_json_is_sorted_compact_utf8_and_ignores_the_signature() -> None:
    doc = {"b": 1, "a": {"z": [1, 2], "y": "é"}, "signature": "x"}
    assert canonical_json(doc) == '{"a":{"y":"é","z":[1,2]},"b":1}'.encode()


def test_canonical_json_is_rfc8785_on_the_rfcs_own_examples() -> None:
    # RFC 8785 section 3.2.2 (numbers, escapes, literals) ...
    doc = json.loads(r"""{"numbers": [333333333.33333329, 1E30, 4.50, 2e-3,
        0.000000000000000000000000001], "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
        "literals": [null, true, false]}""")
    assert canonical_json(doc) == (
        r"""{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],"""
        r""""string":"€$\u000f\nA'B\"\\\\\"/"}""").encode()
    # ... and section 3.2.3 (keys sorted by UTF-16 code units, not code points)
    keys = ["\u20ac", "\r", "\ufb33", "1", "\U0001F600", "\u0080", "\u00f6"]
    order = list(json.loads(canonical_json({k: 0 for k in keys})))
    assert order == ["\r", "1", "\u0080", "\u00f6", "\u20ac", "\U0001F600", "\ufb33"]


@pytest.mark.parametrize(("bits", "text"), [  # RFC 8785 appendix B, IEEE 754 → JCS
    ("0000000000000000", "0"), ("8000000000000000", "0"), ("0000000000000001", "5e-324"),
    ("8000000000000001", "-5e-324"), ("7fefffffffffffff", "1.7976931348623157e+308"),
    ("ffefffffffffffff", "-1.7976931348623157e+308"), ("4340000000000000", "9007199254740992"),
    ("c340000000000000", "-9007199254740992"), ("4430000000000000", "295147905179352830000"),
    ("44b52d02c7e14af5", "9.999999999999997e+22"), ("44b52d02c7e14af6", "1e+23"),
    ("44b52d02c7e14af7", "1.0000000000000001e+23"), ("444b1ae4d6e2ef4e", "999999999999999700000"),
    ("444b1ae4d6e2ef4f", "999999999999999900000"), ("444b1ae4d6e2ef50", "1e+21"),
    ("3eb0c6f7a0b5ed8c", "9.999999999999997e-7"), ("3eb0c6f7a0b5ed8d", "0.000001"),
    ("41b3de4355555553", "333333333.3333332"), ("41b3de4355555554", "333333333.33333325"),
    ("41b3de4355555555", "333333333.3333333"), ("41b3de4355555556", "333333333.3333334"),
    ("41b3de4355555557", "333333333.33333343"),
    ("becbf647612f3696", "-0.0000033333333333333333"),
    ("43143ff3c1cb0959", "1424953923781206.2"),
])
def test_numbers_are_written_as_ecmascript_writes_them(bits: str, text: str) -> None:
    (value,) = struct.unpack(">d", bytes.fromhex(bits))
    assert canonical_json({"v": value}) == b'{"v":' + text.encode() + b"}"


@pytest.mark.parametrize("bad", [math.nan, math.inf, 2**53, -(2**53)])
def test_what_jcs_cannot_carry_raises_on_signing_and_never_verifies(bad: float) -> None:
    ring = Keyring({"k1": K1})
    with pytest.raises(ValueError, match="RFC 8785"):
        ring.sign("k1", {"v": bad})
    assert ring.verify("k1", {"v": bad}, "0" * 64) is False


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**53 + 1, 2**53 - 1)  # I-JSON's exact ints
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(string.printable, max_size=8), inner, max_size=4),
    max_leaves=20)


@settings(max_examples=200, deadline=None)
@given(doc=st.dictionaries(st.text(max_size=10), json_values, max_size=8), data=st.data())
def test_canonical_json_ignores_key_order_and_round_trips(doc: dict[str, Any],
                                                          data: st.DataObject) -> None:
    shuffled = dict(data.draw(st.permutations(list(doc.items()))))
    assert canonical_json(shuffled) == canonical_json(doc)
    body = {k: v for k, v in doc.items() if k != "signature"}
    # the same JSON numbers: JCS writes 4.8e16 as the integer 48161868530652700, a
    # binary64 reader gets the same double back
    def as_doubles(raw: bytes) -> Any:
        return json.loads(raw, parse_int=float)
    assert as_doubles(canonical_json(doc)) == as_doubles(orjson.dumps(body))


# -- keys and rotation -----------------------------------------------------------------------

def test_parse_key_reads_hex_or_text_and_refuses_short_keys() -> None:
    assert parse_key("00" * 16) == bytes(16)
    assert parse_key("a passphrase of some length") == b"a passphrase of some length"
    with pytest.raises(ValueError, match="at least 16 bytes"):
        parse_key("short")
    with pytest.raises(ValueError, match="shorter than 16 bytes"):
        Keyring({"k": b"short"})


def test_rotation_by_key_id() -> None:
    old = Keyring({"k1": K1})
    both = Keyring({"k1": K1, "k2": K2})
    new = Keyring({"k2": K2})
    by_old = recommendation(old, key_id="k1", seq=1)
    by_new = recommendation(both, key_id="k2", seq=2)
    during = subscriber(both)
    assert during.offer(encode(by_old)) == "applied"
    assert during.offer(encode(by_new)) == "applied"
    # the old key retired: its messages no longer verify, the new key's still do
    after = subscriber(new)
    assert after.offer(encode(by_old)) == "unknown_key"
    assert after.offer(encode(by_new)) == "applied"
    # a key id is not a key: k2's id on a k1 signature fails
    relabelled = by_old.model_copy(update={"key_id": "k2"})
    assert subscriber(both).offer(encode(relabelled)) == "bad_signature"


# -- tamper detection ------------------------------------------------------------------------

TAMPER: dict[str, Any] = {
    "router_id": "support",  # replaced below by a different value per field
    "seq": 99, "issued_at": "2026-05-02T00:00:00Z", "valid_until": "2027-05-08T12:00:00Z",
    "mode": "advisory",
    "thresholds": {"cheap_above": 0.3, "capable_below": 0.2, "exploration_rate": 0.1},
    "previous": {"cheap_above": 0.1, "capable_below": 0.0, "exploration_rate": 0.0},
    "reasons": ["trust me"], "evidence": {"target": 0.1},
    "expected_impact": {"cost_per_day_usd": 0.0, "cost_change_per_day_usd": 0.0,
                        "cheap_share": 1.0, "quality_change": 0.0},
    "baseline_version": "b2"}


@pytest.mark.parametrize("field", [f for f in TAMPER if f != "router_id"])
def test_changing_any_signed_field_breaks_the_signature(field: str) -> None:
    ring = Keyring({"k1": K1})
    doc = orjson.loads(encode(recommendation(ring)))
    assert doc[field] != TAMPER[field]
    doc[field] = TAMPER[field]
    assert not ring.verify("k1", doc, doc["signature"])
    assert subscriber(ring).offer(orjson.dumps(doc)) == "bad_signature"


@settings(max_examples=100, deadline=None)
@given(cheap_above=st.floats(0.0, 1.0), exploration=st.floats(0.0, 0.5))
def test_forged_thresholds_never_verify(cheap_above: float, exploration: float) -> None:
    ring = Keyring({"k1": K1})
    doc = orjson.loads(encode(recommendation(ring)))
    forged = {"cheap_above": cheap_above, "capable_below": 0.0,
              "exploration_rate": exploration}
    if forged == doc["thresholds"]:
        return
    doc["thresholds"] = forged
    assert subscriber(ring).offer(orjson.dumps(doc)) == "bad_signature"


def test_a_signature_by_an_unknown_key_or_garbage_fails() -> None:
    ring = Keyring({"k1": K1})
    forged = recommendation(Keyring({"k1": K2}))  # right id, wrong key
    assert subscriber(ring).offer(encode(forged)) == "bad_signature"
    doc = orjson.loads(encode(recommendation(ring)))
    doc["signature"] = "f" * 64
    assert subscriber(ring).offer(orjson.dumps(doc)) == "bad_signature"
    doc["signature"] = "not hex"
    assert subscriber(ring).offer(orjson.dumps(doc)) == "malformed"


def test_formatting_of_the_bytes_does_not_matter_only_the_content() -> None:
    ring = Keyring({"k1": K1})
    rec = recommendation(ring)
    doc = orjson.loads(encode(rec))
    # another producer: other key order, whitespace, an omitted null written out, an
    # integer where a float is expected (a timestamp written with another offset is
    # another document: the signed text keeps its offset)
    reformatted = dict(reversed(list(doc.items())))
    reformatted["expected_impact"] = {**doc["expected_impact"], "cost_per_day_usd": 10,
                                      "net_value_change_per_day_usd": None}
    raw = orjson.dumps(reformatted, option=orjson.OPT_INDENT_2)
    assert raw != encode(rec)
    assert subscriber(ring).offer(raw) == "applied"
    reformatted["issued_at"] = "2026-05-01T14:00:00+02:00"
    assert subscriber(ring).offer(orjson.dumps(reformatted)) == "bad_signature"


def test_the_subscriber_verifies_what_the_monitor_signs() -> None:
    """A recommendation from a real Monitor verifies; ``encode`` is the worker's bytes."""
    from pipeline.core.monitor import Monitor, Signer
    from pipeline.core.recommend import Proposal

    ring = Keyring({"k1": K1})
    monitor = Monitor(signer=Signer(ring, "k1", "enforce"))
    state = monitor.router("support", NOW.timestamp() - 30 * 86400)
    monitor._recommend(state, Proposal(  # the signing path alone, on a stub decision
        1, NEW, OLD, ["r"], 0.7, False, (),
        {"cost_per_day_usd": 1.0, "cost_change_per_day_usd": 0.0, "cheap_share": 0.5,
         "quality_change": 0.0}), NOW.timestamp())
    (out,) = monitor.drain()
    assert out.topic == "control" and out.key == "support"
    sub = subscriber(ring)
    assert sub.offer(encode(out.payload)) == "applied"  # type: ignore[arg-type]
    assert sub.current() == NEW
