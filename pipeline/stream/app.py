"""The faust worker: the composition root that wires topics, the processor and the web.

One agent with ``concurrency=1`` reads routing, feedback and baselines, because a
faust agent with concurrency > 1 can commit offsets past unprocessed messages
(faust issue #606) and one ordered stream keeps the monitor's state single-writer.
Messages are taken in batches (``take_events``) since per-message overhead dominates.

Exactly-once state, without faust's experimental ``exactly_once``:

- **One order.** Fetched messages wait in an :class:`~pipeline.core.merge.OrderedMerge`
  and reach the processor in (record timestamp, topic, partition, offset) order, once
  every assigned partition has its next message or is caught up with its log. The
  baselines topic is a table: it is read up to its end before any event, then applied as
  it comes. Over logs already written, the order is a function of the logs alone.
- **Snapshots with offsets.** Every ``checkpoint_every_s`` the worker flushes its
  producer, then forks a child that durably writes the processor's state with the next
  offset of every input partition (:mod:`pipeline.stream.checkpoint`).
- **Commits follow snapshots.** The consumer commits the offsets of the latest durable
  snapshot, never faust's acked offsets, so a restart re-reads from at or before the
  snapshot, and the processor skips what the snapshot already counts. Outputs emitted
  after the snapshot are emitted again, with the same ids.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP
from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from pipeline import kafka_clients
from pipeline.core.merge import OrderedMerge
from pipeline.core.monitor import Monitor
from pipeline.replay import build_monitor
from pipeline.settings import Settings
from pipeline.stream.checkpoint import CheckpointStore
from pipeline.stream.metrics import WorkerMetrics
from pipeline.stream.processor import InMessage, OutMessage, Processor

log = logging.getLogger("tierwatch.worker")
INPUTS = ("routing", "feedback", "baselines")
OUTPUTS = ("alerts", "control", "review", "dlq")
RANK = {"baselines": 0, "routing": 1, "feedback": 2}


class CheckpointedConsumer(faust_aiokafka.Consumer):
    """A faust consumer that commits the latest durable checkpoint's offsets.

    faust acks a message once the agent has taken it, and would commit that; here a
    taken message may still wait in the merge, and a processed one is not durable
    until the next snapshot. faust's ack bookkeeping is still drained, to stay bounded.
    """

    committed_positions: dict[TP, int]

    async def _commit_tps(self, tps: Iterable[TP], start_new_transaction: bool) -> bool:
        self._filter_committable_offsets(tps)
        positions: Mapping[TP, int] = getattr(self.app, "durable_positions", {})
        done = getattr(self, "committed_positions", {})
        offsets = {tp: o for tp, o in positions.items()
                   if tp in self.assignment() and done.get(tp) != o}
        if not offsets:
            return False
        ok = await self._commit(offsets)
        if ok:
            self.committed_positions = {**done, **offsets}
        return ok


class CheckpointedTransport(faust_aiokafka.Transport):
    Consumer = CheckpointedConsumer


class TierwatchApp(faust.App):
    """faust's App with the checkpoint-following consumer."""

    durable_positions: dict[TP, int]

    def _new_transport(self) -> Any:
        return CheckpointedTransport(self.conf.broker_consumer, self)


@dataclass
class Worker:
    """The pieces of a running worker, exposed so tests can inspect them."""

    app: faust.App
    processor: Processor
    metrics: WorkerMetrics
    registry: CollectorRegistry
    store: CheckpointStore


