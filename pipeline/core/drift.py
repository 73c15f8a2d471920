"""Drift of a score distribution against its baseline, with calibrated false alarms.

Everything works on *binned counts* (see :mod:`pipeline.core.histogram`): the live side
is a window of a :class:`~pipeline.core.histogram.BucketedHistogram`, the expected side
is the baseline's fine-bin probabilities, or the baseline truncated to one tier's score
interval under the thresholds in force (:func:`expected_tier_probs`,
:func:`expected_mixture_probs`).

Two statistics:

* **PSI** (:func:`psi`) on ~10 coarse bins of near-equal expected mass, with additive
  smoothing of the observed counts toward the expected distribution.
* **KS** (:func:`ks_distance`) on the fine bins, with a proven bound on the gap between
  the binned distance and the distance on the raw samples.

A verdict (:class:`DriftTest` → :class:`DriftVerdict`) needs **two gates**: the effect
size must reach its floor (practical significance) *and* the p-value at the actual sample
sizes must be at most ``alpha`` (statistical significance). Below ``min_n`` events there
is no verdict at all. :func:`calibrated_alpha` spends a false-alarm budget (e.g. one
false page per router per 30 days) over all evaluations with a union bound.

"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, Protocol, TypeAlias

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import special, stats

from pipeline.core.histogram import coarse_splits
from pipeline.schemas import Thresholds

__all__ = [
    "DEFAULT_EFFECT_FLOORS",
    "DriftTest",
    "DriftVerdict",
    "KSDistance",
    "Statistic",
    "ThresholdsLike",
    "as_thresholds",
    "calibrated_alpha",
    "effective_n",
    "expected_mixture_probs",
    "expected_tier_probs",
    "ks_distance",
    "ks_pvalue",
    "psi",
    "psi_pvalue",
    "tier_mass",
    "tier_probability",
]

Statistic: TypeAlias = Literal["ks", "psi"]

#: Effect-size floors used when :class:`DriftTest` is not given one. KS 0.05: the CDFs
#: differ by 5 points somewhere (a 0.125 sd mean shift of a normal). PSI 0.1: the usual
#: "moderate shift" threshold (about a 0.3 sd mean shift of a normal).
DEFAULT_EFFECT_FLOORS: dict[str, float] = {"ks": 0.05, "psi": 0.1}

# Up to this effective sample size KS p-values use the exact one-sample distribution
# (scipy.stats.kstwo, whose cost grows with n); above it the limiting Kolmogorov
# distribution, which overstates p for finite n (checked against kstwo for n in
# 50 .. 1e6 and p in 1e-2 .. 1e-8: by 0.1 % to 11 % above n = 1000), i.e. is conservative.
_KS_EXACT_MAX_N = 1000
_PSI_FLOOR = 1e-4


# -- thresholds ------------------------------------------------------------------------------


class _ThresholdsAttrs(Protocol):
    @property
    def cheap_above(self) -> float: ...
    @property
    def capable_below(self) -> float: ...
    @property
    def exploration_rate(self) -> float: ...


ThresholdsLike: TypeAlias = "Thresholds | Mapping[str, float] | _ThresholdsAttrs"


def as_thresholds(obj: ThresholdsLike) -> Thresholds:
    """The contract's :class:`~pipeline.schemas.Thresholds` (validated, hashable) of a
    mapping or of any object with the three attributes.

    >>> as_thresholds({"cheap_above": 0.7, "capable_below": 0.4}) == Thresholds(
    ...     cheap_above=0.7, capable_below=0.4)
    True
    """
    if isinstance(obj, Thresholds):
        return obj
    if isinstance(obj, Mapping):
        return Thresholds(cheap_above=float(obj["cheap_above"]),
                          capable_below=float(obj["capable_below"]),
                          exploration_rate=float(obj.get("exploration_rate", 0.0)))
    return Thresholds(cheap_above=float(obj.cheap_above),
                      capable_below=float(obj.capable_below),
                      exploration_rate=float(obj.exploration_rate))


def _check_tier(tier: str) -> None:
    if tier not in ("cheap", "capable"):
        raise ValueError(f"tier must be 'cheap' or 'capable', got {tier!r}")


def tier_probability(
    scores: ArrayLike, thresholds: ThresholdsLike, tier: str
) -> NDArray[np.float64]:
    """P(tier | score) under ``thresholds`` (the propensity of routing to ``tier``).

    Examples
    --------
    >>> tier_probability([0.2, 0.5, 0.8], {"cheap_above": 0.7, "capable_below": 0.3,
    ...                  "exploration_rate": 0.25}, "capable").tolist()
    [1.0, 0.75, 0.0]

    """
    _check_tier(tier)
    th = as_thresholds(thresholds)
    s = np.asarray(scores, dtype=np.float64)
    p = np.where(s >= th.cheap_above, 1.0,
                 np.where(s >= th.capable_below, th.exploration_rate, 0.0))
    return p if tier == "cheap" else 1.0 - p


# -- helpers ---------------------------------------------------------------------------------


def _probs(x: ArrayLike, name: str) -> NDArray[np.float64]:
    p = np.asarray(x, dtype=np.float64)
    if p.ndim != 1 or p.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-d array")
    s = float(p.sum())
    if not (p.min() >= 0 and math.isfinite(s)):  # NaN fails the comparison
        raise ValueError(f"{name} must be finite and non-negative")
    if s <= 0:
        raise ValueError(f"{name} has no mass")
    return p / s


def _counts(x: ArrayLike, size: int, name: str) -> NDArray[np.float64]:
    c = np.asarray(x, dtype=np.float64)
    if c.shape != (size,):
        raise ValueError(f"{name} must have shape ({size},), got {c.shape}")
    if not (c.min() >= 0 and math.isfinite(float(c.sum()))):
        raise ValueError(f"{name} must be finite and non-negative")
    return c


@functools.lru_cache(maxsize=256)
def _cached_splits(p_bytes: bytes, k: int) -> NDArray[np.intp]:
    # expected distributions change only with the baseline or the thresholds, so the same
    # few recur at every evaluation
    splits = coarse_splits(np.frombuffer(p_bytes, dtype=np.float64), k)
    splits.setflags(write=False)
    return splits


def effective_n(n: float, m: float | None = None) -> float:
    """Effective sample size of a two-sample comparison: ``n*m/(n+m) = 1/(1/n + 1/m)``.

    ``m=None`` means an exact (infinite) baseline, so the result is ``n``.

    Examples
    --------
    >>> effective_n(300, 100), effective_n(300)
    (75.0, 300.0)

    """
    if n < 0 or (m is not None and m < 0):
        raise ValueError("sample sizes must be non-negative")
    if m is None:
        return float(n)
    if n == 0 or m == 0:
        return 0.0
    return float(n) * float(m) / (float(n) + float(m))


# -- PSI -------------------------------------------------------------------------------------


def psi(
    expected_probs: ArrayLike,
    observed_counts: ArrayLike,
    *,
    smoothing: float = 0.5,
    floor: float = _PSI_FLOOR,
) -> float:
    r"""Population stability index of observed counts against expected probabilities.

    ``PSI = sum_i (q_i - p_i) ln(q_i / p_i)`` (the symmetrized Kullback-Leibler
    divergence), over coarse bins.

    **Smoothing of empty bins.** The observed distribution is smoothed with
    ``a = smoothing`` pseudo-counts per bin, spread *in proportion to the expected
    distribution*::

        q_i = (c_i + a K p_i) / (n + a K)

    With equal-mass coarse bins (``p_i = 1/K``) that is exactly ``a`` extra counts per bin,
    Jeffreys' prior for ``a = 0.5``. Its effect:

    * an empty observed bin gives a finite term instead of ``+inf``;
    * ``q`` is shrunk toward ``p`` by ``lam = aK / (n + aK)``, and as PSI is jointly convex
      and zero at ``q = p``, ``PSI(q) <= (1 - lam) * PSI(q_raw)``: smoothing only ever
      *lowers* PSI (never invents drift), by a relative ``aK/n`` (0.05 % for K=10,
      n=10 000);
    * a bin with structurally zero expected mass (possible only when the caller passes
      such bins; :func:`~pipeline.core.histogram.coarse_splits` never makes them) gets no
      pseudo-count. Both probabilities are therefore floored at ``floor`` (1e-4), so
      observations there give a large but finite term, about ``q ln(q / floor)``. The floor
      also caps the term of an empty observed bin once ``n`` exceeds ``aK/floor``; it
      only ever lowers a term.

    Parameters
    ----------
    expected_probs
        Expected probability per coarse bin (normalized here).
    observed_counts
        Observed count per coarse bin.
    smoothing
        Pseudo-counts per bin, ``a`` above (0 disables).
    floor
        Lower bound on both probabilities; matters only for bins of (near) zero mass.

    Examples
    --------
    >>> round(psi([0.5, 0.5], [500, 500]), 6)
    0.0
    >>> round(psi([0.5, 0.5], [700, 300]), 4)  # raw: 0.2 ln(0.7/0.5) - 0.2 ln(0.3/0.5) = 0.1695
    0.1691
    >>> round(psi([0.5, 0.5], [10, 0]), 3)  # empty bin: finite
    1.384

    """
    p = _probs(expected_probs, "expected_probs")
    c = _counts(observed_counts, p.size, "observed_counts")
    if smoothing < 0 or floor <= 0:
        raise ValueError("smoothing must be >= 0 and floor > 0")
    return _psi(p, c, smoothing, floor)


def _psi(p: NDArray[np.float64], c: NDArray[np.float64], smoothing: float, floor: float) -> float:
    n = float(c.sum())
    k = p.size
    if n == 0:
        return 0.0
    q = (c + smoothing * k * p) / (n + smoothing * k)
    q = np.maximum(q, floor)
    pf = np.maximum(p, floor)
    return float(np.sum((q - pf) * np.log(q / pf)))


def psi_pvalue(value: float, n: float, k: int, m: float | None = None) -> float:
    """P-value of a PSI value: ``n_eff * PSI ~ chi2(K - 1)`` under no drift.

    To second order PSI equals the chi-square divergence ``sum (q-p)^2 / p``, and
    ``n_eff`` times that is the two-sample chi-square homogeneity statistic with ``K - 1``
    degrees of freedom, ``n_eff = 1/(1/n + 1/m)``. Smoothing lowers PSI, so the p-value
    errs high (conservative).

    Examples
    --------
    >>> round(psi_pvalue(0.001, n=10_000, k=10), 3)  # chi2(9).sf(10)
    0.35
    >>> psi_pvalue(0.001, n=10_000, k=10) < psi_pvalue(0.001, n=5_000, k=10)
    True

    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"PSI must be finite and >= 0, got {value}")
    ne = effective_n(n, m)
    if k == 1 or value == 0 or ne == 0:
        return 1.0
    return float(special.chdtrc(k - 1, ne * value))


