"""Every Kafka client tierwatch makes, from one set of connection settings.

The connection block of :class:`~pipeline.settings.Settings` (``security_protocol``,
``sasl_*``, ``ssl_*``, ``connect_timeout_s``) becomes kafka-python keyword
arguments (:func:`producer`, :func:`consumer`, :func:`admin`) and faust's broker
credentials (:func:`faust_credentials`). The worker, ``topics create``, ``baseline
publish``, the live simulator, ``control watch`` and the router-side emitter and
subscriber all go through here, so a cluster that one of them reaches, all reach.

A client that cannot reach or authenticate with the brokers within
``connect_timeout_s`` raises :class:`KafkaConnectError`, whose one-line message
names the cause (refused, untrusted certificate, failed authentication, …) and the
setting to check. kafka-python retries a failed authentication until its bootstrap
times out and only logs why; the cause is read from those log records.

Only the standard library and kafka-python are imported here (faust and aiokafka only
inside the functions that make their settings), so routers can use it without the
worker's stack.

>>> kw = client_kwargs("127.0.0.1:9092")
>>> kw["bootstrap_servers"], kw["security_protocol"]
(['127.0.0.1:9092'], 'PLAINTEXT')
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib
import inspect
import logging
import re
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.errors import (
    KafkaError,
    SaslAuthenticationFailedError,
    TopicAuthorizationFailedError,
)

from pipeline.errors import UserError

try:  # kafka-python 3
    from kafka.net.sasl.oauth import AbstractTokenProvider as _KafkaTokenProvider
except ImportError:  # pragma: no cover - kafka-python 2
    from kafka.sasl.oauth import AbstractTokenProvider as _KafkaTokenProvider

log = logging.getLogger("tierwatch.kafka")

SSL_PROTOCOLS = frozenset({"SSL", "SASL_SSL"})
SASL_PROTOCOLS = frozenset({"SASL_PLAINTEXT", "SASL_SSL"})


class KafkaConnectError(UserError):
    """A Kafka client could not be set up, could not reach or authenticate with the
    brokers in time, or was denied a write. The message is one line: the cause, then
    what to check (the CLI prints it and exits 2)."""


@dataclass(frozen=True)
class Connection:
    """The connection settings, normalized: secrets read (from the environment or their
    file), paths as strings. Build it with :func:`connection`.

    >>> connection("a:9092,b:9092").servers
    ['a:9092', 'b:9092']
    """

    bootstrap_servers: str
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = dataclasses.field(default=None, repr=False)
    sasl_oauth_token_provider: str | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_key_password: str | None = dataclasses.field(default=None, repr=False)
    ssl_check_hostname: bool = True
    connect_timeout_s: float = 10.0

    @property
    def servers(self) -> list[str]:
        return [s.strip() for s in self.bootstrap_servers.split(",") if s.strip()]

    def describe(self) -> str:
        """Where and how, without secrets: ``host:port (SASL_SSL, SCRAM-SHA-256 as 'u')``."""
        how = self.security_protocol
        if self.sasl_mechanism == "OAUTHBEARER":
            how += f", OAUTHBEARER via {self.sasl_oauth_token_provider}"
        elif self.sasl_mechanism:
            how += f", {self.sasl_mechanism} as {self.sasl_username!r}"
        if self.ssl_certfile:
            how += ", client certificate"
        return f"{self.bootstrap_servers} ({how})"


def _secret(value: Any) -> str | None:
    if value is None:
        return None
    getter = getattr(value, "get_secret_value", None)
    return str(getter() if getter is not None else value)


def _read_secret(path: Path, name: str) -> str:
    try:
        text = path.read_text()
    except OSError as exc:
        raise KafkaConnectError(f"cannot read {name} {path}: {exc.strerror or exc}") from exc
    return text[:-1] if text.endswith("\n") else text


def connection(settings: Any) -> Connection:
    """Normalize ``settings``: a :class:`~pipeline.settings.Settings` (or any object with
    its connection attributes), a :class:`Connection`, or a bootstrap string (PLAINTEXT).

    A password file is read here; an unreadable one raises :class:`KafkaConnectError`.
    """
    if isinstance(settings, Connection):
        return settings
    if isinstance(settings, str):
        return Connection(settings)
    password = _secret(getattr(settings, "sasl_password", None))
    password_file = getattr(settings, "sasl_password_file", None)
    if password is None and password_file is not None:
        password = _read_secret(Path(password_file), "sasl_password_file")

    def path(name: str) -> str | None:
        value = getattr(settings, name, None)
        return None if value is None else str(value)

    return Connection(
        bootstrap_servers=settings.bootstrap_servers,
        security_protocol=getattr(settings, "security_protocol", "PLAINTEXT"),
        sasl_mechanism=getattr(settings, "sasl_mechanism", None),
        sasl_username=getattr(settings, "sasl_username", None),
        sasl_password=password,
        sasl_oauth_token_provider=getattr(settings, "sasl_oauth_token_provider", None),
        ssl_cafile=path("ssl_cafile"), ssl_certfile=path("ssl_certfile"),
        ssl_keyfile=path("ssl_keyfile"),
        ssl_key_password=_secret(getattr(settings, "ssl_key_password", None)),
        ssl_check_hostname=getattr(settings, "ssl_check_hostname", True),
        connect_timeout_s=getattr(settings, "connect_timeout_s", 10.0))


# -- TLS -----------------------------------------------------------------------------------
def ssl_context(conn: Connection) -> ssl.SSLContext | None:
    """The TLS context of an SSL or SASL_SSL connection (None otherwise), shared by
    kafka-python, aiokafka and faust: the CA file or the system trust store, hostname
    checks, and the client certificate for mutual TLS."""
    if conn.security_protocol not in SSL_PROTOCOLS:
        return None
    for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
        value = getattr(conn, name)
        if value is not None and not Path(value).is_file():
            raise KafkaConnectError(f"{name} {value} is not a readable file; fix "
                                    f"TIERWATCH_{name.upper()}")
    try:
        ctx = ssl.create_default_context(cafile=conn.ssl_cafile)
    except (OSError, ssl.SSLError) as exc:
        raise KafkaConnectError(f"ssl_cafile {conn.ssl_cafile} holds no usable CA "
                                f"certificate: {exc}") from exc
    ctx.check_hostname = conn.ssl_check_hostname
    if conn.ssl_certfile is not None:
        try:
            ctx.load_cert_chain(conn.ssl_certfile, conn.ssl_keyfile,
                                password=conn.ssl_key_password)
        except (OSError, ssl.SSLError) as exc:
            raise KafkaConnectError(
                f"cannot load the client certificate {conn.ssl_certfile} with key "
                f"{conn.ssl_keyfile or '(in the certificate file)'}: {exc}; check the files "
                "and TIERWATCH_SSL_KEY_PASSWORD") from exc
    return ctx


# -- OAUTHBEARER -----------------------------------------------------------------------------
def load_token_provider(spec: str) -> Any:
    """Call the ``module:callable`` named by ``sasl_oauth_token_provider``; it returns an
    object whose ``token()`` (plain or ``async``) gives a bearer token, and optionally
    ``extensions()`` (a dict of SASL extensions)."""
    module_name, _, attr = spec.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as exc:
        raise KafkaConnectError(f"sasl_oauth_token_provider {spec!r} cannot be loaded: "
                                f"{exc}") from exc
    provider = target()
    if not callable(getattr(provider, "token", None)):
        raise KafkaConnectError(f"sasl_oauth_token_provider {spec!r} returned "
                                f"{type(provider).__name__}, which has no token() method")
    return provider


def _extensions(provider: Any) -> dict[str, str]:
    get = getattr(provider, "extensions", None)
    return dict(get()) if callable(get) else {}


class KafkaPythonTokenProvider(_KafkaTokenProvider):
    """kafka-python calls ``token()`` synchronously on its network thread."""

    def __init__(self, provider: Any) -> None:
        self.provider = provider

    def token(self) -> str:
        result = self.provider.token()
        if inspect.isawaitable(result):  # an async provider: no loop runs on this thread
            result = asyncio.run(_await(result))
        return str(result)

    def extensions(self) -> dict[str, str]:
        return _extensions(self.provider)


async def _await(awaitable: Any) -> Any:
    return await awaitable


def aiokafka_token_provider(provider: Any) -> Any:
    """``provider`` as aiokafka's ``AbstractTokenProvider``: a plain ``token()`` runs in
    the loop's executor, since signers (MSK IAM) may block on the network."""
    from aiokafka.abc import AbstractTokenProvider

    class AiokafkaTokenProvider(AbstractTokenProvider):
        async def token(self) -> str:
            if inspect.iscoroutinefunction(provider.token):
                return str(await provider.token())
            loop = asyncio.get_running_loop()
            return str(await loop.run_in_executor(None, provider.token))

        def extensions(self) -> dict[str, str]:
            return _extensions(provider)

    return AiokafkaTokenProvider()


