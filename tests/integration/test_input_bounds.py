"""Records Kafka no longer holds are reported, and a state from other logs is refused.

A worker counts the first half of a small feed and stops. The rest is produced while it
is down, and the routing topic's oldest records are deleted up to a few records past
where the worker's state stops (``delete_records``, what retention does). Then:

- **Restarted on its state**, the worker reads on from the log's start and says, per
  partition, how many records it lost: in ``/status``, ``tierwatch_input_lost_messages``
  and one error line each; everything Kafka still holds is counted, once.
- **A standby rebuilding the group's state** from an empty directory lacks every record
  below the log's start: it reports those, as it follows the active worker and as the
  only worker.
- **A new deployment** (another consumer group) on the same topics never counted
  anything, so it reports nothing.
- **Topics recreated** under the state: the state has read past the new logs' ends, and
  the worker refuses to run on it (exit 70, a ``CRITICAL`` line naming the partitions).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

from pipeline.settings import Settings
from pipeline.stream.app import FAILED_EXIT_CODE
from pipeline.topics import create_topics
from tests.integration.feed import Feed, final_snapshot, wait_durable, worker_env, worker_status
from tests.integration.test_exactness import metric
from tests.integration.test_recovery import _settings
from tests.integration.worker_proc import eventually, free_port, running_worker

pytestmark = pytest.mark.kafka
PARTITIONS = 2
CUT = 3  # records deleted past the state's offset, per routing partition


def lost(base: str) -> dict[str, int]:
    return dict(worker_status(base)["worker"]["input_lost"])


def request_ids(bootstrap: str, topic: str, ranges: dict[int, tuple[int, int]]) -> set[str]:
    """The request ids of the events in ``topic``'s records ``[a, b)`` of each partition."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                             group_id=None)
    try:
        ids: set[str] = set()
        for p, (a, b) in ranges.items():
            tp = TopicPartition(topic, p)
            consumer.assign([tp])
            consumer.seek(tp, a)
            while consumer.position(tp) < b:
                for record in consumer.poll(timeout_ms=1000).get(tp, []):
                    if record.offset < b:
                        ids.update(ev["request_id"] for ev in orjson.loads(record.value))
        return ids
    finally:
        consumer.close()


