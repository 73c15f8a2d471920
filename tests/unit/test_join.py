"""Unit and property tests of the routing↔feedback join (pipeline.core.join)."""

from __future__ import annotations

import gc
import json
import time
import tracemalloc
import uuid
import zlib
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.core.join import UNJOINED_REASON, FeedbackJoin, Origin

DAY = 86400.0
T0 = 1_700_000_000.0


def _decide(j: FeedbackJoin, rid: str, ts: float, tier: str = "cheap", **kw: object) -> list:
    return j.add_decision(rid, "router-a", tier, 0.8, ts, **kw)  # type: ignore[arg-type]


def test_feedback_after_decision_joins_immediately() -> None:
    j = FeedbackJoin()
    assert _decide(j, "r1", T0, propensity=0.1, band=3, in_band=True, exploration=True) == []
    out = j.add_feedback("e1", "r1", "thumbs", 0.0, T0 + 5 * DAY, source="widget")
    assert out is not None and out.joined
    assert (out.tier, out.score, out.propensity, out.band) == ("cheap", 0.8, 0.1, 3)
    assert out.in_band is True and out.exploration is True
    assert out.router_id == "router-a" and out.decision_ts == T0 and out.ts == T0 + 5 * DAY
    assert out.source == "widget"
    assert j.stats["joined"] == 1 and j.n_pending == 0


def test_feedback_before_decision_waits_and_is_released_in_order() -> None:
    j = FeedbackJoin()
    assert j.add_feedback("e2", "r1", "rating", 5.0, T0 + 20) is None
    assert j.add_feedback("e1", "r1", "thumbs", 1.0, T0 + 10) is None
    assert j.add_feedback("e3", "r2", "thumbs", 1.0, T0 + 10) is None
    assert j.n_pending == 3
    released = _decide(j, "r1", T0, tier="capable")
    assert [f.event_id for f in released] == ["e1", "e2"]
    assert all(f.tier == "capable" and f.joined for f in released)
    assert j.n_pending == 1
    # a redelivered decision keeps the first record and releases nothing
    assert j.add_decision("r1", "router-a", "cheap", 0.9, T0 + 1) == []
    assert j.get("r1") is not None and j.get("r1").tier == "capable"  # type: ignore[union-attr]
    assert j.stats["duplicate_decisions"] == 1


def test_duplicated_feedback_counts_once_within_ttl() -> None:
    j = FeedbackJoin(ttl_seconds=10 * DAY)
    _decide(j, "r1", T0)
    assert j.add_feedback("e1", "r1", "thumbs", 1.0, T0 + 1) is not None
    assert j.add_feedback("e1", "r1", "thumbs", 1.0, T0 + 1) is None
    # duplicates of pending feedback are dropped too, and released once
    assert j.add_feedback("e9", "r9", "thumbs", 0.0, T0 + 2) is None
    assert j.add_feedback("e9", "r9", "thumbs", 0.0, T0 + 2) is None
    assert len(_decide(j, "r9", T0 + 3)) == 1
    assert j.add_feedback("e9", "r9", "thumbs", 0.0, T0 + 2) is None
    assert j.stats["duplicate_feedback"] == j.duplicates == 3
    assert j.stats["feedback"] == 2
    # once the TTL has passed the event_id is forgotten (and the decision too)
    j.expire(T0 + 11 * DAY)
    assert not j.seen("e1")


def test_an_origin_given_as_a_function_is_worked_out_only_for_feedback_that_waits() -> None:
    j = FeedbackJoin()
    _decide(j, "r1", T0)
    asked: list[str] = []

    def origin(event_id: str) -> Callable[[], Origin]:
        def make() -> Origin:
            asked.append(event_id)
            return Origin("tierwatch.feedback", 0, 7, 1, b"k", event_id.encode())
        return make

    assert j.add_feedback("e1", "r1", "thumbs", 1.0, T0 + 1, origin=origin("e1")) is not None
    assert j.add_feedback("e1", "r1", "thumbs", 1.0, T0 + 1, origin=origin("e1")) is None
    assert j.add_feedback("e2", "r2", "thumbs", 1.0, T0 + 2, origin=origin("e2")) is None
    assert asked == ["e2"]  # joined and duplicate feedback never needed theirs
    [waiting] = j.pending
    assert waiting.origin == Origin("tierwatch.feedback", 0, 7, 1, b"k", b"e2")


