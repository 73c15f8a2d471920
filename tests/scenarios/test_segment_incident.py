"""The incident's billing cohort, replayed: the first cheap-tier quality alert names it.

The ``steady`` router with segments (:mod:`pipeline.sim.segments`): intents with billing
among them. From day 15 (after the 14-day reference), 30 % of billing queries hide a
complex intent that the cheap tier gets wrong, and 20 % of those call support hours
later. The first quality/contact alert on the cheap tier must name ``intent=billing`` as
its top segment with its share of the excess; the same run without the change must fire
no quality alert and no ``segment_share_shift``.
"""

from __future__ import annotations

import re
import time
from typing import Any

import pytest

from pipeline.bootstrap import build_monitor
from pipeline.settings import Settings
from pipeline.sim import Simulator
from pipeline.sim.segments import SegmentMix, with_segments
from tests.sim_feed import QUALITY_KINDS, forked_runs

DAY = 86400.0
RATE = 0.03  # routing events per second: 2,592 requests a day
ONSET_DAY = 15.0
NO_CHANGE_DAYS = 8.0

pytestmark = pytest.mark.slow  # two simulated runs, ~30 s each on a shared 2-core machine


@pytest.fixture(scope="module")
def runs() -> dict[str, dict[str, Any]]:
    """Both runs share their first 15 days (before the onset they are the same events):
    one monitor is fed up to the onset, then copied and fed each continuation."""
    started = time.perf_counter()
    monitor = build_monitor(Settings(support_contact_cost_usd=3.0), record=True)
    sims = [Simulator("steady", rate=RATE, seed=7) for _ in range(2)]
    monitor.set_baseline(sims[0].baseline())
    start = sims[0].start
    onset = start + ONSET_DAY * DAY
    quiet = with_segments(sims[0].run(ONSET_DAY + NO_CHANGE_DAYS), SegmentMix(), start=start)
    incident = with_segments(sims[1].run(ONSET_DAY + 3), SegmentMix(onset_day=ONSET_DAY),
                             start=start)
    return forked_runs(monitor, sims[0], quiet, incident, onset, started)


def test_first_cheap_quality_alert_names_billing(runs: dict[str, Any]) -> None:
    run = runs["incident"]
    onset = run["onset"]
    firing = sorted((a for a in run["alerts"] if a.state == "firing"
                     and a.kind in QUALITY_KINDS and a.tier == "cheap"), key=lambda a: a.ts)
    assert firing, "no cheap-tier quality alert within 3 days of the onset"
    first = firing[0]
    delay_h = (first.ts.timestamp() - onset) / 3600
    print(f"\nfirst alert {delay_h:.0f} h after the onset (both runs: {run['seconds']:.0f} s): "
          f"{first.summary}")
    assert first.ts.timestamp() >= onset
    top = first.statistics["segments"]["top"]
    assert top and (top[0]["key"], top[0]["value"]) == ("intent", "billing")
    assert top[0]["significant"] and top[0]["rate_ratio"] > 2.0
    # most of the excess is billing's (the injected contacts are all billing's)
    assert top[0]["share"] > 0.5
    m = re.search(r"intent=billing: (\d+)% of the excess contacts, ([\d.]+)× its reference",
                  first.summary)
    assert m is not None, first.summary
    assert int(m.group(1)) == round(top[0]["share"] * 100)
    # the status snapshot carries the per-segment table of the cheap tier
    snap = run["monitor"].routers[run["router"]].last_snapshot
    rows = {r["value"]: r for r in snap["segments"]["cheap"]["intent"]}
    assert rows["billing"]["rate"] > 2 * rows["billing"]["reference_rate"]


def test_no_change_run_fires_nothing_segmented(runs: dict[str, Any]) -> None:
    run = runs["quiet"]
    firing = [a for a in run["alerts"] if a.state == "firing"]
    print(f"\nno-change: {len(firing)} firing alerts over {NO_CHANGE_DAYS:g} days after the "
          f"reference: "
          f"{sorted({a.kind for a in firing})}")
    assert not [a for a in firing if a.kind == "segment_share_shift"]
    assert not [a for a in firing if a.kind in QUALITY_KINDS]
    snap = run["monitor"].routers[run["router"]].last_snapshot
    assert set(snap["segments"]["cheap"]) == {"cohort", "intent", "locale", "plan"}
