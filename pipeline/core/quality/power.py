"""Exact drop p-values, minimum detectable drops, sample sizes, feedback starvation."""

from __future__ import annotations

import math

from scipy import optimize, special

from pipeline.core.quality.totals import Totals


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
