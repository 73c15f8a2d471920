"""The null matrix: false alerts on traffic where only a nuisance changes.

Every case is the ``steady`` router (the pareto-trap router with nothing injected) at a
constant 0.3 routing events/s (1,080 an hour; ``TIERWATCH_NM_RATE``), with one nuisance
added (:mod:`pipeline.sim.nuisances`). The query mix, the scores, the answers' quality and
every per-request feedback probability stay constant, so every alert is a false one.
Nuisances start after the 14-day reference period, when every test is live:

==========================  =====================================================
case                        nuisance
==========================  =====================================================
steady                      none (no diurnal or weekly cycle either)
weekly-cycle                weekend volume 0.3x / 0.4x / 0.5x the weekdays' (by seed),
                            diurnal cycle x4 peak/trough, from day 0
holiday                     day 18 at 10 % volume
volume-ramp                 volume x3 over days 15-22, then stays
threshold-moves             cheap_above/capable_below 0.40/0.33 -> 0.50/0.43 on
                            day 16 (up), -> 0.35/0.28 on day 22 (down)
exploration-change          exploration 0.10 -> 0.25 on day 16, -> 0.05 on day 22
closed-loop                 tierwatch's own recommendations in ``enforce`` mode,
                            applied hour by hour through ``ThresholdSubscriber.offer``
feedback-outage             widget (thumbs + rating; odd seeds: the review tool)
                            silent on days 17-19, then its backlog arrives at once
contact-delays-double       support contacts about requests from day 17 on come
                            twice as late
router-joins                a second router joins on day 7
two-routers-10x             a second router at a tenth of the volume
==========================  =====================================================

The monitor is the replay's (``build_monitor(Settings())``, the production defaults and
``TIERWATCH_*`` overrides) except a support contact priced at $3, the price the scenario
is calibrated for (at $8 ``pareto_trap`` is a true alarm from day one: see
``tests/scenarios/test_quality_no_change.py``); events are validated and fed in event-time
order as the replay cuts them (``tests.sim_feed``). A false alert is a ``firing``
transition. Rates are per 30 router-days over the whole run (warm-up included: every
alert of the run is counted), with exact one-sided 95 % Poisson upper bounds.

Asserted: for every case, pages and tickets each at or under
``TIERWATCH_FALSE_ALARMS_PER_30D`` (default 1 per router per 30 days); and no page of any
quality or contact kind on the weekly-cycle and threshold-move cases. ``info`` findings
are counted and reported, not asserted.

Environment: ``TIERWATCH_NM_SEEDS`` (default ``1,2``), ``TIERWATCH_NM_DAYS`` (28),
``TIERWATCH_NM_RATE`` (0.3), ``TIERWATCH_NM_CASES`` (all), ``TIERWATCH_NM_WORKERS`` (2).

Run: ``.venv/bin/pytest -p no:cacheprovider -m benchmark
tests/benchmarks/test_null_matrix.py -s``. Results: ``out/bench/null_matrix.md`` and
``null_matrix.json`` in the test's tmp dir (path printed).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from scipy import stats

from pipeline.bootstrap import build_monitor
from pipeline.control import Bounds, ThresholdSubscriber
from pipeline.core.signing import Keyring, parse_key
from pipeline.schemas import ThresholdRecommendation, Thresholds
from pipeline.settings import Settings
from pipeline.sim import Scenario, Simulator, get_scenario
from pipeline.sim import nuisances as nz
from pipeline.sim.fleet import Fleet
from pipeline.stream.processor import encode
from tests.sim_feed import QUALITY_KINDS, drive

#: alerts about what the monitoring can see (not false alarms of a change)
CAPACITY_KINDS = frozenset({"feedback_starvation"})

pytestmark = pytest.mark.benchmark

DAY = 86400.0
SEVERITIES = ("page", "ticket", "info")
NO_QUALITY_PAGES = ("weekly-cycle", "threshold-moves")  # the acceptance's hard cases


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


SEEDS = [int(s) for s in _env("TIERWATCH_NM_SEEDS", "1,2").split(",") if s.strip()]
DAYS = float(_env("TIERWATCH_NM_DAYS", "28"))
RATE = float(_env("TIERWATCH_NM_RATE", "0.3"))
WORKERS = int(_env("TIERWATCH_NM_WORKERS", "2"))


@dataclass(frozen=True)
class Case:
    """How one case builds its traffic for a seed; ``closed_loop`` routes through the
    subscriber."""

    name: str
    build: Callable[[int, int], Simulator | Fleet]  # (seed, index of the seed) → traffic
    closed_loop: bool = False


def _base() -> Scenario:
    return nz.flat(get_scenario("steady"))


def _one(sc: Scenario, seed: int, rate: float = RATE) -> Simulator:
    return Simulator(sc, rate=rate, seed=seed)


def _fleet(seed: int, second_rate: float, second_start_day: float) -> Fleet:
    first = _one(_base(), seed)
    second = Simulator(nz.renamed(_base(), "second-router"), rate=second_rate,
                       seed=seed + 1000, start=first.start + second_start_day * DAY)
    return Fleet([first, second])


CASES: dict[str, Case] = {c.name: c for c in (
    Case("weekly-cycle", lambda s, i: _one(
        nz.weekly_cycle(_base(), weekend=(0.3, 0.4, 0.5)[i % 3], peak_to_trough=4.0), s)),
    Case("threshold-moves", lambda s, i: _one(
        nz.threshold_moves(_base(), [(16.0, 0.50, 0.43), (22.0, 0.35, 0.28)]), s)),
    Case("steady", lambda s, i: _one(_base(), s)),
    Case("holiday", lambda s, i: _one(nz.holiday(_base(), day=18.0, factor=0.1), s)),
    Case("volume-ramp", lambda s, i: _one(
        nz.volume_ramp(_base(), onset_day=15.0, days=7.0, factor=3.0), s)),
    Case("exploration-change", lambda s, i: _one(
        nz.exploration_changes(_base(), [(16.0, 0.25), (22.0, 0.05)]), s)),
    Case("closed-loop", lambda s, i: _one(_base(), s), closed_loop=True),
    Case("feedback-outage", lambda s, i: _one(nz.feedback_outage(
        _base(), ("thumbs", "rating") if i % 2 == 0 else ("review",), 17.0, 2.0), s)),
    Case("contact-delays-double", lambda s, i: _one(
        nz.delays_scaled(_base(), "support_contact", onset_day=17.0, factor=2.0), s)),
    Case("two-routers-10x", lambda s, i: _fleet(s, RATE / 10, 0.0)),

    Case("router-joins", lambda s, i: _fleet(s, RATE, 7.0)),
)}


def _router_days(traffic: Simulator | Fleet, days: float) -> float:
    sims = traffic.simulators if isinstance(traffic, Fleet) else [traffic]
    start = min(s.start for s in sims)
    return sum(max(0.0, days - (s.start - start) / DAY) for s in sims)


def run_case(name: str, seed: int, index: int) -> dict[str, Any]:
    """One case, one seed: the alerts that fired and how much traffic it took."""
    started = time.process_time()
    case = CASES[name]
    traffic = case.build(seed, index)
    # enforce needs a key of its own: the built-in development key is refused
    mode = {"control_mode": "enforce", "control_key_id": "bench",
            "control_key": "null-matrix-" + "0" * 32} if case.closed_loop else {}
    settings = Settings(support_contact_cost_usd=3.0, **mode)
    monitor = build_monitor(settings)
    sims = traffic.simulators if isinstance(traffic, Fleet) else [traffic]
    for sim in sims:
        monitor.set_baseline(sim.baseline())
    verdicts: list[str] = []
    policy = on_control = None
    if case.closed_loop:
        assert isinstance(traffic, Simulator)
        policy, on_control = _closed_loop(traffic, settings, verdicts)
    alerts = drive(monitor, traffic, DAYS, policy=policy, on_control=on_control)
    firing = [a for a in alerts if a.state == "firing"]
    return {
        "case": name, "seed": seed, "router_days": _router_days(traffic, DAYS),
        "routed": sum(monitor.counts.routed.values()),
        "alerts": [{"kind": a.kind, "severity": a.severity, "router_id": a.router_id,
                    "tier": a.tier, "window": a.window, "ts": a.ts.isoformat(),
                    "summary": a.summary} for a in firing],
        "recommendations": dict(Counter(verdicts)),
        "cpu_s": time.process_time() - started,
    }


def _closed_loop(sim: Simulator, settings: Settings, verdicts: list[str]) -> tuple[
        Callable[[float], Thresholds], Callable[[ThresholdRecommendation], None]]:
    """The router side of the loop (as ``tests/scenarios/test_closed_loop.py``): each hour it
    routes with what the subscriber holds; every published recommendation is offered to
    the subscriber as the bytes on the wire."""
    ring = Keyring({settings.control_key_id: parse_key(settings.control_key)})
    clock = [sim.start]
    subscriber = ThresholdSubscriber(
        "unused:9092", sim.scenario.router_id, ring,
        Bounds(cheap_above=(0.2, 1.0), capable_below=(0.0, 1.0), exploration_rate=(0.0, 0.3)),
        sim.scenario.thresholds, clock=lambda: clock[0])

    def policy(now: float) -> Thresholds:
        clock[0] = now
        subscriber.mark_contact()
        return subscriber.current()

    def on_control(rec: ThresholdRecommendation) -> None:
        verdicts.append(subscriber.offer(encode(rec)))

    return policy, on_control


# -- the table -----------------------------------------------------------------------------
def upper95(k: int) -> float:
    """Exact one-sided 95 % upper bound of a Poisson mean, ``k`` events observed.

    >>> round(upper95(0), 3)
    2.996
    """
    return float(stats.chi2.ppf(0.95, 2 * (k + 1)) / 2)


def summarize(runs: Sequence[dict[str, Any]], budget: float) -> dict[str, Any]:
    """Per case: router-days, false alerts and rates per severity, and per alert kind."""
    out: dict[str, Any] = {}
    for name in dict.fromkeys(r["case"] for r in runs):
        mine = [r for r in runs if r["case"] == name]
        days = sum(r["router_days"] for r in mine)
        every = [a for r in mine for a in r["alerts"]]
        # feedback_starvation states what the monitoring can see, not that anything
        # changed: on a router too small for its feedback it is true, so it is reported
        # beside the false alarms, not counted among them
        alerts = [a for a in every if a["kind"] not in CAPACITY_KINDS]
        sev = Counter(a["severity"] for a in alerts)
        row: dict[str, Any] = {"seeds": [r["seed"] for r in mine], "router_days": days,
                               "routed": sum(r["routed"] for r in mine),
                               "cpu_s": sum(r["cpu_s"] for r in mine), "severity": {}}
        for s in SEVERITIES:
            k = sev.get(s, 0)
            row["severity"][s] = {"count": k, "per_30d": 30 * k / days,
                                  "upper95_per_30d": 30 * upper95(k) / days}
        row["kinds"] = {f"{kind} ({s})": n for (kind, s), n in sorted(
            Counter((a["kind"], a["severity"]) for a in alerts).items())}
        row["capacity"] = sum(1 for a in every if a["kind"] in CAPACITY_KINDS)
        row["quality_pages"] = sum(1 for a in alerts if a["severity"] == "page"
                                   and a["kind"] in QUALITY_KINDS)
        row["recommendations"] = dict(sum((Counter(r["recommendations"]) for r in mine),
                                          Counter()))
        row["over_budget"] = [s for s in ("page", "ticket")
                              if row["severity"][s]["per_30d"] > budget + 1e-12]
        out[name] = row
    return out


def render(summary: dict[str, Any], runs: Sequence[dict[str, Any]], budget: float,
           table: Callable[[Sequence[str], Sequence[Sequence[object]]], str]) -> str:
    def rate(cell: dict[str, Any]) -> str:
        return f"{cell['count']} · {cell['per_30d']:.2f} (≤ {cell['upper95_per_30d']:.2f})"

    rows = []
    for name, r in summary.items():
        verdict = "over budget: " + ", ".join(r["over_budget"]) if r["over_budget"] else "ok"
        if name in NO_QUALITY_PAGES and r["quality_pages"]:
            verdict += f"; {r['quality_pages']} quality/contact pages"
        rows.append([name, f"{r['router_days']:.0f}", *(rate(r["severity"][s])
                                                        for s in SEVERITIES),
                     r["capacity"], verdict])
    total_days = sum(r["router_days"] for r in summary.values())
    head = (f"Null matrix: {len(summary)} cases × seeds {SEEDS}, {DAYS:g} days at {RATE:g} "
            f"routing events/s, {total_days:.0f} router-days, budget {budget:g} per severity "
            f"per router per 30 days. Cells: false alerts · per 30 router-days (95 % upper "
            f"bound).")
    kinds = sorted({k for r in summary.values() for k in r["kinds"]})
    by_kind = table(["case", *kinds], [[name, *(r["kinds"].get(k, 0) for k in kinds)]
                                       for name, r in summary.items()]) if kinds else "none"
    lines = [head, "", table(["case", "router-days", "page", "ticket", "info",
                              "feedback_starvation (not counted)", "verdict"], rows),
             "", "False alerts per alert kind (severity):", "", by_kind, "",
             "Alerts (case, seed, router, time, kind, tier, window):", ""]
    for r in runs:
        for a in r["alerts"]:
            lines.append(f"- {r['case']} s{r['seed']} {a['router_id']} {a['ts'][:16]} "
                         f"{a['kind']} ({a['severity']}) [{a['tier']}] {a['window']}")
    loop = summary.get("closed-loop")
    if loop is not None:
        lines += ["", f"closed loop: recommendations {loop['recommendations'] or 'none'}"]
    cpu = sum(r["cpu_s"] for r in runs)
    lines += ["", f"CPU: {cpu:.0f} s in all; " + ", ".join(
        f"{n} {r['cpu_s']:.0f}" for n, r in summary.items())]
    return "\n".join(lines)


@pytest.mark.timeout(4 * 3600)  # CPU-bound simulation; the suite's 900 s is for tests
def test_null_matrix(tmp_path: Path, bench_dir: Path,
                     write_report: Callable[[str, str], Path],
                     markdown_table: Callable[[Sequence[str], Sequence[Sequence[object]]],
                                              str]) -> None:
    budget = Settings().false_alarms_per_30d
    names = [n.strip() for n in _env("TIERWATCH_NM_CASES", ",".join(CASES)).split(",")
             if n.strip()]
    # seed by seed, in the order of the cases: a run cut short still has whole matrices,
    # and the acceptance's hard cases first
    jobs = sorted(((n, s, i) for n in names for i, s in enumerate(SEEDS)),
                  key=lambda j: j[2])
    started = time.perf_counter()
    runs: list[dict[str, Any]] = []

    partial = bench_dir / "null_matrix_runs.jsonl"  # each run as it ends
    partial.write_text("")

    def done(run: dict[str, Any]) -> None:
        runs.append(run)
        with partial.open("a") as f:
            f.write(json.dumps(run) + "\n")
        kinds = Counter(f"{a['kind']} ({a['severity']})" for a in run["alerts"])
        print(f"  [{time.perf_counter() - started:5.0f} s] {run['case']} seed {run['seed']}: "
              f"{dict(kinds) or 'no alerts'} ({run['cpu_s']:.0f} CPU-s)", flush=True)

    if WORKERS > 1:
        with ProcessPoolExecutor(WORKERS, mp_context=multiprocessing.get_context("fork")) \
                as pool:
            for future in as_completed([pool.submit(run_case, *j) for j in jobs]):
                done(future.result())
    else:
        for j in jobs:
            done(run_case(*j))
    order = {n: k for k, n in enumerate(names)}
    runs.sort(key=lambda r: (order[r["case"]], r["seed"]))
    summary = summarize(runs, budget)
    text = render(summary, runs, budget, markdown_table)
    text += f"\nwall: {time.perf_counter() - started:.0f} s with {WORKERS} processes"
    write_report("null_matrix.md", text)
    path = tmp_path / "null_matrix.json"
    path.write_text(json.dumps({"budget_per_30d": budget, "rate": RATE, "days": DAYS,
                                "seeds": SEEDS, "cases": summary, "runs": runs}, indent=2))
    print(f"[json: {path}]")

    assert sum(r["router_days"] for r in summary.values()) >= 300 or len(names) < len(CASES)
    failures = [f"{n}: {', '.join(r['over_budget'])} over budget"
                for n, r in summary.items() if r["over_budget"]]
    failures += [f"{n}: {summary[n]['quality_pages']} quality/contact pages"
                 for n in NO_QUALITY_PAGES if n in summary and summary[n]["quality_pages"]]
    assert not failures, "; ".join(failures)
