"""Outcomes months later for simulated traffic: a 90-day survey and 6-month retention.

An opt-in layer over :func:`pipeline.sim.segments.with_segments` (it reads the same
segment draws): every routing event gets a pseudonymous ``subject_id`` (one of
``subjects``, drawn from a hash of the ``request_id``), and

- a share ``survey_share`` of requests is surveyed ``survey_days`` later (uniform in the
  range): a bad survey (value below 0.5) with probability ``bad_survey`` or, for a
  **wrong cheap answer**, ``bad_survey_wrong``;
- each subject's ``retention`` is reported ``retention_days`` after its first
  interaction: churned (0) with probability ``churn`` or, once any of its interactions
  got a wrong cheap answer, ``churn_exposed``.

A wrong cheap answer is the segment incident's: a billing query hiding a complex intent,
routed cheap, from the mix's ``onset_day`` on. With ``onset_day=None`` nothing changes.

>>> from pipeline.sim import Simulator
>>> from pipeline.sim.segments import SegmentMix, with_segments
>>> sim = Simulator("steady", rate=0.05, seed=1)
>>> chunks = with_segments(sim.run(days=0.2), SegmentMix(), start=sim.start)
>>> out = list(with_delayed_outcomes(chunks, DelayedMix(), SegmentMix(), start=sim.start))
>>> out[0].routing[0]["subject_id"].startswith("subj-")
True
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from pipeline.schemas import SCHEMA_VERSION
from pipeline.sim.clock import iso
from pipeline.sim.segments import SegmentMix, _epoch, _pick, _uniforms
from pipeline.sim.simulator import Chunk

__all__ = ["DelayedMix", "with_delayed_outcomes"]

DAY = 86400.0


@dataclass(frozen=True, slots=True)
class DelayedMix:
    """The delayed outcomes' rates and delays (see the module docstring)."""

    subjects: int = 20_000
    survey_share: float = 0.3
    survey_days: tuple[float, float] = (84.0, 96.0)
    bad_survey: float = 0.1
    bad_survey_wrong: float = 0.8
    retention_days: float = 180.0
    churn: float = 0.1
    churn_exposed: float = 0.35
    salt: str = "delayed"


def subject_of(request_id: str, mix: DelayedMix) -> str:
    """The request's (pseudonymous) subject: a hash, as a router would send it."""
    u = _uniforms(request_id, mix.salt + "/subject", 1)[0]
    index = int(u * mix.subjects)
    return "subj-" + hashlib.blake2b(f"{mix.salt}|{index}".encode(), digest_size=8).hexdigest()


def with_delayed_outcomes(chunks: Iterable[Chunk], mix: DelayedMix, segments: SegmentMix, *,
                          start: float, cheap_tier: str = "cheap") -> Iterator[Chunk]:
    """The chunks with subjects, and the surveys and retention outcomes as they fall due.

    Each outcome is emitted in the chunk where its own event time falls, and the chunk's
    feedback stays sorted by time. Outcomes due after the last chunk are not emitted.
    """
    onset = None if segments.onset_day is None else start + segments.onset_day * DAY
    waiting: list[tuple[float, str, dict[str, Any]]] = []
    first_seen: dict[str, float] = {}
    exposed: set[str] = set()
    for chunk in chunks:
        routing = []
        for ev in chunk.routing:
            rid = ev["request_id"]
            subject = subject_of(rid, mix)
            routing.append({**ev, "subject_id": subject})
            ts = _epoch(ev["ts"])
            seg = _uniforms(rid, segments.salt, 6)
            wrong = (onset is not None and ts >= onset and ev["tier"] == cheap_tier
                     and _pick(segments.intents, seg[0]) == "billing"
                     and seg[3] < segments.hidden_share)
            if wrong:
                exposed.add(subject)
            u = _uniforms(rid, mix.salt, 4)
            if u[0] < mix.survey_share:
                lo, hi = mix.survey_days
                at = ts + (lo + (hi - lo) * u[1]) * DAY
                bad = u[2] < (mix.bad_survey_wrong if wrong else mix.bad_survey)
                value = round(0.4 * u[3], 3) if bad else round(0.6 + 0.4 * u[3], 3)
                heapq.heappush(waiting, (at, rid, {
                    "schema_version": SCHEMA_VERSION, "event_id": f"{rid}:survey",
                    "request_id": rid, "router_id": ev["router_id"], "ts": iso(at),
                    "kind": "survey", "value": value, "source": "survey_90d"}))
            if subject not in first_seen:
                first_seen[subject] = ts
                at = ts + mix.retention_days * DAY
                heapq.heappush(waiting, (at, "~" + subject, {
                    "schema_version": SCHEMA_VERSION, "event_id": f"{subject}:retention",
                    "request_id": f"{subject}:retention", "router_id": ev["router_id"],
                    "subject_id": subject, "ts": iso(at), "kind": "retention",
                    "value": None, "source": "retention_6m"}))
        due = []
        while waiting and waiting[0][0] < chunk.end:
            at, key, doc = heapq.heappop(waiting)
            if doc["kind"] == "retention":
                subject = doc["subject_id"]
                draw = _uniforms(subject, mix.salt + "/churn", 1)[0]
                p = mix.churn_exposed if subject in exposed else mix.churn
                doc = {**doc, "value": 0 if draw < p else 1}
                # a new interaction after the outcome starts a new retention period
                del first_seen[subject]
                exposed.discard(subject)
            due.append((at, key, doc))
        feedback = chunk.feedback
        if due:
            feedback = [e for _, _, e in heapq.merge(
                ((_epoch(f["ts"]), "", f) for f in chunk.feedback), due,
                key=lambda t: (t[0], t[1]))]
        yield replace(chunk, routing=routing, feedback=feedback)
