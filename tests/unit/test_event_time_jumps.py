"""Event time may jump, forward or back, by any amount (issue #15, item 1).

The rings skip empty time instead of failing: a stream with arbitrary gaps gives the
window sums of a brute-force numpy count, and the monitor runs the evaluations a jump
skips on the state they would have seen, in time that does not grow with the gap.
"""

from __future__ import annotations

import functools
import math
from datetime import UTC, datetime

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.core.histogram import BucketedHistogram
from pipeline.core.monitor import Monitor, MonitorConfig
from pipeline.core.quality import OutcomeCounts
from pipeline.schemas import Baseline, RoutingEvent
from pipeline.sim.simulator import Simulator

DAY = 86400.0
# gaps between consecutive events, in buckets: mostly small, sometimes enormous
gaps = st.one_of(st.integers(0, 3), st.integers(0, 40), st.integers(0, 10**9))


@st.composite
def gappy_stream(draw: st.DrawFn) -> tuple[int, int, list[list[tuple[float, int]]]]:
    """(n_bins, horizon, batches of (ts, bin)): in time order but for some late events."""
    n_bins = draw(st.integers(1, 5))
    horizon = draw(st.integers(1, 12))
    t = float(draw(st.integers(0, 10**6)))
    batches: list[list[tuple[float, int]]] = []
    for _ in range(draw(st.integers(1, 12))):
        batch = []
        for _ in range(draw(st.integers(1, 6))):
            t += draw(gaps) + draw(st.floats(0, 0.999))
            back = draw(st.one_of(st.just(0), st.integers(0, 3 * horizon)))  # late ones
            batch.append((t - back, draw(st.integers(0, n_bins - 1))))
        batches.append(batch)
    return n_bins, horizon, batches


def brute(events: list[tuple[float, int]], n_bins: int, first: int, last: int) -> list[int]:
    ts = np.array([t for t, _ in events], dtype=np.float64)
    b = np.array([x for _, x in events], dtype=np.int64)
    bid = np.floor(ts)
    sel = (bid >= first) & (bid <= last)
    return np.bincount(b[sel], minlength=n_bins).tolist()


@settings(max_examples=150, deadline=None)
@given(gappy_stream(), st.data())
def test_histogram_with_arbitrary_gaps_equals_a_brute_force_count(stream, data) -> None:
    n_bins, horizon, batches = stream
    h = BucketedHistogram(n_bins, 1.0, horizon)
    counted: list[tuple[float, int]] = []
    for batch in batches:
        ts = np.array([t for t, _ in batch])
        bins = np.array([b for _, b in batch], dtype=np.int64)
        late = h.insert_many(ts, bins)
        counted += [e for e, is_late in zip(batch, late.tolist(), strict=True) if not is_late]
        newest = h.newest_bucket
        assert newest is not None
        # every window inside the ring is exact, however far the last gap jumped
        k = data.draw(st.integers(1, horizon))
        end = data.draw(st.integers(newest - horizon + k, newest + 2))
        got = h.window(end + 0.5, float(k))
        assert got.tolist() == brute(counted, n_bins, end - k + 1, end)
        # a window reaching past the ring is exact (empty time) or refused, never short
        k2 = data.draw(st.integers(1, 3 * horizon))
        end2 = data.draw(st.integers(newest - 3 * horizon, newest + 2))
        want = brute(counted, n_bins, end2 - k2 + 1, end2)
        try:
            assert h.window(end2 + 0.5, float(k2)).tolist() == want
        except ValueError as err:
            assert "horizon" in str(err)
            # refused only when counts at or after the window's start were evicted
            assert any(end2 - k2 + 1 <= math.floor(t) <= newest - horizon for t, _ in counted)


@settings(max_examples=100, deadline=None)
@given(gappy_stream(), st.data())
def test_outcome_ring_with_arbitrary_gaps_equals_a_brute_force_count(stream, data) -> None:
    _, horizon, batches = stream
    c = OutcomeCounts(1.0, horizon)
    kept: list[tuple[float, int]] = []
    for batch in batches:
        for t, b in batch:
            if c.accepts(t):
                kept.append((t, b))
            c.update_counts("cheap", 0, "thumbs", t, good=b % 2, n=1)
        head = c.head
        assert head is not None
        k = data.draw(st.integers(1, horizon))
        got = c.window(head + 0.5, float(k), signal="thumbs")
        in_window = [(t, b) for t, b in kept if head - k + 1 <= math.floor(t) <= head]
        assert got.n == len(in_window)
        assert got.n * got.rate == pytest.approx(sum(b % 2 for _, b in in_window))


# -- the monitor ---------------------------------------------------------------------------

