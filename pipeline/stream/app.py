"""The faust worker: topics, the ordered merge, checkpoints and the web around the
application service that :func:`pipeline.bootstrap.bootstrap` builds (:class:`Worker`).

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
- **State and offsets are one unit.** On every assignment the consumer seeks each input
  partition to where the state in memory stops (the restored snapshot's offsets, or the
  beginning of the partition when the state has none), not to the committed offsets: a
  snapshot restored from the previous file, or no snapshot at all, re-reads exactly what
  the state lacks. A checkpoint that exists but cannot be used stops the worker, unless
  ``reset_state`` is set (:func:`restore_state`).
- **The logs' bounds are checked at every seek.** A state offset below a partition's log
  start (retention deleted records it had still to count) is reported per partition and
  read on from the log start; one past the log's end (the topics were recreated) stops
  the worker (:mod:`pipeline.stream.log_bounds`).
- **Backpressure, not forced releases.** A partition with more than its share of
  ``merge_max_buffered`` waiting in the merge is *held*: faust stops fetching it, as it
  does when its own stream buffer is full (the partition leaves the active set and joins
  ``_buffered_partitions``, so records already fetched are still delivered, never
  dropped), and it is resumed once the merge has used half of them. The partition the
  merge waits for always has an empty queue, so it is never held and the merge always
  progresses: catching up any backlog keeps the exact order. Only
  ``merge_overflow_messages`` (never reached while holds work) forces a release, and that
  logs an error and pages.
- **One worker processes, the others stand by.** The monitor needs every input
  partition. The group's assignor (:class:`~pipeline.stream.assignor.OneActiveAssignor`)
  gives all of them to one member, the one that held them before: a second worker in the
  group is assigned nothing and waits as a standby (``/status`` role ``standby``,
  ``tierwatch_worker_standby``). When the active worker dies, its session times out and
  the standby is assigned everything: it seeks to *its own* state's offsets, so its
  results are exact, after a catch-up that starts where its own state stops. While it
  stands by it follows (:mod:`pipeline.stream.follower`): it reads what the active
  worker has committed into its own state, publishing nothing, so that catch-up is
  short. A worker assigned some partitions but not all (a member with another assignor,
  such as an older tierwatch, leads the group) stops processing, holds its partitions,
  commits nothing and pages
  (``tierwatch_input_partitions_missing``). Both are decided in faust's assignment
  callback against the partition counts in the consumer's own metadata: nothing polled,
  nothing per message.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import faust
from aiokafka.structs import TopicPartition
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP
from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from pipeline import kafka_clients
from pipeline.bootstrap import GC_THRESHOLDS, bootstrap, build_monitor
from pipeline.core.merge import OrderedMerge
from pipeline.core.monitor import Monitor
from pipeline.core.signing import parse_key
from pipeline.settings import Settings
from pipeline.store.rocks import RocksDecisionStore
from pipeline.stream.assignor import OneActiveAssignor
from pipeline.stream.checkpoint import (
    DEFAULT_KEY,
    CheckpointError,
    CheckpointStore,
    IncompatibleCheckpoint,
)
from pipeline.stream.follower import Follower
from pipeline.stream.log_bounds import LogBounds
from pipeline.stream.metrics import WorkerMetrics
from pipeline.stream.processor import InMessage, OutMessage, Processor

log = logging.getLogger("tierwatch.worker")
INPUTS = ("routing", "feedback", "baselines")
OUTPUTS = ("alerts", "control", "review", "dlq")
RANK = {"baselines": 0, "routing": 1, "feedback": 2}
RUNBOOK = "deploy/runbook.md"
#: released messages handled between two yields to the event loop; consecutive routing
#: messages among them are counted as one batch (Processor.handle_many)
DRAIN_SLICE = 64


class StateUnusable(Exception):
    """The checkpoint exists but cannot be used, and ``reset_state`` is not set."""


class StateAheadOfInput(Exception):
    """The state has read an input partition past the end of its log."""


class CheckpointedConsumer(faust_aiokafka.Consumer):
    """A faust consumer that commits the latest durable checkpoint's offsets.

    faust acks a message once the agent has taken it, and would commit that; here a
    taken message may still wait in the merge, and a processed one is not durable
    until the next snapshot. faust's ack bookkeeping is still drained, to stay bounded.
    """

    committed_positions: dict[TP, int]
    #: partitions held back by the ordered merge (see :meth:`hold`)
    held: frozenset[TP] = frozenset()

    async def _commit_tps(self, tps: Iterable[TP], start_new_transaction: bool) -> bool:
        self._filter_committable_offsets(tps)
        if getattr(self.app, "standby", False):  # its state is not the group's
            return False
        positions: Mapping[TP, int] = getattr(self.app, "durable_positions", {})
        done = getattr(self, "committed_positions", {})
        offsets = commit_offsets(self.assignment(), positions, done)
        if not offsets:
            return False
        ok = await self._commit(offsets)
        if ok:
            self.committed_positions = {**done, **offsets}
        return ok

    def hold(self, tps: Iterable[TP]) -> None:
        """Fetch nothing more for ``tps`` (and resume the partitions held before but not now).

        faust's own stream-buffer backpressure (``on_buffer_full``): a partition out of the
        active set is not fetched, and one in ``_buffered_partitions`` still has its
        already-fetched records delivered. A plain ``pause_partitions`` would drop those
        (``getmany`` filters them against the live active set) and they would never be
        read again. Called again after each batch, since a rebalance re-activates all.
        """
        want = frozenset(tps)
        if not want and not self.held:  # the usual case, once caught up: nothing to do
            return
        assigned = self.assignment()
        want &= assigned
        active = self._get_active_partitions()
        for tp in self.held - want:
            self._buffered_partitions.discard(tp)
            if tp in assigned and tp not in self._paused_partitions:
                active.add(tp)
        for tp in want:
            active.discard(tp)
            self._buffered_partitions.add(tp)
        self.held = want

    def on_buffer_drop(self, tp: TP) -> None:
        if tp not in self.held:  # faust's stream buffer drained; ours still holds it
            super().on_buffer_drop(tp)

    async def seek_to_committed(self) -> Mapping[TP, int]:
        """Seek every assigned input partition to where the worker's state stops.

        faust calls this once partitions are assigned (and when it needs to rewind); the
        committed offsets are only the last durable snapshot's, while the state in memory
        may be another snapshot (the previous file) or none at all.
        """
        plan = getattr(self.app, "seek_plan", None)
        if plan is None:
            return await super().seek_to_committed()
        targets: dict[TP, int | None] = plan(set(self.assignment()))
        check = getattr(self.app, "check_log_bounds", None)
        if check is not None and targets:
            bounds = await self.log_bounds(targets)
            if bounds is not None:
                targets = check(targets, *bounds)
        exact = {tp: o for tp, o in targets.items() if o is not None}
        start = [TopicPartition(tp.topic, tp.partition)
                 for tp, o in targets.items() if o is None]
        if start:
            await self._thread.seek_to_beginning(*start)
        if exact:
            await self._thread.seek_wait(exact)
        log.info("reading the input partitions from the state's offsets: %s%s",
                 {f"{tp.topic}:{tp.partition}": o for tp, o in sorted(exact.items())},
                 f"; from their beginnings: {sorted(f'{t}:{p}' for t, p in start)}"
                 if start else "")
        return exact

    async def log_bounds(self, targets: Mapping[TP, int | None]
                         ) -> tuple[LogBounds[TP], dict[TP, int | None]] | None:
        """Where the partitions' logs start and end, and the group's committed offsets of
        those the state has not read (a rebuild); ``None`` if the broker cannot say."""
        thread = self._thread
        tps = list(targets)
        try:
            first = await thread.earliest_offsets(*tps)
            end = await thread.highwaters(*tps)
            consumer = thread._ensure_consumer()
            committed = {tp: await thread.call_thread(consumer.committed, tp)
                         for tp, o in targets.items() if o is None}
        except Exception as err:  # the check must not stop the worker from reading
            log.warning("could not read where the input partitions' logs start and end "
                        "(%s): records lost to retention, if any, go unreported", err)
            return None
        return LogBounds(first, end), committed


def commit_offsets(assigned: Iterable[TP], durable: Mapping[TP, int],
                   done: Mapping[TP, int]) -> dict[TP, int]:
    """What to commit: every assigned partition at the durable state's offset, 0 where
    the state has read nothing yet, less what is committed already.

    Every commit covers every partition, so the group's committed offsets are always
    one state's, never one worker's for some partitions and an earlier worker's for the
    others: a following standby reads up to them (:mod:`pipeline.stream.follower`).

    >>> commit_offsets({"r0", "r1", "f0"}, {"r0": 7, "f0": 3}, {"f0": 3})
    {'r0': 7, 'r1': 0}
    """
    return {tp: o for tp in sorted(assigned) if done.get(tp) != (o := durable.get(tp, 0))}


class CheckpointedTransport(faust_aiokafka.Transport):
    Consumer = CheckpointedConsumer


class TierwatchApp(faust.App):
    """faust's App with the checkpoint-following consumer."""

    durable_positions: dict[TP, int]
    #: where each assigned input partition must be read from (``None``: its beginning)
    seek_plan: Any = None
    check_log_bounds: Any = None
    #: not assigned every input partition: processing stops (see the module docstring)
    standby: bool = False
    #: "active" (every input partition), "standby" (none) or "partial" (some: stopped)
    role: str = "starting"
    #: the worker this app runs (its web pages read it)
    worker: Worker | None = None

    def _new_transport(self) -> Any:
        return CheckpointedTransport(self.conf.broker_consumer, self)


