"""The worker on a real broker equals ``tierwatch replay``, through crashes and outages.

Twenty-four days of the Pareto trap at 0.03 routing events/s go through ``Replay`` in process
and, as the very same messages, onto a broker of the test's own, all at once, two
partitions per input topic. A ``tierwatch worker`` subprocess reads them; it is killed
with SIGKILL at two random points and restarted on the same checkpoint directory and
consumer group, and then the broker is stopped for 30 s while the last worker reads.
At the end:

- the worker's checkpoint holds the replay's state, compared field by field (counts,
  histograms, joins, quality tests, alert books), with every message counted once;
- the alerts, control and review topics hold exactly the lines the replay wrote, and the
  DLQ the same records up to ``rejected_at`` (wall time), once re-emissions are dropped.
  A re-emission is recognised by its id and must equal its first copy.

Why the order is the replay's although Kafka orders messages only within a partition:
evaluations run at event-time boundaries after the message that crosses them, so both
sides must process the same messages in the same order. Each message carries a record
timestamp that follows the replay's order (:mod:`tests.integration.feed`), and the
worker's ordered merge releases messages in record-timestamp order once every partition
has its next message or is read to its end: over logs already written, the order is a
function of the logs, whatever the fetch timing, crash or reconnect. The worker flushes
(runs the due evaluations) after every message, as the replay does.

``make soak`` runs the acceptance size: over a million events already on the topics, the
default merge settings and five kills during the catch-up, compared with an unharmed
worker and with the replay, and reports the worker's peak RSS.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipeline.core.monitor import Monitor
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
    worker_status,
)
from tests.integration.worker_proc import http_get, running_worker
from tests.kafka_broker import LocalKafka

pytestmark = pytest.mark.kafka
DAYS, RATE, SEED = 24.0, 0.03, 7


def _settings(bootstrap: str, partitions: int) -> Settings:
    prefix = f"r{uuid.uuid4().hex[:8]}.tierwatch"
    return Settings(bootstrap_servers=bootstrap, topic_prefix=prefix, app_id=f"{prefix}-w",
                    partitions=partitions, max_future_s=1e10)


def run_through(bootstrap: str, settings: Settings, checkpoints: Path, messages: int,
                log: Path, timeout: float, **env: str) -> int:
    """Run one worker until it has checkpointed ``messages``; returns its peak RSS."""
    with running_worker(worker_env(bootstrap, settings, checkpoints, **env), log,
                        ready_timeout=120) as (proc, base):
        wait_durable(base, messages, proc, log, timeout)
        return peak_rss_bytes(proc.pid)


def wait_progress(base: str, target: float, proc: Any, log: Path, timeout: float,
                  rng: random.Random) -> int:
    """Poll until the worker has processed ``target`` messages; returns how many it had."""
    deadline = time.monotonic() + timeout
    while (done := worker_status(base)["worker"]["messages"]) < target:
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, f"stuck at {done}: {log.read_text()[-3000:]}"
        time.sleep(rng.uniform(0.01, 0.2))
    return done


def peak_rss_bytes(pid: int) -> int:
    """The process's peak resident set size so far (``VmHWM``), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM for {pid}")


def run_with_faults(bootstrap: str, settings: Settings, checkpoints: Path, messages: int,
                    logs: Path, *, kills: int, seed: int, timeout: float,
                    broker: LocalKafka | None = None, outage_s: float = 30,
                    env: dict[str, str] | None = None,
                    at_end: Callable[[str], None] | None = None,
                    peak_rss: list[int] | None = None) -> list[int]:
    """SIGKILL the worker ``kills`` times at random progress points, then (with ``broker``)
    stop the broker for ``outage_s`` while the last worker reads; returns the points.

    ``env``: settings (default: a merge that never releases on an idle timeout);
    ``at_end`` is called with the last worker's URL once it is done; ``peak_rss`` gets
    each worker's peak RSS."""
    rng = random.Random(seed)
    targets = sorted(rng.uniform(0.05, 0.7) * messages for _ in range(kills))
    faults = []
    env = worker_env(bootstrap, settings, checkpoints,
                     **(env if env is not None else {"TIERWATCH_MERGE_IDLE_S": "600"}))
    for i, target in enumerate(targets):
        log = logs / f"worker-{i}.log"
        with running_worker(env, log, ready_timeout=120) as (proc, base):
            faults.append(wait_progress(base, target, proc, log, timeout, rng))
            if peak_rss is not None:
                peak_rss.append(peak_rss_bytes(proc.pid))
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    log = logs / "worker-last.log"
    with running_worker(env, log, ready_timeout=120) as (proc, base):
        if broker is not None:
            faults.append(wait_progress(base, 0.8 * messages, proc, log, timeout, rng))
            broker.stop(keep_data=True)
            time.sleep(outage_s)
            assert proc.poll() is None, "the worker died with the broker: " + log.read_text()
            broker.start()
        wait_durable(base, messages, proc, log, timeout)
        if peak_rss is not None:
            peak_rss.append(peak_rss_bytes(proc.pid))
        if at_end is not None:
            at_end(base)
    return faults


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


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[LocalKafka]:
    """A broker of this test's own, since the test stops it (the jars are required)."""
    broker = LocalKafka.create(tmp_path / "kafka")
    try:
        broker.start()
    except RuntimeError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(str(exc), pytrace=False)
        pytest.skip(str(exc))
    try:
        yield broker
    finally:
        with contextlib.suppress(RuntimeError):
            broker.stop()


