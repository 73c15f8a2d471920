"""The per-tier drop tests under continuous monitoring (:class:`SequentialDropTest`)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from scipy import special

from pipeline.core.quality.counts import OutcomeCounts
from pipeline.core.quality.intervals import effective_counts
from pipeline.core.quality.outcomes import DAY, WINDOWS
from pipeline.core.quality.power import (
    _binom_cdf,
    _lower_bound,
    bernstein_drop_p_value,
    conditional_drop_p_value,
    feedback_starvation,
    gap_change_p_value,
    minimum_detectable_drop,
)
from pipeline.core.quality.totals import Totals


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
