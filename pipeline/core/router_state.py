"""One router's state and its evaluation: drift, per-tier quality, economics, policy.

:class:`RouterState` is fed by :class:`~pipeline.core.monitor.Monitor` with validated,
deduplicated, joined events, and evaluated at event-time boundaries. Each evaluation
yields alert transitions, at most one threshold recommendation, and a snapshot of the
numbers behind them (for ``/status``, metrics and the report).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline.core import ledger, readouts
from pipeline.core.alerts import AlertBook, AlertKey
from pipeline.core.delayed import KIND as DELAYED_GAP
from pipeline.core.delayed import REQUEST_KINDS as DELAYED_KINDS
from pipeline.core.delayed import DelayedConfig, DelayedOutcomes
from pipeline.core.detector import DriftStream
from pipeline.core.drift_watch import DRIFT_KINDS, DriftWatch, Signals
from pipeline.core.economics import Prices, break_even_gap
from pipeline.core.evaluation import Evaluation, Transition, transition
from pipeline.core.histogram import QuantileBins, coarse_splits
from pipeline.core.lagged import DelayEstimate
from pipeline.core.quality import OutcomeCounts, Totals
from pipeline.core.quality_watch import QualityConfig, QualityWatch
from pipeline.core.readouts import Gauge
from pipeline.core.recommend import Policy, PolicyConfig, Proposal
from pipeline.core.segment_alerts import KIND as SHARE_SHIFT
from pipeline.core.segment_alerts import annotate, share_shift_alerts
from pipeline.core.segments import ATTRIBUTED_KINDS, SegmentConfig, SegmentCounts
from pipeline.core.sequential import DEFAULT_TILTS
from pipeline.schemas import Baseline, Thresholds

__all__ = ["DAY", "DRIFT_KINDS", "Evaluation", "MonitorConfig", "QualityConfig",
           "RouterState", "Transition"]

DAY = 86400.0
#: where the attributes of a RouterState pickled before QualityWatch went (old → new)
_QUALITY_ATTRIBUTES = {
    "quality": "counts", "inband": "inband", "band_edges": "band_edges",
    "_drop_tests": "drop_tests", "_gap_test": "gap_test", "lagged": "lagged",
    "delays": "delays", "unattributed": "unattributed",
    "reference_policies": "reference_policies", "off_policy_ts": "off_policy_ts",
    "contact_cusums": "contact_cusums", "contact_done": "contact_done",
    "pooled": "pooled", "pooled_done": "pooled_done"}


@dataclass(frozen=True, slots=True)
class MonitorConfig:
    """Everything a monitor needs to know; built from :class:`~pipeline.settings.Settings`."""

    allowed_lateness_s: float = 7 * DAY
    eval_every_s: float = 3600.0
    false_alarms_per_30d: float = 1.0
    drift_windows: tuple[float, ...] = (3600.0, DAY, 7 * DAY)
    ks_floor: float = 0.05
    psi_floor: float = 0.1
    sequential_drift: bool = True
    seq_step_s: float = 60.0
    seq_tilts: tuple[float, ...] = DEFAULT_TILTS
    # drift's own budgets, per level: a drift above its effect floor tickets; a certain
    # drift below it is an ``info`` finding (each level: half to the hourly windows, half
    # to the sequential tests)
    ticket_false_alarms_per_30d: float = 1.0
    info_false_alarms_per_30d: float = 1.0
    n_bands: int = 10
    join_ttl_s: float = 30 * DAY
    clear_evals: int = 6
    quality: QualityConfig = field(default_factory=QualityConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    prices: Prices = field(default_factory=Prices)
    recommend: bool = True
    policy_every_s: float = 6 * 3600.0
    recommendation_ttl_s: float = 7 * DAY
    review_quota_per_day: float = 50.0
    review_seed: str = "tierwatch"
    cheap_tier: str = "cheap"
    capable_tier: str = "capable"
    runbook_base: str = "deploy/runbook.md"  #: Alert payloads link to <this>#<kind>
    segments: SegmentConfig = field(default_factory=SegmentConfig)
    delayed: DelayedConfig = field(default_factory=DelayedConfig)


class RouterState:
    """All of one router's statistics; see the module docstring."""

    def __init__(self, router_id: str, config: MonitorConfig, start: float) -> None:
        self.router_id = router_id
        self.config = config
        self.start = start
        ref = (start, start + config.quality.reference_days * DAY)
        self.alerts = AlertBook(config.clear_evals)
        self.policy = Policy(config.policy)
        self.drift_watch = DriftWatch(router_id, config)
        self.quality_watch = QualityWatch(router_id, config, start)
        self.thresholds: Thresholds | None = None
        self.thresholds_ts = -math.inf
        self.recommended: Thresholds | None = None
        self.last_recommendation_ts: float | None = None
        self.seq = 0
        self.routed: dict[str, int] = {}
        self.routed_day: dict[int, dict[str, int]] = {}
        self.cost_day: dict[int, dict[str, float]] = {}
        self.feedback_day: dict[int, dict[str, int]] = {}
        self.last_snapshot: dict[str, Any] = {}
        self.last_contacts: dict[str, Any] = {}  # for /status: unattributed, learnt delay
        self.gauges: list[Gauge] = []
        # per-segment-value outcome counts (bounded sketches); fed by the Monitor
        self.segments = SegmentCounts(ref, config.segments)
        # outcomes months later: cohort curves, subjects, delayed_outcome_gap (issue #18)
        self.delayed = DelayedOutcomes(config.delayed, config.cheap_tier, config.capable_tier)
        self._delayed_snapshot: dict[str, Any] = {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if "drift_watch" not in state:  # pickled before the drift watch left RouterState
            drift = self.drift_watch = DriftWatch(self.router_id, self.config)
            for name in ("baseline", "bins", "streams"):
                setattr(drift, name, self.__dict__.pop(name))
            self.__dict__.pop("_drift_alpha", None)
        if "quality_watch" not in state:  # and before the quality watch did
            quality = self.quality_watch = QualityWatch(self.router_id, self.config, self.start)
            for old, name in _QUALITY_ATTRIBUTES.items():
                if old in self.__dict__:  # (snapshots before the pooled test lack it)
                    setattr(quality, name, self.__dict__.pop(old))
            self.__dict__.pop("_lag_cache", None)

    # -- configuration ------------------------------------------------------------------
    def set_baseline(self, baseline: Baseline) -> None:
        """Compare against ``baseline`` from now on; histograms restart empty, and the
        score bands become the baseline's quantile bands."""
        self.drift_watch.set_baseline(baseline)
        bins = self.drift_watch.bins
        assert bins is not None
        splits = coarse_splits(bins.baseline_probs, self.config.n_bands)
        edges = bins.fine_edges[splits]
        edges[0], edges[-1] = 0.0, 1.0
        self.quality_watch.band_edges = np.maximum.accumulate(edges)

    @property
    def baseline(self) -> Baseline | None:
        """The baseline drift is measured against."""
        return self.drift_watch.baseline

    @property
    def bins(self) -> QuantileBins | None:
        """The baseline's fine score bins."""
        return self.drift_watch.bins

    @property
    def streams(self) -> dict[tuple[str, str], DriftStream]:
        """The drift streams, by ``(tier or "router", signal)``."""
        return self.drift_watch.streams

    @property
    def band_edges(self) -> np.ndarray:
        """The score bands' edges (the baseline's quantile bands; uniform before one)."""
        return self.quality_watch.band_edges

    @property
    def reference_end(self) -> float:
        """When the reference period, the quality tests' baseline, ends."""
        return self.quality_watch.reference_end

    def band(self, score: float) -> int:
        """The score band of one score (:meth:`bands`)."""
        return self.quality_watch.band(score)

    def bands(self, scores: np.ndarray) -> np.ndarray:
        """Score band of each score (baseline-quantile bands; uniform before a baseline)."""
        return self.quality_watch.bands(scores)

    # -- updates ------------------------------------------------------------------------
    def observe_routing(self, ts: np.ndarray, scores: np.ndarray, tiers: list[str],
                        reasons: list[str], thresholds: list[Thresholds],
                        costs: list[float | None], signals: Signals,
                        bands: list[int]) -> None:
        """Count one batch of this router's routing decisions (already deduplicated)."""
        routed: dict[tuple[str, int, int], int] = {}
        ref_end = self.reference_end
        policies = self.reference_policies
        off_policy_ts = self.off_policy_ts
        for t, tier, th, cost, band in zip(ts.tolist(), tiers, thresholds, costs, bands,
                                           strict=True):
            if t >= self.thresholds_ts:
                self.thresholds, self.thresholds_ts = th, t
            key = th.key
            if t < ref_end:
                policies.add(key)
            elif key not in policies and t > off_policy_ts:
                off_policy_ts = t
            self.routed[tier] = self.routed.get(tier, 0) + 1
            day = int(t // DAY)
            per = self.routed_day.setdefault(day, {})
            per[tier] = per.get(tier, 0) + 1
            if cost is not None:
                c = self.cost_day.setdefault(day, {})
                c[tier] = c.get(tier, 0.0) + cost
            k = (tier, band, int(t // 3600))
            routed[k] = routed.get(k, 0) + 1
        self.off_policy_ts = off_policy_ts
        self.count_routed_hours(routed.items())
        self.observe_scores(ts, scores, tiers, reasons, [th.key for th in thresholds], signals)

    def count_routed_hours(self, counts: Iterable[tuple[tuple[str, int, int], int]]) -> None:
        """Count routed requests per ``(tier, band, decision hour)``: what the lagged
        signals (contacts, surveys) are attributed against, and the delay table's exposure."""
        self.quality_watch.count_routed(counts)
        self._trim_days()

    def observe_scores(self, ts: np.ndarray, scores: np.ndarray, tiers: Sequence[str],
                       reasons: Sequence[str], keys: Sequence[tuple[float, float, float]],
                       signals: Signals) -> None:
        """The drift streams' share of a routing batch (:meth:`DriftWatch.observe_scores`)."""
        self.drift_watch.observe_scores(ts, scores, tiers, reasons, keys, signals)

    def _trim_days(self) -> None:
        if len(self.routed_day) > 40:
            keep = sorted(self.routed_day)[-35:]
            for d in [d for d in self.routed_day if d not in keep]:
                self.routed_day.pop(d, None)
                self.cost_day.pop(d, None)
                self.feedback_day.pop(d, None)

    def observe_feedback(self, *, tier: str, score: float, kind: str, value: float,
                         ts: float, decision_ts: float | None, weight: float | None,
                         propensity: float | None, in_band: bool | None) -> None:
        """Count one joined (or self-describing) feedback event."""
        band = self.band(score)
        day = int(ts // DAY)
        per = self.feedback_day.setdefault(day, {})
        per[tier] = per.get(tier, 0) + 1
        if kind in DELAYED_KINDS and decision_ts is not None:
            self.delayed.observe_request_outcome(
                kind, value, ts=ts, decision_ts=decision_ts, tier=tier, weight=weight,
                propensity=propensity, explored=bool(in_band))
        self.quality_watch.observe_feedback(
            tier=tier, band=band, kind=kind, value=value, ts=ts, decision_ts=decision_ts,
            weight=weight, propensity=propensity, in_band=in_band)

    # -- the quality watch's state and windows ------------------------------------------
    @property
    def quality(self) -> OutcomeCounts:
        """Feedback outcomes by tier, band and time (:attr:`QualityWatch.counts`)."""
        return self.quality_watch.counts

    @property
    def unattributed(self) -> dict[str, int]:
        """Contacts counted against no request, by reason."""
        return self.quality_watch.unattributed

    @property
    def reference_policies(self) -> set[tuple[float, float, float]]:
        """The thresholds routed under in the reference period."""
        return self.quality_watch.reference_policies

    @property
    def off_policy_ts(self) -> float:
        """The newest request routed under thresholds the reference never saw."""
        return self.quality_watch.off_policy_ts

    @off_policy_ts.setter
    def off_policy_ts(self, ts: float) -> None:
        self.quality_watch.off_policy_ts = ts

    def delay_estimate(self, at: float) -> DelayEstimate | None:
        """The contact delay distribution learnt up to the bucket that closes at ``at``."""
        return self.quality_watch.delay_estimate(at)

    def window(self, signal: str, at: float, seconds: float, *, tier: str | None = None,
               band: int | None = None) -> Totals:
        """A signal's window ending at ``at`` (:meth:`QualityWatch.window`)."""
        return self.quality_watch.window(signal, at, seconds, tier=tier, band=band)

    def reference(self, signal: str, at: float, *, tier: str | None = None,
                  band: int | None = None) -> Totals:
        """A signal's reference-period totals (:meth:`QualityWatch.reference`)."""
        return self.quality_watch.reference(signal, at, tier=tier, band=band)

    # -- evaluation ---------------------------------------------------------------------
    def evaluate(self, now: float) -> Evaluation:
        ev = Evaluation(now)
        at = now - 1e-6  # the window ends with the bucket that closes at ``now``
        ev.transitions += self.sequential(now).transitions
        drift = self.drift_watch.evaluate(ev, at, self.alerts, self._transition)
        quality = self.quality_watch.evaluate(
            ev, at, self._transition, thresholds=self.thresholds, routed_day=self.routed_day,
            feedback_day=self.feedback_day)
        econ = ledger.economics(self, at)
        if econ is not None:
            trap = econ.trap
            self._transition(ev, AlertKey("pareto_trap", self.router_id,
                                          self.config.cheap_tier), trap, "7d",
                             f"hidden cost ${econ.hidden_cost_per_day:,.0f}/day exceeds savings "
                             f"${econ.savings_per_day:,.0f}/day", econ.to_dict())
        if (self.config.recommend and self.thresholds is not None
                and now % self.config.policy_every_s < self.config.eval_every_s):
            ev.recommendation = self._recommend(at, now)
        self._segment_shifts(ev, at)
        self._delayed_gaps(ev, now)
        ev.snapshot = readouts.snapshot(self, now, drift, quality, econ)
        ev.snapshot["delayed"] = self._delayed_snapshot
        self.last_contacts = {"unattributed": dict(self.unattributed),
                              "delay": self.delay_summary(now - 1e-6)}
        tiers = (self.config.cheap_tier, self.config.capable_tier)
        ev.snapshot["segments"] = {t: self.segments.table(t, at) for t in tiers}
        self.last_snapshot = ev.snapshot
        self.gauges = readouts.gauges(self, at, drift, quality, econ)
        self.gauges += self.segments.gauges(self.router_id, ev.snapshot["segments"])
        self.segments.trim(now)
        return ev

    def _delayed_gaps(self, ev: Evaluation, now: float) -> None:
        """``delayed_outcome_gap``: looked at once a day (cohorts are weeks)."""
        if now % DAY >= self.config.eval_every_s and self._delayed_snapshot:
            return
        for kind, level, cond, summary, stats in self.delayed.alerts(now):
            key = AlertKey(DELAYED_GAP, self.router_id, None, kind,
                           "info" if level == "info" else "")
            self._transition(ev, key, cond, "cohort", summary, stats)
        self.delayed.trim(now)
        # daily: the snapshot is shared by the day's evaluations (recorded histories too)
        self._delayed_snapshot = self.delayed.snapshot(now)

    def _segment_shifts(self, ev: Evaluation, at: float) -> None:
        """``segment_share_shift``: a value whose share of the cheap tier jumped."""
        tier = self.config.cheap_tier
        found = {detail: (summary, stats) for detail, summary, stats in
                 share_shift_alerts(self.segments, tier, at)} if at >= self.reference_end else {}
        keys = {k.detail for k in self.alerts.active()
                if k.kind == SHARE_SHIFT and k.router_id == self.router_id}
        for detail in sorted(keys | set(found)):
            summary, stats = found.get(detail, (f"{tier} tier: {detail} share is back "
                                                "within its reference", {}))
            self._transition(ev, AlertKey(SHARE_SHIFT, self.router_id, tier, detail),
                             detail in found, "1d", summary, stats)

    def _transition(self, ev: Evaluation, key: AlertKey, condition: bool, window: str,
                    summary: str, statistics: dict[str, Any]) -> None:
        """Every alert condition of this router's evaluations (the watches' ``fire``)."""
        transition(self.alerts, ev, key, condition, window, summary, statistics,
                   self._annotate)

    def _annotate(self, key: AlertKey, window: str, summary: str, statistics: dict[str, Any],
                  ts: float) -> tuple[str, dict[str, Any]]:
        """A firing quality alert names the segments behind it."""
        if key.kind not in ATTRIBUTED_KINDS or key.tier is None:
            return summary, statistics
        return annotate(self.segments, key.kind, key.tier, key.detail, window, summary,
                        statistics, ts - 1e-6)

    def _drift_key(self, who: str, signal: str) -> tuple[AlertKey, str]:
        return self.drift_watch.key(who, signal)

    def sequential(self, now: float) -> Evaluation:
        """Close the sequential drift tests' steps up to ``now``; fire what crossed
        (:meth:`DriftWatch.sequential`)."""
        return self.drift_watch.sequential(now, self.alerts, self._transition)

    # -- money and policy ---------------------------------------------------------------
    def daily(self, at: float, table: dict[int, dict[str, Any]], tier: str) -> float:
        """The mean per day of ``table``'s ``tier`` over the last 7 days with routing."""
        day = int(at // DAY)
        days = [d for d in range(day - 7, day) if d in self.routed_day]
        return sum(table.get(d, {}).get(tier, 0) for d in days) / len(days) if days else 0.0

    def _recommend(self, at: float, now: float) -> Proposal | None:
        assert self.thresholds is not None
        if at < self.start + self.config.quality.reference_days * DAY / 2:
            return None  # warming up: no band has a week of evidence yet
        current = self.recommended or self.thresholds
        drift_firing = self.alerts.any_firing(self.router_id, set(DRIFT_KINDS))
        bands = ledger.band_evidence(self, at)
        break_even = break_even_gap(ledger.prices(self, at))
        decision = self.policy.decide(current, bands, now=now, drift_firing=drift_firing,
                                      break_even_gap=break_even)
        refresh = (self.last_recommendation_ts is not None and
                   now - self.last_recommendation_ts >= self.config.recommendation_ttl_s / 2)
        if not decision.moved and not refresh:
            return None
        self.seq += 1
        self.recommended = decision.thresholds
        self.last_recommendation_ts = now
        return Proposal(self.seq, decision.thresholds, current, decision.reasons,
                        decision.target, drift_firing, tuple(bands),
                        ledger.expected_impact(self, at, current, decision.thresholds, bands))

    # -- metrics ------------------------------------------------------------------------
    def delay_summary(self, at: float) -> dict[str, float] | None:
        """The learnt contact delay: its median and 90th percentile in hours."""
        return readouts.delay_summary(self, at)

    def band_quality(self, now: float) -> dict[str, Any]:
        """Satisfaction per score band per tier (7d), for the report."""
        return readouts.band_quality(self, now)

    def histogram(self, now: float, seconds: float = DAY) -> dict[str, Any] | None:
        """Live vs baseline over coarse bins, for the report."""
        return readouts.histogram(self, now, seconds)

