"""The sequential tests: contact CUSUM and its delay model, tilt CUSUMs of drift."""

from __future__ import annotations

import itertools
import math
import pickle
from datetime import UTC, datetime

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from pipeline.core.baseline import fit_baseline
from pipeline.core.cusum import PoissonCusum, TiltCusum, tilt_directions
from pipeline.core.histogram import QuantileBins
from pipeline.core.lagged import DelayDistribution, LaggedCounts
from pipeline.core.quality import OutcomeCounts
from pipeline.replay import build_monitor
from pipeline.schemas import Alert, RoutingEvent
from pipeline.settings import Settings


def _run(counts: np.ndarray, expected: np.ndarray, rate: float, floor: float,
         threshold: float) -> int | None:
    """First alarming step, or None."""
    c = PoissonCusum(threshold)
    for i, (x, lam) in enumerate(zip(counts, expected, strict=True)):
        if c.update(float(x), float(lam), rate, floor=floor, bucket=i):
            return i
    return None


def test_false_alarms_stay_within_the_ville_bound() -> None:
    """Under no change, P(alarm within T steps) <= T·e^-threshold, whatever λ does."""
    rng = np.random.default_rng(1)
    steps, runs, threshold = 300, 3000, 7.0
    hours = np.arange(steps)
    lam = 2.0 + 1.5 * np.sin(2 * np.pi * hours / 24)  # a daily cycle, as traffic has
    rate, floor = 0.005, 0.004
    alarms = sum(_run(rng.poisson(lam), lam, rate, floor, threshold) is not None
                 for _ in range(runs))
    bound = steps * math.exp(-threshold)
    assert alarms / runs <= bound, (alarms, bound)
    # and the bound is not vacuous here: a CUSUM at half the threshold does alarm
    low = sum(_run(rng.poisson(lam), lam, rate, floor, threshold / 2) is not None
              for _ in range(300))
    assert low > 0


def test_a_rise_of_the_floor_is_found_and_measured() -> None:
    rng = np.random.default_rng(2)
    rate, floor, threshold = 0.005, 0.004, 10.0
    routed = 400.0  # requests an hour: λ0 = 2, λ1 = 3.6
    lam = np.full(500, rate * routed)
    delays = []
    for _ in range(200):
        counts = rng.poisson(lam * (rate + floor) / rate)
        first = _run(counts, lam, rate, floor, threshold)
        assert first is not None
        delays.append(first)
    # Wald: about threshold / KL(λ1 || λ0) per step, KL = λ1 ln ρ - (λ1 - λ0)
    kl = 3.6 * math.log(1.8) - 1.6
    assert np.median(delays) <= 2 * threshold / kl
    c = PoissonCusum(threshold)
    for i, x in enumerate(rng.poisson(lam[:200] * (rate + floor) / rate)):
        c.update(float(x), float(lam[i]), rate, floor=floor, bucket=i)
    assert abs(c.excess_rate(rate) - floor) < 0.6 * floor


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 30), st.floats(0.0, 20.0)), min_size=1, max_size=60),
       st.integers(0, 59))
def test_statistic_is_bounded_and_monotone_in_the_counts(
        steps: list[tuple[int, float]], bump: int) -> None:
    a, b = PoissonCusum(5.0), PoissonCusum(5.0)
    for i, (x, lam) in enumerate(steps):
        a.update(x, lam, 0.01, floor=0.01, bucket=i)
        b.update(x + (1 if i == bump else 0), lam, 0.01, floor=0.01, bucket=i)
        assert 0.0 <= a.statistic <= a.cap * a.threshold
        assert b.statistic >= a.statistic - 1e-12
        assert (a.since is None) == (a.statistic == 0.0)


def _reference(rng: np.random.Generator, hours: int, per_hour: float, rate: float,
               pmf: np.ndarray) -> tuple[LaggedCounts, DelayDistribution]:
    """A reference period observed until its last hour, so recent requests' contacts are
    still on their way."""
    counts = LaggedCounts(n_buckets=170, reference=(0, hours))
    delays = DelayDistribution(max_delay=pmf.size, history_days=3, holdout_days=0)
    for d in range(hours):
        n = rng.poisson(per_hour)
        counts.update_routed("cheap", 0, d, n)
        delays.add_exposure(d, n)
        for a in rng.choice(pmf.size, size=rng.binomial(n, rate), p=pmf):
            if d + a <= hours - 1:
                counts.update_event("cheap", 0, d, d + int(a))
                delays.add_delay(d, d + int(a))
    return counts, delays


