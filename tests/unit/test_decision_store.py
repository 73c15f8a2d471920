"""The join's decision stores: the on-disk RocksDB one behaves exactly as the in-memory
one, and its checkpoints restore exactly the state they were taken at."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.core.decision_store import DecisionRecord, DecisionStore, MemoryDecisionStore
from pipeline.core.join import FeedbackJoin
from pipeline.store.rocks import RocksDecisionStore, _batch, _entries, _from_t, _t

T0 = 1_700_000_000.0
H = 3600.0
SEGMENTS = [None, (("intent", "billing"),), (("intent", "billing"), ("locale", "fr")),
            (("intent", "refund"),)]

# (op, request/event number, hour offset, variant)
_ops = st.lists(st.tuples(st.sampled_from(["put", "many", "seen", "expire", "get"]),
                          st.integers(0, 12), st.integers(-8, 24), st.integers(0, 3)),
                max_size=80)


def _record(r: int, h: int, v: int) -> DecisionRecord:
    return DecisionRecord(T0 + h * H + v / 7, f"r{r}", f"router-{v % 2}", "cheap" if v % 2
                          else "capable", (r + 1) / 14, 1.0 if v < 2 else 0.1 * v, v - 1, v,
                          SEGMENTS[(r + v) % 4], b"\x01" * 16 if v == 3 else None)


def _run(store: DecisionStore, ops: list[tuple[str, int, int, int]]) -> list[object]:
    out: list[object] = []
    low = -1e18
    for op, r, h, v in ops:
        if op == "put":
            rec = _record(r, h, v)
            if rec.request_id not in store:
                store.put(rec)
        elif op == "many":  # as the columnar path inserts a batch
            # a batch's times may fall or rise: its earliest is first or last
            batch = [_record(r + k, h + (k if v % 2 else -k), (v + k) % 4) for k in range(3)]
            out.append(store.contains_any([rec.request_id for rec in batch]))
            fresh = {rec.request_id: rec for rec in batch if rec.request_id not in store}
            store.put_many(list(fresh.values()))
        elif op == "seen":
            store.add_seen(f"e{r}", T0 + h * H)
        elif op == "expire":
            cutoff = T0 + h * H
            if cutoff > low:  # the join calls it with increasing cutoffs only
                low = cutoff
                out.append(store.pop_expired(cutoff))
        else:
            out.append((store.get(f"r{r}"), store.seen(f"e{r}")))
    out.append((len(store), store.n_seen, list(store.records()), list(store.seen_items())))
    return out


@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=_ops)
def test_rocks_store_equals_memory_store(ops: list, tmp_path_factory: pytest.TempPathFactory
                                         ) -> None:
    rocks = RocksDecisionStore(tmp_path_factory.mktemp("rocks"))
    try:
        assert _run(rocks, ops) == _run(MemoryDecisionStore(), ops)
    finally:
        rocks.close()


@given(st.lists(st.tuples(st.floats(allow_nan=False, allow_infinity=False),
                          st.text(min_size=1, max_size=40)), min_size=1, max_size=30))
def test_an_expiry_index_entry_gives_back_its_times_and_ids(
        entries: list[tuple[float, str]]) -> None:
    ts, rids = [t for t, _ in entries], [r.encode() for _, r in entries]
    assert _entries(_batch(ts, rids)) == (ts, rids)


def test_order_preserving_time_encoding() -> None:
    xs = [-1e12, -3.5, -0.0, 0.0, 1e-9, 1.0, T0, T0 + 0.5, 1e15]
    encoded = [_t(x) for x in xs]
    assert encoded == sorted(encoded)
    assert [_from_t(b) for b in encoded] == xs


def test_join_on_rocks_equals_join_in_memory(tmp_path: Path) -> None:
    """The same feedback and decisions give the same joins, expiries and state."""
    rocks = RocksDecisionStore(tmp_path / "s")
    a, b = FeedbackJoin(ttl_seconds=10 * H, store=rocks), FeedbackJoin(ttl_seconds=10 * H)
    out_a: list[object] = []
    out_b: list[object] = []
    for i in range(300):
        ts = T0 + i * 600.0
        for j, out in ((a, out_a), (b, out_b)):
            if i % 3 != 1:
                out.append(j.add_decision(f"r{i}", "x", "cheap" if i % 2 else "capable",
                                          i / 300, ts, band=i % 5,
                                          segment={"intent": f"i{i % 4}"}))
            out.append(j.add_feedback(f"f{i}", f"r{i - 5}", "thumbs", 1.0, ts + 1))
            out.append(j.add_feedback(f"f{i}", f"r{i - 5}", "thumbs", 1.0, ts + 1))  # dup
            if i % 10 == 0:
                out.append(j.expire(ts))
    assert out_a == out_b
    assert a.to_dict() == b.to_dict()
    rocks.close()


def _fill(store: RocksDecisionStore, start: int, n: int) -> None:
    for r in range(start, start + n):
        store.put(_record(r, r, r % 4))
        store.add_seen(f"e{r}", T0 + r * H)


def test_checkpoint_restores_exactly_its_state(tmp_path: Path) -> None:
    store = RocksDecisionStore(tmp_path / "s")
    _fill(store, 0, 50)
    store.pop_expired(T0 + 10 * H)
    with pytest.raises(ValueError, match="checkpoint"):
        pickle.dumps(store)  # unwritten changes: no silent reference to an old state
    store.checkpoint()
    blob = pickle.dumps(store)
    at_checkpoint = (len(store), store.n_seen, list(store.records()), list(store.seen_items()))
    # after the checkpoint: more writes and an expiry, which a crash must undo
    _fill(store, 50, 30)
    store.pop_expired(T0 + 40 * H)
    assert list(store.records()) != at_checkpoint[2]
    restored = pickle.loads(blob)
    assert (len(restored), restored.n_seen, list(restored.records()),
            list(restored.seen_items())) == at_checkpoint
    with pytest.raises(RuntimeError, match="closed"):
        store.get("r1")  # the restore took over the live directory
    # and it goes on exactly as the original did from the checkpoint
    replay = MemoryDecisionStore()
    for rec in at_checkpoint[2]:
        replay.put(rec)
    for eid, ts in at_checkpoint[3]:
        replay.add_seen(eid, ts)
    for s in (restored, replay):
        _fill(s, 50, 30)  # type: ignore[arg-type]
        s.pop_expired(T0 + 40 * H)
    assert list(restored.records()) == list(replay.records())
    assert list(restored.seen_items()) == list(replay.seen_items())
    restored.close()


def test_missing_checkpoint_is_refused_and_old_ones_are_deleted(tmp_path: Path) -> None:
    store = RocksDecisionStore(tmp_path / "s")
    gens = []
    for k in range(4):
        _fill(store, k * 10, 10)
        gens.append(store.checkpoint())
        store.retain(gens[-1])
    kept = sorted(p.name for p in (tmp_path / "s").glob("ckpt-*"))
    assert kept == [f"ckpt-{g}" for g in gens[-2:]]  # the latest snapshot's and the previous
    blob = pickle.dumps(store)
    store.close()
    for d in (tmp_path / "s").glob("ckpt-*"):
        shutil.rmtree(d)
    with pytest.raises(ValueError, match="missing"):
        pickle.loads(blob)


def test_worker_snapshot_checkpoints_the_store_and_restores_it(tmp_path: Path) -> None:
    """The forked snapshot refers to a store checkpoint taken at the fork: writes after
    the fork are not in it, and only the two latest snapshots' checkpoints stay."""
    from pipeline.core.monitor import Monitor
    from pipeline.stream.checkpoint import CheckpointStore, Snapshot

    store = RocksDecisionStore(tmp_path / "cp" / "join-store")
    monitor = Monitor(decisions=store)
    for r in range(40):
        monitor.join.add_decision(f"r{r}", "a", "cheap", 0.5, T0 + r * H,
                                  segment={"intent": "billing"})
    at_fork = list(store.records())
    checkpoints = CheckpointStore(tmp_path / "cp")
    pid = checkpoints.fork_save(Snapshot({("routing", 0): 40}, monitor, messages=40))
    for r in range(40, 60):  # the worker goes on while the child writes
        monitor.join.add_decision(f"r{r}", "a", "cheap", 0.5, T0 + r * H)
    checkpoints.reap(pid)
    latest = tmp_path / "cp" / CheckpointStore.LATEST
    restored = CheckpointStore.decode(latest.read_bytes()).state  # a restart
    assert list(restored.join.store.records()) == at_fork  # not the 20 after the fork
    with pytest.raises(RuntimeError, match="closed"):
        store.get("r0")  # the restored store took the live directory over
    for k in range(3):  # later snapshots: older store checkpoints are deleted
        restored.join.add_decision(f"x{k}", "a", "cheap", 0.5, T0 + (100 + k) * H)
        checkpoints.reap(checkpoints.fork_save(Snapshot({("routing", 0): 41 + k}, restored)))
    assert len(list((tmp_path / "cp" / "join-store").glob("ckpt-*"))) == 2
    checkpoints.close()
    previous = (tmp_path / "cp" / CheckpointStore.PREVIOUS).read_bytes()
    state = CheckpointStore.decode(previous).state
    assert [r.request_id for r in state.join.store.records()] == [
        *(r.request_id for r in at_fork), "x0", "x1"]


