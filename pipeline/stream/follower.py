"""A standby that follows the active worker, so that its takeover starts from now.

A standby is assigned no input partition (:mod:`pipeline.stream.assignor`). Left idle,
it takes over from its own state's offsets: from the beginning of every topic if it was
never active, which takes as long as a cold start and needs every record still on the
topics. Following, it reads every input partition itself, outside the group, up to the
offsets the group has committed. Those are the active worker's latest durable
checkpoint's (commits follow checkpoints), and the active worker flushes its outputs
before each checkpoint, so everything below them is already published. The follower
feeds those records through an ordered merge of its own into the same processor, in the
same order a restart would, publishes nothing and checkpoints its own state. When it is
assigned the partitions it stops, and the worker seeks them to where its state stops:
it re-reads only what the active worker processed after its last commit.

The follower reads with aiokafka, as faust does, and asks for the group's committed
offsets with kafka-python's admin client in a thread of its own; both take the
connection settings the CLI uses, TLS and SASL included. (kafka-python's consumer, tried
first, stopped fetching a partition paused with records still buffered: it parks them
and restores them only while its in-line buffer is empty, which it may never be again.)

>>> limits = Limits({"r": 5})
>>> limits.below("r", 4), limits.below("r", 5), limits.below("f", 0)
(True, False, False)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from pipeline import kafka_clients
from pipeline.core.merge import OrderedMerge
from pipeline.stream.log_bounds import LogBounds
from pipeline.stream.processor import InMessage

if TYPE_CHECKING:
    from pipeline.stream.app import Worker

__all__ = ["Follower", "Limits"]

log = logging.getLogger("tierwatch.worker")
POLL_MS = 500
LIMITS_EVERY_S = 2.0
RETRY_S = 5.0


@dataclass(frozen=True, slots=True)
class Limits:
    """The group's committed offset per partition: the follower reads below it only."""

    offsets: Mapping[Any, int]

    def below(self, tp: Any, offset: int) -> bool:
        return offset < self.offsets.get(tp, 0)


