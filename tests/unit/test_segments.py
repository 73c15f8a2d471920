"""The segment sketch, attribution and share-shift test against exact counts and scipy."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from pipeline.core.join import FeedbackJoin
from pipeline.core.segment_alerts import annotate, share_shift_alerts
from pipeline.core.segments import (
    DAY,
    HeavyHitters,
    SegmentConfig,
    SegmentCounts,
    benjamini_hochberg,
)

streams = st.lists(st.integers(0, 11).map(lambda i: f"v{i}"), max_size=200)
weighted = st.lists(st.tuples(st.integers(0, 11).map(lambda i: f"v{i}"),
                              st.floats(0.0, 5.0, allow_nan=False)), max_size=100)


def _sketch(items: list[str], k: int) -> HeavyHitters:
    hh = HeavyHitters(k)
    for x in items:
        hh.update(x)
    return hh


def _check_bounds(hh: HeavyHitters, truth: Counter[str] | dict[str, float]) -> None:
    n = sum(truth.values())
    assert hh.n == pytest.approx(n)
    assert hh.delta <= n / (hh.k + 1) + 1e-6
    for x in set(truth) | set(hh.counts):
        f = truth.get(x, 0.0)
        # the Space-Saving (upper) estimate overestimates by at most N/(k+1) < N/k
        assert hh.lower(x) <= f + 1e-6
        assert hh.upper(x) - f + 1e-6 >= 0.0
        assert hh.upper(x) - f <= n / (hh.k + 1) + 1e-6
        if f > n / (hh.k + 1) + 1e-6:
            assert x in hh, f"{x} has {f} > N/(k+1) = {n / (hh.k + 1)} but is not tracked"
    assert len(hh) <= hh.k


@settings(max_examples=200, deadline=None)
@given(streams, st.integers(1, 6))
def test_sketch_bounds_hold_on_random_streams(items: list[str], k: int) -> None:
    _check_bounds(_sketch(items, k), Counter(items))


@settings(max_examples=100, deadline=None)
@given(weighted, st.integers(1, 6))
def test_weighted_sketch_bounds(items: list[tuple[str, float]], k: int) -> None:
    hh = HeavyHitters(k)
    truth: dict[str, float] = {}
    for x, w in items:
        hh.update(x, w)
        if w > 0:
            truth[x] = truth.get(x, 0.0) + w
    _check_bounds(hh, truth)


@settings(max_examples=200, deadline=None)
@given(streams, streams, st.integers(1, 6))
def test_merge_equals_combined_stream_within_bound(a: list[str], b: list[str], k: int) -> None:
    merged = _sketch(a, k) + _sketch(b, k)
    _check_bounds(merged, Counter(a + b))
    if len(set(a) | set(b)) <= k:  # nothing evicted: exact, and equal to the one stream
        assert merged.delta == 0
        assert merged.counts == {x: float(v) for x, v in Counter(a + b).items()}
        assert merged == _sketch(a + b, k)


@settings(max_examples=100, deadline=None)
@given(streams, st.integers(1, 6))
def test_sketch_round_trip(items: list[str], k: int) -> None:
    hh = _sketch(items, k)
    assert HeavyHitters.from_dict(hh.to_dict()) == hh
    assert HeavyHitters.from_dict(hh.to_dict()).to_dict() == hh.to_dict()


def test_sketch_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="k must be"):
        HeavyHitters(0)
    with pytest.raises(ValueError, match="weight"):
        HeavyHitters(2).update("x", -1.0)
    with pytest.raises(ValueError, match="merge"):
        HeavyHitters(2).merge(HeavyHitters(3))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0.0, 1.0, allow_nan=False), min_size=1, max_size=40),
       st.sampled_from([0.01, 0.05, 0.1, 0.2]))
def test_bh_matches_scipy(ps: list[float], q: float) -> None:
    adjusted = stats.false_discovery_control(np.array(ps), method="bh")
    expected = [bool(a <= q) for a in adjusted]
    got = benjamini_hochberg(ps, q)
    # scipy's adjusted p-values are rounded floats: compare away from the boundary
    for p, g, e, a in zip(ps, got, expected, adjusted, strict=True):
        if not math.isclose(a, q, rel_tol=1e-9):
            assert g == e, (p, a)


# -- attribution against an exact count ------------------------------------------------

REF = (0.0, 14 * DAY)


def _stream(seed: int, n_values: int = 12, per_day: int = 2000, bad_value: str = "v3",
            factor: float = 6.0) -> tuple[list[tuple[float, str, bool]], float]:
    """(ts, value, contact?) routed requests: 14 reference days, then 2 days with
    ``bad_value``'s contact rate times ``factor``; a new value appears after the
    reference."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, n_values + 1)
    weights /= weights.sum()
    rates = rng.uniform(0.01, 0.03, n_values)
    rows = []
    for day in range(16):
        values = rng.choice(n_values, size=per_day, p=weights)
        for i, v in enumerate(values):
            name = f"v{v}"
            if day >= 14 and i % 20 == 0:
                name = "new"
            rate = rates[v] * (factor if day >= 14 and name == bad_value else 1.0)
            rows.append((day * DAY + i * DAY / per_day, name, bool(rng.random() < rate)))
    return rows, 16 * DAY - 1.0