def test_rocks_store_memory_stays_within_its_budgets(tmp_path: Path) -> None:
    """What ``tierwatch_join_store_memory_bytes`` shows: RocksDB's caches fill up to
    their fixed budgets as decisions pass through, and no further."""
    budget = 1 << 20
    store = RocksDecisionStore(tmp_path, memtable_bytes=budget, cache_bytes=budget)
    try:
        assert store.memory() == {}, "nothing opened yet"
        assert MemoryDecisionStore().memory() == {}
        peak = {"block_cache": 0, "memtables": 0}
        for b in range(40):
            batch = [_record(b * 1000 + i, b, i % 4) for i in range(1000)]
            store.put_many([r._replace(request_id=f"b{b}-{r.request_id}") for r in batch])
            k = max(0, b - 5)
            assert store.contains_any([f"b{k}-r{k * 1000 + i}" for i in range(0, 1000, 7)])
            assert not store.contains_any([f"b{k}-r{i}-new" for i in range(0, 1000, 7)])
            mem = store.memory()
            peak = {k: max(v, mem[k]) for k, v in peak.items()}
        assert peak["memtables"] > budget // 2, peak  # it was used...
        assert peak["memtables"] <= 2 * budget + (256 << 10), peak  # ...within two buffers
        assert 0 < peak["block_cache"] <= budget, peak
    finally:
        store.close()


