"""Prometheus metrics of the worker, on an injected registry.

Two kinds: what happens to messages is counted as it happens (counters, histograms
and wall-clock gauges on :class:`WorkerMetrics`); what the monitor knows (evaluation
figures, firing alerts, thresholds, baselines, the watermark) is read from it at
scrape time by :class:`MonitorCollector`, so a series the monitor no longer has is no
longer exported, and nothing has to be kept in step with the monitor.

Label cardinality is bounded: routers beyond ``max_routers`` and tiers beyond
``max_tiers`` per router are folded into ``other``, because an unbounded label
set is a memory leak in every Prometheus server that scrapes us.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from pipeline.core.alerts import severity_of
from pipeline.core.figures import alert_figures
from pipeline.core.monitor import Monitor, Output
from pipeline.schemas import DeadLetter

OTHER = "other"
#: longest field name kept as a label value (a producer's field names are free text)
MAX_FIELD_NAME = 64


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
            "tierwatch_dead_letters", "Dead-letter records written, by input topic and reason "
            "(a batch's overflow past 100 is one too_many_invalid record).",
            ["topic", "reason"], registry=registry)
        # what producers send beyond the contract: capped label sets (names are free text)
        self.unknown_fields = Counter(
            "tierwatch_unknown_fields", "Fields the schema does not know, dropped from "
            "accepted input events (strict mode dead-letters them), by topic and dotted name.",
            ["topic", "field"], registry=registry)
        self.wire_format = Counter(
            "tierwatch_schema_registry_messages", "Input messages in the Schema Registry "
            "wire format (header stripped), by topic and schema id.", ["topic", "schema_id"],
            registry=registry)
        self._field_names = LabelCap(max_routers)
        self._schema_ids = LabelCap(max_routers)
        self.processing_errors = Counter(
            "tierwatch_processing_errors", "Unexpected errors inside the monitor, by input "
            "topic (or evaluations) and stage (message: dead-lettered as internal_error; "
            "evaluate: the worker stops).", ["topic", "stage"], registry=registry)
        self.outputs = Counter(
            "tierwatch_published_messages", "Messages published, by output topic.",
            ["topic"], registry=registry)
        self.processing = Histogram(
            "tierwatch_processing_seconds", "Time to process one input message.",
            ["topic"], registry=registry,
            buckets=(1e-5, 1e-4, 5e-4, 1e-3, 5e-3, 1e-2, 5e-2, 0.1, 0.5, 1.0))
        #: what the monitor knows, read from it at scrape time (see :meth:`read_from`)
        self.monitor = MonitorCollector(self.router)
        registry.register(self.monitor)
        self.control_published = Gauge(
            "tierwatch_control_published_timestamp_seconds",
            "Wall time of the last message published on the control topic.", ["router_id"],
            registry=registry)
        self.last_event = Gauge(
            "tierwatch_last_event_timestamp_seconds",
            "Wall time at which the router's last routing event was taken.", ["router_id"],
            registry=registry)
        self.consumer_lag = Gauge("tierwatch_consumer_lag_messages",
                                  "Messages not yet consumed, by input topic and partition.",
                                  ["topic", "partition"], registry=registry)
        self.fenced = Counter(
            "tierwatch_fenced_messages", "Input messages skipped after a restore because the "
            "checkpoint already counts them.", ["topic"], registry=registry)
        self.merge_buffered = Gauge(
            "tierwatch_merge_buffered_messages", "Input messages fetched and waiting in the "
            "ordered merge.", registry=registry)
        self.merge_wait = Histogram(
            "tierwatch_merge_wait_seconds", "Time an input message waited in the ordered "
            "merge, from its fetch to its release to the monitor.", registry=registry,
            buckets=(1e-3, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0))
        self.merge_forced = Counter(
            "tierwatch_merge_forced_releases", "Times the ordered merge released without "
            "every partition's next message (idle timeout or full buffer).", ["reason"],
            registry=registry)
        self.merge_held = Gauge(
            "tierwatch_merge_held_partitions", "Input partitions not being fetched because "
            "the ordered merge holds more than their share of messages (backpressure; "
            "nothing is dropped).", registry=registry)
        self.merge_holds = Counter(
            "tierwatch_merge_holds", "Times an input partition was held back (not fetched) "
            "because the ordered merge had more than its share of its messages.",
            registry=registry)
        self.partitions_missing = Gauge(
            "tierwatch_input_partitions_missing", "Partitions of an input topic this worker "
            "is not assigned: another member of its consumer group holds them, and the "
            "worker stops processing until it is assigned all of them.", ["topic"],
            registry=registry)
        self.input_lost = Gauge(
            "tierwatch_input_lost_messages", "Input records deleted (retention) before "
            "this worker's state counted them, since the worker started: it read on from "
            "the log's start without them.", ["input"], registry=registry)
        self.standby = Gauge(
            "tierwatch_worker_standby", "1 while the worker is a standby: assigned no input "
            "partition, it publishes nothing (and, following, keeps its state current "
            "from the group's commits).", registry=registry)
        self.state_restores = Counter(
            "tierwatch_state_restores", "Worker starts by where the state came from: the "
            "latest checkpoint, the previous one (the latest was unusable), none (empty "
            "directory), or reset (unusable, set aside by --reset-state).", ["source"],
            registry=registry)
        self.checkpoint_seconds = Histogram(
            "tierwatch_checkpoint_seconds", "Time to take and durably write one checkpoint.",
            registry=registry, buckets=(0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0))
        self.checkpoint_bytes = Gauge("tierwatch_checkpoint_bytes",
                                      "Size of the latest checkpoint.", registry=registry)
        self.checkpoint_time = Gauge(
            "tierwatch_checkpoint_last_success_timestamp_seconds",
            "Wall time of the latest durable checkpoint.", registry=registry)
        self.checkpoint_failures = Counter(
            "tierwatch_checkpoint_failures", "Checkpoints that could not be written.",
            registry=registry)

    def read_from(self, source: Callable[[], Monitor | None]) -> None:
        """Export what the monitor ``source()`` returns, as it is at each scrape.

        A callable, because the monitor is replaced when a checkpoint is restored.
        """
        self.monitor.source = source

    def published_control(self, router_id: str) -> None:
        self.control_published.labels(self.router(router_id)).set(time.time())

    def observed_routing(self, routed: dict[tuple[str, str], int], duplicates: int) -> None:
        """Count the routing events the monitor took, per (router, tier), and duplicates."""
        self.events.labels("routing", "valid").inc(sum(routed.values()))
        if duplicates:
            self.events.labels("routing", "duplicate").inc(duplicates)
        now = time.time()
        for (router_id, tier), n in routed.items():
            router = self.router(router_id)
            self.last_event.labels(router).set(now)
            capped = self.tier(f"{router}/{tier}").split("/", 1)[-1]
            self.routed.labels(router, capped).inc(n)

    def observed_feedback(self, taken: dict[tuple[str, str], int], duplicates: int) -> None:
        """Count the feedback events the monitor took, per (router, kind), and duplicates."""
        self.events.labels("feedback", "valid").inc(sum(taken.values()))
        if duplicates:
            self.events.labels("feedback", "duplicate").inc(duplicates)
        for (router_id, kind), n in taken.items():
            self.feedback.labels(self.router(router_id or "unknown"), kind).inc(n)

    def decoded(self, topic: str, schema_id: int | None, unknown: dict[str, int]) -> None:
        """Count a message's Schema Registry id and the unknown fields of its events."""
        if schema_id is not None:
            self.wire_format.labels(topic, self._schema_ids(str(schema_id))).inc()
        for name, n in unknown.items():
            self.unknown_fields.labels(topic, self._field_names(name[:MAX_FIELD_NAME])).inc(n)

    def dead_letter(self, record: DeadLetter, events: int = 1) -> None:
        topic = record.topic.rsplit(".", 1)[-1] or "unknown"
        self.events.labels(topic, "dead_lettered").inc(events)
        # one per record: a capped batch's overflow record counts once, like it is written
        self.dead_letters.labels(topic, record.reason_class).inc()

    def published(self, o: Output) -> None:
        self.outputs.labels(o.topic).inc()
        if o.topic == "control":
            self.published_control(o.key)