def _feed(rows: list[tuple[float, str, bool]], k: int) -> SegmentCounts:
    sc = SegmentCounts(REF, SegmentConfig(k=k, min_reference_n=20))
    for ts, v, bad in rows:
        sc.observe_routing("cheap", ts, {"intent": v})
        if bad:  # the contact comes an hour later, and carries the decision's segment
            sc.observe_outcome("cheap", ts + 3600.0, ts, (("intent", v),), contacts=1.0)
    return sc


def _exact(rows: list[tuple[float, str, bool]], at: float, seconds: float,
           ) -> dict[str, tuple[float, float, float, float]]:
    """value -> (window requests, window contacts, reference requests, reference contacts)."""
    lo = int((at - seconds) // DAY) * DAY
    out: dict[str, list[float]] = {}
    for ts, v, bad in rows:
        r = out.setdefault(v, [0.0, 0.0, 0.0, 0.0])
        if lo <= ts <= at:
            r[0] += 1
        if bad and lo <= ts + 3600 <= at:
            r[1] += 1
        if REF[0] <= ts < REF[1]:
            r[2] += 1
            r[3] += bad
    return {v: (a, b, c, d) for v, (a, b, c, d) in out.items()}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_attribution_exact_when_k_covers_all_values(seed: int) -> None:
    rows, at = _stream(seed)
    sc = _feed(rows, k=32)
    exact = _exact(rows, at, DAY)
    got = sc.attribute("cheap", at, DAY)
    ref_n = sum(e[2] for e in exact.values())
    ref_bad = sum(e[3] for e in exact.values())
    for a in got:
        n1, obs, n0, x0 = exact[a.value]
        assert a.observed == obs and a.exposure == n1
        if n0 >= 20:
            assert a.reference_rate == pytest.approx(x0 / n0)
            p = stats.binom.sf(obs - 1, obs + x0, n1 / (n1 + n0))
        else:
            assert a.new and a.reference_rate == pytest.approx(ref_bad / ref_n)
            p = stats.poisson.sf(obs - 1, n1 * ref_bad / ref_n)
        assert a.p_value == pytest.approx(p, rel=1e-9)
    assert {a.value for a in got} == {v for v, e in exact.items() if e[1] > 0}
    significant = [a for a in got if a.significant]
    assert significant and significant[0].value == "v3"
    assert significant[0].rate_ratio > 2.0
    shares = [a.share for a in got]
    assert all(0 <= s <= 1 for s in shares) and sum(shares) <= 1 + 1e-9


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_attribution_within_sketch_bound_when_values_are_evicted(seed: int) -> None:
    rows, at = _stream(seed, n_values=30)
    k = 6
    sc = _feed(rows, k=k)
    exact = _exact(rows, at, DAY)
    w_n = sc.window("cheap", "intent", "routed", at, DAY)
    w_bad = sc.window("cheap", "intent", "contacts", at, DAY)
    assert len(exact) > k
    for a in sc.attribute("cheap", at, DAY):
        n1, obs, _, _ = exact[a.value]
        # observed: a lower bound within N/(k+1); exposure: an upper bound within N/(k+1)
        assert obs - w_bad.n / (k + 1) - 1e-9 <= a.observed <= obs
        assert n1 <= a.exposure <= n1 + w_n.n / (k + 1) + 1e-9
    # conservative ends: the sketch's slack can hide an excess, never create one
    for a in sc.attribute("cheap", at, DAY):
        n1, obs, n0, x0 = exact[a.value]
        if a.significant and not a.new:
            assert obs / n1 > x0 / n0


def test_alert_summary_names_the_top_value_with_its_share() -> None:
    rows, at = _stream(1)
    sc = _feed(rows, k=32)
    summary, stats_ = annotate(sc, "support_contact_rise", "cheap", "support_contact", "1d",
                               "cheap tier: support contacts rose", {}, at)
    top = stats_["segments"]["top"][0]
    assert top["value"] == "v3"
    assert f"intent=v3: {top['share']:.0%} of the excess contacts" in summary
    assert f"{top['rate_ratio']:.1f}× its reference" in summary


def test_segment_counts_round_trip_and_merge() -> None:
    rows, at = _stream(4)
    whole = _feed(rows, k=8)
    again = SegmentCounts.from_dict(whole.to_dict(), whole.config)
    assert again.to_dict() == whole.to_dict()
    halves = _feed(rows[::2], k=8).merge(_feed(rows[1::2], k=8))
    whole.trim(at - DAY)  # one side rolled: the merge reads both kinds of bucket
    again = SegmentCounts.from_dict(whole.to_dict(), whole.config)
    assert again.to_dict() == whole.to_dict()
    for measure in ("routed", "contacts"):
        a = whole.window("cheap", "intent", measure, at, 7 * DAY)
        b = halves.window("cheap", "intent", measure, at, 7 * DAY)
        assert a.n == b.n
        exact = Counter(v for ts, v, bad in rows if (measure == "routed" or bad)
                        and int((at - 7 * DAY) // DAY) * DAY
                        <= ts + (3600 if measure == "contacts" else 0)
                        < (int(at // DAY) + 1) * DAY)
        _check_bounds(b, exact)


def test_keys_are_capped() -> None:
    sc = SegmentCounts(REF, SegmentConfig(max_keys=2))
    sc.observe_routing("cheap", 1.0, {"a": "1", "b": "2", "c": "3"})
    assert sc.keys == {"a", "b"} and sc.dropped_keys == 1


# -- share shift --------------------------------------------------------------------------

def _share_run(seed: int, days: int = 45, onset: int | None = None) -> list[tuple[int, str]]:
    """Daily multinomial mixes with weekly and diurnal volume swings; ``onset`` brings a
    new cohort at 15 % of the cheap tier. Returns (day, key=value) of each alarm."""
    rng = np.random.default_rng(seed)
    sc = SegmentCounts(REF)
    mixes = {"intent": np.array([0.3, 0.25, 0.2, 0.15, 0.1]),
             "product": np.ones(60) / np.arange(1, 61) / (1 / np.arange(1, 61)).sum()}
    alarms = []
    for day in range(days):
        volume = 3000 * (0.6 if day % 7 >= 5 else 1.0)
        for hour in range(24):
            n = rng.poisson(volume / 24 * (1 + 0.5 * math.sin(2 * math.pi * hour / 24)))
            ts = day * DAY + hour * 3600.0
            for key, p in mixes.items():
                counts = rng.multinomial(n, p)
                if onset is not None and day >= onset and key == "intent":
                    extra = rng.poisson(n * 0.18)
                    sc.observe_routing("cheap", ts, {key: "onboarding"}, float(extra))
                for i in rng.permutation(len(p)):
                    if counts[i]:
                        sc.observe_routing("cheap", ts, {key: f"{key}{i}"}, float(counts[i]))
        if day >= 15:
            for detail, _, _ in share_shift_alerts(sc, "cheap", (day + 1) * DAY):
                alarms.append((day, detail))
        sc.trim((day + 1) * DAY)
    return alarms


def test_share_shift_quiet_on_null_streams() -> None:
    alarms = [a for seed in range(8) for a in _share_run(seed)]
    # 8 runs x 30 tested days, 65 values each: no false alarm (budget: 1 per 30 days)
    assert len(alarms) <= 1, alarms


def test_share_shift_finds_a_new_cohort_the_next_day() -> None:
    alarms = _share_run(11, days=25, onset=20)
    assert alarms and alarms[0] == (20, "intent=onboarding")
    assert all(d >= 20 for d, _ in alarms)


def test_join_carries_the_segment_compactly() -> None:
    j = FeedbackJoin(ttl_seconds=3600)
    j.add_decision("r1", "a", "cheap", 0.9, 1.0, segment={"intent": "billing", "plan": "pro"})
    j.add_decision("r2", "a", "cheap", 0.9, 2.0, segment={"plan": "pro", "intent": "billing"})
    j.add_decision("r3", "a", "cheap", 0.9, 3.0)
    r1, r2 = j.get("r1"), j.get("r2")
    assert r1 is not None and r2 is not None
    assert r1.segment is r2.segment == (("intent", "billing"), ("plan", "pro"))
    fb = j.add_feedback("f1", "r1", "support_contact", 1.0, 10.0)
    assert fb is not None and fb.segment == (("intent", "billing"), ("plan", "pro"))
    again = FeedbackJoin.from_dict(j.to_dict())
    assert again == j
    a2, b2 = again.get("r1"), again.get("r2")
    assert a2 is not None and b2 is not None and a2.segment is b2.segment
    r3 = again.get("r3")
    assert r3 is not None and r3.segment is None


def test_observe_many_equals_one_by_one() -> None:
    rows, _ = _stream(5, per_day=300)
    one = SegmentCounts((3.5 * DAY, 14 * DAY), SegmentConfig(k=5))
    many = SegmentCounts((3.5 * DAY, 14 * DAY), SegmentConfig(k=5))
    batch = []
    for ts, v, _bad in rows:
        seg = {"intent": v, "plan": "pro" if ts % 3 else "free"}
        one.observe_routing("cheap", ts, seg)
        batch.append(("cheap", ts, tuple(sorted(seg.items()))))
    many.observe_many(batch)
    # the same exact counts per (tier, key, day) and reference; sketches of the same
    # multiset within the bound (the grouped order evicts differently)
    assert sorted(one.hours) == sorted(many.hours) and sorted(one.ref) == sorted(many.ref)
    for slot in one.hours:
        assert one.hours[slot].n == many.hours[slot].n
    for series in one.ref:
        assert one.ref[series].n == many.ref[series].n
    # rolling the closed days into day buckets keeps every window's totals
    for sc in (one, many):
        before = sc.window("cheap", "intent", "routed", 15.5 * DAY, 7 * DAY).n
        sc.trim(15.5 * DAY)
        assert not [s for s in sc.hours if s[3] < 15 * 24]
        assert sc.window("cheap", "intent", "routed", 15.5 * DAY, 7 * DAY).n == before


def test_segment_gauges_are_top_k_and_stale_values_are_removed() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from pipeline.core.monitor import Monitor
    from pipeline.stream.metrics import WorkerMetrics

    sc = SegmentCounts(REF, SegmentConfig(k=16))  # exact: 12 values fit
    for i in range(12):  # 12 values, 12 - i requests each
        sc.observe_routing("cheap", 15 * DAY, {"intent": f"v{i}"}, float(12 - i))
    table = {"cheap": sc.table("cheap", 15.5 * DAY, top=3)}
    gauges = SegmentCounts.gauges("r", table)
    values = {g[1]["value"]: g[2] for g in gauges if g[0] == "segment_requests"}
    assert values == {"v0": 12.0, "v1": 11.0, "v2": 10.0, "other": sum(range(1, 10))}

    monitor = Monitor()
    monitor.router("r", 0.0).gauges = gauges
    registry = CollectorRegistry()
    WorkerMetrics(registry).read_from(lambda: monitor)  # read at each scrape
    assert 'value="v2"' in generate_latest(registry).decode()
    monitor.routers["r"].gauges = [g for g in gauges if g[1]["value"] != "v2"]
    text = generate_latest(registry).decode()
    assert 'value="v2"' not in text and 'value="v1"' in text


@pytest.mark.parametrize("batch", [1, 7, 512])
def test_sketches_do_not_depend_on_batching(batch: int) -> None:
    """The same events in batches of any size give the same state, evictions included."""
    rows, _ = _stream(6, n_values=40, per_day=300)
    events = [("cheap", ts, (("intent", v), ("plan", "pro" if i % 3 else "free")))
              for i, (ts, v, _bad) in enumerate(rows)]

    def state(size: int) -> dict[str, object]:
        sc = SegmentCounts(REF, SegmentConfig(k=4))
        for start in range(0, len(events), 1000):  # reads (evaluations) at fixed events
            part = events[start:start + 1000]
            for i in range(0, len(part), size):
                sc.observe_many(part[i:i + size])
            sc.window("cheap", "intent", "routed", part[-1][1], DAY)  # a read flushes
        sc.flush()
        return sc.to_dict()

    assert state(batch) == state(300)


def test_a_restored_checkpoint_gives_the_same_attributions() -> None:
    """The worker checkpoints by pickling its monitor: a copy taken mid-run (open hours
    included) and fed the rest gives the same state and attributions as the original."""
    import pickle

    rows, at = _stream(7, n_values=30)
    half = len(rows) // 2 + 17
    sc = _feed(rows[:half], k=6)
    restored = pickle.loads(pickle.dumps(sc))
    assert restored.open and restored.to_dict() == sc.to_dict()
    for counts in (sc, restored):
        for ts, v, bad in rows[half:]:
            counts.observe_routing("cheap", ts, {"intent": v})
            if bad:
                counts.observe_outcome("cheap", ts + 3600.0, ts, (("intent", v),),
                                       contacts=1.0)
    assert restored.attribute("cheap", at, DAY) == sc.attribute("cheap", at, DAY)
    assert restored.to_dict() == sc.to_dict()
    assert SegmentCounts.from_dict(sc.to_dict(), sc.config).attribute(
        "cheap", at, DAY) == sc.attribute("cheap", at, DAY)
