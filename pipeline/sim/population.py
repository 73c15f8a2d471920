"""Latent queries: cohort, difficulty, surface simplicity, the router's score and signals.

Every draw is made for every query in a fixed order, whatever the routing policy, so the
same seed gives the same queries under any policy (common random numbers).

>>> from pipeline.sim.scenarios import SCENARIOS
>>> sc = SCENARIOS["steady"]
>>> q = draw_queries(np.random.default_rng(0), sc, np.zeros(1000))
>>> bool(np.corrcoef(q.difficulty, q.score)[0, 1] < -0.5)
True
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.sim.params import (
    BoolArray,
    Classifier,
    CohortEmergence,
    DifficultyShift,
    FloatArray,
    IntArray,
    Scenario,
    SelfConfidenceShift,
    logistic,
)

SCORE_DECIMALS = 6


@dataclass(frozen=True, slots=True)
class Queries:
    """Per-query latent and observable values, as parallel arrays."""

    cohort: IntArray
    difficulty: FloatArray
    surface: FloatArray
    score: FloatArray
    classifier: IntArray
    ood_distance: FloatArray
    answer_u: FloatArray
    self_confidence_noise: FloatArray
    tokens: FloatArray
    latency_noise: FloatArray

    def __len__(self) -> int:
        return len(self.cohort)


def cohort_shares(scenario: Scenario, day: FloatArray) -> FloatArray:
    """The cohort mixture in force at each ``day`` (rows sum to 1), shape ``(n, cohorts)``.

    An emerging cohort's share moves linearly from its base share to its target; the other
    cohorts keep their relative weights and fill the rest.
    """
    base = np.array([c.share for c in scenario.cohorts])
    shares = np.broadcast_to(base, (len(day), len(base))).copy()
    moved = np.zeros(len(base), dtype=bool)
    index = {c.name: i for i, c in enumerate(scenario.cohorts)}
    for ch in scenario.changes:
        if isinstance(ch, CohortEmergence):
            k = index[ch.cohort]
            shares[:, k] = base[k] + (ch.target_share - base[k]) * ch.ramp.level(day)
            moved[k] = True
    if moved.any():
        rest = base[~moved].sum()
        free = 1.0 - shares[:, moved].sum(axis=1, keepdims=True)
        shares[:, ~moved] = base[~moved] * free / rest
    return shares


def classifier_index(scenario: Scenario, day: FloatArray) -> IntArray:
    """Which of ``scenario.classifiers`` scored each query (retrains switch at their day)."""
    starts = np.array([d for d, _ in scenario.classifiers[1:]])
    out: IntArray = np.searchsorted(starts, day, side="right").astype(np.int64)
    return out


def score_with(classifier: Classifier, surface: FloatArray, noise: FloatArray) -> FloatArray:
    """The router's score, rounded as it goes on the wire (routing uses the rounded value)."""
    return np.round(classifier.score(surface, noise), SCORE_DECIMALS)


def draw_queries(
    rng: np.random.Generator, scenario: Scenario, day: FloatArray,
    classifier: int | None = None,
) -> Queries:
    """Draw one query per entry of ``day`` (days since the simulation start).

    ``classifier`` forces one classifier (an index into ``scenario.classifiers``), as a
    baseline does; by default each query is scored by the classifier in force on its day.
    """
    n = len(day)
    shares = cohort_shares(scenario, day)
    cohort = (rng.random(n)[:, None] > np.cumsum(shares, axis=1)[:, :-1]).sum(axis=1)
    cohort = cohort.astype(np.int64)
    mean = np.array([c.difficulty_mean for c in scenario.cohorts])[cohort]
    sd = np.array([c.difficulty_sd for c in scenario.cohorts])[cohort]
    corr = np.array([c.surface_corr for c in scenario.cohorts])[cohort]
    bias = np.array([c.surface_bias for c in scenario.cohorts])[cohort]
    ood_mean = np.array([c.ood_mean for c in scenario.cohorts])[cohort]

    difficulty = mean + sd * rng.standard_normal(n)
    surface = -corr * difficulty + np.sqrt(1.0 - corr**2) * rng.standard_normal(n) + bias
    score_noise = rng.standard_normal(n)
    ood_distance = rng.gamma(4.0, 0.25, n) * ood_mean
    answer_u = rng.random(n)
    confidence_noise = rng.standard_normal(n)
    tokens = scenario.tokens_median * np.exp(scenario.tokens_sigma * rng.standard_normal(n))
    latency_noise = rng.standard_normal(n)

    for ch in scenario.changes:  # concept drift: harder, but looks the same
        if isinstance(ch, DifficultyShift):
            hit = cohort == [c.name for c in scenario.cohorts].index(ch.cohort)
            difficulty = difficulty + hit * ch.delta * ch.ramp.level(day)

    versions = scenario.classifiers
    which = (classifier_index(scenario, day) if classifier is None
             else np.full(n, classifier, dtype=np.int64))
    score = np.empty(n)
    for i, (_, clf) in enumerate(versions):
        sel = which == i
        if sel.any():
            score[sel] = score_with(clf, surface[sel], score_noise[sel])
    return Queries(cohort, difficulty, surface, score, which, ood_distance, answer_u,
                   confidence_noise, tokens, latency_noise)


def self_confidence(
    scenario: Scenario, queries: Queries, cheap_good: BoolArray, day: FloatArray,
) -> FloatArray:
    """The cheap model's self-confidence in its own answer (cascade scenarios)."""
    cascade = scenario.cascade
    if cascade is None:
        return np.full(len(queries), np.nan)
    mean = np.where(cheap_good, cascade.confidence_mean_good, cascade.confidence_mean_bad)
    for ch in scenario.changes:
        if isinstance(ch, SelfConfidenceShift):
            mean = mean + (~cheap_good) * ch.delta_bad * ch.ramp.level(day)
    return logistic(mean + cascade.confidence_sd * queries.self_confidence_noise)
