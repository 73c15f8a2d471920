"""Checkpoints: atomic, verified, falling back to the previous one; the processor's fence."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from pipeline.bootstrap import bootstrap, build_monitor
from pipeline.core.monitor import Monitor
from pipeline.settings import Settings
from pipeline.stream.app import StateUnusable, restore_state
from pipeline.stream.checkpoint import (
    DEFAULT_KEY,
    FORMAT_VERSION,
    HEADER,
    MAGIC,
    CheckpointStore,
    CorruptCheckpoint,
    IncompatibleCheckpoint,
    Snapshot,
)
from pipeline.stream.metrics import WorkerMetrics
from pipeline.stream.processor import InMessage, Processor
from tests.unit.test_fuzz_processor import VALID


def event(i: int, tier: str = "cheap") -> bytes:
    import orjson

    return orjson.dumps({**VALID, "event_id": f"e{i}", "request_id": f"q{i}", "tier": tier})


def processor(monitor: Monitor | None = None) -> Processor:
    return bootstrap(Settings(), monitor=monitor, clock=None)


def test_a_corrupt_latest_falls_back_to_the_previous(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    store.save(Snapshot({("t", 0): 1}, "one", messages=1))
    store.save(Snapshot({("t", 0): 2}, "two", messages=2))
    assert store.load().state == "two"  # type: ignore[union-attr]
    latest = tmp_path / CheckpointStore.LATEST
    blob = bytearray(latest.read_bytes())
    blob[-1] ^= 0xFF
    latest.write_bytes(bytes(blob))
    assert store.load().state == "one"  # type: ignore[union-attr]
    latest.write_bytes(b"garbage")
    assert store.load().state == "one"  # type: ignore[union-attr]
    store.close()


def test_one_worker_per_directory(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    with pytest.raises(RuntimeError, match="another worker"):
        CheckpointStore(tmp_path)
    store.close()
    CheckpointStore(tmp_path).close()


def test_restore_skips_what_the_snapshot_counts_and_never_saves_the_key(tmp_path: Path) -> None:
    p = processor()
    for i in range(5):
        p.handle("routing", InMessage("tierwatch.routing", 0, i, None, event(i)))
    store = CheckpointStore(tmp_path)
    blob = store.encode(p.snapshot())
    assert b"tierwatch-dev-key-change-me" not in blob
    store.write(blob)
    for i in range(5, 8):  # counted after the snapshot, then the worker dies
        p.handle("routing", InMessage("tierwatch.routing", 0, i, None, event(i)))

    q = processor()
    q.restore(store.load())  # type: ignore[arg-type]
    assert q.monitor.signer is not None and q.monitor.counts.routed == {("r", "cheap"): 5}
    for i in range(2, 8):  # the consumer re-reads from the committed offset, at or before
        q.handle("routing", InMessage("tierwatch.routing", 0, i, None, event(i)))
    assert q.monitor.counts.routed == p.monitor.counts.routed == {("r", "cheap"): 8}
    assert q.positions == p.positions == {("tierwatch.routing", 0): 8}
    fenced = q.metrics.registry.get_sample_value("tierwatch_fenced_messages_total",
                                                 {"topic": "routing"})
    assert fenced == 3
    store.close()


def test_a_forked_writer_saves_the_state_as_it_was_at_the_fork(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    (tmp_path / f".{CheckpointStore.LATEST}.999.tmp").write_bytes(b"half")
    store.close()
    store = CheckpointStore(tmp_path)
    assert not list(tmp_path.glob("*.tmp")), "a killed writer's leftovers are removed"
    state = {"n": 1}
    pid = store.fork_save(Snapshot({("t", 0): 1}, state))
    state["n"] = 2  # the parent goes on; the child wrote the image of the fork
    assert store.reap(pid) == (tmp_path / CheckpointStore.LATEST).stat().st_size
    assert store.load().state == {"n": 1}  # type: ignore[union-attr]
    store.directory = tmp_path / "missing" / "dir"
    with pytest.raises(RuntimeError, match="failed"):
        store.reap(store.fork_save(Snapshot({}, state)))
    store.close()


def test_both_unusable_raise_and_a_version_change_is_never_skipped(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    store.save(Snapshot({("t", 0): 1}, "one", messages=1))
    store.save(Snapshot({("t", 0): 2}, "two", messages=2))
    latest, previous = tmp_path / CheckpointStore.LATEST, tmp_path / CheckpointStore.PREVIOUS
    latest.write_bytes(latest.read_bytes()[:-1])  # torn
    assert store.load().state == "one" and store.loaded_from == "previous"  # type: ignore[union-attr]
    previous.write_bytes(previous.read_bytes()[:10])
    with pytest.raises(CorruptCheckpoint, match="no usable checkpoint"):
        store.load()
    # a newer format in front of a readable previous file: refused, not skipped
    store.save(Snapshot({("t", 0): 3}, "three", messages=3, version=FORMAT_VERSION + 1))
    store.save(Snapshot({("t", 0): 4}, "four", messages=4))
    os.replace(previous, latest)  # latest: format + 1; previous: gone
    store.save(Snapshot({("t", 0): 5}, "five", messages=5))
    os.replace(previous, tmp_path / "x")
    os.replace(latest, previous)
    os.replace(tmp_path / "x", latest)  # latest: format + 1; previous: readable
    with pytest.raises(IncompatibleCheckpoint, match=f"format {FORMAT_VERSION + 1}"):
        store.load()
    moved = store.set_aside()
    assert len(moved) == 2 and store.load() is None and store.loaded_from == "none"
    store.close()


def test_format_1_files_and_foreign_keys_are_refused(tmp_path: Path) -> None:
    import hashlib
    import hmac
    import pickle

    body = pickle.dumps(Snapshot({}, "old", version=1))
    with pytest.raises(IncompatibleCheckpoint, match="format 1") as err:
        CheckpointStore.decode(b"TWCP1\n" + hashlib.sha256(body).digest() + body)
    assert err.value.version == 1
    blob = CheckpointStore.encode(Snapshot({}, "x"), key=b"k" * 16)
    assert CheckpointStore.decode(blob, key=b"k" * 16).state == "x"
    with pytest.raises(CorruptCheckpoint, match="HMAC"):
        CheckpointStore.decode(blob)  # the built-in key
    # a pickle that verifies but names code this version lacks is a version problem
    evil = pickle.dumps(Snapshot({}, "x")).replace(b"pipeline.stream.checkpoint",
                                                   b"pipeline.stream.checkpoinT")
    signed = HEADER.pack(MAGIC, FORMAT_VERSION,
                         hmac.new(DEFAULT_KEY, evil, hashlib.sha256).digest()) + evil
    with pytest.raises(IncompatibleCheckpoint, match="names code"):
        CheckpointStore.decode(signed)


def test_a_worker_refuses_an_unusable_state_unless_reset(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    metrics = WorkerMetrics(registry)
    (tmp_path / CheckpointStore.LATEST).write_bytes(b"TWCP\x00\x02torn")
    store = CheckpointStore(tmp_path)
    with pytest.raises(StateUnusable, match=r"refusing to start.*--reset-state"):
        restore_state(store, processor(), Settings(), metrics)
    p = processor()
    restore_state(store, p, Settings(reset_state=True), metrics)
    assert p.messages == 0 and not (tmp_path / CheckpointStore.LATEST).exists()
    assert registry.get_sample_value("tierwatch_state_restores_total",
                                     {"source": "reset"}) == 1
    store.save(Snapshot({("t", 0): 9}, build_monitor(Settings()), messages=9))
    restore_state(store, p, Settings(reset_state=True), metrics)  # usable: no effect
    assert p.positions == {("t", 0): 9} and p.messages == 9
    assert registry.get_sample_value("tierwatch_state_restores_total",
                                     {"source": "latest"}) == 1
    store.close()


def test_quality_state_pickled_before_quality_became_a_package_still_loads() -> None:
    """Snapshots name the quality classes ``pipeline.core.quality.<Class>`` from before
    the module was split; the package re-exports every one of them."""
    import pickle

    from pipeline.core.quality import OutcomeCounts, SequentialDropTest, Totals

    counts = OutcomeCounts()
    counts.update("cheap", 3, "thumbs", 1_700_000_000.0, 1.0)
    state = (counts, SequentialDropTest(floor=0.05), Totals.from_arrays([1.0, 0.0]))
    text = pickle.dumps(state, protocol=0)
    old = text
    for module in ("counts", "drop", "totals"):
        old = old.replace(f"pipeline.core.quality.{module}\n".encode(), b"pipeline.core.quality\n")
    assert old != text and b"pipeline.core.quality.counts" not in old
    loaded = pickle.loads(old)
    assert [type(x) for x in loaded] == [type(x) for x in state]
    assert loaded[0].window(1_700_000_000.0 + 60, 3600, signal="thumbs", tier="cheap").n == 1


#: a router state pickled by the code from before the drift and quality watches left
#: RouterState (their attributes flat in it): ``_fed_router_state(0, 60)`` run on a
#: ``git archive 4ac47e3 pipeline tests`` tree with this file copied in, pickled, gzipped
OLD_ROUTER_STATE = Path(__file__).parent / "data" / "router_state_flat.pickle.gz"


def _fed_router_state(first: int, last: int, state: Any = None) -> Any:
    """A router state fed routing, votes, surveys and contacts hour by hour from hour
    ``first`` to ``last`` (through and past a one-day reference period), evaluated each
    hour; the same whatever the code's layout: it uses only RouterState's public methods."""
    from datetime import UTC, datetime

    import numpy as np

    from pipeline.core.baseline import fit_baseline
    from pipeline.core.router_state import MonitorConfig, QualityConfig, RouterState
    from pipeline.schemas import Thresholds

    t0 = 1_767_571_200.0
    rng = np.random.default_rng(first)
    if state is None:
        config = MonitorConfig(drift_windows=(3600.0, 86400.0),
                               quality=QualityConfig(reference_days=1.0))
        state = RouterState("r", config, t0)
        state.set_baseline(fit_baseline("r", "v1", datetime(2026, 1, 1, tzinfo=UTC),
                                        rng.beta(3, 2, 5_000), {"length": rng.gamma(2, 1, 5_000)}))
    th = Thresholds(cheap_above=0.6, capable_below=0.5, exploration_rate=0.2)
    contacts: list[tuple[float, float, str, float]] = []
    for h in range(first, last):
        start = t0 + h * 3600.0
        shifted = start >= t0 + 50 * 3600.0  # after the reference: scores and votes move
        n = 150
        ts = np.sort(rng.uniform(start, start + 3600.0, n))
        scores = rng.beta(5 if shifted else 3, 2, n)
        explore = rng.random(n) < th.exploration_rate
        cheap = (scores >= th.cheap_above) | ((scores >= th.capable_below) & explore)
        tiers = ["cheap" if c else "capable" for c in cheap.tolist()]
        reasons = ["exploration" if e and th.capable_below <= s < th.cheap_above else "confident"
                   for s, e in zip(scores.tolist(), explore.tolist(), strict=True)]
        state.observe_routing(ts, scores, tiers, reasons, [th] * n, [0.01] * n,
                              {"length": (ts.tolist(), rng.gamma(2, 1, n).tolist())},
                              state.bands(scores).tolist())
        for t, s, tier, r in zip(ts.tolist(), scores.tolist(), tiers, reasons, strict=True):
            good = rng.random() < (0.6 if shifted and tier == "cheap" else 0.85)
            common = {"tier": tier, "score": s, "decision_ts": t, "weight": None,
                      "propensity": 0.2 if r == "exploration" else 1.0,
                      "in_band": r == "exploration"}
            if rng.random() < 0.5:
                state.observe_feedback(kind="thumbs", value=1.0 if good else 0.0,
                                       ts=t + 60.0, **common)
            if rng.random() < 0.1:
                state.observe_feedback(kind="survey", value=float(rng.integers(0, 5)) / 4,
                                       ts=t + 1800.0, **common)
            if rng.random() < (0.08 if shifted and tier == "cheap" else 0.03):
                contacts.append((t + rng.exponential(4 * 3600.0), t, tier, s))
        due = sorted(c for c in contacts if c[0] < start + 3600.0)
        contacts = [c for c in contacts if c[0] >= start + 3600.0]
        for at, decided, tier, s in due:
            state.observe_feedback(tier=tier, score=s, kind="support_contact", value=1.0,
                                   ts=at, decision_ts=decided, weight=None, propensity=None,
                                   in_band=None)
        state.observe_feedback(tier="cheap", score=0.7, kind="support_contact", value=1.0,
                               ts=start + 10.0, decision_ts=None, weight=None,
                               propensity=None, in_band=None)
        for minute in range(1, 60):
            state.sequential(start + 60.0 * minute)
        state.evaluate(start + 3600.0)
    return state


def test_a_router_state_pickled_before_its_watches_were_split_out_still_loads() -> None:
    """A checkpoint's RouterState from before DriftWatch and QualityWatch loads into the
    new layout with equal state, and evaluates on exactly as a state built by this code."""
    import gzip
    import pickle

    from tests.integration.feed import canon, differences

    old = pickle.loads(gzip.decompress(OLD_ROUTER_STATE.read_bytes()))
    new = _fed_router_state(0, 60)
    assert not list(differences(canon(old), canon(new)))
    assert any(k.kind == "tier_confidence_drift" for k in new.alerts.active())
    for state in (old, new):
        _fed_router_state(60, 66, state)
    assert not list(differences(canon(old), canon(new)))
    assert old.last_snapshot == new.last_snapshot and old.gauges == new.gauges


def test_the_worker_restores_and_runs_with_the_replays_collector_thresholds(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Set before the state is restored; at Python's defaults a full collection over the
    state's millions of objects cost the worker 10-19 % of its CPU."""
    import gc

    from pipeline import bootstrap
    from pipeline.settings import Settings
    from pipeline.stream import app

    seen: list[tuple[int, int, int]] = []

    def unusable(settings: Settings) -> None:
        seen.append(gc.get_threshold())
        raise StateUnusable("refusing to start: test")

    before = gc.get_threshold()
    monkeypatch.setattr(app.kafka_clients, "check_connection", lambda settings: None)
    monkeypatch.setattr(app, "build_worker", unusable)
    try:
        with pytest.raises(SystemExit) as exit_:
            app.run_worker(Settings())
    finally:
        gc.set_threshold(*before)
    assert exit_.value.code == 2
    assert seen == [bootstrap.GC_THRESHOLDS] != [before]


