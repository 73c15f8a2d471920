"""The join's decisions on disk stay exact through SIGKILLs (issue 18, acceptance 3).

The worker keeps the join's decisions in RocksDB (``join_store=rocksdb``), checkpointed
with each snapshot; the replay keeps them in memory. Ten days of the Pareto trap
(with a ``cohort`` segment on every decision) go onto a real broker, with a join TTL of
two days, so decisions expire, feedback later than the TTL is dead-lettered and
segment dictionary days are dropped all through the run. The worker is SIGKILLed twice
at random points, between or during checkpoints, and restarted on the same directory.
At the end its state (the store compared by content: every record and seen feedback id)
and its outputs equal the replay's, and the store kept only the checkpoints that the
two retained snapshot files refer to.
"""

from __future__ import annotations

import pickle
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipeline.core.join import FeedbackJoin
from pipeline.store.rocks import RocksDecisionStore
from tests.integration.feed import Feed, dedup, final_snapshot, outputs
from tests.integration.test_recovery import (
    _settings,
    assert_same_outputs,
    assert_same_state,
    run_with_faults,
)

pytestmark = pytest.mark.kafka
DAYS, RATE, SEED, TTL_S = 10.0, 0.03, 11, 2 * 86400.0


def _strip_coordinates(join: FeedbackJoin) -> None:
    def strip(fb: Any) -> Any:
        o = fb.origin
        return fb if o is None else fb._replace(origin=o._replace(
            topic="", partition=None, offset=None, key=None))
    join._pending = {rid: [strip(fb) for fb in fbs] for rid, fbs in join._pending.items()}
    join._pending_heap = [strip(fb) for fb in join._pending_heap]


def _plain(value: bytes) -> dict[str, Any]:
    """A dead letter without what differs by run (wall time) or by input (file or topic
    coordinates): its reason, field, payload and index in its batch stay."""
    doc = orjson.loads(value)
    for k in ("rejected_at", "topic", "partition", "offset", "key"):
        doc.pop(k, None)
    return doc


def test_sigkilled_worker_with_the_store_on_disk_equals_the_replay(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    started = time.monotonic()
    feed = Feed.simulate(tmp_path / "feed", scenario="pareto-trap", days=DAYS, rate=RATE,
                         seed=SEED)
    s = _settings(kafka_bootstrap, 2)
    n = feed.produce(kafka_bootstrap, s)
    env = {"TIERWATCH_MERGE_IDLE_S": "600", "TIERWATCH_JOIN_TTL_S": str(TTL_S),
           "TIERWATCH_JOIN_STORE": "rocksdb", "TIERWATCH_CHECKPOINT_EVERY_S": "1"}
    with ThreadPoolExecutor(1) as pool:
        run = pool.submit(run_with_faults, kafka_bootstrap, s, tmp_path / "cp", n, tmp_path,
                          kills=2, seed=5, timeout=300, env=env)
        monitor, want = feed.replay(join_ttl_s=TTL_S)
        faults = run.result()
    assert len(faults) == 2 and all(0 < k < n for k in faults), faults
    stats = monitor.join.stats
    assert stats["expired_decisions"] > 1000 and stats["joined"] > 1000, stats
    assert want["dlq"], "feedback later than the TTL must be dead-lettered"
    snapshot = final_snapshot(tmp_path / "cp")
    store = snapshot.state.join.store
    assert isinstance(store, RocksDecisionStore)
    assert any(rec.segment for rec in store.records()), "the feed must carry segments"
    assert len(store) == len(monitor.join) > 0
    # feedback still waiting for a decision that expired keeps where it came from: a file
    # line in the replay, a topic offset in the worker; the rest of it must be equal
    for m in (monitor, snapshot.state):
        _strip_coordinates(m.join)
    assert_same_state(monitor, snapshot, s, n)
    got = outputs(kafka_bootstrap, s)
    assert_same_outputs({k: v for k, v in want.items() if k != "dlq"}, got)
    dlq, _ = dedup("dlq", got["dlq"])
    assert [_plain(v) for v in dlq] == [_plain(v) for v in want["dlq"]]
    # what is left on disk: the live database and the checkpoints of the two snapshot files
    assert len(list((tmp_path / "cp" / "join-store").glob("ckpt-*"))) <= 2
    # and the snapshot file holds a reference to the store's checkpoint, not its records
    assert len(pickle.dumps(store)) < 1000 < len(pickle.dumps(monitor.join.store))
    print(f"\n{feed.events} events, {n} messages, faults at {faults}; {len(store)} decisions "
          f"live at the end, {stats['expired_decisions']} expired; "
          f"{time.monotonic() - started:.0f}s")
