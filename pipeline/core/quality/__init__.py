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

from pipeline.core.quality.counts import OutcomeCounts
from pipeline.core.quality.drop import (
    DropResult,
    GapResult,
    SequentialDropTest,
)
from pipeline.core.quality.estimators import (
    Estimate,
    hajek_mean,
    horvitz_thompson_mean,
    horvitz_thompson_total,
)
from pipeline.core.quality.intervals import (
    beta_interval,
    effective_counts,
    kish_effective_n,
    wilson_interval,
)
from pipeline.core.quality.masking import masked_tiers
from pipeline.core.quality.outcomes import (
    FEEDBACK_SIGNALS,
    ROUTED_SIGNALS,
    SIGNALS,
    WINDOWS,
    ipw_weight,
    outcome,
)
from pipeline.core.quality.power import (
    bernstein_drop_p_value,
    conditional_drop_p_value,
    feedback_starvation,
    gap_change_p_value,
    minimum_detectable_drop,
    required_sample_size,
)
from pipeline.core.quality.totals import Totals

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

