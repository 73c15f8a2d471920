"""Oracle and behaviour tests of pipeline.core.drift."""

from __future__ import annotations

import itertools
import math
import zlib
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from pipeline.core.drift import (
    DriftTest,
    calibrated_alpha,
    effective_n,
    expected_mixture_probs,
    expected_tier_probs,
    ks_distance,
    ks_pvalue,
    psi,
    psi_pvalue,
    tier_mass,
    tier_probability,
)
from pipeline.core.histogram import QuantileBins, regroup
from pipeline.schemas import Thresholds

Sampler = Callable[[np.random.Generator, int], np.ndarray]


def _point_masses(rng: np.random.Generator, n: int) -> np.ndarray:
    x = rng.beta(2, 5, n)
    u = rng.uniform(size=n)
    x[u < 0.2] = 0.0
    x[u > 0.9] = 1.0
    return x


DISTRIBUTIONS: dict[str, Sampler] = {
    "normal": lambda r, n: r.normal(size=n),
    "beta": lambda r, n: r.beta(2, 5, n),
    "rounded_ties": lambda r, n: np.round(r.beta(2, 5, n), 2),
    "point_masses": _point_masses,
    "discrete": lambda r, n: r.poisson(3, n).astype(float),
}

SHIFTS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "same": lambda x: x,
    "shift": lambda x: x + 0.05,
    "scale": lambda x: 1.3 * x,
}


def fine_counts(qb: QuantileBins, y: np.ndarray) -> np.ndarray:
    return np.bincount(qb.index(y), minlength=qb.n_bins)


# -- KS oracle --------------------------------------------------------------------------------


@pytest.mark.parametrize("n_bins", [200, 20])
@pytest.mark.parametrize("shift", sorted(SHIFTS))
@pytest.mark.parametrize("dist", sorted(DISTRIBUTIONS))
def test_binned_ks_within_documented_bound(dist, shift, n_bins):
    rng = np.random.default_rng(zlib.crc32(f"{dist}/{shift}/{n_bins}".encode()))
    x = DISTRIBUTIONS[dist](rng, 4_000)
    y = SHIFTS[shift](DISTRIBUTIONS[dist](rng, 3_000))
    qb = QuantileBins.from_sample(x, n_bins=n_bins)
    c = fine_counts(qb, y)
    kd = ks_distance(qb.baseline_probs, c)
    d_raw = stats.ks_2samp(x, y, method="asymp").statistic
    slack = max(qb.baseline_probs.max(), (c / c.sum()).max())
    assert kd.distance <= d_raw + 1e-12
    assert d_raw <= kd.upper_bound + 1e-12
    assert kd.upper_bound <= kd.distance + slack + 1e-12


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # scipy's asymp p-value at n = 1
@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(0, 30), min_size=1, max_size=80),
    st.lists(st.integers(-5, 35), min_size=1, max_size=80),
    st.integers(1, 12),
)
def test_binned_ks_bound_property(xs, ys, n_bins):
    x, y = np.asarray(xs, float), np.asarray(ys, float)
    qb = QuantileBins.from_sample(x, n_bins=n_bins)
    kd = ks_distance(qb.baseline_probs, fine_counts(qb, y))
    d_raw = stats.ks_2samp(x, y, method="asymp").statistic
    assert kd.distance - 1e-12 <= d_raw <= kd.upper_bound + 1e-12


def test_binned_ks_pvalue_is_conservative_vs_raw():
    rng = np.random.default_rng(5)
    for dist in ("normal", "beta", "rounded_ties"):
        x = DISTRIBUTIONS[dist](rng, 20_000)
        for delta in (0.0, 0.02, 0.05):
            y = DISTRIBUTIONS[dist](rng, 5_000) + delta
            qb = QuantileBins.from_sample(x, 200)
            kd = ks_distance(qb.baseline_probs, fine_counts(qb, y))
            raw = stats.ks_2samp(x, y, method="asymp")
            p_binned = ks_pvalue(kd.distance, y.size, qb.n)
            assert p_binned >= raw.pvalue * (1 - 1e-9)


# -- PSI oracle -------------------------------------------------------------------------------


def direct_psi(x: np.ndarray, y: np.ndarray, cut_values: np.ndarray, a: float) -> float:
    """PSI computed straight from raw samples with the given coarse cut points."""
    px = np.bincount(np.searchsorted(cut_values, x, side="right"), minlength=cut_values.size + 1)
    cy = np.bincount(np.searchsorted(cut_values, y, side="right"), minlength=cut_values.size + 1)
    p = px / px.sum()
    k = p.size
    q = (cy + a * k * p) / (cy.sum() + a * k)
    with np.errstate(divide="ignore"):
        return float(np.sum((q - p) * np.log(q / p)))