# -- kafka-python --------------------------------------------------------------------------
def client_kwargs(settings: Any) -> dict[str, Any]:
    """The connection keyword arguments of a kafka-python client (producer, consumer or
    admin): servers, protocol, TLS context, SASL credentials and the bootstrap timeout."""
    conn = connection(settings)
    kw: dict[str, Any] = {
        "bootstrap_servers": conn.servers,
        "security_protocol": conn.security_protocol,
        "bootstrap_timeout_ms": int(conn.connect_timeout_s * 1000),
    }
    ctx = ssl_context(conn)
    if ctx is not None:
        kw["ssl_context"] = ctx
        kw["ssl_check_hostname"] = conn.ssl_check_hostname
    if conn.security_protocol in SASL_PROTOCOLS and conn.sasl_mechanism:
        kw["sasl_mechanism"] = conn.sasl_mechanism
        if conn.sasl_mechanism == "OAUTHBEARER":
            if not conn.sasl_oauth_token_provider:
                raise KafkaConnectError("OAUTHBEARER needs sasl_oauth_token_provider")
            kw["sasl_oauth_token_provider"] = KafkaPythonTokenProvider(
                load_token_provider(conn.sasl_oauth_token_provider))
        else:
            kw["sasl_plain_username"] = conn.sasl_username
            kw["sasl_plain_password"] = conn.sasl_password
    return kw


