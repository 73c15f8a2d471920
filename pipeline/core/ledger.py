"""The router's ledger: what the cheap tier saves, what it costs, and per band the
evidence a threshold recommendation is decided on.

Pure functions of a :class:`~pipeline.core.router_state.RouterState` (they change
nothing in it): the prices the router actually paid, the cheap tier's extra bad-outcome
and support-contact rates over the capable tier's, its economics (the Pareto trap), the
per-band contact gap of cheap over capable, and the expected impact of moving the
thresholds.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import TYPE_CHECKING

from pipeline.core.economics import Prices, TierEconomics, tier_economics
from pipeline.core.recommend import BandEvidence
from pipeline.schemas import Thresholds

if TYPE_CHECKING:
    from pipeline.core.router_state import RouterState

__all__ = ["band_evidence", "economics", "expected_impact", "extra_rate", "prices"]

DAY = 86400.0


def economics(state: RouterState, at: float) -> TierEconomics | None:
    """The cheap tier's savings against its hidden cost (7d); ``None`` before routing."""
    c = state.config
    per_day = state.daily(at, state.routed_day, c.cheap_tier)
    if per_day <= 0:
        return None
    extra_bad = extra_rate(state, at, "thumbs")
    extra_sup = extra_rate(state, at, "support_contact")
    price = prices(state, at)
    delayed = state.delayed.hidden_cost(price.cost_per_bad_survey,
                                        price.cost_per_churned_subject, per_day)
    return tier_economics(price, requests_per_day=per_day, extra_bad_rate=extra_bad,
                          extra_support_rate=extra_sup, delayed_cost_per_day=delayed)


def prices(state: RouterState, at: float) -> Prices:
    """The configured prices, with per-request prices the router actually paid (7d)."""
    c = state.config
    observed = {t: state.daily(at, state.cost_day, t) / max(state.daily(at, state.routed_day, t),
                                                             1e-9)
                for t in (c.cheap_tier, c.capable_tier)}
    if all(v > 0 for v in observed.values()):
        return replace(c.prices, cheap_per_request=observed[c.cheap_tier],
                       capable_per_request=observed[c.capable_tier])
    return c.prices


def extra_rate(state: RouterState, at: float, signal: str) -> tuple[float, float, float]:
    """Cheap's bad rate minus capable's, per request, with a 95 % interval (7d window)."""
    c = state.config
    cheap = state.window(signal, at, 7 * DAY, tier=c.cheap_tier)
    capable = state.window(signal, at, 7 * DAY, tier=c.capable_tier)
    if cheap.w <= 0 or capable.w <= 0:
        return (0.0, 0.0, 0.0)
    diff = capable.rate - cheap.rate  # good-rate gap = extra bad rate of cheap
    se = math.sqrt(max(cheap.variance, 0.0) + max(capable.variance, 0.0))
    if signal == "thumbs":
        # thumbs come from ~3 % of users: scale feedback bad-rate to every request
        fb = (state.daily(at, state.feedback_day, c.cheap_tier)
              / max(state.daily(at, state.routed_day, c.cheap_tier), 1.0))
        diff, se = diff * min(fb, 1.0), se * min(fb, 1.0)
    return (diff, diff - 1.96 * se, diff + 1.96 * se)


def band_evidence(state: RouterState, at: float) -> list[BandEvidence]:
    """Per-band extra support contacts per routed request of cheap over capable (7d).

    Above ``cheap_above`` the capable tier serves nothing, so a band without enough
    capable evidence borrows it from the nearest band that has it (ties: the higher
    band): capable quality varies slowly with the score, and its nearest neighbours
    are the most alike queries it serves. Pooling every capable request instead
    would compare the cheap tier's easiest queries with the capable tier's hardest.
    """
    c = state.config
    seconds = 7 * DAY
    capable_all = state.window("support_contact", at, seconds, tier=c.capable_tier)
    capable_by_band = [state.window("support_contact", at, seconds, tier=c.capable_tier,
                                   band=b)
                       for b in range(c.n_bands)]
    enough = [b for b in range(c.n_bands)
              if capable_by_band[b].n_eff >= c.quality.min_effective_n]
    total = state.streams.get(("router", "score"))
    live = total.hist.window(at, seconds).astype(float) if total else None
    evidence = []
    for b in range(c.n_bands):
        cheap = state.window("support_contact", at, seconds, tier=c.cheap_tier, band=b)
        if enough:
            capable = capable_by_band[min(enough, key=lambda k: (abs(k - b), -k))]
        else:
            capable = capable_all
        share = 0.0
        if live is not None and live.sum() > 0 and state.bins is not None:
            mids = state.bins.fine_edges
            centre = (mids[:-1] + mids[1:]) / 2
            inside = (centre >= state.band_edges[b]) & (centre < state.band_edges[b + 1])
            share = float(live[inside].sum() / live.sum())
        lo, hi = float(state.band_edges[b]), float(state.band_edges[b + 1])
        if cheap.w <= 0 or capable.w <= 0:
            evidence.append(BandEvidence(lo, hi, None, None, None, cheap.n_eff, share))
            continue
        # rates are of "no contact": a contact is a bad outcome; score intervals, since
        # contacts are rare (each bound ≈ 99 % one-sided before moving either way)
        evidence.append(BandEvidence.from_counts(
            lo, hi, cheap_bad=(1 - cheap.rate) * cheap.n_eff, cheap_n=cheap.n_eff,
            capable_bad=(1 - capable.rate) * capable.n_eff, capable_n=capable.n_eff,
            live_share=share))
    return evidence


def expected_impact(state: RouterState, at: float, old: Thresholds, new: Thresholds,
                    bands: list[BandEvidence]) -> dict[str, float]:
    """Cost per day and quality change of ``new`` vs ``old`` from the live histogram.

    ``quality_change`` is in support contacts per request (negative: worse); prices
    are those the router paid over the last week when events carry ``cost_usd``.
    """
    c = state.config
    volume = sum(state.daily(at, state.routed_day, t) for t in (c.cheap_tier,
                                                               c.capable_tier))
    price = prices(state, at)

    def cheap_share(th: Thresholds) -> float:
        return sum(b.live_share * th.p_cheap((b.lo + b.hi) / 2) for b in bands)

    def cost(share: float) -> float:
        return volume * (share * price.cheap_per_request
                         + (1 - share) * price.capable_per_request)

    s_old, s_new = cheap_share(old), cheap_share(new)
    dq = -sum(b.live_share * (new.p_cheap((b.lo + b.hi) / 2) - old.p_cheap((b.lo + b.hi) / 2))
              * (b.gap or 0.0) for b in bands)
    change = cost(s_new) - cost(s_old)
    return {"cost_per_day_usd": cost(s_new), "cost_change_per_day_usd": change,
            "cheap_share": min(1.0, max(0.0, s_new)), "quality_change": dq,
            "net_value_change_per_day_usd": -change
            + volume * dq * price.cost_per_support_contact}
