"""Put a simulated feed on a real broker, identically under several topic prefixes.

Each message gets a synthetic record timestamp (``T0 + i`` ms, in the replay's message
order) and a key (its first request id, so the default partitioner decides), so every
copy of the feed is the same log: workers reading two copies must agree exactly.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from kafka import KafkaConsumer, TopicPartition

from pipeline.bootstrap import build_monitor
from pipeline.core.decision_store import DecisionStore
from pipeline.core.monitor import Monitor
from pipeline.demo import simulate
from pipeline.replay import Replay
from pipeline.schemas import Baseline
from pipeline.settings import Settings
from pipeline.sim.io import write_jsonl
from pipeline.sim.simulator import Chunk
from pipeline.stream.checkpoint import CheckpointStore, Snapshot
from pipeline.topics import create_topics
from tests.integration.worker_proc import http_get

T0_MS = 1_700_000_000_000
OUTPUTS = ("alerts", "control", "review", "dlq")


@dataclass
class Feed:
    """The messages of a simulated scenario, in the replay's order."""

    baselines: list[Baseline]
    messages: list[tuple[str, bytes | None, bytes]]  # (kind, key, value)
    routing: Path
    feedback: Path
    replay_dir: Path

    @classmethod
    def simulate(cls, tmp: Path, *, scenario: str, days: float, rate: float,
                 seed: int) -> Feed:
        routing, feedback, baselines, _ = simulate(scenario, tmp / "data", days=days,
                                                   rate=rate, seed=seed)
        return cls.of_files(tmp, routing, feedback, baselines)

    @classmethod
    def of_chunks(cls, tmp: Path, chunks: Iterable[Chunk], baselines: list[Baseline]) -> Feed:
        """A feed of simulated chunks (e.g. with segments and delayed outcomes)."""
        routing, feedback = tmp / "data" / "routing.jsonl", tmp / "data" / "feedback.jsonl"
        routing.parent.mkdir(parents=True, exist_ok=True)
        write_jsonl(chunks, routing, feedback)
        return cls.of_files(tmp, routing, feedback, baselines)

    @classmethod
    def of_files(cls, tmp: Path, routing: Path, feedback: Path,
                 baselines: list[Baseline]) -> Feed:
        replay = Replay(Settings(), Monitor(), tmp / "replay")
        msgs = [(m.kind, m.key, m.value) for m in replay.messages(routing, feedback)]
        return cls(baselines, msgs, routing, feedback, tmp / "replay")

    @property
    def events(self) -> int:
        return sum(len(orjson.loads(v)) if v.startswith(b"[") else 1
                   for _, _, v in self.messages)

    def replay(self, **overrides: Any) -> tuple[Monitor, dict[str, list[bytes]]]:
        """The replay's monitor at the end (an uninterrupted run) and its output lines;
        ``overrides``: settings the worker runs with too (e.g. ``join_ttl_s``)."""
        settings = Settings(max_future_s=1e10, **overrides)
        replay = Replay(settings, build_monitor(settings), self.replay_dir)
        replay.run(self.routing, self.feedback, self.baselines, progress=False)
        return replay.monitor, {k: (self.replay_dir / f"{k}.jsonl").read_bytes().splitlines()
                                for k in OUTPUTS}

    def produce(self, bootstrap: str, settings: Settings, part: slice = slice(None)) -> int:
        """Create ``settings``' topics and write the feed; returns the input messages.

        ``part``: only these messages (and the baselines with the first part), each with
        the record timestamp it has in the whole feed, so a feed written in parts is the
        same log as one written at once.

        With aiokafka, whose record batches are checksummed in C (kafka-python's pure
        Python CRC makes a million events take minutes); every send is awaited, so a
        record the broker did not take fails the test here, not as a stuck worker.
        """
        create_topics(settings)

        async def send_all() -> None:
            producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all",
                                        linger_ms=20, max_batch_size=1 << 20,
                                        max_request_size=8 * 1024 * 1024)
            await producer.start()
            try:
                sent = [await producer.send(settings.topic("baselines"),
                                            key=b.router_id.encode(),
                                            value=b.model_dump_json().encode(),
                                            timestamp_ms=T0_MS) for b in baselines]
                for i in range(*part.indices(len(self.messages))):
                    kind, key, value = self.messages[i]
                    sent.append(await producer.send(settings.topic(kind), key=key,
                                                    value=value, timestamp_ms=T0_MS + i + 1))
                await asyncio.gather(*sent)
            finally:
                await producer.stop()

        baselines = self.baselines if not part.start else []
        asyncio.run(send_all())
        return len(baselines) + len(range(*part.indices(len(self.messages))))


def worker_env(bootstrap: str, settings: Settings, checkpoints: Path,
               **extra: str) -> dict[str, str]:
    return {"TIERWATCH_BOOTSTRAP_SERVERS": bootstrap,
            "TIERWATCH_TOPIC_PREFIX": settings.topic_prefix,
            "TIERWATCH_APP_ID": settings.app_id,
            "TIERWATCH_PARTITIONS": str(settings.partitions),
            "TIERWATCH_MAX_FUTURE_S": "1e10",
            "TIERWATCH_CHECKPOINT_DIR": str(checkpoints),
            "TIERWATCH_CHECKPOINT_EVERY_S": "3",
            "TIERWATCH_SESSION_TIMEOUT_S": "6",
            # a noisy machine must not force the merge to release early
            "TIERWATCH_MERGE_IDLE_S": "60",
            **extra}


