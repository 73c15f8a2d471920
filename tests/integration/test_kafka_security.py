"""Kafka security end to end, on a broker of our own (no Docker): TLS from a CA made by
the fixture with openssl, SCRAM-SHA-256/512 and PLAIN users on a SASL_SSL listener,
mutual TLS on an SSL listener, and KRaft's StandardAuthorizer holding tierwatch's
least-privilege ACLs (:mod:`pipeline.acls`).

Every client goes through it: ``topics create`` (operator) and ``baseline publish``
(publisher) as CLI commands, the live simulator, the worker as the ``worker`` principal
(by OAUTHBEARER, through the token-provider hook), and the router's emitter and
subscriber as ``router`` (by SCRAM, and by its client certificate). A router cannot
publish to the control topic; a wrong password is a one-line error in seconds.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import secrets
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from kafka_broker import SecureKafka, secure_broker

from pipeline import kafka_clients
from pipeline.acls import least_privilege, to_kafka_python
from pipeline.baselines import publish
from pipeline.control import Bounds, RoutingEventEmitter, ThresholdSubscriber, decide
from pipeline.core.baseline import fit_baseline
from pipeline.core.signing import Keyring, new_key
from pipeline.kafka_clients import Connection, KafkaConnectError
from pipeline.live import read_topic, stream_simulation
from pipeline.schemas import ExpectedImpact, ThresholdRecommendation, Thresholds
from pipeline.settings import Settings
from tests.integration.worker_proc import eventually, http_get, running_worker

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(240, func_only=True)]

USERS = ("admin", "operator", "worker", "router", "publisher", "simulator")
PASSWORDS = {name: secrets.token_hex(12) for name in USERS}
ROUTER = "secure-router"
THRESHOLDS = Thresholds(cheap_above=0.7, capable_below=0.5, exploration_rate=0.1)
NEW = Thresholds(cheap_above=0.75, capable_below=0.5, exploration_rate=0.1)
FALLBACK = Thresholds(cheap_above=0.95, capable_below=0.9, exploration_rate=0.0)
KEY = new_key()
RING = Keyring({"k1": bytes.fromhex(KEY)})


@pytest.fixture(scope="module")
def broker() -> Iterator[SecureKafka]:
    with contextlib.ExitStack() as stack:
        try:
            b = stack.enter_context(secure_broker(PASSWORDS))
        except RuntimeError as exc:
            if os.environ.get("CI") == "true":
                pytest.fail(str(exc), pytrace=False)
            pytest.skip(str(exc))
        yield b


@pytest.fixture(scope="module")
def prefix() -> str:
    return f"sec{uuid.uuid4().hex[:8]}.tierwatch"


def as_user(broker: SecureKafka, prefix: str, user: str, password: str | None = None,
            mechanism: str = "SCRAM-SHA-256") -> Settings:
    """The settings a principal runs with: SASL_SSL to the broker, trusting its CA."""
    assert broker.tls is not None
    return Settings(bootstrap_servers=broker.sasl_bootstrap, security_protocol="SASL_SSL",
                    ssl_cafile=broker.tls.ca, sasl_mechanism=mechanism, sasl_username=user,
                    sasl_password=password or PASSWORDS[user], topic_prefix=prefix,
                    app_id=f"{prefix}-worker")


def mtls(broker: SecureKafka, prefix: str) -> Settings:
    """The router by its client certificate (CN=router, mapped to User:router)."""
    assert broker.tls is not None
    return Settings(bootstrap_servers=broker.ssl_bootstrap, security_protocol="SSL",
                    ssl_cafile=broker.tls.ca, ssl_certfile=broker.tls.client_cert,
                    ssl_keyfile=broker.tls.client_key, topic_prefix=prefix)


def cli(settings: Settings, *args: str, timeout: float = 60,
        **env: str | None) -> subprocess.CompletedProcess[str]:
    """``tierwatch ARGS`` with ``settings`` given through the environment only (``env``
    adds variables, or removes those given None)."""
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith("TIERWATCH_") and k != "KAFKA_BOOTSTRAP_SERVERS"}
    full: dict[str, str | None] = {**clean, **kafka_clients.connection_env(settings),
                                   "TIERWATCH_TOPIC_PREFIX": settings.topic_prefix, **env}
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args],
                          env={k: v for k, v in full.items() if v is not None},
                          capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def install(broker: SecureKafka, prefix: str,
            tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The least-privilege ACLs (applied by the super user), then ``topics create`` as the
    operator, who may only create and describe topics under the prefix (its password
    read from a file)."""
    admin = as_user(broker, prefix, "admin")
    # the simulator plays a router, a feedback source and a baseline publisher
    grants = least_privilege(admin, worker="worker", routers=["router", "simulator"],
                             feedback_producers=["simulator"],
                             baseline_publishers=["publisher", "simulator"],
                             operators=["operator"])
    client = kafka_clients.admin(admin)
    try:
        result = client.create_acls(to_kafka_python(grants))
        assert not result["failed"], result["failed"]
    finally:
        client.close()
    time.sleep(1.0)  # the authorizer applies ACLs from the metadata log
    operator = as_user(broker, prefix, "operator")
    secret = tmp_path_factory.mktemp("secrets") / "operator-password"
    secret.write_text(PASSWORDS["operator"] + "\n")
    created = cli(operator, "topics", "create", TIERWATCH_SASL_PASSWORD=None,
                  TIERWATCH_SASL_PASSWORD_FILE=str(secret))
    return {"created": created, "admin": admin}


