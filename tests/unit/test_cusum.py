"""The contact CUSUM and its delay model (drift's sequential test: test_sequential.py)."""

from __future__ import annotations

import math
import pickle

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.core.cusum import DelayProfile, PoissonCusum
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
               pmf: np.ndarray) -> DelayProfile:
    """A reference period observed until its last hour, so recent requests' contacts are
    still on their way."""
    profile = DelayProfile(max_delay=pmf.size)
    for d in range(hours):
        n = rng.poisson(per_hour)
        profile.add_exposure("cheap", d, n)
        for a in rng.choice(pmf.size, size=rng.binomial(n, rate), p=pmf):
            if d + a <= hours - 1:
                profile.add_contact("cheap", d, d + int(a))
    return profile


def test_delay_profile_corrects_for_contacts_still_on_their_way() -> None:
    rng = np.random.default_rng(3)
    a = np.arange(48)
    true_pmf = np.exp(-0.5 * ((np.log(a + 0.5) - np.log(8)) / 0.9) ** 2) / (a + 0.5)
    true_pmf /= true_pmf.sum()
    rate, hours = 0.02, 60  # a short reference: most requests still have contacts to come
    estimates, naive, tv, tv_naive = [], [], [], []
    for _ in range(20):
        profile = _reference(rng, hours, 1500.0, rate, true_pmf)
        model = profile.model(now_bucket=hours - 1)
        assert model is not None
        tv.append(0.5 * np.abs(model.pmf - true_pmf).sum())
        tv_naive.append(0.5 * np.abs(profile.delays / profile.delays.sum() - true_pmf).sum())
        estimates.append(model.rate("cheap"))
        exposure = sum(profile.exposure["cheap"].values())
        naive.append(profile.contacts["cheap"] / exposure)
    # the upper bound covers the true rate most of the time and is close to it;
    # contacts over all requests (ignoring the ones still to come) reads low
    assert np.mean(np.array(estimates) >= rate) >= 0.7
    assert abs(np.median(estimates) / rate - 1) < 0.1
    assert np.median(naive) < 0.97 * rate
    # ~1,500 contacts in 48 bins: sampling noise alone is a total variation of ~0.07;
    # the delays as counted (short ones over-represented) are further off
    assert np.mean(tv) < 0.13
    assert np.mean(tv) < np.mean(tv_naive)


def test_expected_count_is_the_convolution_of_requests_and_delays() -> None:
    profile = DelayProfile(max_delay=3)
    for d in range(10):
        profile.add_exposure("k", d, 100)
    for d in range(5):
        profile.add_contact("k", d, d)
        profile.add_contact("k", d, d + 2)
    model = profile.model(now_bucket=30)
    assert model is not None
    assert model.pmf.tolist() == [0.5, 0.0, 0.5]
    recent = np.array([10.0, 20.0, 30.0])
    assert math.isclose(model.expected("k", recent),
                        model.rate("k") * (0.5 * 10 + 0.5 * 30))


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
