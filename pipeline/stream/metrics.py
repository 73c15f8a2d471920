"""Prometheus metrics of the worker, on an injected registry.

Label cardinality is bounded: routers beyond ``max_routers`` and tiers beyond
``max_tiers`` per router are folded into ``other``, because an unbounded label
set is a memory leak in every Prometheus server that scrapes us.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from pipeline.core.monitor import Output
from pipeline.schemas import Alert, Baseline, DeadLetter, FeedbackEvent, RoutingEvent

OTHER = "other"


class LabelCap:
    """Admits the first ``limit`` distinct values of a label, folds the rest into ``other``.

    >>> cap = LabelCap(2)
    >>> [cap("a"), cap("b"), cap("c"), cap("a")]
    ['a', 'b', 'other', 'a']
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.seen: set[str] = set()

    def __call__(self, value: str) -> str:
        if value in self.seen:
            return value
        if len(self.seen) >= self.limit:
            return OTHER
        self.seen.add(value)
        return value


class WorkerMetrics:
    """Every metric the worker exposes; see the metrics catalog in the README."""

    def __init__(self, registry: CollectorRegistry, *, max_routers: int = 50,
                 max_tiers: int = 8) -> None:
        self.registry = registry
        self._baseline_versions: dict[str, str] = {}
        self.router = LabelCap(max_routers)
        self.tier = LabelCap(max_routers * max_tiers)
        self.events = Counter(
            "tierwatch_events", "Input events by topic and outcome (valid, dead_lettered).",
            ["topic", "outcome"], registry=registry)
        self.routed = Counter(
            "tierwatch_routed_events", "Valid routing events by router and tier.",
            ["router_id", "tier"], registry=registry)
        self.feedback = Counter(
            "tierwatch_feedback_events", "Valid feedback events by router and kind.",
            ["router_id", "kind"], registry=registry)
        self.dead_letters = Counter(
            "tierwatch_dead_letters", "Messages or batch events sent to the DLQ, by reason.",
            ["topic", "reason"], registry=registry)
        self.outputs = Counter(
            "tierwatch_published_messages", "Messages published, by output topic.",
            ["topic"], registry=registry)
        self.processing = Histogram(
            "tierwatch_processing_seconds", "Time to process one input message.",
            ["topic"], registry=registry,
            buckets=(1e-5, 1e-4, 5e-4, 1e-3, 5e-3, 1e-2, 5e-2, 0.1, 0.5, 1.0))
        self.baseline_version = Gauge(
            "tierwatch_baseline_info", "The baseline in force (value 1), by router and version.",
            ["router_id", "version"], registry=registry)
        self.baseline_created = Gauge(
            "tierwatch_baseline_created_timestamp_seconds",
            "Creation time of the baseline in force.", ["router_id"], registry=registry)
        self.alerts_firing = Gauge(
            "tierwatch_alert_firing", "1 while a tierwatch alert fires, by kind, router, tier.",
            ["kind", "router_id", "tier"], registry=registry)

    def observed_routing(self, events: Sequence[RoutingEvent]) -> None:
        """Count a batch of valid routing events (one increment per label set)."""
        self.events.labels("routing", "valid").inc(len(events))
        for (router_id, tier), n in Tally((e.router_id, e.tier) for e in events).items():
            router = self.router(router_id)
            capped = self.tier(f"{router}/{tier}").split("/", 1)[-1]
            self.routed.labels(router, capped).inc(n)

    def observed_feedback(self, events: Sequence[FeedbackEvent]) -> None:
        self.events.labels("feedback", "valid").inc(len(events))
        for (router_id, kind), n in Tally((e.router_id, e.kind) for e in events).items():
            self.feedback.labels(self.router(router_id or "unknown"), kind).inc(n)

    def dead_letter(self, record: DeadLetter) -> None:
        topic = record.topic.rsplit(".", 1)[-1] or "unknown"
        self.events.labels(topic, "dead_lettered").inc()
        self.dead_letters.labels(topic, record.reason_class).inc()

    def published(self, o: Output) -> None:
        self.outputs.labels(o.topic).inc()
        if isinstance(o.payload, Alert):
            a = o.payload
            self.alerts_firing.labels(a.kind, self.router(a.router_id), a.tier or "").set(
                1.0 if a.state == "firing" else 0.0)

    def baseline_info(self, b: Baseline) -> None:
        router = self.router(b.router_id)
        old = self._baseline_versions.get(router)
        if old is not None and old != b.version:
            self.baseline_version.remove(router, old)
        self._baseline_versions[router] = b.version
        self.baseline_version.labels(router, b.version).set(1)
        self.baseline_created.labels(router).set(b.created_at.timestamp())
