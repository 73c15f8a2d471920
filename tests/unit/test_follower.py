"""The standby's follower without a broker: what it takes, holds and releases, in order."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from kafka import TopicPartition

from pipeline.stream.follower import Follower, Limits

R0, R1 = TopicPartition("t.routing", 0), TopicPartition("t.routing", 1)
B0 = TopicPartition("t.baselines", 0)
TOPICS = {"t.routing": "routing", "t.baselines": "baselines"}


@dataclass
class Record:
    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None = None
    value: bytes | None = b"[]"


@dataclass
class Consumer:
    paused: set[TopicPartition] = field(default_factory=set)

    def pause(self, *tps: TopicPartition) -> None:
        self.paused.update(tps)

    def resume(self, *tps: TopicPartition) -> None:
        self.paused.difference_update(tps)


def follower(tps: list[TopicPartition], positions: dict[tuple[str, int], int] | None = None
             ) -> Follower:
    worker: Any = SimpleNamespace(processor=SimpleNamespace(positions=positions or {}))
    f = Follower(worker, TOPICS, {"baselines": 0, "routing": 1}, frozenset({"baselines"}))
    f.next = {tp: (positions or {}).get((tp.topic, tp.partition), 0) for tp in tps}
    return f


def records(tp: TopicPartition, offsets_and_times: list[tuple[int, int]]) -> list[Record]:
    return [Record(tp.topic, tp.partition, o, t) for o, t in offsets_and_times]


def offsets(released: list[tuple[str, Any]]) -> list[tuple[int | None, int | None]]:
    return [(m.partition, m.offset) for _, m in released]


def test_it_releases_only_what_the_group_committed_in_timestamp_order() -> None:
    f = follower([R0, R1])
    f.limits = Limits({R0: 2, R1: 1})
    f._take(R0, records(R0, [(0, 10), (1, 30), (2, 40)]))
    f._take(R1, records(R1, [(0, 20), (1, 25)]))
    consumer = Consumer()
    f._hold(consumer)
    # offset 2 of R0 and offset 1 of R1 are past the commits: held, and no more fetched
    assert consumer.paused == {R0, R1}
    assert offsets(f._release()) == [(0, 0), (1, 0), (0, 1)]
    # the commits move: what they admit is released, in timestamp order across partitions
    f.limits = Limits({R0: 3, R1: 2})
    f._admit(consumer)
    assert consumer.paused == set()
    assert offsets(f._release()) == [(1, 1), (0, 2)]


def test_a_partition_below_its_commit_with_nothing_fetched_holds_the_others_back() -> None:
    f = follower([R0, R1])
    f.limits = Limits({R0: 1, R1: 1})
    f._take(R0, records(R0, [(0, 50)]))
    # R1 has a committed record not fetched yet: it might come before R0's
    assert f._release() == []
    f._take(R1, records(R1, [(0, 40)]))
    assert offsets(f._release()) == [(1, 0), (0, 0)]


def test_records_already_in_the_state_or_fetched_twice_are_taken_once() -> None:
    f = follower([R0], positions={("t.routing", 0): 2})
    f.limits = Limits({R0: 5})
    f._take(R0, records(R0, [(1, 5), (2, 6), (3, 7)]))
    f._take(R0, records(R0, [(3, 7), (4, 8)]))  # a re-fetch after a reconnect
    assert offsets(f._release()) == [(0, 2), (0, 3), (0, 4)]
    assert f.caught_up(R0) and f.next[R0] == 5


def test_baselines_are_applied_first_and_events_wait_until_they_are_read_to_the_commit() -> None:
    f = follower([B0, R0])
    f.limits = Limits({B0: 2, R0: 1})
    f._take(R0, records(R0, [(0, 1)]))
    f._take(B0, records(B0, [(0, 99)]))
    got = f._release()
    assert [(k, m.offset) for k, m in got] == [("baselines", 0)]  # events wait for the table
    f._take(B0, records(B0, [(1, 100)]))
    got = f._release()
    assert [(k, m.offset) for k, m in got] == [("baselines", 1), ("routing", 0)]


def test_status_says_how_far_behind_the_commits_it_is() -> None:
    f = follower([R0, R1])
    assert f.status() is None  # not following
    f.task = SimpleNamespace()  # type: ignore[assignment]
    f.limits = Limits({R0: 10, R1: 4})
    f.next = {R0: 7, R1: 4}
    status = f.status()
    assert status is not None
    assert status["behind"] == 3 and status["partitions"] == {"t.routing:0": 3, "t.routing:1": 0}