def build_worker(settings: Settings, *, registry: CollectorRegistry | None = None,
                 monitor: Monitor | None = None) -> Worker:
    """Wire a faust app around one :class:`Processor`, restored from its checkpoint."""
    registry = registry if registry is not None else CollectorRegistry()
    scrape: CollectorRegistry = registry
    metrics = WorkerMetrics(registry)
    processor = Processor(settings, monitor or build_monitor(settings), metrics)
    store = CheckpointStore(settings.checkpoint_dir
                            or Path(".run/checkpoints") / settings.app_id)
    snapshot = store.load()
    if snapshot is not None:
        processor.restore(snapshot)
        log.info("restored checkpoint of %s: %d messages, offsets %s",
                 time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(snapshot.taken_at)),
                 snapshot.messages, snapshot.positions)
    # faust writes a per-app folder; keep it out of the working directory
    datadir = Path(os.environ.get("FAUST_DATADIR", f".run/faust/{settings.app_id}"))
    datadir.parent.mkdir(parents=True, exist_ok=True)
    app = TierwatchApp(
        settings.app_id,
        broker=kafka_clients.broker_urls(settings),
        broker_credentials=kafka_clients.faust_credentials(settings),  # TLS, SASL, OAuth
        store="memory://",
        datadir=datadir,
        web_port=settings.web_port,
        web_host="127.0.0.1",
        topic_allow_declare=False,
        topic_disable_leader=True,
        producer_acks=-1,
        producer_linger=0.02,  # batch the outputs: one produce request per dead letter is slow
        consumer_auto_offset_reset="earliest",
        # commits follow checkpoints, not acks, so shutdown need not wait for taken
        # messages to be acked; it did forever after an agent crash (SIGTERM ignored)
        stream_wait_empty=False,
        # up to the largest message per partition per fetch (faust's default is 1 MB):
        # the ordered merge releases no further than its least-fetched partition, and at
        # 1 MB a partition of 50 kB batch messages starved it (12.5k events/s, half idle).
        # Pausing the partitions that are ahead would be the finer tool, but faust drops
        # the records it has fetched for a partition paused while it hands them out
        # (Consumer.getmany filters on the live active set), and they are never re-read.
        consumer_max_fetch_size=settings.max_message_bytes,
        broker_commit_every=settings.batch_size,
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=settings.session_timeout_s / 10,
        broker_rebalance_timeout=settings.session_timeout_s,
    )
    app.durable_positions = {TP(t, p): o for (t, p), o in processor.positions.items()}
    by_name = {settings.topic(k): k for k in INPUTS}
    source = app.topic(*by_name, key_type=bytes, value_type=bytes,
                       key_serializer="raw", value_serializer="raw")
    sinks = {k: settings.topic(k) for k in OUTPUTS}
    # items carry their fetch time (monotonic), for the merge-wait histogram
    merge: OrderedMerge[tuple[float, InMessage]] = OrderedMerge()
    lock = asyncio.Lock()
    state: dict[str, Any] = {"blocked_since": None, "checkpoint": time.monotonic(),
                             "bootstrapped": False, "checkpointed": processor.messages,
                             "writer": None, "failed": None}

    async def publish(out: list[OutMessage]) -> None:
        # straight to the producer: faust's Topic.send adds per-message futures, callbacks
        # and sensors that cost more than the record itself (about 1 ms a record when a
        # review request goes out for most routing messages); order and partitioning
        # (murmur2 of the key) are the producer's either way
        producer = app.producer
        for m in out:
            await producer.send(sinks[m.topic], m.key, m.value, partition=None,
                                timestamp=None, headers=None)

    def inputs() -> set[TP]:
        return {tp for tp in app.consumer.assignment() if tp.topic in by_name}

    def caught_up(tp: Any) -> bool:
        highwater = app.consumer.highwater(tp)
        return highwater is not None and processor.positions.get(
            (tp.topic, tp.partition), 0) >= highwater

    def release() -> list[InMessage]:
        """What the merge can hand to the processor now, in its order."""
        now = time.monotonic()
        waited = metrics.merge_wait.observe
        out = []
        for fetched, msg in _release():
            waited(now - fetched)
            out.append(msg)
        return out

    def _release() -> list[tuple[float, InMessage]]:
        assigned = inputs()
        tables = sorted(tp for tp in assigned if by_name[tp.topic] == "baselines")
        streams = sorted(assigned.difference(tables))
        # the baselines topic is a table: applied as it arrives, and read to its end
        # before the first event, so every event meets the baselines already published
        ready = [m for tp in tables for m in merge.take(tp)]
        if not state["bootstrapped"]:
            if not all(caught_up(tp) for tp in tables):
                return ready
            state["bootstrapped"] = True
        ready += merge.release(streams, caught_up)
        now = time.monotonic()
        if ready or not len(merge):
            state["blocked_since"] = None
        elif state["blocked_since"] is None:
            state["blocked_since"] = now
        elif now - state["blocked_since"] >= settings.merge_idle_s:
            ready += merge.release(streams, caught_up, force=True)
            metrics.merge_forced.labels("idle").inc()
            state["blocked_since"] = None
        if len(merge) >= settings.merge_max_buffered:
            ready += merge.release(streams, caught_up, force=True)
            metrics.merge_forced.labels("full").inc()
        metrics.merge_buffered.set(len(merge))
        return ready

    async def drain() -> None:
        if state["failed"] is not None:
            return  # the worker is stopping: process nothing more
        try:
            await _drain()
        except Exception as err:  # the worker cannot process: stop, non-zero, loudly
            fail(err)

    def fail(err: BaseException) -> None:
        state["failed"] = f"{type(err).__name__}: {err}"
        log.critical("the worker cannot process (%s); exiting for the supervisor to restart "
                     "it", state["failed"], exc_info=err)
        request_exit(FAILED_EXIT_CODE)

    async def _drain() -> None:
        async with lock:
            for i, msg in enumerate(release()):
                out = processor.handle(by_name[msg.topic], msg)
                out.extend(processor.flush())
                await publish(out)
                if i % 64 == 63:
                    await asyncio.sleep(0)  # let the web server and the timers run
            if (time.monotonic() - state["checkpoint"] >= settings.checkpoint_every_s
                    and processor.messages != state["checkpointed"]):
                await checkpoint()

    async def checkpoint() -> None:
        """Flush the outputs, then snapshot state and offsets; call holding ``lock``.

        A forked child writes the snapshot while processing goes on; the committed
        offsets move to the snapshot's once the child has made it durable.
        """
        if state["writer"] is not None:
            return
        state["checkpoint"] = time.monotonic()
        started = time.perf_counter()
        try:
            await app.producer.flush()
            snapshot = processor.snapshot()
            pid = store.fork_save(snapshot)
        except Exception:  # a failed checkpoint must not stop the worker
            log.exception("checkpoint failed; committed offsets stay at the previous one")
            metrics.checkpoint_failures.inc()
            return
        state["writer"] = asyncio.ensure_future(finish(pid, snapshot.positions,
                                                       snapshot.messages, started))

    async def finish(pid: int, positions: dict[tuple[str, int], int], messages: int,
                     started: float) -> None:
        try:
            size = await asyncio.get_running_loop().run_in_executor(None, store.reap, pid)
        except Exception:
            log.exception("checkpoint failed; committed offsets stay at the previous one")
            metrics.checkpoint_failures.inc()
            return
        finally:
            state["writer"] = None
        app.durable_positions = {TP(t, p): o for (t, p), o in positions.items()}
        state["checkpointed"] = messages
        metrics.checkpoint_seconds.observe(time.perf_counter() - started)
        metrics.checkpoint_bytes.set(size)
        metrics.checkpoint_time.set(time.time())

    async def ingest(stream: faust.StreamT) -> None:
        # take_events exists on faust's Stream but not on its StreamT protocol
        batches = stream.take_events(  # type: ignore[attr-defined]
            settings.batch_size, settings.batch_within_s)
        async for events in batches:
            fetched = time.monotonic()
            for event in events:
                m = event.message
                tp = TP(m.topic, m.partition)
                merge.push(tp, (m.timestamp, RANK[by_name[m.topic]], m.partition, m.offset),
                           (fetched, InMessage(m.topic, m.partition, m.offset, m.key,
                                               m.value)))
            await drain()
            record_lag(events)

    @app.timer(interval=0.25)
    async def unblock() -> None:
        # the merge may be waiting on a partition that delivers nothing more
        await drain()

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

    class HealthView(View):
        async def get(self, request: Request) -> Response:
            # 503 once the worker cannot process: it is on its way out, never a zombie
            if state["failed"] is not None:
                return self.json({"status": "failed", "error": state["failed"]}, status=503)
            return self.json({"status": "ok", "messages": processor.messages})

    class StatusView(View):
        async def get(self, request: Request) -> Response:
            return self.json({**processor.monitor.status(), "worker": {
                "healthy": state["failed"] is None, "error": state["failed"],
                "messages": processor.messages,
                "positions": {f"{t}:{p}": o for (t, p), o in processor.positions.items()},
                "checkpoint": {f"{tp.topic}:{tp.partition}": o
                               for tp, o in app.durable_positions.items()},
                "merge_buffered": len(merge)}}, status=200 if state["failed"] is None else 503)

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
    app.page("/health")(HealthView)
    app.page("/routers/{router_id}")(RouterView)
    return Worker(app, processor, metrics, registry, store)