# -- KS --------------------------------------------------------------------------------------


class KSDistance(NamedTuple):
    """Binned KS distance and an upper bound on the distance between the raw samples."""

    distance: float
    upper_bound: float


def ks_distance(baseline_probs_fine: ArrayLike, observed_counts_fine: ArrayLike) -> KSDistance:
    r"""Kolmogorov-Smirnov distance between the baseline and the observed fine bins.

    With ``C_i`` the cumulative mass *below* edge ``e_i`` (``F`` baseline, ``G`` observed)
    and ``d_i = C^F_i - C^G_i``, the binned distance is ``D_edges = max_i |d_i|``.

    **Bound.** For the CDFs ``F(x) = P(X <= x)`` of the unbinned distributions (for raw
    samples: their empirical CDFs, what ``scipy.stats.ks_2samp`` measures)::

        D_edges <= D_true <= max_i max(d_i + p_i, q_i - d_i) <= D_edges + max_i max(p_i, q_i)

    *Proof.* Lower: ``C_i = lim F(x)`` as ``x`` rises to ``e_i``, so each ``|d_i|`` is a
    limit of values of ``|F - G|``. Upper: take ``x`` in bin ``i = [e_i, e_{i+1})`` (outer
    bins reach to -inf/+inf, with ``C = 0`` and ``1`` there). Both CDFs are monotone, so
    ``C^F_i <= F(x) <= C^F_{i+1} = C^F_i + p_i`` and likewise ``C^G_i <= G(x) <=
    C^G_i + q_i``. Hence ``F(x) - G(x) <= d_i + p_i`` and ``G(x) - F(x) <= q_i - d_i``;
    take the maximum over bins, and ``|d_i| <= D_edges`` gives the last form. ∎

    With equal-mass fine bins ``p_i = 1/200``, so the gap is at most about half a
    percentage point (plus any excess of ``q_i`` from a point mass).

    Returns
    -------
    KSDistance
        ``distance`` (``D_edges``, never above the raw distance) and ``upper_bound``
        (the middle, per-bin form above).

    Examples
    --------
    >>> r = ks_distance([0.25, 0.25, 0.25, 0.25], [10, 20, 30, 40])
    >>> round(r.distance, 6), round(r.upper_bound, 6)
    (0.2, 0.45)

    """
    p = _probs(baseline_probs_fine, "baseline_probs_fine")
    c = _counts(observed_counts_fine, p.size, "observed_counts_fine")
    return _ks(p, c)