def worker_status(base: str) -> dict[str, Any]:
    # generous: a worker catching up a backlog on a loaded machine answers slowly
    status: dict[str, Any] = orjson.loads(http_get(base + "/status", timeout=60))
    return status


def wait_durable(base: str, messages: int, proc: Any, log: Path, timeout: float) -> None:
    """Until the worker has processed ``messages`` input messages and checkpointed them."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"worker exited: {log.read_text()[-3000:]}")
        w = worker_status(base)["worker"]
        if w["messages"] >= messages and w["checkpoint"] == w["positions"]:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"worker stuck at {w['messages']}/{messages}: "
                               f"{log.read_text()[-3000:]}")
        time.sleep(0.5)


def read_topic(bootstrap: str, topic: str, timeout: float = 60.0) -> list[bytes]:
    """Every message of a (small) topic up to its current end, partition by partition."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                             group_id=None)
    try:
        parts = [TopicPartition(topic, p) for p in sorted(
            consumer.partitions_for_topic(topic) or ())]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        ends = consumer.end_offsets(parts)
        got: dict[TopicPartition, list[bytes]] = {tp: [] for tp in parts}
        deadline = time.monotonic() + timeout
        while any(consumer.position(tp) < ends[tp] for tp in parts):
            assert time.monotonic() < deadline, f"could not read {topic} to its end"
            for tp, records in consumer.poll(timeout_ms=200).items():
                got[tp].extend(r.value for r in records)
        return [v for tp in parts for v in got[tp]]
    finally:
        consumer.close()


def outputs(bootstrap: str, settings: Settings) -> dict[str, list[bytes]]:
    return {k: read_topic(bootstrap, settings.topic(k)) for k in OUTPUTS}


def identity(kind: str, value: bytes) -> Any:
    """What makes an output message the same message when it is emitted again."""
    doc = orjson.loads(value)
    if kind == "alerts":
        return (doc["alert_id"], doc["state"], doc["ts"])
    if kind == "control":
        return (doc["router_id"], doc["seq"])
    if kind == "review":
        return doc["request_id"]
    return (doc["topic"], doc["partition"], doc["offset"], doc.get("index"))


def dedup(kind: str, values: Sequence[bytes]) -> tuple[list[bytes], int]:
    """First copies in order, and how many re-emissions were dropped.

    A re-emission must carry the same bytes as the first copy (a dead letter up to its
    ``rejected_at``, which is wall time).
    """
    first: dict[Any, bytes] = {}
    out: list[bytes] = []
    for v in values:
        key = identity(kind, v)
        if key in first:
            a, b = orjson.loads(first[key]), orjson.loads(v)
            if kind == "dlq":
                a.pop("rejected_at"), b.pop("rejected_at")
            assert a == b, f"{kind} {key} re-emitted with different content"
            continue
        first[key] = v
        out.append(v)
    return out, len(values) - len(out)


def final_snapshot(checkpoints: Path) -> Snapshot:
    return CheckpointStore.decode((checkpoints / CheckpointStore.LATEST).read_bytes())


def canon(obj: Any, depth: int = 0) -> Any:
    """A structure equal for equal states whatever the process: sets sorted, arrays listed."""
    import numpy as np

    if depth > 60:
        raise RecursionError("state nests too deep")
    if isinstance(obj, (str, int, float, bool, bytes)) or obj is None:
        return obj
    if isinstance(obj, np.ndarray):
        return ("ndarray", str(obj.dtype), obj.shape, obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return ("dict", sorted(((repr(canon(k, depth + 1)), canon(v, depth + 1))
                                for k, v in obj.items()), key=lambda kv: kv[0]))
    if isinstance(obj, (set, frozenset)):
        return ("set", sorted(repr(canon(x, depth + 1)) for x in obj))
    if isinstance(obj, (list, tuple)):
        return (type(obj).__name__, [canon(x, depth + 1) for x in obj])
    if hasattr(obj, "model_dump"):
        return (type(obj).__name__, obj.model_dump(mode="json"))
    if isinstance(obj, DecisionStore):  # in memory or on disk: compared by content
        return ("DecisionStore", len(obj), obj.n_seen,
                [canon(r, depth + 1) for r in obj.records()], list(obj.seen_items()))
    fields: dict[str, Any] = {}
    if type(obj).__getstate__ is not object.__getstate__:  # what a checkpoint holds
        state = obj.__getstate__()
        if isinstance(state, dict):
            return (type(obj).__name__, canon(state, depth + 1))
    if hasattr(obj, "__dict__"):
        fields.update(vars(obj))
    for cls in type(obj).__mro__:
        for slot in getattr(cls, "__slots__", ()):
            if hasattr(obj, slot):
                fields[slot] = getattr(obj, slot)
    if not fields and not hasattr(obj, "__dict__"):
        return (type(obj).__name__, repr(obj))
    return (type(obj).__name__, canon(fields, depth + 1))


def differences(a: Any, b: Any, path: str = "state") -> Iterator[str]:
    """Paths at which two canonical states differ (for a readable assertion message)."""
    if a == b:
        return
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            label = x[0] if isinstance(x, tuple) and x and isinstance(x[0], str) else i
            yield from differences(x, y, f"{path}/{label}")
    else:
        yield f"{path}: {str(a)[:300]} != {str(b)[:300]}"