def test_topics_create_and_baseline_publish(broker: SecureKafka, prefix: str,
                                            install: dict[str, Any], tmp_path: Path) -> None:
    created = install["created"]
    assert created.returncode == 0, created.stderr
    topics = {line.split("\t")[0] for line in created.stdout.splitlines() if "\t" in line}
    assert topics == {f"{prefix}.{t}" for t in
                      ("routing", "feedback", "baselines", "control", "alerts", "review", "dlq")}
    scores = np.random.default_rng(3).beta(4, 2, 2000)
    baseline = fit_baseline(ROUTER, "v1", datetime.now(UTC), scores, {}, bins=20)
    path = tmp_path / "baseline.jsonl"
    path.write_text(baseline.model_dump_json() + "\n")
    publisher = as_user(broker, prefix, "publisher", mechanism="SCRAM-SHA-512")
    published = cli(publisher, "baseline", "publish", str(path))
    assert published.returncode == 0, published.stderr
    values = read_topic(install["admin"], publisher.topic("baselines"), idle_s=2.0)
    assert [orjson.loads(v)["router_id"] for v in values] == [ROUTER]
    # the router may not publish baselines: a clear error, not a silent loss
    with pytest.raises(KafkaConnectError, match=f"may not write to {prefix}.baselines"):
        publish(as_user(broker, prefix, "router"), path)


def test_the_live_simulator_produces_through_sasl_ssl(broker: SecureKafka, prefix: str,
                                                      install: dict[str, Any]) -> None:
    simulator = as_user(broker, prefix, "simulator", mechanism="SCRAM-SHA-512")
    assert stream_simulation(simulator, "steady", days=0.05, rate=0.05, seed=5,
                             speedup=0) == 0
    admin = install["admin"]
    routing = read_topic(admin, simulator.topic("routing"), idle_s=1.0)
    baselines = read_topic(admin, simulator.topic("baselines"), idle_s=1.0)
    assert routing and sum(len(orjson.loads(v)) for v in routing) > 100
    assert any(orjson.loads(v)["router_id"] != ROUTER for v in baselines)


