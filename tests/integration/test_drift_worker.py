"""Drift through the real worker: a live baseline swap, a drift alert, PSI/KS gauges."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from kafka import KafkaProducer

from pipeline.control import decide
from pipeline.core.baseline import fit_baseline
from pipeline.live import read_topic
from pipeline.schemas import Thresholds
from pipeline.settings import Settings
from pipeline.topics import create_topics
from tests.integration.worker_proc import http_get, running_worker

pytestmark = pytest.mark.kafka
START = datetime(2026, 3, 1, tzinfo=UTC).timestamp()
TH = {"cheap_above": 0.6, "capable_below": 0.5, "exploration_rate": 0.1}


def events(rng: np.random.Generator, t0: float, hours: int, per_hour: int,
           a: float, b: float, tag: str) -> list[dict[str, Any]]:
    n = hours * per_hour
    ts = np.sort(t0 + rng.uniform(0, hours * 3600, n))
    scores = rng.beta(a, b, n)
    out = []
    th = Thresholds(**TH)
    for i, (t, s, u) in enumerate(zip(ts, scores, rng.random(n), strict=True)):
        d = decide(float(s), th, u=float(u))  # the router follows its declared policy
        out.append({"event_id": f"{tag}-{i}", "request_id": f"{tag}-{i}", "router_id": "r1",
                    "ts": datetime.fromtimestamp(t, UTC).isoformat(), "score": float(s),
                    "tier": d.tier, "thresholds": TH, "route_reason": d.route_reason,
                    "propensity": d.propensity})
    return out


def produce(producer: KafkaProducer, topic: str, evs: list[dict[str, Any]]) -> None:
    for i in range(0, len(evs), 200):
        batch = evs[i:i + 200]
        producer.send(topic, key=batch[0]["request_id"].encode(), value=orjson.dumps(batch))
    producer.flush()


def wait(base: str, cond: Any, timeout: float = 90) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        status = json.loads(http_get(base + "/status"))
        if cond(status):
            return status
        time.sleep(0.5)
    raise AssertionError(f"condition not met; last status {json.dumps(status)[:2000]}")


def test_live_baseline_swap_and_drift_alert(kafka_bootstrap: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    prefix = f"t{uuid.uuid4().hex[:8]}.tierwatch"
    settings = Settings(bootstrap_servers=kafka_bootstrap, topic_prefix=prefix, partitions=1)
    create_topics(settings)
    created = datetime(2026, 2, 1, tzinfo=UTC)
    v1 = fit_baseline("r1", "r1:v1", created, rng.beta(2, 3, 100_000), bins=100)
    v2 = fit_baseline("r1", "r1:v2", created, rng.beta(2, 3, 100_000), bins=100)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    env = {"TIERWATCH_BOOTSTRAP_SERVERS": kafka_bootstrap, "TIERWATCH_TOPIC_PREFIX": prefix,
           "TIERWATCH_APP_ID": f"{prefix}-w", "TIERWATCH_MAX_FUTURE_S": "1e10"}
    with running_worker(env, tmp_path / "worker.log") as (_, base):
        producer.send(settings.topic("baselines"), key=b"r1", value=v1.model_dump_json().encode())
        producer.flush()
        wait(base, lambda s: s["routers"].get("r1", {}).get("baseline") == "r1:v1"
             or s.get("baselines", {}).get("r1") == "r1:v1")
        # two quiet days, then a day whose scores moved toward "simple"
        produce(producer, settings.topic("routing"),
                events(rng, START, 48, 400, 2, 3, "quiet"))
        produce(producer, settings.topic("routing"),
                events(rng, START + 48 * 3600, 24, 400, 3, 2, "drift"))
        status = wait(base, lambda s: (s.get("watermark") or 0) > START + 70 * 3600)
        # a retrained classifier's baseline is picked up live, without a restart
        producer.send(settings.topic("baselines"), key=b"r1", value=v2.model_dump_json().encode())
        producer.flush()
        status = wait(base, lambda s: s["routers"]["r1"].get("baseline") == "r1:v2")
        metrics = http_get(base + "/metrics").decode()
    alerts = [orjson.loads(v) for v in read_topic(kafka_bootstrap, settings.topic("alerts"))]
    fired = [(a["kind"], a["state"], a["ts"]) for a in alerts]
    drift = [a for a in alerts if a["kind"] == "confidence_drift" and a["state"] == "firing"]
    assert drift, fired
    onset = START + 48 * 3600
    first = datetime.fromisoformat(drift[0]["ts"]).timestamp()
    assert onset < first <= onset + 6 * 3600, "drift must fire within hours of the shift"
    assert not [a for a in alerts if a["kind"].endswith("drift")
                and datetime.fromisoformat(a["ts"]).timestamp() < onset], fired
    assert 'tierwatch_baseline_info{router_id="r1",version="r1:v2"} 1.0' in metrics
    assert 'version="r1:v1"' not in metrics
    assert 'tierwatch_drift_ks{router_id="r1",signal="score",tier="all",window="1d"}' in metrics
    assert status["routers"]["r1"]["routed"]["cheap"] + status["routers"]["r1"]["routed"][
        "capable"] == 72 * 400
