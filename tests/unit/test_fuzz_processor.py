"""Hostile input never crashes the processor and never changes the statistics.

Every message is either valid or dead-lettered with a reason; after any mix of junk, the
monitor's state equals that of a monitor fed only the valid events.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.bootstrap import bootstrap
from pipeline.core.monitor import Monitor
from pipeline.settings import Settings
from pipeline.stream.processor import InMessage, Processor

VALID = {"event_id": "e", "request_id": "q", "router_id": "r", "tier": "cheap",
         "ts": "2026-01-01T00:00:00+00:00", "score": 0.9, "route_reason": "confident_cheap",
         "thresholds": {"cheap_above": 0.7, "capable_below": 0.5, "exploration_rate": 0.1}}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=50),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner,
                                                                 max_size=5),
    max_leaves=20)


def mutated() -> st.SearchStrategy[dict[str, Any]]:
    """A valid event with one field replaced, removed or added."""
    return st.tuples(st.sampled_from([*VALID, "extra"]), json_values, st.booleans()).map(
        lambda t: {k: v for k, v in {**VALID, t[0]: t[1]}.items() if not (t[2] and k == t[0])})


def encode(obj: Any) -> bytes:
    try:
        return orjson.dumps(obj)
    except (TypeError, orjson.JSONEncodeError):
        return json.dumps(obj, allow_nan=True).encode()


hostile = st.one_of(
    st.binary(max_size=200),
    json_values.map(encode),
    mutated().map(encode),
    st.lists(mutated(), max_size=8).map(encode),
    st.integers(1, 200).map(lambda d: b"[" * d + b"]" * d),           # deep nesting
    st.integers(1, 5).map(lambda k: b'{"event_id": "' + b"x" * (k * 40_000) + b'"}'),
    st.text(max_size=60).map(lambda s: encode({**VALID, "router_id": s, "model": s})),
    st.just(b'{"event_id": "a", "event_id": "b"}'),                   # duplicate keys
)


def processor() -> Processor:
    return bootstrap(Settings(), monitor=Monitor(), clock=None)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(hostile, min_size=1, max_size=25))
def test_every_message_is_valid_or_dead_lettered_and_stats_stay_exact(raws: list[bytes]) -> None:
    p = processor()
    clean = processor()
    for i, raw in enumerate(raws):
        msg = InMessage("tierwatch.routing", 0, i, b"k", raw)
        out = p.handle("routing", msg)
        dead = [orjson.loads(m.value) for m in out if m.topic == "dlq"]
        assert all(d["reason"] and d["reason_class"] for d in dead)
        # replay only the events that were accepted into a clean processor
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError:
            try:  # the decoder also reads NaN/Infinity, to name the field at fault
                doc = json.loads(raw)
            except (ValueError, RecursionError):
                continue
        items = doc if isinstance(doc, list) else [doc]
        rejected = {d.get("index") for d in dead}
        if None in rejected and not isinstance(doc, list):
            continue
        good = [x for j, x in enumerate(items) if j not in rejected]
        if good and None not in rejected:
            clean.handle("routing", InMessage("t", 0, i, b"k", orjson.dumps(good)))
    assert p.monitor.counts.routed == clean.monitor.counts.routed
    assert p.monitor.status()["routers"].keys() == clean.monitor.status()["routers"].keys()
