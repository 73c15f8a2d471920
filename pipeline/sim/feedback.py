"""Sparse, biased, delayed quality signals about routed requests.

Sources and what they know:

- users (``thumbs``, ``rating``, ``survey``): vote more when unhappy; know neither tier nor
  score (a consumer must join on ``request_id``);
- the support desk (``support_contact``, value 1): some users who got a wrong answer;
- the shadow scorer (``shadow``): agreement in [0, 1] between the cheap and the capable
  answer, on a small random share of all traffic; knows the tier;
- the review tool (``review``): a stratified sample oversampled near the thresholds, with
  ``weight`` = 1 / inclusion probability; knows tier and score.

Which requests get feedback is drawn from uniforms drawn for every request, so two runs
with the same seed and different policies differ only through the answers' quality.

>>> p = PendingFeedback()
>>> p.push([(30, {"id": "b"}), (10, {"id": "a"})])
>>> [d["id"] for d in p.pop_before(20)], len(p)
(['a'], 1)
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline.schemas import Thresholds
from pipeline.sim.params import BoolArray, FloatArray, IntArray, Scenario, Users, logistic

KINDS = ("thumbs", "rating", "review", "shadow", "support_contact", "survey")
THUMBS, RATING, REVIEW, SHADOW, SUPPORT, SURVEY = range(6)
SOURCES = ("widget", "widget", "review-tool", "shadow-scorer", "support-desk", "survey")
VALUE_DECIMALS = 4


@dataclass(frozen=True, slots=True)
class FeedbackDraw:
    """Feedback for one chunk of requests, as parallel arrays (one row per feedback event)."""

    index: IntArray  # row of the request in its chunk
    kind: IntArray  # index into KINDS
    value: FloatArray
    delay_s: FloatArray
    weight: FloatArray  # NaN when the source gives none

    def __len__(self) -> int:
        return len(self.index)


def _user_rates(scenario: Scenario, cohort: IntArray) -> dict[str, FloatArray]:
    users = [scenario.cohort_users(c) for c in scenario.cohorts]
    return {name: np.array([getattr(u, name) for u in users])[cohort]
            for name in Users.__dataclass_fields__}


def review_inclusion(score: FloatArray, thresholds: Thresholds, base: float, near: float,
                     width: float) -> FloatArray:
    """Inclusion probability of the stratified review sample: oversample near the thresholds.

    >>> th = Thresholds(cheap_above=0.6, capable_below=0.4)
    >>> review_inclusion(np.array([0.1, 0.5, 0.63]), th, 0.002, 0.02, 0.05).tolist()
    [0.002, 0.02, 0.02]
    """
    lo, hi = thresholds.capable_below, thresholds.cheap_above
    near_mask = ((score >= lo - width) & (score < hi + width))
    return np.where(near_mask, near, base)


def draw_feedback(
    select_rng: np.random.Generator, rng: np.random.Generator, scenario: Scenario,
    cohort: IntArray, score: FloatArray,
    thresholds: Thresholds, served_good: BoolArray, cheap_good: BoolArray,
    capable_good: BoolArray,
) -> FeedbackDraw:
    """Draw every feedback event caused by one chunk of routed requests.

    ``select_rng`` decides which requests get feedback (a fixed number of draws per
    request); ``rng`` draws the values and delays of the selected ones.
    """
    n = len(cohort)
    r = _user_rates(scenario, cohort)
    ch, g = scenario.channels, scenario.grades
    u = select_rng.random((8, n))  # one row per decision, drawn for every request

    good = served_good
    thumbs = u[0] < np.where(good, r["thumbs_rate_good"], r["thumbs_rate_bad"])
    thumbs_down = u[1] < np.where(good, r["down_given_good"], r["down_given_bad"])
    rating = u[2] < r["rating_rate"]
    survey = u[3] < r["survey_rate"]
    support = u[4] < np.where(good, r["support_rate_good"], r["support_rate_bad"])
    shadow = u[5] < ch.shadow_rate
    inclusion = review_inclusion(score, thresholds, ch.review_base_rate,
                                 ch.review_near_rate, ch.review_near_width)
    review = u[6] < inclusion

    parts: list[tuple[int, IntArray, FloatArray, FloatArray]] = []
    sel = np.flatnonzero(thumbs)
    parts.append((THUMBS, sel, np.where(thumbs_down[sel], 0.0, 1.0), _nan(sel)))
    sel = np.flatnonzero(rating)
    stars = np.where(good[sel], 4.0 + (u[7][sel] < g.five_stars_given_good),
                     1.0 + np.floor(u[7][sel] * 2.6))
    parts.append((RATING, sel, stars, _nan(sel)))
    sel = np.flatnonzero(review)
    parts.append((REVIEW, sel, _graded(rng, good[sel], g.review_good, g.review_bad, g.review_sd),
                  np.round(1.0 / inclusion[sel], 6)))
    sel = np.flatnonzero(shadow)
    agree = cheap_good[sel] == capable_good[sel]
    mean = np.where(agree & cheap_good[sel], g.shadow_both_good,
                    np.where(agree, g.shadow_both_bad, g.shadow_differ))
    agreement = logistic(mean + g.shadow_sd * rng.standard_normal(len(sel)))
    parts.append((SHADOW, sel, _round(agreement), _nan(sel)))
    sel = np.flatnonzero(support)
    parts.append((SUPPORT, sel, np.ones(len(sel)), _nan(sel)))
    sel = np.flatnonzero(survey)
    parts.append((SURVEY, sel, _graded(rng, good[sel], g.survey_good, g.survey_bad, g.survey_sd),
                  _nan(sel)))

    delays = scenario.delays
    delay_by_kind = (delays.thumbs, delays.rating, delays.review, delays.shadow,
                     delays.support_contact, delays.survey)
    return FeedbackDraw(
        index=np.concatenate([p[1] for p in parts]).astype(np.int64),
        kind=np.concatenate([np.full(len(p[1]), p[0], dtype=np.int64) for p in parts]),
        value=np.concatenate([p[2] for p in parts]),
        delay_s=np.concatenate([delay_by_kind[k].draw(rng, len(s)) for k, s, _, _ in parts]),
        weight=np.concatenate([p[3] for p in parts]),
    )


def _nan(sel: IntArray) -> FloatArray:
    return np.full(len(sel), np.nan)


def _round(x: FloatArray) -> FloatArray:
    return np.round(x, VALUE_DECIMALS)


def _graded(rng: np.random.Generator, good: BoolArray, mean_good: float, mean_bad: float,
            sd: float) -> FloatArray:
    """A grade in (0, 1): logistic-normal, high for good answers, low for bad ones."""
    return _round(logistic(np.where(good, mean_good, mean_bad)
                           + sd * rng.standard_normal(len(good))))


@dataclass(slots=True)
class PendingFeedback:
    """Feedback waiting for its event time: a heap ordered by (time µs, arrival order)."""

    _heap: list[tuple[int, int, dict[str, Any]]] = field(default_factory=list)
    _seq: int = 0

    def push(self, items: list[tuple[int, dict[str, Any]]]) -> None:
        for ts_us, event in items:
            heapq.heappush(self._heap, (ts_us, self._seq, event))
            self._seq += 1

    def pop_before(self, end_us: int) -> list[dict[str, Any]]:
        """Every pending event with time < ``end_us``, in time order."""
        out = []
        heap = self._heap
        while heap and heap[0][0] < end_us:
            out.append(heapq.heappop(heap)[2])
        return out

    def __len__(self) -> int:
        return len(self._heap)
