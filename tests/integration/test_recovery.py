"""Exact recovery: a worker SIGKILLed at random points ends where an unharmed one ends.

A simulated feed goes onto the broker (see :mod:`tests.integration.feed`). A worker reads
it and is killed with SIGKILL at random points, then restarted on the same checkpoint
directory and consumer group. At the end its checkpoint holds the state of an
uninterrupted run (counts, histograms, joins, alert books: compared field by field),
with every message counted once, and the output topics hold the uninterrupted run's
records once re-emissions, recognisable by their ids and identical to their first copy,
are dropped.

The default run kills three times over ~60k events and compares with the in-process
replay of the same messages (the worker's merge puts them in the replay's order, since
their record timestamps follow it). ``make soak`` runs the acceptance size: over a
million events, five kills, compared with an unharmed worker and with the replay.
"""

from __future__ import annotations

import os
import random
import signal
import time
import uuid
from pathlib import Path

import orjson
import pytest

from pipeline.core.monitor import Monitor
from pipeline.settings import Settings
from pipeline.stream.checkpoint import CheckpointStore, Snapshot
from tests.integration.feed import (
    OUTPUTS,
    Feed,
    canon,
    dedup,
    differences,
    final_snapshot,
    outputs,
    wait_durable,
    worker_env,
    worker_status,
)
from tests.integration.worker_proc import running_worker

pytestmark = pytest.mark.kafka


def _settings(bootstrap: str, partitions: int) -> Settings:
    prefix = f"r{uuid.uuid4().hex[:8]}.tierwatch"
    return Settings(bootstrap_servers=bootstrap, topic_prefix=prefix, app_id=f"{prefix}-w",
                    partitions=partitions, max_future_s=1e10)


def run_through(bootstrap: str, settings: Settings, checkpoints: Path, messages: int,
                log: Path, timeout: float) -> None:
    with running_worker(worker_env(bootstrap, settings, checkpoints), log,
                        ready_timeout=120) as (proc, base):
        wait_durable(base, messages, proc, log, timeout)


def run_with_kills(bootstrap: str, settings: Settings, checkpoints: Path, messages: int,
                   logs: Path, kills: int, seed: int, timeout: float) -> list[int]:
    """Kill the worker ``kills`` times at random progress points; returns those points."""
    rng = random.Random(seed)
    targets = sorted(rng.uniform(0.05, 0.95) * messages for _ in range(kills))
    killed_at = []
    env = worker_env(bootstrap, settings, checkpoints)
    for i, target in enumerate(targets):
        log = logs / f"worker-{i}.log"
        with running_worker(env, log, ready_timeout=120) as (proc, base):
            deadline = time.monotonic() + timeout
            while (done := worker_status(base)["worker"]["messages"]) < target:
                assert proc.poll() is None, log.read_text()[-3000:]
                assert time.monotonic() < deadline, f"stuck at {done}: {log.read_text()[-3000:]}"
                time.sleep(rng.uniform(0.01, 0.2))
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            killed_at.append(done)
    run_through(bootstrap, settings, checkpoints, messages, logs / "worker-last.log", timeout)
    return killed_at


def assert_same_state(expected: Monitor, got: Snapshot, settings: Settings,
                      messages: int) -> None:
    """The checkpointed state equals ``expected`` field by field, and counts every message."""
    assert got.messages == messages
    assert sum(got.positions.values()) == messages, got.positions
    assert all(t.startswith(settings.topic_prefix) for t, _ in got.positions)
    # through the snapshot codec, which leaves the signing key out
    as_saved = CheckpointStore.decode(CheckpointStore.encode(Snapshot({}, expected))).state
    want, have = canon(as_saved), canon(got.state)
    assert want == have, "states differ:\n" + "\n".join(list(differences(want, have))[:20])


def assert_same_outputs(want: dict[str, list[bytes]],
                        got: dict[str, list[bytes]]) -> dict[str, int]:
    """Equal outputs once re-emissions are dropped; returns the re-emissions per topic."""
    re_emitted = {}
    for kind, values in want.items():
        first, re_emitted[kind] = dedup(kind, got[kind])
        if kind == "dlq":  # wall time, and the topic name, differ by run
            def plain(vs: list[bytes]) -> list[dict[str, object]]:
                return [{**orjson.loads(v), "rejected_at": None, "topic": None} for v in vs]
            assert plain(first) == plain(values)
        else:
            assert first == values, f"{kind} differ"
    assert want["alerts"], "the feed must make alerts fire, or the comparison is vacuous"
    return re_emitted


def replay_outputs(feed: Feed) -> dict[str, list[bytes]]:
    return {k: (feed.replay_dir / f"{k}.jsonl").read_bytes().splitlines() for k in OUTPUTS}


@pytest.fixture(scope="module")
def feed(tmp_path_factory: pytest.TempPathFactory) -> Feed:
    return Feed.simulate(tmp_path_factory.mktemp("feed"), scenario="pareto-trap", days=24,
                         rate=0.03, seed=21)


def test_sigkill_at_random_points_changes_nothing(kafka_bootstrap: str, feed: Feed,
                                                  tmp_path: Path) -> None:
    """Three SIGKILLs: state and outputs equal the uninterrupted replay's, exactly."""
    b = _settings(kafka_bootstrap, 2)
    n = feed.produce(kafka_bootstrap, b)
    killed = run_with_kills(kafka_bootstrap, b, tmp_path / "cp", n, tmp_path, kills=3,
                            seed=4, timeout=240)
    assert len(killed) == 3 and all(0 < k < n for k in killed), killed
    assert_same_state(feed.monitor, final_snapshot(tmp_path / "cp"), b, n)
    assert_same_outputs(replay_outputs(feed), outputs(kafka_bootstrap, b))


@pytest.mark.soak
def test_soak_five_sigkills_over_a_million_events(kafka_bootstrap: str,
                                                  tmp_path: Path) -> None:
    """The acceptance size: >1M events, five kills, against an unharmed worker too."""
    feed = Feed.simulate(tmp_path / "feed", scenario="pareto-trap", days=40, rate=0.3, seed=3)
    assert feed.events >= 1_000_000, feed.events
    a, b = _settings(kafka_bootstrap, 4), _settings(kafka_bootstrap, 4)
    n = feed.produce(kafka_bootstrap, a)
    assert feed.produce(kafka_bootstrap, b) == n
    started = time.monotonic()
    run_through(kafka_bootstrap, a, tmp_path / "cp-a", n, tmp_path / "a.log", timeout=3600)
    unharmed = time.monotonic() - started
    started = time.monotonic()
    killed = run_with_kills(kafka_bootstrap, b, tmp_path / "cp-b", n, tmp_path, kills=5,
                            seed=9, timeout=3600)
    harmed = time.monotonic() - started
    assert len(killed) == 5 and all(0 < k < n for k in killed), killed
    snap_a = final_snapshot(tmp_path / "cp-a")
    assert_same_state(feed.monitor, snap_a, a, n)
    assert_same_state(feed.monitor, final_snapshot(tmp_path / "cp-b"), b, n)
    want = replay_outputs(feed)
    assert_same_outputs(want, outputs(kafka_bootstrap, a))
    re_emitted = assert_same_outputs(want, outputs(kafka_bootstrap, b))
    print(f"\nsoak: {feed.events} events in {n} messages; unharmed worker {unharmed:.0f} s, "
          f"killed at messages {killed}, {harmed:.0f} s in all; re-emitted {re_emitted}")