def _only_known(cls: type, kw: dict[str, Any]) -> dict[str, Any]:
    # older kafka-python releases reject configs they do not know (bootstrap_timeout_ms)
    known = getattr(cls, "DEFAULT_CONFIG", None)
    return kw if known is None else {k: v for k, v in kw.items() if k in known}


def producer(settings: Any, **config: Any) -> KafkaProducer:
    """A connected ``KafkaProducer``; ``config`` adds producer options (acks, linger_ms…)."""
    conn = connection(settings)
    with diagnosed(conn, "producer"):
        return KafkaProducer(**_only_known(KafkaProducer, {**client_kwargs(conn), **config}))


def consumer(settings: Any, *topics: str, **config: Any) -> KafkaConsumer:
    """A connected ``KafkaConsumer`` (subscribed to ``topics`` if any)."""
    conn = connection(settings)
    with diagnosed(conn, "consumer"):
        return KafkaConsumer(*topics, **_only_known(KafkaConsumer,
                                                    {**client_kwargs(conn), **config}))


def admin(settings: Any, **config: Any) -> KafkaAdminClient:
    """A connected ``KafkaAdminClient``."""
    conn = connection(settings)
    with diagnosed(conn, "admin client"):
        return KafkaAdminClient(**_only_known(KafkaAdminClient,
                                              {**client_kwargs(conn), **config}))