def test_rocks_store_keeps_no_per_segment_buffers(tmp_path: Path) -> None:
    """Python memory the store keeps after 20,000 decisions with as many distinct segment
    values stays small: a cache of orjson's bytes once kept a 4 KB buffer per value."""
    import tracemalloc

    store = RocksDecisionStore(tmp_path)
    try:
        tracemalloc.start()
        for b in range(20):
            store.put_many([_record(i, b, i % 4)._replace(
                request_id=f"b{b}-{i}", segment=(("product", f"p{b}-{i}"),))
                for i in range(1000)])
        kept = sum(s.size for s in tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(True, "*/pipeline/store/rocks.py")]).statistics("filename"))
        tracemalloc.stop()
        assert kept < 4 << 20, f"{kept / 1e6:.1f} MB kept by the store"
    finally:
        store.close()


def test_a_store_written_with_the_former_per_decision_index_still_expires(
        tmp_path: Path) -> None:
    """Stores written before 2026-12-05 index each decision under ``t``: restored, their
    decisions list, expire and count as the new ones do."""
    store = RocksDecisionStore(tmp_path)
    memory = MemoryDecisionStore()
    former = [_record(i, i, 0) for i in range(4)]
    for rec in former:  # as the code before wrote them
        rid = rec.request_id.encode()
        store.db.put(b"d" + rid, store._encode(rec))
        store.db.put(b"t" + _t(rec.ts) + rid, b"")
        memory.put(rec)
    store._n = len(former)
    store.put_many(new := [_record(10 + i, i, 1) for i in range(4)])
    memory.put_many(new)
    assert list(store.records()) == list(memory.records())
    for hour in (1.5, 2.5, 10.0):
        assert store.pop_expired(T0 + hour * H) == memory.pop_expired(T0 + hour * H)
        assert list(store.records()) == list(memory.records())
        assert len(store) == len(memory)
    assert len(store) == 0 and not list(store._scan(b"t", b"u"))
    store.close()


@pytest.mark.parametrize("hours", [(0, 1, 2), (2, 1, 0), (1, 0, 2)])
def test_a_cut_through_a_batch_keeps_exactly_its_decisions_at_or_after_the_cutoff(
        tmp_path: Path, hours: tuple[int, int, int]) -> None:
    """Expiry at a time that a batch's decision has exactly, then at later cutoffs."""
    store, memory = RocksDecisionStore(tmp_path), MemoryDecisionStore()
    batch = [_record(i, h, 0) for i, h in enumerate(hours)]  # v = 0: ts = T0 + h * H
    for s in (store, memory):
        s.put_many(batch)
    for cutoff in (T0 + H, T0 + H, T0 + 1.5 * H, T0 + 2 * H, T0 + 3 * H):
        assert store.pop_expired(cutoff) == memory.pop_expired(cutoff)
        assert list(store.records()) == list(memory.records())
        assert len(store) == len(memory)
    assert len(store) == 0
    store.close()
