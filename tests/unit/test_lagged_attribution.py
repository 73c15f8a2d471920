"""Lagging signals attributed to their requests (pipeline.core.lagged) and the router's use of them.

Case 1 (issue 14, acceptance 4): constant contact probability, weekend volume ×0.3 with a
diurnal cycle of ×4, exponential contact delays of mean 6 h, 8 weeks: no quality or contact
alert, and the estimate's interval covers the truth at its nominal level over many seeds.
Case 2: a threshold move (cheap_above 0.70 → 0.80): the per-band rates do not change and
nothing pages. Before this module, the arrival-time windows paged 7 times in 8 weeks (every
weekend) on case 1's traffic (measured on the parent commit with the same generator).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from pipeline.core.economics import Prices
from pipeline.core.lagged import (
    DelayDistribution,
    LaggedCounts,
    attributed_counts,
    attributed_totals,
    life_table_cdf,
    poisson_rate_interval,
)
from pipeline.core.monitor import Monitor
from pipeline.core.router_state import MonitorConfig
from pipeline.schemas import FeedbackEvent, RoutingEvent, Thresholds
from tests.lagged_traffic import (
    DAY,
    HOUR,
    T0,
    Feed,
    exponential_bucket_cdf,
    new_state,
    quality_alerts,
    volume,
)

DEPTH = 72  # hours of delay modelled in the vectorised tests (P(exp(6 h) > 72 h) = 6e-6)


# -- the estimator, vectorised over seeds ----------------------------------------------------
def _seeds(n_seeds: int, hours: int, p: float, rate: float, seed: int,
           scale: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Requests per hour (seeds × hours) and their contacts by (decision hour, delay)."""
    rng = np.random.default_rng(seed)
    lam = rate * volume(np.arange(hours)) * (1.0 if scale is None else scale)
    n = rng.poisson(np.broadcast_to(lam, (n_seeds, hours)))
    c = rng.binomial(n, p)
    pmf = np.diff(exponential_bucket_cdf(6.0, DEPTH), prepend=0.0)
    delays = rng.multinomial(c, pmf / pmf.sum())  # seeds × hours × DEPTH
    return n.astype(float), delays.astype(float)


def _estimate(n: np.ndarray, delays: np.ndarray, k: int, m: int,
              history_days: int = 14) -> tuple[np.ndarray, np.ndarray]:
    """(C, E) of the window of decision hours k-m+1..k, as of the close of hour k, with
    the delay cdf learnt as DelayDistribution does (whole days, the newest held out)."""
    hours = np.arange(n.shape[1])
    arrived = (hours[:, None] + np.arange(DEPTH)[None, :]) <= k  # decision hour × delay
    seen = delays * arrived
    d_hi = (k + 1) // 24 - 2
    d_lo = d_hi - history_days + 1
    span = slice(24 * d_lo, 24 * d_hi + 24)
    cdf = life_table_cdf(seen[:, span].sum(axis=1), n[:, span], k - hours[span])
    cdf[:, -1] = 1.0
    window = slice(k - m + 1, k + 1)
    return attributed_counts(n[:, window], seen[:, window].sum(axis=2), k - hours[window], cdf)


