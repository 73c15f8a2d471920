"""The faust worker: the composition root that wires topics, the processor and the web.

One agent with ``concurrency=1`` reads routing, feedback and baselines, because a
faust agent with concurrency > 1 can commit offsets past unprocessed messages
(faust issue #606) and one ordered stream keeps the monitor's state single-writer.
Messages are taken in batches (``take_events``) since per-message overhead dominates.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import faust
from faust.types import TP
from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from pipeline.core.monitor import Monitor
from pipeline.replay import build_monitor
from pipeline.settings import Settings
from pipeline.stream.metrics import WorkerMetrics
from pipeline.stream.processor import InMessage, OutMessage, Processor

log = logging.getLogger("tierwatch.worker")
INPUTS = ("routing", "feedback", "baselines")
OUTPUTS = ("alerts", "control", "review", "dlq")


@dataclass
class Worker:
    """The pieces of a running worker, exposed so tests can inspect them."""

    app: faust.App
    processor: Processor
    metrics: WorkerMetrics
    registry: CollectorRegistry


def build_worker(settings: Settings, *, registry: CollectorRegistry | None = None,
                 monitor: Monitor | None = None) -> Worker:
    """Wire a faust app around one :class:`Processor`."""
    registry = registry if registry is not None else CollectorRegistry()
    scrape: CollectorRegistry = registry
    metrics = WorkerMetrics(registry)
    processor = Processor(settings, monitor or build_monitor(settings), metrics)
    # faust writes a per-app folder; keep it out of the working directory
    datadir = Path(os.environ.get("FAUST_DATADIR", f".run/faust/{settings.app_id}"))
    datadir.parent.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        settings.app_id,
        broker=[f"kafka://{h.strip()}" for h in settings.bootstrap_servers.split(",")],
        store="memory://",
        datadir=datadir,
        web_port=settings.web_port,
        web_host="127.0.0.1",
        topic_allow_declare=False,
        topic_disable_leader=True,
        producer_acks=-1,
        consumer_auto_offset_reset="earliest",
        broker_commit_every=settings.batch_size,
    )
    by_name = {settings.topic(k): k for k in INPUTS}
    source = app.topic(*by_name, key_type=bytes, value_type=bytes,
                       key_serializer="raw", value_serializer="raw")
    sinks = {k: app.topic(settings.topic(k), key_type=bytes, value_type=bytes,
                          key_serializer="raw", value_serializer="raw") for k in OUTPUTS}

    async def publish(out: list[OutMessage]) -> None:
        for m in out:
            await sinks[m.topic].send(key=m.key, value=m.value)

    async def ingest(stream: faust.StreamT) -> None:
        # take_events exists on faust's Stream but not on its StreamT protocol
        batches = stream.take_events(  # type: ignore[attr-defined]
            settings.batch_size, settings.batch_within_s)
        async for events in batches:
            out: list[OutMessage] = []
            for event in events:
                msg = event.message
                kind = by_name[msg.topic]
                out.extend(processor.handle(kind, InMessage(
                    msg.topic, msg.partition, msg.offset, msg.key, msg.value)))
            out.extend(processor.flush())
            await publish(out)
            record_lag(events)

    def record_lag(events: list[faust.EventT]) -> None:
        last: dict[tuple[str, int], int] = {}
        for event in events:
            m = event.message
            last[(m.topic, m.partition)] = max(last.get((m.topic, m.partition), -1), m.offset)
        for (topic, partition), offset in last.items():
            highwater = app.consumer.highwater(TP(topic, partition))
            if highwater is not None:
                metrics.consumer_lag.labels(by_name[topic], str(partition)).set(
                    max(0, highwater - offset - 1))

    app.agent(source, name="tierwatch.ingest", concurrency=1)(ingest)

    class MetricsView(View):
        async def get(self, request: Request) -> Response:
            # aiohttp wants the charset apart from the media type
            media_type = CONTENT_TYPE_LATEST.split(";")[0]
            return self.bytes(generate_latest(scrape), content_type=media_type)

    class StatusView(View):
        async def get(self, request: Request) -> Response:
            return self.json(processor.monitor.status())

    class RouterView(View):
        async def get(self, request: Request, router_id: str) -> Response:
            status = processor.monitor.status()
            router = status["routers"].get(router_id)
            if router is None:
                return self.json({"error": f"unknown router {router_id!r}"}, status=404)
            return self.json({"router_id": router_id, "watermark": status["watermark"],
                              **router})

    app.page("/metrics")(MetricsView)
    app.page("/status")(StatusView)
    app.page("/routers/{router_id}")(RouterView)
    return Worker(app, processor, metrics, registry)


def run_worker(settings: Settings) -> None:
    """Run the worker until interrupted (``tierwatch worker``)."""
    worker = build_worker(settings)
    faust.Worker(worker.app, loglevel=settings.log_level.upper()).execute_from_commandline()
