"""The least-privilege Kafka ACLs of a tierwatch installation, as data.

Who may do what (topic names under the settings' prefix):

- the **worker** reads ``routing``, ``feedback`` and ``baselines`` with its consumer
  group (``app_id``), and is the only principal that writes ``control``, ``alerts``,
  ``review`` and ``dlq``; it uses no transactions, so it needs no transactional id;
- a **router** writes ``routing`` and reads ``control`` (its subscriber reads without a
  consumer group, so it needs no group);
- a **feedback producer** writes ``feedback``; a **baseline publisher** writes
  ``baselines``; a **watcher** (``tierwatch control watch``) reads ``control``;
- an **operator** running ``tierwatch topics create`` may create and describe topics
  under the prefix.

Reading implies describing in Kafka, and so does writing. The runbook's "Kafka
security" section lists the same set as ``kafka-acls.sh`` commands
(:func:`kafka_acls_commands`), and the security tests apply it to a broker with an
authorizer (:func:`to_kafka_python`).

>>> from pipeline.settings import Settings
>>> grants = least_privilege(Settings(), worker="w", routers=["r"])
>>> [g.operation + " " + g.name for g in grants if g.principal == "User:r"]
['READ tierwatch.control', 'WRITE tierwatch.routing']
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

WORKER_READS = ("routing", "feedback", "baselines")
WORKER_WRITES = ("control", "alerts", "review", "dlq")


@dataclass(frozen=True, order=True)
class Grant:
    """One ALLOW ACL: ``principal`` may ``operation`` on ``resource`` ``name`` (a prefix
    when ``prefixed``), from any host."""

    principal: str
    operation: str  # READ, WRITE, CREATE, DESCRIBE
    resource: str  # TOPIC, GROUP, CLUSTER
    name: str
    prefixed: bool = False


def _user(name: str) -> str:
    return name if ":" in name else f"User:{name}"


def least_privilege(settings: Any, *, worker: str, routers: Iterable[str] = (),
                    feedback_producers: Iterable[str] = (),
                    baseline_publishers: Iterable[str] = (), watchers: Iterable[str] = (),
                    operators: Iterable[str] = ()) -> list[Grant]:
    """Every grant the named principals need (``name`` means ``User:name``), sorted."""
    topic = settings.topic
    w = _user(worker)
    grants = {Grant(w, "READ", "TOPIC", topic(t)) for t in WORKER_READS}
    grants.add(Grant(w, "READ", "GROUP", settings.app_id))
    grants |= {Grant(w, "WRITE", "TOPIC", topic(t)) for t in WORKER_WRITES}
    for r in map(_user, routers):
        grants |= {Grant(r, "WRITE", "TOPIC", topic("routing")),
                   Grant(r, "READ", "TOPIC", topic("control"))}
    grants |= {Grant(_user(p), "WRITE", "TOPIC", topic("feedback"))
               for p in feedback_producers}
    grants |= {Grant(_user(p), "WRITE", "TOPIC", topic("baselines"))
               for p in baseline_publishers}
    grants |= {Grant(_user(p), "READ", "TOPIC", topic("control")) for p in watchers}
    prefix = f"{settings.topic_prefix}."
    for o in map(_user, operators):
        grants |= {Grant(o, "CREATE", "TOPIC", prefix, prefixed=True),
                   Grant(o, "DESCRIBE", "TOPIC", prefix, prefixed=True)}
    return sorted(grants)


def to_kafka_python(grants: Iterable[Grant]) -> list[Any]:
    """kafka-python ``ACL`` objects for ``KafkaAdminClient.create_acls``."""
    from kafka.admin import (
        ACL,
        ACLOperation,
        ACLPermissionType,
        ACLResourcePatternType,
        ResourcePattern,
        ResourceType,
    )

    return [ACL(principal=g.principal, host="*", operation=ACLOperation[g.operation],
                permission_type=ACLPermissionType.ALLOW,
                resource_pattern=ResourcePattern(
                    ResourceType[g.resource], g.name,
                    ACLResourcePatternType.PREFIXED if g.prefixed
                    else ACLResourcePatternType.LITERAL))
            for g in grants]


_OPERATION = {"READ": "Read", "WRITE": "Write", "CREATE": "Create", "DESCRIBE": "Describe"}


def kafka_acls_commands(grants: Iterable[Grant], bootstrap: str = "$BOOTSTRAP",
                        command_config: str = "admin.properties") -> list[str]:
    """The grants as ``kafka-acls.sh --add`` commands, one per principal, operation and
    pattern type (a command may name several resources).

    >>> g = [Grant("User:r", "WRITE", "TOPIC", "t.routing")]
    >>> kafka_acls_commands(g, "b:9092")[0].split(" --add ")[1]
    '--allow-principal User:r --operation Write --topic t.routing'
    """
    by_kind: dict[tuple[str, str, bool], list[Grant]] = {}
    for g in sorted(grants):
        by_kind.setdefault((g.principal, g.operation, g.prefixed), []).append(g)
    commands = []
    for (principal, operation, prefixed), group in by_kind.items():
        resources = " ".join(f"--{g.resource.lower()} {g.name}" for g in group)
        pattern = " --resource-pattern-type prefixed" if prefixed else ""
        commands.append(f"kafka-acls.sh --bootstrap-server {bootstrap} --command-config "
                        f"{command_config} --add --allow-principal {principal} "
                        f"--operation {_OPERATION[operation]}{pattern} {resources}")
    return commands
