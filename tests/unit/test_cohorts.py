"""Cohort curves, the subject ledger and delayed_outcome_gap (pipeline.core.cohorts,
subjects, delayed): oracle tests against numpy/scipy, hypothesis properties, censoring,
and a null simulation that measures the false findings against their budget."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from pipeline.core.cohorts import (
    DAY,
    CohortConfig,
    CohortCurves,
    compare,
    hajek,
    week_of,
    week_start,
)
from pipeline.core.delayed import DelayedConfig, DelayedOutcomes
from pipeline.core.subjects import SubjectLedger, exposure_bucket

MONDAY = week_start(week_of(1767225600.0))  # the Monday of 2026-01-01's week


def _cell(w: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.array([w.sum(), (w * y).sum(), (w * w).sum(), (w * w * y).sum()])


# -- oracles ----------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(5))
def test_compare_is_the_pooled_two_proportion_test_for_unit_weights(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n1, n0 = rng.integers(50, 3000, 2)
    y1, y0 = rng.random(n1) < 0.15, rng.random(n0) < 0.12
    c = compare(_cell(np.ones(n1), y1), _cell(np.ones(n0), y0))
    assert c is not None
    # z² is the chi-square statistic of the 2×2 table without continuity correction
    table = np.array([[y1.sum(), n1 - y1.sum()], [y0.sum(), n0 - y0.sum()]])
    chi2 = stats.chi2_contingency(table, correction=False)[0]
    assert c.z**2 == pytest.approx(chi2, rel=1e-9)
    assert c.p_value == pytest.approx(stats.norm.sf(c.z), rel=1e-12)
    assert c.gap == pytest.approx(y1.mean() - y0.mean(), abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_weighted_compare_and_hajek_against_numpy(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    w1, w0 = rng.uniform(0.1, 5, 400), rng.uniform(0.1, 5, 900)
    y1, y0 = (rng.random(400) < 0.2).astype(float), (rng.random(900) < 0.2).astype(float)
    c = compare(_cell(w1, y1), _cell(w0, y0))
    assert c is not None
    r1, r0 = np.average(y1, weights=w1), np.average(y0, weights=w0)
    p = (np.dot(w1, y1) + np.dot(w0, y0)) / (w1.sum() + w0.sum())
    se = math.sqrt(p * (1 - p) * ((w1**2).sum() / w1.sum() ** 2 + (w0**2).sum() / w0.sum() ** 2))
    assert c.rate == pytest.approx(r1) and c.reference_rate == pytest.approx(r0)
    assert c.z == pytest.approx((r1 - r0) / se)
    assert c.n == pytest.approx(w1.sum() ** 2 / (w1**2).sum())  # Kish's effective n
    rate, sd = hajek(_cell(w1, y1))  # type: ignore[misc]
    assert rate == pytest.approx(r1)
    assert sd == pytest.approx(math.sqrt(np.sum(w1**2 * (y1 - r1) ** 2)) / w1.sum())


def test_ipw_contrast_recovers_a_randomized_effect() -> None:
    """In-band exploration draws cheap with probability e: the Hajek contrast equals
    numpy's weighted means and is within its interval of the true effect."""
    rng = np.random.default_rng(3)
    e, n = 0.2, 40_000
    cheap = rng.random(n) < e
    bad = rng.random(n) < np.where(cheap, 0.18, 0.10)
    curves = CohortCurves()
    for is_cheap, b in zip(cheap, bad, strict=True):
        curves.observe_outcome("survey", decision_ts=MONDAY, ts=MONDAY + 90 * DAY,
                               tier="cheap" if is_cheap else "capable", bad=float(b),
                               ipw=1 / e if is_cheap else 1 / (1 - e))
    got = curves.ipw_contrast("survey", "cheap", "capable")
    assert got is not None
    assert got["cheap"] == pytest.approx(bad[cheap].mean())
    assert got["capable"] == pytest.approx(bad[~cheap].mean())
    assert abs(got["effect"] - 0.08) < 3 * got["se"]


# -- properties -------------------------------------------------------------------------------

outcomes = st.lists(st.tuples(st.integers(0, 20), st.floats(0, 150), st.booleans(),
                              st.sampled_from(["cheap", "capable"]), st.floats(0.1, 3)),
                    min_size=1, max_size=60)


@settings(max_examples=60, deadline=None)
@given(rows=outcomes, order=st.randoms(use_true_random=False))
def test_curves_do_not_depend_on_arrival_order(rows: list, order: object) -> None:
    def fed(rs: list) -> CohortCurves:
        c = CohortCurves(CohortConfig(max_age_days=100))
        for day, delay, bad, tier, w in rs:
            t = MONDAY + day * DAY
            c.observe_outcome("survey", decision_ts=t, ts=t + delay * DAY, tier=tier,
                              bad=float(bad), weight=w)
        return c

    a = fed(rows)
    shuffled = list(rows)
    order.shuffle(shuffled)  # type: ignore[attr-defined]
    b = fed(shuffled)
    assert a.cells.keys() == b.cells.keys()
    for k in a.cells:
        np.testing.assert_allclose(a.cells[k], b.cells[k], rtol=1e-12, atol=1e-12)
    assert a.too_old == b.too_old