def recommendation(seq: int, thresholds: Thresholds) -> bytes:
    issued = datetime.now(UTC).replace(microsecond=0)
    unsigned = ThresholdRecommendation.model_validate({
        "router_id": ROUTER, "seq": seq, "issued_at": issued,
        "valid_until": issued + timedelta(days=7), "mode": "enforce",
        "thresholds": thresholds, "previous": THRESHOLDS, "reasons": ["test"],
        "evidence": {}, "expected_impact": ExpectedImpact(
            cost_per_day_usd=1.0, cost_change_per_day_usd=0.0, cheap_share=0.5,
            quality_change=0.0), "key_id": "k1", "signature": "0" * 64})
    doc = unsigned.model_dump(mode="json", exclude_none=True)
    return orjson.dumps({**doc, "signature": RING.sign("k1", doc)})


def emit(emitter: RoutingEventEmitter, n: int, tag: str) -> None:
    for i in range(n):
        score = 0.3 + 0.6 * i / n
        emitter.emit(request_id=f"{tag}-{i}", score=score, thresholds=THRESHOLDS,
                     decision=decide(score, THRESHOLDS, 0.5))
    emitter.flush()
    assert emitter.failed == 0, emitter.last_error


def test_worker_and_router_with_least_privilege(broker: SecureKafka, prefix: str,
                                                install: dict[str, Any],
                                                tmp_path: Path) -> None:
    # the worker authenticates by OAUTHBEARER through the token-provider hook (the MSK
    # IAM route): faust's OAuth credentials, fed by tests/integration/oauth_tokens.py
    assert broker.tls is not None
    worker = Settings(bootstrap_servers=broker.sasl_bootstrap, security_protocol="SASL_SSL",
                      ssl_cafile=broker.tls.ca, sasl_mechanism="OAUTHBEARER",
                      sasl_oauth_token_provider="tests.integration.oauth_tokens:worker",
                      topic_prefix=prefix, app_id=f"{prefix}-worker")
    router = as_user(broker, prefix, "router")
    repo = str(Path(__file__).resolve().parents[2])
    env = {**kafka_clients.connection_env(worker), "TIERWATCH_TOPIC_PREFIX": prefix,
           "PYTHONPATH": os.pathsep.join(filter(None, [repo, os.environ.get("PYTHONPATH")])),
           "TIERWATCH_APP_ID": worker.app_id, "TIERWATCH_MAX_FUTURE_S": "1e9",
           "TIERWATCH_CHECKPOINT_DIR": str(tmp_path / "checkpoints"),
           "FAUST_DATADIR": str(tmp_path / "faust")}
    with running_worker(env, tmp_path / "worker.log") as (_, base):
        # the router by SCRAM and by its certificate: one principal, the same ACLs
        for settings, n, tag in ((router, 40, "scram"), (mtls(broker, prefix), 25, "mtls")):
            emitter = RoutingEventEmitter(settings, ROUTER)
            try:
                emit(emitter, n, tag)
            finally:
                emitter.close()

        def routed() -> int | None:
            status = json.loads(http_get(base + "/status"))
            counts = status["routers"].get(ROUTER, {}).get("routed", {})
            return sum(counts.values()) if sum(counts.values()) == 65 else None

        eventually(routed, "the worker counting all 65 routing events", timeout=60)
        log = (tmp_path / "worker.log").read_text()
        assert "authoriz" not in log.lower(), log[-2000:]  # no ACL the worker lacks
        assert "public development key" in log  # advisory with the dev key: warned

    # only the worker may write control: it can, the router cannot (by either route)
    control = worker.topic("control")
    producer = kafka_clients.producer(worker, acks="all")
    try:
        kafka_clients.delivered([producer.send(control, key=ROUTER.encode(),
                                               value=recommendation(1, NEW))], control)
    finally:
        producer.close()
    for settings in (router, mtls(broker, prefix)):
        forger = kafka_clients.producer(settings, acks="all")
        try:
            with pytest.raises(KafkaConnectError, match="may not write to"):
                kafka_clients.delivered([forger.send(control, key=ROUTER.encode(),
                                                     value=recommendation(9, FALLBACK))],
                                        control)
        finally:
            forger.close()

    # the router's subscriber reads control as User:router and applies the worker's
    sub = ThresholdSubscriber(router, ROUTER, RING, Bounds(), FALLBACK,
                              state_file=tmp_path / "router.state")
    with sub:
        assert sub.last_error is None
        eventually(lambda: sub.current() == NEW, "the recommendation applied", timeout=30)
    assert dict(sub.rejections) == {}