@pytest.mark.parametrize(("label", "k", "m"), [
    ("Saturday 11:00, 1d", 19 * 24 + 11, 24),
    ("Monday 08:00, 1d", 21 * 24 + 8, 24),
    ("Sunday 23:00, 7d", 20 * 24 + 23, 168),
])
def test_case1_interval_covers_the_truth_at_its_nominal_level(label: str, k: int,
                                                               m: int) -> None:
    p, n_seeds, confidence = 0.01, 200, 0.95
    n, delays = _seeds(n_seeds, 22 * 24, p, rate=150.0, seed=k)
    c, e = _estimate(n, delays, k, m)
    lo, hi = np.array([poisson_rate_interval(ci, ei, confidence)
                       for ci, ei in zip(c, e, strict=True)]).T
    coverage = float(np.mean((lo <= p) & (p <= hi)))
    tol = 3 * math.sqrt(confidence * (1 - confidence) / n_seeds)
    # Garwood is exact-conservative: at least nominal, and not much more at these counts
    assert confidence - tol <= coverage <= 0.995, (label, coverage)
    # unbiased: the mean estimate is within 3 standard errors of the truth
    est = c / e
    assert abs(est.mean() - p) < 3 * est.std(ddof=1) / math.sqrt(n_seeds), (label, est.mean())
    # ... where counting contacts as they arrive against the requests routed meanwhile
    # is not, at the weekly cycle's edges
    arrival = np.arange(n.shape[1])[:, None] + np.arange(DEPTH)  # decision hour × delay
    mask = (arrival > k - m) & (arrival <= k)
    naive = (delays * mask).sum(axis=(1, 2)) / n[:, k - m + 1: k + 1].sum(axis=1)
    if label.startswith("Saturday"):
        assert naive.mean() > 1.1 * p
    if label.startswith("Monday"):
        assert naive.mean() < 0.9 * p


def test_life_table_is_the_empirical_cdf_for_one_matured_cohort() -> None:
    """Oracle: one decision hour, every delay observed: the life table is the ECDF."""
    rng = np.random.default_rng(3)
    d = np.minimum(rng.geometric(0.1, 5000) - 1, 39)
    hist = np.bincount(d, minlength=40).astype(float)
    cdf = life_table_cdf(hist, [5000.0], ages=[100])
    ecdf = np.array([np.mean(d <= a) for a in range(40)])
    np.testing.assert_allclose(cdf, ecdf, rtol=1e-12)


def test_life_table_corrects_for_censoring_like_kaplan_meier() -> None:
    """Oracle: with requests of many ages, each delay observed only where its request is
    old enough, the life table recovers the true geometric cdf (scipy), where the naive
    ECDF of the delays seen so far is biased short."""
    rng = np.random.default_rng(4)
    q = 0.08
    truth = stats.geom.cdf(np.arange(1, 61), q)
    n = np.full(200, 2000.0)  # 200 decision hours, newest last
    ages = 199 - np.arange(200)
    hist = np.zeros(60)
    for age, requests in zip(ages, n, strict=True):
        d = np.minimum(rng.geometric(q, int(requests * 0.05)) - 1, 59)
        seen = d[d <= age]
        hist += np.bincount(seen, minlength=60)
    cdf = life_table_cdf(hist, n, ages)
    np.testing.assert_allclose(cdf[:40], truth[:40], atol=0.01)
    naive = np.cumsum(hist) / hist.sum()  # the delays seen so far: biased short
    assert naive[10] - truth[10] > 0.01


def test_poisson_interval_matches_scipy_chi2() -> None:
    for count, exposure in [(0, 50.0), (1, 100.0), (17, 2500.0), (400, 1e5)]:
        lo, hi = poisson_rate_interval(count, exposure, 0.9)
        lo_ref = 0.0 if count == 0 else stats.chi2.ppf(0.05, 2 * count) / 2
        hi_ref = stats.chi2.ppf(0.95, 2 * count + 2) / 2
        assert lo == pytest.approx(lo_ref / exposure, rel=1e-9)
        assert hi == pytest.approx(hi_ref / exposure, rel=1e-9)


# -- properties --------------------------------------------------------------------------------
@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(0.0, 500.0), min_size=240, max_size=240),
       st.floats(0.001, 0.2), st.floats(1.0, 20.0))
