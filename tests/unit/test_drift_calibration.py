"""False-alarm calibration of continuous drift evaluation, and detection power.

Thirty days of no-drift traffic at 100 events/s (259M events) are simulated without
materializing events: fine bins have known probabilities under the null, so each hour's
fine-bin counts are one multinomial draw. The counts go through a real
``BucketedHistogram`` (hourly buckets, 7-day ring) and are evaluated every hour over
1h / 1d / 7d windows with KS and PSI, i.e. 6 tests per evaluation, at the level given by
``calibrated_alpha(1 false alarm, 30 days, hourly, 6 tests)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np
import pytest
from scipy import stats

from pipeline.core.drift import (
    DEFAULT_EFFECT_FLOORS,
    DriftTest,
    DriftVerdict,
    Statistic,
    calibrated_alpha,
)
from pipeline.core.histogram import BucketedHistogram, QuantileBins

HOUR = 3_600.0
DAYS = 30
WINDOWS = {"1h": 1, "1d": 24, "7d": 168}
STATISTICS: tuple[Statistic, ...] = ("ks", "psi")
TARGET = 1.0  # false pages per router per 30 days
ALPHA = calibrated_alpha(TARGET, DAYS * 86_400, HOUR, n_tests=len(WINDOWS) * len(STATISTICS))
BETA = stats.beta(2, 5)  # the classifier's score distribution (sd 0.16)
SHIFT = 0.3 * BETA.std()  # a "modest" drift: 0.3 sd in score space
M_BASELINE = 100_000

ProbsAt = Callable[[float], np.ndarray]  # true fine-bin probabilities after a score shift


def continuous_baseline(rng: np.random.Generator) -> tuple[QuantileBins, ProbsAt]:
    """Scores ~ Beta(2, 5); 200 equal-mass bins from a baseline sample."""
    qb = QuantileBins.from_sample(BETA.rvs(size=M_BASELINE, random_state=rng), 200)

    def probs(delta: float) -> np.ndarray:
        return np.diff(np.concatenate([[0.0], BETA.cdf(qb.edges - delta), [1.0]]))

    return qb, probs


GRID = np.arange(101) / 100


def _tied_pmf(delta: float) -> np.ndarray:
    """Scores rounded to 2 decimals, with point masses: 20 % at 0.0, 10 % at 1.0."""
    hi, lo = BETA.cdf(GRID + 0.005 - delta), BETA.cdf(GRID - 0.005 - delta)
    lo[0], hi[-1] = 0.0, 1.0
    pmf = 0.7 * (hi - lo)
    pmf[0] += 0.2
    pmf[-1] += 0.1
    return pmf


def tied_baseline(rng: np.random.Generator) -> tuple[QuantileBins, ProbsAt]:
    """Heavy ties: the bins collapse (fewer than 200) and their baseline mass is unequal."""
    qb = QuantileBins.from_sample(rng.choice(GRID, size=M_BASELINE, p=_tied_pmf(0.0)), 200)
    grid_bins = qb.index(GRID)

    def probs(delta: float) -> np.ndarray:
        return np.bincount(grid_bins, weights=_tied_pmf(delta), minlength=qb.n_bins)

    return qb, probs


BASELINES = {"continuous": continuous_baseline, "tied": tied_baseline}


def evaluate_hourly(
    qb: QuantileBins,
    hourly_counts: np.ndarray,
    *,
    n_baseline: int | None,
    test: Callable[[Statistic], DriftTest],
) -> dict[tuple[str, str], list[DriftVerdict]]:
    """Feed hourly bucket counts into a ring histogram and evaluate every window each hour."""
    hist = BucketedHistogram(qb.n_bins, HOUR, horizon_buckets=max(WINDOWS.values()) + 1)
    tests = {s: test(s) for s in STATISTICS}
    out: dict[tuple[str, str], list[DriftVerdict]] = {}
    for h, row in enumerate(hourly_counts):
        now = h * HOUR + HOUR - 1.0  # evaluated at the end of hour h
        hist.update_counts(now, row)
        for w, k in WINDOWS.items():
            counts = hist.window(now, k * HOUR)
            for s, t in tests.items():
                out.setdefault((w, s), []).append(
                    t.evaluate(qb.baseline_probs, counts, n_baseline=n_baseline)
                )
    return out


def pages(alarms: np.ndarray) -> int:
    """Alert onsets: a series that stays alarming is one page."""
    a = np.asarray(alarms, dtype=bool)
    return int(a[0]) + int(np.sum(a[1:] & ~a[:-1]))


Verdicts = dict[tuple[str, str], list[DriftVerdict]]


def null_run(kind: str, seed: int, *, exact_baseline: bool) -> Verdicts:
    rng = np.random.default_rng(seed)
    qb, probs = BASELINES[kind](rng)
    if exact_baseline:
        # the baseline's probabilities are the truth: a one-sample null
        truth, n_baseline = qb.baseline_probs, None
    else:
        # the baseline is a sample of size m from the truth: a two-sample null
        truth, n_baseline = probs(0.0), qb.n
    hourly = rng.multinomial(int(100 * HOUR), truth, size=DAYS * 24)
    return evaluate_hourly(
        qb,
        hourly,
        n_baseline=n_baseline,
        test=lambda s: DriftTest(s, alpha=ALPHA, effect_floor=0.0),
    )


RUNS = [
    ("continuous", 11, True),
    ("continuous", 12, True),
    ("continuous", 13, True),
    ("tied", 21, True),
    ("tied", 22, True),
    ("tied", 23, True),
    ("continuous", 31, False),
    ("continuous", 32, False),
    ("tied", 41, False),
    ("tied", 42, False),
]


@pytest.fixture(scope="module")
def null_verdicts() -> list[dict[tuple[str, str], list[DriftVerdict]]]:
    return [null_run(kind, seed, exact_baseline=exact) for kind, seed, exact in RUNS]


def count_pages(
    runs: list[dict[tuple[str, str], list[DriftVerdict]]],
    rejudge: Callable[[DriftVerdict], DriftVerdict],
) -> list[int]:
    """Pages per 30-day run, any window or statistic, after re-judging each verdict."""
    per_run = []
    for run in runs:
        per_run.append(sum(pages(np.array([rejudge(v).alarm for v in vs])) for vs in run.values()))
    return per_run


def test_alpha_budget():
    assert pytest.approx(1 / (720 * 6)) == ALPHA
    assert ALPHA * DAYS * 24 * len(WINDOWS) * len(STATISTICS) == pytest.approx(TARGET)


def test_statistical_gate_alone_holds_the_false_alarm_budget(null_verdicts):
    """Effect floor 0: only the calibrated p-value stands between noise and a page."""
    per_run = count_pages(null_verdicts, lambda v: v)
    assert sum(per_run) <= TARGET * len(per_run), per_run  # <= 1 page per router per 30 days
    assert max(per_run) <= 2, per_run
    n_evals = sum(len(vs) for run in null_verdicts for vs in run.values())
    assert n_evals == len(RUNS) * DAYS * 24 * 6


def test_production_gates_do_not_page_on_noise(null_verdicts):
    """Both gates (default effect floors): no false page at all."""

    def production(v: DriftVerdict) -> DriftVerdict:
        return replace(v, effect_floor=DEFAULT_EFFECT_FLOORS[v.statistic])

    assert count_pages(null_verdicts, production) == [0] * len(RUNS)


def test_uncalibrated_level_would_page_often(null_verdicts):
    """The same streams at a naive 5 % level page many times a month: the simulation can
    produce false alarms, and the calibration is what keeps them away."""
    per_run = count_pages(null_verdicts, lambda v: replace(v, alpha=0.05))
    # one-sample runs page every few hours; two-sample runs share one baseline error across
    # all their windows, so their alarms come in fewer, longer blocks
    exact = [n for n, (_, _, is_exact) in zip(per_run, RUNS, strict=True) if is_exact]
    assert min(exact) >= 20 and sum(per_run) >= 200, per_run


def first_alarm_delay(kind: str, seed: int, rate_per_s: float) -> float | None:
    """Hours from a mid-hour 0.3 sd shift to the first alarm (production gates)."""
    rng = np.random.default_rng(seed)
    qb, probs = BASELINES[kind](rng)
    warmup, after = 8 * 24, 12  # fill the 7d window first, then watch 12 hours
    per_hour = int(rate_per_s * HOUR)
    before_p, after_p = probs(0.0), probs(SHIFT)
    hourly = rng.multinomial(per_hour, before_p, size=warmup + after)
    start = warmup + 0.5  # the shift begins half-way through hour `warmup`
    hourly[warmup] = rng.multinomial(per_hour // 2, before_p) + rng.multinomial(
        per_hour - per_hour // 2, after_p
    )
    hourly[warmup + 1 :] = rng.multinomial(per_hour, after_p, size=after - 1)
    verdicts = evaluate_hourly(
        qb, hourly, n_baseline=qb.n, test=lambda s: DriftTest(s, alpha=ALPHA)
    )
    alarm_any = np.zeros(warmup + after, dtype=bool)
    for vs in verdicts.values():
        alarm_any |= np.array([v.alarm for v in vs])
    assert not alarm_any[:warmup].any()  # no false alarm before the shift
    hits = np.flatnonzero(alarm_any[warmup:])
    return None if hits.size == 0 else float(warmup + hits[0] + 1 - start)


@pytest.mark.parametrize("rate_per_s", [100.0, 1.0])
@pytest.mark.parametrize("kind", sorted(BASELINES))
def test_modest_shift_is_detected_within_two_hours(kind, rate_per_s):
    delay = first_alarm_delay(kind, seed=7, rate_per_s=rate_per_s)
    assert delay is not None and delay <= 2.0, delay
