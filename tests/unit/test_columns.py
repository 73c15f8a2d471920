"""The columnar routing path changes nothing: the same outputs, byte for byte, and the same
state as the per-event path, on clean traffic and on traffic full of the rare cases.

Two replays of the same files run in process, one with ``Processor(columnar=False)`` (the
per-event path: pydantic, ``Monitor.observe_routing`` one event at a time), one with the
hot-path decoder and ``core/columns.py``. The hostile variant adds, at random places:
duplicates, late events, events from before their feedback (feedback waiting in the join
is released by the decision), unknown fields, lax timestamps (naive, numeric, with more
than six fraction digits), invalid fields, broken lines, a second router, mixed policies
and batches that cross midnight; the review quota is raised so that reviews are selected
(and capped) often.
"""

from __future__ import annotations

import dataclasses
import random
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from pipeline.bootstrap import bootstrap
from pipeline.core.columns import observe_routing_columns
from pipeline.core.monitor import Monitor
from pipeline.demo import simulate
from pipeline.replay import Replay, build_monitor
from pipeline.schemas import Baseline, RoutingEvent
from pipeline.settings import Settings
from pipeline.stream.checkpoint import CheckpointStore, Snapshot
from pipeline.stream.processor import InMessage, OutMessage, Processor
from tests.integration.feed import canon, differences

OUTPUTS = ("alerts.jsonl", "control.jsonl", "review.jsonl", "dlq.jsonl")


def _hostile(src: Path, dst: Path, seed: int = 5) -> None:
    rnd = random.Random(seed)
    routing = src.joinpath("routing.jsonl").read_bytes().splitlines()
    out: list[bytes] = []
    early_feedback: list[bytes] = []
    for i, line in enumerate(routing):
        out.append(line)
        x = rnd.random()
        d = orjson.loads(line)
        d["request_id"] += f"-h{i}"
        if x < 0.001:
            out.append(line)  # a duplicate
        elif x < 0.025:
            out.append(b'{"event_id": "broken", "ts": "2026-01-01T00:00:00Z"')
        elif x < 0.03:
            d["score"] = 1.5
            out.append(orjson.dumps(d))
        elif x < 0.04:
            d["trace_id"] = "t"
            d["thresholds"]["origin"] = "x"
            out.append(orjson.dumps(d))
        elif x < 0.05:
            d["router_id"] = "second"
            out.append(orjson.dumps(d))
        elif x < 0.0505 and i > 500:
            old = orjson.loads(routing[i - 500])
            old["request_id"] += f"-late{i}"
            old["ts"] = "2025-01-01T00:00:00+00:00"
            out.append(orjson.dumps(old))
        elif x < 0.06:
            d["ts"] = d["ts"].replace("+00:00", "")  # naive: rejected
            out.append(orjson.dumps(d))
        elif x < 0.065:
            d["ts"] = round(_epoch(line), 3)  # numeric: lax
            out.append(orjson.dumps(d))
        elif x < 0.07:
            d["ts"] = d["ts"].replace("+00:00", "1+00:00") if "." in d["ts"] else d["ts"]
            out.append(orjson.dumps(d))  # seven fraction digits: pydantic truncates
        elif x < 0.08:
            d["thresholds"] = {"cheap_above": 0.8, "capable_below": 0.2,
                               "exploration_rate": 0.05}
            out.append(orjson.dumps(d))
        elif x < 0.081:
            early = datetime.fromisoformat(d["ts"]) - timedelta(hours=4)  # clock skew:
            fb = {"event_id": f"early-{i}", "request_id": d["request_id"], "kind": "thumbs",
                  "value": 0.0, "ts": early.isoformat()}  # it waits for its decision
            early_feedback.append(orjson.dumps(fb))
            out.append(orjson.dumps(d))
        elif x < 0.1:
            fb = {"event_id": f"orphan-{i}", "request_id": f"never-{i}", "kind": "thumbs",
                  "value": 1.0, "ts": d["ts"]}  # its decision never comes: unjoined
            early_feedback.append(orjson.dumps(fb))
        elif x < 0.102:  # personal data as a subject id: dead-lettered, named
            e = orjson.loads(line)
            e["subject_id"] = "ann.person@example.com"
            out[-1] = orjson.dumps(e)
        elif x < 0.4:  # a pseudonymous subject (issue #18): cohorts and the subject ledger
            e = orjson.loads(line)
            e["subject_id"] = f"sha256:{i % 97:016x}"
            out[-1] = orjson.dumps(e)
    feedback = src.joinpath("feedback.jsonl").read_bytes().splitlines()
    merged = sorted(feedback + early_feedback, key=lambda b: orjson.loads(b)["ts"])
    dst.mkdir(parents=True, exist_ok=True)
    dst.joinpath("routing.jsonl").write_bytes(b"\n".join(out) + b"\n")
    dst.joinpath("feedback.jsonl").write_bytes(b"\n".join(merged) + b"\n")
    dst.joinpath("baseline.json").write_bytes(src.joinpath("baseline.json").read_bytes())