class Worker:
    """A running worker: one :class:`Processor` behind a faust app, restored from its
    checkpoint, fed through the ordered merge (see the module docstring).

    The attributes are exposed so that tests can inspect them.
    """

    app: TierwatchApp
    processor: Processor
    metrics: WorkerMetrics
    registry: CollectorRegistry
    store: CheckpointStore

    def __init__(self, settings: Settings, *, registry: CollectorRegistry | None = None,
                 monitor: Monitor | None = None) -> None:
        self.settings = settings
        self.registry = registry if registry is not None else CollectorRegistry()
        directory = settings.checkpoint_dir or Path(".run/checkpoints") / settings.app_id
        # the join's decisions on disk, checkpointed with each snapshot (opened on first
        # use, after a restore has pointed it at the snapshot's checkpoint)
        if monitor is None and settings.join_store == "rocksdb":
            monitor = build_monitor(settings, decisions=RocksDecisionStore(
                directory / "join-store"))
        self.processor = bootstrap(settings, monitor=monitor, registry=self.registry)
        self.metrics = self.processor.metrics
        self.store = CheckpointStore(directory,
                                     key=parse_key(settings.checkpoint_key)
                                     if settings.checkpoint_key else DEFAULT_KEY)
        try:
            restore_state(self.store, self.processor, settings, self.metrics)
        except StateUnusable:
            self.store.close()
            raise
        #: input topic name → short name (``routing``, ``feedback``, ``baselines``)
        self.by_name = {settings.topic(k): k for k in INPUTS}
        #: output short name → topic name
        self.sinks = {k: settings.topic(k) for k in OUTPUTS}
        #: fetched messages waiting for their turn, with their fetch time (monotonic) for
        #: the merge-wait histogram
        self.merge: OrderedMerge[tuple[float, InMessage]] = OrderedMerge()
        self.lock = asyncio.Lock()
        #: next offset expected per input partition: what reaches the merge is each offset
        #: once, in order (a re-fetch after a seek or a rebalance repeats some)
        self.pushed: dict[TP, int] = {}
        #: since when the merge has held messages without releasing any (monotonic)
        self.blocked_since: float | None = None
        #: when the last checkpoint was started (monotonic)
        self.last_checkpoint = time.monotonic()
        #: the baselines table has been read to its end (events may flow)
        self.bootstrapped = False
        #: messages the latest durable checkpoint counts
        self.checkpointed = self.processor.messages
        #: the checkpoint being written, if any
        self.writer: asyncio.Future[None] | None = None
        #: why the worker cannot process (it is on its way out), once it cannot
        self.failed: str | None = None
        #: records deleted before the state counted them, per "topic:partition"
        self.lost: dict[str, int] = {}
        #: per input partition, the log start below which losses are counted already
        self.lost_to: dict[Any, int] = {}
        #: input partitions not assigned to this worker, per input short name
        self.missing: dict[str, int] = {}
        #: a standby's reader of what the active worker has committed
        self.follower = Follower(self, self.by_name, RANK, frozenset({"baselines"}))
        #: where the processor counts events while this worker is quiet (a standby)
        self._unexported = WorkerMetrics(CollectorRegistry())
        #: the input partitions of the last assignment (``None`` before the first)
        self.assigned: set[TP] | None = None
        self.app = self._app()

    # -- wiring ----------------------------------------------------------------------------
    def _app(self) -> TierwatchApp:
        settings = self.settings
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
            # The partitions that are ahead are held (CheckpointedConsumer.hold), not paused:
            # faust drops the records it has fetched for a partition paused while it hands
            # them out (Consumer.getmany filters on the live active set).
            consumer_max_fetch_size=settings.max_message_bytes,
            PartitionAssignor=OneActiveAssignor,
            broker_commit_every=settings.batch_size,
            broker_session_timeout=settings.session_timeout_s,
            broker_heartbeat_interval=settings.session_timeout_s / 10,
            broker_rebalance_timeout=settings.session_timeout_s,
        )
        app.worker = self
        app.durable_positions = {TP(t, p): o for (t, p), o in self.processor.positions.items()}
        app.seek_plan = self.seek_plan
        app.check_log_bounds = self.check_log_bounds
        source = app.topic(*self.by_name, key_type=bytes, value_type=bytes,
                           key_serializer="raw", value_serializer="raw")
        app.agent(source, name="tierwatch.ingest", concurrency=1)(self.ingest)
        # the merge may be waiting on a partition that delivers nothing more
        app.timer(interval=0.25)(self.drain)
        # mode's Signal types its receivers narrower than the keyword it passes
        app.on_partitions_assigned.connect(self.check_assignment)  # type: ignore[arg-type]
        app.page("/metrics")(MetricsView)
        app.page("/status")(StatusView)
        app.page("/health")(HealthView)
        app.page("/routers/{router_id}")(RouterView)
        return app

    def seek_plan(self, assigned: set[TP]) -> dict[TP, int | None]:
        """Where each assigned input partition continues: after what the merge holds,
        else where the state stops, else (the state has none of it) its beginning."""
        plan: dict[TP, int | None] = {}
        for tp in assigned:
            if tp.topic not in self.by_name:
                continue
            nxt = self.pushed.get(tp, self.processor.positions.get((tp.topic, tp.partition)))
            plan[tp] = nxt
            if nxt is not None:
                self.pushed[tp] = nxt
        return plan

    def check_log_bounds(self, plan: dict[TP, int | None], bounds: LogBounds[TP],
                         committed: Mapping[TP, int | None]) -> dict[TP, int | None]:
        """Stop if the state has read past a log's end; count the records lost below a
        log's start (see :mod:`pipeline.stream.log_bounds`). Returns the plan, with each
        partition that lost records read from its log's start."""
        ahead = bounds.ahead(plan)
        if ahead:
            where = ", ".join(f"{tp.topic}:{tp.partition} read to offset {o:,}, its log "
                              f"ends at {e:,}" for tp, (o, e) in sorted(ahead.items()))
            self.fail(StateAheadOfInput(
                f"the state has read past the end of its input ({where}): the topic was "
                "deleted and recreated, the worker points at another cluster, or the "
                "broker lost acknowledged records. This state does not belong to these "
                f"logs; start over with a new TIERWATCH_CHECKPOINT_DIR "
                f"({RUNBOOK}#state_ahead_of_input)"))
            return plan
        # a re-seek (another rebalance, a follower's restart) counts no loss twice
        counted = {tp: o if tp not in self.lost_to else max(o or 0, self.lost_to[tp])
                   for tp, o in plan.items()}
        for tp, n in sorted(bounds.lost(counted, committed).items()):
            name, key = self.by_name[tp.topic], f"{tp.topic}:{tp.partition}"
            self.lost[key] = self.lost.get(key, 0) + n
            self.metrics.input_lost.labels(name).inc(n)
            log.error("%s: %d records were deleted (retention) before this worker's state "
                      "counted them (%s); reading on from offset %d, the log's start. The "
                      "results lack them until every window has passed them (%s#input_lost)",
                      key, n, f"it stops at offset {counted[tp]}" if counted[tp] is not None
                      else "rebuilding the group's state from the beginning",
                      bounds.first[tp], RUNBOOK)
            plan[tp] = self.lost_to[tp] = bounds.first[tp]
        return plan

    # -- intake ----------------------------------------------------------------------------
    async def ingest(self, stream: faust.StreamT) -> None:
        """The agent: push each fetched message into the merge once, then drain it."""
        by_name, pushed, merge = self.by_name, self.pushed, self.merge
        # take_events exists on faust's Stream but not on its StreamT protocol
        batches = stream.take_events(  # type: ignore[attr-defined]
            self.settings.batch_size, self.settings.batch_within_s)
        async for events in batches:
            fetched = time.monotonic()
            for event in events:
                m = event.message
                tp = TP(m.topic, m.partition)
                nxt = pushed.get(tp)
                if nxt is not None and m.offset < nxt:  # fetched again after a seek
                    continue
                pushed[tp] = m.offset + 1
                merge.push(tp, (m.timestamp, RANK[by_name[m.topic]], m.partition, m.offset),
                           (fetched, InMessage(m.topic, m.partition, m.offset, m.key,
                                               m.value)))
            await self.drain()
            self.record_lag(events)

    def record_lag(self, events: list[faust.EventT]) -> None:
        last: dict[tuple[str, int], int] = {}
        for event in events:
            m = event.message
            last[(m.topic, m.partition)] = max(last.get((m.topic, m.partition), -1), m.offset)
        for (topic, partition), offset in last.items():
            highwater = self.app.consumer.highwater(TP(topic, partition))
            if highwater is not None:
                self.metrics.consumer_lag.labels(self.by_name[topic], str(partition)).set(
                    max(0, highwater - offset - 1))

    def inputs(self) -> set[TP]:
        return {tp for tp in self.app.consumer.assignment() if tp.topic in self.by_name}

    def caught_up(self, tp: Any) -> bool:
        highwater = self.app.consumer.highwater(tp)
        return highwater is not None and self.processor.positions.get(
            (tp.topic, tp.partition), 0) >= highwater

    def fetching(self, tp: TP) -> bool:
        """Whether the fetcher has records of ``tp`` still to fetch (then waiting for them
        keeps the order exact, however slow the fetch: the idle release is only for
        partitions that end in offsets that deliver nothing, such as transaction markers).
        """
        highwater = self.app.consumer.highwater(tp)
        position = fetch_position(self.app, tp)
        if highwater is None or position is False:  # unknown: the idle timeout decides
            return False
        return position is None or position < highwater

    # -- the ordered merge -----------------------------------------------------------------
    def release(self) -> list[InMessage]:
        """What the merge can hand to the processor now, in its order."""
        now = time.monotonic()
        waited = self.metrics.merge_wait.observe
        out = []
        for fetched, msg in self._release():
            waited(now - fetched)
            out.append(msg)
        self.metrics.merge_buffered.set(len(self.merge))
        return out

    def _release(self) -> list[tuple[float, InMessage]]:
        app = self.app
        assigned = self.inputs()
        consumer: CheckpointedConsumer = app.consumer  # type: ignore[assignment]
        if app.rebalancing or assigned != self.assigned:
            # mid-rebalance the assignment is partial or empty, and a partition that is
            # not listed does not gate the merge: releasing now would break the order
            return []
        if app.standby:  # fetch nothing more; what arrives waits for the full assignment
            consumer.hold(assigned)
            self.metrics.merge_held.set(len(consumer.held))
            return []
        tables = sorted(tp for tp in assigned if self.by_name[tp.topic] == "baselines")
        streams = sorted(assigned.difference(tables))
        try:
            return self._ordered(tables, streams)
        finally:
            self.hold_ahead(consumer, streams)

    def hold_ahead(self, consumer: CheckpointedConsumer, streams: list[TP]) -> None:
        """Hold the partitions with more than their share waiting; resume at half."""
        merge = self.merge
        share = max(1, self.settings.merge_max_buffered // max(1, len(streams)))
        held = consumer.held
        consumer.hold(tp for tp in streams if merge.buffered(tp) >= share
                      or (tp in held and merge.buffered(tp) > share // 2))
        if consumer.held != held:
            self.metrics.merge_holds.inc(len(consumer.held - held))
            self.metrics.merge_held.set(len(consumer.held))

    def _ordered(self, tables: list[TP], streams: list[TP]) -> list[tuple[float, InMessage]]:
        merge, settings, metrics, caught_up = (self.merge, self.settings, self.metrics,
                                               self.caught_up)
        # the baselines topic is a table: applied as it arrives, and read to its end
        # before the first event, so every event meets the baselines already published
        ready, self.bootstrapped = merge.release_tables_first(tables, streams, caught_up,
                                                              self.bootstrapped)
        if not self.bootstrapped:
            return ready
        now = time.monotonic()
        if ready or not len(merge):
            self.blocked_since = None
        elif self.blocked_since is None:
            self.blocked_since = now
        elif now - self.blocked_since >= settings.merge_idle_s and not any(
                self.fetching(tp) for tp in streams if not merge.buffered(tp)):
            waiting = [f"{tp.topic}:{tp.partition}" for tp in streams
                       if not merge.buffered(tp) and not caught_up(tp)]
            ready += merge.release(streams, caught_up, force=True)
            metrics.merge_forced.labels("idle").inc()
            log.warning("ordered merge waited %.1f s for %s, fetched to the broker's high "
                        "watermark but short of it (transaction markers, or records still "
                        "on their way through faust), and released without them "
                        "(TIERWATCH_MERGE_IDLE_S)",
                        now - self.blocked_since, ", ".join(waiting))
            self.blocked_since = None
        if len(merge) >= settings.merge_overflow_messages:
            n = len(merge)
            ready += merge.release(streams, caught_up, force=True)
            metrics.merge_forced.labels("full").inc()
            log.error("ordered merge overflowed: %d messages buffered (limit "
                      "TIERWATCH_MERGE_OVERFLOW_MESSAGES=%d) were released out of order, so "
                      "results may differ from a replay from here on; see %s#merge_overflow",
                      n, settings.merge_overflow_messages, RUNBOOK)
        return ready

    # -- processing ------------------------------------------------------------------------
    async def drain(self) -> None:
        """Process what the merge releases (also on a timer: the merge may be waiting on a
        partition that delivers nothing more)."""
        if self.failed is not None:
            return  # the worker is stopping: process nothing more
        try:
            await self._drain()
        except Exception as err:  # the worker cannot process: stop, non-zero, loudly
            self.fail(err)

    def fail(self, err: BaseException) -> None:
        self.failed = f"{type(err).__name__}: {err}"
        log.critical("the worker cannot process (%s); exiting for the supervisor to restart "
                     "it", self.failed, exc_info=err)
        request_exit(FAILED_EXIT_CODE)

    async def _drain(self) -> None:
        processor, by_name = self.processor, self.by_name
        async with self.lock:
            released = self.release()
            for i in range(0, len(released), DRAIN_SLICE):
                part = released[i:i + DRAIN_SLICE]
                await self.publish(processor.handle_many([(by_name[m.topic], m)
                                                          for m in part]))
                if i + DRAIN_SLICE < len(released):
                    await asyncio.sleep(0)  # let the web server and the timers run
            await self._checkpoint_if_due()

    async def _checkpoint_if_due(self) -> None:
        if (time.monotonic() - self.last_checkpoint >= self.settings.checkpoint_every_s
                and self.processor.messages != self.checkpointed):
            await self.checkpoint()

    async def follow(self, released: list[tuple[str, InMessage]]) -> None:
        """A standby's processing (:mod:`pipeline.stream.follower`): what the active worker
        has committed, in the merge's order, with nothing published (the active worker
        published it) and no metric of the events (they are the active worker's too)."""
        if self.failed is not None:
            return
        processor = self.processor
        try:
            async with self.lock:
                if self.app.role != "standby":  # taken over meanwhile: the seek decides
                    return
                for i in range(0, len(released), DRAIN_SLICE):
                    processor.handle_many(released[i:i + DRAIN_SLICE])
                    await asyncio.sleep(0)
                await self._checkpoint_if_due()
        except Exception as err:  # as in drain: the worker cannot process
            self.fail(err)

    async def publish(self, out: list[OutMessage]) -> None:
        # straight to the producer: faust's Topic.send adds per-message futures, callbacks
        # and sensors that cost more than the record itself (about 1 ms a record when a
        # review request goes out for most routing messages); order and partitioning
        # (murmur2 of the key) are the producer's either way
        producer, sinks = self.app.producer, self.sinks
        for m in out:
            await producer.send(sinks[m.topic], m.key, m.value, partition=None,
                                timestamp=None, headers=None)

    # -- checkpoints -----------------------------------------------------------------------
    async def checkpoint(self) -> None:
        """Flush the outputs, then snapshot state and offsets; call holding ``lock``.

        A forked child writes the snapshot while processing goes on; the committed
        offsets move to the snapshot's once the child has made it durable.
        """
        if self.writer is not None:
            return
        self.last_checkpoint = time.monotonic()
        started = time.perf_counter()
        try:
            await self.app.producer.flush()
            snapshot = self.processor.snapshot()
            pid = self.store.fork_save(snapshot)
        except Exception:  # a failed checkpoint must not stop the worker
            log.exception("checkpoint failed; committed offsets stay at the previous one")
            self.metrics.checkpoint_failures.inc()
            return
        self.writer = asyncio.ensure_future(self.finish(pid, snapshot.positions,
                                                        snapshot.messages, started))

    async def finish(self, pid: int, positions: dict[tuple[str, int], int], messages: int,
                     started: float) -> None:
        metrics = self.metrics
        try:
            size = await asyncio.get_running_loop().run_in_executor(None, self.store.reap, pid)
        except Exception:
            log.exception("checkpoint failed; committed offsets stay at the previous one")
            metrics.checkpoint_failures.inc()
            return
        finally:
            self.writer = None
        self.app.durable_positions = {TP(t, p): o for (t, p), o in positions.items()}
        self.checkpointed = messages
        metrics.checkpoint_seconds.observe(time.perf_counter() - started)
        metrics.checkpoint_bytes.set(size)
        metrics.checkpoint_time.set(time.time())
        trim_heap()

    # -- the group -------------------------------------------------------------------------
    async def check_assignment(self, sender: Any, *args: Any, signal: Any = None,
                               **kwargs: Any) -> None:
        """Stop processing unless assigned every input partition (see the docstring).

        The partition counts come from the metadata the consumer already holds for the
        topics it subscribes to: no extra client, nothing polled.
        """
        app, by_name, settings = self.app, self.by_name, self.settings
        assigned: set[TP] = kwargs.get("assigned", args[0] if args else set())
        totals = partition_counts(app, list(by_name))
        missing = {}
        for topic, total in totals.items():
            have = sum(1 for tp in assigned if tp.topic == topic)
            missing[by_name[topic]] = 0 if total is None else max(0, total - have)
            self.metrics.partitions_missing.labels(by_name[topic]).set(missing[by_name[topic]])
        unknown = sorted(by_name[t] for t, n in totals.items() if n is None)
        if unknown:
            log.warning("partition counts of %s unknown from the consumer's metadata: "
                        "cannot tell whether this worker is assigned all of them", unknown)
        inputs_assigned = {tp for tp in assigned if tp.topic in by_name}
        was = app.role
        standby = any(missing.values())
        role = "active" if not standby else "standby" if not inputs_assigned else "partial"
        if role != "standby":  # before the seek, which reads where the state stops
            await self.follower.stop()
        app.standby, app.role = standby, role
        self.missing = missing
        self.assigned = inputs_assigned
        self.metrics.standby.set(1 if app.role == "standby" else 0)
        if app.role == "partial":
            log.error("this worker is assigned %d of the %d input partitions: a member of the "
                      "consumer group %s spreads them (another assignor: an older "
                      "tierwatch?), and each worker would count part of every router. It "
                      "stops processing until it is assigned all of them or none; run one "
                      "tierwatch version per group (%s#partial_assignment)",
                      len(inputs_assigned), len(inputs_assigned) + sum(missing.values()),
                      settings.app_id, RUNBOOK)
        elif app.role == "standby" and was != "standby":
            log.warning("standby: another worker of the consumer group %s is assigned every "
                        "input partition; this one publishes nothing and takes over, exactly "
                        "from its own state's offsets, if that worker dies%s (%s#standby)",
                        settings.app_id, ", following it meanwhile"
                        if settings.standby_follows else "", RUNBOOK)
        elif app.role == "active" and was in ("standby", "partial"):
            log.warning("assigned every input partition: taking over, from this worker's own "
                        "state (%d messages), re-reading the inputs from its offsets",
                        self.processor.messages)
        self.quiet(app.role == "standby")
        if app.role == "standby" and settings.standby_follows:
            # what the merge holds from an earlier turn as the active worker is stale now
            self.merge.clear()
            self.pushed.clear()
            self.follower.start()

    def quiet(self, on: bool) -> None:
        """Export no router's figures and count no event (a standby: they are the active
        worker's), or export and count again."""
        processor = self.processor
        processor.metrics = self._unexported if on else self.metrics
        self.metrics.read_from((lambda: None) if on else (lambda: processor.monitor))

    # -- read-outs -------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """``/status``: the monitor's status and the worker's own."""
        processor, app = self.processor, self.app
        return {**processor.monitor.status(), "worker": {
            "healthy": self.failed is None, "error": self.failed,
            "messages": processor.messages,
            "positions": {f"{t}:{p}": o for (t, p), o in processor.positions.items()},
            "checkpoint": {f"{tp.topic}:{tp.partition}": o
                           for tp, o in app.durable_positions.items()},
            "merge_buffered": len(self.merge),
            "input_lost": dict(sorted(self.lost.items())),
            "following": self.follower.status(),
            "role": app.role,
            "partitions_missing": self.missing,
            "held_partitions": sorted(
                f"{tp.topic}:{tp.partition}"
                for tp in getattr(app.consumer, "held", ()))}}


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError):  # not glibc
        return None


_TRIM = _malloc_trim()


def trim_heap() -> None:
    """Give the C heap's free pages back to the operating system (glibc only).

    Fetch buffers and the ordered merge hold up to hundreds of MB while a backlog is
    caught up; freed, that memory stays in the process (RSS) unless trimmed, and a
    container's memory limit counts it. A trim after each checkpoint costs milliseconds.
    """
    if _TRIM is not None:
        _TRIM(0)


def _worker(view: View) -> Worker:
    worker: Worker | None = getattr(view.app, "worker", None)
    assert worker is not None, "a tierwatch page served by an app without its Worker"
    return worker


class MetricsView(View):
    async def get(self, request: Request) -> Response:
        # aiohttp wants the charset apart from the media type
        media_type = CONTENT_TYPE_LATEST.split(";")[0]
        return self.bytes(generate_latest(_worker(self).registry), content_type=media_type)


class HealthView(View):
    async def get(self, request: Request) -> Response:
        worker = _worker(self)
        # 503 once the worker cannot process: it is on its way out, never a zombie
        if worker.failed is not None:
            return self.json({"status": "failed", "error": worker.failed}, status=503)
        return self.json({"status": "ok", "messages": worker.processor.messages})


class StatusView(View):
    async def get(self, request: Request) -> Response:
        worker = _worker(self)
        return self.json(worker.status(), status=200 if worker.failed is None else 503)


class RouterView(View):
    async def get(self, request: Request, router_id: str) -> Response:
        status = _worker(self).processor.monitor.status()
        router = status["routers"].get(router_id)
        if router is None:
            return self.json({"error": f"unknown router {router_id!r}"}, status=404)
        return self.json({"router_id": router_id, "watermark": status["watermark"],
                          **router})


def build_worker(settings: Settings, *, registry: CollectorRegistry | None = None,
                 monitor: Monitor | None = None) -> Worker:
    """Wire a faust app around one :class:`Processor`, restored from its checkpoint."""
    return Worker(settings, registry=registry, monitor=monitor)


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


def restore_state(store: CheckpointStore, processor: Processor, settings: Settings,
                  metrics: WorkerMetrics) -> None:
    """Restore ``processor`` from ``store``, or refuse: never a silent empty start.

    No checkpoint at all starts empty and reads every input from its beginning. An
    unusable one raises :class:`StateUnusable`, whose message says what to do, unless
    ``settings.reset_state``: then it is set aside, and the start is logged and counted.
    """
    try:
        snapshot = store.load()
    except CheckpointError as err:
        if not settings.reset_state:
            if isinstance(err, IncompatibleCheckpoint):
                todo = ("Run the tierwatch version that wrote it, or finish the upgrade as "
                        f"{RUNBOOK}#upgrading-tierwatch says: start this version once with "
                        "--reset-state true (TIERWATCH_RESET_STATE=true)")
            else:
                todo = ("Restore the checkpoint directory from a backup, or start once with "
                        "--reset-state true (TIERWATCH_RESET_STATE=true)")
            raise StateUnusable(
                f"refusing to start: {err}. {todo} to set it aside and rebuild the state "
                "from the beginning of every input topic (exact while the topics still "
                f"hold every event; see {RUNBOOK}#checkpoint_unusable)") from err
        moved = store.set_aside()
        metrics.state_restores.labels("reset").inc()
        log.warning("--reset-state: the checkpoint is unusable (%s); set aside as %s. "
                    "Rebuilding the state from the beginning of every input topic",
                    err, ", ".join(map(str, moved)))
        return
    if snapshot is None:
        metrics.state_restores.labels("none").inc()
        log.info("no checkpoint in %s: reading every input topic from its beginning",
                 store.directory)
        return
    processor.restore(snapshot)
    metrics.state_restores.labels(store.loaded_from).inc()
    log.info("restored the %s checkpoint of %s: %d messages, offsets %s", store.loaded_from,
             time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(snapshot.taken_at)),
             snapshot.messages, snapshot.positions)


def partition_counts(app: faust.App, topics: list[str]) -> dict[str, int | None]:
    """Partitions of each topic, from the metadata the consumer holds for its subscription."""
    try:
        cluster = app.consumer._thread._consumer._client.cluster  # type: ignore[attr-defined]
    except AttributeError:
        return dict.fromkeys(topics)
    counts: dict[str, int | None] = {}
    for topic in topics:
        parts = cluster.partitions_for_topic(topic)
        counts[topic] = len(parts) if parts else None
    return counts


def fetch_position(app: faust.App, tp: TP) -> int | bool | None:
    """The next offset the consumer's fetcher will fetch for ``tp`` (``None`` while it is
    being reset; ``False`` when aiokafka's internals are not where they were)."""
    try:
        consumer = app.consumer._thread._consumer  # type: ignore[attr-defined]
        st = consumer._subscription.subscription.assignment.state_value(tp)
    except AttributeError:
        return False
    if st is None or not st.has_valid_position:
        return None
    return int(st.position)


def run_worker(settings: Settings) -> None:
    """Run the worker until interrupted (``tierwatch worker``); exit non-zero if it
    stopped because it could not process, and with status 2 if its state is unusable."""
    # faust would retry a refused login forever: reach the brokers once, or say why not
    kafka_clients.check_connection(settings)
    if settings.uses_dev_control_key:  # enforce with it is refused by the settings
        log.warning("signing advisory recommendations with the public development key: "
                    "set TIERWATCH_CONTROL_KEY (`tierwatch control keygen`) before routers "
                    "trust them")
    gc.set_threshold(*GC_THRESHOLDS)  # before the state is restored, millions of objects
    try:
        worker = build_worker(settings)
    except StateUnusable as err:
        # logging is not configured before faust's worker starts: one plain, levelled line
        print(f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] [{os.getpid()}] [CRITICAL] "
              f"tierwatch.worker: {err}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    try:
        faust.Worker(worker.app, loglevel=settings.log_level.upper()).execute_from_commandline()
    finally:
        if _exit_code:
            os._exit(_exit_code[0])  # after faust's shutdown: SystemExit(0) must not win