@settings(max_examples=60, deadline=None)
@given(rows=outcomes, age=st.integers(0, 100), late=st.lists(st.floats(1, 60), max_size=20))
def test_totals_at_an_age_ignore_outcomes_that_came_later(rows: list, age: int,
                                                         late: list) -> None:
    """Censoring: outcomes arriving after ``age`` days never change the comparison at
    ``age`` (what a still-maturing cohort has not seen yet is left out of both sides)."""
    c = CohortCurves(CohortConfig(max_age_days=200))
    for day, delay, bad, tier, w in rows:
        t = MONDAY + day * DAY
        c.observe_outcome("survey", decision_ts=t, ts=t + delay * DAY, tier=tier,
                          bad=float(bad), weight=w)
    weeks = c.weeks("survey")
    before = c.totals("survey", weeks, age)
    for extra in late:
        t = MONDAY
        c.observe_outcome("survey", decision_ts=t, ts=t + (age + 1 + extra) * DAY,
                          tier="cheap", bad=1.0)
    np.testing.assert_allclose(c.totals("survey", weeks, age), before)
    # and the totals are the brute-force sums
    def age_of(r: tuple) -> int:
        t = MONDAY + r[0] * DAY
        return math.floor(((t + r[1] * DAY) - t) / DAY)

    w = np.array([r[4] for r in rows if age_of(r) <= age])
    y = np.array([float(r[2]) for r in rows if age_of(r) <= age])
    np.testing.assert_allclose(before, _cell(w, y) if len(w) else np.zeros(4), atol=1e-9)


@settings(max_examples=40, deadline=None)
@given(tiers=st.lists(st.tuples(st.floats(0, 170), st.sampled_from(["cheap", "capable"])),
                      min_size=1, max_size=30))
def test_subject_attribution_spreads_one_outcome_over_the_lookback(tiers: list) -> None:
    ledger = SubjectLedger(lookback_s=180 * DAY, max_interactions=64)
    for day, tier in tiers:
        ledger.observe("subj-0123456789abcdef", MONDAY + day * DAY, tier, 1.0, False)
    att = ledger.attribute("subj-0123456789abcdef", MONDAY + 175 * DAY)
    assert att is not None
    inside = [t for d, t in tiers if d > -5]
    assert sum(i.weight for i in att.interactions) == pytest.approx(1.0)
    assert att.share_cheap == pytest.approx(inside.count("cheap") / len(inside))
    assert att.bucket == exposure_bucket(att.share_cheap)
    assert [i.ts for i in att.interactions] == sorted(i.ts for i in att.interactions)


# -- censoring and the gap test ---------------------------------------------------------------

def _fill(c: CohortCurves, week: int, n: int, rng: np.random.Generator, p_bad: float, *,
          early_bad: float | None = None) -> None:
    """``n`` surveys of week ``week``'s requests, 84-96 days later; with ``early_bad``
    the first responders (delay < 88 days) are bad that often instead."""
    t0 = week_start(week)
    for _ in range(n):
        t = t0 + rng.uniform(0, 7 * DAY)
        delay = rng.uniform(84, 96)
        p = early_bad if early_bad is not None and delay < 88 else p_bad
        c.observe_outcome("survey", decision_ts=t, ts=t + delay * DAY,
                          tier="cheap" if rng.random() < 0.6 else "capable",
                          bad=float(rng.random() < p))
    c.observe_routing(t0, "cheap", "policy")


def test_a_maturing_cohort_is_not_compared_with_complete_ones() -> None:
    """Early responders are the unhappy ones (40 % bad against 4 % later, 16 % overall).
    The cohorts before and after are alike, so nothing may be flagged, while a naive
    comparison of the young cohort's early surveys with the reference's complete ones
    shows a gap far past the floor with a tiny p-value."""
    rng = np.random.default_rng(5)
    c = CohortCurves(CohortConfig(outcomes=("survey",), min_n=100))
    w0 = week_of(MONDAY)
    for w in range(w0, w0 + 5):
        _fill(c, w, 1500, rng, 0.04, early_bad=0.40)
    young = w0 + 4
    at = week_start(young + 1) + 86 * DAY  # the young cohort's surveys are early ones only
    naive = compare(c.totals("survey", [young], c.maturity(young, at)),
                    c.totals("survey", list(range(w0, young)), 200))
    assert naive is not None and naive.gap > 0.15 and naive.p_value < 1e-10
    for day in range(0, 200):
        c.evaluate(week_start(w0 + 1) + day * DAY)
    assert c.findings == {}
    assert c.looks  # the cohorts were looked at


