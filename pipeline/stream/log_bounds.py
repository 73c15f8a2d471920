"""Where each input partition's log starts and ends, against where the worker reads from.

The worker seeks each input partition to where its state stops. Kafka may no longer
hold that offset, and its consumer then resets to the log's beginning without a word:

- **Below the log start** (retention deleted records before any tierwatch state counted
  them: a worker down, or a standby rebuilding, for longer than the topic keeps
  records): the records in between are gone. The state goes on without them, so the
  worker says how many were lost, per partition, and counts them.
- **Beyond the log end** (the topic was deleted and recreated, the worker points at
  another cluster, or the broker lost acknowledged records): the state counts records
  this log does not have, and every new record below the state's offset would be taken
  for one already counted. The state does not belong to these topics.

A partition the state has never read is read from its beginning. That loses nothing
unless another worker of the group had read it (the group has a committed offset): a
standby rebuilding the active worker's state from scratch lacks whatever retention has
deleted since. A new deployment on a topic whose oldest records are gone has no earlier
result to differ from, and counts nothing as lost.

>>> bounds = LogBounds(first={"r0": 120, "r1": 0}, end={"r0": 500, "r1": 40})
>>> bounds.lost({"r0": 100, "r1": None}, committed={"r1": 10})
{'r0': 20}
>>> bounds.lost({"r0": None, "r1": None}, committed={"r0": 300})
{'r0': 120}
>>> bounds.ahead({"r0": 100, "r1": 55})
{'r1': (55, 40)}
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["LogBounds"]

P = TypeVar("P", bound=Hashable)


@dataclass(frozen=True, slots=True)
class LogBounds(Generic[P]):
    """Each partition's first offset still held (``first``) and next offset (``end``)."""

    first: Mapping[P, int]
    end: Mapping[P, int]

    def lost(self, reads_from: Mapping[P, int | None],
             committed: Mapping[P, int | None]) -> dict[P, int]:
        """Records the state should count next but the log no longer holds, per partition.

        ``reads_from``: where the state stops (``None``: it has not read the partition);
        ``committed``: the group's committed offsets (``None`` or absent: none).
        """
        out: dict[P, int] = {}
        for p, offset in reads_from.items():
            first = self.first.get(p)
            if first is None:
                continue
            if offset is None:  # rebuilding: lost only what another worker had read
                offset = 0 if committed.get(p) else None
            if offset is not None and first > offset:
                out[p] = first - offset
        return out

    def ahead(self, reads_from: Mapping[P, int | None]) -> dict[P, tuple[int, int]]:
        """Partitions whose state has read past the log's end: ``(state's offset, end)``."""
        return {p: (offset, end) for p, offset in reads_from.items()
                if offset is not None and (end := self.end.get(p)) is not None
                and offset > end}