def _ks(p: NDArray[np.float64], c: NDArray[np.float64]) -> KSDistance:
    n = c.sum()
    if n == 0:
        return KSDistance(0.0, 1.0)
    q = c / n
    d = np.concatenate([[0.0], np.cumsum(p)[:-1] - np.cumsum(q)[:-1]])  # d_i at bin i's left
    dist = float(np.max(np.abs(d)))
    upper = float(max(np.max(d + p), np.max(q - d)))
    return KSDistance(dist, min(max(upper, dist), 1.0))


def ks_pvalue(distance: float, n: float, m: float | None = None) -> float:
    """Two-sample KS p-value at effective sample size ``n_eff = n*m/(n+m)``.

    Uses ``scipy.stats.kstwo`` (exact one-sample distribution) at ``floor(n_eff)`` up to
    ``n_eff = 1000`` and the limiting Kolmogorov distribution
    (``scipy.special.kolmogorov(sqrt(n_eff) * D)``, conservative for finite n) above,
    capped by the value at 1000 so the p-value never rises with n.

    Binned p-values are conservative: the binned distance never exceeds the raw one
    (:func:`ks_distance`), and ties in the baseline only make the KS law stochastically
    smaller.

    Examples
    --------
    >>> round(ks_pvalue(0.05, n=1_000), 4)
    0.013
    >>> ks_pvalue(0.05, n=1_000, m=1_000) > ks_pvalue(0.05, n=1_000)
    True

    """
    if not 0.0 <= distance <= 1.0:
        raise ValueError(f"KS distance must be in [0, 1], got {distance}")
    ne = effective_n(n, m)
    if distance == 0 or ne < 1:
        return 1.0
    if ne <= _KS_EXACT_MAX_N:
        return _kstwo_sf(distance, math.floor(ne))
    p = float(special.kolmogorov(math.sqrt(ne) * distance))
    if ne < 2 * _KS_EXACT_MAX_N:
        p = min(p, _kstwo_sf(distance, _KS_EXACT_MAX_N))
    return p