def test_passthrough_needs_no_join_and_is_not_enriched() -> None:
    j = FeedbackJoin()
    _decide(j, "r1", T0, propensity=0.2)
    out = j.add_feedback("e1", "r1", "review", 0.5, T0 + 1, tier="capable", score=0.3, weight=4.0)
    assert out is not None and not out.joined
    assert (out.tier, out.score, out.weight, out.propensity, out.band) == (
        "capable",
        0.3,
        4.0,
        None,
        -1,
    )
    # tier without score still needs the join
    assert j.add_feedback("e2", "r7", "review", 0.5, T0 + 1, tier="capable") is None
    assert j.stats["passthrough"] == 1


def test_feedback_after_ttl_is_dead_lettered() -> None:
    ttl = 30 * DAY
    j = FeedbackJoin(ttl_seconds=ttl)
    _decide(j, "r1", T0)
    _decide(j, "r2", T0 + 2 * DAY)
    assert j.expire(T0 + ttl) == []  # not older than the TTL yet
    assert len(j) == 2
    assert j.expire(T0 + ttl + 1) == []
    assert "r1" not in j and "r2" in j
    # feedback for the expired decision waits, then is dead-lettered
    assert j.add_feedback("late", "r1", "support_contact", 1.0, T0 + ttl + 2) is None
    assert j.add_feedback("orphan", "r404", "thumbs", 1.0, T0 + DAY) is None
    assert j.expire(T0 + ttl + DAY) == []  # ts T0+DAY is exactly at the cutoff: kept
    expired = j.expire(T0 + ttl + 1.5 * DAY)
    assert [f.event_id for f in expired] == ["orphan"]
    expired = j.expire(T0 + 2 * ttl + 3)
    assert [(f.event_id, f.request_id, f.kind) for f in expired] == [
        ("late", "r1", "support_contact")
    ]
    assert "join TTL" in UNJOINED_REASON
    assert j.n_pending == 0 and len(j) == 0
    assert j.stats["expired_feedback"] == 2 and j.stats["expired_decisions"] == 2
    # an older watermark changes nothing
    assert j.expire(T0) == []


def test_released_feedback_is_not_expired_later() -> None:
    j = FeedbackJoin(ttl_seconds=DAY)
    j.add_feedback("e1", "r1", "thumbs", 1.0, T0)
    assert len(_decide(j, "r1", T0 - 10)) == 1
    assert j.expire(T0 + 3 * DAY) == []


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="ttl_seconds"):
        FeedbackJoin(ttl_seconds=0)
    with pytest.raises(ValueError, match="propensity"):
        FeedbackJoin().add_decision("r", "a", "cheap", 0.5, T0, propensity=0.0)


def test_expire_is_not_a_full_scan() -> None:
    j = FeedbackJoin(ttl_seconds=DAY)
    for i in range(100_000):
        j.add_decision(f"r{i}", "a", "cheap", 0.5, T0 + i * 0.1)
    start = time.perf_counter()
    for k in range(2_000):
        j.expire(T0 + DAY - 1 + k * 1e-4)  # nothing to expire yet
    # a full scan per call would be 2e8 steps (minutes); the heap peeks once per call
    assert time.perf_counter() - start < 0.5
    start = time.perf_counter()
    j.expire(T0 + DAY + 1000.05)  # expires ~10k decisions
    assert len(j) == 100_000 - 10_001
    assert time.perf_counter() - start < 1.0


def test_memory_per_million_decisions() -> None:
    """Retained memory of decisions decoded from JSON-like fresh strings/floats."""
    n = 60_000  # tracemalloc slows allocation a lot; the per-decision size is flat in n
    rids = [str(uuid.UUID(int=i + 1)) for i in range(n)]  # 36-char ids, like uuid4
    gc.collect()
    tracemalloc.start()
    try:
        j = FeedbackJoin()
        base = tracemalloc.get_traced_memory()[0]
        for i in range(n):
            # fresh (un-interned) strings, as a JSON decoder would produce
            j.add_decision(
                rids[i],
                "".join(["router-", "a"]),
                "".join(["ch", "eap"]) if i % 3 else "".join(["cap", "able"]),
                ts=T0 + i * 0.01,
                score=(i % 997) / 997.0,
                propensity=1.0 if i % 10 else 0.1,
                band=i % 20,
                in_band=i % 10 == 0,
                exploration=i % 20 == 0,
            )
        used = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    # the request_id strings are retained by the join: count them too
    per_decision = used / n + (rids[0].__sizeof__() + 7) // 8 * 8
    print(f"\nFeedbackJoin: {per_decision:.0f} bytes/decision = {per_decision:.0f} MB per million")
    assert per_decision < 400
    assert len(j) == n


