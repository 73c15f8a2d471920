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
        end = start + HOUR
        while self.pending and self.pending[0][0] < end:
            at, _, fb = heapq.heappop(self.pending)
            self.state.observe_feedback(ts=at, weight=None, propensity=None, in_band=None, **fb)
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
