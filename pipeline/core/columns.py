"""The columnar routing path: a batch of decoded routing events counted at once.

:meth:`Monitor.observe_routing <pipeline.core.monitor.Monitor.observe_routing>` takes
events one at a time in Python: lateness, dedupe, watermark, the join, review sampling,
counters. Most batches hold nothing but new, timely decisions, and for those this module
does the same work on columns (numpy for the checks, bands and flags; the join's records
inserted in bulk), with the same effect on every piece of state and the same outputs in
the same order, byte for byte.

What is rare stays per event: a batch with a late or duplicate event, an event-time jump
past an evaluation, or a decision that releases waiting feedback is handed back
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
>>> observe_routing_columns(m, [ev], np.array([ev.epoch])) is None  # a duplicate
True
"""

from __future__ import annotations

import heapq
import math
from collections import Counter
from collections.abc import Sequence
from itertools import repeat
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.core.join import _EXPLORATION, _IN_BAND, _ONE, DecisionRecord
from pipeline.schemas import RoutingEvent, Thresholds

if TYPE_CHECKING:
    from pipeline.core.monitor import Monitor, Output

__all__ = ["as_model", "observe_routing_columns"]

_EXPLORING = ("exploration", "uncertain_default")
#: decoded thresholds → the contract's Thresholds (the router state keeps the latest)
_THRESHOLDS: dict[Any, Thresholds] = {}


def _thresholds(th: Any) -> Thresholds:
    if isinstance(th, Thresholds):
        return th
    got = _THRESHOLDS.get(th)
    if got is None:
        if len(_THRESHOLDS) > 4096:
            _THRESHOLDS.clear()
        got = _THRESHOLDS[th] = Thresholds.model_validate(
            {f: getattr(th, f) for f in Thresholds.model_fields})
    return got


def as_model(ev: Any) -> RoutingEvent:
    """The contract's RoutingEvent of a decoded event (itself, if it is one already)."""
    if isinstance(ev, RoutingEvent):
        return ev
    doc = {f: getattr(ev, f) for f in RoutingEvent.model_fields}
    doc["thresholds"] = _thresholds(ev.thresholds)
    return RoutingEvent.model_validate(doc)


def observe_routing_columns(monitor: Monitor, events: Sequence[Any],
                            epochs: np.ndarray) -> list[Output] | None:
    """Count a batch of routing events as ``monitor.observe_routing(events)`` would.

    ``epochs[i]``: event ``i``'s time in epoch seconds. Returns the outputs (none: no
    event of a batch taken here is late), or ``None``, having changed nothing, when the
    batch needs the per-event path (see the module notes).
    """
    n = len(events)
    if n == 0:
        return []
    join = monitor.join
    decisions = join._decisions
    rids = [ev.request_id for ev in events]
    if len(set(rids)) != n or not decisions.keys().isdisjoint(rids):
        return None  # duplicates: counted one by one
    if join._pending and not join._pending.keys().isdisjoint(rids):
        return None  # waiting feedback is released, and counted, in event order
    ts = np.asarray(epochs, dtype=np.float64)
    config = monitor.config
    wm = monitor.watermark
    running = np.maximum.accumulate(ts)
    if wm is not None:
        before = np.maximum(np.concatenate(([wm], running[:-1])), wm)
        if bool((ts < before - config.allowed_lateness_s).any()):
            return None  # late events: dead-lettered one by one
    step = config.eval_every_s
    next_eval = monitor.next_eval
    if next_eval is None:
        next_eval = (math.floor(float(ts[0]) / step) + 1) * step
        jumps = ts[1:] >= next_eval + step
    else:
        jumps = ts >= next_eval + step
    if bool(jumps.any()):
        return None  # the skipped evaluations run between two events
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
        rows = events if len(groups) == 1 else [events[i] for i in idx]
        _count(monitor, router_id, rows, ts if len(groups) == 1 else ts[idx],
               rids if len(groups) == 1 else [rids[i] for i in idx])
    return []


def _count(monitor: Monitor, router_id: str, rows: Sequence[Any], ts: np.ndarray,
           rids: list[str]) -> None:
    """``Monitor._count_routing`` of one router's rows, on columns."""
    join = monitor.join
    n = len(rows)
    ts_list: list[float] = ts.tolist()
    state = monitor.router(router_id, ts_list[0])
    scores = np.asarray([ev.score for ev in rows], dtype=np.float64)
    score_list: list[float] = scores.tolist()
    bands: list[int] = state.bands(scores).tolist()
    ths = [ev.thresholds for ev in rows]
    cheap = np.asarray([th.cheap_above for th in ths], dtype=np.float64)
    capable = np.asarray([th.capable_below for th in ths], dtype=np.float64)
    reasons = [ev.route_reason for ev in rows]
    in_band = (capable <= scores) & (scores < cheap)
    exploring = np.fromiter((r in _EXPLORING for r in reasons), bool, n)
    flags: list[int] = (np.where(in_band, _IN_BAND, 0)
                        | np.where(exploring, _EXPLORATION, 0)).tolist()
    tiers = [ev.tier for ev in rows]
    intern = join._intern
    interned = {t: intern(t) for t in dict.fromkeys(tiers)}
    segments = [ev.segment for ev in rows]
    intern_segment = join._intern_segment
    segs = [intern_segment(s) if s else None for s in segments]
    props = [_ONE if p == 1.0 else float(p) for p in (ev.propensity for ev in rows)]
    records = list(map(DecisionRecord, ts_list, rids, repeat(intern(router_id), n),
                       map(interned.__getitem__, tiers), score_list, props, bands, flags,
                       segs))
    join._decisions.update(zip(rids, records, strict=True))
    heap = join._decision_heap
    push = heapq.heappush
    for rec in records:
        push(heap, rec)
    join._counts["decisions"] += n
    routed = monitor.counts.routed
    for tier, k in Counter(tiers).items():
        key = (router_id, tier)
        routed[key] = routed.get(key, 0) + k
    review = monitor._review
    signals: dict[str, list[tuple[float, float]]] = {}
    for ev, t, band, th, sig in zip(rows, ts_list, bands, ths, (ev.signals for ev in rows),
                                    strict=True):
        review(ev, t, band, th, sig)
        if sig:
            for name, value in sig.items():
                pairs = signals.get(name)
                if pairs is None:
                    pairs = signals[name] = []
                pairs.append((t, value))
    thresholds = [_thresholds(th) for th in ths]
    costs = [ev.cost_usd for ev in rows]
    state.observe_routing(ts, scores, tiers, reasons, thresholds, costs, signals, bands)
    seg_rows = [(tier, t, seg) for tier, t, s, seg in zip(tiers, ts_list, segments, segs,
                                                          strict=True) if s and seg is not None]
    if seg_rows:
        state.segments.observe_many(seg_rows)
