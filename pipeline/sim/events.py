"""Wire formatting: arrays → JSON-ready dicts matching RoutingEvent / FeedbackEvent v1.

This is the hot loop of the simulator. Arrays are converted with ``tolist()`` once and the
dicts are built in one comprehension each; every dict (including nested ones) is fresh, so
consumers may mutate them.

>>> ids = request_ids("support-7-", 41, 2)
>>> ids
['support-7-41', 'support-7-42']
>>> feedback_event_id(ids[0], "thumbs")
'support-7-41.thumbs'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.schemas import SCHEMA_VERSION, Thresholds
from pipeline.sim.clock import format_us
from pipeline.sim.feedback import KINDS, REVIEW, SHADOW, SOURCES, FeedbackDraw
from pipeline.sim.params import BoolArray, FloatArray, IntArray
from pipeline.sim.router import REASONS

Event = dict[str, Any]


def request_ids(prefix: str, first: int, n: int) -> list[str]:
    """``n`` request ids numbered from ``first``."""
    return [f"{prefix}{i}" for i in range(first, first + n)]


def feedback_event_id(request_id: str, kind: str) -> str:
    """A feedback event's id: each source sends at most one event per request and kind."""
    return f"{request_id}.{kind}"


@dataclass(frozen=True, slots=True)
class RoutingColumns:
    """Everything that varies per routing event, as arrays; constants as plain values."""

    ts_us: IntArray
    request_id: list[str]
    cheap: BoolArray
    score: FloatArray
    reason: IntArray
    propensity: FloatArray
    classifier: IntArray
    cost_usd: FloatArray
    latency_ms: FloatArray
    cohort: IntArray
    ood_distance: FloatArray
    self_confidence: FloatArray  # NaN where the request never reached the cheap model


def routing_dicts(
    cols: RoutingColumns, *, router_id: str, tiers: tuple[str, str], models: tuple[str, str],
    thresholds: Thresholds, policy_seq: int, classifier_versions: list[str],
    cohort_names: list[str],
) -> list[Event]:
    """One RoutingEvent dict per row; ``tiers``/``models`` are indexed by ``cheap`` (0/1)."""
    th = thresholds.model_dump(exclude_none=True)
    ts = format_us(cols.ts_us)
    tier = [tiers[c] for c in cols.cheap.tolist()]
    model = [models[c] for c in cols.cheap.tolist()]
    reason = [REASONS[r] for r in cols.reason.tolist()]
    version = [classifier_versions[v] for v in cols.classifier.tolist()]
    cohort = [cohort_names[c] for c in cols.cohort.tolist()]
    ood = np.round(cols.ood_distance, 4).tolist()
    conf = cols.self_confidence
    has_conf = ~np.isnan(conf)
    if has_conf.any():
        conf_list = np.round(np.where(has_conf, conf, 0.0), 4).tolist()
        signals: list[dict[str, float]] = [
            {"ood_distance": o, "self_confidence": c} if h else {"ood_distance": o}
            for o, c, h in zip(ood, conf_list, has_conf.tolist(), strict=True)]
    else:
        signals = [{"ood_distance": o} for o in ood]
    return [
        {"schema_version": SCHEMA_VERSION, "event_id": rid + ".route", "request_id": rid,
         "router_id": router_id, "ts": t, "tier": ti, "model": mo, "score": s,
         "route_reason": re, "propensity": p, "thresholds": th.copy(),
         "policy_seq": policy_seq, "classifier_version": v, "cost_usd": c,
         "latency_ms": la, "segment": {"cohort": co}, "signals": si}
        for rid, t, ti, mo, s, re, p, v, c, la, co, si in zip(
            cols.request_id, ts, tier, model, cols.score.tolist(), reason,
            cols.propensity.tolist(), version, np.round(cols.cost_usd, 8).tolist(),
            np.round(cols.latency_ms, 1).tolist(), cohort, signals, strict=True)
    ]


def feedback_items(
    draw: FeedbackDraw, *, event_ts_us: IntArray, request_id: list[str], router_id: str,
    tiers: tuple[str, str], cheap: BoolArray, score: FloatArray,
) -> list[tuple[int, Event]]:
    """``(time µs, FeedbackEvent dict)`` for every row of ``draw``.

    ``event_ts_us``, ``request_id``, ``cheap`` and ``score`` describe the chunk's requests;
    ``draw.index`` points into them. Reviews carry tier, score and weight; shadow scores
    carry the tier; the rest carry neither.
    """
    ts_us = event_ts_us[draw.index] + np.maximum(np.round(draw.delay_s * 1e6), 1).astype(
        np.int64)
    ts = format_us(ts_us)
    out: list[tuple[int, Event]] = []
    for t_us, t, i, k, v, w in zip(ts_us.tolist(), ts, draw.index.tolist(), draw.kind.tolist(),
                                   draw.value.tolist(), draw.weight.tolist(), strict=True):
        rid = request_id[i]
        ev: Event = {"schema_version": SCHEMA_VERSION,
                     "event_id": feedback_event_id(rid, KINDS[k]), "request_id": rid,
                     "router_id": router_id, "ts": t, "kind": KINDS[k], "value": v,
                     "source": SOURCES[k]}
        if k == REVIEW:
            ev["tier"] = tiers[int(cheap[i])]
            ev["score"] = float(score[i])
            ev["weight"] = w
        elif k == SHADOW:
            ev["tier"] = tiers[int(cheap[i])]
        out.append((t_us, ev))
    return out
