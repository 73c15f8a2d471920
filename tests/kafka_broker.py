"""A real Kafka broker for the integration tests, and topic helpers.

`broker_bootstrap` picks the first broker that can be had, in this order:

1. ``KAFKA_BOOTSTRAP_SERVERS``, an existing cluster;
2. a testcontainers ``KafkaContainer`` (KRaft), if a Docker engine answers;
3. the broker run from the Maven Central jars by ``deploy/kafka/kafka.sh``.

It raises `RuntimeError` when none can be started; the caller decides whether that
fails or skips the tests.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from kafka import KafkaAdminClient
from kafka.errors import KafkaError

REPO = Path(__file__).resolve().parents[1]
KAFKA_SH = REPO / "deploy" / "kafka" / "kafka.sh"

BOOTSTRAP_ENV = "KAFKA_BOOTSTRAP_SERVERS"
IMAGE_ENV = "TIERWATCH_KAFKA_IMAGE"
# Confluent Platform 8.0 is Apache Kafka 4.0; KafkaContainer drives Confluent images only.
DEFAULT_IMAGE = "confluentinc/cp-kafka:8.0.0"
# Set to keep the local broker's run directory (logs, data) after the session.
KEEP_ENV = "TIERWATCH_KEEP_KAFKA_DIR"

_TOPIC_NAME = re.compile(r"^[A-Za-z0-9._-]+$")


@dataclass
class LocalKafka:
    """A broker run by ``deploy/kafka/kafka.sh`` on 127.0.0.1, in its own run directory.

    `stop` with ``keep_data=True`` then `start` restarts it on the same data.
    """

    port: int
    controller_port: int
    run_dir: Path
    start_timeout: float = 90.0

    @classmethod
    def create(cls, run_dir: Path, start_timeout: float = 90.0) -> LocalKafka:
        """A broker (not yet started) on two ports that are free now."""
        port, controller_port = _free_ports(2)
        return cls(port, controller_port, run_dir, start_timeout)

    @property
    def bootstrap(self) -> str:
        """The ``host:port`` clients connect to."""
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        """Launch the broker and block until it serves metadata; it dies with this process."""
        self._run(
            "start",
            "--port",
            str(self.port),
            "--controller-port",
            str(self.controller_port),
            "--owner-pid",
            str(os.getpid()),
            *self._start_args(),
        )
        # A wait that fails has already printed the broker log's tail into the error.
        self._run(
            "wait", "--timeout", str(int(self.start_timeout)), timeout=self.start_timeout + 30
        )

    def _start_args(self) -> list[str]:
        """More ``kafka.sh start`` options (subclasses add listeners and config)."""
        return []

    def stop(self, keep_data: bool = False) -> None:
        """Stop the broker (TERM, then KILL); remove its data unless ``keep_data``."""
        self._run("stop", *(["--keep-data"] if keep_data else []))

    def _run(self, command: str, *args: str, timeout: float = 300.0) -> None:
        # mvn may fetch the jars on the first start; later starts take seconds.
        argv = ["bash", str(KAFKA_SH), command, "--dir", str(self.run_dir), *args]
        try:
            proc = subprocess.run(
                argv, capture_output=True, text=True, timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(f"`kafka.sh {command}` timed out after {timeout:.0f}s") from exc
        if proc.returncode != 0:
            raise RuntimeError(
                f"`kafka.sh {command}` failed (exit {proc.returncode}):\n"
                f"{proc.stdout}{proc.stderr}".rstrip()
            )


def _free_ports(count: int) -> list[int]:
    """Distinct ports free on 127.0.0.1 right now (held open together, so never equal)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]


def _docker_answers() -> bool:
    """Whether a Docker engine is reachable (not merely whether the client is installed)."""
    try:
        import docker

        client = docker.from_env(timeout=5)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


