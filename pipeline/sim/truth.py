"""Ground truth the monitor never sees: injected changes and true per-tier quality per day.

>>> from pipeline.sim.scenarios import SCENARIOS
>>> [c["kind"] for c in change_records(SCENARIOS["pareto-trap"], 1_767_225_600.0)]
['cohort_emergence']
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline.sim.clock import iso
from pipeline.sim.params import (
    SECONDS_PER_DAY,
    BoolArray,
    CohortEmergence,
    DifficultyShift,
    IntArray,
    Retrain,
    Scenario,
    SelfConfidenceShift,
)


def change_records(scenario: Scenario, start_epoch: float) -> list[dict[str, Any]]:
    """One JSON-ready record per injected change: kind, onset, affected tier/cohort, story."""
    out = []
    for ch in scenario.changes:
        onset = ch.ramp.onset_day
        rec: dict[str, Any] = {
            "kind": ch.kind,
            "onset_day": onset,
            "onset_epoch": start_epoch + onset * SECONDS_PER_DAY,
            "onset_ts": iso(start_epoch + onset * SECONDS_PER_DAY),
            "full_effect_day": onset + ch.ramp.ramp_days,
            "tier": ch.tier,
            "cohort": ch.cohort,
            "description": ch.description,
        }
        if isinstance(ch, CohortEmergence):
            rec["target_share"] = ch.target_share
        elif isinstance(ch, DifficultyShift):
            rec["difficulty_delta"] = ch.delta
        elif isinstance(ch, Retrain):
            rec["classifier_version"] = ch.classifier.version
        elif isinstance(ch, SelfConfidenceShift):
            rec["self_confidence_delta_bad"] = ch.delta_bad
        out.append(rec)
    return sorted(out, key=lambda r: r["onset_epoch"])


def jsonable(value: Any) -> Any:
    """Dataclasses (scenario parameters) → plain JSON-ready values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple | list):
        return [jsonable(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


_COUNTERS = ("requests", "cheap", "cheap_good", "capable_good", "cheap_equivalent",
             "cheap_capable_better", "escalated", "support_cheap", "support_capable",
             "thumbs_down")


@dataclass(slots=True)
class DailyTruth:
    """Per-day counts of true outcomes, accumulated chunk by chunk."""

    cohort_names: list[str]
    counts: dict[str, IntArray] = field(default_factory=dict)
    cohorts: IntArray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.int64))

    def add(self, day: IntArray, cohort: IntArray, cheap: BoolArray, served_good: BoolArray,
            cheap_good: BoolArray, capable_good: BoolArray, escalated: BoolArray,
            support: BoolArray, thumbs_down: BoolArray) -> DailyTruth:
        if len(day) == 0:
            return self
        days = int(day.max()) + 1
        capable = ~cheap
        masks = {
            "requests": np.ones(len(day), dtype=bool),
            "cheap": cheap,
            "cheap_good": cheap & served_good,
            "capable_good": capable & served_good,
            "cheap_equivalent": cheap & (cheap_good == capable_good),
            "cheap_capable_better": cheap & capable_good & ~cheap_good,
            "escalated": escalated,
            "support_cheap": cheap & support,
            "support_capable": capable & support,
            "thumbs_down": thumbs_down,
        }
        for name, mask in masks.items():
            add = np.bincount(day[mask], minlength=days)
            self.counts[name] = _grow(self.counts.get(name), days)
            self.counts[name][: len(add)] += add
        k = len(self.cohort_names)
        by_cohort = np.bincount(day * k + cohort, minlength=days * k).reshape(days, k)
        if self.cohorts.shape[0] < days:
            grown = np.zeros((days, k), dtype=np.int64)
            if self.cohorts.size:
                grown[: self.cohorts.shape[0]] = self.cohorts
            self.cohorts = grown
        self.cohorts[:days] += by_cohort
        return self

    def records(self, start_epoch: float, tiers: tuple[str, str]) -> list[dict[str, Any]]:
        """One record per simulated day (day 0 starts at ``start_epoch``)."""
        if not self.counts:
            return []
        c = {name: arr.tolist() for name, arr in self.counts.items()}
        capable_name, cheap_name = tiers
        out = []
        for d in range(len(c["requests"])):
            n, nc = c["requests"][d], c["cheap"][d]
            ncap = n - nc
            out.append({
                "day": d,
                "start": iso(start_epoch + d * SECONDS_PER_DAY),
                "requests": n,
                "cheap_share": _ratio(nc, n),
                "thumbs_down_per_1000": _ratio(1000 * c["thumbs_down"][d], n),
                "escalated": c["escalated"][d],
                "tiers": {
                    cheap_name: {
                        "requests": nc,
                        "good_rate": _ratio(c["cheap_good"][d], nc),
                        "equivalent_rate": _ratio(c["cheap_equivalent"][d], nc),
                        "capable_better_rate": _ratio(c["cheap_capable_better"][d], nc),
                        "support_contacts": c["support_cheap"][d],
                    },
                    capable_name: {
                        "requests": ncap,
                        "good_rate": _ratio(c["capable_good"][d], ncap),
                        "support_contacts": c["support_capable"][d],
                    },
                },
                "cohort_share": {name: _ratio(int(v), n) for name, v in
                                 zip(self.cohort_names, self.cohorts[d].tolist(), strict=True)},
            })
        return out


def _grow(arr: IntArray | None, days: int) -> IntArray:
    if arr is None:
        return np.zeros(days, dtype=np.int64)
    if len(arr) >= days:
        return arr
    out = np.zeros(days, dtype=np.int64)
    out[: len(arr)] = arr
    return out


def _ratio(num: float, den: float) -> float | None:
    return None if den == 0 else round(num / den, 6)
