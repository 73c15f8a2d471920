"""Exact under the faults operators meet: a backlog, unusable checkpoints, a second replica.

Each test puts the 24-day Pareto-trap feed of :mod:`tests.integration.test_recovery` on
the broker and compares what a ``tierwatch worker`` subprocess ends with (its
checkpointed state, field by field, and the output topics, re-emissions dropped) with
``tierwatch replay`` of the same files:

- **Backlog.** Everything is on the topics before the worker starts, the ordered merge
  may hold only 100 messages, and it waits for a silent partition only the default 2 s:
  the partitions that run ahead must be held back, not force-released, and a slow fetch
  must be waited for, through two SIGKILLs.
- **Unusable state.** The latest snapshot truncated (the previous one is restored and the
  inputs re-read from *its* offsets), both truncated (a loud refusal, exit code 2, then
  ``--reset-state`` rebuilds from the beginning) and a snapshot of format 1 (refused, with
  what to do).
- **Two replicas.** A second worker joins the consumer group mid-catch-up: it is
  assigned nothing and says it stands by within one session timeout, while the first one
  goes on; it follows what the first one commits, quietly (no events counted, no router
  figures exported); the first one is then killed, and the standby takes over from its
  own state and ends with the replay's results. And once a standby has followed every
  commit, it takes over re-reading and re-publishing nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from pipeline.settings import Settings
from pipeline.stream.checkpoint import CheckpointStore, Snapshot
from tests.integration.feed import (
    Feed,
    final_snapshot,
    outputs,
    wait_durable,
    worker_env,
    worker_status,
)
from tests.integration.test_recovery import (
    DAYS,
    RATE,
    SEED,
    _settings,
    assert_same_outputs,
    assert_same_state,
    run_with_faults,
)
from tests.integration.worker_proc import eventually, http_get, running_worker

pytestmark = pytest.mark.kafka


def metric(base: str, name: str, labels: str = "") -> float:
    """One sample of the worker's /metrics (0 when the series does not exist yet)."""
    want = f"{name}{{{labels}}}" if labels else name
    for line in http_get(base + "/metrics").decode().splitlines():
        if line.startswith(want + " "):
            return float(line.split()[-1])
    return 0.0


@pytest.fixture(scope="module")
def feed(tmp_path_factory: pytest.TempPathFactory) -> Feed:
    return Feed.simulate(tmp_path_factory.mktemp("feed"), scenario="pareto-trap", days=DAYS,
                         rate=RATE, seed=SEED)


@pytest.fixture(scope="module")
def replayed(feed: Feed) -> tuple[object, dict[str, list[bytes]]]:
    return feed.replay()


def test_a_backlog_through_a_tiny_merge_is_exact(kafka_bootstrap: str, feed: Feed,
                                                 replayed: tuple, tmp_path: Path) -> None:
    """The whole feed waits on 4 partitions per topic; the merge holds 24 messages
    (3 per partition: a fetch of more than that from one partition holds it)."""
    s = _settings(kafka_bootstrap, 4)
    n = feed.produce(kafka_bootstrap, s)
    seen: dict[str, float] = {}

    def at_end(base: str) -> None:
        seen["holds"] = metric(base, "tierwatch_merge_holds_total")
        seen["full"] = metric(base, "tierwatch_merge_forced_releases_total", 'reason="full"')
        seen["idle"] = metric(base, "tierwatch_merge_forced_releases_total", 'reason="idle"')

    faults = run_with_faults(kafka_bootstrap, s, tmp_path / "cp", n, tmp_path, kills=2,
                             seed=11, timeout=300, at_end=at_end,
                             env={"TIERWATCH_MERGE_MAX_BUFFERED": "24",
                                  # the default: a slow fetch on a loaded machine must
                                  # not release the merge early any more
                                  "TIERWATCH_MERGE_IDLE_S": str(Settings().merge_idle_s)})
    assert len(faults) == 2 and all(0 < k < n for k in faults), faults
    # the last worker caught up at least 30% of the backlog by holding partitions back
    assert seen["holds"] > 0 and seen["full"] == 0 and seen["idle"] == 0, seen
    monitor, want = replayed
    assert_same_state(monitor, final_snapshot(tmp_path / "cp"), s, n)  # type: ignore[arg-type]
    re_emitted = assert_same_outputs(want, outputs(kafka_bootstrap, s))
    print(f"\nbacklog of {n} messages, merge of 24: killed at {faults}, "
          f"{seen['holds']:.0f} holds in the last run; re-emitted {re_emitted}")


