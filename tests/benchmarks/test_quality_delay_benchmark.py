"""Quality detection delay and false alarms as a function of the traffic rate.

For each simulator rate (routing events/s) and seed:

* ``pareto-trap`` (the incident: a simple-looking hard cohort ramps in from day 21,
  0 → 12 % of traffic over 7 days, routed cheap, its users call support): the delay from
  the onset to the first cheap-tier quality alert (``tier_quality_drop``, ``(pooled)``
  in the table when it is the pooled bad-outcome test of every signal, or
  ``boundary_degradation`` or ``support_contact_rise``; the acceptance pair is the first
  two kinds *and* ``support_contact_rise``), and the quality alerts that fired in the 20
  days before the onset (the tests start when the 14-day reference period ends, so these
  are the alerts of days 14–21);
* ``steady`` (the same router, nothing injected), 60 days evaluated every event-time
  hour: the false quality alerts, against the budget of ``false_alarms_per_30d`` (1 per
  router per 30 days by default: 2 in 60 days).

Both run as ``tests/scenarios/test_incident.py`` and ``tests/scenarios/test_quality_no_change.py``
do: validated events fed to the pure core in event-time order (``tests.sim_feed``), with
``Settings()`` except a support contact priced at $3. The incident run stops once both
the cheap-tier alert and ``support_contact_rise`` have fired, or 7 days after the onset
(delay reported as ``> 168``).

Nothing here is tuned: the thresholds come from the false-alarm budget and the Bonferroni
family of :class:`~pipeline.core.quality_watch.QualityConfig`, whatever the rate. More
traffic means more contacts per window, so the same cohort share is significant sooner.

Environment: ``TIERWATCH_QD_RATES`` (default ``0.2,0.5,1,2``), ``TIERWATCH_QD_SEEDS``
(default ``7,1,2``: the incident seeds), ``TIERWATCH_QD_STEADY_RATES`` (default: the
rates), ``TIERWATCH_QD_STEADY_SEEDS`` (default ``7``),
``TIERWATCH_QD_WORKERS`` (parallel child processes, default 1: the machine is shared).

Run: ``.venv/bin/pytest -p no:cacheprovider -m benchmark
tests/benchmarks/test_quality_delay_benchmark.py -s``. Results: ``out/bench/quality_delay.md``.
"""

from __future__ import annotations

import math
import os
import statistics
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from pipeline.bootstrap import build_monitor
from pipeline.schemas import Alert
from pipeline.settings import Settings
from pipeline.sim import Simulator
from tests.sim_feed import QUALITY_KINDS, batches

pytestmark = pytest.mark.benchmark

DAY = 86400.0
HOUR = 3600.0
ONSET_DAY = 21.0
MAX_AFTER_DAYS = 7.0
STEADY_DAYS = 60.0
CHEAP_QUALITY = frozenset({"tier_quality_drop", "boundary_degradation"})


def _floats(name: str, default: str) -> list[float]:
    return [float(x) for x in os.environ.get(name, default).split(",") if x.strip()]


def _ints(name: str, default: str) -> list[int]:
    return [int(x) for x in os.environ.get(name, default).split(",") if x.strip()]


def _feed(scenario: str, rate: float, seed: int, days: float,
          stop: Callable[[list[Alert], float, float], bool] | None = None) -> dict[str, Any]:
    """Drive ``scenario`` for ``days``, or until ``stop(alerts, watermark, onset)``."""
    started = time.process_time()
    settings = Settings(support_contact_cost_usd=3.0)
    monitor = build_monitor(settings)
    sim = Simulator(scenario, rate=rate, seed=seed)
    monitor.set_baseline(sim.baseline())
    truth = sim.truth()
    onset = float(truth["changes"][0]["onset_epoch"]) if truth["changes"] else math.inf
    alerts: list[Alert] = []
    events = 0
    for kind, chunk in batches(sim.run(days)):
        if kind == "routing":
            monitor.observe_routing(chunk)
        else:
            monitor.observe_feedback(chunk)
        events += len(chunk)
        alerts += [o.payload for o in monitor.drain() if o.topic == "alerts"]  # type: ignore[misc]
        if stop is not None and stop(alerts, chunk[-1].epoch, onset):
            break
    return {"alerts": alerts, "truth": truth, "onset": onset, "events": events,
            "cpu_s": time.process_time() - started, "settings": settings}


def _detected(alerts: list[Alert], watermark: float, onset: float) -> bool:
    after = {a.kind for a in alerts if a.state == "firing" and a.tier == "cheap"
             and a.ts.timestamp() >= onset}
    done = bool(after & CHEAP_QUALITY) and "support_contact_rise" in after
    return done or watermark >= onset + MAX_AFTER_DAYS * DAY