def without(path: Path, ids: set[str], out: Path) -> Path:
    """``path``'s JSON lines less the events of ``ids``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(b"".join(line + b"\n" for line in path.read_bytes().splitlines()
                             if orjson.loads(line)["request_id"] not in ids))
    return out


def routed(status: dict[str, Any]) -> dict[tuple[str, str], int]:
    return {(router, tier): n for router, r in status["routers"].items()
            for tier, n in r["routed"].items()}


def test_records_lost_to_retention_are_reported_and_a_foreign_state_refused(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    feed = Feed.simulate(tmp_path / "feed", scenario="steady", days=3.0, rate=0.02, seed=11)
    s = _settings(kafka_bootstrap, PARTITIONS)
    half = len(feed.messages) // 2
    first = feed.produce(kafka_bootstrap, s, slice(0, half))
    cp = tmp_path / "cp"
    env = worker_env(kafka_bootstrap, s, cp)

    # 1. a worker counts the first half and stops
    with running_worker(env, tmp_path / "w1.log", ready_timeout=120) as (proc, base):
        wait_durable(base, first, proc, tmp_path / "w1.log", 300)
    routing = s.topic("routing")
    stops = {p: final_snapshot(cp).positions[(routing, p)] for p in range(PARTITIONS)}

    # 2. the rest arrives while it is down; retention deletes a few records past its state
    rest = feed.produce(kafka_bootstrap, s, slice(half, None))
    cut = {p: stops[p] + CUT for p in range(PARTITIONS)}
    deleted = request_ids(kafka_bootstrap, routing,
                          {p: (stops[p], cut[p]) for p in range(PARTITIONS)})
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap, client_id="tierwatch-tests")
    try:
        admin.delete_records({TopicPartition(routing, p): o for p, o in cut.items()})
    finally:
        admin.close()
    want_lost = {f"{routing}:{p}": CUT for p in range(PARTITIONS)}

    # 3. restarted on its state: reads on from the logs' starts, says what it lost
    log = tmp_path / "w2.log"
    with running_worker(env, log, ready_timeout=120) as (proc, base):
        wait_durable(base, first + rest - PARTITIONS * CUT, proc, log, 300)
        assert lost(base) == want_lost
        assert metric(base, "tierwatch_input_lost_messages", 'input="routing"') == \
            PARTITIONS * CUT
        assert metric(base, "tierwatch_input_lost_messages", 'input="feedback"') == 0
        status = worker_status(base)
    ends = {p: final_snapshot(cp).positions[(routing, p)] for p in range(PARTITIONS)}
    text = log.read_text()
    for p in range(PARTITIONS):
        assert (f"{routing}:{p}: {CUT} records were deleted (retention) before this "
                f"worker's state counted them (it stops at offset {stops[p]})") in text
    # nothing else lost, nothing counted twice: the replay of the feed less what was deleted
    assert deleted and status["worker"]["messages"] == first + rest - PARTITIONS * CUT
    less = Feed.of_files(tmp_path / "less", without(feed.routing, deleted,
                                                     tmp_path / "less" / "routing.jsonl"),
                         feed.feedback, feed.baselines)
    monitor, _ = less.replay()
    assert routed(status) == monitor.counts.routed

    held = first + rest - sum(cut.values())  # what the topics still hold

    # 4. a standby rebuilding the group's state from nothing lacks every deleted record:
    # following the active worker, then once it is the only worker
    want_rebuilt = {f"{routing}:{p}": cut[p] for p in range(PARTITIONS)}
    log = tmp_path / "standby.log"
    b_env = worker_env(kafka_bootstrap, s, tmp_path / "cp-b")
    with running_worker(env, tmp_path / "w3.log", ready_timeout=120), \
            running_worker(b_env, log, ready_timeout=120) as (_, b_base):
        eventually(lambda: worker_status(b_base)["worker"]["role"] == "standby",
                   "the second worker to stand by", timeout=60)
        eventually(lambda: lost(b_base) == want_rebuilt,
                   "the follower to report the records it lacks", timeout=60)
        eventually(lambda: worker_status(b_base)["worker"]["messages"] == held,
                   "the follower to read all that is left", timeout=120)
    assert "rebuilding the group's state from the beginning" in log.read_text()
    with running_worker(worker_env(kafka_bootstrap, s, tmp_path / "cp-d"), log,
                        ready_timeout=120) as (proc, base):
        wait_durable(base, held, proc, log, 300)
        assert lost(base) == want_rebuilt

    # 5. a new deployment (another group) on the same topics lost nothing it counted
    fresh = s.model_copy(update={"app_id": s.app_id + "-new"})
    log = tmp_path / "fresh.log"
    with running_worker(worker_env(kafka_bootstrap, fresh, tmp_path / "cp-c"), log,
                        ready_timeout=120) as (proc, base):
        wait_durable(base, held, proc, log, 300)
        assert lost(base) == {}
        assert metric(base, "tierwatch_input_lost_messages", 'input="routing"') == 0

    # 6. the topics recreated under the first state: refused, loudly
    recreate(s)
    log = tmp_path / "ahead.log"
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "worker"],
                            env={**os.environ, **env, "TIERWATCH_WEB_PORT": str(free_port())},
                            stdout=log.open("wb"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        code = proc.wait(180)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text()
    assert code == FAILED_EXIT_CODE, text[-3000:]
    assert "the state has read past the end of its input" in text, text[-3000:]
    for p in range(PARTITIONS):
        assert f"{routing}:{p} read to offset {ends[p]:,}, its log ends at 0" in text


def recreate(settings: Settings) -> None:
    """Delete the input topics and create them again, empty."""
    inputs = [settings.topic(k) for k in ("routing", "feedback")]
    admin = KafkaAdminClient(bootstrap_servers=settings.bootstrap_servers,
                             client_id="tierwatch-tests")
    try:
        admin.delete_topics(inputs)
        eventually(lambda: not set(inputs) & set(admin.list_topics()),
                   "the input topics to be deleted", timeout=60, every=0.5)
    finally:
        admin.close()
    deadline = time.monotonic() + 60
    while True:
        try:
            create_topics(settings)
            return
        except Exception:  # "marked for deletion" for a moment after the delete returns
            if time.monotonic() > deadline:
                raise
            time.sleep(1)