def test_a_snapshot_holding_the_former_core_thresholds_restores(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Snapshots written while ``pipeline.core.drift`` had a Thresholds class of its own
    (merged into the contract's on 2026-12-05) hold it as keys of DriftStream's cache:
    they restore, without the cache, and the stream goes on as the original does."""
    from dataclasses import dataclass

    import numpy as np

    import pipeline.core.drift as drift
    from pipeline.core.detector import DriftConfig, DriftStream
    from pipeline.core.histogram import QuantileBins

    @dataclass(frozen=True)
    class Former:
        cheap_above: float
        capable_below: float
        exploration_rate: float = 0.0

    rng = np.random.default_rng(3)
    bins = QuantileBins.from_sample(rng.beta(2, 3, 5000), 50)
    key = (0.6, 0.5, 0.1)
    stream = DriftStream(bins, DriftConfig(alpha=1e-4, seq_threshold=13.0), tier="cheap")
    ts, scores = np.sort(rng.uniform(0, 7200, 500)), rng.uniform(0.6, 1.0, 500)
    stream.update_many(ts[:250], scores[:250], [key] * 250)
    with monkeypatch.context() as m:  # pickled as the code before the merge did
        Former.__module__, Former.__qualname__ = "pipeline.core.drift", "Thresholds"
        m.setattr(drift, "Thresholds", Former)
        m.setattr(DriftStream, "__getstate__", lambda self: dict(self.__dict__))
        stream._cache[Former(*key)] = stream._cache.pop(key)  # type: ignore[index]
        blob = CheckpointStore.encode(Snapshot({("t", 0): 1}, stream))
        del stream._cache[Former(*key)]  # type: ignore[arg-type]
    assert b"pipeline.core.drift" in blob and b"Thresholds" in blob

    with monkeypatch.context() as m:  # whatever pipeline.core.drift imports by that name
        m.delattr(drift, "Thresholds")
        restored = CheckpointStore.decode(blob).state
    assert isinstance(restored, DriftStream) and restored._cache == {}
    for s in (stream, restored):
        s.update_many(ts[250:], scores[250:], [key] * 250)
    assert restored.evaluate(7200.0).statistics() == stream.evaluate(7200.0).statistics()
    assert restored.hist.to_dict() == stream.hist.to_dict()
