"""No quality page on a null stream with the nuisances real traffic has (issue #14).

Four weeks of the ``steady`` router at 0.1 routing events/s (8,640 a day on average)
with:

- a weekly cycle: weekend volume 0.3x the weekdays', and a diurnal cycle of x4
  (peak hour / trough hour);
- one threshold move: ``cheap_above``/``capable_below`` 0.40/0.33 -> 0.50/0.43 on day 19
  (a Tuesday), after the 14-day reference period;
- a constant contact probability: every request contacts support with probability 3 %,
  whatever its tier, score or answer (so no rate of any tier or band moves);
- exponential contact delays with a mean of 6 hours.

Nothing else changes, so any page of a quality or contact kind is false. Today's
monitor counts contacts when they arrive against the requests routed in the same window,
which is biased whenever volume moves (weekends, a threshold move): this test fails until
lagged signals are attributed to their requests (issue #14, part 1). On the code before
that fix it saw 5 pages: ``support_contact_rise`` on both tiers on the two weekends after
the reference period, on the cheap tier's band just above the old threshold the day after
the move, and ``boundary_degradation``.

The monitor is the replay's (``build_monitor(Settings())``) with a support contact at $3,
as in ``test_quality_no_change.py``; events are fed as the replay feeds them.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import replace

import numpy as np
import pytest

from pipeline.bootstrap import build_monitor
from pipeline.settings import Settings
from pipeline.sim import Scenario, Simulator, get_scenario
from pipeline.sim import nuisances as nz
from tests.sim_feed import QUALITY_KINDS, drive

pytestmark = pytest.mark.slow  # a null stream with its nuisances: 28 s on 2026-12-04

DAYS = 28.0
RATE = 0.1
SEED = 11
MOVE_DAY = 19.0
CONTACT_P = 0.03


def null_scenario() -> Scenario:
    steady = get_scenario("steady")
    sc = replace(steady, users=replace(steady.users, support_rate_good=CONTACT_P,
                                       support_rate_bad=CONTACT_P))
    sc = nz.exponential_contacts(sc, mean_hours=6.0)
    sc = nz.weekly_cycle(sc, weekend=0.3, peak_to_trough=4.0)
    return nz.threshold_moves(sc, [(MOVE_DAY, 0.50, 0.43)])


def test_weekly_cycle_and_threshold_move_raise_no_quality_page() -> None:
    started = time.perf_counter()
    sim = Simulator(null_scenario(), rate=RATE, seed=SEED)
    monitor = build_monitor(Settings(support_contact_cost_usd=3.0))
    monitor.set_baseline(sim.baseline())
    alerts = drive(monitor, sim, DAYS)

    # the nuisances are really in the stream the monitor saw
    daily = sim.truth()["daily"]
    weekday = [(d["day"] + 3) % 7 for d in daily]  # 2026-01-01 is a Thursday
    n = np.array([d["requests"] for d in daily], dtype=float)
    ratio = n[np.array(weekday) >= 5].mean() / n[np.array(weekday) < 5].mean()
    assert ratio == pytest.approx(0.3, rel=0.05)
    contacts = sum(t["support_contacts"] for d in daily for t in d["tiers"].values())
    assert contacts / n.sum() == pytest.approx(CONTACT_P, rel=0.05)
    share = np.array([d["cheap_share"] for d in daily])
    assert share[int(MOVE_DAY):].mean() < share[:int(MOVE_DAY)].mean() - 0.05  # the move

    firing = [a for a in alerts if a.state == "firing"]
    pages = [a for a in firing if a.severity == "page" and a.kind in QUALITY_KINDS]
    print(f"\n{DAYS:g} days at {RATE} events/s in {time.perf_counter() - started:.0f} s; "
          f"firing: {dict(Counter((a.kind, a.tier, a.severity) for a in firing))}")
    for a in pages:
        print(f"  {a.ts.isoformat()} {a.kind} [{a.tier}] {a.window}: {a.summary}")
    assert not pages

