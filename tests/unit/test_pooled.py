"""The pooled bad-outcome test (pipeline/core/pooled.py): oracle, properties, bounds."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import special, stats

from pipeline.core.pooled import DEFAULT_RATIOS, RatioMixture, step_log_likelihood


def brute_force_log_sr(xs: list[float], lams: list[float], ratios: tuple[float, ...]) -> float:
    """ln of the mixture Shiryaev–Roberts statistic from its definition:
    ``R_c,t = Σ_{k≤t} Π_{j=k..t} L_c,j`` (change at any earlier step), averaged over ratios."""
    t = len(xs)
    comps = []
    for rho in ratios:
        ll = np.array([x * math.log(rho) - (rho - 1) * lam for x, lam in zip(xs, lams,
                                                                             strict=True)])
        tails = [ll[k:].sum() for k in range(t)]  # log Π_{j=k..t} L_j
        comps.append(special.logsumexp(tails))
    return float(special.logsumexp(comps) - math.log(len(ratios)))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 12), st.floats(0.05, 8.0)), min_size=1, max_size=25))
def test_statistic_matches_its_definition(steps: list[tuple[int, float]]) -> None:
    m = RatioMixture(threshold=1e6)  # cap far away: the recursion is the definition
    for b, (x, lam) in enumerate(steps):
        m.update(float(x), lam, bucket=b)
    xs, lams = [float(x) for x, _ in steps], [lam for _, lam in steps]
    assert m.statistic == pytest.approx(brute_force_log_sr(xs, lams, DEFAULT_RATIOS), abs=1e-9)


@settings(max_examples=200, deadline=None)
@given(st.floats(0.0, 1.0), st.floats(0.0, 1.0), st.sampled_from(DEFAULT_RATIOS))
def test_step_is_a_supermartingale_factor_for_outcomes_in_unit_interval(
        q: float, slack: float, rho: float) -> None:
    """A Bernoulli(q) outcome (the extreme case of a mean-q outcome in [0, 1]) tested
    against any q0 >= q: E[exp(ℓ_ρ)] <= 1, computed exactly."""
    q0 = q + slack * (1 - q)
    ll = step_log_likelihood(np.array([0.0, 1.0]), np.array([q0, q0]), np.array([rho]))
    mean = (1 - q) * math.exp(float(ll[0])) + q * math.exp(float(ll[1]))
    assert mean <= 1.0 + 1e-12


def test_graded_outcomes_are_covered_too() -> None:
    """Beta-distributed bad mass (a shadow agreement), numerically integrated."""
    for a, b in [(2.0, 8.0), (0.5, 0.5), (5.0, 1.0)]:
        q0 = a / (a + b)
        for rho in DEFAULT_RATIOS:
            e = stats.beta(a, b).expect(lambda y, r=rho: r ** y)
            assert e * math.exp(-(rho - 1) * q0) <= 1.0 + 1e-9


@pytest.mark.parametrize("kind", ["poisson", "binomial"])
def test_false_alarm_rate_within_doob_bound(kind: str) -> None:
    """Null streams: P(cross ln A within m steps) <= m / A."""
    rng = np.random.default_rng(14)
    m, reps, a = 100, 200, 2000.0      # bound: 0.05
    alarms = 0
    for _ in range(reps):
        test = RatioMixture(threshold=math.log(a))
        for b in range(m):
            if kind == "poisson":
                lam = float(rng.uniform(0.5, 6.0))
                x = float(rng.poisson(lam))
            else:  # 30 votes at a 10 % bad rate, tested against the true rate
                lam, x = 3.0, float(rng.binomial(30, 0.1))
            if test.update(x, lam, bucket=b):
                alarms += 1
                break
    upper = stats.beta.ppf(0.95, alarms + 1, reps - alarms)  # Clopper-Pearson upper
    assert alarms / reps <= m / a
    assert upper < 3 * m / a


def test_detects_a_doubling_and_estimates_it() -> None:
    rng = np.random.default_rng(3)
    test = RatioMixture(threshold=11.0)
    for b in range(100):
        test.update(float(rng.poisson(3.0)), 3.0, bucket=b)
    assert not test.alarm
    hit = None
    for b in range(100, 200):
        if test.update(float(rng.poisson(6.0)), 3.0, bucket=b):
            hit = b
            break
    assert hit is not None and hit - 100 < 24
    assert test.since is not None and 90 <= test.since <= 105
    assert 1.5 < test.ratio < 3.0


def test_alarm_clears_once_the_rise_is_over() -> None:
    test = RatioMixture(threshold=8.0)
    for b in range(30):
        test.update(12.0, 3.0, bucket=b)
    assert test.alarm
    for b in range(30, 80):
        test.update(3.0 * 0.8, 3.0, bucket=b)
    assert not test.alarm


def test_empty_steps_change_nothing_and_bad_input_raises() -> None:
    test = RatioMixture(threshold=5.0)
    test.update(4.0, 1.0, bucket=0)
    before = test.statistic
    test.update(0.0, 0.0, bucket=1)
    assert test.statistic == before
    with pytest.raises(ValueError):
        test.update(-1.0, 1.0, bucket=2)
    with pytest.raises(ValueError):
        test.update(1.0, math.nan, bucket=2)
    with pytest.raises(ValueError):
        RatioMixture(threshold=0.0)
    with pytest.raises(ValueError):
        RatioMixture(threshold=5.0, ratios=(1.0, 2.0))
