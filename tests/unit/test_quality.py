"""Oracle, simulation and property tests of pipeline.core.quality."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from pipeline.core.quality import (
    SIGNALS,
    OutcomeCounts,
    SequentialDropTest,
    Totals,
    beta_interval,
    effective_counts,
    feedback_starvation,
    hajek_mean,
    horvitz_thompson_mean,
    horvitz_thompson_total,
    ipw_weight,
    kish_effective_n,
    masked_tiers,
    minimum_detectable_drop,
    outcome,
    required_sample_size,
    wilson_interval,
)

DAY = 86400.0
T0 = 1_699_920_000.0  # a UTC midnight

GRID = [(k, n) for n in (1, 5, 20, 137) for k in sorted({0, 1, n // 3, n // 2, n - 1, n})]
CONFIDENCES = (0.8, 0.95, 0.99)


# --------------------------------------------------------------------------- intervals
@pytest.mark.parametrize("confidence", CONFIDENCES)
@pytest.mark.parametrize(("k", "n"), GRID)
def test_wilson_matches_scipy(k: int, n: int, confidence: float) -> None:
    ref = stats.binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
    lo, hi = wilson_interval(k, n, confidence)
    assert lo == pytest.approx(ref.low, abs=1e-12)
    assert hi == pytest.approx(ref.high, abs=1e-12)


@pytest.mark.parametrize("confidence", CONFIDENCES)
@pytest.mark.parametrize(("k", "n"), GRID)
def test_clopper_pearson_matches_scipy(k: int, n: int, confidence: float) -> None:
    ref = stats.binomtest(k, n).proportion_ci(confidence_level=confidence, method="exact")
    lo, hi = beta_interval(k, n, confidence, method="clopper-pearson")
    assert lo == pytest.approx(ref.low, abs=1e-10)
    assert hi == pytest.approx(ref.high, abs=1e-10)


@pytest.mark.parametrize("confidence", CONFIDENCES)
@pytest.mark.parametrize(("k", "n"), GRID)
def test_jeffreys_matches_scipy_beta(k: int, n: int, confidence: float) -> None:
    a = 1 - confidence
    post = stats.beta(k + 0.5, n - k + 0.5)
    lo, hi = beta_interval(k, n, confidence, method="jeffreys")
    assert lo == (0.0 if k == 0 else pytest.approx(post.ppf(a / 2), abs=1e-10))
    assert hi == (1.0 if k == n else pytest.approx(post.ppf(1 - a / 2), abs=1e-10))


def test_intervals_edge_cases_and_errors() -> None:
    assert wilson_interval(0, 0) == (0.0, 1.0)
    assert beta_interval(0, 0) == (0.0, 1.0)
    # float noise from weighted sums is clipped, not an error
    assert wilson_interval(10.000000001, 10)[1] == 1.0
    with pytest.raises(ValueError, match="confidence"):
        wilson_interval(1, 2, confidence=1.0)
    with pytest.raises(ValueError, match="method"):
        beta_interval(1, 2, method="agresti")
    with pytest.raises(ValueError, match="n must be"):
        wilson_interval(1, -2)


def test_weighted_counts_use_kish_effective_n() -> None:
    y = np.array([1, 1, 0, 1, 0, 1, 1, 1], dtype=float)
    plain = Totals.from_arrays(y)
    scaled = Totals.from_arrays(y, np.full(y.size, 3.5))  # constant weights change nothing
    assert scaled.n_eff == pytest.approx(plain.n_eff)
    assert scaled.interval() == pytest.approx(plain.interval())
    assert scaled.interval(method="jeffreys") == pytest.approx(plain.interval(method="jeffreys"))
    w = np.array([1, 1, 1, 1, 4, 4, 4, 4], dtype=float)
    weighted = Totals.from_arrays(y, w)
    assert weighted.n_eff == pytest.approx(kish_effective_n(w.sum(), (w * w).sum()))
    assert weighted.n_eff < y.size
    s, n = effective_counts(weighted.wy, weighted.w, weighted.w2)
    assert s / n == pytest.approx(np.average(y, weights=w))
    lo, hi = weighted.interval()
    assert (lo, hi) == pytest.approx(wilson_interval(s, n))
    assert hi - lo > plain.interval()[1] - plain.interval()[0]  # fewer effective observations


# --------------------------------------------------------------------------- outcomes
def test_outcome_mapping() -> None:
    assert [outcome("thumbs", v) for v in (0, 1)] == [0.0, 1.0]
    assert [outcome("rating", v) for v in (1, 2, 3, 4, 5)] == [0.0, 0.0, 0.0, 1.0, 1.0]
    for kind in ("review", "shadow", "survey"):
        assert outcome(kind, 0.25) == 0.25
    assert outcome("support_contact", 1) == 0.0
    for kind, bad in [("thumbs", 0.5), ("rating", 6), ("review", 1.5), ("survey", -0.1)]:
        with pytest.raises(ValueError, match=kind):
            outcome(kind, bad)
    with pytest.raises(ValueError, match="unknown feedback kind"):
        outcome("emoji", 1)
    assert set(SIGNALS) == {"thumbs", "rating", "review", "shadow", "survey", "support_contact"}
    assert ipw_weight(0.25, 2.0) == 8.0


def test_support_contacts_count_against_routed_requests() -> None:
    c = OutcomeCounts()
    c.update_routed("cheap", 1, T0, count=400).update_routed("cheap", 2, T0, count=600)
    for _ in range(5):
        c.update_feedback("cheap", 1, "support_contact", 1, T0)
    c.update_feedback("cheap", 1, "thumbs", 1, T0)  # feedback does not dilute contacts
    t = c.window(T0, DAY, signal="support_contact", tier="cheap")
    assert t.n == 1000 and t.rate == pytest.approx(1 - 5 / 1000)
    assert c.window(T0, DAY, signal="support_contact", band=1).rate == pytest.approx(1 - 5 / 400)
    assert c.window(T0, DAY, signal="thumbs").n == 1


# --------------------------------------------------------------------------- counts
def test_windows_are_sums_of_buckets_and_age_out() -> None:
    c = OutcomeCounts(bucket_seconds=3600, n_buckets=48)
    for h in range(72):
        c.update("cheap", 0, "thumbs", T0 + h * 3600 + 10, y=float(h % 2))
    assert c.head == math.floor((T0 + 71 * 3600) / 3600)
    now = T0 + 71 * 3600 + 20
    assert c.window(now, DAY, signal="thumbs").n == 24
    assert c.window(now, 2 * DAY, signal="thumbs").n == 48
    assert c.window(now, 2 * DAY, signal="thumbs").rate == 0.5
    assert c.window(now - DAY, DAY, signal="thumbs").n == 24  # an earlier window
    assert c.window(now + DAY, DAY, signal="thumbs").n == 0  # a later, empty one
    assert not c.accepts(T0)
    c.update("cheap", 0, "thumbs", T0, y=1.0)  # too late: dropped and counted
    assert c.n_late == 1
    with pytest.raises(ValueError, match="buckets"):
        c.window(now, 3 * DAY, signal="thumbs")
    with pytest.raises(ValueError, match="weight"):
        c.update("cheap", 0, "thumbs", now, y=1.0, weight=0.0)


def test_reference_period_is_frozen() -> None:
    c = OutcomeCounts(bucket_seconds=3600, n_buckets=24, reference=(T0, T0 + DAY))
    c.update_counts("cheap", 0, "thumbs", T0 + 5, good=90, n=100)
    c.update_counts("cheap", 0, "thumbs", T0 + DAY + 5, good=10, n=100)
    c.update_counts("cheap", 0, "thumbs", T0 + 5 * DAY, good=50, n=100)
    ref = c.reference_totals("thumbs", tier="cheap")
    assert (ref.n, ref.rate) == (100.0, 0.9)
    assert c.window(T0 + 5 * DAY, DAY, signal="thumbs").n == 100  # the rest aged out


def test_outcome_counts_window_oracle() -> None:
    rng = np.random.default_rng(3)
    n = 3000
    ts = np.sort(T0 + rng.uniform(0, 10 * DAY, n))
    tier = rng.choice(["cheap", "capable"], n)
    band = rng.integers(0, 4, n)
    y = rng.integers(0, 2, n).astype(float)
    w = rng.choice([1.0, 2.0, 0.5], n)
    c = OutcomeCounts(bucket_seconds=3600, n_buckets=7 * 24)
    for i in range(n):
        c.update(str(tier[i]), int(band[i]), "thumbs", float(ts[i]), float(y[i]), float(w[i]))
    now = float(ts[-1])
    k_now = math.floor(now / 3600)
    for seconds in (DAY, 7 * DAY):
        m = int(seconds // 3600)
        b = np.floor(ts / 3600)
        sel = (b > k_now - m) & (b <= k_now) & (tier == "cheap") & (band == 2)
        got = c.window(now, seconds, signal="thumbs", tier="cheap", band=2)
        assert got.n == sel.sum()
        assert got.w == pytest.approx(w[sel].sum())
        assert got.rate == pytest.approx(np.average(y[sel], weights=w[sel]))


_events = st.lists(
    st.tuples(
        st.sampled_from(["cheap", "capable"]),
        st.integers(0, 2),
        st.sampled_from(["thumbs", "review", "support_contact"]),
        st.integers(0, 60 * 60),  # minutes: spans past the 24-bucket ring
        st.sampled_from([0.0, 0.25, 0.5, 1.0]),
        st.sampled_from([0.5, 1.0, 2.0, 4.0]),
        st.integers(0, 2),  # partition
    ),
    max_size=80,
)


def _feed(c: OutcomeCounts, events: list) -> OutcomeCounts:
    for tier, band, signal, minute, y, w, _ in events:
        ts = T0 + minute * 60.0
        if signal == "support_contact":
            if y == 1.0:
                c.update_contact(tier, band, ts)
            else:
                c.update_routed(tier, band, ts, count=int(w * 2))
        else:
            c.update(tier, band, signal, ts, y, w)
    return c


@settings(max_examples=100, deadline=None)
@given(events=_events)
def test_outcome_counts_merge_equals_concatenation(events: list) -> None:
    events = sorted(events, key=lambda e: e[3])  # in event-time order: nothing is late
    cfg = {"bucket_seconds": 3600.0, "n_buckets": 24, "reference": (T0, T0 + 5 * 3600.0)}
    single = _feed(OutcomeCounts(**cfg), events)  # type: ignore[arg-type]
    parts = [_feed(OutcomeCounts(**cfg), [e for e in events if e[6] == p]) for p in range(3)]  # type: ignore[arg-type]
    merged = parts[0] + parts[1] + parts[2]
    assert merged == single
    assert single.n_late == 0
    if events:
        now = T0 + events[-1][3] * 60.0
        for signal in ("thumbs", "support_contact"):
            assert merged.window(now, DAY, signal=signal) == single.window(now, DAY, signal=signal)
    # merging in the other order gives the same state
    assert parts[2] + parts[0] + parts[1] == single


@settings(max_examples=100, deadline=None)
@given(events=_events)
def test_outcome_counts_round_trip(events: list) -> None:
    c = _feed(OutcomeCounts(bucket_seconds=3600.0, n_buckets=24, reference=(T0, T0 + DAY)), events)
    back = OutcomeCounts.from_dict(json.loads(json.dumps(c.to_dict())))
    assert back == c
    assert back.to_dict() == c.to_dict()
    later = [("cheap", 0, "thumbs", 3000, 1.0, 1.0, 0)]
    assert _feed(back, later) == _feed(c, later)


def test_merge_requires_same_configuration() -> None:
    with pytest.raises(ValueError, match="cannot merge"):
        OutcomeCounts(n_buckets=24) + OutcomeCounts(n_buckets=48)


# --------------------------------------------------------------------------- HT / IPW
def test_horvitz_thompson_unbiased_for_review_sample() -> None:
    rng = np.random.default_rng(7)
    n_pop = 5000
    score = rng.uniform(0, 1, n_pop)
    # quality is worst near the threshold at 0.6, where the sample is densest
    y = (rng.uniform(size=n_pop) < 0.95 - 0.5 * np.exp(-(((score - 0.6) / 0.05) ** 2))).astype(
        float
    )
    priority = 1 + 3 * np.exp(-0.5 * ((score - 0.6) / 0.05) ** 2)
    pi = np.minimum(1.0, 150 * priority / priority.sum())
    true_total, true_mean = y.sum(), y.mean()
    true_var = np.sum((1 - pi) / pi * y * y)  # Poisson-sampling variance of the HT total
    reps = 600
    totals, var_hats, means, hajeks, naive = [], [], [], [], []
    for _ in range(reps):
        sel = rng.uniform(size=n_pop) < pi
        e = horvitz_thompson_total(y[sel], pi[sel])
        totals.append(e.value)
        var_hats.append(e.variance)
        means.append(horvitz_thompson_mean(y[sel], pi[sel], n_pop).value)
        hajeks.append(hajek_mean(y[sel], pi[sel]).value)
        naive.append(y[sel].mean())
    se_mc = math.sqrt(true_var / reps)
    assert abs(np.mean(totals) - true_total) < 4 * se_mc
    assert np.mean(var_hats) == pytest.approx(true_var, rel=0.15)
    assert np.var(totals) == pytest.approx(true_var, rel=0.2)
    assert abs(np.mean(means) - true_mean) < 4 * se_mc / n_pop
    assert abs(np.mean(hajeks) - true_mean) < 0.01  # ratio estimator: bias O(1/n)
    assert np.mean(naive) < true_mean - 0.05  # the unweighted sample is biased


def _in_band_population(rng: np.random.Generator, n: int, gap: bool = True) -> tuple:
    """In-band requests with score-dependent exploration, as after a threshold change."""
    score = rng.uniform(0.4, 0.7, n)
    eps = 0.05 + 0.5 * (score - 0.4) / 0.3  # P(cheap | score): more exploration higher up
    cheap = rng.uniform(size=n) < eps
    propensity = np.where(cheap, eps, 1 - eps)
    p_cheap = 0.55 + 0.9 * (score - 0.4) if gap else np.full(n, 0.8)
    p_capable = np.full(n, 0.9) if gap else np.full(n, 0.8)
    y = (rng.uniform(size=n) < np.where(cheap, p_cheap, p_capable)).astype(float)
    has_feedback = rng.uniform(size=n) < 0.3  # missing at random
    return cheap[has_feedback], propensity[has_feedback], y[has_feedback], score[has_feedback]


def test_ipw_hajek_unbiased_and_naive_biased() -> None:
    rng = np.random.default_rng(11)
    truth_cheap, truth_capable = 0.55 + 0.9 * 0.15, 0.9
    est, var_hat, naive = [], [], []
    for _ in range(300):
        cheap, prop, y, _ = _in_band_population(rng, 4000)
        arm = Totals.from_arrays(y[cheap], 1 / prop[cheap])
        other = Totals.from_arrays(y[~cheap], 1 / prop[~cheap])
        est.append((arm.rate, other.rate))
        var_hat.append(arm.variance)
        naive.append(y[cheap].mean())
    est_a = np.array(est)
    sd = est_a[:, 0].std()
    assert abs(est_a[:, 0].mean() - truth_cheap) < 4 * sd / math.sqrt(300)
    assert abs(est_a[:, 1].mean() - truth_capable) < 4 * est_a[:, 1].std() / math.sqrt(300)
    assert np.mean(var_hat) == pytest.approx(sd**2, rel=0.25)  # honest variance
    assert np.mean(naive) - truth_cheap > 10 * sd / math.sqrt(300)  # naive is biased


def test_gap_test_through_outcome_counts() -> None:
    rng = np.random.default_rng(5)
    test = SequentialDropTest(floor=0.05, n_comparisons=20)
    cheap, prop, y, _ = _in_band_population(rng, 6000)
    c = OutcomeCounts()
    for i in range(y.size):
        tier = "cheap" if cheap[i] else "capable"
        c.update(tier, 5, "thumbs", T0 + i, float(y[i]), ipw_weight(float(prop[i])))
    now = T0 + y.size
    a = c.window(now, 7 * DAY, signal="thumbs", tier="cheap", band=5)
    b = c.window(now, 7 * DAY, signal="thumbs", tier="capable", band=5)
    assert a.rate == pytest.approx(Totals.from_arrays(y[cheap], 1 / prop[cheap]).rate)
    r = test.test_gap(a, b, band=5, window="7d")
    assert r.alarm and r.gap == pytest.approx(0.9 - 0.685, abs=0.05)
    assert r.to_dict()["alarm"] is True
    # under no true gap the level holds (alpha = 0.05 here, so it is measurable)
    loose = SequentialDropTest(
        floor=0.0, false_alarms_per_period=0.05, evaluation_interval_seconds=30 * DAY
    )
    assert loose.alpha == pytest.approx(0.05)
    rejections = 0
    for _ in range(400):
        cheap, prop, y, _ = _in_band_population(rng, 3000, gap=False)
        r = loose.test_gap(
            Totals.from_arrays(y[cheap], 1 / prop[cheap]),
            Totals.from_arrays(y[~cheap], 1 / prop[~cheap]),
        )
        rejections += r.alarm
    assert rejections / 400 < 0.05 + 3 * math.sqrt(0.05 * 0.95 / 400)


# --------------------------------------------------------------------------- power
def test_minimum_detectable_drop_matches_exact_binomial_power() -> None:
    n, p0, alpha = 400, 0.85, 1e-3
    mdd = minimum_detectable_drop(n, p0, alpha, power=0.8)
    c = int(stats.binom.ppf(alpha, n, p0))
    while stats.binom.cdf(c, n, p0) > alpha:
        c -= 1
    power = stats.binom.cdf(c, n, p0 - mdd)
    assert power == pytest.approx(0.8, abs=0.06)  # integer critical value vs continuous
    z = stats.norm.ppf(1 - alpha) + stats.norm.ppf(0.8)
    assert mdd == pytest.approx(z * math.sqrt(p0 * (1 - p0) / n), rel=0.15)
    # simulated through the test itself (known reference rate, no floor)
    test = SequentialDropTest(
        floor=0.0,
        false_alarms_per_period=alpha,
        evaluation_interval_seconds=30 * DAY,
        min_effective_n=1,
    )
    rng = np.random.default_rng(2)
    hits = [
        test.test(Totals(n, n, n, k, k, k), p0).alarm for k in rng.binomial(n, p0 - mdd, size=1500)
    ]
    assert np.mean(hits) == pytest.approx(0.8, abs=0.06)
    assert test.mdd(n, p0) == pytest.approx(mdd)
    # more data, smaller drops; too little data, nothing detectable
    assert minimum_detectable_drop(4 * n, p0, alpha) < mdd / 1.8
    assert math.isinf(minimum_detectable_drop(3, p0, alpha))
    # an estimated reference costs power
    assert minimum_detectable_drop(n, p0, alpha, n_reference=5000) > mdd


def test_exact_drop_test_holds_its_level() -> None:
    # exact: P_H0(p_value <= alpha) summed over the binomial pmf
    for n, p0 in [(30, 0.9), (200, 0.85), (1000, 0.6)]:
        alpha = 0.01
        test = SequentialDropTest(
            floor=0.0,
            false_alarms_per_period=alpha,
            evaluation_interval_seconds=30 * DAY,
            min_effective_n=1,
        )
        ks = np.arange(n + 1)
        rejects = np.array(
            [test.test(Totals(n, n, n, *[float(k)] * 3), p0).significant for k in ks]
        )
        size = stats.binom.pmf(ks, n, p0)[rejects].sum()
        assert size <= alpha
        assert size > 0.3 * alpha  # not absurdly conservative
    # estimated reference at the same true rate: empirical level stays below alpha
    test = SequentialDropTest(
        floor=0.0, false_alarms_per_period=0.05, evaluation_interval_seconds=30 * DAY
    )
    rng = np.random.default_rng(9)
    rej = 0
    for k_ref, k in zip(rng.binomial(2000, 0.8, 3000), rng.binomial(300, 0.8, 3000), strict=True):
        ref = Totals(2000, 2000, 2000, k_ref, k_ref, k_ref)
        rej += test.test(Totals(300, 300, 300, k, k, k), ref).significant
    assert rej / 3000 <= 0.05


def test_required_sample_size_and_starvation() -> None:
    alpha = 1e-4
    n = required_sample_size(0.9, 0.05, alpha)
    assert minimum_detectable_drop(n, 0.9, alpha) <= 0.05
    assert minimum_detectable_drop(0.98 * n, 0.9, alpha) > 0.05
    per_day = n / 7
    assert not feedback_starvation(1.05 * per_day, 0.9, 0.05, within_days=7, alpha=alpha)
    assert feedback_starvation(0.9 * per_day, 0.9, 0.05, within_days=7, alpha=alpha)
    test = SequentialDropTest(n_comparisons=18)
    assert test.starving(2, 0.9, 0.05, within_days=7)
    assert not test.starving(2000, 0.9, 0.05, within_days=7)
    # a reference too small by itself: no window size is enough
    assert math.isinf(required_sample_size(0.9, 0.01, alpha, n_reference=200))


def test_two_gates() -> None:
    test = SequentialDropTest(floor=0.05, n_comparisons=18)
    ref = 0.9
    huge = Totals(1e6, 1e6, 1e6, 0.89e6, 0.89e6, 0.89e6)  # significant, but only 1 point
    r = test.test(huge, ref)
    assert r.significant and not r.practical and not r.alarm
    tiny = Totals(8, 8, 8, 4, 4, 4)  # a big drop on a tiny sample: no verdict
    r = test.test(tiny, ref)
    assert r.practical and not r.sufficient and not r.alarm
    empty = test.test(Totals(), ref)
    assert not empty.alarm and math.isnan(empty.current_rate)
    assert json.loads(json.dumps(empty.to_dict(), allow_nan=False))["current_rate"] is None
    with pytest.raises(ValueError, match="n_comparisons"):
        SequentialDropTest(n_comparisons=0)


# --------------------------------------------------------------------------- monitoring sims
SPEC = {
    ("cheap", "thumbs"): (400, 0.85),
    ("cheap", "rating"): (150, 0.70),
    ("capable", "thumbs"): (150, 0.90),
    ("capable", "rating"): (60, 0.80),
}
ROUTED = {"cheap": (20000, 0.005), "capable": (8000, 0.01)}
REF_DAYS = 14


def _monitor(
    seed: int,
    test: SequentialDropTest,
    days: int = 60,
    drop: tuple[tuple[str, str], float, float] | None = None,
) -> list[tuple[float, str | None, str | None, str | None]]:
    """Hourly data, hourly evaluation of tiers × signals × windows; returns alarms."""
    rng = np.random.default_rng(seed)
    c = OutcomeCounts(reference=(T0, T0 + REF_DAYS * DAY))
    alarms = []
    for h in range(days * 24):
        ts = T0 + h * 3600 + 1800
        for (tier, signal), (per_day, p) in SPEC.items():
            if drop is not None and (tier, signal) == drop[0] and h >= drop[1] * 24:
                p -= drop[2]
            n = rng.poisson(per_day / 24)
            c.update_counts(tier, 0, signal, ts, good=rng.binomial(n, p), n=n)
        for tier, (per_day, q) in ROUTED.items():
            n = rng.poisson(per_day / 24)
            c.update_routed(tier, 0, ts, count=n)
            for _ in range(rng.binomial(n, q)):
                c.update_contact(tier, 0, ts)
        if h >= REF_DAYS * 24:
            now = T0 + (h + 1) * 3600 - 1
            for r in test.evaluate(c, now, include_aggregate=False):
                if r.alarm:
                    alarms.append((h / 24, r.tier, r.signal, r.window))
    return alarms


@pytest.mark.parametrize(("budget", "floor", "replicates"), [(1.0, 0.05, 3), (30.0, 0.0, 2)])
def test_no_change_60_days_continuous_evaluation_within_false_alarm_budget(
    budget: float, floor: float, replicates: int
) -> None:
    # 2 tiers × 3 signals (thumbs, rating, support_contact) × 3 windows, every hour
    test = SequentialDropTest.for_family(2, 3, 3, floor=floor, false_alarms_per_period=budget)
    false_alarms = sum(len(_monitor(seed, test)) for seed in range(replicates))
    periods = (60 - REF_DAYS) / 30
    assert false_alarms <= budget * periods * replicates


def test_drop_of_configured_size_is_detected_and_localized() -> None:
    target_drop = 0.10
    test = SequentialDropTest.for_family(2, 3, 3, floor=0.05)
    alarms = _monitor(11, test, days=50, drop=(("cheap", "thumbs"), 40, target_drop))
    assert alarms, "the drop was not detected"
    first = min(a[0] for a in alarms)
    assert 40 <= first <= 42  # detected within two days of the onset
    assert {(a[1], a[2]) for a in alarms} == {("cheap", "thumbs")}
    # the published MDD says a week of cheap thumbs suffices (not starving), one day barely not
    n_ref = REF_DAYS * 400
    assert test.mdd(7 * 400, 0.85, n_reference=n_ref) < 0.6 * target_drop
    assert test.mdd(400, 0.85, n_reference=n_ref) > target_drop
    assert not test.starving(400, 0.85, target_drop, within_days=7, n_reference=n_ref)


def test_aggregate_masks_a_tier_drop() -> None:
    test = SequentialDropTest.for_family(2, 1, 1, floor=0.05)
    c = OutcomeCounts(reference=(T0, T0 + 14 * DAY))
    rng = np.random.default_rng(4)
    for day in range(21):
        ts = T0 + day * DAY + 100
        p_cheap = 0.9 if day < 14 else 0.74  # cheap tier drops by 0.16
        p_capable = 0.9 if day < 14 else 0.93  # capable improves a little
        c.update_counts("cheap", 0, "thumbs", ts, rng.binomial(300, p_cheap), 300)
        c.update_counts("capable", 0, "thumbs", ts, rng.binomial(1700, p_capable), 1700)
    results = test.evaluate(c, T0 + 21 * DAY - 1, windows={"7d": 7 * DAY})
    agg = next(r for r in results if r.tier is None)
    tiers = [r for r in results if r.tier is not None]
    assert not agg.alarm and agg.drop < agg.floor
    assert masked_tiers(agg, tiers) == ["cheap"]
    # configured reference rates replace the reference period
    configured = test.evaluate(
        c,
        T0 + 21 * DAY - 1,
        windows={"7d": 7 * DAY},
        reference_rates={("cheap", "thumbs"): 0.75, ("capable", "thumbs"): 0.9},
        include_aggregate=False,
        with_mdd=True,
    )
    by_tier = {r.tier: r for r in configured}
    assert not by_tier["cheap"].alarm and by_tier["cheap"].n_eff_reference is None
    assert by_tier["cheap"].mdd is not None and by_tier["cheap"].mdd < 0.05


@given(st.lists(st.floats(0.0, 1.0), min_size=1, max_size=12),
       st.lists(st.one_of(st.floats(-0.5, 1.5), st.sampled_from([0.0, 0.5, 1.0])),
                min_size=1, max_size=30))
@settings(max_examples=300, deadline=None)
def test_the_band_of_one_score_is_the_band_of_the_batch(cuts: list[float],
                                                         scores: list[float]) -> None:
    """``band`` (feedback, one at a time) agrees with ``bands`` (routing batches) on any
    monotone edges, ties and scores on an edge included."""
    from pipeline.core.quality_watch import QualityWatch
    from pipeline.core.router_state import MonitorConfig

    watch = QualityWatch("r", MonitorConfig(), start=0.0)
    edges = np.maximum.accumulate(np.asarray([0.0, *sorted(cuts), 1.0]))
    watch.band_edges = edges
    scores += [float(e) for e in edges]
    want = watch.bands(np.asarray(scores)).tolist()
    assert [watch.band(s) for s in scores] == want