def test_kills_and_a_broker_outage_change_nothing(own_broker: LocalKafka,
                                                  tmp_path: Path) -> None:
    """Two SIGKILLs, then 30 s without a broker: the replay's state and bytes, exactly."""
    started = time.monotonic()
    feed = Feed.simulate(tmp_path / "feed", scenario="pareto-trap", days=DAYS, rate=RATE,
                         seed=SEED)
    bootstrap = own_broker.bootstrap
    s = _settings(bootstrap, 2)
    n = feed.produce(bootstrap, s)
    # the worker (a subprocess) and the in-process replay use a core each
    with ThreadPoolExecutor(1) as pool:
        run = pool.submit(run_with_faults, bootstrap, s, tmp_path / "cp", n, tmp_path,
                          kills=2, seed=4, timeout=300, broker=own_broker)
        monitor, want = feed.replay()
        replayed = time.monotonic()
        faults = run.result()
    assert [a for a in want["alerts"] if b'"state":"firing"' in a], "no alert fires"
    assert want["control"] and want["review"], "nothing to compare"
    assert len(faults) == 3 and all(0 < k < n for k in faults), faults
    assert_same_state(monitor, final_snapshot(tmp_path / "cp"), s, n)
    re_emitted = assert_same_outputs(want, outputs(bootstrap, s))
    print(f"\n{feed.events} events, {n} messages; replay {replayed - started:.0f}s, in all "
          f"{time.monotonic() - started:.0f}s with faults at messages {faults}; "
          f"{len(want['alerts'])} alerts, {len(want['control'])} control, "
          f"{len(want['review'])} review, {len(want['dlq'])} dlq; re-emitted {re_emitted}")


#: the worker's defaults for the ordered merge (worker_env widens the idle timeout for
#: noisy test machines; the soak holds the defaults to their promise)
DEFAULT_MERGE = {"TIERWATCH_MERGE_IDLE_S": str(Settings().merge_idle_s),
                 "TIERWATCH_MERGE_MAX_BUFFERED": str(Settings().merge_max_buffered)}


@pytest.mark.soak
@pytest.mark.timeout(5400)
def test_soak_a_million_event_backlog_with_five_sigkills(kafka_bootstrap: str,
                                                         tmp_path: Path) -> None:
    """The acceptance size: over 1M events already on the topics before the worker
    starts, the default merge settings, five kills during the catch-up; the replay's
    state and outputs exactly, for an unharmed worker too. Prints the peak RSS."""
    started = time.monotonic()
    feed = Feed.simulate(tmp_path / "feed", scenario="pareto-trap", days=40, rate=0.3, seed=3)
    assert feed.events >= 1_000_000, feed.events
    a, b = _settings(kafka_bootstrap, 4), _settings(kafka_bootstrap, 4)
    n = feed.produce(kafka_bootstrap, a)
    assert feed.produce(kafka_bootstrap, b) == n
    prepared = time.monotonic() - started
    started = time.monotonic()
    rss_a = run_through(kafka_bootstrap, a, tmp_path / "cp-a", n, tmp_path / "a.log",
                        timeout=3600, **DEFAULT_MERGE)
    unharmed = time.monotonic() - started
    started = time.monotonic()
    rss_b: list[int] = []
    seen: dict[str, float] = {}

    def at_end(base: str) -> None:
        text = http_get(base + "/metrics").decode()
        for line in text.splitlines():
            if line.startswith(("tierwatch_merge_forced_releases_total{",
                                "tierwatch_merge_holds_total ")):
                seen[line.rsplit(" ", 1)[0]] = float(line.rsplit(" ", 1)[1])

    killed = run_with_faults(kafka_bootstrap, b, tmp_path / "cp-b", n, tmp_path, kills=5,
                             seed=9, timeout=3600, env=DEFAULT_MERGE, peak_rss=rss_b,
                             at_end=at_end)
    harmed = time.monotonic() - started
    assert len(killed) == 5 and all(0 < k < n for k in killed), killed
    started = time.monotonic()
    monitor, want = feed.replay()
    replayed = time.monotonic() - started
    assert_same_state(monitor, final_snapshot(tmp_path / "cp-a"), a, n)
    assert_same_state(monitor, final_snapshot(tmp_path / "cp-b"), b, n)
    assert_same_outputs(want, outputs(kafka_bootstrap, a))
    re_emitted = assert_same_outputs(want, outputs(kafka_bootstrap, b))
    mib = 1 << 20
    print(f"\nsoak: {feed.events} events in {n} messages (simulated and produced twice in "
          f"{prepared:.0f} s); unharmed worker {unharmed:.0f} s, peak RSS "
          f"{rss_a / mib:.0f} MiB; killed at messages {killed}, {harmed:.0f} s in all, peak "
          f"RSS per run {[round(r / mib) for r in rss_b]} MiB; last run's merge {seen}; "
          f"replay {replayed:.0f} s; re-emitted {re_emitted}")
