"""Feed simulator traffic to a Monitor exactly as the replay does (shared by simulation tests)."""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from typing import Any

from pipeline.core.monitor import Monitor
from pipeline.schemas import Alert, FeedbackEvent, RoutingEvent
from pipeline.sim import Simulator

BATCH = 512
QUALITY_KINDS = frozenset({"tier_quality_drop", "tier_quality_gap", "boundary_degradation",
                           "support_contact_rise", "pareto_trap"})


def batches(chunks: Iterator[Any], batch: int = BATCH) -> Iterator[tuple[str, list[Any]]]:
    """Validated events of both kinds merged by event time, in runs of one kind."""
    for chunk in chunks:
        routing = [RoutingEvent.model_validate(e) for e in chunk.routing]
        feedback = [FeedbackEvent.model_validate(e) for e in chunk.feedback]
        merged = heapq.merge(((e.epoch, 0, e) for e in routing),
                             ((e.epoch, 1, e) for e in feedback), key=lambda t: t[:2])
        kind, run = -1, []
        for _, k, ev in merged:
            if (k != kind or len(run) >= batch) and run:
                yield ("routing" if kind == 0 else "feedback"), run
                run = []
            kind = k
            run.append(ev)
        if run:
            yield ("routing" if kind == 0 else "feedback"), run


def drive(monitor: Monitor, sim: Simulator, days: float) -> list[Alert]:
    """Feed ``days`` of ``sim`` to ``monitor`` as the replay does; return its alerts."""
    alerts: list[Alert] = []
    for kind, events in batches(sim.run(days)):
        if kind == "routing":
            monitor.observe_routing(events)
        else:
            monitor.observe_feedback(events)
        alerts += [o.payload for o in monitor.drain() if o.topic == "alerts"]  # type: ignore[misc]
    return alerts