def test_expected_estimate_is_the_rate_whatever_the_volume(volumes: list[float], p: float,
                                                           mean_h: float) -> None:
    """Expected contacts (fractional counts) for any volume profile: the delay learnt by
    the life table is the true one, and the window's estimate is exactly ``p``."""
    n = np.array(volumes)
    if n[:169].sum() < 1.0:  # no request old enough to show the longest delays
        return
    cdf = exponential_bucket_cdf(mean_h, DEPTH)
    pmf = np.diff(cdf, prepend=0.0)
    k = n.size - 1
    hours = np.arange(n.size)
    expected = p * n[:, None] * pmf[None, :] * ((hours[:, None] + np.arange(DEPTH)) <= k)
    learnt = life_table_cdf(expected[:200].sum(axis=0), n[:200], k - hours[:200])
    np.testing.assert_allclose(learnt, cdf, atol=1e-9)
    for m in (24, 168):
        w = slice(k - m + 1, k + 1)
        c, e = attributed_counts(n[w], expected[w].sum(axis=1), k - hours[w], cdf)
        if e > 0:
            assert float(c / e) == pytest.approx(p, rel=1e-9)


Event = tuple[str, int, int, int, float]  # tier, band, decision bucket, arrival (-1: routed), n


def _stream(draw: st.DrawFn) -> list[Event]:
    """Requests and lagging events in any order (partitions see them in any order)."""
    events: list[Event] = []
    for _ in range(draw(st.integers(1, 60))):
        tier = draw(st.sampled_from(["cheap", "capable"]))
        band = draw(st.integers(0, 3))
        d = draw(st.integers(0, 80))
        arrival = d + draw(st.integers(0, 30)) if draw(st.booleans()) else -1
        events.append((tier, band, d, arrival, float(draw(st.integers(1, 5)))))
    return events


streams = st.composite(_stream)


def _feed(counts: LaggedCounts, dist: DelayDistribution, events: list[Event]) -> None:
    for tier, band, d, a, x in events:
        if a < 0:
            counts.update_routed(tier, band, d, x)
            dist.add_exposure(d, x)
        else:
            counts.update_event(tier, band, d, a, x)
            dist.add_delay(d, a, x)


@settings(max_examples=30, deadline=None)
@given(streams(), streams())
def test_merge_of_two_streams_equals_the_combined_stream(a: list[Event],
                                                         b: list[Event]) -> None:
    def fresh() -> tuple[LaggedCounts, DelayDistribution]:
        return (LaggedCounts(48, reference=(0, 30)),
                DelayDistribution(24, history_days=2, holdout_days=0, min_events=1))

    one, one_d = fresh()
    _feed(one, one_d, a + b)
    left, left_d = fresh()
    right, right_d = fresh()
    _feed(left, left_d, a)
    _feed(right, right_d, b)
    left.merge(right)
    left_d.merge(right_d)
    cdf = np.linspace(0.2, 1.0, 24)
    for tier in (None, "cheap", "capable"):
        for band in (None, 0, 3):
            assert np.allclose(left.series(0, 120, tier=tier, band=band),
                               one.series(0, 120, tier=tier, band=band))
            assert left.window(110, 24, cdf, tier=tier, band=band) == pytest.approx(
                one.window(110, 24, cdf, tier=tier, band=band))
            assert left.reference_totals(110, cdf, tier=tier, band=band) == pytest.approx(
                one.reference_totals(110, cdf, tier=tier, band=band))
    for k in (60, 100, 130):
        x, y = left_d.estimate(k), one_d.estimate(k)
        assert (x is None) == (y is None)
        if x is not None and y is not None:
            np.testing.assert_allclose(x.cdf, y.cdf)


def test_classes_agree_with_the_vectorised_functions() -> None:
    """The ring-buffered objects give the same window as the array functions."""
    n, delays = _seeds(1, 22 * 24, 0.02, rate=100.0, seed=11)
    k, m = 20 * 24 + 5, 24
    c_ref, e_ref = _estimate(n, delays, k, m)
    counts = LaggedCounts(170)
    dist = DelayDistribution(168)
    for h in range(k + 1):
        counts.update_routed("cheap", 0, h, n[0, h])
        dist.add_exposure(h, n[0, h])
        for a in np.flatnonzero(delays[0, h]):
            if h + a <= k:
                counts.update_event("cheap", 0, h, h + int(a), delays[0, h, a])
                dist.add_delay(h, h + int(a), delays[0, h, a])
    est = dist.estimate(k)
    assert est is not None
    t = counts.window(k, m, est.cdf)
    assert t.w == pytest.approx(float(e_ref[0]), rel=1e-6)
    assert t.w - t.wy == pytest.approx(float(c_ref[0]))


