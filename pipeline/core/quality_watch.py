"""Per-tier quality of one router's answers: windows, lagged attribution, tests, alerts.

:class:`QualityWatch` counts every feedback outcome by tier, score band and time (votes,
ratings, reviews, shadow grades by their own time; graded outcomes that come days later
and support contacts by their request's decision time, see :mod:`pipeline.core.lagged`),
and at each evaluation tests the windows against the reference period
(:class:`QualityConfig`): per tier and signal, per score band of the cheap tier, just
above ``cheap_above``, the in-band gap, the hourly contact CUSUMs and the pooled
bad-outcome test; it also says when a tier gets too little feedback for a drop to be
seen. Its findings become the router's quality alerts through the evaluation's
:data:`~pipeline.core.evaluation.Fire`.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import special

from pipeline.core.alerts import AlertKey
from pipeline.core.cusum import PoissonCusum
from pipeline.core.detector import window_name
from pipeline.core.evaluation import Evaluation, Fire, hours
from pipeline.core.lagged import DelayDistribution, DelayEstimate, LaggedCounts
from pipeline.core.pooled import RatioMixture
from pipeline.core.quality import (
    FEEDBACK_SIGNALS,
    ROUTED_SIGNALS,
    SIGNALS,
    DropResult,
    OutcomeCounts,
    SequentialDropTest,
    Totals,
    effective_counts,
    ipw_weight,
    masked_tiers,
    outcome,
)
from pipeline.core.readouts import finite
from pipeline.schemas import AlertKind, Thresholds

if TYPE_CHECKING:
    from pipeline.core.router_state import MonitorConfig

__all__ = ["QualityConfig", "QualityWatch", "effective_counts_rows"]

DAY = 86400.0
#: a step of the hourly sequential tests: its observed and expected bad outcomes, by
#: ``((tier, band or None), hour bucket)``
Steps = dict[tuple[tuple[str, int | None], int], tuple[float, float]]


@dataclass(frozen=True, slots=True)
class QualityConfig:
    """Per-tier quality tests: windows, floors, evidence gates and the test family.

    Feedback signals use ``windows``; routed-request signals (support contacts, one
    observation per routed request) use ``routed_windows``. Contacts lag their requests
    by hours to days, so they count against the request they belong to, by its decision
    time, tier and score band (:mod:`pipeline.core.lagged`): a window covers the
    requests *decided* in it, with the contacts of theirs still to come corrected by the
    delay distribution learnt from the data (rolling over ``contact_history_days``,
    delays up to ``contact_max_delay_days``; decision hours expected to be less than
    ``min_completed`` complete are left out). That holds under any change of volume
    (weekly and diurnal cycles, holidays, ramps) and, per band, under threshold moves.
    The feedback kinds in ``attributed_signals`` (graded outcomes that come days later,
    e.g. surveys) are likewise counted at their decision's time. With
    ``standardize_bands``, while a window holds requests routed under thresholds the
    reference period never saw, a tier (and the boundary) is compared with its reference
    reweighted to the routing policy in force, band by band, and the tier's contact CUSUM
    expects each band's requests at that band's reference rate: a threshold move changes
    the bands a tier serves, not the quality of any band. Contacts are also
    watched hour by hour (``contact_cusum``) by a CUSUM of each hour's arriving contacts
    against those expected from the requests of the hours before it convolved with the
    delay distribution, per tier and per band of the cheap tier. ``band_scan_signals``
    are also tested per score band of the cheap tier, where a cohort the classifier
    mistakes for simple lands. With ``pooled_test``, every signal's bad outcomes
    (``pooled_signals``' bad mass, and the contacts of the contact CUSUM) are pooled hour
    by hour, per tier and per band of the cheap tier, in one mixture Shiryaev–Roberts test
    over rate ratios (:mod:`pipeline.core.pooled`); it pages (``tier_quality_drop``,
    detail ``pooled``) once certain and its estimated ratio reaches
    ``pooled_ratio_floor``. Every test of an evaluation shares one Bonferroni budget
    of :meth:`n_comparisons` tests.

    >>> QualityConfig().n_comparisons(n_tiers=2, n_bands=10)
    87
    """

    windows: tuple[float, ...] = (DAY, 7 * DAY)
    routed_windows: tuple[float, ...] = (DAY, 7 * DAY)
    reference_days: float = 14.0
    floors: dict[str, float] = field(default_factory=lambda: {
        "thumbs": 0.03, "rating": 0.05, "review": 0.05, "shadow": 0.04, "survey": 0.05,
        "support_contact": 0.004})
    min_effective_n: float = 30.0
    gap_floor: float = 0.03
    starvation_drop: float = 0.05
    starvation_within_days: float = 7.0
    boundary_width: float = 0.15
    band_scan_signals: tuple[str, ...] = (*ROUTED_SIGNALS, "thumbs")
    # votes come minutes after their request, so a half-day scan sees a cohort early
    band_scan_windows: dict[str, tuple[float, ...]] = field(
        default_factory=lambda: {"thumbs": (DAY / 2,)})
    boundary_signals: tuple[str, ...] = ("support_contact", "shadow", "thumbs")
    gap_signals: tuple[str, ...] = ("thumbs", "shadow", "review")
    reference_test: str = "conditional"
    graded_signals: tuple[str, ...] = ("review", "shadow", "survey")
    contact_cusum: bool = True
    contact_max_delay_days: float = 7.0
    contact_history_days: int = 14
    min_completed: float = 0.1
    attributed_signals: tuple[str, ...] = ("survey",)
    standardize_bands: bool = True
    pooled_test: bool = True
    pooled_signals: tuple[str, ...] = ("thumbs", "rating", "review", "shadow")
    pooled_ratio_floor: float = 1.25

    def windows_for(self, signal: str) -> tuple[float, ...]:
        """The windows ``signal`` is tested over."""
        return self.routed_windows if signal in ROUTED_SIGNALS else self.windows

    def scan_windows_for(self, signal: str) -> tuple[float, ...]:
        """The windows of ``signal``'s band scan (its own windows unless configured)."""
        return self.band_scan_windows.get(signal, self.windows_for(signal))

    def n_comparisons(self, n_tiers: int, n_bands: int) -> int:
        """Tests per evaluation: tier × signal × window, the cheap tier's band scan,
        the boundary tests and the in-band gap tests (aggregate tests only tell
        whether the aggregate hides a tier, and need no budget)."""
        per_tier = sum(len(self.windows_for(s)) for s in SIGNALS)
        scan = n_bands * sum(len(self.scan_windows_for(s)) for s in self.band_scan_signals)
        boundary = sum(len(self.windows_for(s)) for s in self.boundary_signals)
        cusums = n_tiers + n_bands if self.contact_cusum else 0
        pooled = n_tiers + n_bands if self.pooled_test else 0
        return n_tiers * per_tier + scan + boundary + len(self.gap_signals) + cusums + pooled



def effective_counts_rows(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`~pipeline.core.quality.effective_counts` of each row of bucket sums (in
    the order of :meth:`Totals.as_vector`): effective ``(successes, n)`` per bucket.

    >>> effective_counts_rows(np.array([[4.0, 4.0, 4.0, 3.0, 3.0, 3.0]]))
    (array([3.]), array([4.]))
    """
    w, w2, wy = rows[:, 1], rows[:, 2], rows[:, 3]
    ok = (w > 0) & (w2 > 0)
    n_eff = np.where(ok, w * w / np.where(ok, w2, 1.0), 0.0)
    rate = np.clip(np.where(ok, wy / np.where(ok, w, 1.0), 0.0), 0.0, 1.0)
    return rate * n_eff, n_eff


class QualityWatch:
    """One router's per-tier quality: outcome counts, lagged attribution, the tests.

    Feed it feedback (:meth:`observe_feedback`) and routed requests per decision hour
    (:meth:`count_routed`, what contacts are attributed against); :meth:`evaluate` tests
    every window once the reference period is over and fires the quality alerts.

    >>> import functools
    >>> from pipeline.core.alerts import AlertBook
    >>> from pipeline.core.evaluation import transition
    >>> from pipeline.core.router_state import MonitorConfig
    >>> config = MonitorConfig(quality=QualityConfig(reference_days=1.0))
    >>> watch = QualityWatch("r", config, start=0.0)
    >>> rng = np.random.default_rng(1)

    A vote a minute on the cheap tier: 90 % good in the reference day, 60 % the next.

    >>> for t in np.arange(0.0, 2 * DAY, 60.0).tolist():
    ...     good = rng.random() < (0.9 if t < DAY else 0.6)
    ...     watch.observe_feedback(tier="cheap", band=7, kind="thumbs", value=float(good),
    ...                            ts=t, decision_ts=t, weight=None, propensity=None,
    ...                            in_band=False)
    >>> watch.window("thumbs", DAY - 1e-6, DAY, tier="cheap").n
    1440.0
    >>> alerts, ev = AlertBook(clear_evals=6), Evaluation(2 * DAY)
    >>> out = watch.evaluate(ev, 2 * DAY - 1e-6, functools.partial(transition, alerts),
    ...                      thresholds=None, routed_day={}, feedback_day={})
    >>> [(t.key.kind, t.key.detail, t.state) for t in ev.transitions]
    [('tier_quality_drop', 'thumbs', 'firing')]

    The alert names its worst test, here the band scan's half-day window:

    >>> print(ev.transitions[0].summary)  # doctest: +NORMALIZE_WHITESPACE
    cheap tier: thumbs satisfaction dropped in score band 0.70–0.80 by 0.270 (0.894 → 0.624)
    over 12h
    """

    def __init__(self, router_id: str, config: MonitorConfig, start: float) -> None:
        self.router_id = router_id
        self.config = config
        self.start = start
        q = config.quality
        ref = (start, start + q.reference_days * DAY)
        n_buckets = int(max(q.windows) // 3600) + 2
        self.counts = OutcomeCounts(3600.0, n_buckets, reference=ref)
        # in-band traffic weighted by 1/propensity: the causal cheap-vs-capable comparison,
        # with its own reference period: the gap alarms when it widens, not for existing
        self.inband = OutcomeCounts(3600.0, n_buckets, reference=ref)
        self.band_edges = np.linspace(0.0, 1.0, config.n_bands + 1)
        self.drop_tests, self.gap_test = self._tests()
        # lagging signals (support contacts) by their request's decision hour, tier and band;
        # the ring covers the longest window plus the longest delay's CUSUM convolution
        max_delay = int(q.contact_max_delay_days * 24)
        ref_hours = (math.ceil(ref[0] / 3600), math.ceil(ref[1] / 3600))
        self.lagged = LaggedCounts(max(n_buckets, max_delay + 2), reference=ref_hours)
        self.delays = DelayDistribution(max_delay, history_days=q.contact_history_days)
        # contacts that count against no request: no decision time (self-described
        # feedback), a decision too old for the windows, or (from the monitor) never joined
        self.unattributed: dict[str, int] = {"no_decision": 0, "too_late": 0, "unjoined": 0}
        # the thresholds routed under in the reference period, and the newest request
        # routed under others: tier tests are standardized on the policy while any
        # request of their window was routed under a policy the reference never saw
        self.reference_policies: set[tuple[float, float, float]] = set()
        self.off_policy_ts = -math.inf
        # attributed windows of one evaluation, until the next event (a plain cache)
        self._lag_cache: dict[tuple[Any, ...], Totals] = {}
        self.contact_cusums: dict[tuple[str, int | None], PoissonCusum] = {}
        self.contact_done: int | None = None  # the newest bucket the CUSUMs have seen
        # bad outcomes of every signal pooled, per tier and per band of the cheap tier
        self.pooled: dict[tuple[str, int | None], RatioMixture] = {}
        self.pooled_done: int | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_lag_cache": {}}  # a cache, not state

    def _tests(self) -> tuple[dict[str, SequentialDropTest], SequentialDropTest]:
        """Every quality test from :class:`QualityConfig`: per signal, and the gap's.

        All of them share one Bonferroni family (:meth:`QualityConfig.n_comparisons`)
        and the configured budget and evaluation interval; each signal gets its floor,
        and graded signals the variance-aware test when the reference test allows it.
        """
        c = self.config
        q = c.quality
        family = q.n_comparisons(n_tiers=2, n_bands=c.n_bands)
        common: dict[str, Any] = {
            "false_alarms_per_period": c.false_alarms_per_30d,
            "period_seconds": 30 * DAY,
            "evaluation_interval_seconds": c.eval_every_s,
            "n_comparisons": family,
            "min_effective_n": q.min_effective_n,
        }
        drop = {signal: SequentialDropTest(
            floor=q.floors.get(signal, 0.05), reference_test=q.reference_test,
            graded=signal in q.graded_signals and q.reference_test == "conditional", **common)
            for signal in SIGNALS}
        return drop, SequentialDropTest(floor=q.gap_floor, **common)

    @property
    def reference_end(self) -> float:
        """When the reference period, the quality tests' baseline, ends."""
        return self.start + self.config.quality.reference_days * DAY

    def bands(self, scores: np.ndarray) -> np.ndarray:
        """Score band of each score (baseline-quantile bands; uniform before a baseline)."""
        idx = np.searchsorted(self.band_edges, scores, side="right") - 1
        return np.clip(idx, 0, self.config.n_bands - 1)

    def band(self, score: float) -> int:
        """:meth:`bands` of one score, without numpy's per-call cost (most of the cost
        of a feedback event, which is counted one at a time)."""
        return min(max(bisect_right(self.band_edges, score) - 1, 0), self.config.n_bands - 1)

    # -- updates ------------------------------------------------------------------------
    def count_routed(self, counts: Iterable[tuple[tuple[str, int, int], int]]) -> None:
        """Count routed requests per ``(tier, band, decision hour)``: what the lagged
        signals (contacts, surveys) are attributed against, and the delay table's exposure."""
        for (tier, band, hour), n in counts:
            self.lagged.update_routed(tier, band, hour, n)
            self.delays.add_exposure(hour, n)
        self._lag_cache.clear()

    def observe_feedback(self, *, tier: str, band: int, kind: str, value: float, ts: float,
                         decision_ts: float | None, weight: float | None,
                         propensity: float | None, in_band: bool | None) -> None:
        """Count one joined (or self-describing) feedback event of score band ``band``."""
        if kind in ROUTED_SIGNALS:
            self._attribute(tier, band, ts, decision_ts)
            return
        w = weight or 1.0
        if kind in self.config.quality.attributed_signals and decision_ts is not None:
            ts = decision_ts  # a late graded outcome belongs to its request's window
        self.counts.update(tier, band, kind, ts, outcome(kind, value), w)
        if in_band and propensity is not None:
            self.inband.update(tier, band, kind, ts, outcome(kind, value),
                               ipw_weight(propensity, w))

    def _attribute(self, tier: str, band: int, ts: float, decision_ts: float | None) -> None:
        """A contact counts against its own request (decision hour, tier, band); the
        windows correct for the contacts still to come (:mod:`pipeline.core.lagged`)."""
        if decision_ts is None:
            self.unattributed["no_decision"] += 1
            return
        d, c = int(decision_ts // 3600), int(ts // 3600)
        self._lag_cache.clear()
        if not self.lagged.update_event(tier, band, d, c):
            self.unattributed["too_late"] += 1
        self.delays.add_delay(d, c)

    # -- windows of any signal ----------------------------------------------------------
    def delay_estimate(self, at: float) -> DelayEstimate | None:
        """The contact delay distribution learnt up to the bucket that closes at ``at``."""
        return self.delays.estimate(int(at // 3600))

    def window(self, signal: str, at: float, seconds: float, *, tier: str | None = None,
               band: int | None = None) -> Totals:
        """A signal's window ending at ``at``: feedback by its own time bucket; routed
        signals (contacts) attributed to the requests decided in it, with the censoring
        correction (empty until a delay distribution has been learnt)."""
        if signal not in ROUTED_SIGNALS:
            return self.counts.window(at, seconds, signal=signal, tier=tier, band=band)
        m = math.ceil(seconds / 3600 - 1e-9)
        return self._attributed(("window", int(at // 3600), seconds, tier, band), at,
                                lambda cdf: self.lagged.window(
                                    int(at // 3600), m, cdf, tier=tier, band=band,
                                    min_completed=self.config.quality.min_completed))

    def reference(self, signal: str, at: float, *, tier: str | None = None,
                  band: int | None = None) -> Totals:
        """A signal's reference-period totals (contacts attributed and corrected, as
        of ``at``: the last reference hours' contacts are still coming in at its end)."""
        if signal not in ROUTED_SIGNALS:
            return self.counts.reference_totals(signal, tier=tier, band=band)
        return self._attributed(("reference", int(at // 3600), tier, band), at,
                                lambda cdf: self.lagged.reference_totals(
                                    int(at // 3600), cdf, tier=tier, band=band,
                                    min_completed=self.config.quality.min_completed))

    def _attributed(self, key: tuple[Any, ...], at: float,
                    compute: Callable[[Any], Totals]) -> Totals:
        """Attributed totals, computed once per evaluation hour and key with the delay
        distribution learnt by ``at`` (empty before one is learnt)."""
        hit = self._lag_cache.get(key)
        if hit is not None:
            return hit
        est = self.delay_estimate(at)
        if est is None:
            return Totals()
        out = self._lag_cache[key] = compute(est.cdf)
        return out

    # -- evaluation ---------------------------------------------------------------------
    def evaluate(self, ev: Evaluation, at: float, fire: Fire, *,
                 thresholds: Thresholds | None, routed_day: dict[int, dict[str, int]],
                 feedback_day: dict[int, dict[str, int]]) -> dict[str, Any]:
        """Test the windows ending at ``at`` (once the reference period is over) and fire
        or resolve the quality alerts; the numbers behind them (minimum detectable drops,
        the contact CUSUMs' and the pooled tests' state) for the read-outs.

        ``thresholds`` are those in force (the boundary and the uncertain band follow
        them); ``routed_day`` and ``feedback_day`` count requests and feedback per day
        and tier (feedback starvation)."""
        c, q = self.config, self.config.quality
        out: dict[str, Any] = {"mdd": {}, "rates": {}}
        seen = set(self.counts.tiers) | set(self.lagged.tiers)
        tiers = [t for t in (c.cheap_tier, c.capable_tier) if t in seen]
        testing = at >= self.reference_end
        steps: Steps = {}
        cusum = self._contact_cusums(at, tiers, steps) if testing and q.contact_cusum else {}
        out["contact_cusum"] = cusum
        if testing and q.pooled_test:
            out["pooled"] = self._pooled(ev, at, fire, tiers, steps)
        for signal, test in self.drop_tests.items():
            results = self._tier_tests(at, signal, test, tiers, out["mdd"]) if testing else []
            scan = []  # the cheap tier, band by band
            if testing and signal in q.band_scan_signals and c.cheap_tier in tiers:
                scan = self._band_scan(at, signal, test)
            for tier in tiers:
                seq = cusum.get(tier) if signal == "support_contact" else None
                self._signal_alert(ev, fire, signal, tier, results, scan, seq)
        self._boundary(ev, at, fire, thresholds)
        self._gap(ev, at, fire, thresholds)
        self._starvation(ev, at, fire, out, routed_day, feedback_day)
        return out

    def _tier_tests(self, at: float, signal: str, test: SequentialDropTest, tiers: list[str],
                    mdd: dict[str, dict[str, float]]) -> list[DropResult]:
        """``signal``'s test per tier (and of the aggregate, ``tier=None``) per window;
        each tier's minimum detectable drop of thumbs goes into ``mdd``."""
        results = []
        for seconds in self.config.quality.windows_for(signal):
            w = window_name(seconds)
            for tier in [*tiers, None]:
                if tier is not None and self._policy_moved(at, seconds):
                    cur, ref = self._standardized(signal, at, seconds, tier)
                else:
                    ref = self.reference(signal, at, tier=tier)
                    cur = self.window(signal, at, seconds, tier=tier)
                if ref.w <= 0:
                    continue
                r = test.test(cur, ref, tier=tier, signal=signal, window=w)
                results.append(r)
                if tier is not None and signal == "thumbs" and ref.rate > 0:
                    mdd.setdefault(tier, {})[f"{signal}/{w}"] = test.mdd(
                        cur.n_eff, ref.rate, n_reference=ref.n_eff)
        return results

    def _band_scan(self, at: float, signal: str, test: SequentialDropTest) -> list[DropResult]:
        """``signal``'s test per score band of the cheap tier, per scan window."""
        c = self.config
        scan = []
        for seconds in c.quality.scan_windows_for(signal):
            w = window_name(seconds)
            for b in range(c.n_bands):
                ref = self.reference(signal, at, tier=c.cheap_tier, band=b)
                if ref.w <= 0:
                    continue
                cur = self.window(signal, at, seconds, tier=c.cheap_tier, band=b)
                scan.append(test.test(cur, ref, tier=c.cheap_tier, signal=signal,
                                      window=w, band=b))
        return scan

    def _signal_alert(self, ev: Evaluation, fire: Fire, signal: str, tier: str,
                      results: list[DropResult], scan: list[DropResult],
                      seq: dict[str, Any] | None) -> None:
        """A tier's alert for ``signal``: its worst window or band, or for contacts the
        CUSUM ``seq`` when it alone alarms."""
        mine = [r for r in results if r.tier == tier]
        alarm = [r for r in mine + scan if r.tier == tier and r.alarm]
        kind: AlertKind = ("support_contact_rise" if signal == "support_contact"
                           else "tier_quality_drop")
        key = AlertKey(kind, self.router_id, tier, signal)
        if seq is not None and seq["alarm"] and not alarm:
            fire(ev, key, True, "1h", seq["summary"], {"cusum": seq})
            return
        worst = max(alarm or mine, key=lambda r: r.drop if r.n_eff else -1.0, default=None)
        if worst is None:
            return
        aggregate = [r for r in results if r.tier is None and r.window == worst.window]
        masked = bool(aggregate) and tier in masked_tiers(aggregate[0], [worst])
        stats = {"test": worst.to_dict(), "aggregate_hides_it": masked,
                 "bands": sorted({r.band for r in alarm if r.band is not None})}
        if seq is not None:
            stats["cusum"] = seq
        what = ("support contacts per request rose" if signal == "support_contact"
                else f"{signal} satisfaction dropped")
        summary = (f"{tier} tier: {what}{self._where(worst.band)} by {abs(worst.drop):.3f} "
                   f"({worst.reference_rate:.3f} → {worst.current_rate:.3f}) over "
                   f"{worst.window}" + ("; the aggregate hides it" if masked else ""))
        fire(ev, key, bool(alarm), worst.window or "", summary, stats)

    def _where(self, band: int | None) -> str:
        """`` in score band lo–hi`` for a summary (nothing for a whole tier)."""
        if band is None:
            return ""
        return f" in score band {self.band_edges[band]:.2f}–{self.band_edges[band + 1]:.2f}"

    def _policy_moved(self, at: float, seconds: float) -> bool:
        """Whether a request of the window ``(at - seconds, at]`` was routed under
        thresholds the reference period never saw (and standardization is on)."""
        return self.config.quality.standardize_bands and self.off_policy_ts > at - seconds

    def _standardized(self, signal: str, at: float, seconds: float, tier: str,
                      bands: list[int] | None = None) -> tuple[Totals, Totals]:
        """A tier's window and its reference, the reference's score bands reweighted to
        the routing policy in force (direct standardization on the policy).

        A threshold move (or a new exploration rate) changes which bands a tier serves,
        and so its rate, with no band's quality changing: moving ``cheap_above`` down
        hands the cheap tier a band it serves worse than its average. Each band's
        reference counts therefore get the weight ``k_b = s_b(window) / s_b(reference)``
        with ``s_b`` the tier's share of the band's routed requests: the reference then
        has the mix of queries the tier would have served under today's policy. A change
        of the *population* (a cohort, a drift into a worse band) leaves ``s_b`` alone
        and stays in the comparison: the tier's users do see it. Weights enter Kish's
        effective size, so the reference's noise is not understated. Bands the reference
        never saw for this tier are left out of both (nothing to compare them with).
        """
        which = list(range(self.config.n_bands)) if bands is None else bands
        cur_b = {b: self.window(signal, at, seconds, tier=tier, band=b) for b in which}
        ref_b = {b: self.reference(signal, at, tier=tier, band=b) for b in which}
        covered = [b for b in which if ref_b[b].w > 0]
        cur, ref = Totals(), Totals()
        for b in covered:
            cur = cur + cur_b[b]
        now, m = int(at // 3600), math.ceil(seconds / 3600 - 1e-9)
        for b in covered:
            k = 1.0
            ref_all = self.lagged.reference_routed(band=b)
            ref_tier = self.lagged.reference_routed(tier=tier, band=b)
            cur_all = self.lagged.routed(now, m, band=b)
            if ref_all > 0 and ref_tier > 0 and cur_all > 0:
                k = (self.lagged.routed(now, m, tier=tier, band=b) / cur_all) / (
                    ref_tier / ref_all)
            r = ref_b[b]
            if k > 0:
                ref = ref + Totals(r.n, k * r.w, k * k * r.w2, k * r.wy, k * k * r.w2y,
                                   k * k * r.w2y2)
        return cur, ref

    def _contact_cusums(self, at: float, tiers: list[str],
                        steps: Steps | None = None) -> dict[str, dict[str, Any]]:
        """Feed the hours closed since the last evaluation to the contact CUSUMs (one per
        tier, one per band of the cheap tier) and report the most alarming per tier.

        A CUSUM alarms when its statistic crosses ``ln(1/α)`` (α: the quality family's
        per-test level) and its excursion's extra contacts per request reach half the
        floor (the CUSUM's own reference value): a rise worth paging for, not a
        significant trickle.

        Why arrival time here, when the windows attribute contacts to their requests: a
        contact counts the hour it arrives, with no wait for its cohort to mature, and
        the expected count is the exposure of the decision hours before it convolved
        with the learnt delay pmf, ``p0 · Σ_a n_(h-a) f(a)``: unbiased under any change
        of volume (a quiet weekend hour expects the contacts of Friday's busy hours).
        ``p0`` is the reference period's attributed rate at its one-sided 90 % upper
        bound, so a reference that happened to be quiet does not make every hour a rise.
        Each bucket's observed and expected contacts per key go into ``steps`` (for the
        pooled test).
        """
        est = self.delay_estimate(at)
        if est is None:
            return {}
        keys = self._sequential_keys(tiers)
        rates: dict[tuple[str, int | None], float] = {}
        for k in {*keys, *self.contact_cusums}:
            ref = self.reference("support_contact", at, tier=k[0], band=k[1])
            bad = max(ref.w - ref.wy, 0.0)
            rates[k] = (float(special.gammaincinv(bad + 1.0, 0.9)) / ref.w if ref.w > 0
                        else math.nan)
        self._feed_contact_cusums(at, est.pmf, tiers, keys, rates, steps)
        return self._contact_report(at, rates)

    def _sequential_keys(self, tiers: list[str]) -> list[tuple[str, int | None]]:
        """The hourly sequential tests' keys: each tier, and each band of the cheap tier."""
        keys: list[tuple[str, int | None]] = [(t, None) for t in tiers]
        if self.config.cheap_tier in tiers:
            keys += [(self.config.cheap_tier, b) for b in range(self.config.n_bands)]
        return keys

    def _feed_contact_cusums(self, at: float, pmf: np.ndarray, tiers: list[str],
                             keys: list[tuple[str, int | None]],
                             rates: dict[tuple[str, int | None], float],
                             steps: Steps | None) -> None:
        """One CUSUM step per key and hour closed since the last evaluation (a week at
        most): the contacts that arrived in it against those its exposure expects."""
        floor = self.config.quality.floors.get("support_contact", 0.004)
        now = int(at // 3600)
        first = now if self.contact_done is None else max(self.contact_done + 1, now - 24 * 7)
        threshold = -math.log(self.drop_tests["support_contact"].alpha)
        depth = pmf.size
        series = {k: self.lagged.series(first - depth + 1, now, tier=k[0], band=k[1])
                  for k in keys}
        # a tier's expected contacts follow its band mix: each band's routed requests
        # count at the band's reference rate relative to the tier's (a threshold move
        # that hands the tier a worse band is no rise)
        moved = self._policy_moved(at, depth * 3600.0)
        mix = {t: self._band_mix(t, at, first - depth + 1, now) for t in tiers} if moved else {}
        for b in range(first, now + 1):
            i = b - first + depth - 1  # row of bucket b (rows are oldest first)
            for k in keys:
                rate = rates[k]
                if not rate > 0:
                    continue
                rows = series[k]
                observed = float(rows[i, LaggedCounts.BY_ARRIVAL])
                routed = rows[i - depth + 1: i + 1, LaggedCounts.ROUTED]
                if k[1] is None and moved:
                    routed = mix[k[0]][i - depth + 1: i + 1]
                expected = rate * float(np.dot(routed[::-1], pmf))
                cs = self.contact_cusums.setdefault(k, PoissonCusum(threshold))
                cs.update(max(observed, 0.0), expected, rate, floor=floor, bucket=b)
                if steps is not None:
                    steps[(k, b)] = (max(observed, 0.0), expected)
        self.contact_done = now

    def _contact_report(self, at: float, rates: dict[tuple[str, int | None], float],
                        ) -> dict[str, dict[str, Any]]:
        """Each tier's most alarming contact CUSUM (of the tier or one of its bands)."""
        floor = self.config.quality.floors.get("support_contact", 0.004)
        out: dict[str, dict[str, Any]] = {}
        for (tier, band), cs in self.contact_cusums.items():
            rate = rates.get((tier, band), math.nan)
            excess = cs.excess_rate(rate) if rate > 0 else 0.0
            alarm = cs.alarm and excess >= floor / 2
            mine = out.get(tier)
            if mine is not None and (mine["alarm"], mine["ratio"]) >= (
                    alarm, cs.statistic / cs.threshold):
                continue
            where = self._where(band)
            since = None if cs.since is None else cs.since * 3600.0
            out[tier] = {
                "alarm": alarm, "band": band, "statistic": cs.statistic,
                "threshold": cs.threshold, "ratio": cs.statistic / cs.threshold,
                "since": since, "observed": cs.observed, "expected": cs.expected,
                "reference_rate": rate, "excess_per_request": excess, "floor": floor,
                "summary": (f"{tier} tier: support contacts{where} rose by {excess:.4f} per "
                            f"request ({cs.observed:.0f} observed vs {cs.expected:.1f} "
                            f"expected since {hours(since, at)} h ago; sequential test)")}
        return out

    def _pooled(self, ev: Evaluation, at: float, fire: Fire, tiers: list[str],
                contacts: Steps) -> dict[str, dict[str, Any]]:
        """Feed the hours closed since the last evaluation to the pooled bad-outcome tests
        (one per tier, one per band of the cheap tier) and fire or resolve their alerts.

        A step's bad mass is every pooled feedback signal's ``Σ(1 - y)`` in the hour plus
        the contacts that arrived in it; its expectation is, band by band, each signal's
        outcomes times the band's reference bad rate at its one-sided 90 % upper bound
        (Poisson, on Kish's effective counts), plus the contacts the contact CUSUM
        expected. Bands the reference never saw for the tier are left out, so a threshold
        move that hands a tier a worse band is compared band by band, not as a rise.
        Outcomes that arrive after their hour was tested are not counted (they cannot
        make a false alarm; a feedback backlog is simply not seen here). The threshold is
        ``ln(1/α)``, the quality family's per-test level (:mod:`pipeline.core.pooled`).
        """
        q = self.config.quality
        now = int(at // 3600)
        done = self.pooled_done
        first = now if done is None else max(done + 1, now - 24 * 7)
        signals = [s for s in q.pooled_signals
                   if s in FEEDBACK_SIGNALS and s not in q.attributed_signals]
        keys = self._sequential_keys(tiers)
        bad, expected = self._pooled_feedback(first, now, tiers, keys, signals)
        threshold = -math.log(self.drop_tests["thumbs"].alpha)
        for k in keys:
            test = self.pooled.get(k)
            for i, bucket in enumerate(range(first, now + 1)):
                x, lam = contacts.get((k, bucket), (0.0, 0.0))
                x, lam = x + float(bad[k][i]), lam + float(expected[k][i])
                if lam <= 0:
                    continue
                if test is None:
                    test = self.pooled[k] = RatioMixture(threshold)
                test.update(x, lam, bucket=bucket)
        self.pooled_done = now
        out = self._pooled_report(at, signals)
        for tier, res in out.items():
            fire(ev, AlertKey("tier_quality_drop", self.router_id, tier, "pooled"),
                 res["alarm"], "1h", res["summary"], {"pooled": res})
        return out

    def _pooled_feedback(self, first: int, now: int, tiers: list[str],
                         keys: list[tuple[str, int | None]], signals: list[str],
                         ) -> tuple[dict[tuple[str, int | None], np.ndarray],
                                    dict[tuple[str, int | None], np.ndarray]]:
        """Per key, the pooled signals' bad mass in each bucket ``first..now`` and its
        expectation at the reference's bad rate, band by band (bands the reference saw
        with at least ``min_effective_n``)."""
        q = self.config.quality
        n = now - first + 1
        bad = {k: np.zeros(n) for k in keys}
        expected = {k: np.zeros(n) for k in keys}
        for tier in tiers:
            for b in range(self.config.n_bands):
                for s in signals:
                    ref = self.counts.reference_totals(s, tier=tier, band=b)
                    good_r, n_r = effective_counts(ref.wy, ref.w, ref.w2)
                    if n_r < q.min_effective_n:
                        continue
                    q0 = min(1.0, float(special.gammaincinv(n_r - good_r + 1.0, 0.9)) / n_r)
                    rows = self.counts.series(first, now, signal=s, tier=tier, band=b)[::-1]
                    if not rows[:, 1].any():
                        continue
                    good, eff = effective_counts_rows(rows)
                    for key in ((tier, None), (tier, b)):
                        if key in bad:
                            bad[key] += np.maximum(eff - good, 0.0)
                            expected[key] += q0 * eff
        return bad, expected

    def _pooled_report(self, at: float, signals: list[str]) -> dict[str, dict[str, Any]]:
        """Each tier's most alarming pooled test (of the tier or one of its bands)."""
        q = self.config.quality
        out: dict[str, dict[str, Any]] = {}
        for (tier, band), test in sorted(self.pooled.items(),
                                         key=lambda kv: (kv[0][0], kv[0][1] or -1)):
            alarm = test.alarm and test.ratio >= q.pooled_ratio_floor
            mine = out.get(tier)
            ratio = test.statistic / test.threshold
            if mine is not None and (mine["alarm"], mine["ratio"]) >= (alarm, ratio):
                continue
            where = self._where(band)
            since = None if test.since is None else test.since * 3600.0
            out[tier] = {
                "alarm": alarm, "band": band, "statistic": test.statistic,
                "threshold": test.threshold, "ratio": ratio, "since": since,
                "observed": test.observed, "expected": test.expected,
                "rate_ratio": test.ratio, "floor": q.pooled_ratio_floor,
                "signals": [*signals, *(["support_contact"] if q.contact_cusum else [])],
                "summary": (f"{tier} tier: bad outcomes{where} rose {test.ratio:.1f}× "
                            f"({test.observed:.0f} observed vs {test.expected:.1f} expected "
                            f"since {hours(since, at)} h ago: "
                            f"{', '.join(signals)} and support contacts pooled; "
                            "sequential test)")}
        return out

    def _band_mix(self, tier: str, at: float, first: int, last: int) -> np.ndarray:
        """A tier's routed requests per bucket ``first..last``, each band's weighted by its
        reference contact rate over the tier's (shrunk toward 1 with the evidence of five
        contacts, so a band with few reference contacts is not taken as contact-free)."""
        ref = self.reference("support_contact", at, tier=tier)
        p_tier = (ref.w - ref.wy) / ref.w if ref.w > 0 else 0.0
        out = np.zeros(last - first + 1)
        for b in range(self.config.n_bands):
            rows = self.lagged.series(first, last, tier=tier, band=b)[:, LaggedCounts.ROUTED]
            if not rows.any():
                continue
            rel = 1.0
            if p_tier > 0:
                rb = self.reference("support_contact", at, tier=tier, band=b)
                prior = 5.0 / p_tier
                rel = ((rb.w - rb.wy) + 5.0) / (rb.w + prior) / p_tier
            out += rel * rows
        return out

    def _boundary_bands(self, thresholds: Thresholds | None) -> list[int]:
        """Score bands that meet ``[cheap_above, cheap_above + boundary_width)``."""
        if thresholds is None:
            return []
        lo = thresholds.cheap_above
        hi = lo + self.config.quality.boundary_width
        return [b for b in range(self.config.n_bands)
                if self.band_edges[b + 1] > lo and self.band_edges[b] < hi]

    def _boundary(self, ev: Evaluation, at: float, fire: Fire,
                  thresholds: Thresholds | None) -> None:
        """``boundary_degradation``: the cheap tier just above ``cheap_above``."""
        c = self.config
        if at < self.reference_end:
            return
        bands = self._boundary_bands(thresholds)
        worst = None
        for signal in c.quality.boundary_signals:
            test = self.drop_tests[signal]
            for seconds in c.quality.windows_for(signal):
                if self._policy_moved(at, seconds):  # a threshold move changes the mix
                    cur, ref = self._standardized(signal, at, seconds, c.cheap_tier, bands)
                else:
                    cur, ref = Totals(), Totals()
                    for b in bands:
                        cur = cur + self.window(signal, at, seconds, tier=c.cheap_tier, band=b)
                        ref = ref + self.reference(signal, at, tier=c.cheap_tier, band=b)
                if ref.w <= 0:
                    continue
                r = test.test(cur, ref, tier=c.cheap_tier, signal=signal,
                              window=window_name(seconds))
                if worst is None or (r.alarm, r.drop) > (worst.alarm, worst.drop):
                    worst = r
        if worst is None:
            return
        summary = (f"cheap tier degrades just above cheap_above: {worst.signal} "
                   f"{worst.reference_rate:.3f} → {worst.current_rate:.3f} over {worst.window}")
        fire(ev, AlertKey("boundary_degradation", self.router_id, c.cheap_tier),
             worst.alarm, worst.window or "", summary, {"test": worst.to_dict(), "bands": bands})

    def _uncertain_bands(self, th: Thresholds | None) -> list[int] | None:
        """Score bands that meet the uncertain band under the thresholds in force
        (``None``: no thresholds seen yet, every band)."""
        if th is None:
            return None
        edges = self.band_edges
        return [b for b in range(self.config.n_bands)
                if edges[b + 1] > th.capable_below and edges[b] < th.cheap_above]

    def _gap(self, ev: Evaluation, at: float, fire: Fire, thresholds: Thresholds | None) -> None:
        """Comparison (b): has cheap fallen further behind capable in the uncertain band?

        Each arm's window is compared with the same arm over the reference period, on
        the score bands of the uncertain band in force that the reference period also
        covered for both arms, so that moving a threshold compares like with like.
        """
        c = self.config
        if at < self.reference_end:
            return
        seconds = max(c.quality.windows)
        bands = self._uncertain_bands(thresholds)
        best = None
        for signal in c.quality.gap_signals:
            pair = (c.cheap_tier, c.capable_tier)
            covered = [b for b in (bands if bands is not None else [None])
                       if all(self.inband.reference_totals(signal, tier=t, band=b).w > 0
                              for t in pair)]
            arms: dict[str, tuple[Totals, Totals]] = {}
            for tier in pair:
                cur, ref = Totals(), Totals()
                for b in covered:
                    cur = cur + self.inband.window(at, seconds, signal=signal, tier=tier, band=b)
                    ref = ref + self.inband.reference_totals(signal, tier=tier, band=b)
                arms[tier] = (cur, ref)
            (cheap, cheap_ref), (capable, capable_ref) = arms[c.cheap_tier], arms[c.capable_tier]
            if min(cheap.w, capable.w, cheap_ref.w, capable_ref.w) <= 0:
                continue
            r = self.gap_test.test_gap_change(cheap, capable, cheap_ref, capable_ref,
                                               window=window_name(seconds))
            if best is None or (r.alarm, r.widening or 0.0) > (best.alarm, best.widening or 0.0):
                best = r
        if best is None:
            return
        summary = (f"in the uncertain band, cheap fell further behind capable: gap "
                   f"{best.reference_gap:.3f} → {best.gap:.3f} (IPW, exploration traffic, "
                   f"{best.window} vs the reference period)")
        fire(ev, AlertKey("tier_quality_gap", self.router_id, c.cheap_tier),
             best.alarm, best.window or "", summary, best.to_dict())

    def _starvation(self, ev: Evaluation, at: float, fire: Fire, out: dict[str, Any],
                    routed_day: dict[int, dict[str, int]],
                    feedback_day: dict[int, dict[str, int]]) -> None:
        """``feedback_starvation``: a tier with too little feedback for a drop to be seen."""
        c = self.config
        q = c.quality
        if at < self.start + q.starvation_within_days * DAY:
            return
        day = int(at // DAY)
        days = [d for d in range(day - 7, day) if d in routed_day]
        if not days:
            return
        test = self.drop_tests["thumbs"]
        for tier in (c.cheap_tier, c.capable_tier):
            if not any(routed_day[d].get(tier) for d in days):
                continue
            per_day = sum(feedback_day.get(d, {}).get(tier, 0) for d in days) / len(days)
            ref = self.counts.reference_totals("thumbs", tier=tier)
            base = ref.rate if ref.w > 0 else 0.9
            if not base > 0:  # nothing to drop from: no drop can go unseen
                continue
            starving = test.starving(per_day, base, q.starvation_drop, q.starvation_within_days)
            mdd = test.mdd(per_day * q.starvation_within_days, base)
            out["mdd"].setdefault(tier, {})["feedback/7d"] = mdd
            summary = (f"{tier} tier gets {per_day:.0f} feedback events/day: a drop of "
                       f"{q.starvation_drop:.0%} would go unseen for {q.starvation_within_days:g}"
                       f" days (detectable drop {mdd:.3f})")
            fire(ev, AlertKey("feedback_starvation", self.router_id, tier), starving, "7d",
                 summary, {"feedback_per_day": per_day, "base_rate": base,
                           "minimum_detectable_drop": finite(mdd)})
