"""The incident's 90-day survey, replayed: the rollout cohort's gap is flagged once matured.

The ``steady`` router with segments and delayed outcomes (:mod:`pipeline.sim.delayed`):
every request has a pseudonymous subject, 30 % are surveyed 84-96 days later, and each
subject's 6-month retention is reported. On day 35 the router's owner rolls out a more
aggressive threshold (``cheap_above`` 0.40 → 0.35) and, from then on, half of the billing
queries hide a complex intent that the cheap tier gets wrong; a wrong cheap answer makes a
bad survey 8× as likely. The monitor must flag ``delayed_outcome_gap`` on the surveys of
a cohort after the rollout against the cohorts before it, only once that cohort has
matured enough to be compared (never before its surveys come in), and report how long
after the cohort and the change it did. The same run without the rollout must raise no
``delayed_outcome_gap`` at all.

The join keeps decisions for 110 days in memory (``TIERWATCH_JOIN_TTL_S``); evaluations
run once a day to keep the 145 simulated days short.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import pytest

from pipeline.cohort_status import render_cohorts
from pipeline.core.cohorts import week_of, week_start
from pipeline.replay import build_monitor
from pipeline.report import render_report
from pipeline.report.build import report_data
from pipeline.schemas import Thresholds
from pipeline.settings import Settings
from pipeline.sim import Simulator
from pipeline.sim.delayed import DelayedMix, with_delayed_outcomes
from pipeline.sim.segments import SegmentMix, with_segments
from tests.sim_feed import forked_runs

DAY = 86400.0
RATE = 0.01  # 864 requests a day
ONSET_DAY = 35.0
DAYS = ONSET_DAY + 110.0
BEFORE = Thresholds(cheap_above=0.40, capable_below=0.33, exploration_rate=0.1)
AFTER = Thresholds(cheap_above=0.35, capable_below=0.33, exploration_rate=0.1)

pytestmark = pytest.mark.slow  # two simulated runs of 110 days after 35 shared ones


def _chunks(sim: Simulator, onset: float | None) -> Any:
    start = sim.start
    seg = SegmentMix(onset_day=onset, hidden_share=0.5)
    policy = (lambda t: BEFORE) if onset is None else (
        lambda t: AFTER if t >= start + onset * DAY else BEFORE)
    return with_delayed_outcomes(with_segments(sim.run(DAYS, policy=policy), seg, start=start),
                                 DelayedMix(), seg, start=start)


@pytest.fixture(scope="module")
def runs() -> dict[str, dict[str, Any]]:
    started = time.perf_counter()
    settings = Settings(join_ttl_s=110 * DAY, eval_every_s=DAY, sequential_drift=False)
    monitor = build_monitor(settings, record=True)  # daily snapshots, for the report
    sims = [Simulator("steady", rate=RATE, seed=11) for _ in range(2)]
    monitor.set_baseline(sims[0].baseline())
    start = sims[0].start
    onset = start + ONSET_DAY * DAY
    quiet, incident = _chunks(sims[0], None), _chunks(sims[1], ONSET_DAY)
    return forked_runs(monitor, sims[0], quiet, incident, onset, started)


def test_rollout_cohort_survey_gap_is_flagged_once_matured(runs: dict[str, Any]) -> None:
    run = runs["incident"]
    onset = run["onset"]
    gaps = sorted((a for a in run["alerts"] if a.kind == "delayed_outcome_gap"
                   and a.state == "firing"), key=lambda a: a.ts)
    assert gaps, "the rollout cohort's survey gap was never flagged"
    first = gaps[0]
    s = first.statistics
    print(f"\n{(first.ts.timestamp() - onset) / DAY:.0f} days after the rollout "
          f"({run['seconds']:.0f} s for both runs): {first.summary}")
    assert s["outcome"] == "survey" and first.severity == "ticket"
    # the flagged cohort interacted during the rollout (its week holds the change or
    # follows it), and is compared with cohorts from before it
    assert s["cohort_week_start"] >= week_start(week_of(onset))
    assert s["reference_weeks_start"] and max(s["reference_weeks_start"]) < onset
    assert s["change"] is not None and "cheap_above=0.35" in s["change"]
    assert abs(s["change_ts"] - onset) < 3600
    # censoring: compared only once matured, i.e. once its 84-96-day surveys came in
    assert s["maturity_days"] >= 84
    assert first.ts.timestamp() >= s["cohort_week_start"] + 7 * DAY + 84 * DAY
    # the delay is reported, and agrees with the alert's own time
    assert s["delay_days_after_change"] == pytest.approx(
        (first.ts.timestamp() - s["change_ts"]) / DAY)
    assert s["delay_days_after_cohort"] == s["maturity_days"]
    assert "days after the change" in first.summary
    assert s["gap"] >= s["floor"] and s["p_value"] < s["alpha"]
    # the cheap tier carries the gap: its cohort rate rose more than the capable tier's
    tiers = s["tiers"]
    assert (tiers["cheap"]["rate"] - tiers["cheap"]["reference_rate"]
            > tiers["capable"]["rate"] - tiers["capable"]["reference_rate"])
    # /status carries the cohort curves, the flagged cohort among them
    snap = run["monitor"].routers[run["router"]].last_snapshot["delayed"]
    flagged = [c for c in snap["survey"]["cohorts"] if c["flagged"]]
    assert flagged and all(c["curve"] for c in flagged)
    # every request named its subject; no 6-month retention is due within 145 days
    assert snap["subjects"] > 10_000 and snap["retention"]["cohorts"] == []
    # `tierwatch status --by cohort` shows the flagged cohort
    text = render_cohorts(run["monitor"].status(), run["router"])
    week = datetime.fromtimestamp(s["cohort_week_start"], UTC).date().isoformat()
    assert any(line.strip().startswith(week) and line.endswith("ticket")
               for line in text.splitlines()), text


def test_the_report_draws_the_flagged_cohort(runs: dict[str, Any]) -> None:
    run = runs["incident"]
    data = report_data(run["monitor"], run["router"], run["alerts"], onset_ts=run["onset"],
                       generated_from="test")
    assert data.delayed is not None and data.delayed.change_ts is not None
    survey = next(p for p in data.delayed.panels if p.outcome == "survey")
    flagged = [c for c in survey.cohorts if c.flagged == "ticket"]
    before = [c for c in survey.cohorts if c.before_change and c.points]
    assert flagged and before and all(not c.before_change for c in flagged)
    page = render_report(data)
    section = page[page.index('id="delayed"'):page.index('id="blindness"')]
    assert section.count("<svg") == 1 and "ticket" in section


def test_no_change_run_flags_no_delayed_gap(runs: dict[str, Any]) -> None:
    run = runs["quiet"]
    gaps = [a for a in run["alerts"] if a.kind == "delayed_outcome_gap"]
    cohorts = run["monitor"].routers[run["router"]].delayed.curves
    print(f"\nno-change: {len(cohorts.looks)} cohorts looked at, "
          f"{sum(cohorts.looks.values())} looks, {len(gaps)} delayed gaps")
    assert sum(cohorts.looks.values()) >= 10  # the test ran, on matured cohorts
    assert gaps == []
