"""Segments for simulated traffic: intents, locales and plans, and the billing incident.

An opt-in layer over :meth:`pipeline.sim.Simulator.run`: :func:`with_segments` wraps its
chunks, adds ``intent``, ``locale`` and ``plan`` to every routing event's ``segment``
(drawn from a hash of the ``request_id``, so the same run always gets the same values,
whatever the chunking), and, from ``onset_day`` on, lets a share of billing queries
hide a complex intent (fraud, reconciliation, a plan change) that the cheap tier gets
wrong: each such query routed cheap raises a support contact with probability
``contact_prob``, hours later. With ``onset_day=None`` nothing changes: the no-change run.

>>> from pipeline.sim import Simulator
>>> sim = Simulator("steady", rate=0.05, seed=1)
>>> chunks = list(with_segments(sim.run(days=0.2), SegmentMix(), start=sim.start))
>>> sorted(chunks[0].routing[0]["segment"])
['cohort', 'intent', 'locale', 'plan']
"""

from __future__ import annotations

import hashlib
import heapq
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from pipeline.schemas import SCHEMA_VERSION
from pipeline.sim.clock import iso
from pipeline.sim.simulator import Chunk

__all__ = ["SegmentMix", "with_segments"]

DAY = 86400.0


@dataclass(frozen=True, slots=True)
class SegmentMix:
    """The segment values' shares, and the billing incident (see the module docstring)."""

    intents: tuple[tuple[str, float], ...] = (
        ("billing", 0.2), ("account", 0.2), ("how_to", 0.3), ("technical", 0.2),
        ("feedback", 0.1))
    locales: tuple[tuple[str, float], ...] = (
        ("en-US", 0.5), ("en-GB", 0.15), ("de-DE", 0.15), ("fr-FR", 0.1), ("ja-JP", 0.1))
    plans: tuple[tuple[str, float], ...] = (("free", 0.5), ("pro", 0.35), ("enterprise", 0.15))
    onset_day: float | None = None
    hidden_share: float = 0.3
    contact_prob: float = 0.2
    contact_delay_h: float = 6.0
    salt: str = "segments"


def _uniforms(request_id: str, salt: str, n: int) -> list[float]:
    h = hashlib.blake2b(f"{salt}|{request_id}".encode(), digest_size=4 * n).digest()
    return [(int.from_bytes(h[4 * i: 4 * i + 4], "big") + 0.5) / 2**32 for i in range(n)]


def _pick(options: tuple[tuple[str, float], ...], u: float) -> str:
    total = sum(w for _, w in options)
    acc = 0.0
    for name, w in options:
        acc += w / total
        if u < acc:
            return name
    return options[-1][0]


def with_segments(chunks: Iterable[Chunk], mix: SegmentMix, *, start: float,
                  cheap_tier: str = "cheap") -> Iterator[Chunk]:
    """The simulator's chunks with segments and the incident's extra contacts.

    Each extra contact is emitted in the chunk where its own event time falls, and the
    chunk's feedback stays sorted by time.
    """
    onset = None if mix.onset_day is None else start + mix.onset_day * DAY
    waiting: list[tuple[float, str, dict[str, Any]]] = []
    for chunk in chunks:
        routing = []
        for ev in chunk.routing:
            rid = ev["request_id"]
            u = _uniforms(rid, mix.salt, 6)
            intent = _pick(mix.intents, u[0])
            seg = {**(ev.get("segment") or {}), "intent": intent,
                   "locale": _pick(mix.locales, u[1]), "plan": _pick(mix.plans, u[2])}
            routing.append({**ev, "segment": seg})
            if (onset is not None and intent == "billing" and ev["tier"] == cheap_tier
                    and u[3] < mix.hidden_share and u[4] < mix.contact_prob):
                ts = _epoch(ev["ts"])
                if ts >= onset:
                    at = ts + 60.0 - math.log(u[5]) * mix.contact_delay_h * 3600.0
                    heapq.heappush(waiting, (at, rid, {
                        "schema_version": SCHEMA_VERSION, "event_id": f"{rid}:seg-contact",
                        "request_id": rid, "router_id": ev["router_id"], "ts": iso(at),
                        "kind": "support_contact", "value": 1, "source": "support_desk"}))
        extra = []
        while waiting and waiting[0][0] < chunk.end:
            extra.append(heapq.heappop(waiting))
        feedback = chunk.feedback
        if extra:
            feedback = [e for _, _, e in heapq.merge(
                ((_epoch(f["ts"]), "", f) for f in chunk.feedback), extra,
                key=lambda t: (t[0], t[1]))]
        yield replace(chunk, routing=routing, feedback=feedback)


def _epoch(ts: str) -> float:
    return datetime.fromisoformat(ts).timestamp()
