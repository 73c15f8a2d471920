"""What a router's state reads out after an evaluation: gauges, the snapshot, report data.

Pure functions of a :class:`~pipeline.core.router_state.RouterState` (they change
nothing in it): the gauge samples of :mod:`pipeline.stream.metrics`, the snapshot that
``/status``, the history and the report show, and the report's per-band quality,
live histogram and learnt contact delay.

>>> finite(float("nan")), finite(2)
(None, 2.0)
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.core.detector import StreamResult, window_name
from pipeline.core.economics import TierEconomics
from pipeline.core.histogram import coarse_splits
from pipeline.core.lagged import poisson_rate_interval
from pipeline.core.quality import FEEDBACK_SIGNALS, Totals
from pipeline.schemas import Thresholds

if TYPE_CHECKING:
    from pipeline.core.router_state import RouterState

__all__ = ["Gauge", "band_quality", "delay_summary", "finite", "gauges", "histogram",
           "rate", "snapshot"]

DAY = 86400.0
#: one gauge sample: metric name (without the ``tierwatch_`` prefix), labels, value
Gauge = tuple[str, dict[str, str], float]


def finite(x: float | None) -> float | None:
    """``x`` as a float, or ``None`` where JSON could not carry it."""
    return None if x is None or not math.isfinite(x) else float(x)


def rate(t: Totals) -> dict[str, float] | None:
    """A window's rate with its interval and effective size; ``None`` when empty."""
    if t.w <= 0:
        return None
    lo, hi = t.interval()
    return {"value": t.rate, "lo": lo, "hi": hi, "n": t.n_eff}


def gauges(state: RouterState, at: float, drift: dict[str, StreamResult],
           quality: dict[str, Any], econ: TierEconomics | None) -> list[Gauge]:
    """Every gauge sample of this evaluation, named as in ``deploy/metrics.md``."""
    c = state.config
    r = state.router_id
    out: list[Gauge] = []
    for label, res in drift.items():
        who, signal = ("all", label[7:]) if label.startswith("signal:") else (
            "all" if label == "router" else label, "score")
        for wr in res.windows:
            labels = {"router_id": r, "tier": who, "window": wr.window, "signal": signal}
            out += [("drift_psi", labels, wr.psi.effect), ("drift_ks", labels, wr.ks.effect)]
        seq = state.streams[("router" if who == "all" else who, signal)].seq
        worst = None if seq is None else seq.worst()
        if seq is not None and worst is not None:
            out.append(("drift_sequential_ratio", {"router_id": r, "tier": who,
                        "signal": signal}, worst[1] / seq.threshold))
    for tier_name, cs in quality.get("contact_cusum", {}).items():
        out.append(("support_contact_sequential_ratio", {"router_id": r, "tier": tier_name},
                    cs["ratio"]))
    tiers: list[tuple[str, str | None]] = [(t, t) for t in (c.cheap_tier, c.capable_tier)]
    for seconds in c.quality.windows:
        w = window_name(seconds)
        for name, tier in [*tiers, ("all", None)]:
            for signal in FEEDBACK_SIGNALS:
                t = state.quality.window(at, seconds, signal=signal, tier=tier)
                if t.w <= 0:
                    continue
                lo, hi = t.interval()
                for bound, v in (("estimate", t.rate), ("lower", lo), ("upper", hi)):
                    out.append(("satisfaction_ratio", {"router_id": r, "tier": name,
                                "window": w, "signal": signal, "bound": bound}, v))
            sup = state.window("support_contact", at, seconds, tier=tier)
            if sup.w > 0:
                out.append(("support_contact_ratio",
                            {"router_id": r, "tier": name, "window": w}, 1 - sup.rate))
    for tier_name, per in quality["mdd"].items():
        for key, v in per.items():
            signal, w = key.split("/")
            if v is not None and math.isfinite(v):
                out.append(("minimum_detectable_drop_ratio", {"router_id": r,
                            "tier": tier_name, "window": w, "signal": signal}, v))
    for source, th in (("recommended", state.recommended), ("applied", state.thresholds)):
        if th is not None:
            for name in ("cheap_above", "capable_below", "exploration_rate"):
                out.append(("threshold", {"router_id": r, "name": name, "source": source},
                            getattr(th, name)))
    if econ is not None:
        for quantity, v in (("cost", econ.cost_per_day),
                            ("all_capable_cost", econ.all_capable_cost_per_day),
                            ("savings", econ.savings_per_day),
                            ("hidden_cost", econ.hidden_cost_per_day),
                            ("net_value", econ.net_value_per_day)):
            out.append(("economics_usd_per_day",
                        {"router_id": r, "tier": c.cheap_tier, "quantity": quantity}, v))
    for reason, n in sorted(state.unattributed.items()):
        out.append(("support_contacts_unattributed", {"router_id": r, "reason": reason},
                    float(n)))
    pending = (state.recommended is not None and state.thresholds is not None
               and state.recommended.key != state.thresholds.key)
    out.append(("recommendation_pending", {"router_id": r}, float(pending)))
    return [g for g in out if math.isfinite(g[2])]


