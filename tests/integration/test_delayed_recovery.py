"""Segments and delayed outcomes stay exact through SIGKILLs (issue 18, acceptance 3).

The join-store recovery test's feed carries a segment but no subjects and no outcomes
that come days later, so the cohort curves stay empty there. Here the `steady` router
gets the segment incident (from day 15, half of the billing queries routed cheap hide a
complex intent and are answered wrong) and the delayed outcomes of
:mod:`pipeline.sim.delayed`, on a compressed clock: every request names a pseudonymous
subject, 30 % are surveyed 2-4 days later and each subject's retention is reported 5 days
after its first interaction. The worker keeps its join in RocksDB with a 5-day TTL, and
is SIGKILLed twice at random points.

Asserted, so the comparison cannot be vacuous: the replay's alerts name
``intent=billing`` as the top segment of a cheap-tier quality alert, and its survey and
retention cohort curves have points. Then the worker's checkpointed state (segment
sketches, cohorts and subjects included) equals the replay's field by field, its outputs
equal the replay's, and its live ``/status`` renders the same segment table and cohort
curves (``tierwatch status --by segment`` / ``--by cohort``) as the replay's monitor.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipeline.cohort_status import render_cohorts
from pipeline.segment_status import render_segments
from pipeline.sim import Simulator
from pipeline.sim.delayed import DelayedMix, with_delayed_outcomes
from pipeline.sim.segments import SegmentMix, with_segments
from tests.integration.feed import Feed, final_snapshot, outputs, worker_status
from tests.integration.test_join_store_recovery import _strip_coordinates
from tests.integration.test_recovery import (
    _settings,
    assert_same_outputs,
    assert_same_state,
    run_with_faults,
)

pytestmark = pytest.mark.kafka
DAY = 86400.0
RATE, SEED, ONSET_DAY, DAYS, TTL_S = 0.03, 7, 15.0, 19.0, 5 * DAY
MIX = DelayedMix(subjects=3_000, survey_days=(2.0, 4.0), retention_days=5.0)


def _feed(tmp: Path) -> Feed:
    sim = Simulator("steady", rate=RATE, seed=SEED)
    segments = SegmentMix(onset_day=ONSET_DAY)
    chunks = with_delayed_outcomes(
        with_segments(sim.run(DAYS), segments, start=sim.start), MIX, segments,
        start=sim.start)
    return Feed.of_chunks(tmp, chunks, [sim.baseline()])


def _cohorts_with_points(status: dict[str, Any], outcome: str) -> int:
    (router,) = status["routers"].values()
    return sum(1 for c in router["snapshot"]["delayed"][outcome]["cohorts"] if c["curve"])


def test_sigkilled_worker_keeps_segments_and_cohort_curves_exact(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    started = time.monotonic()
    feed = _feed(tmp_path / "feed")
    s = _settings(kafka_bootstrap, 2)
    n = feed.produce(kafka_bootstrap, s)
    env = {"TIERWATCH_MERGE_IDLE_S": "600", "TIERWATCH_JOIN_TTL_S": str(TTL_S),
           "TIERWATCH_JOIN_STORE": "rocksdb", "TIERWATCH_CHECKPOINT_EVERY_S": "1"}
    live: dict[str, Any] = {}
    with ThreadPoolExecutor(1) as pool:
        run = pool.submit(run_with_faults, kafka_bootstrap, s, tmp_path / "cp", n, tmp_path,
                          kills=2, seed=18, timeout=300, env=env,
                          at_end=lambda base: live.update(worker_status(base)))
        monitor, want = feed.replay(join_ttl_s=TTL_S)
        faults = run.result()
    assert len(faults) == 2 and all(0 < k < n for k in faults), faults

    # not vacuous: a segment named, cohorts with curves, outcomes joined
    alerts = [orjson.loads(v) for v in want["alerts"]]
    named = [a for a in alerts if a["state"] == "firing" and a.get("tier") == "cheap"
             and "intent=billing" in a["summary"]]
    assert named, "no cheap-tier alert names intent=billing"
    status = monitor.status()
    assert _cohorts_with_points(status, "survey") >= 2, status
    assert _cohorts_with_points(status, "retention") >= 1, status

    snapshot = final_snapshot(tmp_path / "cp")
    for m in (monitor, snapshot.state):
        _strip_coordinates(m.join)
    assert_same_state(monitor, snapshot, s, n)
    assert_same_outputs(want, outputs(kafka_bootstrap, s))
    # what an operator reads: the worker's live /status against the replay's
    assert render_segments(live) == render_segments(status)
    assert render_cohorts(live) == render_cohorts(status)
    assert "intent" in render_segments(live) and render_cohorts(live).strip()
    print(f"\n{feed.events} events, {n} messages, faults at {faults}; "
          f"{len(named)} alerts naming billing, {_cohorts_with_points(status, 'survey')} "
          f"survey and {_cohorts_with_points(status, 'retention')} retention cohorts with "
          f"points; {time.monotonic() - started:.0f}s")