def _kstwo_sf(distance: float, n: int) -> float:
    # kstwo's own _sf: the public sf spends as long broadcasting and checking its scalar
    # arguments as computing (about 90 of 180 us); tests pin this to the public sf
    return float(stats.kstwo._sf(distance, n))


# -- verdicts --------------------------------------------------------------------------------


@dataclass(frozen=True)
class DriftVerdict:
    """Outcome of one drift evaluation (two gates).

    ``alarm`` needs ``passes_effect_floor`` *and* ``significant``; with fewer than
    ``min_n`` events the verdict is ``"insufficient"`` and nothing alarms.

    Examples
    --------
    >>> v = DriftVerdict("ks", effect=0.2, effect_floor=0.05, p_value=1e-9, alpha=1e-4,
    ...                  n=5000, n_baseline=None, min_n=200, n_bins=200)
    >>> v.verdict, v.alarm
    ('drift', True)

    """

    statistic: str
    effect: float
    effect_floor: float
    p_value: float
    alpha: float
    n: int
    n_baseline: int | None
    min_n: int
    n_bins: int
    effect_upper: float | None = None

    @property
    def n_effective(self) -> float:
        """``1/(1/n + 1/m)`` with ``m`` the baseline sample size."""
        return effective_n(self.n, self.n_baseline)

    @property
    def insufficient(self) -> bool:
        """Too few events for any verdict."""
        return self.n < self.min_n

    @property
    def passes_effect_floor(self) -> bool:
        """Practical significance: the effect size reaches its floor."""
        return self.effect >= self.effect_floor

    @property
    def significant(self) -> bool:
        """Statistical significance at ``alpha`` (never with too few events)."""
        return not self.insufficient and self.p_value <= self.alpha

    @property
    def alarm(self) -> bool:
        """Both gates pass."""
        return self.passes_effect_floor and self.significant

    @property
    def verdict(self) -> Literal["insufficient", "drift", "ok"]:
        """``"insufficient"``, ``"drift"`` or ``"ok"``."""
        if self.insufficient:
            return "insufficient"
        return "drift" if self.alarm else "ok"

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able statistics (e.g. for an Alert's ``statistics``)."""
        return {
            "statistic": self.statistic,
            "effect": self.effect,
            "effect_floor": self.effect_floor,
            "effect_upper": self.effect_upper,
            "p_value": self.p_value,
            "alpha": self.alpha,
            "n": self.n,
            "n_baseline": self.n_baseline,
            "n_effective": self.n_effective,
            "min_n": self.min_n,
            "n_bins": self.n_bins,
            "passes_effect_floor": self.passes_effect_floor,
            "significant": self.significant,
            "alarm": self.alarm,
            "verdict": self.verdict,
        }


@dataclass(frozen=True)
class DriftTest:
    """Configuration of a two-gate drift test; :meth:`evaluate` gives a verdict.

    Parameters
    ----------
    statistic
        ``"ks"`` (fine bins) or ``"psi"`` (``coarse_bins`` groups of the fine bins, made
        with near-equal *expected* mass, so they also fit a tier-truncated expectation).
    alpha
        Per-evaluation level; set it with :func:`calibrated_alpha`.
    effect_floor
        Minimum effect size; ``None`` takes :data:`DEFAULT_EFFECT_FLOORS`. For KS the
        floor is checked against the binned distance, which never exceeds the raw one.
    min_n
        Fewer observed events give ``"insufficient"``. At 200 the KS distance's own
        noise (95 % at ~1.36/sqrt(n) = 0.096) already exceeds the default floor.
    coarse_bins, smoothing
        PSI only; see :func:`psi`.

    Examples
    --------
    >>> probs = np.full(200, 1 / 200)
    >>> test = DriftTest("ks", alpha=1e-4)
    >>> test.evaluate(probs, np.full(200, 50)).verdict
    'ok'
    >>> shifted = np.concatenate([np.full(100, 30), np.full(100, 70)])
    >>> test.evaluate(probs, shifted).verdict
    'drift'
    >>> test.evaluate(probs, shifted // 70).verdict  # 100 events, all in the top half
    'insufficient'

    """

    statistic: Statistic = "ks"
    alpha: float = 1e-4
    effect_floor: float | None = None
    min_n: int = 200
    coarse_bins: int = 10
    smoothing: float = 0.5

    def __post_init__(self) -> None:
        if self.statistic not in DEFAULT_EFFECT_FLOORS:
            raise ValueError(f"statistic must be 'ks' or 'psi', got {self.statistic!r}")
        if not 0.0 < self.alpha < 1.0:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}")
        if self.effect_floor is None:
            object.__setattr__(self, "effect_floor", DEFAULT_EFFECT_FLOORS[self.statistic])
        elif not self.effect_floor >= 0:
            raise ValueError(f"effect_floor must be >= 0, got {self.effect_floor}")
        if self.min_n < 1 or self.coarse_bins < 2:
            raise ValueError("min_n must be >= 1 and coarse_bins >= 2")

    @property
    def floor(self) -> float:
        """The effect floor in use."""
        assert self.effect_floor is not None
        return self.effect_floor

    def evaluate(
        self,
        expected_probs: ArrayLike,
        observed_counts: ArrayLike,
        *,
        n_baseline: int | None = None,
    ) -> DriftVerdict:
        """Compare observed fine-bin counts with expected fine-bin probabilities.

        Parameters
        ----------
        expected_probs
            Expected probability per fine bin: the baseline, or its tier truncation.
        observed_counts
            Observed count per fine bin over the window.
        n_baseline
            Baseline sample size behind ``expected_probs`` (``None``: exact); for a
            tier truncation pass ``m * tier_mass``.

        """
        p = _probs(expected_probs, "expected_probs")
        c = _counts(observed_counts, p.size, "observed_counts")
        n = round(float(c.sum()))
        if self.statistic == "ks":
            kd = _ks(p, c)
            p_value = ks_pvalue(kd.distance, n, n_baseline)
            return self._verdict(kd.distance, p_value, n, n_baseline, p.size, kd.upper_bound)
        splits = _cached_splits(p.tobytes(), self.coarse_bins)
        pk, ck = np.add.reduceat(p, splits[:-1]), np.add.reduceat(c, splits[:-1])
        value = _psi(pk, ck, self.smoothing, _PSI_FLOOR)
        p_value = psi_pvalue(value, n, pk.size, n_baseline)
        return self._verdict(value, p_value, n, n_baseline, int(pk.size), None)

    def _verdict(
        self,
        effect: float,
        p_value: float,
        n: int,
        n_baseline: int | None,
        n_bins: int,
        effect_upper: float | None,
    ) -> DriftVerdict:
        return DriftVerdict(
            statistic=self.statistic,
            effect=effect,
            effect_floor=self.floor,
            p_value=p_value,
            alpha=self.alpha,
            n=n,
            n_baseline=n_baseline,
            min_n=self.min_n,
            n_bins=n_bins,
            effect_upper=effect_upper,
        )


