"""A consumer-group assignor that gives every input partition to one worker.

The monitor needs every partition of every input topic (the two-stage scale-out that
would let workers share them does not exist yet). faust's assignor spreads partitions
over the members of the group, so a second worker in one group would leave each with
part of every router. This one runs faust's assignment, then hands everything to a
single member, the **active** worker; the others get nothing and wait as **standbys**.

The active member is sticky: the one that already held the most partitions keeps them,
so a standby joining never interrupts the active worker (one rebalance, same
assignment). When the active worker dies, its session times out and the group's next
assignment gives everything to a standby. Ties (a group starting together) go to the
smallest member id, so every member computes the same answer.

>>> from faust.assignor.client_assignment import ClientAssignment as CA
>>> new = {"b": CA(actives={"t": [1]}, standbys={}), "a": CA(actives={"t": [0]}, standbys={})}
>>> one = one_active(new, {"a": CA(actives={}, standbys={}),
...                        "b": CA(actives={"t": [0, 1]}, standbys={})})
>>> one["b"].actives, one["a"].actives
({'t': [0, 1]}, {})
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from typing import Any

from faust.assignor import PartitionAssignor
from faust.assignor.client_assignment import ClientAssignment, ClientMetadata

__all__ = ["OneActiveAssignor", "one_active"]


def _count(assignment: ClientAssignment | None) -> int:
    if assignment is None:
        return 0
    return sum(len(parts) for parts in assignment.actives.values())


def one_active(assignments: Mapping[str, ClientAssignment],
               previous: Mapping[str, ClientAssignment]) -> dict[str, ClientAssignment]:
    """All active partitions of ``assignments`` to one member: the one that held the most
    in ``previous`` (ties: the smallest member id); the others get none."""
    if not assignments:
        return {}
    owner = min(assignments, key=lambda m: (-_count(previous.get(m)), m))
    actives: dict[str, set[int]] = {}
    for assignment in assignments.values():
        for topic, parts in assignment.actives.items():
            actives.setdefault(topic, set()).update(parts)
    return {m: ClientAssignment(
        actives={t: sorted(p) for t, p in sorted(actives.items())} if m == owner else {},
        standbys={}) for m in assignments}


class OneActiveAssignor(PartitionAssignor):
    """faust's assignor, with every partition moved to one member (see the module)."""

    _previous: dict[str, ClientAssignment]

    def _update_member_urls(self, clients_metadata: MutableMapping[str, ClientMetadata]) -> None:
        # the one hook in faust's assignment that sees every member's metadata, which
        # carries the assignment it held before this rebalance
        super()._update_member_urls(clients_metadata)
        self._previous = {m: md.assignment for m, md in clients_metadata.items()}

    def _protocol_assignments(self, assignments: Mapping[str, ClientAssignment],
                              *args: Any) -> Any:
        merged = one_active(assignments, getattr(self, "_previous", {}))
        return super()._protocol_assignments(merged, *args)