def test_delay_estimate_corrects_for_contacts_still_on_their_way() -> None:
    rng = np.random.default_rng(3)
    a = np.arange(48)
    true_pmf = np.exp(-0.5 * ((np.log(a + 0.5) - np.log(8)) / 0.9) ** 2) / (a + 0.5)
    true_pmf /= true_pmf.sum()
    rate, hours = 0.02, 60  # a short reference: most requests still have contacts to come
    estimates, naive, tv, tv_naive = [], [], [], []
    for _ in range(20):
        counts, delays = _reference(rng, hours, 1500.0, rate, true_pmf)
        est = delays.estimate(hours - 1)
        assert est is not None
        seen = counts.series(0, hours - 1)
        by_delay = delays._delays.sum(axis=0)
        tv.append(0.5 * np.abs(est.pmf - true_pmf).sum())
        tv_naive.append(0.5 * np.abs(by_delay / by_delay.sum() - true_pmf).sum())
        ref = counts.reference_totals(hours - 1, est.cdf)
        estimates.append((ref.w - ref.wy) / ref.w)
        naive.append(seen[:, 1].sum() / seen[:, 0].sum())
    # the attributed rate is close to the truth; contacts over all requests (ignoring the
    # ones still to come) reads low
    assert abs(np.median(estimates) / rate - 1) < 0.1
    assert np.median(naive) < 0.97 * rate
    # ~1,000 contacts in 48 bins: sampling noise alone is a total variation of ~0.08;
    # the delays as counted (short ones over-represented) are further off
    assert np.mean(tv) < 0.15
    assert np.mean(tv) < np.mean(tv_naive)


def test_expected_count_is_the_convolution_of_requests_and_delays() -> None:
    counts = LaggedCounts(n_buckets=48)
    delays = DelayDistribution(max_delay=3, history_days=1, holdout_days=0, min_events=1)
    for d in range(10):
        counts.update_routed("k", 0, d, 10.0 * (d + 1))
        delays.add_exposure(d, 100)
    for d in range(5):
        delays.add_delay(d, d)
        delays.add_delay(d, d + 2)
    est = delays.estimate(30)
    assert est is not None
    assert est.pmf.tolist() == [0.5, 0.0, 0.5]
    # in hour 9: half the contacts of hour 9's 100 requests, half of hour 7's 80
    assert math.isclose(counts.expected_arrivals(9, est.pmf, 0.02), 0.02 * (0.5 * 100 + 0.5 * 80))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 200), st.integers(1, 50)), min_size=1, max_size=40),
       st.integers(0, 200), st.integers(0, 60))
def test_series_rows_are_the_window_buckets(
        events: list[tuple[int, int]], last: int, length: int) -> None:
    c = OutcomeCounts(bucket_seconds=3600.0, n_buckets=48)
    for hour, n in events:
        c.update_routed("cheap", hour % 3, hour * 3600.0, n)
    first = last - length
    rows = c.series(first, last, signal="support_contact", tier="cheap")
    assert rows.shape == (length + 1, 6)
    for i, b in enumerate(range(last, first - 1, -1)):
        expect = c.window(b * 3600.0, 3600.0, signal="support_contact", tier="cheap").as_vector()
        inside = c.head is not None and c.head - c.n_buckets < b <= c.head
        assert np.allclose(rows[i], expect if inside else 0.0)
    # a checkpoint drops the caches these reads filled, and reads the same afterwards
    restored = pickle.loads(pickle.dumps(c))
    assert not restored._sums and not restored._refs
    assert np.array_equal(restored.series(first, last, signal="support_contact", tier="cheap"),
                          rows)


# --------------------------------------------------------------------- drift: tilt CUSUMs
BETA = stats.beta(2, 5)
MINUTE = 60.0


def _estimated_bins(rng: np.random.Generator) -> tuple[QuantileBins, np.ndarray]:
    """200 equal-mass bins fitted on a 100k baseline sample, and the true bin masses (the
    baseline is an estimate: the CUSUM's expected distribution is off by its noise)."""
    qb = QuantileBins.from_sample(BETA.rvs(size=100_000, random_state=rng), 200)
    true = np.diff(np.concatenate([[0.0], BETA.cdf(qb.edges), [1.0]]))
    return qb, true


def _alarm_episodes(rng: np.random.Generator, threshold: float, minutes: int,
                    per_minute: int) -> int:
    qb, true = _estimated_bins(rng)
    c = TiltCusum(threshold)
    episodes, was = 0, False
    for i, counts in enumerate(rng.multinomial(per_minute, true, size=minutes)):
        c.add_counts(i * MINUTE, counts, qb.baseline_probs)
        now = c.advance((i + 1) * MINUTE)
        episodes += now and not was
        was = now
    return episodes


@pytest.mark.parametrize("per_second", [100.0, 1.0])
def test_tilt_cusum_no_drift_30_days(per_second: float) -> None:
    """30 days in minute steps (259M events at 100/s) against an estimated baseline: no
    more false alarms than the budget, at the threshold production uses for one stream
    and a budget of 1 per 30 days. And the simulation can alarm: where a step holds a
    few events and the threshold is low, it does (with thousands of events a step, the
    tilt's floor makes every no-drift step strongly negative)."""
    minutes = 30 * 24 * 60
    threshold = math.log(minutes * 14 / 1.0)
    rng = np.random.default_rng(11)
    runs = [_alarm_episodes(rng, threshold, minutes, int(per_second * 60)) for _ in range(2)]
    assert sum(runs) <= len(runs), runs
    assert _alarm_episodes(rng, 3.0, 24 * 60, 5) > 0


