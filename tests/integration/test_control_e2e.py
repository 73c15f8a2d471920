"""End to end on a real broker: routing events in → worker → signed control message →
the router's subscriber routes with the new thresholds.

The router (``RoutingEventEmitter`` + ``decide``) sends eight days of traffic, ending now,
with thresholds cheap_above 0.5 / capable_below 0.4. Its cheap tier is confidently
harmful: one cheap request in ten calls support, against one in two hundred on capable.
After the warm-up (``reference_days / 2`` = 7 days of event time) the worker's policy
must move cheap_above up, sign the recommendation in ``enforce`` mode, and publish it
on the compacted control topic, where the subscriber verifies and applies it.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka import KafkaProducer

from pipeline.control import Bounds, RoutingEventEmitter, ThresholdSubscriber, decide
from pipeline.core.signing import Keyring, new_key, parse_key
from pipeline.schemas import Thresholds
from pipeline.settings import Settings
from pipeline.topics import create_topics
from tests.integration.worker_proc import eventually, http_get, running_worker

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(300, func_only=True)]

DAY = 86400.0
ROUTER = "e2e-router"
START_THRESHOLDS = Thresholds(cheap_above=0.5, capable_below=0.4, exploration_rate=0.1)
FALLBACK = Thresholds(cheap_above=0.9, capable_below=0.8, exploration_rate=0.0)
PER_DAY = 2000
DAYS = 8
CONTACT_RATE = {"cheap": 0.10, "capable": 0.005}



def test_events_in_signed_thresholds_out_applied_by_the_router(kafka_bootstrap: str,
                                                               tmp_path: Path) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}.tierwatch"
    settings = Settings(bootstrap_servers=kafka_bootstrap, topic_prefix=prefix, partitions=2)
    create_topics(settings)  # control is compacted, keyed by router_id
    key, key_id = new_key(), "e2e-key"
    env = {"TIERWATCH_BOOTSTRAP_SERVERS": kafka_bootstrap, "TIERWATCH_TOPIC_PREFIX": prefix,
           "TIERWATCH_APP_ID": f"{prefix}-worker", "TIERWATCH_MAX_FUTURE_S": "1e10",
           "TIERWATCH_CONTROL_MODE": "enforce", "TIERWATCH_CONTROL_KEY": key,
           "TIERWATCH_CONTROL_KEY_ID": key_id,
           "FAUST_DATADIR": str(tmp_path / "worker-data")}  # not in the working directory
    rng = random.Random(11)
    # eight days of event time ending an hour ago, so the recommendation (valid 7 days
    # from its event time) is still valid by the wall clock
    start = (time.time() // 3600 - DAYS * 24 - 1) * 3600
    emitter = RoutingEventEmitter(settings, ROUTER)  # the settings name the topic
    feedback = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", linger_ms=5)
    sent = contacts = 0
    try:
        with running_worker(env, tmp_path / "worker.log") as (_, base):
            # day by day, waiting for the worker's watermark: evaluations run as event
            # time passes, so a day's support contacts must be in before the next day is
            for day in range(DAYS):
                batch: list[dict[str, Any]] = []
                for i in range(PER_DAY):
                    ts = start + day * DAY + (i + rng.random()) * DAY / PER_DAY
                    score = rng.random()
                    decision = decide(score, START_THRESHOLDS, rng.random())
                    rid = f"{ROUTER}-{day}-{i}"
                    emitter.emit(request_id=rid, score=score, decision=decision,
                                 thresholds=START_THRESHOLDS, ts=datetime.fromtimestamp(ts, UTC))
                    sent += 1
                    if rng.random() < CONTACT_RATE[decision.tier]:
                        batch.append({"event_id": f"{rid}.support", "request_id": rid,
                                      "router_id": ROUTER, "kind": "support_contact",
                                      "value": 1, "source": "support-desk",
                                      "ts": datetime.fromtimestamp(ts + 1800, UTC).isoformat()})
                emitter.flush()
                for k in range(0, len(batch), 100):
                    chunk = batch[k:k + 100]
                    feedback.send(settings.topic("feedback"),
                                  key=chunk[0]["request_id"].encode(), value=orjson.dumps(chunk))
                feedback.flush()
                contacts += len(batch)
                horizon = start + (day + 1) * DAY - DAY / PER_DAY * 5

                def caught_up(horizon: float = horizon) -> bool:
                    wm = json.loads(http_get(base + "/status"))["watermark"]
                    return wm is not None and wm >= horizon

                eventually(caught_up, f"the worker's watermark past day {day}", timeout=60)
            # the last day's contacts were produced after its decisions: wait for them
            def all_contacts() -> dict[str, Any] | None:
                st: dict[str, Any] = json.loads(http_get(base + "/status"))
                counted = st["routers"][ROUTER]["feedback"]
                return st if counted == {"support_contact": contacts} else None

            status = eventually(all_contacts, "every support contact counted", timeout=60)
            rec = eventually(
                lambda: json.loads(http_get(base + "/status"))["routers"][ROUTER][
                    "last_recommendation"], "a recommendation in /status", timeout=30)

        # the router side: its own process, knowing only the key and its bounds
        keyring = Keyring({key_id: parse_key(key)})
        subscriber = ThresholdSubscriber(
            settings, ROUTER, keyring,
            Bounds(cheap_above=(0.3, 1.0), capable_below=(0.0, 1.0),
                   exploration_rate=(0.0, 0.3)),
            FALLBACK, state_file=tmp_path / "router-control.json")
        with subscriber:
            applied = eventually(lambda: subscriber.applied, "the applied recommendation",
                                 timeout=30)
            now = subscriber.current()
    finally:
        emitter.close()
        feedback.close()

    print(f"\npublished seq {applied.seq} ({applied.mode}): {applied.previous.key} → "
          f"{applied.thresholds.key}; {applied.reasons[0]}")
    routed = status["routers"][ROUTER]["routed"]
    assert sum(routed.values()) == sent
    assert status["routers"][ROUTER]["feedback"] == {"support_contact": contacts}
    assert rec["mode"] == "enforce" and rec["key_id"] == key_id
    # the cheap tier is confidently harmful above 0.5: the policy moved toward capable,
    # by one bounded step, and the router routes with exactly what was published
    assert applied.mode == "enforce" and applied.seq == rec["seq"]
    assert applied.previous == START_THRESHOLDS
    assert applied.thresholds.cheap_above > START_THRESHOLDS.cheap_above
    assert applied.thresholds.cheap_above - START_THRESHOLDS.cheap_above <= 0.05 + 1e-9
    assert now == applied.thresholds != FALLBACK
    assert applied.issued_at.timestamp() >= start + 7 * DAY
    assert any("beyond its allowance" in r for r in applied.reasons)
    assert not subscriber.rejections
    # what the router applied survives its restart (the state file)
    restored = ThresholdSubscriber(settings, ROUTER, keyring, Bounds(), FALLBACK,
                                   state_file=tmp_path / "router-control.json")
    assert restored.applied == applied