def test_a_worse_cohort_is_flagged_once_matured_with_its_delay() -> None:
    rng = np.random.default_rng(8)
    c = CohortCurves(CohortConfig(outcomes=("survey",)))
    w0 = week_of(MONDAY)
    for w in range(w0, w0 + 4):
        _fill(c, w, 1500, rng, 0.10)
    c.observe_routing(week_start(w0 + 4) + 3600, "cheap", "new policy")  # the change
    _fill(c, w0 + 4, 1500, rng, 0.18)
    found = []
    for day in range(0, 130):
        now = week_start(w0 + 5) + day * DAY
        found += c.evaluate(now)
    assert [f.week for f in found] == [w0 + 4]
    f = found[0]
    assert f.level == "ticket" and 84 <= f.statistics["maturity_days"] <= 96
    assert f.statistics["reference_weeks_start"] == [week_start(w) for w in range(w0, w0 + 4)]
    assert f.statistics["change"] == "new policy"
    assert f.statistics["delay_days_after_change"] == pytest.approx(
        (f.ts - week_start(w0 + 4) - 3600) / DAY)
    assert c.findings[(f.kind, f.week)] is f  # sticky


def test_retention_attribution_reaches_the_interactions_cohorts() -> None:
    d = DelayedOutcomes(DelayedConfig(), "cheap", "capable")
    s = "subj-fedcba9876543210"
    d.observe_routing([(MONDAY, "cheap", "p", s, 0.2, True),
                       (MONDAY + 8 * DAY, "capable", "p", s, 1.0, False),
                       (MONDAY + 9 * DAY, "cheap", "p", None, 1.0, False)])
    assert d.observe_subject_outcome("r1", s, 0.0, MONDAY + 179 * DAY)
    cells = d.curves.cells
    w = week_of(MONDAY)
    assert cells[("retention", w, "cheap")][:, 0].sum() == pytest.approx(0.5)
    assert cells[("retention", w + 1, "capable")][:, 0].sum() == pytest.approx(0.5)
    assert cells[("retention", w, "cheap")][179, 1] == pytest.approx(0.5)  # bad at age 179
    ex = d.curves.explored[("retention", "cheap")]
    assert ex[0] == pytest.approx(5.0) and ex[1] == pytest.approx(5.0)  # 1/propensity
    assert {r["exposure"]: r["subjects"] for r in d.ledger.exposure_table()}["≤50%"] == 1.0
    assert d.observe_subject_outcome("r2", "subj-never-seen-0000", 1.0, MONDAY)
    assert d.ledger.unattributed == 1  # no interaction in its lookback: counted, not spread
    assert not d.observe_subject_outcome("r1", s, 0.0, MONDAY + 179 * DAY)  # resent


def test_priced_delayed_outcomes_enter_the_hidden_cost() -> None:
    d = DelayedOutcomes(DelayedConfig(), "cheap", "capable")
    rng = np.random.default_rng(2)
    for i in range(4000):
        cheap = rng.random() < 0.5
        d.observe_routing([(MONDAY + i, "cheap" if cheap else "capable", "p", None, 0.5,
                            True)])
        d.observe_request_outcome("survey", 0.1 if rng.random() < (0.3 if cheap else 0.1)
                                  else 0.9, ts=MONDAY + 90 * DAY, decision_ts=MONDAY + i,
                                  tier="cheap" if cheap else "capable", weight=None,
                                  propensity=0.5, explored=True)
    est, lo, hi = d.hidden_cost(2.0, 0.0, cheap_per_day=1000.0)
    c = d.curves.ipw_contrast("survey", "cheap", "capable")
    assert c is not None and lo <= est <= hi
    # every request answered the survey here: 1000 cheap requests × extra bad rate × $2
    assert est == pytest.approx(1000 * c["effect"] * 2.0)
    assert d.hidden_cost(0.0, 0.0, 1000.0) == (0.0, 0.0, 0.0)  # unpriced: nothing


# -- the null simulation ----------------------------------------------------------------------

