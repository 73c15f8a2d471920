"""A flood from one router changes nothing about the others: same alerts, same review
sample, same state, whether or not it is there."""

from __future__ import annotations

import heapq
from datetime import UTC, datetime
from typing import Any

import numpy as np

from pipeline.bootstrap import build_monitor
from pipeline.core.baseline import fit_baseline
from pipeline.core.monitor import Monitor
from pipeline.schemas import RoutingEvent
from pipeline.settings import Settings
from tests.integration.feed import canon, differences

START = datetime(2026, 3, 2, tzinfo=UTC).timestamp()
HOURS = 4
TH = {"cheap_above": 0.6, "capable_below": 0.5, "exploration_rate": 0.1}


def _events(router: str, rate: float, seed: int, drift_at: float | None) -> list[RoutingEvent]:
    rng = np.random.default_rng(seed)
    ts = np.sort(rng.uniform(START, START + HOURS * 3600, rng.poisson(rate * HOURS * 3600)))
    after = ts >= (drift_at if drift_at is not None else np.inf)
    scores = np.where(after, rng.beta(5, 2, ts.size), rng.beta(3, 2, ts.size))
    explore = rng.random(ts.size) < TH["exploration_rate"]
    out = []
    for i, (t, s, e) in enumerate(zip(ts.tolist(), scores.tolist(), explore.tolist(),
                                      strict=True)):
        cheap = s >= 0.6 or (s >= 0.5 and e)
        reason = ("confident_cheap" if s >= 0.6 else "confident_capable" if s < 0.5
                  else "exploration" if e else "uncertain_default")
        out.append(RoutingEvent.model_validate({
            "event_id": f"{router}-e{i}", "request_id": f"{router}-r{i}", "router_id": router,
            "tier": "cheap" if cheap else "capable", "ts": t, "score": s,
            "route_reason": reason, "propensity": 0.1 if reason == "exploration" else 1.0,
            "thresholds": TH}))
    return out


def _run(streams: list[list[RoutingEvent]]) -> tuple[Monitor, dict[str, list[Any]]]:
    rng = np.random.default_rng(0)
    monitor = build_monitor(Settings())
    for router in ("a", "b", "c"):
        monitor.set_baseline(fit_baseline(router, "v1", datetime(2026, 2, 1, tzinfo=UTC),
                                          rng.beta(3, 2, 50_000)))
    merged = list(heapq.merge(*streams, key=lambda e: (e.epoch, e.router_id)))
    outputs: dict[str, list[Any]] = {}
    for lo in range(0, len(merged), 2000):
        monitor.observe_routing(merged[lo: lo + 2000])
        for o in monitor.drain():
            router = getattr(o.payload, "router_id", None)
            outputs.setdefault(str(router), []).append(
                (o.topic, o.payload.model_dump(mode="json")))  # type: ignore[union-attr]
    return monitor, outputs


def test_a_flood_from_one_router_does_not_touch_the_others() -> None:
    quiet = [_events("b", 1.0, 1, START + 2 * 3600 + 600), _events("c", 0.5, 2, None)]
    flood = _events("a", 15.0, 3, None)
    alone, out_alone = _run(quiet)
    shared, out_shared = _run([flood, *quiet])
    assert len(flood) > 8 * sum(len(q) for q in quiet)
    for router in ("b", "c"):
        assert out_shared.get(router) == out_alone.get(router), router
        diff = list(differences(canon(shared.routers[router]), canon(alone.routers[router])))
        assert not diff, (router, diff[:5])
        assert canon(shared.samplers[router]) == canon(alone.samplers[router]), router
    # the quiet routers did produce something to compare: b's drift alert, reviews for both
    kinds = {(r, t) for r, outs in out_alone.items() for t, _ in outs}
    assert {("b", "alerts"), ("b", "review"), ("c", "review")} <= kinds, kinds
