"""The worker on a real broker computes the same per-tier quality as the pure core.

Three simulated days of the pareto-trap router go through Kafka, messy as feedback is
in production: feedback produced before its decision, duplicated (within a batch and
across messages) and out of event-time order, in batch envelopes and single events.
The real worker subprocess consumes them; an in-process :class:`Processor` and
:class:`Monitor` handle the very same messages in the order they were produced. Once
the worker has consumed everything, one more routing event moves the watermark past
an evaluation boundary, so both evaluate over all events. Their ``/status`` must then
agree: per-tier routed counts, feedback counts per kind, duplicates, the join, and the
snapshot's per-tier satisfaction and support-contact numbers.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka import KafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from pipeline.bootstrap import bootstrap
from pipeline.settings import Settings
from pipeline.sim import Simulator
from pipeline.stream.processor import InMessage
from pipeline.topics import create_topics
from tests.integration.worker_proc import http_get, running_worker

pytestmark = pytest.mark.kafka

RATE = 0.1  # routing events per second: 8,640 a day
DAYS = 3.0
SEED = 11
HOUR = 3600.0
Message = tuple[str, bytes, bytes]  # topic short name, key, value


def _wait(what: str, check: Callable[[], Any], timeout: float = 90.0) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def _messages(rng: random.Random) -> tuple[Message, list[Message], list[Message], list[Message],
                                           dict[str, Any]]:
    """(baseline, first routing batch, early feedback, the rest) and what was sent."""
    sim = Simulator("pareto-trap", rate=RATE, seed=SEED)
    baseline = sim.baseline()
    routing: list[dict[str, Any]] = []
    feedback: list[dict[str, Any]] = []
    for chunk in sim.run(DAYS):
        routing += chunk.routing
        feedback += chunk.feedback
    router = baseline.router_id

    def batch(topic: str, events: list[dict[str, Any]]) -> Message:
        return topic, events[0]["request_id"].encode(), orjson.dumps(events)

    def single(topic: str, event: dict[str, Any]) -> Message:
        return topic, event["request_id"].encode(), orjson.dumps(event)

    first = [batch("routing", routing[:100])]
    # feedback about the last 1,500 requests is produced before their decisions
    late_ids = {e["request_id"] for e in routing[-1500:]}
    early_fb = [f for f in feedback if f["request_id"] in late_ids]
    rest_fb = [f for f in feedback if f["request_id"] not in late_ids]
    early = [batch("feedback", early_fb[i:i + 40]) for i in range(0, len(early_fb), 40)]
    # the rest of the feedback: out of event-time order (up to 6 h) and 10 % duplicated
    dupes = rng.sample(rest_fb, len(rest_fb) // 10)
    messy = sorted(rest_fb + dupes, key=lambda f: _epoch(f["ts"]) + rng.uniform(0, 6 * HOUR))
    rest: list[Message] = []
    r, f = 100, 0
    while r < len(routing) or f < len(messy):
        if r < len(routing) - 1500 and (f >= len(messy) or rng.random() < 0.5):
            n = rng.choice((1, 100, 100, 250))
            rest.append(single("routing", routing[r]) if n == 1
                        else batch("routing", routing[r:r + n]))
            r += n
        elif f < len(messy):
            n = rng.choice((1, 25, 60))
            rest.append(single("feedback", messy[f]) if n == 1
                        else batch("feedback", messy[f:f + n]))
            f += n
        else:
            rest.append(batch("routing", routing[r:r + 100]))
            r += 100
    # a redelivered routing batch: its decisions must count once
    rest.append(batch("routing", routing[200:300]))
    sent = {"router": router, "baseline": baseline, "routing": len(routing),
            "feedback": len(feedback), "dupes": len(dupes),
            # reviews know their tier and score: they need no decision to wait for
            "early": len(early_fb),
            "pending": sum(1 for f in early_fb if not ("tier" in f and "score" in f)),
            "max_ts": max(_epoch(e["ts"]) for e in routing + feedback)}
    return ("baselines", router.encode(), baseline.model_dump_json().encode()), first, early, \
        rest, sent


def _epoch(ts: str) -> float:
    return datetime.fromisoformat(ts).timestamp()


def _tick(router: str, max_ts: float) -> Message:
    """One routing event past the next evaluation boundary after every other event."""
    boundary = (max_ts // HOUR + 2) * HOUR
    event = {"event_id": "tick.route", "request_id": "tick", "router_id": router,
             "ts": datetime.fromtimestamp(boundary + 1, UTC).isoformat(), "tier": "capable",
             "score": 0.05,
             "route_reason": "confident_capable",
             "thresholds": {"cheap_above": 0.4, "capable_below": 0.33, "exploration_rate": 0.1}}
    return "routing", b"tick", orjson.dumps(event)


def _scrape(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def _quality(snapshot: dict[str, Any]) -> dict[str, Any]:
    return {"ts": snapshot["ts"], "aggregate": snapshot["aggregate"],
            "tiers": {t: {k: v[k] for k in ("satisfaction", "support_rate", "share")}
                      for t, v in snapshot["tiers"].items()}}


def test_worker_and_pure_core_agree(kafka_bootstrap: str, tmp_path: Path) -> None:
    started = time.monotonic()
    rng = random.Random(SEED)
    prefix = f"t{uuid.uuid4().hex[:8]}.tierwatch"
    # one partition per topic: the worker reads each topic in the order it was produced
    settings = Settings(bootstrap_servers=kafka_bootstrap, topic_prefix=prefix, partitions=1)
    create_topics(settings)
    baseline_msg, first, early, rest, sent = _messages(rng)
    router = sent["router"]
    tick = _tick(router, sent["max_ts"])

    # the pure core, fed the same messages in the same order, in event time
    core = bootstrap(settings, clock=None)
    for i, (topic, key, value) in enumerate([baseline_msg, *first, *early, *rest, tick]):
        core.handle(topic, InMessage(settings.topic(topic), 0, i, key, value))
        core.flush()
    expected = core.monitor.status()

    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", linger_ms=5,
                             max_in_flight_requests_per_connection=1,
                             max_request_size=4_000_000)

    def produce(messages: list[Message]) -> None:
        for topic, key, value in messages:
            producer.send(settings.topic(topic), key=key, value=value)
        producer.flush()

    env = {"TIERWATCH_BOOTSTRAP_SERVERS": kafka_bootstrap, "TIERWATCH_TOPIC_PREFIX": prefix,
           "TIERWATCH_APP_ID": f"{prefix}-worker", "TIERWATCH_MAX_FUTURE_S": "1e10"}
    with running_worker(env, tmp_path / "worker.log") as (_, base):
        def status() -> dict[str, Any]:
            return dict(json.loads(http_get(base + "/status")))

        # 1. the baseline first, and seen before any event
        produce([baseline_msg])
        version = sent["baseline"].version
        _wait("the baseline", lambda: _scrape(http_get(base + "/metrics").decode()).get(
            ("tierwatch_baseline_info", (("router_id", router), ("version", version)))) == 1)
        # 2. the first decisions: they start the router's reference period
        produce(first)
        _wait("the first batch",
              lambda: sum(status()["routers"].get(router, {}).get("routed", {}).values()) == 100)
        assert status()["routers"][router]["baseline"] == version
        # 3. feedback before its decisions: it waits in the join
        produce(early)
        _wait("early feedback pending", lambda: status()["join"]["pending"] == sent["pending"])
        # 4. everything else, then the tick once all of it is in
        produce(rest)
        want_routed = expected["routers"][router]["routed"]
        want_routed = {**want_routed, "capable": want_routed["capable"] - 1}  # minus the tick
        _wait("all events", lambda: (s := status())["routers"][router]["routed"] == want_routed
              and s["join"]["pending"] == 0
              and s["routers"][router]["feedback"] == expected["routers"][router]["feedback"],
              timeout=120)
        produce([tick])
        got = _wait("the final evaluation", lambda: (s := status())["routers"][router]
                    ["snapshot"].get("ts") == expected["routers"][router]["snapshot"]["ts"]
                    and s)
    producer.close()

    mine, theirs = got["routers"][router], expected["routers"][router]
    print(f"\n{sent['routing']:,} decisions, {sent['feedback']:,} feedback events "
          f"({sent['early']} before their decisions, {sent['dupes']} duplicated), "
          f"{len(rest) + len(first) + len(early) + 2} messages, "
          f"{time.monotonic() - started:.0f} s")
    print("worker routed", mine["routed"], "feedback", mine["feedback"])
    for tier, v in mine["snapshot"]["tiers"].items():
        print(f"  {tier}: satisfaction {v['satisfaction']}, support {v['support_rate']}")
    assert mine["routed"] == theirs["routed"]
    assert sum(mine["routed"].values()) == sent["routing"] + 1
    assert mine["feedback"] == theirs["feedback"]
    assert sum(mine["feedback"].values()) == sent["feedback"]
    assert got["duplicates"] == expected["duplicates"] == sent["dupes"] + 100
    assert got["join"] == expected["join"]
    assert got["watermark"] == expected["watermark"]
    assert mine["baseline"] == theirs["baseline"]
    assert _quality(mine["snapshot"]) == _quality(theirs["snapshot"])
    for tier in ("cheap", "capable"):
        assert mine["snapshot"]["tiers"][tier]["satisfaction"]["n"] > 100
        assert mine["snapshot"]["tiers"][tier]["support_rate"]["n"] > 1000