def _event(i: int, ts: float, score: float, router: str = "support") -> RoutingEvent:
    return RoutingEvent.model_validate({
        "event_id": f"e{router}{i}", "request_id": f"r{router}{i}", "router_id": router,
        "tier": "cheap" if score >= 0.7 else "capable",
        "ts": datetime.fromtimestamp(ts, UTC).isoformat(), "score": score,
        "route_reason": "confident_cheap" if score >= 0.7 else "confident_capable",
        "thresholds": {"cheap_above": 0.7, "capable_below": 0.5, "exploration_rate": 0.0}})


T0 = datetime(2026, 3, 2, tzinfo=UTC).timestamp()


@functools.cache
def _baseline() -> Baseline:
    b = Simulator("steady", rate=0.05, seed=1).baseline(n_samples=20_000)
    return b.model_copy(update={"router_id": "support"})


def _monitor() -> Monitor:
    m = Monitor(MonitorConfig(), record=True)
    m.set_baseline(_baseline())
    return m


def _two_days(rng: np.random.Generator, router: str = "support") -> list[RoutingEvent]:
    ts = np.sort(T0 + rng.uniform(0, 2 * DAY, 1500))
    return [_event(i, t, float(s), router)
            for i, (t, s) in enumerate(zip(ts, rng.beta(5, 2, ts.size), strict=True))]


def _feed(m: Monitor, events: list[RoutingEvent], batch: int = 100) -> None:
    for i in range(0, len(events), batch):
        m.observe_routing(events[i:i + batch])
        m.drain()


@pytest.mark.parametrize("gap_days", [8, 400])
def test_a_forward_jump_evaluates_what_it_skips_on_the_state_before_it(gap_days: int) -> None:
    """The evaluations between the old data and a jump see the old data exactly: equal
    to a run where another router moves event time hour by hour instead."""
    events = _two_days(np.random.default_rng(7))
    end = events[-1].epoch
    jumped = _monitor()
    _feed(jumped, events)
    jumped.observe_routing([_event(10**6, end + gap_days * DAY, 0.9)])
    jumped.drain()
    stepped = _monitor()
    _feed(stepped, events)
    horizon = min(end + gap_days * DAY, end + 40 * DAY)
    probes = [_event(i, t, 0.9, "probe")
              for i, t in enumerate(np.arange(end + 1800.0, horizon, 1800.0))]
    _feed(stepped, probes, batch=1)
    a = {s["ts"]: s for s in jumped.history["support"]}
    b = {s["ts"]: s for s in stepped.history["support"]}
    common = sorted(t for t in set(a) & set(b) if end < t < end + min(gap_days, 9) * DAY)
    assert len(common) >= 7 * 24
    assert [a[t] for t in common] == [b[t] for t in common]
    # the first of them still holds the old data in its 7-day windows
    first = a[common[0]]["tiers"]
    assert first["cheap"]["share"] is not None and first["cheap"]["share"] > 0


def test_a_400_day_jump_costs_no_more_than_an_8_day_one(monkeypatch) -> None:
    """Evaluations and ticks are bounded by the monitor's memory, not the gap."""
    calls = {"tick": 0}
    original = Monitor._tick

    def counting(self: Monitor, now: float) -> None:
        calls["tick"] += 1
        original(self, now)

    monkeypatch.setattr(Monitor, "_tick", counting)
    cost = {}
    config = MonitorConfig(join_ttl_s=2 * DAY)  # a short memory keeps the test quick
    for gap_days in (8, 400, 30 * 365):
        calls["tick"] = 0
        m = Monitor(config)
        m.set_baseline(_baseline())
        events = _two_days(np.random.default_rng(3))
        _feed(m, events)
        before, calls["tick"] = m.evaluations, 0
        m.observe_routing([_event(10**6, min(events[-1].epoch + gap_days * DAY,
                                             datetime(2099, 1, 1, tzinfo=UTC).timestamp()),
                                  0.9)])
        m.drain()
        cost[gap_days] = (m.evaluations - before, calls["tick"])
    bound = 2 * m.memory_s / 3600 + 10
    for evaluations, ticks in cost.values():
        assert evaluations <= bound
        assert ticks <= bound  # quiet minutes fold into one tick per interval
    assert cost[8][0] >= 8 * 24 - 2  # the 8-day gap's evaluations all ran


def test_a_backward_jump_beyond_the_lateness_is_dead_lettered_not_fatal() -> None:
    m = _monitor()
    events = _two_days(np.random.default_rng(5))
    _feed(m, events)
    wm = m.watermark
    assert wm is not None
    old = [_event(10**6 + i, wm - (8 + i) * DAY, 0.8) for i in range(3)]
    out = m.observe_routing(old)
    assert [o.payload.reason_class for o in out] == ["late"] * 3  # type: ignore[union-attr]
    assert m.watermark == wm
    m.drain()
    # and time moves on from where it was
    m.observe_routing([_event(2 * 10**6, wm + 3600.0, 0.8)])
    m.drain()
    assert m.watermark == wm + 3600.0