def calibrated_alpha(
    target_false_alarms: float,
    period_seconds: float,
    eval_every_seconds: float,
    n_tests: int,
) -> float:
    """Per-evaluation level that keeps expected false alarms within a budget.

    ``alpha = target / (ceil(period / eval_every) * n_tests)``.

    **Why this holds over overlapping windows.** In any stretch of ``period_seconds``
    there are at most ``N = ceil(period / eval_every)`` evaluation times, each running
    ``n_tests`` tests (windows × statistics × tiers × signals). With no drift each test
    alarms with probability at most ``alpha`` (its p-value is valid, or conservative), so
    by linearity of expectation (the union bound) the expected number of alarming tests
    is at most ``N * n_tests * alpha = target``, and the probability of *any* false alarm
    is at most ``target`` when ``target < 1``. Neither step assumes independence, so
    overlapping windows, which make successive tests strongly dependent, are covered as
    they are. Pages are onsets of alarms, so they are at most as many as alarming tests.
    The bound is conservative exactly when tests are dependent: alarms cluster, so the
    realized page count is typically well below the budget.

    Examples
    --------
    >>> a = calibrated_alpha(1, 30 * 86400, 3600, n_tests=6)
    >>> round(a * 720 * 6, 12)
    1.0

    """
    if target_false_alarms <= 0 or period_seconds <= 0 or eval_every_seconds <= 0:
        raise ValueError("target, period and evaluation interval must be positive")
    if n_tests < 1:
        raise ValueError(f"n_tests must be >= 1, got {n_tests}")
    n_evals = math.ceil(period_seconds / eval_every_seconds - 1e-9)
    alpha = target_false_alarms / (max(n_evals, 1) * n_tests)
    if alpha >= 1:
        raise ValueError("the budget allows alpha >= 1: every evaluation could alarm")
    return alpha


