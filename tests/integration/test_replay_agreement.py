"""The worker on a real broker and ``tierwatch replay`` agree, byte for byte.

Thirty days of the Pareto trap at 0.03 routing events/s go through ``Replay`` and, as
the very same messages, onto a real broker, all at once, for a ``tierwatch worker``
subprocess with two partitions per input topic. The alerts, control and review topics
then hold exactly the lines the replay wrote, and the DLQ the same records up to
``rejected_at`` (wall time in the worker, the watermark in the replay).

Why the order is the same although Kafka orders messages only within a partition:

- Evaluations run at event-time boundaries, once the watermark passes them, after the
  message that moved it, so both sides must process the same messages in the same order.
- Each message is produced with a record timestamp that follows the replay's order
  (:mod:`tests.integration.feed`), and the worker's ordered merge releases messages in
  record-timestamp order once every partition has its next message or is read to its
  end. The order is then a function of the logs, whatever the fetch timing.
- The worker flushes (runs the due evaluations) after every message, as the replay does,
  whatever its batch size.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipeline.settings import Settings
from tests.integration.feed import OUTPUTS, Feed, outputs, wait_durable, worker_env
from tests.integration.worker_proc import running_worker

pytestmark = pytest.mark.kafka

DAYS, RATE, SEED = 30.0, 0.03, 7


def _without_wall_time(dead_letter: bytes) -> dict[str, Any]:
    record: dict[str, Any] = orjson.loads(dead_letter)
    record.pop("rejected_at")
    record.pop("topic")  # the replay names its input file, the worker its topic
    return record


def test_worker_and_replay_publish_the_same_bytes(kafka_bootstrap: str, tmp_path: Path) -> None:
    started = time.monotonic()
    feed = Feed.simulate(tmp_path, scenario="pareto-trap", days=DAYS, rate=RATE, seed=SEED)
    want = {k: (feed.replay_dir / f"{k}.jsonl").read_bytes().splitlines() for k in OUTPUTS}
    firing = [a for a in want["alerts"] if b'"state":"firing"' in a]
    assert firing, "the data must make at least one alert fire"
    assert want["control"] and want["review"]
    replayed = time.monotonic()

    prefix = f"t{uuid.uuid4().hex[:8]}.tierwatch"
    settings = Settings(bootstrap_servers=kafka_bootstrap, topic_prefix=prefix, partitions=2,
                        app_id=f"{prefix}-worker", max_future_s=1e10)
    n = feed.produce(kafka_bootstrap, settings)
    log = tmp_path / "worker.log"
    with running_worker(worker_env(kafka_bootstrap, settings, tmp_path / "cp"), log,
                        ready_timeout=120) as (proc, base):
        wait_durable(base, n, proc, log, timeout=300)
    got = outputs(kafka_bootstrap, settings)
    produced = time.monotonic()

    for k in ("alerts", "control", "review"):
        assert len(got[k]) == len(want[k]), k
        for i, (g, w) in enumerate(zip(got[k], want[k], strict=True)):
            assert g == w, f"{k}[{i}]:\nworker {g[:600]!r}\nreplay {w[:600]!r}"
    assert [_without_wall_time(v) for v in got["dlq"]] == [
        _without_wall_time(v) for v in want["dlq"]]
    print(f"\n{feed.events} events, {n} messages; replay {replayed - started:.0f}s, "
          f"worker {produced - replayed:.0f}s; {len(want['alerts'])} alerts "
          f"({len(firing)} firing), {len(want['control'])} control, "
          f"{len(want['review'])} review, {len(want['dlq'])} dlq")