@pytest.mark.parametrize("smoothing", [0.5, 0.0])
@pytest.mark.parametrize("shift", sorted(SHIFTS))
@pytest.mark.parametrize("dist", sorted(DISTRIBUTIONS))
def test_psi_matches_direct_numpy(dist, shift, smoothing):
    rng = np.random.default_rng(zlib.crc32(f"{dist}/{shift}".encode()))
    x = DISTRIBUTIONS[dist](rng, 5_000)
    y = SHIFTS[shift](DISTRIBUTIONS[dist](rng, 4_000))
    qb = QuantileBins.from_sample(x, 200)
    splits = qb.coarse(10)
    cut_values = qb.edges[splits[1:-1] - 1]  # interior edge at the start of each group
    c = fine_counts(qb, y)
    ours = psi(regroup(qb.baseline_probs, splits), regroup(c, splits), smoothing=smoothing)
    expected = direct_psi(x, y, cut_values, smoothing)
    if smoothing == 0 and np.any(regroup(c, splits) == 0):
        assert ours > 1.0  # an empty observed bin is floored, not infinite
    else:
        assert ours == pytest.approx(expected, rel=1e-9, abs=1e-12)
    verdict = DriftTest("psi", coarse_bins=10, smoothing=smoothing).evaluate(
        qb.baseline_probs, c, n_baseline=qb.n
    )
    assert verdict.effect == pytest.approx(ours, rel=1e-12, abs=1e-15)


def test_psi_smoothing_only_lowers_and_stays_finite():
    rng = np.random.default_rng(6)
    p = np.full(10, 0.1)
    for _ in range(200):
        c = rng.multinomial(rng.integers(20, 500), rng.dirichlet(np.ones(10)))
        if np.all(c > 0):
            assert psi(p, c, smoothing=0.5) <= psi(p, c, smoothing=0.0) + 1e-12
        assert math.isfinite(psi(p, c))
    assert psi(p, np.zeros(10)) == 0.0


# -- p-values ---------------------------------------------------------------------------------


def test_ks_pvalue_monotone():
    ns = [1, 10, 100, 500, 999, 1000, 1001, 1500, 1999, 2000, 2001, 5000, 10**5, 10**7]
    for d in (0.001, 0.01, 0.03, 0.05, 0.1, 0.3):
        ps = [ks_pvalue(d, n) for n in ns]
        assert all(a >= b for a, b in itertools.pairwise(ps)), (d, ps)
    for n in (50, 1000, 1500, 10**6):
        ps = [ks_pvalue(d, n) for d in np.linspace(0, 1, 41)]
        assert all(a >= b for a, b in itertools.pairwise(ps)), (n, ps)
    # a finite baseline lowers the effective n and so raises the p-value
    assert ks_pvalue(0.02, 10_000, 5_000) > ks_pvalue(0.02, 10_000)
    assert effective_n(10_000, 5_000) == pytest.approx(1 / (1 / 10_000 + 1 / 5_000))


@settings(max_examples=200, deadline=None)
@given(st.floats(0.0, 1.0), st.integers(1, 1000))
def test_ks_pvalue_exact_range_is_scipy_kstwo(d: float, n: int) -> None:
    """Oracle: up to n = 1000 the p-value is scipy's public ``kstwo.sf``, to the last bit."""
    assert ks_pvalue(d, n) == (1.0 if d == 0 else float(stats.kstwo.sf(d, n)))


def test_ks_pvalue_asymptotic_is_conservative_vs_kstwo():
    for n in (1001, 3000, 50_000):
        for p in (1e-2, 1e-4, 1e-7):
            d = float(stats.kstwo.isf(p, n))
            assert ks_pvalue(d, n) >= p * (1 - 1e-6)
            assert ks_pvalue(d, n) <= p * 1.2


def test_psi_pvalue_monotone():
    vals = np.linspace(0, 0.05, 26)
    for n in (100, 10_000):
        ps = [psi_pvalue(v, n, 10) for v in vals]
        assert all(a >= b for a, b in itertools.pairwise(ps))
    ps = [psi_pvalue(0.002, n, 10, m=50_000) for n in (10, 100, 1_000, 10_000, 10**6)]
    assert all(a >= b for a, b in itertools.pairwise(ps))