def _epoch(line: bytes) -> float:
    return RoutingEvent.model_validate_json(line).epoch


def _replay(data: Path, out: Path, columnar: bool,
            taken: list[bool] | None = None,
            monkeypatch: pytest.MonkeyPatch | None = None) -> tuple[dict[str, bytes], Monitor]:
    settings = Settings(eval_every_s=10800, join_ttl_s=86400)
    monitor = build_monitor(settings)
    monitor.config = dataclasses.replace(monitor.config, review_quota_per_day=400.0)
    replay = Replay(settings, monitor, out)
    replay.processor.columnar = columnar
    if taken is not None and monkeypatch is not None:  # which batches the columnar path took
        def spy(monitor: Monitor, events: Any, epochs: Any) -> Any:
            got = observe_routing_columns(monitor, events, epochs)
            taken.append(got is not None)
            return got

        monkeypatch.setattr("pipeline.core.monitor.observe_routing_columns", spy)
    baseline = Baseline.model_validate_json((data / "baseline.json").read_bytes())
    replay.run(data / "routing.jsonl", data / "feedback.jsonl", [baseline], progress=False)
    return {name: (out / name).read_bytes() for name in OUTPUTS}, replay.processor.monitor


@pytest.fixture(scope="module")
def sims(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("columns")
    simulate("pareto-trap", root / "clean", days=2.2, rate=0.08, seed=3)
    _hostile(root / "clean", root / "hostile")
    return {"clean": root / "clean", "hostile": root / "hostile"}


def _state(monitor: Monitor) -> Any:
    return canon(CheckpointStore.decode(CheckpointStore.encode(Snapshot({}, monitor))).state)


@pytest.mark.parametrize("kind", ["clean", "hostile"])
def test_columnar_path_changes_no_output_and_no_state(sims: dict[str, Path], tmp_path: Path,
                                                      kind: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    per_event, m1 = _replay(sims[kind], tmp_path / "per-event", columnar=False)
    taken: list[bool] = []
    columnar, m2 = _replay(sims[kind], tmp_path / "columnar", columnar=True, taken=taken,
                           monkeypatch=monkeypatch)
    assert sum(taken) > 0.5 * len(taken), "most batches take the columnar path"
    if kind == "hostile":
        assert not all(taken), "some are left to the per-event path"
    assert per_event["review.jsonl"], "the quota is raised so that reviews are selected"
    if kind == "hostile":
        dlq = per_event["dlq.jsonl"].decode()
        for reason in ('"late"', '"invalid_json"', '"invalid_field"', '"unjoined"',
                       "email address (PII)"):
            assert reason in dlq, reason
        assert any(r.delayed.ledger.subjects for r in m1.routers.values()), "subjects counted"
        assert m1.counts.duplicates > 0 and len(m1.routers) == 2
    for name in OUTPUTS:
        assert columnar[name] == per_event[name], name
    want, have = _state(m1), _state(m2)
    assert want == have, "\n".join(list(differences(want, have))[:20])


def test_duplicates_are_screened_and_a_release_is_left_to_the_per_event_path() -> None:
    from pipeline.core.monitor import _example_event

    m = Monitor()
    ev = _example_event()
    assert observe_routing_columns(m, [ev, ev], np.array([ev.epoch, ev.epoch])) == []
    assert m.counts.duplicates == 1 and len(m.join) == 1
    other = ev.model_copy(update={"request_id": "r2", "event_id": "e2"})
    m.join.add_feedback("f", "r2", "thumbs", 1.0, ts=ev.epoch)  # waits for r2
    assert observe_routing_columns(m, [other], np.array([ev.epoch])) is None
    assert len(m.join) == 1, "nothing changed"
    assert m.observe_routing([other], np.array([ev.epoch])) == []
    assert len(m.join) == 2 and m.counts.feedback == {("support", "thumbs"): 1}


@pytest.mark.parametrize("zero", ["0.0", "-0.0"])
def test_signed_zeros_in_thresholds_are_kept_as_written(zero: str) -> None:
    """-0.0 == 0.0, but a recommendation's ``previous`` would be written differently."""
    from pipeline.core.monitor import _example_event
    from pipeline.fastcodec import decode_routing

    base = _example_event().model_dump(mode="json")
    docs = [{**base, "event_id": f"e{i}", "request_id": f"r{i}",
             "thresholds": {"cheap_above": 0.7, "capable_below": 0.0 if i % 2 else -0.0,
                            "exploration_rate": 0.1}} for i in range(4)]
    raw = orjson.dumps(docs).replace(b'"capable_below":0.0', f'"capable_below":{zero}'
                                     .encode(), 1)
    batch = decode_routing(raw)
    per_event, columnar = Monitor(), Monitor()
    per_event.observe_routing([RoutingEvent.model_validate(d) for d in orjson.loads(raw)])
    columnar.observe_routing(batch.events, batch.epochs)
    want, have = _state(per_event), _state(columnar)
    assert want == have
    th = columnar.routers["support"].thresholds
    assert th is not None and repr(th.capable_below) == repr(
        per_event.routers["support"].thresholds.capable_below)  # type: ignore[union-attr]


def _inputs(data: Path, settings: Settings, batch: int) -> list[tuple[str, InMessage]]:
    """The messages of a replay of ``data`` as a worker would take them: batches of
    ``batch`` lines, cut where the replay cuts them (evaluation boundaries, bad lines)."""
    replay = Replay(settings, build_monitor(settings), data / "unused", batch=batch)
    return [(m.kind, InMessage(m.source, None, m.lines[0].line_no, None, m.value))
            for m in replay.messages(data / "routing.jsonl", data / "feedback.jsonl")]


def _processor(data: Path, settings: Settings) -> Processor:
    monitor = build_monitor(settings)
    monitor.config = dataclasses.replace(monitor.config, review_quota_per_day=400.0)
    monitor.set_baseline(Baseline.model_validate_json((data / "baseline.json").read_bytes()))
    return bootstrap(settings, monitor=monitor, clock=None)


@pytest.fixture(scope="module")
def run_sims(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``fast``: 1 routing event/s, several messages between two sequential ticks;
    ``slow``: a retrained classifier (drift alerts from day 10) at 0.05 events/s, with
    the hourly evaluations only. Each also in a hostile variant (two routers)."""
    root = tmp_path_factory.mktemp("runs")
    simulate("pareto-trap", root / "fast", days=0.25, rate=1.0, seed=11)
    simulate("retrain", root / "slow", days=13, rate=0.05, seed=3)
    for feed in ("fast", "slow"):
        _hostile(root / feed, root / f"{feed}-hostile", seed=12)
    return {"fast-clean": root / "fast", "slow-clean": root / "slow",
            "fast-hostile": root / "fast-hostile", "slow-hostile": root / "slow-hostile"}


@pytest.mark.parametrize("kind", ["clean", "hostile"])
@pytest.mark.parametrize("feed", ["fast", "slow"])
def test_runs_of_messages_count_as_one_batch_with_the_same_outputs(
        run_sims: dict[str, Path], kind: str, feed: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``handle_many`` over random slices gives, message for message, what ``handle`` and
    ``flush`` after each message give: the same output sequence and the same state."""
    data = run_sims[f"{feed}-{kind}"]
    settings = Settings(eval_every_s=10800, join_ttl_s=86400,
                        sequential_drift=feed == "fast")
    inputs = _inputs(data, settings, batch=9)
    one = _processor(data, settings)
    want = []
    for k, msg in inputs:
        want += one.handle(k, msg) + one.flush()
    runs: list[int] = []
    count_run = Processor._count_run

    def spy(self: Processor, run: list[Any]) -> list[OutMessage]:
        runs.append(len(run))
        return count_run(self, run)

    monkeypatch.setattr(Processor, "_count_run", spy)
    many = _processor(data, settings)
    rnd = random.Random(len(inputs))
    have: list[OutMessage] = []
    i = 0
    while i < len(inputs):
        n = rnd.choice([1, 2, 5, 30, 64, 200])
        have += many.handle_many(inputs[i:i + n])
        i += n
    topics = {m.topic for m in want}
    assert {"review", "alerts"} <= topics or feed == "fast", topics
    if feed == "slow":
        kinds = {orjson.loads(m.value)["kind"] for m in want if m.topic == "alerts"}
        assert {"confidence_drift", "tier_confidence_drift"} <= kinds, kinds
    if kind == "hostile":
        assert "dlq" in topics
    assert sum(n for n in runs if n > 1) > 0.2 * sum(k == "routing" for k, _ in inputs), \
        "a good share of the routing messages were counted in runs"
    assert [(m.topic, m.key, m.value) for m in have] == [(m.topic, m.key, m.value)
                                                         for m in want]
    assert many.messages == one.messages and many.monitor.counts == one.monitor.counts
    w, h = _state(one.monitor), _state(many.monitor)
    assert w == h, "\n".join(list(differences(w, h))[:20])


def test_a_run_that_raises_costs_its_messages_not_the_worker(
        run_sims: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug met while counting a run dead-letters each of its messages, with the
    error, as it would each message alone; the messages after it are counted."""
    data = run_sims["fast-clean"]
    settings = Settings(eval_every_s=10800, join_ttl_s=86400)
    inputs = [(k, m) for k, m in _inputs(data, settings, batch=9) if k == "routing"][:400]
    p = _processor(data, settings)
    observe = Monitor.observe_routing
    failed: list[int] = []

    def flaky(self: Monitor, events: Any, epochs: Any = None) -> Any:
        if len(events) > 9 and not failed:  # the first run of several messages
            failed.append(len(events))
            raise RuntimeError("a bug")
        return observe(self, events, epochs)

    monkeypatch.setattr(Monitor, "observe_routing", flaky)
    out = p.handle_many(inputs[:200]) + p.handle_many(inputs[200:])
    assert failed, "a run was counted"
    dead = [orjson.loads(m.value) for m in out if m.topic == "dlq"]
    assert dead and all(d["reason_class"] == "internal_error" and "a bug" in d["reason"]
                        for d in dead)
    assert len(dead) >= 2, "one dead letter per message of the run"
    assert sum(len(orjson.loads(d["payload"])) for d in dead) == failed[0], \
        "each carries its whole message"
    assert p.messages == len(inputs) and p.consecutive_errors == 0
    counted = sum(p.monitor.counts.routed.values())
    assert counted + failed[0] == sum(len(orjson.loads(m.value)) for _, m in inputs)


def test_a_duplicate_feedback_counts_once_and_leaves_the_feedback_watermark() -> None:
    from pipeline.core.monitor import _example_event
    from pipeline.schemas import FeedbackEvent

    m = Monitor()
    ev = _example_event()
    m.observe_routing([ev])

    def feedback(ts: str) -> FeedbackEvent:
        return FeedbackEvent.model_validate({"event_id": "f1", "request_id": ev.request_id,
                                             "kind": "thumbs", "value": 0, "ts": ts})

    first = feedback("2026-01-01T01:00:00+00:00")
    assert m.observe_feedback([first]) == []
    assert m.observe_feedback([feedback("2026-01-01T05:00:00+00:00")]) == []
    assert m.counts.duplicates == 1 and m.join.duplicates == 1
    assert m.feedback_watermark == first.epoch
    assert m.counts.feedback == {("support", "thumbs"): 1}
