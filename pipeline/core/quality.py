"""Per-tier, per-band outcome counts, intervals and sequential quality tests.

Outcomes
--------
Every feedback kind becomes its own *signal* whose outcome ``y`` is a
"good" score in [0, 1] (:func:`outcome`):

=================  ===========================================  ===============
kind               value                                        y (good)
=================  ===========================================  ===============
``thumbs``         1 (up) / 0 (down)                            value
``rating``         1–5                                          1 if value ≥ 4
``review``         [0, 1] reviewer score                        value
``shadow``         [0, 1] agreement cheap vs capable answers    value
``survey``         [0, 1]                                       value
``support_contact``  1                                          see below
=================  ===========================================  ===============

``support_contact`` is a bad outcome counted against the tier's **routed
requests**, not against feedback: every routed request adds one "good" unit
(:meth:`OutcomeCounts.update_routed`) and every contact turns one of them bad
(:meth:`OutcomeCounts.update_contact`).  Its rate is therefore
``1 - contacts / routed requests``, so that every signal is a good-rate and a
rise in contacts is a drop like any other.  Contacts arrive hours to days
after their requests.  :meth:`OutcomeCounts.update_contact` buckets a contact
at its own time (contacts that happened in a window per request routed in it:
unbiased only while the volume is steady) and, with ``reference_ts``, at the
decision's time for the reference period.  The monitor does not use it for
contacts any more: :mod:`pipeline.core.lagged` attributes each contact to its
own request's decision hour, tier and band and corrects the window for the
contacts still to come with the learnt delay distribution, which stays
unbiased under any change of volume (weekly cycles, threshold moves).

Counts
------
:class:`OutcomeCounts` keeps, per ``(tier, band, signal)``, a ring of
event-time buckets (hourly by default, 28 days) of six sums
``n, Σw, Σw², Σwy, Σw²y, Σw²y²`` (:class:`Totals`).  A window (1d/7d/28d) is a
sum of buckets; memory is constant per key.  From the sums come the weighted
(Hájek) rate ``Σwy/Σw``, its linearized variance ``Σw²(y-ȳ)²/(Σw)²`` and Kish's
effective sample size ``(Σw)²/Σw²`` used by the Wilson/Beta intervals.  Sums
merge by addition, so partitions merge exactly.

Tests under continuous monitoring
---------------------------------
Monitoring re-evaluates overlapping sliding windows every few minutes for
months.  Always-valid tests (mixture SPRT, confidence sequences) control the
error of *one growing sample*; a rate that is stable for 40 days and then drops
is diluted in a cumulative sample, and restarting the sequence re-opens the
error budget.  :class:`SequentialDropTest` therefore spends the error budget by
Bonferroni over the evaluation schedule instead:

``alpha = false_alarms_per_period / (evaluations_per_period × n_comparisons)``

where ``n_comparisons`` counts tiers × signals × windows (plus the in-band gap
tests).  By linearity of expectation the expected number of false-alarm
evaluations per router and period is ``≤ false_alarms_per_period`` whatever
the dependence between overlapping windows (and ``P(any false alarm) ≤`` the
same number).  The price is conservativeness under strong overlap; it is made
visible by publishing the minimum detectable drop at the same ``alpha``.

Each evaluation is a one-sided *exact* binomial test (continuous in the
effective counts, through the regularized incomplete beta function) of
``H0: p_current ≥ p_reference``.  An estimated reference is replaced by its
Clopper–Pearson lower bound at ``alpha/2`` and the current window is tested
against that bound at ``alpha/2`` (union bound), so reference noise cannot
create alarms.  Exact tails matter here: at ``alpha ≈ 1e-5`` the normal
approximation is anti-conservative by orders of magnitude for small windows.
For unweighted binary outcomes the test is exact; for weighted or fractional
outcomes it uses Kish's effective counts (an approximation).

With ``reference_test="conditional"`` the window and the reference are
compared as two samples instead (:func:`conditional_drop_p_value`: given both
samples' bad outcomes, the window's share is binomial under H0), which spends
all of ``alpha`` on one test; with ``graded=True`` a Bernstein bound that uses
the outcomes' actual variance (:func:`bernstein_drop_p_value`) is combined
with it, for graded outcomes that vary far less than ``p(1-p)``.

Two gates: an alarm needs the point drop ``≥ floor`` (practical) **and** the
test significant at ``alpha`` (statistical) **and** at least
``min_effective_n`` effective observations (no verdicts from tiny samples).

Comparisons
-----------
(a) tier vs its own reference period (:meth:`SequentialDropTest.test`,
:meth:`SequentialDropTest.evaluate`); (b) cheap vs capable inside the
uncertain band on exploration traffic weighted by inverse propensity, Hájek
estimator with linearized variance: :meth:`SequentialDropTest.test_gap` tests
whether a gap exists, :meth:`SequentialDropTest.test_gap_change` whether it
*widened* since the reference period, which is what monitoring alarms on;
(c) aggregate vs tiers: :func:`masked_tiers` lists tiers that dropped while
the aggregate stayed within its reference band.

Why (b) alarms on the widening and not on the gap: a cost-saving router sends
the uncertain band's requests to the cheap model knowing it is somewhat worse
there (that is the trade it was tuned for), so a gap in the band is expected
from the first day, and with enough traffic it is significant in every window.
Alarming on the gap itself then pages continuously, at a rate that grows with
the traffic, for a state that was accepted when the thresholds were set.  What
needs a page is the gap *changing*: the difference in differences
``(capable − cheap)_window − (capable − cheap)_reference``, each arm against its
own reference, tested like comparison (a) with a one-sided bound valid at any
sample size (:func:`gap_change_p_value`) and the same practical floor and
evidence gates.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any, NamedTuple, Self

import numpy as np
from numpy.typing import ArrayLike
from scipy import optimize, special

__all__ = [
    "FEEDBACK_SIGNALS",
    "ROUTED_SIGNALS",
    "SIGNALS",
    "WINDOWS",
    "DropResult",
    "Estimate",
    "GapResult",
    "OutcomeCounts",
    "SequentialDropTest",
    "Totals",
    "bernstein_drop_p_value",
    "beta_interval",
    "conditional_drop_p_value",
    "effective_counts",
    "feedback_starvation",
    "gap_change_p_value",
    "hajek_mean",
    "horvitz_thompson_mean",
    "horvitz_thompson_total",
    "ipw_weight",
    "kish_effective_n",
    "masked_tiers",
    "minimum_detectable_drop",
    "outcome",
    "required_sample_size",
    "wilson_interval",
]

#: Signals measured on feedback events (rate = good feedback / feedback).
FEEDBACK_SIGNALS: tuple[str, ...] = ("thumbs", "rating", "review", "shadow", "survey")
#: Signals measured on routed requests (rate = 1 - bad events / routed requests).
ROUTED_SIGNALS: tuple[str, ...] = ("support_contact",)
SIGNALS: tuple[str, ...] = FEEDBACK_SIGNALS + ROUTED_SIGNALS
#: Default evaluation windows, in seconds.
WINDOWS: dict[str, float] = {"1d": 86400.0, "7d": 7 * 86400.0, "28d": 28 * 86400.0}

DAY = 86400.0


# --------------------------------------------------------------------------- intervals
def _check_counts(successes: float, n: float) -> tuple[float, float]:
    if not (n >= 0 and math.isfinite(n)):
        raise ValueError(f"n must be a finite number >= 0, got {n!r}")
    if not math.isfinite(successes):
        raise ValueError(f"successes must be finite, got {successes!r}")
    # Tiny negative/overshoot from float sums of weights is clipped, not an error.
    return min(max(float(successes), 0.0), float(n)), float(n)


def _check_confidence(confidence: float) -> float:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    return float(confidence)


def wilson_interval(successes: float, n: float, confidence: float = 0.95) -> tuple[float, float]:
    """Two-sided Wilson score interval for a binomial proportion.

    Parameters
    ----------
    successes, n
        Counts; may be fractional *effective* counts (see :func:`effective_counts`)
        for weighted or Horvitz–Thompson data.
    confidence
        Two-sided coverage, e.g. 0.95.

    Returns
    -------
    tuple of float
        ``(low, high)``; ``(0.0, 1.0)`` when ``n == 0``.

    Examples
    --------
    >>> lo, hi = wilson_interval(7, 20)
    >>> round(lo, 4), round(hi, 4)
    (0.1812, 0.5671)
    """
    s, n = _check_counts(successes, n)
    confidence = _check_confidence(confidence)
    if n == 0:
        return 0.0, 1.0
    z = float(special.ndtri(0.5 + confidence / 2))
    p = s / n
    z2n = z * z / n
    denom = 1.0 + z2n
    center = (p + z2n / 2) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z2n / (4 * n))
    lo = 0.0 if s <= 0 else max(0.0, center - half)
    hi = 1.0 if s >= n else min(1.0, center + half)
    return lo, hi


def beta_interval(
    successes: float, n: float, confidence: float = 0.95, method: str = "jeffreys"
) -> tuple[float, float]:
    """Two-sided Beta-quantile interval for a binomial proportion.

    Parameters
    ----------
    successes, n
        Counts, possibly fractional effective counts.
    confidence
        Two-sided coverage.
    method
        ``"jeffreys"``: equal-tailed Beta(s+½, n−s+½) posterior interval,
        with the lower bound set to 0 when ``s == 0`` and the upper to 1 when
        ``s == n`` (Brown, Cai & DasGupta 2001).  ``"clopper-pearson"``: the
        exact interval ``Beta(α/2; s, n−s+1)``, ``Beta(1−α/2; s+1, n−s)``.

    Examples
    --------
    >>> [round(x, 4) for x in beta_interval(7, 20)]
    [0.1723, 0.5678]
    >>> [round(x, 4) for x in beta_interval(7, 20, 0.9, method="clopper-pearson")]
    [0.1773, 0.558]
    """
    s, n = _check_counts(successes, n)
    confidence = _check_confidence(confidence)
    if n == 0:
        return 0.0, 1.0
    a = 1.0 - confidence
    if method == "jeffreys":
        lo = 0.0 if s <= 0 else float(special.betaincinv(s + 0.5, n - s + 0.5, a / 2))
        hi = 1.0 if s >= n else float(special.betaincinv(s + 0.5, n - s + 0.5, 1 - a / 2))
    elif method in ("clopper-pearson", "exact"):
        lo = 0.0 if s <= 0 else float(special.betaincinv(s, n - s + 1, a / 2))
        hi = 1.0 if s >= n else float(special.betaincinv(s + 1, n - s, 1 - a / 2))
    else:
        raise ValueError(f"method must be 'jeffreys' or 'clopper-pearson', got {method!r}")
    return lo, hi


def kish_effective_n(sum_w: float, sum_w2: float) -> float:
    """Kish's effective sample size ``(Σw)² / Σw²`` (0 when there is no weight).

    Examples
    --------
    >>> kish_effective_n(4.0, 4.0)   # four unit weights
    4.0
    >>> kish_effective_n(1 + 3.0, 1 + 9.0)  # weights 1 and 3
    1.6
    """
    if sum_w <= 0 or sum_w2 <= 0:
        return 0.0
    return sum_w * sum_w / sum_w2


def effective_counts(sum_wy: float, sum_w: float, sum_w2: float) -> tuple[float, float]:
    """Effective ``(successes, n)`` of weighted outcomes, for the binomial intervals.

    ``n_eff`` is Kish's effective size and ``successes = rate × n_eff`` with the
    weighted rate ``Σwy / Σw``: the binomial with these counts has the same
    rate and (for a constant-rate population) the same variance as the
    weighted estimate.

    Examples
    --------
    >>> effective_counts(3.0, 4.0, 4.0)
    (3.0, 4.0)
    """
    n_eff = kish_effective_n(sum_w, sum_w2)
    if n_eff == 0.0:
        return 0.0, 0.0
    rate = min(max(sum_wy / sum_w, 0.0), 1.0)
    return rate * n_eff, n_eff


# --------------------------------------------------------------------------- outcomes
def outcome(kind: str, value: float) -> float:
    """Map a feedback ``(kind, value)`` to its good-outcome score ``y`` in [0, 1].

    ``support_contact`` maps to 0.0 (bad), but it is a per-routed-request
    signal: feed it through :meth:`OutcomeCounts.update_contact`, not as a
    feedback outcome.

    Raises
    ------
    ValueError
        For an unknown kind or a value outside the kind's range: a silently
        clipped rating of 7 would hide a producer bug that should dead-letter.

    Examples
    --------
    >>> outcome("thumbs", 1), outcome("rating", 4), outcome("rating", 3), outcome("review", 0.7)
    (1.0, 1.0, 0.0, 0.7)
    """
    v = float(value)
    if kind == "thumbs":
        if v not in (0.0, 1.0):
            raise ValueError(f"thumbs value must be 0 or 1, got {value!r}")
        return v
    if kind == "rating":
        if not 1.0 <= v <= 5.0:
            raise ValueError(f"rating value must be in [1, 5], got {value!r}")
        return 1.0 if v >= 4.0 else 0.0
    if kind in ("review", "shadow", "survey"):
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"{kind} value must be in [0, 1], got {value!r}")
        return v
    if kind == "support_contact":
        return 0.0
    raise ValueError(f"unknown feedback kind {kind!r}; expected one of {SIGNALS}")


def ipw_weight(propensity: float, weight: float = 1.0) -> float:
    """Inverse-propensity weight ``weight / propensity`` for in-band comparisons.

    Examples
    --------
    >>> ipw_weight(0.2)
    5.0
    """
    if not 0.0 < propensity <= 1.0:
        raise ValueError(f"propensity must be in (0, 1], got {propensity!r}")
    return weight / propensity


# --------------------------------------------------------------------------- totals
@dataclass(frozen=True, slots=True)
class Totals:
    """Weighted outcome sums: ``n, Σw, Σw², Σwy, Σw²y, Σw²y²``.

    Examples
    --------
    >>> t = Totals.from_arrays([1, 1, 0, 1])
    >>> t.rate, t.n_eff
    (0.75, 4.0)
    >>> [round(x, 3) for x in t.interval(0.95)]
    [0.301, 0.954]
    >>> (t + t).n
    8.0
    """

    n: float = 0.0
    w: float = 0.0
    w2: float = 0.0
    wy: float = 0.0
    w2y: float = 0.0
    w2y2: float = 0.0

    @classmethod
    def from_arrays(cls, y: ArrayLike, weights: ArrayLike | None = None) -> Totals:
        """Totals of outcomes ``y`` with optional weights (default 1)."""
        ya = np.asarray(y, dtype=float)
        wa = np.ones_like(ya) if weights is None else np.asarray(weights, dtype=float)
        w2 = wa * wa
        return cls(
            float(ya.size),
            float(wa.sum()),
            float(w2.sum()),
            float((wa * ya).sum()),
            float((w2 * ya).sum()),
            float((w2 * ya * ya).sum()),
        )

    @classmethod
    def from_vector(cls, v: Sequence[float] | np.ndarray) -> Totals:
        """Totals from the six sums in field order."""
        return cls(*(float(x) for x in v))

    def as_vector(self) -> np.ndarray:
        """The six sums as a float array."""
        return np.array([self.n, self.w, self.w2, self.wy, self.w2y, self.w2y2])

    def __add__(self, other: Totals) -> Totals:
        return Totals(
            self.n + other.n,
            self.w + other.w,
            self.w2 + other.w2,
            self.wy + other.wy,
            self.w2y + other.w2y,
            self.w2y2 + other.w2y2,
        )

    @property
    def rate(self) -> float:
        """Weighted (Hájek) good-rate ``Σwy/Σw`` clipped to [0, 1]; NaN when empty."""
        if self.w <= 0:
            return math.nan
        return min(max(self.wy / self.w, 0.0), 1.0)

    @property
    def n_eff(self) -> float:
        """Kish's effective sample size."""
        return kish_effective_n(self.w, self.w2)

    @property
    def successes_eff(self) -> float:
        """Effective successes ``rate × n_eff``."""
        return effective_counts(self.wy, self.w, self.w2)[0]

    @property
    def variance(self) -> float:
        """Linearized variance of the Hájek rate, ``Σw²(y−ȳ)² / (Σw)²``.

        For unweighted binary data this is ``p(1−p)/n``.  NaN when empty.
        """
        if self.w <= 0:
            return math.nan
        mu = self.wy / self.w
        num = self.w2y2 - 2 * mu * self.w2y + mu * mu * self.w2
        return max(num, 0.0) / (self.w * self.w)

    def interval(self, confidence: float = 0.95, method: str = "wilson") -> tuple[float, float]:
        """Interval of the rate from effective counts (``wilson``, ``jeffreys``,
        ``clopper-pearson``)."""
        s, n = effective_counts(self.wy, self.w, self.w2)
        if method == "wilson":
            return wilson_interval(s, n, confidence)
        return beta_interval(s, n, confidence, method)

    def to_dict(self) -> dict[str, float]:
        """The six sums by name."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, float]) -> Totals:
        """Inverse of :meth:`to_dict`."""
        return cls(**{k: float(v) for k, v in d.items()})


def _vec(y: float, w: float) -> np.ndarray:
    w2 = w * w
    return np.array([1.0, w, w2, w * y, w2 * y, w2 * y * y])


_ZERO6 = np.zeros(6)


# --------------------------------------------------------------------------- counts
Key = tuple[str, int, str]


class OutcomeCounts:
    """Mergeable per ``(tier, band, signal)`` outcome sums over event-time buckets.

    Parameters
    ----------
    bucket_seconds
        Width of one event-time bucket.
    n_buckets
        Ring size; the longest window is ``bucket_seconds × n_buckets`` and an
        event more than that behind the newest bucket is too late
        (counted in :attr:`n_late`, see :meth:`accepts`).
    reference
        Optional ``(start, end)`` epoch seconds of the reference period;
        outcomes with ``start <= ts < end`` are also added to a frozen
        reference table that does not age out (:meth:`reference_totals`).

    Examples
    --------
    >>> c = OutcomeCounts(reference=(0.0, 7 * 86400.0))
    >>> for i in range(10):
    ...     _ = c.update("cheap", 2, "thumbs", ts=3600.0 * i, y=1.0 if i % 5 else 0.0)
    >>> _ = c.update_feedback("cheap", 2, "rating", 5, ts=40000.0)
    >>> t = c.window(now=40000.0, seconds=86400.0, signal="thumbs", tier="cheap")
    >>> t.n, t.rate
    (10.0, 0.8)
    >>> c.reference_totals("rating").n
    1.0
    >>> _ = c.update_routed("cheap", 2, ts=100.0, count=50).update_contact("cheap", 2, ts=100.0)
    >>> c.window(100.0, 86400.0, signal="support_contact").rate   # 1 - contacts/routed
    0.98
    """

    def __init__(
        self,
        bucket_seconds: float = 3600.0,
        n_buckets: int = 28 * 24,
        reference: tuple[float, float] | None = None,
    ) -> None:
        if not (bucket_seconds > 0 and math.isfinite(bucket_seconds)):
            raise ValueError(f"bucket_seconds must be positive, got {bucket_seconds!r}")
        if n_buckets < 1:
            raise ValueError(f"n_buckets must be >= 1, got {n_buckets!r}")
        if reference is not None and not reference[0] < reference[1]:
            raise ValueError(f"reference must be (start, end) with start < end, got {reference!r}")
        self.bucket_seconds = float(bucket_seconds)
        self.n_buckets = int(n_buckets)
        self.reference = None if reference is None else (float(reference[0]), float(reference[1]))
        self._rings: dict[Key, np.ndarray] = {}
        self._ref: dict[Key, np.ndarray] = {}
        self._head: int | None = None
        self.n_late = 0
        self._match_cache: dict[tuple[str, str | None, int | None], list[Key]] = {}
        self._match_size = -1
        # per-key window sums, valid until the next update: the tier, aggregate and band
        # windows of one evaluation sum the same keys' buckets over and over
        self._version = 0
        self._sums: dict[tuple[Key, int, int], np.ndarray] = {}
        self._sums_version = 0
        self._refs: dict[tuple[str, str | None, int | None], Totals] = {}
        self._refs_version = 0

    _CACHES = ("_match_cache", "_match_size", "_sums", "_sums_version", "_refs", "_refs_version",
               "_version")

    def __getstate__(self) -> dict[str, Any]:
        # caches are rebuilt on demand: a checkpoint (and a state comparison) holds counts
        return {k: v for k, v in self.__dict__.items() if k not in self._CACHES}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._match_cache, self._sums, self._refs = {}, {}, {}
        self._match_size = self._sums_version = self._refs_version = -1
        self._version = 0

    # ------------------------------------------------------------ internals
    def _bucket(self, ts: float) -> int:
        return math.floor(ts / self.bucket_seconds)

    def _advance(self, b: int) -> None:
        head = self._head
        if head is None:
            self._head = b
            return
        if b <= head:
            return
        if b - head >= self.n_buckets:
            for arr in self._rings.values():
                arr[:] = 0.0
        else:
            idx = np.arange(head + 1, b + 1) % self.n_buckets
            for arr in self._rings.values():
                arr[idx] = 0.0
        self._head = b

    def accepts(self, ts: float) -> bool:
        """Whether an outcome at ``ts`` still lands in the ring (else: too late)."""
        return self._head is None or self._bucket(ts) > self._head - self.n_buckets

    def _add(self, key: Key, ts: float, vec: np.ndarray, ref_ts: float | None = None) -> Self:
        if not math.isfinite(ts):
            raise ValueError(f"ts must be finite, got {ts!r}")
        ref_ts = ts if ref_ts is None else float(ref_ts)
        b = self._bucket(ts)
        if self._head is not None and b <= self._head - self.n_buckets:
            self.n_late += 1
            return self
        self._advance(b)
        self._version += 1
        arr = self._rings.get(key)
        if arr is None:
            arr = self._rings[key] = np.zeros((self.n_buckets, 6))
        arr[b % self.n_buckets] += vec
        ref = self.reference
        if ref is not None and ref[0] <= ref_ts < ref[1]:
            r = self._ref.get(key)
            if r is None:
                r = self._ref[key] = np.zeros(6)
            r += vec
        return self

    # ------------------------------------------------------------ updates
    def update(
        self, tier: str, band: int, signal: str, ts: float, y: float, weight: float = 1.0
    ) -> Self:
        """Add one outcome ``y`` in [0, 1] with ``weight`` (e.g. 1/π or 1/propensity)."""
        if not (weight > 0 and math.isfinite(weight)):
            raise ValueError(f"weight must be positive and finite, got {weight!r}")
        if not 0.0 <= y <= 1.0:
            raise ValueError(f"y must be in [0, 1], got {y!r}")
        return self._add((tier, int(band), signal), ts, _vec(float(y), float(weight)))

    def update_feedback(
        self, tier: str, band: int, kind: str, value: float, ts: float, weight: float = 1.0
    ) -> Self:
        """Map a feedback event with :func:`outcome` and add it (contacts included)."""
        if kind == "support_contact":
            return self.update_contact(tier, band, ts)
        return self.update(tier, band, kind, ts, outcome(kind, value), weight)

    def update_counts(
        self, tier: str, band: int, signal: str, ts: float, good: float, n: float
    ) -> Self:
        """Add pre-aggregated unweighted binary counts (``good`` of ``n``)."""
        if not 0 <= good <= n:
            raise ValueError(f"need 0 <= good <= n, got good={good!r}, n={n!r}")
        g, m = float(good), float(n)
        return self._add((tier, int(band), signal), ts, np.array([m, m, m, g, g, g]))

    def update_routed(self, tier: str, band: int, ts: float, count: float = 1) -> Self:
        """Count routed requests: the denominator of ``support_contact``."""
        c = float(count)
        return self._add((tier, int(band), "support_contact"), ts, np.array([c] * 6))

    def update_contact(
        self, tier: str, band: int, ts: float, reference_ts: float | None = None
    ) -> Self:
        """Count one support contact against the routed requests at ``ts``.

        With ``reference_ts`` (the decision's event time) the contact is bucketed at
        ``ts`` (when it happened) in the sliding windows but belongs to the reference
        period by its decision's time: a window then counts the contacts that *arrived*
        in it against the requests routed in it (unbiased while the rate is steady,
        however long contacts take to arrive), and the reference counts every contact
        its own requests eventually caused.  Without it, both use ``ts``.
        """
        if reference_ts is not None and not math.isfinite(reference_ts):
            raise ValueError(f"reference_ts must be finite, got {reference_ts!r}")
        return self._add(
            (tier, int(band), "support_contact"), ts, np.array([0.0, 0.0, 0.0, -1.0, -1.0, -1.0]),
            reference_ts,
        )

    # ------------------------------------------------------------ reads
    @property
    def head(self) -> int | None:
        """Index of the newest bucket (``floor(ts / bucket_seconds)``)."""
        return self._head

    @property
    def keys(self) -> list[Key]:
        """All ``(tier, band, signal)`` keys seen, sorted."""
        return sorted(set(self._rings) | set(self._ref))

    @property
    def tiers(self) -> list[str]:
        """Tiers seen, sorted."""
        return sorted({k[0] for k in self.keys})

    @property
    def signals(self) -> list[str]:
        """Signals seen, sorted."""
        return sorted({k[2] for k in self.keys})

    @property
    def bands(self) -> list[int]:
        """Bands seen, sorted."""
        return sorted({k[1] for k in self.keys})

    def _match(
        self, keys: Iterable[Key], signal: str, tier: str | None, band: int | None
    ) -> list[Key]:
        return [
            k
            for k in keys
            if k[2] == signal and (tier is None or k[0] == tier) and (band is None or k[1] == band)
        ]

    def window(
        self,
        now: float,
        seconds: float,
        *,
        signal: str,
        tier: str | None = None,
        band: int | None = None,
    ) -> Totals:
        """Totals of the buckets in ``(now - seconds, now]`` (bucket-aligned).

        ``tier=None`` / ``band=None`` sum over all tiers / bands.
        """
        m = math.ceil(seconds / self.bucket_seconds - 1e-9)
        if not 1 <= m <= self.n_buckets:
            raise ValueError(
                f"window of {seconds!r} s needs {m} buckets; the ring holds {self.n_buckets}"
            )
        if self._head is None:
            return Totals()
        k_now = self._bucket(now)
        lo = max(k_now - m + 1, self._head - self.n_buckets + 1)
        hi = min(k_now, self._head)
        if hi < lo:
            return Totals()
        keys = self._match_cached(signal, tier, band)
        if not keys:
            return Totals()
        a, b = lo % self.n_buckets, hi % self.n_buckets
        # a contiguous slice of the ring, or two (None): much cheaper than fancy indexing
        rows: slice | None = slice(a, b + 1) if a <= b else None
        if hi - lo + 1 == self.n_buckets:
            rows = slice(None)
        if self._sums_version != self._version:
            self._sums.clear()
            self._sums_version = self._version
        sums = self._sums
        total = np.zeros(6)
        for k in keys:
            part = sums.get((k, lo, hi))
            if part is None:
                ring = self._rings[k]
                if rows is None:
                    part = ring[a:].sum(axis=0) + ring[: b + 1].sum(axis=0)
                else:
                    part = ring[rows].sum(axis=0)
                sums[(k, lo, hi)] = part
            total += part
        return Totals.from_vector(total)

    def series(
        self, first: int, last: int, *, signal: str, tier: str | None = None,
        band: int | None = None,
    ) -> np.ndarray:
        """Per-bucket sums for buckets ``first..last``, newest first: shape
        ``(last - first + 1, 6)`` in the order of :meth:`Totals.as_vector`; buckets
        outside the ring are zeros.

        >>> c = OutcomeCounts().update_routed("cheap", 1, ts=7200.0, count=40)
        >>> c.series(0, 2, signal="support_contact")[:, 0].tolist()
        [40.0, 0.0, 0.0]
        """
        out = np.zeros((max(last - first + 1, 0), 6))
        if self._head is None or out.shape[0] == 0:
            return out
        lo = max(first, self._head - self.n_buckets + 1)
        hi = min(last, self._head)
        if hi < lo:
            return out
        idx = np.arange(hi, lo - 1, -1)
        for k in self._match_cached(signal, tier, band):
            out[last - hi: last - lo + 1] += self._rings[k][idx % self.n_buckets]
        return out

    def _match_cached(self, signal: str, tier: str | None, band: int | None) -> list[Key]:
        """Matching ring keys, cached until a new key appears."""
        if self._match_size != len(self._rings):
            self._match_cache.clear()
            self._match_size = len(self._rings)
        k = (signal, tier, band)
        keys = self._match_cache.get(k)
        if keys is None:
            keys = self._match_cache[k] = self._match(self._rings, signal, tier, band)
        return keys

    def reference_totals(
        self, signal: str, tier: str | None = None, band: int | None = None
    ) -> Totals:
        """Totals of the frozen reference period (empty if none configured)."""
        if self._refs_version != self._version:
            self._refs.clear()
            self._refs_version = self._version
        cached = self._refs.get((signal, tier, band))
        if cached is None:
            total = np.zeros(6)
            for k in self._match(self._ref, signal, tier, band):
                total += self._ref[k]
            cached = self._refs[(signal, tier, band)] = Totals.from_vector(total)
        return cached

    # ------------------------------------------------------------ merge / serde
    def _check_compatible(self, other: OutcomeCounts) -> None:
        if (self.bucket_seconds, self.n_buckets, self.reference) != (
            other.bucket_seconds,
            other.n_buckets,
            other.reference,
        ):
            raise ValueError(
                "cannot merge OutcomeCounts with different bucket_seconds, n_buckets or reference"
            )

    def merge(self, other: OutcomeCounts) -> Self:
        """Add another partition's counts (same configuration required)."""
        self._check_compatible(other)
        self._version += 1
        if other._head is not None:
            self._advance(other._head)
            assert self._head is not None
            gone = self._head - other._head  # buckets of `other` that fell out of the ring
            n = self.n_buckets
            first = other._head - n + 1
            drop = None if gone <= 0 else np.arange(first, first + gone) % n
            for k, arr in other._rings.items():
                if gone >= n:
                    continue
                add = arr
                if drop is not None:
                    add = arr.copy()
                    add[drop] = 0.0
                mine = self._rings.get(k)
                if mine is None:
                    self._rings[k] = add.copy()
                else:
                    mine += add
        for k, r in other._ref.items():
            mine_r = self._ref.get(k)
            if mine_r is None:
                self._ref[k] = r.copy()
            else:
                mine_r += r
        self.n_late += other.n_late
        return self

    def __iadd__(self, other: OutcomeCounts) -> Self:
        return self.merge(other)

    def __add__(self, other: OutcomeCounts) -> OutcomeCounts:
        return copy.deepcopy(self).merge(other)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able state: non-empty buckets by absolute index, sorted keys."""
        rings = []
        head = self._head
        for k in sorted(self._rings):
            arr = self._rings[k]
            rows = []
            if head is not None:
                for b in range(head - self.n_buckets + 1, head + 1):
                    row = arr[b % self.n_buckets]
                    if row.any():
                        rows.append([b, *(float(x) for x in row)])
            if rows:
                rings.append([k[0], k[1], k[2], rows])
        refs = [
            [k[0], k[1], k[2], [float(x) for x in self._ref[k]]]
            for k in sorted(self._ref)
            if self._ref[k].any()
        ]
        return {
            "bucket_seconds": self.bucket_seconds,
            "n_buckets": self.n_buckets,
            "reference": None if self.reference is None else list(self.reference),
            "head": head,
            "n_late": self.n_late,
            "buckets": rings,
            "reference_totals": refs,
        }

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> OutcomeCounts:
        """Rebuild from :meth:`to_dict` output."""
        ref = state.get("reference")
        c = cls(
            bucket_seconds=float(state["bucket_seconds"]),
            n_buckets=int(state["n_buckets"]),
            reference=None if ref is None else (float(ref[0]), float(ref[1])),
        )
        head = state.get("head")
        c._head = None if head is None else int(head)
        c.n_late = int(state.get("n_late", 0))
        for tier, band, signal, rows in state["buckets"]:
            arr = np.zeros((c.n_buckets, 6))
            for b, *vals in rows:
                arr[int(b) % c.n_buckets] = vals
            c._rings[(tier, int(band), signal)] = arr
        for tier, band, signal, vals in state["reference_totals"]:
            c._ref[(tier, int(band), signal)] = np.array(vals, dtype=float)
        return c

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, OutcomeCounts):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"OutcomeCounts(bucket_seconds={self.bucket_seconds:g}, n_buckets={self.n_buckets}, "
            f"keys={len(self._rings)}, head={self._head})"
        )


# --------------------------------------------------------------------------- HT / Hájek
class Estimate(NamedTuple):
    """A point estimate with its (estimated) variance."""

    value: float
    variance: float
    n: int

    @property
    def se(self) -> float:
        """Standard error."""
        return math.sqrt(self.variance) if self.variance >= 0 else math.nan

    def interval(self, confidence: float = 0.95) -> tuple[float, float]:
        """Normal-approximation interval."""
        z = float(special.ndtri(0.5 + _check_confidence(confidence) / 2))
        return self.value - z * self.se, self.value + z * self.se


def _check_pi(y: ArrayLike, pi: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    ya = np.asarray(y, dtype=float)
    pa = np.asarray(pi, dtype=float)
    if ya.shape != pa.shape:
        raise ValueError(f"y and pi must have the same shape, got {ya.shape} and {pa.shape}")
    if pa.size and not (np.all(pa > 0) and np.all(pa <= 1)):
        raise ValueError("inclusion probabilities must be in (0, 1]")
    return ya, pa


def horvitz_thompson_total(y: ArrayLike, pi: ArrayLike) -> Estimate:
    """Horvitz–Thompson estimate of a population total from a Poisson sample.

    ``T = Σ y/π`` over the selected units; the unbiased variance estimator
    under Poisson (independent Bernoulli) sampling is ``Σ (1−π) y² / π²``.

    Examples
    --------
    >>> e = horvitz_thompson_total([1.0, 0.0, 1.0], [0.5, 0.25, 1.0])
    >>> e.value, e.variance
    (3.0, 2.0)
    """
    ya, pa = _check_pi(y, pi)
    total = float(np.sum(ya / pa))
    var = float(np.sum((1 - pa) * ya * ya / (pa * pa)))
    return Estimate(total, var, int(ya.size))


def horvitz_thompson_mean(y: ArrayLike, pi: ArrayLike, population_size: float) -> Estimate:
    """HT estimate of a population mean when the population size is known.

    Examples
    --------
    >>> horvitz_thompson_mean([1.0, 0.0, 1.0], [0.5, 0.25, 1.0], population_size=6).value
    0.5
    """
    if not population_size > 0:
        raise ValueError(f"population_size must be > 0, got {population_size!r}")
    e = horvitz_thompson_total(y, pi)
    return Estimate(e.value / population_size, e.variance / population_size**2, e.n)


def hajek_mean(y: ArrayLike, pi: ArrayLike) -> Estimate:
    """Hájek (ratio) mean ``Σ(y/π) / Σ(1/π)`` with its linearized variance.

    Needs no population size and is usually more stable than the HT mean;
    its variance estimate under Poisson sampling is
    ``Σ (1−π)(y−ȳ)²/π² / N̂²`` with ``N̂ = Σ 1/π``.

    Examples
    --------
    >>> round(hajek_mean([1.0, 0.0, 1.0], [0.5, 0.25, 1.0]).value, 4)
    0.4286
    """
    ya, pa = _check_pi(y, pi)
    if ya.size == 0:
        return Estimate(math.nan, math.nan, 0)
    inv = 1.0 / pa
    n_hat = float(inv.sum())
    mu = float((ya * inv).sum() / n_hat)
    var = float(np.sum((1 - pa) * (ya - mu) ** 2 * inv * inv)) / (n_hat * n_hat)
    return Estimate(mu, var, int(ya.size))


# --------------------------------------------------------------------------- power
def _binom_cdf(s: float, n: float, p: float) -> float:
    """``P(X <= s)`` for ``X ~ Binomial(n, p)``, continuous in ``s`` and ``n``."""
    if s < 0:
        return 0.0
    if s >= n:
        return 1.0
    if p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 0.0
    return float(special.betainc(n - s, s + 1.0, 1.0 - p))


def _binom_sf(s: float, n: float, p: float) -> float:
    """``P(X >= s)`` for ``X ~ Binomial(n, p)``, continuous in ``s`` and ``n``."""
    if s <= 0:
        return 1.0
    if s > n or p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 1.0
    return float(special.betainc(s, n - s + 1.0, p))


def conditional_drop_p_value(
    s_current: float, n_current: float, s_reference: float, n_reference: float
) -> float:
    """One-sided p-value of ``H0: current good-rate ≥ reference good-rate``, two samples.

    The conditional test of equal bad-outcome rates: given the bad outcomes of both
    samples together, ``B = b_cur + b_ref``, the current window's share is
    ``Binomial(B, n_cur / (n_cur + n_ref))`` under H0, and the p-value is its upper
    tail at ``b_cur`` (continuous in the effective counts through the regularized
    incomplete beta function).  It is exact for Poisson counts (rare bad outcomes:
    support contacts, thumbs-down) and conservative for binomial ones, whose exact
    conditional law is the hypergeometric (Fisher's exact test): sampling without
    replacement is less spread than with it.  Unlike testing against the
    reference's lower bound, all of ``alpha`` goes to one test and the reference's
    noise is not paid twice.

    Examples
    --------
    >>> p = conditional_drop_p_value(170, 200, 1800, 2000)   # 15 % bad vs 10 % bad
    >>> round(p, 4)   # Fisher's exact test gives 0.0222
    0.029
    >>> conditional_drop_p_value(190, 200, 1800, 2000) > 0.99   # better than the reference
    True
    """
    if not (n_current > 0 and n_reference > 0):
        return 1.0
    b_cur = max(n_current - s_current, 0.0)
    b_ref = max(n_reference - s_reference, 0.0)
    if b_cur <= 0:
        return 1.0
    share = n_current / (n_current + n_reference)
    return _binom_sf(b_cur, b_cur + b_ref, share)


def bernstein_drop_p_value(current: Totals, reference: Totals) -> float:
    """Bernstein bound on ``P(reference mean - current mean >= observed)`` under H0.

    Valid for any outcomes in [0, 1] at any sample size: with both samples drawn from
    distributions of the same mean and of variance ``σ²`` (estimated pooled, around
    the pooled mean), the difference of the means is a sum of independent terms with
    variance ``V = σ²(1/n_cur + 1/n_ref)``, each bounded by ``b``, the largest weight
    share (``1/n`` for unweighted samples, else at most ``√Σw²/Σw``), so
    ``P(D ≥ t) ≤ exp(-t² / (2V + 2bt/3))``.  Where graded outcomes vary much less
    than ``p(1-p)`` it is far sharper than the binomial tail; where they do not, the
    binomial is sharper.  (A binomial with matched variance is sharper still, but
    anti-conservative in the far tail when low outcomes are rare in a small window.)

    Examples
    --------
    >>> ref = Totals.from_arrays([0.9] * 900 + [0.3] * 100)          # mean 0.84
    >>> cur = Totals.from_arrays([0.9] * 160 + [0.3] * 40)           # mean 0.78
    >>> f"{bernstein_drop_p_value(cur, ref):.1e}"
    '3.8e-03'
    """
    t = reference.rate - current.rate
    if not t > 0 or current.w <= 0 or reference.w <= 0:
        return 1.0
    w = current.w + reference.w
    w2 = current.w2 + reference.w2
    mean = (current.wy + reference.wy) / w
    ss = current.w2y2 + reference.w2y2 - 2.0 * mean * (current.w2y + reference.w2y)
    sigma2 = max(ss + mean * mean * w2, 0.0) / w2

    n_cur, n_ref = current.n_eff, reference.n_eff
    variance = sigma2 * (1.0 / n_cur + 1.0 / n_ref)
    b = max(_max_weight_share(current), _max_weight_share(reference))
    return math.exp(-t * t / (2.0 * variance + 2.0 * b * t / 3.0))


def _max_weight_share(x: Totals) -> float:
    """Upper bound on ``max wᵢ / Σw``: ``1/n`` for equal weights, else ``√Σw² / Σw``."""
    n_eff = x.n_eff
    return 1.0 / n_eff if math.isclose(n_eff, x.n, rel_tol=1e-9) else math.sqrt(x.w2) / x.w


def _pooled_variance(a: Totals, b: Totals) -> float:
    """Per-observation variance ``Σw²(y − m)² / Σw²`` of two samples pooled around
    their pooled weighted mean ``m`` (what both share under "no change")."""
    w, w2 = a.w + b.w, a.w2 + b.w2
    if w <= 0 or w2 <= 0:
        return math.nan
    m = (a.wy + b.wy) / w
    ss = a.w2y2 + b.w2y2 - 2.0 * m * (a.w2y + b.w2y) + m * m * w2
    return max(ss, 0.0) / w2


def gap_change_p_value(
    cheap: Totals, capable: Totals, cheap_reference: Totals, capable_reference: Totals
) -> tuple[float, float, float]:
    """One-sided test that the capable − cheap gap *widened* since the reference.

    The statistic is the difference in differences
    ``D = (capable − cheap)_current − (capable − cheap)_reference`` of the four
    Hájek rates.  Under ``H0: the gap did not widen`` ``E[D] ≤ 0``, and ``D − E[D]``
    is a weighted sum of independent centred outcomes in [0, 1] (the current and
    reference samples are disjoint; where they overlap, the positive covariance of
    an arm with itself only shrinks the true variance, so the bound stays valid).
    Bernstein's inequality then gives ``P(D ≥ t) ≤ exp(−t² / (2V + 2bt/3))`` at any
    sample size, where ``V = Σ_arm σ²_arm (1/n_eff,current + 1/n_eff,reference)``
    uses each arm's variance estimated over its two periods pooled (around their
    pooled mean, which adds a between-period term if the arm moved: an
    overestimate, never an underestimate, of the within-period variance) and ``b``
    bounds every term's range (the largest weight share of the four samples).  As
    in :func:`bernstein_drop_p_value` the variance is a plug-in estimate.  A normal
    tail would be sharper, but at the per-test levels of continuous monitoring
    (~1e-5) it is anti-conservative for rare bad outcomes in small IPW-weighted arms.

    Returns
    -------
    tuple of float
        ``(D, sqrt(V), p_value)``; ``p_value`` is 1 when ``D ≤ 0`` or an arm is empty.

    Examples
    --------
    >>> same = Totals.from_arrays([1.0] * 850 + [0.0] * 150)            # 0.85
    >>> cap = Totals.from_arrays([1.0] * 900 + [0.0] * 100)             # 0.90
    >>> gap_change_p_value(same, cap, same, cap)[2]                     # constant gap
    1.0
    >>> worse = Totals.from_arrays([1.0] * 750 + [0.0] * 250)           # 0.75
    >>> d, se, p = gap_change_p_value(worse, cap, same, cap)
    >>> round(d, 3), f"{p:.1e}"
    (0.1, '8.5e-05')
    """
    samples = (cheap, capable, cheap_reference, capable_reference)
    if any(x.w <= 0 for x in samples):
        return math.nan, math.nan, 1.0
    d = (capable.rate - cheap.rate) - (capable_reference.rate - cheap_reference.rate)
    variance = 0.0
    for cur, ref in ((cheap, cheap_reference), (capable, capable_reference)):
        variance += _pooled_variance(cur, ref) * (1.0 / cur.n_eff + 1.0 / ref.n_eff)
    se = math.sqrt(variance)
    if not d > 0:
        return d, se, 1.0
    b = max(_max_weight_share(x) for x in samples)
    return d, se, math.exp(-d * d / (2.0 * variance + 2.0 * b * d / 3.0))


def _lower_bound(s: float, n: float, alpha: float) -> float:
    """One-sided Clopper–Pearson lower bound at level ``alpha``."""
    if n <= 0 or s <= 0:
        return 0.0
    s = min(s, n)
    return float(special.betaincinv(s, n - s + 1.0, alpha))


def _test_level(base_rate: float, alpha: float, n_reference: float | None) -> tuple[float, float]:
    """(null rate, level) of the one-sided test against a known or estimated reference."""
    if n_reference is None or math.isinf(n_reference):
        return base_rate, alpha
    return _lower_bound(base_rate * n_reference, n_reference, alpha / 2), alpha / 2


def minimum_detectable_drop(
    n_per_window: float,
    base_rate: float,
    alpha: float,
    power: float = 0.8,
    *,
    n_reference: float | None = None,
    method: str = "bound",
) -> float:
    """Smallest drop of a good-rate the window test detects with ``power``.

    Uses the same exact one-sided binomial test as :class:`SequentialDropTest`
    (critical count ``c`` with ``P(X ≤ c | p0) = alpha``, then the rate ``p1``
    with ``P(X ≤ c | p1) = power``); with ``n_reference`` the reference is
    estimated and the test runs against its lower bound at ``alpha/2``.

    Parameters
    ----------
    n_per_window
        (Effective) number of outcomes in one window.
    base_rate
        Reference good-rate.
    alpha
        Per-evaluation level (e.g. :attr:`SequentialDropTest.alpha`).
    power
        Target probability of detection.
    n_reference
        Effective size of the reference sample; ``None`` = known rate.
    method
        How an estimated reference is tested (``SequentialDropTest.reference_test``):
        ``"bound"`` (its lower bound) or ``"conditional"``
        (:func:`conditional_drop_p_value` with the reference at its expected counts).

    Returns
    -------
    float
        The drop ``base_rate - p1``; ``inf`` when no drop is detectable (too
        few observations for even zero successes to be significant).

    Examples
    --------
    >>> round(minimum_detectable_drop(1000, 0.9, alpha=0.05, power=0.8), 3)
    0.025
    >>> minimum_detectable_drop(3, 0.9, alpha=1e-4)
    inf
    """
    if not 0.0 < base_rate <= 1.0:
        raise ValueError(f"base_rate must be in (0, 1], got {base_rate!r}")
    if not (0.0 < alpha < power < 1.0):
        raise ValueError(f"need 0 < alpha < power < 1, got alpha={alpha!r}, power={power!r}")
    n = float(n_per_window)
    if not n > 0:
        return math.inf
    if method == "conditional" and n_reference is not None and not math.isinf(n_reference):
        return _conditional_mdd(n, base_rate, alpha, power, float(n_reference))
    if method not in ("bound", "conditional"):
        raise ValueError(f"method must be 'bound' or 'conditional', got {method!r}")
    p0, level = _test_level(base_rate, alpha, n_reference)
    if p0 <= 0 or _binom_cdf(0.0, n, p0) > level:
        return math.inf
    top = n * (1 - 1e-12)
    if _binom_cdf(top, n, p0) <= level:  # pragma: no cover - only for absurd levels
        c = top
    else:
        c = optimize.brentq(lambda s: _binom_cdf(s, n, p0) - level, 0.0, top, xtol=1e-10)
    p1 = optimize.brentq(lambda p: _binom_cdf(c, n, p) - power, 1e-15, p0, xtol=1e-12)
    return base_rate - p1


def _conditional_mdd(n: float, base_rate: float, alpha: float, power: float, n_ref: float) -> float:
    """MDD of the conditional two-sample test, the reference at its expected counts."""
    q0 = 1.0 - base_rate
    b_ref = q0 * n_ref
    share = n / (n + n_ref)

    def p_value(b: float) -> float:
        return _binom_sf(b, b + b_ref, share)

    if p_value(n) > alpha:  # even an all-bad window would not be significant
        return math.inf
    # smallest bad count c of the window that is significant (p decreases in b)
    c = optimize.brentq(lambda b: p_value(b) - alpha, 1e-9, n, xtol=1e-9)
    if _binom_sf(c, n, 1.0 - 1e-15) < power:  # pragma: no cover - degenerate sizes
        return math.inf
    q1 = optimize.brentq(lambda q: _binom_sf(c, n, q) - power, 1e-15, 1.0 - 1e-15, xtol=1e-12)
    return max(q1 - q0, 0.0)


def required_sample_size(
    base_rate: float,
    drop: float,
    alpha: float,
    power: float = 0.8,
    *,
    n_reference: float | None = None,
) -> float:
    """Smallest (effective) window size whose minimum detectable drop is ``<= drop``.

    ``inf`` when no window size suffices (e.g. an estimated reference that is
    too uncertain by itself).

    Examples
    --------
    >>> n = required_sample_size(0.9, 0.05, alpha=1e-4)
    >>> 800 < n < 950
    True
    """
    if not 0 < drop <= base_rate:
        raise ValueError(f"need 0 < drop <= base_rate, got drop={drop!r}")

    def ok(n: float) -> bool:
        return minimum_detectable_drop(n, base_rate, alpha, power, n_reference=n_reference) <= drop

    lo, hi = 1.0, 1e9
    if not ok(hi):
        return math.inf
    if ok(lo):
        return lo
    for _ in range(60):
        mid = math.sqrt(lo * hi)
        if ok(mid):
            hi = mid
        else:
            lo = mid
        if hi / lo < 1.001:
            break
    return hi


def feedback_starvation(
    feedback_per_day: float,
    base_rate: float,
    target_drop: float,
    within_days: float,
    alpha: float,
    power: float = 0.8,
    *,
    n_reference: float | None = None,
) -> bool:
    """True when the feedback volume cannot detect ``target_drop`` within ``within_days``.

    The outcomes collected in ``within_days`` at ``feedback_per_day`` form the
    window; starvation means its :func:`minimum_detectable_drop` exceeds the
    configured drop.

    Examples
    --------
    >>> feedback_starvation(5, 0.9, 0.05, within_days=7, alpha=1e-4)
    True
    >>> feedback_starvation(500, 0.9, 0.05, within_days=7, alpha=1e-4)
    False
    """
    n = feedback_per_day * within_days
    mdd = minimum_detectable_drop(n, base_rate, alpha, power, n_reference=n_reference)
    return mdd > target_drop


# --------------------------------------------------------------------------- tests
def _finite(d: dict[str, Any]) -> dict[str, Any]:
    def fix(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, list | tuple):
            return [fix(x) for x in v]
        return v

    return {k: fix(v) for k, v in d.items()}


@dataclass(frozen=True)
class DropResult:
    """Outcome of one drop test: a tier's window vs its reference.

    Rates are good-rates, so for ``support_contact`` a positive ``drop`` is a
    rise of the contact rate by the same amount.  ``alarm`` is the conjunction
    of the three gates ``practical`` (point drop ≥ floor), ``significant``
    (``p_value ≤ threshold``) and ``sufficient`` (enough effective observations).
    """

    tier: str | None
    signal: str | None
    window: str | None
    reference_rate: float
    current_rate: float
    drop: float
    floor: float
    p_value: float
    threshold: float
    alpha: float
    n_eff: float
    n_eff_reference: float | None
    interval: tuple[float, float]
    practical: bool
    significant: bool
    sufficient: bool
    mdd: float | None = None
    band: int | None = None

    @property
    def alarm(self) -> bool:
        """All gates passed."""
        return self.practical and self.significant and self.sufficient

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able statistics (for an Alert's ``statistics``); NaN/inf → None."""
        # every field is a scalar: no need for asdict's recursive deep copy (hot path)
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["interval"] = list(self.interval)
        d["alarm"] = self.alarm
        return _finite(d)


@dataclass(frozen=True)
class GapResult:
    """Cheap vs capable inside the uncertain band (IPW/Hájek), one window.

    From :meth:`SequentialDropTest.test_gap` the gates apply to ``gap`` itself; from
    :meth:`SequentialDropTest.test_gap_change` they apply to ``widening`` (``gap``
    minus ``reference_gap``), and ``se``, ``z`` and ``p_value`` are those of the
    widening.
    """

    band: int | None
    window: str | None
    cheap_rate: float
    capable_rate: float
    gap: float
    se: float
    z: float
    p_value: float
    alpha: float
    floor: float
    n_eff_cheap: float
    n_eff_capable: float
    practical: bool
    significant: bool
    sufficient: bool
    reference_gap: float | None = None
    widening: float | None = None

    @property
    def alarm(self) -> bool:
        """All gates passed."""
        return self.practical and self.significant and self.sufficient

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able statistics; NaN/inf → None."""
        d = asdict(self)
        d["alarm"] = self.alarm
        return _finite(d)


@dataclass(frozen=True)
class SequentialDropTest:
    """Drop tests whose false alarms stay within budget under continuous evaluation.

    Parameters
    ----------
    floor
        Practical floor: the smallest good-rate drop worth an alarm.
    false_alarms_per_period
        Budget: expected false-alarm evaluations per router per period.
    period_seconds
        The budget's period (default 30 days).
    evaluation_interval_seconds
        How often the caller evaluates (it must not evaluate more often).
    n_comparisons
        Tests per evaluation: tiers × signals × windows (+ in-band gap tests).
        Aggregate tests used only by :func:`masked_tiers` need no budget.
    min_effective_n
        Fewer effective observations than this give no verdict.
    power
        Power for the published minimum detectable drop.
    confidence
        Coverage of the reported interval of the current rate.
    reference_test
        How a window is compared with an estimated (``Totals``) reference:
        ``"bound"`` tests it against the reference's Clopper–Pearson lower bound
        (union bound, ``alpha/2`` each); ``"conditional"`` is the two-sample
        conditional test of :func:`conditional_drop_p_value`, which spends all of
        ``alpha`` on one test and does not pay the reference's noise twice.
    graded
        For graded outcomes in [0, 1] (shadow agreement, review and survey scores),
        whose variance is far below the binomial ``p(1-p)``: also compute
        :func:`bernstein_drop_p_value` and report twice the smaller of the two
        p-values (Bonferroni over the two, so it stays valid).  Needs
        ``reference_test="conditional"``.

    Examples
    --------
    >>> t = SequentialDropTest(floor=0.05, n_comparisons=18)
    >>> f"{t.alpha:.2e}"
    '7.72e-05'
    >>> ref = Totals.from_arrays([1.0] * 900 + [0.0] * 100)      # 0.90 over the reference
    >>> cur = Totals.from_arrays([1.0] * 140 + [0.0] * 60)       # 0.70 this window
    >>> r = t.test(cur, ref, tier="cheap", signal="thumbs", window="1d")
    >>> r.practical, r.significant, r.sufficient, r.alarm
    (True, True, True, True)
    >>> t.test(Totals.from_arrays([1.0] * 8 + [0.0] * 2), ref).alarm   # too small a window
    False
    """

    floor: float = 0.05
    false_alarms_per_period: float = 1.0
    period_seconds: float = 30 * DAY
    evaluation_interval_seconds: float = 3600.0
    n_comparisons: int = 1
    min_effective_n: float = 30.0
    power: float = 0.8
    confidence: float = 0.95
    reference_test: str = "bound"
    graded: bool = False
    _alpha: float = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.floor >= 0:
            raise ValueError(f"floor must be >= 0, got {self.floor!r}")
        if not self.false_alarms_per_period > 0:
            raise ValueError("false_alarms_per_period must be > 0")
        if not (self.period_seconds > 0 and self.evaluation_interval_seconds > 0):
            raise ValueError("period_seconds and evaluation_interval_seconds must be > 0")
        if self.n_comparisons < 1:
            raise ValueError(f"n_comparisons must be >= 1, got {self.n_comparisons!r}")
        if self.reference_test not in ("bound", "conditional"):
            raise ValueError(
                f"reference_test must be 'bound' or 'conditional', got {self.reference_test!r}"
            )
        if self.graded and self.reference_test != "conditional":
            raise ValueError("graded needs reference_test='conditional'")
        evaluations = max(1.0, self.period_seconds / self.evaluation_interval_seconds)
        alpha = self.false_alarms_per_period / (evaluations * self.n_comparisons)
        object.__setattr__(self, "_alpha", min(alpha, 0.5))

    @classmethod
    def for_family(
        cls,
        n_tiers: int,
        n_signals: int,
        n_windows: int = len(WINDOWS),
        n_extra: int = 0,
        **kwargs: Any,
    ) -> SequentialDropTest:
        """Configure ``n_comparisons = n_tiers × n_signals × n_windows + n_extra``.

        Examples
        --------
        >>> SequentialDropTest.for_family(2, 5, 3, n_extra=3).n_comparisons
        33
        """
        return cls(n_comparisons=n_tiers * n_signals * n_windows + n_extra, **kwargs)

    @property
    def alpha(self) -> float:
        """Per-test level: budget / (evaluations per period × comparisons)."""
        return self._alpha

    # ------------------------------------------------------------ (a) tier vs reference
    def test(
        self,
        current: Totals,
        reference: Totals | float,
        *,
        tier: str | None = None,
        signal: str | None = None,
        window: str | None = None,
        with_mdd: bool = False,
        band: int | None = None,
    ) -> DropResult:
        """Test ``H0: current rate ≥ reference rate`` with the two gates.

        Parameters
        ----------
        current
            The window's totals.
        reference
            Reference totals (estimated; compared as ``reference_test`` says) or a
            configured reference rate (known).
        tier, signal, window, band
            Labels carried into the result.
        with_mdd
            Also compute the minimum detectable drop at this window's size.
        """
        alpha = self.alpha
        s_cur, n_cur = effective_counts(current.wy, current.w, current.w2)
        conditional = False
        if isinstance(reference, Totals):
            ref_rate = reference.rate
            s_ref, n_ref = effective_counts(reference.wy, reference.w, reference.w2)
            n_reference: float | None = n_ref
            ref_ok = n_ref >= self.min_effective_n
            conditional = self.reference_test == "conditional"
            if conditional:
                p0 = math.nan
                threshold = alpha
            else:
                p0 = _lower_bound(s_ref, n_ref, alpha / 2)
                threshold = alpha / 2
        else:
            ref_rate = float(reference)
            if not 0.0 <= ref_rate <= 1.0:
                raise ValueError(f"reference rate must be in [0, 1], got {reference!r}")
            n_reference = None
            p0 = ref_rate
            threshold = alpha
            ref_ok = True
        cur_rate = current.rate
        sufficient = ref_ok and n_cur >= self.min_effective_n and not math.isnan(ref_rate)
        if conditional:
            p_value = conditional_drop_p_value(s_cur, n_cur, s_ref, n_ref)
            if self.graded:
                assert isinstance(reference, Totals)
                bernstein = bernstein_drop_p_value(current, reference)
                p_value = min(1.0, 2.0 * min(p_value, bernstein))
        else:
            p_value = _binom_cdf(s_cur, n_cur, p0) if n_cur > 0 and p0 > 0 else 1.0
        drop = ref_rate - cur_rate if n_cur > 0 else math.nan
        mdd = None
        if with_mdd and not math.isnan(ref_rate) and ref_rate > 0:
            mdd = self.mdd(n_cur, ref_rate, n_reference=n_reference)
        return DropResult(
            tier=tier,
            signal=signal,
            window=window,
            reference_rate=ref_rate,
            current_rate=cur_rate,
            drop=drop,
            floor=self.floor,
            p_value=p_value,
            threshold=threshold,
            alpha=alpha,
            n_eff=n_cur,
            n_eff_reference=n_reference,
            interval=current.interval(self.confidence),
            practical=bool(drop >= self.floor),
            significant=bool(p_value <= threshold),
            sufficient=bool(sufficient),
            mdd=mdd,
            band=band,
        )

    def evaluate(
        self,
        counts: OutcomeCounts,
        now: float,
        *,
        windows: Mapping[str, float] = WINDOWS,
        reference_rates: Mapping[tuple[str, str], float] | None = None,
        signals: Iterable[str] | None = None,
        include_aggregate: bool = True,
        with_mdd: bool = False,
    ) -> list[DropResult]:
        """Test every tier × signal × window of ``counts`` against its reference.

        The reference of ``(tier, signal)`` is ``reference_rates[(tier, signal)]``
        when configured, else the counts' frozen reference period; pairs with
        neither are skipped.  With ``include_aggregate`` the all-tier
        aggregate (``tier=None``) is tested too, for :func:`masked_tiers`.
        """
        results: list[DropResult] = []
        sigs = list(counts.signals if signals is None else signals)
        tiers: list[str | None] = list(counts.tiers)
        if include_aggregate:
            tiers.append(None)
        for tier in tiers:
            for signal in sigs:
                ref: Totals | float
                configured = (
                    None
                    if reference_rates is None or tier is None
                    else reference_rates.get((tier, signal))
                )
                if configured is not None:
                    ref = configured
                else:
                    ref = counts.reference_totals(signal, tier=tier)
                    if ref.w <= 0:
                        continue
                for name, seconds in windows.items():
                    cur = counts.window(now, seconds, signal=signal, tier=tier)
                    results.append(
                        self.test(
                            cur, ref, tier=tier, signal=signal, window=name, with_mdd=with_mdd
                        )
                    )
        return results

    # ------------------------------------------------------------ (b) in-band gap
    def test_gap(
        self,
        cheap: Totals,
        capable: Totals,
        *,
        band: int | None = None,
        window: str | None = None,
    ) -> GapResult:
        """Cheap vs capable on in-band traffic, both weighted by 1/propensity.

        Feed the arms with :func:`ipw_weight` weights; each arm's rate is then
        the Hájek estimate of the in-band population's rate had every request
        gone to that tier.  ``gap = capable − cheap``; the one-sided z-test of
        ``H0: gap ≤ 0`` uses the sum of the arms' linearized variances (a
        normal approximation, hence ``min_effective_n`` per arm).
        """
        gap = capable.rate - cheap.rate
        var = cheap.variance + capable.variance
        se = math.sqrt(var) if var > 0 else math.nan
        if math.isnan(gap):
            z, p_value = math.nan, 1.0
        elif not se > 0:
            z = math.inf if gap > 0 else 0.0
            p_value = 0.0 if gap > 0 else 1.0
        else:
            z = gap / se
            p_value = float(special.ndtr(-z))
        return self._gap_result(cheap, capable, band, window, se=se, z=z, p_value=p_value,
                                effect=gap, n_eff=min(cheap.n_eff, capable.n_eff))

    def _gap_result(self, cheap: Totals, capable: Totals, band: int | None,
                    window: str | None, *, se: float, z: float, p_value: float,
                    effect: float, n_eff: float, **extra: float) -> GapResult:
        """The three gates on ``effect`` (the gap, or its widening) as a result."""
        return GapResult(
            band=band, window=window, cheap_rate=cheap.rate, capable_rate=capable.rate,
            gap=capable.rate - cheap.rate, se=se, z=z, p_value=p_value, alpha=self.alpha,
            floor=self.floor, n_eff_cheap=cheap.n_eff, n_eff_capable=capable.n_eff,
            practical=bool(effect >= self.floor), significant=bool(p_value <= self.alpha),
            sufficient=bool(n_eff >= self.min_effective_n), **extra)

    def test_gap_change(
        self,
        cheap: Totals,
        capable: Totals,
        cheap_reference: Totals,
        capable_reference: Totals,
        *,
        band: int | None = None,
        window: str | None = None,
    ) -> GapResult:
        """Has the in-band gap widened since the reference period?  (Comparison (b).)

        The four arms are IPW-weighted in-band totals (:func:`ipw_weight`): cheap and
        capable over the window and over the reference period.  The gates are those
        of (a) applied to the widening ``gap − reference_gap``: practical (``≥
        floor``), significant (:func:`gap_change_p_value` ``≤ alpha``) and sufficient
        (every arm of both periods has ``min_effective_n``).  A structural gap, one
        the router had from its reference period on, does not alarm however large
        the sample; a gap that grows by the floor does.

        Examples
        --------
        >>> t = SequentialDropTest(floor=0.03, n_comparisons=50)
        >>> ref_cheap = Totals.from_arrays([1.0] * 1700 + [0.0] * 300)   # 0.85
        >>> ref_cap = Totals.from_arrays([1.0] * 1800 + [0.0] * 200)     # 0.90
        >>> t.test_gap(ref_cheap, ref_cap).alarm            # the gap exists ...
        True
        >>> t.test_gap_change(ref_cheap, ref_cap, ref_cheap, ref_cap).alarm  # ... unchanged
        False
        >>> now_cheap = Totals.from_arrays([1.0] * 1500 + [0.0] * 500)   # 0.75
        >>> r = t.test_gap_change(now_cheap, ref_cap, ref_cheap, ref_cap)
        >>> round(r.widening, 3), r.alarm
        (0.1, True)
        """
        widening, se, p_value = gap_change_p_value(cheap, capable, cheap_reference,
                                                   capable_reference)
        n_eff = min(x.n_eff for x in (cheap, capable, cheap_reference, capable_reference))
        return self._gap_result(
            cheap, capable, band, window, se=se, z=widening / se if se > 0 else math.nan,
            p_value=p_value, effect=widening, n_eff=n_eff,
            reference_gap=capable_reference.rate - cheap_reference.rate, widening=widening)

    # ------------------------------------------------------------ power
    def mdd(self, n_eff: float, base_rate: float, n_reference: float | None = None) -> float:
        """Minimum detectable drop of one window at this test's level and power."""
        return minimum_detectable_drop(
            n_eff,
            base_rate,
            self.alpha,
            self.power,
            n_reference=n_reference,
            method=self.reference_test,
        )

    def starving(
        self,
        feedback_per_day: float,
        base_rate: float,
        target_drop: float,
        within_days: float,
        n_reference: float | None = None,
    ) -> bool:
        """:func:`feedback_starvation` at this test's level and power."""
        return feedback_starvation(
            feedback_per_day,
            base_rate,
            target_drop,
            within_days,
            self.alpha,
            self.power,
            n_reference=n_reference,
        )


# --------------------------------------------------------------------------- (c) masking
def masked_tiers(aggregate: DropResult, tiers: Iterable[DropResult]) -> list[str]:
    """Tiers whose drop the aggregate hides.

    The aggregate is *within its historical band* when it does not alarm and
    its point drop is below the floor; every tier that alarms meanwhile (same
    signal and window) is returned, sorted.

    Examples
    --------
    >>> t = SequentialDropTest(floor=0.05)
    >>> ref = Totals.from_arrays([1.0] * 900 + [0.0] * 100)
    >>> agg = t.test(Totals.from_arrays([1.0] * 880 + [0.0] * 120), ref)
    >>> cheap = t.test(Totals.from_arrays([1.0] * 150 + [0.0] * 50), ref, tier="cheap")
    >>> masked_tiers(agg, [cheap])
    ['cheap']
    """
    if aggregate.alarm or aggregate.drop >= aggregate.floor:
        return []
    return sorted(
        r.tier
        for r in tiers
        if r.alarm
        and r.tier is not None
        and (aggregate.signal is None or r.signal == aggregate.signal)
        and (aggregate.window is None or r.window == aggregate.window)
    )
