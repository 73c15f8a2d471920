"""Null-test nuisances: scenario variants where only volume, policy or signal plumbing moves.

Each function takes a scenario and returns a copy with one nuisance added; they compose
(``weekly_cycle(threshold_moves(flat(sc), ...))``). None of them touches the query mix,
the scores, the answers' quality or the probability that a request gets any feedback:
whatever a monitor reports on such traffic is a false alarm.

>>> from pipeline.sim.scenarios import SCENARIOS
>>> sc = weekly_cycle(flat(SCENARIOS["steady"]), weekend=0.4, peak_to_trough=4.0)
>>> round(sc.seasonality.daily_amplitude, 3), sc.seasonality.weekend_factor
(0.6, 0.4)
>>> moved = threshold_moves(sc, [(16.0, 0.5, 0.4)])
>>> moved.thresholds_at(15.9).cheap_above, moved.thresholds_at(16.0).cheap_above
(0.4, 0.5)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from pipeline.sim.params import (
    DelayChange,
    ExponentialDelay,
    FeedbackOutage,
    PolicyChange,
    Ramp,
    Scenario,
    Seasonality,
    VolumeRamp,
    VolumeStep,
)

HOUR = 3600.0


def flat(sc: Scenario) -> Scenario:
    """A constant arrival rate: no diurnal or weekly cycle at all."""
    return replace(sc, seasonality=Seasonality(daily_amplitude=0.0, weekend_factor=1.0))


def weekly_cycle(sc: Scenario, weekend: float = 0.4, peak_to_trough: float = 4.0,
                 peak_hour_utc: float = 15.0) -> Scenario:
    """Weekend volume ``weekend`` × the weekdays', and a diurnal cycle whose peak hour has
    ``peak_to_trough`` × the volume of its trough hour (mean one over a week)."""
    if not peak_to_trough >= 1.0 or not weekend > 0:
        raise ValueError("need peak_to_trough >= 1 and weekend > 0")
    amplitude = (peak_to_trough - 1.0) / (peak_to_trough + 1.0)
    return replace(sc, seasonality=Seasonality(daily_amplitude=amplitude,
                                               peak_hour_utc=peak_hour_utc,
                                               weekend_factor=weekend))


def holiday(sc: Scenario, day: float, factor: float = 0.1) -> Scenario:
    """Volume ``factor`` × normal for one day from ``day``."""
    return replace(sc, volume_changes=(*sc.volume_changes, VolumeStep(day, day + 1.0, factor)))


def volume_ramp(sc: Scenario, onset_day: float, days: float = 7.0,
                factor: float = 3.0) -> Scenario:
    """Volume grows linearly to ``factor`` × over ``days`` from ``onset_day``, then stays."""
    return replace(sc, volume_changes=(*sc.volume_changes,
                                       VolumeRamp(Ramp(onset_day, days), factor)))


def threshold_moves(sc: Scenario,
                    moves: Sequence[tuple[float, float, float]]) -> Scenario:
    """``(day, cheap_above, capable_below)``: the owner moves the thresholds at ``day``."""
    return replace(sc, policy_changes=(*sc.policy_changes, *(
        PolicyChange(day, cheap_above=hi, capable_below=lo) for day, hi, lo in moves)))


def exploration_changes(sc: Scenario, changes: Sequence[tuple[float, float]]) -> Scenario:
    """``(day, exploration_rate)``: the owner changes the exploration rate at ``day``."""
    return replace(sc, policy_changes=(*sc.policy_changes, *(
        PolicyChange(day, exploration_rate=rate) for day, rate in changes)))


def feedback_outage(sc: Scenario, kinds: tuple[str, ...], start_day: float,
                    days: float = 2.0) -> Scenario:
    """The source of ``kinds`` is silent for ``days``, then sends its backlog."""
    return replace(sc, outages=(*sc.outages, FeedbackOutage(kinds, start_day, days)))


def delays_scaled(sc: Scenario, kind: str, onset_day: float, factor: float = 2.0) -> Scenario:
    """Feedback of ``kind`` about requests from ``onset_day`` on comes ``factor`` × later."""
    return replace(sc, delay_changes=(*sc.delay_changes, DelayChange(kind, onset_day, factor)))


def exponential_contacts(sc: Scenario, mean_hours: float = 6.0) -> Scenario:
    """Support contacts arrive after an exponential delay of mean ``mean_hours``."""
    return replace(sc, delays=replace(
        sc.delays, support_contact=ExponentialDelay(mean_s=mean_hours * HOUR)))


def renamed(sc: Scenario, router_id: str) -> Scenario:
    """The same router under another id (a second router of a fleet)."""
    return replace(sc, router_id=router_id, name=f"{sc.name}@{router_id}")