def snapshot(state: RouterState, now: float, drift: dict[str, StreamResult],
             quality: dict[str, Any], econ: TierEconomics | None) -> dict[str, Any]:
    """The evaluation's snapshot: each tier's 7-day quality, drift, thresholds, economics."""
    c = state.config
    at = now - 1e-6
    seconds = 7 * DAY
    tiers: dict[str, Any] = {}
    volume = {t: state.daily(at, state.routed_day, t) for t in (c.cheap_tier, c.capable_tier)}
    total = sum(volume.values())
    for tier in (c.cheap_tier, c.capable_tier):
        sat = state.quality.window(at, seconds, signal="thumbs", tier=tier)
        sup = state.window("support_contact", at, seconds, tier=tier)
        sup_rate = None
        if sup.w > 0:
            # contacts per request by request time, corrected for those still to come;
            # the exact Poisson interval on the count over the expected exposure
            bad = sup.w - sup.wy
            lo, hi = poisson_rate_interval(bad, sup.w)
            sup_rate = {"value": bad / sup.w, "lo": lo, "hi": min(hi, 1.0), "n": sup.n_eff}
        mdds = [v for v in quality["mdd"].get(tier, {}).values() if v is not None]
        tiers[tier] = {"satisfaction": rate(sat), "support_rate": sup_rate,
                       "mdd": finite(min(mdds)) if mdds else None,
                       "share": volume[tier] / total if total else None}
    drift_points = {}
    for label, res in drift.items():
        if label.startswith("signal:"):
            continue
        w = next((x for x in res.windows if x.window == "1d"), None) or res.worst
        if w is not None:
            drift_points[label] = {"psi": finite(w.psi.effect), "ks": finite(w.ks.effect),
                                   "window": w.window}
    def point(th: Thresholds | None) -> dict[str, float] | None:
        return None if th is None else {"cheap_above": th.cheap_above,
                                        "capable_below": th.capable_below,
                                        "exploration_rate": th.exploration_rate}
    return {
        "ts": now,
        "aggregate": rate(state.quality.window(at, seconds, signal="thumbs")),
        "tiers": tiers,
        "drift": drift_points,
        "recommended": point(state.recommended),
        "applied": point(state.thresholds),
        "economics": None if econ is None else {
            "savings_per_day": econ.savings_per_day,
            "hidden_cost_per_day": econ.hidden_cost_per_day,
            "net_value_per_day": econ.net_value_per_day,
            "cost_per_day": econ.cost_per_day},
    }


def delay_summary(state: RouterState, at: float) -> dict[str, float] | None:
    """The learnt contact delay: its median and 90th percentile in hours."""
    est = state.delay_estimate(at)
    if est is None:
        return None
    median, p90 = (int(np.searchsorted(est.cdf, q)) for q in (0.5, 0.9))
    return {"median_h": float(median), "p90_h": float(p90), "events": est.events}


def band_quality(state: RouterState, now: float) -> dict[str, Any]:
    """Satisfaction per score band per tier (7d), for the report."""
    at = now - 1e-6
    tiers: dict[str, list[Any]] = {}
    for tier in (state.config.cheap_tier, state.config.capable_tier):
        tiers[tier] = [rate(state.quality.window(at, 7 * DAY, signal="thumbs", tier=tier,
                                                 band=b))
                       for b in range(state.config.n_bands)]
    th = state.thresholds
    return {"edges": [float(x) for x in state.band_edges], "tiers": tiers,
            "thresholds": {"cheap_above": th.cheap_above, "capable_below": th.capable_below,
                           "exploration_rate": th.exploration_rate} if th else
            {"cheap_above": 1.0, "capable_below": 0.0, "exploration_rate": 0.0}}


def histogram(state: RouterState, now: float, seconds: float = DAY) -> dict[str, Any] | None:
    """Live vs baseline over coarse bins, for the report."""
    stream = state.streams.get(("router", "score"))
    if stream is None or state.bins is None:
        return None
    at = now - 1e-6
    live = stream.hist.window(at, seconds).astype(float)
    if live.sum() <= 0:
        return None
    splits = coarse_splits(state.bins.baseline_probs, 20)
    base = np.add.reduceat(state.bins.baseline_probs, splits[:-1])
    obs = np.add.reduceat(live / live.sum(), splits[:-1])
    edges = state.bins.fine_edges[splits]
    return {"ts": now, "edges": [float(e) for e in edges], "baseline": base.tolist(),
            "live": obs.tolist()}