_WHERE = ("router_id", "tier", "window", "signal")
_FIGURE = ("kind", "router_id", "tier", "signal", "window", "quantity")
#: the gauges of an evaluation (``RouterState.gauges``): name (after ``tierwatch_``) →
#: help and label names. Segment values leave the top-k: at scrape time only the values
#: of the latest evaluation are there, so the cardinality stays what one evaluation emits.
EVALUATION_GAUGES: dict[str, tuple[str, tuple[str, ...]]] = {
    "drift_psi": ("PSI of the window against the baseline.", _WHERE),
    "drift_ks": ("KS distance of the window against the baseline.", _WHERE),
    "drift_sequential_ratio": ("Largest sequential drift statistic over its threshold (1 or "
                               "more: alarm).", ("router_id", "tier", "signal")),
    "support_contact_sequential_ratio": ("Contact CUSUM statistic over its threshold (1 or "
                                         "more with a large enough rise: alarm).",
                                         ("router_id", "tier")),
    "satisfaction_ratio": ("Share of good outcomes, with its interval bounds.",
                           (*_WHERE, "bound")),
    "support_contact_ratio": ("Support contacts per routed request.",
                              ("router_id", "tier", "window")),
    "support_contacts_unattributed": ("Support contacts counted against no request, by "
                                      "reason (no_decision, too_late, unjoined).",
                                      ("router_id", "reason")),
    "segment_requests": ("Routed requests per segment value (7d; top values, the rest summed "
                         "in value=other).", ("router_id", "tier", "key", "value")),
    "segment_support_contacts": ("Support contacts per segment value (7d; top values, the "
                                 "rest summed in value=other).",
                                 ("router_id", "tier", "key", "value")),
    "minimum_detectable_drop_ratio": ("Smallest satisfaction drop the window's feedback can "
                                      "detect.", _WHERE),
    "threshold": ("Thresholds as recommended and as applied.", ("router_id", "name", "source")),
    "recommendation_pending": ("1 while the recommendation differs from the applied "
                               "thresholds.", ("router_id",)),
    "economics_usd_per_day": ("Cost, savings, hidden cost and net value per day.",
                              ("router_id", "tier", "quantity")),
}


