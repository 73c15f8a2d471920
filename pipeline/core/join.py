"""Event-time join of feedback to routing decisions by ``request_id``.

Feedback (thumbs, ratings, reviews, support contacts, ...) usually does not
know which tier served the request; the routing decision does.  The
:class:`FeedbackJoin` keeps a compact record of every routing decision for
``ttl_seconds`` of event time and attaches it to the feedback that refers to
it, whichever of the two arrives first:

* feedback after its decision is joined at once;
* feedback before its decision waits in a *pending* buffer and is released
  by :meth:`FeedbackJoin.add_decision`;
* feedback that already carries ``tier`` and ``score`` needs no join and
  passes straight through (it is *not* enriched from a stored decision, so
  the output never depends on arrival order);
* the same feedback ``event_id`` counts once while it is within the TTL;
* :meth:`FeedbackJoin.expire` drops decisions, and returns pending feedback,
  whose event time is older than ``now - ttl_seconds``; the caller
  dead-letters that feedback with reason ``"unjoined after TTL"``.

Expiry is driven by binary heaps ordered by ``(ts, id)``, so one call costs
``O(k log n)`` for ``k`` expired items and never scans the whole state.

Memory
------
The decisions and the seen feedback ids live in a
:class:`~pipeline.core.decision_store.DecisionStore`: in memory by default
(:class:`~pipeline.core.decision_store.MemoryDecisionStore`), or on disk in the worker
(:class:`pipeline.store.rocks.RocksDecisionStore`, about 110-140 bytes of disk and no
memory per decision), for a join TTL of 90 to 180 days. Both behave identically.

In memory, a decision is one :class:`DecisionRecord` tuple (10 slots), three floats
(``ts``, ``score``, ``propensity``; a propensity of exactly 1.0 shares one
float object), one dict slot and one heap slot; ``router_id`` and ``tier``
strings are interned per join, so a million decisions share a handful of
them.  The decision's ``segment`` is one more slot (8 bytes): equal segments share one
interned tuple (up to 65,536 distinct ones per join), so a contact that arrives hours
later is counted against its request's segment values at no further cost per decision.
Measured with :mod:`tracemalloc` (``tests/unit/test_join.py``; 284 bytes
at one million live decisions): about **290 bytes per decision** including a
36-character ``request_id`` string, i.e. roughly 290 MB per million live
decisions (a 30-day TTL at 1M decisions/day holds 30M decisions: ~9 GB,
spread over the stage-1 partitions). Pending feedback (waiting for its decision) stays
in memory with either store.

Partitioning
------------
Stage 1 is partitioned by ``request_id``: a decision, its feedback and its
duplicates all land in the same partition.  States of partitions with
disjoint ``request_id`` sets merge exactly (``+`` / :meth:`FeedbackJoin.merge`):
the merged state equals the state of one join that saw both streams.
"""

from __future__ import annotations

import base64
import heapq
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple, Self

from pipeline.core.decision_store import (
    _EXPLORATION,
    _IN_BAND,
    DecisionRecord,
    DecisionStore,
    MemoryDecisionStore,
)
from pipeline.core.mergeable import Mergeable

__all__ = [
    "UNJOINED_REASON",
    "DecisionRecord",
    "DecisionStore",
    "Feedback",
    "FeedbackJoin",
    "JoinedFeedback",
    "Origin",
]

#: Dead-letter reason for feedback whose decision never arrived within the TTL.
UNJOINED_REASON = "no routing decision with this request_id arrived within the join TTL"

_ONE = 1.0  # shared float object for the (very common) propensity of exactly 1

_MAX_SEGMENTS = 65536  # distinct segment tuples interned per join


class Origin(NamedTuple):
    """Where a feedback event came from, kept while it waits for its decision, so that
    its dead letter, if the decision never comes, carries its original bytes and
    coordinates: the event's own bytes (not its whole batch) and about 100 bytes more."""

    topic: str
    partition: int | None
    offset: int | None
    position: int | None  #: the event's index in its batch (None: a single event)
    key: bytes | None
    raw: bytes


class Feedback(NamedTuple):
    """A feedback event as the join sees it (pending or expired).

    Compares by ``(ts, event_id)`` in the pending heap (event ids are unique there).
    """

    ts: float
    event_id: str
    request_id: str
    kind: str
    value: float
    router_id: str | None = None
    tier: str | None = None
    score: float | None = None
    weight: float | None = None
    source: str | None = None
    origin: Origin | None = None