def delivered(futures: list[Any], topic: str, timeout_s: float = 30.0) -> None:
    """Wait for sends to ``topic``; a denied or failed write raises
    :class:`KafkaConnectError` instead of being lost in the producer's callbacks."""
    for future in futures:
        try:
            future.get(timeout=timeout_s)
        except TopicAuthorizationFailedError as exc:
            raise KafkaConnectError(
                f"this principal may not write to {topic}: grant it WRITE on the topic "
                "(the ACLs are in deploy/runbook.md, 'Kafka security')") from exc
        except KafkaError as exc:
            raise KafkaConnectError(f"could not write to {topic}: {exc}") from exc


CONNECTION_FIELDS = ("bootstrap_servers", "security_protocol", "sasl_mechanism",
                     "sasl_username", "sasl_password", "sasl_password_file",
                     "sasl_oauth_token_provider", "ssl_cafile", "ssl_certfile", "ssl_keyfile",
                     "ssl_key_password", "ssl_check_hostname", "connect_timeout_s")


def connection_env(settings: Any) -> dict[str, str]:
    """The ``TIERWATCH_*`` variables that give a child process these connection settings
    (secrets included: the environment, unlike argv, is not shown by ``ps``)."""
    env = {}
    for name in CONNECTION_FIELDS:
        value = getattr(settings, name, None)
        if value is None:
            continue
        flag = isinstance(value, bool)
        env[f"TIERWATCH_{name.upper()}"] = str(value).lower() if flag else _secret(value) or ""
    return env


def check_connection(settings: Any) -> None:
    """Reach and authenticate with the brokers once, or raise :class:`KafkaConnectError`
    (the worker calls it before faust starts, which would otherwise retry forever)."""
    admin(settings, client_id="tierwatch-preflight").close()


# -- faust -------------------------------------------------------------------------------
def aiokafka_kwargs(settings: Any) -> dict[str, Any]:
    """The connection keyword arguments of an aiokafka client, from the same settings as
    :func:`client_kwargs` (aiokafka checks host names through the TLS context)."""
    kw = client_kwargs(settings)
    kw.pop("bootstrap_timeout_ms", None)
    kw.pop("ssl_check_hostname", None)
    spec = connection(settings).sasl_oauth_token_provider
    if "sasl_oauth_token_provider" in kw and spec:
        kw["sasl_oauth_token_provider"] = aiokafka_token_provider(load_token_provider(spec))
    return kw


def broker_urls(settings: Any) -> list[str]:
    """faust's ``broker`` argument: ``kafka://host:port`` per bootstrap server."""
    return [f"kafka://{s}" for s in connection(settings).servers]


def faust_credentials(settings: Any) -> Any:
    """faust's ``broker_credentials`` for these settings (None for PLAINTEXT)."""
    from faust.auth import OAuthCredentials, SASLCredentials, SSLCredentials

    conn = connection(settings)
    ctx = ssl_context(conn)
    if conn.security_protocol == "PLAINTEXT":
        return None
    if conn.security_protocol == "SSL":
        return SSLCredentials(ctx)
    if conn.sasl_mechanism == "OAUTHBEARER":
        if not conn.sasl_oauth_token_provider:
            raise KafkaConnectError("OAUTHBEARER needs sasl_oauth_token_provider")
        return OAuthCredentials(oauth_cb=aiokafka_token_provider(
            load_token_provider(conn.sasl_oauth_token_provider)), ssl_context=ctx)
    # with an ssl_context faust speaks SASL_SSL, without one SASL_PLAINTEXT
    return SASLCredentials(username=conn.sasl_username, password=conn.sasl_password,
                           ssl_context=ctx, mechanism=conn.sasl_mechanism)


