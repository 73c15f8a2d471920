"""One tierwatch monitor: events in, alerts/recommendations/review requests out.

The same object runs in the faust worker, in ``tierwatch replay`` and in the demo.
Everything is event time: the watermark is the largest event time accepted, and
evaluations run at fixed event-time boundaries as the watermark crosses them.

>>> m = Monitor()
>>> m.observe_routing(_example_event())
[]
>>> m.counts.routed
{('support', 'cheap'): 1}
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from pydantic import BaseModel

from pipeline.schemas import Baseline, FeedbackEvent, Rejection, RoutingEvent


@dataclass(frozen=True, slots=True)
class Output:
    """Something to publish: ``topic`` is a short topic name, ``key`` its message key."""

    topic: str
    key: str
    payload: BaseModel | Rejection


@dataclass(slots=True)
class EventCounts:
    """Valid events per (router, tier) and per (router, kind); exact and mergeable."""

    routed: dict[tuple[str, str], int] = field(default_factory=dict)
    feedback: dict[tuple[str, str], int] = field(default_factory=dict)

    def add_routing(self, router_id: str, tier: str) -> None:
        k = (router_id, tier)
        self.routed[k] = self.routed.get(k, 0) + 1

    def add_feedback(self, router_id: str, kind: str) -> None:
        k = (router_id, kind)
        self.feedback[k] = self.feedback.get(k, 0) + 1

    def __add__(self, other: EventCounts) -> EventCounts:
        return EventCounts(dict(Counter(self.routed) + Counter(other.routed)),
                           dict(Counter(self.feedback) + Counter(other.feedback)))


@dataclass(frozen=True, slots=True)
class MonitorConfig:
    allowed_lateness_s: float = 7 * 86400
    eval_every_s: float = 3600


class Monitor:
    """All routers' state. ``observe_*`` take validated events; ``drain`` runs due evaluations."""

    def __init__(self, config: MonitorConfig | None = None) -> None:
        self.config = config or MonitorConfig()
        self.counts = EventCounts()
        self.baselines: dict[str, Baseline] = {}
        self.watermark: float | None = None

    def set_baseline(self, baseline: Baseline) -> None:
        self.baselines[baseline.router_id] = baseline

    def _late(self, ts: float) -> Rejection | None:
        if self.watermark is not None and ts < self.watermark - self.config.allowed_lateness_s:
            return Rejection("late", f"ts: event time is {self.watermark - ts:.0f}s behind the "
                             f"watermark; allowed lateness is {self.config.allowed_lateness_s:g}s",
                             "ts")
        return None

    def _advance(self, ts: float) -> None:
        if self.watermark is None or ts > self.watermark:
            self.watermark = ts

    def observe_routing(self, ev: RoutingEvent) -> list[Output]:
        ts = ev.epoch
        if (late := self._late(ts)) is not None:
            return [Output("dlq", ev.request_id, late)]
        self._advance(ts)
        self.counts.add_routing(ev.router_id, ev.tier)
        return []

    def observe_feedback(self, ev: FeedbackEvent) -> list[Output]:
        ts = ev.epoch
        if (late := self._late(ts)) is not None:
            return [Output("dlq", ev.request_id, late)]
        self._advance(ts)
        self.counts.add_feedback(ev.router_id or "unknown", ev.kind)
        return []

    def drain(self) -> list[Output]:
        return []

    def status(self) -> dict[str, object]:
        """A JSON-ready summary of every router: what ``GET /status`` serves."""
        routers: dict[str, dict[str, object]] = {}
        for (router, tier), n in sorted(self.counts.routed.items()):
            r = routers.setdefault(router, {"routed": {}, "feedback": {}})
            r["routed"][tier] = n  # type: ignore[index]
        for (router, kind), n in sorted(self.counts.feedback.items()):
            r = routers.setdefault(router, {"routed": {}, "feedback": {}})
            r["feedback"][kind] = n  # type: ignore[index]
        for router, b in self.baselines.items():
            routers.setdefault(router, {"routed": {}, "feedback": {}})["baseline"] = b.version
        return {"watermark": self.watermark, "routers": routers}


def _example_event() -> RoutingEvent:
    return RoutingEvent.model_validate({
        "event_id": "e1", "request_id": "r1", "router_id": "support", "tier": "cheap",
        "ts": "2026-01-01T00:00:00+00:00", "score": 0.91, "route_reason": "confident_cheap",
        "thresholds": {"cheap_above": 0.7, "capable_below": 0.5, "exploration_rate": 0.1}})