#: exit status of a worker that stopped because it could not process (EX_SOFTWARE)
FAILED_EXIT_CODE = 70
#: how long a failed worker's graceful shutdown may take before it is cut short
FAILED_SHUTDOWN_S = 30.0
_exit_code: list[int] = []


def request_exit(code: int) -> None:
    """Stop the worker with exit status ``code``: a graceful shutdown (SIGTERM to itself),
    cut short by ``os._exit`` if it has not finished within ``FAILED_SHUTDOWN_S``."""
    if _exit_code:
        return
    _exit_code.append(code)
    watchdog = threading.Timer(FAILED_SHUTDOWN_S, os._exit, (code,))
    watchdog.daemon = True
    watchdog.start()
    os.kill(os.getpid(), signal.SIGTERM)


def run_worker(settings: Settings) -> None:
    """Run the worker until interrupted (``tierwatch worker``); exit non-zero if it
    stopped because it could not process."""
    # faust would retry a refused login forever: reach the brokers once, or say why not
    kafka_clients.check_connection(settings)
    if settings.uses_dev_control_key:  # enforce with it is refused by the settings
        log.warning("signing advisory recommendations with the public development key: "
                    "set TIERWATCH_CONTROL_KEY (`tierwatch control keygen`) before routers "
                    "trust them")
    worker = build_worker(settings)
    try:
        faust.Worker(worker.app, loglevel=settings.log_level.upper()).execute_from_commandline()
    finally:
        if _exit_code:
            os._exit(_exit_code[0])  # after faust's shutdown: SystemExit(0) must not win
