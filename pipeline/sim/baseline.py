"""The classifier's training/calibration distribution, binned into equal-mass fine bins.

>>> d = equal_mass_bins(np.random.default_rng(0).random(10_000), bins=4)
>>> len(d.edges), [round(p, 2) for p in d.probs], d.n
(5, [0.25, 0.25, 0.25, 0.25], 10000)
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np

from pipeline.schemas import Baseline, BinnedDistribution
from pipeline.sim.params import FloatArray, Scenario
from pipeline.sim.population import draw_queries, self_confidence
from pipeline.sim.router import escalate, route

EDGE_DECIMALS = 6


def equal_mass_bins(sample: FloatArray, bins: int) -> BinnedDistribution:
    """Fine bins whose edges are the sample's quantiles, with the sample mass of each.

    The outer edges are the sample's min and max. A value equal to an inner edge counts in
    the bin to its right (edges are lower-inclusive, the last bin also holds the max).
    """
    if bins < 2:
        raise ValueError("need at least 2 bins")
    edges = np.round(np.quantile(sample, np.linspace(0.0, 1.0, bins + 1)), EDGE_DECIMALS)
    edges = np.maximum.accumulate(edges)
    idx = np.clip(np.searchsorted(edges, sample, side="right") - 1, 0, bins - 1)
    counts = np.bincount(idx, minlength=bins)
    return BinnedDistribution(edges=edges.tolist(), probs=(counts / len(sample)).tolist(),
                              n=len(sample))


def build_baseline(
    scenario: Scenario, rng: np.random.Generator, *, n_samples: int, bins: int,
    classifier: int, day: float, created_at: float, version_suffix: str,
) -> Baseline:
    """The score (and signal) distribution of ``classifier`` on the population of ``day``.

    Signals: ``ood_distance`` on all queries; in a cascade, ``self_confidence`` on the
    queries the default thresholds send to the cheap model first.
    """
    days = np.full(n_samples, day)
    q = draw_queries(rng, scenario, days, classifier=classifier)
    signals = {"ood_distance": equal_mass_bins(np.round(q.ood_distance, 4), bins)}
    if scenario.cascade is not None:
        th = scenario.thresholds
        first = route(q.score, th, rng.random(n_samples))
        cheap_good = q.answer_u < scenario.cheap.quality.p_good(q.difficulty)
        conf = np.round(self_confidence(scenario, q, cheap_good, days), 4)
        decided = escalate(first, conf, scenario.cascade.escalate_below)
        signals["self_confidence"] = equal_mass_bins(conf[decided.cheap_first], bins)
    clf = scenario.classifiers[classifier][1]
    return Baseline(
        router_id=scenario.router_id,
        version=f"{scenario.router_id}:{clf.version}:{version_suffix}",
        created_at=datetime.fromtimestamp(created_at, tz=UTC),
        classifier_version=clf.version,
        score=equal_mass_bins(q.score, bins),
        signals=signals,
    )
