"""Simulated traffic through a real Kafka: ``tierwatch simulate --kafka`` and ``demo --kafka``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import orjson
from kafka import KafkaProducer

from pipeline import kafka_clients
from pipeline.schemas import Alert
from pipeline.settings import Settings
from pipeline.sim import Simulator

DAY = 86400.0
BATCH = 100


def _produce(producer: KafkaProducer, topic: str, events: list[dict[str, Any]]) -> None:
    for i in range(0, len(events), BATCH):
        batch = events[i:i + BATCH]
        producer.send(topic, key=batch[0]["request_id"].encode(), value=orjson.dumps(batch))


def stream_simulation(settings: Settings, scenario: str, *, days: float, rate: float,
                      seed: int, speedup: float = 3600.0, start: float | None = None) -> int:
    """Produce a simulation to Kafka, ``speedup`` simulated seconds per wall second.

    The simulated clock ends at the wall clock (the run starts ``days`` ago), so the
    worker sees live-looking event times and never events from the future.
    """
    now = time.time()
    begin = start if start is not None else (now - days * DAY) // 3600 * 3600
    sim = Simulator(scenario, rate=rate, seed=seed, start=begin)
    producer = kafka_clients.producer(settings, acks="all", linger_ms=20,
                                      max_request_size=4 * 1024 * 1024)
    baseline = sim.baseline()
    # the first send waits for delivery: a topic this principal may not write fails here
    kafka_clients.delivered([producer.send(settings.topic("baselines"),
                                           key=baseline.router_id.encode(),
                                           value=baseline.model_dump_json().encode())],
                            settings.topic("baselines"))
    wall0 = time.monotonic()
    sent = 0
    try:
        for chunk in sim.run(days):
            _produce(producer, settings.topic("routing"), chunk.routing)
            _produce(producer, settings.topic("feedback"), chunk.feedback)
            for b in chunk.baselines:
                producer.send(settings.topic("baselines"), key=b.router_id.encode(),
                              value=b.model_dump_json().encode())
            sent += len(chunk.routing) + len(chunk.feedback)
            if speedup > 0:
                due = (chunk.end - begin) / speedup - (time.monotonic() - wall0)
                if due > 0:
                    producer.flush()
                    time.sleep(due)
    except KeyboardInterrupt:
        pass
    finally:
        producer.flush()
        producer.close()
    print(f"produced {sent} events of {scenario} to {settings.topic_prefix}.*", file=sys.stderr)
    return 0


def read_topic(connection: Any, topic: str, idle_s: float = 3.0) -> list[bytes]:
    """Every message value on ``topic`` from the beginning, until ``idle_s`` of silence.

    ``connection`` is the settings (or a bootstrap string, for a PLAINTEXT broker)."""
    consumer = kafka_clients.consumer(connection, topic, auto_offset_reset="earliest",
                                      enable_auto_commit=False, group_id=None,
                                      consumer_timeout_ms=int(idle_s * 1000))
    try:
        return [m.value for m in consumer]
    finally:
        consumer.close()


def wait_for_status(url: str, done: Any, timeout: float) -> dict[str, Any]:
    """Poll ``/status`` until ``done(status)`` or the timeout; return the last status."""
    deadline = time.monotonic() + timeout
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/status", timeout=5) as resp:
                status = json.loads(resp.read())
            if done(status):
                break
        except OSError:
            pass
        time.sleep(1.0)
    return status


def kafka_demo(settings: Settings, out_dir: Path, *, days: float, rate: float,
               seed: int) -> int:
    """The demo through the broker at ``settings.bootstrap_servers`` and a real worker."""
    from pipeline.topics import create_topics

    prefix = f"{settings.topic_prefix}.demo{int(time.time())}"
    settings = settings.model_copy(update={"topic_prefix": prefix, "app_id": prefix})
    create_topics(settings)
    out_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **kafka_clients.connection_env(settings),
           "TIERWATCH_TOPIC_PREFIX": prefix, "TIERWATCH_APP_ID": prefix,
           "TIERWATCH_WEB_PORT": str(settings.web_port)}
    log = (out_dir / "worker.log").open("wb")
    worker = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "worker"], env=env,
                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        stream_simulation(settings, "pareto-trap", days=days, rate=rate, seed=seed, speedup=0)
        sim_end = (time.time() // 3600) * 3600
        url = f"http://127.0.0.1:{settings.web_port}"
        wait_for_status(url, lambda s: (s.get("watermark") or 0) >= sim_end - 2 * 3600,
                        timeout=1800)
        alerts = [Alert.model_validate_json(v) for v in
                  read_topic(settings, settings.topic("alerts"))]
        for a in alerts:
            if a.state == "firing":
                print(f"{a.ts:%Y-%m-%d %H:%M}  {a.kind:<24} {a.tier or '':<8} {a.summary}")
        (out_dir / "alerts.jsonl").write_bytes(
            b"".join(a.model_dump_json().encode() + b"\n" for a in alerts))
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(30)
        log.close()
    return 0
