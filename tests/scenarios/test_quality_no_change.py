"""No change, no page: 60 steady days evaluated hourly stay within the false-alarm budget.

The ``steady`` scenario is the pareto-trap router with nothing injected. Its events are
validated and fed to the pure core in event-time order, in batches, as the replay feeds
them, with the production defaults (``Settings()``: an evaluation every event-time hour,
``false_alarms_per_30d`` = 1 false page per router per 30 days, so at most 2 in 60 days)
except the price of a support contact: $3, the price the scenario is calibrated for (as
``tierwatch demo`` uses). At the default $8 this router's cheap tier costs more in
support contacts than it saves from day one: ``pareto_trap`` is then a true alarm, not
a false one.

The two-sample tests the monitor uses (the conditional test of the bad-outcome rates,
with binomial-equivalent sizes for graded outcomes) are also checked for their level on
their own, where a failure would show long before 60 simulated days reveal it.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import numpy as np
import pytest

from pipeline.core.quality import SequentialDropTest, Totals
from pipeline.settings import Settings
from tests.sim_feed import QUALITY_KINDS, monitored

pytestmark = pytest.mark.slow  # 60 steady days evaluated hourly: 35 s on 2026-12-04

DAY = 86400.0
DAYS = 60.0
RATE = 0.05  # routing events per second: 4,320 requests a day
SEED = 7


@pytest.fixture(scope="module")
def steady_run() -> dict[str, Any]:
    started = time.perf_counter()
    settings = Settings(support_contact_cost_usd=3.0)
    monitor, sim, alerts = monitored("steady", settings, rate=RATE, seed=SEED, days=DAYS)
    return {"monitor": monitor, "alerts": alerts, "truth": sim.truth(), "settings": settings,
            "events": sum(monitor.counts.routed.values()) + sum(monitor.counts.feedback.values()),
            "seconds": time.perf_counter() - started}


def test_steady_60_days_hourly_within_false_alarm_budget(steady_run: dict[str, Any]) -> None:
    monitor, alerts, settings = steady_run["monitor"], steady_run["alerts"], steady_run["settings"]
    assert steady_run["truth"]["changes"] == []
    router = steady_run["truth"]["router_id"]
    # evaluated continuously: every event-time hour of the 60 days
    history = monitor.history[router]
    assert len(history) >= DAYS * 24 - 2
    steps = np.diff([s["ts"] for s in history])
    assert set(steps.tolist()) == {settings.eval_every_s}

    firing = [a for a in alerts if a.state == "firing"]
    quality = [a for a in firing if a.kind in QUALITY_KINDS]
    budget = settings.false_alarms_per_30d * DAYS / 30
    by_kind = Counter((a.kind, a.tier, a.window) for a in firing)
    print(f"\nsteady: {DAYS:g} days at {RATE} events/s, {steady_run['events']:,} events, "
          f"{len(history)} hourly evaluations, {steady_run['seconds']:.0f} s")
    print(f"false quality alerts: {len(quality)} (budget {budget:g})")
    for (kind, tier, window), n in sorted(by_kind.items()):
        print(f"  firing {kind} [{tier}] {window}: {n}")
    for a in quality:
        print(f"  {a.ts.isoformat()} {a.kind} [{a.tier}] {a.summary}")
    assert len(quality) <= budget


def test_two_sample_drop_test_holds_its_level() -> None:
    """Same rate in both samples: the conditional test rejects at most alpha.

    Rare bad outcomes, as support contacts per routed request in one score band of the
    cheap tier over a day, against its 14-day reference.
    """
    alpha = 0.01
    test = SequentialDropTest(floor=0.0, false_alarms_per_period=alpha,
                              evaluation_interval_seconds=30 * DAY, min_effective_n=1,
                              reference_test="conditional")
    rng = np.random.default_rng(5)
    replicates = 20_000
    rejected = 0
    for k_cur, k_ref in zip(rng.binomial(1800, 0.004, replicates),
                            rng.binomial(25_000, 0.004, replicates), strict=True):
        cur = Totals(1800, 1800, 1800, *[1800.0 - k_cur] * 3)
        ref = Totals(25_000, 25_000, 25_000, *[25_000.0 - k_ref] * 3)
        rejected += test.test(cur, ref).significant
    assert rejected / replicates <= alpha


def _graded_values(rng: np.random.Generator, n: int) -> np.ndarray:
    """Graded outcomes shaped like the simulator's shadow agreement: mostly high, some
    middling (both answers bad), some low (they differ)."""
    u = rng.random(n)
    mean = np.where(u < 0.85, 2.2, np.where(u < 0.9, 0.0, -1.4))
    return 1.0 / (1.0 + np.exp(-(mean + 0.7 * rng.standard_normal(n))))


def _graded(rng: np.random.Generator, n: int, weighted: bool = False) -> Totals:
    weights = np.where(rng.random(n) < 0.5, 50.0, 500.0) if weighted else None  # as reviews
    return Totals.from_arrays(_graded_values(rng, n), weights)


@pytest.mark.parametrize(("n", "weighted"), [(40, True), (110, False), (780, False)])
def test_graded_drop_test_holds_its_level(n: int, weighted: bool) -> None:
    """Graded outcomes (shadow, review): the conditional test and the Bernstein bound,
    Bonferroni-combined, reject at most alpha under no change, few or many outcomes."""
    alpha = 0.01
    test = SequentialDropTest(floor=0.0, false_alarms_per_period=alpha,
                              evaluation_interval_seconds=30 * DAY, min_effective_n=1,
                              reference_test="conditional", graded=True)
    rng = np.random.default_rng(n)
    replicates = 3000
    rejected = sum(test.test(_graded(rng, n, weighted), _graded(rng, 1500, weighted)).significant
                   for _ in range(replicates))
    assert rejected / replicates <= alpha


def test_graded_test_sees_what_the_binomial_tail_cannot() -> None:
    """Shadow agreement of the cheap tier over a week at 0.2 events/s (~800 scores, ~1570
    in the reference), 100 of them from a cohort the cheap model gets wrong."""
    rng = np.random.default_rng(3)
    ref = _graded(rng, 1570)
    cur = Totals.from_arrays(np.concatenate([_graded_values(rng, 700), np.full(100, 0.25)]))
    kwargs = {"floor": 0.0, "n_comparisons": 53, "reference_test": "conditional"}
    binomial = SequentialDropTest(**kwargs).test(cur, ref)
    graded = SequentialDropTest(**kwargs, graded=True).test(cur, ref)
    assert 0.05 < graded.drop < 0.08
    assert graded.significant and not binomial.significant


def test_two_sample_test_is_more_powerful_than_the_bound() -> None:
    """One band of the cheap tier, a day of traffic: 2x the contact rate of its reference."""
    ref = Totals(25_000, 25_000, 25_000, *[25_000.0 - 60] * 3)  # 0.24 % contacts
    cur = Totals(1800, 1800, 1800, *[1800.0 - 9] * 3)  # 0.50 %
    kwargs = {"floor": 0.0, "n_comparisons": 53}
    bound = SequentialDropTest(**kwargs).test(cur, ref)
    conditional = SequentialDropTest(**kwargs, reference_test="conditional").test(cur, ref)
    assert conditional.p_value < bound.p_value
    base = ref.rate
    n_ref = ref.n_eff
    assert (SequentialDropTest(**kwargs, reference_test="conditional").mdd(1800, base, n_ref)
            < SequentialDropTest(**kwargs).mdd(1800, base, n_ref))