class GaugeFamily:
    """One gauge family being collected: a sample per label set, the last one set wins
    (routers folded into ``other`` share their label sets, as a ``Gauge`` child would)."""

    def __init__(self, name: str, doc: str, labels: tuple[str, ...]) -> None:
        self.name, self.doc, self.labels = name, doc, labels
        self.values: dict[tuple[str, ...], float] = {}

    def set(self, labels: tuple[str, ...], value: float) -> None:
        self.values[labels] = value

    def metric(self) -> GaugeMetricFamily:
        family = GaugeMetricFamily(self.name, self.doc, labels=list(self.labels))
        for labels, value in self.values.items():
            family.add_metric(list(labels), value)
        return family


class MonitorCollector(Collector):
    """Reads the monitor's figures at scrape time (``collect``); holds no copy of them.

    ``source`` returns the monitor to read (``None``: no monitor yet, every family empty).
    Router ids are capped by ``router`` (shared with the counters, so a router keeps its
    label everywhere).
    """

    def __init__(self, router: LabelCap,
                 source: Callable[[], Monitor | None] | None = None) -> None:
        self.router = router
        self.source = source

    def describe(self) -> Iterator[Metric]:
        """The families, empty: lets the registry refuse a second collector of a name."""
        for family in self.families().values():
            yield family.metric()

    def collect(self) -> Iterator[Metric]:
        families = self.families()
        monitor = self.source() if self.source is not None else None
        if monitor is not None:
            self._read(monitor, families)
        for family in families.values():
            yield family.metric()

    @staticmethod
    def families() -> dict[str, GaugeFamily]:
        """Every family this collector exports (empty), by short name."""
        families = {
            "baseline_info": GaugeFamily(
                "tierwatch_baseline_info",
                "The baseline in force (value 1), by router and version.",
                ("router_id", "version")),
            "baseline_created": GaugeFamily(
                "tierwatch_baseline_created_timestamp_seconds",
                "Creation time of the baseline in force.", ("router_id",)),
            "alert_firing": GaugeFamily(
                "tierwatch_alert_firing", "1 while a tierwatch alert fires, by kind, router, "
                "tier and severity.", ("kind", "router_id", "tier", "severity")),
            "alert_observed": GaugeFamily(
                "tierwatch_alert_observed", "While an alert fires: the value it observed "
                "(see pipeline/core/figures.py).", _FIGURE),
            "alert_reference": GaugeFamily(
                "tierwatch_alert_reference", "While an alert fires: the reference its "
                "observed value is held against.", _FIGURE),
        }
        for name, (doc, labels) in EVALUATION_GAUGES.items():
            families[name] = GaugeFamily(f"tierwatch_{name}", doc, labels)
        families["control_seq"] = GaugeFamily("tierwatch_control_seq",
                                          "seq of the last recommendation.", ("router_id",))
        families["join_store_memory"] = GaugeFamily(
            "tierwatch_join_store_memory_bytes",
            "Memory of the on-disk join store outside Python (RocksDB's block cache, "
            "memtables and table readers), by part; each has a fixed budget.", ("part",))
        families["watermark"] = GaugeFamily(
            "tierwatch_watermark_timestamp_seconds",
            "Event-time watermark: the largest event time accepted.", ())
        return families

    def _read(self, monitor: Monitor, families: dict[str, GaugeFamily]) -> None:
        router = self.router
        for router_id, b in monitor.baselines.items():
            r = router(router_id)
            families["baseline_info"].set((r, b.version), 1.0)
            families["baseline_created"].set((r,), b.created_at.timestamp())
        firing: dict[tuple[str, str, str, str], bool] = {}
        for router_id, state in monitor.routers.items():
            r = router(router_id)
            for name, gauge_labels, value in state.gauges:
                family = families[name]
                with_router = {**gauge_labels, "router_id": r}
                family.set(tuple(with_router[x] for x in family.labels), value)
            for key, st in state.alerts.states.items():
                k: tuple[str, str, str, str] = (key.kind, r, key.tier or "", severity_of(key))
                firing[k] = firing.get(k, False) or st.firing
                alert = monitor.firing.get(key.fingerprint) if st.firing else None
                if alert is None:
                    continue
                for f in alert_figures(key.kind, alert.window, alert.statistics, key.detail):
                    where = (key.kind, r, key.tier or "", f.signal, f.window, f.quantity)
                    families["alert_observed"].set(where, f.observed)
                    if f.reference is not None:
                        families["alert_reference"].set(where, f.reference)
                    else:  # the last one set wins, as for every family
                        families["alert_reference"].values.pop(where, None)
        for alert_key, on in firing.items():
            families["alert_firing"].set(alert_key, 1.0 if on else 0.0)
        for router_id, rec in monitor.recommendations.items():
            families["control_seq"].set((router(router_id),), float(rec.seq))
        if monitor.watermark is not None:
            families["watermark"].set((), monitor.watermark)
        for part, size in monitor.join.store.memory().items():
            families["join_store_memory"].set((part,), float(size))