def incident_run(rate: float, seed: int) -> dict[str, Any]:
    """Delay to the first cheap-tier alerts, and the quality alerts before the onset."""
    run = _feed("pareto-trap", rate, seed, ONSET_DAY + MAX_AFTER_DAYS, _detected)
    onset = run["onset"]
    firing = sorted((a for a in run["alerts"] if a.state == "firing"),
                    key=lambda a: a.ts.timestamp())

    def delay(kinds: frozenset[str] | set[str]) -> float | None:
        hit = next((a for a in firing if a.tier == "cheap" and a.kind in kinds
                    and a.ts.timestamp() >= onset), None)
        return None if hit is None else (hit.ts.timestamp() - onset) / HOUR

    first = next((a for a in firing if a.tier == "cheap" and a.kind in QUALITY_KINDS
                  and a.kind != "pareto_trap" and a.ts.timestamp() >= onset), None)
    before = [a for a in firing if a.kind in QUALITY_KINDS
              and onset - 20 * DAY <= a.ts.timestamp() < onset]
    return {"rate": rate, "seed": seed,
            "first": None if first is None else (first.ts.timestamp() - onset) / HOUR,
            "first_kind": None if first is None else (
                f"{first.kind} {first.window}"
                + (" (pooled)" if "pooled" in (first.statistics or {}) else "")),
            "drop_or_boundary": delay(CHEAP_QUALITY),
            "support_contact_rise": delay({"support_contact_rise"}),
            "pre_onset": len(before),
            "pre_onset_kinds": sorted({a.kind for a in before}),
            "events": run["events"], "cpu_s": run["cpu_s"]}


def steady_run(rate: float, seed: int) -> dict[str, Any]:
    """False quality alerts over 60 steady days."""
    run = _feed("steady", rate, seed, STEADY_DAYS)
    assert run["truth"]["changes"] == []
    firing = [a for a in run["alerts"] if a.state == "firing" and a.kind in QUALITY_KINDS]
    return {"rate": rate, "seed": seed, "false": len(firing),
            "kinds": dict(Counter(a.kind for a in firing)),
            "budget": run["settings"].false_alarms_per_30d * STEADY_DAYS / 30,
            "events": run["events"], "cpu_s": run["cpu_s"]}


def _run(job: tuple[str, float, int]) -> dict[str, Any]:
    kind, rate, seed = job
    return incident_run(rate, seed) if kind == "incident" else steady_run(rate, seed)


def _h(x: float | None) -> str:
    return f"> {MAX_AFTER_DAYS * 24:.0f}" if x is None else f"{x:.0f}"


@pytest.mark.timeout(12 * 3600)  # hours of simulated traffic; the suite's 900 s is for tests
def test_quality_delay_by_rate(
    write_report: Callable[[str, str], Path],
    markdown_table: Callable[[Sequence[str], Sequence[Sequence[object]]], str],
) -> None:
    rates = _floats("TIERWATCH_QD_RATES", "0.2,0.5,1,2")
    seeds = _ints("TIERWATCH_QD_SEEDS", "7,1,2")
    steady_seeds = _ints("TIERWATCH_QD_STEADY_SEEDS", "7")
    steady_rates = _floats("TIERWATCH_QD_STEADY_RATES", ",".join(map(str, rates)))
    workers = int(os.environ.get("TIERWATCH_QD_WORKERS", "1"))
    # longest first, so that parallel workers finish together
    jobs = sorted([("steady", r, s) for r in steady_rates for s in steady_seeds]
                  + [("incident", r, s) for r in rates for s in seeds],
                  key=lambda j: -j[1] * (STEADY_DAYS if j[0] == "steady" else 25.0))
    started = time.perf_counter()
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            results = list(pool.map(_run, jobs))
    else:
        results = [_run(j) for j in jobs]
    wall = time.perf_counter() - started
    incidents = sorted((r for r, j in zip(results, jobs, strict=True) if j[0] == "incident"),
                       key=lambda r: (r["rate"], r["seed"]))
    steadies = sorted((r for r, j in zip(results, jobs, strict=True) if j[0] == "steady"),
                      key=lambda r: (r["rate"], r["seed"]))

    per_run = markdown_table(
        ["rate (ev/s)", "requests/day", "seed", "first cheap alert (h)", "first alert",
         "drop/boundary (h)", "support_contact_rise (h)", "pre-onset quality alerts",
         "CPU s"],
        [[r["rate"], f"{r['rate'] * DAY:,.0f}", r["seed"], _h(r["first"]), r["first_kind"],
          _h(r["drop_or_boundary"]), _h(r["support_contact_rise"]),
          f"{r['pre_onset']} {r['pre_onset_kinds'] or ''}".strip(), f"{r['cpu_s']:.0f}"]
         for r in incidents])
    steady_table = markdown_table(
        ["rate (ev/s)", "seed", "false quality alerts / 60 days", "budget", "kinds", "CPU s"],
        [[r["rate"], r["seed"], r["false"], f"{r['budget']:g}", r["kinds"] or "-",
          f"{r['cpu_s']:.0f}"] for r in steadies])
    summary_rows: list[list[object]] = []
    for rate in rates:
        mine = [r for r in incidents if r["rate"] == rate]
        firsts = [math.inf if r["first"] is None else r["first"] for r in mine]
        st = [r for r in steadies if r["rate"] == rate]

        def h(x: float) -> str:
            return _h(None if math.isinf(x) else x)

        summary_rows.append([
            rate, f"{rate * DAY:,.0f}",
            h(statistics.median(firsts)) if firsts else "-",
            f"{h(min(firsts))}–{h(max(firsts))}" if firsts else "-",
            sum(r["pre_onset"] for r in mine),
            sum(r["false"] for r in st) if st else "-",
            f"{sum(r['budget'] for r in st):g}" if st else "-"])
    summary = markdown_table(
        ["rate (ev/s)", "requests/day", "median delay (h)", "range (h)",
         "pre-onset quality alerts (all seeds)", "steady false alerts / 60 d", "budget"],
        summary_rows)
    text = "\n\n".join([
        "# Quality detection delay vs traffic rate",
        f"pareto-trap seeds {seeds} at {rates} ev/s, steady seeds {steady_seeds} at "
        f"{steady_rates} ev/s; {wall:.0f} s wall, "
        f"{workers} worker(s). Delay: from the onset (day 21) to the first cheap-tier "
        "quality alert (drop, boundary or support-contact rise).",
        "## Summary", summary, "## Incident runs", per_run,
        "## 60-day no-change runs", steady_table])
    write_report("quality_delay.md", text)
    for r in steadies:
        assert r["false"] <= r["budget"], r
    for r in incidents:
        assert r["pre_onset"] == 0, r