# -- why a connection failed -------------------------------------------------------------
class _Failures(logging.Handler):
    """Keeps what kafka-python logs at WARNING and above while it bootstraps."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []
        self.exceptions: list[BaseException] = []

    def emit(self, record: logging.LogRecord) -> None:
        args = record.args if isinstance(record.args, tuple) else ()
        self.exceptions.extend(a for a in args if isinstance(a, BaseException))
        with contextlib.suppress(Exception):
            self.messages.append(record.getMessage())


# kafka-python names a connection's broker version once ApiVersions has answered: a
# connection lost after that, on a SASL listener, was closed during authentication
_LOST_AFTER_HANDSHAKE = re.compile(r"broker_version=\(\d.*Connection lost")


def explain(conn: Connection, messages: list[str],
            exceptions: tuple[BaseException, ...] | list[BaseException] = ()) -> str:
    """One line: what failed for ``conn`` and what to check, from kafka-python's logs."""
    text = " ".join([*messages, *map(str, exceptions)])
    where = conn.describe()
    rejected = any(isinstance(e, SaslAuthenticationFailedError) for e in exceptions) or \
        "SaslAuthenticationFailed" in text
    closed_in_auth = conn.security_protocol in SASL_PROTOCOLS and any(
        _LOST_AFTER_HANDSHAKE.search(m) for m in messages)
    if rejected or closed_in_auth:
        if conn.sasl_mechanism == "OAUTHBEARER":
            what = "check the token provider (TIERWATCH_SASL_OAUTH_TOKEN_PROVIDER)"
        else:
            what = ("check TIERWATCH_SASL_USERNAME, the password (TIERWATCH_SASL_PASSWORD or "
                    "TIERWATCH_SASL_PASSWORD_FILE) and TIERWATCH_SASL_MECHANISM")
        how = ("rejected the SASL authentication: the credentials are wrong" if rejected
               else "closed the connection during SASL authentication: the credentials are "
               "most likely wrong")
        return f"Kafka at {where} {how}; {what}"
    if "CERTIFICATE_VERIFY_FAILED" in text:
        return (f"Kafka at {where}: the broker's certificate is not trusted "
                f"({_ssl_reason(text)}); set TIERWATCH_SSL_CAFILE to the CA that signed it")
    if "WRONG_VERSION_NUMBER" in text or "record layer failure" in text:
        return (f"Kafka at {where}: the TLS handshake failed; is TIERWATCH_SECURITY_PROTOCOL "
                "right for this listener?")
    if "certificate required" in text.lower() or "BAD_CERTIFICATE" in text:
        return (f"Kafka at {where}: the broker wants a client certificate; set "
                "TIERWATCH_SSL_CERTFILE and TIERWATCH_SSL_KEYFILE")
    if "ECONNREFUSED" in text or "Connection refused" in text:
        return (f"no Kafka broker listens at {where}; check TIERWATCH_BOOTSTRAP_SERVERS and "
                "that the brokers run")
    return (f"no Kafka broker answered at {where} within {conn.connect_timeout_s:g}s; "
            "check TIERWATCH_BOOTSTRAP_SERVERS, TIERWATCH_SECURITY_PROTOCOL and the network")


def _ssl_reason(text: str) -> str:
    start = text.find("certificate verify failed")
    return re.split(r" \(_ssl|\)|;", text[start:])[0] if start >= 0 else "verify failed"


@contextlib.contextmanager
def diagnosed(settings: Any, what: str = "client") -> Iterator[None]:
    """Turn a bootstrap that times out inside the block into :class:`KafkaConnectError`
    naming its cause. kafka-python's own error logs for the attempt are kept out of the
    console meanwhile (the raised error says it in one line)."""
    conn = connection(settings)
    failures = _Failures()
    kafka_log = logging.getLogger("kafka")
    kafka_log.addHandler(failures)
    try:
        yield
    except KafkaError as exc:
        if not _is_bootstrap_failure(exc):
            raise
        message = explain(conn, failures.messages, failures.exceptions)
        log.debug("Kafka %s failed: %s", what, message)
        raise KafkaConnectError(message) from exc
    finally:
        kafka_log.removeHandler(failures)


def _is_bootstrap_failure(exc: KafkaError) -> bool:
    name = type(exc).__name__
    return name in {"KafkaTimeoutError", "NoBrokersAvailable", "KafkaConnectionError"} or \
        "bootstrap" in str(exc).lower()