def test_merge_of_partitions_and_conflicts() -> None:
    a, b, single = FeedbackJoin(), FeedbackJoin(), FeedbackJoin()
    for j in (a, single):
        _decide(j, "r1", T0)
        j.add_feedback("e1", "r1", "thumbs", 1.0, T0 + 1)
    for j in (b, single):
        j.add_feedback("e2", "r2", "thumbs", 0.0, T0 + 2)
    assert a + b == single
    assert a != single
    c = FeedbackJoin()
    c.add_feedback("e3", "r1", "thumbs", 1.0, T0)
    with pytest.raises(ValueError, match="split"):
        a + c
    d = FeedbackJoin()
    _decide(d, "r1", T0, tier="capable")
    with pytest.raises(ValueError, match="different decisions"):
        a + d
    with pytest.raises(ValueError, match="ttl"):
        a + FeedbackJoin(ttl_seconds=5)


# --------------------------------------------------------------------------- properties
_ops = st.lists(
    st.tuples(
        st.sampled_from(["decision", "feedback", "feedback_tagged"]),
        st.integers(0, 7),  # request
        st.integers(0, 3),  # event number within the request (duplicates when repeated)
        st.integers(0, 40),  # ts offset (hours)
        st.sampled_from(["cheap", "capable"]),
    ),
    max_size=60,
)


def _apply(j: FeedbackJoin, ops: list[tuple[str, int, int, int, str]]) -> list[object]:
    out: list[object] = []
    for kind, r, e, h, tier in ops:
        rid, ts = f"r{r}", T0 + h * 3600.0
        if kind == "decision":
            out.extend(
                j.add_decision(rid, "a", tier, h / 40, ts, propensity=0.5, in_band=h % 2 == 0)
            )
        else:
            tagged = kind == "feedback_tagged"
            out.append(
                j.add_feedback(
                    f"{rid}:{e}",
                    rid,
                    "thumbs",
                    float(e % 2),
                    ts,
                    tier=tier if tagged else None,
                    score=0.5 if tagged else None,
                )
            )
    return out


@settings(max_examples=80, deadline=None)
@given(ops=_ops, expire_h=st.integers(0, 60))
def test_merge_equals_concatenation(ops: list, expire_h: int) -> None:
    ttl = 20 * 3600.0
    single = FeedbackJoin(ttl_seconds=ttl)
    parts = [FeedbackJoin(ttl_seconds=ttl) for _ in range(3)]
    for op in ops:
        p = zlib.crc32(f"r{op[1]}".encode()) % 3  # partition by request_id
        _apply(parts[p], [op])
    _apply(single, ops)
    merged = parts[0] + parts[1] + parts[2]
    assert merged == single
    now = T0 + expire_h * 3600.0
    expired_merged = merged.expire(now)
    expired_single = single.expire(now)
    assert expired_merged == expired_single
    assert merged == single


@settings(max_examples=80, deadline=None)
@given(ops=_ops, expire_h=st.one_of(st.none(), st.integers(0, 60)))
def test_to_dict_round_trip(ops: list, expire_h: int | None) -> None:
    j = FeedbackJoin(ttl_seconds=20 * 3600.0)
    _apply(j, ops)
    if expire_h is not None:
        j.expire(T0 + expire_h * 3600.0)
    state = json.loads(json.dumps(j.to_dict()))
    back = FeedbackJoin.from_dict(state)
    assert back == j
    assert back.to_dict() == j.to_dict()
    # the restored join behaves the same from here on
    more = [("decision", r, 0, 41, "cheap") for r in range(8)]
    assert _apply(back, more) == _apply(j, more)
    assert back.expire(T0 + 100 * 3600.0) == j.expire(T0 + 100 * 3600.0)
    assert back == j
