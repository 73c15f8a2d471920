"""The columnar routing path: a batch of decoded routing events counted at once.

:meth:`Monitor.observe_routing <pipeline.core.monitor.Monitor.observe_routing>` takes
events one at a time in Python: lateness, dedupe, watermark, the join, review sampling,
counters. Most batches hold nothing but new, timely decisions, and for those this module
does the same work on columns (numpy for the checks, bands and flags; the join's records
inserted in bulk), with the same effect on every piece of state and the same outputs in
the same order, byte for byte.

What is rare stays per event: late and duplicate events are screened out one by one (as
the per-event path does, with the same dead letters); a batch with an event-time jump
past an evaluation, or with a decision that releases waiting feedback, is handed back
(:func:`observe_routing_columns` returns ``None``) and takes the per-event path; a
selected review is built per event.

Events are read by attribute (``request_id``, ``router_id``, ``tier``, ``score``,
``route_reason``, ``propensity``, ``thresholds``, ``cost_usd``, ``segment``, ``signals``):
a :class:`~pipeline.schemas.RoutingEvent` or the hot-path decoder's struct; their event
times come as a column of epoch seconds.

>>> from pipeline.core.monitor import Monitor, _example_event
>>> m = Monitor()
>>> ev = _example_event()
>>> observe_routing_columns(m, [ev], np.array([ev.epoch]))
[]
>>> m.counts.routed, len(m.join)
({('support', 'cheap'): 1}, 1)
>>> observe_routing_columns(m, [ev], np.array([ev.epoch]))  # a duplicate: counted
[]
>>> m.counts.duplicates
1
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from itertools import compress, repeat
from operator import attrgetter, is_not
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.core.drift_watch import Signals, gather_signals
from pipeline.core.join import _EXPLORATION, _IN_BAND, _ONE, DecisionRecord
from pipeline.core.router_state import DAY, RouterState
from pipeline.core.sampling import DailyVolume, ReviewDecision, ReviewSampler, uniforms
from pipeline.schemas import Rejection, ReviewRequest, RoutingEvent, Thresholds

if TYPE_CHECKING:
    from pipeline.core.monitor import Monitor, Output

__all__ = ["any_late", "as_model", "observe_routing_columns"]

_EXPLORING = frozenset({"exploration", "uncertain_default"})
#: decoded thresholds → the contract's Thresholds (the router state keeps the latest)
_THRESHOLDS: dict[Any, Thresholds] = {}


_FIELDS = attrgetter("score", "thresholds", "route_reason", "tier", "segment", "propensity",
                     "signals", "cost_usd")
_POLICY = attrgetter("cheap_above", "capable_below", "exploration_rate")


def _segments(join: Any, segments: list[Any]) -> list[Any]:
    """``join.intern_segment`` of each segment; equal ones within a batch looked up once
    (the first call interns it; the table's contents are those of calling it per event)."""
    seen: dict[tuple[tuple[str, str], ...], Any] = {}
    intern_segment = join.intern_segment
    out: list[Any] = []
    append = out.append
    for s in segments:
        if not s:
            append(None)
            continue
        key = tuple(s.items())
        got = seen.get(key)
        if got is None:
            got = seen[key] = intern_segment(s)
        append(got)
    return out


def _own_thresholds(th: Any) -> Thresholds:
    """The contract's Thresholds of one event's thresholds, never shared."""
    if isinstance(th, Thresholds):
        return th
    return Thresholds.model_validate({f: getattr(th, f) for f in Thresholds.model_fields})


def _thresholds(th: Any) -> Thresholds:
    """:func:`_own_thresholds`, shared between equal thresholds (no signed zero in them)."""
    if isinstance(th, Thresholds):
        return th
    got = _THRESHOLDS.get(th)
    if got is None:
        if len(_THRESHOLDS) > 4096:
            _THRESHOLDS.clear()
        got = _THRESHOLDS[th] = _own_thresholds(th)
    return got


def as_model(ev: Any) -> RoutingEvent:
    """The contract's RoutingEvent of a decoded event (itself, if it is one already)."""
    if isinstance(ev, RoutingEvent):
        return ev
    doc = {f: getattr(ev, f) for f in RoutingEvent.model_fields}
    doc["thresholds"] = _thresholds(ev.thresholds)
    return RoutingEvent.model_validate(doc)


def any_late(ts: np.ndarray, running: np.ndarray, wm: float, lateness: float) -> bool:
    """Whether an event of a batch is later than ``lateness`` behind the watermark it
    meets: ``wm`` then the batch's own running maximum ``running`` (its events all
    accepted).

    >>> ts = np.array([100.0, 50.0, 120.0])
    >>> any_late(ts, np.maximum.accumulate(ts), 90.0, 40.0), any_late(ts, ts, 90.0, 60.0)
    (True, False)
    """
    before = np.maximum(np.concatenate(([wm], running[:-1])), wm)
    return bool((ts < before - lateness).any())


def observe_routing_columns(monitor: Monitor, events: Sequence[Any],
                            epochs: np.ndarray) -> list[Output] | None:
    """Count a batch of routing events as ``monitor.observe_routing(events)`` would.

    ``epochs[i]``: event ``i``'s time in epoch seconds. Returns the outputs (the late
    events' dead letters), or ``None``, having changed nothing, when the batch needs the
    per-event path (see the module notes).
    """
    n = len(events)
    if n == 0:
        return []
    join = monitor.join
    decisions = join.store
    rids = [ev.request_id for ev in events]
    ts = np.asarray(epochs, dtype=np.float64)
    config = monitor.config
    wm = monitor.watermark
    running = np.maximum.accumulate(ts)
    late = wm is not None and any_late(ts, running, wm, config.allowed_lateness_s)
    screened: tuple[list[tuple[int, Rejection]], int] | None = None
    if late or len(set(rids)) != n or decisions.contains_any(rids):
        # late or duplicate events: screened out one by one, as the per-event path does
        keep, dead, dups = _screen(monitor, rids, ts.tolist())
        screened = (dead, dups)
        rows = [events[i] for i in keep]
        rids = [rids[i] for i in keep]
        ts = ts[keep]
        running = np.maximum.accumulate(ts) if keep else ts
    else:
        rows = list(events)
    if rids and join._pending and any(map(join._pending.__contains__, rids)):
        return None  # waiting feedback is released, and counted, in event order
    step = config.eval_every_s
    next_eval = monitor.next_eval
    if rids:
        if next_eval is None:
            next_eval = (math.floor(float(ts[0]) / step) + 1) * step
            jumps = ts[1:] >= next_eval + step
        else:
            jumps = ts >= next_eval + step
        if bool(jumps.any()):
            return None  # the skipped evaluations run between two events
    out: list[Output] = []
    if screened is not None:
        from pipeline.core.monitor import Output  # the monitor imports this module

        dead, dups = screened
        monitor.counts.duplicates += dups
        out = [Output("dlq", events[i].request_id, rejection, events[i])
               for i, rejection in dead]
        if not rids:
            return out
    events = rows
    n = len(events)
    top = float(running[-1])
    if wm is None or top > wm:
        monitor.watermark = top
    if monitor.next_eval is None:
        monitor.next_eval = next_eval
    routers = [ev.router_id for ev in events]
    first = routers[0]
    if routers.count(first) == n:
        groups: dict[str, list[int]] = {first: list(range(n))}
    else:
        groups = {}
        for i, r in enumerate(routers):
            groups.setdefault(r, []).append(i)
    for router_id, idx in groups.items():
        group = events if len(groups) == 1 else [events[i] for i in idx]
        _count(monitor, router_id, group, ts if len(groups) == 1 else ts[idx],
               rids if len(groups) == 1 else [rids[i] for i in idx])
    return out


def _screen(monitor: Monitor, rids: list[str], ts: list[float],
            ) -> tuple[list[int], list[tuple[int, Rejection]], int]:
    """The per-event path's first pass, without changing anything: the indexes of the
    events it takes, the late ones with their rejections, and the number of duplicates."""
    wm = monitor.watermark
    lateness = monitor.config.allowed_lateness_s
    decisions = monitor.join.store
    seen: set[str] = set()
    keep: list[int] = []
    dead: list[tuple[int, Rejection]] = []
    dups = 0
    for i, (rid, t) in enumerate(zip(rids, ts, strict=True)):
        if wm is not None and t < wm - lateness:
            rejection = monitor._late(t, wm)
            if rejection is not None:
                dead.append((i, rejection))
                continue
        if rid in decisions or rid in seen:
            dups += 1
            continue
        seen.add(rid)
        keep.append(i)
        if wm is None or t > wm:
            wm = t
    return keep, dead, dups


def _count(monitor: Monitor, router_id: str, rows: Sequence[Any], ts: np.ndarray,
           rids: list[str]) -> None:
    """``Monitor._count_routing`` of one router's rows, on columns."""
    join = monitor.join
    n = len(rows)
    ts_list: list[float] = ts.tolist()
    state = monitor.router(router_id, ts_list[0])
    (score_in, ths, reasons, tiers, segments, props_in, sigs,
     costs) = (list(col) for col in zip(*map(_FIELDS, rows), strict=True))
    scores = np.asarray(score_in, dtype=np.float64)
    score_list: list[float] = scores.tolist()
    bands: list[int] = state.bands(scores).tolist()
    cheap, capable, exploration = (np.asarray(col, dtype=np.float64)
                                   for col in zip(*map(_POLICY, ths), strict=True))
    in_band = (capable <= scores) & (scores < cheap)
    exploring = np.array(list(map(_EXPLORING.__contains__, reasons)), dtype=bool)
    flags: list[int] = (np.where(in_band, _IN_BAND, 0)
                        | np.where(exploring, _EXPLORATION, 0)).tolist()
    intern = join._intern
    interned = {t: intern(t) for t in dict.fromkeys(tiers)}
    segs = _segments(join, segments)
    props = [_ONE if p == 1.0 else float(p) for p in props_in]
    # tuple.__new__ builds each record in C: the same NamedTuple as DecisionRecord(...)
    records = list(map(tuple.__new__, repeat(DecisionRecord, n), zip(
        ts_list, rids, repeat(intern(router_id), n), map(interned.__getitem__, tiers),
        score_list, props, bands, flags, segs, repeat(None, n), strict=True)))
    join.store.put_many(records)
    join._counts["decisions"] += n
    routed = monitor.counts.routed
    per_tier = Counter(tiers)
    hours: list[int] = (ts // 3600).astype(np.int64).tolist()
    for tier, k in per_tier.items():
        key = (router_id, tier)
        routed[key] = routed.get(key, 0) + k
    _review(monitor, router_id, rows, rids, tiers, ts, scores, cheap, capable, sigs, bands)
    signals = gather_signals(ts_list, sigs)
    # -0.0 == 0.0, but the two are written differently: a batch holding one (or a
    # cascade's escalate_below) keeps each event's own thresholds, as the per-event path
    one = ths.count(ths[0]) == n  # equal thresholds (-0.0 == 0.0: see signed)
    signed = bool(np.signbit(cheap).any() or np.signbit(capable).any()
                  or np.signbit(exploration).any()) or (
        ths[0].escalate_below is not None if one
        else any(th.escalate_below is not None for th in ths))
    if signed:
        thresholds = [_own_thresholds(th) for th in ths]
    elif one:
        thresholds = [_thresholds(ths[0])] * n
    else:
        thresholds = [_thresholds(th) for th in ths]
    _observe_state(state, ts, scores, tiers, reasons, thresholds, cheap, capable, exploration,
                   costs, signals, bands, per_tier, hours, exact=not signed)
    # cohorts and subjects (pipeline.core.delayed), as Monitor._count_routing's rows
    state.delayed.observe_columns(
        ts, tiers, [(th.key, ev.classifier_version) for th, ev in zip(thresholds, rows,
                                                                      strict=True)],
        [ev.subject_id for ev in rows], props_in, (in_band & exploring).tolist())
    # SegmentCounts.observe_many of the rows with a segment, grouped here at once
    segmented = list(map(is_not, segs, repeat(None)))
    if any(segmented):
        lo, hi = state.segments.reference
        in_ref = ((lo <= ts) & (ts < hi)).tolist()
        state.segments.observe_groups(Counter(compress(zip(
            tiers, hours, in_ref, segs, strict=True), segmented)).items())


# -- review sampling ---------------------------------------------------------------------------
def _review(monitor: Monitor, router_id: str, rows: Sequence[Any], rids: list[str],
            tiers: list[str], ts: np.ndarray, scores: np.ndarray, cheap: np.ndarray,
            capable: np.ndarray, sigs: list[Any], bands: list[int]) -> None:
    """``Monitor._review`` of each row in order, on columns.

    Per tier, a run of events on one event-time day at or after the tier's newest day
    sees one daily estimate (or a running same-day projection), so priorities, inclusion
    probabilities and the day's totals are columns; the run's first event and anything
    out of day order are offered one by one. The uniforms are hashed per event.
    """
    sampler = monitor.samplers.get(router_id)
    if sampler is None:
        sampler = monitor.samplers[router_id] = ReviewSampler(
            monitor.config.review_quota_per_day, seed=monitor.config.review_seed)
    n = len(rows)
    if sampler.ood_threshold is not None:  # not the monitor's configuration: one by one
        for i in range(n):
            monitor._review(rows[i], float(ts[i]), bands[i], rows[i].thresholds, sigs[i])
        return
    inside = (capable <= scores) & (scores < cheap)
    dist = np.where(inside, 0.0, np.minimum(np.abs(scores - cheap), np.abs(scores - capable)))
    z = dist / sampler.boundary_width
    exp = math.exp
    gauss = np.asarray([exp(x) for x in ((-0.5 * z) * z).tolist()], dtype=np.float64)
    prio = 1.0 + (sampler.boundary_boost - 1.0) * gauss
    u = uniforms(sampler.seed, rids)
    days = np.floor(ts / sampler.day_seconds)
    pi = np.zeros(n)
    selected = np.zeros(n, dtype=bool)
    capped = np.zeros(n, dtype=bool)
    tier_arr = np.asarray(tiers, dtype=object)
    for tier in dict.fromkeys(tiers):
        idx = np.flatnonzero(tier_arr == tier) if len(set(tiers)) > 1 else np.arange(n)
        _review_tier(sampler, tier, idx, rids, ts, days, prio, u, pi, selected, capped)
    last = n - 1
    sampler.last = ReviewDecision(rids[last], tiers[last], bool(selected[last]),
                                  float(pi[last]), float(u[last]), float(prio[last]),
                                  bool(capped[last]))
    from pipeline.core.monitor import Output  # the monitor imports this module

    for i in np.flatnonzero(selected).tolist():
        ev = rows[i]
        monitor._pending.append(Output("review", ev.request_id, ReviewRequest(
            request_id=ev.request_id, router_id=ev.router_id, tier=ev.tier, score=ev.score,
            band=bands[i], inclusion_probability=float(pi[i]),
            reason="boundary" if prio[i] > 1.0 else "random", ts=ev.ts)))


def _review_tier(sampler: ReviewSampler, tier: str, idx: np.ndarray, rids: list[str],
                 ts: np.ndarray, days: np.ndarray, prio: np.ndarray, u: np.ndarray,
                 pi: np.ndarray, selected: np.ndarray, capped: np.ndarray) -> None:
    """One tier's rows (``idx``, in order) through ``sampler``; fills pi/selected/capped."""
    day_of = days[idx]
    cuts = np.flatnonzero(np.diff(day_of)) + 1
    for run in np.split(idx, cuts):
        first = int(run[0])
        _offer_one(sampler, tier, first, rids, ts, prio, u, pi, selected, capped)
        rest = run[1:]
        if rest.size == 0:
            continue
        vol = sampler._volume[tier]
        day = int(days[first])
        if vol._head != day:  # out of day order: the rest one by one
            for i in rest.tolist():
                _offer_one(sampler, tier, i, rids, ts, prio, u, pi, selected, capped)
            continue
        _offer_run(sampler, tier, vol, day, rest, ts, prio, u, pi, selected, capped)


def _offer_one(sampler: ReviewSampler, tier: str, i: int, rids: list[str], ts: np.ndarray,
               prio: np.ndarray, u: np.ndarray, pi: np.ndarray, selected: np.ndarray,
               capped: np.ndarray) -> None:
    """``ReviewSampler.offer`` of row ``i``, its priority already known."""
    pi[i], selected[i], capped[i] = sampler.admit(tier, float(ts[i]), float(prio[i]),
                                                  float(u[i]))


def _offer_run(sampler: ReviewSampler, tier: str, vol: DailyVolume, day: int, run: np.ndarray,
               ts: np.ndarray, prio: np.ndarray, u: np.ndarray, pi: np.ndarray,
               selected: np.ndarray, capped: np.ndarray) -> None:
    """Rows ``run`` of one tier, all on ``day``, the tier's newest day: columns."""
    q = sampler.quota(tier)
    r = prio[run]
    row = vol._days[day]
    total = np.add.accumulate(np.concatenate(([row[0]], r)))  # sequential, as += is
    if q <= 0:
        p = np.zeros(run.size)
    else:
        est = vol.estimate(day)
        if est is not None and est > 0:
            expected = np.full(run.size, est)
        else:
            reqs = row[1] + np.arange(1, run.size + 1, dtype=np.float64)
            init = (None if sampler.initial_daily_volume is None
                    else sampler.initial_daily_volume.get(tier))
            if init is not None and init > 0:
                expected = init * total[1:] / reqs
            else:
                elapsed = np.maximum(ts[run] - day * sampler.day_seconds,
                                     sampler.min_elapsed_seconds)
                expected = total[1:] * sampler.day_seconds / elapsed
        p = np.minimum(1.0, q * r / expected)
    sel = u[run] < p
    cap = np.zeros(run.size, dtype=bool)
    if sel.any() and sampler.cap_factor is not None:
        done = row[2]
        limit = sampler.cap_factor * q
        for j in np.flatnonzero(sel).tolist():
            if done >= limit:
                sel[j], cap[j] = False, True
                sampler.n_capped += 1
            else:
                done += 1.0
    row[0] = float(total[-1])
    row[1] += float(run.size)
    row[2] += float(sel.sum())
    pi[run], selected[run], capped[run] = p, sel, cap


# -- the router state -------------------------------------------------------------------------
def _observe_state(state: RouterState, ts: np.ndarray, scores: np.ndarray, tiers: list[str],
                   reasons: list[str], thresholds: list[Thresholds], cheap: np.ndarray,
                   capable: np.ndarray, exploration: np.ndarray, costs: list[float | None],
                   signals: Signals, bands: list[int], per_tier: Counter[str],
                   hours: list[int], exact: bool = True) -> None:
    """``RouterState.observe_routing`` on columns (one policy and one day per batch is
    the common case; anything else, or ``exact=False``: signed zeros in the thresholds,
    goes to the per-event code). ``per_tier``: the batch's events per tier; ``hours``:
    each event's epoch hour."""
    n = ts.size
    ts_list: list[float] = ts.tolist()
    one_policy = exact and bool((cheap == cheap[0]).all() and (capable == capable[0]).all()
                                and (exploration == exploration[0]).all())
    days = ts // DAY
    if not one_policy or bool((days != days[0]).any()):
        state.observe_routing(ts, scores, tiers, reasons, thresholds, costs, signals, bands)
        return
    before = np.maximum(np.concatenate(([state.thresholds_ts], np.maximum.accumulate(ts)[:-1])),
                        state.thresholds_ts)
    newer = np.flatnonzero(ts >= before)
    if newer.size:
        i = int(newer[-1])
        state.thresholds, state.thresholds_ts = thresholds[i], ts_list[i]
    key = thresholds[0].key
    policies = state.reference_policies
    in_ref = ts < state.reference_end
    known = key in policies or np.concatenate(([False], np.logical_or.accumulate(in_ref)[:-1]))
    if in_ref.any():
        policies.add(key)
    off = ts[~in_ref & ~np.asarray(known, dtype=bool)]
    if off.size and float(off.max()) > state.off_policy_ts:
        state.off_policy_ts = float(off.max())
    for tier, k in per_tier.items():
        state.routed[tier] = state.routed.get(tier, 0) + k
    day = int(days[0])
    per = state.routed_day.setdefault(day, {})
    for tier, k in per_tier.items():
        per[tier] = per.get(tier, 0) + k
    if any(c is not None for c in costs):
        c = state.cost_day.setdefault(day, {})
        for tier, cost in zip(tiers, costs, strict=True):
            if cost is not None:
                c[tier] = c.get(tier, 0.0) + cost
    state.count_routed_hours(Counter(zip(tiers, bands, hours, strict=True)).items())
    state.observe_scores(ts, scores, tiers, reasons, [key] * n, signals)