@pytest.mark.parametrize("statistic", ["ks", "psi"])
@pytest.mark.parametrize("m", [None, 20_000])
def test_pvalues_valid_under_null(statistic, m):
    """Rejection rate at 5 % and 1 % stays within binomial noise of the level (or below)."""
    rng = np.random.default_rng(7)
    reps, n = 1_500, 2_000
    truth = np.full(200, 1 / 200)
    test = DriftTest(statistic, alpha=0.05, effect_floor=0.0)
    ps = []
    for _ in range(reps):
        if m is None:
            probs, nb = truth, None
        else:
            probs, nb = rng.multinomial(m, truth) / m, m
        v = test.evaluate(probs, rng.multinomial(n, truth), n_baseline=nb)
        ps.append(v.p_value)
    ps_arr = np.asarray(ps)
    for level in (0.05, 0.01):
        rate = float(np.mean(ps_arr <= level))
        assert rate <= level + 3 * math.sqrt(level * (1 - level) / reps), (level, rate)


# -- two gates --------------------------------------------------------------------------------


def _shifted_probs(qb: QuantileBins, delta: float) -> np.ndarray:
    """True fine-bin probabilities of N(delta, 1) for bins built on N(0, 1) quantiles."""
    cdf = stats.norm.cdf(qb.edges - delta)
    return np.diff(np.concatenate([[0.0], cdf, [1.0]]))


@pytest.mark.parametrize("statistic", ["ks", "psi"])
def test_huge_sample_tiny_shift_does_not_alarm(statistic):
    qb = QuantileBins(stats.norm.ppf(np.arange(1, 200) / 200), np.ones(200), -5.0, 5.0, n=None)
    rng = np.random.default_rng(8)
    counts = rng.multinomial(10**8, _shifted_probs(qb, 0.02))
    v = DriftTest(statistic, alpha=1e-6).evaluate(qb.baseline_probs, counts)
    assert v.significant  # the test sees the shift ...
    assert not v.passes_effect_floor  # ... but it is too small to matter
    assert not v.alarm and v.verdict == "ok"


@pytest.mark.parametrize("statistic", ["ks", "psi"])
def test_tiny_sample_gives_no_verdict(statistic):
    probs = np.full(200, 1 / 200)
    counts = np.zeros(200)
    counts[:3] = [50, 40, 9]  # n = 99, all in the bottom 1.5 %: an enormous effect
    v = DriftTest(statistic, alpha=0.05, min_n=100).evaluate(probs, counts)
    assert v.passes_effect_floor and v.p_value < 1e-20
    assert v.insufficient and not v.significant and not v.alarm
    assert v.verdict == "insufficient"
    counts[3] = 1  # n = 100 reaches min_n
    assert DriftTest(statistic, alpha=0.05, min_n=100).evaluate(probs, counts).verdict == "drift"


def test_verdict_to_dict_is_plain():
    v = DriftTest("ks").evaluate(np.full(10, 0.1), np.arange(10) * 30)
    d = v.to_dict()
    assert d["verdict"] == v.verdict and d["alarm"] == v.alarm
    assert all(isinstance(val, (str, int, float, bool, type(None))) for val in d.values())


def test_calibrated_alpha():
    a = calibrated_alpha(1, 30 * 86_400, 3_600, n_tests=6)
    assert a == pytest.approx(1 / (720 * 6))
    # a period that is not a multiple of the interval rounds the evaluation count up
    assert calibrated_alpha(1, 90, 60, 1) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        calibrated_alpha(10, 60, 60, 1)


# -- expected distributions per tier ----------------------------------------------------------


@pytest.fixture(scope="module")
def beta_bins() -> tuple[QuantileBins, np.ndarray]:
    x = np.random.default_rng(9).beta(2, 5, 50_000)
    return QuantileBins.from_sample(x, 200), x


THRESHOLDS = [
    Thresholds(cheap_above=0.35, capable_below=0.2, exploration_rate=0.1),
    Thresholds(cheap_above=0.3, capable_below=0.3, exploration_rate=0.0),
    Thresholds(cheap_above=1.0, capable_below=0.0, exploration_rate=0.5),  # all band
    Thresholds(cheap_above=0.0, capable_below=0.0),  # all cheap
]


@pytest.mark.parametrize("th", THRESHOLDS)
def test_tier_probs_sum_and_complement(beta_bins, th):
    qb, _ = beta_bins
    p, e = qb.baseline_probs, qb.fine_edges
    cheap = expected_tier_probs(p, e, th, "cheap", normalize=False)
    capable = expected_tier_probs(p, e, th, "capable", normalize=False)
    np.testing.assert_allclose(cheap + capable, p, atol=1e-15)
    assert tier_mass(p, e, th, "cheap") + tier_mass(p, e, th, "capable") == pytest.approx(1.0)
    for tier, joint in (("cheap", cheap), ("capable", capable)):
        if joint.sum() > 0:
            assert expected_tier_probs(p, e, th, tier).sum() == pytest.approx(1.0)
        else:
            with pytest.raises(ValueError, match="no baseline mass"):
                expected_tier_probs(p, e, th, tier)