# -- expected distributions per tier ---------------------------------------------------------


def _frac_at_or_above(edges: NDArray[np.float64], t: float) -> NDArray[np.float64]:
    """Fraction of each bin's mass at scores >= t, mass spread linearly inside a bin."""
    a, b = edges[:-1], edges[1:]
    width = b - a
    with np.errstate(divide="ignore", invalid="ignore"):
        lin = np.clip((b - t) / width, 0.0, 1.0)
    return np.where(width > 0, lin, (t <= a).astype(np.float64))


def expected_tier_probs(
    baseline_fine_probs: ArrayLike,
    fine_edges: ArrayLike,
    thresholds: ThresholdsLike,
    tier: str,
    *,
    normalize: bool = True,
) -> NDArray[np.float64]:
    """Baseline fine-bin distribution truncated to a tier under the thresholds in force.

    ``P(bin, tier) = sum over the bin of P(score) P(tier | score)``, with
    ``P(cheap | s) = 1`` for ``s >= cheap_above``, ``exploration_rate`` for
    ``capable_below <= s < cheap_above`` and 0 below; capable is the complement. A
    threshold falling inside a fine bin splits that bin's mass by linear interpolation of
    the baseline CDF between the bin's edges (exact when the threshold is an edge; at most
    one fine bin's mass off otherwise).

    Parameters
    ----------
    baseline_fine_probs
        Baseline probability per fine bin.
    fine_edges
        ``len(probs) + 1`` finite bin bounds (:attr:`QuantileBins.fine_edges`).
    thresholds
        :class:`~pipeline.schemas.Thresholds`, a mapping, or an object with the three
        attributes.
    tier
        ``"cheap"`` or ``"capable"``.
    normalize
        If false, return ``P(bin, tier)``, which sums to the tier's baseline share
        (:func:`tier_mass`).

    Examples
    --------
    >>> edges = np.array([0.0, 0.25, 0.5, 0.75, 1.0])
    >>> probs = np.full(4, 0.25)
    >>> th = Thresholds(cheap_above=0.6, capable_below=0.5, exploration_rate=0.5)
    >>> (expected_tier_probs(probs, edges, th, "cheap", normalize=False) * 100).round(2).tolist()
    [0.0, 0.0, 20.0, 25.0]
    >>> expected_tier_probs(probs, edges, th, "capable").round(4).tolist()
    [0.4545, 0.4545, 0.0909, 0.0]

    """
    _check_tier(tier)
    p = _probs(baseline_fine_probs, "baseline_fine_probs")
    e = np.asarray(fine_edges, dtype=np.float64)
    if e.shape != (p.size + 1,) or not np.all(np.isfinite(e)) or np.any(np.diff(e) < 0):
        raise ValueError(f"fine_edges must be {p.size + 1} finite non-decreasing values")
    th = as_thresholds(thresholds)
    above_cheap = _frac_at_or_above(e, th.cheap_above)
    above_band = _frac_at_or_above(e, th.capable_below)
    cheap = p * (above_cheap + th.exploration_rate * (above_band - above_cheap))
    out = cheap if tier == "cheap" else np.clip(p - cheap, 0.0, None)
    if not normalize:
        return out
    s = out.sum()
    if s <= 0:
        raise ValueError(f"tier {tier!r} gets no baseline mass under {th}")
    return out / s


