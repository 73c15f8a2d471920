"""Where the join keeps its routing decisions and the feedback ids it has seen.

:class:`~pipeline.core.join.FeedbackJoin` keeps, for ``ttl_seconds`` of event time, one
compact :class:`DecisionRecord` per routing decision (to join late feedback to it) and
the event time of every feedback ``event_id`` (to count each once). This module says
what such a store must do (:class:`DecisionStore`) and gives the in-memory one
(:class:`MemoryDecisionStore`): dicts with expiry heaps, for tests, the replay and short
TTLs. The on-disk one, for a 90 to 180-day horizon in bounded memory, lives in the shell
(:mod:`pipeline.store.rocks`) since the core does no I/O; both behave identically, which
``tests/unit/test_decision_store.py`` checks on the same operation sequences.

Expiry is in event time and exact: ``pop_expired(cutoff)`` removes every record whose
``ts`` is below ``cutoff``, and nothing else, so a worker and a replay that call it at
the same event times hold the same records.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator, Sequence
from operator import attrgetter
from typing import NamedTuple, Protocol, runtime_checkable

__all__ = ["DecisionRecord", "DecisionStore", "MemoryDecisionStore", "Segment"]

#: a decision's ``segment`` as a sorted tuple of (key, value) pairs
Segment = tuple[tuple[str, str], ...]

_IN_BAND = 1
_EXPLORATION = 2


class DecisionRecord(NamedTuple):
    """The compact part of a routing decision that feedback needs.

    Field order matters: records are stored in an expiry heap and compare by
    ``(ts, request_id)``.
    """

    ts: float
    request_id: str
    router_id: str
    tier: str
    score: float
    propensity: float
    band: int
    flags: int
    #: the decision's ``segment`` as a sorted tuple of pairs, interned per join (equal
    #: segments share one tuple), or ``None``: 8 bytes per decision without segments
    segment: Segment | None = None
    #: room for a pseudonymous subject key (a hash of the router's ``subject_id``, never
    #: the id itself), for outcomes joined per subject; ``None`` when not sent
    subject: bytes | None = None

    @property
    def in_band(self) -> bool:
        """Whether the score was inside the uncertain band."""
        return bool(self.flags & _IN_BAND)

    @property
    def exploration(self) -> bool:
        """Whether the request was routed by the exploration coin flip."""
        return bool(self.flags & _EXPLORATION)


@runtime_checkable
class DecisionStore(Protocol):
    """Decisions by ``request_id`` and seen feedback ids by ``event_id``, with expiry.

    A ``request_id`` holds one decision at a time: the join checks ``in`` before
    :meth:`put`. Counts (``len``, :attr:`n_seen`) are exact.
    """

    def get(self, request_id: str) -> DecisionRecord | None:
        """The stored decision, or ``None``."""
        ...

    def __contains__(self, request_id: object) -> bool: ...

    def contains_any(self, request_ids: Sequence[str]) -> bool:
        """Whether any of ``request_ids`` holds a decision (one lookup for a batch)."""
        ...

    def memory(self) -> dict[str, int]:
        """Bytes held outside Python's objects, by part (a disk store's caches); ``{}``
        when everything is in Python objects."""
        ...

    def __len__(self) -> int:
        """Stored decisions."""
        ...

    def put(self, record: DecisionRecord) -> None:
        """Store a decision whose ``request_id`` is not stored."""
        ...

    def put_many(self, records: Sequence[DecisionRecord]) -> None:
        """Store records of new request ids at once (the columnar path's bulk insert)."""
        ...

    def pop_expired(self, cutoff: float) -> int:
        """Remove decisions and seen ids with ``ts < cutoff``; returns the decisions removed."""
        ...

    def records(self) -> Iterator[DecisionRecord]:
        """Every stored decision, ordered by ``(ts, request_id)``."""
        ...

    def seen(self, event_id: str) -> float | None:
        """The event time of feedback ``event_id``, if it was seen within the TTL."""
        ...

    def add_seen(self, event_id: str, ts: float) -> None:
        """Remember feedback ``event_id`` at event time ``ts`` (a later ``ts`` replaces)."""
        ...

    @property
    def n_seen(self) -> int:
        """Remembered feedback ids."""
        ...

    def seen_items(self) -> Iterator[tuple[str, float]]:
        """Every remembered ``(event_id, ts)``, ordered by ``event_id``."""
        ...


class MemoryDecisionStore:
    """A :class:`DecisionStore` in dicts, expired through binary heaps.

    Expiry costs ``O(k log n)`` for ``k`` expired items and never scans the whole state.

    >>> s = MemoryDecisionStore()
    >>> s.put(DecisionRecord(100.0, "r1", "router-a", "cheap", 0.9, 1.0, 3, 0))
    >>> s.add_seen("f1", 150.0)
    >>> ("r1" in s, s.get("r1").tier, s.seen("f1"))
    (True, 'cheap', 150.0)
    >>> s.pop_expired(120.0), len(s), s.n_seen
    (1, 0, 1)
    """

    def __init__(self) -> None:
        self._decisions: dict[str, DecisionRecord] = {}
        self._heap: list[DecisionRecord] = []
        self._seen: dict[str, float] = {}
        self._seen_heap: list[tuple[float, str]] = []

    def get(self, request_id: str) -> DecisionRecord | None:
        return self._decisions.get(request_id)

    def __contains__(self, request_id: object) -> bool:
        return request_id in self._decisions

    def contains_any(self, request_ids: Sequence[str]) -> bool:
        # dict_keys.isdisjoint(list) would walk the whole dict: this is O(batch)
        return any(map(self._decisions.__contains__, request_ids))

    def memory(self) -> dict[str, int]:
        return {}

    def __len__(self) -> int:
        return len(self._decisions)

    def put(self, record: DecisionRecord) -> None:
        self._decisions[record.request_id] = record
        heapq.heappush(self._heap, record)

    def put_many(self, records: Sequence[DecisionRecord]) -> None:
        self._decisions.update(zip(map(attrgetter("request_id"), records), records,
                                   strict=True))
        push, heap = heapq.heappush, self._heap
        for rec in records:
            push(heap, rec)

    def pop_expired(self, cutoff: float) -> int:
        n = 0
        heap = self._heap
        while heap and heap[0].ts < cutoff:
            rec = heapq.heappop(heap)
            del self._decisions[rec.request_id]
            n += 1
        sh = self._seen_heap
        while sh and sh[0][0] < cutoff:
            ts, event_id = heapq.heappop(sh)
            if self._seen.get(event_id) == ts:  # not replaced by a later ts (a merge)
                del self._seen[event_id]
        return n

    def records(self) -> Iterator[DecisionRecord]:
        return iter(sorted(self._decisions.values()))

    def seen(self, event_id: str) -> float | None:
        return self._seen.get(event_id)

    def add_seen(self, event_id: str, ts: float) -> None:
        self._seen[event_id] = ts
        heapq.heappush(self._seen_heap, (ts, event_id))

    @property
    def n_seen(self) -> int:
        return len(self._seen)

    def seen_items(self) -> Iterator[tuple[str, float]]:
        return iter(sorted(self._seen.items()))
