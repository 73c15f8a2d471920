"""Small traffic generators for the lagged-attribution tests: volume of any shape, contacts
and votes that lag their requests, fed to a RouterState hour by hour in event-time order.

Deliberately independent of ``pipeline.sim`` (another generator, written separately), so
the estimator is not tuned to one simulator.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline.core.router_state import MonitorConfig, RouterState
from pipeline.schemas import Thresholds

DAY = 86400.0
HOUR = 3600.0
T0 = 1_767_571_200.0  # Monday 2026-01-05 00:00 UTC
QUALITY_KINDS = frozenset({"tier_quality_drop", "tier_quality_gap", "boundary_degradation",
                           "support_contact_rise", "pareto_trap"})


def volume(hours: np.ndarray, *, weekend: float = 0.3, diurnal: float = 0.6) -> np.ndarray:
    """Relative volume of each hour since ``T0`` (a Monday): weekends at ``weekend``, a
    diurnal cycle of peak/trough ``(1 + diurnal) / (1 - diurnal)`` (×4 at 0.6)."""
    day = (hours // 24) % 7
    week = np.where(day >= 5, weekend, 1.0)
    return week * (1.0 + diurnal * np.sin(2 * np.pi * ((hours % 24) - 9) / 24))


def exponential_bucket_cdf(mean_h: float, depth: int) -> np.ndarray:
    """cdf of ``floor(U + D)`` (whole hours from a decision's hour to its contact's) for a
    decision uniform in its hour and an exponential delay ``D`` of mean ``mean_h``."""
    a = np.arange(depth)
    cdf = 1.0 - mean_h * math.expm1(1.0 / mean_h) * np.exp(-(a + 1) / mean_h)
    cdf[-1] = 1.0
    return cdf


@dataclass
class Feed:
    """Feeds one router hour by hour: routing first, then the feedback that has arrived
    by the hour's end, then the hourly evaluation."""

    state: RouterState
    rng: np.random.Generator
    thresholds: Thresholds
    pending: list[tuple[float, int, dict[str, Any]]] = field(default_factory=list)
    alerts: list[tuple[float, str, str | None, str]] = field(default_factory=list)
    _n: int = 0

    def hour(self, h: int, n: int, *, contact_p: Callable[[np.ndarray, np.ndarray], np.ndarray],
             delay_h: Callable[[int], np.ndarray],
             score: Callable[[int], np.ndarray] | None = None,
             extra: Callable[[np.ndarray, np.ndarray, np.ndarray], list[dict[str, Any]]]
             | None = None) -> None:
        rng, th = self.rng, self.thresholds
        start = T0 + h * HOUR
        ts = np.sort(start + rng.uniform(0, HOUR, n))
        scores = rng.uniform(0, 1, n) if score is None else score(n)
        explore = rng.uniform(0, 1, n) < th.exploration_rate
        cheap = (scores >= th.cheap_above) | (
            (scores >= th.capable_below) & (scores < th.cheap_above) & explore)
        tiers = np.where(cheap, "cheap", "capable")
        bands = self.state.bands(scores)
        reasons = ["confident_cheap" if s >= th.cheap_above else
                   ("exploration" if c else "uncertain_default") if s >= th.capable_below
                   else "confident_capable" for s, c in zip(scores, cheap, strict=True)]
        self.state.observe_routing(ts, scores, tiers.tolist(), reasons, [th] * n, [None] * n,
                                   {}, bands.tolist())
        contacts = rng.uniform(0, 1, n) < contact_p(scores, cheap)
        idx = np.flatnonzero(contacts)
        for i, d in zip(idx, delay_h(idx.size), strict=True):
            self._push(ts[i] + d * HOUR, {"tier": tiers[i], "score": float(scores[i]),
                                          "kind": "support_contact", "value": 1.0,
                                          "decision_ts": float(ts[i])})
        if extra is not None:
            for fb in extra(ts, scores, cheap):
                self._push(fb.pop("arrival"), fb)
        self.close(h)

    def close(self, h: int) -> None:
        """Feed the feedback that arrived by the end of hour ``h``; evaluate there."""
        end = T0 + (h + 1) * HOUR
        while self.pending and self.pending[0][0] < end:
            at, _, fb = heapq.heappop(self.pending)
            fb.setdefault("propensity", None)
            fb.setdefault("in_band", None)
            self.state.observe_feedback(ts=at, weight=None, **fb)
        ev = self.state.evaluate(end)
        for t in ev.transitions:
            if t.state == "firing":
                self.alerts.append((end, t.key.kind, t.key.tier, t.summary))

    def _push(self, at: float, fb: dict[str, Any]) -> None:
        self._n += 1
        heapq.heappush(self.pending, (at, self._n, fb))


def new_state(config: MonitorConfig | None = None) -> RouterState:
    return RouterState("r", config or MonitorConfig(recommend=False), start=T0)