def test_tilt_cusum_finds_a_modest_shift_within_minutes() -> None:
    """A 0.3 sd mean shift at 100 events/s: found within 5 minutes (theory: the threshold
    over the per-event drift of the location CUSUM, ~0.045, is ~350 events, 4 s)."""
    rng = np.random.default_rng(12)
    qb, _ = _estimated_bins(rng)
    shifted = np.diff(np.concatenate([[0.0], BETA.cdf(qb.edges - 0.3 * BETA.std()), [1.0]]))
    c = TiltCusum(threshold=15.0)
    for i, counts in enumerate(rng.multinomial(6000, shifted, size=5)):
        c.add_counts(i * MINUTE, counts, qb.baseline_probs)
        if c.advance((i + 1) * MINUTE):
            break
    assert c.alarm
    worst = c.worst()
    assert worst is not None and worst[0] == "location+"


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 900), st.integers(0, 19)), min_size=1, max_size=120),
       st.lists(st.integers(1, 119), max_size=5))
def test_tilt_cusum_does_not_depend_on_batching(
        events: list[tuple[float, int]], cuts: list[int]) -> None:
    """The worker and the replay batch differently: the statistics must be identical."""
    events.sort()
    ts = np.array([e[0] for e in events])
    bins = np.array([e[1] for e in events])
    p = np.linspace(1, 2, 20)
    p /= p.sum()
    whole, parts = TiltCusum(3.0, step_seconds=60.0), TiltCusum(3.0, step_seconds=60.0)
    whole.add(ts, bins, p)
    whole.advance(1000.0)
    bounds = sorted({0, len(events), *[c for c in cuts if c < len(events)]})
    for lo, hi in itertools.pairwise(bounds):
        parts.add(ts[lo:hi], bins[lo:hi], p)
        parts.advance(float(ts[lo]))  # close what precedes the batch, as ticks would
    parts.advance(1000.0)
    assert whole.statistic.tolist() == parts.statistic.tolist()
    assert whole.since.tolist() == parts.since.tolist()


def test_tilt_directions_are_standardized_under_any_truncation() -> None:
    rng = np.random.default_rng(4)
    for _ in range(20):
        p = rng.dirichlet(np.ones(50))
        p[: rng.integers(0, 25)] = 0.0  # a tier truncation
        p /= p.sum()
        names, g = tilt_directions(p)
        assert np.allclose(p @ g, 0.0) and np.allclose(p @ g**2, 1.0)
        assert {"location+", "spread+"} <= set(names)


def _routing(rng: np.random.Generator, t0: float, seconds: float, rate: float,
             a: float) -> list[RoutingEvent]:
    """Routing events of a Beta(a, 2) score stream under fixed thresholds."""
    ts = np.sort(rng.uniform(t0, t0 + seconds, rng.poisson(rate * seconds)))
    scores = rng.beta(a, 2, ts.size)
    out = []
    for i, (t, s) in enumerate(zip(ts.tolist(), scores.tolist(), strict=True)):
        cheap = s >= 0.6
        out.append(RoutingEvent.model_validate({
            "event_id": f"e{t0:.0f}-{i}", "request_id": f"r{t0:.0f}-{i}", "router_id": "r1",
            "tier": "cheap" if cheap else "capable", "ts": t, "score": s,
            "route_reason": "confident_cheap" if cheap else "confident_capable",
            "thresholds": {"cheap_above": 0.6, "capable_below": 0.5,
                           "exploration_rate": 0.0}}))
    return out


def test_the_monitor_pages_an_abrupt_drift_within_minutes_between_evaluations() -> None:
    """Through the whole core: minute ticks between the hourly evaluations fire
    ``confidence_drift`` from the sequential test, minutes after the onset."""
    rng = np.random.default_rng(21)
    monitor = build_monitor(Settings())
    start = datetime(2026, 3, 1, tzinfo=UTC).timestamp()
    monitor.set_baseline(fit_baseline("r1", "v1", datetime(2026, 2, 1, tzinfo=UTC),
                                      rng.beta(3, 2, 100_000)))
    alerts: list[Alert] = []
    onset = start + 6 * 3600 + 1200  # 20 minutes into an hour
    for minute in range(0, 8 * 60, 5):
        t0 = start + minute * 60
        batch = _routing(rng, t0, 300, 2.0, 3.0 if t0 < onset else 4.5)
        monitor.observe_routing(batch)
        alerts += [o.payload for o in monitor.drain() if o.topic == "alerts"]  # type: ignore[misc]
    firing = [a for a in alerts if a.state == "firing" and a.kind == "confidence_drift"]
    assert firing, [a.summary for a in alerts]
    first = firing[0]
    assert first.window == "seq" and "sequential" in first.statistics
    delay = first.ts.timestamp() - onset
    assert 0 < delay <= 15 * 60, delay
    assert all(a.ts.timestamp() > onset for a in alerts if a.state == "firing")
