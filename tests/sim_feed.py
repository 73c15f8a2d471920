"""Feed simulator traffic to a Monitor exactly as the replay does (shared by simulation tests)."""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Iterator
from typing import Any

from pipeline.bootstrap import build_monitor
from pipeline.core.monitor import Monitor
from pipeline.schemas import Alert, FeedbackEvent, RoutingEvent, ThresholdRecommendation
from pipeline.settings import Settings
from pipeline.sim import Simulator
from pipeline.sim.fleet import Fleet
from pipeline.sim.simulator import Policy

BATCH = 512
QUALITY_KINDS = frozenset({"tier_quality_drop", "tier_quality_gap", "boundary_degradation",
                           "support_contact_rise", "pareto_trap"})


def batches(chunks: Iterator[Any], batch: int = BATCH) -> Iterator[tuple[str, list[Any]]]:
    """Validated events of both kinds merged by event time, in runs of one kind.

    A silent feedback source's backlog (older ``ts``, delivered late) keeps its place in
    arrival order: the merge takes each list in the order it comes.
    """
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


def drive(monitor: Monitor, sim: Simulator | Fleet, days: float, *,
          policy: Policy | None = None,
          on_control: Callable[[ThresholdRecommendation], None] | None = None) -> list[Alert]:
    """Feed ``days`` of ``sim`` to ``monitor`` as the replay does; return its alerts.

    ``policy`` routes a single simulator (a fleet's routers keep their own); every
    recommendation the monitor publishes goes to ``on_control`` before the next chunk is
    simulated, so a policy that reads a subscriber closes the loop.
    """
    chunks = sim.run(days) if isinstance(sim, Fleet) else sim.run(days, policy=policy)
    alerts: list[Alert] = []
    for kind, events in batches(chunks):
        if kind == "routing":
            monitor.observe_routing(events)
        else:
            monitor.observe_feedback(events)
        for o in monitor.drain():
            if o.topic == "alerts":
                alerts.append(o.payload)  # type: ignore[arg-type]
            elif o.topic == "control" and on_control is not None:
                on_control(o.payload)  # type: ignore[arg-type]
    return alerts


def feed_alerts(monitor: Monitor, chunks: Any, alerts: list[Alert]) -> None:
    """Feed simulator chunks in batches, appending the alerts the monitor publishes."""
    for kind, events in batches(chunks):
        if kind == "routing":
            monitor.observe_routing(events)
        else:
            monitor.observe_feedback(events)
        alerts += [o.payload for o in monitor.drain() if o.topic == "alerts"]  # type: ignore[misc]


def fork_at_onset(monitor: Monitor, quiet: Any, incident: Any,
                  onset: float) -> dict[str, tuple[Monitor, list[Alert]]]:
    """Two runs that are the same events up to ``onset``: one monitor is fed the shared
    chunks (asserted equal), then copied, and each copy is fed its own continuation.
    Returns ``{"incident": (monitor, alerts), "quiet": (monitor, alerts)}``."""
    import copy

    shared: list[Alert] = []
    quiet, incident = iter(quiet), iter(incident)
    for a, b in zip(quiet, incident, strict=False):
        assert a.routing == b.routing and a.feedback == b.feedback
        feed_alerts(monitor, [a], shared)
        if a.end >= onset:
            break
    forked = copy.deepcopy(monitor)
    out = {}
    for name, m, rest in (("incident", forked, incident), ("quiet", monitor, quiet)):
        alerts = list(shared)
        feed_alerts(m, rest, alerts)
        out[name] = (m, alerts)
    return out


def forked_runs(monitor: Monitor, sim: Simulator, quiet: Any, incident: Any, onset: float,
                started: float) -> dict[str, dict[str, Any]]:
    """:func:`fork_at_onset`'s two runs as the scenario tests read them: each run's
    monitor, alerts, start, onset and router; the incident's with the wall seconds since
    ``started`` (``time.perf_counter()``)."""
    out = {name: {"monitor": m, "alerts": alerts, "start": sim.start, "onset": onset,
                  "router": sim.scenario.router_id}
           for name, (m, alerts) in fork_at_onset(monitor, quiet, incident, onset).items()}
    out["incident"]["seconds"] = time.perf_counter() - started
    return out


def monitored(scenario: str, settings: Settings, *, rate: float, seed: int,
              days: float) -> tuple[Monitor, Simulator, list[Alert]]:
    """A recording monitor with the scenario's baseline, fed ``days`` of its traffic
    (:func:`drive`): the monitor, the simulator and the alerts."""
    monitor = build_monitor(settings, record=True)
    sim = Simulator(scenario, rate=rate, seed=seed)
    monitor.set_baseline(sim.baseline())
    return monitor, sim, drive(monitor, sim, days)