def test_null_simulation_holds_the_false_finding_budget() -> None:
    """No change in outcome rates, but routing policies change every few weeks (threshold
    moves); survey and retention cohorts over 30 weeks, 8 runs, evaluated daily. With a
    budget of 1 per 30 days per level (10× the default, so that false findings are seen
    at all), the measured rate of each level stays within it."""
    budget = 1.0
    cfg = CohortConfig(ticket_false_alarms_per_30d=budget, info_false_alarms_per_30d=budget,
                       min_n=100)
    weeks, runs = 30, 8
    found = {"ticket": 0, "info": 0}
    days_tested = 0.0
    for run in range(runs):
        rng = np.random.default_rng(1000 + run)
        c = CohortCurves(cfg)
        w0 = week_of(MONDAY)
        for k in range(weeks):
            w = w0 + k
            policy = f"thresholds-{k // int(rng.integers(3, 8))}"
            c.observe_routing(week_start(w) + 3600, "cheap", policy)
            n = int(rng.integers(300, 1200))
            t = week_start(w) + rng.uniform(0, 7 * DAY, n)
            delay = rng.uniform(84, 96, n)
            bad = rng.random(n) < 0.12
            for ti, di, bi in zip(t, delay, bad, strict=True):
                c.observe_outcome("survey", decision_ts=ti, ts=ti + di * DAY,
                                  tier="cheap", bad=float(bi))
            m = int(rng.integers(200, 600))  # subjects, each spread over 1-4 interactions
            for _ in range(m):
                k_i = int(rng.integers(1, 5))
                churn = float(rng.random() < 0.1)
                for ti in week_start(w) + rng.uniform(0, 7 * DAY, k_i):
                    c.observe_outcome("retention", decision_ts=ti, ts=ti + 180 * DAY,
                                      tier="cheap", bad=churn, weight=1 / k_i)
        end = week_start(w0 + weeks) + 210 * DAY
        for day in range(int((end - week_start(w0)) / DAY)):
            for f in c.evaluate(week_start(w0) + day * DAY):
                found[f.level] += 1
        days_tested += weeks * 7  # cohorts start over 40 weeks: the budget's time base
    per_30d = {k: v / days_tested * 30 for k, v in found.items()}
    print(f"\nnull: {found} false findings over {runs} runs × {weeks} weeks of cohorts "
          f"→ {per_30d['ticket']:.3f} ticket and {per_30d['info']:.3f} info per 30 days "
          f"(budget {budget} each)")
    for level in ("ticket", "info"):
        # within budget with room for chance: the Poisson 95 % upper bound of the count
        assert found[level] <= stats.poisson.ppf(0.95, budget * days_tested / 30)


def test_an_info_finding_grows_into_a_ticket() -> None:
    """A gap that is certain but below the floor is info; once later outcomes push it past
    the floor, the same cohort becomes a ticket finding (and a ticket is final)."""
    rng = np.random.default_rng(13)
    c = CohortCurves(CohortConfig(outcomes=("survey",), floors={"survey": 0.06}))
    w0 = week_of(MONDAY)
    for w in range(w0, w0 + 4):
        _fill(c, w, 6000, rng, 0.10)
    _fill(c, w0 + 4, 6000, rng, 0.30, early_bad=0.14)  # later responders much worse
    levels = []
    for day in range(0, 130):
        levels += [f.level for f in c.evaluate(week_start(w0 + 5) + day * DAY)]
    assert levels == ["info", "ticket"]
    assert c.findings[("survey", w0 + 4)].level == "ticket"


_ROUTED_ROW = st.tuples(
    # near week starts too, where a week is found by a division
    st.one_of(st.floats(1.7e9, 1.7e9 + 30 * 86400.0),
              st.integers(2800, 2830).map(lambda w: w * 7 * 86400.0 + 4 * 86400.0)),
    st.sampled_from(["cheap", "capable"]),
    st.sampled_from([((0.7, 0.3, 0.0), None), ((0.7, 0.3, 0.0), "v2"),
                     ((0.8, 0.3, 0.05), None)]),
    st.one_of(st.none(), st.sampled_from(["subject-aaaaaaaaaaaa", "subject-bbbbbbbbbbbb"])),
    st.sampled_from([1.0, 0.5, 0.05]),
    st.booleans(),
)


@given(st.lists(st.lists(_ROUTED_ROW, min_size=1, max_size=30), max_size=4))
@settings(max_examples=200, deadline=None)
def test_columns_count_as_rows_do(batches: list) -> None:
    """``observe_columns`` (the columnar path's) leaves the state ``observe_routing``
    leaves, batch after batch, in and out of time order."""
    import pickle

    by_rows = DelayedOutcomes(DelayedConfig(), "cheap", "capable")
    by_columns = DelayedOutcomes(DelayedConfig(), "cheap", "capable")
    for rows in batches:
        by_rows.observe_routing(rows)
        ts, tiers, policies, subjects, props, explored = (list(c) for c in zip(*rows, strict=True))
        by_columns.observe_columns(np.asarray(ts), tiers, policies, subjects, props, explored)
    assert list(by_columns.curves.routed.items()) == list(by_rows.curves.routed.items())
    assert by_columns.curves.policies == by_rows.curves.policies
    assert by_columns.curves.changes == by_rows.curves.changes
    assert pickle.dumps(by_columns.ledger) == pickle.dumps(by_rows.ledger)
