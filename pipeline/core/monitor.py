"""One tierwatch monitor: events in, alerts, recommendations and review requests out.

The same object runs in the faust worker, in ``tierwatch replay`` and in the demo.
Everything is event time: the watermark is the largest routing event time accepted
(feedback keeps a watermark of its own); events more than the allowed lateness behind
their input's watermark are dead-lettered, and evaluations run at fixed event-time
boundaries (every ``eval_every_s``) as the routing watermark crosses them.
Same events in the same order give the same outputs, byte for byte.

>>> m = Monitor()
>>> m.observe_routing([_example_event()])
[]
>>> m.counts.routed
{('support', 'cheap'): 1}
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from pydantic import BaseModel

from pipeline.core.alerts import runbook_link, severity_of
from pipeline.core.columns import as_model, observe_routing_columns
from pipeline.core.decision_store import DecisionStore
from pipeline.core.delayed import SUBJECT_KINDS, RoutedRow
from pipeline.core.drift_watch import gather_signals
from pipeline.core.join import UNJOINED_REASON, FeedbackJoin, JoinedFeedback, Origin
from pipeline.core.quality import outcome
from pipeline.core.recommend import Proposal
from pipeline.core.router_state import MonitorConfig, RouterState, Transition
from pipeline.core.sampling import ReviewSampler
from pipeline.core.signing import Keyring
from pipeline.schemas import (
    Alert,
    Baseline,
    ExpectedImpact,
    FeedbackEvent,
    Rejection,
    ReviewRequest,
    RoutingEvent,
    ThresholdRecommendation,
    Thresholds,
)

__all__ = ["EventCounts", "Monitor", "MonitorConfig", "Output", "Signer"]

RUNBOOK = "deploy/runbook.md#"  # the default base (MonitorConfig.runbook_base) + "#"


@dataclass(frozen=True, slots=True)
class Output:
    """Something to publish: ``topic`` is a short topic name, ``key`` its message key."""

    topic: str
    key: str
    payload: BaseModel | Rejection
    event: BaseModel | None = None  # for a rejection: the event it rejects
    origin: Any = None  # for unjoined feedback: where it came from (opaque to the core)


@dataclass(slots=True)
class EventCounts:
    """Valid events per (router, tier) and per (router, kind); exact and mergeable."""

    routed: dict[tuple[str, str], int] = field(default_factory=dict)
    feedback: dict[tuple[str, str], int] = field(default_factory=dict)
    duplicates: int = 0
    # feedback that never found its request (TTL expired), per (router or "", kind): a
    # lagging signal such as a support contact that counts against no request
    unjoined: dict[tuple[str, str], int] = field(default_factory=dict)

    def add_routing(self, router_id: str, tier: str) -> None:
        k = (router_id, tier)
        self.routed[k] = self.routed.get(k, 0) + 1

    def add_feedback(self, router_id: str, kind: str) -> None:
        k = (router_id, kind)
        self.feedback[k] = self.feedback.get(k, 0) + 1

    def __add__(self, other: EventCounts) -> EventCounts:
        return EventCounts(dict(Counter(self.routed) + Counter(other.routed)),
                           dict(Counter(self.feedback) + Counter(other.feedback)),
                           self.duplicates + other.duplicates,
                           dict(Counter(self.unjoined) + Counter(other.unjoined)))


@dataclass(frozen=True, slots=True)
class Signer:
    """Signs recommendations: a keyring, the key in use, and the publishing mode."""

    keyring: Keyring
    key_id: str
    mode: str = "advisory"


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


class Monitor:
    """All routers' state. ``observe_*`` take validated events; ``drain`` returns outputs.

    Parameters
    ----------
    config
        Statistics, windows, policy and prices.
    signer
        Signs threshold recommendations; without one, none are published.
    record
        Keep every evaluation's snapshot (the replay's report needs the history; the
        worker keeps only the latest, for ``/status``).
    decisions
        Where the join keeps its decisions: in memory by default; the worker passes an
        on-disk store for a long join TTL (see :meth:`stores`).
    """

    def __init__(self, config: MonitorConfig | None = None, *, signer: Signer | None = None,
                 record: bool = False, decisions: DecisionStore | None = None) -> None:
        self.config = config or MonitorConfig()
        self.signer = signer
        self.record = record
        self.counts = EventCounts()
        self.join = FeedbackJoin(self.config.join_ttl_s, store=decisions)
        self.routers: dict[str, RouterState] = {}
        self.baselines: dict[str, Baseline] = {}
        # one sampler per router: each router's tiers get their own daily quota, so a
        # flood from one router cannot take the others' reviews
        self.samplers: dict[str, ReviewSampler] = {}
        self.watermark: float | None = None
        self.feedback_watermark: float | None = None
        self.next_eval: float | None = None
        self.next_tick: float | None = None
        self.history: dict[str, list[dict[str, Any]]] = {}
        self.first_drift_histogram: dict[str, dict[str, Any]] = {}
        self.recommendations: dict[str, ThresholdRecommendation] = {}
        self.firing: dict[str, Alert] = {}
        self._pending: list[Output] = []
        self.evaluations = 0
        #: evaluations that raised, as ``(router_id, event time, exception)``: that
        #: router's evaluation is skipped (its state may be partly updated, the same way
        #: in every run); the caller logs and counts them, then clears the list
        self.errors: list[tuple[str, float, Exception]] = []

    @property
    def memory_s(self) -> float:
        """How far back any evaluation looks: its longest window, join TTL or lateness."""
        c = self.config
        return (max(c.join_ttl_s, max(c.quality.windows), max(c.drift_windows))
                + c.allowed_lateness_s + c.eval_every_s)

    @property
    def quiet_s(self) -> float:
        """How long after the last event an evaluation may still see it: the longest
        window, plus the contact CUSUMs' look-back, plus one evaluation interval."""
        c = self.config
        return (max(max(c.quality.windows), max(c.drift_windows))
                + c.quality.contact_max_delay_days * 86400.0 + 2 * c.eval_every_s)

    def stores(self) -> tuple[DecisionStore, ...]:
        """The stores that hold part of this state (a snapshot checkpoints those on disk)."""
        return (self.join.store,)

    def __getstate__(self) -> dict[str, Any]:
        # a snapshot must never carry the signing key; its owner re-attaches a signer
        return {**self.__dict__, "signer": None, "errors": []}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update({"errors": [], **state})

    # -- state ---------------------------------------------------------------------------
    def router(self, router_id: str, ts: float) -> RouterState:
        state = self.routers.get(router_id)
        if state is None:
            state = self.routers[router_id] = RouterState(router_id, self.config, ts)
            baseline = self.baselines.get(router_id)
            if baseline is not None:
                state.set_baseline(baseline)
        return state

    def set_baseline(self, baseline: Baseline) -> None:
        """Compare ``baseline.router_id`` against this baseline from now on."""
        self.baselines[baseline.router_id] = baseline
        state = self.routers.get(baseline.router_id)
        if state is not None:
            state.set_baseline(baseline)

    def _late(self, ts: float, watermark: float | None = None) -> Rejection | None:
        wm = self.watermark if watermark is None else watermark
        if wm is not None and ts < wm - self.config.allowed_lateness_s:
            return Rejection("late", f"ts: event time is {wm - ts:.0f}s behind the "
                             f"watermark; allowed lateness is {self.config.allowed_lateness_s:g}s",
                             "ts")
        return None

    def _advance(self, ts: float) -> None:
        if self.watermark is None or ts > self.watermark:
            self.watermark = ts
        if self.next_eval is None:
            step = self.config.eval_every_s
            self.next_eval = (math.floor(ts / step) + 1) * step

    # -- routing -------------------------------------------------------------------------
    def observe_routing(self, events: Sequence[RoutingEvent],
                        epochs: np.ndarray | None = None) -> list[Output]:
        """Count a batch of routing decisions; late ones come back as DLQ outputs.

        ``epochs``: the events' times as a column (epoch seconds), when the caller has
        it; the batch is then counted on columns when it can be (``core/columns.py``),
        with the same effect, and ``events`` may be the hot-path decoder's structs.
        """
        if epochs is not None:
            taken = observe_routing_columns(self, events, epochs)
            if taken is not None:
                return taken
            models = [as_model(ev) for ev in events]
            originals = {id(m): ev for m, ev in zip(models, events, strict=True)}
            return [o if o.event is None else replace(o, event=originals.get(id(o.event), o.event))
                    for o in self.observe_routing(models)]
        # The per-event hot path of the replay and the worker: the lateness check, the
        # watermark and the counters are inlined, with the same effect as _late/_advance.
        out: list[Output] = []
        per_router: dict[str, list[tuple[RoutingEvent, float]]] = {}
        batch_ids: set[str] = set()
        decisions = self.join
        lateness = self.config.allowed_lateness_s
        wm = self.watermark
        step = self.config.eval_every_s
        for ev in events:
            ts = ev.epoch
            if wm is not None and ts < wm - lateness and (late := self._late(ts)) is not None:
                out.append(Output("dlq", ev.request_id, late, ev))
                continue
            rid = ev.request_id
            if rid in decisions or rid in batch_ids:
                self.counts.duplicates += 1
                continue
            batch_ids.add(rid)
            if self.next_eval is not None and ts >= self.next_eval + step:
                # event time jumps past a whole evaluation interval: the evaluations it
                # skips run now, on the state they would have seen, before this event
                # moves the rings on (see _catch_up)
                self._count_routing(per_router)
                per_router = {}
                self._catch_up(ts - step)
            if wm is None or ts > wm:
                wm = self.watermark = ts
            if self.next_eval is None:
                self._advance(ts)
            rows = per_router.get(ev.router_id)
            if rows is None:
                rows = per_router[ev.router_id] = []
            rows.append((ev, ts))
        self._count_routing(per_router)
        return out

    def _count_routing(self, per_router: dict[str, list[tuple[RoutingEvent, float]]]) -> None:
        """Count accepted, deduplicated routing events, grouped by router."""
        add_decision = self.join.add_decision
        decisions = self.join
        routed = self.counts.routed
        review = self._review
        for router_id, rows in per_router.items():
            state = self.router(router_id, rows[0][1])
            n = len(rows)
            ts_arr = np.fromiter((ts for _, ts in rows), np.float64, n)
            scores = np.fromiter((ev.score for ev, _ in rows), np.float64, n)
            bands = state.bands(scores).tolist()
            sigs: list[dict[str, float] | None] = []
            tiers: list[str] = []
            reasons: list[str] = []
            thresholds = []
            costs: list[float | None] = []
            segs: list[tuple[str, float, tuple[tuple[str, str], ...]]] = []
            delayed: list[RoutedRow] = []  # cohorts and subjects (pipeline.core.delayed)
            for (ev, ts), band in zip(rows, bands, strict=True):
                th = ev.thresholds
                tier, score, reason = ev.tier, ev.score, ev.route_reason
                in_band = th.capable_below <= score < th.cheap_above
                explored = reason == "exploration" or reason == "uncertain_default"
                released = add_decision(
                    ev.request_id, router_id, tier, score, ts, propensity=ev.propensity,
                    band=band, in_band=in_band, exploration=explored, segment=ev.segment)
                delayed.append((ts, tier, (th.key, ev.classifier_version), ev.subject_id,
                                ev.propensity, in_band and explored))
                if ev.segment:
                    # the tuple the join stored (interned): no read back from its store
                    seg = decisions.intern_segment(ev.segment)
                    if seg is not None:
                        segs.append((tier, ts, seg))
                k = (router_id, tier)
                routed[k] = routed.get(k, 0) + 1
                for fb in released:
                    self._count_feedback(fb)
                sig = ev.signals
                review(ev, ts, band, th, sig)
                sigs.append(sig)
                tiers.append(tier)
                reasons.append(reason)
                thresholds.append(th)
                costs.append(ev.cost_usd)
            signals = gather_signals(ts_arr.tolist(), sigs)
            state.observe_routing(ts_arr, scores, tiers, reasons, thresholds, costs, signals,
                                  bands)
            if segs:
                state.segments.observe_many(segs)
            state.delayed.observe_routing(delayed)

    def _review(self, ev: RoutingEvent, ts: float, band: int, th: Thresholds,
                signals: dict[str, float] | None) -> None:
        sampler = self.samplers.get(ev.router_id)
        if sampler is None:
            sampler = self.samplers[ev.router_id] = ReviewSampler(
                self.config.review_quota_per_day, seed=self.config.review_seed)
        d = sampler.offer(ev.request_id, ev.tier, ev.score, ts, cheap_above=th.cheap_above,
                          capable_below=th.capable_below,
                          ood_distance=signals.get("ood_distance") if signals else None)
        if d.selected:
            reason = "boundary" if d.priority > 1.0 else "random"
            self._pending.append(Output("review", ev.request_id, ReviewRequest(
                request_id=ev.request_id, router_id=ev.router_id, tier=ev.tier, score=ev.score,
                band=band, inclusion_probability=d.inclusion_probability, reason=reason,
                ts=ev.ts)))

    # -- feedback ------------------------------------------------------------------------
    def observe_feedback(self, events: Sequence[FeedbackEvent],
                         origins: Sequence[Origin | Callable[[], Origin] | None] | None = None
                         ) -> list[Output]:
        """Join and count a batch of feedback; late ones come back as DLQ outputs.

        ``origins``: per event, where it came from; kept with feedback that waits for its
        decision, so that its ``unjoined`` dead letter carries the original bytes.
        """
        # Feedback has a watermark of its own: a small feedback topic consumed ahead of a
        # lagging routing topic must not make the routing events look late. The routing
        # watermark alone drives evaluations.
        out: list[Output] = []
        for i, ev in enumerate(events):
            ts = ev.epoch
            if (late := self._late(ts, self.feedback_watermark)) is not None:
                out.append(Output("dlq", ev.request_id, late, ev))
                continue
            if ev.kind in SUBJECT_KINDS:  # about a subject: attributed, never joined
                if self.join.seen(ev.event_id):
                    self.counts.duplicates += 1
                    continue
                self._feedback_time(ts)
                self._subject_outcome(ev, ts)
                continue
            # the join counts each event id once: one look-up, not a check and then another
            duplicates = self.join.duplicates
            joined = self.join.add_feedback(
                ev.event_id, ev.request_id, ev.kind, ev.value, ts, router_id=ev.router_id,
                tier=ev.tier, score=ev.score, weight=ev.weight, source=ev.source,
                origin=origins[i] if origins is not None else None)
            if self.join.duplicates != duplicates:
                self.counts.duplicates += 1
                continue
            self._feedback_time(ts)
            if joined is not None:
                self._count_feedback(joined)
        return out

    def _feedback_time(self, ts: float) -> None:
        if self.feedback_watermark is None or ts > self.feedback_watermark:
            self.feedback_watermark = ts

    def _subject_outcome(self, ev: FeedbackEvent, ts: float) -> None:
        """Attribute a subject outcome to the subject's interactions, in its router (or,
        without one, in every router that saw the subject)."""
        assert ev.subject_id is not None  # the schema requires it for subject kinds
        routers = [ev.router_id] if ev.router_id else sorted(self.routers)
        for router_id in routers:
            state = self.routers.get(router_id)
            if state is None or (ev.router_id is None
                                 and ev.subject_id not in state.delayed.ledger.subjects):
                continue
            if state.delayed.observe_subject_outcome(ev.event_id, ev.subject_id, ev.value,
                                                     ts, ev.kind):
                self.counts.add_feedback(router_id, ev.kind)

    def _count_feedback(self, fb: JoinedFeedback) -> None:
        router_id = fb.router_id
        if router_id is None:
            return
        self.counts.add_feedback(router_id, fb.kind)
        state = self.router(router_id, fb.ts)
        state.observe_feedback(tier=fb.tier, score=fb.score, kind=fb.kind, value=fb.value,
                               ts=fb.ts, decision_ts=fb.decision_ts, weight=fb.weight,
                               propensity=fb.propensity,
                               in_band=bool(fb.in_band and fb.exploration))
        if fb.segment is not None:
            self._count_segment(state, fb)

    @staticmethod
    def _count_segment(state: RouterState, fb: JoinedFeedback) -> None:
        """Count joined feedback against its decision's segment values."""
        if fb.kind == "support_contact":
            state.segments.observe_outcome(fb.tier, fb.ts, fb.decision_ts, fb.segment,
                                           contacts=1.0)
        else:
            w = fb.weight or 1.0
            state.segments.observe_outcome(fb.tier, fb.ts, fb.decision_ts, fb.segment,
                                           feedback=w,
                                           feedback_bad=w * (1.0 - outcome(fb.kind, fb.value)))

    # -- evaluation ----------------------------------------------------------------------
    @property
    def due_at(self) -> float | None:
        """The watermark from which :meth:`drain` has work (an evaluation or a sequential
        tick); ``None`` before the first event. Below it, ``drain`` only hands back the
        pending outputs, so batches that keep the watermark below it may be counted as one.

        >>> m = Monitor()
        >>> m.due_at is None
        True
        >>> _ = m.observe_routing([_example_event()])
        >>> m.due_at <= m.next_eval
        True
        """
        if self.next_eval is None:
            return None
        if not self.config.sequential_drift:
            return self.next_eval
        tick = self.next_tick
        if tick is None:
            tick = self.next_eval - self.config.eval_every_s + self.config.seq_step_s
        return min(self.next_eval, tick)

    @property
    def pending(self) -> int:
        """Outputs waiting for the next :meth:`drain` (review requests, mostly)."""
        return len(self._pending)

    def drain(self) -> list[Output]:
        """Run the evaluations that are due; return every pending output."""
        wm, step = self.watermark, self.config.eval_every_s
        if wm is None or self.next_eval is None:
            out, self._pending = self._pending, []
            return out
        if wm - self.next_eval > self.memory_s:
            # a jump in event time (a silent month, a clock gone wrong): evaluations more
            # than the longest memory behind see empty windows only, so skip them
            self.next_eval = math.ceil((wm - self.memory_s) / step) * step
            self.next_tick = None
        self._run_due(wm)
        out, self._pending = self._pending, []
        return out

    def _catch_up(self, until: float) -> None:
        """Run the evaluations (and sequential steps) due up to ``until`` before a jump.

        An evaluation at ``E`` sums windows ending at ``E``; an event far later than
        ``E`` moves every ring's horizon past buckets that window still needs. So when
        event time jumps by more than one evaluation interval, the evaluations it skips
        run first, on exactly the events before them. Once every window (and the contact
        CUSUMs' look-back) has left the last event behind (:attr:`quiet_s`), the
        evaluations up to the jump would see empty time only: all but the last of them
        are skipped, so the cost of a jump does not grow with its size. That last one
        expires, at once, the joins whose TTL ran out in the skipped time.
        """
        if self.next_eval is None or self.watermark is None:
            return
        step = self.config.eval_every_s
        quiet = self.watermark + self.quiet_s  # from here on, every window is empty
        self._run_due(min(until, quiet))
        last = math.floor(until / step) * step
        if self.next_eval < last:
            self.next_eval = last
            self.next_tick = None
        self._run_due(until)

    def _run_due(self, until: float) -> None:
        """Evaluations and sequential ticks at or before ``until``, in time order."""
        assert self.next_eval is not None
        step = self.config.eval_every_s
        tick = self.config.seq_step_s if self.config.sequential_drift else math.inf
        if self.next_tick is None:
            self.next_tick = self.next_eval - step + tick
        # the sequential drift tests step every ``tick`` between the hourly evaluations
        while until >= min(self.next_eval, self.next_tick):
            if self.next_tick < self.next_eval:
                self._skip_idle_ticks(min(until, self.next_eval), tick)
                self._tick(self.next_tick)
                self.next_tick += tick
            else:
                self.evaluate(self.next_eval)
                self.next_eval += step
                self.next_tick = max(self.next_tick, self.next_eval - step + tick)

    def _skip_idle_ticks(self, limit: float, tick: float) -> None:
        """Fold a run of ticks that can change nothing into the last of them.

        A tick only closes sequential steps and fires the alert of a CUSUM in alarm;
        with no step pending before it and every alarm's alert already firing, it just
        moves each test's closed-step mark. Jumping to the last such tick before
        ``limit`` (or before the first pending step closes) has the same effect, so
        hours or days of quiet cost O(1) ticks, not one per minute.
        """
        assert self.next_tick is not None
        first_close = math.inf
        for state in self.routers.values():
            for (who, signal), stream in state.streams.items():
                seq = stream.seq
                if seq is None:
                    continue
                if seq.alarm and not state.alerts.firing(state._drift_key(who, signal)[0]):
                    return
                if seq.pending:
                    first_close = min(first_close, (min(seq.pending) + 1) * seq.step_seconds)
        last = min(limit, first_close)
        if last - self.next_tick < 2 * tick:
            return
        n = math.floor((last - self.next_tick) / tick)
        if self.next_tick + n * tick >= last:
            n -= 1
        self.next_tick += max(n, 0) * tick

    def _tick(self, now: float) -> None:
        for router_id in sorted(self.routers):
            state = self.routers[router_id]
            try:
                transitions = state.sequential(now).transitions
            except Exception as err:  # one router's bug must not blind the others
                self.errors.append((router_id, now, err))
                continue
            self._emit(state, transitions, now)

    def _emit(self, state: RouterState, transitions: list[Transition], now: float) -> None:
        for t in transitions:
            self._alert(state, t, now)
            if (t.key.kind == "confidence_drift" and t.state == "firing"
                    and state.router_id not in self.first_drift_histogram):
                hist = state.histogram(now)
                if hist is not None:
                    self.first_drift_histogram[state.router_id] = hist

    def evaluate(self, now: float) -> None:
        """Evaluate every router at event time ``now``; queue the outputs."""
        self.evaluations += 1
        for fb in self.join.expire(now):
            k = (fb.router_id or "", fb.kind)
            self.counts.unjoined[k] = self.counts.unjoined.get(k, 0) + 1
            owner = self.routers.get(fb.router_id or "")
            if owner is not None and fb.kind == "support_contact":
                owner.unattributed["unjoined"] += 1
            self._pending.append(Output("dlq", fb.request_id, Rejection(
                "unjoined", f"request_id: {UNJOINED_REASON} ({self.config.join_ttl_s:g}s "
                f"after this feedback's time {_dt(fb.ts).isoformat()})", "request_id"),
                origin=fb.origin))
        for router_id in sorted(self.routers):
            state = self.routers[router_id]
            try:
                ev = state.evaluate(now)
            except Exception as err:  # one router's bug must not blind the others
                self.errors.append((router_id, now, err))
                continue
            self._emit(state, ev.transitions, now)
            if ev.recommendation is not None and self.signer is not None:
                self._recommend(state, ev.recommendation, now)
            if self.record:
                self.history.setdefault(router_id, []).append(ev.snapshot)

    def _alert(self, state: RouterState, t: Transition, now: float) -> None:
        k = t.key
        severity = t.statistics.get("severity") or severity_of(k)  # share shift: by effect
        alert = Alert(alert_id=k.fingerprint, kind=k.kind, state=t.state,  # type: ignore[arg-type]
                      severity=severity, router_id=k.router_id, tier=k.tier,
                      window=t.window or "n/a", ts=_dt(now), statistics=_jsonable(t.statistics),
                      summary=t.summary,
                      runbook=runbook_link(self.config.runbook_base, k.kind))
        if t.state == "firing":
            self.firing[k.fingerprint] = alert
        else:
            self.firing.pop(k.fingerprint, None)
        self._pending.append(Output("alerts", k.fingerprint, alert))

    def _recommend(self, state: RouterState, rec: Proposal, now: float) -> None:
        assert self.signer is not None
        body = {
            "router_id": state.router_id, "seq": rec.seq, "issued_at": _dt(now),
            "valid_until": _dt(now) + timedelta(seconds=self.config.recommendation_ttl_s),
            "mode": self.signer.mode, "thresholds": rec.thresholds,
            "previous": rec.previous, "reasons": rec.reasons,
            "evidence": _jsonable(rec.evidence()),
            "expected_impact": ExpectedImpact(**rec.impact),
            "baseline_version": state.baseline.version if state.baseline else None,
            "key_id": self.signer.key_id, "signature": "0" * 64}
        unsigned = ThresholdRecommendation.model_validate(body)
        doc = unsigned.model_dump(mode="json", exclude_none=True)
        signed = unsigned.model_copy(update={
            "signature": self.signer.keyring.sign(self.signer.key_id, doc)})
        self.recommendations[state.router_id] = signed
        self._pending.append(Output("control", state.router_id, signed))

    # -- reads ---------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """A JSON-ready summary of every router: what ``GET /status`` serves."""
        routers: dict[str, dict[str, Any]] = {}
        for (router, tier), n in sorted(self.counts.routed.items()):
            routers.setdefault(router, {"routed": {}, "feedback": {}})["routed"][tier] = n
        for (router, kind), n in sorted(self.counts.feedback.items()):
            routers.setdefault(router, {"routed": {}, "feedback": {}})["feedback"][kind] = n
        for router, r in routers.items():
            state = self.routers.get(router)
            if state is not None:
                r["baseline"] = state.baseline.version if state.baseline else None
                r["snapshot"] = state.last_snapshot
                r["support_contacts"] = state.last_contacts
            rec = self.recommendations.get(router)
            r["last_recommendation"] = rec.model_dump(mode="json") if rec else None
            r["firing"] = [a.model_dump(mode="json") for a in self.firing.values()
                           if a.router_id == router]
        unjoined: dict[str, dict[str, int]] = {}
        for (router, kind), n in sorted(self.counts.unjoined.items()):
            unjoined.setdefault(router, {})[kind] = n
        return {"watermark": self.watermark, "duplicates": self.counts.duplicates,
                "unjoined_feedback": unjoined,
                "baselines": {r: b.version for r, b in sorted(self.baselines.items())},
                "join": self.join.stats, "routers": routers}


def _jsonable(obj: Any) -> Any:
    """Plain JSON values: NaN/inf become None, numpy scalars become floats."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float | np.floating):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def _example_event() -> RoutingEvent:
    return RoutingEvent.model_validate({
        "event_id": "e1", "request_id": "r1", "router_id": "support", "tier": "cheap",
        "ts": "2026-01-01T00:00:00+00:00", "score": 0.91, "route_reason": "confident_cheap",
        "thresholds": {"cheap_above": 0.7, "capable_below": 0.5, "exploration_rate": 0.1}})
