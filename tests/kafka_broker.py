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
        )
        # A wait that fails has already printed the broker log's tail into the error.
        self._run(
            "wait", "--timeout", str(int(self.start_timeout)), timeout=self.start_timeout + 30
        )

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