def test_events_for_decisions_out_of_the_ring_are_refused() -> None:
    counts = LaggedCounts(24)
    counts.update_routed("cheap", 0, 100, 10)
    assert counts.update_event("cheap", 0, 100, 101)
    assert not counts.update_event("cheap", 0, 60, 101)  # 41 h old: left the ring
    assert counts.series(100, 101, tier="cheap")[:, 1].tolist() == [1.0, 0.0]
    assert attributed_totals(2.0, 100.0).rate == pytest.approx(0.98)


# -- the router: case 1 and case 2 -------------------------------------------------------------
TH = Thresholds(cheap_above=0.7, capable_below=0.5, exploration_rate=0.1)


def test_case1_weekly_cycle_pages_nothing_for_8_weeks() -> None:
    rng = np.random.default_rng(1)
    feed = Feed(new_state(), rng, TH)
    p = 0.04  # on this traffic the arrival-time windows paged 7 times in 8 weeks
    for h in range(8 * 7 * 24):
        feed.hour(h, int(rng.poisson(300 * volume(np.array([h]))[0])),
                  contact_p=lambda s, c: np.full(s.size, p),
                  delay_h=lambda k: rng.exponential(6.0, k))
    assert quality_alerts(feed) == []
    snap = feed.state.last_snapshot
    for tier in ("cheap", "capable"):
        rate = snap["tiers"][tier]["support_rate"]
        assert rate["lo"] <= p <= rate["hi"], (tier, rate)
    delay = feed.state.last_contacts["delay"]
    assert 3.0 <= delay["median_h"] <= 5.0  # exp(6 h): median 4.2 h
    assert feed.state.unattributed == {"no_decision": 0, "too_late": 0, "unjoined": 0}


@pytest.mark.parametrize(("before_th", "after_th"), [(0.7, 0.8), (0.8, 0.7)],
                         ids=["up", "down"])
def test_case2_threshold_move_changes_no_band_rate_and_pages_nothing(
        before_th: float, after_th: float) -> None:
    """Cheap serves the band just above 0.70 worse than the bands above it. Moving
    ``cheap_above`` changes which bands the cheap tier serves, so its raw rate, but no
    band's rate: per band, and for the tier with its reference reweighted to the current
    band mix (``QualityConfig.standardize_bands``), nothing changed and nothing pages."""
    rng = np.random.default_rng(2)
    # contacts priced so that cheap's genuinely higher contact rate near the threshold is
    # no Pareto trap: this case is about the move, not about the router's economics
    state = new_state(MonitorConfig(recommend=False, prices=Prices(cost_per_support_contact=0.5)))
    feed = Feed(state, rng, Thresholds(cheap_above=before_th, capable_below=0.5,
                                       exploration_rate=0.1))
    band_p = np.array([0.01] * 5 + [0.02, 0.02, 0.025, 0.012, 0.008])  # cheap, per band

    def contact_p(scores: np.ndarray, cheap: np.ndarray) -> np.ndarray:
        return np.where(cheap, band_p[state.bands(scores)], 0.01)

    move = 21 * 24
    before: dict[int, tuple[float, float]] = {}
    for h in range(5 * 7 * 24):
        if h == move:
            feed.thresholds = Thresholds(cheap_above=after_th, capable_below=0.5,
                                         exploration_rate=0.1)
            for b in (8, 9):  # the 7d attributed window just before the move
                t = state.window("support_contact", T0 + h * HOUR - 1e-6, 7 * DAY,
                                 tier="cheap", band=b)
                before[b] = (t.w - t.wy, t.w)
        feed.hour(h, int(rng.poisson(500 * volume(np.array([h]))[0])), contact_p=contact_p,
                  delay_h=lambda k: rng.exponential(6.0, k))
    assert quality_alerts(feed) == []
    end = T0 + 5 * 7 * DAY - 1e-6
    for b in (8, 9):
        t = state.window("support_contact", end, 7 * DAY, tier="cheap", band=b)
        c, e = t.w - t.wy, t.w
        # the same band's rate before and after the move: a two-sample conditional test
        c0, e0 = before[b]
        p_two = stats.binomtest(round(c), round(c + c0), e / (e + e0)).pvalue
        assert p_two > 0.001, (b, c / e, c0 / e0)
        lo, hi = poisson_rate_interval(c, e, 0.999)
        assert lo <= band_p[b] <= hi
    # the raw tier rate did move with the mix (most when cheap gains the worse band)
    raw = state.window("support_contact", end, 7 * DAY, tier="cheap")
    ref = state.reference("support_contact", end, tier="cheap")
    shift = (1 - raw.rate) - (1 - ref.rate)
    assert shift > 0.003 if after_th < before_th else shift < -0.0005


