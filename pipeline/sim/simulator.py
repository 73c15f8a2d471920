"""The simulator: a seeded, vectorized stream of routing decisions and their feedback.

See :mod:`pipeline.sim.params` for the model and :mod:`pipeline.sim.scenarios` for the
registered routers.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import numpy as np

from pipeline.schemas import Baseline, Thresholds
from pipeline.sim.baseline import build_baseline
from pipeline.sim.clock import DEFAULT_START, US, arrivals, iso, to_epoch
from pipeline.sim.events import Event, RoutingColumns, feedback_items, request_ids, routing_dicts
from pipeline.sim.feedback import (
    KINDS,
    SUPPORT,
    THUMBS,
    FeedbackDraw,
    PendingFeedback,
    draw_feedback,
)
from pipeline.sim.params import SECONDS_PER_DAY, Scenario
from pipeline.sim.population import draw_queries, self_confidence
from pipeline.sim.router import escalate, route
from pipeline.sim.scenarios import get_scenario
from pipeline.sim.truth import DailyTruth, change_records, jsonable

Policy = Callable[[float], Thresholds | tuple[Thresholds, int]]
"""Called with the start (epoch seconds) of each chunk; returns the thresholds in force for
that chunk, optionally with the ``policy_seq`` to stamp on its events."""

DAY_US = int(SECONDS_PER_DAY) * US
_STREAMS = ("arrivals", "queries", "routing", "feedback_select", "feedback_values")
_BASELINE_STREAM = 100
_NUISANCE_FIELDS = ("volume_changes", "policy_changes", "outages", "delay_changes")


@dataclass(frozen=True, slots=True)
class Chunk:
    """One slice of simulated time ``[start, end)`` (epoch seconds) and what happened in it.

    ``routing`` and ``feedback`` are JSON-ready dicts matching ``RoutingEvent`` and
    ``FeedbackEvent``, each sorted by ``ts``. Feedback appears in the chunk where its own
    event time falls (it is delayed from the request it is about), except the backlog of a
    source that was silent (``Scenario.outages``): that arrives, late and with its original
    ``ts``, in the chunk where the outage ends. ``baselines`` holds any new classifier
    baseline created in the chunk (a retrain).
    """

    start: float
    end: float
    routing: list[Event]
    feedback: list[Event]
    thresholds: Thresholds
    policy_seq: int
    baselines: list[Baseline] = field(default_factory=list)


def _delays_changed(draw: FeedbackDraw, scenario: Scenario, day: np.ndarray) -> FeedbackDraw:
    """Scale the delays of the kinds whose ``DelayChange`` is in force on the request's day."""
    delay = draw.delay_s.copy()
    request_day = day[draw.index]
    for ch in scenario.delay_changes:
        hit = (draw.kind == KINDS.index(ch.kind)) & (request_day >= ch.onset_day)
        delay[hit] *= ch.factor
    return replace(draw, delay_s=delay)


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Building millions of small dicts triggers needless cyclic-GC passes: pause it."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class Simulator:
    """A seeded traffic simulator for a two-tier LLM cost router.

    Parameters
    ----------
    scenario
        A registered scenario name (see ``SCENARIOS``) or a :class:`Scenario`.
    rate
        Mean arrival rate in routing events per second (Poisson).
    seed
        Seed of every random draw: same seed and arguments → byte-identical events.
    start
        Event time of the simulation start: epoch seconds or an aware datetime
        (default 2026-01-01T00:00:00Z).
    seasonality
        Modulate the arrival rate by the scenario's diurnal/weekly factor (default on).
        Only arrival times depend on it; the query mix and the scores do not.

    Examples
    --------
    >>> from pipeline.schemas import FeedbackEvent, RoutingEvent
    >>> sim = Simulator("pareto-trap", rate=2.0, seed=7)
    >>> chunks = list(sim.run(days=0.5, chunk_seconds=3600))
    >>> len(chunks), chunks[0].end - chunks[0].start
    (12, 3600.0)
    >>> ev = RoutingEvent.model_validate(chunks[0].routing[0])
    >>> ev.router_id, ev.ts.isoformat()[:10], ev.tier in ("cheap", "capable")
    ('support-agent', '2026-01-01', True)
    >>> all(FeedbackEvent.model_validate(f) for c in chunks for f in c.feedback)
    True
    >>> sim.baseline(n_samples=10_000, bins=50).score.n
    10000
    >>> sim.truth()["daily"][0]["requests"] == sum(len(c.routing) for c in chunks)
    True
    """

    def __init__(self, scenario: str | Scenario, *, rate: float, seed: int,
                 start: float | datetime = DEFAULT_START, seasonality: bool = True) -> None:
        if not rate > 0:
            raise ValueError(f"rate must be > 0 events/s, got {rate}")
        self.scenario = get_scenario(scenario) if isinstance(scenario, str) else scenario
        self.rate = float(rate)
        self.seed = int(seed)
        self.start = to_epoch(start)
        self.seasonality = seasonality
        self._daily = DailyTruth([c.name for c in self.scenario.cohorts])

    # --- baselines --------------------------------------------------------------------

    def baseline(self, n_samples: int = 200_000, bins: int = 200, *,
                 classifier_version: str | None = None) -> Baseline:
        """The training/calibration distribution of scores and signals (equal-mass bins).

        By default that of the classifier in force at the start; ``classifier_version``
        picks a later (retrained) one, whose baseline is created at its change time.
        """
        versions = [c.version for _, c in self.scenario.classifiers]
        if classifier_version is None:
            index = 0
        elif classifier_version in versions:
            index = versions.index(classifier_version)
        else:
            raise KeyError(f"unknown classifier_version {classifier_version!r}; "
                           f"known: {versions}")
        day = max(self.scenario.classifiers[index][0], 0.0)
        rng = np.random.default_rng(np.random.SeedSequence(
            self.seed, spawn_key=(_BASELINE_STREAM + index,)))
        return build_baseline(self.scenario, rng, n_samples=n_samples, bins=bins,
                              classifier=index, day=day,
                              created_at=self.start + day * SECONDS_PER_DAY,
                              version_suffix=f"seed{self.seed}")

    def baselines(self, n_samples: int = 200_000, bins: int = 200) -> list[Baseline]:
        """The baseline of every classifier version, in order of their change times."""
        return [self.baseline(n_samples, bins, classifier_version=c.version)
                for _, c in self.scenario.classifiers]

    # --- the stream -------------------------------------------------------------------

    def run(self, days: float, policy: Policy | None = None,
            chunk_seconds: float = 3600.0) -> Iterator[Chunk]:
        """Simulate ``days`` of traffic from ``start``, one :class:`Chunk` at a time.

        ``policy(now_epoch)`` is called at the start of every chunk and returns the
        thresholds in force for it (closed-loop simulations apply recommendations through
        it); a bare ``Thresholds`` return bumps ``policy_seq`` whenever it changes. Without
        a policy the scenario's static thresholds apply, with ``policy_seq`` 0.
        Feedback due after the end of the run is not emitted.
        """
        if not days > 0 or not chunk_seconds > 0:
            raise ValueError("days and chunk_seconds must be > 0")
        sc = self.scenario
        start_us = round(self.start * US)
        end_us = start_us + round(days * DAY_US)
        step_us = round(chunk_seconds * US)
        seeds = np.random.SeedSequence(self.seed).spawn(len(_STREAMS))
        rng = {name: np.random.default_rng(s) for name, s in zip(_STREAMS, seeds, strict=True)}
        self._daily = DailyTruth([c.name for c in sc.cohorts])
        pending = PendingFeedback()
        retrains = {i: d for i, (d, _) in enumerate(sc.classifiers) if i > 0}
        prefix = f"{sc.router_id}-{self.seed}-"
        seq, previous = 0, None
        next_index = 0
        volume = sc.volume(self.seasonality, self.start)
        t_us = start_us
        while t_us < end_us:
            e_us = min(t_us + step_us, end_us)
            thresholds, seq = self._resolve(policy, t_us / US, previous, seq)
            previous = thresholds
            us = arrivals(rng["arrivals"], t_us, e_us, self.rate, volume)
            with _gc_paused():
                routing, items = self._chunk_events(rng, us, start_us, thresholds, seq,
                                                    request_ids(prefix, next_index, len(us)))
                pending.push(self._held(items, start_us) if sc.outages else items)
                feedback = pending.pop_before(e_us)
            next_index += len(us)
            new_baselines = [self.baseline(classifier_version=sc.classifiers[i][1].version)
                             for i, d in retrains.items()
                             if t_us <= start_us + round(d * DAY_US) < e_us]
            yield Chunk(t_us / US, e_us / US, routing, feedback, thresholds, seq,
                        new_baselines)
            t_us = e_us

    def _resolve(self, policy: Policy | None, now: float, previous: Thresholds | None,
                 seq: int) -> tuple[Thresholds, int]:
        if policy is None and self.scenario.policy_changes:
            thresholds = self.scenario.thresholds_at((now - self.start) / SECONDS_PER_DAY)
            if previous is not None and thresholds.key != previous.key:
                seq += 1
        elif policy is None:
            thresholds = self.scenario.thresholds
        else:
            out = policy(now)
            if isinstance(out, tuple):
                thresholds, seq = out
            else:
                thresholds = out
                if previous is not None and thresholds != previous:
                    seq += 1
        cascade = self.scenario.cascade
        if cascade is not None and thresholds.escalate_below is None:
            thresholds = Thresholds(**{**thresholds.model_dump(),
                                       "escalate_below": cascade.escalate_below})
        return thresholds, seq

    def _chunk_events(
        self, rng: dict[str, np.random.Generator], us: np.ndarray, start_us: int,
        thresholds: Thresholds, seq: int, ids: list[str],
    ) -> tuple[list[Event], list[tuple[int, Event]]]:
        sc = self.scenario
        n = len(us)
        day = (us - start_us) / DAY_US
        q = draw_queries(rng["queries"], sc, day)
        decisions = route(q.score, thresholds, rng["routing"].random(n))
        cheap_good = q.answer_u < sc.cheap.quality.p_good(q.difficulty)
        capable_good = q.answer_u < sc.capable.quality.p_good(q.difficulty)
        confidence = np.full(n, np.nan)
        if sc.cascade is not None and thresholds.escalate_below is not None:
            confidence = np.round(self_confidence(sc, q, cheap_good, day), 4)
            decisions = escalate(decisions, confidence, thresholds.escalate_below)
            confidence = np.where(decisions.cheap_first, confidence, np.nan)
        cheap = decisions.cheap
        escalated = decisions.cheap_first & ~cheap
        served_good = np.where(cheap, cheap_good, capable_good)

        k_tokens = q.tokens / 1000.0
        cheap_cost = k_tokens * sc.cheap.usd_per_1k_tokens
        capable_cost = k_tokens * sc.capable.usd_per_1k_tokens
        cheap_ms = sc.cheap.latency_median_ms * np.exp(sc.cheap.latency_sigma * q.latency_noise)
        capable_ms = sc.capable.latency_median_ms * np.exp(
            sc.capable.latency_sigma * q.latency_noise)
        cols = RoutingColumns(
            ts_us=us, request_id=ids, cheap=cheap, score=q.score, reason=decisions.reason,
            propensity=decisions.propensity, classifier=q.classifier,
            cost_usd=np.where(cheap, cheap_cost, capable_cost) + escalated * cheap_cost,
            latency_ms=np.where(cheap, cheap_ms, capable_ms) + escalated * cheap_ms,
            cohort=q.cohort, ood_distance=q.ood_distance, self_confidence=confidence)
        tiers = (sc.capable.name, sc.cheap.name)
        routing = routing_dicts(
            cols, router_id=sc.router_id, tiers=tiers,
            models=(sc.capable.model, sc.cheap.model), thresholds=thresholds,
            policy_seq=seq, classifier_versions=[c.version for _, c in sc.classifiers],
            cohort_names=[c.name for c in sc.cohorts])

        draw = draw_feedback(rng["feedback_select"], rng["feedback_values"], sc, q.cohort,
                             q.score, thresholds, served_good, cheap_good, capable_good)
        if sc.delay_changes:
            draw = _delays_changed(draw, sc, day)
        items = feedback_items(draw, event_ts_us=us, request_id=ids, router_id=sc.router_id,
                               tiers=tiers, cheap=cheap, score=q.score)

        support = np.zeros(n, dtype=bool)
        support[draw.index[draw.kind == SUPPORT]] = True
        thumbs_down = np.zeros(n, dtype=bool)
        thumbs_down[draw.index[(draw.kind == THUMBS) & (draw.value == 0.0)]] = True
        self._daily.add(np.floor(day).astype(np.int64), q.cohort, cheap, served_good,
                        cheap_good, capable_good, escalated, support, thumbs_down)
        return routing, items

    def _held(self, items: list[tuple[int, Event]], start_us: int) -> list[tuple[int, Event]]:
        """Feedback of a silent source waits for the end of its outage (its ``ts`` stays)."""
        out = []
        for t_us, ev in items:
            for o in self.scenario.outages:
                lo = start_us + round(o.start_day * DAY_US)
                hi = start_us + round(o.end_day * DAY_US)
                if ev["kind"] in o.kinds and lo <= t_us < hi:
                    t_us = hi
                    break
            out.append((t_us, ev))
        return out

    # --- ground truth -----------------------------------------------------------------

    def truth(self) -> dict[str, Any]:
        """JSON-ready ground truth: injected changes, and per-day true quality of the last run.

        ``changes``: kind, onset (epoch, day, timestamp), affected tier/cohort, description.
        ``daily``: per day and tier, requests, true good-answer rate, and for the cheap tier
        the share of its queries where it is equivalent to the capable model.
        """
        sc = self.scenario
        return {
            "scenario": sc.name,
            "router_id": sc.router_id,
            "description": sc.description,
            "seed": self.seed,
            "rate": self.rate,
            "start_epoch": self.start,
            "start": iso(self.start),
            "tiers": {"cheap": sc.cheap.name, "capable": sc.capable.name},
            "thresholds": sc.thresholds.model_dump(exclude_none=True),
            "classifier_versions": [{"version": c.version, "from_day": max(d, 0.0)}
                                    for d, c in sc.classifiers],
            "changes": change_records(sc, self.start),
            "daily": self._daily.records(self.start, (sc.capable.name, sc.cheap.name)),
            "parameters": {k: v for k, v in jsonable(sc).items()
                           if v or k not in _NUISANCE_FIELDS},  # unused nuisances: absent
        }
