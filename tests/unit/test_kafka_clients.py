"""The connection settings and the client factory, without a broker: validation, what each
library is given (faust's through faust's own mapping to aiokafka), the OAuth hook, and
how a failed bootstrap is explained. tests/integration/test_kafka_security.py runs the
same settings against a secured broker."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
import ssl
from pathlib import Path
from typing import Any

import pytest
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
from kafka.errors import SaslAuthenticationFailedError, TopicAuthorizationFailedError
from kafka_broker import TlsFiles, make_tls

from pipeline import kafka_clients
from pipeline.errors import UserError
from pipeline.kafka_clients import Connection, KafkaConnectError, connection, explain
from pipeline.settings import Settings

SASL = {"security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-256",
        "sasl_username": "router", "sasl_password": "s3cret"}


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    try:
        return make_tls(tmp_path_factory.mktemp("tls"))
    except RuntimeError as exc:
        pytest.skip(str(exc))


# -- settings ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("kw", "message"), [
    ({"security_protocol": "SASL_SSL"}, "needs sasl_mechanism"),
    ({"sasl_username": "u"}, "sasl_username needs security_protocol SASL_SSL"),
    ({"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN", "sasl_username": "u",
      "sasl_password": "p", "ssl_cafile": "ca.pem"}, "ssl_cafile needs security_protocol SSL"),
    ({"security_protocol": "SSL", "ssl_keyfile": "k.pem"}, "ssl_keyfile needs ssl_certfile"),
    ({**SASL, "sasl_password": None}, "needs one of TIERWATCH_SASL_PASSWORD"),
    ({**SASL, "sasl_password_file": "pw"}, "needs one of TIERWATCH_SASL_PASSWORD"),
    ({**SASL, "sasl_username": None}, "needs sasl_username"),
    ({"security_protocol": "SASL_SSL", "sasl_mechanism": "OAUTHBEARER"},
     "needs sasl_oauth_token_provider"),
    ({"security_protocol": "SASL_SSL", "sasl_mechanism": "OAUTHBEARER",
      "sasl_oauth_token_provider": "not a path"}, "as 'module:callable'"),
    ({"security_protocol": "SASL_SSL", "sasl_mechanism": "GSSAPI"}, "sasl_mechanism"),
])
def test_inconsistent_connection_settings_are_refused(kw: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Settings(**kw)


def test_secrets_are_not_shown_and_are_marked_for_the_cli() -> None:
    s = Settings(**SASL)
    assert "s3cret" not in repr(s) and "s3cret" not in repr(connection(s))
    extra = {name: f.json_schema_extra for name, f in Settings.model_fields.items()}
    assert extra["sasl_password"] == {"group": "connection", "secret": True}
    assert extra["ssl_key_password"] == {"group": "connection", "secret": True}
    for name in ("security_protocol", "sasl_mechanism", "sasl_username", "ssl_cafile",
                 "ssl_certfile", "ssl_keyfile", "sasl_oauth_token_provider"):
        assert extra[name] == {"group": "connection"}, name


def test_the_password_comes_from_the_environment_or_a_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIERWATCH_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("TIERWATCH_SASL_MECHANISM", "PLAIN")
    monkeypatch.setenv("TIERWATCH_SASL_USERNAME", "key")
    monkeypatch.setenv("TIERWATCH_SASL_PASSWORD", "from-env")
    assert connection(Settings()).sasl_password == "from-env"
    monkeypatch.delenv("TIERWATCH_SASL_PASSWORD")
    secret = tmp_path / "password"
    secret.write_text("from-file\n")  # as `echo` or a mounted secret writes it
    monkeypatch.setenv("TIERWATCH_SASL_PASSWORD_FILE", str(secret))
    assert connection(Settings()).sasl_password == "from-file"
    secret.unlink()
    with pytest.raises(KafkaConnectError, match=f"cannot read sasl_password_file {secret}"):
        connection(Settings())


def test_the_connection_travels_to_a_child_process_by_environment(
        tls: TlsFiles, monkeypatch: pytest.MonkeyPatch) -> None:
    s = Settings(bootstrap_servers="b:9093", **SASL, ssl_cafile=tls.ca,
                 ssl_check_hostname=False)
    for key in [k for k in os.environ if k.startswith("TIERWATCH_")]:
        monkeypatch.delenv(key)
    for key, value in kafka_clients.connection_env(s).items():
        monkeypatch.setenv(key, value)
    assert connection(Settings()) == connection(s)


# -- kafka-python ------------------------------------------------------------------------------
def test_plaintext_kwargs() -> None:
    kw = kafka_clients.client_kwargs(Settings(bootstrap_servers="a:1, b:2"))
    assert kw == {"bootstrap_servers": ["a:1", "b:2"], "security_protocol": "PLAINTEXT",
                  "bootstrap_timeout_ms": 10_000}


def test_sasl_ssl_kwargs(tls: TlsFiles) -> None:
    kw = kafka_clients.client_kwargs(Settings(**SASL, ssl_cafile=tls.ca))
    ctx = kw.pop("ssl_context")
    assert isinstance(ctx, ssl.SSLContext) and ctx.verify_mode == ssl.CERT_REQUIRED
    assert ctx.check_hostname and len(ctx.get_ca_certs()) == 1  # our CA, not the system's
    assert kw == {"bootstrap_servers": ["127.0.0.1:9092"], "security_protocol": "SASL_SSL",
                  "bootstrap_timeout_ms": 10_000, "ssl_check_hostname": True,
                  "sasl_mechanism": "SCRAM-SHA-256", "sasl_plain_username": "router",
                  "sasl_plain_password": "s3cret"}


def test_mutual_tls_loads_the_client_certificate(tls: TlsFiles, tmp_path: Path) -> None:
    s = Settings(security_protocol="SSL", ssl_cafile=tls.ca, ssl_certfile=tls.client_cert,
                 ssl_keyfile=tls.client_key)
    assert isinstance(kafka_clients.client_kwargs(s)["ssl_context"], ssl.SSLContext)
    wrong = Settings(security_protocol="SSL", ssl_cafile=tls.ca, ssl_certfile=tls.client_cert,
                     ssl_keyfile=tls.ca)  # a certificate where the key should be
    with pytest.raises(KafkaConnectError, match="cannot load the client certificate"):
        kafka_clients.client_kwargs(wrong)
    missing = Settings(security_protocol="SSL", ssl_cafile=tmp_path / "nope.pem")
    with pytest.raises(KafkaConnectError, match=r"ssl_cafile .*nope\.pem is not a readable file"):
        kafka_clients.client_kwargs(missing)


# -- OAUTHBEARER -------------------------------------------------------------------------------
class SyncProvider:
    def token(self) -> str:
        return "sync-token"

    def extensions(self) -> dict[str, str]:
        return {"logicalCluster": "lkc-1"}


class AsyncProvider:
    async def token(self) -> str:
        await asyncio.sleep(0)
        return "async-token"


def make_sync() -> SyncProvider:
    return SyncProvider()


def make_async() -> AsyncProvider:
    return AsyncProvider()


def make_nothing() -> object:
    return object()


def oauth(provider: str) -> Settings:
    return Settings(security_protocol="SASL_SSL", sasl_mechanism="OAUTHBEARER",
                    sasl_oauth_token_provider=f"{__name__}:{provider}")


@pytest.mark.parametrize(("provider", "token"), [("make_sync", "sync-token"),
                                                 ("make_async", "async-token")])
def test_the_token_provider_hook_serves_both_libraries(provider: str, token: str) -> None:
    from aiokafka.abc import AbstractTokenProvider as AiokafkaProvider
    from kafka.net.sasl.oauth import AbstractTokenProvider as KafkaProvider

    kw = kafka_clients.client_kwargs(oauth(provider))
    assert kw["sasl_mechanism"] == "OAUTHBEARER"
    sync = kw["sasl_oauth_token_provider"]
    assert isinstance(sync, KafkaProvider) and sync.token() == token
    auth = credentials_to_aiokafka_auth(kafka_clients.faust_credentials(oauth(provider)))
    assert auth["security_protocol"] == "SASL_SSL" and auth["sasl_mechanism"] == "OAUTHBEARER"
    assert isinstance(auth["ssl_context"], ssl.SSLContext)
    async_provider = auth["sasl_oauth_token_provider"]
    assert isinstance(async_provider, AiokafkaProvider)
    assert asyncio.run(async_provider.token()) == token
    expected = {"logicalCluster": "lkc-1"} if provider == "make_sync" else {}
    assert sync.extensions() == async_provider.extensions() == expected


@pytest.mark.parametrize(("provider", "message"), [
    ("make_nothing", "has no token\\(\\) method"), ("no_such_callable", "cannot be loaded")])
def test_a_broken_token_provider_is_named(provider: str, message: str) -> None:
    with pytest.raises(KafkaConnectError, match=message):
        kafka_clients.client_kwargs(oauth(provider))


# -- faust -------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["plaintext", "sasl_ssl", "sasl_plaintext", "mtls"])
def test_faust_credentials_become_the_same_aiokafka_settings(kind: str,
                                                             tls: TlsFiles) -> None:
    settings = {
        "plaintext": Settings(),
        "sasl_ssl": Settings(**{**SASL, "sasl_mechanism": "SCRAM-SHA-512"}, ssl_cafile=tls.ca),
        "sasl_plaintext": Settings(**{**SASL, "security_protocol": "SASL_PLAINTEXT",
                                      "sasl_mechanism": "PLAIN"}),
        "mtls": Settings(security_protocol="SSL", ssl_cafile=tls.ca,
                         ssl_certfile=tls.client_cert, ssl_keyfile=tls.client_key),
    }[kind]
    auth = credentials_to_aiokafka_auth(kafka_clients.faust_credentials(settings))
    python = kafka_clients.client_kwargs(settings)
    assert auth["security_protocol"] == python["security_protocol"] == \
        settings.security_protocol
    assert (auth.get("ssl_context") is None) == (kind in {"plaintext", "sasl_plaintext"})
    for key in ("sasl_mechanism", "sasl_plain_username", "sasl_plain_password"):
        assert auth.get(key) == python.get(key), key
    assert kafka_clients.broker_urls(settings) == ["kafka://127.0.0.1:9092"]


# -- errors ------------------------------------------------------------------------------------
SASL_CONN = Connection("b:9093", "SASL_SSL", "SCRAM-SHA-256", "router", "pw")


@pytest.mark.parametrize(("conn", "messages", "exceptions", "expected"), [
    (SASL_CONN, [], [SaslAuthenticationFailedError("invalid credentials")],
     "rejected the SASL authentication"),
    (SASL_CONN, ["<KafkaConnection node_id=bootstrap-0 broker_version=(4, 3) (disconnected)>"
                 ": Connection lost: KafkaConnectionError: socket disconnected"], [],
     "closed the connection during SASL authentication"),
    (SASL_CONN, ["<KafkaConnection node_id=bootstrap-0 broker_version=unknown (disconnected)>"
                 ": Connection lost: KafkaConnectionError: socket disconnected"], [],
     "no Kafka broker answered at b:9093 \\(SASL_SSL, SCRAM-SHA-256 as 'router'\\) within"),
    (SASL_CONN, ["Connection failed: KafkaConnectionError: Handshake failed: [SSL: "
                 "CERTIFICATE_VERIFY_FAILED] certificate verify failed: self-signed "
                 "certificate in certificate chain (_ssl.c:1006)"], [],
     "certificate is not trusted \\(certificate verify failed: self-signed certificate in "
     "certificate chain\\); set TIERWATCH_SSL_CAFILE"),
    (Connection("b:9093", "SSL"), ["Handshake failed: [SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED]"
                                   " tlsv13 alert certificate required"], [],
     "wants a client certificate"),
    (Connection("b:1"), ["Connection failed: KafkaConnectionError: 111 ECONNREFUSED"], [],
     "no Kafka broker listens at b:1"),
])
def test_a_failed_bootstrap_is_explained(conn: Connection, messages: list[str],
                                         exceptions: list[BaseException],
                                         expected: str) -> None:
    text = explain(conn, messages, exceptions)
    assert re.search(expected, text), text
    assert "\n" not in text and "pw" not in text.split("(")[0]


def test_connect_errors_are_user_errors_and_keep_secrets_out() -> None:
    assert issubclass(KafkaConnectError, UserError)
    conn = dataclasses.replace(SASL_CONN, sasl_password="hunter2-secret")
    assert "hunter2-secret" not in explain(conn, ["broker_version=(4, 3) Connection lost"])
    assert "hunter2-secret" not in repr(conn)


class _Future:
    def __init__(self, exc: BaseException | None) -> None:
        self.exc = exc

    def get(self, timeout: float) -> None:
        if self.exc is not None:
            raise self.exc


def test_a_denied_write_is_an_error_not_a_silent_loss() -> None:
    kafka_clients.delivered([_Future(None)], "t.control")
    with pytest.raises(KafkaConnectError, match=r"may not write to t\.control: grant it WRITE"):
        kafka_clients.delivered([_Future(None), _Future(TopicAuthorizationFailedError())],
                                "t.control")


def test_the_runbook_lists_exactly_the_acls_the_code_grants() -> None:
    from pipeline.acls import kafka_acls_commands, least_privilege

    runbook = (Path(__file__).resolve().parents[2] / "deploy" / "runbook.md").read_text()
    section = runbook.split("\n## Kafka security\n", 1)[1].split("\n## ", 1)[0]
    documented = {line for line in section.splitlines() if line.startswith("kafka-acls.sh")}
    grants = least_privilege(Settings(), worker="tierwatch-worker", routers=["router-support"],
                             feedback_producers=["support-desk"],
                             baseline_publishers=["ml-pipeline"], watchers=["oncall"],
                             operators=["tierwatch-admin"])
    assert documented == set(kafka_acls_commands(grants))