def _start_container(stack: contextlib.ExitStack, start_timeout: float) -> str:
    from testcontainers.community.kafka import KafkaContainer

    container = (
        KafkaContainer(os.environ.get(IMAGE_ENV, DEFAULT_IMAGE))
        .with_kraft()
        # Match deploy/kafka/server.properties: the project creates its topics itself.
        .with_env("KAFKA_AUTO_CREATE_TOPICS_ENABLE", "false")
        .with_env("KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "1")
        .with_env("KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "1")
        .with_env("KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR", "1")
        .with_env("KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR", "1")
    )
    container.start(timeout=int(start_timeout))
    stack.callback(container.stop)
    return str(container.get_bootstrap_server())


def _start_local(stack: contextlib.ExitStack, start_timeout: float) -> LocalKafka:
    for tool in ("bash", os.environ.get("JAVA", "java")):  # kafka.sh runs $JAVA
        if shutil.which(tool) is None:
            raise RuntimeError(f"cannot run the local Kafka broker: `{tool}` is not found")
    run_dir = Path(tempfile.mkdtemp(prefix="tierwatch-kafka-"))
    if not os.environ.get(KEEP_ENV):
        stack.callback(shutil.rmtree, run_dir, ignore_errors=True)
    broker = LocalKafka.create(run_dir, start_timeout)
    # Registered before starting, so that a start that fails half-way is still stopped.
    stack.callback(_stop_or_warn, broker)
    broker.start()
    return broker


def _stop_or_warn(broker: LocalKafka) -> None:
    # Raising here would replace the error that ended the session with a cleanup error.
    try:
        broker.stop()
    except RuntimeError as exc:
        warnings.warn(f"could not stop the local Kafka broker: {exc}", stacklevel=1)


@contextlib.contextmanager
def broker_bootstrap(start_timeout: float = 90.0) -> Iterator[str]:
    """Yield the bootstrap ``host:port`` of a running broker; stop it afterwards if we started it.

    Raises
    ------
    RuntimeError
        No broker is configured and none could be started; the message says why.
    """
    external = os.environ.get(BOOTSTRAP_ENV, "").strip()
    if external:
        yield external
        return
    reasons: list[str] = []
    with contextlib.ExitStack() as stack:
        bootstrap = None
        if _docker_answers():
            try:
                bootstrap = _start_container(stack, start_timeout)
            except Exception as exc:  # e.g. the image cannot be pulled: try the jars
                reasons.append(f"testcontainers KafkaContainer: {exc!r}")
        else:
            reasons.append("testcontainers: no Docker engine answers")
        if bootstrap is None:
            try:
                bootstrap = _start_local(stack, start_timeout).bootstrap
            except RuntimeError as exc:
                reasons.append(f"local broker ({KAFKA_SH.relative_to(REPO)}): {exc}")
                raise RuntimeError(
                    f"no Kafka broker: {BOOTSTRAP_ENV} is unset and none could be started.\n"
                    + "\n".join(f"- {r}" for r in reasons)
                ) from exc
        _await_group_coordinator(bootstrap)
        yield bootstrap


def _await_group_coordinator(bootstrap: str, timeout: float = 30.0) -> None:
    """Block until a group coordinator answers.

    On a new broker the first FindCoordinator creates ``__consumer_offsets`` and fails
    until it is loaded; doing that here keeps the error out of the first test's logs.
    """
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="tierwatch-tests")
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                admin.describe_groups(["tierwatch-warm-up"])
                return
            except KafkaError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
    finally:
        admin.close()


def unique_topic(prefix: str) -> str:
    """A topic name no other test (or earlier run against the same cluster) uses."""
    if not _TOPIC_NAME.match(prefix):
        raise ValueError(f"topic prefix {prefix!r} has characters Kafka does not allow")
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def create_topics(
    bootstrap: str,
    names: Iterable[str],
    partitions: int = 1,
    compacted: Iterable[str] = (),
) -> None:
    """Create the topics and wait until every partition has a leader.

    Topics named in ``compacted`` get ``cleanup.policy=compact``. The replication factor
    is left to the cluster default, which is 1 on the test brokers.
    """
    names = list(names)
    compact = set(compacted)
    unknown = compact - set(names)
    if unknown:
        raise ValueError(f"compacted topics not in names: {sorted(unknown)}")
    spec = {
        name: {
            "num_partitions": partitions,
            "configs": {"cleanup.policy": "compact"} if name in compact else {},
        }
        for name in names
    }
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="tierwatch-tests")
    try:
        # Without waiting, the first produce can race the leader election and fail.
        admin.create_topics(spec, timeout_ms=30_000, wait_for_metadata=True)
    finally:
        admin.close()


# ------------------------------------------------------------------ the secured broker
# A second, opt-in broker for the security tests: TLS from a CA made here with openssl,
# SCRAM and PLAIN users on a SASL_SSL listener, mutual TLS on an SSL listener, and
# KRaft's StandardAuthorizer. The PLAINTEXT listener stays, because `kafka.sh wait`
# probes it and the controller and the broker talk over PLAINTEXT; its principal,
# ANONYMOUS, is therefore a super user, as is `admin`. Every other principal gets only
# what ACLs grant it.

SCRAM_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512")
AUTHORIZER = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"


def _openssl(*args: str, cwd: Path) -> None:
    proc = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {proc.stderr.strip()}")


@dataclass(frozen=True)
class TlsFiles:
    """PEM files made by :func:`make_tls`: a CA, the broker's key store (its key and
    certificate chain), and a client certificate for mutual TLS."""

    ca: Path
    broker_keystore: Path
    client_cert: Path
    client_key: Path


def make_tls(directory: Path, client_cn: str = "router") -> TlsFiles:
    """A throw-away CA, a broker certificate for 127.0.0.1/localhost and a client
    certificate whose subject is ``CN=<client_cn>`` (EC P-256 keys, valid two days)."""
    if shutil.which("openssl") is None:
        raise RuntimeError("openssl is not installed")
    directory.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
             "-subj", "/CN=tierwatch-test-ca", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=directory)
    for name, cn, ext in (
            ("broker", "localhost", "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                                    "extendedKeyUsage=serverAuth\n"),
            ("client", client_cn, "extendedKeyUsage=clientAuth\n")):
        (directory / f"{name}.ext").write_text(ext)
        _openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", f"/CN={cn}", cwd=directory)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                 "-set_serial", str(int.from_bytes(os.urandom(8), "big")), "-days", "2",
                 "-extfile", f"{name}.ext", "-out", f"{name}.pem", cwd=directory)
    keystore = directory / "broker-keystore.pem"
    # Kafka's PEM key store: the PKCS#8 key, then the certificate chain
    keystore.write_text((directory / "broker.key").read_text()
                        + (directory / "broker.pem").read_text()
                        + (directory / "ca.pem").read_text())
    return TlsFiles(directory / "ca.pem", keystore, directory / "client.pem",
                    directory / "client.key")