def quality_alerts(feed: Feed) -> list[tuple[float, str, str | None, str]]:
    return [a for a in feed.alerts if a[1] in QUALITY_KINDS]


# -- a hard cohort that looks simple (issue 14, acceptance 3) ---------------------------------
@dataclass(frozen=True)
class CohortScenario:
    """Base traffic plus, from ``onset_day``, a cohort of ``share`` of traffic scored just
    above ``cheap_above`` whose cheap answers are wrong ``cohort_wrong`` of the time.

    Users react as in ``pipeline.sim.params.Users`` (the same published rates, drawn here
    independently): thumbs from 2.5 % of happy and 4.6 % of unhappy users (down 3 % / 85 %),
    support contacts from 0.2 % / 5 % of them, hours later (log-normal, median 8 h); a
    shadow scorer on 1 % of traffic (agreement about 0.85 when the answer is right, 0.35
    when wrong), minutes later.
    """

    rate: float = 0.3  # routing events per second on average
    share: float = 0.05
    cohort_wrong: float = 0.5
    onset_day: float = 21.0
    days: float = 24.0
    weekend: float = 0.4
    diurnal: float = 0.6


def run_cohort(sc: CohortScenario, seed: int,
               config: MonitorConfig | None = None) -> tuple[Feed, float]:
    """Feed the scenario hour by hour; return the feed (its alerts) and the onset time."""
    rng = np.random.default_rng(seed)
    th = Thresholds(cheap_above=0.7, capable_below=0.5, exploration_rate=0.1)
    feed = Feed(new_state(config), rng, th)
    hours = int(sc.days * 24)
    rel = volume(np.arange(hours), weekend=sc.weekend, diurnal=sc.diurnal)
    lam = sc.rate * HOUR * rel / rel[: 7 * 24].mean()
    onset_h = int(sc.onset_day * 24)
    state = feed.state
    for h in range(hours):
        n = int(rng.poisson(lam[h]))
        start = T0 + h * HOUR
        ts = np.sort(start + rng.uniform(0, HOUR, n))
        in_cohort = (rng.uniform(0, 1, n) < sc.share) if h >= onset_h else np.zeros(n, bool)
        scores = np.where(in_cohort, rng.uniform(0.70, 0.80, n), rng.beta(2.5, 1.5, n))
        explore = rng.uniform(0, 1, n) < th.exploration_rate
        cheap = (scores >= th.cheap_above) | (
            (scores >= th.capable_below) & (scores < th.cheap_above) & explore)
        tiers = np.where(cheap, "cheap", "capable")
        reasons = ["confident_cheap" if s >= th.cheap_above else
                   ("exploration" if c else "uncertain_default") if s >= th.capable_below
                   else "confident_capable" for s, c in zip(scores, cheap, strict=True)]
        state.observe_routing(ts, scores, tiers.tolist(), reasons, [th] * n, [None] * n, {},
                              state.bands(scores).tolist())
        p_wrong = np.where(cheap, 0.03 + 0.08 * (1 - scores), 0.03)
        p_wrong = np.where(in_cohort & cheap, sc.cohort_wrong, p_wrong)
        p_wrong = np.where(in_cohort & ~cheap, 0.1, p_wrong)
        wrong = rng.uniform(0, 1, n) < p_wrong
        in_band = (scores >= th.capable_below) & (scores < th.cheap_above)
        propensity = np.where(in_band, np.where(cheap, th.exploration_rate,
                                                1 - th.exploration_rate), 1.0)
        u = rng.uniform(0, 1, (4, n))
        votes = u[0] < np.where(wrong, 0.046, 0.025)
        contacts = u[1] < np.where(wrong, 0.05, 0.002)
        shadow = u[2] < 0.01
        for i in np.flatnonzero(votes | contacts | shadow):
            base = {"tier": tiers[i], "score": float(scores[i]), "decision_ts": float(ts[i])}
            ctx = {"propensity": float(propensity[i]), "in_band": bool(in_band[i])}
            if votes[i]:
                down = rng.uniform() < (0.85 if wrong[i] else 0.03)
                feed._push(ts[i] + 120.0 * math.exp(1.2 * rng.standard_normal()),
                           {**base, **ctx, "kind": "thumbs", "value": 0.0 if down else 1.0})
            if contacts[i]:
                delay = min(max(8 * HOUR * math.exp(0.9 * rng.standard_normal()), HOUR),
                            5 * DAY)
                feed._push(ts[i] + delay, {**base, "kind": "support_contact", "value": 1.0})
            if shadow[i]:
                value = float(np.clip(rng.normal(0.35 if wrong[i] else 0.85, 0.1), 0, 1))
                feed._push(ts[i] + 300.0 * math.exp(0.7 * rng.standard_normal()),
                           {**base, **ctx, "kind": "shadow", "value": value})
        feed.close(h)
    return feed, T0 + onset_h * HOUR
