"""Event time jumps, and errors inside the monitor, through a real broker (issue #15).

Acceptance 1: an 8-day and a 400-day forward jump and a backward jump beyond the
lateness give no crash, and the worker's outputs and state equal ``tierwatch replay``'s
of the same files. A monitor exception dead-letters its message and the worker goes on
(equal to a replay that meets the same exception); failing evaluations make the worker
exit non-zero, promptly, with ``/health`` saying so until then. Never a hang.

The feed is six simulated days of the Pareto trap cut in three: days 2-4 are moved 8 days
later and days 4-6 another 400 days later (all their events, routing and feedback), and a
few routing and feedback events dated 10 days behind the watermark (beyond the 7-day
lateness) are slipped in after the second jump.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipeline.core.monitor import Monitor
from pipeline.demo import simulate
from pipeline.replay import Replay
from pipeline.settings import Settings
from pipeline.stream.checkpoint import CheckpointStore, Snapshot
from tests.integration.feed import (
    Feed,
    canon,
    dedup,
    differences,
    final_snapshot,
    outputs,
    wait_durable,
    worker_env,
)
from tests.integration.worker_proc import http_get, running_worker

pytestmark = pytest.mark.kafka

DAY = 86400.0
JUMPS = ((2 * DAY, 8 * DAY), (4 * DAY, 400 * DAY))  # (from this sim time on, shift by)
BEHIND = 10 * DAY  # beyond the 7-day allowed lateness


def _epoch(ev: dict[str, Any]) -> float:
    return datetime.fromisoformat(ev["ts"]).timestamp()


def _jumped(path: Path, start: float, late_after: float | None = None) -> list[bytes]:
    """The file's lines with the jumps applied (by each event's own time)."""
    out: list[bytes] = []
    stale = 0
    for line in path.read_bytes().splitlines():
        ev = orjson.loads(line)
        t = _epoch(ev)
        shift = sum(by for at, by in JUMPS if t - start >= at)
        ev["ts"] = (datetime.fromisoformat(ev["ts"]) + timedelta(seconds=shift)).isoformat()
        out.append(orjson.dumps(ev))
        if late_after is not None and t - start >= late_after and stale < 3:
            # a copy from far behind the watermark, with fresh ids: dead-lettered as late
            stale += 1
            old = dict(ev, event_id=f"stale-{stale}-{ev['event_id']}",
                       request_id=f"stale-{stale}-{ev['request_id']}")
            old["ts"] = (datetime.fromisoformat(ev["ts"]) - timedelta(seconds=BEHIND)
                         ).isoformat()
            out.append(orjson.dumps(old))
    return out


@pytest.fixture(scope="module")
def feed(tmp_path_factory: pytest.TempPathFactory) -> Feed:
    tmp = tmp_path_factory.mktemp("jumps")
    routing, feedback, baselines, _ = simulate("pareto-trap", tmp / "data", days=6, rate=0.02,
                                               seed=11)
    start = _epoch(orjson.loads(routing.read_bytes().split(b"\n", 1)[0]))
    late_after = JUMPS[1][0] + 3600.0
    routing.write_bytes(b"\n".join(_jumped(routing, start, late_after)) + b"\n")
    feedback.write_bytes(b"\n".join(_jumped(feedback, start, late_after)) + b"\n")
    replay = Replay(Settings(), Monitor(), tmp / "replay")
    msgs = [(m.kind, m.key, m.value) for m in replay.messages(routing, feedback)]
    return Feed(baselines, msgs, routing, feedback, tmp / "replay")


def _settings(bootstrap: str) -> Settings:
    prefix = f"j{uuid.uuid4().hex[:8]}.tierwatch"
    return Settings(bootstrap_servers=bootstrap, topic_prefix=prefix, app_id=f"{prefix}-w",
                    partitions=2, max_future_s=1e10)


def _without_origins(monitor: Monitor) -> Monitor:
    """Pending feedback keeps where it came from (Kafka coordinates in the worker, file
    lines in the replay); everything else must be equal."""
    join = monitor.join
    join._pending = {rid: [fb._replace(origin=None) for fb in fbs]
                     for rid, fbs in join._pending.items()}
    join._pending_heap = [fb._replace(origin=None) for fb in join._pending_heap]
    return monitor


def assert_same_state(expected: Monitor, got: Snapshot, messages: int) -> None:
    assert got.messages == messages
    as_saved = CheckpointStore.decode(CheckpointStore.encode(Snapshot({}, expected))).state
    want, have = canon(_without_origins(as_saved)), canon(_without_origins(got.state))
    assert want == have, "states differ:\n" + "\n".join(list(differences(want, have))[:20])


def _dead_letter(v: bytes) -> tuple[Any, ...]:
    """A dead letter by what it says, not where: the worker names Kafka coordinates,
    the replay file lines."""
    d = orjson.loads(v)
    return (d["reason_class"], d["reason"], d.get("field"), d["payload"])


def assert_same_outputs(want: dict[str, list[bytes]], got: dict[str, list[bytes]]) -> None:
    for kind, values in want.items():
        first, _ = dedup(kind, got[kind])
        if kind == "dlq":
            assert Counter(map(_dead_letter, first)) == Counter(map(_dead_letter, values))
        else:
            assert first == values, f"{kind} differ"


def _run(bootstrap: str, feed: Feed, tmp: Path, **extra: str) -> tuple[Settings, int, Path]:
    s = _settings(bootstrap)
    n = feed.produce(bootstrap, s)
    log = tmp / f"{s.topic_prefix}.log"
    env = worker_env(bootstrap, s, tmp / f"cp-{s.topic_prefix}", **extra)
    with running_worker(env, log, ready_timeout=120) as (proc, base):
        wait_durable(base, n, proc, log, timeout=300)
        assert orjson.loads(http_get(base + "/health"))["status"] == "ok"
        assert proc.poll() is None
    return s, n, tmp / f"cp-{s.topic_prefix}"


def test_jumps_forward_and_back_equal_the_replay(kafka_bootstrap: str, feed: Feed,
                                                  tmp_path: Path) -> None:
    monitor, want = feed.replay()
    late = [orjson.loads(v) for v in want["dlq"]]
    assert [d["reason_class"] for d in late] == ["late"] * 6, late  # 3 routing, 3 feedback
    wm = monitor.watermark
    assert wm is not None and wm - _epoch(orjson.loads(
        feed.routing.read_bytes().split(b"\n", 1)[0])) > 408 * DAY
    assert want["alerts"] and want["review"], "nothing to compare"
    s, n, cp = _run(kafka_bootstrap, feed, tmp_path)
    got = outputs(kafka_bootstrap, s)
    assert_same_outputs(want, got)
    assert_same_state(monitor, final_snapshot(cp), n)
    # a late event of a batch carries its own original bytes and its index
    records = [orjson.loads(v) for v in got["dlq"]]
    lines = set(feed.routing.read_bytes().splitlines()) | set(
        feed.feedback.read_bytes().splitlines())
    assert all(r["payload"].encode() in lines for r in records)
    assert all(r["partition"] is not None and r["offset"] is not None for r in records)


def _first_event(feed: Feed, after: int) -> str:
    """The event_id of the first event of the first routing batch after message ``after``."""
    for kind, _, value in feed.messages[after:]:
        if kind == "routing" and value.startswith(b"["):
            return str(orjson.loads(value)[0]["event_id"])
    raise AssertionError("no routing batch")


def test_an_exception_in_the_monitor_dead_letters_its_message(
        kafka_bootstrap: str, feed: Feed, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    fault = f"message:{_first_event(feed, len(feed.messages) // 3)}"
    monkeypatch.setenv("TIERWATCH_TEST_FAULT", fault)  # the replay meets the same bug
    monitor, want = feed.replay()
    internal = [orjson.loads(v) for v in want["dlq"] if b'"internal_error"' in v]
    assert len(internal) == 1 and "injected fault" in internal[0]["reason"]
    s, n, cp = _run(kafka_bootstrap, feed, tmp_path, TIERWATCH_TEST_FAULT=fault)
    got = outputs(kafka_bootstrap, s)
    assert_same_outputs(want, got)
    assert_same_state(monitor, final_snapshot(cp), n)
    record = next(orjson.loads(v) for v in got["dlq"] if b'"internal_error"' in v)
    assert record["payload"].encode() in {v for _, _, v in feed.messages}  # the message
    log = (tmp_path / f"{s.topic_prefix}.log").read_text()
    assert "internal error processing" in log and "Traceback" in log


def test_failing_evaluations_stop_the_worker_non_zero(kafka_bootstrap: str, feed: Feed,
                                                      tmp_path: Path) -> None:
    s = _settings(kafka_bootstrap)
    feed.produce(kafka_bootstrap, s)
    log = tmp_path / "worker.log"
    fault = f"flush:{_first_event(feed, 10)}"
    env = worker_env(kafka_bootstrap, s, tmp_path / "cp", TIERWATCH_TEST_FAULT=fault)
    with running_worker(env, log, ready_timeout=120) as (proc, _):
        started = time.monotonic()
        try:
            code = proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            pytest.fail("the worker hangs instead of exiting: " + log.read_text()[-3000:])
    assert code == 70, log.read_text()[-3000:]
    assert time.monotonic() - started < 90
    text = log.read_text()
    assert "the worker cannot process" in text and "injected fault in the evaluations" in text
    # a graceful shutdown, not the watchdog's: faust no longer waits for the acks of the
    # messages taken before the failure (it waited forever, ignoring SIGTERM)
    assert "wait_empty" not in text and "Closing event loop" in text
    # restarted on the same checkpoints it stops again: loud, never a zombie
    with running_worker(env, tmp_path / "again.log", ready_timeout=120) as (proc, _):
        assert proc.wait(timeout=90) == 70