class JoinedFeedback(NamedTuple):
    """Feedback with the routing context it needs for per-tier statistics.

    ``decision_ts`` is ``None`` (and ``propensity``, ``in_band``,
    ``exploration`` are ``None``, ``band`` is -1) when the feedback carried
    its own ``tier`` and ``score`` and passed through without a join.
    """

    event_id: str
    request_id: str
    router_id: str | None
    kind: str
    value: float
    ts: float
    tier: str
    score: float
    weight: float | None
    source: str | None
    propensity: float | None
    band: int
    decision_ts: float | None
    in_band: bool | None
    exploration: bool | None
    segment: tuple[tuple[str, str], ...] | None = None

    @property
    def joined(self) -> bool:
        """True when the routing context came from a stored decision."""
        return self.decision_ts is not None


_COUNTERS = (
    "decisions",
    "duplicate_decisions",
    "feedback",
    "duplicate_feedback",
    "passthrough",
    "joined",
    "pending",
    "expired_decisions",
    "expired_feedback",
)


def _origin_to_list(o: Origin | None) -> list[Any] | None:
    if o is None:
        return None
    key = None if o.key is None else base64.b64encode(o.key).decode("ascii")
    return [o.topic, o.partition, o.offset, o.position, key,
            base64.b64encode(o.raw).decode("ascii")]


def _origin_from_list(row: list[Any] | None) -> Origin | None:
    if row is None:
        return None
    topic, partition, offset, index, key, raw = row
    return Origin(topic, partition, offset, index,
                  None if key is None else base64.b64decode(key), base64.b64decode(raw))
def _decision_row(r: DecisionRecord) -> list[Any]:
    """A decision as a JSON row; the segment and subject columns only when there are
    any, so states without them serialize as before."""
    row: list[Any] = list(r[:8])
    if r.segment is not None or r.subject is not None:
        row.append(None if r.segment is None else [list(p) for p in r.segment])
    if r.subject is not None:
        row.append(base64.b64encode(r.subject).decode("ascii"))
    return row


def _join(fb: Feedback, d: DecisionRecord) -> JoinedFeedback:
    return JoinedFeedback(
        event_id=fb.event_id,
        request_id=fb.request_id,
        router_id=fb.router_id if fb.router_id is not None else d.router_id,
        kind=fb.kind,
        value=fb.value,
        ts=fb.ts,
        tier=d.tier,
        score=d.score,
        weight=fb.weight,
        source=fb.source,
        propensity=d.propensity,
        band=d.band,
        decision_ts=d.ts,
        in_band=d.in_band,
        exploration=d.exploration,
        segment=d.segment,
    )