def test_tier_probs_exact_when_thresholds_are_edges(beta_bins):
    qb, x = beta_bins
    th = Thresholds(
        cheap_above=float(qb.edges[120]), capable_below=float(qb.edges[60]), exploration_rate=0.2
    )
    for tier in ("cheap", "capable"):
        expected = expected_tier_probs(qb.baseline_probs, qb.fine_edges, th, tier, normalize=False)
        w = tier_probability(x, th, tier)
        direct = np.bincount(qb.index(x), weights=w, minlength=qb.n_bins) / x.size
        np.testing.assert_allclose(expected, direct, atol=1e-12)


def test_tier_probs_interpolate_inside_a_bin(beta_bins):
    qb, x = beta_bins
    th = Thresholds(cheap_above=0.4321, capable_below=0.1234, exploration_rate=0.3)
    for tier in ("cheap", "capable"):
        expected = expected_tier_probs(qb.baseline_probs, qb.fine_edges, th, tier, normalize=False)
        w = tier_probability(x, th, tier)
        direct = np.bincount(qb.index(x), weights=w, minlength=qb.n_bins) / x.size
        # only the bins holding a threshold differ, by a fraction of one bin's mass
        diff = np.abs(expected - direct)
        assert np.count_nonzero(diff > 1e-12) <= 2
        assert diff.max() < 0.5 / qb.n_bins


def _route(rng: np.random.Generator, scores: np.ndarray, th: Thresholds) -> np.ndarray:
    return rng.uniform(size=scores.size) < tier_probability(scores, th, "cheap")


@pytest.mark.parametrize("tier", ["cheap", "capable"])
def test_moved_thresholds_are_not_drift(beta_bins, tier):
    qb, _ = beta_bins
    rng = np.random.default_rng(10)
    before = Thresholds(cheap_above=0.35, capable_below=0.2, exploration_rate=0.1)
    after = Thresholds(cheap_above=0.42, capable_below=0.25, exploration_rate=0.15)
    counts = np.zeros(qb.n_bins)
    by_thresholds: dict[Thresholds, int] = {}
    for th, n in ((before, 150_000), (after, 100_000)):
        s = rng.beta(2, 5, n)  # same score distribution throughout: no drift
        sel = _route(rng, s, th) == (tier == "cheap")
        counts += np.bincount(qb.index(s[sel]), minlength=qb.n_bins)
        by_thresholds[th] = int(sel.sum())
    p, e = qb.baseline_probs, qb.fine_edges
    expected = expected_mixture_probs(p, e, by_thresholds, tier)
    m = qb.n * min(tier_mass(p, e, th, tier) for th in by_thresholds)
    alpha = calibrated_alpha(1, 30 * 86_400, 3_600, 6)
    stale = expected_tier_probs(p, e, before, tier)
    for stat in ("ks", "psi"):
        v = DriftTest(stat, alpha=alpha).evaluate(expected, counts, n_baseline=round(m))
        assert v.verdict == "ok", v
        assert v.p_value > 1e-3
        # against the old thresholds only, the same traffic would be a significant change
        w = DriftTest(stat, alpha=alpha).evaluate(stale, counts, n_baseline=round(m))
        assert w.significant and w.p_value < 1e-12
        assert w.effect > 5 * v.effect
    # and a real drift in the tier's scores is still seen against the mixture
    s = rng.beta(2, 5, 100_000) + 0.05
    sel = _route(rng, s, after) == (tier == "cheap")
    drifted = np.bincount(qb.index(s[sel]), minlength=qb.n_bins)
    v = DriftTest("ks", alpha=alpha).evaluate(
        expected_tier_probs(p, e, after, tier), drifted, n_baseline=round(m)
    )
    assert v.alarm


def test_mixture_of_one_is_the_tier_truncation(beta_bins):
    qb, _ = beta_bins
    th = THRESHOLDS[0]
    p, e = qb.baseline_probs, qb.fine_edges
    np.testing.assert_allclose(
        expected_mixture_probs(p, e, [(th.model_dump(exclude_none=True), 7)], "cheap"),
        expected_tier_probs(p, e, th, "cheap"),
    )
    with pytest.raises(ValueError):
        expected_mixture_probs(p, e, {th: 0}, "cheap")
    with pytest.raises(ValueError):
        Thresholds(cheap_above=0.2, capable_below=0.3)
    with pytest.raises(ValueError):
        tier_probability([0.5], th, "medium")
