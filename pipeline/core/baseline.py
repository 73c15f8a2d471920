"""Baselines: fit equal-mass fine bins from a training sample, and read them back as bins.

The wire form (:class:`~pipeline.schemas.BinnedDistribution`) lists all ``n+1`` edges,
the outer two being the sample's minimum and maximum; :class:`QuantileBins` keeps the
interior edges and treats the outer ones as -inf/+inf when indexing live values.

>>> import numpy as np
>>> d = fit_distribution(np.random.default_rng(1).random(10_000), bins=4)
>>> [round(p, 2) for p in d.probs], d.n
([0.25, 0.25, 0.25, 0.25], 10000)
>>> quantile_bins(d).n_bins
4
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

import numpy as np
from numpy.typing import ArrayLike

from pipeline.core.histogram import QuantileBins
from pipeline.schemas import Baseline, BinnedDistribution


def fit_distribution(sample: ArrayLike, bins: int = 200) -> BinnedDistribution:
    """Equal-mass fine bins of ``sample`` (duplicate quantiles collapse; mass is counted)."""
    qb = QuantileBins.from_sample(sample, n_bins=bins)
    return BinnedDistribution(edges=qb.fine_edges.tolist(), probs=qb.baseline_probs.tolist(),
                              n=qb.n or len(np.asarray(sample)))


def quantile_bins(dist: BinnedDistribution) -> QuantileBins:
    """The :class:`QuantileBins` of a wire distribution; repeated edges merge their bins."""
    edges = np.asarray(dist.edges, dtype=np.float64)
    probs = np.asarray(dist.probs, dtype=np.float64)
    interior = edges[1:-1]
    # bin i spans [edges[i], edges[i+1]); drop interior edges that do not increase strictly
    keep = np.concatenate([[True], np.diff(interior) > 0]) & (interior > edges[0])
    kept = interior[keep]
    owner = np.searchsorted(kept, edges[:-1], side="right")
    counts = np.bincount(owner, weights=probs, minlength=kept.size + 1)
    return QuantileBins(kept, counts * dist.n, low=float(edges[0]), high=float(edges[-1]),
                        n=dist.n)


def fit_baseline(router_id: str, version: str, created_at: datetime, scores: ArrayLike,
                 signals: Mapping[str, ArrayLike] | None = None, *, bins: int = 200,
                 classifier_version: str | None = None) -> Baseline:
    """A :class:`Baseline` from training-set scores and optional signal columns."""
    return Baseline(router_id=router_id, version=version, created_at=created_at,
                    classifier_version=classifier_version,
                    score=fit_distribution(scores, bins),
                    signals={k: fit_distribution(v, bins) for k, v in (signals or {}).items()})