def tier_mass(
    baseline_fine_probs: ArrayLike, fine_edges: ArrayLike, thresholds: ThresholdsLike, tier: str
) -> float:
    """Baseline share of a tier under the thresholds, ``P(tier)``.

    Multiply the baseline sample size by it to get the baseline size behind a tier
    truncation (``n_baseline`` of :meth:`DriftTest.evaluate`).
    """
    joint = expected_tier_probs(baseline_fine_probs, fine_edges, thresholds, tier, normalize=False)
    return float(joint.sum())


def expected_mixture_probs(
    baseline_fine_probs: ArrayLike,
    fine_edges: ArrayLike,
    tier_counts_by_thresholds: Mapping[Thresholds, float] | Iterable[tuple[ThresholdsLike, float]],
    tier: str,
) -> NDArray[np.float64]:
    """Expected fine-bin distribution of a tier over a window that saw several thresholds.

    Given how many of the tier's events in the window were routed under each set of
    thresholds, ``n_j``, the tier's expected distribution is the count-weighted mixture
    ``sum_j n_j P(bin | tier, thresholds_j) / sum_j n_j``. Conditional on those counts it
    is exact, so a threshold move by itself never looks like drift. (The observed counts
    are then a sum of multinomials, whose variance is at most the mixture multinomial's:
    the tests stay valid, if slightly conservative.)

    For ``n_baseline`` use ``m * min_j tier_mass(..., thresholds_j, tier)`` (conservative).

    Examples
    --------
    >>> edges, probs = np.linspace(0, 1, 5), np.full(4, 0.25)
    >>> old = Thresholds(cheap_above=0.5, capable_below=0.5)
    >>> new = Thresholds(cheap_above=0.75, capable_below=0.75)
    >>> expected_mixture_probs(probs, edges, {old: 300, new: 100}, "cheap").tolist()
    [0.0, 0.0, 0.375, 0.625]

    """
    items = (
        tier_counts_by_thresholds.items()
        if isinstance(tier_counts_by_thresholds, Mapping)
        else tier_counts_by_thresholds
    )
    total = 0.0
    acc: NDArray[np.float64] | None = None
    for th, w in items:
        w = float(w)
        if not math.isfinite(w) or w < 0:
            raise ValueError(f"event counts must be finite and >= 0, got {w}")
        if w == 0:
            continue
        part = w * expected_tier_probs(baseline_fine_probs, fine_edges, th, tier)
        acc = part if acc is None else acc + part
        total += w
    if acc is None:
        raise ValueError("no events: the mixture is undefined")
    return acc / total
