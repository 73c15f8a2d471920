"""The router-side subscriber against a real broker: what it rejects, counts and recovers.

Anyone who can write to the control topic is untrusted. Each attack is published on its
own compacted topic after one valid recommendation; the subscriber must reject it,
count it under its reason, and keep routing with the valid thresholds.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic
from kafka_broker import LocalKafka, create_topics, unique_topic

from pipeline.control import Bounds, RoutingEventEmitter, ThresholdSubscriber, decide
from pipeline.core.signing import Keyring, new_key
from pipeline.schemas import ExpectedImpact, ThresholdRecommendation, Thresholds
from pipeline.stream.processor import encode
from tests.integration.worker_proc import eventually

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(120, func_only=True)]

ROUTER = "support"
KEY = bytes.fromhex(new_key())
RING = Keyring({"k1": KEY})
BOUNDS = Bounds(cheap_above=(0.3, 1.0), capable_below=(0.0, 1.0), exploration_rate=(0.0, 0.3))
FALLBACK = Thresholds(cheap_above=0.95, capable_below=0.9, exploration_rate=0.0)
PREVIOUS = Thresholds(cheap_above=0.6, capable_below=0.5, exploration_rate=0.1)
FIRST = Thresholds(cheap_above=0.65, capable_below=0.55, exploration_rate=0.1)
SECOND = Thresholds(cheap_above=0.7, capable_below=0.6, exploration_rate=0.1)
THIRD = Thresholds(cheap_above=0.75, capable_below=0.65, exploration_rate=0.05)


def recommendation(*, seq: int, thresholds: Thresholds = FIRST, ring: Keyring = RING,
                   key_id: str = "k1", router_id: str = ROUTER, mode: str = "enforce",
                   issued: datetime | None = None,
                   ttl: timedelta = timedelta(days=7)) -> ThresholdRecommendation:
    """A recommendation signed as ``Monitor._recommend`` signs one."""
    issued = issued or datetime.now(UTC).replace(microsecond=0)
    unsigned = ThresholdRecommendation.model_validate({
        "router_id": router_id, "seq": seq, "issued_at": issued, "valid_until": issued + ttl,
        "mode": mode, "thresholds": thresholds, "previous": PREVIOUS,
        "reasons": ["test"], "evidence": {"target": thresholds.cheap_above},
        "expected_impact": ExpectedImpact(cost_per_day_usd=1.0, cost_change_per_day_usd=0.0,
                                          cheap_share=0.5, quality_change=0.0),
        "key_id": key_id, "signature": "0" * 64})
    doc = unsigned.model_dump(mode="json", exclude_none=True)
    return unsigned.model_copy(update={"signature": ring.sign(key_id, doc)})



@pytest.fixture
def control_topic(kafka_bootstrap: str) -> str:
    topic = unique_topic("test.control")
    create_topics(kafka_bootstrap, [topic], compacted=[topic])
    return topic


@contextlib.contextmanager
def publisher(bootstrap: str, topic: str) -> Iterator[Callable[..., None]]:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)

    def send(value: bytes | None, key: str = ROUTER) -> None:
        producer.send(topic, key=key.encode(), value=value).get(timeout=30)

    try:
        yield send
    finally:
        producer.close()


@contextlib.contextmanager
def running(bootstrap: str, topic: str, **kw: Any) -> Iterator[ThresholdSubscriber]:
    kw.setdefault("bounds", BOUNDS)
    sub = ThresholdSubscriber(bootstrap, ROUTER, RING, kw.pop("bounds"), FALLBACK, topic=topic,
                              **kw)
    sub.start(wait_caught_up=30)
    try:
        yield sub
    finally:
        sub.stop()


def total(sub: ThresholdSubscriber) -> int:
    return sum(sub.rejections.values())


def _forged() -> bytes:
    doc = orjson.loads(encode(recommendation(seq=2, thresholds=SECOND)))
    doc["thresholds"] = THIRD.model_dump(exclude_none=True)  # changed after signing
    return orjson.dumps(doc)


ATTACKS: dict[str, tuple[Callable[[], bytes | None], str, str]] = {
    # reason: (the message, its key, why it must fail)
    "bad_signature": (_forged, ROUTER, "thresholds changed after signing"),
    "unknown_key": (lambda: encode(recommendation(
        seq=2, thresholds=SECOND, ring=Keyring({"k9": bytes.fromhex(new_key())}),
        key_id="k9")), ROUTER, "signed by a key the router does not trust"),
    "replay": (lambda: encode(recommendation(seq=1, thresholds=SECOND)), ROUTER,
               "a seq already applied"),
    "expired": (lambda: encode(recommendation(
        seq=2, thresholds=SECOND, issued=datetime.now(UTC) - timedelta(days=8))), ROUTER,
        "valid_until in the past"),
    "out_of_bounds": (lambda: encode(recommendation(
        seq=2, thresholds=Thresholds(cheap_above=0.1, capable_below=0.05,
                                     exploration_rate=0.1))), ROUTER,
        "cheap_above below the owner's 0.3"),
    "malformed": (lambda: b'{"router_id": "support", "seq": 2, "thresholds": {', ROUTER,
                  "not JSON"),
    "other_router": (lambda: encode(recommendation(seq=2, thresholds=SECOND,
                                                   router_id="billing")), "billing",
                     "keyed and addressed to another router"),
}


@pytest.mark.parametrize("reason", sorted(ATTACKS))
def test_rejects_and_counts_each_attack(kafka_bootstrap: str, control_topic: str,
                                        reason: str) -> None:
    make, key, _why = ATTACKS[reason]
    with publisher(kafka_bootstrap, control_topic) as send:
        send(encode(recommendation(seq=1)), ROUTER)
        with running(kafka_bootstrap, control_topic) as sub:
            assert sub.current() == FIRST and sub.applied is not None
            send(make(), key)
            eventually(lambda: total(sub) >= 1, f"the {reason} message")
            time.sleep(0.5)  # nothing else arrives
            assert dict(sub.rejections) == {reason: 1}
            assert sub.current() == FIRST and sub.applied.seq == 1


def test_more_malformed_and_misaddressed_messages(kafka_bootstrap: str,
                                                  control_topic: str) -> None:
    valid = encode(recommendation(seq=2, thresholds=SECOND))
    doc = orjson.loads(valid)
    with publisher(kafka_bootstrap, control_topic) as send:
        send(encode(recommendation(seq=1)))
        with running(kafka_bootstrap, control_topic) as sub:
            send(b"\xff\xfe not utf-8")
            send(b"[]")
            send(orjson.dumps({**doc, "extra": "field"}))  # unknown field: schema rejects
            send(orjson.dumps({**doc, "router_id": "billing"}))  # our key, another router
            send(valid, "billing")  # a valid message for us, under another router's key
            eventually(lambda: total(sub) >= 5, "five rejections")
            assert dict(sub.rejections) == {"malformed": 3, "other_router": 2}
            assert sub.current() == FIRST
            send(valid)
            eventually(lambda: sub.current() == SECOND, "the valid seq 2")


def test_a_restarted_subscriber_recovers_the_latest_valid_thresholds(
        kafka_bootstrap: str, control_topic: str) -> None:
    with publisher(kafka_bootstrap, control_topic) as send:
        send(encode(recommendation(seq=1, thresholds=FIRST)))
        send(encode(recommendation(seq=2, thresholds=SECOND, router_id="billing")), "billing")
        send(encode(recommendation(seq=2, thresholds=SECOND)))
        with running(kafka_bootstrap, control_topic) as first:
            assert first.current() == SECOND
            send(encode(recommendation(seq=3, thresholds=THIRD)))
            eventually(lambda: first.current() == THIRD, "seq 3")
        # while the router is down: a replay, an expired and a forged message arrive
        send(encode(recommendation(seq=1, thresholds=FIRST)))
        send(encode(recommendation(seq=4, thresholds=FIRST,
                                   issued=datetime.now(UTC) - timedelta(days=30))))
        send(_forged())
    with running(kafka_bootstrap, control_topic) as restarted:
        # caught up before start() returned: no waiting, no new message needed
        assert restarted.current() == THIRD
        assert restarted.applied is not None and restarted.applied.seq == 3
        assert dict(restarted.rejections) == {"other_router": 1, "replay": 1, "expired": 1,
                                              "bad_signature": 1}


def test_advisory_is_ignored_unless_accepted(kafka_bootstrap: str,
                                             control_topic: str) -> None:
    with publisher(kafka_bootstrap, control_topic) as send:
        send(encode(recommendation(seq=1, mode="advisory")))
    with running(kafka_bootstrap, control_topic) as strict:
        assert strict.current() == FALLBACK and strict.applied is None
        assert dict(strict.rejections) == {"advisory": 1}
    with running(kafka_bootstrap, control_topic, accept_advisory=True) as lenient:
        assert lenient.current() == FIRST and not lenient.rejections


def test_falls_back_when_the_recommendation_expires(kafka_bootstrap: str,
                                                    control_topic: str) -> None:
    now = [time.time()]
    with publisher(kafka_bootstrap, control_topic) as send:
        send(encode(recommendation(seq=1, ttl=timedelta(minutes=10))))
    with running(kafka_bootstrap, control_topic, clock=lambda: now[0],
                 contact_timeout_s=1e9) as sub:
        assert sub.current() == FIRST
        now[0] += 9 * 60
        assert sub.current() == FIRST
        now[0] += 2 * 60
        assert sub.current() == FALLBACK and sub.in_contact


def test_falls_back_on_lost_contact_and_recovers(tmp_path: Path) -> None:
    """A private broker, killed under the subscriber: an empty poll is not contact."""
    broker = LocalKafka.create(Path(tempfile.mkdtemp(prefix="tw-ctl-", dir=tmp_path)))
    try:
        broker.start()
    except RuntimeError as exc:
        pytest.skip(f"cannot start a private broker: {exc}")
    try:
        topic = unique_topic("test.control")
        create_topics(broker.bootstrap, [topic], compacted=[topic])
        with publisher(broker.bootstrap, topic) as send:
            send(encode(recommendation(seq=1)))
        with running(broker.bootstrap, topic, contact_timeout_s=3.0) as sub:
            assert sub.current() == FIRST and sub.in_contact
            broker.stop(keep_data=True)
            eventually(lambda: sub.current() == FALLBACK, "the fallback", timeout=20)
            assert not sub.in_contact
            broker.start()
            eventually(lambda: sub.current() == FIRST, "contact again", timeout=60)
            assert not sub.rejections  # resumed where it was: nothing replayed
    finally:
        broker.stop()


def test_a_rollback_survives_neither_compaction_nor_a_restart(kafka_bootstrap: str,
                                                              tmp_path: Path) -> None:
    """Anyone who may write the control topic re-publishes an older signed message after
    a newer one. Compaction then keeps only the older (it is the key's latest record),
    so a subscriber restarted without memory applies it; with its state file it rejects
    it as a replay and keeps the newer thresholds it had applied."""
    topic = unique_topic("test.control")
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap, client_id="tierwatch-tests")
    try:  # roll segments at once and compact eagerly, so the cleaner acts within seconds
        admin.create_topics([NewTopic(topic, 1, 1, topic_configs={
            "cleanup.policy": "compact", "segment.ms": "100",
            "min.cleanable.dirty.ratio": "0.001", "min.compaction.lag.ms": "0"})])
    finally:
        admin.close()
    state = tmp_path / "support.state"
    with publisher(kafka_bootstrap, topic) as send:
        send(encode(recommendation(seq=1, thresholds=FIRST)))
        send(encode(recommendation(seq=2, thresholds=SECOND)))
        with running(kafka_bootstrap, topic, state_file=state) as sub:
            assert sub.current() == SECOND and sub.applied is not None
        stored = orjson.loads(state.read_bytes())
        assert (stored["router_id"], stored["seq"]) == (ROUTER, 2)
        time.sleep(0.2)
        send(encode(recommendation(seq=1, thresholds=FIRST)))  # the rollback
        time.sleep(0.2)
        send(b"{}", "billing")  # rolls the segment, so the rollback's becomes cleanable

        def compacted() -> bool:
            ours = [r for r in _records(kafka_bootstrap, topic) if r.key == ROUTER.encode()]
            return len(ours) == 1 or None  # type: ignore[return-value]

        eventually(compacted, "compaction to drop seq 1 and seq 2", timeout=60, every=0.5)
    only = [r for r in _records(kafka_bootstrap, topic) if r.key == ROUTER.encode()]
    assert orjson.loads(only[0].value)["seq"] == 1  # seq 2 is gone from the topic
    with running(kafka_bootstrap, topic) as forgetful:  # the attack, without a state file
        assert forgetful.current() == FIRST and forgetful.applied.seq == 1
    with running(kafka_bootstrap, topic, state_file=state) as restarted:
        assert restarted.applied is not None and restarted.applied.seq == 2
        assert restarted.current() == SECOND
        assert dict(restarted.rejections) == {"replay": 1, "other_router": 1}
    assert orjson.loads(state.read_bytes())["seq"] == 2


def _records(bootstrap: str, topic: str) -> list[Any]:
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None,
                             auto_offset_reset="earliest", enable_auto_commit=False,
                             consumer_timeout_ms=1500)
    try:
        return list(consumer)
    finally:
        consumer.close()


def test_the_subscriber_and_the_emitter_take_ready_clients(kafka_bootstrap: str,
                                                           control_topic: str) -> None:
    """A router that manages its own Kafka clients hands them over; they stay open."""
    consumer = KafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=None,
                             enable_auto_commit=False)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    routing = unique_topic("test.routing")
    create_topics(kafka_bootstrap, [routing])
    try:
        with publisher(kafka_bootstrap, control_topic) as send:
            send(encode(recommendation(seq=1)))
        sub = ThresholdSubscriber(None, ROUTER, RING, BOUNDS, FALLBACK, topic=control_topic,
                                  consumer=consumer)
        with sub:
            assert sub.current() == FIRST
        emitter = RoutingEventEmitter(None, ROUTER, topic=routing, producer=producer)
        emitter.emit(request_id="q1", score=0.9, decision=decide(0.9, FIRST, 0.5),
                     thresholds=FIRST)
        emitter.flush()
        assert emitter.failed == 0
        # still usable: the subscriber and the emitter did not close them
        assert consumer.partitions_for_topic(control_topic) == {0}
        producer.send(routing, b"[]").get(timeout=30)
        values = [r.value for r in _records(kafka_bootstrap, routing)]
        assert len(values) == 2 and orjson.loads(values[0])[0]["request_id"] == "q1"
    finally:
        consumer.close()
        producer.close()