def test_information_budget(write_report: Callable[[str, str], Path]) -> None:
    """How much evidence a 5 % cohort wrong half the time leaves in 12 h (issue 14, 3).

    ``tests.lagged_traffic`` traffic at ``TIERWATCH_QD_BUDGET_RATE`` (0.3) events/s,
    seeds ``TIERWATCH_QD_BUDGET_SEEDS`` (1–8), onsets 00:00 and 09:00 of day 21: the
    pooled test's bad outcomes and their expectation in the cheap band 0.70–0.80 over
    the 12 h after the onset, and the log-likelihood ratio at the ratio chosen in
    hindsight (an oracle knowing the band, the onset and the size) against the
    threshold the test has. Results: ``out/bench/information_budget.md``.
    """
    import numpy as np

    from pipeline.core import pooled
    from tests.lagged_traffic import CohortScenario, run_cohort

    rate = float(os.environ.get("TIERWATCH_QD_BUDGET_RATE", "0.3"))
    log: list[tuple[int, int, float, float]] = []
    original = pooled.RatioMixture.update

    def record(self: pooled.RatioMixture, observed: float, expected: float, *,
               bucket: int) -> bool:
        log.append((id(self), bucket, observed, expected))
        return original(self, observed, expected, bucket=bucket)

    rows, llrs = [], []
    pooled.RatioMixture.update = record  # type: ignore[method-assign]
    try:
        for onset_hour in (0, 9):
            for seed in _ints("TIERWATCH_QD_BUDGET_SEEDS", "1,2,3,4,5,6,7,8"):
                log.clear()
                day = ONSET_DAY + onset_hour / 24
                feed, onset = run_cohort(CohortScenario(rate=rate, onset_day=day,
                                                        days=day + 0.55), seed)
                test = feed.state.quality_watch.pooled[("cheap", 7)]
                first = int(onset // HOUR)
                x = sum(o for i, b, o, _ in log if i == id(test) and first <= b < first + 12)
                lam = sum(e for i, b, _, e in log if i == id(test) and first <= b < first + 12)
                ratio = x / lam if lam > 0 else 1.0
                llr = x * math.log(ratio) - (ratio - 1) * lam if ratio > 1 else 0.0
                llrs.append(llr)
                rows.append([f"{onset_hour:02d}:00", seed, f"{x:.1f}", f"{lam:.1f}",
                             f"{ratio:.2f}", f"{llr:.2f}", f"{test.threshold:.2f}"])
    finally:
        pooled.RatioMixture.update = original  # type: ignore[method-assign]
    from tests.benchmarks.conftest import _markdown_table
    text = "\n\n".join([
        f"# Evidence in the 12 h after the onset, {rate} events/s, cheap band 0.70–0.80",
        f"hindsight log-likelihood ratio: median {np.median(llrs):.2f}, p90 "
        f"{np.percentile(llrs, 90):.2f}, max {max(llrs):.2f} nats; the test's threshold "
        f"{rows[0][-1]}; one test with the whole page budget: ln 720 = {math.log(720):.2f}",
        _markdown_table(["onset", "seed", "bad outcomes", "expected", "ratio",
                         "hindsight LLR (nats)", "threshold"], rows)])
    write_report("information_budget.md", text)
    assert all(math.isfinite(v) and v >= 0 for v in llrs)