class Follower:
    """Keeps a standby's state current from the group's committed offsets (see module).

    ``rank`` orders the inputs within one record timestamp, as the worker's merge does;
    ``tables``: the inputs applied as they come (the baselines), before any event.
    """

    def __init__(self, worker: Worker, topics: Mapping[str, str], rank: Mapping[str, int],
                 tables: frozenset[str]) -> None:
        self.worker = worker
        self.topics = dict(topics)  # topic name -> short name
        self.rank = dict(rank)
        self.tables = tables
        self.merge: OrderedMerge[InMessage] = OrderedMerge()
        #: fetched records the group has not committed past yet: (offset, timestamp, record)
        self.held: dict[TopicPartition, deque[tuple[int, int, InMessage]]] = {}
        #: the next offset to take, per partition (past transaction markers: the
        #: consumer's position)
        self.next: dict[TopicPartition, int] = {}
        self.limits = Limits({})
        self.bootstrapped = False
        self.task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="tierwatch-follower")

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        if self.task is None or self.task.done():
            self._stop.clear()
            self.task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        """Stop reading; returns once the batch being processed is done."""
        self._stop.set()
        task, self.task = self.task, None
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)

    def status(self) -> dict[str, Any] | None:
        """For ``/status``: the committed offsets it follows, and how far behind them it
        is (records fetched or not); ``None`` when not following."""
        if self.task is None:
            return None
        behind = {f"{tp.topic}:{tp.partition}": max(0, o - self.next.get(tp, 0))
                  for tp, o in sorted(self.limits.offsets.items())}
        return {"behind": sum(behind.values()), "partitions": behind,
                "buffered": len(self.merge)}

    # -- the loop --------------------------------------------------------------------------
    async def _run(self) -> None:
        while not self._stop.is_set():
            try:
                await self._follow()
            except Exception as err:  # a broker outage must not stop the standby
                log.warning("standby: following the active worker failed (%s); retrying "
                            "in %.0f s", err, RETRY_S)
                with contextlib.suppress(TimeoutError):  # a takeover need not wait
                    await asyncio.wait_for(self._stop.wait(), RETRY_S)

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def _follow(self) -> None:
        settings = self.worker.settings
        consumer = AIOKafkaConsumer(
            **kafka_clients.aiokafka_kwargs(settings), group_id=None,
            enable_auto_commit=False, auto_offset_reset="earliest",
            max_partition_fetch_bytes=settings.max_message_bytes)
        admin = await self._call(lambda: kafka_clients.admin(
            settings, client_id=f"{settings.app_id}-follower"))
        try:
            await consumer.start()
            tps, bounds = await self._bounds(consumer)
            committed = await self._call(self._committed, admin)
            # what Kafka no longer holds is counted as lost, as at the worker's own seek
            plan = self.worker.check_log_bounds(
                {tp: self.worker.processor.positions.get((tp.topic, tp.partition))
                 for tp in tps}, bounds, {tp: committed.get(tp) for tp in tps})
            if self.worker.failed is not None:
                return  # the state has read past a log's end: the worker is stopping
            await self._seek(consumer, plan)
            log.info("standby: following the active worker from this state's offsets")
            limits_at = 0.0
            while not self._stop.is_set():
                if time.monotonic() - limits_at >= LIMITS_EVERY_S:
                    self.limits = Limits(await self._call(self._committed, admin))
                    limits_at = time.monotonic()
                    self._admit(consumer)
                records = await consumer.getmany(timeout_ms=POLL_MS)
                for tp, batch in records.items():
                    self._take(tp, batch)
                for tp in self.next:
                    at = await consumer.position(tp)
                    if not self.held.get(tp) and at > self.next[tp]:
                        self.next[tp] = at  # past records it will never see (markers)
                self._hold(consumer)
                await self._process(self._release())
        finally:
            await consumer.stop()
            await self._call(admin.close)

    async def _bounds(self, consumer: Any) -> tuple[list[TopicPartition], LogBounds[Any]]:
        """Assign every input partition; where their logs start and end."""
        tps = await self._call(self._partitions)
        consumer.assign(tps)
        return tps, LogBounds(await consumer.beginning_offsets(tps),
                              await consumer.end_offsets(tps))

    async def _seek(self, consumer: Any, plan: Mapping[TopicPartition, int | None]) -> None:
        self.merge, self.held, self.next, self.bootstrapped = OrderedMerge(), {}, {}, False
        for tp, at in plan.items():
            if at is None:
                await consumer.seek_to_beginning(tp)
                self.next[tp] = 0
            else:
                consumer.seek(tp, at)
                self.next[tp] = at

    def _partitions(self) -> list[TopicPartition]:
        # aiokafka's consumer knows the partitions of assigned topics only
        reader = kafka_clients.consumer(self.worker.settings)
        try:
            return [TopicPartition(t, p) for t in self.topics
                    for p in sorted(reader.partitions_for_topic(t) or ())]
        finally:
            reader.close()

    def _committed(self, admin: Any) -> dict[TopicPartition, int]:
        group = self.worker.settings.app_id
        got = admin.list_group_offsets({group: None}).get(group, {})
        return {TopicPartition(tp.topic, tp.partition): meta.offset
                for tp, meta in got.items() if tp.topic in self.topics and meta.offset >= 0}

    def _take(self, tp: TopicPartition, records: list[Any]) -> None:
        queue = self.held.setdefault(tp, deque())
        for r in records:
            if r.offset >= self.next.get(tp, 0) and (not queue or r.offset > queue[-1][0]):
                queue.append((r.offset, r.timestamp,
                              InMessage(r.topic, r.partition, r.offset, r.key, r.value)))
        self._push(tp)

    def _push(self, tp: TopicPartition) -> None:
        """Move ``tp``'s fetched records that the group has committed past into the merge."""
        queue = self.held.get(tp)
        rank = self.rank[self.topics[tp.topic]]
        while queue and self.limits.below(tp, queue[0][0]):
            offset, ts, msg = queue.popleft()
            self.next[tp] = offset + 1
            self.merge.push(tp, (ts, rank, tp.partition, offset), msg)

    def _admit(self, consumer: Any) -> None:
        """After the limits moved: push what they now admit, and fetch again."""
        for tp in list(self.next):
            self._push(tp)
        self._hold(consumer)

    def _hold(self, consumer: Any) -> None:
        """Fetch nothing more for a partition holding a record the group has not
        committed past (it has everything the limit admits); resume the others."""
        held = [tp for tp in self.next if self.held.get(tp)]
        consumer.pause(*held)
        consumer.resume(*[tp for tp in self.next if tp not in held])

    def caught_up(self, tp: TopicPartition) -> bool:
        """Nothing below the limit is left to fetch (it may still wait in the merge)."""
        return not self.limits.below(tp, self.next.get(tp, 0)) or bool(self.held.get(tp))

    def _release(self) -> list[tuple[str, InMessage]]:
        tables = [tp for tp in self.next if self.topics[tp.topic] in self.tables]
        streams = sorted((tp for tp in self.next if tp not in tables),
                         key=lambda tp: (tp.topic, tp.partition))
        ready, self.bootstrapped = self.merge.release_tables_first(
            tables, streams, self.caught_up, self.bootstrapped)
        return [(self.topics[m.topic], m) for m in ready]

    async def _process(self, released: list[tuple[str, InMessage]]) -> None:
        """Process what the merge released; the outputs were the active worker's to send."""
        await self.worker.follow(released)
