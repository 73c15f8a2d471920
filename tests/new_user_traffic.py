"""Router traffic as a new user's logs would hold it, written as files for the CLI.

Independent of ``pipeline.sim`` and of ``tests.lagged_traffic``: a third generator, with
its own shapes, so the README's ``baseline fit`` → ``replay`` flow is judged on traffic
the monitor was not built beside. Every nuisance is drawn per seed (weekend depth,
diurnal amplitude and phase, a holiday, score distribution, contact delays), and nothing
about quality changes unless a :class:`Cohort` is asked for.

- **Volume.** Poisson per hour around a weekday base, weekends at 0.3–0.5×, a diurnal
  cycle of ×3–×5 peak/trough with a random peak hour, one weekday at 10 %.
- **Scores.** A two-component beta mixture, the same for training and serving.
- **Routing.** :func:`pipeline.control.decide` (what a router using tierwatch's client
  calls), with the thresholds of the day: an optional move mid-run.
- **Outcomes.** Whether an answer is wrong depends on tier and score only (the cheap
  tier a little worse, not enough to make it a Pareto trap at $8 a contact). Wrong answers
  lead to a support contact with probability 0.3 (right ones 0.01), after a log-normal
  delay (median 2–6 h by seed, σ 1); about 2 % of users vote, thumbs down mostly when
  wrong, minutes later.

>>> t = Traffic(seed=1, days=2, per_hour=50)
>>> routing, feedback = t.events()
>>> len(routing) > 1000 and len(feedback) > 10
True
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from pipeline.control import decide
from pipeline.schemas import Thresholds

HOUR = 3600.0
DAY = 86400.0
START = datetime(2026, 6, 1, tzinfo=UTC).timestamp()  # a Monday, far enough in the past
ROUTER = "support"


@dataclass(frozen=True)
class Cohort:
    """From ``onset_day`` on, a ``share`` of requests are hard queries that look simple:
    scored in ``score_range`` (just above ``cheap_above``) and wrong on the cheap tier
    with probability ``wrong_cheap``."""

    onset_day: float
    share: float = 0.05
    score_range: tuple[float, float] = (0.72, 0.85)
    wrong_cheap: float = 0.5


@dataclass
class Traffic:
    seed: int
    days: int = 40
    per_hour: float = 1000.0
    thresholds: Thresholds = field(default_factory=lambda: Thresholds(
        cheap_above=0.70, capable_below=0.55, exploration_rate=0.05))
    move: tuple[float, Thresholds] | None = None  # (day, new thresholds)
    cohort: Cohort | None = None

    def __post_init__(self) -> None:
        rng = np.random.default_rng(self.seed)
        self.weekend = rng.uniform(0.3, 0.5)
        self.diurnal = rng.uniform(0.5, 0.67)  # peak/trough (1+a)/(1-a): ×3 to ×5
        self.peak_hour = rng.uniform(0, 24)
        weekdays = [d for d in range(14, self.days) if d % 7 < 5]
        self.holiday = int(rng.choice(weekdays)) if weekdays else -1
        self.mix = (rng.uniform(0.4, 0.6), rng.uniform(1.5, 3.0), rng.uniform(4, 8))
        self.delay_median_h = rng.uniform(2, 6)

    def scores(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """The classifier's scores for ordinary traffic (training and serving alike)."""
        w, a, b = self.mix
        hi = rng.random(n) < w
        return np.where(hi, rng.beta(b, a, n), rng.beta(a, b, n)).clip(0.0, 1.0)

    def training_scores(self, n: int = 20_000) -> np.ndarray:
        return self.scores(n, np.random.default_rng(self.seed + 10_000))

    def volume(self, hour: int) -> float:
        day = hour // 24
        v = self.per_hour * (self.weekend if day % 7 >= 5 else 1.0)
        v *= 1 + self.diurnal * np.sin(2 * np.pi * ((hour % 24) - self.peak_hour + 6) / 24)
        return v * (0.1 if day == self.holiday else 1.0)

    def thresholds_at(self, t: float) -> Thresholds:
        if self.move is not None and t >= START + self.move[0] * DAY:
            return self.move[1]
        return self.thresholds

    def events(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Routing and feedback events, each list in time order."""
        rng = np.random.default_rng(self.seed + 1)
        routing: list[dict[str, Any]] = []
        feedback: list[dict[str, Any]] = []
        for hour in range(self.days * 24):
            n = int(rng.poisson(self.volume(hour)))
            ts = np.sort(START + (hour + rng.random(n)) * HOUR)
            score = self.scores(n, rng)
            hard = np.zeros(n, dtype=bool)
            if self.cohort is not None and ts.size and ts[0] >= START + self.cohort.onset_day * DAY:
                hard = rng.random(n) < self.cohort.share
                lo, hi = self.cohort.score_range
                score = np.where(hard, rng.uniform(lo, hi, n), score)
            for i in range(n):
                self._one(f"{hour}-{i}", float(ts[i]), float(score[i]), bool(hard[i]), rng,
                          routing, feedback)
        feedback.sort(key=lambda e: e["ts"])
        return routing, feedback

    def _one(self, rid: str, ts: float, score: float, hard: bool, rng: np.random.Generator,
             routing: list[dict[str, Any]], feedback: list[dict[str, Any]]) -> None:
        th = self.thresholds_at(ts)
        d = decide(score, th, u=float(rng.random()))
        routing.append({
            "event_id": f"r-{rid}", "request_id": rid, "router_id": ROUTER,
            "ts": iso(ts), "tier": d.tier, "score": round(score, 6),
            "route_reason": d.route_reason, "propensity": d.propensity,
            "thresholds": th.model_dump(exclude_none=True),
            "cost_usd": 0.0005 if d.tier == "cheap" else 0.03})
        if d.tier == "cheap":
            # near the capable tier's quality, worse the lower the score: the savings
            # ($0.03 a request) exceed the contacts' hidden cost, so no Pareto trap
            p_wrong = (self.cohort.wrong_cheap if hard and self.cohort
                       else 0.03 + 0.01 * (1 - score) / 0.3)
        else:
            p_wrong = 0.03
        wrong = rng.random() < p_wrong
        if rng.random() < (0.3 if wrong else 0.01):
            delay = float(np.exp(rng.normal(np.log(self.delay_median_h), 1.0))) * HOUR
            feedback.append({"event_id": f"c-{rid}", "request_id": rid, "router_id": ROUTER,
                             "kind": "support_contact", "value": 1, "source": "desk",
                             "ts": iso(ts + min(delay, 14 * DAY))})
        if rng.random() < 0.02:
            down = rng.random() < (0.6 if wrong else 0.05)
            feedback.append({"event_id": f"t-{rid}", "request_id": rid, "router_id": ROUTER,
                             "kind": "thumbs", "value": 0 if down else 1, "source": "widget",
                             "ts": iso(ts + float(rng.exponential(300.0)))})


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat()