# -- contacts that count against no request; late graded outcomes -------------------------
def _routing(i: int, ts: str) -> RoutingEvent:
    return RoutingEvent.model_validate({
        "event_id": f"e{i}", "request_id": f"r{i}", "router_id": "support", "tier": "cheap",
        "ts": ts, "score": 0.91, "route_reason": "confident_cheap",
        "thresholds": {"cheap_above": 0.7, "capable_below": 0.5, "exploration_rate": 0.1}})


def _contact(i: int, request: str, ts: str, **extra: object) -> FeedbackEvent:
    return FeedbackEvent.model_validate({"event_id": f"f{i}", "request_id": request,
                                         "router_id": "support", "ts": ts,
                                         "kind": "support_contact", "value": 1, **extra})


def test_a_contact_that_never_joins_is_counted_and_inflates_no_rate() -> None:
    m = Monitor(MonitorConfig(join_ttl_s=DAY, recommend=False))
    m.observe_routing([_routing(i, f"2026-01-05T{i:02d}:00:00+00:00") for i in range(3)])
    m.observe_feedback([_contact(0, "r0", "2026-01-05T05:00:00+00:00"),
                        _contact(1, "nobody", "2026-01-05T05:00:00+00:00"),
                        _contact(2, "r9", "2026-01-05T06:00:00+00:00",
                                 tier="cheap", score=0.95)])  # self-described, no decision
    m.observe_routing([_routing(9, "2026-01-07T00:00:00+00:00")])
    m.drain()
    state = m.routers["support"]
    assert state.unattributed == {"no_decision": 1, "too_late": 0, "unjoined": 1}
    status = m.status()
    assert status["unjoined_feedback"] == {"support": {"support_contact": 1}}
    assert status["routers"]["support"]["support_contacts"]["unattributed"]["unjoined"] == 1
    # only the joined contact is in the counts: one contact against request r0's hour
    rows = state.quality_watch.lagged.series(0, 10**7, tier="cheap")
    assert rows[:, LaggedCounts.BY_DECISION].sum() == 1.0
    assert rows[:, LaggedCounts.ROUTED].sum() == 4.0
    gauges = {(g[0], g[1].get("reason")): g[2] for g in state.gauges}
    assert gauges[("support_contacts_unattributed", "unjoined")] == 1.0


def test_a_late_survey_counts_in_its_requests_window() -> None:
    state = new_state()
    decided = T0 + 10 * DAY + 3 * HOUR
    state.observe_feedback(tier="cheap", score=0.9, kind="survey", value=0.2,
                           ts=decided + 3 * DAY, decision_ts=decided, weight=None,
                           propensity=None, in_band=None)
    at_decision = state.window("survey", decided + HOUR, DAY, tier="cheap")
    at_arrival = state.window("survey", decided + 3 * DAY + HOUR, DAY, tier="cheap")
    assert (at_decision.n, at_arrival.n) == (1.0, 0.0)
