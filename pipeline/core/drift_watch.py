"""Drift of one router's score and signal distributions from its baseline.

:class:`DriftWatch` holds a :class:`~pipeline.core.detector.DriftStream` per watched
distribution: the router's scores, each tier's on-policy scores, and every other signal
the baseline describes. The hourly evaluation tests their windows (with the sequential
tests' certainty), the minute ticks close the sequential tests' steps; both turn what
they find into the router's drift alerts, a ticket above the effect floors and an
``info`` finding for a certain drift below them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from pipeline.core.alerts import AlertBook, AlertKey
from pipeline.core.baseline import quantile_bins
from pipeline.core.detector import DriftConfig, DriftStream, StreamResult
from pipeline.core.drift import calibrated_alpha
from pipeline.core.evaluation import Evaluation, Fire, Transition, hours
from pipeline.core.histogram import QuantileBins
from pipeline.schemas import Baseline

if TYPE_CHECKING:
    from pipeline.core.router_state import MonitorConfig

__all__ = ["DRIFT_KINDS", "OFF_POLICY", "DriftWatch"]

DAY = 86400.0
DRIFT_KINDS = frozenset({"confidence_drift", "tier_confidence_drift", "signal_drift"})
# Reasons whose tier does not follow the thresholds: they stay out of per-tier drift.
OFF_POLICY = frozenset({"escalated", "fallback", "override"})
_RANK = {None: 0, "info": 1, "alarm": 2}


#: per signal name, the event times and the values of the events that carry it, in order
Signals = Mapping[str, tuple[list[float], list[float]]]


def gather_signals(ts: list[float], sigs: Sequence[Mapping[str, float] | None],
                   ) -> dict[str, tuple[list[float], list[float]]]:
    """The times and values of every signal name in a batch, in event order.

    >>> gather_signals([1.0, 2.0, 3.0], [{"ood": 0.5}, None, {"ood": 0.7, "len": 9.0}])
    {'ood': ([1.0, 3.0], [0.5, 0.7]), 'len': ([3.0], [9.0])}
    """
    if sigs and all(s is not None and len(s) == 1 for s in sigs):
        each = cast("Sequence[Mapping[str, float]]", sigs)
        names = set(map(next, map(iter, each)))
        if len(names) == 1:  # the common case: every event carries the same one signal
            name = names.pop()
            return {name: (ts, [s[name] for s in each])}
    signals: dict[str, tuple[list[float], list[float]]] = {}
    for t, sig in zip(ts, sigs, strict=True):
        if sig:
            for name, value in sig.items():
                pair = signals.get(name)
                if pair is None:
                    pair = signals[name] = ([], [])
                pair[0].append(t)
                pair[1].append(value)
    return signals


class DriftWatch:
    """One router's drift streams and the drift alerts they raise.

    Nothing is watched before a baseline; :meth:`set_baseline` builds the streams
    (restarting them empty) with the false-alarm budgets of the configuration.

    >>> import functools
    >>> from datetime import UTC, datetime
    >>> from pipeline.core.baseline import fit_baseline
    >>> from pipeline.core.evaluation import transition
    >>> from pipeline.core.router_state import MonitorConfig
    >>> rng = np.random.default_rng(0)
    >>> watch = DriftWatch("r", MonitorConfig(sequential_drift=False))
    >>> watch.set_baseline(fit_baseline("r", "v1", datetime(2026, 1, 1, tzinfo=UTC),
    ...                                 rng.beta(3, 2, 20_000)))
    >>> sorted(watch.streams)
    [('capable', 'score'), ('cheap', 'score'), ('router', 'score')]

    A day of scores that moved up, every request routed to the cheap tier:

    >>> n = 5_000
    >>> ts = np.sort(rng.uniform(0.0, DAY, n))
    >>> watch.observe_scores(ts, rng.beta(5, 2, n), ["cheap"] * n, ["confident_cheap"] * n,
    ...                      [(0.6, 0.5, 0.1)] * n, {})
    >>> alerts = AlertBook(clear_evals=6)
    >>> ev = Evaluation(DAY)
    >>> results = watch.evaluate(ev, DAY - 1e-6, alerts, functools.partial(transition, alerts))
    >>> sorted((t.key.kind, t.key.tier, t.state) for t in ev.transitions)
    [('confidence_drift', None, 'firing'), ('tier_confidence_drift', 'cheap', 'firing')]
    >>> results["router"].level
    'alarm'
    """

    def __init__(self, router_id: str, config: MonitorConfig) -> None:
        self.router_id = router_id
        self.config = config
        self.baseline: Baseline | None = None
        self.bins: QuantileBins | None = None
        self.streams: dict[tuple[str, str], DriftStream] = {}

    # -- configuration ------------------------------------------------------------------
    def set_baseline(self, baseline: Baseline) -> None:
        """Compare against ``baseline`` from now on; the streams restart empty."""
        self.baseline = baseline
        self.bins = quantile_bins(baseline.score)
        tiers = (self.config.cheap_tier, self.config.capable_tier)
        dc = self._drift_config(n_streams=1 + len(tiers) + len(baseline.signals))
        self.streams = {("router", "score"): DriftStream(self.bins, dc)}
        for tier in tiers:
            self.streams[(tier, "score")] = DriftStream(self.bins, dc, tier=tier)
        for name, dist in baseline.signals.items():
            self.streams[("router", name)] = DriftStream(quantile_bins(dist), dc)

    def _drift_config(self, n_streams: int) -> DriftConfig:
        """Every stream's tests, on the ticket and info budgets of the configuration."""
        c = self.config
        n_tests = n_streams * len(c.drift_windows) * 2
        # each level has its own budget; with the sequential tests on, the windows and
        # the sequential tests each spend half of it
        split = 2 if c.sequential_drift else 1
        ticket = c.ticket_false_alarms_per_30d / split
        info = c.info_false_alarms_per_30d / split
        alpha = calibrated_alpha(ticket, 30 * DAY, c.eval_every_s, n_tests)
        info_alpha = calibrated_alpha(info, 30 * DAY, c.eval_every_s, n_tests)
        seq_threshold = seq_info = None
        if c.sequential_drift:
            # the mixture Shiryaev-Roberts statistic crosses A within m steps with
            # probability <= m/A (Doob); one test per stream, its tilts and directions
            # inside the mixture (pipeline/core/sequential.py)
            steps = 30 * DAY / c.seq_step_s * n_streams
            seq_threshold, seq_info = math.log(steps / ticket), math.log(steps / info)
        return DriftConfig(alpha=alpha, windows=c.drift_windows,
                           ks_floor=c.ks_floor, psi_floor=c.psi_floor,
                           lateness_s=c.allowed_lateness_s, seq_threshold=seq_threshold,
                           seq_tilts=c.seq_tilts, seq_step_s=c.seq_step_s,
                           info_alpha=info_alpha, seq_info_threshold=seq_info)

    # -- updates ------------------------------------------------------------------------
    def observe_scores(self, ts: np.ndarray, scores: np.ndarray, tiers: Sequence[str],
                       reasons: Sequence[str], keys: Sequence[tuple[float, float, float]],
                       signals: Signals) -> None:
        """The streams' share of a routing batch: the router's scores, each tier's
        on-policy scores with the thresholds (``keys``) they were routed under, and the
        router's other signals."""
        if self.bins is None:
            return
        self.streams[("router", "score")].update_many(ts, scores)
        tier_of = np.asarray(tiers, dtype=object)
        on_policy = ~np.array(list(map(OFF_POLICY.__contains__, reasons)), dtype=bool)
        for tier in (self.config.cheap_tier, self.config.capable_tier):
            idx = np.flatnonzero((tier_of == tier) & on_policy)
            if idx.size:
                self.streams[(tier, "score")].update_many(
                    ts[idx], scores[idx], [keys[i] for i in idx.tolist()])
        for name, (times, values) in signals.items():
            stream = self.streams.get(("router", name))
            if stream is not None and times:
                stream.update_many(np.asarray(times, dtype=np.float64),
                                   np.asarray(values, dtype=np.float64))

    # -- evaluation ---------------------------------------------------------------------
    def key(self, who: str, signal: str) -> tuple[AlertKey, str]:
        """The alert of stream ``(who, signal)`` and how a summary names it."""
        if signal != "score":
            return AlertKey("signal_drift", self.router_id, None, signal), f"signal {signal}"
        if who == "router":
            return AlertKey("confidence_drift", self.router_id, None), "router confidence"
        return AlertKey("tier_confidence_drift", self.router_id, who), f"{who}-tier confidence"

    def sequential(self, now: float, alerts: AlertBook, fire: Fire) -> Evaluation:
        """Close the sequential tests' steps up to ``now``; fire what crossed.

        Runs every ``seq_step_s`` of event time, between the hourly evaluations, which
        alone resolve alerts (with their hysteresis).
        """
        ev = Evaluation(now)
        for (who, signal), stream in self.streams.items():
            if stream.seq is None or not stream.seq.advance(now):
                continue
            key, what = self.key(who, signal)
            if alerts.firing(key):
                continue  # hourly evaluations keep it firing while the test is certain
            level, _ = stream.sequential_level()
            if level is None or (level == "info"
                                 and alerts.firing(replace(key, level="info"))):
                continue
            seq = self._sequential_stats(stream, now)
            assert seq is not None
            stats, seq_summary = seq
            below = "" if level == "alarm" else f", below the effect floors ({self._floors()})"
            summary = f"{what} drifted from the baseline{below}: {seq_summary}"
            self._transition(ev, alerts, fire, key, level, "seq", summary, {
                "sequential": stats, "baseline_version": self._version()}, resolve=False)
        return ev

    def evaluate(self, ev: Evaluation, at: float, alerts: AlertBook,
                 fire: Fire) -> dict[str, StreamResult]:
        """Test every stream's windows ending at ``at``; its alerts go to ``ev``.

        Returns each stream's result, by label (a tier, ``router``, ``signal:<name>``).
        """
        results: dict[str, StreamResult] = {}
        for (who, signal), stream in self.streams.items():
            res = stream.evaluate(at)
            results[who if signal == "score" else f"signal:{signal}"] = res
            worst = res.worst
            if worst is None:
                continue
            key, what = self.key(who, signal)
            level = res.level
            # info: some test is certain, but none is both past its floor and significant
            below = "" if level == "alarm" else (
                f", certain but not past an effect floor ({self._floors()}) with significance")
            summary = (f"{what} drifted from the baseline{below}: KS {worst.ks.effect:.3f}, "
                       f"PSI {worst.psi.effect:.3f} over {worst.window}")
            stats: dict[str, Any] = {"windows": res.statistics(),
                                     "baseline_version": self._version()}
            seq = self._sequential_stats(stream, at)
            if seq is not None:
                stats["sequential"], seq_summary = seq
                seq_level = seq[0]["level"]
                if _RANK[seq_level] > _RANK[level]:
                    level = seq_level
                    below = ("" if level == "alarm"
                             else f", below the effect floors ({self._floors()})")
                    summary = f"{what} drifted from the baseline{below}: {seq_summary}"
            self._transition(ev, alerts, fire, key, level, worst.window, summary, stats)
        return results

    def _version(self) -> str | None:
        return self.baseline.version if self.baseline else None

    def _floors(self) -> str:
        return f"KS {self.config.ks_floor:g} / PSI {self.config.psi_floor:g}"

    def _sequential_stats(self, stream: DriftStream,
                          at: float) -> tuple[dict[str, Any], str] | None:
        """The stream's sequential statistics for an alert, and their summary."""
        seq = stream.seq
        worst = None if seq is None else seq.worst()
        if seq is None or worst is None:
            return None
        direction, statistic, since = worst
        level, est = stream.sequential_level()
        stats: dict[str, Any] = {
            "direction": direction, "statistic": statistic, "threshold": seq.threshold,
            "info_threshold": seq.info_threshold, "alarm": level == "alarm",
            "level": level, "since": since, "tilts": seq.tilts.tolist(),
            "estimate": None if est is None else est.to_dict()}
        size = "" if est is None else (
            f", estimated shift {est.shift_sd:.3f} sd (KS {est.ks:.3f}, PSI {est.psi:.3f}; "
            f"at least KS {est.ks_lower:.3f}, PSI {est.psi_lower:.3f})")
        return stats, (f"sequential test: {direction}{size}; statistic {statistic:.1f} vs "
                       f"thresholds {seq.info_threshold:.1f} (info) / {seq.threshold:.1f}, "
                       f"since {hours(since, at)} h ago")

    def _transition(self, ev: Evaluation, alerts: AlertBook, fire: Fire, key: AlertKey,
                    level: str | None, window: str, summary: str, stats: dict[str, Any], *,
                    resolve: bool = True) -> None:
        """One stream's two alerts: ``key`` above the effect floor, its ``info`` twin for
        a certain drift below it. At most one of them fires: an escalation resolves the
        info finding at once, and a firing ticket stays a ticket (with its hysteresis)
        while the drift is certain at any level. ``resolve=False`` (the minute ticks)
        only fires."""
        info_key = replace(key, level="info")
        stats = {**stats, "level": level}
        firing = alerts.firing(key)
        main = level == "alarm" or (firing and level is not None)
        if resolve or (main and not firing):
            fire(ev, key, main, window, summary, stats)
        if alerts.firing(key):
            if alerts.clear(info_key) is not None:
                ev.transitions.append(Transition(info_key, "resolved", window,
                                                 "escalated: " + summary, stats))
        elif resolve or (level == "info" and not alerts.firing(info_key)):
            fire(ev, info_key, level == "info", window, summary, stats)