def test_wrong_password_is_a_clear_error_in_seconds(broker: SecureKafka, prefix: str,
                                                    install: dict[str, Any],
                                                    tmp_path: Path) -> None:
    """The CLI, the worker and the subscriber at once, each with a wrong password."""
    wrong = as_user(broker, prefix, "router", password="not-the-password")
    fast = {"TIERWATCH_CONNECT_TIMEOUT_S": "5"}
    results: dict[str, Any] = {}

    def run(name: str, *args: str) -> None:
        started = time.monotonic()
        results[name] = (cli(wrong, *args, timeout=90, FAUST_DATADIR=str(tmp_path / name),
                             **fast), time.monotonic() - started)

    threads = [threading.Thread(target=run, args=("topics", "topics", "create")),
               threading.Thread(target=run, args=("worker", "worker")),
               threading.Thread(target=run, args=("watch", "control", "watch",
                                                  "--router-id", ROUTER))]
    for t in threads:
        t.start()
    started = time.monotonic()
    sub = ThresholdSubscriber(wrong, ROUTER, RING, Bounds(), FALLBACK)
    sub.start(wait_caught_up=60)
    sub_seconds = time.monotonic() - started
    try:
        assert sub.last_error is not None and "SASL authentication" in sub.last_error
        assert sub.current() == FALLBACK
    finally:
        sub.stop()
    for t in threads:
        t.join(120)
    print(f"\nwrong password noticed by: subscriber {sub_seconds:.1f}s, "
          + ", ".join(f"{k} {v[1]:.1f}s" for k, v in sorted(results.items())))
    assert sub_seconds < 25
    for name, (proc, seconds) in results.items():
        assert proc.returncode != 0, f"{name}: {proc.stdout}{proc.stderr}"
        assert seconds < 30, f"{name} took {seconds:.0f}s"
        # the broker's error response, or only its closing the connection, names it
        assert "SASL authentication" in proc.stderr, f"{name}: {proc.stderr}"
        assert "credentials are" in proc.stderr
        assert "TIERWATCH_SASL_PASSWORD" in proc.stderr
        assert PASSWORDS["router"] not in proc.stderr and "not-the-password" not in proc.stderr


@pytest.mark.parametrize("case", ["wrong_password", "plain_wrong_password", "untrusted_ca",
                                  "no_client_certificate", "plaintext_to_tls"])
def test_each_connection_failure_names_its_cause(broker: SecureKafka, case: str) -> None:
    assert broker.tls is not None
    ca, sasl = str(broker.tls.ca), broker.sasl_bootstrap
    conn, expected = {
        "wrong_password": (Connection(sasl, "SASL_SSL", "SCRAM-SHA-512", "admin", "nope",
                                      ssl_cafile=ca), "SASL authentication: the credent"),
        "plain_wrong_password": (Connection(sasl, "SASL_SSL", "PLAIN", "admin", "nope",
                                            ssl_cafile=ca), "SASL authentication: the credent"),
        "untrusted_ca": (Connection(sasl, "SASL_SSL", "PLAIN", "admin", PASSWORDS["admin"]),
                         "certificate is not trusted"),
        "no_client_certificate": (Connection(broker.ssl_bootstrap, "SSL", ssl_cafile=ca),
                                  "wants a client certificate"),
        "plaintext_to_tls": (Connection(sasl), "no Kafka broker answered"),
    }[case]
    conn = dataclasses.replace(conn, connect_timeout_s=2.0)
    started = time.monotonic()
    with pytest.raises(KafkaConnectError, match=expected):
        kafka_clients.admin(conn)
    assert time.monotonic() - started < 6