def start_fails(env: dict[str, str], log: Path) -> str:
    """Start a worker that must refuse to start; returns its output."""
    with log.open("wb") as out:
        proc = subprocess.run([sys.executable, "-m", "pipeline.cli", "worker"],
                              env={**os.environ, **env}, stdout=out,
                              stderr=subprocess.STDOUT, timeout=120, check=False)
    text = log.read_text()
    assert proc.returncode == 2, f"exit {proc.returncode}: {text[-2000:]}"
    return text


def run_to_end(env: dict[str, str], log: Path, messages: int) -> str:
    """Run a worker until it has processed and checkpointed ``messages``; returns its log."""
    with running_worker(env, log, ready_timeout=120) as (proc, base):
        wait_durable(base, messages, proc, log, 300)
        sources = {s: metric(base, "tierwatch_state_restores_total", f'source="{s}"')
                   for s in ("latest", "previous", "none", "reset")}
    return log.read_text() + f"\nrestores: {sources}"


def test_unusable_checkpoints_give_exact_results_or_a_loud_refusal(
        kafka_bootstrap: str, feed: Feed, replayed: tuple, tmp_path: Path) -> None:
    s = _settings(kafka_bootstrap, 2)
    cp = tmp_path / "cp"
    env = worker_env(kafka_bootstrap, s, cp)
    half = len(feed.messages) // 2
    first = feed.produce(kafka_bootstrap, s, slice(0, half))
    log = run_to_end(env, tmp_path / "first.log", first)
    assert "restores: {'latest': 0.0, 'previous': 0.0, 'none': 1.0" in log
    n = first + feed.produce(kafka_bootstrap, s, slice(half, None))
    run_to_end(env, tmp_path / "second.log", n)
    latest, previous = cp / CheckpointStore.LATEST, cp / CheckpointStore.PREVIOUS
    older = CheckpointStore.decode(previous.read_bytes())
    assert older.messages < n, "the previous snapshot must lack some messages"

    # 1. the latest snapshot torn: the previous one, and its offsets, re-read from there
    latest.write_bytes(latest.read_bytes()[: latest.stat().st_size // 2])
    log = run_to_end(env, tmp_path / "torn-latest.log", n)
    assert "restoring the previous checkpoint" in log, log[-3000:]
    assert "'previous': 1.0" in log
    monitor, want = replayed
    assert_same_state(monitor, final_snapshot(cp), s, n)  # type: ignore[arg-type]
    assert_same_outputs(want, outputs(kafka_bootstrap, s))

    # 2. both torn: refused, loudly, until --reset-state; then rebuilt from the beginning
    for path in (latest, previous):
        path.write_bytes(path.read_bytes()[:100])
    text = start_fails(env, tmp_path / "refused.log")
    assert "[CRITICAL] tierwatch.worker: refusing to start" in text
    assert "--reset-state" in text and "no usable checkpoint" in text
    log = run_to_end({**env, "TIERWATCH_RESET_STATE": "true"}, tmp_path / "reset.log", n)
    assert "--reset-state: the checkpoint is unusable" in log and "'reset': 1.0" in log
    assert len(list(cp.glob("snapshot*.unusable-*"))) == 2, "kept for a post-mortem"
    assert_same_state(monitor, final_snapshot(cp), s, n)  # type: ignore[arg-type]
    assert_same_outputs(want, outputs(kafka_bootstrap, s))

    # 3. a snapshot written by tierwatch before format 2: refused, saying what to do
    body = pickle.dumps(Snapshot({}, None, version=1))
    latest.write_bytes(b"TWCP1\n" + hashlib.sha256(body).digest() + body)
    text = start_fails(env, tmp_path / "old.log")
    assert "snapshot format 1" in text and "upgrading-tierwatch" in text, text[-2000:]


def two_workers(bootstrap: str, s: Settings, tmp_path: Path
                ) -> tuple[dict[str, str], dict[str, str], Path, Path]:
    """The environments and logs of workers A and B of one group, each its own state."""
    return (worker_env(bootstrap, s, tmp_path / "cp-a"),
            worker_env(bootstrap, s, tmp_path / "cp-b"), tmp_path / "a.log", tmp_path / "b.log")


def status(base: str) -> dict[str, Any]:
    """A worker's own part of ``/status`` (role, messages, offsets, following)."""
    return worker_status(base)["worker"]  # type: ignore[no-any-return]


def test_a_second_replica_stands_by_and_takes_over_exactly(
        kafka_bootstrap: str, feed: Feed, replayed: tuple, tmp_path: Path) -> None:
    """B joins A's group mid-catch-up: B stands by, following what A commits, while A
    goes on; A is killed, B takes over from its own state and ends with the replay's
    results."""
    s = _settings(kafka_bootstrap, 2)
    n = feed.produce(kafka_bootstrap, s)
    a_env, b_env, a_log, b_log = two_workers(kafka_bootstrap, s, tmp_path)
    timeout = float(a_env["TIERWATCH_SESSION_TIMEOUT_S"])

    with running_worker(a_env, a_log, ready_timeout=120) as (a, a_base):
        eventually(lambda: status(a_base)["messages"] > 0.1 * n,
                   "the first worker to make progress", timeout=120)
        with running_worker(b_env, b_log, ready_timeout=120) as (b, b_base):
            up = time.monotonic()
            eventually(lambda: status(b_base)["role"] == "standby",
                       "the second worker to stand by", timeout=3 * timeout, every=0.05)
            detected = time.monotonic() - up
            assert metric(b_base, "tierwatch_worker_standby") == 1
            assert status(a_base)["role"] == "active"
            before = status(a_base)["messages"]
            assert before < n, "the first worker finished before the second joined"
            eventually(lambda: status(a_base)["messages"] > before,
                       "the active worker to go on", timeout=60)
            # the standby follows what the active worker has committed, quietly: it
            # counts no event and exports no router's figures (they are the active's)
            eventually(lambda: status(b_base)["messages"] > 0,
                       "the standby to follow the active worker", timeout=60)
            assert status(b_base)["following"] is not None
            assert metric(b_base, "tierwatch_events_total",
                          'topic="routing",outcome="valid"') == 0
            assert metric(b_base, "tierwatch_watermark_timestamp_seconds") == 0
            assert metric(a_base, "tierwatch_watermark_timestamp_seconds") > 0
            committed = sum(status(a_base)["checkpoint"].values())
            # the active worker dies: the standby is assigned everything and takes over
            at = status(a_base)["messages"]
            followed = status(b_base)["messages"]
            os.killpg(a.pid, signal.SIGKILL)
            a.wait()
            killed = time.monotonic()
            eventually(lambda: status(b_base)["role"] == "active",
                       "the standby to take over", timeout=3 * timeout, every=0.1)
            took_over = time.monotonic() - killed
            wait_durable(b_base, n, b, b_log, 300)
            assert metric(b_base, "tierwatch_watermark_timestamp_seconds") > 0, \
                "exporting the routers' figures once active"
    assert "standby: another worker of the consumer group" in b_log.read_text()
    assert "taking over" in b_log.read_text()
    monitor, want = replayed
    assert_same_state(monitor, final_snapshot(tmp_path / "cp-b"), s, n)  # type: ignore[arg-type]
    re_emitted = assert_same_outputs(want, outputs(kafka_bootstrap, s))
    print(f"\nsecond replica a standby {detected:.1f} s after it was up, took over "
          f"{took_over:.1f} s after the active one was killed (session timeout {timeout:g} "
          f"s; at message {at} of {n}, {committed} committed, {followed} followed by the "
          f"standby); re-emitted {re_emitted}")
    assert followed > 0
    assert detected <= timeout, f"standby only after {detected:.1f} s"



def test_a_standby_that_followed_takes_over_without_rebuilding(
        kafka_bootstrap: str, feed: Feed, replayed: tuple, tmp_path: Path) -> None:
    """A counts the feed and commits it; B joins and follows A's commits to their end;
    A is killed: B takes over where it stands, with the replay's state, re-reading and
    re-publishing nothing. (The feed is written before either reads it: records that
    arrive while a worker reads are ordered by their arrival, not by the logs alone.)"""
    s = _settings(kafka_bootstrap, 2)
    n = feed.produce(kafka_bootstrap, s)
    a_env, b_env, a_log, b_log = two_workers(kafka_bootstrap, s, tmp_path)
    timeout = float(a_env["TIERWATCH_SESSION_TIMEOUT_S"])

    def followed(base: str) -> bool:
        w = status(base)
        return (w["messages"] == n and w["following"] is not None
                and w["following"]["behind"] == 0 and w["checkpoint"] == w["positions"])

    with running_worker(a_env, a_log, ready_timeout=120) as (a, a_base):
        wait_durable(a_base, n, a, a_log, 300)
        with running_worker(b_env, b_log, ready_timeout=120) as (_, b_base):
            eventually(lambda: status(b_base)["role"] == "standby",
                       "the second worker to stand by", timeout=3 * timeout)
            started = time.monotonic()
            eventually(lambda: followed(b_base), "the standby to follow A's commits to "
                       "their end", timeout=300, every=0.5)
            caught_up = time.monotonic() - started
            os.killpg(a.pid, signal.SIGKILL)
            a.wait()
            eventually(lambda: status(b_base)["role"] == "active",
                       "the standby to take over", timeout=3 * timeout, every=0.1)
            time.sleep(2 * float(b_env["TIERWATCH_CHECKPOINT_EVERY_S"]))
            assert status(b_base)["messages"] == n, "it re-read nothing"
    monitor, want = replayed
    assert_same_state(monitor, final_snapshot(tmp_path / "cp-b"), s,  # type: ignore[arg-type]
                      n)
    re_emitted = assert_same_outputs(want, outputs(kafka_bootstrap, s))
    assert not any(re_emitted.values()), f"re-published: {re_emitted}"
    print(f"\nthe standby followed {n} committed messages in {caught_up:.1f} s and took "
          f"over without re-reading any")


def test_replicas_over_six_partitions_through_a_kill_a_restart_and_a_join(
        kafka_bootstrap: str, feed: Feed, replayed: tuple, tmp_path: Path) -> None:
    """Three workers of one group over 6 partitions a topic: one active, two following.
    The active one is SIGKILLed mid-run and restarted on its own state, and a fourth
    worker joins. The outputs are the replay's, and every one of the four workers ends
    with the replay's state: the active one by counting, the others by following."""
    s = _settings(kafka_bootstrap, 6)
    n = feed.produce(kafka_bootstrap, s)
    envs = {k: worker_env(kafka_bootstrap, s, tmp_path / f"cp-{k}") for k in "abcd"}
    timeout = float(envs["a"]["TIERWATCH_SESSION_TIMEOUT_S"])
    procs: dict[str, Any] = {}
    bases: dict[str, str] = {}

    def roles() -> dict[str, str]:
        return {k: status(b)["role"] for k, b in bases.items() if procs[k].poll() is None}

    def the(role: str) -> list[str]:
        return sorted(k for k, r in roles().items() if r == role)

    with contextlib.ExitStack() as stack:
        def start(k: str, log: str) -> None:
            procs[k], bases[k] = stack.enter_context(
                running_worker(envs[k], tmp_path / log, ready_timeout=120))

        for k in "abc":
            start(k, f"{k}.log")
        eventually(lambda: len(the("active")) == 1 and len(the("standby")) == 2,
                   "one active worker and two standbys", timeout=3 * timeout)
        first = the("active")[0]
        eventually(lambda: status(bases[first])["messages"] > 0.3 * n,
                   "the active worker to make progress", timeout=120)
        os.killpg(procs[first].pid, signal.SIGKILL)
        procs[first].wait()
        eventually(lambda: len(the("active")) == 1, "a standby to take over",
                   timeout=3 * timeout, every=0.2)
        start(first, f"{first}-restarted.log")  # on its own state: it stands by
        eventually(lambda: roles().get(first) == "standby", "the restarted worker to "
                   "stand by", timeout=3 * timeout)
        start("d", "d.log")
        eventually(lambda: len(the("standby")) == 3, "the fourth worker to stand by",
                   timeout=3 * timeout)
        active = the("active")
        assert len(active) == 1 and active[0] != first
        for k in [*active, *the("standby")]:
            wait_durable(bases[k], n, procs[k], tmp_path / f"{k}.log", 300)
        for k in the("standby"):
            eventually(lambda k=k: status(bases[k])["following"]["behind"] == 0,
                       f"standby {k} to follow every commit", timeout=60)
    monitor, want = replayed
    for k in "abcd":
        assert_same_state(monitor, final_snapshot(tmp_path / f"cp-{k}"), s,  # type: ignore[arg-type]
                          n)
    re_emitted = assert_same_outputs(want, outputs(kafka_bootstrap, s))
    print(f"\nfour replicas over 6 partitions, {first} killed and restarted, {active[0]} "
          f"active at the end; re-emitted {re_emitted}")
