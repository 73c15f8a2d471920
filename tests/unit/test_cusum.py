"""The contact CUSUM and its delay model (drift's sequential test: test_sequential.py)."""

from __future__ import annotations

import math
import pickle

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.core.cusum import PoissonCusum
from pipeline.core.lagged import DelayDistribution, LaggedCounts
from pipeline.core.quality import OutcomeCounts


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