def _jaas_plain(users: dict[str, str]) -> str:
    entries = " ".join(f'user_{name}="{password}"' for name, password in users.items())
    return f"org.apache.kafka.common.security.plain.PlainLoginModule required {entries};"


@dataclass
class SecureKafka(LocalKafka):
    """A :class:`LocalKafka` that also serves SASL_SSL (SCRAM-SHA-256/512 and PLAIN, for
    every user in ``users``, and OAUTHBEARER with unsecured tokens) and SSL with required
    client certificates, behind an authorizer. ``users`` maps names to passwords;
    ``admin`` must be one of them."""

    sasl_port: int = 0
    ssl_port: int = 0
    users: dict[str, str] | None = None
    tls: TlsFiles | None = None

    @classmethod
    def create_secure(cls, run_dir: Path, users: dict[str, str],
                      start_timeout: float = 90.0) -> SecureKafka:
        if "admin" not in users:
            raise ValueError("the secured broker needs an `admin` user (its super user)")
        port, controller_port, sasl_port, ssl_port = _free_ports(4)
        tls = make_tls(run_dir / "tls")
        return cls(port, controller_port, run_dir, start_timeout, sasl_port, ssl_port,
                   dict(users), tls)

    @property
    def sasl_bootstrap(self) -> str:
        return f"127.0.0.1:{self.sasl_port}"

    @property
    def ssl_bootstrap(self) -> str:
        return f"127.0.0.1:{self.ssl_port}"

    def _start_args(self) -> list[str]:
        assert self.tls is not None and self.users is not None
        config = self.run_dir / "security.properties"
        scram = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        config.write_text("\n".join([
            "sasl.enabled.mechanisms=" + ",".join([*SCRAM_MECHANISMS, "PLAIN",
                                                   "OAUTHBEARER"]),
            *(f"listener.name.sasl_ssl.{m.lower()}.sasl.jaas.config={scram}"
              for m in SCRAM_MECHANISMS),
            f"listener.name.sasl_ssl.plain.sasl.jaas.config={_jaas_plain(self.users)}",
            # OAUTHBEARER with Kafka's unsecured JWTs (no identity provider): the token's
            # `sub` is the principal (tests/integration/oauth_tokens.py makes them)
            "listener.name.sasl_ssl.oauthbearer.sasl.jaas.config=org.apache.kafka.common."
            'security.oauthbearer.OAuthBearerLoginModule required '
            'unsecuredLoginStringClaim_sub="admin";',
            "ssl.keystore.type=PEM",
            f"ssl.keystore.location={self.tls.broker_keystore}",
            "ssl.truststore.type=PEM",
            f"ssl.truststore.location={self.tls.ca}",
            "listener.name.ssl.ssl.client.auth=required",
            # a client certificate's CN is its principal: CN=router is User:router,
            # the same principal (and ACLs) as the SCRAM user router
            "ssl.principal.mapping.rules=RULE:^CN=([a-zA-Z0-9._-]+).*$/$1/,DEFAULT",
            f"authorizer.class.name={AUTHORIZER}",
            "super.users=User:admin;User:ANONYMOUS",
            "",
        ]))
        args = ["--listener", f"SASL_SSL:{self.sasl_port}", "--listener",
                f"SSL:{self.ssl_port}", "--config", str(config)]
        for mechanism in SCRAM_MECHANISMS:
            for name, password in self.users.items():
                args += ["--add-scram", f"{mechanism}=[name={name},password={password}]"]
        return args


@contextlib.contextmanager
def secure_broker(users: dict[str, str], start_timeout: float = 90.0) -> Iterator[SecureKafka]:
    """Start a :class:`SecureKafka` in a fresh run directory; stop and remove it afterwards.

    Raises `RuntimeError` when it cannot be started (no Java, no openssl, no jars)."""
    for tool in ("bash", "openssl", os.environ.get("JAVA", "java")):
        if shutil.which(tool) is None:
            raise RuntimeError(f"cannot run the secured Kafka broker: `{tool}` is not found")
    with contextlib.ExitStack() as stack:
        run_dir = Path(tempfile.mkdtemp(prefix="tierwatch-kafka-secure-"))
        if not os.environ.get(KEEP_ENV):
            stack.callback(shutil.rmtree, run_dir, ignore_errors=True)
        broker = SecureKafka.create_secure(run_dir, users, start_timeout)
        stack.callback(_stop_or_warn, broker)
        broker.start()
        _await_group_coordinator(broker.bootstrap)
        yield broker