class FeedbackJoin(Mergeable):
    """Join feedback to routing decisions by ``request_id`` in event time.

    Parameters
    ----------
    ttl_seconds
        How long (event time) a decision is kept for late feedback, how long
        feedback waits for its decision, and how long an ``event_id`` is
        remembered for de-duplication.

    Examples
    --------
    >>> j = FeedbackJoin(ttl_seconds=3600)
    >>> j.add_feedback("f1", "r1", "thumbs", 0.0, ts=110.0)  # before its decision
    >>> [f.tier for f in j.add_decision("r1", "router-a", "cheap", 0.91, ts=100.0)]
    ['cheap']
    >>> j.add_feedback("f2", "r1", "rating", 5.0, ts=120.0).tier  # after: joined now
    'cheap'
    >>> j.add_feedback("f2", "r1", "rating", 5.0, ts=120.0) is None  # duplicate
    True
    >>> j.add_feedback("f3", "r9", "review", 1.0, ts=130.0, tier="capable", score=0.2).joined
    False
    >>> j.add_feedback("f4", "r404", "thumbs", 1.0, ts=140.0)  # waits
    >>> [(f.event_id, f.request_id) for f in j.expire(now=140.0 + 3601.0)]
    [('f4', 'r404')]
    >>> len(j), j.n_pending
    (0, 0)
    """

    def __init__(self, ttl_seconds: float = 30 * 86400.0,
                 store: DecisionStore | None = None) -> None:
        if not (ttl_seconds > 0 and math.isfinite(ttl_seconds)):
            raise ValueError(f"ttl_seconds must be a positive finite number, got {ttl_seconds!r}")
        self.ttl_seconds = float(ttl_seconds)
        #: decisions and seen feedback ids: in memory by default, on disk in the worker
        self.store: DecisionStore = MemoryDecisionStore() if store is None else store
        self._pending: dict[str, list[Feedback]] = {}
        self._pending_heap: list[Feedback] = []  # lazy deletion: released items stay until ts
        self._watermark: float | None = None
        self._counts: dict[str, int] = dict.fromkeys(_COUNTERS, 0)
        self._strings: dict[str, str] = {}
        self._segments: dict[tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]] = {}

    # ------------------------------------------------------------------ helpers
    def _intern(self, s: str) -> str:
        return self._strings.setdefault(s, s)

    def intern_segment(self, segment: Mapping[str, str] | Iterable[Iterable[str]] | None,
                       ) -> tuple[tuple[str, str], ...] | None:
        """A segment as the join stores it: sorted pairs, one shared tuple per distinct
        segment; the table stops growing at :data:`_MAX_SEGMENTS` (a per-user value
        would otherwise grow it without bound)."""
        if not segment:
            return None
        items = segment.items() if isinstance(segment, Mapping) else segment
        seg = tuple(sorted((str(a), str(b)) for a, b in items))
        got = self._segments.get(seg)
        if got is not None:
            return got
        if len(self._segments) < _MAX_SEGMENTS:
            self._segments[seg] = seg
        return seg

    # ------------------------------------------------------------------ updates
    def add_decision(
        self,
        request_id: str,
        router_id: str,
        tier: str,
        score: float,
        ts: float,
        *,
        propensity: float = 1.0,
        band: int = -1,
        in_band: bool = False,
        exploration: bool = False,
        segment: Mapping[str, str] | None = None,
        subject: bytes | None = None,
    ) -> list[JoinedFeedback]:
        """Store a routing decision; return the pending feedback it releases.

        Parameters
        ----------
        request_id, router_id, tier, score, ts
            From the RoutingEvent (``ts`` in epoch seconds, event time).
        propensity
            Probability the request went to ``tier`` given its score, in (0, 1].
        band
            Index of the score band (baseline-quantile bin), -1 if unknown.
        in_band, exploration
            Whether the score was in the uncertain band / the route was an
            exploration coin flip.
        segment
            The event's ``segment``: feedback that arrives hours later is
            counted against the decision's segment values.
        subject
            Room for a pseudonymous subject key (a hash of ``subject_id``), stored with
            the decision; ``None`` when the router sends none.

        Returns
        -------
        list of JoinedFeedback
            Feedback that was waiting for this decision, ordered by
            ``(ts, event_id)``.  A repeated ``request_id`` (e.g. a redelivered
            routing event) keeps the first record and returns ``[]``.
        """
        if not 0.0 < propensity <= 1.0:
            raise ValueError(
                f"propensity must be in (0, 1], got {propensity!r}: a zero propensity "
                "would give an infinite inverse-propensity weight"
            )
        if request_id in self.store:
            self._counts["duplicate_decisions"] += 1
            return []
        flags = (_IN_BAND if in_band else 0) | (_EXPLORATION if exploration else 0)
        rec = DecisionRecord(
            float(ts),
            request_id,
            self._intern(router_id),
            self._intern(tier),
            float(score),
            _ONE if propensity == 1.0 else float(propensity),
            int(band),
            flags,
            self.intern_segment(segment),
            subject,
        )
        self.store.put(rec)
        self._counts["decisions"] += 1
        waiting = self._pending.pop(request_id, None)
        if not waiting:
            return []
        waiting.sort()
        self._counts["joined"] += len(waiting)
        self._counts["pending"] -= len(waiting)
        return [_join(fb, rec) for fb in waiting]

    def add_feedback(
        self,
        event_id: str,
        request_id: str,
        kind: str,
        value: float,
        ts: float,
        *,
        router_id: str | None = None,
        tier: str | None = None,
        score: float | None = None,
        weight: float | None = None,
        source: str | None = None,
        origin: Origin | Callable[[], Origin] | None = None,
    ) -> JoinedFeedback | None:
        """Join one feedback event.

        ``origin`` is kept with the feedback only while it waits for its decision; given
        as a function, it is called only then.

        Returns
        -------
        JoinedFeedback or None
            The joined (or passed-through) feedback, or ``None`` when it is a
            duplicate (see :attr:`stats`) or now waits for its decision
            (see :attr:`n_pending`).
        """
        if self.store.seen(event_id) is not None:
            self._counts["duplicate_feedback"] += 1
            return None
        ts = float(ts)
        self.store.add_seen(event_id, ts)
        self._counts["feedback"] += 1
        fb = Feedback(
            ts,
            event_id,
            request_id,
            self._intern(kind),
            float(value),
            None if router_id is None else self._intern(router_id),
            None if tier is None else self._intern(tier),
            None if score is None else float(score),
            None if weight is None else float(weight),
            source,
        )
        if tier is not None and score is not None:
            self._counts["passthrough"] += 1
            return JoinedFeedback(
                event_id=event_id,
                request_id=request_id,
                router_id=fb.router_id,
                kind=fb.kind,
                value=fb.value,
                ts=ts,
                tier=fb.tier or tier,
                score=float(score),
                weight=fb.weight,
                source=source,
                propensity=None,
                band=-1,
                decision_ts=None,
                in_band=None,
                exploration=None,
            )
        rec = self.store.get(request_id)
        if rec is not None:
            self._counts["joined"] += 1
            return _join(fb, rec)
        if origin is not None:
            fb = fb._replace(origin=origin() if callable(origin) else origin)
        self._pending.setdefault(request_id, []).append(fb)
        heapq.heappush(self._pending_heap, fb)
        self._counts["pending"] += 1
        return None

    def expire(self, now: float) -> list[Feedback]:
        """Drop state older than ``now - ttl_seconds`` (event time).

        Parameters
        ----------
        now
            The event-time watermark.  A ``now`` earlier than a previous one
            changes nothing.

        Returns
        -------
        list of Feedback
            Pending feedback that never found its decision, ordered by
            ``(ts, event_id)``; dead-letter it with :data:`UNJOINED_REASON`.
        """
        if self._watermark is not None and now <= self._watermark:
            return []
        self._watermark = float(now)
        cutoff = now - self.ttl_seconds
        self._counts["expired_decisions"] += self.store.pop_expired(cutoff)
        expired: list[Feedback] = []
        ph = self._pending_heap
        while ph and ph[0].ts < cutoff:
            fb = heapq.heappop(ph)
            waiting = self._pending.get(fb.request_id)
            if waiting is None:
                continue  # released by its decision earlier
            for i, x in enumerate(waiting):
                if x is fb:
                    del waiting[i]
                    break
            else:
                continue
            if not waiting:
                del self._pending[fb.request_id]
            expired.append(fb)
        self._counts["pending"] -= len(expired)
        self._counts["expired_feedback"] += len(expired)
        return expired

    # ------------------------------------------------------------------ reads
    def __len__(self) -> int:
        """Number of stored decisions."""
        return len(self.store)

    def __contains__(self, request_id: object) -> bool:
        return request_id in self.store

    def get(self, request_id: str) -> DecisionRecord | None:
        """The stored decision for ``request_id``, if any."""
        return self.store.get(request_id)

    def seen(self, event_id: str) -> bool:
        """Whether feedback ``event_id`` was seen within the TTL."""
        return self.store.seen(event_id) is not None

    @property
    def duplicates(self) -> int:
        """Feedback events refused because their ``event_id`` was seen within the TTL."""
        return self._counts["duplicate_feedback"]

    @property
    def n_pending(self) -> int:
        """Feedback events waiting for their decision."""
        return self._counts["pending"]

    @property
    def pending(self) -> list[Feedback]:
        """Waiting feedback, ordered by ``(ts, event_id)``."""
        return sorted(fb for fbs in self._pending.values() for fb in fbs)

    @property
    def watermark(self) -> float | None:
        """The latest ``now`` passed to :meth:`expire`."""
        return self._watermark

    @property
    def stats(self) -> dict[str, int]:
        """Counters: decisions, duplicates, joined, passthrough, pending, expired."""
        return dict(self._counts)

    # ------------------------------------------------------------------ merge
    def merge(self, other: FeedbackJoin) -> Self:
        """Fold in the state of a partition with a disjoint ``request_id`` set.

        Raises
        ------
        ValueError
            If the TTLs differ, or a ``request_id`` has conflicting decisions,
            or a decision on one side and pending feedback on the other: both
            mean the partitions were not split by ``request_id``, and merging
            would silently lose or double joins.
        """
        if other.ttl_seconds != self.ttl_seconds:
            raise ValueError("cannot merge joins with different ttl_seconds")
        theirs = list(other.store.records())
        for rec in theirs:
            rid = rec.request_id
            mine = self.store.get(rid)
            if mine is not None and mine != rec:
                raise ValueError(f"request_id {rid!r} has different decisions in both partitions")
            if rid in self._pending:
                raise ValueError(f"request_id {rid!r}: decision and pending feedback are split")
        for rid in other._pending:
            if rid in self.store:
                raise ValueError(f"request_id {rid!r}: decision and pending feedback are split")
        for rec in theirs:
            if rec.request_id not in self.store:
                self.store.put(rec._replace(
                    router_id=self._intern(rec.router_id), tier=self._intern(rec.tier),
                    segment=self.intern_segment(rec.segment)))
        for rid, fbs in other._pending.items():
            mine_fb = self._pending.setdefault(rid, [])
            have = {fb.event_id for fb in mine_fb}
            for fb in fbs:
                if fb.event_id not in have:
                    mine_fb.append(fb)
                    self._pending_heap.append(fb)
        heapq.heapify(self._pending_heap)
        self._counts["pending"] = sum(len(v) for v in self._pending.values())
        for eid, ts in other.store.seen_items():
            mine_ts = self.store.seen(eid)
            if mine_ts is None or mine_ts < ts:
                self.store.add_seen(eid, ts)
        for k in _COUNTERS:
            if k != "pending":
                self._counts[k] += other._counts[k]
        if other._watermark is not None:
            self._watermark = (
                other._watermark
                if self._watermark is None
                else max(self._watermark, other._watermark)
            )
        return self

    # ------------------------------------------------------------------ serde
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able state (lists sorted, so equal states serialize equally)."""
        return {
            "ttl_seconds": self.ttl_seconds,
            "watermark": self._watermark,
            "decisions": [_decision_row(r) for r in self.store.records()],
            "pending": [[*f[:-1], _origin_to_list(f.origin)] for f in self.pending],
            "seen": [[eid, ts] for eid, ts in self.store.seen_items()],
            "counts": dict(self._counts),
        }

    @classmethod
    def from_dict(cls, state: Mapping[str, Any],
                  store: DecisionStore | None = None) -> FeedbackJoin:
        """Rebuild a join from :meth:`to_dict` output (into ``store``, empty, if given)."""
        j = cls(ttl_seconds=float(state["ttl_seconds"]), store=store)
        wm = state.get("watermark")
        j._watermark = None if wm is None else float(wm)
        decisions: Iterable[list[Any]] = state["decisions"]
        for ts, rid, router, tier, score, prop, band, flags, *more in decisions:
            rec = DecisionRecord(
                float(ts),
                rid,
                j._intern(router),
                j._intern(tier),
                float(score),
                _ONE if prop == 1.0 else float(prop),
                int(band),
                int(flags),
                j.intern_segment(more[0] if more else None),
                base64.b64decode(more[1]) if len(more) > 1 else None,
            )
            j.store.put(rec)
        for row in state["pending"]:
            ts, eid, rid, kind, value, router, tier, score, weight, source = row[:10]
            fb = Feedback(
                float(ts), eid, rid, kind, float(value), router, tier,
                None if score is None else float(score),
                None if weight is None else float(weight),
                source, _origin_from_list(row[10] if len(row) > 10 else None),
            )  # fmt: skip
            j._pending.setdefault(rid, []).append(fb)
            j._pending_heap.append(fb)
        heapq.heapify(j._pending_heap)
        for eid, ts in state["seen"]:
            j.store.add_seen(eid, float(ts))
        counts = state.get("counts", {})
        j._counts = {k: int(counts.get(k, 0)) for k in _COUNTERS}
        return j

    def __repr__(self) -> str:
        return (
            f"FeedbackJoin(ttl_seconds={self.ttl_seconds:g}, decisions={len(self)}, "
            f"pending={self.n_pending})"
        )
